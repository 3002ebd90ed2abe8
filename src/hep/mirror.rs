//! The runtime around the encoder: a bounded queue that the I/O paths copy messages into, and
//! one thread that encodes them and sends them to the collector in batches.
//!
//! The SIP path never waits for HEP: a [`Tap`] copies each message into a buffer of its own
//! and hands the turn's copies to the queue in one `try_send` ([`Tap::flush`]); when the queue
//! is full (the collector's path is slower than our SIP, or the sender thread did not get a
//! core) the copies are dropped and counted. A copy is an append to a buffer the sender hands
//! back: no allocation, no lock and no queue operation per message (a `Vec` and a `try_send`
//! per message were about a quarter of `--hep`'s cost in the workers). The sender thread takes
//! the run's wall clock at the moment it encodes a batch and places each message by its age on
//! the monotonic clock our records use (`wall_now − (mono_now − stamp)`): a realtime clock
//! that NTP steps mid-run moves the HEP stamps with it, as Homer's other sources are moved,
//! instead of drifting from a mapping taken once at the start.
//!
//! A collector that is gone costs nothing but counts: over UDP the kernel reports the ICMP
//! port unreachable of an earlier datagram as ECONNREFUSED on a later send (the socket is
//! connected for that), which is counted as a send error and logged once.
//!
//! Over TCP (`--hep-transport tcp`, which heplify-server and Homer accept) a batch is one
//! write of its HEP packets back to back (each carries its length): one system call and a
//! few segments where UDP sends a datagram per message, which was most of `--hep`'s cost. A
//! connection that fails drops the batch (counted as send errors) and is made again at most
//! once a second, so the stream never holds a packet cut short.

use super::{call_id, encode, Packet, Proto};
use crate::io::udp::SendBatch;
use serde::Serialize;
use std::collections::HashSet;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Messages the queue holds. At 10,000 calls/s (about 70,000 messages/s) that is 0.2 s of
/// traffic: room for the sender thread to miss a few scheduler slices, little memory (only
/// queued messages hold their copies).
pub const QUEUE: usize = 16_384;

/// A tap hands its copies on when it holds this many, or [`FLUSH_BYTES`], even if its owner's
/// turn goes on (a turn that reads thousands of datagrams).
const FLUSH_AT: usize = 256;
const FLUSH_BYTES: usize = 256 * 1024;
/// Emptied batches kept for the taps to fill again; more are freed.
const POOL: usize = 64;

/// How long the sender sleeps between drains of the queue while copies flow. The stamps do
/// not depend on it (they are taken where the message is seen); the queue holds 16,384, about
/// 0.2 s at 10,000 calls/s. At 1 ms the sender's wake-ups alone were 6 % of a --hep run's
/// samples (perf, 2,000 calls/s).
const TICK: Duration = Duration::from_millis(4);
/// A sender that got no copy for this long blocks until the next one.
const IDLE: Duration = Duration::from_millis(200);

/// Default capture agent ID (Homer's examples use 2001).
pub const DEFAULT_CAPTURE_ID: u32 = 2001;

/// How the copies travel to the collector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HepTransport {
    /// One datagram per message.
    #[default]
    Udp,
    /// One stream; a write per batch.
    Tcp,
}

/// Where and as whom to mirror.
#[derive(Clone, Debug)]
pub struct HepConfig {
    pub collector: SocketAddr,
    pub transport: HepTransport,
    pub capture_id: u32,
    pub node: String,
}

/// A TCP connection to the collector: how long a connect or a write may take before the
/// batch is given up (the SIP path never waits for it; the queue drops meanwhile).
const TCP_WAIT: Duration = Duration::from_secs(1);

/// `--hep HOST:PORT [--hep-id N] [--hep-node NAME]`, shared by imsload and imsprobe.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct HepArgs {
    /// Mirror every SIP message sent and received to a Homer collector as HEPv3 over UDP
    /// (heplify-server, Homer, Kamailio sipcapture). Never slows the SIP path: copies that do
    /// not fit the queue are dropped and counted in the report.
    #[arg(long, value_name = "HOST:PORT", value_parser = collector)]
    pub hep: Option<SocketAddr>,
    /// HEP capture agent ID.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CAPTURE_ID, requires = "hep")]
    pub hep_id: u32,
    /// How to reach the collector: a datagram per message (udp), or one connection with a
    /// write per batch (tcp; heplify-server's HEPTCPAddr), which costs the generator less.
    #[arg(long, value_name = "udp|tcp", default_value = "udp", requires = "hep")]
    pub hep_transport: HepTransport,
    /// HEP node name [default: this host's name].
    #[arg(long, value_name = "NAME", requires = "hep")]
    pub hep_node: Option<String>,
}

impl HepArgs {
    /// The configuration, or `None` without `--hep`. `tool` names the node when the host's
    /// name cannot be read.
    pub fn config(&self, tool: &str) -> Option<HepConfig> {
        let collector = self.hep?;
        Some(HepConfig {
            collector,
            transport: self.hep_transport,
            capture_id: self.hep_id,
            node: self
                .hep_node
                .clone()
                .filter(|n| !n.is_empty())
                .or_else(hostname)
                .unwrap_or_else(|| tool.to_string()),
        })
    }
}

/// `--hep`'s value: HOST:PORT (a name is resolved once, at start). The message is for clap,
/// which names the flag and the value before it, and prints only an error's outermost context:
/// so whole messages here, no `.context()`.
pub fn collector(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
        _ => anyhow::bail!("expected HOST:PORT (e.g. 127.0.0.1:9060)"),
    }
    s.to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("cannot resolve it: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("it resolves to no address"))
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return None;
    }
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let s = String::from_utf8_lossy(&buf[..n]).into_owned();
    (!s.is_empty()).then_some(s)
}

/// What became of the copies, for the report.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct HepStats {
    pub collector: String,
    pub transport: HepTransport,
    pub capture_id: u32,
    pub node: String,
    /// Queue capacity (messages).
    pub queue: usize,
    /// HEP packets the kernel accepted (datagrams, or packets written to the stream).
    pub mirrored: u64,
    /// Copies not sent: the queue was full, the message did not fit one HEP datagram, or it
    /// was still queued when the run ended and the sender did not catch up in time.
    pub dropped: u64,
    /// HEP packets the kernel refused (UDP: ECONNREFUSED when the collector's port is
    /// closed), or that a TCP connection could not take (refused, reset, a write timed out).
    pub send_errors: u64,
}

impl HepStats {
    /// One line for the end-of-run text.
    pub fn line(&self) -> String {
        format!(
            "HEP → {}{} (capture ID {}, node {}): {} mirrored, {} dropped, {} send errors",
            self.collector,
            match self.transport {
                HepTransport::Udp => "",
                HepTransport::Tcp => " over TCP",
            },
            self.capture_id,
            self.node,
            self.mirrored,
            self.dropped,
            self.send_errors
        )
    }

    /// A warning for the report when copies were lost.
    pub fn warning(&self) -> Option<String> {
        (self.dropped + self.send_errors > 0).then(|| {
            format!(
                "HEP: {} copies dropped (queue of {} full, or too large) and {} refused by the \
                 kernel (collector {} unreachable?); the SIP traffic itself was not affected",
                self.dropped, self.queue, self.send_errors, self.collector
            )
        })
    }
}

/// One copy: where and when it was seen, and how many of its batch's bytes are its own.
struct Meta {
    at: Instant,
    proto: Proto,
    src: SocketAddr,
    dst: SocketAddr,
    len: usize,
}

/// Copies on their way to the sender: their descriptions, and their bytes back to back.
#[derive(Default)]
struct Batch {
    metas: Vec<Meta>,
    bytes: Vec<u8>,
}

impl Batch {
    fn clear(&mut self) {
        self.metas.clear();
        self.bytes.clear();
    }

    /// Each copy with its own bytes.
    fn iter(&self) -> impl Iterator<Item = (&Meta, &[u8])> {
        let mut off = 0;
        self.metas.iter().map(move |m| {
            let data = &self.bytes[off..off + m.len];
            off += m.len;
            (m, data)
        })
    }
}

#[derive(Default)]
struct Shared {
    mirrored: AtomicU64,
    dropped: AtomicU64,
    send_errors: AtomicU64,
    /// Messages handed to the queue and not yet taken by the sender: the queue's bound is in
    /// messages, however the taps batch them.
    queued: AtomicUsize,
    /// Batches the sender emptied, for the taps to fill again.
    pool: Mutex<Vec<Batch>>,
}

/// An I/O path's end of the queue (one per driver, pacer, receiver; a clone starts with no
/// copies of its own). Copies wait in the tap until [`Tap::flush`], which the owner calls
/// once per turn, or until the tap holds `FLUSH_AT` of them or is dropped.
pub struct Tap {
    tx: SyncSender<Batch>,
    shared: Arc<Shared>,
    label: Arc<str>,
    queue: usize,
    batch: Batch,
}

impl Clone for Tap {
    fn clone(&self) -> Tap {
        Tap {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
            label: self.label.clone(),
            queue: self.queue,
            batch: Batch::default(),
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Tap {
    /// Keeps a copy of `data` (seen at `at` on the monotonic clock) for the next
    /// [`Tap::flush`]. Never blocks.
    pub fn copy(
        &mut self,
        at: Instant,
        proto: Proto,
        src: SocketAddr,
        dst: SocketAddr,
        data: &[u8],
    ) {
        self.batch.metas.push(Meta {
            at,
            proto,
            src,
            dst,
            len: data.len(),
        });
        self.batch.bytes.extend_from_slice(data);
        if self.batch.metas.len() >= FLUSH_AT || self.batch.bytes.len() >= FLUSH_BYTES {
            self.flush();
        }
    }

    /// Hands the copies kept since the last flush to the queue, or counts them dropped when
    /// it is full. Never blocks.
    pub fn flush(&mut self) {
        let n = self.batch.metas.len();
        if n == 0 {
            return;
        }
        if self.shared.queued.fetch_add(n, Ordering::Relaxed) + n <= self.queue {
            match self.tx.try_send(std::mem::take(&mut self.batch)) {
                Ok(()) => {
                    let reused = self.shared.pool.lock().ok().and_then(|mut p| p.pop());
                    self.batch = reused.unwrap_or_default();
                    return;
                }
                Err(TrySendError::Full(b)) | Err(TrySendError::Disconnected(b)) => self.batch = b,
            }
        }
        self.shared.queued.fetch_sub(n, Ordering::Relaxed);
        self.batch.clear();
        if self.shared.dropped.fetch_add(n as u64, Ordering::Relaxed) == 0 {
            tracing::warn!(
                "{}: HEP queue full: copies are dropped and counted, the SIP traffic is not affected (shown once)",
                self.label
            );
        }
    }
}

/// A running mirror: its sender thread and the counts.
pub struct Mirror {
    cfg: HepConfig,
    tx: Option<SyncSender<Batch>>,
    shared: Arc<Shared>,
    /// Disconnected when the sender thread has ended.
    done: Receiver<()>,
    label: Arc<str>,
    queue: usize,
}

impl Mirror {
    /// Opens the UDP socket towards the collector and starts the sender thread. `label`
    /// prefixes the messages it logs (e.g. `imsload`).
    pub fn start(cfg: &HepConfig, label: &str) -> anyhow::Result<Mirror> {
        Mirror::with_queue(cfg, label, QUEUE)
    }

    /// [`Mirror::start`] with a queue of `queue` messages.
    pub fn with_queue(cfg: &HepConfig, label: &str, queue: usize) -> anyhow::Result<Mirror> {
        use anyhow::Context as _;
        let any: SocketAddr = if cfg.collector.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(any).context("--hep: cannot open a UDP socket")?;
        // Connected, so that the ICMP error of a closed collector port comes back as an error
        // to count rather than vanish.
        sock.connect(cfg.collector)
            .with_context(|| format!("--hep {}: no route to the collector", cfg.collector))?;
        sock.set_nonblocking(true)?;
        let sock2 = socket2::SockRef::from(&sock);
        let _ = sock2.set_send_buffer_size(4 << 20);
        let (tx, rx) = mpsc::sync_channel(queue);
        let (done_tx, done) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let label: Arc<str> = Arc::from(label);
        let sender = Sender {
            cfg: cfg.clone(),
            sock,
            tcp: None,
            tcp_retry: None,
            stream: Vec::new(),
            shared: shared.clone(),
            label: label.clone(),
            errors_seen: HashSet::new(),
        };
        std::thread::Builder::new()
            .name("hep-sender".into())
            .spawn(move || {
                sender.run(rx);
                drop(done_tx);
            })
            .context("cannot start the HEP sender thread")?;
        Ok(Mirror {
            cfg: cfg.clone(),
            tx: Some(tx),
            shared,
            done,
            label,
            queue,
        })
    }

    pub fn tap(&self) -> Tap {
        Tap {
            // Present until `finish`, which takes `self`.
            tx: self.tx.clone().expect("mirror not finished"),
            shared: self.shared.clone(),
            label: self.label.clone(),
            queue: self.queue,
            batch: Batch::default(),
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> HepStats {
        HepStats {
            collector: self.cfg.collector.to_string(),
            transport: self.cfg.transport,
            capture_id: self.cfg.capture_id,
            node: self.cfg.node.clone(),
            queue: self.queue,
            mirrored: self.shared.mirrored.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            send_errors: self.shared.send_errors.load(Ordering::Relaxed),
        }
    }

    /// Waits (at most `wait`) until every tap is gone and the queue is sent, then gives the
    /// final counts. Taps still held after `wait` (a worker abandoned after an overrun drain)
    /// leave their queued copies counted as neither sent nor dropped.
    pub fn finish(mut self, wait: Duration) -> HepStats {
        self.tx = None;
        if let Err(RecvTimeoutError::Timeout) = self.done.recv_timeout(wait) {
            tracing::warn!(
                "{}: HEP sender still busy after {:?}; its last copies are not counted",
                self.label,
                wait
            );
        }
        self.stats()
    }
}

struct Sender {
    cfg: HepConfig,
    /// UDP: connected to the collector.
    sock: UdpSocket,
    /// TCP: the connection, when up, and when to try again after a failure.
    tcp: Option<TcpStream>,
    tcp_retry: Option<Instant>,
    /// TCP: the batch's packets, back to back.
    stream: Vec<u8>,
    shared: Arc<Shared>,
    label: Arc<str>,
    errors_seen: HashSet<std::io::ErrorKind>,
}

impl Sender {
    /// Ends when every tap and the mirror's own sender are dropped and the queue is empty.
    ///
    /// While copies flow it never blocks on the queue: it drains it, sends, sleeps [`TICK`]
    /// and drains again. A receiver blocked in `recv` costs every `try_send` a futex wake-up
    /// and this thread a context switch per message; that was most of HEP's cost (1.65× the
    /// CPU of a run without `--hep` at 2,000 calls/s, one datagram per `sendmmsg`). Only
    /// after [`IDLE`] without a copy does it block, so an idle run costs nothing.
    fn run(mut self, rx: Receiver<Batch>) {
        let mut batches: Vec<Batch> = Vec::new();
        let mut udp = SendBatch::default();
        let mut buf = Vec::with_capacity(2048);
        let mut last_copy = Instant::now();
        loop {
            let mut open = true;
            loop {
                match rx.try_recv() {
                    Ok(b) => batches.push(b),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            let got = !batches.is_empty();
            self.send(&mut batches, &mut udp, &mut buf);
            if !open {
                return;
            }
            if got {
                last_copy = Instant::now();
            }
            if last_copy.elapsed() < IDLE {
                std::thread::sleep(TICK);
                continue;
            }
            match rx.recv() {
                Ok(b) => {
                    batches.push(b);
                    last_copy = Instant::now();
                }
                Err(_) => return,
            }
        }
    }

    /// Encodes and sends the copies of `batches`, and hands the emptied batches back to the
    /// taps' pool.
    fn send(&mut self, batches: &mut Vec<Batch>, udp: &mut SendBatch, buf: &mut Vec<u8>) {
        if batches.is_empty() {
            return;
        }
        // Both clocks once per drain: each stamp is placed by its age at this moment.
        let (wall, mono) = (SystemTime::now(), Instant::now());
        let mut packets = 0u64;
        for mut b in batches.drain(..) {
            self.shared
                .queued
                .fetch_sub(b.metas.len(), Ordering::Relaxed);
            for (m, data) in b.iter() {
                let age = mono.saturating_duration_since(m.at);
                let time = wall
                    .checked_sub(age)
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .unwrap_or_default();
                let p = Packet {
                    proto: m.proto,
                    src: m.src,
                    dst: m.dst,
                    time,
                    capture_id: self.cfg.capture_id,
                    node: &self.cfg.node,
                    correlation: call_id(data).unwrap_or_default(),
                    payload: data,
                };
                // TCP: straight onto the stream; UDP: a datagram of its own.
                let out = match self.cfg.transport {
                    HepTransport::Tcp => &mut self.stream,
                    HepTransport::Udp => {
                        buf.clear();
                        &mut *buf
                    }
                };
                match encode(&p, out) {
                    Ok(()) if self.cfg.transport == HepTransport::Tcp => packets += 1,
                    Ok(()) => {
                        udp.push_connected(buf);
                        if udp.is_full() {
                            self.flush(udp);
                        }
                    }
                    Err(_) => {
                        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            b.clear();
            if let Ok(mut pool) = self.shared.pool.lock() {
                if pool.len() < POOL {
                    pool.push(b);
                }
            }
        }
        match self.cfg.transport {
            HepTransport::Udp => self.flush(udp),
            HepTransport::Tcp => self.write_stream(packets),
        }
    }

    /// Writes the batch's `packets` (in `self.stream`) to the collector's connection, made
    /// first if need be; on any failure the whole batch counts as send errors and the
    /// connection is dropped (a packet cut short would garble every later one).
    fn write_stream(&mut self, packets: u64) {
        if packets == 0 {
            return;
        }
        if self.tcp.is_none() && self.tcp_retry.is_none_or(|t| Instant::now() >= t) {
            match TcpStream::connect_timeout(&self.cfg.collector, TCP_WAIT).and_then(|s| {
                s.set_nodelay(true)?;
                s.set_write_timeout(Some(TCP_WAIT))?;
                Ok(s)
            }) {
                Ok(s) => self.tcp = Some(s),
                Err(e) => self.tcp_failed(e),
            }
        }
        let r = match self.tcp.as_mut() {
            Some(s) => s.write_all(&self.stream),
            None => Err(std::io::Error::from(std::io::ErrorKind::NotConnected)),
        };
        self.stream.clear();
        match r {
            Ok(()) => {
                self.shared.mirrored.fetch_add(packets, Ordering::Relaxed);
            }
            Err(e) => {
                self.shared
                    .send_errors
                    .fetch_add(packets, Ordering::Relaxed);
                if e.kind() != std::io::ErrorKind::NotConnected {
                    self.tcp_failed(e);
                }
            }
        }
    }

    fn tcp_failed(&mut self, e: std::io::Error) {
        self.tcp = None;
        self.tcp_retry = Some(Instant::now() + TCP_WAIT);
        if self.errors_seen.insert(e.kind()) {
            tracing::warn!(
                "{}: HEP to {} over TCP: {e}; copies count as send errors until it reconnects (tried at most once a second; further errors of this kind are not shown)",
                self.label, self.cfg.collector
            );
        }
    }

    fn flush(&mut self, batch: &mut SendBatch) {
        while !batch.is_empty() {
            let r = batch.flush(&self.sock);
            self.shared
                .mirrored
                .fetch_add(r.datagrams as u64, Ordering::Relaxed);
            if let Some(e) = r.error {
                self.shared
                    .send_errors
                    .fetch_add(r.failed as u64, Ordering::Relaxed);
                if self.errors_seen.insert(e.kind()) {
                    tracing::warn!(
                        "{}: HEP to {}: sending failed: {e} (counted; further errors of this kind are not shown)",
                        self.label, self.cfg.collector
                    );
                }
            }
            if r.blocked {
                // Our own send buffer is full: this thread may wait; the taps drop meanwhile.
                wait_writable(&self.sock, 100);
            }
        }
    }
}

fn wait_writable(sock: &UdpSocket, timeout_ms: i32) {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one pollfd we own.
    unsafe { libc::poll(&mut p, 1, timeout_ms) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(collector: SocketAddr) -> HepConfig {
        HepConfig {
            collector,
            transport: HepTransport::Udp,
            capture_id: 7,
            node: "t".into(),
        }
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const MSG: &[u8] = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: c1\r\n\r\n";

    fn tap(queue: usize) -> (Tap, Receiver<Batch>) {
        let (tx, rx) = mpsc::sync_channel(queue);
        let tap = Tap {
            tx,
            shared: Arc::new(Shared::default()),
            label: Arc::from("test"),
            queue,
            batch: Batch::default(),
        };
        (tap, rx)
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let (mut tap, rx) = tap(4);
        // Nobody reads `rx`: the queue holds 4 messages, so the fifth copy on must be
        // dropped at once, whether it comes alone or in a batch.
        let t0 = Instant::now();
        for i in 0..10 {
            tap.copy(
                Instant::now(),
                Proto::Udp,
                a("127.0.0.1:1"),
                a("127.0.0.1:2"),
                MSG,
            );
            if i != 1 {
                tap.flush();
            }
        }
        assert!(t0.elapsed() < Duration::from_millis(500));
        assert_eq!(tap.shared.dropped.load(Ordering::Relaxed), 6);
        let held: Vec<Batch> = rx.try_iter().collect();
        assert_eq!(
            held.iter().map(|b| b.metas.len()).collect::<Vec<_>>(),
            [1, 2, 1]
        );
        assert_eq!(tap.shared.queued.load(Ordering::Relaxed), 4);
    }

    /// A tap keeps its copies until its owner's turn ends (or it holds [`FLUSH_AT`]), each
    /// with its own stamp, addresses and bytes; a clone starts empty.
    #[test]
    fn copies_wait_for_the_flush_and_keep_their_own_fields() {
        let (mut tap, rx) = tap(QUEUE);
        let t0 = Instant::now();
        let long = vec![b'x'; 3000];
        tap.copy(t0, Proto::Udp, a("127.0.0.1:1"), a("127.0.0.1:2"), MSG);
        tap.copy(
            t0 + Duration::from_millis(5),
            Proto::Tcp,
            a("[::1]:3"),
            a("[::1]:4"),
            &long,
        );
        assert!(rx.try_recv().is_err());
        assert_eq!(tap.clone().batch.metas.len(), 0);
        tap.flush();
        let b = rx.try_recv().unwrap();
        let got: Vec<_> = b
            .iter()
            .map(|(m, d)| (m.at - t0, m.proto, m.src, m.dst, d))
            .collect();
        assert_eq!(
            got,
            [
                (
                    Duration::ZERO,
                    Proto::Udp,
                    a("127.0.0.1:1"),
                    a("127.0.0.1:2"),
                    MSG
                ),
                (
                    Duration::from_millis(5),
                    Proto::Tcp,
                    a("[::1]:3"),
                    a("[::1]:4"),
                    &long[..]
                ),
            ]
        );
        for _ in 0..FLUSH_AT {
            tap.copy(t0, Proto::Udp, a("127.0.0.1:1"), a("127.0.0.1:2"), MSG);
        }
        assert_eq!(rx.try_recv().unwrap().metas.len(), FLUSH_AT);
        tap.copy(t0, Proto::Udp, a("127.0.0.1:1"), a("127.0.0.1:2"), MSG);
        drop(tap);
        assert_eq!(rx.try_recv().unwrap().metas.len(), 1);
    }

    #[test]
    fn copies_reach_the_collector_encoded_and_stamped_by_their_age() {
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        sink.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let m = Mirror::start(&cfg(sink.local_addr().unwrap()), "test").unwrap();
        let mut tap = m.tap();
        let at = Instant::now() - Duration::from_secs(3);
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        tap.copy(
            at,
            Proto::Tcp,
            a("127.0.0.1:5060"),
            a("127.0.0.2:5070"),
            MSG,
        );
        drop(tap);
        let mut buf = [0u8; 2048];
        let n = sink.recv(&mut buf).unwrap();
        let got = &buf[..n];
        let mut want = Vec::new();
        let secs = u32::from_be_bytes(got[62..66].try_into().unwrap()) as u64;
        let micros = u32::from_be_bytes(got[72..76].try_into().unwrap());
        let time = Duration::new(secs, micros * 1000);
        // Three seconds before `before`, give or take the test's own run time.
        let expect = before - Duration::from_secs(3);
        assert!(
            time + Duration::from_millis(1) >= expect && time <= expect + Duration::from_secs(1),
            "stamp {time:?} vs {expect:?}"
        );
        encode(
            &Packet {
                proto: Proto::Tcp,
                src: a("127.0.0.1:5060"),
                dst: a("127.0.0.2:5070"),
                time,
                capture_id: 7,
                node: "t",
                correlation: b"c1",
                payload: MSG,
            },
            &mut want,
        )
        .unwrap();
        assert_eq!(got, &want[..]);
        let s = m.finish(Duration::from_secs(5));
        assert_eq!((s.mirrored, s.dropped, s.send_errors), (1, 0, 0));
    }

    #[test]
    fn a_closed_collector_port_is_counted_not_fatal() {
        // Bound and connected elsewhere: the kernel refuses what others send it (ICMP port
        // unreachable), and no socket made meanwhile (the mirror's own included) can take
        // the port, as one bound and then closed could.
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        closed.connect("127.0.0.1:1").unwrap();
        let port = closed.local_addr().unwrap();
        let m = Mirror::start(&cfg(port), "test").unwrap();
        let mut tap = m.tap();
        for _ in 0..50 {
            tap.copy(Instant::now(), Proto::Udp, a("127.0.0.1:1"), port, MSG);
            tap.flush();
            // Room for each ICMP error to come back before the next send.
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(tap);
        let s = m.finish(Duration::from_secs(5));
        assert_eq!(s.mirrored + s.send_errors + s.dropped, 50);
        assert!(s.send_errors > 0, "{s:?}");
        assert!(s.warning().is_some());
    }

    /// Over TCP the copies arrive back to back on one connection, each the same bytes as its
    /// datagram would be; a collector that is not listening is counted, not fatal.
    #[test]
    fn over_tcp_copies_arrive_back_to_back_and_a_closed_port_is_counted() {
        use std::io::Read as _;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = cfg(l.local_addr().unwrap());
        c.transport = HepTransport::Tcp;
        let m = Mirror::start(&c, "test").unwrap();
        let mut tap = m.tap();
        for _ in 0..100 {
            tap.copy(
                Instant::now(),
                Proto::Udp,
                a("127.0.0.1:1"),
                a("127.0.0.1:2"),
                MSG,
            );
        }
        drop(tap);
        let s = m.finish(Duration::from_secs(5));
        assert_eq!((s.mirrored, s.dropped, s.send_errors), (100, 0, 0));
        assert!(s.line().contains("over TCP"), "{}", s.line());
        let (mut conn, _) = l.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        let mut n = 0;
        let mut off = 0;
        while off < got.len() {
            assert_eq!(&got[off..off + 4], b"HEP3");
            let len = u16::from_be_bytes([got[off + 4], got[off + 5]]) as usize;
            assert!(got[off..off + len].ends_with(MSG));
            off += len;
            n += 1;
        }
        assert_eq!((n, off), (100, got.len()));

        // Bound, never listening: connects are refused and nobody else can take the port.
        let held =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        held.bind(&a("127.0.0.1:0").into()).unwrap();
        let closed = held.local_addr().unwrap().as_socket().unwrap();
        let mut c = cfg(closed);
        c.transport = HepTransport::Tcp;
        let m = Mirror::start(&c, "test").unwrap();
        let mut tap = m.tap();
        for _ in 0..20 {
            tap.copy(Instant::now(), Proto::Udp, a("127.0.0.1:1"), closed, MSG);
        }
        drop(tap);
        let s = m.finish(Duration::from_secs(5));
        assert_eq!((s.mirrored, s.send_errors), (0, 20), "{s:?}");
        assert!(s.warning().is_some());
    }

    #[test]
    fn collector_values_are_checked() {
        assert_eq!(collector("127.0.0.1:9060").unwrap(), a("127.0.0.1:9060"));
        assert_eq!(collector("[::1]:9060").unwrap(), a("[::1]:9060"));
        assert_eq!(collector("localhost:9060").unwrap().port(), 9060);
        for bad in ["x", "127.0.0.1", ":9060", "h:99999", ""] {
            let e = collector(bad).unwrap_err().to_string();
            assert!(e.contains("expected HOST:PORT"), "{bad}: {e}");
        }
    }
}
