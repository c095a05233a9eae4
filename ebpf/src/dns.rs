//! DNS through the agent. A governed job's query to a resolver on port 53
//! (UDP or TCP, IPv4 or IPv6) is judged like any destination; allowed, it is
//! redirected to the agent's forwarder, which asks the resolver the job
//! addressed and learns the answer for the job before passing it on. The
//! reply's source (recvmsg) and a connected socket's peer (getpeername) are
//! translated back, so the job sees the resolver it asked.
//!
//! The forwarder listens on `127.0.0.x` (config) and `::1`, on
//! [`DNS_SLOTS`] ports from `[dns] port`: a socket asking several
//! resolvers (musl asks them all at once, from one socket) gets one port
//! per resolver, so each reply goes back under its own resolver's address.
//! Per socket and port, [`GW_DNSSOCK`] holds the resolver and who asked,
//! written here before the query leaves: the forwarder finds the socket by
//! the query's source address (sock_diag) and reads the entry by its
//! cookie.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{
            bpf_get_current_comm, bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_getsockopt,
            bpf_ktime_get_boot_ns,
        },
    },
    programs::SockAddrContext,
};
use geowall_common::{DNS_SLOTS, DnsSock, DnsSockKey, config, dns_config, policy_flags, reason};

use crate::{
    dest::Dest,
    events::Governed,
    maps::{GW_DNSSOCK, GW_DNSTMP, config_slot},
    verdict::{self, PROCEED},
};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const SOL_SOCKET: i32 = 1;
const SO_REUSEADDR: i32 = 2;
const SO_REUSEPORT: i32 = 15;

/// `::1` as `user_ip6` holds it: four network-order words.
const LOOPBACK6: [u32; 4] = [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])];
/// `user_ip6[2]` of an IPv4-mapped address.
const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// Whether redirection is on, and where the forwarder listens.
#[inline(always)]
fn forwarder() -> Option<u16> {
    let cfg = config_slot(config::DNS);
    if cfg & dns_config::ON == 0 {
        return None;
    }
    Some((cfg & dns_config::PORT_MASK) as u16)
}

/// The forwarder's slot for `port`, if it is one of its ports.
#[inline(always)]
fn slot_of(port: u16, base: u16) -> Option<u32> {
    let slot = u32::from(port.wrapping_sub(base));
    (slot < u32::from(DNS_SLOTS)).then_some(slot)
}

/// `::1` as bytes.
const LOOPBACK6_BYTES: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// Whether `dest` is the forwarder and this socket's query was redirected
/// there through that port: a dual-stack socket connected to an
/// IPv4-mapped resolver runs sendmsg4 on every send, with the forwarder as
/// the destination. Out of line: a few compares on every call, the lookup
/// only for the forwarder's own ports.
#[inline(never)]
pub fn to_forwarder(ctx: &SockAddrContext, dest: &Dest) -> bool {
    let Some(base) = forwarder() else {
        return false;
    };
    let Some(slot) = slot_of(dest.port, base) else {
        return false;
    };
    let addr = dest.addr;
    let ours = if dest.v4 {
        u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]])
            == config_slot(config::DNS_ADDR4) as u32
    } else {
        addr == LOOPBACK6_BYTES
    };
    if !ours {
        return false;
    }
    // SAFETY: the hook's own context, valid for the helper.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    GW_DNSSOCK
        .get_ptr(DnsSockKey {
            cookie,
            slot,
            _pad: 0,
        })
        .is_some()
}

/// What [`redirect`] answers: the hook's answer (0 or 1), or
/// [`REDIRECT`] | the forwarder port (network order, as `user_port` holds
/// it) to rewrite the destination to. The rewrite itself is the hook's:
/// connect4 and connect6 may write different fields of their context. A
/// plain number: an enum would come back through the caller's stack,
/// which the verdict path has no room for.
pub const REDIRECT: u64 = 1 << 32;

#[inline(always)]
fn answer(ret: i32) -> u64 {
    u64::from(ret != 0)
}

/// An allowed query to a resolver (port 53) from a governed job whose
/// policy sends its DNS through the agent: records the resolver and the job
/// for the socket and answers the forwarder port to rewrite the destination
/// to. A query from another network namespace is refused here instead (the
/// redirect would land in that namespace's own loopback). A UDP socket that
/// may share its port (`SO_REUSEADDR`/`SO_REUSEPORT`: dig sets it) is
/// marked so: the forwarder then makes sure no other job's socket shares
/// it. Out of line: it runs only for port 53.
#[inline(never)]
pub fn redirect(ctx: &SockAddrContext, dest: &Dest, hook: u8) -> u64 {
    let Some(base) = forwarder() else {
        return answer(PROCEED);
    };
    if dest.proto != IPPROTO_TCP && dest.proto != IPPROTO_UDP {
        return answer(PROCEED);
    }
    let Some((actor, policy_flags)) = verdict::task_policy() else {
        return answer(PROCEED);
    };
    if policy_flags & policy_flags::DNS == 0 {
        return answer(PROCEED);
    }
    let sock = ctx.sock_addr.cast();
    // SAFETY: the hook's own context, valid for the helper.
    let netns = unsafe { bpf_get_netns_cookie(sock) };
    let why = if netns != config_slot(config::NETNS) {
        reason::DNS_NETNS
    } else {
        let shared = dest.proto == IPPROTO_UDP && shared(ctx);
        // SAFETY: as above.
        let cookie = unsafe { bpf_get_socket_cookie(sock) };
        match remember(cookie, dest, &actor, shared) {
            Some(slot) => return REDIRECT | u64::from((base + slot as u16).to_be()),
            None => reason::DNS_SHARED,
        }
    };
    answer(refuse(
        ctx,
        dest,
        hook,
        &actor,
        policy_flags | u32::from(why) << 24,
    ))
}

/// Records the refusal of a query (the reason in the top byte of
/// `flags_why`, the policy's flags below it: BPF functions take at most
/// five arguments) and answers the hook. Out of line: the record is built
/// in a frame of its own.
#[inline(never)]
fn refuse(ctx: &SockAddrContext, dest: &Dest, hook: u8, actor: &Governed, flags_why: u32) -> i32 {
    verdict::refuse(ctx.sock_addr.cast(), dest, hook, actor, flags_why)
}

/// Writes the socket's entry for its query to `dest` (who asked, and
/// which resolver) and answers its forwarder slot; `None` when the entry
/// cannot be written (the forwarder would drop the query). Out of line,
/// and the entry is built in this CPU's scratch slot: the programs' stack
/// has no room for it beside the verdict path.
#[inline(never)]
fn remember(cookie: u64, dest: &Dest, actor: &Governed, shared: bool) -> Option<u32> {
    let slot = pick_slot(cookie, dest);
    let e = GW_DNSTMP.get_ptr_mut(0)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: a per-CPU value pointer, valid for the program's run; only
    // this CPU writes it, and every field is written.
    let e = unsafe { &mut *e };
    e.addr = dest.addr;
    e.port = dest.port;
    e.proto = dest.proto;
    e.v4 = u8::from(dest.v4);
    e.family = dest.family;
    e.shared = u8::from(shared);
    e.policy = actor.slot as u16;
    e.cgroup_id = actor.cgroup_id;
    e.scope = actor.scope;
    e.epoch = actor.epoch;
    // SAFETY: a helper without arguments.
    e.time_ns = unsafe { bpf_ktime_get_boot_ns() };
    e.pid = pid_tgid as u32;
    e.tgid = (pid_tgid >> 32) as u32;
    e.uid = uid_gid as u32;
    e.gid = (uid_gid >> 32) as u32;
    // SAFETY: the buffer is the entry's own 16 bytes.
    unsafe { bpf_get_current_comm(e.comm.as_mut_ptr().cast(), 16) };
    let key = DnsSockKey {
        cookie,
        slot,
        _pad: 0,
    };
    // The scratch entry by reference: a copy would put it on the stack.
    let entry: &DnsSock = e;
    GW_DNSSOCK.insert(key, entry, 0).ok()?;
    Some(slot)
}

/// connect4 / sendmsg4: the forwarder's IPv4 address and `port`.
#[inline(always)]
pub fn rewrite4(ctx: &SockAddrContext, port: u32) {
    // SAFETY: the verifier checks each store for this attach type; both are
    // 4-byte stores.
    unsafe {
        let sa = ctx.sock_addr;
        (&raw mut (*sa).user_ip4).write_volatile(config_slot(config::DNS_ADDR4) as u32);
        (&raw mut (*sa).user_port).write_volatile(port);
    }
}

/// connect6 / sendmsg6: `::1`, or for an IPv4-mapped resolver the
/// forwarder's IPv4 address mapped, and `port`. Whether the resolver was
/// mapped is read again from the context: a value kept across the verdict
/// would take a slot of the verdict path's frame, which is at the stack's
/// limit.
#[inline(always)]
pub fn rewrite6(ctx: &SockAddrContext, port: u32) {
    // SAFETY: `user_ip6` allows 4-byte loads.
    let mapped = unsafe {
        let sa = &*ctx.sock_addr;
        sa.user_ip6[0] == 0 && sa.user_ip6[1] == 0 && sa.user_ip6[2] == V4_MAPPED_WORD
    };
    let words = if mapped {
        [0, 0, V4_MAPPED_WORD, config_slot(config::DNS_ADDR4) as u32]
    } else {
        LOOPBACK6
    };
    write6(ctx, words, port);
}

/// Writes `user_ip6` and `user_port` with 4-byte stores (the verifier
/// refuses wider ones at some offsets).
#[inline(always)]
fn write6(ctx: &SockAddrContext, words: [u32; 4], port: u32) {
    // SAFETY: the verifier checks each store for this attach type.
    unsafe {
        let sa = ctx.sock_addr;
        let ip = (&raw mut (*sa).user_ip6).cast::<u32>();
        ip.write_volatile(words[0]);
        ip.add(1).write_volatile(words[1]);
        ip.add(2).write_volatile(words[2]);
        ip.add(3).write_volatile(words[3]);
        (&raw mut (*sa).user_port).write_volatile(port);
    }
}

/// Whether the socket may share its port with others.
#[inline(always)]
fn shared(ctx: &SockAddrContext) -> bool {
    let sock = ctx.sock_addr.cast();
    let mut on: i32 = 0;
    for opt in [SO_REUSEADDR, SO_REUSEPORT] {
        // SAFETY: `on` is 4 writable bytes; the helper checks the option.
        let rc = unsafe { bpf_getsockopt(sock, SOL_SOCKET, opt, (&raw mut on).cast(), 4) };
        if rc != 0 || on != 0 {
            return true;
        }
    }
    false
}

/// The forwarder slot for this socket's query to `dest`: the slot it
/// already has for that resolver, else a free one, else (more resolvers
/// than slots, on one socket) one picked by the resolver's address.
#[inline(always)]
fn pick_slot(cookie: u64, dest: &Dest) -> u32 {
    let mut free = u32::MAX;
    for slot in 0..u32::from(DNS_SLOTS) {
        let key = DnsSockKey {
            cookie,
            slot,
            _pad: 0,
        };
        match GW_DNSSOCK.get_ptr(key) {
            // SAFETY: a value pointer from the lookup, valid for the
            // program's run.
            Some(e) => {
                let e = unsafe { &*e };
                if e.addr == dest.addr && e.port == dest.port && e.v4 == u8::from(dest.v4) {
                    return slot;
                }
            }
            None => {
                if free == u32::MAX {
                    free = slot;
                }
            }
        }
    }
    if free != u32::MAX {
        return free;
    }
    u32::from(dest.addr[15] ^ dest.addr[3]) % u32::from(DNS_SLOTS)
}

/// recvmsg4 and getpeername4: a reply from (or a peer that is) the
/// forwarder shows the resolver the job asked. Two compares for anything
/// else: these run for every UDP receive that asks for the source.
#[inline(always)]
pub fn reply4(ctx: &SockAddrContext) {
    let Some(base) = forwarder() else {
        return;
    };
    // SAFETY: the verifier checks each field access for this attach type.
    let (ip, port) = unsafe { ((*ctx.sock_addr).user_ip4, (*ctx.sock_addr).user_port) };
    let Some(slot) = slot_of(u16::from_be(port as u16), base) else {
        return;
    };
    if ip != config_slot(config::DNS_ADDR4) as u32 {
        return;
    }
    let Some(entry) = lookup(ctx, slot) else {
        return;
    };
    if entry.v4 == 0 {
        return;
    }
    // SAFETY: as above; 4-byte stores.
    unsafe {
        let sa = &mut *ctx.sock_addr;
        sa.user_ip4 =
            u32::from_ne_bytes([entry.addr[0], entry.addr[1], entry.addr[2], entry.addr[3]]);
        sa.user_port = u32::from(entry.port.to_be());
    }
}

/// recvmsg6 and getpeername6: as [`reply4`], for `::1` and, on a
/// dual-stack socket, the forwarder's IPv4-mapped address.
#[inline(always)]
pub fn reply6(ctx: &SockAddrContext) {
    let Some(base) = forwarder() else {
        return;
    };
    // SAFETY: as in `reply4`.
    let (w, port) = unsafe {
        let sa = &*ctx.sock_addr;
        (
            [
                sa.user_ip6[0],
                sa.user_ip6[1],
                sa.user_ip6[2],
                sa.user_ip6[3],
            ],
            sa.user_port,
        )
    };
    let Some(slot) = slot_of(u16::from_be(port as u16), base) else {
        return;
    };
    let mapped = w[0] == 0
        && w[1] == 0
        && w[2] == V4_MAPPED_WORD
        && w[3] == config_slot(config::DNS_ADDR4) as u32;
    if !mapped && w != LOOPBACK6 {
        return;
    }
    let Some(entry) = lookup(ctx, slot) else {
        return;
    };
    let a = entry.addr;
    let words = if entry.v4 != 0 {
        [
            0,
            0,
            V4_MAPPED_WORD,
            u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        ]
    } else {
        [
            u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
            u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
            u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
            u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
        ]
    };
    write6(ctx, words, u32::from(entry.port.to_be()));
}

/// This socket's entry for forwarder slot `slot`, copied out.
#[inline(always)]
fn lookup(ctx: &SockAddrContext, slot: u32) -> Option<DnsSock> {
    // SAFETY: the hook's own context, valid for the helper.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let key = DnsSockKey {
        cookie,
        slot,
        _pad: 0,
    };
    let entry = GW_DNSSOCK.get_ptr(key)?;
    // SAFETY: a value pointer from the lookup, valid for the program's run.
    Some(unsafe { core::ptr::read(entry) })
}
