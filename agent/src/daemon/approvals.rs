//! Approvals in the running agent: the control requests, the reactive path
//! (a denied flow opens or joins a request), expiry, and keeping the
//! kernel's grant tries in step with the store. Every change and every
//! refusal is written to the audit log (kind `approval`).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::json;

use super::{
    caller::{Peer, Refusal},
    context::Context,
    jobs::Jobs,
};
use crate::{
    approvals::{
        self, Approval, ApprovalView, Caller, Decision, Destination, Origin, Person,
        REACTIVE_GRANT, Stage, Store,
    },
    audit::AuditLog,
    config::{ApprovalsConfig, Config},
    control::proto::{ApprovalApprove, ApprovalAsk, ApprovalDeny, ApprovalRevoke, ErrorCode},
    regions::prefix::Prefix,
    tables::grants::{RegionGrantSets, region_entries},
    vocab::clock,
};

/// A denied flow under some policy, as the event reader passes it on.
#[derive(Debug, Clone)]
pub(super) struct Denial {
    pub slot: u32,
    pub cgroup_id: u64,
    pub dst: std::net::IpAddr,
    pub port: u16,
    pub uid: u32,
    pub pid: u32,
    /// The cgroup's path, as the flow record names it.
    pub cgroup: Option<String>,
    /// The name the job resolved the address from (the most recent), if
    /// it resolved it through the agent.
    pub name: Option<String>,
}

/// The approvals part of the agent's state.
pub(super) struct Approvals {
    config: ApprovalsConfig,
    store: Store,
    /// Sends webhook notifications (set once the agent runs).
    notifier: Option<super::webhook::Notifier>,
    /// `[groups]`, for region destinations named by a user group.
    groups: BTreeMap<String, Vec<String>>,
    /// Counts changes to the store (the fleet sync publishes on each).
    changes: tokio::sync::watch::Sender<u64>,
}

/// `[groups]` as written (the plan has checked them).
pub(super) fn user_groups(config: &Config) -> BTreeMap<String, Vec<String>> {
    config
        .file
        .groups
        .iter()
        .map(|(name, members)| {
            let members = members.get_ref().iter().map(|m| m.get_ref().clone());
            (name.clone(), members.collect())
        })
        .collect()
}

impl Approvals {
    pub(super) fn load(config: &Config) -> std::io::Result<Approvals> {
        let store = Store::load(&config.file.approvals.state_dir)?;
        Ok(Approvals {
            config: config.file.approvals.clone(),
            store,
            notifier: None,
            groups: user_groups(config),
            changes: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Tells of each change to the requests and grants.
    pub(super) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The live region grants for tables whose policy slots are `slots`
    /// (a policy-wide grant is scoped to its policy's slot; a grant whose
    /// policy is not there is left out).
    pub(super) fn region_grant_sets(&self, slots: &BTreeMap<String, u32>) -> RegionGrantSets {
        let scoped = self.store.grants().filter_map(|g| {
            let scope = match g.cgroup_id {
                Some(id) => id,
                None => geowall_common::GRANT_SCOPE_POLICY | u64::from(*slots.get(&g.policy)?),
            };
            Some((g, scope))
        });
        crate::tables::grants::region_sets(scoped, clock::unix_ms(), clock::boot_ns())
    }
}

/// A decision on request `id`: an approval (for `length`; by default what
/// was asked), a denial or a revocation, and why.
pub(super) struct Decide {
    pub(super) id: u32,
    pub(super) decision: Decision,
    pub(super) length: Option<String>,
    pub(super) reason: Option<String>,
}

impl From<ApprovalApprove> for Decide {
    fn from(r: ApprovalApprove) -> Self {
        Decide {
            id: r.id,
            decision: Decision::Approve,
            length: r.for_,
            reason: r.reason,
        }
    }
}

impl From<ApprovalDeny> for Decide {
    fn from(r: ApprovalDeny) -> Self {
        Decide {
            id: r.id,
            decision: Decision::Deny,
            length: None,
            reason: r.reason,
        }
    }
}

impl From<ApprovalRevoke> for Decide {
    fn from(r: ApprovalRevoke) -> Self {
        Decide {
            id: r.id,
            decision: Decision::Revoke,
            length: None,
            reason: r.reason,
        }
    }
}

/// Requests and grants live at once at most (pending and approved): beyond,
/// new requests are refused and denials open none.
pub(super) const MAX_LIVE: usize = 1024;

fn refused(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal(code, message.into())
}

impl Approvals {
    /// Starts the webhook sender (on the agent's runtime). A notification
    /// given up is a `webhook_failed` record; the sender writes it itself,
    /// so a failing webhook never waits for the agent's lock.
    pub(super) fn start_notifier(&mut self, log: Arc<Mutex<AuditLog>>) {
        self.notifier = Some(super::webhook::Notifier::start(move |failure| {
            let mut detail = serde_json::to_value(failure).unwrap_or_default();
            if let Some(fields) = detail.as_object_mut() {
                // The record has its own time.
                fields.remove("time");
            }
            let mut log = log.lock().expect("log lock");
            if let Err(e) = log.event("webhook_failed", detail)
                && !crate::audit::log::is_lost(&e)
            {
                tracing::error!(error = %e, "cannot write the audit log");
            }
        }));
    }

    /// The webhook, for `status`: its address and what failed.
    pub(super) fn webhook_status(&self) -> Option<crate::control::proto::WebhookStatus> {
        let url = self.config.webhook.as_ref()?;
        let health = self
            .notifier
            .as_ref()
            .map(super::webhook::Notifier::health)
            .unwrap_or_default();
        Some(crate::control::proto::WebhookStatus {
            url: url.to_string(),
            failures: health.failures,
            last_failure: health.last_failure,
        })
    }

    /// Queues a webhook notification of `event` on `request` (never waits).
    fn notify(&self, event: &str, request: &ApprovalView, by: Option<&Person>) {
        if let (Some(url), Some(n)) = (&self.config.webhook, &self.notifier) {
            n.send(
                url,
                json!({
                    "event": event,
                    "host": super::names::hostname(),
                    "request": request,
                    "by": by,
                }),
            );
        }
    }

    fn caller(&self, peer: Peer) -> Caller {
        Caller {
            uid: peer.uid,
            approver: crate::host::users::is_member(peer.uid, &self.config.group),
        }
    }

    fn person(peer: Peer) -> Person {
        Person::new(peer.uid, peer.pid)
    }

    /// Records a refused approval request and returns the refusal.
    fn refuse(cx: &Context, op: &str, id: Option<u32>, peer: Peer, refusal: Refusal) -> Refusal {
        cx.record(
            "approval",
            json!({
                "event": "refused",
                "op": op,
                "id": id,
                "by": Self::person(peer),
                "code": refusal.0,
                "why": refusal.1,
            }),
        );
        refusal
    }

    fn live_requests(&self) -> usize {
        self.store
            .requests
            .values()
            .filter(|r| r.state.live())
            .count()
    }

    fn save(&self) {
        self.changes.send_modify(|n| *n += 1);
        if let Err(e) = self.store.save() {
            tracing::error!(
                dir = %self.config.state_dir.display(),
                error = %e,
                "cannot save the approvals state"
            );
        }
    }

    /// Brings the kernel's grant tries in line with the live grants: writes
    /// every entry they need, removes every other.
    /// Returns whether it changed the store (grants of a policy that is
    /// gone end).
    fn sync_grants(&mut self, cx: &Context) -> bool {
        // A policy-wide grant is scoped to its policy's slot as of now; a
        // grant whose policy is gone ends.
        let mut gone = Vec::new();
        for r in self.store.requests.values_mut() {
            if !r.state.live() {
                continue;
            }
            match cx.slots().get(&r.policy) {
                Some(slot) => r.slot = *slot,
                None => {
                    r.state = Stage::Expired;
                    gone.push((r.id, r.policy.clone()));
                }
            }
        }
        // Addresses names opened since the last turn come back into the
        // store (and its file).
        let changed = !gone.is_empty() || cx.grants().dirty();
        for (id, policy) in gone {
            cx.record(
                "approval",
                json!({"event": "expired", "id": id, "why": format!("policy '{policy}' is no longer loaded")}),
            );
        }
        if let Err(e) = cx.grants().sync(self.store.grants_mut()) {
            tracing::error!(error = %crate::vocab::error::chain(&e), "cannot write the grants to the kernel");
        }
        if let Err(e) = self.sync_region_grants(cx) {
            tracing::error!(error = %crate::vocab::error::chain(&e), "cannot write the region grants to the kernel");
        }
        changed
    }

    /// Writes the active generation's region grants, numbered as the tables
    /// in force number regions, and removes every other entry (the idle
    /// generation's are written again by the next table switch).
    fn sync_region_grants(&self, cx: &Context) -> Result<(), crate::kernel::KernelError> {
        let epoch = cx.kernel().epoch();
        if epoch == 0 {
            return Ok(());
        }
        let sets = self.region_grant_sets(cx.slots());
        let names = cx.kernel().region_names()?;
        let ids: BTreeMap<&str, u16> = names
            .iter()
            .enumerate()
            .filter_map(|(id, name)| Some((name.as_deref()?, id as u16)))
            .collect();
        let generation = (epoch & 1) as u8;
        let wanted = region_entries(&sets, &ids, generation);
        cx.kernel().write_region_grants(generation, &wanted, true)?;
        Ok(())
    }

    /// At start: re-applies the grants that are still live.
    pub(super) fn restore(&mut self, cx: &Context) {
        let expired = self.store.expire(clock::unix_ms());
        for id in &expired {
            cx.record(
                "approval",
                json!({"event": "expired", "id": id, "why": "ran out while the agent was down"}),
            );
        }
        let changed = self.sync_grants(cx) || !expired.is_empty();
        let grants: Vec<u32> = self.store.grants().map(|g| g.id).collect();
        let pending = self
            .store
            .requests
            .values()
            .filter(|r| r.state == Stage::Pending)
            .count();
        if !grants.is_empty() || pending > 0 {
            cx.record(
                "approval",
                json!({"event": "restored", "grants": grants, "pending": pending}),
            );
        }
        // Nothing is written where nothing happened: an agent that never
        // sees a request leaves no state behind.
        if changed {
            self.save();
        }
    }

    /// Every 2 s: ends what ran out, and keeps what names opened.
    pub(super) fn expire(&mut self, cx: &Context) {
        let expired = self.store.expire(clock::unix_ms());
        if expired.is_empty() {
            if cx.grants().dirty() {
                self.sync_grants(cx);
                self.save();
            }
            return;
        }
        for id in &expired {
            cx.record("approval", json!({"event": "expired", "id": id}));
        }
        self.sync_grants(cx);
        self.save();
    }

    fn policy_limits(cx: &Context, policy: &str) -> Result<(bool, Duration), Refusal> {
        cx.plan()
            .policy(policy)
            .map(|p| (p.approvable, p.max_grant))
            .ok_or_else(|| refused(ErrorCode::UnknownPolicy, format!("no policy '{policy}'")))
    }

    /// `approval_request`: a proactive request.
    pub(super) fn request(
        &mut self,
        cx: &Context,
        jobs: &Jobs,
        peer: Peer,
        ask: ApprovalAsk,
    ) -> Result<ApprovalView, Refusal> {
        let built = self.build_request(cx, jobs, peer, &ask);
        let built = built.and_then(|r| {
            if self.live_requests() >= MAX_LIVE {
                return Err(refused(
                    ErrorCode::BadRequest,
                    format!("{MAX_LIVE} requests and grants are live already: decide some first"),
                ));
            }
            Ok(r)
        });
        let mut request = built.map_err(|r| Self::refuse(cx, "approval_request", None, peer, r))?;
        request.id = self.store.next_id();
        let view = request.view();
        let by = Self::person(peer);
        self.notify("requested", &view, Some(&by));
        cx.record(
            "approval",
            json!({"event": "requested", "request": &view, "by": by}),
        );
        self.store.requests.insert(request.id, request);
        self.save();
        Ok(view)
    }

    fn build_request(
        &self,
        cx: &Context,
        jobs: &Jobs,
        peer: Peer,
        ask: &ApprovalAsk,
    ) -> Result<Approval, Refusal> {
        let bad = |m: &str| refused(ErrorCode::BadRequest, m);
        let invalid =
            |e: &(dyn std::error::Error + 'static)| Refusal::error(ErrorCode::BadRequest, e);
        let (policy, job, cgroup, cgroup_id) = match (&ask.policy, &ask.job) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(bad("name either a policy or a job"));
            }
            (Some(p), None) => (p.clone(), None, None, None),
            (None, Some(j)) => {
                let job = jobs.get(j).ok_or_else(|| {
                    refused(ErrorCode::UnknownJob, format!("no running job '{j}'"))
                })?;
                (
                    job.policy.clone(),
                    Some(job.name.clone()),
                    Some(cx.hierarchy().display_name(&job.cgroup)),
                    Some(job.cgroup_id),
                )
            }
        };
        let (approvable, max) = Self::policy_limits(cx, &policy)?;
        if !approvable {
            return Err(refused(
                ErrorCode::PermissionDenied,
                format!("policy '{policy}' is not approvable (approvable = false)"),
            ));
        }
        let map_tags = &cx.plan().map.tags;
        let resolver = crate::policy::Resolver {
            map_tags: Some(map_tags),
            groups: &self.groups,
        };
        let (to, regions) = approvals::parse_to(&ask.to, &resolver).map_err(|e| invalid(&e))?;
        if to.name().is_some() && cx.dns().is_none() {
            return Err(bad(
                "a grant to a name needs the agent's DNS forwarder, which is off ([dns] enabled = false)",
            ));
        }
        let wanted = crate::vocab::units::parse_duration(&ask.for_).map_err(|e| invalid(&e))?;
        let length =
            approvals::grant_length(None, wanted, max, &policy).map_err(|e| invalid(&e))?;
        if ask.reason.trim().is_empty() {
            return Err(bad("a request needs a reason"));
        }
        let now = clock::unix_ms();
        Ok(Approval {
            id: 0,
            state: Stage::Pending,
            origin: Origin::Proactive,
            slot: cx.slot(&policy).unwrap_or(0),
            policy,
            job,
            cgroup,
            cgroup_id,
            to,
            regions,
            resolved: Default::default(),
            port: ask.port.unwrap_or(0),
            requested_by: Self::person(peer),
            reason: ask.reason.chars().take(1024).collect(),
            for_secs: length.as_secs(),
            created_ms: now,
            expires_ms: now + self.config.request_ttl.0.as_millis() as u64,
            denials: 0,
            decided_by: None,
            decision_reason: None,
            decided_ms: None,
        })
    }

    /// `approvals_list`: approvers and root see every request; anyone else
    /// their own.
    pub(super) fn list(&self, peer: Peer, pending: bool) -> Vec<ApprovalView> {
        let caller = self.caller(peer);
        self.store
            .requests
            .values()
            .filter(|r| caller.may_decide() || r.requested_by.uid == peer.uid)
            .filter(|r| !pending || r.state == Stage::Pending)
            .map(Approval::view)
            .collect()
    }

    /// `approval_approve`, `approval_deny`, `approval_revoke`.
    pub(super) fn decide(
        &mut self,
        cx: &Context,
        peer: Peer,
        d: Decide,
    ) -> Result<ApprovalView, Refusal> {
        let Decide {
            id,
            decision,
            ref length,
            ref reason,
        } = d;
        let op = format!("approval_{}", decision.verb());
        let checked = self.check_decision(cx, peer, id, decision, length.as_deref());
        let length = checked.map_err(|r| Self::refuse(cx, &op, Some(id), peer, r))?;
        Ok(self.commit(
            cx,
            id,
            decision,
            length,
            reason.as_deref(),
            Self::person(peer),
            None,
        ))
    }

    /// A decision from the fleet: `by` is the approver as etcd
    /// authenticated them (etcd's roles said who may decide); the request
    /// must be in a state to take it, and an approval's length (`length`:
    /// what is left of the grant) within its policy's `max_grant`. `fleet`
    /// (the decision's key and revision) goes into the audit record.
    #[expect(clippy::too_many_arguments, reason = "one decision's parts")]
    pub(super) fn decide_fleet(
        &mut self,
        cx: &Context,
        id: u32,
        decision: Decision,
        length: Duration,
        reason: Option<&str>,
        by: Person,
        fleet: serde_json::Value,
    ) -> Result<ApprovalView, Refusal> {
        let checked = (|| {
            let request = self.store.requests.get(&id).ok_or_else(|| {
                refused(ErrorCode::BadRequest, format!("no approval request {id}"))
            })?;
            // The stage rules only: etcd's roles authorized the approver.
            let root = Caller {
                uid: 0,
                approver: true,
            };
            approvals::authorize(root, &self.config.group, decision, request, true)
                .map_err(|e| Refusal::error(ErrorCode::PermissionDenied, &e))?;
            if decision != Decision::Approve {
                return Ok(Duration::ZERO);
            }
            let (_, max) = Self::policy_limits(cx, &request.policy)?;
            // A grant whose lease ran a little ahead of its length is not
            // refused for the rounding: at most max_grant.
            approvals::grant_length(
                Some(length),
                length,
                max + Duration::from_secs(1),
                &request.policy,
            )
            .map(|l| l.min(max))
            .map_err(|e| Refusal::error(ErrorCode::BadRequest, &e))
        })();
        let length = checked.inspect_err(|r| {
            cx.record(
                "approval",
                json!({
                    "event": "refused",
                    "op": format!("approval_{}", decision.verb()),
                    "id": id,
                    "by": &by,
                    "code": r.0,
                    "why": r.1,
                    "fleet": &fleet,
                }),
            );
        })?;
        Ok(self.commit(cx, id, decision, length, reason, by, Some(fleet)))
    }

    /// Takes a checked decision: the store, the kernel, the audit log, the
    /// webhook.
    #[expect(clippy::too_many_arguments, reason = "one decision's parts")]
    fn commit(
        &mut self,
        cx: &Context,
        id: u32,
        decision: Decision,
        length: Duration,
        reason: Option<&str>,
        by: Person,
        fleet: Option<serde_json::Value>,
    ) -> ApprovalView {
        let now = clock::unix_ms();
        let request = self.store.requests.get_mut(&id).expect("checked above");
        request.decided_by = Some(by.clone());
        request.decided_ms = Some(now);
        request.decision_reason = reason.map(|r| r.chars().take(1024).collect());
        let event = match decision {
            Decision::Approve => {
                request.state = Stage::Approved;
                request.expires_ms = now + length.as_millis() as u64;
                "approved"
            }
            Decision::Deny => {
                request.state = Stage::Denied;
                request.expires_ms = now;
                "denied"
            }
            Decision::Revoke => {
                request.state = Stage::Revoked;
                request.expires_ms = now;
                "revoked"
            }
        };
        if decision != Decision::Deny {
            self.sync_grants(cx);
        }
        if decision == Decision::Approve {
            self.open_learned(cx, id);
        }
        let view = self.store.requests[&id].view();
        self.save();
        self.notify(event, &view, Some(&by));
        let mut detail = json!({"event": event, "id": id, "by": by, "request": &view});
        if let Some(f) = fleet {
            detail["fleet"] = f;
        }
        cx.record("approval", detail);
        view
    }

    /// Every request, as the fleet sees it (`P/requests/NODE/ID`).
    pub(super) fn all_views(&self) -> BTreeMap<u32, ApprovalView> {
        self.store
            .requests
            .iter()
            .map(|(id, r)| (*id, r.view()))
            .collect()
    }

    /// A name grant just approved opens what its jobs resolved from the
    /// name before (and still hold live): a job that resolved, was denied,
    /// and asked, connects again without resolving again.
    fn open_learned(&mut self, cx: &Context, id: u32) {
        let Some(grant) = self.store.requests.get(&id) else {
            return;
        };
        let (Some(pattern), Some(dns)) = (grant.to.name().cloned(), cx.dns()) else {
            return;
        };
        let found = {
            let table = dns.learned();
            let table = table.lock().expect("learned lock");
            table.live_named(clock::boot_ns(), |n| pattern.matches(n))
        };
        for (scope, addr, names) in found {
            // The policy a scope's jobs run under: its binding's.
            let Ok(Some(slot)) = cx.kernel().binding(scope) else {
                continue;
            };
            if let Err(e) = cx.grants().resolved(scope, slot, &names, &[addr]) {
                tracing::error!(error = %crate::vocab::error::chain(&e), "cannot open a name grant's addresses in the kernel");
                return;
            }
        }
        // Into the store now (and so into `approvals list`).
        self.sync_grants(cx);
    }

    /// Who may decide, whether the request is in a state to be decided,
    /// and (for an approval) the grant's length.
    fn check_decision(
        &self,
        cx: &Context,
        peer: Peer,
        id: u32,
        decision: Decision,
        length: Option<&str>,
    ) -> Result<Duration, Refusal> {
        let caller = self.caller(peer);
        let config = &self.config;
        let Some(request) = self.store.requests.get(&id) else {
            // Outsiders learn nothing about which ids exist.
            if !caller.may_decide() {
                approvals::authorize(caller, &config.group, decision, &dummy(), true)
                    .map_err(|e| Refusal::error(ErrorCode::PermissionDenied, &e))?;
            }
            return Err(refused(
                ErrorCode::BadRequest,
                format!("no approval request {id}"),
            ));
        };
        approvals::authorize(
            caller,
            &config.group,
            decision,
            request,
            config.allow_self_approval,
        )
        .map_err(|e| Refusal::error(ErrorCode::PermissionDenied, &e))?;
        if decision != Decision::Approve {
            return Ok(Duration::ZERO);
        }
        let (_, max) = Self::policy_limits(cx, &request.policy)?;
        let wanted = length
            .map(crate::vocab::units::parse_duration)
            .transpose()
            .map_err(|e| Refusal::error(ErrorCode::BadRequest, &e))?;
        let length = approvals::grant_length(
            wanted,
            Duration::from_secs(request.for_secs),
            max,
            &request.policy,
        )
        .map_err(|e| Refusal::error(ErrorCode::BadRequest, &e))?;
        let mut candidate = request.clone();
        candidate.slot = cx.slot(&request.policy).unwrap_or(request.slot);
        if !crate::tables::grants::fits(self.store.grants(), &candidate) {
            return Err(refused(
                ErrorCode::BadRequest,
                format!(
                    "{} already has {} live grants covering {}: revoke one first",
                    request.cgroup.as_deref().unwrap_or(&request.policy),
                    geowall_common::MAX_GRANTS_PER_PREFIX,
                    request.to
                ),
            ));
        }
        Ok(length)
    }

    /// The reactive path: a denied flow under an approvable policy opens a
    /// request for (its bound cgroup, the destination host, the port), or
    /// joins the one that is pending. The bound cgroup is the one whose
    /// binding gave the flow its policy (a job's cgroup, a cgroup of the
    /// config): the grant covers every process below it, as the policy does.
    pub(super) fn denied(&mut self, cx: &Context, jobs: &Jobs, d: Denial) {
        let policy = cx.slot_name(d.slot);
        let Ok((true, max)) = Self::policy_limits(cx, &policy) else {
            return;
        };
        // An address the job resolved is asked for by the name it used
        // (the approver sees the endpoint; the grant follows the name's
        // addresses); any other, as itself.
        let name = d
            .name
            .as_deref()
            .filter(|_| cx.dns().is_some())
            .and_then(|n| crate::dns::NamePattern::parse(n).ok());
        let (to, resolved) = match name {
            Some(n) => (Destination::Name(n), [d.dst].into()),
            None => (Destination::Prefix(Prefix::host(d.dst)), Default::default()),
        };
        let (cgroup_id, cgroup) = Self::bound_cgroup(cx, d.cgroup_id, d.cgroup);
        let live = self.live_requests();
        if let Some(r) = self.store.requests.values_mut().find(|r| {
            r.state == Stage::Pending
                && r.cgroup_id == Some(cgroup_id)
                && r.to == to
                && r.port == d.port
        }) {
            r.denials += 1;
            if r.resolved.len() < crate::approvals::MAX_NAME_GRANT_ADDRESSES {
                r.resolved.extend(resolved);
            }
            return;
        }
        if live >= MAX_LIVE {
            // A job that sprays denials does not fill the disk: beyond the
            // cap, denials open nothing (the flow records remain).
            tracing::debug!(policy, dst = %d.dst, "approvals: too many live requests, denial not filed");
            return;
        }
        let job = jobs
            .iter()
            .find(|j| j.cgroup_id == cgroup_id)
            .map(|j| (j.name.clone(), cx.hierarchy().display_name(&j.cgroup)));
        let cgroup = match &job {
            Some((_, path)) => Some(path.clone()),
            None => cgroup,
        };
        let now = clock::unix_ms();
        let request = Approval {
            id: self.store.next_id(),
            state: Stage::Pending,
            origin: Origin::Reactive,
            policy,
            job: job.map(|(name, _)| name),
            cgroup,
            cgroup_id: Some(cgroup_id),
            slot: d.slot,
            to,
            regions: Vec::new(),
            resolved,
            port: d.port,
            requested_by: Person::new(d.uid, Some(d.pid)),
            reason: "denied by policy".into(),
            for_secs: REACTIVE_GRANT.min(max).as_secs(),
            created_ms: now,
            expires_ms: now + self.config.request_ttl.0.as_millis() as u64,
            denials: 1,
            decided_by: None,
            decision_reason: None,
            decided_ms: None,
        };
        let view = request.view();
        self.notify("requested", &view, None);
        cx.record("approval", json!({"event": "requested", "request": view}));
        self.store.requests.insert(request.id, request);
        self.save();
    }

    /// The cgroup whose binding governs cgroup `leaf` (named `name`, as flow
    /// records name it): `leaf` itself or its nearest bound ancestor, with
    /// its name. `leaf` when neither is found (the cgroup is gone).
    fn bound_cgroup(cx: &Context, leaf: u64, name: Option<String>) -> (u64, Option<String>) {
        if matches!(cx.kernel().binding(leaf), Ok(Some(_))) {
            return (leaf, name);
        }
        let Some(rel) = name.as_deref().and_then(|n| n.strip_prefix('/')) else {
            return (leaf, name);
        };
        let mount = cx.hierarchy().mount().to_path_buf();
        let mut path = mount.join(rel);
        while let Some(parent) = path.parent().map(std::path::Path::to_path_buf) {
            if !parent.starts_with(&mount) || parent == path {
                break;
            }
            if let Ok(id) = crate::host::cgroup::id_of(&parent)
                && matches!(cx.kernel().binding(id), Ok(Some(_)))
            {
                return (id, Some(cx.hierarchy().display_name(&parent)));
            }
            path = parent;
        }
        (leaf, name)
    }

    /// Live grants, for `status`.
    pub(super) fn grant_status(&self) -> Vec<ApprovalView> {
        self.store.grants().map(Approval::view).collect()
    }

    /// After a reload: the new `[approvals]` and `[groups]` (the state
    /// folder stays the one the agent started with).
    pub(super) fn reconfigure(&mut self, cx: &Context, config: &Config) {
        let mut approvals = config.file.approvals.clone();
        approvals.state_dir = self.config.state_dir.clone();
        self.config = approvals;
        self.groups = user_groups(config);
        if self.sync_grants(cx) {
            self.save();
        }
    }
}

/// A request nobody made, to word an outsider's refusal the same whether
/// or not the id exists.
fn dummy() -> Approval {
    Approval {
        id: 0,
        state: Stage::Pending,
        origin: Origin::Proactive,
        policy: String::new(),
        job: None,
        cgroup: None,
        cgroup_id: None,
        slot: 0,
        to: Destination::Prefix(Prefix::host(std::net::IpAddr::from([0, 0, 0, 0]))),
        regions: Vec::new(),
        resolved: Default::default(),
        port: 0,
        requested_by: Person {
            uid: u32::MAX,
            user: None,
            pid: None,
            etcd_user: None,
        },
        reason: String::new(),
        for_secs: 0,
        created_ms: 0,
        expires_ms: 0,
        denials: 0,
        decided_by: None,
        decision_reason: None,
        decided_ms: None,
    }
}
