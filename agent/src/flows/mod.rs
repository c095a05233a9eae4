//! Flow records and the audit log.

pub mod log;
pub mod record;
pub mod time;

pub use log::AuditLog;
pub use record::{EventRecord, FlowRecord, Resolver};
