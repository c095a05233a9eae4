//! `geowall policy explain`: the verdict the kernel gives a destination
//! under a policy, and why.
//!
//! The answer comes from the tables the kernel decides with: the running
//! agent reads its own kernel maps (the active half: policy entry, rule and
//! region tries, tag sets); without an agent, the tables the agent would
//! install are built from the config and read the same way. Either way the
//! entries are judged by the same functions the kernel programs use
//! ([`RuleSet::decide`], [`PolicyEntry::region_decision`] in
//! `geowall-common`), in the programs' order.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, Ipv6Addr},
};

use geowall_common::{Decision, PolicyEntry, RegionValue, RuleSet, policy_flags, reason, verdict};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{
    policy::NamesPolicy,
    regions::{CompiledMap, Prefix, embedded, query::canonical},
    tables::{
        Layout,
        codes::{reason_name, verdict_name},
    },
};

/// A destination to explain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub addr: IpAddr,
    pub port: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    /// The names a job would have resolved the address from (the question
    /// first, then the CNAME chain); empty: an address the job did not
    /// resolve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// The kernel's verdict for one destination under one policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// `allow`, `deny` or `would_deny` (audit mode).
    pub verdict: String,
    /// `region`, `rule`, `untagged`, `local`.
    pub reason: String,
    /// Region tags of the destination (empty for a rule verdict that did
    /// not need them, or an untagged destination).
    pub tags: Vec<String>,
    /// What decided: the map's range around the destination (the largest
    /// CIDR inside one range of equal tags), or the rule's CIDR.
    pub prefix: Option<String>,
    /// The kernel trie entry that matched (the tries hold the fewest nested
    /// entries that answer like the map, so it may be much wider).
    pub entry: Option<String>,
    /// The rule that decided, as written (canonical form).
    pub rule: Option<String>,
    /// In words.
    pub why: String,
    pub policy: String,
    pub dst: String,
    pub port: u16,
    pub proto: String,
    /// Which map sources tag the destination, and with what.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<crate::regions::query::SourceAnswer>,
    /// `kernel` (the running agent's tables) or `compiled` (built from the
    /// config here).
    pub tables: String,
    /// The names the address was resolved from, as asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// The IPv4 address inside an IPv6 destination (NAT64, 6to4,
    /// IPv4-compatible), judged too; `tags` and `prefix` are its own when
    /// its verdict is the stricter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner: Option<String>,
}

/// Read access to one generation of the switched tables.
pub trait TableView {
    /// What reading the tables can fail with.
    type Error: std::error::Error + 'static;
    fn policy(&self, slot: u32) -> Result<Option<PolicyEntry>, Self::Error>;
    /// The rule trie's entry for `addr` (longest match) in policy `slot`.
    fn rules(&self, slot: u32, addr: &[u8; 16], v4: bool) -> Result<Option<RuleSet>, Self::Error>;
    /// The region trie's entry for `addr` (longest match).
    fn region(&self, addr: &[u8; 16], v4: bool) -> Result<Option<RegionValue>, Self::Error>;
    /// The names of tag set `tagset`.
    fn tags(&self, tagset: u16) -> Result<Vec<String>, Self::Error>;
}

/// Why a destination cannot be explained.
#[derive(Debug, Error)]
pub enum ExplainError<E: std::error::Error + 'static> {
    #[error("policy '{0}' has no entry in the tables in force: the kernel fails closed for it")]
    NoEntry(String),
    /// The tables could not be read.
    #[error(transparent)]
    Tables(E),
}

/// How a policy's rules read, for naming the rule that decided.
pub struct PolicyText<'a> {
    pub name: &'a str,
    pub rules: &'a [crate::policy::CompiledRule],
    pub allowed: &'a std::collections::BTreeSet<String>,
    pub denied: &'a std::collections::BTreeSet<String>,
    /// `allow_names`, `deny_names`, `resolved_only`.
    pub names: &'a NamesPolicy,
    /// The agent's NAT64 prefixes (`[agent] nat64`).
    pub nat64: &'a [(Ipv6Addr, u8)],
}

/// How a policy's names change a decision, as the programs apply them
/// (after the region, never over a rule or a local destination).
enum ByName {
    /// The decision stands.
    Stands,
    /// `deny_names` matches the chain: the query is answered NXDOMAIN.
    Denied(String),
    /// `allow_names` matches the chain (while the answer is live).
    Allowed(String),
    /// `resolved_only`, and no name: refused.
    Unresolved,
}

fn by_name(d: &Decision, names: &[String], policy: &NamesPolicy) -> ByName {
    if d.reason == reason::RULE || d.reason == reason::LOCAL {
        return ByName::Stands;
    }
    if let Some(n) = names.iter().find(|n| policy.denies(n)) {
        return ByName::Denied(n.clone());
    }
    if names.is_empty() {
        return if policy.resolved_only {
            ByName::Unresolved
        } else {
            ByName::Stands
        };
    }
    match names.iter().find(|n| policy.allows(n)) {
        Some(n) if !d.allowed => ByName::Allowed(n.clone()),
        _ => ByName::Stands,
    }
}

/// Judges `target` under policy `slot` as the kernel programs do.
pub fn explain<V: TableView + ?Sized>(
    view: &V,
    map: &CompiledMap,
    slot: u32,
    policy: &PolicyText<'_>,
    target: &Target,
    tables: &str,
) -> Result<Explanation, ExplainError<V::Error>> {
    let entry = view
        .policy(slot)
        .map_err(ExplainError::Tables)?
        .ok_or_else(|| ExplainError::NoEntry(policy.name.to_owned()))?;
    let addr = canonical(target.addr);
    let (bytes, v4) = match addr {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (b, true)
        }
        IpAddr::V6(a) => (a.octets(), false),
    };
    // The programs' order: rules (when the policy has any), then region.
    let mut rule_index = None;
    let mut decision: Option<Decision> = None;
    if entry.flags & policy_flags::HAS_RULES != 0
        && let Some(set) = view.rules(slot, &bytes, v4).map_err(ExplainError::Tables)?
    {
        decision = set.decide(target.proto, target.port);
        rule_index = set
            .first_match(target.proto, target.port)
            .map(|r| r.index as usize);
    }
    let mut region = view.region(&bytes, v4).map_err(ExplainError::Tables)?;
    // An IPv6 address carrying an IPv4 one: the inner address's region is
    // judged too, and the stricter verdict stands.
    let inner = match addr {
        IpAddr::V6(a) => embedded::v4_of(&a, policy.nat64),
        IpAddr::V4(_) => None,
    };
    let mut inner_decided = false;
    if decision.is_none()
        && let Some(v4addr) = inner
        && entry.region_decision(region).allowed
    {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&v4addr.octets());
        let inner_region = view.region(&b, true).map_err(ExplainError::Tables)?;
        if !entry.region_decision(inner_region).allowed {
            region = inner_region;
            inner_decided = true;
        }
    }
    let mut decision = decision.unwrap_or_else(|| entry.region_decision(region));
    let by = by_name(&decision, &target.names, policy.names);
    match &by {
        ByName::Allowed(_) => {
            decision.allowed = true;
            decision.reason = reason::NAME;
        }
        ByName::Unresolved | ByName::Denied(_) => {
            decision.allowed = false;
            decision.reason = reason::UNRESOLVED;
        }
        ByName::Stands => {}
    }
    let tagset = match region {
        Some(v) => v.tagset,
        None => geowall_common::TAGSET_UNTAGGED,
    };
    let tags = view.tags(tagset).map_err(ExplainError::Tables)?;
    let code = match (decision.allowed, entry.flags & policy_flags::AUDIT != 0) {
        (true, _) => verdict::ALLOW,
        (false, true) => verdict::WOULD_DENY,
        (false, false) => verdict::DENY,
    };
    let entry = (decision.plen > 0 || decision.reason != reason::UNTAGGED)
        .then(|| match addr {
            IpAddr::V4(a) => Prefix::v4(a, decision.plen),
            IpAddr::V6(a) => Prefix::v6(a, decision.plen),
        })
        .map(|p| p.to_string());
    let judged = match inner {
        Some(v4addr) if inner_decided => IpAddr::V4(v4addr),
        _ => addr,
    };
    let prefix = if decision.reason == reason::RULE {
        entry.clone()
    } else {
        let (label, range) = map.lookup(judged);
        (label != 0).then(|| range.to_string())
    };
    let rule = rule_index
        .filter(|_| decision.reason == reason::RULE)
        .and_then(|i| policy.rules.get(i))
        .map(|r| r.text.clone());
    let mut why = match &by {
        ByName::Allowed(n) => format!(
            "'{n}' is in allow_names: allowed while the job's answer for it is live (by region: {})",
            region_why(false, &tags, policy)
        ),
        ByName::Denied(n) => format!(
            "'{n}' is in deny_names: a job's query for it is answered NXDOMAIN and the address never reaches it"
        ),
        ByName::Unresolved => {
            "resolved_only: an address the job did not resolve through the agent is refused"
                .to_owned()
        }
        ByName::Stands => why(&decision, &tags, rule.as_deref(), policy),
    };
    if inner_decided && let Some(v4addr) = inner {
        why = format!("the IPv4 address inside it, {v4addr}: {why}");
    }
    let reason = match by {
        ByName::Denied(_) => "deny_names",
        _ => reason_name(decision.reason),
    };
    Ok(Explanation {
        verdict: verdict_name(code).to_owned(),
        reason: reason.to_owned(),
        tags,
        prefix,
        entry,
        rule,
        why,
        policy: policy.name.to_owned(),
        dst: addr.to_string(),
        port: target.port,
        proto: proto_name(target.proto),
        sources: Vec::new(),
        tables: tables.to_owned(),
        names: target.names.clone(),
        inner: inner.map(|a| a.to_string()),
    })
}

fn proto_name(proto: u8) -> String {
    match proto {
        6 => "tcp".into(),
        17 => "udp".into(),
        n => n.to_string(),
    }
}

fn why(d: &Decision, tags: &[String], rule: Option<&str>, policy: &PolicyText<'_>) -> String {
    let verb = if d.allowed { "allows" } else { "denies" };
    match d.reason {
        reason::RULE => format!("rule '{}' {verb} it", rule.unwrap_or("?")),
        reason::LOCAL => format!("a local destination: the policy's `local` setting {verb} it"),
        reason::UNTAGGED => {
            format!("no map source tags it: the policy's `untagged` setting {verb} it")
        }
        _ => region_why(d.allowed, tags, policy),
    }
}

/// What the regions say: `DE is in the allow-set`, `US is not in the
/// allow-set`.
fn region_why(allowed: bool, tags: &[String], policy: &PolicyText<'_>) -> String {
    let carved: Vec<&str> = tags
        .iter()
        .filter(|t| policy.denied.contains(*t))
        .map(String::as_str)
        .collect();
    let in_set: Vec<&str> = tags
        .iter()
        .filter(|t| policy.allowed.contains(*t))
        .map(String::as_str)
        .collect();
    if tags.is_empty() {
        "untagged".to_owned()
    } else if allowed {
        format!("{} is in the allow-set", in_set.join(", "))
    } else if !carved.is_empty() {
        format!("{} is carved out by `deny`", carved.join(", "))
    } else {
        format!("{} is not in the allow-set", tags.join(", "))
    }
}

/// The tables a layout would install, read like the kernel's.
pub struct CompiledView<'a> {
    layout: &'a Layout,
    /// Every tag set's names in full.
    tagsets: &'a [Vec<String>],
    region4: Lpm<RegionValue>,
    region6: Lpm<RegionValue>,
    rules4: Lpm<RuleSet>,
    rules6: Lpm<RuleSet>,
}

impl<'a> CompiledView<'a> {
    pub fn new(layout: &'a Layout, tagsets: &'a [Vec<String>]) -> Self {
        let t = &layout.tables;
        Self {
            layout,
            tagsets,
            region4: Lpm::new(t.region4.iter().map(|(k, b, v)| (k.to_vec(), *b, *v))),
            region6: Lpm::new(t.region6.iter().map(|(k, b, v)| (k.to_vec(), *b, *v))),
            rules4: Lpm::new(t.rules4.iter().map(|(k, b, v)| (k.to_vec(), *b, *v))),
            rules6: Lpm::new(t.rules6.iter().map(|(k, b, v)| (k.to_vec(), *b, *v))),
        }
    }
}

impl TableView for CompiledView<'_> {
    /// Tables in memory are read without fail.
    type Error = Infallible;

    fn policy(&self, slot: u32) -> Result<Option<PolicyEntry>, Infallible> {
        Ok(self.layout.tables.policies.get(&slot).copied())
    }

    fn rules(&self, slot: u32, addr: &[u8; 16], v4: bool) -> Result<Option<RuleSet>, Infallible> {
        let mut key = slot.to_be_bytes().to_vec();
        if v4 {
            key.extend_from_slice(&addr[..4]);
            Ok(self.rules4.lookup(&key))
        } else {
            key.extend_from_slice(addr);
            Ok(self.rules6.lookup(&key))
        }
    }

    fn region(&self, addr: &[u8; 16], v4: bool) -> Result<Option<RegionValue>, Infallible> {
        Ok(if v4 {
            self.region4.lookup(&addr[..4])
        } else {
            self.region6.lookup(addr)
        })
    }

    fn tags(&self, tagset: u16) -> Result<Vec<String>, Infallible> {
        Ok(self
            .tagsets
            .get(tagset as usize)
            .cloned()
            .unwrap_or_default())
    }
}

/// Longest-prefix match over (key bytes, prefix length in bits) entries,
/// as an LPM trie answers.
struct Lpm<V> {
    by_len: HashMap<(u32, Vec<u8>), V>,
    lens: Vec<u32>,
}

impl<V: Copy> Lpm<V> {
    fn new(entries: impl Iterator<Item = (Vec<u8>, u32, V)>) -> Self {
        let mut by_len = HashMap::new();
        let mut lens = Vec::new();
        for (key, bits, value) in entries {
            by_len.insert((bits, mask(&key, bits)), value);
            lens.push(bits);
        }
        lens.sort_unstable_by(|a, b| b.cmp(a));
        lens.dedup();
        Self { by_len, lens }
    }

    fn lookup(&self, key: &[u8]) -> Option<V> {
        let max = key.len() as u32 * 8;
        self.lens
            .iter()
            .filter(|l| **l <= max)
            .find_map(|bits| self.by_len.get(&(*bits, mask(key, *bits))).copied())
    }
}

/// `key` with every bit past `bits` cleared.
fn mask(key: &[u8], bits: u32) -> Vec<u8> {
    key.iter()
        .enumerate()
        .map(|(i, b)| {
            let start = i as u32 * 8;
            if bits >= start + 8 {
                *b
            } else if bits <= start {
                0
            } else {
                b & (0xffu8 << (8 - (bits - start)))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let lpm = Lpm::new(
            [
                (vec![10, 0, 0, 0], 8, 1u8),
                (vec![10, 1, 0, 0], 16, 2),
                (vec![0, 0, 0, 0], 0, 3),
            ]
            .into_iter(),
        );
        assert_eq!(lpm.lookup(&[10, 1, 2, 3]), Some(2));
        assert_eq!(lpm.lookup(&[10, 2, 2, 3]), Some(1));
        assert_eq!(lpm.lookup(&[11, 0, 0, 1]), Some(3));
        assert_eq!(mask(&[0xff, 0xff], 12), vec![0xff, 0xf0]);
    }
}
