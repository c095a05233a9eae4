//! The kernel's grant tries: (scope, prefix) → the grants that cover it.
//! The agent computes the entries (see `approvals::entries`) and writes
//! them here; the kernel checks expiry itself.

use std::{collections::BTreeSet, os::fd::AsFd};

use geowall_common::{GrantSet, config};

use super::{Kernel, KernelError, sys, sys_err};
use crate::regions::prefix::{Family, Prefix};

/// One entry's key: the scope (a cgroup id, or
/// [`geowall_common::GRANT_SCOPE_POLICY`] | slot) and the destination.
pub type EntryKey = (u64, Prefix);

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

fn value_bytes(set: &GrantSet) -> &[u8] {
    // SAFETY: GrantSet is #[repr(C)] plain data with explicit padding.
    unsafe {
        std::slice::from_raw_parts(
            (set as *const GrantSet).cast::<u8>(),
            std::mem::size_of::<GrantSet>(),
        )
    }
}

impl Kernel {
    fn grant_map(&self, family: Family) -> std::os::fd::BorrowedFd<'_> {
        match family {
            Family::V4 => self.maps.grants4.as_fd(),
            Family::V6 => self.maps.grants6.as_fd(),
        }
    }

    /// Writes (or replaces) the entry of `key`.
    pub fn write_grant_entry(&self, key: &EntryKey, set: &GrantSet) -> Result<(), KernelError> {
        let (scope, prefix) = key;
        sys::map_update(
            self.grant_map(prefix.family()),
            &raw_key(*scope, prefix),
            value_bytes(set),
            sys::BPF_ANY,
        )
        .map_err(sys_err(format!("writing grant entry {scope:#x} {prefix}")))
    }

    /// Removes the entry of `key` (absent is fine).
    pub fn delete_grant_entry(&self, key: &EntryKey) -> Result<(), KernelError> {
        let (scope, prefix) = key;
        sys::map_delete(self.grant_map(prefix.family()), &raw_key(*scope, prefix))
            .map_err(sys_err(format!("removing grant entry {scope:#x} {prefix}")))
    }

    /// Every entry of both grant tries.
    pub fn grant_entries(&self) -> Result<BTreeSet<EntryKey>, KernelError> {
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
    pub fn set_grant_count(&self, entries: usize) {
        self.config.store(config::GRANTS, entries as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for p in ["10.1.0.0/16", "2001:db8::/32", "127.20.0.1/32"] {
            let prefix: Prefix = p.parse().unwrap();
            let raw = raw_key(0x8000_0000_0000_0003, &prefix);
            assert_eq!(parse_key(&raw), Some((0x8000_0000_0000_0003, prefix)));
        }
    }
}
