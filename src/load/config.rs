//! The settings one load-engine worker runs with. Built by the binary from flags (and, later,
//! profiles); the core reads nothing else.

use crate::sip::transaction::Timers;
use crate::sip::Transport;
use crate::ua::answerer::AnswererConfig;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;

/// How call arrivals are spaced.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly spaced, 1/rate apart.
    #[default]
    Constant,
    /// Exponential gaps with mean 1/rate (a Poisson process), as real subscribers arrive.
    Poisson,
}

impl Arrival {
    /// The name in flags and profiles.
    pub fn name(self) -> &'static str {
        match self {
            Arrival::Constant => "constant",
            Arrival::Poisson => "poisson",
        }
    }
}

pub use crate::ua::DurationDist;

/// Which side ends an established call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ByeBy {
    Caller,
    Callee,
}

/// What one scenario attempt is. Attempts arrive at the run's rate; each draws its scenario
/// from the [`Mix`] (IMS Bench SIPp / TS 186 008 style traffic sets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// INVITE/180/200/ACK, hold, BYE between two registered users.
    Call,
    /// Initial REGISTER of a user who is not registered.
    Register,
    /// Refresh of a registered user's registration, now.
    Reregister,
    /// De-registration (Expires: 0) of a registered user.
    Deregister,
    /// Page-mode MESSAGE (RFC 3428) from one registered user to another.
    Message,
    /// OPTIONS from one registered user to another (capability query).
    Options,
}

/// Shares of each scenario among attempts (they add up to 1).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Mix {
    pub call: f64,
    pub register: f64,
    pub reregister: f64,
    pub deregister: f64,
    pub message: f64,
    pub options: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            call: 1.0,
            register: 0.0,
            reregister: 0.0,
            deregister: 0.0,
            message: 0.0,
            options: 0.0,
        }
    }
}

impl Mix {
    fn shares(&self) -> [(Scenario, f64); 6] {
        [
            (Scenario::Call, self.call),
            (Scenario::Register, self.register),
            (Scenario::Reregister, self.reregister),
            (Scenario::Deregister, self.deregister),
            (Scenario::Message, self.message),
            (Scenario::Options, self.options),
        ]
    }

    /// The scenario for a uniform draw `x` in [0, 1).
    pub fn pick(&self, x: f64) -> Scenario {
        let total: f64 = self.shares().iter().map(|s| s.1).sum();
        let mut acc = 0.0;
        let x = x * total;
        let mut last = Scenario::Call;
        for (sc, share) in self.shares() {
            if share <= 0.0 {
                continue;
            }
            acc += share;
            last = sc;
            if x < acc {
                return sc;
            }
        }
        last
    }

    /// Only calls: the classic SIPp-like run, where the rate is calls per second.
    pub fn calls_only(&self) -> bool {
        self.call > 0.0 && self.shares()[1..].iter().all(|s| s.1 <= 0.0)
    }
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
    /// Share of the users registered before the first scenario attempt (0..=1); the others
    /// wait for `register` attempts of the mix.
    pub preregistered: f64,
    /// Try a failed registration again after this long.
    pub reg_retry: Option<Duration>,
    /// Scenario attempts per second (this worker's share); with the default mix (calls only)
    /// that is calls per second. 0 = none. The runner may change it during the run.
    pub cps: f64,
    /// What each attempt is.
    pub mix: Mix,
    pub arrival: Arrival,
    /// Concurrent outgoing calls at most (this worker's share).
    pub max_calls: usize,
    /// Stop offering attempts after this many (this worker's share), like `sipp -m`.
    pub max_total_calls: Option<u64>,
    pub hold: Duration,
    pub hold_dist: DurationDist,
    /// Time the answering side rings (180) before it answers (200).
    pub ring: Duration,
    pub ring_dist: DurationDist,
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
    /// IMS headers and Contact parameters of the UE (TS 24.229).
    pub ims: ImsOptions,
    /// Calls and bytes the answering side of one worker holds at most (see
    /// [`AnswererConfig`]). Far above what a run needs (10,000 calls/s of 5 s calls, each
    /// lingering 32 s, is 370,000 calls of a few hundred bytes): a bound, not a limit a run
    /// should meet; `imsload serve` is the side that faces strangers and is sized tighter.
    pub uas_max_calls: usize,
    pub uas_max_bytes: usize,
    /// `--ipsec`: every UE agrees on security with the P-CSCF and talks through its own SAs
    /// (three sockets per UE; the runner makes the SAs).
    pub ipsec: Option<crate::ua::security::SecurityConfig>,
    /// `--media`: RTP both ways on every call that is up (docs/media.md). UDP only.
    #[serde(skip)]
    pub media: Option<crate::media::engine::MediaConfig>,
    /// `--call-hold`: every caller holds and resumes its answered call with re-INVITEs.
    #[serde(skip)]
    pub call_hold: Option<crate::ua::caller::HoldPlan>,
}

impl CoreConfig {
    /// The answering side's settings for worker `worker`: ring and hold from the run; the
    /// callee hangs up after the hold with `bye_by = callee`.
    pub fn answerer(&self, worker: u32) -> AnswererConfig {
        AnswererConfig {
            transport: self.transport,
            timers: self.timers,
            ring: self.ring,
            ring_dist: self.ring_dist,
            hang_up_after: (self.bye_by == ByeBy::Callee).then_some(self.hold),
            hang_up_dist: self.hold_dist,
            user_agent: self.user_agent.clone(),
            seed: self
                .seed
                .wrapping_add(worker as u64 * 7919)
                .wrapping_add(0x5eed),
            max_calls: self.uas_max_calls,
            max_bytes: self.uas_max_bytes,
            record_delays: true,
            ..AnswererConfig::default()
        }
    }
}

/// Which of the user's public identities goes into P-Preferred-Identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PreferredIdentity {
    /// The sip: IMPU the user registers.
    Sip,
    /// The user's tel: IMPU (the sip: one for users without a tel: IMPU).
    Tel,
}

/// What an IMS UE adds to its requests beyond plain SIP (TS 24.229 §5.1.1.2, §5.1.2A.1).
/// `Supported: path` is always sent on REGISTER; `+sip.instance` comes per user from
/// [`super::population::Identity::instance`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImsOptions {
    /// P-Access-Network-Info on REGISTER, INVITE and MESSAGE, e.g.
    /// `3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=00101000000001`.
    pub pani: Option<String>,
    /// P-Preferred-Identity on INVITE and MESSAGE.
    pub preferred_identity: Option<PreferredIdentity>,
    /// IMS communication service identifier announced in Contact as `+g.3gpp.icsi-ref`, e.g.
    /// `urn:urn-7:3gpp-service.ims.icsi.mmtel`.
    pub icsi_ref: Option<String>,
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
            preregistered: 1.0,
            reg_retry: None,
            cps: 10.0,
            mix: Mix::default(),
            arrival: Arrival::Constant,
            max_calls: 10_000,
            max_total_calls: None,
            hold: Duration::from_secs(5),
            hold_dist: DurationDist::Fixed,
            ring: Duration::ZERO,
            ring_dist: DurationDist::Fixed,
            invite_timeout: Duration::from_secs(30),
            bye_by: ByeBy::Caller,
            fixed_ruri: None,
            duration: None,
            drain: Duration::from_secs(10),
            user_agent: concat!("imsload/", env!("CARGO_PKG_VERSION")).into(),
            seed: 1,
            ims: ImsOptions::default(),
            uas_max_calls: 1_000_000,
            uas_max_bytes: 1 << 30,
            ipsec: None,
            media: None,
            call_hold: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_picks_by_share() {
        let m = Mix {
            call: 0.5,
            message: 0.25,
            options: 0.25,
            ..Mix::default()
        };
        assert_eq!(m.pick(0.0), Scenario::Call);
        assert_eq!(m.pick(0.49), Scenario::Call);
        assert_eq!(m.pick(0.5), Scenario::Message);
        assert_eq!(m.pick(0.74), Scenario::Message);
        assert_eq!(m.pick(0.99), Scenario::Options);
        assert!(!m.calls_only());
        assert!(Mix::default().calls_only());
        // Zero shares are never picked, even at the edges.
        let only_msg = Mix {
            call: 0.0,
            message: 1.0,
            ..Mix::default()
        };
        assert_eq!(only_msg.pick(0.0), Scenario::Message);
        assert_eq!(only_msg.pick(0.999_999), Scenario::Message);
    }
}
