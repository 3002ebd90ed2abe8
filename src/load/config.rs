//! The settings one load-engine worker runs with. Built by the binary from flags (and, later,
//! profiles); the core reads nothing else.

use crate::sip::transaction::Timers;
use crate::sip::Transport;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;

/// How call arrivals are spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly spaced, 1/rate apart.
    Constant,
    /// Exponential gaps with mean 1/rate (a Poisson process), as real subscribers arrive.
    Poisson,
}

/// Distribution of a duration (call hold, ring time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurationDist {
    Fixed,
    /// Exponential with the given mean.
    Exp,
}

/// Which side ends an established call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ByeBy {
    Caller,
    Callee,
}

#[derive(Clone, Debug, Serialize)]
pub struct CoreConfig {
    /// Where every request goes first (the P-CSCF, or the outbound proxy).
    pub target: SocketAddr,
    pub transport: Transport,
    /// Home domain: Request-URI of REGISTER and host of public identities.
    pub domain: String,
    pub timers: Timers,
    /// Register users before calling (off: calls to `fixed_ruri` without registration).
    pub register: bool,
    /// Expires asked for in REGISTER, seconds.
    pub expires: u32,
    /// Initial registrations per second (this worker's share).
    pub reg_rate: f64,
    /// Try a failed registration again after this long.
    pub reg_retry: Option<Duration>,
    /// Call attempts per second (this worker's share). 0 = no calls.
    pub cps: f64,
    pub arrival: Arrival,
    /// Concurrent outgoing calls at most (this worker's share).
    pub max_calls: usize,
    /// Stop offering calls after this many (this worker's share), like `sipp -m`.
    pub max_total_calls: Option<u64>,
    pub hold: Duration,
    pub hold_dist: DurationDist,
    /// Time the answering side rings (180) before it answers (200).
    pub ring: Duration,
    /// CANCEL a call that has rung this long without a final answer.
    pub invite_timeout: Duration,
    pub bye_by: ByeBy,
    /// Calls go to this Request-URI instead of a registered user (no-registration mode).
    pub fixed_ruri: Option<String>,
    /// Length of the call phase (after registration). `None`: until stopped.
    pub duration: Option<Duration>,
    /// How long ending calls and de-registering may take once the run stops.
    pub drain: Duration,
    pub user_agent: String,
    /// Seed for caller/callee choice, arrival gaps and hold times (reproducible runs).
    pub seed: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            target: SocketAddr::from(([127, 0, 0, 1], 5060)),
            transport: Transport::Udp,
            domain: "ims.local".into(),
            timers: Timers::default(),
            register: true,
            expires: 600,
            reg_rate: 100.0,
            reg_retry: None,
            cps: 10.0,
            arrival: Arrival::Constant,
            max_calls: 10_000,
            max_total_calls: None,
            hold: Duration::from_secs(5),
            hold_dist: DurationDist::Fixed,
            ring: Duration::ZERO,
            invite_timeout: Duration::from_secs(30),
            bye_by: ByeBy::Caller,
            fixed_ruri: None,
            duration: None,
            drain: Duration::from_secs(10),
            user_agent: concat!("imsload/", env!("CARGO_PKG_VERSION")).into(),
            seed: 1,
        }
    }
}
