//! A UE's side of the security agreement (TS 33.203 §7.2, TS 24.229 §5.1.1.2, RFC 3329
//! §2.3.1), sans IO: which Security-* headers each REGISTER carries, and, from the 401 and the
//! AKA keys, the SA pair the owner must make before it sends the protected REGISTER.
//!
//! The machine neither makes SAs nor picks ports: the owner binds the UE's protected ports,
//! chooses its SPIs ([`UeSecurity::new`]), makes the SAs it is handed ([`crate::ipsec::xfrm`]) and
//! sends every later request of the UE from its protected client port to the P-CSCF's
//! protected server port.
//!
//! Every authenticated re-registration renews the SAs (TS 33.203 §7.4, TS 24.229 §5.1.1.4.1):
//! a protected REGISTER offers a new protected client port and new SPIs (the protected server
//! port stays) beside Security-Verify; if the network challenges it, the 401's Security-Server
//! and the new challenge's keys make a second pair, the REGISTER answering the challenge goes
//! through that pair, and its 200 makes it the agreement. The owner keeps the old pair a while
//! for the transactions begun on it. A re-registration answered at once leaves the offer unused.
//!
//! What Kamailio 5.6's `ims_ipsec_pcscf` needs of a UE (docs/ipsec.md) shapes two choices:
//! it reads only the last offer of a Security-Client, so the UE offers one algorithm pair; and
//! it keeps the first Security-Client a UE sent from an address, so an attempt that starts
//! over unprotected (a retry) needs fresh SPIs and ports: [`UeSecurity::restart`].

use crate::ipsec::{SaPair, Side};
use crate::sip::builder::Writer;
use crate::sip::secagree::{self, AuthAlg, EncAlg, SecAgreeError};
use crate::sip::Message;
use std::net::IpAddr;

/// What every UE of a run offers, and to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SecurityConfig {
    pub alg: AuthAlg,
    pub ealg: EncAlg,
    /// The P-CSCF's address: the far end of every SA (its unprotected REGISTERs go there).
    pub pcscf: IpAddr,
}

/// Why a UE could not agree on security with its P-CSCF. Each is counted by name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AgreeError {
    #[error("the 401 has no Security-Server (the P-CSCF does not do sec-agree, or refused our Security-Client)")]
    NoSecurityServer,
    #[error(transparent)]
    Malformed(#[from] SecAgreeError),
    #[error("the P-CSCF offers no {alg}/{ealg} (it offers {offered})")]
    AlgorithmRefused {
        alg: AuthAlg,
        ealg: EncAlg,
        offered: String,
    },
    #[error("the 401 carries no AKA challenge, so there are no keys for the SAs")]
    NoKeys,
    #[error("the 401 renews the SAs, but the REGISTER it answers offered no new ports and SPIs")]
    NoRenewalOffer,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Nothing agreed: REGISTERs go unprotected with Security-Client.
    Offering,
    /// Agreed: the pair to make (or made), the Security-Verify to send, and the pair a
    /// re-authentication agreed on, while its REGISTER is under way.
    Agreed {
        pair: SaPair,
        verify: String,
        renewal: Option<Box<(SaPair, String)>>,
    },
}

/// One UE's security agreement. See the module comment.
#[derive(Clone, Debug)]
pub struct UeSecurity {
    ue: Side,
    /// What the UE's protected REGISTERs offer for the next pair: a client port and SPIs
    /// never offered before, its server port. `None` until the owner gives one.
    next: Option<Side>,
    state: State,
}

impl UeSecurity {
    /// `ue`: the UE's address, its protected ports (bound by the owner) and the SPIs it chose
    /// for its inbound SAs.
    pub fn new(ue: Side) -> UeSecurity {
        UeSecurity {
            ue,
            next: None,
            state: State::Offering,
        }
    }

    pub fn ue(&self) -> &Side {
        &self.ue
    }

    /// The pair agreed on, once the 401 was taken.
    pub fn agreed(&self) -> Option<&SaPair> {
        match &self.state {
            State::Agreed { pair, .. } => Some(pair),
            State::Offering => None,
        }
    }

    /// The pair a re-authentication agreed on, until its REGISTER's 200 makes it the
    /// agreement ([`UeSecurity::commit_renewal`]) or the attempt fails.
    pub fn renewal(&self) -> Option<&SaPair> {
        match &self.state {
            State::Agreed {
                renewal: Some(r), ..
            } => Some(&r.0),
            _ => None,
        }
    }

    /// The pair the owner is to make now: a renewal's, else the agreement's.
    pub fn to_make(&self) -> Option<&SaPair> {
        self.renewal().or(self.agreed())
    }

    /// Forgets the agreement for an attempt that starts over unprotected, with new SPIs and
    /// ports (see the module comment). The owner removes the old pair's SAs.
    pub fn restart(&mut self, ue: Side) {
        self.ue = ue;
        self.next = None;
        self.state = State::Offering;
    }

    /// Gives the client port and SPIs the UE's protected REGISTERs offer for a renewal (its
    /// server port stays). Each offer is used once: a 401 that takes it makes SAs on it at
    /// the P-CSCF, whatever becomes of the attempt.
    pub fn set_next(&mut self, next: Side) {
        self.next = Some(next);
    }

    pub fn next(&self) -> Option<&Side> {
        self.next.as_ref()
    }

    /// Whether a protected REGISTER can offer a renewal: agreed, and given the next ports.
    pub fn can_renew(&self) -> bool {
        matches!(self.state, State::Agreed { .. }) && self.next.is_some()
    }

    /// The Security-Client value: one `ipsec-3gpp` offer with the UE's SPIs and ports, or
    /// with the next pair's if `renew` and [`UeSecurity::can_renew`]. The answer to a
    /// renewal's challenge repeats the offer it answers.
    pub fn client_value(&self, cfg: &SecurityConfig, renew: bool) -> String {
        let ue = match (&self.next, self.renewal()) {
            (_, Some(r)) => &r.ue,
            (Some(next), None) if renew && self.can_renew() => next,
            _ => &self.ue,
        };
        secagree::client_value(
            &[(cfg.alg, cfg.ealg)],
            ue.spi_c,
            ue.spi_s,
            ue.port_c,
            ue.port_s,
        )
    }

    /// Adds the sec-agree headers to a REGISTER (TS 24.229 §5.1.1.2.1, §5.1.1.5.1): always
    /// Security-Client (offering the next pair if `renew`, see
    /// [`UeSecurity::client_value`]) with `Require` and `Proxy-Require: sec-agree`; once
    /// agreed, also Security-Verify, the P-CSCF's list as it sent it.
    pub fn write_register_headers(&self, cfg: &SecurityConfig, renew: bool, w: &mut Writer) {
        w.header("Security-Client", self.client_value(cfg, renew));
        w.header("Require", "sec-agree");
        w.header("Proxy-Require", "sec-agree");
        match &self.state {
            // The answer to a re-authentication verifies the offer it answers (TS 24.229
            // §5.1.1.5.1); any other protected REGISTER the agreement in force.
            State::Agreed {
                renewal: Some(r), ..
            } => w.header("Security-Verify", &r.1),
            State::Agreed { verify, .. } => w.header("Security-Verify", verify),
            State::Offering => {}
        }
    }

    /// Takes the 401 to an unprotected REGISTER: the P-CSCF's offer that matches ours and the
    /// AKA keys (`ck`, `ik` of the challenge just answered) make the SA pair to install, with
    /// the P-CSCF at `pcscf_addr` (the address the REGISTER went to).
    pub fn agree(
        &mut self,
        cfg: &SecurityConfig,
        msg: &Message<'_>,
        pcscf_addr: IpAddr,
        keys: Option<([u8; 16], [u8; 16])>,
    ) -> Result<&SaPair, AgreeError> {
        let (pair, verify) = self.take_offer(cfg, msg, self.ue, pcscf_addr, keys)?;
        self.state = State::Agreed {
            pair,
            verify,
            renewal: None,
        };
        Ok(self.agreed().expect("just agreed"))
    }

    /// Takes the 401 to a protected REGISTER that offered [`UeSecurity::next`]: its
    /// Security-Server and the new challenge's keys make the pair that will replace the
    /// agreement (TS 33.203 §7.4). The offer is spent either way.
    pub fn renew(
        &mut self,
        cfg: &SecurityConfig,
        msg: &Message<'_>,
        pcscf_addr: IpAddr,
        keys: Option<([u8; 16], [u8; 16])>,
    ) -> Result<&SaPair, AgreeError> {
        let next = self.next.take().ok_or(AgreeError::NoRenewalOffer)?;
        let taken = self.take_offer(cfg, msg, next, pcscf_addr, keys)?;
        let State::Agreed { renewal, .. } = &mut self.state else {
            return Err(AgreeError::NoRenewalOffer);
        };
        *renewal = Some(Box::new(taken));
        Ok(self.renewal().expect("just agreed"))
    }

    /// The renewal's REGISTER got its 200: its pair is the agreement now, and the UE's
    /// ports and SPIs are its. Returns the pair it replaces, for the owner to take away.
    pub fn commit_renewal(&mut self) -> Option<SaPair> {
        let State::Agreed {
            pair,
            verify,
            renewal,
        } = &mut self.state
        else {
            return None;
        };
        let (new, new_verify) = *renewal.take()?;
        self.ue = new.ue;
        *verify = new_verify;
        Some(std::mem::replace(pair, new))
    }

    /// The renewal's attempt failed: the agreement in force stays.
    pub fn abandon_renewal(&mut self) -> Option<SaPair> {
        match &mut self.state {
            State::Agreed { renewal, .. } => renewal.take().map(|r| r.0),
            State::Offering => None,
        }
    }

    /// The P-CSCF's offer in a 401 that matches ours, with `ue` as the UE's side of the pair
    /// and the Security-Verify that echoes it.
    fn take_offer(
        &self,
        cfg: &SecurityConfig,
        msg: &Message<'_>,
        ue: Side,
        pcscf_addr: IpAddr,
        keys: Option<([u8; 16], [u8; 16])>,
    ) -> Result<(SaPair, String), AgreeError> {
        let server: Vec<&str> = msg
            .raw_headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Security-Server"))
            .map(|(_, v)| v)
            .collect();
        if server.is_empty() {
            return Err(AgreeError::NoSecurityServer);
        }
        let offers = secagree::parse_offers("Security-Server", server.iter().copied())?;
        let Some(o) = secagree::choose(&offers, &[(cfg.alg, cfg.ealg)]) else {
            return Err(AgreeError::AlgorithmRefused {
                alg: cfg.alg,
                ealg: cfg.ealg,
                offered: if offers.is_empty() {
                    "no ipsec-3gpp".to_string()
                } else {
                    offers
                        .iter()
                        .map(|o| format!("{}/{}", o.alg, o.ealg))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            });
        };
        let (ck, ik) = keys.ok_or(AgreeError::NoKeys)?;
        let pcscf = Side {
            addr: pcscf_addr,
            port_c: o.port_c,
            port_s: o.port_s,
            spi_c: o.spi_c,
            spi_s: o.spi_s,
        };
        let pair = SaPair::new(ue, pcscf, o.alg, o.ealg, &ck, &ik);
        Ok((pair, secagree::server_list(server)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ue() -> Side {
        Side {
            addr: "10.45.0.2".parse().unwrap(),
            port_c: 40100,
            port_s: 40101,
            spi_c: 50000,
            spi_s: 50001,
        }
    }

    const CFG: SecurityConfig = SecurityConfig {
        alg: AuthAlg::HmacSha1_96,
        ealg: EncAlg::Null,
        pcscf: IpAddr::V4(std::net::Ipv4Addr::new(10, 45, 0, 1)),
    };

    fn unauthorized(security_server: &[&str]) -> Vec<u8> {
        let mut s = String::from(
            "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 10.45.0.2:5060;branch=z9hG4bK1\r\nFrom: <sip:u@ims>;tag=1\r\nTo: <sip:u@ims>;tag=2\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n",
        );
        for v in security_server {
            s.push_str(&format!("Security-Server: {v}\r\n"));
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        s.into_bytes()
    }

    fn register(sec: &UeSecurity) -> String {
        let mut w = Writer::request("REGISTER", "sip:ims");
        sec.write_register_headers(&CFG, true, &mut w);
        String::from_utf8(w.finish(None, b"")).unwrap()
    }

    #[test]
    fn the_first_register_offers_and_the_protected_one_verifies() {
        let mut sec = UeSecurity::new(ue());
        let first = register(&sec);
        assert!(first.contains("Security-Client: ipsec-3gpp;alg=hmac-sha-1-96;ealg=null;spi-c=50000;spi-s=50001;port-c=40100;port-s=40101;prot=esp;mod=trans\r\n"), "{first}");
        assert!(
            first.contains("Require: sec-agree\r\n")
                && first.contains("Proxy-Require: sec-agree\r\n")
        );
        assert!(!first.contains("Security-Verify"));
        // As Kamailio 5.6's ims_ipsec_pcscf writes it (docs/ipsec.md): no q, the UE's algorithms.
        let server = "ipsec-3gpp;prot=esp;mod=trans;spi-c=100;spi-s=101;port-c=5100;port-s=5200;alg=hmac-sha-1-96;ealg=null";
        let raw = unauthorized(&[server]);
        let msg = Message::parse(&raw).unwrap();
        let pair = sec
            .agree(
                &CFG,
                &msg,
                "10.45.0.1".parse().unwrap(),
                Some(([1; 16], [2; 16])),
            )
            .unwrap()
            .clone();
        assert_eq!(pair.pcscf.port_s, 5200);
        assert_eq!(pair.pcscf.spi_s, 101);
        assert_eq!(pair.auth_key.len(), 20);
        assert_eq!(&pair.auth_key[..16], &[2; 16], "IK keys the integrity");
        let second = register(&sec);
        assert!(
            second.contains(&format!("Security-Verify: {server}\r\n")),
            "{second}"
        );
        assert!(second.contains("Security-Client: ipsec-3gpp;alg=hmac-sha-1-96"));
        // A retry starts over unprotected, with what the owner gives it.
        let mut fresh = ue();
        fresh.spi_c += 2;
        sec.restart(fresh);
        assert!(sec.agreed().is_none());
        assert!(register(&sec).contains("spi-c=50002"));
    }

    /// Takes a 401 with Security-Server `server` and a challenge whose IK is `ik`: agrees, or
    /// `renew`s the agreement. The pair it makes.
    fn take_401(sec: &mut UeSecurity, server: &str, ik: [u8; 16], renew: bool) -> SaPair {
        let raw = unauthorized(&[server]);
        let msg = Message::parse(&raw).unwrap();
        let (addr, keys) = (CFG.pcscf, Some(([1; 16], ik)));
        let made = if renew {
            sec.renew(&CFG, &msg, addr, keys)
        } else {
            sec.agree(&CFG, &msg, addr, keys)
        };
        made.unwrap().clone()
    }

    /// TS 33.203 §7.4: a protected REGISTER offers the next client port and SPIs beside the
    /// agreement's Security-Verify; the 401 renews on them, the answer repeats the offer and
    /// verifies the new Security-Server, and the 200 puts the new pair in force.
    #[test]
    fn a_renewal_offers_the_next_ports_and_takes_over_once_committed() {
        let mut sec = UeSecurity::new(ue());
        let first =
            "ipsec-3gpp;spi-c=100;spi-s=101;port-c=5100;port-s=5200;alg=hmac-sha-1-96;ealg=null";
        take_401(&mut sec, first, [2; 16], false);
        assert!(!sec.can_renew(), "no next ports given yet");
        let next = Side {
            port_c: 40200,
            spi_c: 60000,
            spi_s: 60001,
            ..ue()
        };
        sec.set_next(next);
        let refresh = register(&sec);
        assert!(
            refresh.contains("spi-c=60000;spi-s=60001;port-c=40200;port-s=40101"),
            "{refresh}"
        );
        assert!(
            refresh.contains(&format!("Security-Verify: {first}\r\n")),
            "{refresh}"
        );
        let renewed =
            "ipsec-3gpp;spi-c=102;spi-s=103;port-c=5101;port-s=5200;alg=hmac-sha-1-96;ealg=null";
        let pair = take_401(&mut sec, renewed, [4; 16], true);
        assert_eq!(
            (pair.ue, pair.pcscf.port_c, pair.pcscf.spi_s),
            (next, 5101, 103)
        );
        assert_eq!(&pair.auth_key[..16], &[4; 16], "the new challenge's IK");
        assert_eq!(
            sec.agreed().unwrap().pcscf.spi_s,
            101,
            "the old pair is in force"
        );
        assert!(sec.next().is_none(), "an offer is spent once taken");
        let answer = register(&sec);
        assert!(
            answer.contains("spi-c=60000;spi-s=60001;port-c=40200"),
            "{answer}"
        );
        assert!(
            answer.contains(&format!("Security-Verify: {renewed}\r\n")),
            "{answer}"
        );
        let old = sec.commit_renewal().unwrap();
        assert_eq!(old.pcscf.spi_s, 101);
        assert_eq!(sec.agreed(), Some(&pair));
        assert_eq!(sec.ue(), &next);
        assert!(sec.renewal().is_none());
        let after = register(&sec);
        assert!(
            after.contains("port-c=40200")
                && after.contains(&format!("Security-Verify: {renewed}"))
        );
        // A renewal that fails leaves the agreement as it was.
        sec.set_next(Side {
            port_c: 40300,
            ..next
        });
        take_401(&mut sec, first, [6; 16], true);
        assert!(sec.abandon_renewal().is_some());
        assert_eq!(sec.agreed(), Some(&pair));
        assert!(sec.commit_renewal().is_none());
    }

    #[test]
    fn a_p_cscf_that_cannot_agree_is_named() {
        let mut sec = UeSecurity::new(ue());
        let addr: IpAddr = "10.45.0.1".parse().unwrap();
        let keys = Some(([1; 16], [2; 16]));
        let e = |raw: Vec<u8>, sec: &mut UeSecurity| {
            let msg = Message::parse(&raw).unwrap();
            sec.agree(&CFG, &msg, addr, keys).unwrap_err()
        };
        assert_eq!(e(unauthorized(&[]), &mut sec), AgreeError::NoSecurityServer);
        let md5 =
            "ipsec-3gpp;spi-c=100;spi-s=101;port-c=5100;port-s=5200;alg=hmac-md5-96;ealg=null";
        let refused = e(unauthorized(&[md5]), &mut sec);
        assert_eq!(
            refused.to_string(),
            "the P-CSCF offers no hmac-sha-1-96/null (it offers hmac-md5-96/null)"
        );
        let broken = e(
            unauthorized(&["ipsec-3gpp;alg=hmac-sha-1-96;spi-c=100"]),
            &mut sec,
        );
        assert!(
            broken.to_string().contains("without the spi-s parameter"),
            "{broken}"
        );
        let ok =
            "ipsec-3gpp;spi-c=100;spi-s=101;port-c=5100;port-s=5200;alg=hmac-sha-1-96;ealg=null";
        let raw = unauthorized(&[ok]);
        let msg = Message::parse(&raw).unwrap();
        assert_eq!(
            sec.agree(&CFG, &msg, addr, None).unwrap_err(),
            AgreeError::NoKeys
        );
        assert!(sec.agreed().is_none());
    }
}
