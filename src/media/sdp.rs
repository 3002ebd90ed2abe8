//! The part of a peer's SDP (RFC 4566, offer/answer RFC 3264) that media needs: where to send,
//! which payload type, at what packet time, and in which direction.

use super::g711::Codec;
use crate::sip::sdp::Sdp;
use std::net::SocketAddr;

pub use crate::sip::sdp::Direction;

/// A peer's audio stream as its SDP describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteMedia {
    pub addr: SocketAddr,
    pub codec: Codec,
    /// `a=ptime`, milliseconds (20 when absent, RFC 3551's default for G.711).
    pub ptime_ms: u16,
    pub direction: Direction,
    /// Where its RTCP goes: `a=rtcp` (RFC 3605) or the RTP port + 1 (RFC 3550 §11). We do not
    /// offer `a=rtcp-mux`, so a peer's is not taken up (RFC 5761 §5.1.1).
    pub rtcp: SocketAddr,
}

/// Why a peer's SDP gives no stream we can play.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdpError {
    NoAudio,
    NoAddress,
    NoCommonCodec,
    /// Port 0: the stream was refused (RFC 3264 §6).
    Rejected,
}

/// The first audio stream of `body`, with the first of its payload types we can play (ours,
/// `prefer`, when it is among them).
pub fn remote_audio(body: &[u8], prefer: Codec) -> Result<RemoteMedia, SdpError> {
    let sdp = Sdp::parse(body).ok_or(SdpError::NoAudio)?;
    let a = sdp.audio().ok_or(SdpError::NoAudio)?;
    let port = match a.port {
        Some(0) => return Err(SdpError::Rejected),
        Some(p) => p,
        None => return Err(SdpError::NoAudio),
    };
    let mut ours = a
        .formats
        .split_ascii_whitespace()
        .filter_map(|p| Codec::from_payload_type(p.parse().ok()?));
    let first = ours.next().ok_or(SdpError::NoCommonCodec)?;
    let codec = match first == prefer || ours.any(|c| c == prefer) {
        true => prefer,
        false => first,
    };
    let ip = sdp.addr_of(a).ok_or(SdpError::NoAddress)?;
    let rtcp = match a.rtcp {
        Some((p, addr)) => SocketAddr::new(addr.unwrap_or(ip), p),
        None => SocketAddr::new(ip, port.wrapping_add(1)),
    };
    Ok(RemoteMedia {
        addr: SocketAddr::new(ip, port),
        codec,
        ptime_ms: a.ptime.filter(|p| (10..=200).contains(p)).unwrap_or(20),
        direction: sdp.direction_of(a),
        rtcp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sipp_and_rtpengine_style_answers() {
        // SIPp's uas answer (session-level c=, one payload type).
        let sipp =
            b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
        assert_eq!(
            remote_audio(sipp, Codec::Pcma),
            Ok(RemoteMedia {
                addr: "127.0.0.1:6000".parse().unwrap(),
                codec: Codec::Pcmu,
                ptime_ms: 20,
                direction: Direction::SendRecv,
                rtcp: "127.0.0.1:6001".parse().unwrap(),
            })
        );
        // Media-level c= wins, ptime and direction of the audio stream, video ignored.
        let b = b"v=0\r\nc=IN IP4 10.0.0.1\r\na=sendrecv\r\nm=audio 30000 RTP/AVP 8 0 101\r\nc=IN IP4 127.0.0.9\r\n\
a=ptime:30\r\na=sendonly\r\nm=video 0 RTP/AVP 96\r\na=recvonly\r\n";
        let m = remote_audio(b, Codec::Pcmu).unwrap();
        assert_eq!(m.addr, "127.0.0.9:30000".parse().unwrap());
        assert_eq!(
            (m.codec, m.ptime_ms, m.direction),
            (Codec::Pcmu, 30, Direction::SendOnly)
        );
        assert!(!m.direction.we_send() || m.direction.we_receive());
        assert_eq!(m.rtcp, "127.0.0.9:30001".parse().unwrap());
        // rtpengine names its RTCP port (RFC 3605), with or without an address.
        let r = b"v=0\r\nc=IN IP4 127.0.0.5\r\nm=audio 30000 RTP/AVP 0\r\na=rtcp:30011\r\n";
        let m = remote_audio(r, Codec::Pcmu).unwrap();
        assert_eq!(m.rtcp, "127.0.0.5:30011".parse().unwrap());
        let r = b"v=0\r\nc=IN IP4 127.0.0.5\r\nm=audio 30000 RTP/AVP 0\r\na=rtcp:40001 IN IP4 127.0.0.6\r\n";
        let m = remote_audio(r, Codec::Pcmu).unwrap();
        assert_eq!(m.rtcp, "127.0.0.6:40001".parse().unwrap());
    }

    #[test]
    fn unusable_sdp_is_named() {
        assert_eq!(
            remote_audio(
                b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 0 RTP/AVP 0\r\n",
                Codec::Pcmu
            ),
            Err(SdpError::Rejected)
        );
        assert_eq!(
            remote_audio(
                b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 18\r\n",
                Codec::Pcmu
            ),
            Err(SdpError::NoCommonCodec)
        );
        assert_eq!(
            remote_audio(b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n", Codec::Pcmu),
            Err(SdpError::NoAddress)
        );
        assert_eq!(
            remote_audio(b"v=0\r\n", Codec::Pcmu),
            Err(SdpError::NoAudio)
        );
        assert_eq!(
            remote_audio(b"\xff\xfe", Codec::Pcmu),
            Err(SdpError::NoAudio)
        );
    }
}
