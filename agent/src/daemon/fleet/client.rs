//! Connecting to the fleet's etcd with `[fleet]`'s endpoints and
//! credentials (the agent and the `geowall fleet` commands alike), and
//! wording what etcd refuses.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use thiserror::Error;

use crate::{config::FleetConfig, vocab::clock};

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong talking to etcd.
#[derive(Debug, Error)]
pub enum FleetError {
    #[error("[fleet] {what} {path}")]
    File {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd is unreachable ({what}): {message}")]
    Unreachable { what: String, message: String },
    #[error("etcd refused {what}: {message}{hint}")]
    Refused {
        what: String,
        message: String,
        hint: String,
    },
    #[error("etcd: {what}: {message}")]
    Other { what: String, message: String },
    #[error(transparent)]
    Value(#[from] crate::fleet::ValueError),
    #[error("{0}")]
    Invalid(String),
}

impl FleetError {
    /// `e`, from doing `what` on etcd, worded for the operator.
    pub fn from_etcd(what: impl Into<String>, e: etcd_client::Error) -> FleetError {
        let what = what.into();
        let message = match &e {
            etcd_client::Error::GRpcStatus(s) => s.message().to_owned(),
            other => other.to_string(),
        };
        let lower = message.to_lowercase();
        if lower.contains("permission denied") || lower.contains("not capable") {
            return FleetError::Refused {
                what,
                message,
                hint: String::new(),
            };
        }
        if lower.contains("authentication failed") || lower.contains("invalid auth token") {
            return FleetError::Refused {
                what,
                message,
                hint: " (check [fleet] user and password_file)".into(),
            };
        }
        match &e {
            etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
                FleetError::Unreachable { what, message }
            }
            etcd_client::Error::GRpcStatus(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                ) =>
            {
                FleetError::Unreachable { what, message }
            }
            _ => FleetError::Other { what, message },
        }
    }

    /// Whether etcd could not be reached (as opposed to refusing).
    pub fn unreachable(&self) -> bool {
        matches!(self, FleetError::Unreachable { .. })
    }

    /// Adds a hint to a refusal.
    pub fn with_hint(self, hint: impl Into<String>) -> FleetError {
        match self {
            FleetError::Refused { what, message, .. } => FleetError::Refused {
                what,
                message,
                hint: hint.into(),
            },
            other => other,
        }
    }
}

fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, FleetError> {
    std::fs::read(path).map_err(|source| FleetError::File {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Connects to etcd as `config` says.
pub async fn connect(config: &FleetConfig) -> Result<Client, FleetError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
        .with_keep_alive_while_idle(true);
    if let (Some(user), Some(file)) = (&config.user, &config.password_file) {
        let text = String::from_utf8_lossy(&read("password_file", file)?).into_owned();
        let password = text.lines().next().unwrap_or_default().to_owned();
        options = options.with_user(user.clone(), password);
    }
    if config.ca.is_some() || config.cert.is_some() {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &config.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read("ca", ca)?));
        }
        if let (Some(cert), Some(key)) = (&config.cert, &config.key) {
            tls = tls.identity(Identity::from_pem(read("cert", cert)?, read("key", key)?));
        }
        options = options.with_tls(tls);
    }
    // One member at a time, from a different one each time: a member that
    // is down is passed over (a balanced channel over all of them fails
    // when it picks a dead one), and a session that loses its member
    // starts again on another.
    let endpoints = config.endpoints();
    let start = (clock::unix_ms() as usize) % endpoints.len().max(1);
    let mut last = None;
    for i in 0..endpoints.len() {
        let endpoint = &endpoints[(start + i) % endpoints.len()];
        match Client::connect([endpoint], Some(options.clone())).await {
            Ok(client) => return Ok(client),
            Err(e) => {
                let e = FleetError::from_etcd(format!("connecting to {endpoint}"), e);
                // A refusal (bad credentials) is the cluster's answer: no
                // other member will say otherwise.
                if matches!(e, FleetError::Refused { .. }) {
                    return Err(e);
                }
                last = Some(e);
            }
        }
    }
    Err(match last {
        Some(FleetError::Other { what, message })
        | Some(FleetError::Unreachable { what, message }) => FleetError::Unreachable {
            what: format!("{what}, the last of {}", endpoints.len()),
            message,
        },
        Some(other) => other,
        None => FleetError::Invalid("[fleet] etcd names no endpoint".into()),
    })
}
