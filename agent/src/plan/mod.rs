//! Turns a config into everything the kernel tables are built from, checking
//! all of it first: a plan either builds whole or not at all, so a bad input
//! never reaches the kernel and the tables in force stay in force.

//!
//! Two halves: the region map ([`map`]: sources read and compiled) and the
//! policies ([`policies`]: compiled against the map's tags and the host's
//! cgroups).

mod map;
mod policies;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use thiserror::Error;

use crate::{
    config::{Action, Config, ConfigError, OnMapError},
    host::cgroup::Hierarchy,
    policy::CompiledPolicy,
    regions::{CompiledMap, compile, sources::SourceInfo},
    vocab::error::Chain,
};
pub use map::{MapError, MapPlan, compile_loaded, load_map, load_sources, map_specs};
pub use policies::names_policies;

#[derive(Debug, Error)]
pub enum PlanError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Map(#[from] MapError),
}

/// The map of a config: its sources, read within its `[agent]
/// max_source_bytes`, compiled.
pub fn config_map(config: &Config) -> Result<MapPlan, PlanError> {
    Ok(load_map(
        &map_specs(config)?,
        config.file.agent.max_source_bytes,
    )?)
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
    /// `[agent] default_policy`: bound to the governed cgroup.
    pub default_policy: Option<String>,
    /// `[dns] enabled`: governed jobs' DNS goes through the forwarder.
    pub dns: bool,
}

impl Plan {
    pub fn policy(&self, name: &str) -> Option<&CompiledPolicy> {
        self.policies.iter().find(|p| p.name == name)
    }

    /// Whether some policy judges connections to its jobs' listeners
    /// (`inbound = "judge"`): only then does the inbound program run.
    pub fn judges_inbound(&self) -> bool {
        self.policies
            .iter()
            .any(|p| p.inbound == crate::config::Inbound::Judge)
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
    let early = policies::policies(config, hierarchy, &governed, None)?;
    policies::default_policy(config, hierarchy, &governed, &early)?;
    let MapPlan {
        map,
        sources,
        compile_time,
    } = config_map(config)?;
    let policies = policies::policies(config, hierarchy, &governed, Some(&map.tags))?;
    let default_policy = policies::default_policy(config, hierarchy, &governed, &policies)?;
    Ok(Plan {
        governed,
        governed_level,
        map,
        sources,
        compile_time,
        policies,
        default_policy,
        dns: config.file.dns.enabled,
    })
}

/// The plan when the map sources cannot be read at start
/// (`[agent] on_map_error`): no region map (only the built-in local
/// ranges); every policy denies (`DenyAll`: local destinations keep the
/// policy's setting) or allows (`AllowAll`) every other destination. Cloud
/// regions are checked for their form only. Everything else is checked as
/// in [`build`].
pub fn build_without_map(
    config: &Config,
    hierarchy: &Hierarchy,
    mode: OnMapError,
) -> Result<Plan, PlanError> {
    let (governed, governed_level) = governed(config, hierarchy)?;
    let started = Instant::now();
    let map = compile(&[]).map_err(MapError::from)?;
    let mut policies = policies::policies(config, hierarchy, &governed, None)?;
    for p in &mut policies {
        p.allowed.clear();
        p.denied.clear();
        p.rules.clear();
        p.untagged = match mode {
            OnMapError::AllowAll => Action::Allow,
            OnMapError::DenyAll | OnMapError::KeepLast => Action::Deny,
        };
    }
    let default_policy = policies::default_policy(config, hierarchy, &governed, &policies)?;
    Ok(Plan {
        governed,
        governed_level,
        map: Arc::new(map),
        sources: Vec::new(),
        compile_time: started.elapsed(),
        policies,
        default_policy,
        dns: config.file.dns.enabled,
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
        .map_err(|e| at(format!("[agent] cgroup = '{name}': {}", Chain(&e))))?;
    if !path.is_dir() {
        return Err(at(format!(
            "[agent] cgroup = '{name}': cgroup {} does not exist",
            path.display()
        )));
    }
    let level = hierarchy
        .level(&path)
        .map_err(|e| at(format!("[agent] cgroup = '{name}': {}", Chain(&e))))?;
    Ok((path, level))
}
