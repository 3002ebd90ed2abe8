//! The probe run as Prometheus metrics (`imsprobe --metrics ADDR`), per target and layer:
//! probes sent and how they ended, the gap open now and the last one closed, the RTT
//! histogram. Built once a second by the run's live loop; every sample has a `run` label.
//! `imsprobe trials` adds its phase marks to the same endpoint ([`Exporter::set_marks`]).

use super::live::Live;
use crate::metrics::{Kind, Page, Server};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// RTT buckets (seconds): probes answer in tens of microseconds on a LAN and in seconds from
/// an element that is being migrated.
pub const RTT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
];

/// The endpoint, the `run` label, and the trial marks to append to every page.
pub struct Exporter {
    server: Server,
    run: String,
    marks: Mutex<String>,
    last_probe_page: Mutex<String>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "metrics at {} (run {})", self.local_addr(), self.run)
    }
}

impl Exporter {
    pub fn bind(addr: SocketAddr, run: &str) -> anyhow::Result<Exporter> {
        Ok(Exporter {
            server: Server::bind(addr)?,
            run: run.to_string(),
            marks: Mutex::new(String::new()),
            last_probe_page: Mutex::new(String::new()),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn run(&self) -> &str {
        &self.run
    }

    /// Publishes the probes' page (`now`: ns since the time base, for the open gaps).
    pub fn probes(&self, lives: &[Live], now: i64) {
        let page = page(&self.run, lives, now);
        *self
            .last_probe_page
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = page;
        self.publish();
    }

    /// Replaces the trials' part of the page (families of their own names).
    pub fn set_marks(&self, marks: String) {
        *self.marks.lock().unwrap_or_else(|p| p.into_inner()) = marks;
        self.publish();
    }

    pub fn scrapes(&self) -> u64 {
        self.server.scrapes()
    }

    fn publish(&self) {
        let mut p = self
            .last_probe_page
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        p.push_str(&self.marks.lock().unwrap_or_else(|p| p.into_inner()));
        self.server.publish(p);
    }
}

/// One page for the lives (one per target and layer).
pub fn page(run: &str, lives: &[Live], now: i64) -> String {
    let mut p = Page::new(&[("run", run)]);
    let labels = |l: &Live| -> [(&'static str, String); 2] {
        [
            ("target", l.name.clone()),
            ("layer", l.table.layer.as_str().to_string()),
        ]
    };
    let each = |p: &mut Page, name: &str, kind: Kind, help: &str, v: &dyn Fn(&Live) -> f64| {
        p.family(name, kind, help);
        for l in lives {
            let lb = labels(l);
            p.sample(name, &[(lb[0].0, &lb[0].1), (lb[1].0, &lb[1].1)], v(l));
        }
    };
    each(
        &mut p,
        "imsprobe_probes_sent_total",
        Kind::Counter,
        "Probes sent.",
        &|l| l.table.len() as f64,
    );
    p.family(
        "imsprobe_probes_total",
        Kind::Counter,
        "Probes judged once their timeout passed, by outcome: ok (good reply in time), \
         ok_after_timeout, failed (SIP non-2xx, ICMP error, Diameter error), lost (no reply or \
         send error), pending (unanswered at the run's end, within the timeout).",
    );
    for l in lives {
        let lb = labels(l);
        let j = &l.judged;
        for (outcome, n) in [
            ("ok", j.ok),
            ("ok_after_timeout", j.ok_after_timeout),
            ("failed", j.failed),
            ("lost", j.lost),
            ("pending", j.pending),
        ] {
            p.sample(
                "imsprobe_probes_total",
                &[
                    (lb[0].0, &lb[0].1),
                    (lb[1].0, &lb[1].1),
                    ("outcome", outcome),
                ],
                n as f64,
            );
        }
    }
    each(
        &mut p,
        "imsprobe_late_replies_total",
        Kind::Counter,
        "Replies after the timeout or with an RTT above --late-rtt, good or not.",
        &|l| l.judged.late as f64,
    );
    each(
        &mut p,
        "imsprobe_send_errors_total",
        Kind::Counter,
        "Probes whose send failed (counted among the lost).",
        &|l| l.judged.send_errors as f64,
    );
    each(
        &mut p,
        "imsprobe_gap_open_seconds",
        Kind::Gauge,
        "How long the reply gap open now has lasted (0: good replies flow), live estimate.",
        &|l| l.open_ns(now) as f64 / 1e9,
    );
    each(
        &mut p,
        "imsprobe_last_gap_seconds",
        Kind::Gauge,
        "The last reply gap closed: last good reply before it to the first after (the \
         report's reply gap; its error bound is in the report).",
        &|l| l.table.last_gap_ns.load(Ordering::Relaxed) as f64 / 1e9,
    );
    each(
        &mut p,
        "imsprobe_gaps_total",
        Kind::Counter,
        "Reply gaps of at least --min-gap closed so far (those between good replies; the \
         report also counts one open at the start or the end).",
        &|l| l.table.gaps_closed.load(Ordering::Relaxed) as f64,
    );
    p.family(
        "imsprobe_rtt_seconds",
        Kind::Histogram,
        "Round-trip time of good replies (judged probes).",
    );
    for l in lives {
        let lb = labels(l);
        p.histogram(
            "imsprobe_rtt_seconds",
            &[(lb[0].0, &lb[0].1), (lb[1].0, &lb[1].1)],
            &l.rtt,
            1e9,
            RTT_BUCKETS,
        );
    }
    p.finish()
}
