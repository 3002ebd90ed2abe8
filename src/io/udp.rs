//! Datagrams in batches: `recvmmsg` and `sendmmsg` move up to [`BATCH`] datagrams per system
//! call. At 10k calls/s a worker moves ~60k datagrams a second; one syscall each was a third of
//! its CPU (see docs/imsload.md, "Engine").

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

/// Room for an `SCM_TIMESTAMPNS` (32 bytes with its header) and an `SO_RXQ_OVFL` (24)
/// control message, 8-aligned.
const CMSG_WORDS: usize = 8;

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
    n: usize,
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
        }
    }

    /// Reads every datagram waiting, up to the number of slots, without blocking; `Ok(0)` when
    /// none is queued.
    pub fn recv(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
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
        Ok(self.n)
    }

    /// Datagram `i` of the last batch and its sender (`None` for an address family we do not
    /// speak, which a UDP/IP socket never reports).
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        debug_assert!(i < self.n);
        let len = (self.hdrs[i].msg_len as usize).min(self.slot_len);
        let data = &self.bufs[i * self.slot_len..i * self.slot_len + len];
        let alen = self.hdrs[i].msg_hdr.msg_namelen as usize;
        // SAFETY: the storage was zeroed and the kernel wrote a sockaddr of `alen` bytes into it.
        let st = unsafe { self.addrs[i].assume_init_ref() };
        (data, to_socket_addr(st, alen))
    }

    /// The kernel's receive stamp of datagram `i` (CLOCK_REALTIME `(sec, nsec)`), when the
    /// socket has them on. Map it with [`crate::clock::ReadMoment`], by its age.
    pub fn stamp(&self, i: usize) -> Option<(i64, i64)> {
        let mut ts = None;
        self.control(i, |level, kind, data| {
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
        self.control(i, |level, kind, data| {
            if level == libc::SOL_SOCKET && kind == libc::SO_RXQ_OVFL {
                // SAFETY: an SO_RXQ_OVFL message carries a u32.
                n = Some(unsafe { std::ptr::read_unaligned(data as *const u32) });
            }
        });
        n
    }

    /// Each control message of datagram `i`: level, type, and a pointer to its data.
    fn control(&self, i: usize, mut f: impl FnMut(libc::c_int, libc::c_int, *const u8)) {
        debug_assert!(i < self.n);
        let msg = &self.hdrs[i].msg_hdr;
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

fn set_flag(s: &impl AsRawFd, option: libc::c_int) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: valid fd, pointer to a c_int of the size given.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
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

/// Datagrams waiting to go out from one socket, sent in batches.
pub struct SendBatch {
    /// Bytes of every queued datagram, back to back.
    bytes: Vec<u8>,
    /// (offset, length, destination) of each; no destination: the socket's connected peer.
    queued: Vec<(usize, usize, Option<SockAddr>)>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: as for RecvBatch.
unsafe impl Send for SendBatch {}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            bytes: Vec::with_capacity(BATCH * 1500),
            queued: Vec::with_capacity(BATCH),
            // SAFETY: as in RecvBatch.
            iovs: vec![unsafe { std::mem::zeroed() }; BATCH],
            hdrs: vec![unsafe { std::mem::zeroed() }; BATCH],
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

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.queued.len() >= BATCH
    }

    /// Sends what is queued, [`BATCH`] per call. A datagram the kernel refuses for a reason
    /// other than a full buffer (ECONNREFUSED from an earlier ICMP error, EPERM from a
    /// firewall) is counted and skipped: one bad destination must not hold up the others.
    pub fn flush(&mut self, sock: &UdpSocket) -> Sent {
        let mut out = Sent::default();
        let mut done = 0;
        while done < self.queued.len() {
            let n = (self.queued.len() - done).min(BATCH);
            for i in 0..n {
                let (off, len, ref addr) = self.queued[done + i];
                self.iovs[i] = libc::iovec {
                    // SAFETY: off..off+len lies inside `bytes`; sendmmsg only reads it.
                    iov_base: unsafe { self.bytes.as_ptr().add(off) } as *mut libc::c_void,
                    iov_len: len,
                };
                let h = &mut self.hdrs[i].msg_hdr;
                (h.msg_name, h.msg_namelen) = match addr {
                    Some(a) => (a.as_ptr() as *mut libc::c_void, a.len()),
                    None => (std::ptr::null_mut(), 0),
                };
                h.msg_iov = &mut self.iovs[i];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
            }
            // SAFETY: n headers point at live buffers and addresses.
            let rc = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                done += rc as usize;
                out.datagrams += rc as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => {
                    out.blocked = true;
                    break;
                }
                io::ErrorKind::Interrupted => continue,
                _ => {
                    // sendmmsg reports an error only when the first datagram failed: skip it.
                    done += 1;
                    out.failed += 1;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_goes_out_and_comes_back_in_one_call_each() {
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
}
