//! Just-in-time approvals against the real kernel: a denial opens a
//! request, a second user in the approvers group approves it, the next
//! connect goes through, and the grant ends in the kernel on time even with
//! the agent stopped. Outsiders and requesters cannot approve; every refusal
//! is on the record.

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use geowall_tests::{AgentSpec, Listener, TempDir, TestCgroup, geowall, outcomes, run_probe};
use serde_json::Value;

const MAP: &str = "127.20.0.0/16 US\n127.30.0.0/16 DE\n";

/// A system user and group made for one test, removed on drop.
struct TestUsers {
    group: String,
    users: Vec<String>,
}

impl TestUsers {
    /// Group `gwt<pid><tag>g`, and users `gwt<pid><tag><n>` (the first
    /// `members` of them in the group).
    fn new(tag: &str, count: usize, members: usize) -> TestUsers {
        let base = format!("gwt{}{tag}", std::process::id());
        let group = format!("{base}g");
        let mut made = TestUsers {
            group: group.clone(),
            users: Vec::new(),
        };
        run_ok(Command::new("groupadd").arg(&group));
        for n in 0..count {
            let user = format!("{base}{n}");
            let mut cmd = Command::new("useradd");
            cmd.args(["-M", "-N", "-s", "/usr/sbin/nologin"]);
            if n < members {
                cmd.args(["-G", &group]);
            }
            run_ok(cmd.arg(&user));
            made.users.push(user);
        }
        made
    }
}

impl Drop for TestUsers {
    fn drop(&mut self) {
        for u in &self.users {
            let _ = Command::new("userdel").arg(u).output();
        }
        let _ = Command::new("groupdel").arg(&self.group).output();
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `geowall ARGS… --config CONFIG` as `user` (with their groups).
fn cli_as(user: &str, config: &std::path::Path, args: &[&str]) -> Output {
    let gid = Command::new("id")
        .args(["-g", user])
        .output()
        .expect("id -g");
    let gid = String::from_utf8_lossy(&gid.stdout).trim().to_owned();
    Command::new("setpriv")
        .args(["--reuid", user, "--regid", &gid, "--init-groups", "--"])
        .arg(geowall())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run geowall as a test user")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits (up to 5 s) for a request matching `pred` in `approvals list`.
fn wait_request(agent: &geowall_tests::Agent, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list = agent.cli_json(&["approvals", "list", "--json"]);
        if let Some(r) = list.as_array().and_then(|a| a.iter().find(|r| pred(r))) {
            return r.clone();
        }
        assert!(Instant::now() < deadline, "no such request in {list}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_denial_is_approved_by_another_user_and_the_grant_ends_in_the_kernel() {
    let users = TestUsers::new("a", 2, 1);
    let (approver, outsider) = (&users.users[0], &users.users[1]);
    let state = TempDir::new("approvals-state");
    let cg = TestCgroup::new("approvals");
    let mut agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .child_cgroups(&["work"])
        .keep_pins()
        .config(&format!(
            r#"
[approvals]
state_dir = "{}"
group = "{}"

[[policy]]
name = "eu-only"
allow = ["EU"]
cgroups = ["/work"]
approvable = true
max_grant = "1h"
"#,
            state.path().display(),
            users.group
        ))
        .start();
    let us = Listener::on("127.20.0.1");
    let target = format!("tcp:{}", us.target());
    let work = cg.child("work");

    // A confined job is denied; the denial opens a request.
    assert_eq!(outcomes(&run_probe(Some(&work), &[&target])), ["EPERM"]);
    let port = us.addr.port();
    let request = wait_request(&agent, |r| {
        r["state"] == "pending" && r["to"] == "127.20.0.1/32" && r["port"] == port
    });
    let id_n = request["id"].as_u64().unwrap();
    let id = id_n.to_string();
    assert_eq!(request["policy"], "eu-only");
    assert!(
        request["cgroup"].as_str().unwrap().ends_with("/work"),
        "{request}"
    );
    assert_eq!(request["requested_by"], "root");
    for key in ["reason", "expires", "job"] {
        assert!(request.get(key).is_some(), "{key} missing in {request}");
    }
    // A second denial joins it instead of opening another.
    assert_eq!(outcomes(&run_probe(Some(&work), &[&target])), ["EPERM"]);
    std::thread::sleep(Duration::from_millis(300));
    let list = agent.cli_json(&["approvals", "list", "--pending", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    // Someone outside the approvers group cannot approve, nor see it.
    let out = cli_as(outsider, &agent.config, &["approvals", "approve", &id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&users.group), "{}", stderr(&out));
    let theirs = cli_as(outsider, &agent.config, &["approvals", "list", "--json"]);
    assert_eq!(String::from_utf8_lossy(&theirs.stdout).trim(), "[]");

    // A requester cannot approve their own request.
    let out = cli_as(
        approver,
        &agent.config,
        &[
            "approvals",
            "request",
            "--policy",
            "eu-only",
            "--to",
            "127.20.0.2",
            "--for",
            "10m",
            "--reason",
            "mine",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let own: Value = serde_json::from_slice(&out.stdout).unwrap();
    let own_id = own["id"].as_u64().unwrap().to_string();
    assert_eq!(own["requested_by"], approver.as_str());
    let out = cli_as(approver, &agent.config, &["approvals", "approve", &own_id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("made by you"), "{}", stderr(&out));
    // Longer than the policy allows: the error names the cap.
    let out = cli_as(
        approver,
        &agent.config,
        &["approvals", "approve", &id, "--for", "2h"],
    );
    assert!(
        stderr(&out).contains("max_grant = \"1h\""),
        "{}",
        stderr(&out)
    );

    // Each refusal is on the record, with who asked.
    let refused = agent.wait_records("refusing approvals", 3, |r| {
        r["kind"] == "approval" && r["event"] == "refused"
    });
    assert_eq!(refused[0]["by"]["user"], outsider.as_str());
    assert_eq!(refused[0]["op"], "approval_approve");
    assert_eq!(refused[1]["by"]["user"], approver.as_str());

    // The approver approves for 3 s: the next connect goes through.
    let out = cli_as(
        approver,
        &agent.config,
        &[
            "approvals",
            "approve",
            &id,
            "--for",
            "3s",
            "--reason",
            "one-off copy",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let granted_at = Instant::now();
    assert_eq!(outcomes(&run_probe(Some(&work), &[&target])), ["ok"]);
    let flow = agent.wait_record("of the granted flow", |r| r["reason"] == "grant");
    assert_eq!(flow["verdict"], "allow");
    assert_eq!(flow["grant_id"].to_string(), id);
    assert_eq!(flow["prefix"], "127.20.0.1/32");
    let approved = agent.wait_record("of the approval", |r| r["event"] == "approved");
    assert_eq!(approved["by"]["user"], approver.as_str());
    assert_eq!(approved["request"]["decision_reason"], "one-off copy");
    let status = agent.status();
    assert_eq!(status["status"]["grants"][0]["id"].to_string(), id);
    // Another destination is still denied.
    let other = format!("tcp:127.20.0.3:{port}");
    assert_eq!(outcomes(&run_probe(Some(&work), &[&other])), ["EPERM"]);

    // The agent stops; the kernel ends the grant on time by itself.
    assert!(agent.terminate().success());
    assert_eq!(outcomes(&run_probe(Some(&work), &[&target])), ["ok"]);
    std::thread::sleep(Duration::from_secs(3).saturating_sub(granted_at.elapsed()));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(outcomes(&run_probe(Some(&work), &[&target])), ["EPERM"]);

    // Restarted, the agent finds it expired and writes no grant back.
    agent.restart();
    let list = agent.cli_json(&["approvals", "list", "--json"]);
    let mine = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id_n)
        .cloned()
        .unwrap_or_else(|| panic!("request {id} forgotten: {list}"));
    assert_eq!(mine["state"], "expired", "{mine}");
    assert_eq!(agent.status()["status"]["grants"], serde_json::json!([]));
    assert_eq!(outcomes(&run_probe(Some(&work), &[&target])), ["EPERM"]);
}

#[test]
fn a_grant_survives_a_restart_and_revoke_ends_it() {
    let state = TempDir::new("approvals-state");
    let cg = TestCgroup::new("approvals-restart");
    let mut agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .child_cgroups(&["work"])
        .config(&format!(
            r#"
[approvals]
state_dir = "{}"

[[policy]]
name = "eu-only"
allow = ["EU"]
cgroups = ["/work"]
approvable = true

[[policy]]
name = "strict"
allow = ["EU"]
"#,
            state.path().display()
        ))
        .start();
    let us = Listener::on("127.20.0.1");
    let target = format!("tcp:{}", us.target());
    let work = cg.child("work");
    // A policy that is not approvable takes no requests.
    let out = agent.cli(&[
        "approvals",
        "request",
        "--policy",
        "strict",
        "--to",
        "127.20.0.1",
        "--for",
        "1h",
        "--reason",
        "x",
    ]);
    assert!(stderr(&out).contains("not approvable"), "{}", stderr(&out));
    // A proactive request for the whole policy, one port, a /24.
    let port = us.addr.port().to_string();
    let request = agent.cli_json(&[
        "approvals",
        "request",
        "--policy",
        "eu-only",
        "--to",
        "127.20.0.0/24",
        "--port",
        &port,
        "--for",
        "1h",
        "--reason",
        "dataset copy",
        "--json",
    ]);
    let id = request["id"].as_u64().unwrap().to_string();
    assert_eq!(request["state"], "pending");
    assert_eq!(outcomes(&run_probe(Some(&work), &[&target])), ["EPERM"]);
    let out = agent.cli(&["approvals", "approve", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(outcomes(&run_probe(Some(&work), &[&target])), ["ok"]);
    // Another port of the same host is not granted.
    let other_port = format!("tcp:127.20.0.1:{}", us.addr.port().wrapping_add(1).max(1));
    assert_eq!(outcomes(&run_probe(Some(&work), &[&other_port])), ["EPERM"]);

    // Restarted (pins removed, everything written again), the grant holds.
    assert!(agent.terminate().success());
    agent.restart();
    assert_eq!(outcomes(&run_probe(Some(&work), &[&target])), ["ok"]);
    agent.wait_record("of the restored grant", |r| r["event"] == "restored");

    let out = agent.cli(&["approvals", "revoke", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(outcomes(&run_probe(Some(&work), &[&target])), ["EPERM"]);
    agent.wait_record("of the revocation", |r| r["event"] == "revoked");
}

#[test]
fn exec_waits_for_approval_and_runs_only_when_approved() {
    let state = TempDir::new("approvals-state");
    let cg = TestCgroup::new("approvals-exec");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(&format!(
            r#"
[approvals]
state_dir = "{}"

[[policy]]
name = "eu-only"
allow = ["EU"]
approvable = true
"#,
            state.path().display()
        ))
        .start();
    let us = Listener::on("127.20.0.1");
    let target = format!("tcp:{}", us.target());
    let port = us.addr.port().to_string();
    let spawn = |wait: &str| {
        geowall_tests::geowall_cmd("exec", &agent.config)
            .args(["--policy", "eu-only", "--wait-for-approval", wait])
            .args(["--to", "127.20.0.1", "--port", &port, "--for", "5m"])
            .args(["--reason", "nightly copy", "--"])
            .arg(geowall_tests::netprobe())
            .arg(&target)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start geowall exec")
    };
    let pending_job = |agent: &geowall_tests::Agent| {
        wait_request(agent, |r| {
            r["state"] == "pending" && r["job"].is_string() && r["reason"] == "nightly copy"
        })
    };

    // Approved: the job runs, and its connect is granted (to it alone).
    let job = spawn("30s");
    let request = pending_job(&agent);
    let id = request["id"].as_u64().unwrap().to_string();
    assert!(agent.cli(&["approvals", "approve", &id]).status.success());
    let out = job.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(outcomes(&out), ["ok"]);
    let flow = agent.wait_record("of the granted flow", |r| r["reason"] == "grant");
    assert_eq!(flow["job"], request["job"]);
    assert_eq!(
        outcomes(&agent.exec_probe("eu-only", &[&target])),
        ["EPERM"]
    );

    // Denied: the command never runs.
    let job = spawn("30s");
    let id = pending_job(&agent)["id"].as_u64().unwrap().to_string();
    let out = agent.cli(&["approvals", "deny", &id, "--reason", "not today"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = job.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(123), "{}", stderr(&out));
    assert!(stderr(&out).contains("denied"), "{}", stderr(&out));
    assert!(stderr(&out).contains("not today"), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "the command ran");

    // Nobody answers: it gives up in time.
    let started = Instant::now();
    let out = spawn("1s").wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(stderr(&out).contains("nobody approved"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(out.stdout.is_empty(), "the command ran");
}

/// A local HTTP server that records the JSON bodies POSTed to it.
struct HookServer {
    port: u16,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl HookServer {
    fn start() -> HookServer {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&bodies);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_ok()
                    && let Ok(v) = serde_json::from_slice(&body)
                {
                    seen.lock().unwrap().push(v);
                }
                let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
            }
        });
        HookServer { port, bodies }
    }

    /// Waits (up to 5 s) for `count` bodies.
    fn wait(&self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let bodies = self.bodies.lock().unwrap().clone();
            if bodies.len() >= count || Instant::now() > deadline {
                return bodies;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn webhook_agent<'a>(cg: &'a TestCgroup, state: &TempDir, webhook: &str) -> AgentSpec<'a> {
    AgentSpec::new(cg)
        .cidr_map("test.cidr", MAP)
        .config(&format!(
            r#"
[approvals]
state_dir = "{}"
webhook = "{webhook}"

[[policy]]
name = "eu-only"
allow = ["EU"]
approvable = true
"#,
            state.path().display()
        ))
}

fn file_request(agent: &geowall_tests::Agent, to: &str) -> String {
    let r = agent.cli_json(&[
        "approvals",
        "request",
        "--policy",
        "eu-only",
        "--to",
        to,
        "--for",
        "10m",
        "--reason",
        "webhook test",
        "--json",
    ]);
    r["id"].as_u64().unwrap().to_string()
}

#[test]
fn the_webhook_hears_of_every_request_and_decision() {
    let hook = HookServer::start();
    let state = TempDir::new("approvals-state");
    let cg = TestCgroup::new("approvals-hook");
    let agent = webhook_agent(
        &cg,
        &state,
        &format!("http://127.0.0.1:{}/hooks/geowall", hook.port),
    )
    .start();
    let first = file_request(&agent, "127.20.0.1");
    let second = file_request(&agent, "127.20.0.2");
    assert!(
        agent
            .cli(&["approvals", "approve", &first])
            .status
            .success()
    );
    assert!(agent.cli(&["approvals", "deny", &second]).status.success());
    assert!(agent.cli(&["approvals", "revoke", &first]).status.success());
    let bodies = hook.wait(5);
    let events: Vec<(String, String)> = bodies
        .iter()
        .map(|b| {
            (
                b["event"].as_str().unwrap().to_owned(),
                b["request"]["id"].to_string(),
            )
        })
        .collect();
    let want = |e: &str, id: &str| (e.to_owned(), id.to_owned());
    assert_eq!(
        events,
        [
            want("requested", &first),
            want("requested", &second),
            want("approved", &first),
            want("denied", &second),
            want("revoked", &first),
        ]
    );
    assert_eq!(bodies[2]["by"]["user"], "root");
    assert_eq!(bodies[0]["request"]["to"], "127.20.0.1/32");
}

#[test]
fn a_dead_webhook_does_not_slow_decisions() {
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let state = TempDir::new("approvals-state");
    let cg = TestCgroup::new("approvals-deadhook");
    let agent = webhook_agent(&cg, &state, &format!("http://127.0.0.1:{port}/")).start();
    let us = Listener::on("127.20.0.1");
    let target = format!("tcp:{}", us.target());
    let started = Instant::now();
    let ids: Vec<String> = (1..=3)
        .map(|n| file_request(&agent, &format!("127.20.0.{n}")))
        .collect();
    assert!(
        agent
            .cli(&["approvals", "approve", &ids[0]])
            .status
            .success()
    );
    assert!(agent.cli(&["approvals", "deny", &ids[1]]).status.success());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "decisions took {:?} with a dead webhook",
        started.elapsed()
    );
    // Enforcement goes on: the grant works, the rest is denied.
    assert_eq!(outcomes(&agent.exec_probe("eu-only", &[&target])), ["ok"]);
    let other = format!("tcp:127.20.0.3:{}", us.addr.port());
    assert_eq!(outcomes(&agent.exec_probe("eu-only", &[&other])), ["EPERM"]);
    drop(silent);
}

/// The map of the region tests: `US` and `JP` are denied to `eu-only`.
const REGION_MAP: &str = "127.20.0.0/16 US\n127.30.0.0/16 DE\n127.40.0.0/16 JP\n";

/// Rewrites the agent's `test.cidr` and waits for the table switch that
/// loads it.
fn reload_map(agent: &geowall_tests::Agent, content: &str) {
    let before = agent.epoch();
    let map = agent.config.parent().unwrap().join("test.cidr");
    std::fs::write(&map, content).unwrap();
    agent.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.epoch() <= before {
        assert!(
            Instant::now() < deadline,
            "the map was not reloaded:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_region_grant_opens_the_region_and_follows_it_across_a_map_reload() {
    let state = TempDir::new("approvals-state");
    let cg = TestCgroup::new("approvals-region");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", REGION_MAP)
        .child_cgroups(&["work"])
        .config(&format!(
            r#"
[approvals]
state_dir = "{}"

[[policy]]
name = "eu-only"
allow = ["EU"]
cgroups = ["/work"]
rules = ["127.20.9.0/24 deny"]
approvable = true
"#,
            state.path().display()
        ))
        .start();
    let work = cg.child("work");
    let us = Listener::on("127.20.0.1");
    let port = us.addr.port();
    let at = |ip: &str| format!("tcp:{ip}:{port}");
    // Listeners on the same port at every address probed (connect completes
    // on the backlog).
    let listen = |ip: &str| std::net::TcpListener::bind((ip, port)).unwrap();
    let _others: Vec<_> = [
        "127.20.200.7",
        "127.20.9.1",
        "127.40.0.1",
        "127.30.0.1",
        "127.25.3.4",
        "127.10.0.1",
    ]
    .into_iter()
    .map(listen)
    .collect();
    let probe = |ip: &str| outcomes(&run_probe(Some(&work), &[&at(ip)])).join(",");
    assert_eq!(probe("127.20.0.1"), "EPERM");

    // Names are checked as policies check them.
    let out = agent.cli(&[
        "approvals",
        "request",
        "--policy",
        "eu-only",
        "--to",
        "Japan",
        "--for",
        "1h",
        "--reason",
        "x",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("did you mean 'JP'"),
        "{}",
        stderr(&out)
    );

    let request = agent.cli_json(&[
        "approvals",
        "request",
        "--policy",
        "eu-only",
        "--to",
        "us",
        "--for",
        "1h",
        "--reason",
        "US dataset",
        "--json",
    ]);
    assert_eq!(request["to"], "US");
    assert_eq!(request["regions"], serde_json::json!(["US"]));
    let id = request["id"].as_u64().unwrap();
    assert_eq!(probe("127.20.0.1"), "EPERM", "granted before approval");
    let out = agent.cli(&["approvals", "approve", &id.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Every address of the region passes, even one a rule denies; the
    // records name the grant and the region's range.
    assert_eq!(probe("127.20.0.1"), "ok");
    assert_eq!(probe("127.20.200.7"), "ok");
    assert_eq!(probe("127.20.9.1"), "ok");
    let flows = agent.wait_records("of the granted flows", 3, |r| r["reason"] == "grant");
    for flow in &flows {
        assert_eq!(flow["verdict"], "allow", "{flow}");
        assert_eq!(flow["grant_id"], id, "{flow}");
        assert_eq!(flow["tags"], serde_json::json!(["US"]), "{flow}");
        assert_eq!(flow["prefix"], "127.20.0.0/16", "{flow}");
    }
    // Another denied region stays denied; an allowed one was never a grant.
    assert_eq!(probe("127.40.0.1"), "EPERM");
    assert_eq!(probe("127.30.0.1"), "ok");
    std::thread::sleep(Duration::from_millis(300));
    let granted = agent
        .records()
        .into_iter()
        .filter(|r| r["reason"] == "grant")
        .count();
    assert_eq!(granted, 3, "an allowed flow was recorded as granted");

    // A new map moves US elsewhere and brings regions of its own (new
    // region ids): the grant follows the region, not its old ranges.
    reload_map(
        &agent,
        "127.10.0.0/16 BR\n127.11.0.0/16 CA\n127.20.0.0/16 JP\n127.25.0.0/16 US\n\
         127.30.0.0/16 DE\n127.40.0.0/16 JP\n",
    );
    assert_eq!(probe("127.25.3.4"), "ok");
    assert_eq!(probe("127.20.0.1"), "EPERM");
    assert_eq!(probe("127.10.0.1"), "EPERM");
    let moved = agent.wait_record("of a flow to the moved region", |r| {
        r["reason"] == "grant" && r["dst"] == "127.25.3.4"
    });
    assert_eq!(moved["prefix"], "127.25.0.0/16");
    // The status lists the grant with its regions.
    let status = agent.status();
    assert_eq!(status["status"]["grants"][0]["to"], "US", "{status}");

    // Revoked: denied again.
    let out = agent.cli(&["approvals", "revoke", &id.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(probe("127.25.3.4"), "EPERM");
    assert_eq!(probe("127.20.9.1"), "EPERM");

    // A group stands for its regions; a job-less policy grant to a region
    // for one port covers that port only.
    let request = agent.cli_json(&[
        "approvals",
        "request",
        "--policy",
        "eu-only",
        "--to",
        "North-America",
        "--port",
        &port.to_string(),
        "--for",
        "1h",
        "--reason",
        "NA",
        "--json",
    ]);
    let regions = request["regions"].as_array().unwrap();
    assert!(regions.contains(&serde_json::json!("US")), "{request}");
    assert!(regions.contains(&serde_json::json!("CA")), "{request}");
    let id = request["id"].as_u64().unwrap().to_string();
    assert!(agent.cli(&["approvals", "approve", &id]).status.success());
    assert_eq!(probe("127.25.3.4"), "ok");
    let other_port = format!("tcp:127.25.3.4:{}", port.wrapping_add(1).max(1));
    assert_eq!(outcomes(&run_probe(Some(&work), &[&other_port])), ["EPERM"]);
    assert_eq!(probe("127.10.0.1"), "EPERM");
}

#[test]
fn cgroup_grants_cover_the_sub_cgroups_of_the_bound_cgroup() {
    let state = TempDir::new("approvals-state");
    let cg = TestCgroup::new("approvals-subcg");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .child_cgroups(&["work/a", "work/b", "other"])
        .config(&format!(
            r#"
[approvals]
state_dir = "{}"

[[policy]]
name = "eu-only"
allow = ["EU"]
cgroups = ["/work", "/other"]
approvable = true
"#,
            state.path().display()
        ))
        .start();
    let us = Listener::on("127.20.0.1");
    let target = format!("tcp:{}", us.target());

    // A denial in a sub-cgroup opens a request for the bound cgroup.
    assert_eq!(
        outcomes(&run_probe(Some(&cg.child("work/a")), &[&target])),
        ["EPERM"]
    );
    let request = wait_request(&agent, |r| r["state"] == "pending");
    assert!(
        request["cgroup"].as_str().unwrap().ends_with("/work"),
        "{request}"
    );
    let id = request["id"].as_u64().unwrap();
    assert!(
        agent
            .cli(&["approvals", "approve", &id.to_string()])
            .status
            .success()
    );
    // Every process below it passes; another bound cgroup does not.
    for sub in ["work/a", "work/b", "work"] {
        assert_eq!(
            outcomes(&run_probe(Some(&cg.child(sub)), &[&target])),
            ["ok"],
            "{sub}"
        );
    }
    assert_eq!(
        outcomes(&run_probe(Some(&cg.child("other")), &[&target])),
        ["EPERM"]
    );

    // A job-scoped grant covers a process the job puts in a sub-cgroup of
    // its own; another job of the same policy stays denied.
    let mount = cg.path().parent().unwrap().display().to_string();
    let script = format!(
        "d={mount}$(sed -n 's/^0:://p' /proc/self/cgroup)/sub && mkdir \"$d\" && \
         {probe} --cgroup \"$d\" {target}; rc=$?; rmdir \"$d\"; exit $rc",
        probe = geowall_tests::netprobe().display(),
    );
    let port = us.addr.port().to_string();
    let job = geowall_tests::geowall_cmd("exec", &agent.config)
        .args(["--policy", "eu-only", "--wait-for-approval", "30s"])
        .args(["--to", "127.20.0.1", "--port", &port, "--for", "5m"])
        .args(["--reason", "sub-cgroup job", "--", "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start geowall exec");
    let request = wait_request(&agent, |r| {
        r["state"] == "pending" && r["reason"] == "sub-cgroup job"
    });
    let id = request["id"].as_u64().unwrap().to_string();
    assert!(agent.cli(&["approvals", "approve", &id]).status.success());
    let out = job.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(outcomes(&out), ["ok"]);
    let id_n = request["id"].as_u64().unwrap();
    let flow = agent.wait_record("of the sub-cgroup's granted flow", |r| {
        r["reason"] == "grant" && r["grant_id"] == id_n
    });
    // The connect came from the sub-cgroup, not the job's own cgroup (the
    // sub-cgroup may be gone before the agent names it).
    assert_ne!(flow["cgroup"], request["cgroup"], "{flow}");
    assert!(flow["cgroup"].is_string(), "{flow}");
    assert_eq!(
        outcomes(&agent.exec_probe("eu-only", &[&target])),
        ["EPERM"]
    );
}

#[test]
fn a_webhook_that_fails_is_on_the_record_and_in_the_status() {
    // A port nobody listens on: each attempt is refused at once.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hook");
    let state = TempDir::new("approvals-state");
    let cg = TestCgroup::new("approvals-hookfail");
    let agent = webhook_agent(&cg, &state, &url).start();
    let us = Listener::on("127.20.0.1");
    let target = format!("tcp:{}", us.target());
    let status = agent.status();
    assert_eq!(status["status"]["webhook"]["url"], url.as_str());
    assert_eq!(status["status"]["webhook"]["failures"], 0);

    let started = Instant::now();
    let id = file_request(&agent, "127.20.0.1");
    assert!(agent.cli(&["approvals", "approve", &id]).status.success());
    assert_eq!(outcomes(&agent.exec_probe("eu-only", &[&target])), ["ok"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "decisions took {:?} with a failing webhook",
        started.elapsed()
    );

    let failed = agent.wait_records("of the failed notifications", 2, |r| {
        r["kind"] == "webhook_failed"
    });
    let want_id: u64 = id.parse().unwrap();
    for (record, event) in failed.iter().zip(["requested", "approved"]) {
        assert_eq!(record["url"], url.as_str(), "{record}");
        assert_eq!(record["event"], event, "{record}");
        assert_eq!(record["request_id"], want_id, "{record}");
        assert_eq!(record["attempts"], 4, "{record}");
        assert!(
            record["error"].as_str().unwrap().contains("refused"),
            "{record}"
        );
    }
    let status = agent.status();
    let hook = &status["status"]["webhook"];
    assert_eq!(hook["failures"], 2, "{status}");
    assert_eq!(hook["last_failure"]["event"], "approved", "{status}");
    let text = agent.cli(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("webhook {url}: 2 notifications given up")),
        "{text}"
    );
    assert!(text.contains("approved of request"), "{text}");
}
