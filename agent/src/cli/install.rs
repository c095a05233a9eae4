//! `geowall install` and `geowall uninstall`.
//!
//! Install writes what [`install_plan::entries`] lists under `--root` (default
//! `/`, or `$DESTDIR`), makes geowall's folders, records everything in
//! `/var/lib/geowall/install-manifest`, and starts the agent with systemctl
//! when it installed into the running system and systemd runs it. A config
//! file the operator has edited is never overwritten: the new one goes
//! beside it as `.new`. Repeating an install changes nothing.
//!
//! Uninstall stops the service, ends enforcement (the agent detaches every
//! program; pins left by a crashed agent are detached and removed), removes
//! what the manifest lists, keeps edited configs and the audit logs unless
//! told otherwise, and is a no-op the second time.

use std::{
    fs, io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, bail};
use geowall::{config::Config, vocab::error::Chain};

use super::{
    args::InstallMode,
    install_plan::{
        self, ConfigState, FOLDERS, Kind, Manifest, ManifestFile, Paths, Source, rooted,
    },
    stop::{Ended, end_enforcement},
};

pub(super) struct InstallOptions {
    pub(super) root: PathBuf,
    pub(super) prefix: PathBuf,
    pub(super) mode: InstallMode,
    /// Start (or restart) the service when systemd runs this system.
    pub(super) start: bool,
}

pub(super) struct UninstallOptions {
    pub(super) root: PathBuf,
    pub(super) purge_logs: bool,
    pub(super) purge_config: bool,
}

/// What happened to one path, for the report.
fn say(what: &str, path: &Path) {
    println!("  {what:<10} {}", path.display());
}

/// Whether systemd is the init system of the running host (sd_booted(3)).
fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The root, absolute and canonical (created when missing, for install).
fn resolve_root(root: &Path, create: bool) -> Result<Option<PathBuf>> {
    if create {
        fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    }
    match fs::canonicalize(root) {
        Ok(p) => Ok(Some(p)),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !create => Ok(None),
        Err(e) => Err(e).with_context(|| format!("--root {}", root.display())),
    }
}

/// Makes folder `path` (on the target) and any missing parent under
/// `root`, recording in `created` those this install made.
fn make_dirs(root: &Path, path: &Path, mode: u32, created: &mut Vec<PathBuf>) -> Result<()> {
    let mut missing = Vec::new();
    let mut p = path.to_path_buf();
    while !rooted(root, &p).exists() {
        missing.push(p.clone());
        if !p.pop() {
            break;
        }
    }
    for dir in missing.into_iter().rev() {
        let real = rooted(root, &dir);
        fs::create_dir(&real).with_context(|| real.display().to_string())?;
        let m = if dir == path { mode } else { 0o755 };
        fs::set_permissions(&real, fs::Permissions::from_mode(m))?;
        if !created.contains(&dir) {
            created.push(dir);
        }
    }
    Ok(())
}

/// Writes `source` to `target` through a temporary file and a rename, so a
/// reader (or a running binary) never sees half a file.
fn write_atomic(target: &Path, source: &Source, mode: u32) -> Result<()> {
    let dir = target.parent().unwrap_or(Path::new("/"));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.geowall-{}", std::process::id()));
    let result = (|| {
        match source {
            Source::Bytes(bytes) => fs::write(&tmp, bytes)?,
            Source::Copy(from) => {
                fs::copy(from, &tmp)?;
            }
        }
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| target.display().to_string())
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    let current = fs::metadata(path)?.permissions().mode() & 0o7777;
    if current != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn remove_file_if_present(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| path.display().to_string()),
    }
}

fn systemctl(args: &[&str]) -> Result<()> {
    println!("  systemctl  {}", args.join(" "));
    let status = Command::new("systemctl")
        .args(args)
        .status()
        .context("cannot run systemctl")?;
    if !status.success() {
        bail!("systemctl {} failed ({status})", args.join(" "));
    }
    Ok(())
}

pub(super) fn install(opts: &InstallOptions) -> Result<ExitCode> {
    do_install(opts)?;
    Ok(ExitCode::SUCCESS)
}

fn do_install(opts: &InstallOptions) -> Result<()> {
    let paths = Paths::new(&opts.prefix)?;
    let root = resolve_root(&opts.root, true)?.expect("created");
    let live = root == Path::new("/");
    let previous = Manifest::read(&root)?.unwrap_or_default();
    let binary = std::env::current_exe().context("cannot find the running geowall binary")?;
    let entries = install_plan::entries(&paths, opts.mode.into(), &binary);

    println!(
        "geowall {}: installing into {} (prefix {}, {} mode)",
        geowall_common::VERSION,
        root.display(),
        paths.prefix().display(),
        install_plan::mode_word(opts.mode.into())
    );
    let mut manifest = Manifest {
        version: geowall_common::VERSION.into(),
        prefix: paths.prefix().to_path_buf(),
        dirs: previous.dirs.clone(),
        files: Vec::new(),
    };
    let mut folders = FOLDERS;
    folders.sort_by_key(|f| f.path.len());
    for folder in folders {
        make_dirs(
            &root,
            Path::new(folder.path),
            folder.mode,
            &mut manifest.dirs,
        )?;
    }
    let mut changed = false;
    let mut kept_edited = Vec::new();
    for entry in &entries {
        if let Some(parent) = entry.path.parent() {
            make_dirs(&root, parent, 0o755, &mut manifest.dirs)?;
        }
        let target = rooted(&root, &entry.path);
        let new_hash = install_plan::hash_source(&entry.source)
            .with_context(|| format!("reading {}", entry.path.display()))?;
        let on_disk = install_plan::hash_file(&target)?;
        match entry.kind {
            Kind::File => {
                if on_disk.as_deref() == Some(new_hash.as_str()) {
                    set_mode(&target, entry.mode)?;
                    say("unchanged", &entry.path);
                } else {
                    write_atomic(&target, &entry.source, entry.mode)?;
                    say(
                        if on_disk.is_some() {
                            "updated"
                        } else {
                            "installed"
                        },
                        &entry.path,
                    );
                    changed = true;
                }
                manifest.files.push(ManifestFile {
                    path: entry.path.clone(),
                    mode: entry.mode,
                    kind: Kind::File,
                    sha256: Some(new_hash),
                });
            }
            Kind::Config => {
                let recorded = previous.file(&entry.path).and_then(|f| f.sha256.as_deref());
                let state = install_plan::config_state(on_disk.as_deref(), recorded, &new_hash);
                let recorded_now = match state {
                    ConfigState::Current => {
                        set_mode(&target, entry.mode)?;
                        say("unchanged", &entry.path);
                        Some(new_hash)
                    }
                    ConfigState::Missing | ConfigState::Unedited => {
                        write_atomic(&target, &entry.source, entry.mode)?;
                        say(
                            if state == ConfigState::Missing {
                                "installed"
                            } else {
                                "updated"
                            },
                            &entry.path,
                        );
                        changed = true;
                        Some(new_hash)
                    }
                    ConfigState::Edited => {
                        let new = install_plan::new_path(&entry.path);
                        let new_target = rooted(&root, &new);
                        if install_plan::hash_file(&new_target)?.as_deref()
                            != Some(new_hash.as_str())
                        {
                            write_atomic(&new_target, &entry.source, entry.mode)?;
                        }
                        say("kept", &entry.path);
                        say("wrote", &new);
                        kept_edited.push((entry.path.clone(), new.clone()));
                        manifest.files.push(ManifestFile {
                            path: new,
                            mode: entry.mode,
                            kind: Kind::File,
                            sha256: Some(new_hash),
                        });
                        recorded.map(str::to_owned)
                    }
                };
                manifest.files.push(ManifestFile {
                    path: entry.path.clone(),
                    mode: entry.mode,
                    kind: Kind::Config,
                    sha256: recorded_now,
                });
            }
        }
    }
    // What an earlier install wrote that this one does not: a `.new` that
    // is no longer needed, a policy or man page this version does not ship.
    for old in &previous.files {
        if manifest.file(&old.path).is_some() {
            continue;
        }
        let target = rooted(&root, &old.path);
        let on_disk = install_plan::hash_file(&target)?;
        let ours = old.kind == Kind::File
            || (on_disk.is_some() && on_disk.as_deref() == old.sha256.as_deref());
        if ours {
            if remove_file_if_present(&target)? {
                say("removed", &old.path);
                changed = true;
            }
        } else if on_disk.is_some() {
            say("left", &old.path);
        }
    }
    let manifest_path = rooted(&root, Path::new(install_plan::MANIFEST_PATH));
    let manifest_text = manifest.render();
    if fs::read_to_string(&manifest_path).ok().as_deref() != Some(manifest_text.as_str()) {
        write_atomic(
            &manifest_path,
            &Source::Bytes(manifest_text.into_bytes()),
            0o644,
        )?;
    }

    for (kept, new) in &kept_edited {
        println!(
            "geowall: {} was edited and is left as it is; the new version is {}: \
             compare them and merge what you need",
            kept.display(),
            new.display()
        );
    }
    let config = Path::new(install_plan::CONFIG_PATH);
    let bin = paths.binary();
    if !live {
        println!(
            "geowall: installed under {}; on the target system, start the agent with \
             `systemctl daemon-reload && systemctl enable --now {}`",
            root.display(),
            install_plan::SERVICE
        );
    } else if !opts.start {
        println!(
            "geowall: installed; not started (--no-start): `systemctl enable --now {}`",
            install_plan::SERVICE
        );
    } else if systemd_runs() {
        systemctl(&["daemon-reload"])?;
        systemctl(&["enable", install_plan::SERVICE])?;
        // A restart adopts the pinned programs in place: no gap.
        systemctl(&[
            if changed { "restart" } else { "start" },
            install_plan::SERVICE,
        ])?;
        println!(
            "geowall: the agent runs ({} mode); see `geowall status`",
            install_plan::mode_word(opts.mode.into())
        );
    } else {
        println!(
            "geowall: systemd does not run this system, so nothing was started; run the agent \
             with:\n  {} run --config {}",
            bin.display(),
            config.display()
        );
    }
    Ok(())
}

pub(super) fn uninstall(opts: &UninstallOptions) -> Result<ExitCode> {
    do_uninstall(opts)?;
    Ok(ExitCode::SUCCESS)
}

fn do_uninstall(opts: &UninstallOptions) -> Result<()> {
    let Some(root) = resolve_root(&opts.root, false)? else {
        println!(
            "geowall: nothing to uninstall: {} does not exist",
            opts.root.display()
        );
        return Ok(());
    };
    let live = root == Path::new("/");
    let Some(manifest) = Manifest::read(&root)? else {
        println!(
            "geowall: nothing to uninstall under {}: no {} (a package manager's install is \
             removed with it, e.g. `apt remove geowall`)",
            root.display(),
            install_plan::MANIFEST_PATH
        );
        return Ok(());
    };
    println!(
        "geowall: uninstalling geowall {} from {}",
        manifest.version,
        root.display()
    );
    if live && systemd_runs() {
        // Stops the agent; its pins stay until enforcement is ended below.
        if let Err(e) = systemctl(&["disable", "--now", install_plan::SERVICE]) {
            println!("  warning    {}", Chain(e.as_ref()));
        }
    }

    // End enforcement: the installed config names the agent's socket and
    // pins (host paths, whatever the root).
    let config_path = rooted(&root, Path::new(install_plan::CONFIG_PATH));
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            println!(
                "  warning    {}: ending the enforcement of the default config",
                Chain(&e)
            );
            Config::parse(&config_path, String::new())?
        }
    };
    let pins = config.bpffs_path();
    match end_enforcement(&config)? {
        Ended::Agent => say(
            "stopped",
            Path::new("the agent: programs detached, pins removed"),
        ),
        Ended::Pins(n) => println!(
            "  detached   {n} pins under {} (no agent was running)",
            pins.display()
        ),
        Ended::Nothing => println!(
            "  nothing    attached: no agent, no pins under {}",
            pins.display()
        ),
    }

    let mut kept = Vec::new();
    for f in manifest.files.iter().rev() {
        let target = rooted(&root, &f.path);
        let remove = match f.kind {
            Kind::File => true,
            Kind::Config => {
                let on_disk = install_plan::hash_file(&target)?;
                match on_disk {
                    None => false,
                    Some(h) if Some(h.as_str()) == f.sha256.as_deref() => true,
                    Some(_) if opts.purge_config => true,
                    Some(_) => {
                        kept.push(f.path.clone());
                        false
                    }
                }
            }
        };
        if remove && remove_file_if_present(&target)? {
            say("removed", &f.path);
        }
    }
    let log_dir = Path::new(install_plan::LOG_DIR);
    if opts.purge_logs {
        match fs::remove_dir_all(rooted(&root, log_dir)) {
            Ok(()) => say("purged", log_dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| log_dir.display().to_string()),
        }
    }
    remove_file_if_present(&rooted(&root, Path::new(install_plan::MANIFEST_PATH)))?;

    // Folders the install made and geowall's own, deepest first, where
    // empty.
    let mut dirs = manifest.dirs.clone();
    for folder in FOLDERS {
        let path = PathBuf::from(folder.path);
        if !dirs.contains(&path) {
            dirs.push(path);
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in &dirs {
        if dir == log_dir && !opts.purge_logs {
            continue;
        }
        match fs::remove_dir(rooted(&root, dir)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) if dir.starts_with("/etc/geowall") || dir.starts_with("/var/lib/geowall") => {
                say("left", dir);
                println!("             (it holds files geowall did not install)");
            }
            Err(_) => {}
        }
    }
    if live && systemd_runs() {
        systemctl(&["daemon-reload"])?;
    }
    for path in &kept {
        println!(
            "geowall: kept {}: it was edited (remove it, or uninstall with --purge-config)",
            path.display()
        );
    }
    if !opts.purge_logs && rooted(&root, log_dir).exists() {
        println!(
            "geowall: kept the audit logs in {} (--purge-logs removes them)",
            log_dir.display()
        );
    }
    println!("geowall: uninstalled");
    Ok(())
}
