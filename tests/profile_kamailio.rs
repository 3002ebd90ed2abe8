//! Load profiles against Kamailio from Debian (lab/kamailio/kamailio.cfg): stepped rates, a
//! ramp stopped by a threshold on Kamailio's own CPU, a capacity search against a deliberately
//! small Kamailio, and profiles that must be refused. imsload runs as a user runs it; the
//! assertions read its JSON report and per-second series.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const IMSLOAD: &str = env!("CARGO_BIN_EXE_imsload");

struct Run {
    code: i32,
    report: Value,
    series: Vec<Value>,
    stderr: String,
}

/// Runs `imsload --profile <text> --target <kam>` with report and series, within `limit`.
fn run_profile(kam: &Kamailio, profile: &str, extra: &[&str], limit: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let prof = dir.path().join("profile.toml");
    std::fs::write(&prof, profile).unwrap();
    let report = dir.path().join("report.json");
    let series = dir.path().join("series.jsonl");
    let child = Command::new(IMSLOAD)
        .arg("--profile")
        .arg(&prof)
        .args(["--target", &kam.addr().to_string()])
        .arg("--report")
        .arg(&report)
        .arg("--series")
        .arg(&series)
        .arg("--quiet")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run imsload");
    let out = wait_bounded(child, limit, "imsload");
    let stderr = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text =
        std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("no report ({e})\n{stderr}"));
    // The run's plot lies beside the report, as SVG and PNG (a capacity search adds its own).
    for ext in ["svg", "png"] {
        let p = report.with_extension(ext);
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "{} missing or empty\n{stderr}", p.display());
    }
    if profile.contains("[capacity]") {
        assert!(dir.path().join("report-capacity.png").exists(), "{stderr}");
    }
    let series = std::fs::read_to_string(&series)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("series rows are JSON"))
        .collect();
    Run {
        code: out.status.code().unwrap_or(-1),
        report: serde_json::from_str(&text).expect("report is JSON"),
        series,
        stderr,
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

#[test]
fn stepped_profile_achieves_each_step_within_2_percent() {
    let kam = Kamailio::start(KamailioOpts {
        users: 100,
        ..KamailioOpts::default()
    })
    .expect("kamailio");
    let profile = r#"
[population]
count = 100
reg_rate = 200
[scenario]
hold = { dist = "fixed", mean = "1s" }
[[phase]]
name = "up"
steps = { from = 40, to = 120, step = 40, each = "4s" }
"#;
    let r = run_profile(&kam, profile, &[], Duration::from_secs(60));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let phases = r.report["plan"]["phases"].as_array().expect("plan phases");
    let names: Vec<&str> = phases
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["up step 1", "up step 2", "up step 3"],
        "{}",
        r.stderr
    );
    for (p, want) in phases.iter().zip([40.0, 80.0, 120.0]) {
        assert_eq!(p["seconds"], 4);
        assert!((f(&p["offered_rate"]) - want).abs() < 1e-9);
        let achieved = f(&p["achieved_rate"]);
        assert!(
            (achieved / want - 1.0).abs() <= 0.02,
            "{}: achieved {achieved}/s for {want}/s\n{}",
            p["phase"],
            r.stderr
        );
    }
    // The target's side: calls answered through Kamailio in each step's seconds, against the
    // step (answers come within ms, so a step's calls are answered within its seconds, give or
    // take the one placed at its very end).
    for (name, want) in [
        ("up step 1", 160.0),
        ("up step 2", 320.0),
        ("up step 3", 480.0),
    ] {
        let answered: f64 = r
            .series
            .iter()
            .filter(|row| row["plan_phase"].as_str() == Some(name))
            .map(|row| f(&row["calls_answered"]))
            .sum();
        assert!(
            (answered - want).abs() <= want * 0.02 + 1.0,
            "{name}: {answered} answered of {want}\n{}",
            r.stderr
        );
    }
    assert_eq!(r.report["counters"]["calls_failed"], 0);
}

#[test]
fn threshold_on_kamailio_cpu_stops_the_ramp_within_one_step() {
    let kam = Kamailio::start(KamailioOpts {
        users: 100,
        children: 1,
        ..KamailioOpts::default()
    })
    .expect("kamailio");
    let pids: Vec<String> = kam.pids().iter().map(|p| p.to_string()).collect();
    // Kamailio's whole process group is the monitored element, as `xentop` would watch a VM.
    let profile = format!(
        r#"
[population]
count = 100
reg_rate = 200
[scenario]
hold = {{ dist = "fixed", mean = "1s" }}
[[phase]]
name = "ramp"
steps = {{ from = 50, to = 5000, step = 100, each = "3s" }}
until = "cpu > 8%"
hold_after = "4s"
[[monitor]]
name = "cpu"
kind = "process"
process = "{}"
interval = "1s"
"#,
        pids.join(",")
    );
    let r = run_profile(&kam, &profile, &[], Duration::from_secs(240));
    let events = r.report["plan"]["events"].as_array().expect("events");
    assert!(
        events
            .iter()
            .any(|e| e["what"].as_str().unwrap().starts_with("threshold reached")),
        "the threshold was never reached: {events:?}\n{}",
        r.stderr
    );
    // The first second in which the controller saw the monitor over the threshold, and the rate
    // then in force; no second after may offer more than one step above it.
    let first = r
        .series
        .iter()
        .position(|row| row["mon_cpu"].as_f64().is_some_and(|v| v > 8.0))
        .expect("a second over the threshold");
    let at_crossing = r.series[..=first]
        .iter()
        .rev()
        .find_map(|row| row["offered_rate"].as_f64())
        .unwrap_or(0.0);
    let max_after = r
        .series
        .iter()
        .filter_map(|row| row["offered_rate"].as_f64())
        .fold(0.0, f64::max);
    eprintln!(
        "threshold crossed at {at_crossing}/s (second {first}); highest rate after: {max_after}/s"
    );
    assert!(
        max_after <= at_crossing + 100.0 + 1e-9,
        "rate went on to {max_after}/s after crossing at {at_crossing}/s\n{}",
        r.stderr
    );
    // It held for hold_after at the rate reached, then the plan ended on its own.
    let held: Vec<f64> = r
        .series
        .iter()
        .filter(|row| row["plan_phase"].as_str() == Some("hold at threshold"))
        .map(|row| f(&row["offered_rate"]))
        .collect();
    assert_eq!(held.len(), 4, "{}", r.stderr);
    assert!(held.iter().all(|x| *x == held[0] && *x <= max_after));
    assert_eq!(r.report["stop_reason"], "duration", "{}", r.stderr);
}

#[test]
fn capacity_search_against_a_small_kamailio_finds_its_capacity_and_stops() {
    // One worker, each request holding it 2 ms: about 500 requests/s, i.e. some 160 calls/s
    // (INVITE, ACK, BYE each cross it) whatever machine runs the test.
    let kam = Kamailio::start(KamailioOpts {
        users: 100,
        children: 1,
        slow_us: 2000,
        ..KamailioOpts::default()
    })
    .expect("kamailio");
    let profile = r#"
[population]
count = 100
reg_rate = 100
[scenario]
hold = { dist = "fixed", mean = "1s" }
objective = "300ms"
[capacity]
from = 40
step = 40
max = 2000
each = "4s"
limit_pct = 1.0
"#;
    let r = run_profile(&kam, profile, &["--drain", "20s"], Duration::from_secs(300));
    let cap = &r.report["plan"]["capacity"];
    let steps = cap["steps"].as_array().expect("capacity steps");
    let doc = cap["design_objective_capacity"]
        .as_f64()
        .unwrap_or_else(|| panic!("no capacity found: {cap}\n{}", r.stderr));
    assert!(
        (40.0..=400.0).contains(&doc),
        "capacity {doc}/s is not that of a 500 requests/s element: {cap}"
    );
    let last = steps.last().unwrap();
    assert_eq!(last["passed"], false, "{cap}");
    assert!(f(&last["inadequate_pct"]) > 1.0);
    assert!(
        cap["ended"]
            .as_str()
            .unwrap()
            .contains("inadequately handled"),
        "{cap}"
    );
    eprintln!("capacity search: {cap}");
    // The search stopped at the failing step instead of running on to its maximum.
    assert!(steps.len() < 15, "{cap}");
    assert!(f(&steps[steps.len() - 2]["rate"]) == doc);
}

#[test]
fn bad_profiles_are_refused_with_the_field_and_line_named() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, text: &str, want: &[&str]| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let out = Command::new(IMSLOAD)
            .arg("--profile")
            .arg(&p)
            .arg("--dry-run")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        for w in want {
            assert!(err.contains(w), "{name}: {w:?} not in {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    };
    check(
        "unknown.toml",
        "[population]\ncount = 10\n\n[scenario]\nholdtime = \"5s\"\n",
        &["line 5", "holdtime"],
    );
    check(
        "negative.toml",
        "[[phase]]\nname = \"a\"\nrate = -5\nduration = \"10s\"\n",
        &["negative.toml:3", "phase[0].rate", "negative"],
    );
    check(
        "mix.toml",
        "[scenario.mix]\ncall = 0.5\nmessage = 0.2\n",
        &["scenario.mix", "add up to 0.7"],
    );
    let missing = dir.path().join("nope.toml");
    let out = Command::new(IMSLOAD)
        .arg("--profile")
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read profile"));
}

#[test]
fn dry_run_prints_the_plan_and_flags_override_the_profile() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/overload.toml");
    let out = Command::new(IMSLOAD)
        .arg("--profile")
        .arg(&p)
        .args(["--dry-run", "--users", "7", "--duration", "45s"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("warm up") && text.contains("ramp step 1"),
        "{text}"
    );
    assert!(
        text.contains("7 users"),
        "--users overrides the profile: {text}"
    );
    // --duration cuts the plan: 30 s warm-up + 10 s + 5 s of the second step.
    assert!(!text.contains("ramp step 3"), "{text}");
    assert!(text.contains("total: 45 s"), "{text}");
}
