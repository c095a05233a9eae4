//! `cargo xtask setup`: everything building the kernel programs needs, made
//! idempotent.
//!
//! The eBPF crate builds with the `nightly` toolchain for `bpfel-unknown-none`
//! with `-Z build-std=core`, so nightly needs `rust-src`. `bpf-linker` links
//! LLVM bitcode, so it must link the very LLVM that nightly rustc uses: it is
//! built against rustc's own `libLLVM` through a folder that holds links to
//! that library (`LLVM_PREFIX`). The folder's path becomes the linker's
//! run-time library path, so it lives in the user's data folder, not in
//! `target/`, and is named after the library it points at.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::cmd;

/// The bpf-linker release installed (override with `GEOWALL_BPF_LINKER_VERSION`).
const BPF_LINKER_VERSION: &str = "0.13.0";
const TOOLCHAIN: &str = "nightly";

pub fn run() -> Result<()> {
    let rustup = which("rustup").context(
        "rustup is not on PATH: geowall's kernel programs need rustup's nightly toolchain \
         (see https://rustup.rs)",
    )?;
    ensure_nightly(&rustup)?;
    ensure_rust_src(&rustup)?;
    ensure_bpf_linker()?;
    crate::packages::ensure(crate::packages::BUILD, "building the agent")?;
    Ok(())
}

/// What the tests need besides the build: the programs they start (see
/// [`crate::packages::TEST`]).
pub fn test_tools() -> Result<()> {
    crate::packages::ensure(crate::packages::TEST, "the tests")
}

fn ensure_nightly(rustup: &Path) -> Result<()> {
    let list = cmd::output(Command::new(rustup).args(["toolchain", "list"]))?;
    if list.lines().any(|l| l.starts_with("nightly-")) {
        return Ok(());
    }
    eprintln!("setup: installing the nightly toolchain");
    cmd::run(Command::new(rustup).args([
        "toolchain",
        "install",
        TOOLCHAIN,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
    .context("could not install the nightly toolchain")
}

fn ensure_rust_src(rustup: &Path) -> Result<()> {
    let installed = cmd::output(Command::new(rustup).args([
        "component",
        "list",
        "--toolchain",
        TOOLCHAIN,
        "--installed",
    ]))?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("setup: adding rust-src to the nightly toolchain");
    cmd::run(Command::new(rustup).args(["component", "add", "rust-src", "--toolchain", TOOLCHAIN]))
        .context("could not add rust-src to the nightly toolchain")
}

/// What the nightly compiler links: its LLVM major version and library.
struct NightlyLlvm {
    major: u32,
    library: PathBuf,
}

fn nightly_llvm() -> Result<NightlyLlvm> {
    let version = cmd::output(Command::new("rustc").args([&format!("+{TOOLCHAIN}"), "-vV"]))?;
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .with_context(|| format!("`rustc +{TOOLCHAIN} -vV` names no LLVM version:\n{version}"))?;
    let sysroot =
        cmd::output(Command::new("rustc").args([&format!("+{TOOLCHAIN}"), "--print", "sysroot"]))?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let prefix = format!("libLLVM.so.{major}.");
    let library = fs::read_dir(&lib_dir)
        .with_context(|| format!("cannot read {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .with_context(|| {
            format!(
                "no {prefix}* in {}: the nightly toolchain ships no shared libLLVM to build \
                 bpf-linker against",
                lib_dir.display()
            )
        })?;
    Ok(NightlyLlvm { major, library })
}

fn data_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME").context("neither XDG_DATA_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share"))
}

fn ensure_bpf_linker() -> Result<()> {
    let llvm = nightly_llvm()?;
    let version =
        std::env::var("GEOWALL_BPF_LINKER_VERSION").unwrap_or_else(|_| BPF_LINKER_VERSION.into());
    let lib_name = llvm
        .library
        .file_name()
        .and_then(|n| n.to_str())
        .context("libLLVM file name is not UTF-8")?
        .to_owned();
    let prefix = data_dir()?.join("geowall/bpf-linker-llvm").join(&lib_name);
    let stamp_path = prefix.join("installed");
    let stamp = format!(
        "bpf-linker {version} llvm-{} {}\n",
        llvm.major,
        llvm.library.display()
    );
    if fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str()) && linker_runs() {
        return Ok(());
    }

    // The folder bpf-linker's build looks in (LLVM_PREFIX/lib) and, through
    // its run path, loads from at run time: links to nightly's own library
    // under both names the linker asks for.
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    for name in ["libLLVM.so", lib_name.as_str()] {
        let link = lib.join(name);
        let _ = fs::remove_file(&link);
        symlink(&llvm.library, &link).with_context(|| {
            format!(
                "cannot link {} to {}",
                link.display(),
                llvm.library.display()
            )
        })?;
    }

    eprintln!(
        "setup: building bpf-linker {version} against {} (about a minute)",
        llvm.library.display()
    );
    cmd::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--force",
                "--version",
                &version,
                "--no-default-features",
                "--features",
                &format!("llvm-{}", llvm.major),
            ])
            .env("LLVM_PREFIX", &prefix),
    )
    .with_context(|| {
        format!(
            "could not build bpf-linker {version} with feature llvm-{}: does that release \
             support this LLVM? Set GEOWALL_BPF_LINKER_VERSION to one that does",
            llvm.major
        )
    })?;
    if !linker_runs() {
        bail!(
            "bpf-linker was installed but does not run: is cargo's bin folder (usually \
             ~/.cargo/bin) on PATH?"
        );
    }
    fs::write(&stamp_path, stamp)
        .with_context(|| format!("cannot write {}", stamp_path.display()))?;
    Ok(())
}

fn linker_runs() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
