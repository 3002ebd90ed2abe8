//! Dialog state (RFC 3261 §12) and the requests sent inside a dialog: route set, remote target,
//! tags and the local CSeq. Used by the calling side (UAC) and the answering side (UAS) alike.

use super::builder::Writer;
use super::message::{name_addr_uri, HeaderName, Message};
use super::text_pool;
use smallvec::SmallVec;

/// A range of [`Dialog::text`].
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    start: u32,
    end: u32,
}

/// Every call has one (each side), so its strings share one buffer: a `String` per field was
/// six or seven allocations per dialog. The buffer comes from and goes back to
/// [`text_pool`], and up to four routes' places are kept inline, so a call's dialog costs no
/// allocation once calls come and go.
#[derive(Clone, Debug, Default)]
pub struct Dialog {
    text: String,
    call_id: Span,
    /// Our identity as it appears in From (UAC) or To (UAS), without tag.
    local_uri: Span,
    local_tag: Span,
    remote_uri: Span,
    remote_tag: Span,
    pub local_cseq: u32,
    /// Where in-dialog requests go: the peer's Contact.
    remote_target: Span,
    /// Route set in the order requests must carry it.
    route_set: SmallVec<[Span; 4]>,
}

impl Drop for Dialog {
    fn drop(&mut self) {
        text_pool::give(std::mem::take(&mut self.text));
    }
}

/// Copies the dialog's strings into one buffer as they are found.
struct Packer {
    text: String,
}

impl Packer {
    fn with_capacity(n: usize) -> Packer {
        Packer {
            text: text_pool::take(n),
        }
    }
    fn add(&mut self, s: &str) -> Span {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        Span {
            start,
            end: self.text.len() as u32,
        }
    }
}

impl Dialog {
    fn get(&self, s: Span) -> &str {
        &self.text[s.start as usize..s.end as usize]
    }

    /// Bytes this dialog holds on the heap (for callers that budget what they keep).
    pub fn heap_bytes(&self) -> usize {
        let routes = if self.route_set.spilled() {
            self.route_set.capacity() * std::mem::size_of::<Span>()
        } else {
            0
        };
        self.text.capacity() + routes
    }

    pub fn call_id(&self) -> &str {
        self.get(self.call_id)
    }
    pub fn local_uri(&self) -> &str {
        self.get(self.local_uri)
    }
    pub fn local_tag(&self) -> &str {
        self.get(self.local_tag)
    }
    pub fn remote_uri(&self) -> &str {
        self.get(self.remote_uri)
    }
    pub fn remote_tag(&self) -> &str {
        self.get(self.remote_tag)
    }
    pub fn remote_target(&self) -> &str {
        self.get(self.remote_target)
    }
    /// Route set in the order requests must carry it.
    pub fn route_set(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.route_set.iter().map(|s| self.get(*s))
    }

    #[allow(clippy::too_many_arguments)]
    fn pack(
        call_id: &str,
        local_uri: &str,
        local_tag: &str,
        remote_uri: &str,
        remote_tag: &str,
        local_cseq: u32,
        remote_target: &str,
        // Its Record-Route headers are the route set.
        msg: &Message<'_>,
        reverse_routes: bool,
    ) -> Dialog {
        let fixed = [
            call_id,
            local_uri,
            local_tag,
            remote_uri,
            remote_tag,
            remote_target,
        ];
        let n = fixed.iter().map(|s| s.len()).sum::<usize>()
            + msg
                .header_values(HeaderName::RecordRoute)
                .map(str::len)
                .sum::<usize>();
        let mut p = Packer::with_capacity(n);
        let [call_id, local_uri, local_tag, remote_uri, remote_tag, remote_target] =
            fixed.map(|s| p.add(s));
        let mut route_set: SmallVec<[Span; 4]> = msg
            .header_values(HeaderName::RecordRoute)
            .map(|r| p.add(r))
            .collect();
        if reverse_routes {
            route_set.reverse();
        }
        Dialog {
            text: p.text,
            call_id,
            local_uri,
            local_tag,
            remote_uri,
            remote_tag,
            local_cseq,
            remote_target,
            route_set,
        }
    }

    /// The UAC's dialog from a 2xx (or 18x with tag): route set is the Record-Route in reverse.
    pub fn from_uac_response(
        resp: &Message<'_>,
        local_uri: &str,
        local_tag: &str,
        remote_uri: &str,
        cseq: u32,
    ) -> Dialog {
        Dialog::pack(
            resp.call_id(),
            local_uri,
            local_tag,
            remote_uri,
            resp.to_tag().unwrap_or(""),
            cseq,
            resp.contact_uri()
                .unwrap_or_else(|| name_addr_uri(remote_uri)),
            resp,
            true,
        )
    }

    /// The UAS's dialog from the INVITE: route set is the Record-Route in order.
    pub fn from_uas_request(req: &Message<'_>, local_tag: &str) -> Dialog {
        let from = req.header(HeaderName::From).unwrap_or("");
        let to = req.header(HeaderName::To).unwrap_or("");
        Dialog::pack(
            req.call_id(),
            strip_tag(to),
            local_tag,
            strip_tag(from),
            req.from_tag().unwrap_or(""),
            0,
            req.contact_uri().unwrap_or_else(|| name_addr_uri(from)),
            req,
            false,
        )
    }

    /// Starts an in-dialog request. With a loose-routing first hop (`;lr`), the Request-URI is the
    /// remote target and the whole route set goes in Route; with a strict router (no `lr`), the
    /// first route becomes the Request-URI and the remote target is appended (RFC 3261 §12.2.1.1).
    /// `cseq` is given for ACK (same number as the INVITE); otherwise the local CSeq is advanced.
    pub fn request(
        &mut self,
        method: &str,
        via: impl std::fmt::Display,
        cseq: Option<u32>,
    ) -> Writer {
        let n = match cseq {
            Some(n) => n,
            None => {
                self.local_cseq += 1;
                self.local_cseq
            }
        };
        let strict = self
            .route_set()
            .next()
            .is_some_and(|r| !name_addr_uri(r).contains(";lr"));
        let mut w = if strict {
            let mut routes = self.route_set();
            let first = routes.next().expect("strict: there is a first route");
            let mut w = Writer::request(method, name_addr_uri(first));
            for r in routes {
                w.header("Route", r);
            }
            w.header("Route", format_args!("<{}>", self.remote_target()));
            w
        } else {
            let mut w = Writer::request(method, self.remote_target());
            for r in self.route_set() {
                w.header("Route", r);
            }
            w
        };
        w.header("Via", via);
        w.header("Max-Forwards", 70);
        w.header(
            "From",
            format_args!("{};tag={}", self.local_uri(), self.local_tag()),
        );
        if self.remote_tag().is_empty() {
            w.header("To", self.remote_uri());
        } else {
            w.header(
                "To",
                format_args!("{};tag={}", self.remote_uri(), self.remote_tag()),
            );
        }
        w.header("Call-ID", self.call_id());
        w.header("CSeq", format_args!("{n} {method}"));
        w
    }
}

/// A From/To value without its tag parameter.
pub fn strip_tag(v: &str) -> &str {
    let after = v.rfind('>').map(|i| i + 1).unwrap_or(0);
    // Case-insensitive search without lowercasing a copy (once per INVITE answered).
    let i = v.as_bytes()[after..]
        .windows(5)
        .position(|w| w.eq_ignore_ascii_case(b";tag="));
    match i {
        Some(i) => &v[..after + i],
        None => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\
Record-Route: <sip:p2;lr>, <sip:p1;lr>\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c1\r\n\
CSeq: 1 INVITE\r\nContact: <sip:b@10.0.0.2:5062>\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn uac_route_set_is_reversed_and_loose() {
        let m = Message::parse(OK.as_bytes()).unwrap();
        let mut d = Dialog::from_uac_response(&m, "<sip:a@x>", "1", "<sip:b@x>", 1);
        assert_eq!(
            d.route_set().collect::<Vec<_>>(),
            ["<sip:p1;lr>", "<sip:p2;lr>"]
        );
        assert_eq!((d.call_id(), d.remote_tag()), ("c1", "2"));
        assert_eq!(d.remote_target(), "sip:b@10.0.0.2:5062");
        let bye = d
            .request("BYE", "SIP/2.0/UDP a;branch=z9hG4bK9", None)
            .finish(None, b"");
        let b = Message::parse(&bye).unwrap();
        assert_eq!(b.request_uri(), Some("sip:b@10.0.0.2:5062"));
        let routes: Vec<_> = b.header_values(HeaderName::Route).collect();
        assert_eq!(routes, ["<sip:p1;lr>", "<sip:p2;lr>"]);
        assert_eq!(b.cseq(), Some((2, "BYE")));
        assert_eq!(b.to_tag(), Some("2"));
        assert_eq!(b.from_tag(), Some("1"));
    }

    #[test]
    fn strict_router_goes_in_request_uri() {
        let text = OK.replace("<sip:p1;lr>", "<sip:p1>");
        let m = Message::parse(text.as_bytes()).unwrap();
        let mut d = Dialog::from_uac_response(&m, "<sip:a@x>", "1", "<sip:b@x>", 1);
        let ack = d
            .request("ACK", "SIP/2.0/UDP a;branch=z9hG4bK9", Some(1))
            .finish(None, b"");
        let a = Message::parse(&ack).unwrap();
        assert_eq!(a.request_uri(), Some("sip:p1"));
        let routes: Vec<_> = a.header_values(HeaderName::Route).collect();
        assert_eq!(routes, ["<sip:p2;lr>", "<sip:b@10.0.0.2:5062>"]);
        assert_eq!(a.cseq(), Some((1, "ACK")));
    }

    #[test]
    fn strips_tags() {
        assert_eq!(strip_tag("<sip:a@x>;tag=1"), "<sip:a@x>");
        assert_eq!(strip_tag("\"x;tag=y\" <sip:a@x>"), "\"x;tag=y\" <sip:a@x>");
        assert_eq!(strip_tag("sip:a@x;tag=1"), "sip:a@x");
        assert_eq!(strip_tag("<sip:a@x>;TAG=1"), "<sip:a@x>");
    }
}
