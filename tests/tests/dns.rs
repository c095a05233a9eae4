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
    let _ = outcomes;
}
