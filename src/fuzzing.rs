//! Fuzz harnesses: one function per cargo-fuzz target in `fuzz/`, taking the fuzzer's bytes.
//!
//! They live in the library, not in `fuzz/`, so that `tests/fuzz_corpus.rs` replays the seed
//! corpus and every past crash through exactly the code the fuzzer ran, in a plain `cargo test`
//! on stable. Each function must never panic for any input; the `assert!`s inside are the
//! properties a fuzzer checks beyond "no panic" (a framer that yields nothing or runs past its
//! input, a run that a datagram keeps from ending). See `docs/fuzzing.md`.

use crate::diameter::{self as d, Avp, Message as DMessage};
use crate::load::config::CoreConfig;
use crate::load::core::LoadCore;
use crate::load::population::{aka_subscription, from_pattern, from_spec, PatternSpec};
use crate::sip::message::{
    frame_len, name_addr_param, name_addr_uri, param, split_list, split_name_addr, uri_user, Via,
    MAX_BODY_LEN, MAX_HEADER_LEN,
};
use crate::sip::transport::StreamFramer;
use crate::sip::{aka, auth, HeaderName, Message};
use crate::target::core::{TargetAka, TargetConfig, TargetCore};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Every [`HeaderName`], so that no accessor is left out when one is added to the enum.
const HEADER_NAMES: [HeaderName; 23] = [
    HeaderName::Via,
    HeaderName::From,
    HeaderName::To,
    HeaderName::CallId,
    HeaderName::CSeq,
    HeaderName::Contact,
    HeaderName::ContentLength,
    HeaderName::ContentType,
    HeaderName::Expires,
    HeaderName::MaxForwards,
    HeaderName::Route,
    HeaderName::RecordRoute,
    HeaderName::ServiceRoute,
    HeaderName::Path,
    HeaderName::PAssociatedUri,
    HeaderName::WwwAuthenticate,
    HeaderName::ProxyAuthenticate,
    HeaderName::Authorization,
    HeaderName::ProxyAuthorization,
    HeaderName::Supported,
    HeaderName::Require,
    HeaderName::RetryAfter,
    HeaderName::Other,
];

/// `fuzz_targets/sip_message.rs`: the SIP scanner, then every accessor of the parsed message and
/// the URI / name-addr helpers on every header value, plus the probe's reply classifier.
pub fn sip_message(data: &[u8]) {
    if let Ok(m) = Message::parse(data) {
        assert!(m.len <= data.len());
        assert!(m.body().len() <= m.len);
        let _ = (m.is_request(), m.method(), m.status(), m.request_uri());
        let _ = (m.call_id(), m.cseq(), m.top_via(), m.from_tag(), m.to_tag());
        let _ = (m.contact_uri(), m.expires(), m.body());
        for n in HEADER_NAMES {
            let _ = m.header(n);
            for v in m.header_values(n) {
                value_helpers(v);
            }
        }
        for (name, v) in m.raw_headers() {
            let _ = m.header_named(name);
            let _ = HeaderName::classify(name.as_bytes());
            value_helpers(v);
        }
        if let Some(u) = m.request_uri() {
            value_helpers(u);
        }
    }
    // Anything can reach the probe's socket; its classifier runs on every datagram.
    let codec = crate::probe::sipcodec::OptionsCodec::new(
        7,
        crate::sip::Transport::Udp,
        "127.0.0.1:5060",
        "127.0.0.1:5070",
    );
    let _ = codec.classify(data);
    let _ = crate::probe::sipcodec::options_identity(data);
    if let Ok(s) = std::str::from_utf8(data) {
        value_helpers(s);
    }
}

fn value_helpers(v: &str) {
    let _ = split_list(v).count();
    let (uri, params) = split_name_addr(v);
    let _ = (uri_user(uri), name_addr_uri(v), name_addr_param(v, "tag"));
    let _ = (param(params, "expires"), param(params, "lr"), Via::parse(v));
    let _ = crate::target::core::host_port(uri);
    let _ = crate::load::core::contact_user(v);
    let ids = crate::sip::ids::IdScheme::new(7);
    let _ = (ids.parse_branch(v), ids.parse_call_id(v));
}

/// `fuzz_targets/sip_stream.rs`: `frame_len` and the TCP [`StreamFramer`], fed in chunk sizes
/// taken from the first two bytes. The framer must hand out the stream's messages in order,
/// each non-empty and each where the stream has it, consume no more than it was given, keep at
/// most one unfinished message, and return in a bounded number of steps.
pub fn sip_stream(data: &[u8]) {
    let _ = frame_len(data);
    let (seed, input) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]), rest),
        _ => (0, data),
    };
    let mut f = StreamFramer::default();
    let mut rng = u32::from(seed) | 1;
    let (mut fed, mut consumed, mut steps) = (0usize, 0usize, 0usize);
    let mut got: Vec<&[u8]> = Vec::new();
    'feed: while fed < input.len() {
        // Chunks of 1 to (seed % 64) * 16 + 1 bytes: single bytes up to whole segments.
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let max = (seed as usize % 64) * 16 + 1;
        let n = (rng as usize % max + 1).min(input.len() - fed);
        f.push(&input[fed..fed + n]);
        fed += n;
        loop {
            steps += 1;
            // Every Some consumes at least one byte: more steps than bytes plus chunks is a spin.
            assert!(steps <= 2 * input.len() + 2, "the framer does not advance");
            match f.next_message() {
                Err(_) => break 'feed, // a poisoned stream: the caller drops the connection
                Ok(None) => break,
                Ok(Some(msg)) => {
                    assert!(!msg.is_empty(), "an empty message");
                    while consumed < fed && matches!(input[consumed], b'\r' | b'\n') {
                        consumed += 1;
                    }
                    assert!(consumed + msg.len() <= fed, "a message past the input");
                    assert_eq!(msg, &input[consumed..consumed + msg.len()], "out of order");
                    got.push(&input[consumed..consumed + msg.len()]);
                    consumed += msg.len();
                    if let Ok(m) = Message::parse(msg) {
                        // Framing and parsing must agree on where a message ends, else the
                        // next message on the connection is read from the wrong byte.
                        assert_eq!(m.len, msg.len(), "framer and parser disagree on length");
                    }
                }
            }
        }
        // Ok(None) means one message is unfinished; the framer holds it and nothing else.
        assert!(fed - consumed <= MAX_HEADER_LEN + MAX_BODY_LEN);
    }
    // However the input was cut, the framer (which resumes its search between pushes) yields
    // what framing the whole input at once yields.
    assert_eq!(got, whole_frames(input), "chunked and whole framing differ");
}

/// The messages of `input` framed in one piece, up to the first error or unfinished message.
fn whole_frames(input: &[u8]) -> Vec<&[u8]> {
    let (mut out, mut at) = (Vec::new(), 0);
    while let Ok(Some(n)) = frame_len(&input[at..]) {
        if !matches!(input[at], b'\r' | b'\n') {
            out.push(&input[at..at + n]);
        }
        at += n;
    }
    out
}

/// `fuzz_targets/digest.rs`: Digest challenges and Authorization values as the UE, the target
/// and the HSS side read them; AKA nonces (RAND‖AUTN) through a USIM; AUTS; keys and SQNs.
pub fn digest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let v: &str = &text;
    let keys = aka::AkaKeys::with_opc([0x46; 16], [0xcd; 16], [0x80, 0]);
    for proxy in [false, true] {
        let Ok(c) = auth::Challenge::parse(v, proxy) else {
            continue;
        };
        let _ = (c.chosen_qop(), c.is_aka());
        let cred = auth::Credentials {
            username: "user0001",
            password: b"pw",
            method: "REGISTER",
            uri: "sip:ims.local",
            body: b"",
        };
        let _ = auth::authorization_header_with(&c, &cred, 1, "cn", Some("auts"));
        if c.is_aka() {
            if let Ok(ch) = aka::parse_nonce(&c.nonce) {
                let _ = aka::Usim::new(keys, 0).authenticate(&ch);
                let _ = aka::Usim::new(keys, aka::SQN_MASK).authenticate(&ch);
            }
        }
    }
    for name in [
        "username", "realm", "nonce", "uri", "response", "auts", "qop", "nc",
    ] {
        let _ = auth::param(v, name);
    }
    if let Some(a) = auth::param(v, "auts") {
        if let Ok(a) = aka::decode_auts(&a) {
            let _ = aka::resync(&keys, &[1; 16], &a);
        }
    }
    let _ = auth::verify(v, "REGISTER", "ims.local", "n", |u| {
        Some(u.as_bytes().to_vec())
    });
    let _ = aka::parse_nonce(v);
    let _ = aka::decode_auts(v);
    let _ = crate::hex::decode::<16>(v);
    let _ = crate::hex::decode::<2>(v);
    let _ = aka::parse_sqn(v);
}

/// `fuzz_targets/diameter.rs`: the Diameter framer and decoder, every AVP accessor down the
/// grouped tree, decode∘encode as identity, and the HSS's connection fed the same bytes.
pub fn diameter(data: &[u8]) {
    if let Some(Ok(n)) = d::frame_len(data) {
        assert!((d::HEADER_LEN..=d::MAX_MESSAGE_LEN).contains(&n));
    }
    let whole = match d::frame_len(data) {
        Some(Ok(n)) if n <= data.len() => &data[..n],
        _ => data,
    };
    if let Ok(m) = DMessage::decode(whole) {
        let _ = (
            m.is_request(),
            m.result_code(),
            d::command_name(m.command, true),
        );
        for a in &m.avps {
            avp_tree(a, 0);
            let _ = (m.str_avp(a.code, a.vendor), m.u32_avp(a.code, a.vendor));
        }
        let again = DMessage::decode(&m.encode()).expect("what we encode decodes");
        assert_eq!(again, m, "decode(encode(m)) != m");
    }
    let mut hss = crate::hss::Hss::new(
        crate::hss::HssConfig::for_realm("ims.local"),
        crate::hss::Subscribers::parse(HSS_SUBSCRIBERS).expect("fixed subscriber list"),
        Some(7),
    );
    let mut conn = crate::hss::cx::Connection::default();
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // Two pieces: a reader sees a stream in arbitrary segments.
    let cut = data.first().map_or(0, |b| *b as usize).min(data.len());
    for piece in [&data[..cut], &data[cut..]] {
        if conn.feed(&mut hss, piece, local).close {
            break;
        }
    }
}

const HSS_SUBSCRIBERS: &str = "impu,impi,password,k,opc,amf,sqn\n\
sip:user0001@ims.local,user0001@ims.local,pw,465b5ce8b199b49faa5f0a2ee238a6bc,cd63cb71954a9f4e48a5994e37a02baf,8000,000000000000\n\
sip:user0002@ims.local,user0002@ims.local,pw,465b5ce8b199b49faa5f0a2ee238a6bc,cd63cb71954a9f4e48a5994e37a02baf,8000,\n";

fn avp_tree(a: &Avp, depth: usize) {
    let _ = (a.as_u32(), a.as_str(), a.as_address(), a.encoded_len());
    if depth < 8 {
        if let Ok(children) = a.children() {
            for c in &children {
                avp_tree(c, depth + 1);
            }
        }
    }
}

/// `fuzz_targets/core_datagram.rs`: the fuzzer's bytes, as one datagram, reach the target from
/// the load side's socket and the load side from the target, in the middle of a call phase; the
/// run must then go on and end.
pub fn core_datagram(data: &[u8]) {
    let aka = data.first().is_some_and(|b| b & 1 == 1);
    let mut sim = Sim::mid_run(aka);
    sim.deliver_to_target(data);
    sim.deliver_to_load(data);
    sim.finish();
}

/// `fuzz_targets/core_splice.rs`: one message of the run so far, with the fuzzer's bytes spliced
/// in (`[idx lo, idx hi, offset lo, offset hi, cut, bytes...]`: replace `cut` bytes at `offset`),
/// delivered again to the side it went to. Unlike [`core_datagram`] this gets past the scanner
/// and into dialogs, transactions and the registrar with identifiers the cores know.
pub fn core_splice(data: &[u8]) {
    let [i0, i1, o0, o1, cut, insert @ ..] = data else {
        return;
    };
    let aka = i1 & 0x80 != 0;
    let mut sim = Sim::mid_run(aka);
    let idx = u16::from_le_bytes([*i0, *i1 & 0x7f]) as usize;
    let wire = Sim::wire_so_far(aka);
    let Some((to_target, orig)) = wire.get(idx % wire.len().max(1)).cloned() else {
        return;
    };
    let at = u16::from_le_bytes([*o0, *o1]) as usize % (orig.len() + 1);
    let end = (at + *cut as usize).min(orig.len());
    let mut msg = Vec::with_capacity(orig.len() + insert.len());
    msg.extend_from_slice(&orig[..at]);
    msg.extend_from_slice(insert);
    msg.extend_from_slice(&orig[end..]);
    if to_target {
        sim.deliver_to_target(&msg);
    } else {
        sim.deliver_to_load(&msg);
    }
    sim.finish();
}

/// The messages of a short simulated run (both directions, in order, `true` = to the target),
/// up to the point where [`core_datagram`] and [`core_splice`] inject: seeds for the corpus.
pub fn sim_wire(aka: bool) -> Vec<(bool, Vec<u8>)> {
    Sim::wire_so_far(aka).to_vec()
}

const LOAD: ([u8; 4], u16) = ([127, 0, 0, 2], 5070);
const TARGET: ([u8; 4], u16) = ([127, 0, 0, 1], 5060);

/// A load core and the embedded target on an in-memory network under a virtual clock, as in
/// `load/sim_tests.rs`. All contact with the load engine is in this type, through the public API
/// the runner uses, so a redesign of the engine changes only this.
#[derive(Clone)]
struct Sim {
    now: Instant,
    load: LoadCore,
    target: TargetCore,
    /// Every message delivered so far, `true` = to the target.
    wire: Vec<(bool, Vec<u8>)>,
}

/// Messages carried, in order, `true` = to the target.
type Wire = Rc<[(bool, Vec<u8>)]>;

thread_local! {
    /// [`Sim::build_mid_run`]'s result for MD5 and for AKA, built once per thread: building it
    /// was half of every core input's time, and the run is the same for every input (fixed
    /// seed, virtual clock). Each input gets a clone.
    static MID_RUN: [(Sim, Wire); 2] = [false, true].map(|aka| {
        let mut sim = Sim::build_mid_run(aka);
        let wire = std::mem::take(&mut sim.wire).into();
        (sim, wire)
    });
}

impl Sim {
    /// A clone of the run at the point where the core targets inject, with an empty `wire`.
    fn mid_run(aka: bool) -> Sim {
        MID_RUN.with(|m| m[usize::from(aka)].0.clone())
    }

    /// The messages [`Sim::mid_run`]'s run carried up to that point.
    fn wire_so_far(aka: bool) -> Wire {
        MID_RUN.with(|m| Rc::clone(&m[usize::from(aka)].1))
    }

    /// A few users registered and calls up: 1.5 s into a 2 s call phase at 4 calls/s. The
    /// phase ends soon after so that each input's rest of the run (all of its cost, since the
    /// run up to here is built once) is short: in-flight calls, their BYEs, de-registration.
    fn build_mid_run(aka: bool) -> Sim {
        let cfg = CoreConfig {
            target: SocketAddr::from(TARGET),
            reg_rate: 200.0,
            cps: 4.0,
            hold: Duration::from_millis(800),
            ring: Duration::from_millis(100),
            duration: Some(Duration::from_secs(2)),
            seed: 1,
            ..CoreConfig::default()
        };
        let (pop, tcfg) = if aka {
            let sub = aka_subscription(AKA_K, None, Some(AKA_OPC), Some("8000"), Some("0"))
                .expect("fixed AKA subscription");
            let pop = from_spec(&PatternSpec {
                user: "+1555%06d",
                first: 1,
                count: 4,
                domain: "ims.local",
                password: "not-used-by-aka",
                impi: Some("00101%010d@ims.local"),
                aka: Some(sub),
                tel: None,
            })
            .expect("fixed pattern");
            let t = TargetConfig {
                aka: Some(TargetAka::all(sub.keys)),
                seed: Some(2),
                ..TargetConfig::default()
            };
            (pop, t)
        } else {
            let pop = from_pattern("user%04d", 1, 4, "ims.local", "pw_%u").expect("fixed pattern");
            let t = TargetConfig {
                seed: Some(2),
                ..TargetConfig::default()
            };
            (pop, t)
        };
        let now = Instant::now();
        let mut load = LoadCore::new(cfg, &[SocketAddr::from(LOAD)], pop, 0, now);
        load.start(now);
        let target = TargetCore::new(tcfg, SocketAddr::from(TARGET), now);
        let mut sim = Sim {
            now,
            load,
            target,
            wire: Vec::new(),
        };
        sim.run(Duration::from_secs(30), |s| {
            s.load.calling_span().0.is_some()
        });
        sim.run(Duration::from_millis(1500), |_| false);
        sim
    }

    fn deliver_to_target(&mut self, data: &[u8]) {
        self.target
            .handle_input(self.now, data, SocketAddr::from(LOAD));
    }

    fn deliver_to_load(&mut self, data: &[u8]) {
        self.load
            .handle_input(self.now, data, SocketAddr::from(TARGET), 0);
    }

    /// Runs on to the end of the run. A hostile datagram may cost a call or a registration but
    /// never the run: the load side must still reach `Done`, by its drain deadline at the latest.
    fn finish(&mut self) {
        self.run(Duration::from_secs(600), |s| s.load.is_done());
        assert!(
            self.load.is_done(),
            "the run did not end after one datagram"
        );
    }

    /// Moves datagrams and time until `stop` holds or `limit` of virtual time passes. Datagrams
    /// to addresses that are neither side are lost, as on a real network.
    fn run(&mut self, limit: Duration, stop: impl Fn(&Sim) -> bool) {
        let end = self.now + limit;
        let (t, l) = (SocketAddr::from(TARGET), SocketAddr::from(LOAD));
        for _ in 0..100_000 {
            let mut moved = false;
            while let Some(x) = self.load.poll_transmit() {
                moved = true;
                if x.dest == t {
                    self.target.handle_input(self.now, &x.data, l);
                    self.wire.push((true, x.data));
                }
            }
            while let Some(x) = self.target.poll_transmit() {
                moved = true;
                if x.dest == l {
                    self.load.handle_input(self.now, &x.data, t, 0);
                    self.wire.push((false, x.data));
                } else if x.dest == t {
                    self.target.handle_input(self.now, &x.data, t);
                    self.wire.push((true, x.data));
                }
            }
            if moved {
                continue;
            }
            if stop(self) {
                return;
            }
            let next = [self.load.poll_timeout(), self.target.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else { return };
            if next > end {
                self.now = end;
                return;
            }
            self.now = next.max(self.now);
            self.load.handle_timeout(self.now);
            self.target.handle_timeout(self.now);
        }
        panic!("100,000 steps without the network settling: a message loop");
    }
}

const AKA_K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
const AKA_OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";

/// `fuzz_targets/media.rs`: the media plane's network input. The bytes as an SDP offer or
/// answer (what a peer's INVITE or 2xx carries), then as datagrams on a worker's media socket
/// with two streams up (each datagram: a length byte, then that many bytes; its source
/// alternates between the far end and a stranger), with time passing and packets sent between
/// them. Every datagram is accounted for exactly once (received, unmatched, RTCP or malformed
/// RTCP, not RTP), and a stream's figures hold together when it ends.
pub fn media(data: &[u8]) {
    use crate::media::engine::{ssrc_of, MediaConfig, MediaEngine, MediaEvent};
    use crate::media::g711::Codec;
    use crate::media::sdp::{remote_audio, Direction, RemoteMedia};
    let _ = remote_audio(data, Codec::Pcmu);
    let local = SocketAddr::from(([127, 0, 0, 1], 4000));
    let far = SocketAddr::from(([127, 0, 0, 2], 4002));
    let stranger = SocketAddr::from(([127, 0, 0, 3], 4004));
    let mut now = Instant::now();
    let cfg = MediaConfig::new(Codec::Pcma, Duration::from_millis(20), &[0, 1000, -1000]);
    let mut e = MediaEngine::new(cfg, 0, local, now, Duration::from_secs(1_796_428_800));
    e.enable_rtcp(1, SocketAddr::from(([127, 0, 0, 1], 4001)));
    let remote = RemoteMedia {
        addr: far,
        codec: Codec::Pcmu,
        ptime_ms: 20,
        direction: Direction::SendRecv,
        rtcp: SocketAddr::from(([127, 0, 0, 2], 4003)),
    };
    let ssrcs = [ssrc_of("a", 0), ssrc_of("b", 1)];
    assert!(e.start(now, ssrcs[0], Some(ssrc_of("a", 1)), remote));
    assert!(e.start(
        now,
        ssrcs[1],
        None,
        RemoteMedia {
            addr: stranger,
            ..remote
        }
    ));
    let mut fed = 0u64;
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let take = (n as usize).min(tail.len());
        let (dgram, next) = tail.split_at(take);
        rest = next;
        now += Duration::from_millis(u64::from(n % 7));
        e.handle_timeout(now);
        while let Some(t) = e.poll_transmit() {
            t.recycle();
        }
        e.handle_input(now, dgram, if fed % 2 == 0 { far } else { stranger });
        fed += 1;
    }
    let c = e.take_counts();
    assert_eq!(
        c.packets_received + c.unmatched + c.rtcp_received + c.rtcp_malformed + c.not_rtp,
        fed,
        "every datagram counted once: {c:?}"
    );
    for s in ssrcs {
        e.stop(now, s);
    }
    while let Some(ev) = e.poll_event() {
        if let MediaEvent::Ended(s) = ev {
            assert!(s.lost <= s.expected, "{s:?}");
            assert!((1.0..=4.5).contains(&s.mos) || s.mos == 0.0, "{s:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_of_the_mid_run_goes_on_as_a_fresh_build_does() {
        // The core targets clone one prebuilt run per input; a crash found that way must
        // replay the same from a fresh build, so a clone must share nothing mutable.
        for aka in [false, true] {
            let (mut a, mut b) = (Sim::mid_run(aka), Sim::build_mid_run(aka));
            b.wire.clear();
            let other = Sim::mid_run(aka);
            a.finish();
            b.finish();
            assert!(a.wire.len() > 20, "aka={aka}: {} messages", a.wire.len());
            let n = a.wire.len().min(b.wire.len());
            if let Some(i) = (0..n).find(|&i| a.wire[i] != b.wire[i]) {
                panic!(
                    "aka={aka}: message {i} differs:\n{}\n--- fresh build:\n{}",
                    String::from_utf8_lossy(&a.wire[i].1),
                    String::from_utf8_lossy(&b.wire[i].1)
                );
            }
            assert_eq!(a.wire.len(), b.wire.len(), "aka={aka}");
            assert!(!other.load.is_done(), "finishing a clone moved another");
        }
    }

    #[test]
    fn the_simulated_run_is_mid_call_and_ends() {
        for aka in [false, true] {
            let sim = Sim::mid_run(aka);
            let msgs: Vec<_> = sim_wire(aka).into_iter().map(|(_, m)| m).collect();
            let has = |p: &[u8]| msgs.iter().any(|m| m.starts_with(p));
            assert!(
                has(b"INVITE ") && has(b"SIP/2.0 180") && has(b"BYE "),
                "aka={aka}"
            );
            assert!(!sim.load.is_done());
            core_datagram(&[aka as u8]);
            core_splice(&[0, 0, 0, 0, 0]);
        }
    }
}
