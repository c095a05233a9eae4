//! The flow event reader: drains the kernel's ring buffer into the event
//! pipeline and the audit log, and hands denials to the approvals.

use std::{
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use geowall_common::FlowEvent;
use tokio::{io::unix::AsyncFd, sync::watch};

use super::{
    approvals,
    names::{self, NameTable},
    refusals::Board,
    stop::Stop,
};
use crate::{audit::AuditLog, events::Pipeline};

/// Where the reader hands refused flows, besides the audit log.
pub(super) struct Outlets {
    /// The reactive approvals (a full channel drops the denial; the next
    /// one asks again).
    pub denials: tokio::sync::mpsc::Sender<approvals::Denial>,
    /// The refusals the jobs' `geowall exec` tells.
    pub refusals: Arc<Board>,
}

/// Reads flow events until told to stop, then drains what is left.
pub(super) async fn read_events(
    ring: RingBuf<MapData>,
    log: Arc<Mutex<AuditLog>>,
    names: Arc<RwLock<NameTable>>,
    mut paths: names::CgroupPaths,
    mut stop_rx: watch::Receiver<Stop>,
    mut pipeline: Pipeline,
    outlets: Outlets,
) -> std::io::Result<()> {
    let Outlets { denials, refusals } = outlets;
    let host = names::hostname();
    // SAFETY: the ring buffer owns its fd, which stays open as long as the
    // AsyncFd that owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register(ring) }.map_err(|e| e.into_parts().1)?;
    // The programs wake this reader at most once per 10 ms per CPU
    // (`WAKE_INTERVAL_NS`): the tail of a burst is read on this tick.
    let mut tick = tokio::time::interval(TICK);
    let mut reader = Reader {
        log: &log,
        names: &names,
        paths: &mut paths,
        host: &host,
        pipeline: &mut pipeline,
        denials: &denials,
        refusals: &refusals,
    };
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                // A bounded batch per turn: the locks are released between
                // batches, so a table switch never waits behind a flood.
                match reader.drain(guard.get_inner_mut()) {
                    Drained::Empty => {
                        guard.clear_ready();
                        reader.forget_old_maps();
                    }
                    Drained::More => {
                        drop(guard);
                        tokio::task::yield_now().await;
                    }
                }
            }
            _ = tick.tick() => {
                // Also catches up where a wake-up was missed; a quiet ring
                // after a switch lets the old map go.
                reader.flush();
                for _ in 0..TICK_BATCHES {
                    match reader.drain(fd.get_mut()) {
                        Drained::Empty => {
                            reader.forget_old_maps();
                            break;
                        }
                        Drained::More => {}
                    }
                }
                reader.tick();
                reader.flush();
            }
            // A job's `geowall exec` waits for its last refusals.
            _ = refusals.poked() => {
                for _ in 0..TICK_BATCHES {
                    if reader.drain(fd.get_mut()) != Drained::More {
                        break;
                    }
                }
            }
            _ = stop_rx.changed() => {
                loop {
                    match reader.drain(fd.get_mut()) {
                        Drained::Empty => break,
                        Drained::More => {}
                    }
                }
                reader.finish();
                reader.log.lock().expect("log lock").flush()?;
                return Ok(());
            }
        }
    }
}

/// Events handled per batch.
const BATCH: usize = 4096;
/// The reader's timer: housekeeping, log flushes, and the events no wake-up
/// announced.
const TICK: Duration = Duration::from_millis(50);
/// Batches a tick may drain before it lets the other tasks run.
const TICK_BATCHES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drained {
    /// The ring buffer is empty.
    Empty,
    /// A batch was handled; more may wait.
    More,
}

/// The event reader: the pipeline and what it needs.
struct Reader<'a> {
    log: &'a Mutex<AuditLog>,
    names: &'a RwLock<NameTable>,
    paths: &'a mut names::CgroupPaths,
    host: &'a str,
    pipeline: &'a mut Pipeline,
    /// Where denied connections go (the reactive approvals path).
    denials: &'a tokio::sync::mpsc::Sender<approvals::Denial>,
    /// Where refused flows go for the jobs' `geowall exec` to tell.
    refusals: &'a Board,
}

impl Reader<'_> {
    /// Turns up to [`BATCH`] events into records.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Drained {
        let table = self.names.read().expect("names lock");
        // A log that cannot be written holds records, then counts them as
        // lost: the ring is drained either way, so the kernel does not drop
        // events for a reason that is not its own.
        let mut log = self.log.lock().expect("log lock");
        self.pipeline.configure(&table.audit);
        for _ in 0..BATCH {
            let Some(item) = ring.next() else {
                self.refusals.drained();
                return Drained::Empty;
            };
            if item.len() < std::mem::size_of::<FlowEvent>() {
                continue;
            }
            // SAFETY: the kernel writes whole FlowEvents (plain data); the
            // item is at least that long; read_unaligned copes with any
            // alignment.
            let ev: FlowEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            drop(item);
            self.paths.learn(ev.cgroup_id, &table);
            let resolver = names::EventNames {
                table: &table,
                paths: self.paths,
                host: self.host,
            };
            if let Some(refused) = self.pipeline.event(&ev, &resolver, &mut log) {
                self.refusals.post(refused);
            }
            // A refused routing hop is no destination a grant could open.
            if ev.verdict == geowall_common::verdict::DENY
                && ev.hook != geowall_common::hook::SETSOCKOPT
                && let Some(dst) = crate::audit::record::judged(&ev)
            {
                use crate::audit::Resolver;
                let _ = self.denials.try_send(approvals::Denial {
                    slot: u32::from(ev.policy),
                    cgroup_id: ev.cgroup_id,
                    dst,
                    port: ev.port,
                    uid: ev.uid,
                    pid: ev.tgid,
                    cgroup: resolver.cgroup(ev.cgroup_id).map(str::to_owned),
                    name: (ev.scope != 0)
                        .then(|| resolver.resolved(ev.scope, dst))
                        .flatten()
                        .and_then(|(names, _)| names.into_iter().next()),
                });
            }
        }
        Drained::More
    }

    /// After a drained ring: maps of older epochs are no longer needed.
    fn forget_old_maps(&self) {
        if self.names.read().expect("names lock").has_old_maps() {
            self.names.write().expect("names lock").forget_old_maps();
        }
    }

    fn with_resolver(
        &mut self,
        f: impl FnOnce(&mut Pipeline, &dyn crate::audit::Resolver, &mut AuditLog),
    ) {
        let table = self.names.read().expect("names lock");
        let mut log = self.log.lock().expect("log lock");
        let resolver = names::EventNames {
            table: &table,
            paths: self.paths,
            host: self.host,
        };
        f(self.pipeline, &resolver, &mut log);
    }

    fn tick(&mut self) {
        self.with_resolver(|p, names, log| p.tick(names, log));
    }

    fn finish(&mut self) {
        self.with_resolver(|p, names, log| p.finish(names, log));
    }

    fn flush(&self) {
        if let Err(e) = self.log.lock().expect("log lock").flush() {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}
