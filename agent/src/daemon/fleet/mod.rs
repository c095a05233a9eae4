//! The fleet sync: this host's session with the fleet's etcd ([`sync`]),
//! what the agent's state keeps of it ([`here`]), and connecting with
//! `[fleet]`'s credentials ([`client`], which the `geowall fleet` commands
//! use too).

pub mod client;
mod here;
mod sync;

pub(super) use here::Here;
pub(super) use sync::run;
