//! What a user sees from the CLI: plain errors when no agent runs, exit
//! codes of `geowall exec`, located config errors, the safety rail against
//! enforcing on the whole host.

use std::process::Command;

use geowall_tests::{AgentSpec, TempDir, TestCgroup, geowall_cmd};

fn write_config(dir: &TempDir, body: &str) -> std::path::PathBuf {
    let path = dir.path().join("geowall.toml");
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn exec_says_plainly_when_no_agent_runs_or_the_socket_is_stale() {
    let dir = TempDir::new("noagent");
    let sock = dir.path().join("control.sock");
    let config = write_config(&dir, &format!("[agent]\nsocket = \"{}\"\n", sock.display()));
    let exec_true = || {
        geowall_cmd("exec", &config)
            .args(["--policy", "eu-only", "--", "true"])
            .output()
            .unwrap()
    };
    let out = exec_true();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the geowall agent is not running: no control socket"),
        "{err}"
    );

    // A socket file nobody listens on any more.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let out = exec_true();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stale control socket"), "{err}");

    let out = geowall_cmd("status", &config).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("agent: down"));
}

#[test]
fn exec_returns_the_command_status_and_names_unknown_policies() {
    let cg = TestCgroup::new("execcodes");
    let agent = AgentSpec::new(&cg)
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\n")
        .start();
    assert_eq!(
        agent.exec("eu-only", &["sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    let out = agent.exec("eu-only", &["/nonexistent/cmd"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run '/nonexistent/cmd'"));
    let out = agent.exec("eu-only", &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(128 + 15));
    let out = agent.exec("nope", &["true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no policy 'nope' (loaded: eu-only)"), "{err}");

    // The job ran in a cgroup of its own, which is gone once it ended.
    let out = geowall_cmd("exec", &agent.config)
        .args(["--policy", "eu-only", "--job", "etl", "--"])
        .args(["cat", "/proc/self/cgroup"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("0::")).unwrap();
    assert!(line.ends_with("/geowall.jobs/etl"), "{line}");
    let job_dir = cg.path().join("geowall.jobs/etl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while job_dir.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "job cgroup left behind"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn config_errors_name_file_line_and_value() {
    let dir = TempDir::new("badcfg");
    let cases = [
        (
            "[agent]\ncgroup = \"/\"\nsocket_path = \"/x\"\n",
            "geowall.toml:3:1: unknown field `socket_path`",
        ),
        (
            "[[policy]]\nname = \"p\"\nallow = [\"DE\", \"Germany\"]\n",
            "geowall.toml:3:16: policy 'p': unknown region 'Germany' (did you mean 'DE', Germany?)",
        ),
        (
            "[[policy]]\nname = \"p\"\n",
            "geowall.toml:2:8: policy 'p': allows no region",
        ),
        (
            "[[policy]]\nname = \"p\"\nallow = [\"EU\"]\nrules = [{ cidr = \"10.1.0.0/8\", action = \"allow\" }]\n",
            "geowall.toml:4:20: policy 'p': rule: '10.1.0.0/8' has host bits set beyond /8 (did you mean 10.0.0.0/8?)",
        ),
        (
            "[[policy]]\nname = \"p\"\nallow = [\"EU\"]\ncgroups = [\"/no/such/cgroup\"]\n",
            "geowall.toml:4:12: policy 'p': cgroup '/no/such/cgroup' does not exist",
        ),
        (
            "[[maps]]\nkind = \"mmdbx\"\npath = \"x\"\n",
            "geowall.toml:2:8: unknown map kind 'mmdbx'",
        ),
        (
            "[[maps]]\nkind = \"cidr\"\npath = \"missing.cidr\"\n",
            "missing.cidr: No such file or directory",
        ),
        (
            "[[policy]]\nname = \"p\"\nallow = [\"EU\"]\n[[policy]]\nname = \"p\"\nallow = [\"US\"]\n",
            "geowall.toml:5:8: policy 'p': defined twice (first at ",
        ),
        (
            "[[policy]]\nname = \"p\"\nallow = [\"EU\"\n",
            "geowall.toml:3:",
        ),
    ];
    for (body, want) in cases {
        let config = write_config(&dir, body);
        let out = geowall_cmd("check", &config).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{body}");
        assert!(
            err.contains(want),
            "config:\n{body}\nwant: {want}\ngot: {err}"
        );
    }
}

#[test]
fn enforcing_on_the_whole_host_needs_an_explicit_yes() {
    let dir = TempDir::new("hostwide");
    let body =
        "[agent]\ncgroup = \"/\"\n[[policy]]\nname = \"p\"\nallow = [\"EU\"]\ncgroups = [\"/\"]\n";
    let config = write_config(&dir, body);
    let out = geowall_cmd("check", &config).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("would enforce on the whole host"), "{err}");
    // Audit mode host-wide is fine (that is the demo).
    let config = write_config(&dir, &body.replace("allow", "mode = \"audit\"\nallow"));
    let out = geowall_cmd("check", &config).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_job_end_reported_after_the_agent_collected_the_job_is_not_an_error() {
    use geowall::control::{
        Client, ClientError,
        proto::{ErrorCode, JobEnd, JobStart},
    };

    let cg = TestCgroup::new("lateend");
    let agent = AgentSpec::new(&cg)
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\n")
        .start();
    // What `geowall exec` does, with a pause between the job's exit and the
    // end report long enough for the agent's periodic collection to run.
    let mut child = Command::new("sleep").arg("0.2").spawn().unwrap();
    let mut client = Client::connect(&agent.socket).unwrap();
    let started = client
        .call(JobStart {
            policy: "eu-only".into(),
            job: Some("late".into()),
            pid: child.id(),
        })
        .unwrap();
    assert_eq!(started.job, "late");
    assert!(child.wait().unwrap().success());
    agent.wait_record("for the collection of the job", |r| {
        r["kind"] == "job" && r["event"] == "end" && r["job"] == "late"
    });
    client
        .call(JobEnd { job: "late".into() })
        .expect("a late end report is accepted");
    assert!(!cg.path().join("geowall.jobs/late").exists());

    // A job the agent never started is still an error.
    match client.call(JobEnd {
        job: "never".into(),
    }) {
        Err(ClientError::Remote(body)) => {
            assert_eq!(body.code, ErrorCode::UnknownJob);
            assert!(body.message.contains("no job 'never'"), "{}", body.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// `geowall log tail -` (what `cargo xtask run` pipes the agent's records
/// through) prints each record on standard input as the same compact line
/// `geowall log tail` prints from the files, and passes any other line on.
#[test]
fn log_tail_reads_records_from_standard_input() {
    use std::io::Write;
    let cg = TestCgroup::new("tailstdin");
    let agent = AgentSpec::new(&cg)
        .cidr_map("t.cidr", "127.20.0.0/16 US\n")
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\n")
        .start();
    let probe = geowall_tests::netprobe();
    let out = agent.exec("eu-only", &[probe.to_str().unwrap(), "tcp:127.20.0.1:9"]);
    assert!(out.status.success());
    agent.wait_record("for the denial", |r| r["verdict"] == "deny");
    let from_files = agent.cli(&["log", "tail", "-n", "1000"]);
    assert!(from_files.status.success());
    let mut input = std::fs::read(&agent.audit_log).unwrap();
    input.extend_from_slice(b"not a record\n");
    let mut tail = Command::new(geowall_tests::geowall())
        .args(["log", "tail", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tail.stdin.take().unwrap().write_all(&input).unwrap();
    let out = tail.wait_with_output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    let expected = format!(
        "{}not a record\n",
        String::from_utf8_lossy(&from_files.stdout)
    );
    assert_eq!(printed, expected);
    assert!(
        printed
            .lines()
            .any(|l| l.contains("deny") && l.contains("→ 127.20.0.1:9/tcp US")),
        "{printed}"
    );
    assert!(
        !printed.lines().any(|l| l.starts_with('{')),
        "no raw record: {printed}"
    );
    // -n and --follow make no sense on a stream: said so.
    let out = Command::new(geowall_tests::geowall())
        .args(["log", "tail", "-", "-n", "3"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("standard input"));
}
