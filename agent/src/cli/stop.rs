//! `geowall stop`: end enforcement deliberately.

use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use geowall::{
    config::Config,
    control::{
        Client, ClientError,
        proto::{GetStatus, Shutdown},
    },
    kernel::Pins,
};

/// Whether process `pid` still runs (a zombie has let go of everything).
fn alive(pid: u32) -> bool {
    geowall::host::proc::stat(pid)
        .and_then(|fields| fields.into_iter().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// What ending enforcement found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// A running agent was asked to stop; it detached and removed its pins.
    Agent,
    /// No agent ran; this many pins were left, now detached and removed.
    Pins(usize),
    /// No agent, no pins.
    Nothing,
}

/// Ends the enforcement `config` describes: asks its agent to stop and
/// detach (waiting for it to exit), then detaches every pinned link and
/// removes every pin that is left. `geowall stop` and `geowall uninstall`
/// both end enforcement this way.
pub(super) fn end_enforcement(config: &Config) -> Result<Ended> {
    let socket = config.socket_path();
    let pins = Pins::new(config.bpffs_path());

    let mut stopped_agent = false;
    match Client::connect(&socket) {
        Ok(mut client) => {
            let pid = client.call(GetStatus {})?.pid;
            client.call(Shutdown { detach: true })?;
            // The agent detaches before it exits: wait for the process.
            let deadline = Instant::now() + Duration::from_secs(30);
            while alive(pid) {
                if Instant::now() > deadline {
                    bail!("the agent (pid {pid}) has not exited 30 s after it was asked to stop");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            stopped_agent = true;
        }
        Err(ClientError::NotRunning(_) | ClientError::Stale(_)) => {
            let _ = std::fs::remove_file(&socket);
        }
        Err(e) => return Err(e.into()),
    }
    let removed = pins
        .remove_all()
        .with_context(|| format!("cannot remove the pins under {}", pins.root().display()))?;
    Ok(match (stopped_agent, removed) {
        (true, _) => Ended::Agent,
        (false, 0) => Ended::Nothing,
        (false, n) => Ended::Pins(n),
    })
}

pub(super) fn stop(path: &Path) -> Result<ExitCode> {
    let config = Config::load(path)?;
    let pins = Pins::new(config.bpffs_path());
    match end_enforcement(&config)? {
        Ended::Agent => println!(
            "geowall: stopped the agent; programs detached, pins under {} removed",
            pins.root().display()
        ),
        Ended::Nothing => println!(
            "geowall: nothing to stop: no agent running and no pins under {}",
            pins.root().display()
        ),
        Ended::Pins(n) => println!(
            "geowall: no agent was running; detached its programs and removed {n} pins under {}",
            pins.root().display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
