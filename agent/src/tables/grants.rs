//! Grants as the kernel holds them: the grant tries' entries, (scope,
//! prefix) → the grants that cover it, and the region grant map's,
//! (generation, scope, region id) → the grants to that region. Computed
//! from the approvals; the kernel checks expiry itself.

use std::collections::{BTreeMap, BTreeSet};

use geowall_common::{Grant, GrantSet, MAX_GRANTS_PER_PREFIX, RegionGrantKey};

use crate::{
    approvals::{Approval, Destination},
    regions::Prefix,
};

/// One entry's key: the scope (a cgroup id, or
/// [`geowall_common::GRANT_SCOPE_POLICY`] | slot) and the destination.
pub type EntryKey = (u64, Prefix);

/// Region grants by (scope, region tag), independent of the tables.
pub type RegionGrantSets = BTreeMap<(u64, String), GrantSet>;

/// The region grant map's entries for table generation `generation`, whose
/// region ids are `ids` (tag → id). A tag the tables do not know has no
/// entry: no destination carries it.
pub fn region_entries(
    sets: &RegionGrantSets,
    ids: &BTreeMap<&str, u16>,
    generation: u8,
) -> BTreeMap<RegionGrantKey, GrantSet> {
    sets.iter()
        .filter_map(|((scope, tag), set)| {
            let id = *ids.get(tag.as_str())?;
            Some((RegionGrantKey::new(*scope, id, generation), *set))
        })
        .collect()
}

/// The grant trie entries for `grants` (those to a prefix, and the
/// addresses resolved from a name grant's name): one per (scope, prefix)
/// granted, holding every grant of that scope whose prefix contains it
/// (the trie returns only the most specific entry, so a wider grant is
/// repeated in the narrower entries).
pub fn entries<'a>(
    grants: impl Iterator<Item = &'a Approval>,
    now_ms: u64,
    now_boot_ns: u64,
) -> BTreeMap<EntryKey, GrantSet> {
    let grants: Vec<(&Approval, Prefix)> = grants
        .flat_map(|g| g.prefixes().into_iter().map(move |p| (g, p)))
        .collect();
    let keys: BTreeSet<EntryKey> = grants.iter().map(|(g, p)| (g.scope(), *p)).collect();
    let mut out = BTreeMap::new();
    for (scope, prefix) in keys {
        let covering = grants
            .iter()
            .filter(|(g, p)| g.scope() == scope && p.contains(&prefix))
            .map(|(g, p)| kernel_grant(g, p.len(), now_ms, now_boot_ns));
        out.insert((scope, prefix), grant_set(covering));
    }
    out
}

/// The region grants of `grants` (those to a region), by (scope, region
/// tag): every grant of the scope that names the tag. Scopes are given by
/// the caller (a policy-wide grant is scoped to its policy's slot in the
/// tables being written). Which region id a tag has is the tables' business:
/// see [`region_entries`].
pub fn region_sets<'a>(
    grants: impl Iterator<Item = (&'a Approval, u64)>,
    now_ms: u64,
    now_boot_ns: u64,
) -> RegionGrantSets {
    let mut by_key: BTreeMap<(u64, String), Vec<Grant>> = BTreeMap::new();
    for (g, scope) in grants {
        if g.to.prefix().is_some() {
            continue;
        }
        for tag in &g.regions {
            by_key
                .entry((scope, tag.clone()))
                .or_default()
                .push(kernel_grant(g, 0, now_ms, now_boot_ns));
        }
    }
    by_key
        .into_iter()
        .map(|(key, grants)| (key, grant_set(grants.into_iter())))
        .collect()
}

/// Grant `g` as the kernel checks it; `plen` is what flow records name
/// (0 for a region grant: the region trie's entry is named instead).
fn kernel_grant(g: &Approval, plen: u8, now_ms: u64, now_boot_ns: u64) -> Grant {
    let left_ns = g
        .expires_ms
        .saturating_sub(now_ms)
        .saturating_mul(1_000_000);
    let mut k = Grant {
        id: g.id,
        port: g.port,
        plen,
        ..Grant::default()
    };
    k.set_expires_ns(now_boot_ns.saturating_add(left_ns));
    k
}

/// The first [`MAX_GRANTS_PER_PREFIX`] of `grants` (`fits` keeps there
/// being no more).
fn grant_set(grants: impl Iterator<Item = Grant>) -> GrantSet {
    let mut set = GrantSet::default();
    for (slot, g) in set.grants.iter_mut().zip(grants) {
        *slot = g;
    }
    set
}

/// Whether a new grant `candidate` fits: no (scope, prefix) entry and no
/// (scope, region) entry may need more than [`MAX_GRANTS_PER_PREFIX`]
/// grants.
pub fn fits<'a>(live: impl Iterator<Item = &'a Approval>, candidate: &Approval) -> bool {
    let mut all: Vec<&Approval> = live.filter(|g| g.scope() == candidate.scope()).collect();
    all.push(candidate);
    let prefixes: Vec<Prefix> = all.iter().flat_map(|g| g.prefixes()).collect();
    let prefixes_fit = prefixes.iter().all(|entry| {
        prefixes.iter().filter(|p| p.contains(entry)).count() <= MAX_GRANTS_PER_PREFIX
    });
    let regions_fit = candidate.regions.iter().all(|tag| {
        all.iter()
            .filter(|g| matches!(g.to, Destination::Region(_)) && g.regions.contains(tag))
            .count()
            <= MAX_GRANTS_PER_PREFIX
    });
    prefixes_fit && regions_fit
}

#[cfg(test)]
mod tests {
    use geowall_common::GRANT_SCOPE_POLICY;

    use super::*;
    use crate::approvals::{Stage, fixtures::request};

    #[test]
    fn region_entries_follow_the_tables_ids() {
        let mut set = GrantSet::default();
        set.grants[0].id = 7;
        let sets: RegionGrantSets = [
            ((42, "DE".to_owned()), set),
            ((42, "FR".to_owned()), set),
            ((GRANT_SCOPE_POLICY | 3, "aws:eu-west-1".to_owned()), set),
        ]
        .into_iter()
        .collect();
        let ids: BTreeMap<&str, u16> = [("DE", 4), ("aws:eu-west-1", 9), ("US", 5)].into();
        let e = region_entries(&sets, &ids, 1);
        // FR is in no table: no entry.
        assert_eq!(
            e.keys().copied().collect::<Vec<_>>(),
            vec![
                RegionGrantKey::new(42, 4, 1),
                RegionGrantKey::new(GRANT_SCOPE_POLICY | 3, 9, 1),
            ]
        );
        assert_eq!(e[&RegionGrantKey::new(42, 4, 1)].grants[0].id, 7);
        // Another generation numbers the regions its own way.
        let renumbered: BTreeMap<&str, u16> = [("DE", 11), ("FR", 12)].into();
        let e = region_entries(&sets, &renumbered, 0);
        assert_eq!(
            e.keys().copied().collect::<Vec<_>>(),
            vec![
                RegionGrantKey::new(42, 11, 0),
                RegionGrantKey::new(42, 12, 0)
            ]
        );
    }

    #[test]
    fn wider_grants_are_repeated_in_narrower_entries() {
        let mut wide = request(1, "127.20.0.0/16", 1000);
        wide.state = Stage::Approved;
        let mut narrow = request(2, "127.20.0.1", 1000);
        narrow.state = Stage::Approved;
        narrow.port = 443;
        let mut other = request(3, "127.20.0.1", 1000);
        other.state = Stage::Approved;
        other.cgroup_id = Some(77);
        let all = [wide.clone(), narrow.clone(), other.clone()];
        let e = entries(all.iter(), 1_000, 5_000_000_000);
        assert_eq!(e.len(), 3);
        let policy_scope = GRANT_SCOPE_POLICY | 2;
        let key = |a: &Approval| *a.to.prefix().unwrap();
        let host = &e[&(policy_scope, key(&narrow))];
        let ids: Vec<u32> = host.grants.iter().map(|g| g.id).collect();
        assert_eq!(ids, vec![1, 2, 0, 0]);
        assert_eq!(host.grants[1].port, 443);
        assert_eq!(host.grants[1].plen, 32);
        // 9 s left at 1 s: expires 9 s after the boot-clock now.
        assert_eq!(host.grants[0].expires_ns(), 5_000_000_000 + 9_000_000_000);
        assert_eq!(e[&(policy_scope, key(&wide))].grants[0].id, 1);
        assert_eq!(e[&(77, key(&other))].grants[0].id, 3);
        assert_eq!(e[&(77, key(&other))].grants[1].id, 0);
        // A fifth grant covering the same host does not fit.
        let mut more: Vec<Approval> = (10..13)
            .map(|i| {
                let mut g = request(i, "127.20.0.0/24", 1);
                g.state = Stage::Approved;
                g
            })
            .collect();
        more.push(narrow.clone());
        assert!(!fits(more.iter(), &wide));
        more.pop();
        assert!(fits(more.iter(), &wide));
    }

    #[test]
    fn region_grants_are_derived_per_scope_and_tag() {
        let approved = |id: u32, to: &str, port: u16| {
            let mut g = request(id, to, 1000);
            g.state = Stage::Approved;
            g.port = port;
            g
        };
        let de = approved(1, "DE", 443);
        let nordics = approved(2, "nordics", 0);
        let mut job = approved(3, "SE", 0);
        job.cgroup_id = Some(77);
        let prefix = approved(4, "127.20.0.0/16", 0);
        let policy = GRANT_SCOPE_POLICY | 2;
        let grants = [
            (&de, policy),
            (&nordics, policy),
            (&job, 77),
            (&prefix, policy),
        ];
        let sets = region_sets(grants.into_iter(), 1_000, 5_000_000_000);
        let keys: Vec<(u64, &str)> = sets.keys().map(|(s, t)| (*s, t.as_str())).collect();
        assert_eq!(
            keys,
            [
                (77, "SE"),
                (policy, "DE"),
                (policy, "DK"),
                (policy, "SE"),
                (policy, "aws:eu-north-1"),
            ]
        );
        let de_set = &sets[&(policy, "DE".to_owned())];
        assert_eq!(de_set.grants[0].id, 1);
        assert_eq!(de_set.grants[0].port, 443);
        assert_eq!(de_set.grants[0].plen, 0);
        assert_eq!(de_set.grants[0].expires_ns(), 5_000_000_000 + 9_000_000_000);
        assert_eq!(de_set.grants[1].id, 0);
        assert_eq!(sets[&(77, "SE".to_owned())].grants[0].id, 3);
        // Prefix grants stay in the tries.
        let e = entries([&de, &prefix].into_iter(), 1_000, 5_000_000_000);
        assert_eq!(e.len(), 1);
        // At most four grants of a scope name one region.
        let live: Vec<Approval> = (10..14).map(|i| approved(i, "EU", 0)).collect();
        assert!(!fits(live.iter(), &approved(20, "DE", 0)));
        assert!(fits(live.iter(), &approved(20, "US", 0)));
        assert!(fits(live.iter().take(3), &approved(20, "DE", 0)));
        // A prefix grant does not count against a region.
        assert!(fits(live.iter().take(3).chain([&prefix]), &de));
    }
}
