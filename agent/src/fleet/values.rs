//! The JSON values hosts and approvers write, and reading them back: a
//! value that does not parse is refused with its key and revision, and
//! nothing else stops.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::approvals::ApprovalView;

/// A value read from etcd that geowall cannot use.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{key} (revision {revision}): {message}")]
pub struct ValueError {
    pub key: String,
    pub revision: i64,
    pub message: String,
}

impl ValueError {
    pub fn new(key: &str, revision: i64, message: impl Into<String>) -> ValueError {
        ValueError {
            key: key.to_owned(),
            revision,
            message: message.into(),
        }
    }
}

/// Parses the JSON `value` of `key` at `revision`.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    key: &str,
    revision: i64,
    value: &[u8],
) -> Result<T, ValueError> {
    serde_json::from_slice(value).map_err(|e| ValueError::new(key, revision, e.to_string()))
}

/// A host's status, `P/nodes/NODE` (kept under the host's lease: the key
/// goes when the host stops renewing it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    /// The agent's version.
    pub version: String,
    /// The version of the kernel programs in force.
    pub programs: String,
    /// Whether a policy in enforce mode is bound and the programs attached.
    pub enforcing: bool,
    /// RFC 3339, when this status was written.
    pub time: String,
    pub epoch: u64,
    /// Every policy in force: where it comes from and a hash of its text.
    pub policies: Vec<NodePolicy>,
    /// The map sources in force.
    pub sources: Vec<NodeSource>,
    /// Per policy: allowed, denied, would_deny.
    pub counters: BTreeMap<String, [u64; 3]>,
    /// Flow events the kernel could not hand over (ring buffer full).
    pub lost_events: u64,
    /// The audit log's last record: `seq` and its SHA-256 (the chain head).
    pub audit_seq: u64,
    pub audit_head: String,
    /// The fleet revision the host has applied policies up to.
    pub fleet_revision: i64,
    /// What last went wrong with the fleet's state on this host (a refused
    /// policy, an unparsable value), if anything.
    pub last_error: Option<String>,
}

/// A policy in force on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePolicy {
    pub name: String,
    /// `fleet` or `file`.
    pub origin: String,
    /// SHA-256 of the policy's text (for a fleet policy: of the value as
    /// read from etcd).
    pub sha256: String,
    /// A fleet policy: the etcd revision it was written at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
}

/// A map source in force on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSource {
    pub source: String,
    pub sha256: String,
}

/// `P/members/NODE`: a host that joined (kept when its lease lapses, so
/// `fleet status` can name hosts that went quiet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node: String,
    /// RFC 3339, when the host last connected.
    pub joined: String,
}

/// `P/requests/NODE/ID`: a host's request and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestValue {
    pub node: String,
    pub request: ApprovalView,
    /// What the host did with the last decision written for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<Confirmation>,
}

/// A host's answer to a decision from the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// `applied` (in the kernel and the audit log) or `refused`.
    pub state: String,
    /// The decision's key and revision.
    pub key: String,
    pub revision: i64,
    /// RFC 3339.
    pub time: String,
    /// The approver (the user of the grant's key).
    pub by: String,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// A decision on a request, `P/grants/USER/NODE/ID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionValue {
    /// `approve`, `deny` or `revoke`.
    pub decision: String,
    /// An approval: when the grant ends (Unix milliseconds; its lease ends
    /// then too). A grant that reaches its host after this is not applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// RFC 3339, when the approver wrote it.
    pub time: String,
}

impl DecisionValue {
    /// Reads and checks a decision's value.
    pub fn parse(key: &str, revision: i64, value: &[u8]) -> Result<DecisionValue, ValueError> {
        let d: DecisionValue = parse_json(key, revision, value)?;
        match d.decision.as_str() {
            "approve" if d.expires_ms.is_none() => Err(ValueError::new(
                key,
                revision,
                "an approval needs expires_ms",
            )),
            "approve" | "deny" | "revoke" => Ok(d),
            other => Err(ValueError::new(
                key,
                revision,
                format!("unknown decision '{other}' (approve, deny or revoke)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_checked() {
        let ok = br#"{"decision":"approve","expires_ms":5,"time":"t"}"#;
        assert_eq!(
            DecisionValue::parse("k", 3, ok).unwrap().expires_ms,
            Some(5)
        );
        let e = DecisionValue::parse("k", 3, br#"{"decision":"approve","time":"t"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "k (revision 3): an approval needs expires_ms"
        );
        let e = DecisionValue::parse("k", 4, br#"{"decision":"allow","time":"t"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown decision 'allow'"), "{e}");
        let e = DecisionValue::parse("/g/grants/a/b/1", 9, b"not json").unwrap_err();
        assert!(
            e.to_string().starts_with("/g/grants/a/b/1 (revision 9): "),
            "{e}"
        );
    }
}
