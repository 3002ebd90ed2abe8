//! RTP fixed headers (RFC 3550 §5.1): what the media engine writes and reads. No CSRCs or
//! extensions are written; on reading they are skipped, so a peer that adds them is understood.

/// Length of the fixed header we write.
pub const HEADER: usize = 12;

/// The fields of an RTP header the engine uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub marker: bool,
    pub pt: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

impl Header {
    /// Writes the header into `out` (appended).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(0x80); // version 2, no padding, no extension, no CSRC
        out.push((u8::from(self.marker) << 7) | (self.pt & 0x7f));
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
    }

    /// The header of `data` and the offset of its payload, or why it is not RTP. RTCP (payload
    /// types 72–76 with the marker bit, RFC 5761 §4) is refused as such.
    pub fn parse(data: &[u8]) -> Result<(Header, usize), NotRtp> {
        // RTCP first: an RR with no blocks is 8 bytes, shorter than an RTP header.
        if data.len() >= 2 && data[0] >> 6 == 2 && (200..=204).contains(&data[1]) {
            return Err(NotRtp::Rtcp);
        }
        if data.len() < HEADER {
            return Err(NotRtp::Short);
        }
        if data[0] >> 6 != 2 {
            return Err(NotRtp::Version);
        }
        let csrcs = usize::from(data[0] & 0x0f);
        let mut off = HEADER + 4 * csrcs;
        if data[0] & 0x10 != 0 {
            let ext = data.get(off + 2..off + 4).ok_or(NotRtp::Short)?;
            off += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
        }
        let mut end = data.len();
        if data[0] & 0x20 != 0 {
            let pad = usize::from(*data.last().unwrap_or(&0));
            end = end.checked_sub(pad).ok_or(NotRtp::Short)?;
        }
        if off > end {
            return Err(NotRtp::Short);
        }
        let h = Header {
            marker: data[1] & 0x80 != 0,
            pt: data[1] & 0x7f,
            seq: u16::from_be_bytes([data[2], data[3]]),
            timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
            ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
        };
        Ok((h, off))
    }
}

/// Why a datagram on the media socket was not taken as RTP (counted by kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotRtp {
    Short,
    Version,
    Rtcp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_back_as_written() {
        let h = Header {
            marker: true,
            pt: 8,
            seq: 65535,
            timestamp: 0xdead_beef,
            ssrc: 0x1234_5678,
        };
        let mut b = Vec::new();
        h.write(&mut b);
        b.extend_from_slice(&[0xd5; 160]);
        assert_eq!(Header::parse(&b), Ok((h, HEADER)));
    }

    #[test]
    fn csrcs_extensions_and_padding_are_skipped_and_garbage_is_named() {
        // V=2, P=1, X=1, CC=1; one CSRC; a 1-word extension; 2 bytes of padding.
        let mut b = vec![0xb1, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 9, 9, 9, 9];
        b.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]);
        b.extend_from_slice(&[7, 7, 0, 2]);
        let (h, off) = Header::parse(&b).unwrap();
        assert_eq!((h.seq, h.ssrc, off), (1, 3, 24));
        assert_eq!(Header::parse(&b[..5]), Err(NotRtp::Short));
        assert_eq!(Header::parse(&[0u8; 12]), Err(NotRtp::Version));
        assert_eq!(
            Header::parse(&[0x80, 200, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(NotRtp::Rtcp)
        );
        // Padding longer than the packet, and an extension past its end.
        let mut p = vec![0xa0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.push(200);
        assert_eq!(Header::parse(&p), Err(NotRtp::Short));
        assert_eq!(
            Header::parse(&[0x90, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0]),
            Err(NotRtp::Short)
        );
    }
}
