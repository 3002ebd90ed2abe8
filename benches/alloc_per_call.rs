//! `cargo bench --bench alloc_per_call`: heap allocations per call and per registration in
//! steady state. A counting global allocator wraps the system one; a `LoadCore` (calls to a
//! fixed Request-URI, no registration, like `--ruri`) runs against the embedded `TargetCore`
//! in memory under a virtual clock, each side's `poll_transmit` handed to the other's
//! `handle_input`. After a warm-up (tables and buffers at their working size) the allocations
//! and bytes of a measured window are divided by the calls (or registrations) placed in it, and
//! charged to the side that made them: the load side, the target (its registrar and proxy), or
//! the bench's own loop (none expected). The count is exact and repeatable: no timing, so the
//! shared machine does not matter.
//!
//! What an allocation per call costs is not the malloc itself so much as the cache lines it
//! touches and the allocator contention once several workers run; the figure to watch is the
//! load side's, which is what limits a generator.

use imsload::load::config::CoreConfig;
use imsload::load::core::LoadCore;
use imsload::load::population::from_pattern;
use imsload::target::core::{TargetConfig, TargetCore};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Who is running: allocations are charged to this side.
const BENCH: usize = 0;
const LOAD: usize = 1;
const TARGET: usize = 2;
static SIDE: AtomicUsize = AtomicUsize::new(BENCH);
static ALLOCS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
static BYTES: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

struct Counting;

impl Counting {
    fn count(size: usize) {
        if trace::busy() {
            return;
        }
        let s = SIDE.load(Relaxed);
        let n = ALLOCS[s].fetch_add(1, Relaxed);
        BYTES[s].fetch_add(size as u64, Relaxed);
        trace::sample(s, n);
    }
}

/// `ALLOC_TRACE=N cargo bench --bench alloc_per_call`: records the stack of every N-th
/// allocation in the measured window and prints the call sites in this crate, most frequent
/// first, each scaled back by N. Symbols resolve after the window, so the sampling itself costs
/// the counted figures nothing (its own allocations happen with the guard set and are not
/// recounted).
mod trace {
    use std::backtrace::Backtrace;
    use std::cell::Cell;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use std::sync::Mutex;

    pub static ON: AtomicBool = AtomicBool::new(false);
    pub static EVERY: AtomicU64 = AtomicU64::new(0);
    static STACKS: Mutex<Vec<(usize, Backtrace)>> = Mutex::new(Vec::new());
    thread_local! {
        static BUSY: Cell<bool> = const { Cell::new(false) };
    }

    /// The sampler's own allocations are not the code's: they are left out of the counts.
    pub fn busy() -> bool {
        BUSY.with(|b| b.get())
    }

    pub fn sample(side: usize, n: u64) {
        let every = EVERY.load(Relaxed);
        if every == 0 || !ON.load(Relaxed) || n % every != 0 || side == 0 {
            return;
        }
        if BUSY.with(|b| b.replace(true)) {
            return;
        }
        let bt = Backtrace::force_capture();
        STACKS.lock().unwrap().push((side, bt));
        BUSY.with(|b| b.set(false));
    }

    /// Prints the sampled sites: the innermost `depth` frames in `src/`, per side.
    pub fn report(units: u64) {
        let every = EVERY.load(Relaxed);
        if every == 0 {
            return;
        }
        let stacks = std::mem::take(&mut *STACKS.lock().unwrap());
        let mut sites: HashMap<(usize, String), u64> = HashMap::new();
        for (side, bt) in &stacks {
            let text = format!("{bt}");
            let mut frames = Vec::new();
            let mut func = "";
            for line in text.lines() {
                let line = line.trim();
                if let Some(at) = line.strip_prefix("at ") {
                    if let Some(i) = at.find("/src/").filter(|_| !at.contains("/rustc/")) {
                        let short = func.rsplit("::").take(2).collect::<Vec<_>>();
                        let loc = &at[i + 1..];
                        frames.push(format!(
                            "{}::{} {loc}",
                            short.get(1).unwrap_or(&""),
                            short[0]
                        ));
                    }
                } else if let Some((_, f)) = line.split_once(": ") {
                    func = f;
                }
            }
            frames.truncate(3);
            *sites.entry((*side, frames.join(" < "))).or_default() += every;
        }
        let mut sites: Vec<_> = sites.into_iter().collect();
        sites.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for ((side, site), n) in sites {
            let side = ["bench", "load", "target"][side];
            println!("  {:>6.2} {side:<6} {site}", n as f64 / units.max(1) as f64);
        }
    }
}

// SAFETY: every call is forwarded unchanged to `System`; counting touches only atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        Counting::count(l.size());
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        Counting::count(l.size());
        System.alloc_zeroed(l)
    }
    // A growing Vec or String reallocates: as much a trip to the allocator as a fresh one.
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        Counting::count(new);
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn snapshot() -> [(u64, u64); 3] {
    std::array::from_fn(|i| (ALLOCS[i].load(Relaxed), BYTES[i].load(Relaxed)))
}

fn on<T>(side: usize, f: impl FnOnce() -> T) -> T {
    SIDE.store(side, Relaxed);
    let r = f();
    SIDE.store(BENCH, Relaxed);
    r
}

const LOAD_ADDR: ([u8; 4], u16) = ([127, 0, 0, 2], 5070);
const TARGET_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 5060);

struct Net {
    now: Instant,
    load: LoadCore,
    target: TargetCore,
}

impl Net {
    fn new(cfg: CoreConfig, users: usize) -> Net {
        let now = Instant::now();
        let pop = from_pattern("user%06d", 1, users, "ims.local", "pw_%u").expect("pattern");
        let local = SocketAddr::from(LOAD_ADDR);
        let mut load = LoadCore::new(cfg, &[local], pop, 0, now);
        load.start(now);
        let target = TargetCore::new(TargetConfig::default(), SocketAddr::from(TARGET_ADDR), now);
        Net { now, load, target }
    }

    /// Moves datagrams and virtual time forward by `span` (the shape of `sim_tests::Net::run`,
    /// without its recording of the wire).
    fn run(&mut self, span: Duration) {
        let end = self.now + span;
        let (l, t) = (SocketAddr::from(LOAD_ADDR), SocketAddr::from(TARGET_ADDR));
        loop {
            let mut moved = false;
            while let Some(x) = on(LOAD, || self.load.poll_transmit()) {
                moved = true;
                on(TARGET, || self.target.handle_input(self.now, &x.data, l));
                // As the I/O driver does once a datagram is in its send batch.
                on(LOAD, || x.recycle());
            }
            while let Some(x) = on(TARGET, || self.target.poll_transmit()) {
                moved = true;
                on(LOAD, || self.load.handle_input(self.now, &x.data, t, 0));
                on(TARGET, || x.recycle());
            }
            if moved {
                continue;
            }
            let next = [self.load.poll_timeout(), self.target.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(next) if next <= end => {
                    self.now = next.max(self.now);
                    on(LOAD, || self.load.handle_timeout(self.now));
                    on(TARGET, || self.target.handle_timeout(self.now));
                }
                _ => break,
            }
        }
        self.now = end;
    }
}

struct Window {
    what: &'static str,
    units: u64,
    delta: [(u64, u64); 3],
}

/// Warms up, then counts the allocations of `measure` of virtual time; `units` reads how many
/// calls or registrations the window held from the load side's stats (taken outside it).
fn window(
    what: &'static str,
    cfg: CoreConfig,
    users: usize,
    warm: Duration,
    measure: Duration,
    units: fn(&imsload::load::stats::Counters) -> u64,
) -> Window {
    let mut net = Net::new(cfg, users);
    net.run(warm);
    // Taking stats clones histograms: a once-a-second cost, kept out of the window.
    let _ = net.load.take_stats();
    let _ = net.target.stats();
    trace::ON.store(true, Relaxed);
    let before = snapshot();
    net.run(measure);
    let after = snapshot();
    trace::ON.store(false, Relaxed);
    let stats = net.load.take_stats();
    Window {
        what,
        units: units(&stats.counters),
        delta: std::array::from_fn(|i| (after[i].0 - before[i].0, after[i].1 - before[i].1)),
    }
}

fn print(w: &Window) {
    let n = w.units.max(1) as f64;
    println!("{} ({} in the window):", w.what, w.units);
    trace::report(w.units);
    for (i, name) in ["bench loop", "load side", "target side"]
        .iter()
        .enumerate()
    {
        let (a, b) = w.delta[i];
        println!(
            "  {name:<12} {:>8.2} allocations  {:>9.0} bytes  per {}",
            a as f64 / n,
            b as f64 / n,
            if w.what.starts_with("calls") {
                "call"
            } else {
                "registration"
            }
        );
    }
}

fn main() {
    // `cargo bench --bench alloc_per_call -- calls` (or `registrations`) runs one of the two,
    // e.g. under heaptrack to see where the allocations come from.
    if let Some(n) = std::env::var("ALLOC_TRACE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        trace::EVERY.store(n, Relaxed);
    }
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if run("calls") {
        calls();
    }
    if run("registrations") {
        registrations();
    }
}

fn calls() {
    const CPS: f64 = 1000.0;
    // --ruri mode: INVITE, 180, 200, ACK, BYE, 200 per call, no registration, hold 0.
    let calls = CoreConfig {
        target: SocketAddr::from(TARGET_ADDR),
        register: false,
        fixed_ruri: Some("sip:service@127.0.0.1:5060".into()),
        cps: CPS,
        hold: Duration::ZERO,
        ..CoreConfig::default()
    };
    // 20,000 calls measured after a warm-up of 70 s of virtual time (70,000 calls): the timer
    // wheel allocates each slot's queue the first time a deadline lands in it, so it is warm
    // only after one revolution (8,192 slots × 8.4 ms = 68.7 s); shorter warm-ups charge
    // about 1.4 allocations per call to that.
    let w = window(
        "calls (--ruri, hold 0)",
        calls,
        100,
        Duration::from_secs(70),
        Duration::from_secs_f64(20_000.0 / CPS),
        |c| c.calls_completed,
    );
    print(&w);
}

fn registrations() {
    // Initial registrations with an MD5 digest round (REGISTER, 401, REGISTER, 200), no calls:
    // a user's first registration also allocates what the user keeps while registered
    // (bindings, route sets), so this is not all per-message garbage.
    const RPS: f64 = 1000.0;
    let regs = CoreConfig {
        target: SocketAddr::from(TARGET_ADDR),
        register: true,
        reg_rate: RPS,
        cps: 0.0,
        ..CoreConfig::default()
    };
    let w = window(
        "registrations (MD5 digest)",
        regs,
        22_000,
        Duration::from_secs_f64(2_000.0 / RPS),
        Duration::from_secs_f64(20_000.0 / RPS),
        |c| c.reg_ok,
    );
    print(&w);
}
