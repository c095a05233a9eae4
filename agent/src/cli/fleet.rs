//! `geowall fleet` and `geowall approvals … --fleet`: the fleet's state in
//! etcd, read and written with `[fleet]`'s endpoints and credentials.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use etcd_client::{Client, GetOptions, Permission, PutOptions, UserAddOptions};
use geowall::{
    approvals::{Stage, rfc3339_ms},
    config::{Config, FleetConfig, load_policy_file},
    daemon::fleet::client::{FleetError, connect},
    fleet::{
        FleetPolicy, Keys, RequestValue,
        keys::{parse_fleet_id, valid_segment},
        values::{DecisionValue, Member, NodeStatus, parse_json},
        view,
    },
    vocab::{clock, units::parse_duration},
};
use serde_json::json;

use super::args::{FleetCommand, FleetPolicyCommand, FleetRole, FleetUserCommand};

/// How long `approve --fleet` waits for the host to confirm.
const CONFIRM_WAIT: Duration = Duration::from_secs(10);
/// How long a denial or revocation stays in etcd (the host reads it on
/// its next session within that time).
const DECISION_KEEP: i64 = 24 * 3600;

/// The config's `[fleet]`, and its keys.
fn fleet_config(path: &Path) -> Result<(FleetConfig, Keys)> {
    let config = Config::load(path)?;
    let fleet = config.file.fleet.clone().ok_or_else(|| {
        anyhow!(
            "{}: no [fleet] section: name the fleet's etcd endpoints there (etcd = [\"http://…:2379\"])",
            path.display()
        )
    })?;
    let keys = Keys::new(&fleet.prefix);
    Ok((fleet, keys))
}

/// Runs `f` against the fleet's etcd on a small runtime of its own.
fn with_etcd<T>(
    path: &Path,
    f: impl AsyncFnOnce(&mut Client, &FleetConfig, &Keys) -> Result<T>,
) -> Result<T> {
    let (fleet, keys) = fleet_config(path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async {
        let mut client = connect(&fleet).await?;
        f(&mut client, &fleet, &keys).await
    })
}

fn etcd(what: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> anyhow::Error {
    let what = what.into();
    move |e| FleetError::from_etcd(what, e).into()
}

pub(super) fn run(command: FleetCommand) -> Result<ExitCode> {
    match command {
        FleetCommand::Status { config, json } => status(&config.config, json),
        FleetCommand::Policy { command } => policy(command).map(|()| ExitCode::SUCCESS),
        FleetCommand::Init { config } => init(&config.config).map(|()| ExitCode::SUCCESS),
        FleetCommand::User {
            command:
                FleetUserCommand::Add {
                    config,
                    name,
                    role,
                    password_file,
                },
        } => user_add(&config.config, &name, role, password_file.as_deref())
            .map(|()| ExitCode::SUCCESS),
    }
}

/// Each `(key, revision, value)` read as a `T`; what cannot be is a warning.
fn parse_each<T: serde::de::DeserializeOwned>(
    items: &[(String, i64, Vec<u8>)],
    warnings: &mut Vec<String>,
) -> Vec<T> {
    items
        .iter()
        .filter_map(|(k, r, v)| {
            parse_json(k, *r, v)
                .map_err(|e| warnings.push(e.to_string()))
                .ok()
        })
        .collect()
}

/// Reads every value under `prefix`: `(key, revision, value)`.
async fn read_all(client: &mut Client, prefix: &str) -> Result<(i64, Vec<(String, i64, Vec<u8>)>)> {
    let resp = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(etcd(format!("reading {prefix}")))?;
    let revision = resp.header().map_or(0, |h| h.revision());
    Ok((
        revision,
        resp.kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.mod_revision(),
                    kv.value().to_vec(),
                )
            })
            .collect(),
    ))
}

fn status(path: &Path, json_out: bool) -> Result<ExitCode> {
    let read = with_etcd(path, async |client, _, keys| {
        let (revision, policies) = read_all(client, &keys.policies()).await?;
        let (_, members) = read_all(client, &keys.members()).await?;
        let (_, nodes) = read_all(client, &keys.nodes()).await?;
        Ok((revision, policies, members, nodes))
    });
    let (revision, policies, members, nodes) = match read {
        Ok(r) => r,
        Err(e) => {
            // What this host's agent knows, when one runs.
            let agent = Config::load(path).ok().and_then(|c| {
                let mut client = geowall::control::Client::connect(&c.socket_path()).ok()?;
                client.call(geowall::control::proto::GetStatus {}).ok()
            });
            if let Some(s) = agent
                && let Some(f) = s.fleet
            {
                eprintln!(
                    "geowall: this host ({}) has been {} since {}; it enforces the fleet policies it last applied: {}",
                    f.node,
                    if f.connected {
                        "connected"
                    } else {
                        "cut off from etcd"
                    },
                    f.since.unwrap_or_default(),
                    if f.policies.is_empty() {
                        "none".into()
                    } else {
                        f.policies.join(", ")
                    }
                );
            }
            return Err(e);
        }
    };
    let keys = fleet_config(path)?.1;
    let mut warnings = Vec::new();
    let mut fleet_policies = BTreeMap::new();
    let mut policy_revisions = BTreeMap::new();
    for (key, rev, value) in &policies {
        match keys.policy_name(key) {
            Some(name) => {
                let p = FleetPolicy {
                    text: String::from_utf8_lossy(value).into_owned(),
                    revision: *rev,
                };
                fleet_policies.insert(name.to_owned(), p.sha256());
                policy_revisions.insert(name.to_owned(), *rev);
            }
            None => warnings.push(format!("{key} (revision {rev}): not a policy name")),
        }
    }
    let members: Vec<Member> = parse_each(&members, &mut warnings);
    let nodes: Vec<NodeStatus> = parse_each(&nodes, &mut warnings);
    let rows = view::rows(&members, &nodes, &fleet_policies);
    if json_out {
        println!(
            "{}",
            json!({
                "prefix": keys.prefix(),
                "revision": revision,
                "policies": policy_revisions,
                "nodes": rows,
                "refused": warnings,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "fleet {} (etcd revision {revision}): {} host{}, {} alive; fleet policies: {}",
        keys.prefix(),
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        rows.iter().filter(|r| r.alive).count(),
        if policy_revisions.is_empty() {
            "none".to_owned()
        } else {
            policy_revisions
                .iter()
                .map(|(n, r)| format!("{n}@{r}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    for row in &rows {
        match &row.status {
            Some(s) => {
                let policies: Vec<String> = s
                    .policies
                    .iter()
                    .map(|p| match p.revision {
                        Some(r) => format!("{}@{r}", p.name),
                        None => format!("{} (file)", p.name),
                    })
                    .collect();
                println!(
                    "{:<16} alive   {} (programs {}), {}, epoch {}, policies: {}; audit seq {} head {}…; lost events {}; status of {}",
                    row.node,
                    s.version,
                    s.programs,
                    if s.enforcing {
                        "enforcing"
                    } else {
                        "not enforcing"
                    },
                    s.epoch,
                    if policies.is_empty() {
                        "none".into()
                    } else {
                        policies.join(", ")
                    },
                    s.audit_seq,
                    &s.audit_head[..s.audit_head.len().min(12)],
                    s.lost_events,
                    s.time,
                );
                if let Some(e) = &s.last_error {
                    println!("{:<16}   last error: {e}", "");
                }
            }
            None => println!(
                "{:<16} silent  last joined {}",
                row.node,
                row.joined.as_deref().unwrap_or("?")
            ),
        }
        for f in &row.flags {
            println!("{:<16}   ! {f}", "");
        }
    }
    for w in &warnings {
        eprintln!("geowall: warning: refused {w}");
    }
    Ok(ExitCode::SUCCESS)
}

fn policy(command: FleetPolicyCommand) -> Result<()> {
    match command {
        FleetPolicyCommand::Put { config, files } => put(&config.config, &files),
        FleetPolicyCommand::Get { config, name } => {
            with_etcd(&config.config, async |c, _, keys| {
                let resp = c
                    .get(keys.policy(&name), None)
                    .await
                    .map_err(etcd("reading the policy"))?;
                let kv = resp
                    .kvs()
                    .first()
                    .ok_or_else(|| anyhow!("no fleet policy '{name}' ({})", keys.policy(&name)))?;
                print!("{}", String::from_utf8_lossy(kv.value()));
                Ok(())
            })
        }
        FleetPolicyCommand::Rm { config, name } => with_etcd(&config.config, async |c, _, keys| {
            let resp = c
                .delete(keys.policy(&name), None)
                .await
                .map_err(etcd(format!("removing {}", keys.policy(&name))))?;
            if resp.deleted() == 0 {
                bail!("no fleet policy '{name}' ({})", keys.policy(&name));
            }
            println!(
                "removed {} (revision {})",
                keys.policy(&name),
                resp.header().map_or(0, |h| h.revision())
            );
            Ok(())
        }),
        FleetPolicyCommand::List { config, json } => {
            with_etcd(&config.config, async |c, _, keys| {
                let (_, all) = read_all(c, &keys.policies()).await?;
                let list: Vec<_> = all
                    .iter()
                    .map(|(k, r, v)| {
                        json!({"name": keys.policy_name(k).unwrap_or(k), "revision": r,
                           "sha256": geowall::vocab::hex::sha256_hex(v)})
                    })
                    .collect();
                if json {
                    println!("{}", serde_json::Value::Array(list));
                } else if list.is_empty() {
                    println!("no fleet policies");
                } else {
                    for p in list {
                        println!(
                            "{}@{}  sha256 {}",
                            p["name"].as_str().unwrap_or(""),
                            p["revision"],
                            p["sha256"].as_str().unwrap_or("")
                        );
                    }
                }
                Ok(())
            })
        }
        FleetPolicyCommand::History { config, name, json } => {
            with_etcd(&config.config, async |c, _, keys| {
                history(c, keys, &name, json).await
            })
        }
    }
}

/// Checks each file as `policy check` does (against the config's groups
/// and maps; cgroups aside: they are each host's), then writes them.
fn put(path: &Path, files: &[PathBuf]) -> Result<()> {
    let mut config = Config::load(path)?;
    let mut defs = Vec::new();
    for f in files {
        let def = load_policy_file(f)?;
        if !valid_segment(&def.name) {
            bail!(
                "{}: policy name '{}' cannot be a key segment",
                f.display(),
                def.name
            );
        }
        defs.push((f.clone(), def));
    }
    let mut checked = config.clone();
    checked.policies = defs
        .iter()
        .map(|(_, d)| {
            let mut d = d.clone();
            d.body.cgroups.clear();
            d
        })
        .collect();
    checked.file.agent.default_policy = None;
    let hierarchy = geowall::host::cgroup::Hierarchy::discover()?;
    geowall::plan::build(&checked, &hierarchy)
        .context("refused: nothing was written to the fleet")?;
    config.policies.clear();
    with_etcd(path, async |c, _, keys| {
        for (file, def) in &defs {
            let text =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let key = keys.policy(&def.name);
            let resp = c
                .put(key.as_bytes(), text, None)
                .await
                .map_err(|e| {
                    anyhow::Error::from(FleetError::from_etcd(format!("writing {key}"), e).with_hint(
                        " (writing fleet policies needs etcd's root user or the role geowall-admin)",
                    ))
                })?;
            println!(
                "{}: written to {key} (revision {})",
                file.display(),
                resp.header().map_or(0, |h| h.revision())
            );
        }
        Ok(())
    })
}

/// A policy's versions, newest first.
async fn history(c: &mut Client, keys: &Keys, name: &str, json_out: bool) -> Result<()> {
    let key = keys.policy(name);
    let mut at: Option<i64> = None;
    let mut out = Vec::new();
    loop {
        let opts = at.map(|r| GetOptions::new().with_revision(r));
        let resp = match c.get(key.as_bytes(), opts).await {
            Ok(r) => r,
            Err(e) if e.to_string().contains("compacted") => {
                out.push(json!({"compacted": at}));
                break;
            }
            Err(e) => return Err(etcd(format!("reading {key}"))(e)),
        };
        let Some(kv) = resp.kvs().first() else {
            if at.is_none() {
                out.push(
                    json!({"deleted": true, "revision": resp.header().map_or(0, |h| h.revision())}),
                );
            }
            break;
        };
        let sha = geowall::vocab::hex::sha256_hex(kv.value());
        out.push(json!({"revision": kv.mod_revision(), "version": kv.version(), "created": kv.create_revision(), "sha256": sha}));
        if kv.version() <= 1 {
            break;
        }
        at = Some(kv.mod_revision() - 1);
    }
    if out.iter().all(|v| v.get("sha256").is_none()) && at.is_none() {
        // Deleted now: go back through the key's last life.
        bail!(
            "no fleet policy '{name}' ({key}) now: `geowall fleet policy history` follows a policy that exists"
        );
    }
    if json_out {
        println!("{}", serde_json::Value::Array(out));
        return Ok(());
    }
    for v in out {
        if let Some(r) = v.get("compacted") {
            println!("(older versions compacted away before revision {r})");
        } else {
            println!(
                "revision {}  version {}  sha256 {}",
                v["revision"],
                v["version"],
                v["sha256"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

/// The permissions of each role `fleet init` creates.
fn role_permissions(keys: &Keys) -> Vec<(&'static str, Vec<Permission>)> {
    vec![
        (
            "geowall-node",
            vec![
                Permission::read(keys.policies()).with_prefix(),
                Permission::read(keys.grants()).with_prefix(),
            ],
        ),
        (
            "geowall-approver",
            vec![Permission::read(keys.all()).with_prefix()],
        ),
        (
            "geowall-admin",
            vec![
                Permission::read(keys.all()).with_prefix(),
                Permission::read_write(keys.policies()).with_prefix(),
            ],
        ),
    ]
}

/// The permissions a user of `role` gets on its own keys (a role named
/// after the user).
fn own_permissions(keys: &Keys, role: FleetRole, name: &str) -> Vec<Permission> {
    match role {
        FleetRole::Node => vec![
            Permission::read_write(keys.node_requests(name)).with_prefix(),
            Permission::read_write(keys.node(name)),
            Permission::read_write(keys.member(name)),
        ],
        FleetRole::Approver => vec![Permission::read_write(keys.user_grants(name)).with_prefix()],
        FleetRole::Admin => Vec::new(),
    }
}

fn exists(e: &etcd_client::Error) -> bool {
    e.to_string().contains("already exists")
}

fn init(path: &Path) -> Result<()> {
    with_etcd(path, async |c, _, keys| {
        for (role, perms) in role_permissions(keys) {
            match c.role_add(role).await {
                Ok(_) => println!("role {role}: created"),
                Err(e) if exists(&e) => println!("role {role}: exists"),
                Err(e) => {
                    return Err(FleetError::from_etcd(format!("creating role {role}"), e)
                        .with_hint(
                            " (fleet init runs as etcd's root user: [fleet] user = \"root\")",
                        )
                        .into());
                }
            }
            for p in perms {
                let what = format!(
                    "{} {}{}",
                    match p.get_type() {
                        0 => "read",
                        1 => "write",
                        _ => "readwrite",
                    },
                    String::from_utf8_lossy(p.key()),
                    if p.range_end().is_empty() { "" } else { "*" }
                );
                c.role_grant_permission(role, p)
                    .await
                    .map_err(etcd(format!("granting {role} {what}")))?;
                println!("role {role}: {what}");
            }
        }
        Ok(())
    })
}

fn user_add(path: &Path, name: &str, role: FleetRole, password_file: Option<&Path>) -> Result<()> {
    if !valid_segment(name) {
        bail!("user name '{name}': use letters, digits, '-', '_' and '.' (it is a key segment)");
    }
    let password = password_file
        .map(|f| {
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))
                .map(|t| t.lines().next().unwrap_or_default().to_owned())
        })
        .transpose()?;
    let base = match role {
        FleetRole::Node => "geowall-node",
        FleetRole::Approver => "geowall-approver",
        FleetRole::Admin => "geowall-admin",
    };
    with_etcd(path, async |c, _, keys| {
        let added = match &password {
            Some(p) => c.user_add(name, p.clone(), None).await,
            None => {
                c.user_add(name, "", Some(UserAddOptions::new().with_no_pwd()))
                    .await
            }
        };
        match added {
            Ok(_) => println!("user {name}: created"),
            Err(e) if exists(&e) => println!("user {name}: exists"),
            Err(e) => return Err(etcd(format!("creating user {name}"))(e)),
        }
        c.user_grant_role(name, base).await.map_err(|e| {
            anyhow::Error::from(
                FleetError::from_etcd(format!("giving {name} the role {base}"), e)
                    .with_hint(" (run `geowall fleet init` first)"),
            )
        })?;
        println!("user {name}: role {base}");
        let own = own_permissions(keys, role, name);
        if !own.is_empty() {
            let own_role = format!("{base}-{name}");
            match c.role_add(own_role.clone()).await {
                Ok(_) => {}
                Err(e) if exists(&e) => {}
                Err(e) => return Err(etcd(format!("creating role {own_role}"))(e)),
            }
            for p in own {
                let key = String::from_utf8_lossy(p.key()).into_owned();
                c.role_grant_permission(own_role.clone(), p)
                    .await
                    .map_err(etcd(format!("granting {own_role} {key}")))?;
                println!("role {own_role}: readwrite {key}");
            }
            c.user_grant_role(name, own_role.clone())
                .await
                .map_err(etcd(format!("giving {name} the role {own_role}")))?;
            println!("user {name}: role {own_role}");
        }
        Ok(())
    })
}

/// `approvals list --fleet`.
pub(super) fn list_requests(path: &Path, pending: bool, json_out: bool) -> Result<()> {
    let (rows, refused) = with_etcd(path, async |c, _, keys| {
        let (_, all) = read_all(c, &keys.requests()).await?;
        let mut rows = Vec::new();
        let mut refused = Vec::new();
        for (k, r, v) in all {
            match parse_json::<RequestValue>(&k, r, &v) {
                Ok(req) => rows.push(req),
                Err(e) => refused.push(e.to_string()),
            }
        }
        Ok((rows, refused))
    })?;
    let rows: Vec<RequestValue> = rows
        .into_iter()
        .filter(|r| !pending || r.request.state == Stage::Pending)
        .collect();
    for w in &refused {
        eprintln!("geowall: warning: refused {w}");
    }
    if json_out {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(&r.request).expect("json");
                v["fleet_id"] = json!(format!("{}/{}", r.node, r.request.id));
                v["node"] = json!(r.node);
                v["fleet"] = serde_json::to_value(&r.fleet).expect("json");
                v
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    if rows.is_empty() {
        println!("no approval requests in the fleet");
    }
    for r in &rows {
        let l = super::render::approval_line(&r.request);
        let l = l.trim_start();
        let (_, rest) = l.split_once(' ').unwrap_or(("", l));
        let applied = match &r.fleet {
            Some(c) => format!("  [{} by {} at {}]", c.state, c.by, c.time),
            None => String::new(),
        };
        println!(
            "{:>12}  {}{applied}",
            format!("{}/{}", r.node, r.request.id),
            rest.trim_start()
        );
    }
    Ok(())
}

/// `approvals approve|deny|revoke NODE/ID --fleet`: writes the decision
/// under this user's name and waits for the host to confirm.
pub(super) fn decide(
    path: &Path,
    id: &str,
    decision: &str,
    for_: Option<&str>,
    reason: Option<String>,
) -> Result<()> {
    let (node, id) = parse_fleet_id(id).ok_or_else(|| {
        anyhow!(
            "'{id}': with --fleet, name the request NODE/ID (as `approvals list --fleet` shows it)"
        )
    })?;
    let wanted = for_.map(parse_duration).transpose()?;
    let started = Instant::now();
    with_etcd(path, async |c, fleet, keys| {
        let user = fleet.user.clone().ok_or_else(|| {
            anyhow!("--fleet decisions are written under the etcd user's name: set [fleet] user (your etcd user, or your client certificate's common name)")
        })?;
        let request_key = keys.request(node, id);
        let resp = c
            .get(request_key.as_bytes(), None)
            .await
            .map_err(etcd(format!("reading {request_key}")))?;
        let kv = resp
            .kvs()
            .first()
            .ok_or_else(|| anyhow!("no request {node}/{id} in the fleet ({request_key})"))?;
        let request: RequestValue = parse_json(&request_key, kv.mod_revision(), kv.value())?;
        let expected = if decision == "revoke" {
            Stage::Approved
        } else {
            Stage::Pending
        };
        if request.request.state != expected {
            bail!(
                "request {node}/{id} is {}, not {}: nothing to {decision}",
                request.request.state.as_str(),
                expected.as_str()
            );
        }
        let now = clock::unix_ms();
        let (ttl, expires_ms) = if decision == "approve" {
            let length = wanted.unwrap_or(Duration::from_secs(
                parse_duration(&request.request.for_)
                    .map(|d| d.as_secs())
                    .unwrap_or(3600),
            ));
            if length.is_zero() {
                bail!("a grant must last longer than 0s");
            }
            (
                length.as_secs().max(1) as i64,
                Some(now + length.as_millis() as u64),
            )
        } else {
            (DECISION_KEEP, None)
        };
        let value = DecisionValue {
            decision: decision.to_owned(),
            expires_ms,
            reason: reason.clone(),
            time: rfc3339_ms(now),
        };
        let grant_key = keys.grant(&user, node, id);
        let lease = c
            .lease_grant(ttl, None)
            .await
            .map_err(etcd("granting the decision's lease"))?
            .id();
        let put = c
            .put(
                grant_key.as_bytes(),
                serde_json::to_vec(&value).expect("json"),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await;
        let revision = match put {
            Ok(r) => r.header().map_or(0, |h| h.revision()),
            Err(e) => {
                let _ = c.lease_revoke(lease).await;
                return Err(FleetError::from_etcd(format!("writing {grant_key}"), e)
                    .with_hint(format!(
                        " (user '{user}' may not write {}: approvers need the roles geowall-approver and geowall-approver-{user}: `geowall fleet user add {user} --role approver`, as etcd's root user)",
                        keys.user_grants(&user)
                    ))
                    .into());
            }
        };
        let written = started.elapsed();
        // The host confirms on its request key.
        let deadline = Instant::now() + CONFIRM_WAIT;
        loop {
            let resp = c
                .get(request_key.as_bytes(), None)
                .await
                .map_err(etcd(format!("reading {request_key}")))?;
            if let Some(kv) = resp.kvs().first()
                && let Ok(r) =
                    parse_json::<RequestValue>(&request_key, kv.mod_revision(), kv.value())
                && let Some(conf) = r
                    .fleet
                    .filter(|c| c.key == grant_key && c.revision == revision)
            {
                if conf.state == "applied" {
                    println!(
                        "{}: {node}/{id} by etcd user {user}; written at revision {revision} in {} ms, applied on {node} at {} ({} ms after the command started)",
                        match decision {
                            "approve" => "approved",
                            "deny" => "denied",
                            _ => "revoked",
                        },
                        written.as_millis(),
                        conf.time,
                        started.elapsed().as_millis(),
                    );
                    if decision == "approve" {
                        println!("grant ends {}", rfc3339_ms(expires_ms.unwrap_or(now)));
                    }
                    return Ok(());
                }
                bail!(
                    "{node} refused the {decision} of {node}/{id}: {}",
                    conf.why.unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                println!(
                    "written to {grant_key} (revision {revision}); {node} has not confirmed within {}s: it applies the decision when it next reaches etcd{}",
                    CONFIRM_WAIT.as_secs(),
                    if decision == "approve" {
                        ", unless the grant has ended by then"
                    } else {
                        ""
                    }
                );
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}
