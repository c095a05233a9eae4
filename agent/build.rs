//! Builds the kernel programs (the `geowall-ebpf` crate) for the BPF target
//! with the nightly toolchain, so `src/kernel/programs.rs` can embed the
//! object.
//!
//! Doing this here rather than in an xtask step means every plain `cargo
//! build`, `cargo test` or `cargo clippy` of the agent embeds the current
//! programs: there is no way to run a binary with stale kernel code.

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    // `geowall_common::VERSION`: the programs must be rebuilt with it.
    println!("cargo:rerun-if-env-changed=GEOWALL_VERSION");
    list_shipped_policies(Path::new(&manifest_dir))?;
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

/// Writes `$OUT_DIR/shipped_policies.rs`: `SHIPPED_POLICIES`, every
/// `policies/*.toml` of the repository as (file name, contents), embedded
/// with `include_str!` so that `geowall install` and the .deb ship whatever
/// policies the repository has. No folder: an empty list. (The folder is
/// watched only once it exists: cargo reruns a build script on every build
/// while a watched path is missing.)
fn list_shipped_policies(manifest_dir: &Path) -> anyhow::Result<()> {
    let dir = manifest_dir.join("../policies");
    if dir.is_dir() {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                files.push(std::fs::canonicalize(&path)?);
            }
        }
    }
    files.sort();
    let mut out = String::from("pub(crate) const SHIPPED_POLICIES: &[(&str, &str)] = &[\n");
    for path in &files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow::anyhow!("{}: not a UTF-8 name", path.display()))?;
        out.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    out.push_str("];\n");
    let out_dir = std::env::var("OUT_DIR")?;
    std::fs::write(Path::new(&out_dir).join("shipped_policies.rs"), out)?;
    Ok(())
}
