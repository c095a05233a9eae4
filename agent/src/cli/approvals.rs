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
    // A name: the addresses resolved from it so far.
    let to = match r.addresses.as_slice() {
        [] => r.to.clone(),
        [one] => format!("{} ({one})", r.to),
        [first, rest @ ..] => format!("{} ({first} and {} more)", r.to, rest.len()),
    };
    format!(
        "{:>5}  {:<8}  {} -> {}{}  for {}  by {}  until {}  ({})",
        r.id,
        r.state.as_str(),
        scope,
        to,
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
fn print_json(value: &impl serde::Serialize) -> Result<()> {
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
        println!("{verb}: {}", line(&view).trim_start());
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
        println!("{}", line(r));
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
