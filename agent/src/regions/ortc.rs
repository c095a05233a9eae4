//! The fewest longest-prefix-match entries that give every address the tag
//! set the compiled map gives it (ORTC: Draves, King, Venkatachary, Zill,
//! "Constructing Optimal IP Routing Tables", INFOCOM 1999).
//!
//! The disjoint ranges of a country map split into many CIDRs; an LPM table
//! may nest instead: one wide prefix for the dominant country and more
//! specific ones for the exceptions. That roughly halves the full world map,
//! and with it the kernel memory of the tries.
//!
//! The binary trie is implicit: a prefix is a leaf when one range covers it.
//! Pass 1 (bottom-up) gives each prefix the set of labels that minimize the
//! entries below it (the intersection of its children's sets when not
//! empty, else their union); pass 2 (top-down) keeps the inherited label
//! where the set allows, and emits an entry where it does not. Entries with
//! label 0 (untagged) punch holes into wider entries; an address no entry
//! covers is untagged.

use super::{Family, Prefix, compile::FamilyMap};

/// A set of labels: one, or a sorted run in the arena (`off` is the index
/// of its length, the labels follow).
#[derive(Debug, Clone, Copy)]
enum Set {
    One(u16),
    Many { off: u32, len: u32 },
}

/// Sets are stored packed in a `u32` (a million non-leaf prefixes per
/// family): a label, or the high bit and an arena index.
const MANY: u32 = 1 << 31;

impl Set {
    fn pack(self) -> u32 {
        match self {
            Set::One(l) => u32::from(l),
            Set::Many { off, .. } => MANY | off,
        }
    }
}

struct Ortc<'a> {
    family: Family,
    starts: &'a [u128],
    labels: &'a [u16],
    /// Sets of the non-leaf prefixes, in pre-order, packed.
    sets: Vec<u32>,
    arena: Vec<u16>,
    scratch: Vec<u16>,
    out: Vec<(Prefix, u16)>,
}

impl Ortc<'_> {
    fn slice(&self, s: Set) -> &[u16] {
        match s {
            Set::Many { off, len } => &self.arena[off as usize + 1..(off + 1 + len) as usize],
            Set::One(_) => &[],
        }
    }

    fn unpack(&self, v: u32) -> Set {
        if v & MANY == 0 {
            return Set::One(v as u16);
        }
        let off = v & !MANY;
        Set::Many {
            off,
            len: u32::from(self.arena[off as usize]),
        }
    }

    /// Stores a sorted run of labels; returns its set.
    fn store(&mut self, labels: &[u16]) -> Set {
        let off = self.arena.len() as u32;
        self.arena.push(labels.len() as u16);
        self.arena.extend_from_slice(labels);
        Set::Many {
            off,
            len: labels.len() as u32,
        }
    }

    fn contains(&self, s: Set, label: u16) -> bool {
        match s {
            Set::One(l) => l == label,
            Set::Many { .. } => self.slice(s).binary_search(&label).is_ok(),
        }
    }

    fn first(&self, s: Set) -> u16 {
        match s {
            Set::One(l) => l,
            Set::Many { .. } => self.slice(s)[0],
        }
    }

    /// The ranges `[a, b)` that meet prefix `p`, given that `[a, b)` of the
    /// parent already holds them all.
    fn ranges(&self, p: &Prefix, a: usize, b: usize) -> (usize, usize) {
        let first = a + self.starts[a..b].partition_point(|s| *s <= p.bits()) - 1;
        let end = a + self.starts[a..b].partition_point(|s| *s <= p.last_bits());
        (first, end)
    }

    fn children(&self, p: &Prefix) -> [Prefix; 2] {
        let len = p.len() + 1;
        let right = p.bits() | (1u128 << (128 - u32::from(len)));
        [
            Prefix::new(self.family, p.bits(), len),
            Prefix::new(self.family, right, len),
        ]
    }

    fn combine(&mut self, l: Set, r: Set) -> Set {
        // The common case first: two single labels.
        if let (Set::One(x), Set::One(y)) = (l, r) {
            if x == y {
                return Set::One(x);
            }
            return self.store(&[x.min(y), x.max(y)]);
        }
        let one = |s: Set| match s {
            Set::One(x) => Some(x),
            Set::Many { .. } => None,
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let (lx, rx) = (one(l), one(r));
        let ls: &[u16] = lx
            .as_ref()
            .map(std::slice::from_ref)
            .unwrap_or_else(|| self.slice(l));
        let rs: &[u16] = rx
            .as_ref()
            .map(std::slice::from_ref)
            .unwrap_or_else(|| self.slice(r));
        // Both sorted: intersect, else merge.
        let (mut i, mut j) = (0, 0);
        while i < ls.len() && j < rs.len() {
            match ls[i].cmp(&rs[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    scratch.push(ls[i]);
                    i += 1;
                    j += 1;
                }
            }
        }
        if scratch.is_empty() {
            let (mut i, mut j) = (0, 0);
            while i < ls.len() || j < rs.len() {
                let next = match (ls.get(i), rs.get(j)) {
                    (Some(a), Some(b)) if a < b => {
                        i += 1;
                        *a
                    }
                    (Some(a), Some(b)) if a > b => {
                        j += 1;
                        *b
                    }
                    (Some(a), Some(_)) => {
                        i += 1;
                        j += 1;
                        *a
                    }
                    (Some(a), None) => {
                        i += 1;
                        *a
                    }
                    (None, Some(b)) => {
                        j += 1;
                        *b
                    }
                    (None, None) => unreachable!("loop condition"),
                };
                scratch.push(next);
            }
        }
        let set = if scratch.len() == 1 {
            Set::One(scratch[0])
        } else {
            self.store(&scratch)
        };
        self.scratch = scratch;
        set
    }

    /// Pass 1 for prefix `p`, whose ranges are `[a, b)`.
    fn up(&mut self, p: Prefix, a: usize, b: usize) -> Set {
        if b - a == 1 {
            return Set::One(self.labels[a]);
        }
        let at = self.sets.len();
        self.sets.push(0);
        let [lp, rp] = self.children(&p);
        let (la, lb) = self.ranges(&lp, a, b);
        let l = self.up(lp, la, lb);
        let (ra, rb) = self.ranges(&rp, a, b);
        let r = self.up(rp, ra, rb);
        let set = self.combine(l, r);
        self.sets[at] = set.pack();
        set
    }

    /// Pass 2 for prefix `p`: `inherited` is the label an LPM lookup finds
    /// above it.
    fn down(&mut self, p: Prefix, a: usize, b: usize, inherited: u16, next_set: &mut usize) {
        let leaf = b - a == 1;
        let set = if leaf {
            Set::One(self.labels[a])
        } else {
            let s = self.unpack(self.sets[*next_set]);
            *next_set += 1;
            s
        };
        let chosen = if self.contains(set, inherited) {
            inherited
        } else {
            let l = self.first(set);
            self.out.push((p, l));
            l
        };
        if leaf {
            return;
        }
        let [lp, rp] = self.children(&p);
        let (la, lb) = self.ranges(&lp, a, b);
        self.down(lp, la, lb, chosen, next_set);
        let (ra, rb) = self.ranges(&rp, a, b);
        self.down(rp, ra, rb, chosen, next_set);
    }
}

/// The minimal LPM table of one family's map: prefixes (sorted) and labels.
pub fn minimize(family: Family, map: &FamilyMap) -> Vec<(Prefix, u16)> {
    if map.is_empty() {
        return Vec::new();
    }
    let mut o = Ortc {
        family,
        starts: &map.starts,
        labels: &map.labels,
        sets: Vec::with_capacity(map.len()),
        arena: Vec::new(),
        scratch: Vec::new(),
        out: Vec::new(),
    };
    let root = Prefix::new(family, 0, 0);
    let n = map.len();
    o.up(root, 0, n);
    let mut next = 0;
    o.down(root, 0, n, 0, &mut next);
    let mut out = o.out;
    out.sort_by_key(|(p, _)| (p.bits(), p.len()));
    out
}

/// Longest-prefix match over a minimized table (for tests and checks).
pub fn lpm(table: &[(Prefix, u16)], addr: std::net::IpAddr) -> u16 {
    let host = Prefix::host(addr);
    for len in (0..=host.len()).rev() {
        let p = Prefix::new(host.family(), host.bits(), len);
        if let Ok(i) =
            table.binary_search_by(|(q, _)| (q.bits(), q.len()).cmp(&(p.bits(), p.len())))
        {
            return table[i].1;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::regions::{
        compile::compile,
        sources::{Builder, Kind, Loaded, Spec},
    };

    /// A small deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn the_minimized_table_answers_like_the_map_everywhere() {
        let countries = ["DE", "FR", "US", "JP", "BR"];
        for seed in 1..40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut b = Builder::default();
            // Random networks inside 10.0.0.0/8... and a few wide ones, so
            // local ranges, holes and nesting all occur.
            for _ in 0..(rng.next() % 60 + 1) {
                let len = 8 + (rng.next() % 25) as u8;
                let addr = (10u32 << 24) | (rng.next() as u32 & 0x00ff_ffff);
                let p = Prefix::new(Family::V4, u128::from(addr) << 96, len);
                let c = countries[(rng.next() % 5) as usize];
                let _ = b.add(p, c);
            }
            let _ = b.add("9.0.0.0/8".parse().unwrap(), "US");
            let _ = b.add("2001:db8::/32".parse().unwrap(), "DE");
            let _ = b.add("2001:db8:1::/48".parse().unwrap(), "FR");
            let src = b
                .finish(&Spec::new(Kind::Cidr, "r"), String::new(), String::new())
                .unwrap();
            let map = compile(&[src]).unwrap();
            let t4 = minimize(Family::V4, &map.v4);
            let t6 = minimize(Family::V6, &map.v6);
            assert!(t4.len() <= map.cidrs(Family::V4).len() + 1);
            for _ in 0..3000 {
                let a = IpAddr::V4(Ipv4Addr::from(
                    (10u32 << 24) | (rng.next() as u32 & 0x00ff_ffff),
                ));
                assert_eq!(lpm(&t4, a), map.lookup(a).0, "seed {seed} {a}");
                let a = IpAddr::V4(Ipv4Addr::from(rng.next() as u32));
                assert_eq!(lpm(&t4, a), map.lookup(a).0, "seed {seed} {a}");
            }
            for a in [
                "2001:db8::1",
                "2001:db8:1::1",
                "2001:db9::1",
                "::1",
                "fe80::1",
                "::",
            ] {
                let a: IpAddr = a.parse().unwrap();
                assert_eq!(lpm(&t6, a), map.lookup(a).0, "{a}");
            }
            let a = IpAddr::V6(Ipv6Addr::from(u128::MAX));
            assert_eq!(lpm(&t6, a), map.lookup(a).0);
        }
    }

    #[test]
    fn nesting_beats_disjoint_cidrs() {
        let src = Loaded::from_pairs(&[("11.0.0.0/8", "US"), ("11.1.2.0/24", "FR")]);
        let map = compile(&[src]).unwrap();
        let ortc = minimize(Family::V4, &map.v4);
        let entries: Vec<String> = ortc
            .iter()
            .filter(|(p, _)| p.to_string().starts_with("11."))
            .map(|(p, _)| p.to_string())
            .collect();
        assert_eq!(entries, ["11.0.0.0/8", "11.1.2.0/24"]);
        let disjoint = map
            .cidrs(Family::V4)
            .iter()
            .filter(|(p, _)| p.to_string().starts_with("11."))
            .count();
        assert_eq!(disjoint, 17);
    }
}
