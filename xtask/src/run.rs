//! `cargo xtask run`: the demo. The agent runs in the foreground on the
//! shipped config: host-wide, audit mode only (it blocks nothing), flow
//! records printed as they arrive, one compact line each (as `geowall log
//! tail` shows them). Ctrl-C stops it and it detaches everything; if it
//! dies some other way, `geowall stop` cleans up after it.
//!
//! Audit only, always: the agent runs with `--audit-only`, which refuses to
//! start (and refuses a reload) when any policy of the config enforces, so
//! not even a `--config` of one's own can make the demo block traffic on
//! the host's root cgroup.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

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
    // The config's `audit_log = "-"` writes the records (JSON lines) to the
    // agent's standard output; `geowall log tail -` shows each as the one
    // compact line `geowall log tail` prints. It inherits this process's
    // ignored SIGINT, so it ends when the agent's output does, after the
    // last record.
    let mut agent = Command::new(&geowall)
        .args(["run", "--audit-only", "--detach-on-exit", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .spawn()?;
    let records = agent.stdout.take().expect("piped");
    let viewer = Command::new(&geowall)
        .args(["log", "tail", "-"])
        .stdin(records)
        .spawn();
    let status = agent.wait()?;
    match viewer {
        Ok(mut v) => {
            let _ = v.wait();
        }
        Err(e) => eprintln!("xtask: cannot show the records (`geowall log tail -`): {e}"),
    }
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
