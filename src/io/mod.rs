//! Thin runtimes for the sans-IO endpoints: an epoll set, batched UDP (recvmmsg/sendmmsg) and
//! the one loop ([`driver::Driver`]) that moves datagrams, stream bytes and time between the
//! kernel and an [`driver::Endpoint`]. The load workers and the embedded target both run on it,
//! each on a thread of its own.

pub mod driver;
pub mod poller;
pub mod udp;

pub use driver::{Driver, Endpoint};
