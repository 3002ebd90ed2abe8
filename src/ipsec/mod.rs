//! IMS security associations (3GPP TS 33.203 §7): what a UE's agreement with its P-CSCF makes
//! in the kernel, and the kernel call that makes it.
//!
//! - [`SaPair`] (here, pure): from the two sides' SPIs and ports (the Security-Client the UE
//!   sent, the Security-Server it chose, see [`crate::sip::secagree`]) and the AKA keys, the four
//!   transport-mode ESP SAs of a UE and the policies that force its protected ports through
//!   them. Nothing here touches the kernel, so every rule of the spec is unit-tested.
//! - [`xfrm`]: programs those SAs and policies over netlink (XFRM), remembers what it made and
//!   removes it again: on de-registration, and at the latest when it is dropped.
//!
//! The four SAs, as the UE sees them (`uc`/`us`: the UE's protected client/server port; `pc`/
//! `ps`: the P-CSCF's):
//!
//! | flow                         | carries                               | SPI (chosen by) |
//! |------------------------------|---------------------------------------|-----------------|
//! | UE:uc → P-CSCF:ps (out)      | the UE's requests                     | spi-s (P-CSCF)  |
//! | P-CSCF:ps → UE:uc (in)       | the answers to them                   | spi-c (UE)      |
//! | P-CSCF:pc → UE:us (in)       | requests to the UE (an INVITE to it)  | spi-s (UE)      |
//! | UE:us → P-CSCF:pc (out)      | the UE's answers to those             | spi-c (P-CSCF)  |
//!
//! Each SA is inbound at the side that chose its SPI (RFC 4301: the receiver picks the SPI).

pub mod xfrm;

use crate::sip::secagree::{AuthAlg, EncAlg};
use std::net::IpAddr;

/// One side's protected ports and the SPIs it chose for its inbound SAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Side {
    pub addr: IpAddr,
    /// The protected client port (requests leave from here; their answers come back here).
    pub port_c: u16,
    /// The protected server port (requests arrive here; their answers leave from here).
    pub port_s: u16,
    /// SPI of the SA inbound to `port_c`.
    pub spi_c: u32,
    /// SPI of the SA inbound to `port_s`.
    pub spi_s: u32,
}

/// Whether an SA or policy protects traffic into or out of the side that installs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    In,
    Out,
}

/// One ESP SA in transport mode, for UDP or TCP between two ports (the selector).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sa {
    pub dir: Dir,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub spi: u32,
    /// Ties the SA to its policy's template (unique per SA of one installer).
    pub reqid: u32,
    pub auth: AuthAlg,
    pub auth_key: Vec<u8>,
    pub enc: EncAlg,
    pub enc_key: Vec<u8>,
}

/// The UE's side of a security agreement: its four SAs (see the module comment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaPair {
    pub ue: Side,
    pub pcscf: Side,
    pub auth: AuthAlg,
    pub enc: EncAlg,
    /// Integrity key for ESP, from AKA's IK ([`integrity_key`]).
    pub auth_key: Vec<u8>,
    /// Encryption key for ESP, from AKA's CK ([`encryption_key`]); empty for `null`.
    pub enc_key: Vec<u8>,
}

impl SaPair {
    /// The pair a UE makes from AKA's CK and IK (TS 33.203 Annex I for the key lengths).
    pub fn new(
        ue: Side,
        pcscf: Side,
        auth: AuthAlg,
        enc: EncAlg,
        ck: &[u8; 16],
        ik: &[u8; 16],
    ) -> SaPair {
        SaPair {
            ue,
            pcscf,
            auth,
            enc,
            auth_key: integrity_key(auth, ik),
            enc_key: encryption_key(enc, ck),
        }
    }

    /// The four SAs the UE installs, `reqid0`..`reqid0 + 3` as their reqids.
    pub fn ue_sas(&self, reqid0: u32) -> [Sa; 4] {
        let (u, p) = (&self.ue, &self.pcscf);
        let sa = |dir, src, dst, sport, dport, spi, n: u32| Sa {
            dir,
            src,
            dst,
            sport,
            dport,
            spi,
            reqid: reqid0 + n,
            auth: self.auth,
            auth_key: self.auth_key.clone(),
            enc: self.enc,
            enc_key: self.enc_key.clone(),
        };
        [
            sa(Dir::Out, u.addr, p.addr, u.port_c, p.port_s, p.spi_s, 0),
            sa(Dir::In, p.addr, u.addr, p.port_s, u.port_c, u.spi_c, 1),
            sa(Dir::In, p.addr, u.addr, p.port_c, u.port_s, u.spi_s, 2),
            sa(Dir::Out, u.addr, p.addr, u.port_s, p.port_c, p.spi_c, 3),
        ]
    }

    /// The same agreement as the P-CSCF installs it (for tests that play the P-CSCF with the
    /// same code, and to check the mirror: each of its SAs is one of the UE's, reversed).
    pub fn pcscf_sas(&self, reqid0: u32) -> [Sa; 4] {
        self.ue_sas(reqid0).map(|mut s| {
            s.dir = match s.dir {
                Dir::In => Dir::Out,
                Dir::Out => Dir::In,
            };
            s
        })
    }
}

/// ESP's integrity key from AKA's IK (TS 33.203 Annex I): IK itself for HMAC-MD5-96; IK followed
/// by 32 zero bits for HMAC-SHA-1-96, whose key is 160 bits.
pub fn integrity_key(alg: AuthAlg, ik: &[u8; 16]) -> Vec<u8> {
    let mut k = ik.to_vec();
    if alg == AuthAlg::HmacSha1_96 {
        k.extend_from_slice(&[0; 4]);
    }
    k
}

/// ESP's encryption key from AKA's CK (TS 33.203 Annex I): CK for AES-CBC; CK1 ‖ CK2 ‖ CK1
/// (CK = CK1 ‖ CK2, 64 bits each) for 3DES-EDE-CBC, whose key is 192 bits; none for NULL.
pub fn encryption_key(alg: EncAlg, ck: &[u8; 16]) -> Vec<u8> {
    match alg {
        EncAlg::Null => Vec::new(),
        EncAlg::AesCbc => ck.to_vec(),
        EncAlg::DesEde3Cbc => [&ck[..], &ck[..8]].concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> SaPair {
        let ue = Side {
            addr: "192.0.2.10".parse().unwrap(),
            port_c: 40100,
            port_s: 40101,
            spi_c: 1000,
            spi_s: 1001,
        };
        let pcscf = Side {
            addr: "192.0.2.1".parse().unwrap(),
            port_c: 5100,
            port_s: 5200,
            spi_c: 2000,
            spi_s: 2001,
        };
        SaPair::new(
            ue,
            pcscf,
            AuthAlg::HmacSha1_96,
            EncAlg::Null,
            &[7; 16],
            &[9; 16],
        )
    }

    #[test]
    fn each_sa_is_inbound_where_its_spi_was_chosen() {
        let p = pair();
        let sas = p.ue_sas(10);
        // In at the UE: the UE's own SPIs, to its own ports.
        for s in sas.iter().filter(|s| s.dir == Dir::In) {
            assert_eq!(s.dst, p.ue.addr);
            assert!([p.ue.spi_c, p.ue.spi_s].contains(&s.spi), "{s:?}");
            let port = if s.spi == p.ue.spi_c {
                p.ue.port_c
            } else {
                p.ue.port_s
            };
            assert_eq!(s.dport, port);
        }
        // Out of the UE: the P-CSCF's SPIs, to its ports.
        for s in sas.iter().filter(|s| s.dir == Dir::Out) {
            assert_eq!(s.dst, p.pcscf.addr);
            let port = if s.spi == p.pcscf.spi_s {
                p.pcscf.port_s
            } else {
                p.pcscf.port_c
            };
            assert_eq!(s.dport, port);
        }
        // Requests from the UE's client port go to the P-CSCF's server port and back.
        assert!(sas
            .iter()
            .any(|s| s.sport == 40100 && s.dport == 5200 && s.spi == 2001));
        assert!(sas
            .iter()
            .any(|s| s.sport == 5200 && s.dport == 40100 && s.spi == 1000));
        let reqids: std::collections::HashSet<u32> = sas.iter().map(|s| s.reqid).collect();
        assert_eq!(reqids.len(), 4);
        // The P-CSCF's view is the same SAs with the directions swapped.
        for (u, c) in sas.iter().zip(p.pcscf_sas(10)) {
            assert_eq!((u.src, u.dst, u.spi), (c.src, c.dst, c.spi));
            assert_ne!(u.dir, c.dir);
        }
    }

    #[test]
    fn esp_keys_have_the_lengths_of_ts_33_203_annex_i() {
        let ik: [u8; 16] = std::array::from_fn(|i| i as u8);
        let ck: [u8; 16] = std::array::from_fn(|i| 0x80 + i as u8);
        let sha = integrity_key(AuthAlg::HmacSha1_96, &ik);
        assert_eq!(sha.len(), 20);
        assert_eq!(&sha[..16], &ik);
        assert_eq!(&sha[16..], &[0; 4]);
        assert_eq!(integrity_key(AuthAlg::HmacMd5_96, &ik), ik.to_vec());
        assert!(encryption_key(EncAlg::Null, &ck).is_empty());
        assert_eq!(encryption_key(EncAlg::AesCbc, &ck), ck.to_vec());
        let des = encryption_key(EncAlg::DesEde3Cbc, &ck);
        assert_eq!(des.len(), 24);
        assert_eq!(&des[..16], &ck);
        assert_eq!(&des[16..], &ck[..8]);
    }
}
