//! HTTP Digest for SIP (RFC 2617 / RFC 3261 §22): parse a challenge, compute the credentials.
//!
//! Only what a UE needs: MD5 with `qop=auth`, `qop=auth-int` and no qop. The password is bytes,
//! not text, because IMS AKA (RFC 3310) uses the raw RES as the password; the AKA layer supplies
//! it through the same [`Credentials`] call.

use md5::{Digest, Md5};
use std::borrow::Cow;
use std::fmt::Write as _;

/// A parsed `WWW-Authenticate` / `Proxy-Authenticate` Digest challenge.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: String,
    /// The qop options offered (`auth`, `auth-int`), empty for RFC 2069 style.
    pub qop: Vec<String>,
    pub stale: bool,
    /// True for a 407 (Proxy-Authenticate → Proxy-Authorization).
    pub proxy: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("the challenge is not a Digest challenge: {0:?}")]
    NotDigest(String),
    #[error("the Digest challenge has no {0}")]
    Missing(&'static str),
}

impl Challenge {
    pub fn parse(value: &str, proxy: bool) -> Result<Challenge, ChallengeError> {
        let v = value.trim_start();
        let rest = match v.split_once(|c: char| c.is_ascii_whitespace()) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("Digest") => rest,
            _ => return Err(ChallengeError::NotDigest(v.chars().take(40).collect())),
        };
        let mut c = Challenge {
            algorithm: "MD5".into(),
            proxy,
            ..Default::default()
        };
        let mut have_nonce = false;
        for (k, val) in auth_params(rest) {
            let is = |name: &str| k.eq_ignore_ascii_case(name);
            if is("realm") {
                c.realm = val.into_owned();
            } else if is("nonce") {
                c.nonce = val.into_owned();
                have_nonce = true;
            } else if is("opaque") {
                c.opaque = Some(val.into_owned());
            } else if is("algorithm") {
                c.algorithm = val.into_owned();
            } else if is("qop") {
                c.qop = val
                    .split(',')
                    .map(|q| q.trim().to_ascii_lowercase())
                    .filter(|q| !q.is_empty())
                    .collect();
            } else if is("stale") {
                c.stale = val.eq_ignore_ascii_case("true");
            }
        }
        if !have_nonce {
            return Err(ChallengeError::Missing("nonce"));
        }
        Ok(c)
    }

    /// The qop we answer with: `auth` when offered, else `auth-int`, else none.
    pub fn chosen_qop(&self) -> Option<&'static str> {
        if self.qop.iter().any(|q| q == "auth") {
            Some("auth")
        } else if self.qop.iter().any(|q| q == "auth-int") {
            Some("auth-int")
        } else {
            None
        }
    }

    /// True for `AKAv1-MD5` / `AKAv2-MD5` challenges (the nonce carries RAND‖AUTN).
    pub fn is_aka(&self) -> bool {
        self.algorithm.to_ascii_uppercase().starts_with("AKAV")
    }
}

/// Splits `k=v, k="v,with,commas"` into pairs, unquoting values. Both are borrowed from `s`
/// (a value is copied only when it has backslash escapes to undo): every REGISTER with
/// credentials goes through here on both sides, and owned pairs were a dozen allocations each.
fn auth_params(s: &str) -> AuthParams<'_> {
    AuthParams { s, i: 0 }
}

struct AuthParams<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Iterator for AuthParams<'a> {
    type Item = (&'a str, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        let (s, b) = (self.s, self.s.as_bytes());
        let mut i = self.i;
        let out = loop {
            while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
                i += 1;
            }
            if i >= b.len() {
                break None;
            }
            let ks = i;
            while i < b.len() && b[i] != b'=' && b[i] != b',' {
                i += 1;
            }
            let key = s[ks..i].trim();
            if i >= b.len() || b[i] == b',' {
                if !key.is_empty() {
                    break Some((key, Cow::Borrowed("")));
                }
                continue;
            }
            i += 1; // '='
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < b.len() && b[i] == b'"' {
                i += 1;
                let vs = i;
                while i < b.len() && b[i] != b'"' && b[i] != b'\\' {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'"' {
                    let val = &s[vs..i];
                    i += 1;
                    break Some((key, Cow::Borrowed(val)));
                }
                let mut val = String::from(&s[vs..i]);
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    let ch_len = utf8_len(b[i]);
                    val.push_str(&s[i..(i + ch_len).min(b.len())]);
                    i += ch_len;
                }
                i += 1;
                break Some((key, Cow::Owned(val)));
            }
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            break Some((key, Cow::Borrowed(s[vs..i].trim())));
        };
        self.i = i;
        out
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// What the UE answers with: the identity, the password bytes, and the request being authorized.
pub struct Credentials<'a> {
    pub username: &'a str,
    pub password: &'a [u8],
    pub method: &'a str,
    pub uri: &'a str,
    /// Needed only for `qop=auth-int`.
    pub body: &'a [u8],
}

/// State kept between challenges so that `nc` counts up when a nonce is reused.
#[derive(Clone, Debug, Default)]
pub struct NonceCounter {
    nonce: String,
    nc: u32,
}

impl NonceCounter {
    pub fn next(&mut self, nonce: &str) -> u32 {
        if self.nonce != nonce {
            self.nonce.clear();
            self.nonce.push_str(nonce);
            self.nc = 0;
        }
        self.nc += 1;
        self.nc
    }
}

/// Lowercase hex of an MD5 digest, on the stack: the digest computation chains three of them.
type Md5Hex = [u8; 32];

fn md5_hex(parts: &[&[u8]]) -> Md5Hex {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p);
    }
    let mut out = [0u8; 32];
    crate::hex::encode_to_slice(&h.finalize(), &mut out);
    out
}

/// The `response` value (RFC 2617 §3.2.2.1).
pub fn digest_response(
    ch: &Challenge,
    cred: &Credentials<'_>,
    qop: Option<&str>,
    nc: u32,
    cnonce: &str,
) -> String {
    let r = response_hex(&ch.realm, &ch.nonce, cred, qop, nc, cnonce);
    String::from_utf8(r.to_vec()).expect("hex digits are ASCII")
}

fn response_hex(
    realm: &str,
    nonce: &str,
    cred: &Credentials<'_>,
    qop: Option<&str>,
    nc: u32,
    cnonce: &str,
) -> Md5Hex {
    let ha1 = md5_hex(&[cred.username.as_bytes(), realm.as_bytes(), cred.password]);
    let ha2 = match qop {
        Some("auth-int") => {
            let hbody = md5_hex(&[cred.body]);
            md5_hex(&[cred.method.as_bytes(), cred.uri.as_bytes(), &hbody])
        }
        _ => md5_hex(&[cred.method.as_bytes(), cred.uri.as_bytes()]),
    };
    match qop {
        Some(q) => {
            let mut ncx = [0u8; 8];
            for (i, d) in ncx.iter_mut().enumerate() {
                *d = b"0123456789abcdef"[((nc >> (28 - 4 * i)) & 15) as usize];
            }
            md5_hex(&[
                &ha1,
                nonce.as_bytes(),
                &ncx,
                cnonce.as_bytes(),
                q.as_bytes(),
                &ha2,
            ])
        }
        None => md5_hex(&[&ha1, nonce.as_bytes(), &ha2]),
    }
}

/// The full header line (name and value, no CRLF) answering `ch`.
pub fn authorization_header(
    ch: &Challenge,
    cred: &Credentials<'_>,
    nc: u32,
    cnonce: &str,
) -> String {
    authorization_header_with(ch, cred, nc, cnonce, None)
}

/// [`authorization_header`] with an `auts` parameter when given (AKA re-synchronisation,
/// RFC 3310 §3.4: the response is then computed with an empty password).
pub fn authorization_header_with(
    ch: &Challenge,
    cred: &Credentials<'_>,
    nc: u32,
    cnonce: &str,
    auts: Option<&str>,
) -> String {
    let qop = ch.chosen_qop();
    let response = response_hex(&ch.realm, &ch.nonce, cred, qop, nc, cnonce);
    let response = std::str::from_utf8(&response).expect("hex digits are ASCII");
    let name = if ch.proxy {
        "Proxy-Authorization"
    } else {
        "Authorization"
    };
    let mut h = format!(
        "{name}: Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", algorithm={}",
        cred.username, ch.realm, ch.nonce, cred.uri, response, ch.algorithm
    );
    if let Some(q) = qop {
        let _ = write!(h, ", qop={q}, nc={nc:08x}, cnonce=\"{cnonce}\"");
    }
    if let Some(o) = &ch.opaque {
        let _ = write!(h, ", opaque=\"{o}\"");
    }
    if let Some(a) = auts {
        let _ = write!(h, ", auts=\"{a}\"");
    }
    h
}

/// An Authorization line with an empty `response`: what an IMS UE sends in its initial REGISTER
/// (TS 24.229 §5.1.1.2.1, `nonce=""`) and when it rejects an AKA challenge whose MAC is wrong
/// (TS 24.229 §5.1.1.5.3: empty response, no `auts`).
pub fn empty_response_header(
    proxy: bool,
    username: &str,
    realm: &str,
    nonce: &str,
    uri: &str,
    algorithm: Option<&str>,
) -> String {
    let name = if proxy {
        "Proxy-Authorization"
    } else {
        "Authorization"
    };
    let mut h = format!(
        "{name}: Digest username=\"{username}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"\""
    );
    if let Some(a) = algorithm {
        let _ = write!(h, ", algorithm={a}");
    }
    h
}

/// One parameter of an Authorization / challenge value (`username`, `nonce`, `auts`, ...),
/// unquoted; case-insensitive name.
pub fn param(value: &str, name: &str) -> Option<String> {
    let v = value.trim_start();
    let rest = v
        .get(..6)
        .filter(|s| s.eq_ignore_ascii_case("Digest"))
        .map_or(v, |_| &v[6..]);
    auth_params(rest)
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.into_owned())
}

/// Server side, for the embedded target: checks an Authorization header against a password.
/// Returns `Some(username)` when the response is right for `nonce`.
pub fn verify(
    authorization: &str,
    method: &str,
    realm: &str,
    nonce: &str,
    password_of: impl Fn(&str) -> Option<Vec<u8>>,
) -> Option<String> {
    let rest = authorization.trim_start().strip_prefix("Digest")?;
    // One pass into named slots (the first of each name wins, as a lookup would find it).
    const NAMES: [&str; 8] = [
        "nonce", "realm", "username", "uri", "qop", "nc", "cnonce", "response",
    ];
    let mut p: [Option<Cow<'_, str>>; 8] = Default::default();
    for (k, v) in auth_params(rest) {
        if let Some(i) = NAMES.iter().position(|n| k.eq_ignore_ascii_case(n)) {
            p[i].get_or_insert(v);
        }
    }
    let [p_nonce, p_realm, username, uri, qop, nc, cnonce, response] = p;
    if p_nonce? != nonce || p_realm? != realm {
        return None;
    }
    let username = username?;
    let password = password_of(&username)?;
    let cred = Credentials {
        username: &username,
        password: &password,
        method,
        uri: uri.as_deref()?,
        body: b"",
    };
    let qop = qop.as_deref();
    let nc = match qop {
        Some(_) => u32::from_str_radix(nc.as_deref()?, 16).ok()?,
        None => 0,
    };
    let expected = response_hex(
        realm,
        nonce,
        &cred,
        qop,
        nc,
        cnonce.as_deref().unwrap_or(""),
    );
    (response?.as_bytes() == expected).then(|| username.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5_str(parts: &[&[u8]]) -> String {
        String::from_utf8(md5_hex(parts).to_vec()).unwrap()
    }

    /// RFC 2617 §3.5's worked example ("Mufasa"), the reference every implementation checks.
    #[test]
    fn rfc2617_example() {
        let ch = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
            false,
        )
        .unwrap();
        assert_eq!(ch.chosen_qop(), Some("auth"));
        let cred = Credentials {
            username: "Mufasa",
            password: b"Circle Of Life",
            method: "GET",
            uri: "/dir/index.html",
            body: b"",
        };
        assert_eq!(
            digest_response(&ch, &cred, Some("auth"), 1, "0a4f113b"),
            "6629fae49393a05397450978507c4ef1"
        );
        let h = authorization_header(&ch, &cred, 1, "0a4f113b");
        assert!(h.starts_with("Authorization: Digest username=\"Mufasa\""));
        assert!(h.contains("nc=00000001"));
        assert!(h.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
        let user = verify(
            h.split_once(": ").unwrap().1,
            "GET",
            "testrealm@host.com",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            |_| Some(b"Circle Of Life".to_vec()),
        );
        assert_eq!(user.as_deref(), Some("Mufasa"));
        assert!(verify(
            h.split_once(": ").unwrap().1,
            "GET",
            "testrealm@host.com",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            |_| Some(b"wrong".to_vec()),
        )
        .is_none());
    }

    #[test]
    fn no_qop_and_auth_int() {
        let ch = Challenge::parse("Digest realm=\"r\", nonce=\"n\"", true).unwrap();
        assert!(ch.proxy);
        assert_eq!(ch.chosen_qop(), None);
        let cred = Credentials {
            username: "u",
            password: b"p",
            method: "INVITE",
            uri: "sip:a@b",
            body: b"v=0\r\n",
        };
        // md5(md5("u:r:p") ":n:" md5("INVITE:sip:a@b")), computed independently with md5sum.
        let ha1 = md5_str(&[b"u:r:p"]);
        let ha2 = md5_str(&[b"INVITE:sip:a@b"]);
        let want = md5_str(&[format!("{ha1}:n:{ha2}").as_bytes()]);
        assert_eq!(digest_response(&ch, &cred, None, 0, ""), want);
        let h = authorization_header(&ch, &cred, 1, "c");
        assert!(h.starts_with("Proxy-Authorization: "));
        assert!(!h.contains("qop"));

        let int = digest_response(&ch, &cred, Some("auth-int"), 1, "c");
        let hb = md5_str(&[b"v=0\r\n"]);
        let ha2i = md5_str(&[format!("INVITE:sip:a@b:{hb}").as_bytes()]);
        let want = md5_str(&[format!("{ha1}:n:00000001:c:auth-int:{ha2i}").as_bytes()]);
        assert_eq!(int, want);
    }

    #[test]
    fn params_borrow_unless_escaped() {
        let p: Vec<_> =
            auth_params(r#"realm="a,b", nonce="x\"y", flag, qop=auth , opaque="""#).collect();
        let names: Vec<&str> = p.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, ["realm", "nonce", "flag", "qop", "opaque"]);
        assert!(matches!(&p[0].1, Cow::Borrowed("a,b")));
        assert!(matches!(&p[1].1, Cow::Owned(v) if v == "x\"y"));
        assert_eq!((&*p[2].1, &*p[3].1, &*p[4].1), ("", "auth", ""));
        let ch = Challenge::parse(r#"Digest realm="r", nonce="n\"1", qop="auth""#, false).unwrap();
        assert_eq!(ch.nonce, "n\"1");
        // A server checks what a client computed (with a nonce that needs no escaping: the
        // header writer does not escape).
        let ch = Challenge::parse(r#"Digest realm="r", nonce="n1", qop="auth""#, false).unwrap();
        let cred = Credentials {
            username: "u",
            password: b"pw",
            method: "REGISTER",
            uri: "sip:r",
            body: b"",
        };
        let h = authorization_header(&ch, &cred, 1, "c");
        let v = h.split_once(": ").unwrap().1;
        let ok = verify(v, "REGISTER", "r", "n1", |_| Some(b"pw".to_vec()));
        assert_eq!(ok.as_deref(), Some("u"));
        assert_eq!(
            verify(v, "REGISTER", "r", "n1", |_| Some(b"x".to_vec())),
            None
        );
    }

    #[test]
    fn challenge_errors_and_aka() {
        assert!(matches!(
            Challenge::parse("Basic realm=x", false),
            Err(ChallengeError::NotDigest(_))
        ));
        assert_eq!(
            Challenge::parse("Digest realm=\"x\"", false),
            Err(ChallengeError::Missing("nonce"))
        );
        let c = Challenge::parse(
            "Digest realm=\"ims\",nonce=\"AAAA\",algorithm=AKAv1-MD5,qop=\"auth\",stale=TRUE",
            false,
        )
        .unwrap();
        assert!(c.is_aka() && c.stale);
        let mut nc = NonceCounter::default();
        assert_eq!(nc.next("a"), 1);
        assert_eq!(nc.next("a"), 2);
        assert_eq!(nc.next("b"), 1);
    }

    #[test]
    fn aka_header_forms() {
        let h = empty_response_header(false, "i@d", "d", "", "sip:d", None);
        assert_eq!(
            h,
            "Authorization: Digest username=\"i@d\", realm=\"d\", nonce=\"\", uri=\"sip:d\", response=\"\""
        );
        let v = h.split_once(": ").unwrap().1;
        assert_eq!(param(v, "response").as_deref(), Some(""));
        assert_eq!(param(v, "USERNAME").as_deref(), Some("i@d"));
        assert_eq!(param(v, "auts"), None);
        let ch = Challenge::parse(
            "Digest realm=\"d\", nonce=\"n\", algorithm=AKAv1-MD5",
            false,
        )
        .unwrap();
        let cred = Credentials {
            username: "i@d",
            password: b"",
            method: "REGISTER",
            uri: "sip:d",
            body: b"",
        };
        let h = authorization_header_with(&ch, &cred, 1, "c", Some("QUJD"));
        assert!(h.ends_with(", algorithm=AKAv1-MD5, auts=\"QUJD\""), "{h}");
        assert_eq!(
            param(h.split_once(": ").unwrap().1, "auts").as_deref(),
            Some("QUJD")
        );
    }
}
