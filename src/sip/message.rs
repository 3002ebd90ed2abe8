//! A zero-copy view of one received SIP message.
//!
//! A load generator reads a handful of fields from each message (Via branch, CSeq, Call-ID, tags,
//! status, a few routing headers), so the scanner indexes header lines once and answers lookups by
//! slicing the receive buffer. It does not allocate: the header index lives inline in the
//! [`Message`] for up to 32 header lines (more spill to the heap). Why not `rsip`: see `docs/sip-message-layer.md` (it rejects AKAv1-MD5,
//! `tel:` URIs, compact forms and folded headers, and parses several times slower).
//!
//! The scanner is strict where a wrong answer would corrupt measurements (start line, CSeq,
//! Content-Length) and lenient elsewhere (unknown headers are kept verbatim).

use std::fmt;
use std::ops::Range;

/// Headers the load and probe engines look at. Everything else is [`HeaderName::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    ContentLength,
    ContentType,
    Expires,
    MaxForwards,
    Route,
    RecordRoute,
    ServiceRoute,
    Path,
    PAssociatedUri,
    WwwAuthenticate,
    ProxyAuthenticate,
    Authorization,
    ProxyAuthorization,
    Supported,
    Require,
    RetryAfter,
    Other,
}

impl HeaderName {
    /// Classifies a header name, including RFC 3261 §7.3.3 compact forms.
    pub fn classify(name: &[u8]) -> HeaderName {
        use HeaderName::*;
        if name.len() == 1 {
            return match name[0].to_ascii_lowercase() {
                b'v' => Via,
                b'f' => From,
                b't' => To,
                b'i' => CallId,
                b'm' => Contact,
                b'l' => ContentLength,
                b'c' => ContentType,
                b'k' => Supported,
                _ => Other,
            };
        }
        // Match on length first: most names are rejected without comparing bytes.
        let eq = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        match name.len() {
            2 if eq("To") => To,
            3 if eq("Via") => Via,
            4 if eq("From") => From,
            4 if eq("CSeq") => CSeq,
            4 if eq("Path") => Path,
            5 if eq("Route") => Route,
            7 if eq("Call-ID") => CallId,
            7 if eq("Contact") => Contact,
            7 if eq("Expires") => Expires,
            7 if eq("Require") => Require,
            9 if eq("Supported") => Supported,
            11 if eq("Retry-After") => RetryAfter,
            12 if eq("Max-Forwards") => MaxForwards,
            12 if eq("Content-Type") => ContentType,
            12 if eq("Record-Route") => RecordRoute,
            13 if eq("Service-Route") => ServiceRoute,
            13 if eq("Authorization") => Authorization,
            14 if eq("Content-Length") => ContentLength,
            16 if eq("WWW-Authenticate") => WwwAuthenticate,
            16 if eq("P-Associated-URI") => PAssociatedUri,
            18 if eq("Proxy-Authenticate") => ProxyAuthenticate,
            19 if eq("Proxy-Authorization") => ProxyAuthorization,
            _ => Other,
        }
    }
}

/// Why a buffer is not a SIP message. The kind is what gets counted; the detail is logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub kind: ParseErrorKind,
    pub detail: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParseErrorKind {
    /// The header section did not end (no empty line) or the body is shorter than Content-Length.
    Truncated,
    /// The first line is neither `METHOD URI SIP/2.0` nor `SIP/2.0 CODE REASON`.
    BadStartLine,
    /// A header line without a colon, or with bytes that are not text.
    BadHeader,
    /// A mandatory header (Via, From, To, Call-ID, CSeq) is missing or unreadable.
    MissingHeader,
    /// Content-Length is not a number, or over [`MAX_BODY_LEN`].
    BadContentLength,
}

impl ParseErrorKind {
    pub const ALL: [ParseErrorKind; 5] = [
        ParseErrorKind::Truncated,
        ParseErrorKind::BadStartLine,
        ParseErrorKind::BadHeader,
        ParseErrorKind::MissingHeader,
        ParseErrorKind::BadContentLength,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            ParseErrorKind::Truncated => "truncated",
            ParseErrorKind::BadStartLine => "bad_start_line",
            ParseErrorKind::BadHeader => "bad_header",
            ParseErrorKind::MissingHeader => "missing_header",
            ParseErrorKind::BadContentLength => "bad_content_length",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

impl std::error::Error for ParseError {}

/// The largest header section we read. Beyond it a stream is not SIP we can frame (or a peer
/// trying to make us buffer without bound).
pub const MAX_HEADER_LEN: usize = 64 * 1024;

/// The largest body we accept. Every Content-Length from the network is checked against it before
/// any arithmetic, so a hostile value can neither wrap an index nor make a stream framer wait for
/// (and buffer) gigabytes. SIP bodies in IMS (SDP, XML, short messages) stay far below it; UDP
/// cannot carry more anyway.
pub const MAX_BODY_LEN: usize = 64 * 1024;

/// Reads a Content-Length value: a decimal number no larger than [`MAX_BODY_LEN`].
fn read_content_length(v: &str) -> Result<usize, ParseError> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(
            ParseErrorKind::BadContentLength,
            "Content-Length is not a number",
        ));
    }
    match v.parse::<usize>() {
        Ok(n) if n <= MAX_BODY_LEN => Ok(n),
        _ => Err(err(
            ParseErrorKind::BadContentLength,
            "Content-Length over 64 KiB, the largest body accepted",
        )),
    }
}

fn err(kind: ParseErrorKind, detail: &'static str) -> ParseError {
    ParseError { kind, detail }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartLine<'a> {
    Request { method: &'a str, uri: &'a str },
    Response { code: u16, reason: &'a str },
}

/// A byte range of the header section (`Range` is not `Copy`, which the inline index needs).
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    start: u32,
    end: u32,
}

#[derive(Clone, Copy, Debug)]
struct HeaderIdx {
    name: HeaderName,
    name_range: Span,
    value: Span,
}

/// Header lines indexed without a heap allocation: every received message is parsed once, so a
/// `Vec` here was one malloc per message. SIP messages a load test sees carry 8-25 header lines;
/// the rare longer one spills the rest into `spill`.
const INLINE_HEADERS: usize = 32;

#[derive(Clone, Debug)]
struct Headers {
    len: usize,
    inline: [HeaderIdx; INLINE_HEADERS],
    spill: Vec<HeaderIdx>,
}

impl Headers {
    fn new() -> Headers {
        let empty = HeaderIdx {
            name: HeaderName::Other,
            name_range: Span::default(),
            value: Span::default(),
        };
        Headers {
            len: 0,
            inline: [empty; INLINE_HEADERS],
            spill: Vec::new(),
        }
    }

    fn push(&mut self, h: HeaderIdx) {
        if self.len < INLINE_HEADERS {
            self.inline[self.len] = h;
            self.len += 1;
        } else {
            self.spill.push(h);
        }
    }

    /// In the order received.
    fn iter(&self) -> impl Iterator<Item = &HeaderIdx> + '_ {
        self.inline[..self.len].iter().chain(&self.spill)
    }
}

/// A parsed view over a received buffer.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    text: &'a str,
    pub start: StartLine<'a>,
    headers: Headers,
    body: Range<usize>,
    /// Bytes this message occupies in the buffer (header section + body).
    pub len: usize,
}

/// Where a header section ends: index just past the blank line. The search is the hot spot of
/// the scanner, hence memchr's SIMD substring search rather than a byte loop.
fn header_end(buf: &[u8]) -> Option<usize> {
    if let Some(i) = memchr::memmem::find(buf, b"\r\n\r\n") {
        // A bare "\n\n" earlier than the CRLF pair still ends the header (see below).
        return Some(match memchr::memmem::find(&buf[..i], b"\n\n") {
            Some(j) => j + 2,
            None => i + 4,
        });
    }
    // Tolerate LF-only line ends from broken peers (RFC 3261 §7.5 asks for leniency).
    memchr::memmem::find(buf, b"\n\n").map(|j| j + 2)
}

/// For stream transports: the length of the first complete message in `buf`, `Ok(None)` when more
/// bytes are needed. Leading CRLF keep-alives (RFC 5626) are counted as a message of their own so the
/// caller can drop them.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    Ok(match frame(buf, 0)? {
        Frame::Complete(n) => Some(n),
        Frame::NeedHeader | Frame::NeedBody(_) => None,
    })
}

/// Where framing the first message of a stream buffer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The first message (or run of keep-alive CRLFs) is this many bytes, all there.
    Complete(usize),
    /// Its header section has not ended yet.
    NeedHeader,
    /// Its header section has ended: the message is this many bytes, not all there yet.
    NeedBody(usize),
}

/// [`frame_len`] for a caller that feeds a growing buffer: the first `searched` bytes of `buf`
/// are known to hold no end of the header section (a previous call said [`Frame::NeedHeader`]
/// for them), so the search resumes near their end instead of rescanning from the start, which
/// made framing quadratic in the number of segments a large header arrives in.
pub fn frame(buf: &[u8], searched: usize) -> Result<Frame, ParseError> {
    let ws = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    if ws > 0 {
        return Ok(Frame::Complete(ws));
    }
    // Neither "\r\n\r\n" nor "\n\n" lies wholly within the searched bytes, so a match ends
    // after them and starts at most 3 bytes before their end.
    let from = searched.min(buf.len()).saturating_sub(3);
    let Some(end) = header_end(&buf[from..]).map(|e| e + from) else {
        if buf.len() > MAX_HEADER_LEN {
            return Err(err(ParseErrorKind::Truncated, "header section over 64 KiB"));
        }
        return Ok(Frame::NeedHeader);
    };
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| err(ParseErrorKind::BadHeader, "header section is not UTF-8"))?;
    let mut cl = 0usize;
    for line in head.split('\n').skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if HeaderName::classify(name.trim_end().as_bytes()) == HeaderName::ContentLength {
            cl = read_content_length(value)?;
        }
    }
    if end > MAX_HEADER_LEN {
        return Err(err(ParseErrorKind::Truncated, "header section over 64 KiB"));
    }
    // Both terms are bounded (64 KiB each), so the sum cannot wrap.
    let total = end + cl;
    Ok(if buf.len() < total {
        Frame::NeedBody(total)
    } else {
        Frame::Complete(total)
    })
}

impl<'a> Message<'a> {
    /// Parses one message from the start of `buf`. For datagrams a missing Content-Length means
    /// "the rest of the datagram"; a Content-Length larger than what is there is an error.
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let end = header_end(buf)
            .ok_or_else(|| err(ParseErrorKind::Truncated, "no blank line after the headers"))?;
        let text = std::str::from_utf8(&buf[..end])
            .map_err(|_| err(ParseErrorKind::BadHeader, "header section is not UTF-8"))?;
        let first_nl = text.find('\n').unwrap_or(text.len());
        let start = parse_start_line(text[..first_nl].trim_end_matches('\r'))?;

        let mut headers = Headers::new();
        let bytes = text.as_bytes();
        let mut pos = first_nl + 1;
        let mut content_length: Option<usize> = None;
        while pos < end {
            // Find the end of this logical header line, joining folded continuation lines.
            let line_start = pos;
            let mut line_end;
            loop {
                let nl = memchr_nl(&bytes[pos..end]).map(|i| pos + i).unwrap_or(end);
                line_end = nl;
                pos = nl + 1;
                if pos < end && (bytes[pos] == b' ' || bytes[pos] == b'\t') {
                    continue;
                }
                break;
            }
            let mut le = line_end;
            if le > line_start && bytes[le - 1] == b'\r' {
                le -= 1;
            }
            if le == line_start {
                break; // the blank line
            }
            let line = &bytes[line_start..le];
            let colon = line
                .iter()
                .position(|b| *b == b':')
                .ok_or_else(|| err(ParseErrorKind::BadHeader, "header line without a colon"))?;
            let mut name_end = colon;
            while name_end > 0 && (line[name_end - 1] == b' ' || line[name_end - 1] == b'\t') {
                name_end -= 1;
            }
            if name_end == 0 || line[..name_end].iter().any(|b| !is_token_char(*b)) {
                return Err(err(ParseErrorKind::BadHeader, "header name is not a token"));
            }
            let mut vs = colon + 1;
            while vs < line.len() && is_lws(line[vs]) {
                vs += 1;
            }
            let mut ve = line.len();
            while ve > vs && is_lws(line[ve - 1]) {
                ve -= 1;
            }
            let name = HeaderName::classify(&line[..name_end]);
            let value = Span {
                start: (line_start + vs) as u32,
                end: (line_start + ve) as u32,
            };
            if name == HeaderName::ContentLength {
                let n = read_content_length(&text[value.start as usize..value.end as usize])?;
                if content_length.is_some_and(|old| old != n) {
                    return Err(err(
                        ParseErrorKind::BadContentLength,
                        "two different Content-Length headers",
                    ));
                }
                content_length = Some(n);
            }
            headers.push(HeaderIdx {
                name,
                name_range: Span {
                    start: line_start as u32,
                    end: (line_start + name_end) as u32,
                },
                value,
            });
        }
        let body_len = match content_length {
            // `n` is at most MAX_BODY_LEN and `end <= buf.len()`: no wrap either way.
            Some(n) if n > buf.len() - end => {
                return Err(err(
                    ParseErrorKind::Truncated,
                    "body shorter than Content-Length",
                ))
            }
            Some(n) => n,
            None => buf.len() - end,
        };
        let msg = Message {
            buf,
            text,
            start,
            headers,
            body: end..end + body_len,
            len: end + body_len,
        };
        msg.check_mandatory()?;
        Ok(msg)
    }

    fn check_mandatory(&self) -> Result<(), ParseError> {
        for (h, what) in [
            (HeaderName::Via, "no Via header"),
            (HeaderName::From, "no From header"),
            (HeaderName::To, "no To header"),
            (HeaderName::CallId, "no Call-ID header"),
        ] {
            if self.header(h).is_none() {
                return Err(err(ParseErrorKind::MissingHeader, what));
            }
        }
        let (_, method) = self
            .cseq()
            .ok_or_else(|| err(ParseErrorKind::MissingHeader, "no readable CSeq header"))?;
        if let StartLine::Request { method: m, .. } = self.start {
            // RFC 3261 §8.2.1... a request whose CSeq method differs from its own is malformed.
            if m != method {
                return Err(err(
                    ParseErrorKind::MissingHeader,
                    "CSeq method differs from the request method",
                ));
            }
        }
        Ok(())
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
    pub fn method(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            _ => None,
        }
    }
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            _ => None,
        }
    }
    pub fn request_uri(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Request { uri, .. } => Some(uri),
            _ => None,
        }
    }

    fn value(&self, h: &HeaderIdx) -> &'a str {
        &self.text[h.value.start as usize..h.value.end as usize]
    }

    /// The first value of a header (the whole line, commas included).
    pub fn header(&self, name: HeaderName) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| self.value(h))
    }

    /// A header by its literal name (case-insensitive), for headers without a [`HeaderName`].
    pub fn header_named(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|h| {
                self.text[h.name_range.start as usize..h.name_range.end as usize]
                    .eq_ignore_ascii_case(name)
            })
            .map(|h| self.value(h))
    }

    /// Every element of a header in order, splitting comma-separated lists (outside quotes and
    /// angle brackets) as RFC 3261 §7.3.1 allows.
    pub fn header_values(&self, name: HeaderName) -> impl Iterator<Item = &'a str> + '_ {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .flat_map(move |h| split_list(self.value(h)))
    }

    /// Header lines in order as (name as written, value), for copying and diagnostics.
    pub fn raw_headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.headers.iter().map(move |h| {
            (
                &self.text[h.name_range.start as usize..h.name_range.end as usize],
                self.value(h),
            )
        })
    }

    pub fn call_id(&self) -> &'a str {
        self.header(HeaderName::CallId).unwrap_or("")
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &'a str)> {
        let v = self.header(HeaderName::CSeq)?;
        let mut it = v.split_ascii_whitespace();
        let n = it.next()?.parse().ok()?;
        let m = it.next()?;
        Some((n, m))
    }

    pub fn top_via(&self) -> Option<Via<'a>> {
        self.header_values(HeaderName::Via)
            .next()
            .and_then(Via::parse)
    }

    pub fn from_tag(&self) -> Option<&'a str> {
        self.header(HeaderName::From)
            .and_then(|v| name_addr_param(v, "tag"))
    }
    pub fn to_tag(&self) -> Option<&'a str> {
        self.header(HeaderName::To)
            .and_then(|v| name_addr_param(v, "tag"))
    }

    /// URI of the first Contact.
    pub fn contact_uri(&self) -> Option<&'a str> {
        self.header_values(HeaderName::Contact)
            .next()
            .map(name_addr_uri)
    }

    /// Registration lifetime granted: the first Contact's `expires` parameter, else Expires.
    pub fn expires(&self) -> Option<u32> {
        if let Some(c) = self.header_values(HeaderName::Contact).next() {
            if let Some(e) = name_addr_param(c, "expires") {
                if let Ok(n) = e.parse() {
                    return Some(n);
                }
            }
        }
        self.header(HeaderName::Expires)?.trim().parse().ok()
    }

    pub fn body(&self) -> &'a [u8] {
        &self.buf[self.body.clone()]
    }
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', b)
}

fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn parse_start_line(line: &str) -> Result<StartLine<'_>, ParseError> {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = code
            .parse()
            .ok()
            .filter(|c| (100..700).contains(c))
            .ok_or_else(|| err(ParseErrorKind::BadStartLine, "status code is not 100-699"))?;
        return Ok(StartLine::Response { code, reason });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(err(
            ParseErrorKind::BadStartLine,
            "request line is not METHOD URI SIP/2.0",
        ));
    };
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(err(ParseErrorKind::BadStartLine, "SIP version is not 2.0"));
    }
    if method.is_empty() || !method.bytes().all(is_token_char) {
        return Err(err(ParseErrorKind::BadStartLine, "method is not a token"));
    }
    if uri.is_empty() || !uri.contains(':') {
        return Err(err(
            ParseErrorKind::BadStartLine,
            "request URI has no scheme",
        ));
    }
    Ok(StartLine::Request { method, uri })
}

/// Splits a header value at commas that are outside quotes and `<...>`.
pub fn split_list(v: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(v);
    std::iter::from_fn(move || loop {
        let s = rest?;
        // Fast path: most values are a single element.
        let cut = if memchr::memchr(b',', s.as_bytes()).is_none() {
            None
        } else {
            find_outside_quotes(s.as_bytes(), b',', true)
        };
        let (item, next) = match cut {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        rest = next;
        let item = item.trim_matches(|c: char| c.is_ascii_whitespace());
        if !item.is_empty() {
            return Some(item);
        }
    })
}

/// Index of the first `sep` outside quoted strings (and outside `<...>` when `angles`).
/// Works on bytes: the separators are ASCII, so UTF-8 text needs no decoding.
fn find_outside_quotes(b: &[u8], sep: u8, angles: bool) -> Option<usize> {
    let (mut in_q, mut in_a, mut i) = (false, false, 0);
    while i < b.len() {
        match b[i] {
            b'\\' if in_q => i += 1,
            b'"' => in_q = !in_q,
            b'<' if angles && !in_q => in_a = true,
            b'>' if angles && !in_q => in_a = false,
            c if c == sep && !in_q && !in_a => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Splits a name-addr (`"Bob" <sip:bob@x>;tag=1`) or addr-spec (`sip:bob@x;tag=1`) into its URI
/// and its header parameters (from the first `;` after the URI). Quoted strings are skipped, so
/// a `<` or `>` inside a display name or a quoted parameter (`+sip.instance="<urn:...>"`) does
/// not mislead it.
pub fn split_name_addr(v: &str) -> (&str, &str) {
    let b = v.as_bytes();
    let mut i = 0;
    let mut in_q = false;
    while i < b.len() {
        match b[i] {
            b'\\' if in_q => i += 1,
            b'"' => in_q = !in_q,
            b'<' if !in_q => {
                let rest = &v[i + 1..];
                return match rest.find('>') {
                    Some(gt) => (rest[..gt].trim(), &rest[gt + 1..]),
                    None => (rest.trim(), ""),
                };
            }
            _ => {}
        }
        i += 1;
    }
    // addr-spec form: header params start at the first ';' (RFC 3261 §20.10).
    match v.find(';') {
        Some(i) => (v[..i].trim(), &v[i..]),
        None => (v.trim(), ""),
    }
}

/// The URI inside a name-addr or addr-spec.
pub fn name_addr_uri(v: &str) -> &str {
    split_name_addr(v).0
}

/// A header parameter of a name-addr (after the `>`), e.g. `tag`, `expires`.
pub fn name_addr_param<'v>(v: &'v str, name: &str) -> Option<&'v str> {
    param(split_name_addr(v).1, name)
}

/// Finds `;name=value` (or bare `;name`, returned as "") in a parameter list. Quotes are stripped.
pub fn param<'v>(params: &'v str, name: &str) -> Option<&'v str> {
    split_params(params)
        .map(key_value)
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// One `name=value` (or bare `name`) of a parameter list, trimmed, quotes stripped from the
/// value. Bytes, not chars: on every message's Via, char searching was a few % of a busy
/// worker's CPU.
fn key_value(p: &str) -> (&str, &str) {
    let p = p.trim_ascii();
    let (k, v) = match memchr::memchr(b'=', p.as_bytes()) {
        Some(i) => (p[..i].trim_ascii_end(), p[i + 1..].trim_ascii_start()),
        None => (p, ""),
    };
    let q = v.as_bytes();
    let start = q.iter().take_while(|&&c| c == b'"').count();
    let end = q.len() - q[start..].iter().rev().take_while(|&&c| c == b'"').count();
    (k, &v[start..end])
}

/// Splits at `;` outside quoted strings.
fn split_params(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        match find_outside_quotes(s.as_bytes(), b';', false) {
            Some(i) => {
                rest = Some(&s[i + 1..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

/// The parts of a Via header value the transaction layer needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    pub transport: &'a str,
    pub sent_by: &'a str,
    pub branch: Option<&'a str>,
    pub received: Option<&'a str>,
    pub rport: Option<&'a str>,
}

impl<'a> Via<'a> {
    pub fn parse(v: &'a str) -> Option<Via<'a>> {
        // "SIP/2.0/UDP host:port;branch=...": protocol may contain LWS around slashes (torture
        // tests do this), so split on '/' and trim.
        let mut it = v.splitn(3, '/');
        let _sip = it.next()?;
        let _ver = it.next()?;
        let rest = it.next()?.trim_start();
        let ws = rest.find(|c: char| c.is_ascii_whitespace())?;
        let transport = &rest[..ws];
        let after = rest[ws..].trim_start();
        let (sent_by, params) = match after.find(';') {
            Some(i) => (after[..i].trim_end(), &after[i..]),
            None => (after.trim_end(), ""),
        };
        let mut via = Via {
            transport,
            sent_by,
            branch: None,
            received: None,
            rport: None,
        };
        // One pass for the three (the first of each counts, as `param` would find it).
        for (k, v) in split_params(params).map(key_value) {
            let slot = if k.eq_ignore_ascii_case("branch") {
                &mut via.branch
            } else if k.eq_ignore_ascii_case("received") {
                &mut via.received
            } else if k.eq_ignore_ascii_case("rport") {
                &mut via.rport
            } else {
                continue;
            };
            slot.get_or_insert(v);
        }
        Some(via)
    }
}

/// The user part of a SIP URI (`sip:user@host` → `user`), or the number of a `tel:` URI.
pub fn uri_user(uri: &str) -> Option<&str> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .or_else(|| {
            uri.strip_prefix("tel:")
                .map(|t| t.split(';').next().unwrap_or(t))
        })?;
    if uri.starts_with("tel:") {
        return Some(rest);
    }
    rest.find('@').map(|at| &rest[..at])
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1-2-3;rport=5070;received=127.0.0.1\r\n\
v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKother\r\n\
From: <sip:user0001@ims.local>;tag=abc\r\n\
t: \"User\" <sip:user0001@ims.local>;tag=xyz\r\n\
i: call-1@imsload\r\n\
CSeq: 2 REGISTER\r\n\
Contact: <sip:user0001@127.0.0.1:5070>;expires=600, <sip:other@1.2.3.4>;expires=10\r\n\
Service-Route: <sip:orig@scscf.ims.local;lr>,\r\n <sip:second@x;lr>\r\n\
l: 0\r\n\r\n";

    #[test]
    fn headers_beyond_the_inline_index_keep_their_order() {
        let mut m = String::from(
            "OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n\
To: <sip:b@x>\r\nCall-ID: c1\r\n",
        );
        for i in 0..40 {
            m.push_str(&format!("X-H{i}: {i}\r\n"));
        }
        m.push_str("CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
        let msg = Message::parse(m.as_bytes()).unwrap();
        assert_eq!(msg.raw_headers().count(), 46);
        assert_eq!(msg.header_named("X-H39"), Some("39"));
        assert_eq!(msg.cseq(), Some((1, "OPTIONS")));
        let names: Vec<&str> = msg.raw_headers().map(|(n, _)| n).collect();
        assert_eq!(names[4..7], ["X-H0", "X-H1", "X-H2"]);
        assert_eq!(names[44], "CSeq");
    }

    #[test]
    fn parses_response_fields() {
        let m = Message::parse(OK.as_bytes()).unwrap();
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.cseq(), Some((2, "REGISTER")));
        assert_eq!(m.call_id(), "call-1@imsload");
        let via = m.top_via().unwrap();
        assert_eq!(via.branch, Some("z9hG4bK-1-2-3"));
        assert_eq!(via.sent_by, "127.0.0.1:5070");
        assert_eq!(via.transport, "UDP");
        assert_eq!(m.header_values(HeaderName::Via).count(), 2);
        assert_eq!(m.from_tag(), Some("abc"));
        assert_eq!(m.to_tag(), Some("xyz"));
        assert_eq!(m.contact_uri(), Some("sip:user0001@127.0.0.1:5070"));
        assert_eq!(m.expires(), Some(600));
        let sr: Vec<_> = m.header_values(HeaderName::ServiceRoute).collect();
        assert_eq!(sr, ["<sip:orig@scscf.ims.local;lr>", "<sip:second@x;lr>"]);
        assert_eq!(m.len, OK.len());
        assert!(m.body().is_empty());
    }

    #[test]
    fn content_length_frames_two_messages() {
        let one = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 4\r\n\r\nbody";
        let two = format!("{one}{one}");
        assert_eq!(frame_len(two.as_bytes()).unwrap(), Some(one.len()));
        let m = Message::parse(two.as_bytes()).unwrap();
        assert_eq!(m.len, one.len());
        assert_eq!(m.body(), b"body");
        assert_eq!(frame_len(&two.as_bytes()[..one.len() - 1]).unwrap(), None);
        assert_eq!(frame_len(b"\r\n\r\nOPT").unwrap(), Some(4));
    }

    #[test]
    fn rejects_broken_messages_by_kind() {
        let kind = |s: &str| Message::parse(s.as_bytes()).unwrap_err().kind;
        assert_eq!(kind("SIP/2.0 200 OK\r\nVia: x"), ParseErrorKind::Truncated);
        assert_eq!(kind("HELLO\r\n\r\n"), ParseErrorKind::BadStartLine);
        assert_eq!(kind("SIP/2.0 99 X\r\n\r\n"), ParseErrorKind::BadStartLine);
        assert_eq!(
            kind("SIP/2.0 200 OK\r\nno colon here\r\n\r\n"),
            ParseErrorKind::BadHeader
        );
        assert_eq!(
            kind("SIP/2.0 200 OK\r\nVia: x\r\n\r\n"),
            ParseErrorKind::MissingHeader
        );
        assert_eq!(
            kind("SIP/2.0 200 OK\r\nContent-Length: ten\r\n\r\n"),
            ParseErrorKind::BadContentLength
        );
        let short = OK.replace("l: 0", "l: 10");
        assert_eq!(kind(&short), ParseErrorKind::Truncated);
    }

    #[test]
    fn uri_helpers() {
        assert_eq!(uri_user("sip:user0001@ims.local"), Some("user0001"));
        assert_eq!(uri_user("tel:+15551234;phone-context=x"), Some("+15551234"));
        assert_eq!(uri_user("sip:ims.local"), None);
        assert_eq!(name_addr_uri("sip:a@b;tag=1"), "sip:a@b");
        assert_eq!(name_addr_param("sip:a@b;tag=1", "tag"), Some("1"));
        assert_eq!(
            name_addr_param("\"A;B\" <sip:a@b;lr>;tag=9", "tag"),
            Some("9")
        );
        assert_eq!(name_addr_uri("\"a<b>\" <sip:x@y>"), "sip:x@y");
        let c = "<sip:ue@h>;+sip.instance=\"<urn:x;y>\";expires=600";
        assert_eq!(name_addr_param(c, "expires"), Some("600"));
        assert_eq!(name_addr_param(c, "+sip.instance"), Some("<urn:x;y>"));
        let v: Vec<_> = split_list("\"a,b\" <sip:x@y;p=a,b>, <sip:z>").collect();
        assert_eq!(v, ["\"a,b\" <sip:x@y;p=a,b>", "<sip:z>"]);
    }

    /// Issue 10: a Content-Length near 2^64 wrapped `end + n` in release builds, so `parse`
    /// accepted a body of `end..end-1` and `body()` panicked; in `frame_len` it returned a frame of
    /// 0 bytes and the stream framer spun forever.
    #[test]
    fn hostile_content_lengths_are_errors_not_wraps() {
        let head = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n";
        let with = |cl: &str| format!("{head}Content-Length: {cl}\r\n\r\n");
        let max = u64::MAX.to_string();
        let end = with("0").len() as u64 - 1 + max.len() as u64;
        // 2^64 - header length: the value that made `end + cl` wrap to exactly 0.
        let wrap_to_zero = (u64::MAX - end + 1).to_string();
        for cl in [
            max.as_str(),
            wrap_to_zero.as_str(),
            "1000000000000",
            "65537",
            "99999999999999999999999",
            "-1",
            "+5",
            "",
        ] {
            let m = with(cl);
            let e = Message::parse(m.as_bytes()).unwrap_err();
            assert_eq!(e.kind, ParseErrorKind::BadContentLength, "{cl}");
            let e = frame_len(m.as_bytes()).unwrap_err();
            assert_eq!(e.kind, ParseErrorKind::BadContentLength, "{cl}");
        }
        // The largest accepted body still frames and parses.
        let big = format!(
            "{}{}",
            with(&MAX_BODY_LEN.to_string()),
            "x".repeat(MAX_BODY_LEN)
        );
        assert_eq!(frame_len(big.as_bytes()).unwrap(), Some(big.len()));
        assert_eq!(
            Message::parse(big.as_bytes()).unwrap().body().len(),
            MAX_BODY_LEN
        );
    }

    #[test]
    fn never_panics_on_any_prefix() {
        for cut in 0..OK.len() {
            let _ = Message::parse(&OK.as_bytes()[..cut]);
            let _ = frame_len(&OK.as_bytes()[..cut]);
        }
    }
}
