//! `geowall exec --policy P -- CMD ARGS…`
//!
//! The command must be confined from its first instruction, so it is forked
//! and held before `exec` while the agent creates the job cgroup, binds it to
//! the policy and moves the child in (the agent does the move: it has the
//! rights, and it checks that the child really is ours). Only then is the
//! child released to `exec`.
//!
//! The command inherits stdin, stdout and stderr and no other descriptor
//! (`--keep-fds` keeps them all): a socket made outside the job is judged
//! under its maker's cgroup, not the job's policy. And it runs under a
//! seccomp filter it cannot remove ([`super::exec_seccomp`]): no
//! `pidfd_getfd(2)` (a socket taken from a process outside the governed
//! subtree would be judged under that process's cgroup), no socket of a
//! family no program judges (vsock, TIPC, ...), no io_uring.
//!
//! With `--wait-for-approval`, the held child's job files a proactive
//! approval request scoped to the job, and is released only once an approver
//! approves it (exit 123 when it is denied, 124 when nobody answers in time:
//! the command never ran).

use std::{
    ffi::{CString, OsString},
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::Path,
    process::ExitCode,
};

use anyhow::{Result, anyhow};

use super::refusal_lines::{self, pipe};
use geowall::{
    approvals::Stage,
    config::Config,
    control::{
        Client,
        proto::{ApprovalAsk, ApprovalsList, JobEnd, JobStart, JobStarted},
    },
    vocab::error::Chain,
};

/// `--wait-for-approval`: the request was denied (or revoked, or lapsed).
const EXIT_DENIED: u8 = 123;
/// `--wait-for-approval`: nobody answered in time.
const EXIT_TIMED_OUT: u8 = 124;
/// geowall itself failed before the command ran.
const EXIT_SETUP: u8 = 125;
const EXIT_CANNOT_EXECUTE: u8 = 126;
const EXIT_NOT_FOUND: u8 = 127;

/// What `--wait-for-approval` asks for before the job runs.
#[derive(Debug, Clone)]
pub(super) struct WaitForApproval {
    pub(super) timeout: std::time::Duration,
    pub(super) to: String,
    pub(super) port: Option<u16>,
    pub(super) for_: String,
    pub(super) reason: String,
}

/// How the command runs.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct JobOptions {
    /// Let the command inherit every descriptor, not only 0, 1 and 2.
    pub(super) keep_fds: bool,
    /// Tell the job nothing of its refused connections (and leave its
    /// standard error as it is).
    pub(super) quiet: bool,
}

/// geowall could not start the job: the error, with its causes, and the
/// exit code that says so.
fn setup_fail(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("geowall: error: {}", Chain(e));
    ExitCode::from(EXIT_SETUP)
}

/// `geowall exec`: its exit code is the command's (or one of its own,
/// above): errors are reported here, not by the caller.
pub(super) fn exec(
    config: &Path,
    policy: &str,
    job: Option<&str>,
    wait: Option<&WaitForApproval>,
    options: JobOptions,
    command: &[OsString],
) -> Result<ExitCode> {
    Ok(run_job(config, policy, job, wait, options, command))
}

fn run_job(
    config: &Path,
    policy: &str,
    job: Option<&str>,
    wait: Option<&WaitForApproval>,
    options: JobOptions,
    command: &[OsString],
) -> ExitCode {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => return setup_fail(&e),
    };
    let socket = config.socket_path();
    let mut client = match Client::connect(&socket) {
        Ok(c) => c,
        Err(e) => return setup_fail(&e),
    };
    let argv: Vec<CString> = match command
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
    {
        Ok(v) => v,
        Err(_) => {
            return setup_fail(anyhow!("the command has an argument with a NUL byte").as_ref());
        }
    };

    let prepared = if options.quiet {
        None
    } else {
        match refusal_lines::prepare() {
            Ok(p) => Some(p),
            Err(e) => {
                return setup_fail(
                    anyhow::Error::new(e)
                        .context("cannot make the pipe for the job's standard error")
                        .as_ref(),
                );
            }
        }
    };
    let redirect = prepared
        .as_ref()
        .and_then(|p| p.pipe.as_ref().map(|(_, w)| (w.as_raw_fd(), p.with_stdout)));
    let mut child = match Held::spawn(&argv, options.keep_fds, redirect) {
        Ok(c) => c,
        Err(e) => return setup_fail(anyhow::Error::new(e).context("cannot fork").as_ref()),
    };
    let started = client.call(JobStart {
        policy: policy.to_owned(),
        job: job.map(str::to_owned),
        pid: child.pid as u32,
    });
    let started: JobStarted = match started {
        Ok(s) => s,
        Err(e) => {
            child.abandon();
            return setup_fail(&e);
        }
    };
    tracing::debug!(job = %started.job, policy = %started.policy, cgroup = %started.cgroup, "job confined");
    if let Some(wait) = wait {
        let refused = match await_approval(&mut client, &started.job, wait) {
            Ok(()) => None,
            Err((code, message)) => Some((code, message)),
        };
        if let Some((code, message)) = refused {
            child.abandon();
            end_job(&socket, &started.job);
            eprintln!("geowall: {message}; the command did not run");
            return ExitCode::from(code);
        }
    }
    drop(client);

    // The job's refusals, followed from before it runs. An agent that
    // cannot (an older one) leaves the job's standard error as it is.
    let follower = match &prepared {
        Some(_) => match refusal_lines::Follower::start(socket.clone(), &started.job) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::debug!(job = %started.job, error = %Chain(&e), "refusals are not followed");
                None
            }
        },
        None => None,
    };
    let job_stderr = match (follower.is_some(), prepared) {
        (
            true,
            Some(refusal_lines::Prepared {
                pipe: Some((r, w)), ..
            }),
        ) => {
            drop(w);
            child.redirect_stderr();
            Some(r)
        }
        _ => None,
    };

    if !started.raw_sockets {
        child.drop_net_raw();
    }
    if started.audit {
        child.audit_only();
    }
    // Signals from the terminal reach the job; geowall only waits for it.
    // SAFETY: setting dispositions to SIG_IGN is always sound.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let outcome = match follower {
        Some(follower) => {
            let relay = refusal_lines::Relay::new(job_stderr, Some(follower), &started.job);
            child.release_with(|pid, pidfd| {
                relay.run(pidfd, || {
                    // Whether the child exited, leaving it to be reaped by
                    // `release_with` (WNOWAIT).
                    // SAFETY: waitid on our own child with a valid siginfo.
                    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                    unsafe {
                        libc::waitid(
                            libc::P_PID,
                            pid as libc::id_t,
                            &mut info,
                            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                        ) == 0
                            && info.si_pid() != 0
                    }
                })
            })
        }
        None => child.release(),
    };

    end_job(&socket, &started.job);

    match outcome {
        Outcome::Exited(code) => ExitCode::from(code),
        Outcome::ExecFailed(errno) => {
            let name = command[0].to_string_lossy();
            let err = std::io::Error::from_raw_os_error(errno);
            eprintln!("geowall: cannot run '{name}': {err}");
            ExitCode::from(if errno == libc::ENOENT {
                EXIT_NOT_FOUND
            } else {
                EXIT_CANNOT_EXECUTE
            })
        }
        Outcome::WaitFailed(e) => setup_fail(
            anyhow::Error::new(e)
                .context("waiting for the job")
                .as_ref(),
        ),
    }
}

/// Tells the agent the job's main process is done (it removes the cgroup
/// once empty, and would anyway on its next sweep).
fn end_job(socket: &Path, job: &str) {
    if let Ok(mut c) = Client::connect(socket)
        && let Err(e) = c.call(JobEnd {
            job: job.to_owned(),
        })
    {
        tracing::warn!(job = %job, error = %Chain(&e), "could not report the end of the job");
    }
}

/// Files the approval request for `job` and waits for the decision. The
/// error is the exit code and what to say.
fn await_approval(
    client: &mut Client,
    job: &str,
    wait: &WaitForApproval,
) -> Result<(), (u8, String)> {
    let filed = client
        .call(ApprovalAsk {
            policy: None,
            job: Some(job.to_owned()),
            to: wait.to.clone(),
            port: wait.port,
            for_: wait.for_.clone(),
            reason: wait.reason.clone(),
        })
        .map_err(|e| {
            (
                EXIT_SETUP,
                format!("cannot file the approval request: {}", Chain(&e)),
            )
        })?;
    let id = filed.id;
    eprintln!(
        "geowall: job {job} waits up to {} for approval of request {id} \
         (`geowall approvals approve {id}`)",
        geowall::vocab::units::Span(wait.timeout)
    );
    let deadline = std::time::Instant::now() + wait.timeout;
    loop {
        let list = client
            .call(ApprovalsList { pending: false })
            .map_err(|e| (EXIT_SETUP, format!("waiting for approval: {}", Chain(&e))))?;
        match list.into_iter().find(|r| r.id == id) {
            Some(r) if r.state == Stage::Approved => return Ok(()),
            Some(r) if r.state != Stage::Pending => {
                let by = r.decided_by.as_deref().unwrap_or("nobody");
                let why = r
                    .decision_reason
                    .map(|w| format!(": {w}"))
                    .unwrap_or_default();
                return Err((
                    EXIT_DENIED,
                    format!(
                        "approval request {id} was {} (by {by}){why}",
                        r.state.as_str()
                    ),
                ));
            }
            None => {
                return Err((EXIT_DENIED, format!("approval request {id} is gone")));
            }
            Some(_) => {}
        }
        if std::time::Instant::now() >= deadline {
            return Err((
                EXIT_TIMED_OUT,
                format!(
                    "nobody approved request {id} within {}",
                    geowall::vocab::units::Span(wait.timeout)
                ),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Closes every descriptor from 3 up but `keep` (the exec-error pipe,
/// close-on-exec). Async-signal-safe.
fn close_inherited(keep: libc::c_int) {
    let keep = keep as libc::c_uint;
    // SAFETY: close_range(2) and close(2) on our own descriptor table.
    unsafe {
        let ranges = [(3, keep.saturating_sub(1)), (keep + 1, libc::c_uint::MAX)];
        for (first, last) in ranges {
            if first > last {
                continue;
            }
            if libc::syscall(libc::SYS_close_range, first, last, 0) != 0 {
                // Before Linux 5.9: one by one, as far as the limit goes.
                let max = libc::sysconf(libc::_SC_OPEN_MAX).clamp(1024, 65536) as libc::c_uint;
                for fd in first..=last.min(max) {
                    libc::close(fd as libc::c_int);
                }
            }
        }
    }
}

const RELEASE: u8 = 1;
const RELEASE_WITHOUT_NET_RAW: u8 = 2;
/// Or'ed into the release byte: take the pipe as standard error (and as
/// standard output, when it was set up so).
const REDIRECT_STDERR: u8 = 0x10;
/// Or'ed into the release byte: the policy only audits (the seccomp filter
/// logs instead of refusing).
const AUDIT_ONLY: u8 = 0x20;
/// The release byte's low bits: [`RELEASE`] or [`RELEASE_WITHOUT_NET_RAW`].
const RELEASE_MASK: u8 = 0x0f;
const CAP_NET_RAW: u32 = 13;

/// Drops CAP_NET_RAW from the calling process for good: from the bounding
/// set (when permitted: root), the ambient set, and the effective,
/// permitted and inheritable sets. Without it no raw or packet socket can be
/// opened, whatever the command executes. Async-signal-safe (raw syscalls
/// only); false if the capability is still in the effective set.
fn drop_cap_net_raw() -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    // SAFETY: prctl and capget/capset with valid, properly sized buffers.
    unsafe {
        libc::prctl(libc::PR_CAPBSET_DROP, CAP_NET_RAW as libc::c_ulong, 0, 0, 0);
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_LOWER as libc::c_ulong,
            CAP_NET_RAW as libc::c_ulong,
            0,
            0,
        );
        let mut header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let mut data = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) != 0 {
            return false;
        }
        let bit = !(1u32 << CAP_NET_RAW);
        data[0].effective &= bit;
        data[0].permitted &= bit;
        data[0].inheritable &= bit;
        if libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) != 0 {
            return false;
        }
    }
    true
}

/// A forked child blocked before `exec`.
struct Held {
    pid: libc::pid_t,
    /// Write end: a byte releases the child (see [`Release`]); closing it
    /// makes the child exit without running anything.
    go: libc::c_int,
    /// Whether to drop CAP_NET_RAW before `exec`.
    drop_net_raw: bool,
    /// Whether the policy only audits: the seccomp filter logs what it
    /// would refuse.
    audit_only: bool,
    /// Whether to give the job the relay's pipe as standard error.
    redirect_stderr: bool,
    /// Read end: the child's errno if `exec` failed; EOF once it succeeded.
    exec_err: libc::c_int,
}

enum Outcome {
    Exited(u8),
    ExecFailed(i32),
    WaitFailed(std::io::Error),
}

impl Held {
    /// Forks the child, held. `redirect`: the write end of the pipe it
    /// may take as standard error, and whether as standard output too.
    fn spawn(
        argv: &[CString],
        keep_fds: bool,
        redirect: Option<(libc::c_int, bool)>,
    ) -> std::io::Result<Held> {
        let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        let filters = super::exec_seccomp::Filters::new();
        let [go_r, go_w] = pipe()?;
        let [err_r, err_w] = pipe()?;
        // SAFETY: the CLI is single-threaded here; the child only calls
        // async-signal-safe functions (read, write, execvp, _exit) on memory
        // prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            unsafe {
                libc::close(go_w);
                libc::close(err_r);
                let mut b = 0u8;
                let n = libc::read(go_r, (&raw mut b).cast(), 1);
                if n != 1 {
                    libc::_exit(i32::from(EXIT_SETUP));
                }
                if b & REDIRECT_STDERR != 0
                    && let Some((w, with_stdout)) = redirect
                    && (libc::dup2(w, 2) != 2 || (with_stdout && libc::dup2(w, 1) != 1))
                {
                    libc::_exit(i32::from(EXIT_SETUP));
                }
                if b & RELEASE_MASK == RELEASE_WITHOUT_NET_RAW && !drop_cap_net_raw() {
                    libc::_exit(i32::from(EXIT_SETUP));
                }
                // Rust ignores SIGPIPE in geowall; the command gets the
                // default back, as from a shell.
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                if !keep_fds {
                    close_inherited(err_w);
                }
                if !filters.install(b & AUDIT_ONLY != 0) {
                    libc::_exit(i32::from(EXIT_SETUP));
                }
                libc::execvp(ptrs[0], ptrs.as_ptr());
                let errno = *libc::__errno_location();
                libc::write(err_w, (&raw const errno).cast(), 4);
                libc::_exit(i32::from(EXIT_NOT_FOUND));
            }
        }
        // SAFETY: closing the child's ends in the parent.
        unsafe {
            libc::close(go_r);
            libc::close(err_w);
        }
        Ok(Held {
            pid,
            go: go_w,
            drop_net_raw: false,
            audit_only: false,
            redirect_stderr: false,
            exec_err: err_r,
        })
    }

    /// Have the child drop CAP_NET_RAW before it runs the command.
    fn drop_net_raw(&mut self) {
        self.drop_net_raw = true;
    }

    /// The policy only audits: the child's seccomp filter logs instead of
    /// refusing.
    fn audit_only(&mut self) {
        self.audit_only = true;
    }

    /// Have the child take the pipe given to [`Held::spawn`] as its
    /// standard error.
    fn redirect_stderr(&mut self) {
        self.redirect_stderr = true;
    }

    /// The job could not be set up: the child exits without running.
    fn abandon(self) {
        // SAFETY: our own descriptors and child.
        unsafe {
            libc::close(self.go);
            libc::close(self.exec_err);
            let mut status = 0;
            libc::waitpid(self.pid, &mut status, 0);
        }
    }

    /// Lets the child `exec` and waits for it.
    fn release(self) -> Outcome {
        self.release_with(|_, _| {})
    }

    /// Lets the child `exec`, runs `meanwhile` (with the child's pid and a
    /// pidfd, readable once it exited, where the kernel has them) when it
    /// did, then waits for it.
    fn release_with(
        self,
        meanwhile: impl FnOnce(libc::pid_t, Option<&std::os::fd::OwnedFd>),
    ) -> Outcome {
        // SAFETY: our own descriptors and child; buffers are valid.
        unsafe {
            let mut go = if self.drop_net_raw {
                RELEASE_WITHOUT_NET_RAW
            } else {
                RELEASE
            };
            if self.redirect_stderr {
                go |= REDIRECT_STDERR;
            }
            if self.audit_only {
                go |= AUDIT_ONLY;
            }
            libc::write(self.go, (&raw const go).cast(), 1);
            libc::close(self.go);
            let mut errno = 0i32;
            let n = libc::read(self.exec_err, (&raw mut errno).cast(), 4);
            libc::close(self.exec_err);
            if n != 4 {
                let pidfd = libc::syscall(libc::SYS_pidfd_open, self.pid, 0);
                let pidfd = (pidfd >= 0).then(|| {
                    <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(
                        pidfd as libc::c_int,
                    )
                });
                meanwhile(self.pid, pidfd.as_ref());
            }
            let mut status = 0;
            loop {
                let r = libc::waitpid(self.pid, &mut status, 0);
                if r == self.pid {
                    break;
                }
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Outcome::WaitFailed(e);
                }
            }
            if n == 4 {
                return Outcome::ExecFailed(errno);
            }
            if libc::WIFEXITED(status) {
                Outcome::Exited(libc::WEXITSTATUS(status) as u8)
            } else if libc::WIFSIGNALED(status) {
                Outcome::Exited(128u8.wrapping_add(libc::WTERMSIG(status) as u8))
            } else {
                Outcome::Exited(1)
            }
        }
    }
}
