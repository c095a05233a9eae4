//! geowall's kernel programs.
//!
//! Attached to the governed cgroup (multi-attach, so other tools keep theirs):
//! - `gw_connect4`, `gw_connect6`: TCP connect (TCP Fast Open's `sendto`
//!   included) and connected UDP;
//! - `gw_sendmsg4`, `gw_sendmsg6`: unconnected UDP;
//! - `gw_recvmsg4`, `gw_recvmsg6`, `gw_getpeer4`, `gw_getpeer6`: a DNS
//!   reply redirected through the agent's forwarder shows the resolver the
//!   job asked (see `dns`);
//! - `gw_setsockopt`: an IPv6 routing header or IPv4 source route is judged
//!   hop by hop (see `route`);
//! - `gw_ingress`: a connection to a governed listener is judged by the
//!   peer's address (see `inbound`);
//! - `gw_sock_create`: refuses raw IPv4/IPv6 sockets to confined workloads;
//! - `gw_sock_post` (LSM, per cgroup): refuses packet and XDP sockets, which
//!   the `sock_create` hook never sees (it runs for inet sockets only).
//!
//! A refusal returns 0 and the caller sees `EPERM`.
#![no_std]
#![no_main]

mod cache;
mod dest;
mod dns;
mod embedded;
mod events;
mod inbound;
mod maps;
mod policy;
mod route;
mod sock;
mod sockcg;
mod verdict;

use aya_ebpf::{
    macros::{cgroup_skb, cgroup_sock, cgroup_sock_addr, cgroup_sockopt, lsm_cgroup},
    programs::{LsmContext, SkBuffContext, SockAddrContext, SockContext, SockoptContext},
};
use geowall_common::hook;

#[cgroup_sock_addr(connect4)]
pub fn gw_connect4(ctx: SockAddrContext) -> i32 {
    sock::judge_addr4(&ctx, hook::CONNECT4)
}

#[cgroup_sock_addr(connect6)]
pub fn gw_connect6(ctx: SockAddrContext) -> i32 {
    sock::judge_addr6(&ctx, hook::CONNECT6)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn gw_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock::judge_addr4(&ctx, hook::SENDMSG4)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn gw_sendmsg6(ctx: SockAddrContext) -> i32 {
    sock::judge_addr6(&ctx, hook::SENDMSG6)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn gw_recvmsg4(ctx: SockAddrContext) -> i32 {
    dns::reply4(&ctx);
    // recvmsg and getpeername programs cannot refuse: 1 is their only
    // answer.
    1
}

#[cgroup_sock_addr(recvmsg6)]
pub fn gw_recvmsg6(ctx: SockAddrContext) -> i32 {
    dns::reply6(&ctx);
    1
}

#[cgroup_sock_addr(getpeername4)]
pub fn gw_getpeer4(ctx: SockAddrContext) -> i32 {
    dns::reply4(&ctx);
    1
}

#[cgroup_sock_addr(getpeername6)]
pub fn gw_getpeer6(ctx: SockAddrContext) -> i32 {
    dns::reply6(&ctx);
    1
}

#[cgroup_sockopt(setsockopt)]
pub fn gw_setsockopt(ctx: SockoptContext) -> i32 {
    route::judge_setsockopt(&ctx)
}

#[cgroup_skb(ingress)]
pub fn gw_ingress(ctx: SkBuffContext) -> i32 {
    inbound::judge_ingress(&ctx)
}

#[cgroup_sock(sock_create)]
pub fn gw_sock_create(ctx: SockContext) -> i32 {
    sock::judge_create(&ctx)
}

#[lsm_cgroup(hook = "socket_post_create")]
pub fn gw_sock_post(ctx: LsmContext) -> i32 {
    sock::judge_post_create(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach this: there is no panic
    // at run time.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
