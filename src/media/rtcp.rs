//! RTCP (RFC 3550 §6): the compound report a stream sends (SR or RR, then SDES with a CNAME, and
//! BYE when it ends), and what one from the far end says, read without copying.
//!
//! Times on the wire are NTP timestamps (RFC 3550 §4). The engine maps its monotonic clock to
//! NTP once, with the wall clock the runtime gives it: every NTP value a round trip subtracts
//! (ours in the SR, the far end's echo of it in LSR, ours again at the RR's arrival) comes from
//! that one mapping, so a wall clock stepped mid-run cannot skew a round-trip time.

use std::time::Duration;

pub const SR: u8 = 200;
pub const RR: u8 = 201;
pub const SDES: u8 = 202;
pub const BYE: u8 = 203;

/// Seconds from the NTP era (1900) to the Unix epoch.
const NTP_UNIX: u64 = 2_208_988_800;

/// The 64-bit NTP timestamp of `since_unix`.
pub fn ntp(since_unix: Duration) -> u64 {
    let frac = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    ((since_unix.as_secs() + NTP_UNIX) << 32) | frac
}

/// The middle 32 bits of an NTP timestamp (units of 1/65536 s): what LSR and DLSR are in.
pub fn middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// A duration in LSR/DLSR units (1/65536 s), saturating.
pub fn units(d: Duration) -> u32 {
    u32::try_from(d.as_nanos() * 65_536 / 1_000_000_000).unwrap_or(u32::MAX)
}

/// The round-trip time a report block gives (RFC 3550 §6.4.1: arrival − LSR − DLSR), `arrival`
/// in the middle-32 units of the same mapping that stamped our SR. None when the block echoes
/// no SR of ours (LSR 0) or the result is negative (not an SR of this mapping).
pub fn round_trip(arrival: u32, lsr: u32, dlsr: u32) -> Option<Duration> {
    if lsr == 0 {
        return None;
    }
    let rtt = arrival.wrapping_sub(lsr).wrapping_sub(dlsr);
    // Wrapped past half the range: negative, so not ours.
    (rtt < 1 << 31).then(|| Duration::from_nanos(u64::from(rtt) * 1_000_000_000 / 65_536))
}

/// The sender information of an SR (RFC 3550 §6.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderInfo {
    pub ntp: u64,
    pub rtp_timestamp: u32,
    pub packets: u32,
    pub octets: u32,
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block is about.
    pub ssrc: u32,
    /// Lost since the previous report, as a fraction ×256.
    pub fraction_lost: u8,
    /// Lost since the start (24-bit signed on the wire: duplicates can make it negative).
    pub cumulative_lost: i32,
    pub highest_seq: u32,
    /// Interarrival jitter, in timestamp units.
    pub jitter: u32,
    /// The middle 32 bits of the last SR's NTP timestamp from that source (0: none yet), and
    /// the time since it came (1/65536 s).
    pub lsr: u32,
    pub dlsr: u32,
}

/// What we send for one stream.
#[derive(Clone, Copy, Debug)]
pub struct Report<'a> {
    pub ssrc: u32,
    /// Present (an SR) when the stream sent RTP since its last report.
    pub sender: Option<SenderInfo>,
    /// About the source we receive, once it has sent anything.
    pub block: Option<ReportBlock>,
    pub cname: &'a str,
    /// The stream ends: a BYE closes the compound packet (RFC 3550 §6.6).
    pub bye: bool,
}

impl Report<'_> {
    /// The compound packet, appended to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let count = u8::from(self.block.is_some());
        let (pt, words) = match self.sender {
            Some(_) => (SR, 6 + 6 * usize::from(count)),
            None => (RR, 1 + 6 * usize::from(count)),
        };
        header(out, count, pt, words);
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        if let Some(s) = self.sender {
            out.extend_from_slice(&s.ntp.to_be_bytes());
            out.extend_from_slice(&s.rtp_timestamp.to_be_bytes());
            out.extend_from_slice(&s.packets.to_be_bytes());
            out.extend_from_slice(&s.octets.to_be_bytes());
        }
        if let Some(b) = self.block {
            out.extend_from_slice(&b.ssrc.to_be_bytes());
            let lost = b.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32 & 0xff_ffff;
            out.extend_from_slice(&((u32::from(b.fraction_lost) << 24) | lost).to_be_bytes());
            out.extend_from_slice(&b.highest_seq.to_be_bytes());
            out.extend_from_slice(&b.jitter.to_be_bytes());
            out.extend_from_slice(&b.lsr.to_be_bytes());
            out.extend_from_slice(&b.dlsr.to_be_bytes());
        }
        // SDES: one chunk, our CNAME, then an END item and null octets to a word boundary.
        let cname = &self.cname.as_bytes()[..self.cname.len().min(255)];
        let chunk = 4 + 2 + cname.len() + 1;
        let padded = chunk.div_ceil(4) * 4;
        header(out, 1, SDES, padded / 4);
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.push(1); // CNAME
        out.push(cname.len() as u8);
        out.extend_from_slice(cname);
        out.resize(out.len() + padded - chunk + 1, 0);
        if self.bye {
            header(out, 1, BYE, 1);
            out.extend_from_slice(&self.ssrc.to_be_bytes());
        }
    }
}

/// Version 2, no padding, `count`, `pt`, and the length in words after this one.
fn header(out: &mut Vec<u8>, count: u8, pt: u8, words_after: usize) {
    out.push(0x80 | (count & 0x1f));
    out.push(pt);
    out.extend_from_slice(&(words_after as u16).to_be_bytes());
}

/// Why a datagram taken for RTCP was not a valid compound packet (RFC 3550 A.2's checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than a header, or a packet's length runs past the datagram's end.
    Length,
    /// Not version 2.
    Version,
    /// The first packet is not an SR or RR, or has padding.
    First,
    /// A report's blocks do not fit in its length.
    Blocks,
}

/// One packet of a compound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// An SR (with its sender information) or an RR, and its report blocks.
    Report {
        ssrc: u32,
        sender: Option<SenderInfo>,
        blocks: Blocks<'a>,
    },
    /// The sources that leave.
    Bye(Sources<'a>),
    /// SDES, APP or a type we do not read.
    Other(u8),
}

/// The report blocks of an SR or RR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocks<'a>(&'a [u8]);

impl Iterator for Blocks<'_> {
    type Item = ReportBlock;
    fn next(&mut self) -> Option<ReportBlock> {
        let (b, rest) = self.0.split_first_chunk::<24>()?;
        self.0 = rest;
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        // Sign-extend the 24-bit count.
        let lost = ((word(4) << 8) as i32) >> 8;
        Some(ReportBlock {
            ssrc: word(0),
            fraction_lost: b[4],
            cumulative_lost: lost,
            highest_seq: word(8),
            jitter: word(12),
            lsr: word(16),
            dlsr: word(20),
        })
    }
}

/// The SSRCs of a BYE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sources<'a>(&'a [u8]);

impl Iterator for Sources<'_> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        let (s, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*s))
    }
}

/// The packets of the compound `data`, checked whole before any is read (a datagram that fails
/// a check says nothing at all).
pub fn parse(data: &[u8]) -> Result<Compound<'_>, Malformed> {
    let mut rest = data;
    let mut first = true;
    while !rest.is_empty() {
        let h = rest.get(..4).ok_or(Malformed::Length)?;
        if h[0] >> 6 != 2 {
            return Err(Malformed::Version);
        }
        if first && (h[0] & 0x20 != 0 || !matches!(h[1], SR | RR)) {
            return Err(Malformed::First);
        }
        let len = 4 * (1 + usize::from(u16::from_be_bytes([h[2], h[3]])));
        let p = rest.get(..len).ok_or(Malformed::Length)?;
        let count = usize::from(h[0] & 0x1f);
        let need = match h[1] {
            SR => 28 + 24 * count,
            RR => 8 + 24 * count,
            BYE => 4 + 4 * count,
            _ => 4,
        };
        if need > p.len() {
            return Err(Malformed::Blocks);
        }
        rest = &rest[len..];
        first = false;
    }
    Ok(Compound(data))
}

/// A compound packet that passed [`parse`]'s checks.
#[derive(Clone, Copy, Debug)]
pub struct Compound<'a>(&'a [u8]);

impl<'a> Iterator for Compound<'a> {
    type Item = Packet<'a>;
    fn next(&mut self) -> Option<Packet<'a>> {
        let h = self.0.get(..4)?;
        let len = 4 * (1 + usize::from(u16::from_be_bytes([h[2], h[3]])));
        let (p, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        let count = usize::from(p[0] & 0x1f);
        let word = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        Some(match p[1] {
            SR => Packet::Report {
                ssrc: word(4),
                sender: Some(SenderInfo {
                    ntp: (u64::from(word(8)) << 32) | u64::from(word(12)),
                    rtp_timestamp: word(16),
                    packets: word(20),
                    octets: word(24),
                }),
                blocks: Blocks(&p[28..28 + 24 * count]),
            },
            RR => Packet::Report {
                ssrc: word(4),
                sender: None,
                blocks: Blocks(&p[8..8 + 24 * count]),
            },
            BYE => Packet::Bye(Sources(&p[4..4 + 4 * count])),
            other => Packet::Other(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> ReportBlock {
        ReportBlock {
            ssrc: 0x0102_0304,
            fraction_lost: 64,
            cumulative_lost: -3,
            highest_seq: 0x0001_0005,
            jitter: 17,
            lsr: 0xabcd_ef01,
            dlsr: 65_536,
        }
    }

    #[test]
    fn a_compound_report_reads_back_as_written() {
        let sender = SenderInfo {
            ntp: ntp(Duration::new(1_700_000_000, 500_000_000)),
            rtp_timestamp: 160,
            packets: 50,
            octets: 8000,
        };
        for (sender, block, bye) in [
            (Some(sender), Some(block()), true),
            (None, Some(block()), false),
            (Some(sender), None, false),
            (None, None, true),
        ] {
            let mut b = Vec::new();
            Report {
                ssrc: 7,
                sender,
                block,
                cname: "imsload@127.0.0.1",
                bye,
            }
            .write(&mut b);
            assert_eq!(b.len() % 4, 0);
            let got: Vec<Packet> = parse(&b).unwrap().collect();
            let Packet::Report {
                ssrc,
                sender: s,
                blocks,
            } = got[0]
            else {
                panic!("{got:?}")
            };
            assert_eq!((ssrc, s), (7, sender));
            assert_eq!(
                blocks.collect::<Vec<_>>(),
                block.into_iter().collect::<Vec<_>>()
            );
            assert_eq!(got[1], Packet::Other(SDES));
            match bye {
                true => assert_eq!(
                    got.get(2).map(|p| match p {
                        Packet::Bye(s) => s.collect::<Vec<_>>(),
                        _ => vec![],
                    }),
                    Some(vec![7])
                ),
                false => assert_eq!(got.len(), 2),
            }
        }
    }

    #[test]
    fn the_sdes_chunk_ends_with_at_least_one_null_on_a_word_boundary() {
        // CNAMEs whose chunk is 0, 1, 2 and 3 bytes short of a word boundary.
        for n in 1..=4 {
            let cname = "x".repeat(n);
            let mut b = Vec::new();
            Report {
                ssrc: 1,
                sender: None,
                block: None,
                cname: &cname,
                bye: false,
            }
            .write(&mut b);
            let sdes = &b[8..];
            let words = usize::from(u16::from_be_bytes([sdes[2], sdes[3]]));
            assert_eq!(sdes.len(), 4 * (words + 1), "cname of {n}");
            assert_eq!(&sdes[8..10], &[1, n as u8]);
            assert_eq!(sdes[10 + n], 0, "END after the CNAME");
        }
    }

    #[test]
    fn what_fails_the_checks_is_named() {
        let mut ok = Vec::new();
        Report {
            ssrc: 1,
            sender: None,
            block: Some(block()),
            cname: "c",
            bye: true,
        }
        .write(&mut ok);
        assert!(parse(&ok).is_ok());
        assert_eq!(parse(&ok[..ok.len() - 2]).err(), Some(Malformed::Length));
        assert_eq!(parse(&ok[..3]).err(), Some(Malformed::Length));
        let mut v = ok.clone();
        v[0] &= 0x3f;
        assert_eq!(parse(&v).err(), Some(Malformed::Version));
        // An SDES first, and an RR with padding.
        assert_eq!(parse(&ok[32..]).err(), Some(Malformed::First));
        let mut p = ok.clone();
        p[0] |= 0x20;
        assert_eq!(parse(&p).err(), Some(Malformed::First));
        // An RR that claims two blocks in the room of one.
        let mut c = ok.clone();
        c[0] = 0x82;
        assert_eq!(parse(&c).err(), Some(Malformed::Blocks));
    }

    #[test]
    fn a_round_trip_is_arrival_less_lsr_less_dlsr_and_none_without_an_sr() {
        let sent = middle(ntp(Duration::new(1000, 0)));
        let arrival = middle(ntp(Duration::new(1000, 300_000_000)));
        let held = units(Duration::from_millis(100));
        let rtt = round_trip(arrival, sent, held).unwrap();
        assert!(
            rtt.abs_diff(Duration::from_millis(200)) < Duration::from_micros(50),
            "{rtt:?}"
        );
        assert_eq!(round_trip(arrival, 0, held), None);
        // A DLSR longer than the time since our SR: not a round trip of ours.
        assert_eq!(
            round_trip(arrival, sent, units(Duration::from_secs(1))),
            None
        );
    }

    #[test]
    fn ntp_counts_from_1900_in_fractions_of_two_to_the_32() {
        assert_eq!(ntp(Duration::ZERO) >> 32, NTP_UNIX);
        assert_eq!(ntp(Duration::from_millis(500)) & 0xffff_ffff, 1 << 31);
    }
}
