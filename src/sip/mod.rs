//! The SIP layer: everything that knows SIP and nothing about load or probes.
//!
//! - [`message`]: zero-copy view of a received message, framing for streams.
//! - [`builder`]: writing outgoing messages.
//! - [`ids`]: branches, Call-IDs and tags that index our own tables.
//! - [`transaction`]: RFC 3261 client transaction timers as sans-IO state machines.
//! - [`dialog`]: route sets, remote targets, in-dialog requests.
//! - [`auth`]: HTTP Digest (MD5, qop auth/auth-int).
//! - [`aka`]: Digest AKAv1-MD5 with Milenage (RES as the digest password, AUTS re-sync).
//! - [`sdp`]: the direction of an SDP offer or answer (hold, resume).
//! - [`secagree`]: security agreement headers (RFC 3329, 3GPP ipsec-3gpp).
//! - [`transport`]: sockets and stream framing.
//! - [`text_pool`]: the strings a call keeps, reused from call to call.

pub mod aka;
pub mod auth;
pub mod builder;
pub mod dialog;
pub mod ids;
pub mod message;
pub mod sdp;
pub mod secagree;
pub mod text_pool;
pub mod transaction;
pub mod transport;

pub use message::{HeaderName, Message, ParseError, ParseErrorKind};
pub use transport::Transport;

/// SIP methods we count separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Method {
    Register,
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Message,
    Other,
}

impl Method {
    pub fn parse(s: &str) -> Method {
        match s {
            "REGISTER" => Method::Register,
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "MESSAGE" => Method::Message,
            _ => Method::Other,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Register => "REGISTER",
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Message => "MESSAGE",
            Method::Other => "OTHER",
        }
    }
}

impl From<&str> for Method {
    fn from(s: &str) -> Method {
        Method::parse(s)
    }
}

/// The reason phrase we send for a status code.
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        513 => "Message Too Large",
        _ => "Unknown",
    }
}
