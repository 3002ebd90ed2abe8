//! The SIP user-agent layer: sans-IO user-agent roles between [`crate::sip`] (messages,
//! transactions) and [`crate::load`] (population, scheduling, sockets). Nothing here depends on
//! `crate::load`: what a role needs of the run comes in a config struct of its own.
//!
//! - [`timers`]: the hashed timer wheel behind every user-agent timer.
//! - [`challenge`]: answering 401/407 (Digest MD5, AKAv1-MD5 with re-synchronisation), shared
//!   by every client role of a UE.
//! - [`registration`]: the registration client of one UE (REGISTER, challenges, refresh,
//!   de-registration), input + now → REGISTER to send, outcomes, next deadline.
//! - [`caller`]: the calling side of one call (INVITE, challenge, ACK, hold and BYE, CANCEL
//!   when unanswered, the far end's BYE), with the RFC 6076 delays as events.
//! - [`nit`]: a lone MESSAGE or OPTIONS (challenge, final response or timeout).
//!
//! To come (issue 11): the INVITE/BYE server.

pub mod caller;
pub mod challenge;
pub mod nit;
pub mod registration;
pub mod timers;
