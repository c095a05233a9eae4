//! Who asks the agent over the control socket, and a refused request.

use serde_json::json;

use super::DaemonError;
use crate::{control::proto::ErrorCode, vocab::error::chain};

/// Who is asking, as the kernel says (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<u32>,
}

impl Peer {
    pub(super) fn json(&self) -> serde_json::Value {
        json!({"uid": self.uid, "gid": self.gid, "pid": self.pid})
    }
}

/// A refused request: the code and message the caller gets.
#[derive(Debug)]
pub(super) struct Refusal(pub ErrorCode, pub String);

impl Refusal {
    /// A refusal whose message is `error` with its causes.
    pub(super) fn error(code: ErrorCode, error: &(dyn std::error::Error + 'static)) -> Self {
        Refusal(code, chain(error))
    }
}

impl From<DaemonError> for Refusal {
    fn from(e: DaemonError) -> Self {
        Refusal::error(ErrorCode::Internal, &e)
    }
}
