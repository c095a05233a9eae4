//! Flow records: one JSON line per decision, and the other record kinds of
//! the audit log. Every record carries `v`, `time`, `seq` and `prev` (the
//! SHA-256 of the line before it, see [`super::log`]).

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use geowall_common::{FlowEvent, event_flags, family, hook, reason};
use serde::{Deserialize, Serialize, Serializer};

use crate::{
    regions::Prefix,
    tables::codes::{hook_name, reason_name, unpack_version, verdict_name},
};

/// What /proc said about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub exe: Option<String>,
    pub cmdline: Option<String>,
}

/// Version of the record schema (`v`). 2: `exe`, `cmdline`, `user`, `map`
/// and the hash chain (`prev`); `lost`, `allowed` and `log` records.
pub const SCHEMA_VERSION: u32 = 2;

/// `prev` of the first record of a log: 64 zeros.
pub const GENESIS: Prev = Prev([b'0'; 64]);

/// The SHA-256 of the previous line, lower-case hex.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Prev(pub [u8; 64]);

impl Prev {
    /// The hash of `line` (without its newline).
    pub fn of(line: &[u8]) -> Prev {
        Prev(crate::vocab::hex::sha256_hex_array(line))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex")
    }
}

impl std::fmt::Debug for Prev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for Prev {
    fn default() -> Self {
        GENESIS
    }
}

impl Serialize for Prev {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A record the log can chain: it takes its sequence number and `prev` when
/// it is appended.
pub trait Chained: Serialize {
    fn chain(&mut self, seq: u64, prev: Prev);
    /// `flow`, or the record's `kind`.
    fn kind(&self) -> &str;
    /// Appends the record as one line of JSON (no newline) to `out`.
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, self)
    }
}

/// One source of the map that decided, as flow records name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapSource {
    /// `kind:path` (`mmdb:/var/lib/geowall/GeoLite2-Country.mmdb`).
    pub source: String,
    pub sha256: String,
    /// What the file says about itself (type, build date), when it does.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub about: String,
}

/// One decision of the kernel. Built per event, so it borrows what it can
/// from the event and the names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowRecord<'a> {
    pub v: u32,
    pub time: String,
    pub seq: u64,
    /// `allow`, `deny` or `would_deny`.
    pub verdict: &'static str,
    /// `region`, `rule`, `grant`, `untagged`, `local`, `socket_type`,
    /// `no_table`.
    pub reason: &'static str,
    pub policy: Cow<'a, str>,
    /// Region tags of the destination.
    pub tags: Vec<Cow<'a, str>>,
    /// The matched prefix (region map entry, rule, or granted destination).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The just-in-time grant that allowed the flow (`reason = grant`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// The IPv4 address an IPv6 destination carries (NAT64, 6to4,
    /// IPv4-compatible), which was judged too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inner: Option<Ipv4Addr>,
    /// The names the job resolved to the destination (question names and
    /// CNAME chains, most recent first); absent when it resolved none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// When the latest of those answers came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    /// `inbound` for a connection to the job's listener (`dst` is then the
    /// peer, `dport` the listening port, and the process fields are
    /// whatever the kernel was running); absent for outbound flows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    /// `tcp`, `udp`, `icmp`, `raw`, `packet`, or the protocol number.
    pub proto: Cow<'static, str>,
    /// `ipv4`, `ipv6` or `packet`.
    pub family: Cow<'static, str>,
    /// The kernel hook that decided.
    pub hook: &'static str,
    /// The release of the kernel programs that decided (an upgrade swaps
    /// them under running jobs: this says which build judged the flow).
    pub program: Cow<'static, str>,
    /// Process id (the kernel's tgid) and thread id.
    pub pid: u32,
    pub tid: u32,
    pub comm: Cow<'a, str>,
    /// The executable and the masked command line, from /proc (absent when
    /// the process was gone, or was another by the time the event was read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<&'a str>,
    pub uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    pub gid: u32,
    /// cgroup of the task, relative to the cgroup v2 mount.
    pub cgroup: Cow<'a, str>,
    pub cgroup_id: u64,
    /// The `geowall exec` job the task belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<&'a str>,
    /// `socket` when the policy that decided is the one the socket was
    /// created under, not the caller's (a socket that changed hands: the
    /// stricter of the two decided). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_from: Option<&'static str>,
    pub host: &'a str,
    /// Table epoch that decided (see the `config` records).
    pub epoch: u64,
    /// The map sources of that epoch, by name and SHA-256: what an auditor
    /// needs to reproduce the verdict. What each source says about itself
    /// (`about`) is in the epoch's `config` record, not repeated here: it
    /// was a third of every flow record.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "sources_by_hash"
    )]
    pub map: Option<&'a [MapSource]>,
    pub prev: Prev,
}

/// `[{"source": …, "sha256": …}]` of `map`.
fn sources_by_hash<S: Serializer>(map: &Option<&[MapSource]>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::{SerializeSeq, SerializeStruct};
    struct ByHash<'a>(&'a MapSource);
    impl Serialize for ByHash<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut st = s.serialize_struct("MapSource", 2)?;
            st.serialize_field("source", &self.0.source)?;
            st.serialize_field("sha256", &self.0.sha256)?;
            st.end()
        }
    }
    let sources = map.unwrap_or_default();
    let mut seq = s.serialize_seq(Some(sources.len()))?;
    for src in sources {
        seq.serialize_element(&ByHash(src))?;
    }
    seq.end()
}

impl Chained for FlowRecord<'_> {
    fn chain(&mut self, seq: u64, prev: Prev) {
        self.seq = seq;
        self.prev = prev;
    }
    fn kind(&self) -> &str {
        "flow"
    }

    /// By hand: a flow record is written for every logged flow, and the
    /// generic serializer (a byte-at-a-time string escape, a call per field)
    /// was a fifth of the agent's time per record at 90,000 records a
    /// second. The output is byte for byte what `serde_json` writes (a unit
    /// test holds the two together).
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let mut w = JsonObject::new(out);
        w.num("v", self.v);
        w.str("time", &self.time);
        w.num("seq", self.seq);
        w.str("verdict", self.verdict);
        w.str("reason", self.reason);
        w.str("policy", &self.policy);
        w.list("tags", &self.tags, |out, t| escape_into(out, t));
        if let Some(p) = &self.prefix {
            w.str("prefix", p);
        }
        if let Some(g) = self.grant_id {
            w.num("grant_id", g);
        }
        if let Some(dst) = self.dst {
            w.display("dst", dst);
        }
        if let Some(p) = self.dport {
            w.num("dport", p);
        }
        if let Some(inner) = self.inner {
            w.display("inner", inner);
        }
        if let Some(names) = &self.names {
            w.list("names", names, |out, n| escape_into(out, n));
        }
        if let Some(r) = &self.resolved {
            w.str("resolved", r);
        }
        if let Some(d) = self.direction {
            w.str("direction", d);
        }
        w.str("proto", &self.proto);
        w.str("family", &self.family);
        w.str("hook", self.hook);
        w.str("program", &self.program);
        w.num("pid", self.pid);
        w.num("tid", self.tid);
        w.str("comm", &self.comm);
        if let Some(e) = self.exe {
            w.str("exe", e);
        }
        if let Some(c) = self.cmdline {
            w.str("cmdline", c);
        }
        w.num("uid", self.uid);
        if let Some(u) = self.user {
            w.str("user", u);
        }
        w.num("gid", self.gid);
        w.str("cgroup", &self.cgroup);
        w.num("cgroup_id", self.cgroup_id);
        if let Some(j) = self.job {
            w.str("job", j);
        }
        if let Some(f) = self.policy_from {
            w.str("policy_from", f);
        }
        w.str("host", self.host);
        w.num("epoch", self.epoch);
        if let Some(map) = self.map {
            w.list("map", map, |out, src| {
                let mut o = JsonObject::new(out);
                o.str("source", &src.source);
                o.str("sha256", &src.sha256);
                o.end();
            });
        }
        // Hex digits: nothing to escape.
        w.key("prev");
        w.out.push(b'"');
        w.out.extend_from_slice(&self.prev.0);
        w.out.push(b'"');
        w.end();
        Ok(())
    }
}

/// Writes one JSON object's members in order.
struct JsonObject<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> JsonObject<'o> {
    fn new(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        JsonObject { out, first: true }
    }

    /// `key` is one of this file's literals: plain ASCII, nothing to
    /// escape.
    fn key(&mut self, key: &str) {
        debug_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        escape_into(self.out, value);
    }

    fn num(&mut self, key: &str, value: impl itoa::Integer) {
        self.key(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn display(&mut self, key: &str, value: impl std::fmt::Display) {
        use std::io::Write;
        self.key(key);
        self.out.push(b'"');
        // Only for values whose text needs no escaping (addresses).
        let _ = write!(self.out, "{value}");
        self.out.push(b'"');
    }

    /// `key: [item, …]`, each item written by `each`.
    fn list<T>(&mut self, key: &str, items: &[T], each: impl Fn(&mut Vec<u8>, &T)) {
        self.key(key);
        self.out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            each(self.out, item);
        }
        self.out.push(b']');
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// `s` as a JSON string, escaped as `serde_json` escapes: `"`, `\\`, and
/// control characters (`\\b \\f \\n \\r \\t` by name, the rest as
/// `\\u00XX`). Blocks of 16 plain bytes are skipped with one test each (the
/// compiler checks a block's bytes side by side); runs of plain bytes are
/// copied whole.
fn escape_into(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const BLOCK: usize = 16;
    #[inline(always)]
    fn special(b: u8) -> bool {
        b < 0x20 || b == b'"' || b == b'\\'
    }
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(block) = bytes.get(i..i + BLOCK)
            && !block.iter().fold(false, |any, &b| any | special(b))
        {
            i += BLOCK;
            continue;
        }
        let b = bytes[i];
        if special(b) {
            out.extend_from_slice(&bytes[start..i]);
            let short = match b {
                b'"' => b'"',
                b'\\' => b'\\',
                0x08 => b'b',
                0x0c => b'f',
                b'\n' => b'n',
                b'\r' => b'r',
                b'\t' => b't',
                _ => b'u',
            };
            out.push(b'\\');
            out.push(short);
            if short == b'u' {
                out.extend_from_slice(&[
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ]);
            }
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Names needed to turn ids into words.
pub trait Resolver {
    fn policy(&self, slot: u16) -> Option<&str>;
    fn region(&self, id: u16) -> Option<&str>;
    /// The compiled map that was in force at table epoch `epoch`, if known.
    fn map(&self, epoch: u64) -> Option<&crate::regions::CompiledMap>;
    /// The sources of that map.
    fn map_sources(&self, epoch: u64) -> Option<&[MapSource]>;
    /// Path of a cgroup id, relative to the cgroup v2 mount.
    fn cgroup(&self, id: u64) -> Option<&str>;
    /// The `geowall exec` job of a cgroup id.
    fn job(&self, id: u64) -> Option<&str>;
    fn host(&self) -> &str;
    /// Whether the policy in `slot` logs allowed flows as `first`.
    fn logs_first(&self, _slot: u16) -> bool {
        false
    }
    /// The policy slots in use.
    fn named_slots(&self) -> Vec<u32> {
        Vec::new()
    }
    /// What job `scope` resolved to `addr`: its names (most recent first)
    /// and the boot time of the latest answer.
    fn resolved(&self, _scope: u64, _addr: IpAddr) -> Option<(Vec<String>, u64)> {
        None
    }
    /// The operator's NAT64 prefixes.
    fn nat64(&self) -> &[(Ipv6Addr, u8)] {
        &[]
    }
}

/// Whether the event is about creating a socket (no destination yet).
fn is_creation(ev: &FlowEvent) -> bool {
    matches!(ev.hook, hook::SOCK_CREATE | hook::SOCK_POST_CREATE)
}

fn proto_name(ev: &FlowEvent) -> Cow<'static, str> {
    match ev.family {
        family::PACKET => return "packet".into(),
        family::XDP => return "xdp".into(),
        _ => {}
    }
    if is_creation(ev) {
        // The socket's type says raw or not (programs before it was carried
        // say 0: a refused creation was a raw or a ping socket then).
        let icmp = matches!(
            i32::from(ev.proto),
            libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6
        );
        if ev.sock_type == 0 {
            return if icmp { "icmp" } else { "raw" }.into();
        }
        return match (i32::from(ev.sock_type), i32::from(ev.proto)) {
            (libc::SOCK_RAW, _) => "raw".into(),
            (_, libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6) => "icmp".into(),
            (_, libc::IPPROTO_UDPLITE) => "udplite".into(),
            (_, libc::IPPROTO_SCTP) => "sctp".into(),
            (_, libc::IPPROTO_TCP) => "tcp".into(),
            (_, libc::IPPROTO_UDP) => "udp".into(),
            (_, p) => p.to_string().into(),
        };
    }
    match i32::from(ev.proto) {
        libc::IPPROTO_TCP => "tcp".into(),
        libc::IPPROTO_UDP => "udp".into(),
        p => p.to_string().into(),
    }
}

fn family_name(f: u8) -> Cow<'static, str> {
    match f {
        family::INET => "ipv4".into(),
        family::INET6 => "ipv6".into(),
        family::PACKET => "packet".into(),
        family::XDP => "xdp".into(),
        other => other.to_string().into(),
    }
}

/// The destination address of an event (None for socket creation).
pub fn destination(ev: &FlowEvent) -> Option<IpAddr> {
    if is_creation(ev) {
        return None;
    }
    let v4 = Ipv4Addr::new(ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3]);
    Some(match ev.family {
        family::INET => IpAddr::V4(v4),
        _ if ev.flags & event_flags::V4_MAPPED != 0 => IpAddr::V6(v4.to_ipv6_mapped()),
        _ => IpAddr::V6(Ipv6Addr::from(ev.addr)),
    })
}

/// The address the kernel judged: an IPv4-mapped destination as IPv4.
pub fn judged(ev: &FlowEvent) -> Option<IpAddr> {
    if is_creation(ev) {
        return None;
    }
    let judged_v4 = ev.family == family::INET || ev.flags & event_flags::V4_MAPPED != 0;
    Some(if judged_v4 {
        IpAddr::V4(Ipv4Addr::new(
            ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3],
        ))
    } else {
        IpAddr::V6(Ipv6Addr::from(ev.addr))
    })
}

/// Tags and matched prefix of an event's destination. With the map that
/// decided at hand, the prefix is the map's range around the address (the
/// kernel's entry may be a wider, minimized one) and the tags are all of
/// them; otherwise the kernel's own (at most six tags, its entry).
fn tags_and_prefix<'a>(
    ev: &FlowEvent,
    names: &'a dyn Resolver,
) -> (Vec<Cow<'a, str>>, Option<String>) {
    let map = names.map(ev.epoch);
    let Some(addr) = judged(ev) else {
        return (kernel_tags(ev, names), None);
    };
    let kernel_prefix = || {
        let p = Prefix::host(addr);
        Some(Prefix::new(p.family(), p.bits(), ev.plen).to_string())
    };
    let Some(map) = map else {
        let prefix = matches!(
            ev.reason,
            reason::RULE | reason::GRANT | reason::REGION | reason::LOCAL
        )
        .then(kernel_prefix)
        .flatten();
        return (kernel_tags(ev, names), prefix);
    };
    let (mut label, mut range) = map.lookup(addr);
    // An IPv6 address carrying an IPv4 one is judged by both; the kernel's
    // tags say which decided.
    if matches!(ev.reason, reason::REGION | reason::LOCAL)
        && let IpAddr::V6(v6) = addr
        && let Some(v4) = crate::regions::embedded::v4_of(&v6, names.nat64())
    {
        let (inner_label, inner_range) = map.lookup(IpAddr::V4(v4));
        let kernel = kernel_tags(ev, names);
        let inner_tags = &map.tagsets[inner_label as usize];
        if inner_label != label
            && !kernel.is_empty()
            && kernel.iter().all(|t| inner_tags.iter().any(|i| i == t))
        {
            (label, range) = (inner_label, inner_range);
        }
    }
    let tags = map.tagsets[label as usize]
        .iter()
        .map(|t| Cow::Borrowed(t.as_str()))
        .collect();
    let prefix = match ev.reason {
        reason::RULE | reason::GRANT => kernel_prefix(),
        reason::REGION | reason::LOCAL => Some(range.to_string()),
        _ => None,
    };
    (tags, prefix)
}

/// The region tags the kernel put in the event.
fn kernel_tags<'a>(ev: &FlowEvent, names: &'a dyn Resolver) -> Vec<Cow<'a, str>> {
    let count = usize::from(ev.tags.count).min(ev.tags.regions.len());
    ev.tags.regions[..count]
        .iter()
        .map(|id| match names.region(*id) {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(format!("region#{id}")),
        })
        .collect()
}

fn comm(ev: &FlowEvent) -> Cow<'_, str> {
    let end = ev
        .comm
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(ev.comm.len());
    String::from_utf8_lossy(&ev.comm[..end])
}

impl<'a> FlowRecord<'a> {
    /// Builds the record of `ev` (its `seq` and `prev` are set when it is
    /// appended). `unix_ns` is its wall time; `process` and `user` what the
    /// agent learned about the process.
    pub fn from_event(
        ev: &'a FlowEvent,
        unix_ns: i128,
        names: &'a dyn Resolver,
        process: Option<&'a ProcessInfo>,
        user: Option<&'a str>,
    ) -> Self {
        let (tags, prefix) = tags_and_prefix(ev, names);
        let dst = destination(ev);
        let inner = match dst {
            Some(IpAddr::V6(v6)) => crate::regions::embedded::v4_of(&v6, names.nat64()),
            _ => None,
        };
        let inbound = ev.flags & event_flags::INBOUND != 0;
        let (resolved_names, resolved) = match judged(ev) {
            Some(addr) if ev.scope != 0 && !inbound => match names.resolved(ev.scope, addr) {
                Some((n, at)) if !n.is_empty() => {
                    // The answer's wall time: the event's, less the boot
                    // time between them.
                    let at_unix = unix_ns - i128::from(ev.time_ns) + i128::from(at);
                    (Some(n), Some(crate::vocab::clock::rfc3339(at_unix)))
                }
                _ => (None, None),
            },
            _ => (None, None),
        };
        FlowRecord {
            v: SCHEMA_VERSION,
            time: crate::vocab::clock::rfc3339(unix_ns),
            seq: 0,
            verdict: verdict_name(ev.verdict),
            reason: reason_name(ev.reason),
            policy: match names.policy(ev.policy) {
                Some(name) => Cow::Borrowed(name),
                None => Cow::Owned(format!("policy#{}", ev.policy)),
            },
            tags,
            prefix,
            grant_id: (ev.reason == reason::GRANT && ev.grant_id != 0).then_some(ev.grant_id),
            dst,
            dport: (!is_creation(ev)).then_some(ev.port),
            inner,
            names: resolved_names,
            resolved,
            direction: inbound.then_some("inbound"),
            proto: proto_name(ev),
            family: family_name(ev.family),
            hook: hook_name(ev.hook),
            program: program_version(ev.program_version),
            pid: ev.tgid,
            tid: ev.pid,
            comm: comm(ev),
            exe: process.and_then(|p| p.exe.as_deref()),
            cmdline: process.and_then(|p| p.cmdline.as_deref()),
            uid: ev.uid,
            user,
            gid: ev.gid,
            cgroup: match names.cgroup(ev.cgroup_id) {
                Some(path) => Cow::Borrowed(path),
                None => Cow::Owned(format!("cgroup#{}", ev.cgroup_id)),
            },
            cgroup_id: ev.cgroup_id,
            job: names.job(ev.cgroup_id),
            policy_from: (ev.flags & event_flags::SOCKET_POLICY != 0).then_some("socket"),
            host: names.host(),
            epoch: ev.epoch,
            map: names.map_sources(ev.epoch),
            prev: GENESIS,
        }
    }
}

/// `major.minor.patch` of the programs that wrote an event (this build's
/// own, nearly always, is formatted once).
fn program_version(packed: u64) -> Cow<'static, str> {
    static OWN: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| unpack_version(geowall_common::PACKED_VERSION));
    if packed == geowall_common::PACKED_VERSION {
        Cow::Borrowed(OWN.as_str())
    } else {
        Cow::Owned(unpack_version(packed))
    }
}

/// A non-flow record: agent start and stop, config switches, lost events,
/// counts of allowed flows, jobs, log rotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub v: u32,
    pub time: String,
    pub seq: u64,
    /// `agent`, `config`, `lost`, `allowed`, `job`, `log`, `approval`.
    pub kind: String,
    #[serde(flatten)]
    pub detail: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_deserializing)]
    pub prev: Prev,
}

impl EventRecord {
    /// A record of `kind` with `detail` (an object; anything else is put
    /// under `detail`), stamped now.
    pub fn new(kind: &str, detail: serde_json::Value) -> Self {
        let detail = match detail {
            serde_json::Value::Object(m) => m,
            other => {
                let mut m = serde_json::Map::new();
                m.insert("detail".into(), other);
                m
            }
        };
        EventRecord {
            v: SCHEMA_VERSION,
            time: crate::vocab::clock::rfc3339(crate::vocab::clock::unix_now_ns()),
            seq: 0,
            kind: kind.into(),
            detail,
            prev: GENESIS,
        }
    }
}

impl Chained for EventRecord {
    fn chain(&mut self, seq: u64, prev: Prev) {
        self.seq = seq;
        self.prev = prev;
    }
    fn kind(&self) -> &str {
        &self.kind
    }
}

#[cfg(test)]
mod tests {
    use geowall_common::verdict;

    use super::*;
    use geowall_common::TagSet;

    fn sample<'a>(map: &'a [MapSource]) -> FlowRecord<'a> {
        FlowRecord {
            v: SCHEMA_VERSION,
            time: "2026-12-05T17:09:17.914123249Z".into(),
            seq: 656_294,
            verdict: "allow",
            reason: "local",
            policy: Cow::Borrowed("eu-only"),
            tags: vec![Cow::Borrowed("local")],
            prefix: Some("127.0.0.0/8".into()),
            grant_id: None,
            dst: Some("127.0.0.1".parse().unwrap()),
            dport: Some(9999),
            inner: None,
            names: Some(vec!["api.partner.test".into(), "edge\"cdn".into()]),
            resolved: Some("2026-12-05T17:09:17.000000001Z".into()),
            direction: None,
            proto: Cow::Borrowed("tcp"),
            family: Cow::Borrowed("ipv4"),
            hook: "connect4",
            program: Cow::Borrowed("0.1.0"),
            pid: 1609,
            tid: 1610,
            comm: Cow::Borrowed("loadgen"),
            exe: Some("/work/target/release/loadgen"),
            cmdline: Some("loadgen --mode tcp --target 127.0.0.1:9999"),
            uid: 0,
            user: Some("root"),
            gid: 0,
            cgroup: Cow::Borrowed("/gw/g"),
            cgroup_id: 14028,
            job: None,
            policy_from: None,
            host: "vm",
            epoch: 1,
            map: Some(map),
            prev: Prev::of(b"the line before"),
        }
    }

    #[test]
    fn strings_escape_as_serde_json_escapes_them_wherever_the_escape_falls() {
        let specials = ['"', '\\', '\n', '\u{0}', '\u{1f}', '\u{8}', 'é', '\u{7f}'];
        for len in [0, 1, 15, 16, 17, 31, 32, 33, 70] {
            for at in 0..len.max(1) {
                for c in specials {
                    let mut s: String =
                        "abcdefghijklmnopqrstuvwxyz0123456789".repeat(2)[..len].into();
                    if len > 0 {
                        s.replace_range(at..at + 1, &c.to_string());
                    }
                    let mut out = Vec::new();
                    escape_into(&mut out, &s);
                    assert_eq!(
                        String::from_utf8(out).unwrap(),
                        serde_json::to_string(&s).unwrap(),
                        "{s:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_flow_record_written_by_hand_is_what_serde_json_writes() {
        let map = [
            MapSource {
                source: "builtin:geo.mmdb".into(),
                sha256: "c5f7".repeat(16),
                about: "a long description that flow records leave out".into(),
            },
            MapSource {
                source: "cidr:/etc/geowall/extra \"quoted\".cidr".into(),
                sha256: "00".repeat(32),
                about: String::new(),
            },
        ];
        let plain = sample(&map);
        let mut odd = sample(&map);
        odd.verdict = "deny";
        odd.reason = "grant";
        odd.grant_id = Some(7);
        odd.tags = vec![Cow::Borrowed("US"), Cow::Owned("aws:us-east-1".into())];
        odd.dst = Some("2001:db8::1".parse().unwrap());
        odd.comm = Cow::Owned("we\u{1}ird\ttab".into());
        odd.cmdline = Some("sh -c 'echo \"a\\b\" \n \r \u{8} \u{c} \u{1f} \u{7f} é ✓'");
        odd.policy_from = Some("socket");
        odd.job = Some("eu-only-42");
        let mut bare = sample(&map);
        bare.prefix = None;
        bare.dst = None;
        bare.dport = None;
        bare.exe = None;
        bare.cmdline = None;
        bare.user = None;
        bare.map = None;
        bare.tags = Vec::new();
        for rec in [plain, odd, bare] {
            let mut by_hand = Vec::new();
            rec.write_json(&mut by_hand).unwrap();
            let by_serde = serde_json::to_vec(&rec).unwrap();
            assert_eq!(
                String::from_utf8(by_hand).unwrap(),
                String::from_utf8(by_serde).unwrap()
            );
        }
    }

    struct Names;
    impl Resolver for Names {
        fn policy(&self, slot: u16) -> Option<&str> {
            (slot == 3).then_some("eu-only")
        }
        fn region(&self, id: u16) -> Option<&str> {
            (id == 7).then_some("US")
        }
        fn cgroup(&self, _: u64) -> Option<&str> {
            Some("/jobs/a")
        }
        fn job(&self, _: u64) -> Option<&str> {
            Some("a")
        }
        fn map(&self, _: u64) -> Option<&crate::regions::CompiledMap> {
            None
        }
        fn map_sources(&self, _: u64) -> Option<&[MapSource]> {
            None
        }
        fn host(&self) -> &str {
            "h"
        }
    }

    #[test]
    fn a_denied_connect_reads_as_a_user_expects() {
        let mut ev = FlowEvent::default();
        ev.addr[..4].copy_from_slice(&[127, 20, 0, 1]);
        ev.port = 443;
        ev.family = family::INET;
        ev.proto = 6;
        ev.verdict = verdict::DENY;
        ev.reason = reason::REGION;
        ev.plen = 16;
        ev.hook = hook::CONNECT4;
        ev.policy = 3;
        ev.tgid = 42;
        ev.pid = 43;
        ev.tags = TagSet {
            count: 1,
            flags: 0,
            regions: [7, 0, 0, 0, 0, 0],
        };
        ev.comm[..4].copy_from_slice(b"curl");
        let process = ProcessInfo {
            exe: Some("/usr/bin/curl".into()),
            cmdline: Some("curl https://x".into()),
        };
        let mut r = FlowRecord::from_event(&ev, 0, &Names, Some(&process), Some("alice"));
        r.chain(5, Prev::of(b"x"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["verdict"], "deny");
        assert_eq!(json["reason"], "region");
        assert_eq!(json["policy"], "eu-only");
        assert_eq!(json["tags"], serde_json::json!(["US"]));
        assert_eq!(json["prefix"], "127.20.0.0/16");
        assert_eq!(json["dst"], "127.20.0.1");
        assert_eq!(json["dport"], 443);
        assert_eq!(json["proto"], "tcp");
        assert_eq!(json["family"], "ipv4");
        assert_eq!(json["pid"], 42);
        assert_eq!(json["comm"], "curl");
        assert_eq!(json["job"], "a");
        assert_eq!(json["seq"], 5);
        assert_eq!(json["v"], 2);
        assert_eq!(json["exe"], "/usr/bin/curl");
        assert_eq!(json["cmdline"], "curl https://x");
        assert_eq!(json["user"], "alice");
        assert_eq!(json["prev"], crate::vocab::hex::sha256_hex(b"x"));
        // The chain hash comes last, as the line's own seal.
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.ends_with(&format!(
            "\"prev\":\"{}\"}}",
            crate::vocab::hex::sha256_hex(b"x")
        )));
    }

    #[test]
    fn a_mapped_address_shows_as_mapped_and_matches_a_v4_prefix() {
        let mut ev = FlowEvent::default();
        ev.addr[..4].copy_from_slice(&[127, 20, 0, 1]);
        ev.family = family::INET6;
        ev.flags = event_flags::V4_MAPPED;
        ev.hook = hook::CONNECT6;
        ev.reason = reason::REGION;
        ev.plen = 16;
        let r = FlowRecord::from_event(&ev, 0, &Names, None, None);
        assert_eq!(r.dst, Some("::ffff:127.20.0.1".parse().unwrap()));
        assert_eq!(r.prefix.as_deref(), Some("127.20.0.0/16"));
        assert_eq!(r.family, "ipv6");
    }

    #[test]
    fn a_granted_flow_names_its_grant_and_granted_prefix() {
        let mut ev = FlowEvent::default();
        ev.addr[..4].copy_from_slice(&[127, 20, 0, 1]);
        ev.port = 443;
        ev.family = family::INET;
        ev.hook = hook::CONNECT4;
        ev.verdict = verdict::ALLOW;
        ev.reason = reason::GRANT;
        ev.plen = 24;
        ev.grant_id = 7;
        let json =
            serde_json::to_value(FlowRecord::from_event(&ev, 0, &Names, None, None)).unwrap();
        assert_eq!(json["reason"], "grant");
        assert_eq!(json["grant_id"], 7);
        assert_eq!(json["prefix"], "127.20.0.0/24");
        ev.reason = reason::REGION;
        let json =
            serde_json::to_value(FlowRecord::from_event(&ev, 0, &Names, None, None)).unwrap();
        assert!(json.get("grant_id").is_none());
    }
}
