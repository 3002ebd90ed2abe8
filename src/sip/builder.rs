//! Writing SIP messages. Outgoing messages are short and formulaic, so they are written straight
//! into a byte buffer header by header; Content-Length is always written, last, from the body.

use super::message::{HeaderName, Message};
use std::fmt::Write as _;

/// `fmt::Write` straight into a byte buffer. `write!` on a `Vec<u8>` goes through
/// `io::Write`'s adapter (an `io::Result` per piece); this was a few % of a busy worker.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A message being written. Start with [`Writer::request`] or [`Writer::response`], add headers,
/// then [`Writer::finish`] with the body.
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn request(method: &str, uri: &str) -> Writer {
        let mut buf = super::transport::buffer(768);
        for part in [method, " ", uri, " SIP/2.0\r\n"] {
            buf.extend_from_slice(part.as_bytes());
        }
        Writer { buf }
    }

    pub fn response(code: u16, reason: &str) -> Writer {
        let mut buf = super::transport::buffer(768);
        let _ = write!(Bytes(&mut buf), "SIP/2.0 {code} {reason}\r\n");
        Writer { buf }
    }

    /// A whole bodyless response to `req` that no transaction of ours keeps (an answer to a
    /// request we hold no state for, a refusal): the copied headers, `extra` if any, our
    /// `Server`.
    pub fn stateless_response(
        req: &Message<'_>,
        code: u16,
        to_tag: Option<&str>,
        extra: Option<(&str, &str)>,
        server: &str,
    ) -> Vec<u8> {
        let mut w = Writer::response_to(req, code, super::reason(code), to_tag);
        if let Some((n, v)) = extra {
            w.header(n, v);
        }
        w.header("Server", server);
        w.finish(None, b"")
    }

    /// The 200 to a re-INVITE (hold, resume, a session refresh) inside a dialog of ours: our
    /// SDP answer, its direction mirroring the offer's (RFC 3264 §6.1), or our own offer when
    /// the re-INVITE carries none (§5); its `o=` version follows the request's CSeq, so it
    /// rises with every re-INVITE of the dialog.
    pub fn reinvite_ok(
        req: &Message<'_>,
        contact: &str,
        server: &str,
        origin_ip: &str,
        session_id: u64,
        audio: &SdpAudio,
    ) -> Vec<u8> {
        // An offer is answered in kind; none (an offer-less re-INVITE) gets our own offer.
        let answer = super::sdp::Answer::to_offer(req.body());
        let audio = SdpAudio {
            version: req.cseq().map_or(2, |c| c.0.saturating_add(1)),
            ..*audio
        };
        let mut body = Vec::with_capacity(256);
        write_sdp(&mut body, origin_ip, session_id, &audio, answer.as_ref());
        let mut w = Writer::response_to(req, 200, "OK", None);
        w.header("Contact", contact);
        w.header("Server", server);
        w.finish(Some("application/sdp"), &body)
    }

    /// A response to `req` with the headers RFC 3261 §8.2.6.2 says to copy (all Vias, From, To,
    /// Call-ID, CSeq) and, for dialog-creating responses, Record-Route (§12.1.1). `to_tag` is
    /// added to To when To has none.
    pub fn response_to(req: &Message<'_>, code: u16, reason: &str, to_tag: Option<&str>) -> Writer {
        let mut w = Writer::response(code, reason);
        for (name, value) in req.raw_headers() {
            match HeaderName::classify(name.as_bytes()) {
                HeaderName::Via => w.header("Via", value),
                HeaderName::From => w.header("From", value),
                HeaderName::CallId => w.header("Call-ID", value),
                HeaderName::CSeq => w.header("CSeq", value),
                HeaderName::RecordRoute if (101..300).contains(&code) => {
                    w.header("Record-Route", value)
                }
                HeaderName::To => match to_tag {
                    Some(tag) if req.to_tag().is_none() => {
                        for part in ["To: ", value, ";tag=", tag, "\r\n"] {
                            w.buf.extend_from_slice(part.as_bytes());
                        }
                    }
                    _ => w.header("To", value),
                },
                _ => {}
            }
        }
        w
    }

    pub fn header(&mut self, name: &str, value: impl std::fmt::Display) {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        let _ = write!(Bytes(&mut self.buf), "{value}");
        self.buf.extend_from_slice(b"\r\n");
    }

    /// A complete header line without CRLF (e.g. from [`super::auth::authorization_header`]).
    pub fn line(&mut self, line: &str) {
        self.buf.extend_from_slice(line.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn finish(mut self, content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
        if let Some(ct) = content_type {
            self.header("Content-Type", ct);
        }
        self.header("Content-Length", body.len());
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(body);
        self.buf
    }
}

/// The audio stream an SDP offer or answer of ours describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdpAudio {
    pub port: u16,
    /// The payload types in order of preference ("0 8 101": PCMU first).
    pub pts: &'static str,
    /// `a=ptime`, when we send media at a packet time of our own.
    pub ptime: Option<u16>,
    /// `a=rtcp` (RFC 3605): the port our RTCP is received on, when it is not the RTP port + 1.
    pub rtcp: Option<u16>,
    /// `sendrecv`, but an answer to a hold is `recvonly` or `inactive`.
    pub direction: super::sdp::Direction,
    /// The `o=` line's version: 1, then higher in each changed offer or answer of the session
    /// (RFC 3264 §8).
    pub version: u32,
}

impl SdpAudio {
    /// The stream of a call without media: a port nobody listens on, as before `--media`.
    pub const fn nominal(port: u16) -> SdpAudio {
        SdpAudio {
            port,
            pts: "0 8 101",
            ptime: None,
            rtcp: None,
            direction: super::sdp::Direction::SendRecv,
            version: 1,
        }
    }
}

/// Our audio offer.
pub fn sdp(origin_ip: &str, session_id: u64, audio: &SdpAudio) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_sdp(&mut out, origin_ip, session_id, audio, None);
    out
}

/// [`sdp`] written into `out` (a message being built), with no buffer of its own; with
/// `answer`, our answer to an offer (RFC 3264 §6): its streams in its order, the audio one
/// with the payload types and direction the answer says (`audio.direction` is for offers).
pub fn write_sdp(
    out: &mut impl std::io::Write,
    origin_ip: &str,
    session_id: u64,
    audio: &SdpAudio,
    answer: Option<&super::sdp::Answer>,
) {
    let fam = if origin_ip.contains(':') {
        "IP6"
    } else {
        "IP4"
    };
    let _ = write!(
        out,
        "v=0\r\no=imsload {session_id} {} IN {fam} {origin_ip}\r\ns=-\r\nc=IN {fam} {origin_ip}\r\nt=0 0\r\n",
        audio.version
    );
    let (pts, direction) = match answer {
        Some(a) => {
            let _ = out.write_all(a.before.as_bytes());
            (a.pts, a.direction)
        }
        None => (audio.pts, audio.direction),
    };
    if !pts.is_empty() {
        let _ = write!(out, "m=audio {} RTP/AVP {pts}\r\n", audio.port);
        for pt in pts.split(' ') {
            let _ = match pt {
                "0" => out.write_all(b"a=rtpmap:0 PCMU/8000\r\n"),
                "8" => out.write_all(b"a=rtpmap:8 PCMA/8000\r\n"),
                "101" => out.write_all(b"a=rtpmap:101 telephone-event/8000\r\n"),
                _ => Ok(()),
            };
        }
        if let Some(p) = audio.ptime {
            let _ = write!(out, "a=ptime:{p}\r\n");
        }
        if let Some(p) = audio.rtcp {
            let _ = write!(out, "a=rtcp:{p}\r\n");
        }
        let _ = write!(out, "a={}\r\n", direction.attr());
    }
    if let Some(a) = answer {
        let _ = out.write_all(a.after.as_bytes());
    }
}

/// The length of what [`write_sdp`] writes, without writing it.
pub fn sdp_len(
    origin_ip: &str,
    session_id: u64,
    audio: &SdpAudio,
    answer: Option<&super::sdp::Answer>,
) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    write_sdp(&mut c, origin_ip, session_id, audio, answer);
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_copies_headers_and_adds_tag() {
        let req = "INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP p;branch=z9hG4bK2\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\
Record-Route: <sip:p;lr>\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 69\r\n\
Content-Length: 0\r\n\r\n";
        let m = Message::parse(req.as_bytes()).unwrap();
        let mut w = Writer::response_to(&m, 180, "Ringing", Some("t9"));
        w.header("Contact", "<sip:b@127.0.0.1>");
        let out = w.finish(None, b"");
        let r = Message::parse(&out).unwrap();
        assert_eq!(r.status(), Some(180));
        assert_eq!(r.header_values(HeaderName::Via).count(), 2);
        assert_eq!(r.to_tag(), Some("t9"));
        assert_eq!(r.header(HeaderName::RecordRoute), Some("<sip:p;lr>"));
        assert_eq!(r.cseq(), Some((1, "INVITE")));
        assert!(r.header_named("Max-Forwards").is_none());

        let out = Writer::response_to(&m, 486, "Busy", Some("t9")).finish(None, b"");
        let r = Message::parse(&out).unwrap();
        assert!(r.header(HeaderName::RecordRoute).is_none());
    }
}
