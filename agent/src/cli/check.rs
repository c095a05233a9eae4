//! `geowall check`: validate a config without touching the kernel.

use std::{path::Path, process::ExitCode};

use geowall::{config::Config, host::cgroup::Hierarchy, plan};

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
    ExitCode::SUCCESS
}
