//! What one received RTP stream tells: RFC 3550's loss and interarrival jitter (Appendix A.1,
//! A.3, A.8), duplicates and reordering, the longest silence on the wire, and an E-model
//! (ITU-T G.107) estimate of what a listener would say of it.

use std::time::{Duration, Instant};

/// Sequence numbers remembered to tell a duplicate from a late packet.
const WINDOW: u64 = 128;

/// Receiver state of one stream. Times are the packets' arrival (kernel receive stamps).
#[derive(Clone, Debug)]
pub struct Receiver {
    clock_rate: u32,
    /// Extended (32-bit and up) sequence numbers: the first and the highest seen.
    base: u64,
    max: u64,
    started: bool,
    /// Bit i set: `max - i` was received (i < WINDOW).
    seen: u128,
    pub received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// RFC 3550 A.8, in timestamp units ×16 (the reference code's fixed point).
    jitter16: u64,
    last_transit: Option<i64>,
    last_arrival: Option<Instant>,
    /// The longest time between two packets' arrivals, and when it began.
    pub longest_gap: Duration,
    pub longest_gap_at: Option<Instant>,
    /// Highest jitter seen (ms), for the per-second view of a stream that recovers.
    pub max_jitter_ms: f64,
}

impl Receiver {
    pub fn new(clock_rate: u32) -> Receiver {
        Receiver {
            clock_rate,
            base: 0,
            max: 0,
            started: false,
            seen: 0,
            received: 0,
            duplicates: 0,
            out_of_order: 0,
            jitter16: 0,
            last_transit: None,
            last_arrival: None,
            longest_gap: Duration::ZERO,
            longest_gap_at: None,
            max_jitter_ms: 0.0,
        }
    }

    /// One packet, `epoch` the stream's time origin (any fixed instant: transit times are only
    /// ever subtracted from each other).
    pub fn packet(&mut self, seq: u16, timestamp: u32, at: Instant, epoch: Instant) {
        if let Some(last) = self.last_arrival {
            let gap = at.saturating_duration_since(last);
            if gap > self.longest_gap {
                self.longest_gap = gap;
                self.longest_gap_at = Some(last);
            }
        }
        self.last_arrival = Some(self.last_arrival.map_or(at, |l| l.max(at)));
        if !self.started {
            self.started = true;
            self.base = u64::from(seq);
            self.max = self.base;
            self.seen = 1;
            self.received = 1;
            self.transit(timestamp, at, epoch);
            return;
        }
        // Extend to the candidate nearest the highest seen (A.1's cycle count, without its
        // probation: a stream here is known from signalling, not guessed from traffic).
        let cycle = self.max & !0xffff;
        let ext = [cycle.wrapping_sub(0x10000), cycle, cycle + 0x10000]
            .into_iter()
            .map(|c| c | u64::from(seq))
            .filter(|&e| e >= self.base)
            .min_by_key(|&e| e.abs_diff(self.max))
            .unwrap_or(self.max + 1);
        if ext > self.max {
            let ahead = ext - self.max;
            self.seen = if ahead >= WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.max = ext;
        } else {
            let back = self.max - ext;
            if back < WINDOW && self.seen & (1 << back) != 0 {
                self.duplicates += 1;
                return;
            }
            if back < WINDOW {
                self.seen |= 1 << back;
            }
            self.out_of_order += 1;
        }
        self.received += 1;
        self.transit(timestamp, at, epoch);
    }

    fn transit(&mut self, timestamp: u32, at: Instant, epoch: Instant) {
        let arrival = at.saturating_duration_since(epoch).as_nanos() as i64
            * i64::from(self.clock_rate)
            / 1_000_000_000;
        // Wrapping: only differences of transit times are used.
        let transit = arrival.wrapping_sub(i64::from(timestamp));
        if let Some(last) = self.last_transit {
            let d = transit.wrapping_sub(last).unsigned_abs();
            // J += (|D| - J) / 16, in ×16 fixed point (RFC 3550 A.8).
            self.jitter16 = self.jitter16 + d - ((self.jitter16 + 8) >> 4);
            self.max_jitter_ms = self.max_jitter_ms.max(self.jitter_ms());
        }
        self.last_transit = Some(transit);
    }

    /// The far end may send again from `at` (a resumed call): the silence before it was no
    /// gap, and its RTP clock may have jumped, so the jitter's transit baseline starts over.
    pub fn resume(&mut self, at: Instant) {
        self.last_arrival = Some(self.last_arrival.map_or(at, |l| l.max(at)));
        self.last_transit = None;
    }

    /// When the latest packet arrived.
    pub fn last_arrival(&self) -> Option<Instant> {
        self.last_arrival
    }

    /// Packets the sender sent as far as we can tell (first to highest sequence number).
    pub fn expected(&self) -> u64 {
        if self.started {
            self.max - self.base + 1
        } else {
            0
        }
    }

    /// Expected but never received (late ones that came count as received).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    /// The extended highest sequence number received, as an RTCP report block carries it
    /// (cycles in the high 16 bits, counted from the stream's first packet).
    pub fn highest_seq(&self) -> u32 {
        self.max as u32
    }

    /// RFC 3550 interarrival jitter, in timestamp units (an RTCP report block's).
    pub fn jitter_units(&self) -> u32 {
        u32::try_from(self.jitter16 >> 4).unwrap_or(u32::MAX)
    }

    /// RFC 3550 interarrival jitter, in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        (self.jitter16 >> 4) as f64 * 1000.0 / f64::from(self.clock_rate)
    }
}

/// The E-model's rating of a G.711 stream (ITU-T G.107 with its default values, G.113
/// Appendix I's Ie = 0 and Bpl = 25.1 for G.711 with packet loss concealment, random loss),
/// from the loss we measured and a mouth-to-ear delay of `delay` (we cannot measure one-way
/// delay; see docs/media.md for the estimate used). Returns (R, MOS).
pub fn e_model(loss_ratio: f64, delay: Duration) -> (f64, f64) {
    let ta = delay.as_secs_f64() * 1000.0;
    let id = 0.024 * ta + if ta > 177.3 { 0.11 * (ta - 177.3) } else { 0.0 };
    let ppl = (loss_ratio * 100.0).clamp(0.0, 100.0);
    let (ie, bpl, burst_r) = (0.0, 25.1, 1.0);
    let ie_eff = ie + (95.0 - ie) * ppl / (ppl / burst_r + bpl);
    let r = 93.2 - id - ie_eff;
    (r, mos(r))
}

/// G.107 Annex B: MOS (conversational quality, estimated) from R.
pub fn mos(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6).max(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `seqs` 20 ms apart (160 timestamp units each), the i-th arriving at i·20 ms +
    /// `late(i)`.
    fn feed(seqs: &[u16], late: impl Fn(usize) -> u64) -> Receiver {
        let t0 = Instant::now();
        let mut r = Receiver::new(8000);
        for (i, &s) in seqs.iter().enumerate() {
            let ts = u32::from(s.wrapping_sub(seqs[0])) * 160;
            r.packet(
                s,
                ts,
                t0 + Duration::from_millis(20 * i as u64 + late(i)),
                t0,
            );
        }
        r
    }

    #[test]
    fn a_clean_stream_has_no_loss_no_jitter_and_a_gap_of_one_ptime() {
        let seqs: Vec<u16> = (65500..=65535).chain(0..100).collect();
        let r = feed(&seqs, |_| 0);
        assert_eq!((r.expected(), r.received, r.lost()), (136, 136, 0));
        assert_eq!((r.duplicates, r.out_of_order), (0, 0));
        assert_eq!(r.jitter_ms(), 0.0);
        assert_eq!(r.longest_gap, Duration::from_millis(20));
    }

    #[test]
    fn loss_duplicates_and_reordering_are_told_apart() {
        // 5 lost (10..15), 3 twice, 21 before 20.
        let mut seqs: Vec<u16> = (0..10).collect();
        seqs.push(3);
        seqs.extend([15, 16, 17, 18, 19, 21, 20, 22]);
        let r = feed(&seqs, |_| 0);
        assert_eq!(r.expected(), 23);
        assert_eq!(r.received, 18);
        assert_eq!(r.lost(), 5);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.out_of_order, 1);
    }

    #[test]
    fn a_pause_is_the_longest_gap_and_jitter_follows_rfc3550() {
        // Packets 0..50 on time; 50..75 held 500 ms then delivered in a burst, as a stopped
        // relay would.
        let r = feed(&(0..100).collect::<Vec<u16>>(), |i| {
            if (50..75).contains(&i) {
                500 - 20 * (i as u64 - 50)
            } else {
                0
            }
        });
        assert_eq!(r.lost(), 0);
        assert_eq!(r.longest_gap, Duration::from_millis(520));
        // One 500 ms transit step: J jumps by 500/16 ms, then decays; far above 0.
        assert!(
            r.max_jitter_ms > 25.0 && r.max_jitter_ms < 35.0,
            "{}",
            r.max_jitter_ms
        );
        // Every other packet 10 ms late: |D| = 10 ms each time, J converges towards 10 ms.
        let r = feed(&(0..400).collect::<Vec<u16>>(), |i| {
            if i % 2 == 1 {
                10
            } else {
                0
            }
        });
        assert!((r.jitter_ms() - 10.0).abs() < 0.5, "{}", r.jitter_ms());
    }

    #[test]
    fn e_model_values() {
        // No loss, short delay: G.711's best, R ~ 93, MOS ~ 4.4.
        let (r, m) = e_model(0.0, Duration::from_millis(40));
        assert!((r - 92.24).abs() < 0.01, "{r}");
        assert!((m - 4.39).abs() < 0.01, "{m}");
        // 5 % random loss: Ie,eff = 95·5/(5+25.1) = 15.78.
        let (r, _) = e_model(0.05, Duration::ZERO);
        assert!((r - (93.2 - 15.78)).abs() < 0.01, "{r}");
        assert_eq!(mos(-3.0), 1.0);
        assert_eq!(mos(120.0), 4.5);
    }
}
