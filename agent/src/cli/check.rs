//! `geowall check`: validate a config without touching the kernel.

use std::{path::Path, process::ExitCode};

use anyhow::Result;
use geowall::{config::Config, host::cgroup::Hierarchy, plan};

pub(super) fn check(path: &Path) -> Result<ExitCode> {
    let config = Config::load(path)?;
    let hierarchy = Hierarchy::discover()?;
    let plan = plan::build(&config, &hierarchy)?;
    println!("{}: ok", path.display());
    println!("  governed cgroup: {}", plan.governed.display());
    for s in &plan.sources {
        println!(
            "  map {}: {} networks ({} IPv4, {} IPv6); {}",
            s.spec.label(),
            s.networks,
            s.v4,
            s.v6,
            s.about
        );
    }
    println!(
        "  compiled map: {} IPv4 and {} IPv6 ranges, {} tag combinations, in {:.0?}",
        plan.map.v4.len(),
        plan.map.v6.len(),
        plan.map.tagsets.len(),
        plan.compile_time
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
    Ok(ExitCode::SUCCESS)
}
