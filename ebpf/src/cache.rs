//! Each CPU's cache of recent allowed verdicts (`GW_VCACHE`, see
//! [`VerdictCache`]): a job that connects to the same database again and
//! again, or sends datagram after datagram to one peer, is judged once per
//! table epoch, binding change, cgroup and destination, not on every call.

use geowall_common::{VERDICT_CACHE_SLOTS, VerdictCache};

use crate::{maps::GW_VCACHE, verdict::Dest};

/// What a cached verdict depends on besides the destination.
pub struct CacheKey {
    pub epoch: u64,
    pub bindings_gen: u64,
    pub cgroup_id: u64,
    /// The socket's cgroup ([`geowall_common::NO_SOCK_CGROUP`]: unknown).
    pub sock_cgroup: u64,
    /// [`VerdictCache::hash`] of the whole key.
    pub hash: u64,
}

impl CacheKey {
    #[inline(always)]
    pub fn new(
        dest: &Dest,
        epoch: u64,
        bindings_gen: u64,
        cgroup_id: u64,
        sock_cgroup: u64,
    ) -> Self {
        let hash = VerdictCache::hash(
            &dest.addr,
            epoch,
            bindings_gen,
            cgroup_id,
            sock_cgroup,
            dest.port,
            dest.proto,
            u8::from(dest.v4),
        );
        Self {
            epoch,
            bindings_gen,
            cgroup_id,
            sock_cgroup,
            hash,
        }
    }

    #[inline(always)]
    fn index(&self) -> u32 {
        (self.hash as u32) & (VERDICT_CACHE_SLOTS - 1)
    }
}

/// The slot of this CPU's cached allow for exactly this key, if it has one.
#[inline(always)]
pub fn lookup(key: &CacheKey, dest: &Dest) -> Option<u32> {
    let entry = GW_VCACHE.get_ptr(key.index())?;
    // SAFETY: a per-CPU array value pointer, valid for the program's run.
    let e = unsafe { &*entry };
    let hit = e.tag != 0
        && e.epoch == key.epoch
        && e.bindings_gen == key.bindings_gen
        && e.cgroup_id == key.cgroup_id
        && e.sock_cgroup == key.sock_cgroup
        && e.port == dest.port
        && e.proto == dest.proto
        && e.v4 == u8::from(dest.v4)
        && e.addr == dest.addr;
    if !hit {
        return None;
    }
    let slot = e.slot;
    (e.tag == VerdictCache::tag(key.hash, slot)).then_some(slot)
}

/// Remembers that `key` and `dest` were allowed under `slot`.
#[inline(always)]
pub fn store(key: &CacheKey, dest: &Dest, slot: u32) {
    let Some(entry) = GW_VCACHE.get_ptr_mut(key.index()) else {
        return;
    };
    // SAFETY: as in `lookup`; only this CPU writes its entries. The tag is
    // cleared first and set last, so a run that preempts this one never
    // matches a half-written entry.
    unsafe {
        let e = &mut *entry;
        core::ptr::write_volatile(&raw mut e.tag, 0);
        e.addr = dest.addr;
        e.epoch = key.epoch;
        e.bindings_gen = key.bindings_gen;
        e.cgroup_id = key.cgroup_id;
        e.port = dest.port;
        e.proto = dest.proto;
        e.v4 = u8::from(dest.v4);
        e.sock_cgroup = key.sock_cgroup;
        e.slot = slot;
        core::ptr::write_volatile(&raw mut e.tag, VerdictCache::tag(key.hash, slot));
    }
}
