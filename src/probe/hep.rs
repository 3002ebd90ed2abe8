//! `imsprobe --hep`: the SIP layer's copies for the HEP mirror (each OPTIONS as it leaves,
//! each reply as it is read), stamped with the probe's own send and receive times. Diameter
//! and ICMP are not SIP and are not mirrored.

use super::net::ProbeClock;
use super::tcp::TcpLink;
use crate::hep::mirror::Tap;
use crate::hep::Proto;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Our end of the SIP probe's flow.
#[derive(Clone)]
enum Local {
    /// UDP: the connected socket's address.
    Fixed(SocketAddr),
    /// TCP: a reconnect takes a new port; asked per message (only with `--hep`).
    Tcp(Arc<TcpLink>),
}

/// Copies one target's SIP probe messages into a [`Tap`].
#[derive(Clone)]
pub struct SipMirror {
    tap: Tap,
    proto: Proto,
    target: SocketAddr,
    local: Local,
    clock: ProbeClock,
}

impl SipMirror {
    pub fn udp(tap: Tap, target: SocketAddr, local: SocketAddr, clock: ProbeClock) -> Self {
        SipMirror {
            tap,
            proto: Proto::Udp,
            target,
            local: Local::Fixed(local),
            clock,
        }
    }

    pub fn tcp(tap: Tap, link: Arc<TcpLink>, clock: ProbeClock) -> Self {
        SipMirror {
            tap,
            proto: Proto::Tcp,
            target: link.target,
            local: Local::Tcp(link),
            clock,
        }
    }

    /// A probe sent at run time `t` (ns). Handed on at once: probes are at most a few
    /// thousand a second, and the pacer has no turn to end.
    pub fn sent(&mut self, t: i64, msg: &[u8]) {
        let (at, local) = (self.at(t), self.local());
        self.tap.copy(at, self.proto, local, self.target, msg);
        self.tap.flush();
    }

    /// A reply received at run time `t` (ns; the kernel's stamp where there was one).
    pub fn received(&mut self, t: i64, msg: &[u8]) {
        let (at, local) = (self.at(t), self.local());
        self.tap.copy(at, self.proto, self.target, local, msg);
        self.tap.flush();
    }

    fn local(&self) -> SocketAddr {
        match &self.local {
            Local::Fixed(a) => *a,
            Local::Tcp(l) => l
                .local_addr()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        }
    }

    /// The probe's times are CLOCK_MONOTONIC, as `Instant` is on Linux.
    fn at(&self, t: i64) -> Instant {
        let e = &self.clock.epoch;
        e.instant_of_mono_ns(self.clock.mono_abs(t))
    }
}
