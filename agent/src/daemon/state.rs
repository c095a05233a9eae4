//! The agent's state: the config and plan in force, the kernel, bindings
//! and jobs. Every change goes through here, under one lock.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

use aya::maps::{MapData, RingBuf};
use geowall_common::{MAX_POLICIES, counter};
use serde_json::json;
use tokio::sync::watch;

use super::{
    DaemonError,
    approvals::{Approvals, Decide, Denial},
    audit_gate::AuditGate,
    caller::{Peer, Refusal},
    context::Context,
    dns::Dns,
    fleet::Here,
    grants::GrantBook,
    jobs::Jobs,
    names::{Installed, NameTable},
    refusals::{Board, Followed},
    stop::Stop,
};
use crate::{
    approvals::ApprovalView,
    audit::{AuditLog, MapSource, Rotation},
    config::{AgentConfig, Config, OnMapError},
    control::proto::{
        AgentStatus, ApprovalAsk, AuditStatus, JobStarted, JobStatus, PolicyStatus, SourceStatus,
        Switched,
    },
    host::cgroup::{self, Hierarchy},
    host::stamp::{Stamp, stamp},
    kernel::{Kernel, OpenOptions},
    plan::{self, Plan},
    regions::sources::{Kind, Spec},
    tables::layout,
};

/// What map questions need, taken under the lock and answered outside it.
pub(super) struct MapSnapshot {
    pub map: Arc<crate::regions::CompiledMap>,
    pub specs: Vec<crate::regions::sources::Spec>,
    pub sources: Vec<crate::regions::sources::SourceInfo>,
    pub max_source_bytes: u64,
    pub compile_time: std::time::Duration,
    pub install_time: std::time::Duration,
    /// Entries of the IPv4 and IPv6 region tries in force.
    pub kernel_entries: (usize, usize),
}

pub(super) struct State {
    config_path: PathBuf,
    /// `[agent]` as the agent started with it: most of it applies only at
    /// start.
    started_with: AgentConfig,
    /// `[dns]` as the agent started with it (`enabled`, `listen`, `port`
    /// and `max_learned` apply at start only).
    started_dns: crate::config::DnsConfig,
    /// Versions of the source files behind the tables in force (or behind
    /// the last refused reload).
    stamps: Vec<(PathBuf, Stamp)>,
    audit_only: bool,
    max_source_bytes: u64,
    install_time: std::time::Duration,
    /// What went wrong after the last reload's table switch (the switch
    /// stands): told to whoever asked for the reload.
    after_switch: Vec<String>,
    kernel_entries: (usize, usize),
    /// The plan and kernel in force, and what the jobs and approvals share.
    cx: Context,
    /// `geowall exec` jobs.
    jobs: Jobs,
    /// Requests and grants.
    approvals: Approvals,
    /// Bindings from the config (cgroups, units, the default policy):
    /// cgroup id → path and what bound it.
    statics: BTreeMap<u64, StaticBinding>,
    /// The bindings last written to the kernel: cgroup id → slot.
    bound: BTreeMap<u64, u32>,
    stopper: Option<watch::Sender<Stop>>,
    /// The refusals `geowall exec` tells its jobs (the event reader posts).
    refusals: Arc<Board>,
    /// `[audit] on_write_failure`, kept in the programs' switch.
    audit_gate: Arc<AuditGate>,
    /// `[agent] audit_log`, resolved.
    log_path: PathBuf,
    /// The fleet (`[fleet]`; `None`: the host runs alone).
    fleet: Option<Here>,
    /// Policy name → SHA-256 of the text it is written in.
    policy_hashes: BTreeMap<String, String>,
}

impl State {
    /// Builds the plan, opens the kernel side, installs the tables, binds,
    /// attaches. Returns the state and the flow-event ring buffer.
    #[expect(clippy::too_many_arguments, reason = "what the agent starts from")]
    pub(super) fn start(
        config_path: PathBuf,
        audit_only: bool,
        config: Config,
        hierarchy: Hierarchy,
        log: Arc<Mutex<AuditLog>>,
        names: Arc<RwLock<NameTable>>,
        early_dns: Option<(Arc<Dns>, Arc<GrantBook>)>,
        fleet: Option<Here>,
    ) -> Result<(State, RingBuf<MapData>), DaemonError> {
        let mut config = config;
        add_fleet(&mut config, fleet.as_ref())?;
        let stamps = source_stamps(&plan::map_specs(&config)?);
        let (plan, map_error) = match plan::build(&config, &hierarchy) {
            Ok(plan) => (plan, None),
            Err(plan::PlanError::Map(e)) => {
                let mode = config.file.agent.on_map_error;
                let error = crate::vocab::error::chain(&e);
                tracing::error!(%error, on_map_error = ?mode, "a map source cannot be read");
                let plan = plan::build_without_map(&config, &hierarchy, mode)?;
                (plan, Some((mode, error)))
            }
            Err(e) => return Err(e.into()),
        };
        check_audit_only(audit_only, &plan)?;
        let jobs_root = hierarchy.resolve_under(&plan.governed, &config.file.agent.jobs_cgroup)?;
        let ring_bytes = config.file.agent.ring_buffer_kib.saturating_mul(1024);
        let mut kernel = Kernel::open(&OpenOptions {
            bpffs: config.bpffs_path(),
            governed: plan.governed.clone(),
            governed_level: plan.governed_level,
            ring_bytes,
            // Above what the agent keeps: its own eviction chooses, never
            // the kernel's.
            learned_entries: config
                .file
                .dns
                .max_learned
                .saturating_add(config.file.dns.max_learned / 4),
        })?;
        kernel.set_nat64(&config.nat64_prefixes()?)?;
        // The forwarder may already serve, from the pins (see run).
        let (dns, grants) = match early_dns {
            Some((dns, grants)) => (Some(dns), grants),
            None => {
                let grants = Arc::new(GrantBook::new(kernel.grant_writer()));
                let dns = Self::new_dns(&config, &kernel, &log, &names, &grants)?;
                (dns, grants)
            }
        };
        let events = kernel.take_events()?;
        let approvals = Approvals::load(&config).map_err(|source| DaemonError::ApprovalsState {
            path: config.file.approvals.state_dir.clone(),
            source,
        })?;
        let installing = std::time::Instant::now();
        let layout = layout::layout(&plan, &kernel.region_names()?, &kernel.policy_names()?)?;
        let epoch = match &map_error {
            Some((OnMapError::KeepLast, error)) => {
                let kept = kernel.epoch();
                if kept == 0 {
                    return Err(DaemonError::Refused(format!(
                        "{error}; [agent] on_map_error = \"keep-last\", but no tables are pinned \
                         to keep: fix the source, or choose on_map_error = \"deny-all\""
                    )));
                }
                tracing::warn!(
                    epoch = kept,
                    "the pinned tables stay in force until the source loads"
                );
                kept
            }
            _ => {
                let allow = names_allow(dns.as_deref(), &plan, &layout.slots);
                kernel.install(&layout, &approvals.region_grant_sets(&layout.slots), &allow)?
            }
        };
        let install_time = installing.elapsed();
        let audit_gate = Arc::new(AuditGate::new(
            kernel.audit_switch(),
            config.file.audit.on_write_failure,
        ));
        {
            let gate = Arc::clone(&audit_gate);
            log.lock()
                .expect("log lock")
                .set_health_hook(Box::new(move |ok| gate.set_writable(ok)));
        }
        let mut state = State {
            config_path,
            started_with: config.file.agent.clone(),
            started_dns: config.file.dns.clone(),
            stamps,
            audit_only,
            max_source_bytes: config.file.agent.max_source_bytes,
            install_time,
            after_switch: Vec::new(),
            kernel_entries: (layout.tables.region4.len(), layout.tables.region6.len()),
            cx: Context {
                hierarchy,
                plan,
                kernel,
                slots: layout.slots,
                log,
                names,
                dns,
                grants,
            },
            jobs: Jobs::new(jobs_root),
            approvals,
            statics: BTreeMap::new(),
            bound: BTreeMap::new(),
            stopper: None,
            refusals: Arc::new(Board::default()),
            audit_gate,
            log_path: config.audit_log_path(),
            fleet,
            policy_hashes: policy_hashes(&config),
        };
        if let Some((mode, error)) = &map_error {
            state.cx.record(
                "agent",
                json!({"event": "map_error", "on_map_error": mode, "error": error,
                "tables": match mode {
                    OnMapError::KeepLast => "the pinned tables, kept",
                    OnMapError::DenyAll => "no map: every governed non-local destination denied",
                    OnMapError::AllowAll => "no map: every governed destination allowed",
                }}),
            );
        }
        state.jobs.recover(&state.cx)?;
        let bindings = state.wanted_bindings(state.cx.plan(), state.cx.slots())?;
        state.apply_bindings(bindings)?;
        state.refresh_names()?;
        state.approvals.restore(&state.cx);
        state.publish(epoch, &config);
        state.publish_dns(epoch, &config);
        let inbound = state.cx.plan().judges_inbound();
        let report = state.cx.kernel.attach(inbound)?;
        match state.cx.kernel().retire_other_abis() {
            Ok(0) => {}
            Ok(n) => tracing::info!(pins = n, "removed the programs and tables of an older ABI"),
            Err(e) => tracing::warn!(error = %e, "could not remove an older ABI's pins"),
        }
        tracing::info!(
            governed = %state.cx.plan().governed.display(),
            policies = state.cx.plan().policies.len(),
            ipv4_ranges = state.cx.plan().map.v4.len(),
            ipv6_ranges = state.cx.plan().map.v6.len(),
            ipv4_trie_entries = state.kernel_entries.0,
            ipv6_trie_entries = state.kernel_entries.1,
            attached = report.attached,
            adopted = report.adopted,
            epoch,
            "tables installed, programs attached"
        );
        state.cx.record(
            "agent",
            json!({
                "event": "start",
                "version": geowall_common::VERSION,
                "pid": std::process::id(),
                "governed": state.cx.hierarchy().display_name(&state.cx.plan().governed),
                "attached": report.attached,
                "adopted": report.adopted,
            }),
        );
        state.record_config("start", epoch, None, &[], &[]);
        crate::host::proc::trim_heap();
        Ok((state, events))
    }

    pub(super) fn set_stopper(&mut self, tx: watch::Sender<Stop>) {
        self.stopper = Some(tx);
    }

    /// Asks the agent to stop (a `shutdown` request from `peer`).
    pub(super) fn request_stop(&self, peer: Peer, detach: bool) {
        self.cx.record(
            "agent",
            json!({"event": "shutdown_requested", "detach": detach, "by": peer.json()}),
        );
        if let Some(tx) = &self.stopper {
            let _ = tx.send(Stop::Requested { detach });
        }
    }

    /// `job_start`: a cgroup for a `geowall exec` job, bound to `policy`,
    /// with `pid` (a not-yet-exec'd child of the caller) moved into it.
    pub(super) fn job_start(
        &mut self,
        peer: Peer,
        policy: &str,
        job: Option<&str>,
        pid: u32,
    ) -> Result<JobStarted, Refusal> {
        self.jobs.start(&self.cx, peer, policy, job, pid)
    }

    /// `job_end`: the job's main process exited.
    pub(super) fn job_end(&mut self, job: &str) -> Result<(), Refusal> {
        self.jobs.end(&self.cx, job)
    }

    /// The refusals board (the event reader posts to it).
    pub(super) fn refusals(&self) -> Arc<Board> {
        Arc::clone(&self.refusals)
    }

    /// `job_refusals`: job `job`, if `peer` may follow its refusals (root,
    /// or the uid that started it); a job that ended is still found while
    /// its refusals are kept.
    pub(super) fn follow_refusals(&self, peer: Peer, job: &str) -> Result<Followed, Refusal> {
        let target = match self.jobs.get(job) {
            Some(j) => Followed {
                job: j.name.clone(),
                cgroup: self.cx.hierarchy().display_name(&j.cgroup),
                cgroup_id: j.cgroup_id,
                owner: j.owner,
            },
            None => self.refusals.followed(job).ok_or_else(|| {
                Refusal(
                    crate::control::proto::ErrorCode::UnknownJob,
                    format!("no job '{job}'"),
                )
            })?,
        };
        if peer.uid != 0 && target.owner != Some(peer.uid) {
            return Err(Refusal(
                crate::control::proto::ErrorCode::PermissionDenied,
                format!(
                    "job '{job}' was started by another user: only they and root follow its refusals"
                ),
            ));
        }
        self.refusals.follow(target.clone());
        Ok(target)
    }

    /// How long a grant policy `policy` gives at most, if it takes
    /// approval requests.
    pub(super) fn approvable(&self, policy: &str) -> Option<std::time::Duration> {
        self.cx
            .plan()
            .policy(policy)
            .filter(|p| p.approvable)
            .map(|p| p.max_grant)
    }

    /// Removes the cgroups (and bindings) of jobs that have no process left.
    pub(super) fn collect_jobs(&mut self) {
        self.jobs.collect(&self.cx);
    }

    /// The forwarder's state over the kernel's maps (`None`: `[dns]` off,
    /// and redirection turned off in the kernel).
    fn new_dns(
        config: &Config,
        kernel: &Kernel,
        log: &Arc<Mutex<AuditLog>>,
        names: &Arc<RwLock<NameTable>>,
        grants: &Arc<GrantBook>,
    ) -> Result<Option<Arc<Dns>>, DaemonError> {
        Ok(if config.file.dns.enabled {
            let listen = (
                config
                    .file
                    .dns
                    .listen_addr()
                    .map_err(|e| DaemonError::Refused(e.message))?,
                config
                    .file
                    .dns
                    .first_port()
                    .map_err(|e| DaemonError::Refused(e.message))?,
            );
            Some(Dns::new(
                kernel.dns_maps(),
                &config.file.dns,
                Arc::clone(log),
                Arc::clone(names),
                listen,
                Arc::clone(grants),
            ))
        } else {
            // Off: queries go where they were sent, judged as any
            // destination (the pins may say otherwise from the last run).
            kernel.set_dns(None);
            None
        })
    }

    /// Starts the approvals webhook sender (on the agent's runtime).
    pub(super) fn start_notifier(&mut self) {
        self.approvals.start_notifier(self.cx.audit_log());
    }

    /// `approval_request`: a proactive request.
    pub(super) fn approval_request(
        &mut self,
        peer: Peer,
        ask: ApprovalAsk,
    ) -> Result<ApprovalView, Refusal> {
        self.approvals.request(&self.cx, &self.jobs, peer, ask)
    }

    /// `approvals_list`: every request for root and approvers, their own
    /// for anyone else.
    pub(super) fn approvals_list(&self, peer: Peer, pending: bool) -> Vec<ApprovalView> {
        self.approvals.list(peer, pending)
    }

    /// `approval_approve`, `approval_deny`, `approval_revoke`.
    pub(super) fn approval_decide(
        &mut self,
        peer: Peer,
        decision: Decide,
    ) -> Result<ApprovalView, Refusal> {
        self.approvals.decide(&self.cx, peer, decision)
    }

    /// A denied flow, from the event reader: it opens or joins a request
    /// when its policy is approvable.
    pub(super) fn denied(&mut self, denial: Denial) {
        self.approvals.denied(&self.cx, &self.jobs, denial);
    }

    /// Every 2 s: ends the requests and grants that ran out.
    pub(super) fn expire_approvals(&mut self) {
        self.approvals.expire(&self.cx);
    }

    /// Records the tables now in force; `problems` are what went wrong after
    /// the switch (it stands; they are logged as errors too).
    fn record_config(
        &self,
        why: &str,
        epoch: u64,
        by: Option<serde_json::Value>,
        problems: &[String],
        needs_restart: &[&str],
    ) {
        let sources: Vec<_> = self
            .cx.plan()
            .sources
            .iter()
            .map(|s| json!({"source": s.spec.label(), "sha256": s.sha256, "about": s.about, "networks": s.networks}))
            .collect();
        let policies: Vec<_> = self
            .cx.plan()
            .policies
            .iter()
            .map(|p| json!({"name": p.name, "mode": p.mode, "allow": p.allow_written, "slot": self.cx.slots().get(&p.name)}))
            .collect();
        let mut detail = json!({
            "event": why,
            "epoch": epoch,
            "config": self.config_path,
            "sources": sources,
            "policies": policies,
            "ipv4_ranges": self.cx.plan().map.v4.len(),
            "ipv6_ranges": self.cx.plan().map.v6.len(),
            "ipv4_trie_entries": self.kernel_entries.0,
            "ipv6_trie_entries": self.kernel_entries.1,
        });
        if let Some(by) = by {
            detail["by"] = by;
        }
        if !problems.is_empty() {
            detail["errors"] = json!(problems);
        }
        if !needs_restart.is_empty() {
            detail["needs_restart"] = json!(needs_restart);
        }
        self.cx.record("config", detail);
    }

    /// The versions of the source files the tables in force were read
    /// from (or a refused reload last tried), as seen before reading them.
    pub(super) fn source_stamps(&self) -> &[(PathBuf, Stamp)] {
        &self.stamps
    }

    pub(super) fn set_source_stamps(&mut self, stamps: Vec<(PathBuf, Stamp)>) {
        self.stamps = stamps;
    }

    /// Re-reads the config and switches tables. An error before the switch
    /// changes nothing; what fails after it (the switch stands) is logged and
    /// recorded with the new tables. `by` names who asked (for the log).
    pub(super) fn reload(
        &mut self,
        why: &str,
        by: Option<serde_json::Value>,
    ) -> Result<u64, DaemonError> {
        let mut config = Config::load(&self.config_path)?;
        add_fleet(&mut config, self.fleet.as_ref())?;
        // Stamped before reading: a file rewritten during the load is seen
        // as changed and loaded again.
        let stamps = source_stamps(&plan::map_specs(&config)?);
        let plan = plan::build(&config, self.cx.hierarchy())?;
        check_audit_only(self.audit_only, &plan)?;
        if plan.governed != self.cx.plan().governed {
            return Err(DaemonError::Refused(format!(
                "[agent] cgroup changed from {} to {}: restart the agent to govern another subtree",
                self.cx.plan().governed.display(),
                plan.governed.display()
            )));
        }
        let orphaned: Vec<String> = self
            .jobs
            .iter()
            .filter(|j| plan.policy(&j.policy).is_none())
            .map(|j| format!("{} ({})", j.name, j.policy))
            .collect();
        if !orphaned.is_empty() {
            return Err(DaemonError::Refused(format!(
                "the new config removes policies that running jobs use: {}",
                orphaned.join(", ")
            )));
        }
        let mut needs_restart = restart_only_changes(&self.started_with, &config.file.agent);
        needs_restart.extend(dns_restart_changes(&self.started_dns, &config.file.dns));
        for key in &needs_restart {
            tracing::warn!("[agent] {key} changed: it takes effect when the agent restarts");
        }
        let installing = std::time::Instant::now();
        let layout = layout::layout(
            &plan,
            &self.cx.kernel().region_names()?,
            &self.cx.kernel().policy_names()?,
        )?;
        let bindings = self.wanted_bindings(&plan, &layout.slots)?;
        let region_grants = self.approvals.region_grant_sets(&layout.slots);
        let allow = names_allow(self.cx.dns().map(Arc::as_ref), &plan, &layout.slots);
        let epoch = self.cx.kernel.install(&layout, &region_grants, &allow)?;

        // The new tables are in force: from here on nothing is refused.
        self.install_time = installing.elapsed();
        self.kernel_entries = (layout.tables.region4.len(), layout.tables.region6.len());
        self.max_source_bytes = config.file.agent.max_source_bytes;
        tracing::info!(
            epoch,
            ipv4_trie_entries = layout.tables.region4.len(),
            ipv6_trie_entries = layout.tables.region6.len(),
            compile_ms = plan.compile_time.as_millis() as u64,
            install_ms = self.install_time.as_millis() as u64,
            "tables switched"
        );
        self.cx.plan = plan;
        self.cx.slots = layout.slots;
        self.stamps = stamps;
        self.policy_hashes = policy_hashes(&config);
        let problems: Vec<String> = [
            self.apply_bindings(bindings),
            self.free_unused_slots(),
            self.refresh_names(),
            self.set_inbound(),
            self.write_nat64(&config),
        ]
        .into_iter()
        .filter_map(Result::err)
        .map(|e| {
            let e = crate::vocab::error::chain(&e);
            tracing::error!(epoch, error = %e, "after the table switch");
            e
        })
        .collect();
        self.publish(epoch, &config);
        self.publish_dns(epoch, &config);
        self.record_config(why, epoch, by, &problems, &needs_restart);
        self.after_switch = problems;
        self.approvals.reconfigure(&self.cx, &config);
        crate::host::proc::trim_heap();
        Ok(epoch)
    }

    /// Tells the event reader, the log and the metrics what is now in
    /// force: the map and its sources, the policies that log allowed flows
    /// as `first`, `[audit]`.
    fn publish(&self, epoch: u64, config: &Config) {
        let sources = self
            .cx
            .plan()
            .sources
            .iter()
            .map(|s| MapSource {
                source: s.spec.label(),
                sha256: s.sha256.clone(),
                about: s.about.clone(),
            })
            .collect();
        let mut names = self.cx.names().write().expect("names lock");
        names.map_installed(epoch, Arc::clone(&self.cx.plan().map), sources);
        names.log_first = self
            .cx
            .plan()
            .policies
            .iter()
            .filter(|p| p.log_allowed == crate::config::LogAllowed::First)
            .map(|p| p.name.clone())
            .collect();
        if *names.audit != config.file.audit {
            names.audit = Arc::new(config.file.audit.clone());
        }
        names.learned = self.cx.dns().map(|d| d.learned());
        names.nat64 = config.nat64_prefixes().unwrap_or_default();
        names.installed = Some(Installed {
            epoch,
            at: std::time::SystemTime::now(),
            load_time: self.cx.plan().compile_time + self.install_time,
            ranges: (self.cx.plan().map.v4.len(), self.cx.plan().map.v6.len()),
            trie_entries: self.kernel_entries,
        });
        drop(names);
        self.cx
            .log()
            .lock()
            .expect("log lock")
            .set_rotation(Rotation::from(&config.file.audit));
        self.audit_gate.set_mode(config.file.audit.on_write_failure);
    }

    /// Tells the DNS forwarder what the tables of `epoch` say: each slot's
    /// names policy, the TTL bounds and timeout of `[dns]`.
    fn publish_dns(&self, epoch: u64, config: &Config) {
        let Some(dns) = self.cx.dns() else {
            return;
        };
        let slots = self
            .cx
            .plan()
            .policies
            .iter()
            .filter_map(|p| {
                self.cx.slot(&p.name).map(|s| {
                    (
                        s,
                        Arc::new(super::dns::SlotPolicy {
                            name: p.name.clone(),
                            names: p.names.clone(),
                        }),
                    )
                })
            })
            .collect();
        let view = super::dns::View {
            generation: (epoch & 1) as u8,
            slots,
            lifetimes: super::dns::lifetimes(&config.file.dns),
            timeout: config.file.dns.timeout.0,
        };
        dns.set_view(view, &policies_by_slot(self.cx.plan(), self.cx.slots()));
    }

    /// Turns DNS redirection on once the forwarder listens.
    pub(super) fn enable_dns(&self) {
        if let Some(dns) = self.cx.dns() {
            self.cx.kernel().set_dns(Some(dns.listen));
        }
    }

    /// The forwarder's state, for its tasks.
    pub(super) fn dns(&self) -> Option<Arc<Dns>> {
        self.cx.dns().cloned()
    }

    /// The kernel bindings `plan` wants: its static cgroups (which must
    /// exist), the cgroups of matching systemd units, the governed cgroup
    /// for the default policy, and the running jobs, each to its policy's
    /// slot. A cgroup named by a policy's `cgroups` wins over a unit match.
    fn wanted_bindings(
        &self,
        plan: &Plan,
        slots: &BTreeMap<String, u32>,
    ) -> Result<Bindings, DaemonError> {
        let mut wanted = Bindings::default();
        let add = |wanted: &mut Bindings,
                   id: u64,
                   slot: u32,
                   path: &Path,
                   policy: &str,
                   by: &'static str| {
            wanted.slots.insert(id, slot);
            wanted.statics.insert(
                id,
                StaticBinding {
                    path: path.to_path_buf(),
                    policy: policy.to_owned(),
                    by,
                },
            );
        };
        if let Some(name) = &plan.default_policy {
            add(
                &mut wanted,
                cgroup::id_of(&plan.governed)?,
                slots[name],
                &plan.governed,
                name,
                "default",
            );
        }
        for p in &plan.policies {
            for path in &p.cgroups {
                let id = cgroup::id_of(path)?;
                add(&mut wanted, id, slots[&p.name], path, &p.name, "cgroup");
            }
        }
        let (patterns, owners): (Vec<String>, Vec<&str>) = plan
            .policies
            .iter()
            .flat_map(|p| p.units.iter().map(move |u| (u.clone(), p.name.as_str())))
            .unzip();
        if !patterns.is_empty() {
            for (path, i) in crate::host::units::matching_cgroups(&plan.governed, &patterns) {
                // A unit may stop between the scan and here: skip it.
                let Ok(id) = cgroup::id_of(&path) else {
                    continue;
                };
                if wanted.slots.contains_key(&id) {
                    continue;
                }
                add(&mut wanted, id, slots[owners[i]], &path, owners[i], "unit");
            }
        }
        for job in self.jobs.iter() {
            if let Some(&slot) = slots.get(&job.policy) {
                wanted.slots.insert(job.cgroup_id, slot);
            }
        }
        Ok(wanted)
    }

    /// Makes the kernel's bindings exactly `wanted`.
    fn apply_bindings(&mut self, wanted: Bindings) -> Result<(), DaemonError> {
        let added: Vec<(u64, String)> = wanted
            .statics
            .iter()
            .filter(|(id, _)| !self.statics.contains_key(id))
            .map(|(id, b)| (*id, self.cx.hierarchy().display_name(&b.path)))
            .collect();
        self.statics = wanted.statics;
        for (id, slot) in &wanted.slots {
            if self.bound.get(id) != Some(slot) {
                self.cx.kernel().bind(*id, *slot)?;
            }
        }
        for (id, _) in self.cx.kernel().bindings()? {
            if !wanted.slots.contains_key(&id) {
                self.cx.kernel().unbind(id)?;
            }
        }
        self.bound = wanted.slots;
        if !added.is_empty() {
            let mut names = self.cx.names().write().expect("names lock");
            for (id, name) in added {
                names.cgroups.insert(id, name);
            }
        }
        Ok(())
    }

    /// Writes the operator's NAT64 prefixes of `config` for the programs.
    fn write_nat64(&self, config: &Config) -> Result<(), DaemonError> {
        let prefixes = config.nat64_prefixes()?;
        self.cx.kernel().set_nat64(&prefixes)?;
        Ok(())
    }

    /// Attaches the inbound program when some policy now judges inbound
    /// connections, detaches it when none does.
    fn set_inbound(&mut self) -> Result<(), DaemonError> {
        let judged = self.cx.plan().judges_inbound();
        if self.cx.kernel.set_inbound(judged)? {
            tracing::info!(
                judged,
                "inbound connections: {}",
                if judged {
                    "judged (the inbound program is attached)"
                } else {
                    "no policy judges them (the inbound program is detached)"
                }
            );
        }
        Ok(())
    }

    /// Puts back programs something outside geowall detached, logging and
    /// recording each time it has to.
    pub(super) fn repair_links(&mut self) {
        self.cx.kernel().heartbeat();
        match self.cx.kernel.repair() {
            Ok(fixed) if fixed.is_empty() => {}
            Ok(fixed) => {
                tracing::error!(
                    programs = ?fixed,
                    "geowall's programs were detached from the governed cgroup by something \
                     else: attached again"
                );
                self.cx.record(
                    "agent",
                    json!({"event": "reattached", "programs": fixed,
                           "governed": self.cx.hierarchy().display_name(&self.cx.plan().governed)}),
                );
            }
            Err(e) => {
                tracing::error!(error = %crate::vocab::error::chain(&e), "cannot re-attach detached programs")
            }
        }
    }

    /// Whether a policy binds systemd units (whose cgroups come and go).
    pub(super) fn has_unit_bindings(&self) -> bool {
        self.cx.plan().policies.iter().any(|p| !p.units.is_empty())
    }

    /// Re-computes the bindings of the plan in force (new unit cgroups,
    /// units gone) and writes what changed.
    pub(super) fn refresh_bindings(&mut self) {
        let wanted = match self.wanted_bindings(self.cx.plan(), self.cx.slots()) {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(error = %crate::vocab::error::Chain(&e), "bindings not refreshed");
                return;
            }
        };
        if wanted.slots == self.bound {
            return;
        }
        for (id, b) in &wanted.statics {
            if !self.statics.contains_key(id) {
                tracing::info!(cgroup = %self.cx.hierarchy().display_name(&b.path), policy = %b.policy, by = b.by, "cgroup bound");
            }
        }
        if let Err(e) = self.apply_bindings(wanted) {
            tracing::error!(error = %crate::vocab::error::Chain(&e), "cannot update the bindings");
        }
    }

    /// Frees the slots of policies that are gone and no binding names.
    fn free_unused_slots(&mut self) -> Result<(), DaemonError> {
        let bound: HashSet<u32> = self
            .cx
            .kernel()
            .bindings()?
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        let live: HashSet<u32> = self.cx.slots().values().copied().collect();
        for (slot, name) in self.cx.kernel().policy_names()?.into_iter().enumerate() {
            let slot = slot as u32;
            if name.is_some() && !live.contains(&slot) && !bound.contains(&slot) {
                self.cx.kernel().set_policy_name(slot, None)?;
            }
        }
        Ok(())
    }

    pub(super) fn refresh_names(&self) -> Result<(), DaemonError> {
        let policies = self.cx.kernel().policy_names()?;
        let regions = self.cx.kernel().region_names()?;
        let mut names = self.cx.names().write().expect("names lock");
        names.policies = policies;
        names.regions = regions;
        for (id, b) in &self.statics {
            names
                .cgroups
                .insert(*id, self.cx.hierarchy().display_name(&b.path));
        }
        drop(names);
        for job in self.jobs.iter() {
            self.cx.name_job(&job.name, job.cgroup_id, &job.cgroup);
        }
        Ok(())
    }

    /// The map in force and what answering questions about it needs.
    pub(super) fn map_snapshot(&self) -> MapSnapshot {
        MapSnapshot {
            map: Arc::clone(&self.cx.plan().map),
            specs: self
                .cx
                .plan()
                .sources
                .iter()
                .map(|s| s.spec.clone())
                .collect(),
            sources: self.cx.plan().sources.clone(),
            max_source_bytes: self.max_source_bytes,
            compile_time: self.cx.plan().compile_time,
            install_time: self.install_time,
            kernel_entries: self.kernel_entries,
        }
    }

    /// `policy explain`: the kernel tables' verdict for each target.
    pub(super) fn explain(
        &self,
        policy: &str,
        targets: &[crate::tables::explain::Target],
    ) -> Result<Vec<crate::tables::explain::Explanation>, super::caller::Refusal> {
        use crate::control::proto::ErrorCode;
        use crate::tables::explain::{PolicyText, explain};
        let refuse = |code: ErrorCode, m: String| super::caller::Refusal(code, m);
        let Some(p) = self.cx.plan().policy(policy) else {
            let hint = crate::regions::suggest(
                policy,
                self.cx.plan().policies.iter().map(|p| p.name.as_str()),
            )
            .map(|s| format!(" (did you mean '{s}'?)"))
            .unwrap_or_default();
            return Err(refuse(
                ErrorCode::UnknownPolicy,
                format!("no policy named '{policy}' is loaded{hint}"),
            ));
        };
        let slot = self.cx.slots()[&p.name];
        let view = self
            .cx
            .kernel()
            .view()
            .map_err(|e| refuse(ErrorCode::Internal, crate::vocab::error::chain(&e)))?;
        let nat64 = self.cx.names().read().expect("names lock").nat64.clone();
        let text = PolicyText {
            name: &p.name,
            rules: &p.rules,
            allowed: &p.allowed,
            denied: &p.denied,
            names: &p.names,
            nat64: &nat64,
        };
        let tables = format!("kernel (epoch {})", view.epoch);
        targets
            .iter()
            .map(|t| {
                explain(&view, &self.cx.plan().map, slot, &text, t, &tables)
                    .map_err(|e| refuse(ErrorCode::Internal, crate::vocab::error::chain(&e)))
            })
            .collect()
    }

    /// Kernel memory of the tries in force (None when it cannot be read).
    pub(super) fn trie_memlock(&self) -> Option<u64> {
        self.cx.kernel().trie_memlock().ok()
    }

    /// What a reload answers: the tables now in force.
    pub(super) fn switched(&self, epoch: u64) -> Switched {
        Switched {
            epoch,
            ipv4_ranges: self.cx.plan().map.v4.len(),
            ipv6_ranges: self.cx.plan().map.v6.len(),
            compile_ms: self.cx.plan().compile_time.as_millis() as u64,
            install_ms: self.install_time.as_millis() as u64,
            problems: self.after_switch.clone(),
        }
    }

    /// What `status` answers.
    pub(super) fn status(&self) -> Result<AgentStatus, DaemonError> {
        let counters = self.cx.kernel().counters()?;
        let policies = self
            .cx
            .plan()
            .policies
            .iter()
            .map(|p| {
                let slot = self.cx.slots()[&p.name];
                let c = counters.get(slot as usize).copied().unwrap_or_default();
                PolicyStatus {
                    name: p.name.clone(),
                    mode: format!("{:?}", p.mode).to_lowercase(),
                    slot,
                    cgroups: self
                        .statics
                        .values()
                        .filter(|b| b.policy == p.name)
                        .map(|b| self.cx.hierarchy().display_name(&b.path))
                        .collect(),
                    units: p.units.clone(),
                    default: self.cx.plan().default_policy.as_deref() == Some(&p.name),
                    jobs: self.jobs.iter().filter(|j| j.policy == p.name).count(),
                    allowed: c[counter::ALLOWED],
                    denied: c[counter::DENIED],
                    would_deny: c[counter::WOULD_DENY],
                    audit_refused: c[counter::AUDIT_REFUSED],
                }
            })
            .collect();
        let events_dropped = counters
            .iter()
            .take(MAX_POLICIES as usize + 1)
            .map(|c| c[counter::EVENTS_DROPPED])
            .sum();
        Ok(AgentStatus {
            version: geowall_common::VERSION.into(),
            pid: std::process::id(),
            epoch: self.cx.kernel().epoch(),
            governed: self.cx.hierarchy().display_name(&self.cx.plan().governed),
            policies,
            jobs: self
                .jobs
                .iter()
                .map(|j| JobStatus {
                    job: j.name.clone(),
                    policy: j.policy.clone(),
                    cgroup: self.cx.hierarchy().display_name(&j.cgroup),
                })
                .collect(),
            sources: self
                .cx
                .plan()
                .sources
                .iter()
                .map(|s| SourceStatus {
                    source: s.spec.label(),
                    sha256: s.sha256.clone(),
                    about: s.about.clone(),
                    networks: s.networks,
                })
                .collect(),
            ipv4_ranges: self.cx.plan().map.v4.len(),
            ipv6_ranges: self.cx.plan().map.v6.len(),
            events_dropped,
            grants: self.approvals.grant_status(),
            webhook: self.approvals.webhook_status(),
            socket_cgroups_unavailable: self
                .cx
                .kernel()
                .socket_cgroups_unavailable()
                .map(String::from),
            dns: self.cx.dns().map(|d| d.status()).unwrap_or_default(),
            open_paths: open_paths(
                self.cx.kernel().lsm_loaded(),
                self.cx.kernel().inbound_attached(),
                self.cx.plan().judges_inbound(),
                &self
                    .cx
                    .plan()
                    .policies
                    .iter()
                    .filter(|p| p.inbound == crate::config::Inbound::Allow)
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>(),
            ),
            audit: self.audit_status(&counters),
            fleet: self.fleet.as_ref().map(Here::status),
        })
    }

    /// The fleet part of the state (`None`: no `[fleet]`).
    pub(super) fn fleet(&self) -> Option<&Here> {
        self.fleet.as_ref()
    }

    pub(super) fn fleet_mut(&mut self) -> Option<&mut Here> {
        self.fleet.as_mut()
    }

    /// Switches to the fleet policies of `candidate` through the reload
    /// path (the config file's policies and the fleet's, checked together,
    /// then one table switch). Refused: the fleet policies in force stay.
    pub(super) fn fleet_apply(
        &mut self,
        candidate: &crate::fleet::FleetPolicies,
        why: &str,
        by: serde_json::Value,
    ) -> Result<u64, DaemonError> {
        let Some(here) = self.fleet.as_mut() else {
            return Err(DaemonError::Refused("no [fleet] in the config".into()));
        };
        let old = std::mem::replace(&mut here.applied.policies, candidate.policies.clone());
        match self.reload(why, Some(by)) {
            Ok(epoch) => Ok(epoch),
            Err(e) => {
                if let Some(here) = self.fleet.as_mut() {
                    here.applied.policies = old;
                }
                Err(e)
            }
        }
    }

    /// The requests, as the fleet sees them.
    pub(super) fn approval_views(&self) -> BTreeMap<u32, crate::approvals::ApprovalView> {
        self.approvals.all_views()
    }

    /// Tells of each change to the requests and grants.
    pub(super) fn approvals_changes(&self) -> watch::Receiver<u64> {
        self.approvals.subscribe()
    }

    /// A decision from the fleet (see [`super::approvals::Approvals::decide_fleet`]).
    pub(super) fn fleet_decide(
        &mut self,
        id: u32,
        decision: crate::approvals::Decision,
        length: std::time::Duration,
        reason: Option<&str>,
        by: crate::approvals::Person,
        fleet: serde_json::Value,
    ) -> Result<crate::approvals::ApprovalView, Refusal> {
        self.approvals
            .decide_fleet(&self.cx, id, decision, length, reason, by, fleet)
    }

    /// Writes a non-flow record to the audit log.
    pub(super) fn record(&self, kind: &str, detail: serde_json::Value) {
        self.cx.record(kind, detail);
    }

    /// This host's status for the fleet (`P/nodes/NODE`).
    pub(super) fn node_status(&self) -> Result<crate::fleet::values::NodeStatus, DaemonError> {
        use crate::fleet::values::{NodePolicy, NodeSource, NodeStatus};
        let status = self.status()?;
        let here = self.fleet.as_ref();
        let pinned = crate::kernel::pinned_info(self.cx.kernel().pins());
        let (audit_seq, audit_head) = self.cx.log().lock().expect("log lock").head();
        let policies = self
            .cx
            .plan()
            .policies
            .iter()
            .map(|p| {
                let fleet = here.and_then(|h| h.applied.policies.get(&p.name));
                NodePolicy {
                    name: p.name.clone(),
                    origin: if fleet.is_some() { "fleet" } else { "file" }.into(),
                    sha256: match fleet {
                        Some(f) => f.sha256(),
                        None => self.policy_hashes.get(&p.name).cloned().unwrap_or_default(),
                    },
                    revision: fleet.map(|f| f.revision),
                }
            })
            .collect();
        Ok(NodeStatus {
            node: here.map(|h| h.node.clone()).unwrap_or_default(),
            version: status.version.clone(),
            programs: pinned.version.unwrap_or_else(|| status.version.clone()),
            enforcing: !pinned.programs.is_empty()
                && self
                    .cx
                    .plan()
                    .policies
                    .iter()
                    .any(|p| p.mode == crate::config::Mode::Enforce),
            time: crate::approvals::rfc3339_ms(crate::vocab::clock::unix_ms()),
            epoch: status.epoch,
            policies,
            sources: status
                .sources
                .iter()
                .map(|s| NodeSource {
                    source: s.source.clone(),
                    sha256: s.sha256.clone(),
                })
                .collect(),
            counters: status
                .policies
                .iter()
                .map(|p| (p.name.clone(), [p.allowed, p.denied, p.would_deny]))
                .collect(),
            lost_events: status.events_dropped,
            audit_seq,
            audit_head,
            fleet_revision: here.map_or(0, |h| h.applied.revision),
            last_error: here.and_then(Here::last_error),
        })
    }

    /// The audit log in `status`.
    fn audit_status(&self, counters: &[geowall_common::Counters]) -> AuditStatus {
        let stats = self.cx.log().lock().expect("log lock").stats();
        let health = stats.health();
        let when = |ns: i128| crate::vocab::clock::rfc3339(ns);
        AuditStatus {
            log: self.log_path.display().to_string(),
            writable: health.failing_since.is_none(),
            failing_since: health.failing_since.map(when),
            last_error_time: health.last_error.as_ref().map(|(t, _)| when(*t)),
            last_error: health.last_error.map(|(_, e)| e),
            write_errors: stats
                .write_errors
                .load(std::sync::atomic::Ordering::Relaxed),
            held: health.held,
            lost: stats.lost.load(std::sync::atomic::Ordering::Relaxed),
            lost_now: health.lost_now,
            on_write_failure: self.audit_gate.mode().as_str().into(),
            refusing: self.audit_gate.refusing(),
            refused: counters
                .iter()
                .take(MAX_POLICIES as usize + 1)
                .map(|c| c[counter::AUDIT_REFUSED])
                .sum(),
        }
    }

    /// `[audit] on_write_failure`, for the metrics.
    pub(super) fn audit_gate(&self) -> Arc<AuditGate> {
        Arc::clone(&self.audit_gate)
    }

    /// Ends the agent: writes the stop record; with `detach`, removes every
    /// program, pin and empty job cgroup.
    pub(super) fn finish(mut self, detach: bool) -> Result<(), DaemonError> {
        self.jobs.collect(&self.cx);
        self.cx.record(
            "agent",
            json!({"event": "stop", "pid": std::process::id(), "detached": detach}),
        );
        if detach {
            let jobs_root = self.jobs.root().to_path_buf();
            let removed = self.cx.kernel.detach_and_unpin()?;
            let _ = cgroup::remove(&jobs_root);
            tracing::info!(pins = removed, "detached; enforcement ended");
        } else {
            tracing::info!("stopped; the pinned programs keep enforcing");
        }
        Ok(())
    }
}

/// Kernel bindings: cgroup id → policy slot, and which of them come from
/// the config.
#[derive(Default)]
struct Bindings {
    slots: BTreeMap<u64, u32>,
    statics: BTreeMap<u64, StaticBinding>,
}

/// A binding the config made.
#[derive(Debug, Clone)]
pub(super) struct StaticBinding {
    pub path: PathBuf,
    pub policy: String,
    /// `cgroup`, `unit` or `default`.
    pub by: &'static str,
}

/// The `[agent]` keys that differ between `old` and `new` and apply only
/// when the agent starts.
fn restart_only_changes(old: &AgentConfig, new: &AgentConfig) -> Vec<&'static str> {
    [
        ("bpffs", old.bpffs != new.bpffs),
        ("audit_log", old.audit_log != new.audit_log),
        ("socket", old.socket != new.socket),
        ("jobs_cgroup", old.jobs_cgroup != new.jobs_cgroup),
        (
            "ring_buffer_kib",
            old.ring_buffer_kib != new.ring_buffer_kib,
        ),
        ("on_map_error", old.on_map_error != new.on_map_error),
        ("metrics", old.metrics != new.metrics),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// What stays open on this host (see the README's threat model): sockets
/// made outside the governed subtree run none of its programs; without BPF
/// LSM, packet and XDP sockets are judged by no program either.
/// What no program judges: `lsm`, whether the BPF LSM program loaded;
/// `inbound`, whether the inbound program is attached; `judging_wanted`,
/// whether some policy judges inbound connections; `not_judging`, the
/// policies whose listeners are not judged (`inbound = "allow"`).
fn open_paths(lsm: bool, inbound: bool, judging_wanted: bool, not_judging: &[&str]) -> Vec<String> {
    let mut open = vec![
        "sockets made outside the governed subtree and used inside it (inherited, received over a \
         UNIX socket, taken with pidfd_getfd) run none of its programs: `geowall exec` closes \
         inherited descriptors and refuses pidfd_getfd; elsewhere, govern / with a default policy"
            .to_owned(),
        "sockets of families no program judges (vsock, TIPC, RDS, SMC, Bluetooth, ...): refused \
         to `geowall exec` jobs by their seccomp filter (unless their policy only audits); a \
         process placed in a governed cgroup by a binding can create them"
            .to_owned(),
    ];
    if !inbound && judging_wanted {
        open.push(
            "connections to a job's listener: a policy sets inbound = \"judge\" but the inbound \
             program could not be attached (see the agent's log; a reload tries again): no \
             listener is judged"
                .to_owned(),
        );
    } else if !inbound {
        open.push(
            "connections to a job's listener: no policy sets inbound = \"judge\", so a peer \
             anywhere may connect to a governed job that listens and read what it sends back"
                .to_owned(),
        );
    } else if !not_judging.is_empty() {
        open.push(format!(
            "connections to the listeners of jobs under {} (inbound = \"allow\"): a peer anywhere \
             may connect and read what the job sends back",
            not_judging.join(", ")
        ));
    }
    if !lsm {
        open.push(
            "packet and XDP sockets (BPF LSM unavailable): refused to `geowall exec` jobs by \
             dropping CAP_NET_RAW; a process in a cgroup bound by the config that holds \
             CAP_NET_RAW can open them"
                .to_owned(),
        );
    }
    open
}

/// `[dns]` keys that changed and apply only at start.
fn dns_restart_changes(
    old: &crate::config::DnsConfig,
    new: &crate::config::DnsConfig,
) -> Vec<&'static str> {
    [
        ("dns.enabled", old.enabled != new.enabled),
        ("dns.listen", old.listen.get_ref() != new.listen.get_ref()),
        ("dns.port", old.port.get_ref() != new.port.get_ref()),
        ("dns.max_learned", old.max_learned != new.max_learned),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// The (name, slot) pairs the new tables' generation must hold: the names
/// learned so far that each policy's `allow_names` matches.
fn names_allow(
    dns: Option<&Dns>,
    plan: &Plan,
    slots: &BTreeMap<String, u32>,
) -> std::collections::BTreeSet<(u32, u16)> {
    let Some(dns) = dns else {
        return Default::default();
    };
    dns.name_allow_for(&policies_by_slot(plan, slots))
}

/// Each policy's names policy, by slot.
fn policies_by_slot<'p>(
    plan: &'p Plan,
    slots: &BTreeMap<String, u32>,
) -> BTreeMap<u32, &'p crate::policy::NamesPolicy> {
    plan.policies
        .iter()
        .filter_map(|p| slots.get(&p.name).map(|s| (*s, &p.names)))
        .collect()
}

/// With `--audit-only`, no policy may enforce.
fn check_audit_only(audit_only: bool, plan: &Plan) -> Result<(), DaemonError> {
    if let Some(p) = plan
        .policies
        .iter()
        .find(|p| audit_only && p.mode == crate::config::Mode::Enforce)
    {
        return Err(DaemonError::Refused(format!(
            "--audit-only: policy '{}' is in enforce mode",
            p.name
        )));
    }
    Ok(())
}

/// The stamps of the files of `specs` (the built-in map has none).
fn source_stamps(specs: &[Spec]) -> Vec<(PathBuf, Stamp)> {
    specs
        .iter()
        .filter(|s| s.kind != Kind::Builtin)
        .map(|s| (s.path.clone(), stamp(&s.path)))
        .collect()
}

/// Adds the fleet policies in force to `config`'s own (a name defined in
/// both is refused by the plan, naming both places).
fn add_fleet(config: &mut Config, fleet: Option<&Here>) -> Result<(), DaemonError> {
    if let Some(here) = fleet {
        config.policies.extend(here.applied.defs(&here.keys)?);
    }
    Ok(())
}

/// Policy name → SHA-256 of the text it is written in (a policy file's, a
/// fleet value's, the config file's for an inline `[[policy]]`).
fn policy_hashes(config: &Config) -> BTreeMap<String, String> {
    config
        .policies
        .iter()
        .map(|d| {
            (
                d.name.clone(),
                crate::vocab::hex::sha256_hex(d.source.text.as_bytes()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::open_paths;

    fn inbound_line(paths: &[String]) -> Option<&String> {
        paths.iter().find(|p| p.contains("listener"))
    }

    #[test]
    fn open_paths_say_which_listeners_are_not_judged() {
        // No policy judges: the program is (rightly) not attached.
        let p = open_paths(true, false, false, &["a", "b"]);
        assert!(inbound_line(&p).unwrap().contains("no policy sets inbound"));
        // A policy judges but the program is not attached.
        let p = open_paths(true, false, true, &["b"]);
        assert!(inbound_line(&p).unwrap().contains("could not be attached"));
        // Attached; one policy does not judge.
        let p = open_paths(true, true, true, &["b"]);
        assert!(inbound_line(&p).unwrap().contains("jobs under b (inbound"));
        // Attached; every policy judges.
        let p = open_paths(true, true, true, &[]);
        assert!(inbound_line(&p).is_none(), "{p:?}");
        // The socket families line is always there; packet sockets only
        // without LSM.
        assert!(p.iter().any(|l| l.contains("vsock")));
        assert!(!p.iter().any(|l| l.contains("packet and XDP")));
        assert!(
            open_paths(false, true, true, &[])
                .iter()
                .any(|l| l.contains("packet and XDP"))
        );
    }
}
