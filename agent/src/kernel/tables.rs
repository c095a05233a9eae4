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
    RuleKey6, RuleSet, TagSet, config,
};

use super::{Kernel, KernelError, sys, sys_err};
use crate::tables::Tables;

/// Raw bytes of a plain-data value.
fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: `T` is one of the `#[repr(C)]` plain-data ABI types (or an
    // integer array) whose padding is explicit and initialized.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
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
        keys.extend_from_slice(bytes_of(data));
        values.extend_from_slice(bytes_of(value));
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
        vals.extend_from_slice(bytes_of(&v));
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

/// Switches the kernel to `tables`, with the region grants
/// `region_grants(generation)` gives for the new generation. Returns the new
/// epoch and, unless this was the first switch, a thread freeing the old
/// tries (it must end before the next switch writes that half again).
pub(super) fn switch(
    kernel: &Kernel,
    tables: &Tables,
    region_grants: impl FnOnce(u8) -> BTreeMap<RegionGrantKey, GrantSet>,
) -> Result<(u64, Option<std::thread::JoinHandle<()>>), KernelError> {
    let epoch = kernel.config.load(config::EPOCH);
    let next = epoch + 1;
    let half = (next & 1) as u32;
    let maps = &kernel.maps;

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
    kernel.write_region_grants(half as u8, &region_grants(half as u8), false)?;

    // 3. The switch. From here on the new tables are in force: nothing may
    // report failure any more, or the caller would believe the old ones are.
    kernel.config.store(config::EPOCH, next);
    if epoch == 0 {
        return Ok((next, None));
    }

    // 4. Grace period: rewriting a slot of a map-of-maps returns only once
    // every program running now has finished, so none still reads the old
    // half. (Without it the old tries are still freed safely: the kernel
    // frees an inner map only after a grace period of its own.)
    if let Err(e) = set_slot(outers[0].0, half, &inner[0], outers[0].1) {
        tracing::warn!(error = %e, "no grace period after the switch");
    }
    let old = 1 - half;
    if let Err(e) = kernel.clear_region_grants(old as u8) {
        tracing::warn!(error = %e, "the old generation's region grants stay until the next switch");
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
