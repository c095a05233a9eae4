//! The audit log: append-only JSON lines.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Read, Seek, SeekFrom, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use serde::Serialize;

use super::{
    record::{EventRecord, SCHEMA_VERSION},
    time,
};

/// The audit log writer. Records are buffered and written out by
/// [`AuditLog::flush`], which the agent calls at least every 100 ms.
pub struct AuditLog {
    out: BufWriter<Box<dyn Write + Send>>,
    seq: u64,
}

impl AuditLog {
    /// Opens `path` for appending (creating it and its folder, mode 0640);
    /// `-` writes to standard output. Sequence numbers continue from the last
    /// record already in the file.
    pub fn open(path: &Path) -> io::Result<Self> {
        if path == Path::new("-") {
            return Ok(Self {
                out: BufWriter::new(Box::new(io::stdout())),
                seq: 0,
            });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let seq = last_seq(path).unwrap_or(0);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)?;
        Ok(Self {
            out: BufWriter::with_capacity(256 * 1024, Box::new(file)),
            seq,
        })
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Appends one record (serialized as one line).
    pub fn append<T: Serialize>(&mut self, record: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, record).map_err(io::Error::other)?;
        self.out.write_all(b"\n")
    }

    /// Appends a non-flow record of `kind` with `detail`.
    pub fn event(&mut self, kind: &str, detail: serde_json::Value) -> io::Result<()> {
        let seq = self.next_seq();
        let detail = match detail {
            serde_json::Value::Object(m) => m,
            other => {
                let mut m = serde_json::Map::new();
                m.insert("detail".into(), other);
                m
            }
        };
        let rec = EventRecord {
            v: SCHEMA_VERSION,
            time: time::rfc3339(time::unix_now_ns()),
            seq,
            kind: kind.into(),
            detail,
        };
        self.append(&rec)?;
        self.flush()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The `seq` of the last complete record of an existing log.
fn last_seq(path: &Path) -> Option<u64> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    text.lines().rev().find_map(|line| {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()?
            .get("seq")?
            .as_u64()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_lines_and_continues_the_sequence() {
        let dir = std::env::temp_dir().join(format!("geowall-log-test-{}", std::process::id()));
        let path = dir.join("sub/audit.jsonl");
        let _ = fs::remove_dir_all(&dir);
        {
            let mut log = AuditLog::open(&path).unwrap();
            log.event("agent", serde_json::json!({"event": "start"}))
                .unwrap();
            log.event("agent", serde_json::json!({"event": "stop"}))
                .unwrap();
        }
        let mut log = AuditLog::open(&path).unwrap();
        assert_eq!(log.next_seq(), 3);
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["kind"], "agent");
        assert_eq!(lines[1]["event"], "stop");
        assert_eq!(lines[1]["seq"], 2);
        let _ = fs::remove_dir_all(&dir);
    }
}
