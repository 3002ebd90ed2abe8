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
//! terminal's SIGINT reaches only us; [`kill_children`] is for the second Ctrl-C.

use super::hypervisor::{self, HvReport};
use super::table::{self, TrialRow};
use crate::clock::monotonic_ns;
use crate::probe::net::ProbeClock;
use crate::probe::report::{self as probe_report, GapOut};
use crate::probe::run::{self as probe_run, RunConfig, TargetResult};
use crate::probe::Layer;
use crate::profile::condition::Condition;
use crate::profile::monitor::{Measure, Monitor, Parser, Source};
use crate::shutdown::{self, StopReason, Trigger};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
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

#[derive(Clone, Debug)]
pub struct TrialsConfig {
    /// Targets, layers, rate and the analysis parameters. The first target is the migrating
    /// element; any others are probed alongside ("the others"). `out` and `duration` are set per
    /// trial.
    pub probe: RunConfig,
    pub migrate: String,
    /// With a back command, odd trials run `migrate` and even trials `back`.
    pub back: Option<String>,
    pub trials: u32,
    pub pause: Duration,
    pub before: Duration,
    pub after: Duration,
    pub start: StartRule,
    pub migrate_timeout: Duration,
    pub load: Option<LoadSpec>,
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
    pub rows: Vec<TrialRow>,
    pub interrupted: bool,
    /// The Markdown summary (also in `summary.md`).
    pub summary: String,
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// Process groups of the children alive now, for [`kill_children`].
static CHILD_GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn register_group(pgid: i32) {
    if let Ok(mut v) = CHILD_GROUPS.lock() {
        v.push(pgid);
    }
}

fn unregister_group(pgid: i32) {
    if let Ok(mut v) = CHILD_GROUPS.lock() {
        v.retain(|&p| p != pgid);
    }
}

/// SIGTERM to every child process group still running (the load, a migration command). For the
/// second Ctrl-C, which exits at once: the children would otherwise outlive us, since they do
/// not get the terminal's SIGINT.
pub fn kill_children() {
    if let Ok(v) = CHILD_GROUPS.lock() {
        for &p in v.iter() {
            signal_group(p, libc::SIGTERM);
        }
    }
}

fn signal_group(pgid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) on a process group we created; no memory is involved.
    pgid > 0 && unsafe { libc::kill(-pgid, sig) } == 0
}

fn spawn_sh(
    command: &str,
    stdout: &Path,
    stderr: &Path,
    env: &[(&str, String)],
) -> std::io::Result<std::process::Child> {
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
    c.spawn()
}

fn exit_text(st: &std::process::ExitStatus) -> (Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    (st.code(), st.signal())
}

// ---------------------------------------------------------------------------------------------
// Monitor parsing

/// Parses `--monitor`: `process NAME`, `pid N[,N...]`, `cgroup PATH`, or `command CMD...` read by
/// `parser` (`number`, `xentop:DOMAIN`, `virsh-domstats:DOMAIN`). Same sources as the profiles'
/// `[[monitor]]` (docs/profiles.md).
pub fn parse_monitor(spec: &str, parser: Option<&str>) -> Result<Source, String> {
    let spec = spec.trim();
    let (kind, rest) = spec.split_once(char::is_whitespace).unwrap_or((spec, ""));
    let rest = rest.trim();
    let need = |what: &str| -> Result<(), String> {
        if rest.is_empty() {
            Err(format!(
                "--monitor {spec:?}: `{kind}` needs {what}, e.g. --monitor '{kind} {}'",
                match kind {
                    "process" => "kamailio",
                    "pid" => "1234",
                    "cgroup" => "/sys/fs/cgroup/system.slice/kamailio.service",
                    _ => "xentop -b -i 2 -d 1",
                }
            ))
        } else {
            Ok(())
        }
    };
    if parser.is_some() && kind != "command" {
        return Err(format!(
            "--monitor-parser is for `command` monitors; {spec:?} is a {kind} monitor"
        ));
    }
    match kind {
        "process" => {
            need("a process name")?;
            Ok(Source::Process {
                pids: Vec::new(),
                name: Some(rest.to_string()),
            })
        }
        "pid" => {
            need("a pid")?;
            // Several pids are summed, as the profiles' monitors do.
            let pids = rest
                .split([' ', ','])
                .filter(|p| !p.is_empty())
                .map(|p| {
                    p.parse::<u32>()
                        .map_err(|_| format!("--monitor {spec:?}: {p:?} is not a pid"))
                })
                .collect::<Result<Vec<u32>, String>>()?;
            Ok(Source::Process { pids, name: None })
        }
        "cgroup" => {
            need("a cgroup v2 directory")?;
            Ok(Source::Cgroup {
                path: rest.to_string(),
            })
        }
        "command" => {
            need("a command")?;
            let parser = match parser.unwrap_or("number") {
                "number" => Parser::Number,
                p => match p.split_once(':') {
                    Some(("xentop", d)) if !d.is_empty() => Parser::Xentop { domain: d.into() },
                    Some(("virsh-domstats", d)) if !d.is_empty() => {
                        Parser::VirshDomstats { domain: d.into() }
                    }
                    _ => {
                        return Err(format!(
                            "--monitor-parser {p:?}: use number, xentop:DOMAIN or virsh-domstats:DOMAIN"
                        ))
                    }
                },
            };
            Ok(Source::Command {
                command: rest.to_string(),
                parser,
            })
        }
        _ => Err(format!(
            "--monitor {spec:?}: start with process, pid, cgroup or command (e.g. --monitor 'process kamailio', --monitor 'command xentop -b -i 2 -d 1' --monitor-parser xentop:pcscf)"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Records

/// Wall-clock label (RFC 3339 UTC, ns).
fn label(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TriggerOut {
    /// `delay` or `threshold`.
    pub kind: String,
    pub condition: Option<String>,
    /// The threshold held (always true for a delay).
    pub fired: bool,
    /// The threshold did not hold within the timeout; the migration ran anyway.
    pub timed_out: bool,
    pub waited_s: f64,
    pub samples: u32,
    pub last_value: Option<f64>,
    /// The first error of the monitor, if any (the sample is then missing).
    pub monitor_error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct MigrationOut {
    pub command: String,
    pub exit_code: Option<i32>,
    /// The signal that ended the command, if one did.
    pub signal: Option<i32>,
    /// Killed after `--migrate-timeout`.
    pub timed_out: bool,
    pub started_utc: String,
    pub ended_utc: String,
    /// On the probe timeline (seconds since the probes' t = 0, as the probe report's gaps).
    pub start_s: f64,
    pub end_s: f64,
    /// End − start by the monotonic clock.
    pub duration_ms: f64,
    pub stdout: String,
    pub stderr: String,
}

/// A hypervisor event placed on the probe timeline.
#[derive(Clone, Debug, Serialize)]
pub struct EventOut {
    pub host: String,
    pub event: String,
    pub utc: String,
    /// Seconds since the probes' t = 0.
    pub t_s: f64,
    /// ± this much on `t_s`: the wall-clock ↔ monotonic conversion (see [`ClockOut`]) plus the
    /// event stamps' 1 µs resolution.
    pub bound_ms: f64,
}

/// The VM's real pause: the source's STOP to the destination's RESUME.
#[derive(Clone, Debug, Serialize)]
pub struct PauseOut {
    pub stop_s: f64,
    pub resume_s: f64,
    /// RESUME − STOP, both stamped by one host clock (1 µs resolution each).
    pub ms: f64,
    /// Placement of both edges on the probe timeline.
    pub bound_ms: f64,
    /// The lab's own figure, when it printed one.
    pub reported_ms: Option<f64>,
}

/// How well wall-clock times map onto the probe timeline during this trial.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClockOut {
    /// (wall − wall₀) − (mono − mono₀) at the trial's end: a clock step or slew since the
    /// anchor.
    pub drift_us: f64,
    /// Time taken to read the (wall, mono) pair at the end (µs).
    pub read_us: f64,
    /// The resulting bound on an event's placement (ms).
    pub bound_ms: f64,
}

/// The gaps of one layer that concern the migration.
#[derive(Clone, Debug, Serialize)]
pub struct LayerPick {
    pub layer: Layer,
    /// The largest reply gap overlapping the migration window; `None` when none reached
    /// `--min-gap`.
    pub reply_gap: Option<GapOut>,
    /// The largest loss window overlapping it.
    pub loss_window: Option<GapOut>,
    /// Reply gaps of the run outside the migration window (noise, or the load's effect).
    pub other_reply_gaps: usize,
    pub availability_pct: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetPick {
    pub target: String,
    pub dir: String,
    pub layers: Vec<LayerPick>,
}

/// The `--data-cmd` counter around the migration.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CounterOut {
    pub command: String,
    pub before: Option<f64>,
    pub after: Option<f64>,
    /// after − before, when both were read and it did not go backwards.
    pub bytes: Option<f64>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadOut {
    pub command: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Killed after `--load-drain`.
    pub killed: bool,
    /// It ended on its own before the trial's end (an error, or a profile that finished).
    pub ended_early: bool,
    pub report: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub reg_attempts: Option<u64>,
    pub reg_failed: Option<u64>,
    pub calls_attempted: Option<u64>,
    pub calls_failed: Option<u64>,
    pub late_requests: Option<u64>,
    pub rrd_max_ms: Option<f64>,
    pub srd_max_ms: Option<f64>,
}

/// `trial.json`.
#[derive(Clone, Debug, Serialize)]
pub struct TrialRecord {
    pub trial: u32,
    pub direction: String,
    pub status: String,
    pub failure: Option<String>,
    pub started_utc: String,
    pub ended_utc: String,
    pub trigger: Option<TriggerOut>,
    pub migration: Option<MigrationOut>,
    pub hypervisor: Option<HvReport>,
    pub data_counter: Option<CounterOut>,
    pub events: Vec<EventOut>,
    pub vm_pause: Option<PauseOut>,
    /// The migrating element first, then the others.
    pub targets: Vec<TargetPick>,
    pub load: Option<LoadOut>,
    pub clock: ClockOut,
    pub warnings: Vec<String>,
    pub row: TrialRow,
}

// ---------------------------------------------------------------------------------------------
// Pure helpers (unit-tested)

/// The largest gap that overlaps `[a, b]` (seconds), widened by `slack` on both sides.
pub fn pick_gap(gaps: &[GapOut], a: f64, b: f64, slack: f64) -> Option<&GapOut> {
    gaps.iter()
        .filter(|g| g.start_s <= b + slack && g.end_s >= a - slack)
        .max_by(|x, y| x.duration_ms.total_cmp(&y.duration_ms))
}

/// Seconds on the probe timeline of a wall-clock time in µs since the Unix epoch.
pub fn wall_us_to_probe_s(wall0: DateTime<Utc>, wall_us: i64) -> f64 {
    let w0 = wall0.timestamp() as i128 * 1_000_000_000 + wall0.timestamp_subsec_nanos() as i128;
    ((wall_us as i128 * 1000 - w0) as f64) / 1e9
}

/// The first STOP on the host the guest left and the first RESUME after it on the host it
/// reached (any host when the output does not say which).
pub fn stop_resume(
    events: &[hypervisor::HvEvent],
    from: Option<&str>,
    to: Option<&str>,
) -> Option<(i64, i64)> {
    let on = |e: &hypervisor::HvEvent, host: Option<&str>, ev: &str| {
        e.event.eq_ignore_ascii_case(ev) && host.is_none_or(|h| e.host == h)
    };
    let stop = events
        .iter()
        .filter(|e| on(e, from, "STOP"))
        .map(|e| e.wall_us)
        .min()?;
    let resume = events
        .iter()
        .filter(|e| on(e, to, "RESUME") && e.wall_us >= stop)
        .map(|e| e.wall_us)
        .min()?;
    Some((stop, resume))
}

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
    let r = &v["rfc6076"];
    out.rrd_max_ms = r["registration_request_delay"]["max_ms"].as_f64();
    out.srd_max_ms = r["session_request_delay"]["max_ms"].as_f64();
}

/// The trial's verdict: `(status, failure)`.
pub fn verdict(
    interrupted: bool,
    mig: Option<&MigrationOut>,
    hv: Option<&HvReport>,
) -> (String, Option<String>) {
    let mut why = Vec::new();
    match mig {
        None => why.push("the migration command did not run".to_string()),
        Some(m) => {
            if m.timed_out {
                why.push(format!(
                    "the migration command did not end within the timeout ({:.0} s) and was killed",
                    m.duration_ms / 1000.0
                ));
            } else if let Some(s) = m.signal {
                why.push(format!("the migration command was killed by signal {s}"));
            } else if m.exit_code != Some(0) {
                why.push(format!(
                    "the migration command exited with code {} (see {})",
                    m.exit_code.map_or("?".into(), |c| c.to_string()),
                    m.stderr
                ));
            }
        }
    }
    if let Some(h) = hv {
        if h.succeeded == Some(false) {
            why.push(format!(
                "{} reports status {}{}",
                h.format,
                h.status.as_deref().unwrap_or("?"),
                h.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    if interrupted {
        let w = if why.is_empty() {
            "interrupted (Ctrl-C)".to_string()
        } else {
            format!("interrupted (Ctrl-C); {}", why.join("; "))
        };
        return ("interrupted".into(), Some(w));
    }
    if why.is_empty() {
        ("ok".into(), None)
    } else {
        ("failed".into(), Some(why.join("; ")))
    }
}

// ---------------------------------------------------------------------------------------------
// The loop

fn log(msg: &str) {
    eprintln!("[{}] {msg}", label(Utc::now()));
}

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
    out: LoadOut,
    report: PathBuf,
}

fn start_load(spec: &LoadSpec, dir: &Path, target: &str) -> Result<LoadChild, String> {
    let report = dir.join("load.json");
    let series = dir.join("load-series.csv");
    let command = match spec {
        LoadSpec::Profile { imsload, profile } => format!(
            "exec {} --profile {} --target {} --report {} --series {} --quiet",
            shell_quote(&imsload.display().to_string()),
            shell_quote(&profile.display().to_string()),
            shell_quote(target),
            shell_quote(&report.display().to_string()),
            shell_quote(&series.display().to_string())
        ),
        LoadSpec::Command(c) => c
            .replace("{report}", &shell_quote(&report.display().to_string()))
            .replace("{series}", &shell_quote(&series.display().to_string()))
            .replace("{dir}", &shell_quote(&dir.display().to_string()))
            .replace("{target}", &shell_quote(target)),
    };
    let (so, se) = (dir.join("load.stdout"), dir.join("load.stderr"));
    let child = spawn_sh(&command, &so, &se, &[])
        .map_err(|e| format!("cannot start the load ({command}): {e}"))?;
    register_group(child.id() as i32);
    Ok(LoadChild {
        child,
        out: LoadOut {
            command,
            stdout: so.display().to_string(),
            stderr: se.display().to_string(),
            ..LoadOut::default()
        },
        report,
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
    unregister_group(pgid);
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
    l.out
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
                    log(&format!(
                        "monitor {}: {e} (logged once)",
                        spec.condition.metric
                    ));
                    out.monitor_error = Some(e);
                }
            }
        }
        if Instant::now() >= deadline {
            out.timed_out = true;
            if !quiet {
                log(&format!(
                    "trigger {:?} did not hold within {}; migrating anyway (recorded in trial.json)",
                    spec.text,
                    humantime::format_duration(spec.timeout)
                ));
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

fn run_migration(
    command: &str,
    dir: &Path,
    env: &[(&str, String)],
    clock: ProbeClock,
    timeout: Duration,
    stop: &Trigger,
) -> Result<MigrationOut, String> {
    let (so, se) = (dir.join("migrate.stdout"), dir.join("migrate.stderr"));
    let wall0 = Utc::now();
    let t0 = clock.now_ns();
    let mut child = spawn_sh(command, &so, &se, env)
        .map_err(|e| format!("cannot start the migration command {command:?}: {e}"))?;
    let pgid = child.id() as i32;
    register_group(pgid);
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
                return Err("lost the migration command's waiter".into())
            }
            Err(_) => {}
        }
        if stop.reason() != StopReason::Running && !told {
            told = true;
            log("waiting for the migration command to end (a half-done migration is not interrupted; Ctrl-C again quits at once)");
        }
        if started.elapsed() > timeout {
            match killed_at {
                None => {
                    timed_out = true;
                    log(&format!(
                        "the migration command ran longer than {}; sending SIGTERM",
                        humantime::format_duration(timeout)
                    ));
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
    unregister_group(pgid);
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
fn read_counter(command: &str) -> Result<f64, String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run --data-cmd {command:?}: {e}"))?;
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
                return Err(format!("--data-cmd {command:?} did not finish within 10 s"));
            }
        }
    }
    let o = child
        .wait_with_output()
        .map_err(|e| format!("--data-cmd {command:?}: {e}"))?;
    let text = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        return Err(format!(
            "--data-cmd {command:?} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    crate::profile::monitor::first_number(&text).ok_or_else(|| {
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

fn layer_pick(r: &TargetResult, window: Option<(f64, f64)>) -> Vec<LayerPick> {
    r.report
        .layers
        .iter()
        .map(|l| {
            let slack = r.report.params.interval_ms / 1e3;
            let (rg, lw) = match window {
                Some((a, b)) => (
                    pick_gap(&l.reply_gaps, a, b, slack).cloned(),
                    pick_gap(&l.loss_windows, a, b, slack).cloned(),
                ),
                None => (None, None),
            };
            LayerPick {
                layer: l.layer,
                other_reply_gaps: l.reply_gaps.len() - usize::from(rg.is_some()),
                reply_gap: rg,
                loss_window: lw,
                availability_pct: l.summary.availability_pct,
            }
        })
        .collect()
}

struct TrialCtx<'a> {
    cfg: &'a TrialsConfig,
    stop: &'a Trigger,
    index: u32,
    dir: PathBuf,
    direction: &'static str,
    command: String,
}

fn run_trial(t: &TrialCtx) -> anyhow::Result<TrialRecord> {
    let cfg = t.cfg;
    std::fs::create_dir_all(&t.dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create {}: {e} (choose another --out DIR)",
            t.dir.display()
        )
    })?;
    let tag = format!("trial {}/{} {}", t.index, cfg.trials, t.direction);
    let started = Utc::now();
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
    let target = cfg.probe.targets[0].addr.to_string();
    log(&format!(
        "{tag}: probing {} ({}), baseline {}",
        cfg.probe.targets[0].name,
        target,
        humantime::format_duration(cfg.before)
    ));
    let mut cut = wait(cfg.before, t.stop, &probe);
    let mut load = None;
    if cut.is_none() {
        if let Some(spec) = &cfg.load {
            match start_load(spec, &t.dir, &target) {
                Ok(l) => {
                    log(&format!("{tag}: load started: {}", l.out.command));
                    load = Some(l);
                }
                Err(e) => {
                    ptrig.stop(StopReason::Error);
                    let _ = probe.join();
                    anyhow::bail!(e);
                }
            }
        }
    }
    let mut trigger_out = None;
    if cut.is_none() {
        match &cfg.start {
            StartRule::Delay(d) => {
                let t0 = Instant::now();
                cut = wait(*d, t.stop, &probe);
                trigger_out = Some(TriggerOut {
                    kind: "delay".into(),
                    fired: cut.is_none(),
                    waited_s: t0.elapsed().as_secs_f64(),
                    ..TriggerOut::default()
                });
            }
            StartRule::Trigger(spec) => {
                log(&format!("{tag}: waiting for {:?}", spec.text));
                let (o, c) = wait_trigger(spec, t.stop, &probe, false);
                if o.fired {
                    log(&format!(
                        "{tag}: {:?} holds ({:.1}) after {:.1} s",
                        spec.text,
                        o.last_value.unwrap_or(f64::NAN),
                        o.waited_s
                    ));
                }
                if o.timed_out {
                    warnings.push(format!(
                        "the trigger {:?} did not hold within {}; the migration ran anyway (last value {})",
                        spec.text,
                        humantime::format_duration(spec.timeout),
                        o.last_value.map_or("none".into(), |v| format!("{v:.1}"))
                    ));
                }
                trigger_out = Some(o);
                cut = c;
            }
        }
    }
    let mut migration = None;
    let mut data_counter: Option<CounterOut> = None;
    if cut.is_none() {
        log(&format!("{tag}: migration command: {}", t.command));
        let env = [
            ("IMSPROBE_TRIAL", t.index.to_string()),
            ("IMSPROBE_DIRECTION", t.direction.to_string()),
            ("IMSPROBE_TRIAL_DIR", t.dir.display().to_string()),
        ];
        let mut counter = cfg.data_cmd.as_ref().map(|c| CounterOut {
            command: c.clone(),
            ..CounterOut::default()
        });
        if let Some(c) = &mut counter {
            match read_counter(&c.command) {
                Ok(v) => c.before = Some(v),
                Err(e) => c.error = Some(e),
            }
        }
        let m = run_migration(&t.command, &t.dir, &env, clock, cfg.migrate_timeout, t.stop);
        if let Some(c) = &mut counter {
            if c.error.is_none() {
                match read_counter(&c.command) {
                    Ok(v) => c.after = Some(v),
                    Err(e) => c.error = Some(e),
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
            if let Some(e) = &c.error {
                warnings.push(e.clone());
            }
        }
        data_counter = counter;
        match m {
            Ok(m) => {
                log(&format!(
                    "{tag}: migration command ended after {:.1} ms, exit {}",
                    m.duration_ms,
                    m.exit_code.map_or_else(
                        || format!("signal {}", m.signal.unwrap_or(0)),
                        |c| c.to_string()
                    )
                ));
                migration = Some(m);
            }
            Err(e) => warnings.push(e),
        }
        if t.stop.reason() == StopReason::Running {
            cut = wait(cfg.after, t.stop, &probe);
        } else {
            cut = Some(Cut::Interrupted);
        }
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
    let clock_out = clock_check(&clock);
    let interrupted = t.stop.reason() != StopReason::Running;

    // The hypervisor's view.
    let hv = migration.as_ref().and_then(|m| {
        let so = std::fs::read_to_string(&m.stdout).unwrap_or_default();
        let se = std::fs::read_to_string(&m.stderr).unwrap_or_default();
        hypervisor::detect(&so, &se)
    });
    if migration.is_some() && hv.is_none() {
        warnings.push("the migration command printed no hypervisor report this tool reads (lab JSON, QMP query-migrate, virsh domjobinfo --completed, xl migrate): no hypervisor downtime, and no data transferred unless --data-cmd counts it".into());
    }
    let wall0 = clock.epoch.wall;
    let mut events = Vec::new();
    let mut vm_pause = None;
    if let Some(h) = &hv {
        for e in &h.events {
            let ts = wall_us_to_probe_s(wall0, e.wall_us);
            events.push(EventOut {
                host: e.host.clone(),
                event: e.event.clone(),
                utc: DateTime::<Utc>::from_timestamp_micros(e.wall_us)
                    .map(label)
                    .unwrap_or_default(),
                t_s: ts,
                bound_ms: clock_out.bound_ms,
            });
        }
        if let Some((stop, resume)) = stop_resume(&h.events, h.from.as_deref(), h.to.as_deref()) {
            vm_pause = Some(PauseOut {
                stop_s: wall_us_to_probe_s(wall0, stop),
                resume_s: wall_us_to_probe_s(wall0, resume),
                ms: (resume - stop) as f64 / 1e3,
                bound_ms: clock_out.bound_ms,
                reported_ms: h.stop_to_resume_ms,
            });
        }
    }
    // The window the gaps must overlap: the migration command, widened to the VM's pause
    // where the events put it outside (a command that returns before the guest runs again).
    let window = migration.as_ref().map(|m| {
        let (mut a, mut b) = (m.start_s, m.end_s);
        if let Some(p) = &vm_pause {
            a = a.min(p.stop_s - p.bound_ms / 1e3);
            b = b.max(p.resume_s + p.bound_ms / 1e3);
        }
        (a, b)
    });
    let targets: Vec<TargetPick> = results
        .iter()
        .map(|r| TargetPick {
            target: r.target.name.clone(),
            dir: r.dir.display().to_string(),
            layers: layer_pick(r, window),
        })
        .collect();
    for r in &results {
        for w in &r.report.warnings {
            warnings.push(format!("probe {}: {w}", r.target.name));
        }
    }
    let (status, failure) = verdict(interrupted, migration.as_ref(), hv.as_ref());
    let main = targets.first();
    let gap = |layer: Layer| -> (Option<f64>, Option<f64>) {
        let Some(lp) = main.and_then(|t| t.layers.iter().find(|l| l.layer == layer)) else {
            return (None, None);
        };
        if migration.is_none() {
            return (None, None);
        }
        match &lp.reply_gap {
            Some(g) => (Some(g.duration_ms), Some(g.error_bound_ms)),
            None => (Some(0.0), Some(results[0].report.params.interval_ms)),
        }
    };
    let (sip_gap_ms, sip_gap_bound_ms) = gap(Layer::Sip);
    let (icmp_gap_ms, icmp_gap_bound_ms) = gap(Layer::Icmp);
    let (diameter_gap_ms, diameter_gap_bound_ms) = gap(Layer::Diameter);
    let loss = |layer: Layer| -> Option<f64> {
        let lp = main.and_then(|t| t.layers.iter().find(|l| l.layer == layer))?;
        migration.as_ref()?;
        Some(lp.loss_window.as_ref().map_or(0.0, |g| g.duration_ms))
    };
    let hv_bytes = hv
        .as_ref()
        .and_then(|h| h.transferred_bytes)
        .map(|b| b as f64);
    let counter_bytes = data_counter.as_ref().and_then(|c| c.bytes);
    let row = TrialRow {
        trial: t.index,
        direction: t.direction.into(),
        status: status.clone(),
        failure: failure.clone(),
        started_utc: label(started),
        exit_code: migration.as_ref().and_then(|m| m.exit_code),
        hv_format: hv.as_ref().map(|h| h.format.to_string()),
        migration_ms: migration.as_ref().map(|m| m.duration_ms),
        hv_total_ms: hv.as_ref().and_then(|h| h.total_time_ms),
        data_mb: hv_bytes.or(counter_bytes).map(|b| b / 1e6),
        data_source: if hv_bytes.is_some() {
            Some("hypervisor".into())
        } else {
            counter_bytes.map(|_| "counter".into())
        },
        hv_downtime_ms: hv.as_ref().and_then(|h| h.downtime_ms),
        vm_pause_ms: vm_pause.as_ref().map(|p| p.ms),
        sip_gap_ms,
        sip_gap_bound_ms,
        icmp_gap_ms,
        icmp_gap_bound_ms,
        sip_loss_ms: loss(Layer::Sip),
        icmp_loss_ms: loss(Layer::Icmp),
        diameter_gap_ms,
        diameter_gap_bound_ms,
        diameter_loss_ms: loss(Layer::Diameter),
        reg_failed: load_out.as_ref().and_then(|l| l.reg_failed),
        calls_failed: load_out.as_ref().and_then(|l| l.calls_failed),
        late_requests: load_out.as_ref().and_then(|l| l.late_requests),
    };
    let rec = TrialRecord {
        trial: t.index,
        direction: t.direction.into(),
        status,
        failure,
        started_utc: label(started),
        ended_utc: label(Utc::now()),
        trigger: trigger_out,
        migration,
        hypervisor: hv,
        data_counter,
        events,
        vm_pause,
        targets,
        load: load_out,
        clock: clock_out,
        warnings,
        row,
    };
    let path = t.dir.join("trial.json");
    probe_report::write_json(&path, &rec)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    let fmt = |v: Option<f64>, b: Option<f64>| match (v, b) {
        (Some(0.0), _) => format!("< {:.0} ms", cfg.probe.min_gap.as_secs_f64() * 1e3),
        (Some(v), Some(b)) => format!("{v:.1} ± {b:.1} ms"),
        _ => "–".into(),
    };
    log(&format!(
        "{tag}: {}{}; SIP gap {}, ICMP gap {}{}{}{}",
        rec.status,
        rec.failure
            .as_deref()
            .map(|f| format!(" ({f})"))
            .unwrap_or_default(),
        fmt(rec.row.sip_gap_ms, rec.row.sip_gap_bound_ms),
        fmt(rec.row.icmp_gap_ms, rec.row.icmp_gap_bound_ms),
        match rec.row.diameter_gap_ms {
            Some(_) => format!(
                ", Diameter gap {}",
                fmt(rec.row.diameter_gap_ms, rec.row.diameter_gap_bound_ms)
            ),
            None => String::new(),
        },
        rec.row
            .hv_downtime_ms
            .map(|d| format!(", hypervisor downtime {d:.1} ms"))
            .unwrap_or_default(),
        rec.row
            .vm_pause_ms
            .map(|d| format!(", STOP→RESUME {d:.1} ms"))
            .unwrap_or_default(),
    ));
    Ok(rec)
}

/// The `--also` targets' largest gaps during each migration, for the summary.
fn others_markdown(records: &[TrialRecord]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if records.iter().all(|r| r.targets.len() < 2) {
        return s;
    }
    let _ = writeln!(
        s,
        "\n## The other targets during each migration\n\n| trial | target | SIP gap ms | ICMP gap ms |\n|---|---|---|---|"
    );
    for r in records {
        for t in r.targets.iter().skip(1) {
            let cell = |l: Layer| {
                t.layers
                    .iter()
                    .find(|x| x.layer == l)
                    .map_or("–".to_string(), |x| {
                        x.reply_gap.as_ref().map_or("none".to_string(), |g| {
                            format!("{:.1} ± {:.1}", g.duration_ms, g.error_bound_ms)
                        })
                    })
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                r.trial,
                t.target,
                cell(Layer::Sip),
                cell(Layer::Icmp)
            );
        }
    }
    s
}

/// Writes trials.csv, trials.json, summary.md and the plots; returns the summary.
fn write_table(
    cfg: &TrialsConfig,
    records: &[TrialRecord],
    notes: &[String],
) -> anyhow::Result<String> {
    let rows: Vec<TrialRow> = records.iter().map(|r| r.row.clone()).collect();
    let dir = &cfg.out;
    let w = |name: &str, text: &str| -> anyhow::Result<()> {
        let p = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &p))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))
    };
    w("trials.csv", &table::csv(&rows))?;
    let stats: serde_json::Map<String, serde_json::Value> = table::column_stats(&rows)
        .into_iter()
        .map(|(k, s)| (k.to_string(), serde_json::to_value(s).unwrap_or_default()))
        .collect();
    let trends: serde_json::Map<String, serde_json::Value> = table::COLUMNS
        .iter()
        .map(|c| {
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.status == "ok")
                .filter_map(|r| (c.get)(r).map(|v| (r.trial as f64, v)))
                .collect();
            (
                c.key.to_string(),
                serde_json::to_value(table::Trend::fit(&pts)).unwrap_or_default(),
            )
        })
        .collect();
    let json = serde_json::json!({
        "tool": "imsprobe trials",
        "version": env!("CARGO_PKG_VERSION"),
        "target": cfg.probe.targets[0].name,
        "migrate": cfg.migrate,
        "back": cfg.back,
        "trials_planned": cfg.trials,
        "rate": cfg.probe.rate,
        "min_gap_ms": cfg.probe.min_gap.as_secs_f64() * 1e3,
        "rows": rows,
        "stats_over_ok_trials": stats,
        "trend_per_trial": trends,
        "records": records,
        "notes": notes,
    });
    let text = serde_json::to_string_pretty(&json)?;
    w("trials.json", &(text + "\n"))?;
    let title = format!(
        "Migration trials: {} ({})",
        cfg.probe.targets[0].name, cfg.migrate
    );
    let mut md = table::markdown(&rows, &title, cfg.probe.min_gap.as_secs_f64() * 1e3, notes);
    md.push_str(&others_markdown(records));
    w("summary.md", &md)?;
    if cfg.plot {
        let short = format!("Migration trials: {}", cfg.probe.targets[0].name);
        for (name, svg) in super::plot::all(&rows, &short) {
            w(&format!("{name}.svg"), &svg)?;
            if let Err(e) = crate::probe::plot::png(&svg, &dir.join(format!("{name}.png"))) {
                log(&format!("no PNG for {name}: {e}"));
            }
        }
    }
    Ok(md)
}

/// Runs every trial (until `stop` fires) and writes the table. Errors only for setup problems
/// (output folder, probe sockets, a load that cannot start); a failed migration is a row.
pub fn run(cfg: &TrialsConfig, stop: &Trigger) -> anyhow::Result<TrialsOutcome> {
    anyhow::ensure!(cfg.trials >= 1, "--trials must be at least 1");
    anyhow::ensure!(
        !cfg.probe.targets.is_empty(),
        "no target: give --target NAME|HOST:PORT"
    );
    anyhow::ensure!(
        !cfg.migrate.trim().is_empty(),
        "--migrate is empty: give the command that migrates the VM"
    );
    std::fs::create_dir_all(&cfg.out).map_err(|e| {
        anyhow::anyhow!(
            "cannot create {}: {e} (choose another --out DIR)",
            cfg.out.display()
        )
    })?;
    let mut notes = Vec::new();
    if cfg.back.is_none() {
        notes.push("no --back command: every trial ran the same --migrate command".to_string());
    }
    let mut records: Vec<TrialRecord> = Vec::new();
    let mut summary = String::new();
    for i in 1..=cfg.trials {
        if stop.reason() != StopReason::Running {
            break;
        }
        let (direction, command) = match (&cfg.back, i % 2) {
            (Some(b), 0) => ("back", b.clone()),
            _ => ("migrate", cfg.migrate.clone()),
        };
        let ctx = TrialCtx {
            cfg,
            stop,
            index: i,
            dir: cfg.out.join(format!("trial-{i:03}")),
            direction,
            command,
        };
        let rec = run_trial(&ctx);
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                // Setup failure: keep what the earlier trials measured.
                if !records.is_empty() {
                    let _ = write_table(cfg, &records, &notes);
                }
                return Err(e);
            }
        };
        records.push(rec);
        summary = write_table(cfg, &records, &notes)?;
        if i < cfg.trials && stop.reason() == StopReason::Running {
            log(&format!(
                "pause {} before trial {}",
                humantime::format_duration(cfg.pause),
                i + 1
            ));
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
        summary = write_table(cfg, &records, &notes)?;
    }
    Ok(TrialsOutcome {
        dir: cfg.out.clone(),
        rows: records.iter().map(|r| r.row.clone()).collect(),
        interrupted,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::analysis::GapKind;

    fn gap(a: f64, b: f64) -> GapOut {
        GapOut {
            layer: Layer::Sip,
            kind: GapKind::ReplyGap,
            start_utc: String::new(),
            end_utc: String::new(),
            start_s: a,
            end_s: b,
            duration_ms: (b - a) * 1e3,
            error_bound_ms: 1.0,
            open_start: false,
            open_end: false,
            probes_lost: 0,
            failed_replies: 0,
            late_replies: 0,
            answered_after: 0,
            loss_estimate_ms: None,
            max_rtt_ms: None,
        }
    }

    #[test]
    fn the_largest_gap_overlapping_the_window_is_picked() {
        let gaps = vec![gap(1.0, 1.05), gap(5.0, 5.4), gap(5.5, 5.6), gap(9.0, 10.0)];
        // Window 4.9..5.7: the 400 ms gap, not the 1 s one outside it.
        let g = pick_gap(&gaps, 4.9, 5.7, 0.001).unwrap();
        assert_eq!(g.start_s, 5.0);
        // A gap starting just after the command ended still counts within the slack.
        assert_eq!(pick_gap(&gaps, 8.0, 8.9995, 0.001).unwrap().start_s, 9.0);
        assert!(pick_gap(&gaps, 2.0, 4.0, 0.001).is_none());
    }

    #[test]
    fn stop_resume_and_wall_clock_placement() {
        use hypervisor::HvEvent;
        let ev = |h: &str, e: &str, t: i64| HvEvent {
            host: h.into(),
            event: e.into(),
            wall_us: t,
        };
        let evs = vec![
            ev("dst", "RESUME", 100),
            ev("src", "MIGRATION", 500),
            ev("src", "STOP", 1_000),
            ev("dst", "RESUME", 1_308),
        ];
        assert_eq!(
            stop_resume(&evs, Some("src"), Some("dst")),
            Some((1_000, 1_308))
        );
        assert_eq!(stop_resume(&evs[..2], Some("src"), Some("dst")), None);
        // The way back: the guest leaves dst.
        let back = vec![
            ev("src", "RESUME", 50),
            ev("dst", "STOP", 2_000),
            ev("src", "RESUME", 2_250),
        ];
        assert_eq!(
            stop_resume(&back, Some("dst"), Some("src")),
            Some((2_000, 2_250))
        );
        assert_eq!(stop_resume(&back, None, None), Some((2_000, 2_250)));
        let w0 = DateTime::<Utc>::from_timestamp(1_764_052_800, 500_000_000).unwrap();
        let s = wall_us_to_probe_s(w0, 1_764_052_801_250_000);
        assert!((s - 0.75).abs() < 1e-9, "{s}");
        let s = wall_us_to_probe_s(w0, 1_764_052_800_000_000);
        assert!((s + 0.5).abs() < 1e-9, "{s}");
    }

    #[test]
    fn monitor_specs_parse_with_clear_errors() {
        assert!(matches!(
            parse_monitor("process kamailio", None).unwrap(),
            Source::Process { name: Some(n), .. } if n == "kamailio"
        ));
        assert!(matches!(
            parse_monitor("pid 42", None).unwrap(),
            Source::Process { pids, .. } if pids == [42]
        ));
        assert!(matches!(
            parse_monitor("cgroup /sys/fs/cgroup/x", None).unwrap(),
            Source::Cgroup { .. }
        ));
        match parse_monitor("command xentop -b -i 2 -d 1", Some("xentop:pcscf")).unwrap() {
            Source::Command { command, parser } => {
                assert_eq!(command, "xentop -b -i 2 -d 1");
                assert_eq!(
                    parser,
                    Parser::Xentop {
                        domain: "pcscf".into()
                    }
                );
            }
            s => panic!("{s:?}"),
        }
        assert!(parse_monitor("pid x", None)
            .unwrap_err()
            .contains("not a pid"));
        assert!(parse_monitor("process", None)
            .unwrap_err()
            .contains("needs a process name"));
        assert!(parse_monitor("disk sda", None)
            .unwrap_err()
            .contains("process, pid, cgroup or command"));
        assert!(parse_monitor("command true", Some("xentop"))
            .unwrap_err()
            .contains("xentop:DOMAIN"));
        assert!(parse_monitor("pid 1", Some("number")).is_err());
    }

    #[test]
    fn verdicts() {
        let ok = MigrationOut {
            exit_code: Some(0),
            stderr: "e".into(),
            ..MigrationOut::default()
        };
        assert_eq!(verdict(false, Some(&ok), None), ("ok".into(), None));
        let bad = MigrationOut {
            exit_code: Some(1),
            ..ok.clone()
        };
        let (s, f) = verdict(false, Some(&bad), None);
        assert_eq!(s, "failed");
        assert!(f.unwrap().contains("exited with code 1"));
        let hv = HvReport {
            format: "qmp",
            status: Some("failed".into()),
            succeeded: Some(false),
            error: Some("socket closed".into()),
            ..HvReport::default()
        };
        let (s, f) = verdict(false, Some(&ok), Some(&hv));
        assert_eq!(s, "failed");
        assert!(f.unwrap().contains("socket closed"));
        let (s, f) = verdict(true, None, None);
        assert_eq!(s, "interrupted");
        assert!(f.unwrap().contains("did not run"));
    }

    #[test]
    fn load_report_figures() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"counters":{"reg_attempts":10,"rereg_attempts":5,"reg_failed":1,"reg_timeouts":2,"rereg_failed":0,"calls_attempted":100,"calls_failed":3,"calls_timeout":1,"retransmits":7},
                "rfc6076":{"registration_request_delay":{"max_ms":512.5},"session_request_delay":{"max_ms":900.0}}}"#,
        )
        .unwrap();
        let mut o = LoadOut::default();
        load_figures(&mut o, &v);
        assert_eq!(o.reg_attempts, Some(15));
        assert_eq!(o.reg_failed, Some(3));
        assert_eq!(o.calls_failed, Some(4));
        assert_eq!(o.late_requests, Some(7));
        assert_eq!(o.rrd_max_ms, Some(512.5));
        let mut o = LoadOut::default();
        load_figures(&mut o, &serde_json::json!({}));
        assert_eq!(o.reg_failed, None);
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/a/b.toml"), "/a/b.toml");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
