//! The calling side of one call (INVITE client), sans IO: INVITE, answer a 401/407 once,
//! ACK the final response, hang up with BYE after the hold time, CANCEL a call still ringing
//! at the INVITE timeout, and answer the far end's BYE.
//!
//! The machine has no socket and no clock, like [`super::registration`]. Its owner tells it
//! what happened — [`start`], a [`handle_response`] to its INVITE or BYE, a
//! [`handle_cancel_response`], a [`handle_txn_timeout`], a request inside the dialog
//! ([`handle_request`]), [`handle_timeout`] at its deadline, or that the run wants the call
//! over ([`hang_up`], [`hang_up_at`], [`cancel`]) — and then collects what it asks for: the
//! requests to send ([`poll_transmit`], given a Via since the owner runs the INVITE and BYE
//! transactions and so owns the branches), the RFC 6076 measurements and outcomes to book
//! ([`poll_event`]) and the next instant it wants to be woken ([`poll_timeout`]). The CANCEL's
//! transaction is the machine's own: it shares the INVITE's branch and lives and dies with the
//! call. Picking who calls whom, pacing and the counters stay with the owner.
//!
//! With a [`HoldPlan`] the caller also puts its answered call on hold and takes it off again,
//! each with a re-INVITE in the dialog whose client transaction the owner runs like the
//! first INVITE's; the machine tells their responses apart by CSeq number.
//!
//! [`start`]: OutgoingCall::start
//! [`handle_response`]: OutgoingCall::handle_response
//! [`handle_cancel_response`]: OutgoingCall::handle_cancel_response
//! [`handle_txn_timeout`]: OutgoingCall::handle_txn_timeout
//! [`handle_request`]: OutgoingCall::handle_request
//! [`handle_timeout`]: OutgoingCall::handle_timeout
//! [`hang_up`]: OutgoingCall::hang_up
//! [`hang_up_at`]: OutgoingCall::hang_up_at
//! [`cancel`]: OutgoingCall::cancel
//! [`poll_transmit`]: OutgoingCall::poll_transmit
//! [`poll_event`]: OutgoingCall::poll_event
//! [`poll_timeout`]: OutgoingCall::poll_timeout

use super::challenge::Authenticator;
use crate::sip::builder::{sdp, SdpAudio, Writer};
use crate::sip::dialog::Dialog;
use crate::sip::sdp::Direction;
use crate::sip::transaction::{ClientTransaction, Kind, State, TimerAction, Timers};
use crate::sip::{HeaderName, Message, Method};
use rand::Rng;
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every call of a run shares; the owner builds it once and lends it to each call.
#[derive(Clone, Debug)]
pub struct CallConfig {
    pub user_agent: String,
    /// P-Access-Network-Info for the INVITE (TS 24.229 §5.1.2A.1).
    pub pani: Option<String>,
    /// The SDP offer of every INVITE.
    pub offer: Vec<u8>,
    /// A call still ringing this long after its first INVITE is CANCELled.
    pub invite_timeout: Duration,
    /// For the CANCEL's transaction: a reliable transport does not retransmit.
    pub reliable: bool,
    pub timers: Timers,
    /// What `offer` says, and the address in its `o=` and `c=` lines: a re-INVITE offers the
    /// same stream with another direction and a higher version.
    pub audio: SdpAudio,
    pub origin: String,
    /// The caller holds and resumes every answered call (`--call-hold`).
    pub hold: Option<HoldPlan>,
}

/// A caller's own hold and resume (RFC 3264 §8.4, RFC 6337 §5.3): a re-INVITE offering
/// `direction` (sendonly: the held party hears music; inactive: nothing either way) `after`
/// the answer, and one offering sendrecv again `length` after the hold was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldPlan {
    pub after: Duration,
    pub length: Duration,
    pub direction: Direction,
}

/// Who calls whom and how, fixed for the life of the call.
#[derive(Clone, Debug)]
pub struct CallSetup {
    // Shared rather than owned: they are the caller's or the run's, the same for many calls,
    // and a copy each would be an allocation per call.
    pub ruri: Arc<str>,
    /// From (without tag) and To of the INVITE, as name-addrs.
    pub from: Arc<str>,
    pub to: Arc<str>,
    pub local_tag: crate::sip::ids::Token,
    pub call_id: crate::sip::ids::CallId,
    /// Route set of the INVITE (the caller's Service-Route).
    pub routes: Vec<String>,
    pub contact: Arc<str>,
    /// P-Preferred-Identity (a name-addr), when the UE names one.
    pub preferred_identity: Option<String>,
    /// Hang up this long after the answer; `None` leaves the hanging up to the far end.
    pub hold: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallState {
    Inviting,
    /// A provisional came: the call can be CANCELled.
    Early,
    Confirmed,
    /// Our BYE is out.
    Terminating,
    Cancelling,
    /// Over: the owner forgets the call once the events are booked.
    Ended,
}

/// What the Via the owner hands [`OutgoingCall::poll_transmit`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Branch {
    /// A new INVITE or BYE transaction, which the owner runs.
    Transaction,
    /// An ACK to a 2xx: its own branch (RFC 3261 §13.2.2.4), but no transaction answers it.
    Ack,
}

/// What a request from [`OutgoingCall::poll_transmit`] is, and so what the owner does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    /// Start a client transaction for it, with the branch just given.
    Invite,
    /// A re-INVITE (hold or resume): an INVITE client transaction of its own, like the first.
    Reinvite,
    Bye,
    /// ACK to a 2xx: send and forget ([`OutgoingCall::ack_again`] rebuilds it for a
    /// retransmitted 2xx).
    Ack,
    /// ACK to a non-2xx final, on the INVITE's branch: the INVITE transaction sends it again
    /// for each retransmission of that final.
    AckFailure,
    /// CANCEL, whose transaction this machine runs; `retransmit` says whether it is a repeat.
    Cancel {
        retransmit: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub out: Out,
    pub data: Vec<u8>,
}

/// How a call that was answered ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// 2xx to our BYE, or the far end hung up.
    Completed,
    /// 481 to our BYE: the far end no longer knew the dialog.
    NoDialog,
    /// Any other final to our BYE, or its transaction timed out.
    ByeFailed,
}

/// A measurement or outcome for the owner to book. Delays are RFC 6076's, from the first
/// INVITE's transmission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The first response other than 100, final or not (Session Request Delay, §4.2).
    RequestDelay(Duration),
    /// The first provisional other than 100: the far end is alerting.
    Ringing,
    /// A 2xx came `delay` after the first INVITE; the ACK follows.
    Answered { delay: Duration },
    /// Our BYE went `held` after the answer (Session Duration Time, §4.6).
    HungUp { held: Duration },
    /// The INVITE ended with final `status` (not answered again), or with none when its
    /// transaction timed out; `cancelling` says whether our CANCEL was out. The call is over.
    Failed {
        status: Option<u16>,
        cancelling: bool,
    },
    /// An answered call is over; `disconnect` is the Session Disconnect Delay (§4.5) when a
    /// final response to our BYE came.
    Ended {
        how: Ending,
        disconnect: Option<Duration>,
    },
    /// Our CANCEL got no final response in 64·T1.
    CancelTimedOut,
    /// Our re-INVITE offering `direction` was answered 2xx: on hold (sendonly, inactive) or
    /// back (sendrecv). Its answer's SDP is the far end's stream from now on.
    Reinvited { direction: Direction },
    /// Our re-INVITE got final `status`, or none in time (`None`); the session stays as it
    /// was. A 408, 481 or no answer ends the call with BYE (RFC 3261 §12.2.1.2).
    ReinviteFailed { status: Option<u16> },
}

/// A request due, built when polled when it needs a Via from the owner.
#[derive(Clone, Debug)]
enum Pending {
    /// An INVITE, with the Proxy-Authorization or Authorization line answering a challenge.
    Invite(Option<String>),
    /// ACK to the 2xx of the INVITE with this CSeq number.
    Ack(u32),
    Bye,
    Reinvite(Direction),
    Built(Out, Vec<u8>),
}

/// Our re-INVITE still waiting for its final response.
#[derive(Clone, Debug)]
struct Reinvite {
    cseq: u32,
    direction: Direction,
    /// Its Via: an ACK to a non-2xx final repeats it (RFC 3261 §17.1.1.3).
    via: String,
}

/// One call placed by a UE.
#[derive(Clone, Debug)]
pub struct OutgoingCall {
    setup: CallSetup,
    state: CallState,
    cseq: u32,
    /// The last INVITE's Via: its non-2xx ACK and its CANCEL carry the same one
    /// (RFC 3261 §17.1.1.3, §9.1).
    invite_via: String,
    first_invite: Instant,
    srd_done: bool,
    auth_sent: bool,
    answered_at: Option<Instant>,
    dialog: Option<Dialog>,
    /// The CSeq number of the last INVITE (first or re-) whose 2xx we ACKed; 0 before. The ACK
    /// is not kept: a retransmitted 2xx gets it rebuilt from the dialog
    /// ([`OutgoingCall::ack_again`]), since a kept copy was a pool buffer (768 bytes at least)
    /// held for the whole life of every call that was up.
    acked: u32,
    /// `--call-hold`: our re-INVITE in progress, when the next is due, whether the call is on
    /// hold, and the version of our last SDP offer.
    reinvite: Option<Reinvite>,
    reinvite_at: Option<Instant>,
    on_hold: bool,
    sdp_version: u32,
    bye_sent: Option<Instant>,
    /// Boxed: only a call CANCELled while ringing has one, and inline it was 160 of the bytes
    /// every live call holds.
    cancel: Option<Box<(ClientTransaction, Vec<u8>)>>,
    /// When a call still ringing is CANCELled; once only, from the first INVITE.
    invite_deadline: Option<Instant>,
    hang_up_at: Option<Instant>,
    // Inline: a call has at most a couple of each queued at a time, and a heap queue per
    // call was two allocations per call.
    pending: SmallVec<[Pending; 2]>,
    events: SmallVec<[Event; 2]>,
}

/// The kept CANCEL goes back to the message pool with the call, its INVITE's Via to the
/// string pool.
impl Drop for OutgoingCall {
    fn drop(&mut self) {
        if let Some(c) = self.cancel.take() {
            crate::sip::transport::recycle(c.1);
        }
        crate::sip::text_pool::give(std::mem::take(&mut self.invite_via));
    }
}

impl OutgoingCall {
    pub fn new(setup: CallSetup, now: Instant) -> OutgoingCall {
        OutgoingCall {
            setup,
            state: CallState::Inviting,
            cseq: 0,
            invite_via: String::new(),
            first_invite: now,
            srd_done: false,
            auth_sent: false,
            answered_at: None,
            dialog: None,
            acked: 0,
            reinvite: None,
            reinvite_at: None,
            on_hold: false,
            sdp_version: 1,
            bye_sent: None,
            cancel: None,
            invite_deadline: None,
            hang_up_at: None,
            pending: SmallVec::new(),
            events: SmallVec::new(),
        }
    }

    pub fn state(&self) -> CallState {
        self.state
    }
    pub fn call_id(&self) -> &str {
        &self.setup.call_id
    }
    /// Our From tag: a request addressed to it (To tag) belongs to this call's dialog.
    pub fn local_tag(&self) -> &str {
        &self.setup.local_tag
    }
    /// The ACK sent for the 2xx again, for a retransmitted 2xx of the INVITE numbered
    /// `cseq`: the same bytes when `via` is the Via it went out with. `None` unless that is the
    /// INVITE we ACKed last.
    pub fn ack_again(&mut self, via: impl std::fmt::Display, cseq: u32) -> Option<Vec<u8>> {
        if self.acked == 0 || self.acked != cseq {
            return None;
        }
        let d = self.dialog.as_mut()?;
        Some(d.request("ACK", via, Some(cseq)).finish(None, b""))
    }
    /// The CSeq number of our re-INVITE still waiting for its final response.
    pub fn reinvite_cseq(&self) -> Option<u32> {
        self.reinvite.as_ref().map(|r| r.cseq)
    }
    /// Whether our CANCEL still waits for its final response.
    pub fn cancel_pending(&self) -> bool {
        self.cancel
            .as_deref()
            .is_some_and(|(ct, _)| matches!(ct.state, State::Calling | State::Proceeding))
    }

    /// Sends the first INVITE now; SRD and the answer delay run from here, and the INVITE
    /// timeout from here too.
    pub fn start(&mut self, now: Instant, cfg: &CallConfig) {
        self.first_invite = now;
        self.invite_deadline = Some(now + cfg.invite_timeout);
        self.pending.push(Pending::Invite(None));
    }

    /// Whether [`OutgoingCall::poll_transmit`] has a request to give.
    pub fn has_transmit(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The next request to send, if one is due. `via` is asked, at most once, for the Via of
    /// a request that needs a new branch, and told what it is for.
    pub fn poll_transmit<V: std::fmt::Display>(
        &mut self,
        cfg: &CallConfig,
        via: impl FnOnce(Branch) -> V,
    ) -> Option<Request> {
        if self.pending.is_empty() {
            return None;
        }
        let req = match self.pending.remove(0) {
            Pending::Built(out, data) => Request { out, data },
            Pending::Invite(authz) => Request {
                out: Out::Invite,
                data: self.invite(cfg, via(Branch::Transaction), authz),
            },
            Pending::Ack(cseq) => {
                let d = self.dialog.as_mut()?;
                let ack = d
                    .request("ACK", via(Branch::Ack), Some(cseq))
                    .finish(None, b"");
                self.acked = cseq;
                Request {
                    out: Out::Ack,
                    data: ack,
                }
            }
            Pending::Reinvite(direction) => {
                use std::fmt::Write as _;
                let d = self.dialog.as_mut()?;
                let mut v = String::with_capacity(128);
                let _ = write!(v, "{}", via(Branch::Transaction));
                let mut w = d.request("INVITE", &v, None);
                let cseq = d.local_cseq;
                w.header("Contact", &self.setup.contact);
                w.header("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE");
                w.header("User-Agent", &cfg.user_agent);
                self.sdp_version += 1;
                let audio = SdpAudio {
                    direction,
                    version: self.sdp_version,
                    ..cfg.audio
                };
                self.reinvite = Some(Reinvite {
                    cseq,
                    direction,
                    via: v,
                });
                Request {
                    out: Out::Reinvite,
                    data: w.finish(Some("application/sdp"), &sdp(&cfg.origin, 1, &audio)),
                }
            }
            Pending::Bye => {
                let d = self.dialog.as_mut()?;
                let mut w = d.request("BYE", via(Branch::Transaction), None);
                w.header("User-Agent", &cfg.user_agent);
                Request {
                    out: Out::Bye,
                    data: w.finish(None, b""),
                }
            }
        };
        Some(req)
    }

    fn invite(
        &mut self,
        cfg: &CallConfig,
        via: impl std::fmt::Display,
        authz: Option<String>,
    ) -> Vec<u8> {
        use std::fmt::Write as _;
        // Kept for the CANCEL and a non-2xx ACK, which repeat it; the buffer is reused by
        // the INVITE sent again after a challenge.
        self.invite_via.clear();
        // Room for the whole Via at once (a Via written piecemeal would grow the string three
        // times), from the string pool: no allocation once calls come and go.
        if self.invite_via.capacity() < 128 {
            self.invite_via = crate::sip::text_pool::take(128);
        }
        let _ = write!(self.invite_via, "{via}");
        let s = &self.setup;
        self.cseq += 1;
        let mut w = Writer::request("INVITE", &s.ruri);
        w.header("Via", &self.invite_via);
        for r in &s.routes {
            w.header("Route", r);
        }
        w.header("Max-Forwards", 70);
        w.header("From", format_args!("{};tag={}", s.from, s.local_tag));
        w.header("To", &s.to);
        w.header("Call-ID", s.call_id);
        w.header("CSeq", format_args!("{} INVITE", self.cseq));
        w.header("Contact", &s.contact);
        w.header("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE");
        w.header("Supported", "path, timer");
        if let Some(pani) = &cfg.pani {
            w.header("P-Access-Network-Info", pani);
        }
        if let Some(ppi) = &s.preferred_identity {
            w.header("P-Preferred-Identity", ppi);
        }
        w.header("User-Agent", &cfg.user_agent);
        if let Some(a) = authz {
            w.line(&a);
        }
        w.finish(Some("application/sdp"), &cfg.offer)
    }

    /// The same Request-URI, Via, From, To, Call-ID and CSeq number as the INVITE.
    fn invite_mirror(&self, method: &str, to: &str) -> Vec<u8> {
        let s = &self.setup;
        let mut w = Writer::request(method, &s.ruri);
        w.header("Via", &self.invite_via);
        for r in &s.routes {
            w.header("Route", r);
        }
        w.header("Max-Forwards", 70);
        w.header("From", format_args!("{};tag={}", s.from, s.local_tag));
        w.header("To", to);
        w.header("Call-ID", s.call_id);
        w.header("CSeq", format_args!("{} {method}", self.cseq));
        w.finish(None, b"")
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        (!self.events.is_empty()).then(|| self.events.remove(0))
    }

    /// When [`OutgoingCall::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let invite = self
            .invite_deadline
            .filter(|_| matches!(self.state, CallState::Inviting | CallState::Early));
        let hang_up = self
            .hang_up_at
            .filter(|_| self.state == CallState::Confirmed);
        let cancel = self.cancel.as_deref().and_then(|(ct, _)| ct.deadline());
        let reinvite = self
            .reinvite_at
            .filter(|_| self.state == CallState::Confirmed);
        [invite, hang_up, cancel, reinvite]
            .into_iter()
            .flatten()
            .min()
    }

    /// Acts on whichever deadlines have come; an early or stale wake-up does nothing.
    pub fn handle_timeout(&mut self, now: Instant, cfg: &CallConfig) {
        if self.invite_deadline.is_some_and(|d| d <= now) {
            self.invite_deadline = None;
            // Still trying with no provisional: the INVITE transaction's own timeout ends it.
            self.cancel(now, cfg);
        }
        if self.hang_up_at.is_some_and(|d| d <= now) {
            self.hang_up_at = None;
            self.hang_up(now);
        }
        if self.reinvite_at.is_some_and(|d| d <= now) {
            self.reinvite_at = None;
            if self.state == CallState::Confirmed && self.reinvite.is_none() {
                let direction = match (self.on_hold, cfg.hold) {
                    (false, Some(h)) => h.direction,
                    _ => Direction::SendRecv,
                };
                self.pending.push(Pending::Reinvite(direction));
            }
        }
        if let Some((ct, req)) = self.cancel.as_deref_mut() {
            if ct.deadline().is_some_and(|d| d <= now) {
                match ct.on_timer(now) {
                    TimerAction::Retransmit => self.pending.push(Pending::Built(
                        Out::Cancel { retransmit: true },
                        crate::sip::transport::copy(req),
                    )),
                    TimerAction::Timeout => self.events.push(Event::CancelTimedOut),
                    TimerAction::Terminated | TimerAction::None => {}
                }
            }
        }
    }

    /// Ends an established call with BYE now; does nothing in any other state.
    pub fn hang_up(&mut self, now: Instant) {
        if self.state != CallState::Confirmed {
            return;
        }
        self.state = CallState::Terminating;
        self.bye_sent = Some(now);
        if let Some(a) = self.answered_at {
            self.events.push(Event::HungUp { held: now - a });
        }
        self.pending.push(Pending::Bye);
    }

    /// Hangs up at `at` at the latest (a stopping run spreads its BYEs).
    pub fn hang_up_at(&mut self, at: Instant) {
        self.hang_up_at = Some(self.hang_up_at.map_or(at, |h| h.min(at)));
    }

    /// CANCELs a ringing call; does nothing before a provisional or once CANCELled.
    pub fn cancel(&mut self, now: Instant, cfg: &CallConfig) {
        if self.cancel.is_some() || self.state != CallState::Early {
            return;
        }
        let req = self.invite_mirror("CANCEL", &self.setup.to);
        let ct = ClientTransaction::new(Kind::NonInvite, now, cfg.reliable, cfg.timers);
        self.pending.push(Pending::Built(
            Out::Cancel { retransmit: false },
            crate::sip::transport::copy(&req),
        ));
        self.state = CallState::Cancelling;
        self.cancel = Some(Box::new((ct, req)));
    }

    /// A response to our CANCEL (it shares the INVITE's branch; the owner tells them apart).
    pub fn handle_cancel_response(&mut self, now: Instant, code: u16) {
        if let Some((ct, _)) = self.cancel.as_deref_mut() {
            ct.on_response(now, code);
        }
    }

    /// A response to our INVITE or BYE, as its CSeq says (the owner matched it to the
    /// transaction). `auth` is the caller's, to answer a challenge with; `rng` draws the cnonce.
    pub fn handle_response(
        &mut self,
        now: Instant,
        cfg: &CallConfig,
        auth: Option<&mut Authenticator>,
        msg: &Message<'_>,
        code: u16,
        rng: &mut impl Rng,
    ) {
        if self.state == CallState::Ended {
            return;
        }
        match msg.cseq() {
            Some((n, "INVITE")) if Some(n) == self.reinvite_cseq() => {
                self.reinvite_response(now, cfg, n, code)
            }
            // A late final of an earlier re-INVITE: its transaction ACKs it; nothing changes.
            Some((n, "INVITE")) if n != self.cseq => {}
            Some((_, "INVITE")) => self.invite_response(now, cfg, auth, msg, code, rng),
            Some((_, "BYE")) if code >= 200 => {
                let how = match code {
                    200..=299 => Ending::Completed,
                    481 => Ending::NoDialog,
                    _ => Ending::ByeFailed,
                };
                let disconnect = self.bye_sent.map(|s| now - s);
                self.end(Event::Ended { how, disconnect });
            }
            _ => {}
        }
    }

    fn invite_response(
        &mut self,
        now: Instant,
        cfg: &CallConfig,
        auth: Option<&mut Authenticator>,
        msg: &Message<'_>,
        code: u16,
        rng: &mut impl Rng,
    ) {
        let first_non100 = !self.srd_done && code > 100;
        if first_non100 {
            self.srd_done = true;
            self.events
                .push(Event::RequestDelay(now - self.first_invite));
        }
        if code < 200 {
            // Any provisional (a proxy's 100 included) allows CANCEL; the call counts as
            // ringing at its first provisional other than 100, whatever came before it.
            if self.state == CallState::Inviting {
                self.state = CallState::Early;
            }
            if first_non100 {
                self.events.push(Event::Ringing);
            }
            return;
        }
        if (200..300).contains(&code) {
            return self.answered(now, cfg, msg);
        }
        let to = msg.header(HeaderName::To).unwrap_or(&self.setup.to);
        let ack = self.invite_mirror("ACK", to);
        self.pending.push(Pending::Built(Out::AckFailure, ack));
        let cancelling = self.state == CallState::Cancelling;
        if (code == 401 || code == 407) && !self.auth_sent {
            let answer = auth.and_then(|a| {
                a.credentials(msg, code, "INVITE", &self.setup.ruri, &cfg.offer, rng)
            });
            if let Some(a) = answer {
                // Same Call-ID and From tag, next CSeq, new branch (RFC 3261 §22.2).
                self.auth_sent = true;
                self.state = CallState::Inviting;
                self.pending.push(Pending::Invite(Some(a)));
                return;
            }
        }
        self.end(Event::Failed {
            status: Some(code),
            cancelling,
        });
    }

    /// A final response to our re-INVITE numbered `cseq`.
    fn reinvite_response(&mut self, now: Instant, cfg: &CallConfig, cseq: u32, code: u16) {
        if code < 200 {
            return;
        }
        let Some(r) = self.reinvite.take() else {
            return;
        };
        if (200..300).contains(&code) {
            self.pending.push(Pending::Ack(cseq));
            self.on_hold = r.direction != Direction::SendRecv;
            self.events.push(Event::Reinvited {
                direction: r.direction,
            });
            if let (true, Some(h)) = (self.on_hold, cfg.hold) {
                self.reinvite_at = Some(now + h.length);
            }
            return;
        }
        // The non-2xx's ACK: the re-INVITE's Via, To (with the tag it had) and CSeq.
        if let Some(d) = self.dialog.as_mut() {
            let ack = d.request("ACK", &r.via, Some(cseq)).finish(None, b"");
            self.pending.push(Pending::Built(Out::AckFailure, ack));
        }
        self.events
            .push(Event::ReinviteFailed { status: Some(code) });
        if code == 408 || code == 481 {
            self.hang_up(now);
        }
    }

    fn answered(&mut self, now: Instant, cfg: &CallConfig, msg: &Message<'_>) {
        // A 200 that crossed our CANCEL: the call is up, so ACK it and end it with BYE at once.
        let cancelling = self.state == CallState::Cancelling;
        self.events.push(Event::Answered {
            delay: now - self.first_invite,
        });
        let s = &self.setup;
        self.dialog = Some(Dialog::from_uac_response(
            msg,
            &s.from,
            &s.local_tag,
            &s.to,
            self.cseq,
        ));
        self.answered_at = Some(now);
        self.state = CallState::Confirmed;
        self.pending.push(Pending::Ack(self.cseq));
        if cancelling {
            self.hang_up(now);
        } else if let Some(h) = self.setup.hold {
            self.hang_up_at(now + h);
        }
        if let Some(h) = cfg.hold {
            self.reinvite_at = Some(now + h.after);
        }
    }

    /// The INVITE's (`reinvite`: the re-INVITE's) or BYE's transaction got no final response.
    pub fn handle_txn_timeout(&mut self, now: Instant, method: Method, reinvite: bool) {
        if self.state == CallState::Ended {
            return;
        }
        match method {
            Method::Invite if reinvite && self.reinvite.take().is_some() => {
                self.events.push(Event::ReinviteFailed { status: None });
                self.hang_up(now);
            }
            Method::Invite if reinvite => {}
            Method::Invite => {
                let cancelling = self.state == CallState::Cancelling;
                self.end(Event::Failed {
                    status: None,
                    cancelling,
                })
            }
            Method::Bye => self.end(Event::Ended {
                how: Ending::ByeFailed,
                disconnect: None,
            }),
            _ => {}
        }
    }

    /// A request from the far end inside this call's dialog: the status to answer it with, if
    /// any. The far end's BYE ends the call.
    pub fn handle_request(&mut self, method: &str) -> Option<u16> {
        match method {
            "ACK" => None,
            "BYE" => {
                // Session duration is recorded by the side that sends BYE, once per call.
                self.end(Event::Ended {
                    how: Ending::Completed,
                    disconnect: None,
                });
                Some(200)
            }
            _ => Some(200),
        }
    }

    fn end(&mut self, e: Event) {
        self.state = CallState::Ended;
        self.events.push(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::auth;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    const TXN_VIA: &str = "SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-t";
    const ACK_VIA: &str = "SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-a";

    fn cfg() -> CallConfig {
        CallConfig {
            user_agent: "test".into(),
            pani: None,
            offer: b"v=0\r\n".to_vec(),
            invite_timeout: Duration::from_secs(30),
            reliable: false,
            timers: Timers::default(),
            audio: SdpAudio::nominal(40000),
            origin: "127.0.0.2".into(),
            hold: None,
        }
    }

    fn setup(hold: Option<Duration>) -> CallSetup {
        CallSetup {
            ruri: "sip:bob@ims.local".into(),
            from: "<sip:alice@ims.local>".into(),
            to: "<sip:bob@ims.local>".into(),
            local_tag: "lt".try_into().unwrap(),
            call_id: "call-1".try_into().unwrap(),
            routes: vec!["<sip:orig@scscf.ims.local;lr>".into()],
            contact: "<sip:alice@127.0.0.2:5070>".into(),
            preferred_identity: None,
            hold,
        }
    }

    /// A caller under a virtual clock; branches are numbered so each request's can be told.
    struct Ue {
        now: Instant,
        cfg: CallConfig,
        call: OutgoingCall,
        auth: Authenticator,
        rng: SmallRng,
        branches: u32,
    }

    impl Ue {
        fn new(hold: Option<Duration>) -> Ue {
            let now = Instant::now();
            let cfg = cfg();
            let mut call = OutgoingCall::new(setup(hold), now);
            call.start(now, &cfg);
            Ue {
                now,
                cfg,
                call,
                auth: Authenticator::new("alice@ims.local".into(), "secret".into(), None),
                rng: SmallRng::seed_from_u64(3),
                branches: 0,
            }
        }

        fn sent(&mut self) -> Vec<(Out, String)> {
            let mut out = Vec::new();
            loop {
                self.branches += 1;
                let n = self.branches;
                let Some(r) = self.call.poll_transmit(&self.cfg, |b| match b {
                    Branch::Transaction => format!("{TXN_VIA}{n}"),
                    Branch::Ack => format!("{ACK_VIA}{n}"),
                }) else {
                    break;
                };
                out.push((r.out, String::from_utf8(r.data).unwrap()));
            }
            out
        }

        fn answer(&mut self, code: u16, method: &str, extra: &str) {
            self.answer_cseq(code, 1, method, extra)
        }

        fn answer_cseq(&mut self, code: u16, cseq: u32, method: &str, extra: &str) {
            let data = format!(
                "SIP/2.0 {code} Whatever\r\nVia: {TXN_VIA}\r\n\
                 From: <sip:alice@ims.local>;tag=lt\r\nTo: <sip:bob@ims.local>;tag=rt\r\n\
                 Call-ID: call-1\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: 0\r\n\r\n"
            );
            let msg = Message::parse(data.as_bytes()).unwrap();
            let auth = Some(&mut self.auth);
            self.call
                .handle_response(self.now, &self.cfg, auth, &msg, code, &mut self.rng);
        }

        fn events(&mut self) -> Vec<Event> {
            std::iter::from_fn(|| self.call.poll_event()).collect()
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
            self.call.handle_timeout(self.now, &self.cfg);
        }
    }

    fn header<'a>(req: &'a str, name: &str) -> Option<&'a str> {
        req.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    }

    const CONTACT_RR: &str =
        "Contact: <sip:bob@127.0.0.3:5070>\r\nRecord-Route: <sip:pcscf.ims.local;lr>\r\n";

    #[test]
    fn a_hold_plan_holds_with_a_reinvite_and_resumes_and_a_refused_resume_leaves_the_call_up() {
        let mut ue = Ue::new(Some(Duration::from_secs(10)));
        ue.cfg.hold = Some(HoldPlan {
            after: Duration::from_secs(2),
            length: Duration::from_secs(3),
            direction: Direction::SendOnly,
        });
        ue.sent();
        ue.answer(200, "INVITE", CONTACT_RR);
        assert!(matches!(ue.sent()[..], [(Out::Ack, _)]));
        ue.events();
        assert_eq!(
            ue.call.poll_timeout(),
            Some(ue.now + Duration::from_secs(2))
        );

        ue.advance(Duration::from_secs(2));
        let sent = ue.sent();
        let [(Out::Reinvite, hold)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert!(
            hold.starts_with("INVITE sip:bob@127.0.0.3:5070 SIP/2.0\r\n"),
            "{hold}"
        );
        assert_eq!(header(hold, "CSeq"), Some("2 INVITE"));
        assert_eq!(header(hold, "To"), Some("<sip:bob@ims.local>;tag=rt"));
        assert_eq!(header(hold, "Contact"), Some("<sip:alice@127.0.0.2:5070>"));
        assert_eq!(header(hold, "Content-Type"), Some("application/sdp"));
        assert!(
            hold.contains("o=imsload 1 2 IN IP4 127.0.0.2\r\n"),
            "{hold}"
        );
        assert!(hold.ends_with("a=sendonly\r\n"), "{hold}");
        assert_eq!(ue.call.reinvite_cseq(), Some(2));
        // A provisional changes nothing; the 2xx is ACKed with the re-INVITE's CSeq.
        ue.answer_cseq(100, 2, "INVITE", "");
        ue.answer_cseq(200, 2, "INVITE", CONTACT_RR);
        let sent = ue.sent();
        let [(Out::Ack, ack)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(header(ack, "CSeq"), Some("2 ACK"));
        assert_eq!(
            ue.events(),
            [Event::Reinvited {
                direction: Direction::SendOnly
            }]
        );
        assert_eq!(ue.call.reinvite_cseq(), None);
        let via = header(ack, "Via").unwrap().to_string();
        assert_eq!(ue.call.ack_again(&via, 1), None);
        assert!(ue.call.ack_again(&via, 2).is_some());

        ue.advance(Duration::from_secs(3));
        let sent = ue.sent();
        let [(Out::Reinvite, resume)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(header(resume, "CSeq"), Some("3 INVITE"));
        assert!(resume.contains("o=imsload 1 3 IN IP4"), "{resume}");
        assert!(resume.ends_with("a=sendrecv\r\n"), "{resume}");
        // Glare (RFC 3261 §14.1): ACKed on the re-INVITE's own branch, the call stays up.
        ue.answer_cseq(491, 3, "INVITE", "");
        let sent = ue.sent();
        let [(Out::AckFailure, ack)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(header(ack, "CSeq"), Some("3 ACK"));
        assert_eq!(header(ack, "Via"), header(resume, "Via"));
        assert_eq!(ue.events(), [Event::ReinviteFailed { status: Some(491) }]);
        assert_eq!(ue.call.state(), CallState::Confirmed);
        // A late 200 to the first re-INVITE is no answer to anything now.
        ue.answer_cseq(200, 2, "INVITE", CONTACT_RR);
        assert_eq!((ue.sent(), ue.events()), (vec![], vec![]));

        ue.advance(Duration::from_secs(5));
        let sent = ue.sent();
        let [(Out::Bye, bye)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(header(bye, "CSeq"), Some("4 BYE"));
    }

    #[test]
    fn a_reinvite_that_gets_no_answer_ends_the_call() {
        let mut ue = Ue::new(None);
        ue.cfg.hold = Some(HoldPlan {
            after: Duration::from_secs(1),
            length: Duration::from_secs(1),
            direction: Direction::Inactive,
        });
        ue.sent();
        ue.answer(200, "INVITE", CONTACT_RR);
        ue.sent();
        ue.events();
        ue.advance(Duration::from_secs(1));
        let sent = ue.sent();
        assert!(sent[0].1.ends_with("a=inactive\r\n"), "{sent:?}");
        ue.call.handle_txn_timeout(ue.now, Method::Invite, true);
        assert!(matches!(
            ue.events()[..],
            [Event::ReinviteFailed { status: None }, Event::HungUp { .. }]
        ));
        assert!(matches!(ue.sent()[..], [(Out::Bye, _)]));
    }

    #[test]
    fn invite_ringing_answer_ack_hold_bye_200() {
        let mut ue = Ue::new(Some(Duration::from_secs(10)));
        let sent = ue.sent();
        let [(Out::Invite, invite)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert!(invite.starts_with("INVITE sip:bob@ims.local SIP/2.0\r\n"));
        assert_eq!(
            header(invite, "Route"),
            Some("<sip:orig@scscf.ims.local;lr>")
        );
        assert_eq!(header(invite, "CSeq"), Some("1 INVITE"));
        assert_eq!(header(invite, "From"), Some("<sip:alice@ims.local>;tag=lt"));

        ue.answer(100, "INVITE", "");
        assert_eq!(ue.events(), []);
        ue.now += Duration::from_millis(40);
        ue.answer(180, "INVITE", "");
        assert_eq!(
            ue.events(),
            [
                Event::RequestDelay(Duration::from_millis(40)),
                Event::Ringing
            ]
        );
        assert_eq!(ue.call.state(), CallState::Early);
        ue.now += Duration::from_millis(60);
        ue.answer(200, "INVITE", CONTACT_RR);
        assert_eq!(
            ue.events(),
            [Event::Answered {
                delay: Duration::from_millis(100)
            }]
        );
        let sent = ue.sent();
        let [(Out::Ack, ack)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert!(
            ack.starts_with("ACK sip:bob@127.0.0.3:5070 SIP/2.0\r\n"),
            "{ack}"
        );
        assert!(header(ack, "Via").unwrap().starts_with(ACK_VIA));
        assert_eq!(header(ack, "CSeq"), Some("1 ACK"));
        assert_eq!(header(ack, "Route"), Some("<sip:pcscf.ims.local;lr>"));
        // A retransmitted 2xx gets the same ACK, rebuilt from the dialog with the same Via.
        let via = header(ack, "Via").unwrap().to_string();
        let again = ue.call.ack_again(&via, 1).unwrap();
        assert_eq!(ue.call.ack_again(&via, 2), None);
        assert_eq!(String::from_utf8(again).unwrap(), *ack);

        // Held for 10 s, then BYE inside the dialog.
        assert_eq!(
            ue.call.poll_timeout(),
            Some(ue.now + Duration::from_secs(10))
        );
        ue.advance(Duration::from_secs(9));
        assert!(!ue.call.has_transmit());
        ue.advance(Duration::from_secs(1));
        assert_eq!(
            ue.events(),
            [Event::HungUp {
                held: Duration::from_secs(10)
            }]
        );
        let sent = ue.sent();
        let [(Out::Bye, bye)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(header(bye, "CSeq"), Some("2 BYE"));
        assert_eq!(header(bye, "To"), Some("<sip:bob@ims.local>;tag=rt"));
        assert_eq!(ue.call.state(), CallState::Terminating);
        ue.now += Duration::from_millis(5);
        ue.answer(200, "BYE", "");
        assert_eq!(
            ue.events(),
            [Event::Ended {
                how: Ending::Completed,
                disconnect: Some(Duration::from_millis(5)),
            }]
        );
        assert_eq!(ue.call.state(), CallState::Ended);
        assert_eq!(ue.call.poll_timeout(), None);
    }

    #[test]
    fn a_407_is_answered_with_a_new_invite_in_the_same_call() {
        let mut ue = Ue::new(None);
        let first = ue.sent().remove(0).1;
        ue.answer(
            407,
            "INVITE",
            "Proxy-Authenticate: Digest realm=\"ims.local\", nonce=\"n1\", qop=\"auth\"\r\n",
        );
        assert_eq!(ue.events(), [Event::RequestDelay(Duration::ZERO)]);
        let sent = ue.sent();
        let [(Out::AckFailure, ack), (Out::Invite, again)] = &sent[..] else {
            panic!("{sent:?}")
        };
        // The ACK rides the first INVITE's branch; the new INVITE gets its own.
        assert_eq!(header(ack, "Via"), header(&first, "Via"));
        assert_eq!(header(ack, "CSeq"), Some("1 ACK"));
        assert_eq!(header(ack, "To"), Some("<sip:bob@ims.local>;tag=rt"));
        assert_ne!(header(again, "Via"), header(&first, "Via"));
        assert_eq!(header(again, "Call-ID"), Some("call-1"));
        assert_eq!(header(again, "From"), header(&first, "From"));
        assert_eq!(header(again, "CSeq"), Some("2 INVITE"));
        let authz = header(again, "Proxy-Authorization").expect("credentials");
        let got = auth::verify(authz, "INVITE", "ims.local", "n1", |u| {
            (u == "alice@ims.local").then(|| b"secret".to_vec())
        });
        assert_eq!(got.as_deref(), Some("alice@ims.local"), "{authz}");
        assert_eq!(ue.call.state(), CallState::Inviting);

        // A second challenge is a rejection.
        ue.answer_cseq(
            407,
            2,
            "INVITE",
            "Proxy-Authenticate: Digest realm=\"ims.local\", nonce=\"n2\"\r\n",
        );
        assert_eq!(
            ue.events(),
            [Event::Failed {
                status: Some(407),
                cancelling: false
            }]
        );
        assert!(matches!(ue.sent()[..], [(Out::AckFailure, _)]));
    }

    #[test]
    fn no_answer_is_cancelled_then_487_is_acked() {
        let mut ue = Ue::new(Some(Duration::from_secs(1)));
        let invite = ue.sent().remove(0).1;
        ue.answer(180, "INVITE", "");
        ue.events();
        assert_eq!(
            ue.call.poll_timeout(),
            Some(ue.now + Duration::from_secs(30))
        );
        ue.advance(Duration::from_secs(30));
        let sent = ue.sent();
        let [(Out::Cancel { retransmit: false }, cancel)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert!(cancel.starts_with("CANCEL sip:bob@ims.local SIP/2.0\r\n"));
        assert_eq!(header(cancel, "Via"), header(&invite, "Via"));
        assert_eq!(header(cancel, "CSeq"), Some("1 CANCEL"));
        assert_eq!(header(cancel, "To"), Some("<sip:bob@ims.local>"));
        assert_eq!(ue.call.state(), CallState::Cancelling);
        assert!(ue.call.cancel_pending());

        // Unanswered over UDP, the CANCEL is repeated at T1.
        ue.advance(Duration::from_millis(500));
        assert!(matches!(
            ue.sent()[..],
            [(Out::Cancel { retransmit: true }, _)]
        ));
        ue.call.handle_cancel_response(ue.now, 200);
        assert!(!ue.call.cancel_pending());
        ue.answer(487, "INVITE", "");
        assert_eq!(
            ue.events(),
            [Event::Failed {
                status: Some(487),
                cancelling: true
            }]
        );
        let sent = ue.sent();
        let [(Out::AckFailure, ack)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(header(ack, "Via"), header(&invite, "Via"));
    }

    #[test]
    fn busy_is_acked_and_fails() {
        let mut ue = Ue::new(None);
        ue.sent();
        ue.now += Duration::from_millis(7);
        ue.answer(486, "INVITE", "");
        assert_eq!(
            ue.events(),
            [
                Event::RequestDelay(Duration::from_millis(7)),
                Event::Failed {
                    status: Some(486),
                    cancelling: false
                }
            ]
        );
        let sent = ue.sent();
        let [(Out::AckFailure, ack)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert!(ack.starts_with("ACK sip:bob@ims.local SIP/2.0\r\n"));
        assert_eq!(ue.call.state(), CallState::Ended);
    }

    #[test]
    fn the_far_end_hangs_up_and_is_answered_200() {
        let mut ue = Ue::new(None);
        ue.sent();
        ue.answer(200, "INVITE", CONTACT_RR);
        ue.events();
        ue.sent();
        assert_eq!(ue.call.poll_timeout(), None, "no hold: the callee hangs up");
        assert_eq!(ue.call.handle_request("ACK"), None);
        assert_eq!(ue.call.handle_request("INFO"), Some(200));
        assert_eq!(ue.call.handle_request("BYE"), Some(200));
        assert_eq!(
            ue.events(),
            [Event::Ended {
                how: Ending::Completed,
                disconnect: None
            }]
        );
        assert_eq!(ue.call.state(), CallState::Ended);
    }

    #[test]
    fn a_200_crossing_the_cancel_is_acked_and_hung_up() {
        let mut ue = Ue::new(Some(Duration::from_secs(60)));
        ue.sent();
        ue.answer(183, "INVITE", "");
        ue.call.cancel(ue.now, &ue.cfg);
        ue.sent();
        ue.events();
        ue.answer(200, "INVITE", CONTACT_RR);
        let sent = ue.sent();
        assert!(
            matches!(sent[..], [(Out::Ack, _), (Out::Bye, _)]),
            "{sent:?}"
        );
        assert!(matches!(
            ue.events()[..],
            [Event::Answered { .. }, Event::HungUp { .. }]
        ));
        ue.call.handle_txn_timeout(ue.now, Method::Bye, false);
        assert_eq!(
            ue.events(),
            [Event::Ended {
                how: Ending::ByeFailed,
                disconnect: None
            }]
        );
    }
}
