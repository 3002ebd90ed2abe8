//! One live run, start to files: [`RunConfig`] says what to probe and how, [`run`] drives a
//! [`Session`] through its steps.
//!
//! Stop path: the pacers end at the deadline or when the [`Trigger`] fires (Ctrl-C); replies are
//! then awaited for `timeout` (less when every probe is answered), receivers and captures are
//! stopped, the pcap file is flushed, and the JSON, CSV, SVG and PNG are written.

use super::net::ProbeClock;
use super::report::Report;
use super::session::Session;
use super::targets::Target;
use super::Layer;
use crate::shutdown::Trigger;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub targets: Vec<Target>,
    /// The layers chosen for every target; empty: each target's own ([`Target::layers`]).
    pub layers: Vec<Layer>,
    /// Origin-Realm of the Diameter probe.
    pub diameter_realm: String,
    /// Probes per second per layer.
    pub rate: f64,
    pub duration: Option<Duration>,
    pub timeout: Duration,
    pub late_rtt: Duration,
    pub min_gap: Duration,
    /// Output directory; with several targets each gets a subdirectory. Default
    /// `captures/<timestamp>-<target>/`.
    pub out: Option<PathBuf>,
    pub capture: bool,
    pub iface: Option<String>,
    pub spin: Duration,
    pub rt_priority: Option<i32>,
    pub plot: bool,
    pub quiet: bool,
    /// `--metrics`: a page a second while the run goes on.
    pub metrics: Option<Arc<super::metrics::Exporter>>,
    /// `--hep`: mirror each target's SIP probe to a Homer collector (one sender per target).
    pub hep: Option<crate::hep::mirror::HepConfig>,
}

pub struct TargetResult {
    pub target: Target,
    pub dir: PathBuf,
    pub report: Report,
}

/// Runs the probes until `trigger` fires or the duration ends, and writes every file.
pub fn run(cfg: &RunConfig, trigger: &Trigger) -> anyhow::Result<Vec<TargetResult>> {
    run_with_clock(cfg, trigger, ProbeClock::start())
}

/// [`run`] on a clock the caller made, so that it can place its own events (a migration
/// command's start and end) on the probes' time base exactly.
pub fn run_with_clock(
    cfg: &RunConfig,
    trigger: &Trigger,
    clock: ProbeClock,
) -> anyhow::Result<Vec<TargetResult>> {
    let mut session = Session::start(cfg, clock)?;
    session.watch(trigger);
    session.collect(trigger)
}
