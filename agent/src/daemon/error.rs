//! What can keep the agent from starting, or a reload from switching.

use std::path::PathBuf;

use thiserror::Error;

use crate::{
    config::ConfigError, host::cgroup::CgroupError, kernel::KernelError, plan::PlanError,
    tables::LayoutError,
};

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("audit log {path}")]
    AuditLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics endpoint {addr}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {path}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("approvals state {path}")]
    ApprovalsState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("DNS forwarder on {address} (ports from {port}) and ::1")]
    DnsForwarder {
        address: std::net::Ipv4Addr,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
}
