//! `cargo xtask bench [--quick]`: geowall side by side with no filtering,
//! nftables and iptables + ipset, on the same deny set (every network of the
//! embedded country database outside EU + EEA + CH, exported by geowall).
//!
//! Everything runs in network namespaces and a cgroup this command creates
//! and removes (never the root ones): firewall rules live only in their
//! namespace, geowall governs only its cgroup; the other variants' loads run
//! in sibling cgroups of the same depth outside it, so that the variants
//! differ only in the filter. Variants alternate within each
//! repetition (A B C G G-all, A B C G G-all, ...) because these machines are
//! noisy; results are medians with min–max and ratios to no filtering,
//! measured in the same run. A variant's ratio is the median over the
//! repetitions of its rate over A's rate in the same repetition, seconds
//! apart: the machine's drift over a run (A alone moved by 8 % in one run)
//! cancels out of each pair (the ratio of the two medians is in the JSON
//! too). After each G-all sample the bench waits until its records are on
//! disk and the agent is idle, so the next variant does not pay for G-all's
//! writeback. Results also go to `target/bench/*.json`.
//!
//! Last comes the DNS phase ([`crate::bench_dns`]): the forwarder's latency
//! and throughput, and the connect path and memory with 100,000 names
//! learned.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{bench_dns, cmd};

const VARIANTS: [&str; 5] = ["A", "B", "C", "G", "G-all"];
pub(super) const TCP_TARGET: &str = "127.0.0.1:7171";
const UDP_TARGET: &str = "127.0.0.1:7172";

/// Timing of a run.
pub(super) struct Plan {
    pub(super) reps: usize,
    pub(super) ms: u64,
    decoy_reps: usize,
    scale_reps: usize,
    pipeline_ms: u64,
    /// DNS: repetitions and length of each latency and throughput sample.
    pub(super) dns_reps: usize,
    pub(super) dns_ms: u64,
}

fn release_bin(name: &str) -> PathBuf {
    cmd::target_dir().join("release").join(name)
}

pub(super) fn run_ok(c: &mut Command) -> Result<()> {
    cmd::run(c.stdout(Stdio::null()))
}

/// A network namespace with only `lo`, up; deleted on drop.
pub(super) struct Netns(String);

impl Netns {
    pub(super) fn new(name: &str) -> Result<Self> {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        run_ok(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns(name.into());
        run_ok(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    pub(super) fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A cgroup under the cgroup v2 root, removed (with its children) on drop.
struct Cgroup(PathBuf);

fn cgroup2_mount() -> Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts")?;
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .context("no cgroup v2 hierarchy is mounted")
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        fn rm(dir: &Path) {
            if let Ok(entries) = fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        rm(&e.path());
                    }
                }
            }
            for _ in 0..50 {
                if fs::remove_dir(dir).is_ok() || !dir.exists() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        rm(&self.0);
    }
}

/// A running agent, stopped and detached on drop.
pub(super) struct Agent {
    child: Option<Child>,
    config: PathBuf,
}

impl Agent {
    fn start(config: &Path) -> Result<Agent> {
        let child = Command::new(release_bin("geowall"))
            .args(["run", "--detach-on-exit", "--config"])
            .arg(config)
            .env("GEOWALL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting the agent")?;
        let mut agent = Agent {
            child: Some(child),
            config: config.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = agent
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("the agent exited ({s}) before it was ready");
            }
            let out = agent.geowall(&["status", "--json"]).output()?;
            if out.status.success()
                && serde_json::from_slice::<Value>(&out.stdout)
                    .is_ok_and(|v| v["agent"] == "running")
            {
                return Ok(agent);
            }
            if Instant::now() > deadline {
                bail!("the agent was not ready after 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn geowall(&self, args: &[&str]) -> Command {
        let mut c = Command::new(release_bin("geowall"));
        c.args(args).arg("--config").arg(&self.config);
        c
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub(super) fn status(&self) -> Result<Value> {
        let out = self.geowall(&["status", "--json"]).output()?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    pub(super) fn map_load(&self) -> Result<(f64, Value)> {
        let t = Instant::now();
        let out = self.geowall(&["map", "load"]).output()?;
        if !out.status.success() {
            bail!("geowall map load: {}", String::from_utf8_lossy(&out.stderr));
        }
        let wall = t.elapsed().as_secs_f64();
        let stats: Value =
            serde_json::from_slice(&self.geowall(&["map", "stats", "--json"]).output()?.stdout)?;
        Ok((wall, stats))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        let _ = self
            .geowall(&["stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The kB figure of line `key` (`Slab:`, `VmRSS:`) of a /proc file; 0 when
/// absent.
fn kib_field(path: &str, key: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// `Slab:` of /proc/meminfo, KiB.
pub(super) fn slab_kib() -> u64 {
    kib_field("/proc/meminfo", "Slab:")
}

/// An unmeasured load after [`settle`], before the next measured sample.
pub(super) const WARM_UP_MS: u64 = 500;

/// The CPU every load runs on (the agent and the kernel's other work have
/// the rest).
pub(super) const LOAD_CPU: &str = "0";

/// Runs the load generator; returns its JSON report.
fn loadgen(
    netns: &Netns,
    cgroup: Option<&Path>,
    mode: &str,
    target: &str,
    ms: u64,
    progs: &[PathBuf],
) -> Result<Value> {
    loadgen_with(Some(netns), cgroup, mode, target, ms, progs, &[])
}

/// [`loadgen`] in `netns` or (`None`) this process's network namespace,
/// with more of loadgen's arguments.
pub(super) fn loadgen_with(
    netns: Option<&Netns>,
    cgroup: Option<&Path>,
    mode: &str,
    target: &str,
    ms: u64,
    progs: &[PathBuf],
    extra: &[String],
) -> Result<Value> {
    let mut c = Command::new(release_bin("loadgen"));
    if let Some(ns) = netns {
        c.args(["--netns", &ns.0]);
    }
    c.args([
        // One CPU for the load and its acceptor/receiver: see loadgen's
        // `--cpu`.
        "--cpu",
        LOAD_CPU,
        "--mode",
        mode,
        "--target",
        target,
        "--ms",
        &ms.to_string(),
    ]);
    if let Some(cg) = cgroup {
        c.arg("--cgroup").arg(cg);
    }
    for p in progs {
        c.arg("--prog").arg(p);
    }
    c.args(extra);
    let out = c.output().context("running loadgen")?;
    if !out.status.success() {
        bail!("loadgen failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

pub(super) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median, min, max of samples.
pub(super) fn summary(samples: &[f64]) -> Value {
    let mut s = samples.to_vec();
    let m = median(&mut s);
    json!({"median": m, "min": s.first(), "max": s.last(), "samples": samples})
}

/// A variant's rates against A's, repetition by repetition (`samples[i]`
/// and `base[i]` were measured seconds apart): the median of the per-pair
/// ratios and of the per-pair nanoseconds added, with the ratio of the two
/// medians beside them.
pub(super) fn paired(samples: &[f64], base: &[f64]) -> Value {
    let pairs = || {
        samples
            .iter()
            .zip(base)
            .filter(|(s, b)| **s > 0.0 && **b > 0.0)
    };
    let mut ratios: Vec<f64> = pairs().map(|(s, b)| s / b).collect();
    let mut added: Vec<f64> = pairs().map(|(s, b)| 1e9 / s - 1e9 / b).collect();
    let (med, base_med) = (median(&mut samples.to_vec()), median(&mut base.to_vec()));
    json!({
        "per_s": summary(samples),
        "ratio_to_A": median(&mut ratios),
        "ratio_to_A_min": ratios.first(),
        "ratio_to_A_max": ratios.last(),
        "ns_added": median(&mut added),
        "ratio_of_medians": if base_med > 0.0 { med / base_med } else { 0.0 },
    })
}

/// The baselines' tools, and the DNS server the DNS phase forwards to:
/// installed when missing, else the run stops and says which.
fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = [
        ("nft", "nftables"),
        ("ipset", "ipset"),
        ("iptables-legacy", "iptables"),
        ("nsd", "nsd"),
    ]
    .into_iter()
    .filter(|(bin, _)| {
        // nsd lives in /usr/sbin, which a user's PATH under sudo -E may lack.
        !["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(bin).exists())
            && !Command::new("which")
                .arg(bin)
                .output()
                .is_ok_and(|o| o.status.success())
    })
    .map(|(_, pkg)| pkg)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "bench: installing {} (the baselines, the DNS phase's server)",
        missing.join(", ")
    );
    let ok = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!(
            "the bench needs {} (the baselines, the DNS phase's server): install them (apt-get install {})",
            missing.join(", "),
            missing.join(" ")
        );
    }
    Ok(())
}

/// The siblings of 127.0.0.1's path at every depth from /9 to /32: none
/// contains it, each makes a trie (or ipset's per-length hashes) look one
/// level deeper.
fn decoys() -> Vec<String> {
    let addr: u32 = u32::from(std::net::Ipv4Addr::new(127, 0, 0, 1));
    (9..=32)
        .map(|len: u32| {
            let flipped = addr ^ (1u32 << (32 - len));
            let mask = if len == 32 {
                u32::MAX
            } else {
                !(u32::MAX >> len)
            };
            format!("{}/{len}", std::net::Ipv4Addr::from(flipped & mask))
        })
        .collect()
}

fn nft_file(name: &str, v4: &[String], v6: &[String]) -> String {
    let mut s = format!("table inet {name} {{\n  set deny4 {{ type ipv4_addr; flags interval; ");
    if !v4.is_empty() {
        s.push_str(&format!("elements = {{ {} }}", v4.join(", ")));
    }
    s.push_str(" }\n  set deny6 { type ipv6_addr; flags interval; ");
    if !v6.is_empty() {
        s.push_str(&format!("elements = {{ {} }}", v6.join(", ")));
    }
    s.push_str(" }\n  chain out { type filter hook output priority 0; policy accept;\n");
    s.push_str("    ip daddr @deny4 reject\n    ip6 daddr @deny6 reject\n  }\n}\n");
    s
}

fn ipset_file(set: &str, family: &str, prefixes: &[String]) -> String {
    let mut s = format!("create {set} hash:net family {family} hashsize 65536 maxelem 2097152\n");
    for p in prefixes {
        s.push_str(&format!("add {set} {p}\n"));
    }
    s
}

fn timed(c: &mut Command) -> Result<f64> {
    let t = Instant::now();
    let out = c.stdout(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("{c:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Waits until G-all's records are on disk and the agent is idle, so the
/// variant measured next does not share the machine with their writeback:
/// `sync`, then until the agent's CPU time stops growing (at most 5 s).
pub(super) fn settle(agent: &Agent) {
    let _ = Command::new("sync").status();
    let mut last = proc_cpu_ticks(agent.pid());
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let now = proc_cpu_ticks(agent.pid());
        if now == last {
            break;
        }
        last = now;
    }
}

pub(super) fn proc_cpu_ticks(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

pub(super) fn proc_rss_kib(pid: u32) -> u64 {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

fn proc_hwm_kib(pid: u32) -> u64 {
    kib_field(&format!("/proc/{pid}/status"), "VmHWM:")
}

/// The sequence number of the last record in the active audit log, and the
/// log's mean bytes per line. The sequence runs on across rotations (the
/// agent deletes all but a few rotated files), so it counts the records
/// written between two readings.
fn audit_position(dir: &Path) -> (u64, f64) {
    let Ok(data) = fs::read(dir.join("audit.jsonl")) else {
        return (0, 0.0);
    };
    let lines = data.iter().filter(|c| **c == b'\n').count();
    let seq = data
        .split(|c| *c == b'\n')
        .rev()
        .find(|l| !l.is_empty())
        .and_then(|l| serde_json::from_slice::<Value>(l).ok())
        .and_then(|v| v["seq"].as_u64())
        .unwrap_or(0);
    (seq, data.len() as f64 / lines.max(1) as f64)
}

pub fn run(quick: bool) -> Result<()> {
    if !cmd::is_root() {
        bail!(
            "the benchmark creates namespaces, cgroups and firewall sets: run `sudo -E cargo xtask bench`"
        );
    }
    ensure_tools()?;
    cmd::run(cmd::cargo().args([
        "build",
        "--release",
        "--package",
        "geowall",
        "--package",
        "geowall-tests",
        "--bins",
    ]))?;
    let plan = if quick {
        Plan {
            reps: 3,
            ms: 800,
            decoy_reps: 2,
            scale_reps: 2,
            pipeline_ms: 2000,
            dns_reps: 3,
            dns_ms: 2000,
        }
    } else {
        Plan {
            reps: 24,
            ms: 2000,
            decoy_reps: 5,
            scale_reps: 5,
            pipeline_ms: 5000,
            dns_reps: 10,
            dns_ms: 5000,
        }
    };
    let started = Instant::now();
    let out_dir = cmd::target_dir().join("bench");
    let work = out_dir.join("work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let geowall = release_bin("geowall");

    // The deny set, compiled by geowall itself.
    eprintln!("bench: exporting the deny set (outside EU, EEA, CH) from the embedded map");
    let export = |family: &str| -> Result<Vec<String>> {
        let out = Command::new(&geowall)
            .args([
                "map",
                "export",
                "--source",
                "builtin",
                "--outside",
                "EU,EEA,CH",
                "--family",
                family,
            ])
            .output()?;
        if !out.status.success() {
            bail!(
                "geowall map export: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?
            .lines()
            .map(str::to_owned)
            .collect())
    };
    let (deny4, deny6) = (export("4")?, export("6")?);
    eprintln!(
        "bench: deny set: {} IPv4 and {} IPv6 prefixes",
        deny4.len(),
        deny6.len()
    );

    let tag = std::process::id();
    let ns: BTreeMap<&str, Netns> = [("A", "a"), ("B", "b"), ("C", "c"), ("G", "g")]
        .into_iter()
        .map(|(v, n)| Netns::new(&format!("gwbench-{tag}-{n}")).map(|ns| (v, ns)))
        .collect::<Result<_>>()?;
    let cg = Cgroup(cgroup2_mount()?.join(format!("geowall-bench-{tag}")));
    for sub in ["g", "gall"] {
        fs::create_dir_all(cg.0.join(sub))?;
    }
    // A, B and C run in cgroups of the same depth outside the governed
    // subtree: the variants differ only in the filter (a process in a
    // nested cgroup pays ~0.5 % per TCP connect over one in the root
    // cgroup, with or without geowall; jobs live in cgroups anyway).
    let free = Cgroup(cgroup2_mount()?.join(format!("geowall-bench-{tag}-free")));
    for sub in ["a", "b", "c"] {
        fs::create_dir_all(free.0.join(sub))?;
    }
    let mut results = serde_json::Map::new();
    results.insert("quick".into(), json!(quick));
    results.insert(
        "deny_set".into(),
        json!({"ipv4_prefixes": deny4.len(), "ipv6_prefixes": deny6.len(), "outside": ["EU", "EEA", "CH"]}),
    );

    // Map loads: nft -f, ipset restore, geowall (kernel memory as Slab growth).
    eprintln!("bench: loading the deny set into nftables, ipset, geowall");
    let nft_path = work.join("deny.nft");
    fs::write(&nft_path, nft_file("gwbench", &deny4, &[]))?;
    let slab0 = slab_kib();
    let nft_s = timed(ns["B"].exec("nft").arg("-f").arg(&nft_path))?;
    let nft_kib = slab_kib().saturating_sub(slab0);
    let nft6 = format!(
        "add element inet gwbench deny6 {{ {} }}\n",
        deny6.join(", ")
    );
    fs::write(work.join("deny6.nft"), nft6)?;
    let nft6_s = timed(ns["B"].exec("nft").arg("-f").arg(work.join("deny6.nft")))?;

    let ipset_path = work.join("deny4.ipset");
    fs::write(&ipset_path, ipset_file("deny4", "inet", &deny4))?;
    let slab0 = slab_kib();
    let ipset_s = timed(
        ns["C"]
            .exec("ipset")
            .arg("restore")
            .arg("-f")
            .arg(&ipset_path),
    )?;
    let ipset_kib = slab_kib().saturating_sub(slab0);
    fs::write(
        work.join("deny6.ipset"),
        ipset_file("deny6", "inet6", &deny6),
    )?;
    let ipset6_s = timed(
        ns["C"]
            .exec("ipset")
            .arg("restore")
            .arg("-f")
            .arg(work.join("deny6.ipset")),
    )?;
    run_ok(ns["C"].exec("iptables-legacy").args([
        "-A",
        "OUTPUT",
        "-m",
        "set",
        "--match-set",
        "deny4",
        "dst",
        "-j",
        "REJECT",
    ]))?;
    run_ok(ns["C"].exec("ip6tables-legacy").args([
        "-A",
        "OUTPUT",
        "-m",
        "set",
        "--match-set",
        "deny6",
        "dst",
        "-j",
        "REJECT",
    ]))?;

    let config = work.join("geowall.toml");
    let cg_rel = format!("/geowall-bench-{tag}");
    // `keep`: G-all writes gigabytes of records; the agent deletes all but
    // the last four rotated files, as an operator's retention would (the
    // run neither fills the disk nor leaves the page cache full of them).
    // The ring buffer is the default size: what an operator gets.
    // The DNS forwarder is on (the default) on ports of the bench's own;
    // `names` adds keys to eu-only (the DNS phase's `allow_names`).
    let dns_port = bench_dns::free_ports()?;
    let write_config = |maps: &str, names: &str| -> Result<()> {
        fs::write(
            &config,
            format!(
                "[agent]\ncgroup = \"{cg_rel}\"\nbpffs = \"/sys/fs/bpf/geowall-bench-{tag}\"\naudit_log = \"{}\"\nsocket = \"{}\"\n\n\
                 [audit]\nkeep = 4\n\n[dns]\nport = {dns_port}\n\n{maps}\n\
                 [[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\nlog_allowed = \"none\"\ncgroups = [\"/g\"]\n{names}\n\
                 [[policy]]\nname = \"eu-only-all\"\nallow = [\"EU\"]\nlog_allowed = \"all\"\ncgroups = [\"/gall\"]\n",
                work.join("audit.jsonl").display(),
                work.join("control.sock").display()
            ),
        )?;
        Ok(())
    };
    write_config("", "")?;
    let slab0 = slab_kib();
    let agent = Agent::start(&config)?;
    let geowall_kib = slab_kib().saturating_sub(slab0);
    let hwm_start = proc_hwm_kib(agent.pid());
    let mut load_walls = Vec::new();
    let mut last_stats = Value::Null;
    for _ in 0..3 {
        let (wall, stats) = agent.map_load()?;
        load_walls.push(wall);
        last_stats = stats;
    }
    let agent_hwm = proc_hwm_kib(agent.pid());
    results.insert(
        "map_load".into(),
        json!({
            "nft_ipv4_s": nft_s, "nft_ipv4_slab_kib": nft_kib, "nft_ipv6_s": nft6_s,
            "ipset_ipv4_s": ipset_s, "ipset_ipv4_slab_kib": ipset_kib, "ipset_ipv6_s": ipset6_s,
            "geowall_world_s": summary(&load_walls),
            "geowall_compile_ms": last_stats["compile_ms"], "geowall_install_ms": last_stats["install_ms"],
            "geowall_slab_kib": geowall_kib, "geowall_memlock_bytes": last_stats["kernel_bytes"],
            "geowall_agent_peak_rss_kib_start": hwm_start,
            "geowall_agent_peak_rss_kib_reloads": agent_hwm,
            "geowall_agent_rss_kib": proc_rss_kib(agent.pid()),
            "prefixes": {"ipv4": last_stats["ipv4"], "ipv6": last_stats["ipv6"]},
        }),
    );

    // Connect and datagram rates, variants alternating.
    let place = |v: &str| -> (&Netns, Option<PathBuf>) {
        match v {
            "G" => (&ns["G"], Some(cg.0.join("g"))),
            "G-all" => (&ns["G"], Some(cg.0.join("gall"))),
            other => (&ns[other], Some(free.0.join(other.to_lowercase()))),
        }
    };
    // After a G-all sample: settle, then an unmeasured load, because the
    // settle left the load's CPU idle and the next sample must not start
    // from idle.
    let after_g_all = |mode: &str, target: &str| -> Result<()> {
        settle(&agent);
        let (n, c) = place("A");
        loadgen(n, c.as_deref(), mode, target, WARM_UP_MS, &[])?;
        Ok(())
    };
    let mut rates: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    eprintln!(
        "bench: {} repetitions of TCP connect+close and UDP sendto, {} ms each",
        plan.reps, plan.ms
    );
    for rep in 0..plan.reps {
        for v in VARIANTS {
            let (n, c) = place(v);
            for (mode, target) in [("tcp", TCP_TARGET), ("udp", UDP_TARGET)] {
                let r = loadgen(n, c.as_deref(), mode, target, plan.ms, &[])?;
                if v == "G-all" {
                    after_g_all(mode, target)?;
                }
                rates
                    .entry((v, mode))
                    .or_default()
                    .push(r["rate"].as_f64().unwrap_or(0.0));
            }
        }
        eprintln!("bench:   repetition {} of {}", rep + 1, plan.reps);
    }
    let report = |rates: &BTreeMap<(&str, &str), Vec<f64>>, mode: &str| -> Value {
        let base = rates.get(&("A", mode)).cloned().unwrap_or_default();
        let mut m = serde_json::Map::new();
        for v in VARIANTS {
            let Some(samples) = rates.get(&(v, mode)) else {
                continue;
            };
            m.insert(v.into(), paired(samples, &base));
        }
        Value::Object(m)
    };
    results.insert("tcp_connect".into(), report(&rates, "tcp"));
    results.insert("udp_sendto".into(), report(&rates, "udp"));

    // The same with `inbound = "judge"`: the inbound program is attached
    // and runs for every packet a governed socket receives (here the
    // acceptor's and the receiver's too). It stays on for the program run
    // times below; the next phase's config turns it off again.
    eprintln!("bench: G with inbound = \"judge\"");
    write_config("", "inbound = \"judge\"\n")?;
    agent.map_load()?;
    let ingress_link = PathBuf::from(format!("/sys/fs/bpf/geowall-bench-{tag}/links"))
        .join(geowall_common::names::PROG_INGRESS);
    if !ingress_link.exists() {
        bail!(
            "inbound = \"judge\" is in force but {} is not attached",
            ingress_link.display()
        );
    }
    let mut inbound_rates: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for _ in 0..plan.reps {
        for v in ["A", "G"] {
            let (n, c) = place(v);
            for (mode, target) in [("tcp", TCP_TARGET), ("udp", UDP_TARGET)] {
                let r = loadgen(n, c.as_deref(), mode, target, plan.ms, &[])?;
                inbound_rates
                    .entry((v, mode))
                    .or_default()
                    .push(r["rate"].as_f64().unwrap_or(0.0));
            }
        }
    }
    results.insert(
        "tcp_connect_inbound_judged".into(),
        report(&inbound_rates, "tcp"),
    );
    results.insert(
        "udp_sendto_inbound_judged".into(),
        report(&inbound_rates, "udp"),
    );

    // Program run time on real destinations, from a namespace with no route
    // (and on loopback), per program of the path: connect4 and the
    // sock_create that ran for the same socket; sendmsg4 for datagrams.
    let prog = |name: &str| {
        PathBuf::from(format!(
            "/sys/fs/bpf/geowall-bench-{tag}/abi-{}/progs/{name}",
            geowall_common::ABI_VERSION,
        ))
    };
    let connect_progs = vec![
        prog(geowall_common::names::PROG_CONNECT4),
        prog(geowall_common::names::PROG_SOCK_CREATE),
    ];
    // A datagram to a governed receiver runs the ingress program too.
    let send_progs = vec![
        prog(geowall_common::names::PROG_SENDMSG4),
        prog(geowall_common::names::PROG_INGRESS),
    ];
    let mut run_time = serde_json::Map::new();
    for (label, mode, target, progs, names) in [
        // The same destination again and again: the verdict cache answers.
        (
            "DE, allowed, repeated",
            "connect",
            "193.99.144.80:443",
            &connect_progs,
            &["connect4", "sock_create"][..],
        ),
        // A new port each time: every verdict walks the whole path.
        (
            "DE, allowed, uncached",
            "connect-ports",
            "193.99.144.80:443",
            &connect_progs,
            &["connect4", "sock_create"][..],
        ),
        (
            "US, denied",
            "connect",
            "8.8.8.8:443",
            &connect_progs,
            &["connect4", "sock_create"][..],
        ),
        (
            "loopback, allowed",
            "connect",
            "127.0.0.1:7199",
            &connect_progs,
            &["connect4", "sock_create"][..],
        ),
        (
            "UDP loopback, one socket",
            "udp",
            UDP_TARGET,
            &send_progs,
            &["sendmsg4", "ingress"][..],
        ),
    ] {
        let mut per_prog: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
        for _ in 0..3 {
            let r = loadgen(
                &ns["G"],
                Some(&cg.0.join("g")),
                mode,
                target,
                plan.ms / 2,
                progs,
            )?;
            for (i, samples) in per_prog.iter_mut().enumerate() {
                samples.push(r["programs"][i]["ns_per_run"].as_f64().unwrap_or(0.0));
            }
        }
        let m: serde_json::Map<String, Value> = names
            .iter()
            .zip(&per_prog)
            .map(|(n, v)| ((*n).to_owned(), summary(v)))
            .collect();
        run_time.insert(label.into(), Value::Object(m));
    }
    results.insert("program_run_time_ns".into(), Value::Object(run_time));

    // Worst case: decoys along 127.0.0.1's path in every table.
    eprintln!("bench: worst-case depth (decoys inside 127/8)");
    let decoy = decoys();
    fs::write(
        work.join("decoys.cidr"),
        decoy
            .iter()
            .map(|p| format!("{p} US\n"))
            .collect::<String>(),
    )?;
    write_config(
        "[[maps]]\nkind = \"builtin\"\n\n[[maps]]\nkind = \"cidr\"\npath = \"decoys.cidr\"\n",
        "",
    )?;
    agent.map_load()?;
    run_ok(ns["B"].exec("nft").args([
        "add",
        "element",
        "inet",
        "gwbench",
        "deny4",
        &format!("{{ {} }}", decoy.join(", ")),
    ]))?;
    for p in &decoy {
        run_ok(ns["C"].exec("ipset").args(["add", "deny4", p]))?;
    }
    let mut decoy_rates: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for _ in 0..plan.decoy_reps {
        for v in VARIANTS {
            let (n, c) = place(v);
            let r = loadgen(n, c.as_deref(), "tcp", TCP_TARGET, plan.ms, &[])?;
            if v == "G-all" {
                after_g_all("tcp", TCP_TARGET)?;
            }
            decoy_rates
                .entry((v, "tcp"))
                .or_default()
                .push(r["rate"].as_f64().unwrap_or(0.0));
        }
    }
    results.insert("tcp_connect_worst_case".into(), report(&decoy_rates, "tcp"));

    // Scaling: 1k, 100k, full.
    eprintln!("bench: scaling with the map's size");
    let mut scaling = serde_json::Map::new();
    for (label, n) in [("1k", 1000usize), ("100k", 100_000), ("full", usize::MAX)] {
        if n == usize::MAX {
            write_config("", "")?;
        } else {
            fs::write(
                work.join("scale.cidr"),
                deny4
                    .iter()
                    .take(n)
                    .map(|p| format!("{p} US\n"))
                    .collect::<String>(),
            )?;
            write_config("[[maps]]\nkind = \"cidr\"\npath = \"scale.cidr\"\n", "")?;
        }
        let (_, stats) = agent.map_load()?;
        // Each G sample is paired with an A sample taken just before it.
        let (mut a, mut g) = (Vec::new(), Vec::new());
        for _ in 0..plan.scale_reps {
            for (v, out) in [("A", &mut a), ("G", &mut g)] {
                let (n, c) = place(v);
                out.push(
                    loadgen(n, c.as_deref(), "tcp", TCP_TARGET, plan.ms, &[])?["rate"]
                        .as_f64()
                        .unwrap_or(0.0),
                );
            }
        }
        let mut entry = paired(&g, &a);
        entry["kernel_entries_ipv4"] = stats["ipv4"]["kernel_entries"].clone();
        scaling.insert(label.into(), entry);
    }
    results.insert("scaling".into(), Value::Object(scaling));

    // Event pipeline: every allowed flow logged, at the highest connect rate.
    eprintln!("bench: event pipeline (log_allowed = all)");
    let (before_seq, _) = audit_position(&work);
    let before_cpu = proc_cpu_ticks(agent.pid());
    let before_dropped = agent.status()?["status"]["events_dropped"]
        .as_u64()
        .unwrap_or(0);
    let t = Instant::now();
    let r = loadgen(
        &ns["G"],
        Some(&cg.0.join("gall")),
        "tcp",
        TCP_TARGET,
        plan.pipeline_ms,
        &[],
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let elapsed = t.elapsed().as_secs_f64();
    let ticks = proc_cpu_ticks(agent.pid()).saturating_sub(before_cpu);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_percent = 100.0 * ticks as f64 / hz / elapsed;
    let (after_seq, bytes_per_record) = audit_position(&work);
    let written = after_seq.saturating_sub(before_seq);
    let dropped = agent.status()?["status"]["events_dropped"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(before_dropped);
    results.insert(
        "event_pipeline".into(),
        json!({
            "connects": r["ok"], "connects_per_s": r["rate"],
            "records_written": written, "records_per_s": written as f64 / r["secs"].as_f64().unwrap_or(1.0),
            "events_dropped": dropped,
            "agent_cpu_percent_of_one_core": cpu_percent,
            "agent_cpu_percent_per_10k_records_per_s": cpu_percent / (written as f64 / elapsed / 10_000.0).max(1e-9),
            "log_bytes_per_record": bytes_per_record,
            "agent_rss_kib": proc_rss_kib(agent.pid()),
        }),
    );

    // DNS: the forwarder's latency and throughput, 100,000 learned names.
    // A failure here still leaves the figures above written.
    settle(&agent);
    let dns = bench_dns::run(&bench_dns::Ctx {
        agent: &agent,
        ns_a: &ns["A"],
        ns_g: &ns["G"],
        governed: &cg.0.join("g"),
        free: &free.0.join("a"),
        pins: PathBuf::from(format!(
            "/sys/fs/bpf/geowall-bench-{tag}/abi-{}",
            geowall_common::ABI_VERSION
        )),
        tag,
        plan: &plan,
        write_config: &write_config,
    });
    let dns_failed = match dns {
        Ok(v) => {
            results.insert("dns".into(), v);
            None
        }
        Err(e) => {
            eprintln!("bench: the DNS phase failed: {e:#}");
            results.insert("dns".into(), json!({"error": format!("{e:#}")}));
            Some(e)
        }
    };
    drop(agent);
    results.insert("seconds".into(), json!(started.elapsed().as_secs_f64()));

    let results = Value::Object(results);
    print_table(&results);
    fs::create_dir_all(&out_dir)?;
    let stamp = cmd::output(Command::new("date").args(["-u", "+%Y%m%dT%H%M%SZ"]))?;
    let file = out_dir.join(format!("bench-{}.json", stamp.trim()));
    fs::write(&file, serde_json::to_string_pretty(&results)?)?;
    fs::write(
        out_dir.join("latest.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    eprintln!("bench: results in {}", file.display());
    if let Some(e) = dns_failed {
        return Err(e.context("the DNS phase"));
    }
    Ok(())
}

fn print_table(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!();
    println!(
        "deny set: {} IPv4, {} IPv6 prefixes (outside EU+EEA+CH)",
        r["deny_set"]["ipv4_prefixes"], r["deny_set"]["ipv6_prefixes"]
    );
    for (title, key) in [
        ("TCP connect+close to loopback", "tcp_connect"),
        ("UDP sendto to loopback", "udp_sendto"),
        (
            "TCP connect+close, worst-case depth (decoys)",
            "tcp_connect_worst_case",
        ),
        (
            "TCP connect+close, inbound = \"judge\" (the inbound program attached)",
            "tcp_connect_inbound_judged",
        ),
        (
            "UDP sendto, inbound = \"judge\"",
            "udp_sendto_inbound_judged",
        ),
    ] {
        println!("\n{title}:");
        println!(
            "  variant       median/s        min/s        max/s   ratio to A (per-repetition min–max)   ns added"
        );
        for v in VARIANTS {
            let x = &r[key][v];
            if x.is_null() {
                continue;
            }
            println!(
                "  {v:<8} {:>12.0} {:>12.0} {:>12.0} {:>12.3} ({:.3}–{:.3})        {:>10.0}",
                f(&x["per_s"]["median"]),
                f(&x["per_s"]["min"]),
                f(&x["per_s"]["max"]),
                f(&x["ratio_to_A"]),
                f(&x["ratio_to_A_min"]),
                f(&x["ratio_to_A_max"]),
                f(&x["ns_added"])
            );
        }
    }
    println!("\nprogram run time per call (BPF_ENABLE_STATS, median of means):");
    if let Some(m) = r["program_run_time_ns"].as_object() {
        for (k, progs) in m {
            let cells: Vec<String> = progs
                .as_object()
                .into_iter()
                .flatten()
                .map(|(p, v)| format!("{p} {:>5.0} ns", f(&v["median"])))
                .collect();
            println!("  {k:<26} {}", cells.join("   "));
        }
    }
    let ml = &r["map_load"];
    println!("\nmap load (IPv4 deny set unless said):");
    println!(
        "  nft -f         {:>7.3} s   slab +{} KiB",
        f(&ml["nft_ipv4_s"]),
        ml["nft_ipv4_slab_kib"]
    );
    println!(
        "  ipset restore  {:>7.3} s   slab +{} KiB",
        f(&ml["ipset_ipv4_s"]),
        ml["ipset_ipv4_slab_kib"]
    );
    println!(
        "  geowall map load, full world map (IPv4+IPv6, compile + load + switch) {:>7.3} s (compile {} ms, install {} ms)",
        f(&ml["geowall_world_s"]["median"]),
        ml["geowall_compile_ms"],
        ml["geowall_install_ms"]
    );
    println!(
        "  geowall kernel memory: slab +{} KiB at start (memlock {} bytes)",
        ml["geowall_slab_kib"], ml["geowall_memlock_bytes"]
    );
    println!(
        "  geowall agent: peak RSS {} KiB after start, {} KiB after reloads; RSS {} KiB",
        ml["geowall_agent_peak_rss_kib_start"],
        ml["geowall_agent_peak_rss_kib_reloads"],
        ml["geowall_agent_rss_kib"]
    );
    println!(
        "  prefixes: {} / {}",
        ml["prefixes"]["ipv4"], ml["prefixes"]["ipv6"]
    );
    println!("\nscaling (G, TCP):");
    if let Some(m) = r["scaling"].as_object() {
        for (k, v) in m {
            println!(
                "  {k:<6} {:>8} IPv4 entries  ratio {:.3} ({:.3}–{:.3})  ns added {:.0}",
                v["kernel_entries_ipv4"],
                f(&v["ratio_to_A"]),
                f(&v["ratio_to_A_min"]),
                f(&v["ratio_to_A_max"]),
                f(&v["ns_added"])
            );
        }
    }
    let ep = &r["event_pipeline"];
    println!(
        "\nevent pipeline (G-all): {:.0} connects/s, {:.0} records/s, {} events dropped, agent CPU {:.1} % of a core ({:.1} % per 10k records/s), {:.0} log bytes/record, RSS {} KiB",
        f(&ep["connects_per_s"]),
        f(&ep["records_per_s"]),
        ep["events_dropped"],
        f(&ep["agent_cpu_percent_of_one_core"]),
        f(&ep["agent_cpu_percent_per_10k_records_per_s"]),
        f(&ep["log_bytes_per_record"]),
        ep["agent_rss_kib"]
    );
    bench_dns::print(r);
    println!("\ntotal {:.0} s", f(&r["seconds"]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoys_follow_the_path_of_loopback_without_containing_it() {
        let d = decoys();
        assert_eq!(d.len(), 24);
        assert_eq!(d[0], "127.128.0.0/9");
        assert_eq!(d[23], "127.0.0.0/32");
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
    }
}
