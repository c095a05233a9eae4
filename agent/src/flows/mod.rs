//! Flow records and the audit log.

pub mod log;
pub mod mask;
pub mod process;
pub mod record;
pub mod settings;
pub mod time;

pub use log::AuditLog;
pub use record::{EventRecord, FlowRecord, Resolver};
pub use settings::AuditConfig;
