//! The SIP user-agent layer: sans-IO user-agent roles between [`crate::sip`] (messages,
//! transactions) and the engines that own sockets and schedules ([`crate::load`],
//! [`crate::target`]). Nothing here depends on either engine: what a role needs of the run comes
//! in a config struct of its own.
//!
//! - [`timers`]: the hashed timer wheel behind every user-agent timer.
//! - [`challenge`]: answering 401/407 (Digest MD5, AKAv1-MD5 with re-synchronisation), shared
//!   by every client role of a UE.
//! - [`registration`]: the registration client of one UE (REGISTER, challenges, refresh,
//!   de-registration), input + now → REGISTER to send, outcomes, next deadline.
//! - [`security`]: a UE's security agreement (Security-Client/-Verify on its REGISTERs, the SA
//!   pair from the 401 and its AKA keys).
//! - [`answerer`]: the INVITE/BYE server role (the called party), bounded in what a peer can
//!   make it hold.
//! - [`linger`]: calls that are over, remembered by Call-ID while retransmissions can come.
//! - [`caller`]: the calling side of one call (INVITE, challenge, ACK, hold and BYE, CANCEL
//!   when unanswered, the far end's BYE), with the RFC 6076 delays as events.
//! - [`nit`]: a lone MESSAGE or OPTIONS (challenge, final response or timeout).

pub mod answerer;
pub mod caller;
pub mod challenge;
pub mod linger;
pub mod nit;
pub mod registration;
pub mod security;
pub mod timers;

use std::net::SocketAddr;
use std::time::Duration;

/// Where a request came from: the peer, and which of our sockets it reached (the socket
/// answers go out from, so the peer sees them come from the address it sent to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    pub sock: u32,
}

/// Distribution of a duration (call hold, ring time).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DurationDist {
    Fixed,
    /// Exponential with the given mean.
    Exp,
}

impl DurationDist {
    /// A duration with mean `mean`; `u` is a uniform draw in [0, 1).
    pub fn sample(self, mean: Duration, u: f64) -> Duration {
        match self {
            DurationDist::Fixed => mean,
            // Capped at 50 means so that one unlucky draw cannot hold a call for ever.
            DurationDist::Exp => mean.mul_f64(-(1.0 - u).ln().min(50.0)),
        }
    }
}
