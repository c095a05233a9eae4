//! `geowall approvals`: just-in-time requests, decisions and grants.

use std::{path::Path, process::ExitCode};

use clap::Subcommand;

use super::ConfigArg;
use geowall::{
    approvals::ApprovalView,
    config::Config,
    control::{
        Client,
        proto::{ApprovalApprove, ApprovalAsk, ApprovalDeny, ApprovalRevoke, ApprovalsList, Call},
    },
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

/// Makes one call to the agent of `config`.
pub(super) fn call<C: Call>(config: &Path, call: C) -> Result<C::Result, String> {
    let config = Config::load(config).map_err(|e| e.to_string())?;
    let mut client = Client::connect(&config.socket_path()).map_err(|e| e.to_string())?;
    client.call(call).map_err(|e| e.to_string())
}

/// One request as a line of text.
fn line(r: &ApprovalView) -> String {
    let scope = match (&r.job, &r.cgroup) {
        (Some(job), _) => format!("job {job}"),
        (_, Some(cg)) => format!("cgroup {cg}"),
        _ => format!("policy {}", r.policy),
    };
    let port = match r.port {
        0 => String::new(),
        p => format!(" port {p}"),
    };
    format!(
        "{:>5}  {:<8}  {} -> {}{}  for {}  by {}  until {}  ({})",
        r.id,
        r.state.as_str(),
        scope,
        r.to,
        port,
        r.for_,
        r.requested_by,
        r.expires,
        r.reason,
    )
}

/// A live grant as a line of `geowall status`.
pub(super) fn grant_line(g: &ApprovalView) -> String {
    format!("grant {}", line(g).trim_start())
}

/// Prints JSON the way the agent's answers have always printed: one line,
/// keys in alphabetical order.
fn print_json(value: &impl serde::Serialize) -> Result<(), String> {
    let value = serde_json::to_value(value).map_err(|e| e.to_string())?;
    println!("{value}");
    Ok(())
}

/// A request filed or decided: the request as it now stands.
fn decided<C: Call<Result = ApprovalView>>(
    config: &Path,
    verb: &str,
    request: C,
    json: bool,
) -> Result<(), String> {
    let view = call(config, request)?;
    if json {
        print_json(&view)
    } else {
        println!("{verb}: {}", line(&view).trim_start());
        Ok(())
    }
}

fn list(config: &Path, pending: bool, json: bool) -> Result<(), String> {
    let views = call(config, ApprovalsList { pending })?;
    if json {
        return print_json(&views);
    }
    if views.is_empty() {
        println!("no approval requests");
    }
    for r in &views {
        println!("{}", line(r));
    }
    Ok(())
}

pub fn run(command: ApprovalsCommand) -> ExitCode {
    let done = match command {
        ApprovalsCommand::Request {
            config,
            policy,
            job,
            to,
            port,
            for_,
            reason,
            json,
        } => decided(
            &config.config,
            "requested",
            ApprovalAsk {
                policy,
                job,
                to,
                port,
                for_,
                reason,
            },
            json,
        ),
        ApprovalsCommand::List {
            config,
            pending,
            json,
        } => list(&config.config, pending, json),
        ApprovalsCommand::Approve {
            config,
            id,
            for_,
            reason,
        } => decided(
            &config.config,
            "approved",
            ApprovalApprove { id, for_, reason },
            false,
        ),
        ApprovalsCommand::Deny { config, id, reason } => {
            decided(&config.config, "denied", ApprovalDeny { id, reason }, false)
        }
        ApprovalsCommand::Revoke { config, id, reason } => decided(
            &config.config,
            "revoked",
            ApprovalRevoke { id, reason },
            false,
        ),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(e),
    }
}
