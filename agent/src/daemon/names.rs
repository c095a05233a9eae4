//! Names for the ids in flow events: policy slots, region ids, cgroup ids.

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{cgroup, cgroup::Hierarchy, flows::Resolver, regions::CompiledMap};

/// How many cgroup folders one rescan visits at most.
const SCAN_LIMIT: usize = 20_000;
/// Paths a scanner remembers at most (it starts over beyond).
const SCAN_MEMORY: usize = 100_000;
/// How long the names of an ended job's cgroup are kept: events of its last
/// moments may still be in the ring buffer.
const KEEP_ENDED: Duration = Duration::from_secs(600);
/// Minimum time between two rescans triggered by unknown ids.
const SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// Shared by the agent (which updates it on every table switch and job
/// change) and the event reader.
#[derive(Debug, Default, Clone)]
pub struct NameTable {
    pub policies: Vec<Option<String>>,
    pub regions: Vec<Option<String>>,
    /// cgroup id → job name, for job cgroups (kept after the job ends).
    pub jobs: HashMap<u64, String>,
    /// cgroup id → path relative to the hierarchy (kept after removal).
    pub cgroups: HashMap<u64, String>,
    /// Job cgroups that ended, oldest first.
    ended: VecDeque<(Instant, u64)>,
    /// The maps of the table epochs in force now and just before (events of
    /// the old epoch may still be in the ring buffer).
    maps: VecDeque<(u64, Arc<CompiledMap>)>,
}

impl NameTable {
    /// Forgets every map but the newest: called once the ring buffer has
    /// been drained after a switch (no event of an older epoch can come).
    pub fn forget_old_maps(&mut self) {
        while self.maps.len() > 1 {
            self.maps.pop_front();
        }
    }

    /// Whether maps of older epochs are still kept.
    pub fn has_old_maps(&self) -> bool {
        self.maps.len() > 1
    }

    /// Records the map of table epoch `epoch`; keeps the previous one.
    pub fn map_installed(&mut self, epoch: u64, map: Arc<CompiledMap>) {
        self.maps.retain(|(e, _)| *e != epoch);
        self.maps.push_back((epoch, map));
        while self.maps.len() > 2 {
            self.maps.pop_front();
        }
    }

    /// Notes that the job cgroup `id` is gone; its names are forgotten once
    /// [`KEEP_ENDED`] has passed.
    pub fn job_ended(&mut self, id: u64) {
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

/// The event reader's resolver: the shared table plus a cgroup scanner.
pub struct EventNames<'a> {
    pub table: &'a NameTable,
    pub scanner: &'a mut CgroupScanner,
    pub host: &'a str,
}

impl Resolver for EventNames<'_> {
    fn policy(&self, slot: u16) -> Option<String> {
        self.table
            .policies
            .get(usize::from(slot))
            .cloned()
            .flatten()
    }

    fn region(&self, id: u16) -> Option<String> {
        self.table.regions.get(usize::from(id)).cloned().flatten()
    }

    fn map(&self, epoch: u64) -> Option<&CompiledMap> {
        self.table
            .maps
            .iter()
            .find(|(e, _)| *e == epoch)
            .map(|(_, m)| m.as_ref())
    }

    fn cgroup(&mut self, id: u64) -> (String, Option<String>) {
        let job = self.table.jobs.get(&id).cloned();
        let path = self
            .table
            .cgroups
            .get(&id)
            .cloned()
            .or_else(|| self.scanner.lookup(id))
            .unwrap_or_else(|| format!("cgroup#{id}"));
        (path, job)
    }

    fn host(&self) -> &str {
        self.host
    }
}

/// Finds the path of cgroup ids that nobody registered, by walking the
/// governed subtree (rate limited); remembers what it found.
pub struct CgroupScanner {
    hierarchy: Hierarchy,
    root: PathBuf,
    known: HashMap<u64, String>,
    last_scan: Option<Instant>,
}

impl CgroupScanner {
    pub fn new(hierarchy: Hierarchy, root: PathBuf) -> Self {
        Self {
            hierarchy,
            root,
            known: HashMap::new(),
            last_scan: None,
        }
    }

    pub fn lookup(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.known.get(&id) {
            return Some(p.clone());
        }
        if self.last_scan.is_some_and(|t| t.elapsed() < SCAN_INTERVAL) {
            return None;
        }
        self.scan();
        self.known.get(&id).cloned()
    }

    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        if self.known.len() > SCAN_MEMORY {
            self.known.clear();
        }
        let mut stack = vec![self.root.clone()];
        let mut visited = 0;
        while let Some(dir) = stack.pop() {
            visited += 1;
            if visited > SCAN_LIMIT {
                break;
            }
            if let Ok(id) = cgroup::id_of(&dir) {
                self.known.insert(id, self.hierarchy.display_name(&dir));
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
}

/// The host's name, for flow records.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
