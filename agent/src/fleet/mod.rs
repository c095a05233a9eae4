//! The shape of a fleet's shared state in etcd, without I/O: the keys
//! ([`keys`]), the values hosts and approvers write ([`values`]), the fleet
//! policies a host applies and keeps on disk ([`policies`]), and the view
//! `geowall fleet status` draws from every host's status ([`view`]).
//!
//! The agent's side (watches, leases, publishing) is `daemon::fleet`; the
//! commands are the CLI's `fleet` and `approvals --fleet`.

pub mod keys;
pub mod policies;
pub mod values;
pub mod view;

pub use keys::{GrantKey, Keys};
pub use policies::{FleetPolicies, FleetPolicy};
pub use values::{Confirmation, DecisionValue, NodeStatus, RequestValue, ValueError};
