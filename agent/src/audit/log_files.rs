//! The files of one audit log: the active file (`[agent] audit_log`, say
//! `audit.jsonl`) and the files rotated out of it, named after the moment
//! of rotation: `audit-20261101T120000.123456789Z.jsonl`. Names sort in
//! the order the files were written; the active file comes last.

use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

/// An audit log: its active file and the rotated ones beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSet {
    active: PathBuf,
}

/// Length of the stamp in a rotated file's name (`20261101T120000.123456789Z`).
const STAMP_LEN: usize = 26;

impl LogSet {
    pub fn new(active: impl Into<PathBuf>) -> Self {
        Self {
            active: active.into(),
        }
    }

    pub fn active(&self) -> &Path {
        &self.active
    }

    fn dir(&self) -> &Path {
        match self.active.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        }
    }

    /// (stem, extension with its dot) of the active file's name.
    fn name_parts(&self) -> (String, String) {
        let name = self
            .active
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match name.rfind('.') {
            Some(i) if i > 0 => (name[..i].to_owned(), name[i..].to_owned()),
            _ => (name, String::new()),
        }
    }

    /// The name a file rotated at Unix time `unix_ns` gets.
    pub fn rotated_path(&self, unix_ns: i128) -> PathBuf {
        let (stem, ext) = self.name_parts();
        let stamp: String = crate::vocab::clock::rfc3339(unix_ns)
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        self.dir().join(format!("{stem}-{stamp}{ext}"))
    }

    /// Whether `name` is the name of a file rotated out of this log.
    pub fn is_rotated_name(&self, name: &str) -> bool {
        let (stem, ext) = self.name_parts();
        let Some(rest) = name
            .strip_prefix(stem.as_str())
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_suffix(ext.as_str()))
        else {
            return false;
        };
        let b = rest.as_bytes();
        b.len() == STAMP_LEN
            && b.iter().enumerate().all(|(i, c)| match i {
                8 => *c == b'T',
                15 => *c == b'.',
                25 => *c == b'Z',
                _ => c.is_ascii_digit(),
            })
    }

    /// The rotated files, oldest first.
    pub fn rotated(&self) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(self.dir()) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            if self.is_rotated_name(&entry.file_name().to_string_lossy()) {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every file of the log in the order written: rotated ones, then the
    /// active one (when it exists).
    pub fn files(&self) -> io::Result<Vec<PathBuf>> {
        let mut files = self.rotated()?;
        if self.active.exists() {
            files.push(self.active.clone());
        }
        Ok(files)
    }
}

/// The end of a file: its last complete line (without the newline) and
/// what follows it (bytes with no newline: a record cut off).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tail {
    pub last_line: Option<Vec<u8>>,
    pub partial: Vec<u8>,
}

/// Reads the end of `path` backwards until a whole line is found.
pub fn tail(path: &Path) -> io::Result<Tail> {
    let len = std::fs::metadata(path)?.len();
    tail_before(path, len)
}

/// [`tail`] of the first `len` bytes of `path`.
pub fn tail_before(path: &Path, len: u64) -> io::Result<Tail> {
    let mut f = File::open(path)?;
    let len = len.min(f.metadata()?.len());
    let mut chunk = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(chunk);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        f.by_ref().take(len - start).read_to_end(&mut buf)?;
        let (complete, partial) = match buf.iter().rposition(|b| *b == b'\n') {
            Some(i) => (&buf[..i], buf[i + 1..].to_vec()),
            None if start == 0 => {
                return Ok(Tail {
                    last_line: None,
                    partial: buf,
                });
            }
            None => {
                chunk *= 4;
                continue;
            }
        };
        match complete.iter().rposition(|b| *b == b'\n') {
            Some(i) => {
                return Ok(Tail {
                    last_line: Some(complete[i + 1..].to_vec()),
                    partial,
                });
            }
            None if start == 0 => {
                return Ok(Tail {
                    last_line: Some(complete.to_vec()),
                    partial,
                });
            }
            None => chunk *= 4,
        }
    }
}

/// Bytes `start..end` of `path`.
pub fn read_range(path: &Path, start: u64, end: u64) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(end.saturating_sub(start) as usize);
    f.take(end.saturating_sub(start)).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The first line of `path` (without its newline), if it has a whole one.
pub fn first_line(path: &Path) -> io::Result<Option<Vec<u8>>> {
    use std::io::BufRead;
    let mut r = io::BufReader::new(File::open(path)?);
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    Ok(line.strip_suffix(b"\n").map(<[u8]>::to_vec))
}

/// The `seq` of a record line.
pub fn seq_of(line: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()?
        .get("seq")?
        .as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_sort_in_time_and_are_recognized() {
        let set = LogSet::new("/var/log/geowall/audit.jsonl");
        let p = set.rotated_path(1_798_416_000_123_456_789);
        assert_eq!(
            p,
            Path::new("/var/log/geowall/audit-20261228T000000.123456789Z.jsonl")
        );
        assert!(set.is_rotated_name("audit-20261228T000000.123456789Z.jsonl"));
        assert!(!set.is_rotated_name("audit.jsonl"));
        assert!(!set.is_rotated_name("audit-2026.jsonl"));
        assert!(!set.is_rotated_name("other-20261228T000000.123456789Z.jsonl"));
        assert!(set.rotated_path(1) < set.rotated_path(2));
        let bare = LogSet::new("log");
        assert_eq!(
            bare.rotated_path(0),
            Path::new("./log-19700101T000000.000000000Z")
        );
        assert!(bare.is_rotated_name("log-19700101T000000.000000000Z"));
    }

    #[test]
    fn the_shipped_vector_config_takes_the_whole_log_and_nothing_else() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/logging/vector.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        let source = &v["sources"]["geowall_audit"];
        assert_eq!(source["type"].as_str(), Some("file"));
        let include = source["include"][0].as_str().unwrap();
        let (dir, pattern) = include.rsplit_once('/').unwrap();
        let default = crate::config::AgentConfig::default().audit_log;
        assert_eq!(Path::new(dir), default.parent().unwrap());
        let set = LogSet::new(&default);
        let rotated = set.rotated_path(1_798_416_000_123_456_789);
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(crate::vocab::glob::glob_match(pattern, &name(&default)));
        assert!(crate::vocab::glob::glob_match(pattern, &name(&rotated)));
        assert!(!crate::vocab::glob::glob_match(
            pattern,
            "audit.jsonl.state"
        ));
        // The archive keeps the lines as written (verifiable).
        assert_eq!(
            v["sinks"]["geowall_archive"]["encoding"]["codec"].as_str(),
            Some("text")
        );
    }

    #[test]
    fn the_tail_of_a_file() {
        let dir = std::env::temp_dir().join(format!("geowall-set-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.jsonl");
        std::fs::write(&p, b"one\ntwo\nthr").unwrap();
        let t = tail(&p).unwrap();
        assert_eq!(t.last_line.as_deref(), Some(&b"two"[..]));
        assert_eq!(t.partial, b"thr");
        std::fs::write(&p, b"one\n").unwrap();
        assert_eq!(tail(&p).unwrap().last_line.as_deref(), Some(&b"one"[..]));
        std::fs::write(&p, b"").unwrap();
        assert_eq!(tail(&p).unwrap(), Tail::default());
        let long = "x".repeat(200_000);
        std::fs::write(&p, format!("{long}\n{long}\n")).unwrap();
        assert_eq!(tail(&p).unwrap().last_line.unwrap().len(), 200_000);
        assert_eq!(first_line(&p).unwrap().unwrap().len(), 200_000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
