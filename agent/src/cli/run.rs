//! `geowall run`.

use std::{path::Path, process::ExitCode};

use anyhow::{Context, Result};
use geowall::daemon::{self, RunOptions};

pub(super) fn run(config: &Path, detach_on_exit: bool, audit_only: bool) -> Result<ExitCode> {
    // Map compiles allocate and free hundreds of MB in bursts from several
    // threads; with one malloc arena per thread the freed memory would stay
    // with the process. Two arenas, trimmed after each compile, keep the
    // agent's resident memory close to what it holds.
    // Large blocks (tries' worth of prefixes) are mapped and unmapped
    // directly; a fixed threshold also stops glibc from raising it.
    // SAFETY: mallopt before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(daemon::run(RunOptions {
        config: config.to_path_buf(),
        detach_on_exit,
        audit_only,
    }))?;
    Ok(ExitCode::SUCCESS)
}
