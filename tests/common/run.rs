//! Child processes of the tests (imsload, imsprobe, tools) and the JSON they write: one bounded
//! wait, one way to run imsprobe to its report and to read a capture back with `--pcap-only`.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How often [`wait_bounded`] looks whether the child has exited.
const POLL: Duration = Duration::from_millis(50);

/// Reads a child's pipe to its end on a thread of its own, so that a child that writes more
/// than a pipe holds never blocks while it is waited for.
fn drain(pipe: Option<impl Read + Send + 'static>) -> Option<JoinHandle<Vec<u8>>> {
    pipe.map(|mut p| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = p.read_to_end(&mut v);
            v
        })
    })
}

/// What a drained pipe held (empty when it was not piped).
fn drained(h: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
}

/// What a drained pipe held, waiting at most `limit` for its end (a killed child's own
/// children may still hold it open).
fn drained_within(h: Option<JoinHandle<Vec<u8>>>, limit: Duration) -> String {
    let Some(h) = h else {
        return String::new();
    };
    let t0 = Instant::now();
    while !h.is_finished() {
        if t0.elapsed() > limit {
            return "(still open)".into();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
}

/// utime+stime of `pid` in seconds (for failure messages: a spinning process shows here).
pub fn cpu_seconds(pid: i32) -> Option<f64> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = st[st.rfind(')')? + 2..].split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Waits up to `limit` for `child` to exit and returns its status and whatever it wrote to
/// its piped stdout and stderr (read while it runs; empty where not piped or taken before).
/// Past the limit it is killed (SIGKILL) and reaped, and the test fails naming `what`, its
/// CPU time and its output.
pub fn wait_bounded(child: Child, limit: Duration, what: &str) -> Output {
    wait_bounded_with(child, limit, what, |_, _| {})
}

/// [`wait_bounded`], calling `each_poll(child, elapsed)` every 50 ms while the child runs.
pub fn wait_bounded_with(
    mut child: Child,
    limit: Duration,
    what: &str,
    mut each_poll: impl FnMut(&Child, Duration),
) -> Output {
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child
            .try_wait()
            .unwrap_or_else(|e| panic!("{what}: wait: {e}"))
        {
            break s;
        }
        let elapsed = t0.elapsed();
        if elapsed > limit {
            let cpu = cpu_seconds(child.id() as i32);
            let _ = child.kill();
            let _ = child.wait();
            let grace = Duration::from_secs(2);
            panic!(
                "{what}: still running {limit:?} after it should have ended (CPU {cpu:?} s); \
                 killed\nstdout:\n{}\nstderr:\n{}",
                drained_within(out, grace),
                drained_within(err, grace)
            );
        }
        each_poll(&child, elapsed);
        std::thread::sleep(POLL);
    };
    Output {
        status,
        stdout: drained(out),
        stderr: drained(err),
    }
}

/// A file's JSON (the test fails naming the file when it is missing or not JSON).
pub fn json(path: &Path) -> Value {
    let t = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&t).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// A JSON number (the test fails when it is not one).
pub fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The layer `name` (`sip`, `icmp`, `diameter`) of an imsprobe report.
pub fn layer<'a>(rep: &'a Value, name: &str) -> &'a Value {
    rep["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layer"] == name)
        .unwrap_or_else(|| panic!("no {name} layer in {rep}"))
}

/// Waits (bounded, see [`wait_bounded`]) for an imsprobe run writing to the folder `out`,
/// shows its output, requires it to succeed and returns its `report.json`.
pub fn probe_report(child: Child, out: &Path, limit: Duration) -> Value {
    let o = wait_bounded(child, limit, "imsprobe");
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!("{}{stderr}", String::from_utf8_lossy(&o.stdout));
    assert!(o.status.success(), "imsprobe failed: {stderr}");
    json(&out.join("report.json"))
}

/// `imsprobe --pcap-only pcap --out out`: the report it computes from the capture alone.
pub fn pcap_only(pcap: &Path, out: &Path) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_imsprobe"))
        .arg("--pcap-only")
        .arg(pcap)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run imsprobe --pcap-only");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    json(&out.join("report.json"))
}

/// One test at a time within a test binary, for the tests that measure time (a panicking
/// test does not poison it for the others).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The durations (ms) of a layer's reply gaps longer than `over_ms`.
pub fn long_gaps(layer: &Value, over_ms: f64) -> Vec<f64> {
    layer["reply_gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| f(&g["duration_ms"]))
        .filter(|&d| d > over_ms)
        .collect()
}

/// The reply gap of layer `name` that spans a VM's pause: from the step's target (an entry of
/// `steps[i].targets` in trial.json), its probe report's gap list, the gap that starts no later
/// than STOP and ends no earlier than RESUME (each within the gap's error bound). The step's own
/// `reply_gap` is the longest gap in its window, which need not be this one: on a busy host a
/// TCG guest starved during pre-copy answered 377 ms late 2 s before its 117 ms pause (seen).
pub fn gap_across_pause(target: &Value, name: &str, pause: &Value) -> Value {
    let dir = target["dir"].as_str().expect("a step target's dir");
    let report = json(&Path::new(dir).join("report.json"));
    let (stop, resume) = (f(&pause["stop_s"]), f(&pause["resume_s"]));
    layer(&report, name)["reply_gaps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| {
            let bound = f(&g["error_bound_ms"]) / 1e3;
            f(&g["start_s"]) <= stop + bound && f(&g["end_s"]) >= resume - bound
        })
        .unwrap_or_else(|| {
            panic!(
                "no {name} reply gap of {} spans its pause {pause}",
                target["target"]
            )
        })
        .clone()
}
