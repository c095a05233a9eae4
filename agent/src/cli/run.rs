//! `geowall run`.

use std::{path::Path, process::ExitCode};

use crate::daemon::{self, RunOptions};

pub fn run(config: &Path, detach_on_exit: bool, audit_only: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return super::fail(format!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(daemon::run(RunOptions {
        config: config.to_path_buf(),
        detach_on_exit,
        audit_only,
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(super::chain(&e)),
    }
}
