//! Migration trials (`imsprobe trials`): the reference study's experiment as one command. Per
//! trial: probe the migrating elements (and optionally others), start a load, wait for a
//! threshold on a monitor (or a fixed delay), run each element's migration command in turn
//! (the study's HSS → P-CSCF → I-CSCF → S-CSCF sequence), keep probing, stop everything, and
//! put the hypervisor's figures beside the gaps the probes measured, a row per element. Then
//! the next trial, in the other direction when `--back` commands are given.
//!
//! # Layout
//! - [`app`]: `imsprobe trials` from its arguments ([`crate::probe::args::TrialsArgs`]): the
//!   settings checked and built with no side effect, then the run and its exit outcome.
//! - [`runner`]: the trial loop (probe engine in process on a thread, load and migration
//!   commands as child processes in their own process groups, Ctrl-C path).
//! - [`record`]: what `trial.json` holds: the trial, and a step per migrated element.
//! - [`step`]: one element's migration judged: hypervisor report, events on the probe
//!   timeline, the gaps overlapping it per target and layer, verdict, table row.
//! - [`output`]: `trials.csv`, `trials.json`, `summary.md` and the figures, rewritten after
//!   every trial.
//! - [`hypervisor`]: parsers of what migration commands print (lab JSON with QMP
//!   `query-migrate`, bare QMP, `virsh domjobinfo --completed`, `xl migrate`), auto-detected.
//! - [`users`]: what the users lost while each element moved (the load's series cut into the
//!   steps' windows).
//! - [`study`]: our figures beside the reference study's (Ahkam, Munadi, Arif 2019), per element,
//!   with what differs between the two setups.
//! - [`table`]: one row per element per trial, mean/median/min/max/stddev rows, trend lines; CSV, JSON and
//!   Markdown.
//! - [`plot`]: per-trial bars with a trend line (data, migration time, downtime) and the
//!   scatter of hypervisor downtime against the SIP gap, as SVG and PNG.
//!
//! Output layout and definitions: `docs/trials.md`.

pub mod app;
pub mod hypervisor;
pub mod marks;
pub mod output;
pub mod plot;
pub mod record;
pub mod runner;
pub mod step;
pub mod study;
pub mod table;
pub mod users;

pub use runner::{
    default_load_target, run, Children, Element, LoadSpec, StartRule, TrialsConfig, TrialsOutcome,
    TriggerSpec,
};
