//! RFC 3261 §17 transaction timers as plain state machines: they take `now` and events and say
//! what to do; they own no socket and no clock, so one task drives thousands of them and tests run
//! them under a virtual clock.
//!
//! The owner keeps the request bytes (to retransmit) and a timer queue; a transaction only answers
//! "when do you next need me" ([`ClientTransaction::deadline`]) and "what now"
//! ([`ClientTransaction::on_timer`], [`ClientTransaction::on_response`]).

use std::time::{Duration, Instant};

/// T1, T2, T4 of RFC 3261 §17.1.1.1 (defaults 500 ms, 4 s, 5 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// Timer B / F / H / J: 64·T1.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Invite,
    NonInvite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Request sent, nothing heard (Calling for INVITE, Trying for non-INVITE).
    Calling,
    /// A provisional response came.
    Proceeding,
    /// A final response came; absorbing retransmissions (Timer D / K).
    Completed,
    Terminated,
}

/// What the owner must do after a timer fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerAction {
    /// Send the request again (Timer A or E). Counted as a retransmission, not a new attempt.
    Retransmit,
    /// No final response in 64·T1 (Timer B or F): report 408 to the transaction user.
    Timeout,
    /// The transaction is over; forget it.
    Terminated,
    /// Nothing to do (a stale deadline).
    None,
}

/// What the owner must do with a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseAction {
    /// Hand the response to the transaction user (first time this status class is seen).
    Deliver,
    /// A retransmitted final response: for INVITE non-2xx, send the ACK again; else drop.
    Absorb,
}

#[derive(Clone, Debug)]
pub struct ClientTransaction {
    pub kind: Kind,
    pub state: State,
    reliable: bool,
    timers: Timers,
    interval: Duration,
    next_retransmit: Option<Instant>,
    timeout_at: Instant,
    linger_until: Option<Instant>,
    pub sent_at: Instant,
    pub retransmits: u32,
}

impl ClientTransaction {
    /// A transaction whose request was just sent at `now`. `reliable` (TCP) disables
    /// retransmission (Timers A/E) but keeps the timeout (B/F).
    pub fn new(kind: Kind, now: Instant, reliable: bool, timers: Timers) -> Self {
        ClientTransaction {
            kind,
            state: State::Calling,
            reliable,
            timers,
            interval: timers.t1,
            next_retransmit: (!reliable).then(|| now + timers.t1),
            timeout_at: now + timers.timeout(),
            linger_until: None,
            sent_at: now,
            retransmits: 0,
        }
    }

    /// The earliest instant at which [`on_timer`](Self::on_timer) has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Calling | State::Proceeding => Some(match self.next_retransmit {
                Some(r) => r.min(self.timeout_at),
                None => self.timeout_at,
            }),
            State::Completed => self.linger_until,
            State::Terminated => None,
        }
    }

    pub fn on_timer(&mut self, now: Instant) -> TimerAction {
        match self.state {
            State::Calling | State::Proceeding => {
                if now >= self.timeout_at {
                    self.state = State::Terminated;
                    return TimerAction::Timeout;
                }
                match self.next_retransmit {
                    Some(at) if now >= at => {
                        // INVITE (Timer A) doubles without cap and stops at the first provisional;
                        // non-INVITE (Timer E) doubles up to T2, and in Proceeding stays at T2.
                        self.interval = match (self.kind, self.state) {
                            (Kind::Invite, _) => self.interval * 2,
                            (Kind::NonInvite, State::Proceeding) => self.timers.t2,
                            (Kind::NonInvite, _) => (self.interval * 2).min(self.timers.t2),
                        };
                        self.next_retransmit = Some(at + self.interval);
                        self.retransmits += 1;
                        TimerAction::Retransmit
                    }
                    _ => TimerAction::None,
                }
            }
            State::Completed => match self.linger_until {
                Some(t) if now >= t => {
                    self.state = State::Terminated;
                    TimerAction::Terminated
                }
                _ => TimerAction::None,
            },
            State::Terminated => TimerAction::None,
        }
    }

    pub fn on_response(&mut self, now: Instant, code: u16) -> ResponseAction {
        match self.state {
            State::Terminated => ResponseAction::Absorb,
            State::Completed => ResponseAction::Absorb,
            State::Calling | State::Proceeding if code < 200 => {
                if self.kind == Kind::Invite {
                    self.next_retransmit = None;
                } else if self.state == State::Calling && !self.reliable {
                    self.next_retransmit = Some(now + self.timers.t2);
                }
                let first = self.state == State::Calling;
                self.state = State::Proceeding;
                if first {
                    ResponseAction::Deliver
                } else {
                    // Further provisionals still go up (180 after 100), the owner filters.
                    ResponseAction::Deliver
                }
            }
            State::Calling | State::Proceeding => {
                self.next_retransmit = None;
                match (self.kind, code) {
                    // 2xx to INVITE ends the transaction; the dialog layer ACKs 2xx itself and
                    // re-ACKs retransmitted 2xx (RFC 3261 §13.2.2.4).
                    (Kind::Invite, 200..=299) => {
                        self.state = State::Terminated;
                    }
                    // Timer D (≥32 s unreliable) / Timer K (T4) keep absorbing retransmissions.
                    (Kind::Invite, _) => {
                        self.state = State::Completed;
                        self.linger_until = Some(
                            now + if self.reliable {
                                Duration::ZERO
                            } else {
                                Duration::from_secs(32).max(self.timers.timeout() / 2)
                            },
                        );
                    }
                    (Kind::NonInvite, _) => {
                        self.state = State::Completed;
                        self.linger_until = Some(
                            now + if self.reliable {
                                Duration::ZERO
                            } else {
                                self.timers.t4
                            },
                        );
                    }
                }
                ResponseAction::Deliver
            }
        }
    }
}

/// Retransmission schedule of a 2xx to INVITE from the UAS core (RFC 3261 §13.3.1.4): from T1,
/// doubling up to T2, until the ACK comes or 64·T1 has passed.
#[derive(Clone, Debug)]
pub struct ServerRetransmit {
    interval: Duration,
    pub next: Instant,
    pub give_up_at: Instant,
    t2: Duration,
}

impl ServerRetransmit {
    pub fn new(now: Instant, timers: Timers) -> Self {
        ServerRetransmit {
            interval: timers.t1,
            next: now + timers.t1,
            give_up_at: now + timers.timeout(),
            t2: timers.t2,
        }
    }
    /// Called when `next` has passed: `true` to retransmit, `false` when it is time to give up.
    pub fn fire(&mut self, now: Instant) -> bool {
        if now >= self.give_up_at {
            return false;
        }
        self.interval = (self.interval * 2).min(self.t2);
        self.next = now + self.interval;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_until_done(t: &mut ClientTransaction, start: Instant) -> (u32, Duration) {
        let mut sends = Vec::new();
        for _ in 0..100 {
            let Some(d) = t.deadline() else { break };
            match t.on_timer(d) {
                TimerAction::Retransmit => sends.push(d - start),
                TimerAction::Timeout => return (sends.len() as u32, d - start),
                _ => {}
            }
        }
        panic!("no timeout");
    }

    #[test]
    fn invite_timer_a_doubles_until_timer_b() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(Kind::Invite, t0, false, Timers::default());
        let (n, at) = run_until_done(&mut t, t0);
        // 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s: six retransmissions before Timer B at 32 s.
        assert_eq!(n, 6);
        assert_eq!(at, Duration::from_secs(32));
        assert_eq!(t.retransmits, 6);
    }

    #[test]
    fn non_invite_timer_e_caps_at_t2() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(Kind::NonInvite, t0, false, Timers::default());
        let (n, at) = run_until_done(&mut t, t0);
        // 0.5, 1.5, 3.5, 7.5, then every 4 s: 11.5, 15.5, ..., 31.5: ten in all.
        assert_eq!(n, 10);
        assert_eq!(at, Duration::from_secs(32));
    }

    #[test]
    fn provisional_stops_invite_retransmits_and_reliable_never_retransmits() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(Kind::Invite, t0, false, Timers::default());
        assert_eq!(t.on_response(t0, 100), ResponseAction::Deliver);
        assert_eq!(t.deadline(), Some(t0 + Duration::from_secs(32)));
        assert_eq!(
            t.on_timer(t0 + Duration::from_secs(32)),
            TimerAction::Timeout
        );

        let mut r = ClientTransaction::new(Kind::NonInvite, t0, true, Timers::default());
        let (n, _) = run_until_done(&mut r, t0);
        assert_eq!(n, 0);
    }

    #[test]
    fn final_responses_complete_and_absorb() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(Kind::Invite, t0, false, Timers::default());
        assert_eq!(t.on_response(t0, 486), ResponseAction::Deliver);
        assert_eq!(t.state, State::Completed);
        assert_eq!(t.on_response(t0, 486), ResponseAction::Absorb);
        assert_eq!(
            t.on_timer(t0 + Duration::from_secs(32)),
            TimerAction::Terminated
        );

        let mut ok = ClientTransaction::new(Kind::Invite, t0, false, Timers::default());
        ok.on_response(t0, 200);
        assert_eq!(ok.state, State::Terminated);
        assert_eq!(ok.deadline(), None);
    }

    #[test]
    fn server_2xx_retransmit_gives_up_after_64_t1() {
        let t0 = Instant::now();
        let mut r = ServerRetransmit::new(t0, Timers::default());
        let mut n = 0;
        while r.fire(r.next) {
            n += 1;
            assert!(n < 50);
        }
        // 0.5, 1.5, 3.5, 7.5, then every T2 up to 31.5 s.
        assert_eq!(n, 10);
    }
}
