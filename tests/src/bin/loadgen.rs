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
//!   connect-ports   the same, to a new port each time (no verdict cache)
//!   dns       A queries for --name to the resolver at --target, one every
//!             1/--rate s for --ms, whatever is outstanding (open loop):
//!             latency P50/P99/max in µs, lost and failed answers
//!   dnsflood  the same, keeping --window queries outstanding for --ms
//!             (closed loop): answers per second, lost and failed
//!   dnsfill   one query for each of --count names (--name with {i} for
//!             --first.. --first+count-1), --window outstanding: answers and
//!             the addresses they carried (to fill what a job resolved)
//! ```
//! The DNS modes use one connected UDP socket, as glibc does; a query is
//! matched to its answer by ID, and one unanswered after --timeout-ms (3000)
//! is lost. `failed` counts answers whose rcode is not NOERROR.
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

/// What a DNS mode asks, and how.
struct DnsLoad {
    /// The query name; `{i}` in it is replaced by the query's number.
    name: String,
    /// Numbers of the names (dnsfill): `first..first + count`; `None`: the
    /// one name, for `ms`.
    count: Option<u64>,
    first: u64,
    /// Open loop: one query every 1/rate s, whatever is outstanding.
    rate: Option<f64>,
    /// Closed loop: at most this many outstanding.
    window: usize,
    ms: u64,
    timeout: Duration,
}

/// An A query for `name` with ID `id`, recursion desired (what a stub
/// resolver sends).
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        assert!((1..=63).contains(&label.len()), "loadgen: bad name {name}");
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]);
    q
}

/// The offset after the name at `at` (labels, or a compression pointer).
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = usize::from(*msg.get(at)?);
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return (at + 2 <= msg.len()).then_some(at + 2),
            l if l & 0xc0 != 0 => return None,
            l => at += 1 + l,
        }
    }
}

/// An answer's ID, rcode and the number of A/AAAA records in its answer
/// section; `None` when it is no answer or does not parse.
fn dns_reply(msg: &[u8]) -> Option<(u16, u8, u64)> {
    if msg.len() < 12 || msg[2] & 0x80 == 0 {
        return None;
    }
    let u16_at =
        |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?])) };
    let (id, rcode) = (u16_at(0)?, msg[3] & 0x0f);
    let (qd, an) = (u16_at(4)?, u16_at(6)?);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(msg, at)? + 4;
    }
    let mut addresses = 0;
    for _ in 0..an {
        at = skip_name(msg, at)?;
        let rtype = u16_at(at)?;
        let rdlen = usize::from(u16_at(at + 8)?);
        at += 10 + rdlen;
        if at > msg.len() {
            return None;
        }
        if (rtype == 1 && rdlen == 4) || (rtype == 28 && rdlen == 16) {
            addresses += 1;
        }
    }
    Some((id, rcode, addresses))
}

/// The `q` quantile of sorted `v`, in µs.
fn quantile_us(v: &[u64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i] as f64 / 1000.0
}

/// Runs a DNS mode against `target` over one connected UDP socket;
/// answers the queries answered in the sending period (the load's `ok`) and
/// the rest of the report.
fn dns(
    target: SocketAddr,
    load: &DnsLoad,
    counts: &mut BTreeMap<String, u64>,
) -> (u64, serde_json::Value) {
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(bind).expect("loadgen: udp socket");
    sock.connect(target)
        .expect("loadgen: connect to the resolver");
    sock.set_nonblocking(true).expect("loadgen: non-blocking");
    let one = (!load.name.contains("{i}")).then(|| dns_query(0, &load.name));
    // Outstanding queries by ID: (sequence number, when sent); in the order
    // sent, to find the ones past their timeout.
    let mut slots: Vec<Option<(u64, Instant)>> = vec![None; 65536];
    let mut order: std::collections::VecDeque<(u16, u64)> = std::collections::VecDeque::new();
    let (mut outstanding, mut seq) = (0usize, 0u64);
    let (mut answered, mut in_period, mut lost, mut failed, mut late, mut addresses) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut rcodes: BTreeMap<String, u64> = BTreeMap::new();
    let mut latencies: Vec<u64> = Vec::new();
    let interval = load.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let start = Instant::now();
    let send_until = start + Duration::from_millis(load.ms);
    let mut next_send = start;
    let mut sending_secs = None;
    let mut buf = [0u8; 4096];
    loop {
        let mut now = Instant::now();
        let more = |now: Instant, seq: u64| match load.count {
            Some(n) => seq < n,
            None => now < send_until,
        };
        while more(now, seq)
            && outstanding < load.window
            && interval.is_none_or(|_| now >= next_send)
        {
            let id = (seq & 0xffff) as u16;
            if slots[usize::from(id)].is_some() {
                // Still outstanding from 65,536 queries ago.
                break;
            }
            let mut q = match &one {
                Some(q) => q.clone(),
                None => dns_query(
                    0,
                    &load.name.replace("{i}", &(load.first + seq).to_string()),
                ),
            };
            q[..2].copy_from_slice(&id.to_be_bytes());
            match sock.send(&q) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    *counts.entry(errno_name(&e)).or_default() += 1;
                    break;
                }
            }
            slots[usize::from(id)] = Some((seq, Instant::now()));
            order.push_back((id, seq));
            outstanding += 1;
            seq += 1;
            if let Some(iv) = interval {
                next_send += iv;
            }
            now = Instant::now();
        }
        if sending_secs.is_none() && !more(now, seq) {
            sending_secs = Some(now.duration_since(start).as_secs_f64());
            in_period = answered;
        }
        loop {
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    *counts.entry(errno_name(&e)).or_default() += 1;
                    break;
                }
            };
            let at = Instant::now();
            let Some((id, rcode, n_addr)) = dns_reply(&buf[..n]) else {
                late += 1;
                continue;
            };
            let Some((_, sent)) = slots[usize::from(id)].take() else {
                late += 1;
                continue;
            };
            outstanding -= 1;
            answered += 1;
            latencies.push(at.duration_since(sent).as_nanos() as u64);
            addresses += n_addr;
            if rcode != 0 {
                failed += 1;
                *rcodes.entry(format!("rcode{rcode}")).or_default() += 1;
            }
        }
        now = Instant::now();
        while let Some(&(id, s)) = order.front() {
            match slots[usize::from(id)] {
                Some((s2, sent)) if s2 == s => {
                    if now.duration_since(sent) < load.timeout {
                        break;
                    }
                    slots[usize::from(id)] = None;
                    outstanding -= 1;
                    lost += 1;
                }
                _ => {}
            }
            order.pop_front();
        }
        let sending = more(now, seq);
        if !sending && outstanding == 0 {
            break;
        }
        // Sleep until the next query is due or an answer comes (at most
        // 10 ms, to notice timeouts).
        let wait = match interval {
            Some(_) if sending => next_send.saturating_duration_since(now),
            None if sending && outstanding < load.window => Duration::ZERO,
            _ => Duration::from_millis(10),
        }
        .min(Duration::from_millis(10));
        if !wait.is_zero() {
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: wait.as_nanos() as libc::c_long,
            };
            let mut pfd = libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, a valid timespec, no signal mask.
            unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        }
    }
    let secs = sending_secs.unwrap_or_else(|| start.elapsed().as_secs_f64());
    latencies.sort_unstable();
    let mean = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().sum::<u64>() as f64 / latencies.len() as f64 / 1000.0
    };
    let report = serde_json::json!({
        "sent": seq,
        "answered": answered,
        "lost": lost,
        "failed": failed,
        "late": late,
        "rcodes": rcodes,
        "addresses": addresses,
        "answers_per_s": in_period as f64 / secs.max(1e-9),
        "p50_us": quantile_us(&latencies, 0.50),
        "p99_us": quantile_us(&latencies, 0.99),
        "max_us": latencies.last().map_or(0.0, |v| *v as f64 / 1000.0),
        "mean_us": mean,
        "secs": secs,
    });
    (in_period, report)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut mode, mut target, mut ms) = (String::new(), None::<SocketAddr>, 1000u64);
    let mut progs: Vec<PathBuf> = Vec::new();
    let mut load = DnsLoad {
        name: String::new(),
        count: None,
        first: 0,
        rate: None,
        window: usize::MAX,
        ms: 0,
        timeout: Duration::from_secs(3),
    };
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
            "--name" => load.name = val(),
            "--rate" => load.rate = Some(val().parse().expect("loadgen: --rate N")),
            "--window" => load.window = val().parse().expect("loadgen: --window N"),
            "--count" => load.count = Some(val().parse().expect("loadgen: --count N")),
            "--first" => load.first = val().parse().expect("loadgen: --first N"),
            "--timeout-ms" => {
                load.timeout =
                    Duration::from_millis(val().parse().expect("loadgen: --timeout-ms N"));
            }
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
    load.ms = ms;
    let mut dns_report = None;
    let ok = match mode.as_str() {
        "tcp" => tcp(target, until, &mut counts),
        "udp" => udp(target, until, &mut counts),
        "connect" => connect_attempts(target, until, &mut counts, false),
        "connect-ports" => connect_attempts(target, until, &mut counts, true),
        "dns" | "dnsflood" | "dnsfill" => {
            assert!(!load.name.is_empty(), "loadgen: --mode {mode} needs --name");
            match mode.as_str() {
                "dns" => {
                    assert!(load.rate.is_some(), "loadgen: --mode dns needs --rate");
                    load.count = None;
                }
                "dnsflood" => {
                    load.rate = None;
                    load.count = None;
                    if load.window == usize::MAX {
                        load.window = 64;
                    }
                }
                _ => {
                    assert!(
                        load.count.is_some(),
                        "loadgen: --mode dnsfill needs --count"
                    );
                    load.rate = None;
                    if load.window == usize::MAX {
                        load.window = 16;
                    }
                }
            }
            let (ok, report) = dns(target, &load, &mut counts);
            dns_report = Some(report);
            ok
        }
        other => panic!("loadgen: unknown mode '{other}'"),
    };
    let mut secs = start.elapsed().as_secs_f64();
    if let Some(r) = &dns_report {
        // The sending period (the tail of outstanding answers aside).
        secs = r["secs"].as_f64().unwrap_or(secs);
    }
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
    let mut out = serde_json::json!({"mode": mode, "ok": ok, "secs": secs, "rate": ok as f64 / secs, "errors": counts, "programs": programs});
    if let Some(serde_json::Value::Object(r)) = dns_report {
        out["dns"] = serde_json::Value::Object(r);
    }
    println!("{out}");
}
