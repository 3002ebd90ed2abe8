//! The load core against the embedded target, in memory and under a virtual clock: whole runs
//! (register, call, hang up, de-register) in microseconds of real time, with loss injected
//! where a test asks for it.

use super::config::{ByeBy, CoreConfig};
use super::core::{LoadCore, Phase};
use super::population::from_pattern;
use super::stats::{Interval, Rfc6076};
use crate::target::core::{TargetConfig, TargetCore};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Net {
    now: Instant,
    load: LoadCore,
    target: TargetCore,
    /// Drop every n-th datagram (0 = none).
    drop_every: u64,
    sent: u64,
    dropped: u64,
    totals: Interval,
}

const LOAD: ([u8; 4], u16) = ([127, 0, 0, 2], 5070);
const TARGET: ([u8; 4], u16) = ([127, 0, 0, 1], 5060);

impl Net {
    fn new(cfg: CoreConfig, users: usize, password: &str) -> Net {
        let now = Instant::now();
        let pop = from_pattern("user%04d", 1, users, "ims.local", password).unwrap();
        let mut load = LoadCore::new(cfg, SocketAddr::from(LOAD), pop, 0, now);
        load.start(now);
        let target = TargetCore::new(TargetConfig::default(), SocketAddr::from(TARGET), now);
        Net {
            now,
            load,
            target,
            drop_every: 0,
            sent: 0,
            dropped: 0,
            totals: Interval::default(),
        }
    }

    /// Moves datagrams and time until the load side is done or `limit` of virtual time passes.
    fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        let (l, t) = (SocketAddr::from(LOAD), SocketAddr::from(TARGET));
        for _ in 0..5_000_000 {
            let mut moved = false;
            while let Some(x) = self.load.poll_transmit() {
                moved = true;
                assert_eq!(x.dest, t, "the load side only talks to its outbound proxy");
                if self.deliver() {
                    self.target.handle_input(self.now, &x.data, l);
                }
            }
            while let Some(x) = self.target.poll_transmit() {
                moved = true;
                assert_eq!(x.dest, l);
                if self.deliver() {
                    self.load.handle_input(self.now, &x.data, t);
                }
            }
            if moved {
                continue;
            }
            if self.load.is_done() {
                break;
            }
            let next = [self.load.poll_timeout(), self.target.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else { break };
            if next > end {
                break;
            }
            // A 1 ms network: time never stands still between exchanges.
            self.now = next.max(self.now);
            self.load.handle_timeout(self.now);
            self.target.handle_timeout(self.now);
        }
        self.totals.add(&self.load.take_stats());
    }

    fn deliver(&mut self) -> bool {
        self.sent += 1;
        if self.drop_every > 0 && self.sent % self.drop_every == 0 {
            self.dropped += 1;
            return false;
        }
        true
    }
}

fn cfg() -> CoreConfig {
    CoreConfig {
        target: SocketAddr::from(TARGET),
        reg_rate: 50.0,
        cps: 5.0,
        hold: Duration::from_secs(2),
        duration: Some(Duration::from_secs(10)),
        ..CoreConfig::default()
    }
}

#[test]
fn full_run_registers_calls_and_deregisters() {
    let mut net = Net::new(cfg(), 20, "pw_%u");
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!(net.load.phase(), Phase::Done);
    assert_eq!((c.reg_attempts, c.reg_ok, c.reg_failed), (20, 20, 0));
    // 10 s at 5 calls/s, evenly spaced from t=0: 50 offered, all placed and completed.
    assert_eq!(c.calls_offered, 50);
    assert_eq!(c.calls_attempted, 50);
    assert_eq!(c.calls_answered, 50);
    assert_eq!(c.calls_ringing, 50);
    assert_eq!(c.calls_completed, 50);
    assert_eq!(c.dereg_ok, 20);
    assert_eq!(c.retransmits, 0);
    assert_eq!(
        net.target.registered(net.now),
        0,
        "de-registration empties the registrar"
    );
    // Every call crossed the proxy: INVITE, ACK, BYE each forwarded to the callee.
    assert!(net.target.stats.proxied_requests >= 150);
    assert_eq!(net.totals.status.get("REGISTER 401"), Some(&40));
    let m = Rfc6076::of(&net.totals);
    assert_eq!(m.session_establishment_ratio_pct, Some(100.0));
    assert_eq!(m.session_completion_ratio_pct, Some(100.0));
    assert_eq!(m.registration_request_delay.count, 20);
    // Session duration is the hold time (virtual clock: exact to the histogram's precision).
    assert!((m.session_duration_time.p50_ms - 2000.0).abs() < 2.0);
}

#[test]
fn wrong_password_is_counted_as_a_failed_registration() {
    let mut net = Net::new(cfg(), 5, "wrong_%u");
    net.run(Duration::from_secs(60));
    let c = &net.totals.counters;
    assert_eq!((c.reg_attempts, c.reg_ok, c.reg_failed), (5, 0, 5));
    assert_eq!(c.reg_auth_rejected, 5);
    // Nobody registered: calls are offered but cannot be placed.
    assert_eq!(c.calls_attempted, 0);
    assert!(c.calls_unplaced > 0);
    assert_eq!(
        Rfc6076::of(&net.totals).ineffective_registration_attempts_pct,
        Some(100.0)
    );
}

#[test]
fn loss_is_repaired_by_retransmission_and_counted_as_ours() {
    let mut net = Net::new(cfg(), 20, "pw_%u");
    net.drop_every = 7;
    net.run(Duration::from_secs(300));
    let c = &net.totals.counters;
    assert!(net.dropped > 20);
    assert!(c.retransmits > 0);
    assert_eq!(c.reg_ok, 20);
    assert_eq!(c.calls_attempted, 50);
    // Every call ends one way or another, and none is lost from the books.
    assert_eq!(
        c.calls_answered + c.calls_failed + c.calls_timeout + c.calls_cancelled,
        50
    );
    assert_eq!(
        c.calls_answered, 50,
        "one lost datagram in seven is repaired by Timer A/E"
    );
}

#[test]
fn callee_hangs_up_when_asked() {
    let mut net = Net::new(
        CoreConfig {
            bye_by: ByeBy::Callee,
            hold: Duration::from_millis(1500),
            ..cfg()
        },
        10,
        "pw_%u",
    );
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!(c.calls_answered, 50);
    assert_eq!(c.calls_completed, 50);
    // Calls placed at 8.6 s .. 9.8 s were still up when the call phase ended at 10 s: the
    // caller ends those (7 of them); the callee hung up all the others.
    assert_eq!(c.uas_byes, 7);
    assert_eq!(net.totals.delays.sdt.len(), 50);
}

#[test]
fn max_calls_limits_and_open_loop_keeps_offering() {
    let mut net = Net::new(
        CoreConfig {
            max_calls: 3,
            cps: 10.0,
            hold: Duration::from_secs(5),
            ..cfg()
        },
        10,
        "pw_%u",
    );
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!(
        c.calls_offered, 100,
        "the offered rate does not bend to the limit"
    );
    assert!(c.calls_limited > 80);
    assert_eq!(c.calls_attempted + c.calls_limited, 100);
}

#[test]
fn unanswered_target_ends_with_timeouts_not_a_hang() {
    let mut net = Net::new(cfg(), 3, "pw_%u");
    net.drop_every = 1; // everything is lost
    net.run(Duration::from_secs(600));
    let c = &net.totals.counters;
    assert_eq!(c.reg_timeouts, 3);
    assert_eq!(net.load.phase(), Phase::Done);
    assert_eq!(net.totals.status.get("REGISTER timeout"), Some(&3));
}
