//! The record store of one layer of one target: the pacer appends a record per probe (before the
//! datagram leaves, so a fast reply always finds it), receivers complete records by sequence
//! number in O(1). Records live in fixed-size chunks, so growth never copies the store (no
//! latency spike in the pacer after hours of probing).

use super::{Arrival, Layer, Outcome, ProbeRecord};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

const CHUNK_BITS: u32 = 16;
const CHUNK: usize = 1 << CHUNK_BITS;

/// What completing a record did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// First final reply for this probe.
    Fresh,
    /// The probe already had its final reply: a duplicate (counted).
    Duplicate,
    /// No such probe was sent (counted as foreign).
    Unknown,
}

/// Things that are counted, not recorded per probe.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Counters {
    pub duplicates: u64,
    pub provisional: u64,
    /// Malformed datagrams by kind.
    pub malformed: BTreeMap<&'static str, u64>,
    /// Well-formed but not ours (other runs, other processes, requests), by kind.
    pub foreign: BTreeMap<&'static str, u64>,
    /// Receive errors by kind (e.g. ECONNREFUSED after an ICMP port unreachable).
    pub receive_errors: BTreeMap<String, u64>,
    /// Receive timestamps that fell back to the userspace clock.
    pub timestamp_fallbacks: u64,
    /// Receive timestamps taken from the kernel (SO_TIMESTAMPNS).
    pub kernel_timestamps: u64,
    /// Kernel stamps refused because the realtime clock stepped between a datagram's arrival
    /// and its read (also counted in `timestamp_fallbacks`).
    pub clock_steps: u64,
    /// Diameter: Capabilities-Exchange-Answers by Result-Code (one per connection).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub capabilities_answers: BTreeMap<u32, u64>,
    /// Diameter: requests the peer sent us (its own DWR, a DPR), each answered.
    pub peer_requests: u64,
    /// Replies whose receive time came out before their probe's send time. Impossible unless a
    /// clock misbehaved; such a reply keeps its receive time for gap analysis but has no RTT.
    pub negative_rtts: u64,
}

struct Inner {
    chunks: Vec<Vec<ProbeRecord>>,
    len: u64,
    counters: Counters,
}

pub struct LayerTable {
    pub layer: Layer,
    inner: Mutex<Inner>,
    /// Arrival of the newest good reply (ns since the time base), `i64::MIN` before the first.
    pub last_good_ns: AtomicI64,
    /// Probes sent so far.
    pub sent: AtomicU64,
    /// Send time of the first probe, `i64::MIN` before it.
    pub first_sent_ns: AtomicI64,
    /// Receive timestamps from the kernel / userspace fallbacks (atomics: counted per packet).
    pub kernel_timestamps: AtomicU64,
    pub timestamp_fallbacks: AtomicU64,
    pub clock_steps: AtomicU64,
    /// Gaps between consecutive good replies of at least this long (ns) are counted as they
    /// close ([`LayerTable::watch_gaps`]; off until set).
    gap_min_ns: AtomicI64,
    /// Such gaps so far, and the last one's length (ns; 0 before the first).
    pub gaps_closed: AtomicU64,
    pub last_gap_ns: AtomicI64,
}

impl LayerTable {
    pub fn new(layer: Layer) -> LayerTable {
        LayerTable {
            layer,
            inner: Mutex::new(Inner {
                chunks: Vec::new(),
                len: 0,
                counters: Counters::default(),
            }),
            last_good_ns: AtomicI64::new(i64::MIN),
            sent: AtomicU64::new(0),
            first_sent_ns: AtomicI64::new(i64::MIN),
            kernel_timestamps: AtomicU64::new(0),
            timestamp_fallbacks: AtomicU64::new(0),
            clock_steps: AtomicU64::new(0),
            gap_min_ns: AtomicI64::new(i64::MAX),
            gaps_closed: AtomicU64::new(0),
            last_gap_ns: AtomicI64::new(0),
        }
    }

    /// Counts reply gaps of at least `min_ns` as the replies that close them arrive: the
    /// report's rule (consecutive good arrivals, late ones included) applied live. Exact when
    /// replies are recorded in arrival order, as one receiver thread per layer does.
    pub fn watch_gaps(&self, min_ns: i64) {
        self.gap_min_ns.store(min_ns, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panicking holder cannot leave a record half-written (plain copies); go on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends probe `seq` (must be the next one), sent at `sent_ns`.
    pub fn push_sent(&self, seq: u64, sent_ns: i64) {
        self.push_sent_now(seq, || sent_ns);
    }

    /// Appends probe `seq`, stamped with `now()` read once the table is locked, and returns the
    /// stamp. The pacer sends right after: a wait for the lock (the receiver holding it, perhaps
    /// descheduled) falls before the stamp, not between the stamp and the send.
    pub fn push_sent_now(&self, seq: u64, now: impl FnOnce() -> i64) -> i64 {
        let mut g = self.lock();
        let sent_ns = now();
        debug_assert_eq!(seq, g.len);
        let c = (g.len >> CHUNK_BITS) as usize;
        if c == g.chunks.len() {
            g.chunks.push(Vec::with_capacity(CHUNK));
        }
        g.chunks[c].push(ProbeRecord::sent(self.layer, seq, sent_ns));
        g.len += 1;
        if seq == 0 {
            self.first_sent_ns.store(sent_ns, Ordering::Release);
        }
        self.sent.store(g.len, Ordering::Release);
        sent_ns
    }

    pub fn len(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn with_record<R>(
        &self,
        seq: u64,
        f: impl FnOnce(&mut ProbeRecord, &mut Counters) -> R,
    ) -> Option<R> {
        let mut g = self.lock();
        if seq >= g.len {
            return None;
        }
        let g = &mut *g;
        let r = &mut g.chunks[(seq >> CHUNK_BITS) as usize][(seq as usize) & (CHUNK - 1)];
        Some(f(r, &mut g.counters))
    }

    pub fn mark_send_error(&self, seq: u64, errno: i32) {
        self.with_record(seq, |r, _| {
            if r.received_ns.is_none() {
                r.outcome = Outcome::SendError;
                r.code = errno.clamp(0, u16::MAX as i32) as u16;
            }
        });
    }

    /// Records the final reply to `seq`.
    pub fn complete(&self, seq: u64, at: Arrival, outcome: Outcome, code: u16) -> Completion {
        let received_ns = at.at_ns;
        let c = self.with_record(seq, |r, c| {
            if r.received_ns.is_some() {
                c.duplicates += 1;
                return Completion::Duplicate;
            }
            if received_ns < r.sent_ns {
                c.negative_rtts += 1;
            }
            r.received_ns = Some(received_ns);
            r.received_early_ns = at.early_ns;
            r.outcome = outcome;
            r.code = code;
            Completion::Fresh
        });
        match c {
            Some(c) => {
                if c == Completion::Fresh && outcome == Outcome::Ok {
                    let prev = self.last_good_ns.fetch_max(received_ns, Ordering::AcqRel);
                    if prev != i64::MIN
                        && received_ns - prev >= self.gap_min_ns.load(Ordering::Relaxed)
                    {
                        self.last_gap_ns
                            .store(received_ns - prev, Ordering::Relaxed);
                        self.gaps_closed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                c
            }
            None => {
                self.count(|c| *c.foreign.entry("unknown_seq").or_default() += 1);
                Completion::Unknown
            }
        }
    }

    /// Updates the counters.
    pub fn count<R>(&self, f: impl FnOnce(&mut Counters) -> R) -> R {
        f(&mut self.lock().counters)
    }

    pub fn counters(&self) -> Counters {
        let mut c = self.lock().counters.clone();
        c.kernel_timestamps += self.kernel_timestamps.load(Ordering::Relaxed);
        c.timestamp_fallbacks += self.timestamp_fallbacks.load(Ordering::Relaxed);
        c.clock_steps += self.clock_steps.load(Ordering::Relaxed);
        c
    }

    /// Calls `f` on the records from `from` on, in order, while it returns true; the index of
    /// the first record it did not take.
    pub fn visit(&self, from: u64, mut f: impl FnMut(&ProbeRecord) -> bool) -> u64 {
        let g = self.lock();
        let mut i = from;
        while i < g.len {
            if !f(&g.chunks[(i >> CHUNK_BITS) as usize][(i as usize) & (CHUNK - 1)]) {
                break;
            }
            i += 1;
        }
        i
    }

    /// A copy of every record so far.
    pub fn snapshot(&self) -> Vec<ProbeRecord> {
        let g = self.lock();
        let mut v = Vec::with_capacity(g.len as usize);
        for c in &g.chunks {
            v.extend_from_slice(c);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_complete_duplicate_unknown() {
        let t = LayerTable::new(Layer::Sip);
        for i in 0..(CHUNK as u64 + 10) {
            t.push_sent(i, i as i64);
        }
        assert_eq!(
            t.complete(CHUNK as u64 + 3, Arrival::exact(100), Outcome::Ok, 200),
            Completion::Fresh
        );
        assert_eq!(
            t.complete(CHUNK as u64 + 3, Arrival::exact(101), Outcome::Ok, 200),
            Completion::Duplicate
        );
        assert_eq!(
            t.complete(1 << 40, Arrival::exact(1), Outcome::Ok, 200),
            Completion::Unknown
        );
        t.mark_send_error(2, libc::ENOBUFS);
        let s = t.snapshot();
        assert_eq!(s.len(), CHUNK + 10);
        assert_eq!(s[CHUNK + 3].received_ns, Some(100));
        assert_eq!(s[2].outcome, Outcome::SendError);
        assert_eq!(t.last_good_ns.load(Ordering::Relaxed), 100);
        let c = t.counters();
        assert_eq!(c.duplicates, 1);
        assert_eq!(c.foreign["unknown_seq"], 1);
    }

    #[test]
    fn reply_gaps_are_counted_as_they_close() {
        let t = LayerTable::new(Layer::Sip);
        t.watch_gaps(20);
        for i in 0..6 {
            t.push_sent(i, i as i64 * 10);
        }
        // Arrivals 5, 15, 60 (gap 45), 70, 79 (a failed reply proves nothing), 99 (gap 29).
        t.complete(0, Arrival::exact(5), Outcome::Ok, 200);
        t.complete(1, Arrival::exact(15), Outcome::Ok, 200);
        t.complete(2, Arrival::exact(60), Outcome::Ok, 200);
        assert_eq!(t.gaps_closed.load(Ordering::Relaxed), 1);
        assert_eq!(t.last_gap_ns.load(Ordering::Relaxed), 45);
        t.complete(3, Arrival::exact(70), Outcome::Ok, 200);
        t.complete(4, Arrival::exact(79), Outcome::Failed, 503);
        t.complete(5, Arrival::exact(99), Outcome::Ok, 200);
        assert_eq!(t.gaps_closed.load(Ordering::Relaxed), 2);
        assert_eq!(t.last_gap_ns.load(Ordering::Relaxed), 29);
    }
}
