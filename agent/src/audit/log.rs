//! The audit log writer: append-only JSON lines, hash-chained, batched,
//! rotated.
//!
//! Every record carries `seq` (one more than the record before it) and
//! `prev`, the SHA-256 of the previous line's bytes (without its newline;
//! 64 zeros for the first record of a log), so that an edited, inserted,
//! removed or reordered record breaks the chain (`geowall log verify`). The
//! chain runs across rotation: the first record of a new file chains to the
//! last record of the file rotated out before it.
//!
//! Records are collected in memory and written with few `write(2)` calls:
//! when 256 KiB are pending, on [`AuditLog::flush`] (the agent calls it at
//! least every 100 ms) and when the log is dropped. Data is synced to disk at
//! most once a second, at rotation and at the end; the syncs run on a thread
//! of their own, in the order asked, so the reader that drains the kernel's
//! ring buffer never waits for the disk (a sync of a second of records at
//! tens of MB/s can take longer than the ring holds). Records are written whole
//! lines at a time, so a reader never sees half a record unless a write was
//! cut short.
//!
//! After a crash the log may end without the agent's `stop` record, or with
//! half a line. The next [`AuditLog::open`] moves such a half line into an
//! `agent` record with `event = "recovered"` (which also says which record
//! was the last one written before the crash), so the chain goes on.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::json;

use super::{
    log_files::{self, LogSet},
    record::{Chained, EventRecord, GENESIS, Prev},
};
use crate::{config::AuditConfig, vocab::clock as time};

/// Pending bytes that trigger a write.
const WRITE_AT: usize = 256 * 1024;
/// Pending bytes beyond which the reader stops taking events (the kernel
/// then counts what it cannot queue): the disk is not taking writes.
const BACKLOG: usize = 16 << 20;
/// How often data is synced to disk at most.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How long to wait before trying a failed rotation again.
const ROTATE_RETRY: Duration = Duration::from_secs(60);

/// When to rotate and what to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rotation {
    /// Bytes (0: never).
    pub size: u64,
    /// Age of the active file's first record (None: never).
    pub age: Option<Duration>,
    /// Rotated files kept (0: all).
    pub keep: u32,
}

impl From<&AuditConfig> for Rotation {
    fn from(c: &AuditConfig) -> Self {
        Rotation {
            size: c.rotate_size.0,
            age: c.rotate_age.non_zero(),
            keep: c.keep,
        }
    }
}

/// Record kinds counted for the metrics.
pub const KINDS: [&str; 9] = [
    "flow", "lost", "allowed", "agent", "config", "job", "log", "approval", "other",
];

/// What the log wrote, for the metrics.
#[derive(Debug, Default)]
pub struct LogStats {
    pub records: [AtomicU64; KINDS.len()],
    pub bytes: AtomicU64,
    pub write_errors: AtomicU64,
    pub rotations: AtomicU64,
}

impl LogStats {
    fn count(&self, kind: &str, bytes: usize) {
        let i = KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(KINDS.len() - 1);
        self.records[i].fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// How the previous agent left the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// `seq` and `time` of the last whole record.
    pub last_seq: u64,
    pub last_time: Option<String>,
    /// A record cut off at the end (moved into the `recovered` record).
    pub partial: Option<String>,
    /// The last record was the agent's `stop`.
    pub clean: bool,
}

/// What the sync thread is asked to do.
enum SyncJob {
    /// `fdatasync` a handle of the active file.
    Data(File),
    /// `fsync` a file rotated out (its last handle).
    All(File),
    /// `fsync` the log's folder (after a rename, a new file, a deletion).
    Dir(PathBuf),
}

/// Syncs the log's files on a thread of its own, in the order asked. A
/// periodic sync is skipped while the one before it still runs (the data
/// stays dirty and the next flush asks again); a failure is answered by the
/// next [`AuditLog::flush`].
struct Syncer {
    tx: Option<mpsc::Sender<SyncJob>>,
    thread: Option<thread::JoinHandle<()>>,
    /// A periodic sync is queued or running.
    busy: Arc<AtomicBool>,
    failed: Arc<Mutex<Option<io::Error>>>,
}

impl Syncer {
    fn start() -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<SyncJob>();
        let busy = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(Mutex::new(None));
        let (b, f) = (Arc::clone(&busy), Arc::clone(&failed));
        let thread = thread::Builder::new()
            .name("audit-sync".into())
            .spawn(move || {
                for job in rx {
                    let (r, periodic) = match job {
                        SyncJob::Data(file) => (file.sync_data(), true),
                        SyncJob::All(file) => (file.sync_all(), false),
                        SyncJob::Dir(dir) => (File::open(dir).and_then(|d| d.sync_all()), false),
                    };
                    if let Err(e) = r {
                        *f.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    }
                    if periodic {
                        b.store(false, Ordering::Release);
                    }
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            busy,
            failed,
        })
    }

    fn send(&self, job: SyncJob) -> io::Result<()> {
        match &self.tx {
            Some(tx) => tx
                .send(job)
                .map_err(|_| io::Error::other("the audit log's sync thread has ended")),
            None => Ok(()),
        }
    }

    /// Asks for a periodic sync of `file`; false while the last one runs.
    fn sync_data(&self, file: &File) -> io::Result<bool> {
        if self.busy.swap(true, Ordering::AcqRel) {
            return Ok(false);
        }
        let r = file.try_clone().and_then(|f| self.send(SyncJob::Data(f)));
        if r.is_err() {
            self.busy.store(false, Ordering::Release);
        }
        r.map(|()| true)
    }

    /// The failure of a sync since the last call, if any.
    fn take_failure(&self) -> Option<io::Error> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Waits until every sync asked for has run.
    fn finish(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.finish();
    }
}

enum Output {
    Stdout,
    File {
        set: LogSet,
        file: File,
        syncer: Syncer,
        /// Bytes in the active file.
        size: u64,
        /// Unix ns of the active file's first record.
        first_ns: Option<i128>,
        dirty: bool,
        last_sync: Instant,
        rotate_failed: Option<Instant>,
    },
}

/// The audit log writer.
pub struct AuditLog {
    out: Output,
    buf: Vec<u8>,
    seq: u64,
    prev: Prev,
    rotation: Rotation,
    stats: Arc<LogStats>,
    recovery: Option<Recovery>,
}

impl AuditLog {
    /// Opens `path` for appending (creating it and its folder, mode 0640);
    /// `-` writes to standard output. The chain and the sequence continue
    /// from the last record of the log (the active file, or the newest
    /// rotated one). When the previous agent did not stop cleanly, writes
    /// an `agent` record with `event = "recovered"` first.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<Self> {
        if path == Path::new("-") {
            return Ok(Self {
                out: Output::Stdout,
                buf: Vec::with_capacity(WRITE_AT),
                seq: 0,
                prev: GENESIS,
                rotation: Rotation::default(),
                stats: Arc::default(),
                recovery: None,
            });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let set = LogSet::new(path);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o640)
            .open(path)?;
        let mut tail = log_files::tail(path)?;
        let partial = if tail.partial.is_empty() {
            None
        } else {
            // Half a record: the rest never reached the disk. Its bytes go
            // into the recovery record; the file ends at the last whole line.
            let len = file.metadata()?.len();
            file.set_len(len - tail.partial.len() as u64)?;
            Some(String::from_utf8_lossy(&tail.partial).into_owned())
        };
        let in_active = tail.last_line.is_some();
        if !in_active && let Some(newest) = set.rotated()?.pop() {
            tail.last_line = log_files::tail(&newest)?.last_line;
        }
        let size = file.metadata()?.len();
        let first_ns = if in_active {
            log_files::first_line(path)?
                .and_then(|l| serde_json::from_slice::<serde_json::Value>(&l).ok())
                .and_then(|v| time::parse_rfc3339(v["time"].as_str()?))
        } else {
            None
        };
        let (seq, prev, recovery) = match &tail.last_line {
            Some(line) => {
                let v: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
                let seq = v["seq"].as_u64().unwrap_or(0);
                let clean = v["kind"] == "agent" && v["event"] == "stop" && partial.is_none();
                let recovery = Recovery {
                    last_seq: seq,
                    last_time: v["time"].as_str().map(str::to_owned),
                    partial,
                    clean,
                };
                (seq, Prev::of(line), Some(recovery))
            }
            None => (
                0,
                GENESIS,
                partial.map(|p| Recovery {
                    last_seq: 0,
                    last_time: None,
                    partial: Some(p),
                    clean: false,
                }),
            ),
        };
        let mut log = Self {
            out: Output::File {
                set,
                file,
                syncer: Syncer::start()?,
                size,
                first_ns,
                dirty: false,
                last_sync: Instant::now(),
                rotate_failed: None,
            },
            buf: Vec::with_capacity(WRITE_AT),
            seq,
            prev,
            rotation,
            stats: Arc::default(),
            recovery,
        };
        if let Some(r) = log.recovery.clone().filter(|r| !r.clean) {
            let mut detail = json!({
                "event": "recovered",
                "last_seq": r.last_seq,
                "last_time": r.last_time,
                "note": "the previous agent did not stop cleanly: records it had not written yet (at most 100 ms of them) and counts of allowed repeats are lost; events still queued in the kernel follow",
            });
            if let Some(p) = r.partial {
                detail["partial"] = json!(p);
            }
            log.event("agent", detail)?;
        }
        Ok(log)
    }

    /// How the previous agent left the log (None for a new log).
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// Counters for the metrics.
    pub fn stats(&self) -> Arc<LogStats> {
        Arc::clone(&self.stats)
    }

    /// New rotation settings (from a reload).
    pub fn set_rotation(&mut self, rotation: Rotation) {
        self.rotation = rotation;
    }

    /// The `seq` of the last record appended.
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    /// The chain's head: the last record's `seq` and the SHA-256 of its
    /// line (what the next record's `prev` will be).
    pub fn head(&self) -> (u64, String) {
        (self.seq, self.prev.as_str().to_owned())
    }

    /// Whether so much is waiting for the disk that no more events should
    /// be taken.
    pub fn backlogged(&self) -> bool {
        self.buf.len() > BACKLOG
    }

    /// Appends one record (one line), giving it its `seq` and `prev`;
    /// returns the `seq`.
    pub fn append<R: Chained>(&mut self, rec: &mut R) -> io::Result<u64> {
        if self.rotation.size > 0
            && let Output::File { size, .. } = &self.out
            && *size + self.buf.len() as u64 >= self.rotation.size
        {
            self.rotate_now();
        }
        self.seq += 1;
        rec.chain(self.seq, self.prev);
        let start = self.buf.len();
        if let Err(e) = rec.write_json(&mut self.buf) {
            self.buf.truncate(start);
            self.seq -= 1;
            return Err(io::Error::other(e));
        }
        let line = &self.buf[start..];
        self.prev = Prev::of(line);
        self.stats.count(rec.kind(), line.len() + 1);
        self.buf.push(b'\n');
        if let Output::File { first_ns, .. } = &mut self.out
            && first_ns.is_none()
        {
            *first_ns = Some(time::unix_now_ns());
        }
        if self.buf.len() >= WRITE_AT {
            self.write_out()?;
        }
        Ok(self.seq)
    }

    /// Appends a non-flow record of `kind` with `detail` and writes it out.
    pub fn event(&mut self, kind: &str, detail: serde_json::Value) -> io::Result<u64> {
        let seq = self.append(&mut EventRecord::new(kind, detail))?;
        self.flush()?;
        Ok(seq)
    }

    /// Writes out what is pending; syncs at most once a second; rotates a
    /// file that has grown too old.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        let due = match &mut self.out {
            Output::Stdout => return io::stdout().flush(),
            Output::File {
                file,
                syncer,
                dirty,
                last_sync,
                first_ns,
                ..
            } => {
                if let Some(e) = syncer.take_failure() {
                    self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
                if *dirty && last_sync.elapsed() >= SYNC_EVERY && syncer.sync_data(file)? {
                    *dirty = false;
                    *last_sync = Instant::now();
                }
                match (self.rotation.age, *first_ns) {
                    (Some(age), Some(first)) => {
                        time::unix_now_ns() - first >= age.as_nanos() as i128
                    }
                    _ => false,
                }
            }
        };
        if due {
            self.rotate_now();
        }
        Ok(())
    }

    /// Writes the pending bytes. Whatever was written leaves the buffer, so
    /// a failed write is retried from where it stopped, never twice.
    fn write_out(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut written = 0;
        let result = loop {
            if written == self.buf.len() {
                break Ok(());
            }
            let r = match &mut self.out {
                Output::Stdout => io::stdout().write(&self.buf[written..]),
                Output::File { file, .. } => file.write(&self.buf[written..]),
            };
            match r {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.buf.drain(..written);
        if let Output::File { size, dirty, .. } = &mut self.out {
            *size += written as u64;
            *dirty |= written > 0;
        }
        if result.is_err() {
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Rotates unless a rotation failed a short while ago; a failure is
    /// logged and writing goes on in the active file.
    fn rotate_now(&mut self) {
        if let Output::File {
            rotate_failed: Some(at),
            ..
        } = &self.out
            && at.elapsed() < ROTATE_RETRY
        {
            return;
        }
        if let Err(e) = self.rotate() {
            tracing::error!(error = %e, "cannot rotate the audit log; writing on in the active file");
            if let Output::File { rotate_failed, .. } = &mut self.out {
                *rotate_failed = Some(Instant::now());
            }
        }
    }

    /// Closes the active file under a rotated name and starts a new one,
    /// whose first record (`kind = "log"`, `event = "rotated"`) names the
    /// previous file and chains to its last record.
    pub fn rotate(&mut self) -> io::Result<()> {
        self.write_out()?;
        let Output::File {
            set,
            file,
            syncer,
            size,
            first_ns,
            dirty,
            last_sync,
            rotate_failed,
        } = &mut self.out
        else {
            return Ok(());
        };
        if *size == 0 {
            return Ok(());
        }
        let mut now = time::unix_now_ns();
        let mut target = set.rotated_path(now);
        while target.exists() {
            now += 1;
            target = set.rotated_path(now);
        }
        fs::rename(set.active(), &target)?;
        let new = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o640)
            .open(set.active())?;
        // The file rotated out is synced whole before anything asked after
        // it (the new file's first sync, the folder).
        syncer.send(SyncJob::All(std::mem::replace(file, new)))?;
        *size = 0;
        *first_ns = None;
        *dirty = false;
        *last_sync = Instant::now();
        *rotate_failed = None;
        let mut deleted = Vec::new();
        if self.rotation.keep > 0 {
            let rotated = set.rotated()?;
            let extra = rotated.len().saturating_sub(self.rotation.keep as usize);
            for old in &rotated[..extra] {
                match fs::remove_file(old) {
                    Ok(()) => deleted.push(file_name(old)),
                    Err(e) => {
                        tracing::warn!(file = %old.display(), error = %e, "cannot delete an old audit log file")
                    }
                }
            }
        }
        if let Some(dir) = set.active().parent().filter(|d| !d.as_os_str().is_empty()) {
            syncer.send(SyncJob::Dir(dir.to_owned()))?;
        }
        self.stats.rotations.fetch_add(1, Ordering::Relaxed);
        let mut detail = json!({
            "event": "rotated",
            "previous": file_name(&target),
            "previous_last_seq": self.seq,
        });
        if !deleted.is_empty() {
            detail["deleted"] = json!(deleted);
        }
        self.append(&mut EventRecord::new("log", detail))?;
        self.write_out()
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Err(e) = self.write_out() {
            tracing::error!(error = %e, "cannot write the end of the audit log");
        }
        if let Output::File { file, syncer, .. } = &mut self.out {
            syncer.finish();
            let _ = file.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::verify;

    use std::path::PathBuf;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("geowall-log-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn lines(p: &Path) -> Vec<serde_json::Value> {
        fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn appends_chained_lines_and_continues_the_sequence() {
        let d = dir("seq");
        let path = d.join("sub/audit.jsonl");
        {
            let mut log = AuditLog::open(&path, Rotation::default()).unwrap();
            assert!(log.recovery().is_none());
            log.event("agent", json!({"event": "start"})).unwrap();
            log.event("agent", json!({"event": "stop"})).unwrap();
        }
        let mut log = AuditLog::open(&path, Rotation::default()).unwrap();
        assert!(log.recovery().unwrap().clean);
        assert_eq!(log.event("agent", json!({"event": "start"})).unwrap(), 3);
        drop(log);
        let recs = lines(&path);
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0]["kind"], "agent");
        assert_eq!(recs[0]["prev"], GENESIS.as_str());
        assert_eq!(recs[1]["event"], "stop");
        assert_eq!(recs[2]["seq"], 3);
        let text = fs::read_to_string(&path).unwrap();
        let raw: Vec<&str> = text.lines().collect();
        assert_eq!(
            recs[2]["prev"],
            crate::vocab::hex::sha256_hex(raw[1].as_bytes())
        );
        assert_eq!(
            text.lines().next().unwrap(),
            format!(
                "{{\"v\":2,\"time\":{},\"seq\":1,\"kind\":\"agent\",\"event\":\"start\",\"prev\":\"{}\"}}",
                serde_json::to_string(&recs[0]["time"]).unwrap(),
                GENESIS.as_str()
            )
        );
        let report = verify::verify(&[path]).unwrap();
        assert!(report.problems.is_empty(), "{report:?}");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn an_unclean_end_is_recorded_and_half_a_record_is_kept_in_it() {
        let d = dir("crash");
        let path = d.join("audit.jsonl");
        {
            let mut log = AuditLog::open(&path, Rotation::default()).unwrap();
            log.event("agent", json!({"event": "start"})).unwrap();
            log.event("job", json!({"event": "start"})).unwrap();
        }
        // A crash in the middle of a write.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"v":2,"time":"x","seq":3,"ver"#).unwrap();
        drop(f);
        let log = AuditLog::open(&path, Rotation::default()).unwrap();
        let r = log.recovery().unwrap();
        assert!(!r.clean);
        assert_eq!(r.last_seq, 2);
        drop(log);
        let recs = lines(&path);
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[2]["kind"], "agent");
        assert_eq!(recs[2]["event"], "recovered");
        assert_eq!(recs[2]["last_seq"], 2);
        assert_eq!(recs[2]["seq"], 3);
        assert_eq!(recs[2]["partial"], r#"{"v":2,"time":"x","seq":3,"ver"#);
        assert!(verify::verify(&[path]).unwrap().problems.is_empty());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn rotation_by_size_keeps_the_chain_and_deletes_beyond_keep() {
        let d = dir("rotate");
        let path = d.join("audit.jsonl");
        let rotation = Rotation {
            size: 600,
            age: None,
            keep: 3,
        };
        let mut log = AuditLog::open(&path, rotation).unwrap();
        for i in 0..40 {
            log.append(&mut EventRecord::new(
                "job",
                json!({"event": "start", "n": i}),
            ))
            .unwrap();
        }
        log.flush().unwrap();
        drop(log);
        let set = LogSet::new(&path);
        let files = set.files().unwrap();
        assert_eq!(files.len(), 4, "{files:?}");
        for f in &files {
            assert!(
                fs::metadata(f).unwrap().len() < 600 + 200,
                "{}",
                f.display()
            );
        }
        let first_of_active = &lines(&path)[0];
        assert_eq!(first_of_active["kind"], "log");
        assert_eq!(first_of_active["event"], "rotated");
        let report = verify::verify(&files).unwrap();
        assert!(report.problems.is_empty(), "{report:?}");
        // Older files were deleted, and the rotation records say so.
        let all: Vec<serde_json::Value> = files.iter().flat_map(|f| lines(f)).collect();
        assert!(all.iter().any(|r| r["deleted"].is_array()));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failed_sync_is_answered_by_the_next_flush() {
        let d = dir("syncfail");
        let path = d.join("audit.jsonl");
        let mut log = AuditLog::open(&path, Rotation::default()).unwrap();
        let Output::File { syncer, .. } = &mut log.out else {
            panic!("a file log");
        };
        // The thread runs jobs in order; a folder that is gone fails.
        syncer.send(SyncJob::Dir(d.join("gone"))).unwrap();
        let (tx, rx) = mpsc::channel();
        let failed = Arc::clone(&syncer.failed);
        thread::spawn(move || {
            while failed.lock().unwrap().is_none() {
                thread::sleep(Duration::from_millis(5));
            }
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let e = log.flush().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(log.stats().write_errors.load(Ordering::Relaxed), 1);
        // Answered once: the log goes on.
        log.event("agent", json!({"event": "start"})).unwrap();
        log.flush().unwrap();
        drop(log);
        assert_eq!(lines(&path).len(), 1);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rotation_by_age() {
        let d = dir("age");
        let path = d.join("audit.jsonl");
        let rotation = Rotation {
            size: 0,
            age: Some(Duration::from_millis(50)),
            keep: 0,
        };
        let mut log = AuditLog::open(&path, rotation).unwrap();
        log.event("job", json!({"n": 1})).unwrap();
        std::thread::sleep(Duration::from_millis(80));
        log.flush().unwrap();
        log.event("job", json!({"n": 2})).unwrap();
        drop(log);
        let set = LogSet::new(&path);
        assert_eq!(set.rotated().unwrap().len(), 1);
        assert!(
            verify::verify(&set.files().unwrap())
                .unwrap()
                .problems
                .is_empty()
        );
        // A restart after a rotation continues the chain from the rotated
        // file when the active one is empty.
        let log = AuditLog::open(&path, rotation).unwrap();
        assert_eq!(log.recovery().unwrap().last_seq, 3);
        let _ = fs::remove_dir_all(&d);
    }
}
