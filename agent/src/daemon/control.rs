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
    MapSnapshot, State,
    caller::{Peer, Refusal},
    stop::Stop,
};
use crate::{
    approvals::Decision,
    control::proto::{self, ErrorCode, Request, Response},
    regions::query,
};

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

/// Fails when a live agent serves the socket at `path`.
pub fn ensure_free(path: &Path) -> io::Result<()> {
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
pub fn bind(path: &Path) -> io::Result<UnixListener> {
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
pub async fn serve(
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
        Request::MapLookup { addrs } => {
            let snap = state.lock().await.map_snapshot();
            return blocking(move || map_lookup(&snap, &addrs)).await;
        }
        Request::PolicyExplain { policy, targets } => {
            let (snap, explained) = {
                let state = state.lock().await;
                (state.map_snapshot(), state.explain(&policy, &targets))
            };
            let mut explained = match explained {
                Ok(e) => e,
                Err(Refusal(code, message)) => return Response::err(code, message),
            };
            return blocking(move || {
                add_sources(&snap, &mut explained)?;
                Ok(Response::ok(explained))
            })
            .await;
        }
        Request::MapStats => {
            let (snap, kernel_bytes) = {
                let state = state.lock().await;
                (state.map_snapshot(), state.trie_memlock())
            };
            return blocking(move || {
                let mut stats = map_stats(&snap);
                stats.kernel_bytes = kernel_bytes;
                crate::host::proc::trim_heap();
                Ok(Response::ok(stats))
            })
            .await;
        }
        _ => {}
    }
    let mut state = state.lock().await;
    let result = match request {
        Request::MapLookup { .. } | Request::MapStats | Request::PolicyExplain { .. } => {
            unreachable!("answered above")
        }
        Request::Status => state.status().map(Response::ok).map_err(Refusal::from),
        Request::JobStart { policy, job, pid } => state
            .job_start(peer, &policy, job.as_deref(), pid)
            .map(Response::ok),
        Request::JobEnd { job } => state.job_end(&job).map(|()| Response::ok(())),
        Request::Reload | Request::MapLoad if root => {
            let why = if request == Request::MapLoad {
                "map load"
            } else {
                "reload"
            };
            match state.reload(why, Some(peer.json())) {
                Ok(epoch) => Ok(Response::ok(state.switched(epoch))),
                Err(e) => Err(Refusal(
                    ErrorCode::InvalidConfig,
                    format!(
                        "{}; the tables in force stay in force",
                        crate::vocab::error::chain(&e)
                    ),
                )),
            }
        }
        Request::Shutdown { detach } if root => {
            state.request_stop(peer, detach);
            Ok(Response::ok(()))
        }
        Request::ApprovalRequest(ask) => state.approval_request(peer, ask).map(Response::ok),
        Request::ApprovalsList { pending } => Ok(Response::ok(state.approvals_list(peer, pending))),
        Request::ApprovalApprove { id, for_, reason } => state
            .approval_decide(
                peer,
                id,
                Decision::Approve,
                for_.as_deref(),
                reason.as_deref(),
            )
            .map(Response::ok),
        Request::ApprovalDeny { id, reason } => state
            .approval_decide(peer, id, Decision::Deny, None, reason.as_deref())
            .map(Response::ok),
        Request::ApprovalRevoke { id, reason } => state
            .approval_decide(peer, id, Decision::Revoke, None, reason.as_deref())
            .map(Response::ok),
        Request::Reload | Request::MapLoad | Request::Shutdown { .. } => Err(Refusal(
            ErrorCode::PermissionDenied,
            "only root may reload or stop the agent".into(),
        )),
    };
    result.unwrap_or_else(|Refusal(code, message)| Response::err(code, message))
}

/// Runs `f` on the blocking pool.
async fn blocking(f: impl FnOnce() -> Result<Response, Refusal> + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(r)) => r,
        Ok(Err(Refusal(code, message))) => Response::err(code, message),
        Err(e) => Response::err(ErrorCode::Internal, e.to_string()),
    }
}

fn map_lookup(snap: &MapSnapshot, addrs: &[String]) -> Result<Response, Refusal> {
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
    let out = query::lookup(&snap.map, sources, &parsed)
        .map_err(|e| Refusal(ErrorCode::Internal, e.to_string()))?;
    Ok(Response::ok(out))
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
        .map_err(|e| Refusal(ErrorCode::Internal, e.to_string()))?;
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
