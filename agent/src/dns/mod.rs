//! Names: DNS messages as the forwarder reads them ([`wire`]), the name
//! patterns of policies, approvals and log filters ([`pattern`]), what
//! each job resolved ([`learned`]), and the agent's own questions
//! ([`resolve`]).

pub mod learned;
pub mod pattern;
pub mod resolve;
pub mod wire;

pub use pattern::{NamePattern, PatternError};
