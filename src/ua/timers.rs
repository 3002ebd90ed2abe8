//! A hashed timer wheel: O(1) insert, deadline-ordered pops, an exact next deadline.
//!
//! It replaces a `BinaryHeap` whose sift compares were a few per cent of the engine's CPU at
//! 10,000 calls/s: every call arms several timers (retransmissions at T1, transaction timeouts at
//! 64·T1, ring and hold delays) and most of them lapse unfired, so the heap paid log n compares
//! per entry for ordering it never needed. Here an entry costs a push into its slot; ordering is
//! paid only for the slot about to fire, with a sort over that slot alone.
//!
//! Cancellation is lazy, as it was with the heap: callers check a generation when an entry
//! fires, so a stale entry just pops and is ignored. That keeps insert free of handles.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

/// log2 of the tick in nanoseconds: 2^23 ns ≈ 8.39 ms. A power of two so that a deadline's tick is
/// a shift, not a 128-bit division, on every insert. The tick only buckets: deadlines stay exact
/// (a slot is sorted by `at` before it fires), so a coarse tick costs sorting, not accuracy. At
/// 10,000 calls/s (~60,000 arms/s) an 8 ms slot holds ~500 entries; one in-place sort of those
/// is cheaper than a heap's log n per entry, and fewer, fuller slots touch less memory. In
/// `benches/timer_wheel.rs` (same 68.7 s span) 1 ms ticks were the slowest in most runs; 2, 4,
/// 8 and 16 ms ticks were within the noise of a shared machine of each other, 8 ms among the
/// fastest in every run, so the cache, not the sort, decides, and 8 ms keeps the wheel small.
pub const TICK_SHIFT: u32 = 23;

/// log2 of the number of slots: 2^13 slots × 8.39 ms ≈ 68.7 s. The span must cover 64·T1 = 32 s
/// (timers B, F, H, J and the answering side's linger) with room for the cursor to trail `now`,
/// so that the bulk of entries never leaves the wheel. Longer deadlines (registration refresh in
/// minutes to hours, long holds) wait in a small overflow heap and move into the wheel as their
/// slot comes within the span; there are few of them (per user per refresh, not per message).
/// The slot table is 32 KiB of deque indices, the occupancy bitmap 1 KiB, and each slot that ever
/// held an entry has a deque of its own (32 bytes plus its entries; all 8,192 at high rates).
pub const SLOTS_LOG2: u32 = 13;

#[derive(Clone)]
struct Entry<T> {
    at: Instant,
    /// Insertion order, for FIFO among equal deadlines (sorts are unstable, to not allocate).
    seq: u64,
    value: T,
}

impl<T> Entry<T> {
    fn key(&self) -> (Instant, u64) {
        (self.at, self.seq)
    }
}

// Ordered by deadline then insertion only, so `T` needs no `Ord`.
impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// A slot that has never held an entry has no deque.
const NO_DEQUE: u32 = u32::MAX;

#[derive(Clone)]
pub struct TimerWheel<T> {
    epoch: Instant,
    tick_shift: u32,
    mask: u64,
    /// Slot `s`'s entries are `deques[slot_deque[s]]`. An index table of plain integers rather
    /// than 8,192 deques, so that cloning or dropping a wheel walks only the deques in use (a
    /// handful in a short run: the fuzz targets clone and drop three wheels per input, and a
    /// walk over every slot was a fifth of each input's time). The indirection costs a little:
    /// in `benches/timer_wheel.rs`, four interleaved runs each, heap/wheel was 2.27–2.44×
    /// before and 1.93–2.32× after, about 8 ns more per timer, ~0.05 µs per call.
    slot_deque: Box<[u32]>,
    deques: Vec<VecDeque<Entry<T>>>,
    /// One bit per slot with entries, so that finding the next busy slot skips 64 idle ones per
    /// word instead of looking at each.
    occupied: Box<[u64]>,
    /// One bit per slot kept in deadline order (the slot that fires next, once looked at), where
    /// an insert goes to its place; elsewhere inserts append and the slot is sorted once.
    sorted: Box<[u64]>,
    /// The tick the wheel has reached. Slot entries have ticks in `cursor..cursor + slots`; an
    /// entry inserted in the past goes to the cursor's slot, ahead of the rest by its `at`.
    cursor: u64,
    /// Entries in slots (not counting `far`).
    near: usize,
    /// Entries a span or more ahead of the cursor.
    far: BinaryHeap<Reverse<Entry<T>>>,
    seq: u64,
    /// The earliest deadline of all entries, kept exact on every insert and pop so that asking
    /// for it (after every event) costs nothing.
    next: Option<Instant>,
}

impl<T> TimerWheel<T> {
    /// A wheel with the default geometry ([`TICK_SHIFT`], [`SLOTS_LOG2`]), ticks counted from
    /// `epoch` (deadlines before it are simply due).
    pub fn new(epoch: Instant) -> Self {
        Self::with_geometry(epoch, TICK_SHIFT, SLOTS_LOG2)
    }

    /// A wheel with ticks of 2^`tick_shift` ns and 2^`slots_log2` slots (at least 64, so that the
    /// bitmap has whole words). Tests use small ones to reach the overflow quickly.
    pub fn with_geometry(epoch: Instant, tick_shift: u32, slots_log2: u32) -> Self {
        assert!((6..=24).contains(&slots_log2), "slots_log2 out of range");
        assert!(tick_shift < 40, "tick_shift out of range");
        let n = 1usize << slots_log2;
        TimerWheel {
            epoch,
            tick_shift,
            mask: n as u64 - 1,
            slot_deque: vec![NO_DEQUE; n].into_boxed_slice(),
            deques: Vec::new(),
            occupied: vec![0; n / 64].into_boxed_slice(),
            sorted: vec![0; n / 64].into_boxed_slice(),
            cursor: 0,
            near: 0,
            far: BinaryHeap::new(),
            seq: 0,
            next: None,
        }
    }

    pub fn len(&self) -> usize {
        self.near + self.far.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slot span in ticks.
    fn span(&self) -> u64 {
        self.mask + 1
    }

    fn tick_of(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.epoch);
        // u64 nanoseconds last 584 years; the shift keeps insert free of division.
        let ns = d.as_secs() * 1_000_000_000 + u64::from(d.subsec_nanos());
        ns >> self.tick_shift
    }

    /// Arms `value` to fire at `at`. A deadline at or before the last `now` given to
    /// [`TimerWheel::pop_due`] fires on its next call.
    pub fn insert(&mut self, at: Instant, value: T) {
        let e = Entry {
            at,
            seq: self.seq,
            value,
        };
        self.seq += 1;
        let tick = self.tick_of(at).max(self.cursor);
        if tick - self.cursor >= self.span() {
            self.far.push(Reverse(e));
        } else {
            self.place(tick, e);
        }
        self.next = Some(self.next.map_or(at, |n| n.min(at)));
    }

    fn place(&mut self, tick: u64, e: Entry<T>) {
        let s = (tick & self.mask) as usize;
        if self.slot_deque[s] == NO_DEQUE {
            self.slot_deque[s] = u32::try_from(self.deques.len()).expect("at most 2^24 slots");
            self.deques.push(VecDeque::new());
        }
        let slot = &mut self.deques[self.slot_deque[s] as usize];
        if bit(&self.sorted, s) {
            // Entries later in `seq` order sort after equal deadlines: `<=` keeps FIFO.
            let i = slot.partition_point(|x| x.at <= e.at);
            slot.insert(i, e);
        } else {
            slot.push_back(e);
        }
        set_bit(&mut self.occupied, s);
        self.near += 1;
    }

    /// The earliest deadline armed, stale entries included.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next
    }

    /// The earliest entry due at or before `now`, if any. Call until `None` to fire everything
    /// due; entries come out in deadline order, equal deadlines in insertion order, including
    /// entries inserted between calls.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, T)> {
        if self.next.is_none_or(|n| n > now) {
            return None;
        }
        let now_tick = self.tick_of(now);
        loop {
            let s = (self.cursor & self.mask) as usize;
            if bit(&self.occupied, s) {
                self.sort_slot(s);
                let slot = &mut self.deques[self.slot_deque[s] as usize];
                if slot.front().is_some_and(|e| e.at > now) {
                    return None;
                }
                let e = slot.pop_front().expect("occupied slot has entries");
                self.near -= 1;
                if let Some(f) = slot.front() {
                    self.next = Some(f.at);
                } else {
                    clear_bit(&mut self.occupied, s);
                    clear_bit(&mut self.sorted, s);
                    self.refresh_next();
                }
                return Some((e.at, e.value));
            }
            if self.cursor >= now_tick {
                return None;
            }
            let limit = now_tick.min(self.cursor + self.span() - 1);
            let mut target = self
                .find_occupied(self.cursor + 1, limit)
                .unwrap_or(now_tick);
            if let Some(Reverse(f)) = self.far.peek() {
                target = target.min(self.tick_of(f.at));
            }
            self.cursor = target;
            self.migrate();
        }
    }

    /// Moves overflow entries whose slot came within the span into the wheel. Run on every
    /// cursor advance, so an overflow entry is in its slot before any later insert with the same
    /// deadline can be, which keeps equal deadlines FIFO.
    fn migrate(&mut self) {
        let end = self.cursor + self.span();
        while let Some(Reverse(f)) = self.far.peek() {
            let tick = self.tick_of(f.at).max(self.cursor);
            if tick >= end {
                break;
            }
            let Some(Reverse(e)) = self.far.pop() else {
                break;
            };
            self.place(tick, e);
        }
    }

    fn sort_slot(&mut self, s: usize) {
        if !bit(&self.sorted, s) {
            // Unstable sort on (at, seq): no scratch allocation, and seq makes it a total order.
            self.deques[self.slot_deque[s] as usize]
                .make_contiguous()
                .sort_unstable_by_key(Entry::key);
            set_bit(&mut self.sorted, s);
        }
    }

    /// Recomputes `next` after the cursor's slot emptied: the next busy slot's first entry, or
    /// the overflow's.
    fn refresh_next(&mut self) {
        if self.near == 0 {
            self.next = self.far.peek().map(|Reverse(e)| e.at);
            return;
        }
        let last = self.cursor + self.span() - 1;
        let tick = self
            .find_occupied(self.cursor, last)
            .expect("a wheel with entries has a busy slot");
        let s = (tick & self.mask) as usize;
        self.sort_slot(s);
        self.next = self.deques[self.slot_deque[s] as usize]
            .front()
            .map(|e| e.at);
    }

    /// The first tick in `from..=to` (less than a span apart) whose slot has entries.
    fn find_occupied(&self, from: u64, to: u64) -> Option<u64> {
        let mut t = from;
        while t <= to {
            let s = t & self.mask;
            let b = s & 63;
            let word = self.occupied[(s >> 6) as usize] >> b;
            if word != 0 {
                let hit = t + u64::from(word.trailing_zeros());
                return (hit <= to).then_some(hit);
            }
            t += 64 - b;
        }
        None
    }
}

impl<T> std::fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerWheel")
            .field("len", &self.len())
            .field("next", &self.next)
            .field("tick", &Duration::from_nanos(1 << self.tick_shift))
            .finish()
    }
}

fn bit(bits: &[u64], s: usize) -> bool {
    bits[s >> 6] & (1 << (s & 63)) != 0
}

fn set_bit(bits: &mut [u64], s: usize) {
    bits[s >> 6] |= 1 << (s & 63);
}

fn clear_bit(bits: &mut [u64], s: usize) {
    bits[s >> 6] &= !(1 << (s & 63));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn drain<T>(w: &mut TimerWheel<T>, now: Instant) -> Vec<(Instant, T)> {
        std::iter::from_fn(|| w.pop_due(now)).collect()
    }

    #[test]
    fn pops_in_deadline_order_across_slots_and_wraps() {
        let t0 = Instant::now();
        // 64 slots of ~1 ms: 67 ms per revolution, so these span several revolutions and slots.
        let mut w = TimerWheel::with_geometry(t0, 20, 6);
        let offsets = [250u64, 3, 70, 1, 140, 3, 66, 0, 500, 69, 2];
        for (i, &o) in offsets.iter().enumerate() {
            w.insert(t0 + ms(o), i);
        }
        assert_eq!(w.len(), offsets.len());
        let got: Vec<usize> = drain(&mut w, t0 + ms(1000))
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        // Equal offsets (3 ms twice) fire in insertion order.
        assert_eq!(got, vec![7, 3, 10, 1, 5, 6, 9, 2, 4, 0, 8]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn fires_only_what_is_due_and_keeps_exact_instants() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        // Same 8 ms slot, different sub-tick instants.
        let a = t0 + Duration::from_micros(1_500);
        let b = t0 + Duration::from_micros(1_200);
        w.insert(a, "a");
        w.insert(b, "b");
        assert_eq!(w.next_deadline(), Some(b));
        assert_eq!(w.pop_due(b - Duration::from_nanos(1)), None);
        assert_eq!(w.pop_due(b), Some((b, "b")));
        assert_eq!(w.pop_due(b), None);
        assert_eq!(w.next_deadline(), Some(a));
        assert_eq!(w.pop_due(a), Some((a, "a")));
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn same_instant_is_fifo_even_through_the_overflow() {
        let t0 = Instant::now();
        let mut w = TimerWheel::with_geometry(t0, 20, 6);
        let far = t0 + ms(10_000);
        // The first two wait in the overflow; the last two are inserted once the slot is near.
        w.insert(far, 0);
        w.insert(far, 1);
        w.insert(t0 + ms(9_990), 99);
        assert_eq!(drain(&mut w, t0 + ms(9_990)), vec![(t0 + ms(9_990), 99)]);
        w.insert(far, 2);
        w.insert(far, 3);
        let got: Vec<i32> = drain(&mut w, far).into_iter().map(|(_, v)| v).collect();
        assert_eq!(got, vec![0, 1, 2, 3]);
    }

    #[test]
    fn far_future_entries_wait_and_fire_on_time() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let hour = t0 + Duration::from_secs(3600);
        let refresh = t0 + Duration::from_secs(1800) + Duration::from_nanos(7);
        w.insert(hour, 1);
        w.insert(refresh, 2);
        w.insert(t0 + ms(500), 3);
        assert_eq!(w.next_deadline(), Some(t0 + ms(500)));
        assert_eq!(drain(&mut w, t0 + ms(500)), vec![(t0 + ms(500), 3)]);
        assert_eq!(w.next_deadline(), Some(refresh));
        assert_eq!(w.pop_due(refresh - Duration::from_nanos(1)), None);
        assert_eq!(drain(&mut w, refresh), vec![(refresh, 2)]);
        assert_eq!(w.next_deadline(), Some(hour));
        // A timer armed on the way, nearer than the hour, goes ahead of it.
        let soon = refresh + ms(40_000);
        w.insert(soon, 4);
        assert_eq!(w.next_deadline(), Some(soon));
        assert_eq!(drain(&mut w, hour + ms(1)), vec![(soon, 4), (hour, 1)]);
    }

    #[test]
    fn next_deadline_is_exact_after_every_step() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        assert_eq!(w.next_deadline(), None);
        let d = [
            Duration::from_nanos(32_000_000_123),
            Duration::from_nanos(500_000_001),
            Duration::from_nanos(499_999_999),
            Duration::from_nanos(4_000_000_000),
        ];
        for (i, &x) in d.iter().enumerate() {
            w.insert(t0 + x, i);
        }
        let mut sorted = d.to_vec();
        sorted.sort();
        for &x in &sorted {
            assert_eq!(w.next_deadline(), Some(t0 + x));
            assert_eq!(w.pop_due(t0 + x).map(|(at, _)| at), Some(t0 + x));
        }
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn a_clone_fires_what_the_original_fires() {
        // Slots, the overflow heap, and a half-drained wheel (the cursor moved, slots emptied).
        let t0 = Instant::now();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut w = TimerWheel::with_geometry(t0, 20, 6);
        for i in 0..500u32 {
            w.insert(t0 + ms(rng.random_range(0..200)), i);
        }
        let half = drain(&mut w, t0 + ms(60));
        assert!(!half.is_empty());
        for i in 500..600u32 {
            w.insert(t0 + ms(rng.random_range(0..400)), i);
        }
        let mut c = w.clone();
        assert_eq!((c.len(), c.next_deadline()), (w.len(), w.next_deadline()));
        let end = t0 + ms(1000);
        let (a, b) = (drain(&mut w, end), drain(&mut c, end));
        assert_eq!(a.len(), 600 - half.len());
        assert_eq!(a, b);
    }

    #[test]
    fn inserting_in_the_past_fires_at_once_and_first() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0 + ms(100));
        let now = t0 + ms(10_000);
        w.insert(now + ms(1), "later");
        w.insert(now, "now");
        assert_eq!(drain(&mut w, now), vec![(now, "now")]);
        // Behind the cursor and even before the epoch: due at once, in deadline order.
        w.insert(now - ms(3_000), "past");
        w.insert(t0, "before epoch");
        assert_eq!(w.next_deadline(), Some(t0));
        assert_eq!(
            drain(&mut w, now),
            vec![(t0, "before epoch"), (now - ms(3_000), "past")]
        );
        assert_eq!(drain(&mut w, now + ms(1)), vec![(now + ms(1), "later")]);
    }

    #[test]
    fn entries_armed_while_firing_keep_global_order() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.insert(t0 + ms(1), 1);
        w.insert(t0 + ms(30), 3);
        let now = t0 + ms(50);
        assert_eq!(w.pop_due(now), Some((t0 + ms(1), 1)));
        // Armed "now" while firing: later than what is already due at 30 ms.
        w.insert(t0 + ms(20), 2);
        w.insert(now, 4);
        let got: Vec<i32> = drain(&mut w, now).into_iter().map(|(_, v)| v).collect();
        assert_eq!(got, vec![2, 3, 4]);
    }

    /// Random deadlines (near, 64·T1-like, far), random clock steps and inserts between pops,
    /// against a `BinaryHeap` on (at, seq): the same entries in the same order, and the same next
    /// deadline after every step.
    #[test]
    fn matches_a_binary_heap_reference() {
        for (tick_shift, slots_log2) in [(TICK_SHIFT, SLOTS_LOG2), (20, 6), (16, 8)] {
            let t0 = Instant::now();
            let mut rng = SmallRng::seed_from_u64(11);
            let mut w = TimerWheel::with_geometry(t0, tick_shift, slots_log2);
            let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
            let mut seq = 0u64;
            let mut now = t0;
            let mut fired = 0usize;
            for _ in 0..20_000 {
                for _ in 0..rng.random_range(0..4) {
                    let at = match rng.random_range(0..10) {
                        0 => now,
                        1..=3 => now + Duration::from_nanos(rng.random_range(0..2_000_000)),
                        4..=5 => now + ms(500),
                        6 => now + ms(32_000),
                        7 => now + Duration::from_nanos(rng.random_range(0..32_000_000_000)),
                        8 => now + Duration::from_nanos(rng.random_range(0..7_200_000_000_000)),
                        // Up to 50 ms in the past.
                        _ => now
                            .checked_sub(Duration::from_nanos(rng.random_range(1..50_000_000)))
                            .unwrap_or(now),
                    };
                    w.insert(at, seq);
                    heap.push(Reverse((at, seq)));
                    seq += 1;
                }
                assert_eq!(w.next_deadline(), heap.peek().map(|Reverse((at, _))| *at));
                now += Duration::from_nanos(rng.random_range(0..3_000_000));
                if rng.random_range(0..1000) == 0 {
                    now += Duration::from_secs(rng.random_range(0..4000));
                }
                while let Some(Reverse((at, s))) = heap.peek().copied() {
                    if at > now {
                        break;
                    }
                    heap.pop();
                    assert_eq!(w.pop_due(now), Some((at, s)));
                    fired += 1;
                }
                assert_eq!(w.pop_due(now), None);
                assert_eq!(w.len(), heap.len());
            }
            assert!(
                fired > 25_000,
                "the walk fired too little to mean much: {fired}"
            );
            // What is left (hours ahead) comes out in the same order too.
            let end = now + Duration::from_secs(10_000);
            while let Some(Reverse((at, s))) = heap.pop() {
                assert_eq!(w.pop_due(end), Some((at, s)));
            }
            assert_eq!(w.pop_due(end), None);
            assert!(w.is_empty());
            assert_eq!(w.next_deadline(), None);
        }
    }
}
