//! What can go wrong on the kernel side. Each message says what failed;
//! the cause (the system's error, aya's) is the error's `source()`.

use std::{io, path::PathBuf};

use aya::{
    maps::MapError,
    pin::PinError,
    programs::{ProgramError, links::LinkError},
};
use thiserror::Error;

use crate::host::cgroup::CgroupError;

#[derive(Debug, Error)]
pub enum KernelError {
    #[error("bpffs at {path}")]
    Bpffs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("governed cgroup {path}")]
    Governed {
        path: PathBuf,
        #[source]
        source: CgroupError,
    },
    #[error("reading the kernel's BTF (/sys/kernel/btf/vmlinux)")]
    Btf(#[source] aya::BtfError),
    #[error("loading geowall's eBPF object")]
    Load(#[source] aya::EbpfError),
    #[error("program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("pinned program {path}")]
    PinnedProgram {
        path: PathBuf,
        #[source]
        source: ProgramError,
    },
    #[error("link of {name}")]
    Link {
        name: &'static str,
        #[source]
        source: LinkError,
    },
    #[error("{what} {path}")]
    Pin {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Pinning (or reopening a pin) through aya.
    #[error("{what} {path}")]
    Pinning {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: PinError,
    },
    #[error("{what} {path}")]
    ReopenLink {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: LinkError,
    },
    #[error("{what}")]
    Map {
        what: String,
        #[source]
        source: MapError,
    },
    #[error("{what}")]
    Sys {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("map {0} is missing from the object")]
    MissingMap(&'static str),
}

/// A [`KernelError::Sys`] for a failed `what`.
pub(crate) fn sys_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> KernelError {
    let what = what.into();
    move |source| KernelError::Sys { what, source }
}

/// A [`KernelError::Map`] for a failed `what`.
pub(crate) fn map_err(what: impl Into<String>) -> impl FnOnce(MapError) -> KernelError {
    let what = what.into();
    move |source| KernelError::Map { what, source }
}
