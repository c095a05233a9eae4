//! What the parts of the agent's state share.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex, RwLock},
};

use super::{dns::Dns, grants::GrantBook, names::NameTable};
use crate::{audit::AuditLog, host::cgroup::Hierarchy, kernel::Kernel, plan::Plan};

/// What the parts of the state share ([`super::jobs::Jobs`],
/// [`super::approvals::Approvals`]): the plan and
/// the kernel in force, the policy slots, the cgroup hierarchy, the audit
/// log and the names the event reader uses. The others read it; only
/// [`super::state::State`], which owns it, changes it.
pub(super) struct Context {
    pub(super) hierarchy: Hierarchy,
    pub(super) plan: Plan,
    pub(super) kernel: Kernel,
    /// Policy name → slot, of the tables in force.
    pub(super) slots: BTreeMap<String, u32>,
    pub(super) log: Arc<Mutex<AuditLog>>,
    pub(super) names: Arc<RwLock<NameTable>>,
    /// The DNS forwarder's state (`None`: `[dns] enabled = false`).
    pub(super) dns: Option<Arc<Dns>>,
    /// The grants in force and the grant tries (shared with the forwarder).
    pub(super) grants: Arc<GrantBook>,
}

impl Context {
    pub(super) fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    pub(super) fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    pub(super) fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The governed cgroup.
    pub(super) fn governed(&self) -> &Path {
        &self.plan.governed
    }

    pub(super) fn dns(&self) -> Option<&Arc<Dns>> {
        self.dns.as_ref()
    }

    pub(super) fn grants(&self) -> &GrantBook {
        &self.grants
    }

    pub(super) fn names(&self) -> &RwLock<NameTable> {
        &self.names
    }

    pub(super) fn log(&self) -> &Mutex<AuditLog> {
        &self.log
    }

    /// The audit log, for writers outside the lock (the webhook sender).
    pub(super) fn audit_log(&self) -> Arc<Mutex<AuditLog>> {
        Arc::clone(&self.log)
    }

    /// Policy name → slot, of the tables in force.
    pub(super) fn slots(&self) -> &BTreeMap<String, u32> {
        &self.slots
    }

    pub(super) fn slot(&self, policy: &str) -> Option<u32> {
        self.slots.get(policy).copied()
    }

    /// The name of the policy in `slot` (a slot the tables in force lack
    /// fails closed in the kernel; it is named by number).
    pub(super) fn slot_name(&self, slot: u32) -> String {
        self.slots
            .iter()
            .find(|(_, s)| **s == slot)
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| format!("slot {slot}"))
    }

    /// Writes a non-flow record to the audit log.
    pub(super) fn record(&self, kind: &str, detail: serde_json::Value) {
        let mut log = self.log.lock().expect("log lock");
        if let Err(e) = log.event(kind, detail)
            && !crate::audit::log::is_lost(&e)
        {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    /// Lets flow records name job `job` and its cgroup (`cgroup`, whose id
    /// is `cgroup_id`).
    pub(super) fn name_job(&self, job: &str, cgroup_id: u64, cgroup: &Path) {
        let mut names = self.names.write().expect("names lock");
        names.jobs.insert(cgroup_id, job.to_owned());
        names
            .cgroups
            .insert(cgroup_id, self.hierarchy.display_name(cgroup));
    }
}
