//! SDP bodies (RFC 4566) as offer/answer (RFC 3264) reads them: [`Sdp::parse`] scans a body
//! once into its session-level address and direction and its media sections, and [`Direction`]
//! says which way media flows. The SIP layer needs the direction (an answer to a re-INVITE
//! mirrors the offer's); the media plane picks its stream from the rest (`crate::media::sdp`).

use std::net::IpAddr;

/// An SDP body scanned once: what offer/answer and our media read, borrowed from the body.
/// Lines we do not read are skipped, not checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sdp<'a> {
    /// The session-level `c=` address and direction attribute (before the first `m=`).
    pub addr: Option<IpAddr>,
    pub direction: Option<Direction>,
    pub media: Vec<MediaSection<'a>>,
}

/// One `m=` line and the lines up to the next (RFC 4566 §5.14).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaSection<'a> {
    /// `audio`, `video`, …
    pub kind: &'a str,
    /// `None` when the port field is no number.
    pub port: Option<u16>,
    pub proto: &'a str,
    /// The format list (RTP payload types), as written.
    pub formats: &'a str,
    /// The section's own `c=` address and direction attribute.
    pub addr: Option<IpAddr>,
    pub direction: Option<Direction>,
    /// `a=ptime` in milliseconds.
    pub ptime: Option<u16>,
    /// `a=rtcp:PORT [IN IP4 ADDRESS]` (RFC 3605).
    pub rtcp: Option<(u16, Option<IpAddr>)>,
}

impl<'a> Sdp<'a> {
    /// `None` when the body is not UTF-8 text.
    pub fn parse(body: &'a [u8]) -> Option<Sdp<'a>> {
        let text = std::str::from_utf8(body).ok()?;
        let mut sdp = Sdp::default();
        for line in text.lines().map(str::trim_end) {
            if let Some(m) = line.strip_prefix("m=") {
                // m=KIND PORT[/N] PROTO FORMAT...
                let (kind, rest) = field(m);
                let (port, rest) = field(rest);
                let (proto, formats) = field(rest);
                sdp.media.push(MediaSection {
                    kind,
                    port: port.split('/').next().and_then(|p| p.parse().ok()),
                    proto,
                    formats: formats.trim(),
                    addr: None,
                    direction: None,
                    ptime: None,
                    rtcp: None,
                });
            } else if let Some(c) = line.strip_prefix("c=") {
                // c=IN IP4 ADDRESS[/TTL]
                let addr = c
                    .split_ascii_whitespace()
                    .nth(2)
                    .and_then(|a| a.split('/').next()?.parse().ok());
                match sdp.media.last_mut() {
                    Some(m) => m.addr = addr,
                    None => sdp.addr = addr,
                }
            } else if let Some(a) = line.strip_prefix("a=") {
                let Some(m) = sdp.media.last_mut() else {
                    sdp.direction = Direction::from_attr(a).or(sdp.direction);
                    continue;
                };
                if let Some(d) = Direction::from_attr(a) {
                    m.direction = Some(d);
                } else if let Some(p) = a.strip_prefix("ptime:") {
                    m.ptime = p.trim().parse().ok();
                } else if let Some(r) = a.strip_prefix("rtcp:") {
                    let mut f = r.split_ascii_whitespace();
                    if let Some(port) = f.next().and_then(|p| p.parse().ok()) {
                        m.rtcp = Some((port, f.nth(2).and_then(|a| a.parse().ok())));
                    }
                }
            }
        }
        Some(sdp)
    }

    /// The first audio section.
    pub fn audio(&self) -> Option<&MediaSection<'a>> {
        self.media.iter().find(|m| m.kind == "audio")
    }

    /// Where a section's media goes: its own address, else the session's.
    pub fn addr_of(&self, m: &MediaSection<'_>) -> Option<IpAddr> {
        m.addr.or(self.addr)
    }

    /// A section's direction: its own attribute, else the session's, else sendrecv.
    pub fn direction_of(&self, m: &MediaSection<'_>) -> Direction {
        m.direction.or(self.direction).unwrap_or_default()
    }
}

/// Our answer to an SDP offer, worked out from the offer once (RFC 3264 §6): as many `m=` lines
/// as the offer, in its order; its first audio stream answered with those of its payload types
/// we play (PCMU 0, PCMA 8), in its order, and the mirrored direction; every other stream
/// refused with port 0 (and the offer's formats: an answer must list one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The answered audio stream's payload types; empty when no audio stream is answered.
    pub pts: &'static str,
    pub direction: Direction,
    /// The refused `m=` lines (CRLF-ended) before and after the answered audio stream.
    pub before: Box<str>,
    pub after: Box<str>,
}

impl Answer {
    /// The answer to the offer in `body`; `None` when it holds no media stream (no offer: an
    /// INVITE without SDP gets our own offer in its 2xx).
    pub fn to_offer(body: &[u8]) -> Option<Answer> {
        use std::fmt::Write as _;
        let sdp = Sdp::parse(body)?;
        if sdp.media.is_empty() {
            return None;
        }
        let mut answer = Answer::default();
        let (mut before, mut after) = (String::new(), String::new());
        for m in &sdp.media {
            if answer.pts.is_empty() && m.kind == "audio" && m.port.is_some_and(|p| p != 0) {
                let mut pts = m.formats.split_ascii_whitespace();
                let first = pts.find(|p| *p == "0" || *p == "8");
                let both = first.is_some_and(|f| pts.any(|p| p != f && (p == "0" || p == "8")));
                answer.pts = match (first, both) {
                    (Some("0"), true) => "0 8",
                    (Some("8"), true) => "8 0",
                    (Some("0"), false) => "0",
                    (Some(_), false) => "8",
                    _ => "",
                };
                if !answer.pts.is_empty() {
                    answer.direction = sdp.direction_of(m).answer();
                    continue;
                }
            }
            let out = if answer.pts.is_empty() {
                &mut before
            } else {
                &mut after
            };
            let _ = write!(out, "m={} 0 {} {}\r\n", m.kind, m.proto, m.formats);
        }
        answer.before = before.into();
        answer.after = after.into();
        Some(answer)
    }
}

/// The first whitespace-separated field of `s`, and the rest after it.
fn field(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    s.split_at(s.find(|c: char| c.is_ascii_whitespace()).unwrap_or(s.len()))
}

/// Which way media flows, from the SDP's author's side (RFC 3264 §5.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction attribute `a=<attr>` names, if it is one.
    pub fn from_attr(attr: &str) -> Option<Direction> {
        match attr {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    pub fn attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// What an answerer that would send and receive says to an offer of this direction
    /// (RFC 3264 §6.1): a `sendonly` offer (the offerer holds us) gets `recvonly`, and so on.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether we send to an author who said this (we send unless it will not receive).
    pub fn we_send(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// Whether we should expect packets from it.
    pub fn we_receive(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// The direction of the first audio stream of the SDP `body` (its own attribute, else the
    /// session's, else `sendrecv`), and whether its connection address is the RFC 2543 hold
    /// address 0.0.0.0 (which older UAs send instead of `sendonly`/`inactive`).
    pub fn of_audio(body: &[u8]) -> (Direction, bool) {
        let Some(sdp) = Sdp::parse(body) else {
            return (Direction::default(), false);
        };
        let (direction, addr) = match sdp.audio() {
            Some(a) => (sdp.direction_of(a), sdp.addr_of(a)),
            None => (sdp.direction.unwrap_or_default(), sdp.addr),
        };
        (direction, addr.is_some_and(|a| a.is_unspecified()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_mirrors_the_offer_and_the_audio_streams_attribute_wins() {
        for d in [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ] {
            assert_eq!(Direction::from_attr(d.attr()), Some(d));
            assert_eq!(d.answer().answer(), d);
            // Whoever sends, the other receives.
            assert_eq!(d.we_send(), d.answer().we_receive());
        }
        let hold = b"v=0\r\nc=IN IP4 127.0.0.1\r\na=sendrecv\r\nm=audio 4000 RTP/AVP 0\r\na=inactive\r\nm=video 4002 RTP/AVP 96\r\na=sendonly\r\n";
        assert_eq!(Direction::of_audio(hold), (Direction::Inactive, false));
        let session = b"v=0\r\nc=IN IP4 127.0.0.1\r\na=sendonly\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert_eq!(Direction::of_audio(session), (Direction::SendOnly, false));
        let old = b"v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert_eq!(Direction::of_audio(old), (Direction::SendRecv, true));
        assert_eq!(Direction::of_audio(b""), (Direction::SendRecv, false));
    }

    #[test]
    fn an_answer_has_the_offers_streams_in_order_and_plays_only_what_both_have() {
        let a =
            Answer::to_offer(b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n").unwrap();
        assert_eq!((a.pts, a.direction), ("0", Direction::SendRecv));
        assert_eq!((&*a.before, &*a.after), ("", ""));
        let a = Answer::to_offer(
            b"v=0\r\nm=video 5000 RTP/AVP 96\r\nm=audio 4000 RTP/AVP 18 8 101 0\r\na=sendonly\r\n\
m=audio 4002 RTP/AVP 0\r\nm=text 6000 RTP/AVP 98\r\n",
        )
        .unwrap();
        assert_eq!((a.pts, a.direction), ("8 0", Direction::RecvOnly));
        assert_eq!(&*a.before, "m=video 0 RTP/AVP 96\r\n");
        assert_eq!(&*a.after, "m=audio 0 RTP/AVP 0\r\nm=text 0 RTP/AVP 98\r\n");
        // An audio stream refused in the offer, or with nothing we play, is refused.
        let a =
            Answer::to_offer(b"v=0\r\nm=audio 0 RTP/AVP 0\r\nm=audio 4000 RTP/AVP 18\r\n").unwrap();
        assert_eq!(a.pts, "");
        assert_eq!(
            &*a.before,
            "m=audio 0 RTP/AVP 0\r\nm=audio 0 RTP/AVP 18\r\n"
        );
        assert_eq!(Answer::to_offer(b""), None);
        assert_eq!(Answer::to_offer(b"v=0\r\n"), None);
    }

    #[test]
    fn a_body_is_scanned_into_its_session_and_media_sections() {
        let b = b"v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\nc=IN IP4 10.0.0.1\r\na=recvonly\r\n\
m=video 5000 RTP/AVP 96\r\nc=IN IP4 10.0.0.7/127\r\n\
m=audio  30000/2 RTP/AVP 8 0 101\r\na=ptime:30\r\na=rtcp:40001 IN IP4 10.0.0.9\r\na=sendonly\r\n";
        let sdp = Sdp::parse(b).unwrap();
        assert_eq!(sdp.addr, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(sdp.direction, Some(Direction::RecvOnly));
        assert_eq!(sdp.media.len(), 2);
        let v = &sdp.media[0];
        assert_eq!((v.kind, v.port, v.formats), ("video", Some(5000), "96"));
        // A section's own c= is its own; the audio one has none and takes the session's.
        assert_eq!(v.addr, Some("10.0.0.7".parse().unwrap()));
        assert_eq!(sdp.direction_of(v), Direction::RecvOnly);
        let a = sdp.audio().unwrap();
        assert_eq!(
            (a.port, a.proto, a.formats, a.ptime),
            (Some(30000), "RTP/AVP", "8 0 101", Some(30))
        );
        assert_eq!(sdp.addr_of(a), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(sdp.direction_of(a), Direction::SendOnly);
        assert_eq!(a.rtcp, Some((40001, Some("10.0.0.9".parse().unwrap()))));
        assert_eq!(Sdp::parse(b"\xff"), None);
        let bad = Sdp::parse(b"m=audio x\r\n").unwrap();
        assert_eq!((bad.media[0].port, bad.media[0].formats), (None, ""));
    }
}
