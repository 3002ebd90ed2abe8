//! Probes over TCP (SIP OPTIONS, Diameter DWR): one connection per target and layer, shared by
//! the pacer (which writes) and the receiver (which reads, frames and reconnects).
//!
//! - A protocol that opens with a handshake (Diameter's CER) gives the link a greeting: it is
//!   written on every new connection before the pacer can see the connection, so it always
//!   precedes the probes on the stream.
//! - Answers the receiver owes the peer (a Diameter peer's own DWR) are queued on the link and
//!   written by the pacer ahead of its next probe: one writer per socket, so messages never
//!   interleave.
//!
//! - The connection is made before probing. Losing it is an outage: every probe the pacer sends
//!   while it is down is a `send_error` (`ENOTCONN`), so it counts as lost; probes in flight on
//!   the lost connection never get a reply and count as lost after `--timeout`.
//! - The pacer never blocks: it writes with `MSG_DONTWAIT`. A write that would block (the peer
//!   stopped reading and both socket buffers are full) is a `send_error` (`EAGAIN`) instead of a
//!   stall of the schedule. A write cut short is finished before the next probe, so the stream
//!   always holds whole messages.
//! - The receiver reconnects: at most one attempt every [`RECONNECT_EVERY_NS`], each bounded by
//!   the same time, so it notices the end of the run promptly. The pacer picks up a new
//!   connection at its next tick (a generation counter, no lock on the fast path).
//! - Receive times are CLOCK_MONOTONIC read just after `recv()` returns: on a stream socket the
//!   kernel's `SO_TIMESTAMPNS` stamp is not per message (segments that wait for a late reader
//!   are merged, and the merged buffer keeps the newest segment's stamp). Each read carries
//!   instead a measured bound on how late the reader was ([`Lateness`]); see `docs/imsprobe.md`.

use super::net;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// At most one reconnect attempt per this long (and each attempt waits at most this long).
pub const RECONNECT_EVERY_NS: u64 = 100_000_000;

/// Connection counters, reported per SIP layer.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TcpStats {
    /// Successful connects, the first included.
    pub connects: u64,
    /// Successful connects after a loss.
    pub reconnects: u64,
    /// Connections lost (closed or reset by the peer, write or read errors, framing errors).
    pub connection_losses: u64,
    /// Reconnect attempts that failed.
    pub failed_reconnects: u64,
    /// Probes sent while no connection was up (`send_error` with `ENOTCONN`).
    pub sent_while_down: u64,
    /// Probes whose write would have blocked (`send_error` with `EAGAIN`).
    pub would_block: u64,
    /// Why connections were lost, by kind.
    pub loss_reasons: std::collections::BTreeMap<String, u64>,
}

/// The connection of one target.
pub struct TcpLink {
    pub target: SocketAddr,
    conn: Mutex<Option<Arc<Socket>>>,
    /// Bumped on every connect and every loss.
    gen: AtomicU64,
    stats: Mutex<TcpStats>,
    pub sent_while_down: AtomicU64,
    pub would_block: AtomicU64,
    /// Written first on every connection (empty: nothing).
    greeting: Vec<u8>,
    /// Answers to the peer's requests, for the pacer to write; `queued` avoids the lock when
    /// there are none (every tick checks).
    replies: Mutex<Vec<u8>>,
    queued: std::sync::atomic::AtomicBool,
}

/// Opens a TCP connection to `target` within `timeout`: no Nagle delay, big buffers.
pub fn connect(target: SocketAddr, timeout: Duration) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    crate::sip::transport::set_big_buffers(&s);
    s.set_tcp_nodelay(true)?;
    s.connect_timeout(&target.into(), timeout)?;
    Ok(s)
}

impl TcpLink {
    /// Connects (blocking up to `timeout`); the error when the target does not accept.
    pub fn open(target: SocketAddr, timeout: Duration) -> io::Result<TcpLink> {
        TcpLink::open_with_greeting(target, timeout, Vec::new())
    }

    /// Connects and writes `greeting` (blocking up to `timeout`), as after every reconnect.
    pub fn open_with_greeting(
        target: SocketAddr,
        timeout: Duration,
        greeting: Vec<u8>,
    ) -> io::Result<TcpLink> {
        let s = connect(target, timeout)?;
        greet(&s, &greeting, timeout)?;
        let link = TcpLink {
            target,
            conn: Mutex::new(None),
            gen: AtomicU64::new(0),
            stats: Mutex::new(TcpStats::default()),
            sent_while_down: AtomicU64::new(0),
            would_block: AtomicU64::new(0),
            greeting,
            replies: Mutex::new(Vec::new()),
            queued: std::sync::atomic::AtomicBool::new(false),
        };
        link.install(s, false);
        Ok(link)
    }

    fn lock_conn(&self) -> std::sync::MutexGuard<'_, Option<Arc<Socket>>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_stats(&self) -> std::sync::MutexGuard<'_, TcpStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn generation(&self) -> u64 {
        self.gen.load(Ordering::Acquire)
    }

    /// The current connection and its generation.
    pub fn current(&self) -> (u64, Option<Arc<Socket>>) {
        let g = self.lock_conn();
        (self.gen.load(Ordering::Acquire), g.clone())
    }

    /// The local address of the current connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.lock_conn()
            .as_ref()
            .and_then(|s| s.local_addr().ok())
            .and_then(|a| a.as_socket())
    }

    fn install(&self, s: Socket, reconnect: bool) {
        let mut g = self.lock_conn();
        *g = Some(Arc::new(s));
        self.gen.fetch_add(1, Ordering::AcqRel);
        drop(g);
        let mut st = self.lock_stats();
        st.connects += 1;
        if reconnect {
            st.reconnects += 1;
        }
    }

    /// Declares connection `gen` lost (a no-op when it was already replaced or lost). True when
    /// this call took it down.
    pub fn mark_down(&self, gen: u64, reason: &str) -> bool {
        let mut g = self.lock_conn();
        if self.gen.load(Ordering::Acquire) != gen || g.is_none() {
            return false;
        }
        if let Some(s) = g.take() {
            // Wake whoever waits on it; the socket closes when the last holder drops it.
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.gen.fetch_add(1, Ordering::AcqRel);
        drop(g);
        let mut st = self.lock_stats();
        st.connection_losses += 1;
        *st.loss_reasons.entry(reason.to_string()).or_default() += 1;
        true
    }

    /// One reconnect attempt (receiver thread).
    pub fn reconnect(&self) -> io::Result<()> {
        let limit = Duration::from_nanos(RECONNECT_EVERY_NS);
        match connect(self.target, limit).and_then(|s| greet(&s, &self.greeting, limit).map(|_| s))
        {
            Ok(s) => {
                self.install(s, true);
                Ok(())
            }
            Err(e) => {
                self.lock_stats().failed_reconnects += 1;
                Err(e)
            }
        }
    }

    /// Queues `answer` for the pacer to write before its next probe.
    pub fn queue_reply(&self, answer: &[u8]) {
        self.replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(answer);
        self.queued.store(true, Ordering::Release);
    }

    fn take_replies(&self, into: &mut Vec<u8>) {
        if self.queued.swap(false, Ordering::AcqRel) {
            into.append(&mut self.replies.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    pub fn stats(&self) -> TcpStats {
        let mut st = self.lock_stats().clone();
        st.sent_while_down = self.sent_while_down.load(Ordering::Relaxed);
        st.would_block = self.would_block.load(Ordering::Relaxed);
        st
    }

    /// Closes the connection at the end of the run.
    pub fn close(&self) {
        if let Some(s) = self.lock_conn().take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Writes the whole greeting on a fresh, still blocking connection.
fn greet(s: &Socket, greeting: &[u8], timeout: Duration) -> io::Result<()> {
    if greeting.is_empty() {
        return Ok(());
    }
    s.set_write_timeout(Some(timeout))?;
    let mut w: &Socket = s;
    io::Write::write_all(&mut w, greeting)?;
    s.set_write_timeout(None)
}

/// The pacer's side of a link: the connection it last saw, and the unsent tail of a write cut
/// short.
pub struct TcpSender {
    link: Arc<TcpLink>,
    gen: u64,
    conn: Option<Arc<Socket>>,
    pending: Vec<u8>,
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn send_some(s: &Socket, buf: &[u8]) -> Result<usize, i32> {
    // SAFETY: valid fd and buffer.
    let n = unsafe {
        libc::send(
            s.as_raw_fd(),
            buf.as_ptr() as *const libc::c_void,
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(errno_of(&io::Error::last_os_error()))
    } else {
        Ok(n as usize)
    }
}

impl TcpSender {
    pub fn new(link: Arc<TcpLink>) -> TcpSender {
        let (gen, conn) = link.current();
        TcpSender {
            link,
            gen,
            conn,
            pending: Vec::new(),
        }
    }

    fn fail(&mut self, errno: i32) -> Result<(), i32> {
        if errno == libc::EAGAIN || errno == libc::EWOULDBLOCK {
            self.link.would_block.fetch_add(1, Ordering::Relaxed);
        } else {
            let reason = format!("send: {}", io::Error::from_raw_os_error(errno));
            self.link.mark_down(self.gen, &reason);
        }
        Err(errno)
    }

    /// Writes `msg` without blocking. `Err(errno)`: the probe did not leave (`ENOTCONN` while
    /// the connection is down, `EAGAIN` when the write would block).
    pub fn send(&mut self, msg: &[u8]) -> Result<(), i32> {
        let g = self.link.generation();
        if g != self.gen {
            (self.gen, self.conn) = self.link.current();
            self.pending.clear();
        }
        let Some(s) = self.conn.clone() else {
            self.link.sent_while_down.fetch_add(1, Ordering::Relaxed);
            return Err(libc::ENOTCONN);
        };
        // Answers owed to the peer go out ahead of the probe, through the same pending path.
        self.link.take_replies(&mut self.pending);
        if !self.pending.is_empty() {
            match send_some(&s, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                    if !self.pending.is_empty() {
                        return self.fail(libc::EAGAIN);
                    }
                }
                Err(e) => return self.fail(e),
            }
        }
        match send_some(&s, msg) {
            Ok(n) => {
                if n < msg.len() {
                    // In flight; the rest goes first at the next tick.
                    self.pending.extend_from_slice(&msg[n..]);
                }
                Ok(())
            }
            Err(e) => self.fail(e),
        }
    }
}

/// What the receiver read: bytes (with how late the reader may have been for the oldest of
/// them, ns), end of stream, or nothing yet.
pub enum Read {
    Data(usize, u32),
    Closed,
    Nothing,
}

/// How long data can have waited in a TCP socket before the reader's `recv()` returned it.
///
/// Data that reaches the socket while the reader sleeps in `poll()` wakes it; from then until
/// `recv()` returns, the reader is either waiting for a CPU (the run-queue delay the kernel adds
/// up per thread in `/proc/thread-self/schedstat`) or awake. So the bound for a read is the
/// reader's wall time since it last emptied the socket, minus the time it provably slept in
/// `poll()` (the poll's wall time less the run-queue delay that accrued meanwhile). A reader
/// held up anywhere else (a lock, a log line, a CPU hog) counts as late, never as asleep.
///
/// Over a stream the kernel's receive stamp cannot replace this: segments that arrive while the
/// reader is late are merged into one buffer stamped with the newest of them.
pub struct Lateness {
    /// `/proc/thread-self/schedstat` of the reading thread; `None`: not available here (the
    /// bound then leaves out run-queue delays, see [`Lateness::measured`]).
    schedstat: Option<std::fs::File>,
    run_delay_ns: u64,
    /// CLOCK_MONOTONIC just before the `recv()` that last emptied the socket.
    since_ns: u64,
    asleep_ns: u64,
}

impl Lateness {
    /// A meter for the calling thread (it reads this thread's counters: create it on the thread
    /// that reads the socket), counting from now.
    pub fn new() -> Lateness {
        let schedstat = std::fs::File::open("/proc/thread-self/schedstat").ok();
        let mut l = Lateness {
            schedstat,
            run_delay_ns: 0,
            since_ns: 0,
            asleep_ns: 0,
        };
        if l.read_run_delay().is_none() {
            l.schedstat = None;
        }
        l.run_delay_ns = l.read_run_delay().unwrap_or(0);
        l.restart();
        l
    }

    /// Whether run-queue delays are counted (the kernel offers per-thread schedstat).
    pub fn measured(&self) -> bool {
        self.schedstat.is_some()
    }

    /// A new connection: nothing on it is older than now.
    pub fn restart(&mut self) {
        self.since_ns = crate::clock::monotonic_ns();
        self.asleep_ns = 0;
    }

    /// The thread's total run-queue delay, ns (second field of schedstat).
    fn read_run_delay(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let f = self.schedstat.as_ref()?;
        let mut buf = [0u8; 96];
        let n = f.read_at(&mut buf, 0).ok()?;
        std::str::from_utf8(&buf[..n])
            .ok()?
            .split_ascii_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// `poll()` for `fd` readable, up to `timeout_ms`, counting the time asleep.
    fn wait_readable(&mut self, fd: std::os::fd::RawFd, timeout_ms: i32) -> io::Result<bool> {
        let p0 = crate::clock::monotonic_ns();
        let r = net::wait_readable(fd, timeout_ms);
        let p1 = crate::clock::monotonic_ns();
        // Any run-queue delay since the last sample is taken as part of this wake-up, which
        // can only make the bound larger.
        let delay = match self.read_run_delay() {
            Some(d) => {
                let w = d.saturating_sub(self.run_delay_ns);
                self.run_delay_ns = d;
                w
            }
            None => 0,
        };
        self.asleep_ns += (p1 - p0).saturating_sub(delay);
        if let Ok(false) = r {
            // A poll that timed out leaves every wake-up delay of an idle reader in the bound
            // (one per timeout). A look without waiting proves the socket empty now instead.
            let t = crate::clock::monotonic_ns();
            if net::wait_readable(fd, 0)? {
                return Ok(true);
            }
            self.since_ns = t;
            self.asleep_ns = 0;
        }
        r
    }

    /// After a `recv()` that began at `began_ns`: the bound for the data it returned. `emptied`:
    /// the read took everything there was (it did not fill the buffer), so later data arrived
    /// after `began_ns`.
    fn after_read(&mut self, began_ns: u64, emptied: bool) -> u32 {
        let now = crate::clock::monotonic_ns();
        let late = (now.saturating_sub(self.since_ns)).saturating_sub(self.asleep_ns);
        if emptied {
            self.since_ns = began_ns;
            self.asleep_ns = 0;
        }
        late.min(u32::MAX as u64) as u32
    }
}

impl Default for Lateness {
    fn default() -> Self {
        Lateness::new()
    }
}

/// Waits up to `timeout_ms` for data on `s` and reads what is there without blocking; `late`
/// measures how long it may have waited for us.
pub fn read_some(
    s: &Socket,
    buf: &mut [u8],
    timeout_ms: i32,
    late: &mut Lateness,
) -> io::Result<Read> {
    if !late.wait_readable(s.as_raw_fd(), timeout_ms)? {
        return Ok(Read::Nothing);
    }
    let began = crate::clock::monotonic_ns();
    // SAFETY: valid fd and buffer.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(Read::Nothing),
            _ => Err(e),
        };
    }
    let n = n as usize;
    Ok(if n == 0 {
        Read::Closed
    } else {
        Read::Data(n, late.after_read(began, n < buf.len()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    /// Data that waits while the reader is busy (here: spinning for 30 ms) is read with a bound
    /// of at least that wait; data read by a reader that slept in poll() until it came gets a
    /// small bound, not the sleep.
    #[test]
    fn lateness_covers_a_busy_reader_and_not_its_sleep() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let link = TcpLink::open(l.local_addr().unwrap(), Duration::from_secs(1)).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        let s = link.current().1.unwrap();
        let mut late = Lateness::new();
        let mut buf = [0u8; 1024];
        use std::io::Write as _;
        peer.write_all(b"early").unwrap();
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_millis(30) {
            std::hint::spin_loop();
        }
        match read_some(&s, &mut buf, 1000, &mut late).unwrap() {
            Read::Data(5, early) => assert!(early >= 30_000_000, "{early}"),
            _ => panic!("expected the 5 bytes"),
        }
        let t1 = std::time::Instant::now();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            peer.write_all(b"later").unwrap();
            peer
        });
        match read_some(&s, &mut buf, 1000, &mut late).unwrap() {
            // It slept at least 200 ms in poll(); the bound is what remains of the wall time,
            // its wake-up and bookkeeping (run-queue waits lengthen both alike).
            Read::Data(5, early) => {
                let wall = t1.elapsed().as_nanos() as u64;
                assert!(early as u64 + 150_000_000 <= wall, "{early} of {wall}");
            }
            _ => panic!("expected the 5 bytes"),
        }
        assert!(
            late.measured(),
            "this kernel offers /proc/thread-self/schedstat"
        );
        drop(writer.join());
    }

    #[test]
    fn sender_counts_down_time_and_link_reconnects() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let link = Arc::new(TcpLink::open(addr, Duration::from_secs(1)).unwrap());
        let (mut peer, _) = l.accept().unwrap();
        let mut tx = TcpSender::new(link.clone());
        tx.send(b"hello").unwrap();
        let mut got = [0u8; 5];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        let (g, _) = link.current();
        assert!(link.mark_down(g, "test"));
        assert!(!link.mark_down(g, "test"), "only once");
        assert_eq!(tx.send(b"x"), Err(libc::ENOTCONN));
        link.reconnect().unwrap();
        let (mut peer2, _) = l.accept().unwrap();
        tx.send(b"again").unwrap();
        let mut got = [0u8; 5];
        peer2.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"again");
        let st = link.stats();
        assert_eq!(
            (
                st.connects,
                st.reconnects,
                st.connection_losses,
                st.sent_while_down
            ),
            (2, 1, 1, 1)
        );
        drop(l);
        drop(peer2);
        link.close();
        assert!(link.local_addr().is_none());
    }

    #[test]
    fn a_peer_that_stops_reading_makes_writes_fail_not_block() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let link =
            Arc::new(TcpLink::open(l.local_addr().unwrap(), Duration::from_secs(1)).unwrap());
        let (mut peer, _) = l.accept().unwrap();
        link.current()
            .1
            .unwrap()
            .set_send_buffer_size(4096)
            .unwrap();
        let mut tx = TcpSender::new(link.clone());
        let msg = [b'x'; 1000];
        let t0 = std::time::Instant::now();
        let mut sent = 0usize;
        let mut failed = 0usize;
        for _ in 0..20_000 {
            match tx.send(&msg) {
                Ok(()) => sent += 1,
                Err(e) => {
                    assert_eq!(e, libc::EAGAIN);
                    failed += 1;
                }
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "never blocks");
        assert!(failed > 0 && sent > 0, "sent {sent} failed {failed}");
        assert_eq!(link.stats().would_block, failed as u64);
        assert_eq!(link.stats().connection_losses, 0);
        // The peer reads again: whole messages arrive (a write cut short is finished first).
        peer.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let _ = tx.send(&msg);
            match peer.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
            if got.len() > (sent + 10) * 1000 {
                break;
            }
        }
        assert!(got.iter().all(|&b| b == b'x'));
        assert!(got.len() >= sent * 1000);
    }
}
