//! Serves the latest metrics page over HTTP/1.1 (`GET /metrics`) from a thread of its own.
//!
//! A scrape costs a copy of a pointer and one write: the page is built by the run once a
//! second and swapped in whole, so a scrape never waits for the run or sees half a second.
//! One connection at a time, `Connection: close`, bounded reads and writes: a Prometheus
//! server scrapes a handful of times a second at most, and a client that stalls must not pin
//! memory or the thread for long.

use anyhow::Context as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The longest request head we read; a scrape's is a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request or read the page.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the accept loop looks at the stop flag.
const STOP_POLL_MS: i32 = 100;

type Shared = Arc<Mutex<Arc<String>>>;

/// The metrics endpoint. Dropping it stops the thread (within 100 ms) and closes the port.
pub struct Server {
    page: Shared,
    stop: Arc<AtomicBool>,
    scrapes: Arc<AtomicU64>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on `addr` (port 0: any free port; see [`Server::local_addr`]).
    pub fn bind(addr: SocketAddr) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(addr)
            .with_context(|| format!("--metrics {addr}: cannot listen there"))?;
        let addr = listener
            .local_addr()
            .with_context(|| format!("--metrics {addr}"))?;
        listener
            .set_nonblocking(true)
            .with_context(|| format!("--metrics {addr}"))?;
        let page: Shared = Arc::new(Mutex::new(Arc::new(String::new())));
        let stop = Arc::new(AtomicBool::new(false));
        let scrapes = Arc::new(AtomicU64::new(0));
        let thread = {
            let (page, stop, scrapes) = (page.clone(), stop.clone(), scrapes.clone());
            std::thread::Builder::new()
                .name("metrics".into())
                .spawn(move || serve(listener, &page, &stop, &scrapes))
                .with_context(|| format!("--metrics {addr}: cannot start its thread"))?
        };
        Ok(Server {
            page,
            stop,
            scrapes,
            addr,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the page scrapes get.
    pub fn publish(&self, page: String) {
        *self.page.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(page);
    }

    /// Pages served so far.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: TcpListener, page: &Shared, stop: &AtomicBool, scrapes: &AtomicU64) {
    let mut errors_shown = false;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => match answer(s, page) {
                Ok(true) => {
                    scrapes.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {}
                // A client that went away or stalled is its own problem; say so once.
                Err(e) if !errors_shown => {
                    errors_shown = true;
                    tracing::warn!("metrics: a client failed ({e}); later failures are not shown");
                }
                Err(_) => {}
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_readable(&listener),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors, say: back off rather than spin.
                if !errors_shown {
                    errors_shown = true;
                    tracing::warn!("metrics: accept failed ({e}); later failures are not shown");
                }
                std::thread::sleep(Duration::from_millis(STOP_POLL_MS as u64));
            }
        }
    }
}

fn wait_readable(l: &TcpListener) {
    let mut fd = libc::pollfd {
        fd: l.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut fd, 1, STOP_POLL_MS) };
}

/// Reads one request and answers it. `Ok(true)`: the page was served.
fn answer(mut s: TcpStream, page: &Shared) -> io::Result<bool> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut buf = [0u8; MAX_REQUEST];
    let mut n = 0;
    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        if n == buf.len() {
            respond(
                &mut s,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"",
            )?;
            return Ok(false);
        }
        match s.read(&mut buf[n..])? {
            0 => return Ok(false),
            k => n += k,
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let mut parts = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        respond(
            &mut s,
            "405 Method Not Allowed",
            "text/plain",
            b"GET /metrics\n",
        )?;
        return Ok(false);
    }
    match path {
        "/metrics" => {
            let p = page.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let body = if method == "HEAD" {
                &b""[..]
            } else {
                p.as_bytes()
            };
            respond(
                &mut s,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            )?;
            Ok(true)
        }
        "/" => {
            respond(&mut s, "200 OK", "text/plain", b"metrics: /metrics\n")?;
            Ok(false)
        }
        _ => {
            respond(
                &mut s,
                "404 Not Found",
                "text/plain",
                b"metrics: /metrics\n",
            )?;
            Ok(false)
        }
    }
}

fn respond(s: &mut TcpStream, status: &str, kind: &str, body: &[u8]) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_the_latest_page_and_refuses_the_rest() {
        let srv = Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let a = srv.local_addr();
        srv.publish("x 1\n".into());
        let r = get(a, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains("Content-Length: 4\r\n") && r.ends_with("\r\n\r\nx 1\n"),
            "{r}"
        );
        srv.publish("x 2\n".into());
        assert!(get(a, "GET /metrics?a=b HTTP/1.0\r\n\r\n").ends_with("x 2\n"));
        assert!(get(a, "GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(a, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        // Exactly the limit and no end of head: the server reads all of it before it answers,
        // so its close is a FIN, not a reset that could beat the answer to us.
        let big = format!(
            "GET /metrics HTTP/1.1\r\nX: {}",
            "a".repeat(MAX_REQUEST - 26)
        );
        assert_eq!(big.len(), MAX_REQUEST);
        let mut s = TcpStream::connect(a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(big.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 431"), "{out}");
        assert_eq!(srv.scrapes(), 2);
        drop(srv);
        assert!(
            TcpStream::connect(a).is_err(),
            "the port is closed once dropped"
        );
    }
}
