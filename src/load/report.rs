//! What a run tells its user: a live line per second, a per-second series (CSV or JSON lines),
//! and the final report as a table and as JSON.

use super::stats::{DelaySummary, Gauges, Interval, Rfc6076};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// One second of the run, summed over workers.
#[derive(Clone, Debug, Serialize)]
pub struct SeriesRow {
    pub t_s: f64,
    pub utc: String,
    pub phase: String,
    #[serde(flatten)]
    pub gauges: Gauges,
    #[serde(flatten)]
    pub counters: super::stats::Counters,
    pub srd_p50_ms: f64,
    pub srd_p99_ms: f64,
    pub rrd_p50_ms: f64,
    pub rrd_p99_ms: f64,
    pub sched_lag_max_ms: f64,
}

impl SeriesRow {
    pub fn new(t_s: f64, utc: String, phase: &str, i: &Interval) -> SeriesRow {
        let srd = DelaySummary::of(&i.delays.srd);
        let rrd = DelaySummary::of(&i.delays.rrd);
        SeriesRow {
            t_s,
            utc,
            phase: phase.to_string(),
            gauges: i.gauges,
            counters: i.counters.clone(),
            srd_p50_ms: srd.p50_ms,
            srd_p99_ms: srd.p99_ms,
            rrd_p50_ms: rrd.p50_ms,
            rrd_p99_ms: rrd.p99_ms,
            sched_lag_max_ms: DelaySummary::of(&i.delays.sched_lag).max_ms,
        }
    }

    /// The live progress line.
    pub fn progress_line(&self, users: usize, total: &Interval) -> String {
        let c = &self.counters;
        let t = &total.counters;
        let mut fails: BTreeMap<&str, u64> = BTreeMap::new();
        for (k, v) in &total.status {
            if let Some(code) = k.split(' ').nth(1) {
                if !code.starts_with('1')
                    && !code.starts_with('2')
                    && code != "401"
                    && code != "407"
                {
                    *fails.entry(code).or_default() += v;
                }
            }
        }
        let fails: Vec<String> = fails.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        format!(
            "[{:>5.0}s] {:<13} reg {}/{} fail {} | calls/s offered {} placed {} answered {} | active {} | done {} failed {} | retrans {} | SRD p50 {:.1} p99 {:.1} ms{}{}",
            self.t_s,
            self.phase,
            self.gauges.registered,
            users,
            t.reg_failed + t.reg_timeouts,
            c.calls_offered,
            c.calls_attempted,
            c.calls_answered,
            self.gauges.active_calls,
            t.calls_completed,
            t.calls_failed + t.calls_timeout,
            t.retransmits,
            self.srd_p50_ms,
            self.srd_p99_ms,
            if fails.is_empty() {
                String::new()
            } else {
                format!(" | codes {}", fails.join(" "))
            },
            if t.malformed > 0 {
                format!(" | malformed {}", t.malformed)
            } else {
                String::new()
            },
        )
    }
}

/// Writes the per-second series as CSV (`.csv`) or JSON lines (anything else).
pub struct SeriesWriter {
    out: std::io::BufWriter<std::fs::File>,
    csv: bool,
    header_done: bool,
}

impl SeriesWriter {
    pub fn create(path: &Path) -> anyhow::Result<SeriesWriter> {
        let f = std::fs::File::create(path).map_err(|e| {
            anyhow::anyhow!("cannot create the time series file {}: {e}", path.display())
        })?;
        Ok(SeriesWriter {
            out: std::io::BufWriter::new(f),
            csv: path.extension().is_some_and(|e| e == "csv"),
            header_done: false,
        })
    }

    pub fn write(&mut self, row: &SeriesRow) -> std::io::Result<()> {
        let v = serde_json::to_value(row).map_err(std::io::Error::other)?;
        if !self.csv {
            writeln!(self.out, "{v}")?;
            return self.out.flush();
        }
        let obj = v.as_object().expect("a row serializes to an object");
        if !self.header_done {
            let names: Vec<&str> = obj.keys().map(String::as_str).collect();
            writeln!(self.out, "{}", names.join(","))?;
            self.header_done = true;
        }
        let vals: Vec<String> = obj
            .values()
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        writeln!(self.out, "{}", vals.join(","))?;
        // Flushed every second: a run killed hard still leaves every finished second on disk.
        self.out.flush()
    }
}

/// The final report (JSON form; [`Report::to_text`] renders the table).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub target: String,
    pub embedded_target: bool,
    pub transport: String,
    pub users: usize,
    pub workers: usize,
    pub started_utc: String,
    pub ended_utc: String,
    pub elapsed_s: f64,
    pub call_phase_s: f64,
    pub stop_reason: crate::shutdown::StopReason,
    pub offered_cps: f64,
    pub achieved_cps: f64,
    pub counters: super::stats::Counters,
    pub status_codes: BTreeMap<String, u64>,
    pub malformed_by_kind: BTreeMap<String, u64>,
    pub rfc6076: Rfc6076,
    pub answer_delay: DelaySummary,
    pub scheduling_lag: DelaySummary,
    pub settings: serde_json::Value,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn to_text(&self) -> String {
        let c = &self.counters;
        let m = &self.rfc6076;
        let mut s = String::new();
        let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2} %"));
        let _ = writeln!(
            s,
            "imsload {} — target {}{} over {}, {} users, {} workers",
            self.version,
            self.target,
            if self.embedded_target {
                " (embedded)"
            } else {
                ""
            },
            self.transport,
            self.users,
            self.workers
        );
        let _ = writeln!(
            s,
            "{} → {} ({:.1} s, call phase {:.1} s), stopped by {:?}",
            self.started_utc, self.ended_utc, self.elapsed_s, self.call_phase_s, self.stop_reason
        );
        let _ = writeln!(s, "\nRegistrations");
        let _ = writeln!(
            s,
            "  initial   attempts {:>8}  ok {:>8}  failed {:>6}  timeouts {:>6}  auth rejected {:>6}",
            c.reg_attempts, c.reg_ok, c.reg_failed, c.reg_timeouts, c.reg_auth_rejected
        );
        if c.reg_aka_mac_failures + c.reg_aka_resyncs > 0 {
            let _ = writeln!(
                s,
                "  AKA       MAC failures {:>6}  (network not authenticated: K/OPc differ)  SQN re-syncs {:>6}",
                c.reg_aka_mac_failures, c.reg_aka_resyncs
            );
        }
        let _ = writeln!(
            s,
            "  refresh   attempts {:>8}  ok {:>8}  failed {:>6}",
            c.rereg_attempts, c.rereg_ok, c.rereg_failed
        );
        let _ = writeln!(
            s,
            "  de-reg    attempts {:>8}  ok {:>8}  failed {:>6}  unanswered at end {:>4}",
            c.dereg_attempts, c.dereg_ok, c.dereg_failed, c.dereg_abandoned
        );
        let _ = writeln!(
            s,
            "\nCalls (offered {:.2}/s, achieved {:.2}/s)",
            self.offered_cps, self.achieved_cps
        );
        let _ = writeln!(
            s,
            "  offered {:>8}  placed {:>8}  limited {:>6}  unplaced {:>6}",
            c.calls_offered, c.calls_attempted, c.calls_limited, c.calls_unplaced
        );
        let _ = writeln!(
            s,
            "  ringing {:>8}  answered {:>6}  failed {:>7}  timeouts {:>6}  cancelled {:>6}",
            c.calls_ringing, c.calls_answered, c.calls_failed, c.calls_timeout, c.calls_cancelled
        );
        let _ = writeln!(
            s,
            "  completed {:>6}  BYE 481 {:>7}  BYE failed {:>5}  abandoned at end {:>4}",
            c.calls_completed, c.calls_bye_481, c.calls_bye_failed, c.calls_abandoned
        );
        let _ = writeln!(
            s,
            "  answering side: INVITEs {} answered {} BYEs {} CANCELs {}",
            c.uas_invites, c.uas_answered, c.uas_byes, c.uas_cancels
        );
        let _ = writeln!(s, "\nRFC 6076");
        let row = |s: &mut String, name: &str, d: &DelaySummary| {
            let _ = writeln!(
                s,
                "  {name:<32} n {:>8}  p50 {:>9.2}  p90 {:>9.2}  p99 {:>9.2}  max {:>9.2} ms",
                d.count, d.p50_ms, d.p90_ms, d.p99_ms, d.max_ms
            );
        };
        row(
            &mut s,
            "Registration Request Delay",
            &m.registration_request_delay,
        );
        row(&mut s, "Session Request Delay", &m.session_request_delay);
        row(&mut s, "INVITE → 200 (answer delay)", &self.answer_delay);
        row(
            &mut s,
            "Session Disconnect Delay",
            &m.session_disconnect_delay,
        );
        row(&mut s, "Session Duration Time", &m.session_duration_time);
        let _ = writeln!(
            s,
            "  Ineffective Registration Attempts      {}",
            pct(m.ineffective_registration_attempts_pct)
        );
        let _ = writeln!(
            s,
            "  Session Establishment Ratio            {}",
            pct(m.session_establishment_ratio_pct)
        );
        let _ = writeln!(
            s,
            "  Session Establishment Effectiveness    {}",
            pct(m.session_establishment_effectiveness_ratio_pct)
        );
        let _ = writeln!(
            s,
            "  Ineffective Session Attempts           {}",
            pct(m.ineffective_session_attempts_pct)
        );
        let _ = writeln!(
            s,
            "  Session Completion Ratio               {}",
            pct(m.session_completion_ratio_pct)
        );
        let _ = writeln!(s, "\nResponses by method and status");
        let mut line = String::new();
        for (k, v) in &self.status_codes {
            let _ = write!(line, "  {k}: {v}");
        }
        let _ = writeln!(s, " {}", line.trim_start());
        let _ = writeln!(
            s,
            "\nTransport: sent {} received {} | our retransmissions {} | duplicates absorbed {} | stray responses {} | malformed {}{}",
            c.msgs_sent,
            c.msgs_received,
            c.retransmits,
            c.duplicates_received,
            c.stray_responses,
            c.malformed,
            if self.malformed_by_kind.is_empty() {
                String::new()
            } else {
                format!(" {:?}", self.malformed_by_kind)
            }
        );
        let _ = writeln!(
            s,
            "Scheduling lag: p99 {:.2} ms, max {:.2} ms, {} actions over 10 ms late",
            self.scheduling_lag.p99_ms, self.scheduling_lag.max_ms, c.late_actions
        );
        for w in &self.warnings {
            let _ = writeln!(s, "WARNING: {w}");
        }
        s
    }
}
