//! The receiver threads of a live run: one per layer and target, each reading its socket or TCP
//! connection, stamping every reply (kernel receive stamps for datagrams, the read time with its
//! measured lateness over TCP) and completing the probe it answers in the layer's table. Oddities
//! are counted for the report and logged once.

use super::diameter::{DiaCodec, DiaReply, DiameterFramer, DIAMETER_SUCCESS};
use super::icmp::{self, EchoCodec, IcmpReply};
use super::net::{self, ProbeClock};
use super::pacer;
use super::setup::{DiaIo, IcmpIo, SipIo, SipSock};
use super::sipcodec::{OptionsCodec, Reply};
use super::table::{Completion, LayerTable};
use super::tcp::{self, TcpLink};
use super::{Arrival, Outcome};
use socket2::Socket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Logs the first occurrence of each kind of oddity.
fn once(table: &LayerTable, target: &str, kind: &str, detail: impl FnOnce() -> String) {
    let first = table.count(|c| {
        let e = c
            .receive_errors
            .entry(format!("logged:{kind}"))
            .or_default();
        *e += 1;
        *e == 1
    });
    if first {
        tracing::warn!(
            "{target} {}: {kind}: {} (logged once; counted in the report)",
            table.layer.as_str(),
            detail()
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
pub(super) struct Sink {
    pub(super) table: Arc<LayerTable>,
    pub(super) clock: ProbeClock,
    pub(super) name: String,
    pub(super) answered: Arc<AtomicU64>,
}

impl Sink {
    fn receive_error(&self, e: &std::io::Error, hint: &str) {
        let kind = format!("receive error {e}");
        self.table
            .count(|c| *c.receive_errors.entry(kind.clone()).or_default() += 1);
        once(&self.table, &self.name, &kind, || hint.to_string());
    }

    fn sip(&self, codec: &OptionsCodec, msg: &[u8], at: Arrival) {
        let (table, name) = (&self.table, &self.name);
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
                    once(table, name, &format!("status {code}"), || {
                        "a non-2xx final response counts as a failed probe".into()
                    });
                }
            }
            Reply::Provisional { .. } => table.count(|c| c.provisional += 1),
            Reply::Foreign(k) => {
                table.count(|c| *c.foreign.entry(k.as_str()).or_default() += 1);
                once(table, name, k.as_str(), || {
                    format!(
                        "a message that answers none of our probes: {:?}",
                        preview(msg)
                    )
                });
            }
            Reply::Malformed(k) => {
                table.count(|c| *c.malformed.entry(k.as_str()).or_default() += 1);
                once(table, name, &format!("malformed {}", k.as_str()), || {
                    format!("{:?}", preview(msg))
                });
            }
        }
    }

    fn diameter(&self, codec: &DiaCodec, link: &TcpLink, msg: &[u8], at: Arrival) {
        let (table, name) = (&self.table, &self.name);
        match codec.classify(msg, table.len().saturating_sub(1)) {
            DiaReply::Answer { seq, result, ok } => {
                let outcome = if ok { Outcome::Ok } else { Outcome::Failed };
                let code = result.min(u16::MAX as u32) as u16;
                if table.complete(seq, at, outcome, code) == Completion::Fresh {
                    self.answered.fetch_add(1, Ordering::Relaxed);
                }
                if outcome == Outcome::Failed {
                    once(table, name, &format!("result {result}"), || {
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
                    once(table, name, &format!("CEA {result}"), || {
                        format!("the peer refused our CER (Result-Code {result}); it may close the connection")
                    });
                }
            }
            DiaReply::PeerRequest { command, answer } => {
                table.count(|c| c.peer_requests += 1);
                link.queue_reply(&answer);
                once(table, name, &format!("peer request {command}"), || {
                    "the peer sent a request; it is answered ahead of the next probe".into()
                });
            }
            DiaReply::Foreign(k) => {
                table.count(|c| *c.foreign.entry(k).or_default() += 1);
            }
            DiaReply::Malformed(k) => {
                table.count(|c| *c.malformed.entry(k).or_default() += 1);
                once(table, name, "malformed diameter", || {
                    format!("{} bytes", msg.len())
                });
            }
        }
    }

    fn icmp(&self, codec: &EchoCodec, raw: bool, pkt: &[u8], at: Arrival) {
        let (table, name) = (&self.table, &self.name);
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
                once(table, name, &format!("icmp error type {kind}"), || {
                    "an ICMP error about our echo counts as a failed probe".into()
                });
            }
            IcmpReply::Foreign => {
                // Raw sockets see every ICMP packet of the host: not worth a log line.
                table.count(|c| *c.foreign.entry("not_ours").or_default() += 1);
            }
            IcmpReply::Malformed => {
                table.count(|c| *c.malformed.entry("icmp").or_default() += 1);
                once(table, name, "malformed icmp", || {
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
            if !batch.filled() {
                break;
            }
        }
        if batch_ns > 0 {
            net::sleep_until_mono(crate::clock::monotonic_ns() + batch_ns);
        }
    }
}

pub(super) fn spawn_sip_receiver(
    io: &SipIo,
    rt: Option<i32>,
    sink: Sink,
    stop: Arc<AtomicBool>,
    batch_ns: u64,
    hep: Option<super::hep::SipMirror>,
) -> JoinHandle<()> {
    let codec = io.codec.clone();
    let mut hep = hep;
    let mut handle = move |sink: &Sink, msg: &[u8], at: Arrival| {
        if let Some(h) = &mut hep {
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

pub(super) fn spawn_diameter_receiver(
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
    /// Only shown (the loop drops the connection whatever went wrong).
    type Error: std::fmt::Display;
    fn push(&mut self, data: &[u8]);
    fn next_message(&mut self) -> Result<Option<&[u8]>, Self::Error>;
}

impl Frames for crate::sip::transport::StreamFramer {
    type Error = crate::sip::ParseError;
    fn push(&mut self, data: &[u8]) {
        crate::sip::transport::StreamFramer::push(self, data)
    }
    fn next_message(&mut self) -> Result<Option<&[u8]>, Self::Error> {
        crate::sip::transport::StreamFramer::next_message(self)
    }
}

impl Frames for DiameterFramer {
    type Error = crate::diameter::DecodeError;
    fn push(&mut self, data: &[u8]) {
        DiameterFramer::push(self, data)
    }
    fn next_message(&mut self) -> Result<Option<&[u8]>, Self::Error> {
        DiameterFramer::next_message(self)
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
        once(&sink.table, name, "tcp lateness unmeasured", || {
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
                tracing::warn!(
                    "{name} {layer}: TCP connection to {} lost ({why}); probes count as lost until it is back; reconnecting every {} ms",
                    link.target,
                    tcp::RECONNECT_EVERY_NS / 1_000_000
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
                    tracing::info!(
                        "{name} {layer}: TCP reconnected to {} after {:.1} ms (reconnect {}, local {})",
                        link.target,
                        (clock.now_ns() - down_since.unwrap_or(now)) as f64 / 1e6,
                        st.reconnects,
                        link.local_addr().map(|a| a.to_string()).unwrap_or_default()
                    );
                    down_since = None;
                }
                Err(e) => {
                    let kind = format!("tcp reconnect failed: {}", e.kind());
                    once(&sink.table, name, &kind, || e.to_string());
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
                            once(&sink.table, name, "tcp framing error", || {
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

pub(super) fn spawn_icmp_receiver(
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
