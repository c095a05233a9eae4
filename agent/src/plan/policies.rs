//! The policies of a config, compiled: regions resolved (against the
//! map's tags once it is read), rules parsed, cgroups and units checked.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
};

use thiserror::Error;
use toml::Spanned;

use crate::{
    config::{Action, Config, ConfigError, Mode, PolicyDef, PortSpec, RuleConfig},
    dns::NamePattern,
    host::cgroup::Hierarchy,
    policy::{CompiledPolicy, CompiledRule, NamesPolicy, Resolver},
    regions::{Prefix, countries, groups},
    vocab::error::Chain,
};

fn valid_policy_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < geowall_common::POLICY_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The user-defined groups of `[groups]`, checked for their names (members
/// are checked when the policies resolve them).
fn user_groups(config: &Config) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, members) in &config.file.groups {
        let at = |msg: String| config.error_at(members.span(), format!("group '{name}': {msg}"));
        let form_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if !form_ok {
            return Err(at("use letters, digits, '-' and '_' in group names".into()));
        }
        if groups::members(name).is_some() {
            return Err(at("a built-in group has this name".into()));
        }
        if name.len() == 2 && countries::name(&name.to_ascii_uppercase()).is_some() {
            return Err(at("a country code cannot be a group name".into()));
        }
        if members.get_ref().is_empty() {
            return Err(at("the group is empty".into()));
        }
        out.insert(
            name.clone(),
            members
                .get_ref()
                .iter()
                .map(|m| m.get_ref().clone())
                .collect(),
        );
    }
    Ok(out)
}

/// Checks that every member of every user group resolves, locating the
/// first that does not.
fn check_groups(config: &Config, resolver: &Resolver<'_>) -> Result<(), ConfigError> {
    for (name, members) in &config.file.groups {
        for m in members.get_ref() {
            resolver
                .resolve(m.get_ref())
                .map_err(|e| config.error_at(m.span(), format!("group '{name}': {}", Chain(&e))))?;
        }
    }
    Ok(())
}

/// Compiles the policies. Without a map (`map_tags` None) cloud regions are
/// only checked for their form: that first pass reports every other mistake
/// before the map sources are read.
pub(super) fn policies(
    config: &Config,
    hierarchy: &Hierarchy,
    governed: &Path,
    map_tags: Option<&BTreeSet<String>>,
) -> Result<Vec<CompiledPolicy>, ConfigError> {
    let groups = user_groups(config)?;
    let resolver = Resolver {
        map_tags,
        groups: &groups,
    };
    check_groups(config, &resolver)?;
    if config.policies.len() > geowall_common::MAX_POLICIES as usize {
        return Err(config.error(format!(
            "{} policies: at most {} can be loaded",
            config.policies.len(),
            geowall_common::MAX_POLICIES
        )));
    }
    let mut out: Vec<CompiledPolicy> = Vec::new();
    let mut seen: HashMap<&str, String> = HashMap::new();
    let mut bound: HashMap<PathBuf, String> = HashMap::new();
    for def in &config.policies {
        let name = def.name.as_str();
        if !valid_policy_name(name) {
            return Err(def.error(format!(
                "bad policy name: use letters, digits, '-', '_' and '.', at most {} bytes",
                geowall_common::POLICY_NAME_LEN - 1
            )));
        }
        if let Some(first) = seen.get(name) {
            return Err(def.error(format!("defined twice (first at {first})")));
        }
        seen.insert(name, def.place());
        let policy = compile_policy(def, &resolver, hierarchy, governed, &mut bound, config)?;
        out.push(policy);
    }
    Ok(out)
}

fn resolve_list(
    def: &PolicyDef,
    resolver: &Resolver<'_>,
    list: &[Spanned<String>],
) -> Result<BTreeSet<String>, ConfigError> {
    let mut tags = BTreeSet::new();
    for token in list {
        let resolved = resolver
            .resolve(token.get_ref())
            .map_err(|e| def.error_at(token.span(), Chain(&e)))?;
        tags.extend(resolved);
    }
    Ok(tags)
}

fn compile_policy(
    def: &PolicyDef,
    resolver: &Resolver<'_>,
    hierarchy: &Hierarchy,
    governed: &Path,
    bound: &mut HashMap<PathBuf, String>,
    config: &Config,
) -> Result<CompiledPolicy, ConfigError> {
    let p = &def.body;
    let name = def.name.as_str();
    let allowed = resolve_list(def, resolver, p.allow())?;
    let denied = resolve_list(def, resolver, p.deny())?;
    // Located at `allow` when it is written, else at the policy.
    let whole = |msg: &str| match &p.allow {
        Some(a) => def.error_at(a.span(), msg),
        None => def.error(msg),
    };
    if allowed.is_empty() {
        return Err(whole(
            "allows no region: add `allow = [...]` (countries like \"DE\", groups like \"EU\", \
             cloud regions like \"aws:eu-west-1\")",
        ));
    }
    // Before the map is read a cloud glob is not expanded: only a complete
    // carve-out of concrete tags can be seen then.
    if allowed.iter().all(|t| denied.contains(t)) {
        return Err(whole(
            "`deny` removes every allowed region: the allow-set is empty",
        ));
    }
    let rules = p
        .rules
        .iter()
        .map(|r| rule(def, r))
        .collect::<Result<Vec<_>, _>>()?;

    let mut cgroups = Vec::new();
    for cg in &p.cgroups {
        let path = hierarchy
            .resolve_under(governed, cg.get_ref())
            .map_err(|e| def.error_at(cg.span(), Chain(&e)))?;
        if !path.is_dir() {
            return Err(def.error_at(
                cg.span(),
                format!(
                    "cgroup '{}' does not exist ({})",
                    cg.get_ref(),
                    path.display()
                ),
            ));
        }
        if let Some(other) = bound.insert(path.clone(), name.to_owned()) {
            return Err(def.error_at(
                cg.span(),
                format!(
                    "cgroup '{}' is bound to both '{other}' and '{name}'",
                    cg.get_ref()
                ),
            ));
        }
        check_host_enforce(config, hierarchy, &path, p.mode)
            .map_err(|e| def.error_at(cg.span(), e))?;
        cgroups.push(path);
    }
    let mut units = Vec::new();
    if let Some(u) = &p.unit {
        for unit in u.get_ref().items() {
            check_unit(unit).map_err(|e| def.error_at(u.span(), e))?;
            units.push(unit.to_owned());
        }
    }
    let names = names(config, def)?;
    Ok(CompiledPolicy {
        name: name.to_owned(),
        place: def.place(),
        description: p.description.clone(),
        mode: p.mode,
        allowed,
        denied,
        allow_written: p.allow().iter().map(|t| t.get_ref().clone()).collect(),
        deny_written: p.deny().iter().map(|t| t.get_ref().clone()).collect(),
        untagged: p.untagged,
        local: p.local,
        rules,
        cgroups,
        units,
        log_allowed: p.log_allowed,
        raw_sockets: p.raw_sockets,
        ping: p.ping,
        approvable: p.approvable,
        max_grant: p.max_grant.0,
        names,
        inbound: p.inbound,
    })
}

/// The names keys of each policy of `config` whose keys check, by policy
/// name: what the DNS forwarder applies at start, while the programs load
/// and before the policies are compiled in full (a policy whose keys do
/// not check fails that compilation, and the forwarder applies none of its
/// names meanwhile).
pub fn names_policies(config: &Config) -> BTreeMap<String, NamesPolicy> {
    config
        .policies
        .iter()
        .filter_map(|def| Some((def.name.clone(), names(config, def).ok()?)))
        .collect()
}

/// The policy's keys about names, checked: patterns parse (located), and
/// they need the forwarder.
fn names(config: &Config, def: &PolicyDef) -> Result<NamesPolicy, ConfigError> {
    let p = &def.body;
    let patterns = |list: &[Spanned<String>]| {
        list.iter()
            .map(|n| {
                NamePattern::parse(n.get_ref()).map_err(|e| def.error_at(n.span(), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let allow = patterns(&p.allow_names)?;
    let deny = patterns(&p.deny_names)?;
    if !config.file.dns.enabled {
        let needs = if !allow.is_empty() {
            Some("allow_names")
        } else if !deny.is_empty() {
            Some("deny_names")
        } else if p.resolved_only {
            Some("resolved_only")
        } else {
            None
        };
        if let Some(key) = needs {
            return Err(def.error(format!(
                "{key} needs the DNS forwarder, and [dns] enabled = false"
            )));
        }
    }
    if p.max_names_per_minute == Some(0) {
        return Err(def.error(
            "max_names_per_minute = 0 would refuse every query: leave it out for no limit",
        ));
    }
    Ok(NamesPolicy {
        allow,
        deny,
        resolved_only: p.resolved_only,
        log_dns: p.log_dns,
        max_names_per_minute: p.max_names_per_minute,
    })
}

/// An enforcing policy on the cgroup v2 root cuts the whole host off when
/// it is wrong: only with `[agent] allow_host_enforce`.
fn check_host_enforce(
    config: &Config,
    hierarchy: &Hierarchy,
    path: &Path,
    mode: Mode,
) -> Result<(), PolicyTextError> {
    if path == hierarchy.mount() && mode == Mode::Enforce && !config.file.agent.allow_host_enforce {
        return Err(PolicyTextError::HostEnforce);
    }
    Ok(())
}

/// What is wrong with a value of a policy (the config error locates it).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
enum PolicyTextError {
    #[error(
        "this would enforce on the whole host (the cgroup v2 root): use mode = \"audit\", \
         or set [agent] allow_host_enforce = true if you really mean it"
    )]
    HostEnforce,
    #[error(
        "unit '{0}': expected a systemd unit name or glob ending in .service, .scope or \
         .slice (like \"executor@*.service\")"
    )]
    Unit(String),
    #[error(
        "rule '{text}': {why}; expected \"CIDR [tcp|udp|any[/PORT[-PORT]]] allow|deny\" \
         (like \"10.0.0.0/8 tcp/5432 allow\")"
    )]
    Rule { text: String, why: RuleProblem },
    #[error("port 0 matches nothing")]
    PortZero,
    #[error("port '{0}': expected a port (5432) or a range (\"8000-8099\")")]
    Port(String),
}

/// What is wrong with a rule written as text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
enum RuleProblem {
    #[error("wrong number of words")]
    Words,
    #[error("'{0}' is not allow or deny")]
    Action(String),
    #[error("{0}")]
    Port(Box<PolicyTextError>),
}

/// A systemd unit name or glob: `executor@*.service`, `batch.scope`.
fn check_unit(unit: &str) -> Result<(), PolicyTextError> {
    const SUFFIXES: [&str; 3] = [".service", ".scope", ".slice"];
    let ok = !unit.is_empty()
        && !unit.contains('/')
        && SUFFIXES
            .iter()
            .any(|s| unit.len() > s.len() && unit.ends_with(s));
    if ok {
        Ok(())
    } else {
        Err(PolicyTextError::Unit(unit.to_owned()))
    }
}

/// The host default policy: named by `[agent] default_policy`, bound to the
/// governed cgroup itself.
pub(super) fn default_policy(
    config: &Config,
    hierarchy: &Hierarchy,
    governed: &Path,
    policies: &[CompiledPolicy],
) -> Result<Option<String>, ConfigError> {
    let Some(written) = &config.file.agent.default_policy else {
        return Ok(None);
    };
    let name = written.get_ref();
    let at = |msg: String| config.error_at(written.span(), format!("default_policy: {msg}"));
    let Some(policy) = policies.iter().find(|p| &p.name == name) else {
        let hint = crate::regions::suggest(name, policies.iter().map(|p| p.name.as_str()))
            .map(|s| format!(" (did you mean '{s}'?)"))
            .unwrap_or_default();
        return Err(at(format!("no policy is named '{name}'{hint}")));
    };
    if let Some(other) = policies
        .iter()
        .find(|p| p.cgroups.iter().any(|c| c == governed))
    {
        return Err(at(format!(
            "the governed cgroup is already bound to policy '{}'",
            other.name
        )));
    }
    check_host_enforce(config, hierarchy, governed, policy.mode).map_err(|e| at(e.to_string()))?;
    Ok(Some(name.clone()))
}

fn rule(def: &PolicyDef, written: &Spanned<toml::Value>) -> Result<CompiledRule, ConfigError> {
    let span = written.span();
    let at = |msg: String| def.error_at(span.clone(), msg);
    let (cidr, proto, port, action) = match written.get_ref() {
        toml::Value::String(text) => {
            parse_rule_text(text).map_err(|e| def.error_at(span.clone(), e))?
        }
        value @ toml::Value::Table(_) => {
            let r: RuleConfig = value.clone().try_into().map_err(|e: toml::de::Error| {
                at(format!(
                    "rule: {}",
                    crate::config::with_key_suggestion(e.message().trim())
                ))
            })?;
            let port = match &r.port {
                None => None,
                Some(p) => Some(port_range(p).map_err(|e| def.error_at(span.clone(), e))?),
            };
            (r.cidr, r.proto, port, r.action)
        }
        _ => {
            return Err(at(
                "a rule is a string (\"10.0.0.0/8 tcp/5432 allow\") or a table ({ cidr = …, \
                 action = … })"
                    .into(),
            ));
        }
    };
    // A bad CIDR is located at the CIDR itself inside the rule.
    let cidr_span = def
        .source
        .text
        .get(span.clone())
        .and_then(|t| t.find(cidr.as_str()))
        .map(|i| span.start + i..span.start + i + cidr.len())
        .unwrap_or(span.clone());
    let prefix: Prefix = cidr
        .parse()
        .map_err(|e| def.error_at(cidr_span, format!("rule: {e}")))?;
    let proto = match proto.as_deref() {
        None | Some("any") => 0,
        Some("tcp") => libc::IPPROTO_TCP as u8,
        Some("udp") => libc::IPPROTO_UDP as u8,
        Some(other) => {
            return Err(at(format!(
                "rule: proto '{other}': expected \"tcp\", \"udp\" or \"any\""
            )));
        }
    };
    let (port_lo, port_hi) = port.unwrap_or((0, u16::MAX));
    Ok(CompiledRule {
        text: CompiledRule::describe(&prefix, proto, port_lo, port_hi, action),
        prefix,
        proto,
        port_lo,
        port_hi,
        action,
    })
}

type RuleParts = (String, Option<String>, Option<(u16, u16)>, Action);

/// `CIDR [PROTO[/PORT[-PORT]]] ACTION`: `10.0.0.0/8 tcp/5432 allow`,
/// `192.0.2.0/24 deny`, `10.9.0.0/16 udp/8000-8099 deny`.
fn parse_rule_text(text: &str) -> Result<RuleParts, PolicyTextError> {
    let bad = |why: RuleProblem| PolicyTextError::Rule {
        text: text.to_owned(),
        why,
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    let (cidr, middle, action) = match words.as_slice() {
        [cidr, action] => (*cidr, None, *action),
        [cidr, middle, action] => (*cidr, Some(*middle), *action),
        _ => return Err(bad(RuleProblem::Words)),
    };
    let action = match action {
        "allow" => Action::Allow,
        "deny" => Action::Deny,
        other => return Err(bad(RuleProblem::Action(other.to_owned()))),
    };
    let (proto, port) = match middle {
        None => (None, None),
        Some(m) => {
            let (proto, ports) = match m.split_once('/') {
                Some((p, ports)) => (p, Some(ports)),
                None => (m, None),
            };
            let port = match ports {
                None => None,
                Some(ports) => {
                    let spec = match ports.parse::<u16>() {
                        Ok(n) => PortSpec::One(n),
                        Err(_) => PortSpec::Range(ports.to_owned()),
                    };
                    Some(port_range(&spec).map_err(|e| bad(RuleProblem::Port(Box::new(e))))?)
                }
            };
            (Some(proto.to_owned()), port)
        }
    };
    Ok((cidr.to_owned(), proto, port, action))
}

fn port_range(spec: &PortSpec) -> Result<(u16, u16), PolicyTextError> {
    match spec {
        PortSpec::One(0) => Err(PolicyTextError::PortZero),
        PortSpec::One(p) => Ok((*p, *p)),
        PortSpec::Range(s) => {
            let bad = || PolicyTextError::Port(s.clone());
            let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
            let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
            let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
            if lo == 0 || lo > hi {
                return Err(bad());
            }
            Ok((lo, hi))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(port_range(&PortSpec::One(5432)).unwrap(), (5432, 5432));
        assert_eq!(
            port_range(&PortSpec::Range("8000-8099".into())).unwrap(),
            (8000, 8099)
        );
        assert!(port_range(&PortSpec::Range("9-1".into())).is_err());
        assert!(port_range(&PortSpec::Range("x".into())).is_err());
        assert!(port_range(&PortSpec::One(0)).is_err());
    }

    #[test]
    fn policy_names() {
        assert!(valid_policy_name("eu-only"));
        assert!(!valid_policy_name(""));
        assert!(!valid_policy_name("a b"));
    }
}
