//! Names for the ids in flow events: policy slots, region ids, cgroup ids.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use crate::{
    audit::{MapSource, Resolver},
    config::AuditConfig,
    dns::learned::LearnedTable,
    host::cgroup::{Hierarchy, IdResolver},
    regions::CompiledMap,
};

/// Paths of unregistered cgroups remembered at most (it starts over beyond).
const PATHS_KEPT: usize = 100_000;
/// How long the names of an ended job's cgroup are kept: events of its last
/// moments may still be in the ring buffer.
const KEEP_ENDED: Duration = Duration::from_secs(600);

/// Shared by the agent (which updates it on every table switch and job
/// change) and the event reader.
#[derive(Debug, Default, Clone)]
pub(super) struct NameTable {
    pub policies: Vec<Option<String>>,
    pub regions: Vec<Option<String>>,
    /// cgroup id → job name, for job cgroups (kept after the job ends).
    pub jobs: HashMap<u64, String>,
    /// cgroup id → path relative to the hierarchy (kept after removal).
    pub cgroups: HashMap<u64, String>,
    /// Job cgroups that ended, oldest first.
    ended: VecDeque<(Instant, u64)>,
    /// The maps of the table epochs in force now and just before (events of
    /// the old epoch may still be in the ring buffer), with their sources.
    maps: VecDeque<(u64, Arc<CompiledMap>, Arc<[MapSource]>)>,
    /// Policies with `log_allowed = "first"`.
    pub log_first: HashSet<String>,
    /// `[audit]` in force.
    pub audit: Arc<AuditConfig>,
    /// The tables in force, for the metrics.
    pub installed: Option<Installed>,
    /// What each job resolved (`None`: the forwarder is off).
    pub learned: Option<Arc<Mutex<LearnedTable>>>,
    /// `[agent] nat64`.
    pub nat64: Vec<(Ipv6Addr, u8)>,
}

/// What the last table switch installed.
#[derive(Debug, Clone)]
pub(super) struct Installed {
    pub epoch: u64,
    pub at: SystemTime,
    /// Compile and install time.
    pub load_time: Duration,
    pub ranges: (usize, usize),
    pub trie_entries: (usize, usize),
}

impl NameTable {
    /// Forgets every map but the newest: called once the ring buffer has
    /// been drained after a switch (no event of an older epoch can come).
    pub(super) fn forget_old_maps(&mut self) {
        while self.maps.len() > 1 {
            self.maps.pop_front();
        }
    }

    /// Whether maps of older epochs are still kept.
    pub(super) fn has_old_maps(&self) -> bool {
        self.maps.len() > 1
    }

    /// Records the map of table epoch `epoch` and its sources; keeps the
    /// previous one.
    pub(super) fn map_installed(
        &mut self,
        epoch: u64,
        map: Arc<CompiledMap>,
        sources: Vec<MapSource>,
    ) {
        self.maps.retain(|(e, _, _)| *e != epoch);
        self.maps.push_back((epoch, map, sources.into()));
        while self.maps.len() > 2 {
            self.maps.pop_front();
        }
    }

    /// Notes that the job cgroup `id` is gone; its names are forgotten once
    /// [`KEEP_ENDED`] has passed.
    pub(super) fn job_ended(&mut self, id: u64) {
        let now = Instant::now();
        self.ended.push_back((now, id));
        while self
            .ended
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > KEEP_ENDED)
        {
            if let Some((_, old)) = self.ended.pop_front() {
                self.jobs.remove(&old);
                self.cgroups.remove(&old);
            }
        }
    }
}

/// The event reader's resolver: the shared table plus the cgroup paths the
/// reader looked up itself.
pub(super) struct EventNames<'a> {
    pub table: &'a NameTable,
    pub paths: &'a CgroupPaths,
    pub host: &'a str,
}

impl Resolver for EventNames<'_> {
    fn policy(&self, slot: u16) -> Option<&str> {
        self.table.policies.get(usize::from(slot))?.as_deref()
    }

    fn region(&self, id: u16) -> Option<&str> {
        self.table.regions.get(usize::from(id))?.as_deref()
    }

    fn map(&self, epoch: u64) -> Option<&CompiledMap> {
        self.table
            .maps
            .iter()
            .find(|(e, _, _)| *e == epoch)
            .map(|(_, m, _)| m.as_ref())
    }

    fn map_sources(&self, epoch: u64) -> Option<&[MapSource]> {
        self.table
            .maps
            .iter()
            .find(|(e, _, _)| *e == epoch)
            .map(|(_, _, s)| s.as_ref())
    }

    fn logs_first(&self, slot: u16) -> bool {
        !self.table.log_first.is_empty()
            && self
                .policy(slot)
                .is_some_and(|p| self.table.log_first.contains(p))
    }

    fn named_slots(&self) -> Vec<u32> {
        self.table
            .policies
            .iter()
            .enumerate()
            .filter(|(_, n)| n.is_some())
            .map(|(i, _)| i as u32)
            .collect()
    }

    fn cgroup(&self, id: u64) -> Option<&str> {
        self.table
            .cgroups
            .get(&id)
            .or_else(|| self.paths.known.get(&id))
            .map(String::as_str)
    }

    fn job(&self, id: u64) -> Option<&str> {
        self.table.jobs.get(&id).map(String::as_str)
    }

    fn host(&self) -> &str {
        self.host
    }

    fn resolved(&self, scope: u64, addr: IpAddr) -> Option<(Vec<String>, u64)> {
        let learned = self.table.learned.as_ref()?.lock().expect("learned lock");
        let (names, at) = learned.names_of(scope, addr)?;
        Some((names.into_iter().map(str::to_owned).collect(), at))
    }

    fn nat64(&self) -> &[(Ipv6Addr, u8)] {
        &self.table.nat64
    }
}

/// Paths of the cgroup ids nobody registered (cgroups the agent did not
/// make: children of bound cgroups, the host's own), looked up by id.
pub(super) struct CgroupPaths {
    hierarchy: Hierarchy,
    resolver: Option<IdResolver>,
    known: HashMap<u64, String>,
}

impl CgroupPaths {
    pub(super) fn new(hierarchy: Hierarchy) -> Self {
        let resolver = IdResolver::open(&hierarchy)
            .inspect_err(
                |e| tracing::warn!(error = %crate::vocab::error::Chain(e), "flow records will name unregistered cgroups by id"),
            )
            .ok();
        Self {
            hierarchy,
            resolver,
            known: HashMap::new(),
        }
    }

    /// Looks up the path of cgroup `id` unless `table` or an earlier lookup
    /// knows it. A cgroup that is already gone stays unnamed.
    pub(super) fn learn(&mut self, id: u64, table: &NameTable) {
        if table.cgroups.contains_key(&id) || self.known.contains_key(&id) {
            return;
        }
        let Some(path) = self.resolver.as_ref().and_then(|r| r.path_of(id)) else {
            return;
        };
        if self.known.len() >= PATHS_KEPT {
            self.known.clear();
        }
        self.known.insert(id, self.hierarchy.display_name(&path));
    }
}

/// The host's name, for flow records.
pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
