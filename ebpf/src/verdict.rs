//! The verdict path shared by every socket-address hook, in the order of
//! DESIGN.md: policy, CIDR rules, region lookup, allow-set, audit mode.

use aya_ebpf::{btf_maps::lpm_trie::Key, helpers::generated::bpf_get_current_cgroup_id};
use geowall_common::{
    MAX_POLICIES, PolicyEntry, RuleKey4, RuleKey6, RuleSet, TAGSET_UNTAGGED, action, config,
    counter, policy_flags, reason, tag_flags, verdict,
};

use crate::{
    events::{self, Flow},
    maps::{GW_POLICIES, GW_REGION4, GW_REGION6, GW_RULES4, GW_RULES6, config_slot},
    policy,
};

/// Let the operation proceed.
pub const PROCEED: i32 = 1;
/// Refuse the operation: the caller sees `EPERM`.
pub const REFUSE: i32 = 0;

/// A destination as the hook saw it.
pub struct Dest {
    /// Network-order address; IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// Host-order port.
    pub port: u16,
    /// IP protocol of the socket.
    pub proto: u8,
    /// Family of the socket ([`geowall_common::family`]).
    pub family: u8,
    /// Judge `addr[..4]` as IPv4 (an IPv4 socket, or an IPv4-mapped address).
    pub v4: bool,
    /// [`geowall_common::event_flags`].
    pub flags: u8,
}

/// What the tables said about one destination.
struct Decision {
    allowed: bool,
    reason: u8,
    plen: u8,
    tagset: u16,
}

/// The current task, when a policy governs it.
pub struct Governed {
    /// Table epoch in force.
    pub epoch: u64,
    /// The task's own cgroup.
    pub cgroup_id: u64,
    /// Policy slot of the nearest bound cgroup.
    pub slot: u32,
}

#[inline(always)]
fn governed() -> Option<Governed> {
    let epoch = config_slot(config::EPOCH);
    if epoch == 0 {
        // No tables loaded yet: nothing is governed.
        return None;
    }
    // SAFETY: a helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let slot = policy::current_slot(cgroup_id)?;
    Some(Governed {
        epoch,
        cgroup_id,
        slot,
    })
}

/// A binding names a slot the active tables do not have: fail closed.
#[inline(always)]
fn fail_closed(flow: &Flow) -> i32 {
    events::count(flow.slot, counter::NO_TABLE);
    finish(
        flow,
        policy_flags::PRESENT,
        Decision {
            allowed: false,
            reason: reason::NO_TABLE,
            plen: 0,
            tagset: TAGSET_UNTAGGED,
        },
    )
}

/// Judges an outbound connection or datagram from the current task.
#[inline(always)]
pub fn judge(cookie: u64, dest: &Dest, hook: u8) -> i32 {
    let Some(task) = governed() else {
        return PROCEED;
    };
    let flow = Flow::new(cookie, dest, hook, &task);
    match policy_entry(flow.generation(), task.slot) {
        Some(policy) => finish(
            &flow,
            policy.flags,
            decide(policy, flow.generation(), task.slot, dest),
        ),
        None => fail_closed(&flow),
    }
}

/// Judges the creation of a socket that would bypass the address hooks
/// (raw, packet, XDP): refused unless the policy allows raw sockets.
#[inline(always)]
pub fn judge_socket(cookie: u64, family: u8, proto: u8, hook: u8) -> i32 {
    let Some(task) = governed() else {
        return PROCEED;
    };
    let dest = Dest {
        addr: [0; 16],
        port: 0,
        proto,
        family,
        v4: false,
        flags: 0,
    };
    let flow = Flow::new(cookie, &dest, hook, &task);
    match policy_entry(flow.generation(), task.slot) {
        Some(policy) => finish(
            &flow,
            policy.flags,
            Decision {
                allowed: policy.flags & policy_flags::ALLOW_RAW_SOCKETS != 0,
                reason: reason::SOCKET_TYPE,
                plen: 0,
                tagset: TAGSET_UNTAGGED,
            },
        ),
        None => fail_closed(&flow),
    }
}

#[inline(always)]
fn policy_entry(gen_: u32, slot: u32) -> Option<&'static PolicyEntry> {
    if slot >= MAX_POLICIES {
        return None;
    }
    let entry = GW_POLICIES.get(gen_ * MAX_POLICIES + slot)?;
    if entry.flags & policy_flags::PRESENT == 0 {
        return None;
    }
    Some(entry)
}

#[inline(always)]
fn decide(policy: &PolicyEntry, gen_: u32, slot: u32, dest: &Dest) -> Decision {
    if policy.flags & policy_flags::HAS_RULES != 0
        && let Some(decision) = rule_decision(gen_, slot, dest)
    {
        return decision;
    }
    region_decision(policy, gen_, dest)
}

#[inline(always)]
fn rule_decision(gen_: u32, slot: u32, dest: &Dest) -> Option<Decision> {
    let slot_be = slot.to_be_bytes();
    let rules = if dest.v4 {
        let mut data: RuleKey4 = [0; 8];
        data[..4].copy_from_slice(&slot_be);
        data[4..].copy_from_slice(&dest.addr[..4]);
        read_value(GW_RULES4.get_value_ptr_mut(gen_, &Key::new(64, data)))?
    } else {
        let mut data: RuleKey6 = [0; 20];
        data[..4].copy_from_slice(&slot_be);
        data[4..].copy_from_slice(&dest.addr);
        read_value(GW_RULES6.get_value_ptr_mut(gen_, &Key::new(160, data)))?
    };
    first_matching_rule(&rules, dest)
}

#[inline(always)]
fn first_matching_rule(rules: &RuleSet, dest: &Dest) -> Option<Decision> {
    for rule in rules.rules.iter().take(rules.count as usize) {
        if rule.matches(dest.proto, dest.port) {
            return Some(Decision {
                allowed: rule.action == action::ALLOW,
                reason: reason::RULE,
                plen: rule.plen,
                tagset: TAGSET_UNTAGGED,
            });
        }
    }
    None
}

#[inline(always)]
fn region_decision(policy: &PolicyEntry, gen_: u32, dest: &Dest) -> Decision {
    let found = if dest.v4 {
        let mut data = [0u8; 4];
        data.copy_from_slice(&dest.addr[..4]);
        read_value(GW_REGION4.get_value_ptr_mut(gen_, &Key::new(32, data)))
    } else {
        read_value(GW_REGION6.get_value_ptr_mut(gen_, &Key::new(128, dest.addr)))
    };
    match found {
        // An entry may carry the untagged set: it punches a hole into a
        // wider prefix (the tries are minimized, see regions/ortc.rs).
        Some(value) if value.tagset != TAGSET_UNTAGGED => Decision {
            allowed: policy.allows(value.tagset),
            reason: if value.flags & tag_flags::LOCAL != 0 {
                reason::LOCAL
            } else {
                reason::REGION
            },
            plen: value.plen,
            tagset: value.tagset,
        },
        _ => Decision {
            allowed: policy.allows(TAGSET_UNTAGGED),
            reason: reason::UNTAGGED,
            plen: 0,
            tagset: TAGSET_UNTAGGED,
        },
    }
}

/// Copies a trie value out of the kernel's node (nodes are freed only after
/// the program has returned, but the copy keeps the lifetime obvious).
#[inline(always)]
fn read_value<T: Copy>(ptr: Option<*mut T>) -> Option<T> {
    // SAFETY: a non-null pointer from bpf_map_lookup_elem points at a value
    // of the map's value size for the duration of the program.
    ptr.map(|p| unsafe { core::ptr::read(p) })
}

/// Applies audit mode, bumps the counter, records the event, returns the
/// answer to the kernel.
#[inline(always)]
fn finish(flow: &Flow, policy_flags_: u32, decision: Decision) -> i32 {
    let audit = policy_flags_ & policy_flags::AUDIT != 0;
    let (code, ret, counter_idx) = match (decision.allowed, audit) {
        (true, _) => (verdict::ALLOW, PROCEED, counter::ALLOWED),
        (false, true) => (verdict::WOULD_DENY, PROCEED, counter::WOULD_DENY),
        (false, false) => (verdict::DENY, REFUSE, counter::DENIED),
    };
    events::count(flow.slot, counter_idx);
    if code != verdict::ALLOW || policy_flags_ & policy_flags::LOG_ALLOWED != 0 {
        events::emit(
            flow,
            events::Outcome {
                verdict: code,
                reason: decision.reason,
                plen: decision.plen,
                tagset: decision.tagset,
            },
        );
    }
    ret
}
