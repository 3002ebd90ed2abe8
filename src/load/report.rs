//! What a run tells its user: a live line per second, a per-second series (CSV or JSON lines),
//! and the final report as a table and as JSON.

use super::stats::{DelaySummary, Gauges, Interval, Rfc6076};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// One second of the run, summed over workers (and, merged, over shards).
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// imsload's own CPU in this second, % of one core (the generator's self-check).
    pub generator_cpu_pct: f64,
    /// Scenario attempts started (sent) in this second.
    pub attempts_started: u64,
    /// The rate the plan offered for this second (profile runs).
    pub offered_rate: Option<f64>,
    pub plan_phase: Option<String>,
    pub message_p50_ms: f64,
    pub options_p50_ms: f64,
    /// Monitor readings (`mon_<name>`), empty when none.
    #[serde(flatten)]
    pub monitors: BTreeMap<String, Option<f64>>,
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
            generator_cpu_pct: 0.0,
            attempts_started: super::control::attempts_started(i),
            offered_rate: None,
            plan_phase: None,
            message_p50_ms: DelaySummary::of(&i.delays.message).p50_ms,
            options_p50_ms: DelaySummary::of(&i.delays.options).p50_ms,
            monitors: BTreeMap::new(),
        }
    }

    /// The live progress line.
    pub fn progress_line(&self, users: usize, total: &Interval) -> String {
        let c = &self.counters;
        let t = &total.counters;
        let mut fails: BTreeMap<&str, u64> = BTreeMap::new();
        // Once a second: spelling the keys out here keeps the line's order and format.
        let status = total.status.by_name();
        for (k, v) in &status {
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
        ) + &self.plan_progress()
    }

    /// The plan's part of the progress line: phase, offered rate, monitors, own CPU.
    fn plan_progress(&self) -> String {
        let mut s = String::new();
        if let (Some(p), Some(r)) = (&self.plan_phase, self.offered_rate) {
            let _ = write!(s, " | plan {p} {r:.1}/s started {}", self.attempts_started);
        }
        for (k, v) in &self.monitors {
            match v {
                Some(v) => {
                    let _ = write!(s, " | {} {v:.1}", k.trim_start_matches("mon_"));
                }
                None => {
                    let _ = write!(s, " | {} -", k.trim_start_matches("mon_"));
                }
            }
        }
        if self.plan_phase.is_some() || !self.monitors.is_empty() {
            let _ = write!(s, " | imsload cpu {:.0} %", self.generator_cpu_pct);
        }
        s
    }
}

/// Writes the per-second series as CSV (`.csv`) or JSON lines (anything else).
pub enum SeriesWriter {
    Lines(std::io::BufWriter<std::fs::File>),
    /// RFC 4180 (a profile's phase name may hold a comma). The header comes from the first
    /// row; every later row is written in its order, by name, so a row without one of its
    /// columns leaves that cell empty instead of shifting the rest.
    Csv {
        out: Box<csv::Writer<std::fs::File>>,
        columns: Option<Vec<String>>,
    },
}

impl SeriesWriter {
    pub fn create(path: &Path) -> anyhow::Result<SeriesWriter> {
        let f = std::fs::File::create(path).map_err(|e| {
            anyhow::anyhow!("cannot create the time series file {}: {e}", path.display())
        })?;
        Ok(if path.extension().is_some_and(|e| e == "csv") {
            SeriesWriter::Csv {
                out: Box::new(csv::Writer::from_writer(f)),
                columns: None,
            }
        } else {
            SeriesWriter::Lines(std::io::BufWriter::new(f))
        })
    }

    /// Writes `row` and flushes: a run killed hard still leaves every finished second on disk.
    pub fn write(&mut self, row: &SeriesRow) -> std::io::Result<()> {
        let v = serde_json::to_value(row).map_err(std::io::Error::other)?;
        match self {
            SeriesWriter::Lines(out) => {
                writeln!(out, "{v}")?;
                out.flush()
            }
            SeriesWriter::Csv { out, columns } => {
                let obj = v.as_object().expect("a row serializes to an object");
                let columns = match columns {
                    Some(c) => c,
                    None => {
                        let names: Vec<String> = obj.keys().cloned().collect();
                        out.write_record(&names)?;
                        columns.insert(names)
                    }
                };
                out.write_record(columns.iter().map(|c| match obj.get(c) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                }))?;
                out.flush()
            }
        }
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
    pub message_delay: DelaySummary,
    pub options_delay: DelaySummary,
    pub scheduling_lag: DelaySummary,
    pub settings: serde_json::Value,
    pub warnings: Vec<String>,
    /// Seconds in which the generator's self-check found it saturated or late.
    pub generator_behind_s: u64,
    /// Profile runs: offered vs achieved rate per phase, threshold events, capacity search.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanReport>,
    /// `--hep`: copies mirrored, dropped, refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hep: Option<crate::hep::mirror::HepStats>,
    /// `--media`: what the calls' audio went through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaReport>,
    /// The run's delay histograms, lossless: what `imsload merge` adds up.
    pub histograms: super::stats::EncodedDelays,
    /// A shard's identity, start and per-second series (`--shard`/`--shards`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<super::shard::ShardSection>,
    /// A merged report: which shards went into it and which were missing, late or saturated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged: Option<super::merge::MergeSection>,
}

/// The media plane of a run (`--media`, docs/media.md): packets, and per stream (call leg of
/// ours, at its end) the longest gap, the RFC 3550 jitter and the E-model MOS.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MediaReport {
    pub streams: u64,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_lost: u64,
    /// Lost of those expected (received + lost), percent.
    pub loss_pct: f64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Received packets that were our own, sent back (an echoing peer).
    pub echoed: u64,
    /// Per stream: the longest time without a packet.
    pub longest_gap: DelaySummary,
    /// Per stream: RFC 3550 interarrival jitter at its end.
    pub jitter: DelaySummary,
    /// Per packet: how late it left (the send-time jitter).
    pub send_lateness: DelaySummary,
    /// Per stream that expected audio: the E-model MOS (1 to 4.5; G.711 at best about 4.4).
    pub mos_mean: f64,
    pub mos_min: f64,
    pub mos_p5: f64,
    /// RTCP compound packets sent, received, and received but malformed.
    #[serde(default)]
    pub rtcp_sent: u64,
    #[serde(default)]
    pub rtcp_received: u64,
    #[serde(default)]
    pub rtcp_malformed: u64,
    /// Round trip times from the far ends' RTCP reports on our streams (RFC 3550 §6.4.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtcp_rtt: Option<DelaySummary>,
}

impl MediaReport {
    pub fn of(t: &super::stats::Interval) -> Option<MediaReport> {
        let c = &t.counters;
        if c.media_streams_started == 0 && c.media_sdp_unusable == 0 {
            return None;
        }
        let d = &t.delays;
        let expected =
            c.media_packets_received.saturating_sub(c.media_duplicates) + c.media_packets_lost;
        let mos = |v: u64| v as f64 / 100.0;
        Some(MediaReport {
            streams: c.media_streams_started,
            packets_sent: c.media_packets_sent,
            packets_received: c.media_packets_received,
            packets_lost: c.media_packets_lost,
            loss_pct: if expected > 0 {
                100.0 * c.media_packets_lost as f64 / expected as f64
            } else {
                0.0
            },
            duplicates: c.media_duplicates,
            out_of_order: c.media_out_of_order,
            echoed: c.media_packets_echoed,
            longest_gap: DelaySummary::of(&d.media_gap),
            jitter: DelaySummary::of(&d.media_jitter),
            send_lateness: DelaySummary::of(&d.media_send_lateness),
            mos_mean: if d.media_mos.is_empty() {
                0.0
            } else {
                d.media_mos.mean() / 100.0
            },
            mos_min: if d.media_mos.is_empty() {
                0.0
            } else {
                mos(d.media_mos.min())
            },
            mos_p5: mos(d.media_mos.value_at_quantile(0.05)),
            rtcp_sent: c.media_rtcp_sent,
            rtcp_received: c.media_rtcp_received,
            rtcp_malformed: c.media_rtcp_malformed,
            rtcp_rtt: (!d.media_rtt.is_empty()).then(|| DelaySummary::of(&d.media_rtt)),
        })
    }
}

/// One phase of a profile run as it went.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PhaseSummary {
    pub phase: String,
    pub seconds: u64,
    pub offered_attempts: f64,
    pub started_attempts: u64,
    pub offered_rate: f64,
    pub achieved_rate: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanReport {
    pub phases: Vec<PhaseSummary>,
    pub events: Vec<super::control::Event>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<super::control::CapacityResult>,
}

impl PlanReport {
    /// Mean offered rate over the plan's seconds.
    pub fn offered_rate(&self) -> f64 {
        let (a, n) = self.phases.iter().fold((0.0, 0u64), |(a, n), p| {
            (a + p.offered_attempts, n + p.seconds)
        });
        if n == 0 {
            0.0
        } else {
            a / n as f64
        }
    }

    fn write_text(&self, s: &mut String) {
        let _ = writeln!(s, "\nPlan: offered vs achieved attempts/s per phase");
        for p in &self.phases {
            let dev = if p.offered_rate > 0.0 {
                format!("{:+.1} %", 100.0 * (p.achieved_rate / p.offered_rate - 1.0))
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "  {:<36} {:>5} s  offered {:>9.2}/s  achieved {:>9.2}/s  {dev}",
                p.phase, p.seconds, p.offered_rate, p.achieved_rate
            );
        }
        for e in &self.events {
            let _ = writeln!(s, "  at plan second {}: {}", e.t, e.what);
        }
        if let Some(c) = &self.capacity {
            let _ = writeln!(
                s,
                "\nCapacity search (inadequately handled: failed, or slower than {} ms; limit {} %)",
                c.max_delay_ms, c.limit_pct
            );
            let _ = writeln!(
                s,
                "  {:>9} {:>9} {:>9} {:>8} {:>8} {:>11} {:>9} {:>9}  verdict",
                "rate/s",
                "achieved",
                "attempts",
                "failed",
                "slow",
                "inadequate",
                "p50 ms",
                "p99 ms"
            );
            for st in &c.steps {
                let _ = writeln!(
                    s,
                    "  {:>9.1} {:>9.1} {:>9} {:>8} {:>8} {:>10.3}% {:>9.2} {:>9.2}  {}",
                    st.rate,
                    st.achieved_rate,
                    st.handled.attempts,
                    st.handled.failed,
                    st.handled.slow,
                    st.inadequate_pct,
                    st.answer_p50_ms,
                    st.answer_p99_ms,
                    if st.passed { "pass" } else { "FAIL" }
                );
            }
            let _ = writeln!(
                s,
                "  design objective capacity: {} ({})",
                match (c.design_objective_capacity, c.steps.is_empty()) {
                    (Some(r), _) => format!("{r} attempts/s"),
                    (None, true) => "none: no step ran to its end".to_string(),
                    (None, false) => "none: the first step failed".to_string(),
                },
                c.ended
            );
        }
    }
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
        if let Some(sh) = &self.shard {
            let _ = writeln!(
                s,
                "shard {}/{} (its users and 1/{} of every rate){}",
                sh.index,
                sh.count,
                sh.count,
                match &sh.start_at {
                    Some(t) => format!(", start at {t}, {:.3} s late", sh.late_s),
                    None => String::new(),
                }
            );
        }
        if let Some(m) = &self.merged {
            let _ = writeln!(
                s,
                "merged: {} of {} shards{}; percentiles from the shards' added histograms",
                m.present.len(),
                m.shards,
                if m.missing.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (MISSING: {})",
                        m.missing
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            );
        }
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
        if c.reg_associated_uris + c.reg_no_associated_uri > 0 {
            let _ = writeln!(
                s,
                "  IMS       P-Associated-URI: {} identities, 200s without it {}, lacking the user's own IMPU {}",
                c.reg_associated_uris, c.reg_no_associated_uri, c.reg_associated_missing_own
            );
        }
        let ipsec_failed = c.ipsec_no_security_server
            + c.ipsec_malformed
            + c.ipsec_alg_refused
            + c.ipsec_no_keys
            + c.ipsec_sa_install_failed
            + c.ipsec_protected_unanswered
            + c.ipsec_fresh_ports_failed;
        if c.ipsec_sa_setups + ipsec_failed > 0 {
            let _ = writeln!(
                s,
                "  IPsec     SA pairs made {:>6}  removed {:>6}  renewed {} (failed {}, replaced still in use {})  restarts on fresh ports {}  failed {:>6} (no Security-Server {}, unreadable {}, algorithm refused {}, no AKA keys {}, kernel refused {}, protected REGISTER unanswered {}, no fresh ports {})",
                c.ipsec_sa_setups,
                c.ipsec_sa_teardowns,
                c.ipsec_sa_renewals,
                c.ipsec_sa_renewals_failed,
                c.ipsec_sa_replaced_in_use,
                c.ipsec_fresh_ports,
                ipsec_failed,
                c.ipsec_no_security_server,
                c.ipsec_malformed,
                c.ipsec_alg_refused,
                c.ipsec_no_keys,
                c.ipsec_sa_install_failed,
                c.ipsec_protected_unanswered,
                c.ipsec_fresh_ports_failed
            );
        }
        let _ = writeln!(
            s,
            "  refresh   attempts {:>8}  ok {:>8}  failed {:>6}",
            c.rereg_attempts, c.rereg_ok, c.rereg_failed
        );
        let _ = writeln!(
            s,
            "  de-reg    attempts {:>8}  ok {:>8}  failed {:>6}  unanswered at end {:>4}  not sent {:>4}",
            c.dereg_attempts, c.dereg_ok, c.dereg_failed, c.dereg_unanswered, c.dereg_abandoned
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
            "  completed {:>6}  BYE 481 {:>7}  BYE failed {:>5}  unanswered at end {:>4}  abandoned at end {:>4}",
            c.calls_completed,
            c.calls_bye_481,
            c.calls_bye_failed,
            c.calls_unanswered,
            c.calls_abandoned
        );
        let _ = writeln!(
            s,
            "  answering side: INVITEs {} answered {} BYEs {} CANCELs {}",
            c.uas_invites, c.uas_answered, c.uas_byes, c.uas_cancels
        );
        if c.uas_refused_overload + c.uas_refused_too_large > 0 {
            let _ = writeln!(
                s,
                "  answering side refused: {} INVITEs with 503 (calls or bytes held at the cap), {} with 513 (headers too large)",
                c.uas_refused_overload, c.uas_refused_too_large
            );
        }
        if c.msg_attempts + c.opt_attempts + c.scenarios_unplaced > 0 {
            let _ = writeln!(s, "\nOther scenarios");
            let _ = writeln!(
                s,
                "  MESSAGE  sent {:>8}  ok {:>8}  failed {:>6}  timeouts {:>6}  p50 {:.2} p99 {:.2} ms",
                c.msg_attempts,
                c.msg_ok,
                c.msg_failed,
                c.msg_timeouts,
                self.message_delay.p50_ms,
                self.message_delay.p99_ms
            );
            let _ = writeln!(
                s,
                "  OPTIONS  sent {:>8}  ok {:>8}  failed {:>6}  timeouts {:>6}  p50 {:.2} p99 {:.2} ms",
                c.opt_attempts,
                c.opt_ok,
                c.opt_failed,
                c.opt_timeouts,
                self.options_delay.p50_ms,
                self.options_delay.p99_ms
            );
            let _ = writeln!(
                s,
                "  attempts offered {} (all scenarios), not placed for want of a suitable user {}",
                c.scenarios_offered, c.scenarios_unplaced
            );
        }
        if let Some(p) = &self.plan {
            p.write_text(&mut s);
        }
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
        if let Some(m) = &self.media {
            let _ = writeln!(
                s,
                "\nMedia: {} streams | RTP sent {} received {} lost {} ({:.3} %) duplicated {} out of order {} echoed {}\n  longest gap per stream: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms | jitter p50 {:.2} ms, p99 {:.2} ms | send lateness p99 {:.2} ms | MOS mean {:.2}, 5th percentile {:.2}, min {:.2}",
                m.streams, m.packets_sent, m.packets_received, m.packets_lost, m.loss_pct,
                m.duplicates, m.out_of_order, m.echoed,
                m.longest_gap.p50_ms, m.longest_gap.p99_ms, m.longest_gap.max_ms,
                m.jitter.p50_ms, m.jitter.p99_ms, m.send_lateness.p99_ms,
                m.mos_mean, m.mos_p5, m.mos_min
            );
            let _ = write!(
                s,
                "  RTCP: sent {} received {} malformed {}",
                m.rtcp_sent, m.rtcp_received, m.rtcp_malformed
            );
            match &m.rtcp_rtt {
                Some(r) => {
                    let _ = writeln!(
                        s,
                        " | round trip p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                        r.p50_ms, r.p99_ms, r.max_ms
                    );
                }
                None => {
                    let _ = writeln!(s, " | no round trip (no report on our streams came back)");
                }
            }
        }
        let _ = writeln!(s, "\nResponses by method and status");
        let mut line = String::new();
        for (k, v) in &self.status_codes {
            let _ = write!(line, "  {k}: {v}");
        }
        let _ = writeln!(s, " {}", line.trim_start());
        let _ = writeln!(
            s,
            "\nTransport: sent {}{} received {}{} | our retransmissions {} | duplicates absorbed {} | late provisionals {} | stray responses {} | malformed {}{}",
            c.msgs_sent,
            if c.send_errors > 0 {
                format!(" ({} refused by the kernel)", c.send_errors)
            } else {
                String::new()
            },
            c.msgs_received,
            if c.rx_dropped > 0 {
                format!(" ({} dropped by the kernel: our receive buffer was full)", c.rx_dropped)
            } else {
                String::new()
            },
            c.retransmits,
            c.duplicates_received,
            c.late_provisionals,
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
        if let Some(h) = &self.hep {
            let _ = writeln!(s, "{}", h.line());
        }
        for w in &self.warnings {
            let _ = writeln!(s, "WARNING: {w}");
        }
        s
    }
}

/// `--media-log`: one CSV line per media stream as it ends, with its own figures; written as
/// streams end (flushed each second), so a run cut short keeps every stream that ended.
pub struct MediaLog {
    out: csv::Writer<std::fs::File>,
    failed: bool,
}

/// One line of the media log. The far end's figures (from its RTCP) are empty when it sent none.
#[derive(Serialize)]
struct MediaLogLine {
    ssrc: String,
    leg: &'static str,
    started_utc: String,
    ended_utc: String,
    ptime_ms: u64,
    sent: u64,
    received: u64,
    expected: u64,
    lost: u64,
    jitter_ms: f64,
    longest_gap_ms: f64,
    longest_gap_at_utc: String,
    r_factor: f64,
    mos: f64,
    rtcp_rtt_ms: Option<f64>,
    far_lost: Option<i32>,
    far_jitter_ms: Option<f64>,
}

/// The log's header, written when it is created (a run where no stream ended still leaves a
/// file a reader can open): [`MediaLogLine`]'s fields, in order (a unit test holds them equal).
const MEDIA_LOG_COLUMNS: [&str; 17] = [
    "ssrc",
    "leg",
    "started_utc",
    "ended_utc",
    "ptime_ms",
    "sent",
    "received",
    "expected",
    "lost",
    "jitter_ms",
    "longest_gap_ms",
    "longest_gap_at_utc",
    "r_factor",
    "mos",
    "rtcp_rtt_ms",
    "far_lost",
    "far_jitter_ms",
];

/// `x` to `places` decimals, so that the log does not print every bit of a float.
fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

impl MediaLog {
    pub fn create(path: &Path) -> anyhow::Result<MediaLog> {
        let cannot = |e| anyhow::anyhow!("cannot create the media log {}: {e}", path.display());
        let mut out = csv::WriterBuilder::new()
            .has_headers(false)
            .from_path(path)
            .map_err(cannot)?;
        out.write_record(MEDIA_LOG_COLUMNS).map_err(cannot)?;
        out.flush()?;
        Ok(MediaLog { out, failed: false })
    }

    /// Appends `streams`; the first write error is shown once and the log given up (the run
    /// goes on: its report still has the distributions).
    pub fn write(
        &mut self,
        epoch: &crate::clock::Epoch,
        streams: &[crate::media::engine::StreamSummary],
    ) {
        if self.failed || streams.is_empty() {
            return;
        }
        let label = |t| {
            epoch
                .wall_of(t)
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string()
        };
        let mut r = Ok(());
        for s in streams {
            r = r.and_then(|_| {
                self.out.serialize(MediaLogLine {
                    ssrc: format!("{:#010x}", s.ssrc),
                    leg: if s.ssrc & 1 == 0 { "caller" } else { "callee" },
                    started_utc: label(s.started),
                    ended_utc: label(s.ended),
                    ptime_ms: s.ptime.as_millis() as u64,
                    sent: s.sent,
                    received: s.received,
                    expected: s.expected,
                    lost: s.lost,
                    jitter_ms: round(s.jitter_ms, 3),
                    longest_gap_ms: round(s.longest_gap.as_secs_f64() * 1000.0, 1),
                    longest_gap_at_utc: label(s.longest_gap_at),
                    r_factor: round(s.r_factor, 1),
                    mos: round(s.mos, 2),
                    rtcp_rtt_ms: s.rtt.map(|r| round(r.as_secs_f64() * 1000.0, 3)),
                    far_lost: s.far_lost,
                    far_jitter_ms: s.far_jitter_ms.map(|j| round(j, 3)),
                })
            });
        }
        if let Err(e) = r
            .map_err(anyhow::Error::from)
            .and_then(|_| Ok(self.out.flush()?))
        {
            tracing::warn!("--media-log: writing failed ({e}); no more lines will be written");
            self.failed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_media_logs_header_names_its_fields_in_order() {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(MediaLogLine {
            ssrc: String::new(),
            leg: "caller",
            started_utc: String::new(),
            ended_utc: String::new(),
            ptime_ms: 20,
            sent: 0,
            received: 0,
            expected: 0,
            lost: 0,
            jitter_ms: 0.0,
            longest_gap_ms: 0.0,
            longest_gap_at_utc: String::new(),
            r_factor: 0.0,
            mos: 0.0,
            rtcp_rtt_ms: None,
            far_lost: None,
            far_jitter_ms: None,
        })
        .unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(
            text.lines().next(),
            Some(MEDIA_LOG_COLUMNS.join(",").as_str())
        );
    }

    #[test]
    fn csv_rows_keep_the_header_columns_when_a_column_is_missing_or_holds_a_comma() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("series.csv");
        let i = super::super::stats::Interval::default();
        let mut first = SeriesRow::new(1.0, "2026-12-05T00:00:01Z".into(), "calls", &i);
        first.monitors.insert("mon_cpu".into(), Some(12.5));
        first.plan_phase = Some("ramp, then hold".into());
        // The last, partial row of a run had no monitor columns: every cell after `mon_cpu`
        // shifted one column left.
        let last = SeriesRow::new(1.5, "2026-12-05T00:00:01.5Z".into(), "done", &i);
        let mut w = SeriesWriter::create(&path).unwrap();
        w.write(&first).unwrap();
        w.write(&last).unwrap();
        drop(w);
        let mut rd = csv::Reader::from_path(&path).unwrap();
        let h = rd.headers().unwrap().clone();
        let at = |name: &str| h.iter().position(|c| c == name).unwrap();
        let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(&rows[0][at("plan_phase")], "ramp, then hold");
        assert_eq!(&rows[0][at("mon_cpu")], "12.5");
        assert_eq!(&rows[1][at("mon_cpu")], "");
        assert_eq!(&rows[1][at("utc")], "2026-12-05T00:00:01.5Z");
        assert_eq!(&rows[1][at("phase")], "done");
    }
}
