//! Reading the hook contexts: destination address, port, protocol.

use aya_ebpf::programs::{LsmContext, SockAddrContext, SockContext};
use geowall_common::{DNS_PORT, event_flags, family, hook, policy_flags};

use crate::{
    dest::Dest,
    dns,
    verdict::{self, PROCEED, REFUSE, SockKey},
};

/// `user_family` of a send that carries no address.
const AF_UNSPEC: u32 = 0;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const SOCK_RAW: u32 = 3;
const IPPROTO_ICMP: u32 = 1;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
const IPPROTO_ICMPV6: u32 = 58;
const IPPROTO_MPTCP: u32 = 262;

/// `user_ip6[2]` of an IPv4-mapped address (`::ffff:a.b.c.d`) as loaded from
/// memory: bytes `00 00 ff ff`.
const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

#[inline(always)]
fn port_of(user_port: u32) -> u16 {
    // `user_port` holds the network-order port in its low 16 bits.
    u16::from_be(user_port as u16)
}

/// The address bytes of four network-order words as loaded from the
/// context, built as two 8-byte words: filling a byte array would call a
/// byte-at-a-time `memset` on every datagram, and 4-byte stores read back
/// as 8-byte words would stall the load on every lookup of the key.
#[inline(always)]
fn addr_of_words(w: [u32; 4]) -> [u8; 16] {
    let lo = u64::from(w[0]) | (u64::from(w[1]) << 32);
    let hi = u64::from(w[2]) | (u64::from(w[3]) << 32);
    // SAFETY: both types are 16 plain bytes; every bit pattern is valid.
    // The words are in memory order for the little-endian BPF target.
    unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([lo, hi]) }
}

/// `connect4` / `sendmsg4`.
#[inline(always)]
pub fn judge_addr4(ctx: &SockAddrContext, hook: u8) -> i32 {
    // SAFETY: the kernel hands a valid `bpf_sock_addr`; the verifier checks
    // each field access for this attach type.
    let (family, mut ip, mut port, proto) = unsafe {
        let sa = &*ctx.sock_addr;
        (sa.user_family, sa.user_ip4, sa.user_port, sa.protocol)
    };
    if family == AF_UNSPEC {
        // A connected socket's send with control messages runs the hook
        // with no address: its peer is the destination.
        // SAFETY: `sk` of a `sock_addr` context is the hook's full socket;
        // its fields are readable.
        // Volatile loads keep each field's offset in its load: the
        // verifier forbids arithmetic on a socket pointer.
        unsafe {
            let sk = (*ctx.sock_addr).__bindgen_anon_1.sk;
            ip = (&raw const (*sk).dst_ip4).read_volatile();
            port = u32::from((&raw const (*sk).dst_port).read_volatile());
        }
    }
    let dest = Dest {
        addr: addr_of_words([ip, 0, 0, 0]),
        port: port_of(port),
        proto: proto as u8,
        family: family::INET,
        v4: true,
        flags: 0,
        sock_type: 0,
    };
    let out = judge_sock_addr(ctx, &dest, hook);
    if out & dns::REDIRECT != 0 {
        dns::rewrite4(ctx, out as u32);
        return PROCEED;
    }
    answer(out)
}

/// What a destination of connect4/6 or sendmsg4/6 gets: an answer, or
/// (a governed job's allowed DNS query) [`dns::REDIRECT`] with the agent's
/// forwarder port to rewrite it to.
#[inline(always)]
fn judge_sock_addr(ctx: &SockAddrContext, dest: &Dest, hook: u8) -> u64 {
    if dns::to_forwarder(ctx, dest) {
        return PROCEED as u64;
    }
    let ret = verdict::judge(ctx, dest, hook, cache_key(hook));
    if ret == PROCEED && dest.port == DNS_PORT {
        return dns::redirect(ctx, dest, hook);
    }
    ret as u64
}

/// The hook's answer from [`judge_sock_addr`]'s: 0 or 1, as the verifier
/// must see it.
#[inline(always)]
fn answer(out: u64) -> i32 {
    if out as u32 == REFUSE as u32 {
        REFUSE
    } else {
        PROCEED
    }
}

#[inline(always)]
fn cache_key(hook: u8) -> SockKey {
    if hook == hook::SENDMSG4 || hook == hook::SENDMSG6 {
        SockKey::Cookie
    } else {
        SockKey::Cgroup
    }
}

/// `connect6` / `sendmsg6`. An IPv4-mapped destination is judged as IPv4:
/// otherwise a dual-stack socket would walk around the policy.
#[inline(always)]
pub fn judge_addr6(ctx: &SockAddrContext, hook: u8) -> i32 {
    // SAFETY: as in `judge_addr4`; `user_ip6` allows 4-byte loads.
    let (family, mut w, mut port, proto) = unsafe {
        let sa = &*ctx.sock_addr;
        (
            sa.user_family,
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
    if family == AF_UNSPEC {
        // As in `judge_addr4`: the connected peer.
        // SAFETY: as in `judge_addr4`.
        unsafe {
            let sk = (*ctx.sock_addr).__bindgen_anon_1.sk;
            let ip6 = (&raw const (*sk).dst_ip6).cast::<u32>();
            w = [
                ip6.read_volatile(),
                ip6.add(1).read_volatile(),
                ip6.add(2).read_volatile(),
                ip6.add(3).read_volatile(),
            ];
            port = u32::from((&raw const (*sk).dst_port).read_volatile());
        }
    }
    let mapped = w[0] == 0 && w[1] == 0 && w[2] == V4_MAPPED_WORD;
    let words = if mapped { [w[3], 0, 0, 0] } else { w };
    let addr = addr_of_words(words);
    let dest = Dest {
        addr,
        port: port_of(port),
        proto: proto as u8,
        family: family::INET6,
        v4: mapped,
        flags: if mapped { event_flags::V4_MAPPED } else { 0 },
        sock_type: 0,
    };
    let out = judge_sock_addr(ctx, &dest, hook);
    if out & dns::REDIRECT != 0 {
        dns::rewrite6(ctx, out as u32);
        return PROCEED;
    }
    answer(out)
}

/// `sock_create` (inet sockets): a confined workload may open only the
/// sockets whose every path the address hooks judge — TCP (and MPTCP,
/// whose subflows connect as TCP) and UDP — plus raw and ping sockets when
/// its policy allows them (they bypass the hooks). Anything else is refused
/// at creation: UDP-Lite (its connect runs no hook), SCTP, and every
/// protocol geowall does not know. Allowed sockets cost nothing more: the
/// kernel itself records the creator's cgroup in them (see
/// [`crate::sockcg`]).
#[inline(always)]
pub fn judge_create(ctx: &SockContext) -> i32 {
    // SAFETY: the kernel hands a valid `bpf_sock`; family, type and protocol
    // are readable at socket creation.
    let (fam, ty, proto) = unsafe {
        let sk = &*ctx.sock;
        (sk.family, sk.type_, sk.protocol)
    };
    // Packet sockets never reach this hook: `judge_post_create` covers them.
    let allow_flag = match (ty, proto) {
        (SOCK_STREAM, IPPROTO_TCP | IPPROTO_MPTCP) | (SOCK_DGRAM, IPPROTO_UDP) => return PROCEED,
        (SOCK_RAW, _) => policy_flags::ALLOW_RAW_SOCKETS,
        (SOCK_DGRAM, IPPROTO_ICMP | IPPROTO_ICMPV6) => policy_flags::ALLOW_PING,
        // No policy allows what the hooks cannot judge.
        _ => 0,
    };
    verdict::judge_socket(
        ctx.sock.cast(),
        fam as u8,
        ((ty as u16 & 0xff) << 8) | (proto as u16 & 0xff),
        hook::SOCK_CREATE,
        allow_flag,
    )
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
