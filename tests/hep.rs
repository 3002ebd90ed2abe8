//! `--hep`: what imsload and imsprobe mirror is what went over the wire. Real peers (Kamailio
//! from lab/kamailio, `imsload serve` as its own process), one dumpcap capture on `lo` of both
//! the SIP port and the HEP port, read back by tshark twice: the SIP datagrams as tshark's SIP
//! dissector sees them, and the HEP datagrams through `tests/common/hep3.lua` (tshark 4.0 has
//! no HEP dissector) into the same SIP dissector. The two multisets of (source, destination,
//! Call-ID, CSeq, status) must be equal, each copy stamped within milliseconds of the frame it
//! mirrors. With the collector's port closed a run gives what it gives without `--hep`, and
//! the report counts the refused copies.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IMSLOAD: &str = env!("CARGO_BIN_EXE_imsload");
const IMSPROBE: &str = env!("CARGO_BIN_EXE_imsprobe");
const LUA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/hep3.lua");

/// tshark and dumpcap present (else the test says why it skips; CI must have them).
fn tools_or_skip(test: &str) -> bool {
    for tool in ["tshark", "dumpcap"] {
        if Command::new(tool).arg("-v").output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "{tool} missing in CI");
            eprintln!("{test}: {tool} not installed (apt-get install tshark): skipped");
            return false;
        }
    }
    true
}

fn kamailio(users: usize) -> Kamailio {
    Kamailio::start(KamailioOpts {
        users,
        ..KamailioOpts::default()
    })
    .expect("start kamailio (see tests/common; .ci/run installs the packages)")
}

/// A UDP port with a reader behind it (so that no ICMP error turns our sends into errors),
/// which only empties its socket.
struct Collector {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Collector {
    fn start() -> Collector {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        // Room for a whole run's copies, should this thread not get a core for a while: the
        // test counts what arrives.
        socket2::SockRef::from(&s)
            .set_recv_buffer_size(4 << 20)
            .unwrap();
        let port = s.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut n = 0;
            while !st.load(Ordering::Relaxed) {
                if s.recv(&mut buf).is_ok() {
                    n += 1;
                }
            }
            n
        });
        Collector {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Datagrams received.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// A port that refuses (ICMP port unreachable for what goes there) and that nothing else can
/// take while the returned socket lives: it is bound, and connected elsewhere, so the kernel
/// delivers it nothing from anyone else. A port bound and then closed (as this was) is free
/// for any socket made after it, imsload's own included, and a run once mirrored 415 copies
/// with no refusal at all.
fn closed_port() -> (UdpSocket, u16) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect("127.0.0.1:1").unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

/// dumpcap on `lo` for the given UDP ports, until [`Capture::stop`].
struct Capture {
    child: Option<Child>,
    file: PathBuf,
}

impl Capture {
    fn start(dir: &Path, ports: &[u16]) -> Capture {
        let file = dir.join("lo.pcapng");
        let filter = ports
            .iter()
            .map(|p| format!("udp port {p}"))
            .collect::<Vec<_>>()
            .join(" or ");
        let child = dumpcap(&file, &filter, &["-B", "32"]);
        Capture {
            child: Some(child),
            file,
        }
    }

    fn stop(mut self) -> PathBuf {
        // The last datagrams reach the capture buffer before the stop.
        std::thread::sleep(Duration::from_millis(300));
        let c = self.child.take().unwrap();
        assert!(send_signal(c.id() as i32, SIGINT), "SIGINT dumpcap");
        let out = wait_bounded(c, Duration::from_secs(10), "dumpcap after SIGINT");
        // Its packet and drop counts, for when the comparison fails.
        eprintln!("dumpcap: {}", String::from_utf8_lossy(&out.stderr).trim());
        self.file.clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One SIP message: `src`, `dst` (ip:port), Call-ID, CSeq, status code or method.
type Key = (String, String, String, String, String);

/// `1764042462.220293292` (frame.time_epoch), or seconds + microseconds, as unix µs.
fn epoch_us(s: &str) -> i128 {
    let (a, b) = s.split_once('.').unwrap_or((s, "0"));
    let frac = format!("{b:0<6}");
    a.parse::<i128>().unwrap() * 1_000_000 + frac[..6].parse::<i128>().unwrap()
}

/// Every SIP datagram to or from `sip_port` in the capture: key → capture times (µs).
fn wire(pcap: &Path, sip_port: u16) -> BTreeMap<Key, Vec<i128>> {
    let dec = format!("udp.port=={sip_port},sip");
    let rows = tshark_fields(
        pcap,
        &["-d", &dec],
        &format!("sip && udp.port=={sip_port}"),
        &[
            "ip.src",
            "udp.srcport",
            "ip.dst",
            "udp.dstport",
            "sip.Call-ID",
            "sip.CSeq",
            "sip.Status-Code",
            "sip.Method",
            "frame.time_epoch",
        ],
    );
    let mut m: BTreeMap<Key, Vec<i128>> = BTreeMap::new();
    for r in rows {
        let what = if r[6].is_empty() { &r[7] } else { &r[6] };
        m.entry((
            format!("{}:{}", r[0], r[1]),
            format!("{}:{}", r[2], r[3]),
            r[4].clone(),
            r[5].clone(),
            what.clone(),
        ))
        .or_default()
        .push(epoch_us(&r[8]));
    }
    m
}

/// What the HEP copies in the capture say, decoded by hep3.lua and tshark's SIP dissector.
struct Mirrored {
    by_key: BTreeMap<Key, Vec<i128>>,
    datagrams: usize,
}

fn mirrored(pcap: &Path, hep_port: u16, capture_id: &str, node: &str, ip_proto: &str) -> Mirrored {
    let arg = format!("lua_script1:{hep_port}");
    let rows = tshark_fields(
        pcap,
        &["-X", &format!("lua_script:{LUA}"), "-X", &arg],
        "hep3",
        &[
            "hep3.src",
            "hep3.sport",
            "hep3.dst",
            "hep3.dport",
            "sip.Call-ID",
            "sip.CSeq",
            "sip.Status-Code",
            "sip.Method",
            "hep3.ts",
            "hep3.tus",
            "hep3.proto",
            "hep3.family",
            "hep3.ptype",
            "hep3.capid",
            "hep3.node",
            "hep3.cid",
            "hep3.bad",
        ],
    );
    let mut by_key: BTreeMap<Key, Vec<i128>> = BTreeMap::new();
    for r in &rows {
        assert!(r[16].is_empty(), "malformed HEP: {r:?}");
        assert_eq!(
            (&r[10][..], &r[11][..], &r[12][..], &r[13][..], &r[14][..]),
            (ip_proto, "2", "1", capture_id, node),
            "IP protocol, family, SIP, capture ID, node: {r:?}"
        );
        assert!(!r[4].is_empty(), "no SIP decoded from the payload: {r:?}");
        assert_eq!(r[15], r[4], "correlation ID = Call-ID: {r:?}");
        let what = if r[6].is_empty() { &r[7] } else { &r[6] };
        let us: i128 = r[8].parse::<i128>().unwrap() * 1_000_000 + r[9].parse::<i128>().unwrap();
        by_key
            .entry((
                format!("{}:{}", r[0], r[1]),
                format!("{}:{}", r[2], r[3]),
                r[4].clone(),
                r[5].clone(),
                what.clone(),
            ))
            .or_default()
            .push(us);
    }
    Mirrored {
        by_key,
        datagrams: rows.len(),
    }
}

/// The multisets are equal, and each copy's stamp is near its frame's capture time (paired in
/// order within a key: retransmissions and repeated CSeqs keep their order on both sides).
fn assert_same_traffic(wire: &BTreeMap<Key, Vec<i128>>, hep: &Mirrored, what: &str) {
    let count = |m: &BTreeMap<Key, Vec<i128>>| m.values().map(Vec::len).sum::<usize>();
    let missing: Vec<_> = wire
        .iter()
        .filter(|(k, v)| hep.by_key.get(*k).map_or(0, Vec::len) != v.len())
        .map(|(k, v)| (k, v.len(), hep.by_key.get(k).map_or(0, Vec::len)))
        .collect();
    let extra: Vec<_> = hep
        .by_key
        .keys()
        .filter(|k| !wire.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: HEP and wire differ ({} on the wire, {} mirrored)\n(key, on the wire, mirrored): {missing:#?}\nmirrored, never on the wire: {extra:#?}",
        count(wire),
        count(&hep.by_key)
    );
    assert_eq!(
        count(wire),
        hep.datagrams,
        "{what}: one HEP datagram per message"
    );
    let mut diffs: Vec<i128> = Vec::new();
    for (k, times) in wire {
        let mut a = times.clone();
        let mut b = hep.by_key[k].clone();
        a.sort();
        b.sort();
        diffs.extend(a.iter().zip(&b).map(|(w, h)| (h - w).abs()));
    }
    diffs.sort();
    let median = diffs[diffs.len() / 2];
    let max = *diffs.last().unwrap();
    // Same clock, by age: a send is stamped just before sendmmsg, a receive just after
    // recvmmsg; only a worker scheduled late moves a stamp, never by a second.
    assert!(
        median < 5_000 && max < 1_000_000,
        "{what}: HEP stamps vs capture: median {median} µs, max {max} µs"
    );
}

fn hep_stats(report: &Value) -> (u64, u64, u64) {
    let h = &report["hep"];
    let n = |k: &str| {
        h[k].as_u64()
            .unwrap_or_else(|| panic!("no hep.{k} in the report: {h}"))
    };
    (n("mirrored"), n("dropped"), n("send_errors"))
}

fn imsload(args: &[&str], report: &Path) -> (Value, String) {
    let child = Command::new(IMSLOAD)
        .args(args)
        .arg("--report")
        .arg(report)
        .arg("--quiet")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run imsload");
    let out = wait_bounded(child, Duration::from_secs(60), "imsload");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "imsload failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    (json(report), format!("{stdout}{stderr}"))
}

fn load_args(target: &str) -> Vec<String> {
    [
        "--target",
        target,
        "--users",
        "20",
        "--reg-rate",
        "50",
        "--cps",
        "10",
        "--calls",
        "20",
        "--hold",
        "300ms",
        "--duration",
        "10s",
        "--drain",
        "5s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn imsload_mirrors_every_sip_message_it_sends_and_receives_through_kamailio() {
    let _g = serial();
    if !tools_or_skip("imsload_mirrors_every_sip_message") {
        return;
    }
    let kam = kamailio(20);
    let dir = tempfile::tempdir().unwrap();
    let coll = Collector::start();
    let hep_port = coll.port;
    let cap = Capture::start(dir.path(), &[kam.addr().port(), hep_port]);
    let hep = format!("127.0.0.1:{}", coll.port);
    let mut args = load_args(&kam.addr().to_string());
    args.extend(
        [
            "--hep",
            &hep,
            "--hep-id",
            "4242",
            "--hep-node",
            "imsload-test",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (rep, out) = imsload(&args, &dir.path().join("r.json"));
    let pcap = cap.stop();
    let received = coll.finish();

    let c = &rep["counters"];
    assert_eq!(c["calls_completed"], 20, "{out}");
    assert_eq!(c["reg_ok"], 20, "{out}");
    let (mirrored_n, dropped, errors) = hep_stats(&rep);
    assert_eq!((dropped, errors), (0, 0), "{out}");
    let msgs = c["msgs_sent"].as_u64().unwrap() + c["msgs_received"].as_u64().unwrap();
    assert_eq!(
        mirrored_n, msgs,
        "one copy per message sent or received: {out}"
    );
    assert_eq!(received, mirrored_n, "the collector got every copy");
    assert!(out.contains(&format!("HEP → {hep} (capture ID 4242, node imsload-test): {mirrored_n} mirrored, 0 dropped, 0 send errors")), "{out}");

    let wire = wire(&pcap, kam.addr().port());
    // 20 × (REGISTER, 401, REGISTER, 200) and 20 calls of 7 messages each side of Kamailio,
    // de-registrations at the end: a floor the traffic must clear, not an estimate.
    let on_wire: usize = wire.values().map(Vec::len).sum();
    assert!(
        on_wire >= 80 + 20 * 14,
        "{on_wire} SIP datagrams on the wire"
    );
    assert_eq!(
        on_wire as u64, mirrored_n,
        "every message on the wire is ours"
    );
    let hep = mirrored(&pcap, hep_port, "4242", "imsload-test", "17");
    assert_same_traffic(&wire, &hep, "imsload");
}

/// A HEP collector over TCP: takes one connection and keeps every byte of it.
struct TcpCollector {
    port: u16,
    thread: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl TcpCollector {
    fn start() -> TcpCollector {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            use std::io::Read as _;
            let (mut c, _) = l.accept().expect("imsload connects to the HEP collector");
            // Read until imsload closes the connection (bounded: the test's own limit).
            c.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
            let mut got = Vec::new();
            let _ = c.read_to_end(&mut got);
            got
        });
        TcpCollector {
            port,
            thread: Some(thread),
        }
    }

    /// Everything received.
    fn finish(mut self) -> Vec<u8> {
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Cuts a HEP stream into its packets by their length fields (as a collector does) and writes
/// each as a UDP datagram to `port` in a pcap, for hep3.lua to read as it reads datagrams.
/// The number of packets.
fn hep_stream_as_pcap(stream: &[u8], port: u16, path: &Path) -> usize {
    let cap = pcap::Capture::dead(pcap::Linktype(12)).unwrap(); // DLT_RAW: IPv4, no link header
    let mut out = cap.savefile(path).unwrap();
    let mut off = 0;
    let mut n = 0;
    while off < stream.len() {
        assert_eq!(
            &stream[off..off + 4],
            b"HEP3",
            "HEP packet {n} at byte {off}"
        );
        let len = u16::from_be_bytes([stream[off + 4], stream[off + 5]]) as usize;
        let hep = &stream[off..off + len];
        let mut pkt = Vec::with_capacity(28 + len);
        let total = (28 + len) as u16;
        pkt.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
        ]);
        pkt.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
        let ulen = (8 + len) as u16;
        pkt.extend_from_slice(&40000u16.to_be_bytes());
        pkt.extend_from_slice(&port.to_be_bytes());
        pkt.extend_from_slice(&ulen.to_be_bytes());
        pkt.extend_from_slice(&[0, 0]);
        pkt.extend_from_slice(hep);
        let header = pcap::PacketHeader {
            ts: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            caplen: pkt.len() as u32,
            len: pkt.len() as u32,
        };
        out.write(&pcap::Packet::new(&header, &pkt));
        off += len;
        n += 1;
    }
    out.flush().unwrap();
    n
}

/// `--hep-transport tcp`: the same copies, back to back on one connection, each packet what
/// the datagram would have been; the multiset read from what the collector received equals
/// the SIP on the wire.
#[test]
fn imsload_mirrors_over_tcp_every_sip_message_through_kamailio() {
    let _g = serial();
    if !tools_or_skip("imsload_mirrors_over_tcp") {
        return;
    }
    let kam = kamailio(20);
    let dir = tempfile::tempdir().unwrap();
    let coll = TcpCollector::start();
    let cap = Capture::start(dir.path(), &[kam.addr().port()]);
    let hep = format!("127.0.0.1:{}", coll.port);
    let mut args = load_args(&kam.addr().to_string());
    args.extend(
        [
            "--hep",
            &hep,
            "--hep-transport",
            "tcp",
            "--hep-id",
            "4243",
            "--hep-node",
            "imsload-tcp",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (rep, out) = imsload(&args, &dir.path().join("r.json"));
    let pcap = cap.stop();
    let stream = coll.finish();

    let c = &rep["counters"];
    assert_eq!(c["calls_completed"], 20, "{out}");
    let (mirrored_n, dropped, errors) = hep_stats(&rep);
    assert_eq!((dropped, errors), (0, 0), "{out}");
    assert_eq!(rep["hep"]["transport"], "tcp");
    let msgs = c["msgs_sent"].as_u64().unwrap() + c["msgs_received"].as_u64().unwrap();
    assert_eq!(mirrored_n, msgs, "one copy per message sent or received");
    assert!(
        out.contains(&format!("HEP → {hep} over TCP (capture ID 4243")),
        "{out}"
    );
    let as_pcap = dir.path().join("hep-stream.pcap");
    let packets = hep_stream_as_pcap(&stream, coll_port_of(&hep), &as_pcap);
    assert_eq!(
        packets as u64, mirrored_n,
        "the collector got every copy, whole"
    );
    let wire = wire(&pcap, kam.addr().port());
    let hep = mirrored(&as_pcap, coll_port_of(&hep), "4243", "imsload-tcp", "17");
    assert_same_traffic(&wire, &hep, "imsload over TCP");
}

fn coll_port_of(hep: &str) -> u16 {
    hep.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[test]
fn imsload_with_its_collector_gone_runs_as_without_and_counts_the_refusals() {
    let _g = serial();
    let kam = kamailio(20);
    let dir = tempfile::tempdir().unwrap();
    let base = load_args(&kam.addr().to_string());
    let plain: Vec<&str> = base.iter().map(String::as_str).collect();
    let (without, _) = imsload(&plain, &dir.path().join("a.json"));
    assert!(without.get("hep").is_none(), "no hep section without --hep");

    let (_closed, port) = closed_port();
    let hep = format!("127.0.0.1:{port}");
    let mut with = base.clone();
    with.extend(["--hep".to_string(), hep.clone()]);
    let with: Vec<&str> = with.iter().map(String::as_str).collect();
    let (rep, out) = imsload(&with, &dir.path().join("b.json"));

    for k in [
        "reg_attempts",
        "reg_ok",
        "calls_attempted",
        "calls_completed",
        "calls_failed",
        "calls_timeout",
        "dereg_ok",
        "send_errors",
        "malformed",
    ] {
        assert_eq!(
            rep["counters"][k], without["counters"][k],
            "{k} with --hep to a closed port vs without: {out}"
        );
    }
    assert_eq!(rep["counters"]["calls_completed"], 20, "{out}");
    let (m, dropped, errors) = hep_stats(&rep);
    let c = &rep["counters"];
    let msgs = c["msgs_sent"].as_u64().unwrap() + c["msgs_received"].as_u64().unwrap();
    assert!(errors > 0, "refusals counted: {}", rep["hep"]);
    assert_eq!(
        m + dropped + errors,
        msgs,
        "every copy accounted for: {}",
        rep["hep"]
    );
    // Logged once, not per copy.
    assert_eq!(out.matches("HEP to").count(), 1, "{out}");
    assert!(
        rep["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("HEP:")),
        "{}",
        rep["warnings"]
    );
}

/// `imsload serve` as the probe's peer, in its own process.
struct Serve {
    child: Option<Child>,
    port: u16,
}

impl Serve {
    fn start() -> Serve {
        let port = free_port().unwrap();
        let child = Command::new(IMSLOAD)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run imsload serve");
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let t0 = Instant::now();
        while options_ping(addr, Duration::from_millis(200)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "imsload serve did not answer"
            );
        }
        Serve {
            child: Some(child),
            port,
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn probe(target: &str, hep: &str, out: &Path) -> (Value, String) {
    let child = Command::new(IMSPROBE)
        .args([
            "--target",
            target,
            "--sip",
            "--rate",
            "50",
            "--duration",
            "2s",
            "--no-capture",
            "--no-plot",
            "--quiet",
            "--hep",
            hep,
            "--hep-node",
            "probe-test",
        ])
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run imsprobe");
    let o = wait_bounded(child, Duration::from_secs(30), "imsprobe");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "imsprobe failed: {text}");
    (json(&out.join("report.json")), text)
}

#[test]
fn imsprobe_mirrors_its_options_and_the_replies_and_survives_a_closed_collector() {
    let _g = serial();
    if !tools_or_skip("imsprobe_mirrors_its_options") {
        return;
    }
    let serve = Serve::start();
    let target = format!("127.0.0.1:{}", serve.port);
    let dir = tempfile::tempdir().unwrap();
    let coll = Collector::start();
    let hep_port = coll.port;
    let cap = Capture::start(dir.path(), &[serve.port, hep_port]);
    let hep = format!("127.0.0.1:{}", coll.port);
    let (rep, text) = probe(&target, &hep, &dir.path().join("a"));
    let pcap = cap.stop();
    let received = coll.finish();

    let sip = layer(&rep, "sip");
    let sent = sip["summary"]["sent"].as_u64().unwrap();
    let ok = sip["summary"]["ok"].as_u64().unwrap();
    assert!(sent >= 90 && ok == sent, "{text}");
    let (m, dropped, errors) = hep_stats(&rep);
    assert_eq!((m, dropped, errors), (sent + ok, 0, 0), "{text}");
    assert_eq!(received, m);
    assert!(text.contains(&format!("{m} mirrored, 0 dropped")), "{text}");
    let wire = wire(&pcap, serve.port);
    let hep = mirrored(&pcap, hep_port, "2001", "probe-test", "17");
    assert_same_traffic(&wire, &hep, "imsprobe");

    // The collector gone: the probe measures the same (every probe answered), copies refused
    // are counted, logged once.
    let (_closed, port) = closed_port();
    let (rep, text) = probe(&target, &format!("127.0.0.1:{port}"), &dir.path().join("b"));
    let sip = layer(&rep, "sip");
    assert_eq!(sip["summary"]["ok"], sip["summary"]["sent"], "{text}");
    assert!(sip["summary"]["sent"].as_u64().unwrap() >= 90, "{text}");
    let (m, dropped, errors) = hep_stats(&rep);
    assert!(errors > 0, "{}", rep["hep"]);
    assert_eq!(
        m + dropped + errors,
        2 * sip["summary"]["sent"].as_u64().unwrap()
    );
    assert_eq!(text.matches("HEP to").count(), 1, "{text}");
}
