//! `geowall fleet status`: every host that joined, and what sets one apart
//! from the fleet: a lease that lapsed, a policy whose hash differs from
//! the fleet's, map data that differs from the majority's.

use std::collections::BTreeMap;

use serde::Serialize;

use super::values::{Member, NodeStatus};

/// One host as `fleet status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRow {
    pub node: String,
    /// Its status key is there: its lease is alive.
    pub alive: bool,
    /// When it last joined (from its member key).
    pub joined: Option<String>,
    pub status: Option<NodeStatus>,
    /// What sets it apart (empty: nothing).
    pub flags: Vec<String>,
}

/// The map data of a host: its sources' hashes, sorted (where a host
/// keeps a file is its own business).
fn map_print(s: &NodeStatus) -> Vec<String> {
    let mut v: Vec<String> = s.sources.iter().map(|x| x.sha256.clone()).collect();
    v.sort();
    v
}

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

/// The rows of `fleet status`: every member and every live host, flagged
/// against `policies` (the fleet's, name → SHA-256 of the value).
pub fn rows(
    members: &[Member],
    nodes: &[NodeStatus],
    policies: &BTreeMap<String, String>,
) -> Vec<NodeRow> {
    let mut out: BTreeMap<String, NodeRow> = BTreeMap::new();
    for m in members {
        out.insert(
            m.node.clone(),
            NodeRow {
                node: m.node.clone(),
                alive: false,
                joined: Some(m.joined.clone()),
                status: None,
                flags: Vec::new(),
            },
        );
    }
    for n in nodes {
        let row = out.entry(n.node.clone()).or_insert_with(|| NodeRow {
            node: n.node.clone(),
            alive: false,
            joined: None,
            status: None,
            flags: Vec::new(),
        });
        row.alive = true;
        row.status = Some(n.clone());
    }
    // The majority's map data, among live hosts (none when no print has
    // more than half of them).
    let mut prints: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for n in nodes {
        *prints.entry(map_print(n)).or_default() += 1;
    }
    let majority = prints
        .iter()
        .find(|(_, c)| **c * 2 > nodes.len())
        .map(|(p, _)| p.clone());
    for row in out.values_mut() {
        let Some(s) = &row.status else {
            row.flags
                .push("lease lapsed: the host has not renewed its status".into());
            continue;
        };
        for (name, sha) in policies {
            match s
                .policies
                .iter()
                .find(|p| &p.name == name && p.origin == "fleet")
            {
                None => row
                    .flags
                    .push(format!("fleet policy '{name}' is not in force here")),
                Some(p) if &p.sha256 != sha => row.flags.push(format!(
                    "fleet policy '{name}' differs: {} here, {} in the fleet",
                    short(&p.sha256),
                    short(sha)
                )),
                Some(_) => {}
            }
        }
        for p in &s.policies {
            if p.origin == "fleet" && !policies.contains_key(&p.name) {
                row.flags.push(format!(
                    "fleet policy '{}' is in force here but no longer in the fleet",
                    p.name
                ));
            }
        }
        match &majority {
            Some(m) if *m != map_print(s) => row
                .flags
                .push("map data differs from the majority of hosts".into()),
            None if prints.len() > 1 => row
                .flags
                .push("map data: no majority among the hosts".into()),
            _ => {}
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::values::{NodePolicy, NodeSource};

    fn node(name: &str, policy_sha: &str, map_sha: &str) -> NodeStatus {
        NodeStatus {
            node: name.into(),
            version: "0.1.0".into(),
            programs: "0.1.0".into(),
            enforcing: true,
            time: "t".into(),
            epoch: 1,
            policies: vec![NodePolicy {
                name: "eu".into(),
                origin: "fleet".into(),
                sha256: policy_sha.into(),
                revision: Some(3),
            }],
            sources: vec![NodeSource {
                source: "cidr:/m".into(),
                sha256: map_sha.into(),
            }],
            counters: Default::default(),
            lost_events: 0,
            audit_seq: 1,
            audit_head: "h".into(),
            fleet_revision: 3,
            last_error: None,
        }
    }

    #[test]
    fn hosts_that_differ_are_flagged() {
        let policies = BTreeMap::from([("eu".to_string(), "aaa".to_string())]);
        let members = vec![
            Member {
                node: "a".into(),
                joined: "t".into(),
            },
            Member {
                node: "gone".into(),
                joined: "t".into(),
            },
        ];
        let nodes = vec![
            node("a", "aaa", "m1"),
            node("b", "aaa", "m1"),
            node("c", "bbb", "m2"),
        ];
        let rows = rows(&members, &nodes, &policies);
        let flags: BTreeMap<&str, &Vec<String>> =
            rows.iter().map(|r| (r.node.as_str(), &r.flags)).collect();
        assert!(flags["a"].is_empty(), "{:?}", flags["a"]);
        assert!(flags["b"].is_empty());
        assert_eq!(flags["c"].len(), 2, "{:?}", flags["c"]);
        assert!(flags["c"][0].contains("fleet policy 'eu' differs"));
        assert!(flags["c"][1].contains("map data differs"));
        assert!(flags["gone"][0].contains("lease lapsed"));
        assert!(!rows.iter().find(|r| r.node == "gone").unwrap().alive);
    }
}
