//! Datagrams in batches: `recvmmsg` and `sendmmsg` move up to [`BATCH`] datagrams per system
//! call. At 10k calls/s a worker moves ~60k datagrams a second; one syscall each was a third of
//! its CPU (see docs/imsload.md, "Engine").
//!
//! On a socket that asks for it ([`SendBatch::set_trains`]: `--media-gso`, RTP only),
//! datagrams of one size to one destination (every G.711 packet of a worker's streams to the
//! far worker's media socket) go out as the segments of one UDP GSO send (`UDP_SEGMENT`), and a
//! socket with [`enable_rx_gro`] reads such a train in one piece: the kernel walks its send and
//! receive paths once per train, not once per packet, which is most of what 200,000 packets a
//! second cost (docs/media.md, "Measured").

use socket2::SockAddr;
use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams per system call. 32 covers a 1 ms turn at 30k datagrams/s per worker; more only
/// grows the buffers.
pub const BATCH: usize = 32;

/// The largest datagram we read. A UDP payload cannot be larger; a SIP message over UDP is
/// far smaller, but a short buffer would truncate silently.
const DATAGRAM: usize = 65536;

/// Room for an `SCM_TIMESTAMPNS` (32 bytes with its header), an `SO_RXQ_OVFL` (24) and a
/// `UDP_GRO` (24) control message, 8-aligned.
const CMSG_WORDS: usize = 10;

/// `UDP_SEGMENT` and `UDP_GRO` (linux/udp.h, Linux 4.18 and 5.0); the libc crate defines them
/// for some Linux targets only.
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// Segments per GSO send: the kernel's `UDP_MAX_SEGMENTS` before Linux 6.9 (later ones take
/// 128).
const GSO_MAX_SEGMENTS: usize = 64;
/// Only datagrams up to this size are sent as segments: each segment with its IP and UDP
/// headers must fit the route's MTU (the kernel refuses the whole send otherwise), which we do
/// not know here; 1,200 bytes fits any link a SIP or RTP path uses.
const GSO_MAX_SEGMENT: usize = 1200;
/// A GSO send is one IP datagram's payload before segmentation.
const GSO_MAX_BYTES: usize = 65000;
/// Datagrams one socket queues before they must go: enough for a turn's packets to one
/// destination to leave as a few GSO sends, not one per [`BATCH`].
const QUEUE_LIMIT: usize = 8 * BATCH;
/// More destinations than this in one flush: send in the order queued, without grouping.
const GROUP_MAX_DESTINATIONS: usize = 8;

/// Receive buffers for `recvmmsg`, reused for every batch: each datagram with its sender and,
/// on a socket with [`enable_rx_timestamps`], the kernel's receive stamp. With the stamps a
/// batch read late (a worker that lets input gather, a thread scheduled late) still knows when
/// each datagram arrived.
pub struct RecvBatch {
    slot_len: usize,
    bufs: Vec<u8>,
    addrs: Vec<MaybeUninit<libc::sockaddr_storage>>,
    cmsg: Vec<[u64; CMSG_WORDS]>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Messages read by the last call.
    n: usize,
    /// Each datagram of the last call: its message, offset and length there (a message read
    /// with `UDP_GRO` holds several).
    dgrams: Vec<(u32, u32, u32)>,
}

// SAFETY: the raw pointers inside point into the batch's own heap buffers, which move with it.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    /// [`BATCH`] slots of the largest UDP payload.
    fn default() -> Self {
        RecvBatch::new(BATCH, DATAGRAM)
    }
}

impl RecvBatch {
    /// Up to `slots` datagrams per call, each cut at `slot_len` bytes.
    pub fn new(slots: usize, slot_len: usize) -> RecvBatch {
        let slots = slots.max(1);
        RecvBatch {
            slot_len,
            bufs: vec![0u8; slots * slot_len],
            addrs: vec![MaybeUninit::zeroed(); slots],
            cmsg: vec![[0u64; CMSG_WORDS]; slots],
            // SAFETY: all-zero iovec and mmsghdr are valid (null pointers, zero lengths); they
            // are filled in before every call.
            iovs: vec![unsafe { std::mem::zeroed() }; slots],
            hdrs: vec![unsafe { std::mem::zeroed() }; slots],
            n: 0,
            dgrams: Vec::with_capacity(slots),
        }
    }

    /// Reads what is waiting, up to one message per slot, without blocking, and returns how
    /// many datagrams that was (more than the slots when a message was a GRO train); `Ok(0)`
    /// when none is queued. [`RecvBatch::filled`] says whether more may be waiting.
    pub fn recv(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        self.dgrams.clear();
        let slots = self.hdrs.len();
        let base = self.bufs.as_mut_ptr();
        for i in 0..slots {
            self.iovs[i] = libc::iovec {
                // SAFETY: slot i lies inside `bufs` (slots · slot_len bytes).
                iov_base: unsafe { base.add(i * self.slot_len) } as *mut libc::c_void,
                iov_len: self.slot_len,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = self.addrs[i].as_mut_ptr() as *mut libc::c_void;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.cmsg[i].as_mut_ptr() as *mut libc::c_void;
            h.msg_controllen = std::mem::size_of::<[u64; CMSG_WORDS]>() as _;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at live buffers of the sizes given.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                slots as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.n = 0;
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        self.n = n as usize;
        for m in 0..self.n {
            let len = (self.hdrs[m].msg_len as usize).min(self.slot_len);
            let mut seg = 0;
            self.control(m, |level, kind, data| {
                if level == libc::SOL_UDP && kind == UDP_GRO {
                    // SAFETY: a UDP_GRO message carries an int, the segment size.
                    seg = unsafe { std::ptr::read_unaligned(data as *const libc::c_int) };
                }
            });
            let seg = usize::try_from(seg).unwrap_or(0);
            if seg == 0 || seg >= len {
                self.dgrams.push((m as u32, 0, len as u32));
                continue;
            }
            // A train: segments of `seg` bytes, the last one possibly shorter.
            let mut off = 0;
            while off < len {
                let l = seg.min(len - off);
                self.dgrams.push((m as u32, off as u32, l as u32));
                off += l;
            }
        }
        Ok(self.dgrams.len())
    }

    /// The last call filled every slot: more may be waiting.
    pub fn filled(&self) -> bool {
        self.n == self.hdrs.len()
    }

    /// Datagram `i` of the last batch and its sender (`None` for an address family we do not
    /// speak, which a UDP/IP socket never reports).
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let (m, off, len) = self.dgrams[i];
        let (m, off, len) = (m as usize, off as usize, len as usize);
        let at = m * self.slot_len + off;
        let data = &self.bufs[at..at + len];
        let alen = self.hdrs[m].msg_hdr.msg_namelen as usize;
        // SAFETY: the storage was zeroed and the kernel wrote a sockaddr of `alen` bytes into it.
        let st = unsafe { self.addrs[m].assume_init_ref() };
        (data, to_socket_addr(st, alen))
    }

    /// The kernel's receive stamp of datagram `i` (CLOCK_REALTIME `(sec, nsec)`), when the
    /// socket has them on. Map it with [`crate::clock::ReadMoment`], by its age.
    pub fn stamp(&self, i: usize) -> Option<(i64, i64)> {
        let mut ts = None;
        self.control(self.dgrams[i].0 as usize, |level, kind, data| {
            if level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPNS {
                // SAFETY: an SCM_TIMESTAMPNS message carries a timespec.
                let t = unsafe { std::ptr::read_unaligned(data as *const libc::timespec) };
                ts = Some((t.tv_sec as i64, t.tv_nsec as i64));
            }
        });
        ts
    }

    /// The socket's count of datagrams the kernel dropped (its receive buffer was full) when
    /// datagram `i` was queued, on a socket with [`enable_rx_drop_count`]. It only grows
    /// (modulo 2^32); the kernel sends it once it is not zero.
    pub fn dropped(&self, i: usize) -> Option<u32> {
        let mut n = None;
        self.control(self.dgrams[i].0 as usize, |level, kind, data| {
            if level == libc::SOL_SOCKET && kind == libc::SO_RXQ_OVFL {
                // SAFETY: an SO_RXQ_OVFL message carries a u32.
                n = Some(unsafe { std::ptr::read_unaligned(data as *const u32) });
            }
        });
        n
    }

    /// Each control message of message `m`: level, type, and a pointer to its data.
    fn control(&self, m: usize, mut f: impl FnMut(libc::c_int, libc::c_int, *const u8)) {
        debug_assert!(m < self.n);
        let msg = &self.hdrs[m].msg_hdr;
        // SAFETY: CMSG_* walk the control buffer the kernel filled, within msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(msg);
            while !c.is_null() {
                f((*c).cmsg_level, (*c).cmsg_type, libc::CMSG_DATA(c));
                c = libc::CMSG_NXTHDR(msg, c);
            }
        }
    }
}

/// Turns on `SO_RXQ_OVFL`: each datagram read carries the socket's count of datagrams dropped
/// for a full receive buffer, so that a reader that falls behind can say so (otherwise only
/// `/proc/net/udp` knows). False when the kernel refuses.
pub fn enable_rx_drop_count(s: &impl AsRawFd) -> bool {
    set_flag(s, libc::SO_RXQ_OVFL)
}

/// Turns on `SO_TIMESTAMPNS`: the kernel stamps each datagram as it reaches the socket. False
/// when the kernel refuses.
pub fn enable_rx_timestamps(s: &impl AsRawFd) -> bool {
    set_flag(s, libc::SO_TIMESTAMPNS)
}

/// Turns on `UDP_GRO`: a train of same-size datagrams from one sender may be queued and read
/// as one message, which [`RecvBatch`] splits again. False when the kernel refuses (before
/// Linux 5.0).
pub fn enable_rx_gro(s: &impl AsRawFd) -> bool {
    set_option(s, libc::SOL_UDP, UDP_GRO)
}

fn set_flag(s: &impl AsRawFd, option: libc::c_int) -> bool {
    set_option(s, libc::SOL_SOCKET, option)
}

fn set_option(s: &impl AsRawFd, level: libc::c_int, option: libc::c_int) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: valid fd, pointer to a c_int of the size given.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            option,
            &on as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

fn to_socket_addr(st: &libc::sockaddr_storage, len: usize) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match st.ss_family as libc::c_int {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is large enough.
            let a = unsafe { &*(st as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(st as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Datagrams waiting to go out from one socket, sent in batches: up to [`BATCH`] messages per
/// `sendmmsg`, each message one datagram or a GSO train of same-size datagrams to one
/// destination.
pub struct SendBatch {
    /// Bytes of every queued datagram, back to back.
    bytes: Vec<u8>,
    /// (offset, length, destination) of each; no destination: the socket's connected peer.
    queued: Vec<(usize, usize, Option<SockAddr>)>,
    /// Datagrams per message of the `sendmmsg` being built.
    segments: Vec<usize>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Each message's `UDP_SEGMENT` control message (its header and a u16, 8-aligned).
    cmsg: Vec<[u64; 3]>,
    /// Trains are sent as GSO sends ([`SendBatch::set_trains`]): until the kernel refuses one
    /// (no GSO on the route's device, or a route through an IPsec SA, which Linux does not
    /// segment).
    gso: bool,
    /// Scratch for [`SendBatch::group`]: each datagram's destination, and the new order.
    keys: Vec<u8>,
    regroup: Vec<(usize, usize, Option<SockAddr>)>,
}

// SAFETY: as for RecvBatch.
unsafe impl Send for SendBatch {}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            bytes: Vec::with_capacity(BATCH * 1500),
            queued: Vec::with_capacity(BATCH),
            segments: Vec::with_capacity(BATCH),
            iovs: Vec::with_capacity(BATCH),
            // SAFETY: as in RecvBatch.
            hdrs: vec![unsafe { std::mem::zeroed() }; BATCH],
            cmsg: vec![[0u64; 3]; BATCH],
            gso: false,
            keys: Vec::new(),
            regroup: Vec::new(),
        }
    }
}

/// What became of a flush.
#[derive(Debug, Default)]
pub struct Sent {
    pub datagrams: usize,
    /// Datagrams the kernel refused (other than a full buffer), with the first error.
    pub failed: usize,
    pub error: Option<io::Error>,
    /// The socket's send buffer was full: the rest is still queued; wait until writable.
    pub blocked: bool,
    /// System calls made.
    pub calls: usize,
}

impl SendBatch {
    pub fn push(&mut self, data: &[u8], dest: SocketAddr) {
        self.push_to(data, Some(SockAddr::from(dest)));
    }

    /// Queues a datagram for the connected socket's peer. Naming no address spares the
    /// kernel a route lookup per datagram (4 % of a --hep run's samples when the HEP sender
    /// named its collector on every datagram).
    pub fn push_connected(&mut self, data: &[u8]) {
        self.push_to(data, None);
    }

    fn push_to(&mut self, data: &[u8], dest: Option<SockAddr>) {
        let off = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.queued.push((off, data.len(), dest));
    }

    /// Sends runs of same-size datagrams to one destination as GSO trains. Off by default:
    /// a capture on `lo`, on a veth or on a NIC that segments UDP itself shows a train as one
    /// large datagram (the tap sees it before it is cut), which would make SIP traces lie and
    /// RTP unreadable to Wireshark. Only `--media-gso` turns it on, for the RTP socket.
    pub fn set_trains(&mut self, on: bool) {
        self.gso = on;
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Enough is queued that it should go now.
    pub fn is_full(&self) -> bool {
        self.queued.len() >= QUEUE_LIMIT
    }

    /// Sends what is queued. A datagram the kernel refuses for a reason other than a full
    /// buffer (ECONNREFUSED from an earlier ICMP error, EPERM from a firewall) is counted and
    /// skipped: one bad destination must not hold up the others.
    pub fn flush(&mut self, sock: &UdpSocket) -> Sent {
        let mut out = Sent::default();
        if self.gso {
            self.group();
        }
        let mut done = 0;
        while done < self.queued.len() {
            let datagrams = self.build(done);
            debug_assert!(datagrams > 0);
            let n = self.segments.len();
            out.calls += 1;
            // SAFETY: n headers point at live buffers, addresses and control messages, none
            // of which moves before the call returns.
            let rc = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                let sent: usize = self.segments[..rc as usize].iter().sum();
                done += sent;
                out.datagrams += sent;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => {
                    out.blocked = true;
                    break;
                }
                io::ErrorKind::Interrupted => continue,
                _ if self.segments[0] > 1
                    && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) =>
                {
                    // The kernel will not segment on this route: send them one by one, now
                    // and from now on.
                    tracing::debug!("UDP GSO refused ({e}): datagrams go one by one");
                    self.gso = false;
                }
                _ => {
                    // sendmmsg reports an error only when the first message failed: skip it.
                    let first = self.segments[0];
                    done += first;
                    out.failed += first;
                    out.error.get_or_insert(e);
                }
            }
        }
        if done == self.queued.len() {
            self.queued.clear();
            self.bytes.clear();
        } else if done > 0 {
            // Keep what is left (rare: a full send buffer); offsets stay valid in `bytes`.
            self.queued.drain(..done);
        }
        out
    }

    /// Orders the queue by destination, keeping each destination's datagrams in the order
    /// queued, so that a turn's packets to one peer sit side by side and can leave as trains.
    /// Datagrams to different destinations have no order between them to keep. Not done when
    /// some go to the connected peer (it may also be named) or to more than
    /// [`GROUP_MAX_DESTINATIONS`].
    fn group(&mut self) {
        if self.queued.len() < 2 {
            return;
        }
        let mut dests: [Option<&SockAddr>; GROUP_MAX_DESTINATIONS] = [None; GROUP_MAX_DESTINATIONS];
        let mut count = [0usize; GROUP_MAX_DESTINATIONS];
        let mut n = 0;
        let mut eligible = false;
        let mut sorted = true;
        self.keys.clear();
        for (_, len, dest) in &self.queued {
            let Some(d) = dest else { return };
            let k = match dests[..n].iter().position(|x| *x == Some(d)) {
                Some(k) => k,
                None if n == GROUP_MAX_DESTINATIONS => return,
                None => {
                    dests[n] = Some(d);
                    n += 1;
                    n - 1
                }
            };
            count[k] += 1;
            sorted &= self.keys.last().is_none_or(|&last| k >= last as usize);
            eligible |= count[k] > 1 && *len <= GSO_MAX_SEGMENT;
            self.keys.push(k as u8);
        }
        if sorted || !eligible {
            return;
        }
        // Where each destination's run starts, then a stable placement.
        let mut start = [0usize; GROUP_MAX_DESTINATIONS];
        for k in 1..n {
            start[k] = start[k - 1] + count[k - 1];
        }
        self.regroup.clear();
        self.regroup.resize(self.queued.len(), (0, 0, None));
        for (q, &k) in self.queued.drain(..).zip(&self.keys) {
            self.regroup[start[k as usize]] = q;
            start[k as usize] += 1;
        }
        std::mem::swap(&mut self.queued, &mut self.regroup);
    }

    /// Builds up to [`BATCH`] messages from `queued[from..]` into the headers; returns how
    /// many datagrams they hold.
    fn build(&mut self, from: usize) -> usize {
        self.segments.clear();
        let mut j = from;
        while self.segments.len() < BATCH && j < self.queued.len() {
            let (_, len, ref dest) = self.queued[j];
            let mut k = 1;
            if self.gso && len <= GSO_MAX_SEGMENT && len > 0 {
                let mut bytes = len;
                while k < GSO_MAX_SEGMENTS && j + k < self.queued.len() {
                    let (_, l, ref d) = self.queued[j + k];
                    // Same destination; every segment but the last of the full size.
                    if d != dest || l > len || l == 0 || bytes + l > GSO_MAX_BYTES {
                        break;
                    }
                    k += 1;
                    bytes += l;
                    if l < len {
                        break;
                    }
                }
            }
            self.segments.push(k);
            j += k;
        }
        let datagrams = j - from;
        // The iovecs first (they may move as the vector grows), then the headers that point
        // into them.
        self.iovs.clear();
        for &(off, len, _) in &self.queued[from..j] {
            self.iovs.push(libc::iovec {
                // SAFETY: off..off+len lies inside `bytes`; sendmmsg only reads it.
                iov_base: unsafe { self.bytes.as_ptr().add(off) } as *mut libc::c_void,
                iov_len: len,
            });
        }
        let mut first = 0;
        for (m, &k) in self.segments.iter().enumerate() {
            let (_, len, ref addr) = self.queued[from + first];
            let h = &mut self.hdrs[m].msg_hdr;
            (h.msg_name, h.msg_namelen) = match addr {
                Some(a) => (a.as_ptr() as *mut libc::c_void, a.len()),
                None => (std::ptr::null_mut(), 0),
            };
            h.msg_iov = &mut self.iovs[first];
            h.msg_iovlen = k as _;
            h.msg_flags = 0;
            if k > 1 {
                let c = &mut self.cmsg[m];
                h.msg_control = c.as_mut_ptr() as *mut libc::c_void;
                // SAFETY: CMSG_SPACE of a u16 is the 24 bytes of `c`.
                h.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as _;
                // SAFETY: the buffer holds one control message of the size just given.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(h);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(2) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, len as u16);
                }
            } else {
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
            }
            first += k;
        }
        datagrams
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_goes_out_and_comes_back_in_one_call_each() {
        // Trains are off unless asked for: SIP datagrams leave one by one, in order.
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = b.local_addr().unwrap();
        // Connected: a datagram may name its destination or leave it to the socket.
        a.connect(to).unwrap();
        let mut s = SendBatch::default();
        for i in 0..40u8 {
            if i % 2 == 0 {
                s.push(&vec![i; 10 + i as usize], to);
            } else {
                s.push_connected(&vec![i; 10 + i as usize]);
            }
        }
        let sent = s.flush(&a);
        assert_eq!((sent.datagrams, sent.failed, sent.blocked), (40, 0, false));
        assert_eq!(sent.calls, 2, "32 datagrams per sendmmsg");
        assert!(s.is_empty());
        let mut r = RecvBatch::default();
        let mut got = Vec::new();
        for _ in 0..100 {
            let n = r.recv(&b).unwrap();
            for i in 0..n {
                let (d, from) = r.get(i);
                assert_eq!(from, Some(a.local_addr().unwrap()));
                got.push(d.to_vec());
            }
            if got.len() == 40 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(got.len(), 40);
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 10 + i]);
        }
        assert_eq!(r.recv(&b).unwrap(), 0, "nothing queued: no block, no error");
    }

    /// Reads from `sock` until `want` datagrams came (bounded: 2 s), with how many messages
    /// the kernel handed over for them.
    fn read_all(sock: &UdpSocket, r: &mut RecvBatch, want: usize) -> (Vec<Vec<u8>>, usize) {
        let (mut got, mut messages) = (Vec::new(), 0);
        for _ in 0..2000 {
            let n = r.recv(sock).unwrap();
            messages += r.n;
            got.extend((0..n).map(|i| r.get(i).0.to_vec()));
            if got.len() >= want {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        (got, messages)
    }

    /// A packet of `len` bytes saying which destination and which of its packets it is.
    fn packet(dest: u8, i: u8, len: usize) -> Vec<u8> {
        let mut p = vec![dest; len];
        p[1] = i;
        p
    }

    #[test]
    fn same_size_datagrams_to_one_peer_leave_as_trains_and_read_back_one_by_one_in_order() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (b, c) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        assert!(enable_rx_gro(&b), "Linux 5.0 has UDP_GRO");
        let (to_b, to_c) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        // As a media socket queues them: RTP to two peers, interleaved; each peer's last one
        // shorter (it may close a train), then one large datagram to b that may not.
        let mut s = SendBatch::default();
        for i in 0..100u8 {
            let len = if i == 99 { 100 } else { 172 };
            s.push(&packet(b'b', i, len), to_b);
            if i < 50 {
                s.push(&packet(b'c', i, if i == 49 { 60 } else { 172 }), to_c);
            }
        }
        s.push(&packet(b'b', 100, 1300), to_b);
        s.set_trains(true);
        let sent = s.flush(&a);
        assert_eq!((sent.datagrams, sent.failed, sent.blocked), (151, 0, false));
        // b's 100 in two trains (64 at most), its large one alone, c's 50 in one.
        assert_eq!(sent.calls, 1, "four messages, one sendmmsg");
        let mut r = RecvBatch::default();
        let (got, messages) = read_all(&b, &mut r, 101);
        let want: Vec<Vec<u8>> = (0..101u8)
            .map(|i| {
                packet(
                    b'b',
                    i,
                    [172, 100, 1300][(i >= 99) as usize + (i == 100) as usize],
                )
            })
            .collect();
        assert_eq!(got, want, "b's datagrams, each whole, in the order queued");
        assert!(
            messages <= 3,
            "with UDP_GRO b reads each train in one message ({messages} for 101 datagrams)"
        );
        // c did not ask for trains: the kernel splits them before they reach it.
        let (got, messages) = read_all(&c, &mut r, 50);
        let want: Vec<Vec<u8>> = (0..50u8)
            .map(|i| packet(b'c', i, if i == 49 { 60 } else { 172 }))
            .collect();
        assert_eq!(got, want);
        assert_eq!(messages, 50);
    }

    #[test]
    fn a_route_that_refuses_trains_gets_the_datagrams_one_by_one() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = b.local_addr().unwrap();
        // Without UDP checksums Linux refuses GSO (EINVAL), as it does on an IPsec route
        // (EIO) or a device that cannot segment.
        assert!(set_flag(&a, libc::SO_NO_CHECK));
        let mut s = SendBatch::default();
        s.set_trains(true);
        for i in 0..40u8 {
            s.push(&packet(b'b', i, 172), to);
        }
        let sent = s.flush(&a);
        assert_eq!((sent.datagrams, sent.failed), (40, 0), "{:?}", sent.error);
        assert!(!s.gso, "trains are off for this socket from now on");
        let mut r = RecvBatch::default();
        let (got, _) = read_all(&b, &mut r, 40);
        assert_eq!(
            got,
            (0..40u8).map(|i| packet(b'b', i, 172)).collect::<Vec<_>>()
        );
    }
}
