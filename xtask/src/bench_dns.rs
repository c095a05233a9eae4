//! The DNS phase of `cargo xtask bench`: what the forwarder adds to a job's
//! queries, and what 100,000 learned names cost the connect path and
//! memory (the figures issue 17 asks for).
//!
//! It runs last, with the same agent (its config rewritten and reloaded).
//! NSD serves a bench zone on a loopback address of its own
//! (`127.53.X.253:53`, X from the pid; the tests' servers use .1 to .250),
//! pinned to the load's CPU. Every DNS load runs in the root network
//! namespace, where the forwarder listens (a governed job in another
//! namespace has its DNS refused), in the governed cgroup `/g` (forwarded:
//! the kernel redirects its queries to the agent) or in a cgroup outside
//! the governed subtree (direct: the same client asking the same server).
//!
//! - Latency: `loadgen --mode dns` at 1,000 queries/s (open loop), direct
//!   and forwarded alternating; the latency added is, per repetition, the
//!   forwarded P50 (P99) minus the direct one, and the median of those.
//! - Throughput: the agent's threads pinned to the CPU the load does not
//!   use (loadgen and NSD share the other); `--mode dnsflood` keeps 64
//!   queries outstanding: answers per second, lost and failed answers;
//!   NSD alone (direct) for reference.
//! - Names loaded: `--mode dnsfill` resolves 4,000 names of 25 A records
//!   each in 198.18.0.0/15 (RFC 2544's benchmark range, never routed) from
//!   `/g`: 100,000 learned (job, address) entries, checked in `status`;
//!   kernel slab and agent RSS across the fill. Then TCP connect+close A/G
//!   pairs to loopback (as the main table; local destinations never consult
//!   names) and to 8.8.8.8, allowed by `allow_names` once resolved, on `lo`
//!   of two namespaces of the phase's own (every connect walks the names:
//!   an allow by name is never cached); and connect4's run time, uncached
//!   (`connect-ports`), to a DE address, to 8.8.8.8, to a US address
//!   resolved from a name the policy does not allow (8.8.4.4) and to one
//!   never resolved (4.4.4.4), from namespace G (no route out).

use std::{
    ffi::CString,
    fs, io,
    net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::bench::{
    Agent, LOAD_CPU, Netns, Plan, TCP_TARGET, WARM_UP_MS, loadgen_with, median, paired,
    proc_cpu_ticks, proc_rss_kib, run_ok, settle, slab_kib, summary,
};

/// The bench zone's origin.
const ZONE: &str = "bench.test";
/// The name every latency and throughput query asks.
const LAT_NAME: &str = "lat.bench.test";
/// The name `allow_names` allows, and its address (US).
const ALLOWED_NAME: &str = "allowed.bench.test";
const ALLOWED_ADDR: &str = "8.8.8.8";
/// A name the policy does not allow, and its address (US).
const OTHER_NAME: &str = "other.bench.test";
const OTHER_ADDR: &str = "8.8.4.4";
/// A US address nobody resolves.
const UNRESOLVED_ADDR: &str = "4.4.4.4";
/// A DE address (as in the main table).
const DE_ADDR: &str = "193.99.144.80";
/// Names × addresses of the fill.
const FILL_NAMES: u32 = 4_000;
const FILL_ADDRS: u32 = 25;
/// Queries per second of the latency samples.
const LAT_RATE: u32 = 1_000;
/// Queries outstanding in the throughput samples.
const FLOOD_WINDOW: usize = 64;

/// Targets (issue 17).
const TARGET_P50_US: f64 = 50.0;
const TARGET_P99_US: f64 = 500.0;
const TARGET_QPS: f64 = 20_000.0;
const TARGET_RATIO: f64 = 0.98;
const TARGET_CONNECT4_NS: f64 = 300.0;

/// What the phase needs from the main run.
pub(super) struct Ctx<'a> {
    pub(super) agent: &'a Agent,
    pub(super) ns_a: &'a Netns,
    pub(super) ns_g: &'a Netns,
    /// The policy-bound cgroup `/g` (eu-only) and A's cgroup, outside the
    /// governed subtree.
    pub(super) governed: &'a Path,
    pub(super) free: &'a Path,
    /// The agent's pins of this build's ABI (`…/abi-N`).
    pub(super) pins: PathBuf,
    pub(super) tag: u32,
    pub(super) plan: &'a Plan,
    /// Rewrites the agent's config: map sources, eu-only's extra keys.
    pub(super) write_config: &'a dyn Fn(&str, &str) -> Result<()>,
}

/// A first port of four consecutive ones (the forwarder's) free for UDP
/// and TCP on 127.0.0.1 and ::1, in a range the tests do not use.
pub(super) fn free_ports() -> Result<u16> {
    let slots = geowall_common::DNS_SLOTS;
    let start = std::process::id();
    // The forwarder binds ::1 too, where the host has it.
    let v6 = UdpSocket::bind(("::1", 0)).is_ok();
    for n in 0..500u32 {
        let base = 50_000 + ((start + n * 7) % 2_500) as u16 * slots;
        let free = (0..slots).all(|i| {
            let p = base + i;
            UdpSocket::bind(("127.0.0.1", p)).is_ok()
                && TcpListener::bind(("127.0.0.1", p)).is_ok()
                && (!v6
                    || (UdpSocket::bind(("::1", p)).is_ok()
                        && TcpListener::bind(("::1", p)).is_ok()))
        });
        if free {
            return Ok(base);
        }
    }
    bail!("no four consecutive free ports for the DNS forwarder in 50000–59999")
}

/// The bench zone: the latency name, the allowed and the other name, and
/// `n0`…`n3999`, 25 A records each, consecutive in 198.18.0.0/15.
fn zone_text(ns: Ipv4Addr) -> String {
    let mut z = format!(
        "$ORIGIN {ZONE}.\n$TTL 3600\n\
         @ SOA ns admin 1 3600 600 86400 3600\n\
         @ NS ns\n\
         ns A {ns}\n\
         lat A 198.19.255.1\n\
         allowed A {ALLOWED_ADDR}\n\
         other A {OTHER_ADDR}\n"
    );
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    for i in 0..FILL_NAMES {
        for j in 0..FILL_ADDRS {
            z.push_str(&format!(
                "n{i} A {}\n",
                Ipv4Addr::from(base + i * FILL_ADDRS + j)
            ));
        }
    }
    z
}

/// A CPU set of one CPU, or of `cpus`.
fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in
    // bounds for the CPUs sched_getaffinity and our constants give.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in cpus {
            libc::CPU_SET(*c, &mut set);
        }
        set
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills a cpu_set_t we own; CPU_ISSET reads it
    // within CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|c| libc::CPU_ISSET(*c, &set))
            .collect()
    }
}

/// Sets the affinity of every thread of `pid`; answers how many.
fn set_threads_affinity(pid: u32, set: &libc::cpu_set_t) -> Result<usize> {
    let mut n = 0;
    for e in fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(tid) = e?.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: sched_setaffinity on a thread id with a valid set.
        if unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), set) } == 0
        {
            n += 1;
        }
    }
    Ok(n)
}

/// The agent's threads confined to one CPU; back on `all` on drop.
struct Pinned {
    pid: u32,
    all: libc::cpu_set_t,
}

impl Pinned {
    fn new(pid: u32, cpu: usize, all: &[usize]) -> Result<Pinned> {
        let pinned = Pinned {
            pid,
            all: cpu_set(all),
        };
        let n = set_threads_affinity(pid, &cpu_set(&[cpu]))?;
        if n == 0 {
            bail!("could not pin any thread of the agent (pid {pid}) to CPU {cpu}");
        }
        Ok(pinned)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = set_threads_affinity(self.pid, &self.all);
    }
}

/// NSD serving the bench zone on `addr:53`, pinned to the load's CPU;
/// stopped (by pid) and its folder removed on drop.
struct Nsd {
    child: Option<Child>,
    dir: PathBuf,
    addr: Ipv4Addr,
}

impl Nsd {
    fn start(addr: Ipv4Addr, cpu: usize) -> Result<Nsd> {
        let dir = std::env::temp_dir().join(format!("geowall-bench-nsd-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let mut nsd = Nsd {
            child: None,
            dir,
            addr,
        };
        let d = nsd.dir.display();
        fs::write(nsd.dir.join("bench.zone"), zone_text(addr))?;
        let conf = format!(
            "server:\n  ip-address: {addr}\n  port: 53\n  do-ip6: no\n  do-ip4: yes\n  \
             username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  zonelistfile: \"{d}/zone.list\"\n  \
             database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  \
             xfrdir: \"{d}\"\n  logfile: \"{d}/nsd.log\"\n  server-count: 1\n  tcp-count: 64\n  \
             verbosity: 1\n  hide-version: yes\n  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\n\
             remote-control:\n  control-enable: no\n\
             zone:\n  name: \"{ZONE}.\"\n  zonefile: \"bench.zone\"\n"
        );
        let conf_path = nsd.dir.join("nsd.conf");
        fs::write(&conf_path, conf)?;
        let set = cpu_set(&[cpu]);
        let mut c = Command::new("nsd");
        c.arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure only calls sched_setaffinity (async-signal
        // safe) on a set built before the fork.
        unsafe {
            c.pre_exec(move || {
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        nsd.child = Some(
            c.spawn()
                .context("starting nsd (cargo xtask setup installs it)")?,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while !probe(addr, LAT_NAME) {
            if let Some(s) = nsd.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "nsd exited ({s}):\n{}",
                    fs::read_to_string(nsd.dir.join("nsd.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "nsd on {addr} not answering after 15 s:\n{}",
                    fs::read_to_string(nsd.dir.join("nsd.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(nsd)
    }

    fn target(&self) -> String {
        format!("{}:53", self.addr)
    }
}

impl Drop for Nsd {
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
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whether `server` answers an A query for `name` (from this process: not
/// governed, not redirected).
fn probe(server: Ipv4Addr, name: &str) -> bool {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    if sock.connect(SocketAddr::from((server, 53))).is_err()
        || sock
            .set_read_timeout(Some(Duration::from_millis(300)))
            .is_err()
    {
        return false;
    }
    let mut q = vec![0x62, 0x77, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut buf = [0u8; 512];
    sock.send(&q).is_ok()
        && sock
            .recv(&mut buf)
            .is_ok_and(|n| n >= 12 && buf[..2] == q[..2] && buf[3] & 0x0f == 0 && buf[7] > 0)
}

/// `memlock` and `max_entries` of a pinned map, from its fdinfo.
fn map_info(pin: &Path) -> Result<(u64, u64)> {
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let path = CString::new(pin.as_os_str().as_encoded_bytes())?;
    let attr = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    const BPF_OBJ_GET: libc::c_long = 7;
    // SAFETY: BPF_OBJ_GET reads a NUL-terminated path that outlives the
    // call, through an attribute of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &raw const attr,
            std::mem::size_of::<ObjGet>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("open {}", pin.display()));
    }
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{fd}"));
    // SAFETY: closing the descriptor BPF_OBJ_GET gave us.
    unsafe { libc::close(fd as i32) };
    let info = info?;
    let field = |key: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok((field("memlock:"), field("max_entries:")))
}

/// Runs a DNS load from `cgroup` in this network namespace; its report.
fn dns_load(cgroup: &Path, mode: &str, target: &str, ms: u64, extra: &[&str]) -> Result<Value> {
    let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
    loadgen_with(None, Some(cgroup), mode, target, ms, &[], &extra)
}

/// How many of `errors` (loadgen's errno counts) are `name`.
fn errno_count(r: &Value, name: &str) -> u64 {
    r["errors"][name].as_u64().unwrap_or(0)
}

fn agent_dns_status(agent: &Agent) -> Result<Value> {
    Ok(agent.status()?["status"]["dns"].clone())
}

/// A target line: the figure (and as printed, with `digits` decimals), the
/// target, whether it is met.
fn target(what: &str, value: f64, digits: usize, goal: &str, met: bool) -> Value {
    json!({"what": what, "value": value, "shown": format!("{value:.digits$}"), "target": goal, "met": met})
}

pub(super) fn run(cx: &Ctx<'_>) -> Result<Value> {
    let plan = cx.plan;
    let load_cpu: usize = LOAD_CPU.parse().expect("a CPU number");
    let all = allowed_cpus();
    let agent_cpu = all.iter().copied().find(|c| *c != load_cpu);
    let addr = Ipv4Addr::new(127, 53, (cx.tag % 250) as u8, 253);
    eprintln!("bench: DNS: NSD on {addr}:53 (the bench zone: 100,003 names' addresses)");
    let nsd = Nsd::start(addr, load_cpu)?;
    let server = nsd.target();
    (cx.write_config)("", &format!("allow_names = [\"{ALLOWED_NAME}\"]\n"))?;
    cx.agent.map_load()?;
    let dns0 = agent_dns_status(cx.agent)?;
    if dns0["enabled"] != true {
        bail!("the agent's DNS forwarder is off: {dns0}");
    }
    let (direct_cg, fwd_cg) = (cx.free, cx.governed);
    let mut out = serde_json::Map::new();
    out.insert(
        "server".into(),
        json!({"address": server, "nsd_cpu": load_cpu, "load_cpu": load_cpu}),
    );

    // Latency at 1,000 queries/s, direct and forwarded alternating.
    eprintln!(
        "bench: DNS: {} repetitions of latency at {LAT_RATE} queries/s, {} ms each, direct and forwarded",
        plan.dns_reps, plan.dns_ms
    );
    let rate = LAT_RATE.to_string();
    let lat = |cg: &Path, ms: u64| {
        dns_load(
            cg,
            "dns",
            &server,
            ms,
            &["--name", LAT_NAME, "--rate", &rate],
        )
    };
    lat(direct_cg, WARM_UP_MS)?;
    lat(fwd_cg, WARM_UP_MS)?;
    let (mut d50, mut d99, mut f50, mut f99, mut add50, mut add99) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut lost, mut failed, mut fwd_max) = (0u64, 0u64, 0f64);
    let before = agent_dns_status(cx.agent)?;
    for _ in 0..plan.dns_reps {
        let d = lat(direct_cg, plan.dns_ms)?;
        let f = lat(fwd_cg, plan.dns_ms)?;
        let g = |r: &Value, k: &str| r["dns"][k].as_f64().unwrap_or(f64::NAN);
        d50.push(g(&d, "p50_us"));
        d99.push(g(&d, "p99_us"));
        f50.push(g(&f, "p50_us"));
        f99.push(g(&f, "p99_us"));
        add50.push(g(&f, "p50_us") - g(&d, "p50_us"));
        add99.push(g(&f, "p99_us") - g(&d, "p99_us"));
        fwd_max = fwd_max.max(g(&f, "max_us"));
        for r in [&d, &f] {
            lost += r["dns"]["lost"].as_u64().unwrap_or(0);
            failed += r["dns"]["failed"].as_u64().unwrap_or(0);
        }
    }
    let after = agent_dns_status(cx.agent)?;
    let forwarded =
        after["forwarded"].as_u64().unwrap_or(0) - before["forwarded"].as_u64().unwrap_or(0);
    let (added50, added99) = (median(&mut add50.clone()), median(&mut add99.clone()));
    out.insert(
        "latency".into(),
        json!({
            "rate_per_s": LAT_RATE,
            "direct": {"p50_us": summary(&d50), "p99_us": summary(&d99)},
            "forwarded": {"p50_us": summary(&f50), "p99_us": summary(&f99), "max_us": fwd_max},
            "added_p50_us": added50, "added_p50_us_samples": add50,
            "added_p99_us": added99, "added_p99_us_samples": add99,
            "lost": lost, "failed": failed,
            "agent_forwarded": forwarded,
        }),
    );

    // Throughput: the agent on one CPU, the load and NSD on the other.
    eprintln!(
        "bench: DNS: {} repetitions of throughput ({FLOOD_WINDOW} outstanding), {} ms each, agent pinned to CPU {}",
        plan.dns_reps.min(5),
        plan.dns_ms,
        agent_cpu.map_or_else(|| "(none: one CPU)".to_owned(), |c| c.to_string())
    );
    let window = FLOOD_WINDOW.to_string();
    let flood = |cg: &Path, ms: u64| {
        dns_load(
            cg,
            "dnsflood",
            &server,
            ms,
            &["--name", LAT_NAME, "--window", &window],
        )
    };
    let (mut fwd_qps, mut direct_qps, mut cpu, mut cpu_per_query) =
        (vec![], vec![], vec![], vec![]);
    let (mut fwd_lost, mut fwd_failed, mut direct_lost, mut direct_failed) =
        (0u64, 0u64, 0u64, 0u64);
    {
        let _pinned = match agent_cpu {
            Some(c) => Some(Pinned::new(cx.agent.pid(), c, &all)?),
            None => None,
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        flood(fwd_cg, WARM_UP_MS)?;
        for _ in 0..plan.dns_reps.min(5) {
            let d = flood(direct_cg, plan.dns_ms)?;
            let t = Instant::now();
            let ticks0 = proc_cpu_ticks(cx.agent.pid());
            let f = flood(fwd_cg, plan.dns_ms)?;
            let ticks = proc_cpu_ticks(cx.agent.pid()).saturating_sub(ticks0);
            cpu.push(100.0 * ticks as f64 / hz / t.elapsed().as_secs_f64());
            let answered = f["dns"]["answered"].as_f64().unwrap_or(0.0);
            cpu_per_query.push(1e6 * ticks as f64 / hz / answered.max(1.0));
            direct_qps.push(d["dns"]["answers_per_s"].as_f64().unwrap_or(0.0));
            fwd_qps.push(f["dns"]["answers_per_s"].as_f64().unwrap_or(0.0));
            direct_lost += d["dns"]["lost"].as_u64().unwrap_or(0);
            direct_failed += d["dns"]["failed"].as_u64().unwrap_or(0);
            fwd_lost += f["dns"]["lost"].as_u64().unwrap_or(0);
            fwd_failed += f["dns"]["failed"].as_u64().unwrap_or(0);
        }
    }
    let qps = median(&mut fwd_qps.clone());
    out.insert(
        "throughput".into(),
        json!({
            "window": FLOOD_WINDOW,
            "agent_cpu": agent_cpu,
            "forwarded_per_s": summary(&fwd_qps),
            "forwarded_lost": fwd_lost, "forwarded_failed": fwd_failed,
            "agent_cpu_percent_of_its_core": summary(&cpu),
            "agent_cpu_us_per_query": summary(&cpu_per_query),
            // What a whole core would forward at that cost: an estimate
            // for a machine where the agent shares its CPU.
            "per_s_at_a_full_core": 1e6 / median(&mut cpu_per_query.clone()).max(1e-9),
            "direct_per_s": summary(&direct_qps),
            "direct_lost": direct_lost, "direct_failed": direct_failed,
        }),
    );

    // 100,000 learned entries, and what they cost.
    eprintln!(
        "bench: DNS: filling {} learned entries ({FILL_NAMES} names × {FILL_ADDRS} addresses) from /g",
        FILL_NAMES * FILL_ADDRS
    );
    let maps = cx.pins.join("maps");
    let map_mem = |name: &str| map_info(&maps.join(name));
    let names = geowall_common::names::NAMES;
    let name_ok = geowall_common::names::NAME_ALLOW;
    let learned_map = geowall_common::names::LEARNED;
    settle(cx.agent);
    let learned0 = agent_dns_status(cx.agent)?["learned"].as_u64().unwrap_or(0);
    let (slab0, rss0) = (slab_kib(), proc_rss_kib(cx.agent.pid()));
    let mem0: Vec<u64> = [learned_map, names, name_ok]
        .iter()
        .map(|m| map_mem(m).map(|(b, _)| b))
        .collect::<Result<_>>()?;
    let t = Instant::now();
    let count = FILL_NAMES.to_string();
    let fill = dns_load(
        fwd_cg,
        "dnsfill",
        &server,
        0,
        &[
            "--name",
            &format!("n{{i}}.{ZONE}"),
            "--count",
            &count,
            "--window",
            "16",
        ],
    )?;
    let fill_s = t.elapsed().as_secs_f64();
    let f = &fill["dns"];
    if f["answered"].as_u64() != Some(u64::from(FILL_NAMES))
        || f["failed"].as_u64() != Some(0)
        || f["addresses"].as_u64() != Some(u64::from(FILL_NAMES * FILL_ADDRS))
    {
        bail!("the fill did not get every answer: {f}");
    }
    settle(cx.agent);
    let (slab1, rss1) = (slab_kib(), proc_rss_kib(cx.agent.pid()));
    let mem1: Vec<(u64, u64)> = [learned_map, names, name_ok]
        .iter()
        .map(|m| map_mem(m))
        .collect::<Result<_>>()?;
    let status = agent_dns_status(cx.agent)?;
    let learned1 = status["learned"].as_u64().unwrap_or(0);
    let learned = learned1.saturating_sub(learned0);
    if learned < u64::from(FILL_NAMES * FILL_ADDRS) {
        bail!(
            "the agent learned {learned} entries from the fill, not {}: {status}",
            FILL_NAMES * FILL_ADDRS
        );
    }
    let per_100k = |delta: f64| delta * 100_000.0 / learned as f64;
    let slab_delta = slab1 as f64 - slab0 as f64;
    let rss_delta = rss1 as f64 - rss0 as f64;
    // The maps' own account (fdinfo's memlock is their memory use): exact,
    // where the slab moves with whatever else the machine does.
    let maps_delta: f64 = mem0
        .iter()
        .zip(&mem1)
        .map(|(b, (a, _))| *a as f64 - *b as f64)
        .sum::<f64>()
        / 1024.0;
    out.insert(
        "memory".into(),
        json!({
            "learned_before": learned0, "learned_after": learned1, "learned_by_fill": learned,
            "names_after": status["names"], "evicted": status["evicted"],
            "fill_s": fill_s,
            "slab_kib_delta": slab_delta, "slab_kib_per_100k": per_100k(slab_delta),
            "maps_memlock_kib_delta": maps_delta, "maps_memlock_kib_per_100k": per_100k(maps_delta),
            "agent_rss_kib_delta": rss_delta, "agent_rss_kib_per_100k": per_100k(rss_delta),
            "agent_rss_kib": rss1,
            "learned_map": {
                "max_entries": mem1[0].1, "memlock_bytes": mem1[0].0,
                "memlock_bytes_before": mem0[0],
                "preallocated": true,
                "memlock_kib_per_100k_entries": mem1[0].0 as f64 / 1024.0 * 100_000.0 / mem1[0].1.max(1) as f64,
            },
            "names_map_memlock_bytes": {"before": mem0[1], "after": mem1[1].0},
            "name_allow_map_memlock_bytes": {"before": mem0[2], "after": mem1[2].0},
        }),
    );

    // The connect path with the names loaded.
    for (name, want) in [(ALLOWED_NAME, ALLOWED_ADDR), (OTHER_NAME, OTHER_ADDR)] {
        let r = dns_load(
            fwd_cg,
            "dnsfill",
            &server,
            0,
            &["--name", name, "--count", "1"],
        )?;
        if r["dns"]["addresses"].as_u64() != Some(1) || r["dns"]["failed"].as_u64() != Some(0) {
            bail!("resolving {name} (→ {want}) from /g: {}", r["dns"]);
        }
    }
    eprintln!(
        "bench: DNS: TCP connect+close with {learned1} entries learned: loopback, and {ALLOWED_ADDR} allowed by name"
    );
    // Namespaces of the phase's own with the name-allowed address on lo:
    // a listener there, and no route anywhere else.
    let tag = cx.tag;
    let na = Netns::new(&format!("gwbench-{tag}-na"))?;
    let ng = Netns::new(&format!("gwbench-{tag}-ng"))?;
    for n in [&na, &ng] {
        run_ok(
            n.exec("ip")
                .args(["addr", "add", &format!("{ALLOWED_ADDR}/32"), "dev", "lo"]),
        )?;
    }
    let by_name_target = format!("{ALLOWED_ADDR}:7171");
    let tcp = |ns: &Netns, cg: &Path, target: &str| -> Result<Value> {
        loadgen_with(Some(ns), Some(cg), "tcp", target, plan.ms, &[], &[])
    };
    let (mut a_lo, mut g_lo, mut a_nm, mut g_nm) = (vec![], vec![], vec![], vec![]);
    for _ in 0..plan.reps.min(12) {
        let rate = |r: Value| r["rate"].as_f64().unwrap_or(0.0);
        a_lo.push(rate(tcp(cx.ns_a, cx.free, TCP_TARGET)?));
        g_lo.push(rate(tcp(cx.ns_g, cx.governed, TCP_TARGET)?));
        a_nm.push(rate(tcp(&na, cx.free, &by_name_target)?));
        let g = tcp(&ng, cx.governed, &by_name_target)?;
        if errno_count(&g, "EPERM") > 0 || g["ok"].as_u64().unwrap_or(0) == 0 {
            bail!(
                "connects to {by_name_target} from /g were refused: the allow by name did not hold: {g}"
            );
        }
        g_nm.push(rate(g));
    }
    drop((na, ng));
    let lo_pair = paired(&g_lo, &a_lo);
    let nm_pair = paired(&g_nm, &a_nm);

    eprintln!("bench: DNS: connect4 run time, uncached, with the names loaded");
    let progs = [
        cx.pins
            .join("progs")
            .join(geowall_common::names::PROG_CONNECT4),
        cx.pins
            .join("progs")
            .join(geowall_common::names::PROG_SOCK_CREATE),
    ];
    let mut run_time = serde_json::Map::new();
    for (label, dest, allowed) in [
        ("DE, allowed, uncached", DE_ADDR, true),
        ("US, allowed by name, uncached", ALLOWED_ADDR, true),
        ("US, resolved, name not allowed", OTHER_ADDR, false),
        ("US, never resolved, denied", UNRESOLVED_ADDR, false),
    ] {
        let (mut c4, mut sc) = (vec![], vec![]);
        let mut errors = Value::Null;
        for _ in 0..3 {
            let r = loadgen_with(
                Some(cx.ns_g),
                Some(cx.governed),
                "connect-ports",
                &format!("{dest}:443"),
                plan.ms / 2,
                &progs,
                &[],
            )?;
            let denied = errno_count(&r, "EPERM");
            if (allowed && denied > 0) || (!allowed && denied == 0) {
                bail!(
                    "{label}: {dest} was {} from /g: {}",
                    if allowed { "denied" } else { "allowed" },
                    r["errors"]
                );
            }
            c4.push(r["programs"][0]["ns_per_run"].as_f64().unwrap_or(0.0));
            sc.push(r["programs"][1]["ns_per_run"].as_f64().unwrap_or(0.0));
            errors = r["errors"].clone();
        }
        run_time.insert(
            label.into(),
            json!({"destination": dest, "connect4": summary(&c4), "sock_create": summary(&sc), "errors": errors}),
        );
    }
    let still = agent_dns_status(cx.agent)?["learned"].as_u64().unwrap_or(0);
    out.insert(
        "names_loaded".into(),
        json!({
            "learned": still,
            "tcp_connect_loopback": lo_pair,
            "tcp_connect_allowed_by_name": nm_pair,
            "program_run_time_ns": run_time,
        }),
    );

    // Targets.
    let ratio = |v: &Value| v["ratio_to_A"].as_f64().unwrap_or(f64::NAN);
    let mut targets = vec![
        target(
            "forwarding latency added, P50 (µs, at 1,000 queries/s)",
            added50,
            1,
            "≤ 50",
            added50 <= TARGET_P50_US,
        ),
        target(
            "forwarding latency added, P99 (µs, at 1,000 queries/s)",
            added99,
            1,
            "≤ 500",
            added99 <= TARGET_P99_US,
        ),
        target(
            "throughput on one core (answers/s), 0 lost",
            qps,
            0,
            "≥ 20000, 0 lost",
            qps >= TARGET_QPS && fwd_lost == 0 && fwd_failed == 0,
        ),
        target(
            "TCP G ratio, 100k names learned, loopback",
            ratio(&out["names_loaded"]["tcp_connect_loopback"]),
            3,
            "≥ 0.98",
            ratio(&out["names_loaded"]["tcp_connect_loopback"]) >= TARGET_RATIO,
        ),
        target(
            "TCP G ratio, 100k names learned, to an address allowed by name",
            ratio(&out["names_loaded"]["tcp_connect_allowed_by_name"]),
            3,
            "≥ 0.98",
            ratio(&out["names_loaded"]["tcp_connect_allowed_by_name"]) >= TARGET_RATIO,
        ),
    ];
    for (label, v) in &out["names_loaded"]["program_run_time_ns"]
        .as_object()
        .cloned()
        .unwrap_or_default()
    {
        let ns = v["connect4"]["median"].as_f64().unwrap_or(f64::NAN);
        targets.push(target(
            &format!("connect4 ns, 100k names learned: {label}"),
            ns,
            0,
            "≤ 300",
            ns <= TARGET_CONNECT4_NS,
        ));
    }
    out.insert("targets".into(), Value::Array(targets));
    drop(nsd);
    Ok(Value::Object(out))
}

/// The DNS section of the table; `r` is the whole result (the main table's
/// run times without names, for comparison).
pub(super) fn print(r: &Value) {
    let d = &r["dns"];
    if d.is_null() {
        return;
    }
    println!("\nDNS (the forwarder; NSD on loopback):");
    if let Some(e) = d["error"].as_str() {
        println!("  failed: {e}");
        return;
    }
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let l = &d["latency"];
    println!(
        "  latency at {} queries/s, µs      P50 direct {:>7.1}  forwarded {:>7.1}   P99 direct {:>7.1}  forwarded {:>7.1}",
        l["rate_per_s"],
        f(&l["direct"]["p50_us"]["median"]),
        f(&l["forwarded"]["p50_us"]["median"]),
        f(&l["direct"]["p99_us"]["median"]),
        f(&l["forwarded"]["p99_us"]["median"]),
    );
    println!(
        "  latency added (median of per-repetition differences): P50 {:.1} µs, P99 {:.1} µs; lost {}, failed {}",
        f(&l["added_p50_us"]),
        f(&l["added_p99_us"]),
        l["lost"],
        l["failed"]
    );
    let t = &d["throughput"];
    println!(
        "  throughput, {} outstanding, agent on CPU {}: forwarded {:.0}/s ({:.0}–{:.0}), lost {}, failed {}, agent CPU {:.0} % of its core ({:.1} µs a query: ≈ {:.0}/s at a full core); NSD alone {:.0}/s",
        t["window"],
        t["agent_cpu"],
        f(&t["forwarded_per_s"]["median"]),
        f(&t["forwarded_per_s"]["min"]),
        f(&t["forwarded_per_s"]["max"]),
        t["forwarded_lost"],
        t["forwarded_failed"],
        f(&t["agent_cpu_percent_of_its_core"]["median"]),
        f(&t["agent_cpu_us_per_query"]["median"]),
        f(&t["per_s_at_a_full_core"]),
        f(&t["direct_per_s"]["median"]),
    );
    let m = &d["memory"];
    println!(
        "  memory across the fill ({} entries learned, {} names, {:.1} s), per 100k entries: slab {:+.0} KiB, the maps' memlock {:+.0} KiB, agent RSS {:+.0} KiB",
        m["learned_by_fill"],
        m["names_after"],
        f(&m["fill_s"]),
        f(&m["slab_kib_per_100k"]),
        f(&m["maps_memlock_kib_per_100k"]),
        f(&m["agent_rss_kib_per_100k"]),
    );
    println!(
        "  GW_LEARNED: {} entries preallocated at start, memlock {:.1} MiB whatever is learned ({:.0} KiB per 100k entries of room); GW_NAMES memlock {:.1} → {:.1} MiB",
        m["learned_map"]["max_entries"],
        f(&m["learned_map"]["memlock_bytes"]) / 1048576.0,
        f(&m["learned_map"]["memlock_kib_per_100k_entries"]),
        f(&m["names_map_memlock_bytes"]["before"]) / 1048576.0,
        f(&m["names_map_memlock_bytes"]["after"]) / 1048576.0,
    );
    let n = &d["names_loaded"];
    for (title, key) in [
        ("TCP connect+close, loopback", "tcp_connect_loopback"),
        (
            "TCP connect+close, to 8.8.8.8 allowed by name",
            "tcp_connect_allowed_by_name",
        ),
    ] {
        let x = &n[key];
        println!(
            "  {title:<46} G/A ratio {:.3} ({:.3}–{:.3}), ns added {:.0}",
            f(&x["ratio_to_A"]),
            f(&x["ratio_to_A_min"]),
            f(&x["ratio_to_A_max"]),
            f(&x["ns_added"]),
        );
    }
    let without = &r["program_run_time_ns"];
    if let Some(m) = n["program_run_time_ns"].as_object() {
        for (k, v) in m {
            // The main table's figure, under a policy without allow_names.
            let before = match k.as_str() {
                "DE, allowed, uncached" => Some("DE, allowed, uncached"),
                "US, never resolved, denied" => Some("US, denied"),
                _ => None,
            }
            .map(|m| {
                format!(
                    " (without allow_names: {:.0} ns)",
                    f(&without[m]["connect4"]["median"])
                )
            })
            .unwrap_or_default();
            println!(
                "  connect4 {k:<34} {:>5.0} ns   sock_create {:>5.0} ns{before}",
                f(&v["connect4"]["median"]),
                f(&v["sock_create"]["median"]),
            );
        }
    }
    println!("  targets (issue 17):");
    for t in d["targets"].as_array().into_iter().flatten() {
        println!(
            "    {} {:<66} {:>9}  (target {})",
            if t["met"] == true { "✓" } else { "✗" },
            t["what"].as_str().unwrap_or(""),
            t["shown"].as_str().unwrap_or(""),
            t["target"].as_str().unwrap_or(""),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zone_has_a_hundred_thousand_fill_addresses_in_the_benchmark_range() {
        let z = zone_text(Ipv4Addr::new(127, 53, 1, 253));
        let fill: Vec<&str> = z
            .lines()
            .filter(|l| l.starts_with('n') && !l.starts_with("ns "))
            .collect();
        assert_eq!(fill.len(), 100_000);
        assert_eq!(fill[0], "n0 A 198.18.0.0");
        assert_eq!(fill[99_999], "n3999 A 198.19.134.159");
        let last: Ipv4Addr = fill[99_999].rsplit(' ').next().unwrap().parse().unwrap();
        assert!(u32::from(last) < u32::from(Ipv4Addr::new(198, 20, 0, 0)));
    }
}
