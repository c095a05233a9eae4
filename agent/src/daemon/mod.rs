//! `geowall run`: the agent.
//!
//! Start-up: read and check the config, load the programs and (pinned)
//! maps, install the tables, bind cgroups, attach (or adopt pinned links),
//! then serve the control socket and turn flow events into audit records
//! until SIGINT or SIGTERM. SIGHUP (or `reload` on the socket) re-reads the
//! config; a bad config is reported and the tables in force stay in force.

mod approvals;
mod audit_gate;
mod caller;
mod context;
mod control;
mod dns;
mod error;
pub mod fleet;
mod grants;
mod jobs;
mod metrics;
mod names;
mod reader;
mod refusals;
mod run;
mod state;
mod stop;
mod watchers;
mod webhook;

pub use error::DaemonError;
pub use run::{RunOptions, run};
