//! Reading audit logs: filters, the compact one-line view, the summary by
//! policy × verdict × region, and following a log across rotation. Used by
//! `geowall log tail`; reads the files only, so it works with the agent
//! down.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom},
    net::IpAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use ipnetwork::IpNetwork;
use serde_json::{Value, json};

use super::set::LogSet;
use crate::vocab::{clock as time, glob::glob_match};

/// Which records to show.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only denials (`deny` and `would_deny`).
    pub denied: bool,
    /// Only records at or after this Unix time (ns).
    pub since_ns: Option<i128>,
    pub policy: Option<String>,
    /// Region tags, any of which the destination must carry (upper case;
    /// groups expanded).
    pub regions: Option<Vec<String>>,
    /// A job name (`name*` matches a prefix).
    pub job: Option<String>,
    /// A process name (`name*` matches a prefix).
    pub comm: Option<String>,
    pub dest: Option<IpNetwork>,
}

/// Region tags for `--region`: a tag, a group (`EU`, `EEA`), or several,
/// comma-separated.
pub fn region_set(arg: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in arg.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match crate::regions::groups::members(part) {
            Some(members) => out.extend(members.iter().map(|m| m.to_string())),
            None => out.push(part.to_owned()),
        }
    }
    out
}

/// `10m`, `2h`, `1d` ago, or an RFC 3339 time: Unix ns.
pub fn parse_since(arg: &str, now_ns: i128) -> Result<i128, String> {
    if let Some(t) = time::parse_rfc3339(arg) {
        return Ok(t);
    }
    crate::vocab::units::parse_duration(arg)
        .map(|d| now_ns - d.as_nanos() as i128)
        .map_err(|_| {
            format!("--since '{arg}': expected a duration (10m, 2h, 1d) or an RFC 3339 time")
        })
}

fn dst_of(rec: &Value) -> Option<IpAddr> {
    rec["dst"].as_str()?.parse().ok()
}

fn in_net(net: &IpNetwork, addr: IpAddr) -> bool {
    if net.contains(addr) {
        return true;
    }
    // An IPv4-mapped destination is judged (and matched) as IPv4.
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .is_some_and(|v4| net.contains(IpAddr::V4(v4))),
        IpAddr::V4(_) => false,
    }
}

impl Filter {
    /// Whether a filter about flows is set (other records then hide).
    fn about_flows(&self) -> bool {
        self.denied
            || self.policy.is_some()
            || self.regions.is_some()
            || self.job.is_some()
            || self.comm.is_some()
            || self.dest.is_some()
    }

    fn flow_matches(&self, rec: &Value) -> bool {
        if let Some(p) = &self.policy
            && rec["policy"].as_str() != Some(p.as_str())
        {
            return false;
        }
        if let Some(j) = &self.job
            && !rec["job"].as_str().is_some_and(|job| glob_match(j, job))
        {
            return false;
        }
        if let Some(c) = &self.comm
            && !rec["comm"].as_str().is_some_and(|comm| glob_match(c, comm))
        {
            return false;
        }
        if let Some(net) = &self.dest
            && !dst_of(rec).is_some_and(|a| in_net(net, a))
        {
            return false;
        }
        if let Some(regions) = &self.regions {
            let tags = rec["tags"].as_array();
            let hit = tags.is_some_and(|tags| {
                tags.iter()
                    .filter_map(Value::as_str)
                    .any(|t| regions.iter().any(|r| r.eq_ignore_ascii_case(t)))
            }) || (tags.is_none_or(Vec::is_empty)
                && regions.iter().any(|r| r.eq_ignore_ascii_case("untagged")));
            if !hit {
                return false;
            }
        }
        true
    }

    /// Whether `rec` is to be shown.
    pub fn matches(&self, rec: &Value) -> bool {
        if let Some(since) = self.since_ns {
            let t = rec["time"].as_str().and_then(time::parse_rfc3339);
            if t.is_none_or(|t| t < since) {
                return false;
            }
        }
        match rec["kind"].as_str() {
            None => {
                (!self.denied || matches!(rec["verdict"].as_str(), Some("deny" | "would_deny")))
                    && self.flow_matches(rec)
            }
            // Lost events may hide any decision: shown unless another
            // policy's.
            Some("lost") => self
                .policy
                .as_ref()
                .is_none_or(|p| rec["policy"].is_null() || rec["policy"].as_str() == Some(p)),
            Some("allowed") => !self.denied && self.flow_matches(rec),
            Some(_) => !self.about_flows(),
        }
    }
}

/// The ANSI colour of a verdict or kind.
fn colour(word: &str) -> &'static str {
    match word {
        "deny" => "\x1b[1;31m",
        "would_deny" => "\x1b[1;33m",
        "allow" => "\x1b[32m",
        "lost" => "\x1b[1;35m",
        "allowed" => "\x1b[32m",
        _ => "\x1b[36m",
    }
}

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";

/// The time of a record to the millisecond (`2026-11-01T12:00:00.123Z`).
fn short_time(rec: &Value) -> String {
    let t = rec["time"].as_str().unwrap_or("?");
    match t.get(..23) {
        Some(head) if t.len() > 23 && t.ends_with('Z') => format!("{head}Z"),
        _ => t.to_owned(),
    }
}

fn s<'a>(rec: &'a Value, key: &str) -> &'a str {
    rec[key].as_str().unwrap_or("")
}

/// `127.20.0.1:8080/tcp`, `[::1]:53/udp`.
fn target(rec: &Value) -> String {
    let dst = s(rec, "dst");
    let proto = rec["proto"].as_str().unwrap_or("?");
    if dst.is_empty() {
        return format!("{proto} socket");
    }
    let port = rec["dport"].as_u64().unwrap_or(0);
    if dst.contains(':') {
        format!("[{dst}]:{port}/{proto}")
    } else {
        format!("{dst}:{port}/{proto}")
    }
}

/// The destination's tags, comma-separated (`untagged` when none).
pub fn region_of(rec: &Value) -> String {
    let tags: Vec<&str> = rec["tags"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if tags.is_empty() {
        "untagged".into()
    } else {
        tags.join(",")
    }
}

/// One line for a record.
pub fn compact(rec: &Value, colour_on: bool) -> String {
    let (c, r, d) = if colour_on {
        (
            colour(
                rec["kind"]
                    .as_str()
                    .or(rec["verdict"].as_str())
                    .unwrap_or(""),
            ),
            RESET,
            DIM,
        )
    } else {
        ("", "", "")
    };
    let time = short_time(rec);
    let Some(kind) = rec["kind"].as_str() else {
        let verdict = s(rec, "verdict");
        let mut line = format!(
            "{d}{time}{r} {c}{verdict:<10}{r} {} {}[{}] → {} {} ({}",
            s(rec, "policy"),
            s(rec, "comm"),
            rec["pid"],
            target(rec),
            region_of(rec),
            s(rec, "reason"),
        );
        if let Some(p) = rec["prefix"].as_str() {
            line.push(' ');
            line.push_str(p);
        }
        line.push(')');
        if let Some(j) = rec["job"].as_str() {
            line.push_str(&format!(" job={j}"));
        }
        match rec["user"].as_str() {
            Some(u) => line.push_str(&format!(" user={u}")),
            None => line.push_str(&format!(" uid={}", rec["uid"])),
        }
        return line;
    };
    let what = match kind {
        "lost" => format!(
            "{}: {} events dropped by the kernel ({}); these decisions have no record of their own",
            rec["policy"].as_str().unwrap_or("(no policy)"),
            rec["count"],
            s(rec, "reason"),
        ),
        "allowed" => format!(
            "{} {} ×{} more in {} (first: seq {}){}",
            s(rec, "policy"),
            target(rec),
            rec["count"],
            s(rec, "window"),
            rec["first_seq"],
            rec["job"]
                .as_str()
                .map(|j| format!(" job={j}"))
                .unwrap_or_default(),
        ),
        "agent" => match s(rec, "event") {
            "recovered" => format!(
                "recovered: the previous agent did not stop cleanly (last record seq {})",
                rec["last_seq"]
            ),
            e => format!("{e} pid={}", rec["pid"]),
        },
        "config" => {
            let mut t = format!(
                "{} epoch {}: {} source(s), {} policies",
                s(rec, "event"),
                rec["epoch"],
                rec["sources"].as_array().map_or(0, Vec::len),
                rec["policies"].as_array().map_or(0, Vec::len),
            );
            if let Some(errors) = rec["errors"].as_array() {
                t.push_str(&format!(" — errors: {}", Value::Array(errors.clone())));
            }
            t
        }
        "job" => format!(
            "{} {} policy={}",
            s(rec, "event"),
            s(rec, "job"),
            s(rec, "policy")
        ),
        "log" => format!(
            "{}: continues {} (seq {})",
            s(rec, "event"),
            s(rec, "previous"),
            rec["previous_last_seq"]
        ),
        _ => {
            let mut rest = rec.as_object().cloned().unwrap_or_default();
            for k in ["v", "time", "seq", "kind", "prev"] {
                rest.remove(k);
            }
            Value::Object(rest).to_string()
        }
    };
    format!("{d}{time}{r} {c}{kind:<10}{r} {what}")
}

/// Counts by policy × verdict × region, and the denied destinations.
#[derive(Debug, Default)]
pub struct Summary {
    records: u64,
    from: Option<String>,
    to: Option<String>,
    rows: BTreeMap<(String, String, String), Row>,
    dests: BTreeMap<(String, String, String, String), Dest>,
    lost: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct Row {
    flows: u64,
    dests: BTreeSet<String>,
    jobs: BTreeSet<String>,
    first: String,
    last: String,
}

#[derive(Debug, Default)]
struct Dest {
    flows: u64,
    comms: BTreeSet<String>,
}

impl Summary {
    /// Counts a record that passed the filter.
    pub fn add(&mut self, rec: &Value) {
        self.records += 1;
        let time = s(rec, "time").to_owned();
        if self.from.is_none() {
            self.from = Some(time.clone());
        }
        self.to = Some(time.clone());
        let (verdict, flows) = match rec["kind"].as_str() {
            None => (s(rec, "verdict").to_owned(), 1),
            Some("allowed") => (
                rec["verdict"].as_str().unwrap_or("allow").to_owned(),
                rec["count"].as_u64().unwrap_or(0),
            ),
            Some("lost") => {
                let policy = rec["policy"].as_str().unwrap_or("(no policy)").to_owned();
                *self.lost.entry(policy).or_default() += rec["count"].as_u64().unwrap_or(0);
                return;
            }
            Some(_) => return,
        };
        let policy = s(rec, "policy").to_owned();
        let region = region_of(rec);
        let row = self
            .rows
            .entry((policy.clone(), verdict.clone(), region.clone()))
            .or_default();
        row.flows += flows;
        row.dests.insert(target(rec));
        if let Some(j) = rec["job"].as_str() {
            row.jobs.insert(j.to_owned());
        } else if let Some(c) = rec["cgroup"].as_str() {
            row.jobs.insert(c.to_owned());
        }
        if row.first.is_empty() {
            row.first = time.clone();
        }
        row.last = time;
        if verdict != "allow" {
            let d = self
                .dests
                .entry((policy, verdict, target(rec), region))
                .or_default();
            d.flows += flows;
            if let Some(c) = rec["comm"].as_str() {
                d.comms.insert(c.to_owned());
            }
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "records": self.records,
            "from": self.from,
            "to": self.to,
            "rows": self.rows.iter().map(|((policy, verdict, region), r)| json!({
                "policy": policy, "verdict": verdict, "region": region, "flows": r.flows,
                "destinations": r.dests.len(), "jobs": r.jobs.len(),
                "first": r.first, "last": r.last,
            })).collect::<Vec<_>>(),
            "denied_destinations": self.dests.iter().map(|((policy, verdict, target, region), d)| json!({
                "policy": policy, "verdict": verdict, "destination": target, "region": region,
                "flows": d.flows, "comms": d.comms,
            })).collect::<Vec<_>>(),
            "lost": self.lost,
        })
    }

    /// The summary as a table.
    pub fn render(&self, colour_on: bool) -> String {
        let mut out = String::new();
        let window = match (&self.from, &self.to) {
            (Some(a), Some(b)) => format!(" from {a} to {b}"),
            _ => String::new(),
        };
        out.push_str(&format!("{} records{window}\n", self.records));
        if self.rows.is_empty() {
            out.push_str("no flows\n");
        } else {
            let table: Vec<[String; 8]> = self
                .rows
                .iter()
                .map(|((p, v, reg), r)| {
                    [
                        p.clone(),
                        v.clone(),
                        reg.clone(),
                        r.flows.to_string(),
                        r.dests.len().to_string(),
                        r.jobs.len().to_string(),
                        r.first.get(..19).unwrap_or(&r.first).to_owned(),
                        r.last.get(..19).unwrap_or(&r.last).to_owned(),
                    ]
                })
                .collect();
            let head = [
                "POLICY", "VERDICT", "REGION", "FLOWS", "DESTS", "JOBS", "FIRST", "LAST",
            ];
            let mut w = head.map(str::len);
            for row in &table {
                for (i, c) in row.iter().enumerate() {
                    w[i] = w[i].max(c.chars().count());
                }
            }
            out.push('\n');
            let fmt_row = |cells: [&str; 8], verdict_colour: &str| {
                let mut line = String::new();
                for (i, c) in cells.iter().enumerate() {
                    let pad = w[i] - c.chars().count();
                    let (pre, post) = if i == 1 && !verdict_colour.is_empty() {
                        (verdict_colour, RESET)
                    } else {
                        ("", "")
                    };
                    if (3..=5).contains(&i) {
                        line.push_str(&format!("{}{pre}{c}{post}  ", " ".repeat(pad)));
                    } else {
                        line.push_str(&format!("{pre}{c}{post}{}  ", " ".repeat(pad)));
                    }
                }
                line.trim_end().to_owned() + "\n"
            };
            out.push_str(&fmt_row(head, ""));
            for row in &table {
                let c = if colour_on { colour(&row[1]) } else { "" };
                out.push_str(&fmt_row(row.each_ref().map(String::as_str), c));
            }
        }
        if !self.dests.is_empty() {
            out.push_str("\ndenied or would be denied, by destination:\n");
            let mut dests: Vec<_> = self.dests.iter().collect();
            dests.sort_by(|a, b| b.1.flows.cmp(&a.1.flows).then(a.0.cmp(b.0)));
            for ((policy, verdict, target, region), d) in dests.iter().take(20) {
                out.push_str(&format!(
                    "  {policy}  {verdict}  {target}  {region}  {} flows  {}\n",
                    d.flows,
                    d.comms.iter().cloned().collect::<Vec<_>>().join(",")
                ));
            }
            if dests.len() > 20 {
                out.push_str(&format!("  … and {} more\n", dests.len() - 20));
            }
        }
        if !self.lost.is_empty() {
            out.push_str(
                "\nlost events (decisions without a record; the counts above are lower bounds):\n",
            );
            for (policy, n) in &self.lost {
                out.push_str(&format!("  {policy}  {n}\n"));
            }
        }
        out
    }
}

/// Calls `each` with every line of `files` that parses as a record, in
/// order; returns how many lines did not.
pub fn for_each_record(files: &[PathBuf], mut each: impl FnMut(&str, &Value)) -> io::Result<u64> {
    let mut bad = 0;
    for path in files {
        let f = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        for line in BufReader::with_capacity(1 << 20, f).split(b'\n') {
            let line = line?;
            match serde_json::from_slice::<Value>(&line) {
                Ok(v) if v.is_object() => each(&String::from_utf8_lossy(&line), &v),
                _ => bad += 1,
            }
        }
    }
    Ok(bad)
}

/// The files to read for records at or after `since_ns`: rotated files
/// closed before it are skipped by their name.
pub fn files_since(set: &LogSet, files: Vec<PathBuf>, since_ns: Option<i128>) -> Vec<PathBuf> {
    let Some(since) = since_ns else {
        return files;
    };
    files
        .into_iter()
        .filter(|f| {
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
            match name {
                Some(n) if set.is_rotated_name(&n) => rotated_at(&n).is_none_or(|t| t >= since),
                _ => true,
            }
        })
        .collect()
}

/// When a rotated file was closed, from its name.
fn rotated_at(name: &str) -> Option<i128> {
    let dash = name.rfind('-')?;
    let stamp = name.get(dash + 1..dash + 27)?;
    let iso = format!(
        "{}-{}-{}T{}:{}:{}",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..]
    );
    time::parse_rfc3339(&iso)
}

/// Identity of a file: (device, inode).
fn ident(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// Follows a log: new lines of the active file as they are written, and,
/// when the file is rotated, the rest of it, any file rotated after it,
/// then the new active file — nothing missed, nothing twice.
pub struct Follower {
    set: LogSet,
    file: Option<File>,
    id: (u64, u64),
    offset: u64,
    partial: Vec<u8>,
    last_seq: Option<u64>,
}

impl Follower {
    /// Starts at the current end of the active file.
    pub fn open(set: LogSet) -> io::Result<Follower> {
        let mut f = Follower {
            set,
            file: None,
            id: (0, 0),
            offset: 0,
            partial: Vec::new(),
            last_seq: None,
        };
        f.reopen(false)?;
        // The newest record so far: a rotation seen before anything new is
        // read must not bring back older files.
        let last = match super::set::tail(f.set.active()) {
            Ok(t) if t.last_line.is_some() => t.last_line,
            _ => match f.set.rotated()?.pop() {
                Some(newest) => super::set::tail(&newest)?.last_line,
                None => None,
            },
        };
        f.last_seq = last.as_deref().and_then(super::set::seq_of);
        Ok(f)
    }

    /// The identity of the file being followed.
    pub fn file_id(&self) -> (u64, u64) {
        self.id
    }

    /// Where following starts in the active file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the first `len` bytes of the followed file (what was there
    /// when following began).
    pub fn read_head(&self, len: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        if let Some(f) = &self.file {
            let mut f = f.try_clone()?;
            f.seek(SeekFrom::Start(0))?;
            f.take(len).read_to_end(&mut out)?;
        }
        Ok(out)
    }

    fn reopen(&mut self, from_start: bool) -> io::Result<bool> {
        match File::open(self.set.active()) {
            Ok(file) => {
                let meta = file.metadata()?;
                self.id = ident(&meta);
                self.offset = if from_start { 0 } else { meta.len() };
                self.file = Some(file);
                self.partial.clear();
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.file = None;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Notes the `seq` of a line passed on, so a rotation never repeats it.
    fn note(&mut self, line: &[u8]) {
        if let Some(seq) = super::set::seq_of(line) {
            self.last_seq = Some(seq);
        }
    }

    /// Reads what was appended since the last call and passes each whole
    /// line to `each`; handles rotation.
    pub fn poll(&mut self, each: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        self.read_new(each)?;
        let now = std::fs::metadata(self.set.active()).ok().map(|m| ident(&m));
        if self.file.is_some() && now == Some(self.id) {
            return Ok(());
        }
        if self.file.is_none() {
            // Waiting for the active file to exist.
            if self.reopen(true)? {
                self.read_new(each)?;
            }
            return Ok(());
        }
        // Rotated (or replaced): finish the old file, then every file
        // rotated after it, then the new active file from its start.
        self.read_new(each)?;
        let old = self.id;
        for path in self.set.rotated()? {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if ident(&meta) == old {
                continue;
            }
            let first = super::set::first_line(&path)
                .ok()
                .flatten()
                .and_then(|l| super::set::seq_of(&l));
            if first.is_some_and(|s| self.last_seq.is_none_or(|last| s > last)) {
                let text = std::fs::read(&path)?;
                for line in text.split_inclusive(|b| *b == b'\n') {
                    if let Some(line) = line.strip_suffix(b"\n") {
                        self.note(line);
                        each(line);
                    }
                }
            }
        }
        if self.reopen(true)? {
            self.read_new(each)?;
        }
        Ok(())
    }

    fn read_new(&mut self, each: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        let mut data = std::mem::take(&mut self.partial);
        data.extend_from_slice(&buf);
        let mut rest: &[u8] = &data;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            let line = &rest[..i];
            self.note(line);
            each(line);
            rest = &rest[i + 1..];
        }
        self.partial = rest.to_vec();
        Ok(())
    }
}

/// The files of the log `set` minus the one with identity `skip` (the file
/// a follower reads).
pub fn files_except(set: &LogSet, skip: (u64, u64)) -> io::Result<Vec<PathBuf>> {
    Ok(set
        .rotated()?
        .into_iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| ident(&m) != skip))
        .collect())
}

/// Whether `path` is a file rotated out of a log (its name carries a stamp).
pub fn looks_rotated(path: &Path) -> bool {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return false;
    };
    rotated_at(&name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(verdict: &str, policy: &str, dst: &str, tags: &[&str]) -> Value {
        json!({"v": 2, "time": "2026-11-01T12:00:00.123456789Z", "seq": 1, "verdict": verdict,
               "reason": "region", "policy": policy, "tags": tags, "dst": dst, "dport": 443,
               "proto": "tcp", "pid": 42, "comm": "curl", "job": "etl-1", "uid": 0, "user": "root",
               "cgroup": "/x/etl-1", "prefix": "127.20.0.0/16"})
    }

    #[test]
    fn filters() {
        let us = flow("deny", "eu", "127.20.0.1", &["US"]);
        let de = flow("allow", "eu", "127.30.0.1", &["DE"]);
        let v6 = flow("would_deny", "audit", "::ffff:10.1.2.3", &[]);
        let lost = json!({"v": 2, "time": "2026-11-01T12:00:00Z", "seq": 2, "kind": "lost", "policy": "eu", "count": 3});
        let agent = json!({"v": 2, "time": "2026-11-01T12:00:00Z", "seq": 3, "kind": "agent", "event": "start"});
        let f = Filter::default();
        assert!([&us, &de, &v6, &lost, &agent].iter().all(|r| f.matches(r)));
        let denied = Filter {
            denied: true,
            ..Filter::default()
        };
        assert!(denied.matches(&us) && denied.matches(&v6) && !denied.matches(&de));
        assert!(denied.matches(&lost) && !denied.matches(&agent));
        let eu = Filter {
            regions: Some(region_set("EU")),
            ..Filter::default()
        };
        assert!(eu.matches(&de) && !eu.matches(&us));
        let untagged = Filter {
            regions: Some(region_set("untagged")),
            ..Filter::default()
        };
        assert!(untagged.matches(&v6) && !untagged.matches(&us));
        let net = Filter {
            dest: Some("10.0.0.0/8".parse().unwrap()),
            ..Filter::default()
        };
        assert!(net.matches(&v6) && !net.matches(&us));
        let job = Filter {
            job: Some("etl*".into()),
            comm: Some("curl".into()),
            policy: Some("audit".into()),
            ..Filter::default()
        };
        assert!(job.matches(&v6) && !job.matches(&us));
        assert!(!job.matches(&lost), "another policy's losses");
        let since = Filter {
            since_ns: Some(time::parse_rfc3339("2026-11-01T12:00:00.2Z").unwrap()),
            ..Filter::default()
        };
        assert!(!since.matches(&us));
        assert_eq!(
            parse_since("10m", 1_000_000_000_000),
            Ok(1_000_000_000_000 - 600_000_000_000)
        );
        assert!(parse_since("yesterday", 0).is_err());
    }

    #[test]
    fn the_compact_view() {
        let us = flow("deny", "eu", "127.20.0.1", &["US"]);
        assert_eq!(
            compact(&us, false),
            "2026-11-01T12:00:00.123Z deny       eu curl[42] → 127.20.0.1:443/tcp US (region 127.20.0.0/16) job=etl-1 user=root"
        );
        assert!(compact(&us, true).contains("\x1b[1;31mdeny"));
        let v6 = flow("allow", "eu", "::1", &[]);
        assert!(compact(&v6, false).contains("[::1]:443/tcp untagged"));
        let lost = json!({"time": "2026-11-01T12:00:00.000000000Z", "kind": "lost", "policy": "eu", "count": 3, "reason": "ring buffer full"});
        assert_eq!(
            compact(&lost, false),
            "2026-11-01T12:00:00.000Z lost       eu: 3 events dropped by the kernel (ring buffer full); these decisions have no record of their own"
        );
    }

    #[test]
    fn the_summary_counts_by_policy_verdict_and_region() {
        let mut sum = Summary::default();
        for _ in 0..3 {
            sum.add(&flow("would_deny", "eu", "127.20.0.1", &["US"]));
        }
        sum.add(&flow("allow", "eu", "127.30.0.1", &["DE"]));
        let mut allowed = flow("allow", "eu", "127.30.0.1", &["DE"]);
        allowed["kind"] = json!("allowed");
        allowed["count"] = json!(10);
        sum.add(&allowed);
        sum.add(&json!({"kind": "lost", "policy": "eu", "count": 4, "time": "t"}));
        let j = sum.to_json();
        let rows = j["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["verdict"], "allow");
        assert_eq!(rows[0]["flows"], 11);
        assert_eq!(rows[1]["verdict"], "would_deny");
        assert_eq!(rows[1]["region"], "US");
        assert_eq!(rows[1]["flows"], 3);
        assert_eq!(j["lost"]["eu"], 4);
        assert_eq!(
            j["denied_destinations"][0]["destination"],
            "127.20.0.1:443/tcp"
        );
        let text = sum.render(false);
        assert!(text.contains("POLICY"), "{text}");
        assert!(text.contains("would_deny"), "{text}");
        assert!(text.contains("lower bounds"), "{text}");
    }

    #[test]
    fn a_follower_sees_every_line_once_across_many_rotations() {
        use crate::flows::log::{AuditLog, Rotation};
        let dir = std::env::temp_dir().join(format!("geowall-follow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let rotation = Rotation {
            size: 400,
            age: None,
            keep: 0,
        };
        let mut log = AuditLog::open(&path, rotation).unwrap();
        for i in 0..5 {
            log.event("job", json!({"n": i})).unwrap();
        }
        let start = log.last_seq();
        let mut follower = Follower::open(LogSet::new(&path)).unwrap();
        let mut seen = Vec::new();
        let mut take = |line: &[u8]| seen.push(super::super::set::seq_of(line).unwrap());
        for round in 0..20u64 {
            // Several rotations between two polls, sometimes none.
            for i in 0..(round % 7) {
                log.event("job", json!({"n": i})).unwrap();
            }
            follower.poll(&mut take).unwrap();
        }
        let last = log.last_seq();
        drop(log);
        let want: Vec<u64> = (start + 1..=last).collect();
        assert_eq!(seen, want);
        assert!(LogSet::new(&path).rotated().unwrap().len() > 10);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rotated_names_tell_when_they_were_closed() {
        let set = LogSet::new("/l/audit.jsonl");
        let p = set.rotated_path(1_798_416_000_123_456_789);
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(rotated_at(&name), Some(1_798_416_000_123_456_789));
        let files = vec![p.clone(), PathBuf::from("/l/audit.jsonl")];
        assert_eq!(
            files_since(&set, files.clone(), Some(1_798_416_000_123_456_790)),
            vec![PathBuf::from("/l/audit.jsonl")]
        );
        assert_eq!(files_since(&set, files.clone(), Some(0)), files);
    }
}
