//! SIP OPTIONS over TCP against a tiny in-process SIP server that the test can reset and bring
//! back on the same port (hermetic: loopback only, no Kamailio, a few seconds). The outage must
//! be counted (probes sent while the connection is down are lost, the reconnect is reported),
//! the reply gap must match the time the server was away, and the run must end on time with
//! valid files.

mod common;

use common::{f, layer, probe_report};
use imsload::sip::builder::Writer;
use imsload::sip::transport::StreamFramer;
use imsload::sip::Message;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A SIP server answering every request on TCP with 200. `epoch` changes kill it: every
/// connection is reset (SO_LINGER 0) and the listener closed.
struct Uas {
    addr: SocketAddr,
    epoch: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    acceptor: std::sync::Mutex<Option<(Arc<AtomicU64>, std::thread::JoinHandle<()>)>>,
}

fn serve_conn(mut s: TcpStream, my: u64, epoch: Arc<AtomicU64>) {
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    s.set_nodelay(true).unwrap();
    let mut f = StreamFramer::default();
    let mut buf = [0u8; 65536];
    loop {
        if epoch.load(Ordering::SeqCst) != my {
            // A reset, as a crashed or killed server's kernel would send.
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            return;
        }
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                f.push(&buf[..n]);
                let mut out = Vec::new();
                while let Ok(Some(m)) = f.next_message() {
                    let m = Message::parse(m).unwrap();
                    out.extend(Writer::response_to(&m, 200, "OK", Some("uas")).finish(None, b""));
                }
                if s.write_all(&out).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Uas {
    fn start(addr: SocketAddr) -> Uas {
        let u = Uas {
            addr,
            epoch: Arc::new(AtomicU64::new(0)),
            accepted: Arc::new(AtomicU64::new(0)),
            acceptor: Default::default(),
        };
        let l = TcpListener::bind(addr).unwrap();
        let addr = l.local_addr().unwrap();
        let u = Uas { addr, ..u };
        u.listen(l);
        u
    }

    fn listen(&self, l: TcpListener) {
        l.set_nonblocking(true).unwrap();
        let my = self.epoch.load(Ordering::SeqCst);
        let (epoch, accepted) = (self.epoch.clone(), self.accepted.clone());
        let stop = Arc::new(AtomicU64::new(0));
        let stop2 = stop.clone();
        let h = std::thread::spawn(move || loop {
            if stop2.load(Ordering::SeqCst) != 0 {
                return;
            }
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let e = epoch.clone();
                    std::thread::spawn(move || serve_conn(s, my, e));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        });
        *self.acceptor.lock().unwrap() = Some((stop, h));
    }

    /// Resets every connection and stops listening.
    fn kill(&self) {
        // Close the listening socket first, so that no reconnect can slip in...
        if let Some((stop, h)) = self.acceptor.lock().unwrap().take() {
            stop.store(1, Ordering::SeqCst);
            h.join().unwrap();
        }
        // ...then reset the connections.
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Listens again on the same port.
    fn restart(&self) {
        let t0 = Instant::now();
        loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => return self.listen(l),
                Err(e) if t0.elapsed() < Duration::from_secs(2) => {
                    eprintln!("rebind {}: {e}", self.addr);
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("rebind {}: {e}", self.addr),
            }
        }
    }
}

#[test]
fn a_reset_connection_is_an_outage_with_a_counted_reconnect() {
    let uas = Uas::start("127.0.0.1:0".parse().unwrap());
    let dir = tempfile::Builder::new()
        .prefix("imsprobe-tcp")
        .tempdir()
        .unwrap();
    let out = dir.path().join("run");
    let t_start = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_imsprobe"))
        .args(["--target", &uas.addr.to_string(), "--transport", "tcp"])
        .args([
            "--sip",
            "--rate",
            "1000",
            "--duration",
            "2500ms",
            "--no-capture",
        ])
        .args(["--timeout", "500ms", "--quiet", "--out"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Connected before probing.
    while uas.accepted.load(Ordering::SeqCst) == 0 {
        assert!(t_start.elapsed() < Duration::from_secs(10), "no connection");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(800));
    let a = Instant::now();
    uas.kill();
    std::thread::sleep(Duration::from_millis(500));
    uas.restart();
    let down_ms = a.elapsed().as_secs_f64() * 1000.0;
    let rep = probe_report(child, &out, Duration::from_secs(15));
    let sip = layer(&rep, "sip");
    eprintln!("tcp: {}\nsummary: {}", sip["tcp"], sip["summary"]);
    assert_eq!(sip["socket"], "tcp");
    assert_eq!(sip["receive_timestamps"], "userspace");
    assert_eq!(rep["target"]["transport"], "tcp");
    let tcp = &sip["tcp"];
    assert_eq!(tcp["connection_losses"], 1, "{tcp}");
    assert_eq!(tcp["reconnects"], 1, "{tcp}");
    assert_eq!(tcp["connects"], 2, "{tcp}");
    assert!(tcp["failed_reconnects"].as_u64().unwrap() >= 2, "{tcp}");
    let down = tcp["sent_while_down"].as_u64().unwrap();
    // While down: from the reset to the first reconnect attempt after the restart (one every
    // 100 ms), at 1 per ms.
    assert!(
        down >= 300 && down as f64 <= down_ms + 200.0,
        "{down} probes while down"
    );
    // One outage: the reply gap spans the server's absence plus at most one reconnect period.
    let gaps: Vec<f64> = sip["reply_gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| f(&g["duration_ms"]))
        .filter(|d| *d > 100.0)
        .collect();
    assert_eq!(gaps.len(), 1, "{}", sip["reply_gaps"]);
    assert!(
        gaps[0] >= down_ms - 15.0 && gaps[0] <= down_ms + 100.0 + 100.0,
        "reply gap {} ms vs server away {down_ms:.1} ms",
        gaps[0]
    );
    let s = &sip["summary"];
    assert!(s["send_errors"].as_u64().unwrap() >= down, "{s}");
    assert!(s["ok"].as_u64().unwrap() >= 1500, "{s}");
    // Files complete: one CSV row per probe, send errors among them.
    let csv = std::fs::read_to_string(out.join("probes.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len() as u64, s["sent"].as_u64().unwrap());
    assert!(rows.iter().any(|r| r.contains(",send_error,")));
    assert!(out.join("timeline.svg").is_file());
}

#[test]
fn tcp_probe_refuses_clearly_when_nothing_listens() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_imsprobe"))
        .args(["--target", &addr.to_string(), "--transport", "tcp", "--sip"])
        .args(["--duration", "1s", "--no-capture", "--quiet", "--out"])
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("cannot connect over TCP"), "{err}");
}
