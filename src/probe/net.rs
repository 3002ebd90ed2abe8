//! Sockets for the probes, receive timestamps, and the probe clock.
//!
//! Receive timestamps come from the kernel (`SO_TIMESTAMPNS`, taken when the packet reached the
//! socket layer, so a receiver thread scheduled late does not inflate RTTs). The kernel stamps
//! with CLOCK_REALTIME, which NTP slews and steps and which jumps on VMs; our send stamps are
//! CLOCK_MONOTONIC. A realtime stamp is therefore never mapped with an offset taken once per run
//! (in one run here realtime moved ~270 µs against monotonic within half a second, and every
//! later reply landed before its request). Instead each stamp is converted by its *age*: when a
//! batch is read, [`ProbeClock::read_moment`] reads both clocks back to back; the stamp's age is
//! a difference of two realtime readings, and the receive time is the monotonic reading minus
//! that age. Only a step of the realtime clock between a datagram's arrival and its read (one
//! batch, about a millisecond) can still shift a stamp; one that makes it land after the read,
//! or more than [`MAX_QUEUE_NS`] before it, is replaced by the monotonic reading and counted.

use crate::clock::{monotonic_ns, Epoch};
pub use crate::io::udp::{enable_rx_timestamps, RecvBatch};
use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// A kernel stamp older than this (relative to when we read it) is not trusted.
pub const MAX_QUEUE_NS: i64 = 10_000_000_000;

/// The run's clock: ns since `t = 0` on CLOCK_MONOTONIC, and kernel realtime stamps converted
/// onto it by their age.
#[derive(Clone, Copy, Debug)]
pub struct ProbeClock {
    pub epoch: Epoch,
}

impl ProbeClock {
    pub fn new(epoch: Epoch) -> ProbeClock {
        ProbeClock { epoch }
    }

    pub fn start() -> ProbeClock {
        ProbeClock::new(Epoch::now())
    }

    pub fn time_base(&self) -> super::TimeBase {
        super::TimeBase {
            wall0: self.epoch.wall,
        }
    }

    /// Now, ns since `t = 0`.
    pub fn now_ns(&self) -> i64 {
        monotonic_ns() as i64 - self.epoch.mono_ns as i64
    }

    /// The absolute CLOCK_MONOTONIC ns of run time `t`.
    pub fn mono_abs(&self, t: i64) -> u64 {
        (self.epoch.mono_ns as i64 + t).max(0) as u64
    }

    /// Both clocks, read back to back: the moment a batch of datagrams was read.
    pub fn read_moment(&self) -> ReadMoment {
        let (t, real_ns) = crate::clock::with_realtime(|| self.now_ns());
        ReadMoment { t, real_ns }
    }

    /// Converts a kernel CLOCK_REALTIME stamp of a datagram read at `at` by its age at `at`
    /// (as [`crate::clock::ReadMoment`] does for `Instant`s; the probe counts ns of run time).
    pub fn map_kernel_stamp(&self, sec: i64, nsec: i64, at: &ReadMoment) -> KernelStamp {
        let age = crate::clock::stamp_age_ns(at.real_ns, (sec, nsec));
        if age < 0 {
            KernelStamp::AfterRead { by_ns: -age }
        } else if age > MAX_QUEUE_NS as i128 {
            KernelStamp::Stale { age_ns: age }
        } else {
            KernelStamp::At(at.t - age as i64)
        }
    }
}

/// When a batch was read: run time (monotonic) and CLOCK_REALTIME unix ns, read together.
#[derive(Clone, Copy, Debug)]
pub struct ReadMoment {
    /// ns since `t = 0` on CLOCK_MONOTONIC.
    pub t: i64,
    /// CLOCK_REALTIME, unix ns.
    pub real_ns: i128,
}

/// A kernel receive stamp on the run's time base, or why it cannot be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelStamp {
    /// Run time of the arrival.
    At(i64),
    /// The stamp is later than the read: the realtime clock stepped back in between.
    AfterRead { by_ns: i128 },
    /// Older than [`MAX_QUEUE_NS`]: a forward step, or a socket nobody read for that long.
    Stale { age_ns: i128 },
}

/// Receives one datagram with its kernel timestamp (realtime `(sec, nsec)`) when present.
pub fn recv_timestamped(s: &Socket, buf: &mut [u8]) -> io::Result<(usize, Option<(i64, i64)>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 16]; // 128 bytes, 8-aligned: room for one timespec cmsg and more
                               // SAFETY: msghdr is plain data; zeroed is a valid "empty" value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: msg points at buffers that live through the call.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ts = None;
    // SAFETY: CMSG_* walk the control buffer the kernel filled, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let p = libc::CMSG_DATA(c) as *const libc::timespec;
                let t = std::ptr::read_unaligned(p);
                ts = Some((t.tv_sec as i64, t.tv_nsec as i64));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, ts))
}

/// Waits until `fd` is readable (or has an error or hang-up pending), at most `timeout_ms`.
/// False on timeout or EINTR.
pub fn wait_readable(fd: std::os::fd::RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(rc > 0)
}

/// Sleeps until CLOCK_MONOTONIC `abs_ns`.
pub fn sleep_until_mono(abs_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (abs_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (abs_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: valid timespec; an early return (EINTR) only shortens the sleep.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

/// A UDP socket connected to `target`, blocking with a short read timeout (so the receiver
/// notices the stop), big buffers and kernel receive timestamps.
pub fn sip_udp_socket(target: SocketAddr) -> io::Result<(Socket, bool)> {
    let s = Socket::new(
        Domain::for_address(target),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    crate::sip::transport::set_big_buffers(&s);
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    s.bind(&any.into())?;
    s.connect(&target.into())?;
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    let ts = enable_rx_timestamps(&s);
    Ok((s, ts))
}

/// An ICMP socket, and how we got it.
pub struct IcmpSocket {
    pub socket: Socket,
    /// Raw socket: replies come with the IP header, and we see everybody's ICMP.
    pub raw: bool,
    pub timestamps: bool,
}

fn ping_group_range() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Opens an ICMP (IPv4) or ICMPv6 socket to `target`: an unprivileged datagram ICMP socket
/// first, a raw socket second. The error says exactly why neither was allowed and how to allow
/// one.
pub fn icmp_socket(target: IpAddr) -> anyhow::Result<IcmpSocket> {
    let (domain, proto) = match target {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    let dgram = Socket::new(domain, Type::DGRAM, Some(proto));
    let (socket, raw) = match dgram {
        Ok(s) => (s, false),
        Err(e_dgram) => match Socket::new(domain, Type::RAW, Some(proto)) {
            Ok(s) => (s, true),
            Err(e_raw) => {
                // SAFETY: getegid has no preconditions.
                let gid = unsafe { libc::getegid() };
                // net.ipv4.ping_group_range governs ICMPv6 datagram sockets too.
                anyhow::bail!(
                    "ICMP probe disabled: an unprivileged ICMP socket was refused ({e_dgram}; group {gid} \
                     is outside net.ipv4.ping_group_range = \"{}\"; allow it with \
                     `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"`), and a raw ICMP socket was \
                     refused ({e_raw}; that needs root or CAP_NET_RAW: `sudo setcap cap_net_raw+ep \
                     $(which imsprobe)`). Continuing with SIP only.",
                    ping_group_range()
                );
            }
        },
    };
    let setup = || -> io::Result<()> {
        crate::sip::transport::set_big_buffers(&socket);
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        if raw {
            set_raw_icmp_filter(&socket, target.is_ipv6())?;
        }
        // Connected: the kernel delivers only the target's packets to a raw IPv6 socket, and
        // send() needs no address.
        let dst: SocketAddr = (target, 0).into();
        socket.connect(&dst.into())
    };
    setup().with_context(|| {
        format!("ICMP probe disabled: cannot set up the ICMP socket to {target}")
    })?;
    let timestamps = enable_rx_timestamps(&socket);
    Ok(IcmpSocket {
        socket,
        raw,
        timestamps,
    })
}

/// Only echo replies and the errors that quote our requests reach a raw socket: at kHz rates a
/// raw socket would otherwise wake for every ICMP packet of the host.
fn set_raw_icmp_filter(socket: &Socket, v6: bool) -> io::Result<()> {
    use super::icmp;
    let rc = if v6 {
        // struct icmp6_filter: 256 bits, a set bit blocks that type (ICMP6_FILTER = 1 on
        // IPPROTO_ICMPV6).
        let mut block = [u32::MAX; 8];
        for t in [
            icmp::V6_ECHO_REPLY,
            icmp::V6_DEST_UNREACH,
            icmp::V6_PACKET_TOO_BIG,
            icmp::V6_TIME_EXCEEDED,
        ] {
            block[t as usize >> 5] &= !(1u32 << (t & 31));
        }
        // SAFETY: valid fd, pointer to 32 bytes of the size given.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_ICMPV6,
                1,
                block.as_ptr() as *const libc::c_void,
                std::mem::size_of_val(&block) as libc::socklen_t,
            )
        }
    } else {
        // ICMP_FILTER = 1 on SOL_RAW: a set bit blocks that type (types < 32 only).
        let mask: u32 =
            !((1 << icmp::ECHO_REPLY) | (1 << icmp::DEST_UNREACH) | (1 << icmp::TIME_EXCEEDED));
        // SAFETY: valid fd, pointer to a u32 of the size given.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_RAW,
                1,
                &mask as *const _ as *const libc::c_void,
                4,
            )
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `buf` without blocking; the errno on failure.
pub fn send_nonblocking(s: &Socket, buf: &[u8]) -> Result<(), i32> {
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
        Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(())
    }
}

/// The local address the kernel would use to reach `target`.
pub fn local_addr_towards(target: SocketAddr) -> io::Result<SocketAddr> {
    let s = std::net::UdpSocket::bind(match target {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    })?;
    s.connect(target)?;
    s.local_addr()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    /// A virtual pair of clocks: realtime = monotonic + offset, where the offset can be stepped.
    fn moment(t: i64, real0: i128, offset: i128) -> ReadMoment {
        ReadMoment {
            t,
            real_ns: real0 + t as i128 + offset,
        }
    }

    fn stamp(real: i128) -> (i64, i64) {
        ((real / 1_000_000_000) as i64, (real % 1_000_000_000) as i64)
    }

    #[test]
    fn a_stamp_is_converted_by_its_age_at_the_read() {
        let c = ProbeClock::start();
        let real0 = 1_764_000_000_000_000_000i128;
        let at = moment(500 * MS, real0, 0);
        let (s, n) = stamp(at.real_ns - 1234);
        assert_eq!(
            c.map_kernel_stamp(s, n, &at),
            KernelStamp::At(500 * MS - 1234)
        );
    }

    /// The failure seen in the field: realtime stepped +270 µs against monotonic half a second
    /// into a run. With one offset taken at the start, every later reply landed ~140–205 µs
    /// before its request. Converted by age, a probe sent at 600 ms and answered 80 µs later
    /// still measures 80 µs, whichever way the clock stepped and by how much.
    #[test]
    fn a_realtime_step_mid_run_does_not_move_receive_times() {
        let c = ProbeClock::start();
        let real0 = 1_764_000_000_000_000_000i128;
        for step in [270_000i128, -270_000, 3_600_000_000_000, -5_000_000_000] {
            let sent = 600 * MS;
            let arrival = sent + 80_000;
            let read = arrival + 300_000; // read 0.3 ms after arrival (batching)
                                          // The kernel stamped the arrival on the stepped clock, and we read on it too.
            let at = moment(read, real0, step);
            let (s, n) = stamp(real0 + arrival as i128 + step);
            assert_eq!(
                c.map_kernel_stamp(s, n, &at),
                KernelStamp::At(arrival),
                "step {step} ns"
            );
            // What one offset from the start of the run would have said:
            let once = (real0 + arrival as i128 + step - real0) as i64;
            assert_eq!(once - sent, 80_000 + step as i64, "the old mapping was off");
        }
    }

    /// A step between the arrival and the read cannot be undone; it is reported, not hidden.
    #[test]
    fn a_step_between_arrival_and_read_is_an_anomaly() {
        let c = ProbeClock::start();
        let real0 = 1_764_000_000_000_000_000i128;
        let arrival = 700 * MS;
        let (s, n) = stamp(real0 + arrival as i128);
        // Stepped back 1 ms after the arrival, read 100 µs after it: the stamp is "later".
        let at = moment(arrival + 100_000, real0, -1_000_000);
        assert_eq!(
            c.map_kernel_stamp(s, n, &at),
            KernelStamp::AfterRead { by_ns: 900_000 }
        );
        // Stepped forward an hour: older than any queue.
        let at = moment(arrival + 100_000, real0, 3_600_000_000_000);
        assert!(matches!(
            c.map_kernel_stamp(s, n, &at),
            KernelStamp::Stale { .. }
        ));
    }

    #[test]
    fn udp_loopback_gets_kernel_timestamps() {
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (s, ts) = sip_udp_socket(peer.local_addr().unwrap()).unwrap();
        assert!(ts);
        let me = s.local_addr().unwrap().as_socket().unwrap();
        let c = ProbeClock::start();
        peer.send_to(b"hello", me).unwrap();
        let mut buf = [0u8; 64];
        let (n, stamp) = recv_timestamped(&s, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        let (sec, nsec) = stamp.expect("SO_TIMESTAMPNS stamp");
        let at = c.read_moment();
        let KernelStamp::At(t) = c.map_kernel_stamp(sec, nsec, &at) else {
            panic!("implausible stamp")
        };
        assert!(
            t <= at.t && at.t - t < 1_000_000_000,
            "t={t} read at {}",
            at.t
        );
    }

    #[test]
    fn recv_batch_reads_several_datagrams_with_their_stamps() {
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (s, ts) = sip_udp_socket(peer.local_addr().unwrap()).unwrap();
        assert!(ts);
        let me = s.local_addr().unwrap().as_socket().unwrap();
        let mut b = RecvBatch::new(4, 16);
        assert_eq!(
            b.recv(&s).unwrap(),
            0,
            "nothing waiting: no block, no datagram"
        );
        for i in 0..6u8 {
            peer.send_to(&[i; 20], me).unwrap();
        }
        assert!(wait_readable(s.as_raw_fd(), 1000).unwrap());
        let mut got = Vec::new();
        let mut stamps = Vec::new();
        while got.len() < 6 {
            let n = b.recv(&s).unwrap();
            assert!(n > 0 && n <= 4);
            for i in 0..n {
                let (d, from) = b.get(i);
                assert_eq!(d.len(), 16, "truncated to the slot");
                assert_eq!(from, Some(peer.local_addr().unwrap()));
                let stamp = b.stamp(i);
                let (sec, nsec) = stamp.expect("kernel stamp per datagram");
                stamps.push(sec as i128 * 1_000_000_000 + nsec as i128);
                got.push(d[0]);
            }
        }
        // Each datagram carries its own stamp, but their order is not something the kernel
        // promises across CPUs: once, in a full-suite run on this 2-core machine, a stamp came
        // out earlier than its predecessor's. So: all six stamps close together (1 ms).
        let (lo, hi) = (stamps.iter().min().unwrap(), stamps.iter().max().unwrap());
        assert!(hi - lo < 1_000_000, "stamps span {} ns", hi - lo);
        assert_eq!(got, vec![0, 1, 2, 3, 4, 5]);
    }
}
