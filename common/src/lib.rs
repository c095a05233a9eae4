//! The kernel ABI of geowall: map names, sizes, verdict codes and the
//! `#[repr(C)]` records that cross the boundary between the eBPF programs and
//! the agent. Both sides compile against this crate so they cannot drift.
//!
//! Every struct here is `Copy`, has explicit padding fields and a size that is
//! checked at compile time: the kernel sees raw bytes, so a silent layout
//! change would be a silent policy change.
#![cfg_attr(not(test), no_std)]

/// Bumped whenever a map's key or value layout changes. Pinned maps live under
/// a folder named after it, so a new agent never reuses maps it cannot read.
pub const ABI_VERSION: u32 = 6;

/// The release the agent and its kernel programs were built as:
/// `GEOWALL_VERSION` at build time when set (packagers stamp their builds,
/// and the upgrade test builds a second, newer release with it), else the
/// workspace version. Both sides read it from here, so the programs of one
/// build always carry the agent's version.
pub const VERSION: &str = match option_env!("GEOWALL_VERSION") {
    Some(v) if !v.is_empty() => v,
    _ => env!("CARGO_PKG_VERSION"),
};

/// [`VERSION`] packed by [`pack_version`]: what every flow event and
/// `GW_CONFIG[PROGRAM_VERSION]` carry.
pub const PACKED_VERSION: u64 = pack_version(VERSION);

/// `1.2.3` (and `1.2.3-rc.1`, `1.2.3+build`) → `1 << 32 | 2 << 16 | 3`;
/// missing parts count as 0. Usable in constants, so the
/// programs get their version at compile time.
pub const fn pack_version(v: &str) -> u64 {
    let bytes = v.as_bytes();
    let mut parts = [0u64; 3];
    let mut part = 0;
    let mut i = 0;
    while i < bytes.len() && part < 3 {
        match bytes[i] {
            b @ b'0'..=b'9' => {
                parts[part] = parts[part]
                    .saturating_mul(10)
                    .saturating_add((b - b'0') as u64);
            }
            b'.' => part += 1,
            // A pre-release or build suffix ends the numbers.
            _ => break,
        }
        i += 1;
    }
    (parts[0] << 32) | ((parts[1] & 0xffff) << 16) | (parts[2] & 0xffff)
}

/// [`pack_version`] undone: `[major, minor, patch]`.
pub const fn version_parts(packed: u64) -> [u64; 3] {
    [packed >> 32, (packed >> 16) & 0xffff, packed & 0xffff]
}

/// Upper bound on policies that can be loaded at once (policy slots).
pub const MAX_POLICIES: u32 = 256;
/// Upper bound on distinct region-tag combinations in one compiled map.
pub const MAX_TAGSETS: u32 = 4096;
/// Upper bound on distinct region tags (countries, cloud regions, `local`).
pub const MAX_REGIONS: u32 = 1024;
/// Region tags a single tag set (and so a flow event) carries.
pub const MAX_TAGS: usize = 6;
/// Rules a single (policy, prefix) entry can hold.
pub const MAX_RULES_PER_PREFIX: usize = 8;
/// Cgroup levels below the governed root that the kernel walks to find a
/// policy. Deeper cgroups inherit the policy found within this depth.
pub const MAX_CGROUP_WALK: u32 = 16;
/// Bound cgroups (job cgroups and static bindings) at once.
pub const MAX_BINDINGS: u32 = 16384;
/// Just-in-time grants a single (scope, prefix) entry can hold.
pub const MAX_GRANTS_PER_PREFIX: usize = 4;
/// (scope, prefix) entries of each grant trie.
pub const MAX_GRANT_ENTRIES: u32 = 4096;
/// Entries of the region grant map: (generation, scope, region) triples,
/// both generations counted.
pub const MAX_REGION_GRANT_ENTRIES: u32 = 8192;
/// Entries of the DNS socket map: sockets that sent a query recently, one
/// entry per resolver they asked (least recently used go first).
pub const MAX_DNS_SOCKS: u32 = 65536;
/// Default entries of the learned map, (job, address) pairs (least recently
/// used go first); `[dns] max_learned` sets it.
pub const MAX_LEARNED: u32 = 131_072;
/// Names the learned entries refer to.
pub const MAX_NAMES: u32 = 262_144;
/// (name, policy, generation) triples of `allow_names` matches.
pub const MAX_NAME_ALLOW: u32 = 262_144;
/// High bit of a grant scope: the scope is a policy slot (low bits), not a
/// cgroup id. A cgroup id (an inode number) never has it set.
pub const GRANT_SCOPE_POLICY: u64 = 1 << 63;
/// Bytes of a region name (`aws:ap-southeast-2`, `DE`, `local`), NUL padded.
pub const REGION_NAME_LEN: usize = 32;
/// Bytes of a policy name, NUL padded.
pub const POLICY_NAME_LEN: usize = 64;
/// A flow event wakes the agent's reader only when this CPU has not woken
/// it for this long (boot clock, ns); the reader also drains on a short
/// timer. Without it every event of a busy host would cost a wake-up
/// (an interrupt raised through the APIC and a context switch) on the
/// connecting CPU: 36 µs of that CPU each on the VMs geowall is benchmarked
/// on, where the APIC write traps to the hypervisor. At 10 ms a CPU that
/// logs every flow spends 0.4 % of its time on wake-ups, and a record waits
/// at most 10 ms to be read.
pub const WAKE_INTERVAL_NS: u64 = 10_000_000;
/// Default ring buffer size in bytes (a power of two, a multiple of the page).
pub const DEFAULT_RING_BYTES: u32 = 1 << 20;

/// The DNS port the programs redirect.
pub const DNS_PORT: u16 = 53;
/// Ports of the forwarder per family and protocol (`[dns] port` onwards):
/// a socket that asks several resolvers gets one port per resolver, so a
/// reply is translated back to the resolver it came through. glibc and
/// musl use at most three.
pub const DNS_SLOTS: u16 = 4;
/// Names kept per learned (job, address) entry, most recent first.
pub const LEARNED_NAMES: usize = 6;
/// Bytes of a name in [`names::NAMES`] (253 characters at most, NUL
/// padded).
pub const DNS_NAME_LEN: usize = 256;

/// `GW_CONFIG[DNS]`: on (bit 32), the forwarder's first port (host order,
/// bits 0–15).
pub mod dns_config {
    pub const ON: u64 = 1 << 32;
    pub const PORT_MASK: u64 = 0xffff;

    /// The slot value for a forwarder whose first port is `port`.
    pub const fn encode(port: u16) -> u64 {
        ON | port as u64
    }
}

/// Tag set id of destinations no map source tags ("untagged").
pub const TAGSET_UNTAGGED: u16 = 0;
/// Region id reserved for the built-in `local` tag.
pub const REGION_LOCAL: u16 = 0;

/// Map and program names, as the eBPF object names them (at most 15 bytes).
pub mod names {
    /// `u64` slots, memory-mapped by the agent: see [`super::config`].
    pub const CONFIG: &str = "GW_CONFIG";
    /// cgroup id → policy slot.
    pub const BINDINGS: &str = "GW_BINDINGS";
    /// `[generation * MAX_POLICIES + slot]` → [`super::PolicyEntry`].
    pub const POLICIES: &str = "GW_POLICIES";
    /// `[generation * MAX_TAGSETS + tagset]` → [`super::TagSet`].
    pub const TAGSETS: &str = "GW_TAGSETS";
    /// Outer array (one slot per generation) of IPv4 region tries.
    pub const REGION4: &str = "GW_REGION4";
    /// Outer array (one slot per generation) of IPv6 region tries.
    pub const REGION6: &str = "GW_REGION6";
    /// Outer array (one slot per generation) of IPv4 rule tries.
    pub const RULES4: &str = "GW_RULES4";
    /// Outer array (one slot per generation) of IPv6 rule tries.
    pub const RULES6: &str = "GW_RULES6";
    /// Per-CPU counters per policy slot: see [`super::counter`].
    pub const COUNTERS: &str = "GW_COUNTERS";
    /// Ring buffer of [`super::FlowEvent`].
    pub const EVENTS: &str = "GW_EVENTS";
    /// region id → region name (stable for the life of the pins).
    pub const REGION_NAMES: &str = "GW_REGNAMES";
    /// policy slot → policy name (stable for the life of the pins).
    pub const POLICY_NAMES: &str = "GW_POLNAMES";
    /// IPv4 just-in-time grants: LPM trie of [`super::GrantKey4`] →
    /// [`super::GrantSet`].
    pub const GRANTS4: &str = "GW_GRANTS4";
    /// IPv6 just-in-time grants: LPM trie of [`super::GrantKey6`] →
    /// [`super::GrantSet`].
    pub const GRANTS6: &str = "GW_GRANTS6";
    /// Per-CPU boot-clock time of the last ring buffer wake-up (the
    /// programs' own bookkeeping: see [`super::WAKE_INTERVAL_NS`]).
    pub const WAKE: &str = "GW_WAKE";
    /// Per-CPU verdict cache: see [`super::VerdictCache`].
    pub const VERDICT_CACHE: &str = "GW_VCACHE";
    /// Just-in-time grants to regions: hash of [`super::RegionGrantKey`] →
    /// [`super::GrantSet`].
    pub const REGION_GRANTS: &str = "GW_RGRANTS";
    /// DNS queries redirected to the agent's forwarder: LRU hash of
    /// [`super::DnsSockKey`] → [`super::DnsSock`].
    pub const DNS_SOCKS: &str = "GW_DNSSOCK";
    /// The operator's NAT64 prefixes (`[agent] nat64_prefixes`): an LPM
    /// trie of IPv6 prefixes → their length (32, 40, 48, 56, 64 or 96).
    pub const NAT64: &str = "GW_NAT64";
    /// Each CPU's scratch [`super::DnsSock`], built before it is stored (the
    /// programs' stack is too small for it beside the verdict path).
    pub const DNS_SCRATCH: &str = "GW_DNSTMP";
    /// What each job resolved: LRU hash of [`super::LearnedKey`] →
    /// [`super::Learned`].
    pub const LEARNED: &str = "GW_LEARNED";
    /// Names by id: hash of `u32` → [`super::DnsName`] (read only by the
    /// agent; pinned so that names outlive it).
    pub const NAMES: &str = "GW_NAMES";
    /// Which names a policy's `allow_names` match, per table generation:
    /// hash of [`super::NameAllowKey`] → `u8`.
    pub const NAME_ALLOW: &str = "GW_NAMEOK";

    /// Every map the object defines, for pinning and removal.
    pub const ALL_MAPS: [&str; 23] = [
        CONFIG,
        BINDINGS,
        POLICIES,
        TAGSETS,
        REGION4,
        REGION6,
        RULES4,
        RULES6,
        COUNTERS,
        EVENTS,
        REGION_NAMES,
        POLICY_NAMES,
        GRANTS4,
        GRANTS6,
        WAKE,
        VERDICT_CACHE,
        REGION_GRANTS,
        NAT64,
        DNS_SOCKS,
        DNS_SCRATCH,
        LEARNED,
        NAMES,
        NAME_ALLOW,
    ];

    pub const PROG_CONNECT4: &str = "gw_connect4";
    pub const PROG_CONNECT6: &str = "gw_connect6";
    pub const PROG_SENDMSG4: &str = "gw_sendmsg4";
    pub const PROG_SENDMSG6: &str = "gw_sendmsg6";
    pub const PROG_SOCK_CREATE: &str = "gw_sock_create";
    pub const PROG_SOCK_POST: &str = "gw_sock_post";
    pub const PROG_RECVMSG4: &str = "gw_recvmsg4";
    pub const PROG_RECVMSG6: &str = "gw_recvmsg6";
    pub const PROG_GETPEERNAME4: &str = "gw_getpeer4";
    pub const PROG_GETPEERNAME6: &str = "gw_getpeer6";
    pub const PROG_SETSOCKOPT: &str = "gw_setsockopt";
    pub const PROG_INGRESS: &str = "gw_ingress";
}

/// Slots of the `GW_CONFIG` array. The agent memory-maps it and writes each
/// slot with one aligned 8-byte store; programs read each slot once.
pub mod config {
    /// Table epoch: 0 = no tables loaded yet (every verdict is "no policy").
    /// Otherwise the active generation is `epoch & 1`; each switch adds one.
    pub const EPOCH: u32 = 0;
    /// cgroup v2 level of the governed subtree's root (0 = hierarchy root).
    pub const ROOT_LEVEL: u32 = 1;
    /// Version of the agent whose programs are attached
    /// ([`PACKED_VERSION`] of its build; read only by userspace).
    pub const PROGRAM_VERSION: u32 = 2;
    /// Unix time (s) the programs were first attached to the governed
    /// cgroup (kept when a restart adopts the links).
    pub const ATTACHED_AT: u32 = 3;
    /// Unix time (s) the agent last said it was alive (every 2 s).
    pub const HEARTBEAT: u32 = 4;
    /// Entries in the grant tries (0: skip the grant lookups).
    pub const GRANTS: u32 = 5;
    /// Raised after every change to the bindings (cgroup → policy slot):
    /// part of the key of the verdict caches ([`super::VerdictCache`]).
    pub const BINDINGS_GEN: u32 = 6;
    /// Entries in the region grant map, both generations (0: skip the
    /// region grant lookups).
    pub const REGION_GRANTS: u32 = 7;
    /// DNS redirection ([`super::dns_config`]): 0 off.
    pub const DNS: u32 = 8;
    /// The forwarder's IPv4 address as `user_ip4` holds it (network order
    /// in memory); its IPv6 address is always `::1`.
    pub const DNS_ADDR4: u32 = 9;
    /// Cookie of the agent's network namespace: DNS is redirected only for
    /// sockets of that namespace (a redirect to loopback would land in
    /// another namespace's own loopback).
    pub const NETNS: u32 = 10;
    /// Operator NAT64 prefixes in [`super::names::NAT64`] (0: only the
    /// well-known ones: the trie is not looked up).
    pub const NAT64: u32 = 11;
    /// Non-zero while the audit log cannot be written and `[audit]
    /// on_write_failure = "deny"`: a governed job's new connections are
    /// refused ([`super::reason::AUDIT`]). Read only on the verdict's slow
    /// path: the agent raises [`BINDINGS_GEN`] after each change, so no
    /// cached allow outlives it.
    pub const AUDIT_DENY: u32 = 12;
    /// Number of slots.
    pub const SLOTS: u32 = 16;
}

/// Verdicts, as recorded in [`FlowEvent::verdict`].
pub mod verdict {
    pub const ALLOW: u8 = 0;
    pub const DENY: u8 = 1;
    /// Audit mode: the policy would deny, the kernel allowed.
    pub const WOULD_DENY: u8 = 2;
}

/// Why a verdict was reached, as recorded in [`FlowEvent::reason`].
pub mod reason {
    pub const NO_POLICY: u8 = 0;
    pub const REGION: u8 = 1;
    pub const RULE: u8 = 2;
    pub const GRANT: u8 = 3;
    pub const UNTAGGED: u8 = 4;
    pub const LOCAL: u8 = 5;
    /// A raw or packet socket was refused at creation.
    pub const SOCKET_TYPE: u8 = 6;
    /// The policy slot named by a binding has no entry in the active tables:
    /// fail closed.
    pub const NO_TABLE: u8 = 7;
    /// Allowed because the job resolved the destination from a name its
    /// policy's `allow_names` matches.
    pub const NAME: u8 = 8;
    /// `resolved_only`: the job did not resolve the destination through
    /// the agent (or the resolution expired).
    pub const UNRESOLVED: u8 = 9;
    /// A DNS query from another network namespace than the agent's: its
    /// forwarder is not reachable there.
    pub const DNS_NETNS: u8 = 10;
    /// A DNS query the forwarder could not be told about (its entry could
    /// not be written).
    pub const DNS_SHARED: u8 = 11;
    /// An IPv6 routing header or IPv4 source route set on a socket that
    /// geowall cannot judge hop by hop (too many hops, the obsolete
    /// `IPV6_2292PKTOPTIONS`). A hop the policy denies is recorded with
    /// the hop's own reason.
    pub const SOURCE_ROUTE: u8 = 12;
    /// The audit log cannot be written and `[audit] on_write_failure =
    /// "deny"`: a governed job's connection is refused before anything
    /// else is looked up (fail closed: nothing goes unrecorded).
    pub const AUDIT: u8 = 13;
}

/// Which hook decided, as recorded in [`FlowEvent::hook`].
pub mod hook {
    pub const CONNECT4: u8 = 1;
    pub const CONNECT6: u8 = 2;
    pub const SENDMSG4: u8 = 3;
    pub const SENDMSG6: u8 = 4;
    pub const SOCK_CREATE: u8 = 5;
    pub const SOCK_POST_CREATE: u8 = 6;
    /// `cgroup/setsockopt`: a routing header or source route's hop.
    pub const SETSOCKOPT: u8 = 7;
    /// `cgroup_skb/ingress`: a connection to a listener.
    pub const INGRESS: u8 = 8;
}

/// Bits of [`FlowEvent::flags`].
pub mod event_flags {
    /// The destination was an IPv4-mapped IPv6 address judged as IPv4.
    pub const V4_MAPPED: u8 = 1;
    /// The deciding policy is that of the socket's creator, not of the
    /// calling task (a socket passed to, or kept by, another cgroup's task:
    /// the stricter of the two policies decided).
    pub const SOCKET_POLICY: u8 = 2;
    /// An inbound connection: the address is the peer's, the port the
    /// listener's; the task fields are whatever the kernel was running
    /// (the decision is made in softirq).
    pub const INBOUND: u8 = 4;
}

/// Bits of [`PolicyEntry::flags`].
pub mod policy_flags {
    /// The slot holds a policy in this generation.
    pub const PRESENT: u32 = 1 << 0;
    /// Audit mode: denials become "would deny" and the connection proceeds.
    pub const AUDIT: u32 = 1 << 1;
    /// Record allowed flows too (`log_allowed = "all"`).
    pub const LOG_ALLOWED: u32 = 1 << 2;
    /// The policy has CIDR rules: consult the rule tries.
    pub const HAS_RULES: u32 = 1 << 3;
    /// Raw and packet sockets are allowed to this policy's workloads.
    pub const ALLOW_RAW_SOCKETS: u32 = 1 << 4;
    /// Ping sockets (ICMP over `SOCK_DGRAM`) are allowed to this policy's
    /// workloads. Their datagrams pass no address hook.
    pub const ALLOW_PING: u32 = 1 << 5;
    /// The job's DNS queries go through the agent's forwarder.
    pub const DNS: u32 = 1 << 6;
    /// `allow_names`: consult [`super::names::NAME_ALLOW`] for a destination
    /// the region denies.
    pub const ALLOW_NAMES: u32 = 1 << 7;
    /// `resolved_only`: deny destinations the job did not resolve (rules and
    /// local destinations aside).
    pub const RESOLVED_ONLY: u32 = 1 << 8;
    /// `inbound = "judge"`: a connection to a listener of the policy's
    /// workloads is judged by the peer's address.
    pub const INBOUND: u32 = 1 << 9;
}

/// Bits of [`RegionValue::flags`] and [`TagSet::flags`].
pub mod tag_flags {
    /// The tag set is (only) the built-in `local` tag.
    pub const LOCAL: u8 = 1;
}

/// Indexes into a [`Counters`] row.
pub mod counter {
    pub const ALLOWED: usize = 0;
    pub const DENIED: usize = 1;
    pub const WOULD_DENY: usize = 2;
    /// A flow event could not be reserved in the ring buffer (it was full).
    pub const EVENTS_DROPPED: usize = 3;
    /// A verdict failed closed because a table was missing.
    pub const NO_TABLE: usize = 4;
    /// A connection refused because the audit log could not be written
    /// (`on_write_failure = "deny"`; audit-mode policies only count
    /// `WOULD_DENY`).
    pub const AUDIT_REFUSED: usize = 5;
    /// Number of counters in a row.
    pub const COUNT: usize = 8;
}

/// Rule actions, see [`Rule::action`].
pub mod action {
    pub const ALLOW: u8 = 1;
    pub const DENY: u8 = 2;
}

/// Address families as the kernel names them.
pub mod family {
    pub const INET: u8 = 2;
    pub const INET6: u8 = 10;
    pub const PACKET: u8 = 17;
    pub const XDP: u8 = 44;
}

/// One row of per-CPU counters; the map has one row per policy slot plus a
/// last row (`MAX_POLICIES`) for what belongs to no policy.
pub type Counters = [u64; counter::COUNT];

/// Words of [`PolicyEntry::allow`].
const ALLOW_WORDS: usize = (MAX_TAGSETS / 64) as usize;

/// A compiled policy in one generation of the tables.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyEntry {
    /// [`policy_flags`].
    pub flags: u32,
    pub _pad: u32,
    /// Bit `t` set: destinations whose tag set id is `t` are allowed. Tag set
    /// [`TAGSET_UNTAGGED`] carries the policy's `untagged` setting and tag
    /// sets flagged [`tag_flags::LOCAL`] its `local` setting.
    pub allow: [u64; (MAX_TAGSETS / 64) as usize],
}

impl PolicyEntry {
    pub const fn empty() -> Self {
        Self {
            flags: 0,
            _pad: 0,
            allow: [0; (MAX_TAGSETS / 64) as usize],
        }
    }

    /// Whether tag set `tagset` is allowed (false when out of range).
    #[inline(always)]
    pub fn allows(&self, tagset: u16) -> bool {
        if u32::from(tagset) >= MAX_TAGSETS {
            return false;
        }
        // Masked as well as checked: the verifier sees the index bounded
        // however the compiler arranges the check.
        let word = ((tagset as usize) >> 6) & (ALLOW_WORDS - 1);
        self.allow[word] & (1u64 << (tagset & 63)) != 0
    }

    pub fn set_allowed(&mut self, tagset: u16) {
        let word = (tagset as usize) >> 6;
        if let Some(bits) = self.allow.get_mut(word) {
            *bits |= 1u64 << (tagset & 63);
        }
    }
}

/// Value of a region trie entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RegionValue {
    /// Tag set id: index into the generation's half of `GW_TAGSETS` and bit
    /// index into [`PolicyEntry::allow`].
    pub tagset: u16,
    /// Prefix length of the entry, so a flow record can name the match.
    pub plen: u8,
    /// [`tag_flags`].
    pub flags: u8,
}

/// The region tags of one tag set, for flow records.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TagSet {
    /// Number of valid entries in `regions` (the set may have more tags than
    /// fit; the verdict bit covers all of them).
    pub count: u8,
    /// [`tag_flags`].
    pub flags: u8,
    /// Region ids (index into `GW_REGNAMES`).
    pub regions: [u16; MAX_TAGS],
}

/// Key data of an IPv4 rule trie: policy slot (big endian) then address.
pub type RuleKey4 = [u8; 8];
/// Key data of an IPv6 rule trie: policy slot (big endian) then address.
pub type RuleKey6 = [u8; 20];

/// One CIDR rule of a policy, after the prefix matched.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rule {
    /// First destination port the rule covers (host order).
    pub port_lo: u16,
    /// Last destination port the rule covers (host order); 0..=65535 = any.
    pub port_hi: u16,
    /// IP protocol number, 0 = any.
    pub proto: u8,
    /// [`action`].
    pub action: u8,
    /// Prefix length of the rule's own CIDR (for flow records).
    pub plen: u8,
    /// Position of the rule in its policy (saturating at 255), so a verdict
    /// can be traced back to the rule as written.
    pub index: u8,
}

impl Rule {
    #[inline(always)]
    pub fn matches(&self, proto: u8, port: u16) -> bool {
        (self.proto == 0 || self.proto == proto) && port >= self.port_lo && port <= self.port_hi
    }
}

/// Value of a rule trie entry: the rules that apply to the matched prefix,
/// most specific CIDR first, then in file order. The first that matches the
/// protocol and port decides; when none does, the region lookup decides.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RuleSet {
    pub count: u8,
    pub _pad: [u8; 3],
    pub rules: [Rule; MAX_RULES_PER_PREFIX],
}

/// A flow event: one decision, as the kernel saw it. Fixed size.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowEvent {
    /// `CLOCK_BOOTTIME` nanoseconds.
    pub time_ns: u64,
    /// Table epoch that decided (see [`config::EPOCH`]).
    pub epoch: u64,
    /// cgroup v2 id of the calling task.
    pub cgroup_id: u64,
    /// Socket cookie (unique per socket for the boot).
    pub sock_cookie: u64,
    /// Thread id and process id (the kernel's pid and tgid).
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Destination address in network order; IPv4 uses the first 4 bytes.
    pub addr: [u8; 16],
    /// Destination port, host order.
    pub port: u16,
    /// [`family`] of the socket.
    pub family: u8,
    /// IP protocol (6 TCP, 17 UDP, 255 raw, ...).
    pub proto: u8,
    /// [`verdict`].
    pub verdict: u8,
    /// [`reason`].
    pub reason: u8,
    /// Prefix length of the matched entry (region or rule); 0 when none.
    pub plen: u8,
    /// [`hook`].
    pub hook: u8,
    /// Policy slot.
    pub policy: u16,
    /// [`event_flags`].
    pub flags: u8,
    /// A socket's creation: its type (`SOCK_STREAM` 1, `SOCK_DGRAM` 2,
    /// `SOCK_RAW` 3); 0 for every other event.
    pub sock_type: u8,
    /// Id of the just-in-time grant that allowed the flow
    /// ([`reason::GRANT`]); 0 otherwise.
    pub grant_id: u32,
    /// Region tags of the destination.
    pub tags: TagSet,
    pub _pad3: u16,
    /// Task command name (`comm`), NUL padded.
    pub comm: [u8; 16],
    /// [`PACKED_VERSION`] of the programs that decided: after an upgrade
    /// swaps the programs, records say which build judged each flow.
    pub program_version: u64,
    /// The cgroup whose binding gave the actor its policy (its job): what
    /// the job resolved is kept per scope ([`LearnedKey::scope`]); 0 when
    /// no policy governs the actor.
    pub scope: u64,
}

/// What the tables say about one destination under one policy. The kernel
/// programs and `geowall policy explain` both reach it through
/// [`RuleSet::decide`] and [`PolicyEntry::region_decision`], so the two
/// cannot disagree about what an entry means.
///
/// `#[repr(C)]` with its padding written out: the programs copy decisions
/// as a whole, and a copied padding byte may come from a register holding
/// a pointer, which the verifier refuses to store.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Tag set of the destination ([`TAGSET_UNTAGGED`] for rule verdicts).
    pub tagset: u16,
    pub allowed: bool,
    /// [`reason`].
    pub reason: u8,
    /// Prefix length of the entry that decided (0: none).
    pub plen: u8,
    pub _pad: u8,
}

impl Decision {
    #[inline(always)]
    pub const fn new(allowed: bool, reason: u8, plen: u8, tagset: u16) -> Self {
        Self {
            tagset,
            allowed,
            reason,
            plen,
            _pad: 0,
        }
    }
}

impl RuleSet {
    /// The first rule that matches the protocol and port.
    #[inline(always)]
    pub fn first_match(&self, proto: u8, port: u16) -> Option<&Rule> {
        self.rules
            .iter()
            .take(self.count as usize)
            .find(|rule| rule.matches(proto, port))
    }

    /// The first matching rule as a decision; `None` when no rule matches
    /// (the region lookup decides).
    #[inline(always)]
    pub fn decide(&self, proto: u8, port: u16) -> Option<Decision> {
        self.first_match(proto, port).map(|rule| {
            Decision::new(
                rule.action == action::ALLOW,
                reason::RULE,
                rule.plen,
                TAGSET_UNTAGGED,
            )
        })
    }
}

impl PolicyEntry {
    /// The decision for a destination whose region trie lookup found
    /// `found` (`None`: no entry). An entry may carry the untagged set: it
    /// punches a hole into a wider prefix (the tries are minimized).
    #[inline(always)]
    pub fn region_decision(&self, found: Option<RegionValue>) -> Decision {
        match found {
            Some(value) if value.tagset != TAGSET_UNTAGGED => Decision::new(
                self.allows(value.tagset),
                if value.flags & tag_flags::LOCAL != 0 {
                    reason::LOCAL
                } else {
                    reason::REGION
                },
                value.plen,
                value.tagset,
            ),
            _ => Decision::new(
                self.allows(TAGSET_UNTAGGED),
                reason::UNTAGGED,
                0,
                TAGSET_UNTAGGED,
            ),
        }
    }
}

/// Key data of an IPv4 grant trie: scope (big endian: a cgroup id, or
/// [`GRANT_SCOPE_POLICY`] | policy slot) then address. The prefix length
/// counts the 64 scope bits.
pub type GrantKey4 = [u8; 12];
/// Key data of an IPv6 grant trie, as [`GrantKey4`].
pub type GrantKey6 = [u8; 24];

/// One just-in-time grant, as the kernel checks it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Grant {
    /// `CLOCK_BOOTTIME` nanoseconds after which the grant no longer allows
    /// anything (checked by the kernel: the agent need not be running), as
    /// two native-order halves: the trie's key (12 bytes for IPv4) only
    /// allows a value aligned to 4. See [`Grant::expires_ns`].
    pub expires: [u32; 2],
    /// Grant id (0: an empty slot).
    pub id: u32,
    /// Destination port (host order); 0 = any.
    pub port: u16,
    /// Prefix length of the granted destination (for flow records).
    pub plen: u8,
    pub _pad: u8,
}

impl Grant {
    #[inline(always)]
    pub fn expires_ns(&self) -> u64 {
        (u64::from(self.expires[1]) << 32) | u64::from(self.expires[0])
    }

    #[inline(always)]
    pub fn set_expires_ns(&mut self, ns: u64) {
        self.expires = [ns as u32, (ns >> 32) as u32];
    }

    /// Whether the grant allows `port` at boot time `now_ns`.
    #[inline(always)]
    pub fn allows(&self, port: u16, now_ns: u64) -> bool {
        self.id != 0 && (self.port == 0 || self.port == port) && now_ns < self.expires_ns()
    }
}

/// Value of a grant trie entry: every grant of the scope whose prefix
/// contains the entry's prefix (the trie returns only the most specific
/// entry, so a wider grant is repeated in the narrower entries).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GrantSet {
    pub grants: [Grant; MAX_GRANTS_PER_PREFIX],
}

impl GrantSet {
    /// The first grant that allows `port` at `now_ns`.
    #[inline(always)]
    pub fn find(&self, port: u16, now_ns: u64) -> Option<&Grant> {
        self.grants.iter().find(|g| g.allows(port, now_ns))
    }
}

/// Key of the region grant map: a grant to every destination the region
/// trie tags with `region`. Region ids belong to a generation of the tables,
/// so the agent writes the idle generation's entries before it switches
/// tables and the kernel looks up the generation that decides.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RegionGrantKey {
    /// As in [`GrantKey4`]: a cgroup id, or [`GRANT_SCOPE_POLICY`] | slot.
    pub scope: u64,
    /// Region id (index into `GW_REGNAMES`).
    pub region: u16,
    /// Table generation (`epoch & 1`).
    pub generation: u8,
    pub _pad: [u8; 5],
}

impl RegionGrantKey {
    #[inline(always)]
    pub const fn new(scope: u64, region: u16, generation: u8) -> Self {
        Self {
            scope,
            region,
            generation,
            _pad: [0; 5],
        }
    }
}

/// Where the programs find a socket's cgroup in kernel memory: byte offsets
/// the agent reads from the running kernel's BTF and hands to the programs
/// as a constant (`.rodata` global `GW_KOFFSETS`) before they are verified.
///
/// The kernel records in each socket the cgroup its creator ran in
/// (`sk->sk_cgrp_data.cgroup`); it is also the cgroup whose programs run for
/// the socket. The programs read it, and its ancestors (through the typed
/// pointer `bpf_skc_to_tcp_sock` gives for a TCP socket, else with
/// `bpf_probe_read_kernel`), so no per-socket storage is allocated when a
/// socket is created.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KernelOffsets {
    /// 1: the offsets below are valid and the programs may read kernel
    /// memory; 0: a socket's cgroup is unknown (its callers' policies alone
    /// judge it).
    pub enabled: u32,
    /// `struct sock` → `sk_cgrp_data.cgroup` (`struct cgroup *`).
    pub sock_cgroup: u32,
    /// `struct cgroup` → `kn` (`struct kernfs_node *`).
    pub cgroup_kn: u32,
    /// `struct kernfs_node` → `id` (`u64`, the cgroup id).
    pub kn_id: u32,
    /// `struct cgroup` → `self.parent` (`struct cgroup_subsys_state *`).
    pub cgroup_parent: u32,
    /// `struct cgroup` → `self` (subtracted from a parent's
    /// `cgroup_subsys_state` pointer to get its `struct cgroup`).
    pub cgroup_self: u32,
    /// `struct cgroup` → `level` (`int`, 0 at the root).
    pub cgroup_level: u32,
    pub _pad: u32,
}

impl KernelOffsets {
    /// Nothing known: the programs never read kernel memory.
    pub const NONE: Self = Self {
        enabled: 0,
        sock_cgroup: 0,
        cgroup_kn: 0,
        kn_id: 0,
        cgroup_parent: 0,
        cgroup_self: 0,
        cgroup_level: 0,
        _pad: 0,
    };
}

/// Name of the programs' `.rodata` global holding [`KernelOffsets`].
pub const KERNEL_OFFSETS_GLOBAL: &str = "GW_KOFFSETS";

/// Entries of each CPU's verdict cache (a power of two).
pub const VERDICT_CACHE_SLOTS: u32 = 256;
/// [`VerdictCache::slot`] of a cached "nothing governs this": proceed,
/// count nothing.
pub const UNGOVERNED_SLOT: u16 = u16::MAX;
/// [`VerdictCache::sock_key`] of a socket whose cgroup is unknown.
pub const NO_SOCK_CGROUP: u64 = 0;

/// One entry of a CPU's verdict cache (`GW_VCACHE`): a destination the
/// verdict path allowed, with everything that verdict depended on. A
/// connect or datagram with the same key is allowed without a lookup (its
/// counter still counts it, and under `log_allowed` its record is written
/// from the entry). Never cached: a denial, an audit-mode would-deny, a
/// grant (grants expire). The key holds the table epoch and the bindings
/// generation ([`config::BINDINGS_GEN`]): any table switch or binding change
/// empties every cache at once.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VerdictCache {
    /// Destination address (network order; IPv4 in the first 4 bytes).
    pub addr: [u8; 16],
    pub epoch: u64,
    pub bindings_gen: u64,
    /// The calling task's cgroup.
    pub cgroup_id: u64,
    /// Connects: the socket's cgroup id ([`NO_SOCK_CGROUP`]: unknown), so
    /// that one entry serves every socket the cgroup creates. Datagrams: the
    /// socket's cookie with bit 63 set (cookies count up from 1, cgroup ids
    /// put a 32-bit generation above a 32-bit inode number: neither reaches
    /// bit 63), so a datagram on a known socket reads nothing of its cgroup.
    pub sock_key: u64,
    /// Host-order port, IP protocol, 1 when `addr` was judged as IPv4.
    pub port: u16,
    pub proto: u8,
    pub v4: u8,
    /// Policy slot whose counters an allowed flow adds to
    /// ([`UNGOVERNED_SLOT`]: none).
    pub slot: u16,
    /// The decision's tag set, for the record.
    pub tagset: u16,
    pub _pad: u8,
    /// The decision's reason and prefix length, for the record.
    pub reason: u8,
    pub plen: u8,
    /// 0: write no record; else the actor's [`event_flags`] + 0x80: write
    /// an `allow` record (`log_allowed`).
    pub record: u8,
    /// [`VerdictCache::tag`] of the key and the rest, written last (a
    /// program preempted on its CPU by another run can leave a half-written
    /// entry: its tag does not match); 0: empty.
    pub tag: u32,
}

/// [`VerdictCache::record`] bit: write a record for each hit.
pub const CACHE_RECORD: u8 = 0x80;

impl VerdictCache {
    /// A 64-bit mix of what a verdict is about: destination, caller,
    /// socket. The entry's index comes from it. The epoch and bindings
    /// generation are left out (they are in the entry and its [`Self::tag`]),
    /// so that the entry's load does not wait for theirs: each is a cache
    /// miss more often than not on a busy host.
    #[inline(always)]
    pub fn hash(
        addr: &[u8; 16],
        cgroup_id: u64,
        sock_key: u64,
        port: u16,
        proto: u8,
        v4: u8,
    ) -> u64 {
        let lo = u64::from_ne_bytes([
            addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
        ]);
        let hi = u64::from_ne_bytes([
            addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
        ]);
        let small = u64::from(port) | (u64::from(proto) << 16) | (u64::from(v4) << 24);
        // Independent multiplies (they overlap in the CPU), then one mix:
        // this runs on every cached datagram.
        let h = lo.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ hi.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
            ^ cgroup_id.wrapping_mul(0x27d4_eb2f_1656_67c5)
            ^ sock_key.wrapping_mul(0x94d0_49bb_1331_11eb)
            ^ small.wrapping_mul(0xff51_afd7_ed55_8ccd);
        Self::mix(h ^ (h >> 29))
    }

    /// The tag of an entry for key hash `hash`, table epoch `epoch` and
    /// bindings generation `bindings_gen`, holding `payload` (its slot, tag
    /// set, reason, prefix length and record byte packed by the caller);
    /// never 0.
    #[inline(always)]
    pub fn tag(hash: u64, epoch: u64, bindings_gen: u64, payload: u64) -> u32 {
        let generation = (epoch ^ bindings_gen.rotate_left(32)).wrapping_mul(0x1656_67b1_9e37_79f9);
        (Self::mix(hash ^ generation ^ payload) as u32) | 1
    }

    #[inline(always)]
    fn mix(mut h: u64) -> u64 {
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^ (h >> 31)
    }
}

/// Operator NAT64 prefixes at most (besides the well-known
/// `64:ff9b::/96` and `64:ff9b:1::/48`).
pub const MAX_NAT64_PREFIXES: u32 = 16;

/// The IPv4 address an RFC 6052 address with a prefix of `len` bits
/// carries (the octet at bits 64–71 is skipped); `None` for another
/// length.
#[inline(always)]
pub fn rfc6052_v4(addr: &[u8; 16], len: u8) -> Option<[u8; 4]> {
    let a = addr;
    Some(match len {
        32 => [a[4], a[5], a[6], a[7]],
        40 => [a[5], a[6], a[7], a[9]],
        48 => [a[6], a[7], a[9], a[10]],
        56 => [a[7], a[9], a[10], a[11]],
        64 => [a[9], a[10], a[11], a[12]],
        96 => [a[12], a[13], a[14], a[15]],
        _ => return None,
    })
}

/// The IPv4 address an IPv6 destination carries by a well-known rule:
/// NAT64 `64:ff9b::/96` and `64:ff9b:1::/48` (RFC 6052, RFC 8215), 6to4
/// `2002::/16` (RFC 3056) and IPv4-compatible `::a.b.c.d` (not `::` or
/// `::1`). IPv4-mapped addresses are judged as IPv4 before this.
#[inline(always)]
pub fn well_known_v4(a: &[u8; 16]) -> Option<[u8; 4]> {
    if a[0] == 0 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b {
        let zero = |r: core::ops::Range<usize>| a[r].iter().all(|b| *b == 0);
        if zero(4..12) {
            return rfc6052_v4(a, 96);
        }
        if a[4] == 0 && a[5] == 1 {
            return rfc6052_v4(a, 48);
        }
        return None;
    }
    if a[0] == 0x20 && a[1] == 0x02 {
        return Some([a[2], a[3], a[4], a[5]]);
    }
    let mut head = 0u8;
    let mut i = 0;
    while i < 12 {
        head |= a[i];
        i += 1;
    }
    if head == 0 && (a[12] | a[13] | a[14]) != 0 {
        return Some([a[12], a[13], a[14], a[15]]);
    }
    None
}

/// Key of [`names::DNS_SOCKS`]: a socket that sent a DNS query, and the
/// forwarder port slot its query went to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DnsSockKey {
    /// Socket cookie.
    pub cookie: u64,
    /// Forwarder port − `[dns] port` (below [`DNS_SLOTS`]).
    pub slot: u32,
    pub _pad: u32,
}

/// Value of [`names::DNS_SOCKS`]: the resolver a job's socket asked, and
/// who asked, written by the program that redirected the query before the
/// query leaves. The forwarder finds the socket of a query it receives
/// (by its address, through sock_diag), and reads this entry by its
/// cookie: it forwards to `addr`:`port` and learns the answer for
/// `scope`. A query with no entry is dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DnsSock {
    /// The resolver the job addressed (network order; IPv4 in the first
    /// four bytes when `v4`).
    pub addr: [u8; 16],
    /// Its port, host order.
    pub port: u16,
    /// IP protocol (6 TCP, 17 UDP).
    pub proto: u8,
    /// 1: `addr` is IPv4 (on an IPv6 socket: it was IPv4-mapped).
    pub v4: u8,
    /// The socket's family.
    pub family: u8,
    /// 1: the UDP socket may share its port (`SO_REUSEADDR`,
    /// `SO_REUSEPORT`): the forwarder checks that every socket on the port
    /// is the same job's before it trusts the attribution.
    pub shared: u8,
    /// Policy slot of the task that sent the query.
    pub policy: u16,
    /// The task's own cgroup.
    pub cgroup_id: u64,
    /// The cgroup whose binding gave the task its policy: what the job
    /// learns is kept under it ([`LearnedKey::scope`]).
    pub scope: u64,
    /// Table epoch that judged the resolver.
    pub epoch: u64,
    /// `CLOCK_BOOTTIME` ns of the query.
    pub time_ns: u64,
    /// Thread and process id, uid and gid of the sender.
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub gid: u32,
    /// The sender's `comm`, NUL padded.
    pub comm: [u8; 16],
}

/// Key of [`names::LEARNED`]: a job and an address it resolved.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct LearnedKey {
    /// [`DnsSock::scope`] of the queries that taught it.
    pub scope: u64,
    /// The address, IPv6 or IPv4-mapped (`::ffff:a.b.c.d`), network order.
    pub addr: [u8; 16],
}

impl LearnedKey {
    /// The key for an address as the programs hold a destination: IPv4 in
    /// the first four bytes when `v4`.
    #[inline(always)]
    pub fn new(scope: u64, addr: &[u8; 16], v4: bool) -> Self {
        if !v4 {
            return Self { scope, addr: *addr };
        }
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12] = addr[0];
        mapped[13] = addr[1];
        mapped[14] = addr[2];
        mapped[15] = addr[3];
        Self {
            scope,
            addr: mapped,
        }
    }
}

/// One name an address was learned from, and until when it holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NameRef {
    /// Name id (key of [`names::NAMES`]); 0: an empty slot.
    pub id: u32,
    /// `CLOCK_BOOTTIME` >> [`LEARNED_TIME_SHIFT`] after which this name no
    /// longer vouches for the address (its answer's TTL, clamped, plus the
    /// grace period).
    pub until: u32,
}

/// [`NameRef::until`] counts units of 2^30 ns (about 1.07 s): a shift, not
/// a division, in the programs, and 136 years of boot time in 32 bits.
pub const LEARNED_TIME_SHIFT: u32 = 30;

/// Value of [`names::LEARNED`]: the names a job resolved to one address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Learned {
    /// `CLOCK_BOOTTIME` ns after which no name vouches for the address
    /// (the latest `until` of its names, in ns).
    pub expires_ns: u64,
    /// `CLOCK_BOOTTIME` ns of the latest answer that taught it.
    pub resolved_ns: u64,
    /// The names, most recent first (question name, then the CNAME chain).
    pub names: [NameRef; LEARNED_NAMES],
}

impl Learned {
    /// Whether a resolution of the address is live at boot time `now_ns`.
    #[inline(always)]
    pub fn live(&self, now_ns: u64) -> bool {
        now_ns < self.expires_ns
    }

    /// Whether name `i` is set and live at boot time `now_ns`.
    #[inline(always)]
    pub fn name_live(&self, i: usize, now_ns: u64) -> Option<u32> {
        let n = self.names.get(i)?;
        let now = (now_ns >> LEARNED_TIME_SHIFT) as u32;
        (n.id != 0 && now < n.until).then_some(n.id)
    }
}

/// Key of [`names::NAME_ALLOW`]: a name matched by the `allow_names` of the
/// policy in `slot`, in table generation `generation` (written with the
/// tables, so a reload switches the names a policy allows with the rest).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NameAllowKey {
    pub name: u32,
    pub slot: u16,
    pub generation: u8,
    pub _pad: u8,
}

impl NameAllowKey {
    #[inline(always)]
    pub const fn new(name: u32, slot: u16, generation: u8) -> Self {
        Self {
            name,
            slot,
            generation,
            _pad: 0,
        }
    }
}

/// A name in [`names::NAMES`]: lower-case, without the final dot, NUL
/// padded.
pub type DnsName = [u8; DNS_NAME_LEN];

/// A NUL-padded name, as stored in `GW_REGNAMES`.
pub type RegionName = [u8; REGION_NAME_LEN];
/// A NUL-padded name, as stored in `GW_POLNAMES`.
pub type PolicyName = [u8; POLICY_NAME_LEN];

// Layouts are part of the ABI: fail the build if one changes by accident.
const _: () = {
    assert!(core::mem::size_of::<PolicyEntry>() == 8 + (MAX_TAGSETS as usize) / 8);
    assert!(core::mem::size_of::<RegionValue>() == 4);
    assert!(core::mem::size_of::<TagSet>() == 2 + 2 * MAX_TAGS);
    assert!(core::mem::size_of::<Rule>() == 8);
    assert!(core::mem::size_of::<RuleSet>() == 4 + 8 * MAX_RULES_PER_PREFIX);
    assert!(core::mem::size_of::<FlowEvent>() == 128);
    assert!(core::mem::size_of::<DnsSockKey>() == 16);
    assert!(core::mem::size_of::<DnsSock>() == 88);
    assert!(core::mem::size_of::<LearnedKey>() == 24);
    assert!(core::mem::size_of::<Learned>() == 16 + 8 * LEARNED_NAMES);
    assert!(core::mem::size_of::<NameAllowKey>() == 8);
    assert!(core::mem::size_of::<KernelOffsets>() == 32);
    assert!(core::mem::size_of::<VerdictCache>() == 64);
    assert!(core::mem::size_of::<Grant>() == 16);
    assert!(core::mem::align_of::<GrantSet>() == 4);
    assert!(core::mem::size_of::<GrantSet>() == 16 * MAX_GRANTS_PER_PREFIX);
    assert!(core::mem::size_of::<RegionGrantKey>() == 16);
    assert!(core::mem::size_of::<FlowEvent>().is_multiple_of(8));
    // The programs copy the address as two 8-byte words.
    assert!(core::mem::offset_of!(FlowEvent, addr).is_multiple_of(8));
    assert!(MAX_TAGSETS.is_multiple_of(64));
    assert!(ALLOW_WORDS.is_power_of_two());
    assert!(MAX_TAGSETS <= u16::MAX as u32 + 1);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, `Copy`, made only of integers and
    // arrays of integers, with every padding byte an explicit field.
    unsafe impl aya::Pod for super::PolicyEntry {}
    unsafe impl aya::Pod for super::RegionValue {}
    unsafe impl aya::Pod for super::TagSet {}
    unsafe impl aya::Pod for super::Rule {}
    unsafe impl aya::Pod for super::RuleSet {}
    unsafe impl aya::Pod for super::FlowEvent {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::Grant {}
    unsafe impl aya::Pod for super::GrantSet {}
    unsafe impl aya::Pod for super::RegionGrantKey {}
    unsafe impl aya::Pod for super::DnsSockKey {}
    unsafe impl aya::Pod for super::DnsSock {}
    unsafe impl aya::Pod for super::LearnedKey {}
    unsafe impl aya::Pod for super::Learned {}
    unsafe impl aya::Pod for super::NameRef {}
    unsafe impl aya::Pod for super::NameAllowKey {}
}

#[cfg(test)]
mod tests;
