//! The paths out that a job might try beyond connect and sendto, each tried
//! from inside `geowall exec` as root and as an unprivileged user (uid
//! 65534), IPv4 and IPv6: every inet protocol the kernel creates, UDP-Lite,
//! source routes (IPv6 routing headers, IPv4 options), addresses that carry
//! an IPv4 address inside IPv6, a connected UDP send with ancillary data,
//! descriptors the job did not create, inbound connections, and packet
//! sockets in a user namespace of the job's own.
//!
//! Destinations are loopback addresses a test map tags, addresses in
//! network namespaces the test made, or real public addresses probed from
//! a fresh namespace with only `lo` (allowed → no route, denied → EPERM).

use std::{
    collections::BTreeSet,
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    time::Duration,
};

use geowall_tests::{Agent, AgentSpec, Listener, TestCgroup, netprobe, outcomes};
use serde_json::Value;

const MAP: &str = "\
127.20.0.0/16 US
127.30.0.0/16 DE
::1/128 DE
# a ULA no route leads to, as a US hop
fd00:dead::/32 US
# the unspecified addresses: a hook handed no address must not judge them
0.0.0.0/8 US
::/128 US
# the peers of the inbound test, in namespaces the test makes
203.0.113.0/24 US
198.51.100.0/24 DE
";

const EU_ONLY: &str = "[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\n";

fn agent(cg: &TestCgroup, extra: &str) -> Agent {
    AgentSpec::new(cg)
        .cidr_map("test.cidr", MAP)
        .config(&format!("{EU_ONLY}{extra}"))
        .start()
}

/// Who runs the probe inside the job.
#[derive(Debug, Clone, Copy)]
enum As {
    Root,
    Nobody,
}

/// `netprobe OPS…` as a job of `policy`, as `who`; one JSON value per line.
fn probe_as(agent: &Agent, policy: &str, who: As, ops: &[&str]) -> Vec<Value> {
    let probe = netprobe().display().to_string();
    let mut cmd: Vec<String> = Vec::new();
    if let As::Nobody = who {
        cmd.extend(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ]
            .map(String::from),
        );
    }
    cmd.push(probe);
    cmd.extend(ops.iter().map(|s| (*s).to_owned()));
    let out = agent.exec(policy, &cmd);
    assert!(
        out.status.success(),
        "{cmd:?} as {who:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn results(values: &[Value]) -> Vec<String> {
    values
        .iter()
        .map(|v| v["result"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[test]
fn every_inet_protocol_a_job_can_create_is_judged_on_every_path_or_refused() {
    let cg = TestCgroup::new("protowalk");
    let agent = agent(&cg, "");
    // What the address hooks judge on every path: TCP, MPTCP (its subflows
    // connect as TCP), UDP. Raw and ping sockets: the policy says no.
    let judged: BTreeSet<&str> = ["stream/0", "stream/6", "stream/262", "dgram/0", "dgram/17"]
        .into_iter()
        .collect();
    for who in [As::Root, As::Nobody] {
        for fam in ["4", "6"] {
            let walk = &probe_as(&agent, "eu-only", who, &[&format!("protowalk:{fam}")])[0];
            let created: BTreeSet<&str> = walk["created"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(
                created.is_subset(&judged),
                "{who:?} IPv{fam}: created beyond what is judged: {:?}",
                created.difference(&judged).collect::<Vec<_>>()
            );
            for must in ["stream/6", "dgram/17"] {
                assert!(created.contains(must), "{who:?} IPv{fam}: {must}: {walk}");
            }
        }
    }
    // MPTCP's connect is judged (as its TCP subflow's).
    let us = Listener::on("127.20.0.1");
    let out = probe_as(
        &agent,
        "eu-only",
        As::Nobody,
        &[&format!("mptcp:{}", us.target())],
    );
    assert_eq!(results(&out), ["connect:EPERM"]);
}

#[test]
fn udp_lite_is_refused_at_creation_and_recorded() {
    let cg = TestCgroup::new("udplite");
    let agent = agent(&cg, "");
    for who in [As::Root, As::Nobody] {
        let out = probe_as(
            &agent,
            "eu-only",
            who,
            &[
                "udplite:127.20.0.1:9",
                "udplite:127.30.0.1:9",
                "udplite:[::1]:9",
            ],
        );
        assert_eq!(
            results(&out),
            ["socket:EPERM"; 3],
            "{who:?}: refused whatever the destination"
        );
    }
    let rec = agent.wait_record("the UDP-Lite refusal", |r| r["proto"] == "udplite");
    assert_eq!(rec["verdict"], "deny");
    assert_eq!(rec["hook"], "sock_create");
    assert_eq!(rec["reason"], "socket_type");
}

#[test]
fn source_routes_are_refused_unless_every_hop_is_allowed() {
    let cg = TestCgroup::new("srcroute");
    let agent = agent(
        &cg,
        "\n[[policy]]\nname = \"eu-raw\"\nallow = [\"EU\"]\nraw_sockets = \"allow\"\n",
    );
    for who in [As::Root, As::Nobody] {
        let out = probe_as(
            &agent,
            "eu-only",
            who,
            &[
                // A segment routing header through a US hop, to an allowed
                // final address: refused at setsockopt.
                "rthdr:[fd00:dead::1]|[::1]:9",
                // Every hop allowed: it goes.
                "rthdr:[::1]|[::1]:9",
                // As ancillary data: this kernel accepts no routing header
                // type a job could use there (type 2 needs Mobile IPv6).
                "rthdrcmsg:[fd00:dead::1]|[::1]:9",
                "rthdr2292:[fd00:dead::1]|[::1]:9",
            ],
        );
        let r = results(&out);
        assert_eq!(r[0], "setsockopt:EPERM", "{who:?}: {out:?}");
        assert_eq!(r[1], "ok", "{who:?}: {out:?}");
        assert!(
            r[2] != "ok" && r[3] != "ok",
            "{who:?}: a routing header in a cmsg went out: {out:?}"
        );
    }
    let hop = agent.wait_record("the refused hop", |r| r["hook"] == "setsockopt");
    assert_eq!(hop["verdict"], "deny");
    assert_eq!(hop["dst"], "fd00:dead::1");
    assert_eq!(hop["tags"], serde_json::json!(["US"]));
    // IPv4 options: any source route is refused (root; the kernel itself
    // refuses them to others).
    let out = probe_as(
        &agent,
        "eu-only",
        As::Root,
        &["ipopts:127.30.0.2|127.30.0.1:9"],
    );
    assert_eq!(results(&out), ["setsockopt:EPERM"]);
    let rec = agent.wait_record("the IP options refusal", |r| {
        r["hook"] == "setsockopt" && r["reason"] == "source_route"
    });
    assert_eq!(rec["verdict"], "deny");
    // The source route as ancillary data (IP_RETOPTS), which no hook sees:
    // the kernel wants CAP_NET_RAW for it, which a job lacks as root and as
    // nobody — and which a job keeps under raw_sockets = "allow", where it
    // goes out unjudged (stated in the README, as raw sockets are).
    for who in [As::Root, As::Nobody] {
        let out = probe_as(
            &agent,
            "eu-only",
            who,
            &["ipoptscmsg:127.20.0.2|127.30.0.1:9"],
        );
        assert_eq!(results(&out), ["send:EPERM"], "{who:?}");
    }
    let out = probe_as(
        &agent,
        "eu-raw",
        As::Root,
        &["ipoptscmsg:127.20.0.2|127.30.0.1:9"],
    );
    assert_eq!(results(&out), ["ok"], "the stated open path changed");
    // What the job reads on its standard error names the option and the
    // hop refused, not an address and port it never asked for.
    let probe = netprobe().display().to_string();
    for (op, told) in [
        (
            "rthdr:[fd00:dead::1]|[::1]:9",
            "geowall: IPV6_RTHDR via fd00:dead::1 (US) refused by policy eu-only",
        ),
        (
            "ipopts:127.30.0.2|127.30.0.1:9",
            "geowall: IP_OPTIONS source route (",
        ),
    ] {
        let out = agent.exec("eu-only", &[probe.as_str(), op]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.lines().any(|l| l.starts_with(told)),
            "{op}: {stderr}"
        );
    }
}

#[test]
fn ipv6_addresses_carrying_ipv4_are_judged_by_the_address_inside() {
    let cg = TestCgroup::new("nat64");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .agent_keys("nat64 = [\"2001:db8:64::/96\"]")
        .config("[[policy]]\nname = \"eu-open\"\nallow = [\"EU\"]\nuntagged = \"allow\"\n")
        .start();
    // From a namespace with only lo: allowed → no route, denied → EPERM.
    let out = agent.exec_probe(
        "eu-open",
        &[
            "--netns",
            // NAT64 well-known prefix: 127.20.0.1 (US), 127.30.0.1 (DE).
            "tcp:[64:ff9b::7f14:1]:443",
            "tcp:[64:ff9b::7f1e:1]:443",
            // 6to4 and IPv4-compatible forms of 127.20.0.1.
            "tcp:[2002:7f14:1::1]:443",
            "tcp:[::7f14:1]:443",
            // The operator's prefix, and the same bits outside it.
            "tcp:[2001:db8:64::7f14:1]:443",
            "tcp:[2001:db8:65::7f14:1]:443",
            "udp:[64:ff9b::7f14:1]:443",
        ],
    );
    assert_eq!(
        outcomes(&out),
        [
            "EPERM",
            "ENETUNREACH",
            "EPERM",
            "EPERM",
            "EPERM",
            "ENETUNREACH",
            "EPERM"
        ]
    );
    let rec = agent.wait_record("the NAT64 denial", |r| r["dst"] == "64:ff9b::7f14:1");
    assert_eq!(rec["inner"], "127.20.0.1", "{rec}");
    assert_eq!(rec["tags"], serde_json::json!(["US"]), "{rec}");
    assert_eq!(
        rec["prefix"], "127.20.0.0/16",
        "the inner address's range: {rec}"
    );
    // explain agrees, and says why.
    let e = agent.cli_json(&[
        "policy",
        "explain",
        "--json",
        "--policy",
        "eu-open",
        "64:ff9b::7f14:1",
    ]);
    assert_eq!(e["verdict"], "deny", "{e}");
    assert_eq!(e["inner"], "127.20.0.1", "{e}");
    assert!(e["why"].as_str().unwrap().contains("inside"), "{e}");
}

#[test]
fn a_connected_udp_send_with_ancillary_data_is_judged_by_its_peer() {
    // The kernel hands the sendmsg hook no address for it (the socket's
    // peer is meant): judged as 0.0.0.0 or ::, which this map tags US, it
    // would be refused.
    let cg = TestCgroup::new("udptos");
    let agent = agent(&cg, "");
    for who in [As::Root, As::Nobody] {
        let out = probe_as(
            &agent,
            "eu-only",
            who,
            &[
                "udptos:127.30.0.1:9",
                "udptos:[::1]:9",
                "udptos:127.20.0.1:9",
            ],
        );
        assert_eq!(results(&out), ["ok", "ok", "connect:EPERM"], "{who:?}");
    }
}

/// Two network namespaces joined by a veth pair, removed on drop: the job
/// listens in `a` (203.0.113.1, 198.51.100.1), peers connect from `b`
/// (203.0.113.2 US, 198.51.100.2 DE).
struct Pair {
    a: String,
    b: String,
}

impl Pair {
    fn new() -> Pair {
        let tag = std::process::id();
        let pair = Pair {
            a: format!("gwt{tag}a"),
            b: format!("gwt{tag}b"),
        };
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        ip(&[
            "-n", &pair.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns",
            &pair.b,
        ]);
        for (ns, dev, host) in [(&pair.a, "va", "1"), (&pair.b, "vb", "2")] {
            for net in ["203.0.113", "198.51.100"] {
                ip(&[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{net}.{host}/24"),
                    "dev",
                    dev,
                ]);
            }
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// The job listens in `pair.a` for 4 s while peers in `pair.b` connect to
/// both addresses: what the peers saw, and whom the job accepted.
fn inbound(agent: &Agent, policy: &str, pair: &Pair, port: u16) -> (Vec<String>, Value) {
    let probe = netprobe().display().to_string();
    let listen = format!("listen:0.0.0.0:{port}:4000");
    let cmd = [probe.as_str(), "--netns-at", &pair.a, &listen];
    let job = geowall_tests::geowall_cmd("exec", &agent.config)
        .args(["--policy", policy, "--"])
        .args(cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the listening job");
    std::thread::sleep(Duration::from_millis(800));
    let peers = Command::new(&probe)
        .args([
            "--netns-at",
            &pair.b,
            &format!("tcp:203.0.113.1:{port}"),
            &format!("tcp:198.51.100.1:{port}"),
        ])
        .output()
        .expect("run the peers");
    let out = job.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listened: Value = serde_json::from_slice(&out.stdout).unwrap();
    (outcomes(&peers), listened)
}

/// Programs attached to the test's governed cgroup for inbound packets.
fn ingress_programs(cg: &TestCgroup) -> usize {
    use geowall::kernel::sys::{attach_type, cgroup_prog_ids};
    use std::os::fd::AsFd;
    let dir = std::fs::File::open(cg.path()).unwrap();
    cgroup_prog_ids(dir.as_fd(), attach_type::CGROUP_INET_INGRESS)
        .unwrap()
        .len()
}

fn reload(agent: &Agent) {
    let out = agent.cli(&["map", "load"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const JUDGE_IN: &str =
    "\n[[policy]]\nname = \"eu-judge-in\"\nallow = [\"EU\"]\ninbound = \"judge\"\n";

#[test]
fn inbound_connections_are_judged_by_the_peer_address() {
    let cg = TestCgroup::new("inbound");
    // No policy judges inbound connections (the default): the inbound
    // program is not attached, and status says what stays open.
    let mut agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(EU_ONLY)
        .keep_pins()
        .start();
    let pair = Pair::new();
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    assert_eq!(ingress_programs(&cg), 0, "attached with no policy judging");
    assert!(!agent.bpffs.join("links/gw_ingress").exists());
    let open = agent.status()["status"]["open_paths"].to_string();
    assert!(open.contains("inbound = \\\"judge\\\""), "{open}");
    let (peers, listened) = inbound(&agent, "eu-only", &pair, port);
    assert_eq!(peers, ["ok", "ok"], "not judged by default");
    assert_eq!(
        listened["accepted"].as_array().map(Vec::len),
        Some(2),
        "{listened}"
    );

    // A policy that judges them, by reload: the program is attached.
    agent.rewrite_config(|c| format!("{c}{JUDGE_IN}"));
    reload(&agent);
    assert_eq!(ingress_programs(&cg), 1, "{}", agent.stderr());
    let open = agent.status()["status"]["open_paths"].to_string();
    assert!(
        open.contains("listeners of jobs under eu-only (inbound") && !open.contains("no policy"),
        "{open}"
    );
    let (peers, listened) = inbound(&agent, "eu-judge-in", &pair, port + 1);
    assert_ne!(peers[0], "ok", "the US peer got in: {peers:?}");
    assert_eq!(peers[1], "ok", "the DE peer: {peers:?}");
    assert_eq!(listened["accepted"], serde_json::json!(["198.51.100.2"]));
    let rec = agent.wait_record("the inbound denial", |r| r["hook"] == "ingress");
    assert_eq!(rec["verdict"], "deny");
    assert_eq!(rec["policy"], "eu-judge-in");
    assert_eq!(rec["direction"], "inbound");
    assert_eq!(
        rec["dst"], "203.0.113.2",
        "the peer, as the record's address"
    );
    assert_eq!(rec["tags"], serde_json::json!(["US"]));
    // A policy that does not judge them, while another does: not judged.
    let (peers, listened) = inbound(&agent, "eu-only", &pair, port + 2);
    assert_eq!(peers, ["ok", "ok"]);
    assert_eq!(
        listened["accepted"].as_array().map(Vec::len),
        Some(2),
        "{listened}"
    );

    // Detached by something else while wanted: attached again, and said.
    let link = geowall::kernel::sys::obj_get(&agent.bpffs.join("links/gw_ingress")).unwrap();
    geowall::kernel::sys::link_detach(std::os::fd::AsFd::as_fd(&link)).unwrap();
    drop(link);
    assert_eq!(ingress_programs(&cg), 0);
    let rec = agent.wait_record("the re-attachment", |r| r["event"] == "reattached");
    assert_eq!(rec["programs"], serde_json::json!(["gw_ingress"]));
    assert_eq!(ingress_programs(&cg), 1);
    // A restart adopts the pinned link: still one program.
    assert!(agent.terminate().success());
    assert_eq!(ingress_programs(&cg), 1, "kept while the agent is down");
    agent.restart();
    assert_eq!(ingress_programs(&cg), 1, "{}", agent.stderr());

    // The judging policy removed: the program is detached again.
    agent.rewrite_config(|c| c.replace(JUDGE_IN, ""));
    reload(&agent);
    assert_eq!(ingress_programs(&cg), 0, "{}", agent.stderr());
    assert!(!agent.bpffs.join("links/gw_ingress").exists());
    // And a start without one detaches what an agent before it left.
    agent.rewrite_config(|c| format!("{c}{JUDGE_IN}"));
    reload(&agent);
    assert_eq!(ingress_programs(&cg), 1);
    assert!(agent.terminate().success());
    agent.rewrite_config(|c| c.replace(JUDGE_IN, ""));
    agent.restart();
    assert_eq!(ingress_programs(&cg), 0, "{}", agent.stderr());
    assert!(!agent.bpffs.join("links/gw_ingress").exists());
}

/// The families a `geowall exec` job may create sockets of: UNIX, IPv4,
/// IPv6, netlink, packet (which needs CAP_NET_RAW, dropped unless the
/// policy allows raw sockets or audits) and AF_ALG.
const JOB_FAMILIES: [i64; 6] = [1, 2, 10, 16, 17, 38];

#[test]
fn families_no_program_judges_and_io_uring_are_refused_to_exec_jobs() {
    let cg = TestCgroup::new("families");
    let agent = agent(
        &cg,
        "\n[[policy]]\nname = \"eu-audit\"\nmode = \"audit\"\nallow = [\"EU\"]\n",
    );
    // Outside any job (this test process's own, ungoverned): what the
    // kernel lets root create here (vsock on a VM with a vsock device).
    let out = geowall_tests::run_probe(None, &["--netns", "familywalk", "iouring"]);
    let outside: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let created = |v: &Value| -> BTreeSet<i64> {
        v["created"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_i64().unwrap())
            .collect()
    };
    let beyond: BTreeSet<i64> = created(&outside[0])
        .into_iter()
        .filter(|f| !JOB_FAMILIES.contains(f))
        .collect();
    eprintln!(
        "families root creates outside a job, beyond the job's: {beyond:?}; io_uring outside: {}",
        outside[1]["result"]
    );
    for who in [As::Root, As::Nobody] {
        let v = probe_as(&agent, "eu-only", who, &["familywalk", "iouring"]);
        let inside = created(&v[0]);
        assert!(
            inside.iter().all(|f| JOB_FAMILIES.contains(f)),
            "{who:?} created {inside:?}"
        );
        // Refused by the filter whether or not this kernel has them:
        // vsock, TIPC, RDS, SMC, Bluetooth, CAN, XDP, and every family
        // root could create outside.
        for fam in beyond.iter().copied().chain([40, 30, 21, 43, 31, 29, 44]) {
            assert_eq!(
                v[0]["failed"][fam.to_string()],
                "EPERM",
                "{who:?}, family {fam}: {}",
                v[0]
            );
        }
        assert!(inside.contains(&1) && inside.contains(&2) && inside.contains(&10));
        assert_eq!(v[1]["result"], "io_uring_setup:EPERM", "{who:?}");
        // The other ways to a socket: socketpair, and the i386 calls any
        // process can make with int 0x80 (socketcall's arguments are in
        // memory: refused whatever the family).
        let mut ops = vec!["socketpair:1", "socketpair:40", "socketpair:30"];
        let mut want = vec!["ok", "EPERM", "EPERM"];
        if cfg!(target_arch = "x86_64") {
            ops.extend(["int80socket:1", "int80socket:40", "int80socketcall:1"]);
            want.extend(["ok", "EPERM", "EPERM"]);
        }
        let v = probe_as(&agent, "eu-only", who, &ops);
        let got: Vec<&str> = v.iter().map(|r| r["result"].as_str().unwrap()).collect();
        assert_eq!(got, want, "{who:?}: {ops:?}");
    }
    // `geowall exec` itself run by an unprivileged user: the filter goes
    // in after no_new_privs.
    let probe = netprobe().display().to_string();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(geowall_tests::geowall())
        .args(["exec", "--config"])
        .arg(&agent.config)
        .args(["--policy", "eu-only", "--", &probe, "socketpair:40"])
        .args(cfg!(target_arch = "x86_64").then_some("int80socket:40"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "exec as nobody: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["result"].to_string())
        .collect();
    assert!(
        !got.is_empty() && got.iter().all(|r| r == "\"EPERM\""),
        "{got:?}"
    );
    // Audit mode blocks nothing: the filter lets these through (the
    // kernel's audit log notes them).
    let v = probe_as(&agent, "eu-audit", As::Root, &["familywalk", "iouring"]);
    let inside = created(&v[0]);
    for fam in &beyond {
        assert!(
            inside.contains(fam),
            "audit mode refused family {fam}: {}",
            v[0]
        );
    }
    assert_eq!(v[1]["result"], outside[1]["result"]);
}

#[test]
fn descriptors_from_outside_the_job_are_closed_or_cannot_be_taken() {
    use std::io::BufRead;
    let cg = TestCgroup::new("fds");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(&format!(
            "{EU_ONLY}\n[[policy]]\nname = \"confined\"\nallow = [\"EU\"]\ncgroups = [\"/confined\"]\n"
        ))
        .child_cgroups(&["confined"])
        .start();
    let us = Listener::on("127.20.0.1");
    let target = us.target();
    // A socket made here (outside the governed subtree), given to the job
    // as descriptor 5.
    let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    let spawn = |keep: bool| {
        let mut cmd = geowall_tests::geowall_cmd("exec", &agent.config);
        cmd.args(["--policy", "eu-only"]);
        if keep {
            cmd.arg("--keep-fds");
        }
        cmd.arg("--")
            .arg(netprobe())
            .arg(format!("usefd:5:{target}"));
        // SAFETY: dup2 between fork and exec, on descriptors we own.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto itself would leave close-on-exec set.
                let ok = if raw == 5 {
                    libc::fcntl(5, libc::F_SETFD, 0) == 0
                } else {
                    libc::dup2(raw, 5) == 5
                };
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.output().unwrap()
    };
    assert_eq!(outcomes(&spawn(false)), ["fd:EBADF"], "closed by default");
    // Kept on request: the socket is the caller's, judged (here: not at
    // all) under its maker's cgroup. The README says so.
    let kept = outcomes(&spawn(true));
    assert_ne!(kept, ["fd:EBADF"], "--keep-fds keeps it");

    // A socket held by a process outside the governed subtree, taken with
    // pidfd_getfd: refused to every `geowall exec` job (a seccomp filter).
    let mut holder = Command::new(netprobe())
        .arg("holdsock:4:10000")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let held: Value = serde_json::from_str(&first).unwrap();
    let steal = format!("pidfdgetfd:{}:{}:{target}", held["pid"], held["fd"]);
    for who in [As::Root, As::Nobody] {
        let out = probe_as(&agent, "eu-only", who, &[&steal]);
        assert_eq!(results(&out), ["pidfd_getfd:EPERM"], "{who:?}");
    }
    // A cgroup bound by the config runs what its owner starts there, with
    // no geowall exec in between: there a root process can take the socket
    // (without BPF LSM, this stays open; the README says so, and status).
    let confined = cg.path().join("confined");
    let out = Command::new(netprobe())
        .arg("--cgroup")
        .arg(&confined)
        .arg(&steal)
        .output()
        .unwrap();
    assert_eq!(outcomes(&out), ["ok"], "as the README states");
    let status = agent.status();
    let open = status["status"]["open_paths"].to_string();
    assert!(
        open.contains("pidfd_getfd"),
        "status says what stays open: {open}"
    );
    // SAFETY: kill(2) of the holder we started.
    unsafe { libc::kill(holder.id() as i32, libc::SIGTERM) };
    let _ = holder.wait();
}

#[test]
fn a_packet_socket_in_a_user_namespace_of_the_job_reaches_only_its_own_lo() {
    let cg = TestCgroup::new("userns");
    let agent = agent(&cg, "");
    let probe = netprobe().display().to_string();
    for who in [As::Root, As::Nobody] {
        let mut cmd: Vec<&str> = Vec::new();
        if let As::Nobody = who {
            cmd.extend([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ]);
        }
        cmd.extend([
            "unshare",
            "-Urn",
            "sh",
            "-c",
            "ip link set lo up; exec \"$0\" packetsend",
            &probe,
        ]);
        let out = agent.exec("eu-only", &cmd);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{who:?}: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        // It regains CAP_NET_RAW in its namespace and opens the socket;
        // the namespace has lo and nothing else.
        assert_eq!(v["result"], "ok", "{who:?}: {v}");
        assert_eq!(v["sent_on"], serde_json::json!(["lo"]), "{who:?}: {v}");
    }
}

#[test]
fn options_geowall_does_not_judge_keep_their_values() {
    // The setsockopt program hands every option it does not judge back to
    // the kernel as the caller wrote it (`optlen = 0`): each must still
    // take effect, for root and for an unprivileged job.
    let cg = TestCgroup::new("sockopts");
    let agent = agent(&cg, "");
    let script = "import socket\n\
        s = socket.socket()\n\
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)\n\
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n\
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, bytes([1, 0, 0, 0, 5, 0, 0, 0]))\n\
        u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
        u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 7)\n\
        print(s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),\n\
              s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),\n\
              s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8).hex(),\n\
              u.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS))\n";
    for nobody in [false, true] {
        let mut cmd: Vec<&str> = Vec::new();
        if nobody {
            cmd.extend([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ]);
        }
        cmd.extend(["/usr/bin/python3", "-c", script]);
        let out = agent.exec("eu-only", &cmd);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // SO_RCVBUF reads back doubled (the kernel's bookkeeping).
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "131072 1 0100000005000000 7",
            "as nobody: {nobody}"
        );
    }
}
