//! The vocabulary every other module speaks: durations and sizes as the
//! config writes them ([`units`]), the clocks ([`clock`]), SHA-256 in hex
//! ([`hex`]), shell-style patterns ([`glob`]) and an error with its causes
//! ([`error`]). Nothing here knows about geowall's kernel, config or log.

pub mod clock;
pub mod error;
pub mod glob;
pub mod hex;
pub mod units;
