//! The table switch.
//!
//! The switched tables exist twice; `GW_CONFIG[EPOCH] & 1` names the half in
//! force. A switch:
//! 1. builds new region and rule tries, sized to their contents, and puts
//!    them in the idle half's slots of the outer arrays;
//! 2. writes the idle half of the policy and tag-set arrays, and the idle
//!    generation's region grants (region ids are the new tables');
//! 3. adds one to the epoch with a single 8-byte store: from the next
//!    program run on, the new half decides;
//! 4. waits until no program still runs on the old half (an update of a
//!    map-of-maps returns only after an RCU grace period), then frees the
//!    old tries and removes the old generation's region grants.
//!
//! A program reads the epoch once per verdict, so every verdict comes wholly
//! from the old tables or wholly from the new ones. A failure before step 3
//! leaves the tables in force untouched.

use std::{
    mem::size_of,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
};

use std::collections::BTreeMap;

use geowall_common::{
    GrantSet, MAX_POLICIES, MAX_TAGSETS, PolicyEntry, RegionGrantKey, RegionValue, RuleKey4,
    RuleKey6, RuleSet, TagSet, config as config_slot,
};

use super::{KernelError, config_map::ConfigMap, grants::GrantMaps, sys, sys_err};
use crate::tables::Tables;

/// The switched tables, opened from their pins: the outer arrays of the
/// tries (one slot per half) and the arrays of policies and tag sets (both
/// halves back to back).
pub(crate) struct TableMaps {
    policies: OwnedFd,
    tagsets: OwnedFd,
    region4: OwnedFd,
    region6: OwnedFd,
    rules4: OwnedFd,
    rules6: OwnedFd,
}

/// The tries of one half: region tries and rule tries, each family (None:
/// never written).
pub(crate) struct Tries {
    pub(crate) region4: Option<OwnedFd>,
    pub(crate) region6: Option<OwnedFd>,
    pub(crate) rules4: Option<OwnedFd>,
    pub(crate) rules6: Option<OwnedFd>,
}

impl TableMaps {
    /// The maps named in the order policies, tag sets, region tries (IPv4,
    /// IPv6), rule tries (IPv4, IPv6).
    pub(crate) fn new(maps: [OwnedFd; 6]) -> Self {
        let [policies, tagsets, region4, region6, rules4, rules6] = maps;
        Self {
            policies,
            tagsets,
            region4,
            region6,
            rules4,
            rules6,
        }
    }

    /// Policy slot `slot` of half `half` (an absent policy is all zero).
    pub(crate) fn policy(&self, half: u32, slot: u32) -> Result<PolicyEntry, KernelError> {
        let mut entry = PolicyEntry::empty();
        sys::map_lookup(
            self.policies.as_fd(),
            &(half * MAX_POLICIES + slot).to_ne_bytes(),
            sys::bytes_of_mut(&mut entry),
        )
        .map_err(sys_err(format!("reading policy slot {slot}")))?;
        Ok(entry)
    }

    /// Tag set `id` of half `half`.
    pub(crate) fn tag_set(&self, half: u32, id: u16) -> Result<TagSet, KernelError> {
        let mut set = TagSet::default();
        sys::map_lookup(
            self.tagsets.as_fd(),
            &(half * MAX_TAGSETS + u32::from(id)).to_ne_bytes(),
            sys::bytes_of_mut(&mut set),
        )
        .map_err(sys_err(format!("reading tag set {id}")))?;
        Ok(set)
    }

    /// The tries of half `half`.
    pub(crate) fn tries(&self, half: u32) -> Result<Tries, KernelError> {
        Ok(Tries {
            region4: Self::trie(&self.region4, half)?,
            region6: Self::trie(&self.region6, half)?,
            rules4: Self::trie(&self.rules4, half)?,
            rules6: Self::trie(&self.rules6, half)?,
        })
    }

    /// The trie in half `half` of the outer array `outer` (None: never
    /// written).
    fn trie(outer: &OwnedFd, half: u32) -> Result<Option<OwnedFd>, KernelError> {
        let mut id = [0u8; 4];
        if !sys::map_lookup(outer.as_fd(), &half.to_ne_bytes(), &mut id)
            .map_err(sys_err("reading a trie slot"))?
        {
            return Ok(None);
        }
        sys::map_fd_by_id(u32::from_ne_bytes(id))
            .map(Some)
            .map_err(sys_err("opening a trie"))
    }

    /// Kernel memory of the tries of half `half`, as the kernel accounts it
    /// (memlock): region tries and rule tries.
    pub(crate) fn trie_memlock(&self, half: u32) -> Result<u64, KernelError> {
        let mut total = 0;
        for outer in [&self.region4, &self.region6, &self.rules4, &self.rules6] {
            if let Some(inner) = Self::trie(outer, half)? {
                total +=
                    sys::map_memlock(inner.as_fd()).map_err(sys_err("reading a trie's memory"))?;
            }
        }
        Ok(total)
    }

    /// Switches the kernel to `tables`, with the region grants
    /// `region_grants(generation)` gives for the new generation. Returns the
    /// new epoch and, unless this was the first switch, a thread freeing the
    /// old tries (it must end before the next switch writes that half
    /// again).
    pub(crate) fn switch(
        &self,
        config: &ConfigMap,
        grants: &GrantMaps,
        tables: &Tables,
        region_grants: impl FnOnce(u8) -> BTreeMap<RegionGrantKey, GrantSet>,
        before_flip: impl FnOnce(u8) -> Result<(), KernelError>,
    ) -> Result<(u64, Option<std::thread::JoinHandle<()>>), KernelError> {
        switch(self, config, grants, tables, region_grants, before_flip)
    }
}

/// Creates an LPM trie holding `entries` (key data, prefix length in bits,
/// value). An empty list still gets a trie (of one slot).
fn build_trie<K: Copy, V: Copy>(
    name: &str,
    entries: &[(K, u32, V)],
) -> Result<OwnedFd, KernelError> {
    let key_size = 4 + size_of::<K>();
    let value_size = size_of::<V>();
    let fd = sys::map_create(
        sys::BPF_MAP_TYPE_LPM_TRIE,
        key_size as u32,
        value_size as u32,
        entries.len().max(1) as u32,
        sys::BPF_F_NO_PREALLOC,
        name,
    )
    .map_err(sys_err(format!(
        "creating trie {name} for {} prefixes",
        entries.len()
    )))?;
    let mut keys = Vec::with_capacity(entries.len() * key_size);
    let mut values = Vec::with_capacity(entries.len() * value_size);
    for (data, bits, value) in entries {
        keys.extend_from_slice(&bits.to_ne_bytes());
        keys.extend_from_slice(sys::bytes_of(data));
        values.extend_from_slice(sys::bytes_of(value));
    }
    if !entries.is_empty() {
        sys::map_update_batch(fd.as_fd(), &keys, &values, key_size, value_size)
            .map_err(sys_err(format!("filling trie {name}")))?;
    }
    Ok(fd)
}

fn set_slot(
    outer: BorrowedFd<'_>,
    slot: u32,
    inner: &OwnedFd,
    name: &str,
) -> Result<(), KernelError> {
    let fd = inner.as_raw_fd() as u32;
    sys::map_update(outer, &slot.to_ne_bytes(), &fd.to_ne_bytes(), sys::BPF_ANY)
        .map_err(sys_err(format!("switching {name}[{slot}]")))
}

fn write_half<T: Copy>(
    map: BorrowedFd<'_>,
    half: u32,
    per_half: u32,
    values: impl Iterator<Item = T>,
    name: &str,
) -> Result<(), KernelError> {
    let mut keys = Vec::with_capacity(per_half as usize * 4);
    let mut vals = Vec::with_capacity(per_half as usize * size_of::<T>());
    for (i, v) in values.take(per_half as usize).enumerate() {
        keys.extend_from_slice(&(half * per_half + i as u32).to_ne_bytes());
        vals.extend_from_slice(sys::bytes_of(&v));
    }
    sys::map_update_batch(map, &keys, &vals, 4, size_of::<T>())
        .map_err(sys_err(format!("writing {name} half {half}")))
}

/// Builds the two region tries in parallel (the kernel inserts into one trie
/// under its lock: two tries, two cores), then the rule tries.
fn build_all(tables: &Tables) -> Result<[OwnedFd; 4], KernelError> {
    let (r4, r6) = std::thread::scope(|scope| {
        let v4 = scope.spawn(|| build_trie::<[u8; 4], RegionValue>("gw_region4", &tables.region4));
        let v6 = build_trie::<[u8; 16], RegionValue>("gw_region6", &tables.region6);
        (v4.join().expect("trie builder thread"), v6)
    });
    Ok([
        r4?,
        r6?,
        build_trie::<RuleKey4, RuleSet>("gw_rules4", &tables.rules4)?,
        build_trie::<RuleKey6, RuleSet>("gw_rules6", &tables.rules6)?,
    ])
}

fn switch(
    maps: &TableMaps,
    config: &ConfigMap,
    grants: &GrantMaps,
    tables: &Tables,
    region_grants: impl FnOnce(u8) -> BTreeMap<RegionGrantKey, GrantSet>,
    before_flip: impl FnOnce(u8) -> Result<(), KernelError>,
) -> Result<(u64, Option<std::thread::JoinHandle<()>>), KernelError> {
    let epoch = config.load(config_slot::EPOCH);
    let next = epoch + 1;
    let half = (next & 1) as u32;

    // 1. New tries into the idle half. Each slot update waits for a grace
    // period: the four run side by side.
    let inner = build_all(tables)?;
    let outers = [
        (maps.region4.as_fd(), "GW_REGION4"),
        (maps.region6.as_fd(), "GW_REGION6"),
        (maps.rules4.as_fd(), "GW_RULES4"),
        (maps.rules6.as_fd(), "GW_RULES6"),
    ];
    std::thread::scope(|scope| {
        let handles: Vec<_> = outers
            .iter()
            .zip(&inner)
            .map(|((outer, name), fd)| scope.spawn(move || set_slot(*outer, half, fd, name)))
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("slot writer thread"))
    })?;

    // 2. Policies and tag sets of the idle half (absent slots are cleared).
    let policies = (0..MAX_POLICIES).map(|slot| {
        tables
            .policies
            .get(&slot)
            .copied()
            .unwrap_or(PolicyEntry::empty())
    });
    write_half(
        maps.policies.as_fd(),
        half,
        MAX_POLICIES,
        policies,
        "GW_POLICIES",
    )?;
    let tagsets =
        (0..MAX_TAGSETS as usize).map(|i| tables.tagsets.get(i).copied().unwrap_or_default());
    write_half::<TagSet>(
        maps.tagsets.as_fd(),
        half,
        MAX_TAGSETS,
        tagsets,
        "GW_TAGSETS",
    )?;

    // Region grants of the idle generation (the old generation's stay: the
    // tables in force still read them).
    grants.write_region_grants(config, half as u8, &region_grants(half as u8), false)?;
    // What else belongs to the idle generation (the names policies allow).
    before_flip(half as u8)?;

    // 3. The switch. From here on the new tables are in force: nothing may
    // report failure any more, or the caller would believe the old ones are.
    config.store(config_slot::EPOCH, next);
    if epoch == 0 {
        return Ok((next, None));
    }

    // 4. Grace period: rewriting a slot of a map-of-maps returns only once
    // every program running now has finished, so none still reads the old
    // half. (Without it the old tries are still freed safely: the kernel
    // frees an inner map only after a grace period of its own.)
    if let Err(e) = set_slot(outers[0].0, half, &inner[0], outers[0].1) {
        tracing::warn!(error = %crate::vocab::error::Chain(&e), "no grace period after the switch");
    }
    let old = 1 - half;
    if let Err(e) = grants.clear_region_grants(config, old as u8) {
        tracing::warn!(error = %crate::vocab::error::Chain(&e), "the old generation's region grants stay until the next switch");
    }
    // 5. Free the old tries, off the critical path. Where that cannot be
    // done they stay until the next switch replaces them.
    let fds: Vec<(OwnedFd, &'static str)> = match outers
        .iter()
        .map(|(fd, name)| fd.try_clone_to_owned().map(|fd| (fd, *name)))
        .collect::<Result<_, _>>()
    {
        Ok(fds) => fds,
        Err(e) => {
            tracing::warn!(error = %e, "old tries kept until the next switch");
            return Ok((next, None));
        }
    };
    let cleanup = std::thread::spawn(move || {
        for (outer, name) in fds {
            if let Err(e) = sys::map_delete(outer.as_fd(), &old.to_ne_bytes()) {
                tracing::warn!(map = name, slot = old, error = %e, "could not free an old trie");
            }
        }
    });
    Ok((next, Some(cleanup)))
}
