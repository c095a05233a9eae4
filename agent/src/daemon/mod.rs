//! `geowall run`: the agent.
//!
//! Start-up: read and check the config, load the programs and (pinned)
//! maps, install the tables, bind cgroups, attach (or adopt pinned links),
//! then serve the control socket and turn flow events into audit records
//! until SIGINT or SIGTERM. SIGHUP (or `reload` on the socket) re-reads the
//! config; a bad config is reported and the tables in force stay in force.

pub mod approvals;
pub mod jobs;
mod names;
mod source_watch;
mod state;
mod units;
mod webhook;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use geowall_common::FlowEvent;
use thiserror::Error;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use crate::{
    audit::{AuditLog, Rotation},
    config::{Config, ConfigError},
    control::server,
    events::{FlowStats, Pipeline},
    host::cgroup::{CgroupError, Hierarchy},
    kernel::KernelError,
    plan::PlanError,
};

pub use names::{Installed, NameTable};
pub use state::{MapSnapshot, State};

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Layout(#[from] crate::tables::LayoutError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("audit log {path}: {source}")]
    AuditLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("approvals state {path}: {source}")]
    ApprovalsState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Options of `geowall run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
    /// On exit, detach every program and remove every pin (the demo does
    /// this); by default enforcement outlives the agent.
    pub detach_on_exit: bool,
    /// Refuse configs with an enforcing policy (at start and on reload).
    pub audit_only: bool,
}

/// Runs the agent until it is told to stop.
pub async fn run(opts: RunOptions) -> Result<(), DaemonError> {
    // Handlers first: once the control socket answers, a SIGTERM must stop
    // the agent cleanly rather than kill it with the default action.
    let signals = Signals::install().map_err(DaemonError::Signals)?;
    let config = Config::load(&opts.config)?;
    let hierarchy = Hierarchy::discover()?;
    let log_path = config.audit_log_path();
    let log = AuditLog::open(&log_path, Rotation::from(&config.file.audit)).map_err(|source| {
        DaemonError::AuditLog {
            path: log_path.clone(),
            source,
        }
    })?;
    let log_stats = log.stats();
    let log = Arc::new(Mutex::new(log));
    let metrics_listener = match config.metrics_address()? {
        Some(addr) => Some(
            crate::metrics::bind(addr)
                .await
                .map_err(|source| DaemonError::Metrics { addr, source })?,
        ),
        None => None,
    };
    let audit = config.file.audit.clone();
    let bpffs = config.bpffs_path();
    let socket_path = config.socket_path();
    let socket_err = |source| DaemonError::Socket {
        path: socket_path.clone(),
        source,
    };
    // Refuse early when another agent serves this socket; bind only once
    // the kernel side is up, so a failed start leaves no socket behind.
    server::ensure_free(&socket_path).map_err(socket_err)?;

    let names = Arc::new(RwLock::new(NameTable::default()));
    let (mut state, events) = State::start(
        opts.config.clone(),
        opts.audit_only,
        config,
        hierarchy.clone(),
        Arc::clone(&log),
        Arc::clone(&names),
    )?;
    let listener = match server::bind(&socket_path) {
        Ok(l) => l,
        Err(e) => {
            // The kernel side is up: leave it as a stop would.
            let _ = state.finish(opts.detach_on_exit);
            return Err(socket_err(e));
        }
    };
    tracing::info!(
        socket = %socket_path.display(),
        audit_log = %log_path.display(),
        "control socket and audit log open"
    );
    // Under systemd (Type=notify): ready once the socket answers.
    if let Err(e) = crate::host::notify::sd_notify("READY=1") {
        tracing::warn!(error = %e, "cannot tell systemd the agent is ready");
    }
    let (stop_tx, stop_rx) = watch::channel(None::<bool>);
    state.set_stopper(stop_tx.clone());
    state.start_notifier();
    let state = Arc::new(tokio::sync::Mutex::new(state));

    let flow_stats = Arc::new(FlowStats::default());
    // Denied flows go to the approvals on a channel of their own: the event
    // reader never waits for the state lock (a full channel drops the
    // denial; the next one asks again).
    let (denials_tx, mut denials_rx) = tokio::sync::mpsc::channel::<approvals::Denial>(1024);
    let reactive = {
        let state = Arc::clone(&state);
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    denial = denials_rx.recv() => match denial {
                        Some(d) => state.lock().await.denied(d),
                        None => break,
                    },
                    _ = stop_rx.changed() => break,
                }
            }
        })
    };
    let reader = {
        let log = Arc::clone(&log);
        let names = Arc::clone(&names);
        let stop_rx = stop_rx.clone();
        let paths = names::CgroupPaths::new(hierarchy.clone());
        let pipeline = Pipeline::new(&audit, &bpffs, &log_path, Arc::clone(&flow_stats));
        tokio::spawn(async move {
            if let Err(e) =
                read_events(events, log, names, paths, stop_rx, pipeline, denials_tx).await
            {
                tracing::error!(error = %e, "flow event reader stopped");
            }
        })
    };
    let metrics = metrics_listener.map(|listener| {
        let exporter = crate::metrics::Exporter::new(
            Arc::clone(&names),
            Arc::clone(&flow_stats),
            log_stats,
            &bpffs,
        );
        tokio::spawn(crate::metrics::serve(listener, exporter, stop_rx.clone()))
    });
    let server = tokio::spawn(server::serve(listener, Arc::clone(&state), stop_rx.clone()));
    let watcher = tokio::spawn(source_watch::watch_sources(
        Arc::clone(&state),
        stop_rx.clone(),
    ));
    let unit_watch = tokio::spawn(units::watch_units(Arc::clone(&state), stop_rx.clone()));
    let gc = {
        let state = Arc::clone(&state);
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let mut s = state.lock().await;
                        s.collect_jobs();
                        s.repair_links();
                        s.expire_approvals();
                    }
                    _ = stop_rx.changed() => break,
                }
            }
        })
    };

    let detach = wait_for_stop(&state, signals, stop_tx, stop_rx, opts.detach_on_exit).await;
    let _ = server.await;
    let _ = watcher.await;
    let _ = gc.await;
    let _ = unit_watch.await;
    let _ = reader.await;
    let _ = reactive.await;
    if let Some(m) = metrics {
        let _ = m.await;
    }
    let state = Arc::try_unwrap(state)
        .map_err(|_| DaemonError::Refused("agent state still shared at exit".into()))?
        .into_inner();
    let finished = state.finish(detach);
    let _ = std::fs::remove_file(&socket_path);
    finished
}

/// The agent's signal streams, installed before anything can reach it.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Waits for SIGINT/SIGTERM (or a `shutdown` request), handling SIGHUP
/// reloads meanwhile. Returns whether to detach on exit.
async fn wait_for_stop(
    state: &Arc<tokio::sync::Mutex<State>>,
    signals: Signals,
    stop_tx: watch::Sender<Option<bool>>,
    mut stop_rx: watch::Receiver<Option<bool>>,
    detach_on_exit: bool,
) -> bool {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = hup.recv() => {
                let mut s = state.lock().await;
                match s.reload("SIGHUP", None) {
                    Ok(epoch) => tracing::info!(epoch, "SIGHUP: config reloaded"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: reload refused; the tables in force stay in force"),
                }
            }
            changed = stop_rx.changed() => {
                if changed.is_err() { break; }
                if let Some(detach) = *stop_rx.borrow() {
                    return detach || detach_on_exit;
                }
            }
        }
    }
    let _ = stop_tx.send(Some(detach_on_exit));
    detach_on_exit
}

/// Reads flow events until told to stop, then drains what is left.
async fn read_events(
    ring: RingBuf<MapData>,
    log: Arc<Mutex<AuditLog>>,
    names: Arc<RwLock<NameTable>>,
    mut paths: names::CgroupPaths,
    mut stop_rx: watch::Receiver<Option<bool>>,
    mut pipeline: Pipeline,
    denials: tokio::sync::mpsc::Sender<approvals::Denial>,
) -> std::io::Result<()> {
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
                    // The disk is behind: the tick writes and drains.
                    Drained::Backlogged => guard.clear_ready(),
                    Drained::More => {
                        drop(guard);
                        tokio::task::yield_now().await;
                    }
                }
            }
            _ = tick.tick() => {
                // Also catches up where a wake-up was missed or the log was
                // backlogged; a quiet ring after a switch lets the old map go.
                reader.flush();
                for _ in 0..TICK_BATCHES {
                    match reader.drain(fd.get_mut()) {
                        Drained::Empty => {
                            reader.forget_old_maps();
                            break;
                        }
                        Drained::More => {}
                        Drained::Backlogged => break,
                    }
                }
                reader.tick();
                reader.flush();
            }
            _ = stop_rx.changed() => {
                loop {
                    match reader.drain(fd.get_mut()) {
                        Drained::Empty => break,
                        Drained::More => {}
                        Drained::Backlogged => reader.log.lock().expect("log lock").flush()?,
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
    /// Nothing taken: the log cannot write fast enough.
    Backlogged,
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
}

impl Reader<'_> {
    /// Turns up to [`BATCH`] events into records.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Drained {
        let table = self.names.read().expect("names lock");
        let mut log = self.log.lock().expect("log lock");
        if log.backlogged() {
            return Drained::Backlogged;
        }
        self.pipeline.configure(&table.audit);
        for _ in 0..BATCH {
            let Some(item) = ring.next() else {
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
            self.pipeline.event(&ev, &resolver, &mut log);
            if ev.verdict == geowall_common::verdict::DENY
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
