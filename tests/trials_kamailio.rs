//! `imsprobe trials` end to end against a real Kamailio on loopback. The "migration" is a script
//! that SIGSTOPs the whole Kamailio instance for ~400 ms (what a VM's stop-and-copy looks like to
//! its clients) and prints a `virsh domjobinfo --completed` text; the way back is a command that
//! fails. A load (imsload, registering and calling through Kamailio) runs during each trial.
//! Checked: every file exists and parses, each good trial's SIP gap matches the pause within the
//! probe's bound, the failed migration is a failed row and the next trial still runs, and Ctrl-C
//! records the current trial as interrupted and still writes the table.
//!
//! The tests of this file run one at a time (a shared lock): they measure time.

mod common;

use common::{f, json, layer, serial, Kamailio, KamailioOpts};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("imsprobe-trials")
        .tempdir()
        .unwrap()
}

/// Pauses the Kamailio process group for 400 ms, stamping before and after each signal
/// (CLOCK_REALTIME ns, `date +%s%N`) into `STEM.ns` in the trial folder (and the step and
/// element imsprobe names in `STEM.env`), then prints what virsh would.
fn pause_script(dir: &Path, pgid: i32, stem: &str) -> String {
    let p = dir.join(format!("{stem}.sh"));
    std::fs::write(
        &p,
        format!(
            r#"#!/bin/bash
set -e
a=$(date +%s%N); kill -STOP -- -{pgid}; b=$(date +%s%N)
sleep 0.4
c=$(date +%s%N); kill -CONT -- -{pgid}; d=$(date +%s%N)
echo "$a $b $c $d" > "$IMSPROBE_TRIAL_DIR/{stem}.ns"
echo "$IMSPROBE_STEP $IMSPROBE_ELEMENT" > "$IMSPROBE_TRIAL_DIR/{stem}.env"
cat <<'EOF'
Job type:         Completed
Operation:        Outgoing migration
Time elapsed:     412          ms
Data processed:   95.600 MiB
Data remaining:   0.000 B
Data total:       256.000 MiB
Memory processed: 95.600 MiB
Memory remaining: 0.000 B
Memory total:     256.000 MiB
Memory bandwidth: 232.039 MiB/s
Iteration:        3
Total downtime:   400          ms
Setup time:       2            ms
EOF
"#
        ),
    )
    .unwrap();
    p.display().to_string()
}

/// `(pause ms, ± slop ms)` from a pause script's four stamps: the mean of the two ways of
/// pairing them, ± half the time the signals took.
fn stamped_pause(path: &Path) -> (f64, f64) {
    let ns: Vec<f64> = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let (a, b, c, d) = (ns[0], ns[1], ns[2], ns[3]);
    (
        ((c - a) + (d - b)) / 2.0 / 1e6,
        ((b - a) + (d - c)) / 2.0 / 1e6,
    )
}

fn fail_script(dir: &Path) -> String {
    let p = dir.join("fail.sh");
    std::fs::write(
        &p,
        "#!/bin/sh\necho 'error: operation failed: migration out job: unexpectedly failed' >&2\nexit 1\n",
    )
    .unwrap();
    p.display().to_string()
}

fn run_trials(
    args: &[String],
    limit: Duration,
    interrupt_after: Option<Duration>,
) -> (i32, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_imsprobe"))
        .arg("trials")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn imsprobe trials");
    let mut sent = false;
    let o = common::wait_bounded_with(child, limit, "imsprobe trials", |child, elapsed| {
        if let Some(d) = interrupt_after {
            if !sent && elapsed >= d {
                assert!(
                    common::send_signal(child.id() as i32, common::SIGINT),
                    "SIGINT"
                );
                sent = true;
            }
        }
    });
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&o.stderr));
    (o.status.code().unwrap_or(-1), stdout)
}

/// `args`, then `--out OUT`: imsprobe trials' command line.
fn with_out(args: &[&str], out: &Path) -> Vec<String> {
    args.iter()
        .map(|s| s.to_string())
        .chain(["--out".to_string(), out.display().to_string()])
        .collect()
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn sigstop_trials_with_a_failed_one_in_between() {
    let _g = serial();
    let kam = Kamailio::start(KamailioOpts {
        users: 4,
        ..KamailioOpts::default()
    })
    .expect("start kamailio (see tests/common; .ci/run installs the packages)");
    let dir = tempdir();
    let out = dir.path().join("out");
    let target = kam.addr().to_string();
    // A byte counter that never moves: where the hypervisor reports nothing (the failed trial),
    // the data column is the counter's growth, 0.
    let counter = dir.path().join("counter");
    std::fs::write(&counter, "123456789\n").unwrap();
    let load = format!(
        "exec {} --target {{target}} --domain {} --users 4 --reg-rate 50 --cps 4 --hold 1s --duration 60s --drain 3s --media g711 --report {{report}} --quiet",
        env!("CARGO_BIN_EXE_imsload"),
        kam.domain()
    );
    let args = with_out(
        &[
            "--target",
            &target,
            "--migrate",
            // bash: its kill builtin signals a process group (`-- -PGID`); dash's does not.
            &format!("bash {}", pause_script(dir.path(), kam.pgid(), "pause")),
            "--back",
            &format!("sh {}", fail_script(dir.path())),
            "--trials",
            "3",
            "--before",
            "1s",
            "--delay",
            "1s",
            "--after",
            "1500ms",
            "--pause",
            "500ms",
            "--rate",
            "1000",
            "--no-capture",
            "--load-cmd",
            &load,
            "--load-drain",
            "10s",
            "--data-cmd",
            &format!("cat {}", counter.display()),
        ],
        &out,
    );
    let (code, stdout) = run_trials(&args, Duration::from_secs(120), None);
    assert_eq!(code, 1, "a failed trial makes the exit code 1");
    assert!(stdout.contains("| 2 | back | failed |"), "{stdout}");

    // The table: CSV, JSON, Markdown, plots.
    let rows = csv_rows(&out.join("trials.csv"));
    let head = rows[0].clone();
    let col = |n: &str| {
        head.iter()
            .position(|h| h == n)
            .unwrap_or_else(|| panic!("no {n}"))
    };
    assert_eq!(
        rows.len(),
        1 + 3 + 5,
        "3 trials and 5 statistic rows: {rows:?}"
    );
    let statuses: Vec<&str> = rows[1..4]
        .iter()
        .map(|r| r[col("status")].as_str())
        .collect();
    assert_eq!(statuses, ["ok", "failed", "ok"]);
    assert_eq!(rows[2][col("exit_code")], "1");
    assert_eq!(rows[4][0], "mean");
    let tj = json(&out.join("trials.json"));
    assert_eq!(tj["rows"].as_array().unwrap().len(), 3);
    assert_eq!(
        tj["stats_over_ok_trials"][&target]["hv_downtime_ms"]["n"],
        2
    );
    assert_eq!(
        f(&tj["stats_over_ok_trials"][&target]["hv_downtime_ms"]["mean"]),
        400.0
    );
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains("**stddev**") && md.contains("exited with code 1"),
        "{md}"
    );
    for name in ["data", "migration_time", "downtime", "downtime_vs_sip_gap"] {
        let svg = std::fs::read_to_string(out.join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name}"
        );
        let png = std::fs::read(out.join(format!("{name}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}.png");
    }

    for (i, status) in [(1, "ok"), (2, "failed"), (3, "ok")] {
        let td = out.join(format!("trial-{i:03}"));
        let t = json(&td.join("trial.json"));
        assert_eq!(t["status"], status, "{t:#}");
        // The probe record, as imsprobe writes it.
        let rep = json(&td.join("report.json"));
        assert_eq!(rep["tool"], "imsprobe");
        assert!(td.join("probes.csv").is_file() && td.join("timeline.svg").is_file());
        assert!(td.join("migrate.stdout").is_file() && td.join("migrate.stderr").is_file());
        // The load ran, was stopped with SIGINT and wrote its report.
        let load = &t["load"];
        assert!(
            load["report"].is_string(),
            "load report missing: {load:#} {t:#}"
        );
        assert!(load["reg_attempts"].as_u64().unwrap() >= 4, "{load:#}");
        assert_eq!(load["killed"], false, "{load:#}");
        assert_eq!(load["ended_early"], false, "{load:#}");
        let interval = f(&rep["params"]["interval_ms"]);
        if status == "failed" {
            assert!(t["failure"]
                .as_str()
                .unwrap()
                .contains("exited with code 1"));
            assert!(t["steps"][0]["hypervisor"].is_null());
            continue;
        }
        let hv = &t["steps"][0]["hypervisor"];
        assert_eq!(hv["format"], "virsh-domjobinfo");
        assert_eq!(f(&hv["downtime_ms"]), 400.0);
        assert_eq!(hv["transferred_bytes"].as_u64(), Some(100_243_866));
        // The pause as the script stamped it, against the SIP gap the probes measured.
        let (pause_ms, stamp_slop) = stamped_pause(&td.join("pause.ns"));
        let row = &t["steps"][0]["row"];
        let gap = f(&row["sip_gap_ms"]);
        let bound = f(&row["sip_gap_bound_ms"]);
        assert_eq!(bound, interval);
        let tol = 2.0 * bound + 5.0 + stamp_slop;
        eprintln!(
            "trial {i}: pause {pause_ms:.3} ms (stamps ±{stamp_slop:.3}) -> SIP gap {gap:.3} ± {bound} ms (diff {:+.3}, tolerance {tol:.3}); ICMP gap {} ms; load {}",
            gap - pause_ms,
            row["icmp_gap_ms"],
            load
        );
        assert!(
            (gap - pause_ms).abs() <= tol,
            "trial {i}: SIP gap {gap} ms vs pause {pause_ms} ms (tolerance {tol} ms)"
        );
        // The calls carry media (`--media`), straight between the UEs: a paused proxy silences
        // no call that is up. The longest silence any leg heard is at most the pause (a callee
        // that answered just before it waits for its caller to get the 200) and a margin.
        let media_gap = f(&row["media_gap_ms"]);
        assert!(
            media_gap > 0.0 && media_gap <= pause_ms + 100.0,
            "trial {i}: media gap {media_gap} ms for a {pause_ms} ms pause of a signalling-only proxy"
        );
        // The gap lies inside the migration command's run on the probe timeline.
        let g = &layer(&t["steps"][0]["targets"][0], "sip")["reply_gap"];
        let m = &t["steps"][0]["migration"];
        assert!(f(&g["start_s"]) >= f(&m["start_s"]) - 0.002, "{g} {m}");
        assert!(f(&g["end_s"]) <= f(&m["end_s"]) + 0.05, "{g} {m}");
        assert!(f(&m["duration_ms"]) >= 400.0);
        // The kernel answers ICMP while Kamailio is stopped.
        assert_eq!(f(&row["icmp_gap_ms"]), 0.0, "{row}");
    }
}

/// A media relay "migrated" (rtpengine SIGSTOPped for ~400 ms by the migration command) while
/// calls through it are up: each trial's step places the callers' silence where the pause was,
/// on the probe timeline, from the load's `--media-log`.
#[test]
fn a_paused_media_relay_is_a_silence_where_the_pause_was_on_the_trial_timeline() {
    if let Some(why) = common::rtpengine_missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let _g = serial();
    let rtpe = common::Rtpengine::start(42000..=42999).expect("rtpengine start");
    let kam = Kamailio::start(KamailioOpts {
        users: 20,
        rtpengine: Some(rtpe.ng_port()),
        ..KamailioOpts::default()
    })
    .expect("start kamailio");
    let dir = tempdir();
    let out = dir.path().join("out");
    // 10 calls placed in the load's first half second and held past the trial's end: all 20
    // legs are up when the relay stops, 2 s after the load started.
    let load = format!(
        "exec {} --target {{target}} --domain {} --users 20 --reg-rate 1000 --cps 20 --calls 10 --hold 30s --duration 60s --media g711 --report {{report}} --series {{series}} --media-log {{media_log}} --quiet",
        env!("CARGO_BIN_EXE_imsload"),
        kam.domain()
    );
    let args = with_out(
        &[
            "--target",
            &kam.addr().to_string(),
            "--migrate",
            &format!("bash {}", pause_script(dir.path(), rtpe.pid(), "pause")),
            "--trials",
            "2",
            "--before",
            "1s",
            "--delay",
            "2s",
            "--after",
            "1500ms",
            "--pause",
            "500ms",
            "--rate",
            "200",
            "--no-capture",
            "--load-cmd",
            &load,
            "--load-drain",
            "10s",
        ],
        &out,
    );
    let (code, stdout) = run_trials(&args, Duration::from_secs(120), None);
    assert_eq!(code, 0, "{stdout}");
    for trial in 1..=2 {
        let td = out.join(format!("trial-{trial:03}"));
        let t = json(&td.join("trial.json"));
        assert!(t["load"]["media_log"].is_string(), "{:#}", t["load"]);
        let step = &t["steps"][0];
        let (pause_ms, slop) = stamped_pause(&td.join("pause.ns"));
        let m = &step["users"]["media"];
        let start = f(&step["migration"]["start_s"]);
        eprintln!("trial {trial}: pause {pause_ms:.1} ms from {start:.3} s; media {m}");
        // Every leg was up, and every leg's longest silence fell in this step's window: the
        // relay's pause, to within two packet times.
        assert_eq!(
            (m["streams_up"].as_u64(), m["streams_hit"].as_u64()),
            (Some(20), Some(20)),
            "{m}"
        );
        let (lo, hi) = (pause_ms - 40.0 - slop, pause_ms + 40.0 + slop);
        for k in ["gap_max_ms", "gap_median_ms"] {
            assert!(
                (lo..=hi).contains(&f(&m[k])),
                "{k} for a {pause_ms} ms pause: {m}"
            );
        }
        // It began where the command stopped the relay: the last packet before the stop (a
        // packet time earlier at most) to the command's first milliseconds.
        for k in ["first_at_s", "last_at_s"] {
            let at = f(&m[k]);
            assert!(
                (start - 0.03..=start + 0.1).contains(&at),
                "{k} {at} s for a migration that started at {start} s: {m}"
            );
        }
        assert_eq!(f(&step["row"]["media_gap_ms"]), f(&m["gap_max_ms"]));
    }
    // The downtime figure carries what the callers heard.
    let svg = std::fs::read_to_string(out.join("downtime.svg")).unwrap();
    assert!(svg.contains("media gap"));
}

/// The study's sequence, shrunk to two elements: each trial "migrates" (SIGSTOPs) one Kamailio,
/// then the other. Each element gets its own row with its own gap; during one element's
/// migration the other answers throughout.
#[test]
fn a_sequence_migrates_two_elements_in_order_with_a_row_per_element() {
    let _g = serial();
    let start = || {
        Kamailio::start(KamailioOpts {
            users: 1,
            ..KamailioOpts::default()
        })
        .expect("start kamailio")
    };
    let (k1, k2) = (start(), start());
    let dir = tempdir();
    let out = dir.path().join("out");
    let (t1, t2) = (k1.addr().to_string(), k2.addr().to_string());
    let args: Vec<String> = [
        "--target".to_string(),
        t1.clone(),
        "--migrate".into(),
        format!("bash {}", pause_script(dir.path(), k1.pgid(), "first")),
        "--target".into(),
        t2.clone(),
        "--migrate".into(),
        format!("bash {}", pause_script(dir.path(), k2.pgid(), "second")),
        "--trials".into(),
        "2".into(),
        "--before".into(),
        "1s".into(),
        "--after".into(),
        "1500ms".into(),
        "--pause".into(),
        "500ms".into(),
        "--rate".into(),
        "1000".into(),
        "--no-capture".into(),
        "--out".into(),
        out.display().to_string(),
    ]
    .into();
    let (code, stdout) = run_trials(&args, Duration::from_secs(90), None);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("| trial | element | dir | status |"),
        "{stdout}"
    );

    // A row per element per trial, in migration order; statistics per element.
    let rows = csv_rows(&out.join("trials.csv"));
    let head = rows[0].clone();
    let col = |n: &str| head.iter().position(|h| h == n).unwrap();
    assert_eq!(rows.len(), 1 + 4 + 2 * 5, "{rows:?}");
    let order: Vec<(&str, &str)> = rows[1..5]
        .iter()
        .map(|r| (r[col("trial")].as_str(), r[col("element")].as_str()))
        .collect();
    assert_eq!(
        order,
        [("1", &*t1), ("1", &*t2), ("2", &*t1), ("2", &*t2)],
        "{rows:?}"
    );
    let tj = json(&out.join("trials.json"));
    assert_eq!(tj["elements"][1]["target"], t2.as_str());
    for t in [&t1, &t2] {
        assert_eq!(tj["stats_over_ok_trials"][t]["sip_gap_ms"]["n"], 2, "{t}");
    }
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains("The other targets during each migration"),
        "{md}"
    );
    let stem = |t: &str| t.replace(':', "_");
    for t in [&t1, &t2] {
        let svg = out.join(format!("{}-downtime.svg", stem(t)));
        assert!(svg.is_file(), "{} missing", svg.display());
    }

    for trial in 1..=2 {
        let td = out.join(format!("trial-{trial:03}"));
        let t = json(&td.join("trial.json"));
        assert_eq!(t["status"], "ok", "{t:#}");
        let steps = t["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 2);
        // The second migration starts only after the first command ended and `after` passed.
        let (m1, m2) = (&steps[0]["migration"], &steps[1]["migration"]);
        let between = f(&m2["start_s"]) - f(&m1["end_s"]);
        assert!(
            (1.5..3.0).contains(&between),
            "trial {trial}: {between} s between the migrations"
        );
        for (i, (name, stem_name)) in [(&t1, "first"), (&t2, "second")].into_iter().enumerate() {
            let s = &steps[i];
            assert_eq!(s["element"], name.as_str());
            assert_eq!(s["step"], i + 1);
            assert!(td.join(format!("migrate-{}.stdout", stem(name))).is_file());
            let env = std::fs::read_to_string(td.join(format!("{stem_name}.env"))).unwrap();
            assert_eq!(env.trim(), format!("{} {name}", i + 1));
            let (pause_ms, slop) = stamped_pause(&td.join(format!("{stem_name}.ns")));
            let row = &s["row"];
            assert_eq!(row["element"], name.as_str());
            let gap = f(&row["sip_gap_ms"]);
            let bound = f(&row["sip_gap_bound_ms"]);
            let tol = 2.0 * bound + 5.0 + slop;
            eprintln!(
                "trial {trial} step {} ({name}): pause {pause_ms:.3} ms -> SIP gap {gap:.3} ± {bound} ms (diff {:+.3}, tolerance {tol:.3})",
                i + 1,
                gap - pause_ms
            );
            assert!((gap - pause_ms).abs() <= tol, "{row}");
            // The picks: the migrated element first, its gap inside its own migration; the
            // other element, running all along, with no gap in this window.
            assert_eq!(s["targets"][0]["target"], name.as_str());
            let g = &layer(&s["targets"][0], "sip")["reply_gap"];
            let m = &s["migration"];
            assert!(f(&g["start_s"]) >= f(&m["start_s"]) - 0.002, "{g} {m}");
            assert!(f(&g["end_s"]) <= f(&m["end_s"]) + 0.05, "{g} {m}");
            let other = &s["targets"][1];
            assert_ne!(other["target"], name.as_str());
            assert!(
                layer(other, "sip")["reply_gap"].is_null(),
                "the other element had a gap during {name}'s migration: {other}"
            );
        }
    }
}

#[test]
fn ctrl_c_records_the_trial_as_interrupted_and_writes_the_table() {
    let _g = serial();
    let kam = Kamailio::start(KamailioOpts {
        users: 1,
        ..KamailioOpts::default()
    })
    .expect("start kamailio");
    let dir = tempdir();
    let out = dir.path().join("out");
    let target = kam.addr().to_string();
    let args = with_out(
        &[
            "--target",
            &target,
            "--migrate",
            "sleep 0.2",
            "--trials",
            "5",
            "--before",
            "500ms",
            "--after",
            "30s",
            "--sip",
            "--no-capture",
            "--no-plot",
        ],
        &out,
    );
    let t0 = Instant::now();
    let (code, _) = run_trials(&args, Duration::from_secs(60), Some(Duration::from_secs(2)));
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "Ctrl-C ended the run promptly"
    );
    // Stopping is the user's choice, not a failure of the target (README, "Exit codes"): the
    // only trial is interrupted, none failed, so 0 (it was 1 before issue 13).
    assert_eq!(code, 0);
    let tj = json(&out.join("trials.json"));
    let rows = tj["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "no trial starts after Ctrl-C: {rows:#?}");
    assert_eq!(rows[0]["status"], "interrupted");
    // The migration had run: its figures are kept.
    assert!(f(&rows[0]["migration_ms"]) >= 200.0);
    let t = json(&out.join("trial-001/trial.json"));
    assert_eq!(t["status"], "interrupted");
    assert!(out.join("trial-001/report.json").is_file());
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains("interrupted (Ctrl-C) after 1 of 5 trials"),
        "{md}"
    );
}

/// The second Ctrl-C exits at once (130) and takes the running migration command with it: the
/// command lives in a process group of its own, so only imsprobe can stop it.
#[test]
fn a_second_ctrl_c_exits_at_once_and_stops_the_migration_command() {
    let _g = serial();
    let dir = tempdir();
    let pidfile = dir.path().join("migrate.pid");
    let mut child = Command::new(env!("CARGO_BIN_EXE_imsprobe"))
        .args([
            "trials",
            "--target",
            "127.0.0.1:9",
            "--sip",
            "--no-capture",
            "--no-plot",
        ])
        .args(["--before", "200ms", "--migrate"])
        .arg(format!("echo $$ > {}; exec sleep 60", pidfile.display()))
        .arg("--out")
        .arg(dir.path().join("out"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn imsprobe trials");
    let t0 = Instant::now();
    let pid = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            break p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the migration command did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(common::send_signal(child.id() as i32, 2), "first SIGINT");
    // The first only asks the trial to end: a running migration is awaited, not killed.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        common::send_signal(pid, 0),
        "the migration command was killed by the first Ctrl-C"
    );
    assert!(common::send_signal(child.id() as i32, 2), "second SIGINT");
    let t1 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t1.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = common::send_signal(-pid, 9);
            panic!("imsprobe trials did not exit after the second Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
    // sleep got SIGTERM from imsprobe; it is our grandchild, reaped by init once it dies.
    let t2 = Instant::now();
    while common::send_signal(pid, 0) {
        if t2.elapsed() > Duration::from_secs(5) {
            let _ = common::send_signal(-pid, 9);
            panic!("the migration command outlived imsprobe");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--target", "127.0.0.1:5060", "--migrate", " "],
            "--migrate is empty",
        ),
        (
            &[
                "--target",
                "127.0.0.1:5060",
                "--target",
                "127.0.0.1:5062",
                "--migrate",
                "true",
            ],
            "give one --migrate per --target",
        ),
        (
            &[
                "--target",
                "127.0.0.1:5060",
                "--target",
                "127.0.0.1:5062",
                "--migrate",
                "true",
                "--migrate",
                "true",
                "--back",
                "true",
            ],
            "give one --back per --target, or none",
        ),
        (
            &[
                "--target",
                "127.0.0.1:5060",
                "--migrate",
                "true",
                "--also",
                "127.0.0.1:5060",
            ],
            "is given twice",
        ),
        (
            &[
                "--target",
                "127.0.0.1:5060",
                "--migrate",
                "true",
                "--trigger",
                "cpu >> 9",
                "--monitor",
                "process kamailio",
            ],
            "--trigger",
        ),
        (
            &[
                "--target",
                "127.0.0.1:5060",
                "--migrate",
                "true",
                "--trigger",
                "cpu > 9",
                "--monitor",
                "disk sda",
            ],
            "process, pid, cgroup or command",
        ),
        (
            &[
                "--target",
                "127.0.0.1:5060",
                "--migrate",
                "true",
                "--load",
                "/nonexistent.toml",
            ],
            "no such profile file",
        ),
        (
            &["--target", "nosuchname", "--migrate", "true"],
            "unknown target",
        ),
        (
            &[
                "--target",
                "127.0.0.1:5060",
                "--migrate",
                "true",
                "--trials",
                "0",
            ],
            "at least 1",
        ),
    ];
    for (args, want) in cases {
        let o = Command::new(env!("CARGO_BIN_EXE_imsprobe"))
            .arg("trials")
            .args(*args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// The start rule: a threshold on a monitor (here Kamailio's processes by pid, `cpu >= 0`, which
/// holds at the second sample) with a profile as the load; and a threshold that never holds,
/// after whose timeout the migration runs anyway and the trial says so.
#[test]
fn trigger_on_a_monitor_with_a_profile_load_and_the_trigger_timeout() {
    let _g = serial();
    let kam = Kamailio::start(KamailioOpts {
        users: 20,
        ..KamailioOpts::default()
    })
    .expect("start kamailio");
    let dir = tempdir();
    let target = kam.addr().to_string();
    let pids = kam
        .pids()
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let common = |out: &Path| -> Vec<String> {
        with_out(
            &[
                "--target",
                &target,
                "--migrate",
                "true",
                "--trials",
                "1",
                "--before",
                "300ms",
                "--after",
                "300ms",
                "--sip",
                "--no-capture",
                "--no-plot",
                "--monitor-interval",
                "200ms",
            ],
            out,
        )
    };
    let smoke = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/smoke.toml");
    let out = dir.path().join("held");
    let mut args = common(&out);
    args.extend(
        [
            "--trigger",
            "cpu >= 0",
            "--monitor",
            &format!("pid {pids}"),
            "--delay",
            "1s",
            "--load",
            smoke,
            "--imsload",
            env!("CARGO_BIN_EXE_imsload"),
        ]
        .map(str::to_string),
    );
    let (code, _) = run_trials(&args, Duration::from_secs(60), None);
    assert_eq!(code, 0);
    let t = json(&out.join("trial-001/trial.json"));
    let tr = &t["trigger"];
    assert_eq!(tr["kind"], "threshold");
    assert_eq!(tr["fired"], true, "{tr}");
    assert_eq!(tr["timed_out"], false);
    assert!(f(&tr["waited_s"]) >= 1.0, "the delay comes first: {tr}");
    assert!(tr["last_value"].is_number(), "{tr}");
    assert!(t["load"]["command"].as_str().unwrap().contains("--profile"));
    assert_eq!(
        t["load"]["reg_attempts"].as_u64(),
        Some(20),
        "{:#}",
        t["load"]
    );
    assert_eq!(t["load"]["reg_failed"].as_u64(), Some(0), "{:#}", t["load"]);
    assert_eq!(t["status"], "ok");

    let out = dir.path().join("timeout");
    let mut args = common(&out);
    args.extend(
        [
            "--trigger",
            "cpu > 100000",
            "--monitor",
            "process kamailio",
            "--trigger-timeout",
            "1s",
        ]
        .map(str::to_string),
    );
    let (code, _) = run_trials(&args, Duration::from_secs(60), None);
    assert_eq!(
        code, 0,
        "a trigger that never held is recorded, not a failure"
    );
    let t = json(&out.join("trial-001/trial.json"));
    let tr = &t["trigger"];
    assert_eq!(
        (tr["fired"].as_bool(), tr["timed_out"].as_bool()),
        (Some(false), Some(true)),
        "{tr}"
    );
    assert!(
        t["steps"][0]["migration"]["exit_code"] == 0,
        "the migration ran anyway"
    );
    assert!(
        t["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("did not hold")),
        "{:#}",
        t["warnings"]
    );
}

/// `--load-cmd` can start a sharded load and hand the trial the merged report, as
/// docs/sharding.md says: two shards on their own addresses, both stopped by the trial's SIGINT
/// to the load's process group, then `imsload merge` into `{report}` and `{series}`, which the
/// trial reads like a local load's.
#[test]
fn a_sharded_load_is_stopped_merged_and_read_like_a_local_one() {
    let kam = Kamailio::start(KamailioOpts {
        users: 20,
        ..KamailioOpts::default()
    })
    .expect("start kamailio");
    let dir = tempdir();
    let out = dir.path().join("sharded");
    let imsload = env!("CARGO_BIN_EXE_imsload");
    let shard = |i: usize| {
        format!(
            "{imsload} --target {{target}} --users 20 --reg-rate 50 --cps 4 --hold 500ms \
             --shard {i}/2 --bind 127.0.0.{} --report {{dir}}/shard-{i}.json --quiet",
            41 + i
        )
    };
    // The shell waits for both shards when the SIGINT comes (its trap), then merges: the
    // shards got the SIGINT too (the whole group does) and drain and write their reports.
    let load = format!(
        "trap wait INT; {} & {} & wait; {imsload} merge {{dir}}/shard-0.json {{dir}}/shard-1.json \
         --report {{report}} --series {{series}}",
        shard(0),
        shard(1)
    );
    let target = kam.addr().to_string();
    let args = with_out(
        &[
            "--target",
            &target,
            "--migrate",
            "true",
            "--trials",
            "1",
            "--before",
            "300ms",
            "--delay",
            "3s",
            "--after",
            "1s",
            "--sip",
            "--no-capture",
            "--no-plot",
            "--load-cmd",
            &load,
        ],
        &out,
    );
    let (code, _) = run_trials(&args, Duration::from_secs(90), None);
    assert_eq!(code, 0);
    let t = json(&out.join("trial-001/trial.json"));
    let l = &t["load"];
    assert_eq!(l["killed"], false, "{l:#}");
    assert!(
        l["report"].as_str().is_some() && l["series"].as_str().is_some(),
        "{l:#}\n{:#}",
        t["warnings"]
    );
    // Every user registered once, by one shard or the other, and the merged report says so.
    assert_eq!(l["reg_attempts"].as_u64(), Some(20), "{l:#}");
    assert_eq!(l["reg_failed"].as_u64(), Some(0), "{l:#}");
    assert!(l["calls_attempted"].as_u64().unwrap() > 0, "{l:#}");
    let merged = json(&out.join("trial-001/load.json"));
    assert_eq!(merged["merged"]["shards"], 2, "{:#}", merged["merged"]);
    assert_eq!(
        merged["merged"]["present"],
        serde_json::json!([0, 1]),
        "{:#}",
        merged["merged"]
    );
    for i in 0..2 {
        let s = json(&out.join(format!("trial-001/shard-{i}.json")));
        assert_eq!(
            s["counters"]["reg_attempts"].as_u64(),
            Some(10),
            "shard {i}"
        );
    }
    // The merged series gives the step its users' figures.
    let u = &t["steps"][0]["users"];
    assert!(u["late_requests"].is_u64(), "{u}");
    assert_eq!(t["status"], "ok", "{:#}", t["failure"]);
}
