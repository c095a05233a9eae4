//! `cargo xtask lint`: the agent crate's import layers (see `layers`), then
//! rustfmt and clippy on every crate, the eBPF one with the toolchain and
//! target it is built with.

use anyhow::Result;

use crate::cmd;

/// The RUSTFLAGS aya-build passes when it builds the eBPF crate.
pub fn ebpf_rustflags() -> String {
    format!(
        "--cfg=bpf_target_arch=\"{}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf",
        std::env::consts::ARCH
    )
}

pub fn run() -> Result<()> {
    eprintln!("lint: import layers of the agent crate (docs/ARCHITECTURE.md)");
    crate::layers::run()?;
    eprintln!("lint: rustfmt --check");
    cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"]))?;
    eprintln!("lint: clippy (host crates)");
    cmd::run(cmd::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    eprintln!("lint: clippy (eBPF crate, nightly, bpfel-unknown-none)");
    let target_dir = cmd::target_dir().join("ebpf-clippy");
    cmd::run(
        std::process::Command::new("rustup")
            .current_dir(cmd::workspace_root())
            .args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "--package",
                "geowall-ebpf",
                "--bins",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--target-dir",
            ])
            .arg(&target_dir)
            .args(["--", "-D", "warnings"])
            .env("CARGO_ENCODED_RUSTFLAGS", ebpf_rustflags())
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CARGO"),
    )
}
