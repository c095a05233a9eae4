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
