//! What the sharded-run tests share (tests/shard_kamailio.rs runs the shards as processes,
//! tests/container.rs as containers): the referee reading of Kamailio's location table, the
//! host's `imsload merge`, and the checks a merge of N shards must pass whatever ran them.

use super::{wait_bounded, Kamailio};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const IMSLOAD: &str = env!("CARGO_BIN_EXE_imsload");

/// Shard `i`'s own loopback address (its `--bind`): Kamailio then tells the shards apart.
pub fn shard_ip(i: usize) -> String {
    format!("127.0.0.{}", 21 + i)
}

pub fn counters(r: &Value) -> &Map<String, Value> {
    r["counters"].as_object().expect("counters")
}

/// Waits until Kamailio holds `users` contacts and returns them (AoR, address).
pub fn contacts_when_all_registered(
    k: &Kamailio,
    users: usize,
    limit: Duration,
) -> Vec<(String, String)> {
    let t0 = Instant::now();
    let mut last = Vec::new();
    while t0.elapsed() < limit {
        if let Ok(c) = k.contact_addresses() {
            if c.len() >= users {
                return c;
            }
            last = c;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "Kamailio never held {users} contacts within {limit:?}: last saw {}",
        last.len()
    )
}

/// Kamailio's location table mid-run: every user (`user0001`…) exactly once, each from the
/// address of the shard whose slice holds it (shard I of N: positions I·n/N .. (I+1)·n/N).
pub fn assert_each_user_once_from_its_shard(
    contacts: &[(String, String)],
    users: usize,
    shards: usize,
) {
    let mut by_user: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (aor, addr) in contacts {
        by_user.entry(aor.clone()).or_default().push(addr.clone());
    }
    assert_eq!(contacts.len(), users, "{contacts:?}");
    assert_eq!(by_user.len(), users, "each user once: {by_user:?}");
    for (n, (aor, addrs)) in by_user.iter().enumerate() {
        let user: usize = aor
            .trim_start_matches("sip:")
            .trim_start_matches("user")
            .split('@')
            .next()
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("AoR {aor}"));
        assert_eq!(user, n + 1);
        let shard = (user - 1) * shards / users;
        assert!(
            addrs[0].contains(&format!("@{}:", shard_ip(shard))),
            "{aor} registered from {addrs:?}, not shard {shard}'s address"
        );
    }
}

/// The host's `imsload merge ARGS --report REPORT --series SERIES`: (exit code, stdout, stderr).
pub fn imsload_merge(args: &[&Path], report: &Path, series: &Path) -> (i32, String, String) {
    let out = Command::new(IMSLOAD)
        .arg("merge")
        .args(args)
        .arg("--report")
        .arg(report)
        .arg("--series")
        .arg(series)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run imsload merge");
    let out = wait_bounded(out, Duration::from_secs(30), "imsload merge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The report line a shard printed last on stdout with `--report -` (what `kubectl logs` gives).
pub fn report_line(stdout: &str, what: &str) -> Value {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("{\"tool\":\"imsload\""))
        .unwrap_or_else(|| panic!("{what} printed no report line:\n{stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}'s report line: {e}"))
}

/// A merge of every shard, on time: all present, none missing or late.
pub fn assert_all_present_none_late(merged: &Value, shards: usize) {
    let m = &merged["merged"];
    assert_eq!(
        m["present"],
        serde_json::json!((0..shards).collect::<Vec<_>>())
    );
    assert_eq!(m["missing"], serde_json::json!([]));
    assert_eq!(m["late"], serde_json::json!([]), "{merged:#}");
}

/// Every merged counter is the sum of the shards' (`shards` in index order, each checked to
/// be that index of `shards.len()`).
pub fn assert_counters_are_sums(merged: &Value, shards: &[Value]) {
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(s["shard"]["index"], i as u64);
        assert_eq!(s["shard"]["count"], shards.len() as u64);
    }
    for (name, v) in counters(merged) {
        let sum: u64 = shards
            .iter()
            .map(|s| counters(s)[name].as_u64().unwrap())
            .sum();
        assert_eq!(v.as_u64(), Some(sum), "counter {name}");
    }
}
