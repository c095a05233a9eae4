//! DNS in the kernel tests: a real authoritative server (NSD, from
//! Debian's `nsd` package) on a loopback address of its own, serving a test
//! zone; jobs given a resolv.conf of their own in a mount namespace (the
//! host's is never touched); and the resolver clients users run (glibc,
//! musl, Go, Node, Java, dig), built or found once per test process.

use std::{
    fs,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use crate::TempDir;

static SERVERS: AtomicU32 = AtomicU32::new(0);

/// A loopback address no other test of this process uses: `127.53.P.N`.
pub fn unique_loopback() -> IpAddr {
    let n = SERVERS.fetch_add(1, Ordering::Relaxed);
    let p = std::process::id() % 250;
    IpAddr::from([127, 53, p as u8, (1 + n % 250) as u8])
}

/// The test zone `test.`: every address on loopback, in the ranges test
/// maps tag (127.20/16 `US`, 127.30/16 `DE`).
///
/// - `api.partner.test` (US), `eu.partner.test` (DE), `denied.test` (DE);
/// - `chain1` → `chain2` → `chain3` (US): a CNAME chain;
/// - `shared1.test`, `shared2.test`: one address (US), two names;
/// - `short.test` (US) with a TTL of 1 s;
/// - `mail.test MX mx.test`: `mx.test` (US) comes as glue in the additional
///   section only;
/// - `big.test`: 100 addresses, too large for UDP (truncated: TCP);
/// - `v6.test AAAA ::1`; `nx.test` does not exist.
pub fn test_zone(_ns: IpAddr) -> String {
    let mut z = String::from(
        "$ORIGIN test.\n$TTL 60\n\
         @ SOA ns.test. admin.test. 1 3600 600 86400 60\n\
         @ NS ns.test.\n\
         ns A 127.53.0.53\n\
         api.partner A 127.20.0.10\n\
         eu.partner A 127.30.0.10\n\
         denied A 127.30.0.11\n\
         chain1 CNAME chain2\n\
         chain2 CNAME chain3\n\
         chain3 A 127.20.0.12\n\
         shared1 A 127.20.0.13\n\
         shared2 A 127.20.0.13\n\
         short 1 A 127.20.0.14\n\
         mail MX 10 mx.test.\n\
         mx A 127.20.0.15\n\
         v6 AAAA ::1\n",
    );
    for i in 1..=100 {
        z.push_str(&format!("big A 127.20.1.{i}\n"));
    }
    z
}

/// A running NSD serving `zone` (the zone `test.`) on `addr:53`, stopped on
/// drop.
pub struct DnsServer {
    child: Option<Child>,
    dir: TempDir,
    pub addr: IpAddr,
}

impl DnsServer {
    /// Serves the test zone on a loopback address of its own.
    pub fn start() -> DnsServer {
        let addr = unique_loopback();
        Self::serve(addr, &test_zone(addr))
    }

    /// Serves `zone` (the zone `test.`) on `addr:53`.
    pub fn serve(addr: IpAddr, zone: &str) -> DnsServer {
        let dir = TempDir::new("nsd");
        let d = dir.path().display();
        fs::write(dir.path().join("test.zone"), zone).expect("write zone");
        let conf = format!(
            "server:\n  ip-address: {addr}\n  port: 53\n  do-ip6: {v6}\n  do-ip4: {v4}\n  \
             username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  zonelistfile: \"{d}/zone.list\"\n  \
             database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  \
             xfrdir: \"{d}\"\n  logfile: \"{d}/nsd.log\"\n  server-count: 1\n  tcp-count: 64\n  \
             verbosity: 1\n  hide-version: yes\n  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\n\
             remote-control:\n  control-enable: no\n\
             zone:\n  name: \"test.\"\n  zonefile: \"test.zone\"\n",
            v6 = if addr.is_ipv6() { "yes" } else { "no" },
            v4 = if addr.is_ipv4() { "yes" } else { "no" },
        );
        let conf_path = dir.path().join("nsd.conf");
        fs::write(&conf_path, conf).expect("write nsd.conf");
        let child = Command::new("nsd")
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nsd (cargo xtask setup installs it)");
        let server = DnsServer {
            child: Some(child),
            dir,
            addr,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if query_a(self.addr, "ns.test").is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nsd on {} not answering after 10 s:\n{}",
                self.addr,
                fs::read_to_string(self.dir.path().join("nsd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A resolv.conf naming this server, written into its folder.
    pub fn resolv_conf(&self) -> PathBuf {
        let p = self.dir.path().join("resolv.conf");
        fs::write(
            &p,
            format!("nameserver {}\noptions timeout:2 attempts:2\n", self.addr),
        )
        .expect("write resolv.conf");
        p
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the pid of our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Serialises the tests that serve on `[::1]:53` (there is one such
/// address): held while the server runs.
pub fn ipv6_server_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A "resolver" on `addr:53` that reads every query and answers none.
pub struct Silent {
    socket: UdpSocket,
    pub addr: IpAddr,
}

impl Silent {
    pub fn start() -> Silent {
        let addr = unique_loopback();
        let socket = UdpSocket::bind(SocketAddr::new(addr, 53)).expect("bind the silent resolver");
        let reader = socket.try_clone().expect("clone");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while reader.recv(&mut buf).is_ok() {}
        });
        Silent { socket, addr }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: shutdown(2) on our own socket wakes the reader.
        unsafe { libc::shutdown(self.socket.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

/// Asks `server` (directly, from the test process: not a governed job) for
/// `name`'s first A record.
pub fn query_a(server: IpAddr, name: &str) -> Option<String> {
    let out = Command::new("dig")
        .args(["+short", "+time=1", "+tries=1"])
        .arg(format!("@{server}"))
        .arg(name)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(str::to_owned)
}

/// `CMD…` run with `resolv` as its /etc/resolv.conf: in a mount namespace
/// of its own (the host's file is never touched), as uid/gid `user` when
/// given (dropping privileges after the bind mount).
pub fn with_resolv(resolv: &Path, user: Option<u32>, cmd: &[&str]) -> Vec<String> {
    let mut argv = vec![
        "unshare".to_owned(),
        "--mount".to_owned(),
        "--propagation".to_owned(),
        "private".to_owned(),
        "sh".to_owned(),
        "-c".to_owned(),
        "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"".to_owned(),
        resolv.display().to_string(),
    ];
    if let Some(uid) = user {
        argv.extend([
            "setpriv".to_owned(),
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".to_owned(),
            "--inh-caps=-all".to_owned(),
            "--bounding-set=-all".to_owned(),
        ]);
    }
    argv.extend(cmd.iter().map(|s| (*s).to_owned()));
    argv
}

/// Where the clients are built (once per `target/`).
fn client_dir() -> PathBuf {
    let dir = crate::bin_dir_pub().join("dns-clients");
    fs::create_dir_all(&dir).expect("create the clients' folder");
    dir
}

fn clients_src(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(rel)
}

/// The musl resolver probe (`clients/resolve.c`, linked statically).
pub fn musl_resolver() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = client_dir().join("resolve-musl");
            let status = Command::new("musl-gcc")
                .args(["-static", "-O2", "-o"])
                .arg(&out)
                .arg(clients_src("resolve.c"))
                .status()
                .expect("run musl-gcc (cargo xtask setup installs musl-tools)");
            assert!(status.success(), "musl-gcc failed");
            out
        })
        .clone()
}

/// The Go resolver probe (`clients/goresolve`, Go's own resolver).
pub fn go_resolver() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = client_dir().join("resolve-go");
            let cache = client_dir().join("go-cache");
            let status = Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg(".")
                .current_dir(clients_src("goresolve"))
                .env("GOCACHE", &cache)
                .env("GOPATH", client_dir().join("gopath"))
                .env("GOFLAGS", "-mod=mod")
                .env("CGO_ENABLED", "0")
                .status()
                .expect("run go build (cargo xtask setup installs golang-go)");
            assert!(status.success(), "go build failed");
            out
        })
        .clone()
}

/// `node clients/resolve.js MODE` (`resolve`: c-ares; `lookup`:
/// getaddrinfo).
pub fn node_resolver(mode: &str) -> Vec<String> {
    vec![
        "node".into(),
        clients_src("resolve.js").display().to_string(),
        mode.into(),
    ]
}

/// `java clients/Resolve.java` (InetAddress).
pub fn java_resolver() -> Vec<String> {
    vec![
        "java".into(),
        "-Xshare:auto".into(),
        clients_src("Resolve.java").display().to_string(),
    ]
}

/// The lines a resolver probe printed for each name: `NAME ok ADDRS` or
/// `NAME error WHY`, as (name, ok, rest).
pub fn answers(stdout: &[u8]) -> Vec<(String, bool, String)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            let name = it.next()?.to_owned();
            let status = it.next()?;
            if status != "ok" && status != "error" {
                return None;
            }
            Some((name, status == "ok", it.next().unwrap_or("").to_owned()))
        })
        .collect()
}
