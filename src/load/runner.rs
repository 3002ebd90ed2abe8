//! The async runtime around [`LoadCore`]: one task and one socket per worker, their statistics
//! fed once a second to the [`Aggregator`] and its rows, rates and stop carried out (progress
//! lines, the time series, the workers' rate), and the final report.
//! All the protocol logic is in the core; this file only moves bytes and time.

use super::aggregate::{cpu_limit_pct, Aggregator, Output, WorkerMsg};
use super::config::CoreConfig;
use super::control::Controller;
use super::core::{LoadCore, Phase, Transmit};
use super::population::Identity;
use super::report::{Report, SeriesRow, SeriesWriter};
use super::stats::{DelaySummary, Interval, Rfc6076};
use crate::clock::Epoch;
use crate::shutdown::{Shutdown, StopReason, Trigger};
use crate::sip::transport::{udp_socket, StreamFramer};
use crate::sip::Transport;
use anyhow::Context as _;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        let h = match c.transport {
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
                let ctl = Control {
                    ticks: worker_ticks,
                    rate: rate_rx.clone(),
                    workers,
                };
                tokio::spawn(udp_worker(i, core, socks, shutdown, tx, ctl))
            }
            Transport::Tcp => {
                let local = SocketAddr::new(spec.bind, port_of(0)?);
                let stream = tcp_connect(local, c.target).await?;
                let local = stream.local_addr()?;
                let core = LoadCore::new(cfg, &[local], chunk, i as u32, Instant::now());
                let ctl = Control {
                    ticks: worker_ticks,
                    rate: rate_rx.clone(),
                    workers,
                };
                tokio::spawn(tcp_worker(i, core, stream, shutdown, tx, ctl))
            }
        };
        handles.push(h);
    }
    drop(tx);

    let mut series = match &spec.series {
        Some(p) => Some(SeriesWriter::create(p)?),
        None => None,
    };
    let sampler = (!spec.monitors.is_empty()).then(|| {
        crate::profile::monitor::Sampler::start(
            std::mem::take(&mut spec.monitors),
            spec.monitor_interval,
        )
    });
    let mut agg = Aggregator::new(
        epoch,
        workers,
        n_users,
        spec.control.take(),
        cpu_limit_pct(workers),
    );
    let mut tick = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hard_deadline: Option<tokio::time::Instant> = None;
    let mut shutdown = trigger.subscribe();
    let mut open = true;
    let mut stop_seen = false;
    let mut rows: Vec<SeriesRow> = Vec::new();
    while open {
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => agg.handle_interval(m),
                None => open = false,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                let cpu = crate::profile::monitor::process_cpu_seconds(&[std::process::id()]).ok();
                let monitors = sampler.as_ref().map(|s| s.latest()).unwrap_or_default();
                agg.handle_tick(now, cpu, monitors);
            }
            r = shutdown.stopped(), if !stop_seen => {
                stop_seen = true;
                agg.handle_stop(Instant::now());
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
        while let Some(out) = agg.poll_output() {
            match out {
                Output::Row(r) => {
                    if spec.progress {
                        eprintln!("{}", r.progress);
                        if let Some(w) = &r.warning {
                            eprintln!("{w}");
                        }
                    }
                    if let Some(w) = series.as_mut() {
                        w.write(&r.row).context("writing the time series")?;
                    }
                    if spec.report_json.is_some() {
                        // Kept for the plot beside the report (about 1 KB a second).
                        rows.push(r.row);
                    }
                }
                Output::Rate(r) => {
                    let _ = rate_tx.send(r);
                }
                Output::Stop => trigger.stop(StopReason::Duration),
            }
        }
    }
    drop(sampler);
    trigger.stop(StopReason::Finished);
    let ended = Instant::now();
    let done = agg.finish(ended);
    if let Some(w) = series.as_mut() {
        w.write(&done.last).context("writing the time series")?;
    }
    let mut report = build_report(
        &spec,
        &epoch,
        ended,
        done.call_phase,
        n_users,
        workers,
        &done.total,
        trigger.reason(),
    );
    report.generator_behind_s = done.behind_seconds;
    report.warnings.extend(done.behind_warning());
    let plan_report = done.plan;
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

fn report(id: usize, core: &mut LoadCore, phase: Phase) -> WorkerMsg {
    WorkerMsg {
        worker: id,
        interval: core.take_stats(),
        phase,
        calling: core.calling_span(),
    }
}

/// Resolves with socket `i` once it is readable. One such future per socket in a
/// `FuturesUnordered`: only sockets that were woken are polled, so a worker with 10,000
/// sockets does not scan them all on every datagram.
async fn readable(socks: Arc<[tokio::net::UdpSocket]>, i: usize) -> usize {
    // An error here (none is known for UDP) shows again in try_recv_from, which skips it.
    let _ = socks[i].readable().await;
    i
}

/// The next socket with datagrams waiting. One socket (the default) is awaited directly: the
/// set would allocate a task node per wake-up for nothing.
async fn next_readable<F: std::future::Future<Output = usize>>(
    socks: &[tokio::net::UdpSocket],
    ready: &mut FuturesUnordered<F>,
) -> usize {
    if socks.len() == 1 {
        let _ = socks[0].readable().await;
        return 0;
    }
    // The set is never empty (each socket's future is put back once drained), so `next`
    // yields a socket or stays pending.
    ready.next().await.unwrap_or(0)
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

async fn udp_worker(
    id: usize,
    mut core: LoadCore,
    socks: Vec<tokio::net::UdpSocket>,
    mut shutdown: Shutdown,
    tx: mpsc::Sender<WorkerMsg>,
    mut ctl: Control,
) {
    let socks: Arc<[tokio::net::UdpSocket]> = socks.into();
    let mut ready: FuturesUnordered<_> = (0..socks.len())
        .filter(|_| socks.len() > 1)
        .map(|i| readable(socks.clone(), i))
        .collect();
    let mut buf = vec![0u8; 65536];
    let mut tick = ctl.ticks.interval();
    core.start(Instant::now());
    let mut errors = SendErrors {
        seen: Default::default(),
    };
    let mut stop_seen = false;
    loop {
        while let Some(Transmit { src, dest, data }) = core.poll_transmit() {
            let sock = &socks[src as usize];
            // try_send_to first: the socket is nearly always writable, and it saves a future.
            let r = match sock.try_send_to(&data, dest) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    sock.send_to(&data, dest).await
                }
                r => r,
            };
            if let Err(e) = r {
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
            i = next_readable(&socks, &mut ready) => {
                let now = Instant::now();
                let sock = &socks[i];
                // Drain what is queued before going round the loop: fewer wake-ups. WouldBlock
                // clears the readiness, so the next future waits for new datagrams.
                for _ in 0..256 {
                    match sock.try_recv_from(&mut buf) {
                        Ok((n, from)) => core.handle_input(now, &buf[..n], from, i as u32),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        // ICMP errors surface here (ECONNREFUSED): skip them, keep reading.
                        Err(_) => continue,
                    }
                }
                if socks.len() > 1 {
                    ready.push(readable(socks.clone(), i));
                }
            }
            _ = sleep_opt(deadline) => core.handle_timeout(Instant::now()),
            _ = tick.tick() => {
                let phase = core.phase();
                let _ = tx.send(report(id, &mut core, phase)).await;
                ctl.apply(&mut core);
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
    mut ctl: Control,
) {
    core.start(Instant::now());
    let peer = stream.peer_addr().ok();
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = vec![0u8; 65536];
    let mut framer = StreamFramer::default();
    let mut tick = ctl.ticks.interval();
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
                            Ok(Some(m)) => core.handle_input(now, m, from, 0),
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
                ctl.apply(&mut core);
            }
        }
    }
    let _ = wr.shutdown().await;
    let _ = tx.send(report(id, &mut core, Phase::Done)).await;
}
