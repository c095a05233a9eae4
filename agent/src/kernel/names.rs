//! The names of the ids the tables use, pinned beside them: region id →
//! tag (`GW_REGION_NAMES`), policy slot → policy (`GW_POLICY_NAMES`). They
//! keep ids stable across reloads and agent restarts.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use geowall_common::{MAX_POLICIES, MAX_REGIONS, POLICY_NAME_LEN, REGION_NAME_LEN};

use super::{KernelError, sys, sys_err};
use crate::tables::Layout;

/// The two name maps, opened from their pins.
pub(crate) struct NameMaps {
    regions: OwnedFd,
    policies: OwnedFd,
}

impl NameMaps {
    pub(crate) fn new(regions: OwnedFd, policies: OwnedFd) -> Self {
        Self { regions, policies }
    }

    /// Region names by id.
    pub(crate) fn regions(&self) -> Result<Vec<Option<String>>, KernelError> {
        read_names::<REGION_NAME_LEN>(self.regions.as_fd(), MAX_REGIONS)
    }

    /// Policy names by slot.
    pub(crate) fn policies(&self) -> Result<Vec<Option<String>>, KernelError> {
        read_policy_names(self.policies.as_fd())
    }

    /// Records a policy slot's name (`None` frees the slot).
    pub(crate) fn set_policy(&self, slot: u32, name: Option<&str>) -> Result<(), KernelError> {
        write_name::<POLICY_NAME_LEN>(self.policies.as_fd(), slot, name)
    }

    /// Records the names of the ids `layout` uses (only those that differ).
    pub(crate) fn record(&self, layout: &Layout) -> Result<(), KernelError> {
        let known = self.regions()?;
        for (id, name) in &layout.regions {
            if known.get(*id as usize).and_then(Option::as_deref) != Some(name.as_str()) {
                write_name::<REGION_NAME_LEN>(self.regions.as_fd(), u32::from(*id), Some(name))?;
            }
        }
        let slots = self.policies()?;
        for (name, slot) in &layout.slots {
            if slots.get(*slot as usize).and_then(Option::as_deref) != Some(name.as_str()) {
                self.set_policy(*slot, Some(name))?;
            }
        }
        Ok(())
    }
}

/// Policy names by slot from the policy name map `map`.
pub(crate) fn read_policy_names(map: BorrowedFd<'_>) -> Result<Vec<Option<String>>, KernelError> {
    read_names::<POLICY_NAME_LEN>(map, MAX_POLICIES)
}

fn read_names<const N: usize>(
    map: BorrowedFd<'_>,
    count: u32,
) -> Result<Vec<Option<String>>, KernelError> {
    let mut out = Vec::with_capacity(count as usize);
    let mut buf = [0u8; N];
    for i in 0..count {
        sys::map_lookup(map, &i.to_ne_bytes(), &mut buf)
            .map_err(sys_err(format!("reading name {i}")))?;
        let end = buf.iter().position(|b| *b == 0).unwrap_or(N);
        out.push((end > 0).then(|| String::from_utf8_lossy(&buf[..end]).into_owned()));
    }
    Ok(out)
}

fn write_name<const N: usize>(
    map: BorrowedFd<'_>,
    idx: u32,
    name: Option<&str>,
) -> Result<(), KernelError> {
    let mut buf = [0u8; N];
    if let Some(name) = name {
        for (d, s) in buf.iter_mut().zip(name.bytes().take(N - 1)) {
            *d = s;
        }
    }
    sys::map_update(map, &idx.to_ne_bytes(), &buf, sys::BPF_ANY)
        .map_err(sys_err(format!("writing name {idx}")))
}
