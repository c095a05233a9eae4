//! The CLI side of the control socket (blocking: the CLI is a plain process).

use std::{
    io::{self, BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use thiserror::Error;

use super::proto::{Call, ErrorBody, Request, RequestEnvelope, Response, VERSION};

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(
        "the geowall agent is not running: no control socket at {0} (start it with `geowall run`)"
    )]
    NotRunning(PathBuf),
    #[error(
        "the geowall agent is not running: {0} is a stale control socket left by an agent that \
         is gone (start it with `geowall run`)"
    )]
    Stale(PathBuf),
    #[error("permission denied on the control socket {0}")]
    Permission(PathBuf),
    #[error("control socket {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the agent answered something that is not protocol v{VERSION}")]
    Protocol(#[source] ProtocolError),
    #[error("{}", .0.message)]
    Remote(ErrorBody),
}

/// How an answer breaks the protocol.
#[derive(Debug, Error)]
pub enum ProtocolError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("connection closed without an answer")]
    Closed,
    #[error("version {0}")]
    Version(u32),
    #[error("error without a body")]
    NoErrorBody,
}

pub struct Client {
    path: PathBuf,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the agent's control socket.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ClientError::NotRunning(path.to_path_buf()),
            io::ErrorKind::ConnectionRefused => ClientError::Stale(path.to_path_buf()),
            io::ErrorKind::PermissionDenied => ClientError::Permission(path.to_path_buf()),
            _ => ClientError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        let reader = stream.try_clone().map_err(|source| ClientError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Client {
            path: path.to_path_buf(),
            writer: stream,
            reader: BufReader::new(reader),
        })
    }

    /// Bounds how long a call may wait for its answer.
    pub fn set_timeout(&self, timeout: Option<Duration>) {
        let _ = self.writer.set_read_timeout(timeout);
    }

    /// Makes call `call` and waits for its result.
    pub fn call<C: Call>(&mut self, call: C) -> Result<C::Result, ClientError> {
        let result = self.exchange(call.into())?;
        serde_json::from_value(result).map_err(|e| ClientError::Protocol(e.into()))
    }

    /// Sends one request and waits for its response's result.
    fn exchange(&mut self, request: Request) -> Result<serde_json::Value, ClientError> {
        let io_err = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(&RequestEnvelope {
            v: VERSION,
            request,
        })
        .map_err(|e| ClientError::Protocol(e.into()))?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(io_err)?;
        let mut answer = String::new();
        let n = self
            .reader
            .read_line(&mut answer)
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(ClientError::Protocol(ProtocolError::Closed));
        }
        let response: Response =
            serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(e.into()))?;
        if response.v != VERSION {
            return Err(ClientError::Protocol(ProtocolError::Version(response.v)));
        }
        match (response.ok, response.error) {
            (true, _) => Ok(response.result.unwrap_or(serde_json::Value::Null)),
            (false, Some(e)) => Err(ClientError::Remote(e)),
            (false, None) => Err(ClientError::Protocol(ProtocolError::NoErrorBody)),
        }
    }
}
