//! `geowall stop`: end enforcement deliberately.

use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use crate::{
    config::Config,
    control::{Client, ClientError, Request},
    kernel::Pins,
};

/// Whether process `pid` still runs (a zombie has let go of everything).
fn alive(pid: u32) -> bool {
    crate::util::proc_stat(pid)
        .and_then(|fields| fields.into_iter().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

pub fn stop(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return super::fail(e),
    };
    let socket = config.socket_path();
    let pins = Pins::new(config.bpffs_path());

    let mut stopped_agent = false;
    match Client::connect(&socket) {
        Ok(mut client) => {
            let pid = match client
                .call(Request::Status)
                .map(|v| v["pid"].as_u64().unwrap_or(0) as u32)
            {
                Ok(pid) => pid,
                Err(e) => return super::fail(e),
            };
            if let Err(e) = client.call(Request::Shutdown { detach: true }) {
                return super::fail(e);
            }
            // The agent detaches before it exits: wait for the process.
            let deadline = Instant::now() + Duration::from_secs(30);
            while alive(pid) {
                if Instant::now() > deadline {
                    return super::fail(format!(
                        "the agent (pid {pid}) has not exited 30 s after it was asked to stop"
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            stopped_agent = true;
        }
        Err(ClientError::NotRunning(_) | ClientError::Stale(_)) => {
            let _ = std::fs::remove_file(&socket);
        }
        Err(e) => return super::fail(e),
    }
    let removed = match pins.remove_all() {
        Ok(n) => n,
        Err(e) => {
            return super::fail(format!(
                "cannot remove the pins under {}: {e}",
                pins.root().display()
            ));
        }
    };
    match (stopped_agent, removed) {
        (true, _) => println!(
            "geowall: stopped the agent; programs detached, pins under {} removed",
            pins.root().display()
        ),
        (false, 0) => println!(
            "geowall: nothing to stop: no agent running and no pins under {}",
            pins.root().display()
        ),
        (false, n) => println!(
            "geowall: no agent was running; detached its programs and removed {n} pins under {}",
            pins.root().display()
        ),
    }
    ExitCode::SUCCESS
}
