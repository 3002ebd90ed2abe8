//! The SIP OPTIONS probe as a sans-IO codec: the request for probe *n*, and what a received
//! datagram means. The probe's sequence number is encoded in the Call-ID and the Via branch
//! ([`IdScheme`]), so a reply finds its probe in O(1) and a stale reply from an earlier run (other
//! run token) is recognised as foreign.

use crate::sip::builder::Writer;
use crate::sip::ids::{IdScheme, Key};
use crate::sip::{HeaderName, Message, ParseErrorKind, Transport};

/// Call-ID kind letter of our probes.
const KIND: char = 'o';

/// What a received datagram is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The final response to probe `seq` with status `code`.
    Final { seq: u64, code: u16 },
    /// A provisional response (1xx) to probe `seq`: ignored, the final one follows.
    Provisional { seq: u64 },
    /// A well-formed message that is not a response to one of this run's probes.
    Foreign(ForeignKind),
    /// Not a SIP message.
    Malformed(ParseErrorKind),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ForeignKind {
    /// A request (the target sent us OPTIONS, NOTIFY, ...).
    Request,
    /// A response whose Call-ID is not ours (or from an earlier run).
    UnknownCallId,
    /// Call-ID ours, but CSeq or branch disagree with it.
    Inconsistent,
}

impl ForeignKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ForeignKind::Request => "request",
            ForeignKind::UnknownCallId => "unknown_call_id",
            ForeignKind::Inconsistent => "inconsistent_ids",
        }
    }
}

/// Builds and reads the probes of one target.
#[derive(Clone, Debug)]
pub struct OptionsCodec {
    ids: IdScheme,
    transport: Transport,
    /// `sip:host:port` of the target.
    uri: String,
    /// Our address as written in Via/From/Contact.
    local: String,
    host: String,
    tag: String,
    /// The request of [`OptionsCodec::request`] cut at its variable parts, for
    /// [`OptionsCodec::write_request`]: `[0] ids [1] ids [2] cseq [3]`.
    template: [Vec<u8>; 4],
}

/// Appends `v` in lowercase hex without leading zeros (as `{:x}`).
fn push_hex(out: &mut Vec<u8>, v: u32) {
    let digits = if v == 0 {
        1
    } else {
        (32 - v.leading_zeros()).div_ceil(4)
    };
    for i in (0..digits).rev() {
        out.push(b"0123456789abcdef"[((v >> (4 * i)) & 0xf) as usize]);
    }
}

/// Appends `v` in decimal (as `{}`).
fn push_dec(out: &mut Vec<u8>, mut v: u32) {
    let mut tmp = [0u8; 10];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

fn key_of(seq: u64) -> Key {
    Key {
        slot: seq as u32,
        gen: (seq >> 32) as u32,
    }
}

fn seq_of(k: Key) -> u64 {
    (k.gen as u64) << 32 | k.slot as u64
}

/// CSeq numbers must stay below 2^31 (RFC 3261 §8.1.1.5).
pub fn cseq_of(seq: u64) -> u32 {
    (seq % 2_000_000_000) as u32 + 1
}

impl OptionsCodec {
    /// `target` is `host:port` (IPv6 hosts bracketed), `local` our `ip:port`.
    pub fn new(run: u32, transport: Transport, target: &str, local: &str) -> OptionsCodec {
        let host = target
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_else(|| target.to_string());
        let mut c = OptionsCodec {
            ids: IdScheme::new(run),
            transport,
            uri: format!("sip:{target}"),
            local: local.to_string(),
            host,
            tag: format!("{run:x}"),
            template: Default::default(),
        };
        c.template = c.cut_template();
        c
    }

    /// Cuts the request of a probe whose ids and CSeq are made of markers that cannot occur
    /// elsewhere into the constant parts around them.
    fn cut_template(&self) -> [Vec<u8>; 4] {
        // slot 0xfedcba98, gen 0x76543210 (hex markers), CSeq written for seq 1_987_654_320.
        let seq: u64 = (0x7654_3210u64 << 32) | 0xfedc_ba98;
        let ids = b"fedcba98.76543210";
        let cseq = cseq_of(seq).to_string();
        let full = self.request(seq);
        let find = |from: usize, pat: &[u8]| -> usize {
            from + full[from..]
                .windows(pat.len())
                .position(|w| w == pat)
                .expect("template marker")
        };
        let a = find(0, ids);
        let b = find(a + ids.len(), ids);
        let c = find(b + ids.len(), format!("\r\nCSeq: {cseq} ").as_bytes()) + 8;
        [
            full[..a].to_vec(),
            full[a + ids.len()..b].to_vec(),
            full[b + ids.len()..c].to_vec(),
            full[c + cseq.len()..].to_vec(),
        ]
    }

    /// Writes the OPTIONS request of probe `seq` into `out` (cleared first): the same bytes as
    /// [`OptionsCodec::request`], from a template cut once, without formatting or allocating.
    pub fn write_request(&self, seq: u64, out: &mut Vec<u8>) {
        let k = key_of(seq);
        let t = &self.template;
        out.clear();
        out.extend_from_slice(&t[0]);
        push_hex(out, k.slot);
        out.push(b'.');
        push_hex(out, k.gen);
        out.extend_from_slice(&t[1]);
        push_hex(out, k.slot);
        out.push(b'.');
        push_hex(out, k.gen);
        out.extend_from_slice(&t[2]);
        push_dec(out, cseq_of(seq));
        out.extend_from_slice(&t[3]);
    }

    /// The OPTIONS request of probe `seq`.
    pub fn request(&self, seq: u64) -> Vec<u8> {
        let key = key_of(seq);
        let mut w = Writer::request("OPTIONS", &self.uri);
        w.header(
            "Via",
            format_args!(
                "SIP/2.0/{} {};branch={};rport",
                self.transport.via(),
                self.local,
                self.ids.branch(key)
            ),
        );
        w.header("Max-Forwards", 70);
        w.header(
            "From",
            format_args!("<sip:imsprobe@{}>;tag={}", self.local, self.tag),
        );
        w.header("To", format_args!("<{}>", self.uri));
        let mut call_id = String::with_capacity(64);
        self.ids.write_call_id(&mut call_id, KIND, key, &self.host);
        w.header("Call-ID", &call_id);
        w.header("CSeq", format_args!("{} OPTIONS", cseq_of(seq)));
        w.header(
            "Contact",
            format_args!(
                "<sip:imsprobe@{};transport={}>",
                self.local,
                self.transport.param()
            ),
        );
        w.header("Accept", "application/sdp");
        w.header("User-Agent", "imsprobe");
        w.finish(None, b"")
    }

    /// What `buf` (one whole datagram or framed stream message) is.
    pub fn classify(&self, buf: &[u8]) -> Reply {
        let m = match Message::parse(buf) {
            Ok(m) => m,
            Err(e) => return Reply::Malformed(e.kind),
        };
        let Some(code) = m.status() else {
            return Reply::Foreign(ForeignKind::Request);
        };
        let Some((KIND, key)) = self.ids.parse_call_id(m.call_id()) else {
            return Reply::Foreign(ForeignKind::UnknownCallId);
        };
        let seq = seq_of(key);
        let cseq_ok = m.cseq() == Some((cseq_of(seq), "OPTIONS"));
        let branch_ok = m
            .top_via()
            .and_then(|v| v.branch)
            .and_then(|b| self.ids.parse_branch(b))
            == Some(key);
        if !cseq_ok || !branch_ok {
            return Reply::Foreign(ForeignKind::Inconsistent);
        }
        if code < 200 {
            Reply::Provisional { seq }
        } else {
            Reply::Final { seq, code }
        }
    }
}

/// Reads the identity of an OPTIONS request or response without knowing the run: for captures
/// taken by anyone (`--pcap-only`). `(is_request, status, call_id, cseq, branch)`.
pub fn options_identity(buf: &[u8]) -> Option<(bool, u16, String, u32, String)> {
    let m = Message::parse(buf).ok()?;
    let (num, method) = m.cseq()?;
    if method != "OPTIONS" {
        return None;
    }
    let branch = m.top_via().and_then(|v| v.branch).unwrap_or("").to_string();
    let is_req = m.is_request();
    if is_req && m.method() != Some("OPTIONS") {
        return None;
    }
    let _ = m.header(HeaderName::CallId)?;
    Some((
        is_req,
        m.status().unwrap_or(0),
        m.call_id().to_string(),
        num,
        branch,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(req: &[u8], code: u16) -> Vec<u8> {
        let m = Message::parse(req).unwrap();
        Writer::response_to(&m, code, "X", Some("t")).finish(None, b"")
    }

    #[test]
    fn request_round_trips_through_a_reply() {
        let c = OptionsCodec::new(0x1234, Transport::Udp, "127.0.0.21:5060", "127.0.0.1:40000");
        for seq in [0u64, 1, 65_537, 5_000_000_000] {
            let req = c.request(seq);
            let m = Message::parse(&req).unwrap();
            assert_eq!(m.method(), Some("OPTIONS"));
            assert_eq!(m.request_uri(), Some("sip:127.0.0.21:5060"));
            assert_eq!(
                c.classify(&answer(&req, 200)),
                Reply::Final { seq, code: 200 }
            );
            assert_eq!(
                c.classify(&answer(&req, 503)),
                Reply::Final { seq, code: 503 }
            );
            assert_eq!(c.classify(&answer(&req, 100)), Reply::Provisional { seq });
            assert_eq!(
                options_identity(&req).map(|x| x.0),
                Some(true),
                "request identity"
            );
        }
    }

    #[test]
    fn the_template_writes_the_same_bytes_as_the_builder() {
        for (t, target, local) in [
            (Transport::Udp, "127.0.0.21:5060", "127.0.0.1:40000"),
            (Transport::Tcp, "[::1]:5070", "[::1]:1"),
        ] {
            let c = OptionsCodec::new(0xabc, t, target, local);
            let mut buf = Vec::new();
            for seq in [
                0u64,
                1,
                9,
                10,
                15,
                16,
                255,
                65_537,
                1_999_999_999,
                2_000_000_000,
                u32::MAX as u64,
                5_000_000_000,
                (0x7654_3210u64 << 32) | 0xfedc_ba98,
            ] {
                c.write_request(seq, &mut buf);
                assert_eq!(
                    String::from_utf8_lossy(&buf),
                    String::from_utf8_lossy(&c.request(seq)),
                    "seq {seq}"
                );
            }
        }
    }

    #[test]
    fn hostile_and_foreign_input_is_classified_not_panicking() {
        let c = OptionsCodec::new(7, Transport::Udp, "127.0.0.1:5060", "127.0.0.1:1");
        let other = OptionsCodec::new(8, Transport::Udp, "127.0.0.1:5060", "127.0.0.1:1");
        let stale = answer(&other.request(3), 200);
        assert_eq!(
            c.classify(&stale),
            Reply::Foreign(ForeignKind::UnknownCallId)
        );
        let req = c.request(3);
        assert_eq!(c.classify(&req), Reply::Foreign(ForeignKind::Request));
        // Same Call-ID, wrong CSeq.
        let bad = String::from_utf8(answer(&req, 200))
            .unwrap()
            .replace("CSeq: 4 OPTIONS", "CSeq: 5 OPTIONS");
        assert_eq!(
            c.classify(bad.as_bytes()),
            Reply::Foreign(ForeignKind::Inconsistent)
        );
        for junk in [
            &b""[..],
            b"\0\0\0",
            b"SIP/2.0 200 OK\r\n",
            b"SIP/2.0 abc\r\n\r\n",
            &[0xff; 300],
        ] {
            assert!(matches!(c.classify(junk), Reply::Malformed(_)), "{junk:?}");
        }
        // Every truncation of a valid reply: no panic.
        let ok = answer(&req, 200);
        for n in 0..ok.len() {
            let _ = c.classify(&ok[..n]);
        }
    }
}
