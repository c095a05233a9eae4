//! Events the kernel could not queue: a full ring buffer never blocks a
//! connection, it counts the drop per policy slot (`counter::EVENTS_DROPPED`,
//! pinned with the other maps). The agent turns each rise of those counters
//! into a `lost` record with the count, so the log never misses a decision
//! silently: flow records plus lost counts add up to the decisions.
//!
//! The counters outlive the agent (they are pinned), so what was already
//! reported is kept in a small state file beside the log
//! (`<audit_log>.state`): a restarted agent reports only the drops that came
//! after, including those while no agent read the ring buffer. The state
//! names the counters map (its id, and the boot): new pins start from zero.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use geowall_common::{MAX_POLICIES, counter};
use serde::{Deserialize, Serialize};

use crate::kernel::{CounterReader, Pins};

/// What was reported, as kept in the state file.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Reported {
    boot_id: String,
    map_id: u32,
    /// slot → drops reported so far.
    dropped: BTreeMap<u32, u64>,
}

/// New drops of one policy slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drops {
    pub slot: u32,
    /// Events lost since the last report.
    pub count: u64,
    /// Events lost in all (the kernel's counter).
    pub total: u64,
}

/// Turns the kernel's drop counters into reports.
pub struct LostTracker {
    reader: Option<CounterReader>,
    state_path: Option<PathBuf>,
    reported: Reported,
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

impl LostTracker {
    /// Opens the counters under `bpffs`; `state_path` keeps what was
    /// reported across restarts (None: every drop counted so far is new).
    pub fn open(bpffs: &Path, state_path: Option<PathBuf>) -> Self {
        let reader = CounterReader::open(&Pins::new(bpffs))
            .inspect_err(|e| tracing::error!(error = %crate::vocab::error::Chain(e), "cannot read the kernel's drop counters: lost events will not be recorded"))
            .ok();
        let boot = boot_id();
        let map_id = reader.as_ref().map_or(0, CounterReader::id);
        let saved = state_path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<Reported>(&b).ok())
            .filter(|r| r.boot_id == boot && r.map_id == map_id && map_id != 0);
        Self {
            reader,
            state_path,
            reported: saved.unwrap_or(Reported {
                boot_id: boot,
                map_id,
                dropped: BTreeMap::new(),
            }),
        }
    }

    /// The drops counted since the last call, for `slots` (the policy slots
    /// in use) and the no-policy row.
    pub fn poll(&mut self, slots: impl IntoIterator<Item = u32>) -> Vec<Drops> {
        let Some(reader) = &self.reader else {
            return Vec::new();
        };
        let mut rows: Vec<u32> = slots.into_iter().filter(|s| *s < MAX_POLICIES).collect();
        rows.extend(self.reported.dropped.keys().copied());
        rows.push(MAX_POLICIES);
        rows.sort_unstable();
        rows.dedup();
        let mut out = Vec::new();
        for slot in rows {
            let Some(row) = reader.row(slot) else {
                continue;
            };
            let total = row[counter::EVENTS_DROPPED];
            let seen = self.reported.dropped.get(&slot).copied().unwrap_or(0);
            if total > seen {
                out.push(Drops {
                    slot,
                    count: total - seen,
                    total,
                });
            }
        }
        for d in &out {
            self.reported.dropped.insert(d.slot, d.total);
        }
        if !out.is_empty() {
            self.save();
        }
        out
    }

    /// Writes what was reported to the state file.
    pub fn save(&self) {
        let Some(path) = &self.state_path else {
            return;
        };
        let tmp = path.with_extension("state.tmp");
        let text = serde_json::to_vec(&self.reported).expect("plain data");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
            tracing::warn!(file = %path.display(), error = %e, "cannot save the lost-event state");
        }
    }

    /// The counters, for the metrics.
    pub fn reader(&self) -> Option<&CounterReader> {
        self.reader.as_ref()
    }
}

/// The state file of the log at `log_path` (None for standard output).
pub fn state_path(log_path: &Path) -> Option<PathBuf> {
    (log_path != Path::new("-")).then(|| {
        let mut name = log_path.as_os_str().to_owned();
        name.push(".state");
        PathBuf::from(name)
    })
}
