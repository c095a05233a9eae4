//! Policies against the real kernel: many jobs under different policies at
//! once, inheritance, bindings by unit and by default, sockets that change
//! hands, ping sockets, and `policy explain` agreeing with the kernel.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use geowall_tests::{
    AgentSpec, TestCgroup, UsDe, netprobe, outcomes, repo_path, run_probe, workspace_data,
};
use serde_json::Value;

const MAP: &str = "\
127.20.0.0/16 US
127.30.0.0/16 DE
";

const TWO_POLICIES: &str = r#"
[[policy]]
name = "eu-only"
allow = ["EU"]

[[policy]]
name = "us-only"
rules = ["127.30.0.0/16 tcp/1-1023 allow"]
allow = ["US"]
"#;

#[test]
fn two_jobs_under_different_policies_at_the_same_time() {
    let cg = TestCgroup::new("two-jobs");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(TWO_POLICIES)
        .start();
    let t = UsDe::new();
    // Both jobs run side by side: each connects to US and DE ten times.
    let ops: Vec<String> = (0..10).flat_map(|_| t.ops("tcp")).collect();
    let spawn = |policy: &str| {
        let mut cmd = geowall_tests::geowall_cmd("exec", &agent.config);
        cmd.args(["--policy", policy, "--"])
            .arg(netprobe())
            .args(&ops)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().expect("start job")
    };
    let eu = spawn("eu-only");
    let us = spawn("us-only");
    let eu = outcomes(&eu.wait_with_output().unwrap());
    let us = outcomes(&us.wait_with_output().unwrap());
    let want = |a: &str, b: &str| -> Vec<String> {
        (0..10)
            .flat_map(|_| [a.to_string(), b.to_string()])
            .collect()
    };
    assert_eq!(eu, want("EPERM", "ok"), "eu-only: US refused, DE allowed");
    assert_eq!(us, want("ok", "EPERM"), "us-only: US allowed, DE refused");
    // The rule of us-only opens DE below port 1024 only.
    let low = agent.exec_probe("us-only", &["tcp:127.30.0.1:80"]);
    assert_eq!(outcomes(&low), ["ECONNREFUSED"], "rule opens DE tcp/80");
}

#[test]
fn nested_cgroups_inherit_the_nearest_policy() {
    let cg = TestCgroup::new("nested");
    let _agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(
            r#"
[[policy]]
name = "eu-only"
allow = ["EU"]
cgroups = ["/outer"]

[[policy]]
name = "us-only"
allow = ["US"]
cgroups = ["/outer/middle/us"]
"#,
        )
        .child_cgroups(&["outer/middle/deep/leaf", "outer/middle/us/leaf"])
        .start();
    let t = UsDe::new();
    let deep = run_probe(
        Some(&cg.path().join("outer/middle/deep/leaf")),
        &t.ops("tcp"),
    );
    assert_eq!(
        outcomes(&deep),
        ["EPERM", "ok"],
        "three levels below eu-only"
    );
    let us = run_probe(Some(&cg.path().join("outer/middle/us/leaf")), &t.ops("tcp"));
    assert_eq!(
        outcomes(&us),
        ["ok", "EPERM"],
        "below us-only, nearest wins"
    );
    let free = run_probe(Some(&cg.child("free")), &t.ops("tcp"));
    assert_eq!(outcomes(&free), ["ok", "ok"], "outside every binding");
}

#[test]
fn a_passed_socket_is_judged_by_both_policies_and_the_stricter_wins() {
    let cg = TestCgroup::new("passfd");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(
            r#"
[[policy]]
name = "eu-only"
allow = ["EU"]
cgroups = ["/confined"]
"#,
        )
        .child_cgroups(&["confined", "confined/a", "confined/a/b", "free"])
        .start();
    let t = UsDe::new();
    let confined = cg.path().join("confined");
    let nested = cg.path().join("confined/a/b");
    let free = cg.path().join("free");
    let dir = geowall_tests::TempDir::new("passfd");
    // Each case: (receiver's cgroup, sender's cgroup, destination) → outcome.
    let cases = [
        // An unconfined socket handed to a confined job: the job's policy.
        (&confined, &free, t.us.target(), "EPERM"),
        (&confined, &free, t.de.target(), "ok"),
        // A confined job's socket handed out: it keeps its policy.
        (&free, &confined, t.us.target(), "EPERM"),
        (&free, &confined, t.de.target(), "ok"),
        // Created two levels below the bound cgroup: still its policy.
        (&free, &nested, t.us.target(), "EPERM"),
        (&free, &nested, t.de.target(), "ok"),
        // Neither side governed.
        (&free, &free, t.us.target(), "ok"),
    ];
    for (i, (recv_cg, send_cg, target, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("s{i}"));
        let path = path.display().to_string();
        let receiver = Command::new(netprobe())
            .arg("--cgroup")
            .arg(recv_cg)
            .arg(format!("fdrecv:{path}:{target}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start receiver");
        let sent = run_probe(Some(send_cg), &[format!("fdsend:{path}:4")]);
        assert_eq!(outcomes(&sent), ["ok"], "case {i}: send");
        let got = outcomes(&receiver.wait_with_output().unwrap());
        assert_eq!(got, [*want], "case {i}: connect to {target}");
    }
    // The record says the socket's policy decided.
    let rec = agent.wait_record("a denial by the socket's policy", |r| {
        r["verdict"] == "deny" && r["policy_from"] == "socket"
    });
    assert_eq!(rec["policy"], "eu-only");
    // A job that moves out of its cgroup after creating a socket.
    let moved = run_probe(
        Some(&confined),
        &[format!("movetcp:{}:{}", free.display(), t.us.target())],
    );
    assert_eq!(
        outcomes(&moved),
        ["EPERM"],
        "a moved owner keeps the policy"
    );
}

#[test]
fn ping_and_raw_sockets_are_refused_unless_allowed() {
    let cg = TestCgroup::new("ping");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(
            r#"
[[policy]]
name = "strict"
allow = ["EU"]

[[policy]]
name = "pingable"
allow = ["EU"]
ping = "allow"
"#,
        )
        .start();
    let ops = ["--netns", "ping4", "ping6", "raw4"];
    let strict = outcomes(&agent.exec_probe("strict", &ops));
    assert_eq!(strict, ["EPERM", "EPERM", "EPERM"]);
    // Ping allowed; raw sockets still not (and exec drops CAP_NET_RAW).
    let pingable = outcomes(&agent.exec_probe("pingable", &ops));
    assert_eq!(pingable[..2], ["ok", "ok"]);
    assert_ne!(pingable[2], "ok");
    let rec = agent.wait_record("ping refusal", |r| {
        r["verdict"] == "deny" && r["reason"] == "socket_type" && r["proto"] == "icmp"
    });
    assert_eq!(rec["policy"], "strict");
}

#[test]
fn units_and_the_default_policy_bind_cgroups_that_appear_later() {
    let cg = TestCgroup::new("units");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .agent_keys("default_policy = \"watch\"")
        .config(
            r#"
[[policy]]
name = "eu-only"
allow = ["EU"]
unit = ["executor@*.service", "batch.scope"]

[[policy]]
name = "watch"
mode = "audit"
allow = ["EU"]
"#,
        )
        .start();
    let t = UsDe::new();
    // Unbound cgroups fall under the default (audit): nothing blocked,
    // the US connect recorded as would_deny.
    let other = cg.child("system.slice/other.service");
    assert_eq!(
        outcomes(&run_probe(Some(&other), &t.ops("tcp"))),
        ["ok", "ok"]
    );
    agent.wait_record("default policy would_deny", |r| {
        r["verdict"] == "would_deny" && r["policy"] == "watch"
    });
    // A unit that starts after the agent: bound within a scan period.
    let unit = cg.child("system.slice/executor@7.service");
    wait_until_bound(&agent, "executor@7.service");
    assert_eq!(
        outcomes(&run_probe(Some(&unit), &t.ops("tcp"))),
        ["EPERM", "ok"]
    );
    // The template's slice is bound too: an instance that appears in it is
    // governed from its first connect, before any scan.
    let slice = cg.child("system.slice/system-executor.slice");
    wait_until_bound(&agent, "system-executor.slice");
    // A name no unit glob matches: only the slice's binding governs it.
    let inst = slice.join("helper.scope");
    std::fs::create_dir(&inst).unwrap();
    assert_eq!(
        outcomes(&run_probe(Some(&inst), &t.ops("tcp"))),
        ["EPERM", "ok"]
    );
    let scope = cg.child("user.slice/batch.scope");
    wait_until_bound(&agent, "batch.scope");
    assert_eq!(
        outcomes(&run_probe(Some(&scope), &t.ops("tcp"))),
        ["EPERM", "ok"]
    );
    assert_eq!(
        agent.policy_status("eu-only")["units"],
        serde_json::json!(["executor@*.service", "batch.scope"])
    );
    assert_eq!(agent.policy_status("watch")["default"], true);
}

/// Waits until `geowall status` lists a cgroup ending in `name`.
fn wait_until_bound(agent: &geowall_tests::Agent, name: &str) {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let status = agent.status();
        let bound = status["status"]["policies"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["cgroups"].as_array().cloned().unwrap_or_default())
            .any(|c| c.as_str().is_some_and(|c| c.ends_with(name)));
        if bound {
            return;
        }
        assert!(
            Instant::now() < until,
            "{name} not bound within 5 s: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A reproducible stream of pseudo-random numbers (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// AWS prefixes of the real ip-ranges.json in ../shared/data (not
/// redistributable, so not in the repo), else of the repo's own fixture.
fn aws_source() -> std::path::PathBuf {
    let shared = repo_path("../shared/data/cloud/aws-ip-ranges.2025-07-24.json");
    if shared.exists() {
        return shared;
    }
    eprintln!(
        "note: {} is absent: using the repo's AWS fixture",
        shared.display()
    );
    workspace_data("cloud/aws-fixture.json")
}

/// Random destinations: public-looking IPv4 and IPv6 addresses, and
/// addresses inside the AWS file's EU prefixes (so the cloud policy sees
/// both verdicts).
fn destinations(seed: u64, count: usize, aws: &std::path::Path) -> Vec<IpAddr> {
    let mut rng = Rng(seed);
    let json: Value = serde_json::from_slice(&std::fs::read(aws).unwrap()).unwrap();
    let eu_v4: Vec<(u32, u32)> = json["prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["region"].as_str().is_some_and(|r| r.starts_with("eu-")))
        .filter_map(|p| {
            let (a, l) = p["ip_prefix"].as_str()?.split_once('/')?;
            let a: std::net::Ipv4Addr = a.parse().ok()?;
            Some((u32::from(a), l.parse().ok()?))
        })
        .collect();
    let mut out = BTreeSet::new();
    while out.len() < count {
        let r = rng.next();
        let addr = match r % 10 {
            0..=5 => {
                let a = (r >> 8) as u32;
                // Skip 0/8, 127/8 and 224/3: not judged like destinations.
                if matches!(a >> 24, 0 | 127 | 224..=255) {
                    continue;
                }
                IpAddr::from(a.to_be_bytes())
            }
            6..=7 => {
                let (base, len) = eu_v4[(r >> 8) as usize % eu_v4.len()];
                let host = (rng.next() as u32) & (u32::MAX.checked_shr(len).unwrap_or(0));
                IpAddr::from((base | host).to_be_bytes())
            }
            _ => {
                // Global unicast 2000::/3.
                let hi = (0x2000u128 | (rng.next() as u128 & 0x1fff)) << 112;
                let lo = (u128::from(rng.next()) << 48) ^ u128::from(rng.next());
                IpAddr::from((hi | (lo & ((1u128 << 112) - 1))).to_be_bytes())
            }
        };
        out.insert(addr);
    }
    out.into_iter().collect()
}

fn target(a: &IpAddr) -> String {
    match a {
        IpAddr::V4(v4) => format!("{v4}:443"),
        IpAddr::V6(v6) => format!("[{v6}]:443"),
    }
}

#[test]
fn policy_explain_agrees_with_the_kernel_for_every_shipped_policy() {
    let cg = TestCgroup::new("explain");
    let aws = aws_source();
    let agent = AgentSpec::new(&cg)
        .agent_keys(&format!(
            "policy_dir = \"{}\"",
            repo_path("policies").display()
        ))
        .config(&format!(
            "[[maps]]\nkind = \"builtin\"\n\n[[maps]]\nkind = \"aws\"\npath = \"{}\"\n",
            aws.display()
        ))
        .start();
    let policies = [
        "eu-only",
        "eea-plus-ch",
        "us-only",
        "aws-eu-regions",
        "audit-everything",
    ];
    for (n, policy) in policies.iter().enumerate() {
        let dests = destinations(0x9e37_79b9_7f4a_7c15 + n as u64, 1000, &aws);
        let targets: Vec<String> = dests.iter().map(target).collect();
        // What the kernel does, from a namespace with no route out.
        let mut args = vec!["--netns".to_string()];
        args.extend(targets.iter().map(|t| format!("tcp:{t}")));
        let kernel = outcomes(&agent.exec_probe(policy, &args));
        // What explain says.
        let mut cli = vec!["policy", "explain", "--json", "--policy", policy];
        cli.extend(targets.iter().map(String::as_str));
        let out = agent.cli(&cli);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let explained: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(explained.len(), dests.len());
        let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
        for ((d, k), e) in dests.iter().zip(&kernel).zip(&explained) {
            let verdict = e["verdict"].as_str().unwrap();
            *verdicts.entry(verdict.to_owned()).or_default() += 1;
            assert!(e["tables"].as_str().unwrap().starts_with("kernel"), "{e}");
            let want = if verdict == "deny" {
                "EPERM"
            } else {
                "ENETUNREACH"
            };
            assert_eq!(k, want, "{policy}: {d}: kernel {k}, explain {e}");
        }
        // Each verdict occurs: the sample exercises both sides.
        let denied = verdicts.get("deny").or(verdicts.get("would_deny"));
        assert!(
            denied.is_some_and(|n| *n > 0) && verdicts.get("allow").is_some_and(|n| *n > 0),
            "{policy}: {verdicts:?}"
        );
        if *policy == "audit-everything" {
            // Audit mode blocks nothing; the log names each would_deny.
            let want: BTreeSet<String> = dests
                .iter()
                .zip(&explained)
                .filter(|(_, e)| e["verdict"] == "would_deny")
                .map(|(d, _)| d.to_string())
                .collect();
            let recs = agent.wait_records("would_deny records", want.len(), |r| {
                r["policy"] == "audit-everything" && r["verdict"] == "would_deny"
            });
            let got: BTreeSet<String> = recs
                .iter()
                .map(|r| r["dst"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(got, want, "would_deny records = explain's would_deny");
        }
    }
}

#[test]
fn a_confined_job_cannot_touch_geowall_or_leave_its_cgroup() {
    let cg = TestCgroup::new("selfprot");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\n")
        .child_cgroups(&["outside"])
        .start();
    let t = UsDe::new();
    let link = agent.bpffs.join("links/gw_connect4");
    // The pinned maps live in a folder named after the ABI version.
    let map = std::fs::read_dir(&agent.bpffs)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("maps/GW_BINDINGS"))
        .find(|p| p.exists())
        .expect("pinned GW_BINDINGS");
    let outside = cg.path().join("outside");
    // The job drops to an unprivileged user, as an operator's jobs run.
    let mut cmd = vec![
        "setpriv".to_string(),
        "--reuid=65534".into(),
        "--regid=65534".into(),
        "--clear-groups".into(),
        "--inh-caps=-all".into(),
        "--bounding-set=-all".into(),
        netprobe().display().to_string(),
        format!("objget:{}", link.display()),
        format!("objget:{}", map.display()),
        format!("unpin:{}", link.display()),
        format!("joincg:{}", outside.display()),
        format!("joincg:{}", cg.path().display()),
    ];
    cmd.extend(t.ops("tcp"));
    let out = agent.exec("eu-only", &cmd);
    let got = outcomes(&out);
    assert_eq!(got.len(), 7, "{}", String::from_utf8_lossy(&out.stderr));
    for (op, result) in [
        "objget link",
        "objget map",
        "unpin",
        "join outside",
        "join governed",
    ]
    .iter()
    .zip(&got)
    {
        assert!(
            result == "EPERM" || result == "EACCES" || result.contains("denied"),
            "{op}: {result}"
        );
    }
    assert_eq!(got[5..], ["EPERM", "ok"], "still confined afterwards");
    assert!(link.exists(), "the pin is still there");
}

#[test]
fn programs_detached_from_outside_are_attached_again() {
    use std::os::fd::AsFd;
    let cg = TestCgroup::new("repair");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\ncgroups = [\"/job\"]\n")
        .child_cgroups(&["job"])
        .start();
    let t = UsDe::new();
    let job = cg.path().join("job");
    assert_eq!(
        outcomes(&run_probe(Some(&job), &t.ops("tcp"))),
        ["EPERM", "ok"]
    );
    // Someone with CAP_BPF detaches the connect4 link.
    let link = geowall::kernel::sys::obj_get(&agent.bpffs.join("links/gw_connect4")).unwrap();
    geowall::kernel::sys::link_detach(link.as_fd()).unwrap();
    drop(link);
    let rec = agent.wait_record_for("a reattached record", Duration::from_secs(6), |r| {
        r["kind"] == "agent" && r["event"] == "reattached"
    });
    assert_eq!(rec["programs"], serde_json::json!(["gw_connect4"]));
    assert_eq!(
        outcomes(&run_probe(Some(&job), &t.ops("tcp"))),
        ["EPERM", "ok"]
    );
    assert!(agent.stderr().contains("attached again"), "logged");
}
