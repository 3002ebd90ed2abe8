//! A sharded run against Kamailio on loopback, as a Kubernetes Indexed Job would run it: the
//! same run once whole and once as 4 imsload processes, each on its own 127.x address with
//! `--shards 4` and `JOB_COMPLETION_INDEX` set as Kubernetes sets it, started together with
//! `--start-at`; then `imsload merge`. Kamailio's location table is the referee for the split
//! of the users, the unsharded run for the split of the rates, and histograms added here for
//! the merged percentiles.

mod common;

use base64::Engine as _;
use common::*;
use hdrhistogram::Histogram;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const IMSLOAD: &str = env!("CARGO_BIN_EXE_imsload");
const USERS: usize = 200;
const SHARDS: usize = 4;
const CALLS: u64 = 120;

/// The run both ways: 200 users registered in about a second, 120 calls at 20/s.
fn run_args(target: &str) -> Vec<String> {
    [
        "--target",
        target,
        "--users",
        "200",
        "--reg-rate",
        "200",
        "--cps",
        "20",
        "--calls",
        "120",
        "--hold",
        "1s",
        "--duration",
        "30s",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn spawn(args: &[String], env_index: Option<usize>, stdout: Stdio) -> Child {
    let mut c = Command::new(IMSLOAD);
    c.args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped());
    // The environment Kubernetes gives an Indexed Job's pod, and nothing of ours.
    c.env_remove("JOB_COMPLETION_INDEX");
    if let Some(i) = env_index {
        c.env("JOB_COMPLETION_INDEX", i.to_string());
    }
    c.spawn().expect("run imsload")
}

fn decode(text: &str) -> Histogram<u64> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64");
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .expect("an HdrHistogram V2 serialization")
}

#[test]
fn four_shards_split_the_users_and_rates_and_merge_exactly() {
    let k = Kamailio::start(KamailioOpts {
        users: USERS,
        ..KamailioOpts::default()
    })
    .expect("kamailio start");
    let target = k.addr().to_string();
    let dir = tempfile::tempdir().unwrap();

    // The whole run on one generator.
    let whole_path = dir.path().join("whole.json");
    let mut a = run_args(&target);
    a.extend(["--report".into(), whole_path.display().to_string()]);
    let out = wait_bounded(
        spawn(&a, None, Stdio::piped()),
        Duration::from_secs(60),
        "imsload (unsharded)",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let whole = json(&whole_path);
    assert_eq!(counters(&whole)["reg_ok"], USERS as u64);
    assert_eq!(counters(&whole)["calls_attempted"], CALLS);

    // The same run as 4 shards, started together 3 s from now; shard 3 prints its report as
    // one line on stdout, as a pod would for `kubectl logs`.
    let start = chrono::Utc::now() + chrono::Duration::seconds(3);
    let start = start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let log = dir.path().join("pod-3.log");
    let mut shard_reports: Vec<PathBuf> = Vec::new();
    let mut children = Vec::new();
    for i in 0..SHARDS {
        let mut a = run_args(&target);
        a.extend(
            [
                "--shards",
                "4",
                "--start-at",
                &start,
                "--bind",
                &shard_ip(i),
            ]
            .map(String::from),
        );
        let stdout = if i == SHARDS - 1 {
            a.extend(["--report".into(), "-".into()]);
            Stdio::from(std::fs::File::create(&log).unwrap())
        } else {
            let p = dir.path().join(format!("shard-{i}.json"));
            a.extend(["--report".into(), p.display().to_string()]);
            shard_reports.push(p);
            Stdio::null()
        };
        children.push(spawn(&a, Some(i), stdout));
    }
    // Mid-run: every user registered exactly once, each from its own shard's address.
    let contacts = contacts_when_all_registered(&k, USERS, Duration::from_secs(20));
    assert_each_user_once_from_its_shard(&contacts, USERS, SHARDS);
    let mut outs = Vec::new();
    for (i, c) in children.into_iter().enumerate() {
        outs.push(wait_bounded(
            c,
            Duration::from_secs(60),
            &format!("shard {i}"),
        ));
    }
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(
            o.status.code(),
            Some(0),
            "shard {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(k.registered_contacts().unwrap(), 0, "all de-registered");

    let all = dir.path().join("all.json");
    let csv = dir.path().join("all.csv");
    let mut inputs: Vec<&Path> = shard_reports.iter().map(PathBuf::as_path).collect();
    inputs.push(&log);
    let (code, stdout, stderr) = imsload_merge(&inputs, &all, &csv);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let merged = json(&all);
    assert_all_present_none_late(&merged, SHARDS);

    // The shards' reports, as merge read them (the last from the pod's log line).
    let mut shards: Vec<Value> = shard_reports.iter().map(|p| json(p)).collect();
    shards.push(report_line(
        &std::fs::read_to_string(&log).unwrap(),
        "shard 3",
    ));
    for s in &shards {
        assert_eq!(s["users"], (USERS / SHARDS) as u64);
        assert_eq!(counters(s)["calls_attempted"], CALLS / SHARDS as u64);
    }
    // Counters: the merged ones are the shards' sums, every one of them.
    assert_counters_are_sums(&merged, &shards);
    // Registrations and calls as the whole run's, within 1 %.
    for name in [
        "reg_ok",
        "calls_attempted",
        "calls_answered",
        "calls_completed",
    ] {
        let (a, b) = (
            counters(&merged)[name].as_u64().unwrap() as f64,
            counters(&whole)[name].as_u64().unwrap() as f64,
        );
        assert!(
            (a - b).abs() <= 0.01 * b,
            "{name}: merged {a} vs unsharded {b}"
        );
    }
    // Percentiles: those of one histogram made by adding the shards' own.
    for (hist, summary) in [
        ("srd", "session_request_delay"),
        ("rrd", "registration_request_delay"),
    ] {
        let mut one = decode(shards[0]["histograms"][hist].as_str().unwrap());
        for s in &shards[1..] {
            one.add(decode(s["histograms"][hist].as_str().unwrap()))
                .unwrap();
        }
        let got = &merged["rfc6076"][summary];
        assert_eq!(got["count"], one.len());
        for (q, key) in [(0.5, "p50_ms"), (0.99, "p99_ms")] {
            assert_eq!(
                got[key].as_f64().unwrap(),
                one.value_at_quantile(q) as f64 / 1000.0,
                "{summary} {key}"
            );
        }
    }
    // The merged series adds up to the totals, one row per second.
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "calls_attempted").unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let calls: u64 = rows.iter().map(|r| r[col].parse::<u64>().unwrap()).sum();
    assert_eq!(calls, CALLS);

    // Without shard 2's report: named as missing, the rest still merged.
    let partial = dir.path().join("partial.json");
    let inputs = [shard_reports[0].as_path(), &shard_reports[1], &log];
    let (code, stdout, _) = imsload_merge(&inputs, &partial, &dir.path().join("p.csv"));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("shard(s) 2 of 4 missing"),
        "the warning names the gap:\n{stdout}"
    );
    assert_eq!(json(&partial)["merged"]["missing"], serde_json::json!([2]));
}

#[test]
fn bad_shard_arguments_are_usage_errors_that_say_why() {
    let cases: [(&[&str], Option<&str>, &str); 4] = [
        (
            &["--shards", "4"],
            None,
            "JOB_COMPLETION_INDEX, which is not set",
        ),
        (&["--shards", "4"], Some("4"), "JOB_COMPLETION_INDEX=4"),
        (&["--shard", "1/0"], None, "between 1"),
        (&["--start-at", "noon"], None, "RFC 3339"),
    ];
    for (args, env, want) in cases {
        let mut a: Vec<String> = ["--target", "127.0.0.1:9", "--duration", "1s"]
            .map(String::from)
            .to_vec();
        a.extend(args.iter().map(|s| s.to_string()));
        let out = wait_bounded(
            spawn(&a, env.map(|e| e.parse().unwrap()), Stdio::piped()),
            Duration::from_secs(20),
            "imsload",
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // merge: a file that is no report is named, exit 2.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{\"tool\":\"imsprobe\"}").unwrap();
    let out = Command::new(IMSLOAD)
        .arg("merge")
        .arg(&junk)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(out, Duration::from_secs(20), "imsload merge");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("junk.json: not an imsload report"), "{err}");
}
