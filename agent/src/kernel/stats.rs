//! Run-time statistics of programs (`BPF_ENABLE_STATS`), through aya: while
//! statistics are on, the kernel counts each program's runs and the time
//! they took (`cargo xtask bench` reports the time per run).
//!
//! # Minimum kernel version
//!
//! 5.8 (`BPF_ENABLE_STATS`).

use std::{os::fd::OwnedFd, path::Path, time::Duration};

use aya::{
    programs::ProgramInfo,
    sys::{Stats, enable_stats},
};

use super::KernelError;

/// Statistics stay on for every program until this is dropped.
#[derive(Debug)]
pub struct RunTimeStats(
    #[expect(
        dead_code,
        reason = "held for its Drop: closing the fd ends the statistics"
    )]
    OwnedFd,
);

/// Turns on run-time statistics for every program.
pub fn enable_run_time_stats() -> Result<RunTimeStats, KernelError> {
    enable_stats(Stats::RunTime)
        .map(RunTimeStats)
        .map_err(|e| KernelError::Sys {
            what: "enabling run-time statistics (BPF_ENABLE_STATS)".into(),
            source: e.io_error,
        })
}

/// A program's id, and its runs and their total time while statistics were
/// on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProgramStats {
    pub id: u32,
    pub run_time: Duration,
    pub run_count: u64,
}

impl From<&ProgramInfo> for ProgramStats {
    fn from(info: &ProgramInfo) -> Self {
        ProgramStats {
            id: info.id(),
            run_time: info.run_time(),
            run_count: info.run_count(),
        }
    }
}

/// The statistics of the program pinned at `path`.
pub fn pinned_program_stats(path: &Path) -> Result<ProgramStats, KernelError> {
    ProgramInfo::from_pin(path)
        .map(|info| ProgramStats::from(&info))
        .map_err(|source| KernelError::PinnedProgram {
            path: path.to_path_buf(),
            source,
        })
}
