//! The map compiler: merges every source (and the built-in `local` ranges)
//! into disjoint address ranges, each carrying every tag that applies, and
//! numbers the distinct tag combinations ("tag sets").
//!
//! Precedence, per address:
//! - within one source, its most specific network containing the address
//!   answers, for countries and for cloud regions separately (a source that
//!   tags one prefix with two countries is refused);
//! - the country comes from the last source in config order that has one
//!   (an earlier source's different country counts as overridden);
//! - cloud regions from every source add up;
//! - the built-in `local` ranges answer only where they are more specific
//!   than every source's network (that is how a test tags 127.20.0.0/16 as
//!   `US` while the rest of 127/8 stays local).
//!
//! The result covers the whole address space with ranges (untagged ones
//! carry tag set 0). Deterministic: the same sources give the same map.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use thiserror::Error;

use super::{
    Family, LOCAL, Layer, Prefix, TagKind, kind,
    prefix::mask,
    sources::{Loaded, Net},
};

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

/// One family's map: ranges covering the whole address space. Range `i`
/// starts at `starts[i]` (left-aligned bits) and ends where range `i + 1`
/// starts; `starts[0]` is 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilyMap {
    pub starts: Vec<u128>,
    pub labels: Vec<u16>,
}

impl FamilyMap {
    /// Index of the range holding `bits`.
    pub fn index_of(&self, bits: u128) -> usize {
        self.starts
            .partition_point(|s| *s <= bits)
            .saturating_sub(1)
    }

    /// Last address (left-aligned) of range `i`.
    pub fn end_of(&self, i: usize, family: Family) -> u128 {
        range_end(&self.starts, i, family)
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }
}

/// Last address (left-aligned) of range `i` of ranges starting at
/// `starts` (sorted) and covering the rest of the space.
pub fn range_end(starts: &[u128], i: usize, family: Family) -> u128 {
    match starts.get(i + 1) {
        Some(next) => next - unit(family),
        None => mask(family.width()),
    }
}

/// The distance between two consecutive addresses, left-aligned.
pub const fn unit(family: Family) -> u128 {
    1u128 << (128 - family.width() as u32)
}

/// Most tag sets a map can have: the kernel labels ranges with a `u16`.
pub const MAX_TAG_SETS: usize = 1 << 16;

/// Why sources do not compile into a map.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CompileError {
    #[error(
        "the map sources give more than {MAX_TAG_SETS} distinct combinations of tags (a country \
         with its cloud regions, local, untagged): the kernel's tables tell at most {MAX_TAG_SETS} apart"
    )]
    TooManyTagSets,
}

/// Counts of what compiling did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompileStats {
    /// Ranges of the map (as [`FamilyMap`] holds them) where a later
    /// source's country replaced an earlier one's, in all or part of the
    /// range: each counts once.
    pub overridden: usize,
}

/// A compiled region map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompiledMap {
    pub v4: FamilyMap,
    pub v6: FamilyMap,
    /// Tag set id → its tags, sorted. Id 0 is the empty set (untagged).
    pub tagsets: Vec<Vec<String>>,
    /// Every tag that occurs.
    pub tags: BTreeSet<String>,
    pub stats: CompileStats,
}

impl CompiledMap {
    pub fn family(&self, f: Family) -> &FamilyMap {
        match f {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// Whether tag set `id` is the built-in `local` set.
    pub fn is_local(&self, id: u16) -> bool {
        self.tagsets
            .get(id as usize)
            .is_some_and(|t| t.len() == 1 && t[0] == LOCAL)
    }

    /// The tag set of `addr` and the largest prefix around it that lies
    /// wholly in its range (what flow records call the matched prefix).
    pub fn lookup(&self, addr: IpAddr) -> (u16, Prefix) {
        let host = Prefix::host(addr);
        let f = host.family();
        let map = self.family(f);
        if map.is_empty() {
            return (0, Prefix::new(f, 0, 0));
        }
        let i = map.index_of(host.bits());
        let (start, end) = (map.starts[i], map.end_of(i, f));
        let mut best = host;
        for len in (0..host.len()).rev() {
            let p = Prefix::new(f, host.bits(), len);
            if p.bits() < start || p.last_bits() > end {
                break;
            }
            best = p;
        }
        (map.labels[i], best)
    }

    /// The fewest disjoint CIDRs covering the tagged ranges of `family`,
    /// with their tag sets ("aggregated prefixes").
    pub fn cidrs(&self, family: Family) -> Vec<(Prefix, u16)> {
        let mut out = Vec::new();
        self.for_each_cidr(family, |p, label| out.push((p, label)));
        out
    }

    /// Calls `f` with each of [`CompiledMap::cidrs`], in address order,
    /// without collecting them.
    pub fn for_each_cidr(&self, family: Family, mut f: impl FnMut(Prefix, u16)) {
        let map = self.family(family);
        for i in 0..map.len() {
            let label = map.labels[i];
            if label != 0 {
                range_to_cidrs(family, map.starts[i], map.end_of(i, family), |p| {
                    f(p, label)
                });
            }
        }
    }
}

/// Calls `f` with the fewest CIDRs covering `[start, end]` (left-aligned).
pub fn range_to_cidrs(family: Family, start: u128, end: u128, mut f: impl FnMut(Prefix)) {
    let width = family.width();
    let u = unit(family);
    let mut cur = start;
    loop {
        // The largest aligned block at `cur` that does not pass `end`.
        let mut len = width;
        while len > 0 {
            let p = Prefix::new(family, cur, len - 1);
            if p.bits() != cur || p.last_bits() > end {
                break;
            }
            len -= 1;
        }
        let p = Prefix::new(family, cur, len);
        f(p);
        let last = p.last_bits();
        if last >= end {
            return;
        }
        cur = last + u;
    }
}

/// A source's answer over one range: which of its tag sets, from a network
/// of which length (`len` is meaningless when `set` is `NONE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(8))]
struct Seg {
    start: u128,
    set: u32,
    len: u8,
}

const NONE: u32 = u32::MAX;

const _: () = assert!(std::mem::size_of::<Seg>() == 24 && std::mem::size_of::<Net>() == 24);

/// Runs of identical prefixes in sorted networks: (bits, len, the run).
fn runs(nets: &[Net]) -> impl Iterator<Item = (u128, u8, &[Net])> {
    let mut i = 0;
    std::iter::from_fn(move || {
        let first = nets.get(i)?;
        let n = nets[i..]
            .iter()
            .take_while(|x| x.bits == first.bits && x.len == first.len)
            .count();
        let run = &nets[i..i + n];
        i += n;
        Some((first.bits, first.len, run))
    })
}

/// One source's networks of one family (sorted by address, then length),
/// flattened into ranges covering the whole space: each address gets the
/// answer of the most specific network containing it. `sets[i]` are the tag
/// ids (the source's own) of set `i`.
fn flatten(
    family: Family,
    nets: &[Net],
    keep: impl Fn(u16) -> bool,
    sets: &mut Vec<Vec<u16>>,
) -> Vec<Seg> {
    let mut ids: HashMap<Vec<u16>, u32> = sets
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), i as u32))
        .collect();
    let u = unit(family);
    let top = mask(family.width());
    // Ranges emitted so far; the answer before any network is "none".
    // About one range per network (neighbours merge, gaps add some).
    let mut out: Vec<Seg> = Vec::with_capacity(nets.len() + nets.len() / 4 + 1);
    out.push(Seg {
        start: 0,
        set: NONE,
        len: 0,
    });
    let emit = |out: &mut Vec<Seg>, start: u128, set: u32, len: u8| {
        let last = out.last().expect("never empty");
        if last.set == set && (set == NONE || last.len == len) {
            return;
        }
        if last.start == start {
            out.pop();
            // Popping may leave an equal neighbour: merge into it.
            if out
                .last()
                .is_some_and(|l| l.set == set && (set == NONE || l.len == len))
            {
                return;
            }
        }
        out.push(Seg { start, set, len });
    };
    // Networks containing the current position: (last address, set, len).
    let mut open: Vec<(u128, u32, u8)> = Vec::new();
    let close_until =
        |out: &mut Vec<Seg>, open: &mut Vec<(u128, u32, u8)>, before: Option<u128>| {
            while let Some(&(end, _, _)) = open.last() {
                if before.is_some_and(|b| end >= b) {
                    break;
                }
                open.pop();
                if end == top {
                    // Reaches the top of the space: so do those around it.
                    open.clear();
                    break;
                }
                let (set, len) = open.last().map(|t| (t.1, t.2)).unwrap_or((NONE, 0));
                emit(out, end + u, set, len);
            }
        };
    let mut key: Vec<u16> = Vec::new();
    for (bits, len, run) in runs(nets) {
        key.clear();
        key.extend(run.iter().map(|n| n.tag).filter(|t| keep(*t)));
        if key.is_empty() {
            continue;
        }
        let set = match ids.get(key.as_slice()) {
            Some(id) => *id,
            None => {
                let id = sets.len() as u32;
                sets.push(key.clone());
                ids.insert(key.clone(), id);
                id
            }
        };
        close_until(&mut out, &mut open, Some(bits));
        emit(&mut out, bits, set, len);
        open.push((Prefix::new(family, bits, len).last_bits(), set, len));
    }
    close_until(&mut out, &mut open, None);
    out
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

/// What one input (a source or the local ranges) says, flattened.
struct Input {
    segs: Vec<Seg>,
    /// Source set → (country, cloud tags), as global tag ids.
    sets: Vec<(Option<u32>, Vec<u32>)>,
    is_local: bool,
}

fn input_for(
    family: Family,
    nets: &[Net],
    global: &[u32],
    is_cloud: &[bool],
    layer: Option<Layer>,
) -> Input {
    let cloud = |t: u16| is_cloud[global[t as usize] as usize];
    let mut raw_sets = Vec::new();
    let segs = match layer {
        None => flatten(family, nets, |_| true, &mut raw_sets),
        Some(Layer::Countries) => flatten(family, nets, |t| !cloud(t), &mut raw_sets),
        Some(Layer::Clouds) => flatten(family, nets, cloud, &mut raw_sets),
    };
    let sets = raw_sets
        .iter()
        .map(|tags| {
            let mut country = None;
            let mut clouds = Vec::new();
            for &t in tags {
                let id = global[t as usize];
                if is_cloud[id as usize] {
                    clouds.push(id);
                } else {
                    country = Some(id);
                }
            }
            (country, clouds)
        })
        .collect();
    Input {
        segs,
        sets,
        is_local: layer.is_none(),
    }
}

/// Where a source tags one prefix with two countries: an error in its data.
pub fn conflicting_countries(source: &Loaded) -> Option<(Prefix, String, String)> {
    for (family, nets) in [(Family::V4, &source.v4), (Family::V6, &source.v6)] {
        for (bits, len, run) in runs(nets) {
            let countries: Vec<&str> = run
                .iter()
                .map(|n| source.tags[n.tag as usize].as_str())
                .filter(|n| kind(n) == Some(TagKind::Country))
                .collect();
            if countries.len() > 1 {
                return Some((
                    Prefix::new(family, bits, len),
                    countries[0].to_owned(),
                    countries[1].to_owned(),
                ));
            }
        }
    }
    None
}

/// One family's map with tag sets numbered for this family only.
struct FamilyResult {
    starts: Vec<u128>,
    labels: Vec<u32>,
    /// Local tag set id → sorted global tag ids; 0 is the empty set.
    sets: Vec<Vec<u32>>,
    overridden: usize,
}

fn compile_family(
    family: Family,
    sources: &[Loaded],
    global: &[Vec<u32>],
    is_cloud: &[bool],
    local_id: u32,
) -> FamilyResult {
    let local_nets: Vec<Net> = {
        let mut v: Vec<Net> = LOCAL_RANGES
            .iter()
            .map(|r| r.parse::<Prefix>().expect("built-in ranges parse"))
            .filter(|p| p.family() == family)
            .map(|p| Net {
                bits: p.bits(),
                len: p.len(),
                tag: 0,
            })
            .collect();
        v.sort();
        v
    };
    let mut inputs = vec![input_for(family, &local_nets, &[local_id], is_cloud, None)];
    for (s, ids) in sources.iter().zip(global) {
        let nets = match family {
            Family::V4 => &s.v4,
            Family::V6 => &s.v6,
        };
        let has_cloud = ids.iter().any(|id| is_cloud[*id as usize]);
        let has_country = ids.iter().any(|id| !is_cloud[*id as usize]);
        if has_country {
            inputs.push(input_for(
                family,
                nets,
                ids,
                is_cloud,
                Some(Layer::Countries),
            ));
        }
        if has_cloud {
            inputs.push(input_for(family, nets, ids, is_cloud, Some(Layer::Clouds)));
        }
    }
    let estimate = inputs.iter().map(|i| i.segs.len()).max().unwrap_or(0);
    let mut out = FamilyResult {
        starts: Vec::with_capacity(estimate),
        labels: Vec::with_capacity(estimate),
        sets: vec![Vec::new()],
        overridden: 0,
    };
    let mut set_ids: HashMap<Vec<u32>, u32> = HashMap::new();
    set_ids.insert(Vec::new(), 0);
    // Every input's ranges are sorted and start at 0: walk them together,
    // one elementary range at a time (where any input's answer changes).
    let mut pos = vec![0usize; inputs.len()];
    let mut tags: Vec<u32> = Vec::new();
    let mut next_start = Some(0u128);
    // Whether the output range being built is already counted overridden.
    let mut counted = false;
    while let Some(start) = next_start {
        for (k, input) in inputs.iter().enumerate() {
            while pos[k] + 1 < input.segs.len() && input.segs[pos[k] + 1].start <= start {
                pos[k] += 1;
            }
        }
        next_start = inputs
            .iter()
            .zip(&pos)
            .filter_map(|(input, &p)| input.segs.get(p + 1).map(|s| s.start))
            .min();
        let mut country: Option<u32> = None;
        let mut overridden = false;
        let mut local_len: Option<u8> = None;
        let mut source_len: Option<u8> = None;
        tags.clear();
        for (k, input) in inputs.iter().enumerate() {
            let seg = input.segs[pos[k]];
            if seg.set == NONE {
                continue;
            }
            if input.is_local {
                local_len = Some(seg.len);
                continue;
            }
            source_len = Some(source_len.map_or(seg.len, |l| l.max(seg.len)));
            let (c, clouds) = &input.sets[seg.set as usize];
            if let Some(c) = c {
                if country.is_some_and(|prev| prev != *c) {
                    overridden = true;
                }
                country = Some(*c);
            }
            tags.extend(clouds.iter().copied());
        }
        let local_wins = local_len.is_some_and(|l| source_len.is_none_or(|s| l > s));
        if local_wins {
            tags.clear();
            tags.push(local_id);
        } else {
            tags.extend(country);
        }
        tags.sort_unstable();
        tags.dedup();
        let label = match set_ids.get(tags.as_slice()) {
            Some(l) => *l,
            None => {
                let l = out.sets.len() as u32;
                out.sets.push(tags.clone());
                set_ids.insert(tags.clone(), l);
                l
            }
        };
        if out.labels.last() != Some(&label) {
            out.starts.push(start);
            out.labels.push(label);
            counted = false;
        }
        if overridden && !counted {
            out.overridden += 1;
            counted = true;
        }
    }
    out
}

/// Compiles the loaded sources, in config order. The two families compile
/// in parallel; tag set ids are then given in a fixed order (IPv4's first),
/// so the same sources always give the same map. Fails when the sources
/// give more tag sets than the kernel can label.
pub fn compile(sources: &[Loaded]) -> Result<CompiledMap, CompileError> {
    let mut interner = Interner::default();
    let local_id = interner.id(LOCAL);
    let global: Vec<Vec<u32>> = sources
        .iter()
        .map(|s| s.tags.iter().map(|t| interner.id(t)).collect())
        .collect();
    let is_cloud: Vec<bool> = interner
        .names
        .iter()
        .map(|n| Layer::of(n) == Layer::Clouds)
        .collect();
    let (r4, r6) = std::thread::scope(|scope| {
        let v4 = scope.spawn(|| compile_family(Family::V4, sources, &global, &is_cloud, local_id));
        let r6 = compile_family(Family::V6, sources, &global, &is_cloud, local_id);
        (v4.join().expect("IPv4 compile thread"), r6)
    });

    let mut id_sets: Vec<Vec<u32>> = vec![Vec::new()];
    let mut ids: HashMap<Vec<u32>, u16> = HashMap::new();
    ids.insert(Vec::new(), 0);
    let mut relabel = |r: &FamilyResult| -> Result<Vec<u16>, CompileError> {
        let mut map: Vec<u16> = Vec::with_capacity(r.sets.len());
        for set in &r.sets {
            let id = match ids.get(set) {
                Some(id) => *id,
                None => {
                    let id =
                        u16::try_from(id_sets.len()).map_err(|_| CompileError::TooManyTagSets)?;
                    id_sets.push(set.clone());
                    ids.insert(set.clone(), id);
                    id
                }
            };
            map.push(id);
        }
        Ok(r.labels.iter().map(|l| map[*l as usize]).collect())
    };
    let l4 = relabel(&r4)?;
    let l6 = relabel(&r6)?;
    Ok(CompiledMap {
        v4: FamilyMap {
            starts: r4.starts,
            labels: l4,
        },
        v6: FamilyMap {
            starts: r6.starts,
            labels: l6,
        },
        tagsets: id_sets
            .iter()
            .map(|set| {
                let mut names: Vec<String> = set
                    .iter()
                    .map(|&t| interner.names[t as usize].clone())
                    .collect();
                names.sort();
                names
            })
            .collect(),
        tags: id_sets
            .iter()
            .flatten()
            .map(|t| interner.names[*t as usize].clone())
            .collect(),
        stats: CompileStats {
            overridden: r4.overridden + r6.overridden,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(lines: &[(&str, &str)]) -> Loaded {
        Loaded::from_pairs(lines)
    }

    fn compile(sources: &[Loaded]) -> CompiledMap {
        super::compile(sources).unwrap()
    }

    fn tags_of(m: &CompiledMap, addr: &str) -> Vec<String> {
        m.tagsets[m.lookup(addr.parse().unwrap()).0 as usize].clone()
    }

    fn prefix_of(m: &CompiledMap, addr: &str) -> String {
        m.lookup(addr.parse().unwrap()).1.to_string()
    }

    #[test]
    fn local_ranges_are_local_unless_a_source_is_more_specific() {
        let m = compile(&[source(&[
            ("127.20.0.0/16", "US"),
            ("127.30.0.0/16", "DE"),
            ("::1/128", "DE"),
        ])]);
        assert_eq!(tags_of(&m, "127.0.0.1"), ["local"]);
        assert_eq!(tags_of(&m, "127.20.1.2"), ["US"]);
        assert_eq!(tags_of(&m, "127.30.0.9"), ["DE"]);
        assert_eq!(tags_of(&m, "10.1.2.3"), ["local"]);
        assert_eq!(tags_of(&m, "::1"), ["DE"]);
        assert_eq!(tags_of(&m, "fd00::1"), ["local"]);
        assert!(tags_of(&m, "192.0.2.1").is_empty());
        assert!(tags_of(&m, "2001:db8::1").is_empty());
        assert!(m.is_local(m.lookup("127.0.0.1".parse().unwrap()).0));
        assert_eq!(prefix_of(&m, "127.20.1.2"), "127.20.0.0/16");
        assert_eq!(prefix_of(&m, "127.0.0.1"), "127.0.0.0/12");
        assert_eq!(prefix_of(&m, "0.0.0.0"), "0.0.0.0/32");
    }

    #[test]
    fn a_local_range_inside_a_wider_map_prefix_stays_local() {
        let m = compile(&[source(&[("8.0.0.0/5", "US")])]);
        assert_eq!(tags_of(&m, "9.9.9.9"), ["US"]);
        assert_eq!(tags_of(&m, "10.0.0.1"), ["local"]);
        assert_eq!(tags_of(&m, "11.0.0.1"), ["US"]);
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
        assert_eq!(m.stats.overridden, 0);
    }

    #[test]
    fn a_later_source_wins_on_the_country_and_the_override_is_counted() {
        let m = compile(&[
            source(&[("1.2.3.0/24", "FR"), ("1.2.0.0/16", "FR")]),
            source(&[("1.2.0.0/16", "DE")]),
        ]);
        // The later source wins even over the earlier one's more specific
        // network.
        assert_eq!(tags_of(&m, "1.2.3.4"), ["DE"]);
        assert_eq!(tags_of(&m, "1.2.9.9"), ["DE"]);
        // One range of the map, 1.2.0.0/16 DE, however many pieces the
        // earlier source had there.
        assert_eq!(prefix_of(&m, "1.2.3.4"), "1.2.0.0/16");
        assert_eq!(m.stats.overridden, 1);

        let m = compile(&[
            source(&[
                ("1.2.0.0/16", "FR"),
                ("5.0.0.0/8", "US"),
                ("9.0.0.0/9", "FR"),
                ("9.200.0.0/16", "FR"),
            ]),
            source(&[
                ("1.2.0.0/16", "DE"),
                ("5.0.0.0/8", "US"),
                ("7.0.0.0/8", "JP"),
                ("9.0.0.0/8", "IT"),
            ]),
        ]);
        // 1.2.0.0/16 and 9.0.0.0/8 (overridden in two places): two ranges.
        // The same country again, or a country where there was none, is
        // no override.
        assert_eq!(tags_of(&m, "9.250.0.1"), ["IT"]);
        assert_eq!(m.stats.overridden, 2);
    }

    #[test]
    fn neighbours_with_equal_tags_merge_and_output_is_deterministic() {
        let a = compile(&[source(&[
            ("1.0.0.0/9", "FR"),
            ("1.128.0.0/9", "FR"),
            ("1.2.0.0/16", "FR"),
        ])]);
        let cidrs: Vec<String> = a
            .cidrs(Family::V4)
            .iter()
            .filter(|(_, t)| a.tagsets[*t as usize] == ["FR"])
            .map(|(p, _)| p.to_string())
            .collect();
        assert_eq!(cidrs, ["1.0.0.0/8"]);
        let b = compile(&[source(&[
            ("1.2.0.0/16", "FR"),
            ("1.128.0.0/9", "FR"),
            ("1.0.0.0/9", "FR"),
        ])]);
        assert_eq!(a, b);
    }

    #[test]
    fn ranges_split_into_the_fewest_cidrs() {
        let p = |s: &str| s.parse::<Prefix>().unwrap();
        let mut out = Vec::new();
        range_to_cidrs(
            Family::V4,
            p("10.0.0.1").bits(),
            p("10.0.0.6").bits(),
            |x| out.push(x.to_string()),
        );
        assert_eq!(
            out,
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        out.clear();
        range_to_cidrs(Family::V4, 0, mask(32), |x| out.push(x.to_string()));
        assert_eq!(out, ["0.0.0.0/0"]);
        out.clear();
        range_to_cidrs(Family::V6, p("::").bits(), mask(128), |x| {
            out.push(x.to_string())
        });
        assert_eq!(out, ["::/0"]);
    }

    #[test]
    fn networks_at_the_edges_of_the_space() {
        let m = compile(&[source(&[
            ("0.0.0.0/0", "US"),
            ("255.255.255.255/32", "DE"),
            ("ffff::/16", "FR"),
        ])]);
        assert_eq!(tags_of(&m, "255.255.255.255"), ["DE"]);
        assert_eq!(tags_of(&m, "255.255.255.254"), ["US"]);
        assert_eq!(tags_of(&m, "1.1.1.1"), ["US"]);
        assert_eq!(tags_of(&m, "10.0.0.1"), ["local"]);
        assert_eq!(tags_of(&m, "ffff:ffff::1"), ["FR"]);
        // Inside ff00::/8 (multicast): local.
        assert_eq!(tags_of(&m, "fffe::1"), ["local"]);
        assert!(tags_of(&m, "fe00::1").is_empty());
    }

    #[test]
    fn more_tag_sets_than_the_kernel_labels_are_refused() {
        // `n` networks, each tagged with its own pair of cloud regions: `n`
        // tag sets, besides the empty set and local.
        let source = |n: u32| {
            let mut b = crate::regions::sources::Builder::default();
            for i in 0..n {
                let p = Prefix::new(Family::V4, u128::from((1u32 << 24) + 2 * i) << 96, 32);
                b.add(p, &format!("aws:a{}", i / 256)).unwrap();
                b.add(p, &format!("aws:b{}", i % 256)).unwrap();
            }
            b.finish(
                &crate::regions::sources::Spec::new(crate::regions::sources::Kind::Cidr, "t"),
                String::new(),
                String::new(),
            )
            .unwrap()
        };
        let full = MAX_TAG_SETS as u32 - 2;
        let m = super::compile(&[source(full)]).unwrap();
        assert_eq!(m.tagsets.len(), MAX_TAG_SETS);
        assert_eq!(
            super::compile(&[source(full + 1)]).unwrap_err(),
            CompileError::TooManyTagSets
        );
    }

    #[test]
    fn the_same_prefix_with_two_countries_is_found() {
        let s = source(&[
            ("10.0.0.0/8", "DE"),
            ("10.0.0.0/8", "FR"),
            ("11.0.0.0/8", "aws:x"),
        ]);
        let (p, a, b) = conflicting_countries(&s).unwrap();
        assert_eq!(
            (p.to_string(), a.as_str(), b.as_str()),
            ("10.0.0.0/8".into(), "DE", "FR")
        );
    }

    #[test]
    fn a_source_answers_per_layer_as_the_compiler_reads_it() {
        let l = Loaded::from_pairs(&[
            ("10.0.0.0/8", "DE"),
            ("10.1.0.0/16", "aws:x"),
            ("10.1.2.0/24", "FR"),
            ("10.1.2.0/24", "aws:y"),
            ("2001:db8::/32", "aws:z"),
        ]);
        let map = super::compile(std::slice::from_ref(&l)).unwrap();
        let layers = |addr: &str| {
            let mut tags: Vec<String> = l.hits(addr).into_iter().flat_map(|h| h.1).collect();
            tags.sort();
            assert_eq!(
                tags,
                map.tagsets[map.lookup(addr.parse().unwrap()).0 as usize],
                "{addr}"
            );
            l.hits(addr)
        };
        // The country from the /8, the cloud region from the /16 in it.
        assert_eq!(
            layers("10.1.0.1"),
            [
                ("10.0.0.0/8".into(), vec!["DE".into()]),
                ("10.1.0.0/16".into(), vec!["aws:x".into()]),
            ]
        );
        // Both layers from the same network: one hit.
        assert_eq!(
            layers("10.1.2.3"),
            [("10.1.2.0/24".into(), vec!["FR".into(), "aws:y".into()])]
        );
        // A cloud region only.
        assert_eq!(
            layers("2001:db8::1"),
            [("2001:db8::/32".into(), vec!["aws:z".into()])]
        );
    }
}
