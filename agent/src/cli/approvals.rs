//! `geowall approvals`: just-in-time requests, decisions and grants.

use std::{path::Path, process::ExitCode};

use clap::Subcommand;
use serde_json::Value;

use super::ConfigArg;
use crate::{
    config::Config,
    control::{Client, Request, proto::ApprovalAsk},
};

#[derive(Subcommand, Debug)]
pub enum ApprovalsCommand {
    /// Ask for a time-boxed exception: a grant for a policy's jobs (or one
    /// running job) to reach a destination.
    Request {
        #[command(flatten)]
        config: ConfigArg,
        /// Every job under this policy.
        #[arg(long, required_unless_present = "job", conflicts_with = "job")]
        policy: Option<String>,
        /// Only this running `geowall exec` job.
        #[arg(long)]
        job: Option<String>,
        /// The destination: an address, a CIDR, or a region as policies name
        /// them: a country (DE), a cloud region (aws:eu-west-1, aws:eu-*), a
        /// group (EU, or one of [groups]).
        #[arg(long)]
        to: String,
        /// Only this destination port (default: any).
        #[arg(long)]
        port: Option<u16>,
        /// How long the grant should last ("2h"), at most the policy's
        /// max_grant.
        #[arg(long = "for")]
        for_: String,
        /// Why: shown to approvers and kept in the audit log.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Requests and grants (approvers see all; anyone else their own).
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only pending requests.
        #[arg(long)]
        pending: bool,
        /// A JSON array of {"id", "state", "policy", "job", "cgroup", "to",
        /// "port", "requested_by", "reason", "expires", …}.
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending request: the grant is written into the kernel.
    Approve {
        #[command(flatten)]
        config: ConfigArg,
        id: u32,
        /// How long the grant lasts (default: what was asked), at most the
        /// policy's max_grant.
        #[arg(long = "for")]
        for_: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a pending request.
    Deny {
        #[command(flatten)]
        config: ConfigArg,
        id: u32,
        #[arg(long)]
        reason: Option<String>,
    },
    /// End a live grant early.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        id: u32,
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Sends one request to the agent of `config`.
pub(super) fn call(config: &Path, request: Request) -> Result<Value, String> {
    let config = Config::load(config).map_err(|e| e.to_string())?;
    let mut client = Client::connect(&config.socket_path()).map_err(|e| e.to_string())?;
    client.call(request).map_err(|e| e.to_string())
}

fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// One request as a line of text.
fn line(r: &Value) -> String {
    let scope = match (&r["job"], &r["cgroup"]) {
        (Value::String(job), _) => format!("job {job}"),
        (_, Value::String(cg)) => format!("cgroup {cg}"),
        _ => format!("policy {}", text(r, "policy")),
    };
    let port = match r["port"].as_u64() {
        Some(0) | None => String::new(),
        Some(p) => format!(" port {p}"),
    };
    format!(
        "{:>5}  {:<8}  {} -> {}{}  for {}  by {}  until {}  ({})",
        text(r, "id"),
        text(r, "state"),
        scope,
        text(r, "to"),
        port,
        text(r, "for"),
        text(r, "requested_by"),
        text(r, "expires"),
        text(r, "reason"),
    )
}

/// A live grant as a line of `geowall status`.
pub(super) fn grant_line(g: &Value) -> String {
    format!("grant {}", line(g).trim_start())
}

pub fn run(command: ApprovalsCommand) -> ExitCode {
    let (config, request, json) = match command {
        ApprovalsCommand::Request {
            config,
            policy,
            job,
            to,
            port,
            for_,
            reason,
            json,
        } => (
            config,
            Request::ApprovalRequest(ApprovalAsk {
                policy,
                job,
                to,
                port,
                for_,
                reason,
            }),
            json,
        ),
        ApprovalsCommand::List {
            config,
            pending,
            json,
        } => (config, Request::ApprovalsList { pending }, json),
        ApprovalsCommand::Approve {
            config,
            id,
            for_,
            reason,
        } => (config, Request::ApprovalApprove { id, for_, reason }, false),
        ApprovalsCommand::Deny { config, id, reason } => {
            (config, Request::ApprovalDeny { id, reason }, false)
        }
        ApprovalsCommand::Revoke { config, id, reason } => {
            (config, Request::ApprovalRevoke { id, reason }, false)
        }
    };
    let verb = match &request {
        Request::ApprovalRequest(_) => "requested",
        Request::ApprovalApprove { .. } => "approved",
        Request::ApprovalDeny { .. } => "denied",
        Request::ApprovalRevoke { .. } => "revoked",
        _ => "",
    };
    let answer = match call(&config.config, request) {
        Ok(v) => v,
        Err(e) => return super::fail(e),
    };
    if json {
        println!("{answer}");
    } else if let Value::Array(items) = &answer {
        if items.is_empty() {
            println!("no approval requests");
        }
        for r in items {
            println!("{}", line(r));
        }
    } else {
        println!("{verb}: {}", line(&answer).trim_start());
    }
    ExitCode::SUCCESS
}
