//! geowall's kernel programs: the object embedded at build time, the
//! programs in it, and loading and attaching them one by one.

use std::{
    fs::File,
    os::fd::{AsFd, OwnedFd},
};

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr,
        CgroupSockopt, links::FdLink,
    },
};
use geowall_common::names;

use super::{KernelError, sys, sys_err};

/// The compiled kernel programs, embedded at build time (see build.rs).
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/geowall-ebpf"));

/// The programs, in the order they are attached: those that translate
/// DNS replies back before those that redirect queries, so no reply of a
/// redirected query is ever seen untranslated.
pub const PROGRAMS: [&str; 12] = [
    names::PROG_SOCK_CREATE,
    names::PROG_SOCK_POST,
    names::PROG_SETSOCKOPT,
    names::PROG_INGRESS,
    names::PROG_RECVMSG4,
    names::PROG_RECVMSG6,
    names::PROG_GETPEERNAME4,
    names::PROG_GETPEERNAME6,
    names::PROG_CONNECT4,
    names::PROG_CONNECT6,
    names::PROG_SENDMSG4,
    names::PROG_SENDMSG6,
];

/// Programs the kernel may refuse to load without geowall giving up: BPF
/// LSM programs need `lsm=...,bpf` and a kernel that allows the program
/// type (some sandboxed kernels do not).
pub(crate) const OPTIONAL: [&str; 1] = [names::PROG_SOCK_POST];

/// The LSM hook of the LSM program.
const LSM_HOOK: &str = "socket_post_create";

pub(crate) fn load_program(
    ebpf: &mut Ebpf,
    name: &'static str,
    btf: &aya::Btf,
) -> Result<(), KernelError> {
    let prog = ebpf.program_mut(name).ok_or(KernelError::Program {
        name,
        source: aya::programs::ProgramError::NotLoaded,
    })?;
    let result = match prog {
        aya::programs::Program::CgroupSockAddr(p) => p.load(),
        aya::programs::Program::CgroupSock(p) => p.load(),
        aya::programs::Program::CgroupSockopt(p) => p.load(),
        aya::programs::Program::CgroupSkb(p) => p.load(),
        aya::programs::Program::LsmCgroup(p) => p.load(LSM_HOOK, btf),
        _ => Err(aya::programs::ProgramError::UnexpectedProgramType),
    };
    result.map_err(|source| KernelError::Program { name, source })
}

pub(crate) fn program_fd(ebpf: &Ebpf, name: &'static str) -> Result<OwnedFd, KernelError> {
    let prog = ebpf.program(name).ok_or(KernelError::Program {
        name,
        source: aya::programs::ProgramError::NotLoaded,
    })?;
    let fd = prog
        .fd()
        .map_err(|source| KernelError::Program { name, source })?;
    fd.as_fd()
        .try_clone_to_owned()
        .map_err(sys_err(format!("duplicating program fd of {name}")))
}

/// Creates a cgroup link. Link attachments are always multi-attach (the
/// kernel rejects the BPF_F_ALLOW_MULTI flag on link creation and implies
/// it): other tools' programs on the same cgroup keep running.
/// A new link: aya's, or one created directly (to pin by path).
pub(crate) enum Attached {
    Link(FdLink),
    Raw(OwnedFd),
}

pub(crate) fn attach_program(
    ebpf: &mut Ebpf,
    name: &'static str,
    cgroup: &File,
) -> Result<Attached, KernelError> {
    let err = |source| KernelError::Program { name, source };
    let prog = ebpf.program_mut(name).ok_or(KernelError::Program {
        name,
        source: aya::programs::ProgramError::NotLoaded,
    })?;
    match prog {
        aya::programs::Program::CgroupSockAddr(p) => {
            let p: &mut CgroupSockAddr = p;
            let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(err)?;
            let link = p.take_link(id).map_err(err)?;
            FdLink::try_from(link)
                .map(Attached::Link)
                .map_err(link_err(name))
        }
        aya::programs::Program::CgroupSock(p) => {
            let p: &mut CgroupSock = p;
            let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(err)?;
            let link = p.take_link(id).map_err(err)?;
            FdLink::try_from(link)
                .map(Attached::Link)
                .map_err(link_err(name))
        }
        aya::programs::Program::CgroupSockopt(p) => {
            // aya 0.14 gives no owned link for a sockopt program: the
            // link is created directly.
            let p: &mut CgroupSockopt = p;
            let prog = p.fd().map_err(err)?;
            let fd = sys::link_create(prog.as_fd(), cgroup.as_fd(), sys::ATTACH_CGROUP_SETSOCKOPT)
                .map_err(sys_err(format!("attaching {name}")))?;
            Ok(Attached::Raw(fd))
        }
        aya::programs::Program::CgroupSkb(p) => {
            let p: &mut CgroupSkb = p;
            let id = p
                .attach(
                    cgroup,
                    CgroupSkbAttachType::Ingress,
                    CgroupAttachMode::Single,
                )
                .map_err(err)?;
            let link = p.take_link(id).map_err(err)?;
            FdLink::try_from(link)
                .map(Attached::Link)
                .map_err(link_err(name))
        }
        aya::programs::Program::LsmCgroup(p) => {
            let id = p.attach(cgroup).map_err(err)?;
            let link = p.take_link(id).map_err(err)?;
            Ok(Attached::Link(FdLink::from(link)))
        }
        _ => Err(err(aya::programs::ProgramError::UnexpectedProgramType)),
    }
}

fn link_err(name: &'static str) -> impl Fn(aya::programs::links::LinkError) -> KernelError {
    move |source| KernelError::Link { name, source }
}
