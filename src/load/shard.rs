//! One shard of a run spread over several generators (`--shard I/N`, or `--shards N` with the
//! index from a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX`): which users are its own,
//! what share of every rate and count it offers, and when it starts (`--start-at`). Shards do
//! not talk to each other: they agree by computing the same split from the same arguments, and
//! `imsload merge` adds their reports up afterwards ([`super::merge`]).

use super::report::SeriesRow;
use super::stats::EncodedDelays;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::time::Duration;

/// The environment variable a Kubernetes Indexed Job sets to each pod's index (0-based).
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// Shard `index` of `count` (0-based index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// Shards above this are surely a typo (and their slices of any real population empty).
const MAX_SHARDS: u32 = 10_000;

/// What is wrong with a shard's arguments (`--shard`, `--shards` with [`INDEX_ENV`],
/// `--start-at`), each with the form that works.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("{0} shards: give between 1 and {MAX_SHARDS}")]
    Count(u32),
    #[error(
        "shard index {index} is not below the shard count {count}: indices run 0..{} (as Kubernetes numbers an Indexed Job's pods)",
        .count - 1
    )]
    IndexTooHigh { index: u32, count: u32 },
    #[error("{0:?}: give INDEX/COUNT, e.g. 0/4 (indices from 0)")]
    NotIndexCount(String),
    #[error("{given:?}: the index {index:?} is not a whole number ≥ 0")]
    BadIndex { given: String, index: String },
    #[error("{given:?}: the count {count:?} is not a whole number ≥ 1")]
    BadCount { given: String, count: String },
    #[error(
        "--shards {0} takes this shard's index from {INDEX_ENV}, which is not set \
         (Kubernetes sets it in an Indexed Job's pods); elsewhere give --shard INDEX/{0}"
    )]
    NoIndexEnv(u32),
    #[error("{INDEX_ENV}={0:?} is not a whole number ≥ 0 (the pod's completion index)")]
    IndexEnvNotNumber(String),
    #[error("{INDEX_ENV}={value}: {err}")]
    IndexEnv { value: String, err: Box<ShardError> },
    #[error("{given:?} is not an RFC 3339 time ({err}); e.g. 2026-03-01T12:00:00Z, or `date -u -d '+2 min' +%FT%TZ`")]
    StartAt {
        given: String,
        err: chrono::ParseError,
    },
    #[error(
        "--start-at {} is {} ahead; more than {} is taken for a mistake",
        .start.to_rfc3339_opts(SecondsFormat::Secs, true),
        humantime::format_duration(*.ahead),
        humantime::format_duration(MAX_WAIT)
    )]
    TooFarAhead {
        start: DateTime<Utc>,
        ahead: Duration,
    },
    #[error("--start-at: the wall clock did not reach the start instant")]
    ClockStalled,
}

impl Shard {
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if count == 0 || count > MAX_SHARDS {
            return Err(ShardError::Count(count));
        }
        if index >= count {
            return Err(ShardError::IndexTooHigh { index, count });
        }
        Ok(Shard { index, count })
    }

    /// `--shard I/N`.
    pub fn parse(s: &str) -> Result<Shard, ShardError> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| ShardError::NotIndexCount(s.into()))?;
        let i: u32 = i.trim().parse().map_err(|_| ShardError::BadIndex {
            given: s.into(),
            index: i.into(),
        })?;
        let n: u32 = n.trim().parse().map_err(|_| ShardError::BadCount {
            given: s.into(),
            count: n.into(),
        })?;
        Shard::new(i, n)
    }

    /// `--shards N`: the index from [`INDEX_ENV`] as read (`None`: unset).
    pub fn from_env(count: u32, index: Option<&str>) -> Result<Shard, ShardError> {
        let Some(v) = index else {
            return Err(ShardError::NoIndexEnv(count));
        };
        let i: u32 = v
            .trim()
            .parse()
            .map_err(|_| ShardError::IndexEnvNotNumber(v.into()))?;
        Shard::new(i, count).map_err(|e| ShardError::IndexEnv {
            value: v.into(),
            err: Box::new(e),
        })
    }

    /// This shard's positions in a population of `n` users: contiguous blocks, sizes differing
    /// by one at most, in index order, together covering `0..n` with no overlap. Contiguous so
    /// that a shard's users read as a range (`user0001..user0250`) in the target's tables.
    pub fn range(&self, n: usize) -> Range<usize> {
        let (i, k) = (self.index as usize, self.count as usize);
        (i * n / k)..((i + 1) * n / k)
    }

    /// This shard's users (pattern or CSV rows alike: the slice is by position).
    pub fn slice<T>(&self, mut all: Vec<T>) -> Vec<T> {
        let r = self.range(all.len());
        all.truncate(r.end);
        all.drain(..r.start);
        all
    }

    /// This shard's share of a rate: shards' rates add up to it exactly. N Poisson streams at
    /// λ/N, independent (their seeds differ), superpose to one Poisson stream at λ.
    pub fn rate(&self, total: f64) -> f64 {
        total / self.count as f64
    }

    /// This shard's share of a count (`--calls`, `--max-calls`): whole numbers that add up to
    /// `total`, the first `total % N` shards one more.
    pub fn count_share(&self, total: u64) -> u64 {
        let n = self.count as u64;
        total / n + u64::from((self.index as u64) < total % n)
    }

    /// A seed of this shard's own: shards with one `--seed` would otherwise draw the same gaps
    /// and hold times, and their arrivals would come in lockstep, not as independent streams.
    pub fn seed(&self, seed: u64) -> u64 {
        seed.wrapping_add((self.index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
}

/// `--start-at`: an RFC 3339 UTC instant (`2026-03-01T12:00:00Z`).
pub fn parse_start_at(s: &str) -> Result<DateTime<Utc>, ShardError> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|err| ShardError::StartAt {
            given: s.into(),
            err,
        })
}

/// The longest a shard waits for `--start-at`: further ahead is taken for a mistake.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// How long to wait from `now` until `start`: `Ok(None)` when it has passed (the shard is late
/// by the returned amount in [`late_by`]).
pub fn wait_for(start: DateTime<Utc>, now: DateTime<Utc>) -> Result<Option<Duration>, ShardError> {
    let ahead = start - now;
    if ahead <= chrono::Duration::zero() {
        return Ok(None);
    }
    let d = ahead.to_std().unwrap_or_default();
    if d > MAX_WAIT {
        return Err(ShardError::TooFarAhead {
            start,
            ahead: Duration::from_secs(d.as_secs()),
        });
    }
    Ok(Some(d))
}

/// Seconds by which `now` is past `start` (0 when not past).
pub fn late_by(start: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (now - start).to_std().map_or(0.0, |d| d.as_secs_f64())
}

/// Sleeps until the wall clock reads `start` (blocking; before the run starts). Sleeps in
/// steps of at most a second and reads the wall clock again after each, so that an NTP step
/// while waiting moves the start with the clock every other shard reads. Returns how late the
/// start was (0 when on time).
pub fn sleep_until(start: DateTime<Utc>) -> Result<f64, ShardError> {
    // Bounded: MAX_WAIT in steps of ≤ 1 s, plus slack for steps cut short.
    for _ in 0..(MAX_WAIT.as_secs() + 100) {
        match wait_for(start, Utc::now())? {
            Some(d) => std::thread::sleep(d.min(Duration::from_secs(1))),
            None => return Ok(late_by(start, Utc::now())),
        }
    }
    Err(ShardError::ClockStalled)
}

/// What the runner needs to know of a shard: who it is and how its start went.
#[derive(Clone, Debug)]
pub struct ShardRun {
    pub shard: Shard,
    /// `--start-at` as given (RFC 3339 UTC), if any.
    pub start_at: Option<DateTime<Utc>>,
    /// Seconds the run started after `start_at` (0: on time).
    pub late_s: f64,
}

/// A start later than this is named by `imsload merge`: past it, a shard's rows fall into the
/// next second of the merged series.
pub const LATE_S: f64 = 1.0;

/// What a sharded run's report adds: who it was, when it started, and its per-second series
/// with each second's histograms, so that `imsload merge` can add seconds up exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardSection {
    pub index: u32,
    pub count: u32,
    /// `--start-at` as given (RFC 3339), if any.
    #[serde(default)]
    pub start_at: Option<String>,
    /// How late the run started against `start_at`, seconds (0: on time or no `start_at`).
    #[serde(default)]
    pub late_s: f64,
    pub series: Vec<ShardRow>,
}

/// One second of a shard: the row as its series has it, and that second's histograms.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardRow {
    /// Row number from the run's start (1 for the first second); the last, partial second
    /// (phase "done") follows the last whole one.
    pub second: u64,
    pub row: SeriesRow,
    pub histograms: EncodedDelays,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_disjoint_and_cover_the_population() {
        for n in [0usize, 1, 2, 3, 7, 10, 100, 1001] {
            for k in [1u32, 2, 3, 4, 8, 13] {
                let mut seen = vec![0u32; n];
                let mut sizes = Vec::new();
                for i in 0..k {
                    let s = Shard::new(i, k).unwrap();
                    let part = s.slice((0..n).collect::<Vec<_>>());
                    assert_eq!(part, s.range(n).collect::<Vec<_>>());
                    sizes.push(part.len());
                    for u in part {
                        seen[u] += 1;
                    }
                }
                assert!(
                    seen.iter().all(|c| *c == 1),
                    "{n} users over {k} shards: every user in exactly one shard ({seen:?})"
                );
                let (min, max) = (sizes.iter().min(), sizes.iter().max());
                assert!(max.unwrap() - min.unwrap() <= 1, "{n}/{k}: {sizes:?}");
            }
        }
        // Contiguous and in order: shard 1 of 4 of user0001..user0010 holds 0003..0005.
        let users: Vec<String> = (1..=10).map(|i| format!("user{i:04}")).collect();
        assert_eq!(
            Shard::new(1, 4).unwrap().slice(users),
            ["user0003", "user0004", "user0005"]
        );
    }

    #[test]
    fn rates_and_counts_divide_into_shares_that_add_up() {
        for k in [1u32, 3, 4, 7] {
            let shards: Vec<Shard> = (0..k).map(|i| Shard::new(i, k).unwrap()).collect();
            for total in [0u64, 1, 5, 199, 200, 10_001] {
                let sum: u64 = shards.iter().map(|s| s.count_share(total)).sum();
                assert_eq!(sum, total, "{total} over {k}");
            }
            for rate in [0.0, 0.5, 20.0, 1234.5] {
                let sum: f64 = shards.iter().map(|s| s.rate(rate)).sum();
                assert!((sum - rate).abs() < 1e-9, "{rate} over {k}: {sum}");
            }
            let seeds: std::collections::HashSet<u64> = shards.iter().map(|s| s.seed(1)).collect();
            assert_eq!(seeds.len(), k as usize, "each shard draws its own stream");
        }
        assert_eq!(Shard::new(0, 4).unwrap().count_share(6), 2);
        assert_eq!(Shard::new(3, 4).unwrap().count_share(6), 1);
    }

    #[test]
    fn shard_arguments_are_checked_with_reasons() {
        assert_eq!(Shard::parse("2/8"), Ok(Shard { index: 2, count: 8 }));
        assert!(Shard::parse("8/8")
            .unwrap_err()
            .to_string()
            .contains("not below"));
        assert!(Shard::parse("1/0")
            .unwrap_err()
            .to_string()
            .contains("between 1"));
        assert!(Shard::parse("two/8")
            .unwrap_err()
            .to_string()
            .contains("index"));
        assert!(Shard::parse("2")
            .unwrap_err()
            .to_string()
            .contains("INDEX/COUNT"));
        assert_eq!(
            Shard::from_env(4, Some("3")),
            Ok(Shard { index: 3, count: 4 })
        );
        assert!(Shard::from_env(4, None)
            .unwrap_err()
            .to_string()
            .contains(INDEX_ENV));
        assert!(Shard::from_env(4, Some("4"))
            .unwrap_err()
            .to_string()
            .contains("JOB_COMPLETION_INDEX=4"));
        assert!(Shard::from_env(4, Some("-1")).is_err());
    }

    #[test]
    fn start_at_waits_for_the_instant_or_reports_lateness() {
        let t = parse_start_at("2026-03-01T12:00:00Z").unwrap();
        let before = t - chrono::Duration::milliseconds(1500);
        assert_eq!(wait_for(t, before), Ok(Some(Duration::from_millis(1500))));
        let after = t + chrono::Duration::milliseconds(2500);
        assert_eq!(wait_for(t, after), Ok(None));
        assert!((late_by(t, after) - 2.5).abs() < 1e-9);
        assert_eq!(late_by(t, before), 0.0);
        assert!(wait_for(t, t - chrono::Duration::days(2))
            .unwrap_err()
            .to_string()
            .contains("mistake"));
        assert!(parse_start_at("12:00")
            .unwrap_err()
            .to_string()
            .contains("RFC 3339"));
        // An offset is read and turned into UTC.
        assert_eq!(parse_start_at("2026-03-01T13:00:00+01:00").unwrap(), t);
    }
}
