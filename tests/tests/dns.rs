//! DNS through the agent: real NSD, real resolver clients, real kernel.

use std::process::Command;

use geowall_tests::dns::{self, DnsServer};

/// A client: what it is, its command line, its environment.
type Client<'a> = (&'a str, Vec<String>, Vec<(&'a str, &'a str)>);

/// Runs `argv` (a client with its own resolv.conf) and returns its answers.
fn run(argv: &[String], env: &[(&str, &str)]) -> Vec<(String, bool, String)> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    dns::answers(&out.stdout)
}

#[test]
fn every_client_resolves_the_test_zone_without_the_agent() {
    let server = DnsServer::start();
    let resolv = server.resolv_conf();
    let musl = dns::musl_resolver();
    let go = dns::go_resolver();
    let names = ["api.partner.test", "chain1.test"];
    let mut clients: Vec<Client> = vec![
        ("musl", vec![musl.display().to_string()], vec![]),
        (
            "go",
            vec![go.display().to_string()],
            vec![("GODEBUG", "netdns=go")],
        ),
        ("node c-ares", dns::node_resolver("resolve"), vec![]),
        ("node getaddrinfo", dns::node_resolver("lookup"), vec![]),
        ("java", dns::java_resolver(), vec![]),
    ];
    for (what, argv, env) in clients.iter_mut() {
        argv.extend(names.iter().map(|n| (*n).to_owned()));
        let cmd: Vec<&str> = argv.iter().map(String::as_str).collect();
        let answers = run(&dns::with_resolv(&resolv, None, &cmd), env);
        assert_eq!(answers.len(), 2, "{what}: {answers:?}");
        assert!(
            answers[0].1 && answers[0].2.contains("127.20.0.10"),
            "{what}: {answers:?}"
        );
        assert!(
            answers[1].1 && answers[1].2.contains("127.20.0.12"),
            "{what}: {answers:?}"
        );
    }
}

use geowall_tests::{Agent, AgentSpec, Listener, TestCgroup, outcomes};

const MAP: &str = "127.20.0.0/16 US\n127.30.0.0/16 DE\n";

/// An agent whose `eu-only` policy allows the EU, `api.partner.test` by
/// name, and denies `denied.test`.
fn agent_with_names(cg: &TestCgroup, extra: &str) -> Agent {
    AgentSpec::new(cg)
        .cidr_map("m.cidr", MAP)
        .config(&format!(
            "[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\n\
             allow_names = [\"api.partner.test\", \"*.chain3.test\", \"chain3.test\"]\n\
             deny_names = [\"denied.test\"]\nlog_dns = \"all\"\n{extra}"
        ))
        .start()
}

/// `geowall exec --policy eu-only -- CMD` with `resolv` as the job's
/// resolv.conf.
fn exec_with_resolv(agent: &Agent, resolv: &std::path::Path, cmd: &[&str]) -> std::process::Output {
    agent.exec("eu-only", &dns::with_resolv(resolv, None, cmd))
}

#[test]
fn a_name_the_policy_allows_opens_its_us_address_and_records_name_it() {
    let cg = TestCgroup::new("dns-allow");
    let server = DnsServer::start();
    let resolv = server.resolv_conf();
    let agent = agent_with_names(&cg, "");
    let us = Listener::on("127.20.0.10");
    let other = Listener::on("127.20.0.13");
    let probe = geowall_tests::netprobe().display().to_string();
    // dig through the forwarder, then connect: allowed by name.
    let out = exec_with_resolv(
        &agent,
        &resolv,
        &[
            "sh",
            "-c",
            &format!(
                "dig +short api.partner.test && {probe} tcp:{} tcp:{}",
                us.target(),
                other.target()
            ),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("127.20.0.10"),
        "dig answered through the forwarder:\n{stdout}\n{}\nrecords:\n{:#?}",
        String::from_utf8_lossy(&out.stderr),
        agent.records()
    );
    let probe_lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(probe_lines.len(), 2, "{stdout}");
    assert!(
        probe_lines[0].contains("\"ok\""),
        "allowed by name: {}",
        probe_lines[0]
    );
    assert!(
        probe_lines[1].contains("EPERM"),
        "a US address nobody resolved: {}",
        probe_lines[1]
    );
    // The dns record, and the flow record naming the endpoint.
    let q = agent.wait_record("dns api.partner.test", |r| {
        r["kind"] == "dns" && r["question"] == "api.partner.test"
    });
    assert_eq!(q["verdict"], "allow");
    assert_eq!(q["answers"][0], "127.20.0.10");
    let denied = agent.wait_record("deny of 127.20.0.13", |r| r["dst"] == "127.20.0.13");
    assert!(denied.get("names").is_none(), "{denied}");
}

/// `netprobe OPS…` as a job under eu-only with `resolv`, its outcomes.
fn probe(agent: &Agent, resolv: &std::path::Path, ops: &[&str]) -> Vec<String> {
    let probe = geowall_tests::netprobe().display().to_string();
    let mut cmd = vec![probe.as_str()];
    cmd.extend_from_slice(ops);
    outcomes(&exec_with_resolv(agent, resolv, &cmd))
}

#[test]
fn a_cname_chain_is_learned_whole_and_named_in_the_flow_record() {
    let cg = TestCgroup::new("dns-chain");
    let server = DnsServer::start();
    let resolv = server.resolv_conf();
    let agent = agent_with_names(&cg, "log_allowed = \"all\"\n");
    let target = Listener::on("127.20.0.12");
    // chain1 → chain2 → chain3 (US): allowed through chain3.test.
    let port = target.addr.port();
    let out = probe(&agent, &resolv, &[&format!("resolve:chain1.test:{port}")]);
    assert_eq!(out, ["ok"]);
    let flow = agent.wait_record("allow of chain3's address", |r| {
        r["dst"] == "127.20.0.12" && r["verdict"] == "allow"
    });
    assert_eq!(flow["reason"], "name", "{flow}");
    assert_eq!(
        flow["names"],
        serde_json::json!(["chain1.test", "chain2.test", "chain3.test"]),
        "{flow}"
    );
    assert!(flow["resolved"].is_string(), "{flow}");
}

#[test]
fn a_denied_name_gets_nxdomain_and_a_record() {
    let cg = TestCgroup::new("dns-deny");
    let server = DnsServer::start();
    let resolv = server.resolv_conf();
    let agent = agent_with_names(&cg, "");
    let out = exec_with_resolv(&agent, &resolv, &["dig", "denied.test"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: NXDOMAIN"), "{text}");
    let r = agent.wait_record("dns deny", |r| {
        r["kind"] == "dns" && r["question"] == "denied.test"
    });
    assert_eq!(r["verdict"], "deny");
    assert_eq!(r["reason"], "deny_names");
    assert_eq!(r["rcode"], "NXDOMAIN");
    // The same name asked directly of the server exists: the forwarder
    // answered, not the server.
    assert_eq!(
        dns::query_a(server.addr, "denied.test").as_deref(),
        Some("127.30.0.11")
    );
}

#[test]
fn resolved_only_denies_what_the_job_did_not_resolve() {
    let cg = TestCgroup::new("dns-ronly");
    let server = DnsServer::start();
    let resolv = server.resolv_conf();
    let agent = agent_with_names(&cg, "resolved_only = true\n");
    let de = Listener::on("127.30.0.10");
    let port = de.addr.port();
    // A DE address the region allows, hard-coded: refused.
    assert_eq!(
        probe(&agent, &resolv, &[&format!("tcp:{}", de.target())]),
        ["EPERM"]
    );
    let r = agent.wait_record("unresolved", |r| r["reason"] == "unresolved");
    assert_eq!(r["dst"], "127.30.0.10");
    // Resolved through the agent: allowed.
    assert_eq!(
        probe(
            &agent,
            &resolv,
            &[&format!("resolve:eu.partner.test:{port}")]
        ),
        ["ok"]
    );
    // Glue of the additional section is never learned.
    let mx = Listener::on("127.20.0.15");
    let out = exec_with_resolv(
        &agent,
        &resolv,
        &[
            "sh",
            "-c",
            &format!(
                "dig +short mail.test MX && {} tcp:{}",
                geowall_tests::netprobe().display(),
                mx.target()
            ),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mx.test"), "{text}");
    assert!(
        text.contains("EPERM"),
        "glue must not open mx.test's address: {text}"
    );
}

#[test]
fn two_jobs_do_not_share_what_each_resolved() {
    let cg = TestCgroup::new("dns-two");
    let server = DnsServer::start();
    let resolv = server.resolv_conf();
    let agent = agent_with_names(&cg, "");
    let us = Listener::on("127.20.0.10");
    let port = us.addr.port();
    assert_eq!(
        probe(
            &agent,
            &resolv,
            &[&format!("resolve:api.partner.test:{port}")]
        ),
        ["ok"]
    );
    // Another job, same address, never resolved it: the region decides.
    assert_eq!(
        probe(&agent, &resolv, &[&format!("tcp:{}", us.target())]),
        ["EPERM"]
    );
}

#[test]
fn an_expired_answer_closes_the_address_after_the_grace_but_not_a_connection() {
    let cg = TestCgroup::new("dns-ttl");
    let server = DnsServer::start();
    let resolv = server.resolv_conf();
    let agent = AgentSpec::new(&cg)
        .cidr_map("m.cidr", MAP)
        .config(&format!(
            "[dns]\nport = {}\nmin_ttl = 1\ngrace = 1\n\n             [[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\nallow_names = [\"short.test\"]\n",
            geowall_tests::free_dns_ports()
        ))
        .start();
    let us = Listener::on("127.20.0.14");
    let port = us.addr.port();
    let t = us.target();
    // Resolve, connect, hold that connection past expiry and write; then a
    // new connect after expiry is refused.
    let out = probe(
        &agent,
        &resolv,
        &[
            &format!("resolve:short.test:{port}"),
            &format!("holdtcp:{t}:3500"),
            &format!("tcp:{t}"),
        ],
    );
    assert_eq!(out, ["ok", "ok", "EPERM"], "TTL 1 s + 1 s grace");
}

#[test]
fn a_shared_address_lists_every_name_the_job_resolved() {
    let cg = TestCgroup::new("dns-shared");
    let server = DnsServer::start();
    let resolv = server.resolv_conf();
    let agent = AgentSpec::new(&cg)
        .cidr_map("m.cidr", MAP)
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\nallow_names = [\"shared1.test\"]\nlog_allowed = \"all\"\n")
        .start();
    let us = Listener::on("127.20.0.13");
    let port = us.addr.port();
    let out = probe(
        &agent,
        &resolv,
        &[
            &format!("resolve:shared2.test:{port}"),
            &format!("resolve:shared1.test:{port}"),
        ],
    );
    assert_eq!(
        out,
        ["EPERM", "ok"],
        "shared2 alone does not open it; shared1 does"
    );
    let flow = agent.wait_record("allow by shared1", |r| {
        r["dst"] == "127.20.0.13" && r["verdict"] == "allow"
    });
    assert_eq!(
        flow["names"],
        serde_json::json!(["shared1.test", "shared2.test"]),
        "{flow}"
    );
}

#[test]
fn truncated_answers_go_over_tcp_and_dig_tcp_and_server_work() {
    let cg = TestCgroup::new("dns-tcp");
    let server = DnsServer::start();
    let resolv = server.resolv_conf();
    let agent = AgentSpec::new(&cg)
        .cidr_map("m.cidr", MAP)
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\nallow_names = [\"big.test\", \"api.partner.test\"]\nlog_dns = \"all\"\n")
        .start();
    let server_arg = format!("@{}", server.addr);
    for cmd in [
        vec!["dig", "+short", "big.test"],
        vec!["dig", "+short", "+tcp", "api.partner.test"],
        vec!["dig", "+short", server_arg.as_str(), "api.partner.test"],
    ] {
        let out = exec_with_resolv(&agent, &resolv, &cmd);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("127.20."),
            "{cmd:?}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The truncated answer came over UDP, then the whole one over TCP.
    let records = agent.records();
    let big: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["kind"] == "dns" && r["question"] == "big.test")
        .collect();
    assert!(
        big.iter()
            .any(|r| r["proto"] == "udp" && r["truncated"] == true),
        "{big:?}"
    );
    let tcp = big
        .iter()
        .find(|r| r["proto"] == "tcp")
        .expect("a TCP query");
    assert_eq!(tcp["answers"].as_array().map(Vec::len), Some(100));
    // Whichever of the 100 addresses the resolver library picks, the name
    // opens it (nothing listens there: refused by the host, not by
    // geowall).
    let out = probe(&agent, &resolv, &["resolve:big.test:9"]);
    assert_eq!(out, ["ECONNREFUSED"], "allowed by name");
}

#[test]
fn a_silent_resolver_gets_servfail_on_the_record() {
    let cg = TestCgroup::new("dns-silent");
    let silent = dns::Silent::start();
    let dir = geowall_tests::TempDir::new("resolv");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {}\noptions timeout:5 attempts:1\n", silent.addr),
    )
    .unwrap();
    let agent = AgentSpec::new(&cg)
        .cidr_map("m.cidr", MAP)
        .config(&format!(
            "[dns]\nport = {}\ntimeout = 1\n\n[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\n",
            geowall_tests::free_dns_ports()
        ))
        .start();
    let out = exec_with_resolv(
        &agent,
        &resolv,
        &["dig", "+tries=1", "+time=5", "api.partner.test"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: SERVFAIL"), "{text}");
    let r = agent.wait_record("servfail", |r| {
        r["kind"] == "dns" && r["verdict"] == "servfail"
    });
    assert_eq!(r["rcode"], "SERVFAIL");
    assert!(agent.status()["status"]["dns"]["upstream_failures"].as_u64() >= Some(1));
}

/// A tiny HTTP server on `ip` answering every request with 200.
fn http_server(ip: &str) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind((ip, 0)).expect("http listen");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
        }
    });
    addr
}

#[test]
fn every_client_resolves_through_the_agent_and_the_name_opens_the_address() {
    let cg = TestCgroup::new("dns-clients");
    let server = DnsServer::start();
    let resolv = server.resolv_conf();
    let agent = agent_with_names(&cg, "");
    let musl = dns::musl_resolver().display().to_string();
    let go = dns::go_resolver().display().to_string();
    let node_resolve = dns::node_resolver("resolve");
    let node_lookup = dns::node_resolver("lookup");
    let java = dns::java_resolver();
    let mut clients: Vec<(&str, Vec<String>)> = vec![
        ("musl", vec![musl.clone()]),
        ("go", vec!["env".into(), "GODEBUG=netdns=go".into(), go]),
        ("node c-ares", node_resolve),
        ("node getaddrinfo", node_lookup),
        ("java", java),
    ];
    for (what, argv) in clients.iter_mut() {
        argv.push("api.partner.test".into());
        argv.push("denied.test".into());
        let cmd: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = exec_with_resolv(&agent, &resolv, &cmd);
        let answers = dns::answers(&out.stdout);
        assert_eq!(
            answers.len(),
            2,
            "{what}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            answers[0].1 && answers[0].2.contains("127.20.0.10"),
            "{what}: {answers:?}"
        );
        assert!(
            !answers[1].1,
            "{what}: denied.test must not resolve: {answers:?}"
        );
    }
    // glibc: getent, python and curl, name to connection.
    let web = http_server("127.20.0.10");
    let url = format!("http://api.partner.test:{}/", web.port());
    let out = exec_with_resolv(&agent, &resolv, &["getent", "ahosts", "api.partner.test"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("127.20.0.10"));
    let py = format!(
        "import socket; s = socket.create_connection(('api.partner.test', {})); print('connected')",
        web.port()
    );
    let out = exec_with_resolv(&agent, &resolv, &["python3", "-c", &py]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("connected"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = exec_with_resolv(&agent, &resolv, &["curl", "-sS", "--max-time", "5", &url]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // musl's own connect after its own resolution.
    let out = exec_with_resolv(
        &agent,
        &resolv,
        &[
            &musl,
            "--connect",
            &web.port().to_string(),
            "api.partner.test",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("connect ok"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn an_unprivileged_job_resolves_through_the_agent_too() {
    let cg = TestCgroup::new("dns-nobody");
    let server = DnsServer::start();
    let resolv = server.resolv_conf();
    let agent = agent_with_names(&cg, "");
    let web = http_server("127.20.0.10");
    let url = format!("http://api.partner.test:{}/", web.port());
    let cmd = dns::with_resolv(
        &resolv,
        Some(65534),
        &["curl", "-sS", "--max-time", "5", &url],
    );
    let out = agent.exec("eu-only", &cmd);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = agent.wait_record("the query", |r| {
        r["kind"] == "dns" && r["question"] == "api.partner.test"
    });
    assert_eq!(q["uid"], 65534);
}

#[test]
fn queries_over_ipv6_go_through_the_agent() {
    let cg = TestCgroup::new("dns-v6");
    let _guard = dns::ipv6_server_lock();
    let server = DnsServer::serve(
        "::1".parse().unwrap(),
        &dns::test_zone("::1".parse().unwrap()),
    );
    let resolv = server.resolv_conf();
    let agent = agent_with_names(&cg, "");
    let musl = dns::musl_resolver().display().to_string();
    for cmd in [
        vec!["dig", "+short", "api.partner.test"],
        vec!["dig", "+short", "+tcp", "v6.test", "AAAA"],
        vec![musl.as_str(), "api.partner.test"],
    ] {
        let out = exec_with_resolv(&agent, &resolv, &cmd);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("127.20.0.10") || text.contains("::1"),
            "{cmd:?}: {text}"
        );
    }
    let q = agent.wait_record("a query over IPv6", |r| {
        r["kind"] == "dns" && r["question"] == "v6.test"
    });
    assert_eq!(q["resolver"], "[::1]:53");
    assert_eq!(q["proto"], "tcp");
}

#[test]
fn resolve_then_connect_never_races_the_kernel_entry() {
    let cg = TestCgroup::new("dns-race");
    let server = DnsServer::start();
    let resolv = server.resolv_conf();
    let agent = AgentSpec::new(&cg)
        .cidr_map("m.cidr", MAP)
        .config(&format!(
            "[dns]\nport = {}\nmin_ttl = 1\ngrace = 0\n\n             [[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\nallow_names = [\"short.test\"]\nlog_dns = \"all\"\n",
            geowall_tests::free_dns_ports()
        ))
        .start();
    let us = Listener::on("127.20.0.14");
    let n = if std::env::var_os("CI").is_some() {
        10_000
    } else {
        2_000
    };
    let probe = geowall_tests::netprobe().display().to_string();
    let out = exec_with_resolv(
        &agent,
        &resolv,
        &[
            &probe,
            &format!("resolveloop:short.test:{}:{n}", us.addr.port()),
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    if v["counts"] != serde_json::json!({"ok": n}) {
        let odd: Vec<String> = agent
            .records()
            .into_iter()
            .filter(|r| (r["kind"] == "dns" && r["verdict"] != "allow") || r["verdict"] == "deny")
            .map(|r| r.to_string())
            .collect();
        panic!(
            "{}\n{}\nstatus: {}",
            v["counts"],
            odd.join("\n"),
            agent.status()["status"]["dns"]
        );
    }
}

#[test]
fn a_job_past_its_name_rate_is_refused_and_recorded() {
    let cg = TestCgroup::new("dns-rate");
    let server = DnsServer::start();
    let resolv = server.resolv_conf();
    let agent = agent_with_names(&cg, "max_names_per_minute = 5\n");
    let names: Vec<String> = (0..8).map(|i| format!("t{i}.tunnel.test")).collect();
    let mut cmd = vec!["dig", "+short", "+tries=1"];
    cmd.extend(names.iter().map(String::as_str));
    let _ = exec_with_resolv(&agent, &resolv, &cmd);
    let refused = agent.wait_records("refused queries", 3, |r| {
        r["kind"] == "dns" && r["verdict"] == "refused"
    });
    assert!(
        refused
            .iter()
            .all(|r| r["reason"] == "max_names_per_minute" && r["rcode"] == "REFUSED")
    );
    let metrics_status = agent.status();
    assert_eq!(metrics_status["status"]["dns"]["refused"], 3);
}

#[test]
fn a_job_in_another_network_namespace_is_refused_dns_clearly() {
    let cg = TestCgroup::new("dns-netns");
    let server = DnsServer::start();
    let agent = agent_with_names(&cg, "");
    // In a namespace of its own, the job's query to a resolver: refused at
    // connect with a record (a redirect to loopback would land in the
    // namespace's own).
    let out = agent.exec_probe(
        "eu-only",
        &["--netns", &format!("udpconn:{}:53", server.addr)],
    );
    assert_eq!(outcomes(&out), ["EPERM"]);
    let r = agent.wait_record("dns_netns", |r| r["reason"] == "dns_netns");
    assert_eq!(r["verdict"], "deny");
}

#[test]
fn malformed_answers_are_passed_on_unlearned_and_recorded() {
    use std::net::UdpSocket;
    let cg = TestCgroup::new("dns-malformed");
    // A resolver that answers every query with damaged bytes: a
    // compression loop, a pointer out of range, counts that lie, a cut.
    let addr = dns::unique_loopback();
    let sock = UdpSocket::bind((addr, 53)).expect("bind");
    let replies: Vec<Vec<u8>> = vec![
        // Header claiming one answer, with a self-pointing name.
        vec![
            0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1, 0xc0, 19, 0, 1, 0, 1,
            0, 0, 0, 10, 0, 4, 127, 20, 0, 9,
        ],
        // A pointer far past the end.
        vec![
            0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1, 0xc3, 0xff, 0, 1, 0,
            1, 0, 0, 0, 10, 0, 4, 127, 20, 0, 9,
        ],
        // Counts that promise 50 answers.
        vec![
            0, 0, 0x81, 0x80, 0, 1, 0, 50, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1,
        ],
        // Cut inside the header.
        vec![0, 0, 0x81],
    ];
    let responder = sock.try_clone().expect("clone");
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let mut i = 0usize;
        while let Ok((_, from)) = responder.recv_from(&mut buf) {
            let mut reply = replies[i % replies.len()].clone();
            // Keep the query's ID so the forwarder takes it as the answer.
            if reply.len() >= 2 {
                reply[0] = buf[0];
                reply[1] = buf[1];
            }
            let _ = responder.send_to(&reply, from);
            i += 1;
        }
    });
    let dir = geowall_tests::TempDir::new("resolv");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {addr}\noptions timeout:1 attempts:1\n"),
    )
    .unwrap();
    let agent = agent_with_names(&cg, "resolved_only = true\n");
    for _ in 0..4 {
        let _ = exec_with_resolv(
            &agent,
            &resolv,
            &["dig", "+tries=1", "+time=2", "-q", "a", "-t", "A"],
        );
    }
    // The agent lives on, recorded each, and learned nothing (127.20.0.9
    // stays unresolved).
    let recs = agent.wait_records("malformed answers", 3, |r| {
        r["kind"] == "dns" && r["reason"] == "malformed"
    });
    assert!(recs.iter().all(|r| r["error"].is_string()), "{recs:?}");
    assert!(agent.status()["status"]["dns"]["malformed"].as_u64() >= Some(3));
    let probe = geowall_tests::netprobe().display().to_string();
    let out = exec_with_resolv(&agent, &resolv, &[&probe, "tcp:127.20.0.9:9"]);
    assert_eq!(outcomes(&out), ["EPERM"]);
    drop(sock);
}

#[test]
fn names_survive_an_agent_restart() {
    let cg = TestCgroup::new("dns-restart");
    let server = DnsServer::start();
    let resolv = server.resolv_conf();
    let mut agent = AgentSpec::new(&cg)
        .cidr_map("m.cidr", MAP)
        .config(&format!(
            "[dns]\nport = {}\n\n[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\n             allow_names = [\"api.partner.test\"]\nlog_allowed = \"all\"\ncgroups = [\"/job\"]\n",
            geowall_tests::free_dns_ports()
        ))
        .child_cgroups(&["job"])
        .keep_pins()
        .start();
    let job = cg.path().join("job");
    let us = Listener::on("127.20.0.10");
    // Resolve inside the bound cgroup (not an exec job: it outlives the
    // agent).
    let probe = geowall_tests::netprobe().display().to_string();
    let cmd = dns::with_resolv(
        &resolv,
        None,
        &[
            &probe,
            "--cgroup",
            &job.display().to_string(),
            &format!("resolve:api.partner.test:{}", us.addr.port()),
        ],
    );
    let out = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap();
    assert_eq!(outcomes(&out), ["ok"]);
    assert!(agent.terminate().success());
    // With the agent down the kernel still allows it by name...
    let out = geowall_tests::run_probe(Some(&job), &[format!("tcp:{}", us.target())]);
    assert_eq!(outcomes(&out), ["ok"]);
    // ...and once it is back, the record names it.
    agent.restart();
    let out = geowall_tests::run_probe(Some(&job), &[format!("tcp:{}", us.target())]);
    assert_eq!(outcomes(&out), ["ok"]);
    let flow = agent.wait_record("named after the restart", |r| {
        r["dst"] == "127.20.0.10" && r["names"].is_array()
    });
    assert_eq!(flow["names"][0], "api.partner.test");
}

#[test]
fn the_log_and_explain_speak_in_names() {
    let cg = TestCgroup::new("dns-log");
    let server = DnsServer::start();
    let resolv = server.resolv_conf();
    let agent = AgentSpec::new(&cg)
        .cidr_map("m.cidr", MAP)
        .config(&format!(
            "[dns]\nport = {}\nupstream = [\"{}\"]\n\n\
             [[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\n\
             allow_names = [\"api.partner.test\", \"chain3.test\"]\ndeny_names = [\"denied.test\"]\n\
             log_dns = \"all\"\nlog_allowed = \"all\"\n",
            geowall_tests::free_dns_ports(),
            server.addr
        ))
        .start();
    let api = Listener::on("127.20.0.10");
    let shared = Listener::on("127.20.0.13");
    let out = probe(
        &agent,
        &resolv,
        &[
            &format!("resolve:api.partner.test:{}", api.addr.port()),
            &format!("resolve:shared1.test:{}", shared.addr.port()),
        ],
    );
    assert_eq!(out, ["ok", "EPERM"]);
    agent.wait_record("the denial", |r| r["dst"] == "127.20.0.13");
    // --name: the flows to what the job resolved from the name, and its
    // queries for it; nothing else.
    let tail = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut cli = vec!["log", "tail", "--json", "-n", "100"];
        cli.extend_from_slice(args);
        let out = agent.cli(&cli);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let api_recs = tail(&["--name", "api.partner.test"]);
    assert!(
        api_recs
            .iter()
            .any(|r| r["kind"].is_null() && r["dst"] == "127.20.0.10"),
        "{api_recs:#?}"
    );
    assert!(api_recs.iter().any(|r| r["kind"] == "dns"), "{api_recs:#?}");
    assert!(
        api_recs
            .iter()
            .all(|r| r["dst"] != "127.20.0.13" && (r["kind"].is_null() || r["kind"] == "dns")),
        "{api_recs:#?}"
    );
    let under = tail(&["--name", "*.test", "--denied"]);
    assert!(
        !under.is_empty() && under.iter().all(|r| r["dst"] == "127.20.0.13"),
        "{under:#?}"
    );
    // The compact line names the endpoint before its address.
    let out = agent.cli(&["log", "tail", "--denied", "-n", "5"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "→ shared1.test 127.20.0.13:{}/tcp US",
            shared.addr.port()
        )),
        "{text}"
    );
    // The summary counts by name.
    let sum = agent.cli_json(&["log", "tail", "--summary", "--json"]);
    let names: Vec<(&str, &str)> = sum["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["verdict"].as_str().unwrap()))
        .collect();
    assert!(names.contains(&("api.partner.test", "allow")), "{sum}");
    assert!(names.contains(&("shared1.test", "deny")), "{sum}");
    // explain NAME: resolved through [dns] upstream, each address judged
    // as a job that resolved it would be.
    let explain = |dest: &str| -> Vec<serde_json::Value> {
        let out = agent.cli(&["policy", "explain", "--json", "--policy", "eu-only", dest]);
        assert!(
            out.status.success(),
            "{dest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let e = &explain("api.partner.test:8080")[0];
    assert_eq!(
        (&e["dst"], &e["port"], &e["verdict"], &e["reason"]),
        (
            &"127.20.0.10".into(),
            &8080.into(),
            &"allow".into(),
            &"name".into()
        ),
        "{e}"
    );
    assert_eq!(e["names"], serde_json::json!(["api.partner.test"]));
    let e = &explain("chain1.test")[0];
    assert_eq!(e["verdict"], "allow", "{e}");
    assert_eq!(
        e["names"],
        serde_json::json!(["chain1.test", "chain2.test", "chain3.test"])
    );
    let e = &explain("denied.test")[0];
    assert_eq!(
        (&e["verdict"], &e["reason"]),
        (&"deny".into(), &"deny_names".into()),
        "{e}"
    );
    let e = &explain("eu.partner.test")[0];
    assert_eq!(
        (&e["verdict"], &e["reason"]),
        (&"allow".into(), &"region".into()),
        "{e}"
    );
    let big = explain("big.test");
    assert_eq!(big.len(), 100, "every address of the name");
    assert!(big.iter().all(|e| e["verdict"] == "deny"));
    let out = agent.cli(&["policy", "explain", "--policy", "eu-only", "nowhere.test"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nowhere.test: NXDOMAIN"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An agent whose `eu-only` policy is approvable and allows no names.
fn approvable_agent(cg: &TestCgroup, state: &geowall_tests::TempDir) -> Agent {
    AgentSpec::new(cg)
        .cidr_map("m.cidr", MAP)
        .config(&format!(
            "[approvals]\nstate_dir = \"{}\"\n\n[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\napprovable = true\n",
            state.path().display()
        ))
        .start()
}

/// The first request `pred` accepts, waited for (5 s).
fn wait_request(agent: &Agent, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let list = agent.cli_json(&["approvals", "list", "--json"]);
        if let Some(r) = list.as_array().unwrap().iter().find(|r| pred(r)) {
            return r.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no such request: {list}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_grant_to_a_name_opens_what_the_job_resolves_from_it() {
    let cg = TestCgroup::new("dns-grant");
    let state = geowall_tests::TempDir::new("dns-grant-state");
    let server = DnsServer::start();
    let resolv = server.resolv_conf();
    let agent = approvable_agent(&cg, &state);
    let api = Listener::on("127.20.0.10");
    let other = Listener::on("127.20.0.13");
    let probe = geowall_tests::netprobe().display().to_string();
    let job_cmd = dns::with_resolv(
        &resolv,
        None,
        &[
            &probe,
            &format!("resolve:api.partner.test:{}", api.addr.port()),
            &format!("resolve:shared1.test:{}", other.addr.port()),
        ],
    );
    let job = geowall_tests::geowall_cmd("exec", &agent.config)
        .args(["--policy", "eu-only", "--wait-for-approval", "30s"])
        .args([
            "--to",
            "api.partner.test",
            "--for",
            "5m",
            "--reason",
            "partner sync",
            "--",
        ])
        .args(&job_cmd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start geowall exec");
    let request = wait_request(&agent, |r| {
        r["state"] == "pending" && r["to"] == "api.partner.test"
    });
    assert!(request["job"].is_string(), "{request}");
    let id = request["id"].as_u64().unwrap().to_string();
    let out = agent.cli(&["approvals", "approve", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = job.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The name's address is opened by the grant; another US name is not.
    assert_eq!(outcomes(&out), ["ok", "EPERM"]);
    let flow = agent.wait_record("the granted flow", |r| {
        r["dst"] == "127.20.0.10" && r["verdict"] == "allow"
    });
    assert_eq!(flow["reason"], "grant", "{flow}");
    assert_eq!(flow["grant_id"].to_string(), id, "{flow}");
    assert_eq!(flow["names"], serde_json::json!(["api.partner.test"]));
    let opened = agent.wait_record("what the grant opened", |r| {
        r["kind"] == "approval" && r["event"] == "opened"
    });
    assert_eq!(
        opened["addresses"],
        serde_json::json!(["127.20.0.10"]),
        "{opened}"
    );
    assert_eq!(opened["to"], "api.partner.test");
    // The list shows the name and what it opened.
    let granted = wait_request(&agent, |r| {
        r["id"] == id.parse::<u64>().unwrap() && !r["addresses"].is_null()
    });
    assert_eq!(
        granted["addresses"],
        serde_json::json!(["127.20.0.10"]),
        "{granted}"
    );
    let text = String::from_utf8_lossy(&agent.cli(&["approvals", "list"]).stdout).into_owned();
    assert!(text.contains("api.partner.test (127.20.0.10)"), "{text}");
    // Another job, outside the grant's scope, is still refused.
    let again = outcomes(&exec_with_resolv(
        &agent,
        &resolv,
        &[
            &probe,
            &format!("resolve:api.partner.test:{}", api.addr.port()),
        ],
    ));
    assert_eq!(again, ["EPERM"]);
}

#[test]
fn a_denied_address_the_job_resolved_asks_for_its_name() {
    let cg = TestCgroup::new("dns-react");
    let state = geowall_tests::TempDir::new("dns-react-state");
    let server = DnsServer::start();
    let resolv = server.resolv_conf();
    let agent = approvable_agent(&cg, &state);
    let api = Listener::on("127.20.0.10");
    let flag = state.path().join("go");
    let probe = geowall_tests::netprobe().display().to_string();
    // Resolve and connect (denied), wait for the approval, connect again
    // without resolving again.
    let script = format!(
        "{probe} resolve:api.partner.test:{port}; while [ ! -e {flag} ]; do sleep 0.05; done; {probe} tcp:127.20.0.10:{port}",
        port = api.addr.port(),
        flag = flag.display()
    );
    let job_cmd = dns::with_resolv(&resolv, None, &["sh", "-c", &script]);
    let job = geowall_tests::geowall_cmd("exec", &agent.config)
        .args(["--policy", "eu-only", "--"])
        .args(&job_cmd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start geowall exec");
    let request = wait_request(&agent, |r| {
        r["state"] == "pending" && r["origin"] == "reactive"
    });
    assert_eq!(request["to"], "api.partner.test", "{request}");
    assert_eq!(
        request["addresses"],
        serde_json::json!(["127.20.0.10"]),
        "{request}"
    );
    let id = request["id"].as_u64().unwrap().to_string();
    let out = agent.cli(&["approvals", "approve", &id, "--for", "5m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&flag, "").unwrap();
    let out = job.wait_with_output().unwrap();
    assert_eq!(
        outcomes(&out),
        ["EPERM", "ok"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_upgrade_keeps_governed_dns_down_less_than_a_second() {
    let next = geowall_tests::geowall_next();
    let cg = TestCgroup::new("dns-upgrade");
    let server = DnsServer::start();
    let resolv = server.resolv_conf();
    let mut agent = AgentSpec::new(&cg)
        .cidr_map("m.cidr", MAP)
        .config(
            "[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\nallow_names = [\"api.partner.test\"]\n\
             cgroups = [\"/job\"]\n",
        )
        .child_cgroups(&["job"])
        .keep_pins()
        .start();
    let api = Listener::on("127.20.0.10");
    let job = cg.path().join("job");
    let probe = geowall_tests::netprobe().display().to_string();
    let loop_ms = 20_000u64;
    let argv = dns::with_resolv(
        &resolv,
        None,
        &[
            &probe,
            "--cgroup",
            &job.display().to_string(),
            &format!("resolvefor:api.partner.test:{}:{loop_ms}", api.addr.port()),
        ],
    );
    let started = std::time::Instant::now();
    let looping = std::thread::spawn(move || {
        std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .expect("run the loop")
    });
    std::thread::sleep(std::time::Duration::from_millis(1000));
    // A package upgrade: the old agent stops, the new binary starts.
    assert!(agent.terminate().success());
    agent.upgrade_to(&next);
    assert!(
        started.elapsed() + std::time::Duration::from_millis(1000)
            < std::time::Duration::from_millis(loop_ms),
        "the upgrade took longer than the loop ran"
    );
    let out = looping.join().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let longest = v["longest_failure_ms"].as_u64().unwrap();
    eprintln!("governed DNS during the upgrade: {v}");
    assert!(
        longest < 1000,
        "resolve-then-connect failed for {longest} ms: {v}"
    );
    assert!(v["counts"]["ok"].as_u64().unwrap() > 100, "{v}");
    // The forwarder served from the pins before the programs loaded.
    assert!(
        agent.stderr().contains("serving again from the pins"),
        "{}",
        agent.stderr()
    );
}
