//! loadgen: the load of `cargo xtask bench`. Enters a network namespace and
//! a cgroup, then hammers one destination for a while and prints what it
//! managed as one JSON object.
//!
//! ```text
//! loadgen [--netns NAME] [--cgroup DIR] [--cpu N] --mode MODE --target ADDR:PORT --ms N [--prog PIN]…
//!   tcp       connect + close (SO_LINGER 0) to a listener it runs itself
//!   udp       sendto from one unconnected socket to a receiver it binds
//!   connect   connect attempts to a destination that fails fast (no route
//!             from a namespace with only lo, or a refusal): cost of a verdict
//! ```
//! With `--cpu`, every thread runs on that CPU only: a wake-up of the
//! acceptor or receiver never crosses CPUs. (In a VM, waking an idle CPU
//! costs microseconds, so rates would depend on whatever else keeps the
//! other CPU busy: the agent writing flow records, say.)
//! With `--prog`, run-time statistics are enabled (BPF_ENABLE_STATS) and the
//! pinned programs' run count and time over the run are reported.

use std::{
    collections::BTreeMap,
    io,
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::PathBuf,
    time::{Duration, Instant},
};

use geowall::kernel::stats;

fn enter_netns(name: &str) {
    let path = format!("/run/netns/{name}");
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("loadgen: open {path}: {e}"));
    // SAFETY: setns on a namespace fd, before any other thread exists.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        panic!("loadgen: setns {path}: {}", io::Error::last_os_error());
    }
}

/// Confines this process (and the threads it starts later) to `cpu`.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in its
    // bounds for cpu < CPU_SETSIZE, checked first.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert!(
            cpu < libc::CPU_SETSIZE as usize,
            "loadgen: --cpu {cpu} out of range"
        );
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            panic!("loadgen: pin to CPU {cpu}: {}", io::Error::last_os_error());
        }
    }
}

fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::ENETUNREACH) => "ENETUNREACH".into(),
        Some(libc::ECONNREFUSED) => "ECONNREFUSED".into(),
        Some(libc::EADDRNOTAVAIL) => "EADDRNOTAVAIL".into(),
        Some(n) => format!("errno{n}"),
        None => e.to_string(),
    }
}

fn tcp(target: SocketAddr, until: Instant, counts: &mut BTreeMap<String, u64>) -> u64 {
    let listener = TcpListener::bind(target).expect("loadgen: listen");
    // A deep accept queue: the client must never wait for the acceptor.
    // SAFETY: listen(2) again on our own listening socket resizes its queue.
    unsafe { libc::listen(listener.as_raw_fd(), 4096) };
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });
    let mut ok = 0;
    while Instant::now() < until {
        match TcpStream::connect(target) {
            Ok(s) => {
                // Close with a reset: no TIME_WAIT, no port exhaustion.
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: setsockopt on our own socket with a valid linger.
                unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&raw const linger).cast(),
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    )
                };
                ok += 1;
            }
            Err(e) => *counts.entry(errno_name(&e)).or_default() += 1,
        }
    }
    ok
}

fn udp(target: SocketAddr, until: Instant, counts: &mut BTreeMap<String, u64>) -> u64 {
    let receiver = UdpSocket::bind(target).expect("loadgen: bind receiver");
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let s = UdpSocket::bind(bind).expect("loadgen: udp socket");
    let payload = [0u8; 64];
    let mut ok = 0;
    let mut since_drain = 0;
    let mut buf = [0u8; 64];
    receiver.set_nonblocking(true).ok();
    while Instant::now() < until {
        match s.send_to(&payload, target) {
            Ok(_) => ok += 1,
            Err(e) => *counts.entry(errno_name(&e)).or_default() += 1,
        }
        since_drain += 1;
        if since_drain == 64 {
            since_drain = 0;
            while receiver.recv(&mut buf).is_ok() {}
        }
    }
    ok
}

/// Connects to `target` until `until`; with `vary_port`, to a new port
/// each time (1024–65535), so no two attempts in a row share a key of the
/// programs' verdict cache.
fn connect_attempts(
    target: SocketAddr,
    until: Instant,
    counts: &mut BTreeMap<String, u64>,
    vary_port: bool,
) -> u64 {
    let mut n = 0;
    let mut target = target;
    while Instant::now() < until {
        if vary_port {
            target.set_port(1024 + (n % 64512) as u16);
        }
        match TcpStream::connect(target) {
            Ok(_) => *counts.entry("ok".into()).or_default() += 1,
            Err(e) => *counts.entry(errno_name(&e)).or_default() += 1,
        }
        n += 1;
    }
    n
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut mode, mut target, mut ms) = (String::new(), None::<SocketAddr>, 1000u64);
    let mut progs: Vec<PathBuf> = Vec::new();
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| panic!("loadgen: {a} needs a value"))
        };
        match a.as_str() {
            "--netns" => enter_netns(&val()),
            "--cgroup" => {
                let dir = val();
                std::fs::write(format!("{dir}/cgroup.procs"), "0")
                    .unwrap_or_else(|e| panic!("loadgen: join {dir}: {e}"));
            }
            "--cpu" => pin_to_cpu(val().parse().expect("loadgen: --cpu N")),
            "--mode" => mode = val(),
            "--target" => target = Some(val().parse().expect("loadgen: --target ADDR:PORT")),
            "--ms" => ms = val().parse().expect("loadgen: --ms N"),
            "--prog" => progs.push(val().into()),
            other => panic!("loadgen: unknown argument {other}"),
        }
    }
    let target = target.expect("loadgen: --target is required");
    let _stats = (!progs.is_empty())
        .then(|| stats::enable_run_time_stats().expect("loadgen: BPF_ENABLE_STATS"));
    let prog_stats = || -> Vec<stats::ProgramStats> {
        progs
            .iter()
            .map(|p| {
                stats::pinned_program_stats(p)
                    .unwrap_or_else(|e| panic!("loadgen: {}: {e}", p.display()))
            })
            .collect()
    };
    let before = prog_stats();
    let mut counts = BTreeMap::new();
    let start = Instant::now();
    let until = start + Duration::from_millis(ms);
    let ok = match mode.as_str() {
        "tcp" => tcp(target, until, &mut counts),
        "udp" => udp(target, until, &mut counts),
        "connect" => connect_attempts(target, until, &mut counts, false),
        "connect-ports" => connect_attempts(target, until, &mut counts, true),
        other => panic!("loadgen: unknown mode '{other}'"),
    };
    let secs = start.elapsed().as_secs_f64();
    let after = prog_stats();
    let programs: Vec<serde_json::Value> = progs
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(p, (b, a))| {
            let runs = a.run_count - b.run_count;
            let ns = (a.run_time - b.run_time).as_nanos();
            serde_json::json!({
                "prog": p,
                "runs": runs,
                "ns_per_run": if runs > 0 { ns as f64 / runs as f64 } else { 0.0 },
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({"mode": mode, "ok": ok, "secs": secs, "rate": ok as f64 / secs, "errors": counts, "programs": programs})
    );
}
