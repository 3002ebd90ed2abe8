//! The one part of SDP offer/answer (RFC 3264) that the SIP layer itself needs: which way media
//! flows. An answer to a re-INVITE (hold, resume) must mirror the offer's direction; the media
//! plane reads the rest of a peer's SDP (`crate::media::sdp`).

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
        let text = String::from_utf8_lossy(body);
        let (mut session, mut media, mut in_audio, mut seen_audio) = (None, None, false, false);
        let mut hold_addr = false;
        for line in text.lines().map(str::trim_end) {
            if let Some(m) = line.strip_prefix("m=") {
                if seen_audio {
                    break;
                }
                in_audio = m.starts_with("audio ");
                seen_audio |= in_audio;
            } else if let Some(a) = line.strip_prefix("a=") {
                let d = Direction::from_attr(a);
                if in_audio {
                    media = d.or(media);
                } else if !seen_audio {
                    session = d.or(session);
                }
            } else if let Some(c) = line.strip_prefix("c=") {
                if in_audio || !seen_audio {
                    hold_addr = c.split_ascii_whitespace().nth(2) == Some("0.0.0.0");
                }
            }
        }
        (media.or(session).unwrap_or_default(), hold_addr)
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
}
