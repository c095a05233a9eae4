//! Reloads the map when a source file changes: every source's file is
//! checked every two seconds (size, modification time, inode: an atomic
//! rename counts); a change that has settled for one check triggers a
//! reload. A reload that fails keeps the tables in force and is not retried
//! until a file changes again.

use std::{os::unix::fs::MetadataExt, path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::{Mutex, watch};

use super::{State, stop::Stop};
use crate::regions::sources::{Kind, Spec};

/// What identifies a file's version.
pub type Stamp = Option<(u64, i64, i64, u64)>;

pub fn stamp(path: &std::path::Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
}

/// The stamps of the files of `specs` (the built-in map has none).
pub fn stamps(specs: &[Spec]) -> Vec<(PathBuf, Stamp)> {
    specs
        .iter()
        .filter(|s| s.kind != Kind::Builtin)
        .map(|s| (s.path.clone(), stamp(&s.path)))
        .collect()
}

const PERIOD: Duration = Duration::from_secs(2);

pub async fn watch_sources(state: Arc<Mutex<State>>, mut stop: watch::Receiver<Stop>) {
    let mut tick = tokio::time::interval(PERIOD);
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
