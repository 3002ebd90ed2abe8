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
