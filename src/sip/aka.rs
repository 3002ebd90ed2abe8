//! Digest AKAv1-MD5 (RFC 3310) over Milenage (3GPP TS 35.206): what a USIM/ISIM does with an
//! IMS challenge, and what a network does to make one.
//!
//! The nonce of an AKA challenge is `base64(RAND ‖ AUTN [‖ server data])`, AUTN being
//! `SQN⊕AK ‖ AMF ‖ MAC-A`. The UE checks MAC-A (it authenticates the network), checks that SQN
//! is fresh, and answers with RES as the digest password ([`super::auth`] does the MD5 part; the
//! password is the raw RES bytes, RFC 3310 §3.1). A stale SQN yields AUTS for re-synchronisation
//! (TS 33.102 §6.3.3/§6.3.5); a wrong MAC-A means the network (or our K) is not who it claims.
//!
//! Milenage itself comes from the `milenage` crate (f1, f1*, f2–f5, f5*, OPc from OP), pinned
//! and checked here against TS 35.208 test sets 1–6. The network side ([`generate`], [`resync`])
//! lives here too so the embedded target, the tests (and an HSS) share one implementation.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use milenage::Milenage;

/// SQN is 48 bits (TS 33.102 §6.3.7).
pub const SQN_MASK: u64 = (1 << 48) - 1;

/// How far ahead of the highest accepted SQN a challenge may be. TS 33.102 Annex C.3.2 gives
/// Δ = 2^28 for the SEQ part; we compare whole SQNs (IND included), so this is at least as lax.
pub const DEFAULT_SQN_WINDOW: u64 = 1 << 28;

/// The secrets a subscriber shares with its HSS. Only OPc is kept: OP is turned into OPc once
/// (TS 35.206 §4.1), as a USIM provisioned with OPc would hold it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AkaKeys {
    pub k: [u8; 16],
    pub opc: [u8; 16],
    /// Authentication management field the *network* puts in AUTN. The UE reads AMF from AUTN
    /// and does not need it; it is kept for the target/HSS that read the same subscriber data.
    pub amf: [u8; 2],
}

impl std::fmt::Debug for AkaKeys {
    // Secrets stay out of logs and panics; the AMF is not secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AkaKeys")
            .field("k", &"<16 bytes>")
            .field("opc", &"<16 bytes>")
            .field("amf", &crate::hex::encode(&self.amf))
            .finish()
    }
}

impl AkaKeys {
    pub fn with_opc(k: [u8; 16], opc: [u8; 16], amf: [u8; 2]) -> AkaKeys {
        AkaKeys { k, opc, amf }
    }

    /// Derives OPc = E_K(OP) ⊕ OP (TS 35.206 §4.1).
    pub fn with_op(k: [u8; 16], op: [u8; 16], amf: [u8; 2]) -> AkaKeys {
        let opc = *Milenage::new_with_op(k, op).opc();
        AkaKeys { k, opc, amf }
    }

    fn milenage(&self) -> Milenage {
        Milenage::new_with_opc(self.k, self.opc)
    }
}

/// A USIM: the keys and the highest SQN it has accepted (SQN_MS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usim {
    pub keys: AkaKeys,
    /// Highest SQN accepted so far (48 bits).
    pub sqn_ms: u64,
    /// Largest accepted jump ahead of `sqn_ms` (see [`DEFAULT_SQN_WINDOW`]).
    pub window: u64,
}

/// RAND and AUTN from a challenge nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AkaChallenge {
    pub rand: [u8; 16],
    pub autn: [u8; 16],
}

/// What a successful AKA run yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AkaResult {
    /// RES (f2): the digest password, as raw bytes.
    pub res: [u8; 8],
    pub ck: [u8; 16],
    pub ik: [u8; 16],
    /// The network's SQN, now stored as SQN_MS.
    pub sqn: u64,
    pub amf: [u8; 2],
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AkaError {
    #[error("the AKA nonce is not base64 of RAND‖AUTN (at least 32 bytes): {0}")]
    BadNonce(String),
    #[error("the AUTS is not base64 of 14 bytes: {0}")]
    BadAuts(String),
    /// MAC-A in AUTN is not what our K/OPc give: the network failed authentication (or the
    /// subscriber's K or OPc differ between the UE and the HSS).
    #[error("MAC failure: AUTN's MAC-A does not match this K/OPc (network authentication failed; check K and OP/OPc on both sides)")]
    MacFailure,
    /// The challenge is genuine but its SQN is not fresh; send `auts` to re-synchronise.
    #[error("SQN {sqn:#014x} out of range (UE's highest accepted {sqn_ms:#014x}): re-synchronisation with AUTS")]
    SyncFailure {
        sqn: u64,
        sqn_ms: u64,
        auts: [u8; 14],
    },
    /// MAC-S in an AUTS does not match (network side of a re-synchronisation).
    #[error("AUTS MAC-S does not match this K/OPc and RAND")]
    MacSFailure,
    /// A provisioned SQN (`--sqn`, a users file's `sqn`) is longer than 48 bits, or empty.
    #[error("SQN {0:?} must be 1 to 12 hex digits (48 bits)")]
    SqnLength(String),
    #[error("SQN {0:?} is not hex")]
    SqnNotHex(String),
}

/// 48-bit big-endian SQN.
pub fn sqn_bytes(sqn: u64) -> [u8; 6] {
    let b = (sqn & SQN_MASK).to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

pub fn sqn_from_bytes(b: &[u8; 6]) -> u64 {
    u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

fn xor6(a: &[u8], b: &[u8; 6]) -> [u8; 6] {
    let mut o = [0u8; 6];
    for i in 0..6 {
        o[i] = a[i] ^ b[i];
    }
    o
}

/// Decodes an AKAv1 nonce: base64(RAND ‖ AUTN ‖ anything). Bytes after the 32 are
/// server-specific data (RFC 3310 §3.2) and are ignored.
pub fn parse_nonce(nonce: &str) -> Result<AkaChallenge, AkaError> {
    let raw = B64
        .decode(nonce.trim())
        .map_err(|e| AkaError::BadNonce(format!("{e}")))?;
    if raw.len() < 32 {
        return Err(AkaError::BadNonce(format!("{} bytes", raw.len())));
    }
    let mut c = AkaChallenge {
        rand: [0; 16],
        autn: [0; 16],
    };
    c.rand.copy_from_slice(&raw[..16]);
    c.autn.copy_from_slice(&raw[16..32]);
    Ok(c)
}

/// The nonce a network sends: base64(RAND ‖ AUTN).
pub fn nonce(rand: &[u8; 16], autn: &[u8; 16]) -> String {
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(rand);
    b[16..].copy_from_slice(autn);
    B64.encode(b)
}

/// The AMF that f1* uses for AUTS: TS 33.102 §6.3.3 has "a dummy value of all zeros" so that
/// the real one never travels in the clear.
pub const RESYNC_AMF: [u8; 2] = [0, 0];

/// AUTS = (SQN_MS ⊕ AK*) ‖ MAC-S, with MAC-S = f1*(SQN_MS, RAND, [`RESYNC_AMF`]).
pub fn auts(keys: &AkaKeys, rand: &[u8; 16], sqn_ms: u64) -> [u8; 14] {
    let mut m = keys.milenage();
    let ak_star = m.f5star(rand);
    let sqn = sqn_bytes(sqn_ms);
    let mac_s = m.f1star(rand, &sqn, &RESYNC_AMF);
    let mut out = [0u8; 14];
    out[..6].copy_from_slice(&xor6(&sqn, &ak_star));
    out[6..].copy_from_slice(&mac_s);
    out
}

pub fn encode_auts(auts: &[u8; 14]) -> String {
    B64.encode(auts)
}

pub fn decode_auts(s: &str) -> Result<[u8; 14], AkaError> {
    let raw = B64
        .decode(s.trim())
        .map_err(|e| AkaError::BadAuts(format!("{e}")))?;
    raw.try_into()
        .map_err(|r: Vec<u8>| AkaError::BadAuts(format!("{} bytes", r.len())))
}

impl Usim {
    pub fn new(keys: AkaKeys, sqn_ms: u64) -> Usim {
        Usim {
            keys,
            sqn_ms: sqn_ms & SQN_MASK,
            window: DEFAULT_SQN_WINDOW,
        }
    }

    /// Runs AKA on a challenge (TS 33.102 §6.3.3): recover SQN with AK, verify MAC-A, check
    /// freshness, compute RES/CK/IK. On success SQN becomes the new SQN_MS.
    ///
    /// Freshness is the simplest Annex C scheme: accept `sqn_ms < SQN ≤ sqn_ms + window`,
    /// comparing the whole 48-bit SQN (no per-IND array). An HSS that only ever increases SQN
    /// (as TS 33.102 Annex C.1.1 generation does) always passes it.
    pub fn authenticate(&mut self, ch: &AkaChallenge) -> Result<AkaResult, AkaError> {
        let mut m = self.keys.milenage();
        let (res, ck, ik, ak) = m.f2345(&ch.rand);
        let sqn_b = xor6(&ch.autn[..6], &ak);
        let amf = [ch.autn[6], ch.autn[7]];
        let mac_a = m.f1(&ch.rand, &sqn_b, &amf);
        // MAC-A first: a forged challenge must not make us disclose AUTS or move SQN_MS.
        if mac_a[..] != ch.autn[8..16] {
            return Err(AkaError::MacFailure);
        }
        let sqn = sqn_from_bytes(&sqn_b);
        let fresh = sqn > self.sqn_ms && sqn - self.sqn_ms <= self.window;
        if !fresh {
            return Err(AkaError::SyncFailure {
                sqn,
                sqn_ms: self.sqn_ms,
                auts: auts(&self.keys, &ch.rand, self.sqn_ms),
            });
        }
        self.sqn_ms = sqn;
        Ok(AkaResult {
            res,
            ck,
            ik,
            sqn,
            amf,
        })
    }
}

/// An authentication vector as an HSS/AuC makes it (TS 33.102 §6.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthVector {
    pub rand: [u8; 16],
    pub autn: [u8; 16],
    pub xres: [u8; 8],
    pub ck: [u8; 16],
    pub ik: [u8; 16],
}

impl AuthVector {
    /// The digest nonce carrying this vector.
    pub fn nonce(&self) -> String {
        nonce(&self.rand, &self.autn)
    }
}

/// Network side: AUTN = (SQN ⊕ AK) ‖ AMF ‖ MAC-A, XRES, CK, IK for `rand` and `sqn`.
pub fn generate(keys: &AkaKeys, rand: [u8; 16], sqn: u64) -> AuthVector {
    let mut m = keys.milenage();
    let sqn_b = sqn_bytes(sqn);
    let mac_a = m.f1(&rand, &sqn_b, &keys.amf);
    let (xres, ck, ik, ak) = m.f2345(&rand);
    let mut autn = [0u8; 16];
    autn[..6].copy_from_slice(&xor6(&sqn_b, &ak));
    autn[6..8].copy_from_slice(&keys.amf);
    autn[8..].copy_from_slice(&mac_a);
    AuthVector {
        rand,
        autn,
        xres,
        ck,
        ik,
    }
}

/// Network side of re-synchronisation (TS 33.102 §6.3.5): checks MAC-S in AUTS against the
/// RAND the UE answered, and returns the UE's SQN_MS, from which the next SQN must go up.
pub fn resync(keys: &AkaKeys, rand: &[u8; 16], auts: &[u8; 14]) -> Result<u64, AkaError> {
    resync_with(keys, rand, auts, &[RESYNC_AMF])
}

/// [`resync`] that also accepts a MAC-S computed with the subscriber's own AMF instead of the
/// dummy one: some UEs do that, and an HSS that refused them would never resynchronise them.
pub fn resync_lenient(keys: &AkaKeys, rand: &[u8; 16], auts: &[u8; 14]) -> Result<u64, AkaError> {
    resync_with(keys, rand, auts, &[RESYNC_AMF, keys.amf])
}

fn resync_with(
    keys: &AkaKeys,
    rand: &[u8; 16],
    auts: &[u8; 14],
    amfs: &[[u8; 2]],
) -> Result<u64, AkaError> {
    let mut m = keys.milenage();
    let ak_star = m.f5star(rand);
    let sqn_b = xor6(&auts[..6], &ak_star);
    for amf in amfs {
        if m.f1star(rand, &sqn_b, amf)[..] == auts[6..] {
            return Ok(sqn_from_bytes(&sqn_b));
        }
    }
    Err(AkaError::MacSFailure)
}

/// Parses a 48-bit SQN in hex (1 to 12 digits, optional `0x`).
pub fn parse_sqn(s: &str) -> Result<u64, AkaError> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if t.is_empty() || t.len() > 12 {
        return Err(AkaError::SqnLength(s.into()));
    }
    u64::from_str_radix(t, 16).map_err(|_| AkaError::SqnNotHex(s.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::auth::{digest_response, Challenge, Credentials};

    fn h<const N: usize>(s: &str) -> [u8; N] {
        crate::hex::decode(s).unwrap()
    }

    /// 3GPP TS 35.208 §4.3 test sets 1–6: K, RAND, SQN, AMF, OP, then OPc, f1, f1*, f2, f3,
    /// f4, f5, f5*. Values typed from the spec's tables and cross-checked against an
    /// independent copy (Legato's le_iks Milenage test, which tabulates the same six sets).
    #[rustfmt::skip]
    const SETS: [[&str; 13]; 6] = [
        ["465b5ce8b199b49faa5f0a2ee238a6bc", "23553cbe9637a89d218ae64dae47bf35", "ff9bb4d0b607", "b9b9",
         "cdc202d5123e20f62b6d676ac72cb318", "cd63cb71954a9f4e48a5994e37a02baf",
         "4a9ffac354dfafb3", "01cfaf9ec4e871e9", "a54211d5e3ba50bf",
         "b40ba9a3c58b2a05bbf0d987b21bf8cb", "f769bcd751044604127672711c6d3441",
         "aa689c648370", "451e8beca43b"],
        ["0396eb317b6d1c36f19c1c84cd6ffd16", "c00d603103dcee52c4478119494202e8", "fd8eef40df7d", "af17",
         "ff53bade17df5d4e793073ce9d7579fa", "53c15671c60a4b731c55b4a441c0bde2",
         "5df5b31807e258b0", "a8c016e51ef4a343", "d3a628ed988620f0",
         "58c433ff7a7082acd424220f2b67c556", "21a8c1f929702adb3e738488b9f5c5da",
         "c47783995f72", "30f1197061c1"],
        ["fec86ba6eb707ed08905757b1bb44b8f", "9f7c8d021accf4db213ccff0c7f71a6a", "9d0277595ffc", "725c",
         "dbc59adcb6f9a0ef735477b7fadf8374", "1006020f0a478bf6b699f15c062e42b3",
         "9cabc3e99baf7281", "95814ba2b3044324", "8011c48c0c214ed2",
         "5dbdbb2954e8f3cde665b046179a5098", "59a92d3b476a0443487055cf88b2307b",
         "33484dc2136b", "deacdd848cc6"],
        ["9e5944aea94b81165c82fbf9f32db751", "ce83dbc54ac0274a157c17f80d017bd6", "0b604a81eca8", "9e09",
         "223014c5806694c007ca1eeef57f004f", "a64a507ae1a2a98bb88eb4210135dc87",
         "74a58220cba84c49", "ac2cc74a96871837", "f365cd683cd92e96",
         "e203edb3971574f5a94b0d61b816345d", "0c4524adeac041c4dd830d20854fc46b",
         "f0b9c08ad02e", "6085a86c6f63"],
        ["4ab1deb05ca6ceb051fc98e77d026a84", "74b0cd6031a1c8339b2b6ce2b8c4a186", "e880a1b580b6", "9f07",
         "2d16c5cd1fdf6b22383584e3bef2a8d8", "dcf07cbd51855290b92a07a9891e523e",
         "49e785dd12626ef2", "9e85790336bb3fa2", "5860fc1bce351e7e",
         "7657766b373d1c2138f307e3de9242f9", "1c42e960d89b8fa99f2744e0708ccb53",
         "31e11a609118", "fe2555e54aa9"],
        ["6c38a116ac280c454f59332ee35c8c4f", "ee6466bc96202c5a557abbeff8babf63", "414b98222181", "4464",
         "1ba00a1a7c6700ac8c3ff3e96ad08725", "3803ef5363b947c6aaa225e58fae3934",
         "078adfb488241a57", "80246b8d0186bcf1", "16c8233f05a0ac28",
         "3f8c7587fe8e4b233af676aede30ba3b", "a7466cc1e6b2a1337d49d3b66e95d7b4",
         "45b0f69ab06c", "1f53cd2b1113"],
    ];

    #[test]
    fn ts35208_test_sets_1_to_6() {
        for (n, s) in SETS.iter().enumerate() {
            let set = n + 1;
            let (k, rand, sqn, amf, op) = (h(s[0]), h(s[1]), h::<6>(s[2]), h(s[3]), h(s[4]));
            let keys = AkaKeys::with_op(k, op, amf);
            assert_eq!(keys.opc, h(s[5]), "set {set}: OPc");
            assert_eq!(AkaKeys::with_opc(k, h(s[5]), amf), keys, "set {set}");
            let mut m = keys.milenage();
            assert_eq!(m.f1(&rand, &sqn, &amf), h(s[6]), "set {set}: f1");
            assert_eq!(m.f1star(&rand, &sqn, &amf), h(s[7]), "set {set}: f1*");
            let (res, ck, ik, ak) = m.f2345(&rand);
            assert_eq!(res, h(s[8]), "set {set}: f2");
            assert_eq!(ck, h(s[9]), "set {set}: f3");
            assert_eq!(ik, h(s[10]), "set {set}: f4");
            assert_eq!(ak, h(s[11]), "set {set}: f5");
            assert_eq!(m.f5star(&rand), h(s[12]), "set {set}: f5*");

            // The same vector through our network and UE sides: AUTN built from the set's SQN
            // and AMF, accepted by a USIM one step behind, RES/CK/IK as tabulated.
            let av = generate(&keys, rand, sqn_from_bytes(&sqn));
            assert_eq!(&av.autn[6..8], &amf[..]);
            assert_eq!(&av.autn[8..], &h::<8>(s[6])[..], "set {set}: MAC-A in AUTN");
            let ch = parse_nonce(&av.nonce()).unwrap();
            let mut usim = Usim::new(keys, sqn_from_bytes(&sqn) - 1);
            let r = usim.authenticate(&ch).unwrap();
            assert_eq!((r.res, r.ck, r.ik), (h(s[8]), h(s[9]), h(s[10])));
            assert_eq!(r.sqn, sqn_from_bytes(&sqn));
            assert_eq!(usim.sqn_ms, r.sqn, "set {set}: accepted SQN is stored");
        }
    }

    fn set1() -> (AkaKeys, [u8; 16], u64) {
        let s = &SETS[0];
        (
            AkaKeys::with_opc(h(s[0]), h(s[5]), h(s[3])),
            h(s[1]),
            sqn_from_bytes(&h::<6>(s[2])),
        )
    }

    #[test]
    fn nonce_may_carry_server_data_and_must_hold_32_bytes() {
        let (keys, rand, sqn) = set1();
        let av = generate(&keys, rand, sqn);
        let mut raw = av.rand.to_vec();
        raw.extend_from_slice(&av.autn);
        raw.extend_from_slice(b"server-specific");
        let ch = parse_nonce(&B64.encode(&raw)).unwrap();
        assert_eq!((ch.rand, ch.autn), (av.rand, av.autn));
        assert!(matches!(
            parse_nonce(&B64.encode([0u8; 31])),
            Err(AkaError::BadNonce(_))
        ));
        assert!(matches!(
            parse_nonce("not base64!"),
            Err(AkaError::BadNonce(_))
        ));
    }

    /// RFC 3310 §3.1: the digest is RFC 2617's with RES (raw bytes) as the password; `auth-int`
    /// hashes the body into HA2. The expected values are the RFC 2617 formulas written out
    /// here with the `md-5` crate, independently of `auth::digest_response`.
    #[test]
    fn rfc3310_digest_uses_res_as_password() {
        use md5::{Digest, Md5};
        fn md5hex(parts: &[&[u8]]) -> String {
            let mut m = Md5::new();
            m.update(parts.join(&b':'));
            crate::hex::encode(&m.finalize())
        }
        let (keys, rand, sqn) = set1();
        let av = generate(&keys, rand, sqn);
        let realm = "ims.mnc001.mcc001.3gppnetwork.org";
        let user = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
        let uri = "sip:ims.mnc001.mcc001.3gppnetwork.org";
        let value = format!(
            "Digest realm=\"{realm}\", nonce=\"{}\", algorithm=AKAv1-MD5, qop=\"auth,auth-int\"",
            av.nonce()
        );
        let ch = Challenge::parse(&value, false).unwrap();
        assert!(ch.is_aka());
        let r = Usim::new(keys, sqn - 32)
            .authenticate(&parse_nonce(&ch.nonce).unwrap())
            .unwrap();
        assert_eq!(r.res, h::<8>("a54211d5e3ba50bf"), "RES of test set 1");
        let body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n";
        let cred = Credentials {
            username: user,
            password: &r.res,
            method: "REGISTER",
            uri,
            body,
        };
        let ha1 = md5hex(&[user.as_bytes(), realm.as_bytes(), &r.res]);
        let ha2 = md5hex(&[b"REGISTER", uri.as_bytes()]);
        let want = md5hex(&[
            ha1.as_bytes(),
            ch.nonce.as_bytes(),
            b"00000001",
            b"0a4f113b",
            b"auth",
            ha2.as_bytes(),
        ]);
        assert_eq!(
            digest_response(&ch, &cred, Some("auth"), 1, "0a4f113b"),
            want
        );
        // The hex of RES is *not* the password (a common interop mistake).
        let hex_pw = crate::hex::encode(&r.res);
        let wrong = Credentials {
            password: hex_pw.as_bytes(),
            ..cred
        };
        assert_ne!(
            digest_response(&ch, &wrong, Some("auth"), 1, "0a4f113b"),
            want
        );

        let hbody = md5hex(&[body]);
        let ha2i = md5hex(&[b"REGISTER", uri.as_bytes(), hbody.as_bytes()]);
        let want_int = md5hex(&[
            ha1.as_bytes(),
            ch.nonce.as_bytes(),
            b"00000002",
            b"c2",
            b"auth-int",
            ha2i.as_bytes(),
        ]);
        let cred = Credentials {
            username: user,
            password: &r.res,
            method: "REGISTER",
            uri,
            body,
        };
        assert_eq!(
            digest_response(&ch, &cred, Some("auth-int"), 2, "c2"),
            want_int
        );
    }

    #[test]
    fn sqn_behind_the_ue_yields_auts_the_network_can_verify() {
        let (keys, rand, _) = set1();
        // The UE has accepted 0x1000 already; the network believes it is at 0x40.
        let mut usim = Usim::new(keys, 0x1000);
        let av = generate(&keys, rand, 0x40);
        let err = usim
            .authenticate(&parse_nonce(&av.nonce()).unwrap())
            .unwrap_err();
        let AkaError::SyncFailure { sqn, sqn_ms, auts } = err else {
            panic!("expected a sync failure, got {err:?}");
        };
        assert_eq!((sqn, sqn_ms), (0x40, 0x1000));
        assert_eq!(usim.sqn_ms, 0x1000, "a refused SQN does not move SQN_MS");
        // As a network would: AK* = f5*(RAND), SQN_MS = AUTS[0..6] ⊕ AK*, MAC-S = f1*(SQN_MS,
        // RAND, AMF=0000) computed from scratch with the crate, not through `resync`.
        let mut m = Milenage::new_with_opc(keys.k, keys.opc);
        let ak_star = m.f5star(&rand);
        let sqn_ms_b = xor6(&auts[..6], &ak_star);
        assert_eq!(sqn_from_bytes(&sqn_ms_b), 0x1000);
        assert_eq!(m.f1star(&rand, &sqn_ms_b, &[0, 0])[..], auts[6..]);
        // Round trip through base64 and the network helper.
        let wire = encode_auts(&auts);
        assert_eq!(
            resync(&keys, &rand, &decode_auts(&wire).unwrap()),
            Ok(0x1000)
        );
        // A network that re-challenges above SQN_MS is accepted.
        let av2 = generate(&keys, [7; 16], 0x1000 + 32);
        let r = usim
            .authenticate(&parse_nonce(&av2.nonce()).unwrap())
            .unwrap();
        assert_eq!((r.sqn, usim.sqn_ms), (0x1020, 0x1020));
        // Replaying the same challenge is now stale.
        assert!(matches!(
            usim.authenticate(&parse_nonce(&av2.nonce()).unwrap()),
            Err(AkaError::SyncFailure { .. })
        ));
        // Too far ahead is out of range too.
        let mut narrow = Usim {
            window: 64,
            ..Usim::new(keys, 0x1000)
        };
        let far = generate(&keys, rand, 0x1000 + 65);
        assert!(matches!(
            narrow.authenticate(&parse_nonce(&far.nonce()).unwrap()),
            Err(AkaError::SyncFailure { .. })
        ));
        // A forged AUTS (other K) is refused by the network.
        let other = AkaKeys::with_opc([9; 16], keys.opc, keys.amf);
        assert_eq!(resync(&other, &rand, &auts), Err(AkaError::MacSFailure));
        assert!(decode_auts("AAAA").is_err());
    }

    #[test]
    fn wrong_k_is_a_mac_failure_and_leaves_sqn_alone() {
        let (keys, rand, sqn) = set1();
        let av = generate(&keys, rand, sqn);
        let mut wrong = Usim::new(AkaKeys::with_opc([0x11; 16], keys.opc, keys.amf), 0);
        let e = wrong.authenticate(&parse_nonce(&av.nonce()).unwrap());
        assert_eq!(e, Err(AkaError::MacFailure));
        assert_eq!(wrong.sqn_ms, 0);
        assert!(e.unwrap_err().to_string().contains("MAC failure"));
        // A tampered AUTN (one bit of SQN⊕AK) fails the same way.
        let mut ch = parse_nonce(&av.nonce()).unwrap();
        ch.autn[0] ^= 1;
        assert_eq!(
            Usim::new(keys, 0).authenticate(&ch),
            Err(AkaError::MacFailure)
        );
    }

    #[test]
    fn sqn_parsing_says_what_is_wrong_and_keys_stay_out_of_debug() {
        assert_eq!(parse_sqn("20"), Ok(0x20));
        assert!(parse_sqn("1234567890abc").is_err());
        assert!(format!("{:?}", set1().0).contains("<16 bytes>"));
    }
}
