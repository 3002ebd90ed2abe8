//! Sockets for SIP: UDP with large kernel buffers, and TCP byte streams cut into messages by
//! Content-Length. No protocol logic here; the engines hand bytes in and out.

use super::message::{frame, Frame, ParseError};
use std::net::SocketAddr;

/// A datagram (or stream message) a sans-IO endpoint wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Index of the local socket to send from (into the endpoint's list of local addresses):
    /// a P-CSCF tells UEs apart by source address and port, so each user's messages must
    /// leave from its own socket.
    pub src: u32,
    pub dest: SocketAddr,
    pub data: Vec<u8>,
}

impl Transmit {
    /// Gives the bytes back to this thread's [`buffer`] pool once they are on their way (copied
    /// into a send batch or a stream's output): the next message is written into them.
    pub fn recycle(self) {
        recycle(self.data);
    }
}

/// Buffers a thread keeps for messages to be written into. A message is born in one
/// ([`buffer`]) and handed back ([`recycle`]) once sent or no longer needed for retransmission,
/// so that steady-state traffic reuses a working set instead of asking the allocator for a
/// `Vec` per message. Per thread because each worker runs its cores and its driver on one
/// thread, and because the sans-IO machines then need no pool passed down to every place that
/// writes a message.
mod pool {
    use std::cell::RefCell;

    /// Enough for a worker's messages in flight between two turns of its loop; more is a burst
    /// that the allocator can serve.
    const MAX_FREE: usize = 4096;
    /// A buffer grown past this (a huge message) is not worth keeping.
    const MAX_KEPT: usize = 16 << 10;
    /// What a fresh buffer starts with: most of our messages fit.
    pub const FRESH: usize = 768;

    thread_local! {
        static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    pub fn take(capacity: usize) -> Vec<u8> {
        let buf = FREE.with(|f| f.borrow_mut().pop());
        match buf {
            Some(mut b) => {
                b.reserve(capacity);
                b
            }
            None => Vec::with_capacity(capacity.max(FRESH)),
        }
    }

    pub fn give(mut buf: Vec<u8>) {
        // A buffer smaller than a fresh one would only be grown again when taken.
        if buf.capacity() < FRESH || buf.capacity() > MAX_KEPT {
            return;
        }
        buf.clear();
        FREE.with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < MAX_FREE {
                f.push(buf);
            }
        });
    }
}

/// An empty buffer with room for at least `capacity` bytes, from this thread's pool when it
/// has one.
pub fn buffer(capacity: usize) -> Vec<u8> {
    pool::take(capacity)
}

/// A pooled copy of `data` (a request kept for retransmission, a repeated response).
pub fn copy(data: &[u8]) -> Vec<u8> {
    let mut b = pool::take(data.len());
    b.extend_from_slice(data);
    b
}

/// Hands a message buffer back to this thread's pool.
pub fn recycle(buf: Vec<u8>) {
    pool::give(buf)
}

/// Transport named on the command line.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// The Via transport token.
    pub fn via(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
    pub fn param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
    pub fn reliable(self) -> bool {
        self == Transport::Tcp
    }
}

/// Kernel socket buffer size asked for. SIPp's 64 KiB default drops datagrams even on loopback
/// under load; 8 MiB absorbs a one-second burst at 10k messages/s. The kernel caps it at
/// `net.core.rmem_max` unless we are root (SO_RCVBUFFORCE).
pub const SOCKET_BUFFER: usize = 8 << 20;

/// A non-blocking UDP socket bound to `local`, with large buffers.
pub fn udp_socket(local: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
    set_big_buffers(&s);
    s.bind(&local.into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Asks for [`SOCKET_BUFFER`]-sized buffers, forcing past rmem_max when privileged.
pub fn set_big_buffers(s: &socket2::Socket) {
    use std::os::fd::AsRawFd;
    for (force, normal) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let v = SOCKET_BUFFER as libc::c_int;
        // SAFETY: setsockopt with a valid fd and a pointer to a c_int of the size we pass.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                force,
                &v as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            // SAFETY: as above.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    normal,
                    &v as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
}

/// Accumulates bytes from a stream and yields whole SIP messages (Content-Length framing).
/// Linear in the bytes pushed, whatever the segments: what is known of the pending message
/// (how far its header has been searched, or its whole length) is kept between pushes.
#[derive(Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
    start: usize,
    /// What is known of the message at `start`.
    pending: Pending,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// Its first this many bytes hold no end of its header section.
    Searched(usize),
    /// Its header section has ended: it is this long.
    Length(usize),
}

impl Default for Pending {
    fn default() -> Pending {
        Pending::Searched(0)
    }
}

impl StreamFramer {
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, or `None` when more bytes are needed. Keep-alive CRLFs are
    /// skipped. A framing error poisons the stream (the caller should drop the connection),
    /// because after a bad Content-Length nothing tells where the next message starts.
    pub fn next_message(&mut self) -> Result<Option<&[u8]>, ParseError> {
        loop {
            let pending = &self.buf[self.start..];
            let state = match self.pending {
                Pending::Length(n) if pending.len() < n => Frame::NeedBody(n),
                Pending::Length(n) => Frame::Complete(n),
                Pending::Searched(k) => frame(pending, k)?,
            };
            match state {
                Frame::NeedHeader | Frame::NeedBody(_) => {
                    self.pending = match state {
                        Frame::NeedBody(n) => Pending::Length(n),
                        _ => Pending::Searched(pending.len()),
                    };
                    if self.start > 0 {
                        self.buf.drain(..self.start);
                        self.start = 0;
                    }
                    return Ok(None);
                }
                Frame::Complete(n) => {
                    // `frame` never yields an empty frame (a header section is at least its
                    // blank line); were it to, this loop would spin without consuming input.
                    debug_assert!(n > 0);
                    let s = self.start;
                    self.start += n;
                    self.pending = Pending::Searched(0);
                    if pending[0] == b'\r' || pending[0] == b'\n' {
                        continue;
                    }
                    return Ok(Some(&self.buf[s..s + n]));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_hands_back_what_was_recycled() {
        let mut b = buffer(10);
        assert!(b.capacity() >= 768);
        b.extend_from_slice(b"INVITE");
        let p = b.as_ptr();
        recycle(b);
        let again = copy(b"ACK");
        assert_eq!(
            (again.as_ptr(), &again[..]),
            (p, &b"ACK"[..]),
            "reused, cleared"
        );
        // Too small to be worth keeping: the next buffer is a fresh one.
        recycle(Vec::with_capacity(16));
        assert!(buffer(0).capacity() >= 768);
    }

    #[test]
    fn framer_finds_a_header_end_cut_anywhere() {
        // A 4 KiB header section (long Route sets are real), then a body, twice, with
        // keep-alives between: fed one byte at a time, every cut of the blank line is met.
        let route = "Route: <sip:pcscf.ims.mnc001.mcc001.3gppnetwork.org:5060;lr>\r\n".repeat(64);
        let m = format!(
            "MESSAGE sip:a SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n{route}Content-Length: 5\r\n\r\nhello"
        );
        let lf = m.replace("\r\n", "\n");
        let stream = format!("{m}\r\n\r\n{lf}{m}");
        for step in [1, 2, 3, 5, 1460] {
            let mut f = StreamFramer::default();
            let mut got = Vec::new();
            for chunk in stream.as_bytes().chunks(step) {
                f.push(chunk);
                while let Some(msg) = f.next_message().unwrap() {
                    got.push(msg.to_vec());
                }
            }
            assert_eq!(
                got,
                [m.as_bytes(), lf.as_bytes(), m.as_bytes()],
                "step {step}"
            );
        }
    }

    #[test]
    fn framer_splits_and_joins() {
        let m = "OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 2\r\n\r\nhi";
        let all = format!("\r\n\r\n{m}{m}");
        let mut f = StreamFramer::default();
        // Feed in 7-byte pieces: every message must come out whole, exactly twice.
        let mut got = Vec::new();
        for chunk in all.as_bytes().chunks(7) {
            f.push(chunk);
            while let Some(msg) = f.next_message().unwrap() {
                got.push(msg.to_vec());
            }
        }
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|g| g == m.as_bytes()));
    }

    /// Issue 10: `Content-Length: 2^64 - header length` wrapped to a 0-byte frame that was
    /// yielded forever; 10^12 made the framer buffer without bound. Both are now errors at once.
    #[test]
    fn framer_errs_on_hostile_lengths_and_never_stalls() {
        let head = "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: ";
        let len_with = |v: u64| head.len() as u64 + v.to_string().len() as u64 + 4;
        // Find the value whose sum with the header length is 2^64 (mod 2^64).
        let mut v = u64::MAX - len_with(u64::MAX) + 1;
        while v.wrapping_add(len_with(v)) != 0 {
            v += 1;
        }
        for cl in [v, 1_000_000_000_000] {
            let mut f = StreamFramer::default();
            f.push(format!("{head}{cl}\r\n\r\n").as_bytes());
            assert!(f.next_message().is_err(), "{cl}");
        }
        // Bytes that never end a header section: an error once past the header limit, not growth.
        let mut f = StreamFramer::default();
        let junk = vec![b'a'; 4096];
        let mut failed = false;
        for _ in 0..(2 * crate::sip::message::MAX_HEADER_LEN / junk.len()) {
            f.push(&junk);
            if f.next_message().is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }

    #[test]
    fn framer_rejects_bad_length() {
        let mut f = StreamFramer::default();
        f.push(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: x\r\n\r\n");
        assert!(f.next_message().is_err());
    }
}
