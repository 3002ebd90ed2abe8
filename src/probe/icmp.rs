//! ICMP and ICMPv6 echo as a sans-IO codec. The 16-bit ICMP sequence wraps every 6.5 s at
//! 10 kHz, so the payload carries a run token and the full 64-bit probe sequence; a reply is
//! matched by identity (token + sequence, checked against id/seq16), never by order. Both
//! families use the same echo layout (RFC 792, RFC 4443 §4); they differ in type numbers, in the
//! checksum (ICMPv6's covers a pseudo-header: the kernel fills it in on ICMPv6 sockets), in what
//! a raw socket delivers (IPv4 with its IP header, IPv6 without) and in the header an error
//! quotes.

use std::net::{IpAddr, Ipv4Addr};

pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACH: u8 = 3;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;

pub const V6_DEST_UNREACH: u8 = 1;
pub const V6_PACKET_TOO_BIG: u8 = 2;
pub const V6_TIME_EXCEEDED: u8 = 3;
pub const V6_ECHO_REQUEST: u8 = 128;
pub const V6_ECHO_REPLY: u8 = 129;
/// IPv6 next-header number of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;

/// Bytes of ICMP message we send (8 header + 56 payload, as ping).
pub const PACKET_LEN: usize = 64;
const MAGIC: &[u8; 8] = b"imsprobe";

/// What a received ICMP datagram (as a raw socket gives it, with the IP header, or as a datagram
/// ICMP socket gives it, without) means to us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpReply {
    /// Echo reply to our probe `seq`.
    Echo { seq: u64 },
    /// An ICMP error (`kind` = type) about our probe whose 16-bit sequence was `seq16`.
    Error { kind: u8, seq16: u16 },
    /// Not for us (other process, other target, other type).
    Foreign,
    /// Too short or inconsistent.
    Malformed,
}

#[derive(Clone, Debug)]
pub struct EchoCodec {
    pub id: u16,
    pub token: u64,
    /// The target: replies from anybody else are foreign (raw sockets see all ICMP).
    pub target: IpAddr,
}

pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [b] = chunks.remainder() {
        sum += (*b as u32) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl EchoCodec {
    fn v6(&self) -> bool {
        self.target.is_ipv6()
    }

    /// The echo request of probe `seq`. IPv4: checksum filled in (the kernel recomputes it on
    /// datagram ICMP sockets and replaces the id with the socket's). IPv6: checksum left 0, the
    /// kernel computes it over the pseudo-header on every ICMPv6 socket (RFC 3542 §3.1).
    pub fn request(&self, seq: u64) -> [u8; PACKET_LEN] {
        let mut p = [0u8; PACKET_LEN];
        p[0] = if self.v6() {
            V6_ECHO_REQUEST
        } else {
            ECHO_REQUEST
        };
        p[4..6].copy_from_slice(&self.id.to_be_bytes());
        p[6..8].copy_from_slice(&(seq as u16).to_be_bytes());
        p[8..16].copy_from_slice(MAGIC);
        p[16..24].copy_from_slice(&self.token.to_be_bytes());
        p[24..32].copy_from_slice(&seq.to_be_bytes());
        for (i, b) in p[32..].iter_mut().enumerate() {
            *b = i as u8;
        }
        if !self.v6() {
            let c = checksum(&p);
            p[2..4].copy_from_slice(&c.to_be_bytes());
        }
        p
    }

    /// Classifies a datagram as a socket of kind `raw` delivers it. Raw IPv4 sockets deliver the
    /// IP header too and see everybody's ICMP; raw IPv6 sockets deliver no header, and ours is
    /// connected to the target, so the kernel passes only the target's packets. Datagram ICMP
    /// sockets choose the id themselves and filter for us, so the id is checked on raw ones only.
    pub fn classify_from(&self, buf: &[u8], raw: bool) -> IcmpReply {
        if self.v6() {
            self.classify_v6(buf, raw)
        } else {
            self.classify(buf, raw, raw)
        }
    }

    /// ICMPv6 without the IP header. An error quotes the IPv6 header of our request (40 bytes)
    /// and the start of our echo request.
    fn classify_v6(&self, icmp: &[u8], check_id: bool) -> IcmpReply {
        if icmp.len() < 8 {
            return IcmpReply::Malformed;
        }
        match icmp[0] {
            V6_ECHO_REPLY => self.echo_reply(icmp, check_id),
            kind @ (V6_DEST_UNREACH | V6_PACKET_TOO_BIG | V6_TIME_EXCEEDED) => {
                let orig = &icmp[8..];
                if orig.len() < 48 || orig[0] >> 4 != 6 {
                    return IcmpReply::Malformed;
                }
                // Our requests carry no extension headers.
                if orig[6] != IPPROTO_ICMPV6 || orig[40] != V6_ECHO_REQUEST {
                    return IcmpReply::Foreign;
                }
                self.quoted_request(kind, &orig[40..], check_id)
            }
            _ => IcmpReply::Foreign,
        }
    }

    fn echo_reply(&self, icmp: &[u8], check_id: bool) -> IcmpReply {
        let id = u16::from_be_bytes([icmp[4], icmp[5]]);
        if check_id && id != self.id {
            return IcmpReply::Foreign;
        }
        if icmp.len() < 32 || &icmp[8..16] != MAGIC {
            return IcmpReply::Foreign;
        }
        let token = u64::from_be_bytes(icmp[16..24].try_into().unwrap_or_default());
        if token != self.token {
            return IcmpReply::Foreign;
        }
        let seq = u64::from_be_bytes(icmp[24..32].try_into().unwrap_or_default());
        let seq16 = u16::from_be_bytes([icmp[6], icmp[7]]);
        if seq as u16 != seq16 {
            return IcmpReply::Malformed;
        }
        IcmpReply::Echo { seq }
    }

    /// An error of type `kind` quoting `orig`, the start of an echo request (≥ 8 bytes).
    fn quoted_request(&self, kind: u8, orig: &[u8], check_id: bool) -> IcmpReply {
        let id = u16::from_be_bytes([orig[4], orig[5]]);
        if check_id && id != self.id {
            return IcmpReply::Foreign;
        }
        IcmpReply::Error {
            kind,
            seq16: u16::from_be_bytes([orig[6], orig[7]]),
        }
    }

    /// Classifies an IPv4 ICMP datagram. `with_ip_header`: raw sockets deliver the IPv4 header
    /// too. `check_id`: false on datagram ICMP sockets (the kernel chose the id and filters).
    pub fn classify(&self, buf: &[u8], with_ip_header: bool, check_id: bool) -> IcmpReply {
        let icmp = if with_ip_header {
            let Some((src, proto, payload)) = ipv4_payload(buf) else {
                return IcmpReply::Malformed;
            };
            if proto != 1 {
                return IcmpReply::Foreign;
            }
            if IpAddr::V4(src) != self.target {
                return IcmpReply::Foreign;
            }
            payload
        } else {
            buf
        };
        if icmp.len() < 8 {
            return IcmpReply::Malformed;
        }
        match icmp[0] {
            ECHO_REPLY => self.echo_reply(icmp, check_id),
            kind @ (DEST_UNREACH | TIME_EXCEEDED) => {
                // Payload: the original IPv4 header + at least 8 bytes of our echo request.
                let Some((_, proto, orig)) = ipv4_payload(&icmp[8..]) else {
                    return IcmpReply::Malformed;
                };
                if proto != 1 || orig.len() < 8 || orig[0] != ECHO_REQUEST {
                    return IcmpReply::Foreign;
                }
                self.quoted_request(kind, orig, check_id)
            }
            _ => IcmpReply::Foreign,
        }
    }
}

/// The most recent sequence number `<= latest` whose low 16 bits are `seq16` (an ICMP error only
/// quotes the 16-bit sequence).
pub fn widen_seq16(latest: u64, seq16: u16) -> Option<u64> {
    let back = (latest as u16).wrapping_sub(seq16) as u64;
    latest.checked_sub(back)
}

/// `(source, protocol, payload)` of an IPv4 packet; the payload is cut to the total length.
pub fn ipv4_payload(buf: &[u8]) -> Option<(Ipv4Addr, u8, &[u8])> {
    if buf.len() < 20 || buf[0] >> 4 != 4 {
        return None;
    }
    let ihl = (buf[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    if ihl < 20 || buf.len() < ihl {
        return None;
    }
    let end = if total >= ihl && total <= buf.len() {
        total
    } else {
        buf.len()
    };
    let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
    Some((src, buf[9], &buf[ihl..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_reply(req: &[u8]) -> Vec<u8> {
        let mut r = req.to_vec();
        r[0] = ECHO_REPLY;
        r[2] = 0;
        r[3] = 0;
        let c = checksum(&r);
        r[2..4].copy_from_slice(&c.to_be_bytes());
        r
    }

    fn ip(src: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        let total = (20 + payload.len()) as u16;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&[127, 0, 0, 1]);
        h.extend_from_slice(payload);
        h
    }

    #[test]
    fn echo_round_trip_with_and_without_ip_header() {
        let t = Ipv4Addr::new(127, 0, 0, 21);
        let c = EchoCodec {
            id: 77,
            token: 0xdead,
            target: t.into(),
        };
        let req = c.request(70_000);
        assert_eq!(checksum(&req), 0);
        let rep = as_reply(&req);
        assert_eq!(
            c.classify(&rep, false, false),
            IcmpReply::Echo { seq: 70_000 }
        );
        assert_eq!(
            c.classify(&ip(t, &rep), true, true),
            IcmpReply::Echo { seq: 70_000 }
        );
        // From another host, another token, another id: foreign.
        assert_eq!(
            c.classify(&ip(Ipv4Addr::new(127, 0, 0, 22), &rep), true, true),
            IcmpReply::Foreign
        );
        let other = EchoCodec {
            id: 77,
            token: 1,
            target: t.into(),
        };
        assert_eq!(other.classify(&rep, false, false), IcmpReply::Foreign);
        let other = EchoCodec {
            id: 78,
            token: 0xdead,
            target: t.into(),
        };
        assert_eq!(other.classify(&ip(t, &rep), true, true), IcmpReply::Foreign);
        // Our own request looped back on a raw socket: foreign.
        assert_eq!(c.classify(&ip(t, &req), true, true), IcmpReply::Foreign);
    }

    #[test]
    fn errors_quote_the_probe_and_junk_does_not_panic() {
        let t = Ipv4Addr::new(127, 0, 0, 21);
        let c = EchoCodec {
            id: 5,
            token: 9,
            target: t.into(),
        };
        let req = c.request(65_536 + 3);
        let mut err = vec![DEST_UNREACH, 1, 0, 0, 0, 0, 0, 0];
        err.extend_from_slice(&ip(Ipv4Addr::new(127, 0, 0, 1), &req));
        assert_eq!(
            c.classify(&ip(t, &err), true, true),
            IcmpReply::Error { kind: 3, seq16: 3 }
        );
        assert_eq!(widen_seq16(65_536 + 10, 3), Some(65_536 + 3));
        assert_eq!(widen_seq16(2, 3), None);
        for n in 0..err.len() {
            let _ = c.classify(&err[..n], false, true);
            let _ = c.classify(&ip(t, &err[..n]), true, true);
        }
        assert_eq!(c.classify(&[0x45; 10], true, true), IcmpReply::Malformed);
    }

    #[test]
    fn icmpv6_echo_and_errors() {
        let t: IpAddr = "2001:db8::2".parse().unwrap();
        let c = EchoCodec {
            id: 42,
            token: 0xbeef,
            target: t,
        };
        let req = c.request(70_001);
        assert_eq!(req[0], V6_ECHO_REQUEST);
        assert_eq!(&req[2..4], &[0, 0], "the kernel fills the ICMPv6 checksum");
        let mut rep = req.to_vec();
        rep[0] = V6_ECHO_REPLY;
        assert_eq!(c.classify_from(&rep, true), IcmpReply::Echo { seq: 70_001 });
        assert_eq!(
            c.classify_from(&rep, false),
            IcmpReply::Echo { seq: 70_001 }
        );
        // Our own request (a raw socket sees it on loopback) and another id: foreign.
        assert_eq!(c.classify_from(&req, true), IcmpReply::Foreign);
        let other = EchoCodec {
            id: 43,
            ..c.clone()
        };
        assert_eq!(other.classify_from(&rep, true), IcmpReply::Foreign);
        assert_eq!(
            other.classify_from(&rep, false),
            IcmpReply::Echo { seq: 70_001 }
        );
        // Destination unreachable quoting the IPv6 header and our request.
        let mut err = vec![V6_DEST_UNREACH, 3, 0, 0, 0, 0, 0, 0];
        let mut ip6 = vec![0x60, 0, 0, 0, 0, PACKET_LEN as u8, IPPROTO_ICMPV6, 64];
        ip6.extend_from_slice(&[0u8; 32]);
        err.extend_from_slice(&ip6);
        err.extend_from_slice(&req);
        assert_eq!(
            c.classify_from(&err, true),
            IcmpReply::Error {
                kind: V6_DEST_UNREACH,
                seq16: 70_001u64 as u16
            }
        );
        // The IPv4 codec does not take ICMPv6 for its own, and junk never panics.
        let v4 = EchoCodec {
            target: Ipv4Addr::new(127, 0, 0, 1).into(),
            ..c.clone()
        };
        assert_eq!(v4.classify_from(&rep, false), IcmpReply::Foreign);
        for n in 0..err.len() {
            let r = c.classify_from(&err[..n], true);
            assert!(n >= 8 || r == IcmpReply::Malformed);
        }
    }
}
