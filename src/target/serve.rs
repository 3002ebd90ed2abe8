//! Runs the embedded target on a UDP socket: `imsload serve`, or in process when imsload is given
//! no `--target`.

use super::core::{TargetConfig, TargetCore};
use crate::io::driver::{Driver, MAX_SLEEP};
use crate::shutdown::Shutdown;
use crate::sip::transport::udp_socket;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A running target: its address and the thread serving it (awaitable).
pub struct Served {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<super::core::TargetStats>,
}

/// Binds `addr` (port 0 picks a free one) and serves until `shutdown` (plus a short grace so
/// that the load side's last BYEs and de-registrations are still answered). The target runs on
/// a blocking thread of its own, on the same driver as the load workers.
pub async fn start(
    cfg: TargetConfig,
    addr: SocketAddr,
    shutdown: Shutdown,
    grace: Duration,
    verbose: bool,
) -> anyhow::Result<Served> {
    start_with(cfg, addr, shutdown, grace, verbose, Wiring::default()).await
}

/// How the target's event loop is wired beyond its socket.
#[derive(Default)]
pub struct Wiring {
    /// Copy every message here (`imsload serve --hep`).
    pub tap: Option<crate::hep::mirror::Tap>,
    /// `--timer-resol`: see [`Driver::set_timer_resolution`]. Zero (the default) answers
    /// every datagram as it comes.
    pub timer_resolution: Duration,
}

/// [`start`], with a tap or a timer resolution.
pub async fn start_with(
    cfg: TargetConfig,
    addr: SocketAddr,
    shutdown: Shutdown,
    grace: Duration,
    verbose: bool,
    wiring: Wiring,
) -> anyhow::Result<Served> {
    let sock = udp_socket(addr).with_context(|| format!("cannot bind the target to UDP {addr}"))?;
    let local = sock.local_addr()?;
    let mut driver = Driver::udp(format!("target {local}"), vec![sock])
        .context("cannot set up the target's event loop")?;
    if let Some(t) = wiring.tap {
        driver.set_tap(t);
    }
    driver.set_timer_resolution(wiring.timer_resolution);
    let mut core = TargetCore::new(cfg, local, Instant::now());
    let task = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut end: Option<Instant> = None;
        let mut next_line = started + Duration::from_secs(1);
        let mut rx_dropped = 0u64;
        loop {
            let now = Instant::now();
            if end.is_none() && shutdown.is_stopping() {
                end = Some(now + grace);
            }
            if end.is_some_and(|e| now >= e) {
                break;
            }
            if verbose && now >= next_line {
                next_line += Duration::from_secs(1);
                rx_dropped += driver.take_rx_dropped();
                let s = core.stats();
                let a = &s.answerer;
                // serve's live view (one line a second) is output, not a diagnostic.
                eprintln!(
                    "[{:>5.0}s] target {local}: registered {} | REGISTER {} challenged {} refused {} | proxied {} req {} resp | answered {} calls, {} BYEs, holding {}, lingering {} | refused {} INVITEs 503 (full), {} 513 (too large) | malformed {} | dropped by the kernel (receive buffer full) {}",
                    started.elapsed().as_secs_f64(),
                    core.registered(now),
                    s.registers, s.challenges, s.auth_failures, s.proxied_requests, s.proxied_responses,
                    a.calls_answered, a.byes_received, s.answering_calls, s.lingering_calls,
                    a.calls_refused_overload, a.calls_refused_too_large, s.malformed, rx_dropped
                );
            }
            let mut wake_by = now + MAX_SLEEP;
            if verbose {
                wake_by = wake_by.min(next_line);
            }
            if let Some(e) = end {
                wake_by = wake_by.min(e);
            }
            if let Err(e) = driver.turn(&mut core, wake_by) {
                tracing::error!("target {local}: the event loop failed: {e}; stopping");
                break;
            }
        }
        driver.send(&mut core);
        rx_dropped += driver.take_rx_dropped();
        let mut stats = core.stats();
        stats.send_errors = driver.take_send_errors();
        stats.rx_dropped = rx_dropped;
        stats
    });
    Ok(Served { addr: local, task })
}
