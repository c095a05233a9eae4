//! Enforcement continuity: what the agent does at start when a map source
//! cannot be read (`[agent] on_map_error`), a crash (kill -9) under load,
//! and an upgrade to a build whose programs differ.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use geowall_tests::{AgentSpec, TempDir, TestCgroup, UsDe, geowall, outcomes, run_probe};

const MAP: &str = "127.20.0.0/16 US\n127.30.0.0/16 DE\n";
const BROKEN: &str = "127.20.0.0/16 US\n127.30.0.0/33 DE\n";
const POLICY: &str = "[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\ncgroups = [\"/job\"]\n";

fn map_file(agent: &geowall_tests::Agent) -> std::path::PathBuf {
    agent.config.parent().unwrap().join("test.cidr")
}

#[test]
fn deny_all_and_allow_all_start_without_a_map_and_say_so() {
    // Real public addresses, probed from a namespace with only `lo`:
    // allowed → ENETUNREACH, denied → EPERM. Loopback stays local.
    let ops = [
        "--netns",
        "tcp:193.99.144.80:443",
        "tcp:8.8.8.8:443",
        "tcp:127.0.0.1:9",
    ];
    for (mode, want) in [
        ("deny-all", ["EPERM", "EPERM", "ECONNREFUSED"]),
        ("allow-all", ["ENETUNREACH", "ENETUNREACH", "ECONNREFUSED"]),
    ] {
        let cg = TestCgroup::new("nomap");
        let agent = AgentSpec::new(&cg)
            .cidr_map("test.cidr", BROKEN)
            .agent_keys(&format!("on_map_error = \"{mode}\""))
            .config(POLICY)
            .child_cgroups(&["job"])
            .start();
        let job = cg.path().join("job");
        assert_eq!(outcomes(&run_probe(Some(&job), &ops)), want, "{mode}");
        let rec = agent.wait_record("the map_error record", |r| {
            r["kind"] == "agent" && r["event"] == "map_error"
        });
        assert_eq!(rec["on_map_error"], mode);
        assert!(
            rec["error"].as_str().unwrap().contains("test.cidr:2"),
            "{rec}"
        );
    }
}

#[test]
fn keep_last_keeps_the_pinned_tables_until_the_source_loads_again() {
    let cg = TestCgroup::new("keeplast");
    let mut agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(POLICY)
        .child_cgroups(&["job"])
        .keep_pins()
        .start();
    let t = UsDe::new();
    let job = cg.path().join("job");
    assert_eq!(
        outcomes(&run_probe(Some(&job), &t.ops("tcp"))),
        ["EPERM", "ok"]
    );
    let epoch = agent.epoch();
    assert!(agent.terminate().success());
    // The map breaks while the agent is down; it starts on the pinned tables.
    std::fs::write(map_file(&agent), BROKEN).unwrap();
    agent.restart();
    assert_eq!(agent.epoch(), epoch, "the pinned tables stay");
    assert_eq!(
        outcomes(&run_probe(Some(&job), &t.ops("tcp"))),
        ["EPERM", "ok"]
    );
    agent.wait_record("the map_error record", |r| {
        r["event"] == "map_error" && r["on_map_error"] == "keep-last"
    });
    // Fixed: the source watcher loads it and switches.
    std::fs::write(map_file(&agent), MAP).unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    while agent.epoch() == epoch {
        assert!(
            Instant::now() < until,
            "no reload after the source was fixed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        outcomes(&run_probe(Some(&job), &t.ops("tcp"))),
        ["EPERM", "ok"]
    );
    let out = agent.cli(&["stop"]);
    assert!(out.status.success());
}

#[test]
fn keep_last_with_nothing_pinned_refuses_to_start() {
    let cg = TestCgroup::new("keepnone");
    let dir = TempDir::new("keepnone");
    let bpffs = format!("/sys/fs/bpf/gw-test-keepnone-{}", std::process::id());
    std::fs::write(dir.path().join("test.cidr"), BROKEN).unwrap();
    let config = dir.path().join("geowall.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ncgroup = \"{}\"\nbpffs = \"{bpffs}\"\naudit_log = \"{}\"\nsocket = \"{}\"\n\n\
             [[maps]]\nkind = \"cidr\"\npath = \"test.cidr\"\n\n{POLICY}",
            cg.rel(),
            dir.path().join("audit.jsonl").display(),
            dir.path().join("control.sock").display(),
        ),
    )
    .unwrap();
    cg.child("job");
    let out = Command::new(geowall())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    // Whatever happened, nothing stays attached or pinned.
    let _ = Command::new(geowall())
        .args(["stop", "--config"])
        .arg(&config)
        .output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("test.cidr:2"), "{err}");
    assert!(err.contains("no tables are pinned to keep"), "{err}");
    assert!(
        !std::path::Path::new(&bpffs).exists(),
        "pins left at {bpffs}"
    );
}

#[test]
fn kill_9_under_load_leaves_no_window_and_the_restart_reports_what_was_lost() {
    let cg = TestCgroup::new("kill9");
    let mut agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(POLICY)
        .child_cgroups(&["job"])
        .agent_keys("ring_buffer_kib = 16")
        .keep_pins()
        .start();
    let t = UsDe::new();
    let job = cg.path().join("job");
    // Denied connects again and again for 3 s; the agent is killed in the
    // middle and started again a second later.
    let probe = geowall_tests::connect_loop(&job, &t.us.target(), 3000);
    std::thread::sleep(Duration::from_millis(700));
    agent.kill9();
    std::thread::sleep(Duration::from_millis(1000));
    agent.restart();
    let counts = probe.join().unwrap();
    assert!(
        !counts.contains_key("ok"),
        "a denied destination passed: {counts:?}"
    );
    let denied = counts.get("EPERM").copied().unwrap_or(0);
    assert!(denied > 100, "{counts:?}");
    // With a 16 KiB ring buffer and nobody reading, the outage dropped
    // events: the restarted agent says how many.
    let lost = agent.wait_record_for("a lost record", Duration::from_secs(5), |r| {
        r["kind"] == "lost"
    });
    assert!(lost["count"].as_u64().is_some_and(|n| n > 0), "{lost}");
    let out = agent.cli(&["stop"]);
    assert!(out.status.success());
}

#[test]
fn an_upgrade_swaps_in_the_new_programs_under_a_connect_loop_with_no_gap() {
    use geowall::{
        kernel::sys::{attach_type, cgroup_prog_ids},
        tables::codes::unpack_version,
    };
    use std::{
        os::fd::AsFd,
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
    };

    let next = geowall_tests::geowall_next();
    let cg = TestCgroup::new("upgrade");
    let mut agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(POLICY)
        .child_cgroups(&["job"])
        .keep_pins()
        .start();
    let t = UsDe::new();
    let job = cg.path().join("job");

    // Which connect4 programs the governed cgroup runs, sampled as fast as
    // the kernel answers for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        let dir = std::fs::File::open(cg.path()).unwrap();
        std::thread::spawn(move || {
            let mut samples: Vec<Vec<u32>> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let ids = cgroup_prog_ids(dir.as_fd(), attach_type::CGROUP_INET4_CONNECT).unwrap();
                if samples.last() != Some(&ids) {
                    samples.push(ids);
                }
            }
            samples
        })
    };
    // The loops outlast the upgrade (a start verifies the programs, which
    // takes seconds on a busy machine): checked below.
    let loop_ms = 15_000;
    let loops_end = Instant::now() + Duration::from_millis(loop_ms);
    let denied = geowall_tests::connect_loop(&job, &t.us.target(), loop_ms);
    let allowed = geowall_tests::connect_loop(&job, &t.de.target(), loop_ms);
    std::thread::sleep(Duration::from_millis(800));
    // A package upgrade: the old agent stops (its programs stay pinned and
    // attached), the new binary starts and swaps its programs into the
    // links.
    assert!(agent.terminate().success());
    agent.upgrade_to(&next);
    let upgraded = Instant::now();
    assert!(
        upgraded + Duration::from_millis(500) < loops_end,
        "the upgrade took longer than the connect loops ran"
    );
    let denied = denied.join().unwrap();
    let allowed = allowed.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();

    assert!(
        !denied.contains_key("ok"),
        "a denied destination passed during the upgrade: {denied:?}"
    );
    assert!(
        denied.get("EPERM").copied().unwrap_or(0) > 100,
        "{denied:?}"
    );
    assert_eq!(
        allowed.keys().collect::<Vec<_>>(),
        ["ok"],
        "an allowed destination was refused during the upgrade: {allowed:?}"
    );
    // One program all along, and exactly one change: old → new.
    assert!(
        samples.iter().all(|ids| ids.len() == 1),
        "an instant with no program or with two: {samples:?}"
    );
    assert_eq!(samples.len(), 2, "the program changed once: {samples:?}");

    // The new build says so, and the records name the build that decided.
    let old = unpack_version(geowall_common::PACKED_VERSION);
    let next_version = String::from_utf8(
        Command::new(&next)
            .arg("--version")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let next_version = next_version
        .trim()
        .trim_start_matches("geowall ")
        .to_owned();
    let next_packed = unpack_version(geowall_common::pack_version(&next_version));
    assert_ne!(old, next_packed);
    let status = agent.status();
    assert_eq!(status["version"], next_version.as_str(), "{status}");
    assert_eq!(
        status["programs"]["version"],
        next_packed.as_str(),
        "{status}"
    );
    agent.wait_record_for(
        "a denial by the new programs",
        Duration::from_secs(10),
        |r| r["verdict"] == "deny" && r["program"] == next_packed.as_str(),
    );
    let records = agent.records();
    assert!(
        records
            .iter()
            .any(|r| r["verdict"] == "deny" && r["program"] == old.as_str()),
        "no denial by the old programs"
    );
    let out = agent.cli(&["stop"]);
    assert!(out.status.success());
}
