//! From kernel events to audit records: process context, the
//! `log_allowed = "first"` windows, lost-event reports, and the counts the
//! metrics show.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use geowall_common::{FlowEvent, MAX_POLICIES, MAX_TAGS, verdict};
use serde_json::json;

use super::{
    first_allowed::{FirstWindows, Key},
    lost::LostTracker,
    mask::Masker,
    process::ProcessCache,
    refused::Refused,
};
use crate::{
    audit::{
        AuditLog, FlowRecord, Resolver,
        record::{EventRecord, destination},
    },
    config::AuditConfig,
    tables::codes::verdict_name,
    vocab::clock::{self as time, BootClock},
};

/// Decisions seen, by policy slot, verdict and the destination's tags (as
/// the kernel named them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatKey {
    pub slot: u16,
    pub verdict: u8,
    pub ntags: u8,
    pub tags: [u16; MAX_TAGS],
}

/// What the pipeline saw, for the metrics.
#[derive(Debug, Default)]
pub struct FlowStats {
    pub events: Mutex<HashMap<StatKey, u64>>,
    /// Allowed connections counted in an `allowed` record instead of
    /// recorded one by one.
    pub repeats: AtomicU64,
    /// Events the kernel dropped (reported in `lost` records), by slot.
    pub lost: Mutex<HashMap<u32, u64>>,
}

/// Labels of distinct event kinds kept at most.
const MAX_STAT_KEYS: usize = 10_000;

/// The event reader's state.
pub struct Pipeline {
    clock: BootClock,
    procs: ProcessCache,
    first: FirstWindows,
    lost: LostTracker,
    stats: Arc<FlowStats>,
    local: HashMap<StatKey, u64>,
    settings: Option<Arc<AuditConfig>>,
}

impl Pipeline {
    /// `bpffs` holds the pinned counters; `log_path` is `[agent] audit_log`.
    pub fn new(audit: &AuditConfig, bpffs: &Path, log_path: &Path, stats: Arc<FlowStats>) -> Self {
        let masker = Masker::new(audit).unwrap_or_else(|e| {
            tracing::error!(pattern = e.index, error = %e.message, "bad [audit] mask pattern; using the defaults");
            Masker::new(&AuditConfig::default()).expect("defaults")
        });
        Self {
            clock: BootClock::now(),
            procs: ProcessCache::new(Arc::new(masker)),
            first: FirstWindows::new(audit.allowed_window.0),
            lost: LostTracker::open(bpffs, super::lost::state_path(log_path)),
            stats,
            local: HashMap::new(),
            settings: None,
        }
    }

    /// Applies `[audit]` as a reload left it (cheap when unchanged).
    pub fn configure(&mut self, audit: &Arc<AuditConfig>) {
        if self
            .settings
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, audit))
        {
            return;
        }
        match Masker::new(audit) {
            Ok(m) => self.procs.set_masker(Arc::new(m)),
            Err(e) => {
                tracing::error!(pattern = e.index, error = %e.message, "bad [audit] mask pattern; masking unchanged")
            }
        }
        self.first.set_window(audit.allowed_window.0);
        self.settings = Some(Arc::clone(audit));
    }

    /// Records one decision; a refused outbound flow is returned as well,
    /// for the job to be told.
    pub fn event(
        &mut self,
        ev: &FlowEvent,
        names: &dyn Resolver,
        log: &mut AuditLog,
    ) -> Option<Refused> {
        let key = StatKey {
            slot: ev.policy,
            verdict: ev.verdict,
            ntags: ev.tags.count.min(MAX_TAGS as u8),
            tags: ev.tags.regions,
        };
        *self.local.entry(key).or_default() += 1;
        let unix_ns = self.clock.unix_ns(ev.time_ns);
        let first_key =
            (ev.verdict == verdict::ALLOW && names.logs_first(ev.policy)).then_some(Key {
                slot: ev.policy,
                cgroup_id: ev.cgroup_id,
                family: ev.family,
                addr: ev.addr,
                port: ev.port,
                proto: ev.proto,
            });
        if let Some(k) = first_key
            && !self
                .first
                .observe(k, Instant::now(), || time::rfc3339(unix_ns))
        {
            self.stats.repeats.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let process = self.procs.lookup(ev.tgid, ev.pid, &ev.comm, ev.time_ns);
        let user = self.procs.user(ev.uid);
        let mut record =
            FlowRecord::from_event(ev, unix_ns, names, process.as_deref(), user.as_deref());
        match log.append(&mut record) {
            Ok(seq) => {
                if let Some(k) = first_key {
                    let about = json!({
                        "policy": record.policy,
                        "job": record.job,
                        "cgroup": record.cgroup,
                        "verdict": verdict_name(ev.verdict),
                        "dst": destination(ev),
                        "dport": record.dport,
                        "proto": record.proto,
                        "tags": record.tags,
                    });
                    self.first.recorded(&k, seq, about);
                }
            }
            Err(e) if crate::audit::log::is_lost(&e) => {}
            Err(e) => tracing::error!(error = %e, "cannot write the audit log"),
        }
        Refused::of(&record)
    }

    /// The periodic work (the agent calls it every 100 ms): closes `first`
    /// windows, reports lost events, publishes counts.
    pub fn tick(&mut self, names: &dyn Resolver, log: &mut AuditLog) {
        self.clock = BootClock::now();
        let closed = self.first.due(Instant::now());
        self.write_allowed(closed, log);
        self.report_lost(names, log);
        self.publish();
    }

    /// The last work at shutdown: every open window closes, drops are
    /// reported.
    pub fn finish(&mut self, names: &dyn Resolver, log: &mut AuditLog) {
        let closed = self.first.close_all();
        self.write_allowed(closed, log);
        self.report_lost(names, log);
        self.publish();
    }

    fn write_allowed(&mut self, closed: Vec<serde_json::Value>, log: &mut AuditLog) {
        for detail in closed {
            if let Err(e) = log.append(&mut EventRecord::new("allowed", detail))
                && !crate::audit::log::is_lost(&e)
            {
                tracing::error!(error = %e, "cannot write the audit log");
            }
        }
    }

    fn report_lost(&mut self, names: &dyn Resolver, log: &mut AuditLog) {
        let drops = self.lost.poll(names.named_slots());
        if drops.is_empty() {
            return;
        }
        let mut lost = self.stats.lost.lock().expect("stats lock");
        for d in drops {
            let policy = (d.slot < MAX_POLICIES)
                .then(|| names.policy(d.slot as u16).map(str::to_owned))
                .flatten();
            tracing::warn!(
                policy = policy.as_deref().unwrap_or("-"),
                count = d.count,
                "the kernel dropped flow events: the ring buffer was full"
            );
            let detail = json!({
                "policy": policy,
                "slot": d.slot,
                "count": d.count,
                "total": d.total,
                "reason": "ring buffer full",
            });
            if let Err(e) = log.append(&mut EventRecord::new("lost", detail))
                && !crate::audit::log::is_lost(&e)
            {
                tracing::error!(error = %e, "cannot write the audit log");
            }
            *lost.entry(d.slot).or_default() += d.count;
        }
    }

    fn publish(&mut self) {
        if self.local.is_empty() {
            return;
        }
        let mut shared = self.stats.events.lock().expect("stats lock");
        for (k, n) in self.local.drain() {
            if shared.len() >= MAX_STAT_KEYS && !shared.contains_key(&k) {
                let other = StatKey {
                    ntags: u8::MAX,
                    tags: [0; MAX_TAGS],
                    ..k
                };
                *shared.entry(other).or_default() += n;
            } else {
                *shared.entry(k).or_default() += n;
            }
        }
    }

    /// Open `first` windows.
    pub fn open_windows(&self) -> usize {
        self.first.len()
    }
}
