//! What `imsprobe trials` writes per trial (`trial.json`): the records of the trigger, each
//! element's migration, the hypervisor's events on the probe timeline, the gaps picked per
//! target and layer, the load and the clock check. Plain data; the runner fills it.

use super::hypervisor::HvReport;
use super::table::TrialRow;
use crate::probe::report::GapOut;
use crate::probe::Layer;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use std::fmt;

/// How a trial, or one element's migration in it, ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Ok,
    /// The migration command failed, was killed or timed out, or the hypervisor reported a
    /// failure; statistics leave it out.
    Failed,
    /// Ctrl-C during the trial.
    Interrupted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which command a trial ran: odd trials `--migrate`, even trials `--back` (when given).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Migrate,
    Back,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Migrate => "migrate",
            Direction::Back => "back",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Wall-clock label (RFC 3339 UTC, ns).
pub fn label(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TriggerOut {
    /// `delay` or `threshold`.
    pub kind: String,
    pub condition: Option<String>,
    /// The threshold held (always true for a delay).
    pub fired: bool,
    /// The threshold did not hold within the timeout; the migration ran anyway.
    pub timed_out: bool,
    pub waited_s: f64,
    pub samples: u32,
    pub last_value: Option<f64>,
    /// The first error of the monitor, if any (the sample is then missing).
    pub monitor_error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct MigrationOut {
    pub command: String,
    pub exit_code: Option<i32>,
    /// The signal that ended the command, if one did.
    pub signal: Option<i32>,
    /// Killed after `--migrate-timeout`.
    pub timed_out: bool,
    pub started_utc: String,
    pub ended_utc: String,
    /// On the probe timeline (seconds since the probes' t = 0, as the probe report's gaps).
    pub start_s: f64,
    pub end_s: f64,
    /// End − start by the monotonic clock.
    pub duration_ms: f64,
    pub stdout: String,
    pub stderr: String,
}

/// A hypervisor event placed on the probe timeline.
#[derive(Clone, Debug, Serialize)]
pub struct EventOut {
    pub host: String,
    pub event: String,
    pub utc: String,
    /// Seconds since the probes' t = 0.
    pub t_s: f64,
    /// ± this much on `t_s`: the wall-clock ↔ monotonic conversion (see [`ClockOut`]) plus the
    /// event stamps' 1 µs resolution.
    pub bound_ms: f64,
}

/// The VM's real pause: the source's STOP to the destination's RESUME.
#[derive(Clone, Debug, Serialize)]
pub struct PauseOut {
    pub stop_s: f64,
    pub resume_s: f64,
    /// RESUME − STOP, both stamped by one host clock (1 µs resolution each).
    pub ms: f64,
    /// Placement of both edges on the probe timeline.
    pub bound_ms: f64,
    /// The lab's own figure, when it printed one.
    pub reported_ms: Option<f64>,
}

/// How well wall-clock times map onto the probe timeline during this trial.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClockOut {
    /// (wall − wall₀) − (mono − mono₀) at the trial's end: a clock step or slew since the
    /// anchor.
    pub drift_us: f64,
    /// Time taken to read the (wall, mono) pair at the end (µs).
    pub read_us: f64,
    /// The resulting bound on an event's placement (ms).
    pub bound_ms: f64,
}

/// The gaps of one layer that concern the migration.
#[derive(Clone, Debug, Serialize)]
pub struct LayerPick {
    pub layer: Layer,
    /// The largest reply gap overlapping the migration window; `None` when none reached
    /// `--min-gap`.
    pub reply_gap: Option<GapOut>,
    /// The largest loss window overlapping it.
    pub loss_window: Option<GapOut>,
    /// Reply gaps of the run outside the migration window (noise, or the load's effect).
    pub other_reply_gaps: usize,
    pub availability_pct: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetPick {
    pub target: String,
    pub dir: String,
    pub layers: Vec<LayerPick>,
}

/// The `--data-cmd` counter around the migration.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CounterOut {
    pub command: String,
    pub before: Option<f64>,
    pub after: Option<f64>,
    /// after − before, when both were read and it did not go backwards.
    pub bytes: Option<f64>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadOut {
    pub command: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Killed after `--load-drain`.
    pub killed: bool,
    /// It ended on its own before the trial's end (an error, or a profile that finished).
    pub ended_early: bool,
    pub report: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub reg_attempts: Option<u64>,
    pub reg_failed: Option<u64>,
    pub calls_attempted: Option<u64>,
    pub calls_failed: Option<u64>,
    pub late_requests: Option<u64>,
    /// `--media` in the load: the longest silence any call leg heard (its streams up across a
    /// migration hear the migration), the share of packets lost, the lowest MOS of a stream.
    pub media_gap_max_ms: Option<f64>,
    pub media_loss_pct: Option<f64>,
    pub media_mos_min: Option<f64>,
    pub rrd_max_ms: Option<f64>,
    pub srd_max_ms: Option<f64>,
    /// The transactions' timeout (64·T1) of the load's settings, which places a timed-out
    /// request back at its send time (see [`super::users`]).
    pub transaction_timeout_s: Option<f64>,
    /// The per-second series the steps' users figures come from, when the load wrote one.
    pub series: Option<String>,
    /// `--media-log`: one line per call leg's stream, whose longest gap each step places.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_log: Option<String>,
}

/// What the users lost while one element moved: the load's series over the step's window,
/// from its migration's start to `after` past its end (see [`super::users`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UsersOut {
    /// The window, in s on the probe timeline.
    pub from_s: f64,
    pub to_s: f64,
    /// Failed or timed-out registrations (initial and re-registrations).
    pub reg_failed: u64,
    /// Failed or timed-out calls.
    pub calls_failed: u64,
    /// Our retransmissions: requests not answered within T1.
    pub late_requests: u64,
    /// Media gaps that ended in the window (`--media`).
    pub media_gaps: Option<u64>,
    /// From the load's `--media-log`: the call legs whose longest silence fell in the window
    /// (its middle), the longest and the median of those silences, and when the first and the
    /// last of them began (s on the probe timeline): where the users' audio stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaSilence>,
}

/// The call legs' silences that began in one step's window (see [`UsersOut::media`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MediaSilence {
    /// Streams up at the window's start (they could have heard it).
    pub streams_up: u64,
    /// Streams whose longest silence (over three packet times) fell in the window.
    pub streams_hit: u64,
    pub gap_max_ms: f64,
    pub gap_median_ms: f64,
    pub first_at_s: f64,
    pub last_at_s: f64,
}

/// `trial.json`: one trial, whose steps migrate the elements one after another.
#[derive(Clone, Debug, Serialize)]
pub struct TrialRecord {
    pub trial: u32,
    pub direction: Direction,
    /// Interrupted on Ctrl-C, else failed when a step failed, else ok.
    pub status: Status,
    /// Every failed step's reason (prefixed by its element in a sequence).
    pub failure: Option<String>,
    pub started_utc: String,
    pub ended_utc: String,
    /// Fired once, before the first element's migration.
    pub trigger: Option<TriggerOut>,
    /// One per element, in migration order; a step that did not run (Ctrl-C) is there too,
    /// with no migration.
    pub steps: Vec<StepRecord>,
    pub load: Option<LoadOut>,
    pub clock: ClockOut,
    pub warnings: Vec<String>,
}

/// One element's migration within a trial, and what every probed target saw during it.
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    /// 1-based position in the sequence.
    pub step: u32,
    /// The migrated element (its target name).
    pub element: String,
    pub status: Status,
    pub failure: Option<String>,
    pub migration: Option<MigrationOut>,
    pub hypervisor: Option<HvReport>,
    pub data_counter: Option<CounterOut>,
    pub events: Vec<EventOut>,
    pub vm_pause: Option<PauseOut>,
    /// The migrated element first, then every other probed target, each with the gaps that
    /// overlap this step's migration.
    pub targets: Vec<TargetPick>,
    /// What the users lost in this step's window; `None` without the load's series.
    pub users: Option<UsersOut>,
    pub row: TrialRow,
}
