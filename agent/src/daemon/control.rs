//! The control socket, the agent's side: each connection's requests
//! answered in turn, under the state lock (map questions on a snapshot,
//! outside it).

use std::{io, os::unix::fs::PermissionsExt, path::Path, sync::Arc};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{Mutex, watch},
    task::JoinSet,
};

use super::{
    caller::{Peer, Refusal},
    state::{MapSnapshot, State},
    stop::Stop,
};
use crate::{
    control::proto::{
        self, ApprovalApprove, ApprovalAsk, ApprovalDeny, ApprovalRevoke, ApprovalsList, Call,
        ErrorCode, GetMapStats, GetStatus, JobEnd, JobRefusals, JobStart, MAX_REFUSALS_WAIT_MS,
        MapLoad, MapLookup, PolicyExplain, Reload, Request, Response, Shutdown, Switched,
    },
    regions::query,
    vocab::error::chain,
};

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

/// Fails when a live agent serves the socket at `path`.
pub(super) fn ensure_free(path: &Path) -> io::Result<()> {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another geowall agent is running on this socket",
        )),
        Err(_) => Ok(()),
    }
}

/// Binds the control socket. A socket file left by an agent that is gone is
/// replaced; a live agent on it is an error.
pub(super) fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        ensure_free(path)?;
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    // Anyone may connect; each request is authorized by the caller's
    // credentials.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Serves connections until the stop signal, then waits for the open
/// connections to finish the request in hand (each lets go of the state).
pub(super) async fn serve(
    listener: UnixListener,
    state: Arc<Mutex<State>>,
    mut stop: watch::Receiver<Stop>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let state = Arc::clone(&state);
                    let stop = stop.clone();
                    connections.spawn(async move {
                        if let Err(e) = connection(stream, state, stop).await {
                            tracing::debug!(error = %e, "control connection ended");
                        }
                    });
                }
                Err(e) => tracing::error!(error = %e, "control socket accept failed"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn connection(
    stream: UnixStream,
    state: Arc<Mutex<State>>,
    mut stop: watch::Receiver<Stop>,
) -> io::Result<()> {
    let cred = stream.peer_cred()?;
    let peer = Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid().and_then(|p| u32::try_from(p).ok()),
    };
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        if stop.borrow().requested() {
            return Ok(());
        }
        // Between requests the connection closes when the agent stops.
        let mut limited = (&mut lines).take(MAX_LINE as u64 + 1);
        let n = tokio::select! {
            n = limited.read_line(&mut line) => n?,
            _ = stop.changed() => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        let response = if line.len() > MAX_LINE {
            Response::err(ErrorCode::BadRequest, "request line too long")
        } else {
            answer(&line, peer, &state).await
        };
        let mut out = serde_json::to_vec(&response).map_err(io::Error::other)?;
        out.push(b'\n');
        write.write_all(&out).await?;
    }
}

async fn answer(line: &str, peer: Peer, state: &Mutex<State>) -> Response {
    let request = match proto::decode(line) {
        Ok(r) => r,
        Err(refusal) => return refusal,
    };
    let root = peer.uid == 0;
    // Map questions read sources again and compute: answered outside the
    // lock, on a snapshot.
    match request {
        Request::MapLookup(MapLookup { addrs }) => {
            let snap = state.lock().await.map_snapshot();
            return blocking::<MapLookup>(move || map_lookup(&snap, &addrs)).await;
        }
        Request::PolicyExplain(PolicyExplain { policy, targets }) => {
            let (snap, explained) = {
                let state = state.lock().await;
                (state.map_snapshot(), state.explain(&policy, &targets))
            };
            let mut explained = match explained {
                Ok(e) => e,
                Err(Refusal(code, message)) => return Response::err(code, message),
            };
            return blocking::<PolicyExplain>(move || {
                add_sources(&snap, &mut explained)?;
                Ok(explained)
            })
            .await;
        }
        Request::MapStats(GetMapStats {}) => {
            let (snap, kernel_bytes) = {
                let state = state.lock().await;
                (state.map_snapshot(), state.trie_memlock())
            };
            return blocking::<GetMapStats>(move || {
                let mut stats = map_stats(&snap);
                stats.kernel_bytes = kernel_bytes;
                crate::host::proc::trim_heap();
                Ok(stats)
            })
            .await;
        }
        // A long poll: it waits outside the lock.
        Request::JobRefusals(JobRefusals {
            job,
            after,
            wait_ms,
            settle,
        }) => {
            let (board, followed) = {
                let state = state.lock().await;
                (state.refusals(), state.follow_refusals(peer, &job))
            };
            let followed = match followed {
                Ok(f) => f,
                Err(Refusal(code, message)) => return Response::err(code, message),
            };
            let wait =
                std::time::Duration::from_millis(u64::from(wait_ms.min(MAX_REFUSALS_WAIT_MS)));
            let mut found = board.since(&followed.job, after, wait, settle).await;
            if !found.refusals.is_empty() {
                let state = state.lock().await;
                for r in &mut found.refusals {
                    let max = state.approvable(&r.refused.policy);
                    r.approvable = max.is_some();
                    // The printed request asks for an hour, or less when
                    // the policy grants less.
                    r.grant_for = max.map(|m| {
                        crate::vocab::units::Span(m.min(std::time::Duration::from_secs(3600)))
                            .to_string()
                    });
                }
            }
            return Response::result::<JobRefusals>(&found);
        }
        _ => {}
    }
    let mut state = state.lock().await;
    match request {
        Request::MapLookup(_)
        | Request::MapStats(_)
        | Request::PolicyExplain(_)
        | Request::JobRefusals(_) => {
            unreachable!("answered above")
        }
        Request::Status(GetStatus {}) => reply::<GetStatus>(state.status().map_err(Refusal::from)),
        Request::JobStart(JobStart { policy, job, pid }) => {
            reply::<JobStart>(state.job_start(peer, &policy, job.as_deref(), pid))
        }
        Request::JobEnd(JobEnd { job }) => reply::<JobEnd>(state.job_end(&job)),
        Request::Reload(Reload {}) if root => reply::<Reload>(reload(&mut state, peer, "reload")),
        Request::MapLoad(MapLoad {}) if root => {
            reply::<MapLoad>(reload(&mut state, peer, "map load"))
        }
        Request::Shutdown(Shutdown { detach }) if root => {
            state.request_stop(peer, detach);
            reply::<Shutdown>(Ok(()))
        }
        Request::ApprovalRequest(ask) => reply::<ApprovalAsk>(state.approval_request(peer, ask)),
        Request::ApprovalsList(ApprovalsList { pending }) => {
            reply::<ApprovalsList>(Ok(state.approvals_list(peer, pending)))
        }
        Request::ApprovalApprove(r) => {
            reply::<ApprovalApprove>(state.approval_decide(peer, r.into()))
        }
        Request::ApprovalDeny(r) => reply::<ApprovalDeny>(state.approval_decide(peer, r.into())),
        Request::ApprovalRevoke(r) => {
            reply::<ApprovalRevoke>(state.approval_decide(peer, r.into()))
        }
        Request::Reload(_) | Request::MapLoad(_) | Request::Shutdown(_) => Response::err(
            ErrorCode::PermissionDenied,
            "only root may reload or stop the agent",
        ),
    }
}

/// `reload` and `map_load`: re-reads the config and switches tables.
fn reload(state: &mut State, peer: Peer, why: &str) -> Result<Switched, Refusal> {
    match state.reload(why, Some(peer.json())) {
        Ok(epoch) => Ok(state.switched(epoch)),
        Err(e) => Err(Refusal(
            ErrorCode::InvalidConfig,
            format!("{}; the tables in force stay in force", chain(&e)),
        )),
    }
}

/// The response to call `C`: its result, or the refusal.
fn reply<C: Call>(result: Result<C::Result, Refusal>) -> Response {
    match result {
        Ok(r) => Response::result::<C>(&r),
        Err(Refusal(code, message)) => Response::err(code, message),
    }
}

/// Answers call `C` with what `f` computes on the blocking pool.
async fn blocking<C: Call>(
    f: impl FnOnce() -> Result<C::Result, Refusal> + Send + 'static,
) -> Response
where
    C::Result: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => reply::<C>(result),
        Err(e) => Response::err(ErrorCode::Internal, chain(&e)),
    }
}

fn map_lookup(snap: &MapSnapshot, addrs: &[String]) -> Result<Vec<query::Answer>, Refusal> {
    let parsed: Vec<std::net::IpAddr> = addrs
        .iter()
        .map(|a| {
            a.parse()
                .map_err(|_| Refusal(ErrorCode::BadRequest, format!("'{a}' is not an IP address")))
        })
        .collect::<Result<_, _>>()?;
    // The agent keeps no per-source copy: the sources are read again.
    let sources = query::SourceData::Files {
        specs: &snap.specs,
        max_bytes: snap.max_source_bytes,
    };
    query::lookup(&snap.map, sources, &parsed).map_err(|e| Refusal::error(ErrorCode::Internal, &e))
}

/// Adds what each map source says about the explained destinations.
fn add_sources(
    snap: &MapSnapshot,
    explained: &mut [crate::tables::explain::Explanation],
) -> Result<(), Refusal> {
    let addrs: Vec<std::net::IpAddr> = explained
        .iter()
        .filter_map(|e| e.dst.parse().ok())
        .collect();
    let sources = query::SourceData::Files {
        specs: &snap.specs,
        max_bytes: snap.max_source_bytes,
    };
    let answers = query::lookup(&snap.map, sources, &addrs)
        .map_err(|e| Refusal::error(ErrorCode::Internal, &e))?;
    for (e, a) in explained.iter_mut().zip(answers) {
        e.sources = a.sources;
    }
    Ok(())
}

fn map_stats(snap: &MapSnapshot) -> query::MapStats {
    let mut stats = query::stats(
        &snap.map,
        &snap.sources,
        snap.compile_time.as_millis() as u64,
        Some(snap.kernel_entries),
    );
    stats.install_ms = Some(snap.install_time.as_millis() as u64);
    stats
}
