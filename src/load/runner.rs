//! The runtime around [`LoadCore`]: one thread and its sockets per worker (see [`crate::io`]), their statistics
//! fed once a second to the [`Aggregator`] and its rows, rates and stop carried out (progress
//! lines, the time series, the workers' rate), and the final report.
//! All the protocol logic is in the core; this file only moves bytes and time.

use super::aggregate::{cpu_limit_pct, Aggregator, Output, WorkerMsg};
use super::config::CoreConfig;
use super::control::Controller;
use super::core::{LoadCore, Phase};
use super::population::Identity;
use super::report::{Report, SeriesWriter};
use super::stats::{DelaySummary, Interval, Rfc6076};
use crate::clock::Epoch;
use crate::io::driver::{Driver, MAX_SLEEP};
use crate::shutdown::{Shutdown, StopReason, Trigger};
use crate::sip::transport::udp_socket;
use crate::sip::Transport;
use anyhow::Context as _;
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
    /// `--hep`: mirror the workers' SIP to a Homer collector.
    pub hep: Option<crate::hep::mirror::HepConfig>,
    /// `--media-log`: one CSV line per media stream as it ends.
    pub media_log: Option<PathBuf>,
    /// `--media-gso`: the RTP socket sends trains ([`Driver::send_trains`]).
    pub media_gso: bool,
    /// `--timer-resol`: see [`Driver::set_timer_resolution`].
    pub timer_resolution: Duration,
    /// Rate of each second from a profile's plan or a capacity search; `None`: `core.cps`
    /// throughout, and `core.duration` ends the run.
    pub control: Option<Controller>,
    /// Figures watched during the run (thresholds of the plan; columns of the series).
    pub monitors: Vec<crate::profile::monitor::Monitor>,
    pub monitor_interval: Duration,
    /// `--metrics`: a page a second while the run goes on.
    pub metrics: Option<Arc<super::metrics::Exporter>>,
    /// `--shard`/`--shards`: the report carries the shard's identity and its per-second
    /// series with each second's histograms, for `imsload merge`.
    pub shard: Option<super::shard::ShardRun>,
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
    // Set when the drain overran: the workers stop at their next turn, unfinished.
    let abandon = Arc::new(AtomicBool::new(false));
    let mut chunks: Vec<Vec<Identity>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, u) in users.into_iter().enumerate() {
        // Contiguous blocks keep user0001.. in the first worker, which reads better in traces.
        chunks[(i * workers / n_users.max(1)).min(workers - 1)].push(u);
    }
    let c = &spec.core;
    let ipsec = c.ipsec.is_some();
    let per_worker: Vec<usize> = chunks
        .iter()
        .map(|ch| match spec.ue_ports {
            // --ipsec: each UE's unprotected, protected client and protected server sockets.
            _ if ipsec => 3 * ch.len().max(1),
            0 => ch.len().max(1),
            n => n,
        })
        .collect();
    if ipsec && c.transport == Transport::Tcp {
        anyhow::bail!("--ipsec works over UDP only for now");
    }
    if c.transport == Transport::Tcp && per_worker.iter().any(|n| *n > 1) {
        anyhow::bail!(
            "--ue-ports works over UDP only for now (over TCP each worker has one connection)"
        );
    }
    let sockets: usize = per_worker.iter().sum();
    let hep = match &spec.hep {
        Some(h) => Some(crate::hep::mirror::Mirror::start(h, "imsload")?),
        None => None,
    };
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
    let mut handles = Vec::with_capacity(workers);
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
        // XFRM is per network namespace: the SAs go where imsload runs.
        let xfrm = match ipsec {
            true => Some(crate::ipsec::xfrm::Xfrm::open().map_err(|e| {
                anyhow::anyhow!(
                    "--ipsec: cannot open an XFRM socket: {e} (imsload needs CAP_NET_ADMIN in its network namespace to make SAs; run the UE side as root in a namespace of its own, docs/ipsec.md)"
                )
            })?),
            false => None,
        };
        let tx = tx.clone();
        let shutdown = trigger.subscribe();
        let (core, driver) = match c.transport {
            Transport::Udp => {
                let mut socks = Vec::with_capacity(n_socks);
                let mut locals = Vec::with_capacity(n_socks);
                for j in 0..n_socks {
                    // A UE's three --ipsec sockets share its address (its SAs are made for it).
                    let g = first_port + j;
                    let local = SocketAddr::new(ip_of(if ipsec { g / 3 } else { g }), port_of(j)?);
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
                // --media: two more sockets, the worker's RTP and RTCP (docs/media.md), on its
                // first address.
                let mut media = Vec::new();
                if c.media.is_some() {
                    for what in ["RTP", "RTCP"] {
                        let at = SocketAddr::new(locals[0].ip(), 0);
                        let sock = udp_socket(at).with_context(|| {
                            format!("cannot bind the {what} socket of worker {i} at {at}")
                        })?;
                        media.push(((socks.len()) as u32, sock.local_addr()?));
                        socks.push(sock);
                    }
                }
                let now = Instant::now();
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let mut core = LoadCore::new(cfg, &locals, chunk, i as u32, now);
                if let [rtp, rtcp] = media[..] {
                    core.enable_media(rtp, rtcp, now, wall);
                }
                let mut driver = Driver::udp(format!("worker {i}"), socks)
                    .context("cannot set up a worker's event loop")?;
                if let (true, Some(&(rtp, _))) = (spec.media_gso, media.first()) {
                    driver.send_trains(rtp as usize);
                }
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
        let mut driver = driver;
        if let Some(m) = &hep {
            driver.set_tap(m.tap());
        }
        driver.set_timer_resolution(spec.timer_resolution);
        let ctl = Control {
            ticks: worker_ticks,
            rate: rate_rx.clone(),
            workers,
        };
        let abandon = abandon.clone();
        // Each worker ends by reporting Phase::Done and dropping its sender, which is what the
        // aggregation loop waits for (or the abandon flag after an overrun drain); joined at
        // the end only so that SAs it made are gone before the process is.
        handles.push(
            std::thread::Builder::new()
                .name(format!("imsload-worker-{i}"))
                .spawn(move || worker(i, core, driver, xfrm, shutdown, tx, ctl, abandon))
                .context("cannot start a worker thread")?,
        );
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
    // Without a plan the rate is --cps throughout (the rows carry a plan's).
    let plain_rate = spec.control.is_none().then_some(spec.core.cps);
    let mut last_cpu = None;
    let mut agg = Aggregator::new(
        epoch,
        workers,
        n_users,
        spec.control.take(),
        cpu_limit_pct(workers),
    );
    if spec.shard.is_some() {
        agg.keep_row_histograms();
    }
    let mut shard_rows: Vec<super::shard::ShardRow> = Vec::new();
    let mut tick = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hard_deadline: Option<tokio::time::Instant> = None;
    let mut shutdown = trigger.subscribe();
    let mut open = true;
    let mut stop_seen = false;
    let mut rows: Vec<super::plot::PlotRow> = Vec::new();
    let mut media_log = match &spec.media_log {
        Some(p) => Some(super::report::MediaLog::create(p)?),
        None => None,
    };
    while open {
        tokio::select! {
            m = rx.recv() => match m {
                Some(mut m) => {
                    if let Some(w) = &mut media_log {
                        w.write(&epoch, &std::mem::take(&mut m.media));
                    }
                    agg.handle_interval(m)
                }
                None => open = false,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                let cpu = crate::profile::monitor::process_cpu_seconds(&[std::process::id()]).ok();
                last_cpu = cpu.or(last_cpu);
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
                tracing::warn!("drain took too long: abandoning the workers still running");
                abandon.store(true, Ordering::Relaxed);
                open = false;
            }
        }
        while let Some(out) = agg.poll_output() {
            match out {
                Output::Row(r) => {
                    if let Some(m) = &spec.metrics {
                        m.second(
                            agg.total(),
                            &r.row,
                            &super::metrics::Live {
                                phase: &r.row.phase,
                                offered_rate: r.row.offered_rate.or(plain_rate),
                                cpu_s: last_cpu,
                            },
                        );
                    }
                    if spec.progress {
                        // The live view is output, not a diagnostic: it is printed as it is.
                        eprintln!("{}", r.progress);
                        if let Some(w) = &r.warning {
                            tracing::warn!("{w}");
                        }
                    }
                    if let Some(w) = series.as_mut() {
                        w.write(&r.row).context("writing the time series")?;
                    }
                    if let Some(h) = r.histograms {
                        shard_rows.push(super::shard::ShardRow {
                            second: r.second,
                            row: r.row.clone(),
                            histograms: h,
                        });
                    }
                    if spec.report_json.is_some() {
                        // What the plot beside the report draws (~100 bytes a second).
                        let p = super::plot::PlotRow::of(&r.row, rows.last());
                        rows.push(p);
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
    if ipsec {
        // A worker abandoned mid-drain still takes its SAs away on its way out: wait for it
        // (a bounded wait; XFRM calls take microseconds).
        let limit = Instant::now() + Duration::from_secs(5);
        for h in handles {
            while !h.is_finished() && Instant::now() < limit {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
    let done = agg.finish(ended);
    if let Some(w) = series.as_mut() {
        w.write(&done.last).context("writing the time series")?;
    }
    if let Some(m) = &spec.metrics {
        // The final counts, for a scraper that comes during `--metrics-linger`.
        let cpu = crate::profile::monitor::process_cpu_seconds(&[std::process::id()]).ok();
        m.second(
            &done.total,
            &done.last,
            &super::metrics::Live {
                phase: "done",
                offered_rate: None,
                cpu_s: cpu.or(last_cpu),
            },
        );
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
    if let Some(m) = hep {
        // The workers drop their taps as they end, right after their last report.
        let h = m.finish(Duration::from_secs(2));
        report.warnings.extend(h.warning());
        report.hep = Some(h);
    }
    report.warnings.extend(done.behind_warning());
    let plan_report = done.plan;
    if let Some(p) = &plan_report {
        report.offered_cps = p.offered_rate();
    }
    report.plan = plan_report;
    if let Some(s) = &spec.shard {
        if let Some(h) = done.last_histograms {
            shard_rows.push(super::shard::ShardRow {
                second: done.last_second,
                row: done.last.clone(),
                histograms: h,
            });
        }
        report.shard = Some(super::shard::ShardSection {
            index: s.shard.index,
            count: s.shard.count,
            start_at: s
                .start_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            late_s: s.late_s,
            series: shard_rows,
        });
    }
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
                tracing::warn!("plot not written: {e:#}");
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
    if c.send_errors > 0 {
        warnings.push(format!(
            "{} messages were refused by the kernel and never sent (the errors are on stderr)",
            c.send_errors
        ));
    }
    if c.rx_dropped > 0 {
        warnings.push(format!(
            "{} datagrams were dropped by the kernel at our sockets (receive buffer full): the \
             generator did not keep up; give it more cores or a lower rate",
            c.rx_dropped
        ));
    }
    if c.media_sdp_unusable > 0 {
        warnings.push(format!(
            "--media: {} offers or answers had no audio stream we can play (no PCMU/PCMA, no \
             address, or port 0): those calls carried no media",
            c.media_sdp_unusable
        ));
    }
    if c.media_streams_started > 0 && c.media_packets_received == 0 {
        warnings.push(
            "--media: no RTP came back on any stream: the far ends do not send media, or a \
             firewall or NAT is in the way (the SDP addresses must be reachable from here)"
                .into(),
        );
    }
    if c.media_streams_refused > 0 {
        warnings.push(format!(
            "--media: {} streams did not start: their SSRC (derived from the Call-ID) was in \
             use on the same worker",
            c.media_streams_refused
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
        status_codes: total.status.by_name(),
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
        hep: None,
        media: super::report::MediaReport::of(total),
        histograms: total.delays.encode(),
        shard: None,
        merged: None,
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
    /// A new rate is the core's from the worker's next tick (`tick`), told as soon as it is
    /// known: the core then keeps the boundary even if the worker wakes for that tick late.
    fn take_rate(&mut self, core: &mut LoadCore, tick: Instant) {
        if self.rate.has_changed().unwrap_or(false) {
            let total = *self.rate.borrow_and_update();
            core.set_rate_at(tick, total / self.workers as f64);
        }
    }
}

fn report(id: usize, core: &mut LoadCore, driver: &mut Driver, phase: Phase) -> WorkerMsg {
    let mut interval = core.take_stats();
    interval.counters.send_errors += driver.take_send_errors();
    interval.counters.rx_dropped += driver.take_rx_dropped();
    WorkerMsg {
        worker: id,
        interval,
        phase,
        calling: core.calling_span(),
        media: core.take_media_records(),
    }
}

/// Makes in the kernel the SA changes the core asked for, and tells it how they went; binds
/// the fresh ports it asked for. A kernel call takes tens of µs: done in line, between turns.
fn apply_ipsec(
    core: &mut LoadCore,
    driver: &mut Driver,
    mut xfrm: Option<&mut crate::ipsec::xfrm::Xfrm>,
) {
    use super::core::IpsecAction;
    while let Some(a) = core.poll_ipsec() {
        let r = match (&a, xfrm.as_deref_mut()) {
            (IpsecAction::Rebind { user, socks }, _) => {
                let r = rebind(core, driver, socks);
                core.handle_rebind(Instant::now(), *user, r);
                continue;
            }
            (IpsecAction::ReadUse { user, id, sas }, x) => {
                let inbound: Vec<_> = sas
                    .iter()
                    .filter(|s| s.dir == crate::ipsec::Dir::In)
                    .cloned()
                    .collect();
                let r = x.map_or(Ok(0), |x| x.packets(&inbound));
                core.handle_sa_use(Instant::now(), *user, *id, r);
                continue;
            }
            (IpsecAction::Install { sas, .. }, Some(x)) => x.install(&sas[..]),
            (IpsecAction::Remove { sas, .. }, Some(x)) => x.remove(&sas[..]),
            (_, None) => Ok(()),
        };
        core.handle_ipsec(Instant::now(), &a, r);
    }
}

/// Fresh sockets for a UE, on its address, on ports the kernel picks: all bound before any old
/// one is closed, so none gets an old port back. Only the poller can fail once they are bound;
/// a socket replaced before such a failure is unknown to the core until the UE's next restart
/// replaces all three again (the attempt fails meanwhile).
fn rebind(core: &LoadCore, driver: &mut Driver, socks: &[u32]) -> std::io::Result<Vec<SocketAddr>> {
    let Some(first) = socks.first() else {
        return Ok(Vec::new());
    };
    let ip = core.local_addr(*first).ip();
    let fresh = socks
        .iter()
        .map(|_| udp_socket(SocketAddr::new(ip, 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    fresh
        .into_iter()
        .zip(socks)
        .map(|(sock, i)| driver.replace_udp(*i as usize, sock))
        .collect()
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
#[allow(clippy::too_many_arguments)]
fn worker(
    id: usize,
    mut core: LoadCore,
    mut driver: Driver,
    mut xfrm: Option<crate::ipsec::xfrm::Xfrm>,
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
        ctl.take_rate(&mut core, next_tick);
        if now >= next_tick {
            let phase = core.phase();
            let _ = tx.blocking_send(report(id, &mut core, &mut driver, phase));
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
            tracing::error!("worker {id}: the event loop failed: {e}; ending this worker");
            break;
        }
        apply_ipsec(&mut core, &mut driver, xfrm.as_mut());
    }
    // The SAs still made (a run cut short) go with the socket: nothing is left in the kernel.
    if let Some(x) = xfrm.as_mut() {
        if let Err(e) = x.remove_all() {
            tracing::warn!("worker {id}: --ipsec: {e}");
        }
    }
    // The last answers (200 to a BYE, an ACK) go out before the worker reports done.
    driver.send(&mut core);
    let _ = tx.blocking_send(report(id, &mut core, &mut driver, Phase::Done));
}
