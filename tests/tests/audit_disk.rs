//! The audit log when it cannot be written, against the real kernel and a
//! real filesystem: a 256 KiB tmpfs filled up under a running agent
//! (`status` and the metrics say so, `on_write_failure = "deny"` refuses
//! governed connections with reason `audit`, `continue` does not), then
//! given room again (the held records are written, the failure and the
//! records lost are declared, `log verify` passes); and a torn tail left
//! by a cut-off write, closed and declared by the next start.

use std::{
    ffi::CString,
    fs,
    io::Write,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use geowall_tests::{
    Agent, AgentSpec, Listener, TempDir, TestCgroup, UsDe, connect_loop, outcomes, run_probe,
};
use serde_json::Value;

const MAP: &str = "\
127.20.0.0/16 US
127.30.0.0/16 DE
";

/// A tmpfs mounted on a folder this test made, unmounted on drop.
struct Tmpfs {
    dir: TempDir,
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

impl Tmpfs {
    fn new(size: &str) -> Self {
        let dir = TempDir::new("tmpfs");
        let target = CString::new(dir.path().as_os_str().as_bytes()).expect("no NUL");
        let opts = c(&format!("size={size},mode=0755"));
        // SAFETY: mount(2) with valid C strings, on a folder this test
        // created.
        let r = unsafe {
            libc::mount(
                c("geowall-test").as_ptr(),
                target.as_ptr(),
                c("tmpfs").as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(
            r,
            0,
            "mount a tmpfs on {}: {}",
            dir.path().display(),
            std::io::Error::last_os_error()
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Gives the filesystem `size` (an operator growing the volume).
    fn resize(&self, size: &str) {
        let target = CString::new(self.path().as_os_str().as_bytes()).expect("no NUL");
        let opts = c(&format!("size={size}"));
        // SAFETY: as in `new`, on our own mount.
        let r = unsafe {
            libc::mount(
                std::ptr::null(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(r, 0, "remount: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.path().as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: umount2(2) of the mount this guard made.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Fills the filesystem of `dir` to the last byte with a file of its own.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = fs::File::create(&path).expect("create filler");
    for chunk in [&[0u8; 4096][..], &[0u8; 1][..]] {
        loop {
            match f.write(chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("fill {}: {e}", path.display()),
            }
        }
    }
    path
}

/// The value of the metric line that starts with `name` (labels included).
fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
}

fn audit_status(agent: &Agent) -> Value {
    agent.status()["status"]["audit"].clone()
}

/// Waits up to `timeout` for `cond` on the agent's `status.audit`.
fn wait_audit(
    agent: &Agent,
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let a = audit_status(agent);
        if cond(&a) {
            return a;
        }
        assert!(Instant::now() < deadline, "{what}: status.audit is {a}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The records of every file of the log: whole lines only (a torn tail is
/// no record).
fn records(agent: &Agent) -> Vec<Value> {
    agent.records()
}

#[test]
fn a_full_disk_is_reported_fails_closed_on_request_and_the_gap_is_declared() {
    let disk = Tmpfs::new("256k");
    let cg = TestCgroup::new("fulldisk");
    let confined = cg.child("confined");
    let port = geowall_tests::free_tcp_port();
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .audit_log(&disk.path().join("audit.jsonl"))
        .agent_keys(&format!("metrics = \"127.0.0.1:{port}\""))
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\ncgroups = [\"/confined\"]\n")
        .config("[audit]\non_write_failure = \"continue\"\n")
        .start();
    let t = UsDe::new();
    let de = vec![format!("tcp:{}", t.de.target())];
    t.assert_eu(&agent, "eu-only");
    let before = audit_status(&agent);
    assert_eq!(before["writable"], true, "{before}");
    assert_eq!(before["on_write_failure"], "continue");

    // The disk fills up; denials need writing.
    let filler = fill(disk.path());
    let failing = wait_audit(
        &agent,
        "the log never failed",
        Duration::from_secs(30),
        |a| {
            if a["writable"] == false {
                return true;
            }
            let ops = vec![format!("tcp:{}", t.us.target()); 20];
            assert_eq!(outcomes(&run_probe(Some(&confined), &ops)), ["EPERM"; 20]);
            false
        },
    );
    assert_eq!(
        failing["last_error"], "No space left on device",
        "{failing}"
    );
    assert!(failing["failing_since"].is_string(), "{failing}");
    assert!(failing["write_errors"].as_u64() >= Some(1), "{failing}");
    assert_eq!(failing["refusing"], false);
    // `continue`: enforcement goes on, the allowed region stays open.
    assert_eq!(outcomes(&run_probe(Some(&confined), &de)), ["ok"]);
    assert_eq!(
        outcomes(&run_probe(Some(&confined), &t.ops("tcp"))),
        ["EPERM", "ok"]
    );
    let status_text = text(&agent.cli(&["status"]));
    println!("$ geowall status   # disk full, on_write_failure = continue\n{status_text}");
    assert!(
        status_text.contains("CANNOT BE WRITTEN since"),
        "{status_text}"
    );
    assert!(
        status_text.contains("No space left on device"),
        "{status_text}"
    );
    let body = geowall_tests::scrape_metrics(port);
    assert_eq!(metric(&body, "geowall_audit_writable"), 0.0);
    assert!(metric(&body, "geowall_audit_failing_since_seconds") > 1.7e9);
    assert!(metric(&body, "geowall_audit_write_errors_total") >= 1.0);
    assert!(metric(&body, "geowall_audit_records_held") >= 1.0);
    assert_eq!(metric(&body, "geowall_audit_refusing"), 0.0);

    // Fail closed: a reload turns `deny` on while the disk is still full.
    agent.rewrite_config(|c| {
        c.replace(
            "on_write_failure = \"continue\"",
            "on_write_failure = \"deny\"",
        )
    });
    agent.signal(libc::SIGHUP);
    wait_audit(&agent, "deny never applied", Duration::from_secs(10), |a| {
        a["on_write_failure"] == "deny" && a["refusing"] == true
    });
    // Every new connection of a governed job is refused, the allowed
    // region's too; ungoverned processes are not touched.
    assert_eq!(outcomes(&run_probe(Some(&confined), &de)), ["EPERM"]);
    assert_eq!(outcomes(&agent.exec_probe("eu-only", &de)), ["EPERM"]);
    assert_eq!(outcomes(&run_probe(None, &de)), ["ok"]);
    let refused = audit_status(&agent);
    assert!(refused["refused"].as_u64() >= Some(2), "{refused}");
    let policy = agent.policy_status("eu-only");
    assert!(policy["audit_refused"].as_u64() >= Some(1), "{policy}");
    let status_text = text(&agent.cli(&["status"]));
    println!("$ geowall status   # disk full, on_write_failure = deny\n{status_text}");
    assert!(status_text.contains("REFUSED"), "{status_text}");
    println!(
        "$ geowall status --json | jq .status.audit\n{}",
        serde_json::to_string_pretty(&audit_status(&agent)).unwrap()
    );
    let body = geowall_tests::scrape_metrics(port);
    println!(
        "$ curl -s 127.0.0.1:PORT/metrics | grep audit_   # disk full\n{}",
        body.lines()
            .filter(|l| l.contains("audit_") && !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(metric(&body, "geowall_audit_refusing"), 1.0);
    assert!(metric(&body, "geowall_audit_refused_total{policy=\"eu-only\"}") >= 2.0);

    // More than the agent holds (16 MiB): a flood of refusals, counted as
    // lost beyond that.
    let deadline = Instant::now() + Duration::from_secs(60);
    while audit_status(&agent)["lost"].as_u64() == Some(0) {
        assert!(Instant::now() < deadline, "nothing was counted lost");
        let counts = connect_loop(&confined, &t.de.target(), 2000)
            .join()
            .unwrap();
        assert_eq!(counts.keys().collect::<Vec<_>>(), ["EPERM"], "{counts:?}");
    }
    // The flood's last events may still be on their way from the kernel:
    // the count is read once it holds still.
    let mut lost = audit_status(&agent);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let again = audit_status(&agent);
        if again["lost"] == lost["lost"] {
            break;
        }
        assert!(Instant::now() < deadline, "the lost count never settled");
        lost = again;
    }
    let lost_count = lost["lost"].as_u64().unwrap();
    assert_eq!(lost["lost_now"], lost_count);
    assert!(lost["held"].as_u64() > Some(1000), "{lost}");

    // Room again (the filler goes, the volume grows to hold what waits):
    // the held records are written, the failure declared.
    fs::remove_file(&filler).unwrap();
    disk.resize("64m");
    let back = wait_audit(
        &agent,
        "the log never came back",
        Duration::from_secs(15),
        |a| a["writable"] == true,
    );
    assert_eq!(back["refusing"], false);
    assert_eq!(back["lost"], lost_count);
    assert_eq!(outcomes(&run_probe(Some(&confined), &de)), ["ok"]);
    let body = geowall_tests::scrape_metrics(port);
    assert_eq!(metric(&body, "geowall_audit_writable"), 1.0);
    assert_eq!(metric(&body, "geowall_audit_failing_since_seconds"), 0.0);
    assert_eq!(
        metric(&body, "geowall_audit_records_lost_total"),
        lost_count as f64
    );

    let recs = records(&agent);
    let refusal = recs
        .iter()
        .find(|r| r["reason"] == "audit")
        .unwrap_or_else(|| panic!("no refusal for the audit log on record"));
    assert_eq!(refusal["verdict"], "deny");
    assert_eq!(refusal["policy"], "eu-only");
    let failed = recs
        .iter()
        .find(|r| r["kind"] == "log" && r["event"] == "write_failed")
        .expect("the failure on record");
    assert_eq!(failed["error"], "No space left on device");
    assert_eq!(failed["lost"], lost_count);
    let declared = recs
        .iter()
        .find(|r| r["kind"] == "lost" && r["reason"] == "audit_write: No space left on device")
        .expect("the lost records declared");
    assert_eq!(declared["count"], lost_count);
    assert_eq!(
        declared["seq"].as_u64(),
        failed["seq"].as_u64().map(|s| s + 1)
    );
    // The records held were written before the failure's record, in order.
    assert!(refusal["seq"].as_u64() < failed["seq"].as_u64());
    println!("{}", serde_json::to_string(failed).unwrap());
    println!("{}", serde_json::to_string(declared).unwrap());

    // A file cut short by the failed write was closed, not appended to.
    let torn_files: Vec<PathBuf> = agent
        .log_files()
        .into_iter()
        .filter(|f| !fs::read(f).unwrap().ends_with(b"\n"))
        .collect();
    let verify = agent.cli(&["log", "verify"]);
    let out = text(&verify);
    println!("$ geowall log verify   # space again\n{out}");
    assert!(verify.status.success(), "{out}");
    assert!(out.contains("could not be written from"), "{out}");
    assert!(
        out.contains(&format!(
            "{lost_count} record(s) lost (audit_write: No space left on device)"
        )),
        "{out}"
    );
    if !torn_files.is_empty() {
        assert!(torn_files.iter().all(|f| f != &agent.audit_log));
        assert!(out.contains("torn tail"), "{out}");
        assert!(out.contains("wrote the record whole"), "{out}");
    }
}

#[test]
fn a_torn_tail_is_named_by_verify_and_the_next_start_closes_it() {
    let cg = TestCgroup::new("torn");
    let confined = cg.child("confined");
    let mut agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\ncgroups = [\"/confined\"]\n")
        .keep_pins()
        .start();
    let us = Listener::on("127.20.0.1");
    let ops = vec![format!("tcp:{}", us.target()); 3];
    assert_eq!(outcomes(&run_probe(Some(&confined), &ops)), ["EPERM"; 3]);
    agent.wait_records("for the denials", 3, |r| r["verdict"] == "deny");
    assert!(agent.terminate().success());

    // The last record cut in half, as a write cut short leaves it.
    let log = agent.audit_log.clone();
    let bytes = fs::read(&log).unwrap();
    let text_before = String::from_utf8_lossy(&bytes).into_owned();
    let last_start = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let line_no = text_before.lines().count();
    let cut = last_start + (bytes.len() - 1 - last_start) / 2;
    fs::write(&log, &bytes[..cut]).unwrap();
    let torn_len = cut - last_start;

    // With nothing after it, verify names it, and not as an edit.
    let out = agent.cli(&["log", "verify"]);
    let report = text(&out);
    println!("$ geowall log verify   # the agent stopped, its last record cut in half\n{report}");
    assert_eq!(out.status.code(), Some(1), "{report}");
    let want = format!("audit.jsonl:{line_no}: torn tail: {torn_len} bytes at offset {last_start}");
    assert!(report.contains(&want), "no {want:?} in:\n{report}");
    assert!(report.contains("not declared yet"), "{report}");
    assert!(!report.contains("changed after"), "{report}");

    // The next start closes the file as it is and declares the tail.
    agent.restart();
    let header = agent.wait_record("for the new file's first record", |r| {
        r["kind"] == "log" && r["torn_tail"].is_object()
    });
    assert_eq!(header["event"], "rotated");
    assert_eq!(header["torn_tail"]["bytes"], torn_len);
    assert_eq!(header["torn_tail"]["offset"], last_start);
    let closed = log.with_file_name(header["previous"].as_str().unwrap());
    assert_eq!(fs::read(&closed).unwrap(), &bytes[..cut]);
    let recovered = agent.wait_record("for the recovery record", |r| {
        r["kind"] == "agent" && r["event"] == "recovered"
    });
    assert_eq!(
        recovered["seq"].as_u64(),
        header["seq"].as_u64().map(|s| s + 1)
    );
    // New records go to the new file; the closed one is never appended to.
    assert_eq!(outcomes(&run_probe(Some(&confined), &ops[..1])), ["EPERM"]);
    let deny = agent.wait_record("for the new denial", |r| {
        r["verdict"] == "deny" && r["seq"].as_u64() > recovered["seq"].as_u64()
    });
    let active = fs::read_to_string(&log).unwrap();
    assert!(active.starts_with("{\"v\":2,"));
    assert!(active.contains(&format!("\"seq\":{},", deny["seq"])));
    assert_eq!(fs::read(&closed).unwrap(), &bytes[..cut]);

    let out = agent.cli(&["log", "verify"]);
    let report = text(&out);
    println!("$ geowall log verify   # after the restart\n{report}");
    assert!(out.status.success(), "{report}");
    let name = closed.file_name().unwrap().to_string_lossy().into_owned();
    let want = format!(
        "warning: {}:{line_no}: torn tail: {torn_len} bytes",
        closed.display()
    );
    assert!(report.contains(&want), "no {want:?} in:\n{report}");
    assert!(report.contains("declared by"), "{report}");
    assert!(report.contains("declared gaps: 1 torn tail(s)"), "{report}");
    assert!(!name.is_empty());
}
