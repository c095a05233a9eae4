//! `geowall log tail` and `geowall log verify`: read the audit log files
//! directly, so both work with the agent down.

use std::{
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{
    ConfigArg,
    render::{self, Summary},
};
use geowall::{
    audit::{
        filter::{self, Filter},
        follow::{self, Follower},
        log_files::LogSet,
        verify,
    },
    config::Config,
    vocab::clock as time,
};

#[derive(Subcommand, Debug)]
pub enum LogCommand {
    /// Show flow records: the newest ones, those since a time, or all that
    /// come (--follow); filtered, one line each, or raw JSON, or counted
    /// (--summary).
    Tail(TailArgs),
    /// Check the hash chain and the sequence of the log's files; name the
    /// first line that breaks them. Exits 1 when one does.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// Files to check (default: the config's audit log and the files
        /// rotated out of it). Checked in the order of their records.
        files: Vec<PathBuf>,
        /// Machine-readable report.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct TailArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Files to read (default: the config's audit log and the files
    /// rotated out of it).
    files: Vec<PathBuf>,
    /// Only denials (deny and would_deny; lost-event records too).
    #[arg(long)]
    denied: bool,
    /// Keep printing records as they are written (across rotation).
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only records since then: a duration ago (30s, 10m, 2h, 1d) or an RFC
    /// 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Show at most the last N matching records (default 20; with --since:
    /// all).
    #[arg(long, short = 'n')]
    lines: Option<usize>,
    /// Only this policy.
    #[arg(long)]
    policy: Option<String>,
    /// Only destinations tagged with this region, group (EU, EEA) or any of
    /// a comma-separated list; `untagged` for none.
    #[arg(long)]
    region: Option<String>,
    /// Only this job (`name*`: a prefix).
    #[arg(long)]
    job: Option<String>,
    /// Only this process name (`name*`: a prefix).
    #[arg(long)]
    comm: Option<String>,
    /// Only destinations in this CIDR (or this address).
    #[arg(long)]
    dest: Option<String>,
    /// The raw records (JSON lines), as written.
    #[arg(long)]
    json: bool,
    /// Counts by policy × verdict × region over the records (with --since:
    /// over that window), the denied destinations, lost events.
    #[arg(long, conflicts_with_all = ["follow", "lines"])]
    summary: bool,
}

pub fn run(cmd: LogCommand) -> ExitCode {
    match cmd {
        LogCommand::Tail(args) => tail_cmd(args),
        LogCommand::Verify {
            config,
            files,
            json,
        } => verify_cmd(&config.config, files, json),
    }
}

/// The log named by `--config` (when no FILE is given).
fn config_log(config: &Path) -> Result<LogSet, String> {
    let c = Config::load(config).map_err(|e| e.to_string())?;
    let path = c.audit_log_path();
    if path == Path::new("-") {
        return Err(format!(
            "{}: [agent] audit_log is '-' (standard output): there are no files to read",
            config.display()
        ));
    }
    Ok(LogSet::new(path))
}

/// The files to read and the log to follow.
fn sources(config: &Path, files: Vec<PathBuf>) -> Result<(Vec<PathBuf>, Option<LogSet>), String> {
    if files.is_empty() {
        let set = config_log(config)?;
        let files = set
            .files()
            .map_err(|e| format!("{}: {e}", set.active().display()))?;
        return Ok((files, Some(set)));
    }
    for f in &files {
        if !f.is_file() {
            return Err(format!("{}: no such file", f.display()));
        }
    }
    let ordered = verify::order(&files);
    // The newest file, unless it is a rotated one, is the log to follow.
    let follow = ordered
        .last()
        .filter(|f| !follow::looks_rotated(f))
        .map(LogSet::new);
    Ok((ordered, follow))
}

fn filter(args: &TailArgs) -> Result<Filter, String> {
    let now = time::unix_now_ns();
    Ok(Filter {
        denied: args.denied,
        since_ns: args
            .since
            .as_deref()
            .map(|s| filter::parse_since(s, now))
            .transpose()
            .map_err(|e| geowall::vocab::error::chain(&e))?,
        policy: args.policy.clone(),
        regions: args.region.as_deref().map(filter::region_set),
        job: args.job.clone(),
        comm: args.comm.clone(),
        dest: args
            .dest
            .as_deref()
            .map(|d| {
                d.parse::<ipnetwork::IpNetwork>()
                    .map_err(|e| format!("--dest '{d}': {e}"))
            })
            .transpose()?,
    })
}

/// Prints records; stops quietly when the reader goes away.
struct Printer {
    out: std::io::BufWriter<std::io::Stdout>,
    json: bool,
    colour: bool,
    filter: Filter,
}

impl Printer {
    /// Prints `line` if it passes; false once standard output is closed.
    fn print(&mut self, line: &str, rec: &Value) -> bool {
        if !self.filter.matches(rec) {
            return true;
        }
        let r = if self.json {
            writeln!(self.out, "{line}")
        } else {
            writeln!(self.out, "{}", render::compact(rec, self.colour))
        };
        r.is_ok()
    }

    fn flush(&mut self) -> bool {
        self.out.flush().is_ok()
    }
}

fn tail_cmd(args: TailArgs) -> ExitCode {
    let filter = match filter(&args) {
        Ok(f) => f,
        Err(e) => return super::fail(e),
    };
    let (files, set) = match sources(&args.config.config, args.files.clone()) {
        Ok(s) => s,
        Err(e) => return super::fail(e),
    };
    let files = match &set {
        Some(set) => follow::files_since(set, files, filter.since_ns),
        None => files,
    };
    if args.summary {
        let mut sum = Summary::default();
        let read = follow::for_each_record(&files, |_, rec| {
            if filter.matches(rec) {
                sum.add(rec);
            }
        });
        if let Err(e) = read {
            return super::fail(e);
        }
        let text = if args.json {
            let mut v = sum.to_json();
            v["files"] = json!(files);
            format!("{v}\n")
        } else {
            sum.render(colour_on())
        };
        let _ = std::io::stdout().write_all(text.as_bytes());
        return ExitCode::SUCCESS;
    }
    let mut printer = Printer {
        out: std::io::BufWriter::new(std::io::stdout()),
        json: args.json,
        colour: !args.json && colour_on(),
        filter,
    };
    let limit = match (args.lines, &printer.filter.since_ns) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(20),
    };
    if args.follow {
        let Some(set) = set else {
            return super::fail(
                "--follow: the newest file given is a rotated one; give the active file (or --config)",
            );
        };
        return follow(set, limit, &mut printer);
    }
    match newest(&files, None, limit, &printer.filter) {
        Ok(records) => {
            for (line, rec) in &records {
                if !printer.print(line, rec) {
                    return ExitCode::SUCCESS;
                }
            }
            printer.flush();
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(e),
    }
}

fn colour_on() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The matching records of `files` (then of `head`, the start of the
/// followed file), the last `limit` of them.
fn newest(
    files: &[PathBuf],
    head: Option<&[u8]>,
    limit: Option<usize>,
    filter: &Filter,
) -> std::io::Result<Vec<(String, Value)>> {
    let mut out: Vec<(String, Value)> = Vec::new();
    let matching = |bytes: &[u8]| -> Vec<(String, Value)> {
        bytes
            .split(|b| *b == b'\n')
            .filter_map(|l| {
                let v: Value = serde_json::from_slice(l).ok()?;
                filter
                    .matches(&v)
                    .then(|| (String::from_utf8_lossy(l).into_owned(), v))
            })
            .collect()
    };
    // Newest first, until enough are found.
    if let Some(h) = head {
        out = matching(h);
    }
    for f in files.iter().rev() {
        if limit.is_some_and(|n| out.len() >= n) {
            break;
        }
        let bytes = std::fs::read(f)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", f.display())))?;
        let mut older = matching(&bytes);
        older.append(&mut out);
        out = older;
    }
    if let Some(n) = limit {
        let extra = out.len().saturating_sub(n);
        out.drain(..extra);
    }
    Ok(out)
}

fn follow(set: LogSet, limit: Option<usize>, printer: &mut Printer) -> ExitCode {
    let mut follower = match Follower::open(set.clone()) {
        Ok(f) => f,
        Err(e) => return super::fail(format!("{}: {e}", set.active().display())),
    };
    // What is there now: the rotated files other than the one followed,
    // then the followed file up to where following starts.
    let start = (|| {
        let files = follow::files_except(&set, follower.file_id())?;
        let head = follower.read_head(follower.offset())?;
        newest(&files, Some(&head), limit, &printer.filter)
    })();
    match start {
        Ok(records) => {
            for (line, rec) in &records {
                if !printer.print(line, rec) {
                    return ExitCode::SUCCESS;
                }
            }
        }
        Err(e) => return super::fail(e),
    }
    loop {
        if !printer.flush() {
            return ExitCode::SUCCESS;
        }
        let mut open = true;
        let polled = follower.poll(&mut |line| {
            if !open {
                return;
            }
            if let Ok(rec) = serde_json::from_slice::<Value>(line) {
                open = printer.print(&String::from_utf8_lossy(line), &rec);
            }
        });
        if let Err(e) = polled {
            return super::fail(format!("{}: {e}", set.active().display()));
        }
        if !open {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn verify_cmd(config: &Path, files: Vec<PathBuf>, as_json: bool) -> ExitCode {
    let files = if files.is_empty() {
        match config_log(config).and_then(|set| {
            set.files()
                .map_err(|e| format!("{}: {e}", set.active().display()))
        }) {
            Ok(f) => f,
            Err(e) => return super::fail(e),
        }
    } else {
        verify::order(&files)
    };
    if files.is_empty() {
        return super::fail("no audit log files to check");
    }
    let report = match verify::verify(&files) {
        Ok(r) => r,
        Err(e) => return super::fail(e),
    };
    if as_json {
        let v = json!({
            "ok": report.problems.is_empty(),
            "files": report.files,
            "records": report.records,
            "first_seq": report.first_seq,
            "last_seq": report.last_seq,
            "problems": report.problems.iter().map(|p| json!({"file": p.file, "line": p.line, "message": p.message})).collect::<Vec<_>>(),
            "notes": report.notes,
        });
        println!("{v}");
    } else {
        for n in &report.notes {
            println!("note: {n}");
        }
        for p in &report.problems {
            println!("{p}");
        }
        if report.problems.is_empty() {
            println!(
                "ok: {} file(s), {} records (seq {}–{}): the chain is intact",
                report.files.len(),
                report.records,
                report.first_seq.map_or("-".into(), |s| s.to_string()),
                report.last_seq.map_or("-".into(), |s| s.to_string()),
            );
        }
    }
    match report.problems.first() {
        None => ExitCode::SUCCESS,
        Some(first) => {
            if !as_json {
                eprintln!(
                    "geowall: error: the audit log does not verify: {} problem(s), the first at {}:{}",
                    report.problems.len(),
                    first.file.display(),
                    first.line
                );
            }
            ExitCode::from(1)
        }
    }
}
