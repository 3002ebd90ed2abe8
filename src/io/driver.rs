//! The one loop that moves bytes and time for a sans-IO endpoint, over UDP or TCP.
//!
//! A turn: hand every queued transmit to the sockets (batched), sleep until input arrives or
//! the endpoint's next deadline (or the caller's), read everything that is ready (batched),
//! then fire the timers that are due. The thread that calls [`Driver::turn`] owns its sockets
//! and its endpoint: no locks, no cross-thread wake-ups per datagram (the tokio design spent a
//! quarter of its samples switching tasks in and out of `epoll_wait`).

use super::poller::Poller;
use super::udp::{RecvBatch, SendBatch};
use crate::clock::ReadMoment;
use crate::hep::{mirror::Tap, Proto};
use crate::sip::transport::{StreamFramer, Transmit};
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// A sans-IO endpoint, in the shape of quinn-proto's `Connection`: input and time in, datagrams
/// and the next deadline out. No sockets and no clock inside.
pub trait Endpoint {
    /// One received message; `socket` is the index of the local socket it reached.
    fn handle_input(&mut self, now: Instant, data: &[u8], from: SocketAddr, socket: u32);
    fn handle_timeout(&mut self, now: Instant);
    fn poll_transmit(&mut self) -> Option<Transmit>;
    fn poll_timeout(&self) -> Option<Instant>;
    /// A stream could not be framed (and is dropped): count it with the malformed input.
    fn stream_unreadable(&mut self, _e: &crate::sip::ParseError) {}
}

/// Batches read from one socket per turn before the others get theirs: fairness across
/// `--ue-ports` sockets, and a bound on the time between timer checks under a flood.
const READ_BATCHES_PER_TURN: usize = 8;

/// A kernel receive stamp older than this at its read is not trusted (the realtime clock
/// stepped): the read's own time stands in.
const MAX_STAMP_AGE: Duration = Duration::from_secs(10);

/// Token of the TCP stream in the poller (UDP sockets use their index).
const TCP: u64 = 0;

enum Sockets {
    Udp(Box<UdpSide>),
    Tcp(Box<TcpConn>),
}

struct UdpSide {
    socks: Vec<UdpSocket>,
    /// Each socket's own address, for the HEP copies.
    locals: Vec<SocketAddr>,
    out: Vec<SendBatch>,
    recv: RecvBatch,
    /// Sockets whose send buffer was full: watched for room to write.
    blocked: Vec<bool>,
    /// Send errors shown once per kind; the rest are counted.
    errors_seen: HashSet<io::ErrorKind>,
    errors: u64,
    /// Each socket's kernel drop count as last read, and the drops not yet taken.
    drop_marks: Vec<u32>,
    dropped: u64,
}

struct TcpConn {
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    framer: StreamFramer,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    written: usize,
    want_write: bool,
    connected: bool,
    buf: Vec<u8>,
}

/// Drives one endpoint over its sockets. See the module comment.
pub struct Driver {
    label: String,
    poller: Poller,
    socks: Sockets,
    ready: Vec<(u64, bool, bool, bool)>,
    /// Copies of every message sent and read, for `--hep`.
    tap: Option<Tap>,
    /// The timer resolution (UDP only; zero: wake for every datagram). See [`Driver::turn`].
    quantum: Duration,
    /// When the last wait ended, and whether it ended within a quantum of its start.
    woke: Instant,
    busy: bool,
    /// The last turn left datagrams unread (it stopped at [`READ_BATCHES_PER_TURN`]).
    backlog: bool,
}

impl Driver {
    /// `socks[i]` is the endpoint's socket `i` (its `Transmit::src` and input `socket`).
    pub fn udp(label: impl Into<String>, socks: Vec<UdpSocket>) -> io::Result<Driver> {
        let poller = Poller::new()?;
        for (i, s) in socks.iter().enumerate() {
            Self::watch_udp(&poller, s, i)?;
        }
        let n = socks.len();
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let locals = socks
            .iter()
            .map(|s| s.local_addr().unwrap_or(unspecified))
            .collect();
        Ok(Driver {
            label: label.into(),
            poller,
            socks: Sockets::Udp(Box::new(UdpSide {
                socks,
                locals,
                out: (0..n).map(|_| SendBatch::default()).collect(),
                recv: RecvBatch::default(),
                blocked: vec![false; n],
                errors_seen: HashSet::new(),
                errors: 0,
                drop_marks: vec![0; n],
                dropped: 0,
            })),
            ready: Vec::with_capacity(64),
            tap: None,
            quantum: Duration::ZERO,
            woke: Instant::now(),
            busy: false,
            backlog: false,
        })
    }

    fn watch_udp(poller: &Poller, s: &UdpSocket, i: usize) -> io::Result<()> {
        s.set_nonblocking(true)?;
        // Receive times are the kernel's: a datagram read late (see `turn`) keeps its own.
        // A kernel that refuses leaves the read's time, as before.
        super::udp::enable_rx_timestamps(s);
        // And drops for a full receive buffer, counted: an overloaded worker says so.
        super::udp::enable_rx_drop_count(s);
        // A peer's GSO train (a far worker's RTP with --media-gso) is read in one piece.
        super::udp::enable_rx_gro(s);
        poller.add(s, i as u64, false)
    }

    /// Puts `sock` in the place of UDP socket `i` (a UE's fresh ports, `--ipsec`): from now on
    /// the endpoint's socket `i` is the new one, and the old one is closed. Called between
    /// turns, when nothing is queued on it. Returns the new socket's address.
    pub fn replace_udp(&mut self, i: usize, sock: UdpSocket) -> io::Result<SocketAddr> {
        let Sockets::Udp(u) = &mut self.socks else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "only a UDP driver's sockets can be replaced",
            ));
        };
        if i >= u.socks.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no socket {i} to replace"),
            ));
        }
        let local = sock.local_addr()?;
        Self::watch_udp(&self.poller, &sock, i)?;
        let _ = self.poller.remove(&u.socks[i]);
        u.socks[i] = sock;
        u.locals[i] = local;
        u.out[i] = SendBatch::default();
        u.blocked[i] = false;
        u.drop_marks[i] = 0;
        Ok(local)
    }

    /// One connected stream; everything goes out on it and every message read from it is the
    /// endpoint's socket 0, from the stream's peer.
    pub fn tcp(label: impl Into<String>, stream: TcpStream) -> io::Result<Driver> {
        stream.set_nonblocking(true)?;
        let peer = stream.peer_addr()?;
        let local = stream.local_addr()?;
        let poller = Poller::new()?;
        poller.add(&stream, TCP, false)?;
        Ok(Driver {
            label: label.into(),
            poller,
            socks: Sockets::Tcp(Box::new(TcpConn {
                stream,
                peer,
                local,
                framer: StreamFramer::default(),
                out: Vec::with_capacity(65536),
                written: 0,
                want_write: false,
                connected: true,
                buf: vec![0u8; 65536],
            })),
            ready: Vec::with_capacity(4),
            tap: None,
            quantum: Duration::ZERO,
            woke: Instant::now(),
            busy: false,
            backlog: false,
        })
    }

    /// Copies every message this driver sends or reads into `tap` (HEP mirroring); a copy
    /// never waits (see [`crate::hep::mirror`]).
    pub fn set_tap(&mut self, tap: Tap) {
        self.tap = Some(tap);
    }

    /// Socket `socket` sends runs of same-size datagrams to one destination as UDP GSO trains
    /// (see [`SendBatch::set_trains`]; `--media-gso`, the RTP socket). UDP only.
    pub fn send_trains(&mut self, socket: usize) {
        if let Sockets::Udp(u) = &mut self.socks {
            if let Some(out) = u.out.get_mut(socket) {
                out.set_trains(true);
            }
        }
    }

    /// Wake at most once per `quantum` while busy (UDP; zero, the default, wakes for every
    /// datagram). A busy worker otherwise wakes, reads one datagram, answers it and sleeps
    /// again, tens of thousands of times a second: the epoll_wait, recvmmsg and sendmmsg of
    /// each wake were most of its kernel time. With a quantum, input gathers in the socket
    /// buffer and one turn reads it in batches (each datagram keeps its kernel receive stamp,
    /// so measured delays do not grow), and timers fire up to a quantum late, the way SIPp's
    /// `-timer_resol` batches its own. An idle worker (its last wait outlasted the quantum)
    /// still wakes at the first datagram.
    pub fn set_timer_resolution(&mut self, quantum: Duration) {
        if matches!(self.socks, Sockets::Udp(_)) {
            self.quantum = quantum;
        }
    }

    /// Sends what the endpoint has queued, then sleeps until input, the endpoint's next
    /// deadline or `wake_by`, whichever is first (but see [`Driver::set_timer_resolution`]);
    /// reads what is ready and fires due timers.
    pub fn turn<E: Endpoint>(&mut self, ep: &mut E, wake_by: Instant) -> io::Result<()> {
        self.send(ep);
        let mut now = Instant::now();
        // Behind (input left unread): no pause, or the quantum would cap what a worker can
        // read (a few hundred datagrams a turn) and a loaded machine that stretches its turns
        // would overflow the socket buffers (it did: 900k drops at 40k calls/s).
        if self.busy && !self.backlog {
            let next = self.woke + self.quantum;
            if now < next {
                std::thread::sleep(next - now);
                now = Instant::now();
            }
        }
        let until = ep.poll_timeout().map_or(wake_by, |d| d.min(wake_by));
        let timeout = until.saturating_duration_since(now);
        let ready = &mut self.ready;
        ready.clear();
        self.backlog = false;
        self.poller.wait(timeout, |r| {
            ready.push((r.token, r.readable, r.writable, r.closed))
        })?;
        if !self.quantum.is_zero() {
            let woke = Instant::now();
            self.busy = woke.duration_since(now) < self.quantum;
            self.woke = woke;
        }
        for i in 0..self.ready.len() {
            let (token, readable, writable, closed) = self.ready[i];
            if writable {
                self.on_writable(token);
            }
            if readable || closed {
                self.read(ep, token);
            }
        }
        let now = Instant::now();
        if ep.poll_timeout().is_some_and(|d| d <= now) {
            ep.handle_timeout(now);
        }
        Ok(())
    }

    /// Datagrams the kernel dropped at our sockets since the last call because a receive
    /// buffer was full (we read too slowly: the endpoint or the machine is overloaded). Known
    /// with the next datagram queued on that socket after them (each carries the count as it
    /// was when it was queued). Always 0 over TCP, which does not drop.
    pub fn take_rx_dropped(&mut self) -> u64 {
        match &mut self.socks {
            Sockets::Udp(u) => std::mem::take(&mut u.dropped),
            Sockets::Tcp(_) => 0,
        }
    }

    /// Datagrams the kernel refused to send (not a full buffer: that waits) since the last
    /// call; the first error of each kind is on stderr. Always 0 over TCP, where a failed write
    /// closes the connection (and says so).
    pub fn take_send_errors(&mut self) -> u64 {
        match &mut self.socks {
            Sockets::Udp(u) => std::mem::take(&mut u.errors),
            Sockets::Tcp(_) => 0,
        }
    }

    /// Hands every queued transmit to the kernel (what a full buffer holds back goes at the
    /// next turn that finds room).
    pub fn send<E: Endpoint>(&mut self, ep: &mut E) {
        // One reading for the whole turn's copies: they leave within microseconds.
        let now = self.tap.as_ref().map(|_| Instant::now());
        match &mut self.socks {
            Sockets::Udp(u) => {
                while let Some(t) = ep.poll_transmit() {
                    let i = (t.src as usize).min(u.socks.len() - 1);
                    if let (Some(tap), Some(now)) = (&mut self.tap, now) {
                        tap.copy(now, Proto::Udp, u.locals[i], t.dest, &t.data);
                    }
                    u.out[i].push(&t.data, t.dest);
                    // Copied into the batch: the buffer can take the endpoint's next message.
                    t.recycle();
                    if u.out[i].is_full() {
                        u.flush(i, &self.poller, &self.label);
                    }
                }
                for i in 0..u.socks.len() {
                    u.flush(i, &self.poller, &self.label);
                }
            }
            Sockets::Tcp(c) => {
                while let Some(t) = ep.poll_transmit() {
                    if c.connected {
                        c.out.extend_from_slice(&t.data);
                        if let (Some(tap), Some(now)) = (&mut self.tap, now) {
                            tap.copy(now, Proto::Tcp, c.local, c.peer, &t.data);
                        }
                    }
                    t.recycle();
                }
                c.write(&self.label, &self.poller);
            }
        }
        // This turn's copies and the last turn's reads go to the mirror together.
        if let Some(tap) = &mut self.tap {
            tap.flush();
        }
    }

    fn on_writable(&mut self, token: u64) {
        match &mut self.socks {
            Sockets::Udp(u) => {
                let i = token as usize;
                if i < u.socks.len() && u.blocked[i] {
                    u.blocked[i] = false;
                    let _ = self.poller.modify(&u.socks[i], token, false);
                    u.flush(i, &self.poller, &self.label);
                }
            }
            Sockets::Tcp(c) => c.write(&self.label, &self.poller),
        }
    }

    fn read<E: Endpoint>(&mut self, ep: &mut E, token: u64) {
        match &mut self.socks {
            Sockets::Udp(u) => {
                let i = token as usize;
                let (Some(sock), recv) = (u.socks.get(i), &mut u.recv) else {
                    return;
                };
                for round in 0..READ_BATCHES_PER_TURN {
                    match recv.recv(sock) {
                        Ok(0) => break,
                        Ok(n) => {
                            let at = ReadMoment::now();
                            for j in 0..n {
                                if let (data, Some(from)) = recv.get(j) {
                                    let t = recv
                                        .stamp(j)
                                        .and_then(|s| at.arrival(s, MAX_STAMP_AGE))
                                        .unwrap_or(at.mono);
                                    if let Some(tap) = &mut self.tap {
                                        tap.copy(t, Proto::Udp, from, u.locals[i], data);
                                    }
                                    ep.handle_input(t, data, from, i as u32);
                                }
                            }
                            // The count only grows: the batch's last datagram has the newest.
                            if let Some(d) = recv.dropped(n - 1) {
                                u.dropped += d.wrapping_sub(u.drop_marks[i]) as u64;
                                u.drop_marks[i] = d;
                            }
                            if !recv.filled() {
                                break;
                            }
                            if round + 1 == READ_BATCHES_PER_TURN {
                                self.backlog = true;
                            }
                        }
                        // ICMP errors surface here (ECONNREFUSED after a send to a closed
                        // port): they say nothing about the datagrams queued, keep reading.
                        Err(_) => continue,
                    }
                }
            }
            Sockets::Tcp(c) => c.read(&self.label, &self.poller, ep, self.tap.as_mut()),
        }
    }
}

impl UdpSide {
    /// Sends what socket `i` has queued, unless its buffer is known to be full.
    fn flush(&mut self, i: usize, poller: &Poller, label: &str) {
        if self.out[i].is_empty() || self.blocked[i] {
            return;
        }
        let r = self.out[i].flush(&self.socks[i]);
        if let Some(e) = r.error {
            self.errors += r.failed as u64;
            if self.errors_seen.insert(e.kind()) {
                tracing::warn!(
                    "{label}: sending failed: {e} (further errors of this kind are not shown)"
                );
            }
        }
        if r.blocked {
            // The send buffer is full: wait for room rather than spin or drop.
            self.blocked[i] = true;
            let _ = poller.modify(&self.socks[i], i as u64, true);
        }
    }
}

impl TcpConn {
    fn write(&mut self, label: &str, poller: &Poller) {
        while self.connected && self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => break,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(
                        "{label}: TCP connection to {} failed: {e}; waiting for transaction timeouts",
                        self.peer
                    );
                    self.close(poller);
                    return;
                }
            }
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        let want = self.connected && !self.out.is_empty();
        if want != self.want_write {
            self.want_write = want;
            let _ = poller.modify(&self.stream, TCP, want);
        }
    }

    fn close(&mut self, poller: &Poller) {
        self.connected = false;
        self.out.clear();
        self.written = 0;
        let _ = poller.remove(&self.stream);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Reads what is there (bounded: a peer that never stops sending still lets timers run),
    /// frames it and hands each message to the endpoint.
    fn read<E: Endpoint>(
        &mut self,
        label: &str,
        poller: &Poller,
        ep: &mut E,
        mut tap: Option<&mut Tap>,
    ) {
        for _ in 0..READ_BATCHES_PER_TURN {
            if !self.connected {
                return;
            }
            match self.stream.read(&mut self.buf) {
                Ok(0) => {
                    tracing::warn!("{label}: the target closed the TCP connection");
                    self.close(poller);
                    return;
                }
                Ok(n) => {
                    self.framer.push(&self.buf[..n]);
                    let now = Instant::now();
                    loop {
                        match self.framer.next_message() {
                            Ok(Some(m)) => {
                                if let Some(tap) = tap.as_deref_mut() {
                                    tap.copy(now, Proto::Tcp, self.peer, self.local, m);
                                }
                                ep.handle_input(now, m, self.peer, 0)
                            }
                            Ok(None) => break,
                            Err(e) => {
                                // Framing is lost for good: nothing tells where the next
                                // message starts. Count it and drop the connection.
                                tracing::warn!(
                                    "{label}: unreadable SIP stream from {} ({e}); closing it",
                                    self.peer
                                );
                                ep.stream_unreadable(&e);
                                self.close(poller);
                                return;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("{label}: TCP connection to {} failed: {e}", self.peer);
                    self.close(poller);
                    return;
                }
            }
        }
    }
}

/// The longest a driven loop sleeps without looking at its stop flag and ticks.
pub const MAX_SLEEP: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Sends what it is given, nothing else.
    struct Queue(VecDeque<Transmit>);

    impl Endpoint for Queue {
        fn handle_input(&mut self, _: Instant, _: &[u8], _: SocketAddr, _: u32) {}
        fn handle_timeout(&mut self, _: Instant) {}
        fn poll_transmit(&mut self) -> Option<Transmit> {
            self.0.pop_front()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
    }

    #[test]
    fn datagrams_the_kernel_refuses_are_counted_and_the_others_still_go() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = |dest: SocketAddr| Transmit {
            src: 0,
            dest,
            data: b"x".to_vec(),
        };
        // An IPv6 destination from an IPv4 socket: refused (EAFNOSUPPORT/EINVAL), not queued.
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        let mut ep = Queue(VecDeque::from([
            to(v6),
            to(rx.local_addr().unwrap()),
            to(v6),
        ]));
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut d = Driver::udp("test", vec![sock]).unwrap();
        d.send(&mut ep);
        assert_eq!(d.take_send_errors(), 2);
        assert_eq!(d.take_send_errors(), 0, "taken");
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(rx.recv(&mut buf).unwrap(), 1, "the good one went out");
    }
    /// Records when each datagram arrived (as the driver says) and when it was read.
    #[derive(Default)]
    struct Arrivals(Vec<(Instant, Instant)>);

    impl Endpoint for Arrivals {
        fn handle_input(&mut self, now: Instant, _: &[u8], _: SocketAddr, _: u32) {
            self.0.push((now, Instant::now()));
        }
        fn handle_timeout(&mut self, _: Instant) {}
        fn poll_transmit(&mut self) -> Option<Transmit> {
            None
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
    }

    /// The kernel turns its stamping on a moment after the first socket asks (a deferred
    /// static key); until then it stamps a datagram when it is read. Waits, bounded, until a
    /// datagram left unread for 5 ms comes with a stamp that old.
    fn stamps_taken_on_arrival(tx: &UdpSocket) {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(super::super::udp::enable_rx_timestamps(&probe));
        let to = probe.local_addr().unwrap();
        let mut b = RecvBatch::new(1, 64);
        for _ in 0..400 {
            tx.send_to(b"warm", to).unwrap();
            std::thread::sleep(Duration::from_millis(5));
            if b.recv(&probe).unwrap() == 1 {
                let at = ReadMoment::now();
                let arrived = b.stamp(0).and_then(|s| at.arrival(s, MAX_STAMP_AGE));
                if arrived.is_some_and(|t| at.mono - t >= Duration::from_millis(4)) {
                    return;
                }
            }
        }
        panic!("the kernel never stamped a datagram on arrival (2 s)");
    }

    #[test]
    fn a_busy_driver_reads_a_quantum_late_but_each_datagram_keeps_its_arrival_time() {
        // A long quantum, so that only a stall of the whole machine of that length could make
        // the first wait look idle.
        let q = Duration::from_millis(200);
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let me = sock.local_addr().unwrap();
        let mut d = Driver::udp("test", vec![sock]).unwrap();
        d.set_timer_resolution(q);
        stamps_taken_on_arrival(&tx);
        let mut ep = Arrivals::default();
        // The first datagram is waiting when the driver waits: it returns at once (busy).
        tx.send_to(b"one", me).unwrap();
        let start = Instant::now();
        d.turn(&mut ep, start + Duration::from_secs(5)).unwrap();
        assert_eq!(ep.0.len(), 1);
        let before = Instant::now();
        tx.send_to(b"two", me).unwrap();
        let after = Instant::now();
        d.turn(&mut ep, after + Duration::from_secs(5)).unwrap();
        assert_eq!(ep.0.len(), 2);
        let (arrived, read) = ep.0[1];
        assert!(
            read >= start + q,
            "read {:?} after the first turn began: not held for the quantum",
            read - start
        );
        // The kernel stamped it during send_to; mapping it by its age errs by microseconds.
        let slack = Duration::from_millis(1);
        assert!(
            arrived + slack >= before && arrived <= after + slack,
            "arrival {:?} after the send began, the send took {:?}",
            arrived.saturating_duration_since(before),
            after - before
        );
    }
    /// Counts what it is given.
    #[derive(Default)]
    struct Count(u64);

    impl Endpoint for Count {
        fn handle_input(&mut self, _: Instant, _: &[u8], _: SocketAddr, _: u32) {
            self.0 += 1;
        }
        fn handle_timeout(&mut self, _: Instant) {}
        fn poll_transmit(&mut self) -> Option<Transmit> {
            None
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
    }

    #[test]
    fn datagrams_dropped_for_a_full_receive_buffer_are_counted() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket2::SockRef::from(&sock)
            .set_recv_buffer_size(16 << 10)
            .unwrap();
        let me = sock.local_addr().unwrap();
        let mut d = Driver::udp("test", vec![sock]).unwrap();
        let mut ep = Count::default();
        // Nobody reads while they arrive: a small buffer holds a few, the kernel drops the rest.
        // On loopback every send succeeds; what does not reach the endpoint was dropped.
        const SENT: u64 = 500;
        for _ in 0..SENT {
            tx.send_to(&[b'x'; 1000], me).unwrap();
        }
        let turns = |d: &mut Driver, ep: &mut Count| {
            for _ in 0..50 {
                d.turn(ep, Instant::now() + Duration::from_millis(2))
                    .unwrap();
            }
        };
        turns(&mut d, &mut ep);
        // A datagram carries the count as it was when it was queued: the drops after the last
        // one that fitted come with the next one.
        tx.send_to(b"next", me).unwrap();
        turns(&mut d, &mut ep);
        let dropped = d.take_rx_dropped();
        assert!(ep.0 > 1 && dropped > 0, "read {}, dropped {dropped}", ep.0);
        assert_eq!(ep.0 + dropped, SENT + 1, "read {}, dropped {dropped}", ep.0);
        assert_eq!(d.take_rx_dropped(), 0, "taken");
    }
}
