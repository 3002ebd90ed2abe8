//! The embedded loopback target behind `imsload serve` and the default run.
//!
//! - [`core`]: registrar + stateless proxy + answering UA, sans IO.
//! - [`serve`]: its UDP runner.

pub mod core;
pub mod serve;
