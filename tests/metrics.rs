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
fn bucket_of(v: f64) -> usize {
    const B: &[f64] = &[
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0,
        32.0,
    ];
    B.iter().position(|b| v <= *b).unwrap_or(B.len())
}

#[test]
fn prometheus_scrapes_a_run_against_kamailio_and_holds_the_reports_counts() {
    if let Some(why) = prometheus_missing() {
        eprintln!("SKIP prometheus_scrapes_a_run_against_kamailio: {why}");
        return;
    }
    let k = Kamailio::start(KamailioOpts {
        users: 40,
        ..KamailioOpts::default()
    })
    .expect("kamailio start");
    let mport = free_port().unwrap();
    let maddr: SocketAddr = format!("127.0.0.1:{mport}").parse().unwrap();
    let prom = Prometheus::start(&[maddr]).expect("prometheus start");
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
    let page = poll(Duration::from_secs(20), || {
        http_get(maddr, "/metrics")
            .ok()
            .filter(|(c, b)| *c == 200 && b.contains("imsload_calls_attempted_total"))
            .map(|(_, b)| b)
    })
    .expect("imsload serves /metrics during the run");
    let (ok, lint) = promtool_check(&page);
    assert!(
        ok && lint.trim().is_empty(),
        "promtool check metrics:\n{lint}\n{page}"
    );
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

    // Every query of the shipped dashboard runs, and each imsload panel finds this run, as a
    // viewer would have seen it just after the end: the report is written before the linger,
    // so 2 s later the final page has been scraped and the series are not stale yet.
    let ended = chrono::DateTime::parse_from_rfc3339(rep["ended_utc"].as_str().unwrap())
        .expect("ended_utc is RFC 3339");
    let at = ended.timestamp_millis() as f64 / 1e3 + 2.0;
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    assert!(exprs.len() >= 8, "the dashboard has its panels: {exprs:?}");
    let mut found = 0;
    for e in &exprs {
        // Grafana's variables as a dashboard viewer would have them; ranges wide enough to
        // reach back over this short run.
        let q = e
            .replace("$run", &run)
            .replace("$__rate_interval", "10m")
            .replace("$__range", "10m")
            .replace("$__interval", "10m");
        let r = prom
            .query_at(&q, Some(at))
            .unwrap_or_else(|err| panic!("dashboard query fails: {err}"));
        if e.contains("imsload_") {
            assert!(
                !r.is_empty(),
                "dashboard query finds nothing for this run: {q}"
            );
            found += 1;
        }
    }
    assert!(found >= 6, "{found} imsload panels checked");
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
