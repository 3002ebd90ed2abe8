//! The async runtime around [`LoadCore`]: one task and one socket per worker, a once-a-second
//! aggregation of their statistics into progress lines, the time series and the final report.
//! All the protocol logic is in the core; this file only moves bytes and time.

use super::config::CoreConfig;
use super::core::{LoadCore, Phase, Transmit};
use super::population::Identity;
use super::report::{Report, SeriesRow, SeriesWriter};
use super::stats::{DelaySummary, Interval, Rfc6076};
use crate::clock::Epoch;
use crate::shutdown::{Shutdown, StopReason, Trigger};
use crate::sip::transport::{udp_socket, StreamFramer};
use crate::sip::Transport;
use anyhow::Context as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Everything a run needs besides the population.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// Totals for the whole run; the runner gives each worker its share.
    pub core: CoreConfig,
    pub workers: usize,
    /// Local address to bind (port 0: any).
    pub bind: IpAddr,
    /// First local port; worker i binds `port + i`. 0 = ephemeral.
    pub port: u16,
    pub progress: bool,
    pub report_json: Option<PathBuf>,
    pub series: Option<PathBuf>,
    pub embedded_target: bool,
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
pub async fn run(spec: RunSpec, users: Vec<Identity>, trigger: Trigger) -> anyhow::Result<Report> {
    let epoch = Epoch::now();
    let n_users = users.len();
    // No more workers than pairs of users (calls are placed between a worker's own users).
    let workers = if spec.core.register {
        spec.workers.clamp(1, (n_users / 2).max(1))
    } else {
        spec.workers.max(1)
    };
    let (tx, mut rx) = mpsc::channel::<WorkerMsg>(1024);
    // Workers hand in their second 100 ms before the aggregator closes it, so that each row
    // holds exactly one interval of every worker.
    let t0 = tokio::time::Instant::now();
    let worker_ticks = Ticks {
        first: t0 + Duration::from_millis(900),
    };
    let mut handles = Vec::new();
    let mut chunks: Vec<Vec<Identity>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, u) in users.into_iter().enumerate() {
        // Contiguous blocks keep user0001.. in the first worker, which reads better in traces.
        chunks[(i * workers / n_users.max(1)).min(workers - 1)].push(u);
    }
    let c = &spec.core;
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
        let port = if spec.port == 0 {
            0
        } else {
            spec.port + i as u16
        };
        let local = SocketAddr::new(spec.bind, port);
        let tx = tx.clone();
        let shutdown = trigger.subscribe();
        let h = match c.transport {
            Transport::Udp => {
                let sock = udp_socket(local)
                    .with_context(|| format!("cannot bind UDP {local} for worker {i}"))?;
                let local = sock.local_addr()?;
                let core = LoadCore::new(cfg, local, chunk, i as u32, Instant::now());
                tokio::spawn(udp_worker(i, core, sock, shutdown, tx, worker_ticks))
            }
            Transport::Tcp => {
                let stream = tcp_connect(local, c.target).await?;
                let local = stream.local_addr()?;
                let core = LoadCore::new(cfg, local, chunk, i as u32, Instant::now());
                tokio::spawn(tcp_worker(i, core, stream, shutdown, tx, worker_ticks))
            }
        };
        handles.push(h);
    }
    drop(tx);

    let mut series = match &spec.series {
        Some(p) => Some(SeriesWriter::create(p)?),
        None => None,
    };
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
                let slowest = *phases.iter().min().expect("one worker at least");
                second.gauges = sum_gauges(&last_gauges);
                let row = SeriesRow::new(
                    epoch.secs(Instant::now()),
                    epoch.label(Instant::now()),
                    phase_name(slowest),
                    &second,
                );
                total.add(&second);
                if spec.progress {
                    eprintln!("{}", row.progress_line(n_users, &total));
                }
                if let Some(w) = series.as_mut() {
                    w.write(&row).context("writing the time series")?;
                }
                second = Interval::default();
            }
            r = shutdown.stopped(), if !stop_seen => {
                stop_seen = true;
                let _ = r;
                // Workers drain within `drain`; past that (plus slack) we stop waiting.
                hard_deadline = Some(tokio::time::Instant::now() + spec.core.drain + Duration::from_secs(3));
            }
            _ = sleep_opt(hard_deadline) => {
                eprintln!("drain took too long: abandoning the workers still running");
                for h in &handles { h.abort(); }
                open = false;
            }
        }
    }
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
    trigger.stop(StopReason::Finished);
    let ended = Instant::now();
    // The call phase runs from the first worker's start of calling to the last one's end.
    let start = spans.iter().filter_map(|s| s.0).min();
    let end = spans.iter().map(|s| s.1.unwrap_or(ended)).max();
    let call_phase = match (start, end) {
        (Some(s), Some(e)) => e.saturating_duration_since(s),
        _ => Duration::ZERO,
    };
    let report = build_report(
        &spec,
        &epoch,
        ended,
        call_phase,
        n_users,
        workers,
        &total,
        trigger.reason(),
    );
    if let Some(p) = &spec.report_json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(p, text)
            .with_context(|| format!("cannot write the report {}", p.display()))?;
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
        scheduling_lag: lag,
        settings: serde_json::to_value(&spec.core).unwrap_or_default(),
        warnings,
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

/// Counts a send error once per kind on stderr; a run goes on through transient errors.
struct SendErrors {
    seen: std::collections::HashSet<std::io::ErrorKind>,
}

impl SendErrors {
    fn note(&mut self, worker: usize, dest: SocketAddr, e: &std::io::Error) {
        if self.seen.insert(e.kind()) {
            eprintln!("worker {worker}: sending to {dest} failed: {e} (further errors of this kind are not shown)");
        }
    }
}

#[derive(Clone, Copy)]
struct Ticks {
    first: tokio::time::Instant,
}

impl Ticks {
    fn interval(self) -> tokio::time::Interval {
        let mut t = tokio::time::interval_at(self.first, Duration::from_secs(1));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
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

async fn udp_worker(
    id: usize,
    mut core: LoadCore,
    sock: tokio::net::UdpSocket,
    mut shutdown: Shutdown,
    tx: mpsc::Sender<WorkerMsg>,
    ticks: Ticks,
) {
    let mut buf = vec![0u8; 65536];
    let mut tick = ticks.interval();
    core.start(Instant::now());
    let mut errors = SendErrors {
        seen: Default::default(),
    };
    let mut stop_seen = false;
    loop {
        while let Some(Transmit { dest, data }) = core.poll_transmit() {
            if let Err(e) = sock.send_to(&data, dest).await {
                errors.note(id, dest, &e);
            }
        }
        if core.is_done() {
            break;
        }
        let deadline = core.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            biased;
            _ = shutdown.stopped(), if !stop_seen => {
                stop_seen = true;
                core.stop(Instant::now());
            }
            r = sock.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    let now = Instant::now();
                    core.handle_input(now, &buf[..n], from);
                    // Drain what else is queued before going round the loop: fewer wake-ups.
                    for _ in 0..256 {
                        match sock.try_recv_from(&mut buf) {
                            Ok((n, from)) => core.handle_input(now, &buf[..n], from),
                            Err(_) => break,
                        }
                    }
                }
            }
            _ = sleep_opt(deadline) => core.handle_timeout(Instant::now()),
            _ = tick.tick() => {
                let phase = core.phase();
                let _ = tx.send(report(id, &mut core, phase)).await;
            }
        }
    }
    let _ = tx.send(report(id, &mut core, Phase::Done)).await;
}

async fn tcp_worker(
    id: usize,
    mut core: LoadCore,
    stream: tokio::net::TcpStream,
    mut shutdown: Shutdown,
    tx: mpsc::Sender<WorkerMsg>,
    ticks: Ticks,
) {
    core.start(Instant::now());
    let peer = stream.peer_addr().ok();
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = vec![0u8; 65536];
    let mut framer = StreamFramer::default();
    let mut tick = ticks.interval();
    let mut stop_seen = false;
    let mut connected = true;
    let mut out = Vec::with_capacity(65536);
    loop {
        out.clear();
        while let Some(t) = core.poll_transmit() {
            out.extend_from_slice(&t.data);
        }
        if connected && !out.is_empty() {
            if let Err(e) = wr.write_all(&out).await {
                eprintln!("worker {id}: TCP connection to {peer:?} failed: {e}; waiting for transaction timeouts");
                connected = false;
            }
        }
        if core.is_done() {
            break;
        }
        let deadline = core.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            biased;
            _ = shutdown.stopped(), if !stop_seen => {
                stop_seen = true;
                core.stop(Instant::now());
            }
            r = rd.read(&mut buf), if connected => match r {
                Ok(0) | Err(_) => {
                    eprintln!("worker {id}: the target closed the TCP connection");
                    connected = false;
                }
                Ok(n) => {
                    framer.push(&buf[..n]);
                    let now = Instant::now();
                    let from = peer.unwrap_or(core.local());
                    loop {
                        match framer.next_message() {
                            Ok(Some(m)) => core.handle_input(now, m, from),
                            Ok(None) => break,
                            Err(e) => {
                                // Framing is lost for good: count it and drop the connection.
                                eprintln!("worker {id}: unreadable SIP stream from {peer:?} ({e}); closing it");
                                connected = false;
                                break;
                            }
                        }
                    }
                }
            },
            _ = sleep_opt(deadline) => core.handle_timeout(Instant::now()),
            _ = tick.tick() => {
                let phase = core.phase();
                let _ = tx.send(report(id, &mut core, phase)).await;
            }
        }
    }
    let _ = wr.shutdown().await;
    let _ = tx.send(report(id, &mut core, Phase::Done)).await;
}
