//! Answering a 401/407 challenge as a UE: Digest MD5 with the user's password, or AKAv1-MD5
//! (RFC 3310) with RES from the user's USIM. Every client role (REGISTER, INVITE, MESSAGE,
//! OPTIONS) answers challenges with the same [`Authenticator`], because the USIM's SQN and the
//! nonce count belong to the UE, not to one request.

use crate::sip::aka::{self, AkaError, Usim};
use crate::sip::auth::{self, Challenge, Credentials, NonceCounter};
use crate::sip::ids;
use crate::sip::{HeaderName, Message};
use rand::Rng;

/// A UE's credentials and the state answering challenges moves: the USIM's SQN_MS and the
/// digest nonce count.
#[derive(Clone, Debug)]
pub struct Authenticator {
    impi: String,
    password: String,
    usim: Option<Usim>,
    nc: NonceCounter,
    /// CK and IK of the last AKA challenge answered with credentials: the keys of the UE's
    /// IPsec SAs (TS 33.203 §7.1).
    keys: Option<([u8; 16], [u8; 16])>,
}

/// How a challenge is answered: the Authorization / Proxy-Authorization line, and what kind of
/// answer it is (the registration client treats each differently).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Digest credentials (MD5 password or AKA RES).
    Credentials(String),
    /// AKA SQN out of range: `auts=` for re-synchronisation, a fresh challenge will follow.
    Resync(String),
    /// AKA MAC-A wrong: an empty `response` and no `auts`, as TS 24.229 §5.1.1.5.3 asks.
    MacFailure(String),
}

impl Answer {
    /// The header line (name and value, no CRLF).
    pub fn line(&self) -> &str {
        match self {
            Answer::Credentials(a) | Answer::Resync(a) | Answer::MacFailure(a) => a,
        }
    }

    pub fn into_line(self) -> String {
        match self {
            Answer::Credentials(a) | Answer::Resync(a) | Answer::MacFailure(a) => a,
        }
    }
}

impl Authenticator {
    /// `usim` makes this an IMS AKA user: AKAv1-MD5 challenges are answered with its RES, and
    /// MD5 ones with `password` still.
    pub fn new(impi: String, password: String, usim: Option<Usim>) -> Authenticator {
        Authenticator {
            impi,
            password,
            usim,
            nc: NonceCounter::default(),
            keys: None,
        }
    }

    /// CK and IK of the last AKA challenge this UE answered with credentials.
    pub fn session_keys(&self) -> Option<([u8; 16], [u8; 16])> {
        self.keys
    }

    /// The private identity, the digest username.
    pub fn impi(&self) -> &str {
        &self.impi
    }

    pub fn is_aka(&self) -> bool {
        self.usim.is_some()
    }

    pub fn usim(&self) -> Option<&Usim> {
        self.usim.as_ref()
    }

    /// The Authorization line an IMS AKA UE puts in a REGISTER before any challenge
    /// (TS 24.229 §5.1.1.2.1): the S-CSCF needs the IMPI to fetch vectors from the HSS.
    /// `None` for a plain digest user, who sends none.
    pub fn initial_header(&self, realm: &str, uri: &str) -> Option<String> {
        self.usim.as_ref()?;
        Some(auth::empty_response_header(
            false, &self.impi, realm, "", uri, None,
        ))
    }

    /// Builds the line answering the challenge in `msg` (a 401 or 407) to a `method` request
    /// for `uri`. `None` when the challenge cannot be answered: no or an unparsable challenge,
    /// AKA for a user without a USIM, an undecodable AKA nonce, or a stale SQN when
    /// `allow_resync` is false (a second one in a registration attempt, or any outside
    /// registration); the caller counts the failure.
    #[allow(clippy::too_many_arguments)]
    pub fn answer(
        &mut self,
        msg: &Message<'_>,
        code: u16,
        method: &str,
        uri: &str,
        body: &[u8],
        allow_resync: bool,
        rng: &mut impl Rng,
    ) -> Option<Answer> {
        let (h, proxy) = if code == 407 {
            (HeaderName::ProxyAuthenticate, true)
        } else {
            (HeaderName::WwwAuthenticate, false)
        };
        let ch = Challenge::parse(msg.header(h)?, proxy).ok()?;
        // Drawn before the AKA run whatever its outcome, so that a run's random sequence (and
        // with it every later pick) does not depend on how challenges turn out.
        let cnonce = ids::token(rng);
        let nc = self.nc.next(&ch.nonce);
        let mut cred = Credentials {
            username: &self.impi,
            password: self.password.as_bytes(),
            method,
            uri,
            body,
        };
        if !ch.is_aka() {
            return Some(Answer::Credentials(auth::authorization_header(
                &ch, &cred, nc, &cnonce,
            )));
        }
        let usim = self.usim.as_mut()?;
        let outcome = aka::parse_nonce(&ch.nonce).and_then(|c| usim.authenticate(&c));
        match outcome {
            Ok(r) => {
                self.keys = Some((r.ck, r.ik));
                // RFC 3310 §3.1: RES itself (raw bytes, not hex) is the digest password.
                cred.password = &r.res;
                Some(Answer::Credentials(auth::authorization_header(
                    &ch, &cred, nc, &cnonce,
                )))
            }
            Err(AkaError::SyncFailure { auts, .. }) if allow_resync => {
                // RFC 3310 §3.4: the response that carries AUTS uses an empty password.
                cred.password = b"";
                Some(Answer::Resync(auth::authorization_header_with(
                    &ch,
                    &cred,
                    nc,
                    &cnonce,
                    Some(&aka::encode_auts(&auts)),
                )))
            }
            Err(AkaError::MacFailure) => Some(Answer::MacFailure(auth::empty_response_header(
                proxy,
                &self.impi,
                &ch.realm,
                &ch.nonce,
                uri,
                Some(&ch.algorithm),
            ))),
            Err(_) => None,
        }
    }

    /// The credentials answering a challenge to a request outside registration (INVITE,
    /// MESSAGE, OPTIONS): only a usable credential is worth a new request; re-synchronisation
    /// and reporting a MAC failure belong to registration, so such a challenge goes unanswered.
    pub fn credentials(
        &mut self,
        msg: &Message<'_>,
        code: u16,
        method: &str,
        uri: &str,
        body: &[u8],
        rng: &mut impl Rng,
    ) -> Option<String> {
        match self.answer(msg, code, method, uri, body, false, rng)? {
            Answer::Credentials(a) => Some(a),
            Answer::Resync(_) | Answer::MacFailure(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::aka::AkaKeys;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn keys() -> AkaKeys {
        AkaKeys::with_opc([0x46; 16], [0xcd; 16], [0x80, 0x00])
    }

    fn challenge(code: u16, value: &str) -> Vec<u8> {
        let name = if code == 407 {
            "Proxy-Authenticate"
        } else {
            "WWW-Authenticate"
        };
        format!(
            "SIP/2.0 {code} Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKx\r\n\
             From: <sip:a@ims.local>;tag=1\r\nTo: <sip:a@ims.local>;tag=2\r\nCall-ID: c\r\n\
             CSeq: 1 INVITE\r\n{name}: {value}\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn md5_challenge_is_answered_with_the_password() {
        let mut a = Authenticator::new("a@ims.local".into(), "secret".into(), None);
        let data = challenge(407, r#"Digest realm="ims.local", nonce="abc", qop="auth""#);
        let msg = Message::parse(&data).unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let ans = a
            .answer(&msg, 407, "INVITE", "sip:b@ims.local", b"", false, &mut rng)
            .unwrap();
        let Answer::Credentials(line) = ans else {
            panic!("{ans:?}")
        };
        assert!(line.starts_with("Proxy-Authorization: Digest "), "{line}");
        let value = line.split_once(": ").unwrap().1;
        let ch =
            Challenge::parse(r#"Digest realm="ims.local", nonce="abc", qop="auth""#, true).unwrap();
        let cred = Credentials {
            username: "a@ims.local",
            password: b"secret",
            method: "INVITE",
            uri: "sip:b@ims.local",
            body: b"",
        };
        let cnonce = auth::param(value, "cnonce").unwrap();
        assert_eq!(
            auth::param(value, "response").unwrap(),
            auth::digest_response(&ch, &cred, Some("auth"), 1, &cnonce)
        );
        // The nonce count goes up when the same nonce is answered again.
        let again = a
            .answer(&msg, 407, "INVITE", "sip:b@ims.local", b"", false, &mut rng)
            .unwrap();
        assert!(again.line().contains("nc=00000002"), "{}", again.line());
    }

    #[test]
    fn aka_outcomes_outside_registration() {
        let k = keys();
        let mut rng = SmallRng::seed_from_u64(1);
        let mut a = Authenticator::new("a@ims.local".into(), String::new(), Some(Usim::new(k, 5)));
        assert!(a
            .initial_header("ims.local", "sip:ims.local")
            .unwrap()
            .contains(r#"username="a@ims.local""#));
        // A stale SQN is not answered where re-synchronisation is not allowed.
        let old = aka::generate(&k, [1; 16], 3).nonce();
        let data = challenge(
            401,
            &format!(r#"Digest realm="ims.local", nonce="{old}", algorithm=AKAv1-MD5"#),
        );
        let msg = Message::parse(&data).unwrap();
        assert_eq!(
            a.answer(&msg, 401, "INVITE", "sip:b@ims.local", b"", false, &mut rng),
            None
        );
        assert!(matches!(
            a.answer(&msg, 401, "INVITE", "sip:b@ims.local", b"", true, &mut rng),
            Some(Answer::Resync(l)) if l.contains("auts=")
        ));
        assert_eq!(
            a.usim().unwrap().sqn_ms,
            5,
            "a refused challenge moves no SQN"
        );
        assert_eq!(a.session_keys(), None, "no keys from a refused challenge");
        // A fresh one is answered, and its CK and IK are kept for the UE's IPsec SAs.
        let v = aka::generate(&k, [2; 16], 6);
        let data = challenge(
            401,
            &format!(
                r#"Digest realm="ims.local", nonce="{}", algorithm=AKAv1-MD5"#,
                v.nonce()
            ),
        );
        let msg = Message::parse(&data).unwrap();
        assert!(matches!(
            a.answer(&msg, 401, "REGISTER", "sip:ims.local", b"", true, &mut rng),
            Some(Answer::Credentials(_))
        ));
        assert_eq!(a.session_keys(), Some((v.ck, v.ik)));
        // A digest user cannot answer AKA.
        let mut plain = Authenticator::new("a@ims.local".into(), "pw".into(), None);
        assert_eq!(
            plain.answer(&msg, 401, "INVITE", "sip:b@ims.local", b"", true, &mut rng),
            None
        );
        assert_eq!(plain.initial_header("ims.local", "sip:ims.local"), None);
    }
}
