//! What each job resolved: (job, address) → the names that led there, with
//! how long each vouches for the address. The forwarder adds an answer's
//! chain and addresses here and writes what changed into the kernel's maps
//! (the learned map and the names map) before the answer reaches the job;
//! flow records read the names back from here.
//!
//! A job is the cgroup whose binding gave it its policy (its scope), so two
//! jobs never share what each resolved. The table is bounded: past its
//! capacity the entry touched longest ago goes (and the kernel entry with
//! it: the kernel map is sized above this capacity, so its own eviction
//! never chooses). Names are interned: an id per name, shared by every
//! entry that refers to it, freed with the last one.
//!
//! Times are boot-clock nanoseconds, as the kernel checks them.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use geowall_common::{LEARNED_NAMES, LEARNED_TIME_SHIFT, Learned, LearnedKey, NameRef};

/// A learned entry's key: the job's scope and the address (IPv4 as
/// IPv4-mapped IPv6, as the kernel keys it).
pub type Key = (u64, [u8; 16]);

/// The key of `addr` for job `scope`.
pub fn key(scope: u64, addr: IpAddr) -> Key {
    let bytes = match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    (scope, bytes)
}

/// The kernel's key for `key`.
pub fn kernel_key(key: &Key) -> LearnedKey {
    LearnedKey {
        scope: key.0,
        addr: key.1,
    }
}

/// How long an answer vouches for its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// TTLs below this count as this (seconds).
    pub min_ttl: u32,
    /// TTLs above this count as this (seconds).
    pub max_ttl: u32,
    /// Added after the TTL: a connection made just after expiry (the
    /// resolver library's own cache, a slow start) still counts.
    pub grace_ns: u64,
}

impl Lifetimes {
    /// The boot time until which an answer at `now` with `ttl` vouches.
    pub fn until(&self, now: u64, ttl: u32) -> u64 {
        let ttl = ttl.clamp(self.min_ttl, self.max_ttl.max(self.min_ttl));
        now.saturating_add(u64::from(ttl) * 1_000_000_000)
            .saturating_add(self.grace_ns)
    }
}

/// One name of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Vouch {
    id: u32,
    until_ns: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Most recent first, at most [`LEARNED_NAMES`].
    names: Vec<Vouch>,
    resolved_ns: u64,
    /// Position in the LRU order.
    tick: u64,
}

impl Entry {
    fn expires_ns(&self) -> u64 {
        self.names.iter().map(|v| v.until_ns).max().unwrap_or(0)
    }

    fn kernel_value(&self) -> Learned {
        let mut value = Learned {
            expires_ns: self.expires_ns(),
            resolved_ns: self.resolved_ns,
            names: [NameRef::default(); LEARNED_NAMES],
        };
        for (slot, v) in value.names.iter_mut().zip(&self.names) {
            *slot = NameRef {
                id: v.id,
                // Rounded up: a name never expires early in the kernel.
                until: (v.until_ns.div_ceil(1 << LEARNED_TIME_SHIFT)).min(u64::from(u32::MAX))
                    as u32,
            };
        }
        value
    }
}

/// What a change needs written to (or removed from) the kernel's maps, in
/// this order: names first (an entry never refers to a name the kernel
/// does not have), then entries, then what went.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub new_names: Vec<(u32, String)>,
    pub entries: Vec<(LearnedKey, Learned)>,
    pub removed_entries: Vec<LearnedKey>,
    pub removed_names: Vec<u32>,
}

/// What one answer taught about one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taught {
    pub key: Key,
    /// Every name of the entry now, most recent first.
    pub names: Vec<String>,
}

/// The learned names of every job.
#[derive(Debug, Clone)]
pub struct LearnedTable {
    capacity: usize,
    entries: HashMap<Key, Entry>,
    order: BTreeMap<u64, Key>,
    tick: u64,
    ids: HashMap<String, u32>,
    /// id → (name, entries referring to it).
    names: HashMap<u32, (String, usize)>,
    next_id: u32,
    /// Entries that went for lack of room.
    pub evicted: u64,
}

impl LearnedTable {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            ids: HashMap::new(),
            names: HashMap::new(),
            next_id: 1,
            evicted: 0,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Names held.
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// The name of id `id`.
    pub fn name(&self, id: u32) -> Option<&str> {
        self.names.get(&id).map(|(n, _)| n.as_str())
    }

    /// Every name with its id.
    pub fn all_names(&self) -> impl Iterator<Item = (u32, &str)> {
        self.names.iter().map(|(id, (n, _))| (*id, n.as_str()))
    }

    /// What job `scope` resolved to `addr`: its names (most recent first,
    /// live or not) and the boot time of the latest answer.
    pub fn names_of(&self, scope: u64, addr: IpAddr) -> Option<(Vec<&str>, u64)> {
        let entry = self.entries.get(&key(scope, addr))?;
        let names = entry.names.iter().filter_map(|v| self.name(v.id)).collect();
        Some((names, entry.resolved_ns))
    }

    /// Every live resolution at `now` one of whose live names `wanted`
    /// accepts: (scope, address, its live names).
    pub fn live_named(
        &self,
        now: u64,
        wanted: impl Fn(&str) -> bool,
    ) -> Vec<(u64, IpAddr, Vec<String>)> {
        let mut out = Vec::new();
        for ((scope, bytes), entry) in &self.entries {
            let names: Vec<String> = entry
                .names
                .iter()
                .filter(|v| v.until_ns > now)
                .filter_map(|v| self.name(v.id))
                .map(str::to_owned)
                .collect();
            if names.iter().any(|n| wanted(n)) {
                let v6 = std::net::Ipv6Addr::from(*bytes);
                let addr = match v6.to_ipv4_mapped() {
                    Some(v4) => IpAddr::V4(v4),
                    None => IpAddr::V6(v6),
                };
                out.push((*scope, addr, names));
            }
        }
        out
    }

    /// Whether job `scope` has a live resolution of `addr` at `now`.
    pub fn live(&self, scope: u64, addr: IpAddr, now: u64) -> bool {
        self.entries
            .get(&key(scope, addr))
            .is_some_and(|e| e.expires_ns() > now)
    }

    /// Learns an answer for job `scope` at boot time `now`: each address
    /// (with its TTL) came through `chain` (the question name first). The
    /// names go to the front of each address's entry, most recent first.
    pub fn learn(
        &mut self,
        scope: u64,
        chain: &[String],
        addresses: &[(IpAddr, u32)],
        now: u64,
        lifetimes: &Lifetimes,
    ) -> (Changes, Vec<Taught>) {
        let mut changes = Changes::default();
        let mut taught = Vec::with_capacity(addresses.len());
        if chain.is_empty() {
            return (changes, taught);
        }
        for &(addr, ttl) in addresses {
            let until_ns = lifetimes.until(now, ttl);
            let k = key(scope, addr);
            // Ids of the chain, interned (and referenced below).
            let mut fresh: Vec<Vouch> = Vec::with_capacity(chain.len());
            for name in chain.iter().take(LEARNED_NAMES) {
                let id = self.intern(name, &mut changes);
                fresh.push(Vouch { id, until_ns });
            }
            self.tick += 1;
            let tick = self.tick;
            let old = self.entries.remove(&k);
            if let Some(old) = &old {
                self.order.remove(&old.tick);
            }
            let mut names = fresh.clone();
            if let Some(old) = old {
                for v in old.names {
                    if let Some(f) = names.iter_mut().find(|f| f.id == v.id) {
                        f.until_ns = f.until_ns.max(v.until_ns);
                        // The old reference to this id goes.
                        self.release(v.id, &mut changes);
                    } else {
                        names.push(v);
                    }
                }
            }
            while names.len() > LEARNED_NAMES {
                if let Some(v) = names.pop() {
                    self.release(v.id, &mut changes);
                }
            }
            let entry = Entry {
                names,
                resolved_ns: now,
                tick,
            };
            changes.entries.push((kernel_key(&k), entry.kernel_value()));
            taught.push(Taught {
                key: k,
                names: entry
                    .names
                    .iter()
                    .filter_map(|v| self.name(v.id).map(str::to_owned))
                    .collect(),
            });
            self.entries.insert(k, entry);
            self.order.insert(tick, k);
        }
        while self.entries.len() > self.capacity {
            let Some((_, k)) = self.order.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&k) {
                self.evicted += 1;
                changes.removed_entries.push(kernel_key(&k));
                for v in e.names {
                    self.release(v.id, &mut changes);
                }
            }
        }
        // A name interned and released within this change was never
        // written: leave it out of both lists.
        changes
            .new_names
            .retain(|(id, _)| !changes.removed_names.contains(id));
        (changes, taught)
    }

    /// Drops every entry of job `scope` (its cgroup is gone).
    pub fn forget_scope(&mut self, scope: u64) -> Changes {
        let mut changes = Changes::default();
        let keys: Vec<Key> = self
            .entries
            .keys()
            .filter(|k| k.0 == scope)
            .copied()
            .collect();
        for k in keys {
            if let Some(e) = self.entries.remove(&k) {
                self.order.remove(&e.tick);
                changes.removed_entries.push(kernel_key(&k));
                for v in e.names {
                    self.release(v.id, &mut changes);
                }
            }
        }
        changes
    }

    /// Rebuilds the table from what the kernel's maps hold (an agent
    /// restart): names by id, entries by key. Entries that refer to a name
    /// the kernel lost keep their other names.
    pub fn restore(
        capacity: usize,
        names: impl IntoIterator<Item = (u32, String)>,
        entries: impl IntoIterator<Item = (LearnedKey, Learned)>,
    ) -> Self {
        let mut table = Self::new(capacity);
        for (id, name) in names {
            table.ids.insert(name.clone(), id);
            table.names.insert(id, (name, 0));
            table.next_id = table.next_id.max(id.wrapping_add(1)).max(1);
        }
        let mut entries: Vec<(LearnedKey, Learned)> = entries.into_iter().collect();
        // Oldest first, so the LRU order follows the answers' times.
        entries.sort_by_key(|(_, v)| v.resolved_ns);
        for (k, v) in entries {
            let mut names = Vec::new();
            for n in v.names.iter().filter(|n| n.id != 0) {
                if let Some(entry) = table.names.get_mut(&n.id) {
                    entry.1 += 1;
                    names.push(Vouch {
                        id: n.id,
                        until_ns: u64::from(n.until) << LEARNED_TIME_SHIFT,
                    });
                }
            }
            table.tick += 1;
            let key = (k.scope, k.addr);
            table.order.insert(table.tick, key);
            table.entries.insert(
                key,
                Entry {
                    names,
                    resolved_ns: v.resolved_ns,
                    tick: table.tick,
                },
            );
        }
        // Names no entry refers to any more.
        table.names.retain(|_, (_, refs)| *refs > 0);
        let names = &table.names;
        table.ids.retain(|_, id| names.contains_key(id));
        table
    }

    /// Names the kernel holds that the table does not refer to (after
    /// [`LearnedTable::restore`]): to delete.
    pub fn unreferenced(&self, kernel_ids: impl IntoIterator<Item = u32>) -> Vec<u32> {
        kernel_ids
            .into_iter()
            .filter(|id| !self.names.contains_key(id))
            .collect()
    }

    fn intern(&mut self, name: &str, changes: &mut Changes) -> u32 {
        if let Some(id) = self.ids.get(name) {
            if let Some(entry) = self.names.get_mut(id) {
                entry.1 += 1;
            }
            return *id;
        }
        let mut id = self.next_id;
        while id == 0 || self.names.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_id = id.wrapping_add(1);
        self.ids.insert(name.to_owned(), id);
        self.names.insert(id, (name.to_owned(), 1));
        changes.new_names.push((id, name.to_owned()));
        id
    }

    fn release(&mut self, id: u32, changes: &mut Changes) {
        let Some(entry) = self.names.get_mut(&id) else {
            return;
        };
        entry.1 = entry.1.saturating_sub(1);
        if entry.1 == 0 {
            let (name, _) = self.names.remove(&id).unwrap_or_default();
            self.ids.remove(&name);
            changes.removed_names.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const LIFE: Lifetimes = Lifetimes {
        min_ttl: 5,
        max_ttl: 3600,
        grace_ns: 2 * S,
    };

    fn chain(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ttls_are_clamped_and_the_grace_added() {
        assert_eq!(LIFE.until(0, 1), 7 * S);
        assert_eq!(LIFE.until(0, 60), 62 * S);
        assert_eq!(LIFE.until(0, 1 << 30), 3602 * S);
    }

    #[test]
    fn an_answer_teaches_every_name_on_its_chain_for_each_address() {
        let mut t = LearnedTable::new(10);
        let (changes, taught) = t.learn(
            7,
            &chain(&["api.partner.test", "edge.cdn.test"]),
            &[(ip("127.20.0.5"), 60), (ip("::1"), 60)],
            100 * S,
            &LIFE,
        );
        assert_eq!(changes.new_names.len(), 2);
        assert_eq!(changes.entries.len(), 2);
        assert_eq!(taught[0].names, ["api.partner.test", "edge.cdn.test"]);
        let (k, v) = &changes.entries[0];
        assert_eq!(k.scope, 7);
        assert_eq!(&k.addr[10..], &[0xff, 0xff, 127, 20, 0, 5]);
        assert_eq!(v.expires_ns, 162 * S);
        assert!(v.names[0].id != 0 && v.names[1].id != 0 && v.names[2].id == 0);
        let (names, at) = t.names_of(7, ip("127.20.0.5")).unwrap();
        assert_eq!(names, ["api.partner.test", "edge.cdn.test"]);
        assert_eq!(at, 100 * S);
        assert!(t.names_of(8, ip("127.20.0.5")).is_none(), "another job");
        assert!(t.live(7, ip("127.20.0.5"), 161 * S));
        assert!(!t.live(7, ip("127.20.0.5"), 162 * S));
    }

    #[test]
    fn a_shared_address_lists_every_name_most_recent_first() {
        let mut t = LearnedTable::new(10);
        t.learn(1, &chain(&["a.test"]), &[(ip("127.0.0.9"), 60)], S, &LIFE);
        let (changes, taught) = t.learn(
            1,
            &chain(&["b.test"]),
            &[(ip("127.0.0.9"), 30)],
            2 * S,
            &LIFE,
        );
        assert_eq!(taught[0].names, ["b.test", "a.test"]);
        assert!(changes.new_names.len() == 1 && changes.removed_names.is_empty());
        // Learning a.test again moves it to the front, once.
        let (_, taught) = t.learn(
            1,
            &chain(&["a.test"]),
            &[(ip("127.0.0.9"), 30)],
            3 * S,
            &LIFE,
        );
        assert_eq!(taught[0].names, ["a.test", "b.test"]);
        assert_eq!(t.name_count(), 2);
    }

    #[test]
    fn a_full_table_evicts_the_oldest_entry_and_frees_its_names() {
        let mut t = LearnedTable::new(2);
        t.learn(1, &chain(&["old.test"]), &[(ip("10.0.0.1"), 60)], S, &LIFE);
        t.learn(
            1,
            &chain(&["b.test"]),
            &[(ip("10.0.0.2"), 60)],
            2 * S,
            &LIFE,
        );
        let (changes, _) = t.learn(
            1,
            &chain(&["c.test"]),
            &[(ip("10.0.0.3"), 60)],
            3 * S,
            &LIFE,
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.evicted, 1);
        assert_eq!(changes.removed_entries.len(), 1);
        assert_eq!(changes.removed_names.len(), 1, "old.test");
        assert!(t.names_of(1, ip("10.0.0.1")).is_none());
    }

    #[test]
    fn more_names_than_fit_drop_the_oldest() {
        let mut t = LearnedTable::new(10);
        for (i, n) in ["n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7"]
            .iter()
            .enumerate()
        {
            t.learn(
                1,
                &chain(&[n]),
                &[(ip("10.0.0.1"), 60)],
                i as u64 * S,
                &LIFE,
            );
        }
        let (names, _) = t.names_of(1, ip("10.0.0.1")).unwrap();
        assert_eq!(names, ["n7", "n6", "n5", "n4", "n3", "n2"]);
        assert_eq!(t.name_count(), LEARNED_NAMES);
    }

    #[test]
    fn a_restore_rebuilds_names_and_entries_from_the_kernel() {
        let mut t = LearnedTable::new(10);
        let (c1, _) = t.learn(
            3,
            &chain(&["a.test", "b.test"]),
            &[(ip("10.0.0.1"), 60)],
            S,
            &LIFE,
        );
        let (c2, _) = t.learn(
            3,
            &chain(&["c.test"]),
            &[(ip("10.0.0.2"), 60)],
            2 * S,
            &LIFE,
        );
        let names: Vec<(u32, String)> = c1.new_names.into_iter().chain(c2.new_names).collect();
        let entries: Vec<_> = c1.entries.into_iter().chain(c2.entries).collect();
        let mut kernel_names = names.clone();
        kernel_names.push((99, "orphan.test".into()));
        let r = LearnedTable::restore(10, kernel_names, entries);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r.names_of(3, ip("10.0.0.1")).unwrap().0,
            ["a.test", "b.test"]
        );
        assert_eq!(r.unreferenced([1, 2, 3, 99]), [99]);
        // New names do not reuse ids the kernel has.
        let mut r = r;
        let (c, _) = r.learn(
            3,
            &chain(&["d.test"]),
            &[(ip("10.0.0.3"), 60)],
            3 * S,
            &LIFE,
        );
        assert!(!names.iter().any(|(id, _)| *id == c.new_names[0].0));
    }

    #[test]
    fn forgetting_a_job_removes_its_entries_and_names() {
        let mut t = LearnedTable::new(10);
        t.learn(1, &chain(&["a.test"]), &[(ip("10.0.0.1"), 60)], S, &LIFE);
        t.learn(2, &chain(&["a.test"]), &[(ip("10.0.0.1"), 60)], S, &LIFE);
        let c = t.forget_scope(1);
        assert_eq!(c.removed_entries.len(), 1);
        assert!(c.removed_names.is_empty(), "job 2 still refers to a.test");
        let c = t.forget_scope(2);
        assert_eq!(c.removed_names.len(), 1);
        assert!(t.is_empty());
    }
}
