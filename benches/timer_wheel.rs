//! `cargo bench --bench timer_wheel`: the timer wheel against the `BinaryHeap` it replaced, on the
//! arming pattern of a 10,000 calls/s worker. Each call arms six timers, one every ~17 µs of
//! virtual time: one due at once (an arrival), two at T1 = 500 ms (INVITE and BYE
//! retransmissions), one at 5 s (a completed transaction's linger), one at 64·T1 = 32 s (the
//! INVITE's timeout) and one anywhere in 0–32 s (ring and hold delays). Most of them lapse
//! unfired in a real run (cancelled lazily by generation), so both structures carry and pop them
//! all, as the engine does. After each call the clock advances and everything due is popped,
//! exactly as `LoadCore::handle_timeout` does; 1M timers in all. Prints ns per timer (insert +
//! pop), the best and the spread of several runs (the machine is shared), and the ratio.

use imsload::ua::timers::{TimerWheel, SLOTS_LOG2, TICK_SHIFT};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::time::{Duration, Instant};

const TIMERS: usize = 1_000_000;
const PER_CALL: usize = 6;
const CALL_GAP: Duration = Duration::from_micros(100);

/// Stands in for the engine's `Timer` (a 12-byte enum with a slab key).
type Payload = (u32, u32);

fn offsets() -> Vec<Duration> {
    let mut rng = SmallRng::seed_from_u64(11);
    (0..TIMERS)
        .map(|i| match i % PER_CALL {
            0 => Duration::ZERO,
            1 | 2 => Duration::from_millis(500),
            3 => Duration::from_secs(5),
            4 => Duration::from_secs(32),
            _ => Duration::from_nanos(rng.random_range(0..32_000_000_000)),
        })
        .collect()
}

trait Timers {
    fn arm(&mut self, at: Instant, v: Payload);
    fn pop(&mut self, now: Instant) -> Option<(Instant, Payload)>;
}

impl Timers for BinaryHeap<Reverse<(Instant, Payload)>> {
    fn arm(&mut self, at: Instant, v: Payload) {
        self.push(Reverse((at, v)));
    }
    fn pop(&mut self, now: Instant) -> Option<(Instant, Payload)> {
        match self.peek() {
            Some(Reverse((at, _))) if *at <= now => self.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }
}

impl Timers for TimerWheel<Payload> {
    fn arm(&mut self, at: Instant, v: Payload) {
        self.insert(at, v);
    }
    fn pop(&mut self, now: Instant) -> Option<(Instant, Payload)> {
        self.pop_due(now)
    }
}

/// One run: returns the time taken and a checksum of the firing order (equal checksums mean the
/// same entries fired at the same instants).
fn run<W: Timers>(w: &mut W, t0: Instant, offsets: &[Duration]) -> (Duration, u64) {
    let mut now = t0;
    let mut sum = 0u64;
    let fire = |at: Instant, v: Payload, sum: &mut u64| {
        *sum = sum
            .wrapping_mul(31)
            .wrapping_add(u64::from(v.0) ^ (at - t0).as_nanos() as u64);
    };
    let start = Instant::now();
    for (i, chunk) in offsets.chunks(PER_CALL).enumerate() {
        for (j, &d) in chunk.iter().enumerate() {
            w.arm(now + d, ((i * PER_CALL + j) as u32, i as u32));
        }
        now += CALL_GAP;
        while let Some((at, v)) = w.pop(now) {
            fire(at, v, &mut sum);
        }
    }
    let end = now + Duration::from_secs(3600);
    while let Some((at, v)) = w.pop(end) {
        fire(at, v, &mut sum);
    }
    (start.elapsed(), black_box(sum))
}

fn bench<W: Timers>(name: &str, make: impl Fn(Instant) -> W, offsets: &[Duration]) -> (f64, u64) {
    let mut ns = Vec::new();
    let mut check = 0;
    for _ in 0..7 {
        let t0 = Instant::now();
        let mut w = make(t0);
        let (took, sum) = run(&mut w, t0, offsets);
        ns.push(took.as_nanos() as f64 / offsets.len() as f64);
        // The same virtual times from every run's own t0: the checksum must not change.
        assert!(
            check == 0 || check == sum,
            "{name}: firing order differs between runs"
        );
        check = sum;
    }
    ns.sort_by(f64::total_cmp);
    println!(
        "{name:<40} best {:>6.1} ns/timer  median {:>6.1}  worst {:>6.1}",
        ns[0],
        ns[ns.len() / 2],
        ns[ns.len() - 1]
    );
    (ns[0], check)
}

fn main() {
    let offsets = offsets();
    println!(
        "{} timers, {} per call, a call every {:?} (10,000 calls/s), insert + pop, 7 runs:",
        offsets.len(),
        PER_CALL,
        CALL_GAP
    );
    let (heap, heap_sum) = bench(
        "BinaryHeap<Reverse<(Instant, T)>>",
        |_| BinaryHeap::new(),
        &offsets,
    );
    let name = format!("TimerWheel (default: 2^{TICK_SHIFT} ns x 2^{SLOTS_LOG2})");
    let (wheel, wheel_sum) = bench(&name, TimerWheel::new, &offsets);
    assert_eq!(heap_sum, wheel_sum, "the wheel fired in a different order");
    for (shift, log2) in [(20, 16), (21, 15), (22, 14), (24, 12)] {
        let name = format!("TimerWheel (2^{shift} ns x 2^{log2})");
        let (_, sum) = bench(
            &name,
            |t0| TimerWheel::with_geometry(t0, shift, log2),
            &offsets,
        );
        assert_eq!(heap_sum, sum, "{name} fired in a different order");
    }
    println!("heap / default wheel: {:.2}x", heap / wheel);
}
