//! What `geowall install` puts where, and the manifest that lets
//! `geowall uninstall` remove exactly that.
//!
//! Paths are the target system's (`/etc/geowall/geowall.toml`); `--root`
//! only relocates them ([`rooted`]). Nothing here touches the file system
//! except [`Manifest::read`] and [`hash_file`]: the plan is pure, so it is
//! unit-tested as such, and `install.rs` carries it out.

use std::{
    fmt::Write as _,
    io,
    path::{Component, Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};
use geowall::config::Mode;

use super::{args::Shell, completions};

/// The config folder and files (never relocated by `--prefix`).
pub(super) const ETC_DIR: &str = "/etc/geowall";
pub(super) const CONFIG_PATH: &str = "/etc/geowall/geowall.toml";
pub(super) const POLICY_DIR: &str = "/etc/geowall/policies";
/// State: the manifest, and map source files an operator adds.
pub(super) const STATE_DIR: &str = "/var/lib/geowall";
pub(super) const MANIFEST_PATH: &str = "/var/lib/geowall/install-manifest";
/// The audit log's folder (kept by `uninstall` unless `--purge-logs`).
pub(super) const LOG_DIR: &str = "/var/log/geowall";

pub(super) const SERVICE: &str = "geowall.service";

const CONFIG_TEMPLATE: &str = include_str!("../../../config/geowall.install.toml");
const SERVICE_TEMPLATE: &str = include_str!("../../../packaging/systemd/geowall.service.in");

// `SHIPPED_POLICIES: &[(&str, &str)]`: every `policies/*.toml` of the
// repository (file name, contents), listed by the build script.
include!(concat!(env!("OUT_DIR"), "/shipped_policies.rs"));

/// The policy the installed config defines inline while the agent's config
/// has no `policy_dir` to read the shipped policy files from.
const INLINE_POLICY: &str = r#"
# A policy: which regions the jobs it governs may reach. Run a job under it
# with `geowall exec --policy eu-only -- CMD`, or bind cgroups to it.
[[policy]]
name = "eu-only"
mode = "@MODE@"                # "audit": record "would deny", block nothing
allow = ["EU"]                 # countries (DE), groups (EU, EEA), cloud regions (aws:eu-west-1)
untagged = "deny"              # destinations no map source tags
local = "allow"                # loopback, RFC 1918, CGNAT, link-local, ULA, multicast
rules = []                     # CIDR rules, checked before the region
cgroups = []                   # bound cgroups, relative to the governed subtree
log_allowed = "none"           # "all" records allowed flows too
raw_sockets = "deny"           # raw and packet sockets bypass the address hooks
"#;

/// What kind of file an entry is: how install treats one already there and
/// how uninstall removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// geowall's own file (binary, unit, man page): replaced when it
    /// differs, removed by uninstall.
    File,
    /// A config file the operator may edit: never overwritten once edited
    /// (a `.new` goes beside it), kept by uninstall when edited.
    Config,
}

/// Where an entry's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    Bytes(Vec<u8>),
    /// A file copied as is (the running binary).
    Copy(PathBuf),
}

/// One file to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// Absolute path on the target system.
    pub path: PathBuf,
    pub mode: u32,
    pub kind: Kind,
    pub source: Source,
}

/// A folder install makes, with its mode. Files' parent folders are made
/// 0755 as needed; these are the ones whose mode matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Folder {
    pub path: &'static str,
    pub mode: u32,
}

/// Folders geowall owns. The log folder is 0750: flow records name
/// processes, users and destinations.
pub(super) const FOLDERS: [Folder; 4] = [
    Folder {
        path: POLICY_DIR,
        mode: 0o755,
    },
    Folder {
        path: STATE_DIR,
        mode: 0o755,
    },
    Folder {
        path: LOG_DIR,
        mode: 0o750,
    },
    Folder {
        path: ETC_DIR,
        mode: 0o755,
    },
];

/// Where things go for a `--prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Paths {
    prefix: PathBuf,
}

impl Paths {
    /// `prefix` must be absolute and plain (no `..`), without newlines (the
    /// manifest is line-based).
    pub(super) fn new(prefix: &Path) -> Result<Paths> {
        if !prefix.is_absolute() {
            bail!("--prefix {} is not an absolute path", prefix.display());
        }
        if prefix
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
            || prefix.as_os_str().as_encoded_bytes().contains(&b'\n')
        {
            bail!(
                "--prefix {} must be a plain absolute path",
                prefix.display()
            );
        }
        Ok(Paths {
            prefix: prefix.to_path_buf(),
        })
    }

    pub(super) fn prefix(&self) -> &Path {
        &self.prefix
    }

    pub(super) fn binary(&self) -> PathBuf {
        self.prefix.join("bin/geowall")
    }

    /// systemd reads units from /usr/lib/systemd/system and
    /// /usr/local/lib/systemd/system; any other prefix gets the local
    /// administrator's folder.
    pub(super) fn unit_dir(&self) -> PathBuf {
        if self.prefix == Path::new("/usr") || self.prefix == Path::new("/usr/local") {
            self.prefix.join("lib/systemd/system")
        } else {
            PathBuf::from("/etc/systemd/system")
        }
    }

    pub(super) fn man_dir(&self) -> PathBuf {
        self.prefix.join("share/man/man1")
    }

    pub(super) fn completion(&self, shell: Shell) -> PathBuf {
        let share = self.prefix.join("share");
        match shell {
            Shell::Bash => share.join("bash-completion/completions/geowall"),
            // Debian's zsh reads packages' functions from vendor-completions,
            // and /usr/local/share/zsh/site-functions for local installs.
            Shell::Zsh if self.prefix == Path::new("/usr") => {
                share.join("zsh/vendor-completions/_geowall")
            }
            Shell::Zsh => share.join("zsh/site-functions/_geowall"),
            Shell::Fish => share.join("fish/vendor_completions.d/geowall.fish"),
        }
    }
}

/// `path` (absolute, on the target) under `root`.
pub(super) fn rooted(root: &Path, path: &Path) -> PathBuf {
    let rel = path.strip_prefix("/").unwrap_or(path);
    if rel.as_os_str().is_empty() {
        return root.to_path_buf();
    }
    root.join(rel)
}

pub(super) fn mode_word(mode: Mode) -> &'static str {
    match mode {
        Mode::Audit => "audit",
        Mode::Enforce => "enforce",
    }
}

/// Whether this build's config parser reads `[agent] policy_dir` (a folder
/// of one-policy-per-file TOML files). Until it does, the installed config
/// defines its policy inline and names the folder in a comment only.
pub(super) fn config_reads_policy_dir() -> bool {
    geowall::config::Config::parse(
        Path::new("probe.toml"),
        format!("[agent]\npolicy_dir = \"{POLICY_DIR}\"\n"),
    )
    .is_ok()
}

/// The installed config for `mode`.
pub(super) fn config_text(mode: Mode, reads_policy_dir: bool) -> String {
    let (policy_dir, policies) = if reads_policy_dir {
        (
            format!(
                "# Policies: one TOML file per policy in {POLICY_DIR} (relative to this\n\
                 # file's folder). Examples that need more map sources than the built-in\n\
                 # one end in .toml.example: rename one once its sources are configured.\n\
                 policy_dir = \"policies\"\n\
                 # The policy of everything no other binding covers (here the whole host):\n\
                 # record what an EEA+CH policy would deny, block nothing.\n\
                 # default_policy = \"audit-everything\"\n"
            ),
            String::new(),
        )
    } else {
        (
            format!(
                "# Policy files ({POLICY_DIR}/*.toml) are examples this version does\n\
                 # not read: policies are the [[policy]] tables of this file.\n\
                 # policy_dir = \"{POLICY_DIR}\"\n"
            ),
            INLINE_POLICY.replace("@MODE@", mode_word(mode)),
        )
    };
    CONFIG_TEMPLATE
        .replace("@POLICY_DIR@", &policy_dir)
        .replace("@POLICIES@", &policies)
}

/// Whether a policy's `allow` or `deny` names a cloud region
/// (`provider:region`), which only a cloud map source defines.
pub(super) fn names_cloud_regions(text: &str) -> bool {
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return false;
    };
    ["allow", "deny"].iter().any(|key| {
        table.get(*key).and_then(|v| v.as_array()).is_some_and(|a| {
            a.iter()
                .any(|v| v.as_str().is_some_and(|s| s.contains(':')))
        })
    })
}

/// A shipped policy file set to `mode`: its `mode = ...` line rewritten,
/// or one added after its `name = ...` line when it has none (the default
/// would be enforce).
pub(super) fn policy_with_mode(text: &str, mode: Mode) -> String {
    let line_for = |indent: &str| format!("{indent}mode = \"{}\"", mode_word(mode));
    let key_of = |line: &str| {
        let t = line.trim_start();
        let key = t.split('=').next().unwrap_or("").trim();
        (t.contains('=') && !t.starts_with('#')).then(|| key.to_owned())
    };
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if let Some(i) = lines
        .iter()
        .position(|l| key_of(l).as_deref() == Some("mode"))
    {
        let indent = &lines[i][..lines[i].len() - lines[i].trim_start().len()];
        // Keep a trailing comment.
        let comment = lines[i]
            .split_once('#')
            .map(|(_, c)| format!("  # {}", c.trim()))
            .unwrap_or_default();
        lines[i] = format!("{}{comment}", line_for(indent));
    } else if let Some(i) = lines
        .iter()
        .position(|l| key_of(l).as_deref() == Some("name"))
    {
        let indent = lines[i][..lines[i].len() - lines[i].trim_start().len()].to_owned();
        lines.insert(i + 1, line_for(&indent));
    } else {
        lines.insert(0, line_for(""));
    }
    let mut out = lines.join("\n");
    if text.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The systemd unit for a binary at `binary`.
pub(super) fn service_text(binary: &Path) -> String {
    let bindir = binary.parent().unwrap_or(Path::new("/"));
    SERVICE_TEMPLATE.replace("@BINDIR@", &bindir.display().to_string())
}

/// Every file an install writes, in the order it writes them (the binary
/// last: a failed install leaves no binary pointing at missing files).
pub(super) fn entries(paths: &Paths, mode: Mode, binary: &Path) -> Vec<Entry> {
    let reads_policy_dir = config_reads_policy_dir();
    let mut out = vec![Entry {
        path: CONFIG_PATH.into(),
        mode: 0o644,
        kind: Kind::Config,
        source: Source::Bytes(config_text(mode, reads_policy_dir).into_bytes()),
    }];
    for (name, text) in SHIPPED_POLICIES {
        // A policy naming cloud regions does not load with the built-in map
        // alone: it is installed as an example the agent does not read.
        let name = if names_cloud_regions(text) {
            format!("{name}.example")
        } else {
            (*name).to_owned()
        };
        // The audit policies exist to block nothing, whatever the install's
        // mode.
        let text = if name.starts_with("audit-") {
            (*text).to_owned()
        } else {
            policy_with_mode(text, mode)
        };
        out.push(Entry {
            path: Path::new(POLICY_DIR).join(name),
            mode: 0o644,
            kind: Kind::Config,
            source: Source::Bytes(text.into_bytes()),
        });
    }
    let units = paths.unit_dir();
    out.push(Entry {
        path: units.join(SERVICE),
        mode: 0o644,
        kind: Kind::File,
        source: Source::Bytes(service_text(&paths.binary()).into_bytes()),
    });
    for shell in Shell::ALL {
        out.push(Entry {
            path: paths.completion(shell),
            mode: 0o644,
            kind: Kind::File,
            source: Source::Bytes(completions::completion(shell)),
        });
    }
    for page in completions::man_pages() {
        out.push(Entry {
            path: paths.man_dir().join(&page.file_name),
            mode: 0o644,
            kind: Kind::File,
            source: Source::Bytes(page.text),
        });
    }
    out.push(Entry {
        path: paths.binary(),
        mode: 0o755,
        kind: Kind::File,
        source: Source::Copy(binary.to_path_buf()),
    });
    out
}

/// Lower-case hex SHA-256 of a file's contents; `None` if it does not exist.
pub(super) fn hash_file(path: &Path) -> io::Result<Option<String>> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    geowall::vocab::hex::sha256_hex_of(&mut file).map(Some)
}

/// An entry's SHA-256.
pub(super) fn hash_source(source: &Source) -> io::Result<String> {
    match source {
        Source::Bytes(b) => Ok(geowall::vocab::hex::sha256_hex(b)),
        Source::Copy(p) => hash_file(p)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, p.display().to_string())),
    }
}

/// What a config file on disk is to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConfigState {
    /// Not there: write it.
    Missing,
    /// Already what this install would write.
    Current,
    /// What an earlier install wrote, untouched since: replace it.
    Unedited,
    /// Edited (or written by someone else): keep it, write `.new` beside it.
    Edited,
}

/// Classifies a config file from its hash on disk, the hash the last
/// install recorded for it, and the hash of what this install would write.
pub(super) fn config_state(
    on_disk: Option<&str>,
    recorded: Option<&str>,
    new: &str,
) -> ConfigState {
    match on_disk {
        None => ConfigState::Missing,
        Some(h) if h == new => ConfigState::Current,
        Some(h) if Some(h) == recorded => ConfigState::Unedited,
        Some(_) => ConfigState::Edited,
    }
}

/// `path.new`: where a newer config goes beside an edited one.
pub(super) fn new_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".new");
    PathBuf::from(s)
}

/// The record of an install: what `geowall uninstall` removes.
///
/// ```text
/// # geowall install manifest v1
/// version 0.1.0
/// prefix /usr/local
/// dir /etc/geowall
/// file 755 <sha256> /usr/local/bin/geowall
/// config 644 <sha256 of what install wrote, or -> /etc/geowall/geowall.toml
/// ```
///
/// `dir` lines name the folders the install created (removed again when
/// empty); a `config` line's hash is what geowall wrote there (`-`: the file
/// was there first and is not geowall's), so uninstall can tell an edited
/// config and keep it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Manifest {
    pub version: String,
    pub prefix: PathBuf,
    pub dirs: Vec<PathBuf>,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ManifestFile {
    pub path: PathBuf,
    pub mode: u32,
    pub kind: Kind,
    /// The SHA-256 of what install wrote; `None` for a config geowall did
    /// not write.
    pub sha256: Option<String>,
}

const MANIFEST_HEADER: &str = "# geowall install manifest v1: what `geowall install` wrote \
                               and `geowall uninstall` removes. Do not edit.";

impl Manifest {
    pub(super) fn render(&self) -> String {
        let mut out = format!(
            "{MANIFEST_HEADER}\nversion {}\nprefix {}\n",
            self.version,
            self.prefix.display()
        );
        for d in &self.dirs {
            let _ = writeln!(out, "dir {}", d.display());
        }
        for f in &self.files {
            let kind = match f.kind {
                Kind::File => "file",
                Kind::Config => "config",
            };
            let _ = writeln!(
                out,
                "{kind} {:o} {} {}",
                f.mode,
                f.sha256.as_deref().unwrap_or("-"),
                f.path.display()
            );
        }
        out
    }

    pub(super) fn parse(text: &str) -> Result<Manifest> {
        let mut m = Manifest::default();
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, l)) if l.starts_with("# geowall install manifest v1") => {}
            _ => bail!("not a geowall install manifest (v1)"),
        }
        for (i, line) in lines {
            let bad = || anyhow!("line {}: cannot read {line:?}", i + 1);
            let (word, rest) = line.split_once(' ').ok_or_else(bad)?;
            match word {
                "version" => m.version = rest.to_owned(),
                "prefix" => m.prefix = rest.into(),
                "dir" => m.dirs.push(rest.into()),
                "file" | "config" => {
                    let mut parts = rest.splitn(3, ' ');
                    let (Some(mode), Some(hash), Some(path)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        return Err(bad());
                    };
                    let mode = u32::from_str_radix(mode, 8).map_err(|_| bad())?;
                    let path = PathBuf::from(path);
                    if !path.is_absolute() {
                        return Err(bad());
                    }
                    m.files.push(ManifestFile {
                        path,
                        mode,
                        kind: if word == "file" {
                            Kind::File
                        } else {
                            Kind::Config
                        },
                        sha256: (hash != "-").then(|| hash.to_owned()),
                    });
                }
                _ => return Err(bad()),
            }
        }
        Ok(m)
    }

    /// The manifest under `root`, if there is one.
    pub(super) fn read(root: &Path) -> Result<Option<Manifest>> {
        let path = rooted(root, Path::new(MANIFEST_PATH));
        match std::fs::read_to_string(&path) {
            Ok(text) => Manifest::parse(&text)
                .map(Some)
                .with_context(|| path.display().to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub(super) fn file(&self, path: &Path) -> Option<&ManifestFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geowall::config::Config;

    #[test]
    fn prefixes_place_binary_units_completions_and_pages() {
        let local = Paths::new(Path::new("/usr/local")).unwrap();
        assert_eq!(local.binary(), Path::new("/usr/local/bin/geowall"));
        assert_eq!(local.unit_dir(), Path::new("/usr/local/lib/systemd/system"));
        assert_eq!(
            local.completion(Shell::Zsh),
            Path::new("/usr/local/share/zsh/site-functions/_geowall")
        );
        let usr = Paths::new(Path::new("/usr")).unwrap();
        assert_eq!(usr.unit_dir(), Path::new("/usr/lib/systemd/system"));
        assert_eq!(
            usr.completion(Shell::Zsh),
            Path::new("/usr/share/zsh/vendor-completions/_geowall")
        );
        assert_eq!(
            usr.completion(Shell::Bash),
            Path::new("/usr/share/bash-completion/completions/geowall")
        );
        let opt = Paths::new(Path::new("/opt/geowall")).unwrap();
        assert_eq!(opt.unit_dir(), Path::new("/etc/systemd/system"));
        assert_eq!(opt.man_dir(), Path::new("/opt/geowall/share/man/man1"));
        assert!(Paths::new(Path::new("usr")).is_err());
        assert!(Paths::new(Path::new("/usr/../etc")).is_err());
    }

    #[test]
    fn rooted_relocates_absolute_paths() {
        assert_eq!(
            rooted(Path::new("/tmp/r"), Path::new("/etc/geowall/geowall.toml")),
            Path::new("/tmp/r/etc/geowall/geowall.toml")
        );
        assert_eq!(
            rooted(Path::new("/"), Path::new("/etc/geowall")),
            Path::new("/etc/geowall")
        );
        assert_eq!(rooted(Path::new("/r"), Path::new("/")), Path::new("/r"));
    }

    #[test]
    fn the_installed_config_parses_in_both_modes_and_layouts() {
        for reads_policy_dir in [false, true] {
            for (mode, word) in [(Mode::Audit, "audit"), (Mode::Enforce, "enforce")] {
                let text = config_text(mode, reads_policy_dir);
                assert!(!text.contains('@'), "a placeholder is left:\n{text}");
                if reads_policy_dir {
                    assert!(text.contains("\npolicy_dir = \"policies\"\n"));
                    continue; // this build's parser may not know the key
                }
                let c = Config::parse(Path::new(CONFIG_PATH), text.clone())
                    .unwrap_or_else(|e| panic!("{e}\n{text}"));
                assert_eq!(c.governed_cgroup(), "/");
                assert!(!c.file.agent.allow_host_enforce);
                assert!(!c.file.policy.is_empty());
                for p in &c.file.policy {
                    assert_eq!(p.mode, mode, "{word}");
                    assert!(p.cgroups.is_empty(), "no static binding: nothing host-wide");
                }
                assert!(text.contains("# policy_dir = \"/etc/geowall/policies\""));
            }
        }
    }

    #[test]
    fn policy_dir_is_written_exactly_when_the_config_reads_it() {
        let text = config_text(Mode::Audit, config_reads_policy_dir());
        Config::parse(Path::new(CONFIG_PATH), text.clone()).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn policy_files_get_the_install_mode() {
        let with =
            "# EU only\nname = \"eu-only\"\nmode = \"enforce\"   # default\nallow = [\"EU\"]\n";
        assert_eq!(
            policy_with_mode(with, Mode::Audit),
            "# EU only\nname = \"eu-only\"\nmode = \"audit\"  # default\nallow = [\"EU\"]\n"
        );
        let without = "name = \"x\"\nallow = [\"EU\"]\n";
        assert_eq!(
            policy_with_mode(without, Mode::Audit),
            "name = \"x\"\nmode = \"audit\"\nallow = [\"EU\"]\n"
        );
        let table = "[policy]\n  name = \"x\"\n  allow = [\"EU\"]";
        assert_eq!(
            policy_with_mode(table, Mode::Enforce),
            "[policy]\n  name = \"x\"\n  mode = \"enforce\"\n  allow = [\"EU\"]"
        );
        // A commented-out mode is not the mode.
        let commented = "name = \"x\"\n# mode = \"enforce\"\n";
        assert_eq!(
            policy_with_mode(commented, Mode::Audit),
            "name = \"x\"\nmode = \"audit\"\n# mode = \"enforce\"\n"
        );
        for (name, text) in SHIPPED_POLICIES
            .iter()
            .filter(|(n, _)| !n.starts_with("audit-"))
        {
            for mode in [Mode::Audit, Mode::Enforce] {
                let out = policy_with_mode(text, mode);
                toml::from_str::<toml::Table>(&out)
                    .unwrap_or_else(|e| panic!("{name}: {e}\n{out}"));
                assert!(out.contains(&format!("mode = \"{}\"", mode_word(mode))));
            }
        }
    }

    #[test]
    fn the_unit_runs_the_installed_binary_hardened() {
        let unit = service_text(Path::new("/usr/local/bin/geowall"));
        assert!(unit.contains(
            "\nExecStart=/usr/local/bin/geowall run --config /etc/geowall/geowall.toml\n"
        ));
        for line in [
            "Restart=always",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "ProtectHome=yes",
            "AssertPathIsMountPoint=/sys/fs/bpf",
            "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_DAC_READ_SEARCH",
        ] {
            assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
        }
        assert!(!unit.contains('@'));
    }

    #[test]
    fn config_states() {
        use ConfigState::*;
        assert_eq!(config_state(None, Some("a"), "b"), Missing);
        assert_eq!(config_state(Some("b"), Some("a"), "b"), Current);
        assert_eq!(config_state(Some("a"), Some("a"), "b"), Unedited);
        assert_eq!(config_state(Some("c"), Some("a"), "b"), Edited);
        // There before any install, and not what we would write: not ours.
        assert_eq!(config_state(Some("c"), None, "b"), Edited);
        assert_eq!(
            new_path(Path::new("/etc/geowall/geowall.toml")),
            Path::new("/etc/geowall/geowall.toml.new")
        );
    }

    #[test]
    fn entries_cover_every_piece_once_binary_last() {
        let paths = Paths::new(Path::new("/usr/local")).unwrap();
        let e = entries(&paths, Mode::Audit, Path::new("/bin/true"));
        let names: Vec<String> = e.iter().map(|e| e.path.display().to_string()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:#?}");
        assert_eq!(names.last().unwrap(), "/usr/local/bin/geowall");
        assert_eq!(names[0], CONFIG_PATH);
        for want in [
            "/usr/local/lib/systemd/system/geowall.service",
            "/usr/local/share/bash-completion/completions/geowall",
            "/usr/local/share/fish/vendor_completions.d/geowall.fish",
            "/usr/local/share/man/man1/geowall.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing");
        }
        assert_eq!(
            e.iter().filter(|e| e.kind == Kind::Config).count(),
            1 + SHIPPED_POLICIES.len()
        );
    }

    #[test]
    fn manifest_round_trips_and_refuses_garbage() {
        let m = Manifest {
            version: "0.1.0".into(),
            prefix: "/usr/local".into(),
            dirs: vec!["/etc/geowall".into(), "/usr/local/share/my dir".into()],
            files: vec![
                ManifestFile {
                    path: "/usr/local/bin/geowall".into(),
                    mode: 0o755,
                    kind: Kind::File,
                    sha256: Some("ab".repeat(32)),
                },
                ManifestFile {
                    path: "/etc/geowall/geowall.toml".into(),
                    mode: 0o644,
                    kind: Kind::Config,
                    sha256: None,
                },
            ],
        };
        let text = m.render();
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        assert!(text.contains("\nfile 755 abab"));
        assert!(text.contains("\nconfig 644 - /etc/geowall/geowall.toml\n"));
        assert!(Manifest::parse("hello\n").is_err());
        assert!(Manifest::parse(&format!("{MANIFEST_HEADER}\nfile 7x9 - /x\n")).is_err());
        assert!(Manifest::parse(&format!("{MANIFEST_HEADER}\nfile 644 - rel\n")).is_err());
    }
}
