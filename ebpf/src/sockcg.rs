//! A socket's own cgroup: the one its creator ran in. The kernel records it
//! in the socket at creation (`sk->sk_cgrp_data.cgroup`) and runs the
//! programs of that cgroup for the socket; it stays with the socket when the
//! socket is passed to another process or its creator moves.
//!
//! Read at offsets the agent takes from the running kernel's BTF
//! ([`KernelOffsets`], a constant to the verifier): a TCP socket through the
//! typed pointer `bpf_skc_to_tcp_sock` gives (plain loads the verifier
//! checks), any other with `bpf_probe_read_kernel`. Nothing is allocated
//! per socket. With `enabled == 0` (no BTF for these
//! structs, or a kernel locked down against reading its memory) the
//! verifier drops every read and a socket's cgroup is unknown.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, generated::bpf_skc_to_tcp_sock},
    programs::SockAddrContext,
};
use geowall_common::{KernelOffsets, MAX_CGROUP_WALK, NO_SOCK_CGROUP};

use crate::policy;

/// Set by the agent at load time.
#[unsafe(no_mangle)]
static GW_KOFFSETS: KernelOffsets = KernelOffsets::NONE;

#[inline(always)]
fn offsets() -> KernelOffsets {
    // SAFETY: a static; the volatile read keeps the compiler from folding
    // the placeholder value in (the loader replaces it).
    unsafe { core::ptr::read_volatile(&raw const GW_KOFFSETS) }
}

/// A socket's cgroup: its `struct cgroup` address and id; both 0 when
/// unknown (a plain value, not an `Option`: see [`slot`]).
#[derive(Clone, Copy)]
pub struct SockCgroup {
    cgroup: u64,
    pub id: u64,
}

impl SockCgroup {
    pub const UNKNOWN: Self = Self { cgroup: 0, id: 0 };

    #[inline(always)]
    pub fn known(&self) -> bool {
        self.id != NO_SOCK_CGROUP
    }
}

/// Reads a `T` at kernel address `addr`; `None` for a null address or a
/// failed read.
#[inline(always)]
fn read<T>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    // SAFETY: the helper checks the address and fails instead of faulting.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// The id of the cgroup at kernel address `cgroup`.
#[inline(always)]
fn cgroup_id(off: &KernelOffsets, cgroup: u64) -> Option<u64> {
    let kn: u64 = read(cgroup.wrapping_add(u64::from(off.cgroup_kn)))?;
    read(kn.wrapping_add(u64::from(off.kn_id)))
}

/// The cgroup of the socket of a `sock_addr` hook ([`SockCgroup::UNKNOWN`]
/// when it cannot be read).
#[inline(always)]
pub fn of(ctx: &SockAddrContext) -> SockCgroup {
    let mut cgroup = 0;
    let id = read_into(ctx, &mut cgroup);
    SockCgroup { cgroup, id }
}

/// The socket's cgroup id (0: unknown); its address goes to `cgroup`. Out
/// of line, so that the reads' scratch space is not on the verdict path's
/// frame.
#[inline(never)]
fn read_into(ctx: &SockAddrContext, cgroup: &mut u64) -> u64 {
    match read_of(ctx) {
        Some(cg) => {
            *cgroup = cg.cgroup;
            cg.id
        }
        None => NO_SOCK_CGROUP,
    }
}

#[inline(always)]
fn read_of(ctx: &SockAddrContext) -> Option<SockCgroup> {
    let off = offsets();
    if off.enabled == 0 {
        return None;
    }
    // SAFETY: `sk` of a `sock_addr` context is the hook's full socket.
    let sk = unsafe { (*ctx.sock_addr).__bindgen_anon_1.sk };
    // A TCP socket comes as a BTF-typed pointer: plain loads, each checked
    // by the verifier against the kernel's BTF at offsets it knows.
    // SAFETY: the helper takes the hook's socket and answers null for
    // anything but TCP.
    let tcp = unsafe { bpf_skc_to_tcp_sock(sk.cast()) };
    if !tcp.is_null() {
        return typed(tcp.cast::<u8>().cast_const(), &off);
    }
    // The verifier allows no arithmetic on a socket pointer; read its value
    // back from the stack as a plain number (privileged programs may).
    let slot = sk as u64;
    let sk: u64 = read(core::ptr::from_ref(&slot) as u64)?;
    let cgroup: u64 = read(sk.wrapping_add(u64::from(off.sock_cgroup)))?;
    let id = cgroup_id(&off, cgroup)?;
    Some(SockCgroup { cgroup, id })
}

/// The cgroup of the socket at BTF-typed pointer `sk` (a `struct sock` at
/// its start).
#[inline(always)]
fn typed(sk: *const u8, off: &KernelOffsets) -> Option<SockCgroup> {
    // SAFETY: typed pointers: the verifier checks each offset against the
    // kernel's BTF and turns each load into one that reads 0 instead of
    // faulting.
    unsafe {
        let cgroup: *const u8 = load(sk, off.sock_cgroup);
        if cgroup.is_null() {
            return None;
        }
        let kn: *const u8 = load(cgroup, off.cgroup_kn);
        if kn.is_null() {
            return None;
        }
        let id: u64 = load(kn, off.kn_id);
        Some(SockCgroup {
            cgroup: cgroup as u64,
            id,
        })
    }
}

/// The `T` at `offset` bytes into the struct at typed pointer `base`.
///
/// # Safety
/// `base` is a BTF-typed pointer and `offset` a field's offset from the
/// kernel's BTF, so that the verifier checks the load.
#[inline(always)]
unsafe fn load<T>(base: *const u8, offset: u32) -> T {
    // SAFETY: as the caller promises.
    unsafe { base.add(offset as usize).cast::<T>().read_volatile() }
}

/// The policy slot of the socket's cgroup: its own binding, else its
/// nearest bound ancestor's, at most [`MAX_CGROUP_WALK`] levels up and
/// never above the governed root (level `root_level`); [`NO_SLOT`] when
/// none is bound.
///
/// A plain number, not an `Option`: the compiler may leave an `Option`'s
/// payload undefined on a path that ends the loop, and reading an undefined
/// register is what the verifier refuses. Out of line, as [`read_into`].
#[inline(never)]
pub fn slot(cg: SockCgroup, root_level: u64) -> u32 {
    if let Some(slot) = policy::binding(cg.id) {
        return slot;
    }
    let off = offsets();
    let mut cgroup = cg.cgroup;
    for _ in 0..MAX_CGROUP_WALK {
        match parent_slot(&off, cgroup, root_level) {
            Step::Bound(slot) => return slot,
            Step::Up(parent) => cgroup = parent,
            Step::Stop => break,
        }
    }
    NO_SLOT
}

/// No policy slot.
pub const NO_SLOT: u32 = u32::MAX;

enum Step {
    Bound(u32),
    Up(u64),
    Stop,
}

/// One level up from `cgroup`: its parent's binding, or the parent to go on
/// from.
#[inline(always)]
fn parent_slot(off: &KernelOffsets, cgroup: u64, root_level: u64) -> Step {
    let Some(level) = read::<i32>(cgroup.wrapping_add(u64::from(off.cgroup_level))) else {
        return Step::Stop;
    };
    if i64::from(level) <= root_level as i64 {
        return Step::Stop;
    }
    let Some(parent_css) = read::<u64>(cgroup.wrapping_add(u64::from(off.cgroup_parent))) else {
        return Step::Stop;
    };
    if parent_css == 0 {
        return Step::Stop;
    }
    let parent = parent_css.wrapping_sub(u64::from(off.cgroup_self));
    match cgroup_id(off, parent).and_then(policy::binding) {
        Some(slot) => Step::Bound(slot),
        None => Step::Up(parent),
    }
}
