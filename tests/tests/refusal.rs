//! What a refused job reads: `geowall exec` prints one line per refused
//! destination on the job's standard error (rate-limited; `--quiet`: none),
//! never inside a line of the job's own output, and the job's exit code is
//! its own.

use std::{
    collections::BTreeSet,
    process::{Command, Output},
};

use geowall_tests::{Agent, AgentSpec, Listener, TestCgroup, geowall_cmd, netprobe, outcomes};

const MAP: &str = "\
127.20.0.0/16 US
127.30.0.0/16 DE
";

const POLICY: &str = r#"
[[policy]]
name = "eu-only"
allow = ["EU"]
approvable = true
max_grant = "1h"
"#;

fn agent(cg: &TestCgroup) -> Agent {
    AgentSpec::new(cg)
        .cidr_map("test.cidr", MAP)
        .config(POLICY)
        .start()
}

/// `geowall [FLAGS] exec --policy eu-only --job JOB -- CMD…`, its standard
/// error a pipe.
fn exec(agent: &Agent, flags: &[&str], job: &str, cmd: &[&str]) -> Output {
    Command::new(geowall_tests::geowall())
        .args(flags)
        .args(["exec", "--config"])
        .arg(&agent.config)
        .args(["--policy", "eu-only", "--job", job, "--"])
        .args(cmd)
        .output()
        .expect("run geowall exec")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The refusal lines of geowall in `text`.
fn refusal_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("geowall: ") && l.contains("refused"))
        .collect()
}

#[test]
fn a_job_refused_twice_reads_one_line_that_names_the_way_to_ask() {
    let cg = TestCgroup::new("refusal-once");
    let agent = agent(&cg);
    let us = Listener::on("127.20.0.1");
    let de = Listener::on("127.30.0.1");
    let probe = netprobe();
    let (to_us, to_de) = (
        format!("tcp:{}", us.target()),
        format!("tcp:{}", de.target()),
    );
    let out = exec(
        &agent,
        &[],
        "twice",
        &[probe.to_str().unwrap(), &to_us, &to_de, &to_us],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(outcomes(&out), ["EPERM", "ok", "EPERM"]);
    let text = stderr(&out);
    let lines = refusal_lines(&text);
    let dest = us.target();
    assert_eq!(
        lines,
        [format!(
            "geowall: {dest} (US) refused by policy eu-only — request access: geowall approvals \
             request --to {dest} --job twice --for 1h --reason '…'"
        )],
        "exactly one line for the destination refused twice:\n{text}"
    );
    eprintln!("geowall exec's standard error:\n{text}");
}

/// On a terminal the job keeps it (a pipe would change what `isatty` says);
/// the line is written whole, once.
#[test]
fn a_job_on_a_terminal_keeps_it_and_reads_the_line() {
    let cg = TestCgroup::new("refusal-tty");
    let agent = agent(&cg);
    let us = Listener::on("127.20.0.1");
    let job = format!(
        "test -t 2 && echo stderr-is-a-terminal; {} tcp:{} >/dev/null; exit 4",
        netprobe().display(),
        us.target()
    );
    let inner = format!(
        "{} exec --config {} --policy eu-only --job tty -- sh -c '{job}'",
        geowall_tests::geowall().display(),
        agent.config.display()
    );
    // script(1) runs it on a pseudo-terminal and copies what it shows.
    let out = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script(1) from util-linux");
    let shown = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert_eq!(out.status.code(), Some(4), "{shown}");
    assert!(shown.contains("stderr-is-a-terminal"), "{shown}");
    let lines = refusal_lines(&shown);
    assert_eq!(lines.len(), 1, "{shown}");
    assert!(
        lines[0].starts_with(&format!(
            "geowall: {} (US) refused by policy eu-only",
            us.target()
        )),
        "{shown}"
    );
}

#[test]
fn the_printed_request_asks_for_the_destination_and_port_of_a_running_job() {
    let cg = TestCgroup::new("refusal-ask");
    // A policy that grants at most 20 minutes: the request asks for that.
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP)
        .config(&POLICY.replace("max_grant = \"1h\"", "max_grant = \"20m\""))
        .start();
    let us = Listener::on("127.20.0.1");
    let probe = netprobe();
    let to_us = format!("tcp:{}", us.target());
    // The job lives on after its refusal: the request is made while it runs.
    let mut job = Command::new(geowall_tests::geowall())
        .args(["exec", "--config"])
        .arg(&agent.config)
        .args(["--policy", "eu-only", "--job", "asking2", "--"])
        .args([probe.to_str().unwrap(), &to_us, "sleep:5000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = job.stderr.take().unwrap();
    let mut seen = Vec::new();
    let line = loop {
        let mut buf = [0u8; 4096];
        let n = std::io::Read::read(&mut err, &mut buf).unwrap();
        assert!(n > 0, "no refusal line before the job ended");
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some(l) = text.lines().find(|l| l.contains("request access")) {
            break l.to_owned();
        }
    };
    // The command as printed, with a reason of one's own.
    let command = line.split_once("request access: geowall ").unwrap().1;
    let args: Vec<&str> = command
        .strip_suffix(" --reason '…'")
        .unwrap_or_else(|| panic!("{line}"))
        .split(' ')
        .collect();
    assert_eq!(args[..2], ["approvals", "request"], "{line}");
    assert!(command.contains(" --for 20m "), "{line}");
    let asked = geowall_cmd("approvals request", &agent.config)
        .args(&args[2..])
        .args(["--reason", "the job needs it", "--json"])
        .output()
        .unwrap();
    assert!(asked.status.success(), "{}", stderr(&asked));
    let view: serde_json::Value = serde_json::from_slice(&asked.stdout).unwrap();
    assert_eq!(view["job"], "asking2", "{view}");
    assert_eq!(view["to"], "127.20.0.1/32", "{view}");
    assert_eq!(view["port"], us.addr.port(), "{view}");
    assert!(job.wait().unwrap().success());
}

#[test]
fn quiet_tells_nothing_and_leaves_standard_error_alone() {
    let cg = TestCgroup::new("refusal-quiet");
    let agent = agent(&cg);
    let us = Listener::on("127.20.0.1");
    let probe = netprobe();
    let to_us = format!("tcp:{}", us.target());
    let out = exec(
        &agent,
        &["--quiet"],
        "quiet",
        &[probe.to_str().unwrap(), &to_us],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(outcomes(&out), ["EPERM"]);
    assert!(refusal_lines(&stderr(&out)).is_empty(), "{}", stderr(&out));
    // The refusal is recorded all the same.
    agent.wait_record("for the denial", |r| {
        r["verdict"] == "deny" && r["job"] == "quiet"
    });

    // Without --quiet, standard error is a pipe geowall relays; with it,
    // the job's own.
    let fd2 = |flags: &[&str]| {
        let dir = geowall_tests::TempDir::new("fd2");
        let file = dir.path().join("err");
        let out = Command::new(geowall_tests::geowall())
            .args(flags)
            .args(["exec", "--config"])
            .arg(&agent.config)
            .args(["--policy", "eu-only", "--", "readlink", "/proc/self/fd/2"])
            .stderr(std::fs::File::create(&file).unwrap())
            .output()
            .unwrap();
        assert!(out.status.success());
        (String::from_utf8_lossy(&out.stdout).trim().to_owned(), file)
    };
    let (told, _) = fd2(&[]);
    assert!(told.starts_with("pipe:"), "{told}");
    let (quiet, file) = fd2(&["--quiet"]);
    assert_eq!(quiet, file.display().to_string());
}

#[test]
fn exit_codes_are_the_jobs_own() {
    let cg = TestCgroup::new("refusal-codes");
    let agent = agent(&cg);
    let us = Listener::on("127.20.0.1");
    let probe = netprobe();
    let script = format!("{} tcp:{} >/dev/null; exit 3", probe.display(), us.target());
    for flags in [&[][..], &["--quiet"][..]] {
        let out = exec(&agent, flags, "codes", &["sh", "-c", &script]);
        assert_eq!(out.status.code(), Some(3), "{flags:?}: {}", stderr(&out));
        let lines = refusal_lines(&stderr(&out)).len();
        assert_eq!(
            lines,
            usize::from(flags.is_empty()),
            "{flags:?}: {}",
            stderr(&out)
        );
    }
    // What telling costs a refused job's run (printed, not asserted: a
    // figure, not a timed test).
    let to_us = format!("tcp:{}", us.target());
    for flags in [&["--quiet"][..], &[][..]] {
        let mut ms: Vec<u128> = (0..5)
            .map(|_| {
                let start = std::time::Instant::now();
                exec(&agent, flags, "timed", &[probe.to_str().unwrap(), &to_us]);
                start.elapsed().as_millis()
            })
            .collect();
        ms.sort_unstable();
        eprintln!(
            "geowall exec {flags:?} of a refused connect: median {} ms",
            ms[2]
        );
    }
    let out = exec(&agent, &[], "signalled", &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(128 + 15));
    let out = exec(&agent, &[], "missing", &["/nonexistent/cmd"]);
    assert_eq!(out.status.code(), Some(127));
}

/// A job writes long lines (5,000 bytes: more than a pipe writes at once,
/// more than geowall holds back) to standard error in a loop while one of
/// its processes is refused 25 destinations: every line of standard error is
/// either one of the job's, whole, or one of geowall's; at most 5 lines a
/// second, the rest summed up.
#[test]
fn refusal_lines_never_land_inside_a_line_of_the_job() {
    let cg = TestCgroup::new("refusal-lines");
    let agent = agent(&cg);
    let probe = netprobe();
    let mut ops = String::new();
    for port in 1001..=1025 {
        ops.push_str(&format!(" tcp:127.20.0.1:{port} sleep:100"));
    }
    let script = format!(
        r#"
x=$(head -c 5000 /dev/zero | tr '\0' x)
( i=0; while [ $i -lt 300 ]; do
    printf 'LINE %d %s END\n' $i "$x" >&2
    i=$((i+1))
    [ $((i % 20)) -eq 0 ] && sleep 0.2
  done ) &
{probe}{ops} >/dev/null
wait
exit 5
"#,
        probe = probe.display()
    );
    let out = exec(&agent, &[], "lines", &["sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let text = stderr(&out);
    let x = "x".repeat(5000);
    let mut job_lines = BTreeSet::new();
    let mut told = BTreeSet::new();
    let mut more = 0u64;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("LINE ") {
            let (n, body) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("cut line: {line:.80}"));
            assert_eq!(body, format!("{x} END"), "job line {n} was cut or mixed");
            assert!(
                job_lines.insert(n.parse::<u32>().unwrap()),
                "line {n} twice"
            );
        } else if let Some(k) = line
            .strip_prefix("geowall: … and ")
            .and_then(|r| r.strip_suffix(" more refused"))
        {
            more += k.parse::<u64>().unwrap();
        } else if line.starts_with("geowall: 127.20.0.1:") {
            let dest = line.split(' ').nth(1).unwrap();
            assert!(told.insert(dest.to_owned()), "{dest} told twice");
            assert!(line.contains("(US) refused by policy eu-only"), "{line}");
        } else {
            panic!("a line that is neither the job's nor geowall's: {line:.120}");
        }
    }
    assert_eq!(job_lines.len(), 300, "every line of the job, whole");
    assert_eq!(
        told.len() as u64 + more,
        25,
        "each refused destination told or counted: {told:?} + {more}"
    );
    // 25 refusals over 2.5 s: the limit of 5 a second held some back.
    assert!(told.len() < 25 && more > 0, "{told:?} + {more}");
    eprintln!(
        "{} job lines whole; {} refusal lines, {more} more summed up",
        job_lines.len(),
        told.len()
    );
}

/// A destination the job reached by a name it resolved through the agent
/// is told by that name (and its address), and the request asks for the
/// name.
#[test]
fn a_resolved_name_is_told_by_its_name() {
    use geowall_tests::dns::{self, DnsServer};
    let cg = TestCgroup::new("refusal-name");
    let server = DnsServer::start();
    let agent = agent(&cg);
    let us = Listener::on("127.20.0.13");
    let port = us.addr.port();
    let probe = netprobe().display().to_string();
    let resolve = format!("resolve:shared1.test:{port}");
    let cmd = dns::with_resolv(&server.resolv_conf(), None, &[&probe, &resolve]);
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let out = exec(&agent, &[], "named", &cmd);
    assert_eq!(outcomes(&out), ["EPERM"], "{}", stderr(&out));
    let text = stderr(&out);
    assert_eq!(
        refusal_lines(&text),
        [format!(
            "geowall: shared1.test:{port} (127.20.0.13, US) refused by policy eu-only — request \
             access: geowall approvals request --to shared1.test:{port} --job named --for 1h \
             --reason '…'"
        )],
        "{text}"
    );
}

/// `2>&1`: standard output and standard error were one file, so the job
/// gets the one pipe as both, and its output keeps its order around the
/// refusal line.
#[test]
fn one_file_for_both_stays_one_pipe_in_order() {
    let cg = TestCgroup::new("refusal-2to1");
    let agent = agent(&cg);
    let us = Listener::on("127.20.0.1");
    let job = format!(
        "readlink /proc/self/fd/1 /proc/self/fd/2; echo before; {} tcp:{} >/dev/null; \
         sleep 0.5; echo after",
        netprobe().display(),
        us.target()
    );
    let outer = format!(
        "{} exec --config {} --policy eu-only --job both -- sh -c '{job}' 2>&1",
        geowall_tests::geowall().display(),
        agent.config.display()
    );
    let out = Command::new("sh").args(["-c", &outer]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[0].starts_with("pipe:") && lines[0] == lines[1],
        "{text}"
    );
    assert_eq!(lines[2], "before", "{text}");
    assert!(lines[3].starts_with("geowall: 127.20.0.1:"), "{text}");
    assert_eq!(lines[4], "after", "{text}");
}

#[test]
fn a_refusal_as_the_job_exits_is_still_told() {
    // The refusal reaches geowall exec's poller just as the job's exit
    // does: the line must come all the same, every time.
    let cg = TestCgroup::new("refusal-exit");
    let agent = agent(&cg);
    let probe = netprobe();
    for i in 0..40 {
        let out = exec(
            &agent,
            &[],
            &format!("quick-{i}"),
            &[probe.to_str().unwrap(), "tcp:127.20.0.9:443"],
        );
        assert_eq!(outcomes(&out), ["EPERM"]);
        let text = stderr(&out);
        assert_eq!(
            refusal_lines(&text).len(),
            1,
            "run {i}: no refusal line in {text:?}"
        );
    }
}
