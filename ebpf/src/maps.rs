//! Every map the programs use. Names, sizes and value layouts come from
//! `geowall-common`, which the agent reads too.
//!
//! Tables that must change together (policies, tag sets, region and rule
//! tries) exist twice, one half per generation; `GW_CONFIG[EPOCH] & 1` names
//! the active half. The agent fills the inactive half, then flips the epoch
//! with a single 8-byte store.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    btf_maps::{Array, ArrayOfMaps, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use geowall_common::{
    Counters, DEFAULT_RING_BYTES, DnsName, DnsSock, DnsSockKey, FlowEvent, GrantKey4, GrantKey6,
    GrantSet, Learned, LearnedKey, MAX_BINDINGS, MAX_DNS_SOCKS, MAX_GRANT_ENTRIES, MAX_LEARNED,
    MAX_NAME_ALLOW, MAX_NAMES, MAX_NAT64_PREFIXES, MAX_POLICIES, MAX_REGION_GRANT_ENTRIES,
    MAX_REGIONS, MAX_TAGSETS, NameAllowKey, PolicyEntry, PolicyName, RegionGrantKey, RegionName,
    RegionValue, RuleKey4, RuleKey6, RuleSet, TagSet, VERDICT_CACHE_SLOTS, VerdictCache, config,
};

const MMAPABLE: usize = BPF_F_MMAPABLE as usize;
const NO_PREALLOC: usize = BPF_F_NO_PREALLOC as usize;

/// Generations of the switched tables.
pub const GENERATIONS: usize = 2;

#[btf_map]
pub static GW_CONFIG: Array<u64, { config::SLOTS as usize }, MMAPABLE> = Array::new();

#[btf_map]
pub static GW_BINDINGS: HashMap<u64, u32, { MAX_BINDINGS as usize }, NO_PREALLOC> = HashMap::new();

#[btf_map]
pub static GW_POLICIES: Array<PolicyEntry, { GENERATIONS * MAX_POLICIES as usize }> = Array::new();

#[btf_map]
pub static GW_TAGSETS: Array<TagSet, { GENERATIONS * MAX_TAGSETS as usize }> = Array::new();

// The inner tries declared here are only templates: the agent creates a trie
// sized to each compiled map and stores it in the inactive slot.
#[btf_map]
pub static GW_REGION4: ArrayOfMaps<LpmTrie<[u8; 4], RegionValue, 1>, GENERATIONS> =
    ArrayOfMaps::new();

#[btf_map]
pub static GW_REGION6: ArrayOfMaps<LpmTrie<[u8; 16], RegionValue, 1>, GENERATIONS> =
    ArrayOfMaps::new();

#[btf_map]
pub static GW_RULES4: ArrayOfMaps<LpmTrie<RuleKey4, RuleSet, 1>, GENERATIONS> = ArrayOfMaps::new();

#[btf_map]
pub static GW_RULES6: ArrayOfMaps<LpmTrie<RuleKey6, RuleSet, 1>, GENERATIONS> = ArrayOfMaps::new();

#[btf_map]
pub static GW_COUNTERS: PerCpuArray<Counters, { MAX_POLICIES as usize + 1 }> = PerCpuArray::new();

#[btf_map]
pub static GW_EVENTS: RingBuf<FlowEvent, { DEFAULT_RING_BYTES as usize }> = RingBuf::new();

/// Just-in-time grants, one trie per family, not switched with the tables:
/// a grant is written once and expires by itself.
#[btf_map]
pub static GW_GRANTS4: LpmTrie<GrantKey4, GrantSet, { MAX_GRANT_ENTRIES as usize }, NO_PREALLOC> =
    LpmTrie::new();

#[btf_map]
pub static GW_GRANTS6: LpmTrie<GrantKey6, GrantSet, { MAX_GRANT_ENTRIES as usize }, NO_PREALLOC> =
    LpmTrie::new();

/// Each CPU's cache of recent allowed verdicts (see `cache`).
#[btf_map]
pub static GW_VCACHE: PerCpuArray<VerdictCache, { VERDICT_CACHE_SLOTS as usize }> =
    PerCpuArray::new();

/// Per-CPU time of the last ring buffer wake-up (see `events::emit`).
#[btf_map]
pub static GW_WAKE: PerCpuArray<u64, 1> = PerCpuArray::new();

/// Just-in-time grants to regions, keyed by table generation: region ids
/// belong to the tables, so the agent writes the idle generation's entries
/// with the tables, before the epoch flips.
#[btf_map]
pub static GW_RGRANTS: HashMap<
    RegionGrantKey,
    GrantSet,
    { MAX_REGION_GRANT_ENTRIES as usize },
    NO_PREALLOC,
> = HashMap::new();

/// The operator's NAT64 prefixes → their length.
#[btf_map]
pub static GW_NAT64: LpmTrie<[u8; 16], u8, { MAX_NAT64_PREFIXES as usize }, NO_PREALLOC> =
    LpmTrie::new();

/// DNS queries redirected to the forwarder, by socket and forwarder port
/// (see [`DnsSock`]).
#[btf_map]
pub static GW_DNSSOCK: LruHashMap<DnsSockKey, DnsSock, { MAX_DNS_SOCKS as usize }> =
    LruHashMap::new();

/// Each CPU's [`DnsSock`] under construction.
#[btf_map]
pub static GW_DNSTMP: PerCpuArray<DnsSock, 1> = PerCpuArray::new();

/// What each job resolved (written by the agent's forwarder before the
/// answer reaches the job; the agent sizes it from `[dns] max_learned`).
#[btf_map]
pub static GW_LEARNED: LruHashMap<LearnedKey, Learned, { MAX_LEARNED as usize }> =
    LruHashMap::new();

/// The names each policy's `allow_names` match, per generation.
#[btf_map]
pub static GW_NAMEOK: HashMap<NameAllowKey, u8, { MAX_NAME_ALLOW as usize }, NO_PREALLOC> =
    HashMap::new();

// Read only by the agent; declared here so they are created and pinned with
// the rest.
#[btf_map]
pub static GW_NAMES: HashMap<u32, DnsName, { MAX_NAMES as usize }, NO_PREALLOC> = HashMap::new();

#[btf_map]
pub static GW_REGNAMES: Array<RegionName, { MAX_REGIONS as usize }> = Array::new();

#[btf_map]
pub static GW_POLNAMES: Array<PolicyName, { MAX_POLICIES as usize }> = Array::new();

/// Reads one `GW_CONFIG` slot (0 when out of range, which cannot happen for
/// the constant slots used).
#[inline(always)]
pub fn config_slot(slot: u32) -> u64 {
    match GW_CONFIG.get_ptr(slot) {
        // SAFETY: an array value pointer is valid for the program's run; the
        // agent writes slots with aligned 8-byte stores, so one load sees the
        // old or the new value.
        Some(p) => unsafe { core::ptr::read_volatile(p) },
        None => 0,
    }
}

/// Clamp for the governed root's level as read from `GW_CONFIG`, so the
/// ancestor walk's arithmetic stays bounded whatever the slot holds.
pub const MAX_ROOT_LEVEL: u64 = 1024;
