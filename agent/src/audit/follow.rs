//! Reading a log's files: every record of them in order, the files that
//! can hold records since a time, and following the log as it is written,
//! across rotation. Reads the files only, so it works with the agent down.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::log_files::{self, LogSet};
use crate::vocab::clock as time;

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
        let last = match log_files::tail(f.set.active()) {
            Ok(t) if t.last_line.is_some() => t.last_line,
            _ => match f.set.rotated()?.pop() {
                Some(newest) => log_files::tail(&newest)?.last_line,
                None => None,
            },
        };
        f.last_seq = last.as_deref().and_then(log_files::seq_of);
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
        if let Some(seq) = log_files::seq_of(line) {
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
            let first = log_files::first_line(&path)
                .ok()
                .flatten()
                .and_then(|l| log_files::seq_of(&l));
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
    use serde_json::json;

    use super::*;

    #[test]
    fn a_follower_sees_every_line_once_across_many_rotations() {
        use crate::audit::log::{AuditLog, Rotation};
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
        let mut take = |line: &[u8]| seen.push(crate::audit::log_files::seq_of(line).unwrap());
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
