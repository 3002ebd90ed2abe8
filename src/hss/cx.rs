//! The HSS's Diameter peer and Cx logic, sans-IO: a [`Hss`] holds the subscriptions and their
//! state (SQN, assigned S-CSCF, registration state); a [`Connection`] frames one peer's byte
//! stream and turns requests into answers.
//!
//! Base: CER/CEA, DWR/DWA, DPR/DPA (RFC 6733 §5). Cx (TS 29.228 §6, TS 29.229 §6): UAR/UAA,
//! MAR/MAA (Digest-AKAv1-MD5 vectors from Milenage, re-synchronisation from RAND ‖ AUTS),
//! SAR/SAA (User-Data with a minimal IMS subscription), LIR/LIA.

use std::net::IpAddr;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::subscribers::Subscribers;
use super::vectors::{self, AuthVector, SQN_MASK, SQN_STEP};
use crate::diameter::{
    self as d, cmd, code, command_name, hflags, result, Avp, Message, APP_COMMON, APP_CX,
    APP_RELAY, VENDOR_3GPP,
};

const V3: Option<u32> = Some(VENDOR_3GPP);
/// The authentication scheme names of TS 29.229 §6.3.9.
pub const SCHEME_AKAV1_MD5: &str = "Digest-AKAv1-MD5";
/// At most this many vectors per MAA, whatever SIP-Number-Auth-Items asks.
pub const MAX_VECTORS: u32 = 5;

/// Identity of this HSS as a Diameter peer.
#[derive(Debug, Clone)]
pub struct HssConfig {
    pub origin_host: String,
    pub origin_realm: String,
    pub product_name: String,
}

impl HssConfig {
    /// `hss.<realm>` in `realm`.
    pub fn for_realm(realm: &str) -> HssConfig {
        HssConfig {
            origin_host: format!("hss.{realm}"),
            origin_realm: realm.to_string(),
            product_name: "imshss".to_string(),
        }
    }
}

/// Per-subscription state the HSS keeps between requests.
#[derive(Debug, Clone, Default)]
struct SubState {
    /// The S-CSCF assigned (MAR stores it, SAR confirms it, de-registration clears it).
    scscf: Option<String>,
    registered: bool,
    /// RAND of the last vector handed out (for an AUTS that comes without its RAND).
    last_rand: Option<[u8; 16]>,
}

/// Counters, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HssStats {
    pub uar: u64,
    pub mar: u64,
    pub sar: u64,
    pub lir: u64,
    pub vectors: u64,
    pub resyncs: u64,
    pub resync_failures: u64,
}

/// The HSS: subscriptions and their state. One per process, shared by all connections.
pub struct Hss {
    pub cfg: HssConfig,
    pub subs: Subscribers,
    state: Vec<SubState>,
    rng: StdRng,
    origin_state_id: u32,
    pub stats: HssStats,
}

/// What handling one request produced.
#[derive(Debug, Default)]
pub struct Handled {
    pub answer: Option<Message>,
    /// Close the connection after sending the answer (DPA, failed CER).
    pub close: bool,
    /// A line for the log.
    pub log: Option<String>,
    /// Set when a CER succeeded: the peer's Origin-Host.
    pub peer_open: Option<String>,
}

impl Hss {
    /// `seed` makes RAND reproducible (tests); `None` seeds from the OS.
    pub fn new(cfg: HssConfig, subs: Subscribers, seed: Option<u64>) -> Hss {
        let state = vec![SubState::default(); subs.len()];
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        let origin_state_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Hss {
            cfg,
            subs,
            state,
            rng,
            origin_state_id,
            stats: HssStats::default(),
        }
    }

    /// The S-CSCF currently assigned to the subscription of `impu`.
    pub fn assigned_scscf(&self, impu: &str) -> Option<&str> {
        let i = self.subs.index_of_impu(impu)?;
        self.state[i].scscf.as_deref()
    }
    /// True while the subscription of `impu` is registered (SAR REGISTRATION seen).
    pub fn is_registered(&self, impu: &str) -> bool {
        self.subs
            .index_of_impu(impu)
            .is_some_and(|i| self.state[i].registered)
    }
    /// SQN_HE of the subscription of `impi`.
    pub fn sqn(&self, impi: &str) -> Option<u64> {
        Some(self.subs.list[self.subs.index_of_impi(impi)?].sqn)
    }

    /// Handles one message from a peer. `local_ip` is our address on that connection (for
    /// Host-IP-Address in the CEA).
    pub fn handle(&mut self, req: &Message, local_ip: IpAddr) -> Handled {
        if !req.is_request() {
            // we send no requests; an answer (e.g. to nothing) is ignored
            return Handled {
                log: Some(format!(
                    "ignored {} from peer",
                    command_name(req.command, false)
                )),
                ..Handled::default()
            };
        }
        match (req.app_id, req.command) {
            (_, cmd::CAPABILITIES_EXCHANGE) => self.cer(req, local_ip),
            (_, cmd::DEVICE_WATCHDOG) => Handled {
                answer: Some(self.base_answer(req, result::SUCCESS)),
                ..Handled::default()
            },
            (_, cmd::DISCONNECT_PEER) => Handled {
                answer: Some(self.base_answer(req, result::SUCCESS)),
                close: true,
                log: Some(format!(
                    "DPR from {}",
                    req.str_avp(code::ORIGIN_HOST, None).unwrap_or("?")
                )),
                ..Handled::default()
            },
            (APP_CX, cmd::USER_AUTHORIZATION) => self.uar(req),
            (APP_CX, cmd::MULTIMEDIA_AUTH) => self.mar(req),
            (APP_CX, cmd::SERVER_ASSIGNMENT) => self.sar(req),
            (APP_CX, cmd::LOCATION_INFO) => self.lir(req),
            (APP_CX, _) => self.protocol_error(req, result::COMMAND_UNSUPPORTED),
            _ => self.protocol_error(req, result::APPLICATION_UNSUPPORTED),
        }
    }

    fn identity_avps(&self, m: &mut Message) {
        m.push(Avp::bytes(code::ORIGIN_HOST, self.cfg.origin_host.as_str()))
            .push(Avp::bytes(
                code::ORIGIN_REALM,
                self.cfg.origin_realm.as_str(),
            ));
    }

    /// Answer with Result-Code, Origin-Host, Origin-Realm (DWA, DPA, …).
    fn base_answer(&self, req: &Message, rc: u32) -> Message {
        let mut a = Message::answer_to(req);
        a.push(Avp::u32(code::RESULT_CODE, rc));
        self.identity_avps(&mut a);
        if req.command == cmd::DEVICE_WATCHDOG {
            a.push(Avp::u32(code::ORIGIN_STATE_ID, self.origin_state_id));
        }
        a
    }

    /// An answer with the E bit (RFC 6733 §7.2) for protocol errors.
    fn protocol_error(&self, req: &Message, rc: u32) -> Handled {
        let mut a = Message::answer_to(req);
        a.flags |= hflags::ERROR;
        if let Some(sid) = req.find(code::SESSION_ID, None) {
            a.push(sid.clone());
        }
        a.push(Avp::u32(code::RESULT_CODE, rc));
        self.identity_avps(&mut a);
        Handled {
            answer: Some(a),
            log: Some(format!(
                "{} (app {}): answered {rc}",
                command_name(req.command, true),
                req.app_id
            )),
            ..Handled::default()
        }
    }

    fn cer(&mut self, req: &Message, local_ip: IpAddr) -> Handled {
        let peer = req
            .str_avp(code::ORIGIN_HOST, None)
            .unwrap_or("?")
            .to_string();
        // does the peer do Cx (directly, in a Vendor-Specific-Application-Id, or as a relay)?
        let mut apps: Vec<u32> = req
            .find_all(code::AUTH_APPLICATION_ID, None)
            .filter_map(Avp::as_u32)
            .collect();
        for vsai in req.find_all(code::VENDOR_SPECIFIC_APPLICATION_ID, None) {
            if let Ok(kids) = vsai.children() {
                apps.extend(
                    kids.iter()
                        .filter(|a| a.is(code::AUTH_APPLICATION_ID, None))
                        .filter_map(Avp::as_u32),
                );
            }
        }
        let common = apps.iter().any(|&a| a == APP_CX || a == APP_RELAY);
        let rc = if common {
            result::SUCCESS
        } else {
            result::NO_COMMON_APPLICATION
        };
        let mut a = Message::answer_to(req);
        a.app_id = APP_COMMON;
        a.push(Avp::u32(code::RESULT_CODE, rc));
        self.identity_avps(&mut a);
        a.push(Avp::address(code::HOST_IP_ADDRESS, local_ip))
            .push(Avp::u32(code::VENDOR_ID, VENDOR_3GPP))
            .push(Avp::bytes(
                code::PRODUCT_NAME,
                self.cfg.product_name.as_str(),
            ))
            .push(Avp::u32(code::ORIGIN_STATE_ID, self.origin_state_id))
            .push(Avp::u32(code::SUPPORTED_VENDOR_ID, VENDOR_3GPP))
            .push(Avp::u32(code::AUTH_APPLICATION_ID, APP_CX))
            .push(Avp::grouped(
                code::VENDOR_SPECIFIC_APPLICATION_ID,
                &[
                    Avp::u32(code::VENDOR_ID, VENDOR_3GPP),
                    Avp::u32(code::AUTH_APPLICATION_ID, APP_CX),
                ],
            ))
            .push(Avp::u32(code::FIRMWARE_REVISION, 1));
        // Product-Name and Firmware-Revision carry no M flag (RFC 6733 §5.3.1)
        for avp in a.avps.iter_mut() {
            if avp.code == code::PRODUCT_NAME || avp.code == code::FIRMWARE_REVISION {
                avp.flags &= !d::aflags::MANDATORY;
            }
        }
        Handled {
            answer: Some(a),
            close: !common,
            log: Some(if common {
                format!("CER from {peer}: open (Cx)")
            } else {
                format!("CER from {peer}: no common application ({apps:?}), closing")
            }),
            peer_open: common.then_some(peer),
        }
    }

    /// Cx answer skeleton: Session-Id first, Vendor-Specific-Application-Id, Auth-Session-State
    /// NO_STATE_MAINTAINED, Origin-Host/Realm.
    fn cx_answer(&self, req: &Message) -> Message {
        let mut a = Message::answer_to(req);
        if let Some(sid) = req.find(code::SESSION_ID, None) {
            a.push(sid.clone());
        }
        a.push(Avp::grouped(
            code::VENDOR_SPECIFIC_APPLICATION_ID,
            &[
                Avp::u32(code::VENDOR_ID, VENDOR_3GPP),
                Avp::u32(code::AUTH_APPLICATION_ID, APP_CX),
            ],
        ))
        .push(Avp::u32(code::AUTH_SESSION_STATE, 1));
        self.identity_avps(&mut a);
        a
    }

    fn with_result(mut a: Message, rc: u32) -> Message {
        a.push(Avp::u32(code::RESULT_CODE, rc));
        a
    }

    fn with_experimental(mut a: Message, erc: u32) -> Message {
        a.push(Avp::grouped(
            code::EXPERIMENTAL_RESULT,
            &[
                Avp::u32(code::VENDOR_ID, VENDOR_3GPP),
                Avp::u32(code::EXPERIMENTAL_RESULT_CODE, erc),
            ],
        ));
        a
    }

    fn server_capabilities() -> Avp {
        // no mandatory or optional capability: the I-CSCF may pick any S-CSCF it knows
        Avp::grouped_3gpp(
            code::SERVER_CAPABILITIES,
            &[Avp::u32_3gpp(code::MANDATORY_CAPABILITY, 0)],
        )
    }

    /// Looks up IMPI and IMPU and checks that they belong together. Err: the experimental
    /// result to answer.
    fn lookup(&self, impi: Option<&str>, impu: Option<&str>) -> Result<usize, u32> {
        let by_impu = impu.map(|u| self.subs.index_of_impu(u));
        let by_impi = impi.map(|i| self.subs.index_of_impi(i));
        match (by_impi, by_impu) {
            (Some(None), _) | (_, Some(None)) | (None, None) => Err(result::ERROR_USER_UNKNOWN),
            (Some(Some(a)), Some(Some(b))) if a != b => Err(result::ERROR_IDENTITIES_DONT_MATCH),
            (Some(Some(a)), _) | (_, Some(Some(a))) => Ok(a),
        }
    }

    fn uar(&mut self, req: &Message) -> Handled {
        self.stats.uar += 1;
        let impi = req.str_avp(code::USER_NAME, None);
        let impu = req.str_avp(code::PUBLIC_IDENTITY, V3);
        let auth_type = req.u32_avp(code::USER_AUTHORIZATION_TYPE, V3).unwrap_or(0);
        let base = self.cx_answer(req);
        let (a, what) = match self.lookup(impi, impu) {
            Err(e) => (Self::with_experimental(base, e), format!("error {e}")),
            Ok(i) => {
                let st = &self.state[i];
                match (auth_type, &st.scscf) {
                    // REGISTRATION / DE_REGISTRATION with an S-CSCF assigned
                    (0 | 1, Some(name)) => {
                        let mut a = if auth_type == 1 {
                            Self::with_result(base, result::SUCCESS)
                        } else {
                            Self::with_experimental(base, result::SUBSEQUENT_REGISTRATION)
                        };
                        a.push(Avp::bytes_3gpp(code::SERVER_NAME, name.as_str()));
                        (a, format!("Server-Name {name}"))
                    }
                    (1, None) => (
                        Self::with_experimental(base, result::ERROR_IDENTITY_NOT_REGISTERED),
                        "not registered".to_string(),
                    ),
                    // first registration, or REGISTRATION_AND_CAPABILITIES
                    _ => {
                        let mut a = Self::with_experimental(base, result::FIRST_REGISTRATION);
                        a.push(Self::server_capabilities());
                        (a, "Server-Capabilities".to_string())
                    }
                }
            }
        };
        Handled {
            answer: Some(a),
            log: Some(format!(
                "UAR {} {} type {auth_type}: {what}",
                impi.unwrap_or("-"),
                impu.unwrap_or("-")
            )),
            ..Handled::default()
        }
    }

    fn next_vector(&mut self, i: usize) -> AuthVector {
        let s = &mut self.subs.list[i];
        s.sqn = (s.sqn + SQN_STEP) & SQN_MASK;
        let mut rand = [0u8; 16];
        self.rng.fill_bytes(&mut rand);
        self.state[i].last_rand = Some(rand);
        self.stats.vectors += 1;
        vectors::generate(&s.k, &s.opc, &s.amf, s.sqn, rand)
    }

    fn mar(&mut self, req: &Message) -> Handled {
        self.stats.mar += 1;
        let impi = req.str_avp(code::USER_NAME, None);
        let impu = req.str_avp(code::PUBLIC_IDENTITY, V3);
        let log_id = format!("MAR {} {}", impi.unwrap_or("-"), impu.unwrap_or("-"));
        let base = self.cx_answer(req);
        let i = match self.lookup(impi, impu) {
            Ok(i) => i,
            Err(e) => {
                return Handled {
                    answer: Some(Self::with_experimental(base, e)),
                    log: Some(format!("{log_id}: error {e}")),
                    ..Handled::default()
                }
            }
        };
        let item = req
            .find(code::SIP_AUTH_DATA_ITEM, V3)
            .and_then(|a| a.children().ok())
            .unwrap_or_default();
        let scheme = item
            .iter()
            .find(|a| a.is(code::SIP_AUTHENTICATION_SCHEME, V3))
            .and_then(Avp::as_str)
            .unwrap_or("Unknown")
            .to_string();
        if !(scheme.eq_ignore_ascii_case(SCHEME_AKAV1_MD5) || scheme == "Unknown") {
            return Handled {
                answer: Some(Self::with_experimental(
                    base,
                    result::ERROR_AUTH_SCHEME_NOT_SUPPORTED,
                )),
                log: Some(format!("{log_id}: scheme {scheme:?} not supported")),
                ..Handled::default()
            };
        }
        let mut note = String::new();
        // re-synchronisation: SIP-Authorization = RAND ‖ AUTS (30 bytes), or AUTS alone
        if let Some(authz) = item.iter().find(|a| a.is(code::SIP_AUTHORIZATION, V3)) {
            let (rand, auts) = match authz.data.len() {
                30 => (
                    Some(<[u8; 16]>::try_from(&authz.data[..16]).expect("16")),
                    &authz.data[16..],
                ),
                _ => (self.state[i].last_rand, authz.data.as_slice()),
            };
            let s = &self.subs.list[i];
            let r = match rand {
                Some(rand) => {
                    vectors::resync(&s.k, &s.opc, &s.amf, &rand, auts).map_err(|e| e.to_string())
                }
                None => Err("no RAND for the AUTS".to_string()),
            };
            match r {
                Ok(sqn_ms) => {
                    self.stats.resyncs += 1;
                    note = format!(
                        ", resync: SQN_HE {:#x} -> SQN_MS {sqn_ms:#x}",
                        self.subs.list[i].sqn
                    );
                    self.subs.list[i].sqn = sqn_ms;
                }
                Err(e) => {
                    self.stats.resync_failures += 1;
                    return Handled {
                        answer: Some(Self::with_result(base, result::AUTHORIZATION_REJECTED)),
                        log: Some(format!("{log_id}: resync refused: {e}")),
                        ..Handled::default()
                    };
                }
            }
        }
        // the S-CSCF asking is stored when none is (TS 29.228 §6.3.1)
        if let Some(name) = req.str_avp(code::SERVER_NAME, V3) {
            let st = &mut self.state[i];
            if st.scscf.is_none() || !st.registered {
                st.scscf = Some(name.to_string());
            }
        }
        let n = req
            .u32_avp(code::SIP_NUMBER_AUTH_ITEMS, V3)
            .unwrap_or(1)
            .clamp(1, MAX_VECTORS);
        let mut a = Self::with_result(base, result::SUCCESS);
        let impi_s = self.subs.list[i].impi.clone();
        a.push(Avp::bytes(code::USER_NAME, impi_s.as_str()));
        if let Some(u) = impu {
            a.push(Avp::bytes_3gpp(code::PUBLIC_IDENTITY, u));
        }
        a.push(Avp::u32_3gpp(code::SIP_NUMBER_AUTH_ITEMS, n));
        let mut first_sqn = 0;
        for k in 0..n {
            let av = self.next_vector(i);
            if k == 0 {
                first_sqn = av.sqn;
            }
            a.push(Avp::grouped_3gpp(
                code::SIP_AUTH_DATA_ITEM,
                &[
                    Avp::u32_3gpp(code::SIP_ITEM_NUMBER, k + 1),
                    Avp::bytes_3gpp(code::SIP_AUTHENTICATION_SCHEME, SCHEME_AKAV1_MD5),
                    Avp::bytes_3gpp(code::SIP_AUTHENTICATE, av.sip_authenticate().to_vec()),
                    Avp::bytes_3gpp(code::SIP_AUTHORIZATION, av.xres.to_vec()),
                    Avp::bytes_3gpp(code::CONFIDENTIALITY_KEY, av.ck.to_vec()),
                    Avp::bytes_3gpp(code::INTEGRITY_KEY, av.ik.to_vec()),
                ],
            ));
        }
        Handled {
            answer: Some(a),
            log: Some(format!(
                "{log_id}: {n} vector(s) from SQN {first_sqn:#x}{note}"
            )),
            ..Handled::default()
        }
    }

    /// The User-Data of SAA: a minimal IMS subscription (TS 29.228 Annex E / CxDataType):
    /// the private identity and one service profile with all public identities, no iFC.
    pub fn user_data_xml(&self, i: usize) -> String {
        let s = &self.subs.list[i];
        let mut x = String::with_capacity(256 + 96 * s.impus.len());
        x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
        x.push_str("<IMSSubscription><PrivateID>");
        x.push_str(&xml_escape(&s.impi));
        x.push_str("</PrivateID><ServiceProfile>");
        for u in &s.impus {
            x.push_str("<PublicIdentity><BarringIndication>0</BarringIndication><Identity>");
            x.push_str(&xml_escape(u));
            x.push_str(
                "</Identity><Extension><IdentityType>0</IdentityType></Extension></PublicIdentity>",
            );
        }
        x.push_str("</ServiceProfile></IMSSubscription>");
        x
    }

    fn sar(&mut self, req: &Message) -> Handled {
        self.stats.sar += 1;
        let impi = req.str_avp(code::USER_NAME, None);
        let impu = req.str_avp(code::PUBLIC_IDENTITY, V3);
        let sat = req.u32_avp(code::SERVER_ASSIGNMENT_TYPE, V3).unwrap_or(0);
        let server = req.str_avp(code::SERVER_NAME, V3).map(str::to_string);
        let log_id = format!(
            "SAR {} {} type {sat}",
            impi.unwrap_or("-"),
            impu.unwrap_or("-")
        );
        let base = self.cx_answer(req);
        let i = match self.lookup(impi, impu) {
            Ok(i) => i,
            Err(e) => {
                return Handled {
                    answer: Some(Self::with_experimental(base, e)),
                    log: Some(format!("{log_id}: error {e}")),
                    ..Handled::default()
                }
            }
        };
        let mut user_data = false;
        let st = &mut self.state[i];
        let what = match sat {
            // NO_ASSIGNMENT: the profile only
            0 => {
                user_data = true;
                "profile"
            }
            // REGISTRATION, RE_REGISTRATION
            1 | 2 => {
                st.scscf = server.or(st.scscf.take());
                st.registered = true;
                user_data = true;
                "registered"
            }
            // UNREGISTERED_USER (a terminating request for an unregistered user)
            3 => {
                st.scscf = server.or(st.scscf.take());
                user_data = true;
                "unregistered user, S-CSCF stored"
            }
            // TIMEOUT_/USER_/ADMINISTRATIVE_DEREGISTRATION, DEREGISTRATION_TOO_MUCH_DATA
            4 | 5 | 8 | 11 => {
                st.scscf = None;
                st.registered = false;
                "deregistered"
            }
            // ..._STORE_SERVER_NAME
            6 | 7 => {
                st.registered = false;
                "deregistered, S-CSCF kept"
            }
            // AUTHENTICATION_FAILURE / _TIMEOUT: forget an S-CSCF stored at MAR time
            9 | 10 => {
                if !st.registered {
                    st.scscf = None;
                }
                "authentication failure"
            }
            _ => "ignored",
        };
        let mut a = Self::with_result(base, result::SUCCESS);
        let impi_s = self.subs.list[i].impi.clone();
        a.push(Avp::bytes(code::USER_NAME, impi_s.as_str()));
        if user_data {
            a.push(Avp::bytes_3gpp(
                code::USER_DATA,
                self.user_data_xml(i).into_bytes(),
            ));
        }
        Handled {
            answer: Some(a),
            log: Some(format!("{log_id}: {what}")),
            ..Handled::default()
        }
    }

    fn lir(&mut self, req: &Message) -> Handled {
        self.stats.lir += 1;
        let impu = req.str_avp(code::PUBLIC_IDENTITY, V3);
        let base = self.cx_answer(req);
        let (a, what) = match self.lookup(None, impu) {
            Err(e) => (Self::with_experimental(base, e), format!("error {e}")),
            Ok(i) => match &self.state[i].scscf {
                Some(name) => {
                    let name = name.clone();
                    let mut a = Self::with_result(base, result::SUCCESS);
                    a.push(Avp::bytes_3gpp(code::SERVER_NAME, name.as_str()));
                    (a, format!("Server-Name {name}"))
                }
                None => {
                    let mut a = Self::with_experimental(base, result::UNREGISTERED_SERVICE);
                    a.push(Self::server_capabilities());
                    (a, "unregistered: Server-Capabilities".to_string())
                }
            },
        };
        Handled {
            answer: Some(a),
            log: Some(format!("LIR {}: {what}", impu.unwrap_or("-"))),
            ..Handled::default()
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One peer connection's framing: feed it received bytes, get the bytes to send back.
#[derive(Debug, Default)]
pub struct Connection {
    buf: Vec<u8>,
    /// Origin-Host of the peer once its CER succeeded.
    pub peer: Option<String>,
}

/// What a [`Connection`] wants done after [`Connection::feed`].
#[derive(Debug, Default)]
pub struct Output {
    pub send: Vec<u8>,
    pub close: bool,
    pub log: Vec<String>,
}

impl Connection {
    pub fn feed(&mut self, hss: &mut Hss, data: &[u8], local_ip: IpAddr) -> Output {
        self.buf.extend_from_slice(data);
        let mut out = Output::default();
        loop {
            let len = match d::frame_len(&self.buf) {
                None => break,
                Some(Err(e)) => {
                    out.log.push(format!("framing error: {e}; closing"));
                    out.close = true;
                    break;
                }
                Some(Ok(len)) => len,
            };
            if self.buf.len() < len {
                break;
            }
            let frame: Vec<u8> = self.buf.drain(..len).collect();
            let msg = match Message::decode(&frame) {
                Ok(m) => m,
                Err(e) => {
                    out.log.push(format!("undecodable message: {e}; closing"));
                    out.close = true;
                    break;
                }
            };
            if self.peer.is_none()
                && msg.is_request()
                && msg.command != cmd::CAPABILITIES_EXCHANGE
                && msg.command != cmd::DISCONNECT_PEER
            {
                // RFC 6733 §5.3: nothing before the capabilities exchange
                out.log.push(format!(
                    "{} before CER; closing",
                    command_name(msg.command, true)
                ));
                out.close = true;
                break;
            }
            let h = hss.handle(&msg, local_ip);
            if let Some(a) = h.answer {
                out.send.extend_from_slice(&a.encode());
            }
            if let Some(l) = h.log {
                out.log.push(l);
            }
            if let Some(p) = h.peer_open {
                self.peer = Some(p);
            }
            if h.close {
                out.close = true;
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;
    use crate::hss::subscribers::HEADER;
    use crate::hss::vectors::make_auts;
    use crate::sip::aka::{self, AkaKeys, Usim};
    use std::net::Ipv4Addr;

    const REALM: &str = "ims.mnc001.mcc001.3gppnetwork.org";
    const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
    const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
    const SCSCF: &str = "sip:scscf.ims.mnc001.mcc001.3gppnetwork.org:6060";
    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 20));

    fn impu(n: u32) -> String {
        format!("sip:00101000000000{n}@{REALM}")
    }
    fn impi(n: u32) -> String {
        format!("00101000000000{n}@{REALM}")
    }

    fn hss() -> Hss {
        let mut csv = format!("{HEADER}\n");
        for n in 1..=2 {
            csv += &format!("{},{},,{K},{OPC},8000,000000000000\n", impu(n), impi(n));
        }
        csv += &format!("tel:+15550001,{},,{K},{OPC},8000,\n", impi(1));
        Hss::new(
            HssConfig::for_realm(REALM),
            Subscribers::parse(&csv).unwrap(),
            Some(7),
        )
    }

    fn cx_req(command: u32, avps: Vec<Avp>) -> Message {
        let mut m = Message::request(command, APP_CX, 11, 22);
        m.flags |= hflags::PROXIABLE;
        m.push(Avp::bytes(code::SESSION_ID, "scscf.test;1;1"));
        m.avps.extend(avps);
        // through the wire, to exercise the codec on every request
        Message::decode(&m.encode()).unwrap()
    }

    fn answer(h: &mut Hss, m: &Message) -> Message {
        let a = h.handle(m, LOCAL).answer.expect("an answer");
        Message::decode(&a.encode()).unwrap()
    }

    fn mar(impi_: &str, impu_: &str, authz: Option<Vec<u8>>) -> Message {
        let mut item = vec![Avp::bytes_3gpp(
            code::SIP_AUTHENTICATION_SCHEME,
            SCHEME_AKAV1_MD5,
        )];
        if let Some(a) = authz {
            item.push(Avp::bytes_3gpp(code::SIP_AUTHORIZATION, a));
        }
        cx_req(
            cmd::MULTIMEDIA_AUTH,
            vec![
                Avp::bytes_3gpp(code::PUBLIC_IDENTITY, impu_),
                Avp::bytes(code::USER_NAME, impi_),
                Avp::u32_3gpp(code::SIP_NUMBER_AUTH_ITEMS, 1),
                Avp::grouped_3gpp(code::SIP_AUTH_DATA_ITEM, &item),
                Avp::bytes_3gpp(code::SERVER_NAME, SCSCF),
            ],
        )
    }

    fn items(a: &Message) -> Vec<Vec<Avp>> {
        a.find_all(code::SIP_AUTH_DATA_ITEM, V3)
            .map(|x| x.children().unwrap())
            .collect()
    }
    fn get(item: &[Avp], c: u32) -> &[u8] {
        &item.iter().find(|a| a.is(c, V3)).unwrap().data
    }

    /// What the UE does with SIP-Authenticate: check MAC-A, recover SQN, compute RES (a UE
    /// that has accepted nothing yet, so any SQN the HSS hands out is fresh).
    fn ue_check(authn: &[u8]) -> (u64, [u8; 8]) {
        let keys = AkaKeys::with_opc(hex::decode(K).unwrap(), hex::decode(OPC).unwrap(), [0; 2]);
        let rand: [u8; 16] = authn[..16].try_into().unwrap();
        let autn: [u8; 16] = authn[16..32].try_into().unwrap();
        let ch = aka::parse_nonce(&aka::nonce(&rand, &autn)).unwrap();
        let r = Usim::new(keys, 0)
            .authenticate(&ch)
            .expect("MAC-A verifies");
        (r.sqn, r.res)
    }

    /// A CER captured from Kamailio 5.6.3's CDP (the lab's I-CSCF, tshark on the lab's lo).
    const KAMAILIO_CER: &str = "010000c080000101000000002f484b4aa38fc446000001084000002f69637363\
        662e696d732e6d6e633030312e6d63633030312e336770706e6574776f726b2e6f7267000000012840000029\
        696d732e6d6e633030312e6d63633030312e336770706e6574776f726b2e6f72670000000000010a4000000c\
        000028af0000010d00000015434469616d657465725065657200000000000104400000200000010a4000000c\
        000028af000001024000000c01000000000001094000000c000028af";

    #[test]
    fn captured_kamailio_cer() {
        let raw = hex::decode_vec(&KAMAILIO_CER.replace(' ', "")).unwrap();
        let cer = Message::decode(&raw).unwrap();
        assert_eq!(cer.encode(), raw, "byte-exact round trip");
        assert!(cer.is_request());
        assert_eq!(cer.command, cmd::CAPABILITIES_EXCHANGE);
        assert_eq!(
            cer.str_avp(code::ORIGIN_HOST, None),
            Some("icscf.ims.mnc001.mcc001.3gppnetwork.org")
        );
        assert_eq!(cer.str_avp(code::PRODUCT_NAME, None), Some("CDiameterPeer"));
        assert_eq!(cer.u32_avp(code::VENDOR_ID, None), Some(VENDOR_3GPP));
        let mut h = hss();
        let mut conn = Connection::default();
        let out = conn.feed(&mut h, &raw, LOCAL);
        assert!(!out.close);
        let cea = Message::decode(&out.send).unwrap();
        assert_eq!(cea.result_code(), Some(result::SUCCESS));
        assert_eq!(
            (cea.hop_by_hop, cea.end_to_end),
            (cer.hop_by_hop, cer.end_to_end)
        );
    }

    #[test]
    fn cer_opens_and_advertises_cx() {
        let mut h = hss();
        let mut cer = Message::request(cmd::CAPABILITIES_EXCHANGE, 0, 1, 1);
        cer.push(Avp::bytes(code::ORIGIN_HOST, "scscf.x"))
            .push(Avp::bytes(code::ORIGIN_REALM, "x"))
            .push(Avp::grouped(
                code::VENDOR_SPECIFIC_APPLICATION_ID,
                &[
                    Avp::u32(code::VENDOR_ID, VENDOR_3GPP),
                    Avp::u32(code::AUTH_APPLICATION_ID, APP_CX),
                ],
            ));
        let mut conn = Connection::default();
        let bytes = cer.encode();
        // byte by byte: framing across reads
        let mut sent = Vec::new();
        for b in &bytes {
            let out = conn.feed(&mut h, std::slice::from_ref(b), LOCAL);
            assert!(!out.close);
            sent.extend(out.send);
        }
        let cea = Message::decode(&sent).unwrap();
        assert_eq!(cea.result_code(), Some(result::SUCCESS));
        assert_eq!(conn.peer.as_deref(), Some("scscf.x"));
        assert_eq!(
            cea.find(code::HOST_IP_ADDRESS, None).unwrap().as_address(),
            Some(LOCAL)
        );
        let vsai = cea
            .find(code::VENDOR_SPECIFIC_APPLICATION_ID, None)
            .unwrap()
            .children()
            .unwrap();
        assert!(vsai.iter().any(|a| a.as_u32() == Some(APP_CX)));
        // DWR then DPR in one read
        let mut dwr = Message::request(cmd::DEVICE_WATCHDOG, 0, 2, 2);
        dwr.push(Avp::bytes(code::ORIGIN_HOST, "scscf.x"));
        let mut dpr = Message::request(cmd::DISCONNECT_PEER, 0, 3, 3);
        dpr.push(Avp::u32(code::DISCONNECT_CAUSE, 0));
        let mut two = dwr.encode();
        two.extend(dpr.encode());
        let out = conn.feed(&mut h, &two, LOCAL);
        assert!(out.close);
        let dwa_len = d::frame_len(&out.send).unwrap().unwrap();
        let dwa = Message::decode(&out.send[..dwa_len]).unwrap();
        let dpa = Message::decode(&out.send[dwa_len..]).unwrap();
        assert_eq!((dwa.command, dwa.hop_by_hop), (cmd::DEVICE_WATCHDOG, 2));
        assert_eq!(
            (dpa.command, dpa.result_code()),
            (cmd::DISCONNECT_PEER, Some(2001))
        );
    }

    #[test]
    fn cer_without_cx_is_refused_and_requests_before_cer_close() {
        let mut h = hss();
        let mut cer = Message::request(cmd::CAPABILITIES_EXCHANGE, 0, 1, 1);
        cer.push(Avp::u32(code::AUTH_APPLICATION_ID, 4));
        let out = Connection::default().feed(&mut h, &cer.encode(), LOCAL);
        assert!(out.close);
        assert_eq!(
            Message::decode(&out.send).unwrap().result_code(),
            Some(result::NO_COMMON_APPLICATION)
        );
        let out =
            Connection::default().feed(&mut h, &mar(&impi(1), &impu(1), None).encode(), LOCAL);
        assert!(out.close && out.send.is_empty());
    }

    #[test]
    fn registration_flow_uar_mar_sar_lir() {
        let mut h = hss();
        let uar = |u: &str| {
            cx_req(
                cmd::USER_AUTHORIZATION,
                vec![
                    Avp::bytes(code::USER_NAME, impi(1)),
                    Avp::bytes_3gpp(code::PUBLIC_IDENTITY, u),
                    Avp::bytes_3gpp(code::VISITED_NETWORK_IDENTIFIER, REALM),
                ],
            )
        };
        // first registration: capabilities, the I-CSCF picks
        let a = answer(&mut h, &uar(&impu(1)));
        assert_eq!(a.avps[0].code, code::SESSION_ID);
        assert_eq!(a.result_code(), Some(result::FIRST_REGISTRATION));
        assert!(a.find(code::SERVER_CAPABILITIES, V3).is_some());
        // MAR: one AKA vector that a UE accepts, SQN advanced by 32
        let a = answer(&mut h, &mar(&impi(1), &impu(1), None));
        assert_eq!(a.result_code(), Some(result::SUCCESS));
        assert_eq!(a.u32_avp(code::SIP_NUMBER_AUTH_ITEMS, V3), Some(1));
        let it = &items(&a)[0];
        assert_eq!(
            get(it, code::SIP_AUTHENTICATION_SCHEME),
            SCHEME_AKAV1_MD5.as_bytes()
        );
        let (sqn, res) = ue_check(get(it, code::SIP_AUTHENTICATE));
        assert_eq!(sqn, 32);
        assert_eq!(get(it, code::SIP_AUTHORIZATION), res);
        assert_eq!(get(it, code::CONFIDENTIALITY_KEY).len(), 16);
        assert_eq!(get(it, code::INTEGRITY_KEY).len(), 16);
        // the S-CSCF of the MAR is stored: the UAR of the authenticated REGISTER names it
        let a = answer(&mut h, &uar(&impu(1)));
        assert_eq!(a.result_code(), Some(result::SUBSEQUENT_REGISTRATION));
        assert_eq!(a.str_avp(code::SERVER_NAME, V3), Some(SCSCF));
        // SAR REGISTRATION: user data with both IMPUs of the IMPI
        let sar = |t: u32| {
            cx_req(
                cmd::SERVER_ASSIGNMENT,
                vec![
                    Avp::bytes_3gpp(code::PUBLIC_IDENTITY, impu(1)),
                    Avp::bytes(code::USER_NAME, impi(1)),
                    Avp::bytes_3gpp(code::SERVER_NAME, SCSCF),
                    Avp::u32_3gpp(code::SERVER_ASSIGNMENT_TYPE, t),
                    Avp::u32_3gpp(code::USER_DATA_ALREADY_AVAILABLE, 0),
                ],
            )
        };
        let a = answer(&mut h, &sar(1));
        assert_eq!(a.result_code(), Some(result::SUCCESS));
        let xml = a.str_avp(code::USER_DATA, V3).unwrap();
        assert!(
            xml.contains(&format!("<PrivateID>{}</PrivateID>", impi(1))),
            "{xml}"
        );
        assert!(xml.contains(&format!("<Identity>{}</Identity>", impu(1))));
        assert!(xml.contains("<Identity>tel:+15550001</Identity>"));
        assert!(h.is_registered("tel:+15550001"));
        // LIR: the registered user's S-CSCF; the other user is unregistered
        let lir = |u: String| {
            cx_req(
                cmd::LOCATION_INFO,
                vec![Avp::bytes_3gpp(code::PUBLIC_IDENTITY, u)],
            )
        };
        let a = answer(&mut h, &lir(impu(1)));
        assert_eq!(a.result_code(), Some(result::SUCCESS));
        assert_eq!(a.str_avp(code::SERVER_NAME, V3), Some(SCSCF));
        let a = answer(&mut h, &lir(impu(2)));
        assert_eq!(a.result_code(), Some(result::UNREGISTERED_SERVICE));
        let a = answer(&mut h, &lir("sip:nobody@x".into()));
        assert_eq!(a.result_code(), Some(result::ERROR_USER_UNKNOWN));
        // de-registration clears the assignment
        let a = answer(&mut h, &sar(5));
        assert_eq!(a.result_code(), Some(result::SUCCESS));
        assert!(a.find(code::USER_DATA, V3).is_none());
        assert!(!h.is_registered(&impu(1)));
        assert_eq!(h.assigned_scscf(&impu(1)), None);
        assert_eq!(h.stats.uar, 2);
    }

    #[test]
    fn mar_errors() {
        let mut h = hss();
        let a = answer(&mut h, &mar("nobody@x", &impu(1), None));
        assert_eq!(a.result_code(), Some(result::ERROR_USER_UNKNOWN));
        let a = answer(&mut h, &mar(&impi(2), &impu(1), None));
        assert_eq!(a.result_code(), Some(result::ERROR_IDENTITIES_DONT_MATCH));
        let mut m = mar(&impi(1), &impu(1), None);
        m.avps.retain(|a| a.code != code::SIP_AUTH_DATA_ITEM);
        m.push(Avp::grouped_3gpp(
            code::SIP_AUTH_DATA_ITEM,
            &[Avp::bytes_3gpp(
                code::SIP_AUTHENTICATION_SCHEME,
                "SIP Digest",
            )],
        ));
        let a = answer(&mut h, &m);
        assert_eq!(
            a.result_code(),
            Some(result::ERROR_AUTH_SCHEME_NOT_SUPPORTED)
        );
        // an unknown Cx command and an unknown application get E-bit answers
        let a = answer(&mut h, &cx_req(cmd::PUSH_PROFILE, vec![]));
        assert_eq!(a.result_code(), Some(result::COMMAND_UNSUPPORTED));
        assert!(a.flags & hflags::ERROR != 0);
        let mut other = Message::request(cmd::USER_AUTHORIZATION, 4, 1, 1);
        other.push(Avp::bytes(code::SESSION_ID, "s"));
        let a = answer(&mut h, &other);
        assert_eq!(a.result_code(), Some(result::APPLICATION_UNSUPPORTED));
    }

    #[test]
    fn several_vectors_advance_sqn() {
        let mut h = hss();
        let mut m = mar(&impi(2), &impu(2), None);
        for a in m.avps.iter_mut() {
            if a.code == code::SIP_NUMBER_AUTH_ITEMS {
                *a = Avp::u32_3gpp(code::SIP_NUMBER_AUTH_ITEMS, 3);
            }
        }
        let a = answer(&mut h, &m);
        let its = items(&a);
        assert_eq!(its.len(), 3);
        let sqns: Vec<u64> = its
            .iter()
            .map(|it| ue_check(get(it, code::SIP_AUTHENTICATE)).0)
            .collect();
        assert_eq!(sqns, vec![32, 64, 96]);
        assert_eq!(h.sqn(&impi(2)), Some(96));
    }

    #[test]
    fn resync_with_rand_and_auts() {
        let mut h = hss();
        let a = answer(&mut h, &mar(&impi(1), &impu(1), None));
        let it = &items(&a)[0];
        let rand: [u8; 16] = get(it, code::SIP_AUTHENTICATE)[..16].try_into().unwrap();
        // the UE is far ahead (SQN_MS = 0x10000): it answers AUTS
        let k: [u8; 16] = hex::decode(K).unwrap();
        let opc: [u8; 16] = hex::decode(OPC).unwrap();
        let auts = make_auts(&k, &opc, &rand, 0x10000);
        let mut authz = rand.to_vec();
        authz.extend_from_slice(&auts);
        let a = answer(&mut h, &mar(&impi(1), &impu(1), Some(authz)));
        assert_eq!(a.result_code(), Some(result::SUCCESS));
        let (sqn, _) = ue_check(get(&items(&a)[0], code::SIP_AUTHENTICATE));
        assert_eq!(sqn, 0x10000 + SQN_STEP);
        assert_eq!(h.stats.resyncs, 1);
        // AUTS alone: the HSS uses the RAND it sent last
        let a2 = answer(&mut h, &mar(&impi(1), &impu(1), None));
        let rand2: [u8; 16] = get(&items(&a2)[0], code::SIP_AUTHENTICATE)[..16]
            .try_into()
            .unwrap();
        let auts2 = make_auts(&k, &opc, &rand2, 0x20000);
        let a = answer(&mut h, &mar(&impi(1), &impu(1), Some(auts2.to_vec())));
        assert_eq!(
            ue_check(get(&items(&a)[0], code::SIP_AUTHENTICATE)).0,
            0x20000 + SQN_STEP
        );
        // a forged AUTS is refused
        let mut bad = rand.to_vec();
        bad.extend_from_slice(&[0u8; 14]);
        let a = answer(&mut h, &mar(&impi(1), &impu(1), Some(bad)));
        assert_eq!(a.result_code(), Some(result::AUTHORIZATION_REJECTED));
        assert_eq!(h.stats.resync_failures, 1);
    }
}
