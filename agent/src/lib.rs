//! geowall: egress enforcement for data residency.
//!
//! A kernel eBPF program judges every outbound connection of governed
//! workloads against a region-tagged IP map; this library is the agent that
//! loads the programs and the maps (the `geowall` binary adds the command
//! line that talks to it).
//!
//! Data flows one way: map sources ([`regions`]) and policies ([`policy`])
//! are compiled into a [`plan`], laid out as the kernel's tables
//! ([`tables`]) and installed ([`kernel`]); the kernel's decisions come back
//! as flow events ([`events`]) that become audit records ([`audit`]). The
//! [`daemon`] runs all of it. The modules form layers that import only
//! downward, from [`vocab`] and [`host`] up to [`daemon`]:
//! `docs/ARCHITECTURE.md` lists them, and `cargo xtask lint` checks them.

#![warn(unreachable_pub, unused_crate_dependencies)]

// Cargo gives the package's library and binary one list of dependencies,
// and `unused_crate_dependencies` checks each crate alone: these are the
// binary's (the command line), named here so that the library's check can
// stay on. `main.rs` names the library's own the same way.
use {anyhow as _, clap as _, clap_complete as _, clap_mangen as _, tracing_subscriber as _};

pub mod approvals;
pub mod audit;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dns;
pub mod events;
pub mod fleet;
pub mod host;
pub mod kernel;
pub mod plan;
pub mod policy;
pub mod regions;
pub mod tables;
pub mod vocab;
