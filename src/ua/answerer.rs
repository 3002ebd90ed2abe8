//! The answering side of calls (the INVITE/BYE server role), sans IO: it takes requests, the
//! responses to its own BYEs and the time, and hands back datagrams to send and the next instant
//! it needs to be woken, in the shape of quinn-proto and str0m (`handle_*`, `poll_transmit`,
//! `poll_timeout`). It owns no clock and no socket.
//!
//! A call: INVITE → 180 → (after the ring time) 200 with SDP, repeated at T1, 2·T1, … T2 until
//! the ACK (RFC 3261 §13.3.1.4), or BYE after 64·T1 without one; CANCEL while ringing → 200 and
//! 487; the caller's BYE → 200; optionally our own BYE after a hold time. An ended call lingers
//! 64·T1 (UDP) so that retransmitted INVITEs and BYEs are answered rather than refused: as a
//! tombstone of its Call-ID ([`super::linger`]) when it was answered 2xx and the caller hung up,
//! which needs nothing of its state; whole otherwise (a lost 487 can still be asked for, our
//! BYE's transaction absorbs retransmitted 200s).
//!
//! What a peer can make it hold is bounded, because anybody who can reach the socket can send
//! INVITEs and never ACK them (issue 10): at most [`AnswererConfig::max_calls`] calls in
//! progress and [`AnswererConfig::max_bytes`] of stored bytes (lingering calls included),
//! beyond which a new INVITE gets a stateless `503` with `Retry-After`; an INVITE whose headers we would have to copy exceed
//! [`AnswererConfig::max_header_bytes`] gets a stateless `513`. A call keeps only what its
//! responses and its BYE need (the copied headers and the dialog), never the request.
//!
//! Used by [`crate::load::core::LoadCore`] for the calls its users receive and by
//! [`crate::target::core::TargetCore`] as the embedded target's called party.

use super::linger::Lingering;
use super::timers::TimerWheel;
use super::{DurationDist, Peer};
use crate::sip::builder::{sdp_len, write_sdp, SdpAudio, Writer};
use crate::sip::dialog::Dialog;
use crate::sip::ids::{self, IdScheme};
use crate::sip::sdp::Answer;
use crate::sip::transaction::{
    ClientTransaction, Kind, ResponseAction, ServerRetransmit, State, TimerAction, Timers,
};
use crate::sip::transport::{self, Transmit, Transport};
use crate::sip::{reason, HeaderName, Message};
use crate::slab::{Key, Slab};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The answerer's settings.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AnswererConfig {
    pub transport: Transport,
    pub timers: Timers,
    /// Time it rings (180) before it answers (200).
    pub ring: Duration,
    pub ring_dist: DurationDist,
    /// Hang up with BYE this long after the ACK; `None`: the caller hangs up.
    pub hang_up_after: Option<Duration>,
    pub hang_up_dist: DurationDist,
    /// The Server header.
    pub user_agent: String,
    /// Seed of its To tags and of the ring and hold draws.
    pub seed: u64,
    /// Calls in progress at most (ringing, answered, up, hanging up). Ended calls lingering
    /// to absorb retransmissions are not counted here, so a busy but honest caller is not
    /// refused for calls that are over: a call ended after its 2xx lingers as a tombstone
    /// (`max_lingering` bounds them), one ended otherwise whole (`max_bytes` bounds them).
    pub max_calls: usize,
    /// Tombstones of calls ended after a 2xx at most (~48 bytes each); beyond, the oldest is
    /// forgotten early (counted in `linger_cut`) and a late retransmission of its BYE gets 481.
    pub max_lingering: usize,
    /// Bytes held at most over all calls, lingering ones included (copied headers, dialogs,
    /// our BYEs, identifiers, per-call overhead).
    pub max_bytes: usize,
    /// An INVITE whose headers we would copy (Via, From, To, Call-ID, CSeq, Record-Route,
    /// Contact) exceed this is refused with 513: nobody's real INVITE needs 8 KiB of them.
    pub max_header_bytes: usize,
    /// `Retry-After` of the 503 sent when full.
    pub retry_after: Duration,
    /// Keep session duration and disconnect delay samples for [`Answerer::take_stats`]. Off
    /// for owners that never take them, so that they do not pile up.
    pub record_delays: bool,
    /// The audio stream of our answers: where a caller's media goes (`--media`: the worker's
    /// media socket; without it a port nobody listens on).
    #[serde(skip)]
    pub sdp_audio: SdpAudio,
}

impl Default for AnswererConfig {
    /// Sized for a standalone target (`imsload serve`): 20,000 calls in progress is 4,000
    /// calls/s of 5 s calls, and 64 MiB holds them at 1.5 KiB each; 2^20 tombstones (48 MiB)
    /// are 32 s of lingering at 32,768 calls/s.
    fn default() -> Self {
        AnswererConfig {
            transport: Transport::Udp,
            timers: Timers::default(),
            ring: Duration::ZERO,
            ring_dist: DurationDist::Fixed,
            hang_up_after: None,
            hang_up_dist: DurationDist::Fixed,
            user_agent: concat!("imsload/", env!("CARGO_PKG_VERSION")).into(),
            seed: 1,
            max_calls: 20_000,
            max_lingering: 1 << 20,
            max_bytes: 64 << 20,
            max_header_bytes: 8 << 10,
            retry_after: Duration::from_secs(5),
            record_delays: false,
            sdp_audio: SdpAudio::nominal(40002),
        }
    }
}

/// Event counts since the last [`Answerer::take_stats`] (since the start if never taken).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AnswererCounters {
    /// New INVITEs (not retransmissions), refused ones included.
    pub invites: u64,
    pub calls_answered: u64,
    pub byes_received: u64,
    pub cancels_received: u64,
    /// New INVITEs answered 503: `max_calls` or `max_bytes` reached. Never stored.
    pub calls_refused_overload: u64,
    /// New INVITEs answered 513: their headers exceed `max_header_bytes`. Never stored.
    pub calls_refused_too_large: u64,
    /// Retransmitted INVITEs, BYEs and BYE responses absorbed.
    pub duplicates: u64,
    /// INVITEs inside an answered call (hold, resume), answered 200.
    pub reinvites: u64,
    /// Our own retransmissions (2xx until ACK, our BYE).
    pub retransmits: u64,
    pub msgs_sent: u64,
    /// 2xx never ACKed within 64·T1 (the call is then ended with BYE).
    pub ack_timeouts: u64,
    pub byes_sent: u64,
    /// Our BYEs with no final response within 64·T1.
    pub bye_timeouts: u64,
    /// Responses with our branch that match no BYE of ours (any more).
    pub stray_responses: u64,
    /// Tombstones of ended calls forgotten before 64·T1 because `max_lingering` was reached.
    pub linger_cut: u64,
}

impl AnswererCounters {
    pub fn add(&mut self, o: &AnswererCounters) {
        macro_rules! add {
            ($($f:ident),*) => { $( self.$f += o.$f; )* };
        }
        add!(
            invites,
            calls_answered,
            byes_received,
            cancels_received,
            calls_refused_overload,
            calls_refused_too_large,
            duplicates,
            reinvites,
            retransmits,
            msgs_sent,
            ack_timeouts,
            byes_sent,
            bye_timeouts,
            stray_responses,
            linger_cut
        );
    }
}

/// What [`Answerer::take_stats`] hands out.
#[derive(Clone, Debug, Default)]
pub struct AnswererStats {
    pub counters: AnswererCounters,
    /// Final (and provisional) responses to our BYEs, by status code.
    pub bye_responses: BTreeMap<u16, u64>,
    /// Session duration (200 sent → our BYE sent), when `record_delays`.
    pub sdt: Vec<Duration>,
    /// Session disconnect delay (our BYE sent → its final response), when `record_delays`.
    pub sdd: Vec<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallState {
    Ringing,
    Answered,
    Confirmed,
    Terminating,
    Ended,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Answer(Key),
    Retransmit(Key),
    HangUp(Key),
    Linger(Key),
    Bye(Key),
    ReinviteOk(Key),
}

/// Our 2xx to a re-INVITE, sent again until its ACK. The UAS core retransmits a 2xx, not the
/// proxies between (RFC 3261 §13.3.1.4, §17.2.1): an offerer that heard 100 Trying from its
/// proxy never sends its re-INVITE again, so a 2xx lost beyond the proxy would otherwise leave
/// its transaction to time out. Boxed: most calls never have one.
#[derive(Clone)]
struct ReinviteOk {
    cseq: u32,
    peer: Peer,
    data: Vec<u8>,
    retransmit: ServerRetransmit,
}

/// Our BYE's client transaction (one per call at most: its branch is the call's key).
#[derive(Clone)]
struct ByeTxn {
    ct: ClientTransaction,
    request: Vec<u8>,
    armed: Option<Instant>,
}

/// The kept BYE goes back to the pool with the call.
impl Drop for Call {
    fn drop(&mut self) {
        if let Some(b) = self.bye.take() {
            transport::recycle(b.request);
        }
    }
}

#[derive(Clone)]
struct Call {
    /// Shared with `by_call_id`'s key: one copy per call.
    call_id: Arc<str>,
    state: CallState,
    /// The hop the INVITE came from, and our socket it reached.
    peer: Peer,
    /// The header block shared by 180/200/487 (Via…CSeq, Record-Route, To with our tag,
    /// Contact, Server), without status line and Content-Length. Empty once no response can be
    /// asked for again (ACK received).
    resp_headers: Vec<u8>,
    invite_branch: Box<str>,
    /// The last status sent (0: none): a retransmitted INVITE gets it again, rebuilt.
    last_code: u16,
    /// The SDP session id of our 2xx, and its answer to the INVITE's offer (`None`: it had
    /// none, and our 2xx offers).
    session: u64,
    answer: Option<Answer>,
    retransmit: Option<ServerRetransmit>,
    dialog: Option<Dialog>,
    answered_at: Option<Instant>,
    bye: Option<ByeTxn>,
    bye_sent: Option<Instant>,
    /// Over UDP, our 2xx to the latest re-INVITE until its ACK.
    reinvite_ok: Option<Box<ReinviteOk>>,
    /// What this call charges to `held_bytes`.
    bytes: usize,
}

/// What a call costs beyond its variable-length parts: the entry, its map slot, its timers.
const CALL_OVERHEAD: usize = std::mem::size_of::<Call>() + 64;

#[derive(Clone)]
pub struct Answerer {
    cfg: AnswererConfig,
    /// `host:port` of each of our sockets (Via of our BYE, our default Contact).
    via_hosts: Vec<String>,
    sdp_ip: String,
    ids: IdScheme,
    rng: SmallRng,
    calls: Slab<Call>,
    by_call_id: HashMap<Arc<str>, Key>,
    /// Calls ended after a 2xx, by Call-ID, until 64·T1 after their end.
    lingering: Lingering,
    held_bytes: usize,
    /// Calls not yet `Ended` (what `max_calls` bounds).
    in_progress: usize,
    /// BYE transactions present (for the owner's pending-transactions gauge).
    bye_txns: usize,
    session_seq: u64,
    timers: TimerWheel<Timer>,
    out: VecDeque<Transmit>,
    stats: AnswererStats,
}

impl Answerer {
    /// `locals` are our sockets' addresses (one at least; requests name theirs in
    /// [`Peer::sock`]); `id_run` makes our BYEs' branches unique to this answerer (they start
    /// with `z9hG4bKu`, which no [`IdScheme::new`] branch does).
    pub fn new(cfg: AnswererConfig, locals: &[SocketAddr], id_run: u32, now: Instant) -> Self {
        assert!(
            !locals.is_empty(),
            "an answerer needs one local socket at least"
        );
        Answerer {
            via_hosts: locals.iter().map(|l| l.to_string()).collect(),
            sdp_ip: locals[0].ip().to_string(),
            ids: IdScheme::tagged('u', id_run),
            rng: SmallRng::seed_from_u64(cfg.seed),
            calls: Slab::default(),
            by_call_id: HashMap::new(),
            lingering: Lingering::new(cfg.max_lingering),
            held_bytes: 0,
            in_progress: 0,
            bye_txns: 0,
            session_seq: 0,
            timers: TimerWheel::new(now),
            out: VecDeque::new(),
            stats: AnswererStats::default(),
            cfg,
        }
    }

    /// Socket `sock` has a new address (a UE's fresh ports, `--ipsec`): what it answers from now
    /// on names that one.
    pub fn set_local(&mut self, sock: u32, addr: SocketAddr) {
        if let Some(h) = self.via_hosts.get_mut(sock as usize) {
            *h = addr.to_string();
        }
    }

    pub fn config(&self) -> &AnswererConfig {
        &self.cfg
    }

    /// Calls held (those lingering whole included, tombstones not: see [`Answerer::lingering`]).
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Tombstones of calls ended after a 2xx, still absorbing retransmissions.
    pub fn lingering(&self) -> usize {
        self.lingering.len()
    }

    /// Calls not yet ended (what `max_calls` bounds).
    pub fn calls_in_progress(&self) -> usize {
        self.in_progress
    }

    /// The audio of our answers from now on (`--media`: the worker's media socket).
    pub fn set_sdp_audio(&mut self, audio: SdpAudio) {
        self.cfg.sdp_audio = audio;
    }

    /// Bytes held for those calls.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// BYE transactions of ours still present.
    pub fn pending_byes(&self) -> usize {
        self.bye_txns
    }

    /// Whether a call with this Call-ID is held.
    pub fn has_call(&self, call_id: &str) -> bool {
        self.by_call_id.contains_key(call_id)
    }

    /// Whether the call with this Call-ID is up: answered with 2xx (ACKed or not yet), not
    /// hanging up. Media flows exactly then (a UA may send as soon as it has sent its answer).
    pub fn is_up(&self, call_id: &str) -> bool {
        self.by_call_id
            .get(call_id)
            .and_then(|&k| self.calls.get(k))
            .is_some_and(|c| matches!(c.state, CallState::Answered | CallState::Confirmed))
    }

    /// The counts since the last call (or the start), and the delay samples.
    pub fn take_stats(&mut self) -> AnswererStats {
        std::mem::take(&mut self.stats)
    }

    /// The counts so far, without taking them.
    pub fn counters(&self) -> &AnswererCounters {
        &self.stats.counters
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        // Tombstones need no deadline of their own: forgetting them a little late costs bytes,
        // not behaviour, and a wake-up per ended call would cost more.
        self.lingering.expire(now);
        while let Some((at, t)) = self.timers.pop_due(now) {
            match t {
                Timer::Answer(k) => self.answer(now, k),
                Timer::Retransmit(k) => self.retransmit(now, k),
                Timer::HangUp(k) => {
                    if self.state(k) == Some(CallState::Confirmed) {
                        self.send_bye(now, k);
                    }
                }
                Timer::Linger(k) => {
                    if self.state(k) == Some(CallState::Ended) {
                        self.remove(k);
                    }
                }
                Timer::Bye(k) => self.bye_timer(now, at, k),
                Timer::ReinviteOk(k) => self.reinvite_ok_timer(now, k),
            }
        }
    }

    /// A request from `peer`. INVITE, ACK, BYE and CANCEL belong to calls (a request for a call
    /// we do not hold gets 481, an ACK is dropped); OPTIONS, MESSAGE, NOTIFY, INFO and UPDATE
    /// are answered 200 statelessly, anything else 501. `contact` is the Contact of the user
    /// called (for INVITE); `None` puts our own on the socket the INVITE reached.
    pub fn handle_request(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        peer: Peer,
        contact: Option<&str>,
    ) {
        let peer = Peer {
            addr: peer.addr,
            sock: peer.sock.min(self.via_hosts.len() as u32 - 1),
        };
        self.lingering.expire(now);
        match msg.method().unwrap_or("") {
            "INVITE" => self.on_invite(now, msg, peer, contact),
            "ACK" => self.on_ack(now, msg),
            "BYE" => self.on_bye(now, msg, peer),
            "CANCEL" => self.on_cancel(now, msg, peer),
            "OPTIONS" | "MESSAGE" | "NOTIFY" | "INFO" | "UPDATE" => {
                self.respond(msg, peer, 200, None, None)
            }
            _ => self.respond(msg, peer, 501, None, None),
        }
    }

    /// A response; `false` when its branch is not one of ours (nothing was done or counted).
    pub fn handle_response(&mut self, now: Instant, msg: &Message<'_>) -> bool {
        let branch = msg.top_via().and_then(|v| v.branch).unwrap_or("");
        let Some(k) = self.ids.parse_branch(branch) else {
            return false;
        };
        let Some(code) = msg.status() else {
            return false;
        };
        if msg.cseq().map(|c| c.1) != Some("BYE") {
            self.stats.counters.stray_responses += 1;
            return true;
        }
        let Some(b) = self.calls.get_mut(k).and_then(|c| c.bye.as_mut()) else {
            self.stats.counters.stray_responses += 1;
            return true;
        };
        if b.ct.on_response(now, code) == ResponseAction::Absorb {
            self.stats.counters.duplicates += 1;
            return true;
        }
        let mut freed = 0;
        if code >= 200 {
            // Completed, it only absorbs retransmitted finals (Timer K): the request is done.
            freed = std::mem::take(&mut b.request).len();
        }
        let terminated = b.ct.state == State::Terminated;
        if code > 100 {
            *self.stats.bye_responses.entry(code).or_default() += 1;
        }
        self.uncharge(k, freed);
        if terminated {
            self.drop_bye(k);
        } else {
            self.rearm_bye(k);
        }
        if code >= 200 {
            self.end(now, k);
        }
        true
    }

    // ---------------------------------------------------------------- requests

    fn on_invite(&mut self, now: Instant, msg: &Message<'_>, peer: Peer, contact: Option<&str>) {
        let call_id = msg.call_id();
        if self.lingering.contains(call_id) && !self.by_call_id.contains_key(call_id) {
            // A retransmission of an INVITE answered 2xx and ended since: nothing can be asked
            // for again (the 2xx was ACKed, or given up on).
            self.stats.counters.duplicates += 1;
            return;
        }
        if let Some(&k) = self.by_call_id.get(call_id) {
            if msg.to_tag().is_some() {
                return self.on_reinvite(now, k, msg, peer, contact);
            }
            // A retransmitted INVITE: repeat the last response, if one can still be asked for.
            self.stats.counters.duplicates += 1;
            if let Some(c) = self.calls.get(k) {
                let (code, peer) = (c.last_code, c.peer);
                if code != 0 && !c.resp_headers.is_empty() {
                    let data = self.response(k, code);
                    self.send(peer, data);
                }
            }
            return;
        }
        if msg.to_tag().is_some() {
            // A re-INVITE for a dialog we no longer know.
            return self.respond(msg, peer, 481, None, None);
        }
        self.stats.counters.invites += 1;
        // Cheap checks first: under a flood most INVITEs end here, before anything is copied.
        if self.in_progress >= self.cfg.max_calls {
            return self.refuse_overload(msg, peer);
        }
        if copied_header_bytes(msg) > self.cfg.max_header_bytes {
            self.stats.counters.calls_refused_too_large += 1;
            let tag = ids::token(&mut self.rng);
            return self.respond(msg, peer, 513, Some(&tag), None);
        }
        let tag = ids::token(&mut self.rng);
        let mut hdrs = Writer::response_to(msg, 180, "Ringing", Some(&tag));
        match contact {
            Some(c) => hdrs.header("Contact", c),
            None => hdrs.header("Contact", self.own_contact(peer)),
        }
        hdrs.header("Server", &self.cfg.user_agent);
        // Keep the header block without its status line; 180/200/487 reuse it.
        let full = hdrs.finish(None, b"");
        let start = full.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
        let end = full.len() - "Content-Length: 0\r\n\r\n".len();
        // An exact-size copy, not the pooled buffer cut down: what a call holds is what
        // `held_bytes` charges it, which bounds the memory a flood of INVITEs can pin.
        let resp_headers = full[start..end].to_vec();
        transport::recycle(full);
        let dialog = Dialog::from_uas_request(msg, &tag);
        let branch: Box<str> = msg.top_via().and_then(|v| v.branch).unwrap_or("").into();
        // Our 2xx answers the offer in it (RFC 3264 §6); no offer: the 2xx carries ours.
        let answer = Answer::to_offer(msg.body());
        let bytes = CALL_OVERHEAD
            + 2 * call_id.len()
            + branch.len()
            + resp_headers.len()
            + dialog_bytes(&dialog)
            + answer
                .as_ref()
                .map_or(0, |a| a.before.len() + a.after.len());
        if self.held_bytes + bytes > self.cfg.max_bytes {
            return self.refuse_overload(msg, peer);
        }
        self.held_bytes += bytes;
        self.in_progress += 1;
        let call_id: Arc<str> = call_id.into();
        let k = self.calls.insert(Call {
            call_id: call_id.clone(),
            state: CallState::Ringing,
            peer,
            resp_headers,
            invite_branch: branch,
            last_code: 0,
            session: 0,
            answer,
            retransmit: None,
            dialog: Some(dialog),
            answered_at: None,
            bye: None,
            bye_sent: None,
            reinvite_ok: None,
            bytes,
        });
        self.by_call_id.insert(call_id, k);
        self.send_response(k, 180);
        let ring = self.sample(self.cfg.ring, self.cfg.ring_dist);
        if ring.is_zero() {
            self.answer(now, k);
        } else {
            self.timers.insert(now + ring, Timer::Answer(k));
        }
    }

    /// Full: a stateless 503 that asks the caller to come back later. Stored nowhere, so a
    /// flood costs us one datagram out per datagram in and no memory.
    fn refuse_overload(&mut self, msg: &Message<'_>, peer: Peer) {
        self.stats.counters.calls_refused_overload += 1;
        let tag = ids::token(&mut self.rng);
        let secs = self.cfg.retry_after.as_secs().max(1).to_string();
        self.respond(msg, peer, 503, Some(&tag), Some(("Retry-After", &secs)));
    }

    /// Our Contact on the socket `peer` reached, for calls to no user of ours.
    fn own_contact(&self, peer: Peer) -> String {
        format!(
            "<sip:imsload@{};transport={}>",
            self.via_hosts[peer.sock as usize],
            self.cfg.transport.param()
        )
    }

    /// An INVITE inside a call we hold (hold, resume, a refresh): answered 200 with our SDP,
    /// its direction mirroring the offer's, once the call is up; 500 while it still rings
    /// (RFC 3261 §14.2); 481 once it is hanging up. Over UDP the 200 is kept and sent again
    /// (T1 doubling to T2) until its ACK, and a retransmitted re-INVITE gets the same bytes;
    /// no ACK in 64·T1 ends the call with BYE, as for the first INVITE's 2xx. The owner reads
    /// the offer for its media.
    fn on_reinvite(
        &mut self,
        now: Instant,
        k: Key,
        msg: &Message<'_>,
        peer: Peer,
        contact: Option<&str>,
    ) {
        let Some(c) = self.calls.get(k) else { return };
        if c.invite_branch.as_ref() == msg.top_via().and_then(|v| v.branch).unwrap_or("") {
            // The first INVITE again, with the To tag of a response it had.
            self.stats.counters.duplicates += 1;
            return;
        }
        let cseq = msg.cseq().map_or(0, |(n, _)| n);
        if let Some(p) = c.reinvite_ok.as_ref().filter(|p| p.cseq == cseq) {
            // The offerer's retransmission: our 200 again, as it was.
            self.stats.counters.duplicates += 1;
            let data = p.data.clone();
            return self.send(peer, data);
        }
        match c.state {
            CallState::Answered | CallState::Confirmed => {
                self.stats.counters.reinvites += 1;
                let contact = contact.map_or_else(|| self.own_contact(peer), str::to_string);
                let data = Writer::reinvite_ok(
                    msg,
                    &contact,
                    &self.cfg.user_agent,
                    &self.sdp_ip,
                    c.session,
                    &self.cfg.sdp_audio,
                );
                if !self.cfg.transport.reliable() {
                    let retransmit = ServerRetransmit::new(now, self.cfg.timers);
                    self.timers.insert(retransmit.next, Timer::ReinviteOk(k));
                    let kept = Box::new(ReinviteOk {
                        cseq,
                        peer,
                        data: data.clone(),
                        retransmit,
                    });
                    let (added, c) = (kept.data.len(), self.calls.get_mut(k).expect("held"));
                    // A newer re-INVITE replaces the one still unacknowledged.
                    let freed = c.reinvite_ok.replace(kept).map_or(0, |p| p.data.len());
                    c.bytes += added;
                    self.held_bytes += added;
                    self.uncharge(k, freed);
                }
                self.send(peer, data);
            }
            CallState::Ringing => {
                self.respond(msg, peer, 500, None, Some(("Retry-After", "1")));
            }
            CallState::Terminating | CallState::Ended => self.respond(msg, peer, 481, None, None),
        }
    }

    fn on_ack(&mut self, now: Instant, msg: &Message<'_>) {
        let Some(&k) = self.by_call_id.get(msg.call_id()) else {
            return;
        };
        let cseq = msg.cseq().map_or(0, |(n, _)| n);
        if let Some(c) = self.calls.get_mut(k) {
            if c.reinvite_ok.as_ref().is_some_and(|p| p.cseq == cseq) {
                let freed = c.reinvite_ok.take().map_or(0, |p| p.data.len());
                return self.uncharge(k, freed);
            }
        }
        if self.state(k) != Some(CallState::Answered) {
            // An ACK for a 487, or a retransmitted ACK: nothing to do.
            return;
        }
        let hang_up = self
            .cfg
            .hang_up_after
            .map(|h| self.sample(h, self.cfg.hang_up_dist));
        let c = self.calls.get_mut(k).expect("state checked");
        c.state = CallState::Confirmed;
        c.retransmit = None;
        // The 2xx was received: no response of this call can be asked for again.
        let mut freed = std::mem::take(&mut c.resp_headers).len();
        match hang_up {
            Some(h) => self.timers.insert(now + h, Timer::HangUp(k)),
            // The caller hangs up: we never send a request in this dialog.
            None => freed += c.dialog.take().as_ref().map_or(0, dialog_bytes),
        }
        self.uncharge(k, freed);
    }

    fn on_bye(&mut self, now: Instant, msg: &Message<'_>, peer: Peer) {
        let Some(state) = self
            .by_call_id
            .get(msg.call_id())
            .and_then(|k| self.state(*k))
        else {
            if self.lingering.contains(msg.call_id()) {
                self.stats.counters.duplicates += 1;
                return self.respond(msg, peer, 200, None, None);
            }
            return self.respond(msg, peer, 481, None, None);
        };
        if state == CallState::Ended {
            self.stats.counters.duplicates += 1;
            return self.respond(msg, peer, 200, None, None);
        }
        let k = self.by_call_id[msg.call_id()];
        self.stats.counters.byes_received += 1;
        self.respond(msg, peer, 200, None, None);
        self.end(now, k);
    }

    fn on_cancel(&mut self, now: Instant, msg: &Message<'_>, peer: Peer) {
        let branch = msg.top_via().and_then(|v| v.branch).unwrap_or("");
        let matched = self.by_call_id.get(msg.call_id()).and_then(|&k| {
            self.calls
                .get(k)
                .filter(|c| &*c.invite_branch == branch)
                .map(|c| (k, c.state))
        });
        match matched {
            Some((k, state)) => {
                self.stats.counters.cancels_received += 1;
                self.respond(msg, peer, 200, None, None);
                if state == CallState::Ringing {
                    self.send_response(k, 487);
                    self.end(now, k);
                }
            }
            None => self.respond(msg, peer, 481, None, None),
        }
    }

    // ---------------------------------------------------------------- call life

    fn answer(&mut self, now: Instant, k: Key) {
        if self.state(k) != Some(CallState::Ringing) {
            return;
        }
        self.session_seq += 1;
        self.calls.get_mut(k).expect("state checked").session = self.session_seq;
        self.send_response(k, 200);
        self.stats.counters.calls_answered += 1;
        let reliable = self.cfg.transport.reliable();
        let r = ServerRetransmit::new(now, self.cfg.timers);
        // Over UDP the 2xx is repeated until the ACK comes; over TCP only the give-up applies.
        let at = if reliable { r.give_up_at } else { r.next };
        let c = self.calls.get_mut(k).expect("state checked");
        c.state = CallState::Answered;
        c.answered_at = Some(now);
        c.retransmit = Some(r);
        self.timers.insert(at, Timer::Retransmit(k));
    }

    fn retransmit(&mut self, now: Instant, k: Key) {
        let reliable = self.cfg.transport.reliable();
        let Some(c) = self.calls.get_mut(k) else {
            return;
        };
        if c.state != CallState::Answered {
            return;
        }
        let Some(r) = c.retransmit.as_mut() else {
            return;
        };
        if now < r.next && !reliable {
            return;
        }
        if !reliable && r.fire(now) {
            let (next, peer) = (r.next, c.peer);
            self.stats.counters.retransmits += 1;
            let data = self.response(k, 200);
            self.send(peer, data);
            self.timers.insert(next, Timer::Retransmit(k));
        } else if now >= r.give_up_at {
            // No ACK in 64·T1: the dialog is dead (RFC 3261 §13.3.1.4), end it with BYE.
            self.stats.counters.ack_timeouts += 1;
            c.state = CallState::Confirmed;
            c.retransmit = None;
            self.send_bye(now, k);
        }
    }

    fn reinvite_ok_timer(&mut self, now: Instant, k: Key) {
        let Some(c) = self.calls.get_mut(k) else {
            return;
        };
        if !matches!(c.state, CallState::Answered | CallState::Confirmed) {
            // The call is hanging up or over: its BYE made the 2xx moot.
            let freed = c.reinvite_ok.take().map_or(0, |p| p.data.len());
            return self.uncharge(k, freed);
        }
        let Some(p) = c.reinvite_ok.as_mut() else {
            return;
        };
        if now < p.retransmit.next {
            // A timer of a re-INVITE replaced since.
            return;
        }
        if p.retransmit.fire(now) {
            let (next, peer, data) = (p.retransmit.next, p.peer, p.data.clone());
            self.stats.counters.retransmits += 1;
            self.send(peer, data);
            self.timers.insert(next, Timer::ReinviteOk(k));
        } else {
            // No ACK in 64·T1: end the session (RFC 3261 §13.3.1.4) with a BYE, where a
            // dialog was kept for one (an answerer that never hangs up keeps none, and the
            // caller's BYE ends the call).
            let freed = c.reinvite_ok.take().map_or(0, |p| p.data.len());
            self.stats.counters.ack_timeouts += 1;
            self.uncharge(k, freed);
            if self.state(k) == Some(CallState::Confirmed) {
                self.send_bye(now, k);
            }
        }
    }

    fn send_bye(&mut self, now: Instant, k: Key) {
        let branch = self.ids.branch(k);
        let transport = self.cfg.transport;
        let Some(c) = self.calls.get_mut(k) else {
            return;
        };
        let via = format!(
            "SIP/2.0/{} {};branch={branch};rport",
            transport.via(),
            self.via_hosts[c.peer.sock as usize],
        );
        let Some(d) = c.dialog.as_mut() else { return };
        let req = d.request("BYE", &via, None).finish(None, b"");
        c.state = CallState::Terminating;
        c.bye_sent = Some(now);
        if let Some(a) = c.answered_at {
            if self.cfg.record_delays {
                self.stats.sdt.push(now - a);
            }
        }
        let ct =
            ClientTransaction::new(Kind::NonInvite, now, transport.reliable(), self.cfg.timers);
        let peer = c.peer;
        let len = req.len();
        c.bytes += len;
        c.bye = Some(ByeTxn {
            ct,
            request: req.clone(),
            armed: None,
        });
        self.held_bytes += len;
        self.bye_txns += 1;
        self.stats.counters.byes_sent += 1;
        self.send(peer, req);
        self.rearm_bye(k);
    }

    fn rearm_bye(&mut self, k: Key) {
        let Some(b) = self.calls.get_mut(k).and_then(|c| c.bye.as_mut()) else {
            return;
        };
        let Some(d) = b.ct.deadline() else { return };
        if b.armed.is_none_or(|a| d < a) {
            b.armed = Some(d);
            self.timers.insert(d, Timer::Bye(k));
        }
    }

    fn bye_timer(&mut self, now: Instant, at: Instant, k: Key) {
        let Some(c) = self.calls.get_mut(k) else {
            return;
        };
        let peer = c.peer;
        let Some(b) = c.bye.as_mut() else { return };
        if b.armed == Some(at) {
            b.armed = None;
        }
        match b.ct.on_timer(now) {
            TimerAction::Retransmit => {
                let data = transport::copy(&b.request);
                self.stats.counters.retransmits += 1;
                self.send(peer, data);
                self.rearm_bye(k);
            }
            TimerAction::Timeout => {
                self.stats.counters.bye_timeouts += 1;
                self.drop_bye(k);
                self.end(now, k);
            }
            TimerAction::Terminated => self.drop_bye(k),
            TimerAction::None => self.rearm_bye(k),
        }
    }

    fn drop_bye(&mut self, k: Key) {
        let Some(b) = self.calls.get_mut(k).and_then(|c| c.bye.take()) else {
            return;
        };
        self.bye_txns -= 1;
        self.uncharge(k, b.request.len());
    }

    /// The call is over; it lingers to absorb retransmissions (UDP only).
    fn end(&mut self, now: Instant, k: Key) {
        let reliable = self.cfg.transport.reliable();
        let record = self.cfg.record_delays;
        let Some(c) = self.calls.get_mut(k) else {
            return;
        };
        if c.state == CallState::Ended {
            return;
        }
        if let Some(s) = c.bye_sent {
            if record {
                self.stats.sdd.push(now - s);
            }
        }
        self.in_progress -= 1;
        c.state = CallState::Ended;
        c.retransmit = None;
        let freed = c.dialog.take().as_ref().map_or(0, dialog_bytes);
        // Answered 2xx and hung up by the caller: nothing of the call can be asked for again.
        // Our own BYE's transaction must outlive its final response (Timer K absorbs
        // retransmitted 200s), so that call lingers whole, as does one ended by a non-2xx.
        let answered = (200..300).contains(&c.last_code) && c.bye.is_none();
        let call_id = c.call_id.clone();
        self.uncharge(k, freed);
        if reliable {
            self.remove(k);
        } else if answered {
            self.remove(k);
            let cut = self.lingering.cut();
            let until = now + self.cfg.timers.timeout();
            self.lingering.insert(now, until, &call_id);
            self.stats.counters.linger_cut += self.lingering.cut() - cut;
        } else {
            self.timers
                .insert(now + self.cfg.timers.timeout(), Timer::Linger(k));
        }
    }

    fn remove(&mut self, k: Key) {
        let Some(c) = self.calls.remove(k) else {
            return;
        };
        if c.bye.is_some() {
            self.bye_txns -= 1;
        }
        if c.state != CallState::Ended {
            self.in_progress -= 1;
        }
        self.held_bytes -= c.bytes;
        if self.by_call_id.get(&*c.call_id) == Some(&k) {
            self.by_call_id.remove(&*c.call_id);
        }
    }

    // ---------------------------------------------------------------- helpers

    fn state(&self, k: Key) -> Option<CallState> {
        self.calls.get(k).map(|c| c.state)
    }

    fn uncharge(&mut self, k: Key, n: usize) {
        if let Some(c) = self.calls.get_mut(k) {
            c.bytes -= n;
            self.held_bytes -= n;
        }
    }

    fn sample(&mut self, mean: Duration, dist: DurationDist) -> Duration {
        match dist {
            DurationDist::Fixed => mean,
            DurationDist::Exp => dist.sample(mean, self.rng.random::<f64>()),
        }
    }

    /// Response `code` of call `k`, rebuilt from its header block (the 2xx with our SDP).
    fn response(&self, k: Key, code: u16) -> Vec<u8> {
        use std::io::Write as _;
        let c = self.calls.get(k).expect("caller checked");
        let mut data = transport::buffer(c.resp_headers.len() + 400);
        let _ = write!(data, "SIP/2.0 {code} {}\r\n", reason(code));
        data.extend_from_slice(&c.resp_headers);
        if (200..300).contains(&code) {
            // The body's length is counted before it is written: no buffer for it.
            let answer = c.answer.as_ref();
            let len = sdp_len(&self.sdp_ip, c.session, &self.cfg.sdp_audio, answer);
            let _ = write!(
                data,
                "Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n"
            );
            write_sdp(
                &mut data,
                &self.sdp_ip,
                c.session,
                &self.cfg.sdp_audio,
                answer,
            );
        } else {
            data.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        }
        data
    }

    fn send_response(&mut self, k: Key, code: u16) {
        let Some(c) = self.calls.get_mut(k) else {
            return;
        };
        c.last_code = code;
        let peer = c.peer;
        let data = self.response(k, code);
        self.send(peer, data);
    }

    fn respond(
        &mut self,
        req: &Message<'_>,
        to: Peer,
        code: u16,
        tag: Option<&str>,
        extra: Option<(&str, &str)>,
    ) {
        let data = Writer::stateless_response(req, code, tag, extra, &self.cfg.user_agent);
        self.send(to, data);
    }

    fn send(&mut self, to: Peer, data: Vec<u8>) {
        self.stats.counters.msgs_sent += 1;
        self.out.push_back(Transmit {
            src: to.sock,
            dest: to.addr,
            data,
        });
    }
}

/// Bytes of the headers a call would copy from its INVITE (into its responses and its dialog),
/// counted before copying anything.
fn copied_header_bytes(msg: &Message<'_>) -> usize {
    msg.raw_headers()
        .filter(|(name, _)| {
            matches!(
                HeaderName::classify(name.as_bytes()),
                HeaderName::Via
                    | HeaderName::From
                    | HeaderName::To
                    | HeaderName::CallId
                    | HeaderName::CSeq
                    | HeaderName::RecordRoute
                    | HeaderName::Contact
            )
        })
        .map(|(name, value)| name.len() + value.len() + 4)
        .sum()
}

fn dialog_bytes(d: &Dialog) -> usize {
    std::mem::size_of::<Dialog>() + d.heap_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: ([u8; 4], u16) = ([127, 0, 0, 1], 5060);
    const CALLER: ([u8; 4], u16) = ([127, 0, 0, 9], 5070);

    fn peer() -> Peer {
        Peer {
            addr: SocketAddr::from(CALLER),
            sock: 0,
        }
    }

    fn invite(n: u32, extra: &str) -> String {
        format!(
            "INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5070;branch=z9hG4bKi{n}\r\n\
             Record-Route: <sip:p1.example;lr>\r\n{extra}Max-Forwards: 70\r\n\
             From: <sip:alice@x>;tag=a{n}\r\nTo: <sip:bob@x>\r\nCall-ID: call-{n}@x\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.9:5070>\r\nContent-Length: 0\r\n\r\n"
        )
    }

    /// An in-call request of the caller's: ACK, BYE, or CANCEL (on the INVITE's branch).
    fn request(method: &str, n: u32, to_tag: Option<&str>) -> String {
        let (branch, cseq) = match method {
            "CANCEL" | "ACK" if to_tag.is_none() => (format!("z9hG4bKi{n}"), 1),
            "ACK" => (format!("z9hG4bKa{n}"), 1),
            _ => (format!("z9hG4bKb{n}"), 2),
        };
        let to = match to_tag {
            Some(t) => format!("<sip:bob@x>;tag={t}"),
            None => "<sip:bob@x>".into(),
        };
        format!(
            "{method} sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5070;branch={branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@x>;tag=a{n}\r\nTo: {to}\r\nCall-ID: call-{n}@x\r\n\
             CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    }

    /// The answerer and its virtual clock: time moves only by `advance`, to each deadline in
    /// turn, and every datagram sent is kept with the instant it was sent.
    struct Bench {
        a: Answerer,
        t0: Instant,
        now: Instant,
        sent: Vec<(Duration, String)>,
    }

    impl Bench {
        fn new(cfg: AnswererConfig) -> Bench {
            let t0 = Instant::now();
            Bench {
                a: Answerer::new(cfg, &[SocketAddr::from(ME)], 7, t0),
                t0,
                now: t0,
                sent: Vec::new(),
            }
        }

        fn drain(&mut self) {
            while let Some(x) = self.a.poll_transmit() {
                assert_eq!(x.dest, SocketAddr::from(CALLER));
                let text = String::from_utf8(x.data).unwrap();
                self.sent.push((self.now - self.t0, text));
            }
        }

        fn req(&mut self, text: &str) {
            let m = Message::parse(text.as_bytes()).unwrap();
            self.a.handle_request(self.now, &m, peer(), None);
            self.drain();
        }

        fn resp(&mut self, text: &str) -> bool {
            let m = Message::parse(text.as_bytes()).unwrap();
            let mine = self.a.handle_response(self.now, &m);
            self.drain();
            mine
        }

        /// Runs every timer due up to `now + d`, then sets the clock there.
        fn advance(&mut self, d: Duration) {
            let end = self.now + d;
            while let Some(t) = self.a.poll_timeout().filter(|t| *t <= end) {
                self.now = t.max(self.now);
                self.a.handle_timeout(self.now);
                self.drain();
            }
            self.now = end;
        }

        /// Sent since index `from`: (seconds since t0, first line).
        fn lines(&self, from: usize) -> Vec<(f64, String)> {
            self.sent[from..]
                .iter()
                .map(|(t, s)| (t.as_secs_f64(), s.lines().next().unwrap().to_string()))
                .collect()
        }

        fn to_tag(&self) -> String {
            let ok = &self
                .sent
                .iter()
                .find(|(_, s)| s.starts_with("SIP/2.0 200"))
                .unwrap()
                .1;
            Message::parse(ok.as_bytes())
                .unwrap()
                .to_tag()
                .unwrap()
                .to_string()
        }
    }

    fn secs(v: &[(f64, String)]) -> Vec<f64> {
        v.iter()
            .map(|(t, _)| (t * 1000.0).round() / 1000.0)
            .collect()
    }

    #[test]
    fn ok_is_retransmitted_at_t1_doubling_until_the_ack_then_never() {
        let mut b = Bench::new(AnswererConfig::default());
        b.req(&invite(1, ""));
        let first = b.lines(0);
        assert_eq!(first[0], (0.0, "SIP/2.0 180 Ringing".into()));
        assert_eq!(first[1], (0.0, "SIP/2.0 200 OK".into()));
        // The 200 carries the INVITE's Record-Route, our tag, our Contact and an SDP answer.
        let ok = Message::parse(b.sent[1].1.as_bytes()).unwrap();
        assert_eq!(
            ok.header(HeaderName::RecordRoute),
            Some("<sip:p1.example;lr>")
        );
        assert_eq!(
            ok.contact_uri(),
            Some("sip:imsload@127.0.0.1:5060;transport=udp")
        );
        assert!(ok.body().starts_with(b"v=0"));
        b.advance(Duration::from_secs(5));
        let re = b.lines(2);
        assert!(re.iter().all(|(_, l)| l == "SIP/2.0 200 OK"), "{re:?}");
        // T1, then doubling: 0.5, 1.5, 3.5 s.
        assert_eq!(secs(&re), [0.5, 1.5, 3.5]);
        assert_eq!(b.a.counters().retransmits, 3);
        let tag = b.to_tag();
        b.req(&request("ACK", 1, Some(&tag)));
        let n = b.sent.len();
        b.advance(Duration::from_secs(60));
        assert_eq!(b.sent.len(), n, "nothing after the ACK: {:?}", b.lines(n));
        let c = b.a.counters();
        assert_eq!((c.invites, c.calls_answered, c.ack_timeouts), (1, 1, 0));
        // The caller hangs up; the call is released at once and lingers 64·T1 as a tombstone
        // of its Call-ID: nothing of its state is needed to answer a retransmitted BYE.
        b.req(&request("BYE", 1, Some(&tag)));
        assert_eq!(b.lines(n), [(65.0, "SIP/2.0 200 OK".to_string())]);
        assert_eq!(b.a.counters().byes_received, 1);
        assert!(!b.a.has_call("call-1@x"));
        assert_eq!(
            (b.a.calls(), b.a.held_bytes(), b.a.calls_in_progress()),
            (0, 0, 0)
        );
        assert_eq!(b.a.lingering(), 1);
        assert_eq!(b.a.poll_timeout(), None, "no timer left behind");
        // A retransmitted BYE while it lingers is a duplicate, still answered 200; so is a
        // retransmitted INVITE, which gets nothing (its 2xx was ACKed).
        b.advance(Duration::from_secs(31));
        b.req(&request("BYE", 1, Some(&tag)));
        assert_eq!(b.lines(n + 1), [(96.0, "SIP/2.0 200 OK".to_string())]);
        b.req(&invite(1, ""));
        assert_eq!(b.sent.len(), n + 2, "nothing sent for the INVITE");
        assert_eq!(b.a.counters().duplicates, 2);
        assert_eq!(b.a.counters().invites, 1, "not a new call");
        // Past 64·T1 it is forgotten: a BYE for it is unknown.
        b.advance(Duration::from_secs(2));
        b.req(&request("BYE", 1, Some(&tag)));
        assert!(b.sent.last().unwrap().1.starts_with("SIP/2.0 481"));
        assert_eq!(b.a.lingering(), 0);
    }

    /// A re-INVITE of the caller's in call `n` (CSeq `cseq`) offering `dir`.
    fn reinvite(n: u32, tag: &str, cseq: u32, dir: &str) -> String {
        let sdp = format!(
            "v=0\r\no=a 1 {cseq} IN IP4 127.0.0.9\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na={dir}\r\n"
        );
        format!(
            "INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5070;branch=z9hG4bKr{n}x{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@x>;tag=a{n}\r\nTo: <sip:bob@x>;tag={tag}\r\nCall-ID: call-{n}@x\r\n\
             CSeq: {cseq} INVITE\r\nContact: <sip:alice@127.0.0.9:5070>\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
    }

    #[test]
    fn a_reinvite_is_answered_in_kind_once_the_call_is_up_and_refused_before() {
        let mut b = Bench::new(AnswererConfig {
            ring: Duration::from_secs(1),
            ..AnswererConfig::default()
        });
        b.req(&invite(1, ""));
        let tag = Message::parse(b.sent[0].1.as_bytes())
            .unwrap()
            .to_tag()
            .unwrap()
            .to_string();
        // Still ringing: 500 with Retry-After (RFC 3261 §14.2), and nothing else changes.
        b.req(&reinvite(1, &tag, 2, "sendonly"));
        let r = Message::parse(b.sent.last().unwrap().1.as_bytes()).unwrap();
        assert_eq!(r.status(), Some(500));
        assert_eq!(r.header_named("Retry-After"), Some("1"));
        b.advance(Duration::from_secs(1));
        b.req(&request("ACK", 1, Some(&tag)));
        // Up: a hold (sendonly) is answered recvonly, a resume sendrecv, inactive in kind;
        // each answer's o= version above the last, its Contact ours.
        for (cseq, offer, answer) in [
            (3, "sendonly", "recvonly"),
            (4, "inactive", "inactive"),
            (5, "sendrecv", "sendrecv"),
        ] {
            b.req(&reinvite(1, &tag, cseq, offer));
            let text = &b.sent.last().unwrap().1;
            let ok = Message::parse(text.as_bytes()).unwrap();
            assert_eq!(ok.status(), Some(200), "{text}");
            assert_eq!(ok.cseq(), Some((cseq, "INVITE")));
            assert_eq!(ok.to_tag(), Some(tag.as_str()));
            assert!(ok.contact_uri().is_some());
            let body = std::str::from_utf8(ok.body()).unwrap();
            assert!(body.contains(&format!("a={answer}\r\n")), "{body}");
            assert!(body.contains(&format!(" {} IN IP4", cseq + 1)), "{body}");
        }
        assert_eq!(b.a.counters().reinvites, 3);
        assert!(b.a.is_up("call-1@x"), "a hold does not end the call");
        // Its ACK changes nothing; the caller's BYE still ends the call.
        b.req(&request("ACK", 1, Some(&tag)));
        b.req(&request("BYE", 1, Some(&tag)));
        assert!(b.sent.last().unwrap().1.starts_with("SIP/2.0 200"));
        assert!(!b.a.has_call("call-1@x"));
    }

    /// The ACK of call `n`'s request numbered `cseq` (a re-INVITE's).
    fn ack(n: u32, tag: &str, cseq: u32) -> String {
        request("ACK", n, Some(tag)).replace("CSeq: 1 ACK", &format!("CSeq: {cseq} ACK"))
    }

    #[test]
    fn a_reinvite_2xx_is_sent_again_until_its_ack_and_given_up_with_a_bye() {
        let mut b = Bench::new(AnswererConfig::default());
        b.req(&invite(1, ""));
        b.advance(Duration::from_secs(1));
        let tag = Message::parse(b.sent.last().unwrap().1.as_bytes())
            .unwrap()
            .to_tag()
            .unwrap()
            .to_string();
        b.req(&request("ACK", 1, Some(&tag)));
        let (held, retransmits) = (b.a.held_bytes(), b.a.counters().retransmits);
        // A hold: the 200 goes out at once, then again at T1, 2·T1, 4·T1 (0.5, 1.5, 3.5 s)
        // while no ACK comes, the same bytes each time.
        let from = b.sent.len();
        b.req(&reinvite(1, &tag, 2, "sendonly"));
        let ok = b.sent.last().unwrap().1.clone();
        assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
        assert!(
            b.a.held_bytes() > held,
            "the kept 200 is charged to the call"
        );
        b.advance(Duration::from_millis(3600));
        let times: Vec<f64> = b.lines(from).iter().map(|(t, _)| *t).collect();
        assert_eq!(times.len(), 4, "{:?}", b.lines(from));
        for (t, want) in times.iter().zip([1.0, 1.5, 2.5, 4.5]) {
            assert!((t - want).abs() < 1e-6, "{times:?}");
        }
        assert!(b.sent[from..].iter().all(|(_, m)| *m == ok));
        assert_eq!(b.a.counters().retransmits - retransmits, 3);
        // The offerer's own retransmission of the re-INVITE gets the same 200, not a new answer.
        b.req(&reinvite(1, &tag, 2, "sendonly"));
        assert_eq!(b.sent.last().unwrap().1, ok);
        assert_eq!(b.a.counters().reinvites, 1);
        // An ACK of another CSeq does not stop it; the re-INVITE's own does, for good.
        b.req(&ack(1, &tag, 1));
        let n = b.sent.len();
        b.advance(Duration::from_secs(5));
        assert_eq!(b.sent.len(), n + 1, "still sent again before its ACK");
        b.req(&ack(1, &tag, 2));
        assert_eq!(
            b.a.held_bytes(),
            held,
            "the kept 200 is released with its ACK"
        );
        let n = b.sent.len();
        b.advance(Duration::from_secs(40));
        assert_eq!(b.sent.len(), n, "{:?}", b.lines(n));
        assert!(b.a.is_up("call-1@x"));
        // A resume never ACKed: given up at the first retransmission due past 64·T1 (35.5 s:
        // T2 steps from 3.5 s), counted as an ACK timeout. This answerer never hangs up, so it
        // kept no dialog to send a BYE in: the call stays until the caller's BYE.
        b.req(&reinvite(1, &tag, 3, "sendrecv"));
        b.advance(Duration::from_secs(31));
        assert_eq!(b.a.counters().ack_timeouts, 0);
        b.advance(Duration::from_secs(5));
        assert_eq!(b.a.counters().ack_timeouts, 1);
        assert_eq!(b.a.held_bytes(), held);
        let n = b.sent.len();
        b.advance(Duration::from_secs(40));
        assert_eq!(b.sent.len(), n, "{:?}", b.lines(n));
        b.req(&request("BYE", 1, Some(&tag)));
        assert!(b.sent.last().unwrap().1.starts_with("SIP/2.0 200"));
        // One that hangs up (so keeps the dialog) ends the session with its BYE
        // (RFC 3261 §13.3.1.4).
        let mut b = Bench::new(AnswererConfig {
            hang_up_after: Some(Duration::from_secs(1000)),
            ..AnswererConfig::default()
        });
        b.req(&invite(1, ""));
        let tag = tag_of(&b.sent.last().unwrap().1);
        b.req(&request("ACK", 1, Some(&tag)));
        b.req(&reinvite(1, &tag, 2, "sendonly"));
        b.advance(Duration::from_secs(36));
        assert_eq!(b.a.counters().ack_timeouts, 1);
        assert!(
            b.sent.last().unwrap().1.starts_with("BYE "),
            "{:?}",
            b.lines(0)
        );
        // Over a reliable transport nothing is kept or sent again.
        let mut b = Bench::new(AnswererConfig {
            transport: Transport::Tcp,
            ..AnswererConfig::default()
        });
        b.req(&invite(1, ""));
        b.advance(Duration::from_secs(1));
        b.req(&request("ACK", 1, Some(&tag_of(&b.sent.last().unwrap().1))));
        let held = b.a.held_bytes();
        let n = b.sent.len();
        b.req(&reinvite(1, &tag_of(&b.sent[n - 1].1), 2, "sendonly"));
        assert_eq!(b.a.held_bytes(), held);
        b.advance(Duration::from_secs(40));
        assert_eq!(b.sent.len(), n + 1, "{:?}", b.lines(n));
    }

    fn tag_of(response: &str) -> String {
        Message::parse(response.as_bytes())
            .unwrap()
            .to_tag()
            .unwrap()
            .to_string()
    }

    #[test]
    fn calls_that_are_over_do_not_fill_the_byte_budget_at_30k_calls_per_second() {
        // 150,000 calls at 30,000/s: INVITE, ACK, BYE each, all answered at once. Calls that
        // lingered whole (~600 bytes each) filled the default 64 MiB budget after 107,000 and
        // every later INVITE got 503 (`imsload serve` sustained ~3,300 calls/s).
        let t0 = Instant::now();
        let mut a = Answerer::new(AnswererConfig::default(), &[SocketAddr::from(ME)], 7, t0);
        let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
        let mut to_tag = String::new();
        for n in 0..150_000u32 {
            let now = t0 + Duration::from_micros(n as u64 * 1_000_000 / 30_000);
            a.handle_timeout(now);
            let inv = invite(n, "");
            a.handle_request(now, &Message::parse(inv.as_bytes()).unwrap(), peer(), None);
            while let Some(x) = a.poll_transmit() {
                let m = Message::parse(&x.data).unwrap();
                *codes.entry(m.status().unwrap()).or_default() += 1;
                if let Some(t) = m.to_tag() {
                    to_tag.clear();
                    to_tag.push_str(t);
                }
            }
            for method in ["ACK", "BYE"] {
                let r = request(method, n, Some(&to_tag));
                a.handle_request(now, &Message::parse(r.as_bytes()).unwrap(), peer(), None);
            }
            while a.poll_transmit().is_some() {}
        }
        assert_eq!(a.counters().calls_refused_overload, 0, "{codes:?}");
        assert_eq!(codes.get(&200), Some(&150_000), "{codes:?}");
        assert_eq!((a.calls(), a.held_bytes()), (0, 0));
        // Ended within the last 64·T1 (every one: the run lasts 5 s), none forgotten early.
        assert_eq!((a.lingering(), a.counters().linger_cut), (150_000, 0));
        a.handle_timeout(t0 + Duration::from_secs(40));
        assert_eq!(a.lingering(), 0);
    }

    #[test]
    fn tombstones_beyond_max_lingering_are_forgotten_early_and_counted() {
        let mut b = Bench::new(AnswererConfig {
            max_lingering: 3,
            ..AnswererConfig::default()
        });
        for n in 0..5 {
            b.req(&invite(n, ""));
            let tag = b.to_tag();
            b.req(&request("ACK", n, Some(&tag)));
            b.req(&request("BYE", n, Some(&tag)));
        }
        assert_eq!((b.a.calls(), b.a.held_bytes()), (0, 0));
        assert_eq!(b.a.lingering(), 3);
        assert_eq!(b.a.counters().linger_cut, 2);
        // The oldest went: its retransmitted BYE is unknown; a newer one's is a duplicate.
        b.req(&request("BYE", 0, Some("t")));
        assert!(b.sent.last().unwrap().1.starts_with("SIP/2.0 481"));
        b.req(&request("BYE", 4, Some("t")));
        assert!(b.sent.last().unwrap().1.starts_with("SIP/2.0 200"));
    }

    #[test]
    fn no_ack_in_64_t1_ends_the_call_with_our_bye_and_its_response() {
        let mut b = Bench::new(AnswererConfig {
            record_delays: true,
            ..AnswererConfig::default()
        });
        b.req(&invite(2, ""));
        b.advance(Duration::from_secs(40));
        let out = b.lines(2);
        let oks: Vec<_> = out
            .iter()
            .filter(|(_, l)| l == "SIP/2.0 200 OK")
            .cloned()
            .collect();
        // 0.5, 1.5, 3.5, 7.5, then every T2 up to 31.5 s; at 35.5 s it gives up.
        assert_eq!(
            secs(&oks),
            [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        );
        let byes: Vec<_> = b
            .sent
            .iter()
            .filter(|(_, s)| s.starts_with("BYE "))
            .collect();
        // At 35.5 s, then Timer E: 36, 37, 39 s.
        assert_eq!(byes.len(), 4, "{out:?}");
        assert_eq!(byes[0].0, Duration::from_millis(35_500));
        assert_eq!(b.a.counters().ack_timeouts, 1);
        // In the dialog: to the caller's Contact, through its Record-Route, our tag in From.
        let bye = Message::parse(byes[0].1.as_bytes()).unwrap();
        assert_eq!(bye.request_uri(), Some("sip:alice@127.0.0.9:5070"));
        assert_eq!(bye.header(HeaderName::Route), Some("<sip:p1.example;lr>"));
        assert_eq!(bye.from_tag().map(str::to_string), Some(b.to_tag()));
        assert_eq!(bye.to_tag(), Some("a2"));
        let branch = bye.top_via().unwrap().branch.unwrap().to_string();
        assert!(branch.starts_with("z9hG4bKu"), "{branch}");
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport\r\n\
             From: <sip:bob@x>;tag=t\r\nTo: <sip:alice@x>;tag=a2\r\nCall-ID: call-2@x\r\n\
             CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        assert!(b.resp(&ok));
        assert!(b.resp(&ok), "a retransmitted 200 is absorbed");
        let st = b.a.take_stats();
        assert_eq!(st.bye_responses.get(&200), Some(&1));
        assert_eq!(st.counters.duplicates, 1);
        assert_eq!(st.counters.byes_sent, 1);
        assert_eq!(st.sdt.len(), 1);
        assert_eq!(st.sdd.len(), 1);
        // Not ours: another branch.
        assert!(!b.resp(&ok.replace(&branch, "z9hG4bKother")));
        let n = b.sent.len();
        b.advance(Duration::from_secs(40));
        assert_eq!(b.sent.len(), n, "the BYE is not repeated after its 200");
        assert_eq!(
            (b.a.calls(), b.a.held_bytes(), b.a.pending_byes()),
            (0, 0, 0)
        );
    }

    #[test]
    fn our_bye_unanswered_times_out_and_the_call_is_released() {
        let mut b = Bench::new(AnswererConfig {
            hang_up_after: Some(Duration::from_secs(2)),
            ..AnswererConfig::default()
        });
        b.req(&invite(3, ""));
        let tag = b.to_tag();
        b.req(&request("ACK", 3, Some(&tag)));
        b.advance(Duration::from_secs(2));
        assert!(b.sent.last().unwrap().1.starts_with("BYE "));
        assert_eq!(b.sent.last().unwrap().0, Duration::from_secs(2));
        b.advance(Duration::from_secs(33));
        assert_eq!(b.a.counters().bye_timeouts, 1);
        assert_eq!(b.a.calls_in_progress(), 0);
        b.advance(Duration::from_secs(33));
        assert_eq!(
            (b.a.calls(), b.a.held_bytes(), b.a.pending_byes()),
            (0, 0, 0)
        );
    }

    #[test]
    fn cancel_while_ringing_is_answered_200_and_487_and_never_200_later() {
        let mut b = Bench::new(AnswererConfig {
            ring: Duration::from_secs(2),
            ..AnswererConfig::default()
        });
        b.req(&invite(4, ""));
        assert_eq!(b.lines(0), [(0.0, "SIP/2.0 180 Ringing".to_string())]);
        // A CANCEL on another branch is not for this INVITE.
        b.req(&request("CANCEL", 4, None).replace("z9hG4bKi4", "z9hG4bKzz"));
        assert!(b.sent[1].1.starts_with("SIP/2.0 481"));
        b.advance(Duration::from_secs(1));
        b.req(&request("CANCEL", 4, None));
        let out = b.lines(2);
        assert_eq!(out[0].1, "SIP/2.0 200 OK");
        assert!(b.sent[2].1.contains("CSeq: 1 CANCEL"));
        assert_eq!(out[1].1, "SIP/2.0 487 Request Terminated");
        assert!(b.sent[3].1.contains("CSeq: 1 INVITE"));
        // The INVITE retransmitted is answered 487 again; the ring timer does nothing.
        b.req(&invite(4, ""));
        assert_eq!(b.lines(4)[0].1, "SIP/2.0 487 Request Terminated");
        b.req(&request("ACK", 4, None));
        b.advance(Duration::from_secs(10));
        assert_eq!(b.sent.len(), 5);
        let c = b.a.counters();
        assert_eq!(
            (c.cancels_received, c.calls_answered, c.duplicates),
            (1, 0, 1)
        );
        b.advance(Duration::from_secs(30));
        assert_eq!((b.a.calls(), b.a.held_bytes()), (0, 0));
    }

    #[test]
    fn beyond_the_cap_new_invites_get_503_and_nothing_is_stored() {
        let mut b = Bench::new(AnswererConfig {
            max_calls: 10,
            ..AnswererConfig::default()
        });
        for n in 0..10 {
            b.req(&invite(n, ""));
        }
        let (held, bytes) = (b.a.calls(), b.a.held_bytes());
        assert_eq!(held, 10);
        let n0 = b.sent.len();
        for n in 10..1010 {
            b.req(&invite(n, ""));
        }
        assert_eq!(
            (b.a.calls(), b.a.held_bytes()),
            (held, bytes),
            "memory did not grow"
        );
        let refused = &b.sent[n0..];
        assert_eq!(refused.len(), 1000, "one datagram out per INVITE in");
        for (_, r) in refused {
            let m = Message::parse(r.as_bytes()).unwrap();
            assert_eq!(m.status(), Some(503));
            assert_eq!(m.header_named("Retry-After"), Some("5"));
            assert!(m.to_tag().is_some());
        }
        let c = b.a.counters();
        assert_eq!((c.invites, c.calls_refused_overload), (1010, 1000));
        // A refused INVITE retransmitted is refused again, not mistaken for a call; its ACK
        // finds nothing.
        b.req(&invite(500, ""));
        assert!(b.sent.last().unwrap().1.starts_with("SIP/2.0 503"));
        b.req(&request("ACK", 500, Some("x")));
        assert_eq!(b.a.counters().calls_refused_overload, 1001);
        // The calls held end (BYE from each caller) and linger: room again for new calls,
        // as lingering calls are not in progress.
        for n in 0..10 {
            let tag = Message::parse(b.sent[2 * n as usize + 1].1.as_bytes())
                .unwrap()
                .to_tag()
                .unwrap()
                .to_string();
            b.req(&request("ACK", n, Some(&tag)));
            b.req(&request("BYE", n, Some(&tag)));
        }
        assert_eq!(b.a.calls_in_progress(), 0);
        b.req(&invite(2000, ""));
        assert!(b.sent[b.sent.len() - 2].1.starts_with("SIP/2.0 180"));
    }

    #[test]
    fn the_byte_budget_refuses_too_and_counts_lingering_calls() {
        let mut b = Bench::new(AnswererConfig {
            max_bytes: 10_000,
            ring: Duration::from_secs(10),
            ..AnswererConfig::default()
        });
        let mut n = 0;
        while b.a.counters().calls_refused_overload == 0 {
            b.req(&invite(n, ""));
            n += 1;
            assert!(n < 100);
        }
        assert!(b.a.held_bytes() <= 10_000);
        let held = b.a.calls();
        assert!((3..20).contains(&held), "{held} calls in 10,000 bytes");
        // Calls that ended (CANCELled while ringing) linger with their 487 ready: no longer in
        // progress, still charged until they are released.
        for k in 0..n - 1 {
            b.req(&request("CANCEL", k, None));
        }
        assert_eq!(b.a.calls_in_progress(), 0);
        assert_eq!(b.a.calls(), held);
        assert!(b.a.held_bytes() > 0);
        b.advance(Duration::from_secs(33));
        assert_eq!((b.a.calls(), b.a.held_bytes()), (0, 0));
        b.req(&invite(1001, ""));
        assert_eq!(b.a.calls(), 1);
    }

    #[test]
    fn an_invite_with_huge_headers_gets_513_and_is_not_stored() {
        let mut b = Bench::new(AnswererConfig::default());
        let rr = format!(
            "Record-Route: <sip:p2.example;lr;x={}>\r\n",
            "y".repeat(9000)
        );
        b.req(&invite(5, &rr));
        assert!(b.sent[0].1.starts_with("SIP/2.0 513 Message Too Large"));
        let c = b.a.counters();
        assert_eq!(
            (c.invites, c.calls_refused_too_large, c.calls_answered),
            (1, 1, 0)
        );
        assert_eq!((b.a.calls(), b.a.held_bytes()), (0, 0));
        // A big body is no reason to refuse: it is never copied.
        let body = "v".repeat(20_000);
        let big = invite(6, "").replace(
            "Content-Length: 0\r\n\r\n",
            &format!("Content-Length: {}\r\n\r\n{body}", body.len()),
        );
        b.req(&big);
        assert!(b.sent[1].1.starts_with("SIP/2.0 180"));
        assert!(b.a.held_bytes() < 3000, "{}", b.a.held_bytes());
    }

    #[test]
    fn over_tcp_nothing_is_retransmitted_and_ended_calls_go_at_once() {
        let mut b = Bench::new(AnswererConfig {
            transport: Transport::Tcp,
            ..AnswererConfig::default()
        });
        b.req(&invite(7, ""));
        b.advance(Duration::from_secs(10));
        assert_eq!(b.sent.len(), 2);
        let tag = b.to_tag();
        b.req(&request("ACK", 7, Some(&tag)));
        b.req(&request("BYE", 7, Some(&tag)));
        assert_eq!((b.a.calls(), b.a.held_bytes()), (0, 0));
    }

    #[test]
    fn other_requests_are_answered_statelessly() {
        let mut b = Bench::new(AnswererConfig::default());
        b.req(&request("OPTIONS", 8, None));
        b.req(&request("SUBSCRIBE", 8, None));
        b.req(&request("INVITE", 9, Some("gone")));
        let codes: Vec<_> = b.sent.iter().map(|(_, s)| s[8..11].to_string()).collect();
        assert_eq!(codes, ["200", "501", "481"]);
        assert_eq!(b.a.calls(), 0);
        assert_eq!(b.a.counters().msgs_sent, 3);
    }
}
