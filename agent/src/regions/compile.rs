//! The map compiler: merges every source (and the built-in `local` ranges)
//! into prefixes carrying every tag that applies, and numbers the distinct
//! tag combinations ("tag sets") that the kernel's tries point at.
//!
//! Precedence: a more specific prefix refines the tags of the prefixes that
//! contain it; on the very same prefix, a later source's country replaces an
//! earlier one's, and cloud tags accumulate. The built-in `local` ranges are
//! the least specific word on their ranges: a more specific prefix from any
//! source wins over them (that is how a test tags 127.20.0.0/16 as `US`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Family, LOCAL, Prefix, TagKind, kind, sources::Loaded};

/// Built-in local ranges: loopback, "this host", RFC 1918, CGNAT,
/// link-local, multicast; IPv6 loopback, unspecified, ULA, link-local,
/// multicast.
pub const LOCAL_RANGES: &[&str] = &[
    "0.0.0.0/32",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// A compiled region map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompiledMap {
    /// IPv4 prefixes and their tag set, sorted by address then length.
    pub v4: Vec<(Prefix, u16)>,
    /// IPv6 prefixes and their tag set, sorted by address then length.
    pub v6: Vec<(Prefix, u16)>,
    /// Tag set id → its tags (sorted). Id 0 is the empty set (untagged).
    pub tagsets: Vec<Vec<String>>,
    /// Every tag that occurs.
    pub tags: BTreeSet<String>,
    /// Prefixes read from the sources (before merging), per source.
    pub source_prefixes: Vec<usize>,
}

impl CompiledMap {
    /// Whether tag set `id` is the built-in `local` set.
    pub fn is_local(&self, id: u16) -> bool {
        self.tagsets
            .get(id as usize)
            .is_some_and(|t| t.len() == 1 && t[0] == LOCAL)
    }

    /// Tag set of the most specific prefix containing `addr` (0 = untagged),
    /// with that prefix.
    pub fn lookup(&self, addr: std::net::IpAddr) -> (u16, Option<Prefix>) {
        let host = Prefix::host(addr);
        let table = match host.family() {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        };
        // Longest match first: one binary search per prefix length.
        for len in (0..=host.len()).rev() {
            let candidate = Prefix::new(host.family(), host.bits(), len);
            if let Ok(i) =
                table.binary_search_by(|(p, _)| (p.bits(), p.len()).cmp(&(candidate.bits(), len)))
            {
                return (table[i].1, Some(candidate));
            }
        }
        (0, None)
    }
}

/// One prefix's own tags, in source order.
struct Node {
    prefix: Prefix,
    tags: Vec<u32>,
}

/// Interned tag names.
#[derive(Default)]
struct Interner {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Interner {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }
}

/// Compiles the loaded sources, in config order.
pub fn compile(sources: &[Loaded]) -> CompiledMap {
    let mut interner = Interner::default();
    let local = interner.id(LOCAL);
    let mut by_prefix: BTreeMap<(Family, u128, u8), Vec<u32>> = BTreeMap::new();
    for range in LOCAL_RANGES {
        let p: Prefix = range.parse().expect("built-in local ranges parse");
        by_prefix
            .entry((p.family(), p.bits(), p.len()))
            .or_default()
            .push(local);
    }
    for source in sources {
        for e in &source.entries {
            let tag = interner.id(&e.tag);
            by_prefix
                .entry((e.prefix.family(), e.prefix.bits(), e.prefix.len()))
                .or_default()
                .push(tag);
        }
    }
    let nodes: Vec<Node> = by_prefix
        .into_iter()
        .map(|((f, bits, len), tags)| Node {
            prefix: Prefix::new(f, bits, len),
            tags,
        })
        .collect();

    let mut tagset_ids: HashMap<Vec<u32>, u16> = HashMap::new();
    let mut effective_sets: Vec<Vec<u32>> = vec![Vec::new()];
    tagset_ids.insert(Vec::new(), 0);
    let mut out = CompiledMap::default();
    // Nodes arrive in pre-order; the stack holds the chain of prefixes that
    // contain the current one, with their effective tags.
    let mut stack: Vec<(Prefix, Vec<u32>)> = Vec::new();
    for node in nodes {
        while stack.last().is_some_and(|(p, _)| !p.contains(&node.prefix)) {
            stack.pop();
        }
        let inherited = stack.last().map(|(_, t)| t.as_slice()).unwrap_or(&[]);
        let effective = merge(inherited, &node.tags, local, &interner.names);
        if effective.as_slice() != inherited {
            let next = effective_sets.len() as u16;
            let id = *tagset_ids.entry(effective.clone()).or_insert_with(|| {
                effective_sets.push(effective.clone());
                next
            });
            match node.prefix.family() {
                Family::V4 => out.v4.push((node.prefix, id)),
                Family::V6 => out.v6.push((node.prefix, id)),
            }
        }
        stack.push((node.prefix, effective));
    }
    out.tagsets = effective_sets
        .iter()
        .map(|set| {
            let mut names: Vec<String> = set
                .iter()
                .map(|&t| interner.names[t as usize].clone())
                .collect();
            names.sort();
            names
        })
        .collect();
    out.tags = interner.names.iter().cloned().collect();
    out.source_prefixes = sources.iter().map(|s| s.entries.len()).collect();
    out
}

/// The effective tags of a prefix with `own` tags (source order) inside a
/// prefix whose effective tags are `inherited`. Sorted, no duplicates.
fn merge(inherited: &[u32], own: &[u32], local: u32, names: &[String]) -> Vec<u32> {
    let tag_kind = |t: u32| kind(&names[t as usize]);
    // Only the built-in local tag on this very prefix: it is local, whatever
    // a less specific prefix said.
    if own.iter().all(|&t| t == local) {
        return vec![local];
    }
    let own: Vec<u32> = own.iter().copied().filter(|&t| t != local).collect();
    let country = own
        .iter()
        .rev()
        .copied()
        .find(|&t| tag_kind(t) == Some(TagKind::Country));
    let own_providers: BTreeSet<&str> = own
        .iter()
        .filter_map(|&t| match tag_kind(t) {
            Some(TagKind::Cloud { provider }) => Some(provider),
            _ => None,
        })
        .collect();
    let mut out: BTreeSet<u32> = inherited
        .iter()
        .copied()
        .filter(|&t| match tag_kind(t) {
            Some(TagKind::Local) => false,
            Some(TagKind::Country) => country.is_none(),
            Some(TagKind::Cloud { provider }) => !own_providers.contains(provider),
            None => false,
        })
        .collect();
    out.extend(country);
    out.extend(
        own.iter()
            .copied()
            .filter(|&t| matches!(tag_kind(t), Some(TagKind::Cloud { .. }))),
    );
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regions::sources::{Entry, Kind};

    fn source(lines: &[(&str, &str)]) -> Loaded {
        Loaded {
            kind: Kind::Cidr,
            path: "t".into(),
            entries: lines
                .iter()
                .enumerate()
                .map(|(i, (p, t))| Entry {
                    prefix: p.parse().unwrap(),
                    tag: (*t).into(),
                    line: i as u32 + 1,
                })
                .collect(),
            sha256: String::new(),
        }
    }

    fn tags_of(m: &CompiledMap, addr: &str) -> Vec<String> {
        m.tagsets[m.lookup(addr.parse().unwrap()).0 as usize].clone()
    }

    #[test]
    fn local_ranges_are_local_unless_a_source_is_more_specific() {
        let m = compile(&[source(&[("127.20.0.0/16", "US"), ("127.30.0.0/16", "DE")])]);
        assert_eq!(tags_of(&m, "127.0.0.1"), ["local"]);
        assert_eq!(tags_of(&m, "127.20.1.2"), ["US"]);
        assert_eq!(tags_of(&m, "127.30.0.9"), ["DE"]);
        assert_eq!(tags_of(&m, "10.1.2.3"), ["local"]);
        assert_eq!(tags_of(&m, "::1"), ["local"]);
        assert_eq!(tags_of(&m, "fd00::1"), ["local"]);
        assert!(tags_of(&m, "192.0.2.1").is_empty());
        assert!(tags_of(&m, "2001:db8::1").is_empty());
        assert!(m.is_local(m.lookup("127.0.0.1".parse().unwrap()).0));
        assert_eq!(
            m.lookup("127.20.1.2".parse().unwrap())
                .1
                .unwrap()
                .to_string(),
            "127.20.0.0/16"
        );
    }

    #[test]
    fn a_local_range_inside_a_wider_map_prefix_stays_local() {
        let m = compile(&[source(&[("8.0.0.0/5", "US")])]);
        assert_eq!(tags_of(&m, "9.9.9.9"), ["US"]);
        assert_eq!(tags_of(&m, "10.0.0.1"), ["local"]);
    }

    #[test]
    fn countries_refine_and_cloud_regions_add() {
        let m = compile(&[
            source(&[("3.0.0.0/8", "US"), ("3.5.0.0/16", "DE")]),
            source(&[
                ("3.5.1.0/24", "aws:eu-central-1"),
                ("3.0.0.0/8", "aws:GLOBAL"),
            ]),
        ]);
        assert_eq!(tags_of(&m, "3.1.0.1"), ["US", "aws:GLOBAL"]);
        assert_eq!(tags_of(&m, "3.5.0.1"), ["DE", "aws:GLOBAL"]);
        assert_eq!(tags_of(&m, "3.5.1.1"), ["DE", "aws:eu-central-1"]);
    }

    #[test]
    fn a_later_source_wins_on_the_same_prefix() {
        let m = compile(&[
            source(&[("1.2.3.0/24", "FR")]),
            source(&[("1.2.3.0/24", "DE")]),
        ]);
        assert_eq!(tags_of(&m, "1.2.3.4"), ["DE"]);
    }

    #[test]
    fn redundant_prefixes_are_not_emitted_and_output_is_deterministic() {
        let a = compile(&[source(&[("1.0.0.0/8", "FR"), ("1.2.0.0/16", "FR")])]);
        assert_eq!(
            a.v4.iter()
                .filter(|(p, _)| p.to_string().starts_with("1."))
                .count(),
            1
        );
        let b = compile(&[source(&[("1.2.0.0/16", "FR"), ("1.0.0.0/8", "FR")])]);
        assert_eq!(a, b);
    }
}
