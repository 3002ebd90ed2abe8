//! What the migration command said about the migration, read from its output: the lab's JSON
//! line (`lab/migration/lab.sh migrate`, whose `qemu` field is QMP `query-migrate` verbatim), a
//! bare QMP `query-migrate` reply, `virsh domjobinfo --completed`, or `xl migrate`. Which one it
//! is is detected from the text; anything else yields no report (the trial still has the
//! command's own times).
//!
//! Pure functions over strings: no clock, no process.

use serde::Serialize;
use serde_json::Value;

/// One hypervisor event with its wall-clock time (µs since the Unix epoch), e.g. QMP `STOP` on
/// the source and `RESUME` on the destination.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HvEvent {
    pub host: String,
    pub event: String,
    pub wall_us: i64,
}

/// The hypervisor's own figures for one migration. Every figure is optional: each tool reports a
/// different subset, and a missing figure is recorded as missing, never guessed.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HvReport {
    /// `lab-json`, `qmp`, `virsh-domjobinfo` or `xl`.
    pub format: &'static str,
    /// The tool's own status word (`completed`, `failed`, `Completed`, `successful`...).
    pub status: Option<String>,
    /// Whether the tool says the migration succeeded (`None`: it does not say).
    pub succeeded: Option<bool>,
    /// The tool's error text, when it gives one.
    pub error: Option<String>,
    /// The hypervisor's total migration time.
    pub total_time_ms: Option<f64>,
    /// The hypervisor's downtime figure (QEMU: measured on the source only; see docs/trials.md).
    pub downtime_ms: Option<f64>,
    pub setup_time_ms: Option<f64>,
    /// Bytes sent for the migration (QEMU `ram.transferred`, virsh `Data processed`).
    pub transferred_bytes: Option<u64>,
    /// Bytes sent while the guest was paused (QEMU ≥ 7.0 `ram.downtime-bytes`).
    pub downtime_bytes: Option<u64>,
    /// Guest memory size as the tool reports it.
    pub memory_bytes: Option<u64>,
    /// Dirty-memory sync rounds (QEMU `dirty-sync-count`, virsh `Iteration`, xl `iter`).
    pub iterations: Option<u64>,
    /// Throughput in Mbit/s as reported.
    pub mbps: Option<f64>,
    /// The hosts the guest left and reached (the lab JSON's `from`/`to`: the lab alternates,
    /// so STOP is on `from` and RESUME on `to`).
    pub from: Option<String>,
    pub to: Option<String>,
    /// Events with wall-clock times (the lab JSON's `events`).
    pub events: Vec<HvEvent>,
    /// The lab's own STOP→RESUME (ms), as it computed it.
    pub stop_to_resume_ms: Option<f64>,
    /// The reference study's migration time (ms): the destination's QEMU starting to the VM
    /// running there (the lab JSON's `target_start_to_resume_ms`).
    pub target_start_to_resume_ms: Option<f64>,
    /// The lab's capture of the guest's announcements on the destination's switch port
    /// (`first_frame_vs_resume_ms`: bridge learning; `first_ipv4_vs_resume_ms`: the guest's
    /// first IPv4 frame after RESUME), verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announce: Option<Value>,
    /// What this format does not report, in words, for the table's readers.
    pub notes: Vec<String>,
}

/// Finds and parses the first report in the command's output (stdout first, then stderr: xl
/// writes its progress on stderr).
pub fn detect(stdout: &str, stderr: &str) -> Option<HvReport> {
    for text in [stdout, stderr] {
        if let Some(r) = parse_json_lines(text) {
            return Some(r);
        }
    }
    for text in [stdout, stderr] {
        if let Some(r) = parse_virsh_domjobinfo(text) {
            return Some(r);
        }
    }
    let both = format!("{stdout}\n{stderr}");
    parse_xl(&both)
}

/// The last line that is a JSON object in the lab's or in QMP's shape.
fn parse_json_lines(text: &str) -> Option<HvReport> {
    text.lines().rev().find_map(|line| {
        let l = line.trim();
        if !l.starts_with('{') {
            return None;
        }
        let v: Value = serde_json::from_str(l).ok()?;
        if v.get("qemu").is_some() || (v.get("ok").is_some() && v.get("events").is_some()) {
            Some(parse_lab_value(&v))
        } else {
            let q = v.get("return").unwrap_or(&v);
            (q.get("status").is_some() && (q.get("ram").is_some() || q.get("total-time").is_some()))
                .then(|| parse_qmp_value(q))
        }
    })
}

/// The lab's JSON line (see docs/trials.md for the contract).
pub fn parse_lab_json(line: &str) -> anyhow::Result<HvReport> {
    use anyhow::Context as _;
    let v: Value =
        serde_json::from_str(line.trim()).context("the lab's output is not one JSON object")?;
    anyhow::ensure!(v.is_object(), "the lab's output is JSON but not an object");
    Ok(parse_lab_value(&v))
}

fn parse_lab_value(v: &Value) -> HvReport {
    let mut r = match v.get("qemu") {
        Some(q) if q.is_object() => parse_qmp_value(q),
        _ => HvReport {
            notes: vec!["the lab reported no QEMU statistics (no `qemu` field)".into()],
            ..HvReport::default()
        },
    };
    r.format = "lab-json";
    let ok = v.get("ok").and_then(Value::as_bool);
    // The lab's verdict covers more than QEMU's status (e.g. the guest answering afterwards):
    // a failure on either side is a failure.
    r.succeeded = match (ok, r.succeeded) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), _) => Some(true),
        (None, s) => s,
    };
    if r.error.is_none() {
        r.error = v
            .get("error")
            .and_then(|e| {
                e.as_str()
                    .map(str::to_string)
                    .or_else(|| Some(e.to_string()))
            })
            .filter(|e| e != "null");
    }
    if let Some(evs) = v.get("events").and_then(Value::as_array) {
        for e in evs {
            let (Some(event), Some(wall_us)) = (
                e.get("event").and_then(Value::as_str),
                e.get("wall_us").and_then(num_i64),
            ) else {
                continue;
            };
            r.events.push(HvEvent {
                host: e
                    .get("host")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                event: event.to_string(),
                wall_us,
            });
        }
    }
    r.stop_to_resume_ms = v.get("stop_to_resume_ms").and_then(Value::as_f64);
    r.target_start_to_resume_ms = v.get("target_start_to_resume_ms").and_then(Value::as_f64);
    let host = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    r.from = host("from");
    r.to = host("to");
    r.announce = v.get("announce").filter(|a| a.is_object()).cloned();
    r
}

fn num_i64(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().map(|f| f.round() as i64))
}

fn num_u64(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().map(|f| f.max(0.0).round() as u64))
}

/// QMP `query-migrate`'s return object (QEMU's `MigrationInfo`): times in ms, `ram` in bytes.
pub fn parse_qmp_value(q: &Value) -> HvReport {
    let status = q.get("status").and_then(Value::as_str).map(str::to_string);
    // Anything but `completed` (`failed`, `cancelled`, or still `active` when the command
    // returned before the end) is not a success.
    let succeeded = status.as_deref().map(|s| s == "completed");
    let ram = q.get("ram");
    let ram_u64 = |k: &str| ram.and_then(|r| r.get(k)).and_then(num_u64);
    let mut notes = Vec::new();
    if q.get("downtime").is_some() {
        notes.push(
            "QEMU's downtime is measured on the source: it ends when the last byte is handed to \
             the socket, 3-30 ms before the destination resumes"
                .into(),
        );
    }
    HvReport {
        format: "qmp",
        status: status.clone(),
        succeeded,
        error: q
            .get("error-desc")
            .and_then(Value::as_str)
            .map(str::to_string),
        total_time_ms: q.get("total-time").and_then(Value::as_f64),
        downtime_ms: q.get("downtime").and_then(Value::as_f64),
        setup_time_ms: q.get("setup-time").and_then(Value::as_f64),
        transferred_bytes: ram_u64("transferred"),
        downtime_bytes: ram_u64("downtime-bytes"),
        memory_bytes: ram_u64("total"),
        iterations: ram_u64("dirty-sync-count"),
        mbps: ram.and_then(|r| r.get("mbps")).and_then(Value::as_f64),
        from: None,
        to: None,
        events: Vec::new(),
        stop_to_resume_ms: None,
        target_start_to_resume_ms: None,
        announce: None,
        notes,
    }
}

/// `123 ms` → 123.
fn ms_value(v: &str) -> Option<f64> {
    let mut it = v.split_whitespace();
    let n: f64 = it.next()?.parse().ok()?;
    match it.next() {
        None | Some("ms") => Some(n),
        Some("s") => Some(n * 1000.0),
        _ => None,
    }
}

/// `1.133 GiB` → bytes (virsh prints binary units with three decimals).
fn bytes_value(v: &str) -> Option<u64> {
    let mut it = v.split_whitespace();
    let n: f64 = it.next()?.parse().ok()?;
    let unit = it.next().unwrap_or("B");
    let mult = match unit.trim_end_matches("/s") {
        "B" | "bytes" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0f64.powi(4),
        "PiB" => 1024.0f64.powi(5),
        _ => return None,
    };
    Some((n * mult).round() as u64)
}

/// `virsh domjobinfo --completed DOMAIN` (libvirt's `Key:  value unit` lines). `None` when the
/// text is not domjobinfo output.
pub fn parse_virsh_domjobinfo(text: &str) -> Option<HvReport> {
    let mut kv = Vec::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':') {
            kv.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let get = |key: &str| {
        kv.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    };
    let job = get("Job type")?;
    if get("Time elapsed").is_none() && get("Data processed").is_none() && job != "None" {
        return None;
    }
    let succeeded = match job {
        "Completed" => Some(true),
        "Failed" | "Cancelled" => Some(false),
        // `Bounded`/`Unbounded`: still running (the command did not use --completed, or the
        // job had not ended); `None`: no job at all.
        _ => Some(false),
    };
    let mut notes = Vec::new();
    if job != "Completed" && job != "Failed" && job != "Cancelled" {
        notes.push(format!(
            "virsh reported job type {job:?}: use `virsh domjobinfo --completed` after the migration"
        ));
    }
    let transferred = get("Data processed")
        .and_then(bytes_value)
        .or_else(|| get("Memory processed").and_then(bytes_value));
    let mbps = get("Memory bandwidth")
        .and_then(bytes_value)
        .map(|b| b as f64 * 8.0 / 1e6);
    Some(HvReport {
        format: "virsh-domjobinfo",
        status: Some(job.to_string()),
        succeeded,
        error: get("Error message").map(str::to_string),
        total_time_ms: get("Time elapsed").and_then(ms_value),
        downtime_ms: get("Total downtime").and_then(ms_value),
        setup_time_ms: get("Setup time").and_then(ms_value),
        transferred_bytes: transferred,
        downtime_bytes: None,
        memory_bytes: get("Memory total").and_then(bytes_value),
        iterations: get("Iteration").and_then(|v| v.split_whitespace().next()?.parse().ok()),
        mbps,
        from: None,
        to: None,
        events: Vec::new(),
        stop_to_resume_ms: None,
        target_start_to_resume_ms: None,
        announce: None,
        notes,
    })
}

/// `xl migrate DOMAIN HOST` output (sender and, through ssh, receiver lines). xl reports no
/// times and, in release builds, no byte counts: what exists is read (the verdict, the pages
/// the receiver reloaded, `Total pages sent=` of Xen ≤ 4.5 debug builds, the last pre-copy
/// iteration of the legacy saver). `None` when the text is not xl's.
pub fn parse_xl(text: &str) -> Option<HvReport> {
    let is_xl = text.contains("migration sender:")
        || text.contains("migration target:")
        || text.contains("Migration successful")
        || text.contains("Migration failed");
    if !is_xl {
        return None;
    }
    let success = text.contains("Migration successful")
        || text.contains("migration sender: Target reports successful startup");
    let failure_line = text
        .lines()
        .map(str::trim)
        .find(|l| {
            l.starts_with("Migration failed")
                || l.contains("migration sender: Target reports failure")
                || (l.starts_with("migration sender:") && l.contains("failed"))
                || (l.starts_with("migration target:") && l.contains("failed"))
        })
        .map(str::to_string);
    let succeeded = if failure_line.is_some() {
        Some(false)
    } else if success {
        Some(true)
    } else {
        // Neither verdict: xl was cut short.
        Some(false)
    };
    // Progress lines: "xc: progress: Reloading memory pages: 524482/524288  100%".
    let mut pages_total = None;
    let mut pages_sent = None;
    let mut iterations = None;
    for line in text.lines() {
        if let Some(rest) = line.split("Reloading memory pages:").nth(1) {
            if let Some((_, tot)) = rest.trim().split_once('/') {
                pages_total = tot
                    .split_whitespace()
                    .next()
                    .and_then(|t| t.parse::<u64>().ok());
            }
        }
        if let Some(rest) = line.split("Total pages sent=").nth(1) {
            pages_sent = rest
                .split_whitespace()
                .next()
                .and_then(|t| t.parse::<u64>().ok());
        }
        // Legacy saver: "Saving memory: iter 3 (last sent 37 skipped 0): 262144/262144 100%".
        if let Some(rest) = line.split("Saving memory: iter").nth(1) {
            if let Some(n) = rest
                .split_whitespace()
                .next()
                .and_then(|t| t.parse::<u64>().ok())
            {
                iterations = Some(n + 1);
            }
        }
    }
    let mut notes = vec![
        "xl reports no migration time and no downtime; the migration time is the command's"
            .to_string(),
    ];
    if pages_sent.is_none() {
        notes.push(
            "xl reports no bytes sent (only debug builds of Xen <= 4.5 print `Total pages sent=`); measure the migration port's interface counters instead".into(),
        );
    }
    Some(HvReport {
        format: "xl",
        status: Some(if succeeded == Some(true) {
            "successful".into()
        } else {
            "failed".into()
        }),
        succeeded,
        error: failure_line,
        transferred_bytes: pages_sent.map(|p| p * 4096),
        memory_bytes: pages_total.map(|p| p * 4096),
        iterations,
        notes,
        ..HvReport::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line in the lab contract's shape; the `qemu` object is a QEMU 10.0 `query-migrate`
    /// return of a 1 GiB TCG guest dirtying 100 MB/s over a 1 Gbit/s link, with the figures of
    /// the reference exploration (shared/lab-reference/qemu-migration/results).
    const LAB: &str = r#"{"ok":true,"from":"src","to":"dst","started_wall_us":1764052800000000,"ended_wall_us":1764052830049000,"qemu":{"status":"completed","total-time":30049,"downtime":280,"setup-time":1,"ram":{"transferred":3548012544,"remaining":0,"total":1091379200,"duplicate":180224,"normal":864234,"normal-bytes":3539902464,"dirty-sync-count":33,"page-size":4096,"mbps":943.1,"pages-per-second":28790,"precopy-bytes":3512345600,"downtime-bytes":35666944,"postcopy-bytes":0,"dirty-sync-missed-zero-copy":0,"multifd-bytes":0,"skipped":0,"dirty-pages-rate":0}},"events":[{"host":"src","event":"MIGRATION","wall_us":1764052800001000,"data":{"status":"setup"}},{"host":"src","event":"STOP","wall_us":1764052829761000,"data":{}},{"host":"dst","event":"RESUME","wall_us":1764052830069000}],"stop_to_resume_ms":308.0,"target_start_to_resume_ms":30418.5,"announce":{"port":"sw-dst","first_frame_vs_resume_ms":0.028,"first_frame_kind":"RARP","first_ipv4_vs_resume_ms":16.876},"config":{"mem_mib":1024,"dirty_mb_s":100,"link_mbit":1000}}"#;

    #[test]
    fn lab_json_line_with_qmp_and_events() {
        let r = detect(&format!("progress on stdout?\n{LAB}\n"), "").unwrap();
        assert_eq!(r.format, "lab-json");
        assert_eq!(r.succeeded, Some(true));
        assert_eq!(r.status.as_deref(), Some("completed"));
        assert_eq!(r.total_time_ms, Some(30049.0));
        assert_eq!(r.downtime_ms, Some(280.0));
        assert_eq!(r.setup_time_ms, Some(1.0));
        assert_eq!(r.transferred_bytes, Some(3_548_012_544));
        assert_eq!(r.downtime_bytes, Some(35_666_944));
        assert_eq!(r.iterations, Some(33));
        assert_eq!(r.mbps, Some(943.1));
        assert_eq!(r.stop_to_resume_ms, Some(308.0));
        assert_eq!(r.target_start_to_resume_ms, Some(30418.5));
        assert_eq!(
            (r.from.as_deref(), r.to.as_deref()),
            (Some("src"), Some("dst"))
        );
        assert_eq!(r.events.len(), 3);
        assert_eq!(
            r.events[1],
            HvEvent {
                host: "src".into(),
                event: "STOP".into(),
                wall_us: 1_764_052_829_761_000
            }
        );
        assert_eq!(r.events[2].event, "RESUME");
    }

    #[test]
    fn lab_json_failure_wins_over_either_side() {
        let failed = r#"{"ok":false,"error":"migration did not converge; migrate_cancel after 120 s","qemu":{"status":"cancelled","total-time":120003,"ram":{"transferred":15000000000}},"events":[]}"#;
        let r = parse_lab_json(failed).unwrap();
        assert_eq!(r.succeeded, Some(false));
        assert_eq!(r.status.as_deref(), Some("cancelled"));
        assert!(r.error.unwrap().contains("converge"));
        // ok:true but QEMU says failed: failed.
        let r = parse_lab_json(r#"{"ok":true,"qemu":{"status":"failed","error-desc":"Unable to write to socket: Broken pipe"},"events":[]}"#).unwrap();
        assert_eq!(r.succeeded, Some(false));
        assert_eq!(
            r.error.as_deref(),
            Some("Unable to write to socket: Broken pipe")
        );
        assert!(parse_lab_json("not json")
            .unwrap_err()
            .to_string()
            .contains("not one JSON"));
        assert!(parse_lab_json("[1]").is_err());
    }

    #[test]
    fn bare_qmp_query_migrate_with_or_without_return_wrapper() {
        let q = r#"{"return": {"status": "completed", "setup-time": 2, "downtime": 12, "total-time": 715, "ram": {"transferred": 100253696, "remaining": 0, "total": 285814784, "duplicate": 46871, "skipped": 0, "normal": 24233, "normal-bytes": 99258368, "dirty-sync-count": 3, "mbps": 1123.4}}}"#;
        let r = detect(q, "").unwrap();
        assert_eq!(r.format, "qmp");
        assert_eq!(r.succeeded, Some(true));
        assert_eq!(r.downtime_ms, Some(12.0));
        assert_eq!(r.total_time_ms, Some(715.0));
        assert_eq!(r.transferred_bytes, Some(100_253_696));
        assert_eq!(r.downtime_bytes, None, "QEMU < 7.0 has no downtime-bytes");
        let r = detect(
            r#"{"status":"active","total-time":500,"ram":{"transferred":1}}"#,
            "",
        )
        .unwrap();
        assert_eq!(r.succeeded, Some(false), "still active is not a success");
        // Any other JSON is not a hypervisor report.
        assert!(detect(r#"{"hello":1}"#, "").is_none());
    }

    /// `virsh domjobinfo --completed` after a precopy migration, in the layout of libvirt's
    /// virsh (`%-17s %-12llu ms`, byte counts with three decimals and binary units).
    const VIRSH: &str = "Job type:         Completed
Operation:        Outgoing migration
Time elapsed:     27880        ms
Time elapsed w/o network: 27871        ms
Data processed:   286.523 MiB
Data remaining:   0.000 B
Data total:       1.008 GiB
Memory processed: 286.523 MiB
Memory remaining: 0.000 B
Memory total:     1.008 GiB
Memory bandwidth: 10.334 MiB/s
Dirty rate:       0            pages/s
Page size:        4096         bytes
Iteration:        4
Postcopy requests: 0
Constant pages:   191021
Normal pages:     72817
Normal data:      284.441 MiB
Total downtime:   940          ms
Downtime w/o network: 931          ms
Setup time:       12           ms

";

    #[test]
    fn virsh_domjobinfo_completed() {
        let r = detect(VIRSH, "").unwrap();
        assert_eq!(r.format, "virsh-domjobinfo");
        assert_eq!(r.succeeded, Some(true));
        assert_eq!(r.total_time_ms, Some(27880.0));
        assert_eq!(r.downtime_ms, Some(940.0));
        assert_eq!(r.setup_time_ms, Some(12.0));
        assert_eq!(
            r.transferred_bytes,
            Some((286.523f64 * 1048576.0).round() as u64)
        );
        assert_eq!(
            r.memory_bytes,
            Some((1.008f64 * 1073741824.0).round() as u64)
        );
        assert_eq!(r.iterations, Some(4));
        let mbps = r.mbps.unwrap();
        assert!((mbps - 86.69).abs() < 0.1, "{mbps}");
        let failed = "Job type:         Failed\nOperation:        Outgoing migration\nTime elapsed:     1532         ms\nError message:    operation failed: migration out job: unexpectedly failed\n";
        let r = detect("", failed).unwrap();
        assert_eq!(r.succeeded, Some(false));
        assert!(r.error.unwrap().contains("unexpectedly failed"));
        let running = "Job type:         Unbounded\nTime elapsed:     1000 ms\n";
        let r = parse_virsh_domjobinfo(running).unwrap();
        assert_eq!(r.succeeded, Some(false));
        assert!(r.notes[0].contains("--completed"));
        assert!(parse_virsh_domjobinfo("Operation: x\n").is_none());
        assert_eq!(bytes_value("2 XB"), None);
        assert_eq!(ms_value("1.5 s"), Some(1500.0));
    }

    /// `xl migrate` of a PV guest on Xen 4.9 (sender and target lines, as xl prints them).
    const XL: &str = "migration target: Ready to receive domain.
Saving to migration stream new xl format (info 0x3/0x0/1444)
Loading new save file <incoming migration stream> (new xl fmt info 0x3/0x0/1444)
 Savefile contains xl domain config in JSON format
Parsing config from <saved>
xc: info: Saving domain 6, type x86 PV
xc: info: Found x86 PV domain from Xen 4.9
xc: info: Restoring domain
xc: progress: Reloading memory pages: 131072/262144   50%
xc: progress: Reloading memory pages: 262144/262144  100%
xc: info: Restore successful
xc: info: XenStore: mfn 0x3fb808, dom 0, evt 1
xc: info: Console: mfn 0x3fb8e7, dom 0, evt 2
migration target: Transfer complete, requesting permission to start domain.
migration sender: Target has acknowledged transfer.
migration sender: Giving target permission to start.
migration target: Got permission, starting domain.
migration target: Domain started successsfully.
migration sender: Target reports successful startup.
Migration successful.
";

    #[test]
    fn xl_migrate_success_failure_and_legacy_counts() {
        let r = detect("", XL).unwrap();
        assert_eq!(r.format, "xl");
        assert_eq!(r.succeeded, Some(true));
        assert_eq!(r.memory_bytes, Some(262144 * 4096));
        assert_eq!(r.transferred_bytes, None);
        assert_eq!(r.downtime_ms, None);
        assert!(r.notes.iter().any(|n| n.contains("no bytes sent")));
        let failed = "migration target: Ready to receive domain.\nSaving to migration stream new xl format (info 0x1/0x0/1232)\nmigration sender: libxl_domain_suspend failed (rc=-3)\nMigration failed, resuming at sender.\n";
        let r = parse_xl(failed).unwrap();
        assert_eq!(r.succeeded, Some(false));
        assert!(r.error.unwrap().contains("libxl_domain_suspend failed"));
        // Xen 4.4's legacy saver with debug output: iterations and pages sent.
        let legacy = "xc: Saving memory: iter 0 (last sent 0 skipped 0): 262144/262144  100%\nxc: Saving memory: iter 1 (last sent 262144 skipped 0): 262144/262144  100%\nxc: Saving memory: iter 2 (last sent 8123 skipped 0): 262144/262144  100%\nTotal pages sent= 272312 (1.04x)\nmigration sender: Target has acknowledged transfer.\nmigration sender: Target reports successful startup.\nMigration successful.\n";
        let r = parse_xl(legacy).unwrap();
        assert_eq!(r.succeeded, Some(true));
        assert_eq!(r.transferred_bytes, Some(272312 * 4096));
        assert_eq!(r.iterations, Some(3));
        assert!(!r.notes.iter().any(|n| n.contains("no bytes sent")));
        // Cut short: no verdict is a failure.
        assert_eq!(
            parse_xl("migration target: Ready to receive domain.\n")
                .unwrap()
                .succeeded,
            Some(false)
        );
        assert!(detect("hello\n", "world\n").is_none());
    }
}
