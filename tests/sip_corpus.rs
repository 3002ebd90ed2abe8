//! The SIP scanner on a corpus: RFC 4475 torture messages (valid ones must be read right,
//! invalid ones rejected with the right kind), IMS messages that rsip 0.4 cannot read, and a
//! cross-check against rsip on every message both accept: they must agree on the fields the
//! engines use. See docs/sip-message-layer.md for why the scanner exists.

use imsload::sip::{HeaderName, Message, ParseErrorKind};
use rsip::prelude::*;

/// RFC 4475 §3.1.1.1 "wsinv": a short tortuous INVITE (folding, odd whitespace, compact forms).
fn wsinv() -> Vec<u8> {
    let body = "v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.3\r\ns=-\r\nc=IN IP4 192.0.2.4\r\n\
t=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n";
    assert_eq!(body.len(), 150, "the RFC's body is 150 bytes");
    let head = "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n\
TO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n\
from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n\
MaX-fOrWaRdS: 0068\r\n\
Call-ID: wsinv.ndaksdj@192.0.2.1\r\n\
Content-Length   : 150\r\n\
cseq: 0009\r\n  INVITE\r\n\
Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw\r\n\
s :\r\n\
NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n\
UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n\
Content-Type: application/sdp\r\n\
Route:\r\n <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\r\n\
v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n \
SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239\r\n\
m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =\r\n      newvalue ;\r\n  \
secondparam ; q = 0.33\r\n\r\n";
    format!("{head}{body}").into_bytes()
}

const REGISTER_200_IMS: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK-1.2.3;rport=5060\r\n\
f: <sip:001010000000001@ims.mnc001.mcc001.3gppnetwork.org>;tag=a1\r\n\
t: <sip:001010000000001@ims.mnc001.mcc001.3gppnetwork.org>;tag=b2\r\n\
i: reg-1@2001:db8::1\r\n\
CSeq: 2 REGISTER\r\n\
m: <sip:ue@[2001:db8::1]:5060>;expires=600;+sip.instance=\"<urn:gsma:imei:35000000-000000-0>\";+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.mmtel\"\r\n\
Service-Route: <sip:orig@scscf.ims.mnc001.mcc001.3gppnetwork.org:6060;lr>\r\n\
P-Associated-URI: <sip:001010000000001@ims.mnc001.mcc001.3gppnetwork.org>, <tel:+15550001>\r\n\
l: 0\r\n\r\n";

const CHALLENGE_AKA: &str = "SIP/2.0 401 Unauthorized\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-9.9.9\r\n\
From: <sip:alice@ims.local>;tag=1\r\n\
To: <sip:alice@ims.local>;tag=2\r\n\
Call-ID: c-aka\r\n\
CSeq: 1 REGISTER\r\n\
WWW-Authenticate: Digest realm=\"ims.local\", nonce=\"MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=\", algorithm=AKAv1-MD5, qop=\"auth,auth-int\"\r\n\
Content-Length: 0\r\n\r\n";

const INVITE_TEL: &str = "INVITE tel:+15550002 SIP/2.0\r\n\
Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-7.7.7\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@ims.local>;tag=x\r\n\
To: <tel:+15550002>\r\n\
Call-ID: tel-1\r\n\
CSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n";

const OK_PLAIN: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1.2.3;rport=5070;received=127.0.0.1\r\n\
From: <sip:user0001@ims.local>;tag=abc\r\n\
To: <sip:user0002@ims.local>;tag=xyz\r\n\
Call-ID: c1.2.3@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:user0002@127.0.0.1:5071;transport=udp>\r\n\
Record-Route: <sip:127.0.0.1:5060;lr>\r\n\
Content-Length: 0\r\n\r\n";

/// RFC 4475 §3.1.2 invalid messages we must reject, with the kind we report.
fn invalid() -> Vec<(&'static str, String, ParseErrorKind)> {
    let common = "Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw\r\nFrom: <sip:a@b>;tag=1\r\n\
To: <sip:c@d>\r\nCall-ID: x@y\r\nMax-Forwards: 70\r\n";
    vec![
        (
            "clerr: Content-Length larger than the message",
            format!("INVITE sip:user@example.com SIP/2.0\r\n{common}CSeq: 1 INVITE\r\nContent-Length: 9999\r\n\r\nv=0\r\n"),
            ParseErrorKind::Truncated,
        ),
        (
            "ncl: negative Content-Length",
            format!("INVITE sip:user@example.com SIP/2.0\r\n{common}CSeq: 1 INVITE\r\nContent-Length: -999\r\n\r\n"),
            ParseErrorKind::BadContentLength,
        ),
        (
            "lwsruri: LWS inside the Request-URI",
            format!("INVITE sip:user@example.com; lr SIP/2.0\r\n{common}CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"),
            ParseErrorKind::BadStartLine,
        ),
        (
            "badvers: unknown SIP version",
            format!("OPTIONS sip:t.watson@example.org SIP/7.0\r\n{common}CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"),
            ParseErrorKind::BadStartLine,
        ),
        (
            "mismatch01: CSeq method differs from the request method",
            format!("OPTIONS sip:user@example.com SIP/2.0\r\n{common}CSeq: 8 INVITE\r\nContent-Length: 0\r\n\r\n"),
            ParseErrorKind::MissingHeader,
        ),
        (
            "escnull/junk: header line without a colon",
            format!("OPTIONS sip:user@example.com SIP/2.0\r\n{common}CSeq: 1 OPTIONS\r\nthis is not a header\r\n\r\n"),
            ParseErrorKind::BadHeader,
        ),
        (
            "no Call-ID",
            "OPTIONS sip:user@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCSeq: 1 OPTIONS\r\n\r\n".to_string(),
            ParseErrorKind::MissingHeader,
        ),
    ]
}

#[test]
fn torture_invite_is_read_right() {
    let buf = wsinv();
    let m = Message::parse(&buf).expect("wsinv is valid");
    assert_eq!(m.method(), Some("INVITE"));
    assert_eq!(
        m.request_uri(),
        Some("sip:vivekg@chair-dnrc.example.com;unknownparam")
    );
    assert_eq!(m.cseq(), Some((9, "INVITE")));
    assert_eq!(m.call_id(), "wsinv.ndaksdj@192.0.2.1");
    assert_eq!(m.to_tag(), Some("1918181833n"));
    assert_eq!(m.from_tag(), Some("98asjd8"));
    let via = m.top_via().unwrap();
    assert_eq!(
        (via.transport, via.sent_by, via.branch),
        ("UDP", "192.0.2.2", Some("390skdjuw"))
    );
    let vias: Vec<_> = m.header_values(HeaderName::Via).collect();
    assert_eq!(vias.len(), 3, "{vias:?}");
    assert_eq!(m.body().len(), 150);
    assert_eq!(m.len, buf.len());
    assert_eq!(m.header_named("s"), Some(""));
    assert!(m
        .header_named("NewFangledHeader")
        .unwrap()
        .contains("continued"));
    assert_eq!(
        m.contact_uri(),
        Some("sip:jdrosen@example.com"),
        "compact m: with a quoted display name"
    );
}

#[test]
fn ims_messages_are_read_right() {
    let m = Message::parse(REGISTER_200_IMS.as_bytes()).unwrap();
    assert_eq!(m.expires(), Some(600));
    assert_eq!(m.top_via().unwrap().sent_by, "[2001:db8::1]:5060");
    let pau: Vec<_> = m.header_values(HeaderName::PAssociatedUri).collect();
    assert_eq!(
        pau,
        [
            "<sip:001010000000001@ims.mnc001.mcc001.3gppnetwork.org>",
            "<tel:+15550001>"
        ]
    );
    assert_eq!(m.contact_uri(), Some("sip:ue@[2001:db8::1]:5060"));
    let c = Message::parse(CHALLENGE_AKA.as_bytes()).unwrap();
    let ch =
        imsload::sip::auth::Challenge::parse(c.header(HeaderName::WwwAuthenticate).unwrap(), false)
            .unwrap();
    assert!(ch.is_aka());
    assert_eq!(ch.qop, ["auth", "auth-int"]);
    let t = Message::parse(INVITE_TEL.as_bytes()).unwrap();
    assert_eq!(t.request_uri(), Some("tel:+15550002"));
    assert_eq!(
        imsload::sip::message::uri_user("tel:+15550002"),
        Some("+15550002")
    );
}

#[test]
fn invalid_torture_messages_are_rejected_by_kind() {
    for (name, text, kind) in invalid() {
        match Message::parse(text.as_bytes()) {
            Ok(_) => panic!("{name}: accepted"),
            Err(e) => assert_eq!(e.kind, kind, "{name}: {e}"),
        }
    }
}

/// Where rsip reads a message, it must agree with the scanner on what the engines use.
#[test]
fn agrees_with_rsip_where_rsip_can_read() {
    let corpus: Vec<(&str, Vec<u8>)> = vec![
        ("ok_plain", OK_PLAIN.as_bytes().to_vec()),
        ("register_200_ims", REGISTER_200_IMS.as_bytes().to_vec()),
        ("challenge_aka", CHALLENGE_AKA.as_bytes().to_vec()),
        ("invite_tel", INVITE_TEL.as_bytes().to_vec()),
        ("wsinv", wsinv()),
    ];
    let mut compared = 0;
    for (name, buf) in &corpus {
        let ours = Message::parse(buf).unwrap_or_else(|e| panic!("{name}: {e}"));
        let Ok(theirs) = rsip::SipMessage::try_from(buf.as_slice()) else {
            eprintln!("{name}: rsip 0.4 cannot parse it (the scanner can)");
            continue;
        };
        let Ok(cid) = theirs.call_id_header() else {
            eprintln!("{name}: rsip finds no Call-ID");
            continue;
        };
        assert_eq!(cid.value(), ours.call_id(), "{name}: Call-ID");
        if let Ok(seq) = theirs.cseq_header().and_then(|c| c.seq()) {
            assert_eq!(Some(seq), ours.cseq().map(|c| c.0), "{name}: CSeq");
        }
        if let Ok(via) = theirs.via_header().and_then(|v| v.typed()) {
            let b = via.branch().map(|b| b.to_string());
            assert_eq!(
                b.as_deref(),
                ours.top_via().and_then(|v| v.branch),
                "{name}: branch"
            );
        }
        match (&theirs, ours.status()) {
            (rsip::SipMessage::Response(r), Some(code)) => {
                assert_eq!(u16::from(r.status_code.clone()), code, "{name}: status")
            }
            (rsip::SipMessage::Request(r), None) => {
                assert_eq!(
                    r.method.to_string(),
                    ours.method().unwrap(),
                    "{name}: method"
                )
            }
            _ => panic!("{name}: request/response disagreement"),
        }
        compared += 1;
    }
    assert!(compared >= 1, "rsip read none of the corpus");
    // The evidence behind docs/sip-message-layer.md, printed with --nocapture.
    if let Ok(m) = rsip::SipMessage::try_from(CHALLENGE_AKA.as_bytes()) {
        let typed = m.headers().iter().find_map(|h| match h {
            rsip::Header::WwwAuthenticate(w) => Some(w.typed().map(|_| ())),
            _ => None,
        });
        eprintln!("challenge_aka: rsip typed WWW-Authenticate: {typed:?}");
    }
}
