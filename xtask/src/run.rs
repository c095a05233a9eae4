//! `cargo xtask run`: the demo. The agent runs in the foreground on the
//! shipped config: host-wide, audit mode only (it blocks nothing), flow
//! records printed as they arrive. Ctrl-C stops it and it detaches
//! everything; if it dies some other way, `geowall stop` cleans up after it.

use std::{path::PathBuf, process::Command};

use anyhow::{Result, bail};

use crate::cmd;

pub fn run(config: Option<PathBuf>) -> Result<()> {
    if !cmd::is_root() {
        bail!(
            "the demo attaches eBPF programs, which needs root (CAP_BPF, CAP_NET_ADMIN, \
             CAP_SYS_ADMIN): run `sudo -E cargo xtask run`"
        );
    }
    cmd::build_agent(false)?;
    let config = config.unwrap_or_else(|| cmd::workspace_root().join("config/demo.toml"));
    let geowall = cmd::agent_binary(false);
    eprintln!(
        "xtask: running the agent on {} (audit only, detached on exit); Ctrl-C stops it",
        config.display()
    );
    // The terminal's Ctrl-C reaches the agent (same process group); this
    // process only waits for it, then makes sure nothing stays attached.
    // SAFETY: ignoring SIGINT in this process is always sound.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let status = Command::new(&geowall)
        .args(["run", "--audit-only", "--detach-on-exit", "--config"])
        .arg(&config)
        .status()?;
    let cleanup = Command::new(&geowall)
        .args(["stop", "--config"])
        .arg(&config)
        .status()?;
    if !cleanup.success() {
        bail!("`geowall stop` failed: programs may still be attached (see above)");
    }
    if !status.success() && status.code() != Some(130) {
        bail!("the agent exited with {status}");
    }
    Ok(())
}
