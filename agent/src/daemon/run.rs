//! Running the agent: start-up, the tasks that serve it, and the orderly
//! stop.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use super::{
    DaemonError, approvals, control,
    dns::Forwarder,
    metrics,
    names::{self, NameTable},
    reader,
    state::State,
    stop::Stop,
    watchers,
};
use crate::{
    audit::{AuditLog, Rotation},
    config::Config,
    events::{FlowStats, Pipeline},
    host::cgroup::Hierarchy,
};

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

/// The forwarder of the pins (see [`super::dns::Dns::from_pins`]), bound
/// and serving: its state, the grants it shares, its task. `None` when
/// there is nothing to serve from, or its ports cannot be bound (the
/// forwarder then starts with the programs, and says why if it fails).
async fn early_forwarder(
    config: &Config,
    log: &Arc<Mutex<AuditLog>>,
    names: &Arc<RwLock<NameTable>>,
    stop: &watch::Receiver<Stop>,
) -> Option<(
    Arc<super::dns::Dns>,
    Arc<super::grants::GrantBook>,
    tokio::task::JoinHandle<()>,
)> {
    let (dns, grants) = super::dns::Dns::from_pins(config, Arc::clone(log), Arc::clone(names))?;
    match Forwarder::bind(dns.listen.0, dns.listen.1).await {
        Ok(f) => {
            let task = tokio::spawn(f.serve(Arc::clone(&dns), stop.clone()));
            tracing::info!(
                address = %dns.listen.0,
                port = dns.listen.1,
                "DNS forwarder serving again from the pins while the programs load"
            );
            Some((dns, grants, task))
        }
        Err(e) => {
            tracing::warn!(error = %e, "the DNS forwarder cannot bind before the programs load");
            None
        }
    }
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
            metrics::bind(addr)
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
    control::ensure_free(&socket_path).map_err(socket_err)?;

    let names = Arc::new(RwLock::new(NameTable::default()));
    let (stop_tx, stop_rx) = watch::channel(Stop::Running);
    // A restart or upgrade: the pinned programs go on redirecting governed
    // jobs' DNS while this run's programs load and verify (seconds). The
    // forwarder serves again at once, from the pins, so the jobs' DNS is
    // down only between the last agent's exit and this line.
    let early = early_forwarder(&config, &log, &names, &stop_rx).await;
    let (early_dns, early_task) = match early {
        Some((dns, grants, task)) => (Some((dns, grants)), Some(task)),
        None => (None, None),
    };
    // The fleet policies this host last applied (kept on its disk): it
    // starts with them whether or not etcd answers.
    let fleet = config.file.fleet.as_ref().map(super::fleet::Here::load);
    let start = |fleet: Option<super::fleet::Here>, early_dns| {
        State::start(
            opts.config.clone(),
            opts.audit_only,
            config.clone(),
            hierarchy.clone(),
            Arc::clone(&log),
            Arc::clone(&names),
            early_dns,
            fleet,
        )
    };
    let cached = fleet
        .as_ref()
        .is_some_and(|f| !f.applied.policies.is_empty());
    let (mut state, events) = match start(fleet.clone(), early_dns.clone()) {
        Err(e @ (DaemonError::Config(_) | DaemonError::Plan(_))) if cached => {
            // The kept fleet policies do not check on this host any more (a
            // cgroup they bind is gone): start with the config's own; the
            // fleet's are tried again once etcd answers.
            let error = crate::vocab::error::chain(&e);
            tracing::error!(%error, "the fleet policies kept on disk are refused: starting without them");
            let mut fleet = fleet.expect("cached");
            fleet.refused.insert(
                fleet.keys.policies(),
                format!("the fleet policies kept on disk were refused at start: {error}"),
            );
            fleet.applied.policies.clear();
            fleet.applied.revision = 0;
            start(Some(fleet), early_dns)?
        }
        other => other?,
    };
    let listener = match control::bind(&socket_path) {
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
    state.set_stopper(stop_tx.clone());
    state.start_notifier();
    // The DNS forwarder: bound before redirection is turned on, so no
    // governed query is sent to a port nobody listens on.
    let dns = state.dns();
    let forwarder = match dns.clone() {
        Some(_) if early_task.is_some() => {
            state.enable_dns();
            early_task
        }
        Some(dns) => match Forwarder::bind(dns.listen.0, dns.listen.1).await {
            Ok(f) => {
                let task = tokio::spawn(f.serve(Arc::clone(&dns), stop_rx.clone()));
                state.enable_dns();
                tracing::info!(
                    address = %dns.listen.0,
                    port = dns.listen.1,
                    "DNS forwarder listening; governed jobs' queries go through it"
                );
                Some(task)
            }
            Err(e) => {
                let _ = state.finish(opts.detach_on_exit);
                return Err(DaemonError::DnsForwarder {
                    address: dns.listen.0,
                    port: dns.listen.1,
                    source: e,
                });
            }
        },
        None => None,
    };
    let refusals = state.refusals();
    let audit_gate = state.audit_gate();
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
            if let Err(e) = reader::read_events(
                events,
                log,
                names,
                paths,
                stop_rx,
                pipeline,
                reader::Outlets {
                    denials: denials_tx,
                    refusals,
                },
            )
            .await
            {
                tracing::error!(error = %e, "flow event reader stopped");
            }
        })
    };
    let metrics = metrics_listener.map(|listener| {
        let exporter = metrics::Exporter::new(
            Arc::clone(&names),
            dns.clone(),
            Arc::clone(&flow_stats),
            log_stats,
            &bpffs,
        )
        .with_audit_gate(audit_gate);
        tokio::spawn(metrics::serve(listener, exporter, stop_rx.clone()))
    });
    let server = tokio::spawn(control::serve(
        listener,
        Arc::clone(&state),
        stop_rx.clone(),
    ));
    let watcher = tokio::spawn(watchers::watch_sources(Arc::clone(&state), stop_rx.clone()));
    let unit_watch = tokio::spawn(watchers::watch_units(Arc::clone(&state), stop_rx.clone()));
    let fleet_sync = tokio::spawn(super::fleet::run(Arc::clone(&state), stop_rx.clone()));
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
                        if let Some(dns) = s.dns() {
                            dns.collect();
                        }
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
    let _ = fleet_sync.await;
    let _ = reader.await;
    let _ = reactive.await;
    if let Some(m) = metrics {
        let _ = m.await;
    }
    if let Some(f) = forwarder {
        let _ = f.await;
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
    stop_tx: watch::Sender<Stop>,
    mut stop_rx: watch::Receiver<Stop>,
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
                    Err(e) => tracing::error!(error = %crate::vocab::error::Chain(&e), "SIGHUP: reload refused; the tables in force stay in force"),
                }
            }
            changed = stop_rx.changed() => {
                if changed.is_err() { break; }
                if let Stop::Requested { detach } = *stop_rx.borrow() {
                    return detach || detach_on_exit;
                }
            }
        }
    }
    let _ = stop_tx.send(Stop::Requested {
        detach: detach_on_exit,
    });
    detach_on_exit
}
