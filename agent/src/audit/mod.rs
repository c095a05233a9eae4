//! The audit log: flow records and the other record kinds ([`record`]),
//! the writer with its hash chain and rotation ([`log`]), the files of a log
//! ([`log_files`]), checking them ([`verify`]), and reading them back:
//! filtering ([`filter`]) and following ([`follow`]).

pub mod filter;
pub mod follow;
pub mod log;
pub mod log_files;
pub mod record;
pub mod verify;

pub use log::{AuditLog, Rotation};
pub use record::{EventRecord, FlowRecord, MapSource, Resolver};
