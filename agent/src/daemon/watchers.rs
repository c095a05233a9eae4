//! The agent's watchers, each a task of its own:
//!
//! - map sources: every source's file is checked every two seconds (size,
//!   modification time, inode: an atomic rename counts); a change that has
//!   settled for one check triggers a reload. A reload that fails keeps the
//!   tables in force and is not retried until a file changes again.
//! - systemd units: while a policy binds units, the governed subtree is
//!   scanned every [`UNIT_PERIOD`] for the cgroups of units that started
//!   (or ended) since, and the bindings follow (see [`crate::host::units`]).

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::{Mutex, watch};

use super::{state::State, stop::Stop};
use crate::host::stamp::{Stamp, stamp};

/// How often the map sources' files are checked.
const SOURCE_PERIOD: Duration = Duration::from_secs(2);
/// How often the subtree is scanned for new unit cgroups.
pub(super) const UNIT_PERIOD: Duration = Duration::from_millis(250);

/// Reloads the map when a source file changes.
pub(super) async fn watch_sources(state: Arc<Mutex<State>>, mut stop: watch::Receiver<Stop>) {
    let mut tick = tokio::time::interval(SOURCE_PERIOD);
    // The stamps seen on the previous check, and those the tables in force
    // were built from (or a failed reload tried).
    let mut previous: Vec<(PathBuf, Stamp)> = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let loaded = state.lock().await.source_stamps().to_vec();
        let now: Vec<(PathBuf, Stamp)> =
            loaded.iter().map(|(p, _)| (p.clone(), stamp(p))).collect();
        let changed = now != loaded;
        let settled = now == previous;
        previous = now;
        if !(changed && settled) {
            continue;
        }
        let names: Vec<String> = previous
            .iter()
            .zip(&loaded)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.0.display().to_string())
            .collect();
        let mut s = state.lock().await;
        match s.reload(
            "map source changed",
            Some(serde_json::json!({ "changed": names })),
        ) {
            Ok(epoch) => {
                tracing::info!(epoch, files = ?names, "map source changed: tables switched")
            }
            Err(e) => {
                // Not retried until a file changes again.
                s.set_source_stamps(previous.clone());
                tracing::error!(
                    files = ?names,
                    error = %crate::vocab::error::chain(&e),
                    "map source changed but the new map was refused; the tables in force stay in force"
                );
            }
        }
    }
}

/// Re-scans for unit cgroups every [`UNIT_PERIOD`] while a policy names
/// units.
pub(super) async fn watch_units(state: Arc<Mutex<State>>, mut stop: watch::Receiver<Stop>) {
    let mut tick = tokio::time::interval(UNIT_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let mut s = state.lock().await;
        if s.has_unit_bindings() {
            s.refresh_bindings();
        }
    }
}
