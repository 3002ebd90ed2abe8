//! What a run knows while it goes on, per target and layer: the live gap state (printed as
//! "gap OPEN"/"gap CLOSED", and the `--metrics` gauges) and the running counts of judged
//! probes with their RTT histogram (the `--metrics` counters).
//!
//! Probes are judged by [`analysis::verdict`], the report's own rule, once their timeout has
//! passed (plus a second, for replies in flight), so the live counts never judge a probe the
//! report would call pending; after the run the rest are judged with the report's end.

use super::analysis::{self, Params};
use super::net::ProbeClock;
use super::table::LayerTable;
use super::Outcome;
use hdrhistogram::Histogram;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Probes counted by how they ended; the report's `summary` names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Judged {
    pub ok: u64,
    pub ok_after_timeout: u64,
    pub failed: u64,
    pub lost: u64,
    pub send_errors: u64,
    pub late: u64,
    pub pending: u64,
}

/// Live state of one layer of one target.
pub struct Live {
    pub table: Arc<LayerTable>,
    /// The target's name.
    pub name: String,
    open_since: Option<i64>,
    /// The first probe not yet judged.
    cursor: u64,
    pub judged: Judged,
    /// RTTs of good replies, ns.
    pub rtt: Histogram<u64>,
}

/// Replies may still be on their way this long after a probe's timeout.
const SETTLE_NS: i64 = 1_000_000_000;

/// Prints a line of the live view (the run's start, progress, gaps opening and closing) on
/// stderr, stamped by the probe's own clock as the records are. It is the run's output, not a
/// diagnostic (those go through `tracing`), so `RUST_LOG` does not hide it; `--quiet` does.
pub(crate) fn line(clock: &ProbeClock, msg: &str) {
    eprintln!("[{}] {msg}", clock.time_base().label(clock.now_ns()));
}

impl Live {
    pub fn new(table: Arc<LayerTable>, name: String) -> Live {
        Live {
            table,
            name,
            open_since: None,
            cursor: 0,
            judged: Judged::default(),
            // 1 ns .. 100 s at 3 significant digits.
            rtt: Histogram::new_with_bounds(1, 100_000_000_000, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    /// Updates the gap state at `now` (ns since the time base); says what changed unless
    /// `quiet`.
    pub fn poll(&mut self, clock: &ProbeClock, now: i64, min_gap: i64, quiet: bool) {
        let last = self.table.last_good_ns.load(Ordering::Acquire);
        let first_sent = self.table.first_sent_ns.load(Ordering::Acquire);
        if first_sent == i64::MIN {
            return;
        }
        let reference = if last == i64::MIN { first_sent } else { last };
        let tb = clock.time_base();
        if let Some(since) = self.open_since {
            if last != i64::MIN && last > since {
                if !quiet {
                    line(
                        clock,
                        &format!(
                            "{} {}: gap CLOSED at {} after ~{:.1} ms (live estimate; exact figures in the report)",
                            self.name,
                            self.table.layer.as_str(),
                            tb.label(last),
                            (last - since) as f64 / 1e6
                        ),
                    );
                }
                self.open_since = None;
            }
        } else if now - reference > min_gap && !self.table.is_empty() {
            if !quiet {
                line(
                    clock,
                    &format!(
                        "{} {}: gap OPEN: no good reply since {}",
                        self.name,
                        self.table.layer.as_str(),
                        tb.label(reference)
                    ),
                );
            }
            self.open_since = Some(reference);
        }
    }

    /// How long the open gap has lasted at `now`, 0 when none is open.
    pub fn open_ns(&self, now: i64) -> i64 {
        self.open_since.map_or(0, |s| (now - s).max(0))
    }

    /// Judges the probes whose timeout (and the settling time) has passed by `now`.
    pub fn settle(&mut self, p: &Params, now: i64) {
        let until = now - p.timeout_ns - SETTLE_NS;
        self.judge(&Params { end_ns: now, ..*p }, |sent| sent <= until);
    }

    /// Judges the rest, as the report does at the run's end (`p.end_ns`).
    pub fn finish(&mut self, p: &Params) {
        self.judge(p, |_| true);
    }

    fn judge(&mut self, p: &Params, due: impl Fn(i64) -> bool) {
        let (j, rtt) = (&mut self.judged, &mut self.rtt);
        self.cursor = self.table.visit(self.cursor, |r| {
            if !due(r.sent_ns) {
                return false;
            }
            let v = analysis::verdict(r, p);
            match r.outcome {
                Outcome::Ok if r.received_ns.is_some() => {
                    if v.ok {
                        j.ok += 1;
                    } else {
                        j.ok_after_timeout += 1;
                    }
                    if let Some(t) = r.rtt_ns() {
                        rtt.saturating_record((t as u64).max(1));
                    }
                }
                Outcome::Failed if r.received_ns.is_some() => j.failed += 1,
                Outcome::SendError => j.send_errors += 1,
                _ => {}
            }
            j.lost += u64::from(v.lost);
            j.pending += u64::from(v.pending);
            j.late += u64::from(v.late);
            true
        });
    }
}
