//! A minimal level-triggered epoll set: the drivers register a handful of sockets (one per
//! worker, or one per UE with `--ue-ports`) and ask which are ready. Level-triggered because the
//! drivers read in bounded batches: a socket left with data is reported again next turn.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub struct Poller {
    epfd: OwnedFd,
    events: Vec<libc::epoll_event>,
    /// `epoll_pwait2` (Linux 5.11) works here: waits end at the nanosecond asked, not at the
    /// next whole millisecond.
    precise: bool,
}

/// What a ready socket offers.
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    /// The token given at registration.
    pub token: u64,
    pub readable: bool,
    pub writable: bool,
    /// Error or hang-up: a stream to drop.
    pub closed: bool,
}

impl Poller {
    pub fn new() -> io::Result<Poller> {
        // SAFETY: epoll_create1 returns a new fd or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller {
            // SAFETY: fd is a fresh descriptor we own.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: Vec::with_capacity(64),
            precise: true,
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, write: bool) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32
                | if write { libc::EPOLLOUT as u32 } else { 0 },
            u64: token,
        };
        // SAFETY: a valid epoll fd, a valid fd and an event struct that outlives the call.
        let rc = unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches `fd` for input (and for room to write when `write`), reported as `token`.
    pub fn add(&self, fd: &impl AsRawFd, token: u64, write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd.as_raw_fd(), token, write)
    }

    pub fn modify(&self, fd: &impl AsRawFd, token: u64, write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd.as_raw_fd(), token, write)
    }

    pub fn remove(&self, fd: &impl AsRawFd) -> io::Result<()> {
        // SAFETY: as in ctl; the event pointer may be null for EPOLL_CTL_DEL.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` and calls `f` for each ready socket.
    ///
    /// The wait ends at the nanosecond asked (plus the thread's timer slack, 50 µs), with
    /// `epoll_pwait2`. A media stream's packets are due every packet time and must leave
    /// within a millisecond of it: `epoll_wait`'s whole milliseconds, rounded up so that a
    /// deadline is never woken for early and slept for again, made every send up to 1 ms late
    /// (p50 0.55 ms, p99 1.13 ms at 200 calls). A kernel without it gets that.
    pub fn wait(&mut self, timeout: Duration, mut f: impl FnMut(Ready)) -> io::Result<usize> {
        self.events.clear();
        let cap = self.events.capacity() as libc::c_int;
        let (epfd, events) = (self.epfd.as_raw_fd(), self.events.as_mut_ptr());
        let mut n = -1;
        if self.precise {
            let ts = libc::timespec {
                tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
                tv_nsec: timeout.subsec_nanos() as libc::c_long,
            };
            // SAFETY: the buffer has `cap` slots; the kernel writes at most that many and we
            // set the length to what it reports. `ts` outlives the call; no signal mask.
            n = unsafe { libc::epoll_pwait2(epfd, events, cap, &ts, std::ptr::null()) };
            if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
                self.precise = false;
            }
        }
        if !self.precise {
            let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
            // SAFETY: as above.
            n = unsafe { libc::epoll_wait(epfd, events, cap, ms) };
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        // SAFETY: the kernel initialised the first n entries.
        unsafe { self.events.set_len(n as usize) };
        for ev in &self.events {
            let bits = ev.events as libc::c_int;
            f(Ready {
                token: ev.u64,
                readable: bits & libc::EPOLLIN != 0,
                writable: bits & libc::EPOLLOUT != 0,
                closed: bits & (libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) != 0,
            });
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_a_readable_socket_by_token_and_times_out_otherwise() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut p = Poller::new().unwrap();
        p.add(&a, 7, false).unwrap();
        let mut seen = Vec::new();
        let n = p
            .wait(Duration::from_millis(1), |r| seen.push(r.token))
            .unwrap();
        assert_eq!((n, seen.len()), (0, 0));
        b.send_to(b"x", a.local_addr().unwrap()).unwrap();
        p.wait(Duration::from_secs(2), |r| {
            assert!(r.readable);
            seen.push(r.token)
        })
        .unwrap();
        assert_eq!(seen, [7]);
    }

    #[test]
    fn a_wait_below_a_millisecond_is_never_cut_short() {
        // How close to the instant a wait ends is a benchmark's business (docs/media.md); a
        // wait that ended early would wake a deadline that is not due yet.
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut p = Poller::new().unwrap();
        p.add(&a, 1, false).unwrap();
        for us in [1, 300, 999] {
            let t = std::time::Instant::now();
            assert_eq!(p.wait(Duration::from_micros(us), |_| {}).unwrap(), 0);
            assert!(
                t.elapsed() >= Duration::from_micros(us),
                "{us} µs: {:?}",
                t.elapsed()
            );
        }
    }
}
