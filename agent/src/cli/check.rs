//! `geowall check`: validate a config without touching the kernel.

use std::{path::Path, process::ExitCode};

use crate::{cgroup::Hierarchy, config::Config, plan};

pub fn check(path: &Path) -> ExitCode {
    let result = (|| -> Result<plan::Plan, String> {
        let config = Config::load(path).map_err(|e| e.to_string())?;
        let hierarchy = Hierarchy::discover().map_err(|e| e.to_string())?;
        plan::build(&config, &hierarchy).map_err(|e| e.to_string())
    })();
    let plan = match result {
        Ok(p) => p,
        Err(e) => return super::fail(e),
    };
    println!("{}: ok", path.display());
    println!("  governed cgroup: {}", plan.governed.display());
    for s in &plan.sources {
        println!(
            "  map {} {}: {} prefixes",
            s.kind,
            s.path.display(),
            s.prefixes
        );
    }
    println!(
        "  compiled map: {} IPv4 and {} IPv6 prefixes, {} tag combinations",
        plan.map.v4.len(),
        plan.map.v6.len(),
        plan.map.tagsets.len()
    );
    for p in &plan.policies {
        println!(
            "  policy {} ({:?}): allow {} ({} regions), {} rules, {} cgroups",
            p.name,
            p.mode,
            p.allow_written.join(", "),
            p.allowed.len(),
            p.rules.len(),
            p.cgroups.len()
        );
    }
    ExitCode::SUCCESS
}
