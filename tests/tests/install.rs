//! `geowall install` and `geowall uninstall` in throwaway roots: the files,
//! their modes and contents, an edited config kept with `.new` beside it,
//! repeats that change nothing; and, against the real kernel, the installed
//! binary's agent running with exactly the systemd unit's capabilities, then
//! detached and unpinned by `geowall uninstall`.

use std::{
    collections::BTreeMap,
    fs,
    os::{fd::AsFd, unix::fs::PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::SystemTime,
};

use geowall::kernel::sys::{attach_type, cgroup_prog_ids};
use geowall_tests::{AgentSpec, TempDir, TestCgroup, UsDe, geowall, outcomes, run_probe};

const CONFIG: &str = "etc/geowall/geowall.toml";
const BIN: &str = "usr/local/bin/geowall";
const UNIT: &str = "usr/local/lib/systemd/system/geowall.service";
const MANIFEST: &str = "var/lib/geowall/install-manifest";

/// Runs `BINARY ARGS…` (no DESTDIR from the environment).
fn run(binary: &Path, args: &[&str]) -> Output {
    Command::new(binary)
        .args(args)
        .env_remove("DESTDIR")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()))
}

/// Runs `BINARY ARGS…`, which must succeed; returns its standard output.
#[track_caller]
fn ok(binary: &Path, args: &[&str]) -> String {
    let out = run(binary, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "geowall {} failed ({}):\n{stdout}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn install(root: &Path, extra: &[&str]) -> String {
    let root = root.to_str().unwrap();
    let mut args = vec!["install", "--root", root];
    args.extend_from_slice(extra);
    ok(&geowall(), &args)
}

fn uninstall(binary: &Path, root: &Path, extra: &[&str]) -> String {
    let root = root.to_str().unwrap();
    let mut args = vec!["uninstall", "--root", root];
    args.extend_from_slice(extra);
    ok(binary, &args)
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every path under `root` (relative) with its mode and modification time.
fn tree(root: &Path) -> BTreeMap<String, (u32, SystemTime)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, SystemTime)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            out.insert(
                rel,
                (meta.permissions().mode() & 0o7777, meta.modified().unwrap()),
            );
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn install_writes_every_piece_with_its_mode_and_a_repeat_changes_nothing() {
    let dir = TempDir::new("install");
    let root = dir.path().join("root");
    let out = install(&root, &[]);
    assert!(out.contains("installing into"), "{out}");
    assert!(
        out.contains("start the agent with `systemctl daemon-reload"),
        "{out}"
    );

    // The binary: a copy of the running one, executable.
    assert_eq!(
        fs::read(root.join(BIN)).unwrap(),
        fs::read(geowall()).unwrap()
    );
    assert_eq!(mode(&root.join(BIN)), 0o755);
    // The config: audit mode, the builtin map, nothing bound host-wide.
    let config = fs::read_to_string(root.join(CONFIG)).unwrap();
    assert_eq!(mode(&root.join(CONFIG)), 0o644);
    assert!(config.contains("\npolicy_dir = \"policies\"\n"), "{config}");
    let policy = fs::read_to_string(root.join("etc/geowall/policies/eu-only.toml")).unwrap();
    assert!(policy.contains("\nmode = \"audit\""), "{policy}");
    // A policy naming cloud regions needs a cloud map source: installed as
    // an example the agent does not read.
    assert!(
        root.join("etc/geowall/policies/aws-eu-regions.toml.example")
            .exists()
    );
    assert!(
        !root
            .join("etc/geowall/policies/aws-eu-regions.toml")
            .exists()
    );
    assert!(config.contains("\ncgroup = \"/\"\n"), "{config}");
    assert!(
        config.contains("\nallow_host_enforce = false\n"),
        "{config}"
    );
    assert!(config.contains("\nkind = \"builtin\"\n"), "{config}");
    // ... and the agent accepts it (maps compiled, policies checked).
    let check = ok(
        &geowall(),
        &["check", "--config", root.join(CONFIG).to_str().unwrap()],
    );
    assert!(check.contains("policy eu-only (Audit)"), "{check}");
    // The unit runs the installed binary on the installed config.
    let unit = fs::read_to_string(root.join(UNIT)).unwrap();
    assert!(
        unit.contains(
            "\nExecStart=/usr/local/bin/geowall run --config /etc/geowall/geowall.toml\n"
        ),
        "{unit}"
    );
    // Folders: the log folder is not world-readable.
    for (folder, want) in [
        ("etc/geowall", 0o755),
        ("etc/geowall/policies", 0o755),
        ("var/lib/geowall", 0o755),
        ("var/log/geowall", 0o750),
    ] {
        assert_eq!(mode(&root.join(folder)), want, "{folder}");
    }
    // Completions and man pages, as `geowall completions`/`manpage` print.
    for (shell, path) in [
        (
            "bash",
            "usr/local/share/bash-completion/completions/geowall",
        ),
        ("zsh", "usr/local/share/zsh/site-functions/_geowall"),
        (
            "fish",
            "usr/local/share/fish/vendor_completions.d/geowall.fish",
        ),
    ] {
        let printed = run(&geowall(), &["completions", shell]).stdout;
        assert_eq!(fs::read(root.join(path)).unwrap(), printed, "{shell}");
        assert_eq!(mode(&root.join(path)), 0o644);
    }
    let man = root.join("usr/local/share/man/man1");
    assert_eq!(
        fs::read(man.join("geowall.1")).unwrap(),
        run(&geowall(), &["manpage"]).stdout
    );
    for page in [
        "geowall-install.1",
        "geowall-uninstall.1",
        "geowall-map-lookup.1",
    ] {
        assert!(man.join(page).is_file(), "{page}");
    }
    // The manifest lists every file.
    let manifest = fs::read_to_string(root.join(MANIFEST)).unwrap();
    for path in [BIN, CONFIG, UNIT] {
        assert!(
            manifest.contains(&format!(" /{path}\n")),
            "{path}:\n{manifest}"
        );
    }

    // A repeat changes nothing: not a byte, not a mode, not a time.
    let before = tree(&root);
    let out = install(&root, &[]);
    assert!(!out.contains("  installed  "), "{out}");
    assert!(!out.contains("  updated  "), "{out}");
    assert!(out.contains("unchanged  /usr/local/bin/geowall"), "{out}");
    assert_eq!(tree(&root), before);
}

#[test]
fn an_edited_config_is_kept_and_the_new_one_goes_beside_it() {
    let dir = TempDir::new("install-edit");
    let root = dir.path().join("root");
    let config = root.join(CONFIG);
    let new = root.join("etc/geowall/geowall.toml.new");
    install(&root, &[]);

    // Unedited: a new mode replaces a policy file in place.
    let out = install(&root, &["--mode", "enforce"]);
    assert!(
        out.contains("updated    /etc/geowall/policies/eu-only.toml"),
        "{out}"
    );
    assert!(
        fs::read_to_string(root.join("etc/geowall/policies/eu-only.toml"))
            .unwrap()
            .contains("\nmode = \"enforce\"")
    );
    assert!(!new.exists());

    // Edited: kept as it is, the new version beside it, and said so.
    let edited = fs::read_to_string(&config).unwrap() + "# tuned for this host\n";
    fs::write(&config, &edited).unwrap();
    let out = install(&root, &["--mode", "audit"]);
    assert_eq!(fs::read_to_string(&config).unwrap(), edited);
    assert!(
        fs::read_to_string(&new)
            .unwrap()
            .contains("\npolicy_dir = \"policies\"")
    );
    assert_eq!(mode(&new), 0o644);
    assert!(
        out.contains("kept       /etc/geowall/geowall.toml"),
        "{out}"
    );
    assert!(
        out.contains("/etc/geowall/geowall.toml was edited and is left as it is; the new version is /etc/geowall/geowall.toml.new"),
        "{out}"
    );
    // Again: the same, and nothing rewritten.
    let before = tree(&root);
    install(&root, &["--mode", "audit"]);
    assert_eq!(tree(&root), before);

    // The operator takes the new version: the .new goes.
    fs::copy(&new, &config).unwrap();
    let out = install(&root, &["--mode", "audit"]);
    assert!(
        out.contains("unchanged  /etc/geowall/geowall.toml"),
        "{out}"
    );
    assert!(
        out.contains("removed    /etc/geowall/geowall.toml.new"),
        "{out}"
    );
    assert!(!new.exists());

    // A config written by hand before any install is not geowall's either.
    let dir2 = TempDir::new("install-preexisting");
    let root2 = dir2.path().join("root");
    fs::create_dir_all(root2.join("etc/geowall")).unwrap();
    fs::write(root2.join(CONFIG), "[agent]\ncgroup = \"/executor\"\n").unwrap();
    install(&root2, &[]);
    assert_eq!(
        fs::read_to_string(root2.join(CONFIG)).unwrap(),
        "[agent]\ncgroup = \"/executor\"\n"
    );
    assert!(root2.join("etc/geowall/geowall.toml.new").exists());
    let out = uninstall(&geowall(), &root2, &[]);
    assert!(
        out.contains("kept /etc/geowall/geowall.toml: it was edited"),
        "{out}"
    );
    assert!(root2.join(CONFIG).exists());
    assert!(!root2.join("etc/geowall/geowall.toml.new").exists());
}

#[test]
fn uninstall_removes_what_install_wrote_and_keeps_the_logs() {
    let dir = TempDir::new("uninstall");
    let root = dir.path().join("root");
    install(&root, &[]);
    let log = root.join("var/log/geowall/audit.jsonl");
    fs::write(&log, "{\"v\":1}\n").unwrap();
    // An operator's own file in geowall's folder stays, and so does the folder.
    let own = root.join("var/lib/geowall/own-networks.cidr");
    fs::write(&own, "192.0.2.0/24 DE\n").unwrap();

    let out = uninstall(&geowall(), &root, &["--keep-logs"]);
    assert!(
        out.contains("nothing    attached: no agent, no pins"),
        "{out}"
    );
    assert!(out.contains("removed    /usr/local/bin/geowall"), "{out}");
    assert!(
        out.contains("kept the audit logs in /var/log/geowall"),
        "{out}"
    );
    let left: Vec<String> = tree(&root).into_keys().collect();
    assert_eq!(
        left,
        [
            "var",
            "var/lib",
            "var/lib/geowall",
            "var/lib/geowall/own-networks.cidr",
            "var/log",
            "var/log/geowall",
            "var/log/geowall/audit.jsonl",
        ],
        "{out}"
    );

    // Again: nothing to do, and that is not an error.
    let out = uninstall(&geowall(), &root, &[]);
    assert!(out.contains("nothing to uninstall"), "{out}");

    // Purging takes the logs and edited configs too. (/var/log and
    // /var/lib were there before this install: they stay.)
    fs::remove_file(&own).unwrap();
    install(&root, &[]);
    fs::write(root.join(CONFIG), "# mine now\n").unwrap();
    let out = uninstall(&geowall(), &root, &["--purge-logs", "--purge-config"]);
    assert!(out.contains("purged     /var/log/geowall"), "{out}");
    assert!(
        out.contains("removed    /etc/geowall/geowall.toml"),
        "{out}"
    );
    assert_eq!(
        tree(&root).into_keys().collect::<Vec<_>>(),
        ["var", "var/lib", "var/log"]
    );

    // --keep-logs and --purge-logs contradict each other.
    let out = run(
        &geowall(),
        &[
            "uninstall",
            "--root",
            root.to_str().unwrap(),
            "--keep-logs",
            "--purge-logs",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let dir = TempDir::new("install-unit");
    let root = dir.path().join("root");
    install(&root, &[]);
    // verify wants the ExecStart binary to exist: point it at the copy.
    let unit = fs::read_to_string(root.join(UNIT))
        .unwrap()
        .replace("/usr/local/bin/geowall", root.join(BIN).to_str().unwrap());
    let path = dir.path().join("geowall.service");
    fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package) is needed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}

/// `CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN` → `bpf,net_admin`.
fn unit_capabilities(unit: &str) -> Vec<String> {
    unit.lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit bounds its capabilities")
        .split_whitespace()
        .map(|c| c.strip_prefix("CAP_").unwrap().to_lowercase())
        .collect()
}

/// The capability bit numbers of `names` (linux/capability.h).
fn capability_mask(names: &[String]) -> u64 {
    names
        .iter()
        .map(|n| match n.as_str() {
            "dac_read_search" => 2,
            "net_admin" => 12,
            "sys_admin" => 21,
            "sys_resource" => 24,
            "perfmon" => 38,
            "bpf" => 39,
            other => panic!("capability {other} is not known to this test"),
        })
        .fold(0, |m, bit: u32| m | (1u64 << bit))
}

/// Programs attached directly to `cgroup`, for every attach type geowall uses.
fn attached(cgroup: &Path) -> usize {
    let dir = fs::File::open(cgroup).unwrap();
    attach_type::ALL
        .iter()
        .map(|t| cgroup_prog_ids(dir.as_fd(), *t).unwrap().len())
        .sum()
}

#[test]
fn the_installed_agent_enforces_with_the_units_capabilities_and_uninstall_detaches_it() {
    let cg = TestCgroup::new("install-kernel");
    let bound = cg.child("bound");
    let dir = TempDir::new("install-kernel");
    let root = dir.path().join("root");
    install(&root, &[]);
    let bin = root.join(BIN);
    let caps = unit_capabilities(&fs::read_to_string(root.join(UNIT)).unwrap());
    let bounding = format!(
        "--bounding-set=-all,{}",
        caps.iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",")
    );

    // The installed binary, as systemd would start it: root with only the
    // unit's capabilities, no new privileges.
    let mut agent = AgentSpec::new(&cg)
        .cidr_map("us-de.cidr", "127.20.0.0/16 US\n127.30.0.0/16 DE\n")
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\ncgroups = [\"/bound\"]\n")
        .keep_pins()
        .launcher(&[
            PathBuf::from("setpriv"),
            PathBuf::from(bounding),
            PathBuf::from("--inh-caps=-all"),
            PathBuf::from("--no-new-privs"),
            bin.clone(),
        ])
        .start();
    let status = agent.status();
    let pid = status["status"]["pid"].as_u64().expect("status.pid");
    let proc_status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let bnd = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(bnd, capability_mask(&caps), "the agent's bounding set");
    assert!(attached(&agent.governed) >= 5, "programs attached");

    // It enforces, and names a cgroup it did not make by its path
    // (open_by_handle_at: CAP_DAC_READ_SEARCH).
    let late = cg.child("bound/late");
    let usde = UsDe::new();
    assert_eq!(
        outcomes(&run_probe(Some(&late), &usde.ops("tcp"))),
        ["EPERM", "ok"]
    );
    let record = agent.wait_record("for the denied connect", |r| {
        r["verdict"] == "deny" && r["dst"] == "127.20.0.1"
    });
    assert_eq!(record["cgroup"], format!("{}/bound/late", cg.rel()));

    // The installed config now names this agent (an edit, so kept).
    fs::copy(&agent.config, root.join(CONFIG)).unwrap();
    let installed_config = root.join(CONFIG);
    let status = ok(
        &bin,
        &["status", "--config", installed_config.to_str().unwrap()],
    );
    assert!(status.starts_with("agent: running"), "{status}");

    let out = uninstall(&bin, &root, &[]);
    assert!(
        out.contains("stopped    the agent: programs detached, pins removed"),
        "{out}"
    );
    assert!(
        out.contains("kept /etc/geowall/geowall.toml: it was edited"),
        "{out}"
    );
    assert!(agent.wait_exit().success(), "{}", agent.stderr());
    assert!(
        !agent.bpffs.exists(),
        "pins left at {}",
        agent.bpffs.display()
    );
    assert_eq!(attached(&agent.governed), 0, "programs left attached");
    assert_eq!(attached(&bound), 0);
    assert_eq!(
        outcomes(&run_probe(Some(&late), &usde.ops("tcp"))),
        ["ok", "ok"],
        "nothing judges any more"
    );
    assert!(!bin.exists());

    // Again, with the binary gone: nothing to do.
    let out = uninstall(&geowall(), &root, &[]);
    assert!(out.contains("nothing to uninstall"), "{out}");
}
