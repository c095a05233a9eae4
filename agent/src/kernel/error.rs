//! What can go wrong on the kernel side.

use std::{io, path::PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum KernelError {
    #[error("bpffs at {path}: {source}")]
    Bpffs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("loading geowall's eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("pinned program {path}: {source}")]
    PinnedProgram {
        path: PathBuf,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("{what} {path}: {source}")]
    Pin {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what}: {source}")]
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
