//! Process context for flow records: the executable and the (masked)
//! command line from /proc, the user name of a uid.
//!
//! /proc is read when the event is handled, a few milliseconds after the
//! decision at most. What is read is checked against the event: a process
//! that started after the decision (the pid was reused) or whose thread now
//! has another name (it ran exec since) gives nothing, and the record keeps
//! what the kernel put in the event (pid, comm, uid). A process already gone
//! gives nothing either. Answers are cached per (pid, comm) for a second, so
//! a busy process costs one read of /proc a second.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use super::mask::Masker;
use crate::audit::record::ProcessInfo;

/// How long an answer about a process is reused.
const TTL: Duration = Duration::from_secs(1);
/// How long a user name is reused.
const USER_TTL: Duration = Duration::from_secs(60);
/// Processes remembered at most.
const MAX_ENTRIES: usize = 8192;
/// Bytes of /proc/PID/cmdline read at most.
const CMDLINE_READ: usize = 16 * 1024;
/// Characters of a recorded command line at most (after masking).
pub const CMDLINE_MAX: usize = 4096;

struct Entry {
    fetched: Instant,
    info: Option<Arc<ProcessInfo>>,
}

/// Reads and caches process context.
pub struct ProcessCache {
    masker: Arc<Masker>,
    entries: HashMap<(u32, [u8; 16]), Entry>,
    users: HashMap<u32, (Instant, Option<Arc<str>>)>,
    tick_ns: u64,
    /// Where /proc is (tests point it elsewhere).
    proc_root: String,
}

impl ProcessCache {
    pub fn new(masker: Arc<Masker>) -> Self {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Self {
            masker,
            entries: HashMap::new(),
            users: HashMap::new(),
            tick_ns: 1_000_000_000 / hz,
            proc_root: "/proc".into(),
        }
    }

    /// New masking rules: what was read under the old ones is forgotten.
    pub fn set_masker(&mut self, masker: Arc<Masker>) {
        self.masker = masker;
        self.entries.clear();
    }

    /// The context of thread `tid` of process `tgid`, named `comm` by the
    /// kernel at boot-clock time `event_ns`.
    pub fn lookup(
        &mut self,
        tgid: u32,
        tid: u32,
        comm: &[u8; 16],
        event_ns: u64,
    ) -> Option<Arc<ProcessInfo>> {
        let now = Instant::now();
        let key = (tgid, *comm);
        if let Some(e) = self.entries.get(&key)
            && now.duration_since(e.fetched) < TTL
        {
            return e.info.clone();
        }
        let info = self.read(tgid, tid, comm, event_ns).map(Arc::new);
        if self.entries.len() >= MAX_ENTRIES {
            self.entries
                .retain(|_, e| now.duration_since(e.fetched) < TTL);
            if self.entries.len() >= MAX_ENTRIES {
                self.entries.clear();
            }
        }
        self.entries.insert(
            key,
            Entry {
                fetched: now,
                info: info.clone(),
            },
        );
        info
    }

    fn read(&self, tgid: u32, tid: u32, comm: &[u8; 16], event_ns: u64) -> Option<ProcessInfo> {
        let base = format!("{}/{tgid}", self.proc_root);
        // What matters first, while the process may be about to exit; then
        // whether it is the process that made the decision.
        let args = read_cmdline(&format!("{base}/cmdline"));
        let exe = std::fs::read_link(format!("{base}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        let stat = std::fs::read_to_string(format!("{base}/stat")).ok()?;
        // Field 22 (starttime, clock ticks since boot) is the 20th after
        // the parenthesized command name.
        let after = &stat[stat.rfind(')')? + 1..];
        let start_ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
        if start_ticks.saturating_mul(self.tick_ns) > event_ns {
            return None;
        }
        if let Ok(now_comm) = std::fs::read(format!("{base}/task/{tid}/comm")) {
            let now_comm = now_comm.strip_suffix(b"\n").unwrap_or(&now_comm);
            let end = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
            if now_comm != &comm[..end] {
                return None;
            }
        }
        let cmdline = args
            .filter(|args| !args.is_empty())
            .map(|args| truncate(self.masker.command_line(args), CMDLINE_MAX));
        if exe.is_none() && cmdline.is_none() {
            // Exited (a zombie keeps its stat, not its memory).
            return None;
        }
        Some(ProcessInfo { exe, cmdline })
    }

    /// The user name of `uid` (None when the system knows none).
    pub fn user(&mut self, uid: u32) -> Option<Arc<str>> {
        let now = Instant::now();
        if let Some((at, name)) = self.users.get(&uid)
            && now.duration_since(*at) < USER_TTL
        {
            return name.clone();
        }
        let name = crate::host::users::user_name(uid).map(Arc::from);
        if self.users.len() >= MAX_ENTRIES {
            self.users.clear();
        }
        self.users.insert(uid, (now, name.clone()));
        name
    }
}

/// The arguments in a /proc/PID/cmdline file (its first [`CMDLINE_READ`]
/// bytes).
fn read_cmdline(path: &str) -> Option<Vec<String>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(512);
    std::fs::File::open(path)
        .ok()?
        .take(CMDLINE_READ as u64)
        .read_to_end(&mut buf)
        .ok()?;
    let buf = buf.strip_suffix(&[0]).unwrap_or(&buf);
    if buf.is_empty() {
        return Some(Vec::new());
    }
    Some(
        buf.split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// `s` cut to at most `max` characters, marked with `…` when cut.
fn truncate(mut s: String, max: usize) -> String {
    if let Some((at, _)) = s.char_indices().nth(max) {
        s.truncate(at);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuditConfig;

    fn cache() -> ProcessCache {
        ProcessCache::new(Arc::new(Masker::new(&AuditConfig::default()).unwrap()))
    }

    fn comm_of(pid: u32) -> [u8; 16] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        let mut comm = [0u8; 16];
        let t = text.trim_end().as_bytes();
        comm[..t.len()].copy_from_slice(t);
        comm
    }

    #[test]
    fn reads_a_live_process_masks_it_and_caches_it() {
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "while :; do sleep 1; done",
                "--password=hunter2",
                "TOKEN=abc",
            ])
            .spawn()
            .unwrap();
        let pid = child.id();
        // The child has exec'd once its comm reads "sh" and its arguments
        // are in place (exec names the task before it sets up the new
        // argument pages: in between, /proc/PID/cmdline reads empty).
        let deadline = Instant::now() + Duration::from_secs(5);
        let execd = || {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() == "sh\n"
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.ends_with(b"TOKEN=abc\0"))
        };
        while !execd() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut c = cache();
        let comm = comm_of(pid);
        let info = c
            .lookup(pid, pid, &comm, crate::vocab::clock::boot_ns())
            .expect("live process");
        assert!(info.exe.as_deref().unwrap().starts_with('/'), "{info:?}");
        assert_eq!(
            info.cmdline.as_deref(),
            Some("sh -c 'while :; do sleep 1; done' --password=*** TOKEN=***")
        );
        // A decision from before the process started is not its.
        let mut fresh = cache();
        assert_eq!(fresh.lookup(pid, pid, &comm, 1), None);
        // Another name: the thread ran exec since.
        let mut other = comm;
        other[0] = b'x';
        assert_eq!(
            fresh.lookup(pid, pid, &other, crate::vocab::clock::boot_ns()),
            None
        );
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        child.wait().unwrap();
        // Cached for a second, then gone with the process.
        assert!(
            c.lookup(pid, pid, &comm, crate::vocab::clock::boot_ns())
                .is_some()
        );
        c.entries.clear();
        assert_eq!(
            c.lookup(pid, pid, &comm, crate::vocab::clock::boot_ns()),
            None
        );
    }

    #[test]
    fn user_names_come_from_the_user_database() {
        let mut c = cache();
        assert_eq!(c.user(0).as_deref(), Some("root"));
        assert_eq!(c.user(4_000_000_000), None);
    }

    #[test]
    fn long_command_lines_are_cut() {
        assert_eq!(truncate("abcdef".into(), 3), "abc…");
        assert_eq!(truncate("abc".into(), 3), "abc");
    }
}
