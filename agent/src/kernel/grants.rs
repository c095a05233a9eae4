//! Writing the kernel's grant tries, (scope, prefix) → the grants that
//! cover it, and its region grant map, (generation, scope, region id) →
//! the grants to that region. What to write is computed in
//! [`crate::tables::grants`]; the kernel checks expiry itself.
//!
//! Region ids belong to a generation of the tables: a table switch writes
//! the idle generation's region grants before the epoch flips (see
//! `kernel/tables.rs`), and a change of grants between switches rewrites
//! the active generation's.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::{AsFd, OwnedFd},
};

use geowall_common::{GrantSet, MAX_REGION_GRANT_ENTRIES, RegionGrantKey, config};

use super::{KernelError, config_map::ConfigMap, sys, sys_err};
use crate::{
    regions::prefix::{Family, Prefix},
    tables::grants::EntryKey,
};

/// Raw LPM key: prefix length (native order, counting the 64 scope bits),
/// scope (big endian), address (network order).
fn raw_key(scope: u64, prefix: &Prefix) -> Vec<u8> {
    let mut key = (64 + u32::from(prefix.len())).to_ne_bytes().to_vec();
    key.extend_from_slice(&scope.to_be_bytes());
    key.extend_from_slice(&prefix.addr_bytes());
    key
}

fn parse_key(raw: &[u8]) -> Option<EntryKey> {
    let plen = u32::from_ne_bytes(raw.get(..4)?.try_into().ok()?);
    let scope = u64::from_be_bytes(raw.get(4..12)?.try_into().ok()?);
    let addr = raw.get(12..)?;
    let len = u8::try_from(plen.checked_sub(64)?).ok()?;
    let prefix = match addr.len() {
        4 => Prefix::v4(<[u8; 4]>::try_from(addr).ok()?.into(), len),
        16 => Prefix::v6(<[u8; 16]>::try_from(addr).ok()?.into(), len),
        _ => return None,
    };
    Some((scope, prefix))
}

/// The grant tries and the region grant map, opened from their pins.
pub(crate) struct GrantMaps {
    v4: OwnedFd,
    v6: OwnedFd,
    region: OwnedFd,
}

impl GrantMaps {
    pub(crate) fn new(v4: OwnedFd, v6: OwnedFd, region: OwnedFd) -> Self {
        Self { v4, v6, region }
    }

    fn grant_map(&self, family: Family) -> std::os::fd::BorrowedFd<'_> {
        match family {
            Family::V4 => self.v4.as_fd(),
            Family::V6 => self.v6.as_fd(),
        }
    }

    /// Writes (or replaces) the entry of `key`.
    pub(crate) fn write_entry(&self, key: &EntryKey, set: &GrantSet) -> Result<(), KernelError> {
        let (scope, prefix) = key;
        sys::map_update(
            self.grant_map(prefix.family()),
            &raw_key(*scope, prefix),
            sys::bytes_of(set),
            sys::BPF_ANY,
        )
        .map_err(sys_err(format!("writing grant entry {scope:#x} {prefix}")))
    }

    /// Removes the entry of `key` (absent is fine).
    pub(crate) fn delete_entry(&self, key: &EntryKey) -> Result<(), KernelError> {
        let (scope, prefix) = key;
        sys::map_delete(self.grant_map(prefix.family()), &raw_key(*scope, prefix))
            .map_err(sys_err(format!("removing grant entry {scope:#x} {prefix}")))
    }

    /// Every entry of both grant tries.
    pub(crate) fn entries(&self) -> Result<BTreeSet<EntryKey>, KernelError> {
        let mut out = BTreeSet::new();
        for (family, width) in [(Family::V4, 4), (Family::V6, 16)] {
            let map = self.grant_map(family);
            let mut prev: Option<Vec<u8>> = None;
            loop {
                let mut next = vec![0u8; 12 + width];
                let more = sys::map_next_key(map, prev.as_deref(), &mut next)
                    .map_err(sys_err("listing grant entries"))?;
                if !more {
                    break;
                }
                if let Some(key) = parse_key(&next) {
                    out.insert(key);
                }
                prev = Some(next);
            }
        }
        Ok(out)
    }

    /// Tells the programs how many grant entries exist (0: skip the lookups).
    pub(crate) fn set_count(config: &ConfigMap, entries: usize) {
        config.store(config::GRANTS, entries as u64);
    }

    /// Every key of the region grant map.
    fn region_keys(&self) -> Result<Vec<RegionGrantKey>, KernelError> {
        let map = self.region.as_fd();
        let mut out = Vec::new();
        let mut prev: Option<[u8; KEY]> = None;
        loop {
            let mut next = [0u8; KEY];
            let more = sys::map_next_key(map, prev.as_ref().map(|k| &k[..]), &mut next)
                .map_err(sys_err("listing region grant entries"))?;
            if !more || out.len() > 2 * MAX_REGION_GRANT_ENTRIES as usize {
                break;
            }
            out.push(key_of(&next));
            prev = Some(next);
        }
        Ok(out)
    }

    /// Makes generation `generation`'s region grants exactly `wanted` (and,
    /// with `others`, removes every other generation's); sets the count the
    /// programs check. Returns the entries left in the map.
    pub(crate) fn write_region_grants(
        &self,
        config: &ConfigMap,
        generation: u8,
        wanted: &BTreeMap<RegionGrantKey, GrantSet>,
        others: bool,
    ) -> Result<usize, KernelError> {
        let map = self.region.as_fd();
        let existing = self.region_keys()?;
        // Counted high first: the programs never skip an entry being written.
        let mut left = existing.len() + wanted.len();
        config.store(config::REGION_GRANTS, left as u64);
        for (key, set) in wanted {
            sys::map_update(map, &key_bytes(key), sys::bytes_of(set), sys::BPF_ANY).map_err(
                sys_err(format!(
                    "writing region grant {:#x} region {} generation {}",
                    key.scope, key.region, key.generation
                )),
            )?;
        }
        left = wanted.len();
        for key in existing {
            if wanted.contains_key(&key) {
                continue;
            }
            if key.generation == generation || others {
                self.delete_region_grant(&key)?;
            } else {
                left += 1;
            }
        }
        config.store(config::REGION_GRANTS, left as u64);
        Ok(left)
    }

    /// Removes every region grant of generation `generation`; sets the count
    /// the programs check.
    pub(crate) fn clear_region_grants(
        &self,
        config: &ConfigMap,
        generation: u8,
    ) -> Result<(), KernelError> {
        let mut left = 0;
        for key in self.region_keys()? {
            if key.generation == generation {
                self.delete_region_grant(&key)?;
            } else {
                left += 1;
            }
        }
        config.store(config::REGION_GRANTS, left);
        Ok(())
    }

    fn delete_region_grant(&self, key: &RegionGrantKey) -> Result<(), KernelError> {
        sys::map_delete(self.region.as_fd(), &key_bytes(key)).map_err(sys_err(format!(
            "removing region grant {:#x} region {} generation {}",
            key.scope, key.region, key.generation
        )))
    }
}

/// Bytes of a region grant key.
const KEY: usize = std::mem::size_of::<RegionGrantKey>();

fn key_bytes(key: &RegionGrantKey) -> [u8; KEY] {
    let mut out = [0u8; KEY];
    out[..8].copy_from_slice(&key.scope.to_ne_bytes());
    out[8..10].copy_from_slice(&key.region.to_ne_bytes());
    out[10] = key.generation;
    out
}

fn key_of(raw: &[u8; KEY]) -> RegionGrantKey {
    let scope = u64::from_ne_bytes(raw[..8].try_into().expect("8 bytes"));
    let region = u16::from_ne_bytes([raw[8], raw[9]]);
    RegionGrantKey::new(scope, region, raw[10])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_keys_round_trip_in_the_abi_layout() {
        let key = RegionGrantKey::new(0x8000_0000_0000_0003, 517, 1);
        let raw = key_bytes(&key);
        // SAFETY: RegionGrantKey is #[repr(C)] plain data.
        let abi: [u8; KEY] = unsafe { std::mem::transmute(key) };
        assert_eq!(raw, abi);
        assert_eq!(key_of(&raw), key);
    }

    #[test]
    fn keys_round_trip() {
        for p in ["10.1.0.0/16", "2001:db8::/32", "127.20.0.1/32"] {
            let prefix: Prefix = p.parse().unwrap();
            let raw = raw_key(0x8000_0000_0000_0003, &prefix);
            assert_eq!(parse_key(&raw), Some((0x8000_0000_0000_0003, prefix)));
        }
    }
}

/// The grant tries and the programs' count of their entries, for the two
/// writers of grants: the approvals (which decide them) and the DNS
/// forwarder (which opens the addresses a name grant's jobs resolve, before
/// the answer reaches the job). They take turns under a lock of their own.
#[derive(Clone)]
pub struct GrantWriter {
    maps: std::sync::Arc<GrantMaps>,
    config: std::sync::Arc<ConfigMap>,
}

impl std::fmt::Debug for GrantWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrantWriter")
    }
}

impl GrantWriter {
    pub(crate) fn new(maps: std::sync::Arc<GrantMaps>, config: std::sync::Arc<ConfigMap>) -> Self {
        Self { maps, config }
    }

    /// Writes (or replaces) the grant trie entry of `key`.
    pub fn write_entry(&self, key: &EntryKey, set: &GrantSet) -> Result<(), KernelError> {
        self.maps.write_entry(key, set)
    }

    /// Removes the grant trie entry of `key` (absent is fine).
    pub fn delete_entry(&self, key: &EntryKey) -> Result<(), KernelError> {
        self.maps.delete_entry(key)
    }

    /// Every entry of both grant tries.
    pub fn entries(&self) -> Result<BTreeSet<EntryKey>, KernelError> {
        self.maps.entries()
    }

    /// Tells the programs how many grant entries exist (0: skip the
    /// lookups).
    pub fn set_count(&self, entries: usize) {
        GrantMaps::set_count(&self.config, entries);
    }
}
