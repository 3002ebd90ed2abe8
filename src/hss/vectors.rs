//! Authentication vectors for Digest AKAv1-MD5 (TS 33.203 §6.1, TS 33.102 §6.3) and
//! re-synchronisation from AUTS (TS 33.102 §6.3.5), in the form the Cx code hands them around
//! (keys as the subscriber file holds them, the SQN kept with the vector).
//!
//! The AKA itself (Milenage f1–f5*, AUTN, AUTS, MAC-S checks) is [`crate::sip::aka`]'s, the one
//! the UE side runs: an HSS and a UE that computed it apart could agree with each other and
//! still both be wrong.

use crate::sip::aka::{self, AkaKeys};

pub use crate::sip::aka::{sqn_bytes, sqn_from_bytes, RESYNC_AMF, SQN_MASK};

/// How far SQN_HE advances per vector: SEQ + 1 with a 5-bit IND left at 0 (TS 33.102 Annex
/// C.3.2, the "SEQ||IND" scheme). A UE that accepts any SQN above the highest it has seen
/// accepts these.
pub const SQN_STEP: u64 = 32;

/// One authentication vector, as the HSS hands it to the S-CSCF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthVector {
    pub rand: [u8; 16],
    /// (SQN ⊕ AK) ‖ AMF ‖ MAC-A
    pub autn: [u8; 16],
    pub xres: [u8; 8],
    pub ck: [u8; 16],
    pub ik: [u8; 16],
    /// The SQN this vector carries.
    pub sqn: u64,
}

impl AuthVector {
    /// SIP-Authenticate: RAND ‖ AUTN (its base64 is the nonce of the 401).
    pub fn sip_authenticate(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[..16].copy_from_slice(&self.rand);
        out[16..].copy_from_slice(&self.autn);
        out
    }
}

/// The vector for `sqn` and `rand` (f1 for MAC-A, f2 RES, f3 CK, f4 IK, f5 AK).
pub fn generate(
    k: &[u8; 16],
    opc: &[u8; 16],
    amf: &[u8; 2],
    sqn: u64,
    rand: [u8; 16],
) -> AuthVector {
    let v = aka::generate(&AkaKeys::with_opc(*k, *opc, *amf), rand, sqn);
    AuthVector {
        rand: v.rand,
        autn: v.autn,
        xres: v.xres,
        ck: v.ck,
        ik: v.ik,
        sqn: sqn & SQN_MASK,
    }
}

/// Why an AUTS was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResyncError {
    #[error("AUTS is {0} bytes, not 14")]
    Length(usize),
    #[error("MAC-S of AUTS does not verify")]
    MacS,
}

/// Recovers SQN_MS from AUTS = (SQN_MS ⊕ AK*) ‖ MAC-S for the RAND it answers: MAC-S is checked
/// with the dummy AMF 0x0000 of TS 33.102 §6.3.3, and, failing that, with the subscriber's own
/// AMF (which some UEs use).
pub fn resync(
    k: &[u8; 16],
    opc: &[u8; 16],
    amf: &[u8; 2],
    rand: &[u8; 16],
    auts: &[u8],
) -> Result<u64, ResyncError> {
    let auts: &[u8; 14] = auts
        .try_into()
        .map_err(|_| ResyncError::Length(auts.len()))?;
    // A 14-byte AUTS can only fail its MAC-S check.
    aka::resync_lenient(&AkaKeys::with_opc(*k, *opc, *amf), rand, auts)
        .map_err(|_| ResyncError::MacS)
}

/// What a UE computes for AUTS (used by the tests; kept here so HSS and tests agree on it).
pub fn make_auts(k: &[u8; 16], opc: &[u8; 16], rand: &[u8; 16], sqn_ms: u64) -> [u8; 14] {
    // AUTS does not depend on the AMF: MAC-S uses the dummy one.
    aka::auts(&AkaKeys::with_opc(*k, *opc, RESYNC_AMF), rand, sqn_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::encode as to_hex;
    use crate::sip::aka::{AkaError, Usim};
    use milenage::Milenage;

    fn h<const N: usize>(s: &str) -> [u8; N] {
        crate::hex::decode(s).unwrap()
    }

    /// TS 35.208 §4.3 test sets 1 and 2 (K, RAND, SQN, AMF, OPc → f1, f1*, f2, f3, f4, f5, f5*).
    struct Set {
        k: &'static str,
        rand: &'static str,
        sqn: &'static str,
        amf: &'static str,
        opc: &'static str,
        mac_a: &'static str,
        mac_s: &'static str,
        res: &'static str,
        ck: &'static str,
        ik: &'static str,
        ak: &'static str,
        ak_star: &'static str,
    }

    const SETS: [Set; 2] = [
        Set {
            k: "465b5ce8b199b49faa5f0a2ee238a6bc",
            rand: "23553cbe9637a89d218ae64dae47bf35",
            sqn: "ff9bb4d0b607",
            amf: "b9b9",
            opc: "cd63cb71954a9f4e48a5994e37a02baf",
            mac_a: "4a9ffac354dfafb3",
            mac_s: "01cfaf9ec4e871e9",
            res: "a54211d5e3ba50bf",
            ck: "b40ba9a3c58b2a05bbf0d987b21bf8cb",
            ik: "f769bcd751044604127672711c6d3441",
            ak: "aa689c648370",
            ak_star: "451e8beca43b",
        },
        Set {
            k: "0396eb317b6d1c36f19c1c84cd6ffd16",
            rand: "c00d603103dcee52c4478119494202e8",
            sqn: "fd8eef40df7d",
            amf: "af17",
            opc: "53c15671c60a4b731c55b4a441c0bde2",
            mac_a: "5df5b31807e258b0",
            mac_s: "a8c016e51ef4a343",
            res: "d3a628ed988620f0",
            ck: "58c433ff7a7082acd424220f2b67c556",
            ik: "21a8c1f929702adb3e738488b9f5c5da",
            ak: "c47783995f72",
            ak_star: "30f1197061c1",
        },
    ];

    #[test]
    fn vectors_match_ts_35_208() {
        for s in &SETS {
            let sqn = sqn_from_bytes(&h(s.sqn));
            let av = generate(&h(s.k), &h(s.opc), &h(s.amf), sqn, h(s.rand));
            assert_eq!(to_hex(&av.xres), s.res);
            assert_eq!(to_hex(&av.ck), s.ck);
            assert_eq!(to_hex(&av.ik), s.ik);
            assert_eq!(to_hex(&av.autn[8..]), s.mac_a);
            assert_eq!(to_hex(&av.autn[6..8]), s.amf);
            let ak: [u8; 6] = h(s.ak);
            let conc: Vec<u8> = (0..6).map(|i| av.autn[i] ^ ak[i]).collect();
            assert_eq!(to_hex(&conc), s.sqn);
            assert_eq!(&av.sip_authenticate()[..16], &h::<16>(s.rand));
            // f1* and f5* with the set's own AMF
            let mut m = Milenage::new_with_opc(h(s.k), h(s.opc));
            assert_eq!(to_hex(&m.f1star(&h(s.rand), &h(s.sqn), &h(s.amf))), s.mac_s);
            assert_eq!(to_hex(&m.f5star(&h(s.rand))), s.ak_star);
        }
    }

    #[test]
    fn resync_recovers_sqn_ms() {
        let s = &SETS[0];
        let (k, opc, amf, rand) = (h(s.k), h(s.opc), h(s.amf), h(s.rand));
        let sqn_ms = 0x0000_1234_5660;
        let auts = make_auts(&k, &opc, &rand, sqn_ms);
        assert_eq!(resync(&k, &opc, &amf, &rand, &auts), Ok(sqn_ms));
        // AUTS made with the subscriber's AMF (not the dummy) is accepted too
        let mut m = Milenage::new_with_opc(k, opc);
        let ak_star = m.f5star(&rand);
        let sb = sqn_bytes(sqn_ms);
        let mut auts2 = [0u8; 14];
        for i in 0..6 {
            auts2[i] = sb[i] ^ ak_star[i];
        }
        auts2[6..].copy_from_slice(&m.f1star(&rand, &sb, &amf));
        assert_eq!(resync(&k, &opc, &amf, &rand, &auts2), Ok(sqn_ms));
        // a flipped MAC-S bit, a wrong length
        let mut bad = auts;
        bad[13] ^= 1;
        assert_eq!(resync(&k, &opc, &amf, &rand, &bad), Err(ResyncError::MacS));
        assert_eq!(
            resync(&k, &opc, &amf, &rand, &auts[..13]),
            Err(ResyncError::Length(13))
        );
    }

    #[test]
    fn sqn_bytes_round_trip() {
        assert_eq!(sqn_bytes(0xff9b_b4d0_b607), h::<6>("ff9bb4d0b607"));
        assert_eq!(sqn_from_bytes(&h("ff9bb4d0b607")), 0xff9b_b4d0_b607);
        assert_eq!(sqn_bytes(1 << 48), [0; 6]);
    }

    /// The HSS's vector through the UE's AKA: accepted, RES = XRES; replayed, the UE answers
    /// AUTS, from which the HSS recovers the UE's SQN and makes a vector the UE accepts again.
    #[test]
    fn round_trip_with_the_ue_including_resync() {
        let s = &SETS[0];
        let (k, opc, amf) = (h(s.k), h(s.opc), h(s.amf));
        let mut usim = Usim::new(AkaKeys::with_opc(k, opc, amf), 0x1000);
        let ch = |v: &AuthVector| aka::parse_nonce(&aka::nonce(&v.rand, &v.autn)).unwrap();

        let v1 = generate(&k, &opc, &amf, 0x1000 + SQN_STEP, [1; 16]);
        let r = usim.authenticate(&ch(&v1)).unwrap();
        assert_eq!((r.res, r.ck, r.ik, r.sqn), (v1.xres, v1.ck, v1.ik, v1.sqn));
        assert_eq!(r.amf, amf);

        // An HSS that lost its state starts again low: the UE refuses and sends AUTS.
        let stale = generate(&k, &opc, &amf, SQN_STEP, [2; 16]);
        let Err(AkaError::SyncFailure { auts, .. }) = usim.authenticate(&ch(&stale)) else {
            panic!("a stale SQN must yield AUTS");
        };
        assert_eq!(auts, make_auts(&k, &opc, &stale.rand, usim.sqn_ms));
        let sqn_ms = resync(&k, &opc, &amf, &stale.rand, &auts).unwrap();
        assert_eq!(sqn_ms, v1.sqn);
        let v2 = generate(&k, &opc, &amf, sqn_ms + SQN_STEP, [3; 16]);
        assert_eq!(usim.authenticate(&ch(&v2)).unwrap().res, v2.xres);

        // A UE with another K fails the HSS's MAC-A, and its AUTS fails the HSS's MAC-S.
        let mut other = Usim::new(AkaKeys::with_opc([7; 16], opc, amf), 0);
        assert_eq!(other.authenticate(&ch(&v2)), Err(AkaError::MacFailure));
        let forged = make_auts(&[7; 16], &opc, &v2.rand, 0x2000);
        assert_eq!(
            resync(&k, &opc, &amf, &v2.rand, &forged),
            Err(ResyncError::MacS)
        );
    }
}
