//! One clock discipline: monotonic time inside, wall-clock UTC only at the edges.
//!
//! A run records once, at its start, which wall-clock instant corresponds to which monotonic
//! instant; every label is derived from that pair, so a clock step (NTP) mid-run moves no
//! interval we measure.

use chrono::{DateTime, SecondsFormat, Utc};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct Epoch {
    pub mono: Instant,
    pub wall: DateTime<Utc>,
    /// CLOCK_MONOTONIC reading (ns) at `mono`, to relate kernel timestamps to ours.
    pub mono_ns: u64,
}

impl Epoch {
    pub fn now() -> Epoch {
        let mono_ns = monotonic_ns();
        let mono = Instant::now();
        Epoch {
            mono,
            wall: Utc::now(),
            mono_ns,
        }
    }

    /// Seconds since the epoch's start as f64 (for tables and plots).
    pub fn secs(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.mono).as_secs_f64()
    }

    /// Wall-clock label of a monotonic instant.
    pub fn wall_of(&self, t: Instant) -> DateTime<Utc> {
        let d = if t >= self.mono {
            chrono::Duration::from_std(t - self.mono).unwrap_or_default()
        } else {
            -chrono::Duration::from_std(self.mono - t).unwrap_or_default()
        };
        self.wall + d
    }

    /// RFC 3339 UTC with nanoseconds, the form used in every record.
    pub fn label(&self, t: Instant) -> String {
        self.wall_of(t).to_rfc3339_opts(SecondsFormat::Nanos, true)
    }

    /// The `Instant` of a CLOCK_MONOTONIC nanosecond reading (e.g. a kernel timestamp).
    pub fn instant_of_mono_ns(&self, ns: u64) -> Instant {
        if ns >= self.mono_ns {
            self.mono + Duration::from_nanos(ns - self.mono_ns)
        } else {
            self.mono - Duration::from_nanos(self.mono_ns - ns)
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds (what `Instant` uses on Linux).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_REALTIME in nanoseconds since the Unix epoch (what the kernel stamps datagrams with).
pub fn realtime_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// The moment a batch of datagrams was read, on both clocks (read back to back): kernel
/// receive stamps (CLOCK_REALTIME) become `Instant`s by their *age* at this moment, never by an
/// offset taken once per run, so a realtime clock slewed or stepped mid-run moves no stamp
/// (only a step between a datagram's arrival and its read can, and that is caught).
#[derive(Clone, Copy, Debug)]
pub struct ReadMoment {
    pub mono: Instant,
    pub real_ns: i128,
}

impl ReadMoment {
    pub fn now() -> ReadMoment {
        let (mono, real_ns) = with_realtime(Instant::now);
        ReadMoment { mono, real_ns }
    }

    /// When a datagram stamped `(sec, nsec)` arrived; `None` when the stamp cannot be right:
    /// after the read (the realtime clock stepped back) or older than `max_age` (stepped
    /// forward, or a socket nobody read for that long).
    pub fn arrival(&self, stamp: (i64, i64), max_age: Duration) -> Option<Instant> {
        let age = stamp_age_ns(self.real_ns, stamp);
        if age < 0 || age > max_age.as_nanos() as i128 {
            return None;
        }
        self.mono.checked_sub(Duration::from_nanos(age as u64))
    }
}

/// `mono()` (a monotonic reading) and CLOCK_REALTIME at the same moment: the midpoint of two
/// realtime readings around it. A step between them (the second reading earlier than the
/// first) leaves the later reading as the better one.
pub fn with_realtime<T>(mono: impl FnOnce() -> T) -> (T, i128) {
    let r1 = realtime_ns();
    let m = mono();
    let r2 = realtime_ns();
    (m, if r2 >= r1 { r1 + (r2 - r1) / 2 } else { r2 })
}

/// How long before `real_ns` (CLOCK_REALTIME, unix ns) a kernel stamp `(sec, nsec)` was
/// taken; negative when the stamp is later (the clock stepped back in between).
pub fn stamp_age_ns(real_ns: i128, (sec, nsec): (i64, i64)) -> i128 {
    real_ns - (sec as i128 * 1_000_000_000 + nsec as i128)
}

/// A UTC timestamp safe for directory names: `20261125T035400Z`.
pub fn stamp_for_path(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_stamp_becomes_an_instant_by_its_age() {
        let at = ReadMoment {
            mono: Instant::now(),
            real_ns: 1_700_000_000_000_000_000,
        };
        let max = Duration::from_secs(10);
        // Arrived 1.5 ms before the read.
        let got = at.arrival((1_699_999_999, 998_500_000), max).unwrap();
        assert_eq!(at.mono - got, Duration::from_micros(1500));
        // After the read: the realtime clock stepped back in between.
        assert_eq!(at.arrival((1_700_000_000, 1), max), None);
        // Older than the bound: stepped forward, or never read.
        assert_eq!(at.arrival((1_699_999_989, 0), max), None);
    }

    #[test]
    fn labels_follow_monotonic_offsets() {
        let e = Epoch::now();
        let later = e.mono + Duration::from_millis(1500);
        let d = e.wall_of(later) - e.wall;
        assert_eq!(d.num_milliseconds(), 1500);
        assert!(e.label(later).ends_with('Z'));
        let back = e.instant_of_mono_ns(e.mono_ns + 2_000_000);
        assert_eq!(back - e.mono, Duration::from_millis(2));
    }
}
