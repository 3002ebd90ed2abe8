//! The load run as Prometheus metrics (`imsload --metrics ADDR`): once a second, after the
//! aggregator closes a second, the run's totals and that second's gauges become one page.
//!
//! Names: `imsload_<report counter>_total` for every counter of the report (the same names as
//! its JSON, so docs/imsload.md "Counters" explains both), responses by `{method, code}`,
//! malformed input by `kind`, gauges for what is up now, and the RFC 6076 delays as
//! histograms in seconds. Every sample has a `run` label.

use super::report::SeriesRow;
use super::stats::{Delays, Interval};
use crate::metrics::{text::sanitize_name, Kind, Page, Server, SIP_DELAY_BUCKETS};
use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

/// The endpoint and what every page says about the run.
pub struct Exporter {
    server: Server,
    run: String,
    target: String,
    started_unix_s: f64,
}

/// What the page says beyond the aggregated counts.
#[derive(Default)]
pub struct Live<'a> {
    /// The run's phase ("registering", "calling", "draining", "done").
    pub phase: &'a str,
    /// Attempts/s the plan (or `--cps`) offers now; `None`: nothing.
    pub offered_rate: Option<f64>,
    /// The process's CPU seconds so far.
    pub cpu_s: Option<f64>,
}

impl Exporter {
    /// Listens on `addr`. `run` labels every sample; `target` goes into `imsload_info`.
    pub fn bind(addr: SocketAddr, run: &str, target: &str) -> anyhow::Result<Exporter> {
        Ok(Exporter {
            server: Server::bind(addr)?,
            run: run.to_string(),
            target: target.to_string(),
            started_unix_s: unix_now(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Publishes the page for the totals so far and the second just closed.
    pub fn second(&self, total: &Interval, row: &SeriesRow, live: &Live) {
        self.server.publish(self.page(total, row, live));
    }

    /// Keeps serving the last page for `d` (so that a scraper sees the final counts), or until
    /// Ctrl-C/SIGTERM.
    pub async fn linger(&self, d: Duration) {
        crate::metrics::linger(d).await
    }

    pub fn scrapes(&self) -> u64 {
        self.server.scrapes()
    }

    fn page(&self, total: &Interval, row: &SeriesRow, live: &Live) -> String {
        let mut p = Page::new(&[("run", &self.run)]);
        p.family(
            "imsload_info",
            Kind::Gauge,
            "The run: its target (always 1).",
        );
        p.sample("imsload_info", &[("target", &self.target)], 1.0);
        p.single(
            "imsload_start_time_seconds",
            Kind::Gauge,
            "When the run started, Unix time.",
            self.started_unix_s,
        );
        p.family(
            "imsload_phase",
            Kind::Gauge,
            "The run's phase now (1 for the current one).",
        );
        p.sample("imsload_phase", &[("phase", live.phase)], 1.0);
        if let Some(name) = &row.plan_phase {
            p.family(
                "imsload_plan_phase",
                Kind::Gauge,
                "The profile's plan phase now (1 for the current one).",
            );
            p.sample("imsload_plan_phase", &[("name", name)], 1.0);
        }
        // Always present (0 when nothing is offered: registering, done), so that a panel
        // never loses the series mid-run.
        p.single(
            "imsload_offered_rate",
            Kind::Gauge,
            "Scenario attempts per second offered now (plan or --cps).",
            live.offered_rate.unwrap_or(0.0),
        );
        p.single(
            "imsload_attempts_started_last_second",
            Kind::Gauge,
            "Scenario attempts started in the last full second (the achieved rate).",
            row.attempts_started as f64,
        );
        let g = &row.gauges;
        for (name, help, v) in [
            (
                "imsload_registered_users",
                "Users registered now.",
                g.registered,
            ),
            (
                "imsload_active_calls",
                "Calls placed and not yet ended.",
                g.active_calls,
            ),
            (
                "imsload_answering_calls",
                "Incoming calls our answering side holds.",
                g.answering_calls,
            ),
            (
                "imsload_pending_transactions",
                "Client transactions waiting for a final response.",
                g.pending_transactions,
            ),
        ] {
            p.single(name, Kind::Gauge, help, v as f64);
        }
        p.single(
            "imsload_generator_cpu_cores",
            Kind::Gauge,
            "imsload's own CPU in the last second, in cores (its self-check).",
            row.generator_cpu_pct / 100.0,
        );
        p.single(
            "imsload_schedule_lag_max_seconds",
            Kind::Gauge,
            "The largest lag of imsload's own schedule in the last second.",
            row.sched_lag_max_ms / 1e3,
        );
        if let Some(cpu) = live.cpu_s {
            p.single(
                "process_cpu_seconds_total",
                Kind::Counter,
                "User and system CPU time spent by imsload, seconds.",
                cpu,
            );
        }
        if let Some(rss) = resident_bytes() {
            p.single(
                "process_resident_memory_bytes",
                Kind::Gauge,
                "imsload's resident memory, bytes.",
                rss as f64,
            );
        }
        for (k, v) in &row.monitors {
            if let Some(v) = v {
                let name = format!("imsload_{}", sanitize_name(k));
                p.single(
                    &name,
                    Kind::Gauge,
                    "A monitor's latest reading (--monitor / profile).",
                    *v,
                );
            }
        }
        counters(&mut p, total);
        delays(&mut p, &total.delays);
        p.finish()
    }
}

fn counters(p: &mut Page, total: &Interval) {
    if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(&total.counters) {
        for (k, v) in m {
            let name = format!("imsload_{k}_total");
            let help = format!("The report's counter {k} (docs/imsload.md, Counters).");
            p.single(&name, Kind::Counter, &help, v.as_f64().unwrap_or(0.0));
        }
    }
    p.family(
        "imsload_responses_total",
        Kind::Counter,
        "Final responses received by request method and status code (code=\"timeout\": none in 64*T1).",
    );
    let mut code = String::new();
    for (key, n) in total.status.iter() {
        code.clear();
        match key.code {
            Some(c) => {
                let _ = write!(code, "{c}");
            }
            None => code.push_str("timeout"),
        }
        p.sample(
            "imsload_responses_total",
            &[("method", key.method.as_str()), ("code", &code)],
            n as f64,
        );
    }
    p.family(
        "imsload_malformed_messages_by_kind_total",
        Kind::Counter,
        "Received messages that could not be parsed, by what was wrong.",
    );
    for (kind, n) in &total.malformed {
        p.sample(
            "imsload_malformed_messages_by_kind_total",
            &[("kind", kind.as_str())],
            *n as f64,
        );
    }
}

fn delays(p: &mut Page, d: &Delays) {
    for (name, help, h) in [
        (
            "imsload_registration_request_delay_seconds",
            "RFC 6076 RRD: first REGISTER sent to its 2xx.",
            &d.rrd,
        ),
        (
            "imsload_session_request_delay_seconds",
            "RFC 6076 SRD: INVITE sent to its first non-100 response.",
            &d.srd,
        ),
        (
            "imsload_answer_delay_seconds",
            "INVITE sent to its 200 OK.",
            &d.answer,
        ),
        (
            "imsload_session_disconnect_delay_seconds",
            "RFC 6076 SDD: BYE sent to its final response.",
            &d.sdd,
        ),
        (
            "imsload_session_duration_seconds",
            "RFC 6076 SDT: 200 OK to BYE.",
            &d.sdt,
        ),
        (
            "imsload_message_delay_seconds",
            "MESSAGE sent to its final response.",
            &d.message,
        ),
        (
            "imsload_options_delay_seconds",
            "OPTIONS sent to its final response.",
            &d.options,
        ),
        (
            "imsload_schedule_lag_seconds",
            "Lag of imsload's own schedule (arrivals, registrations).",
            &d.sched_lag,
        ),
        (
            "imsload_media_longest_gap_seconds",
            "--media: each ended stream's longest time without a packet.",
            &d.media_gap,
        ),
        (
            "imsload_media_jitter_seconds",
            "--media: each ended stream's RFC 3550 interarrival jitter.",
            &d.media_jitter,
        ),
        (
            "imsload_media_send_lateness_seconds",
            "--media: how late each RTP packet left.",
            &d.media_send_lateness,
        ),
        (
            "imsload_media_rtcp_round_trip_seconds",
            "--media: round trip times from the far ends' RTCP reports on our streams.",
            &d.media_rtt,
        ),
    ] {
        p.family(name, Kind::Histogram, help);
        p.histogram(name, &[], h, 1e6, SIP_DELAY_BUCKETS);
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Resident set size from /proc/self/statm (pages → bytes).
fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(1) as u64)
}
