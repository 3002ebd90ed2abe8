//! Security agreement (RFC 3329) for 3GPP's IPsec mechanism (TS 33.203 §7 and Annex H): the
//! `Security-Client` a UE offers in its first REGISTER, the `Security-Server` the P-CSCF answers
//! in the 401, the `Security-Verify` the UE echoes in the protected REGISTER.
//!
//! Words only: which SAs those words make is [`crate::ipsec`]'s, the keys come from AKA.
//!
//! - A header value may hold several mechanisms, comma-separated, and a message several headers:
//!   [`parse_offers`] takes every `ipsec-3gpp` one and skips the others (`digest`, `tls`), which
//!   a UE does not need to understand to pick its own.
//! - `Security-Verify` must repeat the server's list exactly (RFC 3329 §2.3.1: the P-CSCF
//!   compares it with what it sent, to catch a downgrade), so the UE keeps the 401's values as
//!   received ([`server_list`]) instead of rewriting them from parsed fields.

use super::message::{param, split_list};
use std::fmt;

/// The mechanism name of 3GPP's IPsec (TS 33.203 Annex H).
pub const IPSEC_3GPP: &str = "ipsec-3gpp";

/// Integrity algorithms of TS 33.203 §6.1 (both 96-bit truncated HMACs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthAlg {
    HmacSha1_96,
    HmacMd5_96,
}

impl AuthAlg {
    pub const ALL: [AuthAlg; 2] = [AuthAlg::HmacSha1_96, AuthAlg::HmacMd5_96];

    /// The name RFC 3329/TS 33.203 give it on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthAlg::HmacSha1_96 => "hmac-sha-1-96",
            AuthAlg::HmacMd5_96 => "hmac-md5-96",
        }
    }

    pub fn parse(s: &str) -> Option<AuthAlg> {
        AuthAlg::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
    }
}

/// Encryption algorithms of TS 33.203 §6.2 (`null`: integrity only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncAlg {
    Null,
    AesCbc,
    DesEde3Cbc,
}

impl EncAlg {
    pub const ALL: [EncAlg; 3] = [EncAlg::Null, EncAlg::AesCbc, EncAlg::DesEde3Cbc];

    pub fn as_str(self) -> &'static str {
        match self {
            EncAlg::Null => "null",
            EncAlg::AesCbc => "aes-cbc",
            EncAlg::DesEde3Cbc => "des-ede3-cbc",
        }
    }

    pub fn parse(s: &str) -> Option<EncAlg> {
        EncAlg::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
    }
}

impl serde::Serialize for AuthAlg {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl serde::Serialize for EncAlg {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for AuthAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for EncAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `ipsec-3gpp` mechanism as a Security-Client or Security-Server states it: the sender's
/// own SPIs and ports (`spi-c`/`port-c` for its client side, `-s` for its server side).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IpsecOffer {
    pub alg: AuthAlg,
    /// `null` when the `ealg` parameter is absent (TS 33.203 Annex H).
    pub ealg: EncAlg,
    pub spi_c: u32,
    pub spi_s: u32,
    pub port_c: u16,
    pub port_s: u16,
    /// Preference (`q`), 0.0 to 1.0; absent counts as 0.
    pub q: f32,
}

/// What is wrong with a Security-* header. Named, so a refused registration says why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecAgreeError {
    #[error("{0} has no ipsec-3gpp mechanism (the P-CSCF does not offer 3GPP IPsec)")]
    NoIpsec(&'static str),
    #[error("{header}: ipsec-3gpp without the {param} parameter")]
    Missing {
        header: &'static str,
        param: &'static str,
    },
    #[error("{header}: {param}={value} is not a valid value")]
    Bad {
        header: &'static str,
        param: &'static str,
        value: String,
    },
    #[error("{header}: algorithm {value} is unknown (known: hmac-sha-1-96, hmac-md5-96; ealg null, aes-cbc, des-ede3-cbc)")]
    UnknownAlg { header: &'static str, value: String },
}

/// Every `ipsec-3gpp` mechanism in `values` (the values of every `header` of a message), in
/// order. The first malformed one is an error: a P-CSCF that misstates its SPIs or ports
/// cannot be talked to safely, and the UE should say so rather than pick another.
pub fn parse_offers<'a>(
    header: &'static str,
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<IpsecOffer>, SecAgreeError> {
    let mut out = Vec::new();
    for v in values {
        for mech in split_list(v) {
            let (name, params) = match mech.find(';') {
                Some(i) => (mech[..i].trim(), &mech[i..]),
                None => (mech.trim(), ""),
            };
            if !name.eq_ignore_ascii_case(IPSEC_3GPP) {
                continue;
            }
            out.push(parse_one(header, params)?);
        }
    }
    Ok(out)
}

fn parse_one(header: &'static str, params: &str) -> Result<IpsecOffer, SecAgreeError> {
    let need =
        |p: &'static str| param(params, p).ok_or(SecAgreeError::Missing { header, param: p });
    let alg_s = need("alg")?;
    let alg = AuthAlg::parse(alg_s).ok_or_else(|| SecAgreeError::UnknownAlg {
        header,
        value: alg_s.to_string(),
    })?;
    let ealg = match param(params, "ealg") {
        None => EncAlg::Null,
        Some(e) => EncAlg::parse(e).ok_or_else(|| SecAgreeError::UnknownAlg {
            header,
            value: e.to_string(),
        })?,
    };
    let bad = |p: &'static str, v: &str| SecAgreeError::Bad {
        header,
        param: p,
        value: v.to_string(),
    };
    let spi = |p: &'static str| -> Result<u32, SecAgreeError> {
        let v = need(p)?;
        // RFC 4303 §2.1 keeps 1..=255 for IANA, but Kamailio 5.6 hands out SPIs from 100 by
        // default and Linux takes them: only 0, never sent on the wire, is refused.
        v.parse::<u32>()
            .ok()
            .filter(|s| *s != 0)
            .ok_or_else(|| bad(p, v))
    };
    let port = |p: &'static str| -> Result<u16, SecAgreeError> {
        let v = need(p)?;
        v.parse::<u16>()
            .ok()
            .filter(|s| *s != 0)
            .ok_or_else(|| bad(p, v))
    };
    let q = match param(params, "q") {
        None => 0.0,
        Some(v) => v
            .parse::<f32>()
            .ok()
            .filter(|q| (0.0..=1.0).contains(q))
            .ok_or_else(|| bad("q", v))?,
    };
    Ok(IpsecOffer {
        alg,
        ealg,
        spi_c: spi("spi-c")?,
        spi_s: spi("spi-s")?,
        port_c: port("port-c")?,
        port_s: port("port-s")?,
        q,
    })
}

/// The server's mechanism a UE takes: the highest `q` among those whose algorithms the UE
/// offered (the first of equals, as listed).
pub fn choose(server: &[IpsecOffer], ours: &[(AuthAlg, EncAlg)]) -> Option<IpsecOffer> {
    server
        .iter()
        .filter(|o| ours.contains(&(o.alg, o.ealg)))
        .fold(None, |best: Option<&IpsecOffer>, o| match best {
            Some(b) if b.q >= o.q => Some(b),
            _ => Some(o),
        })
        .copied()
}

/// The value of a UE's Security-Client: one `ipsec-3gpp` per algorithm pair, all with the same
/// SPIs and ports (only one pair of SAs will be made).
pub fn client_value(
    algs: &[(AuthAlg, EncAlg)],
    spi_c: u32,
    spi_s: u32,
    port_c: u16,
    port_s: u16,
) -> String {
    let mut s = String::new();
    for (i, (a, e)) in algs.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!(
            "{IPSEC_3GPP};alg={a};ealg={e};spi-c={spi_c};spi-s={spi_s};port-c={port_c};port-s={port_s};prot=esp;mod=trans"
        ));
    }
    s
}

/// The 401's Security-Server values joined as one list, exactly as received: the UE's
/// Security-Verify.
pub fn server_list<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    values
        .into_iter()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Security-Server of Kamailio's ims_ipsec_pcscf in a 401, as its docs show it.
    const SERVER: &str = "ipsec-3gpp;q=0.1;prot=esp;mod=trans;spi-c=4096;spi-s=4097;port-c=5100;port-s=5200;ealg=null;alg=hmac-sha-1-96";

    #[test]
    fn a_p_cscf_offer_is_read_with_its_spis_ports_and_algorithms() {
        let o = parse_offers("Security-Server", [SERVER]).unwrap();
        assert_eq!(
            o,
            vec![IpsecOffer {
                alg: AuthAlg::HmacSha1_96,
                ealg: EncAlg::Null,
                spi_c: 4096,
                spi_s: 4097,
                port_c: 5100,
                port_s: 5200,
                q: 0.1,
            }]
        );
    }

    #[test]
    fn other_mechanisms_are_skipped_and_an_absent_ealg_is_null() {
        let v = "digest;d-alg=md5, ipsec-3gpp;alg=hmac-md5-96;spi-c=1000;spi-s=1001;port-c=6000;port-s=6001";
        let o = parse_offers("Security-Server", [v, "tls;q=0.2"]).unwrap();
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].alg, AuthAlg::HmacMd5_96);
        assert_eq!(o[0].ealg, EncAlg::Null);
        assert_eq!(o[0].q, 0.0);
        assert_eq!(
            parse_offers("Security-Server", ["tls;q=0.2"]).unwrap(),
            vec![]
        );
    }

    #[test]
    fn a_malformed_offer_names_what_is_wrong() {
        let e = |v: &str| {
            parse_offers("Security-Server", [v])
                .unwrap_err()
                .to_string()
        };
        assert!(
            e("ipsec-3gpp;alg=hmac-sha-1-96;spi-c=4096;spi-s=4097;port-c=5100")
                .contains("without the port-s parameter")
        );
        assert!(
            e("ipsec-3gpp;alg=hmac-sha-1-96;spi-c=0;spi-s=4097;port-c=1;port-s=2")
                .contains("spi-c=0")
        );
        assert!(
            e("ipsec-3gpp;alg=hmac-sha-1-96;spi-c=4096;spi-s=4097;port-c=70000;port-s=2")
                .contains("port-c=70000")
        );
        assert!(
            e("ipsec-3gpp;alg=hmac-sha-256;spi-c=4096;spi-s=4097;port-c=1;port-s=2")
                .contains("hmac-sha-256 is unknown")
        );
        assert!(
            e("ipsec-3gpp;alg=hmac-sha-1-96;ealg=rc4;spi-c=4096;spi-s=4097;port-c=1;port-s=2")
                .contains("rc4 is unknown")
        );
        assert!(
            e("ipsec-3gpp;q=2;alg=hmac-sha-1-96;spi-c=4096;spi-s=4097;port-c=1;port-s=2")
                .contains("q=2")
        );
    }

    #[test]
    fn the_ue_takes_the_preferred_offer_it_can_do() {
        let v = [
            "ipsec-3gpp;q=0.5;alg=hmac-md5-96;spi-c=1000;spi-s=1001;port-c=1;port-s=2",
            "ipsec-3gpp;q=0.9;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=2000;spi-s=2001;port-c=1;port-s=2",
            "ipsec-3gpp;q=0.7;alg=hmac-sha-1-96;spi-c=3000;spi-s=3001;port-c=1;port-s=2",
        ];
        let o = parse_offers("Security-Server", v).unwrap();
        let sha_null = (AuthAlg::HmacSha1_96, EncAlg::Null);
        let md5_null = (AuthAlg::HmacMd5_96, EncAlg::Null);
        assert_eq!(choose(&o, &[sha_null, md5_null]).unwrap().spi_c, 3000);
        assert_eq!(choose(&o, &[md5_null]).unwrap().spi_c, 1000);
        assert!(choose(&o, &[(AuthAlg::HmacMd5_96, EncAlg::AesCbc)]).is_none());
    }

    #[test]
    fn what_the_ue_writes_reads_back() {
        let algs = [
            (AuthAlg::HmacSha1_96, EncAlg::Null),
            (AuthAlg::HmacMd5_96, EncAlg::DesEde3Cbc),
        ];
        let v = client_value(&algs, 33333, 44444, 40100, 40101);
        let o = parse_offers("Security-Client", [v.as_str()]).unwrap();
        assert_eq!(o.len(), 2);
        for (x, (a, e)) in o.iter().zip(algs) {
            assert_eq!((x.alg, x.ealg), (a, e));
            assert_eq!(
                (x.spi_c, x.spi_s, x.port_c, x.port_s),
                (33333, 44444, 40100, 40101)
            );
        }
        assert_eq!(server_list([" a;q=1 ", "b"]), "a;q=1, b");
    }
}
