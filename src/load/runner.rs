//! The async runtime around [`LoadCore`]: one task and one socket per worker, a once-a-second
//! aggregation of their statistics into progress lines, the time series and the final report.
//! All the protocol logic is in the core; this file only moves bytes and time.

use super::config::CoreConfig;
use super::control::{attempts_started, Controller, Second};
use super::core::{LoadCore, Phase};
use super::population::Identity;
use super::report::{PhaseSummary, PlanReport, Report, SeriesRow, SeriesWriter};
use super::stats::{DelaySummary, Interval, Rfc6076};
use crate::clock::Epoch;
use crate::io::driver::{Driver, MAX_SLEEP};
use crate::shutdown::{Shutdown, StopReason, Trigger};
use crate::sip::transport::udp_socket;
use crate::sip::Transport;
use anyhow::Context as _;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Everything a run needs besides the population.
pub struct RunSpec {
    /// Totals for the whole run; the runner gives each worker its share.
    pub core: CoreConfig,
    pub workers: usize,
    /// Local address to bind (port 0: any).
    pub bind: IpAddr,
    /// First local port; worker i binds `port + i`, or with several sockets per worker the
    /// ports after those of worker i-1 (N per worker: `port + i·N + j`). 0 = ephemeral.
    pub port: u16,
    /// UDP sockets per worker, its users spread over them (user i on socket i % N); 0: one
    /// per user. A P-CSCF keys UEs by source address and port, so users sharing a socket are
    /// one UE to it.
    pub ue_ports: usize,
    /// Consecutive source addresses (from `bind`, IPv4) the sockets are spread over.
    pub ue_ips: u32,
    pub progress: bool,
    pub report_json: Option<PathBuf>,
    pub series: Option<PathBuf>,
    pub embedded_target: bool,
    /// Rate of each second from a profile's plan or a capacity search; `None`: `core.cps`
    /// throughout, and `core.duration` ends the run.
    pub control: Option<Controller>,
    /// Figures watched during the run (thresholds of the plan; columns of the series).
    pub monitors: Vec<crate::profile::monitor::Monitor>,
    pub monitor_interval: Duration,
}

struct WorkerMsg {
    worker: usize,
    interval: Interval,
    phase: Phase,
    calling: (Option<Instant>, Option<Instant>),
}

/// Splits a total into `n` shares that add up to it.
fn share(total: u64, n: usize, i: usize) -> u64 {
    total / n as u64 + u64::from((i as u64) < total % n as u64)
}

/// Runs the load to its end and returns the report (already printed/written as asked).
pub async fn run(
    mut spec: RunSpec,
    users: Vec<Identity>,
    trigger: Trigger,
) -> anyhow::Result<Report> {
    let epoch = Epoch::now();
    let n_users = users.len();
    // No more workers than pairs of users (calls are placed between a worker's own users).
    let workers = if spec.core.register {
        spec.workers.clamp(1, (n_users / 2).max(1))
    } else {
        spec.workers.max(1)
    };
    let (tx, mut rx) = mpsc::channel::<WorkerMsg>(1024);
    // The attempt rate of the whole run; each worker takes its share at its next tick.
    let (rate_tx, rate_rx) = watch::channel(spec.core.cps);
    // Workers hand in their second 100 ms before the aggregator closes it, so that each row
    // holds exactly one interval of every worker.
    let t0 = tokio::time::Instant::now();
    let worker_ticks = Ticks {
        first: t0 + Duration::from_millis(900),
    };
    let mut handles = Vec::new();
    // Set when the drain overran: the workers stop at their next turn, unfinished.
    let abandon = Arc::new(AtomicBool::new(false));
    let mut chunks: Vec<Vec<Identity>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, u) in users.into_iter().enumerate() {
        // Contiguous blocks keep user0001.. in the first worker, which reads better in traces.
        chunks[(i * workers / n_users.max(1)).min(workers - 1)].push(u);
    }
    let c = &spec.core;
    let per_worker: Vec<usize> = chunks
        .iter()
        .map(|ch| match spec.ue_ports {
            0 => ch.len().max(1),
            n => n,
        })
        .collect();
    if c.transport == Transport::Tcp && per_worker.iter().any(|n| *n > 1) {
        anyhow::bail!(
            "--ue-ports works over UDP only for now (over TCP each worker has one connection)"
        );
    }
    let sockets: usize = per_worker.iter().sum();
    if spec.ue_ips > 1 && !spec.bind.is_ipv4() {
        anyhow::bail!("--ue-ips needs an IPv4 --bind address (got {})", spec.bind);
    }
    // Socket g (counted over all workers) takes address bind + g % ue_ips.
    let ip_of = |g: usize| -> IpAddr {
        match spec.bind {
            IpAddr::V4(b) if spec.ue_ips > 1 => IpAddr::V4(std::net::Ipv4Addr::from(
                u32::from(b).wrapping_add((g % spec.ue_ips as usize) as u32),
            )),
            other => other,
        }
    };
    if sockets > workers {
        check_fd_limit(sockets)?;
    }
    for (i, chunk) in chunks.into_iter().enumerate() {
        let f = 1.0 / workers as f64;
        let cfg = CoreConfig {
            reg_rate: c.reg_rate * f,
            cps: c.cps * f,
            max_calls: share(c.max_calls as u64, workers, i).max(1) as usize,
            max_total_calls: c.max_total_calls.map(|m| share(m, workers, i)),
            seed: c.seed.wrapping_add(i as u64),
            ..c.clone()
        };
        let n_socks = per_worker[i];
        // Consecutive ports: worker i's sockets follow worker i-1's.
        let first_port = per_worker[..i].iter().sum::<usize>();
        let port_of = |j: usize| -> anyhow::Result<u16> {
            if spec.port == 0 {
                return Ok(0);
            }
            u16::try_from(spec.port as usize + first_port + j).map_err(|_| {
                anyhow::anyhow!("--port {} leaves too few ports for the sockets", spec.port)
            })
        };
        let tx = tx.clone();
        let shutdown = trigger.subscribe();
        let (core, driver) = match c.transport {
            Transport::Udp => {
                let mut socks = Vec::with_capacity(n_socks);
                let mut locals = Vec::with_capacity(n_socks);
                for j in 0..n_socks {
                    let local = SocketAddr::new(ip_of(first_port + j), port_of(j)?);
                    let sock = udp_socket(local).with_context(|| {
                        format!(
                            "cannot bind UDP {local} for worker {i} (socket {j}){}",
                            if spec.ue_ips > 1 {
                                ": with --ue-ips every address must exist on this host (any 127.x.y.z on loopback)"
                            } else {
                                ""
                            }
                        )
                    })?;
                    locals.push(sock.local_addr()?);
                    socks.push(sock);
                }
                let core = LoadCore::new(cfg, &locals, chunk, i as u32, Instant::now());
                let driver = Driver::udp(format!("worker {i}"), socks)
                    .context("cannot set up a worker's event loop")?;
                (core, driver)
            }
            Transport::Tcp => {
                let local = SocketAddr::new(spec.bind, port_of(0)?);
                let stream = tcp_connect(local, c.target).await?;
                let local = stream.local_addr()?;
                let core = LoadCore::new(cfg, &[local], chunk, i as u32, Instant::now());
                let driver = Driver::tcp(format!("worker {i}"), stream.into_std()?)
                    .context("cannot set up a worker's event loop")?;
                (core, driver)
            }
        };
        let ctl = Control {
            ticks: worker_ticks,
            rate: rate_rx.clone(),
            workers,
        };
        let abandon = abandon.clone();
        let h = std::thread::Builder::new()
            .name(format!("imsload-worker-{i}"))
            .spawn(move || worker(i, core, driver, shutdown, tx, ctl, abandon))
            .context("cannot start a worker thread")?;
        handles.push(h);
    }
    drop(tx);

    let mut series = match &spec.series {
        Some(p) => Some(SeriesWriter::create(p)?),
        None => None,
    };
    let mut control = spec.control.take();
    let sampler = (!spec.monitors.is_empty()).then(|| {
        crate::profile::monitor::Sampler::start(
            std::mem::take(&mut spec.monitors),
            spec.monitor_interval,
        )
    });
    let mut selfcheck = SelfCheck::new(workers);
    let mut book = PlanBook::default();
    let mut total = Interval::default();
    let mut second = Interval::default();
    let mut phases = vec![Phase::Registering; workers];
    let mut spans = vec![(None, None); workers];
    let mut tick = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_gauges = vec![super::stats::Gauges::default(); workers];
    let mut hard_deadline: Option<tokio::time::Instant> = None;
    let mut shutdown = trigger.subscribe();
    let mut open = true;
    let mut stop_seen = false;
    let mut stopped_at: Option<Instant> = None;
    // Seconds handed to the workers and not yet seen back: a rate set now takes effect at the
    // workers' next tick and shows in the row after next (see `Ticks`).
    let mut pending: VecDeque<(u64, Second)> = VecDeque::new();
    let mut plan_over = control.is_none();
    let mut row_no = 0u64;
    let mut rows: Vec<SeriesRow> = Vec::new();
    while open {
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => {
                    second.add(&m.interval);
                    last_gauges[m.worker] = m.interval.gauges;
                    phases[m.worker] = m.phase;
                    spans[m.worker] = m.calling;
                }
                None => open = false,
            },
            _ = tick.tick() => {
                row_no += 1;
                let slowest = *phases.iter().min().expect("one worker at least");
                second.gauges = sum_gauges(&last_gauges);
                let monitors = sampler.as_ref().map(|s| s.latest()).unwrap_or_default();
                let mut row = SeriesRow::new(
                    epoch.secs(Instant::now()),
                    epoch.label(Instant::now()),
                    phase_name(slowest),
                    &second,
                );
                row.monitors = monitors.iter().map(|(k, v)| (format!("mon_{k}"), *v)).collect();
                let check = selfcheck.second(&second);
                row.generator_cpu_pct = check.cpu_pct;
                if let Some((_, s)) = pending.front().filter(|(r, _)| *r == row_no) {
                    row.offered_rate = Some(s.rate);
                    row.plan_phase = Some(s.phase.clone());
                    // Once stopped, the workers offer nothing more: a second that ran (even in
                    // part) after the stop would read as the target's shortfall. Rows end 100 ms
                    // before the tick (see `Ticks`).
                    let row_end = Instant::now().checked_sub(Duration::from_millis(100));
                    let cut = matches!((stopped_at, row_end), (Some(t), Some(e)) if t < e);
                    if !cut {
                        book.add(&s.phase, s.rate, &second);
                        if let Some(c) = control.as_mut() {
                            c.observe(s, &second);
                        }
                    }
                    pending.pop_front();
                }
                total.add(&second);
                if spec.progress {
                    eprintln!("{}", row.progress_line(n_users, &total));
                    if let Some(w) = check.warning {
                        eprintln!("{w}");
                    }
                }
                if let Some(w) = series.as_mut() {
                    w.write(&row).context("writing the time series")?;
                }
                if spec.report_json.is_some() {
                    // Kept for the plot beside the report (about 1 KB a second).
                    rows.push(row);
                }
                second = Interval::default();
                // Decide the second after next, once every worker is past pre-registration.
                if let Some(c) = control.as_mut() {
                    if !plan_over && !stop_seen && slowest >= Phase::Calling {
                        match c.next_second(&monitors) {
                            Some(s) => {
                                let _ = rate_tx.send(s.rate);
                                pending.push_back((row_no + 2, s));
                            }
                            None => {
                                plan_over = true;
                                let _ = rate_tx.send(0.0);
                            }
                        }
                    }
                    if plan_over && pending.is_empty() && !stop_seen {
                        trigger.stop(StopReason::Duration);
                    }
                }
            }
            r = shutdown.stopped(), if !stop_seen => {
                stop_seen = true;
                stopped_at = Some(Instant::now());
                let _ = r;
                // Workers drain within `drain`; past that (plus slack) we stop waiting.
                hard_deadline = Some(tokio::time::Instant::now() + spec.core.drain + Duration::from_secs(3));
            }
            _ = sleep_opt(hard_deadline) => {
                eprintln!("drain took too long: abandoning the workers still running");
                abandon.store(true, Ordering::Relaxed);
                open = false;
            }
        }
    }
    drop(sampler);
    // Last partial second.
    second.gauges = sum_gauges(&last_gauges);
    total.add(&second);
    if let Some(w) = series.as_mut() {
        let row = SeriesRow::new(
            epoch.secs(Instant::now()),
            epoch.label(Instant::now()),
            "done",
            &second,
        );
        w.write(&row).context("writing the time series")?;
    }
    let plan_report = control.map(|c| PlanReport {
        phases: book.phases,
        events: c.events.clone(),
        capacity: c.capacity_result(),
    });
    trigger.stop(StopReason::Finished);
    let ended = Instant::now();
    // The call phase runs from the first worker's start of calling to the last one's end.
    let start = spans.iter().filter_map(|s| s.0).min();
    let end = spans.iter().map(|s| s.1.unwrap_or(ended)).max();
    let call_phase = match (start, end) {
        (Some(s), Some(e)) => e.saturating_duration_since(s),
        _ => Duration::ZERO,
    };
    let mut report = build_report(
        &spec,
        &epoch,
        ended,
        call_phase,
        n_users,
        workers,
        &total,
        trigger.reason(),
    );
    report.generator_behind_s = selfcheck.behind_seconds;
    if selfcheck.behind_seconds > 0 {
        report.warnings.push(format!(
            "the generator itself was saturated or late in {} seconds (its CPU near the limit of \
             its worker threads, or its schedule over 20 ms late): figures of those seconds say \
             more about imsload than about the target; use more --workers, a second machine, \
             or a lower rate",
            selfcheck.behind_seconds
        ));
    }
    if let Some(p) = &plan_report {
        report.offered_cps = p.offered_rate();
    }
    report.plan = plan_report;
    if let Some(p) = &spec.report_json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(p, text)
            .with_context(|| format!("cannot write the report {}", p.display()))?;
        // Plots beside the report; a plot that cannot be drawn (no fonts, say) is a warning,
        // not a lost run.
        let title = format!("imsload → {}", report.target);
        let mut plots = vec![(p.with_extension(""), super::plot::run_svg(&title, &rows))];
        if let Some(c) = report.plan.as_ref().and_then(|p| p.capacity.as_ref()) {
            let stem = p.file_stem().unwrap_or_default().to_string_lossy();
            plots.push((
                p.with_file_name(format!("{stem}-capacity")),
                super::plot::capacity_svg(&format!("Capacity search → {}", report.target), c),
            ));
        }
        for (base, svg) in plots {
            if let Err(e) = super::plot::write(&base, &svg) {
                eprintln!("imsload: plot not written: {e}");
            }
        }
    }
    Ok(report)
}

async fn sleep_opt(d: Option<tokio::time::Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn sum_gauges(g: &[super::stats::Gauges]) -> super::stats::Gauges {
    let mut s = super::stats::Gauges::default();
    for x in g {
        s.registered += x.registered;
        s.active_calls += x.active_calls;
        s.answering_calls += x.answering_calls;
        s.pending_transactions += x.pending_transactions;
    }
    s
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Registering => "registering",
        Phase::Calling => "calling",
        Phase::Draining => "ending calls",
        Phase::Deregistering => "de-registering",
        Phase::Done => "done",
    }
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    spec: &RunSpec,
    epoch: &Epoch,
    ended: Instant,
    call_phase: Duration,
    users: usize,
    workers: usize,
    total: &Interval,
    reason: StopReason,
) -> Report {
    let c = &total.counters;
    let mut warnings = Vec::new();
    let phase_s = call_phase.as_secs_f64();
    let achieved = if phase_s > 0.0 {
        c.calls_attempted as f64 / phase_s
    } else {
        0.0
    };
    let lag = DelaySummary::of(&total.delays.sched_lag);
    if c.late_actions > 0 && lag.p99_ms > 10.0 {
        warnings.push(format!(
            "the generator itself fell behind its schedule (p99 lag {:.1} ms, {} actions over 10 ms late): \
             it, not the target, may be the bottleneck; use more --workers or a lower rate",
            lag.p99_ms, c.late_actions
        ));
    }
    if c.calls_unanswered + c.dereg_unanswered > 0 {
        warnings.push(format!(
            "the target stopped answering: {} calls and {} de-registrations were still waiting for \
             a final response when the drain time ran out (counted as unanswered, not as work \
             left undone; their transaction timeouts would have outlived the run)",
            c.calls_unanswered, c.dereg_unanswered
        ));
    }
    if c.calls_limited > 0 {
        warnings.push(format!(
            "{} calls were not placed because --max-calls ({}) were up",
            c.calls_limited, spec.core.max_calls
        ));
    }
    if c.malformed > 0 {
        warnings.push(format!(
            "{} malformed messages were received and dropped",
            c.malformed
        ));
    }
    if c.reg_attempts > 0 && c.reg_ok == 0 {
        warnings.push("no user registered: check --target, --domain and the password rule".into());
    }
    Report {
        tool: "imsload",
        version: env!("CARGO_PKG_VERSION"),
        target: spec.core.target.to_string(),
        embedded_target: spec.embedded_target,
        transport: spec.core.transport.param().to_string(),
        users,
        workers,
        started_utc: epoch.label(epoch.mono),
        ended_utc: epoch.label(ended),
        elapsed_s: epoch.secs(ended),
        call_phase_s: phase_s,
        stop_reason: reason,
        offered_cps: spec.core.cps,
        achieved_cps: achieved,
        counters: c.clone(),
        status_codes: total.status.clone(),
        malformed_by_kind: total
            .malformed
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), *v))
            .collect(),
        rfc6076: Rfc6076::of(total),
        answer_delay: DelaySummary::of(&total.delays.answer),
        message_delay: DelaySummary::of(&total.delays.message),
        options_delay: DelaySummary::of(&total.delays.options),
        scheduling_lag: lag,
        settings: serde_json::to_value(&spec.core).unwrap_or_default(),
        warnings,
        generator_behind_s: 0,
        plan: None,
    }
}

async fn tcp_connect(
    local: SocketAddr,
    target: SocketAddr,
) -> anyhow::Result<tokio::net::TcpStream> {
    let sock = if target.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(local)
        .with_context(|| format!("cannot bind TCP {local}"))?;
    let s = tokio::time::timeout(Duration::from_secs(5), sock.connect(target))
        .await
        .map_err(|_| anyhow::anyhow!("TCP connect to {target} timed out after 5 s"))?
        .with_context(|| {
            format!("cannot connect over TCP to {target}: is the target listening on TCP?")
        })?;
    s.set_nodelay(true)?;
    Ok(s)
}

#[derive(Clone, Copy)]
struct Ticks {
    first: tokio::time::Instant,
}

/// What a worker takes from the runner besides its core and socket: its reporting ticks and the
/// run's attempt rate (of which it applies its share at its tick, right after reporting, so
/// that a rate change falls exactly on a row boundary of the series).
struct Control {
    ticks: Ticks,
    rate: watch::Receiver<f64>,
    workers: usize,
}

impl Control {
    fn apply(&mut self, core: &mut LoadCore) {
        if self.rate.has_changed().unwrap_or(false) {
            let total = *self.rate.borrow_and_update();
            core.set_rate(Instant::now(), total / self.workers as f64);
        }
    }
}

/// The generator's own health, second by second: its CPU use against the threads it has, and
/// how late its schedule ran. A saturated generator looks like a lossy target (the known
/// SIPp trap); this says which it was.
struct SelfCheck {
    last_cpu: Option<(Instant, f64)>,
    /// CPU % the generator can use at most: its threads, or the cores if fewer.
    limit_pct: f64,
    behind_seconds: u64,
    last_warned: Option<Instant>,
}

struct CheckedSecond {
    cpu_pct: f64,
    warning: Option<String>,
}

impl SelfCheck {
    fn new(workers: usize) -> SelfCheck {
        SelfCheck {
            last_cpu: None,
            limit_pct: 100.0
                * (workers + 1).min(std::thread::available_parallelism().map_or(1, |n| n.get()))
                    as f64,
            behind_seconds: 0,
            last_warned: None,
        }
    }

    fn second(&mut self, s: &Interval) -> CheckedSecond {
        let now = Instant::now();
        let cpu = crate::profile::monitor::process_cpu_seconds(&[std::process::id()]).ok();
        let cpu_pct = match (cpu, self.last_cpu) {
            (Some(c), Some((t, prev))) => {
                100.0 * (c - prev).max(0.0) / now.duration_since(t).as_secs_f64().max(1e-3)
            }
            _ => 0.0,
        };
        if let Some(c) = cpu {
            self.last_cpu = Some((now, c));
        }
        let lag_ms = DelaySummary::of(&s.delays.sched_lag).max_ms;
        let limit = self.limit_pct;
        let behind = lag_ms > 20.0 || cpu_pct > 0.9 * limit;
        let mut warning = None;
        if behind {
            self.behind_seconds += 1;
            if self
                .last_warned
                .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
            {
                self.last_warned = Some(now);
                warning = Some(format!(
                    "!! GENERATOR BEHIND: imsload used {cpu_pct:.0} % CPU (limit ~{limit:.0} %) and its schedule ran up to {lag_ms:.0} ms late: \
                     failures now may be imsload's, not the target's"
                ));
            }
        }
        CheckedSecond { cpu_pct, warning }
    }
}

/// Offered and achieved rates of each plan phase, in the order they ran.
#[derive(Default)]
struct PlanBook {
    phases: Vec<PhaseSummary>,
}

impl PlanBook {
    fn add(&mut self, phase: &str, rate: f64, row: &Interval) {
        if self.phases.last().is_none_or(|p| p.phase != phase) {
            self.phases.push(PhaseSummary {
                phase: phase.to_string(),
                ..PhaseSummary::default()
            });
        }
        let p = self.phases.last_mut().expect("pushed above");
        p.seconds += 1;
        p.offered_attempts += rate;
        p.started_attempts += attempts_started(row);
        p.offered_rate = p.offered_attempts / p.seconds as f64;
        p.achieved_rate = p.started_attempts as f64 / p.seconds as f64;
    }
}

fn report(id: usize, core: &mut LoadCore, phase: Phase) -> WorkerMsg {
    WorkerMsg {
        worker: id,
        interval: core.take_stats(),
        phase,
        calling: core.calling_span(),
    }
}

/// Raises the soft RLIMIT_NOFILE to what `sockets` need (plus slack for the runtime, files and
/// the embedded target), or says how to raise the hard limit.
fn check_fd_limit(sockets: usize) -> anyhow::Result<()> {
    const SLACK: u64 = 256;
    let need = sockets as u64 + SLACK;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(());
    }
    if lim.rlim_cur >= need {
        return Ok(());
    }
    if lim.rlim_max >= need {
        let raised = libc::rlimit {
            rlim_cur: need,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(());
        }
    }
    anyhow::bail!(
        "{sockets} UE sockets need about {need} open files, but the limit is {} (hard {}): \
         raise it with `ulimit -n {need}` (root, or `LimitNOFILE=` in a systemd unit, or \
         /etc/security/limits.conf for the hard limit), or give fewer --ue-ports",
        lim.rlim_cur,
        lim.rlim_max
    )
}

/// One worker: its core on its own thread, driven by the one event loop (UDP or TCP alike).
/// Every second (on the runner's tick schedule) it hands in its interval and takes its share
/// of the current rate; a stop asked for anywhere makes the core drain.
fn worker(
    id: usize,
    mut core: LoadCore,
    mut driver: Driver,
    shutdown: Shutdown,
    tx: mpsc::Sender<WorkerMsg>,
    mut ctl: Control,
    abandon: Arc<AtomicBool>,
) {
    core.start(Instant::now());
    let mut next_tick = ctl.ticks.first.into_std();
    let mut stop_seen = false;
    loop {
        let now = Instant::now();
        if !stop_seen && shutdown.is_stopping() {
            stop_seen = true;
            core.stop(now);
        }
        if now >= next_tick {
            let phase = core.phase();
            let _ = tx.blocking_send(report(id, &mut core, phase));
            ctl.apply(&mut core);
            // A tick missed by more than a second is skipped, not caught up in a burst.
            next_tick += Duration::from_secs(1);
            if next_tick <= now {
                next_tick = now + Duration::from_secs(1);
            }
        }
        if core.is_done() || abandon.load(Ordering::Relaxed) {
            break;
        }
        if let Err(e) = driver.turn(&mut core, next_tick.min(now + MAX_SLEEP)) {
            eprintln!("worker {id}: the event loop failed: {e}; ending this worker");
            break;
        }
    }
    // The last answers (200 to a BYE, an ACK) go out before the worker reports done.
    driver.send(&mut core);
    let _ = tx.blocking_send(report(id, &mut core, Phase::Done));
}
