//! The trial loop. Each trial, in order:
//!
//! 1. probes start (the probe engine in process, on a thread, on a [`ProbeClock`] made here so
//!    that the migration's times land on the probes' time base exactly);
//! 2. `before` of baseline probing;
//! 3. the load starts (a child process, its own process group);
//! 4. the start rule: a fixed `delay`, or a threshold on a monitor, checked every interval and
//!    bounded by a timeout (the migration then runs anyway, and the trial says so);
//! 5. the migration command (`sh -c`, its own process group, stdout/stderr to files, bounded by
//!    `migrate_timeout`), timed on the monotonic clock and labelled in wall-clock UTC;
//! 6. `after` of probing;
//! 7. the load gets SIGINT (so it drains and writes its report) and is awaited, bounded;
//!    the probes stop and write their files;
//! 8. analysis: the largest reply gap per layer overlapping the migration, the hypervisor's
//!    figures, its STOP/RESUME events placed on the probe timeline; `trial.json`; the table and
//!    the plots are rewritten.
//!
//! Ctrl-C: the current trial ends at the next step boundary (a running migration command is
//! awaited, not killed: a half-done migration is worse than a late stop) and is recorded as
//! interrupted; no further trial starts. Child processes live in their own process groups so the
//! terminal's SIGINT reaches only us; [`Children::terminate`] is for the second Ctrl-C.

use super::marks::Marks;
use super::output;
use super::record::{
    label, ClockOut, CounterOut, Direction, LoadOut, MigrationOut, Status, StepRecord, TrialRecord,
    TriggerOut,
};
use super::step::{self, StepRun, TrialView};
use super::table::TrialRow;
use super::users;
use crate::clock::monotonic_ns;
use crate::probe::net::ProbeClock;
use crate::probe::report as probe_report;
use crate::probe::run::{self as probe_run, RunConfig, TargetResult};
use crate::probe::targets::Target;
use crate::probe::Layer;
use crate::profile::condition::Condition;
use crate::profile::monitor::{Measure, Monitor, Source};
use crate::shutdown::{self, StopReason, Trigger};
use anyhow::Context as _;
use chrono::Utc;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When to fire the migration once the load runs.
#[derive(Clone, Debug)]
pub enum StartRule {
    /// A fixed delay after the load started.
    Delay(Duration),
    /// `delay`, then a threshold on a monitor.
    Trigger(TriggerSpec),
}

#[derive(Clone, Debug)]
pub struct TriggerSpec {
    /// The condition as given (`cpu > 90%`).
    pub text: String,
    pub condition: Condition,
    pub source: Source,
    pub measure: Measure,
    /// Waited before the first sample (the load's ramp).
    pub delay: Duration,
    pub interval: Duration,
    /// The migration runs anyway after this long, and the trial records that the threshold was
    /// not reached.
    pub timeout: Duration,
}

/// The load run during each trial.
#[derive(Clone, Debug)]
pub enum LoadSpec {
    /// `IMSLOAD --profile PROFILE --target ADDR --report trial/load.json --series
    /// trial/load-series.csv --quiet`.
    Profile { imsload: PathBuf, profile: PathBuf },
    /// Any command line (`sh -c`); `{report}`, `{series}`, `{dir}` and `{target}` are replaced
    /// by the trial's load report path, series path, folder and the target's HOST:PORT.
    Command(String),
}

/// An element the trials migrate, in the order given.
#[derive(Clone, Debug)]
pub struct Element {
    /// Its index in the probe's targets.
    pub target: usize,
    /// The command that migrates its VM.
    pub migrate: String,
    /// With back commands (every element has one or none does), odd trials run `migrate` and
    /// even trials `back`.
    pub back: Option<String>,
}

#[derive(Clone, Debug)]
pub struct TrialsConfig {
    /// Targets, layers, rate and the analysis parameters: the migrated elements and any others
    /// probed alongside ("the others"). `out` and `duration` are set per trial.
    pub probe: RunConfig,
    /// Migrated one after another in each trial, each after the previous one's command ended
    /// and `after` passed.
    pub elements: Vec<Element>,
    pub trials: u32,
    pub pause: Duration,
    pub before: Duration,
    pub after: Duration,
    pub start: StartRule,
    pub migrate_timeout: Duration,
    pub load: Option<LoadSpec>,
    /// The target (index in the probe's targets) the load is sent to: `{target}` of a load
    /// command, `--target` of a profile load. See [`default_load_target`].
    pub load_target: usize,
    /// How long the load may take to drain after SIGINT before it is killed.
    pub load_drain: Duration,
    /// A command printing a byte counter of the migration link (e.g. the sending interface's
    /// `tx_bytes`), run just before and just after the migration command: its growth is the
    /// data transferred where the hypervisor reports none.
    pub data_cmd: Option<String>,
    pub out: PathBuf,
    pub plot: bool,
}

/// What a run of trials produced.
#[derive(Debug)]
pub struct TrialsOutcome {
    pub dir: PathBuf,
    /// A row per element per trial.
    pub rows: Vec<TrialRow>,
    pub interrupted: bool,
    /// The Markdown summary (also in `summary.md`).
    pub summary: String,
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// The process groups of the children alive now (the load, a migration command). They do not
/// get the terminal's SIGINT (their own groups), so the second Ctrl-C, which exits at once,
/// stops them through a clone of this ([`Children::terminate`]); they would outlive us otherwise.
#[derive(Clone, Debug, Default)]
pub struct Children(Arc<Mutex<Vec<i32>>>);

impl Children {
    /// SIGTERM to every child process group still running.
    pub fn terminate(&self) {
        if let Ok(v) = self.0.lock() {
            for &p in v.iter() {
                signal_group(p, libc::SIGTERM);
            }
        }
    }

    /// Runs `command` with `sh -c` in a process group of its own, stdin closed, output to
    /// files; the group stays registered until the returned [`Group`] is dropped.
    fn spawn_sh(
        &self,
        command: &str,
        stdout: &Path,
        stderr: &Path,
        env: &[(&str, String)],
    ) -> std::io::Result<(std::process::Child, Group)> {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(stdout)?)
            .stderr(std::fs::File::create(stderr)?)
            .process_group(0);
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn()?;
        let pgid = child.id() as i32;
        if let Ok(mut v) = self.0.lock() {
            v.push(pgid);
        }
        Ok((
            child,
            Group {
                children: self.clone(),
                pgid,
            },
        ))
    }
}

/// A registered child process group; dropping it unregisters the group (every return path,
/// errors included).
#[derive(Debug)]
struct Group {
    children: Children,
    pgid: i32,
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(mut v) = self.children.0.lock() {
            v.retain(|&p| p != self.pgid);
        }
    }
}

fn signal_group(pgid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) on a process group we created; no memory is involved.
    pgid > 0 && unsafe { libc::kill(-pgid, sig) } == 0
}

fn exit_text(st: &std::process::ExitStatus) -> (Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    (st.code(), st.signal())
}

// ---------------------------------------------------------------------------------------------
// The load's report

/// The users' view from an imsload JSON report (read as plain JSON, so a report from a newer or
/// older imsload still yields what it has).
pub fn load_figures(out: &mut LoadOut, v: &serde_json::Value) {
    let c = &v["counters"];
    let u = |k: &str| c.get(k).and_then(serde_json::Value::as_u64);
    let sum = |ks: &[&str]| -> Option<u64> {
        let vals: Vec<u64> = ks.iter().filter_map(|k| u(k)).collect();
        (!vals.is_empty()).then(|| vals.iter().sum())
    };
    out.reg_attempts = sum(&["reg_attempts", "rereg_attempts"]);
    out.reg_failed = sum(&["reg_failed", "reg_timeouts", "rereg_failed"]);
    out.calls_attempted = u("calls_attempted");
    out.calls_failed = sum(&["calls_failed", "calls_timeout"]);
    out.late_requests = u("retransmits");
    let m = &v["media"];
    out.media_gap_max_ms = m["longest_gap"]["max_ms"].as_f64();
    out.media_loss_pct = m["loss_pct"].as_f64();
    out.media_mos_min = m["mos_min"].as_f64();
    let r = &v["rfc6076"];
    out.rrd_max_ms = r["registration_request_delay"]["max_ms"].as_f64();
    out.srd_max_ms = r["session_request_delay"]["max_ms"].as_f64();
    // serde's Duration: {"secs", "nanos"}. Timer B and F are 64·T1 (RFC 3261 §17.1).
    let t1 = &v["settings"]["timers"]["t1"];
    out.transaction_timeout_s = t1["secs"]
        .as_f64()
        .map(|s| 64.0 * (s + t1["nanos"].as_f64().unwrap_or(0.0) / 1e9));
}

// ---------------------------------------------------------------------------------------------
// The loop

/// Why a wait ended early.
#[derive(PartialEq, Eq)]
enum Cut {
    Interrupted,
    ProbeEnded,
}

/// Sleeps `d` in short steps; ends early on Ctrl-C or when the probe thread is gone.
fn wait(d: Duration, stop: &Trigger, probe: &std::thread::JoinHandle<ProbeOut>) -> Option<Cut> {
    let end = Instant::now() + d;
    loop {
        if stop.reason() != StopReason::Running {
            return Some(Cut::Interrupted);
        }
        if probe.is_finished() {
            return Some(Cut::ProbeEnded);
        }
        let now = Instant::now();
        if now >= end {
            return None;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

type ProbeOut = anyhow::Result<Vec<TargetResult>>;

struct LoadChild {
    child: std::process::Child,
    _group: Group,
    out: LoadOut,
    report: PathBuf,
    series: PathBuf,
    media_log: PathBuf,
}

fn start_load(
    children: &Children,
    spec: &LoadSpec,
    dir: &Path,
    target: &str,
) -> anyhow::Result<LoadChild> {
    let report = dir.join("load.json");
    let series = dir.join("load-series.csv");
    let media_log = dir.join("load-media.csv");
    let command = match spec {
        LoadSpec::Profile { imsload, profile } => format!(
            "exec {} --profile {} --target {} --report {} --series {} --media-log {} --quiet",
            shell_quote(&imsload.display().to_string()),
            shell_quote(&profile.display().to_string()),
            shell_quote(target),
            shell_quote(&report.display().to_string()),
            shell_quote(&series.display().to_string()),
            shell_quote(&media_log.display().to_string())
        ),
        LoadSpec::Command(c) => c
            .replace("{report}", &shell_quote(&report.display().to_string()))
            .replace("{series}", &shell_quote(&series.display().to_string()))
            .replace(
                "{media_log}",
                &shell_quote(&media_log.display().to_string()),
            )
            .replace("{dir}", &shell_quote(&dir.display().to_string()))
            .replace("{target}", &shell_quote(target)),
    };
    let (so, se) = (dir.join("load.stdout"), dir.join("load.stderr"));
    let (child, group) = children
        .spawn_sh(&command, &so, &se, &[])
        .with_context(|| format!("cannot start the load ({command})"))?;
    Ok(LoadChild {
        child,
        _group: group,
        out: LoadOut {
            command,
            stdout: so.display().to_string(),
            stderr: se.display().to_string(),
            ..LoadOut::default()
        },
        report,
        series,
        media_log,
    })
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:+=,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// SIGINT to the load's group so it drains and writes its report; SIGKILL after `drain`.
fn stop_load(mut l: LoadChild, drain: Duration, warnings: &mut Vec<String>) -> LoadOut {
    let pgid = l.child.id() as i32;
    match l.child.try_wait() {
        Ok(Some(st)) => {
            l.out.ended_early = true;
            (l.out.exit_code, l.out.signal) = exit_text(&st);
        }
        _ => {
            signal_group(pgid, libc::SIGINT);
            let t0 = Instant::now();
            loop {
                match l.child.try_wait() {
                    Ok(Some(st)) => {
                        (l.out.exit_code, l.out.signal) = exit_text(&st);
                        break;
                    }
                    Ok(None) if t0.elapsed() < drain => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        signal_group(pgid, libc::SIGKILL);
                        let _ = l.child.wait();
                        l.out.killed = true;
                        break;
                    }
                }
            }
            // A shell that did not exec the load may die of the SIGINT before the load has
            // drained and written its report: wait for the whole process group.
            while !l.out.killed && signal_group(pgid, 0) {
                if t0.elapsed() >= drain {
                    signal_group(pgid, libc::SIGKILL);
                    l.out.killed = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if l.out.killed {
                warnings.push(format!(
                    "the load did not end within {} after SIGINT and was killed; its report may be missing",
                    humantime::format_duration(drain)
                ));
            }
        }
    }
    if l.out.ended_early {
        let tail = std::fs::read_to_string(&l.out.stderr)
            .map(|s| {
                s.lines()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
            .unwrap_or_default();
        warnings.push(format!(
            "the load ended by itself before the trial's end (exit code {}): {tail}",
            l.out.exit_code.map_or("?".into(), |c| c.to_string())
        ));
    }
    match std::fs::read_to_string(&l.report) {
        Ok(t) => match serde_json::from_str::<serde_json::Value>(&t) {
            Ok(v) => {
                load_figures(&mut l.out, &v);
                l.out.report = Some(l.report.display().to_string());
            }
            Err(e) => warnings.push(format!(
                "the load's report {} is not JSON: {e}",
                l.report.display()
            )),
        },
        Err(_) => warnings.push(format!(
            "the load wrote no report at {} (with --load-cmd, put {{report}} where the report path goes: imsload ... --report {{report}})",
            l.report.display()
        )),
    }
    if l.media_log.exists() {
        l.out.media_log = Some(l.media_log.display().to_string());
    }
    if l.series.exists() {
        l.out.series = Some(l.series.display().to_string());
    } else {
        warnings.push(format!(
            "the load wrote no series at {} (with --load-cmd: imsload ... --series {{series}}): no users' figures per element; trial.json's load has the trial's totals",
            l.series.display()
        ));
    }
    l.out
}

/// One of the load's CSV files on the probe timeline, read by `parse`: `what` names it and
/// `without` says what the trial goes without, in the warning when it cannot be read.
fn read_load_csv<T>(
    path: Option<&str>,
    what: &str,
    without: &str,
    parse: impl FnOnce(&str) -> anyhow::Result<(Vec<T>, usize)>,
    warnings: &mut Vec<String>,
) -> Option<Vec<T>> {
    let path = path?;
    let parsed = std::fs::read_to_string(path)
        .map_err(anyhow::Error::from)
        .and_then(|t| parse(&t));
    match parsed {
        Ok((rows, skipped)) => {
            if skipped > 0 {
                warnings.push(format!(
                    "the load's {what} {path}: {skipped} line(s) that could not be read (a field count other than the header's, a value out of place) were skipped"
                ));
            }
            Some(rows)
        }
        Err(e) => {
            warnings.push(format!(
                "the load's {what} {path} cannot be read: {e:#}; {without}"
            ));
            None
        }
    }
}

/// The load's media log, for the steps' silences; none when it has no stream (a load without
/// --media leaves the header only).
fn read_media_log(
    load: &LoadOut,
    wall0: chrono::DateTime<Utc>,
    warnings: &mut Vec<String>,
) -> Option<Vec<users::Stream>> {
    read_load_csv(
        load.media_log.as_deref(),
        "media log",
        "no silences per element",
        |t| users::parse_media_log(t, wall0),
        warnings,
    )
    .filter(|s| !s.is_empty())
}

/// The load's series, for the steps' users figures.
fn read_series(
    load: &LoadOut,
    wall0: chrono::DateTime<Utc>,
    warnings: &mut Vec<String>,
) -> Option<Vec<users::Second>> {
    read_load_csv(
        load.series.as_deref(),
        "series",
        "no users' figures per element",
        |t| users::parse_series(t, wall0),
        warnings,
    )
}

fn wait_trigger(
    spec: &TriggerSpec,
    stop: &Trigger,
    probe: &std::thread::JoinHandle<ProbeOut>,
    quiet: bool,
) -> (TriggerOut, Option<Cut>) {
    let mut out = TriggerOut {
        kind: "threshold".into(),
        condition: Some(spec.text.clone()),
        ..TriggerOut::default()
    };
    let t0 = Instant::now();
    if let Some(c) = wait(spec.delay, stop, probe) {
        out.waited_s = t0.elapsed().as_secs_f64();
        return (out, Some(c));
    }
    let mut m = Monitor::new(&spec.condition.metric, spec.source.clone(), spec.measure);
    let deadline = t0 + spec.delay + spec.timeout;
    // Bounded: one sample per interval until the deadline.
    loop {
        let now = Instant::now();
        match m.sample(now) {
            Ok(Some(v)) => {
                out.samples += 1;
                out.last_value = Some(v);
                if spec.condition.holds(v) {
                    out.fired = true;
                    break;
                }
            }
            Ok(None) => out.samples += 1,
            Err(e) => {
                if out.monitor_error.is_none() {
                    tracing::warn!("monitor {}: {e} (logged once)", spec.condition.metric);
                    out.monitor_error = Some(e.to_string());
                }
            }
        }
        if Instant::now() >= deadline {
            out.timed_out = true;
            if !quiet {
                tracing::warn!(
                    "trigger {:?} did not hold within {}; migrating anyway (recorded in trial.json)",
                    spec.text,
                    humantime::format_duration(spec.timeout)
                );
            }
            break;
        }
        let next = (now + spec.interval).min(deadline);
        if let Some(c) = wait(next.saturating_duration_since(Instant::now()), stop, probe) {
            out.waited_s = t0.elapsed().as_secs_f64();
            return (out, Some(c));
        }
    }
    out.waited_s = t0.elapsed().as_secs_f64();
    (out, None)
}

/// Runs one migration command of trial `t`, its output in `{files}.stdout` and `.stderr` of the
/// trial's folder, bounded by `--migrate-timeout`.
fn run_migration(
    t: &TrialCtx,
    command: &str,
    files: &str,
    env: &[(&str, String)],
    clock: ProbeClock,
) -> anyhow::Result<MigrationOut> {
    let (dir, children, stop) = (&t.dir, t.children, t.stop);
    let timeout = t.cfg.migrate_timeout;
    let (so, se) = (
        dir.join(format!("{files}.stdout")),
        dir.join(format!("{files}.stderr")),
    );
    let wall0 = Utc::now();
    let t0 = clock.now_ns();
    let (mut child, group) = children
        .spawn_sh(command, &so, &se, env)
        .with_context(|| format!("cannot start the migration command {command:?}"))?;
    let pgid = group.pgid;
    // A thread blocks in wait() so the end is stamped the moment the command exits, not at the
    // next poll.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let st = child.wait();
        let _ = tx.send((st, clock.now_ns(), Utc::now()));
    });
    let mut timed_out = false;
    let mut told = false;
    let mut killed_at: Option<Instant> = None;
    let started = Instant::now();
    let (st, t1, wall1) = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(r) => break r,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                anyhow::bail!("lost the migration command's waiter")
            }
            Err(_) => {}
        }
        if stop.reason() != StopReason::Running && !told {
            told = true;
            tracing::info!("waiting for the migration command to end (a half-done migration is not interrupted; Ctrl-C again quits at once)");
        }
        if started.elapsed() > timeout {
            match killed_at {
                None => {
                    timed_out = true;
                    tracing::warn!(
                        "the migration command ran longer than {}; sending SIGTERM",
                        humantime::format_duration(timeout)
                    );
                    signal_group(pgid, libc::SIGTERM);
                    killed_at = Some(Instant::now());
                }
                Some(k) if k.elapsed() > Duration::from_secs(5) => {
                    signal_group(pgid, libc::SIGKILL);
                }
                _ => {}
            }
        }
    };
    drop(group);
    let (exit_code, signal) = match &st {
        Ok(s) => exit_text(s),
        Err(_) => (None, None),
    };
    Ok(MigrationOut {
        command: command.to_string(),
        exit_code,
        signal,
        timed_out,
        started_utc: label(wall0),
        ended_utc: label(wall1),
        start_s: t0 as f64 / 1e9,
        end_s: t1 as f64 / 1e9,
        duration_ms: (t1 - t0) as f64 / 1e6,
        stdout: so.display().to_string(),
        stderr: se.display().to_string(),
    })
}

/// Runs `command` (sh -c, at most 10 s) and returns the first number it prints.
fn read_counter(command: &str) -> anyhow::Result<f64> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run --data-cmd {command:?}"))?;
    let t0 = Instant::now();
    // Bounded: 10 s, then killed.
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if t0.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("--data-cmd {command:?} did not finish within 10 s");
            }
        }
    }
    let o = child
        .wait_with_output()
        .with_context(|| format!("--data-cmd {command:?}"))?;
    let text = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        anyhow::bail!(
            "--data-cmd {command:?} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    crate::profile::monitor::first_number(&text).with_context(|| {
        format!(
            "--data-cmd {command:?} printed no number: {:?}",
            text.trim()
        )
    })
}

/// Reads the (wall, mono) pair again and compares it with the clock's anchor.
fn clock_check(clock: &ProbeClock) -> ClockOut {
    let m1 = monotonic_ns();
    let w = Utc::now();
    let m2 = monotonic_ns();
    let mono_t = ((m1 + m2) / 2) as i128 - clock.epoch.mono_ns as i128;
    let wall_t = (w - clock.epoch.wall).num_nanoseconds().unwrap_or(0) as i128;
    let drift_ns = (wall_t - mono_t) as f64;
    let read_ns = (m2 - m1) as f64;
    // The anchor itself was read the same way (one more read spacing), and event stamps have
    // 1 µs resolution.
    let bound_ns = drift_ns.abs() + 2.0 * read_ns + 1000.0;
    ClockOut {
        drift_us: drift_ns / 1e3,
        read_us: read_ns / 1e3,
        bound_ms: bound_ns / 1e6,
    }
}

struct TrialCtx<'a> {
    cfg: &'a TrialsConfig,
    stop: &'a Trigger,
    children: &'a Children,
    index: u32,
    dir: PathBuf,
    /// Even trials with `--back` commands run them.
    back: bool,
    /// The phases, for dashboards.
    marks: &'a Marks,
}

impl TrialCtx<'_> {
    fn direction(&self) -> Direction {
        if self.back {
            Direction::Back
        } else {
            Direction::Migrate
        }
    }
}

/// Where the load goes when the user does not say: the first migrated element that is probed
/// over SIP (in the study's order the HSS comes first, and it speaks no SIP), else the first
/// element.
/// `chosen` is the layers given on the command line (empty: each target's own).
pub fn default_load_target(targets: &[Target], chosen: &[Layer], elements: &[Element]) -> usize {
    elements
        .iter()
        .map(|e| e.target)
        .find(|&i| targets[i].layers(chosen).contains(&Layer::Sip))
        .unwrap_or(elements[0].target)
}

fn run_trial(t: &TrialCtx) -> anyhow::Result<TrialRecord> {
    let cfg = t.cfg;
    std::fs::create_dir_all(&t.dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create {}: {e} (choose another --out DIR)",
            t.dir.display()
        )
    })?;
    let tag = format!("trial {}/{} {}", t.index, cfg.trials, t.direction());
    let started = Utc::now();
    t.marks.mark(t.index, "", "trial_start", started);
    let mut warnings = Vec::new();
    let clock = ProbeClock::start();
    let mut pcfg = cfg.probe.clone();
    pcfg.out = Some(t.dir.clone());
    pcfg.duration = None;
    let (ptrig, _ps) = shutdown::channel();
    let probe = {
        let ptrig = ptrig.clone();
        std::thread::Builder::new()
            .name("imsprobe-trial".into())
            .spawn(move || probe_run::run_with_clock(&pcfg, &ptrig, clock))
            .map_err(|e| anyhow::anyhow!("cannot start the probe thread: {e}"))?
    };
    let names: Vec<&str> = cfg
        .elements
        .iter()
        .map(|e| cfg.probe.targets[e.target].name.as_str())
        .collect();
    tracing::info!(
        "{tag}: probing {} ({} target(s)), baseline {}",
        names.join(" → "),
        cfg.probe.targets.len(),
        humantime::format_duration(cfg.before)
    );
    let mut cut = wait(cfg.before, t.stop, &probe);
    let mut load = None;
    if let (None, Some(spec)) = (&cut, &cfg.load) {
        let target = cfg.probe.targets[cfg.load_target].addr.to_string();
        match start_load(t.children, spec, &t.dir, &target) {
            Ok(l) => {
                t.marks.mark(t.index, "", "load_start", Utc::now());
                tracing::info!("{tag}: load started: {}", l.out.command);
                load = Some(l);
            }
            Err(e) => {
                ptrig.stop(StopReason::Error);
                let _ = probe.join();
                return Err(e);
            }
        }
    }
    let mut trigger_out = None;
    if cut.is_none() {
        (trigger_out, cut) = wait_start(t, &tag, &probe, &mut warnings);
    }
    if cut.is_none() {
        t.marks.mark(t.index, "", "trigger", Utc::now());
    }
    // The elements one after another: each migration starts when the previous command has
    // ended (the VM runs again on its destination) and `after` of probing has shown it back.
    let mut runs: Vec<StepRun> = Vec::new();
    for (i, el) in cfg.elements.iter().enumerate() {
        if cut.is_some() {
            break;
        }
        runs.push(migrate_element(t, &tag, i, el, &clock, &mut warnings));
        cut = if t.stop.reason() == StopReason::Running {
            wait(cfg.after, t.stop, &probe)
        } else {
            Some(Cut::Interrupted)
        };
    }
    let load_out = load.map(|l| stop_load(l, cfg.load_drain, &mut warnings));
    ptrig.stop(StopReason::Finished);
    let results = match probe.join() {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => anyhow::bail!("the probes of {tag} failed: {e:#}"),
        Err(_) => anyhow::bail!("the probe thread of {tag} panicked"),
    };
    if cut == Some(Cut::ProbeEnded) {
        warnings.push("the probes ended before the trial did".into());
    }
    let ran = Ran {
        started,
        trigger: trigger_out,
        runs,
        results,
        load: load_out,
        clock,
    };
    let rec = assess(t, ran, warnings);
    let path = t.dir.join("trial.json");
    probe_report::write_json(&path, &rec)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    log_steps(cfg, &tag, &rec);
    Ok(rec)
}

/// What the `--delay` or the `--trigger` before the first migration gave, and whether the
/// trial was cut meanwhile.
fn wait_start(
    t: &TrialCtx,
    tag: &str,
    probe: &std::thread::JoinHandle<ProbeOut>,
    warnings: &mut Vec<String>,
) -> (Option<TriggerOut>, Option<Cut>) {
    match &t.cfg.start {
        StartRule::Delay(d) => {
            let t0 = Instant::now();
            let cut = wait(*d, t.stop, probe);
            let out = TriggerOut {
                kind: "delay".into(),
                fired: cut.is_none(),
                waited_s: t0.elapsed().as_secs_f64(),
                ..TriggerOut::default()
            };
            (Some(out), cut)
        }
        StartRule::Trigger(spec) => {
            tracing::info!("{tag}: waiting for {:?}", spec.text);
            let (o, cut) = wait_trigger(spec, t.stop, probe, false);
            if o.fired {
                tracing::info!(
                    "{tag}: {:?} holds ({:.1}) after {:.1} s",
                    spec.text,
                    o.last_value.unwrap_or(f64::NAN),
                    o.waited_s
                );
            }
            if o.timed_out {
                warnings.push(format!(
                    "the trigger {:?} did not hold within {}; the migration ran anyway (last value {})",
                    spec.text,
                    humantime::format_duration(spec.timeout),
                    o.last_value.map_or("none".into(), |v| format!("{v:.1}"))
                ));
            }
            (Some(o), cut)
        }
    }
}

/// Step `i` of the trial: element `el`'s migration (or its way back) command, with the
/// `--data-cmd` counter read around it.
fn migrate_element(
    t: &TrialCtx,
    tag: &str,
    i: usize,
    el: &Element,
    clock: &ProbeClock,
    warnings: &mut Vec<String>,
) -> StepRun {
    let cfg = t.cfg;
    let sequence = cfg.elements.len() > 1;
    let name = &cfg.probe.targets[el.target].name;
    let step_tag = if sequence {
        format!("{tag} [{}/{} {name}]", i + 1, cfg.elements.len())
    } else {
        tag.to_string()
    };
    let command = match (&el.back, t.back) {
        (Some(b), true) => b.clone(),
        _ => el.migrate.clone(),
    };
    let files = if sequence {
        format!("migrate-{}", cfg.probe.targets[el.target].path_name())
    } else {
        "migrate".to_string()
    };
    tracing::info!("{step_tag}: migration command: {command}");
    let env = [
        ("IMSPROBE_TRIAL", t.index.to_string()),
        ("IMSPROBE_DIRECTION", t.direction().to_string()),
        ("IMSPROBE_TRIAL_DIR", t.dir.display().to_string()),
        ("IMSPROBE_ELEMENT", name.clone()),
        ("IMSPROBE_STEP", (i + 1).to_string()),
    ];
    let mut counter = cfg.data_cmd.as_ref().map(|c| CounterOut {
        command: c.clone(),
        ..CounterOut::default()
    });
    if let Some(c) = &mut counter {
        match read_counter(&c.command) {
            Ok(v) => c.before = Some(v),
            Err(e) => c.error = Some(format!("{e:#}")),
        }
    }
    t.marks.mark(t.index, name, "migration_start", Utc::now());
    let m = run_migration(t, &command, &files, &env, *clock);
    t.marks.mark(t.index, name, "migration_end", Utc::now());
    if let Some(c) = &mut counter {
        count_after(c);
        if let Some(e) = &c.error {
            warnings.push(if sequence {
                format!("{name}: {e}")
            } else {
                e.clone()
            });
        }
    }
    let migration = match m {
        Ok(m) => {
            tracing::info!(
                "{step_tag}: migration command ended after {:.1} ms, exit {}",
                m.duration_ms,
                m.exit_code.map_or_else(
                    || format!("signal {}", m.signal.unwrap_or(0)),
                    |c| c.to_string()
                )
            );
            Some(m)
        }
        Err(e) => {
            warnings.push(format!("{e:#}"));
            None
        }
    };
    StepRun {
        migration,
        data_counter: counter,
    }
}

/// Reads the `--data-cmd` counter after the migration; its growth is the data transferred.
fn count_after(c: &mut CounterOut) {
    if c.error.is_none() {
        match read_counter(&c.command) {
            Ok(v) => c.after = Some(v),
            Err(e) => c.error = Some(format!("{e:#}")),
        }
    }
    if let (Some(a), Some(b)) = (c.before, c.after) {
        if b >= a {
            c.bytes = Some(b - a);
        } else {
            c.error = Some(format!(
                "the counter went backwards ({a} -> {b}): reset, or a different interface"
            ));
        }
    }
}

/// What a trial collected, for [`assess`].
struct Ran {
    started: chrono::DateTime<Utc>,
    trigger: Option<TriggerOut>,
    runs: Vec<StepRun>,
    results: Vec<TargetResult>,
    load: Option<LoadOut>,
    clock: ProbeClock,
}

/// The trial's record: every step judged against the probes' results and the load's series,
/// the verdict, and the hypervisor's events added to the dashboards' marks.
fn assess(t: &TrialCtx, ran: Ran, mut warnings: Vec<String>) -> TrialRecord {
    let cfg = t.cfg;
    let sequence = cfg.elements.len() > 1;
    for r in &ran.results {
        for w in &r.report.warnings {
            warnings.push(format!("probe {}: {w}", r.target.name));
        }
    }
    let clock_out = clock_check(&ran.clock);
    let interrupted = t.stop.reason() != StopReason::Running;
    let started_utc = label(ran.started);
    let series = ran
        .load
        .as_ref()
        .and_then(|l| read_series(l, ran.clock.epoch.wall, &mut warnings));
    let media = ran
        .load
        .as_ref()
        .and_then(|l| read_media_log(l, ran.clock.epoch.wall, &mut warnings));
    let view = TrialView {
        trial: t.index,
        direction: t.direction(),
        started_utc: &started_utc,
        results: &ran.results,
        clock: &clock_out,
        wall0: ran.clock.epoch.wall,
        interrupted,
        load: ran.load.as_ref(),
        series: series.as_deref(),
        media: media.as_deref(),
        after_s: cfg.after.as_secs_f64(),
        sequence,
    };
    let steps: Vec<StepRecord> = cfg
        .elements
        .iter()
        .enumerate()
        .map(|(i, el)| {
            step::analyse(
                &view,
                i as u32 + 1,
                el.target,
                ran.runs.get(i),
                &mut warnings,
            )
        })
        .collect();
    let status = if interrupted {
        Status::Interrupted
    } else if steps.iter().any(|s| s.status != Status::Ok) {
        Status::Failed
    } else {
        Status::Ok
    };
    let reasons: Vec<String> = steps
        .iter()
        .filter_map(|s| {
            let f = s.failure.as_deref()?;
            Some(if sequence {
                format!("{}: {f}", s.element)
            } else {
                f.to_string()
            })
        })
        .collect();
    // The hypervisor's own events (STOP, RESUME, ...) are known once its output is read.
    for st in &steps {
        for e in &st.events {
            if let Ok(utc) = chrono::DateTime::parse_from_rfc3339(&e.utc) {
                let phase = format!("vm_{}", e.event.to_ascii_lowercase());
                t.marks
                    .mark(t.index, &st.element, &phase, utc.with_timezone(&Utc));
            }
        }
    }
    t.marks.mark(t.index, "", "trial_end", Utc::now());
    TrialRecord {
        trial: t.index,
        direction: t.direction(),
        status,
        failure: (!reasons.is_empty()).then(|| reasons.join("; ")),
        started_utc,
        ended_utc: label(Utc::now()),
        trigger: ran.trigger,
        steps,
        load: ran.load,
        clock: clock_out,
        warnings,
    }
}

/// One line per step: its verdict and the figures an operator watches.
fn log_steps(cfg: &TrialsConfig, tag: &str, rec: &TrialRecord) {
    let sequence = cfg.elements.len() > 1;
    let fmt = |v: Option<f64>, b: Option<f64>| match (v, b) {
        (Some(0.0), _) => format!("< {:.0} ms", cfg.probe.min_gap.as_secs_f64() * 1e3),
        (Some(v), Some(b)) => format!("{v:.1} ± {b:.1} ms"),
        _ => "–".into(),
    };
    for s in &rec.steps {
        let r = &s.row;
        tracing::info!(
            "{tag}{}: {}{}; SIP gap {}, ICMP gap {}{}{}{}",
            if sequence {
                format!(" [{}]", s.element)
            } else {
                String::new()
            },
            s.status,
            s.failure
                .as_deref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default(),
            fmt(r.sip_gap_ms, r.sip_gap_bound_ms),
            fmt(r.icmp_gap_ms, r.icmp_gap_bound_ms),
            match r.diameter_gap_ms {
                Some(_) => format!(
                    ", Diameter gap {}",
                    fmt(r.diameter_gap_ms, r.diameter_gap_bound_ms)
                ),
                None => String::new(),
            },
            r.hv_downtime_ms
                .map(|d| format!(", hypervisor downtime {d:.1} ms"))
                .unwrap_or_default(),
            r.vm_pause_ms
                .map(|d| format!(", STOP→RESUME {d:.1} ms"))
                .unwrap_or_default(),
        );
    }
}

/// Runs every trial (until `stop` fires) and writes the table. Errors only for setup problems
/// (output folder, probe sockets, a load that cannot start); a failed migration is a row.
/// `children` holds the process groups of the load and migration commands while they run (for
/// the second Ctrl-C: [`Children::terminate`]).
pub fn run(
    cfg: &TrialsConfig,
    stop: &Trigger,
    children: &Children,
) -> anyhow::Result<TrialsOutcome> {
    anyhow::ensure!(cfg.trials >= 1, "--trials must be at least 1");
    anyhow::ensure!(
        !cfg.probe.targets.is_empty(),
        "no target: give --target NAME|HOST:PORT"
    );
    anyhow::ensure!(
        !cfg.elements.is_empty(),
        "nothing to migrate: give --target NAME --migrate CMD"
    );
    for e in &cfg.elements {
        let name = cfg
            .probe
            .targets
            .get(e.target)
            .map(|t| t.name.as_str())
            .ok_or_else(|| anyhow::anyhow!("element {} is not a probed target", e.target))?;
        anyhow::ensure!(
            !e.migrate.trim().is_empty(),
            "--migrate is empty for {name}: give the command that migrates its VM"
        );
    }
    let with_back = cfg.elements.iter().filter(|e| e.back.is_some()).count();
    anyhow::ensure!(
        with_back == 0 || with_back == cfg.elements.len(),
        "--back is given for {with_back} of {} elements: give one per --target, or none",
        cfg.elements.len()
    );
    std::fs::create_dir_all(&cfg.out).map_err(|e| {
        anyhow::anyhow!(
            "cannot create {}: {e} (choose another --out DIR)",
            cfg.out.display()
        )
    })?;
    let mut notes = Vec::new();
    if with_back == 0 {
        notes.push("no --back command: every trial ran the same --migrate command".to_string());
    }
    let mut records: Vec<TrialRecord> = Vec::new();
    let mut summary = String::new();
    let marks = Marks::new(cfg.probe.metrics.clone());
    for i in 1..=cfg.trials {
        if stop.reason() != StopReason::Running {
            break;
        }
        let ctx = TrialCtx {
            cfg,
            stop,
            children,
            index: i,
            dir: cfg.out.join(format!("trial-{i:03}")),
            back: with_back > 0 && i % 2 == 0,
            marks: &marks,
        };
        let rec = match run_trial(&ctx) {
            Ok(r) => r,
            Err(e) => {
                // Setup failure: keep what the earlier trials measured.
                if !records.is_empty() {
                    let _ = output::write(cfg, &records, &notes);
                }
                return Err(e);
            }
        };
        records.push(rec);
        summary = output::write(cfg, &records, &notes)?;
        let ann = cfg.out.join("annotations.json");
        probe_report::write_json(&ann, &marks.annotations())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", ann.display()))?;
        if i < cfg.trials && stop.reason() == StopReason::Running {
            tracing::info!(
                "pause {} before trial {}",
                humantime::format_duration(cfg.pause),
                i + 1
            );
            let end = Instant::now() + cfg.pause;
            while Instant::now() < end && stop.reason() == StopReason::Running {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let interrupted = stop.reason() != StopReason::Running;
    if interrupted && (records.len() as u32) < cfg.trials {
        notes.push(format!(
            "interrupted (Ctrl-C) after {} of {} trials",
            records.len(),
            cfg.trials
        ));
        summary = output::write(cfg, &records, &notes)?;
    }
    Ok(TrialsOutcome {
        dir: cfg.out.clone(),
        rows: output::rows(&records),
        interrupted,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_goes_to_the_first_element_probed_over_sip() {
        use crate::sip::Transport;
        let at = |n: &str, layers: Option<Vec<Layer>>| Target {
            layers,
            ..Target::at(n, "127.0.0.1:5060".parse().unwrap(), Transport::Udp)
        };
        let targets = vec![
            at("hss", Some(vec![Layer::Diameter, Layer::Icmp])),
            at("pcscf", None),
            at("scscf", None),
        ];
        let el = |target| Element {
            target,
            migrate: "true".into(),
            back: None,
        };
        let study = [el(0), el(1), el(2)];
        assert_eq!(default_load_target(&targets, &[], &study), 1);
        assert_eq!(default_load_target(&targets, &[], &[el(2), el(1)]), 2);
        // Nothing speaks SIP: the first element, as before.
        assert_eq!(default_load_target(&targets, &[], &[el(0)]), 0);
        assert_eq!(default_load_target(&targets, &[Layer::Icmp], &study), 0);
    }

    #[test]
    fn load_report_figures() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"counters":{"reg_attempts":10,"rereg_attempts":5,"reg_failed":1,"reg_timeouts":2,"rereg_failed":0,"calls_attempted":100,"calls_failed":3,"calls_timeout":1,"retransmits":7},
                "rfc6076":{"registration_request_delay":{"max_ms":512.5},"session_request_delay":{"max_ms":900.0}},
                "media":{"streams":20,"loss_pct":0.5,"longest_gap":{"max_ms":512.0},"mos_min":4.1},
                "settings":{"timers":{"t1":{"secs":0,"nanos":250000000}}}}"#,
        )
        .unwrap();
        let mut o = LoadOut::default();
        load_figures(&mut o, &v);
        assert_eq!(o.reg_attempts, Some(15));
        assert_eq!(o.reg_failed, Some(3));
        assert_eq!(o.calls_failed, Some(4));
        assert_eq!(o.late_requests, Some(7));
        assert_eq!(o.rrd_max_ms, Some(512.5));
        assert_eq!(o.transaction_timeout_s, Some(16.0));
        assert_eq!(
            (o.media_gap_max_ms, o.media_loss_pct, o.media_mos_min),
            (Some(512.0), Some(0.5), Some(4.1))
        );
        let mut o = LoadOut::default();
        load_figures(&mut o, &serde_json::json!({}));
        assert_eq!((o.reg_failed, o.transaction_timeout_s), (None, None));
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/a/b.toml"), "/a/b.toml");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
