//! What the agent's state holds of its fleet: the fleet policies in force
//! (kept on disk too), what it refused, the link to etcd, the answers it
//! gave to decisions. The sync ([`super::sync`]) changes it through the
//! state's lock; `status` reads it.

use std::collections::BTreeMap;

use crate::{
    config::FleetConfig,
    control::proto::FleetLinkStatus,
    fleet::{Confirmation, FleetPolicies, Keys},
    vocab::clock,
};

/// The link to etcd as last seen.
#[derive(Debug, Clone, Default)]
pub(in crate::daemon) struct Link {
    pub connected: bool,
    /// Unix ms of the last change.
    pub since_ms: u64,
    pub unreachable: Option<String>,
}

/// The fleet part of the agent's state.
#[derive(Debug, Clone)]
pub(in crate::daemon) struct Here {
    pub keys: Keys,
    pub node: String,
    pub config: FleetConfig,
    /// The fleet policies in force (and the revision they were read at).
    pub applied: FleetPolicies,
    /// Refused values: key → the error, naming its key and revision.
    pub refused: BTreeMap<String, String>,
    pub link: Link,
    /// Requests not yet written to etcd.
    pub unpublished: usize,
    /// Answers to decisions, by request id (published with the request).
    pub confirmations: BTreeMap<u32, Confirmation>,
}

impl Here {
    /// The fleet part of a host configured with `config`, from the state
    /// it last applied (kept in `state_dir`).
    pub(in crate::daemon) fn load(config: &FleetConfig) -> Here {
        let applied = match FleetPolicies::load(&config.state_dir) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(
                    dir = %config.state_dir.display(),
                    error = %e,
                    "cannot read the fleet state this host last applied: starting without fleet policies"
                );
                FleetPolicies::default()
            }
        };
        Here {
            keys: Keys::new(&config.prefix),
            node: config.node_name(),
            config: config.clone(),
            applied,
            refused: BTreeMap::new(),
            link: Link {
                connected: false,
                since_ms: clock::unix_ms(),
                unreachable: Some("not connected yet".into()),
            },
            unpublished: 0,
            confirmations: BTreeMap::new(),
        }
    }

    /// Keeps the state applied on disk.
    pub(in crate::daemon) fn save(&self) {
        if let Err(e) = self.applied.save(&self.config.state_dir) {
            tracing::error!(
                dir = %self.config.state_dir.display(),
                error = %e,
                "cannot save the fleet state applied"
            );
        }
    }

    /// The last thing that went wrong, for the host's status key.
    pub(in crate::daemon) fn last_error(&self) -> Option<String> {
        self.refused
            .values()
            .next_back()
            .cloned()
            .or_else(|| self.link.unreachable.clone())
    }

    /// For `status`.
    pub(in crate::daemon) fn status(&self) -> FleetLinkStatus {
        FleetLinkStatus {
            node: self.node.clone(),
            prefix: self.keys.prefix().to_owned(),
            endpoints: self.config.endpoints(),
            connected: self.link.connected,
            since: Some(crate::approvals::rfc3339_ms(self.link.since_ms)),
            unreachable: self.link.unreachable.clone(),
            revision: self.applied.revision,
            policies: self
                .applied
                .policies
                .iter()
                .map(|(n, p)| format!("{n}@{}", p.revision))
                .collect(),
            refused: self.refused.values().cloned().collect(),
            unpublished: self.unpublished,
        }
    }
}
