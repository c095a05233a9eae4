//! The DNS forwarder: every governed job's queries come here (the kernel
//! programs redirect them), go on to the resolver the job asked, and come
//! back — after the answer's addresses are learned for the job in the
//! kernel's maps, so a connection made as soon as the answer arrives is
//! judged with them.
//!
//! A query is attributed by its socket: the forwarder asks the kernel which
//! socket sent it (sock_diag, by address and port), and reads the entry the
//! programs wrote for that socket's cookie and forwarder port: the
//! resolver, the job's scope and policy, the sender. A query with no entry
//! was not redirected by geowall and is dropped.
//!
//! Queries and answers pass byte for byte; the forwarder writes only
//! NXDOMAIN (a denied name), REFUSED (the job's name rate) and SERVFAIL
//! (no answer from the resolver) itself. Nothing is cached.

mod forward;
mod rate;
mod upstream;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use geowall_common::{DNS_SLOTS, DnsSock};
use serde_json::json;

pub(super) use forward::Forwarder;

use super::{grants::GrantBook, names::NameTable};
use crate::{
    audit::AuditLog,
    config::{DnsConfig, LogDns},
    control::proto::DnsStatus,
    dns::{
        learned::{LearnedTable, Lifetimes},
        wire::{self, Answer, rcode},
    },
    host::sockdiag::{Proto, SockDiag},
    kernel::DnsMaps,
    policy::NamesPolicy,
    tables::names::name_allow,
};

/// The policy of one slot, as the forwarder applies it.
#[derive(Debug, Clone)]
pub(super) struct SlotPolicy {
    pub name: String,
    pub names: NamesPolicy,
}

/// What the forwarder applies, switched with the tables.
#[derive(Debug, Clone)]
pub(super) struct View {
    /// The table generation whose policies these are: names a policy's
    /// `allow_names` matches are written for this generation.
    pub generation: u8,
    pub slots: HashMap<u32, Arc<SlotPolicy>>,
    pub lifetimes: Lifetimes,
    pub timeout: Duration,
}

/// Counters of the forwarder, for the metrics and `status`.
#[derive(Debug, Default)]
pub(super) struct DnsStats {
    /// Queries answered, by verdict: forwarded, denied (NXDOMAIN), refused
    /// (rate), failed (SERVFAIL).
    pub forwarded: AtomicU64,
    pub denied: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
    /// Queries no redirect entry vouched for (dropped).
    pub unattributed: AtomicU64,
    /// Upstream timeouts and errors.
    pub upstream_failures: AtomicU64,
    /// Answers that did not parse (passed on, nothing learned).
    pub malformed: AtomicU64,
    /// Forwarding time histogram: counts per bucket of [`LATENCY_BUCKETS`]
    /// (cumulative at export), and the sum in µs.
    pub latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    pub latency_sum_us: AtomicU64,
}

/// Upper bounds (seconds) of the forwarding time histogram's buckets.
pub(super) const LATENCY_BUCKETS: [f64; 10] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.1, 1.0,
];

impl DnsStats {
    fn observe(&self, took: Duration) {
        let s = took.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Who sent a query and where it was going: the programs' entry for the
/// socket.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin {
    pub entry: DnsSock,
    pub proto: Proto,
}

impl Origin {
    /// The resolver the job asked.
    pub(super) fn resolver(&self) -> SocketAddr {
        let a = self.entry.addr;
        let ip = if self.entry.v4 != 0 {
            IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(a))
        };
        SocketAddr::new(ip, self.entry.port)
    }
}

/// Who sent a query, as far as the forwarder can tell.
pub(super) enum Attribution {
    Known(Origin),
    /// A socket whose port other jobs' sockets share: the sender cannot be
    /// told apart (refused, recorded under the socket the kernel named).
    Shared(Origin),
    /// No entry: not a query geowall redirected (dropped).
    Unknown,
}

/// What to do with a query.
pub(super) enum Check {
    Forward,
    /// Answer this instead, recorded with `why`.
    Answer {
        reply: Vec<u8>,
        verdict: &'static str,
        why: &'static str,
    },
    /// Drop it (no question to answer).
    Drop,
}

/// The forwarder's state, shared by its tasks and the agent.
pub(super) struct Dns {
    maps: DnsMaps,
    learned: Arc<Mutex<LearnedTable>>,
    view: RwLock<Arc<View>>,
    log: Arc<Mutex<AuditLog>>,
    names: Arc<RwLock<NameTable>>,
    pub(super) stats: DnsStats,
    diag: Mutex<Vec<SockDiag>>,
    rate: Mutex<rate::Rates>,
    /// Where it listens: the IPv4 address and the first port.
    pub(super) listen: (Ipv4Addr, u16),
    /// Jobs that ended, and when.
    ended: Mutex<VecDeque<(Instant, u64)>>,
    /// The grants in force: name grants open what their jobs resolve.
    grants: Arc<GrantBook>,
    /// Sockets toward the resolvers.
    upstreams: upstream::Upstreams,
}

/// How long what an ended job resolved is kept.
const FORGET_AFTER: Duration = Duration::from_secs(60);

impl Dns {
    /// The forwarder's state over the kernel's maps, with what they held
    /// (an agent restart: names survive it).
    pub(super) fn new(
        maps: DnsMaps,
        config: &DnsConfig,
        log: Arc<Mutex<AuditLog>>,
        names: Arc<RwLock<NameTable>>,
        listen: (Ipv4Addr, u16),
        grants: Arc<GrantBook>,
    ) -> Arc<Dns> {
        let capacity = config.max_learned as usize;
        let table = match (maps.names(), maps.learned()) {
            (Ok(n), Ok(e)) => {
                let kernel_ids: Vec<u32> = n.iter().map(|(id, _)| *id).collect();
                let table = LearnedTable::restore(capacity, n, e);
                if let Err(e) = maps.remove_names(&table.unreferenced(kernel_ids)) {
                    tracing::warn!(error = %crate::vocab::error::Chain(&e), "cannot remove unused names");
                }
                if !table.is_empty() {
                    tracing::info!(
                        entries = table.len(),
                        names = table.name_count(),
                        "names the jobs resolved, kept from before"
                    );
                }
                table
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %crate::vocab::error::Chain(&e), "cannot read what jobs resolved before: starting afresh");
                LearnedTable::new(capacity)
            }
        };
        Arc::new(Dns {
            maps,
            learned: Arc::new(Mutex::new(table)),
            view: RwLock::new(Arc::new(View {
                generation: 0,
                slots: HashMap::new(),
                lifetimes: lifetimes(config),
                timeout: config.timeout.0,
            })),
            log,
            names,
            stats: DnsStats::default(),
            diag: Mutex::new(Vec::new()),
            rate: Mutex::new(rate::Rates::default()),
            listen,
            ended: Mutex::new(VecDeque::new()),
            grants,
            upstreams: upstream::Upstreams::default(),
        })
    }

    /// The forwarder of a previous run's pins, to serve again at once,
    /// before this run's programs load (seconds): the maps and grant tries
    /// as pinned, the policies' names as `config` says them under the
    /// slots the tables in force give them. `None` when there are no pins
    /// of this build's ABI, or they do not redirect DNS.
    pub(super) fn from_pins(
        config: &crate::config::Config,
        log: Arc<Mutex<AuditLog>>,
        names: Arc<RwLock<NameTable>>,
    ) -> Option<(Arc<Dns>, Arc<GrantBook>)> {
        if !config.file.dns.enabled {
            return None;
        }
        let pins = crate::kernel::Pins::new(config.bpffs_path());
        let pinned = match crate::kernel::PinnedDns::open(&pins) {
            Ok(p) if p.redirecting => p,
            Ok(_) => return None,
            Err(e) => {
                tracing::debug!(error = %crate::vocab::error::Chain(&e), "no pinned DNS maps: the forwarder starts with the programs");
                return None;
            }
        };
        let listen = (
            config.file.dns.listen_addr().ok()?,
            config.file.dns.first_port().ok()?,
        );
        let grants = Arc::new(GrantBook::new(pinned.grants));
        // The live grants as the last run left them, so a name grant goes
        // on opening what its jobs resolve (the approvals take over, and
        // record what ran out meanwhile, once the agent is up).
        if let Ok(mut store) = crate::approvals::Store::load(&config.file.approvals.state_dir) {
            store.expire(crate::vocab::clock::unix_ms());
            if let Err(e) = grants.sync(store.grants_mut()) {
                tracing::warn!(error = %crate::vocab::error::Chain(&e), "cannot write the grants kept from before");
            }
        }
        let dns = Dns::new(
            pinned.maps,
            &config.file.dns,
            log,
            names,
            listen,
            Arc::clone(&grants),
        );
        let by_name = crate::plan::names_policies(config);
        let slots: HashMap<u32, Arc<SlotPolicy>> = pinned
            .policies
            .iter()
            .enumerate()
            .filter_map(|(slot, name)| {
                let name = name.as_ref()?;
                let names = by_name.get(name)?.clone();
                Some((
                    slot as u32,
                    Arc::new(SlotPolicy {
                        name: name.clone(),
                        names,
                    }),
                ))
            })
            .collect();
        let allow: BTreeMap<u32, &NamesPolicy> =
            slots.iter().map(|(s, p)| (*s, &p.names)).collect();
        dns.set_view(
            View {
                generation: pinned.generation,
                slots: slots.clone(),
                lifetimes: lifetimes(&config.file.dns),
                timeout: config.file.dns.timeout.0,
            },
            &allow,
        );
        Some((dns, grants))
    }

    /// What the event pipeline reads names from.
    pub(super) fn learned(&self) -> Arc<Mutex<LearnedTable>> {
        Arc::clone(&self.learned)
    }

    /// The forwarder in `status`.
    pub(super) fn status(&self) -> DnsStatus {
        let (learned, names, evicted) = {
            let t = self.learned.lock().expect("learned lock");
            (t.len(), t.name_count(), t.evicted)
        };
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DnsStatus {
            enabled: true,
            listen: Some(self.listen.0.to_string()),
            port: Some(self.listen.1),
            learned,
            names,
            evicted,
            forwarded: n(&self.stats.forwarded),
            denied: n(&self.stats.denied),
            refused: n(&self.stats.refused),
            failed: n(&self.stats.failed),
            unattributed: n(&self.stats.unattributed),
            upstream_failures: n(&self.stats.upstream_failures),
            malformed: n(&self.stats.malformed),
        }
    }

    /// Distinct names each job asked in the last minute: (scope, count).
    pub(super) fn names_per_minute(&self) -> Vec<(u64, usize)> {
        self.rate.lock().expect("rate lock").counts(Instant::now())
    }

    /// The (name, slot) pairs table generation `generation` must hold for
    /// policies `slots` (slot → names policy), from what is learned now.
    pub(super) fn name_allow_for(
        &self,
        slots: &BTreeMap<u32, &NamesPolicy>,
    ) -> BTreeSet<(u32, u16)> {
        let t = self.learned.lock().expect("learned lock");
        name_allow(t.all_names(), slots)
    }

    /// Switches to what the tables in force say (after a table switch),
    /// then adds the names learned since `name_allow_for` was asked.
    pub(super) fn set_view(&self, view: View, slots: &BTreeMap<u32, &NamesPolicy>) {
        let generation = view.generation;
        *self.view.write().expect("view lock") = Arc::new(view);
        let wanted = self.name_allow_for(slots);
        for (name, slot) in wanted {
            if let Err(e) = self.maps.allow_name(generation, name, slot) {
                tracing::error!(error = %crate::vocab::error::Chain(&e), "cannot write a name a policy allows");
                break;
            }
        }
    }

    fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.read().expect("view lock"))
    }

    /// Notes that job `scope` ended (its cgroup is gone): what it resolved
    /// is forgotten a minute later, once the records of its last
    /// connections, still on their way through the event pipeline, have
    /// named them.
    pub(super) fn job_ended(&self, scope: u64) {
        self.ended
            .lock()
            .expect("ended lock")
            .push_back((Instant::now(), scope));
    }

    /// Forgets what the jobs that ended a minute ago resolved.
    pub(super) fn collect(&self) {
        let now = Instant::now();
        let mut ended = self.ended.lock().expect("ended lock");
        while ended
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= FORGET_AFTER)
        {
            let Some((_, scope)) = ended.pop_front() else {
                break;
            };
            let mut t = self.learned.lock().expect("learned lock");
            let changes = t.forget_scope(scope);
            if let Err(e) = self.maps.apply(&changes) {
                tracing::warn!(error = %crate::vocab::error::Chain(&e), "cannot forget an ended job's names");
            }
            drop(t);
            self.rate.lock().expect("rate lock").forget(scope);
        }
    }

    /// The entry of the socket at `peer` that sent to our socket at
    /// `local`.
    fn attribute(&self, proto: Proto, local: SocketAddr, peer: SocketAddr) -> Attribution {
        let slot = u32::from(local.port().wrapping_sub(self.listen.1));
        if slot >= u32::from(DNS_SLOTS) {
            return Attribution::Unknown;
        }
        let mut diag = match self.diag.lock().expect("diag lock").pop() {
            Some(d) => d,
            None => match SockDiag::new() {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot open a sock_diag socket");
                    return Attribution::Unknown;
                }
            },
        };
        let attribution = self.attribute_with(&mut diag, proto, local, peer, slot);
        self.diag.lock().expect("diag lock").push(diag);
        attribution
    }

    fn attribute_with(
        &self,
        diag: &mut SockDiag,
        proto: Proto,
        local: SocketAddr,
        peer: SocketAddr,
        slot: u32,
    ) -> Attribution {
        let peer_sock = match diag.lookup(proto, local, peer) {
            Ok(Some(p)) => p,
            Ok(None) => return Attribution::Unknown,
            Err(e) => {
                tracing::warn!(error = %e, "sock_diag lookup failed");
                return Attribution::Unknown;
            }
        };
        let Some(entry) = self.maps.query(peer_sock.cookie, slot).ok().flatten() else {
            return Attribution::Unknown;
        };
        // A cookie is unique: this is a consistency check.
        let want = match proto {
            Proto::Udp => 17,
            Proto::Tcp => 6,
        };
        if entry.proto != want {
            return Attribution::Unknown;
        }
        let origin = Origin { entry, proto };
        if entry.shared == 0 {
            return Attribution::Known(origin);
        }
        // The socket may share its port: the kernel answered with one of
        // the sharers, which may not be the sender. Trusted only when every
        // socket on the port is the same job's under the same policy.
        let family = if peer.is_ipv4()
            || matches!(peer, SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some())
        {
            libc::AF_INET as u8
        } else {
            libc::AF_INET6 as u8
        };
        let sharers = match diag.udp_port_sharers(family, peer.port()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "sock_diag dump failed");
                return Attribution::Shared(origin);
            }
        };
        let same = sharers.iter().all(|c| {
            *c == peer_sock.cookie
                || self
                    .maps
                    .query(*c, slot)
                    .ok()
                    .flatten()
                    .is_some_and(|other| other.scope == entry.scope && other.policy == entry.policy)
        });
        if same {
            Attribution::Known(origin)
        } else {
            Attribution::Shared(origin)
        }
    }

    /// What the job's policy says about `query`: forward it, or answer
    /// (a denied name, the job's name rate).
    fn check(&self, origin: &Origin, query: &[u8]) -> Check {
        let Ok(q) = wire::question(query) else {
            return Check::Drop;
        };
        let view = self.view();
        let Some(policy) = view.slots.get(&u32::from(origin.entry.policy)) else {
            return Check::Forward;
        };
        if policy.names.denies(&q.name) {
            return match wire::error_reply(query, rcode::NXDOMAIN) {
                Some(reply) => Check::Answer {
                    reply,
                    verdict: "deny",
                    why: "deny_names",
                },
                None => Check::Drop,
            };
        }
        if let Some(limit) = policy.names.max_names_per_minute {
            let allowed = self.rate.lock().expect("rate lock").admit(
                origin.entry.scope,
                &q.name,
                limit,
                Instant::now(),
            );
            if !allowed {
                return match wire::error_reply(query, rcode::REFUSED) {
                    Some(reply) => Check::Answer {
                        reply,
                        verdict: "refused",
                        why: "max_names_per_minute",
                    },
                    None => Check::Drop,
                };
            }
        }
        Check::Forward
    }

    /// Learns `answer` (the bytes the resolver sent) for the job of
    /// `origin`, before it is passed on: the addresses on the CNAME chain
    /// go into the kernel's maps. Answers what to send the job (the answer
    /// as it came, or NXDOMAIN when the chain reaches a denied name) and
    /// what it said.
    fn learn(&self, origin: &Origin, query: &[u8], answer: Vec<u8>) -> (Vec<u8>, Learned) {
        let parsed = match wire::answer(&answer) {
            Ok(a) => a,
            Err(e) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                return (answer, Learned::Malformed(e.to_string()));
            }
        };
        let view = self.view();
        let policy = view.slots.get(&u32::from(origin.entry.policy)).cloned();
        if let Some(p) = &policy
            && let Some(denied) = parsed.chain.iter().find(|n| p.names.denies(n))
            && let Some(reply) = wire::error_reply(query, rcode::NXDOMAIN)
        {
            return (reply, Learned::Denied(denied.clone(), parsed));
        }
        if parsed.addresses.is_empty() {
            return (answer, Learned::Answer(parsed));
        }
        let addresses: Vec<(IpAddr, u32)> =
            parsed.addresses.iter().map(|a| (a.addr, a.ttl)).collect();
        let now = crate::vocab::clock::boot_ns();
        let mut table = self.learned.lock().expect("learned lock");
        let (changes, _) = table.learn(
            origin.entry.scope,
            &parsed.chain,
            &addresses,
            now,
            &view.lifetimes,
        );
        let written = self.maps.apply(&changes).and_then(|()| {
            // New names the policies in force allow.
            for (id, name) in &changes.new_names {
                for (slot, p) in &view.slots {
                    if p.names.allows(name) {
                        self.maps.allow_name(view.generation, *id, *slot as u16)?;
                    }
                }
            }
            Ok(())
        });
        drop(table);
        if let Err(e) = written {
            tracing::error!(error = %crate::vocab::error::Chain(&e), "cannot write what a job resolved into the kernel");
        }
        self.open_granted(origin, &parsed);
        (answer, Learned::Answer(parsed))
    }

    /// Opens the answer's addresses for the name grants that cover the job
    /// and match its chain (before the answer is passed on), and records
    /// what each opened.
    fn open_granted(&self, origin: &Origin, parsed: &Answer) {
        let addrs: Vec<IpAddr> = parsed.addresses.iter().map(|a| a.addr).collect();
        let e = &origin.entry;
        let opened = match self
            .grants
            .resolved(e.scope, u32::from(e.policy), &parsed.chain, &addrs)
        {
            Ok(o) => o,
            Err(err) => {
                tracing::error!(error = %crate::vocab::error::Chain(&err), "cannot open a name grant's addresses in the kernel");
                return;
            }
        };
        for o in opened {
            let mut detail = json!({
                "event": "opened",
                "id": o.id,
                "to": o.to,
                "addresses": o.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "names": parsed.chain,
                "cgroup_id": e.scope,
            });
            if o.full {
                detail["full"] = json!(format!(
                    "the grant opens at most {} addresses: the job's further ones stay denied",
                    crate::approvals::MAX_NAME_GRANT_ADDRESSES
                ));
            }
            let mut log = self.log.lock().expect("log lock");
            if let Err(err) = log.event("approval", detail)
                && !crate::audit::log::is_lost(&err)
            {
                tracing::error!(error = %err, "cannot write the audit log");
            }
        }
    }

    /// Writes the `dns` record of a query, as the job's policy's `log_dns`
    /// asks.
    fn record(&self, origin: &Origin, query: &[u8], outcome: &Outcome) {
        let view = self.view();
        let policy = view.slots.get(&u32::from(origin.entry.policy));
        let log_dns = policy.map_or(LogDns::Denied, |p| p.names.log_dns);
        let logged = match log_dns {
            LogDns::All => true,
            LogDns::Denied => outcome.verdict != "allow",
            LogDns::None => false,
        };
        if !logged {
            return;
        }
        let q = wire::question(query).ok();
        let e = &origin.entry;
        let (job, cgroup) = {
            let names = self.names.read().expect("names lock");
            (
                names
                    .jobs
                    .get(&e.scope)
                    .or_else(|| names.jobs.get(&e.cgroup_id))
                    .cloned(),
                names.cgroups.get(&e.cgroup_id).cloned(),
            )
        };
        let comm_end = e.comm.iter().position(|b| *b == 0).unwrap_or(e.comm.len());
        let mut detail = json!({
            "verdict": outcome.verdict,
            "policy": policy.map_or_else(|| format!("policy#{}", e.policy), |p| p.name.clone()),
            "question": q.as_ref().map(|q| q.name.clone()),
            "qtype": q.as_ref().map(|q| q.qtype_name.clone()),
            "rcode": outcome.rcode.map(rcode::name),
            "resolver": origin.resolver().to_string(),
            "proto": match origin.proto { Proto::Udp => "udp", Proto::Tcp => "tcp" },
            "pid": e.tgid,
            "tid": e.pid,
            "comm": String::from_utf8_lossy(&e.comm[..comm_end]),
            "uid": e.uid,
            "gid": e.gid,
            "cgroup": cgroup.unwrap_or_else(|| format!("cgroup#{}", e.cgroup_id)),
            "cgroup_id": e.cgroup_id,
            "ms": (outcome.took.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        });
        if let Some(job) = job {
            detail["job"] = json!(job);
        }
        if let Some(why) = outcome.why {
            detail["reason"] = json!(why);
        }
        if let Some(a) = &outcome.answer {
            detail["answers"] = json!(
                a.addresses
                    .iter()
                    .map(|x| x.addr.to_string())
                    .collect::<Vec<_>>()
            );
            detail["names"] = json!(a.chain);
            if a.truncated {
                detail["truncated"] = json!(true);
            }
        }
        if let Some(err) = &outcome.error {
            detail["error"] = json!(err);
        }
        let mut log = self.log.lock().expect("log lock");
        if let Err(e) = log.event("dns", detail)
            && !crate::audit::log::is_lost(&e)
        {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    /// Counts and records a query's outcome.
    fn finish(&self, origin: &Origin, query: &[u8], outcome: &Outcome) {
        let counter = match outcome.verdict {
            "allow" => &self.stats.forwarded,
            "deny" => &self.stats.denied,
            "refused" => &self.stats.refused,
            _ => &self.stats.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if outcome.verdict == "allow" {
            self.stats.observe(outcome.took);
        }
        self.record(origin, query, outcome);
    }
}

/// What learning an answer found.
enum Learned {
    Answer(Answer),
    /// The chain reached a name `deny_names` matches: answered NXDOMAIN.
    Denied(String, Answer),
    /// It did not parse: passed on, nothing learned.
    Malformed(String),
}

/// A query's outcome, for its record.
struct Outcome {
    verdict: &'static str,
    why: Option<&'static str>,
    rcode: Option<u8>,
    answer: Option<Answer>,
    error: Option<String>,
    took: Duration,
}

/// The TTL bounds and grace of `[dns]`.
pub(super) fn lifetimes(config: &DnsConfig) -> Lifetimes {
    Lifetimes {
        min_ttl: config.min_ttl.0.as_secs().min(u64::from(u32::MAX)) as u32,
        max_ttl: config.max_ttl.0.as_secs().min(u64::from(u32::MAX)) as u32,
        grace_ns: config.grace.0.as_nanos().min(u128::from(u64::MAX)) as u64,
    }
}
