//! A connection the kernel refused, in the few words `geowall exec` tells
//! the job: the destination, its region, the policy, why.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::audit::FlowRecord;

/// A refused outbound connection (or datagram) of a governed task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// The address judged (an IPv4-mapped destination as IPv4).
    pub dst: IpAddr,
    pub port: u16,
    /// `tcp`, `udp`, … as the flow record names it.
    pub proto: String,
    /// The destination's region tags (none: untagged).
    pub tags: Vec<String>,
    /// The flow record's `reason`: `region`, `rule`, `untagged`, `local`,
    /// `unresolved`, `source_route`, `no_table`, …
    pub reason: String,
    pub policy: String,
    /// The name the job resolved the address from through the agent (the
    /// most recent), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The task's cgroup, as the flow record names it, and its id.
    pub cgroup: String,
    pub cgroup_id: u64,
    /// The flow record's sequence number in the audit log (0: it could not
    /// be written).
    pub record: u64,
    /// A source route refused at `setsockopt`: the option (`IPV6_RTHDR`,
    /// `IP_OPTIONS`); `dst` is then the hop refused (unspecified: the
    /// option as a whole), `port` 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option: Option<String>,
}

impl Refused {
    /// The refusal a flow record tells, if it tells one: an outbound flow
    /// the kernel denied (not a would-deny of audit mode, not a socket
    /// refused at creation, which has no destination yet, not an inbound
    /// connection, whose peer the job did not choose).
    pub fn of(record: &FlowRecord<'_>) -> Option<Refused> {
        if record.verdict != "deny" || record.direction.is_some() {
            return None;
        }
        Some(Refused {
            dst: record.dst?,
            port: record.dport?,
            proto: record.proto.clone().into_owned(),
            tags: record.tags.iter().map(|t| t.clone().into_owned()).collect(),
            reason: record.reason.to_owned(),
            policy: record.policy.clone().into_owned(),
            name: record.names.as_ref().and_then(|n| n.first().cloned()),
            cgroup: record.cgroup.clone().into_owned(),
            cgroup_id: record.cgroup_id,
            record: record.seq,
            option: (record.hook == "setsockopt").then(|| {
                if record.dst.is_some_and(|a| a.is_ipv6()) {
                    "IPV6_RTHDR".to_owned()
                } else {
                    "IP_OPTIONS".to_owned()
                }
            }),
        })
    }
}
