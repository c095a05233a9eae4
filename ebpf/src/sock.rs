//! Reading the hook contexts: destination address, port, protocol.

use aya_ebpf::{
    bindings::BPF_SK_STORAGE_GET_F_CREATE,
    helpers::generated::{bpf_get_current_cgroup_id, bpf_sk_storage_get},
    programs::{LsmContext, SockAddrContext, SockContext},
};
use geowall_common::{
    SockState, VerdictCache, config, counter, event_flags, family, hook, policy_flags,
};

use crate::{
    events,
    maps::{GW_SOCKS, config_slot},
    verdict::{self, Dest, PROCEED},
};

const SOCK_DGRAM: u32 = 2;
const SOCK_RAW: u32 = 3;
const IPPROTO_ICMP: u32 = 1;
const IPPROTO_ICMPV6: u32 = 58;

/// `user_ip6[2]` of an IPv4-mapped address (`::ffff:a.b.c.d`) as loaded from
/// memory: bytes `00 00 ff ff`.
const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

#[inline(always)]
fn port_of(user_port: u32) -> u16 {
    // `user_port` holds the network-order port in its low 16 bits.
    u16::from_be(user_port as u16)
}

/// `connect4` / `sendmsg4`.
#[inline(always)]
pub fn judge_addr4(ctx: &SockAddrContext, hook: u8) -> i32 {
    // SAFETY: the kernel hands a valid `bpf_sock_addr`; the verifier checks
    // each field access for this attach type.
    let (ip, port, proto) = unsafe {
        let sa = &*ctx.sock_addr;
        (sa.user_ip4, sa.user_port, sa.protocol)
    };
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&ip.to_ne_bytes());
    let dest = Dest {
        addr,
        port: port_of(port),
        proto: proto as u8,
        family: family::INET,
        v4: true,
        flags: 0,
    };
    judge_sock_addr(ctx, &dest, hook)
}

#[inline(always)]
fn judge_sock_addr(ctx: &SockAddrContext, dest: &Dest, hook: u8) -> i32 {
    // SAFETY: `sk` of the hook's context is a full socket; the value pointer
    // is valid for the program's run.
    let state = unsafe { GW_SOCKS.get_ptr_mut(ctx) };
    if state.is_null() {
        // Created before the agent, or by a task nothing governs.
        return verdict::judge(ctx.sock_addr.cast(), dest, hook, None).ret;
    }
    // SAFETY: non-null storage pointer of the map's value type.
    let owner = unsafe { core::ptr::read_volatile(&raw const (*state).owner_slot) };
    if hook == hook::SENDMSG4 || hook == hook::SENDMSG6 {
        // SAFETY: as above; the cache lives as long as the socket.
        return judge_datagram(ctx, dest, hook, owner, unsafe { &raw mut (*state).cache });
    }
    verdict::judge(ctx.sock_addr.cast(), dest, hook, Some(owner)).ret
}

/// An unconnected datagram: every `sendto` runs the hook, so a socket
/// remembers the last destination it was allowed to send to (see
/// [`VerdictCache`]) and repeats skip the lookups.
#[inline(always)]
fn judge_datagram(
    ctx: &SockAddrContext,
    dest: &Dest,
    hook: u8,
    owner: u32,
    cache: *mut VerdictCache,
) -> i32 {
    // Read before the verdict's own lookups: a binding or table change that
    // lands in between leaves an entry under the old key, never the other
    // way round.
    let epoch = config_slot(config::EPOCH);
    let bindings_gen = config_slot(config::BINDINGS_GEN);
    // SAFETY: a helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let v4 = u8::from(dest.v4);
    // SAFETY: `cache` points into the socket's storage (see above).
    if let Some(slot) = unsafe { cached(cache, dest, v4, epoch, bindings_gen, cgroup_id) } {
        events::count(slot, counter::ALLOWED);
        return PROCEED;
    }
    let judged = verdict::judge(ctx.sock_addr.cast(), dest, hook, Some(owner));
    if let Some(slot) = judged.cacheable {
        let tag = VerdictCache::tag_of(
            &dest.addr,
            epoch,
            bindings_gen,
            cgroup_id,
            dest.port,
            v4,
            slot,
        );
        let entry = VerdictCache {
            addr: dest.addr,
            epoch,
            bindings_gen,
            cgroup_id,
            port: dest.port,
            v4,
            _pad: 0,
            slot,
            tag: 0,
        };
        // SAFETY: as above. The tag goes last: a reader racing this write
        // sees a tag that does not match a half-written entry.
        unsafe {
            core::ptr::write_volatile(&raw mut (*cache).tag, 0);
            core::ptr::write_volatile(cache, entry);
            core::ptr::write_volatile(&raw mut (*cache).tag, tag);
        }
    }
    judged.ret
}

/// The slot of a cached allow for exactly this key, if the cache holds one.
///
/// # Safety
/// `cache` points at a live [`VerdictCache`].
#[inline(always)]
unsafe fn cached(
    cache: *const VerdictCache,
    dest: &Dest,
    v4: u8,
    epoch: u64,
    bindings_gen: u64,
    cgroup_id: u64,
) -> Option<u32> {
    // SAFETY: the caller's promise.
    let entry = unsafe { core::ptr::read_volatile(cache) };
    if entry.tag == 0
        || entry.epoch != epoch
        || entry.bindings_gen != bindings_gen
        || entry.cgroup_id != cgroup_id
        || entry.port != dest.port
        || entry.v4 != v4
        || entry.addr != dest.addr
    {
        return None;
    }
    let want = VerdictCache::tag_of(
        &dest.addr,
        epoch,
        bindings_gen,
        cgroup_id,
        dest.port,
        v4,
        entry.slot,
    );
    (entry.tag == want).then_some(entry.slot)
}

/// `connect6` / `sendmsg6`. An IPv4-mapped destination is judged as IPv4:
/// otherwise a dual-stack socket would walk around the policy.
#[inline(always)]
pub fn judge_addr6(ctx: &SockAddrContext, hook: u8) -> i32 {
    // SAFETY: as in `judge_addr4`; `user_ip6` allows 4-byte loads.
    let (w, port, proto) = unsafe {
        let sa = &*ctx.sock_addr;
        (
            [
                sa.user_ip6[0],
                sa.user_ip6[1],
                sa.user_ip6[2],
                sa.user_ip6[3],
            ],
            sa.user_port,
            sa.protocol,
        )
    };
    let mut addr = [0u8; 16];
    let mapped = w[0] == 0 && w[1] == 0 && w[2] == V4_MAPPED_WORD;
    if mapped {
        addr[..4].copy_from_slice(&w[3].to_ne_bytes());
    } else {
        for (i, word) in w.iter().enumerate() {
            addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
    }
    let dest = Dest {
        addr,
        port: port_of(port),
        proto: proto as u8,
        family: family::INET6,
        v4: mapped,
        flags: if mapped { event_flags::V4_MAPPED } else { 0 },
    };
    judge_sock_addr(ctx, &dest, hook)
}

/// `sock_create` (inet sockets): raw and ping sockets would bypass the
/// address hooks, so a confined workload may not open them unless its
/// policy allows it; every other socket of a governed task remembers the
/// policy it was created under.
#[inline(always)]
pub fn judge_create(ctx: &SockContext) -> i32 {
    // SAFETY: the kernel hands a valid `bpf_sock`; family, type and protocol
    // are readable at socket creation.
    let (fam, ty, proto) = unsafe {
        let sk = &*ctx.sock;
        (sk.family, sk.type_, sk.protocol)
    };
    // Packet sockets never reach this hook: `judge_post_create` covers them.
    let bypass = if ty == SOCK_RAW {
        Some(policy_flags::ALLOW_RAW_SOCKETS)
    } else if ty == SOCK_DGRAM && (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
        Some(policy_flags::ALLOW_PING)
    } else {
        None
    };
    if let Some(allow_flag) = bypass {
        return verdict::judge_socket(
            ctx.sock.cast(),
            fam as u8,
            proto as u8,
            hook::SOCK_CREATE,
            allow_flag,
        );
    }
    remember_owner(ctx);
    PROCEED
}

/// Stores the creating task's policy slot with the socket. Without storage
/// (memory pressure) the socket is judged by its callers' policies only.
#[inline(always)]
fn remember_owner(ctx: &SockContext) {
    let Some(slot) = verdict::current_slot() else {
        return;
    };
    let mut init = SockState {
        owner_slot: slot,
        _pad: 0,
        cache: VerdictCache::default(),
    };
    let map = core::ptr::from_ref(&GW_SOCKS).cast_mut().cast();
    // SAFETY: the hook's own socket and an initial value on the stack; the
    // helper copies the value into the new storage.
    // The storage is created holding `init`; a null answer (no memory)
    // leaves the socket without an owner slot.
    unsafe {
        bpf_sk_storage_get(
            map,
            ctx.sock.cast(),
            core::ptr::from_mut(&mut init).cast(),
            BPF_SK_STORAGE_GET_F_CREATE.into(),
        )
    };
}

/// LSM `socket_post_create(sock, family, type, protocol, kern)`: packet and
/// XDP sockets send frames of their own making past every address hook.
#[inline(always)]
pub fn judge_post_create(ctx: &LsmContext) -> i32 {
    let fam: i32 = ctx.arg(1);
    let kern: i32 = ctx.arg(4);
    if kern != 0 || !(fam == i32::from(family::PACKET) || fam == i32::from(family::XDP)) {
        return PROCEED;
    }
    verdict::judge_socket(
        core::ptr::null_mut(),
        fam as u8,
        0,
        hook::SOCK_POST_CREATE,
        policy_flags::ALLOW_RAW_SOCKETS,
    )
}
