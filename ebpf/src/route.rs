//! Source routing set on a socket: an IPv6 routing header
//! (`IPV6_RTHDR`, type 4 segment routing is open to unprivileged users)
//! or an IPv4 loose or strict source route (`IP_OPTIONS`). The packet goes
//! to the first hop, an address the connect and sendmsg hooks never see,
//! so each hop is judged under the task's policy when the option is set:
//! one the policy denies, or a route geowall cannot judge hop by hop,
//! refuses the option (`EPERM`) with a record.
//!
//! The per-message forms (ancillary data on `sendmsg`) are refused by the
//! kernel itself where it is built without Mobile IPv6 (and IPv4 source
//! routes need `CAP_NET_RAW` on current kernels): see the README's threat
//! model.

use aya_ebpf::programs::SockoptContext;
use geowall_common::{family, hook, reason};

use crate::{
    dest::Dest,
    verdict::{self, PROCEED},
};

const SOL_IP: i32 = 0;
const IP_OPTIONS: i32 = 4;
const SOL_IPV6: i32 = 41;
const IPV6_2292PKTOPTIONS: i32 = 6;
const IPV6_RTHDR: i32 = 57;
/// Hops judged at most per route (more: the route is refused).
const MAX_HOPS: usize = 8;

/// `cgroup/setsockopt`.
#[inline(always)]
pub fn judge_setsockopt(ctx: &SockoptContext) -> i32 {
    // SAFETY: the kernel hands a valid `bpf_sockopt`; the verifier checks
    // each field access.
    let (level, optname) = unsafe { ((*ctx.sockopt).level, (*ctx.sockopt).optname) };
    match (level, optname) {
        // Judged on the kernel's copy of the value, which the kernel then
        // uses (a value re-read from the caller's memory could have changed
        // since).
        (SOL_IPV6, IPV6_RTHDR) => match verdict::task_slot() {
            Some(policy) => routing_header(ctx, policy),
            None => pass_through(ctx),
        },
        (SOL_IPV6, IPV6_2292PKTOPTIONS) => whole(ctx, family::INET6),
        (SOL_IP, IP_OPTIONS) => ip_options(ctx),
        _ => pass_through(ctx),
    }
}

/// An option geowall does not judge: `optlen = 0` tells the kernel to use
/// the caller's value as it is, rather than allocating a buffer for the
/// copy it showed the program (a third of a TCP connect's cost in the
/// bench: every `SO_LINGER`, `TCP_NODELAY`… of a governed job).
#[inline(always)]
fn pass_through(ctx: &SockoptContext) -> i32 {
    // SAFETY: `optlen` of a setsockopt context is writable; 0 is within
    // the bounds the kernel accepts (0 ..= the caller's length, or -1).
    unsafe { (*ctx.sockopt).optlen = 0 };
    PROCEED
}

/// The option's bytes: start and end (the kernel shows at most a page).
#[inline(always)]
fn optval(ctx: &SockoptContext) -> (*const u8, *const u8) {
    // SAFETY: as in `judge_setsockopt`.
    unsafe {
        let s = &*ctx.sockopt;
        (
            s.__bindgen_anon_2.optval.cast_const().cast(),
            s.__bindgen_anon_3.optval_end.cast_const().cast(),
        )
    }
}

/// `IPV6_RTHDR`: a routing header (`ipv6_rt_hdr`: next header, length in
/// 8-byte units after the first 8, type, segments left, 4 bytes of the
/// type's own) whose addresses (16 bytes each, from byte 8: type 0 and 2
/// hops, type 4 segments) are judged in turn. An empty value removes the
/// option.
#[inline(always)]
fn routing_header(ctx: &SockoptContext, policy: u64) -> i32 {
    let (start, end) = optval(ctx);
    // SAFETY: checked against the end before every read.
    let hdrlen = unsafe {
        if start.add(8) > end {
            return PROCEED;
        }
        *start.add(1)
    };
    let hops = usize::from(hdrlen / 2);
    if hops > MAX_HOPS {
        return refuse(ctx, family::INET6, reason::SOURCE_ROUTE);
    }
    for i in 0..MAX_HOPS {
        if i >= hops {
            break;
        }
        // SAFETY: as above.
        let at = unsafe { start.add(8 + 16 * i) };
        if at.wrapping_add(16) > end {
            break;
        }
        let mut addr = [0u8; 16];
        // SAFETY: the 16 bytes at `at` are within the option (checked).
        unsafe { core::ptr::copy_nonoverlapping(at, addr.as_mut_ptr(), 16) };
        let dest = Dest {
            addr,
            port: 0,
            proto: 0,
            family: family::INET6,
            v4: false,
            flags: 0,
            sock_type: 0,
        };
        let denied = verdict::hop_decision(policy, &dest);
        if denied != 0 {
            return verdict::refuse_hop(&dest, hook::SETSOCKOPT, denied);
        }
    }
    PROCEED
}

/// `IP_OPTIONS`: any option set (an empty value clears them) is refused.
/// A source route among them would send the packet to its first hop, and
/// walking options in the kernel program costs more than the options are
/// worth: ordinary programs set none (`ping -R` and the like use raw or ping
/// sockets, which policies govern on their own).
#[inline(always)]
fn ip_options(ctx: &SockoptContext) -> i32 {
    let (start, end) = optval(ctx);
    if start.wrapping_add(1) > end {
        return PROCEED;
    }
    whole(ctx, family::INET)
}

/// An option refused whole, for `why`.
#[inline(always)]
fn whole(ctx: &SockoptContext, fam: u8) -> i32 {
    refuse(ctx, fam, reason::SOURCE_ROUTE)
}

#[inline(always)]
fn refuse(_ctx: &SockoptContext, fam: u8, why: u8) -> i32 {
    let dest = Dest {
        addr: [0; 16],
        port: 0,
        proto: 0,
        family: fam,
        v4: fam == family::INET,
        flags: 0,
        sock_type: 0,
    };
    verdict::refuse_task(&dest, hook::SETSOCKOPT, why)
}
