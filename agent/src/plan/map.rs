//! A config's region map: the sources it names, read and compiled. Any
//! failing source fails the whole map.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use thiserror::Error;

use crate::{
    config::{Config, ConfigError},
    regions::{
        CompiledMap, compile,
        compile::{CompileError, conflicting_countries},
        sources::{self, Kind, Loaded, SourceError, SourceInfo, Spec},
    },
};

/// Why a map cannot be built: a source cannot be read, or the sources
/// together make no map the kernel can hold.
#[derive(Debug, Error)]
pub enum MapError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Compile(#[from] CompileError),
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

/// Reads and compiles map sources. Any failing source fails the whole map.
pub fn load_map(specs: &[Spec], max_source_bytes: u64) -> Result<MapPlan, MapError> {
    let started = Instant::now();
    let loaded = load_sources(specs, max_source_bytes)?;
    let mut plan = compile_loaded(&loaded)?;
    plan.compile_time = started.elapsed();
    Ok(plan)
}

/// Reads map sources, in order, checking each: any failing source fails
/// them all.
pub fn load_sources(specs: &[Spec], max_source_bytes: u64) -> Result<Vec<Loaded>, MapError> {
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
pub fn compile_loaded(loaded: &[Loaded]) -> Result<MapPlan, MapError> {
    let started = Instant::now();
    let map = compile(loaded)?;
    Ok(MapPlan {
        map: Arc::new(map),
        sources: loaded.iter().map(SourceInfo::of).collect(),
        compile_time: started.elapsed(),
    })
}
