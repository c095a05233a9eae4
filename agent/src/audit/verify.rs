//! `geowall log verify`: checks the hash chain and the sequence of a log's
//! files and names the first line that breaks them.
//!
//! Each record's `prev` must be the SHA-256 of the line before it (across
//! files: the first record of a file chains to the last of the file before)
//! and its `seq` one more than that line's. Where that fails, the neighbours
//! tell what happened: a record that does not match what the next one
//! chained to was changed; a record the next one skips was inserted; a jump
//! in `seq` means records were removed (or moved: the line where a reordered
//! record stands); a last line without its newline was cut off.
//!
//! The newest record of a log is sealed only by the record that follows
//! it: a change to the very last line cannot be told from the file alone
//! (a copy shipped off the host can).

use std::{
    fs::File,
    io::{self, BufRead, BufReader},
    path::{Path, PathBuf},
};

use super::{
    log_files,
    record::{GENESIS, Prev},
};

/// Problems listed at most (the first is the one that matters).
const MAX_PROBLEMS: usize = 50;

/// One broken place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line number in `file`.
    pub line: u64,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The files, in the order checked.
    pub files: Vec<PathBuf>,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub problems: Vec<Problem>,
    /// Things worth knowing that are not problems (where the chain starts).
    pub notes: Vec<String>,
}

/// A line as read.
struct Line {
    file: usize,
    no: u64,
    hash: Prev,
    terminated: bool,
    /// `seq` and `prev`, when the line is a record.
    parsed: Option<(u64, String)>,
}

fn parse(bytes: &[u8]) -> Option<(u64, String)> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let seq = v.get("seq")?.as_u64()?;
    let prev = v.get("prev")?.as_str()?;
    (v.get("v").is_some() && v.get("time").is_some() && prev.len() == 64)
        .then(|| (seq, prev.to_owned()))
}

/// Orders files the way they were written: by the `seq` of their first
/// record (files without a readable one last, by name).
pub fn order(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut keyed: Vec<(u64, PathBuf)> = files
        .iter()
        .map(|f| {
            let seq = log_files::first_line(f)
                .ok()
                .flatten()
                .and_then(|l| log_files::seq_of(&l))
                .unwrap_or(u64::MAX);
            (seq, f.clone())
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, f)| f).collect()
}

/// Checks `files` (in the order given: see [`order`]).
pub fn verify(files: &[PathBuf]) -> io::Result<Report> {
    let mut report = Report {
        files: files.to_vec(),
        ..Report::default()
    };
    let mut checker = Checker::default();
    let mut pending: Option<Line> = None;
    for (fi, path) in files.iter().enumerate() {
        let mut r =
            BufReader::with_capacity(1 << 20, File::open(path).map_err(|e| named(path, e))?);
        let mut buf = Vec::with_capacity(1024);
        let mut no = 0;
        loop {
            buf.clear();
            if r.read_until(b'\n', &mut buf).map_err(|e| named(path, e))? == 0 {
                break;
            }
            no += 1;
            let terminated = buf.last() == Some(&b'\n');
            let bytes = if terminated {
                &buf[..buf.len() - 1]
            } else {
                &buf[..]
            };
            let line = Line {
                file: fi,
                no,
                hash: Prev::of(bytes),
                terminated,
                parsed: parse(bytes),
            };
            if let Some(cur) = pending.replace(line) {
                checker.check(cur, pending.as_ref(), files, &mut report);
            }
        }
    }
    if let Some(cur) = pending.take() {
        checker.check(cur, None, files, &mut report);
    }
    Ok(report)
}

fn named(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The lines just before the one being checked.
#[derive(Default)]
struct Checker {
    /// (location, hash, seq) of the previous line and the one before it.
    p1: Option<((usize, u64), Prev, Option<u64>)>,
    p2: Option<(Prev, Option<u64>)>,
    /// The previous line's own `prev` was found changed: the next line
    /// chained to its original, which is unknown.
    lenient: bool,
}

impl Checker {
    fn check(&mut self, cur: Line, next: Option<&Line>, files: &[PathBuf], report: &mut Report) {
        let loc = |file: usize, line: u64| (files[file].clone(), line);
        let mut problem = |(file, line): (PathBuf, u64), message: String| {
            if report.problems.len() < MAX_PROBLEMS {
                report.problems.push(Problem {
                    file,
                    line,
                    message,
                });
            }
        };
        let advance = |this: &mut Checker, seq: Option<u64>, lenient: bool| {
            this.p2 = this.p1.as_ref().map(|(_, h, s)| (*h, *s));
            this.p1 = Some(((cur.file, cur.no), cur.hash, seq));
            this.lenient = lenient;
        };
        if !cur.terminated {
            problem(
                loc(cur.file, cur.no),
                "cut off: the last record has no end of line (the file was truncated)".into(),
            );
        }
        let Some((seq, prev)) = cur.parsed.clone() else {
            if cur.terminated {
                problem(
                    loc(cur.file, cur.no),
                    "not a record (no v, time, seq and prev): edited or inserted".into(),
                );
            }
            advance(self, None, true);
            return;
        };
        report.records += 1;
        report.first_seq.get_or_insert(seq);
        report.last_seq = Some(seq);
        let Some((p1_loc, p1_hash, p1_seq)) = self.p1 else {
            report.notes.push(if prev == GENESIS.as_str() {
                format!(
                    "{}:{}: the log begins (seq {seq})",
                    files[cur.file].display(),
                    cur.no
                )
            } else {
                format!(
                    "{}:{}: the chain starts at seq {seq}; the records before it are not part of this check",
                    files[cur.file].display(),
                    cur.no
                )
            });
            advance(self, Some(seq), false);
            return;
        };
        let prev_ok = prev == p1_hash.as_str();
        let seq_ok = p1_seq.is_none_or(|s| seq == s + 1);
        if (prev_ok || self.lenient) && seq_ok {
            advance(self, Some(seq), false);
            return;
        }
        let p1_seq_text = p1_seq.map_or("?".to_owned(), |s| s.to_string());
        let here = loc(cur.file, cur.no);
        if let Some((p2_hash, p2_seq)) = self.p2
            && prev == p2_hash.as_str()
            && p2_seq.is_some_and(|s| seq == s + 1)
        {
            problem(
                loc(p1_loc.0, p1_loc.1),
                "inserted: the record after it chains to the record before it".into(),
            );
            advance(self, Some(seq), false);
            return;
        }
        if prev_ok {
            problem(
                here,
                format!(
                    "seq {seq} follows seq {p1_seq_text} although the chain holds: its seq was changed"
                ),
            );
            advance(self, Some(seq), false);
            return;
        }
        if prev == GENESIS.as_str() {
            problem(
                here,
                "the chain starts over here: what came before is not this log's".into(),
            );
            advance(self, Some(seq), false);
            return;
        }
        match p1_seq {
            Some(s) if seq > s + 1 => problem(
                here,
                format!(
                    "{} record(s) missing before this line (seq {s} is followed by seq {seq}): removed or moved",
                    seq - s - 1
                ),
            ),
            Some(s) if seq <= s => problem(here, format!("out of order: seq {seq} after seq {s}")),
            _ => {
                // The sequence holds but the chain does not: a record was
                // changed. If the next line chains to this one, this one is
                // intact and the one before it was changed.
                let next_chains_here = next
                    .and_then(|n| n.parsed.as_ref())
                    .is_some_and(|(_, np)| np == cur.hash.as_str());
                if next_chains_here || next.is_none() {
                    problem(
                        loc(p1_loc.0, p1_loc.1),
                        "changed after it was written: the next record's prev does not match it"
                            .into(),
                    );
                } else {
                    problem(
                        here,
                        "changed after it was written: its prev does not match the record before it"
                            .into(),
                    );
                    advance(self, Some(seq), true);
                    return;
                }
            }
        }
        advance(self, Some(seq), false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{
        log::{AuditLog, Rotation},
        record::EventRecord,
    };
    use serde_json::json;
    use std::fs;

    /// A log of `n` records in `dir/audit.jsonl`; its lines.
    fn make(dir: &Path, n: usize) -> (PathBuf, Vec<String>) {
        let _ = fs::remove_dir_all(dir);
        let path = dir.join("audit.jsonl");
        let mut log = AuditLog::open(&path, Rotation::default()).unwrap();
        for i in 0..n {
            log.append(&mut EventRecord::new("job", json!({"n": i})))
                .unwrap();
        }
        drop(log);
        let text = fs::read_to_string(&path).unwrap();
        (path, text.lines().map(str::to_owned).collect())
    }

    fn write(path: &Path, lines: &[String], trailing_newline: bool) {
        let mut text = lines.join("\n");
        if trailing_newline {
            text.push('\n');
        }
        fs::write(path, text).unwrap();
    }

    fn first_problem(path: &Path) -> (u64, String) {
        let r = verify(&[path.to_path_buf()]).unwrap();
        let p = r
            .problems
            .first()
            .unwrap_or_else(|| panic!("no problem found: {r:?}"));
        (p.line, p.message.clone())
    }

    #[test]
    fn tampering_is_found_at_the_right_line() {
        let dir = std::env::temp_dir().join(format!("geowall-verify-{}", std::process::id()));
        let (path, lines) = make(&dir, 10);
        assert!(
            verify(std::slice::from_ref(&path))
                .unwrap()
                .problems
                .is_empty()
        );

        // One byte edited in line 4 (its payload), then in line 6's prev.
        let mut l = lines.clone();
        l[3] = l[3].replace("\"n\":3", "\"n\":7");
        write(&path, &l, true);
        let (line, msg) = first_problem(&path);
        assert_eq!(line, 4, "{msg}");
        assert!(msg.contains("changed"), "{msg}");
        let mut l = lines.clone();
        let at = l[5].len() - 3;
        let flipped = if &l[5][at..at + 1] == "0" { "1" } else { "0" };
        l[5].replace_range(at..at + 1, flipped);
        write(&path, &l, true);
        assert_eq!(first_problem(&path).0, 6);
        // The next to last line edited: no next line to look at.
        let mut l = lines.clone();
        l[8] = l[8].replace("\"n\":8", "\"n\":7");
        write(&path, &l, true);
        assert_eq!(first_problem(&path).0, 9);
        // Line 5 deleted: the gap shows at the line that follows it.
        let mut l = lines.clone();
        l.remove(4);
        write(&path, &l, true);
        let (line, msg) = first_problem(&path);
        assert_eq!(line, 5, "{msg}");
        assert!(msg.contains("missing"), "{msg}");
        // Lines 3 and 7 swapped: the first out-of-place line is 3.
        let mut l = lines.clone();
        l.swap(2, 6);
        write(&path, &l, true);
        assert_eq!(first_problem(&path).0, 3);
        // Adjacent lines swapped.
        let mut l = lines.clone();
        l.swap(7, 8);
        write(&path, &l, true);
        assert_eq!(first_problem(&path).0, 8);
        // A copy of line 2 inserted after line 5.
        let mut l = lines.clone();
        l.insert(5, lines[1].clone());
        write(&path, &l, true);
        assert_eq!(first_problem(&path).0, 6);
        // A forged line with the right seq and prev inserted at line 4.
        let mut l = lines.clone();
        let forged = format!(
            "{{\"v\":2,\"time\":\"2026-01-01T00:00:00.000000000Z\",\"seq\":4,\"kind\":\"job\",\"prev\":\"{}\"}}",
            Prev::of(lines[2].as_bytes()).as_str()
        );
        l.insert(3, forged);
        write(&path, &l, true);
        let (line, msg) = first_problem(&path);
        assert_eq!(line, 4, "{msg}");
        assert!(msg.contains("inserted"), "{msg}");
        // The tail truncated in the middle of the last record.
        let mut text = lines.join("\n");
        text.truncate(text.len() - 10);
        fs::write(&path, text).unwrap();
        let (line, msg) = first_problem(&path);
        assert_eq!(line, 10, "{msg}");
        assert!(msg.contains("cut off"), "{msg}");
        // Not JSON any more.
        let mut l = lines.clone();
        l[1].insert(0, 'x');
        write(&path, &l, true);
        assert_eq!(first_problem(&path).0, 2);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn files_chain_across_rotation_and_a_missing_file_shows() {
        let dir = std::env::temp_dir().join(format!("geowall-verify-rot-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let rotation = Rotation {
            size: 500,
            age: None,
            keep: 0,
        };
        let mut log = AuditLog::open(&path, rotation).unwrap();
        for i in 0..30 {
            log.append(&mut EventRecord::new("job", json!({"n": i})))
                .unwrap();
        }
        drop(log);
        let files = crate::audit::log_files::LogSet::new(&path).files().unwrap();
        assert!(files.len() >= 4);
        // Given in any order, they are checked in the order written.
        let mut shuffled = files.clone();
        shuffled.reverse();
        let r = verify(&order(&shuffled)).unwrap();
        assert!(r.problems.is_empty(), "{r:?}");
        assert_eq!(r.first_seq, Some(1));
        assert_eq!(r.notes.len(), 1);
        // Without its oldest file, the set still verifies (it starts later).
        let r = verify(&files[1..]).unwrap();
        assert!(r.problems.is_empty(), "{r:?}");
        assert!(r.notes[0].contains("chain starts"), "{:?}", r.notes);
        // Without a middle file, the next one's first line shows it.
        let mut gap = files.clone();
        gap.remove(2);
        let r = verify(&gap).unwrap();
        assert_eq!(r.problems[0].file, files[3]);
        assert_eq!(r.problems[0].line, 1);
        let _ = fs::remove_dir_all(&dir);
    }
}
