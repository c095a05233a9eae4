//! Questions about a compiled map: what an address is tagged with and which
//! source said so (`geowall map lookup`), counts (`geowall map stats`), and
//! what moves between two maps (`geowall map diff`).

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::{
    CompiledMap, Family, Prefix,
    ortc::minimize,
    sources::{self, Kind, Loaded, SourceError, SourceInfo, Spec},
};

/// One source's own answer for an address, for one layer: a source answers
/// with its most specific network that has a country, and its most specific
/// network that has cloud regions (one answer when they are the same
/// network), as the compiler reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceAnswer {
    /// `KIND:PATH`.
    pub source: String,
    /// The network that answers.
    pub prefix: String,
    pub tags: Vec<String>,
}

/// What the map says about an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub addr: String,
    /// The map's range around the address (None when untagged).
    pub prefix: Option<String>,
    /// Empty when untagged.
    pub tags: Vec<String>,
    pub sources: Vec<SourceAnswer>,
}

/// An IPv4-mapped IPv6 address is looked up as IPv4, as the kernel does.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}

/// Where the sources' own answers come from.
#[derive(Debug, Clone, Copy)]
pub enum SourceData<'a> {
    /// The sources as loaded (the command line has just compiled them).
    Loaded(&'a [Loaded]),
    /// Only what names them (the agent keeps no per-source copy): each
    /// source is read again, once. MaxMind databases (the builtin one
    /// included) are looked up in place rather than loaded whole.
    Files { specs: &'a [Spec], max_bytes: u64 },
}

/// What the map says about each of `addrs`, with what each source says
/// (IPv4-mapped IPv6 addresses are looked up as IPv4).
pub fn lookup(
    map: &CompiledMap,
    sources: SourceData<'_>,
    addrs: &[IpAddr],
) -> Result<Vec<Answer>, SourceError> {
    let addrs: Vec<IpAddr> = addrs.iter().map(|a| canonical(*a)).collect();
    let per_source = match sources {
        SourceData::Loaded(loaded) => addrs
            .iter()
            .map(|addr| {
                loaded
                    .iter()
                    .flat_map(|l| source_answers(l, *addr))
                    .collect()
            })
            .collect(),
        SourceData::Files { specs, max_bytes } => file_answers(specs, max_bytes, &addrs)?,
    };
    Ok(addrs
        .iter()
        .zip(per_source)
        .map(|(addr, sources)| Answer {
            sources,
            ..answer(map, *addr)
        })
        .collect())
}

/// A loaded source's answers for `addr`, one per layer.
fn source_answers(loaded: &Loaded, addr: IpAddr) -> impl Iterator<Item = SourceAnswer> + '_ {
    loaded.lookup(addr).into_iter().map(|hit| SourceAnswer {
        source: loaded.spec.label(),
        prefix: hit.prefix.to_string(),
        tags: hit.tags.into_iter().map(str::to_owned).collect(),
    })
}

/// The sources' answers for each of `addrs` (canonical), reading each
/// source once.
fn file_answers(
    specs: &[Spec],
    max_bytes: u64,
    addrs: &[IpAddr],
) -> Result<Vec<Vec<SourceAnswer>>, SourceError> {
    let mut out: Vec<Vec<SourceAnswer>> = vec![Vec::new(); addrs.len()];
    for spec in specs {
        match spec.kind {
            Kind::Mmdb | Kind::Builtin => {
                // Read as loading reads it: the builtin database as the
                // mmdb source it is, named like the builtin one.
                let (bytes, inner) = if spec.kind == Kind::Builtin {
                    (
                        sources::builtin::bytes()?,
                        sources::builtin::inner_spec(spec),
                    )
                } else {
                    (sources::read_capped(&spec.path, max_bytes)?, spec.clone())
                };
                let reader = sources::mmdb::reader(bytes, &inner)?;
                for (i, addr) in addrs.iter().enumerate() {
                    if let Some((prefix, Some(country))) =
                        sources::mmdb::lookup_one(&reader, &inner, *addr)?
                    {
                        out[i].push(SourceAnswer {
                            source: spec.label(),
                            prefix: prefix.to_string(),
                            tags: vec![country],
                        });
                    }
                }
            }
            _ => {
                let loaded = sources::load(spec, max_bytes)?;
                for (i, addr) in addrs.iter().enumerate() {
                    out[i].extend(source_answers(&loaded, *addr));
                }
            }
        }
    }
    Ok(out)
}

/// The map's answer for `addr`, without sources.
pub fn answer(map: &CompiledMap, addr: IpAddr) -> Answer {
    let addr = canonical(addr);
    let (label, prefix) = map.lookup(addr);
    Answer {
        addr: addr.to_string(),
        prefix: (label != 0).then(|| prefix.to_string()),
        tags: map.tagsets[label as usize].clone(),
        sources: Vec::new(),
    }
}

/// Counts for one region tag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionCount {
    /// IPv4 addresses tagged with it.
    pub ipv4_addresses: u64,
    /// IPv4 and IPv6 CIDRs (fewest disjoint) tagged with it.
    pub ipv4_prefixes: usize,
    pub ipv6_prefixes: usize,
}

/// Per-family counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyCounts {
    /// Networks the sources brought.
    pub source_networks: usize,
    /// Disjoint ranges of the compiled map (tagged or not).
    pub ranges: usize,
    /// The fewest disjoint CIDRs covering the tagged ranges.
    pub aggregated_prefixes: usize,
    /// Entries of the kernel's (minimized, nested) trie.
    pub kernel_entries: usize,
}

/// `geowall map stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MapStats {
    pub sources: Vec<SourceStats>,
    pub ipv4: FamilyCounts,
    pub ipv6: FamilyCounts,
    pub tag_combinations: usize,
    /// Ranges where a later source's country replaced an earlier one's.
    pub overridden: usize,
    pub regions: BTreeMap<String, RegionCount>,
    /// Time to read and compile the sources, ms.
    pub compile_ms: u64,
    /// Time to write the tables into the kernel and switch, ms (agent only).
    pub install_ms: Option<u64>,
    /// Kernel memory of the region tries as the kernel accounts it
    /// (memlock), bytes (agent only).
    pub kernel_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStats {
    pub source: String,
    pub about: String,
    pub sha256: String,
    pub ipv4_networks: usize,
    pub ipv6_networks: usize,
    pub records: usize,
    pub untagged_records: usize,
}

/// Counts of a compiled map. `kernel_entries` (IPv4, IPv6) are the trie
/// sizes when known (the agent knows them); otherwise they are computed.
pub fn stats(
    map: &CompiledMap,
    sources: &[SourceInfo],
    compile_ms: u64,
    kernel_entries: Option<(usize, usize)>,
) -> MapStats {
    // Per tag set first (few), then per tag: no per-prefix allocation.
    let mut per_set: Vec<[u64; 3]> = vec![[0; 3]; map.tagsets.len()];
    let mut family = |f: Family, source_networks: usize, kernel: Option<usize>| -> FamilyCounts {
        let fm = map.family(f);
        let mut aggregated = 0;
        map.for_each_cidr(f, |p, label| {
            let label = label as usize;
            aggregated += 1;
            match f {
                Family::V4 => {
                    per_set[label][0] += 1u64 << (32 - u32::from(p.len()));
                    per_set[label][1] += 1;
                }
                Family::V6 => per_set[label][2] += 1,
            }
        });
        FamilyCounts {
            source_networks,
            ranges: fm.len(),
            aggregated_prefixes: aggregated,
            kernel_entries: kernel.unwrap_or_else(|| minimize(f, fm).len()),
        }
    };
    let ipv4 = family(
        Family::V4,
        sources.iter().map(|s| s.v4).sum(),
        kernel_entries.map(|k| k.0),
    );
    let ipv6 = family(
        Family::V6,
        sources.iter().map(|s| s.v6).sum(),
        kernel_entries.map(|k| k.1),
    );
    let mut regions: BTreeMap<String, RegionCount> = BTreeMap::new();
    for (set, counts) in per_set.iter().enumerate() {
        for tag in &map.tagsets[set] {
            let r = regions.entry(tag.clone()).or_default();
            r.ipv4_addresses += counts[0];
            r.ipv4_prefixes += counts[1] as usize;
            r.ipv6_prefixes += counts[2] as usize;
        }
    }
    MapStats {
        sources: sources
            .iter()
            .map(|s| SourceStats {
                source: s.spec.label(),
                about: s.about.clone(),
                sha256: s.sha256.clone(),
                ipv4_networks: s.v4,
                ipv6_networks: s.v6,
                records: s.records,
                untagged_records: s.untagged_records,
            })
            .collect(),
        ipv4,
        ipv6,
        tag_combinations: map.tagsets.len(),
        overridden: map.stats.overridden,
        regions,
        compile_ms,
        install_ms: None,
        kernel_bytes: None,
    }
}

/// A change between two maps: a CIDR whose tags differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    pub prefix: String,
    pub old: Vec<String>,
    pub new: Vec<String>,
}

/// `geowall map diff`: every CIDR whose tags differ, and totals per change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    pub moved: Vec<Moved>,
    /// (old tags, new tags) → (IPv4 addresses, IPv4 CIDRs, IPv6 CIDRs).
    pub totals: Vec<DiffTotal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffTotal {
    pub old: Vec<String>,
    pub new: Vec<String>,
    pub ipv4_addresses: u64,
    pub ipv4_prefixes: usize,
    pub ipv6_prefixes: usize,
}

/// What moves region from `old` to `new`.
pub fn diff(old: &CompiledMap, new: &CompiledMap) -> Diff {
    let mut out = Diff::default();
    let mut totals: BTreeMap<(Vec<String>, Vec<String>), DiffTotal> = BTreeMap::new();
    for f in [Family::V4, Family::V6] {
        let (a, b) = (old.family(f), new.family(f));
        let mut starts: Vec<u128> = a.starts.iter().chain(&b.starts).copied().collect();
        starts.sort_unstable();
        starts.dedup();
        for (k, &start) in starts.iter().enumerate() {
            let end = super::compile::range_end(&starts, k, f);
            let ta = &old.tagsets[a.labels[a.index_of(start)] as usize];
            let tb = &new.tagsets[b.labels[b.index_of(start)] as usize];
            if ta == tb {
                continue;
            }
            let total = totals
                .entry((ta.clone(), tb.clone()))
                .or_insert_with(|| DiffTotal {
                    old: ta.clone(),
                    new: tb.clone(),
                    ipv4_addresses: 0,
                    ipv4_prefixes: 0,
                    ipv6_prefixes: 0,
                });
            super::compile::range_to_cidrs(f, start, end, |p: Prefix| {
                match f {
                    Family::V4 => {
                        total.ipv4_prefixes += 1;
                        total.ipv4_addresses += 1u64 << (32 - u32::from(p.len()));
                    }
                    Family::V6 => total.ipv6_prefixes += 1,
                }
                out.moved.push(Moved {
                    prefix: p.to_string(),
                    old: ta.clone(),
                    new: tb.clone(),
                });
            });
        }
    }
    out.totals = totals.into_values().collect();
    out.totals.sort_by(|x, y| {
        y.ipv4_addresses
            .cmp(&x.ipv4_addresses)
            .then(y.ipv6_prefixes.cmp(&x.ipv6_prefixes))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regions::{compile, sources::Loaded};

    fn map(lines: &[(&str, &str)]) -> CompiledMap {
        compile(&[Loaded::from_pairs(lines)]).unwrap()
    }

    #[test]
    fn diff_names_what_moved() {
        let old = map(&[("1.0.0.0/8", "US"), ("2001:db8::/32", "DE")]);
        let new = map(&[
            ("1.0.0.0/9", "US"),
            ("1.128.0.0/9", "FR"),
            ("2001:db8::/32", "DE"),
        ]);
        let d = diff(&old, &new);
        assert_eq!(d.moved.len(), 1);
        assert_eq!(d.moved[0].prefix, "1.128.0.0/9");
        assert_eq!(d.moved[0].old, ["US"]);
        assert_eq!(d.moved[0].new, ["FR"]);
        assert_eq!(d.totals[0].ipv4_addresses, 1 << 23);
        assert!(diff(&old, &old).moved.is_empty());
    }

    #[test]
    fn sources_answer_alike_loaded_or_read_again() {
        let dir = std::env::temp_dir().join(format!("geowall-query-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cidr = dir.join("t.cidr");
        std::fs::write(&cidr, "81.2.0.0/16 aws:x\n2a02:d180::/29 aws:y\n").unwrap();
        let mmdb = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/maxmind/GeoIP2-Country-Test.mmdb");
        let specs = [Spec::new(Kind::Mmdb, mmdb), Spec::new(Kind::Cidr, &cidr)];
        let loaded: Vec<Loaded> = specs
            .iter()
            .map(|s| sources::load(s, u64::MAX).unwrap())
            .collect();
        let m = compile(&loaded).unwrap();
        let addrs: Vec<IpAddr> = [
            "81.2.69.160",
            "::ffff:81.2.69.160",
            "2a02:d180::1",
            "1.1.1.1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let from_loaded = lookup(&m, SourceData::Loaded(&loaded), &addrs).unwrap();
        let from_files = lookup(
            &m,
            SourceData::Files {
                specs: &specs,
                max_bytes: u64::MAX,
            },
            &addrs,
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(from_loaded, from_files);
        let a = &from_loaded[0];
        assert_eq!(a.addr, "81.2.69.160");
        assert_eq!(a.tags, ["GB", "aws:x"]);
        let sources: Vec<(&str, &[String])> = a
            .sources
            .iter()
            .map(|s| (s.prefix.as_str(), s.tags.as_slice()))
            .collect();
        assert_eq!(
            sources,
            [
                ("81.2.69.160/27", &["GB".to_owned()][..]),
                ("81.2.0.0/16", &["aws:x".to_owned()][..]),
            ]
        );
        assert_eq!(from_loaded[1], from_loaded[0]);
        assert_eq!(from_loaded[2].sources.len(), 2);
        assert!(from_loaded[3].sources.is_empty() && from_loaded[3].tags.is_empty());
    }

    #[test]
    fn answers_and_stats() {
        let m = map(&[("1.0.0.0/8", "US"), ("1.2.3.0/24", "aws:us-east-1")]);
        let a = answer(&m, "::ffff:1.2.3.4".parse().unwrap());
        assert_eq!(a.addr, "1.2.3.4");
        assert_eq!(a.tags, ["US", "aws:us-east-1"]);
        assert_eq!(a.prefix.as_deref(), Some("1.2.3.0/24"));
        let u = answer(&m, "2.0.0.1".parse().unwrap());
        assert!(u.tags.is_empty() && u.prefix.is_none());
        let s = stats(&m, &[], 0, None);
        assert_eq!(s.regions["US"].ipv4_addresses, 1 << 24);
        assert_eq!(s.regions["aws:us-east-1"].ipv4_prefixes, 1);
        assert!(s.ipv4.kernel_entries <= s.ipv4.aggregated_prefixes);
    }
}
