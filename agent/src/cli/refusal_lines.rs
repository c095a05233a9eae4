//! What `geowall exec` tells the job about the connections the kernel
//! refused it: one line on the job's standard error per refused destination
//! (and policy), rate-limited, e.g.
//!
//! ```text
//! geowall: 203.0.113.5:443 (US) refused by policy eu-only — request access: geowall approvals request --to 203.0.113.5:443 --job eu-only-4242 --for 1h --reason '…'
//! ```
//!
//! The agent hands the job's refusals over the control socket
//! (`job_refusals`, a long poll a thread of ours keeps open). A refusal line
//! never lands inside a line of the job's own output:
//!
//! - When the job's standard error is no terminal (a file, a pipe: CI logs,
//!   collected logs, whatever a program parses), the job gets a pipe as its
//!   standard error (and as its standard output too, when both were the
//!   same file: `2>&1`) and geowall copies it through line by line,
//!   inserting its lines only between the job's lines. A partial line (a
//!   prompt) is passed on after 100 ms or at 4 KiB; a refusal line then
//!   waits for the end of that line. When the job's main process exits,
//!   what it left in the pipe is copied, the agent is asked for the last
//!   refusals (after it has read every event the kernel queued), and geowall
//!   exits: output a background process of the job writes to standard error
//!   after that is lost (it gets `EPIPE`/`SIGPIPE`, as in any pipeline).
//! - When it is a terminal, it stays the job's: a job keeps its terminal
//!   (`isatty`, colours, line editing, window size, job control), and each
//!   refusal line is written whole, with one `write(2)`: it cannot be cut by
//!   the job's output, but may follow a partial line of it on the screen.
//!
//! `--quiet` turns all of it off: the job's descriptors are then untouched.

use std::{
    collections::{HashSet, VecDeque},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use geowall::control::{
    Client,
    proto::{JobRefusals, RefusalEntry, RefusalsSince},
};

/// Lines a second at most; beyond, "… and K more refused" once a second.
const LINES_PER_SECOND: u32 = 5;
/// How long a partial line of the job waits for its end before it is
/// passed on.
const PARTIAL_DELAY: Duration = Duration::from_millis(100);
/// A partial line this long is passed on at once.
const PARTIAL_MAX: usize = 4096;
/// How long one poll of the agent waits for a refusal.
const POLL_WAIT_MS: u32 = 1000;

/// Refusals turned into lines: once per destination and policy, at most
/// [`LINES_PER_SECOND`], the rest counted.
pub(super) struct Teller {
    job: String,
    /// (destination as shown, policy) already told.
    told: HashSet<(String, String)>,
    /// The highest refusal number handled (two pollers may see one twice).
    last_seq: u64,
    window: Option<Instant>,
    in_window: u32,
    /// Refused destinations not told for the rate limit (or dropped by the
    /// agent), since the last summary.
    more: u64,
}

impl Teller {
    pub(super) fn new(job: &str) -> Self {
        Self {
            job: job.to_owned(),
            told: HashSet::new(),
            last_seq: 0,
            window: None,
            in_window: 0,
            more: 0,
        }
    }

    /// The lines an answer of the agent gives, at `now`.
    pub(super) fn add(&mut self, found: &RefusalsSince, now: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        if found.missed > 0 && found.refusals.first().is_none_or(|r| r.seq > self.last_seq) {
            self.more += found.missed;
        }
        for r in &found.refusals {
            if r.seq <= self.last_seq {
                continue;
            }
            self.last_seq = r.seq;
            let dest = destination(r);
            if !self.told.insert((dest.clone(), r.refused.policy.clone())) {
                continue;
            }
            if self
                .window
                .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1))
            {
                if let Some(summary) = self.summary() {
                    lines.push(summary);
                }
                self.window = Some(now);
                self.in_window = 0;
            }
            if self.in_window >= LINES_PER_SECOND {
                self.more += 1;
                continue;
            }
            self.in_window += 1;
            lines.push(self.line(r, &dest));
        }
        lines
    }

    /// When the summary of the current window is due (none pending: never).
    pub(super) fn summary_due(&self) -> Option<Instant> {
        (self.more > 0)
            .then_some(self.window)
            .flatten()
            .map(|w| w + Duration::from_secs(1))
    }

    /// "… and K more refused", once the window is over (or `force`).
    pub(super) fn summary_at(&mut self, now: Instant, force: bool) -> Option<String> {
        if force || self.summary_due().is_some_and(|due| now >= due) {
            self.window = None;
            return self.summary();
        }
        None
    }

    fn summary(&mut self) -> Option<String> {
        let more = std::mem::take(&mut self.more);
        (more > 0).then(|| format!("geowall: … and {more} more refused"))
    }

    fn line(&self, r: &RefusalEntry, dest: &str) -> String {
        let f = &r.refused;
        let mut region = if f.tags.is_empty() {
            "untagged".to_owned()
        } else {
            f.tags.join(", ")
        };
        if !matches!(f.reason.as_str(), "region" | "untagged" | "local") {
            region = format!("{region}; {}", f.reason);
        }
        // A name the job resolved: the address too.
        let about = match &f.name {
            Some(_) => format!("{}, {region}", f.dst),
            None => region,
        };
        let policy = &f.policy;
        if f.option.is_some() {
            // A source route: the kernel judges its hops by rules and
            // regions only; no grant opens one.
            return format!(
                "geowall: {dest} ({about}) refused by policy {policy} (a grant does not open a \
                 routing hop)"
            );
        }
        if r.approvable {
            format!(
                "geowall: {dest} ({about}) refused by policy {policy} — request access: \
                 geowall approvals request --to {dest} --job {} --for {} --reason '…'",
                self.job,
                r.grant_for.as_deref().unwrap_or("1h")
            )
        } else {
            format!(
                "geowall: {dest} ({about}) refused by policy {policy} (it takes no approval requests)"
            )
        }
    }
}

/// The destination as the job named it: the name it resolved, else the
/// address; with the port.
fn destination(r: &RefusalEntry) -> String {
    let f = &r.refused;
    if let Some(option) = &f.option {
        return match f.dst {
            a if !a.is_unspecified() => format!("{option} via {a}"),
            std::net::IpAddr::V6(_) => "IPv6 routing option".to_owned(),
            std::net::IpAddr::V4(_) => format!("{option} source route"),
        };
    }
    match (&f.name, f.dst) {
        (Some(name), _) => format!("{name}:{}", f.port),
        (None, std::net::IpAddr::V6(a)) => format!("[{a}]:{}", f.port),
        (None, a) => format!("{a}:{}", f.port),
    }
}

/// A pipe, both ends close-on-exec.
pub(super) fn pipe() -> std::io::Result<[libc::c_int; 2]> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-parameter for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fds)
}

/// What `exec` sets up before the fork.
pub(super) struct Prepared {
    /// The pipe the job gets as its standard error (read end, write end);
    /// `None`: standard error is a terminal, left as it is.
    pub(super) pipe: Option<(OwnedFd, OwnedFd)>,
    /// The job's standard output is the same file as its standard error:
    /// it gets the pipe too.
    pub(super) with_stdout: bool,
}

/// Whether two descriptors are the same file (`2>&1`).
fn same_file(a: RawFd, b: RawFd) -> bool {
    // SAFETY: fstat on descriptors with valid out-parameters.
    unsafe {
        let mut x: libc::stat = std::mem::zeroed();
        let mut y: libc::stat = std::mem::zeroed();
        libc::fstat(a, &mut x) == 0
            && libc::fstat(b, &mut y) == 0
            && (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)
    }
}

/// Before the fork: a pipe for the job's standard error unless it is a
/// terminal.
pub(super) fn prepare() -> std::io::Result<Prepared> {
    // SAFETY: isatty on our standard descriptors.
    let (err_tty, out_tty) = unsafe { (libc::isatty(2) == 1, libc::isatty(1) == 1) };
    if err_tty {
        return Ok(Prepared {
            pipe: None,
            with_stdout: false,
        });
    }
    let [r, w] = pipe()?;
    // SAFETY: both are fresh descriptors of ours.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(r), OwnedFd::from_raw_fd(w)) };
    // SAFETY: fcntl on our own descriptor.
    unsafe {
        let flags = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(r.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    Ok(Prepared {
        pipe: Some((r, w)),
        with_stdout: !out_tty && same_file(1, 2),
    })
}

/// Refusals the poller thread received, for the relay.
#[derive(Default)]
struct Inbox {
    found: Vec<RefusalsSince>,
}

/// Follows the job's refusals: a thread polls the agent and wakes the relay.
pub(super) struct Follower {
    socket: PathBuf,
    job: String,
    cursor: Arc<AtomicU64>,
    inbox: Arc<Mutex<Inbox>>,
    wake: OwnedFd,
}

impl Follower {
    /// Starts following job `job` (before it runs: nothing earlier is
    /// kept). An error: the agent does not follow it (an older agent, or
    /// not ours to follow).
    pub(super) fn start(
        socket: PathBuf,
        job: &str,
    ) -> Result<Follower, geowall::control::ClientError> {
        let mut client = Client::connect(&socket)?;
        client.set_timeout(Some(Duration::from_secs(10)));
        let first = client.call(JobRefusals {
            job: job.to_owned(),
            after: 0,
            wait_ms: 0,
            settle: false,
        })?;
        let cursor = Arc::new(AtomicU64::new(first.next));
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let [wake_r, wake_w] = pipe().map_err(|source| geowall::control::ClientError::Io {
            path: socket.clone(),
            source,
        })?;
        // SAFETY: fresh descriptors of ours.
        let (wake_r, wake_w) =
            unsafe { (OwnedFd::from_raw_fd(wake_r), OwnedFd::from_raw_fd(wake_w)) };
        let thread = {
            let (job, cursor, inbox) = (job.to_owned(), Arc::clone(&cursor), Arc::clone(&inbox));
            move || {
                loop {
                    let found = client.call(JobRefusals {
                        job: job.clone(),
                        after: cursor.load(Ordering::Relaxed),
                        wait_ms: POLL_WAIT_MS,
                        settle: false,
                    });
                    let Ok(found) = found else {
                        // The agent went away: no more lines (the job runs on).
                        return;
                    };
                    // The cursor moves with what it covers in the inbox, under
                    // one lock: whoever takes the inbox and reads the cursor
                    // together has every refusal up to the cursor.
                    let mut held = inbox.lock().expect("inbox lock");
                    cursor.fetch_max(found.next, Ordering::Relaxed);
                    if found.refusals.is_empty() && found.missed == 0 {
                        continue;
                    }
                    held.found.push(found);
                    drop(held);
                    // SAFETY: a write of one byte to our own pipe.
                    unsafe { libc::write(wake_w.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
                }
            }
        };
        std::thread::Builder::new()
            .name("refusals".into())
            .spawn(thread)
            .map_err(|source| geowall::control::ClientError::Io {
                path: socket.clone(),
                source,
            })?;
        Ok(Follower {
            socket,
            job: job.to_owned(),
            cursor,
            inbox,
            wake: wake_r,
        })
    }

    /// What the poller found since the last take, and the cursor that
    /// covers it.
    fn take(&self) -> (Vec<RefusalsSince>, u64) {
        let mut buf = [0u8; 64];
        // SAFETY: reads into our buffer from our own non-blocking pipe.
        unsafe {
            let fd = self.wake.as_raw_fd();
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            while libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) > 0 {}
        }
        let mut held = self.inbox.lock().expect("inbox lock");
        (
            std::mem::take(&mut held.found),
            self.cursor.load(Ordering::Relaxed),
        )
    }

    /// The job has ended: its refusals after `after` (the cursor of the
    /// last take), once the agent has read every event the kernel queued;
    /// every answer's worth (the agent answers a bounded number at a time).
    fn last(&self, mut after: u64) -> Vec<RefusalsSince> {
        let mut all = Vec::new();
        let Ok(mut client) = Client::connect(&self.socket) else {
            return all;
        };
        client.set_timeout(Some(Duration::from_secs(5)));
        // At most 64 answers: a job that ends with tens of thousands of
        // refusals untold gets the summary line for the rest.
        for i in 0..64 {
            let Ok(found) = client.call(JobRefusals {
                job: self.job.clone(),
                after,
                wait_ms: 0,
                settle: i == 0,
            }) else {
                break;
            };
            let (empty, next) = (found.refusals.is_empty(), found.next);
            all.push(found);
            if empty || next <= after {
                break;
            }
            after = next;
        }
        all
    }
}

/// Writes all of `bytes` to `fd` (one `write(2)` unless the kernel takes
/// less); false once it cannot (a closed pipe, a full disk).
fn write_all(fd: RawFd, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: writes from a valid buffer to a descriptor of ours.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                // Standard error left non-blocking by whoever made it: wait
                // until it takes more.
                Some(libc::EAGAIN) => {
                    let mut p = libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: poll on one valid pollfd.
                    if unsafe { libc::poll(&mut p, 1, -1) } < 0
                        && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)
                    {
                        return false;
                    }
                    continue;
                }
                _ => return false,
            }
        }
        bytes = &bytes[n as usize..];
    }
    true
}

/// The job's standard error, copied through with the refusal lines between
/// its lines.
pub(super) struct Relay {
    /// Read end of the job's standard error (non-blocking); `None` once
    /// every writer closed it, or when standard error is a terminal.
    job: Option<OwnedFd>,
    follower: Option<Follower>,
    teller: Teller,
    /// The job's bytes after its last newline, not passed on yet, and
    /// since when they wait.
    partial: Vec<u8>,
    partial_since: Option<Instant>,
    /// Whether what was passed on so far ends a line.
    at_line_start: bool,
    lines: VecDeque<String>,
    /// Our standard error failed: the job's output is read and dropped (the
    /// job must not block on a full pipe).
    broken: bool,
}

impl Relay {
    pub(super) fn new(job: Option<OwnedFd>, follower: Option<Follower>, job_name: &str) -> Self {
        Self {
            job,
            follower,
            teller: Teller::new(job_name),
            partial: Vec::new(),
            partial_since: None,
            at_line_start: true,
            lines: VecDeque::new(),
            broken: false,
        }
    }

    fn out(&mut self, bytes: &[u8]) {
        if !self.broken && !write_all(2, bytes) {
            self.broken = true;
        }
    }

    /// The job wrote `bytes`.
    fn job_wrote(&mut self, bytes: &[u8], now: Instant) {
        if !self.at_line_start {
            // Inside a line already passed on in part: no reason to hold.
            match bytes.iter().rposition(|b| *b == b'\n') {
                Some(i) => {
                    self.out(&bytes[..=i]);
                    self.at_line_start = true;
                    self.hold(&bytes[i + 1..], now);
                }
                None => self.out(bytes),
            }
            return;
        }
        self.partial.extend_from_slice(bytes);
        if let Some(i) = self.partial.iter().rposition(|b| *b == b'\n') {
            let rest = self.partial.split_off(i + 1);
            let whole = std::mem::replace(&mut self.partial, rest);
            self.out(&whole);
            self.partial_since = (!self.partial.is_empty()).then_some(now);
        } else if self.partial_since.is_none() {
            self.partial_since = Some(now);
        }
        if self.partial.len() >= PARTIAL_MAX {
            self.pass_partial();
        }
    }

    fn hold(&mut self, bytes: &[u8], now: Instant) {
        if !bytes.is_empty() {
            self.partial.extend_from_slice(bytes);
            self.partial_since = Some(now);
            if self.partial.len() >= PARTIAL_MAX {
                self.pass_partial();
            }
        }
    }

    /// Passes the held partial line on (refusal lines waiting go first: the
    /// output is at a line's start).
    fn pass_partial(&mut self) {
        self.tell();
        let partial = std::mem::take(&mut self.partial);
        self.partial_since = None;
        if !partial.is_empty() {
            self.out(&partial);
            self.at_line_start = false;
        }
    }

    /// Writes the refusal lines waiting, if the output is at a line's start.
    fn tell(&mut self) {
        if !self.at_line_start {
            return;
        }
        while let Some(line) = self.lines.pop_front() {
            self.out(format!("{line}\n").as_bytes());
        }
    }

    /// Reads what the job wrote, until the pipe is empty; false at its end.
    fn read_job(&mut self, now: Instant) -> bool {
        let Some(fd) = self.job.as_ref().map(|f| f.as_raw_fd()) else {
            return false;
        };
        let mut buf = [0u8; 16384];
        loop {
            // SAFETY: reads into our buffer from our own descriptor.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                self.job_wrote(&buf[..n as usize], now);
                continue;
            }
            if n == 0 {
                self.job = None;
                return false;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return true,
                _ => {
                    self.job = None;
                    return false;
                }
            }
        }
    }

    /// Tells what the poller found; returns the cursor that covers it.
    fn take_refusals(&mut self, now: Instant) -> u64 {
        let Some(f) = &self.follower else {
            return 0;
        };
        let (found, cursor) = f.take();
        for found in found {
            let lines = self.teller.add(&found, now);
            self.lines.extend(lines);
        }
        cursor
    }

    /// Copies and tells until `exited` says the job's main process is gone
    /// (`pidfd`: readable then; without one, `exited` is asked every 50
    /// ms), then copies what is left and tells the last refusals.
    pub(super) fn run(mut self, pidfd: Option<&OwnedFd>, mut exited: impl FnMut() -> bool) {
        loop {
            let now = Instant::now();
            let mut deadline: Option<Instant> = self.partial_since.map(|s| s + PARTIAL_DELAY);
            if let Some(due) = self.teller.summary_due() {
                deadline = Some(deadline.map_or(due, |d| d.min(due)));
            }
            let mut timeout_ms: i32 = match deadline {
                Some(d) => d.saturating_duration_since(now).as_millis().min(1000) as i32,
                None => 1000,
            };
            if pidfd.is_none() {
                timeout_ms = timeout_ms.min(50);
            }
            let mut fds: Vec<libc::pollfd> = Vec::with_capacity(3);
            let mut add = |fd: RawFd| {
                fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
                fds.len() - 1
            };
            let job_at = self.job.as_ref().map(|f| add(f.as_raw_fd()));
            let wake_at = self.follower.as_ref().map(|f| add(f.wake.as_raw_fd()));
            let pid_at = pidfd.map(|f| add(f.as_raw_fd()));
            // SAFETY: poll on a valid array of our descriptors.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            let now = Instant::now();
            let ready = |at: Option<usize>| at.is_some_and(|i| n > 0 && fds[i].revents != 0);
            if ready(job_at) {
                self.read_job(now);
            }
            if ready(wake_at) {
                self.take_refusals(now);
            }
            if let Some(line) = self.teller.summary_at(now, false) {
                self.lines.push_back(line);
            }
            if self
                .partial_since
                .is_some_and(|s| now.duration_since(s) >= PARTIAL_DELAY)
            {
                self.pass_partial();
            }
            self.tell();
            let gone = match pid_at {
                Some(_) => ready(pid_at),
                None => exited(),
            };
            if gone {
                break;
            }
        }
        self.finish();
    }

    /// The job's main process exited.
    fn finish(&mut self) {
        let now = Instant::now();
        self.read_job(now);
        // The poller may be between an answer and the inbox: the last call
        // asks from the cursor the take saw, so nothing it holds is lost
        // (what both carry is told once).
        let cursor = self.take_refusals(now);
        let last = self
            .follower
            .as_ref()
            .map(|f| f.last(cursor))
            .unwrap_or_default();
        for found in last {
            let lines = self.teller.add(&found, now);
            self.lines.extend(lines);
        }
        if let Some(line) = self.teller.summary_at(now, true) {
            self.lines.push_back(line);
        }
        if !self.lines.is_empty() && !self.at_line_start {
            // The job is done: its unfinished last line ends here, and the
            // refusal lines follow it.
            self.out(b"\n");
            self.at_line_start = true;
        }
        self.tell();
        let partial = std::mem::take(&mut self.partial);
        self.out(&partial);
    }
}

#[cfg(test)]
mod tests {
    use geowall::events::Refused;

    use super::*;

    fn entry(seq: u64, dst: &str, port: u16, name: Option<&str>, approvable: bool) -> RefusalEntry {
        RefusalEntry {
            seq,
            refused: Refused {
                dst: dst.parse().unwrap(),
                port,
                proto: "tcp".into(),
                tags: vec!["US".into()],
                reason: "region".into(),
                policy: "eu-only".into(),
                name: name.map(str::to_owned),
                cgroup: "/jobs/etl".into(),
                cgroup_id: 7,
                record: 0,
                option: None,
            },
            approvable,
            grant_for: approvable.then(|| "1h".to_owned()),
        }
    }

    fn found(refusals: Vec<RefusalEntry>) -> RefusalsSince {
        RefusalsSince {
            next: refusals.last().map_or(0, |r| r.seq),
            missed: 0,
            refusals,
        }
    }

    #[test]
    fn a_refusal_line_names_destination_region_policy_and_the_request() {
        let mut t = Teller::new("etl");
        let now = Instant::now();
        let lines = t.add(
            &found(vec![
                entry(1, "203.0.113.5", 443, None, true),
                entry(2, "2001:db8::5", 443, None, false),
                entry(3, "203.0.113.6", 443, Some("api.partner.test"), true),
            ]),
            now,
        );
        assert_eq!(
            lines,
            [
                "geowall: 203.0.113.5:443 (US) refused by policy eu-only — request access: \
                 geowall approvals request --to 203.0.113.5:443 --job etl --for 1h --reason '…'",
                "geowall: [2001:db8::5]:443 (US) refused by policy eu-only (it takes no approval requests)",
                "geowall: api.partner.test:443 (203.0.113.6, US) refused by policy eu-only — request \
                 access: geowall approvals request --to api.partner.test:443 --job etl --for 1h --reason '…'",
            ]
        );
    }

    #[test]
    fn a_refused_source_route_names_the_option_and_its_hop() {
        let mut t = Teller::new("etl");
        let mut hop = entry(1, "fd00:dead::1", 0, None, true);
        hop.refused.option = Some("IPV6_RTHDR".into());
        let mut whole = entry(2, "0.0.0.0", 0, None, true);
        whole.refused.option = Some("IP_OPTIONS".into());
        whole.refused.tags.clear();
        whole.refused.reason = "source_route".into();
        assert_eq!(
            t.add(&found(vec![hop, whole]), Instant::now()),
            [
                "geowall: IPV6_RTHDR via fd00:dead::1 (US) refused by policy eu-only (a grant does \
                 not open a routing hop)",
                "geowall: IP_OPTIONS source route (untagged; source_route) refused by policy \
                 eu-only (a grant does not open a routing hop)",
            ]
        );
    }

    #[test]
    fn once_per_destination_and_a_few_a_second() {
        let mut t = Teller::new("etl");
        let start = Instant::now();
        // The same destination again, and a number seen twice: nothing.
        assert_eq!(
            t.add(
                &found(vec![entry(1, "203.0.113.5", 443, None, true)]),
                start
            )
            .len(),
            1
        );
        assert!(
            t.add(
                &found(vec![entry(1, "203.0.113.5", 443, None, true)]),
                start
            )
            .is_empty()
        );
        assert!(
            t.add(
                &found(vec![entry(2, "203.0.113.5", 443, None, true)]),
                start
            )
            .is_empty()
        );
        // Another port is another destination.
        assert_eq!(
            t.add(&found(vec![entry(3, "203.0.113.5", 80, None, true)]), start)
                .len(),
            1
        );
        // 20 more destinations within the second: 3 more lines, 17 counted.
        let burst: Vec<RefusalEntry> = (0..20)
            .map(|i| entry(10 + i, &format!("203.0.113.{}", 100 + i), 443, None, true))
            .collect();
        assert_eq!(t.add(&found(burst), start).len(), 3);
        assert_eq!(
            t.summary_at(start + Duration::from_millis(500), false),
            None
        );
        assert_eq!(
            t.summary_at(start + Duration::from_secs(1), false)
                .as_deref(),
            Some("geowall: … and 17 more refused")
        );
        assert_eq!(t.summary_at(start + Duration::from_secs(5), true), None);
        // The next second has room again.
        let later = start + Duration::from_secs(2);
        assert_eq!(
            t.add(
                &found(vec![entry(40, "198.51.100.1", 443, None, true)]),
                later
            )
            .len(),
            1
        );
        // What the agent dropped is counted too.
        let dropped = RefusalsSince {
            refusals: vec![entry(50, "198.51.100.2", 443, None, true)],
            next: 50,
            missed: 4,
        };
        assert_eq!(t.add(&dropped, later).len(), 1);
        assert_eq!(
            t.summary_at(later, true).as_deref(),
            Some("geowall: … and 4 more refused")
        );
    }

    fn relay() -> Relay {
        let mut r = Relay::new(None, None, "etl");
        // Nothing is written while broken: the tests read the state.
        r.broken = true;
        r
    }

    #[test]
    fn a_refusal_line_waits_for_the_end_of_the_jobs_line() {
        let now = Instant::now();
        let mut r = relay();
        r.job_wrote(b"first line\nsecond ha", now);
        assert!(r.at_line_start, "the partial line is held");
        assert_eq!(r.partial, b"second ha");
        // Held for the delay, then passed on: now inside a line.
        r.lines.push_back("geowall: refused".into());
        r.pass_partial();
        assert!(r.lines.is_empty(), "told before the partial line went out");
        r.lines.push_back("geowall: refused again".into());
        r.tell();
        assert_eq!(r.lines.len(), 1, "waits inside the line");
        r.job_wrote(b"lf\nthird", now);
        assert!(r.at_line_start);
        assert_eq!(r.partial, b"third");
        r.tell();
        assert!(r.lines.is_empty());
        // A long partial line goes at once.
        r.job_wrote(&[b'x'; PARTIAL_MAX], now);
        assert!(!r.at_line_start);
        assert!(r.partial.is_empty());
    }
}
