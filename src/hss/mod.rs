//! A small Diameter Cx HSS for the lab IMS core (`imshss`; `lab/ims/`, `docs/ims-lab.md`).
//!
//! No HSS can be installed from the package registries this project uses, so the project
//! carries one: honest about the protocol (real Diameter over TCP, the Cx commands Kamailio's
//! I-CSCF and S-CSCF send, Milenage vectors), small about everything else (one realm, no
//! iFC, no RTR/PPR, state in memory only).
//!
//! - [`crate::diameter`] (shared with the probe): RFC 6733 codec (header, AVPs, framing).
//! - [`vectors`]: Digest-AKAv1-MD5 vectors and re-synchronisation from AUTS, computed by
//!   [`crate::sip::aka`], the AKA the UE side runs.
//! - [`subscribers`]: the subscriber CSV shared with the UE side.
//! - [`cx`]: sans-IO peer and Cx logic (CER/DWR/DPR, UAR, MAR, SAR, LIR).
//! - [`server`]: the tokio TCP shell.
//! - [`app`]: `imshss`'s arguments and its one call.
//!
//! Why not the `diameter` crate (0.7): its decoder fails on any AVP its dictionary lacks
//! (`Error::UnknownAvpCode`), it ships no 3GPP Cx dictionary, and it pulls native-tls
//! (OpenSSL) and all of tokio; the codec here is a few hundred lines and carries unknown AVPs.

pub mod app;
pub mod cx;
pub mod server;
pub mod subscribers;
pub mod vectors;

pub use cx::{Hss, HssConfig};
pub use subscribers::Subscribers;
