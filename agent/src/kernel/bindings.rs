//! `GW_BINDINGS`: which cgroup (by id) is bound to which policy slot.

use std::{
    os::fd::{AsFd, OwnedFd},
    path::PathBuf,
};

use aya::maps::{Map, MapData};
use geowall_common::config;

use super::{KernelError, config_map::ConfigMap, map_err, sys, sys_err};

/// The bindings map, opened from its pin.
pub(crate) struct BindingMap {
    fd: OwnedFd,
    pin: PathBuf,
}

impl BindingMap {
    pub(crate) fn new(fd: OwnedFd, pin: PathBuf) -> Self {
        Self { fd, pin }
    }

    /// Binds a cgroup (by id) to a policy slot.
    pub(crate) fn bind(
        &self,
        config: &ConfigMap,
        cgroup_id: u64,
        slot: u32,
    ) -> Result<(), KernelError> {
        sys::map_update(
            self.fd.as_fd(),
            &cgroup_id.to_ne_bytes(),
            &slot.to_ne_bytes(),
            sys::BPF_ANY,
        )
        .map_err(sys_err(format!("binding cgroup {cgroup_id}")))?;
        changed(config);
        Ok(())
    }

    /// Removes a cgroup's binding (absent is fine).
    pub(crate) fn unbind(&self, config: &ConfigMap, cgroup_id: u64) -> Result<(), KernelError> {
        let result = sys::map_delete(self.fd.as_fd(), &cgroup_id.to_ne_bytes())
            .map_err(sys_err(format!("unbinding cgroup {cgroup_id}")));
        changed(config);
        result
    }

    /// The slot a cgroup (by id) is bound to.
    pub(crate) fn get(&self, cgroup_id: u64) -> Result<Option<u32>, KernelError> {
        let mut slot = [0u8; 4];
        let found = sys::map_lookup(self.fd.as_fd(), &cgroup_id.to_ne_bytes(), &mut slot)
            .map_err(sys_err(format!("looking up cgroup {cgroup_id}")))?;
        Ok(found.then(|| u32::from_ne_bytes(slot)))
    }

    /// Every binding: cgroup id → slot.
    pub(crate) fn all(&self) -> Result<Vec<(u64, u32)>, KernelError> {
        let map = MapData::from_pin(&self.pin).map_err(map_err("opening bindings"))?;
        let map = aya::maps::HashMap::<MapData, u64, u32>::try_from(Map::HashMap(map))
            .map_err(map_err("reading bindings"))?;
        map.iter()
            .map(|item| item.map_err(map_err("reading bindings")))
            .collect()
    }
}

/// Raises the bindings generation after a binding changed: every socket's
/// cached verdict was keyed by the old one (the store comes after the map
/// write, so a program that reads the new generation also sees the new
/// binding).
fn changed(config: &ConfigMap) {
    config.bump(config::BINDINGS_GEN);
}
