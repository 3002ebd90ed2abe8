//! Diagnostics: the library reports what happens through `tracing` events; each binary sets up
//! the one subscriber here, first thing in `main`.
//!
//! What a user sees by default is what the tools have always printed on stderr: warnings (a
//! worker that failed, a collector that went away) and the few progress lines an operator
//! follows (a trial's steps, a probe's start). `-v` adds debug events and the module each
//! line comes from, `-vv` everything; `RUST_LOG` (tracing's `EnvFilter` syntax, e.g.
//! `RUST_LOG=imsload::hep=debug`) overrides both.
//!
//! Lines are stamped in RFC 3339 UTC with nanoseconds, the form of every record the tools
//! write, so a log line can be matched to a record by its time. The stamp comes from one
//! monotonic-to-wall mapping per process ([`crate::clock::Epoch`]): a realtime step during a
//! run moves neither the records nor the log against each other.
//!
//! Output meant as the result (reports, summary tables, the per-second live view) is not a
//! diagnostic and is written directly, never through here.

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::EnvFilter;

/// How much to log: the count of `-v` flags given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verbosity(pub u8);

impl Verbosity {
    /// The filter when `RUST_LOG` is not set: this crate at info (debug with `-v`, trace with
    /// `-vv`); other crates at warn, so a dependency's chatter never reaches a user by default.
    fn default_filter(self) -> &'static str {
        match self.0 {
            0 => "warn,imsload=info",
            1 => "warn,imsload=debug",
            _ => "trace",
        }
    }
}

/// Sets up the process's subscriber (stderr). A second call (tests that run several mains in
/// one process) leaves the first in place.
pub fn init(verbosity: Verbosity) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => EnvFilter::try_new(&s).unwrap_or_else(|e| {
            // A bad RUST_LOG must not stop a run; say so and fall back to the default.
            eprintln!("RUST_LOG={s:?} is not a valid filter ({e}); using the default");
            EnvFilter::new(verbosity.default_filter())
        }),
        _ => EnvFilter::new(verbosity.default_filter()),
    };
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_timer(EpochTime(crate::clock::Epoch::now()))
        .with_target(verbosity.0 > 0)
        .try_init();
}

/// Stamps lines from the process's one clock mapping.
struct EpochTime(crate::clock::Epoch);

impl FormatTime for EpochTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        write!(w, "{}", self.0.label(std::time::Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filters_parse_and_grow_with_verbosity() {
        for v in 0..3 {
            let f = Verbosity(v).default_filter();
            EnvFilter::try_new(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
        assert!(Verbosity(0).default_filter().contains("imsload=info"));
        assert!(Verbosity(1).default_filter().contains("imsload=debug"));
    }
}
