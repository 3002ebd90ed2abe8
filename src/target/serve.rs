//! Runs the embedded target on a UDP socket: `imsload serve`, or in process when imsload is given
//! no `--target`.

use super::core::{TargetConfig, TargetCore};
use crate::shutdown::Shutdown;
use crate::sip::transport::udp_socket;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A running target: its address and the task serving it.
pub struct Served {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<super::core::TargetStats>,
}

/// Binds `addr` (port 0 picks a free one) and serves until `shutdown` (plus a short grace so
/// that the load side's last BYEs and de-registrations are still answered).
pub async fn start(
    cfg: TargetConfig,
    addr: SocketAddr,
    mut shutdown: Shutdown,
    grace: Duration,
    verbose: bool,
) -> anyhow::Result<Served> {
    let sock = udp_socket(addr).with_context(|| format!("cannot bind the target to UDP {addr}"))?;
    let local = sock.local_addr()?;
    let mut core = TargetCore::new(cfg, local, Instant::now());
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        let mut end: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let started = Instant::now();
        loop {
            while let Some(t) = core.poll_transmit() {
                let _ = sock.send_to(&t.data, t.dest).await;
            }
            let deadline = core.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                r = sock.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        let now = Instant::now();
                        core.handle_input(now, &buf[..n], from);
                        for _ in 0..256 {
                            match sock.try_recv_from(&mut buf) {
                                Ok((n, from)) => core.handle_input(now, &buf[..n], from),
                                Err(_) => break,
                            }
                        }
                    }
                }
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    core.handle_timeout(Instant::now());
                }
                _ = shutdown.stopped(), if end.is_none() => {
                    end = Some(tokio::time::Instant::now() + grace);
                }
                _ = async { match end { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
                _ = tick.tick(), if verbose => {
                    let uas = core.uas_stats();
                    let s = &core.stats;
                    eprintln!(
                        "[{:>5.0}s] target {local}: registered {} | REGISTER {} challenged {} refused {} | proxied {} req {} resp | answered {} calls, {} BYEs | malformed {}",
                        started.elapsed().as_secs_f64(),
                        core.registered(Instant::now()),
                        s.registers, s.challenges, s.auth_failures, s.proxied_requests, s.proxied_responses,
                        uas.counters.uas_answered, uas.counters.uas_byes, s.malformed + uas.counters.malformed
                    );
                }
            }
        }
        core.stats.clone()
    });
    Ok(Served { addr: local, task })
}
