//! The thin I/O shell around [`Hss`]: a tokio TCP listener, one task per peer connection, the
//! shared HSS behind a mutex (each request is microseconds of work).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::cx::{Connection, Hss};

/// Binds `listen` and serves peers until the process ends. Each exchange is an info event:
/// the lab's log files are read by humans and by `lab/ims/ims.sh`, which waits for
/// "listening on" and "open (Cx)".
pub async fn serve(listen: SocketAddr, hss: Hss) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding Diameter TCP {listen}"))?;
    // The bound address, so that `--listen HOST:0` says which port it got.
    let listen = listener.local_addr().unwrap_or(listen);
    tracing::info!(
        "listening on {listen} as {} realm {} with {} subscriptions",
        hss.cfg.origin_host,
        hss.cfg.origin_realm,
        hss.subs.len()
    );
    serve_on(listener, Arc::new(Mutex::new(hss))).await
}

/// Serves peers on an already bound listener (tests bind port 0).
pub async fn serve_on(listener: TcpListener, hss: Arc<Mutex<Hss>>) -> Result<()> {
    loop {
        let (stream, peer) = listener.accept().await.context("accept")?;
        let hss = hss.clone();
        tokio::spawn(async move {
            tracing::info!("connection from {peer}");
            let why = match peer_loop(stream, hss).await {
                Ok(()) => "closed".to_string(),
                Err(e) => format!("closed: {e:#}"),
            };
            tracing::info!("{peer}: {why}");
        });
    }
}

async fn peer_loop(mut stream: TcpStream, hss: Arc<Mutex<Hss>>) -> Result<()> {
    stream.set_nodelay(true).ok();
    let local_ip = stream.local_addr()?.ip();
    let mut conn = Connection::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await.context("read")?;
        if n == 0 {
            return Ok(());
        }
        let out = {
            let mut h = hss.lock().unwrap_or_else(|p| p.into_inner());
            conn.feed(&mut h, &buf[..n], local_ip)
        };
        for l in &out.log {
            tracing::info!("{l}");
        }
        if !out.send.is_empty() {
            stream.write_all(&out.send).await.context("write")?;
        }
        if out.close {
            stream.shutdown().await.ok();
            return Ok(());
        }
    }
}
