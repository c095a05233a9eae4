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

/// `--to` as written, with a port when it ends in one: `203.0.113.5:443`,
/// `[2001:db8::5]:443`, `api.partner.eu:443` (what `geowall exec` prints
/// after a refusal). A region (`aws:eu-west-1`) or a bare IPv6 address
/// has none. A port given both ways must agree with `--port`.
fn with_port(to: &str, port: Option<u16>) -> Result<(String, Option<u16>)> {
    let split = if let Some(rest) = to.strip_prefix('[') {
        rest.split_once("]:")
    } else {
        to.rsplit_once(':')
            .filter(|(head, tail)| !head.contains(':') && !tail.is_empty())
            .filter(|(_, tail)| tail.bytes().all(|b| b.is_ascii_digit()))
    };
    let Some((host, written)) = split else {
        return Ok((to.to_owned(), port));
    };
    let written: u16 = written
        .parse()
        .map_err(|_| anyhow::anyhow!("--to {to}: '{written}' is not a port (1-65535)"))?;
    match port {
        Some(p) if p != written => Err(anyhow::anyhow!(
            "--to {to} says port {written}, --port says {p}"
        )),
        _ => Ok((host.to_owned(), Some(written))),
    }
}

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
        } => {
            let (to, port) = with_port(&to, port)?;
            decided(
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
            )
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_may_carry_its_port() {
        let t = |to: &str, port| with_port(to, port).map_err(|e| e.to_string());
        assert_eq!(
            t("203.0.113.5:443", None),
            Ok(("203.0.113.5".into(), Some(443)))
        );
        assert_eq!(
            t("[2001:db8::5]:443", None),
            Ok(("2001:db8::5".into(), Some(443)))
        );
        assert_eq!(
            t("api.partner.eu:8443", Some(8443)),
            Ok(("api.partner.eu".into(), Some(8443)))
        );
        assert_eq!(
            t("*.partner.eu:443", None),
            Ok(("*.partner.eu".into(), Some(443)))
        );
        for as_is in ["aws:eu-west-1", "2001:db8::5", "10.0.0.0/8", "DE", "EU"] {
            assert_eq!(t(as_is, Some(80)), Ok((as_is.into(), Some(80))), "{as_is}");
        }
        assert!(
            t("203.0.113.5:99999", None)
                .unwrap_err()
                .contains("not a port")
        );
        assert!(
            t("203.0.113.5:443", Some(80))
                .unwrap_err()
                .contains("--port says 80")
        );
    }
}
