//! The one exit-code policy of imsload, imsprobe and imshss (README, "Exit codes"):
//!
//! - 0: the run finished and nothing failed;
//! - 1: the run finished and failures were observed (each tool says what counts: failed
//!   registrations and calls for imsload, failed trials for `imsprobe trials`);
//! - 2: usage or setup error: bad flags, a bad profile, a file that cannot be read, an address
//!   that cannot be bound. Nothing was measured, so there is nothing to judge.
//!
//! A binary's library call returns `anyhow::Result<Outcome>`; every error is of the third kind
//! (clap's own parse errors already exit 2), so scripts can tell "the target failed" (1) from
//! "the tool never ran" (2).
//!
//! Errors, one style. A module whose callers branch on the kind of failure, or that is a
//! layer of its own with several kinds, has a `thiserror` enum: the codecs and protocol layers
//! (`hex`, `diameter`, `sip::{aka, auth, secagree}`, `ua::security`, `ipsec::xfrm`,
//! `hss::vectors`, `probe::diameter`) and what users hand in as flags, files and reports
//! (`load::{population, shard, merge, stats}`, `profile::{schema, condition, monitor}`,
//! `probe::targets`). Everything else (the apps, settings, files written, sockets opened at
//! start) returns `anyhow::Result`, with `.context()` naming the flag or file. No
//! `Result<_, String>`. An enum keeps its cause in a field called `err`, not `source`, when its
//! message already prints it: [`code`] prints the whole chain (`{:#}`), which would say it
//! twice. Clap value parsers return whole messages, never context chains: clap prints only the
//! outermost one. Every message says what was wrong and how to put it right.

/// How a run that did not fail to start ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing failed (exit 0).
    Ok,
    /// Failures were observed (exit 1).
    Failures,
}

impl Outcome {
    /// `Failures` when `failed`.
    pub fn failures_if(failed: bool) -> Outcome {
        if failed {
            Outcome::Failures
        } else {
            Outcome::Ok
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::Failures => 1,
        }
    }
}

/// Exit code of a usage or setup error.
pub const USAGE: u8 = 2;

/// The process exit code of a binary's result; an error is printed as `tool: error: …` with its
/// whole chain of causes.
pub fn code(tool: &str, result: anyhow::Result<Outcome>) -> std::process::ExitCode {
    std::process::ExitCode::from(match result {
        Ok(o) => o.code(),
        Err(e) => {
            eprintln!("{tool}: error: {e:#}");
            USAGE
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_policy() {
        assert_eq!(Outcome::failures_if(false).code(), 0);
        assert_eq!(Outcome::failures_if(true).code(), 1);
        assert_eq!(
            code("t", Err(anyhow::anyhow!("cannot open x"))),
            std::process::ExitCode::from(2)
        );
        assert_eq!(
            code("t", Ok(Outcome::Failures)),
            std::process::ExitCode::from(1)
        );
    }
}
