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

/// A UTC timestamp safe for directory names: `20261125T035400Z`.
pub fn stamp_for_path(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
