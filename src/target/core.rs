//! The embedded target, sans IO: a registrar that challenges with MD5 digest (or, in AKA mode,
//! with Digest AKAv1-MD5 vectors it makes itself, as an S-CSCF would get them from an HSS),
//! a stateless proxy
//! that routes requests to registered users (Record-Route, Service-Route, loose routing), and an
//! answering user agent for every Request-URI that is not a registered user (like `sipp -sn uas`).
//!
//! It exists so that `imsload` runs out of the box and so that the load engine can be tested
//! end to end in process; it is not a P-CSCF. The answering side is [`Answerer`], the same
//! INVITE/BYE server the load engine's callees use: one implementation of a UAS in the project,
//! and bounded in what a flooding peer can make it hold.

use crate::hex;
use crate::sip::aka::{self, AkaKeys, AuthVector};
use crate::sip::auth::{self, verify};
use crate::sip::builder::Writer;
use crate::sip::message::{name_addr_uri, split_list, uri_user, Via};
use crate::sip::transport::Transmit;
use crate::sip::{HeaderName, Message};
use crate::ua::answerer::{Answerer, AnswererConfig, AnswererCounters};
use crate::ua::Peer;
use md5::{Digest, Md5};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct TargetConfig {
    pub domain: String,
    /// Password of user `u`: `%u` is replaced by the user name (the load side's default rule).
    pub password_rule: String,
    /// Longest registration granted, seconds.
    pub max_expires: u32,
    /// Nonces older than this are answered with `stale=true`.
    pub nonce_ttl: Duration,
    /// The answering side's settings (ring time, timers, how much it may hold).
    pub answerer: AnswererConfig,
    /// Challenge with AKAv1-MD5 instead of MD5 for the users it has keys for.
    pub aka: Option<TargetAka>,
    /// Seeds the nonce secret, AKA's RAND and the answerer's tags, so that a simulated run
    /// (tests, fuzz targets) replays byte for byte. `None`: from the OS, as a target on a
    /// network must be (a predictable nonce secret lets anyone forge nonces).
    pub seed: Option<u64>,
}

/// AKA subscriber data of the embedded target: what an HSS would hold.
#[derive(Clone, Debug, Default)]
pub struct TargetAka {
    /// Keys for any user not listed in `users` (how lab HSSs are provisioned). `None`: only
    /// the listed users get AKA, the others MD5.
    pub all: Option<AkaKeys>,
    /// Per private identity (the Authorization username): keys and the last SQN issued.
    pub users: HashMap<String, (AkaKeys, u64)>,
    /// SQN of the first vector for a user with no SQN of its own is `initial_sqn + sqn_step`.
    pub initial_sqn: u64,
    /// SQN increment per vector: 32 leaves the 5 IND bits of TS 33.102 Annex C alone.
    pub sqn_step: u64,
}

impl TargetAka {
    pub fn all(keys: AkaKeys) -> TargetAka {
        TargetAka {
            all: Some(keys),
            sqn_step: 32,
            ..TargetAka::default()
        }
    }
}

/// What the target remembers per AKA subscriber: SQN and the vector of its last challenge.
#[derive(Clone)]
struct AkaSub {
    keys: AkaKeys,
    sqn: u64,
    pending: Option<(String, AuthVector)>,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            domain: "ims.local".into(),
            password_rule: "pw_%u".into(),
            max_expires: 3600,
            nonce_ttl: Duration::from_secs(300),
            answerer: AnswererConfig::default(),
            aka: None,
            seed: None,
        }
    }
}

#[derive(Clone)]
struct Binding {
    contact: String,
    dest: SocketAddr,
    expires_at: Instant,
}

/// Counters a `serve` run prints.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TargetStats {
    pub registers: u64,
    pub challenges: u64,
    pub auth_failures: u64,
    /// AKA re-synchronisations accepted (valid AUTS received).
    pub aka_resyncs: u64,
    pub registered: u64,
    pub proxied_requests: u64,
    pub proxied_responses: u64,
    pub malformed: u64,
    /// Responses and relayed messages the kernel refused to send (a full buffer waits
    /// instead): lost before the wire. The first error of each kind is on stderr.
    pub send_errors: u64,
    /// Datagrams the kernel dropped at its socket for a full receive buffer (SO_RXQ_OVFL): the
    /// target did not keep up.
    pub rx_dropped: u64,
    /// Calls its answering side holds now (a gauge).
    pub answering_calls: u64,
    /// Calls over, remembered by Call-ID to absorb retransmissions (a gauge).
    pub lingering_calls: u64,
    /// Its answering side's counts (calls answered, BYEs, INVITEs refused with 503/513, ...).
    #[serde(flatten)]
    pub answerer: AnswererCounters,
}

#[derive(Clone)]
pub struct TargetCore {
    cfg: TargetConfig,
    local: SocketAddr,
    /// The host:port we put in Via, Record-Route and Service-Route.
    me: String,
    secret: u64,
    rng: SmallRng,
    epoch: Instant,
    location: HashMap<String, Binding>,
    aka: HashMap<String, AkaSub>,
    answerer: Answerer,
    out: VecDeque<Transmit>,
    stats: TargetStats,
}

impl TargetCore {
    pub fn new(cfg: TargetConfig, local: SocketAddr, now: Instant) -> TargetCore {
        let mut acfg = cfg.answerer.clone();
        // Nobody takes the samples here; only the counts are reported.
        acfg.record_delays = false;
        let mut rng = match cfg.seed {
            Some(s) => SmallRng::seed_from_u64(s),
            None => SmallRng::from_os_rng(),
        };
        let answerer = Answerer::new(acfg, &[local], rng.random(), now);
        TargetCore {
            me: local.to_string(),
            secret: rng.random(),
            rng,
            epoch: now,
            location: HashMap::new(),
            aka: HashMap::new(),
            answerer,
            out: VecDeque::new(),
            stats: TargetStats::default(),
            cfg,
            local,
        }
    }

    pub fn local(&self) -> SocketAddr {
        self.local
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out
            .pop_front()
            .or_else(|| self.answerer.poll_transmit())
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.answerer.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.answerer.handle_timeout(now);
    }

    /// The counts so far (since the start), the answering side's included.
    pub fn stats(&self) -> TargetStats {
        TargetStats {
            answering_calls: self.answerer.calls() as u64,
            lingering_calls: self.answerer.lingering() as u64,
            answerer: self.answerer.counters().clone(),
            ..self.stats.clone()
        }
    }

    pub fn registered(&self, now: Instant) -> usize {
        self.location
            .values()
            .filter(|b| b.expires_at > now)
            .count()
    }

    pub fn handle_input(&mut self, now: Instant, data: &[u8], from: SocketAddr) {
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        if msg.status().is_some() {
            return self.on_response(now, &msg);
        }
        let method = msg.method().unwrap_or("");
        if method == "REGISTER" {
            return self.on_register(now, &msg, from);
        }
        let in_dialog = msg.to_tag().is_some();
        let routes_to_me = msg
            .header_values(HeaderName::Route)
            .next()
            .is_some_and(|r| self.is_me(name_addr_uri(r)));
        let ruri = msg.request_uri().unwrap_or("");
        // Where does this request go? A registered user's contact, a foreign host (in-dialog
        // request routed through us), or our own answering side.
        let dest = if in_dialog || method == "ACK" {
            if self.is_me(ruri) {
                None
            } else {
                host_port(ruri).map(|d| (ruri.to_string(), d))
            }
        } else {
            uri_user(ruri).and_then(|u| {
                self.location
                    .get(u)
                    .filter(|b| b.expires_at > now)
                    .map(|b| (b.contact.clone(), b.dest))
            })
        };
        match dest {
            Some((new_ruri, to)) => {
                let record_route = !in_dialog && method == "INVITE";
                let fwd =
                    self.forward_request(&msg, data, from, &new_ruri, record_route, routes_to_me);
                match fwd {
                    Some(bytes) => {
                        self.stats.proxied_requests += 1;
                        self.out.push_back(Transmit {
                            src: 0,
                            dest: to,
                            data: bytes,
                        });
                    }
                    None => self.reply(&msg, from, 483, None),
                }
            }
            None => self.answerer.handle_request(
                now,
                &msg,
                Peer {
                    addr: from,
                    sock: 0,
                },
                None,
            ),
        }
    }

    fn is_me(&self, uri: &str) -> bool {
        let hp = uri
            .trim_start_matches("sip:")
            .trim_start_matches("sips:")
            .split([';', '>', '?'])
            .next()
            .unwrap_or("");
        let host = hp.rsplit('@').next().unwrap_or(hp);
        host == self.me || host == self.cfg.domain || host_port(uri) == Some(self.local)
    }

    fn reply(&mut self, req: &Message<'_>, to: SocketAddr, code: u16, extra: Option<String>) {
        let mut w = Writer::response_to(req, code, crate::sip::reason(code), Some("tgt"));
        if let Some(e) = extra {
            w.line(&e);
        }
        w.header("Server", "imsload-target");
        let data = w.finish(None, b"");
        self.out.push_back(Transmit {
            src: 0,
            dest: to,
            data,
        });
    }

    fn nonce(&self, now: Instant) -> String {
        let t = (now - self.epoch).as_millis() as u64;
        format!("{t:x}.{}", self.nonce_mac(t))
    }

    fn nonce_mac(&self, t: u64) -> String {
        let mut h = Md5::new();
        h.update(self.secret.to_le_bytes());
        h.update(t.to_le_bytes());
        hex::encode(&h.finalize()[..8])
    }

    /// `Some(true)` fresh, `Some(false)` ours but expired, `None` not ours.
    fn check_nonce(&self, now: Instant, nonce: &str) -> Option<bool> {
        let (t, mac) = nonce.split_once('.')?;
        let t = u64::from_str_radix(t, 16).ok()?;
        (mac == self.nonce_mac(t)).then(|| {
            let issued = self.epoch + Duration::from_millis(t);
            now.saturating_duration_since(issued) < self.cfg.nonce_ttl
        })
    }

    fn on_register(&mut self, now: Instant, msg: &Message<'_>, from: SocketAddr) {
        self.stats.registers += 1;
        let authz = msg.header(HeaderName::Authorization);
        if let Some(impi) = self.aka_user(msg, authz) {
            if let Some(user) = self.aka_register(msg, authz, &impi, from) {
                self.bind(now, msg, from, user);
            }
            return;
        }
        let realm = self.cfg.domain.clone();
        let nonce = authz.and_then(|a| {
            split_list(a.trim_start().trim_start_matches("Digest"))
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("nonce"))
                .map(|(_, v)| v.trim().trim_matches('"').to_string())
        });
        let fresh = nonce.as_deref().and_then(|n| self.check_nonce(now, n));
        let rule = self.cfg.password_rule.clone();
        let user = match (authz, nonce.as_deref(), fresh) {
            (Some(a), Some(n), Some(true)) => verify(a, "REGISTER", &realm, n, |u| {
                Some(rule.replace("%u", u).into_bytes())
            }),
            _ => None,
        };
        let Some(user) = user else {
            if authz.is_some() && fresh == Some(true) {
                self.stats.auth_failures += 1;
                // A wrong password gets a 403 after one challenge, as Kamailio's registrar
                // would answer a second wrong response with another 401; either way the UE
                // must count a failure, not loop.
                return self.reply(msg, from, 403, None);
            }
            self.stats.challenges += 1;
            let stale = if fresh == Some(false) {
                ", stale=true"
            } else {
                ""
            };
            let ch = format!(
                "WWW-Authenticate: Digest realm=\"{realm}\", nonce=\"{}\", qop=\"auth\", algorithm=MD5{stale}",
                self.nonce(now)
            );
            return self.reply(msg, from, 401, Some(ch));
        };
        self.bind(now, msg, from, user);
    }

    /// The private identity to run AKA for, when this REGISTER's user has AKA keys: the
    /// Authorization username, else (no Authorization) the To URI's `user@host`.
    fn aka_user(&self, msg: &Message<'_>, authz: Option<&str>) -> Option<String> {
        let cfg = self.cfg.aka.as_ref()?;
        let impi = match authz.and_then(|a| auth::param(a, "username")) {
            Some(u) => u,
            None => {
                let to = name_addr_uri(msg.header(HeaderName::To)?);
                to.trim_start_matches("sip:").split(';').next()?.to_string()
            }
        };
        (cfg.all.is_some() || cfg.users.contains_key(&impi)).then_some(impi)
    }

    /// AKA registrar (what an S-CSCF does with the HSS's vectors): challenge with a fresh
    /// vector, check the response against XRES, re-synchronise on `auts`, refuse an empty
    /// response (the UE found our MAC wrong). `Some(impi)` when the REGISTER is authorized.
    fn aka_register(
        &mut self,
        msg: &Message<'_>,
        authz: Option<&str>,
        impi: &str,
        from: SocketAddr,
    ) -> Option<String> {
        let realm = self.cfg.domain.clone();
        let cfg = self.cfg.aka.as_ref().expect("checked by aka_user");
        let step = cfg.sqn_step.max(1);
        let sub = self.aka.entry(impi.to_string()).or_insert_with(|| {
            let (keys, sqn) = cfg
                .users
                .get(impi)
                .copied()
                .or(cfg.all.map(|k| (k, cfg.initial_sqn)))
                .expect("checked by aka_user");
            AkaSub {
                keys,
                sqn,
                pending: None,
            }
        });
        let nonce = authz
            .and_then(|a| auth::param(a, "nonce"))
            .unwrap_or_default();
        let pending = sub
            .pending
            .as_ref()
            .filter(|(n, _)| !nonce.is_empty() && *n == nonce)
            .map(|(_, v)| *v);
        let mut resynced = false;
        if let (Some(a), Some(v)) = (authz, pending) {
            if let Some(auts) = auth::param(a, "auts") {
                // TS 33.102 §6.3.5: a valid AUTS sets our SQN to the UE's; a forged one ends it.
                match aka::decode_auts(&auts).and_then(|x| aka::resync(&sub.keys, &v.rand, &x)) {
                    Ok(sqn_ms) => {
                        sub.sqn = sqn_ms;
                        sub.pending = None;
                        resynced = true;
                    }
                    Err(_) => {
                        sub.pending = None;
                        self.stats.auth_failures += 1;
                        self.reply(msg, from, 403, None);
                        return None;
                    }
                }
            } else {
                sub.pending = None;
                let xres = v.xres;
                let ok = verify(a, "REGISTER", &realm, &nonce, |_| Some(xres.to_vec()));
                if ok.is_some() {
                    return Some(impi.to_string());
                }
                // A wrong RES, or an empty response from a UE whose MAC check failed: as an
                // S-CSCF does (TS 24.229 §5.4.1.2.3), no second challenge, 403.
                self.stats.auth_failures += 1;
                self.reply(msg, from, 403, None);
                return None;
            }
        }
        if resynced {
            self.stats.aka_resyncs += 1;
        }
        sub.sqn = (sub.sqn + step) & aka::SQN_MASK;
        let v = aka::generate(&sub.keys, self.rng.random(), sub.sqn);
        let n = v.nonce();
        sub.pending = Some((n.clone(), v));
        self.stats.challenges += 1;
        let ch = format!(
            "WWW-Authenticate: Digest realm=\"{realm}\", nonce=\"{n}\", qop=\"auth\", algorithm=AKAv1-MD5"
        );
        self.reply(msg, from, 401, Some(ch));
        None
    }

    /// Accepts an authorized REGISTER: binds (or removes) the To user's contact and answers 200.
    fn bind(&mut self, now: Instant, msg: &Message<'_>, from: SocketAddr, user: String) {
        let to_user = msg
            .header(HeaderName::To)
            .map(name_addr_uri)
            .and_then(uri_user)
            .unwrap_or(&user)
            .to_string();
        let expires = msg.expires().unwrap_or(3600).min(self.cfg.max_expires);
        let contact = msg.contact_uri().unwrap_or("").to_string();
        let mut w = Writer::response_to(msg, 200, "OK", Some("tgt"));
        if expires == 0 || contact.is_empty() {
            self.location.remove(&to_user);
        } else {
            w.header("Contact", format_args!("<{contact}>;expires={expires}"));
            w.header("Service-Route", format_args!("<sip:orig@{};lr>", self.me));
            w.header(
                "P-Associated-URI",
                format_args!("<sip:{to_user}@{}>", self.cfg.domain),
            );
            self.location.insert(
                to_user,
                Binding {
                    contact,
                    dest: from,
                    expires_at: now + Duration::from_secs(expires as u64),
                },
            );
        }
        w.header("Server", "imsload-target");
        let data = w.finish(None, b"");
        self.stats.registered = self.location.len() as u64;
        self.out.push_back(Transmit {
            src: 0,
            dest: from,
            data,
        });
    }

    /// Stateless forwarding (RFC 3261 §16.11): new Request-URI, our Via on top (branch derived
    /// from the incoming one so retransmissions keep it), Route entries naming us removed,
    /// Max-Forwards decremented, Record-Route added for dialog-creating requests.
    fn forward_request(
        &self,
        msg: &Message<'_>,
        data: &[u8],
        from: SocketAddr,
        new_ruri: &str,
        record_route: bool,
        _routes_to_me: bool,
    ) -> Option<Vec<u8>> {
        let method = msg.method()?;
        let top = msg.top_via()?;
        let mut h = Md5::new();
        h.update(top.branch.unwrap_or("").as_bytes());
        h.update(method.trim_start_matches("ACK").as_bytes());
        let branch = format!("z9hG4bKtg{}", hex::encode(&h.finalize()[..8]));
        let mut w = Writer::request(method, new_ruri);
        w.header(
            "Via",
            format_args!("SIP/2.0/UDP {};branch={branch}", self.me),
        );
        if record_route {
            w.header("Record-Route", format_args!("<sip:{};lr>", self.me));
        }
        let mut first_via = true;
        for (name, value) in msg.raw_headers() {
            match HeaderName::classify(name.as_bytes()) {
                HeaderName::Via if first_via => {
                    first_via = false;
                    // RFC 3581: tell the next hop where the request really came from.
                    let mut v = value.to_string();
                    if top.rport == Some("") {
                        v = v.replacen(
                            ";rport",
                            &format!(";received={};rport={}", from.ip(), from.port()),
                            1,
                        );
                    }
                    w.header("Via", v);
                }
                HeaderName::Route => {
                    let keep: Vec<&str> = split_list(value)
                        .filter(|r| !self.is_me(name_addr_uri(r)))
                        .collect();
                    if !keep.is_empty() {
                        w.header("Route", keep.join(", "));
                    }
                }
                HeaderName::MaxForwards => {
                    let n: u32 = value.trim().parse().unwrap_or(70);
                    if n == 0 {
                        return None;
                    }
                    w.header("Max-Forwards", n - 1);
                }
                HeaderName::ContentLength => {}
                HeaderName::ContentType => w.header("Content-Type", value),
                _ => w.header(name, value),
            }
        }
        let _ = data;
        Some(w.finish(None, msg.body()))
    }

    fn on_response(&mut self, now: Instant, msg: &Message<'_>) {
        let mine = msg.top_via().is_some_and(|v| {
            v.sent_by == self.me && v.branch.is_some_and(|b| b.starts_with("z9hG4bKtg"))
        });
        if !mine {
            // A response to our answering side's own request (its BYE), or nobody's.
            self.answerer.handle_response(now, msg);
            return;
        }
        // Drop our Via, send to the next one's received/rport or sent-by.
        let mut vias = msg.header_values(HeaderName::Via);
        vias.next();
        let Some(next) = vias.next().and_then(Via::parse) else {
            return;
        };
        let host = next.received.unwrap_or_else(|| {
            next.sent_by
                .rsplit_once(':')
                .map_or(next.sent_by, |(h, _)| h)
        });
        let port = next
            .rport
            .filter(|p| !p.is_empty())
            .or_else(|| next.sent_by.rsplit_once(':').map(|(_, p)| p))
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(5060);
        let Ok(ip) = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() else {
            return;
        };
        let mut w = Writer::response(
            msg.status().unwrap_or(500),
            match msg.start {
                crate::sip::message::StartLine::Response { reason, .. } => reason,
                _ => "",
            },
        );
        let mut dropped = false;
        for (name, value) in msg.raw_headers() {
            match HeaderName::classify(name.as_bytes()) {
                HeaderName::Via if !dropped => {
                    dropped = true;
                    let rest: Vec<&str> = split_list(value).skip(1).collect();
                    if !rest.is_empty() {
                        w.header("Via", rest.join(", "));
                    }
                }
                HeaderName::ContentLength => {}
                _ => w.header(name, value),
            }
        }
        self.stats.proxied_responses += 1;
        self.out.push_back(Transmit {
            src: 0,
            dest: SocketAddr::new(ip, port),
            data: w.finish(None, msg.body()),
        });
    }
}

impl crate::io::Endpoint for TargetCore {
    fn handle_input(&mut self, now: Instant, data: &[u8], from: SocketAddr, _socket: u32) {
        TargetCore::handle_input(self, now, data, from)
    }
    fn handle_timeout(&mut self, now: Instant) {
        TargetCore::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        TargetCore::poll_transmit(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        TargetCore::poll_timeout(self)
    }
    fn stream_unreadable(&mut self, _e: &crate::sip::ParseError) {
        self.stats.malformed += 1;
    }
}

/// `sip:user@127.0.0.1:5070;transport=udp` → 127.0.0.1:5070 (IP literals only: no DNS here).
pub fn host_port(uri: &str) -> Option<SocketAddr> {
    let u = name_addr_uri(uri);
    let rest = u.strip_prefix("sip:").or_else(|| u.strip_prefix("sips:"))?;
    let hp = rest.rsplit('@').next()?;
    let hp = hp.split([';', '?']).next()?;
    if let Ok(a) = hp.parse::<SocketAddr>() {
        return Some(a);
    }
    let ip: std::net::IpAddr = hp.trim_matches(['[', ']']).parse().ok()?;
    Some(SocketAddr::new(ip, 5060))
}
