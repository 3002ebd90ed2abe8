//! Diameter probes as a sans-IO codec: the Capabilities-Exchange-Request that opens every
//! connection (as a CSCF peer opens its Cx connection to the HSS, RFC 6733 §5.3), one request
//! per probe, and what the answers mean.
//!
//! A peer that answers ping may still not answer Diameter: the HSS's service is its Diameter
//! stack, so that is what this layer asks. The request is either
//! - a Device-Watchdog-Request (§5.5), answered by the peer's base protocol: it shows the stack,
//!   not the subscriber database; or
//! - a Cx User-Authorization-Request (TS 29.229 §6.1.1) for one subscriber, answered by the HSS's
//!   application: a UAA with a success-class result (Result-Code or Experimental-Result 2xxx,
//!   e.g. 2001 first or 2002 subsequent registration) is a good reply, an error result (5001
//!   user unknown, 3xxx) a failed one, as a SIP error response is.
//!
//! Identity: the hop-by-hop id carries the low 32 bits of the probe sequence (widened against
//! the newest probe sent, as ICMP's 16 bits are), the end-to-end id that XOR a run token, so
//! answers to another run or another process are foreign, never matched by order, and every
//! request has its own end-to-end id (RFC 6733 §3: unique per request; a peer may treat a
//! repeated one from the same Origin-Host as a duplicate and answer from a cache).

use crate::diameter::{self as d, cmd, code, hflags, Avp, Message};
use std::net::IpAddr;

/// Result-Code of success (RFC 6733 §7.1.2).
pub const DIAMETER_SUCCESS: u32 = 2001;

/// What a message read from the peer means to us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiaReply {
    /// The answer (DWA or UAA) to probe `seq`: its result (Result-Code, else the
    /// Experimental-Result-Code; 0 when it has neither) and whether that is a good reply.
    Answer { seq: u64, result: u32, ok: bool },
    /// Capabilities-Exchange-Answer to the CER of this connection.
    Capabilities { result: u32 },
    /// A request from the peer (its own DWR, a DPR): `answer` is what we send back.
    PeerRequest { command: u32, answer: Vec<u8> },
    /// Well-formed but not ours: another run's answer, another command.
    Foreign(&'static str),
    /// Not a Diameter message we can read.
    Malformed(&'static str),
}

/// Why text names no Cx subscriber; each shows the forms that do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CxUserError {
    #[error("{0:?}: give IMPI,IMPU, e.g. alice@ims.example,tel:+15550001")]
    BadPair(String),
    #[error("{0:?} is not a user: give an IMPU sip:user@realm, an IMPI user@realm, or IMPI,IMPU (e.g. for a tel: IMPU)")]
    NotUser(String),
}

/// A Cx subscriber to ask about: the private identity (User-Name) and a public identity of it
/// (Public-Identity); a UAR carries both (TS 29.229 §6.1.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CxUser {
    pub impi: String,
    pub impu: String,
}

impl CxUser {
    /// `sip:user@realm` (IMPU; the IMPI is `user@realm`), `user@realm` (IMPI; the IMPU is
    /// `sip:user@realm`), or `IMPI,IMPU` when one is not the other with `sip:` (a tel: IMPU).
    pub fn parse(s: &str) -> Result<CxUser, CxUserError> {
        let s = s.trim();
        if let Some((impi, impu)) = s.split_once(',') {
            let (impi, impu) = (impi.trim(), impu.trim());
            if impi.is_empty() || impu.is_empty() || !impu.contains(':') {
                return Err(CxUserError::BadPair(s.into()));
            }
            return Ok(CxUser {
                impi: impi.into(),
                impu: impu.into(),
            });
        }
        let bad = || CxUserError::NotUser(s.into());
        match s.split_once(':') {
            Some(("sip" | "sips", rest)) if rest.contains('@') && !rest.starts_with('@') => {
                Ok(CxUser {
                    impi: rest.into(),
                    impu: s.into(),
                })
            }
            Some(_) => Err(bad()),
            None if s.contains('@') && !s.starts_with('@') => Ok(CxUser {
                impi: s.into(),
                impu: format!("sip:{s}"),
            }),
            None => Err(bad()),
        }
    }
}

/// What each probe asks.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum DiaRequest {
    /// Device-Watchdog-Request: the peer's Diameter stack.
    #[default]
    Watchdog,
    /// Cx User-Authorization-Request for this subscriber: the HSS's application.
    Uar(CxUser),
}

impl DiaRequest {
    pub fn command(&self) -> u32 {
        match self {
            DiaRequest::Watchdog => cmd::DEVICE_WATCHDOG,
            DiaRequest::Uar(_) => cmd::USER_AUTHORIZATION,
        }
    }

    /// `DWR`, or `UAR <impu>`: for logs and the report.
    pub fn describe(&self) -> String {
        match self {
            DiaRequest::Watchdog => "DWR".into(),
            DiaRequest::Uar(u) => format!("UAR {} {}", u.impi, u.impu),
        }
    }
}

/// The result of an answer to one of our probes (`command`), and whether it is a good reply:
/// a DWA needs Result-Code 2001 (RFC 6733 §5.5.2); a Cx answer any success-class result, base
/// or experimental (TS 29.229 §6.2.1: 2001 first registration, 2002 subsequent, 2003
/// unregistered service are all the HSS authorising). Shared with the capture reader.
pub fn answer_outcome(command: u32, m: &Message) -> (u32, bool) {
    let result = m.result_code().unwrap_or(0);
    let ok = match command {
        cmd::DEVICE_WATCHDOG => result == DIAMETER_SUCCESS,
        _ => (2000..3000).contains(&result),
    };
    (result, ok)
}

/// The requests this layer sends as probes (how a capture tells them from the peer's own).
pub fn is_probe_command(command: u32) -> bool {
    command == cmd::DEVICE_WATCHDOG || command == cmd::USER_AUTHORIZATION
}

/// The probe's Diameter identity and its message templates.
#[derive(Clone, Debug)]
pub struct DiaCodec {
    origin_host: String,
    origin_realm: String,
    host_ip: IpAddr,
    request: DiaRequest,
    /// XORed with the hop-by-hop id into the end-to-end id of every probe of this run; the
    /// CER's end-to-end id.
    token: u32,
    /// The probe request; per probe, the hop-by-hop and end-to-end ids (bytes 12..20) and the
    /// 16 hex digits at `sid_seq` (a UAR's Session-Id) are written.
    template: Vec<u8>,
    sid_seq: Option<usize>,
}

impl DiaCodec {
    /// `local`: our address on the connection (CER's Host-IP-Address); `realm`: ours, also the
    /// default Origin-Realm the lab HSS expects of its peers, and a UAR's Destination-Realm and
    /// Visited-Network-Identifier (the probe stands for a CSCF of the home network).
    pub fn new(run_id: u32, local: IpAddr, realm: &str, request: DiaRequest) -> DiaCodec {
        let origin_host = format!("imsprobe-{run_id:08x}.{realm}");
        let token = run_id ^ 0x5a5a_0000 ^ std::process::id();
        let mut m = Message::request(request.command(), d::APP_COMMON, 0, 0);
        let mut sid_seq = None;
        match &request {
            DiaRequest::Watchdog => {
                m.push(Avp::bytes(code::ORIGIN_HOST, origin_host.as_bytes()))
                    .push(Avp::bytes(code::ORIGIN_REALM, realm.as_bytes()));
            }
            DiaRequest::Uar(user) => {
                // Session-Id first (RFC 6733 §8.8), `<host>;<hi>;<lo>` with a fixed-width low
                // part: the sequence, so every request is its own session.
                let prefix = format!("{origin_host};{token:08x};");
                sid_seq = Some(d::HEADER_LEN + 8 + prefix.len());
                m.app_id = d::APP_CX;
                m.flags |= hflags::PROXIABLE;
                m.push(Avp::bytes(code::SESSION_ID, format!("{prefix}{:016x}", 0)))
                    .push(Avp::grouped(
                        code::VENDOR_SPECIFIC_APPLICATION_ID,
                        &[
                            Avp::u32(code::VENDOR_ID, d::VENDOR_3GPP),
                            Avp::u32(code::AUTH_APPLICATION_ID, d::APP_CX),
                        ],
                    ))
                    // NO_STATE_MAINTAINED
                    .push(Avp::u32(code::AUTH_SESSION_STATE, 1))
                    .push(Avp::bytes(code::ORIGIN_HOST, origin_host.as_bytes()))
                    .push(Avp::bytes(code::ORIGIN_REALM, realm.as_bytes()))
                    .push(Avp::bytes(code::DESTINATION_REALM, realm.as_bytes()))
                    .push(Avp::bytes(code::USER_NAME, user.impi.as_bytes()))
                    .push(Avp::bytes_3gpp(code::PUBLIC_IDENTITY, user.impu.as_bytes()))
                    .push(Avp::bytes_3gpp(
                        code::VISITED_NETWORK_IDENTIFIER,
                        realm.as_bytes(),
                    ));
            }
        }
        DiaCodec {
            template: m.encode(),
            sid_seq,
            origin_host,
            origin_realm: realm.to_string(),
            host_ip: local,
            request,
            token,
        }
    }

    pub fn origin_host(&self) -> &str {
        &self.origin_host
    }

    pub fn request(&self) -> &DiaRequest {
        &self.request
    }

    /// The CER sent first on every connection: Cx (3GPP) as the application we would speak
    /// (and do speak, with UAR probes).
    pub fn cer(&self) -> Vec<u8> {
        let mut m = Message::request(cmd::CAPABILITIES_EXCHANGE, d::APP_COMMON, 0, self.token);
        m.push(Avp::bytes(code::ORIGIN_HOST, self.origin_host.as_bytes()))
            .push(Avp::bytes(code::ORIGIN_REALM, self.origin_realm.as_bytes()))
            .push(Avp::address(code::HOST_IP_ADDRESS, self.host_ip))
            .push(Avp::u32(code::VENDOR_ID, d::VENDOR_3GPP))
            .push(Avp::bytes(code::PRODUCT_NAME, "imsprobe"))
            .push(Avp::u32(code::SUPPORTED_VENDOR_ID, d::VENDOR_3GPP))
            .push(Avp::grouped(
                code::VENDOR_SPECIFIC_APPLICATION_ID,
                &[
                    Avp::u32(code::VENDOR_ID, d::VENDOR_3GPP),
                    Avp::u32(code::AUTH_APPLICATION_ID, d::APP_CX),
                ],
            ));
        m.encode()
    }

    /// Writes the request of probe `seq` into `out` (cleared first; no allocation once grown).
    pub fn write_request(&self, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.template);
        let hbh = seq as u32;
        out[12..16].copy_from_slice(&hbh.to_be_bytes());
        out[16..20].copy_from_slice(&(hbh ^ self.token).to_be_bytes());
        if let Some(at) = self.sid_seq {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for (i, b) in out[at..at + 16].iter_mut().enumerate() {
                *b = HEX[((seq >> (60 - 4 * i)) & 0xf) as usize];
            }
        }
    }

    /// Classifies one framed message; `latest` is the newest probe sequence sent.
    pub fn classify(&self, msg: &[u8], latest: u64) -> DiaReply {
        let m = match Message::decode(msg) {
            Ok(m) => m,
            Err(_) => return DiaReply::Malformed("diameter"),
        };
        if m.is_request() {
            return self.peer_request(&m);
        }
        match m.command {
            c if c == self.request.command() => {
                if m.end_to_end ^ m.hop_by_hop != self.token {
                    return DiaReply::Foreign("other_run");
                }
                let back = (latest as u32).wrapping_sub(m.hop_by_hop) as u64;
                let (result, ok) = answer_outcome(c, &m);
                match latest.checked_sub(back) {
                    Some(seq) => DiaReply::Answer { seq, result, ok },
                    None => DiaReply::Foreign("unknown_seq"),
                }
            }
            cmd::CAPABILITIES_EXCHANGE if m.end_to_end == self.token => DiaReply::Capabilities {
                result: m.result_code().unwrap_or(0),
            },
            _ => DiaReply::Foreign("other_answer"),
        }
    }

    /// A peer's DWR is answered (a peer that gets no DWA takes the connection down, §5.5.3);
    /// a DPR too, with success: the peer will close and we reconnect.
    fn peer_request(&self, req: &Message) -> DiaReply {
        match req.command {
            cmd::DEVICE_WATCHDOG | cmd::DISCONNECT_PEER => {
                let mut a = Message::answer_to(req);
                a.push(Avp::u32(code::RESULT_CODE, DIAMETER_SUCCESS))
                    .push(Avp::bytes(code::ORIGIN_HOST, self.origin_host.as_bytes()))
                    .push(Avp::bytes(code::ORIGIN_REALM, self.origin_realm.as_bytes()));
                DiaReply::PeerRequest {
                    command: req.command,
                    answer: a.encode(),
                }
            }
            _ => {
                // An application request to a probe: answer "unable to comply" (5012) rather
                // than leave the peer waiting for its Tx timer.
                let mut a = Message::answer_to(req);
                a.flags |= hflags::ERROR;
                a.push(Avp::u32(code::RESULT_CODE, 5012))
                    .push(Avp::bytes(code::ORIGIN_HOST, self.origin_host.as_bytes()))
                    .push(Avp::bytes(code::ORIGIN_REALM, self.origin_realm.as_bytes()));
                DiaReply::PeerRequest {
                    command: req.command,
                    answer: a.encode(),
                }
            }
        }
    }
}

/// Frames a Diameter byte stream by the header's length. Its buffer never holds more than one
/// maximum message plus one read; a length the codec refuses is an error (the connection is
/// then dropped and made again, as for SIP).
#[derive(Default)]
pub struct DiameterFramer {
    buf: Vec<u8>,
    /// Start of the unread part of `buf`.
    start: usize,
}

impl DiameterFramer {
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole message, `None` until one is buffered.
    pub fn next_message(&mut self) -> Result<Option<&[u8]>, d::DecodeError> {
        if self.start > 0 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let rest = &self.buf[self.start..];
        match d::frame_len(rest) {
            None => Ok(None),
            Some(Err(e)) => Err(e),
            Some(Ok(n)) if rest.len() < n => Ok(None),
            Some(Ok(n)) => {
                let at = self.start;
                self.start += n;
                Ok(Some(&self.buf[at..at + n]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> DiaCodec {
        DiaCodec::new(
            7,
            "127.0.0.1".parse().unwrap(),
            "ims.example",
            DiaRequest::Watchdog,
        )
    }

    fn answer(req: &[u8], result: Option<u32>) -> Vec<u8> {
        let r = Message::decode(req).unwrap();
        let mut a = Message::answer_to(&r);
        if let Some(rc) = result {
            a.push(Avp::u32(code::RESULT_CODE, rc));
        }
        a.push(Avp::bytes(code::ORIGIN_HOST, "hss.ims.example"));
        a.encode()
    }

    #[test]
    fn watchdog_answers_match_their_probe_across_32_bit_wrap() {
        let c = codec();
        let mut out = Vec::new();
        let seq = (1u64 << 32) + 5;
        c.write_request(seq, &mut out);
        let m = Message::decode(&out).unwrap();
        assert!(m.is_request());
        assert_eq!(m.command, cmd::DEVICE_WATCHDOG);
        assert_eq!(m.str_avp(code::ORIGIN_HOST, None), Some(c.origin_host()));
        let a = answer(&out, Some(DIAMETER_SUCCESS));
        assert_eq!(
            c.classify(&a, seq + 3),
            DiaReply::Answer {
                seq,
                result: DIAMETER_SUCCESS,
                ok: true
            }
        );
        // Another run's token: foreign. A failure result is carried.
        let other = DiaCodec::new(
            8,
            "127.0.0.1".parse().unwrap(),
            "ims.example",
            DiaRequest::Watchdog,
        );
        assert_eq!(other.classify(&a, seq), DiaReply::Foreign("other_run"));
        let busy = answer(&out, Some(3004));
        assert_eq!(
            c.classify(&busy, seq),
            DiaReply::Answer {
                seq,
                result: 3004,
                ok: false
            }
        );
        // An answer for a probe "before the first": unknown.
        c.write_request(9, &mut out);
        assert_eq!(
            c.classify(&answer(&out, None), 3),
            DiaReply::Foreign("unknown_seq")
        );
    }

    #[test]
    fn cer_and_peer_requests() {
        let c = codec();
        let cer = Message::decode(&c.cer()).unwrap();
        assert_eq!(cer.command, cmd::CAPABILITIES_EXCHANGE);
        assert!(cer.find(code::HOST_IP_ADDRESS, None).is_some());
        assert_eq!(
            c.classify(&answer(&c.cer(), Some(2001)), 0),
            DiaReply::Capabilities { result: 2001 }
        );
        let mut dwr = Message::request(cmd::DEVICE_WATCHDOG, d::APP_COMMON, 77, 88);
        dwr.push(Avp::bytes(code::ORIGIN_HOST, "hss"));
        let DiaReply::PeerRequest { command, answer } = c.classify(&dwr.encode(), 0) else {
            panic!("a peer's DWR is answered")
        };
        assert_eq!(command, cmd::DEVICE_WATCHDOG);
        let a = Message::decode(&answer).unwrap();
        assert!(!a.is_request());
        assert_eq!((a.hop_by_hop, a.end_to_end), (77, 88));
        assert_eq!(a.result_code(), Some(DIAMETER_SUCCESS));
    }

    fn uar_codec(user: &str) -> DiaCodec {
        DiaCodec::new(
            7,
            "127.0.0.1".parse().unwrap(),
            "ims.example",
            DiaRequest::Uar(CxUser::parse(user).unwrap()),
        )
    }

    fn uaa(req: &[u8], experimental: Option<u32>, result: Option<u32>) -> Vec<u8> {
        let r = Message::decode(req).unwrap();
        let mut a = Message::answer_to(&r);
        a.push(r.find(code::SESSION_ID, None).unwrap().clone());
        if let Some(rc) = result {
            a.push(Avp::u32(code::RESULT_CODE, rc));
        }
        if let Some(erc) = experimental {
            a.push(Avp::grouped(
                code::EXPERIMENTAL_RESULT,
                &[
                    Avp::u32(code::VENDOR_ID, d::VENDOR_3GPP),
                    Avp::u32(code::EXPERIMENTAL_RESULT_CODE, erc),
                ],
            ));
        }
        a.encode()
    }

    #[test]
    fn uar_carries_the_cx_avps_and_a_session_and_end_to_end_id_per_request() {
        let c = uar_codec("sip:alice@ims.example");
        let mut out = Vec::new();
        let seq = (1u64 << 32) + 0xabc;
        c.write_request(seq, &mut out);
        let m = Message::decode(&out).unwrap();
        assert!(m.is_request());
        assert_eq!((m.command, m.app_id), (cmd::USER_AUTHORIZATION, d::APP_CX));
        assert_ne!(m.flags & hflags::PROXIABLE, 0);
        assert_eq!(m.avps[0].code, code::SESSION_ID, "Session-Id first");
        let sid = m.str_avp(code::SESSION_ID, None).unwrap().to_string();
        assert!(
            sid.starts_with(c.origin_host()) && sid.ends_with(";0000000100000abc"),
            "{sid}"
        );
        let vsai = m
            .find(code::VENDOR_SPECIFIC_APPLICATION_ID, None)
            .unwrap()
            .children()
            .unwrap();
        assert_eq!(vsai[0].as_u32(), Some(d::VENDOR_3GPP));
        assert_eq!(vsai[1].as_u32(), Some(d::APP_CX));
        assert_eq!(m.u32_avp(code::AUTH_SESSION_STATE, None), Some(1));
        assert_eq!(m.str_avp(code::USER_NAME, None), Some("alice@ims.example"));
        let v = Some(d::VENDOR_3GPP);
        assert_eq!(
            m.str_avp(code::PUBLIC_IDENTITY, v),
            Some("sip:alice@ims.example")
        );
        assert_eq!(
            m.str_avp(code::VISITED_NETWORK_IDENTIFIER, v),
            Some("ims.example")
        );
        assert_eq!(
            m.str_avp(code::DESTINATION_REALM, None),
            Some("ims.example")
        );
        assert_eq!(m.str_avp(code::ORIGIN_HOST, None), Some(c.origin_host()));
        // The next request: another session, another end-to-end id, same length.
        let mut next = Vec::new();
        c.write_request(seq + 1, &mut next);
        let n = Message::decode(&next).unwrap();
        assert_eq!(next.len(), out.len());
        assert_ne!(n.str_avp(code::SESSION_ID, None).unwrap(), sid);
        assert_ne!(n.end_to_end, m.end_to_end);
        // The CER offers Cx, vendor 3GPP.
        let cer = Message::decode(&c.cer()).unwrap();
        assert_eq!(
            cer.u32_avp(code::SUPPORTED_VENDOR_ID, None),
            Some(d::VENDOR_3GPP)
        );
        let app = cer
            .find(code::VENDOR_SPECIFIC_APPLICATION_ID, None)
            .unwrap()
            .children()
            .unwrap();
        assert_eq!(app[1].as_u32(), Some(d::APP_CX));
    }

    #[test]
    fn uaa_results_are_good_or_failed_replies() {
        let c = uar_codec("alice@ims.example");
        let mut out = Vec::new();
        c.write_request(41, &mut out);
        let cases = [
            (Some(2001), None, 2001, true),
            (Some(2002), None, 2002, true),
            (None, Some(2001), 2001, true),
            (Some(5001), None, 5001, false),
            (None, Some(3002), 3002, false),
            (None, None, 0, false),
        ];
        for (erc, rc, result, ok) in cases {
            assert_eq!(
                c.classify(&uaa(&out, erc, rc), 50),
                DiaReply::Answer {
                    seq: 41,
                    result,
                    ok
                },
                "experimental {erc:?} result {rc:?}"
            );
        }
        // A DWA (we sent none) and another run's UAA are not answers to our probes.
        let mut dwa = Message::decode(&answer(&out, Some(2001))).unwrap();
        dwa.command = cmd::DEVICE_WATCHDOG;
        assert_eq!(
            c.classify(&dwa.encode(), 50),
            DiaReply::Foreign("other_answer")
        );
        let other = DiaCodec::new(
            8,
            "127.0.0.1".parse().unwrap(),
            "ims.example",
            DiaRequest::Uar(CxUser::parse("alice@ims.example").unwrap()),
        );
        assert_eq!(
            other.classify(&uaa(&out, Some(2001), None), 50),
            DiaReply::Foreign("other_run")
        );
    }

    #[test]
    fn cx_users_parse() {
        let u = CxUser::parse("sip:alice@ims.example").unwrap();
        assert_eq!(
            (u.impi.as_str(), u.impu.as_str()),
            ("alice@ims.example", "sip:alice@ims.example")
        );
        let u = CxUser::parse("001010000000001@ims.example").unwrap();
        assert_eq!(u.impu, "sip:001010000000001@ims.example");
        let u = CxUser::parse("alice@ims.example, tel:+15550001").unwrap();
        assert_eq!(
            (u.impi.as_str(), u.impu.as_str()),
            ("alice@ims.example", "tel:+15550001")
        );
        for bad in ["tel:+15550001", "alice", "sip:alice", "@x", "a@b,", "a@b,c"] {
            assert!(CxUser::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn framer_splits_joins_and_refuses_junk() {
        let c = codec();
        let mut one = Vec::new();
        c.write_request(1, &mut one);
        let mut stream = one.clone();
        c.write_request(2, &mut one);
        stream.extend_from_slice(&one);
        let mut f = DiameterFramer::default();
        let mut got = Vec::new();
        for b in stream.chunks(7) {
            f.push(b);
            while let Some(m) = f.next_message().unwrap() {
                got.push(Message::decode(m).unwrap().hop_by_hop);
            }
        }
        assert_eq!(got, vec![1, 2]);
        let mut f = DiameterFramer::default();
        f.push(b"OPTIONS sip:x SIP/2.0\r\n");
        assert!(f.next_message().is_err());
        let mut f = DiameterFramer::default();
        f.push(&[1, 0xff, 0xff, 0xff, 0x80]);
        assert!(f.next_message().is_err(), "a 16 MB length is refused");
        for n in 0..stream.len() {
            let _ = c.classify(&stream[..n], 5);
        }
    }
}
