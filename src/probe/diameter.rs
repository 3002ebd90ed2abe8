//! Diameter watchdog probes as a sans-IO codec: the Capabilities-Exchange-Request that opens
//! every connection (as a CSCF peer opens its Cx connection to the HSS, RFC 6733 §5.3), one
//! Device-Watchdog-Request per probe (§5.5), and what the answers mean.
//!
//! A peer that answers ping may still not answer Diameter: the HSS's service is its Diameter
//! stack, so that is what this layer asks. A DWA is answered by the peer's base protocol, not by
//! its Cx application; it shows the stack, not the subscriber database.
//!
//! Identity: the hop-by-hop id carries the low 32 bits of the probe sequence (widened against
//! the newest probe sent, as ICMP's 16 bits are), the end-to-end id a run token, so answers to
//! another run or another process are foreign, never matched by order.

use crate::diameter::{self as d, cmd, code, hflags, Avp, Message};
use std::net::IpAddr;

/// Result-Code of success (RFC 6733 §7.1.2).
pub const DIAMETER_SUCCESS: u32 = 2001;

/// What a message read from the peer means to us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiaReply {
    /// Device-Watchdog-Answer to probe `seq`, with its Result-Code (0 when it has none).
    Watchdog { seq: u64, result: u32 },
    /// Capabilities-Exchange-Answer to the CER of this connection.
    Capabilities { result: u32 },
    /// A request from the peer (its own DWR, a DPR): `answer` is what we send back.
    PeerRequest { command: u32, answer: Vec<u8> },
    /// Well-formed but not ours: another run's answer, another command.
    Foreign(&'static str),
    /// Not a Diameter message we can read.
    Malformed(&'static str),
}

/// The probe's Diameter identity and its message templates.
#[derive(Clone, Debug)]
pub struct DwrCodec {
    origin_host: String,
    origin_realm: String,
    host_ip: IpAddr,
    /// End-to-end id of every DWR of this run.
    token: u32,
    /// A DWR whose hop-by-hop id (bytes 12..16) is written per probe.
    dwr: Vec<u8>,
}

impl DwrCodec {
    /// `local`: our address on the connection (CER's Host-IP-Address); `realm`: ours, also the
    /// default Origin-Realm the lab HSS expects of its peers.
    pub fn new(run_id: u32, local: IpAddr, realm: &str) -> DwrCodec {
        let origin_host = format!("imsprobe-{run_id:08x}.{realm}");
        let token = run_id ^ 0x5a5a_0000 ^ std::process::id();
        let mut m = Message::request(cmd::DEVICE_WATCHDOG, d::APP_COMMON, 0, token);
        m.push(Avp::bytes(code::ORIGIN_HOST, origin_host.as_bytes()))
            .push(Avp::bytes(code::ORIGIN_REALM, realm.as_bytes()));
        DwrCodec {
            dwr: m.encode(),
            origin_host,
            origin_realm: realm.to_string(),
            host_ip: local,
            token,
        }
    }

    pub fn origin_host(&self) -> &str {
        &self.origin_host
    }

    /// The CER sent first on every connection: Cx (3GPP) as the application we would speak.
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

    /// Writes the DWR of probe `seq` into `out` (cleared first; no allocation once grown).
    pub fn write_request(&self, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.dwr);
        out[12..16].copy_from_slice(&(seq as u32).to_be_bytes());
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
        let result = m.result_code().unwrap_or(0);
        match m.command {
            cmd::DEVICE_WATCHDOG => {
                if m.end_to_end != self.token {
                    return DiaReply::Foreign("other_run");
                }
                let back = (latest as u32).wrapping_sub(m.hop_by_hop) as u64;
                match latest.checked_sub(back) {
                    Some(seq) => DiaReply::Watchdog { seq, result },
                    None => DiaReply::Foreign("unknown_seq"),
                }
            }
            cmd::CAPABILITIES_EXCHANGE if m.end_to_end == self.token => {
                DiaReply::Capabilities { result }
            }
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

    fn codec() -> DwrCodec {
        DwrCodec::new(7, "127.0.0.1".parse().unwrap(), "ims.example")
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
            DiaReply::Watchdog {
                seq,
                result: DIAMETER_SUCCESS
            }
        );
        // Another run's token: foreign. A failure result is carried.
        let other = DwrCodec::new(8, "127.0.0.1".parse().unwrap(), "ims.example");
        assert_eq!(other.classify(&a, seq), DiaReply::Foreign("other_run"));
        let busy = answer(&out, Some(3004));
        assert_eq!(
            c.classify(&busy, seq),
            DiaReply::Watchdog { seq, result: 3004 }
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
