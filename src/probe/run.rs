//! One live run: sockets, capture, receivers, pacers, live gap output, the stop path and the
//! files. Threads, not async: the pacer needs an OS thread of its own, receivers block in
//! `recvmsg` (kernel timestamps make their scheduling irrelevant), capture blocks in libpcap.
//!
//! Stop path: the pacers end at the deadline or when the [`Trigger`] fires (Ctrl-C); replies are
//! then awaited for `timeout` (less when every probe is answered), receivers and captures are
//! stopped, the pcap file is flushed, and the JSON, CSV, SVG and PNG are written.

use super::analysis::{self, LayerAnalysis, Params};
use super::capture::{self, CaptureHandle, CaptureInfo};
use super::diameter::{DiaCodec, DiaReply, DiameterFramer, DIAMETER_SUCCESS};
use super::icmp::{self, EchoCodec, IcmpReply};
use super::live::Live;
use super::net::{self, IcmpSocket, ProbeClock};
use super::pacer::{self, PacerConfig, PacerStats};
use super::report::{self, Files, LayerOut, ParamsOut, Report, TargetOut};
use super::sipcodec::{OptionsCodec, Reply};
use super::table::{Completion, LayerTable};
use super::targets::Target;
use super::tcp::{self, TcpLink};
use super::{Arrival, Layer, Outcome};
use crate::shutdown::{StopReason, Trigger};
use socket2::Socket;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub targets: Vec<Target>,
    /// The layers chosen for every target; empty: each target's own ([`Target::layers`]).
    pub layers: Vec<Layer>,
    /// Origin-Realm of the Diameter probe.
    pub diameter_realm: String,
    /// Probes per second per layer.
    pub rate: f64,
    pub duration: Option<Duration>,
    pub timeout: Duration,
    pub late_rtt: Duration,
    pub min_gap: Duration,
    /// Output directory; with several targets each gets a subdirectory. Default
    /// `captures/<timestamp>-<target>/`.
    pub out: Option<PathBuf>,
    pub capture: bool,
    pub iface: Option<String>,
    pub spin: Duration,
    pub rt_priority: Option<i32>,
    pub plot: bool,
    pub quiet: bool,
    /// `--metrics`: a page a second while the run goes on.
    pub metrics: Option<Arc<super::metrics::Exporter>>,
    /// `--hep`: mirror each target's SIP probe to a Homer collector (one sender per target).
    pub hep: Option<crate::hep::mirror::HepConfig>,
}

pub struct TargetResult {
    pub target: Target,
    pub dir: PathBuf,
    pub report: Report,
}

/// Logs a line on stderr with the wall-clock time.
fn log(clock: &ProbeClock, msg: &str) {
    eprintln!("[{}] {msg}", clock.time_base().label(clock.now_ns()));
}

/// The SIP socket of a target.
#[derive(Clone)]
enum SipSock {
    Udp(Arc<Socket>),
    Tcp(Arc<TcpLink>),
}

struct SipIo {
    table: Arc<LayerTable>,
    sock: SipSock,
    codec: Arc<OptionsCodec>,
    /// Kernel receive timestamps (UDP with SO_TIMESTAMPNS).
    timestamps: bool,
    /// Our `ip:port` (the first connection's, for TCP).
    local: String,
}

struct IcmpIo {
    table: Arc<LayerTable>,
    socket: Arc<IcmpSocket>,
    codec: Arc<EchoCodec>,
}

/// The Diameter connection of a target (the HSS's Cx peer port).
struct DiaIo {
    table: Arc<LayerTable>,
    link: Arc<TcpLink>,
    codec: Arc<DiaCodec>,
}

struct TargetRun {
    target: Target,
    dir: PathBuf,
    sip: Option<SipIo>,
    icmp: Option<IcmpIo>,
    diameter: Option<DiaIo>,
    capture: Option<CaptureHandle>,
    capture_info: Option<CaptureInfo>,
    warnings: Vec<String>,
    answered: Arc<AtomicU64>,
    hep: Option<(crate::hep::mirror::Mirror, super::hep::SipMirror)>,
}

impl TargetRun {
    /// The record tables of the layers this target probes.
    fn tables(&self) -> impl Iterator<Item = &Arc<LayerTable>> {
        [
            self.sip.as_ref().map(|s| &s.table),
            self.icmp.as_ref().map(|s| &s.table),
            self.diameter.as_ref().map(|s| &s.table),
        ]
        .into_iter()
        .flatten()
    }
}

fn out_dir(cfg: &RunConfig, t: &Target, clock: &ProbeClock) -> PathBuf {
    match &cfg.out {
        Some(d) if cfg.targets.len() == 1 => d.clone(),
        Some(d) => d.join(t.path_name()),
        None => PathBuf::from("captures").join(format!(
            "{}-{}",
            crate::clock::stamp_for_path(clock.epoch.wall),
            t.path_name()
        )),
    }
}

fn setup_target(
    cfg: &RunConfig,
    t: &Target,
    clock: &ProbeClock,
    run_id: u32,
) -> anyhow::Result<TargetRun> {
    let dir = out_dir(cfg, t, clock);
    std::fs::create_dir_all(&dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create output directory {}: {e} (choose another with --out DIR)",
            dir.display()
        )
    })?;
    let mut warnings = Vec::new();
    let layers = t.layers(&cfg.layers);
    let mut sip = None;
    let mut hep = None;
    if layers.contains(&Layer::Sip) {
        let (sock, local, timestamps) = match t.transport {
            crate::sip::Transport::Udp => {
                let (socket, timestamps) = net::sip_udp_socket(t.addr).map_err(|e| {
                    anyhow::anyhow!(
                        "target {}: cannot open a UDP socket to {}: {e}",
                        t.name,
                        t.addr
                    )
                })?;
                let local = socket.local_addr().ok().and_then(|a| a.as_socket());
                if !timestamps {
                    warnings.push(
                        "SIP: the kernel refused SO_TIMESTAMPNS; receive times are userspace readings"
                            .into(),
                    );
                }
                (SipSock::Udp(Arc::new(socket)), local, timestamps)
            }
            crate::sip::Transport::Tcp => {
                let link = TcpLink::open(t.addr, Duration::from_secs(2)).map_err(|e| {
                    anyhow::anyhow!(
                        "target {}: cannot connect over TCP to {}: {e} (is a SIP server listening on TCP there? --transport udp probes over UDP)",
                        t.name,
                        t.addr
                    )
                })?;
                let local = link.local_addr();
                (SipSock::Tcp(Arc::new(link)), local, false)
            }
        };
        let local_addr = local;
        let local = local
            .map(|a| a.to_string())
            .unwrap_or_else(|| "0.0.0.0:0".into());
        let target_str = t.addr.to_string();
        if let Some(h) = &cfg.hep {
            let m = crate::hep::mirror::Mirror::start(h, &format!("imsprobe {}", t.name))?;
            let sm = match &sock {
                SipSock::Udp(_) => super::hep::SipMirror::udp(
                    m.tap(),
                    t.addr,
                    local_addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                    *clock,
                ),
                SipSock::Tcp(l) => super::hep::SipMirror::tcp(m.tap(), l.clone(), *clock),
            };
            hep = Some((m, sm));
        }
        sip = Some(SipIo {
            table: Arc::new(LayerTable::new(Layer::Sip)),
            sock,
            codec: Arc::new(OptionsCodec::new(run_id, t.transport, &target_str, &local)),
            timestamps,
            local,
        });
    }
    let mut icmp_io = None;
    if layers.contains(&Layer::Icmp) {
        match net::icmp_socket(t.host()) {
            Ok(s) => {
                if !s.timestamps {
                    warnings.push("ICMP: the kernel refused SO_TIMESTAMPNS; receive times are userspace readings".into());
                }
                icmp_io = Some(IcmpIo {
                    table: Arc::new(LayerTable::new(Layer::Icmp)),
                    codec: Arc::new(EchoCodec {
                        id: (run_id as u16) ^ (std::process::id() as u16),
                        token: ((run_id as u64) << 32) | rand::random::<u32>() as u64,
                        target: t.host(),
                    }),
                    socket: Arc::new(s),
                });
            }
            Err(msg) => {
                log(clock, &format!("{}: {msg}", t.name));
                warnings.push(msg);
            }
        }
    }
    let mut diameter = None;
    if layers.contains(&Layer::Diameter) {
        let addr = t.diameter_addr();
        // CER's Host-IP-Address: the address the kernel will use towards the peer.
        let local_ip = net::local_addr_towards(addr)
            .map(|a| a.ip())
            .unwrap_or(addr.ip());
        let codec = DiaCodec::new(
            run_id,
            local_ip,
            &cfg.diameter_realm,
            t.diameter_request.clone(),
        );
        let link = TcpLink::open_with_greeting(addr, Duration::from_secs(2), codec.cer()).map_err(
            |e| {
                anyhow::anyhow!(
                    "target {}: cannot connect to a Diameter peer at {addr}: {e} (is the HSS \
                     listening there? set diameter_port in the targets file, or --diameter-port)",
                    t.name
                )
            },
        )?;
        diameter = Some(DiaIo {
            table: Arc::new(LayerTable::new(Layer::Diameter)),
            link: Arc::new(link),
            codec: Arc::new(codec),
        });
    }
    if sip.is_none() && icmp_io.is_none() && diameter.is_none() {
        anyhow::bail!(
            "target {}: no probe can run (SIP not selected and ICMP not available: {})",
            t.name,
            warnings.join("; ")
        );
    }
    let mut capture = None;
    let mut capture_info = None;
    if cfg.capture {
        let iface = cfg
            .iface
            .clone()
            .unwrap_or_else(|| capture::interface_towards(t.host()));
        let path = dir.join("capture.pcap");
        let scope = capture::Scope {
            sip: sip
                .as_ref()
                .map(|s| (t.addr.port(), matches!(s.sock, SipSock::Tcp(_)))),
            icmp: icmp_io.as_ref().map(|i| i.socket.raw.then_some(i.codec.id)),
            diameter_port: diameter.as_ref().map(|_| t.diameter_port),
        };
        match capture::start(&iface, &capture::filter(t.host(), &scope), &path) {
            Ok(h) => capture = Some(h),
            Err(msg) => {
                log(clock, &format!("{}: {msg}", t.name));
                warnings.push(msg.clone());
                capture_info = Some(CaptureInfo {
                    interface: iface,
                    error: Some(msg),
                    ..CaptureInfo::default()
                });
            }
        }
    }
    Ok(TargetRun {
        target: t.clone(),
        dir,
        sip,
        icmp: icmp_io,
        diameter,
        capture,
        capture_info,
        warnings,
        answered: Arc::new(AtomicU64::new(0)),
        hep,
    })
}

/// Logs the first occurrence of each kind of oddity.
fn once(
    table: &LayerTable,
    clock: &ProbeClock,
    target: &str,
    kind: &str,
    detail: impl FnOnce() -> String,
) {
    let first = table.count(|c| {
        let e = c
            .receive_errors
            .entry(format!("logged:{kind}"))
            .or_default();
        *e += 1;
        *e == 1
    });
    if first {
        log(
            clock,
            &format!(
                "{target} {}: {kind}: {} (logged once; counted in the report)",
                table.layer.as_str(),
                detail()
            ),
        );
    }
}

/// The receive time of a datagram read at `at`: its kernel stamp, converted by its age, when
/// there is one and it is plausible; otherwise the read itself (counted either way).
fn kernel_or_now(
    table: &LayerTable,
    clock: &ProbeClock,
    ts: Option<(i64, i64)>,
    at: &net::ReadMoment,
) -> i64 {
    let mapped = ts.map(|(s, n)| clock.map_kernel_stamp(s, n, at));
    match mapped {
        Some(net::KernelStamp::At(t)) => {
            table.kernel_timestamps.fetch_add(1, Ordering::Relaxed);
            t
        }
        Some(_) => {
            // The realtime clock stepped between the arrival and the read.
            table.clock_steps.fetch_add(1, Ordering::Relaxed);
            table.timestamp_fallbacks.fetch_add(1, Ordering::Relaxed);
            at.t
        }
        None => {
            table.timestamp_fallbacks.fetch_add(1, Ordering::Relaxed);
            at.t
        }
    }
}

/// Datagram receivers read in batches: after draining their socket they sleep this long before
/// they wait for the next datagram, so at 10 kHz a receiver wakes about 1000 times per second
/// instead of 10000 (each wake-up of a sleeping thread costs more than reading ten datagrams).
/// Only with kernel receive timestamps, which keep the arrival times whenever the batch is read;
/// with userspace readings a receiver reads each datagram as it comes.
pub const BATCH_NS: u64 = 1_000_000;
/// Timer slack of batching receivers: their wake-up may be merged with another timer's.
const BATCH_SLACK_NS: u64 = 100_000;
/// Datagrams per `recvmmsg`.
const BATCH_SLOTS: usize = 32;

/// Everything a receiver needs to record what it read.
struct Sink {
    table: Arc<LayerTable>,
    clock: ProbeClock,
    name: String,
    answered: Arc<AtomicU64>,
}

impl Sink {
    fn receive_error(&self, e: &std::io::Error, hint: &str) {
        let kind = format!("receive error {e}");
        self.table
            .count(|c| *c.receive_errors.entry(kind.clone()).or_default() += 1);
        once(&self.table, &self.clock, &self.name, &kind, || {
            hint.to_string()
        });
    }

    fn sip(&self, codec: &OptionsCodec, msg: &[u8], at: Arrival) {
        let (table, clock, name) = (&self.table, &self.clock, &self.name);
        match codec.classify(msg) {
            Reply::Final { seq, code } => {
                let outcome = if (200..300).contains(&code) {
                    Outcome::Ok
                } else {
                    Outcome::Failed
                };
                if table.complete(seq, at, outcome, code) == Completion::Fresh {
                    self.answered.fetch_add(1, Ordering::Relaxed);
                }
                if outcome == Outcome::Failed {
                    once(table, clock, name, &format!("status {code}"), || {
                        "a non-2xx final response counts as a failed probe".into()
                    });
                }
            }
            Reply::Provisional { .. } => table.count(|c| c.provisional += 1),
            Reply::Foreign(k) => {
                table.count(|c| *c.foreign.entry(k.as_str()).or_default() += 1);
                once(table, clock, name, k.as_str(), || {
                    format!(
                        "a message that answers none of our probes: {:?}",
                        preview(msg)
                    )
                });
            }
            Reply::Malformed(k) => {
                table.count(|c| *c.malformed.entry(k.as_str()).or_default() += 1);
                once(
                    table,
                    clock,
                    name,
                    &format!("malformed {}", k.as_str()),
                    || format!("{:?}", preview(msg)),
                );
            }
        }
    }

    fn diameter(&self, codec: &DiaCodec, link: &TcpLink, msg: &[u8], at: Arrival) {
        let (table, clock, name) = (&self.table, &self.clock, &self.name);
        match codec.classify(msg, table.len().saturating_sub(1)) {
            DiaReply::Answer { seq, result, ok } => {
                let outcome = if ok { Outcome::Ok } else { Outcome::Failed };
                let code = result.min(u16::MAX as u32) as u16;
                if table.complete(seq, at, outcome, code) == Completion::Fresh {
                    self.answered.fetch_add(1, Ordering::Relaxed);
                }
                if outcome == Outcome::Failed {
                    once(table, clock, name, &format!("result {result}"), || {
                        format!(
                            "an answer to our {} without a success result counts as a failed probe",
                            codec.request().describe()
                        )
                    });
                }
            }
            DiaReply::Capabilities { result } => {
                table.count(|c| *c.capabilities_answers.entry(result).or_default() += 1);
                if result != DIAMETER_SUCCESS {
                    once(table, clock, name, &format!("CEA {result}"), || {
                        format!("the peer refused our CER (Result-Code {result}); it may close the connection")
                    });
                }
            }
            DiaReply::PeerRequest { command, answer } => {
                table.count(|c| c.peer_requests += 1);
                link.queue_reply(&answer);
                once(
                    table,
                    clock,
                    name,
                    &format!("peer request {command}"),
                    || "the peer sent a request; it is answered ahead of the next probe".into(),
                );
            }
            DiaReply::Foreign(k) => {
                table.count(|c| *c.foreign.entry(k).or_default() += 1);
            }
            DiaReply::Malformed(k) => {
                table.count(|c| *c.malformed.entry(k).or_default() += 1);
                once(table, clock, name, "malformed diameter", || {
                    format!("{} bytes", msg.len())
                });
            }
        }
    }

    fn icmp(&self, codec: &EchoCodec, raw: bool, pkt: &[u8], at: Arrival) {
        let (table, clock, name) = (&self.table, &self.clock, &self.name);
        match codec.classify_from(pkt, raw) {
            IcmpReply::Echo { seq } => {
                if table.complete(seq, at, Outcome::Ok, 0) == Completion::Fresh {
                    self.answered.fetch_add(1, Ordering::Relaxed);
                }
            }
            IcmpReply::Error { kind, seq16 } => {
                if let Some(seq) = icmp::widen_seq16(table.len().saturating_sub(1), seq16) {
                    if table.complete(seq, at, Outcome::Failed, kind as u16) == Completion::Fresh {
                        self.answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                once(
                    table,
                    clock,
                    name,
                    &format!("icmp error type {kind}"),
                    || "an ICMP error about our echo counts as a failed probe".into(),
                );
            }
            IcmpReply::Foreign => {
                // Raw sockets see every ICMP packet of the host: not worth a log line.
                table.count(|c| *c.foreign.entry("not_ours").or_default() += 1);
            }
            IcmpReply::Malformed => {
                table.count(|c| *c.malformed.entry("icmp").or_default() += 1);
                once(table, clock, name, "malformed icmp", || {
                    format!("{} bytes", pkt.len())
                });
            }
        }
    }
}

/// The datagram receive loop: wait for the socket, drain it with `recvmmsg`, hand every
/// datagram with its receive time to `handle`, then (when batching) sleep [`BATCH_NS`].
fn datagram_loop(
    socket: &Socket,
    slot_len: usize,
    batch_ns: u64,
    stop: &AtomicBool,
    sink: &Sink,
    error_hint: &str,
    mut handle: impl FnMut(&[u8], Arrival),
) {
    use std::os::fd::AsRawFd;
    if batch_ns > 0 {
        pacer::set_timer_slack(BATCH_SLACK_NS);
    }
    let mut batch = net::RecvBatch::new(BATCH_SLOTS, slot_len);
    while !stop.load(Ordering::Relaxed) {
        match net::wait_readable(socket.as_raw_fd(), 50) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                sink.receive_error(&e, error_hint);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        }
        loop {
            let n = match batch.recv(socket) {
                Ok(n) => n,
                Err(e) => {
                    sink.receive_error(&e, error_hint);
                    break;
                }
            };
            let at = sink.clock.read_moment();
            for i in 0..n {
                let ts = batch.stamp(i);
                handle(
                    batch.get(i).0,
                    Arrival::exact(kernel_or_now(&sink.table, &sink.clock, ts, &at)),
                );
            }
            if n < BATCH_SLOTS {
                break;
            }
        }
        if batch_ns > 0 {
            net::sleep_until_mono(crate::clock::monotonic_ns() + batch_ns);
        }
    }
}

fn spawn_sip_receiver(
    io: &SipIo,
    rt: Option<i32>,
    sink: Sink,
    stop: Arc<AtomicBool>,
    batch_ns: u64,
    hep: Option<super::hep::SipMirror>,
) -> JoinHandle<()> {
    let codec = io.codec.clone();
    let handle = move |sink: &Sink, msg: &[u8], at: Arrival| {
        if let Some(h) = &hep {
            h.received(at.at_ns, msg);
        }
        sink.sip(&codec, msg, at)
    };
    let sock = io.sock.clone();
    let timestamps = io.timestamps;
    std::thread::Builder::new()
        .name("imsprobe-sip-rx".into())
        .spawn(move || {
            // Same priority as the pacer: it shares the record table's lock with us, and must
            // never wait for a receiver that the scheduler preempted while holding it.
            pacer::tune_thread(rt);
            match sock {
                SipSock::Udp(socket) => datagram_loop(
                    &socket,
                    64 * 1024,
                    if timestamps { batch_ns } else { 0 },
                    &stop,
                    &sink,
                    "the target's host answered with an ICMP error (no SIP server on that port?)",
                    |msg, at| handle(&sink, msg, at),
                ),
                SipSock::Tcp(link) => tcp_loop(
                    &link,
                    &stop,
                    &sink,
                    crate::sip::transport::StreamFramer::default(),
                    |msg, at| handle(&sink, msg, at),
                ),
            }
        })
        .expect("spawn SIP receiver thread")
}

fn spawn_diameter_receiver(
    io: &DiaIo,
    rt: Option<i32>,
    sink: Sink,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let (codec, link) = (io.codec.clone(), io.link.clone());
    std::thread::Builder::new()
        .name("imsprobe-dia-rx".into())
        .spawn(move || {
            pacer::tune_thread(rt);
            tcp_loop(&link, &stop, &sink, DiameterFramer::default(), |msg, at| {
                sink.diameter(&codec, &link, msg, at)
            })
        })
        .expect("spawn Diameter receiver thread")
}

/// How a TCP probe stream is cut into messages (SIP: Content-Length; Diameter: the header's
/// length).
trait Frames: Default {
    fn push(&mut self, data: &[u8]);
    fn next_message(&mut self) -> Result<Option<&[u8]>, String>;
}

impl Frames for crate::sip::transport::StreamFramer {
    fn push(&mut self, data: &[u8]) {
        crate::sip::transport::StreamFramer::push(self, data)
    }
    fn next_message(&mut self) -> Result<Option<&[u8]>, String> {
        crate::sip::transport::StreamFramer::next_message(self).map_err(|e| e.to_string())
    }
}

impl Frames for DiameterFramer {
    fn push(&mut self, data: &[u8]) {
        DiameterFramer::push(self, data)
    }
    fn next_message(&mut self) -> Result<Option<&[u8]>, String> {
        DiameterFramer::next_message(self).map_err(|e| e.to_string())
    }
}

/// The TCP receive loop: read, frame, hand each message to `handle`; on loss, reconnect at most
/// every [`tcp::RECONNECT_EVERY_NS`]. Receive time: CLOCK_MONOTONIC just after `recv()`
/// returned, with the reader's measured lateness ([`tcp::Lateness`]).
fn tcp_loop<F: Frames>(
    link: &TcpLink,
    stop: &AtomicBool,
    sink: &Sink,
    mut framer: F,
    mut handle: impl FnMut(&[u8], Arrival),
) {
    use crate::clock::monotonic_ns;
    use tcp::Read;
    let clock = &sink.clock;
    let name = &sink.name;
    let layer = sink.table.layer.as_str();
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen_gen = link.generation();
    let mut next_attempt = 0u64;
    let mut down_since: Option<i64> = None;
    let mut late = tcp::Lateness::new();
    if !late.measured() {
        once(&sink.table, clock, name, "tcp lateness unmeasured", || {
            "this kernel offers no /proc/thread-self/schedstat: the error bound of a TCP reply gap leaves out how long the receiver waited for a CPU".into()
        });
    }
    while !stop.load(Ordering::Relaxed) {
        let (gen, conn) = link.current();
        if gen != seen_gen {
            framer = Default::default();
            seen_gen = gen;
            late.restart();
        }
        let Some(s) = conn else {
            let now = clock.now_ns();
            if down_since.is_none() {
                down_since = Some(now);
                let why = link
                    .stats()
                    .loss_reasons
                    .keys()
                    .last()
                    .cloned()
                    .unwrap_or_default();
                log(
                    clock,
                    &format!(
                        "{name} {layer}: TCP connection to {} lost ({why}); probes count as lost until it is back; reconnecting every {} ms",
                        link.target,
                        tcp::RECONNECT_EVERY_NS / 1_000_000
                    ),
                );
            }
            let mono = monotonic_ns();
            if mono < next_attempt {
                net::sleep_until_mono(next_attempt.min(mono + 50_000_000));
                continue;
            }
            next_attempt = mono + tcp::RECONNECT_EVERY_NS;
            match link.reconnect() {
                Ok(()) => {
                    let st = link.stats();
                    log(
                        clock,
                        &format!(
                            "{name} {layer}: TCP reconnected to {} after {:.1} ms (reconnect {}, local {})",
                            link.target,
                            (clock.now_ns() - down_since.unwrap_or(now)) as f64 / 1e6,
                            st.reconnects,
                            link.local_addr().map(|a| a.to_string()).unwrap_or_default()
                        ),
                    );
                    down_since = None;
                }
                Err(e) => {
                    let kind = format!("tcp reconnect failed: {}", e.kind());
                    once(&sink.table, clock, name, &kind, || e.to_string());
                }
            }
            continue;
        };
        match tcp::read_some(&s, &mut buf, 50, &mut late) {
            Ok(Read::Nothing) => {}
            Ok(Read::Closed) => {
                link.mark_down(gen, "closed by the target");
            }
            Err(e) => {
                link.mark_down(gen, &format!("receive: {e}"));
            }
            Ok(Read::Data(n, early_ns)) => {
                let at = Arrival {
                    at_ns: clock.now_ns(),
                    early_ns,
                };
                framer.push(&buf[..n]);
                loop {
                    match framer.next_message() {
                        Ok(Some(msg)) => handle(msg, at),
                        Ok(None) => break,
                        Err(e) => {
                            sink.table
                                .count(|c| *c.malformed.entry("tcp_framing").or_default() += 1);
                            once(&sink.table, clock, name, "tcp framing error", || {
                                format!("{e}; the connection is dropped and made again")
                            });
                            link.mark_down(gen, "framing error");
                            break;
                        }
                    }
                }
            }
        }
    }
}

fn preview(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(60)]).into_owned()
}

fn spawn_icmp_receiver(
    io: &IcmpIo,
    rt: Option<i32>,
    sink: Sink,
    stop: Arc<AtomicBool>,
    batch_ns: u64,
) -> JoinHandle<()> {
    let (socket, codec) = (io.socket.clone(), io.codec.clone());
    std::thread::Builder::new()
        .name("imsprobe-icmp-rx".into())
        .spawn(move || {
            pacer::tune_thread(rt);
            let raw = socket.raw;
            datagram_loop(
                &socket.socket,
                2048,
                if socket.timestamps { batch_ns } else { 0 },
                &stop,
                &sink,
                "",
                |pkt, at| sink.icmp(&codec, raw, pkt, at),
            )
        })
        .expect("spawn ICMP receiver thread")
}

/// The pacer's way to send SIP.
enum SipTx {
    Udp(Arc<Socket>),
    Tcp(tcp::TcpSender),
}

/// The SIP probe's table, socket, codec and (`--hep`) mirror.
type SipPacing = (
    Arc<LayerTable>,
    SipTx,
    Arc<OptionsCodec>,
    Option<super::hep::SipMirror>,
);

struct Pacing {
    sip: Option<SipPacing>,
    icmp: Option<(Arc<LayerTable>, Arc<IcmpSocket>, Arc<EchoCodec>)>,
    diameter: Option<(Arc<LayerTable>, tcp::TcpSender, Arc<DiaCodec>)>,
}

fn spawn_pacer(
    pacing: Pacing,
    cfg: PacerConfig,
    clock: ProbeClock,
    stop: Arc<AtomicBool>,
) -> JoinHandle<PacerStats> {
    std::thread::Builder::new()
        .name("imsprobe-pacer".into())
        .spawn(move || {
            let mut pacing = pacing;
            let mut sip_seq = 0u64;
            let mut icmp_seq = 0u64;
            let mut dia_seq = 0u64;
            // One buffer for every OPTIONS (and one for every DWR or UAR), written from templates.
            let mut msg = Vec::with_capacity(1024);
            let mut dwr = Vec::with_capacity(512);
            pacer::run(&cfg, &stop, |_k, _due| {
                if let Some((table, tx, codec, hep)) = &mut pacing.sip {
                    codec.write_request(sip_seq, &mut msg);
                    let sent = table.push_sent_now(sip_seq, || clock.now_ns());
                    let r = match tx {
                        SipTx::Udp(socket) => net::send_nonblocking(socket, &msg),
                        SipTx::Tcp(sender) => sender.send(&msg),
                    };
                    match (r, hep) {
                        (Err(errno), _) => table.mark_send_error(sip_seq, errno),
                        (Ok(()), Some(h)) => h.sent(sent, &msg),
                        (Ok(()), None) => {}
                    }
                    sip_seq += 1;
                }
                if let Some((table, socket, codec)) = &pacing.icmp {
                    let pkt = codec.request(icmp_seq);
                    table.push_sent_now(icmp_seq, || clock.now_ns());
                    if let Err(errno) = net::send_nonblocking(&socket.socket, &pkt) {
                        table.mark_send_error(icmp_seq, errno);
                    }
                    icmp_seq += 1;
                }
                if let Some((table, tx, codec)) = &mut pacing.diameter {
                    codec.write_request(dia_seq, &mut dwr);
                    table.push_sent_now(dia_seq, || clock.now_ns());
                    if let Err(errno) = tx.send(&dwr) {
                        table.mark_send_error(dia_seq, errno);
                    }
                    dia_seq += 1;
                }
            })
        })
        .expect("spawn pacer thread")
}

/// Runs the probes until `trigger` fires or the duration ends, and writes every file.
pub fn run(cfg: &RunConfig, trigger: &Trigger) -> anyhow::Result<Vec<TargetResult>> {
    run_with_clock(cfg, trigger, ProbeClock::start())
}

/// [`run`] on a clock the caller made, so that it can place its own events (a migration
/// command's start and end) on the probes' time base exactly.
pub fn run_with_clock(
    cfg: &RunConfig,
    trigger: &Trigger,
    clock: ProbeClock,
) -> anyhow::Result<Vec<TargetResult>> {
    anyhow::ensure!(
        cfg.rate > 0.0 && cfg.rate <= 100_000.0,
        "--rate must be in (0, 100000] per second"
    );
    let interval_ns = (1e9 / cfg.rate).round() as i64;
    let run_id: u32 = rand::random();
    let mut runs = Vec::new();
    for (i, t) in cfg.targets.iter().enumerate() {
        runs.push(setup_target(cfg, t, &clock, run_id.wrapping_add(i as u32))?);
    }

    let rx_stop = Arc::new(AtomicBool::new(false));
    let mut receivers = Vec::new();
    for r in &runs {
        if let Some(s) = &r.sip {
            let sink = Sink {
                table: s.table.clone(),
                clock,
                name: r.target.name.clone(),
                answered: r.answered.clone(),
            };
            receivers.push(spawn_sip_receiver(
                s,
                cfg.rt_priority,
                sink,
                rx_stop.clone(),
                BATCH_NS,
                r.hep.as_ref().map(|h| h.1.clone()),
            ));
        }
        if let Some(s) = &r.icmp {
            let sink = Sink {
                table: s.table.clone(),
                clock,
                name: r.target.name.clone(),
                answered: r.answered.clone(),
            };
            receivers.push(spawn_icmp_receiver(
                s,
                cfg.rt_priority,
                sink,
                rx_stop.clone(),
                BATCH_NS,
            ));
        }
        if let Some(s) = &r.diameter {
            let sink = Sink {
                table: s.table.clone(),
                clock,
                name: r.target.name.clone(),
                answered: r.answered.clone(),
            };
            receivers.push(spawn_diameter_receiver(
                s,
                cfg.rt_priority,
                sink,
                rx_stop.clone(),
            ));
        }
    }

    // Start on a common schedule a little ahead, so captures and receivers are ready.
    let start_t = clock.now_ns() + 20_000_000;
    let pacer_stop = Arc::new(AtomicBool::new(false));
    let pcfg = PacerConfig {
        interval_ns: interval_ns as u64,
        start_mono_ns: clock.mono_abs(start_t),
        deadline_mono_ns: cfg
            .duration
            .map(|d| clock.mono_abs(start_t + d.as_nanos() as i64)),
        spin_ns: cfg.spin.as_nanos() as u64,
        rt_priority: cfg.rt_priority,
    };
    let mut pacers = Vec::new();
    let mut lives = Vec::new();
    for r in &runs {
        let pacing = Pacing {
            sip: r.sip.as_ref().map(|s| {
                let tx = match &s.sock {
                    SipSock::Udp(u) => SipTx::Udp(u.clone()),
                    SipSock::Tcp(l) => SipTx::Tcp(tcp::TcpSender::new(l.clone())),
                };
                (
                    s.table.clone(),
                    tx,
                    s.codec.clone(),
                    r.hep.as_ref().map(|h| h.1.clone()),
                )
            }),
            icmp: r
                .icmp
                .as_ref()
                .map(|s| (s.table.clone(), s.socket.clone(), s.codec.clone())),
            diameter: r.diameter.as_ref().map(|s| {
                (
                    s.table.clone(),
                    tcp::TcpSender::new(s.link.clone()),
                    s.codec.clone(),
                )
            }),
        };
        pacers.push(spawn_pacer(pacing, pcfg, clock, pacer_stop.clone()));
        for t in r.tables() {
            t.watch_gaps(cfg.min_gap.as_nanos() as i64);
            lives.push(Live::new(t.clone(), r.target.name.clone()));
        }
    }
    if !cfg.quiet {
        let names: Vec<String> = runs
            .iter()
            .map(|r| {
                let layers: Vec<&str> = r.tables().map(|t| t.layer.as_str()).collect();
                format!(
                    "{} ({}, {}, {})",
                    r.target.name,
                    r.target.addr,
                    layers.join("+"),
                    r.dir.display()
                )
            })
            .collect();
        log(
            &clock,
            &format!(
                "probing {} at {}/s per layer{}; Ctrl-C ends the run with every file written",
                names.join(", "),
                cfg.rate,
                cfg.duration
                    .map(|d| format!(" for {}", humantime::format_duration(d)))
                    .unwrap_or_default()
            ),
        );
    }

    // Live output until the pacers end.
    let min_gap = cfg.min_gap.as_nanos() as i64;
    let mut next_progress = clock.now_ns() + 10_000_000_000;
    let mut next_metrics = clock.now_ns();
    // How probes are judged; the end is set at each judgement and, at last, to the run's.
    let mut params = Params {
        interval_ns,
        timeout_ns: cfg.timeout.as_nanos() as i64,
        late_rtt_ns: cfg.late_rtt.as_nanos() as i64,
        min_gap_ns: min_gap,
        end_ns: 0,
    };
    while !pacers.iter().all(|p| p.is_finished()) {
        std::thread::sleep(Duration::from_millis(10));
        if trigger.reason() != StopReason::Running {
            pacer_stop.store(true, Ordering::Relaxed);
        }
        let now = clock.now_ns();
        for l in &mut lives {
            l.poll(&clock, now, min_gap, cfg.quiet);
        }
        if let Some(m) = cfg.metrics.as_ref().filter(|_| now >= next_metrics) {
            next_metrics = now + 1_000_000_000;
            for l in &mut lives {
                l.settle(&params, now);
            }
            m.probes(&lives, now);
        }
        if !cfg.quiet && now >= next_progress {
            next_progress += 10_000_000_000;
            let parts: Vec<String> = lives
                .iter()
                .map(|l| {
                    format!(
                        "{} {} sent {}",
                        l.name,
                        l.table.layer.as_str(),
                        l.table.len()
                    )
                })
                .collect();
            log(&clock, &parts.join(", "));
        }
    }
    let pacer_stats: Vec<PacerStats> = pacers
        .into_iter()
        .map(|p| p.join().unwrap_or_default())
        .collect();
    trigger.stop(StopReason::Duration);
    let stop_reason = trigger.reason();

    // Await the last replies: up to `timeout`, less once everything is answered.
    let last_send = runs
        .iter()
        .flat_map(|r| r.tables())
        .map(|t| t.snapshot().last().map_or(start_t, |r| r.sent_ns))
        .max()
        .unwrap_or(start_t);
    let grace_end = last_send + cfg.timeout.as_nanos() as i64;
    loop {
        let now = clock.now_ns();
        let all_answered = runs.iter().all(|r| {
            let sent: u64 = r.tables().map(|t| t.len()).sum();
            r.answered.load(Ordering::Relaxed) >= sent
        });
        if now >= grace_end || all_answered {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let end_ns = clock.now_ns().min(grace_end.max(last_send));
    rx_stop.store(true, Ordering::Relaxed);
    for h in receivers {
        let _ = h.join();
    }
    for r in &runs {
        if let Some(SipSock::Tcp(l)) = r.sip.as_ref().map(|s| &s.sock) {
            l.close();
        }
        if let Some(d) = &r.diameter {
            d.link.close();
        }
    }
    // Let the capture see the last packets, then flush it.
    std::thread::sleep(Duration::from_millis(30));
    for r in &mut runs {
        if let Some(c) = r.capture.take() {
            let info = c.finish();
            if let Some(e) = &info.error {
                r.warnings.push(e.clone());
            }
            r.capture_info = Some(info);
        }
    }

    params.end_ns = end_ns;
    if let Some(m) = &cfg.metrics {
        // The final counts: every probe judged as the report judges it.
        for l in &mut lives {
            l.poll(&clock, end_ns, min_gap, true);
            l.finish(&params);
        }
        m.probes(&lives, end_ns);
    }
    let tb = clock.time_base();
    let mut results = Vec::new();
    for (mut r, ps) in runs.into_iter().zip(pacer_stats) {
        // The pacer and receiver have ended: this is the last tap.
        let hep = r.hep.take().map(|(m, sm)| {
            drop(sm);
            m.finish(Duration::from_secs(2))
        });
        if let Some(w) = hep.as_ref().and_then(|h| h.warning()) {
            r.warnings.push(w);
        }
        let mut layers = Vec::new();
        let mut analyses: Vec<LayerAnalysis> = Vec::new();
        let mut records = Vec::new();
        if let Some(s) = &r.sip {
            let recs = s.table.snapshot();
            let a = analysis::analyze(Layer::Sip, &recs, &params);
            let mut lo = LayerOut::new(
                &a,
                &tb,
                if s.timestamps { "kernel" } else { "userspace" },
                r.target.transport.param(),
            );
            lo.counters = Some(strip_logged(s.table.counters()));
            lo.sip_local = Some(s.local.clone());
            if let SipSock::Tcp(l) = &s.sock {
                lo.tcp = Some(l.stats());
            }
            layers.push(lo);
            analyses.push(a);
            records.push(recs);
        }
        if let Some(s) = &r.icmp {
            let recs = s.table.snapshot();
            let a = analysis::analyze(Layer::Icmp, &recs, &params);
            let mut lo = LayerOut::new(
                &a,
                &tb,
                if s.socket.timestamps {
                    "kernel"
                } else {
                    "userspace"
                },
                if s.socket.raw {
                    "icmp-raw"
                } else {
                    "icmp-datagram"
                },
            );
            lo.counters = Some(strip_logged(s.table.counters()));
            lo.icmp_id = s.socket.raw.then_some(s.codec.id);
            layers.push(lo);
            analyses.push(a);
            records.push(recs);
        }
        if let Some(s) = &r.diameter {
            let recs = s.table.snapshot();
            let a = analysis::analyze(Layer::Diameter, &recs, &params);
            let mut lo = LayerOut::new(&a, &tb, "userspace", "diameter-tcp");
            lo.counters = Some(strip_logged(s.table.counters()));
            lo.tcp = Some(s.link.stats());
            lo.diameter_origin_host = Some(s.codec.origin_host().to_string());
            lo.diameter_request = Some(s.codec.request().describe());
            layers.push(lo);
            analyses.push(a);
            records.push(recs);
        }
        let mut warnings = r.warnings.clone();
        for lo in &layers {
            let Some(c) = &lo.counters else { continue };
            if c.clock_steps > 0 || c.negative_rtts > 0 {
                warnings.push(format!(
                    "{}: the realtime clock stepped while replies were being read: {} kernel \
                     stamps replaced by the read time, {} replies stamped before their request \
                     (kept for gaps, left out of RTT figures)",
                    lo.layer.as_str(),
                    c.clock_steps,
                    c.negative_rtts
                ));
            }
        }
        if ps.skipped_ticks > 0 {
            warnings.push(format!(
                "the prober itself was stalled for more than {} ms; {} ticks were skipped",
                pacer::MAX_BEHIND_NS / 1_000_000,
                ps.skipped_ticks
            ));
        }
        let pcap_file = r
            .capture_info
            .as_ref()
            .and_then(|c| c.file.as_ref())
            .map(|f| f.display().to_string());
        let mut rep = Report {
            tool: "imsprobe",
            version: env!("CARGO_PKG_VERSION"),
            mode: "live",
            source: None,
            target: TargetOut {
                name: r.target.name.clone(),
                host: r.target.host().to_string(),
                sip_port: r.sip.as_ref().map(|_| r.target.addr.port()),
                transport: r
                    .sip
                    .as_ref()
                    .map(|_| r.target.transport.param().to_string()),
                diameter_port: r.diameter.as_ref().map(|_| r.target.diameter_port),
            },
            started_utc: tb.label(start_t),
            ended_utc: tb.label(end_ns),
            duration_s: (end_ns - start_t) as f64 / 1e9,
            stop_reason: format!("{stop_reason:?}").to_lowercase(),
            params: ParamsOut::new(&params),
            layers,
            pacer: Some(ps),
            capture: r.capture_info.clone(),
            warnings,
            files: Files {
                pcap: pcap_file,
                ..Files::default()
            },
            hep,
        };
        let record_sets: Vec<(&[super::ProbeRecord], Params)> =
            records.iter().map(|v| (v.as_slice(), params)).collect();
        write_outputs(&r.dir, &mut rep, &record_sets, &analyses, &tb, cfg.plot)?;
        results.push(TargetResult {
            target: r.target,
            dir: r.dir,
            report: rep,
        });
    }
    Ok(results)
}

fn strip_logged(mut c: super::table::Counters) -> super::table::Counters {
    c.receive_errors.retain(|k, _| !k.starts_with("logged:"));
    c
}

/// Writes CSV, SVG/PNG and JSON (last, listing the others) into `dir`.
pub fn write_outputs(
    dir: &std::path::Path,
    rep: &mut Report,
    records: &[(&[super::ProbeRecord], Params)],
    analyses: &[LayerAnalysis],
    tb: &super::TimeBase,
    plot: bool,
) -> anyhow::Result<()> {
    let csv = dir.join("probes.csv");
    report::write_csv(&csv, records, tb)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", csv.display()))?;
    rep.files.csv = Some(csv.display().to_string());
    if plot {
        let svg_path = dir.join("timeline.svg");
        let svg = super::plot::svg(rep, records, analyses);
        std::fs::write(&svg_path, &svg)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", svg_path.display()))?;
        rep.files.svg = Some(svg_path.display().to_string());
        let png_path = dir.join("timeline.png");
        match crate::chart::png(&svg, &png_path) {
            Ok(()) => rep.files.png = Some(png_path.display().to_string()),
            Err(e) => rep.warnings.push(format!("no PNG plot: {e}")),
        }
    }
    let json = dir.join("report.json");
    rep.files.json = Some(json.display().to_string());
    report::write_json(&json, rep)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", json.display()))?;
    Ok(())
}
