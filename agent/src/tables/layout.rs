//! From a plan to the kernel's tables: numbers regions and policy slots
//! (stable across reloads and agent restarts: the names live in pinned maps)
//! and encodes every table in the layout of `geowall-common`.

use std::collections::{BTreeMap, HashMap};

use geowall_common::{
    MAX_POLICIES, MAX_REGIONS, MAX_RULES_PER_PREFIX, MAX_TAGS, MAX_TAGSETS, PolicyEntry,
    REGION_LOCAL, RegionValue, Rule, RuleKey4, RuleKey6, RuleSet, TagSet, action, policy_flags,
    tag_flags,
};
use thiserror::Error;

use crate::{
    config::{Action, Inbound, LogAllowed, Mode},
    plan::Plan,
    policy::CompiledPolicy,
    regions::{Family, LOCAL, Prefix, ortc::minimize},
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("the maps use {0} distinct region tags; at most {MAX_REGIONS} fit")]
    TooManyRegions(usize),
    #[error("the maps produce {0} distinct tag combinations; at most {MAX_TAGSETS} fit")]
    TooManyTagSets(usize),
    #[error("no free policy slot for '{0}' (at most {MAX_POLICIES} policies)")]
    NoSlot(String),
    #[error(
        "policy '{policy}': {count} rules apply to {prefix}; at most {MAX_RULES_PER_PREFIX} can"
    )]
    TooManyRules {
        policy: String,
        prefix: Prefix,
        count: usize,
    },
}

/// Everything one table switch writes.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    pub region4: Vec<([u8; 4], u32, RegionValue)>,
    pub region6: Vec<([u8; 16], u32, RegionValue)>,
    pub rules4: Vec<(RuleKey4, u32, RuleSet)>,
    pub rules6: Vec<(RuleKey6, u32, RuleSet)>,
    /// Index = tag set id.
    pub tagsets: Vec<TagSet>,
    /// Present policies: slot → entry.
    pub policies: BTreeMap<u32, PolicyEntry>,
}

/// Tables plus the names to record for the ids they use.
#[derive(Debug, Clone)]
pub struct Layout {
    pub tables: Tables,
    /// Region id → name, every region the tables use.
    pub regions: BTreeMap<u16, String>,
    /// Policy name → slot, every policy of the plan.
    pub slots: BTreeMap<String, u32>,
}

/// Lays out `plan`, keeping the ids already recorded: `regions[id]` and
/// `slots[slot]` are the names the pinned maps hold (None = free).
pub fn layout(
    plan: &Plan,
    regions: &[Option<String>],
    slots: &[Option<String>],
) -> Result<Layout, LayoutError> {
    let region_ids = region_ids(plan, regions)?;
    let slot_of = policy_slots(plan, slots)?;
    let map = &plan.map;
    if map.tagsets.len() > MAX_TAGSETS as usize {
        return Err(LayoutError::TooManyTagSets(map.tagsets.len()));
    }
    let tagsets: Vec<TagSet> = map
        .tagsets
        .iter()
        .map(|tags| {
            let mut t = TagSet::default();
            for (slot, name) in t.regions.iter_mut().zip(tags.iter().take(MAX_TAGS)) {
                *slot = region_ids[name];
            }
            t.count = tags.len().min(MAX_TAGS) as u8;
            if tags.len() == 1 && tags[0] == LOCAL {
                t.flags = tag_flags::LOCAL;
            }
            t
        })
        .collect();

    let value = |p: &Prefix, tagset: u16| RegionValue {
        tagset,
        plen: p.len(),
        flags: if map.is_local(tagset) {
            tag_flags::LOCAL
        } else {
            0
        },
    };
    // The tries hold the fewest entries that answer like the map; the two
    // families are minimized in parallel.
    let (min4, min6) = std::thread::scope(|scope| {
        let v4 = scope.spawn(|| minimize(Family::V4, &map.v4));
        let v6 = minimize(Family::V6, &map.v6);
        (v4.join().expect("IPv4 minimize thread"), v6)
    });
    let mut tables = Tables {
        region4: min4
            .iter()
            .map(|(p, t)| {
                let b = p.addr_bytes();
                ([b[0], b[1], b[2], b[3]], u32::from(p.len()), value(p, *t))
            })
            .collect(),
        region6: min6
            .iter()
            .map(|(p, t)| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&p.addr_bytes());
                (a, u32::from(p.len()), value(p, *t))
            })
            .collect(),
        tagsets,
        ..Tables::default()
    };

    for policy in &plan.policies {
        let slot = slot_of[&policy.name];
        tables
            .policies
            .insert(slot, policy_entry(policy, &map.tagsets, plan.dns));
        rules(policy, slot, &mut tables)?;
    }
    Ok(Layout {
        tables,
        regions: region_ids.into_iter().map(|(n, id)| (id, n)).collect(),
        slots: slot_of,
    })
}

fn region_ids(plan: &Plan, known: &[Option<String>]) -> Result<HashMap<String, u16>, LayoutError> {
    let mut ids: HashMap<String, u16> = known
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.as_ref().map(|n| (n.clone(), i as u16)))
        .collect();
    ids.insert(LOCAL.to_owned(), REGION_LOCAL);
    let mut used: Vec<bool> = (0..MAX_REGIONS as usize)
        .map(|i| known.get(i).is_some_and(Option::is_some))
        .collect();
    used[REGION_LOCAL as usize] = true;
    let mut next_free = 0usize;
    let mut out = HashMap::new();
    for tag in &plan.map.tags {
        let id = match ids.get(tag) {
            Some(&id) => id,
            None => {
                while next_free < used.len() && used[next_free] {
                    next_free += 1;
                }
                if next_free >= used.len() {
                    return Err(LayoutError::TooManyRegions(plan.map.tags.len()));
                }
                used[next_free] = true;
                ids.insert(tag.clone(), next_free as u16);
                next_free as u16
            }
        };
        out.insert(tag.clone(), id);
    }
    out.insert(LOCAL.to_owned(), REGION_LOCAL);
    Ok(out)
}

fn policy_slots(
    plan: &Plan,
    known: &[Option<String>],
) -> Result<BTreeMap<String, u32>, LayoutError> {
    let mut out = BTreeMap::new();
    // A slot named in the pins stays with its policy; a slot whose policy is
    // gone is not reused in the same switch (bindings may still point at it).
    let mut used: Vec<bool> = (0..MAX_POLICIES as usize)
        .map(|i| known.get(i).is_some_and(Option::is_some))
        .collect();
    for p in &plan.policies {
        if let Some(slot) = known.iter().position(|n| n.as_deref() == Some(&p.name)) {
            out.insert(p.name.clone(), slot as u32);
        }
    }
    for p in &plan.policies {
        if out.contains_key(&p.name) {
            continue;
        }
        let slot = used
            .iter()
            .position(|u| !u)
            .ok_or_else(|| LayoutError::NoSlot(p.name.clone()))?;
        used[slot] = true;
        out.insert(p.name.clone(), slot as u32);
    }
    Ok(out)
}

fn policy_entry(policy: &CompiledPolicy, tagsets: &[Vec<String>], dns: bool) -> PolicyEntry {
    let mut entry = PolicyEntry::empty();
    entry.flags = policy_flags::PRESENT;
    if policy.mode == Mode::Audit {
        entry.flags |= policy_flags::AUDIT;
    }
    // `first` needs every allowed event too: the agent keeps the first of
    // each window and counts the rest.
    if policy.log_allowed != LogAllowed::None {
        entry.flags |= policy_flags::LOG_ALLOWED;
    }
    if !policy.rules.is_empty() {
        entry.flags |= policy_flags::HAS_RULES;
    }
    if policy.raw_sockets == Action::Allow {
        entry.flags |= policy_flags::ALLOW_RAW_SOCKETS;
    }
    if policy.ping == Action::Allow {
        entry.flags |= policy_flags::ALLOW_PING;
    }
    // Names need the forwarder (the plan refuses them without it).
    if dns {
        entry.flags |= policy_flags::DNS;
        if !policy.names.allow.is_empty() {
            entry.flags |= policy_flags::ALLOW_NAMES;
        }
        if policy.names.resolved_only {
            entry.flags |= policy_flags::RESOLVED_ONLY;
        }
    }
    if policy.inbound == Inbound::Judge {
        entry.flags |= policy_flags::INBOUND;
    }
    for (id, tags) in tagsets.iter().enumerate() {
        if policy.allows(tags) {
            entry.set_allowed(id as u16);
        }
    }
    entry
}

/// One rule trie entry per distinct rule prefix of the policy, holding every
/// rule whose prefix contains it: most specific first, then in file order.
fn rules(policy: &CompiledPolicy, slot: u32, tables: &mut Tables) -> Result<(), LayoutError> {
    let mut prefixes: Vec<Prefix> = policy.rules.iter().map(|r| r.prefix).collect();
    prefixes.sort();
    prefixes.dedup();
    for p in prefixes {
        let applying = policy.rules_covering(&p);
        if applying.len() > MAX_RULES_PER_PREFIX {
            return Err(LayoutError::TooManyRules {
                policy: policy.name.clone(),
                prefix: p,
                count: applying.len(),
            });
        }
        let mut set = RuleSet {
            count: applying.len() as u8,
            ..RuleSet::default()
        };
        for (dst, r) in set.rules.iter_mut().zip(&applying) {
            let index = policy
                .rules
                .iter()
                .position(|x| std::ptr::eq(x, *r))
                .unwrap_or(usize::MAX)
                .min(255) as u8;
            *dst = Rule {
                port_lo: r.port_lo,
                port_hi: r.port_hi,
                proto: r.proto,
                action: match r.action {
                    Action::Allow => action::ALLOW,
                    Action::Deny => action::DENY,
                },
                plen: r.prefix.len(),
                index,
            };
        }
        let addr = p.addr_bytes();
        let bits = 32 + u32::from(p.len());
        match p.family() {
            Family::V4 => {
                let mut key: RuleKey4 = [0; 8];
                key[..4].copy_from_slice(&slot.to_be_bytes());
                key[4..].copy_from_slice(&addr);
                tables.rules4.push((key, bits, set));
            }
            Family::V6 => {
                let mut key: RuleKey6 = [0; 20];
                key[..4].copy_from_slice(&slot.to_be_bytes());
                key[4..].copy_from_slice(&addr);
                tables.rules6.push((key, bits, set));
            }
        }
    }
    Ok(())
}
