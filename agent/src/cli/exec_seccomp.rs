//! The seccomp filter a `geowall exec` job runs under (it cannot remove
//! it, and its children inherit it). It closes what no cgroup program
//! sees:
//!
//! - `pidfd_getfd(2)`: a socket taken from a process outside the governed
//!   subtree would be judged under that process's cgroup;
//! - `socket(2)` and `socketpair(2)` of a family other than UNIX, IPv4,
//!   IPv6, netlink, packet and `AF_ALG`: geowall's programs run for IPv4
//!   and IPv6 sockets only, and families such as vsock (to the hypervisor
//!   host), TIPC, RDS, SMC, Bluetooth or CAN carry data off the host
//!   unjudged. Packet sockets need `CAP_NET_RAW`, which the job lacks
//!   unless its policy allows raw sockets or only audits; netlink and
//!   `AF_ALG` stay on this host;
//! - the same calls made through the 32-bit `socketcall(2)` (from an i386
//!   program, or from any program through `int 0x80`): its arguments are
//!   in memory a filter cannot read, so creating a socket that way is
//!   refused whatever the family;
//! - io_uring (`io_uring_setup`, `io_uring_enter`, `io_uring_register`):
//!   its socket operation creates sockets with no system call this filter
//!   could see (programs that use io_uring fall back to plain system calls
//!   when it is refused, as they must under most container runtimes'
//!   profiles).
//!
//! Each is answered with `EPERM` — or, for a job whose policy only audits,
//! allowed and logged by the kernel's audit subsystem (`SECCOMP_RET_LOG`):
//! audit mode blocks nothing.
//!
//! The program is built before the fork (the child only installs it).

/// `struct seccomp_data`: the system call number, the architecture, and
/// the low half of the first argument.
const NR: u32 = 0;
const ARCH: u32 = 4;
#[cfg(target_endian = "little")]
const ARG0: u32 = 16;
#[cfg(target_endian = "big")]
const ARG0: u32 = 20;

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;
const ALLOW: u32 = 0x7fff_0000;
const LOG: u32 = 0x7ffc_0000;
const EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;

/// The same numbers on every architecture (the unified table from 424 on).
const NR_IO_URING: [u32; 3] = [425, 426, 427];
const NR_PIDFD_GETFD: u32 = 438;

/// `socketcall(2)`'s calls that create sockets.
const SYS_SOCKET: u32 = 1;
const SYS_SOCKETPAIR: u32 = 8;

#[cfg(target_arch = "x86_64")]
mod arch {
    pub(super) const NATIVE: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    /// `socket`, `socketpair`.
    pub(super) const NATIVE_CREATE: [u32; 2] = [41, 53];
    /// x32 system calls: the native architecture with bit 30 set.
    pub(super) const X32_BIT: Option<u32> = Some(0x4000_0000);
    pub(super) const COMPAT: u32 = 0x4000_0003; // AUDIT_ARCH_I386
    pub(super) const COMPAT_CREATE: [u32; 2] = [359, 360];
    pub(super) const COMPAT_SOCKETCALL: Option<u32> = Some(102);
}

#[cfg(target_arch = "aarch64")]
mod arch {
    pub(super) const NATIVE: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
    pub(super) const NATIVE_CREATE: [u32; 2] = [198, 199];
    pub(super) const X32_BIT: Option<u32> = None;
    pub(super) const COMPAT: u32 = 0x4000_0028; // AUDIT_ARCH_ARM
    pub(super) const COMPAT_CREATE: [u32; 2] = [281, 288];
    /// EABI has no socketcall.
    pub(super) const COMPAT_SOCKETCALL: Option<u32> = None;
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("geowall exec's seccomp filter knows the system call numbers of x86_64 and aarch64");

/// The families a job may create sockets of.
pub(super) const FAMILIES: [u32; 6] = [
    libc::AF_UNIX as u32,
    libc::AF_INET as u32,
    libc::AF_INET6 as u32,
    libc::AF_NETLINK as u32,
    libc::AF_PACKET as u32,
    libc::AF_ALG as u32,
];

/// Where a jump goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum To {
    Next,
    Compat,
    SocketCall,
    Family,
    Allow,
    Refuse,
}

struct Insn {
    code: u16,
    jt: To,
    jf: To,
    k: u32,
    /// The label of this instruction, if jumps go to it.
    label: Option<To>,
}

fn ld(k: u32) -> Insn {
    Insn {
        code: LD_W_ABS,
        jt: To::Next,
        jf: To::Next,
        k,
        label: None,
    }
}

fn jeq(k: u32, jt: To, jf: To) -> Insn {
    Insn {
        code: JEQ_K,
        jt,
        jf,
        k,
        label: None,
    }
}

fn ret(k: u32) -> Insn {
    Insn {
        code: RET_K,
        jt: To::Next,
        jf: To::Next,
        k,
        label: None,
    }
}

fn labelled(label: To, mut insn: Insn) -> Insn {
    insn.label = Some(label);
    insn
}

/// A native system call number and its x32 twin.
fn native(nr: u32) -> impl Iterator<Item = u32> {
    std::iter::once(nr).chain(arch::X32_BIT.map(|bit| nr | bit))
}

/// The filter program; refusals answer `refuse`.
fn program(refuse: u32) -> Vec<libc::sock_filter> {
    use To::*;
    let mut p = vec![ld(ARCH), jeq(arch::NATIVE, Next, Compat), ld(NR)];
    for nr in arch::NATIVE_CREATE.into_iter().flat_map(native) {
        p.push(jeq(nr, Family, Next));
    }
    for nr in NR_IO_URING
        .into_iter()
        .chain([NR_PIDFD_GETFD])
        .flat_map(native)
    {
        p.push(jeq(nr, Refuse, Next));
    }
    p.push(ret(ALLOW));
    // The architecture is still loaded here.
    p.push(labelled(Compat, jeq(arch::COMPAT, Next, Allow)));
    p.push(ld(NR));
    for nr in arch::COMPAT_CREATE {
        p.push(jeq(nr, Family, Next));
    }
    for nr in NR_IO_URING.into_iter().chain([NR_PIDFD_GETFD]) {
        p.push(jeq(nr, Refuse, Next));
    }
    if let Some(nr) = arch::COMPAT_SOCKETCALL {
        p.push(jeq(nr, SocketCall, Next));
    }
    p.push(ret(ALLOW));
    if arch::COMPAT_SOCKETCALL.is_some() {
        p.push(labelled(SocketCall, ld(ARG0)));
        p.push(jeq(SYS_SOCKET, Refuse, Next));
        p.push(jeq(SYS_SOCKETPAIR, Refuse, Allow));
    }
    p.push(labelled(Family, ld(ARG0)));
    for (i, fam) in FAMILIES.iter().enumerate() {
        let last = i + 1 == FAMILIES.len();
        p.push(jeq(*fam, Allow, if last { Refuse } else { Next }));
    }
    p.push(labelled(Allow, ret(ALLOW)));
    p.push(labelled(Refuse, ret(refuse)));
    resolve(&p)
}

/// Turns labels into the offsets a jump counts (instructions skipped).
fn resolve(p: &[Insn]) -> Vec<libc::sock_filter> {
    let at = |label: To| {
        p.iter()
            .position(|i| i.label == Some(label))
            .expect("every label a jump names is placed")
    };
    p.iter()
        .enumerate()
        .map(|(i, insn)| {
            let off = |to: To| -> u8 {
                if to == To::Next {
                    return 0;
                }
                let target = at(to);
                assert!(target > i, "jumps go forward");
                u8::try_from(target - i - 1).expect("a jump spans at most 255 instructions")
            };
            libc::sock_filter {
                code: insn.code,
                jt: off(insn.jt),
                jf: off(insn.jf),
                k: insn.k,
            }
        })
        .collect()
}

/// Both filters, built before the fork: the child picks one.
pub(super) struct Filters {
    enforce: Vec<libc::sock_filter>,
    audit: Vec<libc::sock_filter>,
}

impl Filters {
    pub(super) fn new() -> Self {
        Filters {
            enforce: program(EPERM),
            audit: program(LOG),
        }
    }

    /// Installs the filter for this process and everything it runs (the
    /// auditing one for a policy that only audits). Root installs it as
    /// it is; anyone else must first give up gaining privileges
    /// (`no_new_privs`: set-user-ID programs no longer elevate).
    /// Async-signal-safe; false if it could not be installed.
    pub(super) fn install(&self, audit: bool) -> bool {
        let filter = if audit { &self.audit } else { &self.enforce };
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: prctl with a valid filter program that outlives the call
        // (the kernel copies it).
        unsafe {
            let install = || {
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                    &raw const prog,
                    0,
                    0,
                ) == 0
            };
            if install() {
                return true;
            }
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && install()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `filter` on (arch, nr, first argument) as the kernel would
    /// (only the instructions it uses).
    fn run(filter: &[libc::sock_filter], arch: u32, nr: u32, arg0: u32) -> u32 {
        let mut pc = 0usize;
        let mut acc = 0u32;
        loop {
            let i = filter[pc];
            match i.code {
                LD_W_ABS => {
                    acc = match i.k {
                        NR => nr,
                        ARCH => arch,
                        ARG0 => arg0,
                        other => panic!("load of offset {other}"),
                    };
                    pc += 1;
                }
                JEQ_K => {
                    pc += 1 + usize::from(if acc == i.k { i.jt } else { i.jf });
                }
                RET_K => return i.k,
                other => panic!("opcode {other:#x} at {pc}"),
            }
        }
    }

    #[test]
    fn the_filter_refuses_what_it_says_and_nothing_else() {
        let f = program(EPERM);
        let (native, compat) = (arch::NATIVE, arch::COMPAT);
        let x32 = |nr: u32| arch::X32_BIT.map(|b| nr | b);
        for create in arch::NATIVE_CREATE.into_iter().chain(arch::COMPAT_CREATE) {
            let a = if arch::NATIVE_CREATE.contains(&create) {
                native
            } else {
                compat
            };
            for fam in FAMILIES {
                assert_eq!(run(&f, a, create, fam), ALLOW, "{create} family {fam}");
            }
            for fam in [0, 40, 30, 21, 43, 31, 29, 44, 45, 46, 255] {
                assert_eq!(run(&f, a, create, fam), EPERM, "{create} family {fam}");
                if let Some(nr) = x32(create).filter(|_| a == native) {
                    assert_eq!(run(&f, native, nr, fam), EPERM, "x32 {create} family {fam}");
                }
            }
        }
        for nr in NR_IO_URING.into_iter().chain([NR_PIDFD_GETFD]) {
            assert_eq!(run(&f, native, nr, 0), EPERM, "{nr}");
            assert_eq!(run(&f, compat, nr, 0), EPERM, "compat {nr}");
            if let Some(nr) = x32(nr) {
                assert_eq!(run(&f, native, nr, 0), EPERM, "x32 {nr}");
            }
        }
        if let Some(socketcall) = arch::COMPAT_SOCKETCALL {
            for call in [SYS_SOCKET, SYS_SOCKETPAIR] {
                assert_eq!(
                    run(&f, compat, socketcall, call),
                    EPERM,
                    "socketcall {call}"
                );
            }
            // connect, send, recv, ... through socketcall pass.
            for call in [2, 3, 9, 11, 12, 17] {
                assert_eq!(
                    run(&f, compat, socketcall, call),
                    ALLOW,
                    "socketcall {call}"
                );
            }
        }
        // Everything else passes, whatever its first argument, and so does
        // any call of an architecture the kernel does not run.
        for nr in [0, 1, 42, 44, 102, 280, 424, 428, 437, 439] {
            for arg0 in [0, 1, 40] {
                if !arch::NATIVE_CREATE.contains(&nr) {
                    assert_eq!(run(&f, native, nr, arg0), ALLOW, "native {nr}");
                }
                if !arch::COMPAT_CREATE.contains(&nr) && arch::COMPAT_SOCKETCALL != Some(nr) {
                    assert_eq!(run(&f, compat, nr, arg0), ALLOW, "compat {nr}");
                }
            }
        }
        assert_eq!(run(&f, 0x1234, arch::NATIVE_CREATE[0], 40), ALLOW);
    }

    #[test]
    fn the_auditing_filter_logs_where_the_other_refuses() {
        let (enforce, audit) = (program(EPERM), program(LOG));
        assert_eq!(enforce.len(), audit.len());
        for (e, a) in enforce.iter().zip(&audit) {
            if e.code == RET_K && e.k == EPERM {
                assert_eq!(a.k, LOG);
            } else {
                assert_eq!((e.code, e.jt, e.jf, e.k), (a.code, a.jt, a.jf, a.k));
            }
        }
        assert_eq!(run(&audit, arch::NATIVE, arch::NATIVE_CREATE[0], 40), LOG);
    }
}
