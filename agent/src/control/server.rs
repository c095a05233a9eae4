//! The agent side of the control socket.

use std::{io, os::unix::fs::PermissionsExt, path::Path, sync::Arc};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{Mutex, watch},
};

use super::proto::{ErrorCode, Request, RequestEnvelope, Response, VERSION};
use crate::daemon::{
    State,
    jobs::{Peer, Refusal},
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
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another geowall agent is running on this socket",
                ));
            }
            Err(_) => std::fs::remove_file(path)?,
        }
    }
    let listener = UnixListener::bind(path)?;
    // Anyone may connect; each request is authorized by the caller's
    // credentials.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Serves connections until the stop signal.
pub async fn serve(
    listener: UnixListener,
    state: Arc<Mutex<State>>,
    mut stop: watch::Receiver<Option<bool>>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let state = Arc::clone(&state);
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, state).await {
                            tracing::debug!(error = %e, "control connection ended");
                        }
                    });
                }
                Err(e) => tracing::error!(error = %e, "control socket accept failed"),
            },
            _ = stop.changed() => return,
        }
    }
}

async fn connection(stream: UnixStream, state: Arc<Mutex<State>>) -> io::Result<()> {
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
        let n = (&mut lines)
            .take(MAX_LINE as u64 + 1)
            .read_line(&mut line)
            .await?;
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
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Response::err(ErrorCode::BadRequest, format!("not JSON: {e}")),
    };
    let version = value.get("v").and_then(|v| v.as_u64());
    if version != Some(u64::from(VERSION)) {
        return Response::err(
            ErrorCode::UnsupportedVersion,
            format!("this agent speaks protocol v{VERSION}, the request says {version:?}"),
        );
    }
    let request = match serde_json::from_value::<RequestEnvelope>(value) {
        Ok(r) => r.request,
        Err(e) => return Response::err(ErrorCode::BadRequest, e.to_string()),
    };
    let root = peer.uid == 0;
    let mut state = state.lock().await;
    let result = match request {
        Request::Status => state.status().map(Response::ok).map_err(Refusal::from),
        Request::JobStart { policy, job, pid } => state
            .job_start(peer, &policy, job.as_deref(), pid)
            .map(Response::ok),
        Request::JobEnd { job } => state.job_end(&job).map(|()| Response::ok(())),
        Request::Reload if root => match state.reload("reload", Some(peer.json())) {
            Ok(epoch) => Ok(Response::ok(serde_json::json!({ "epoch": epoch }))),
            Err(e) => Err(Refusal(ErrorCode::InvalidConfig, e.to_string())),
        },
        Request::Shutdown { detach } if root => {
            state.record(
                "agent",
                serde_json::json!({"event": "shutdown_requested", "detach": detach, "by": peer.json()}),
            );
            state.request_stop(detach);
            Ok(Response::ok(()))
        }
        Request::Reload | Request::Shutdown { .. } => Err(Refusal(
            ErrorCode::PermissionDenied,
            "only root may reload or stop the agent".into(),
        )),
    };
    result.unwrap_or_else(|Refusal(code, message)| Response::err(code, message))
}
