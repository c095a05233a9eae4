//! The kernel side, from userspace: loading and pinning the programs and
//! maps, attaching them to the governed cgroup ([`Kernel`]), switching
//! tables, writing grants and bindings, reading counters and flow events,
//! and what the pins say while no agent runs ([`pinned_info`]).
//!
//! [`sys`] holds the few `bpf(2)` commands aya does not expose, [`btf`] the
//! kernel struct offsets the programs need, [`pins`] where everything is
//! pinned, [`stats`] the programs' run-time statistics.

mod bindings;
pub mod btf;
mod config_map;
mod dns;
mod error;
mod grants;
mod handle;
mod names;
mod pinned;
pub mod pins;
mod programs;
pub mod stats;
pub mod sys;
mod tables;
mod view;

pub use dns::{DnsMaps, PinnedDns};
pub use error::KernelError;
pub(crate) use error::{map_err, sys_err};
pub use grants::GrantWriter;
pub use handle::{AttachReport, AuditSwitch, Kernel, OpenOptions};
pub use pinned::{CounterReader, PinnedInfo, pinned_info};
pub use pins::Pins;
pub use programs::PROGRAMS;
pub use view::KernelView;
