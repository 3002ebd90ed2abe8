//! A lone non-INVITE request of a UE (MESSAGE or OPTIONS), sans IO: send it, answer one
//! 401/407 with the same Call-ID and the next CSeq, and report the final response or the
//! transaction's timeout.
//!
//! Shaped like [`super::registration`]: the owner runs the transaction, hands the machine its
//! responses ([`handle_response`]) or the timeout ([`handle_txn_timeout`]), and collects the
//! request to send ([`poll_transmit`], given the Via of the transaction it starts) and the
//! outcome ([`poll_event`]). There is no timer of its own.
//!
//! [`handle_response`]: NitClient::handle_response
//! [`handle_txn_timeout`]: NitClient::handle_txn_timeout
//! [`poll_transmit`]: NitClient::poll_transmit
//! [`poll_event`]: NitClient::poll_event

use super::challenge::Authenticator;
use crate::sip::builder::Writer;
use crate::sip::ids::{CallId, Token};
use crate::sip::{Message, Method};
use rand::Rng;
use std::time::{Duration, Instant};

/// What every MESSAGE and OPTIONS of a run shares.
#[derive(Clone, Debug)]
pub struct NitConfig {
    pub user_agent: String,
    /// P-Access-Network-Info for a MESSAGE (TS 24.229 §5.1.2A.1).
    pub pani: Option<String>,
}

/// The body of every MESSAGE.
pub const MESSAGE_BODY: &[u8] = b"imsload page-mode message";

/// The outcome, once per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A final response (not a challenge answered), `elapsed` after the first request.
    Final { status: u16, elapsed: Duration },
    /// The transaction got no final response.
    TimedOut,
}

/// One MESSAGE or OPTIONS from a UE to a Request-URI.
#[derive(Clone, Debug)]
pub struct NitClient {
    method: Method,
    ruri: String,
    /// From without tag (the sender's AoR name-addr).
    from: String,
    from_tag: Token,
    call_id: CallId,
    /// P-Preferred-Identity (a name-addr) of a MESSAGE, when the UE names one.
    preferred_identity: Option<String>,
    cseq: u32,
    started: Instant,
    auth_sent: bool,
    /// The request due: `Some(None)` the first, `Some(Some(line))` one answering a challenge.
    ready: Option<Option<String>>,
    event: Option<Event>,
    done: bool,
}

impl NitClient {
    /// A `method` request (MESSAGE or OPTIONS) due at once; the elapsed time runs from `now`.
    pub fn new(
        method: Method,
        ruri: String,
        from: String,
        from_tag: Token,
        call_id: CallId,
        preferred_identity: Option<String>,
        now: Instant,
    ) -> NitClient {
        NitClient {
            method,
            ruri,
            from,
            from_tag,
            call_id,
            preferred_identity,
            cseq: 0,
            started: now,
            auth_sent: false,
            ready: Some(None),
            event: None,
            done: false,
        }
    }

    pub fn method(&self) -> Method {
        self.method
    }

    /// Whether the outcome is known; the owner forgets the request once it is booked.
    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn has_transmit(&self) -> bool {
        self.ready.is_some()
    }

    /// The request to send now, if one is due, with `via` as its Via (the owner's transaction
    /// branch) and `routes` (the sender's Service-Route) as its Route set.
    pub fn poll_transmit(
        &mut self,
        cfg: &NitConfig,
        via: &str,
        routes: &[String],
    ) -> Option<Vec<u8>> {
        let authz = self.ready.take()?;
        self.cseq += 1;
        let method = self.method.as_str();
        let message = self.method == Method::Message;
        let mut w = Writer::request(method, &self.ruri);
        w.header("Via", via);
        for r in routes {
            w.header("Route", r);
        }
        w.header("Max-Forwards", 70);
        w.header("From", format_args!("{};tag={}", self.from, self.from_tag));
        w.header("To", format_args!("<{}>", self.ruri));
        w.header("Call-ID", self.call_id);
        w.header("CSeq", format_args!("{} {method}", self.cseq));
        if message {
            if let Some(pani) = &cfg.pani {
                w.header("P-Access-Network-Info", pani);
            }
            if let Some(ppi) = &self.preferred_identity {
                w.header("P-Preferred-Identity", ppi);
            }
        }
        w.header("User-Agent", &cfg.user_agent);
        if let Some(a) = authz {
            w.line(&a);
        }
        Some(if message {
            w.finish(Some("text/plain"), MESSAGE_BODY)
        } else {
            w.header("Accept", "application/sdp");
            w.finish(None, b"")
        })
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.event.take()
    }

    /// A response to the request last sent. `auth` is the sender's; `rng` draws the cnonce.
    pub fn handle_response(
        &mut self,
        now: Instant,
        auth: &mut Authenticator,
        msg: &Message<'_>,
        code: u16,
        rng: &mut impl Rng,
    ) {
        if code < 200 || self.done {
            return;
        }
        if (code == 401 || code == 407) && !self.auth_sent {
            // The digest covers an empty body, as it always has here: a qop=auth-int challenge
            // to MESSAGE would be answered wrongly.
            let method = self.method.as_str();
            if let Some(a) = auth.credentials(msg, code, method, &self.ruri, b"", rng) {
                self.auth_sent = true;
                self.ready = Some(Some(a));
                return;
            }
        }
        self.done = true;
        self.event = Some(Event::Final {
            status: code,
            elapsed: now.saturating_duration_since(self.started),
        });
    }

    pub fn handle_txn_timeout(&mut self) {
        if !self.done {
            self.done = true;
            self.event = Some(Event::TimedOut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::auth;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    const VIA: &str = "SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-n";

    fn cfg() -> NitConfig {
        NitConfig {
            user_agent: "test".into(),
            pani: Some("3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=00101000000001".into()),
        }
    }

    fn client(method: Method, now: Instant) -> NitClient {
        NitClient::new(
            method,
            "sip:bob@ims.local".into(),
            "<sip:alice@ims.local>".into(),
            "ft".try_into().unwrap(),
            "m-1".try_into().unwrap(),
            Some("<sip:alice@ims.local>".into()),
            now,
        )
    }

    fn response(code: u16, extra: &str) -> Vec<u8> {
        format!(
            "SIP/2.0 {code} Whatever\r\nVia: {VIA}\r\nFrom: <sip:alice@ims.local>;tag=ft\r\n\
             To: <sip:bob@ims.local>;tag=x\r\nCall-ID: m-1\r\nCSeq: 1 MESSAGE\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn header<'a>(req: &'a str, name: &str) -> Option<&'a str> {
        req.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    }

    #[test]
    fn message_401_is_retried_with_credentials_then_200() {
        let mut now = Instant::now();
        let mut rng = SmallRng::seed_from_u64(5);
        let mut auth = Authenticator::new("alice@ims.local".into(), "secret".into(), None);
        let routes = ["<sip:orig@scscf.ims.local;lr>".to_string()];
        let mut m = client(Method::Message, now);
        let first = String::from_utf8(
            m.poll_transmit(&cfg(), &format!("{VIA}1"), &routes)
                .unwrap(),
        )
        .unwrap();
        assert!(!m.has_transmit());
        assert!(first.starts_with("MESSAGE sip:bob@ims.local SIP/2.0\r\n"));
        assert_eq!(header(&first, "Route"), Some(routes[0].as_str()));
        assert_eq!(header(&first, "CSeq"), Some("1 MESSAGE"));
        assert_eq!(
            header(&first, "P-Preferred-Identity"),
            Some("<sip:alice@ims.local>")
        );
        assert!(header(&first, "P-Access-Network-Info").is_some());
        assert!(first.ends_with("imsload page-mode message"));

        now += Duration::from_millis(10);
        let data = response(
            401,
            "WWW-Authenticate: Digest realm=\"ims.local\", nonce=\"n1\", qop=\"auth\"\r\n",
        );
        let msg = Message::parse(&data).unwrap();
        m.handle_response(now, &mut auth, &msg, 401, &mut rng);
        assert_eq!(m.poll_event(), None);
        let again = String::from_utf8(
            m.poll_transmit(&cfg(), &format!("{VIA}2"), &routes)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header(&again, "CSeq"), Some("2 MESSAGE"));
        assert_eq!(header(&again, "Call-ID"), Some("m-1"));
        let authz = header(&again, "Authorization").expect("credentials");
        let got = auth::verify(authz, "MESSAGE", "ims.local", "n1", |_| {
            Some(b"secret".to_vec())
        });
        assert_eq!(got.as_deref(), Some("alice@ims.local"), "{authz}");

        now += Duration::from_millis(10);
        let data = response(200, "");
        let msg = Message::parse(&data).unwrap();
        m.handle_response(now, &mut auth, &msg, 200, &mut rng);
        assert_eq!(
            m.poll_event(),
            Some(Event::Final {
                status: 200,
                elapsed: Duration::from_millis(20)
            })
        );
        assert!(m.is_done());
        assert!(!m.has_transmit());
    }

    #[test]
    fn options_timeout_is_reported_once() {
        let now = Instant::now();
        let mut m = client(Method::Options, now);
        let req = String::from_utf8(m.poll_transmit(&cfg(), VIA, &[]).unwrap()).unwrap();
        assert!(req.starts_with("OPTIONS sip:bob@ims.local SIP/2.0\r\n"));
        assert_eq!(header(&req, "Accept"), Some("application/sdp"));
        assert_eq!(header(&req, "P-Preferred-Identity"), None, "MESSAGE only");
        m.handle_txn_timeout();
        assert_eq!(m.poll_event(), Some(Event::TimedOut));
        m.handle_txn_timeout();
        assert_eq!(m.poll_event(), None);
        assert!(m.is_done());
    }
}
