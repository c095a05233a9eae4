//! The verdict path against the real kernel: real programs attached to a
//! cgroup of the test's own, real sockets, real answers (EPERM or not).
//!
//! Destinations are loopback addresses that a test map tags with countries,
//! or real public addresses probed from inside a fresh network namespace
//! with only `lo`: allowed → ENETUNREACH, denied → EPERM, nothing leaves.

use std::time::Duration;

use geowall_tests::{
    AgentSpec, Listener, TempDir, TestCgroup, UsDe, connect_loop, loop_counts, outcomes, run_probe,
};
use serde_json::Value;

const MAP: &str = "\
# test networks on loopback
127.20.0.0/16 US
127.30.0.0/16 DE
127.31.0.0/16 FR
::1/128 DE
# real public networks, only ever probed from a namespace with no route out
8.8.8.0/24 US
193.99.144.0/24 DE
2001:4860::/32 US
2a02:2e0::/32 DE
";

const EU_ONLY: &str = r#"
[[policy]]
name = "eu-only"
allow = ["EU"]
"#;

/// `eu-only`, bound statically to the sub-cgroup `confined`.
const CONFINED_EU: &str = r#"
[[policy]]
name = "eu-only"
allow = ["EU"]
cgroups = ["/confined"]
"#;

fn eu_agent(cg: &TestCgroup) -> geowall_tests::Agent {
    AgentSpec::new(cg)
        .cidr_map("test.cidr", MAP)
        .config(EU_ONLY)
        .start()
}

fn find(records: &[Value], pred: impl Fn(&Value) -> bool) -> Option<&Value> {
    records.iter().find(|r| pred(r))
}

#[test]
fn tcp_ipv4_is_refused_outside_the_policy_and_allowed_inside() {
    let cg = TestCgroup::new("tcp4");
    let agent = eu_agent(&cg);
    let t = UsDe::new();
    // US, DE, US again: the second denial bounds the absence check below.
    let mut ops = t.ops("tcp");
    ops.push(ops[0].clone());
    let out = agent.exec_probe("eu-only", &ops);
    assert_eq!(outcomes(&out), ["EPERM", "ok", "EPERM"]);

    let rec = agent.wait_record("for the denied connect", |r| r["verdict"] == "deny");
    assert_eq!(rec["dst"], "127.20.0.1");
    assert_eq!(rec["dport"], t.us.addr.port());
    assert_eq!(rec["policy"], "eu-only");
    assert_eq!(rec["reason"], "region");
    assert_eq!(rec["tags"], serde_json::json!(["US"]));
    assert_eq!(rec["prefix"], "127.20.0.0/16");
    assert_eq!(rec["proto"], "tcp");
    assert_eq!(rec["family"], "ipv4");
    assert_eq!(rec["comm"], "netprobe");
    assert!(
        rec["job"]
            .as_str()
            .is_some_and(|j| j.starts_with("eu-only"))
    );
    assert!(rec["cgroup"].as_str().unwrap().starts_with(cg.rel()));
    // Allowed flows are not recorded unless the policy asks. Events come
    // in ring order: once the second denial is in, a record of the allowed
    // connect made before it would be too.
    agent.wait_records("for both denials", 2, |r| r["verdict"] == "deny");
    assert!(find(&agent.records(), |r| r["verdict"] == "allow").is_none());
}

#[test]
fn tcp_ipv6_is_judged_by_ipv6_prefixes() {
    let cg = TestCgroup::new("tcp6");
    let agent = eu_agent(&cg);
    let de = Listener::on("::1");
    let out = agent.exec_probe("eu-only", &[&format!("tcp:{}", de.target())]);
    assert_eq!(outcomes(&out), ["ok"]);
    let out = agent.exec_probe(
        "eu-only",
        &["--netns", "tcp:[2001:4860::1]:443", "tcp:[2a02:2e0::1]:443"],
    );
    assert_eq!(outcomes(&out), ["EPERM", "ENETUNREACH"]);
    let rec = agent.wait_record("for the denied IPv6 connect", |r| r["verdict"] == "deny");
    assert_eq!(rec["dst"], "2001:4860::1");
    assert_eq!(rec["prefix"], "2001:4860::/32");
    assert_eq!(rec["family"], "ipv6");
    assert_eq!(rec["hook"], "connect6");
}

#[test]
fn udp_sendto_is_judged_per_datagram_over_ipv4_and_ipv6() {
    let cg = TestCgroup::new("udp");
    let agent = eu_agent(&cg);
    let out = agent.exec_probe("eu-only", &["udp:127.20.0.1:9053", "udp:127.30.0.1:9053"]);
    assert_eq!(outcomes(&out), ["EPERM", "ok"]);
    // One socket, datagrams to both, in both orders: each is judged on its
    // own, whatever the socket sent before.
    let out = agent.exec_probe(
        "eu-only",
        &[
            "udpmulti:127.20.0.1:9053,127.30.0.1:9053",
            "udpmulti:127.30.0.1:9053,127.20.0.1:9053",
        ],
    );
    assert_eq!(outcomes(&out), ["EPERM", "ok", "ok", "EPERM"]);
    let out = agent.exec_probe(
        "eu-only",
        &[
            "--netns",
            "udp:[2001:4860::8888]:9053",
            "udp:[2a02:2e0::3]:9053",
            "udpmulti:[2001:4860::8888]:9053,[2a02:2e0::3]:9053",
            "udpmulti:[2a02:2e0::3]:9053,[2001:4860::8888]:9053",
        ],
    );
    assert_eq!(
        outcomes(&out),
        [
            "EPERM",
            "ENETUNREACH",
            "EPERM",
            "ENETUNREACH",
            "ENETUNREACH",
            "EPERM"
        ]
    );
    let rec = agent.wait_record("for the denied datagram", |r| {
        r["verdict"] == "deny" && r["hook"] == "sendmsg4"
    });
    assert_eq!(rec["dst"], "127.20.0.1");
    assert_eq!(rec["proto"], "udp");
    assert_eq!(rec["dport"], 9053);
    let rec = agent.wait_record("for the denied IPv6 datagram", |r| {
        r["verdict"] == "deny" && r["hook"] == "sendmsg6"
    });
    assert_eq!(rec["dst"], "2001:4860::8888");
    assert_eq!(rec["prefix"], "2001:4860::/32");
    assert_eq!(rec["family"], "ipv6");
    assert_eq!(rec["proto"], "udp");
    assert_eq!(rec["dport"], 9053);
    // Three US datagrams over each family, each refused on its own.
    let denied = |hook: &str| {
        agent
            .wait_records(&format!("for the {hook} denials"), 3, |r| {
                r["verdict"] == "deny" && r["hook"] == hook
            })
            .len()
    };
    assert_eq!(denied("sendmsg4"), 3);
    assert_eq!(denied("sendmsg6"), 3);
}

#[test]
fn connected_udp_is_judged_at_connect() {
    let cg = TestCgroup::new("udpconn");
    let agent = eu_agent(&cg);
    let out = agent.exec_probe(
        "eu-only",
        &["udpconn:127.20.0.1:9053", "udpconn:127.30.0.1:9053"],
    );
    assert_eq!(outcomes(&out), ["EPERM", "ok"]);
    let out = agent.exec_probe(
        "eu-only",
        &[
            "--netns",
            "udpconn:[2001:4860::1]:9053",
            "udpconn:8.8.8.8:9053",
        ],
    );
    assert_eq!(outcomes(&out), ["EPERM", "EPERM"]);
}

#[test]
fn an_ipv4_mapped_ipv6_destination_is_judged_as_ipv4() {
    let cg = TestCgroup::new("mapped");
    let agent = eu_agent(&cg);
    let us = Listener::on("127.20.0.1");
    let de = Listener::on("127.30.0.1");
    let mapped = |l: &Listener| format!("[::ffff:{}]:{}", l.addr.ip(), l.addr.port());
    let out = agent.exec_probe(
        "eu-only",
        &[
            &format!("tcp:{}", mapped(&us)),
            &format!("tcp:{}", mapped(&de)),
            "udp:[::ffff:127.20.0.1]:9053",
            "udp:[::ffff:127.30.0.1]:9053",
            "udpconn:[::ffff:127.20.0.1]:9053",
        ],
    );
    assert_eq!(outcomes(&out), ["EPERM", "ok", "EPERM", "ok", "EPERM"]);
    let rec = agent.wait_record("for the mapped connect", |r| {
        r["verdict"] == "deny" && r["hook"] == "connect6"
    });
    assert_eq!(rec["dst"], "::ffff:127.20.0.1");
    assert_eq!(rec["prefix"], "127.20.0.0/16");
    assert_eq!(rec["tags"], serde_json::json!(["US"]));
}

#[test]
fn tcp_fast_open_is_judged_like_connect() {
    let cg = TestCgroup::new("tfo");
    let agent = eu_agent(&cg);
    let t = UsDe::new();
    let out = agent.exec_probe("eu-only", &t.ops("tfo"));
    assert_eq!(outcomes(&out), ["EPERM", "ok"]);
}

#[test]
fn raw_and_packet_sockets_are_refused_to_confined_workloads() {
    let cg = TestCgroup::new("raw");
    let confined = cg.child("confined");
    let free = cg.child("free");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(CONFINED_EU)
        .start();
    // This test runs as root: only geowall's sock_create hook refuses these.
    let out = run_probe(Some(&confined), &["raw4", "raw6"]);
    assert_eq!(outcomes(&out), ["EPERM", "EPERM"]);
    let rec = agent.wait_record("for the refused raw socket", |r| {
        r["reason"] == "socket_type" && r["hook"] == "sock_create"
    });
    assert_eq!(rec["verdict"], "deny");
    assert_eq!(rec["policy"], "eu-only");
    assert!(rec.get("dst").is_none());

    // A job started by geowall exec cannot open packet sockets either.
    let out = agent.exec_probe("eu-only", &["raw4", "raw6", "packet"]);
    assert_eq!(outcomes(&out), ["EPERM", "EPERM", "EPERM"]);

    // Outside the policy's cgroups nothing is refused.
    let out = run_probe(Some(&free), &["raw4", "packet"]);
    assert_eq!(outcomes(&out), ["ok", "ok"]);
}

#[test]
fn child_cgroups_are_confined_and_others_are_not() {
    let cg = TestCgroup::new("nested");
    let deep = cg.child("confined/team/job-7");
    let sibling = cg.child("free");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(CONFINED_EU)
        .start();
    let t = UsDe::new();
    let ops = t.ops("tcp");
    let to_us = &ops[..1];
    assert_eq!(outcomes(&run_probe(Some(&deep), &ops)), ["EPERM", "ok"]);
    assert_eq!(outcomes(&run_probe(Some(&sibling), to_us)), ["ok"]);
    // The test's own cgroup is outside the governed subtree.
    assert_eq!(outcomes(&run_probe(None, to_us)), ["ok"]);
    let rec = agent.wait_record("for the nested denial", |r| r["verdict"] == "deny");
    assert_eq!(
        rec["cgroup"],
        format!("{}/confined/team/job-7", cg.rel()).as_str()
    );
}

#[test]
fn audit_mode_never_blocks_and_records_would_deny() {
    let cg = TestCgroup::new("audit");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(
            r#"
[[policy]]
name = "eu-audit"
mode = "audit"
allow = ["EU"]
"#,
        )
        .start();
    let us = Listener::on("127.20.0.1");
    let out = agent.exec_probe(
        "eu-audit",
        &[
            &format!("tcp:{}", us.target()),
            "udp:127.20.0.1:9053",
            "raw4",
        ],
    );
    // Audit mode blocks nothing, raw sockets included: the job keeps
    // CAP_NET_RAW and the kernel only records what it would refuse.
    assert_eq!(outcomes(&out), ["ok", "ok", "ok"]);
    let rec = agent.wait_record("for the would-deny", |r| r["verdict"] == "would_deny");
    assert_eq!(rec["dst"], "127.20.0.1");
    assert_eq!(rec["policy"], "eu-audit");
    let raw = agent.wait_record("for the raw socket's would-deny", |r| {
        r["verdict"] == "would_deny" && r["reason"] == "socket_type"
    });
    assert_eq!(raw["hook"], "sock_create");
    assert_eq!(raw["policy"], "eu-audit");
    let udp = agent.wait_record("for the datagram's would-deny", |r| {
        r["verdict"] == "would_deny" && r["hook"] == "sendmsg4"
    });
    assert_eq!(udp["dst"], "127.20.0.1");
    // Every flow of the job is recorded by now: none of them was denied.
    assert!(
        find(&agent.records(), |r| r["verdict"] == "deny"
            && r["dst"].is_string())
        .is_none()
    );
}

#[test]
fn cidr_rules_are_checked_before_the_region() {
    let cg = TestCgroup::new("rules");
    let allowed_us = Listener::on("127.20.5.1");
    let us = Listener::on("127.20.6.1");
    let blocked_de = Listener::on("127.30.9.1");
    let de = Listener::on("127.30.8.1");
    let port_us = Listener::on("127.20.7.1");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(&format!(
            r#"
[[policy]]
name = "eu-plus"
allow = ["EU"]
rules = [
  {{ cidr = "127.20.5.0/24", action = "allow" }},
  {{ cidr = "127.30.9.0/24", action = "deny" }},
  {{ cidr = "127.20.7.0/24", action = "allow", proto = "tcp", port = {} }},
]
"#,
            port_us.addr.port()
        ))
        .start();
    let out = agent.exec_probe(
        "eu-plus",
        &[
            &format!("tcp:{}", allowed_us.target()),
            &format!("tcp:{}", us.target()),
            &format!("tcp:{}", blocked_de.target()),
            &format!("tcp:{}", de.target()),
            &format!("tcp:{}", port_us.target()),
            &format!("udp:{}", port_us.target()),
        ],
    );
    assert_eq!(
        outcomes(&out),
        ["ok", "EPERM", "EPERM", "ok", "ok", "EPERM"]
    );
    let rec = agent.wait_record("for the rule denial", |r| {
        r["verdict"] == "deny" && r["reason"] == "rule"
    });
    assert_eq!(rec["dst"], "127.30.9.1");
    assert_eq!(rec["prefix"], "127.30.9.0/24");
}

#[test]
fn untagged_destinations_follow_the_policy_setting() {
    let cg = TestCgroup::new("untagged");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(
            r#"
[[policy]]
name = "strict"
allow = ["EU"]
untagged = "deny"

[[policy]]
name = "lax"
allow = ["EU"]
untagged = "allow"
"#,
        )
        .start();
    let ops = ["--netns", "tcp:192.0.2.1:443", "udp:[2001:db8::1]:9053"];
    assert_eq!(
        outcomes(&agent.exec_probe("strict", &ops)),
        ["EPERM", "EPERM"]
    );
    assert_eq!(
        outcomes(&agent.exec_probe("lax", &ops)),
        ["ENETUNREACH", "ENETUNREACH"]
    );
    let rec = agent.wait_record("for the untagged denial", |r| r["reason"] == "untagged");
    assert_eq!(rec["policy"], "strict");
    assert_eq!(rec["tags"], serde_json::json!([]));
}

#[test]
fn local_destinations_follow_the_policy_setting() {
    let cg = TestCgroup::new("local");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(
            r#"
[[policy]]
name = "local-ok"
allow = ["EU"]

[[policy]]
name = "no-local"
allow = ["EU"]
local = "deny"
"#,
        )
        .start();
    let lo = Listener::on("127.40.0.1");
    let t = format!("tcp:{}", lo.target());
    assert_eq!(outcomes(&agent.exec_probe("local-ok", &[&t])), ["ok"]);
    assert_eq!(outcomes(&agent.exec_probe("no-local", &[&t])), ["EPERM"]);
    let ns = [
        "--netns",
        "tcp:10.1.2.3:443",
        "udp:[fd00::1]:9053",
        "udp:224.0.0.251:5353",
    ];
    assert_eq!(
        outcomes(&agent.exec_probe("local-ok", &ns)),
        ["ENETUNREACH", "ENETUNREACH", "ENETUNREACH"]
    );
    assert_eq!(
        outcomes(&agent.exec_probe("no-local", &ns)),
        ["EPERM", "EPERM", "EPERM"]
    );
    let rec = agent.wait_record("for the local denial", |r| r["reason"] == "local");
    assert_eq!(rec["tags"], serde_json::json!(["local"]));
    // The map's range around 127.40.0.1: 127/8 minus the ranges the test map
    // tags.
    assert_eq!(rec["prefix"], "127.32.0.0/11");
}

/// Two configs that both deny US and allow DE but differ everywhere else:
/// switching between them under a connect loop must never let US through
/// nor refuse DE.
#[test]
fn table_switches_never_let_a_blocked_destination_through() {
    let cg = TestCgroup::new("swap");
    let confined = cg.child("confined");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .cidr_map("extra.cidr", "127.50.0.0/16 CH\n127.51.0.0/16 NO\n")
        .config(CONFINED_EU)
        .start();
    let t = UsDe::new();
    let loop_ms = 4000;
    let probe_us = connect_loop(&confined, &t.us.target(), loop_ms);
    let probe_de = connect_loop(&confined, &t.de.target(), loop_ms);
    let mut switches = 0;
    let start = agent.epoch();
    let deadline = std::time::Instant::now() + Duration::from_millis(loop_ms - 500);
    while std::time::Instant::now() < deadline {
        agent.rewrite_config(|text| {
            if text.contains("\"EEA\", \"CH\"") {
                text.replace("allow = [\"EEA\", \"CH\"]", "allow = [\"EU\"]")
            } else {
                text.replace("allow = [\"EU\"]", "allow = [\"EEA\", \"CH\"]")
            }
        });
        agent.signal(libc::SIGHUP);
        let want = start + switches + 1;
        let wait = std::time::Instant::now() + Duration::from_secs(5);
        while agent.epoch() < want {
            assert!(
                std::time::Instant::now() < wait,
                "reload did not switch tables:\n{}",
                agent.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        switches += 1;
    }
    let us_counts = probe_us.join().expect("probe thread");
    let de_counts = probe_de.join().expect("probe thread");
    assert!(switches >= 10, "only {switches} switches happened");
    assert_eq!(
        us_counts.keys().collect::<Vec<_>>(),
        ["EPERM"],
        "US: {us_counts:?}"
    );
    assert_eq!(
        de_counts.keys().collect::<Vec<_>>(),
        ["ok"],
        "DE: {de_counts:?}"
    );
    assert!(us_counts["EPERM"] > 100, "{us_counts:?}");
    eprintln!("{switches} table switches; US {us_counts:?}; DE {de_counts:?}");
}

#[test]
fn a_reload_naming_a_missing_cgroup_changes_nothing_and_start_only_keys_are_named() {
    let cg = TestCgroup::new("reloadkeys");
    let confined = cg.child("confined");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(CONFINED_EU)
        .start();
    let t = UsDe::new();
    let us = [format!("tcp:{}", t.us.target())];
    assert_eq!(outcomes(&run_probe(Some(&confined), &us)), ["EPERM"]);
    let epoch = agent.epoch();

    // A static cgroup that does not exist: refused before the switch.
    agent.rewrite_config(|t| t.replace("cgroups = [\"/confined\"]", "cgroups = [\"/gone\"]"));
    let out = agent.cli(&["map", "load"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gone") && err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(agent.epoch(), epoch, "the refused reload switched tables");
    assert_eq!(outcomes(&run_probe(Some(&confined), &us)), ["EPERM"]);

    // Keys read only at start: the reload is taken and says what waits.
    agent.rewrite_config(|t| {
        t.replace("cgroups = [\"/gone\"]", "cgroups = [\"/confined\"]")
            .replace("[agent]\n", "[agent]\nring_buffer_kib = 64\n")
    });
    let out = agent.cli(&["map", "load"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(agent.epoch(), epoch + 1);
    let rec = agent.wait_record("for the config record", |r| {
        r["kind"] == "config" && r["epoch"] == epoch + 1
    });
    assert_eq!(
        rec["needs_restart"],
        serde_json::json!(["ring_buffer_kib"]),
        "{rec}"
    );
    assert!(rec.get("errors").is_none(), "{rec}");
    assert!(
        agent.stderr().contains("ring_buffer_kib changed"),
        "{}",
        agent.stderr()
    );
    assert_eq!(outcomes(&run_probe(Some(&confined), &us)), ["EPERM"]);
}

#[test]
fn a_bad_config_on_reload_is_refused_and_the_tables_in_force_stay() {
    let cg = TestCgroup::new("badreload");
    let agent = eu_agent(&cg);
    let t = UsDe::new();
    t.assert_eu(&agent, "eu-only");
    let epoch = agent.epoch();

    agent.rewrite_config(|t| t.replace("allow = [\"EU\"]", "allow = [\"EUU\", \"US\"]"));
    let check = agent.cli(&["check"]);
    assert!(!check.status.success());
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(err.contains("geowall.toml:"), "{err}");
    assert!(
        err.contains("unknown region 'EUU' (did you mean 'EU'"),
        "{err}"
    );

    agent.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !agent.stderr().contains("reload refused") {
        assert!(std::time::Instant::now() < deadline, "{}", agent.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        agent.stderr().contains("did you mean 'EU'"),
        "{}",
        agent.stderr()
    );
    assert_eq!(agent.epoch(), epoch, "the refused reload switched tables");
    t.assert_eu(&agent, "eu-only");

    // A broken map file is refused the same way, naming file and line.
    agent.rewrite_config(|t| t.replace("allow = [\"EUU\", \"US\"]", "allow = [\"EU\"]"));
    let map_file = agent.config.parent().unwrap().join("test.cidr");
    std::fs::write(&map_file, format!("{MAP}127.99.0.0/8 DE\n")).unwrap();
    agent.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !agent.stderr().contains("host bits") {
        assert!(std::time::Instant::now() < deadline, "{}", agent.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        agent.stderr().contains("test.cidr:11:"),
        "{}",
        agent.stderr()
    );
    assert_eq!(agent.epoch(), epoch, "the refused map switched tables");
    t.assert_eu(&agent, "eu-only");

    // The map fixed, the next reload is taken.
    std::fs::write(&map_file, format!("{MAP}127.99.0.0/16 DE\n")).unwrap();
    agent.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while agent.epoch() == epoch {
        assert!(
            std::time::Instant::now() < deadline,
            "the fixed map was not taken:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(agent.epoch() > epoch);
    let answer = agent.cli_json(&["map", "lookup", "--json", "127.99.0.1"]);
    assert_eq!(answer[0]["tags"], serde_json::json!(["DE"]), "{answer}");
    t.assert_eu(&agent, "eu-only");
}

#[test]
fn a_second_start_adopts_the_pins_and_attaches_nothing_twice() {
    use geowall::kernel::sys::{attach_type, cgroup_prog_ids};
    use std::os::fd::AsFd;

    let cg = TestCgroup::new("adopt");
    let confined = cg.child("confined");
    let mut agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(CONFINED_EU)
        .keep_pins()
        .start();
    let us = Listener::on("127.20.0.1");
    let t = format!("tcp:{}", us.target());
    let attached = |cg: &TestCgroup| -> Vec<usize> {
        let dir = std::fs::File::open(cg.path()).unwrap();
        attach_type::ALL
            .iter()
            .map(|t| cgroup_prog_ids(dir.as_fd(), *t).unwrap().len())
            .collect()
    };
    assert_eq!(attached(&cg), [1, 1, 1, 1, 1]);

    // The agent stops; enforcement stays from the pins.
    assert!(agent.terminate().success());
    assert_eq!(outcomes(&run_probe(Some(&confined), &[&t])), ["EPERM"]);
    let status = agent.cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("agent: down (last seen ") && text.contains("enforcement stays in force"),
        "{text}"
    );
    let json = agent.cli_json(&["status", "--json"]);
    assert_eq!(json["agent"], "down", "{json}");
    assert_eq!(json["enforcing"], true);
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["policies"], serde_json::json!(["eu-only"]));
    let programs = json["programs"]["attached"].as_array().unwrap();
    assert!(programs.iter().any(|p| p == "gw_connect4"), "{json}");
    assert!(
        json["programs"]["since"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );
    assert!(json["agent_last_seen"].as_str().is_some(), "{json}");

    // A second start adopts the links: still one program per hook.
    agent.restart();
    assert!(agent.stderr().contains("attached=0"), "{}", agent.stderr());
    assert_eq!(attached(&cg), [1, 1, 1, 1, 1]);
    assert_eq!(outcomes(&run_probe(Some(&confined), &[&t])), ["EPERM"]);
    let start = agent.wait_record("for the second start", |r| {
        r["kind"] == "agent" && r["event"] == "start" && r["adopted"].as_u64() > Some(0)
    });
    assert_eq!(start["attached"], 0);

    // `geowall stop` ends enforcement deliberately: nothing attached, no pins.
    let out = agent.cli(&["stop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(attached(&cg), [0, 0, 0, 0, 0], "{}", agent.stderr());
    assert!(
        !agent.bpffs.exists(),
        "pins left under {}",
        agent.bpffs.display()
    );
    assert_eq!(outcomes(&run_probe(Some(&confined), &[&t])), ["ok"]);
}

#[test]
fn a_full_ring_buffer_counts_drops_and_never_blocks() {
    let cg = TestCgroup::new("ringfull");
    let confined = cg.child("confined");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .agent_keys("ring_buffer_kib = 4")
        .config(CONFINED_EU)
        .start();
    let us = Listener::on("127.20.0.1");
    // With the agent stopped nobody reads the 4 KiB ring: it fills up.
    agent.signal(libc::SIGSTOP);
    let counts = loop_counts(&confined, &us.target(), 300);
    agent.signal(libc::SIGCONT);
    assert_eq!(counts.keys().collect::<Vec<_>>(), ["EPERM"], "{counts:?}");
    let denied = counts["EPERM"];
    let status = agent.status();
    let dropped = status["status"]["events_dropped"]
        .as_u64()
        .unwrap_or_else(|| panic!("no status.events_dropped in {status}"));
    assert!(denied > 100, "{denied}");
    assert!(dropped > 0, "no drops counted for {denied} denials");
    // Every denial is either in the log (once the agent has drained the
    // ring) or counted as dropped.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let recorded = agent
            .records()
            .iter()
            .filter(|r| r["verdict"] == "deny")
            .count() as u64;
        if recorded + dropped == denied {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && recorded + dropped < denied,
            "{recorded} recorded + {dropped} dropped != {denied} denied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run_probe(Some(&confined), &[format!("tcp:{}", us.target())]);
    assert_eq!(outcomes(&out)[0], "EPERM");
}

#[test]
fn a_sockets_cached_allow_ends_with_the_binding_or_tables_that_made_it() {
    use std::io::{BufRead, BufReader};

    let cg = TestCgroup::new("udpcache");
    let confined = cg.child("confined");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(
            r#"
[[policy]]
name = "eu-only"
allow = ["EU"]
cgroups = ["/confined"]

[[policy]]
name = "fr-only"
allow = ["FR"]
"#,
        )
        .start();
    let dir = TempDir::new("udpcache");
    let (go_a, go_b) = (dir.path().join("a"), dir.path().join("b"));
    let (de, us) = ("127.30.0.1:9053", "127.20.0.1:9053");
    // One socket all along: three datagrams to DE under eu-only; then (the
    // tables changed: eu-only allows the US only) DE again and US twice;
    // then (the binding moved to fr-only) US again.
    let mut probe = std::process::Command::new(geowall_tests::netprobe())
        .arg("--cgroup")
        .arg(&confined)
        .args([
            format!("udpkeep:{de}"),
            format!("udpkeep:{de}"),
            format!("udpkeep:{de}"),
            format!("waitfile:{}", go_a.display()),
            format!("udpkeep:{de}"),
            format!("udpkeep:{us}"),
            format!("udpkeep:{us}"),
            format!("waitfile:{}", go_b.display()),
            format!("udpkeep:{us}"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(probe.stdout.take().unwrap()).lines();
    let mut results = Vec::new();
    let mut next = |results: &mut Vec<String>| {
        let line = lines.next().expect("probe line").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        results.push(v["result"].as_str().unwrap().to_owned());
    };
    for _ in 0..3 {
        next(&mut results);
    }

    // A table change alone.
    let epoch = agent.epoch();
    agent.rewrite_config(|text| text.replacen("allow = [\"EU\"]\n", "allow = [\"US\"]\n", 1));
    agent.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while agent.epoch() == epoch {
        assert!(std::time::Instant::now() < deadline, "no table switch");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(&go_a, "").unwrap();
    for _ in 0..4 {
        next(&mut results);
    }

    // The binding moves (a reload also switches the tables; the bindings
    // generation in the cache's key covers a binding that changes alone).
    agent.rewrite_config(|text| {
        text.replacen("cgroups = [\"/confined\"]\n", "", 1).replace(
            "allow = [\"FR\"]\n",
            "allow = [\"FR\"]\ncgroups = [\"/confined\"]\n",
        )
    });
    agent.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let fr = agent.policy_status("fr-only");
        if fr["cgroups"].to_string().contains("/confined") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the binding did not move: {fr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(&go_b, "").unwrap();
    for _ in 0..2 {
        next(&mut results);
    }

    assert!(probe.wait().unwrap().success());
    assert_eq!(
        results,
        ["ok", "ok", "ok", "ok", "EPERM", "ok", "ok", "ok", "EPERM"],
        "DE×3 | wait | DE, US×2 | wait | US (the waits are the 4th and 8th)"
    );

    // Cached datagrams are counted all the same: three to DE and two to
    // the US allowed by eu-only; DE denied by it after the table change,
    // the US by fr-only after the move.
    let (eu, fr) = (
        agent.policy_status("eu-only"),
        agent.policy_status("fr-only"),
    );
    assert_eq!(eu["allowed"], 5, "{eu}");
    assert_eq!(eu["denied"], 1, "{eu}");
    assert_eq!(fr["denied"], 1, "{fr}");
}
