//! A fleet through a real etcd: a three-member cluster on loopback ports
//! with authentication on, and two agents on this machine as two hosts
//! (two governed subtrees, two node names, two audit logs). Policies put
//! once reach both hosts; a broken one is refused by `put` and, written
//! straight into etcd, by both hosts with the old one kept; an approval
//! with `--fleet` opens the destination on the requesting host only, as the
//! etcd user who wrote it; hosts keep enforcing with etcd gone, and a host
//! restarted meanwhile starts with the fleet policies it last applied.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use geowall_tests::{
    Agent, AgentSpec, Listener, TempDir, TestCgroup, UsDe, etcd::EtcdCluster, geowall, outcomes,
    run_probe,
};
use serde_json::Value;

const MAP: &str = "127.20.0.0/16 US\n127.30.0.0/16 DE\n";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `geowall ARGS… --config CONFIG`.
fn gw(config: &Path, args: &[&str]) -> Output {
    Command::new(geowall())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run geowall")
}

#[track_caller]
fn gw_ok(config: &Path, args: &[&str]) -> String {
    let out = gw(config, args);
    assert!(
        out.status.success(),
        "geowall {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// The cluster with the fleet's roles and users: hosts `host-a` and
/// `host-b`, approver `alice`, and `bob`, who is only a node.
struct Fleet {
    cluster: EtcdCluster,
    root: PathBuf,
    alice: PathBuf,
    bob: PathBuf,
}

impl Fleet {
    fn new() -> Fleet {
        let cluster = EtcdCluster::start();
        let root = cluster.client_config("root");
        gw_ok(&root, &["fleet", "init"]);
        for (user, role) in [
            ("host-a", "node"),
            ("host-b", "node"),
            ("alice", "approver"),
            ("bob", "node"),
        ] {
            let pw = cluster.password_file(user);
            gw_ok(
                &root,
                &[
                    "fleet",
                    "user",
                    "add",
                    user,
                    "--role",
                    role,
                    "--password-file",
                    pw.to_str().expect("utf-8"),
                ],
            );
        }
        let alice = cluster.client_config("alice");
        let bob = cluster.client_config("bob");
        Fleet {
            cluster,
            root,
            alice,
            bob,
        }
    }

    /// `[fleet]` for host `node`, keeping its state in `state`.
    fn section(&self, node: &str, state: &Path) -> String {
        format!(
            "[fleet]\netcd = {}\nuser = \"{node}\"\npassword_file = \"{}\"\nnode = \"{node}\"\nstate_dir = \"{}\"\nlease = \"3s\"\n",
            self.cluster.endpoints_toml(),
            self.cluster.password_file(node).display(),
            state.display()
        )
    }
}

/// `status.fleet` of an agent.
fn fleet_link(agent: &Agent) -> Value {
    agent.status()["status"]["fleet"].clone()
}

/// Waits up to `timeout` for `pred` on the agent's fleet link.
#[track_caller]
fn wait_link(agent: &Agent, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let link = fleet_link(agent);
        if pred(&link) {
            return link;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not after {timeout:?}; fleet link: {link}\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn has_policy(link: &Value, entry: &str) -> bool {
    link["policies"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p.as_str() == Some(entry)))
}

fn fleet_policy_names(link: &Value, name: &str) -> bool {
    link["policies"].as_array().is_some_and(|ps| {
        ps.iter().any(|p| {
            p.as_str()
                .is_some_and(|p| p.starts_with(&format!("{name}@")))
        })
    })
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn fleet_policies_reach_both_hosts_broken_ones_are_refused_and_outlive_etcd() {
    let mut fleet = Fleet::new();
    let tmp = TempDir::new("fleet-policies");
    let (cg_a, cg_b) = (TestCgroup::new("host-a"), TestCgroup::new("host-b"));
    let (state_a, state_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut a = AgentSpec::new(&cg_a)
        .cidr_map("test.cidr", MAP)
        .keep_pins()
        .config(&format!(
            "[approvals]\nstate_dir = \"{}\"\n\n[[policy]]\nname = \"local\"\nallow = [\"US\"]\n\n{}",
            state_a.join("approvals").display(),
            fleet.section("host-a", &state_a)
        ))
        .start();
    let b = AgentSpec::new(&cg_b)
        .cidr_map("test.cidr", MAP)
        .config(&format!(
            "[approvals]\nstate_dir = \"{}\"\n\n{}",
            state_b.join("approvals").display(),
            fleet.section("host-b", &state_b)
        ))
        .start();
    for h in [&a, &b] {
        wait_link(h, "connected", Duration::from_secs(15), |l| {
            l["connected"] == true
        });
    }

    // Put once: both hosts enforce it, and how long that took.
    // (`put` checks the file first, against the built-in map here: the
    // clock starts once it has written it.)
    let eu = write(tmp.path(), "eu.toml", "allow = [\"DE\"]\n");
    let checking = Instant::now();
    gw_ok(
        &fleet.root,
        &["fleet", "policy", "put", eu.to_str().unwrap()],
    );
    let put_at = Instant::now();
    let mut pending = vec![("A", &a), ("B", &b)];
    let mut reached = Vec::new();
    while !pending.is_empty() {
        pending.retain(|(name, h)| {
            let done = fleet_policy_names(&fleet_link(h), "eu");
            if done {
                reached.push(format!("host {name} after {:?}", put_at.elapsed()));
            }
            !done
        });
        assert!(
            put_at.elapsed() < Duration::from_secs(10),
            "not everywhere: {reached:?}"
        );
    }
    println!(
        "propagation: `fleet policy put` took {:?} (check + write); in force on {}",
        put_at - checking,
        reached.join(", ")
    );
    let dests = UsDe::new();
    dests.assert_eu(&a, "eu");
    dests.assert_eu(&b, "eu");
    let applied = a.wait_record("fleet policy_applied", |r| {
        r["kind"] == "fleet" && r["event"] == "policy_applied" && r["key"] == "/geowall/policies/eu"
    });
    assert!(applied["revision"].as_i64().unwrap() > 0, "{applied}");

    // A broken policy is refused by put: nothing is written.
    let broken = write(
        tmp.path(),
        "eu2.toml",
        "name = \"eu\"\nallow = [\"Narnia\"]\n",
    );
    let out = gw(
        &fleet.root,
        &["fleet", "policy", "put", broken.to_str().unwrap()],
    );
    assert!(
        !out.status.success(),
        "a broken policy was put: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("nothing was written") && stderr(&out).contains("Narnia"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        gw_ok(&fleet.root, &["fleet", "policy", "get", "eu"]),
        "allow = [\"DE\"]\n"
    );

    // Written straight into etcd, both hosts refuse it and keep the old one.
    fleet
        .cluster
        .root_ctl(&["put", "/geowall/policies/eu", "allow = [\"Narnia\"]"]);
    for h in [&a, &b] {
        let link = wait_link(h, "the raw policy refused", Duration::from_secs(10), |l| {
            l["refused"].as_array().is_some_and(|r| {
                r.iter().any(|e| {
                    e.as_str()
                        .is_some_and(|e| e.starts_with("/geowall/policies/eu (revision "))
                })
            })
        });
        let refused = link["refused"][0].as_str().unwrap().to_owned();
        assert!(refused.contains("Narnia"), "{refused}");
        let rec = h.wait_record("fleet policy_refused", |r| {
            r["kind"] == "fleet" && r["event"] == "policy_refused"
        });
        assert_eq!(rec["key"], "/geowall/policies/eu", "{rec}");
        assert!(rec["error"].as_str().unwrap().contains("Narnia"), "{rec}");
        dests.assert_eu(h, "eu");
    }
    // fleet status: both alive, and both flagged: their eu is not the fleet's.
    let st: Value =
        serde_json::from_str(&gw_ok(&fleet.alice, &["fleet", "status", "--json"])).expect("json");
    let nodes = st["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2, "{st}");
    for n in nodes {
        assert_eq!(n["alive"], true, "{n}");
        assert!(
            n["flags"].to_string().contains("fleet policy 'eu' differs"),
            "{n}"
        );
    }
    let text = gw_ok(&fleet.alice, &["fleet", "status"]);
    println!("--- geowall fleet status (alice) ---\n{text}");
    let history = gw_ok(&fleet.root, &["fleet", "policy", "history", "eu"]);
    assert_eq!(history.lines().count(), 2, "{history}");

    // A name in both a file and the fleet: refused on A, naming both
    // places; B, which has no such file policy, applies it.
    let local = write(tmp.path(), "local.toml", "allow = [\"DE\"]\n");
    gw_ok(
        &fleet.root,
        &["fleet", "policy", "put", local.to_str().unwrap()],
    );
    wait_link(&b, "local applied on B", Duration::from_secs(10), |l| {
        fleet_policy_names(l, "local")
    });
    let link = wait_link(&a, "local refused on A", Duration::from_secs(10), |l| {
        l["refused"].to_string().contains("/geowall/policies/local")
    });
    let why = link["refused"].to_string();
    assert!(
        why.contains("defined twice") && why.contains("etcd /geowall/policies/local@"),
        "{why}"
    );
    assert!(why.contains(&a.config.display().to_string()), "{why}");
    // Removed from the fleet: B lets it go, A's refusal goes with it.
    gw_ok(&fleet.root, &["fleet", "policy", "rm", "local"]);
    wait_link(&b, "local removed on B", Duration::from_secs(10), |l| {
        !fleet_policy_names(l, "local")
    });
    b.wait_record("policy_removed", |r| {
        r["kind"] == "fleet"
            && r["event"] == "policy_removed"
            && r["key"] == "/geowall/policies/local"
    });
    wait_link(
        &a,
        "the refusal of local cleared",
        Duration::from_secs(10),
        |l| !l["refused"].to_string().contains("/geowall/policies/local"),
    );

    // etcd gone: the hosts keep enforcing, and say so.
    fleet.cluster.stop_all();
    for h in [&a, &b] {
        let link = wait_link(h, "unreachable", Duration::from_secs(20), |l| {
            l["connected"] == false && !l["unreachable"].is_null()
        });
        assert!(
            has_policy(&link, &format!("eu@{}", applied["revision"])),
            "{link}"
        );
        dests.assert_eu(h, "eu");
        h.wait_record("fleet unreachable", |r| {
            r["kind"] == "fleet" && r["event"] == "unreachable"
        });
    }
    let out = gw(&fleet.alice, &["fleet", "status"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("etcd is unreachable"),
        "{}",
        stderr(&out)
    );

    // A restarted while etcd is down: it starts with the fleet policy it
    // last applied.
    assert!(a.terminate().success());
    a.restart();
    let link = fleet_link(&a);
    assert_eq!(link["connected"], false, "{link}");
    assert!(fleet_policy_names(&link, "eu"), "{link}");
    dests.assert_eu(&a, "eu");

    // etcd back: both report again, and the raw policy is still refused.
    fleet.cluster.start_all();
    for h in [&a, &b] {
        wait_link(h, "connected again", Duration::from_secs(30), |l| {
            l["connected"] == true
        });
    }
    let st: Value =
        serde_json::from_str(&gw_ok(&fleet.alice, &["fleet", "status", "--json"])).expect("json");
    assert!(
        st["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().all(|n| n["alive"] == true)),
        "{st}"
    );
    dests.assert_eu(&a, "eu");
}

#[test]
fn an_approval_through_the_fleet_opens_the_requesting_host_only() {
    let mut fleet = Fleet::new();
    let tmp = TempDir::new("fleet-approvals");
    let (cg_a, cg_b) = (TestCgroup::new("host-a"), TestCgroup::new("host-b"));
    let policy = |state: &Path| {
        format!(
            "[approvals]\nstate_dir = \"{}\"\n\n[[policy]]\nname = \"work\"\nallow = [\"EU\"]\ncgroups = [\"/work\"]\napprovable = true\nmax_grant = \"1h\"\n\n",
            state.display()
        )
    };
    let mut a = AgentSpec::new(&cg_a)
        .cidr_map("test.cidr", MAP)
        .child_cgroups(&["work"])
        .config(&format!(
            "{}{}",
            policy(&tmp.path().join("a-approvals")),
            fleet.section("host-a", &tmp.path().join("a"))
        ))
        .start();
    let b = AgentSpec::new(&cg_b)
        .cidr_map("test.cidr", MAP)
        .child_cgroups(&["work"])
        .config(&format!(
            "{}{}",
            policy(&tmp.path().join("b-approvals")),
            fleet.section("host-b", &tmp.path().join("b"))
        ))
        .start();
    for h in [&a, &b] {
        wait_link(h, "connected", Duration::from_secs(15), |l| {
            l["connected"] == true
        });
    }
    let us = Listener::on("127.20.0.1");
    let target = format!("tcp:{}", us.target());
    let (work_a, work_b) = (cg_a.path().join("work"), cg_b.path().join("work"));

    // A denial on A opens a request that the fleet sees.
    assert_eq!(outcomes(&run_probe(Some(&work_a), &[&target])), ["EPERM"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let out: Value = serde_json::from_str(&gw_ok(
            &fleet.alice,
            &["approvals", "list", "--fleet", "--pending", "--json"],
        ))
        .expect("json");
        if let Some(r) = out.as_array().and_then(|a| a.first()).cloned() {
            break r;
        }
        assert!(Instant::now() < deadline, "no request in the fleet");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(listed["node"], "host-a", "{listed}");
    assert_eq!(listed["to"], format!("{}/32", us.addr.ip()), "{listed}");
    let id = listed["fleet_id"].as_str().expect("fleet id").to_owned();
    println!(
        "--- geowall approvals list --fleet (alice) ---\n{}",
        gw_ok(&fleet.alice, &["approvals", "list", "--fleet"])
    );

    // bob is no approver: etcd refuses, and nothing changes.
    let out = gw(
        &fleet.bob,
        &["approvals", "approve", &id, "--fleet", "--for", "5s"],
    );
    assert!(!out.status.success(), "bob approved: {}", stdout(&out));
    assert!(
        stderr(&out).contains("etcd refused") && stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );
    assert_eq!(outcomes(&run_probe(Some(&work_a), &[&target])), ["EPERM"]);

    // alice approves for 5 s: A opens, B does not.
    let started = Instant::now();
    let out = gw_ok(
        &fleet.alice,
        &[
            "approvals",
            "approve",
            &id,
            "--fleet",
            "--for",
            "5s",
            "--reason",
            "vendor call",
        ],
    );
    let confirmed = started.elapsed();
    assert!(out.contains("applied on host-a"), "{out}");
    assert_eq!(outcomes(&run_probe(Some(&work_a), &[&target])), ["ok"]);
    let to_kernel = started.elapsed();
    assert_eq!(outcomes(&run_probe(Some(&work_b), &[&target])), ["EPERM"]);
    println!(
        "approval: `approve --fleet` confirmed by host A after {confirmed:?}; first connect through after {to_kernel:?}\n{out}"
    );
    let rec = a.wait_record("the approval by alice", |r| {
        r["kind"] == "approval" && r["event"] == "approved"
    });
    assert_eq!(rec["by"]["etcd_user"], "alice", "{rec}");
    assert!(
        rec["fleet"]["key"]
            .as_str()
            .unwrap()
            .starts_with("/geowall/grants/alice/host-a/"),
        "{rec}"
    );
    assert!(
        !b.records()
            .iter()
            .any(|r| r["kind"] == "approval" && r["event"] == "approved"),
        "B recorded an approval"
    );

    // The grant ends on time, with etcd stopped in between; a connect
    // loop on B shows no change meanwhile.
    fleet.cluster.stop_all();
    let loop_b = geowall_tests::connect_loop(&work_b, &us.target(), 1500);
    let out = gw(&fleet.alice, &["approvals", "approve", &id, "--fleet"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("etcd is unreachable"),
        "{}",
        stderr(&out)
    );
    let counts = loop_b.join().expect("loop");
    assert_eq!(counts.keys().collect::<Vec<_>>(), ["EPERM"], "{counts:?}");
    while started.elapsed() < Duration::from_millis(5600) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        outcomes(&run_probe(Some(&work_a), &[&target])),
        ["EPERM"],
        "the grant outlived its 5 s ({:?} after the approval): {}",
        started.elapsed(),
        stdout(&a.cli(&["approvals", "list", "--json"]))
    );

    // A request opened while etcd is away appears once it is back.
    let de = Listener::on("127.20.0.2");
    assert_eq!(
        outcomes(&run_probe(Some(&work_a), &[format!("tcp:{}", de.target())])),
        ["EPERM"]
    );
    wait_link(&a, "unpublished request", Duration::from_secs(10), |l| {
        l["unpublished"].as_u64().unwrap_or(0) >= 1
    });
    fleet.cluster.start_all();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = gw(&fleet.alice, &["approvals", "list", "--fleet", "--json"]);
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).expect("json");
            if v.as_array().is_some_and(|l| {
                l.iter()
                    .any(|r| r["to"] == format!("{}/32", de.addr.ip()) && r["state"] == "pending")
            }) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the request made while etcd was away never appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = gw_ok(
        &fleet.alice,
        &[
            "approvals",
            "deny",
            "host-a/2",
            "--fleet",
            "--reason",
            "not this one",
        ],
    );
    assert!(out.contains("denied: host-a/2 by etcd user alice"), "{out}");
    let mine: Value = a.cli_json(&["approvals", "list", "--json"]);
    let two = mine
        .as_array()
        .and_then(|l| l.iter().find(|r| r["id"] == 2))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(two["state"], "denied", "{mine}");
    assert_eq!(two["decided_by"], "etcd:alice", "{two}");

    // A grant that ends before its host reads it is never applied.
    let third = Listener::on("127.20.0.3");
    let third_target = format!("tcp:{}", third.target());
    assert_eq!(
        outcomes(&run_probe(Some(&work_a), &[&third_target])),
        ["EPERM"]
    );
    wait_link(&a, "request 3 published", Duration::from_secs(10), |l| {
        l["unpublished"] == 0
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(a.terminate().success());
    let out = gw_ok(
        &fleet.alice,
        &["approvals", "approve", "host-a/3", "--fleet", "--for", "2s"],
    );
    assert!(out.contains("has not confirmed"), "{out}");
    a.restart();
    wait_link(
        &a,
        "connected after the restart",
        Duration::from_secs(30),
        |l| l["connected"] == true,
    );
    let mine: Value = a.cli_json(&["approvals", "list", "--json"]);
    assert!(
        mine.as_array()
            .is_some_and(|l| l.iter().any(|r| r["id"] == 3 && r["state"] == "pending")),
        "{mine}"
    );
    assert_eq!(
        outcomes(&run_probe(Some(&work_a), &[&third_target])),
        ["EPERM"]
    );
}

#[test]
fn one_member_down_changes_nothing() {
    let mut fleet = Fleet::new();
    let tmp = TempDir::new("fleet-member");
    let cg = TestCgroup::new("host-a");
    let a = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(&format!(
            "[approvals]\nstate_dir = \"{}\"\n\n{}",
            tmp.path().join("approvals").display(),
            fleet.section("host-a", &tmp.path().join("a"))
        ))
        .start();
    wait_link(&a, "connected", Duration::from_secs(15), |l| {
        l["connected"] == true
    });
    fleet.cluster.kill_member(0);
    let eu = write(tmp.path(), "eu.toml", "allow = [\"DE\"]\n");
    gw_ok(
        &fleet.root,
        &["fleet", "policy", "put", eu.to_str().unwrap()],
    );
    wait_link(&a, "eu applied", Duration::from_secs(20), |l| {
        fleet_policy_names(l, "eu")
    });
    UsDe::new().assert_eu(&a, "eu");
    let st = gw_ok(&fleet.alice, &["fleet", "status", "--json"]);
    assert!(st.contains("\"alive\":true"), "{st}");

    // A value that does not parse is refused with its key and revision;
    // nothing else stops.
    fleet
        .cluster
        .root_ctl(&["put", "/geowall/grants/alice/host-a/9", "not json"]);
    let link = wait_link(
        &a,
        "the bad decision refused",
        Duration::from_secs(10),
        |l| {
            l["refused"]
                .to_string()
                .contains("/geowall/grants/alice/host-a/9 (revision ")
        },
    );
    assert_eq!(link["connected"], true, "{link}");
    a.wait_record("value_refused", |r| {
        r["kind"] == "fleet"
            && r["event"] == "value_refused"
            && r["key"] == "/geowall/grants/alice/host-a/9"
            && r["revision"].as_i64().is_some()
    });

    // A host that stops renewing its lease is flagged, not forgotten.
    let mut a = a;
    assert!(a.terminate().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st: Value = serde_json::from_str(&gw_ok(&fleet.alice, &["fleet", "status", "--json"]))
            .expect("json");
        let node = &st["nodes"][0];
        if node["alive"] == false {
            assert!(node["flags"].to_string().contains("lease lapsed"), "{st}");
            break;
        }
        assert!(Instant::now() < deadline, "the lease never lapsed: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn hosts_and_approvers_authenticate_by_client_certificate() {
    let cluster = EtcdCluster::start_tls();
    let tmp = TempDir::new("fleet-tls");
    let section = |user: &str, node: bool| {
        let (cert, key) = cluster.tls().client(user);
        format!(
            "[fleet]\netcd = {}\nuser = \"{user}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n{}state_dir = \"{}\"\nlease = \"3s\"\n",
            cluster.endpoints_toml(),
            cluster.tls().ca.display(),
            cert.display(),
            key.display(),
            if node {
                format!("node = \"{user}\"\n")
            } else {
                String::new()
            },
            tmp.path().join(user).display()
        )
    };
    let config = |user: &str| {
        let p = tmp.path().join(format!("{user}.toml"));
        std::fs::write(&p, section(user, false)).expect("write config");
        p
    };
    let root = config("root");
    gw_ok(&root, &["fleet", "init"]);
    gw_ok(&root, &["fleet", "user", "add", "host-a", "--role", "node"]);
    gw_ok(
        &root,
        &["fleet", "user", "add", "alice", "--role", "approver"],
    );
    let alice = config("alice");

    let cg = TestCgroup::new("host-a");
    let a = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .child_cgroups(&["work"])
        .config(&format!(
            "[approvals]\nstate_dir = \"{}\"\n\n[[policy]]\nname = \"work\"\nallow = [\"EU\"]\ncgroups = [\"/work\"]\napprovable = true\n\n{}",
            tmp.path().join("approvals").display(),
            section("host-a", true)
        ))
        .start();
    wait_link(&a, "connected over TLS", Duration::from_secs(15), |l| {
        l["connected"] == true
    });
    let us = Listener::on("127.20.0.1");
    let target = format!("tcp:{}", us.target());
    let work = cg.path().join("work");
    assert_eq!(outcomes(&run_probe(Some(&work), &[&target])), ["EPERM"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw_ok(&alice, &["approvals", "list", "--fleet", "--pending"]).contains("host-a/1") {
        assert!(Instant::now() < deadline, "no request over TLS");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = gw_ok(
        &alice,
        &["approvals", "approve", "host-a/1", "--fleet", "--for", "1m"],
    );
    assert!(out.contains("applied on host-a"), "{out}");
    assert_eq!(outcomes(&run_probe(Some(&work), &[&target])), ["ok"]);
    let rec = a.wait_record("the approval by alice's certificate", |r| {
        r["kind"] == "approval" && r["event"] == "approved"
    });
    assert_eq!(rec["by"]["etcd_user"], "alice", "{rec}");
    let st = gw_ok(&alice, &["fleet", "status", "--json"]);
    assert!(st.contains("\"alive\":true"), "{st}");

    // Revoked through the fleet: closed again at once.
    let out = gw_ok(&alice, &["approvals", "revoke", "host-a/1", "--fleet"]);
    assert!(
        out.contains("revoked: host-a/1 by etcd user alice"),
        "{out}"
    );
    assert_eq!(outcomes(&run_probe(Some(&work), &[&target])), ["EPERM"]);
}
