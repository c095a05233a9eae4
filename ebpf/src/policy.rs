//! Which policy governs the calling task: the nearest ancestor cgroup (the
//! task's own included) that has a binding.

use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;
use geowall_common::{MAX_CGROUP_WALK, config};

use crate::maps::{GW_BINDINGS, MAX_ROOT_LEVEL, config_slot};

/// A task's binding: the policy slot, and the cgroup that holds it.
#[derive(Clone, Copy)]
pub struct Bound {
    pub slot: u32,
    pub cgroup: u64,
}

/// The policy slot bound to `cgroup_id` itself.
#[inline(always)]
pub fn binding(cgroup_id: u64) -> Option<u32> {
    // SAFETY: the pointer is valid for the program's run; the value is copied
    // out at once.
    GW_BINDINGS
        .get_ptr(cgroup_id)
        .map(|p| unsafe { core::ptr::read_volatile(p) })
}

/// The policy slot for the current task, whose own cgroup is `leaf`, and
/// the id of the cgroup whose binding decided (`leaf` itself or its nearest
/// bound ancestor: cgroup-scoped grants are checked for it too), or `None`
/// when no cgroup on its path (from the governed root down to its own) is
/// bound.
///
/// The task's own cgroup is looked up first (jobs started by `geowall exec`
/// are bound there, so this is one lookup). Otherwise the walk goes from the
/// governed root downwards, at most [`MAX_CGROUP_WALK`] levels, and keeps the
/// deepest binding it passes.
#[inline(always)]
pub fn current_slot(leaf: u64) -> Option<Bound> {
    if let Some(slot) = binding(leaf) {
        return Some(Bound { slot, cgroup: leaf });
    }
    let root_level = config_slot(config::ROOT_LEVEL).min(MAX_ROOT_LEVEL) as i32;
    let mut found = None;
    for step in 0..MAX_CGROUP_WALK as i32 {
        // SAFETY: a helper without pointer arguments.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(root_level + step) };
        // 0: the task's cgroup is shallower than this level.
        if id == 0 || id == leaf {
            break;
        }
        if let Some(slot) = binding(id) {
            found = Some(Bound { slot, cgroup: id });
        }
    }
    found
}
