//! A live probe session, in the order a run goes through it: [`Session::start`] opens every
//! target's sockets and capture and starts receivers and pacers; [`Session::watch`] shows the
//! live view (gap lines, progress, `--metrics`) until the pacers end; [`Session::collect`]
//! awaits the last replies, stops receivers and captures, and writes each target's report.
//!
//! Threads, not async: the pacer needs an OS thread of its own, receivers block in `recvmsg`
//! (kernel timestamps make their scheduling irrelevant), capture blocks in libpcap.

use super::analysis::Params;
use super::live::line;
use super::live::Live;
use super::net::ProbeClock;
use super::pacer::{PacerConfig, PacerStats};
use super::receive::{self, Sink};
use super::report::TargetOut;
use super::report_builder::{Origin, ReportBuilder, RunInfo};
use super::run::{RunConfig, TargetResult};
use super::send::{self, Pacing, SipTx};
use super::setup::{self, SipSock, TargetRun};
use super::table::Counters;
use super::tcp;
use super::Layer;
use crate::shutdown::{StopReason, Trigger};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Probes start this long after the session is set up, on one schedule for every target, so
/// that captures and receivers are ready for the first.
const LEAD_NS: i64 = 20_000_000;
/// A progress line this often (not with `--quiet`).
const PROGRESS_EVERY_NS: i64 = 10_000_000_000;
/// A `--metrics` page this often.
const METRICS_EVERY_NS: i64 = 1_000_000_000;
/// How often the live view looks at the tables.
const VIEW_EVERY: Duration = Duration::from_millis(10);

/// A run between its start and its reports.
pub struct Session<'c> {
    cfg: &'c RunConfig,
    clock: ProbeClock,
    targets: Vec<TargetRun>,
    receivers: Vec<JoinHandle<()>>,
    rx_stop: Arc<AtomicBool>,
    pacers: Vec<JoinHandle<PacerStats>>,
    pacer_stop: Arc<AtomicBool>,
    /// Per target and layer, in target order.
    lives: Vec<Live>,
    /// When the first probes are due, ns since the time base.
    start_ns: i64,
    /// How probes are judged; the end is set at each judgement and, at last, to the run's.
    params: Params,
    next_progress: i64,
    next_metrics: i64,
}

impl<'c> Session<'c> {
    /// Opens every target and starts the receivers, then the pacers.
    pub fn start(cfg: &'c RunConfig, clock: ProbeClock) -> anyhow::Result<Session<'c>> {
        anyhow::ensure!(
            cfg.rate > 0.0 && cfg.rate <= 100_000.0,
            "--rate must be in (0, 100000] per second"
        );
        let interval_ns = (1e9 / cfg.rate).round() as i64;
        let run_id: u32 = rand::random();
        let mut targets = Vec::new();
        for (i, t) in cfg.targets.iter().enumerate() {
            targets.push(setup::setup_target(
                cfg,
                t,
                &clock,
                run_id.wrapping_add(i as u32),
            )?);
        }
        let rx_stop = Arc::new(AtomicBool::new(false));
        let receivers = targets
            .iter()
            .flat_map(|r| spawn_receivers(r, cfg.rt_priority, clock, &rx_stop))
            .collect();
        let start_ns = clock.now_ns() + LEAD_NS;
        let mut s = Session {
            cfg,
            clock,
            targets,
            receivers,
            rx_stop,
            pacers: Vec::new(),
            pacer_stop: Arc::new(AtomicBool::new(false)),
            lives: Vec::new(),
            start_ns,
            params: Params {
                interval_ns,
                timeout_ns: cfg.timeout.as_nanos() as i64,
                late_rtt_ns: cfg.late_rtt.as_nanos() as i64,
                min_gap_ns: cfg.min_gap.as_nanos() as i64,
                end_ns: 0,
            },
            next_progress: 0,
            next_metrics: 0,
        };
        s.start_pacers();
        if !cfg.quiet {
            s.announce();
        }
        let now = clock.now_ns();
        s.next_progress = now + PROGRESS_EVERY_NS;
        s.next_metrics = now;
        Ok(s)
    }

    fn start_pacers(&mut self) {
        let (cfg, clock) = (self.cfg, self.clock);
        let pcfg = PacerConfig {
            interval_ns: self.params.interval_ns as u64,
            start_mono_ns: clock.mono_abs(self.start_ns),
            deadline_mono_ns: cfg
                .duration
                .map(|d| clock.mono_abs(self.start_ns + d.as_nanos() as i64)),
            spin_ns: cfg.spin.as_nanos() as u64,
            rt_priority: cfg.rt_priority,
        };
        for r in &self.targets {
            self.pacers.push(send::spawn_pacer(
                pacing(r),
                pcfg,
                clock,
                self.pacer_stop.clone(),
            ));
            for t in r.tables() {
                t.watch_gaps(self.params.min_gap_ns);
                self.lives.push(Live::new(t.clone(), r.target.name.clone()));
            }
        }
    }

    /// The line that says what is probed, how fast, and where the files go.
    fn announce(&self) {
        let names: Vec<String> = self
            .targets
            .iter()
            .map(|r| {
                let layers: Vec<&str> = r.tables().map(|t| t.layer.as_str()).collect();
                format!(
                    "{} ({}, {}, {})",
                    r.target.name,
                    r.target.addr,
                    layers.join("+"),
                    r.dir.display()
                )
            })
            .collect();
        line(
            &self.clock,
            &format!(
                "probing {} at {}/s per layer{}; Ctrl-C ends the run with every file written",
                names.join(", "),
                self.cfg.rate,
                self.cfg
                    .duration
                    .map(|d| format!(" for {}", humantime::format_duration(d)))
                    .unwrap_or_default()
            ),
        );
    }

    /// Whether probes are still being sent.
    pub fn sending(&self) -> bool {
        !self.pacers.iter().all(|p| p.is_finished())
    }

    /// Shows the live view until the pacers end: at their deadline, or soon after `trigger`
    /// fires.
    pub fn watch(&mut self, trigger: &Trigger) {
        while self.sending() {
            std::thread::sleep(VIEW_EVERY);
            if trigger.reason() != StopReason::Running {
                self.pacer_stop.store(true, Ordering::Relaxed);
            }
            self.view();
        }
    }

    /// One look at the tables: gap lines, a progress line every ten seconds, a `--metrics`
    /// page every second.
    pub fn view(&mut self) {
        let (cfg, clock) = (self.cfg, &self.clock);
        let now = clock.now_ns();
        for l in &mut self.lives {
            l.poll(clock, now, self.params.min_gap_ns, cfg.quiet);
        }
        if let Some(m) = cfg.metrics.as_ref().filter(|_| now >= self.next_metrics) {
            self.next_metrics = now + METRICS_EVERY_NS;
            for l in &mut self.lives {
                l.settle(&self.params, now);
            }
            m.probes(&self.lives, now);
        }
        if !cfg.quiet && now >= self.next_progress {
            self.next_progress += PROGRESS_EVERY_NS;
            let parts: Vec<String> = self
                .lives
                .iter()
                .map(|l| {
                    format!(
                        "{} {} sent {}",
                        l.name,
                        l.table.layer.as_str(),
                        l.table.len()
                    )
                })
                .collect();
            line(clock, &parts.join(", "));
        }
    }

    /// Ends the run (the pacers first, if still sending), and writes every target's files.
    pub fn collect(mut self, trigger: &Trigger) -> anyhow::Result<Vec<TargetResult>> {
        self.pacer_stop.store(true, Ordering::Relaxed);
        let pacer_stats: Vec<PacerStats> = std::mem::take(&mut self.pacers)
            .into_iter()
            .map(|p| p.join().unwrap_or_default())
            .collect();
        trigger.stop(StopReason::Duration);
        let stop_reason = trigger.reason();
        let end_ns = self.await_replies();
        self.stop_receiving();
        self.params.end_ns = end_ns;
        if let Some(m) = &self.cfg.metrics {
            // The final counts: every probe judged as the report judges it.
            for l in &mut self.lives {
                l.poll(&self.clock, end_ns, self.params.min_gap_ns, true);
                l.finish(&self.params);
            }
            m.probes(&self.lives, end_ns);
        }
        let mut results = Vec::new();
        for (r, pacer) in std::mem::take(&mut self.targets)
            .into_iter()
            .zip(pacer_stats)
        {
            results.push(self.target_result(r, pacer, stop_reason, end_ns)?);
        }
        Ok(results)
    }

    /// Waits for the last replies: up to `timeout` after the last probe, less once every probe
    /// is answered. Returns the run's end.
    fn await_replies(&self) -> i64 {
        let last_send = self
            .targets
            .iter()
            .flat_map(|r| r.tables())
            .map(|t| t.snapshot().last().map_or(self.start_ns, |r| r.sent_ns))
            .max()
            .unwrap_or(self.start_ns);
        let grace_end = last_send + self.params.timeout_ns;
        loop {
            let now = self.clock.now_ns();
            let all_answered = self.targets.iter().all(|r| {
                let sent: u64 = r.tables().map(|t| t.len()).sum();
                r.answered.load(Ordering::Relaxed) >= sent
            });
            if now >= grace_end || all_answered {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.clock.now_ns().min(grace_end.max(last_send))
    }

    /// Stops receivers and connections, then the captures once they have seen the last packets.
    fn stop_receiving(&mut self) {
        self.rx_stop.store(true, Ordering::Relaxed);
        for h in self.receivers.drain(..) {
            let _ = h.join();
        }
        for r in &self.targets {
            if let Some(SipSock::Tcp(l)) = r.sip.as_ref().map(|s| &s.sock) {
                l.close();
            }
            if let Some(d) = &r.diameter {
                d.link.close();
            }
        }
        std::thread::sleep(Duration::from_millis(30));
        for r in &mut self.targets {
            if let Some(c) = r.capture.take() {
                let info = c.finish();
                if let Some(e) = &info.error {
                    r.warnings.push(e.clone());
                }
                r.capture_info = Some(info);
            }
        }
    }

    /// One target's records, judged with the run's end, into its report and files.
    fn target_result(
        &self,
        mut r: TargetRun,
        pacer: PacerStats,
        stop_reason: StopReason,
        end_ns: i64,
    ) -> anyhow::Result<TargetResult> {
        // The pacer and receiver have ended: this is the last tap.
        let hep = r.hep.take().map(|(m, sm)| {
            drop(sm);
            m.finish(Duration::from_secs(2))
        });
        if let Some(w) = hep.as_ref().and_then(|h| h.warning()) {
            r.warnings.push(w);
        }
        let tb = self.clock.time_base();
        let mut b = ReportBuilder::new(tb, self.params);
        if let Some(s) = &r.sip {
            let ts = if s.timestamps { "kernel" } else { "userspace" };
            let lo = b.layer(
                Layer::Sip,
                s.table.snapshot(),
                ts,
                r.target.transport.param(),
            );
            lo.counters = Some(strip_logged(s.table.counters()));
            lo.sip_local = Some(s.local.clone());
            if let SipSock::Tcp(l) = &s.sock {
                lo.tcp = Some(l.stats());
            }
        }
        if let Some(s) = &r.icmp {
            let ts = if s.socket.timestamps {
                "kernel"
            } else {
                "userspace"
            };
            let socket = if s.socket.raw {
                "icmp-raw"
            } else {
                "icmp-datagram"
            };
            let lo = b.layer(Layer::Icmp, s.table.snapshot(), ts, socket);
            lo.counters = Some(strip_logged(s.table.counters()));
            lo.icmp_id = s.socket.raw.then_some(s.codec.id);
        }
        if let Some(s) = &r.diameter {
            let lo = b.layer(
                Layer::Diameter,
                s.table.snapshot(),
                "userspace",
                "diameter-tcp",
            );
            lo.counters = Some(strip_logged(s.table.counters()));
            lo.tcp = Some(s.link.stats());
            lo.diameter_origin_host = Some(s.codec.origin_host().to_string());
            lo.diameter_request = Some(s.codec.request().describe());
        }
        let run = RunInfo {
            origin: Origin::Live {
                stop_reason,
                pacer,
                capture: r.capture_info.clone(),
                hep,
            },
            target: TargetOut {
                name: r.target.name.clone(),
                host: r.target.host().to_string(),
                sip_port: r.sip.as_ref().map(|_| r.target.addr.port()),
                transport: r
                    .sip
                    .as_ref()
                    .map(|_| r.target.transport.param().to_string()),
                diameter_port: r.diameter.as_ref().map(|_| r.target.diameter_port),
            },
            start_ns: self.start_ns,
            end_ns,
            warnings: r.warnings.clone(),
        };
        let report = b.write(run, &r.dir, self.cfg.plot)?;
        Ok(TargetResult {
            target: r.target,
            dir: r.dir,
            report,
        })
    }
}

/// The counters without the markers [`receive`] keeps to log each oddity once.
fn strip_logged(mut c: Counters) -> Counters {
    c.receive_errors.retain(|k, _| !k.starts_with("logged:"));
    c
}

/// A receiver thread per layer of a target.
fn spawn_receivers(
    r: &TargetRun,
    rt: Option<i32>,
    clock: ProbeClock,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    let sink = |table: &Arc<super::table::LayerTable>| Sink {
        table: table.clone(),
        clock,
        name: r.target.name.clone(),
        answered: r.answered.clone(),
    };
    let mut receivers = Vec::new();
    if let Some(s) = &r.sip {
        receivers.push(receive::spawn_sip_receiver(
            s,
            rt,
            sink(&s.table),
            stop.clone(),
            receive::BATCH_NS,
            r.hep.as_ref().map(|h| h.1.clone()),
        ));
    }
    if let Some(s) = &r.icmp {
        receivers.push(receive::spawn_icmp_receiver(
            s,
            rt,
            sink(&s.table),
            stop.clone(),
            receive::BATCH_NS,
        ));
    }
    if let Some(s) = &r.diameter {
        receivers.push(receive::spawn_diameter_receiver(
            s,
            rt,
            sink(&s.table),
            stop.clone(),
        ));
    }
    receivers
}

/// What the pacer of a target sends with.
fn pacing(r: &TargetRun) -> Pacing {
    Pacing {
        sip: r.sip.as_ref().map(|s| {
            let tx = match &s.sock {
                SipSock::Udp(u) => SipTx::Udp(u.clone()),
                SipSock::Tcp(l) => SipTx::Tcp(tcp::TcpSender::new(l.clone())),
            };
            (
                s.table.clone(),
                tx,
                s.codec.clone(),
                r.hep.as_ref().map(|h| h.1.clone()),
            )
        }),
        icmp: r
            .icmp
            .as_ref()
            .map(|s| (s.table.clone(), s.socket.clone(), s.codec.clone())),
        diameter: r.diameter.as_ref().map(|s| {
            (
                s.table.clone(),
                tcp::TcpSender::new(s.link.clone()),
                s.codec.clone(),
            )
        }),
    }
}
