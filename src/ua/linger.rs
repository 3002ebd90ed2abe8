//! Calls that are over, remembered by a hash of their Call-ID for as long as a retransmission
//! of theirs can still arrive (64·T1 over UDP), so that a retransmitted BYE is answered 200 and
//! counted as a duplicate rather than refused with 481.
//!
//! Why not keep the call itself: a call that ended after its 2xx was ACKed needs nothing of its
//! state to answer a retransmission (the 200 to a BYE is built from the BYE), yet its entry
//! with its identifiers is ~350 bytes, and 32 s of lingering at 30,000 calls/s is 960,000 of
//! them: the answerer's byte budget (64 MiB) was full after 3.6 s, and `imsload serve` then
//! refused every new INVITE with 503. A tombstone is a 64-bit hash and an expiry: ~40 bytes
//! with its map slot. Their number is bounded too ([`Lingering::new`]'s `cap`): beyond it the
//! oldest gives way early and is counted, so a peer that ends calls faster than a cap per 64·T1
//! costs late retransmissions a 481, never memory.
//!
//! A hash collision (two live Call-IDs in 2^64) would answer a stray BYE 200 instead of 481.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::time::Instant;

#[derive(Clone)]
pub struct Lingering {
    /// (expiry, hash) in the order they were added: every call lingers equally long, so this
    /// is also the order they expire in.
    fifo: VecDeque<(Instant, u64)>,
    /// How many entries of `fifo` carry each hash (a Call-ID reused by a peer ends twice).
    count: HashMap<u64, u32>,
    hasher: RandomState,
    cap: usize,
    /// Entries that gave way to newer ones before their time.
    cut: u64,
}

impl Lingering {
    /// At most `cap` tombstones (at least one).
    pub fn new(cap: usize) -> Lingering {
        Lingering {
            fifo: VecDeque::new(),
            count: HashMap::new(),
            hasher: RandomState::new(),
            cap: cap.max(1),
            cut: 0,
        }
    }

    /// Remembers `call_id` until `until`; what expired by `now` is forgotten first.
    pub fn insert(&mut self, now: Instant, until: Instant, call_id: &str) {
        self.expire(now);
        if self.fifo.len() >= self.cap {
            self.pop();
            self.cut += 1;
        }
        let h = self.hasher.hash_one(call_id);
        self.fifo.push_back((until, h));
        *self.count.entry(h).or_default() += 1;
    }

    pub fn contains(&self, call_id: &str) -> bool {
        !self.count.is_empty() && self.count.contains_key(&self.hasher.hash_one(call_id))
    }

    /// Forgets what expired by `now`.
    pub fn expire(&mut self, now: Instant) {
        while self.fifo.front().is_some_and(|&(until, _)| until <= now) {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some((_, h)) = self.fifo.pop_front() {
            if let Some(n) = self.count.get_mut(&h) {
                *n -= 1;
                if *n == 0 {
                    self.count.remove(&h);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.fifo.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fifo.is_empty()
    }

    /// Tombstones dropped before their time because `cap` was reached, since the start.
    pub fn cut(&self) -> u64 {
        self.cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_call_is_remembered_until_its_time_and_no_longer() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut l = Lingering::new(10);
        l.insert(t0, t0 + 32 * s, "a@x");
        l.insert(t0 + s, t0 + 33 * s, "b@x");
        assert!(l.contains("a@x") && l.contains("b@x") && !l.contains("c@x"));
        l.expire(t0 + 32 * s);
        assert!(!l.contains("a@x") && l.contains("b@x"));
        assert_eq!((l.len(), l.cut()), (1, 0));
        l.expire(t0 + 40 * s);
        assert!(l.is_empty() && !l.contains("b@x"));
    }

    #[test]
    fn beyond_the_cap_the_oldest_gives_way_and_is_counted() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(32);
        let mut l = Lingering::new(3);
        for id in ["1", "2", "3", "4", "5"] {
            l.insert(t0, later, id);
        }
        assert_eq!((l.len(), l.cut()), (3, 2));
        assert!(!l.contains("1") && !l.contains("2"));
        assert!(l.contains("3") && l.contains("4") && l.contains("5"));
    }

    #[test]
    fn a_call_id_that_ends_twice_lingers_until_its_last_end_expires() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut l = Lingering::new(10);
        l.insert(t0, t0 + 32 * s, "same");
        l.insert(t0 + 5 * s, t0 + 37 * s, "same");
        l.expire(t0 + 33 * s);
        assert!(l.contains("same"), "its second end still lingers");
        l.expire(t0 + 37 * s);
        assert!(!l.contains("same"));
    }
}
