//! `geowall status`.

use std::{path::Path, process::ExitCode};

use geowall_common::counter;
use serde_json::json;

use anyhow::Result;
use geowall::{
    config::Config,
    control::{
        Client, ClientError,
        proto::{AuditStatus, GetStatus, WebhookStatus},
    },
    kernel::{CounterReader, Pins, pinned_info},
};

/// The attached programs as the pins describe them.
fn programs_json(pinned: &geowall::kernel::PinnedInfo) -> serde_json::Value {
    json!({
        "attached": pinned.programs,
        "version": pinned.version,
        "since": pinned.attached_at.map(when),
    })
}

/// Unix seconds as RFC 3339 (seconds).
fn when(secs: u64) -> String {
    let t = geowall::vocab::clock::rfc3339(i128::from(secs) * 1_000_000_000);
    // Seconds are precise enough here.
    match t.split_once('.') {
        Some((head, _)) => format!("{head}Z"),
        None => t,
    }
}

/// The DNS forwarder as a line of text.
fn dns_line(d: &geowall::control::proto::DnsStatus) -> String {
    if !d.enabled {
        return "dns: off ([dns] enabled = false): governed jobs' queries go to their resolvers \
                directly, judged as any destination; nothing is learned"
            .into();
    }
    format!(
        "dns: forwarder on {}:{} and [::1]:{}; {} queries forwarded, {} denied, {} refused, {} failed \
         ({} upstream failures); {} addresses learned under {} names ({} let go for room){}",
        d.listen.as_deref().unwrap_or("?"),
        d.port.unwrap_or(0),
        d.port.unwrap_or(0),
        d.forwarded,
        d.denied,
        d.refused,
        d.failed,
        d.upstream_failures,
        d.learned,
        d.names,
        d.evicted,
        if d.unattributed > 0 {
            format!("; {} not redirected by geowall (dropped)", d.unattributed)
        } else {
            String::new()
        }
    )
}

/// The fleet link as a line of text.
fn fleet_line(f: &geowall::control::proto::FleetLinkStatus) -> String {
    let link = if f.connected {
        format!("connected since {}", f.since.as_deref().unwrap_or("?"))
    } else {
        format!(
            "etcd unreachable since {} ({}); enforcing the fleet state last applied",
            f.since.as_deref().unwrap_or("?"),
            f.unreachable.as_deref().unwrap_or("?")
        )
    };
    format!(
        "fleet: node {} under {} at {}: {link}; revision {}; fleet policies: {}{}",
        f.node,
        f.prefix,
        f.endpoints.join(","),
        f.revision,
        if f.policies.is_empty() {
            "none".to_owned()
        } else {
            f.policies.join(", ")
        },
        if f.unpublished > 0 {
            format!("; {} request(s) not yet published", f.unpublished)
        } else {
            String::new()
        }
    )
}

/// The approvals webhook as a line of text: its address and its last
/// failure.
fn webhook_line(w: &WebhookStatus) -> String {
    match &w.last_failure {
        None => format!("webhook {}: no failures", w.url),
        Some(f) => format!(
            "webhook {}: {} notification{} given up; last at {}: {}{} after {} attempt{}: {}",
            w.url,
            w.failures,
            if w.failures == 1 { "" } else { "s" },
            f.time,
            f.event,
            f.request_id
                .map(|id| format!(" of request {id}"))
                .unwrap_or_default(),
            f.attempts,
            if f.attempts == 1 { "" } else { "s" },
            f.error
        ),
    }
}

/// The audit log as a line of text: writable or not, since when, why,
/// what it holds and lost, and what `on_write_failure` does meanwhile.
fn audit_line(a: &AuditStatus) -> String {
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    if a.writable {
        let mut line = format!(
            "audit log {}: writable (on_write_failure = {})",
            a.log, a.on_write_failure
        );
        if a.write_errors > 0 {
            line.push_str(&format!(
                "; {} since start, {} lost",
                plural(a.write_errors, "failed write", "failed writes"),
                plural(a.lost, "record", "records")
            ));
            if let (Some(e), Some(t)) = (&a.last_error, &a.last_error_time) {
                line.push_str(&format!(" (the last at {t}: {e})"));
            }
        }
        return line;
    }
    let then = match a.on_write_failure.as_str() {
        "deny" => format!(
            "on_write_failure = deny: governed jobs' new connections are REFUSED ({} refused so far)",
            a.refused
        ),
        _ => "on_write_failure = continue: enforcement goes on; decisions are held, then lost"
            .to_owned(),
    };
    format!(
        "audit log {}: CANNOT BE WRITTEN since {}: {}; {} held in memory, {} lost, {}; {then}",
        a.log,
        a.failing_since.as_deref().unwrap_or("?"),
        a.last_error.as_deref().unwrap_or("?"),
        plural(a.held, "record", "records"),
        plural(a.lost_now, "record", "records"),
        plural(a.write_errors, "failed write", "failed writes"),
    )
}

pub(super) fn status(path: &Path, as_json: bool) -> Result<ExitCode> {
    let config = Config::load(path)?;
    let socket = config.socket_path();
    let pins = Pins::new(config.bpffs_path());
    let running = match Client::connect(&socket).and_then(|mut c| c.call(GetStatus {})) {
        Ok(s) => Some(s),
        Err(ClientError::NotRunning(_) | ClientError::Stale(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let enforcing = pins.has_links();
    let pinned = pinned_info(&pins);
    match (running, as_json) {
        (Some(s), true) => {
            let policies: Vec<&str> = s.policies.iter().map(|p| p.name.as_str()).collect();
            println!(
                "{}",
                json!({
                    "agent": "running",
                    "enforcing": enforcing,
                    "version": s.version,
                    "programs": programs_json(&pinned),
                    "policies": policies,
                    "status": s,
                })
            );
        }
        (Some(s), false) => {
            println!("agent: running (pid {}, version {})", s.pid, s.version);
            println!("governed cgroup: {}", s.governed);
            println!(
                "tables: epoch {}, {} IPv4 and {} IPv6 ranges",
                s.epoch, s.ipv4_ranges, s.ipv6_ranges
            );
            for src in &s.sources {
                println!("  map {} ({} networks)", src.source, src.networks);
            }
            println!("{}", audit_line(&s.audit));
            for p in &s.policies {
                println!(
                    "policy {} ({}{}): {} allowed, {} denied{}, {} would deny; {} job{}",
                    p.name,
                    p.mode,
                    if p.default { ", host default" } else { "" },
                    p.allowed,
                    p.denied,
                    if p.audit_refused > 0 {
                        format!(" ({} for the audit log)", p.audit_refused)
                    } else {
                        String::new()
                    },
                    p.would_deny,
                    p.jobs,
                    if p.jobs == 1 { "" } else { "s" }
                );
                if !p.units.is_empty() {
                    println!("  units: {}", p.units.join(", "));
                }
                for c in &p.cgroups {
                    println!("  bound: {c}");
                }
            }
            for j in &s.jobs {
                println!("job {} under {} in {}", j.job, j.policy, j.cgroup);
            }
            for g in &s.grants {
                println!("{}", super::approvals::grant_line(g));
            }
            if let Some(w) = &s.webhook {
                println!("{}", webhook_line(w));
            }
            println!("{}", dns_line(&s.dns));
            if let Some(f) = &s.fleet {
                println!("{}", fleet_line(f));
                for r in &f.refused {
                    println!("fleet: refused {r}");
                }
            }
            for path in &s.open_paths {
                println!("open: {path}");
            }
            if let Some(why) = &s.socket_cgroups_unavailable {
                println!(
                    "sockets passed between cgroups: judged by their callers' policies only ({why})"
                );
            }
            if s.events_dropped > 0 {
                println!(
                    "flow events dropped (ring buffer full): {}",
                    s.events_dropped
                );
            }
        }
        (None, _) => {
            let counters = CounterReader::open(&pins).and_then(|c| c.rows()).ok();
            let totals = counters.as_ref().map(|rows| {
                let sum = |i: usize| rows.iter().map(|r| r[i]).sum::<u64>();
                (
                    sum(counter::ALLOWED),
                    sum(counter::DENIED),
                    sum(counter::WOULD_DENY),
                )
            });
            if as_json {
                println!(
                    "{}",
                    json!({
                        "agent": "down",
                        "enforcing": enforcing,
                        "version": pinned.version,
                        "programs": programs_json(&pinned),
                        "policies": pinned.policies,
                        "agent_last_seen": pinned.heartbeat.map(when),
                        "epoch": pinned.epoch,
                        "pins": pins.root(),
                        "counters": totals.map(|(a, d, w)| json!({"allowed": a, "denied": d, "would_deny": w})),
                    })
                );
            } else if enforcing {
                println!(
                    "agent: down{}; enforcement stays in force from the pins under {}",
                    pinned
                        .heartbeat
                        .map(|t| format!(" (last seen {})", when(t)))
                        .unwrap_or_default(),
                    pins.root().display()
                );
                println!(
                    "programs: {} (version {}), attached since {}",
                    pinned.programs.join(", "),
                    pinned.version.as_deref().unwrap_or("unknown"),
                    pinned
                        .attached_at
                        .map(when)
                        .unwrap_or_else(|| "unknown".into())
                );
                if !pinned.policies.is_empty() {
                    println!("policies: {}", pinned.policies.join(", "));
                }
                if let Some((a, d, w)) = totals {
                    println!("counters: {a} allowed, {d} denied, {w} would deny");
                }
            } else {
                println!(
                    "agent: down; nothing is enforced (no pinned programs under {})",
                    pins.root().display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
