//! A real etcd cluster for the fleet tests: three members on loopback
//! ports, authentication on, data in a temporary folder; every member is
//! stopped by its pid on drop.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::TempDir;

/// The root user's password in test clusters.
pub const ROOT_PASSWORD: &str = "root-test-password";

/// Two free loopback ports per member, away from the ports other tests
/// take (the DNS tests': 9053 and 20000–32000) and above the kernel's
/// ephemeral range (to 60999 by default), where no automatic bind takes a
/// port between its check and etcd's bind.
fn free_ports(n: usize) -> Vec<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let mut out = Vec::new();
    for _ in 0..2000 {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 61_000 + ((std::process::id() * 131 + k * 7) % 4_500) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() && !out.contains(&port) {
            out.push(port);
            if out.len() == n {
                return out;
            }
        }
    }
    panic!("no free ports for etcd");
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A three-member etcd cluster on 127.0.0.1.
pub struct EtcdCluster {
    dir: TempDir,
    members: Vec<Member>,
    token: String,
    /// Authentication is on (etcdctl then runs as root).
    auth: bool,
    /// Clients speak TLS and authenticate by certificate.
    tls: Option<Tls>,
}

/// A CA of the test's own (openssl), its server certificate for
/// 127.0.0.1, and client certificates named by their common name.
pub struct Tls {
    dir: PathBuf,
    pub ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Tls {
    fn new(dir: &Path) -> Tls {
        let dir = dir.join("tls");
        fs::create_dir_all(&dir).expect("tls dir");
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=geowall-test-ca",
            ],
        );
        let tls = Tls {
            ca: dir.join("ca.pem"),
            dir,
        };
        tls.issue(
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth",
        );
        tls
    }

    /// Issues `NAME.pem` and `NAME.key` with extensions `ext`.
    fn issue(&self, name: &str, ext: &str) -> (PathBuf, PathBuf) {
        let ext_file = self.dir.join(format!("{name}.ext"));
        fs::write(&ext_file, ext).expect("write ext");
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "1",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
        (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        )
    }

    /// A client certificate and key whose common name is `user`.
    pub fn client(&self, user: &str) -> (PathBuf, PathBuf) {
        let pem = self.dir.join(format!("{user}.pem"));
        if pem.exists() {
            return (pem, self.dir.join(format!("{user}.key")));
        }
        self.issue(user, "extendedKeyUsage=clientAuth")
    }
}

impl EtcdCluster {
    /// Starts three members and waits for the cluster to answer; turns
    /// authentication on with a root user ([`ROOT_PASSWORD`]).
    pub fn start() -> EtcdCluster {
        Self::start_with(false)
    }

    /// [`EtcdCluster::start`] with TLS for clients, who authenticate by
    /// certificate (its common name is the user; root's is `root`).
    pub fn start_tls() -> EtcdCluster {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> EtcdCluster {
        let dir = TempDir::new("etcd");
        let tls = tls.then(|| Tls::new(dir.path()));
        let ports = free_ports(6);
        let members = (0..3)
            .map(|i| Member {
                name: format!("m{i}"),
                client: ports[2 * i],
                peer: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let mut cluster = EtcdCluster {
            token: format!("geowall-test-{}", std::process::id()),
            dir,
            members,
            auth: false,
            tls,
        };
        for i in 0..3 {
            cluster.start_member(i);
        }
        cluster.wait_healthy();
        if let Some(tls) = &cluster.tls {
            tls.client("root");
        }
        cluster.ctl_ok(&["user", "add", &format!("root:{ROOT_PASSWORD}")], false);
        cluster.ctl_ok(&["auth", "enable"], false);
        cluster.auth = true;
        cluster
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `i` (again: from its data folder).
    pub fn start_member(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} runs already");
        let initial = self.initial_cluster();
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let state = if data.exists() { "existing" } else { "new" };
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))
            .expect("etcd log");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut cmd = Command::new("etcd");
        if let Some(tls) = &self.tls {
            cmd.arg(format!(
                "--cert-file={}",
                tls.dir.join("server.pem").display()
            ))
            .arg(format!(
                "--key-file={}",
                tls.dir.join("server.key").display()
            ))
            .arg(format!("--trusted-ca-file={}", tls.ca.display()))
            .arg("--client-cert-auth");
        }
        let child = cmd
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .arg(format!(
                "--listen-client-urls={scheme}://127.0.0.1:{}",
                m.client
            ))
            .arg(format!(
                "--advertise-client-urls={scheme}://127.0.0.1:{}",
                m.client
            ))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{}", m.peer))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{}",
                m.peer
            ))
            .arg(format!("--initial-cluster={initial}"))
            .arg(format!("--initial-cluster-token={}", self.token))
            .arg(format!("--initial-cluster-state={state}"))
            .args(["--heartbeat-interval=100", "--election-timeout=1000"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian's etcd-server: `cargo xtask setup` installs it)");
        self.members[i].child = Some(child);
    }

    /// Stops member `i` (SIGKILL, as a crash).
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops every member.
    pub fn stop_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }

    /// Starts every stopped member and waits for the cluster.
    pub fn start_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.start_member(i);
            }
        }
        self.wait_healthy();
    }

    /// Client endpoints, as `[fleet] etcd` lists them.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client))
            .collect()
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The TLS material, for a cluster started with [`EtcdCluster::start_tls`].
    pub fn tls(&self) -> &Tls {
        self.tls.as_ref().expect("a TLS cluster")
    }

    /// `["http://…", …]`, TOML.
    pub fn endpoints_toml(&self) -> String {
        format!(
            "[{}]",
            self.endpoints()
                .iter()
                .map(|e| format!("\"{e}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn live_endpoints(&self) -> String {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `etcdctl ARGS…` against the live members (as root once `auth`).
    pub fn ctl(&self, args: &[&str], auth: bool) -> Output {
        self.ctl_at(&self.live_endpoints(), args, auth)
    }

    fn ctl_at(&self, endpoints: &str, args: &[&str], auth: bool) -> Output {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg("--command-timeout=5s");
        if let Some(tls) = &self.tls {
            let (cert, key) = tls.client("root");
            cmd.arg(format!("--cacert={}", tls.ca.display()))
                .arg(format!("--cert={}", cert.display()))
                .arg(format!("--key={}", key.display()));
        } else if auth {
            cmd.arg(format!("--user=root:{ROOT_PASSWORD}"));
        }
        cmd.args(args).output().expect("run etcdctl")
    }

    /// `etcdctl ARGS…` as root, which must succeed; its standard output.
    pub fn root_ctl(&self, args: &[&str]) -> String {
        self.ctl_ok(args, true)
    }

    fn ctl_ok(&self, args: &[&str], auth: bool) -> String {
        let out = self.ctl(args, auth);
        assert!(
            out.status.success(),
            "etcdctl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (up to 30 s) until a linearizable read through every live
    /// member works.
    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut out = None;
            for m in self.members.iter().filter(|m| m.child.is_some()) {
                let o = self.ctl_at(
                    &format!("{}://127.0.0.1:{}", self.scheme(), m.client),
                    &["get", "/geowall-test-health"],
                    self.auth,
                );
                if !o.status.success() {
                    out = Some(o);
                    break;
                }
            }
            let Some(out) = out else {
                return;
            };
            assert!(
                Instant::now() < deadline,
                "etcd not healthy after 30 s: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The members' logs (for failure messages).
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let log = fs::read_to_string(self.dir.path().join(format!("{}.log", m.name)))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- {} ---\n{}",
                    m.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A folder of the cluster's temporary folder (for configs, password
    /// files).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a password file and returns its path.
    pub fn password_file(&self, user: &str) -> PathBuf {
        let p = self.dir.path().join(format!("{user}.password"));
        fs::write(&p, format!("{user}-secret\n")).expect("write password");
        p
    }

    /// A config with only `[fleet]`, as `user` (for the shells of
    /// approvers and admins; `root` for etcd's root user).
    pub fn client_config(&self, user: &str) -> PathBuf {
        let password = if user == "root" {
            let p = self.dir.path().join("root.password");
            fs::write(&p, format!("{ROOT_PASSWORD}\n")).expect("write password");
            p
        } else {
            self.password_file(user)
        };
        let p = self.dir.path().join(format!("{user}.toml"));
        fs::write(
            &p,
            format!(
                "[fleet]\netcd = {}\nuser = \"{user}\"\npassword_file = \"{}\"\nstate_dir = \"{}\"\n",
                self.endpoints_toml(),
                password.display(),
                self.dir.path().join(format!("{user}.state")).display()
            ),
        )
        .expect("write config");
        p
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
