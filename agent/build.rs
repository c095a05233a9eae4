//! Builds the kernel programs (the `geowall-ebpf` crate) for the BPF target
//! with the nightly toolchain, so `src/kernel/mod.rs` can embed the object.
//!
//! Doing this here rather than in an xtask step means every plain `cargo
//! build`, `cargo test` or `cargo clippy` of the agent embeds the current
//! programs: there is no way to run a binary with stale kernel code.

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("the eBPF crate's path is not UTF-8"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "geowall-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .map_err(|err| {
        anyhow::anyhow!(
            "{err:#}\n\nbuilding geowall's kernel programs failed: run `cargo xtask setup` \
             (nightly rust-src and a bpf-linker built against nightly's LLVM)"
        )
    })
}
