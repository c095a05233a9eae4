//! `geowall map lookup|stats|diff|load`.

use std::{collections::HashMap, net::IpAddr, path::Path, process::ExitCode};

use anyhow::{Result, anyhow, bail};
use geowall::{
    config::Config,
    control::{
        Client, ClientError,
        proto::{GetMapStats, MapLoad, MapLookup},
    },
    plan::{self, MapPlan},
    regions::{
        query::{self, Answer, MapStats},
        sources::{DEFAULT_MAX_SOURCE_BYTES, Spec},
    },
};

use super::args::MapCommand;

pub(super) fn run(cmd: MapCommand) -> Result<ExitCode> {
    let result = match cmd {
        MapCommand::Lookup {
            config,
            sources,
            json,
            addrs,
        } => lookup(&config.config, &sources, json, &addrs),
        MapCommand::Stats {
            config,
            sources,
            json,
            regions,
        } => stats(&config.config, &sources, json, regions),
        MapCommand::Diff {
            old,
            new,
            json,
            limit,
        } => diff(&old, &new, json, limit),
        MapCommand::Load { config } => load(&config.config),
        MapCommand::Export {
            config,
            sources,
            outside,
            inside,
            family,
        } => export(&config.config, &sources, &outside, &inside, &family),
    };
    result.map(|()| ExitCode::SUCCESS)
}

fn parse_specs(args: &[String]) -> Result<Vec<Spec>> {
    Ok(args
        .iter()
        .map(|a| Spec::parse_arg(a))
        .collect::<Result<_, _>>()?)
}

fn compile_specs(specs: &[Spec]) -> Result<MapPlan> {
    Ok(plan::load_map(specs, DEFAULT_MAX_SOURCE_BYTES)?)
}

/// The map of the config file at `config`.
fn config_map(config: &Path) -> Result<MapPlan> {
    let c = Config::load(config)?;
    Ok(plan::config_map(&c)?)
}

fn socket_of(config: &Path) -> Result<std::path::PathBuf> {
    let c = Config::load(config)?;
    Ok(c.socket_path())
}

fn lookup(config: &Path, sources: &[String], json: bool, addrs: &[String]) -> Result<()> {
    let parsed: Vec<IpAddr> = addrs
        .iter()
        .map(|a| a.parse().map_err(|_| anyhow!("'{a}' is not an IP address")))
        .collect::<Result<_, _>>()?;
    let answers: Vec<Answer> = if sources.is_empty() {
        let mut client = Client::connect(&socket_of(config)?).map_err(|e| match e {
            ClientError::NotRunning(_) | ClientError::Stale(_) => {
                anyhow!("{e}; or look up straight from sources with --source KIND:PATH")
            }
            e => e.into(),
        })?;
        client.call(MapLookup {
            addrs: addrs.to_vec(),
        })?
    } else {
        // Each source is read once: the map and the sources' own answers
        // come from the same loaded data.
        let loaded = plan::load_sources(&parse_specs(sources)?, DEFAULT_MAX_SOURCE_BYTES)?;
        let map = plan::compile_loaded(&loaded)?.map;
        query::lookup(&map, query::SourceData::Loaded(&loaded), &parsed)?
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&answers)?);
        return Ok(());
    }
    for a in &answers {
        println!(
            "{}  {}  {}",
            a.addr,
            tag_list(&a.tags),
            a.prefix.as_deref().unwrap_or("-")
        );
        for s in &a.sources {
            println!("    {}  {}  {}", s.source, s.prefix, s.tags.join(","));
        }
    }
    Ok(())
}

/// Tags as printed: comma separated, or `untagged`.
fn tag_list(tags: &[String]) -> String {
    if tags.is_empty() {
        "untagged".to_owned()
    } else {
        tags.join(",")
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn stats(config: &Path, sources: &[String], json: bool, regions: usize) -> Result<()> {
    let (stats, note) = if sources.is_empty() {
        match Client::connect(&socket_of(config)?) {
            Ok(mut c) => {
                let s: MapStats = c.call(GetMapStats {})?;
                (s, None)
            }
            Err(ClientError::NotRunning(_) | ClientError::Stale(_)) => {
                let p = config_map(config)?;
                (
                    query::stats(&p.map, &p.sources, p.compile_time.as_millis() as u64, None),
                    Some(
                        "the agent is not running: figures compiled from the config's sources; no kernel figures",
                    ),
                )
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        let p = compile_specs(&parse_specs(sources)?)?;
        (
            query::stats(&p.map, &p.sources, p.compile_time.as_millis() as u64, None),
            None,
        )
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    if let Some(n) = note {
        println!("note: {n}");
    }
    println!("sources:");
    for s in &stats.sources {
        println!("  {}", s.source);
        println!("      {}", s.about);
        println!(
            "      {} IPv4 and {} IPv6 networks from {} records ({} tagged nothing); sha256 {}",
            thousands(s.ipv4_networks as u64),
            thousands(s.ipv6_networks as u64),
            thousands(s.records as u64),
            thousands(s.untagged_records as u64),
            s.sha256
        );
    }
    println!("map:                         IPv4        IPv6");
    let row = |name: &str, a: usize, b: usize, what: &str| {
        println!(
            "  {name:<20} {:>11} {:>11}  {what}",
            thousands(a as u64),
            thousands(b as u64)
        );
    };
    row(
        "source networks",
        stats.ipv4.source_networks,
        stats.ipv6.source_networks,
        "",
    );
    row(
        "ranges",
        stats.ipv4.ranges,
        stats.ipv6.ranges,
        "(disjoint, tagged or not)",
    );
    row(
        "aggregated prefixes",
        stats.ipv4.aggregated_prefixes,
        stats.ipv6.aggregated_prefixes,
        "(fewest disjoint CIDRs)",
    );
    row(
        "kernel entries",
        stats.ipv4.kernel_entries,
        stats.ipv6.kernel_entries,
        "(minimized, nested LPM)",
    );
    println!(
        "  {} tag combinations; {} ranges overridden by a later source's country",
        stats.tag_combinations, stats.overridden
    );
    let mut timing = format!("  compile {} ms", stats.compile_ms);
    if let Some(ms) = stats.install_ms {
        timing.push_str(&format!("; install and switch {ms} ms"));
    }
    if let Some(b) = stats.kernel_bytes {
        timing.push_str(&format!(
            "; kernel memory of the tries {:.1} MiB (memlock accounting)",
            b as f64 / (1024.0 * 1024.0)
        ));
    }
    println!("{timing}");
    let mut by_size: Vec<_> = stats.regions.iter().collect();
    by_size.sort_by(|a, b| {
        b.1.ipv4_addresses
            .cmp(&a.1.ipv4_addresses)
            .then(a.0.cmp(b.0))
    });
    println!("regions ({} in all; by IPv4 addresses):", by_size.len());
    for (tag, r) in by_size.iter().take(regions) {
        println!(
            "  {tag:<24} {:>15} IPv4 addresses in {:>7} prefixes; {:>7} IPv6 prefixes",
            thousands(r.ipv4_addresses),
            thousands(r.ipv4_prefixes as u64),
            thousands(r.ipv6_prefixes as u64)
        );
    }
    Ok(())
}

/// A map named on the command line: KIND:PATH, `builtin`, or a config file.
fn named_map(arg: &str) -> Result<MapPlan> {
    let as_file = Path::new(arg);
    if arg.ends_with(".toml") && as_file.is_file() {
        return config_map(as_file);
    }
    compile_specs(&[Spec::parse_arg(arg)?])
}

fn diff(old: &str, new: &str, json: bool, limit: usize) -> Result<()> {
    let (a, b) = (named_map(old)?, named_map(new)?);
    let d = query::diff(&a.map, &b.map);
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(());
    }
    if d.moved.is_empty() {
        println!("no address changes region between {old} and {new}");
        return Ok(());
    }
    // The first `limit` prefixes of each change, grouped in one pass.
    let mut listed: HashMap<(&[String], &[String]), Vec<&str>> = HashMap::new();
    for m in &d.moved {
        let l = listed.entry((&m.old, &m.new)).or_default();
        if l.len() < limit {
            l.push(&m.prefix);
        }
    }
    for t in &d.totals {
        println!(
            "{} → {}: {} IPv4 addresses in {} prefixes, {} IPv6 prefixes",
            tag_list(&t.old),
            tag_list(&t.new),
            thousands(t.ipv4_addresses),
            thousands(t.ipv4_prefixes as u64),
            thousands(t.ipv6_prefixes as u64)
        );
        let key: (&[String], &[String]) = (&t.old, &t.new);
        for prefix in listed.get(&key).into_iter().flatten() {
            println!("    {prefix}");
        }
        let n = t.ipv4_prefixes + t.ipv6_prefixes;
        if n > limit {
            println!("    … and {} more (--limit, --json)", n - limit);
        }
    }
    Ok(())
}

fn load(config: &Path) -> Result<()> {
    let mut client = Client::connect(&socket_of(config)?)?;
    let v = client.call(MapLoad {})?;
    println!(
        "geowall: map loaded: epoch {}, {} IPv4 and {} IPv6 ranges (compile {} ms, install and switch {} ms)",
        v.epoch,
        thousands(v.ipv4_ranges as u64),
        thousands(v.ipv6_ranges as u64),
        v.compile_ms,
        v.install_ms
    );
    after_switch(&v)
}

/// A reload's answer: an error when something failed after the switch
/// (the new tables stay in force).
pub(super) fn after_switch(v: &geowall::control::proto::Switched) -> Result<()> {
    if !v.problems.is_empty() {
        anyhow::bail!(
            "the new tables are in force, but after the switch: {}",
            v.problems.join("; ")
        );
    }
    Ok(())
}

fn export(
    config: &Path,
    sources: &[String],
    outside: &[String],
    inside: &[String],
    family: &str,
) -> Result<()> {
    use std::io::Write;

    use geowall::regions::Family;

    let families: &[Family] = match family {
        "4" => &[Family::V4],
        "6" => &[Family::V6],
        "both" => &[Family::V4, Family::V6],
        other => bail!("--family {other}: expected 4, 6 or both"),
    };
    let plan = if sources.is_empty() {
        config_map(config)?
    } else {
        compile_specs(&parse_specs(sources)?)?
    };
    let resolve = |tokens: &[String]| -> Result<std::collections::BTreeSet<String>> {
        let mut set = std::collections::BTreeSet::new();
        for t in tokens {
            set.extend(geowall::policy::resolve_region(t, Some(&plan.map.tags))?);
        }
        Ok(set)
    };
    let (out_set, in_set) = (resolve(outside)?, resolve(inside)?);
    let keep = |label: u16| -> bool {
        let tags = &plan.map.tagsets[label as usize];
        if tags.is_empty() {
            false
        } else if !outside.is_empty() {
            !plan.map.is_local(label) && !tags.iter().any(|t| out_set.contains(t))
        } else if !inside.is_empty() {
            tags.iter().any(|t| in_set.contains(t))
        } else {
            true
        }
    };
    // A closed pipe (`| head`) ends the output quietly.
    let quiet_pipe = |e: std::io::Error| -> Result<()> {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Ok(())
        } else {
            Err(e.into())
        }
    };
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    for f in families {
        for (p, label) in plan.map.cidrs(*f) {
            if keep(label)
                && let Err(e) = writeln!(w, "{p}")
            {
                return quiet_pipe(e);
            }
        }
    }
    w.flush().or_else(quiet_pipe)
}
