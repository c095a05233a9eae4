//! The seccomp filter a `geowall exec` job runs under (it cannot remove
//! it, and its children inherit it). It closes what no cgroup program
//! sees:
//!
//! - `pidfd_getfd(2)`: a socket taken from a process outside the governed
//!   subtree would be judged under that process's cgroup;
//! - `socket(2)` of a family other than UNIX, IPv4, IPv6, netlink, packet
//!   and `AF_ALG`: geowall's programs run for IPv4 and IPv6 sockets only,
//!   and families such as vsock (to the hypervisor host), TIPC, RDS, SMC,
//!   Bluetooth or CAN carry data off the host unjudged. Packet sockets
//!   need `CAP_NET_RAW`, which the job does not get; netlink and `AF_ALG`
//!   stay on this host;
//! - `io_uring_setup(2)`: io_uring's socket operation creates sockets with
//!   no `socket(2)` call this filter could see (programs that use io_uring
//!   fall back to plain system calls when it is refused, as they must
//!   under most container runtimes' profiles).
//!
//! Each is answered with `EPERM`. A 32-bit process's `socketcall(2)` keeps
//! its arguments in memory a filter cannot read: on x86-64, an i386
//! program can still create a socket of any family that way (stated in the
//! README's threat model).

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
const ERRNO: u32 = 0x0005_0000;
const EPERM: u32 = ERRNO | libc::EPERM as u32;

/// The same number on every architecture (the unified table from 424 on).
const NR_IO_URING_SETUP: u32 = 425;
const NR_PIDFD_GETFD: u32 = 438;

#[cfg(target_arch = "x86_64")]
mod arch {
    pub(super) const NATIVE: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    pub(super) const NATIVE_SOCKET: u32 = 41;
    /// x32 system calls: the native architecture with bit 30 set.
    pub(super) const X32_BIT: u32 = 0x4000_0000;
    pub(super) const COMPAT: u32 = 0x4000_0003; // AUDIT_ARCH_I386
    pub(super) const COMPAT_SOCKET: u32 = 359;
}

#[cfg(target_arch = "aarch64")]
mod arch {
    pub(super) const NATIVE: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
    pub(super) const NATIVE_SOCKET: u32 = 198;
    /// No x32 here: or-ing 0 repeats the native number.
    pub(super) const X32_BIT: u32 = 0;
    pub(super) const COMPAT: u32 = 0x4000_0028; // AUDIT_ARCH_ARM
    pub(super) const COMPAT_SOCKET: u32 = 281;
}

/// The families a job may create sockets of.
const FAMILIES: [u32; 6] = [
    libc::AF_UNIX as u32,
    libc::AF_INET as u32,
    libc::AF_INET6 as u32,
    libc::AF_NETLINK as u32,
    libc::AF_PACKET as u32,
    libc::AF_ALG as u32,
];

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Jump offsets count the instructions skipped after the jump. The
/// family check starts at index 15, its allow at 22, the refusal at 23.
const FAMILY: usize = 15;
const FAMILY_ALLOW: usize = FAMILY + 1 + FAMILIES.len();
const REFUSE: usize = FAMILY_ALLOW + 1;

/// The offset from the instruction at `at` to `to`.
const fn to(at: usize, to: usize) -> u8 {
    (to - at - 1) as u8
}

/// The filter program.
const FILTER: [libc::sock_filter; REFUSE + 1] = [
    // 0–1: the architecture: native, compat (else allowed: the kernel
    // runs no other).
    insn(LD_W_ABS, 0, 0, ARCH),
    insn(JEQ_K, 0, to(1, 9), arch::NATIVE),
    // 2–8: native (and x32) system calls.
    insn(LD_W_ABS, 0, 0, NR),
    insn(JEQ_K, to(3, FAMILY), 0, arch::NATIVE_SOCKET),
    insn(JEQ_K, to(4, FAMILY), 0, arch::NATIVE_SOCKET | arch::X32_BIT),
    insn(JEQ_K, to(5, REFUSE), 0, NR_PIDFD_GETFD),
    insn(JEQ_K, to(6, REFUSE), 0, NR_PIDFD_GETFD | arch::X32_BIT),
    insn(JEQ_K, to(7, REFUSE), 0, NR_IO_URING_SETUP),
    insn(
        JEQ_K,
        to(8, REFUSE),
        to(8, FAMILY_ALLOW),
        NR_IO_URING_SETUP | arch::X32_BIT,
    ),
    // 9–14: compat (32-bit) system calls.
    insn(JEQ_K, 0, to(9, FAMILY_ALLOW), arch::COMPAT),
    insn(LD_W_ABS, 0, 0, NR),
    insn(JEQ_K, to(11, FAMILY), 0, arch::COMPAT_SOCKET),
    insn(JEQ_K, to(12, REFUSE), 0, NR_PIDFD_GETFD),
    insn(JEQ_K, to(13, REFUSE), 0, NR_IO_URING_SETUP),
    insn(RET_K, 0, 0, ALLOW),
    // 15–21: socket(2)'s family against the list.
    insn(LD_W_ABS, 0, 0, ARG0),
    insn(JEQ_K, to(16, FAMILY_ALLOW), 0, FAMILIES[0]),
    insn(JEQ_K, to(17, FAMILY_ALLOW), 0, FAMILIES[1]),
    insn(JEQ_K, to(18, FAMILY_ALLOW), 0, FAMILIES[2]),
    insn(JEQ_K, to(19, FAMILY_ALLOW), 0, FAMILIES[3]),
    insn(JEQ_K, to(20, FAMILY_ALLOW), 0, FAMILIES[4]),
    insn(JEQ_K, to(21, FAMILY_ALLOW), to(21, REFUSE), FAMILIES[5]),
    // 22: allowed; 23: refused.
    insn(RET_K, 0, 0, ALLOW),
    insn(RET_K, 0, 0, EPERM),
];

/// Installs [`FILTER`] for this process and everything it runs. Root
/// installs it as it is; anyone else must first give up gaining privileges
/// (`no_new_privs`: set-user-ID programs no longer elevate).
/// Async-signal-safe; false if it could not be installed.
pub(super) fn install() -> bool {
    let prog = libc::sock_fprog {
        len: FILTER.len() as u16,
        filter: FILTER.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with a valid filter program that outlives the call (a
    // constant); the kernel copies it.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the filter on (arch, nr, first argument) as the kernel would
    /// (only the instructions it uses).
    fn run(arch: u32, nr: u32, arg0: u32) -> u32 {
        let mut pc = 0usize;
        let mut acc = 0u32;
        loop {
            let i = FILTER[pc];
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
        let (native, compat) = (arch::NATIVE, arch::COMPAT);
        for fam in FAMILIES {
            assert_eq!(run(native, arch::NATIVE_SOCKET, fam), ALLOW, "family {fam}");
            assert_eq!(run(compat, arch::COMPAT_SOCKET, fam), ALLOW, "family {fam}");
        }
        for fam in [0, 40, 30, 21, 43, 31, 29, 44, 45, 46, 255] {
            assert_eq!(run(native, arch::NATIVE_SOCKET, fam), EPERM, "family {fam}");
            assert_eq!(run(compat, arch::COMPAT_SOCKET, fam), EPERM, "family {fam}");
            if arch::X32_BIT != 0 {
                let x32 = arch::NATIVE_SOCKET | arch::X32_BIT;
                assert_eq!(run(native, x32, fam), EPERM, "x32 family {fam}");
            }
        }
        for nr in [NR_PIDFD_GETFD, NR_IO_URING_SETUP] {
            assert_eq!(run(native, nr, 0), EPERM);
            assert_eq!(run(native, nr | arch::X32_BIT, 0), EPERM);
            assert_eq!(run(compat, nr, 0), EPERM);
        }
        // Everything else passes, whatever its first argument; so does
        // the native number of socket(2) under the compat architecture
        // (another call there).
        for nr in [0, 1, 42, 44, 102, 280, 424, 426, 437, 439] {
            for arg0 in [0, 40] {
                assert_eq!(run(native, nr, arg0), ALLOW, "native {nr}");
                assert_eq!(run(compat, nr, arg0), ALLOW, "compat {nr}");
            }
        }
        assert_eq!(run(0x1234, arch::NATIVE_SOCKET, 40), ALLOW);
    }
}
