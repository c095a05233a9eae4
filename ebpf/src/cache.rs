//! Each CPU's cache of recent allowed verdicts (`GW_VCACHE`, see
//! [`VerdictCache`]): a job that connects to the same database again and
//! again, or sends datagram after datagram to one peer, is judged once per
//! table epoch, binding change, cgroup and destination, not on every call.

use geowall_common::{Decision, VERDICT_CACHE_SLOTS, VerdictCache};

use crate::{dest::Dest, maps::GW_VCACHE};

/// What a cached verdict depends on besides the destination.
pub struct CacheKey {
    pub epoch: u64,
    pub bindings_gen: u64,
    pub cgroup_id: u64,
    /// The socket's cgroup id, or its cookie with [`COOKIE_BIT`] set (see
    /// [`VerdictCache::sock_key`]).
    pub sock_key: u64,
    /// [`VerdictCache::hash`] of the key without the generations.
    pub hash: u64,
}

/// Marks a cookie in [`CacheKey::sock_key`]: neither a cookie nor a cgroup
/// id reaches bit 63, so one field tells them apart.
pub const COOKIE_BIT: u64 = 1 << 63;

/// A cached allow: whose counters it adds to, and the record to write for
/// it, if any.
pub struct Hit {
    /// [`geowall_common::UNGOVERNED_SLOT`]: nothing governs the flow.
    pub slot: u16,
    /// The decision, for the record.
    pub decision: Decision,
    /// 0: no record; else the actor's flags | [`geowall_common::CACHE_RECORD`]: write an
    /// `allow` record.
    pub record: u8,
}

impl CacheKey {
    #[inline(always)]
    pub fn new(dest: &Dest, epoch: u64, bindings_gen: u64, cgroup_id: u64, sock_key: u64) -> Self {
        let hash = VerdictCache::hash(
            &dest.addr,
            cgroup_id,
            sock_key,
            dest.port,
            dest.proto,
            u8::from(dest.v4),
        );
        Self {
            epoch,
            bindings_gen,
            cgroup_id,
            sock_key,
            hash,
        }
    }
}

#[inline(always)]
fn index(hash: u64) -> u32 {
    (hash as u32) & (VERDICT_CACHE_SLOTS - 1)
}

/// The payload fields of an entry, packed for its tag.
#[inline(always)]
fn payload(slot: u16, tagset: u16, reason: u8, plen: u8, record: u8) -> u64 {
    u64::from(slot)
        | (u64::from(tagset) << 16)
        | (u64::from(reason) << 32)
        | (u64::from(plen) << 40)
        | (u64::from(record) << 48)
}

/// This CPU's cached allow for exactly this key, if it has one.
#[inline(always)]
pub fn lookup(key: &CacheKey, dest: &Dest) -> Option<Hit> {
    let hash = key.hash;
    let entry = GW_VCACHE.get_ptr(index(hash))?;
    // SAFETY: a per-CPU array value pointer, valid for the program's run.
    let e = unsafe { &*entry };
    let hit = e.tag != 0
        && e.epoch == key.epoch
        && e.bindings_gen == key.bindings_gen
        && e.cgroup_id == key.cgroup_id
        && e.sock_key == key.sock_key
        && e.port == dest.port
        && e.proto == dest.proto
        && e.v4 == u8::from(dest.v4)
        && e.addr == dest.addr;
    if !hit {
        return None;
    }
    let (slot, tagset, reason, plen, record) = (e.slot, e.tagset, e.reason, e.plen, e.record);
    let payload = payload(slot, tagset, reason, plen, record);
    if e.tag != VerdictCache::tag(hash, key.epoch, key.bindings_gen, payload) {
        return None;
    }
    Some(Hit {
        slot,
        decision: Decision::new(true, reason, plen, tagset),
        record,
    })
}

/// Remembers that `key` and `dest` were allowed under `slot` with
/// `decision`; `record` as in [`Hit::record`].
#[inline(always)]
pub fn store(key: &CacheKey, dest: &Dest, slot: u16, decision: &Decision, record: u8) {
    let hash = key.hash;
    let Some(entry) = GW_VCACHE.get_ptr_mut(index(hash)) else {
        return;
    };
    let tag = VerdictCache::tag(
        hash,
        key.epoch,
        key.bindings_gen,
        payload(
            slot,
            decision.tagset,
            decision.reason,
            decision.plen,
            record,
        ),
    );
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
        e.sock_key = key.sock_key;
        e.port = dest.port;
        e.proto = dest.proto;
        e.v4 = u8::from(dest.v4);
        e.slot = slot;
        e.tagset = decision.tagset;
        e.reason = decision.reason;
        e.plen = decision.plen;
        e.record = record;
        core::ptr::write_volatile(&raw mut e.tag, tag);
    }
}
