//! Flow records and the audit log: records ([`record`]), the writer with
//! its hash chain and rotation ([`log`]), the files of a log ([`set`]),
//! checking them ([`verify`]), reading them ([`tail`]), and the agent's event pipeline
//! ([`pipeline`]): process context ([`process`], masked by [`mask`]),
//! `log_allowed = "first"` ([`volume`]) and lost events ([`lost`]).

pub mod log;
pub mod lost;
pub mod mask;
pub mod pipeline;
pub mod process;
pub mod record;
pub mod set;
pub mod tail;
pub mod verify;
pub mod volume;

pub use log::{AuditLog, Rotation};
pub use pipeline::{FlowStats, Pipeline};
pub use record::{EventRecord, FlowRecord, MapSource, Resolver};
