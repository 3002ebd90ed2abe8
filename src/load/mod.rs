//! The load engine behind `imsload`.
//!
//! - [`population`]: who the users are (pattern or CSV).
//! - [`aggregate`]: the workers' intervals summed into seconds: rows, rates to offer, the
//!   stop when a plan is over (sans IO, no clock).
//! - [`config`]: the settings of one worker, the scenario mix.
//! - [`control`]: the rate of each second: a profile's plan with thresholds, or a capacity
//!   search (sans IO, no clock).
//! - [`core`]: the sans-IO user agent (register, call, answer) of one worker.
//! - [`stats`]: counters, RFC 6076 delay histograms, intervals that merge by addition.
//! - [`report`]: final text/JSON report and the per-second series.
//! - [`shard`]: one shard of a run spread over generators: its users, its share of the rates,
//!   its start (`--shard`, `--start-at`).
//! - [`merge`]: shards' reports made into one (`imsload merge`), percentiles exact.
//! - [`plot`]: the run over time and a capacity search as SVG/PNG beside the report.
//! - [`runner`]: sockets, workers, live progress, shutdown.
//! - [`args`]: `imsload`'s command line as clap parses it (low-level: what the user typed).
//! - [`settings`]: those arguments and a profile resolved once into typed [`settings::Settings`]
//!   (command line, then profile, then defaults; a shard's share); `--dry-run` prints them.
//! - [`app`]: the `imsload` command (a run, `serve`, `merge`) from arguments to an exit outcome.

pub mod aggregate;
pub mod app;
pub mod args;
pub mod config;
pub mod control;
pub mod core;
pub mod merge;
pub mod metrics;
pub mod plot;
pub mod population;
pub mod report;
pub mod runner;
pub mod settings;
pub mod shard;
pub mod stats;

#[cfg(test)]
mod sim_tests;
