//! `geowall log tail` and `geowall log verify`: read the audit log files
//! directly, so both work with the agent down.

use std::{
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use super::{
    args::{LogCommand, TailArgs},
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
    dns::pattern::NamePattern,
    vocab::clock as time,
};

pub(super) fn run(cmd: LogCommand) -> Result<ExitCode> {
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
fn config_log(config: &Path) -> Result<LogSet> {
    let c = Config::load(config)?;
    let path = c.audit_log_path();
    if path == Path::new("-") {
        bail!(
            "{}: [agent] audit_log is '-' (standard output): there are no files to read",
            config.display()
        );
    }
    Ok(LogSet::new(path))
}

/// The files to read and the log to follow.
fn sources(config: &Path, files: Vec<PathBuf>) -> Result<(Vec<PathBuf>, Option<LogSet>)> {
    if files.is_empty() {
        let set = config_log(config)?;
        let files = log_files(&set)?;
        return Ok((files, Some(set)));
    }
    for f in &files {
        if !f.is_file() {
            bail!("{}: no such file", f.display());
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

/// The files of the log `set`.
fn log_files(set: &LogSet) -> Result<Vec<PathBuf>> {
    set.files()
        .with_context(|| set.active().display().to_string())
}

fn filter(args: &TailArgs) -> Result<Filter> {
    let now = time::unix_now_ns();
    Ok(Filter {
        denied: args.denied,
        since_ns: args
            .since
            .as_deref()
            .map(|s| filter::parse_since(s, now))
            .transpose()?,
        policy: args.policy.clone(),
        regions: args.region.as_deref().map(filter::region_set),
        job: args.job.clone(),
        comm: args.comm.clone(),
        dest: args
            .dest
            .as_deref()
            .map(|d| {
                d.parse::<ipnetwork::IpNetwork>()
                    .with_context(|| format!("--dest '{d}'"))
            })
            .transpose()?,
        name: args
            .name
            .as_deref()
            .map(|n| NamePattern::parse(n).context("--name"))
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

fn tail_cmd(args: TailArgs) -> Result<ExitCode> {
    let filter = filter(&args)?;
    if args.files.iter().any(|f| f == Path::new("-")) {
        if args.files.len() > 1 {
            bail!("`-` (standard input) cannot be read with other files");
        }
        return tail_stdin(&args, filter);
    }
    let (files, set) = sources(&args.config.config, args.files.clone())?;
    let files = match &set {
        Some(set) => follow::files_since(set, files, filter.since_ns),
        None => files,
    };
    if args.summary {
        let mut sum = Summary::default();
        follow::for_each_record(&files, |_, rec| {
            if filter.matches(rec) {
                sum.add(rec);
            }
        })?;
        let text = if args.json {
            let mut v = sum.to_json();
            v["files"] = json!(files);
            format!("{v}\n")
        } else {
            sum.render(colour_on())
        };
        let _ = std::io::stdout().write_all(text.as_bytes());
        return Ok(ExitCode::SUCCESS);
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
            bail!(
                "--follow: the newest file given is a rotated one; give the active file (or --config)"
            );
        };
        return follow(set, limit, &mut printer);
    }
    for (line, rec) in &newest(&files, None, limit, &printer.filter)? {
        if !printer.print(line, rec) {
            return Ok(ExitCode::SUCCESS);
        }
    }
    printer.flush();
    Ok(ExitCode::SUCCESS)
}

/// `geowall log tail -`: the records on standard input, each printed as
/// it arrives (the demo pipes the agent's `audit_log = "-"` through it).
/// A line that is no record passes through unchanged; `--summary` counts
/// until the input ends.
fn tail_stdin(args: &TailArgs, filter: Filter) -> Result<ExitCode> {
    use std::io::BufRead;
    if args.follow {
        bail!("--follow: standard input is read as it comes anyway; leave --follow out");
    }
    if args.lines.is_some() {
        bail!("-n: standard input has no end to count back from; leave -n out");
    }
    let mut sum = args.summary.then(Summary::default);
    let mut printer = Printer {
        out: std::io::BufWriter::new(std::io::stdout()),
        json: args.json,
        colour: !args.json && colour_on(),
        filter,
    };
    let mut input = std::io::stdin().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .context("standard input")?
            == 0
        {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        let open = match (serde_json::from_str::<Value>(text), &mut sum) {
            (Ok(rec), Some(sum)) => {
                if printer.filter.matches(&rec) {
                    sum.add(&rec);
                }
                true
            }
            (Ok(rec), None) => printer.print(text, &rec) && printer.flush(),
            (Err(_), Some(_)) => true,
            (Err(_), None) => writeln!(printer.out, "{text}").is_ok() && printer.flush(),
        };
        if !open {
            return Ok(ExitCode::SUCCESS);
        }
    }
    if let Some(sum) = sum {
        let text = if args.json {
            format!("{}\n", sum.to_json())
        } else {
            sum.render(colour_on())
        };
        let _ = std::io::stdout().write_all(text.as_bytes());
    }
    printer.flush();
    Ok(ExitCode::SUCCESS)
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
) -> Result<Vec<(String, Value)>> {
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
        let bytes = std::fs::read(f).with_context(|| f.display().to_string())?;
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

fn follow(set: LogSet, limit: Option<usize>, printer: &mut Printer) -> Result<ExitCode> {
    let mut follower =
        Follower::open(set.clone()).with_context(|| set.active().display().to_string())?;
    // What is there now: the rotated files other than the one followed,
    // then the followed file up to where following starts.
    let files = follow::files_except(&set, follower.file_id())?;
    let head = follower.read_head(follower.offset())?;
    for (line, rec) in &newest(&files, Some(&head), limit, &printer.filter)? {
        if !printer.print(line, rec) {
            return Ok(ExitCode::SUCCESS);
        }
    }
    loop {
        if !printer.flush() {
            return Ok(ExitCode::SUCCESS);
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
        polled.with_context(|| set.active().display().to_string())?;
        if !open {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn verify_cmd(config: &Path, files: Vec<PathBuf>, as_json: bool) -> Result<ExitCode> {
    let files = if files.is_empty() {
        log_files(&config_log(config)?)?
    } else {
        verify::order(&files)
    };
    if files.is_empty() {
        return Err(anyhow!("no audit log files to check"));
    }
    let report = verify::verify(&files)?;
    if as_json {
        let v = json!({
            "ok": report.problems.is_empty(),
            "files": report.files,
            "records": report.records,
            "first_seq": report.first_seq,
            "last_seq": report.last_seq,
            "problems": report.problems.iter().map(|p| json!({"file": p.file, "line": p.line, "message": p.message})).collect::<Vec<_>>(),
            "notes": report.notes,
            "gaps": report.gaps.iter().map(|p| json!({"file": p.file, "line": p.line, "message": p.message})).collect::<Vec<_>>(),
            "torn_tails": report.torn_tails,
            "lost": report.lost,
        });
        println!("{v}");
    } else {
        for n in &report.notes {
            println!("note: {n}");
        }
        for g in &report.gaps {
            println!("warning: {g}");
        }
        for p in &report.problems {
            println!("{p}");
        }
        if report.problems.is_empty() {
            let mut declared = Vec::new();
            if report.torn_tails > 0 {
                declared.push(format!("{} torn tail(s)", report.torn_tails));
            }
            for (reason, n) in &report.lost {
                declared.push(format!("{n} record(s) lost ({reason})"));
            }
            println!(
                "ok: {} file(s), {} records (seq {}–{}): the chain is intact{}",
                report.files.len(),
                report.records,
                report.first_seq.map_or("-".into(), |s| s.to_string()),
                report.last_seq.map_or("-".into(), |s| s.to_string()),
                if declared.is_empty() {
                    String::new()
                } else {
                    format!("; declared gaps: {}", declared.join(", "))
                }
            );
        }
    }
    Ok(match report.problems.first() {
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
    })
}
