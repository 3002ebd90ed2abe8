//! `imsprobe trials` from parsed arguments: [`settings`] checks them and builds the
//! [`TrialsConfig`] with no side effect (so that every refusal is unit-tested), [`main`] runs it
//! and judges the run.

use crate::exit::Outcome;
use crate::probe::args::TrialsArgs;
use crate::profile::condition::Condition;
use crate::profile::monitor::{Measure, Source};
use crate::shutdown::{self, Signals, Trigger};
use crate::trials::table::Status;
use crate::trials::{
    default_load_target, runner, Children, Element, LoadSpec, StartRule, TrialsConfig, TriggerSpec,
};
use std::path::PathBuf;
use std::time::Duration;

/// The trials' settings from the command line, checked; every error names the flag. Reads the
/// targets file and looks for the `--load` profile, but binds, starts and writes nothing: the
/// metrics endpoint is left out (`probe.metrics` is `None`) for [`main`] to bind.
pub fn settings(a: &TrialsArgs) -> anyhow::Result<TrialsConfig> {
    anyhow::ensure!(
        a.migrate.len() == a.target.len(),
        "{} --target and {} --migrate: give one --migrate per --target, in the same order",
        a.target.len(),
        a.migrate.len()
    );
    anyhow::ensure!(
        a.back.is_empty() || a.back.len() == a.target.len(),
        "{} --target and {} --back: give one --back per --target, or none",
        a.target.len(),
        a.back.len()
    );
    for (i, t) in a.target.iter().enumerate() {
        anyhow::ensure!(
            !a.target[..i].contains(t) && !a.also.contains(t),
            "--target {t} is given twice: each element is migrated once per trial"
        );
    }
    let specs: Vec<&String> = a.target.iter().chain(&a.also).collect();
    let probe = a
        .probe
        .run_config(&specs, a.rate, None, Duration::ZERO, true)?;
    anyhow::ensure!(a.trials >= 1, "--trials must be at least 1");
    for (t, m) in a.target.iter().zip(&a.migrate) {
        anyhow::ensure!(
            !m.trim().is_empty(),
            "--migrate is empty for {t}: give the command that migrates its VM"
        );
    }
    anyhow::ensure!(
        !a.monitor_interval.is_zero(),
        "--monitor-interval must be above zero"
    );
    let start = match (&a.trigger, &a.monitor) {
        (None, Some(_)) => anyhow::bail!(
            "--monitor without --trigger: say when to migrate, e.g. --trigger 'cpu > 90%'"
        ),
        (None, None) => StartRule::Delay(a.delay),
        (Some(text), Some(m)) => {
            let condition = Condition::parse(text).map_err(|e| anyhow::anyhow!("--trigger {e}"))?;
            let source = Source::from_spec(m, a.monitor_parser.as_deref())?;
            let measure = match condition.metric.as_str() {
                "cpu" => Measure::Cpu,
                "mem" | "memory" => Measure::Memory,
                other => {
                    anyhow::ensure!(
                        matches!(source, Source::Command { .. }),
                        "--trigger {text:?}: a process or cgroup monitor measures cpu or memory, not {other:?}"
                    );
                    Measure::Cpu
                }
            };
            StartRule::Trigger(TriggerSpec {
                text: text.clone(),
                condition,
                source,
                measure,
                delay: a.delay,
                interval: a.monitor_interval,
                timeout: a.trigger_timeout,
            })
        }
        // clap refuses this already; the arguments' fields are public, though.
        (Some(_), None) => anyhow::bail!("--trigger without --monitor: say what it reads"),
    };
    let load = match (&a.load, &a.load_cmd) {
        (Some(p), _) => {
            anyhow::ensure!(
                p.is_file(),
                "--load {}: no such profile file (profiles/*.toml)",
                p.display()
            );
            let imsload = a.imsload.clone().unwrap_or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|e| e.parent().map(|d| d.join("imsload")))
                    .filter(|p| p.is_file())
                    .unwrap_or_else(|| PathBuf::from("imsload"))
            });
            Some(LoadSpec::Profile {
                imsload,
                profile: p.clone(),
            })
        }
        (None, Some(c)) => Some(LoadSpec::Command(c.clone())),
        (None, None) => None,
    };
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("captures").join(format!(
            "{}-trials-{}",
            crate::clock::stamp_for_path(chrono::Utc::now()),
            probe.targets[..a.target.len()]
                .iter()
                .map(|t| t.path_name())
                .collect::<Vec<_>>()
                .join("+")
        ))
    });
    let elements: Vec<Element> = (0..a.target.len())
        .map(|i| Element {
            target: i,
            migrate: a.migrate[i].clone(),
            back: a.back.get(i).cloned(),
        })
        .collect();
    // Targets are resolved in the order given: the --target ones, then the --also ones.
    let load_target = match &a.load_target {
        Some(t) => specs.iter().position(|s| *s == t).ok_or_else(|| {
            anyhow::anyhow!(
                "--load-target {t}: not one of the probed elements; give one of {}",
                specs
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?,
        None => default_load_target(&probe.targets, &probe.layers, &elements),
    };
    Ok(TrialsConfig {
        probe,
        elements,
        trials: a.trials,
        pause: a.pause,
        before: a.before,
        after: a.after,
        start,
        migrate_timeout: a.migrate_timeout,
        load,
        load_target,
        load_drain: a.load_drain,
        data_cmd: a.data_cmd.clone(),
        out,
        plot: !a.probe.no_plot,
    })
}

/// Runs the trials; a trial that failed makes it [`Outcome::Failures`] (see [`outcome`]).
pub fn main(a: TrialsArgs) -> anyhow::Result<Outcome> {
    let mut cfg = settings(&a)?;
    cfg.probe.metrics = a.probe.metrics_exporter(true)?;
    let (trigger, _shutdown) = shutdown::channel();
    let children = Children::default();
    watch_signals(trigger.clone(), children.clone());
    let o = runner::run(&cfg, &trigger, &children)?;
    print!("{}", o.summary);
    println!("\nfiles: {}", o.dir.display());
    if cfg.probe.metrics.is_some() && !o.interrupted {
        crate::metrics::linger_blocking(a.probe.metrics_linger);
    }
    Ok(outcome(o.rows.iter().map(|r| r.status)))
}

/// How the rows' statuses end the run. Ctrl-C is the user stopping the run, not the target
/// failing: an interrupted row is no failure, so a run stopped early whose completed trials all
/// passed exits 0 (README, "Exit codes"). Any other status but `Ok` is one, a variant added
/// later included.
pub fn outcome(statuses: impl IntoIterator<Item = Status>) -> Outcome {
    Outcome::failures_if(
        statuses
            .into_iter()
            .any(|s| !matches!(s, Status::Ok | Status::Interrupted)),
    )
}

/// Ctrl-C for trials: the first ends the current trial cleanly; the second stops the children
/// (they have their own process groups, so the terminal's SIGINT does not reach them) and exits.
fn watch_signals(trigger: Trigger, children: Children) {
    shutdown::watch_signals_on_thread(
        trigger,
        Signals {
            stopping: "imsprobe trials: stopping: this trial is recorded as interrupted, then the table is written (Ctrl-C again to quit at once)",
            quitting: "imsprobe trials: second interrupt: stopping the load and migration commands, exiting without the table",
            last_rites: Box::new(move || children.terminate()),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::args::{Cli, Cmd};
    use clap::Parser;

    /// `imsprobe trials ARGS` as clap parses it.
    fn args(extra: &[&str]) -> TrialsArgs {
        let argv = ["imsprobe", "trials"].iter().chain(extra);
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Some(Cmd::Trials(a)),
                ..
            }) => *a,
            Ok(_) => panic!("{extra:?}: not the trials command"),
            Err(e) => panic!("{extra:?}: {e}"),
        }
    }

    fn accepted(extra: &[&str]) -> TrialsConfig {
        settings(&args(extra)).unwrap_or_else(|e| panic!("{extra:?}: {e:#}"))
    }

    fn refused(extra: &[&str]) -> String {
        match settings(&args(extra)) {
            Ok(_) => panic!("{extra:?} accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    const A: &str = "127.0.0.1:5060";
    const B: &str = "127.0.0.1:5062";

    /// One element and its migration: the smallest accepted command line, plus `extra`.
    fn one(extra: &[&'static str]) -> Vec<&'static str> {
        [&["--target", A, "--migrate", "true"][..], extra].concat()
    }

    #[test]
    fn one_migrate_per_target() {
        assert_eq!(
            refused(&["--target", A, "--target", B, "--migrate", "true"]),
            "2 --target and 1 --migrate: give one --migrate per --target, in the same order"
        );
    }

    #[test]
    fn one_back_per_target_or_none() {
        let two = [
            "--target",
            A,
            "--target",
            B,
            "--migrate",
            "m",
            "--migrate",
            "m",
        ];
        assert_eq!(
            refused(&[&two[..], &["--back", "b"]].concat()),
            "2 --target and 1 --back: give one --back per --target, or none"
        );
        accepted(&[&two[..], &["--back", "b", "--back", "b"]].concat());
    }

    #[test]
    fn a_target_is_migrated_once() {
        let want = format!("--target {A} is given twice: each element is migrated once per trial");
        assert_eq!(
            refused(&[
                "--target",
                A,
                "--target",
                A,
                "--migrate",
                "m",
                "--migrate",
                "m"
            ]),
            want
        );
        assert_eq!(refused(&one(&["--also", A])), want);
    }

    #[test]
    fn at_least_one_trial() {
        assert_eq!(
            refused(&one(&["--trials", "0"])),
            "--trials must be at least 1"
        );
    }

    #[test]
    fn an_empty_migration_command_is_refused() {
        assert_eq!(
            refused(&["--target", A, "--migrate", " "]),
            format!("--migrate is empty for {A}: give the command that migrates its VM")
        );
    }

    #[test]
    fn the_monitor_interval_is_above_zero() {
        assert_eq!(
            refused(&one(&["--monitor-interval", "0s"])),
            "--monitor-interval must be above zero"
        );
    }

    #[test]
    fn a_monitor_needs_a_trigger() {
        assert_eq!(
            refused(&one(&["--monitor", "process kamailio"])),
            "--monitor without --trigger: say when to migrate, e.g. --trigger 'cpu > 90%'"
        );
    }

    #[test]
    fn the_load_target_is_a_probed_element() {
        assert_eq!(
            refused(&one(&["--also", B, "--load-target", "127.0.0.1:9"])),
            format!(
                "--load-target 127.0.0.1:9: not one of the probed elements; give one of {A}, {B}"
            )
        );
    }

    #[test]
    fn the_load_profile_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let missing = missing.to_str().unwrap();
        assert_eq!(
            refused(&["--target", A, "--migrate", "true", "--load", missing]),
            format!("--load {missing}: no such profile file (profiles/*.toml)")
        );
    }

    #[test]
    fn an_interrupted_trial_is_not_a_failure() {
        let (ok, failed, stopped) = (Status::Ok, Status::Failed, Status::Interrupted);
        assert_eq!(outcome([ok, ok, stopped]), Outcome::Ok);
        assert_eq!(outcome([stopped]), Outcome::Ok);
        assert_eq!(outcome([]), Outcome::Ok);
        assert_eq!(outcome([ok, failed, stopped]), Outcome::Failures);
        assert_eq!(outcome([failed]), Outcome::Failures);
    }

    #[test]
    fn accepted_settings_are_resolved() {
        let c = accepted(&[
            "--target",
            A,
            "--migrate",
            "lab.sh migrate",
            "--back",
            "lab.sh back",
            "--also",
            B,
            "--trials",
            "3",
            "--sip",
            "--load-cmd",
            "imsload --target {target}",
            "--load-target",
            B,
            "--out",
            "/tmp/trials-out",
            "--metrics",
            "127.0.0.1:0",
        ]);
        assert_eq!(c.trials, 3);
        assert_eq!(c.elements.len(), 1);
        assert_eq!(c.elements[0].target, 0);
        assert_eq!(c.elements[0].migrate, "lab.sh migrate");
        assert_eq!(c.elements[0].back.as_deref(), Some("lab.sh back"));
        // Probed in the order given, the --also ones after the --target ones.
        let probed: Vec<String> = c.probe.targets.iter().map(|t| t.addr.to_string()).collect();
        assert_eq!(probed, [A, B]);
        assert_eq!(c.load_target, 1);
        assert!(
            matches!(&c.load, Some(LoadSpec::Command(cmd)) if cmd == "imsload --target {target}")
        );
        assert!(matches!(c.start, StartRule::Delay(d) if d.is_zero()));
        assert_eq!(c.out, PathBuf::from("/tmp/trials-out"));
        assert_eq!(c.probe.rate, 1000.0);
        // Nothing bound yet: main binds --metrics once the settings are accepted.
        assert!(c.probe.metrics.is_none());
        // Without --load-target the load goes to the first --target probed over SIP.
        assert_eq!(accepted(&one(&["--also", B, "--sip"])).load_target, 0);
    }
}
