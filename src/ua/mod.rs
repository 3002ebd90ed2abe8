//! The SIP user-agent layer: sans-IO user-agent roles between [`crate::sip`] (messages,
//! transactions) and [`crate::load`] (population, scheduling, sockets).
//!
//! - [`timers`]: the hashed timer wheel behind every user-agent timer.
//!
//! To come (issue 11): the role state machines (registration client, INVITE client, non-INVITE
//! client, INVITE/BYE server), each input + now → output + next deadline.

pub mod timers;
