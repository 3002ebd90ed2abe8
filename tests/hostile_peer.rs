//! Issue 10, end to end over real sockets: a hostile peer can slow a run, never stop or wedge it.
//!
//! * UDP: `imsload serve` under load from imsload gets datagrams with
//!   `Content-Length: 18446744073709551615` (a request, a response it would relay, an in-dialog
//!   request it would forward) and a burst of garbage. It must stay up and answering, count them
//!   as malformed, and the load run must end normally with its report.
//! * TCP: a misbehaving UAS written here answers imsload's (and imsprobe's) first request with a
//!   response whose Content-Length is 2^64 − header length, or 10^12 followed by a stream of
//!   bytes. imsload and imsprobe must drop the connection, end within their run time plus drain
//!   plus a margin, write their reports, and end cleanly on SIGINT too.
//!
//! Why each fails on the code before the fix (c48e910^):
//! * `Message::parse` checked `end + n > buf.len()`, which wraps in release builds for
//!   n = 2^64 − 1, so the datagrams parsed with a body of `end..end-1`; `body()` panicked when
//!   the target forwarded the in-dialog request or relayed the response, the serving task died
//!   and `imsload serve` exited (error 2): the OPTIONS after the hostile datagrams gets no
//!   answer, the load run's calls are unanswered, and serve prints no counters.
//! * `frame_len` computed `buf.len() < end + cl` with `end + cl` = 2^64 = 0: it returned a frame
//!   of 0 bytes, which `StreamFramer::next_message` yielded forever without consuming input;
//!   the TCP worker (imsload) and the TCP receive thread (imsprobe) spun in that loop and never
//!   saw the end of the run or SIGINT: the bounded waits below kill them and fail.
//! * With 10^12 `frame_len` waited for the body and the framer buffered everything the peer
//!   sent: the peer below streams up to 64 MB and imsload took it all (the test requires the
//!   peer to be stopped by imsload's closed or unread socket well before that).
//!
//! Checked: this file in a checkout of c48e910^ (99dc0b0), `cargo test --release --test
//! hostile_peer`: all six fail — serve "stopped answering (alive: false)"; imsload over TCP
//! "still running ... (CPU 8.4 s); killed", after SIGINT too; imsprobe "still running ... (CPU
//! 16.6 s); killed"; with 10^12 imsload never drops the stream and imsprobe counts no framing
//! error.
//!
//! * UDP flood (issue 10, fix 3): 30,000 never-ACKed INVITEs with distinct Call-IDs and 3.5 KB
//!   of headers, as fast as loopback takes them (paced only so that serve's socket buffer, not
//!   serve, decides nothing), against `serve --max-calls 2000`. Serve's peak RSS must stay
//!   under 64 MB, the refused INVITEs get 503 and are counted, and serve still answers OPTIONS.
//!   Before the fix (dbf3eea) serve held every INVITE it read for 64·T1 and more (2xx
//!   retransmission, then BYE, then linger), ~7.5 KB each with these headers: the same flood
//!   took it from 7.3 to 217 MB RSS: checked by running this test against dbf3eea's binary with
//!   `--max-calls` left out (it has no such flag), which fails "serve peaked at 216776 kB RSS
//!   under the flood (bound 65536 kB)". With the cap: 5.9 → 24 MB. The test also requires
//!   serve to have read at least 15,000 of the INVITEs, which at 7.5 KB each the old code could
//!   not hold in 64 MB.
//!
//! Loopback only (127.0.0.1); every loop is bounded in count and time.

mod common;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const IMSLOAD: &str = env!("CARGO_BIN_EXE_imsload");
const IMSPROBE: &str = env!("CARGO_BIN_EXE_imsprobe");

/// A child that is killed (and reaped) if the test ends early.
struct Guard(Option<Child>);

impl Guard {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
    fn pid(&self) -> i32 {
        self.0.as_ref().unwrap().id() as i32
    }
    /// Waits up to `limit` for the exit; on overrun kills it and fails with `what`.
    fn wait_bounded(&mut self, limit: Duration, what: &str) -> std::process::ExitStatus {
        common::wait_bounded(self.0.take().unwrap(), limit, what).status
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// UDP: imsload serve under load
// ---------------------------------------------------------------------------------------------

/// An OPTIONS from `sock` to `to`; true when any SIP response comes back within `wait`.
fn options_answered(sock: &UdpSocket, to: SocketAddr, n: u32, wait: Duration) -> bool {
    let me = sock.local_addr().unwrap();
    let req = format!(
        "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKopt{n}x{}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:test@{me}>;tag=o{n}\r\nTo: <sip:{to}>\r\n\
         Call-ID: opt-{n}-{}@test\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n",
        std::process::id(),
        std::process::id()
    );
    sock.send_to(req.as_bytes(), to).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 65536];
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    while t0.elapsed() < wait {
        if let Ok((k, from)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..k]);
            if from == to && text.starts_with("SIP/2.0 ") && text.contains(&format!("opt-{n}-")) {
                return true;
            }
        }
    }
    false
}

/// The hostile datagrams: `Content-Length: 2^64 − 1` on (1) an out-of-dialog request, (2) a
/// response whose top Via is serve's own (so serve would relay it to the next Via, `sink`),
/// (3) an in-dialog request whose Request-URI is `sink` (so serve would forward it), and
/// (4) a response not for serve (handed to its answering side).
fn hostile_datagrams(serve: SocketAddr, me: SocketAddr, sink: SocketAddr) -> Vec<Vec<u8>> {
    let cl = u64::MAX; // 18446744073709551615
    let common = |n: u32| {
        format!("From: <sip:evil@{me}>;tag=e{n}\r\nCall-ID: evil-{n}@{me}\r\nMax-Forwards: 70\r\n")
    };
    vec![
        format!(
            "INVITE sip:nobody@{serve} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKev1\r\n{}\
             To: <sip:nobody@{serve}>\r\nCSeq: 1 INVITE\r\nContent-Length: {cl}\r\n\r\n",
            common(1)
        ),
        format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {serve};branch=z9hG4bKtgevil2\r\n\
             Via: SIP/2.0/UDP {sink};branch=z9hG4bKev2\r\n{}To: <sip:x@{serve}>;tag=t2\r\n\
             CSeq: 1 INVITE\r\nContent-Length: {cl}\r\n\r\n",
            common(2)
        ),
        format!(
            "BYE sip:callee@{sink} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKev3\r\n{}\
             To: <sip:callee@{serve}>;tag=t3\r\nRoute: <sip:{serve};lr>\r\nCSeq: 2 BYE\r\n\
             Content-Length: {cl}\r\n\r\n",
            common(3)
        ),
        format!(
            "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKev4\r\n{}\
             To: <sip:x@{serve}>;tag=t4\r\nCSeq: 1 INVITE\r\nContent-Length: {cl}\r\n\r\n",
            common(4)
        ),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

/// Deterministic garbage: xorshift bytes, and truncated or mangled SIP. None of it parses.
fn garbage(n: usize) -> Vec<Vec<u8>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| match i % 4 {
            // Random bytes that do not start with whitespace (a CRLF keep-alive is not garbage).
            0 | 1 => {
                let len = 1 + (next() % 1400) as usize;
                let mut v: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                v[0] = b'#';
                v
            }
            2 => b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK\r\nCont"
                .to_vec(),
            _ => format!("SIP/2.0 200 OK\r\nContent-Length: -{i}\r\n\r\n").into_bytes(),
        })
        .collect()
}

/// Reads the JSON-lines series until a row shows calls attempted (the call phase is on).
fn wait_for_calls(series: &std::path::Path, load: &mut Guard, limit: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Ok(s) = std::fs::read_to_string(series) {
            if s.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|r| r["calls_attempted"].as_u64().unwrap_or(0) > 0)
            {
                return;
            }
        }
        if let Some(st) = load.child().try_wait().unwrap() {
            panic!("imsload ended ({st}) before placing calls");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no calls placed within {limit:?}");
}

#[test]
fn udp_hostile_content_length_and_garbage_do_not_stop_serve() {
    let dir = tempfile::Builder::new()
        .prefix("hostile-udp")
        .tempdir()
        .unwrap();
    let port = common::free_port().unwrap();
    let serve_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let serve_err = dir.path().join("serve.err");
    let mut serve = Guard(Some(
        Command::new(IMSLOAD)
            .args(["serve", "--listen", &serve_addr.to_string(), "--quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&serve_err).unwrap())
            .spawn()
            .unwrap(),
    ));
    // Ready when it answers an OPTIONS (retried: the socket may not be bound yet).
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut n = 0;
    let ready = loop {
        n += 1;
        if options_answered(&probe, serve_addr, n, Duration::from_millis(200)) {
            break true;
        }
        if n >= 50 || serve.child().try_wait().unwrap().is_some() {
            break false;
        }
    };
    assert!(
        ready,
        "serve did not answer: {}",
        common::tail_lines(&serve_err, 30)
    );

    let report = dir.path().join("report.json");
    let series = dir.path().join("series.jsonl");
    let load_err = dir.path().join("load.err");
    let duration_s = 5;
    let drain_s = 5;
    let t_load = Instant::now();
    let mut load = Guard(Some(
        Command::new(IMSLOAD)
            .args(["--target", &serve_addr.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--users",
                "20",
                "--reg-rate",
                "200",
                "--cps",
                "40",
                "--hold",
                "1s",
            ])
            .args(["--duration", &format!("{duration_s}s")])
            .args(["--drain", &format!("{drain_s}s"), "--quiet", "--report"])
            .arg(&report)
            .arg("--series")
            .arg(&series)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&load_err).unwrap())
            .spawn()
            .unwrap(),
    ));
    wait_for_calls(&series, &mut load, Duration::from_secs(20));

    // Mid-run: the hostile datagrams (twice each) and a burst of garbage, from another socket.
    let evil = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let hostile = hostile_datagrams(
        serve_addr,
        evil.local_addr().unwrap(),
        sink.local_addr().unwrap(),
    );
    let mut sent_bad = 0u64;
    for _ in 0..2 {
        for d in &hostile {
            evil.send_to(d, serve_addr).unwrap();
            sent_bad += 1;
        }
    }
    // Paced in groups of 50 so that serve's receive buffer is never what decides the count.
    for chunk in garbage(400).chunks(50) {
        for d in chunk {
            evil.send_to(d, serve_addr).unwrap();
            sent_bad += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Serve is still there and answering, while the load is still running.
    let mut answered = false;
    for k in 0..10 {
        if options_answered(&probe, serve_addr, 1000 + k, Duration::from_millis(500)) {
            answered = true;
            break;
        }
    }
    assert!(
        answered,
        "serve stopped answering after the hostile datagrams (alive: {}): {}",
        serve.child().try_wait().unwrap().is_none(),
        common::tail_lines(&serve_err, 30)
    );
    assert!(
        load.child().try_wait().unwrap().is_none(),
        "the load run ended before the hostile datagrams were all sent: make it longer"
    );

    // The load run ends normally (registration + call phase + drain + margin).
    let status = load.wait_bounded(
        Duration::from_secs(duration_s + drain_s + 30).saturating_sub(t_load.elapsed()),
        "imsload against serve",
    );
    let rep: Value = serde_json::from_str(
        &std::fs::read_to_string(&report)
            .unwrap_or_else(|e| panic!("no report ({e}): {}", common::tail_lines(&load_err, 30))),
    )
    .unwrap();
    let c = &rep["counters"];
    eprintln!("load exit {status}; counters {c}");
    // A run that reached its --duration ends as "finished" (its plan ran out).
    assert_eq!(rep["stop_reason"], "finished", "{rep}");
    let attempted = c["calls_attempted"].as_u64().unwrap();
    let completed = c["calls_completed"].as_u64().unwrap();
    assert!(attempted >= 40, "{c}");
    // A dead serve leaves the calls after its death unanswered; a live one completes them (a
    // few may be cut by a slow, shared machine: not the 30+ % a dead target leaves).
    assert!(completed * 10 >= attempted * 9, "{c}");
    assert_eq!(c["calls_unanswered"], 0, "{c}");
    assert_eq!(c["reg_ok"].as_u64().unwrap(), 20, "{c}");

    // Nothing hostile was forwarded or relayed to the sink.
    sink.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 65536];
    assert!(
        sink.recv_from(&mut buf).is_err(),
        "serve forwarded a hostile message"
    );

    // Serve ends on SIGINT with its counters, the hostile datagrams among the malformed.
    assert!(common::send_signal(serve.pid(), common::SIGINT));
    // Its stdout (a line and the counters) fits in the pipe: read it once it has exited.
    let mut stdout = serve.child().stdout.take().unwrap();
    let st = serve.wait_bounded(Duration::from_secs(10), "imsload serve after SIGINT");
    let mut out = String::new();
    stdout.read_to_string(&mut out).unwrap();
    assert!(
        st.success(),
        "serve: {st}: {}",
        common::tail_lines(&serve_err, 30)
    );
    let stats: Value = serde_json::from_str(&out[out.find('{').expect(&out)..]).unwrap();
    eprintln!("serve counters: {stats}");
    let malformed = stats["malformed"].as_u64().unwrap();
    // The four hostile kinds, twice, are all counted; garbage at most once each (a datagram
    // lost on loopback is not counted: allow 10 %).
    assert!(
        malformed <= sent_bad && malformed * 10 >= sent_bad * 9 && malformed >= 8,
        "malformed {malformed} of {sent_bad} sent"
    );
}

// ---------------------------------------------------------------------------------------------
// UDP: a flood of INVITEs never ACKed
// ---------------------------------------------------------------------------------------------

/// A `VmRSS:`/`VmHWM:` line of `/proc/<pid>/status`, in kB.
fn proc_kb(pid: i32, key: &str) -> Option<u64> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = st.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// An INVITE with 14 Record-Routes (3.5 KB in all): what serve must copy to answer it is
/// 3 KB, well under its 8 KiB refusal threshold, so only the cap can refuse it.
fn flood_invite(serve: SocketAddr, me: SocketAddr, n: u32) -> Vec<u8> {
    let mut rr = String::new();
    for i in 0..14 {
        rr += &format!(
            "Record-Route: <sip:proxy{i}.example.net;lr;pad={}>\r\n",
            "x".repeat(180)
        );
    }
    format!(
        "INVITE sip:nobody@{serve} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKfl{n}\r\n{rr}\
         Max-Forwards: 70\r\nFrom: <sip:flood@{me}>;tag=f{n}\r\nTo: <sip:nobody@{serve}>\r\n\
         Call-ID: flood-{n}@{me}\r\nCSeq: 1 INVITE\r\nContact: <sip:flood@{me}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn udp_flood_of_unacked_invites_is_refused_with_503_beyond_max_calls() {
    const FLOOD: u32 = 30_000;
    const MAX_CALLS: u64 = 2000;
    const RSS_BOUND_KB: u64 = 64 * 1024;
    let dir = tempfile::Builder::new()
        .prefix("hostile-flood")
        .tempdir()
        .unwrap();
    let port = common::free_port().unwrap();
    let serve_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let serve_err = dir.path().join("serve.err");
    let mut serve = Guard(Some(
        Command::new(IMSLOAD)
            .args(["serve", "--listen", &serve_addr.to_string(), "--quiet"])
            .args(["--max-calls", &MAX_CALLS.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&serve_err).unwrap())
            .spawn()
            .unwrap(),
    ));
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut n = 0;
    let ready = loop {
        n += 1;
        if options_answered(&probe, serve_addr, n, Duration::from_millis(200)) {
            break true;
        }
        if n >= 50 || serve.child().try_wait().unwrap().is_some() {
            break false;
        }
    };
    assert!(
        ready,
        "serve did not answer: {}",
        common::tail_lines(&serve_err, 30)
    );
    let pid = serve.pid();
    let rss_before = proc_kb(pid, "VmRSS:").unwrap();

    // The flooder reads what comes back (so that its own buffer is not what drops it) and
    // counts the status codes; it stops at the flag or after 60 s whatever happens.
    let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = flood.local_addr().unwrap();
    let reader = flood.try_clone().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let got_503 = Arc::new(AtomicU64::new(0));
    let got_other = Arc::new(AtomicU64::new(0));
    let rd = {
        let (stop, got_503, got_other) = (stop.clone(), got_503.clone(), got_other.clone());
        std::thread::spawn(move || {
            reader
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let mut buf = [0u8; 65536];
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(60) {
                if let Ok((k, _)) = reader.recv_from(&mut buf) {
                    if buf[..k].starts_with(b"SIP/2.0 503 ") {
                        got_503.fetch_add(1, Ordering::Relaxed);
                    } else {
                        got_other.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let t_flood = Instant::now();
    for n in 0..FLOOD {
        // A send refused by a full buffer is a datagram lost, as on any UDP path.
        let _ = flood.send_to(&flood_invite(serve_addr, me, n), serve_addr);
        if n % 50 == 49 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let flood_time = t_flood.elapsed();
    // Serve catches up with its socket buffer, then the peak is read.
    std::thread::sleep(Duration::from_millis(1500));
    let rss_after = proc_kb(pid, "VmRSS:").unwrap();
    let hwm = proc_kb(pid, "VmHWM:").unwrap();
    eprintln!(
        "flood of {FLOOD} INVITEs in {flood_time:?}: serve RSS {rss_before} → {rss_after} kB, peak {hwm} kB; \
         503s received {}, other responses {}",
        got_503.load(Ordering::Relaxed),
        got_other.load(Ordering::Relaxed)
    );
    // Still answering, mid-flood aftermath (its calls retransmit their 200s meanwhile).
    let mut answered = false;
    for k in 0..10 {
        if options_answered(&probe, serve_addr, 5000 + k, Duration::from_millis(500)) {
            answered = true;
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    rd.join().unwrap();
    assert!(
        answered,
        "serve stopped answering OPTIONS after the flood (alive: {}): {}",
        serve.child().try_wait().unwrap().is_none(),
        common::tail_lines(&serve_err, 30)
    );
    assert!(
        hwm < RSS_BOUND_KB,
        "serve peaked at {hwm} kB RSS under the flood (bound {RSS_BOUND_KB} kB)"
    );
    assert!(got_503.load(Ordering::Relaxed) > 0, "no 503 came back");

    assert!(common::send_signal(pid, common::SIGINT));
    let mut stdout = serve.child().stdout.take().unwrap();
    let st = serve.wait_bounded(Duration::from_secs(10), "imsload serve after SIGINT");
    let mut out = String::new();
    stdout.read_to_string(&mut out).unwrap();
    assert!(
        st.success(),
        "serve: {st}: {}",
        common::tail_lines(&serve_err, 30)
    );
    let stats: Value = serde_json::from_str(&out[out.find('{').expect(&out)..]).unwrap();
    eprintln!("serve counters: {stats}");
    let invites = stats["invites"].as_u64().unwrap();
    let refused = stats["calls_refused_overload"].as_u64().unwrap();
    let answered = stats["calls_answered"].as_u64().unwrap();
    // Serve read most of the flood (else the bound above would prove nothing), held at most
    // MAX_CALLS of it, and refused the rest with 503.
    assert!(
        invites >= 15_000,
        "serve read only {invites} INVITEs: {stats}"
    );
    assert!(answered <= MAX_CALLS, "{stats}");
    assert!(
        stats["answering_calls"].as_u64().unwrap() <= MAX_CALLS,
        "{stats}"
    );
    assert!(refused > 0 && refused + answered == invites, "{stats}");
}

// ---------------------------------------------------------------------------------------------
// TCP: a UAS that answers with a hostile Content-Length
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Hostile {
    /// Content-Length = 2^64 − (length of the header section): `end + cl` wraps to 0.
    WrapToZero,
    /// Content-Length = 10^12, then up to 64 MB of body bytes.
    Huge,
}

const STREAM_BUDGET: u64 = 64 << 20;

/// What the peer saw.
#[derive(Default)]
struct PeerLog {
    connections: AtomicU64,
    hostile_sent: AtomicU64,
    /// Body bytes the peer managed to write after a `Huge` header (per connection, the most).
    streamed: AtomicU64,
}

/// One SIP request from `s` (headers up to the blank line; requests here carry no body).
fn read_request(s: &mut TcpStream, deadline: Instant) -> Option<String> {
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while Instant::now() < deadline && got.len() < 65536 {
        match s.read(&mut b) {
            Ok(0) => return None,
            Ok(n) => {
                got.extend_from_slice(&b[..n]);
                if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    return Some(String::from_utf8_lossy(&got[..p + 2]).into_owned());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
    None
}

/// The response: the request's Via, From, To (+tag), Call-ID, CSeq, then the hostile length.
fn hostile_response(req: &str, kind: Hostile) -> Vec<u8> {
    let mut head = format!("SIP/2.0 200 OK\r\n{}", common::dialog_headers(req, "evil"));
    head += "Content-Length: ";
    let cl = match kind {
        Hostile::Huge => 1_000_000_000_000u64,
        Hostile::WrapToZero => {
            // end + cl ≡ 0 (mod 2^64), end = bytes up to and including the blank line.
            let fixed = head.len() as u64 + 4;
            let mut v = u64::MAX - (fixed + 20) + 1;
            while v.wrapping_add(fixed + v.to_string().len() as u64) != 0 {
                v += 1;
            }
            v
        }
    };
    format!("{head}{cl}\r\n\r\n").into_bytes()
}

/// A TCP "UAS" on 127.0.0.1: every connection's first request gets the hostile response; with
/// `Huge`, body bytes follow until the budget is spent or the writes stall for 2 s (the reader
/// stopped reading) or fail (it closed). Later requests are read and ignored. Bounded: every
/// connection thread ends by `until`, the acceptor too.
fn hostile_uas(kind: Hostile, until: Instant) -> (SocketAddr, Arc<PeerLog>, mpsc::Receiver<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    let plog = Arc::new(PeerLog::default());
    let (tx, rx) = mpsc::channel();
    let pl = plog.clone();
    std::thread::spawn(move || {
        let mut n = 0;
        while Instant::now() < until && n < 50 {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            n += 1;
            pl.connections.fetch_add(1, Ordering::SeqCst);
            let (pl, tx) = (pl.clone(), tx.clone());
            std::thread::spawn(move || {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
                let Some(req) = read_request(&mut s, until) else {
                    return;
                };
                if s.write_all(&hostile_response(&req, kind)).is_err() {
                    return;
                }
                pl.hostile_sent.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(());
                if let Hostile::Huge = kind {
                    let chunk = vec![b'x'; 65536];
                    let mut sent = 0u64;
                    while sent < STREAM_BUDGET && Instant::now() < until {
                        match s.write(&chunk) {
                            Ok(k) => sent += k as u64,
                            Err(_) => break, // stalled 2 s (not read) or closed
                        }
                    }
                    pl.streamed.fetch_max(sent, Ordering::SeqCst);
                }
                // Keep the connection open, reading and ignoring, until the peer closes it.
                let mut b = [0u8; 65536];
                while Instant::now() < until {
                    match s.read(&mut b) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => return,
                    }
                }
            });
        }
    });
    (addr, plog, rx)
}

/// Stderr of a child, line by line, into a channel (and into a file-like buffer).
fn stderr_lines(child: &mut Child) -> (mpsc::Receiver<String>, Arc<std::sync::Mutex<String>>) {
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let all = Arc::new(std::sync::Mutex::new(String::new()));
    let a = all.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            a.lock().unwrap().push_str(&(l.clone() + "\n"));
            let _ = tx.send(l);
        }
    });
    (rx, all)
}

/// Waits (bounded) for a line containing `needle`.
fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, limit: Duration) -> bool {
    let t0 = Instant::now();
    while let Some(left) = limit.checked_sub(t0.elapsed()) {
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// imsload --transport tcp calling the hostile UAS; `sigint`: stop it with SIGINT as soon as it
/// has dropped the connection (the run would go on for 60 s otherwise).
fn imsload_tcp(kind: Hostile, sigint: bool) {
    let duration_s: u64 = if sigint { 60 } else { 3 };
    let drain_s: u64 = 3;
    let margin = Duration::from_secs(15);
    let until = Instant::now() + Duration::from_secs(duration_s + drain_s) + margin;
    let (addr, plog, sent_rx) = hostile_uas(kind, until);
    let dir = tempfile::Builder::new()
        .prefix("hostile-tcp")
        .tempdir()
        .unwrap();
    let report = dir.path().join("report.json");
    let t0 = Instant::now();
    let mut load = Guard(Some(
        Command::new(IMSLOAD)
            .args(["--target", &addr.to_string(), "--transport", "tcp"])
            .args([
                "--bind",
                "127.0.0.1",
                "--ruri",
                &format!("sip:service@{addr}"),
            ])
            .args(["--users", "1", "--cps", "5", "--hold", "1s"])
            .args(["--duration", &format!("{duration_s}s")])
            .args(["--drain", &format!("{drain_s}s"), "--quiet", "--report"])
            .arg(&report)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let (lines, all_err) = stderr_lines(load.child());
    // The peer has answered the first INVITE with the hostile response...
    assert!(
        sent_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "imsload never sent a request over TCP: {}",
        all_err.lock().unwrap()
    );
    // ...and imsload says it dropped the unreadable stream (before the fix it never got here:
    // it spun on an empty frame or kept buffering).
    let dropped = wait_line(&lines, "unreadable SIP stream", Duration::from_secs(5));
    if sigint {
        assert!(common::send_signal(load.pid(), common::SIGINT));
    }
    let limit = if sigint {
        Duration::from_secs(drain_s) + margin
    } else {
        Duration::from_secs(duration_s + drain_s) + margin - t0.elapsed().min(margin)
    };
    let status = load.wait_bounded(
        limit,
        &format!("imsload over TCP ({kind:?}, sigint {sigint})"),
    );
    let err = all_err.lock().unwrap().clone();
    eprintln!("exit {status}, after {:?}; stderr:\n{err}", t0.elapsed());
    assert!(dropped, "no 'unreadable SIP stream' within 5 s: {err}");
    assert!(
        status.code().is_some(),
        "ended by a signal, not by itself: {status}"
    );
    let rep: Value = serde_json::from_str(
        &std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("no report ({e}): {err}")),
    )
    .unwrap();
    let c = &rep["counters"];
    eprintln!("stop {} counters {c}", rep["stop_reason"]);
    assert_eq!(
        rep["stop_reason"],
        if sigint { "interrupted" } else { "finished" },
        "{rep}"
    );
    assert_eq!(rep["transport"], "tcp");
    assert!(c["calls_attempted"].as_u64().unwrap() >= 1, "{c}");
    assert_eq!(c["calls_completed"], 0, "{c}");
    // The hostile response was not taken for an answer; the calls left open are counted (the
    // report has no counter of its own for a dropped stream: stderr says so, checked above).
    assert_eq!(c["calls_answered"], 0, "{c}");
    let open = [
        "calls_unanswered",
        "calls_timeout",
        "calls_abandoned",
        "calls_cancelled",
    ]
    .iter()
    .map(|k| c[*k].as_u64().unwrap_or(0))
    .sum::<u64>();
    assert!(open >= 1, "the unanswered calls are counted: {c}");
    assert_eq!(plog.hostile_sent.load(Ordering::SeqCst), 1);
    if let Hostile::Huge = kind {
        let streamed = plog.streamed.load(Ordering::SeqCst);
        assert!(
            streamed < STREAM_BUDGET / 2,
            "imsload kept reading the body of a 10^12-byte message: {streamed} bytes"
        );
    }
}

#[test]
fn tcp_content_length_wrapping_to_zero_does_not_wedge_imsload() {
    imsload_tcp(Hostile::WrapToZero, false);
}

#[test]
fn tcp_content_length_of_a_terabyte_is_refused_not_buffered() {
    imsload_tcp(Hostile::Huge, false);
}

#[test]
fn tcp_hostile_peer_then_sigint_ends_imsload_cleanly() {
    imsload_tcp(Hostile::WrapToZero, true);
}

/// imsprobe's TCP path: same framer. It must count the framing error, reconnect, and end on
/// time (before the fix its receive thread spun on the empty frame and the run never ended).
fn imsprobe_tcp(kind: Hostile) {
    let duration = Duration::from_millis(2500);
    let margin = Duration::from_secs(15);
    let until = Instant::now() + duration + margin + Duration::from_secs(5);
    let (addr, plog, sent_rx) = hostile_uas(kind, until);
    let dir = tempfile::Builder::new()
        .prefix("hostile-probe")
        .tempdir()
        .unwrap();
    let out = dir.path().join("run");
    let t0 = Instant::now();
    let mut probe = Guard(Some(
        Command::new(IMSPROBE)
            .args(["--target", &addr.to_string(), "--transport", "tcp"])
            .args([
                "--sip",
                "--rate",
                "50",
                "--duration",
                "2500ms",
                "--no-capture",
            ])
            .args(["--timeout", "500ms", "--quiet", "--out"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let (_lines, all_err) = stderr_lines(probe.child());
    assert!(
        sent_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "imsprobe never sent a request over TCP: {}",
        all_err.lock().unwrap()
    );
    let status = probe.wait_bounded(
        duration + margin - t0.elapsed().min(margin),
        &format!("imsprobe over TCP ({kind:?})"),
    );
    let err = all_err.lock().unwrap().clone();
    eprintln!("exit {status} after {:?}; stderr:\n{err}", t0.elapsed());
    let rep: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json"))
            .unwrap_or_else(|e| panic!("no report ({e}): {err}")),
    )
    .unwrap();
    let sip = common::layer(&rep, "sip");
    eprintln!(
        "counters {} tcp {} summary {}",
        sip["counters"], sip["tcp"], sip["summary"]
    );
    let framing = sip["counters"]["malformed"]["tcp_framing"]
        .as_u64()
        .unwrap_or(0);
    let hostile = plog.hostile_sent.load(Ordering::SeqCst);
    assert!(hostile >= 1);
    // Every hostile response was a framing error that cost the connection (one per connection;
    // the last one may still be on its way at the end).
    assert!(
        framing >= 1 && framing <= hostile && framing + 1 >= hostile,
        "tcp_framing {framing}, hostile responses sent {hostile}"
    );
    assert!(
        sip["tcp"]["connection_losses"].as_u64().unwrap() >= 1,
        "{}",
        sip["tcp"]
    );
    assert_eq!(sip["summary"]["ok"], 0, "{}", sip["summary"]);
    let conns = plog.connections.load(Ordering::SeqCst);
    // Reconnects are paced (one per 100 ms at most), never a tight loop.
    assert!(conns <= 40, "{conns} connections in 2.5 s");
    if let Hostile::Huge = kind {
        let streamed = plog.streamed.load(Ordering::SeqCst);
        assert!(streamed < STREAM_BUDGET / 2, "{streamed} bytes read");
    }
}

#[test]
fn imsprobe_tcp_content_length_wrapping_to_zero_does_not_wedge_it() {
    imsprobe_tcp(Hostile::WrapToZero);
}

#[test]
fn imsprobe_tcp_content_length_of_a_terabyte_is_refused() {
    imsprobe_tcp(Hostile::Huge);
}
