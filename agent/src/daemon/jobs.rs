//! Jobs started by `geowall exec`: one cgroup each, bound to a policy, made
//! before the job's first instruction runs and removed once it is empty.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::{Path, PathBuf},
};

use serde_json::json;

use super::{
    DaemonError,
    caller::{Peer, Refusal},
    context::Context,
};
use crate::{
    control::proto::{ErrorCode, JobStarted},
    host::cgroup,
};

/// The running jobs, and the names of those that ended lately.
pub(super) struct Jobs {
    running: BTreeMap<String, Job>,
    /// Names of the jobs ended most recently (oldest first), so that the
    /// end report of a job already collected is not an error.
    ended: VecDeque<String>,
    /// The cgroup the job cgroups are made in (`[agent] jobs_cgroup`).
    root: PathBuf,
}

/// How many ended job names are remembered for late end reports.
const ENDED_JOBS_KEPT: usize = 256;

#[derive(Debug, Clone)]
pub(super) struct Job {
    pub name: String,
    pub policy: String,
    pub cgroup: PathBuf,
    pub cgroup_id: u64,
    /// The uid that started it (unknown for a job a previous agent
    /// started).
    pub owner: Option<u32>,
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect::<String>()
        .trim_start_matches('.')
        .to_owned()
}

/// The parent pid of `pid`, from /proc/PID/stat.
fn parent_of(pid: u32) -> Option<u32> {
    crate::host::proc::stat(pid)?.get(1)?.parse().ok()
}

impl Jobs {
    pub(super) fn new(root: PathBuf) -> Self {
        Self {
            running: BTreeMap::new(),
            ended: VecDeque::new(),
            root,
        }
    }

    /// Where the job cgroups are made.
    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    /// The running jobs, by name.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Job> {
        self.running.values()
    }

    /// The running job named `name`.
    pub(super) fn get(&self, name: &str) -> Option<&Job> {
        self.running.get(name)
    }

    /// The policy that governs the cgroup at `path` (relative to the
    /// hierarchy, `/a/b`): the nearest bound ancestor's.
    fn policy_of(cx: &Context, rel: &str) -> Result<Option<String>, DaemonError> {
        let mut path = cx.hierarchy().resolve(rel)?;
        loop {
            if !path.starts_with(cx.governed()) {
                return Ok(None);
            }
            if let Ok(id) = cgroup::id_of(&path)
                && let Some(slot) = cx.kernel().binding(id)?
            {
                return Ok(Some(cx.slot_name(slot)));
            }
            if !path.pop() {
                return Ok(None);
            }
        }
    }

    /// `job_start`: creates and binds the job's cgroup and moves `pid` (a
    /// not-yet-exec'd child of the caller) into it.
    pub(super) fn start(
        &mut self,
        cx: &Context,
        peer: Peer,
        policy: &str,
        job: Option<&str>,
        pid: u32,
    ) -> Result<JobStarted, Refusal> {
        let Some(slot) = cx.slot(policy) else {
            let known: Vec<&str> = cx.plan().policies.iter().map(|p| p.name.as_str()).collect();
            return Err(Refusal(
                ErrorCode::UnknownPolicy,
                format!("no policy '{policy}' (loaded: {})", known.join(", ")),
            ));
        };
        let caller = peer.pid.ok_or_else(|| {
            Refusal(
                ErrorCode::PermissionDenied,
                "the caller's pid is unknown".into(),
            )
        })?;
        if parent_of(pid) != Some(caller) {
            return Err(Refusal(
                ErrorCode::PermissionDenied,
                format!("process {pid} is not a child of the caller (pid {caller})"),
            ));
        }
        let caller_cgroup = cgroup::of_process(caller).map_err(DaemonError::from)?;
        if let Some(current) = Self::policy_of(cx, &caller_cgroup)?
            && current != policy
        {
            return Err(Refusal(
                ErrorCode::PermissionDenied,
                format!(
                    "the caller runs under policy '{current}' and cannot start a job under '{policy}'"
                ),
            ));
        }

        let base = sanitize(job.unwrap_or(&format!("{policy}-{pid}")));
        let base = if base.is_empty() {
            format!("job-{pid}")
        } else {
            base
        };
        let mut name = base.clone();
        let mut n = 1;
        while self.running.contains_key(&name) || self.root.join(&name).exists() {
            n += 1;
            name = format!("{base}-{n}");
        }
        let path = self.root.join(&name);
        cgroup::create(&path).map_err(DaemonError::from)?;
        let setup = || -> Result<u64, DaemonError> {
            let id = cgroup::id_of(&path)?;
            cx.kernel().bind(id, slot)?;
            cgroup::move_process(&path, pid)?;
            Ok(id)
        };
        let id = match setup() {
            Ok(id) => id,
            Err(e) => {
                if let Ok(id) = cgroup::id_of(&path) {
                    let _ = cx.kernel().unbind(id);
                }
                let _ = cgroup::remove(&path);
                return Err(e.into());
            }
        };
        // Audit mode blocks nothing: its jobs keep raw sockets too (the
        // kernel records them as would-deny).
        let raw_sockets = cx.plan().policy(policy).is_some_and(|p| {
            p.raw_sockets == crate::config::Action::Allow || p.mode == crate::config::Mode::Audit
        });
        let audit = cx
            .plan()
            .policy(policy)
            .is_some_and(|p| p.mode == crate::config::Mode::Audit);
        let started = JobStarted {
            job: name.clone(),
            cgroup: cx.hierarchy().display_name(&path),
            policy: policy.to_owned(),
            raw_sockets,
            audit,
        };
        self.running.insert(
            name.clone(),
            Job {
                name: name.clone(),
                policy: policy.to_owned(),
                cgroup: path,
                cgroup_id: id,
                owner: Some(peer.uid),
            },
        );
        let job = &self.running[&name];
        cx.name_job(&job.name, job.cgroup_id, &job.cgroup);
        cx.record(
            "job",
            json!({"event": "start", "job": name, "policy": policy, "cgroup": started.cgroup, "pid": pid, "by": peer.json()}),
        );
        tracing::info!(job = %name, policy, pid, "job started");
        Ok(started)
    }

    /// `job_end`: the job's main process exited; its cgroup goes once empty.
    /// The periodic collection may have ended the job first: that is fine.
    pub(super) fn end(&mut self, cx: &Context, job: &str) -> Result<(), Refusal> {
        if !self.running.contains_key(job) {
            if self.ended.iter().any(|n| n == job) {
                return Ok(());
            }
            return Err(Refusal(ErrorCode::UnknownJob, format!("no job '{job}'")));
        }
        self.collect(cx);
        Ok(())
    }

    /// Removes the cgroups (and bindings) of jobs that have no process left.
    pub(super) fn collect(&mut self, cx: &Context) {
        let done: Vec<String> = self
            .running
            .values()
            .filter(|j| !cgroup::populated(&j.cgroup).unwrap_or(true))
            .map(|j| j.name.clone())
            .collect();
        for name in done {
            let Some(job) = self.running.remove(&name) else {
                continue;
            };
            if let Err(e) = cx.kernel().unbind(job.cgroup_id) {
                tracing::error!(job = %name, error = %crate::vocab::error::Chain(&e), "cannot unbind the job's cgroup");
            }
            if let Err(e) = cgroup::remove(&job.cgroup) {
                tracing::warn!(job = %name, error = %crate::vocab::error::Chain(&e), "cannot remove the job's cgroup");
            }
            cx.names()
                .write()
                .expect("names lock")
                .job_ended(job.cgroup_id);
            // What the job resolved goes with it.
            if let Some(dns) = cx.dns() {
                dns.job_ended(job.cgroup_id);
            }
            cx.record(
                "job",
                json!({"event": "end", "job": name, "policy": job.policy}),
            );
            if self.ended.len() == ENDED_JOBS_KEPT {
                self.ended.pop_front();
            }
            self.ended.push_back(name);
        }
    }

    /// Picks up the job cgroups a previous agent left: populated ones with a
    /// binding keep running under their policy; empty ones are removed.
    pub(super) fn recover(&mut self, cx: &Context) -> Result<(), DaemonError> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Ok(());
        };
        let bindings: HashMap<u64, u32> = cx.kernel().bindings()?.into_iter().collect();
        let names = cx.kernel().policy_names()?;
        for entry in entries.flatten() {
            let path: PathBuf = entry.path();
            if !path.is_dir() {
                continue;
            }
            let Ok(id) = cgroup::id_of(&path) else {
                continue;
            };
            let policy = bindings
                .get(&id)
                .and_then(|s| names.get(*s as usize).cloned().flatten())
                .filter(|p| cx.slot(p).is_some());
            let populated = cgroup::populated(&path).unwrap_or(true);
            match (policy, populated) {
                (Some(policy), true) => {
                    let name = file_name(&path);
                    tracing::info!(job = %name, policy = %policy, "recovered a running job");
                    self.running.insert(
                        name.clone(),
                        Job {
                            name,
                            policy,
                            cgroup: path,
                            cgroup_id: id,
                            owner: None,
                        },
                    );
                }
                (_, false) => {
                    let _ = cx.kernel().unbind(id);
                    let _ = cgroup::remove(&path);
                }
                (None, true) => tracing::error!(
                    cgroup = %path.display(),
                    "a job cgroup has processes but no known policy; they are not confined"
                ),
            }
        }
        Ok(())
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_safe_path_components() {
        assert_eq!(sanitize("etl nightly/../x"), "etl_nightly_.._x");
        assert_eq!(sanitize("..hidden"), "hidden");
        assert_eq!(sanitize("ok-1.2_3"), "ok-1.2_3");
    }

    #[test]
    fn reads_the_parent_of_this_process() {
        let me = std::process::id();
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
    }
}
