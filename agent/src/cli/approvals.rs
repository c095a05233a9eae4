//! `geowall approvals`: just-in-time requests, decisions and grants.

use std::{path::Path, process::ExitCode};

use anyhow::Result;
use geowall::{
    approvals::ApprovalView,
    config::Config,
    control::{
        Client,
        proto::{ApprovalApprove, ApprovalAsk, ApprovalDeny, ApprovalRevoke, ApprovalsList, Call},
    },
};

use super::args::ApprovalsCommand;

/// Makes one call to the agent of `config`.
pub(super) fn call<C: Call>(config: &Path, call: C) -> Result<C::Result> {
    let config = Config::load(config)?;
    let mut client = Client::connect(&config.socket_path())?;
    Ok(client.call(call)?)
}

/// A request id of this host (a number).
fn local_id(id: &str) -> Result<u32> {
    id.parse().map_err(|_| {
        if id.contains('/') {
            anyhow::anyhow!("'{id}' is a fleet id (NODE/ID): add --fleet")
        } else {
            anyhow::anyhow!("'{id}' is not a request id (a number)")
        }
    })
}

/// A live grant as a line of `geowall status`.
pub(super) fn grant_line(g: &ApprovalView) -> String {
    format!("grant {}", super::render::approval_line(g).trim_start())
}

/// Prints JSON the way the agent's answers have always printed: one line,
/// keys in alphabetical order.
pub(super) fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let value = serde_json::to_value(value)?;
    println!("{value}");
    Ok(())
}

/// A request filed or decided: the request as it now stands.
fn decided<C: Call<Result = ApprovalView>>(
    config: &Path,
    verb: &str,
    request: C,
    json: bool,
) -> Result<()> {
    let view = call(config, request)?;
    if json {
        print_json(&view)
    } else {
        println!(
            "{verb}: {}",
            super::render::approval_line(&view).trim_start()
        );
        Ok(())
    }
}

fn list(config: &Path, pending: bool, json: bool) -> Result<()> {
    let views = call(config, ApprovalsList { pending })?;
    if json {
        return print_json(&views);
    }
    if views.is_empty() {
        println!("no approval requests");
    }
    for r in &views {
        println!("{}", super::render::approval_line(r));
    }
    Ok(())
}

pub(super) fn run(command: ApprovalsCommand) -> Result<ExitCode> {
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
            fleet: true,
        } => super::fleet::list_requests(&config.config, pending, json),
        ApprovalsCommand::List {
            config,
            pending,
            json,
            fleet: false,
        } => list(&config.config, pending, json),
        ApprovalsCommand::Approve {
            config,
            id,
            fleet: true,
            for_,
            reason,
        } => super::fleet::decide(&config.config, &id, "approve", for_.as_deref(), reason),
        ApprovalsCommand::Approve {
            config,
            id,
            fleet: false,
            for_,
            reason,
        } => decided(
            &config.config,
            "approved",
            ApprovalApprove {
                id: local_id(&id)?,
                for_,
                reason,
            },
            false,
        ),
        ApprovalsCommand::Deny {
            config,
            id,
            fleet: true,
            reason,
        } => super::fleet::decide(&config.config, &id, "deny", None, reason),
        ApprovalsCommand::Deny {
            config,
            id,
            fleet: false,
            reason,
        } => decided(
            &config.config,
            "denied",
            ApprovalDeny {
                id: local_id(&id)?,
                reason,
            },
            false,
        ),
        ApprovalsCommand::Revoke {
            config,
            id,
            fleet: true,
            reason,
        } => super::fleet::decide(&config.config, &id, "revoke", None, reason),
        ApprovalsCommand::Revoke {
            config,
            id,
            fleet: false,
            reason,
        } => decided(
            &config.config,
            "revoked",
            ApprovalRevoke {
                id: local_id(&id)?,
                reason,
            },
            false,
        ),
    };
    done.map(|()| ExitCode::SUCCESS)
}
