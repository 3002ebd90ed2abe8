//! The user-agent core of one load worker, sans IO: it takes received datagrams and the time,
//! and hands back datagrams to send and the next instant it needs to be woken. It owns a share of
//! the population and plays every role they need: registering UE, calling UE, called UE.
//!
//! Driven by [`super::runner`] over real sockets, and by unit tests under a virtual clock.
//!
//! Each user's registration is a [`Registration`] machine (`crate::ua::registration`): the core
//! paces initial registrations, runs their transactions, books their outcomes and decides
//! whether a refresh or retry that falls due is still wanted. Challenges to any request of a
//! user are answered by its [`Authenticator`]. Each call placed is an [`OutgoingCall`]
//! (`crate::ua::caller`) and each MESSAGE or OPTIONS a [`NitClient`] (`crate::ua::nit`): the
//! core picks who calls whom, runs their INVITE, BYE and MESSAGE transactions (so it hands out
//! the branches), wakes them at their deadlines and books their events.
//!
//! Life of a run: `Registering` (initial REGISTERs at `reg_rate` for the pre-registered share)
//! → `Calling` (open-loop scenario arrivals at a rate the runner may change at any time, each
//! drawn from the mix: call, MESSAGE, OPTIONS, register, re-register, de-register; re-REGISTER
//! before expiry) → `Draining` (no new attempts; established calls are ended with BYE, early
//! ones CANCELled) → `Deregistering` (Expires: 0) → `Done`.

use super::config::{ByeBy, CoreConfig, DurationDist, ImsOptions, PreferredIdentity, Scenario};
use super::population::Identity;
use super::stats::{Delays, Interval, StatusKey};
use crate::ipsec::{Sa, Side};
use crate::media::engine::{ssrc_of, MediaEngine, MediaEvent};
use crate::media::sdp::{remote_audio, RemoteMedia};
use crate::sip::aka::Usim;
use crate::sip::builder::{sdp, SdpAudio, Writer};
use crate::sip::dialog::strip_tag;
use crate::sip::ids::{self, IdScheme};
use crate::sip::message::{name_addr_uri, uri_user};
use crate::sip::sdp::Direction;
use crate::sip::transaction::{ClientTransaction, Kind, ResponseAction, State, TimerAction};
use crate::sip::transport;
use crate::sip::{Message, Method};
use crate::slab::{Key, Slab};
use crate::ua::answerer::{Answerer, AnswererStats};
use crate::ua::caller::{self, Branch, CallConfig, CallSetup, CallState, Out, OutgoingCall};
use crate::ua::challenge::Authenticator;
use crate::ua::nit::{self, NitClient, NitConfig};
use crate::ua::registration::{self, RegConfig, RegKind, RegState, Registration};
use crate::ua::security::UeSecurity;
use crate::ua::timers::TimerWheel;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::sip::transport::Transmit;
pub use crate::ua::Peer;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Registering,
    Calling,
    Draining,
    Deregistering,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Txn(Key),
    /// User `u`'s registration deadline (refresh, retry, delayed answer); the machine ignores
    /// a wake-up that its deadline has moved away from.
    Reg(u32),
    Dereg(u32, u32),
    /// Call `k`'s deadline (INVITE timeout, hang-up, CANCEL retransmission); the machine
    /// ignores a wake-up that its deadline has moved away from.
    Call(Key),
    /// The next scenario arrival; the number is the arrival schedule's generation, bumped when
    /// the rate changes so that a superseded timer does nothing.
    NextArrival(u32),
    /// A rate given with [`LoadCore::set_rate_at`] takes effect.
    RateChange,
    NextReg,
    PhaseEnd,
    /// Half the drain time has passed: de-register even if some calls are still open.
    DeregisterNow,
    DrainEnd,
    /// The SA pair of user `u` that the renewal numbered by the second number replaced is
    /// looked at: taken away if its peer has left it, kept a while longer if not.
    RetireSas(u32, u16),
}

#[derive(Clone)]
struct User {
    /// Public identity without the scheme, e.g. `user0001@ims.local`.
    impu: String,
    /// The tel: IMPU of the same subscription, if any.
    tel: Option<String>,
    /// The socket the user's requests leave from (index into `locals`): `i % locals.len()`;
    /// with `--ipsec`, its unprotected socket until its SAs are made, then its protected
    /// client socket.
    sock: u32,
    /// Its Contact (with `--ipsec`, the one of its protected REGISTERs and calls).
    contact: Arc<str>,
    /// With `--ipsec`: its three sockets and its first REGISTER's Contact.
    ipsec: Option<UeSockets>,
    /// The UE's credentials: its REGISTERs answer challenges with them, and so do its INVITEs
    /// and MESSAGEs (one USIM, one SQN).
    auth: Authenticator,
    reg: Registration,
    /// The REGISTER transaction under way.
    txn: Option<Key>,
    /// Bumped to cancel a staggered de-registration (`Timer::Dereg`).
    gen: u32,
    /// The registration deadline a `Timer::Reg` is armed for.
    armed: Option<Instant>,
    pos_registered: Option<u32>,
}

/// A UE's sockets under `--ipsec` (docs/ipsec.md): the first REGISTER leaves from `plain` with
/// no port in Via and Contact; everything after it from the protected client socket
/// `c` (port-c) to the P-CSCF's port-s, and requests to the UE arrive on `s` (port-s).
///
/// Once the UE is protected, `plain` is bound afresh when its first refresh is due: its port is
/// the client port a renewal offers (TS 33.203 §7.4). A renewal's REGISTER leaves from it, and
/// its 200 swaps `plain` and `c`: the old client socket stays 64·T1, for the transactions begun
/// on it (RFC 3261's longest), or until the next refresh if that comes first; then it is bound
/// afresh in turn.
///
/// The replaced pair goes once its peer has left it: every 64·T1 the worker reads what its
/// inbound SAs carried (the kernel's counters), and a pair that carried nothing since the last
/// look is taken away. A P-CSCF should move to the new pair at once; one that does not
/// (Kamailio 5.6.3 keeps sending requests to a UE through the pair it made first) is counted
/// (`ipsec_sa_replaced_in_use`), and its pair kept until the UE de-registers.
#[derive(Clone)]
struct UeSockets {
    plain: u32,
    c: u32,
    s: u32,
    first_contact: Arc<str>,
    /// The SAs the worker made for this UE, to take away again: those in force, a renewal's
    /// until its 200, and those a renewal replaced until they are retired.
    sas: Option<Box<[Sa; 4]>>,
    renewal: Option<Box<[Sa; 4]>>,
    replaced: Vec<Replaced>,
    /// `plain` still holds a socket that may get datagrams: the unprotected one (a late
    /// retransmission of the first 401), or the client socket of the pair replaced last. It is
    /// bound afresh for the next renewal offer when a refresh needs it, or 64·T1 after a
    /// renewal, not before: closed at once, it would answer such datagrams with ICMP.
    plain_held: bool,
    /// Fresh ports for a renewal offer taken in a row that were a kept pair's client port.
    spare_clashes: u8,
    /// Bumped for every renewal offer: it tells the offer's SPIs from those of the pair in
    /// force, which share its server port (see [`ue_spi`]).
    gen: u16,
    /// `plain` is being bound afresh for a renewal offer.
    spare_pending: bool,
    /// A refresh waits for that, to offer a renewal.
    refresh_waiting: bool,
}

/// A UE's SA pair replaced by a renewal, until its peer has left it (see [`UeSockets`]).
#[derive(Clone)]
struct Replaced {
    /// The renewal that replaced it (the UE's `gen` then).
    id: u16,
    sas: Box<[Sa; 4]>,
    /// Packets its inbound SAs had carried at the last look; none before the first.
    seen: Option<u64>,
    /// Counted as still in use.
    counted: bool,
}

/// What a worker does in the kernel for its core (`--ipsec`): make or remove a UE's SAs, then
/// tell the core with [`LoadCore::handle_ipsec`]; or put fresh sockets (new ports, on the
/// same address) in place of a UE's three, then tell it with [`LoadCore::handle_rebind`].
#[derive(Clone, Debug)]
pub enum IpsecAction {
    /// `renewal`: the pair replaces the UE's pair in force (TS 33.203 §7.4) once its REGISTER
    /// gets a 200; otherwise it is the UE's first.
    Install {
        user: u32,
        sas: Box<[Sa; 4]>,
        renewal: bool,
    },
    /// `last`: the UE is unprotected from now on; otherwise the pair was a renewal's, or one a
    /// renewal replaced.
    Remove {
        user: u32,
        sas: Box<[Sa; 4]>,
        last: bool,
    },
    /// Fresh sockets in place of some of the UE's: all three (plain, port-c, port-s) for an
    /// unprotected restart, or `plain` alone, whose port a renewal offers.
    Rebind { user: u32, socks: Box<[u32]> },
    /// How many packets the inbound SAs of `sas` (a pair a renewal replaced, numbered `id`)
    /// have carried: tell the core with [`LoadCore::handle_sa_use`].
    ReadUse {
        user: u32,
        id: u16,
        sas: Box<[Sa; 4]>,
    },
}

impl User {
    fn uri(&self) -> String {
        format!("sip:{}", self.impu)
    }
}

#[derive(Clone, Copy)]
enum Owner {
    Register(u32),
    Invite(Key),
    Bye(Key),
    /// A MESSAGE or OPTIONS scenario (a lone non-INVITE transaction).
    Nit(Key),
}

/// A MESSAGE or OPTIONS in flight, and who sends it.
#[derive(Clone)]
struct Nit {
    m: NitClient,
    sender: u32,
    sock: u32,
}

#[derive(Clone)]
struct Txn {
    ct: ClientTransaction,
    request: Vec<u8>,
    src: u32,
    dest: SocketAddr,
    owner: Owner,
    method: Method,
    /// ACK to repeat when a non-2xx final to INVITE is retransmitted.
    ack: Option<Vec<u8>>,
    armed: Option<Instant>,
}

/// A Via line for branch `key`, written where it is displayed: straight into the message,
/// with no string of its own.
struct ViaLine<'a> {
    transport: &'a str,
    host: &'a str,
    ids: &'a IdScheme,
    key: Key,
}

impl std::fmt::Display for ViaLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SIP/2.0/{} {};branch=", self.transport, self.host)?;
        self.ids.write_branch(f, self.key);
        f.write_str(";rport")
    }
}

/// The Via line as a string, sized up front (`format!` guesses short and grows), for the
/// machines that keep theirs.
fn via_line(transport: &str, host: &str, ids: &IdScheme, key: Key) -> String {
    use std::fmt::Write as _;
    let mut v = String::with_capacity(8 + transport.len() + 1 + host.len() + 64);
    let _ = write!(
        v,
        "{}",
        ViaLine {
            transport,
            host,
            ids,
            key
        }
    );
    v
}

/// A transaction's bytes go back to the pool whichever way it ends (final response, timeout,
/// superseded registration).
impl Drop for Txn {
    fn drop(&mut self) {
        transport::recycle(std::mem::take(&mut self.request));
        if let Some(ack) = self.ack.take() {
            transport::recycle(ack);
        }
    }
}

/// The branch of the ACK sent under transaction key `tk`. Nothing answers an ACK, so its branch
/// only has to be unique: the slot of `tk` with a generation no transaction will reach.
fn ack_key(tk: Key) -> Key {
    Key {
        slot: tk.slot,
        gen: u32::MAX - tk.gen,
    }
}

/// A call placed, and what the core keeps around its machine.
#[derive(Clone)]
struct Call {
    m: OutgoingCall,
    caller: Option<u32>,
    /// The caller's socket: every request of the call leaves from it.
    sock: u32,
    /// The INVITE transaction under way.
    invite_txn: Option<Key>,
    /// The branch key our ACK to the 2xx went out with (to send it again, rebuilt).
    ack_branch: Option<Key>,
    /// The deadline a `Timer::Call` is armed for.
    armed: Option<Instant>,
    /// `--media`: the far end's audio stream from its 2xx, until our stream starts at the ACK.
    remote_media: Option<RemoteMedia>,
}

/// The media plane of a worker with `--media`: its engine, the socket it owns, and the
/// callee side's offers waiting for their ACK.
#[derive(Clone)]
struct Media {
    engine: MediaEngine,
    /// Its RTP and RTCP sockets.
    sock: u32,
    rtcp_sock: u32,
    /// Calls our users answer, by Call-ID: the caller's audio from the INVITE's offer, and
    /// whether our stream to it has started (at the ACK).
    callee: HashMap<Box<str>, (RemoteMedia, bool)>,
    /// Streams ended since the last [`LoadCore::take_media_records`] (`--media-log`).
    ended: Vec<crate::media::engine::StreamSummary>,
}

impl Media {
    /// The far end's audio in `msg`'s SDP. A body we cannot use is counted in `unusable`;
    /// with `bodyless_ok` a message without a body (a re-INVITE that makes no offer) is not.
    fn far_audio(
        &self,
        msg: &Message<'_>,
        unusable: &mut u64,
        bodyless_ok: bool,
    ) -> Option<RemoteMedia> {
        match remote_audio(msg.body(), self.engine.config().codec) {
            Ok(r) => Some(r),
            Err(_) if bodyless_ok && msg.body().is_empty() => None,
            Err(_) => {
                *unusable += 1;
                None
            }
        }
    }
}

#[derive(Clone)]
pub struct LoadCore {
    cfg: CoreConfig,
    /// What every user's registration shares, from `cfg`.
    reg_cfg: RegConfig,
    call_cfg: CallConfig,
    nit_cfg: NitConfig,
    /// Our sockets' addresses; users are spread over them.
    locals: Vec<SocketAddr>,
    /// `host:port` of each socket, for Via sent-by and Contact.
    via_hosts: Vec<String>,
    /// `--ruri`'s Request-URI and To, and the From and Contact of a run without users, the
    /// same for every call: built once.
    fixed_ruri: Option<(Arc<str>, Arc<str>)>,
    anonymous: (Arc<str>, Arc<str>),
    /// The audio of our calls' offers (and of our answers to their re-INVITEs).
    offer_audio: SdpAudio,
    ids: IdScheme,
    rng: SmallRng,
    users: Vec<User>,
    registered: Vec<u32>,
    user_by_name: HashMap<String, u32>,
    txns: Slab<Txn>,
    calls: Slab<Call>,
    nits: Slab<Nit>,
    /// The called side of our users' incoming calls (answering socket: the user's own).
    answerer: Answerer,
    timers: TimerWheel<Timer>,
    out: VecDeque<Transmit>,
    /// Where requests from a socket go when not to `cfg.target` (a UE's protected client
    /// socket talks to its P-CSCF's protected server port).
    sock_dest: Vec<Option<SocketAddr>>,
    ipsec_out: VecDeque<IpsecAction>,
    /// IPsec failure kinds already shown on stderr.
    ipsec_said: HashSet<String>,
    pub stats: Interval,
    phase: Phase,
    phase_started: Instant,
    next_reg_user: usize,
    /// Users registered in the `Registering` phase (the pre-registered share).
    prereg_count: usize,
    initial_pending: usize,
    /// Current scenario attempt rate (per second, this worker).
    rate: f64,
    arrival_gen: u32,
    /// When the last arrival was due (constant arrivals keep their spacing across rate changes).
    last_arrival: Instant,
    next_call_at: Instant,
    /// End of the call phase (exclusive): arrivals at or after it are not offered.
    calls_until: Option<Instant>,
    /// A rate change given ahead of time: from the instant on, the rate ([`LoadCore::set_rate_at`]).
    pending_rate: Option<(Instant, f64)>,
    calls_offered: u64,
    drain_deadline: Option<Instant>,
    dereg_pending: usize,
    calling_span: (Option<Instant>, Option<Instant>),
    media: Option<Media>,
    /// The latest time input or timers brought (the stats tick has no time of its own).
    last_now: Instant,
}

pub use crate::ua::registration::refresh_after;

/// SPIs of a UE's inbound SAs: this plus its protected ports (above the P-CSCF's usual range,
/// below 2^31 as Kamailio 5.6 prints them with `%d`).
const UE_SPI_BASE: u32 = 0x0010_0000;

/// The SPI of a UE's inbound SA to `port` in its generation `gen`: a renewal keeps the server
/// port, so the generation tells its new SPI from the one in force (TS 33.203 §7.4 wants both
/// new). Unique per address while the ports are, for 65,280 renewals.
fn ue_spi(gen: u16, port: u16) -> u32 {
    UE_SPI_BASE + ((u32::from(gen) % 0xFF00) << 16) + u32::from(port)
}

impl LoadCore {
    /// `locals` are the addresses of the worker's sockets (one at least); user `i` sends and
    /// receives on socket `i % locals.len()`.
    pub fn new(
        cfg: CoreConfig,
        locals: &[SocketAddr],
        population: Vec<Identity>,
        worker: u32,
        now: Instant,
    ) -> LoadCore {
        let run = (cfg.seed as u32)
            .wrapping_mul(0x9e37_79b9)
            .wrapping_add(worker)
            .wrapping_add(std::process::id() << 8);
        let mut rng = SmallRng::seed_from_u64(cfg.seed.wrapping_add(worker as u64 * 7919));
        assert!(!locals.is_empty(), "a core needs one local socket at least");
        let locals = locals.to_vec();
        let local = locals[0];
        let via_hosts: Vec<String> = locals.iter().map(|l| l.to_string()).collect();
        let ids = IdScheme::new(run);
        let tp = cfg.transport.param();
        let mut user_by_name = HashMap::with_capacity(population.len());
        // With --ipsec each UE has three sockets (see `UeSockets`); its unprotected one carries
        // no port in Via and Contact, its protected ones carry port-s.
        let ipsec = cfg.ipsec.is_some();
        assert!(
            !ipsec || locals.len() == 3 * population.len().max(1),
            "--ipsec: three sockets per UE"
        );
        let mut via_hosts = via_hosts;
        if ipsec {
            for u in 0..population.len() {
                let (plain, s) = (locals[3 * u], locals[3 * u + 2]);
                via_hosts[3 * u] = plain.ip().to_string();
                via_hosts[3 * u + 1] = s.to_string();
            }
        }
        let users: Vec<User> = population
            .into_iter()
            .enumerate()
            .map(|(i, id)| {
                user_by_name.insert(id.user().to_string(), i as u32);
                let sock = if ipsec {
                    3 * i as u32
                } else {
                    (i % locals.len()) as u32
                };
                let contact = ue_contact(&id, &via_hosts[sock as usize], tp, &cfg.ims);
                let ue_socks = ipsec.then(|| UeSockets {
                    plain: sock,
                    c: sock + 1,
                    s: sock + 2,
                    first_contact: contact.clone().into(),
                    sas: None,
                    renewal: None,
                    replaced: Vec::new(),
                    plain_held: false,
                    spare_clashes: 0,
                    gen: 0,
                    spare_pending: false,
                    refresh_waiting: false,
                });
                let contact = match &ue_socks {
                    Some(u) => ue_contact(&id, &via_hosts[u.c as usize], tp, &cfg.ims),
                    None => contact,
                };
                let call_id = ids.call_id(
                    'r',
                    Key {
                        slot: i as u32,
                        gen: 0,
                    },
                    local.ip(),
                );
                let from_tag = ids::token(&mut rng);
                let Identity {
                    impu,
                    impi,
                    password,
                    aka,
                    tel,
                    instance: _,
                } = id;
                let mut reg = Registration::new(
                    format!("<sip:{impu}>"),
                    call_id.to_string(),
                    from_tag.to_string(),
                    now,
                );
                if let Some(u) = &ue_socks {
                    let (c, s) = (locals[u.c as usize], locals[u.s as usize]);
                    // The UE picks the SPIs of its inbound SAs: unique per address, since
                    // its ports are (docs/ipsec.md: the P-CSCF's SAD keys on address + SPI).
                    reg.set_security(UeSecurity::new(Side {
                        addr: c.ip(),
                        port_c: c.port(),
                        port_s: s.port(),
                        spi_c: ue_spi(0, c.port()),
                        spi_s: ue_spi(0, s.port()),
                    }));
                }
                User {
                    reg,
                    auth: Authenticator::new(impi, password, aka.map(|a| Usim::new(a.keys, a.sqn))),
                    impu,
                    tel,
                    sock,
                    contact: contact.into(),
                    ipsec: ue_socks,
                    txn: None,
                    gen: 0,
                    armed: None,
                    pos_registered: None,
                }
            })
            .collect();
        let sdp_offer = sdp(&local.ip().to_string(), 1, &SdpAudio::nominal(40000));
        // (`offer_audio` below says the same.)
        let prereg_count = if cfg.register {
            ((users.len() as f64 * cfg.preregistered.clamp(0.0, 1.0)).round() as usize)
                .min(users.len())
        } else {
            0
        };
        let answerer = Answerer::new(cfg.answerer(worker), &locals, run, now);
        let reg_cfg = RegConfig {
            domain: cfg.domain.clone(),
            expires: cfg.expires,
            pani: cfg.ims.pani.clone(),
            user_agent: cfg.user_agent.clone(),
            retry: cfg.reg_retry,
            security: cfg.ipsec,
        };
        let call_cfg = CallConfig {
            user_agent: cfg.user_agent.clone(),
            pani: cfg.ims.pani.clone(),
            offer: sdp_offer,
            invite_timeout: cfg.invite_timeout,
            reliable: cfg.transport.reliable(),
            timers: cfg.timers,
            audio: SdpAudio::nominal(40000),
            origin: local.ip().to_string(),
            hold: cfg.call_hold,
        };
        let nit_cfg = NitConfig {
            user_agent: cfg.user_agent.clone(),
            pani: cfg.ims.pani.clone(),
        };
        let fixed_ruri = cfg
            .fixed_ruri
            .as_deref()
            .map(|r| (r.into(), format!("<{r}>").into()));
        let anonymous = (
            format!("<sip:imsload@{}>", cfg.domain).into(),
            format!("<sip:imsload@{};transport={tp}>", via_hosts[0]).into(),
        );
        LoadCore {
            reg_cfg,
            call_cfg,
            nit_cfg,
            initial_pending: prereg_count,
            prereg_count,
            rate: cfg.cps,
            arrival_gen: 0,
            last_arrival: now,
            cfg,
            locals,
            fixed_ruri,
            anonymous,
            offer_audio: SdpAudio::nominal(40000),
            via_hosts,
            ids,
            rng,
            users,
            registered: Vec::new(),
            user_by_name,
            txns: Slab::default(),
            calls: Slab::default(),
            nits: Slab::default(),
            answerer,
            timers: TimerWheel::new(now),
            out: VecDeque::new(),
            sock_dest: Vec::new(),
            ipsec_out: VecDeque::new(),
            ipsec_said: HashSet::new(),
            stats: Interval::default(),
            phase: Phase::Registering,
            phase_started: now,
            next_reg_user: 0,
            next_call_at: now,
            calls_until: None,
            pending_rate: None,
            calls_offered: 0,
            drain_deadline: None,
            dereg_pending: 0,
            calling_span: (None, None),
            media: None,
            last_now: now,
        }
    }

    /// Begins the run: the first registrations (or calls) are due at `now`. Separate from
    /// [`LoadCore::new`] so that the time spent setting up other workers is not counted as
    /// scheduling lag.
    pub fn start(&mut self, now: Instant) {
        self.phase_started = now;
        if self.prereg_count > 0 {
            self.arm(now, Timer::NextReg);
        } else {
            self.enter_calling(now);
        }
    }

    /// When this worker's call phase began and ended (for the achieved call rate).
    pub fn calling_span(&self) -> (Option<Instant>, Option<Instant>) {
        self.calling_span
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The scenario attempt rate now in force (per second).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Changes the scenario attempt rate from `now` on (what profiles' phases do). The arrival
    /// process goes on seamlessly: a constant-rate schedule keeps its phase (the part of the
    /// gap still to wait shrinks or stretches by old rate / new rate), so a change neither adds
    /// nor drops an arrival; Poisson arrivals are memoryless, so the next gap is drawn afresh.
    /// [`LoadCore::set_rate`] from `at` on, told ahead of time (a worker applies a new rate
    /// at its next tick). Arrivals due at or after `at` follow the new rate even when the
    /// core's timers run late: without this, a worker that woke late for its tick first
    /// placed the arrivals due in between at the old rate, so a phase's count of attempts
    /// hung on the wake-up's lateness (one more than 20/s for 6 s in a loaded run). A later
    /// call replaces a change not yet made.
    pub fn set_rate_at(&mut self, at: Instant, rate: f64) {
        self.pending_rate = Some((at, rate));
        self.arm(at, Timer::RateChange);
    }

    fn apply_pending_rate(&mut self) {
        if let Some((at, rate)) = self.pending_rate.take() {
            self.set_rate(at, rate);
        }
    }

    pub fn set_rate(&mut self, now: Instant, rate: f64) {
        let rate = if rate.is_finite() { rate.max(0.0) } else { 0.0 };
        if rate == self.rate {
            return;
        }
        let old = std::mem::replace(&mut self.rate, rate);
        if self.phase == Phase::Calling {
            self.schedule_arrivals(now, old);
        }
    }

    /// (Re)starts the arrival schedule at the current rate; earlier arrival timers lapse.
    fn schedule_arrivals(&mut self, now: Instant, old_rate: f64) {
        self.arrival_gen = self.arrival_gen.wrapping_add(1);
        if self.rate <= 0.0 {
            return;
        }
        let next = match self.cfg.arrival {
            super::config::Arrival::Constant if old_rate > 0.0 => {
                let wait = self.next_call_at.saturating_duration_since(now);
                now + wait.mul_f64(old_rate / self.rate)
            }
            // From a standstill, the first arrival comes one gap after the last one (or now).
            super::config::Arrival::Constant => (self.last_arrival + self.arrival_gap()).max(now),
            super::config::Arrival::Poisson => now + self.arrival_gap(),
        };
        self.next_call_at = next;
        if self.calls_until.is_none_or(|end| next < end) {
            self.arm(next, Timer::NextArrival(self.arrival_gen));
        }
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }
    /// The first socket's address.
    pub fn local(&self) -> SocketAddr {
        self.locals[0]
    }

    /// Gives the worker its media sockets (`--media`, set in the config): RTP on socket `sock`
    /// of the driver, at `addr`, and RTCP on `rtcp` (index, address), which every SDP of ours
    /// from now on names; `wall`: the wall clock at `now` (RTCP's NTP times).
    pub fn enable_media(
        &mut self,
        (sock, addr): (u32, SocketAddr),
        rtcp: (u32, SocketAddr),
        now: Instant,
        wall: Duration,
    ) {
        let Some(cfg) = self.cfg.media.clone() else {
            return;
        };
        let audio = SdpAudio {
            port: addr.port(),
            pts: match cfg.codec {
                crate::media::g711::Codec::Pcmu => "0 8 101",
                crate::media::g711::Codec::Pcma => "8 0 101",
            },
            ptime: Some(cfg.ptime.as_millis() as u16),
            rtcp: Some(rtcp.1.port()),
            direction: Default::default(),
            version: 1,
        };
        self.call_cfg.offer = sdp(&addr.ip().to_string(), 1, &audio);
        self.call_cfg.audio = audio;
        self.call_cfg.origin = addr.ip().to_string();
        self.offer_audio = audio;
        self.answerer.set_sdp_audio(audio);
        let mut engine = MediaEngine::new(cfg, sock, addr, now, wall);
        engine.enable_rtcp(rtcp.0, rtcp.1);
        self.media = Some(Media {
            engine,
            sock,
            rtcp_sock: rtcp.0,
            callee: HashMap::new(),
            ended: Vec::new(),
        });
    }

    /// The figures of each stream that ended since the last call (one line each in
    /// `--media-log`).
    pub fn take_media_records(&mut self) -> Vec<crate::media::engine::StreamSummary> {
        self.media
            .as_mut()
            .map(|m| std::mem::take(&mut m.ended))
            .unwrap_or_default()
    }

    /// Books what the media engine has to say.
    fn media_events(&mut self) {
        let Some(m) = &mut self.media else { return };
        let d = &mut self.stats.delays;
        while let Some(e) = m.engine.poll_event() {
            match e {
                MediaEvent::SendLateness(t) => Delays::record(&mut d.media_send_lateness, t),
                MediaEvent::RoundTrip(t) => Delays::record(&mut d.media_rtt, t),
                MediaEvent::Ended(s) => {
                    m.ended.push(s);
                    Delays::record(&mut d.media_gap, s.longest_gap);
                    Delays::record_value(
                        &mut d.media_jitter,
                        (s.jitter_ms * 1000.0).round() as u64,
                    );
                    if s.mos > 0.0 {
                        Delays::record_value(&mut d.media_mos, (s.mos * 100.0).round() as u64);
                    }
                }
            }
        }
    }

    /// A request our answering side was given: the callee's media follows the call (the offer
    /// at the INVITE, our stream from our answer, none after BYE or CANCEL).
    fn callee_media(&mut self, now: Instant, msg: &Message<'_>, method: &str) {
        let Some(m) = &mut self.media else { return };
        let call_id = msg.call_id();
        match method {
            "INVITE" if msg.to_tag().is_some() => {
                // A re-INVITE (hold, resume) of a call we answered: the stream follows the new
                // offer, or starts with it.
                let unusable = &mut self.stats.counters.media_sdp_unusable;
                if m.callee.contains_key(call_id) {
                    if let Some(new) = m.far_audio(msg, unusable, true) {
                        if let Some((r, started)) = m.callee.get_mut(call_id) {
                            *r = new;
                            if *started {
                                m.engine.update(now, ssrc_of(call_id, 1), new);
                            }
                        }
                    }
                }
            }
            "INVITE" if self.answerer.has_call(call_id) && !m.callee.contains_key(call_id) => {
                let unusable = &mut self.stats.counters.media_sdp_unusable;
                if let Some(r) = m.far_audio(msg, unusable, false) {
                    m.callee.insert(call_id.into(), (r, false));
                }
            }
            "BYE" | "CANCEL" => {
                if let Some((_, true)) = m.callee.remove(call_id) {
                    m.engine.stop(now, ssrc_of(call_id, 1));
                }
                return;
            }
            _ => {}
        }
        // Answered (at once, or by a ring timer that fired since): the stream starts.
        if let Some((r, started)) = m.callee.get_mut(call_id) {
            if !*started && self.answerer.is_up(call_id) {
                *started = true;
                let (mine, far) = (ssrc_of(call_id, 1), ssrc_of(call_id, 0));
                m.engine.start(now, mine, Some(far), *r);
            }
        }
    }

    /// The address of socket `i`.
    pub fn local_addr(&self, i: u32) -> SocketAddr {
        self.locals[i as usize]
    }

    /// The local address of user `name` (the socket it registers and calls from).
    pub fn user_local(&self, name: &str) -> Option<SocketAddr> {
        let u = *self.user_by_name.get(name)?;
        Some(self.locals[self.users[u as usize].sock as usize])
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.out.pop_front() {
            return Some(t);
        }
        if let Some(t) = self.answerer.poll_transmit() {
            return Some(self.ue_request_route(t));
        }
        self.media.as_mut()?.engine.poll_transmit()
    }

    /// With `--ipsec`, a request of the answering side (its BYE with `--bye-by callee`) is one
    /// of the UE's own: like every request of the UE it leaves the protected client socket
    /// for the P-CSCF's protected server port (TS 33.203 §7.1), not the protected server
    /// socket the call came in on. Responses stay where their request arrived.
    fn ue_request_route(&self, mut t: Transmit) -> Transmit {
        if self.cfg.ipsec.is_none() || t.data.starts_with(b"SIP/2.0 ") {
            return t;
        }
        let Some(ue) = self
            .users
            .get(t.src as usize / 3)
            .and_then(|u| u.ipsec.as_ref())
        else {
            return t;
        };
        if t.src == ue.s {
            if let Some(dest) = self.sock_dest.get(ue.c as usize).copied().flatten() {
                t.src = ue.c;
                t.dest = dest;
            }
        }
        t
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timers.next_deadline(),
            self.answerer.poll_timeout(),
            self.media.as_ref().and_then(|m| m.engine.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Counts and gauges since the last call; the histograms restart empty.
    pub fn take_stats(&mut self) -> Interval {
        let a = self.answerer.take_stats();
        add_answerer_stats(&mut self.stats, &a);
        self.stats.gauges.registered = self.registered.len() as u64;
        self.stats.gauges.active_calls = self.calls.len() as u64;
        self.stats.gauges.answering_calls = self.answerer.calls() as u64;
        self.stats.gauges.pending_transactions =
            (self.txns.len() + self.answerer.pending_byes()) as u64;
        self.media_tick();
        self.stats.take()
    }

    fn arm(&mut self, at: Instant, t: Timer) {
        self.timers.insert(at, t);
    }

    /// Once a second: media counts and gauges into the stats, and the callee streams of calls
    /// our answering side ended on its own (it hung up, or the caller never ACKed) stopped.
    fn media_tick(&mut self) {
        let Some(m) = &mut self.media else { return };
        let now = self.last_now;
        let answerer = &self.answerer;
        let engine = &mut m.engine;
        m.callee.retain(|cid, (_, started)| {
            let keep = answerer.has_call(cid) && (!*started || answerer.is_up(cid));
            if !keep && *started {
                engine.stop(now, ssrc_of(cid, 1));
            }
            keep
        });
        let n = m.engine.take_counts();
        let c = &mut self.stats.counters;
        c.media_streams_started += n.streams_started;
        c.media_streams_ended += n.streams_ended;
        c.media_streams_refused += n.streams_refused;
        c.media_packets_sent += n.packets_sent;
        c.media_packets_received += n.packets_received;
        c.media_packets_echoed += n.packets_echoed;
        c.media_packets_lost += n.packets_lost;
        c.media_duplicates += n.duplicates;
        c.media_out_of_order += n.out_of_order;
        c.media_unmatched += n.unmatched;
        c.media_rtcp_sent += n.rtcp_sent;
        c.media_rtcp_received += n.rtcp_received;
        c.media_rtcp_malformed += n.rtcp_malformed;
        c.media_not_rtp += n.not_rtp;
        c.media_late_sends += n.late_sends;
        c.media_gaps += n.gaps;
        c.media_holds += n.holds;
        c.media_resumes += n.resumes;
        c.media_codec_changes += n.codec_changes;
        c.media_ptime_changes += n.ptime_changes;
        self.stats.gauges.media_streams = m.engine.streams() as u64;
        self.stats.gauges.media_silent = m.engine.silent_streams(now);
        self.media_events();
    }

    fn send(&mut self, src: u32, dest: SocketAddr, data: Vec<u8>) {
        self.stats.counters.msgs_sent += 1;
        self.out.push_back(Transmit { src, dest, data });
    }

    /// Where a request from socket `src` goes: the outbound proxy, or the P-CSCF's protected
    /// server port for a UE's protected client socket.
    fn dest_of(&self, src: u32) -> SocketAddr {
        self.sock_dest
            .get(src as usize)
            .copied()
            .flatten()
            .unwrap_or(self.cfg.target)
    }

    /// The next SA change the worker is to make in the kernel (`--ipsec`).
    pub fn poll_ipsec(&mut self) -> Option<IpsecAction> {
        self.ipsec_out.pop_front()
    }

    /// What became of an [`IpsecAction`]: `Err` holds the kernel's refusal.
    pub fn handle_ipsec(
        &mut self,
        now: Instant,
        action: &IpsecAction,
        result: Result<(), crate::ipsec::xfrm::XfrmError>,
    ) {
        match (action, result) {
            (
                IpsecAction::Install {
                    user: u,
                    sas,
                    renewal,
                },
                Ok(()),
            ) => {
                self.stats.counters.ipsec_sa_setups += 1;
                if !renewal {
                    self.stats.gauges.ipsec_ues_protected += 1;
                }
                let user = &mut self.users[*u as usize];
                let Some(x) = user.ipsec.as_mut() else { return };
                let pcscf = user
                    .reg
                    .security()
                    .and_then(|s| s.to_make())
                    .map(|p| SocketAddr::new(p.pcscf.addr, p.pcscf.port_s));
                let c = if *renewal {
                    // Only the renewal's REGISTER leaves the new client port until its 200.
                    x.renewal = Some(sas.clone());
                    x.plain
                } else {
                    // Everything the UE sends from now on leaves its protected client port for
                    // the P-CSCF's protected server port.
                    x.sas = Some(sas.clone());
                    user.sock = x.c;
                    x.c
                };
                if self.sock_dest.len() <= c as usize {
                    self.sock_dest.resize(c as usize + 1, None);
                }
                self.sock_dest[c as usize] = pcscf;
                if !renewal {
                    x.plain_held = true;
                }
                user.reg.sa_ready();
                self.drive_registration(now, *u);
            }
            (
                IpsecAction::Install {
                    user: u, renewal, ..
                },
                Err(e),
            ) => {
                self.stats.counters.ipsec_sa_install_failed += 1;
                if *renewal {
                    self.stats.counters.ipsec_sa_renewals_failed += 1;
                }
                self.ipsec_say_once("sa_install", &e.to_string());
                let user = &mut self.users[*u as usize];
                user.reg.sa_failed(now, &self.reg_cfg);
                self.drive_registration(now, *u);
            }
            // (answered by `handle_rebind` and `handle_sa_use`)
            (IpsecAction::Rebind { .. } | IpsecAction::ReadUse { .. }, _) => {}
            (IpsecAction::Remove { last, .. }, r) => {
                self.stats.counters.ipsec_sa_teardowns += 1;
                if *last {
                    self.stats.gauges.ipsec_ues_protected =
                        self.stats.gauges.ipsec_ues_protected.saturating_sub(1);
                }
                if let Err(e) = r {
                    self.stats.counters.ipsec_sa_remove_failed += 1;
                    tracing::warn!("--ipsec: {e}");
                }
            }
        }
    }

    /// What became of an [`IpsecAction::Rebind`]: the UE's new addresses (plain, port-c,
    /// port-s), or why there are none. Its held REGISTER then leaves the new plain socket with
    /// SPIs and ports never offered before.
    pub fn handle_rebind(
        &mut self,
        now: Instant,
        u: u32,
        result: std::io::Result<Vec<SocketAddr>>,
    ) {
        // Its socket indices only (the rest of `UeSockets` stays as it is).
        let Some((x_plain, x_c, x_s, spare)) = self
            .users
            .get(u as usize)
            .and_then(|user| user.ipsec.as_ref())
            .map(|x| (x.plain, x.c, x.s, x.spare_pending))
        else {
            return;
        };
        if spare {
            return self.spare_bound(now, u, result);
        }
        let addrs = match result {
            Ok(a) if a.len() == 3 => [a[0], a[1], a[2]],
            Ok(a) => {
                debug_assert!(false, "three fresh sockets asked for, {} given", a.len());
                return;
            }
            Err(e) => {
                self.stats.counters.ipsec_fresh_ports_failed += 1;
                self.ipsec_say_once("fresh_ports", &format!("cannot bind fresh ports: {e}"));
                let user = &mut self.users[u as usize];
                user.reg.security_renew_failed(now, &self.reg_cfg);
                self.drive_registration(now, u);
                return;
            }
        };
        self.stats.counters.ipsec_fresh_ports += 1;
        let [plain, c, s] = addrs;
        for (i, a) in [(x_plain, plain), (x_c, c), (x_s, s)] {
            self.locals[i as usize] = a;
            self.answerer.set_local(i, a);
            if let Some(d) = self.sock_dest.get_mut(i as usize) {
                *d = None;
            }
        }
        // As at the start (`LoadCore::new`): no port on the plain socket, port-s on the
        // protected ones; the Contact names port-s.
        let old = std::mem::replace(&mut self.via_hosts[x_c as usize], s.to_string());
        self.via_hosts[x_s as usize] = s.to_string();
        self.via_hosts[x_plain as usize] = plain.ip().to_string();
        let user = &mut self.users[u as usize];
        user.contact = user.contact.replacen(&old, &s.to_string(), 1).into();
        user.sock = x_plain;
        let gen = user.ipsec.as_ref().map_or(0, |x| x.gen);
        user.reg.security_renewed(Side {
            addr: c.ip(),
            port_c: c.port(),
            port_s: s.port(),
            spi_c: ue_spi(gen, c.port()),
            spi_s: ue_spi(gen, s.port()),
        });
        self.drive_registration(now, u);
    }

    /// Asks the worker for a fresh `plain` socket for user `u`, whose port its protected
    /// REGISTERs offer for a renewal (see [`UeSockets`]).
    fn bind_spare(&mut self, u: u32) {
        let Some(x) = self.users[u as usize].ipsec.as_mut() else {
            return;
        };
        if x.spare_pending {
            return;
        }
        x.spare_pending = true;
        self.ipsec_out.push_back(IpsecAction::Rebind {
            user: u,
            socks: Box::new([x.plain]),
        });
    }

    /// The fresh `plain` socket of [`LoadCore::bind_spare`]: the UE's next protected REGISTERs
    /// offer its port, the UE's server port and SPIs of a new generation. Without it the UE
    /// offers no renewal, and a re-authentication is answered through the SAs in force.
    fn spare_bound(&mut self, now: Instant, u: u32, result: std::io::Result<Vec<SocketAddr>>) {
        let user = &mut self.users[u as usize];
        let Some(x) = user.ipsec.as_mut() else { return };
        x.spare_pending = false;
        let waiting = std::mem::take(&mut x.refresh_waiting);
        match result {
            Ok(a) if a.len() == 1 => self.take_spare(u, a[0]),
            Ok(_) => {}
            Err(e) => {
                self.stats.counters.ipsec_fresh_ports_failed += 1;
                let e = format!("cannot bind a fresh port for the next SA renewal: {e}");
                self.ipsec_say_once("spare_port", &e);
            }
        }
        if waiting {
            self.register(now, u, RegKind::Refresh);
        }
    }

    fn take_spare(&mut self, u: u32, a: SocketAddr) {
        let user = &mut self.users[u as usize];
        let Some(x) = user.ipsec.as_mut() else { return };
        // A kept pair's client-port SAs and policies outlive its socket: a new pair on the
        // same port would meet them (EEXIST). Ask for another port, a few times.
        let clash = x.replaced.iter().any(|r| {
            r.sas
                .iter()
                .any(|sa| sa.src == a.ip() && sa.sport == a.port())
        });
        if clash && x.spare_clashes < 3 {
            x.spare_clashes += 1;
            self.bind_spare(u);
            return;
        }
        x.spare_clashes = 0;
        x.gen = x.gen.wrapping_add(1);
        let (plain, s, gen) = (x.plain as usize, self.locals[x.s as usize], x.gen);
        user.reg.set_next_security(Side {
            addr: a.ip(),
            port_c: a.port(),
            port_s: s.port(),
            spi_c: ue_spi(gen, a.port()),
            spi_s: ue_spi(gen, s.port()),
        });
        self.locals[plain] = a;
        self.answerer.set_local(plain as u32, a);
        if let Some(d) = self.sock_dest.get_mut(plain) {
            *d = None;
        }
        // A renewal's REGISTER is a protected one: its Via names the server port.
        self.via_hosts[plain] = s.to_string();
    }

    /// A renewal's REGISTER got its 200 (TS 33.203 §7.4): its SAs are in force, its client
    /// socket is the UE's, and the pair it replaced is looked at now and every 64·T1 after
    /// (see [`UeSockets`]).
    fn renewed(&mut self, u: u32) {
        let user = &mut self.users[u as usize];
        let Some(x) = user.ipsec.as_mut() else { return };
        let Some(new) = x.renewal.take() else { return };
        let Some(old) = x.sas.replace(new) else {
            return;
        };
        std::mem::swap(&mut x.plain, &mut x.c);
        user.sock = x.c;
        x.plain_held = true;
        x.replaced.push(Replaced {
            id: x.gen,
            sas: old.clone(),
            seen: None,
            counted: false,
        });
        self.stats.counters.ipsec_sa_renewals += 1;
        let id = x.gen;
        self.ipsec_out.push_back(IpsecAction::ReadUse {
            user: u,
            id,
            sas: old,
        });
    }

    /// Whether user `u`'s refresh waits for a port to offer a renewal: `plain` still holds the
    /// unprotected socket (the first refresh) or the client socket of the pair replaced last
    /// (refreshes closer than 64·T1), or is being bound afresh. [`LoadCore::spare_bound`]
    /// starts the refresh then, with or without one.
    fn refresh_waits_for_spare(&mut self, u: u32) -> bool {
        let user = &mut self.users[u as usize];
        let can_renew = user.reg.security().is_some_and(|s| s.can_renew());
        let Some(x) = user.ipsec.as_mut() else {
            return false;
        };
        if x.sas.is_none() || can_renew || !(x.plain_held || x.spare_pending) {
            return false;
        }
        x.plain_held = false;
        x.refresh_waiting = true;
        self.bind_spare(u);
        true
    }

    /// The [`Timer::RetireSas`] of replaced pair `id`: the old client socket is bound afresh
    /// if it still waits, and the pair's use is read.
    fn retire_sas(&mut self, u: u32, id: u16) {
        let Some(x) = self.users[u as usize].ipsec.as_mut() else {
            return;
        };
        if x.plain_held && x.gen == id && x.sas.is_some() {
            x.plain_held = false;
            self.bind_spare(u);
        }
        let Some(x) = self.users[u as usize].ipsec.as_mut() else {
            return;
        };
        if let Some(r) = x.replaced.iter().find(|r| r.id == id) {
            self.ipsec_out.push_back(IpsecAction::ReadUse {
                user: u,
                id,
                sas: r.sas.clone(),
            });
        }
    }

    /// What the inbound SAs of user `u`'s replaced pair `id` have carried
    /// ([`IpsecAction::ReadUse`]): the first reading is where use is counted from; a later
    /// one that shows nothing new takes the pair away, one that does keeps it 64·T1 more.
    /// A pair whose counters cannot be read is taken away.
    pub fn handle_sa_use(
        &mut self,
        now: Instant,
        u: u32,
        id: u16,
        packets: Result<u64, crate::ipsec::xfrm::XfrmError>,
    ) {
        let later = now + self.cfg.timers.t1 * 64;
        let Some(x) = self
            .users
            .get_mut(u as usize)
            .and_then(|user| user.ipsec.as_mut())
        else {
            return;
        };
        let Some(i) = x.replaced.iter().position(|r| r.id == id) else {
            return;
        };
        let r = &mut x.replaced[i];
        let keep = match (&packets, r.seen) {
            (Ok(n), None) => {
                r.seen = Some(*n);
                true
            }
            (Ok(n), Some(seen)) if *n > seen => {
                r.seen = Some(*n);
                if !std::mem::replace(&mut r.counted, true) {
                    self.stats.counters.ipsec_sa_replaced_in_use += 1;
                }
                true
            }
            _ => false,
        };
        if keep {
            self.arm(later, Timer::RetireSas(u, id));
            return;
        }
        let r = x.replaced.swap_remove(i);
        self.ipsec_out.push_back(IpsecAction::Remove {
            user: u,
            sas: r.sas,
            last: false,
        });
        if let Err(e) = packets {
            self.ipsec_say_once("sa_use", &e.to_string());
        }
    }

    /// Shows an IPsec failure's message the first time its kind occurs in this worker; the
    /// counters hold the rest.
    fn ipsec_say_once(&mut self, kind: &str, msg: &str) {
        if self.ipsec_said.insert(kind.to_string()) {
            tracing::warn!("--ipsec: {msg} (further failures of this kind are only counted)");
        }
    }

    /// User `u` is done with its SAs (de-registered, or its registration failed): the worker
    /// takes them away, and the UE's next attempt would start unprotected.
    fn release_sas(&mut self, u: u32) {
        let user = &mut self.users[u as usize];
        let Some(x) = user.ipsec.as_mut() else { return };
        let replaced = std::mem::take(&mut x.replaced).into_iter().map(|r| r.sas);
        let renewal = x.renewal.take();
        let in_force = x.sas.take();
        for (sas, last) in replaced
            .chain(renewal)
            .map(|s| (s, false))
            .chain(in_force.map(|s| (s, true)))
        {
            self.ipsec_out
                .push_back(IpsecAction::Remove { user: u, sas, last });
        }
        x.plain_held = false;
        for i in [x.c, x.plain] {
            if let Some(d) = self.sock_dest.get_mut(i as usize) {
                *d = None;
            }
        }
        user.sock = x.plain;
    }

    fn via(&self, src: u32, key: Key) -> String {
        via_line(
            self.cfg.transport.via(),
            &self.via_hosts[src as usize],
            &self.ids,
            key,
        )
    }

    /// Starts a client transaction for `request` (already holding branch `key`'s Via).
    fn start_txn(
        &mut self,
        now: Instant,
        key: Key,
        src: u32,
        request: Vec<u8>,
        method: Method,
        owner: Owner,
    ) -> Key {
        let kind = if method == Method::Invite {
            Kind::Invite
        } else {
            Kind::NonInvite
        };
        let ct = ClientTransaction::new(kind, now, self.cfg.transport.reliable(), self.cfg.timers);
        // Every request of ours goes to the outbound proxy (the answerer's BYEs are its own).
        let dest = self.dest_of(src);
        self.send(src, dest, transport::copy(&request));
        let inserted = self.txns.insert(Txn {
            ct,
            request,
            src,
            dest,
            owner,
            method,
            ack: None,
            armed: None,
        });
        debug_assert_eq!(inserted, key);
        self.rearm_txn(key);
        key
    }

    fn rearm_txn(&mut self, key: Key) {
        let Some(t) = self.txns.get_mut(key) else {
            return;
        };
        let Some(d) = t.ct.deadline() else { return };
        if t.armed.is_none_or(|a| d < a) {
            t.armed = Some(d);
            self.arm(d, Timer::Txn(key));
        }
    }

    // ---------------------------------------------------------------- timers

    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        while let Some((at, t)) = self.timers.pop_due(now) {
            self.fire(now, at, t);
        }
        self.answerer.handle_timeout(now);
        if let Some(m) = &mut self.media {
            m.engine.handle_timeout(now);
            self.media_events();
        }
    }

    fn note_lag(&mut self, now: Instant, at: Instant) {
        let lag = now.saturating_duration_since(at);
        Delays::record(&mut self.stats.delays.sched_lag, lag);
        if lag > Duration::from_millis(10) {
            self.stats.counters.late_actions += 1;
        }
    }

    fn fire(&mut self, now: Instant, at: Instant, t: Timer) {
        match t {
            Timer::Txn(k) => self.on_txn_timer(now, at, k),
            Timer::NextReg => {
                self.note_lag(now, at);
                self.next_registration(now, at)
            }
            Timer::NextArrival(gen) => {
                if gen == self.arrival_gen {
                    self.next_arrivals(now)
                }
            }
            Timer::RateChange => {
                if self.pending_rate.is_some_and(|(at, _)| at <= now) {
                    self.apply_pending_rate();
                    self.next_arrivals(now);
                }
            }
            Timer::Reg(u) => self.reg_timer(now, at, u),
            Timer::Dereg(u, gen) => {
                if self.users[u as usize].gen == gen {
                    self.register(now, u, RegKind::Deregister);
                }
            }
            Timer::Call(k) => self.call_timer(now, at, k),
            Timer::PhaseEnd => {
                if self.phase == Phase::Calling {
                    self.stop(now);
                }
            }
            Timer::DeregisterNow => self.start_deregistration(now),
            Timer::RetireSas(u, gen) => self.retire_sas(u, gen),
            Timer::DrainEnd => {
                if self.phase < Phase::Done {
                    self.book_open_work_at_end(now);
                    self.phase = Phase::Done;
                }
            }
        }
    }

    /// Books whatever is still open when the drain time runs out, so nothing vanishes from the
    /// books, and tells two causes apart: a request of ours still waiting for its final response
    /// (the target stopped answering: a dead or frozen peer shows here, even when its transaction
    /// timeout would outlive the run) from work we chose not to finish (a staggered BYE or
    /// de-registration never sent).
    fn book_open_work_at_end(&mut self, now: Instant) {
        // The streams of calls the drain gave up on end here, summarized like any other: their
        // silences may be exactly what the run was about.
        if let Some(m) = &mut self.media {
            m.engine.stop_all(now);
        }
        self.media_events();
        let mut calls_waiting = HashSet::new();
        let mut deregs_waiting = 0u64;
        for k in self.txns.keys() {
            let Some(t) = self.txns.get(k) else { continue };
            if !matches!(t.ct.state, State::Calling | State::Proceeding) {
                continue;
            }
            match t.owner {
                Owner::Invite(c) | Owner::Bye(c) => {
                    calls_waiting.insert(c);
                }
                Owner::Register(u) if self.users[u as usize].reg.kind() == RegKind::Deregister => {
                    deregs_waiting += 1
                }
                _ => {}
            }
        }
        for k in self.calls.keys() {
            if self.calls.get(k).is_some_and(|c| c.m.cancel_pending()) {
                calls_waiting.insert(k);
            }
        }
        let c = &mut self.stats.counters;
        let waiting = calls_waiting.len() as u64;
        c.calls_unanswered += waiting;
        c.calls_abandoned += self.calls.len() as u64 - waiting;
        let deregs_waiting = deregs_waiting.min(self.dereg_pending as u64);
        c.dereg_unanswered += deregs_waiting;
        c.dereg_abandoned += self.dereg_pending as u64 - deregs_waiting;
    }

    fn on_txn_timer(&mut self, now: Instant, at: Instant, k: Key) {
        let Some(t) = self.txns.get_mut(k) else {
            return;
        };
        if t.armed == Some(at) {
            t.armed = None;
        }
        match t.ct.on_timer(now) {
            TimerAction::Retransmit => {
                let (src, dest, data) = (t.src, t.dest, transport::copy(&t.request));
                self.stats.counters.retransmits += 1;
                self.stats.counters.msgs_sent += 1;
                self.out.push_back(Transmit { src, dest, data });
                self.rearm_txn(k);
            }
            TimerAction::Timeout => {
                let t = self.txns.remove(k).expect("present above");
                self.stats.count_timeout(t.method);
                self.txn_timed_out(now, t.owner);
            }
            TimerAction::Terminated => {
                self.txns.remove(k);
            }
            TimerAction::None => self.rearm_txn(k),
        }
    }

    // ---------------------------------------------------------------- phases

    fn enter_calling(&mut self, now: Instant) {
        self.phase = Phase::Calling;
        self.calling_span.0 = Some(now);
        self.phase_started = now;
        if let Some(d) = self.cfg.duration {
            self.calls_until = Some(now + d);
            self.arm(now + d, Timer::PhaseEnd);
        }
        // The first arrival is due at once.
        self.next_call_at = now;
        self.last_arrival = now;
        self.arrival_gen = self.arrival_gen.wrapping_add(1);
        if self.rate > 0.0 {
            self.arm(now, Timer::NextArrival(self.arrival_gen));
        }
        self.check_calling_done(now);
    }

    /// Ends the run: no new calls, end established ones, then de-register, all within `drain`.
    pub fn stop(&mut self, now: Instant) {
        if self.phase >= Phase::Draining {
            return;
        }
        self.phase = Phase::Draining;
        if self.calling_span.0.is_some() {
            self.calling_span.1 = Some(now);
        }
        let deadline = now + self.cfg.drain;
        self.drain_deadline = Some(deadline);
        self.arm(deadline, Timer::DrainEnd);
        self.arm(now + self.cfg.drain / 2, Timer::DeregisterNow);
        // Established calls are ended by BYE spread over at most a quarter of the drain time
        // (no slower than 2,000/s): 10,000 BYEs in one burst overflow the peer's socket buffer
        // and come back as retransmissions.
        let keys = self.calls.keys();
        let confirmed = keys
            .iter()
            .filter(|k| self.calls.get(**k).map(|c| c.m.state()) == Some(CallState::Confirmed))
            .count();
        let rate = (confirmed as f64 / (self.cfg.drain.as_secs_f64() / 4.0).max(0.001)).max(2000.0);
        let mut i = 0usize;
        for k in keys {
            let Some(c) = self.calls.get_mut(k) else {
                continue;
            };
            match c.m.state() {
                CallState::Confirmed => {
                    let at = now + Duration::from_secs_f64(i as f64 / rate);
                    i += 1;
                    if at <= now {
                        c.m.hang_up(now);
                    } else {
                        c.m.hang_up_at(at);
                    }
                }
                CallState::Early => c.m.cancel(now, &self.call_cfg),
                _ => continue,
            }
            self.drive_call(now, k, None);
        }
        // Answering-side calls are left to their callers (usually our own UAC side, which just
        // sent BYE); ending them here too would make BYEs cross.
        self.check_drained(now);
    }

    fn check_drained(&mut self, now: Instant) {
        if self.calls.is_empty() {
            self.start_deregistration(now);
        }
    }

    fn start_deregistration(&mut self, now: Instant) {
        if self.phase == Phase::Draining {
            self.phase = Phase::Deregistering;
            self.phase_started = now;
            let users: Vec<u32> = self.registered.clone();
            self.dereg_pending = users.len();
            // Spread de-registrations over at most half the drain time, no slower than reg_rate.
            let left = self
                .drain_deadline
                .map(|d| d.saturating_duration_since(now))
                .unwrap_or(self.cfg.drain);
            let rate =
                (users.len() as f64 / (left.as_secs_f64() / 2.0).max(0.001)).max(self.cfg.reg_rate);
            // Register state machine sends immediately; spacing is done by staggering starts.
            for (i, u) in users.into_iter().enumerate() {
                let at = now + Duration::from_secs_f64(i as f64 / rate);
                if at <= now {
                    self.register(now, u, RegKind::Deregister);
                } else {
                    // Whatever refresh or delayed answer was pending gives way to the
                    // de-registration.
                    let user = &mut self.users[u as usize];
                    user.gen += 1;
                    user.reg.cancel_deadline();
                    let gen = user.gen;
                    self.arm(at, Timer::Dereg(u, gen));
                }
            }
            self.check_deregistered();
        }
    }

    fn check_deregistered(&mut self) {
        if self.phase == Phase::Deregistering && self.dereg_pending == 0 && self.calls.is_empty() {
            self.phase = Phase::Done;
        }
    }

    fn check_calling_done(&mut self, now: Instant) {
        if self.phase != Phase::Calling {
            return;
        }
        let offered_all = self
            .cfg
            .max_total_calls
            .is_some_and(|m| self.calls_offered >= m);
        if offered_all && self.calls.is_empty() {
            self.stop(now);
        }
    }

    // ---------------------------------------------------------------- registration

    fn next_registration(&mut self, now: Instant, at: Instant) {
        if self.phase != Phase::Registering {
            return;
        }
        // Send every registration that is due (a late wake-up catches up, open loop).
        let interval = Duration::from_secs_f64(1.0 / self.cfg.reg_rate.max(0.001));
        let mut due = at;
        while self.next_reg_user < self.prereg_count && due <= now {
            let u = self.next_reg_user as u32;
            self.next_reg_user += 1;
            self.stats.counters.reg_attempts += 1;
            self.register(now, u, RegKind::Initial);
            due += interval;
        }
        if self.next_reg_user < self.prereg_count {
            self.arm(due, Timer::NextReg);
        }
    }

    fn register(&mut self, now: Instant, u: u32, kind: RegKind) {
        if kind == RegKind::Refresh && self.refresh_waits_for_spare(u) {
            return;
        }
        let user = &mut self.users[u as usize];
        if let Some(old) = user.txn.take() {
            // A refresh replacing a registration still in flight: forget the old transaction.
            self.txns.remove(old);
        }
        // ... and a renewal it was making: its SAs go (the machine forgets it in `start`).
        if let Some(sas) = user.ipsec.as_mut().and_then(|x| x.renewal.take()) {
            self.stats.counters.ipsec_sa_renewals_failed += 1;
            self.ipsec_out.push_back(IpsecAction::Remove {
                user: u,
                sas,
                last: false,
            });
        }
        user.gen += 1;
        user.reg.start(now, kind);
        match kind {
            RegKind::Refresh => self.stats.counters.rereg_attempts += 1,
            RegKind::Deregister => self.stats.counters.dereg_attempts += 1,
            RegKind::Initial => {}
        }
        self.drive_registration(now, u);
    }

    /// Carries out what user `u`'s registration asks for after an input: sends its REGISTER,
    /// books its outcomes, keeps a timer at its deadline.
    fn drive_registration(&mut self, now: Instant, u: u32) {
        loop {
            if self.users[u as usize].reg.has_transmit() {
                let key = self.txns.next_key();
                let user = &self.users[u as usize];
                // A renewal's REGISTER leaves its new client port, through its new SAs.
                let sock = match &user.ipsec {
                    Some(x) if x.renewal.is_some() => x.plain,
                    _ => user.sock,
                };
                let via = self.via(sock, key);
                let user = &mut self.users[u as usize];
                let contact = match &user.ipsec {
                    Some(x) if !user.reg.protected() => &x.first_contact,
                    _ => &user.contact,
                };
                let req = user
                    .reg
                    .poll_transmit(&self.reg_cfg, &user.auth, &via, contact)
                    .expect("has_transmit");
                user.txn = Some(key);
                self.start_txn(now, key, sock, req, Method::Register, Owner::Register(u));
            }
            match self.users[u as usize].reg.poll_event() {
                Some(e) => self.registration_event(now, u, e),
                None => break,
            }
        }
        let user = &mut self.users[u as usize];
        if let Some(d) = user.reg.poll_timeout() {
            if user.armed.is_none_or(|a| d < a) {
                user.armed = Some(d);
                self.arm(d, Timer::Reg(u));
            }
        }
    }

    fn reg_timer(&mut self, now: Instant, at: Instant, u: u32) {
        let user = &mut self.users[u as usize];
        if user.armed == Some(at) {
            user.armed = None;
        }
        user.reg.handle_timeout(now);
        self.drive_registration(now, u);
    }

    fn reg_response(&mut self, now: Instant, u: u32, msg: &Message<'_>, code: u16) {
        if code < 200 {
            return;
        }
        let user = &mut self.users[u as usize];
        user.txn = None;
        user.reg
            .handle_response(now, &self.reg_cfg, &mut user.auth, msg, code, &mut self.rng);
        self.drive_registration(now, u);
    }

    /// Books one outcome of user `u`'s registration and keeps the registered list and the
    /// run's phases in step with it.
    fn registration_event(&mut self, now: Instant, u: u32, e: registration::Event) {
        use registration::{Answered, Event};
        let c = &mut self.stats.counters;
        match e {
            Event::ExtraChallenge => c.reg_extra_challenges += 1,
            Event::Challenged(Answered::Resync) => c.reg_aka_resyncs += 1,
            Event::Challenged(Answered::MacFailure) => c.reg_aka_mac_failures += 1,
            Event::Challenged(Answered::Credentials) => {}
            Event::Registered { kind, elapsed, .. } | Event::Deregistered { kind, elapsed } => {
                match kind {
                    RegKind::Initial => {
                        c.reg_ok += 1;
                        Delays::record(&mut self.stats.delays.rrd, elapsed);
                    }
                    RegKind::Refresh => c.rereg_ok += 1,
                    RegKind::Deregister => c.dereg_ok += 1,
                }
                if matches!(e, Event::Deregistered { .. }) {
                    self.set_unregistered(u);
                } else {
                    if kind == RegKind::Initial {
                        self.note_associated(u);
                    }
                    let user = &mut self.users[u as usize];
                    if user.pos_registered.is_none() {
                        user.pos_registered = Some(self.registered.len() as u32);
                        self.registered.push(u);
                    }
                    if self.phase >= Phase::Deregistering {
                        // Registered after the run stopped: take it back at once.
                        self.dereg_pending += 1;
                        self.register(now, u, RegKind::Deregister);
                    }
                }
                self.reg_concluded(now, kind);
            }
            Event::Failed { kind, status } => {
                if status.is_none() && self.users[u as usize].reg.protected() {
                    c.ipsec_protected_unanswered += 1;
                }
                if self.users[u as usize]
                    .ipsec
                    .as_ref()
                    .is_some_and(|x| x.renewal.is_some())
                {
                    c.ipsec_sa_renewals_failed += 1;
                }
                match (kind, status) {
                    (RegKind::Initial, None) => c.reg_timeouts += 1,
                    (RegKind::Initial, Some(code)) => {
                        c.reg_failed += 1;
                        if matches!(code, 401 | 407 | 403) {
                            c.reg_auth_rejected += 1;
                        }
                    }
                    (RegKind::Refresh, _) => c.rereg_failed += 1,
                    (RegKind::Deregister, _) => c.dereg_failed += 1,
                }
                self.set_unregistered(u);
                self.reg_concluded(now, kind);
            }
            Event::RefreshDue => {
                if self.phase <= Phase::Calling {
                    self.register(now, u, RegKind::Refresh);
                }
            }
            Event::RetryDue => {
                if self.phase <= Phase::Calling {
                    self.register(now, u, RegKind::Initial);
                }
            }
            Event::FreshSecurityNeeded => {
                if let Some(x) = self.users[u as usize].ipsec.as_mut() {
                    // (a spare socket asked for is among the three)
                    x.spare_pending = false;
                    let socks = Box::new([x.plain, x.c, x.s]);
                    self.ipsec_out
                        .push_back(IpsecAction::Rebind { user: u, socks });
                }
            }
            Event::SecurityAgreed => {
                let sec = self.users[u as usize].reg.security();
                let renewal = sec.is_some_and(|s| s.renewal().is_some());
                if let Some(p) = sec.and_then(|s| s.to_make()) {
                    // reqids tie each SA to its policy: unique per address, as the client
                    // ports are (a renewal's is a fresh one).
                    let sas = Box::new(p.ue_sas(4 * p.ue.port_c as u32));
                    self.ipsec_out.push_back(IpsecAction::Install {
                        user: u,
                        sas,
                        renewal,
                    });
                }
            }
            Event::SecurityRenewed => self.renewed(u),
            Event::SecurityFailed { kind, why } => {
                use registration::SecurityFailure as F;
                match why {
                    F::NoSecurityServer => c.ipsec_no_security_server += 1,
                    F::Malformed => c.ipsec_malformed += 1,
                    F::AlgorithmRefused => c.ipsec_alg_refused += 1,
                    F::NoKeys => c.ipsec_no_keys += 1,
                    // Counted where the kernel's (or the worker's) answer came in.
                    F::SaInstall | F::FreshPorts => {}
                }
                match kind {
                    RegKind::Initial => c.reg_failed += 1,
                    // (a renewal's: TS 33.203 §7.4)
                    RegKind::Refresh => c.rereg_failed += 1,
                    RegKind::Deregister => c.dereg_failed += 1,
                }
                if let Some(e) = self.users[u as usize].reg.security_error() {
                    let e = e.to_string();
                    self.ipsec_say_once(&format!("{why:?}"), &e);
                }
                self.set_unregistered(u);
                self.reg_concluded(now, kind);
            }
        }
    }

    fn reg_concluded(&mut self, now: Instant, kind: RegKind) {
        match kind {
            RegKind::Initial if self.phase == Phase::Registering => {
                self.initial_pending = self.initial_pending.saturating_sub(1);
                if self.initial_pending == 0 {
                    self.enter_calling(now);
                }
            }
            RegKind::Deregister => {
                self.dereg_pending = self.dereg_pending.saturating_sub(1);
                self.check_deregistered();
            }
            _ => {}
        }
    }

    /// Takes user `u` off the registered list (its machine says why), and its SAs away.
    fn set_unregistered(&mut self, u: u32) {
        self.release_sas(u);
        let user = &mut self.users[u as usize];
        if let Some(pos) = user.pos_registered.take() {
            let last = *self.registered.last().expect("user is in the list");
            self.registered.swap_remove(pos as usize);
            if last != u {
                self.users[last as usize].pos_registered = Some(pos);
            }
        }
    }

    /// Counts what an initial registration's P-Associated-URI says: missing altogether, how
    /// many identities, and whether the user's own IMPUs (sip:, and tel: when it has one) are
    /// among them (TS 24.229 §5.1.1.2: the network lists the implicitly registered set).
    fn note_associated(&mut self, u: u32) {
        let c = &mut self.stats.counters;
        let user = &self.users[u as usize];
        let associated = &user.reg.binding().associated;
        if associated.is_empty() {
            c.reg_no_associated_uri += 1;
            return;
        }
        c.reg_associated_uris += associated.len() as u64;
        let listed = |uri: &str| associated.iter().any(|a| a.eq_ignore_ascii_case(uri));
        if !listed(&user.uri()) || user.tel.as_deref().is_some_and(|t| !listed(t)) {
            c.reg_associated_missing_own += 1;
        }
    }

    /// The identities the network gave user `name` in P-Associated-URI, and the Path of its
    /// last 2xx to REGISTER (empty before one arrived).
    pub fn registration_of(&self, name: &str) -> Option<(&[String], &[String])> {
        let b = self.users[*self.user_by_name.get(name)? as usize]
            .reg
            .binding();
        Some((&b.associated, &b.path))
    }

    /// The P-Preferred-Identity user `u` puts in a request it originates (INVITE, MESSAGE), as
    /// TS 24.229 §5.1.2A.1 has the UE add it; P-Access-Network-Info comes from the configs.
    fn preferred_identity(&self, u: Option<u32>) -> Option<String> {
        let (pref, u) = (self.cfg.ims.preferred_identity?, u?);
        let user = &self.users[u as usize];
        let uri = match (pref, &user.tel) {
            (PreferredIdentity::Tel, Some(t)) => t.clone(),
            _ => user.uri(),
        };
        Some(format!("<{uri}>"))
    }

    // ---------------------------------------------------------------- calls (UAC)

    fn next_arrivals(&mut self, now: Instant) {
        if self.phase != Phase::Calling || self.rate <= 0.0 {
            return;
        }
        let mut due = self.next_call_at;
        // Start every attempt that is due: a late wake-up must not lower the offered rate.
        let mut placed = 0;
        while due <= now && placed < 10_000 && self.calls_until.is_none_or(|end| due < end) {
            if self.pending_rate.is_some_and(|(at, _)| due >= at) {
                // From here on the new rate's schedule applies (it re-arms its own timer).
                self.apply_pending_rate();
                if self.phase != Phase::Calling || self.rate <= 0.0 {
                    return;
                }
                due = self.next_call_at;
                continue;
            }
            if self
                .cfg
                .max_total_calls
                .is_some_and(|m| self.calls_offered >= m)
            {
                self.check_calling_done(now);
                return;
            }
            self.note_lag(now, due);
            self.calls_offered += 1;
            self.stats.counters.scenarios_offered += 1;
            self.last_arrival = due;
            let scenario = self.cfg.mix.pick(self.rng.random());
            self.start_scenario(now, due, scenario);
            placed += 1;
            due += self.arrival_gap();
        }
        self.next_call_at = due;
        // One arrival timer in flight: a new rate's schedule may have armed one already.
        self.arrival_gen = self.arrival_gen.wrapping_add(1);
        if self.calls_until.is_none_or(|end| due < end) {
            self.arm(due.max(now), Timer::NextArrival(self.arrival_gen));
        }
    }

    fn start_scenario(&mut self, now: Instant, due: Instant, scenario: Scenario) {
        match scenario {
            Scenario::Call => {
                self.stats.counters.calls_offered += 1;
                self.offer_call(now, due);
            }
            Scenario::Register => match self.pick_unregistered() {
                Some(u) => {
                    self.stats.counters.reg_attempts += 1;
                    self.register(now, u, RegKind::Initial);
                }
                None => self.stats.counters.scenarios_unplaced += 1,
            },
            Scenario::Reregister | Scenario::Deregister => {
                let n = self.registered.len();
                if n == 0 {
                    self.stats.counters.scenarios_unplaced += 1;
                    return;
                }
                let u = self.registered[self.rng.random_range(0..n)];
                let kind = if scenario == Scenario::Reregister {
                    RegKind::Refresh
                } else {
                    RegKind::Deregister
                };
                self.register(now, u, kind);
            }
            Scenario::Message => self.send_nit(now, Method::Message),
            Scenario::Options => self.send_nit(now, Method::Options),
        }
    }

    /// Two different registered users, uniformly: the caller (sender) and the callee.
    fn pick_pair(&mut self) -> Option<(u32, u32)> {
        let n = self.registered.len();
        if n < 2 {
            return None;
        }
        let a = self.rng.random_range(0..n);
        let mut b = self.rng.random_range(0..n - 1);
        if b >= a {
            b += 1;
        }
        Some((self.registered[a], self.registered[b]))
    }

    /// A user with no registration and none under way, for `register` attempts. Random probes
    /// keep this O(1) however large the population; when they miss, the attempt is unplaced
    /// (and counted), which only happens when nearly everyone is registered.
    fn pick_unregistered(&mut self) -> Option<u32> {
        if self.users.is_empty() || !self.cfg.register {
            return None;
        }
        for _ in 0..16 {
            let u = self.rng.random_range(0..self.users.len());
            let user = &self.users[u];
            let state = user.reg.state();
            if state != RegState::Registered && state != RegState::Pending && user.txn.is_none() {
                return Some(u as u32);
            }
        }
        None
    }

    fn arrival_gap(&mut self) -> Duration {
        let mean = 1.0 / self.rate.max(1e-9);
        let secs = match self.cfg.arrival {
            super::config::Arrival::Constant => mean,
            super::config::Arrival::Poisson => -mean * (1.0 - self.rng.random::<f64>()).ln(),
        };
        Duration::from_secs_f64(secs)
    }

    fn sample(&mut self, mean: Duration, dist: DurationDist) -> Duration {
        match dist {
            DurationDist::Fixed => mean,
            DurationDist::Exp => mean.mul_f64(-(1.0 - self.rng.random::<f64>()).ln().min(50.0)),
        }
    }

    fn offer_call(&mut self, now: Instant, _scheduled: Instant) {
        if self.calls.len() >= self.cfg.max_calls {
            self.stats.counters.calls_limited += 1;
            return;
        }
        let (caller, ruri, from, to) = if let Some((ruri, to)) = &self.fixed_ruri {
            let caller =
                (!self.users.is_empty()).then(|| self.rng.random_range(0..self.users.len()) as u32);
            let from = match caller {
                Some(u) => self.users[u as usize].reg.aor().clone(),
                None => self.anonymous.0.clone(),
            };
            (caller, ruri.clone(), from, to.clone())
        } else {
            let Some((ua, ub)) = self.pick_pair() else {
                self.stats.counters.calls_unplaced += 1;
                return;
            };
            let callee = self.users[ub as usize].uri();
            (
                Some(ua),
                callee.as_str().into(),
                self.users[ua as usize].reg.aor().clone(),
                format!("<{callee}>").into(),
            )
        };
        let key = self.calls.next_key();
        let call_id = self.ids.call_id('c', key, self.locals[0].ip());
        let sock = caller.map_or(0, |u| self.users[u as usize].sock);
        let routes = caller
            .map(|u| self.users[u as usize].reg.binding().service_route.clone())
            .unwrap_or_default();
        let contact = match caller {
            Some(u) => self.users[u as usize].contact.clone(),
            None => self.anonymous.1.clone(),
        };
        // Drawn whoever hangs up, so that the run's random sequence does not depend on it.
        let hold = self.sample(self.cfg.hold, self.cfg.hold_dist);
        let caller_hangs_up = self.cfg.bye_by == ByeBy::Caller || self.cfg.fixed_ruri.is_some();
        let setup = CallSetup {
            ruri,
            from,
            to,
            local_tag: ids::token(&mut self.rng),
            call_id,
            routes,
            contact,
            preferred_identity: self.preferred_identity(caller),
            hold: caller_hangs_up.then_some(hold),
        };
        // SRD is measured from the INVITE's transmission, not the scheduled instant; the lag
        // between them is reported on its own (sched_lag).
        let mut m = OutgoingCall::new(setup, now);
        m.start(now, &self.call_cfg);
        let inserted = self.calls.insert(Call {
            m,
            caller,
            sock,
            invite_txn: None,
            ack_branch: None,
            armed: None,
            remote_media: None,
        });
        debug_assert_eq!(inserted, key);
        self.stats.counters.calls_attempted += 1;
        self.drive_call(now, key, None);
    }

    /// Carries out what call `k` asks for after an input: sends its requests (starting the
    /// INVITE and BYE transactions; `acked` is the INVITE transaction a non-2xx ACK belongs
    /// to), books its events, keeps a timer at its deadline, and forgets it once it is over.
    fn drive_call(&mut self, now: Instant, k: Key, acked: Option<Key>) {
        loop {
            let Some(c) = self.calls.get_mut(k) else {
                return;
            };
            if c.m.has_transmit() {
                let tk = self.txns.next_key();
                let (ids, host, tp) = (
                    &self.ids,
                    &self.via_hosts[c.sock as usize],
                    self.cfg.transport.via(),
                );
                let req = c.m.poll_transmit(&self.call_cfg, |b| {
                    let key = match b {
                        Branch::Transaction => tk,
                        Branch::Ack => ack_key(tk),
                    };
                    ViaLine {
                        transport: tp,
                        host,
                        ids,
                        key,
                    }
                });
                let sock = c.sock;
                let Some(req) = req else { continue };
                match req.out {
                    Out::Invite | Out::Reinvite => {
                        c.invite_txn = Some(tk);
                        self.start_txn(now, tk, sock, req.data, Method::Invite, Owner::Invite(k));
                    }
                    Out::Bye => {
                        self.start_txn(now, tk, sock, req.data, Method::Bye, Owner::Bye(k));
                    }
                    Out::Ack => {
                        c.ack_branch = Some(ack_key(tk));
                        self.send(sock, self.dest_of(sock), req.data)
                    }
                    Out::Cancel { retransmit: false } => {
                        self.send(sock, self.dest_of(sock), req.data)
                    }
                    Out::Cancel { retransmit: true } => {
                        self.stats.counters.retransmits += 1;
                        self.send(sock, self.dest_of(sock), req.data);
                    }
                    Out::AckFailure => {
                        self.send(sock, self.dest_of(sock), transport::copy(&req.data));
                        if let Some(t) = acked.and_then(|t| self.txns.get_mut(t)) {
                            t.ack = Some(req.data);
                        }
                    }
                }
                continue;
            }
            match c.m.poll_event() {
                Some(e) => self.call_event(now, k, e),
                None => break,
            }
        }
        let c = self.calls.get_mut(k).expect("checked in the loop");
        if c.m.state() == CallState::Ended {
            return self.end_call(now, k);
        }
        if let Some(d) = c.m.poll_timeout() {
            if c.armed.is_none_or(|a| d < a) {
                c.armed = Some(d);
                self.arm(d, Timer::Call(k));
            }
        }
    }

    fn call_timer(&mut self, now: Instant, at: Instant, k: Key) {
        let Some(c) = self.calls.get_mut(k) else {
            return;
        };
        if c.armed == Some(at) {
            c.armed = None;
        }
        c.m.handle_timeout(now, &self.call_cfg);
        self.drive_call(now, k, None);
    }

    /// A response to call `k`'s INVITE transaction `invite` or to its BYE.
    fn call_response(
        &mut self,
        now: Instant,
        k: Key,
        invite: Option<Key>,
        msg: &Message<'_>,
        code: u16,
    ) {
        let Some(c) = self.calls.get_mut(k) else {
            return;
        };
        if invite.is_some() && code >= 200 {
            c.invite_txn = None;
        }
        if let Some(m) = &mut self.media {
            let cseq = msg.cseq().filter(|(_, m)| *m == "INVITE").map(|(n, _)| n);
            // The first 2xx's answer (our stream starts with the ACK), or the answer to our
            // hold or resume (the far end's stream from now on).
            let first = c.remote_media.is_none() && c.m.state() != CallState::Confirmed;
            let reinvite = c.remote_media.is_some() && cseq == c.m.reinvite_cseq();
            if (200..300).contains(&code) && cseq.is_some() && (first || reinvite) {
                let unusable = &mut self.stats.counters.media_sdp_unusable;
                if let Some(r) = m.far_audio(msg, unusable, false) {
                    c.remote_media = Some(r);
                    if reinvite {
                        m.engine.update(now, ssrc_of(c.m.call_id(), 0), r);
                    }
                }
            }
        }
        let auth = c.caller.map(|u| &mut self.users[u as usize].auth);
        c.m.handle_response(now, &self.call_cfg, auth, msg, code, &mut self.rng);
        self.drive_call(now, k, invite);
    }

    /// Books one event of call `k`.
    fn call_event(&mut self, now: Instant, k: Key, e: caller::Event) {
        use caller::{Ending, Event};
        let (c, d) = (&mut self.stats.counters, &mut self.stats.delays);
        match e {
            Event::RequestDelay(t) => Delays::record(&mut d.srd, t),
            Event::Ringing => c.calls_ringing += 1,
            Event::Answered { delay } => {
                c.calls_answered += 1;
                Delays::record(&mut d.answer, delay);
                // The caller's stream starts with the ACK, which leaves now.
                if let (Some(m), Some(call)) = (&mut self.media, self.calls.get(k)) {
                    if let Some(r) = call.remote_media {
                        let cid = call.m.call_id();
                        m.engine
                            .start(now, ssrc_of(cid, 0), Some(ssrc_of(cid, 1)), r);
                    }
                }
                if self.phase >= Phase::Draining {
                    if let Some(call) = self.calls.get_mut(k) {
                        call.m.hang_up(now);
                    }
                }
            }
            Event::HungUp { held } => {
                Delays::record(&mut d.sdt, held);
                self.stop_caller_media(now, k);
            }
            Event::Failed {
                status: None,
                cancelling: _,
            } => {
                c.calls_timeout += 1;
                c.invite_ineffective += 1;
            }
            Event::Failed {
                status: Some(code),
                cancelling,
            } => {
                match code {
                    487 if cancelling => c.calls_cancelled += 1,
                    300..=399 => {
                        c.invite_3xx += 1;
                        c.calls_failed += 1;
                    }
                    _ => c.calls_failed += 1,
                }
                match code {
                    480 | 486 | 600 | 603 => c.invite_seer_effective += 1,
                    408 | 500 | 503 | 504 => c.invite_ineffective += 1,
                    _ => {}
                }
            }
            Event::Ended { how, disconnect } => {
                if let Some(t) = disconnect {
                    Delays::record(&mut d.sdd, t);
                }
                match how {
                    Ending::Completed => c.calls_completed += 1,
                    Ending::NoDialog => c.calls_bye_481 += 1,
                    Ending::ByeFailed => c.calls_bye_failed += 1,
                }
            }
            Event::CancelTimedOut => self.stats.count_timeout("CANCEL"),
            Event::Reinvited { direction } => match direction {
                Direction::SendRecv => c.call_resumes += 1,
                _ => c.call_holds += 1,
            },
            Event::ReinviteFailed { status } => {
                c.reinvites_failed += 1;
                if status.is_none() {
                    self.stats.count_timeout("INVITE");
                }
            }
        }
    }

    // ---------------------------------------------------------------- MESSAGE / OPTIONS

    /// Starts a MESSAGE or OPTIONS scenario between two registered users, routed like a call
    /// (the sender's Service-Route, then the P-CSCF), answered by our own answering side.
    fn send_nit(&mut self, now: Instant, method: Method) {
        let Some((ua, ub)) = self.pick_pair() else {
            self.stats.counters.scenarios_unplaced += 1;
            return;
        };
        let key = self.nits.next_key();
        let m = NitClient::new(
            method,
            self.users[ub as usize].uri(),
            self.users[ua as usize].reg.aor().to_string(),
            ids::token(&mut self.rng),
            self.ids.call_id('m', key, self.locals[0].ip()),
            self.preferred_identity(Some(ua)),
            now,
        );
        let inserted = self.nits.insert(Nit {
            m,
            sender: ua,
            sock: self.users[ua as usize].sock,
        });
        debug_assert_eq!(inserted, key);
        let c = &mut self.stats.counters;
        match method {
            Method::Message => c.msg_attempts += 1,
            _ => c.opt_attempts += 1,
        }
        self.drive_nit(now, key);
    }

    /// Sends what MESSAGE/OPTIONS `k` asks for, and books and forgets it once it is done.
    fn drive_nit(&mut self, now: Instant, k: Key) {
        let Some(r) = self.nits.get_mut(k) else {
            return;
        };
        if r.m.has_transmit() {
            let tk = self.txns.next_key();
            let via = format!(
                "SIP/2.0/{} {};branch={};rport",
                self.cfg.transport.via(),
                self.via_hosts[r.sock as usize],
                self.ids.branch(tk)
            );
            let routes = &self.users[r.sender as usize].reg.binding().service_route;
            if let Some(req) = r.m.poll_transmit(&self.nit_cfg, &via, routes) {
                let (sock, method) = (r.sock, r.m.method());
                self.start_txn(now, tk, sock, req, method, Owner::Nit(k));
            }
        }
        let Some(r) = self.nits.get_mut(k) else {
            return;
        };
        let method = r.m.method();
        let event = r.m.poll_event();
        if r.m.is_done() {
            self.nits.remove(k);
        }
        let (c, d) = (&mut self.stats.counters, &mut self.stats.delays);
        let message = method == Method::Message;
        match event {
            Some(nit::Event::Final { status, elapsed }) if (200..300).contains(&status) => {
                if message {
                    c.msg_ok += 1;
                    Delays::record(&mut d.message, elapsed);
                } else {
                    c.opt_ok += 1;
                    Delays::record(&mut d.options, elapsed);
                }
            }
            Some(nit::Event::Final { .. }) if message => c.msg_failed += 1,
            Some(nit::Event::Final { .. }) => c.opt_failed += 1,
            Some(nit::Event::TimedOut) if message => c.msg_timeouts += 1,
            Some(nit::Event::TimedOut) => c.opt_timeouts += 1,
            None => {}
        }
    }

    fn nit_response(&mut self, now: Instant, k: Key, msg: &Message<'_>, code: u16) {
        let Some(r) = self.nits.get_mut(k) else {
            return;
        };
        let auth = &mut self.users[r.sender as usize].auth;
        r.m.handle_response(now, auth, msg, code, &mut self.rng);
        self.drive_nit(now, k);
    }

    /// Media ends at BYE (ours, or the far end's).
    fn stop_caller_media(&mut self, now: Instant, k: Key) {
        if let (Some(m), Some(c)) = (&mut self.media, self.calls.get(k)) {
            if c.remote_media.is_some() {
                m.engine.stop(now, ssrc_of(c.m.call_id(), 0));
            }
        }
    }

    fn end_call(&mut self, now: Instant, k: Key) {
        self.stop_caller_media(now, k);
        if let Some(c) = self.calls.remove(k) {
            if let Some(t) = c.invite_txn {
                // keep the INVITE transaction only if it is absorbing retransmissions
                if self
                    .txns
                    .get(t)
                    .is_some_and(|t| t.ct.state != State::Completed)
                {
                    self.txns.remove(t);
                }
            }
        }
        if self.phase == Phase::Draining {
            self.check_drained(now);
        } else if self.phase == Phase::Deregistering {
            self.check_deregistered();
        } else {
            self.check_calling_done(now);
        }
    }

    fn txn_timed_out(&mut self, now: Instant, owner: Owner) {
        match owner {
            Owner::Register(u) => {
                let user = &mut self.users[u as usize];
                user.txn = None;
                user.reg.handle_txn_timeout(now, &self.reg_cfg);
                self.drive_registration(now, u);
            }
            Owner::Invite(k) => {
                if let Some(c) = self.calls.get_mut(k) {
                    c.invite_txn = None;
                    // Once the call is up, the INVITE that timed out is a re-INVITE of ours.
                    let reinvite = !matches!(
                        c.m.state(),
                        CallState::Inviting | CallState::Early | CallState::Cancelling
                    );
                    c.m.handle_txn_timeout(now, Method::Invite, reinvite);
                    self.drive_call(now, k, None);
                }
            }
            Owner::Bye(k) => match self.calls.get_mut(k) {
                Some(c) => {
                    c.m.handle_txn_timeout(now, Method::Bye, false);
                    self.drive_call(now, k, None);
                }
                // The callee's BYE crossed ours and ended the call; ours still failed.
                None => {
                    self.stats.counters.calls_bye_failed += 1;
                    self.end_call(now, k);
                }
            },
            Owner::Nit(k) => {
                if let Some(r) = self.nits.get_mut(k) {
                    r.m.handle_txn_timeout();
                    self.drive_nit(now, k);
                }
            }
        }
    }

    // ---------------------------------------------------------------- input

    /// Feeds one received message, from `from`, that reached our socket `socket`. Never fails:
    /// malformed input is counted and dropped. Responses are matched by branch alone, whatever
    /// socket they arrive on.
    pub fn handle_input(&mut self, now: Instant, data: &[u8], from: SocketAddr, socket: u32) {
        self.last_now = self.last_now.max(now);
        if let Some(m) = self
            .media
            .as_mut()
            .filter(|m| m.sock == socket || m.rtcp_sock == socket)
        {
            return m.engine.handle_input(now, data, from);
        }
        let from = Peer {
            addr: from,
            sock: socket.min(self.locals.len() as u32 - 1),
        };
        self.stats.counters.msgs_received += 1;
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(e) => {
                self.stats.counters.malformed += 1;
                *self.stats.malformed.entry(e.kind).or_default() += 1;
                return;
            }
        };
        match msg.status() {
            Some(code) => self.handle_response(now, &msg, code),
            None => self.handle_request(now, &msg, from),
        }
    }

    fn handle_response(&mut self, now: Instant, msg: &Message<'_>, code: u16) {
        let (cseq_method, branch) = (
            msg.cseq().map(|(_, m)| m).unwrap_or(""),
            msg.top_via().and_then(|v| v.branch).unwrap_or(""),
        );
        // Responses to the answerer's BYEs carry its branches, which ours never are.
        if self.answerer.handle_response(now, msg) {
            return;
        }
        // CANCEL shares the INVITE's branch: route by CSeq method first.
        if cseq_method == "CANCEL" {
            if let Some(tk) = self.ids.parse_branch(branch) {
                let owner = self.txns.get(tk).map(|t| match t.owner {
                    Owner::Invite(k) => Some(k),
                    _ => None,
                });
                if let Some(Some(k)) = owner {
                    if let Some(c) = self.calls.get_mut(k) {
                        c.m.handle_cancel_response(now, code);
                    }
                }
            }
            self.stats.count_status(Method::Cancel, code);
            return;
        }
        let Some(tk) = self.ids.parse_branch(branch) else {
            return self.stray_response(now, msg, code);
        };
        let Some(t) = self.txns.get_mut(tk) else {
            return self.stray_response(now, msg, code);
        };
        if t.method.as_str() != cseq_method {
            self.stats.counters.stray_responses += 1;
            return;
        }
        match t.ct.on_response(now, code) {
            ResponseAction::Absorb => {
                self.stats.counters.duplicates_received += 1;
                if let Some(ack) = t.ack.as_deref().map(transport::copy) {
                    let (src, dest) = (t.src, t.dest);
                    self.send(src, dest, ack);
                }
                return;
            }
            ResponseAction::Deliver => {}
        }
        if code >= 200 && t.method != Method::Invite {
            // Completed non-INVITE transactions only absorb retransmitted responses (Timer K);
            // their request is never sent again, so its bytes need not linger for 5 s.
            transport::recycle(std::mem::take(&mut t.request));
        }
        let method = t.method;
        if code > 100 {
            self.stats.count_status(method, code);
        }
        let owner = t.owner;
        let done = t.ct.state == State::Terminated;
        if done {
            self.txns.remove(tk);
        } else {
            self.rearm_txn(tk);
        }
        match owner {
            Owner::Register(u) => self.reg_response(now, u, msg, code),
            Owner::Invite(k) => self.call_response(now, k, Some(tk), msg, code),
            Owner::Bye(k) => self.call_response(now, k, None, msg, code),
            Owner::Nit(k) => self.nit_response(now, k, msg, code),
        }
    }

    /// A response with no live transaction: a retransmitted 2xx to INVITE gets its ACK again; a
    /// provisional for a transaction we ran (our branch, whatever became of it) arrived after its
    /// final response, which proxies with several processes do, and is no stray.
    fn stray_response(&mut self, _now: Instant, msg: &Message<'_>, code: u16) {
        if code < 200 {
            let branch = msg.top_via().and_then(|v| v.branch).unwrap_or("");
            if self.ids.parse_branch(branch).is_some() {
                self.stats.counters.late_provisionals += 1;
                return;
            }
        }
        if let (200..=299, Some((cseq, "INVITE"))) = (code, msg.cseq()) {
            if let Some(('c', k)) = self.ids.parse_call_id(msg.call_id()) {
                let again = self.calls.get_mut(k).and_then(|c| {
                    let via = ViaLine {
                        transport: self.cfg.transport.via(),
                        host: &self.via_hosts[c.sock as usize],
                        ids: &self.ids,
                        key: c.ack_branch?,
                    };
                    Some((c.m.ack_again(via, cseq)?, c.sock))
                });
                if let Some((ack, sock)) = again {
                    self.stats.counters.duplicates_received += 1;
                    self.send(sock, self.dest_of(sock), ack);
                    return;
                }
            }
        }
        self.stats.counters.stray_responses += 1;
    }

    fn handle_request(&mut self, now: Instant, msg: &Message<'_>, from: Peer) {
        let method = msg.method().unwrap_or("");
        // Requests inside a call we placed (callee hangs up, re-INVITE, ...). Caller and callee
        // may both be ours and share the Call-ID: the To tag tells which side is addressed.
        if let Some(('c', k)) = self.ids.parse_call_id(msg.call_id()) {
            let to_tag = msg.to_tag();
            match self.calls.get(k) {
                Some(c) if to_tag == Some(c.m.local_tag()) => {
                    return self.uac_in_dialog(now, k, msg, method, from);
                }
                None if to_tag.is_some()
                    && method == "BYE"
                    && !self.answerer.has_call(msg.call_id()) =>
                {
                    // Our call is over already: a retransmission of a BYE we answered.
                    self.stats.counters.duplicates_received += 1;
                    return self.respond(msg, from, 200);
                }
                _ => {}
            }
        }
        // Everything else is for the answering side: our users as callees (with their own
        // Contact when the Request-URI names one), or stateless answers.
        let contact = match method {
            "INVITE" => msg
                .request_uri()
                .and_then(uri_user)
                .and_then(|n| self.user_by_name.get(n))
                .map(|&u| &*self.users[u as usize].contact),
            _ => None,
        };
        self.answerer.handle_request(now, msg, from, contact);
        self.callee_media(now, msg, method);
    }

    /// Answers a request inside one of our calls that no machine keeps state for.
    fn respond(&mut self, req: &Message<'_>, to: Peer, code: u16) {
        let data = Writer::stateless_response(req, code, None, None, &self.cfg.user_agent);
        self.send(to.sock, to.addr, data);
    }

    fn uac_in_dialog(&mut self, now: Instant, k: Key, msg: &Message<'_>, method: &str, from: Peer) {
        let Some(c) = self.calls.get_mut(k) else {
            return self.respond(msg, from, 481);
        };
        if method == "INVITE" {
            // The callee holds or resumes: our answer mirrors its offer, and so does our stream.
            let caller = c.caller;
            let contact = match caller {
                Some(u) => self.users[u as usize].contact.clone(),
                None => self.anonymous.1.clone(),
            };
            let data = Writer::reinvite_ok(
                msg,
                &contact,
                &self.cfg.user_agent,
                &self.locals[0].ip().to_string(),
                1,
                &self.offer_audio,
            );
            self.stats.counters.reinvites_answered += 1;
            self.send(from.sock, from.addr, data);
            if let (Some(m), Some(c)) = (&mut self.media, self.calls.get_mut(k)) {
                let unusable = &mut self.stats.counters.media_sdp_unusable;
                if let Some(r) = m.far_audio(msg, unusable, true) {
                    if c.remote_media.is_some() {
                        c.remote_media = Some(r);
                        m.engine.update(now, ssrc_of(c.m.call_id(), 0), r);
                    }
                }
            }
            return;
        }
        if let Some(code) = c.m.handle_request(method) {
            self.respond(msg, from, code);
        }
        self.drive_call(now, k, None);
    }
}

impl crate::io::Endpoint for LoadCore {
    fn handle_input(&mut self, now: Instant, data: &[u8], from: SocketAddr, socket: u32) {
        LoadCore::handle_input(self, now, data, from, socket)
    }
    fn handle_timeout(&mut self, now: Instant) {
        LoadCore::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        LoadCore::poll_transmit(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        LoadCore::poll_timeout(self)
    }
    fn stream_unreadable(&mut self, e: &crate::sip::ParseError) {
        self.stats.counters.malformed += 1;
        *self.stats.malformed.entry(e.kind).or_default() += 1;
    }
}

/// Books the answerer's counts and samples in the load engine's terms.
fn add_answerer_stats(into: &mut Interval, a: &AnswererStats) {
    let (c, x) = (&mut into.counters, &a.counters);
    c.uas_invites += x.invites;
    c.uas_answered += x.calls_answered;
    c.uas_byes += x.byes_received;
    c.uas_cancels += x.cancels_received;
    c.uas_refused_overload += x.calls_refused_overload;
    c.uas_refused_too_large += x.calls_refused_too_large;
    c.duplicates_received += x.duplicates;
    c.reinvites_answered += x.reinvites;
    c.retransmits += x.retransmits;
    c.msgs_sent += x.msgs_sent;
    c.stray_responses += x.stray_responses;
    // Status counts only for what happened: a zero entry would show up in reports.
    let mut status = |method: Method, code: Option<u16>, n: u64| {
        if n > 0 {
            into.status.add_to(StatusKey { method, code }, n);
        }
    };
    status(Method::Ack, None, x.ack_timeouts);
    status(Method::Bye, None, x.bye_timeouts);
    for (code, n) in &a.bye_responses {
        status(Method::Bye, Some(*code), *n);
    }
    for d in &a.sdt {
        Delays::record(&mut into.delays.sdt, *d);
    }
    for d in &a.sdd {
        Delays::record(&mut into.delays.sdd, *d);
    }
}

/// The Contact a UE registers and calls from: its address, then `+sip.instance` (RFC 5626) when
/// the user has an instance ID and `+g.3gpp.icsi-ref` (TS 24.229 §7.9.2, the URN percent-encoded)
/// when an ICSI is configured.
fn ue_contact(id: &Identity, host: &str, transport: &str, ims: &ImsOptions) -> String {
    let mut c = format!("<sip:{}@{host};transport={transport}>", id.user());
    if let Some(inst) = &id.instance {
        c += &format!(";+sip.instance=\"<{inst}>\"");
    }
    if let Some(icsi) = &ims.icsi_ref {
        c += &format!(";+g.3gpp.icsi-ref=\"{}\"", percent_encode_urn(icsi));
    }
    c
}

/// `urn:urn-7:3gpp-service.ims.icsi.mmtel` → `urn%3Aurn-7%3A3gpp-service.ims.icsi.mmtel`; a value
/// that already holds `%` escapes is taken as encoded.
fn percent_encode_urn(v: &str) -> String {
    if v.contains('%') {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 8);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

/// The user part of our own contact, for tests.
pub fn contact_user(contact: &str) -> Option<&str> {
    uri_user(name_addr_uri(strip_tag(contact)))
}
