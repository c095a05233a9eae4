//! The verdict path shared by every socket-address hook: policy, CIDR
//! rules, region lookup, allow-set, then — only when that denies — the
//! just-in-time grants, then audit mode. Allow and deny come out as with
//! grants first (a grant only ever allows), but an allowed flow pays no grant
//! lookup, and a record says `grant` only when a grant made the difference.
//!
//! Two policies may have a say: the calling task's (the nearest bound
//! cgroup of the task) and the socket's (that of the cgroup its creator ran
//! in, which the kernel records in the socket: see [`sockcg`]). They differ
//! when a socket is passed from one cgroup to another or its owner moves:
//! then both are judged and the stricter verdict stands, so a socket cannot
//! carry a job out of its policy and a confined job cannot borrow an
//! unconfined socket.

use aya_ebpf::{
    btf_maps::lpm_trie::Key,
    helpers::generated::{bpf_get_current_cgroup_id, bpf_get_socket_cookie, bpf_ktime_get_boot_ns},
    programs::SockAddrContext,
};
use geowall_common::{
    CACHE_RECORD, DNS_PORT, Decision, GRANT_SCOPE_POLICY, GrantKey4, GrantKey6, GrantSet,
    LEARNED_NAMES, Learned, LearnedKey, MAX_POLICIES, MAX_TAGS, MAX_TAGSETS, NameAllowKey,
    PolicyEntry, RegionGrantKey, RegionValue, RuleKey4, RuleKey6, RuleSet, TAGSET_UNTAGGED,
    UNGOVERNED_SLOT, config, counter, event_flags, policy_flags, reason, verdict,
};

use crate::{
    cache::{self, CacheKey},
    dest::Dest,
    embedded,
    events::{self, Governed},
    maps::{
        GW_GRANTS4, GW_GRANTS6, GW_LEARNED, GW_NAMEOK, GW_POLICIES, GW_REGION4, GW_REGION6,
        GW_RGRANTS, GW_RULES4, GW_RULES6, GW_TAGSETS, MAX_ROOT_LEVEL, config_slot,
    },
    policy,
    sockcg::{self, SockCgroup},
};

pub use crate::sockcg::NO_SLOT;

/// Let the operation proceed.
pub const PROCEED: i32 = 1;
/// Refuse the operation: the caller sees `EPERM`.
pub const REFUSE: i32 = 0;

/// The decision under one policy, with what `finish` needs.
/// `#[repr(C)]` with no padding (see [`Decision`]).
#[repr(C)]
struct Judged {
    /// Flags of the policy entry ([`policy_flags::PRESENT`] alone when the
    /// slot has no entry: the verdict failed closed).
    flags: u32,
    /// Id of the grant that allowed the flow (0: none).
    grant: u32,
    decision: Decision,
    /// The slot had no entry in the active tables.
    no_table: bool,
    /// The decision rests on what the job resolved, which expires: never
    /// cached.
    volatile: bool,
}

impl Judged {
    /// 0 allow, 1 would deny (audit), 2 deny.
    #[inline(always)]
    fn severity(&self) -> u8 {
        if self.decision.allowed {
            0
        } else if self.flags & policy_flags::AUDIT != 0 {
            1
        } else {
            2
        }
    }
}

/// The epoch in force, the calling task's cgroup, and its policy slot with
/// the cgroup whose binding decided, or `None` when no tables are loaded
/// yet.
#[inline(always)]
fn current() -> Option<(u64, u64, Option<policy::Bound>)> {
    let epoch = config_slot(config::EPOCH);
    if epoch == 0 {
        // No tables loaded yet: nothing is governed.
        return None;
    }
    // SAFETY: a helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    Some((epoch, cgroup_id, policy::current_slot(cgroup_id)))
}

/// The cgroups whose grants cover the caller: its own, and the one whose
/// binding decided its policy (a job's process in a sub-cgroup of the job
/// is covered by the job's grants). Equal when the caller's own cgroup is
/// bound, or when the caller is not governed (a socket's policy decides).
#[derive(Clone, Copy)]
struct Scopes {
    leaf: u64,
    bound: u64,
}

/// How the verdict cache knows a socket: datagrams on one socket by its
/// cookie (no read of its cgroup per datagram), connects (a new socket
/// each) by its cgroup.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SockKey {
    Cookie,
    Cgroup,
}

/// Judges an outbound connection or datagram from the current task on the
/// socket of `ctx`. This CPU's verdict cache answers repeats of an allow
/// that needs no grant.
#[inline(always)]
pub fn judge(ctx: &SockAddrContext, dest: &Dest, hook: u8, by: SockKey) -> i32 {
    let epoch = config_slot(config::EPOCH);
    if epoch == 0 {
        // No tables loaded yet: nothing is governed.
        return PROCEED;
    }
    let sock: *mut core::ffi::c_void = ctx.sock_addr.cast();
    // Read before the binding lookup: a binding that changes in between
    // leaves an entry under the old generation, never the other way round.
    let bindings_gen = config_slot(config::BINDINGS_GEN);
    // SAFETY: a helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let mut sock_cg = SockCgroup::UNKNOWN;
    let sock_key = if by == SockKey::Cookie {
        // SAFETY: the hook's own context, valid for the helper.
        (unsafe { bpf_get_socket_cookie(sock) }) | cache::COOKIE_BIT
    } else {
        sock_cg = sockcg::of(ctx);
        sock_cg.id
    };
    let key = CacheKey::new(dest, epoch, bindings_gen, cgroup_id, sock_key);
    // The agent raises the bindings generation whenever the audit switch
    // ([`config::AUDIT_DENY`]) changes: a cached allow predates no switch,
    // so a hit costs nothing more.
    if answered_from_cache(sock, dest, hook, &key) {
        return PROCEED;
    }
    // Keyed by cookie: the socket's cgroup is read only now.
    if by == SockKey::Cookie {
        sock_cg = sockcg::of(ctx);
    }
    let task = policy::current_slot(cgroup_id);
    let mut q = Eval {
        gen_: (epoch & 1) as u32,
        slot: 0,
        scopes: Scopes {
            leaf: cgroup_id,
            bound: task.map_or(cgroup_id, |b| b.cgroup),
        },
    };
    // The caller's policy, else the socket's; when both exist and differ,
    // the socket's too, and the stricter verdict stands. Slots are plain
    // numbers with `NO_SLOT` for none here: an `Option`'s payload may be
    // left undefined, and the verifier refuses a read of an undefined
    // register.
    let task_slot = task.map_or(NO_SLOT, |b| b.slot);
    let owner = socket_slot(sock_cg, cgroup_id, task_slot);
    let (first, first_flags) = if task_slot != NO_SLOT {
        (task_slot, 0)
    } else {
        (owner, event_flags::SOCKET_POLICY)
    };
    if first == NO_SLOT {
        cache::store(&key, dest, UNGOVERNED_SLOT, &no_table().decision, 0);
        return PROCEED;
    }
    if config_slot(config::AUDIT_DENY) != 0 {
        let actor = Governed {
            epoch,
            cgroup_id,
            scope: q.scopes.bound,
            slot: first,
            flags: first_flags,
        };
        return refuse_unaudited(sock, dest, hook, &actor);
    }
    let (mut slot, mut flags) = (first, first_flags);
    let (mut judged, mut severity) = q.evaluate(first, dest);
    if task_slot != NO_SLOT && owner != NO_SLOT && task_slot != owner {
        let (by_socket, socket_severity) = q.evaluate(owner, dest);
        if socket_severity > severity {
            (slot, flags, judged, severity) = (
                owner,
                event_flags::SOCKET_POLICY,
                by_socket,
                socket_severity,
            );
        }
    }
    // An allow is cached, with its record when the policy logs allows; a
    // grant is not (it expires), nor a missing table, nor what rests on a
    // resolution (it expires too).
    if severity == 0 && judged.grant == 0 && !judged.no_table && !judged.volatile {
        let record = if judged.flags & policy_flags::LOG_ALLOWED != 0 {
            flags | CACHE_RECORD
        } else {
            0
        };
        cache::store(&key, dest, slot as u16, &judged.decision, record);
    }
    let actor = Governed {
        epoch,
        cgroup_id,
        scope: q.scopes.bound,
        slot,
        flags,
    };
    finish(sock, dest, hook, &actor, &judged)
}

/// The calling task's policy: the actor (epoch, cgroups, slot) and the
/// policy's flags, when a policy of the active tables governs it.
#[inline(always)]
pub fn task_policy() -> Option<(Governed, u32)> {
    let (epoch, cgroup_id, bound) = current()?;
    let bound = bound?;
    let actor = Governed {
        epoch,
        cgroup_id,
        scope: bound.cgroup,
        slot: bound.slot,
        flags: 0,
    };
    let policy = policy_entry(actor.generation(), bound.slot)?;
    Some((actor, policy.flags))
}

/// Whether this CPU's cache holds an allow for `key`: then it is counted,
/// and recorded if the policy logs allows. Inline: a call of its own cost
/// 3 ns a datagram; the record is built in `emit`'s frame.
#[inline(always)]
fn answered_from_cache(
    sock: *mut core::ffi::c_void,
    dest: &Dest,
    hook: u8,
    key: &CacheKey,
) -> bool {
    let Some(hit) = cache::lookup(key, dest) else {
        return false;
    };
    if hit.slot == UNGOVERNED_SLOT {
        return true;
    }
    let slot = u32::from(hit.slot);
    events::count(slot, counter::ALLOWED);
    if hit.record == 0 {
        return true;
    }
    // The record names what the job resolved: its scope is looked up only
    // for a hit that writes one.
    let scope = policy::current_slot(key.cgroup_id).map_or(key.cgroup_id, |b| b.cgroup);
    let actor = Governed {
        epoch: key.epoch,
        cgroup_id: key.cgroup_id,
        scope,
        slot,
        flags: hit.record & !CACHE_RECORD,
    };
    let outcome = events::Outcome::new(verdict::ALLOW, &hit.decision, 0);
    events::emit(sock, dest, hook, &actor, &outcome);
    true
}

/// The policy slot of the socket's cgroup ([`NO_SLOT`]: none or unknown):
/// the task's own when the task created the socket in the cgroup it runs
/// in (the usual case, and no lookup).
#[inline(always)]
fn socket_slot(cg: SockCgroup, cgroup_id: u64, task_slot: u32) -> u32 {
    if !cg.known() {
        return NO_SLOT;
    }
    if cg.id == cgroup_id {
        return task_slot;
    }
    let root_level = config_slot(config::ROOT_LEVEL).min(MAX_ROOT_LEVEL);
    sockcg::slot(cg, root_level)
}

/// What [`evaluate`] needs besides the destination (BPF functions take at
/// most five arguments).
struct Eval {
    gen_: u32,
    slot: u32,
    scopes: Scopes,
}

impl Eval {
    /// The decision of policy `slot` and its severity.
    #[inline(always)]
    fn evaluate(&mut self, slot: u32, dest: &Dest) -> (Judged, u8) {
        self.slot = slot;
        let mut out = no_table();
        let severity = evaluate(self, dest, &mut out);
        (out, severity)
    }
}

/// Judges the creation of a socket that would bypass the address hooks
/// (raw, packet, XDP, ping, protocols geowall does not judge): refused
/// unless the policy has `allow_flag`. `kind` is the socket's type (high
/// byte) and protocol (low byte), as the record names them.
#[inline(always)]
pub fn judge_socket(
    sock: *mut core::ffi::c_void,
    family: u8,
    kind: u16,
    hook: u8,
    allow_flag: u32,
) -> i32 {
    let Some((epoch, cgroup_id, Some(policy::Bound { slot, cgroup }))) = current() else {
        return PROCEED;
    };
    let dest = Dest {
        addr: [0; 16],
        port: 0,
        proto: kind as u8,
        family,
        v4: false,
        flags: 0,
        sock_type: (kind >> 8) as u8,
    };
    let actor = Governed {
        epoch,
        cgroup_id,
        scope: cgroup,
        slot,
        flags: 0,
    };
    let judged = match policy_entry(actor.generation(), slot) {
        Some(policy) => Judged {
            flags: policy.flags,
            decision: Decision::new(
                policy.flags & allow_flag != 0,
                reason::SOCKET_TYPE,
                0,
                TAGSET_UNTAGGED,
            ),
            no_table: false,
            grant: 0,
            volatile: false,
        },
        None => no_table(),
    };
    finish(sock, &dest, hook, &actor, &judged)
}

/// Refuses a flow the tables allowed for a reason of its own (the reason
/// in the top byte of `flags_why`, the task's policy flags below it: BPF
/// functions take at most five arguments): a DNS query the forwarder could
/// not attribute. Recorded under the task's policy; audit mode records
/// "would deny" and lets it through.
#[inline(always)]
pub fn refuse(
    sock: *mut core::ffi::c_void,
    dest: &Dest,
    hook: u8,
    actor: &Governed,
    flags_why: u32,
) -> i32 {
    let judged = Judged {
        flags: flags_why & 0x00ff_ffff,
        grant: 0,
        decision: Decision::new(false, (flags_why >> 24) as u8, 0, TAGSET_UNTAGGED),
        no_table: false,
        volatile: false,
    };
    finish(sock, dest, hook, actor, &judged)
}

/// The flags of policy `slot` in the active tables (`None`: no tables, or
/// no such policy).
#[inline(always)]
pub fn policy_flags_of(slot: u32) -> Option<u32> {
    let epoch = config_slot(config::EPOCH);
    if epoch == 0 {
        return None;
    }
    policy_entry((epoch & 1) as u32, slot).map(|p| p.flags)
}

/// Judges an inbound connection from `dest` (the peer) to a listener whose
/// cgroup is bound to `bound`: the policy's decision for the peer's
/// address, recorded as any decision (`sock`: the program's context, for
/// the socket's cookie). Out of line: one frame for the inbound path.
#[inline(never)]
pub fn judge_inbound(sock: *mut core::ffi::c_void, dest: &Dest, bound: policy::Bound) -> i32 {
    let epoch = config_slot(config::EPOCH);
    if epoch == 0 {
        return PROCEED;
    }
    let actor = Governed {
        epoch,
        cgroup_id: bound.cgroup,
        scope: bound.cgroup,
        slot: bound.slot,
        flags: 0,
    };
    if config_slot(config::AUDIT_DENY) != 0 {
        return refuse_unaudited(sock, dest, geowall_common::hook::INGRESS, &actor);
    }
    let q = Eval {
        gen_: (epoch & 1) as u32,
        slot: bound.slot,
        scopes: Scopes {
            leaf: bound.cgroup,
            bound: bound.cgroup,
        },
    };
    let mut judged = no_table();
    evaluate(&q, dest, &mut judged);
    finish(sock, dest, geowall_common::hook::INGRESS, &actor, &judged)
}

/// The calling task's policy for judging hops of a source route: table
/// generation and policy slot packed (`generation << 32 | slot`), or
/// `None` when no policy governs the task.
#[inline(always)]
pub fn task_slot() -> Option<u64> {
    let (epoch, _, bound) = current()?;
    let bound = bound?;
    Some(((epoch & 1) << 32) | u64::from(bound.slot))
}

/// Whether policy `gen_slot` ([`task_slot`]) allows `dest`, a hop of a
/// source route, by its rules and regions (grants and names are about
/// destinations, not hops): 0 when it does, else the denying decision
/// packed (allowed bit clear; reason, prefix length, tag set) for
/// [`refuse_hop`]. Out of line, and a number: the route's loop calls it
/// per hop, and a number keeps the verifier's paths from multiplying.
#[inline(never)]
pub fn hop_decision(gen_slot: u64, dest: &Dest) -> u64 {
    let (gen_, slot) = ((gen_slot >> 32) as u32, gen_slot as u32);
    let Some(policy) = policy_entry(gen_, slot) else {
        return pack_decision(&no_table().decision);
    };
    let decision = match rule_decision(policy, gen_, slot, dest) {
        Some(d) => d,
        None => region_decision(policy, gen_, dest),
    };
    if decision.allowed {
        0
    } else {
        pack_decision(&decision)
    }
}

/// A denying decision as [`hop_decision`] answers it (never 0: the
/// reason is set).
#[inline(always)]
fn pack_decision(d: &Decision) -> u64 {
    1 << 40 | u64::from(d.reason) | u64::from(d.plen) << 8 | u64::from(d.tagset) << 16
}

/// The calling task as the actor of a refusal, and its policy's flags
/// (an enforcing policy's when its entry cannot be read: a governed task
/// is refused, not waved through). `None`: no policy governs the task.
#[inline(always)]
fn refusing_actor() -> Option<(Governed, u32)> {
    let (epoch, cgroup_id, bound) = current()?;
    let bound = bound?;
    let actor = Governed {
        epoch,
        cgroup_id,
        scope: bound.cgroup,
        slot: bound.slot,
        flags: 0,
    };
    let flags =
        policy_entry(actor.generation(), bound.slot).map_or(policy_flags::PRESENT, |p| p.flags);
    Some((actor, flags))
}

/// Records the refusal of a source route at hop `dest`, which its policy
/// denied with `packed` ([`hop_decision`]); audit mode records "would
/// deny" and lets it through.
#[inline(never)]
pub fn refuse_hop(dest: &Dest, hook: u8, packed: u64) -> i32 {
    let Some((actor, flags)) = refusing_actor() else {
        return PROCEED;
    };
    let judged = Judged {
        flags,
        grant: 0,
        decision: Decision::new(
            false,
            packed as u8,
            (packed >> 8) as u8,
            (packed >> 16) as u16,
        ),
        no_table: false,
        volatile: false,
    };
    finish(core::ptr::null_mut(), dest, hook, &actor, &judged)
}

/// Refuses, for `why`, an operation of the calling task outside the tables
/// (a route geowall cannot judge hop by hop): recorded under its policy;
/// audit mode records "would deny" and lets it through. Not a governed
/// task: proceed.
#[inline(never)]
pub fn refuse_task(dest: &Dest, hook: u8, why: u8) -> i32 {
    let Some((actor, flags)) = refusing_actor() else {
        return PROCEED;
    };
    refuse(
        core::ptr::null_mut(),
        dest,
        hook,
        &actor,
        flags | u32::from(why) << 24,
    )
}

/// Refuses a governed job's connection because the audit log cannot be
/// written and the operator chose to fail closed (`[audit]
/// on_write_failure = "deny"`): recorded (if the agent can) with reason
/// `audit` and counted; audit mode records "would deny" and lets it
/// through. Out of line: the verdict path's frame stays as it was.
#[inline(never)]
fn refuse_unaudited(sock: *mut core::ffi::c_void, dest: &Dest, hook: u8, actor: &Governed) -> i32 {
    let flags =
        policy_entry(actor.generation(), actor.slot).map_or(policy_flags::PRESENT, |p| p.flags);
    if flags & policy_flags::AUDIT == 0 {
        events::count(actor.slot, counter::AUDIT_REFUSED);
    }
    refuse(
        sock,
        dest,
        hook,
        actor,
        flags | u32::from(reason::AUDIT) << 24,
    )
}

/// A slot the active tables do not have: fail closed.
#[inline(always)]
fn no_table() -> Judged {
    Judged {
        flags: policy_flags::PRESENT,
        decision: Decision::new(false, reason::NO_TABLE, 0, TAGSET_UNTAGGED),
        no_table: true,
        grant: 0,
        volatile: false,
    }
}

#[inline(always)]
fn policy_entry(gen_: u32, slot: u32) -> Option<&'static PolicyEntry> {
    if slot >= MAX_POLICIES {
        return None;
    }
    let entry = GW_POLICIES.get(gen_ * MAX_POLICIES + slot)?;
    if entry.flags & policy_flags::PRESENT == 0 {
        return None;
    }
    Some(entry)
}

/// The decision of policy `slot` for `dest`, for a task covered by the
/// grants of `scopes`: the policy's own, and when it denies (or would deny),
/// a live grant's.
/// Out of line: a connection judged under two policies runs it twice, and
/// one frame of its own keeps the callers' stack small.
/// The answer goes to `out`, and the call returns its severity: a function
/// that returns nothing may leave a pointer into the caller's stack in the
/// return register, which the verifier refuses.
#[inline(never)]
fn evaluate(q: &Eval, dest: &Dest, out: &mut Judged) -> u8 {
    evaluate_into(q, dest, out);
    out.severity()
}

/// The decision, written field by field into the caller's `out`: a
/// decision built here and copied would sit on this frame too, and the
/// verdict path's frames are at the stack's limit.
#[inline(always)]
fn evaluate_into(q: &Eval, dest: &Dest, out: &mut Judged) {
    let (gen_, slot, scopes) = (q.gen_, q.slot, q.scopes);
    let Some(policy) = policy_entry(gen_, slot) else {
        *out = no_table();
        return;
    };
    out.flags = policy.flags;
    out.grant = 0;
    out.no_table = false;
    out.volatile = false;
    out.decision = match rule_decision(policy, gen_, slot, dest) {
        Some(d) => d,
        None => region_decision(policy, gen_, dest),
    };
    // What the job resolved: `resolved_only` and `allow_names`. Rules and
    // local destinations decide without it, and so does a query to a
    // resolver that goes through the agent's forwarder (a resolver is not
    // resolved).
    if policy.flags & (policy_flags::ALLOW_NAMES | policy_flags::RESOLVED_ONLY) != 0
        && out.decision.reason != reason::RULE
        && out.decision.reason != reason::LOCAL
        && !(dest.port == DNS_PORT && policy.flags & policy_flags::DNS != 0)
    {
        // A decision that rests on the resolution expires with it.
        out.volatile = by_names(q, dest, policy.flags, &mut out.decision) == reason::NAME
            || policy.flags & policy_flags::RESOLVED_ONLY != 0;
    }
    if !out.decision.allowed {
        granted(gen_, slot, scopes, dest, out);
    }
}

/// Applies what the job resolved to `decision` (the region's): under
/// `resolved_only` an address the job has no live resolution for is
/// denied; under `allow_names` a denied address the job resolved from a
/// name the policy allows (and whose answer is live) is allowed. Answers
/// the decision's reason (a function that returns nothing may leave a
/// pointer in the return register, which the verifier refuses). Out of
/// line: the keys stay off the verdict path's frame.
#[inline(never)]
fn by_names(q: &Eval, dest: &Dest, flags: u32, decision: &mut Decision) -> u8 {
    // `allow_names` alone only opens what the region denied: an allowed
    // destination (most connects) needs no lookup.
    if decision.allowed && flags & policy_flags::RESOLVED_ONLY == 0 {
        return decision.reason;
    }
    // What the job resolved is kept under the cgroup whose binding gave it
    // its policy.
    let key = LearnedKey::new(q.scopes.bound, &dest.addr, dest.v4);
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let live: Option<*const Learned> = GW_LEARNED.get_ptr(key).filter(|l| {
        // SAFETY: a non-null value pointer from bpf_map_lookup_elem is
        // valid for the program's run (LRU elements are freed after an RCU
        // grace period).
        unsafe { &**l }.live(now)
    });
    let Some(learned) = live else {
        if flags & policy_flags::RESOLVED_ONLY != 0 {
            decision.allowed = false;
            decision.reason = reason::UNRESOLVED;
        }
        return decision.reason;
    };
    if decision.allowed || flags & policy_flags::ALLOW_NAMES == 0 {
        return decision.reason;
    }
    // SAFETY: as above.
    let learned = unsafe { &*learned };
    for i in 0..LEARNED_NAMES {
        let Some(name) = learned.name_live(i, now) else {
            continue;
        };
        let allow = NameAllowKey::new(name, q.slot as u16, q.gen_ as u8);
        if GW_NAMEOK.get_ptr(allow).is_some() {
            decision.allowed = true;
            decision.reason = reason::NAME;
            break;
        }
    }
    decision.reason
}

/// What a grant lookup needs (one pointer across a call: BPF functions take
/// at most five arguments).
struct GrantQuery {
    gen_: u32,
    port: u16,
    now: u64,
    scopes: Scopes,
    policy_scope: u64,
}

/// A live grant that allows `dest`, which the policy denied with
/// `out.decision`: first one to the destination's prefix, then one to one
/// of its regions, each scope in turn (the task's cgroup, its bound cgroup,
/// the policy); when one does, its decision and id go to `out`. Expiry is
/// checked here, against the boot clock, so a grant ends on time whether
/// or not the agent runs.
#[inline(always)]
fn granted(gen_: u32, slot: u32, scopes: Scopes, dest: &Dest, out: &mut Judged) {
    let prefixes = config_slot(config::GRANTS) != 0;
    let regions = config_slot(config::REGION_GRANTS) != 0;
    if !prefixes && !regions {
        return;
    }
    let query = GrantQuery {
        gen_,
        port: dest.port,
        // SAFETY: a helper without arguments.
        now: unsafe { bpf_ktime_get_boot_ns() },
        scopes,
        policy_scope: GRANT_SCOPE_POLICY | u64::from(slot),
    };
    let denied = out.decision;
    if prefixes && let Some((id, plen)) = prefix_grant(&query, dest) {
        out.decision = Decision::new(true, reason::GRANT, plen, denied.tagset);
        out.grant = id;
        return;
    }
    if !regions {
        return;
    }
    // A rule decided without the region lookup: do it now.
    let (tagset, plen) = if denied.reason == reason::RULE {
        match region_value(gen_, dest) {
            Some(v) => (v.tagset, v.plen),
            None => (TAGSET_UNTAGGED, 0),
        }
    } else {
        (denied.tagset, denied.plen)
    };
    if tagset == TAGSET_UNTAGGED {
        return;
    }
    if let Some(id) = region_grant(&query, tagset) {
        out.decision = Decision::new(true, reason::GRANT, plen, tagset);
        out.grant = id;
    }
}

/// A live grant to `dest`'s prefix in one of the query's scopes: its id and
/// prefix length.
#[inline(always)]
fn prefix_grant(q: &GrantQuery, dest: &Dest) -> Option<(u32, u8)> {
    if let Some(g) = grant_in(q.scopes.leaf, dest, q.now) {
        return Some(g);
    }
    if q.scopes.bound != q.scopes.leaf
        && let Some(g) = grant_in(q.scopes.bound, dest, q.now)
    {
        return Some(g);
    }
    grant_in(q.policy_scope, dest, q.now)
}

/// The live grant for `dest` in `scope`, read in place (a grant set is too
/// big to copy onto the stack twice).
#[inline(never)]
fn grant_in(scope: u64, dest: &Dest, now: u64) -> Option<(u32, u8)> {
    let scope_be = scope.to_be_bytes();
    let set = if dest.v4 {
        let mut data: GrantKey4 = [0; 12];
        data[..8].copy_from_slice(&scope_be);
        data[8..].copy_from_slice(&dest.addr[..4]);
        GW_GRANTS4.get(&Key::new(96, data))?
    } else {
        let mut data: GrantKey6 = [0; 24];
        data[..8].copy_from_slice(&scope_be);
        data[8..].copy_from_slice(&dest.addr);
        GW_GRANTS6.get(&Key::new(192, data))?
    };
    set.find(dest.port, now).map(|g| (g.id, g.plen))
}

/// A live grant to one of the regions of tag set `tagset` (of the query's
/// generation) in one of the query's scopes: its id. At most [`MAX_TAGS`]
/// regions, three scopes each.
#[inline(never)]
fn region_grant(q: &GrantQuery, tagset: u16) -> Option<u32> {
    let tags = GW_TAGSETS.get(q.gen_ * MAX_TAGSETS + u32::from(tagset))?;
    let count = (tags.count as usize).min(MAX_TAGS);
    for &region in tags.regions.iter().take(count) {
        if let Some(id) = region_grant_in(q, q.scopes.leaf, region) {
            return Some(id);
        }
        if q.scopes.bound != q.scopes.leaf
            && let Some(id) = region_grant_in(q, q.scopes.bound, region)
        {
            return Some(id);
        }
        if let Some(id) = region_grant_in(q, q.policy_scope, region) {
            return Some(id);
        }
    }
    None
}

/// The live grant to `region` in `scope`, read in place.
#[inline(always)]
fn region_grant_in(q: &GrantQuery, scope: u64, region: u16) -> Option<u32> {
    let key = RegionGrantKey::new(scope, region, q.gen_ as u8);
    let set: *const GrantSet = GW_RGRANTS.get_ptr(key)?;
    // SAFETY: a non-null value pointer from bpf_map_lookup_elem is valid for
    // the program's run (hash elements are freed after an RCU grace period).
    let set = unsafe { &*set };
    set.find(q.port, q.now).map(|g| g.id)
}

/// The rule of `policy` that matches `dest`, if any.
#[inline(always)]
fn rule_decision(policy: &PolicyEntry, gen_: u32, slot: u32, dest: &Dest) -> Option<Decision> {
    if policy.flags & policy_flags::HAS_RULES == 0 {
        return None;
    }
    let mut out = Decision::new(false, reason::RULE, 0, TAGSET_UNTAGGED);
    matching_rule(gen_, slot, dest, &mut out).then_some(out)
}

/// Writes the decision of the rule for `dest` of policy `slot` to `out`;
/// false when no rule matches. Out of line, and the rule set is read in
/// place: neither its key nor its value sits on the verdict path's stack
/// (and the answer goes through `out`: an `Option` has no BTF the kernel
/// takes).
#[inline(never)]
fn matching_rule(gen_: u32, slot: u32, dest: &Dest, out: &mut Decision) -> bool {
    let slot_be = slot.to_be_bytes();
    let rules: Option<*mut RuleSet> = if dest.v4 {
        let mut data: RuleKey4 = [0; 8];
        data[..4].copy_from_slice(&slot_be);
        data[4..].copy_from_slice(&dest.addr[..4]);
        GW_RULES4.get_value_ptr_mut(gen_, &Key::new(64, data))
    } else {
        let mut data: RuleKey6 = [0; 20];
        data[..4].copy_from_slice(&slot_be);
        data[4..].copy_from_slice(&dest.addr);
        GW_RULES6.get_value_ptr_mut(gen_, &Key::new(160, data))
    };
    let Some(rules) = rules else {
        return false;
    };
    // SAFETY: a non-null trie value pointer is valid for the program's run
    // (nodes are freed after an RCU grace period).
    match unsafe { &*rules }.decide(dest.proto, dest.port) {
        Some(d) => {
            *out = d;
            true
        }
        None => false,
    }
}

/// The region's decision for `dest` under `policy`.
#[inline(always)]
fn region_decision(policy: &PolicyEntry, gen_: u32, dest: &Dest) -> Decision {
    let found = region_lookup(policy, gen_, dest);
    let value = (found & FOUND != 0).then_some(RegionValue {
        tagset: found as u16,
        plen: (found >> 16) as u8,
        flags: (found >> 24) as u8,
    });
    policy.region_decision(value)
}

/// [`region_lookup`]'s answer has a value.
const FOUND: u64 = 1 << 32;

/// The region trie's value for `dest`, packed in a number (tag set, prefix
/// length, flags; [`FOUND`] when there is one). For an IPv6 destination
/// that carries an IPv4 address (NAT64, 6to4, IPv4-compatible: a translator
/// or tunnel takes the packet there) both addresses are looked up and the
/// value `policy` judges stricter is answered. Out of line, and a number:
/// however many ways it finds its answer, the caller sees one, so the
/// verifier's paths do not multiply.
#[inline(never)]
fn region_lookup(policy: &PolicyEntry, gen_: u32, dest: &Dest) -> u64 {
    let outer = region_ptr(gen_, dest);
    if dest.v4 {
        return packed(outer);
    }
    let inner = embedded::v4_of(&dest.addr);
    if inner == 0 || !policy.region_decision(read_value(outer)).allowed {
        return packed(outer);
    }
    let ip = inner.to_ne_bytes();
    let inner = GW_REGION4.get_value_ptr_mut(gen_, &Key::new(32, ip));
    if policy.region_decision(read_value(inner)).allowed {
        packed(outer)
    } else {
        packed(inner)
    }
}

/// A trie value as [`region_lookup`] answers it, read from the pointer:
/// an `Option` of the value would leave its payload undefined when empty,
/// and the verifier refuses a read of an undefined register.
#[inline(always)]
fn packed(ptr: Option<*mut RegionValue>) -> u64 {
    match ptr {
        Some(p) => {
            // SAFETY: a non-null trie value pointer is valid for the
            // program's run.
            let v = unsafe { core::ptr::read(p) };
            FOUND | u64::from(v.tagset) | u64::from(v.plen) << 16 | u64::from(v.flags) << 24
        }
        None => 0,
    }
}

/// The region trie's entry for `dest`, in place.
#[inline(always)]
fn region_ptr(gen_: u32, dest: &Dest) -> Option<*mut RegionValue> {
    if dest.v4 {
        let mut data = [0u8; 4];
        data.copy_from_slice(&dest.addr[..4]);
        GW_REGION4.get_value_ptr_mut(gen_, &Key::new(32, data))
    } else {
        GW_REGION6.get_value_ptr_mut(gen_, &Key::new(128, dest.addr))
    }
}

#[inline(always)]
fn region_value(gen_: u32, dest: &Dest) -> Option<RegionValue> {
    read_value(region_ptr(gen_, dest))
}

/// Copies a trie value out of the kernel's node (nodes are freed only after
/// the program has returned, but the copy keeps the lifetime obvious).
#[inline(always)]
fn read_value<T: Copy>(ptr: Option<*mut T>) -> Option<T> {
    // SAFETY: a non-null pointer from bpf_map_lookup_elem points at a value
    // of the map's value size for the duration of the program.
    ptr.map(|p| unsafe { core::ptr::read(p) })
}

/// Applies audit mode, bumps the counters, records the event, returns the
/// answer to the kernel.
#[inline(always)]
fn finish(
    sock: *mut core::ffi::c_void,
    dest: &Dest,
    hook: u8,
    actor: &Governed,
    judged: &Judged,
) -> i32 {
    if judged.no_table {
        events::count(actor.slot, counter::NO_TABLE);
    }
    let (code, ret, counter_idx) = match judged.severity() {
        0 => (verdict::ALLOW, PROCEED, counter::ALLOWED),
        1 => (verdict::WOULD_DENY, PROCEED, counter::WOULD_DENY),
        _ => (verdict::DENY, REFUSE, counter::DENIED),
    };
    events::count(actor.slot, counter_idx);
    // A granted flow is an exception a human allowed: always on the record.
    if code != verdict::ALLOW || judged.grant != 0 || judged.flags & policy_flags::LOG_ALLOWED != 0
    {
        let outcome = events::Outcome::new(code, &judged.decision, judged.grant);
        events::emit(sock, dest, hook, actor, &outcome);
    }
    ret
}
