//! The media plane: RTP streams for the calls imsload places and answers, and what a listener
//! would make of what arrives. Sans IO like the user-agent layer: [`engine::MediaEngine`] takes
//! packets and time and gives packets and a deadline; the load engine owns its socket.
//!
//! - [`rtp`]: RTP headers (RFC 3550 §5.1).
//! - [`rtcp`]: RTCP compound reports (RFC 3550 §6) written and read; NTP time.
//! - [`g711`]: PCMU/PCMA encoding of a tone or a WAV file.
//! - [`sdp`]: the part of a peer's SDP that media needs.
//! - [`quality`]: per-stream loss, jitter, duplicates, reordering, longest gap; the E-model.
//! - [`engine`]: every stream of one worker on one socket (and RTCP on a second).

pub mod engine;
pub mod g711;
pub mod quality;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
