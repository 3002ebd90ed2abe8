//! Migration trials (`imsprobe trials`): the reference study's experiment as one command. Per
//! trial: probe the migrating element (and optionally the others), start a load, wait for a
//! threshold on a monitor (or a fixed delay), run the migration command, keep probing, stop
//! everything, and put the hypervisor's figures beside the gaps the probes measured. Then the
//! next trial, in the other direction when a `--back` command is given.
//!
//! # Layout
//! - [`runner`]: the trial loop (probe engine in process on a thread, load and migration
//!   commands as child processes in their own process groups, Ctrl-C path) and the per-trial
//!   record `trial.json`.
//! - [`hypervisor`]: parsers of what migration commands print (lab JSON with QMP
//!   `query-migrate`, bare QMP, `virsh domjobinfo --completed`, `xl migrate`), auto-detected.
//! - [`table`]: one row per trial, mean/median/min/max/stddev rows, trend lines; CSV, JSON and
//!   Markdown.
//! - [`plot`]: per-trial bars with a trend line (data, migration time, downtime) and the
//!   scatter of hypervisor downtime against the SIP gap, as SVG and PNG.
//!
//! Output layout and definitions: `docs/trials.md`.

pub mod hypervisor;
pub mod plot;
pub mod runner;
pub mod table;

pub use runner::{
    kill_children, parse_monitor, run, LoadSpec, StartRule, TrialsConfig, TrialsOutcome,
    TriggerSpec,
};
