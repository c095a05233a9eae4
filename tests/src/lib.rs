//! The harness of geowall's kernel tests: cgroups, agents and probes that
//! clean up after themselves, even when a test fails.
//!
//! Every test governs a cgroup of its own (never the root), pins under a
//! bpffs folder of its own, and sends traffic only to loopback or from
//! inside a fresh network namespace that has nothing but `lo`.

use std::{
    collections::BTreeMap,
    ffi::{OsStr, OsString},
    fs,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use serde_json::Value;

pub mod dns;
pub mod etcd;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process and call.
fn unique(tag: &str) -> String {
    format!(
        "geowall-test-{}-{}-{tag}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The folder holding the built binaries (`target/debug`).
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GEOWALL_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> → target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The folder holding the built binaries, for the harness's own builds.
pub(crate) fn bin_dir_pub() -> PathBuf {
    bin_dir()
}

/// The `geowall` binary under test.
///
/// `cargo test -p geowall-tests` does not rebuild it: unless
/// GEOWALL_BIN_DIR names the binaries to test, it must be newer than every
/// source it is built from, or the tests would judge stale code.
pub fn geowall() -> PathBuf {
    static STALE: OnceLock<Option<String>> = OnceLock::new();
    let p = geowall_unchecked();
    assert!(
        p.is_file(),
        "{} is missing: build it first (`cargo xtask test` does)",
        p.display()
    );
    if std::env::var_os("GEOWALL_BIN_DIR").is_none()
        && let Some(why) = STALE.get_or_init(|| staleness(&p))
    {
        panic!("{why}");
    }
    p
}

/// The same sources built as the next patch release (`cargo xtask test`
/// builds it into `target/debug/upgrade-test/`), for the upgrade test: its
/// kernel programs differ from [`geowall`]'s by the version they carry.
pub fn geowall_next() -> PathBuf {
    let p = bin_dir().join("upgrade-test").join("geowall");
    assert!(
        p.is_file(),
        "{} is missing: `cargo xtask test` builds it (the agent built with \
         GEOWALL_VERSION set to the next release)",
        p.display()
    );
    if let Some(why) = staleness(&p) {
        panic!("{why}\n(the upgrade-test build is rebuilt by `cargo xtask test`)");
    }
    p
}

/// Where the `geowall` binary is, checked for nothing (for cleanup that
/// runs while a test panics).
fn geowall_unchecked() -> PathBuf {
    bin_dir().join("geowall")
}

/// `geowall SUB --config CONFIG`, for the caller to add the rest of the
/// arguments to and run. SUB may be several words (`map lookup`). The
/// config comes right after the subcommand: `exec` takes no option after
/// its `--`.
pub fn geowall_cmd(sub: &str, config: &Path) -> Command {
    let mut cmd = Command::new(geowall());
    cmd.args(sub.split_whitespace()).arg("--config").arg(config);
    cmd
}

/// Why `bin` is older than the agent's sources, if it is.
fn staleness(bin: &Path) -> Option<String> {
    let built = fs::metadata(bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace");
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for rel in ["agent/src", "agent/build.rs", "common/src", "ebpf/src"] {
        newest_file(&root.join(rel), &mut newest);
    }
    let (changed, file) = newest?;
    (changed > built).then(|| {
        format!(
            "target/debug/geowall is older than the sources: run `cargo build` (or `cargo xtask test`)\n\
             ({} changed after {} was built)",
            file.display(),
            bin.display()
        )
    })
}

/// Keeps in `newest` the most recently modified file at or under `path`
/// (hidden files, such as editors' swap files, aside; a file that vanishes
/// while we look, as an editor's rename-into-place makes one, too).
fn newest_file(path: &Path, newest: &mut Option<(SystemTime, PathBuf)>) {
    if path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    {
        return;
    }
    let Ok(meta) = fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        for entry in fs::read_dir(path).into_iter().flatten().flatten() {
            newest_file(&entry.path(), newest);
        }
    } else if let Ok(modified) = meta.modified()
        && newest.as_ref().is_none_or(|(t, _)| modified > *t)
    {
        *newest = Some((modified, path.to_path_buf()));
    }
}

/// The probe binary.
pub fn netprobe() -> PathBuf {
    let p = bin_dir().join("netprobe");
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

/// The probe binary's path (what flow records name as its `exe`).
pub fn netprobe_path() -> PathBuf {
    netprobe()
}

/// A file of the repository's test data (`tests/data/…`).
pub fn workspace_data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(rel)
}

/// A path of the repository (`policies`, `../shared/data/…`).
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// The cgroup v2 mount, from /proc/mounts.
fn cgroup2_mount() -> PathBuf {
    let mounts = fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup2 hierarchy is mounted")
}

/// A temporary folder, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(unique(tag));
        fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A cgroup created for one test under the hierarchy root, removed (with
/// every sub-cgroup) on drop.
pub struct TestCgroup {
    path: PathBuf,
    rel: String,
}

impl TestCgroup {
    pub fn new(tag: &str) -> Self {
        let name = unique(tag);
        let path = cgroup2_mount().join(&name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Self {
            path,
            rel: format!("/{name}"),
        }
    }

    /// Absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path relative to the hierarchy (`/geowall-test-…`).
    pub fn rel(&self) -> &str {
        &self.rel
    }

    /// Creates a sub-cgroup (`a/b` allowed) and returns its absolute path.
    pub fn child(&self, rel: &str) -> PathBuf {
        let p = self.path.join(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        p
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    // A cgroup can only go once empty. Probes of a test that failed (a
    // connect loop nobody joined) may still run: kill what is left.
    for attempt in 0..50 {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => {
                if attempt == 0 {
                    kill_cgroup(dir);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    eprintln!("warning: could not remove cgroup {}", dir.display());
}

/// Kills every process in the test's cgroup `dir` and below (Linux 5.14+:
/// `cgroup.kill`; older kernels lack the file and nothing happens).
fn kill_cgroup(dir: &Path) {
    let mount = cgroup2_mount();
    assert!(
        dir.strip_prefix(&mount)
            .is_ok_and(|rel| rel.file_name().is_some()),
        "refusing to kill {}: not a cgroup below {}",
        dir.display(),
        mount.display()
    );
    let kill = dir.join("cgroup.kill");
    if kill.exists()
        && let Err(e) = fs::write(&kill, "1")
    {
        eprintln!("warning: {}: {e}", kill.display());
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.path);
    }
}

/// A first port of [`geowall_common::DNS_SLOTS`] consecutive ports free for
/// UDP and TCP on 127.0.0.1 and ::1, unlike any this process chose before,
/// between 20000 and 32000.
pub fn free_dns_ports() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let slots = u32::from(geowall_common::DNS_SLOTS);
    for _ in 0..200 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Below the kernel's ephemeral range (32768 up, by default): a
        // port free now cannot be taken by some socket's automatic bind
        // (the forwarder's own sockets toward resolvers, a client's) before
        // the agent binds it.
        let base = 20_000 + ((std::process::id() * 97 + n * slots) % 12_000) / slots * slots;
        let base = base as u16;
        let free = (0..geowall_common::DNS_SLOTS).all(|i| {
            let p = base + i;
            std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
                && std::net::UdpSocket::bind(("::1", p)).is_ok()
                && std::net::TcpListener::bind(("::1", p)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free ports for a DNS forwarder");
}

/// A TCP port free on 127.0.0.1, below the ephemeral range and unlike any
/// this process chose before (an agent's metrics listener): the first of
/// a block [`free_dns_ports`] finds.
pub fn free_tcp_port() -> u16 {
    free_dns_ports()
}

/// One `GET /metrics` of the agent's metrics listener on `port`: the whole
/// HTTP answer.
pub fn scrape_metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// What an agent is started with.
pub struct AgentSpec<'a> {
    cgroup: &'a TestCgroup,
    maps: Vec<(String, String)>,
    body: String,
    agent_extra: String,
    detach_on_exit: bool,
    launcher: Vec<OsString>,
    audit_log: Option<PathBuf>,
}

impl<'a> AgentSpec<'a> {
    pub fn new(cgroup: &'a TestCgroup) -> Self {
        Self {
            cgroup,
            maps: Vec::new(),
            body: String::new(),
            agent_extra: String::new(),
            detach_on_exit: true,
            launcher: Vec::new(),
            audit_log: None,
        }
    }

    /// Write the audit log at `path` (a folder the test made: a small
    /// filesystem) instead of in the agent's temporary folder.
    pub fn audit_log(mut self, path: &Path) -> Self {
        self.audit_log = Some(path.to_path_buf());
        self
    }

    /// Start the agent as `ARGV… run --config …` instead of with the
    /// geowall under test (another geowall binary, or one behind
    /// `setpriv`). ARGV's program must exec the agent in its own process.
    pub fn launcher(mut self, argv: &[impl AsRef<OsStr>]) -> Self {
        self.launcher = argv.iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// A `cidr` map source named `file` with `content`.
    pub fn cidr_map(mut self, file: &str, content: &str) -> Self {
        self.maps.push((file.into(), content.into()));
        self
    }

    /// More config text (`[[policy]]` tables...).
    pub fn config(mut self, text: &str) -> Self {
        self.body.push_str(text);
        self.body.push('\n');
        self
    }

    /// More `[agent]` keys.
    pub fn agent_keys(mut self, text: &str) -> Self {
        self.agent_extra.push_str(text);
        self.agent_extra.push('\n');
        self
    }

    /// Creates sub-cgroups of the test's cgroup before the agent starts
    /// (static bindings must exist when it reads the config).
    pub fn child_cgroups(self, rels: &[&str]) -> Self {
        for rel in rels {
            self.cgroup.child(rel);
        }
        self
    }

    /// Keep programs and pins when the agent exits (as in production).
    pub fn keep_pins(mut self) -> Self {
        self.detach_on_exit = false;
        self
    }

    pub fn start(self) -> Agent {
        Agent::start(self)
    }
}

/// A running `geowall run`, stopped (and its pins removed) on drop.
pub struct Agent {
    child: Option<Child>,
    dir: TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub audit_log: PathBuf,
    pub bpffs: PathBuf,
    pub governed: PathBuf,
    detach_on_exit: bool,
    launcher: Vec<OsString>,
}

impl Agent {
    fn start(spec: AgentSpec<'_>) -> Agent {
        assert_ne!(spec.cgroup.rel(), "/", "tests never govern the root cgroup");
        let dir = TempDir::new("agent");
        let bpffs = PathBuf::from("/sys/fs/bpf").join(unique("pins"));
        let socket = dir.path().join("control.sock");
        let audit_log = spec
            .audit_log
            .clone()
            .unwrap_or_else(|| dir.path().join("audit.jsonl"));
        let mut text = format!(
            "[agent]\ncgroup = \"{}\"\nbpffs = \"{}\"\naudit_log = \"{}\"\nsocket = \"{}\"\n{}\n",
            spec.cgroup.rel(),
            bpffs.display(),
            audit_log.display(),
            socket.display(),
            spec.agent_extra
        );
        for (file, content) in &spec.maps {
            fs::write(dir.path().join(file), content).expect("write map");
            text.push_str(&format!("[[maps]]\nkind = \"cidr\"\npath = \"{file}\"\n\n"));
        }
        // Each agent keeps its approvals in its own folder (never the
        // host's, nor another test's).
        if !spec.body.contains("[approvals]") {
            text.push_str(&format!(
                "[approvals]\nstate_dir = \"{}\"\n\n",
                dir.path().join("approvals").display()
            ));
        }
        // Agents of tests that run side by side need forwarders of their own.
        if !spec.body.contains("[dns]") {
            text.push_str(&format!("[dns]\nport = {}\n\n", free_dns_ports()));
        }
        text.push_str(&spec.body);
        let config = dir.path().join("geowall.toml");
        fs::write(&config, &text).expect("write config");
        let mut agent = Agent {
            child: None,
            dir,
            config,
            socket,
            audit_log,
            bpffs,
            governed: spec.cgroup.path().to_path_buf(),
            detach_on_exit: spec.detach_on_exit,
            launcher: spec.launcher,
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.stderr"))
            .expect("agent stderr file");
        let mut cmd = match self.launcher.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                cmd
            }
            None => Command::new(geowall()),
        };
        cmd.arg("run").arg("--config").arg(&self.config);
        if self.detach_on_exit {
            cmd.arg("--detach-on-exit");
        }
        let child = cmd
            .env("GEOWALL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start geowall run");
        self.child = Some(child);
        self.wait_ready();
    }

    /// The agent's standard error so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("agent.stderr")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "geowall run exited ({status}) before it was ready:\n{}",
                    self.stderr()
                );
            }
            if let Ok(mut c) = geowall::control::Client::connect(&self.socket)
                && c.call(geowall::control::proto::GetStatus {}).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "geowall run not ready after 30 s:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The agent's pid.
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    /// Sends `signal` to the agent (a process this test started).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    /// Kills the agent with SIGKILL (a crash: nothing runs on its way out)
    /// and waits for it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("agent running");
        child.kill().expect("kill agent");
        child.wait().expect("wait agent");
    }

    /// Stops the agent with SIGTERM and waits for it; returns its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("agent running");
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait agent") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let status = child.wait().expect("wait agent");
                panic!(
                    "agent ignored SIGTERM for 20 s ({status}):\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to 10 s) for an agent told to stop by other means (`geowall
    /// stop`, `geowall uninstall`) to exit; returns its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("agent running");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait agent") {
                return status;
            }
            if Instant::now() > deadline {
                self.child = Some(child);
                panic!("the agent has not exited after 10 s:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the agent again with the same config.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "terminate the agent first");
        self.spawn();
    }

    /// Starts `binary` (another build of the agent) with the same config,
    /// as a package upgrade's restart does; it is used from here on.
    pub fn upgrade_to(&mut self, binary: &Path) {
        assert!(self.child.is_none(), "terminate the agent first");
        self.launcher = vec![binary.as_os_str().to_owned()];
        self.spawn();
    }

    /// Rewrites the config file (for reload tests).
    pub fn rewrite_config(&self, edit: impl FnOnce(&str) -> String) {
        let text = fs::read_to_string(&self.config).expect("read config");
        fs::write(&self.config, edit(&text)).expect("write config");
    }

    /// Runs `geowall ARGS…` with this agent's config (given last: not for
    /// `exec`, see [`Agent::exec`]).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(geowall())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run geowall")
    }

    /// Runs `geowall ARGS…` with this agent's config, which must succeed,
    /// and parses what it prints as JSON.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "geowall {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "geowall {} printed no JSON ({e}):\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `geowall status --json`: `{"agent", "enforcing", "version",
    /// "status": {"epoch", "events_dropped", …}}`.
    pub fn status(&self) -> Value {
        self.cli_json(&["status", "--json"])
    }

    /// The entry of policy `name` in `geowall status --json` (`null`
    /// when the agent has no such policy).
    pub fn policy_status(&self, name: &str) -> Value {
        let status = self.status();
        status["status"]["policies"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// The epoch of the tables in force; every table switch raises it.
    pub fn epoch(&self) -> u64 {
        let status = self.status();
        status["status"]["epoch"]
            .as_u64()
            .unwrap_or_else(|| panic!("no status.epoch in {status}"))
    }

    /// `geowall exec --policy POLICY -- CMD…`.
    pub fn exec(&self, policy: &str, cmd: &[impl AsRef<OsStr>]) -> Output {
        geowall_cmd("exec", &self.config)
            .args(["--policy", policy, "--"])
            .args(cmd)
            .output()
            .expect("run geowall exec")
    }

    /// `geowall exec --policy POLICY -- netprobe PROBE_ARGS…`.
    pub fn exec_probe(&self, policy: &str, probe_args: &[impl AsRef<OsStr>]) -> Output {
        let cmd: Vec<OsString> = std::iter::once(netprobe().into_os_string())
            .chain(probe_args.iter().map(|a| a.as_ref().to_owned()))
            .collect();
        self.exec(policy, &cmd)
    }

    /// Every record of the audit log so far (rotated files first). A last
    /// line without its newline is still being written: it is left for the
    /// next call.
    pub fn records(&self) -> Vec<Value> {
        let set = geowall::audit::log_files::LogSet::new(&self.audit_log);
        let mut out = Vec::new();
        for file in set.files().unwrap_or_default() {
            let text = fs::read_to_string(&file).unwrap_or_default();
            let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            out.extend(complete.lines().map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record {l}: {e}"))
            }));
        }
        out
    }

    /// The files of the audit log: rotated ones, oldest first, then the
    /// active one.
    pub fn log_files(&self) -> Vec<PathBuf> {
        geowall::audit::log_files::LogSet::new(&self.audit_log)
            .files()
            .expect("list the audit log's files")
    }

    /// Waits (up to 5 s) for a record matching `pred`.
    pub fn wait_record(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_record_for(what, Duration::from_secs(5), pred)
    }

    /// Waits (up to 5 s) for `count` records matching `pred`; returns all
    /// that match by then.
    pub fn wait_records(
        &self,
        what: &str,
        count: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let timeout = Duration::from_secs(5);
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.records();
            let matching: Vec<Value> = records.iter().filter(|r| pred(r)).cloned().collect();
            if matching.len() >= count {
                return matching;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} audit records {what} after {timeout:?}; records:\n{}",
                matching.len(),
                records
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits up to `timeout` for a record matching `pred`.
    pub fn wait_record_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.records().into_iter().find(|r| pred(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no audit record {what} after {timeout:?}; records:\n{}",
                self.records()
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the pid of our own child. A test may have
            // left it stopped (SIGSTOP): SIGTERM only acts once it runs.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
                libc::kill(child.id() as i32, libc::SIGCONT);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Whatever the agent left (a test that kept pins, a crash): remove.
        let _ = Command::new(geowall_unchecked())
            .arg("stop")
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(&self.bpffs);
    }
}

/// One probe operation's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProbeResult {
    op: String,
    target: String,
    result: String,
}

/// Parses the probe's output; panics (showing stderr) unless it exited 0.
fn probe_results(out: &Output) -> Vec<ProbeResult> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed ({}, signal {:?}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        out.status.signal(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad probe line {l}: {e}"));
            ProbeResult {
                op: v["op"].as_str().unwrap_or_default().into(),
                target: v["target"].as_str().unwrap_or_default().into(),
                result: v["result"].as_str().unwrap_or_default().into(),
            }
        })
        .collect()
}

/// The outcome of each probe operation, in order.
pub fn outcomes(out: &Output) -> Vec<String> {
    probe_results(out).into_iter().map(|r| r.result).collect()
}

/// Runs the probe directly (not through `geowall exec`), optionally inside
/// `cgroup`.
pub fn run_probe(cgroup: Option<&Path>, args: &[impl AsRef<OsStr>]) -> Output {
    let mut cmd = Command::new(netprobe());
    if let Some(cg) = cgroup {
        cmd.arg("--cgroup").arg(cg);
    }
    cmd.args(args).output().expect("run netprobe")
}

/// A TCP listener on `addr` (loopback), accepting in the background so
/// connects complete; shut down when dropped.
pub struct Listener {
    pub addr: std::net::SocketAddr,
    listener: std::net::TcpListener,
}

impl Drop for Listener {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // Wakes the accepting thread, which then ends.
        // SAFETY: shutdown(2) on our own socket.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

impl Listener {
    pub fn on(ip: &str) -> Listener {
        let listener =
            std::net::TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("listen on {ip}: {e}"));
        let addr = listener.local_addr().expect("local addr");
        let l2 = listener.try_clone().expect("clone listener");
        std::thread::spawn(move || {
            for conn in l2.incoming() {
                if conn.is_err() {
                    return;
                }
            }
        });
        Listener { addr, listener }
    }

    /// `ADDR:PORT` as the probe takes it.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }
}

/// Listeners on the two loopback addresses the test maps tag `US`
/// (127.20.0.1) and `DE` (127.30.0.1).
pub struct UsDe {
    pub us: Listener,
    pub de: Listener,
}

impl UsDe {
    pub fn new() -> Self {
        Self {
            us: Listener::on("127.20.0.1"),
            de: Listener::on("127.30.0.1"),
        }
    }

    /// Probe operations of `kind` (`tcp`, `tfo`…) to both, US first.
    pub fn ops(&self, kind: &str) -> Vec<String> {
        vec![
            format!("{kind}:{}", self.us.target()),
            format!("{kind}:{}", self.de.target()),
        ]
    }

    /// Asserts that a job under `policy` (one allowing the EU) cannot
    /// connect to US and can to DE.
    #[track_caller]
    pub fn assert_eu(&self, agent: &Agent, policy: &str) {
        assert_eq!(
            outcomes(&agent.exec_probe(policy, &self.ops("tcp"))),
            ["EPERM", "ok"],
            "connects to US, DE under {policy}"
        );
    }
}

impl Default for UsDe {
    fn default() -> Self {
        Self::new()
    }
}

/// Connects to `target` again and again for `ms` milliseconds from inside
/// `cgroup`; returns how often each outcome came.
pub fn loop_counts(cgroup: &Path, target: &str, ms: u64) -> BTreeMap<String, u64> {
    let out = run_probe(Some(cgroup), &[format!("tcploop:{target}:{ms}")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed ({}, signal {:?}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        out.status.signal(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("bad probe output ({e}): {stdout}"));
    v["counts"]
        .as_object()
        .unwrap_or_else(|| panic!("no counts in {v}"))
        .iter()
        .map(|(k, n)| {
            let n = n
                .as_u64()
                .unwrap_or_else(|| panic!("bad count {k}: {n} in {v}"));
            (k.clone(), n)
        })
        .collect()
}

/// [`loop_counts`] in the background.
pub fn connect_loop(
    cgroup: &Path,
    target: &str,
    ms: u64,
) -> std::thread::JoinHandle<BTreeMap<String, u64>> {
    let cgroup = cgroup.to_path_buf();
    let target = target.to_owned();
    std::thread::spawn(move || loop_counts(&cgroup, &target, ms))
}
