//! `geowall log verify`: checks the hash chain and the sequence of a log's
//! files and names the first line that breaks them.
//!
//! Each record's `prev` must be the SHA-256 of the line before it (across
//! files: the first record of a file chains to the last of the file before)
//! and its `seq` one more than that line's. Where that fails, the neighbours
//! tell what happened: a record that does not match what the next one
//! chained to was changed; a record the next one skips was inserted; a jump
//! in `seq` means records were removed (or moved: the line where a reordered
//! record stands). A record that begins the log (its `prev` is 64 zeros)
//! must have `seq` 1; the first line of a set that starts later is checked
//! against the line after it.
//!
//! **Declared gaps** are reported, not counted as problems (the exit status
//! stays 0): `lost` records (events the kernel dropped, records the agent
//! could not write: their count and reason), `write_failed` records (a time
//! when the log could not be written), and torn tails. A torn tail is the
//! end of a file after its last whole record: a record cut short (no end of
//! line, or a last line that is no record) by a write that failed half-way
//! or a crash during one. The agent never appends to one: it closes the
//! file and starts a new one, which either begins with the same record
//! written whole (the torn bytes are its beginning: after a failed write)
//! or whose first record declares the torn tail by file, offset, length
//! and SHA-256 (at start, after a crash). Either explains the torn tail,
//! and the chain goes on from the last whole record before it. A torn tail
//! nothing explains — at the end of the log (the agent has not yet been
//! able to close the file, or is down), or before a file that does not
//! declare it — is a problem: it may also be a truncation.
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
    /// Declared gaps: torn tails the agent explained, `lost` and
    /// `write_failed` records (at most 50 listed).
    pub gaps: Vec<Problem>,
    /// Records declared lost, by reason (`ring buffer full`,
    /// `audit_write: No space left on device`).
    pub lost: std::collections::BTreeMap<String, u64>,
    /// Torn tails explained.
    pub torn_tails: u64,
}

/// A line as read.
struct Line {
    file: usize,
    no: u64,
    /// Where it begins in its file, and its length with its newline.
    offset: u64,
    len: u64,
    hash: Prev,
    terminated: bool,
    /// `seq` and `prev`, when the line is a record.
    parsed: Option<(u64, String)>,
    /// What the record declares.
    declares: Option<Box<Declared>>,
    /// A line that may be a torn tail (no end of line, or no record): its
    /// bytes, as written.
    raw: Option<Vec<u8>>,
    /// The first line of a file that begins with the bytes of the torn
    /// tail before it: the record cut short, written whole.
    completes_torn: bool,
}

/// What a record declares about gaps.
#[derive(Default)]
struct Declared {
    /// `torn_tail`: file, offset, bytes, sha256.
    torn: Option<(String, u64, u64, String)>,
    /// A `lost` record: its count and reason.
    lost: Option<(u64, String)>,
    /// A `write_failed` record: since, until, error.
    write_failed: Option<(String, String, String)>,
}

fn parse(bytes: &[u8]) -> (Option<(u64, String)>, Option<Box<Declared>>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return (None, None);
    };
    let parsed = (|| {
        let seq = v.get("seq")?.as_u64()?;
        let prev = v.get("prev")?.as_str()?;
        (v.get("v").is_some() && v.get("time").is_some() && prev.len() == 64)
            .then(|| (seq, prev.to_owned()))
    })();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    let declares = match v.get("kind").and_then(|k| k.as_str()) {
        Some("lost") => Some(Declared {
            lost: Some((v["count"].as_u64().unwrap_or(0), text(&v["reason"]))),
            ..Declared::default()
        }),
        Some("log" | "agent") => {
            let t = &v["torn_tail"];
            let torn = t.is_object().then(|| {
                (
                    text(&t["file"]),
                    t["offset"].as_u64().unwrap_or(u64::MAX),
                    t["bytes"].as_u64().unwrap_or(u64::MAX),
                    text(&t["sha256"]),
                )
            });
            let write_failed = (v["event"] == "write_failed")
                .then(|| (text(&v["since"]), text(&v["until"]), text(&v["error"])));
            (torn.is_some() || write_failed.is_some()).then(|| Declared {
                torn,
                write_failed,
                ..Declared::default()
            })
        }
        _ => None,
    };
    (parsed, declares.map(Box::new))
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
        let mut offset = 0;
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
            let (parsed, declares) = parse(bytes);
            let completes_torn = no == 1
                && pending
                    .as_ref()
                    .and_then(|p| p.raw.as_deref())
                    .is_some_and(|torn| !torn.ends_with(b"\n") && buf.starts_with(torn));
            let line = Line {
                file: fi,
                no,
                offset,
                len: buf.len() as u64,
                hash: Prev::of(bytes),
                terminated,
                raw: (!terminated || parsed.is_none()).then(|| buf.clone()),
                parsed,
                declares,
                completes_torn,
            };
            offset += buf.len() as u64;
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
    /// The previous line is where the check starts (nothing before it
    /// vouches for it).
    p1_first: bool,
}

/// `n` with its noun, singular or plural.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl Checker {
    /// Whether `cur`, the last line of its file, is a torn tail: it has
    /// no end of line, or is no record. When the next file explains it,
    /// it is a declared gap; otherwise a problem. Either way the chain
    /// goes on from the last whole record before it (true: `cur` is done).
    fn torn_tail(
        &mut self,
        cur: &Line,
        next: Option<&Line>,
        files: &[PathBuf],
        report: &mut Report,
    ) -> bool {
        if next.is_some_and(|n| n.file == cur.file) {
            return false;
        }
        let Some(raw) = cur.raw.as_deref() else {
            return false;
        };
        let name = |f: usize| {
            files[f]
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let what = format!(
            "torn tail: {} at offset {} after the last whole record{}",
            count(cur.len, "byte", "bytes"),
            cur.offset,
            if cur.terminated {
                " (a line that is no record)"
            } else {
                " (no end of line): a record cut short"
            },
        );
        let declared = next.and_then(|n| {
            let (file, offset, bytes, sha) = n.declares.as_ref()?.torn.as_ref()?;
            (*file == name(cur.file)
                && *offset == cur.offset
                && *bytes == cur.len
                && *sha == crate::vocab::hex::sha256_hex(raw))
            .then_some(n)
        });
        let here = (files[cur.file].clone(), cur.no);
        if let Some(n) = next.filter(|n| n.completes_torn) {
            report.torn_tails += 1;
            push(
                &mut report.gaps,
                here,
                format!(
                    "{what}, by a write that failed half-way; the agent closed the file and wrote the record whole at {}:{}",
                    files[n.file].display(),
                    n.no
                ),
            );
            return true;
        }
        if let Some(n) = declared {
            report.torn_tails += 1;
            push(
                &mut report.gaps,
                here,
                format!(
                    "{what}; declared by {}:{} (seq {}): the agent closed the file after it (a crash or a failed write cut it short)",
                    files[n.file].display(),
                    n.no,
                    n.parsed.as_ref().map_or("?".into(), |(s, _)| s.to_string())
                ),
            );
            return true;
        }
        if cur.terminated && cur.parsed.is_some() {
            return false;
        }
        if cur.terminated && next.is_some() {
            // A line that is no record, not declared: the usual check
            // (edited or inserted).
            return false;
        }
        let why = match next {
            None => {
                "not declared yet — a write failed (a full disk) or the agent crashed, and it has not closed the file since (it does once it can write again, or at its next start); or the file was truncated"
            }
            Some(_) => {
                "the next file neither declares it nor begins with the record whole: the file that did is missing, or the file was truncated"
            }
        };
        push(&mut report.problems, here, format!("{what}; {why}"));
        true
    }
}

fn push(list: &mut Vec<Problem>, (file, line): (PathBuf, u64), message: String) {
    if list.len() < MAX_PROBLEMS {
        list.push(Problem {
            file,
            line,
            message,
        });
    }
}

impl Checker {
    fn check(&mut self, cur: Line, next: Option<&Line>, files: &[PathBuf], report: &mut Report) {
        let loc = |file: usize, line: u64| (files[file].clone(), line);
        let advance = |this: &mut Checker, seq: Option<u64>, lenient: bool| {
            this.p2 = this.p1.as_ref().map(|(_, h, s)| (*h, *s));
            this.p1_first = this.p1.is_none();
            this.p1 = Some(((cur.file, cur.no), cur.hash, seq));
            this.lenient = lenient;
        };
        if self.torn_tail(&cur, next, files, report) {
            return;
        }
        if let Some(d) = &cur.declares {
            let here = loc(cur.file, cur.no);
            let seq = cur
                .parsed
                .as_ref()
                .map_or("?".into(), |(s, _)| s.to_string());
            if let Some((n, reason)) = &d.lost {
                *report.lost.entry(reason.clone()).or_default() += n;
                push(
                    &mut report.gaps,
                    here.clone(),
                    format!(
                        "seq {seq}: {} declared lost ({reason})",
                        count(*n, "record", "records")
                    ),
                );
            }
            if let Some((since, until, error)) = &d.write_failed {
                push(
                    &mut report.gaps,
                    here,
                    format!(
                        "seq {seq}: the log could not be written from {since} to {until} ({error}); what was held in memory was written after"
                    ),
                );
            }
        }
        let mut problem = |(file, line): (PathBuf, u64), message: String| {
            if report.problems.len() < MAX_PROBLEMS {
                report.problems.push(Problem {
                    file,
                    line,
                    message,
                });
            }
        };
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
            if prev == GENESIS.as_str() && seq != 1 {
                // A log begins at seq 1: this line was changed. The next
                // line is checked against the seq it must have had.
                problem(
                    loc(cur.file, cur.no),
                    format!(
                        "seq {seq} begins the log (its prev is the genesis hash), which begins at seq 1: its seq was changed after it was written"
                    ),
                );
                advance(self, Some(1), true);
                return;
            }
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
        // The line before is where the check starts: nothing vouches for
        // it but this line. When the line after this one chains to it,
        // this one is intact and the first line was changed (unless seqs
        // are missing in between: records removed).
        if self.p1_first && p1_seq.is_none_or(|s| seq <= s + 1) {
            let next_chains_here = next
                .and_then(|n| n.parsed.as_ref())
                .is_some_and(|(ns, np)| np == cur.hash.as_str() && *ns == seq + 1);
            if next_chains_here || next.is_none() {
                problem(
                    loc(p1_loc.0, p1_loc.1),
                    if seq_ok {
                        "changed after it was written: the next record's prev does not match it"
                            .into()
                    } else {
                        format!(
                            "changed after it was written: the next record's prev does not match it, nor does its seq {p1_seq_text} precede the next record's seq {seq}"
                        )
                    },
                );
                advance(self, Some(seq), false);
                return;
            }
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
        assert!(msg.contains("torn tail"), "{msg}");
        assert!(!msg.contains("changed"), "{msg}");
        // Not JSON any more.
        let mut l = lines.clone();
        l[1].insert(0, 'x');
        write(&path, &l, true);
        assert_eq!(first_problem(&path).0, 2);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_edit_of_the_first_line_is_found_at_the_first_line() {
        let dir = std::env::temp_dir().join(format!("geowall-verify-l1-{}", std::process::id()));
        let (path, lines) = make(&dir, 10);
        // The seq of the record that begins the log, up and down.
        for edited in ["\"seq\":5,", "\"seq\":0,", "\"seq\":2,"] {
            let mut l = lines.clone();
            l[0] = l[0].replacen("\"seq\":1,", edited, 1);
            assert_ne!(l[0], lines[0]);
            write(&path, &l, true);
            let r = verify(std::slice::from_ref(&path)).unwrap();
            assert_eq!(r.problems.len(), 1, "{edited}: {r:?}");
            assert_eq!(r.problems[0].line, 1, "{edited}: {r:?}");
            assert!(
                r.problems[0].message.contains("its seq was changed"),
                "{r:?}"
            );
        }
        // Its payload.
        let mut l = lines.clone();
        l[0] = l[0].replace("\"n\":0", "\"n\":9");
        write(&path, &l, true);
        let r = verify(std::slice::from_ref(&path)).unwrap();
        assert_eq!(r.problems.len(), 1, "{r:?}");
        assert_eq!(r.problems[0].line, 1, "{r:?}");
        assert!(r.problems[0].message.contains("changed"), "{r:?}");
        // A set that starts later (older files deleted): its first line's
        // seq raised.
        let l: Vec<String> = lines[3..].to_vec();
        write(&path, &l, true);
        assert!(
            verify(std::slice::from_ref(&path))
                .unwrap()
                .problems
                .is_empty()
        );
        let mut e = l.clone();
        e[0] = e[0].replacen("\"seq\":4,", "\"seq\":40,", 1);
        write(&path, &e, true);
        let r = verify(std::slice::from_ref(&path)).unwrap();
        assert_eq!(r.problems.len(), 1, "{r:?}");
        assert_eq!(r.problems[0].line, 1, "{r:?}");
        assert!(r.problems[0].message.contains("changed"), "{r:?}");
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
