//! Names: DNS messages as the forwarder reads them ([`wire`]) and the name
//! patterns of policies, approvals and log filters ([`pattern`]).

pub mod learned;
pub mod pattern;
pub mod wire;

pub use pattern::{NamePattern, PatternError};
