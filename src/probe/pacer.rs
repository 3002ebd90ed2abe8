//! The pacer: a dedicated OS thread that fires tick *k* at `start + k * interval` on
//! CLOCK_MONOTONIC, sleeping with `clock_nanosleep(TIMER_ABSTIME)` (timer slack set to 1 ns) and
//! spinning for the last `spin_ns` if asked. The schedule is absolute: a late wake-up never
//! shifts later ticks, and silence from the target never slows it (unlike `ping`, which drops to
//! 100/s while replies are missing). Ticks that are overdue are fired at once (catch-up); only
//! when the pacer itself was stalled for more than [`MAX_BEHIND_NS`] (the prober was stopped or
//! suspended) are the missed ticks skipped, and counted.

use crate::clock::monotonic_ns;
use std::sync::atomic::{AtomicBool, Ordering};

/// Beyond this far behind schedule, skip ahead instead of bursting.
pub const MAX_BEHIND_NS: u64 = 1_000_000_000;

#[derive(Clone, Copy, Debug)]
pub struct PacerConfig {
    pub interval_ns: u64,
    /// CLOCK_MONOTONIC ns of tick 0.
    pub start_mono_ns: u64,
    /// CLOCK_MONOTONIC ns after which no tick fires.
    pub deadline_mono_ns: Option<u64>,
    /// Busy-wait this long before each tick instead of sleeping (0: never spin).
    pub spin_ns: u64,
    /// SCHED_FIFO priority to ask for (None: stay SCHED_OTHER).
    pub rt_priority: Option<i32>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PacerStats {
    pub ticks: u64,
    /// Ticks fired more than one interval after their scheduled time.
    pub late_ticks: u64,
    /// Ticks skipped because the pacer was stalled for more than a second.
    pub skipped_ticks: u64,
    /// Lateness of ticks (actual - scheduled), ns.
    pub lateness_p50_ns: u64,
    pub lateness_p99_ns: u64,
    pub lateness_max_ns: u64,
    /// Whether SCHED_FIFO was granted.
    pub realtime_priority: bool,
}

fn sleep_until(abs_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (abs_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (abs_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: valid timespec; no remainder is needed with TIMER_ABSTIME.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if rc != libc::EINTR {
            break;
        }
    }
}

/// Sets 1 ns timer slack and, when asked and permitted, SCHED_FIFO on the calling thread.
pub fn tune_thread(rt_priority: Option<i32>) -> bool {
    // SAFETY: prctl/pthread calls on the current thread with valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
        if let Some(p) = rt_priority {
            let param = libc::sched_param { sched_priority: p };
            return libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param)
                == 0;
        }
    }
    false
}

/// Sets the calling thread's timer slack: how much later than asked the kernel may end its
/// sleeps, so that it can serve several timers with one wake-up.
pub fn set_timer_slack(ns: u64) {
    // SAFETY: prctl on the current thread with valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, ns.max(1) as libc::c_ulong, 0, 0, 0);
    }
}

/// Runs the schedule on the calling thread until `stop` or the deadline. `tick(k, scheduled)` is
/// called for every tick, in order.
pub fn run(cfg: &PacerConfig, stop: &AtomicBool, mut tick: impl FnMut(u64, u64)) -> PacerStats {
    let mut st = PacerStats {
        realtime_priority: tune_thread(cfg.rt_priority),
        ..PacerStats::default()
    };
    let mut lateness = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .expect("static histogram bounds");
    let interval = cfg.interval_ns.max(1);
    let mut k: u64 = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let due = cfg.start_mono_ns + k * interval;
        if cfg.deadline_mono_ns.is_some_and(|d| due >= d) {
            break;
        }
        let mut now = monotonic_ns();
        if now < due {
            if due - now > cfg.spin_ns {
                sleep_until(due - cfg.spin_ns);
            }
            now = monotonic_ns();
            while now < due {
                std::hint::spin_loop();
                now = monotonic_ns();
            }
        } else if now - due > MAX_BEHIND_NS {
            // The prober itself was stalled: jump to the next tick from now.
            let skip = (now - due) / interval;
            st.skipped_ticks += skip;
            k += skip;
            continue;
        }
        let late = now.saturating_sub(due);
        if late > interval {
            st.late_ticks += 1;
        }
        let _ = lateness.record(late.max(1));
        tick(k, due);
        st.ticks += 1;
        k += 1;
    }
    st.lateness_p50_ns = lateness.value_at_quantile(0.5);
    st.lateness_p99_ns = lateness.value_at_quantile(0.99);
    st.lateness_max_ns = lateness.max();
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_an_absolute_schedule_without_drift() {
        let stop = AtomicBool::new(false);
        let start = monotonic_ns() + 2_000_000;
        let cfg = PacerConfig {
            interval_ns: 1_000_000,
            start_mono_ns: start,
            deadline_mono_ns: Some(start + 200_000_000),
            spin_ns: 0,
            rt_priority: None,
        };
        let mut fired = Vec::new();
        let st = run(&cfg, &stop, |k, due| {
            fired.push((k, due, monotonic_ns()));
            if k == 50 {
                // A slow tick (5 ms): the following ticks catch up, the schedule does not move.
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        assert_eq!(st.ticks, 200);
        assert_eq!(fired.len(), 200);
        for (i, (k, due, at)) in fired.iter().enumerate() {
            assert_eq!(*k, i as u64);
            assert_eq!(*due, start + i as u64 * 1_000_000);
            assert!(at >= due);
        }
        // The last tick fired close to its slot (no accumulated drift).
        let (_, due, at) = fired[199];
        assert!(at - due < 20_000_000, "last tick {} ns late", at - due);
        assert!(st.late_ticks >= 1);
    }
}
