//! `geowall policy check|explain|apply`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Result, anyhow, bail};

use super::args::{DEFAULT_CONFIG, PolicyCommand};
use geowall::{
    config::{Action, Config, load_policy_file},
    control::{
        Client, ClientError,
        proto::{PolicyExplain, Reload},
    },
    dns::{NamePattern, resolve::resolve},
    host::cgroup::Hierarchy,
    plan::{self, Plan},
    policy::{CompiledPolicy, NamesPolicy},
    regions::{TagKind, countries, kind},
    tables::{
        explain::{CompiledView, Explanation, PolicyText, Target, explain},
        layout,
    },
};

pub(super) fn run(cmd: PolicyCommand) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Check {
            config,
            must_reach,
            strict,
            files,
        } => check(config.as_deref(), &files, &must_reach, strict),
        PolicyCommand::Explain {
            config,
            policy,
            proto,
            offline,
            json,
            dests,
        } => explain_cmd(&config, &policy, &proto, offline, json, &dests),
        PolicyCommand::Apply { config } => apply(&config),
    }
}

/// The config to check against: the named one, else the default one when
/// it exists, else an empty one (built-in map, no groups).
fn context_config(path: Option<&Path>) -> Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None if Path::new(DEFAULT_CONFIG).exists() => Ok(Config::load(Path::new(DEFAULT_CONFIG))?),
        None => Ok(Config::parse(Path::new("(no config)"), String::new())?),
    }
}

fn build(config: &Config) -> Result<Plan> {
    let hierarchy = Hierarchy::discover()?;
    Ok(plan::build(config, &hierarchy)?)
}

fn check(
    config: Option<&Path>,
    files: &[PathBuf],
    must_reach: &[String],
    strict: bool,
) -> Result<ExitCode> {
    let mut config = context_config(config)?;
    if !files.is_empty() {
        config.policies = files
            .iter()
            .map(|f| load_policy_file(f))
            .collect::<Result<_, _>>()?;
        // The files are checked on their own: a default policy of the
        // config may not be among them.
        config.file.agent.default_policy = None;
    }
    let dests = must_reach
        .iter()
        .map(|d| parse_dest(d, 6))
        .collect::<Result<Vec<_>, _>>()?;
    let targets = targets(&config, dests, 6)?;
    let nat64 = config.nat64_prefixes()?;
    let plan = build(&config)?;
    if plan.policies.is_empty() {
        bail!("{}: no policies to check", config.path.display());
    }
    let layout = layout::layout(&plan, &[], &[])?;
    let view = CompiledView::new(&layout, &plan.map.tagsets);
    let mut warnings = 0;
    for p in &plan.policies {
        print_policy(p, plan.default_policy.as_deref() == Some(&p.name));
        let slot = layout.slots[&p.name];
        for t in &targets {
            let e = explain(&view, &plan.map, slot, &text_of(p, &nat64), t, "compiled")?;
            if e.verdict != "allow" {
                warnings += 1;
                eprintln!(
                    "geowall: warning: policy '{}' would {} {}:{} ({}): the jobs' control plane \
                     needs it",
                    p.name,
                    if e.verdict == "deny" {
                        "deny"
                    } else {
                        "record as would_deny"
                    },
                    e.dst,
                    e.port,
                    e.why
                );
            }
        }
    }
    println!(
        "{} polic{} ok",
        plan.policies.len(),
        if plan.policies.len() == 1 { "y" } else { "ies" }
    );
    Ok(if strict && warnings > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn text_of<'a>(p: &'a CompiledPolicy, nat64: &'a [(Ipv6Addr, u8)]) -> PolicyText<'a> {
    PolicyText {
        name: &p.name,
        rules: &p.rules,
        allowed: &p.allowed,
        denied: &p.denied,
        names: &p.names,
        nat64,
    }
}

fn action(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
    }
}

fn print_policy(p: &CompiledPolicy, default: bool) {
    let mode = format!("{:?}", p.mode).to_lowercase();
    println!("policy {} ({mode}) — {}", p.name, p.place);
    if let Some(d) = &p.description {
        println!("  {d}");
    }
    println!("  allow: {}", p.allow_written.join(", "));
    if !p.deny_written.is_empty() {
        println!("  deny: {}", p.deny_written.join(", "));
    }
    let (countries_, clouds): (Vec<&String>, Vec<&String>) = p
        .effective_allowed()
        .partition(|t| matches!(kind(t), Some(TagKind::Country)));
    if !countries_.is_empty() {
        let named: Vec<String> = countries_
            .iter()
            .map(|c| match countries::name(c) {
                Some(n) => format!("{c} {n}"),
                None => (*c).clone(),
            })
            .collect();
        println!("  countries ({}): {}", named.len(), named.join(", "));
    }
    if !clouds.is_empty() {
        let list: Vec<&str> = clouds.iter().map(|s| s.as_str()).collect();
        println!("  cloud regions ({}): {}", list.len(), list.join(", "));
    }
    let carved: Vec<&str> = p.denied.iter().map(String::as_str).collect();
    if !carved.is_empty() {
        println!(
            "  carved out (denied even when another tag is allowed): {}",
            carved.join(", ")
        );
    }
    println!(
        "  untagged: {}, local: {}, raw sockets: {}, ping: {}, log allowed: {}",
        action(p.untagged),
        action(p.local),
        action(p.raw_sockets),
        action(p.ping),
        format!("{:?}", p.log_allowed).to_lowercase()
    );
    for r in &p.rules {
        println!("  rule: {}", r.text);
    }
    print_names(&p.names);
    let mut bound: Vec<String> = p.cgroups.iter().map(|c| c.display().to_string()).collect();
    bound.extend(p.units.iter().map(|u| format!("unit {u}")));
    if default {
        bound.push("everything else in the governed subtree (default_policy)".into());
    }
    if !bound.is_empty() {
        println!("  bound to: {}", bound.join(", "));
    }
}

/// What a policy does with names, as `policy check` prints it.
fn print_names(n: &NamesPolicy) {
    let list = |p: &[NamePattern]| {
        p.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !n.allow.is_empty() {
        println!(
            "  names allowed (whatever their regions, while the job's answer is live): {}",
            list(&n.allow)
        );
    }
    if !n.deny.is_empty() {
        println!("  names denied (NXDOMAIN): {}", list(&n.deny));
    }
    if n.resolved_only {
        println!(
            "  resolved only: an address the job did not resolve through the agent is refused"
        );
    }
    if let Some(max) = n.max_names_per_minute {
        println!("  at most {max} distinct names per minute per job");
    }
}

/// A destination as written: `ADDR`, `ADDR:PORT`, `[V6]:PORT`, or a name
/// (`NAME`, `NAME:PORT`), to be resolved. The port defaults to 443.
enum Dest {
    Addr(Target),
    Name { name: String, port: u16 },
}

fn parse_dest(s: &str, proto: u8) -> Result<Dest> {
    let target = |addr, port| {
        Dest::Addr(Target {
            addr,
            port,
            proto,
            names: Vec::new(),
        })
    };
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(target(addr, 443));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(target(sa.ip(), sa.port()));
    }
    let (name, port) = match s.rsplit_once(':') {
        Some((name, port)) => {
            let port = port.parse::<u16>().map_err(|_| {
                anyhow!("'{s}': expected ADDR, ADDR:PORT, [IPv6]:PORT, NAME or NAME:PORT")
            })?;
            (name, port)
        }
        None => (s, 443),
    };
    let pattern = NamePattern::parse(name).map_err(|e| {
        anyhow!("'{s}': expected ADDR, ADDR:PORT, [IPv6]:PORT, NAME or NAME:PORT ({e})")
    })?;
    if !pattern.is_exact() {
        bail!("'{s}': a name to resolve, not a pattern");
    }
    Ok(Dest::Name {
        name: pattern.to_string(),
        port,
    })
}

/// The resolvers `policy explain NAME` asks: `[dns] upstream`, else the
/// host's /etc/resolv.conf.
fn resolvers(config: &Config) -> Result<Vec<SocketAddr>> {
    let upstream = config
        .file
        .dns
        .upstreams()
        .map_err(|e| anyhow!("{}: {}", config.path.display(), e.message))?;
    if !upstream.is_empty() {
        return Ok(upstream);
    }
    let text = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| anyhow!("/etc/resolv.conf: {e} (set [dns] upstream)"))?;
    Ok(geowall::config::dns::resolv_conf_nameservers(&text))
}

/// The targets of `dests`, names resolved (each address a target carrying
/// the chain that led to it).
fn targets(config: &Config, dests: Vec<Dest>, proto: u8) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    let mut servers = None;
    for d in dests {
        match d {
            Dest::Addr(t) => out.push(t),
            Dest::Name { name, port } => {
                let servers = match &servers {
                    Some(s) => s,
                    None => servers.insert(resolvers(config)?),
                };
                let r = resolve(&name, servers, config.file.dns.timeout.0)?;
                out.extend(r.addresses.iter().map(|&addr| Target {
                    addr,
                    port,
                    proto,
                    names: r.chain.clone(),
                }));
            }
        }
    }
    Ok(out)
}

fn proto_number(p: &str) -> Result<u8> {
    match p {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        other => bail!("--proto {other}: expected tcp or udp"),
    }
}

/// Targets per request, to stay well inside the control protocol's line
/// limit.
const EXPLAIN_BATCH: usize = 400;

fn explain_cmd(
    config_path: &Path,
    policy: &str,
    proto: &str,
    offline: bool,
    json: bool,
    dests: &[String],
) -> Result<ExitCode> {
    let proto = proto_number(proto)?;
    let dests = dests
        .iter()
        .map(|d| parse_dest(d, proto))
        .collect::<Result<Vec<_>, _>>()?;
    let config = Config::load(config_path)?;
    let targets = targets(&config, dests, proto)?;
    let from_agent = if offline {
        None
    } else {
        match Client::connect(&config.socket_path()) {
            Ok(mut client) => {
                let mut out = Vec::with_capacity(targets.len());
                for chunk in targets.chunks(EXPLAIN_BATCH) {
                    let part = client.call(PolicyExplain {
                        policy: policy.to_owned(),
                        targets: chunk.to_vec(),
                    })?;
                    out.extend(part);
                }
                Some(out)
            }
            Err(ClientError::NotRunning(_) | ClientError::Stale(_)) => None,
            Err(e) => return Err(e.into()),
        }
    };
    let explained = match from_agent {
        Some(e) => e,
        None => explain_offline(&config, policy, &targets)?,
    };
    for e in &explained {
        if json {
            println!("{}", serde_json::to_string(e)?);
        } else {
            print_explanation(e);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn explain_offline(config: &Config, policy: &str, targets: &[Target]) -> Result<Vec<Explanation>> {
    let plan = build(config)?;
    let Some(p) = plan.policy(policy) else {
        let hint = geowall::regions::suggest(policy, plan.policies.iter().map(|p| p.name.as_str()))
            .map(|s| format!(" (did you mean '{s}'?)"))
            .unwrap_or_default();
        bail!(
            "{}: no policy named '{policy}'{hint}",
            config.path.display()
        );
    };
    let layout = layout::layout(&plan, &[], &[])?;
    let view = CompiledView::new(&layout, &plan.map.tagsets);
    let slot = layout.slots[&p.name];
    let nat64 = config.nat64_prefixes()?;
    let mut out = targets
        .iter()
        .map(|t| explain(&view, &plan.map, slot, &text_of(p, &nat64), t, "compiled"))
        .collect::<Result<Vec<_>, _>>()?;
    // What each source says, from the sources as the config names them.
    let specs: Vec<_> = plan.sources.iter().map(|s| s.spec.clone()).collect();
    let addrs: Vec<IpAddr> = out.iter().filter_map(|e| e.dst.parse().ok()).collect();
    let answers = geowall::regions::query::lookup(
        &plan.map,
        geowall::regions::query::SourceData::Files {
            specs: &specs,
            max_bytes: config.file.agent.max_source_bytes,
        },
        &addrs,
    )?;
    for (e, a) in out.iter_mut().zip(answers) {
        e.sources = a.sources;
    }
    Ok(out)
}

fn print_explanation(e: &Explanation) {
    let name = match e.names.as_slice() {
        [] => String::new(),
        [one] => format!("{one} "),
        [first, .., last] => format!("{first} (→ {last}) "),
    };
    println!(
        "{name}{}:{}/{} under {}: {}",
        e.dst, e.port, e.proto, e.policy, e.verdict
    );
    if e.names.len() > 1 {
        println!("  names: {}", e.names.join(" → "));
    }
    if let Some(inner) = &e.inner {
        println!("  carries IPv4 {inner} (judged too; the stricter verdict stands)");
    }
    println!("  why: {} (reason: {})", e.why, e.reason);
    if let Some(r) = &e.rule {
        println!("  rule: {r}");
    }
    let tags = if e.tags.is_empty() {
        "untagged".to_owned()
    } else {
        e.tags.join(", ")
    };
    println!(
        "  prefix: {}  tags: {tags}  (kernel trie entry {})",
        e.prefix.as_deref().unwrap_or("-"),
        e.entry.as_deref().unwrap_or("-")
    );
    let mut by_source: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for s in &e.sources {
        by_source
            .entry(&s.source)
            .or_default()
            .push(format!("{} {}", s.prefix, s.tags.join(",")));
    }
    for (source, says) in by_source {
        println!("  source {source}: {}", says.join("; "));
    }
    println!("  tables: {}", e.tables);
}

fn apply(config_path: &Path) -> Result<ExitCode> {
    // Checked here first: a mistake is reported with its place, and the
    // agent is not asked at all.
    let config = Config::load(config_path)?;
    let plan = build(&config)?;
    let mut client = Client::connect(&config.socket_path())?;
    let v = client.call(Reload {})?;
    println!(
        "geowall: {} policies in force from epoch {} ({})",
        plan.policies.len(),
        v.epoch,
        plan.policies
            .iter()
            .map(|p| format!("{} {}", p.name, format!("{:?}", p.mode).to_lowercase()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    super::map::after_switch(&v)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let addr = |s: &str, proto| match parse_dest(s, proto).unwrap() {
            Dest::Addr(t) => (t.port, t.proto),
            Dest::Name { name, .. } => panic!("{s}: read as the name {name}"),
        };
        assert_eq!(addr("192.0.2.1", 6), (443, 6));
        assert_eq!(addr("192.0.2.1:5432", 17), (5432, 17));
        assert_eq!(addr("[2001:db8::1]:53", 17).0, 53);
        assert_eq!(addr("2001:db8::1", 6).0, 443);
        let name = |s: &str| match parse_dest(s, 6).unwrap() {
            Dest::Name { name, port } => (name, port),
            Dest::Addr(t) => panic!("{s}: read as the address {}", t.addr),
        };
        assert_eq!(name("API.example.com:80"), ("api.example.com".into(), 80));
        assert_eq!(name("example.com."), ("example.com".into(), 443));
        assert!(parse_dest("*.example.com", 6).is_err(), "a pattern");
        assert!(parse_dest("example.com:http", 6).is_err());
        assert!(parse_dest("exa mple.com", 6).is_err());
    }
}
