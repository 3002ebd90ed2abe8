//! The lab IMS core (lab/ims/ims.sh: imshss + Kamailio P-, I-, S-CSCF in a network namespace
//! created here) against a UE written in this test: AKAv1-MD5 registration through the P-CSCF
//! (401 with a nonce whose AUTN verifies with Milenage, RES as the digest password, 200 with
//! Service-Route and P-Associated-URI), SQN re-synchronisation with AUTS, a call
//! P → S → I → S → P between two registered users, and de-registration.
//!
//! Needs root and the Debian packages of `.ci/setup` (kamailio, kamailio-ims-modules,
//! kamailio-presence-modules, kamailio-sqlite-modules, sqlite3, sipsak, iproute2): skipped
//! elsewhere with a message, an error in CI (env CI set). The lab is always stopped (Drop) and
//! its namespace deleted, also when an assertion fails.

mod common;

use std::fs::File;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use md5::{Digest, Md5};
use milenage::Milenage;

const DOMAIN: &str = "ims.mnc001.mcc001.3gppnetwork.org";
const PCSCF: &str = "127.0.0.21:5060";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/lab/ims/ims.sh");
const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
const AMF: &str = "8000";
const PANI: &str = "3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=00101000000001";

fn hex16(s: &str) -> [u8; 16] {
    imsload::hex::decode(s).unwrap()
}

/// Subscriber i of this test: IMSI 00101000000000i, K = 0011..ee ‖ i.
fn imsi(i: u32) -> String {
    format!("0010100000000{i:02}")
}
fn k_of(i: u32) -> String {
    format!("00112233445566778899aabbccdd{i:04x}")
}
/// Subscriber i's tel: IMPU, in its implicit registration set beside the sip: one.
fn tel_of(i: u32) -> String {
    format!("tel:+1555{i:07}")
}

// ---------------------------------------------------------------------------
// prerequisites and the lab guard
// ---------------------------------------------------------------------------

/// True (and says why) when the lab cannot run here; in CI that is a failure, not a skip.
fn skip_without_prereqs() -> bool {
    let Some(why) = missing_prereqs() else {
        return false;
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "ims_lab in CI: {why} (.ci/setup installs the packages)"
    );
    eprintln!("SKIP ims_lab: {why}");
    true
}

/// None when everything is there; else what is missing.
fn missing_prereqs() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (needs network namespaces and a bind mount)".into());
    }
    let mut missing = Vec::new();
    let moddirs = [
        "/usr/lib/x86_64-linux-gnu/kamailio/modules",
        "/usr/lib/aarch64-linux-gnu/kamailio/modules",
        "/usr/lib/kamailio/modules",
    ];
    let has_mod = |m: &str| moddirs.iter().any(|d| Path::new(d).join(m).exists());
    for (m, pkg) in [
        ("ims_registrar_scscf.so", "kamailio-ims-modules"),
        ("presence.so", "kamailio-presence-modules"),
        ("db_sqlite.so", "kamailio-sqlite-modules"),
        ("tm.so", "kamailio"),
    ] {
        if !has_mod(m) {
            missing.push(pkg);
        }
    }
    for (cmd, pkg) in [
        ("kamailio", "kamailio"),
        ("sqlite3", "sqlite3"),
        ("sipsak", "sipsak"),
        ("ip", "iproute2"),
        ("unshare", "util-linux"),
    ] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(cmd).exists());
        if !found {
            missing.push(pkg);
        }
    }
    (!missing.is_empty()).then(|| format!("missing Debian packages: {}", missing.join(" ")))
}

fn ns_exists(ns: &str) -> bool {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns))
        })
        .unwrap_or(false)
}

/// A running lab; dropping it stops everything and deletes the namespace.
struct Lab {
    dir: tempfile::TempDir,
    ns: String,
}

impl Lab {
    fn start(subscribers: &str) -> Lab {
        Lab::start_with(subscribers, &[])
    }

    /// A lab with more settings of lab/ims/ims.sh (its environment variables).
    fn start_with(subscribers: &str, env: &[(&str, &str)]) -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("imslab-test-")
            .tempdir()
            .unwrap();
        // Unique per lab: tests in this file run in parallel in one process.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ns = format!("imslabt-{}-{n}", std::process::id());
        let csv = dir.path().join("given.csv");
        std::fs::write(&csv, subscribers).unwrap();
        // the guard exists before the start: a half-started lab is cleaned up too
        let lab = Lab { dir, ns };
        let out = Command::new("bash")
            .arg(SCRIPT)
            .arg("start")
            .arg(lab.dir.path())
            .env("NS", &lab.ns)
            .env("IMSHSS", env!("CARGO_BIN_EXE_imshss"))
            .env("SUBSCRIBERS", &csv)
            .env("READY_TIMEOUT", "20")
            .env("CHILDREN", "2")
            .envs(env.iter().copied())
            .output()
            .expect("run lab/ims/ims.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("{}", stderr.trim());
        assert!(out.status.success(), "ims.sh start failed");
        lab
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits up to 5 s for `needle` in the HSS log (a Diameter request may follow the SIP
    /// answer it belongs to, e.g. the SAR of a de-registration).
    fn hss_logged(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.log("hss").contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                eprintln!("not in hss.log: {needle}");
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A UDP socket bound to `ip:0` inside the lab's namespace (the socket stays in it).
    fn ue_socket(&self, ip: &str) -> UdpSocket {
        let nsfile = format!("/run/netns/{}", self.ns);
        let ip = ip.to_string();
        std::thread::spawn(move || {
            let f = File::open(&nsfile).expect("open netns");
            // SAFETY: setns on a valid namespace fd, in a thread of our own that ends here.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let s = UdpSocket::bind((ip.as_str(), 0)).expect("bind UE socket");
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s
        })
        .join()
        .unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(SCRIPT)
            .arg("stop")
            .arg(self.dir.path())
            .env("NS", &self.ns)
            .output();
        if ns_exists(&self.ns) {
            let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        }
        if std::thread::panicking() {
            for n in ["hss", "pcscf", "icscf", "scscf", "rtpengine"] {
                let l = self.log(n);
                let tail: Vec<&str> = l.lines().rev().take(40).collect();
                eprintln!("---- {n}.log (last lines)");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// a small SIP UE
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Sip {
    first: String,
    headers: Vec<(String, String)>,
}

impl Sip {
    fn parse(b: &[u8]) -> Sip {
        let text = String::from_utf8_lossy(b);
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap_or("").to_string();
        let headers = lines
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                Some((n.trim().to_ascii_lowercase(), v.trim().to_string()))
            })
            .collect();
        Sip { first, headers }
    }
    fn status(&self) -> Option<u16> {
        let rest = self.first.strip_prefix("SIP/2.0 ")?;
        rest.get(..3)?.parse().ok()
    }
    fn method(&self) -> Option<&str> {
        (!self.first.starts_with("SIP/2.0")).then(|| self.first.split(' ').next().unwrap())
    }
    fn all(&self, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .flat_map(|(_, v)| split_list(v))
            .collect()
    }
    fn raw_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn one(&self, name: &str) -> Option<String> {
        self.raw_all(name).first().map(|s| s.to_string())
    }
    fn cseq_method(&self) -> String {
        self.one("cseq")
            .and_then(|c| c.split_whitespace().nth(1).map(str::to_string))
            .unwrap_or_default()
    }
}

/// Splits a header value at commas outside <> and quotes.
fn split_list(v: &str) -> Vec<String> {
    let (mut out, mut cur, mut angle, mut quote) = (Vec::new(), String::new(), false, false);
    for c in v.chars() {
        match c {
            '"' => quote = !quote,
            '<' if !quote => angle = true,
            '>' if !quote => angle = false,
            ',' if !angle && !quote => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// `key="value"` or `key=value` from a digest challenge.
fn param(h: &str, key: &str) -> Option<String> {
    let mut rest = h;
    while let Some(i) = rest.find(key) {
        let before_ok = i == 0 || matches!(rest.as_bytes()[i - 1], b' ' | b',');
        let after = &rest[i + key.len()..];
        if before_ok && after.starts_with('=') {
            let v = &after[1..];
            return Some(if let Some(q) = v.strip_prefix('"') {
                q.split('"').next().unwrap_or("").to_string()
            } else {
                v.split([',', ' ', ';', '>'])
                    .next()
                    .unwrap_or("")
                    .to_string()
            });
        }
        rest = after;
    }
    None
}

fn md5_hex(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

struct Ue {
    n: u32,
    sock: UdpSocket,
    addr: String,
    impu: String,
    impi: String,
    k: [u8; 16],
    opc: [u8; 16],
    /// SQN_MS: the highest SQN accepted.
    sqn_ms: u64,
    seq: u32,
    call_id: String,
    from_tag: String,
    service_route: Vec<String>,
}

impl Ue {
    fn new(lab: &Lab, n: u32, ip: &str) -> Ue {
        let sock = lab.ue_socket(ip);
        let addr = sock.local_addr().unwrap().to_string();
        Ue {
            n,
            sock,
            addr,
            impu: format!("sip:{}@{DOMAIN}", imsi(n)),
            impi: format!("{}@{DOMAIN}", imsi(n)),
            k: hex16(&k_of(n)),
            opc: hex16(OPC),
            sqn_ms: 0,
            seq: 0,
            call_id: format!("reg-{n}-{}@test", std::process::id()),
            from_tag: format!("ft{n}"),
            service_route: Vec::new(),
        }
    }

    fn send(&self, msg: &str) {
        self.sock.send_to(msg.as_bytes(), PCSCF).unwrap();
    }

    /// Next message, skipping 1xx responses when `skip_provisional`.
    fn recv(&self, timeout: Duration, skip_provisional: bool) -> Option<Sip> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                let m = Sip::parse(&buf[..n]);
                if skip_provisional && m.status().is_some_and(|s| s < 200) {
                    continue;
                }
                return Some(m);
            }
        }
        None
    }

    /// A final response to our request `method` (retransmitted requests skipped).
    fn final_response(&self, method: &str) -> Sip {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(m) = self.recv(Duration::from_millis(500), true) {
                if m.status().is_some() && m.cseq_method() == method {
                    return m;
                }
            }
        }
        panic!("UE {}: no final response to {method}", self.n);
    }

    fn register_msg(&mut self, expires: u32, authz: &str) -> String {
        self.seq += 1;
        format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {addr};branch=z9hG4bK-r{n}-{seq};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <{impu}>;tag={tag}\r\n\
             To: <{impu}>\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {seq} REGISTER\r\n\
             Contact: <sip:{user}@{addr}>;expires={expires}\r\n\
             Expires: {expires}\r\n\
             Supported: path\r\n\
             {authz}\
             Content-Length: 0\r\n\r\n",
            addr = self.addr,
            n = self.n,
            seq = self.seq,
            impu = self.impu,
            tag = self.from_tag,
            cid = self.call_id,
            user = imsi(self.n),
        )
    }

    /// Checks AUTN of a nonce: Ok(RES) when MAC-A verifies and SQN is fresh, Err(AUTS) when
    /// SQN is not above SQN_MS. Panics on a MAC failure.
    fn aka(&mut self, nonce: &[u8]) -> Result<[u8; 8], [u8; 14]> {
        assert_eq!(nonce.len(), 32, "nonce is RAND ‖ AUTN");
        let rand: [u8; 16] = nonce[..16].try_into().unwrap();
        let autn = &nonce[16..];
        let mut m = Milenage::new_with_opc(self.k, self.opc);
        let (res, _ck, _ik, ak) = m.f2345(&rand);
        let sqn_b: [u8; 6] = std::array::from_fn(|i| autn[i] ^ ak[i]);
        let amf: [u8; 2] = autn[6..8].try_into().unwrap();
        assert_eq!(amf, [0x80, 0], "AMF of the subscriber");
        assert_eq!(
            m.f1(&rand, &sqn_b, &amf),
            autn[8..16],
            "MAC-A of AUTN verifies for K/OPc of UE {}",
            self.n
        );
        let sqn = imsload::hss::vectors::sqn_from_bytes(&sqn_b);
        if sqn <= self.sqn_ms {
            return Err(imsload::hss::vectors::make_auts(
                &self.k,
                &self.opc,
                &rand,
                self.sqn_ms,
            ));
        }
        self.sqn_ms = sqn;
        Ok(res)
    }

    /// REGISTER, 401 AKAv1-MD5 (resynchronising once when asked), REGISTER with RES: the
    /// final response of the authenticated REGISTER.
    fn register(&mut self, expires: u32) -> Sip {
        let empty = format!(
            "Authorization: Digest username=\"{}\", realm=\"{DOMAIN}\", nonce=\"\", \
             uri=\"sip:{DOMAIN}\", response=\"\"\r\n",
            self.impi
        );
        let msg = self.register_msg(expires, &empty);
        self.send(&msg);
        let mut resp = self.final_response("REGISTER");
        // Up to 4 challenge rounds: one more after AUTS (by design), and one more when the
        // S-CSCF challenges an answer it cannot match yet: Kamailio 5.6's ims_auth sends the 401
        // before it stores the vector, so an answer that arrives within a millisecond (loopback)
        // can find no vector and gets a fresh challenge, which a UE answers like any other.
        // Answering after 20 ms (a USIM takes milliseconds too) makes that rare.
        for round in 0..4 {
            if round > 0 && resp.status() != Some(401) {
                return resp;
            }
            if round > 0 {
                eprintln!("UE {}: challenge round {}", self.n, round + 1);
            }
            assert_eq!(resp.status(), Some(401), "UE {}: {}", self.n, resp.first);
            std::thread::sleep(Duration::from_millis(20));
            let www = resp.one("www-authenticate").expect("WWW-Authenticate");
            assert!(www.starts_with("Digest "), "{www}");
            assert_eq!(
                param(&www, "algorithm").as_deref(),
                Some("AKAv1-MD5"),
                "{www}"
            );
            assert!(
                param(&www, "ck").is_none() && param(&www, "ik").is_none(),
                "P-CSCF strips CK/IK: {www}"
            );
            let realm = param(&www, "realm").expect("realm");
            let nonce = param(&www, "nonce").expect("nonce");
            let qop = param(&www, "qop").unwrap_or_default();
            assert!(qop.split(',').any(|q| q.trim() == "auth"), "qop {qop:?}");
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&nonce)
                .expect("nonce is base64");
            let uri = format!("sip:{DOMAIN}");
            let cnonce = format!("c{}{}", self.n, self.seq);
            let (pw, extra): (Vec<u8>, String) = match self.aka(&raw) {
                Ok(res) => (res.to_vec(), String::new()),
                Err(auts) => (
                    Vec::new(),
                    format!(
                        ", auts=\"{}\"",
                        base64::engine::general_purpose::STANDARD.encode(auts)
                    ),
                ),
            };
            let ha1 = md5_hex(&[self.impi.as_bytes(), realm.as_bytes(), &pw]);
            let ha2 = md5_hex(&[b"REGISTER", uri.as_bytes()]);
            let response = md5_hex(&[
                ha1.as_bytes(),
                nonce.as_bytes(),
                b"00000001",
                cnonce.as_bytes(),
                b"auth",
                ha2.as_bytes(),
            ]);
            let authz = format!(
                "Authorization: Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", \
                 uri=\"{uri}\", response=\"{response}\", algorithm=AKAv1-MD5, qop=auth, \
                 nc=00000001, cnonce=\"{cnonce}\"{extra}\r\n",
                self.impi
            );
            let msg = self.register_msg(expires, &authz);
            self.send(&msg);
            resp = self.final_response("REGISTER");
            // after AUTS (or a lost race, above) the network challenges again
        }
        if resp.status() != Some(401) {
            return resp;
        }
        panic!("UE {}: still challenged after 4 rounds", self.n);
    }
}

/// A response to `req` from the UE at `ue` (Via, Record-Route, From, Call-ID, CSeq copied).
fn response_to(req: &Sip, code: &str, ue: &Ue, to_tag: &str, with_contact: bool) -> String {
    let mut r = format!("SIP/2.0 {code}\r\n");
    for v in req.raw_all("via") {
        r += &format!("Via: {v}\r\n");
    }
    for v in req.raw_all("record-route") {
        r += &format!("Record-Route: {v}\r\n");
    }
    r += &format!("From: {}\r\n", req.one("from").unwrap());
    let to = req.one("to").unwrap();
    if to.contains("tag=") {
        r += &format!("To: {to}\r\n");
    } else {
        r += &format!("To: {to};tag={to_tag}\r\n");
    }
    r += &format!("Call-ID: {}\r\n", req.one("call-id").unwrap());
    r += &format!("CSeq: {}\r\n", req.one("cseq").unwrap());
    if with_contact {
        r += &format!("Contact: <sip:{}@{}>\r\n", imsi(ue.n), ue.addr);
    }
    r += "Content-Length: 0\r\n\r\n";
    r
}

fn uri_of(nameaddr: &str) -> String {
    match (nameaddr.find('<'), nameaddr.find('>')) {
        (Some(a), Some(b)) if a < b => nameaddr[a + 1..b].to_string(),
        _ => nameaddr.split(';').next().unwrap().to_string(),
    }
}

fn subscribers_csv(n: u32) -> String {
    let mut s = String::from("impu,impi,password,k,opc,amf,sqn,tel\n");
    for i in 1..=n {
        s += &format!(
            "sip:{imsi}@{DOMAIN},{imsi}@{DOMAIN},,{k},{OPC},{AMF},000000000000,{tel}\n",
            imsi = imsi(i),
            k = k_of(i),
            tel = tel_of(i)
        );
    }
    s
}

/// Waits until the B-side UE receives a request of `method`.
fn expect_request(ue: &Ue, method: &str) -> Sip {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(m) = ue.recv(Duration::from_millis(500), false) {
            if m.method() == Some(method) {
                return m;
            }
        }
    }
    panic!("UE {}: no {method} arrived", ue.n);
}

#[test]
fn ims_core_registers_resyncs_calls_and_deregisters() {
    if skip_without_prereqs() {
        return;
    }
    let t0 = Instant::now();
    let lab = Lab::start(&subscribers_csv(3));

    // 1. registration with AKAv1-MD5 through the P-CSCF
    let mut a = Ue::new(&lab, 1, "127.0.0.101");
    let ok = a.register(600);
    assert_eq!(ok.status(), Some(200), "{}", ok.first);
    let sr = ok.all("service-route");
    assert!(
        sr.iter().any(|r| r.contains("scscf")),
        "Service-Route names the S-CSCF: {sr:?}"
    );
    // The HSS's user profile puts the sip: and the tel: IMPU in one implicit registration set:
    // the S-CSCF lists both, the registered one first (the default identity).
    let pau: Vec<String> = ok
        .all("p-associated-uri")
        .iter()
        .map(|v| uri_of(v))
        .collect();
    assert_eq!(pau, [a.impu.clone(), tel_of(1)], "P-Associated-URI");
    a.service_route = sr;
    assert!(lab.hss_logged(&format!("MAR {}", a.impi)));
    assert!(lab.hss_logged(&format!("SAR {}", a.impi)));

    // 2. a UE whose SQN_MS is ahead of the HSS: AUTS, resync, then 200
    let mut b = Ue::new(&lab, 2, "127.0.0.102");
    b.sqn_ms = 0x4000;
    let ok = b.register(600);
    assert_eq!(ok.status(), Some(200), "{}", ok.first);
    assert!(b.sqn_ms > 0x4000, "fresh SQN after resync: {:#x}", b.sqn_ms);
    assert!(lab.hss_logged("resync: SQN_HE"), "HSS logged the resync");
    b.service_route = ok.all("service-route");

    // 3. a call a -> b: P -> S(orig) -> I (LIR) -> S(term) -> P -> b
    let call_id = format!("call-{}@test", std::process::id());
    let mut invite = format!("INVITE {} SIP/2.0\r\n", b.impu);
    invite += &format!(
        "Via: SIP/2.0/UDP {};branch=z9hG4bK-inv1;rport\r\nMax-Forwards: 70\r\n",
        a.addr
    );
    for r in &a.service_route {
        invite += &format!("Route: {r}\r\n");
    }
    // The caller prefers its tel: IMPU; the P-CSCF asserts it (it is in a's P-Associated-URI).
    invite += &format!(
        "From: <{}>;tag=caller1\r\nTo: <{}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
         P-Preferred-Identity: <{}>\r\nContact: <sip:{}@{}>\r\nContent-Length: 0\r\n\r\n",
        a.impu,
        b.impu,
        tel_of(1),
        imsi(1),
        a.addr
    );
    a.send(&invite);
    let inv_b = expect_request(&b, "INVITE");
    assert_eq!(
        inv_b.one("p-asserted-identity").as_deref(),
        Some(format!("<{}>", tel_of(1)).as_str()),
        "the callee sees the caller's preferred tel: identity, asserted"
    );
    assert!(
        inv_b.one("p-preferred-identity").is_none(),
        "the P-CSCF removed it"
    );
    let rr_b = inv_b.all("record-route");
    assert!(
        rr_b.len() >= 4,
        "Record-Route of P, S (orig), S (term), P: {rr_b:?}"
    );
    b.send(&response_to(&inv_b, "180 Ringing", &b, "callee1", true));
    b.send(&response_to(&inv_b, "200 OK", &b, "callee1", true));
    let ok_a = a.final_response("INVITE");
    assert_eq!(ok_a.status(), Some(200), "{}", ok_a.first);
    // route set of the caller: Record-Route reversed; target: the callee's Contact
    let mut route_set = ok_a.all("record-route");
    route_set.reverse();
    let target = uri_of(&ok_a.one("contact").expect("Contact in 200"));
    let to = ok_a.one("to").unwrap();
    let in_dialog = |method: &str, cseq: u32, branch: &str| {
        let mut m = format!("{method} {target} SIP/2.0\r\n");
        m += &format!(
            "Via: SIP/2.0/UDP {};branch=z9hG4bK-{branch};rport\r\nMax-Forwards: 70\r\n",
            a.addr
        );
        for r in &route_set {
            m += &format!("Route: {r}\r\n");
        }
        m += &format!(
            "From: <{}>;tag=caller1\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n",
            a.impu
        );
        m
    };
    a.send(&in_dialog("ACK", 1, "ack1"));
    let _ = expect_request(&b, "ACK");
    a.send(&in_dialog("BYE", 2, "bye1"));
    let bye_b = expect_request(&b, "BYE");
    b.send(&response_to(&bye_b, "200 OK", &b, "callee1", false));
    let bye_ok = a.final_response("BYE");
    assert_eq!(bye_ok.status(), Some(200), "{}", bye_ok.first);
    assert!(lab.hss_logged(&format!("LIR {}", b.impu)));

    // 4. de-registration: the HSS hears SAR USER_DEREGISTRATION for both users
    for ue in [&mut a, &mut b] {
        let ok = ue.register(0);
        assert_eq!(ok.status(), Some(200), "de-register: {}", ok.first);
    }
    for ue in [&a, &b] {
        assert!(lab.hss_logged(&format!("SAR {} {} type 5: deregistered", ue.impi, ue.impu)));
    }
    eprintln!("ims_lab: done in {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(60));
}

/// Runs imsload inside the lab's namespace against the P-CSCF; returns its JSON report.
fn imsload_in_lab(lab: &Lab, users_csv: &str, extra: &[&str]) -> serde_json::Value {
    imsload_in_lab_watching(lab, users_csv, extra, || {})
}

/// Like `imsload_in_lab`, calling `during` about every 50 ms while imsload runs (to look at
/// the core's state mid-run).
fn imsload_in_lab_watching(
    lab: &Lab,
    users_csv: &str,
    extra: &[&str],
    mut during: impl FnMut(),
) -> serde_json::Value {
    let csv = lab.path("ue-users.csv");
    std::fs::write(&csv, users_csv).unwrap();
    let report = lab.path("imsload-report.json");
    let _ = std::fs::remove_file(&report);
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.ns, env!("CARGO_BIN_EXE_imsload")])
        .args([
            "--target",
            PCSCF,
            "--domain",
            DOMAIN,
            "--quiet",
            "--users-file",
        ])
        .arg(&csv)
        .arg("--report")
        .arg(&report)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run imsload in the lab namespace");
    let out = common::wait_bounded_with(child, Duration::from_secs(60), "imsload", |_, _| during());
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no imsload report ({e})\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// `kamcmd` against the S-CSCF's ctl socket; its standard output.
fn scscf_rpc(lab: &Lab, args: &[&str]) -> String {
    cscf_rpc(lab, "scscf", args)
}

/// `kamcmd` against the ctl socket of CSCF `name` (pcscf, icscf, scscf).
fn cscf_rpc(lab: &Lab, name: &str, args: &[&str]) -> String {
    let out = Command::new("kamcmd")
        .arg("-s")
        .arg(format!(
            "unix:{}",
            lab.path(&format!("{name}_ctl")).display()
        ))
        .args(args)
        .output()
        .expect("run kamcmd");
    assert!(
        out.status.success(),
        "kamcmd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first `key: value` (kamcmd's rendering of an RPC struct) as a number.
fn rpc_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// The S-CSCF's IMPU records (ulscscf.status, domain "location").
fn scscf_impu_records(lab: &Lab) -> u64 {
    let text = scscf_rpc(lab, &["ulscscf.status"]);
    rpc_field(&text, "Records").unwrap_or_else(|| panic!("no Records in {text}"))
}

/// The P-CSCF's UE records (ulpcscf.status): one per UE address (IP:port) it saw register;
/// and the longest chain of them in one hash slot (Max-Slots): users on one address share a
/// slot whatever their ports, as no real UEs do.
fn pcscf_records(lab: &Lab) -> (u64, u64) {
    let text = cscf_rpc(lab, "pcscf", &["ulpcscf.status"]);
    let field = |k| rpc_field(&text, k).unwrap_or_else(|| panic!("no {k} in {text}"));
    (field("Records"), field("Max-Slots"))
}

/// The 8 calls' INVITEs a CSCF logged with `marker`, with the caller's user number.
fn invites_logged<'a>(log: &'a str, marker: &str) -> Vec<(u32, &'a str)> {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(marker)).collect();
    assert_eq!(lines.len(), 8, "{lines:#?}");
    lines
        .into_iter()
        .map(|l| {
            let n = l.split("from sip:00101").nth(1).unwrap()[..10]
                .parse()
                .unwrap();
            (n, l)
        })
        .collect()
}

/// The S-CSCF's statistic of contacts it holds in memory.
fn scscf_contacts(lab: &Lab) -> u64 {
    let text = scscf_rpc(lab, &["stats.get_statistics", "active_contacts"]);
    text.split('=')
        .nth(1)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no active_contacts in {text}"))
}

/// The S-CSCF's registration state of `impu` (ulscscf.showimpu), None when it holds no record.
fn scscf_impu_state(lab: &Lab, impu: &str) -> Option<String> {
    let text = scscf_rpc(lab, &["ulscscf.showimpu", impu]);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("state:"))
        .map(|v| v.trim().to_string())
}

#[test]
fn imsload_registers_fifty_aka_users_calls_and_deregisters_through_the_lab() {
    if skip_without_prereqs() {
        return;
    }
    let subs = subscribers_csv(53);
    let lab = Lab::start(&subs);
    // The first 50 users, with the keys the HSS holds.
    let fifty: String = subs.lines().take(51).map(|l| format!("{l}\n")).collect();
    let impu = |i: u32| format!("sip:{}@{DOMAIN}", imsi(i));
    // Mid-run, the S-CSCF holds all 50 users' sip: and tel: IMPUs (so the emptiness checked
    // after de-registration is not that of a core that never saw them).
    let mut most_records = 0;
    let mut most_pcscf_records = 0;
    let mut longest_chain = 0;
    let mut seen_registered = false;
    let r = imsload_in_lab_watching(
        &lab,
        &fifty,
        &[
            "--reg-rate",
            "50",
            "--cps",
            "4",
            "--calls",
            "8",
            "--hold",
            "500ms",
            "--duration",
            "20s",
            "--pani",
            PANI,
            "--ppi",
            "tel",
            "--sip-instance",
            "urn:gsma:imei:35209900-%06d-0",
            "--icsi-ref",
            "urn:urn-7:3gpp-service.ims.icsi.mmtel",
            // Each user on its own address:port: the P-CSCF sees 50 UEs, as with real phones
            // (own addresses too: its records are hashed by address, see pcscf_records).
            "--ue-ports",
            "users",
            "--ue-ips",
            "50",
            "--bind",
            "127.0.1.1",
        ],
        || {
            most_records = most_records.max(scscf_impu_records(&lab));
            let (records, chain) = pcscf_records(&lab);
            most_pcscf_records = most_pcscf_records.max(records);
            longest_chain = longest_chain.max(chain);
            seen_registered |=
                scscf_impu_state(&lab, &impu(50)).is_some_and(|s| s.starts_with("registered"));
        },
    );
    let c = &r["counters"];
    assert_eq!(c["reg_attempts"], 50, "{r}");
    assert_eq!(c["reg_ok"], 50, "{r}");
    assert_eq!(c["reg_aka_mac_failures"], 0);
    assert_eq!(c["calls_answered"], 8, "{r}");
    assert_eq!(c["calls_completed"], 8, "{r}");
    assert_eq!(c["dereg_ok"], 50, "{r}");
    // Every 200 listed both IMPUs of the user (the tel: one from the HSS's implicit set).
    assert_eq!(c["reg_no_associated_uri"], 0, "{r}");
    assert_eq!(c["reg_associated_uris"], 100, "{r}");
    assert_eq!(c["reg_associated_missing_own"], 0, "{r}");
    // What imsload sent, as the P-CSCF and the S-CSCF logged it (lab/ims/*.cfg xlog lines).
    let (pcscf, scscf) = (lab.log("pcscf"), lab.log("scscf"));
    for i in 1..=50 {
        let ue_reg = format!("UE REGISTER {} supported [path] pani [{PANI}]", impu(i));
        assert!(pcscf.contains(&ue_reg), "P-CSCF did not log: {ue_reg}");
        let contact = format!("REGISTER {} contact [<sip:{}@", impu(i), imsi(i));
        let params = format!(
            ";transport=udp>;+sip.instance=\"<urn:gsma:imei:35209900-{i:06}-0>\";\
             +g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.mmtel\"] pani [{PANI}]"
        );
        assert!(
            scscf
                .lines()
                .any(|l| l.contains(&contact) && l.contains(&params)),
            "S-CSCF did not log {contact}...{params}"
        );
    }
    for (n, l) in invites_logged(&pcscf, "MO INVITE from ") {
        assert!(
            l.contains(&format!("preferred [<{}>] pani [{PANI}]", tel_of(n))),
            "{l}"
        );
    }
    // Every user was de-registered at the S-CSCF: it told the HSS (SAR type 5) for each.
    for i in 1..=50 {
        let impi = format!("{}@{DOMAIN}", imsi(i));
        assert!(
            lab.hss_logged(&format!(
                "SAR {impi} sip:{}@{DOMAIN} type 5: deregistered",
                imsi(i)
            )),
            "no de-registration SAR for {impi}"
        );
    }
    assert_eq!(most_records, 100, "IMPU records at the S-CSCF mid-run");
    // One P-CSCF record per user (with one socket for all, ulpcscf.status shows Records: 1).
    assert_eq!(most_pcscf_records, 50, "UE records at the P-CSCF mid-run");
    // Spread over hash slots as real UEs are (one address for all puts all 50 in one slot).
    eprintln!("P-CSCF: {most_pcscf_records} UE records, longest hash-slot chain {longest_chain}");
    assert!(
        longest_chain <= 10,
        "{longest_chain} UE records share one P-CSCF hash slot"
    );
    // Its own registration found, the P-CSCF asserts each caller's preferred tel: identity
    // (pcscf_assert_identity), which the S-CSCF receives as P-Asserted-Identity.
    for (n, l) in invites_logged(&scscf, "ORIG INVITE from ") {
        assert!(l.contains(&format!("asserted [<{}>]", tel_of(n))), "{l}");
    }
    assert!(
        seen_registered,
        "user 50 shown registered by ulscscf.showimpu mid-run"
    );
    // De-registration empties the S-CSCF. ims_usrloc_scscf applies it on its timer: the 200
    // leaves the contact marked deleted and the IMPU record in place (still "registered" in
    // showimpu); a timer pass deletes the record, a later one frees the contact once
    // contact_delete_delay has run (lab/ims/scscf.cfg sets both to 1 s; module defaults 90 s
    // and 30 s). Hence a bounded wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    let t_dereg = Instant::now();
    loop {
        let records = scscf_impu_records(&lab);
        let contacts = scscf_contacts(&lab);
        let still: Vec<u32> = (1..=50)
            .filter(|&i| scscf_impu_state(&lab, &impu(i)).is_some())
            .collect();
        if records == 0 && contacts == 0 && still.is_empty() {
            eprintln!("S-CSCF empty {:?} after imsload ended", t_dereg.elapsed());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "S-CSCF still holds {records} IMPU record(s), {contacts} contact(s), users {still:?} \
             10 s after de-registration"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Users 51..53 with a wrong K: the network's AUTN does not verify, counted as such.
    let wrong: String = std::iter::once("impu,impi,password,k,opc,amf,sqn,tel\n".to_string())
        .chain(subs.lines().skip(51).map(|l| {
            let mut f: Vec<String> = l.split(',').map(str::to_string).collect();
            f[3] = "ffffffffffffffffffffffffffffffff".into();
            format!("{}\n", f.join(","))
        }))
        .collect();
    let r = imsload_in_lab(&lab, &wrong, &["--cps", "0", "--duration", "1s"]);
    let c = &r["counters"];
    assert_eq!(c["reg_attempts"], 3, "{r}");
    assert_eq!(c["reg_aka_mac_failures"], 3, "{r}");
    assert_eq!(c["reg_failed"], 3, "{r}");
    assert_eq!(c["reg_ok"], 0);
}

/// The lab P-CSCF with media anchoring (ims.sh RTPENGINE=1): IMS users call each other
/// P → S → I → S → P with G.711 both ways, put each other on hold and back (re-INVITEs along
/// the route set, each offer and answer through rtpengine too), and every RTP packet goes
/// through the rtpengine the P-CSCF put in the SDP, none from UE to UE; none is lost.
/// rtpengine stopped for 500 ms while the calls are up is a silence of that length on every
/// leg (what a P-CSCF VM's stop-and-copy does to the calls it anchors).
#[test]
fn ims_users_media_goes_through_the_p_cscfs_rtpengine_and_its_pause_is_every_legs_gap() {
    if skip_without_prereqs() {
        return;
    }
    if let Some(why) = common::rtpengine_missing() {
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    // It measures time (the silence against the pause).
    let _g = common::serial();
    let subs = subscribers_csv(20);
    let lab = Lab::start_with(&subs, &[("RTPENGINE", "1")]);
    // rtpengine's media ports (ims.sh RTPENGINE_PORTS), RTP on the even ones.
    let relay = 30000..=30999u16;
    let pcap = lab.path("media.pcapng");
    let cap = common::dumpcap_in(Some(&lab.ns), "lo", &pcap, "udp", &["-B", "32"]);
    let media_log = lab.path("media.csv");
    let rtpengine: i32 = std::fs::read_to_string(lab.path("rtpengine.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // 10 calls placed in the first second of the call phase, each up 5 s; each caller holds
    // 300 ms after the answer and resumes 400 ms after that. The pause comes once rtpengine
    // has answered all 30 offers (calls, holds, resumes): about 2 s before the first BYE.
    let mut pause = None;
    let r = imsload_in_lab_watching(
        &lab,
        &subs,
        &[
            "--reg-rate",
            "100",
            "--cps",
            "10",
            "--calls",
            "10",
            "--hold",
            "5s",
            "--duration",
            "20s",
            "--media",
            "g711",
            "--call-hold",
            "300ms,400ms",
            "--media-log",
            media_log.to_str().unwrap(),
            "--bind",
            "127.0.1.1",
        ],
        || {
            if pause.is_none() && lab.log("rtpengine").matches("Replying to 'answer'").count() == 30
            {
                pause = Some(common::Pause::inject(rtpengine, 0.5));
            }
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        common::send_signal(cap.id() as i32, libc::SIGINT),
        "SIGINT dumpcap"
    );
    common::wait_bounded(cap, Duration::from_secs(10), "dumpcap after SIGINT");
    let c = &r["counters"];
    let pause = pause.unwrap_or_else(|| panic!("rtpengine never answered 30 offers: {c}"));
    assert_eq!(c["reg_ok"], 20, "{r}");
    assert_eq!(c["calls_completed"], 10, "{r}");
    assert_eq!(c["call_holds"], 10, "{c}");
    assert_eq!(c["call_resumes"], 10, "{c}");
    assert_eq!(c["reinvites_answered"], 20, "{c}");
    assert_eq!(c["media_streams_ended"], 20, "{c}");
    let m = &r["media"];
    assert_eq!(m["packets_lost"], 0, "{m}");
    let sent = c["media_packets_sent"].as_u64().unwrap();
    let received = c["media_packets_received"].as_u64().unwrap();
    // 20 legs of ~5 s at 50 packets/s; what came after its stream ended (BYE) is unmatched
    // (less the callees' 400 ms on hold)
    assert!(sent >= 20 * 230, "{c}");
    assert_eq!(
        received + c["media_unmatched"].as_u64().unwrap(),
        sent,
        "{c}"
    );

    // The wire: every RTP packet a UE sent went to an rtpengine port on the P-CSCF's address,
    // every one it received came from one; nothing went from UE to UE.
    let rtp_port = |p: &str| {
        let p: u16 = p.parse().unwrap();
        relay.contains(&p) && p % 2 == 0
    };
    let (mut to_relay, mut from_relay, mut direct) = (0u64, 0u64, 0u64);
    for f in common::tshark_fields(
        &pcap,
        &[],
        "udp",
        &["ip.src", "udp.srcport", "ip.dst", "udp.dstport"],
    ) {
        let relay_src = f[0] == "127.0.0.21" && rtp_port(&f[1]);
        let relay_dst = f[2] == "127.0.0.21" && rtp_port(&f[3]);
        to_relay += u64::from(f[0] == "127.0.1.1" && relay_dst);
        from_relay += u64::from(relay_src && f[2] == "127.0.1.1");
        direct += u64::from(f[0] == "127.0.1.1" && f[2] == "127.0.1.1");
    }
    assert_eq!(direct, 0, "datagrams from UE to UE");
    assert_eq!(to_relay, sent, "RTP to rtpengine on the wire vs the report");
    assert_eq!(
        from_relay, sent,
        "RTP from rtpengine on the wire vs the report"
    );
    // One offer per INVITE (the originating pass only): the call, the hold, the resume.
    let offers = lab
        .log("rtpengine")
        .matches("Received command 'offer'")
        .count();
    assert_eq!(offers, 30, "offers to rtpengine");

    // Every leg was up across the pause, so each one's longest silence is the pause, to within
    // two packet times (the last packet before it, rtpengine's first after it).
    // A hold is no gap: neither side expected audio it was not offered.
    let (lo, hi) = (pause.ms() - 40.0, pause.ms() + 40.0);
    let gap = &m["longest_gap"];
    eprintln!("pause {:.1} ms; longest gaps {gap}", pause.ms());
    assert_eq!(gap["count"], 20, "{m}");
    let (min, max) = (common::f(&gap["min_ms"]), common::f(&gap["max_ms"]));
    assert!(
        lo <= min && max <= hi,
        "gaps {min:.1}..{max:.1} ms for a {:.1} ms pause",
        pause.ms()
    );
    let log = std::fs::read_to_string(&media_log).unwrap();
    assert_eq!(log.lines().count(), 21, "{log}");
}

// ---------------------------------------------------------------------------
// imsprobe against Kamailio's own Diameter peer
// ---------------------------------------------------------------------------

/// The I-CSCF's Diameter acceptor (lab/ims/ims.sh: cdp, `<Acceptor>` of icscf.xml).
const ICSCF_DIAMETER_PORT: &str = "3869";

/// imsprobe's Diameter watchdogs against the I-CSCF's own Diameter stack (Kamailio's cdp,
/// not the HSS; the lab started with ICSCF_ACCEPT_UNKNOWN_PEERS=1, as cdp ignores a CER from a
/// peer it does not know otherwise): the CER is answered with 2001 and every DWR with a DWA.
/// SIGSTOP of every process of the I-CSCF for 0.5 and 1.2 s: one reply gap per pause, equal to
/// the silence of cdp's answers on the wire (the run's capture, read by tshark) within the gap's
/// error bound; the queued watchdogs answered late, none lost, the connection kept.
#[test]
fn imsprobe_watchdogs_reach_the_icscf_diameter_stack_and_see_it_paused() {
    if skip_without_prereqs() {
        return;
    }
    // It compares imsprobe's gaps with the wire's to the bound: not beside a kernel guest.
    let _g = common::serial();
    let lab = Lab::start_with(&subscribers_csv(1), &[("ICSCF_ACCEPT_UNKNOWN_PEERS", "1")]);
    let pgid: i32 = std::fs::read_to_string(lab.path("icscf.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let out = lab.path("imsprobe-icscf");
    let pauses = [0.5, 1.2];
    let total_ms = 1000
        + pauses
            .iter()
            .map(|p| (p * 1000.0) as u64 + 1500)
            .sum::<u64>();
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.ns, env!("CARGO_BIN_EXE_imsprobe")])
        .args(["--target", "127.0.0.22", "--diameter", "--diameter-port"])
        .arg(ICSCF_DIAMETER_PORT)
        .args(["--diameter-realm", DOMAIN, "--rate", "1000", "--duration"])
        .arg(format!("{total_ms}ms"))
        .args(["--no-plot", "--quiet", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run imsprobe in the lab namespace");
    std::thread::sleep(Duration::from_millis(1000));
    let mut injected = Vec::new();
    for p in pauses {
        injected.push(common::Pause::inject(-pgid, p));
        std::thread::sleep(Duration::from_millis(1500));
    }
    // Within 20 s of the last pause.
    let rep = common::probe_report(child, &out, Duration::from_secs(20));
    let l = &rep["layers"][0];
    assert_eq!(l["layer"], "diameter", "{rep}");
    eprintln!(
        "summary {}\ncounters {}\ntcp {}",
        l["summary"], l["counters"], l["tcp"]
    );
    assert_eq!(l["tcp"]["connects"], 1, "{}", l["tcp"]);
    assert_eq!(l["tcp"]["connection_losses"], 0, "{}", l["tcp"]);
    assert_eq!(
        l["counters"]["capabilities_answers"],
        serde_json::json!({"2001": 1}),
        "one CER, accepted by cdp"
    );
    let s = &l["summary"];
    let sent = s["sent"].as_u64().unwrap();
    assert!(sent as f64 >= 0.95 * total_ms as f64, "{s}");
    assert_eq!(s["failed"], 0, "{s}");
    assert_eq!(s["send_errors"], 0, "{s}");
    assert_eq!(s["lost"], 0, "{s}");
    let answered = s["ok"].as_u64().unwrap() + s["ok_after_timeout"].as_u64().unwrap();
    assert_eq!(answered + s["pending"].as_u64().unwrap(), sent, "{s}");
    eprintln!("reply gaps {}", l["reply_gaps"]);
    let port = ICSCF_DIAMETER_PORT.parse().unwrap();
    let answers = common::diameter_answers(&out.join("capture.pcap"), port);
    common::assert_gaps_match_wire(l, &injected, &answers, "I-CSCF Diameter");
    for g in l["reply_gaps"].as_array().unwrap() {
        if common::f(&g["duration_ms"]) > 300.0 {
            assert!(g["late_replies"].as_u64().unwrap() >= 100, "{g}");
        }
    }
    // cdp took the probe as a dynamic peer (its log names our Origin-Host).
    let origin = l["diameter_origin_host"].as_str().unwrap();
    assert!(
        lab.log("icscf").contains(origin),
        "icscf.log never names {origin}"
    );
}

// ---------------------------------------------------------------------------
// IMS security agreement: a UE registers through its own IPsec SAs
// ---------------------------------------------------------------------------

const IPSEC_TEST: &str = "a_ue_registers_through_its_own_ipsec_sas_with_the_lab_p_cscf";
/// Printed when the IPsec path ran (under a kernel with ESP).
const IPSEC_DONE: &str = "IPsec registration checked under kernel";
const UE_IP: &str = "10.45.0.2";
const PCSCF_UE_IP: &str = "10.45.0.1";

/// True when this kernel has ESP: the IPsec test `name` runs here. Otherwise it runs itself
/// again in the kernel guest (lab/kguest), which must print [`IPSEC_DONE`]; the guest's lines
/// starting with one of `show` are echoed. False then (or when no guest can run here).
fn here_with_esp(name: &str, show: &[&str]) -> bool {
    let esp = Command::new("sh")
        .args(["-c", "zcat /proc/config.gz 2>/dev/null | grep -q '^CONFIG_INET_ESP=[ym]' || [ -e /sys/module/esp4 ]"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if esp {
        return true;
    }
    eprintln!("this kernel has no ESP: running {name} in the kernel guest");
    // The guest's emulated CPU takes a core for a minute: never beside a test that measures
    // time (a CI run saw loopback answers to imsprobe delayed 2.5 ms past their capture,
    // more than a TCP reply gap's bound can know of, while a guest booted).
    let _g = common::serial();
    if let Some(out) = common::rerun_in_kguest(name) {
        let done = out.lines().find(|l| l.starts_with(IPSEC_DONE));
        for l in out
            .lines()
            .filter(|l| show.iter().any(|p| l.starts_with(p)))
        {
            eprintln!("in the kernel guest: {l}");
        }
        eprintln!("in the kernel guest: {done:?}");
        assert!(done.is_some(), "{out}");
    }
    false
}

/// RES, CK and IK of an AKA challenge, for a fresh SQN (the subscriber's first challenge).
fn aka_keys(n: u32, nonce_b64: &str) -> ([u8; 8], [u8; 16], [u8; 16]) {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(nonce_b64)
        .expect("nonce is base64");
    let rand: [u8; 16] = raw[..16].try_into().unwrap();
    let mut m = Milenage::new_with_opc(hex16(&k_of(n)), hex16(OPC));
    let (res, ck, ik, _ak) = m.f2345(&rand);
    (res, ck, ik)
}

/// The first response to arrive on any of `socks` within 10 s, and which socket it came to.
fn recv_any(socks: &[&UdpSocket], method: &str) -> (Sip, usize, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65536];
    for s in socks {
        s.set_nonblocking(true).unwrap();
    }
    while Instant::now() < deadline {
        for (i, s) in socks.iter().enumerate() {
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                let m = Sip::parse(&buf[..n]);
                if m.status().is_some_and(|c| c >= 200) && m.cseq_method() == method {
                    return (m, i, buf[..n].to_vec());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no final response to {method} on any UE socket");
}

/// A UE (written here, with imsload's sec-agree, SA and XFRM code) registers through the lab
/// P-CSCF in IPsec mode (lab/ims/ims.sh IPSEC=1, Kamailio's ims_ipsec_pcscf): the first
/// REGISTER in clear with Security-Client, the 401's Security-Server and the AKA keys make the
/// UE's four SAs, the protected REGISTER (Security-Verify) goes from the UE's protected client
/// port to the P-CSCF's protected server port, and the 200 comes back through the SAs. On the
/// UE's link, everything after the first REGISTER and its 401 is ESP; the P-CSCF made the
/// mirror SAs with the SPIs it announced. Under a kernel without ESP the test runs itself again
/// in the kernel guest (lab/kguest/run.sh).
#[test]
fn a_ue_registers_through_its_own_ipsec_sas_with_the_lab_p_cscf() {
    use imsload::ipsec::{xfrm::Xfrm, Side};
    use imsload::sip::secagree::{AuthAlg, EncAlg};
    use imsload::ua::security::{SecurityConfig, UeSecurity};

    if skip_without_prereqs() || !here_with_esp(IPSEC_TEST, &["agreed", "protected"]) {
        return;
    }
    let lab = Lab::start_with(&subscribers_csv(1), &[("IPSEC", "1"), ("IPSEC_MAX", "4")]);
    let ue_ns = std::fs::read_to_string(lab.path("ue-netns"))
        .expect("ims.sh IPSEC=1 records the UE namespace")
        .trim()
        .to_string();
    common::ip(&[
        "-n",
        &ue_ns,
        "addr",
        "add",
        &format!("{UE_IP}/24"),
        "dev",
        "uv0",
    ])
    .unwrap();
    let pcap = lab.path("ue-link.pcapng");
    let cap = common::dumpcap_in(Some(&ue_ns), "uv0", &pcap, "ip", &[]);
    let bind = |port: u16| {
        let a: std::net::SocketAddr = format!("{UE_IP}:{port}").parse().unwrap();
        common::in_ns(&ue_ns, move || {
            UdpSocket::bind(a).expect("bind a UE socket")
        })
    };
    let (s0, uc, us) = (bind(0), bind(40100), bind(40101));
    let n = 1;
    let (user, impi, impu) = (
        imsi(n),
        format!("{}@{DOMAIN}", imsi(n)),
        format!("sip:{}@{DOMAIN}", imsi(n)),
    );
    let cfg = SecurityConfig {
        alg: AuthAlg::HmacSha1_96,
        ealg: EncAlg::Null,
        pcscf: PCSCF_UE_IP.parse().unwrap(),
    };
    let mut sec = UeSecurity::new(Side {
        addr: UE_IP.parse().unwrap(),
        port_c: 40100,
        port_s: 40101,
        spi_c: 50000,
        spi_s: 50001,
    });
    // Kamailio 5.6's P-CSCF takes a REGISTER as a first one only with no port in its Via and
    // Contact (docs/ipsec.md); it answers to the source port (rport).
    let register = |seq: u32, via_port: &str, contact_port: &str, sec: &UeSecurity, authz: &str| {
        let mut w = imsload::sip::builder::Writer::request("REGISTER", &format!("sip:{DOMAIN}"));
        w.header(
            "Via",
            format!("SIP/2.0/UDP {UE_IP}{via_port};branch=z9hG4bK-ipsec-{seq};rport"),
        );
        w.header("Max-Forwards", 70);
        w.header("From", format!("<{impu}>;tag=ipsec1"));
        w.header("To", format!("<{impu}>"));
        w.header("Call-ID", format!("ipsec-{}@test", std::process::id()));
        w.header("CSeq", format!("{seq} REGISTER"));
        w.header(
            "Contact",
            format!("<sip:{user}@{UE_IP}{contact_port}>;expires=600"),
        );
        w.header("Expires", 600);
        w.header("Supported", "path, sec-agree");
        sec.write_register_headers(&cfg, false, &mut w);
        w.line(authz);
        w.finish(None, b"")
    };
    let empty = format!(
        "Authorization: Digest username=\"{impi}\", realm=\"{DOMAIN}\", nonce=\"\", uri=\"sip:{DOMAIN}\", response=\"\""
    );
    let pcscf: std::net::SocketAddr = format!("{PCSCF_UE_IP}:5060").parse().unwrap();
    s0.send_to(&register(1, "", "", &sec, &empty), pcscf)
        .unwrap();
    let (r401, _, raw401) = recv_any(&[&s0], "REGISTER");
    assert_eq!(r401.status(), Some(401), "{r401:?}");
    let www = r401.one("www-authenticate").expect("WWW-Authenticate");
    let nonce = param(&www, "nonce").expect("nonce");
    let realm = param(&www, "realm").expect("realm");
    let (res, ck, ik) = aka_keys(n, &nonce);
    let msg = imsload::sip::Message::parse(&raw401).unwrap();
    let pair = sec
        .agree(&cfg, &msg, PCSCF_UE_IP.parse().unwrap(), Some((ck, ik)))
        .unwrap_or_else(|e| panic!("{e}: {r401:?}"))
        .clone();
    eprintln!("agreed: P-CSCF {:?}", pair.pcscf);
    let mut xfrm = common::in_ns(&ue_ns, Xfrm::open).expect("XFRM socket in the UE namespace");
    xfrm.install(&pair.ue_sas(1)).expect("install the UE's SAs");
    // The P-CSCF made the mirror SAs with the SPIs it announced.
    let lab_sas = common::ip_out(&lab.ns, &["xfrm", "state"]);
    for spi in [
        pair.pcscf.spi_c,
        pair.pcscf.spi_s,
        pair.ue.spi_c,
        pair.ue.spi_s,
    ] {
        assert!(
            lab_sas.contains(&format!("spi 0x{spi:08x}")),
            "SPI {spi} not at the P-CSCF: {lab_sas}"
        );
    }
    // The protected REGISTER, with RES, from the protected client port.
    std::thread::sleep(Duration::from_millis(20));
    let uri = format!("sip:{DOMAIN}");
    let ha1 = md5_hex(&[impi.as_bytes(), realm.as_bytes(), &res]);
    let ha2 = md5_hex(&[b"REGISTER", uri.as_bytes()]);
    let response = md5_hex(&[
        ha1.as_bytes(),
        nonce.as_bytes(),
        b"00000001",
        b"cn1",
        b"auth",
        ha2.as_bytes(),
    ]);
    let authz = format!(
        "Authorization: Digest username=\"{impi}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=AKAv1-MD5, qop=auth, nc=00000001, cnonce=\"cn1\""
    );
    let to_ps: std::net::SocketAddr = format!("{PCSCF_UE_IP}:{}", pair.pcscf.port_s)
        .parse()
        .unwrap();
    uc.send_to(&register(2, ":40101", ":40101", &sec, &authz), to_ps)
        .unwrap();
    let (r200, on, _) = recv_any(&[&uc, &us], "REGISTER");
    eprintln!(
        "protected REGISTER: {} (on the UE's {} port)",
        r200.first,
        ["client", "server"][on]
    );
    assert_eq!(r200.status(), Some(200), "{r200:?}\n{}", lab.log("pcscf"));
    assert!(!r200.raw_all("service-route").is_empty(), "{r200:?}");

    std::thread::sleep(Duration::from_millis(300));
    assert!(common::send_signal(cap.id() as i32, common::SIGINT));
    let _ = common::wait_bounded(cap, Duration::from_secs(20), "dumpcap after SIGINT");
    // On the UE's link: the first REGISTER and its 401 in clear, then only ESP.
    let clear = common::tshark_fields(
        &pcap,
        &["-d", "udp.port==5060,sip"],
        "udp && !esp",
        &["ip.src", "udp.srcport", "udp.dstport"],
    );
    assert_eq!(clear.len(), 2, "{clear:?}");
    let esp = common::tshark_fields(&pcap, &[], "esp", &["ip.src", "esp.spi"]);
    let spi_of = |r: &Vec<String>| u32::from_str_radix(r[1].trim_start_matches("0x"), 16).unwrap();
    assert!(
        esp.iter()
            .any(|r| r[0] == UE_IP && spi_of(r) == pair.pcscf.spi_s),
        "{esp:?}"
    );
    assert!(
        esp.iter().any(|r| r[0] == PCSCF_UE_IP),
        "the 200 came through an SA: {esp:?}"
    );
    drop(xfrm);
    assert_eq!(common::ip_out(&ue_ns, &["xfrm", "state"]), "");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    eprintln!("{IPSEC_DONE} {}", kernel.trim());
}

const IMSLOAD_IPSEC_TEST: &str =
    "imsload_registers_fifty_ues_through_their_own_sas_calls_and_cleans_up";

/// `imsload --ipsec`: 50 AKA users, each on its own address in the UEs' namespace, register
/// with sec-agree through the lab P-CSCF (ims_ipsec_pcscf), call each other (P→S→I→S→P, the
/// called UE reached on its protected server port) and de-register. On the UEs' link only each
/// UE's first REGISTER and its 401 are cleartext, the rest is ESP; afterwards imsload has left
/// no SA or policy in the UEs' namespace. Under a kernel without ESP it runs in the kernel guest.
#[test]
fn imsload_registers_fifty_ues_through_their_own_sas_calls_and_cleans_up() {
    if skip_without_prereqs() || !here_with_esp(IMSLOAD_IPSEC_TEST, &["imsload --ipsec"]) {
        return;
    }
    const N: u32 = 50;
    // One P-CSCF child per IPsec socket keeps the guest's process count sane (each of the
    // 2·IPSEC_MAX protected ports gets CHILDREN receivers).
    let lab = Lab::start_with(
        &subscribers_csv(N),
        // Ports for every UE of the four runs: a de-registered UE's stay taken until its
        // contact lapses (lab/ims/pcscf.cfg; short of them, a 401 has no Security-Server).
        // Every 401 takes a pair: 50 + 2 + 10 UEs, and 3 challenged twice (AUTS).
        &[("IPSEC", "1"), ("IPSEC_MAX", "72"), ("CHILDREN", "1")],
    );
    let ue_ns = ue_namespace(&lab, N);
    let pcap = lab.path("ue-link.pcapng");
    let cap = common::dumpcap_in(Some(&ue_ns), "uv0", &pcap, "ip", &[]);
    let r = imsload_ipsec(&lab, &ue_ns, "all", &subscribers_csv(N), N);
    let c = &r["counters"];
    eprintln!("imsload --ipsec: {c}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(common::send_signal(cap.id() as i32, common::SIGINT));
    let _ = common::wait_bounded(cap, Duration::from_secs(20), "dumpcap after SIGINT");
    if std::env::var_os("IPSEC_DEBUG").is_some() {
        let o = Command::new("tshark")
            .args(["-r"])
            .arg(&pcap)
            .args([
                "-o",
                "esp.enable_null_encryption_decode_heuristic:TRUE",
                "-Y",
                "ip.addr==10.45.0.10",
            ])
            .args([
                "-T",
                "fields",
                "-e",
                "frame.number",
                "-e",
                "ip.src",
                "-e",
                "esp.spi",
                "-e",
                "udp.srcport",
                "-e",
                "udp.dstport",
                "-e",
                "sip.Status-Line",
                "-e",
                "sip.Request-Line",
                "-e",
                "sip.CSeq",
                "-e",
                "sip.Via",
            ])
            .output()
            .unwrap();
        eprintln!(
            "imsload --ipsec: {}",
            String::from_utf8_lossy(&o.stdout).replace('\n', "\nimsload --ipsec: ")
        );
    }
    assert_eq!(c["reg_ok"], N, "{r}");
    assert_eq!(c["ipsec_sa_setups"], N, "{r}");
    assert_eq!(c["calls_completed"], 8, "{r}");
    assert_eq!(c["dereg_ok"], N, "{r}");
    assert_eq!(c["ipsec_sa_teardowns"], N, "{r}");
    for k in [
        "ipsec_no_security_server",
        "ipsec_malformed",
        "ipsec_alg_refused",
        "ipsec_no_keys",
        "ipsec_sa_install_failed",
        "ipsec_sa_remove_failed",
        "ipsec_protected_unanswered",
    ] {
        assert_eq!(c[k], 0, "{k}: {r}");
    }
    // Nothing of imsload's is left in the UEs' kernel.
    assert_eq!(common::ip_out(&ue_ns, &["xfrm", "state"]), "");
    assert_eq!(common::ip_out(&ue_ns, &["xfrm", "policy"]), "");

    // A request in clear on the P-CSCF's unprotected port, from a UE's address: refused.
    let plain = {
        let a: std::net::SocketAddr = "10.45.0.10:0".parse().unwrap();
        common::in_ns(&ue_ns, move || {
            UdpSocket::bind(a).expect("bind a UE socket")
        })
    };
    let port = plain.local_addr().unwrap().port();
    let message = format!(
        "MESSAGE sip:{imsi2}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 10.45.0.10:{port};branch=z9hG4bK-clear-1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{imsi1}@{DOMAIN}>;tag=c1\r\nTo: <sip:{imsi2}@{DOMAIN}>\r\n\
         Call-ID: clear-1@test\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
        imsi1 = imsi(1),
        imsi2 = imsi(2)
    );
    plain
        .send_to(message.as_bytes(), format!("{PCSCF_UE_IP}:5060"))
        .unwrap();
    let (refused, _, _) = recv_any(&[&plain], "MESSAGE");
    eprintln!("imsload --ipsec: a MESSAGE in clear: {}", refused.first);
    assert_eq!(refused.status(), Some(403), "{refused:?}");
    assert!(
        refused.first.contains("security associations"),
        "{refused:?}"
    );

    // Wrong K: the network fails AKA's check, no SA is made, and the failure is counted.
    let wrong: String = subscribers_csv(2)
        .lines()
        .map(|l| {
            format!(
                "{}\n",
                l.replace(&k_of(1), &"0".repeat(32))
                    .replace(&k_of(2), &"1".repeat(32))
            )
        })
        .collect();
    let w = imsload_ipsec(&lab, &ue_ns, "wrong-k", &wrong, 2);
    let wc = &w["counters"];
    eprintln!("imsload --ipsec: wrong K: {wc}");
    assert_eq!(wc["reg_ok"], 0, "{w}");
    assert_eq!(wc["reg_aka_mac_failures"], 2, "{w}");
    assert_eq!(wc["ipsec_sa_setups"], 0, "{w}");
    assert_eq!(common::ip_out(&ue_ns, &["xfrm", "state"]), "");

    // SIGTERM mid-run: the UEs de-register, and every SA made is taken away before exit.
    let t = imsload_ipsec_run(
        &lab,
        &ue_ns,
        "sigterm",
        &subscribers_csv(10),
        10,
        &["--duration", "60s"],
        Some(Duration::from_secs(4)),
    );
    let tc = &t["counters"];
    eprintln!(
        "imsload --ipsec: SIGTERM after 4 s: stop {} {tc}",
        t["stop_reason"]
    );
    assert_eq!(tc["ipsec_sa_setups"], 10, "{t}");
    assert_eq!(tc["ipsec_sa_teardowns"], 10, "{t}");
    assert_eq!(tc["dereg_ok"], 10, "{t}");
    assert_eq!(common::ip_out(&ue_ns, &["xfrm", "state"]), "");
    assert_eq!(common::ip_out(&ue_ns, &["xfrm", "policy"]), "");

    // USIMs ahead of the HSS: each UE answers its first challenge with AUTS, unprotected like
    // its first REGISTER, so from fresh ports with SPIs never offered (the P-CSCF has made SAs
    // on the first offer's, and keeps its Security-Client per address and port: docs/ipsec.md
    // §0). The fresh challenge makes the SAs, and the UEs register, call and de-register
    // through them.
    let ahead: String = subscribers_csv(3)
        .lines()
        .enumerate()
        .map(|(i, l)| match i {
            0 => format!("{l}\n"),
            _ => {
                let mut f: Vec<&str> = l.split(',').collect();
                f[6] = "000000100000";
                format!("{}\n", f.join(","))
            }
        })
        .collect();
    let a = imsload_ipsec(&lab, &ue_ns, "sqn-ahead", &ahead, 3);
    let ac = &a["counters"];
    eprintln!("imsload --ipsec: USIM ahead of the HSS: {ac}");
    assert_eq!(ac["reg_aka_resyncs"], 3, "{a}");
    assert_eq!(ac["ipsec_fresh_ports"], 3, "{a}");
    assert_eq!(ac["reg_ok"], 3, "{a}");
    assert_eq!(ac["ipsec_sa_setups"], 3, "{a}");
    assert_eq!(ac["ipsec_protected_unanswered"], 0, "{a}");
    assert_eq!(ac["dereg_ok"], 3, "{a}");
    assert_eq!(common::ip_out(&ue_ns, &["xfrm", "state"]), "");

    // Cleartext on the UEs' link: each UE's first REGISTER and its 401, nothing else. A slow
    // guest may answer a first REGISTER after T1, and then it and its 401 go again, byte for
    // byte: a retransmission says nothing new in clear, so datagrams are told apart by what
    // they say (CI saw 143 cleartext datagrams for 50 UEs on a loaded machine, 61 of them
    // retransmissions).
    let clear = common::tshark_fields(
        &pcap,
        &["-d", "udp.port==5060,sip"],
        "udp && !esp",
        &[
            "ip.src",
            "ip.dst",
            "udp.srcport",
            "udp.dstport",
            "sip.Method",
            "sip.Status-Code",
            "sip.Call-ID",
            "sip.CSeq.seq",
        ],
    );
    let said: std::collections::BTreeSet<&Vec<String>> = clear.iter().collect();
    let from_ues: Vec<_> = said.iter().filter(|r| r[0] != PCSCF_UE_IP).collect();
    assert_eq!(
        (said.len(), from_ues.len()),
        (2 * N as usize, N as usize),
        "{said:?}"
    );
    assert!(
        said.iter()
            .all(|r| (r[0] != PCSCF_UE_IP && r[4] == "REGISTER")
                || (r[0] == PCSCF_UE_IP && r[5] == "401")),
        "cleartext other than first REGISTERs and their 401s: {said:?}"
    );
    assert!(
        clear.iter().all(|r| r[2] == "5060" || r[3] == "5060"),
        "cleartext only to and from the P-CSCF's unprotected port: {clear:?}"
    );
    let esp = common::tshark_fields(&pcap, &[], "esp", &["ip.src"]);
    eprintln!(
        "imsload --ipsec: {} cleartext datagrams, {} ESP",
        clear.len(),
        esp.len()
    );
    // Each UE's protected REGISTER and de-REGISTER and their 200s; each of the 8 calls'
    // INVITE, 200, ACK, BYE and 200 on the caller's link and again on the callee's.
    assert!(esp.len() >= 4 * N as usize + 8 * 10, "{}", esp.len());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    eprintln!("{IPSEC_DONE} {}", kernel.trim());
}

const IMSLOAD_RENEWAL_TEST: &str = "imsload_renews_each_ues_sas_when_the_s_cscf_re_authenticates";

/// TS 33.203 §7.4 against Kamailio 5.6.3's P-CSCF: the lab's S-CSCF challenges every refresh
/// (ims.sh REAUTH=1), so each one renews the UE's SAs. The refresh offers a fresh client port
/// and new SPIs, the P-CSCF's 401 makes its side of the new pair, the answer goes through the
/// new pair from the fresh port and its 200 comes back through the new pair, and the UEs keep
/// calling each other across five renewals each until they de-register. Nothing is left in
/// the kernel, and only each UE's first REGISTER and its 401 are cleartext.
///
/// 5.6.3 keeps sending requests to a UE through the pair it made first (docs/ipsec.md §3.6):
/// imsload finds that pair still in use when it looks 64·T1 after the first renewal, counts
/// it, and keeps it, so no call is lost.
#[test]
fn imsload_renews_each_ues_sas_when_the_s_cscf_re_authenticates() {
    if skip_without_prereqs() || !here_with_esp(IMSLOAD_RENEWAL_TEST, &["imsload --ipsec"]) {
        return;
    }
    const N: u32 = 4;
    let lab = Lab::start_with(
        &subscribers_csv(N),
        // 5.6.3 takes a new client port of its pool for every renewal and frees none before
        // the contact lapses: N UEs with up to 6 renewals each.
        &[
            ("IPSEC", "1"),
            ("IPSEC_MAX", "32"),
            ("CHILDREN", "1"),
            ("REAUTH", "1"),
            ("MIN_EXPIRES", "10"),
        ],
    );
    let ue_ns = ue_namespace(&lab, N);
    let pcap = lab.path("ue-link.pcapng");
    let cap = common::dumpcap_in(Some(&ue_ns), "uv0", &pcap, "ip", &[]);
    // A refresh every 8 s in 45 s of calls: five renewals per UE, the first pair looked at
    // again 32 s (64·T1) after the first.
    let r = imsload_ipsec_run(
        &lab,
        &ue_ns,
        "renewal",
        &subscribers_csv(N),
        N,
        &["--duration", "45s", "--expires", "16"],
        None,
    );
    let c = &r["counters"];
    eprintln!("imsload --ipsec renewal: {c}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(common::send_signal(cap.id() as i32, common::SIGINT));
    let _ = common::wait_bounded(cap, Duration::from_secs(20), "dumpcap after SIGINT");
    assert_eq!(
        (c["reg_ok"].as_u64(), c["dereg_ok"].as_u64()),
        (Some(N.into()), Some(N.into())),
        "{r}"
    );
    let rereg = c["rereg_attempts"].as_u64().unwrap();
    assert!(rereg >= 5 * u64::from(N), "{r}");
    assert_eq!(c["rereg_ok"], rereg, "{r}");
    assert_eq!(c["ipsec_sa_renewals"], rereg, "every refresh renewed: {r}");
    assert_eq!(c["ipsec_sa_setups"], u64::from(N) + rereg, "{r}");
    assert_eq!(c["ipsec_sa_teardowns"], c["ipsec_sa_setups"], "{r}");
    for k in [
        "ipsec_sa_renewals_failed",
        "ipsec_sa_install_failed",
        "ipsec_sa_remove_failed",
        "ipsec_protected_unanswered",
        "ipsec_no_security_server",
        "calls_failed",
        "calls_timeout",
    ] {
        assert_eq!(c[k], 0, "{k}: {r}");
    }
    let attempted = c["calls_attempted"].as_u64().unwrap();
    assert!(attempted >= 150, "{r}");
    assert_eq!(c["calls_completed"], attempted, "{r}");
    assert_eq!(common::ip_out(&ue_ns, &["xfrm", "state"]), "");
    assert_eq!(common::ip_out(&ue_ns, &["xfrm", "policy"]), "");
    // Cleartext on the UEs' link: each UE's first REGISTER and its 401 (told apart by what
    // they say: a slow guest's retransmissions repeat them), nothing of the renewals.
    let clear = common::tshark_fields(
        &pcap,
        &["-d", "udp.port==5060,sip"],
        "udp && !esp",
        &[
            "ip.src",
            "sip.Method",
            "sip.Status-Code",
            "sip.Call-ID",
            "sip.CSeq.seq",
        ],
    );
    let said: std::collections::BTreeSet<&Vec<String>> = clear.iter().collect();
    assert_eq!(said.len(), 2 * N as usize, "{said:?}");
    assert!(
        said.iter().all(|r| r[4] == "1"),
        "cleartext beyond the first REGISTERs: {said:?}"
    );
    // Each renewal's 200 came through the new pair: under the SPI of the UE's second
    // generation (`0x11xxxx`, imsload's `ue_spi`), to its server port.
    let esp = common::tshark_fields(
        &pcap,
        &["-o", "esp.enable_null_encryption_decode_heuristic:TRUE"],
        "esp && ip.src == 10.45.0.1",
        &[
            "esp.spi",
            "sip.Status-Code",
            "sip.CSeq.method",
            "sip.CSeq.seq",
            "sip.Method",
        ],
    );
    let gen = |spi: &str| u32::from_str_radix(spi.trim_start_matches("0x"), 16).unwrap() >> 16;
    // (first REGISTER 1, its answer 2, the first refresh 3, its answer 4)
    let renewal_oks: Vec<&Vec<String>> = esp
        .iter()
        .filter(|r| r[1] == "200" && r[2] == "REGISTER" && r[3] == "4")
        .collect();
    assert_eq!(renewal_oks.len(), N as usize, "{esp:?}");
    assert!(
        renewal_oks.iter().all(|r| gen(&r[0]) == 0x11),
        "{renewal_oks:?}"
    );
    // What this P-CSCF does with requests to a renewed UE: every INVITE goes through the pair
    // it made first (SPI generation 0x10), and imsload found each UE's first pair in use.
    let mut invites = std::collections::BTreeMap::new();
    for r in esp.iter().filter(|r| r[4] == "INVITE") {
        *invites.entry(gen(&r[0])).or_insert(0) += 1;
    }
    eprintln!("imsload --ipsec renewal: INVITEs to the UEs by SPI generation {invites:x?}");
    assert_eq!(invites.keys().collect::<Vec<_>>(), [&0x10], "{invites:?}");
    assert_eq!(c["ipsec_sa_replaced_in_use"], N, "{r}");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    eprintln!("{IPSEC_DONE} {}", kernel.trim());
}

/// The UEs' namespace of an `IPSEC=1` lab, with `n` UE addresses 10.45.0.10.. (in the
/// P-CSCF's 10.45.0.0/24, which its config treats as the UE side).
fn ue_namespace(lab: &Lab, n: u32) -> String {
    let ue_ns = std::fs::read_to_string(lab.path("ue-netns"))
        .expect("ims.sh IPSEC=1 records the UE namespace")
        .trim()
        .to_string();
    for i in 0..n {
        common::ip(&[
            "-n",
            &ue_ns,
            "addr",
            "add",
            &format!("10.45.0.{}/24", 10 + i),
            "dev",
            "uv0",
        ])
        .unwrap();
    }
    ue_ns
}

/// Runs `imsload --ipsec` for `users_csv` (`n` users, on 10.45.0.10..) in the UEs' namespace
/// against the lab P-CSCF's UE side; its JSON report (`name` tells runs apart).
fn imsload_ipsec(lab: &Lab, ue_ns: &str, name: &str, users_csv: &str, n: u32) -> serde_json::Value {
    let extra = ["--duration", "20s", "--calls", "8"];
    imsload_ipsec_run(lab, ue_ns, name, users_csv, n, &extra, None)
}

/// Like [`imsload_ipsec`] with `extra` options, sent SIGTERM after `term_after` if given.
fn imsload_ipsec_run(
    lab: &Lab,
    ue_ns: &str,
    name: &str,
    users_csv: &str,
    n: u32,
    extra: &[&str],
    term_after: Option<Duration>,
) -> serde_json::Value {
    let csv = lab.path(&format!("ue-users-{name}.csv"));
    std::fs::write(&csv, users_csv).unwrap();
    let report = lab.path(&format!("imsload-{name}.json"));
    let target = format!("{PCSCF_UE_IP}:5060");
    let n = n.to_string();
    let child = Command::new("ip")
        .args(["netns", "exec", ue_ns, env!("CARGO_BIN_EXE_imsload")])
        .args(["--target", &target, "--domain", DOMAIN, "--quiet"])
        .arg("--users-file")
        .arg(&csv)
        .args(["--ipsec", "--bind", "10.45.0.10", "--ue-ips", &n])
        .args(["--reg-rate", "25", "--cps", "4"])
        .args(["--hold", "500ms", "--drain", "5s", "--report"])
        .arg(&report)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run imsload in the UE namespace");
    if let Some(d) = term_after {
        std::thread::sleep(d);
        // `ip netns exec` execs imsload: the child is imsload itself.
        assert!(common::send_signal(child.id() as i32, common::SIGTERM));
    }
    let out = common::wait_bounded(child, Duration::from_secs(120), "imsload --ipsec");
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no imsload report ({e})\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            lab.log("pcscf")
        )
    });
    serde_json::from_str(&text).unwrap()
}
