//! The trials table: one row per element per trial, then mean/median/min/max/stddev rows per
//! element over the trials whose migration succeeded, written as CSV, JSON and a Markdown summary. Also the least-squares
//! trend line the plots draw. Pure functions: rows in, text out.

pub use super::record::{Direction, Status};
use serde::Serialize;
use std::fmt::Write as _;

/// The figures of one trial, flat (the full record is the trial's `trial.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrialRow {
    /// 1-based.
    pub trial: u32,
    /// The migrated element (its target name); a trial of a sequence has a row per element.
    pub element: String,
    /// The `--migrate` or the `--back` command.
    pub direction: Direction,
    pub status: Status,
    /// Why the trial failed, in words.
    pub failure: Option<String>,
    pub started_utc: String,
    /// The migration command's exit code (`None`: killed, or never ended).
    pub exit_code: Option<i32>,
    /// Which hypervisor output was read (`lab-json`, `qmp`, `virsh-domjobinfo`, `xl`).
    pub hv_format: Option<String>,
    /// Command start to end, by our monotonic clock.
    pub migration_ms: Option<f64>,
    /// The hypervisor's own total time.
    pub hv_total_ms: Option<f64>,
    /// The reference study's migration time: the destination's container (QEMU) starting to
    /// the VM running there, where the lab reports it.
    pub study_migration_ms: Option<f64>,
    /// Data transferred in MB (10^6 bytes, as the reference study): the hypervisor's figure,
    /// else the growth of the `--data-cmd` byte counter.
    pub data_mb: Option<f64>,
    /// `hypervisor` or `counter`: where `data_mb` comes from.
    pub data_source: Option<String>,
    /// The hypervisor's downtime figure.
    pub hv_downtime_ms: Option<f64>,
    /// The VM's real pause: source STOP to destination RESUME, where events are reported.
    pub vm_pause_ms: Option<f64>,
    /// The largest SIP reply gap overlapping the migration (0 when none reached `--min-gap`).
    pub sip_gap_ms: Option<f64>,
    pub sip_gap_bound_ms: Option<f64>,
    /// The largest ICMP reply gap overlapping the migration (0 when none reached `--min-gap`).
    pub icmp_gap_ms: Option<f64>,
    pub icmp_gap_bound_ms: Option<f64>,
    /// The largest loss window (RFC 6201, send side) overlapping the migration, per layer (0
    /// when none reached `--min-gap`); ± one probe interval like the gaps.
    pub sip_loss_ms: Option<f64>,
    pub icmp_loss_ms: Option<f64>,
    /// The Diameter layer's (the HSS's) gap, its bound and loss window, when it was probed.
    pub diameter_gap_ms: Option<f64>,
    pub diameter_gap_bound_ms: Option<f64>,
    pub diameter_loss_ms: Option<f64>,
    /// What the users lost while this element moved (its step's window of the load's series,
    /// see `trials::users`): failed or timed-out registrations (initial and re-registrations),
    /// failed or timed-out calls, and our own retransmissions (requests not answered within
    /// T1: late).
    pub reg_failed: Option<u64>,
    pub calls_failed: Option<u64>,
    pub late_requests: Option<u64>,
    /// `--media` in the load: the longest silence a call leg heard, and the lowest MOS.
    pub media_gap_ms: Option<f64>,
    pub media_mos_min: Option<f64>,
}

/// Reads one figure of a trial.
pub type Getter = fn(&TrialRow) -> Option<f64>;

/// A numeric column of the table.
pub struct Column {
    pub key: &'static str,
    pub header: &'static str,
    pub get: Getter,
    /// A reply gap's error bound: its CSV column and value ("± b" in the markdown).
    pub bound: Option<(&'static str, Getter)>,
    /// A gap or loss window, where 0 means "none reached --min-gap".
    pub gap: bool,
    /// Shown only when some trial has a value (a layer a run may not probe).
    pub optional: bool,
}

/// A plain numeric column.
const fn plain(key: &'static str, header: &'static str, get: Getter) -> Column {
    Column {
        key,
        header,
        get,
        bound: None,
        gap: false,
        optional: false,
    }
}

/// A gap column, with its bound when it has one.
const fn gap(
    key: &'static str,
    header: &'static str,
    get: Getter,
    bound: Option<(&'static str, Getter)>,
    optional: bool,
) -> Column {
    Column {
        key,
        header,
        get,
        bound,
        gap: true,
        optional,
    }
}

/// The columns of `rows`' table: every column, less the optional ones no trial has.
pub fn columns(rows: &[TrialRow]) -> Vec<&'static Column> {
    COLUMNS
        .iter()
        .filter(|c| !c.optional || rows.iter().any(|r| (c.get)(r).is_some()))
        .collect()
}

/// The numeric columns, in table order.
pub const COLUMNS: &[Column] = &[
    plain("migration_ms", "migration ms (command)", |r| r.migration_ms),
    plain("hv_total_ms", "migration ms (hypervisor)", |r| {
        r.hv_total_ms
    }),
    Column {
        optional: true,
        ..plain(
            "study_migration_ms",
            "migration ms (target start → resume)",
            |r| r.study_migration_ms,
        )
    },
    plain("data_mb", "data MB", |r| r.data_mb),
    plain("hv_downtime_ms", "hypervisor downtime ms", |r| {
        r.hv_downtime_ms
    }),
    plain("vm_pause_ms", "STOP→RESUME ms", |r| r.vm_pause_ms),
    gap(
        "sip_gap_ms",
        "SIP gap ms",
        |r| r.sip_gap_ms,
        Some(("sip_gap_bound_ms", |r| r.sip_gap_bound_ms)),
        false,
    ),
    gap(
        "icmp_gap_ms",
        "ICMP gap ms",
        |r| r.icmp_gap_ms,
        Some(("icmp_gap_bound_ms", |r| r.icmp_gap_bound_ms)),
        false,
    ),
    gap(
        "diameter_gap_ms",
        "Diameter gap ms",
        |r| r.diameter_gap_ms,
        Some(("diameter_gap_bound_ms", |r| r.diameter_gap_bound_ms)),
        true,
    ),
    gap(
        "sip_loss_ms",
        "SIP loss window ms",
        |r| r.sip_loss_ms,
        None,
        false,
    ),
    gap(
        "icmp_loss_ms",
        "ICMP loss window ms",
        |r| r.icmp_loss_ms,
        None,
        false,
    ),
    gap(
        "diameter_loss_ms",
        "Diameter loss window ms",
        |r| r.diameter_loss_ms,
        None,
        true,
    ),
    plain("reg_failed", "reg failed", |r| {
        r.reg_failed.map(|v| v as f64)
    }),
    plain("calls_failed", "calls failed", |r| {
        r.calls_failed.map(|v| v as f64)
    }),
    plain("late_requests", "late requests", |r| {
        r.late_requests.map(|v| v as f64)
    }),
    gap(
        "media_gap_ms",
        "media gap ms",
        |r| r.media_gap_ms,
        None,
        true,
    ),
    Column {
        optional: true,
        ..plain("media_mos_min", "lowest MOS", |r| r.media_mos_min)
    },
];

/// Summary statistics of one column.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Stats {
    pub n: usize,
    pub mean: f64,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Sample standard deviation (n − 1); 0 for a single value.
    pub stddev: f64,
}

impl Stats {
    pub fn of(values: &[f64]) -> Option<Stats> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        let stddev = if n > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Stats {
            n,
            mean,
            median,
            min: v[0],
            max: v[n - 1],
            stddev,
        })
    }
}

/// The elements of `rows`, in the order they were migrated.
pub fn elements(rows: &[TrialRow]) -> Vec<&str> {
    let mut v: Vec<&str> = Vec::new();
    for r in rows {
        if !v.contains(&r.element.as_str()) {
            v.push(&r.element);
        }
    }
    v
}

/// The rows of one element.
pub fn rows_of(rows: &[TrialRow], element: &str) -> Vec<TrialRow> {
    rows.iter()
        .filter(|r| r.element == element)
        .cloned()
        .collect()
}

/// Per column key, the statistics over the trials with status `ok` (of one element: mixing
/// two elements' pauses in one mean says nothing).
pub fn column_stats(rows: &[TrialRow]) -> Vec<(&'static str, Option<Stats>)> {
    COLUMNS
        .iter()
        .map(|c| {
            let vals: Vec<f64> = rows
                .iter()
                .filter(|r| r.status == Status::Ok)
                .filter_map(|r| (c.get)(r))
                .collect();
            (c.key, Stats::of(&vals))
        })
        .collect()
}

/// Least-squares line `y = intercept + slope·x`; `None` with fewer than two distinct x.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Trend {
    pub intercept: f64,
    pub slope: f64,
}

impl Trend {
    pub fn fit(points: &[(f64, f64)]) -> Option<Trend> {
        let pts: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let n = pts.len() as f64;
        if pts.len() < 2 {
            return None;
        }
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        if sxx <= f64::EPSILON * n {
            return None;
        }
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let slope = sxy / sxx;
        Some(Trend {
            intercept: my - slope * mx,
            slope,
        })
    }
    pub fn at(&self, x: f64) -> f64 {
        self.intercept + self.slope * x
    }
}

fn num(v: Option<f64>) -> String {
    v.map_or(String::new(), |x| {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    })
}

const STAT_NAMES: [&str; 5] = ["mean", "median", "min", "max", "stddev"];

fn stat_value(s: &Stats, name: &str) -> f64 {
    match name {
        "mean" => s.mean,
        "median" => s.median,
        "min" => s.min,
        "max" => s.max,
        _ => s.stddev,
    }
}

/// `trials.csv`: a row per element per trial, then per element a row per statistic (its name
/// in the `trial` column, computed over that element's `ok` trials).
pub fn csv(rows: &[TrialRow]) -> String {
    // Writing into memory cannot fail.
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut head = vec![
        "trial",
        "element",
        "direction",
        "status",
        "started_utc",
        "exit_code",
        "hv_format",
        "data_source",
    ];
    let cols = columns(rows);
    for c in &cols {
        head.push(c.key);
        if let Some((bound_key, _)) = c.bound {
            head.push(bound_key);
        }
    }
    head.push("failure");
    w.write_record(&head).expect("CSV into memory");
    for r in rows {
        let mut f = vec![
            r.trial.to_string(),
            r.element.clone(),
            r.direction.to_string(),
            r.status.to_string(),
            r.started_utc.clone(),
            r.exit_code.map_or(String::new(), |c| c.to_string()),
            r.hv_format.clone().unwrap_or_default(),
            r.data_source.clone().unwrap_or_default(),
        ];
        for c in &cols {
            f.push(num((c.get)(r)));
            if let Some((_, bound)) = c.bound {
                f.push(num(bound(r)));
            }
        }
        f.push(r.failure.clone().unwrap_or_default());
        w.write_record(&f).expect("CSV into memory");
    }
    for element in elements(rows) {
        let stats = column_stats(&rows_of(rows, element));
        for name in STAT_NAMES {
            // The statistic's name in the `trial` column, the element beside it, the other
            // text columns empty.
            let mut f = vec![name.to_string(), element.to_string()];
            f.resize(8, String::new());
            for (c, (_, st)) in COLUMNS.iter().zip(&stats) {
                if !cols.iter().any(|x| x.key == c.key) {
                    continue;
                }
                f.push(num(st.map(|st| stat_value(&st, name))));
                if c.bound.is_some() {
                    f.push(String::new());
                }
            }
            f.push(String::new());
            w.write_record(&f).expect("CSV into memory");
        }
    }
    String::from_utf8(w.into_inner().expect("CSV into memory")).expect("CSV of UTF-8 fields")
}

fn md_num(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| {
        if x.abs() >= 100.0 {
            format!("{x:.0}")
        } else {
            format!("{x:.1}")
        }
    })
}

/// `summary.md`: the table with the statistic rows, and what the columns mean. The element
/// column is shown when the trials migrated more than one.
pub fn markdown(rows: &[TrialRow], title: &str, min_gap_ms: f64, notes: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {title}\n");
    let count = |s: Status| rows.iter().filter(|r| r.status == s).count();
    let (ok, failed, interrupted) = (
        count(Status::Ok),
        count(Status::Failed),
        count(Status::Interrupted),
    );
    let els = elements(rows);
    let sequence = els.len() > 1;
    let what = if sequence {
        format!(
            "{} migration(s) of {} elements in sequence ({})",
            rows.len(),
            els.len(),
            els.join(" → ")
        )
    } else {
        format!("{} trial(s)", rows.len())
    };
    let _ = writeln!(
        s,
        "{what}: {ok} ok, {failed} failed, {interrupted} interrupted. Statistics are over the ok trials{}.\n",
        if sequence { ", per element" } else { "" }
    );
    let mut head = vec!["trial"];
    if sequence {
        head.push("element");
    }
    head.extend(["dir", "status"]);
    let cols = columns(rows);
    head.extend(cols.iter().map(|c| c.header));
    let _ = writeln!(s, "| {} |", head.join(" | "));
    let _ = writeln!(s, "|{}|", vec!["---"; head.len()].join("|"));
    for r in rows {
        let mut f = vec![r.trial.to_string()];
        if sequence {
            f.push(r.element.clone());
        }
        f.extend([r.direction.to_string(), r.status.to_string()]);
        for c in &cols {
            let v = (c.get)(r);
            let cell = match c.bound {
                _ if c.gap && v == Some(0.0) => format!("< {min_gap_ms:.0}"),
                Some((_, bound)) => with_bound(v, bound(r)),
                None => md_num(v),
            };
            f.push(cell);
        }
        let _ = writeln!(s, "| {} |", f.join(" | "));
    }
    for element in &els {
        let stats = column_stats(&rows_of(rows, element));
        for name in STAT_NAMES {
            let mut f = vec![format!("**{name}**")];
            if sequence {
                f.push(element.to_string());
            }
            f.extend([String::new(), String::new()]);
            for (c, (_, st)) in COLUMNS.iter().zip(&stats) {
                if cols.iter().any(|x| x.key == c.key) {
                    f.push(md_num(st.map(|st| stat_value(&st, name))));
                }
            }
            let _ = writeln!(s, "| {} |", f.join(" | "));
        }
    }
    let failures: Vec<&TrialRow> = rows.iter().filter(|r| r.failure.is_some()).collect();
    if !failures.is_empty() {
        let _ = writeln!(s, "\n## Failed or interrupted trials\n");
        for r in failures {
            let who = if sequence {
                format!(" ({})", r.element)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "- trial {}{who}: {}",
                r.trial,
                r.failure.as_deref().unwrap_or("")
            );
        }
    }
    let _ = writeln!(
        s,
        "\n## Columns\n\n\
- **migration ms (command)**: the migration command's start to its end, by imsprobe's monotonic clock.\n\
- **migration ms (hypervisor)**, **data MB** (10^6 bytes), **hypervisor downtime ms**: the hypervisor's own figures, where its output reports them (– where not).\n\
- **migration ms (target start → resume)** (lab only): the reference study's migration time, from the destination's QEMU starting to the VM running there.\n\
- **STOP→RESUME ms**: the VM's real pause, source STOP event to destination RESUME event (lab JSON).\n\
- **SIP gap ms**, **ICMP gap ms**: the largest reply gap of the probes that overlaps the migration, ± one probe interval; `< {min_gap_ms:.0}` when no gap reached `--min-gap`.\n\
- **SIP/ICMP loss window ms**: the largest run of probes without a good reply within `--timeout` overlapping the migration (send side, RFC 6201), ± one probe interval.\n\
- **reg failed**, **calls failed**, **late requests**: what the users lost while this element moved, from its migration's start to `--after` past its end, read from the load's per-second series (failed or timed-out registrations and calls, a timeout counted at its request's send time; requests retransmitted because no answer came within T1); the trial's totals are in trial.json's `load`.\n\
\nPer-trial records: `trial-NNN/trial.json`; definitions: docs/trials.md."
    );
    s.push_str(&super::study::beside(rows));
    if !notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

fn with_bound(v: Option<f64>, b: Option<f64>) -> String {
    match (v, b) {
        (Some(v), Some(b)) => format!("{} ± {}", md_num(Some(v)), md_num(Some(b))),
        (v, _) => md_num(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: u32, status: Status, mig: f64, sip: f64) -> TrialRow {
        TrialRow {
            trial: i,
            element: "pcscf".into(),
            direction: if i % 2 == 1 {
                Direction::Migrate
            } else {
                Direction::Back
            },
            status,
            started_utc: "2026-11-25T06:00:00.000000000Z".into(),
            migration_ms: Some(mig),
            sip_gap_ms: Some(sip),
            sip_gap_bound_ms: Some(1.0),
            ..TrialRow::default()
        }
    }

    #[test]
    fn stats_of_values() {
        let s = Stats::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.n, 8);
        assert_eq!(s.mean, 5.0);
        assert_eq!(s.median, 4.5);
        assert_eq!((s.min, s.max), (2.0, 9.0));
        assert!((s.stddev - 2.138089935).abs() < 1e-6, "{}", s.stddev);
        let one = Stats::of(&[3.0]).unwrap();
        assert_eq!((one.median, one.stddev), (3.0, 0.0));
        assert!(Stats::of(&[]).is_none());
        assert!(Stats::of(&[f64::NAN]).is_none());
    }

    #[test]
    fn trend_line_fits_and_refuses_degenerate_input() {
        let t = Trend::fit(&[(1.0, 3.0), (2.0, 5.0), (3.0, 7.0)]).unwrap();
        assert!((t.slope - 2.0).abs() < 1e-12 && (t.intercept - 1.0).abs() < 1e-12);
        assert!((t.at(10.0) - 21.0).abs() < 1e-9);
        // Noisy: the least-squares slope of (1,1),(2,3),(3,2) is 0.5.
        let t = Trend::fit(&[(1.0, 1.0), (2.0, 3.0), (3.0, 2.0)]).unwrap();
        assert!((t.slope - 0.5).abs() < 1e-12 && (t.intercept - 1.0).abs() < 1e-12);
        assert!(Trend::fit(&[(1.0, 1.0)]).is_none());
        assert!(Trend::fit(&[(2.0, 1.0), (2.0, 5.0)]).is_none());
    }

    #[test]
    fn statistics_rows_use_ok_trials_only() {
        let rows = vec![
            row(1, Status::Ok, 1000.0, 400.0),
            row(2, Status::Failed, 50.0, 0.0),
            row(3, Status::Ok, 3000.0, 600.0),
        ];
        let st = column_stats(&rows);
        let mig = st
            .iter()
            .find(|(k, _)| *k == "migration_ms")
            .unwrap()
            .1
            .unwrap();
        assert_eq!(
            (mig.n, mig.mean, mig.min, mig.max),
            (2, 2000.0, 1000.0, 3000.0)
        );
        assert!(st
            .iter()
            .find(|(k, _)| *k == "data_mb")
            .unwrap()
            .1
            .is_none());
        let c = csv(&rows);
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines.len(), 1 + 3 + 5);
        let head: Vec<&str> = lines[0].split(',').collect();
        let col = |name: &str| head.iter().position(|h| *h == name).unwrap();
        let mean: Vec<&str> = lines[4].split(',').collect();
        assert_eq!(mean[0], "mean");
        assert_eq!(mean[col("migration_ms")], "2000");
        assert_eq!(mean[col("sip_gap_ms")], "500");
        assert_eq!(mean.len(), head.len());
        let r2: Vec<&str> = lines[2].split(',').collect();
        assert_eq!(r2[col("status")], "failed");
        assert_eq!(r2[col("data_mb")], "");
        let md = markdown(&rows, "t", 20.0, &["a note".into()]);
        assert!(md.contains("| 1 | migrate | ok | 1000 |"), "{md}");
        assert!(md.contains("< 20"), "{md}");
        assert!(md.contains("400 ± 1.0"), "{md}");
        assert!(md.contains("**stddev**") && md.contains("a note"));
    }

    #[test]
    fn a_sequence_has_a_row_per_element_and_statistics_per_element() {
        let mut rows = Vec::new();
        for t in 1..=2 {
            let mut hss = row(t, Status::Ok, 900.0, 0.0);
            hss.element = "hss".into();
            hss.diameter_gap_ms = Some(100.0 * t as f64);
            hss.diameter_gap_bound_ms = Some(1.0);
            rows.push(hss);
            rows.push(row(t, Status::Ok, 2000.0, 400.0 * t as f64));
        }
        assert_eq!(elements(&rows), ["hss", "pcscf"]);
        let c = csv(&rows);
        let lines: Vec<Vec<&str>> = c.lines().map(|l| l.split(',').collect()).collect();
        assert_eq!(lines.len(), 1 + 4 + 2 * 5, "{c}");
        let head = &lines[0];
        let col = |name: &str| head.iter().position(|h| *h == name).unwrap();
        assert_eq!(lines[1][col("element")], "hss");
        assert_eq!(lines[2][col("element")], "pcscf");
        // Means per element: the HSS's Diameter gaps are not averaged with the P-CSCF's rows.
        let mean = |el: &str| {
            lines
                .iter()
                .find(|l| l[0] == "mean" && l[col("element")] == el)
                .unwrap()
                .clone()
        };
        assert_eq!(mean("hss")[col("diameter_gap_ms")], "150");
        assert_eq!(mean("pcscf")[col("diameter_gap_ms")], "");
        assert_eq!(mean("pcscf")[col("sip_gap_ms")], "600");
        assert_eq!(mean("hss")[col("sip_gap_ms")], "0");
        for l in &lines {
            assert_eq!(l.len(), head.len(), "{l:?}");
        }
        let md = markdown(&rows, "t", 20.0, &[]);
        assert!(md.contains("| trial | element | dir | status |"), "{md}");
        assert!(md.contains("| 2 | pcscf | back | ok |"), "{md}");
        assert!(md.contains("| **median** | hss |"), "{md}");
        assert!(md.contains("4 migration(s) of 2 elements in sequence (hss → pcscf)"));
        // One element: no element column.
        let one = rows_of(&rows, "pcscf");
        assert!(!markdown(&one, "t", 20.0, &[]).contains("| element |"));
    }

    #[test]
    fn csv_quotes_failure_text() {
        let mut r = row(1, Status::Failed, 1.0, 0.0);
        r.failure = Some("exit code 1, \"boom\", see stderr".into());
        let c = csv(&[r]);
        assert!(c
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("\"exit code 1, \"\"boom\"\", see stderr\""));
    }

    #[test]
    fn diameter_columns_appear_only_when_a_trial_probed_the_hss() {
        let rows = vec![
            row(1, Status::Ok, 1000.0, 80.0),
            row(2, Status::Ok, 1100.0, 90.0),
        ];
        let (c, m) = (csv(&rows), markdown(&rows, "t", 20.0, &[]));
        assert!(
            !c.contains("diameter") && !m.contains("Diameter"),
            "{c}\n{m}"
        );
        let mut with = rows.clone();
        with[0].diameter_gap_ms = Some(130.0);
        with[0].diameter_gap_bound_ms = Some(1.0);
        with[0].diameter_loss_ms = Some(0.0);
        let c = csv(&with);
        let head: Vec<&str> = c.lines().next().unwrap().split(',').collect();
        let at = head.iter().position(|h| *h == "diameter_gap_ms").unwrap();
        assert_eq!(head[at + 1], "diameter_gap_bound_ms");
        let first: Vec<&str> = c.lines().nth(1).unwrap().split(',').collect();
        assert_eq!((first[at], first[at + 1]), ("130", "1"));
        assert_eq!(first.len(), head.len());
        for l in c.lines() {
            assert_eq!(l.split(',').count(), head.len(), "{l}");
        }
        let m = markdown(&with, "t", 20.0, &[]);
        assert!(m.contains("| 130.0 ± 1.0 |") || m.contains("130"), "{m}");
        assert!(m.contains("Diameter loss window ms"), "{m}");
    }
}
