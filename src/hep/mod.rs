//! HEPv3 (Homer Encapsulation Protocol, version 3): every SIP message we send or receive,
//! mirrored to a Homer collector (heplify-server, Homer 7, Kamailio's sipcapture) so that our
//! side of a run shows beside the core's own HEP.
//!
//! This file is the encoder, pure (no sockets, no clocks): a message, its addresses and its
//! wall-clock time in, one HEP datagram out. [`mirror`] is the runtime around it: the bounded
//! queue the I/O paths copy into without ever waiting, and the thread that encodes and sends.
//!
//! Hand-written rather than a crate: the one HEP crate on crates.io (`hep` 0.1.2, 2021) only
//! parses, and the format is a header plus a dozen type-length-value chunks.
//!
//! A datagram is `"HEP3"`, its total length (u16, network order), then chunks, each
//! `vendor (u16) · type (u16) · length (u16, the chunk's own 6 bytes included) · value`. We send
//! the generic chunks (vendor 0):
//!
//! | type   | value                                   |
//! |--------|-----------------------------------------|
//! | 0x0001 | IP family: u8, 2 = IPv4, 10 = IPv6      |
//! | 0x0002 | IP protocol: u8, 17 = UDP, 6 = TCP      |
//! | 0x0003/0x0004 | IPv4 source / destination (4 bytes)   |
//! | 0x0005/0x0006 | IPv6 source / destination (16 bytes)  |
//! | 0x0007/0x0008 | source / destination port (u16)       |
//! | 0x0009 | timestamp, seconds since 1970 (u32)     |
//! | 0x000a | timestamp, microseconds offset (u32)    |
//! | 0x000b | protocol type: u8, 1 = SIP              |
//! | 0x000c | capture agent ID (u32)                  |
//! | 0x0013 | node name (string; heplify-server's `NodeName`) |
//! | 0x0011 | correlation ID (string): the Call-ID    |
//! | 0x000f | payload: the SIP message as sent/read   |

pub mod mirror;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The transport a message travelled over (HEP's IP protocol chunk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    fn number(self) -> u8 {
        match self {
            Proto::Udp => 17,
            Proto::Tcp => 6,
        }
    }
}

/// HEP protocol type of a SIP payload.
pub const PROTO_TYPE_SIP: u8 = 1;

/// What one HEP datagram says.
#[derive(Clone, Debug)]
pub struct Packet<'a> {
    pub proto: Proto,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Wall-clock time since the Unix epoch.
    pub time: Duration,
    pub capture_id: u32,
    /// Empty: no node name chunk.
    pub node: &'a str,
    /// Empty: no correlation chunk.
    pub correlation: &'a [u8],
    pub payload: &'a [u8],
}

/// The message does not fit in one HEP datagram (its length field is 16 bits).
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge(pub usize);

const HEADER: usize = 6;
const CHUNK: usize = 6;

/// Appends the HEPv3 datagram of `p` to `out` (which is not cleared: the caller reuses it).
pub fn encode(p: &Packet<'_>, out: &mut Vec<u8>) -> Result<(), TooLarge> {
    // Homer keys a flow by one family: a v4/v6 mix (which a socket never produces) is sent as
    // v6 with the v4 side mapped.
    let (src_ip, dst_ip) = match (p.src.ip(), p.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
        (s, d) => (IpAddr::V6(v6(s)), IpAddr::V6(v6(d))),
    };
    let addr_len = if src_ip.is_ipv4() { 4 } else { 16 };
    let total = HEADER
        + 2 * (CHUNK + 1) // family, protocol
        + 2 * (CHUNK + addr_len)
        + 2 * (CHUNK + 2) // ports
        + 2 * (CHUNK + 4) // seconds, microseconds
        + (CHUNK + 1) // protocol type
        + (CHUNK + 4) // capture ID
        + opt_len(p.node.len())
        + opt_len(p.correlation.len())
        + CHUNK
        + p.payload.len();
    // A chunk's length is 16 bits too, and the payload chunk is the largest part.
    if total > u16::MAX as usize {
        return Err(TooLarge(total));
    }
    let start = out.len();
    out.reserve(total);
    out.extend_from_slice(b"HEP3");
    out.extend_from_slice(&(total as u16).to_be_bytes());
    let family = if src_ip.is_ipv4() { 2 } else { 10 };
    chunk(out, 0x0001, &[family]);
    chunk(out, 0x0002, &[p.proto.number()]);
    match (src_ip, dst_ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            chunk(out, 0x0003, &s.octets());
            chunk(out, 0x0004, &d.octets());
        }
        (s, d) => {
            chunk(out, 0x0005, &v6(s).octets());
            chunk(out, 0x0006, &v6(d).octets());
        }
    }
    chunk(out, 0x0007, &p.src.port().to_be_bytes());
    chunk(out, 0x0008, &p.dst.port().to_be_bytes());
    // u32 seconds run out in 2106; until then the cast is exact.
    chunk(out, 0x0009, &(p.time.as_secs() as u32).to_be_bytes());
    chunk(out, 0x000a, &p.time.subsec_micros().to_be_bytes());
    chunk(out, 0x000b, &[PROTO_TYPE_SIP]);
    chunk(out, 0x000c, &p.capture_id.to_be_bytes());
    if !p.node.is_empty() {
        chunk(out, 0x0013, p.node.as_bytes());
    }
    if !p.correlation.is_empty() {
        chunk(out, 0x0011, p.correlation);
    }
    chunk(out, 0x000f, p.payload);
    debug_assert_eq!(out.len() - start, total);
    Ok(())
}

fn opt_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        CHUNK + n
    }
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

fn chunk(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&((CHUNK + value.len()) as u16).to_be_bytes());
    out.extend_from_slice(value);
}

/// The Call-ID of a SIP message (long form or compact `i`), trimmed; `None` when the headers
/// hold none. Only the header section is read; a message cut short is fine.
pub fn call_id(msg: &[u8]) -> Option<&[u8]> {
    call_id_as_written(msg).or_else(|| call_id_any_form(msg))
}

/// The header as every SIP stack we meet writes it (`\nCall-ID:`), found with one SIMD search
/// of the message. Once per copy on the sender thread: a memchr per line was 3 % of a --hep
/// run's samples (perf, 2,000 calls/s), this is a tenth of that. `None` sends the message to
/// [`call_id_any_form`].
fn call_id_as_written(msg: &[u8]) -> Option<&[u8]> {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    static NAME: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\nCall-ID"));
    let at = NAME.find(msg)?;
    // In the header section: no empty line before it (else it is the body's).
    let head = &msg[..=at];
    if memchr::memmem::find(head, b"\n\r\n").is_some()
        || memchr::memmem::find(head, b"\n\n").is_some()
    {
        return None;
    }
    let rest = &msg[at + b"\nCall-ID".len()..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    let rest = rest.strip_prefix(b":")?;
    let v = rest[..memchr::memchr(b'\n', rest).unwrap_or(rest.len())].trim_ascii();
    (!v.is_empty()).then_some(v)
}

/// Every spelling the grammar allows: any case, the compact `i`, space before the colon.
fn call_id_any_form(msg: &[u8]) -> Option<&[u8]> {
    let mut rest = &msg[memchr::memchr(b'\n', msg)? + 1..];
    loop {
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let line = &rest[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        if matches!(line[0], b'C' | b'c' | b'I' | b'i') {
            if let Some(colon) = memchr::memchr(b':', line) {
                let name = line[..colon].trim_ascii();
                if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
                    let v = line[colon + 1..].trim_ascii();
                    return (!v.is_empty()).then_some(v);
                }
            }
        }
        if end == rest.len() {
            return None;
        }
        rest = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet<'a>(src: &str, dst: &str, payload: &'a [u8]) -> Packet<'a> {
        Packet {
            proto: Proto::Udp,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            time: Duration::new(1_700_000_000, 123_456_789),
            capture_id: 2001,
            node: "n1",
            correlation: b"abc",
            payload,
        }
    }

    /// Written out by hand from the chunk table above, not produced by the encoder.
    #[test]
    fn ipv4_udp_matches_the_hand_checked_bytes() {
        let mut out = vec![0xee]; // what was there before stays
        encode(
            &packet("10.0.0.1:5060", "10.0.0.2:5080", b"OPTIONS"),
            &mut out,
        )
        .unwrap();
        #[rustfmt::skip]
        let want: &[u8] = &[
            0xee,
            b'H', b'E', b'P', b'3', 0x00, 123,        // 6 + 117 bytes of chunks
            0, 0, 0x00, 0x01, 0, 7, 2,                // IPv4
            0, 0, 0x00, 0x02, 0, 7, 17,               // UDP
            0, 0, 0x00, 0x03, 0, 10, 10, 0, 0, 1,     // src 10.0.0.1
            0, 0, 0x00, 0x04, 0, 10, 10, 0, 0, 2,     // dst 10.0.0.2
            0, 0, 0x00, 0x07, 0, 8, 0x13, 0xc4,       // 5060
            0, 0, 0x00, 0x08, 0, 8, 0x13, 0xd8,       // 5080
            0, 0, 0x00, 0x09, 0, 10, 0x65, 0x53, 0xf1, 0x00, // 1700000000 s
            0, 0, 0x00, 0x0a, 0, 10, 0x00, 0x01, 0xe2, 0x40, // 123456 µs (ns cut, not rounded)
            0, 0, 0x00, 0x0b, 0, 7, 1,                // SIP
            0, 0, 0x00, 0x0c, 0, 10, 0, 0, 0x07, 0xd1, // capture ID 2001
            0, 0, 0x00, 0x13, 0, 8, b'n', b'1',       // node name
            0, 0, 0x00, 0x11, 0, 9, b'a', b'b', b'c', // correlation ID
            0, 0, 0x00, 0x0f, 0, 13, b'O', b'P', b'T', b'I', b'O', b'N', b'S',
        ];
        assert_eq!(out, want);
    }

    #[test]
    fn ipv6_uses_the_v6_address_chunks_and_a_mixed_pair_is_mapped() {
        let mut out = Vec::new();
        encode(&packet("[::1]:5060", "[2001:db8::2]:5061", b"x"), &mut out).unwrap();
        assert_eq!(&out[6..13], &[0, 0, 0, 1, 0, 7, 10]);
        assert_eq!(&out[20..26], &[0, 0, 0, 5, 0, 22]);
        assert_eq!(out[26 + 15], 1, "::1");
        assert_eq!(&out[42..48], &[0, 0, 0, 6, 0, 22]);
        assert_eq!(&out[48..52], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(u16::from_be_bytes([out[4], out[5]]) as usize, out.len());
        let mut mixed = Vec::new();
        encode(&packet("10.0.0.1:1", "[::1]:2", b"x"), &mut mixed).unwrap();
        assert_eq!(mixed[12], 10, "sent as IPv6");
        assert_eq!(
            &mixed[26..42],
            &"::ffff:10.0.0.1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
    }

    #[test]
    fn optional_chunks_are_left_out_and_tcp_is_6() {
        let mut p = packet("10.0.0.1:5060", "10.0.0.2:5080", b"OPTIONS");
        p.node = "";
        p.correlation = b"";
        p.proto = Proto::Tcp;
        let mut out = Vec::new();
        encode(&p, &mut out).unwrap();
        assert_eq!(out.len(), 123 - 8 - 9);
        assert_eq!(out[19], 6);
        assert_eq!(&out[out.len() - 13..out.len() - 7], &[0, 0, 0, 0x0f, 0, 13]);
    }

    #[test]
    fn a_message_over_the_16_bit_length_is_refused_and_nothing_written() {
        let big = vec![b'x'; 65_535];
        let mut out = Vec::new();
        assert!(encode(&packet("10.0.0.1:1", "10.0.0.2:2", &big), &mut out).is_err());
        assert!(out.is_empty());
        let fits = vec![b'x'; 65_535 - 123 + 7];
        encode(&packet("10.0.0.1:1", "10.0.0.2:2", &fits), &mut out).unwrap();
        assert_eq!(out.len(), 65_535);
    }

    #[test]
    fn call_id_long_and_compact_forms_and_not_in_the_body() {
        let m = b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nCALL-ID :  abc@h \r\nCSeq: 1 INVITE\r\n\r\n";
        assert_eq!(call_id(m), Some(&b"abc@h"[..]));
        assert_eq!(call_id(b"SIP/2.0 200 OK\ni: k1\n\n"), Some(&b"k1"[..]));
        assert_eq!(
            call_id(b"SIP/2.0 200 OK\r\nTo: x\r\n\r\nCall-ID: body"),
            None
        );
        assert_eq!(call_id(b"garbage"), None);
        assert_eq!(call_id(b""), None);
    }

    /// The quick search gives what the line scanner gives, or hands the message over.
    #[test]
    fn call_id_as_written_agrees_with_every_form() {
        let cases: [&[u8]; 8] = [
            b"BYE sip:a SIP/2.0\r\nVia: x\r\nCall-ID: k@h\r\nCSeq: 2 BYE\r\n\r\n",
            b"BYE sip:a SIP/2.0\r\nCall-ID:k2\r\n\r\nbody",
            b"BYE sip:a SIP/2.0\r\nCall-ID \t: k3 \r\n\r\n",
            b"BYE sip:a SIP/2.0\r\ni: k4\r\n\r\nCall-ID: body",
            b"BYE sip:a SIP/2.0\nTo: x\n\nCall-ID: body",
            b"BYE sip:a SIP/2.0\r\nCall-IDs: no\r\ncall-id: k5\r\n\r\n",
            b"BYE sip:a SIP/2.0\r\nCall-ID:   \r\n\r\n",
            b"BYE sip:a SIP/2.0\r\nCall-ID: cut",
        ];
        let want: [Option<&[u8]>; 8] = [
            Some(b"k@h"),
            Some(b"k2"),
            Some(b"k3"),
            Some(b"k4"),
            None,
            Some(b"k5"),
            None,
            Some(b"cut"),
        ];
        for (m, w) in cases.iter().zip(want) {
            let text = String::from_utf8_lossy(m);
            assert_eq!(call_id(m), w, "{text:?}");
            assert_eq!(call_id_any_form(m), w, "{text:?}");
            if let Some(quick) = call_id_as_written(m) {
                assert_eq!(Some(quick), w, "{text:?}");
            }
        }
    }
}
