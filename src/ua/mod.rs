//! The SIP user-agent layer: sans-IO user-agent roles between [`crate::sip`] (messages,
//! transactions) and [`crate::load`] (population, scheduling, sockets). Nothing here depends on
//! `crate::load`: what a role needs of the run comes in a config struct of its own.
//!
//! - [`timers`]: the hashed timer wheel behind every user-agent timer.
//! - [`challenge`]: answering 401/407 (Digest MD5, AKAv1-MD5 with re-synchronisation), shared
//!   by every client role of a UE.
//! - [`registration`]: the registration client of one UE (REGISTER, challenges, refresh,
//!   de-registration), input + now → REGISTER to send, outcomes, next deadline.
//!
//! To come (issue 11): the other role state machines (INVITE client, non-INVITE client,
//! INVITE/BYE server).

pub mod challenge;
pub mod registration;
pub mod timers;
