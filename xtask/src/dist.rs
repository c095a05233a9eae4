//! `cargo xtask dist`: the `.deb`.
//!
//! The package holds exactly what `geowall install --prefix /usr` writes
//! (the staging root is filled by the binary's own installer, so the two
//! cannot drift apart), minus the install manifest (dpkg keeps its own
//! record), with the man pages compressed, the config files marked as
//! conffiles, and maintainer scripts (`packaging/deb/`) that start or stop
//! the service only when systemd runs the system and never inside another
//! root (DPKG_ROOT).
//!
//! Built with `dpkg-deb` from a hand-made tree rather than cargo-deb: the
//! tree comes from `geowall install` anyway, so cargo-deb's asset lists would
//! only repeat it, and dpkg-deb is on every Debian system.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::cmd;

const PACKAGE: &str = "geowall";

/// What to package and where to put it.
pub struct Options {
    /// A built `geowall` to package; none: build the release binary.
    pub binary: Option<PathBuf>,
    /// Folder the .deb is written to (default `target/dist`).
    pub out: Option<PathBuf>,
}

fn packaging() -> PathBuf {
    cmd::workspace_root().join("packaging/deb")
}

pub fn run(opts: &Options) -> Result<PathBuf> {
    let binary = match &opts.binary {
        Some(b) => b.clone(),
        None => {
            cmd::build_agent(true)?;
            cmd::agent_binary(true)
        }
    };
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| cmd::target_dir().join("dist"));
    let deb = build_deb(&binary, &out, Compression::Best)?;
    let size = fs::metadata(&deb)?.len();
    println!(
        "dist: {} ({:.1} MiB)",
        deb.display(),
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(deb)
}

/// How hard dpkg-deb compresses the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// xz: the package that ships.
    Best,
    /// None: the package test's (an unstripped debug binary takes xz ~20 s).
    #[cfg_attr(not(test), allow(dead_code))]
    None,
}

/// Builds the .deb of `binary` into `out`; returns its path.
pub fn build_deb(binary: &Path, out: &Path, compression: Compression) -> Result<PathBuf> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let stage = out.join(format!("{PACKAGE}-stage"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    // The tree, as the installer writes it.
    cmd::run(
        Command::new(binary)
            .args([
                "install",
                "--prefix",
                "/usr",
                "--mode",
                "audit",
                "--no-start",
            ])
            .arg("--root")
            .arg(&stage)
            .env_remove("DESTDIR")
            .stdout(std::process::Stdio::null()),
    )?;
    fs::remove_file(stage.join("var/lib/geowall/install-manifest"))
        .context("the installer wrote no manifest")?;
    compress_man_pages(&stage.join("usr/share/man"))?;
    let doc = stage.join("usr/share/doc").join(PACKAGE);
    fs::create_dir_all(&doc)?;
    install_file(
        &packaging().join("copyright"),
        &doc.join("copyright"),
        0o644,
    )?;
    let installed_size = installed_size_kib(&stage)?;

    let debian = stage.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    for script in ["postinst", "prerm", "postrm"] {
        install_file(&packaging().join(script), &debian.join(script), 0o755)?;
    }
    let conffiles = conffiles(&stage)?;
    if conffiles.is_empty() {
        bail!("no config files under {}/etc", stage.display());
    }
    write(
        &debian.join("conffiles"),
        &(conffiles.join("\n") + "\n"),
        0o644,
    )?;

    // The binary's own version: `GEOWALL_VERSION` when the build was
    // stamped with one (it is in this process's environment then too).
    let version = std::env::var("GEOWALL_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
    let version = version.as_str();
    let arch = cmd::output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_owned();
    let control = fs::read_to_string(packaging().join("control.in"))?
        .replace("@VERSION@", version)
        .replace("@ARCH@", &arch)
        .replace("@SIZE@", &installed_size.to_string())
        .replace("@DEPENDS@", &shlib_depends(&stage.join("usr/bin/geowall"))?);
    write(&debian.join("control"), &control, 0o644)?;

    let deb = out.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    cmd::run(
        Command::new("dpkg-deb")
            .arg("--root-owner-group")
            .arg(match compression {
                Compression::Best => "-Zxz",
                Compression::None => "-Znone",
            })
            .arg("--build")
            .arg(&stage)
            .arg(&deb)
            .stdout(std::process::Stdio::null()),
    )?;
    fs::remove_dir_all(&stage)?;
    Ok(deb)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn install_file(from: &Path, to: &Path, mode: u32) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Every file under `stage/etc`, as absolute target paths, sorted.
fn conffiles(stage: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    walk(&stage.join("etc"), &mut |p| {
        let rel = p.strip_prefix(stage).expect("under the stage");
        out.push(format!("/{}", rel.display()));
    })?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, f)?;
        } else {
            f(&path);
        }
    }
    Ok(())
}

/// `gzip -9n` every page (Debian policy: compressed, no timestamp).
fn compress_man_pages(man: &Path) -> Result<()> {
    let mut pages = Vec::new();
    walk(man, &mut |p| pages.push(p.to_path_buf()))?;
    if pages.is_empty() {
        bail!("no man pages under {}", man.display());
    }
    cmd::run(Command::new("gzip").arg("-9nf").args(&pages))
}

/// The files' size in KiB, as `Installed-Size` counts it.
fn installed_size_kib(stage: &Path) -> Result<u64> {
    let mut bytes = 0u64;
    let mut err = None;
    walk(stage, &mut |p| match fs::metadata(p) {
        Ok(m) => bytes += m.len().div_ceil(1024) * 1024,
        Err(e) => err = Some(e),
    })?;
    if let Some(e) = err {
        return Err(e.into());
    }
    Ok(bytes / 1024)
}

/// The `Depends` of the binary's shared libraries (libc6, libgcc-s1), from
/// `dpkg-shlibdeps`, which reads the versioned symbols it uses.
fn shlib_depends(binary: &Path) -> Result<String> {
    let work = tempdir("shlibdeps")?;
    fs::create_dir_all(work.join("debian"))?;
    fs::write(
        work.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"),
    )?;
    let out = Command::new("dpkg-shlibdeps")
        .args(["-O", "-e"])
        .arg(binary)
        .current_dir(&work)
        .output()
        .context("could not run dpkg-shlibdeps (apt-get install dpkg-dev)")?;
    let _ = fs::remove_dir_all(&work);
    if !out.status.success() {
        bail!(
            "dpkg-shlibdeps failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::to_owned)
        .context("dpkg-shlibdeps named no dependency")
}

fn tempdir(tag: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("geowall-xtask-{tag}-{}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The version of kubernetes-validate the manifests' test uses (it ships
/// the Kubernetes JSON schemas, so it validates offline).
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// Installs what the packaging tests need and a fresh machine lacks: the
/// Kubernetes schema checker (from the Python package registry, with pip;
/// Debian's own Python needs python3-pip and --break-system-packages).
pub fn ensure_test_tools() -> Result<()> {
    let have = |module: &str| {
        Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if have("kubernetes_validate") {
        return Ok(());
    }
    eprintln!("setup: installing {KUBERNETES_VALIDATE} (the Kubernetes manifests' schema check)");
    if !have("pip") {
        cmd::run(Command::new("apt-get").args(["install", "-y", "-q", "python3-pip"]))
            .context("installing python3-pip")?;
    }
    let pip = |extra: &[&str]| {
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", KUBERNETES_VALIDATE])
            .args(extra)
            .status()
            .is_ok_and(|s| s.success())
    };
    if pip(&[]) || pip(&["--break-system-packages"]) {
        return Ok(());
    }
    bail!("could not install {KUBERNETES_VALIDATE} with pip")
}

#[cfg(test)]
mod tests {
    //! The .deb, built from the debug binary (the release build is the
    //! same tree), installed into and removed from a throwaway root with
    //! dpkg: `--root` with chrootless maintainer scripts, which then see
    //! DPKG_ROOT and leave the running system alone.

    use super::*;

    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn dpkg(root: &Path, args: &[&str]) -> String {
        let out = Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["--force-script-chrootless", "--force-depends"])
            .args(args)
            .output()
            .expect("run dpkg");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "dpkg {args:?} failed:\n{text}");
        text
    }

    /// Paths of everything under `root` but dpkg's own database and log.
    fn files_outside_dpkg(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        walk(root, &mut |p| {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if !rel.starts_with("var/lib/dpkg") && rel != "var/log/dpkg.log" {
                out.push(rel);
            }
        })
        .unwrap();
        out.sort();
        out
    }

    #[test]
    fn the_deb_installs_and_removes_cleanly_in_a_throwaway_root() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "dpkg installs root-owned files: run as root (`cargo xtask test`)"
        );
        let binary = cmd::agent_binary(false);
        assert!(
            binary.is_file(),
            "{} is missing: `cargo build` first (`cargo xtask test` does)",
            binary.display()
        );
        let scratch = Scratch(tempdir("deb-test").unwrap());
        let deb = build_deb(&binary, &scratch.0.join("out"), Compression::None).unwrap();
        assert!(!scratch.0.join("out/geowall-stage").exists());

        // The package's own description of itself.
        let info = cmd::output(Command::new("dpkg-deb").arg("--info").arg(&deb)).unwrap();
        for want in [
            "Package: geowall",
            "Depends: libc6 (>= ",
            "postinst",
            "prerm",
            "postrm",
            "conffiles",
        ] {
            assert!(info.contains(want), "{want} missing:\n{info}");
        }
        let listing = cmd::output(Command::new("dpkg-deb").arg("--contents").arg(&deb)).unwrap();
        for want in [
            "root/root",
            "./usr/bin/geowall",
            "./usr/lib/systemd/system/geowall.service",
            "./etc/geowall/geowall.toml",
            "./usr/share/man/man1/geowall.1.gz",
            "./usr/share/bash-completion/completions/geowall",
            "./usr/share/zsh/vendor-completions/_geowall",
            "./usr/share/fish/vendor_completions.d/geowall.fish",
            "./usr/share/doc/geowall/copyright",
            "./var/log/geowall/",
        ] {
            assert!(listing.contains(want), "{want} missing:\n{listing}");
        }
        assert!(!listing.contains("install-manifest"), "{listing}");
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with("drwxr-x--- root/root") && l.ends_with("./var/log/geowall/")),
            "the log folder is 0750:\n{listing}"
        );

        // A throwaway root with an empty dpkg database.
        let root = scratch.0.join("root");
        for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
        dpkg(&root, &["--install", deb.to_str().unwrap()]);
        let status = dpkg(&root, &["--status", "geowall"]);
        assert!(status.contains("Status: install ok installed"), "{status}");
        assert!(
            status.contains("Conffiles:\n /etc/geowall/geowall.toml "),
            "{status}"
        );
        let bin = root.join("usr/bin/geowall");
        assert_eq!(
            fs::metadata(&bin).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        let version = cmd::output(Command::new(&bin).arg("--version")).unwrap();
        assert_eq!(
            version.trim(),
            format!("geowall {}", env!("CARGO_PKG_VERSION"))
        );
        let config = fs::read_to_string(root.join("etc/geowall/geowall.toml")).unwrap();
        assert!(config.contains("policy_dir = \"policies\""), "{config}");
        let policy = fs::read_to_string(root.join("etc/geowall/policies/eu-only.toml")).unwrap();
        assert!(policy.contains("mode = \"audit\""), "{policy}");
        let unit = fs::read_to_string(root.join("usr/lib/systemd/system/geowall.service")).unwrap();
        assert!(
            unit.contains("\nExecStart=/usr/bin/geowall run --config /etc/geowall/geowall.toml\n")
        );

        // Remove: the files go, the config and the logs stay.
        fs::write(root.join("var/log/geowall/audit.jsonl"), "{}\n").unwrap();
        dpkg(&root, &["--remove", "geowall"]);
        assert!(!bin.exists());
        assert!(root.join("etc/geowall/geowall.toml").exists());
        assert!(root.join("var/log/geowall/audit.jsonl").exists());
        // Purge: nothing of geowall is left.
        dpkg(&root, &["--purge", "geowall"]);
        assert_eq!(files_outside_dpkg(&root), Vec::<String>::new());
        for dir in [
            "etc/geowall",
            "var/lib/geowall",
            "var/log/geowall",
            "usr/bin",
        ] {
            assert!(!root.join(dir).exists(), "{dir} is left");
        }
        let status = Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["--status", "geowall"])
            .output()
            .unwrap();
        assert!(!status.status.success(), "geowall is still known to dpkg");
    }
}
