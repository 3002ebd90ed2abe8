//! Load profiles (`profiles/*.toml`): the schema and its checks, threshold conditions, the plan a
//! profile expands to, and the monitors that watch the target's resources.
//!
//! - [`schema`]: the file format; errors name the field and the line.
//! - [`condition`]: `cpu > 90%`-style thresholds.
//! - [`plan`]: phases → rate segments (`imsload --profile X --dry-run`).
//! - [`monitor`]: process/cgroup figures from /proc and /sys, and parsers for command output
//!   (`xentop -b`, `virsh domstats`).

pub mod condition;
pub mod monitor;
pub mod plan;
pub mod schema;
