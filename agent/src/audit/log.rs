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
//! **When the log cannot be written** (a full disk, an I/O error): the
//! records not written are held in memory, up to 16 MiB; beyond that each
//! record is counted as lost, by kind. The log tries again every second.
//! [`LogStats::health`] says since when it fails and why (the agent's
//! `status` and metrics show it, and with `[audit] on_write_failure =
//! "deny"` the agent refuses governed jobs' connections meanwhile). Once a
//! write works again, what was held is written, then a `log` record with
//! `event = "write_failed"` (since, until, the error, the failed writes)
//! and, when records were lost, a `lost` record with `reason =
//! "audit_write: <error>"` and their count: the gap is on the record, in the
//! chain.
//!
//! **A torn tail** — a record cut short at the end of a file, by a write
//! that failed half-way or a crash during one — is never appended to. The
//! file is closed as it is (renamed as a rotation would) and a new one
//! started: after a failed write, the new file begins with the record that
//! was cut short, written whole (`log verify` sees that the torn bytes are
//! its beginning); at start, [`AuditLog::open`] finds a torn tail the last
//! agent left (a crash) and the new file's first record (`kind = "log"`,
//! `event = "rotated"`) declares it: its file, offset, length and SHA-256.
//! Either way `log verify` names the torn tail and the record that explains
//! it, and passes.
//!
//! After a crash the log may end without the agent's `stop` record. The next
//! [`AuditLog::open`] writes an `agent` record with `event = "recovered"`
//! (which says which record was the last one written before the crash), so
//! the chain goes on.

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
/// Bytes held in memory while the log cannot be written; records beyond
/// are counted as lost.
const BACKLOG: usize = 16 << 20;
/// How often data is synced to disk at most.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How long to wait before trying a failed rotation again.
const ROTATE_RETRY: Duration = Duration::from_secs(60);
/// How often a log that cannot be written tries again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

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

fn kind_index(kind: &str) -> usize {
    KINDS
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(KINDS.len() - 1)
}

/// What the log wrote, for the metrics.
#[derive(Debug, Default)]
pub struct LogStats {
    pub records: [AtomicU64; KINDS.len()],
    pub bytes: AtomicU64,
    /// Failed writes (and syncs).
    pub write_errors: AtomicU64,
    pub rotations: AtomicU64,
    /// Records that could be neither written nor held (each declared in a
    /// `lost` record once the log can be written again).
    pub lost: AtomicU64,
    /// Whether the log can be written.
    pub health: Mutex<Health>,
}

impl LogStats {
    fn count(&self, kind: &str, bytes: usize) {
        self.records[kind_index(kind)].fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A copy of [`LogStats::health`].
    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut Health)) {
        f(&mut self.health.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Whether the log can be written, for `status` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Since when (Unix ns) the log cannot be written; None while it can.
    pub failing_since: Option<i128>,
    /// The last failed write: when (Unix ns) and its error.
    pub last_error: Option<(i128, String)>,
    /// Records held in memory, waiting to be written.
    pub held: u64,
    /// Records lost since the log last failed (0 while it can be written).
    pub lost_now: u64,
}

/// A record cut short at the end of a file (a torn tail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The name the file is closed under (its rotated name).
    pub file: String,
    /// Where the cut-short bytes begin in the file, and how many there are.
    pub offset: u64,
    pub bytes: u64,
    /// SHA-256 (hex) of those bytes.
    pub sha256: String,
}

impl TornTail {
    fn json(&self) -> serde_json::Value {
        json!({
            "file": self.file,
            "offset": self.offset,
            "bytes": self.bytes,
            "sha256": self.sha256,
        })
    }
}

/// How the previous agent left the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// `seq` and `time` of the last whole record.
    pub last_seq: u64,
    pub last_time: Option<String>,
    /// A record cut off at the end (the file is closed with it and a new
    /// one started).
    pub torn: Option<TornTail>,
    /// The last record was the agent's `stop`.
    pub clean: bool,
}

/// The log cannot be written: since when, why, what was lost.
struct Failure {
    since_ns: i128,
    /// The last error (`No space left on device`).
    error: String,
    /// Failed writes since.
    errors: u64,
    /// Records neither written nor held, by kind.
    lost: [u64; KINDS.len()],
    /// Files closed for a torn tail since.
    closed: Vec<TornTail>,
    /// The `write_failed` record is written or held.
    declared: bool,
    next_try: Instant,
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

/// Called with `true` when the log can be written again, `false` when it
/// cannot (and once when set, with the state at that moment).
pub type HealthHook = Box<dyn Fn(bool) + Send>;

/// The error of a record counted as lost: the log cannot be written and
/// holds no more. The log reports its failure itself (and declares the loss
/// in a `lost` record once it can write); callers need not log it.
#[derive(Debug)]
struct Lost;

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the audit log cannot be written: the record is counted as lost")
    }
}

impl std::error::Error for Lost {}

/// Whether `e` is the error of a record counted as lost (see [`Lost`]).
pub fn is_lost(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Lost>())
}

/// An I/O error's text without its `(os error N)`.
fn describe(e: &io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_owned(),
        _ => s,
    }
}

fn open_active(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Whether a line is a record (the keys every record has).
fn is_record(line: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(line).is_ok_and(|v| {
        v.get("seq").and_then(|s| s.as_u64()).is_some()
            && v.get("prev").and_then(|p| p.as_str()).is_some()
    })
}

/// The audit log writer.
pub struct AuditLog {
    out: Output,
    buf: Vec<u8>,
    /// Records (lines) in `buf`.
    buf_lines: u64,
    seq: u64,
    prev: Prev,
    rotation: Rotation,
    stats: Arc<LogStats>,
    recovery: Option<Recovery>,
    /// The active file ends with a record cut short: it is closed (under
    /// this tail's `file`) before anything more is written.
    torn: Option<TornTail>,
    failure: Option<Failure>,
    on_health: Option<HealthHook>,
}

impl AuditLog {
    /// Opens `path` for appending (creating it and its folder, mode 0640);
    /// `-` writes to standard output. The chain and the sequence continue
    /// from the last whole record of the log (the active file, or the newest
    /// rotated one). When the previous agent did not stop cleanly, writes
    /// an `agent` record with `event = "recovered"` first; when it left a
    /// torn tail, the file is closed with it and a new one started, whose
    /// first record declares it.
    ///
    /// Fails only when the file cannot be opened or read; a log that opens
    /// but cannot be written holds its first records (see the module's
    /// documentation).
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<Self> {
        if path == Path::new("-") {
            return Ok(Self {
                out: Output::Stdout,
                buf: Vec::with_capacity(WRITE_AT),
                buf_lines: 0,
                seq: 0,
                prev: GENESIS,
                rotation: Rotation::default(),
                stats: Arc::default(),
                recovery: None,
                torn: None,
                failure: None,
                on_health: None,
            });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let set = LogSet::new(path);
        let file = open_active(path)?;
        let size = file.metadata()?.len();
        // A torn tail: bytes after the last newline, or a last line that is
        // no record (a crash can leave zeros where a record should be).
        let mut tail = log_files::tail(path)?;
        let mut torn_at = None;
        if !tail.partial.is_empty() {
            torn_at = Some(size - tail.partial.len() as u64);
        } else if let Some(last) = tail.last_line.as_deref().filter(|l| !is_record(l)) {
            let at = size - last.len() as u64 - 1;
            torn_at = Some(at);
            tail = log_files::tail_before(path, at)?;
        }
        let torn = match torn_at {
            Some(offset) => {
                let bytes = log_files::read_range(path, offset, size)?;
                let mut now = time::unix_now_ns();
                let mut target = set.rotated_path(now);
                while target.exists() {
                    now += 1;
                    target = set.rotated_path(now);
                }
                Some(TornTail {
                    file: file_name(&target),
                    offset,
                    bytes: bytes.len() as u64,
                    sha256: crate::vocab::hex::sha256_hex(&bytes),
                })
            }
            None => None,
        };
        let in_active = tail.last_line.is_some();
        if !in_active && let Some(newest) = set.rotated()?.pop() {
            tail.last_line = log_files::tail(&newest)?.last_line;
        }
        let first_ns = if in_active && torn.is_none() {
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
                let clean = v["kind"] == "agent" && v["event"] == "stop" && torn.is_none();
                let recovery = Recovery {
                    last_seq: seq,
                    last_time: v["time"].as_str().map(str::to_owned),
                    torn: torn.clone(),
                    clean,
                };
                (seq, Prev::of(line), Some(recovery))
            }
            None => (
                0,
                GENESIS,
                torn.clone().map(|t| Recovery {
                    last_seq: 0,
                    last_time: None,
                    torn: Some(t),
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
            buf_lines: 0,
            seq,
            prev,
            rotation,
            stats: Arc::default(),
            recovery,
            torn: torn.clone(),
            failure: None,
            on_health: None,
        };
        if let Some(t) = &torn {
            tracing::warn!(
                file = %path.display(),
                offset = t.offset,
                bytes = t.bytes,
                closed_as = t.file,
                "the audit log ends with a record cut short (a torn tail): the file is closed as it is and a new one started, whose first record declares it"
            );
            // The new file's first record: the file before it, and the
            // torn tail it ends with.
            log.push(&mut EventRecord::new(
                "log",
                json!({
                    "event": "rotated",
                    "previous": t.file,
                    "previous_last_seq": seq,
                    "torn_tail": t.json(),
                }),
            ))?;
        }
        if let Some(r) = log.recovery.clone().filter(|r| !r.clean) {
            let mut detail = json!({
                "event": "recovered",
                "last_seq": r.last_seq,
                "last_time": r.last_time,
                "note": "the previous agent did not stop cleanly: records it had not written yet (at most 100 ms of them) and counts of allowed repeats are lost; events still queued in the kernel follow",
            });
            if let Some(t) = &r.torn {
                detail["torn_tail"] = t.json();
            }
            log.push(&mut EventRecord::new("agent", detail))?;
        }
        log.flush()?;
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

    /// Calls `hook` whenever the log stops or starts being writable, and
    /// now with whether it is.
    pub fn set_health_hook(&mut self, hook: HealthHook) {
        hook(self.failure.is_none());
        self.on_health = Some(hook);
    }

    /// Whether the last write worked.
    pub fn writable(&self) -> bool {
        self.failure.is_none()
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

    /// Appends one record (one line), giving it its `seq` and `prev`;
    /// returns the `seq`. While the log cannot be written the record is
    /// held in memory; once 16 MiB are held it is counted as lost instead
    /// (an error [`is_lost`] tells).
    pub fn append<R: Chained>(&mut self, rec: &mut R) -> io::Result<u64> {
        if let Some(f) = &mut self.failure {
            if self.buf.len() >= BACKLOG {
                f.lost[kind_index(rec.kind())] += 1;
                self.stats.lost.fetch_add(1, Ordering::Relaxed);
                self.stats.update(|h| h.lost_now += 1);
                return Err(io::Error::other(Lost));
            }
        } else if self.rotation.size > 0
            && let Output::File { size, .. } = &self.out
            && *size + self.buf.len() as u64 >= self.rotation.size
        {
            self.rotate_now();
        }
        let seq = self.push(rec)?;
        if self.failure.is_none() && self.buf.len() >= WRITE_AT {
            self.write_out();
        }
        Ok(seq)
    }

    /// Chains `rec` and adds its line to the buffer.
    fn push<R: Chained>(&mut self, rec: &mut R) -> io::Result<u64> {
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
        self.buf_lines += 1;
        if let Output::File { first_ns, .. } = &mut self.out
            && first_ns.is_none()
        {
            *first_ns = Some(time::unix_now_ns());
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
    /// file that has grown too old. While the log cannot be written, tries
    /// again once a second (a failed write is not an error here: the log
    /// holds or counts its records and reports the failure itself).
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(f) = &self.failure {
            if Instant::now() >= f.next_try && self.write_out() {
                self.resume();
            }
            return Ok(());
        }
        if !self.write_out() {
            return Ok(());
        }
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

    /// Writes the pending bytes; false when a write failed (the log is then
    /// failing). Whole lines written leave the buffer. A line cut short
    /// stays in it whole: its first bytes are now a torn tail, so the file
    /// is closed before the next write, and the line is written whole at
    /// the start of the next file.
    fn write_out(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        if self.torn.is_some()
            && let Err(e) = self.close_torn()
        {
            self.failed(&e);
            return false;
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
        let whole = match &mut self.out {
            // Standard output cannot be closed and reopened: go on from
            // where the write stopped.
            Output::Stdout => written,
            Output::File { set, size, .. } => {
                let whole = if written == self.buf.len() {
                    written
                } else {
                    self.buf[..written]
                        .iter()
                        .rposition(|b| *b == b'\n')
                        .map_or(0, |i| i + 1)
                };
                if whole < written {
                    let cut = &self.buf[whole..written];
                    let mut now = time::unix_now_ns();
                    let mut target = set.rotated_path(now);
                    while target.exists() {
                        now += 1;
                        target = set.rotated_path(now);
                    }
                    self.torn = Some(TornTail {
                        file: file_name(&target),
                        offset: *size + whole as u64,
                        bytes: cut.len() as u64,
                        sha256: crate::vocab::hex::sha256_hex(cut),
                    });
                }
                *size += written as u64;
                whole
            }
        };
        if whole == self.buf.len() {
            self.buf_lines = 0;
        } else {
            let lines = self.buf[..whole].iter().filter(|b| **b == b'\n').count();
            self.buf_lines -= lines as u64;
        }
        self.buf.drain(..whole);
        if let Output::File { dirty, .. } = &mut self.out {
            *dirty |= written > 0;
        }
        match result {
            Ok(()) => true,
            Err(e) => {
                self.failed(&e);
                false
            }
        }
    }

    /// A write failed: the log holds its records and tries again in a
    /// second. The first failure is logged and told to the health hook.
    fn failed(&mut self, e: &io::Error) {
        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        let error = describe(e);
        let now = time::unix_now_ns();
        let held = self.buf_lines;
        let next_try = Instant::now() + RETRY_EVERY;
        match &mut self.failure {
            Some(f) => {
                f.errors += 1;
                f.error = error.clone();
                f.next_try = next_try;
                self.stats.update(|h| {
                    h.last_error = Some((now, error));
                    h.held = held;
                });
            }
            None => {
                tracing::error!(
                    file = %self.path().display(),
                    error = %error,
                    held,
                    "cannot write the audit log: records are held in memory (up to 16 MiB), then counted as lost, until a write works again (tried every second); the failure will be on the record"
                );
                self.failure = Some(Failure {
                    since_ns: now,
                    error: error.clone(),
                    errors: 1,
                    lost: [0; KINDS.len()],
                    closed: Vec::new(),
                    declared: false,
                    next_try,
                });
                self.stats.update(|h| {
                    h.failing_since = Some(now);
                    h.last_error = Some((now, error));
                    h.held = held;
                    h.lost_now = 0;
                });
                if let Some(hook) = &self.on_health {
                    hook(false);
                }
            }
        }
    }

    /// What was held is written: the failure goes on the record (a `log`
    /// record `write_failed`, and a `lost` record when records were lost),
    /// and once that is written too the log is writable again.
    fn resume(&mut self) {
        let Some(f) = self.failure.as_mut() else {
            return;
        };
        let lost: u64 = f.lost.iter().sum();
        if !f.declared || lost > 0 {
            let (since, until) = (
                time::rfc3339(f.since_ns),
                time::rfc3339(time::unix_now_ns()),
            );
            let mut detail = json!({
                "event": "write_failed",
                "since": since,
                "until": until,
                "error": f.error,
                "failed_writes": f.errors,
                "lost": lost,
            });
            if !f.closed.is_empty() {
                detail["closed"] = f.closed.iter().map(TornTail::json).collect();
            }
            let lost_detail = (lost > 0).then(|| {
                let kinds: serde_json::Map<String, serde_json::Value> = KINDS
                    .iter()
                    .zip(f.lost)
                    .filter(|(_, n)| *n > 0)
                    .map(|(k, n)| ((*k).to_owned(), json!(n)))
                    .collect();
                json!({
                    "reason": format!("audit_write: {}", f.error),
                    "count": lost,
                    "kinds": kinds,
                    "since": since,
                    "until": until,
                })
            });
            f.lost = [0; KINDS.len()];
            f.declared = true;
            // Serializing plain JSON cannot fail.
            let _ = self.push(&mut EventRecord::new("log", detail));
            if let Some(d) = lost_detail {
                let _ = self.push(&mut EventRecord::new("lost", d));
            }
        }
        if !self.write_out() {
            return;
        }
        let Some(f) = self.failure.take() else {
            return;
        };
        self.stats.update(|h| {
            h.failing_since = None;
            h.held = 0;
            h.lost_now = 0;
        });
        tracing::warn!(
            file = %self.path().display(),
            since = %time::rfc3339(f.since_ns),
            failed_writes = f.errors,
            lost = self.stats.lost.load(Ordering::Relaxed),
            "the audit log can be written again; the failure is on the record (a write_failed record, and a lost record for records that could not be held)"
        );
        if let Some(hook) = &self.on_health {
            hook(true);
        }
    }

    fn path(&self) -> &Path {
        match &self.out {
            Output::Stdout => Path::new("-"),
            Output::File { set, .. } => set.active(),
        }
    }

    /// Closes the active file, which ends with a torn tail, under the name
    /// the tail carries, and starts a new one.
    fn close_torn(&mut self) -> io::Result<()> {
        let Some(torn) = self.torn.clone() else {
            return Ok(());
        };
        let Output::File { set, .. } = &self.out else {
            self.torn = None;
            return Ok(());
        };
        let target = set.active().with_file_name(&torn.file);
        if target.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{}: cannot close the file with a torn tail under this name: it exists",
                    target.display()
                ),
            ));
        }
        self.start_new_file(&target)?;
        tracing::warn!(
            file = %target.display(),
            offset = torn.offset,
            bytes = torn.bytes,
            "closed an audit log file that ends with a record cut short (a torn tail); a new file is started"
        );
        if let Some(f) = &mut self.failure {
            f.closed.push(torn);
        }
        self.torn = None;
        Ok(())
    }

    /// Renames the active file to `target` and opens a new active file.
    fn start_new_file(&mut self, target: &Path) -> io::Result<()> {
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
        fs::rename(set.active(), target)?;
        let new = match open_active(set.active()) {
            Ok(f) => f,
            Err(e) => {
                // Back as it was: the active file stays the one to close.
                let _ = fs::rename(target, set.active());
                return Err(e);
            }
        };
        // The file rotated out is synced whole before anything asked after
        // it (the new file's first sync, the folder).
        syncer.send(SyncJob::All(std::mem::replace(file, new)))?;
        *size = 0;
        *first_ns = None;
        *dirty = false;
        *last_sync = Instant::now();
        *rotate_failed = None;
        if let Some(dir) = set.active().parent().filter(|d| !d.as_os_str().is_empty()) {
            syncer.send(SyncJob::Dir(dir.to_owned()))?;
        }
        self.stats.rotations.fetch_add(1, Ordering::Relaxed);
        Ok(())
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
    /// previous file and chains to its last record. Waits while the log
    /// cannot be written.
    fn rotate(&mut self) -> io::Result<()> {
        if !self.write_out() {
            return Ok(());
        }
        let Output::File { set, size, .. } = &self.out else {
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
        self.start_new_file(&target)?;
        let Output::File { set, .. } = &self.out else {
            return Ok(());
        };
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
        let mut detail = json!({
            "event": "rotated",
            "previous": file_name(&target),
            "previous_last_seq": self.seq,
        });
        if !deleted.is_empty() {
            detail["deleted"] = json!(deleted);
        }
        self.push(&mut EventRecord::new("log", detail))?;
        self.write_out();
        Ok(())
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if self.failure.is_some() {
            if self.write_out() {
                self.resume();
            }
        } else {
            self.write_out();
        }
        if self.failure.is_some() {
            tracing::error!(
                file = %self.path().display(),
                held = self.buf_lines,
                "the audit log cannot be written: the records held in memory are lost; the next start finds the log's end and goes on from it"
            );
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
    fn a_torn_tail_left_by_a_crash_is_closed_and_declared() {
        let d = dir("crash");
        let path = d.join("audit.jsonl");
        {
            let mut log = AuditLog::open(&path, Rotation::default()).unwrap();
            log.event("agent", json!({"event": "start"})).unwrap();
            log.event("job", json!({"event": "start"})).unwrap();
        }
        // A crash in the middle of a write.
        let torn = br#"{"v":2,"time":"x","seq":3,"ver"#;
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(torn).unwrap();
        drop(f);
        let before = fs::metadata(&path).unwrap().len();
        let log = AuditLog::open(&path, Rotation::default()).unwrap();
        let r = log.recovery().unwrap().clone();
        assert!(!r.clean);
        assert_eq!(r.last_seq, 2);
        let t = r.torn.clone().unwrap();
        assert_eq!(t.bytes, torn.len() as u64);
        assert_eq!(t.offset, before - torn.len() as u64);
        drop(log);
        // The file is closed as it was, torn tail and all; never appended to.
        let set = LogSet::new(&path);
        let rotated = set.rotated().unwrap();
        assert_eq!(rotated.len(), 1);
        assert_eq!(file_name(&rotated[0]), t.file);
        assert_eq!(fs::metadata(&rotated[0]).unwrap().len(), before);
        assert!(fs::read(&rotated[0]).unwrap().ends_with(torn));
        // The new file declares it, then says the agent recovered.
        let recs = lines(&path);
        assert_eq!(recs[0]["kind"], "log");
        assert_eq!(recs[0]["event"], "rotated");
        assert_eq!(recs[0]["seq"], 3);
        assert_eq!(recs[0]["previous"], t.file.as_str());
        assert_eq!(recs[0]["torn_tail"]["bytes"], torn.len());
        assert_eq!(recs[0]["torn_tail"]["offset"], t.offset);
        assert_eq!(
            recs[0]["torn_tail"]["sha256"],
            crate::vocab::hex::sha256_hex(torn)
        );
        assert_eq!(recs[1]["event"], "recovered");
        assert_eq!(recs[1]["last_seq"], 2);
        let report = verify::verify(&set.files().unwrap()).unwrap();
        assert!(report.problems.is_empty(), "{report:?}");
        assert_eq!(report.torn_tails, 1);
        assert!(report.gaps[0].message.contains("torn tail"), "{report:?}");
        assert_eq!(report.gaps[0].line, 3);
        // A change to the torn bytes no longer matches the declaration.
        let mut bytes = fs::read(&rotated[0]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&rotated[0], bytes).unwrap();
        let report = verify::verify(&set.files().unwrap()).unwrap();
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert!(report.problems[0].message.contains("torn tail"));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_last_line_that_is_no_record_is_a_torn_tail_too() {
        let d = dir("zeros");
        let path = d.join("audit.jsonl");
        {
            let mut log = AuditLog::open(&path, Rotation::default()).unwrap();
            log.event("agent", json!({"event": "start"})).unwrap();
        }
        // A filesystem that lost the data of the last write after a crash.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0u8; 100]).unwrap();
        f.write_all(b"\n").unwrap();
        drop(f);
        let log = AuditLog::open(&path, Rotation::default()).unwrap();
        assert_eq!(log.recovery().unwrap().torn.as_ref().unwrap().bytes, 101);
        drop(log);
        let set = LogSet::new(&path);
        let report = verify::verify(&set.files().unwrap()).unwrap();
        assert!(report.problems.is_empty(), "{report:?}");
        assert_eq!(report.torn_tails, 1);
        assert_eq!(lines(&path)[0]["seq"], 2);
        let _ = fs::remove_dir_all(&d);
    }

    /// Points the log's writes at `/dev/full` (every write: ENOSPC).
    fn fill(log: &mut AuditLog) {
        let Output::File { file, .. } = &mut log.out else {
            panic!("a file log");
        };
        *file = OpenOptions::new().write(true).open("/dev/full").unwrap();
    }

    /// Back to the log's file; the next flush tries at once.
    fn free(log: &mut AuditLog, path: &Path) {
        let Output::File { file, .. } = &mut log.out else {
            panic!("a file log");
        };
        *file = open_active(path).unwrap();
        if let Some(f) = &mut log.failure {
            f.next_try = Instant::now();
        }
    }

    #[test]
    fn records_are_held_while_the_disk_is_full_and_the_failure_goes_on_record() {
        let d = dir("full");
        let path = d.join("audit.jsonl");
        let mut log = AuditLog::open(&path, Rotation::default()).unwrap();
        let states = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&states);
        log.set_health_hook(Box::new(move |ok| s.lock().unwrap().push(ok)));
        log.event("agent", json!({"event": "start"})).unwrap();
        fill(&mut log);
        for i in 0..10 {
            log.append(&mut EventRecord::new("job", json!({"n": i})))
                .unwrap();
        }
        log.flush().unwrap();
        assert!(!log.writable());
        let stats = log.stats();
        let h = stats.health();
        assert!(h.failing_since.is_some());
        assert_eq!(h.last_error.as_ref().unwrap().1, "No space left on device");
        assert_eq!(h.held, 10);
        assert_eq!(stats.write_errors.load(Ordering::Relaxed), 1);
        // Not yet time to try again.
        log.flush().unwrap();
        assert_eq!(stats.write_errors.load(Ordering::Relaxed), 1);
        free(&mut log, &path);
        log.flush().unwrap();
        assert!(log.writable());
        assert_eq!(stats.health().failing_since, None);
        assert_eq!(*states.lock().unwrap(), [true, false, true]);
        drop(log);
        let recs = lines(&path);
        assert_eq!(recs.len(), 12, "{recs:?}");
        assert_eq!(recs[10]["n"], 9);
        assert_eq!(recs[11]["kind"], "log");
        assert_eq!(recs[11]["event"], "write_failed");
        assert_eq!(recs[11]["error"], "No space left on device");
        assert_eq!(recs[11]["lost"], 0);
        let report = verify::verify(&[path]).unwrap();
        assert!(report.problems.is_empty(), "{report:?}");
        assert!(report.gaps[0].message.contains("could not be written"));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn beyond_what_is_held_records_are_counted_lost_and_declared() {
        let d = dir("lost");
        let path = d.join("audit.jsonl");
        let mut log = AuditLog::open(&path, Rotation::default()).unwrap();
        log.event("agent", json!({"event": "start"})).unwrap();
        fill(&mut log);
        let pad = "x".repeat(1000);
        let mut lost = 0;
        let mut i = 0;
        while lost < 5 {
            i += 1;
            match log.append(&mut EventRecord::new("job", json!({"n": i, "pad": pad}))) {
                Ok(_) => {}
                Err(e) => {
                    assert!(is_lost(&e), "{e}");
                    lost += 1;
                }
            }
            if i % 1000 == 0 {
                log.flush().unwrap();
            }
        }
        let stats = log.stats();
        assert_eq!(stats.lost.load(Ordering::Relaxed), 5);
        assert_eq!(stats.health().lost_now, 5);
        free(&mut log, &path);
        log.flush().unwrap();
        assert!(log.writable());
        drop(log);
        let recs = lines(&path);
        let n = recs.len();
        assert_eq!(recs[n - 2]["event"], "write_failed");
        assert_eq!(recs[n - 2]["lost"], 5);
        assert_eq!(recs[n - 1]["kind"], "lost");
        assert_eq!(
            recs[n - 1]["reason"],
            "audit_write: No space left on device"
        );
        assert_eq!(recs[n - 1]["count"], 5);
        assert_eq!(recs[n - 1]["kinds"]["job"], 5);
        let report = verify::verify(&[path]).unwrap();
        assert!(report.problems.is_empty(), "{report:?}");
        assert_eq!(
            report.lost.get("audit_write: No space left on device"),
            Some(&5)
        );
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
