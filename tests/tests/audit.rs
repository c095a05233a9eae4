//! The audit log against the real kernel: every field of real records,
//! masking, lost events with a tiny ring buffer, tamper evidence across a
//! rotated set, `log tail --follow` across rotation, `log_allowed =
//! "first"`, the metrics endpoint, and the record an unclean stop leaves.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use geowall_tests::{
    Agent, AgentSpec, Listener, TempDir, TestCgroup, UsDe, geowall_cmd, loop_counts, netprobe_path,
    outcomes, run_probe,
};
use serde_json::Value;

const MAP: &str = "\
127.20.0.0/16 US
127.30.0.0/16 DE
";

fn sha256_hex(bytes: &[u8]) -> String {
    geowall::vocab::hex::sha256_hex(bytes)
}

/// Waits up to `timeout` for `cond`.
fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The raw lines of every file of the log, in order.
fn raw_lines(agent: &Agent) -> Vec<String> {
    agent
        .log_files()
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn is_deny(r: &Value) -> bool {
    r["verdict"] == "deny"
}

#[test]
fn a_denied_tcp_connect_and_an_allowed_udp_send_carry_every_field() {
    let cg = TestCgroup::new("fields");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\nlog_allowed = \"all\"\n")
        .start();
    let us = Listener::on("127.20.0.1");
    let tcp = format!("tcp:{}", us.target());
    // The probe lives on a little after its connections, as a real job
    // would: the agent reads its command line from /proc.
    let out = agent.exec_probe(
        "eu-only",
        &[tcp.as_str(), "udp:127.30.0.1:9053", "sleep:500"],
    );
    assert_eq!(outcomes(&out), ["EPERM", "ok", "ok"]);

    let job = agent.wait_record("for the job's start", |r| {
        r["kind"] == "job" && r["event"] == "start"
    });
    let deny = agent.wait_record("for the denied connect", is_deny);
    let allow = agent.wait_record("for the allowed datagram", |r| {
        r["verdict"] == "allow" && r["proto"] == "udp"
    });
    let map_file = agent.config.parent().unwrap().join("test.cidr");
    let probe = std::fs::canonicalize(netprobe_path()).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let job_name = job["job"].as_str().unwrap();
    let now = geowall::vocab::clock::unix_now_ns();

    for (rec, verdict, hook, proto, dst, dport, tag, prefix) in [
        (
            &deny,
            "deny",
            "connect4",
            "tcp",
            "127.20.0.1",
            us.addr.port(),
            "US",
            "127.20.0.0/16",
        ),
        (
            &allow,
            "allow",
            "sendmsg4",
            "udp",
            "127.30.0.1",
            9053,
            "DE",
            "127.30.0.0/16",
        ),
    ] {
        let keys: BTreeSet<&str> = rec
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let want: BTreeSet<&str> = [
            "v",
            "time",
            "seq",
            "verdict",
            "reason",
            "policy",
            "tags",
            "prefix",
            "dst",
            "dport",
            "proto",
            "family",
            "hook",
            "program",
            "pid",
            "tid",
            "comm",
            "exe",
            "cmdline",
            "uid",
            "user",
            "gid",
            "cgroup",
            "cgroup_id",
            "job",
            "host",
            "epoch",
            "map",
            "prev",
        ]
        .into();
        assert_eq!(keys, want, "{rec}");
        assert_eq!(rec["v"], 2);
        let t = geowall::vocab::clock::parse_rfc3339(rec["time"].as_str().unwrap()).unwrap();
        assert!((now - t).abs() < 60_000_000_000, "{rec}");
        assert!(
            rec["time"].as_str().unwrap().len() == 30,
            "ns precision: {rec}"
        );
        assert!(rec["seq"].as_u64().unwrap() > job["seq"].as_u64().unwrap());
        assert_eq!(rec["verdict"], verdict);
        assert_eq!(rec["reason"], "region");
        assert_eq!(rec["policy"], "eu-only");
        assert_eq!(rec["tags"], serde_json::json!([tag]));
        assert_eq!(rec["prefix"], prefix);
        assert_eq!(rec["dst"], dst);
        assert_eq!(rec["dport"], dport);
        assert_eq!(rec["proto"], proto);
        assert_eq!(rec["family"], "ipv4");
        assert_eq!(rec["hook"], hook);
        assert_eq!(
            rec["program"],
            geowall::tables::codes::unpack_version(geowall_common::PACKED_VERSION)
        );
        assert_eq!(rec["pid"], job["pid"], "the job's own process");
        assert_eq!(rec["tid"], job["pid"]);
        assert_eq!(rec["comm"], "netprobe");
        assert_eq!(rec["exe"], probe.to_str().unwrap());
        assert_eq!(
            rec["cmdline"].as_str().unwrap(),
            format!(
                "{} {tcp} udp:127.30.0.1:9053 sleep:500",
                netprobe_path().display()
            )
        );
        assert_eq!(rec["uid"], 0);
        assert_eq!(rec["user"], "root");
        assert_eq!(rec["gid"], 0);
        assert_eq!(
            rec["cgroup"],
            format!("{}/geowall.jobs/{job_name}", cg.rel())
        );
        assert!(rec["cgroup_id"].as_u64().unwrap() > 0);
        assert_eq!(rec["job"], job_name);
        assert_eq!(rec["host"], host.trim());
        assert!(rec["epoch"].as_u64().unwrap() >= 1);
        let map = rec["map"].as_array().unwrap();
        assert_eq!(map.len(), 1, "{rec}");
        assert_eq!(map[0]["source"], format!("cidr:{}", map_file.display()));
        assert_eq!(
            map[0]["sha256"],
            sha256_hex(&std::fs::read(&map_file).unwrap())
        );
        // What the source says about itself is in the epoch's config
        // record, once, not in every flow record.
        assert_eq!(map[0].as_object().unwrap().len(), 2, "{rec}");
    }
    // prev is the hash of the line before, in the file.
    let lines = raw_lines(&agent);
    let at = lines
        .iter()
        .position(|l| l.contains(&format!("\"seq\":{},", deny["seq"])))
        .unwrap();
    assert_eq!(deny["prev"], sha256_hex(lines[at - 1].as_bytes()));
    let out = agent.cli(&["log", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_allow_answered_from_the_verdict_cache_is_recorded_like_the_first() {
    let cg = TestCgroup::new("cachedrec");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\nlog_allowed = \"all\"\n")
        .start();
    let de = Listener::on("127.30.0.1");
    let tcp = format!("tcp:{}", de.target());
    let three = ["127.30.0.1:9053"; 3].join(",");
    // Three datagrams from one socket (the second and third are answered
    // by the cache keyed by the socket), two connects from two sockets (the
    // second answered by the cache keyed by the socket's cgroup).
    let out = agent.exec_probe(
        "eu-only",
        &[
            format!("udpmulti:{three}"),
            tcp.clone(),
            tcp,
            "sleep:300".into(),
        ],
    );
    assert_eq!(outcomes(&out), ["ok", "ok", "ok", "ok", "ok", "ok"]);
    let allowed = agent.wait_records("allowing the probe's flows", 5, |r| {
        r["verdict"] == "allow" && r["kind"].is_null()
    });
    assert_eq!(allowed.len(), 5, "{allowed:?}");
    // Every record of a flow is the first one's, but for its time and place
    // in the log.
    let same = |r: &Value| {
        let mut r = r.clone();
        let o = r.as_object_mut().unwrap();
        for k in ["time", "seq", "prev"] {
            o.remove(k);
        }
        r
    };
    for proto in ["udp", "tcp"] {
        let recs: Vec<&Value> = allowed.iter().filter(|r| r["proto"] == proto).collect();
        assert_eq!(recs.len(), if proto == "udp" { 3 } else { 2 }, "{recs:?}");
        assert_eq!(recs[0]["tags"], serde_json::json!(["DE"]));
        assert_eq!(recs[0]["reason"], "region");
        assert_eq!(recs[0]["prefix"], "127.30.0.0/16");
        for r in &recs[1..] {
            assert_eq!(same(r), same(recs[0]), "a cached allow's record");
        }
    }
    let eu = agent.policy_status("eu-only");
    assert_eq!(eu["allowed"], 5, "every cached allow is counted: {eu}");
}

#[test]
fn secrets_in_a_job_command_line_reach_no_log_file() {
    let cg = TestCgroup::new("mask");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\n")
        .start();
    let t = UsDe::new();
    let op = format!("tcp:{}", t.us.target());
    let out = agent.exec_probe(
        "eu-only",
        &[
            op.as_str(),
            "sleep:500",
            "--",
            "--password=hunter2",
            "TOKEN=abc",
            "--api-key",
            "k3y-XYZ",
        ],
    );
    assert_eq!(outcomes(&out), ["EPERM", "ok"]);
    let rec = agent.wait_record("for the denial", is_deny);
    assert!(
        rec["cmdline"]
            .as_str()
            .unwrap()
            .ends_with(" -- --password=*** TOKEN=*** --api-key ***"),
        "{rec}"
    );
    let mut agent = agent;
    agent.terminate();
    let dir = agent.config.parent().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("audit") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for secret in ["hunter2", "TOKEN=abc", "k3y-XYZ"] {
            assert!(!text.contains(secret), "{secret} in {}", path.display());
        }
        // "abc" may occur inside a hash; nowhere else.
        if name.ends_with(".jsonl") {
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                assert_no_string_contains(&v, "abc");
            }
        }
    }
}

fn assert_no_string_contains(v: &Value, needle: &str) {
    match v {
        Value::String(s) => {
            let hash = s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
            assert!(hash || !s.contains(needle), "{needle} in {s}");
        }
        Value::Array(a) => a.iter().for_each(|x| assert_no_string_contains(x, needle)),
        Value::Object(m) => m
            .values()
            .for_each(|x| assert_no_string_contains(x, needle)),
        _ => {}
    }
}

#[test]
fn a_burst_past_a_tiny_ring_buffer_is_counted_in_lost_records() {
    let cg = TestCgroup::new("lost");
    let confined = cg.child("confined");
    let mut agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .agent_keys("ring_buffer_kib = 4")
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\ncgroups = [\"/confined\"]\n")
        .keep_pins()
        .start();
    let us = Listener::on("127.20.0.1");
    // The agent stopped, the ring buffer (about 34 events) fills at once.
    agent.signal(libc::SIGSTOP);
    let counts = loop_counts(&confined, &us.target(), 300);
    agent.signal(libc::SIGCONT);
    let decisions = counts.get("EPERM").copied().unwrap_or(0);
    assert!(decisions > 200, "{counts:?}");
    assert_eq!(counts.len(), 1, "{counts:?}");
    let tally = |agent: &Agent| {
        let recs = agent.records();
        let written = recs.iter().filter(|r| is_deny(r)).count() as u64;
        let lost: u64 = recs
            .iter()
            .filter(|r| r["kind"] == "lost")
            .map(|r| r["count"].as_u64().unwrap())
            .sum();
        (written, lost)
    };
    wait_until(
        "records + lost = decisions",
        Duration::from_secs(10),
        || {
            let (w, l) = tally(&agent);
            w + l >= decisions
        },
    );
    let (written, lost) = tally(&agent);
    assert_eq!(written + lost, decisions, "written {written} lost {lost}");
    assert!(lost > 0 && written > 0, "written {written} lost {lost}");
    let rec = agent.wait_record("for the lost record", |r| r["kind"] == "lost");
    assert_eq!(rec["policy"], "eu-only");
    assert_eq!(rec["reason"], "ring buffer full");
    // A restart does not report the same drops again.
    agent.terminate();
    agent.restart();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(tally(&agent).1, lost);
}

/// A log of denials in a rotated set, the agent stopped.
fn rotated_log(cg: &TestCgroup) -> Agent {
    let confined = cg.child("confined");
    let mut agent = AgentSpec::new(cg)
        .cidr_map("test.cidr", MAP)
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\ncgroups = [\"/confined\"]\n")
        .config("[audit]\nrotate_size = \"8KiB\"\n")
        .start();
    let us = Listener::on("127.20.0.1");
    let ops: Vec<String> = (0..40).map(|_| format!("tcp:{}", us.target())).collect();
    let out = run_probe(Some(&confined), &ops);
    assert!(outcomes(&out).iter().all(|o| o == "EPERM"));
    agent.wait_records("for 40 denials", 40, is_deny);
    agent.terminate();
    agent
}

fn verify_files(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(geowall_tests::geowall())
        .args(["log", "verify"])
        .args(files)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Copies the log's files into `dir`; their copies in the same order.
fn copy_set(files: &[PathBuf], dir: &Path) -> Vec<PathBuf> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    files
        .iter()
        .map(|f| {
            let to = dir.join(f.file_name().unwrap());
            std::fs::copy(f, &to).unwrap();
            to
        })
        .collect()
}

fn edit_lines(path: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    edit(&mut lines);
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn log_verify_finds_each_kind_of_tampering_at_its_line() {
    let cg = TestCgroup::new("tamper");
    let agent = rotated_log(&cg);
    let files = agent.log_files();
    assert!(files.len() >= 3, "{files:?}");
    let (ok, text) = verify_files(&files);
    assert!(ok, "{text}");
    assert!(text.contains("the chain is intact"), "{text}");
    // `--config` finds the same set.
    let out = agent.cli(&["log", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let work = TempDir::new("tamper");
    // The middle file of the set: its lines, numbered from 1.
    let mid = files.len() / 2;
    let n_mid = std::fs::read_to_string(&files[mid])
        .unwrap()
        .lines()
        .count();
    assert!(n_mid >= 6, "{n_mid} lines in {}", files[mid].display());
    let name = |i: usize| files[i].file_name().unwrap().to_string_lossy().into_owned();
    let check = |tag: &str, edit: &dyn Fn(&[PathBuf]), want: String| {
        let copy = copy_set(&files, &work.path().join(tag));
        edit(&copy);
        let (ok, text) = verify_files(&copy);
        assert!(!ok, "{tag}: tampering not found:\n{text}");
        let first = text.lines().find(|l| !l.starts_with("note:")).unwrap();
        assert!(
            first.contains(&want),
            "{tag}: expected {want}, got:\n{text}"
        );
    };
    // One byte edited (a digit of the destination port) in line 3.
    check(
        "edit",
        &|c| {
            edit_lines(&c[mid], |l| {
                let at = l[2].find("\"dport\":").unwrap() + 8;
                let digit = l[2].as_bytes()[at];
                let new = if digit == b'1' { "2" } else { "1" };
                l[2].replace_range(at..at + 1, new);
            })
        },
        format!("{}:3: changed", name(mid)),
    );
    // Line 4 deleted: the gap shows at the line that now stands there.
    check(
        "delete",
        &|c| edit_lines(&c[mid], |l| drop(l.remove(3))),
        format!("{}:4: 1 record(s) missing", name(mid)),
    );
    // Lines 2 and 5 swapped.
    check(
        "swap",
        &|c| edit_lines(&c[mid], |l| l.swap(1, 4)),
        format!("{}:2:", name(mid)),
    );
    // The tail cut in the middle of the last record.
    let last = files.len() - 1;
    let n_last = std::fs::read_to_string(&files[last])
        .unwrap()
        .lines()
        .count();
    check(
        "truncate",
        &|c| {
            let len = std::fs::metadata(&c[last]).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&c[last])
                .unwrap()
                .set_len(len - 20)
                .unwrap();
        },
        format!("{}:{n_last}: torn tail", name(last)),
    );
    // A whole file missing from the middle of the set.
    let mut gap = copy_set(&files, &work.path().join("gap"));
    gap.remove(mid);
    let (ok, text) = verify_files(&gap);
    assert!(!ok);
    assert!(text.contains(&format!("{}:1:", name(mid + 1))), "{text}");
}

#[test]
fn tail_follow_across_rotation_misses_and_repeats_nothing() {
    let cg = TestCgroup::new("follow");
    let confined = cg.child("confined");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\ncgroups = [\"/confined\"]\n")
        .config("[audit]\nrotate_size = \"4KiB\"\n")
        .start();
    let us = Listener::on("127.20.0.1");
    let before = agent
        .records()
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .unwrap();
    let rotated_before = agent.log_files().len();
    let mut tail = geowall_cmd("log tail", &agent.config)
        .args(["--follow", "--json", "-n", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let reader = {
        let seen = Arc::clone(&seen);
        let stdout = tail.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line).unwrap();
                seen.lock().unwrap().push(v["seq"].as_u64().unwrap());
            }
        })
    };
    // Let it open the log, then write while it follows: several rotations.
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..6 {
        let ops: Vec<String> = (0..10).map(|_| format!("tcp:{}", us.target())).collect();
        run_probe(Some(&confined), &ops);
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.wait_records("for 60 denials", 60, is_deny);
    let rotations = agent.log_files().len() - rotated_before;
    assert!(rotations >= 3, "only {rotations} rotations");
    let want: Vec<u64> = agent
        .records()
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .filter(|s| *s > before)
        .collect();
    wait_until(
        "tail to print every record",
        Duration::from_secs(10),
        || seen.lock().unwrap().len() >= want.len(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let _ = tail.kill();
    let _ = tail.wait();
    let _ = reader.join();
    let got = seen.lock().unwrap().clone();
    assert_eq!(got, want, "printed seqs vs written ones");
}

#[test]
fn log_allowed_first_records_the_first_connection_and_counts_the_rest() {
    let cg = TestCgroup::new("first");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\nlog_allowed = \"first\"\n")
        .config("[audit]\nallowed_window = \"1s\"\n")
        .start();
    let ten = ["127.30.0.1:9053"; 10].join(",");
    let out = agent.exec_probe(
        "eu-only",
        &[
            format!("udpmulti:{ten}"),
            "udp:127.30.0.1:54".into(),
            "udp:127.20.0.1:9053".into(),
        ],
    );
    assert_eq!(outcomes(&out), [vec!["ok"; 11], vec!["EPERM"]].concat());
    let counted = agent.wait_record_for("for the count", Duration::from_secs(5), |r| {
        r["kind"] == "allowed"
    });
    let recs = agent.records();
    let allowed: Vec<&Value> = recs
        .iter()
        .filter(|r| r["verdict"] == "allow" && r["kind"].is_null())
        .collect();
    // One record per destination and port; the nine repeats counted.
    assert_eq!(allowed.len(), 2, "{allowed:?}");
    let first = allowed.iter().find(|r| r["dport"] == 9053).unwrap();
    assert_eq!(counted["count"], 9);
    assert_eq!(counted["first_seq"], first["seq"]);
    assert_eq!(counted["dst"], "127.30.0.1");
    assert_eq!(counted["dport"], 9053);
    assert_eq!(counted["policy"], "eu-only");
    assert_eq!(counted["job"], first["job"]);
    assert!(recs.iter().any(is_deny), "denials are always recorded");
    // The summary counts all of them.
    let sum = agent.cli_json(&["log", "tail", "--summary", "--json", "--policy", "eu-only"]);
    let rows = sum["rows"].as_array().unwrap();
    let de = rows
        .iter()
        .find(|r| r["verdict"] == "allow" && r["region"] == "DE")
        .unwrap();
    assert_eq!(de["flows"], 11, "{sum}");
    let us = rows.iter().find(|r| r["verdict"] == "deny").unwrap();
    assert_eq!(us["region"], "US");
    assert_eq!(us["flows"], 1);
}

#[test]
fn metrics_answer_a_real_scrape() {
    let cg = TestCgroup::new("metrics");
    let port = geowall_tests::free_tcp_port();
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .agent_keys(&format!("metrics = \"127.0.0.1:{port}\""))
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\n")
        .start();
    let t = UsDe::new();
    t.assert_eu(&agent, "eu-only");
    agent.wait_record("for the denial", is_deny);
    let mut body = String::new();
    wait_until(
        "the flow event in the metrics",
        Duration::from_secs(5),
        || {
            body = geowall_tests::scrape_metrics(port);
            body.contains(
                "geowall_flow_events_total{policy=\"eu-only\",verdict=\"deny\",region=\"US\"} 1",
            )
        },
    );
    assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
    for want in [
        "\ngeowall_up 1\n",
        "geowall_decisions_total{policy=\"eu-only\",verdict=\"deny\"} 1\n",
        "geowall_decisions_total{policy=\"eu-only\",verdict=\"allow\"} 1\n",
        "geowall_events_lost_total{policy=\"eu-only\"} 0\n",
        "geowall_map_prefixes{family=\"ipv4\"} ",
        "geowall_map_ranges{family=\"ipv4\"} ",
        "geowall_map_load_seconds ",
        "geowall_map_age_seconds ",
        "geowall_table_epoch ",
        "geowall_audit_records_total{kind=\"flow\"} 1\n",
        "# EOF",
    ] {
        assert!(body.contains(want), "no {want:?} in:\n{body}");
    }
}

#[test]
fn an_unclean_stop_is_recorded_and_queued_events_survive_it() {
    let cg = TestCgroup::new("crash");
    let confined = cg.child("confined");
    let mut agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\ncgroups = [\"/confined\"]\n")
        .keep_pins()
        .start();
    let us = Listener::on("127.20.0.1");
    let last_before = agent.records().last().unwrap()["seq"].as_u64().unwrap();
    // Denials while the agent cannot read, then it dies.
    agent.signal(libc::SIGSTOP);
    let ops: Vec<String> = (0..3).map(|_| format!("tcp:{}", us.target())).collect();
    assert_eq!(outcomes(&run_probe(Some(&confined), &ops)), ["EPERM"; 3]);
    agent.signal(libc::SIGKILL);
    agent.terminate();
    agent.restart();
    let rec = agent.wait_record("for the recovery record", |r| {
        r["kind"] == "agent" && r["event"] == "recovered"
    });
    assert_eq!(rec["last_seq"], last_before);
    assert_eq!(rec["seq"], last_before + 1);
    // The pinned ring buffer kept the three denials for the new agent.
    let denials = agent.wait_records("for the queued denials", 3, is_deny);
    assert!(
        denials
            .iter()
            .all(|d| d["seq"].as_u64() > rec["seq"].as_u64())
    );
    let out = agent.cli(&["log", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let kinds: BTreeMap<String, usize> =
        agent.records().iter().fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r["kind"].as_str().unwrap_or("flow").to_owned())
                .or_default() += 1;
            m
        });
    assert_eq!(kinds.get("flow"), Some(&3), "{kinds:?}");
}
