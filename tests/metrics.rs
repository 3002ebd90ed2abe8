//! `--metrics` against real components: imsload loads Kamailio (lab/kamailio) while a
//! Prometheus server from Debian's package scrapes it every second; Prometheus's own query API
//! must then hold the report's counts, its histograms must give the report's percentiles, and
//! the shipped Grafana dashboard's queries must find data. `promtool check metrics` lints a
//! page taken mid-run.

mod common;

use common::*;
use serde_json::Value;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const IMSLOAD: &str = env!("CARGO_BIN_EXE_imsload");
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/imsload.json");

/// Polls until `f` gives a value or `limit` passes.
fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if t0.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn promtool_check(page: &str) -> (bool, String) {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    c.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let out = wait_bounded(c, Duration::from_secs(30), "promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Which of `bounds` (seconds, then +Inf) a value falls in.
/// A page served by `tool` while it runs (one that holds `needle`), which Prometheus's own
/// linter accepts.
fn page_mid_run(maddr: SocketAddr, needle: &str, tool: &str) -> String {
    let page = poll(Duration::from_secs(20), || {
        http_get(maddr, "/metrics")
            .ok()
            .filter(|(c, b)| *c == 200 && b.contains(needle))
            .map(|(_, b)| b)
    })
    .unwrap_or_else(|| panic!("{tool} serves /metrics during the run"));
    let (ok, lint) = promtool_check(&page);
    assert!(
        ok && lint.trim().is_empty(),
        "promtool check metrics:\n{lint}\n{page}"
    );
    page
}

/// Kamailio with `users`, a port for the tool's `/metrics`, and Prometheus scraping it; `None`
/// (the test skips, saying why) without Prometheus installed.
fn lab(test: &str, users: usize) -> Option<(Kamailio, SocketAddr, Prometheus)> {
    if let Some(why) = prometheus_missing() {
        eprintln!("SKIP {test}: {why}");
        return None;
    }
    let k = Kamailio::start(KamailioOpts {
        users,
        ..KamailioOpts::default()
    })
    .expect("kamailio start");
    let mport = free_port().unwrap();
    let maddr: SocketAddr = format!("127.0.0.1:{mport}").parse().unwrap();
    let prom = Prometheus::start(&[maddr]).expect("prometheus start");
    Some((k, maddr, prom))
}

fn bucket_of(v: f64) -> usize {
    const B: &[f64] = &[
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0,
        32.0,
    ];
    B.iter().position(|b| v <= *b).unwrap_or(B.len())
}

#[test]
fn prometheus_scrapes_a_run_against_kamailio_and_holds_the_reports_counts() {
    let Some((k, maddr, prom)) = lab("prometheus_scrapes_a_run_against_kamailio", 40) else {
        return;
    };
    let run = format!("it-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let child = Command::new(IMSLOAD)
        .args(["--target", &k.addr().to_string()])
        .args([
            "--users",
            "40",
            "--reg-rate",
            "100",
            "--cps",
            "10",
            "--calls",
            "50",
        ])
        .args(["--hold", "1s", "--quiet"])
        .args(["--metrics", &maddr.to_string(), "--metrics-run", &run])
        // Long enough for several scrapes of the final page whatever the machine's load.
        .args(["--metrics-linger", "5s"])
        .arg("--report")
        .arg(&report)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run imsload");

    // A page from the middle of the run: served, and valid to Prometheus's own linter.
    let page = page_mid_run(maddr, "imsload_calls_attempted_total", "imsload");
    assert!(page.contains(&format!(
        "imsload_info{{run=\"{run}\",target=\"{}\"}} 1",
        k.addr()
    )));

    let out = wait_bounded(child, Duration::from_secs(120), "imsload");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no report ({e}); stderr:\n{stderr}"));
    let rep: Value = serde_json::from_str(&text).unwrap();
    let c = &rep["counters"];
    assert_eq!(c["calls_completed"], 50, "the run itself: {stderr}");

    // Everything Prometheus stored, read back through its query API.
    let last = |metric: &str, labels: &str| -> Option<f64> {
        prom.scalar(&format!(
            "last_over_time({metric}{{run=\"{run}\"{labels}}}[10m])"
        ))
        .unwrap_or_else(|e| panic!("{e}\n{}", prom.log()))
    };
    for name in [
        "reg_attempts",
        "reg_ok",
        "calls_attempted",
        "calls_answered",
        "calls_completed",
        "dereg_ok",
        "msgs_sent",
        "msgs_received",
        "retransmits",
    ] {
        let want = c[name].as_f64().unwrap();
        let got = poll(Duration::from_secs(5), || {
            last(&format!("imsload_{name}_total"), "").filter(|v| *v == want)
        });
        assert_eq!(
            got,
            Some(want),
            "imsload_{name}_total in Prometheus vs the report (last seen {:?})\n{}",
            last(&format!("imsload_{name}_total"), ""),
            prom.log()
        );
    }
    for (key, n) in rep["status_codes"].as_object().unwrap() {
        let (method, code) = key.split_once(' ').unwrap();
        let got = last(
            "imsload_responses_total",
            &format!(",method=\"{method}\",code=\"{code}\""),
        );
        assert_eq!(got, n.as_f64(), "responses {key}");
    }
    assert_eq!(last("imsload_phase", ",phase=\"done\""), Some(1.0));

    // The histogram gives the report's median within one bucket.
    let srd_p50 = rep["rfc6076"]["session_request_delay"]["p50_ms"]
        .as_f64()
        .unwrap()
        / 1e3;
    let q = prom
        .scalar(&format!(
            "histogram_quantile(0.5, last_over_time(imsload_session_request_delay_seconds_bucket{{run=\"{run}\"}}[10m]))"
        ))
        .unwrap()
        .expect("a quantile of the SRD histogram");
    let (bq, br) = (bucket_of(q), bucket_of(srd_p50));
    assert!(
        bq.abs_diff(br) <= 1,
        "SRD median: Prometheus {q} s (bucket {bq}), report {srd_p50} s (bucket {br})"
    );
    let count = last("imsload_session_request_delay_seconds_count", "");
    assert_eq!(
        count,
        rep["rfc6076"]["session_request_delay"]["count"].as_f64()
    );

    check_dashboard(
        &prom,
        &run,
        rep["ended_utc"].as_str().unwrap(),
        "imsload_",
        8,
    );
}

/// Every query of the shipped dashboard runs, and each panel query of this tool (`prefix`)
/// finds this run, as a viewer would have seen it just after the end: the report is written
/// before the linger, so 2 s after `ended_utc` the final page has been scraped and the series
/// are not stale yet.
fn check_dashboard(prom: &Prometheus, run: &str, ended_utc: &str, prefix: &str, at_least: usize) {
    let ended = chrono::DateTime::parse_from_rfc3339(ended_utc).expect("ended_utc is RFC 3339");
    let at = ended.timestamp_millis() as f64 / 1e3 + 2.0;
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut panels = Vec::new();
    collect_exprs(&dash["panels"], &mut panels);
    let mut all = panels.clone();
    collect_exprs(&dash["annotations"], &mut all);
    let mut found = 0;
    for e in &all {
        // Grafana's variables as a viewer would have them; ranges wide enough to reach back
        // over this short run.
        let q = e
            .replace("$run", run)
            .replace("$__rate_interval", "10m")
            .replace("$__range", "10m")
            .replace("$__interval", "10m");
        let r = prom
            .query_at(&q, Some(at))
            .unwrap_or_else(|err| panic!("dashboard query fails: {err}"));
        if panels.contains(e) && e.contains(prefix) {
            assert!(
                !r.is_empty(),
                "dashboard query finds nothing for this run: {q}"
            );
            found += 1;
        }
    }
    assert!(found >= at_least, "{found} {prefix} panel queries checked");
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(e)) = m.get("expr") {
                out.push(e.clone());
            }
            for x in m.values() {
                collect_exprs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

#[test]
fn prometheus_scrapes_a_probe_and_its_gap_matches_the_report() {
    let users = KamailioOpts::default().users;
    let Some((k, maddr, prom)) = lab("prometheus_scrapes_a_probe", users) else {
        return;
    };
    let run = format!("probe-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("probe");
    let child = Command::new(env!("CARGO_BIN_EXE_imsprobe"))
        .args(["--target", &k.addr().to_string(), "--sip", "--rate", "200"])
        .args(["--duration", "6s", "--no-capture", "--no-plot", "--quiet"])
        // Only the injected pause is a gap: a stall of Kamailio's own closing in the same
        // second as the pause would hide the pause's length from every scrape of the gauge.
        .args(["--min-gap", "300ms"])
        .args(["--metrics", &maddr.to_string(), "--metrics-run", &run])
        .args(["--metrics-linger", "5s", "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run imsprobe");
    // A page mid-run, valid to promtool; then a pause of the target the probe must see.
    page_mid_run(maddr, "imsprobe_rtt_seconds_bucket", "imsprobe");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(k.pause());
    std::thread::sleep(Duration::from_millis(700));
    assert!(k.resume());
    let rep = probe_report(child, &out, Duration::from_secs(60));
    let sip = layer(&rep, "sip");
    let s = &sip["summary"];

    let last = |metric: &str, labels: &str| -> Option<f64> {
        prom.scalar(&format!(
            "last_over_time({metric}{{run=\"{run}\",layer=\"sip\"{labels}}}[10m])"
        ))
        .unwrap_or_else(|e| panic!("{e}\n{}", prom.log()))
    };
    let sent = poll(Duration::from_secs(5), || {
        last("imsprobe_probes_sent_total", "").filter(|v| Some(*v) == s["sent"].as_f64())
    });
    assert_eq!(sent, s["sent"].as_f64(), "probes sent\n{}", prom.log());
    for outcome in ["ok", "ok_after_timeout", "failed", "lost", "pending"] {
        assert_eq!(
            last("imsprobe_probes_total", &format!(",outcome=\"{outcome}\"")),
            s[outcome].as_f64(),
            "probes {outcome}: Prometheus vs the report {s}"
        );
    }
    assert_eq!(last("imsprobe_late_replies_total", ""), s["late"].as_f64());
    // The pause, as the report measured it (the longest reply gap between good replies).
    let longest = sip["reply_gaps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["open_start"] == false && g["open_end"] == false)
        .map(|g| f(&g["duration_ms"]))
        .fold(0.0, f64::max);
    assert!(
        longest > 600.0,
        "the pause is in the report: {}",
        sip["reply_gaps"]
    );
    let gaps_closed = last("imsprobe_gaps_total", "").unwrap();
    let closed_in_report = sip["reply_gaps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["open_start"] == false && g["open_end"] == false)
        .count() as f64;
    assert_eq!(gaps_closed, closed_in_report, "gaps closed");
    // The gauge holds the last gap: the pause, unless Kamailio stalled again after it.
    let last_gap = last("imsprobe_last_gap_seconds", "").unwrap() * 1e3;
    let report_last = sip["reply_gaps"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|g| g["open_start"] == false && g["open_end"] == false)
        .map(|g| f(&g["duration_ms"]))
        .unwrap();
    assert!(
        (last_gap - report_last).abs() < 1e-3,
        "last gap: Prometheus {last_gap} ms, report {report_last} ms"
    );
    let max_gap = prom
        .scalar(&format!(
            "max_over_time(imsprobe_last_gap_seconds{{run=\"{run}\",layer=\"sip\"}}[10m])"
        ))
        .unwrap()
        .unwrap()
        * 1e3;
    assert!(
        (max_gap - longest).abs() < 1e-3,
        "longest gap: Prometheus {max_gap} ms, report {longest} ms"
    );
    // Every good reply has its RTT in the histogram, but those stamped before their request (a
    // clock anomaly the report counts) have none.
    check_dashboard(
        &prom,
        &run,
        rep["ended_utc"].as_str().unwrap(),
        "imsprobe_",
        5,
    );
    let rtt_count = last("imsprobe_rtt_seconds_count", "").unwrap();
    let good = s["ok"].as_f64().unwrap() + s["ok_after_timeout"].as_f64().unwrap();
    let negative = sip["counters"]["negative_rtts"].as_f64().unwrap_or(0.0);
    assert!(
        rtt_count <= good && rtt_count >= good - negative,
        "RTTs in the histogram {rtt_count}, good replies {good}, negative RTTs {negative}"
    );
}

#[test]
fn a_trials_phases_reach_prometheus_and_grafana_annotations() {
    let users = KamailioOpts::default().users;
    let Some((k, maddr, prom)) = lab("a_trials_phases_reach_prometheus", users) else {
        return;
    };
    let run = format!("trials-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t");
    // The "migration": Kamailio's process group stopped for 400 ms (bash's kill takes a group).
    let migrate = format!(
        "bash -c 'kill -STOP -- -{pg}; sleep 0.4; kill -CONT -- -{pg}'",
        pg = k.pgid()
    );
    let child = Command::new(env!("CARGO_BIN_EXE_imsprobe"))
        .args([
            "trials",
            "--target",
            &k.addr().to_string(),
            "--migrate",
            &migrate,
        ])
        .args([
            "--trials", "1", "--before", "1500ms", "--delay", "500ms", "--after", "1s",
        ])
        .args(["--rate", "200", "--sip", "--no-capture", "--no-plot"])
        .args(["--metrics", &maddr.to_string(), "--metrics-run", &run])
        .args(["--metrics-linger", "5s", "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run imsprobe trials");
    let o = wait_bounded(child, Duration::from_secs(90), "imsprobe trials");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "imsprobe trials: {stderr}");
    let trial = json(&out.join("trial-001").join("trial.json"));
    let mig = &trial["steps"][0]["migration"];
    let unix = |s: &Value| {
        chrono::DateTime::parse_from_rfc3339(s.as_str().unwrap())
            .unwrap()
            .timestamp_millis() as f64
            / 1e3
    };
    let (mig_start, mig_end) = (unix(&mig["started_utc"]), unix(&mig["ended_utc"]));
    let (t_start, t_end) = (unix(&trial["started_utc"]), unix(&trial["ended_utc"]));

    // Prometheus holds each phase's time; read as a viewer would just after the trial.
    let at = t_end + 2.0;
    let series = poll(Duration::from_secs(5), || {
        prom.query_at(
            &format!("imsprobe_trial_phase_timestamp_seconds{{run=\"{run}\",trial=\"1\"}}"),
            Some(at),
        )
        .ok()
        .filter(|r| r.len() >= 5)
    })
    .unwrap_or_else(|| {
        panic!(
            "the trial's phases in Prometheus: {:?}\n{:?}\n{}",
            prom.query_at(
                &format!(
                    "last_over_time(imsprobe_trial_phase_timestamp_seconds{{run=\"{run}\"}}[10m])"
                ),
                Some(at)
            ),
            prom.query_at("up", Some(at)),
            prom.log()
        )
    });
    let phase = |name: &str| -> f64 {
        series
            .iter()
            .find(|s| s["metric"]["phase"] == name)
            .and_then(|s| s["value"][1].as_str()?.parse().ok())
            .unwrap_or_else(|| panic!("no phase {name} in {series:?}"))
    };
    let (ts, tr, ms, me, te) = (
        phase("trial_start"),
        phase("trigger"),
        phase("migration_start"),
        phase("migration_end"),
        phase("trial_end"),
    );
    assert!(ts <= tr && tr <= ms && ms < me && me <= te, "{series:?}");
    // The marks are taken beside the trial's own stamps (ms apart at most).
    for (got, want, what) in [
        (ts, t_start, "trial start"),
        (ms, mig_start, "migration start"),
        (me, mig_end, "migration end"),
    ] {
        assert!(
            (got - want).abs() < 0.05,
            "{what}: mark {got}, trial.json {want}"
        );
    }
    assert!(me - ms >= 0.4, "the migration took its 400 ms: {}", me - ms);
    let element = series
        .iter()
        .find(|s| s["metric"]["phase"] == "migration_start")
        .unwrap()["metric"]["element"]
        .clone();
    assert_eq!(element, trial["steps"][0]["element"]);
    // The same marks for Grafana's annotation API, and the dashboard's annotation query runs.
    let ann = json(&out.join("annotations.json"));
    let texts: Vec<&str> = ann
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["text"].as_str().unwrap())
        .collect();
    assert!(
        texts.iter().any(|t| t.ends_with(": migration_start")),
        "{texts:?}"
    );
    assert_eq!(
        ann.as_array()
            .unwrap()
            .iter()
            .find(|a| a["text"].as_str().unwrap().ends_with(": migration_end"))
            .unwrap()["time"]
            .as_f64()
            .unwrap(),
        (me * 1e3).round()
    );
}
