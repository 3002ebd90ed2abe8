//! A Prometheus server from Debian's `prometheus` package, started on a free loopback port
//! with its own storage, scraping the given targets every second; and a client for its HTTP
//! query API. Dropping it stops the server.

use super::{free_port, LISTEN_IP};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// Why Prometheus cannot run here, if it cannot.
pub fn prometheus_missing() -> Option<String> {
    ["prometheus", "promtool"]
        .iter()
        .find(|t| {
            Command::new(t)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .map(|t| format!("{t} is not installed (apt-get install prometheus)"))
}

impl Prometheus {
    /// Starts a server scraping `targets` (HOST:PORT of `/metrics` endpoints) every second.
    pub fn start(targets: &[SocketAddr]) -> Result<Prometheus> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: imsload\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )?;
        let addr: SocketAddr = format!("{LISTEN_IP}:{port}").parse()?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start prometheus")?;
        let p = Prometheus { child, addr, dir };
        // Ready to answer is not ready to scrape: the scrape loops start only when service
        // discovery first reports (up to 5 s later). Wait until every target has been tried
        // once (`up` exists, 0 while nothing listens there yet), so that a short run that starts
        // now is scraped from its first second.
        let t0 = Instant::now();
        loop {
            let ready = matches!(http_get(p.addr, "/-/ready"), Ok((200, _)))
                && p.query("up").is_ok_and(|r| r.len() == targets.len());
            if ready {
                return Ok(p);
            }
            if t0.elapsed() > READY_TIMEOUT {
                bail!(
                    "prometheus not scraping {targets:?} after {READY_TIMEOUT:?}:\n{}",
                    p.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query now; the API's `data.result` (an error names the query and the answer).
    pub fn query(&self, q: &str) -> Result<Vec<Value>> {
        self.query_at(q, None)
    }

    /// An instant query evaluated at `at` (Unix seconds; `None`: now). A target that has gone
    /// has stale series after its last scrape, so plain selectors need a time before that.
    pub fn query_at(&self, q: &str, at: Option<f64>) -> Result<Vec<Value>> {
        let time = at.map(|t| format!("&time={t:.3}")).unwrap_or_default();
        let (code, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}{time}", urlencode(q)),
        )?;
        let v: Value = serde_json::from_str(&body)
            .with_context(|| format!("query {q}: answer is not JSON (HTTP {code}): {body}"))?;
        if v["status"] != "success" {
            bail!("query {q}: HTTP {code}: {body}");
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The value of a query that gives one sample, or `None` when it gives none.
    pub fn scalar(&self, q: &str) -> Result<Option<f64>> {
        let r = self.query(q)?;
        match r.as_slice() {
            [] => Ok(None),
            [one] => Ok(one["value"][1].as_str().and_then(|s| s.parse().ok())),
            many => bail!("query {q}: {} series, one expected: {r:?}", many.len()),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over HTTP/1.0; the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))?;
    s.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: no end of head in {text:?}"))?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("GET {path}: bad status line in {head:?}"))?;
    Ok((code, body.to_string()))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
