//! Counters and flow events.

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{
            bpf_get_current_comm as bpf_get_current_comm_raw, bpf_get_socket_cookie,
            bpf_ktime_get_boot_ns,
        },
    },
};
use geowall_common::{
    Decision, FlowEvent, MAX_POLICIES, MAX_TAGSETS, PACKED_VERSION, TagSet, WAKE_INTERVAL_NS,
    counter,
};

use crate::{
    dest::Dest,
    maps::{GW_COUNTERS, GW_EVENTS, GW_TAGSETS, GW_WAKE},
};

/// Who a verdict is about: the table epoch, the calling task's cgroup and
/// the policy slot that decides.
pub struct Governed {
    /// Table epoch in force.
    pub epoch: u64,
    /// The task's own cgroup.
    pub cgroup_id: u64,
    /// The cgroup whose binding gave the task its policy (the job).
    pub scope: u64,
    /// Policy slot whose verdict is recorded.
    pub slot: u32,
    /// [`geowall_common::event_flags`] that come from the actor, not the destination.
    pub flags: u8,
}

impl Governed {
    /// The half of the switched tables in force.
    #[inline(always)]
    pub fn generation(&self) -> u32 {
        (self.epoch & 1) as u32
    }
}

/// The verdict part of an event.
pub struct Outcome {
    pub verdict: u8,
    pub reason: u8,
    pub plen: u8,
    pub tagset: u16,
    /// Id of the grant that allowed the flow (0: none).
    pub grant: u32,
}

impl Outcome {
    /// `verdict` for `decision`, allowed by grant `grant` (0: none).
    #[inline(always)]
    pub fn new(verdict: u8, decision: &Decision, grant: u32) -> Self {
        Self {
            verdict,
            reason: decision.reason,
            plen: decision.plen,
            tagset: decision.tagset,
            grant,
        }
    }
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

/// Writes a flow event to the ring buffer; when it is full, counts the event
/// as dropped for the flow's policy and answers false (a full ring buffer
/// never blocks).
/// Out of line: the event is built in a frame of its own, not on the
/// verdict path's stack.
///
/// `sock` is the hook's socket (its context for the address hooks), for
/// the socket cookie, which is read only when an event is written (the
/// kernel assigns a new socket's cookie from a global counter); null where
/// the hook has no socket yet. No struct gathers the five: it would sit
/// on the verdict path's frame, which is at the stack's limit.
#[inline(never)]
pub fn emit(
    sock: *mut core::ffi::c_void,
    dest: &Dest,
    hook: u8,
    actor: &Governed,
    outcome: &Outcome,
) -> bool {
    let Some(mut entry) = GW_EVENTS.reserve(0) else {
        count(actor.slot, counter::EVENTS_DROPPED);
        return false;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let sock_cookie = if sock.is_null() {
        0
    } else {
        // SAFETY: the hook's own context or socket, valid for the helper.
        unsafe { bpf_get_socket_cookie(sock) }
    };
    // Written field by field into the reserved record: a whole FlowEvent
    // on this frame would not fit beside the verdict path's. Every field,
    // padding included, is written: reserved memory is not zeroed.
    let ev: *mut FlowEvent = entry.as_mut_ptr();
    // SAFETY: `ev` points at the reserved record, ours until submitted.
    unsafe {
        (*ev).time_ns = now;
        (*ev).epoch = actor.epoch;
        (*ev).cgroup_id = actor.cgroup_id;
        (*ev).sock_cookie = sock_cookie;
        (*ev).pid = pid_tgid as u32;
        (*ev).tgid = (pid_tgid >> 32) as u32;
        (*ev).uid = uid_gid as u32;
        (*ev).gid = (uid_gid >> 32) as u32;
        // Two word stores: a byte array copy would call a byte-at-a-time
        // memcpy (the record and `Dest` are both 8-aligned).
        let from = core::ptr::from_ref(&dest.addr).cast::<u64>();
        let to = (&raw mut (*ev).addr).cast::<u64>();
        to.write(from.read());
        to.add(1).write(from.add(1).read());
        (*ev).port = dest.port;
        (*ev).family = dest.family;
        (*ev).proto = dest.proto;
        (*ev).verdict = outcome.verdict;
        (*ev).reason = outcome.reason;
        (*ev).plen = outcome.plen;
        (*ev).hook = hook;
        (*ev).policy = actor.slot as u16;
        (*ev).flags = dest.flags | actor.flags;
        (*ev).sock_type = dest.sock_type;
        (*ev).grant_id = outcome.grant;
        (*ev).tags = tags(actor.generation(), outcome.tagset);
        (*ev)._pad3 = 0;
        // Straight into the record (on failure the helper zeroes it).
        bpf_get_current_comm_raw(
            (&raw mut (*ev).comm).cast(),
            core::mem::size_of_val(&(*ev).comm) as u32,
        );
        (*ev).program_version = PACKED_VERSION;
        (*ev).scope = actor.scope;
    }
    entry.submit(wake_flags(now));
    true
}

/// Wakes the reader for this event only if this CPU has not done so for
/// [`WAKE_INTERVAL_NS`]: a wake-up is an interrupt and a context switch on
/// the connecting CPU, and at thousands of events a second most of them
/// find the reader busy anyway. The first event after a quiet spell wakes
/// it at once; the rest of a burst waits for the next wake-up or the
/// reader's timer.
#[inline(always)]
fn wake_flags(now: u64) -> u64 {
    let Some(last) = GW_WAKE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU value pointer, valid for the program's run. A program
    // preempted on this CPU by another run can lose one update: that costs
    // at most one extra or one later wake-up.
    let last = unsafe { &mut *last };
    if now.wrapping_sub(*last) >= WAKE_INTERVAL_NS {
        *last = now;
        BPF_RB_FORCE_WAKEUP.into()
    } else {
        BPF_RB_NO_WAKEUP.into()
    }
}
