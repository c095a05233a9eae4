//! Inbound connections: a job that listens could be reached from anywhere
//! and send back what it must not send out (a TCP send runs no hook). A
//! connection to a listener of a governed socket is judged by the peer's
//! address under the policy of the listener's cgroup (`inbound =
//! "judge"`); a denied one is dropped (the peer sees no answer) and
//! recorded. A loopback peer is this host and passes before any lookup;
//! other local peers follow the policy's `local` setting like any
//! destination.
//!
//! `cgroup_skb/ingress` runs for every packet to a governed socket: all
//! but those to a listening TCP socket leave after two loads. UDP is not
//! judged here: a reply to an unconnected peer goes through sendmsg, which
//! judges it.

use aya_ebpf::{
    helpers::generated::{bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id},
    programs::SkBuffContext,
};
use geowall_common::{MAX_CGROUP_WALK, config, event_flags, family, policy_flags};

use crate::{
    dest::Dest,
    maps::{MAX_ROOT_LEVEL, config_slot},
    policy::{self, Bound},
    verdict::{self, PROCEED},
};

/// `TCP_LISTEN`.
const TCP_LISTEN: u32 = 10;
const IPPROTO_TCP: u8 = 6;
/// `skb->protocol` of IPv4 and IPv6: the network-order ethertype in the
/// low 16 bits.
const ETH_P_IP: u32 = 0x0800u16.to_be() as u32;
const ETH_P_IPV6: u32 = 0x86ddu16.to_be() as u32;

/// `cgroup_skb/ingress`: 1 lets the packet in, 0 drops it.
#[inline(always)]
pub fn judge_ingress(ctx: &SkBuffContext) -> i32 {
    let skb = ctx.skb.skb;
    // SAFETY: the kernel hands a valid `__sk_buff`; `sk` may be null, and
    // `state` is readable on any socket.
    let listening = unsafe {
        let sk = (*skb).__bindgen_anon_2.sk;
        !sk.is_null() && (&raw const (*sk).state).read_volatile() == TCP_LISTEN
    };
    if !listening {
        return PROCEED;
    }
    judge_listener(ctx)
}

/// A packet to a listening TCP socket (a connection's SYN, or the ACK that
/// completes it). Out of line: every other packet pays only the check
/// above.
#[inline(never)]
fn judge_listener(ctx: &SkBuffContext) -> i32 {
    let skb = ctx.skb.skb;
    // A peer on loopback is this host: always allowed, before any lookup
    // (the SYN and the ACK of every local connection come here).
    if from_loopback(ctx) {
        return PROCEED;
    }
    let Some(bound) = listener_policy(ctx) else {
        return PROCEED;
    };
    // SAFETY: as in `judge_ingress`.
    let (proto, local_port) = unsafe {
        (
            (&raw const (*skb).protocol).read_volatile(),
            (&raw const (*skb).local_port).read_volatile(),
        )
    };
    // The packet starts at its network header: the peer's address is its
    // source, and the TCP header's first field its port.
    let mut addr = [0u8; 16];
    let (fam, v4) = if proto == ETH_P_IP {
        let Ok(src) = ctx.load::<[u8; 4]>(12) else {
            return PROCEED;
        };
        addr[..4].copy_from_slice(&src);
        (family::INET, true)
    } else if proto == ETH_P_IPV6 {
        let Ok(src) = ctx.load::<[u8; 16]>(8) else {
            return PROCEED;
        };
        addr = src;
        (family::INET6, false)
    } else {
        return PROCEED;
    };
    let dest = Dest {
        addr,
        port: local_port as u16,
        proto: IPPROTO_TCP,
        family: fam,
        v4,
        flags: event_flags::INBOUND,
        sock_type: 0,
    };
    verdict::judge_inbound(skb.cast(), &dest, bound)
}

/// Whether the packet's source is 127.0.0.0/8 or ::1. Out of line, so its
/// loads take no room on the verdict path's stack.
#[inline(never)]
fn from_loopback(ctx: &SkBuffContext) -> bool {
    // SAFETY: as in `judge_ingress`.
    let proto = unsafe { (&raw const (*ctx.skb.skb).protocol).read_volatile() };
    if proto == ETH_P_IP {
        ctx.load::<u8>(12).is_ok_and(|b| b == 127)
    } else if proto == ETH_P_IPV6 {
        match (ctx.load::<u64>(8), ctx.load::<u64>(16)) {
            (Ok(hi), Ok(lo)) => hi == 0 && lo == 1u64.to_be(),
            _ => false,
        }
    } else {
        false
    }
}

/// The binding that governs the listener's cgroup: its own, else its
/// nearest bound ancestor's (from the governed root down), when its policy
/// judges inbound connections.
#[inline(always)]
fn listener_policy(ctx: &SkBuffContext) -> Option<Bound> {
    let skb = ctx.skb.skb;
    // SAFETY: the helpers take the program's own context.
    let leaf = unsafe { bpf_skb_cgroup_id(skb) };
    let found = match policy::binding(leaf) {
        Some(slot) => Some(Bound { slot, cgroup: leaf }),
        None => {
            let root_level = config_slot(config::ROOT_LEVEL).min(MAX_ROOT_LEVEL) as i32;
            let mut found = None;
            for step in 0..MAX_CGROUP_WALK as i32 {
                // SAFETY: as above.
                let id = unsafe { bpf_skb_ancestor_cgroup_id(skb, root_level + step) };
                if id == 0 || id == leaf {
                    break;
                }
                if let Some(slot) = policy::binding(id) {
                    found = Some(Bound { slot, cgroup: id });
                }
            }
            found
        }
    }?;
    verdict::policy_flags_of(found.slot)
        .is_some_and(|f| f & policy_flags::INBOUND != 0)
        .then_some(found)
}
