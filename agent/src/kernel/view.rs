//! The tables in force, read back from the kernel for `policy explain`.

use std::os::fd::{AsFd, OwnedFd};

use geowall_common::{MAX_POLICIES, PolicyEntry, RegionValue, RuleSet, policy_flags};

use super::{KernelError, sys, sys_err, tables::TableMaps};
use crate::tables::explain::TableView;

/// The active half of the kernel's tables, read through the bpf syscall:
/// the trie lookups are the kernel's own longest-prefix matches.
pub struct KernelView<'a> {
    tables: &'a TableMaps,
    pub epoch: u64,
    half: u32,
    region4: Option<OwnedFd>,
    region6: Option<OwnedFd>,
    rules4: Option<OwnedFd>,
    rules6: Option<OwnedFd>,
    regions: Vec<Option<String>>,
}

impl<'a> KernelView<'a> {
    /// The half of `tables` that epoch `epoch` names; `regions` are the
    /// region names by id.
    pub(crate) fn new(
        tables: &'a TableMaps,
        epoch: u64,
        regions: Vec<Option<String>>,
    ) -> Result<Self, KernelError> {
        let half = (epoch & 1) as u32;
        let tries = tables.tries(half)?;
        Ok(KernelView {
            tables,
            epoch,
            half,
            region4: tries.region4,
            region6: tries.region6,
            rules4: tries.rules4,
            rules6: tries.rules6,
            regions,
        })
    }

    fn lookup<V: Copy + Default>(
        map: Option<&OwnedFd>,
        bits: u32,
        data: &[u8],
    ) -> Result<Option<V>, KernelError> {
        let Some(map) = map else {
            return Ok(None);
        };
        let mut key = bits.to_ne_bytes().to_vec();
        key.extend_from_slice(data);
        let mut value = V::default();
        let found = sys::map_lookup(map.as_fd(), &key, sys::bytes_of_mut(&mut value))
            .map_err(sys_err("looking up a trie"))?;
        Ok(found.then_some(value))
    }
}

impl TableView for KernelView<'_> {
    type Error = KernelError;

    fn policy(&self, slot: u32) -> Result<Option<PolicyEntry>, KernelError> {
        if slot >= MAX_POLICIES {
            return Ok(None);
        }
        let entry = self.tables.policy(self.half, slot)?;
        Ok((entry.flags & policy_flags::PRESENT != 0).then_some(entry))
    }

    fn rules(&self, slot: u32, addr: &[u8; 16], v4: bool) -> Result<Option<RuleSet>, KernelError> {
        let mut data = slot.to_be_bytes().to_vec();
        if v4 {
            data.extend_from_slice(&addr[..4]);
            Self::lookup(self.rules4.as_ref(), 64, &data)
        } else {
            data.extend_from_slice(addr);
            Self::lookup(self.rules6.as_ref(), 160, &data)
        }
    }

    fn region(&self, addr: &[u8; 16], v4: bool) -> Result<Option<RegionValue>, KernelError> {
        if v4 {
            Self::lookup(self.region4.as_ref(), 32, &addr[..4])
        } else {
            Self::lookup(self.region6.as_ref(), 128, addr)
        }
    }

    fn tags(&self, tagset: u16) -> Result<Vec<String>, KernelError> {
        let set = self.tables.tag_set(self.half, tagset)?;
        Ok(set
            .regions
            .iter()
            .take(set.count as usize)
            .map(|id| {
                self.regions
                    .get(*id as usize)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| format!("region#{id}"))
            })
            .collect())
    }
}
