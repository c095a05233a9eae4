//! From the kernel's flow events to audit records ([`pipeline`]): the
//! process behind each ([`process`], its command line masked by [`mask`]),
//! `log_allowed = "first"` ([`first_allowed`]) and the events the kernel
//! could not queue ([`lost`]); the refusals a job is told of ([`refused`]).

pub mod first_allowed;
pub mod lost;
pub mod mask;
pub mod pipeline;
pub mod process;
pub mod refused;

pub use pipeline::{FlowStats, Pipeline};
pub use refused::Refused;
