//! The thin I/O shell around [`Hss`]: a tokio TCP listener, one task per peer connection, the
//! shared HSS behind a mutex (each request is microseconds of work).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::cx::{Connection, Hss};

/// Logs a line on stderr with a wall-clock time stamp (the lab's log files are read by humans
/// and by `lab/ims/ims.sh`, which waits for "open (Cx)").
pub fn log(line: &str) {
    let now = chrono::Local::now().format("%H:%M:%S%.3f");
    eprintln!("{now} imshss: {line}");
}

/// Binds `listen` and serves peers until the process ends.
pub async fn serve(listen: SocketAddr, hss: Hss) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding Diameter TCP {listen}"))?;
    log(&format!(
        "listening on {listen} as {} realm {} with {} subscriptions",
        hss.cfg.origin_host,
        hss.cfg.origin_realm,
        hss.subs.len()
    ));
    serve_on(listener, Arc::new(Mutex::new(hss))).await
}

/// Serves peers on an already bound listener (tests bind port 0).
pub async fn serve_on(listener: TcpListener, hss: Arc<Mutex<Hss>>) -> Result<()> {
    loop {
        let (stream, peer) = listener.accept().await.context("accept")?;
        let hss = hss.clone();
        tokio::spawn(async move {
            log(&format!("connection from {peer}"));
            let why = match peer_loop(stream, hss).await {
                Ok(()) => "closed".to_string(),
                Err(e) => format!("closed: {e:#}"),
            };
            log(&format!("{peer}: {why}"));
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
            log(l);
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
