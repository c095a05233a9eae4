//! Turns a config into everything the kernel tables are built from, checking
//! all of it first: a plan either builds whole or not at all, so a bad input
//! never reaches the kernel and the tables in force stay in force.

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use thiserror::Error;

use crate::{
    cgroup::Hierarchy,
    config::{Config, ConfigError, Mode, PortSpec, RuleConfig},
    policy::{CompiledPolicy, CompiledRule, resolve_region},
    regions::{
        CompiledMap, Prefix, compile,
        compile::conflicting_countries,
        sources::{self, Kind, Loaded, SourceError, Spec},
    },
};

#[derive(Debug, Error)]
pub enum PlanError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// A map source as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    pub spec: Spec,
    pub sha256: String,
    /// What the file says about itself (type, build date, sync token).
    pub about: String,
    /// Distinct networks it brought.
    pub networks: usize,
    pub v4: usize,
    pub v6: usize,
    /// Entries read, and those that tagged nothing.
    pub records: usize,
    pub untagged_records: usize,
}

impl SourceInfo {
    fn of(l: &Loaded) -> Self {
        Self {
            spec: l.spec.clone(),
            sha256: l.sha256.clone(),
            about: l.about.clone(),
            networks: l.networks(),
            v4: l.v4.len(),
            v6: l.v6.len(),
            records: l.records,
            untagged_records: l.untagged_records,
        }
    }
}

/// The region map of a config, compiled.
#[derive(Debug, Clone)]
pub struct MapPlan {
    pub map: Arc<CompiledMap>,
    pub sources: Vec<SourceInfo>,
    /// Time to read and compile the sources.
    pub compile_time: Duration,
}

/// The map sources a config names: its `[[maps]]`, or the built-in country
/// database when it names none.
pub fn map_specs(config: &Config) -> Result<Vec<Spec>, ConfigError> {
    if config.file.maps.is_empty() {
        return Ok(vec![Spec::builtin()]);
    }
    let mut specs = Vec::with_capacity(config.file.maps.len());
    for m in &config.file.maps {
        let kind = Kind::parse(m.kind.get_ref()).ok_or_else(|| {
            config.error_at(
                m.kind.span(),
                format!(
                    "unknown map kind '{}' (known: {})",
                    m.kind.get_ref(),
                    Kind::names()
                ),
            )
        })?;
        let path = match (&m.path, kind) {
            (Some(p), Kind::Builtin) => {
                return Err(config.error_at(p.span(), "a builtin map takes no path"));
            }
            (None, Kind::Builtin) => PathBuf::new(),
            (Some(p), _) => config.resolve_path(p.get_ref()),
            (None, _) => {
                return Err(
                    config.error_at(m.kind.span(), format!("map kind '{kind}' needs a path"))
                );
            }
        };
        let field = match (&m.field, kind) {
            (Some(f), Kind::Mmdb | Kind::Builtin) => {
                let ok = !f.get_ref().is_empty()
                    && f.get_ref().split('.').all(|part| {
                        !part.is_empty()
                            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    });
                if !ok {
                    return Err(config.error_at(
                        f.span(),
                        format!(
                            "field '{}': expected a dotted record path like country.iso_code",
                            f.get_ref()
                        ),
                    ));
                }
                Some(f.get_ref().clone())
            }
            (Some(f), _) => {
                return Err(config.error_at(f.span(), format!("map kind '{kind}' takes no field")));
            }
            (None, _) => None,
        };
        specs.push(Spec { kind, path, field });
    }
    Ok(specs)
}

/// The map of a config: its sources, read within its `[agent]
/// max_source_bytes`, compiled.
pub fn config_map(config: &Config) -> Result<MapPlan, PlanError> {
    load_map(&map_specs(config)?, config.file.agent.max_source_bytes)
}

/// Reads and compiles map sources. Any failing source fails the whole map.
pub fn load_map(specs: &[Spec], max_source_bytes: u64) -> Result<MapPlan, PlanError> {
    let started = Instant::now();
    let loaded = load_sources(specs, max_source_bytes)?;
    let mut plan = compile_loaded(&loaded)?;
    plan.compile_time = started.elapsed();
    Ok(plan)
}

/// Reads map sources, in order, checking each: any failing source fails
/// them all.
pub fn load_sources(specs: &[Spec], max_source_bytes: u64) -> Result<Vec<Loaded>, PlanError> {
    let mut loaded = Vec::with_capacity(specs.len());
    for spec in specs {
        let l = sources::load(spec, max_source_bytes)?;
        if let Some((prefix, a, b)) = conflicting_countries(&l) {
            return Err(SourceError::invalid(
                &spec.path,
                format!("{prefix} is tagged with two countries, {a} and {b}"),
            )
            .into());
        }
        loaded.push(l);
    }
    Ok(loaded)
}

/// Compiles loaded sources (from [`load_sources`]); `compile_time` is the
/// time compiling took.
pub fn compile_loaded(loaded: &[Loaded]) -> Result<MapPlan, PlanError> {
    let started = Instant::now();
    let map = compile(loaded).map_err(SourceError::from)?;
    Ok(MapPlan {
        map: Arc::new(map),
        sources: loaded.iter().map(SourceInfo::of).collect(),
        compile_time: started.elapsed(),
    })
}

/// A validated config, compiled.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Absolute path of the governed cgroup.
    pub governed: PathBuf,
    pub governed_level: u32,
    pub map: Arc<CompiledMap>,
    pub sources: Vec<SourceInfo>,
    pub compile_time: Duration,
    pub policies: Vec<CompiledPolicy>,
}

impl Plan {
    pub fn policy(&self, name: &str) -> Option<&CompiledPolicy> {
        self.policies.iter().find(|p| p.name == name)
    }
}

/// Builds the plan for `config` on this host's cgroup hierarchy.
pub fn build(config: &Config, hierarchy: &Hierarchy) -> Result<Plan, PlanError> {
    let (governed, governed_level) = governed(config, hierarchy)?;
    let agent = &config.file.agent;
    let ring = agent.ring_buffer_kib;
    if !ring.is_power_of_two() || ring < 4 {
        return Err(config
            .error(format!(
                "[agent] ring_buffer_kib = {ring}: must be a power of two, at least 4"
            ))
            .into());
    }

    // Everything but cloud region names can be checked before the (slow)
    // map sources are read.
    policies(config, hierarchy, &governed, None)?;
    let MapPlan {
        map,
        sources,
        compile_time,
    } = config_map(config)?;
    let policies = policies(config, hierarchy, &governed, Some(&map.tags))?;
    Ok(Plan {
        governed,
        governed_level,
        map,
        sources,
        compile_time,
        policies,
    })
}

fn governed(config: &Config, hierarchy: &Hierarchy) -> Result<(PathBuf, u32), ConfigError> {
    let name = config.governed_cgroup();
    let at = |msg: String| match &config.file.agent.cgroup {
        Some(s) => config.error_at(s.span(), msg),
        None => config.error(msg),
    };
    let path = hierarchy
        .resolve(name)
        .map_err(|e| at(format!("[agent] cgroup = '{name}': {e}")))?;
    if !path.is_dir() {
        return Err(at(format!(
            "[agent] cgroup = '{name}': cgroup {} does not exist",
            path.display()
        )));
    }
    let level = hierarchy
        .level(&path)
        .map_err(|e| at(format!("[agent] cgroup = '{name}': {e}")))?;
    Ok((path, level))
}

fn valid_policy_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < geowall_common::POLICY_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Compiles the policies. Without a map (`map_tags` None) cloud regions are
/// only checked for their form: that first pass reports every other mistake
/// before the map sources are read.
fn policies(
    config: &Config,
    hierarchy: &Hierarchy,
    governed: &std::path::Path,
    map_tags: Option<&BTreeSet<String>>,
) -> Result<Vec<CompiledPolicy>, ConfigError> {
    let mut out: Vec<CompiledPolicy> = Vec::new();
    let mut seen: HashMap<String, std::ops::Range<usize>> = HashMap::new();
    let mut bound: HashMap<PathBuf, String> = HashMap::new();
    if config.file.policy.len() > geowall_common::MAX_POLICIES as usize {
        return Err(config.error(format!(
            "{} policies: at most {} can be loaded",
            config.file.policy.len(),
            geowall_common::MAX_POLICIES
        )));
    }
    for p in &config.file.policy {
        let name = p.name.get_ref();
        if !valid_policy_name(name) {
            return Err(config.error_at(
                p.name.span(),
                format!(
                    "policy name '{name}': use letters, digits, '-', '_' and '.', at most {} bytes",
                    geowall_common::POLICY_NAME_LEN - 1
                ),
            ));
        }
        if let Some(first) = seen.get(name) {
            let (line, _) = crate::config::line_col(config.text(), first.start);
            return Err(config.error_at(
                p.name.span(),
                format!("policy '{name}' is defined twice (first on line {line})"),
            ));
        }
        seen.insert(name.clone(), p.name.span());

        let mut allowed = BTreeSet::new();
        for token in &p.allow {
            let tags = resolve_region(token.get_ref(), map_tags)
                .map_err(|e| config.error_at(token.span(), format!("policy '{name}': {e}")))?;
            allowed.extend(tags);
        }
        if allowed.is_empty() {
            return Err(config.error_at(
                p.name.span(),
                format!(
                    "policy '{name}' allows no region: add `allow = [...]` (countries like \
                     \"DE\", groups like \"EU\", cloud regions like \"aws:eu-west-1\")"
                ),
            ));
        }

        let rules = p
            .rules
            .iter()
            .map(|r| rule(config, name, r))
            .collect::<Result<Vec<_>, _>>()?;

        let mut cgroups = Vec::new();
        for cg in &p.cgroups {
            let path = hierarchy
                .resolve_under(governed, cg.get_ref())
                .map_err(|e| config.error_at(cg.span(), format!("policy '{name}': {e}")))?;
            if !path.is_dir() {
                return Err(config.error_at(
                    cg.span(),
                    format!(
                        "policy '{name}': cgroup '{}' does not exist ({})",
                        cg.get_ref(),
                        path.display()
                    ),
                ));
            }
            if let Some(other) = bound.insert(path.clone(), name.clone()) {
                return Err(config.error_at(
                    cg.span(),
                    format!(
                        "cgroup '{}' is bound to both '{other}' and '{name}'",
                        cg.get_ref()
                    ),
                ));
            }
            if path == hierarchy.mount()
                && p.mode == Mode::Enforce
                && !config.file.agent.allow_host_enforce
            {
                return Err(config.error_at(
                    cg.span(),
                    format!(
                        "policy '{name}' would enforce on the whole host (the cgroup v2 root): \
                         use mode = \"audit\", or set [agent] allow_host_enforce = true if you \
                         really mean it"
                    ),
                ));
            }
            cgroups.push(path);
        }

        out.push(CompiledPolicy {
            name: name.clone(),
            mode: p.mode,
            allowed,
            allow_written: p.allow.iter().map(|t| t.get_ref().clone()).collect(),
            untagged: p.untagged,
            local: p.local,
            rules,
            cgroups,
            log_allowed: p.log_allowed,
            raw_sockets: p.raw_sockets,
        });
    }
    Ok(out)
}

fn rule(config: &Config, policy: &str, r: &RuleConfig) -> Result<CompiledRule, ConfigError> {
    let prefix: Prefix = r
        .cidr
        .get_ref()
        .parse()
        .map_err(|e| config.error_at(r.cidr.span(), format!("policy '{policy}': {e}")))?;
    let proto = match &r.proto {
        None => 0,
        Some(p) => match p.get_ref().as_str() {
            "tcp" => libc::IPPROTO_TCP as u8,
            "udp" => libc::IPPROTO_UDP as u8,
            other => {
                return Err(config.error_at(
                    p.span(),
                    format!("policy '{policy}': proto '{other}': expected \"tcp\" or \"udp\""),
                ));
            }
        },
    };
    let (port_lo, port_hi) = match &r.port {
        None => (0, u16::MAX),
        Some(s) => port_range(s.get_ref())
            .map_err(|e| config.error_at(s.span(), format!("policy '{policy}': {e}")))?,
    };
    Ok(CompiledRule {
        prefix,
        proto,
        port_lo,
        port_hi,
        action: r.action,
    })
}

fn port_range(spec: &PortSpec) -> Result<(u16, u16), String> {
    match spec {
        PortSpec::One(0) => Err("port 0 matches nothing".into()),
        PortSpec::One(p) => Ok((*p, *p)),
        PortSpec::Range(s) => {
            let bad = || format!("port '{s}': expected a port (5432) or a range (\"8000-8099\")");
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
