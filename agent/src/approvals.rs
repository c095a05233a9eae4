//! Just-in-time approvals: requests for a narrow, time-boxed exception to a
//! policy, the decisions on them, and the grants an approval writes into the
//! kernel.
//!
//! A request names a scope and a destination: the scope is one cgroup (a
//! `geowall exec` job, or the bound cgroup a denied flow came from: the
//! grant covers its sub-cgroups) or a whole policy; the destination is a
//! prefix or a region (a country, a cloud region, a group: the region tags
//! it stands for when it is requested) or a name (`api.partner.test`,
//! `*.partner.test`: the addresses the scope's jobs resolve from it through
//! the agent, each written as a host grant before the answer reaches the
//! job) and a port (0: any). An approved
//! request is a grant with the same id; the kernel checks its expiry against
//! the boot clock, so a grant ends on time whether or not the agent runs.
//!
//! The store is kept as JSON in `[approvals] state_dir` and re-applied when
//! the agent starts; what expired meanwhile is marked expired and not
//! written to the kernel.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use geowall_common::GRANT_SCOPE_POLICY;
use serde::{Deserialize, Serialize};

use thiserror::Error;

use crate::{
    dns::pattern::NamePattern,
    policy::{ResolveError, Resolver},
    regions::prefix::{Prefix, PrefixError},
    vocab::{error::Chain, units::Span},
};

/// Name of the state file in the state folder.
pub const STATE_FILE: &str = "approvals.json";
/// Finished requests are kept (for `approvals list`) this long.
const KEEP_FINISHED: Duration = Duration::from_secs(24 * 3600);
/// What a reactive request asks for when the policy allows more.
pub const REACTIVE_GRANT: Duration = Duration::from_secs(3600);
/// Region tags one grant may stand for (the widest built-in group,
/// `Africa`, has 58).
pub const MAX_GRANT_REGIONS: usize = 64;
/// Addresses one name grant opens at most (a CDN name rotates through a
/// few dozen; beyond this the job's further addresses stay denied and the
/// agent says so).
pub const MAX_NAME_GRANT_ADDRESSES: usize = 256;

/// What a grant lets through.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Destination {
    /// An address range.
    Prefix(Prefix),
    /// Every destination the map tags with one of a region's tags; the
    /// region as named (`DE`, `aws:eu-west-1`, `EU`). The tags it stands for
    /// are [`Approval::regions`].
    Region(String),
    /// The addresses the scope's jobs resolve from a name (exact or
    /// `*.suffix`, matched against the question and the CNAME chain); those
    /// resolved so far are [`Approval::resolved`].
    Name(NamePattern),
}

impl Destination {
    pub fn prefix(&self) -> Option<&Prefix> {
        match self {
            Destination::Prefix(p) => Some(p),
            Destination::Region(_) | Destination::Name(_) => None,
        }
    }

    pub fn name(&self) -> Option<&NamePattern> {
        match self {
            Destination::Name(n) => Some(n),
            _ => None,
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Prefix(p) => p.fmt(f),
            Destination::Region(name) => f.write_str(name),
            Destination::Name(n) => n.fmt(f),
        }
    }
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Pending,
    /// Approved: a live grant.
    Approved,
    Denied,
    /// A pending request nobody answered, or a grant that ran out.
    Expired,
    Revoked,
}

impl Stage {
    pub fn live(self) -> bool {
        matches!(self, Stage::Pending | Stage::Approved)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Pending => "pending",
            Stage::Approved => "approved",
            Stage::Denied => "denied",
            Stage::Expired => "expired",
            Stage::Revoked => "revoked",
        }
    }
}

/// A person (or process) as the kernel identified them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// [`Person::NO_UID`] (left out when written) for a fleet approver.
    #[serde(default = "Person::no_uid", skip_serializing_if = "Person::is_no_uid")]
    pub uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// A decision from the fleet: the etcd user who wrote it, as etcd
    /// authenticated them (user name or certificate common name); `uid` is
    /// then [`Person::NO_UID`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_user: Option<String>,
}

impl Person {
    /// The uid of a person no local credential names (a fleet approver).
    pub const NO_UID: u32 = u32::MAX;

    fn no_uid() -> u32 {
        Self::NO_UID
    }

    fn is_no_uid(uid: &u32) -> bool {
        *uid == Self::NO_UID
    }

    pub fn new(uid: u32, pid: Option<u32>) -> Self {
        Self {
            uid,
            user: crate::host::users::user_name(uid),
            pid,
            etcd_user: None,
        }
    }

    /// An approver of the fleet, as etcd authenticated them.
    pub fn etcd(user: &str) -> Self {
        Self {
            uid: Self::NO_UID,
            user: None,
            pid: None,
            etcd_user: Some(user.to_owned()),
        }
    }

    /// The user name, `etcd:NAME` for a fleet approver, or `uid N`.
    pub fn label(&self) -> String {
        if let Some(u) = &self.etcd_user {
            return format!("etcd:{u}");
        }
        self.user
            .clone()
            .unwrap_or_else(|| format!("uid {}", self.uid))
    }
}

/// How a request came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Filed by `geowall approvals request` (or `exec --wait-for-approval`).
    Proactive,
    /// Opened by a denied flow under an approvable policy.
    Reactive,
}

/// A request, and once approved, its grant (same id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub id: u32,
    pub state: Stage,
    pub origin: Origin,
    pub policy: String,
    /// The `geowall exec` job the grant is scoped to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The cgroup the grant is scoped to (relative to the cgroup v2 mount);
    /// absent: the whole policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    /// The policy's slot when the request was made (the scope of a
    /// policy-wide grant).
    pub slot: u32,
    /// Destination: a prefix (`10.0.0.0/8`) or a region as named.
    #[serde(with = "destination_text")]
    pub to: Destination,
    /// A region destination: the region tags it stands for (resolved when
    /// the request was made, so an approval covers exactly what the
    /// approver saw).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// A name destination: the addresses resolved from it in the grant's
    /// scope while it lives (each a host grant in the kernel).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub resolved: BTreeSet<IpAddr>,
    /// Destination port; 0 = any.
    pub port: u16,
    pub requested_by: Person,
    pub reason: String,
    /// Length of grant asked for, seconds.
    pub for_secs: u64,
    /// Unix milliseconds.
    pub created_ms: u64,
    /// Pending: when the request lapses; approved: when the grant ends;
    /// otherwise when that happened. Unix milliseconds.
    pub expires_ms: u64,
    /// Denied flows that opened or joined the request (reactive).
    #[serde(default)]
    pub denials: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<Person>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_reason: Option<String>,
    /// When the decision was taken (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_ms: Option<u64>,
}

impl Approval {
    /// The address ranges the grant opens: its prefix, or the addresses
    /// resolved from its name.
    pub fn prefixes(&self) -> Vec<Prefix> {
        match &self.to {
            Destination::Prefix(p) => vec![*p],
            Destination::Name(_) => self.resolved.iter().map(|a| Prefix::host(*a)).collect(),
            Destination::Region(_) => Vec::new(),
        }
    }

    /// Whether a job of bound cgroup `scope` under policy slot `slot` is
    /// covered (a grant to one cgroup covers the jobs bound there; a
    /// policy-wide one, every job of the policy).
    pub fn covers(&self, scope: u64, slot: u32) -> bool {
        match self.cgroup_id {
            Some(id) => id == scope,
            None => self.slot == slot,
        }
    }

    /// A name grant that covers `scope` (under `slot`) and matches one of
    /// `chain`: takes the addresses it has not seen (up to
    /// [`MAX_NAME_GRANT_ADDRESSES`]). Answers those it took, and whether
    /// some did not fit.
    pub fn take_resolved(
        &mut self,
        scope: u64,
        slot: u32,
        chain: &[String],
        addresses: &[IpAddr],
    ) -> (Vec<IpAddr>, bool) {
        let Destination::Name(pattern) = &self.to else {
            return (Vec::new(), false);
        };
        if self.state != Stage::Approved
            || !self.covers(scope, slot)
            || !chain.iter().any(|n| pattern.matches(n))
        {
            return (Vec::new(), false);
        }
        let mut taken = Vec::new();
        let mut full = false;
        for a in addresses {
            if self.resolved.contains(a) {
                continue;
            }
            if self.resolved.len() >= MAX_NAME_GRANT_ADDRESSES {
                full = true;
                break;
            }
            self.resolved.insert(*a);
            taken.push(*a);
        }
        (taken, full)
    }

    /// The grant scope in the kernel's terms.
    pub fn scope(&self) -> u64 {
        match self.cgroup_id {
            Some(id) => id,
            None => GRANT_SCOPE_POLICY | u64::from(self.slot),
        }
    }

    /// The record `approvals list --json` shows (and the protocol returns).
    pub fn view(&self) -> ApprovalView {
        ApprovalView {
            id: self.id,
            state: self.state,
            origin: self.origin,
            policy: self.policy.clone(),
            job: self.job.clone(),
            cgroup: self.cgroup.clone(),
            to: self.to.to_string(),
            regions: self.regions.clone(),
            addresses: self.resolved.iter().map(ToString::to_string).collect(),
            port: self.port,
            requested_by: self.requested_by.label(),
            requested_by_uid: self.requested_by.uid,
            reason: self.reason.clone(),
            for_: Span(Duration::from_secs(self.for_secs)).to_string(),
            created: rfc3339_ms(self.created_ms),
            expires: rfc3339_ms(self.expires_ms),
            denials: self.denials,
            decided_by: self.decided_by.as_ref().map(Person::label),
            decision_reason: self.decision_reason.clone(),
            decided: self.decided_ms.map(rfc3339_ms),
        }
    }
}

/// A request as `approvals list --json` shows it, the control protocol
/// returns it and `approval` records carry it. (Printed, its keys come in
/// alphabetical order, as a JSON object's always have here.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalView {
    pub id: u32,
    /// `pending`, `approved`, `denied`, `expired`, `revoked`.
    pub state: Stage,
    pub origin: Origin,
    pub policy: String,
    /// The job the grant is scoped to, if one.
    pub job: Option<String>,
    /// The cgroup the grant is scoped to, if one (else the whole policy).
    pub cgroup: Option<String>,
    /// An address range, or a region as named.
    pub to: String,
    /// A region destination's tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// A name destination: the addresses resolved from it so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// 0: any.
    pub port: u16,
    /// The requester's user name (`uid N` without one).
    pub requested_by: String,
    pub requested_by_uid: u32,
    pub reason: String,
    /// The grant's length asked for (`2h`).
    #[serde(rename = "for")]
    pub for_: String,
    /// RFC 3339 times.
    pub created: String,
    pub expires: String,
    pub denials: u64,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    /// RFC 3339, when the decision was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided: Option<String>,
}

/// A destination as its text: a prefix (`10.0.0.0/8`), a name
/// (`api.partner.test`, `*.partner.test`: it has a dot and no `/` or `:`)
/// or a region's name (no dot).
mod destination_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Destination;

    pub(super) fn serialize<S: Serializer>(d: &Destination, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Destination, D::Error> {
        let text = String::deserialize(d)?;
        if text.contains('/') {
            return text
                .parse()
                .map(Destination::Prefix)
                .map_err(serde::de::Error::custom);
        }
        if super::looks_like_name(&text) {
            return crate::dns::pattern::NamePattern::parse(&text)
                .map(Destination::Name)
                .map_err(serde::de::Error::custom);
        }
        Ok(Destination::Region(text))
    }
}

pub fn rfc3339_ms(ms: u64) -> String {
    crate::vocab::clock::rfc3339(i128::from(ms) * 1_000_000)
}

/// What the caller may do, from their credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    /// Member of the approvers group.
    pub approver: bool,
}

impl Caller {
    pub fn may_decide(&self) -> bool {
        self.uid == 0 || self.approver
    }
}

/// Decisions on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
    Revoke,
}

impl Decision {
    pub fn verb(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
            Decision::Revoke => "revoke",
        }
    }
}

/// Why a caller may not take a decision on a request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Unauthorized {
    #[error("only root and members of the group '{group}' may {verb} requests", verb = .decision.verb())]
    NotApprover { group: String, decision: Decision },
    #[error(
        "request {0} was made by you: another approver must approve it \
         ([approvals] allow_self_approval is off)"
    )]
    OwnRequest(u32),
    #[error(
        "request {id} is {}, not {}: nothing to {}",
        .state.as_str(),
        .expected.as_str(),
        .decision.verb()
    )]
    WrongStage {
        id: u32,
        state: Stage,
        expected: Stage,
        decision: Decision,
    },
}

/// Whether `caller` may take `decision` on `request`; the refusal says why.
/// Root may do everything; members of the approvers group may decide, but
/// not approve their own request unless `allow_self` is set.
pub fn authorize(
    caller: Caller,
    group: &str,
    decision: Decision,
    request: &Approval,
    allow_self: bool,
) -> Result<(), Unauthorized> {
    if !caller.may_decide() {
        return Err(Unauthorized::NotApprover {
            group: group.to_owned(),
            decision,
        });
    }
    if decision == Decision::Approve
        && caller.uid != 0
        && caller.uid == request.requested_by.uid
        && !allow_self
    {
        return Err(Unauthorized::OwnRequest(request.id));
    }
    let expected = match decision {
        Decision::Approve | Decision::Deny => Stage::Pending,
        Decision::Revoke => Stage::Approved,
    };
    if request.state != expected {
        return Err(Unauthorized::WrongStage {
            id: request.id,
            state: request.state,
            expected,
            decision,
        });
    }
    Ok(())
}

/// A grant length that cannot be.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GrantLengthError {
    #[error("a grant must last longer than 0s")]
    Zero,
    #[error("{} is longer than policy '{policy}' allows: max_grant = \"{}\"", Span(*.length), Span(*.max))]
    TooLong {
        length: Duration,
        max: Duration,
        policy: String,
    },
}

/// A grant length: `wanted`, or what the request asked for; never longer
/// than the policy's `max_grant` (the error names the cap).
pub fn grant_length(
    wanted: Option<Duration>,
    asked: Duration,
    max: Duration,
    policy: &str,
) -> Result<Duration, GrantLengthError> {
    let d = wanted.unwrap_or(asked);
    if d.is_zero() {
        return Err(GrantLengthError::Zero);
    }
    if d > max {
        return Err(GrantLengthError::TooLong {
            length: d,
            max,
            policy: policy.to_owned(),
        });
    }
    Ok(d)
}

/// What is persisted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    next_id: u32,
    requests: Vec<Approval>,
}

/// Requests and grants, by id.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    next_id: u32,
    pub requests: BTreeMap<u32, Approval>,
}

impl Store {
    /// Reads the store from `dir` (empty when there is none yet).
    pub fn load(dir: &Path) -> io::Result<Store> {
        let path = dir.join(STATE_FILE);
        let saved: Saved = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(e),
        };
        let requests: BTreeMap<u32, Approval> =
            saved.requests.into_iter().map(|r| (r.id, r)).collect();
        let next_id = saved
            .next_id
            .max(requests.keys().max().map_or(1, |m| m + 1))
            .max(1);
        Ok(Store {
            dir: dir.to_path_buf(),
            next_id,
            requests,
        })
    }

    /// Writes the store (a new file renamed over the old one).
    pub fn save(&self) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let saved = Saved {
            next_id: self.next_id,
            requests: self.requests.values().cloned().collect(),
        };
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(&saved).map_err(io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    }

    /// Takes the next id.
    pub fn next_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Marks what ran out by `now_ms` as expired and forgets what finished
    /// long ago. Returns the ids that expired now.
    pub fn expire(&mut self, now_ms: u64) -> Vec<u32> {
        let mut expired = Vec::new();
        for r in self.requests.values_mut() {
            if r.state.live() && r.expires_ms <= now_ms {
                r.state = Stage::Expired;
                expired.push(r.id);
            }
        }
        let keep_ms = KEEP_FINISHED.as_millis() as u64;
        self.requests
            .retain(|_, r| r.state.live() || r.expires_ms.saturating_add(keep_ms) > now_ms);
        expired
    }

    /// The live grants.
    pub fn grants(&self) -> impl Iterator<Item = &Approval> {
        self.requests
            .values()
            .filter(|r| r.state == Stage::Approved)
    }

    /// The live grants, to change.
    pub fn grants_mut(&mut self) -> impl Iterator<Item = &mut Approval> {
        self.requests
            .values_mut()
            .filter(|r| r.state == Stage::Approved)
    }
}

/// A `--to` that names no destination.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DestinationError {
    #[error("--to {to}")]
    Prefix {
        to: String,
        #[source]
        source: PrefixError,
    },
    #[error("--to: name an address, a CIDR, a host name or a region")]
    Empty,
    #[error("--to {to}")]
    Name {
        to: String,
        #[source]
        source: crate::dns::pattern::PatternError,
    },
    /// Not a region either: what resolving it said comes before what a
    /// destination is.
    #[error("--to {to}: {} (a destination is an address, a CIDR, a host name or a region)", Chain(.cause))]
    Unresolved { to: String, cause: ResolveError },
    #[error("--to {to}: stands for {count} regions; a grant may name at most {MAX_GRANT_REGIONS}")]
    TooManyRegions { to: String, count: usize },
}

/// Whether `to` is written as a name: a dot, and neither `/` (a CIDR) nor
/// `:` (a cloud region, an IPv6 address). No region or group is named with
/// a dot.
fn looks_like_name(to: &str) -> bool {
    to.contains('.') && !to.contains('/') && !to.contains(':')
}

/// Parses a `--to` destination: an address (a host prefix), a CIDR, a name
/// (`api.partner.test`, `*.partner.test`), or a region as policies name them — a country code (`DE`), a cloud region
/// (`aws:eu-west-1`, or a glob over the map's: `aws:eu-*`), a built-in or
/// `[groups]` group (`EU`) — resolved by `resolver` into the region tags it
/// stands for.
pub fn parse_to(
    to: &str,
    resolver: &Resolver<'_>,
) -> Result<(Destination, Vec<String>), DestinationError> {
    let to = to.trim();
    if let Ok(ip) = to.parse::<std::net::IpAddr>() {
        return Ok((Destination::Prefix(Prefix::host(ip)), Vec::new()));
    }
    if to.contains('/') {
        let prefix = to
            .parse::<Prefix>()
            .map_err(|source| DestinationError::Prefix {
                to: to.to_owned(),
                source,
            })?;
        return Ok((Destination::Prefix(prefix), Vec::new()));
    }
    if to.is_empty() {
        return Err(DestinationError::Empty);
    }
    if looks_like_name(to) {
        let pattern = NamePattern::parse(to).map_err(|source| DestinationError::Name {
            to: to.to_owned(),
            source,
        })?;
        return Ok((Destination::Name(pattern), Vec::new()));
    }
    let mut tags = resolver
        .resolve(to)
        .map_err(|cause| DestinationError::Unresolved {
            to: to.to_owned(),
            cause,
        })?;
    tags.sort();
    tags.dedup();
    if tags.len() > MAX_GRANT_REGIONS {
        return Err(DestinationError::TooManyRegions {
            to: to.to_owned(),
            count: tags.len(),
        });
    }
    // A country is written as its code, in capitals; anything else as named.
    let name = match tags.as_slice() {
        [one] if one.eq_ignore_ascii_case(to) => one.clone(),
        _ => to.to_owned(),
    };
    Ok((Destination::Region(name), tags))
}

/// Requests for tests (here and in `tables::grants`).
#[cfg(test)]
pub(crate) mod fixtures {
    use std::collections::BTreeSet;

    use super::*;

    /// The resolver of a config with map tags `tags` and group `nordics`.
    pub(crate) fn resolve<T>(tags: &[&str], f: impl FnOnce(&Resolver<'_>) -> T) -> T {
        let map_tags: BTreeSet<String> = tags.iter().map(|t| t.to_string()).collect();
        let groups: BTreeMap<String, Vec<String>> = [(
            "nordics".to_owned(),
            vec![
                "DK".to_owned(),
                "SE".to_owned(),
                "aws:eu-north-1".to_owned(),
            ],
        )]
        .into();
        f(&Resolver {
            map_tags: Some(&map_tags),
            groups: &groups,
        })
    }

    pub(crate) fn parse(to: &str) -> Result<(Destination, Vec<String>), DestinationError> {
        resolve(&["US", "DE", "aws:eu-west-1", "aws:eu-north-1"], |r| {
            parse_to(to, r)
        })
    }

    pub(crate) fn request(id: u32, to: &str, uid: u32) -> Approval {
        let (to, regions) = parse(to).unwrap();
        Approval {
            id,
            state: Stage::Pending,
            origin: Origin::Proactive,
            policy: "eu".into(),
            job: None,
            cgroup: None,
            cgroup_id: None,
            slot: 2,
            to,
            regions,
            resolved: BTreeSet::new(),
            port: 0,
            requested_by: Person {
                uid,
                user: None,
                pid: None,
                etcd_user: None,
            },
            reason: "r".into(),
            for_secs: 60,
            created_ms: 1_000,
            expires_ms: 10_000,
            denials: 0,
            decided_by: None,
            decision_reason: None,
            decided_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fixtures::*, *};

    #[test]
    fn durations_are_capped_by_the_policy() {
        let h = Duration::from_secs(3600);
        assert_eq!(grant_length(None, h, 4 * h, "eu"), Ok(h));
        assert_eq!(
            grant_length(Some(Duration::from_secs(60)), h, 4 * h, "eu"),
            Ok(Duration::from_secs(60))
        );
        let e = grant_length(Some(5 * h), h, 4 * h, "eu")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_grant = \"4h\""), "{e}");
        assert!(grant_length(Some(Duration::ZERO), h, 4 * h, "eu").is_err());
    }

    #[test]
    fn who_may_decide() {
        let r = request(1, "127.20.0.0/24", 1000);
        let outsider = Caller {
            uid: 1001,
            approver: false,
        };
        let approver = Caller {
            uid: 1002,
            approver: true,
        };
        let requester = Caller {
            uid: 1000,
            approver: true,
        };
        let root = Caller {
            uid: 0,
            approver: false,
        };
        let e = authorize(outsider, "ops", Decision::Approve, &r, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("group 'ops'"), "{e}");
        assert!(authorize(outsider, "ops", Decision::Deny, &r, false).is_err());
        assert!(authorize(approver, "ops", Decision::Approve, &r, false).is_ok());
        let e = authorize(requester, "ops", Decision::Approve, &r, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("made by you"), "{e}");
        assert!(authorize(requester, "ops", Decision::Approve, &r, true).is_ok());
        assert!(authorize(requester, "ops", Decision::Deny, &r, false).is_ok());
        assert!(authorize(root, "ops", Decision::Approve, &r, false).is_ok());
        // Only a live grant can be revoked; only a pending request decided.
        assert!(authorize(root, "ops", Decision::Revoke, &r, false).is_err());
        let mut granted = r.clone();
        granted.state = Stage::Approved;
        assert!(authorize(approver, "ops", Decision::Revoke, &granted, false).is_ok());
        assert!(authorize(approver, "ops", Decision::Approve, &granted, false).is_err());
    }

    #[test]
    fn the_store_round_trips_and_drops_what_expired() {
        let dir = std::env::temp_dir().join(format!("geowall-approvals-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::load(&dir).unwrap();
        assert_eq!(store.next_id(), 1);
        let mut live = request(1, "127.20.0.0/24", 1000);
        live.state = Stage::Approved;
        live.expires_ms = 50_000;
        let mut old = request(2, "127.21.0.1", 1000);
        old.expires_ms = 20_000;
        store.requests.insert(1, live.clone());
        store.requests.insert(2, old);
        store.save().unwrap();
        let mut again = Store::load(&dir).unwrap();
        assert_eq!(again.requests, store.requests);
        assert_eq!(again.next_id(), 3);
        assert_eq!(again.expire(30_000), vec![2]);
        assert_eq!(again.requests[&2].state, Stage::Expired);
        assert_eq!(again.grants().count(), 1);
        // A day later the finished one is forgotten; the grant has run out.
        assert_eq!(
            again.expire(20_000 + KEEP_FINISHED.as_millis() as u64),
            vec![1]
        );
        assert_eq!(again.requests.keys().collect::<Vec<_>>(), vec![&1]);
        assert_eq!(again.grants().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn destinations_are_prefixes_or_regions() {
        let prefix = |to: &str| parse(to).unwrap().0.to_string();
        assert_eq!(prefix("127.20.0.1"), "127.20.0.1/32");
        assert_eq!(prefix("::1"), "::1/128");
        assert_eq!(prefix("10.0.0.0/8"), "10.0.0.0/8");
        assert!(parse("10.0.0.1/8").is_err());
        assert!(parse("").is_err());
        // A country, written in any case, is its code.
        let (to, tags) = parse("de").unwrap();
        assert_eq!(to, Destination::Region("DE".into()));
        assert_eq!(tags, ["DE"]);
        // A country the map does not tag is still a country.
        assert_eq!(parse("FR").unwrap().1, ["FR"]);
        // A cloud region the map tags; a glob over them.
        let (to, tags) = parse("aws:eu-west-1").unwrap();
        assert_eq!(to.to_string(), "aws:eu-west-1");
        assert_eq!(tags, ["aws:eu-west-1"]);
        assert_eq!(
            parse("aws:eu-*").unwrap().1,
            ["aws:eu-north-1", "aws:eu-west-1"]
        );
        // A group stands for its members, resolved now.
        let (to, tags) = parse("EU").unwrap();
        assert_eq!(to.to_string(), "EU");
        assert_eq!(tags.len(), 27);
        assert!(tags.contains(&"DE".to_owned()) && !tags.contains(&"US".to_owned()));
        let (to, tags) = parse("nordics").unwrap();
        assert_eq!(to.to_string(), "nordics");
        assert_eq!(tags, ["DK", "SE", "aws:eu-north-1"]);
        // Unknown names say what was meant, and what a destination is.
        let e = parse("Germany").unwrap_err().to_string();
        assert!(e.contains("did you mean 'DE'"), "{e}");
        assert!(
            e.contains("an address, a CIDR, a host name or a region"),
            "{e}"
        );
        let e = parse("aws:eu-west-9").unwrap_err().to_string();
        assert!(e.contains("did you mean 'aws:eu-west-1'"), "{e}");
        assert!(
            parse("ZZ")
                .unwrap_err()
                .to_string()
                .contains("unknown region")
        );
        assert!(parse("local").unwrap_err().to_string().contains("local"));
        // A host name, exact or below a suffix.
        let (to, tags) = parse("API.partner.test.").unwrap();
        assert_eq!(to.to_string(), "api.partner.test");
        assert!(to.name().is_some() && tags.is_empty());
        assert_eq!(
            parse("*.partner.test").unwrap().0.to_string(),
            "*.partner.test"
        );
        let e = Chain(&parse("api..test").unwrap_err()).to_string();
        assert!(
            e.contains("--to api..test") && e.contains("empty label"),
            "{e}"
        );
    }

    #[test]
    fn a_name_grant_takes_the_addresses_its_jobs_resolve() {
        let mut g = request(7, "*.partner.test", 1000);
        g.state = Stage::Approved;
        g.cgroup_id = Some(42);
        let a: IpAddr = "127.20.0.10".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        let chain = ["x.partner.test".to_owned(), "edge.cdn.test".to_owned()];
        // Another job, another name: nothing.
        let none: Vec<IpAddr> = Vec::new();
        assert_eq!(g.take_resolved(43, 0, &chain, &[a]).0, none);
        assert_eq!(
            g.take_resolved(42, 0, &["cdn.test".to_owned()], &[a]).0,
            none
        );
        assert_eq!(g.take_resolved(42, 0, &chain, &[a, b]).0, [a, b]);
        // Once.
        assert_eq!(g.take_resolved(42, 0, &chain, &[a]).0, none);
        assert_eq!(g.prefixes().len(), 2);
        // Bounded.
        let many: Vec<IpAddr> = (0..300u32)
            .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        let (taken, full) = g.take_resolved(42, 0, &chain, &many);
        assert_eq!(taken.len(), MAX_NAME_GRANT_ADDRESSES - 2);
        assert!(full);
        // A pending request opens nothing.
        let mut p = request(8, "api.partner.test", 1000);
        p.cgroup_id = Some(42);
        assert_eq!(
            p.take_resolved(42, 0, &["api.partner.test".into()], &[a]).0,
            none
        );
    }

    #[test]
    fn destinations_round_trip_through_the_state_file() {
        let mut r = request(5, "EU", 1000);
        r.state = Stage::Approved;
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""to":"EU""#), "{text}");
        assert_eq!(serde_json::from_str::<Approval>(&text).unwrap(), r);
        let p = request(6, "127.20.0.0/24", 1000);
        let text = serde_json::to_string(&p).unwrap();
        assert!(!text.contains("regions"), "{text}");
        assert_eq!(serde_json::from_str::<Approval>(&text).unwrap(), p);
        assert_eq!(r.view().regions.len(), 27);
        assert_eq!(r.view().to, "EU");
        let mut n = request(7, "*.partner.test", 1000);
        n.resolved.insert("127.20.0.10".parse().unwrap());
        let text = serde_json::to_string(&n).unwrap();
        assert!(text.contains(r#""to":"*.partner.test""#), "{text}");
        assert_eq!(serde_json::from_str::<Approval>(&text).unwrap(), n);
        assert_eq!(n.view().addresses, ["127.20.0.10"]);
    }
}
