//! The registration client of one UE, sans IO: REGISTER, answer challenges (digest or AKA,
//! with re-synchronisation), refresh before expiry, de-register.
//!
//! The machine has no socket and no clock. Its owner tells it what happened — [`start`] an
//! attempt, a [`handle_response`], [`handle_txn_timeout`], [`handle_timeout`] at its deadline —
//! and then collects what it asks for: the REGISTER to send ([`poll_transmit`], given the Via
//! since the owner runs the transactions and so owns the branches), the outcomes to book
//! ([`poll_event`]) and the next instant it wants to be woken ([`poll_timeout`]). Pacing, the
//! population and the counters stay with the owner; so does the decision whether a refresh or
//! retry that falls due is still wanted (a run that is stopping lets them lapse).
//!
//! [`start`]: Registration::start
//! [`handle_response`]: Registration::handle_response
//! [`handle_txn_timeout`]: Registration::handle_txn_timeout
//! [`handle_timeout`]: Registration::handle_timeout
//! [`poll_transmit`]: Registration::poll_transmit
//! [`poll_event`]: Registration::poll_event
//! [`poll_timeout`]: Registration::poll_timeout

use super::challenge::{Answer, Authenticator};
use super::security::{AgreeError, SecurityConfig, UeSecurity};
use crate::ipsec::Side;
use crate::sip::auth::Challenge;
use crate::sip::builder::Writer;
use crate::sip::message::name_addr_uri;
use crate::sip::{HeaderName, Message};
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every registration of a run shares; the owner builds it once and lends it to each call.
#[derive(Clone, Debug)]
pub struct RegConfig {
    /// Home domain: the REGISTER's Request-URI host and the realm of the first AKA REGISTER.
    pub domain: String,
    /// Expires asked for, and assumed when a 2xx grants no lifetime.
    pub expires: u32,
    /// P-Access-Network-Info to add (TS 24.229 §5.1.1.2).
    pub pani: Option<String>,
    pub user_agent: String,
    /// After a failed registration, try again this much later.
    pub retry: Option<Duration>,
    /// Security agreement with the P-CSCF (`--ipsec`): what every UE offers. Only UEs given a
    /// [`UeSecurity`] ([`Registration::set_security`]) use it.
    pub security: Option<SecurityConfig>,
}

impl RegConfig {
    fn registrar(&self) -> String {
        format!("sip:{}", self.domain)
    }
}

/// Re-register ahead of expiry as TS 24.229 §5.1.1.4 asks: 600 s before when the lifetime is
/// over 1200 s, else at half of it.
pub fn refresh_after(granted: u32) -> Duration {
    let g = granted as u64;
    Duration::from_secs(if g > 1200 { g - 600 } else { (g / 2).max(1) })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegKind {
    Initial,
    Refresh,
    Deregister,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegState {
    Idle,
    Pending,
    Registered,
    Failed,
    Deregistered,
}

/// What the last 2xx to REGISTER said about the binding; callers route by it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Binding {
    /// Service-Route values as received: the Route set of the UE's requests.
    pub service_route: Vec<String>,
    /// P-Associated-URI (the identities this user may use; the first is its default) as URIs.
    pub associated: Vec<String>,
    /// Path (the proxies between the UE and the registrar) as URIs.
    pub path: Vec<String>,
}

/// An outcome for the owner to book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A fresh challenge (new AKA nonce, or `stale=true`) after credentials were sent, taken
    /// as one more round rather than a rejection.
    ExtraChallenge,
    /// A challenge was answered; the REGISTER carrying the answer follows.
    Challenged(Answered),
    /// A 2xx keeps the binding for `expires` seconds; a refresh is due at
    /// [`refresh_after`]`(expires)`. `elapsed` runs from the attempt's first REGISTER.
    Registered {
        kind: RegKind,
        expires: u32,
        elapsed: Duration,
    },
    /// A 2xx ended the binding (a de-registration, or a registrar granting 0 s).
    Deregistered { kind: RegKind, elapsed: Duration },
    /// The attempt failed with final `status`, or with none when its transaction timed out.
    /// A failed de-registration leaves the user de-registered all the same.
    Failed { kind: RegKind, status: Option<u16> },
    /// A registered user's refresh is due: the owner calls [`Registration::start`] with
    /// [`RegKind::Refresh`] if it still wants one.
    RefreshDue,
    /// A failed user's retry ([`RegConfig::retry`]) is due: the owner starts an initial
    /// registration if it still wants one.
    RetryDue,
    /// The 401 made a security agreement, or renewed one (TS 33.203 §7.4). The owner makes the
    /// SAs of [`UeSecurity::to_make`], then calls [`Registration::sa_ready`] (the protected
    /// REGISTER follows, to be sent through them: for a renewal, from its new client port) or
    /// [`Registration::sa_failed`].
    SecurityAgreed,
    /// The REGISTER sent through a renewal's SAs got its 200: they are the agreement now. The
    /// owner sends the UE's requests through them, and takes the old ones away once the
    /// P-CSCF has left them.
    SecurityRenewed,
    /// The attempt failed for want of security: the 401 allowed no agreement
    /// ([`Registration::security_error`] says why), or the owner could not make the SAs.
    SecurityFailed { kind: RegKind, why: SecurityFailure },
    /// The next REGISTER starts over unprotected (a new attempt, or the answer to an AKA
    /// re-synchronisation), and the UE's SPIs and ports were offered already: the owner binds
    /// fresh ports and calls [`Registration::security_renewed`] with them (the REGISTER is held
    /// until then) or [`Registration::security_renew_failed`]. A P-CSCF keeps the
    /// Security-Client a UE first sent from an address and port and has made SAs on its SPIs
    /// (Kamailio 5.6, docs/ipsec.md §0): an offer on the same ones would meet those.
    FreshSecurityNeeded,
}

/// Why a UE could not protect its registration, by the name it is counted under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityFailure {
    NoSecurityServer,
    Malformed,
    AlgorithmRefused,
    NoKeys,
    /// The kernel refused the SAs (the owner knows its error).
    SaInstall,
    /// The owner could not bind fresh ports for an unprotected restart.
    FreshPorts,
}

impl SecurityFailure {
    fn of(e: &AgreeError) -> SecurityFailure {
        match e {
            AgreeError::NoSecurityServer => SecurityFailure::NoSecurityServer,
            AgreeError::Malformed(_) => SecurityFailure::Malformed,
            AgreeError::AlgorithmRefused { .. } => SecurityFailure::AlgorithmRefused,
            AgreeError::NoKeys => SecurityFailure::NoKeys,
            // (never reached: the machine renews only what it offered)
            AgreeError::NoRenewalOffer => SecurityFailure::Malformed,
        }
    }
}

/// Which kind of answer a challenge got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answered {
    Credentials,
    /// AKA re-synchronisation (AUTS); a fresh challenge is expected and will be answered.
    Resync,
    /// AKA MAC failure reported to the network; whatever it answers ends the attempt.
    MacFailure,
}

/// What the next REGISTER carries.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Authz {
    /// The first of an attempt: nothing, or an AKA user's empty Authorization.
    First,
    Answer(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Due {
    Refresh,
    Retry,
    /// Send this answer to a repeated challenge (after a think time).
    Answer(String),
}

/// One UE's registration client.
#[derive(Clone, Debug)]
pub struct Registration {
    /// `<sip:impu>`: From and To.
    /// Shared: each call the user places names it in From.
    aor: Arc<str>,
    call_id: String,
    from_tag: String,
    cseq: u32,
    state: RegState,
    kind: RegKind,
    started: Instant,
    auth_sent: bool,
    /// This attempt already sent AUTS: one more challenge round is allowed, and a second stale
    /// SQN is a failure rather than a loop.
    resync_sent: bool,
    /// Nonce of the last challenge answered with credentials, and how many were answered in
    /// this attempt: a new AKA challenge (or a `stale=true` one) after credentials is answered
    /// again, at most three rounds, because Kamailio's S-CSCF may challenge afresh when the
    /// answer outran the storing of its vector.
    answered_nonce: String,
    auth_rounds: u8,
    ready: Option<Authz>,
    deadline: Option<(Instant, Due)>,
    binding: Binding,
    /// Outcomes not yet polled. An input yields two at most (an extra challenge, then its
    /// answer or the failure), so two slots, not a queue per user.
    extra_challenge: bool,
    event: Option<Event>,
    /// Polled after `event`: the agreement a 401 made beside its `Challenged`.
    security_event: Option<Event>,
    /// The UE's security agreement, when it protects its registration.
    security: Option<UeSecurity>,
    security_error: Option<AgreeError>,
    /// The answer to the 401 that made the agreement, held until the owner made the SAs.
    held: Option<Authz>,
    /// The UE's SPIs and ports went out in an unprotected REGISTER's Security-Client.
    offered: bool,
    /// An unprotected REGISTER held until the owner gives fresh SPIs and ports
    /// ([`Event::FreshSecurityNeeded`]).
    renewing: Option<Authz>,
    /// This attempt's REGISTER offered new ports and SPIs for a renewal of the SAs: a refresh
    /// does, once agreed and given them (a de-registration does not: its SAs go with it).
    renewal_offered: bool,
}

impl Registration {
    /// `aor` is the `<sip:…>` name-addr of From and To; `call_id` and `from_tag` stay the same
    /// for every REGISTER of the UE, as a registrar expects of one UE (RFC 3261 §10.2).
    pub fn new(aor: String, call_id: String, from_tag: String, now: Instant) -> Registration {
        Registration {
            aor: aor.into(),
            call_id,
            from_tag,
            cseq: 0,
            state: RegState::Idle,
            kind: RegKind::Initial,
            started: now,
            auth_sent: false,
            resync_sent: false,
            answered_nonce: String::new(),
            auth_rounds: 0,
            ready: None,
            deadline: None,
            binding: Binding::default(),
            extra_challenge: false,
            event: None,
            security_event: None,
            security: None,
            security_error: None,
            held: None,
            offered: false,
            renewing: None,
            renewal_offered: false,
        }
    }

    /// Makes this UE protect its registration (see [`RegConfig::security`]).
    pub fn set_security(&mut self, sec: UeSecurity) {
        self.security = Some(sec);
    }

    pub fn security(&self) -> Option<&UeSecurity> {
        self.security.as_ref()
    }

    /// What the UE's protected REGISTERs offer for a renewal ([`UeSecurity::set_next`]).
    pub fn set_next_security(&mut self, next: Side) {
        if let Some(sec) = self.security.as_mut() {
            sec.set_next(next);
        }
    }

    /// Whether the UE's requests go through its SAs: it agreed, and no SA failure undid that.
    pub fn protected(&self) -> bool {
        self.security.as_ref().is_some_and(|s| s.agreed().is_some()) && self.held.is_none()
    }

    /// What the last 401 lacked for an agreement.
    pub fn security_error(&self) -> Option<&AgreeError> {
        self.security_error.as_ref()
    }

    /// The SAs of the agreement are made: the protected REGISTER is ready.
    pub fn sa_ready(&mut self) {
        if let Some(a) = self.held.take() {
            self.ready = Some(a);
        }
    }

    /// The SAs could not be made: the attempt fails.
    pub fn sa_failed(&mut self, now: Instant, cfg: &RegConfig) {
        if self.held.take().is_some() {
            self.fail_security(now, cfg, SecurityFailure::SaInstall);
        }
    }

    /// The fresh ports of an [`Event::FreshSecurityNeeded`] are bound: `ue` is the UE with
    /// them and the SPIs it chose. The held REGISTER offers them, unprotected.
    pub fn security_renewed(&mut self, ue: Side) {
        // The UE's ports are the new ones from now on, whatever became of the attempt.
        if let Some(sec) = self.security.as_mut() {
            sec.restart(ue);
        }
        self.offered = false;
        if let Some(a) = self.renewing.take() {
            self.ready = Some(a);
        }
    }

    /// No fresh ports could be had: the attempt fails.
    pub fn security_renew_failed(&mut self, now: Instant, cfg: &RegConfig) {
        if self.renewing.take().is_some() {
            self.fail_security(now, cfg, SecurityFailure::FreshPorts);
        }
    }

    /// Makes `authz` the next REGISTER, sent unprotected: at once, or once the owner gave fresh
    /// SPIs and ports if these were offered already (see [`Event::FreshSecurityNeeded`]).
    fn ready_unprotected(&mut self, authz: Authz) {
        let used = self
            .security
            .as_ref()
            .is_some_and(|s| self.offered || s.agreed().is_some());
        if used {
            self.renewing = Some(authz);
            self.security_event = Some(Event::FreshSecurityNeeded);
        } else {
            self.ready = Some(authz);
        }
    }

    pub fn aor(&self) -> &Arc<str> {
        &self.aor
    }
    pub fn state(&self) -> RegState {
        self.state
    }
    /// The kind of the attempt under way (or the last one).
    pub fn kind(&self) -> RegKind {
        self.kind
    }
    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    /// Starts an attempt: its first REGISTER is ready at once, and any refresh, retry or
    /// delayed answer still pending is forgotten. A refresh or de-registration keeps the user
    /// registered until its answer comes.
    pub fn start(&mut self, now: Instant, kind: RegKind) {
        self.kind = kind;
        self.auth_sent = false;
        self.resync_sent = false;
        self.auth_rounds = 0;
        self.answered_nonce.clear();
        self.started = now;
        if self.state != RegState::Registered {
            self.state = RegState::Pending;
        }
        self.deadline = None;
        self.renewing = None;
        self.renewal_offered = false;
        if let Some(sec) = self.security.as_mut() {
            sec.abandon_renewal();
        }
        if kind == RegKind::Initial {
            self.ready_unprotected(Authz::First);
        } else {
            self.ready = Some(Authz::First);
        }
    }

    /// Forgets the pending deadline (refresh, retry, delayed answer) without starting anything.
    pub fn cancel_deadline(&mut self) {
        self.deadline = None;
    }

    /// Whether [`Registration::poll_transmit`] has a REGISTER to give.
    pub fn has_transmit(&self) -> bool {
        self.ready.is_some()
    }

    /// The REGISTER to send now, if one is ready, with `via` as its Via (the owner's transaction
    /// branch) and `contact` as the binding; `auth` supplies an AKA user's first Authorization.
    pub fn poll_transmit(
        &mut self,
        cfg: &RegConfig,
        auth: &Authenticator,
        via: &str,
        contact: &str,
    ) -> Option<Vec<u8>> {
        let authz = self.ready.take()?;
        let sec = cfg.security.as_ref().zip(self.security.as_ref());
        let registrar = cfg.registrar();
        let expires = if self.kind == RegKind::Deregister {
            0
        } else {
            cfg.expires
        };
        self.cseq += 1;
        let mut w = Writer::request("REGISTER", &registrar);
        w.header("Via", via);
        w.header("Max-Forwards", 70);
        w.header("From", format_args!("{};tag={}", self.aor, self.from_tag));
        w.header("To", &self.aor);
        w.header("Call-ID", &self.call_id);
        w.header("CSeq", format_args!("{} REGISTER", self.cseq));
        w.header("Contact", contact);
        w.header("Expires", expires);
        w.header(
            "Supported",
            if sec.is_some() {
                "path, sec-agree"
            } else {
                "path"
            },
        );
        if let Some((cfg, sec)) = sec {
            let renew = self.kind == RegKind::Refresh && sec.can_renew();
            sec.write_register_headers(cfg, renew, &mut w);
            self.offered |= sec.agreed().is_none();
            self.renewal_offered |= renew;
        }
        if let Some(pani) = &cfg.pani {
            w.header("P-Access-Network-Info", pani);
        }
        w.header("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE");
        w.header("User-Agent", &cfg.user_agent);
        match authz {
            Authz::Answer(a) => w.line(&a),
            Authz::First => {
                if let Some(a) = auth.initial_header(&cfg.domain, &registrar) {
                    w.line(&a);
                }
            }
        }
        Some(w.finish(None, b""))
    }

    /// The next outcome to book.
    pub fn poll_event(&mut self) -> Option<Event> {
        if std::mem::take(&mut self.extra_challenge) {
            return Some(Event::ExtraChallenge);
        }
        self.event.take().or_else(|| self.security_event.take())
    }

    /// When [`Registration::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline.as_ref().map(|d| d.0)
    }

    /// Acts on the deadline if it has come; an early or stale wake-up does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.as_ref().is_none_or(|d| d.0 > now) {
            return;
        }
        match self.deadline.take().map(|d| d.1) {
            Some(Due::Refresh) if self.state == RegState::Registered => {
                self.event = Some(Event::RefreshDue)
            }
            Some(Due::Retry) if self.state == RegState::Failed => {
                self.event = Some(Event::RetryDue)
            }
            Some(Due::Answer(a)) => self.ready = Some(Authz::Answer(a)),
            _ => {}
        }
    }

    /// A response to the REGISTER last sent (the owner matched it to that transaction).
    /// `rng` draws the cnonce of an answer to a challenge.
    pub fn handle_response(
        &mut self,
        now: Instant,
        cfg: &RegConfig,
        auth: &mut Authenticator,
        msg: &Message<'_>,
        code: u16,
        rng: &mut impl Rng,
    ) {
        if code < 200 {
            return;
        }
        let challenge = match code {
            401 => msg.header(HeaderName::WwwAuthenticate),
            407 => msg.header(HeaderName::ProxyAuthenticate),
            _ => None,
        }
        .and_then(|h| Challenge::parse(h, code == 407).ok());
        // A challenge answered with a held protected REGISTER still unsent (the SAs are being
        // made) is one for the attempt before: ignore it.
        if self.held.is_some() {
            return;
        }
        if let Some(ch) = &challenge {
            let fresh = ch.nonce != self.answered_nonce && (ch.is_aka() || ch.stale);
            if self.auth_sent && self.auth_rounds > 0 && self.auth_rounds < 3 && fresh {
                self.auth_sent = false;
                self.extra_challenge = true;
            }
        }
        if (code == 401 || code == 407) && !self.auth_sent {
            let registrar = cfg.registrar();
            let answer = auth.answer(
                msg,
                code,
                "REGISTER",
                &registrar,
                b"",
                !self.resync_sent,
                rng,
            );
            if let Some(answer) = answer {
                let answered = match &answer {
                    Answer::Credentials(_) => {
                        self.auth_sent = true;
                        self.auth_rounds += 1;
                        if let Some(ch) = &challenge {
                            self.answered_nonce.clone_from(&ch.nonce);
                        }
                        Answered::Credentials
                    }
                    // The network answers AUTS with a fresh challenge: leave auth_sent unset so
                    // that one is answered too.
                    Answer::Resync(_) => {
                        self.resync_sent = true;
                        Answered::Resync
                    }
                    // Tell the network its challenge was refused (TS 24.229 §5.1.1.5.3) and take
                    // whatever it answers as the end of this attempt.
                    Answer::MacFailure(_) => {
                        self.auth_sent = true;
                        Answered::MacFailure
                    }
                };
                let authz = answer.into_line();
                // The first 401 to an unprotected REGISTER carries the P-CSCF's side of the
                // agreement; the answer waits for the SAs (TS 33.203 §7.2). A 401 to a
                // protected one that offered new ports renews it the same way (§7.4); one
                // without Security-Server is answered through the SAs in force.
                let sec_state = self.security.as_ref().map(|s| {
                    (
                        s.agreed().is_some(),
                        self.renewal_offered
                            && s.next().is_some()
                            && msg
                                .raw_headers()
                                .any(|(n, _)| n.eq_ignore_ascii_case("Security-Server")),
                    )
                });
                let (agreeing, renewing) = match sec_state {
                    Some((agreed, offered_next))
                        if code == 401 && answered == Answered::Credentials =>
                    {
                        (!agreed, agreed && offered_next)
                    }
                    _ => (false, false),
                };
                if let (true, Some(scfg), Some(sec)) = (
                    agreeing || renewing,
                    cfg.security.as_ref(),
                    self.security.as_mut(),
                ) {
                    let keys = auth.session_keys();
                    let made = if renewing {
                        sec.renew(scfg, msg, scfg.pcscf, keys)
                    } else {
                        sec.agree(scfg, msg, scfg.pcscf, keys)
                    };
                    match made {
                        Ok(_) => {
                            self.security_error = None;
                            self.event = Some(Event::Challenged(answered));
                            self.security_event = Some(Event::SecurityAgreed);
                            self.held = Some(Authz::Answer(authz));
                        }
                        Err(e) => {
                            let why = SecurityFailure::of(&e);
                            self.security_error = Some(e);
                            self.fail_security(now, cfg, why);
                        }
                    }
                    return;
                }
                self.event = Some(Event::Challenged(answered));
                let round = self.auth_rounds;
                if round >= 2 {
                    // A repeated challenge: the network answered too fast for itself once
                    // already. Take a USIM's think time (20 ms per extra round) before answering.
                    let at = now + Duration::from_millis(20 * u64::from(round - 1));
                    self.deadline = Some((at, Due::Answer(authz)));
                } else if answered == Answered::Resync {
                    // AUTS goes unprotected, like the REGISTER it answers: on fresh ports.
                    self.ready_unprotected(Authz::Answer(authz));
                } else {
                    self.ready = Some(Authz::Answer(authz));
                }
                return;
            }
        }
        let elapsed = now.saturating_duration_since(self.started);
        let kind = self.kind;
        if !(200..300).contains(&code) {
            return self.fail(now, cfg, Some(code));
        }
        // The 200 to a REGISTER sent through a renewal's SAs makes them the agreement.
        if self
            .security
            .as_mut()
            .and_then(UeSecurity::commit_renewal)
            .is_some()
        {
            self.security_event = Some(Event::SecurityRenewed);
        }
        let granted = msg.expires().unwrap_or(cfg.expires);
        if kind == RegKind::Deregister || granted == 0 {
            self.state = RegState::Deregistered;
            self.event = Some(Event::Deregistered { kind, elapsed });
            return;
        }
        let uris = |h| {
            msg.header_values(h)
                .map(|v| name_addr_uri(v).to_string())
                .collect::<Vec<String>>()
        };
        self.binding = Binding {
            service_route: msg
                .header_values(HeaderName::ServiceRoute)
                .map(str::to_string)
                .collect(),
            associated: uris(HeaderName::PAssociatedUri),
            path: uris(HeaderName::Path),
        };
        self.state = RegState::Registered;
        self.deadline = Some((now + refresh_after(granted), Due::Refresh));
        self.event = Some(Event::Registered {
            kind,
            expires: granted,
            elapsed,
        });
    }

    /// The REGISTER's transaction timed out: nothing came back.
    pub fn handle_txn_timeout(&mut self, now: Instant, cfg: &RegConfig) {
        self.fail(now, cfg, None);
    }

    fn fail_security(&mut self, now: Instant, cfg: &RegConfig, why: SecurityFailure) {
        self.fail(now, cfg, None);
        self.event = Some(Event::SecurityFailed {
            kind: self.kind,
            why,
        });
    }

    fn fail(&mut self, now: Instant, cfg: &RegConfig, status: Option<u16>) {
        let kind = self.kind;
        if let Some(sec) = self.security.as_mut() {
            sec.abandon_renewal();
        }
        self.event = Some(Event::Failed { kind, status });
        // A de-registration that failed still ends our interest in the binding.
        if kind == RegKind::Deregister {
            self.state = RegState::Deregistered;
            return;
        }
        self.state = RegState::Failed;
        if let Some(r) = cfg.retry {
            self.deadline = Some((now + r, Due::Retry));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::aka::{self, AkaKeys, Usim};
    use crate::sip::auth;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    const VIA: &str = "SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-1;rport";
    const CONTACT: &str = "<sip:alice@127.0.0.2:5070;transport=udp>";

    fn cfg() -> RegConfig {
        RegConfig {
            domain: "ims.local".into(),
            expires: 600,
            pani: None,
            user_agent: "test".into(),
            retry: None,
            security: None,
        }
    }

    fn keys() -> AkaKeys {
        AkaKeys::with_opc([0x46; 16], [0xcd; 16], [0x80, 0x00])
    }

    /// A UE under a virtual clock: the machine, its credentials, and `now`.
    struct Ue {
        now: Instant,
        cfg: RegConfig,
        reg: Registration,
        auth: Authenticator,
        rng: SmallRng,
    }

    impl Ue {
        fn new(cfg: RegConfig, usim: Option<Usim>) -> Ue {
            let now = Instant::now();
            Ue {
                now,
                cfg,
                reg: Registration::new(
                    "<sip:alice@ims.local>".into(),
                    "reg-1".into(),
                    "t1".into(),
                    now,
                ),
                auth: Authenticator::new("alice@ims.local".into(), "secret".into(), usim),
                rng: SmallRng::seed_from_u64(7),
            }
        }

        fn sent(&mut self) -> String {
            let req = self
                .reg
                .poll_transmit(&self.cfg, &self.auth, VIA, CONTACT)
                .expect("a REGISTER to send");
            assert!(!self.reg.has_transmit());
            String::from_utf8(req).unwrap()
        }

        /// Answers the last REGISTER with `code` and extra header lines.
        fn answer(&mut self, code: u16, extra: &str) {
            let data = format!(
                "SIP/2.0 {code} Whatever\r\nVia: {VIA}\r\nFrom: <sip:alice@ims.local>;tag=t1\r\n\
                 To: <sip:alice@ims.local>;tag=r\r\nCall-ID: reg-1\r\nCSeq: 1 REGISTER\r\n\
                 {extra}Content-Length: 0\r\n\r\n"
            );
            let msg = Message::parse(data.as_bytes()).unwrap();
            self.reg.handle_response(
                self.now,
                &self.cfg,
                &mut self.auth,
                &msg,
                code,
                &mut self.rng,
            );
        }

        fn events(&mut self) -> Vec<Event> {
            std::iter::from_fn(|| self.reg.poll_event()).collect()
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
            self.reg.handle_timeout(self.now);
        }
    }

    fn header<'a>(req: &'a str, name: &str) -> Option<&'a str> {
        req.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    }

    #[test]
    fn refresh_after_follows_ts_24_229() {
        assert_eq!(refresh_after(600), Duration::from_secs(300));
        assert_eq!(refresh_after(3600), Duration::from_secs(3000));
        assert_eq!(refresh_after(1), Duration::from_secs(1));
    }

    #[test]
    fn digest_challenge_then_200_registers_and_refreshes_at_half_the_lifetime() {
        let mut ue = Ue::new(cfg(), None);
        ue.reg.start(ue.now, RegKind::Initial);
        assert_eq!(ue.reg.state(), RegState::Pending);
        let first = ue.sent();
        assert!(
            first.starts_with("REGISTER sip:ims.local SIP/2.0\r\n"),
            "{first}"
        );
        assert_eq!(header(&first, "Expires"), Some("600"));
        assert_eq!(header(&first, "CSeq"), Some("1 REGISTER"));
        assert_eq!(header(&first, "Contact"), Some(CONTACT));
        assert_eq!(
            header(&first, "Authorization"),
            None,
            "a digest user sends none first"
        );

        ue.now += Duration::from_millis(30);
        ue.answer(
            401,
            "WWW-Authenticate: Digest realm=\"ims.local\", nonce=\"n1\", qop=\"auth\"\r\n",
        );
        assert_eq!(ue.events(), [Event::Challenged(Answered::Credentials)]);
        let second = ue.sent();
        assert_eq!(header(&second, "CSeq"), Some("2 REGISTER"));
        assert_eq!(header(&second, "Call-ID"), Some("reg-1"));
        let authz = header(&second, "Authorization").expect("credentials");
        let got = auth::verify(authz, "REGISTER", "ims.local", "n1", |u| {
            (u == "alice@ims.local").then(|| b"secret".to_vec())
        });
        assert_eq!(got.as_deref(), Some("alice@ims.local"), "{authz}");

        ue.now += Duration::from_millis(20);
        ue.answer(
            200,
            "Contact: <sip:alice@127.0.0.2:5070>;expires=1800\r\n\
             Service-Route: <sip:orig@scscf.ims.local;lr>\r\n\
             P-Associated-URI: <sip:alice@ims.local>, <tel:+15550001>\r\n\
             Path: <sip:term@pcscf.ims.local;lr>\r\n",
        );
        assert_eq!(
            ue.events(),
            [Event::Registered {
                kind: RegKind::Initial,
                expires: 1800,
                elapsed: Duration::from_millis(50),
            }]
        );
        assert_eq!(ue.reg.state(), RegState::Registered);
        let b = ue.reg.binding();
        assert_eq!(b.service_route, ["<sip:orig@scscf.ims.local;lr>"]);
        assert_eq!(b.associated, ["sip:alice@ims.local", "tel:+15550001"]);
        assert_eq!(b.path, ["sip:term@pcscf.ims.local;lr"]);
        // 1800 s granted: refresh 600 s before expiry.
        let refresh = ue.now + Duration::from_secs(1200);
        assert_eq!(ue.reg.poll_timeout(), Some(refresh));
        ue.advance(Duration::from_secs(1199));
        assert_eq!(ue.events(), []);
        ue.advance(Duration::from_secs(1));
        assert_eq!(ue.events(), [Event::RefreshDue]);
        assert_eq!(ue.reg.poll_timeout(), None);

        ue.reg.start(ue.now, RegKind::Refresh);
        assert_eq!(
            ue.reg.state(),
            RegState::Registered,
            "registered while refreshing"
        );
        let refresh = ue.sent();
        assert_eq!(header(&refresh, "CSeq"), Some("3 REGISTER"));
        ue.answer(200, "Expires: 600\r\n");
        assert!(matches!(
            ue.events()[..],
            [Event::Registered {
                kind: RegKind::Refresh,
                expires: 600,
                ..
            }]
        ));
        assert_eq!(
            ue.reg.poll_timeout(),
            Some(ue.now + Duration::from_secs(300))
        );
    }

    #[test]
    fn forbidden_fails_and_a_retry_falls_due_when_configured() {
        let mut ue = Ue::new(
            RegConfig {
                retry: Some(Duration::from_secs(5)),
                security: None,
                ..cfg()
            },
            None,
        );
        ue.reg.start(ue.now, RegKind::Initial);
        ue.sent();
        ue.answer(403, "");
        assert_eq!(
            ue.events(),
            [Event::Failed {
                kind: RegKind::Initial,
                status: Some(403),
            }]
        );
        assert_eq!(ue.reg.state(), RegState::Failed);
        assert!(!ue.reg.has_transmit());
        ue.advance(Duration::from_secs(5));
        assert_eq!(ue.events(), [Event::RetryDue]);
    }

    #[test]
    fn a_second_challenge_after_md5_credentials_is_a_rejection() {
        let mut ue = Ue::new(cfg(), None);
        ue.reg.start(ue.now, RegKind::Initial);
        ue.sent();
        let ch = "WWW-Authenticate: Digest realm=\"ims.local\", nonce=\"n1\"\r\n";
        ue.answer(401, ch);
        ue.events();
        ue.sent();
        ue.answer(401, ch);
        assert_eq!(
            ue.events(),
            [Event::Failed {
                kind: RegKind::Initial,
                status: Some(401),
            }]
        );
        assert_eq!(ue.reg.poll_timeout(), None, "no retry configured");
    }

    #[test]
    fn a_stale_nonce_after_md5_credentials_is_answered_with_the_new_nonce() {
        let mut ue = Ue::new(cfg(), None);
        ue.reg.start(ue.now, RegKind::Initial);
        ue.sent();
        ue.answer(
            401,
            "WWW-Authenticate: Digest realm=\"ims.local\", nonce=\"n1\"\r\n",
        );
        ue.events();
        ue.sent();
        ue.answer(
            401,
            "WWW-Authenticate: Digest realm=\"ims.local\", nonce=\"n2\", stale=true\r\n",
        );
        assert_eq!(
            ue.events(),
            [
                Event::ExtraChallenge,
                Event::Challenged(Answered::Credentials)
            ]
        );
        // The second round waits out a think time, then answers n2 with the password.
        ue.advance(Duration::from_millis(20));
        let again = ue.sent();
        let authz = header(&again, "Authorization").unwrap();
        let got = auth::verify(authz, "REGISTER", "ims.local", "n2", |_| {
            Some(b"secret".to_vec())
        });
        assert_eq!(got.as_deref(), Some("alice@ims.local"), "{authz}");
        ue.answer(200, "");
        assert!(matches!(ue.events()[..], [Event::Registered { .. }]));
    }

    /// A UE that agrees on security: its answer to the 401 waits for the SAs, and carries
    /// Security-Verify; the keys it hands over are the challenge's CK and IK.
    #[test]
    fn sec_agree_holds_the_protected_register_until_the_sas_exist() {
        use crate::ipsec::Side;
        use crate::sip::secagree::{AuthAlg, EncAlg};
        let scfg = SecurityConfig {
            alg: AuthAlg::HmacSha1_96,
            ealg: EncAlg::Null,
            pcscf: "10.45.0.1".parse().unwrap(),
        };
        let side = Side {
            addr: "10.45.0.2".parse().unwrap(),
            port_c: 40100,
            port_s: 40101,
            spi_c: 50000,
            spi_s: 50001,
        };
        let k = keys();
        let ue_with = |server: &str| {
            let mut ue = Ue::new(
                RegConfig {
                    security: Some(scfg),
                    ..cfg()
                },
                Some(Usim::new(k, 0)),
            );
            ue.reg.set_security(UeSecurity::new(side));
            ue.reg.start(ue.now, RegKind::Initial);
            let first = ue.sent();
            assert_eq!(header(&first, "Supported"), Some("path, sec-agree"));
            assert!(header(&first, "Security-Client").is_some_and(|v| v.contains("spi-c=50000")));
            assert_eq!(header(&first, "Proxy-Require"), Some("sec-agree"));
            let v = aka::generate(&k, [5; 16], 1);
            ue.answer(
                401,
                &format!(
                    "WWW-Authenticate: Digest realm=\"ims.local\", nonce=\"{}\", algorithm=AKAv1-MD5, qop=\"auth\"\r\n{server}",
                    v.nonce()
                ),
            );
            (ue, v)
        };
        let server = "ipsec-3gpp;prot=esp;mod=trans;spi-c=100;spi-s=101;port-c=5100;port-s=5200;alg=hmac-sha-1-96;ealg=null";
        let (mut ue, v) = ue_with(&format!("Security-Server: {server}\r\n"));
        assert_eq!(
            ue.events(),
            [
                Event::Challenged(Answered::Credentials),
                Event::SecurityAgreed
            ]
        );
        assert!(!ue.reg.has_transmit(), "held until the SAs are made");
        assert!(!ue.reg.protected());
        let pair = ue.reg.security().unwrap().agreed().unwrap().clone();
        assert_eq!((pair.pcscf.port_s, pair.pcscf.spi_s), (5200, 101));
        assert_eq!(&pair.auth_key[..16], &v.ik, "IK keys the integrity");
        ue.reg.sa_ready();
        assert!(ue.reg.protected());
        let protected = ue.sent();
        assert_eq!(header(&protected, "Security-Verify"), Some(server));
        assert!(header(&protected, "Authorization").is_some_and(|a| a.contains("response=")));

        // The SAs could not be made: the attempt fails, by name, unsent.
        let (mut ue, _) = ue_with(&format!("Security-Server: {server}\r\n"));
        ue.events();
        ue.reg.sa_failed(ue.now, &ue.cfg);
        assert_eq!(
            ue.events(),
            [Event::SecurityFailed {
                kind: RegKind::Initial,
                why: SecurityFailure::SaInstall
            }]
        );
        assert!(!ue.reg.has_transmit());
        assert_eq!(ue.reg.state(), RegState::Failed);

        // No Security-Server: no answer at all, the failure named.
        let (mut ue, _) = ue_with("");
        assert_eq!(
            ue.events(),
            [Event::SecurityFailed {
                kind: RegKind::Initial,
                why: SecurityFailure::NoSecurityServer
            }]
        );
        assert!(!ue.reg.has_transmit());
        assert!(ue
            .reg
            .security_error()
            .is_some_and(|e| e.to_string().contains("no Security-Server")));
    }

    #[test]
    fn aka_challenge_is_answered_with_res_and_a_stale_sqn_resynchronises() {
        let k = keys();
        let mut ue = Ue::new(cfg(), Some(Usim::new(k, 40)));
        ue.reg.start(ue.now, RegKind::Initial);
        let first = ue.sent();
        let empty = header(&first, "Authorization").expect("an AKA UE names its IMPI");
        assert!(
            empty.contains(r#"username="alice@ims.local""#) && empty.contains(r#"response="""#)
        );

        // The network is behind the USIM: AUTS, then a fresh challenge from the resynchronised
        // SQN is answered with RES.
        let stale = aka::generate(&k, [3; 16], 10);
        ue.answer(
            401,
            &format!(
                "WWW-Authenticate: Digest realm=\"ims.local\", nonce=\"{}\", algorithm=AKAv1-MD5, qop=\"auth\"\r\n",
                stale.nonce()
            ),
        );
        assert_eq!(ue.events(), [Event::Challenged(Answered::Resync)]);
        let resync = ue.sent();
        let authz = header(&resync, "Authorization").unwrap();
        let auts = aka::decode_auts(&auth::param(authz, "auts").unwrap()).unwrap();
        assert_eq!(aka::resync(&k, &[3; 16], &auts), Ok(40));

        let v = aka::generate(&k, [4; 16], 41);
        ue.answer(
            401,
            &format!(
                "WWW-Authenticate: Digest realm=\"ims.local\", nonce=\"{}\", algorithm=AKAv1-MD5, qop=\"auth\"\r\n",
                v.nonce()
            ),
        );
        assert_eq!(ue.events(), [Event::Challenged(Answered::Credentials)]);
        let answer = ue.sent();
        let authz = header(&answer, "Authorization").unwrap();
        // RES (XRES on the network side) is the digest password.
        let got = auth::verify(authz, "REGISTER", "ims.local", &v.nonce(), |_| {
            Some(v.xres.to_vec())
        });
        assert_eq!(got.as_deref(), Some("alice@ims.local"), "{authz}");
        assert_eq!(ue.auth.usim().unwrap().sqn_ms, 41);
    }

    #[test]
    fn a_fresh_aka_challenge_after_credentials_is_answered_again_after_a_think_time() {
        let k = keys();
        let mut ue = Ue::new(cfg(), Some(Usim::new(k, 0)));
        ue.reg.start(ue.now, RegKind::Initial);
        ue.sent();
        let challenge = |sqn: u64, rand: u8| {
            format!(
                "WWW-Authenticate: Digest realm=\"ims.local\", nonce=\"{}\", algorithm=AKAv1-MD5\r\n",
                aka::generate(&k, [rand; 16], sqn).nonce()
            )
        };
        ue.answer(401, &challenge(1, 1));
        assert_eq!(ue.events(), [Event::Challenged(Answered::Credentials)]);
        ue.sent();
        ue.answer(401, &challenge(2, 2));
        assert_eq!(
            ue.events(),
            [
                Event::ExtraChallenge,
                Event::Challenged(Answered::Credentials)
            ]
        );
        // The second round waits 20 ms before its REGISTER goes.
        assert!(!ue.reg.has_transmit());
        assert_eq!(
            ue.reg.poll_timeout(),
            Some(ue.now + Duration::from_millis(20))
        );
        ue.advance(Duration::from_millis(19));
        assert!(!ue.reg.has_transmit());
        ue.advance(Duration::from_millis(1));
        let again = ue.sent();
        assert!(header(&again, "Authorization")
            .unwrap()
            .contains("response=\""));
        ue.answer(200, "");
        assert!(matches!(
            ue.events()[..],
            [Event::Registered { expires: 600, .. }]
        ));
    }

    #[test]
    fn aka_mac_failure_is_reported_and_ends_the_attempt() {
        let mut ue = Ue::new(cfg(), Some(Usim::new(keys(), 0)));
        ue.reg.start(ue.now, RegKind::Initial);
        ue.sent();
        let other = AkaKeys::with_opc([0x11; 16], [0xcd; 16], [0x80, 0x00]);
        let ch = format!(
            "WWW-Authenticate: Digest realm=\"ims.local\", nonce=\"{}\", algorithm=AKAv1-MD5\r\n",
            aka::generate(&other, [1; 16], 1).nonce()
        );
        ue.answer(401, &ch);
        assert_eq!(ue.events(), [Event::Challenged(Answered::MacFailure)]);
        let refusal = ue.sent();
        assert!(header(&refusal, "Authorization")
            .unwrap()
            .contains(r#"response="""#));
        ue.answer(403, "");
        assert_eq!(
            ue.events(),
            [Event::Failed {
                kind: RegKind::Initial,
                status: Some(403),
            }]
        );
    }

    #[test]
    fn deregistration_sends_expires_zero_and_ends_the_binding() {
        let mut ue = Ue::new(cfg(), None);
        ue.reg.start(ue.now, RegKind::Initial);
        ue.sent();
        ue.answer(200, "");
        ue.events();
        ue.reg.start(ue.now, RegKind::Deregister);
        assert_eq!(ue.reg.poll_timeout(), None, "the refresh is forgotten");
        let dereg = ue.sent();
        assert_eq!(header(&dereg, "Expires"), Some("0"));
        assert_eq!(ue.reg.state(), RegState::Registered);
        ue.now += Duration::from_millis(5);
        ue.answer(200, "");
        assert_eq!(
            ue.events(),
            [Event::Deregistered {
                kind: RegKind::Deregister,
                elapsed: Duration::from_millis(5),
            }]
        );
        assert_eq!(ue.reg.state(), RegState::Deregistered);
        assert_eq!(ue.reg.poll_timeout(), None);
    }

    #[test]
    fn a_timed_out_deregistration_still_deregisters_and_a_refresh_fails() {
        let mut ue = Ue::new(
            RegConfig {
                retry: Some(Duration::from_secs(1)),
                security: None,
                ..cfg()
            },
            None,
        );
        ue.reg.start(ue.now, RegKind::Initial);
        ue.sent();
        ue.answer(200, "");
        ue.events();
        ue.reg.start(ue.now, RegKind::Refresh);
        ue.sent();
        ue.reg.handle_txn_timeout(ue.now, &ue.cfg);
        assert_eq!(
            ue.events(),
            [Event::Failed {
                kind: RegKind::Refresh,
                status: None,
            }]
        );
        assert_eq!(ue.reg.state(), RegState::Failed);
        ue.reg.start(ue.now, RegKind::Deregister);
        ue.sent();
        ue.reg.handle_txn_timeout(ue.now, &ue.cfg);
        assert_eq!(ue.reg.state(), RegState::Deregistered);
        assert_eq!(
            ue.reg.poll_timeout(),
            None,
            "no retry after a de-registration"
        );
    }

    #[test]
    fn pani_goes_on_every_register() {
        let mut ue = Ue::new(
            RegConfig {
                pani: Some("3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=00101000000001".into()),
                ..cfg()
            },
            None,
        );
        ue.reg.start(ue.now, RegKind::Initial);
        let req = ue.sent();
        assert_eq!(
            header(&req, "P-Access-Network-Info"),
            Some("3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=00101000000001")
        );
        assert_eq!(header(&req, "Supported"), Some("path"));
    }
}
