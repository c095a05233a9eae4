//! Counters and flow events.

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    generated::{bpf_get_current_cgroup_id, bpf_ktime_get_boot_ns},
};
use geowall_common::{FlowEvent, MAX_POLICIES, MAX_TAGSETS, TagSet, counter};

use crate::{
    maps::{GW_COUNTERS, GW_EVENTS, GW_TAGSETS},
    verdict::Dest,
};

/// One decision in flight: what the hook knows besides the verdict.
pub struct Flow<'a> {
    /// Socket cookie (0 where the hook has no socket yet).
    pub cookie: u64,
    pub dest: &'a Dest,
    pub hook: u8,
    pub slot: u32,
    pub epoch: u64,
    pub generation: u32,
}

impl<'a> Flow<'a> {
    #[inline(always)]
    pub fn new(cookie: u64, dest: &'a Dest, hook: u8, slot: u32, epoch: u64) -> Self {
        Self {
            cookie,
            dest,
            hook,
            slot,
            epoch,
            generation: (epoch & 1) as u32,
        }
    }
}

/// The verdict part of an event.
pub struct Outcome {
    pub verdict: u8,
    pub reason: u8,
    pub plen: u8,
    pub tagset: u16,
}

/// Adds one to counter `idx` of policy `slot` (the last row when the slot is
/// out of range) on this CPU.
#[inline(always)]
pub fn count(slot: u32, idx: usize) {
    let row = if slot < MAX_POLICIES {
        slot
    } else {
        MAX_POLICIES
    };
    if let Some(counters) = GW_COUNTERS.get_ptr_mut(row) {
        // SAFETY: per-CPU value pointer, valid for the program's run; only
        // this CPU writes it.
        let counters = unsafe { &mut *counters };
        if let Some(c) = counters.get_mut(idx) {
            *c = c.wrapping_add(1);
        }
    }
}

#[inline(always)]
fn tags(generation: u32, tagset: u16) -> TagSet {
    let idx = generation * MAX_TAGSETS + u32::from(tagset);
    GW_TAGSETS.get(idx).copied().unwrap_or_default()
}

/// Writes a flow event to the ring buffer. A full ring buffer never blocks
/// the caller: the event is counted as dropped instead.
#[inline(always)]
pub fn emit(flow: &Flow, outcome: Outcome) {
    let Some(mut entry) = GW_EVENTS.reserve(0) else {
        count(flow.slot, counter::EVENTS_DROPPED);
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: helpers without arguments.
    let (time_ns, cgroup_id) = unsafe { (bpf_ktime_get_boot_ns(), bpf_get_current_cgroup_id()) };
    let mut event = FlowEvent::zeroed();
    event.time_ns = time_ns;
    event.epoch = flow.epoch;
    event.cgroup_id = cgroup_id;
    event.sock_cookie = flow.cookie;
    event.pid = pid_tgid as u32;
    event.tgid = (pid_tgid >> 32) as u32;
    event.uid = uid_gid as u32;
    event.gid = (uid_gid >> 32) as u32;
    event.addr = flow.dest.addr;
    event.port = flow.dest.port;
    event.family = flow.dest.family;
    event.proto = flow.dest.proto;
    event.verdict = outcome.verdict;
    event.reason = outcome.reason;
    event.plen = outcome.plen;
    event.hook = flow.hook;
    event.policy = flow.slot as u16;
    event.flags = flow.dest.flags;
    event.tags = tags(flow.generation, outcome.tagset);
    event.comm = bpf_get_current_comm().unwrap_or_default();
    entry.write(event);
    entry.submit(0);
}
