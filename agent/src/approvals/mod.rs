//! Just-in-time approvals: requests for a narrow, time-boxed exception to a
//! policy, the decisions on them, and the grants an approval writes into the
//! kernel.
//!
//! A request names a scope and a destination: the scope is one cgroup (a
//! `geowall exec` job, or the cgroup a denied flow came from) or a whole
//! policy; the destination is a prefix and a port (0: any). An approved
//! request is a grant with the same id; the kernel checks its expiry against
//! the boot clock, so a grant ends on time whether or not the agent runs.
//!
//! The store is kept as JSON in `[approvals] state_dir` and re-applied when
//! the agent starts; what expired meanwhile is marked expired and not
//! written to the kernel.

pub mod webhook;

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use geowall_common::{GRANT_SCOPE_POLICY, Grant, GrantSet, MAX_GRANTS_PER_PREFIX};
use serde::{Deserialize, Serialize};

use crate::{kernel::grants::EntryKey, regions::prefix::Prefix};

/// Name of the state file in the state folder.
pub const STATE_FILE: &str = "approvals.json";
/// Finished requests are kept (for `approvals list`) this long.
const KEEP_FINISHED: Duration = Duration::from_secs(24 * 3600);
/// What a reactive request asks for when the policy allows more.
pub const REACTIVE_GRANT: Duration = Duration::from_secs(3600);

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
    pub uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

impl Person {
    pub fn new(uid: u32, pid: Option<u32>) -> Self {
        Self {
            uid,
            user: crate::flows::process::user_name(uid),
            pid,
        }
    }

    /// The user name, or `uid N`.
    pub fn label(&self) -> String {
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
    /// Destination prefix.
    #[serde(with = "prefix_text")]
    pub to: Prefix,
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
}

impl Approval {
    /// The grant scope in the kernel's terms.
    pub fn scope(&self) -> u64 {
        match self.cgroup_id {
            Some(id) => id,
            None => GRANT_SCOPE_POLICY | u64::from(self.slot),
        }
    }

    /// The record `approvals list --json` shows (and the protocol returns).
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "state": self.state.as_str(),
            "origin": self.origin,
            "policy": self.policy,
            "job": self.job,
            "cgroup": self.cgroup,
            "to": self.to.to_string(),
            "port": self.port,
            "requested_by": self.requested_by.label(),
            "requested_by_uid": self.requested_by.uid,
            "reason": self.reason,
            "for": crate::flows::settings::Span(Duration::from_secs(self.for_secs)).to_string(),
            "created": rfc3339_ms(self.created_ms),
            "expires": rfc3339_ms(self.expires_ms),
            "denials": self.denials,
            "decided_by": self.decided_by.as_ref().map(Person::label),
            "decision_reason": self.decision_reason,
        })
    }
}

/// A prefix as its text (`10.0.0.0/8`).
mod prefix_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::regions::prefix::Prefix;

    pub fn serialize<S: Serializer>(p: &Prefix, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(p)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Prefix, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

pub fn rfc3339_ms(ms: u64) -> String {
    crate::flows::time::rfc3339(i128::from(ms) * 1_000_000)
}

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Nanoseconds since boot (CLOCK_BOOTTIME), the kernel's grant clock.
pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
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

/// Whether `caller` may take `decision` on `request`; the refusal says why.
/// Root may do everything; members of the approvers group may decide, but
/// not approve their own request unless `allow_self` is set.
pub fn authorize(
    caller: Caller,
    group: &str,
    decision: Decision,
    request: &Approval,
    allow_self: bool,
) -> Result<(), String> {
    if !caller.may_decide() {
        return Err(format!(
            "only root and members of the group '{group}' may {} requests",
            decision.verb()
        ));
    }
    if decision == Decision::Approve
        && caller.uid != 0
        && caller.uid == request.requested_by.uid
        && !allow_self
    {
        return Err(format!(
            "request {} was made by you: another approver must approve it \
             ([approvals] allow_self_approval is off)",
            request.id
        ));
    }
    let expected = match decision {
        Decision::Approve | Decision::Deny => Stage::Pending,
        Decision::Revoke => Stage::Approved,
    };
    if request.state != expected {
        return Err(format!(
            "request {} is {}, not {}: nothing to {}",
            request.id,
            request.state.as_str(),
            expected.as_str(),
            decision.verb()
        ));
    }
    Ok(())
}

/// A grant length: `wanted`, or what the request asked for; never longer
/// than the policy's `max_grant` (the error names the cap).
pub fn grant_length(
    wanted: Option<Duration>,
    asked: Duration,
    max: Duration,
    policy: &str,
) -> Result<Duration, String> {
    let d = wanted.unwrap_or(asked);
    if d.is_zero() {
        return Err("a grant must last longer than 0s".into());
    }
    if d > max {
        return Err(format!(
            "{} is longer than policy '{policy}' allows: max_grant = \"{}\"",
            crate::flows::settings::Span(d),
            crate::flows::settings::Span(max)
        ));
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

    /// The kernel entries the live grants need, with their boot-clock
    /// expiries (`now_ms` and `now_boot_ns` are the same moment).
    pub fn entries(&self, now_ms: u64, now_boot_ns: u64) -> BTreeMap<EntryKey, GrantSet> {
        entries(self.grants(), now_ms, now_boot_ns)
    }
}

/// The grant trie entries for `grants`: one per (scope, prefix) granted,
/// holding every grant of that scope whose prefix contains it (the trie
/// returns only the most specific entry, so a wider grant is repeated in
/// the narrower entries).
pub fn entries<'a>(
    grants: impl Iterator<Item = &'a Approval>,
    now_ms: u64,
    now_boot_ns: u64,
) -> BTreeMap<EntryKey, GrantSet> {
    let grants: Vec<&Approval> = grants.collect();
    let keys: BTreeSet<EntryKey> = grants.iter().map(|g| (g.scope(), g.to)).collect();
    let mut out = BTreeMap::new();
    for (scope, prefix) in keys {
        let mut set = GrantSet::default();
        let covering = grants
            .iter()
            .filter(|g| g.scope() == scope && g.to.contains(&prefix))
            .take(MAX_GRANTS_PER_PREFIX);
        for (slot, g) in set.grants.iter_mut().zip(covering) {
            let left_ns = g
                .expires_ms
                .saturating_sub(now_ms)
                .saturating_mul(1_000_000);
            let mut k = Grant {
                id: g.id,
                port: g.port,
                plen: g.to.len(),
                ..Grant::default()
            };
            k.set_expires_ns(now_boot_ns.saturating_add(left_ns));
            *slot = k;
        }
        out.insert((scope, prefix), set);
    }
    out
}

/// Whether a new grant `candidate` fits: no (scope, prefix) entry may need
/// more than [`MAX_GRANTS_PER_PREFIX`] grants.
pub fn fits<'a>(live: impl Iterator<Item = &'a Approval>, candidate: &Approval) -> bool {
    let mut all: Vec<&Approval> = live.filter(|g| g.scope() == candidate.scope()).collect();
    all.push(candidate);
    all.iter().all(|entry| {
        all.iter().filter(|g| g.to.contains(&entry.to)).count() <= MAX_GRANTS_PER_PREFIX
    })
}

/// Parses a `--to` destination: a CIDR, or an address (a host prefix).
pub fn parse_to(to: &str) -> Result<Prefix, String> {
    if let Ok(ip) = to.parse::<std::net::IpAddr>() {
        return Ok(Prefix::host(ip));
    }
    to.parse::<Prefix>().map_err(|e| {
        if to.contains('/') {
            format!("--to {to}: {e}")
        } else {
            format!(
                "--to {to}: not an address or a CIDR (grants name destinations by prefix; \
                 regions are not supported)"
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: u32, to: &str, uid: u32) -> Approval {
        Approval {
            id,
            state: Stage::Pending,
            origin: Origin::Proactive,
            policy: "eu".into(),
            job: None,
            cgroup: None,
            cgroup_id: None,
            slot: 2,
            to: parse_to(to).unwrap(),
            port: 0,
            requested_by: Person {
                uid,
                user: None,
                pid: None,
            },
            reason: "r".into(),
            for_secs: 60,
            created_ms: 1_000,
            expires_ms: 10_000,
            denials: 0,
            decided_by: None,
            decision_reason: None,
        }
    }

    #[test]
    fn durations_are_capped_by_the_policy() {
        let h = Duration::from_secs(3600);
        assert_eq!(grant_length(None, h, 4 * h, "eu"), Ok(h));
        assert_eq!(
            grant_length(Some(Duration::from_secs(60)), h, 4 * h, "eu"),
            Ok(Duration::from_secs(60))
        );
        let e = grant_length(Some(5 * h), h, 4 * h, "eu").unwrap_err();
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
        let e = authorize(outsider, "ops", Decision::Approve, &r, false).unwrap_err();
        assert!(e.contains("group 'ops'"), "{e}");
        assert!(authorize(outsider, "ops", Decision::Deny, &r, false).is_err());
        assert!(authorize(approver, "ops", Decision::Approve, &r, false).is_ok());
        let e = authorize(requester, "ops", Decision::Approve, &r, false).unwrap_err();
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
    fn wider_grants_are_repeated_in_narrower_entries() {
        let mut wide = request(1, "127.20.0.0/16", 1000);
        wide.state = Stage::Approved;
        let mut narrow = request(2, "127.20.0.1", 1000);
        narrow.state = Stage::Approved;
        narrow.port = 443;
        let mut other = request(3, "127.20.0.1", 1000);
        other.state = Stage::Approved;
        other.cgroup_id = Some(77);
        let all = [wide.clone(), narrow.clone(), other.clone()];
        let e = entries(all.iter(), 1_000, 5_000_000_000);
        assert_eq!(e.len(), 3);
        let policy_scope = GRANT_SCOPE_POLICY | 2;
        let host = &e[&(policy_scope, narrow.to)];
        let ids: Vec<u32> = host.grants.iter().map(|g| g.id).collect();
        assert_eq!(ids, vec![1, 2, 0, 0]);
        assert_eq!(host.grants[1].port, 443);
        assert_eq!(host.grants[1].plen, 32);
        // 9 s left at 1 s: expires 9 s after the boot-clock now.
        assert_eq!(host.grants[0].expires_ns(), 5_000_000_000 + 9_000_000_000);
        assert_eq!(e[&(policy_scope, wide.to)].grants[0].id, 1);
        assert_eq!(e[&(77, other.to)].grants[0].id, 3);
        assert_eq!(e[&(77, other.to)].grants[1].id, 0);
        // A fifth grant covering the same host does not fit.
        let mut more: Vec<Approval> = (10..13)
            .map(|i| {
                let mut g = request(i, "127.20.0.0/24", 1);
                g.state = Stage::Approved;
                g
            })
            .collect();
        more.push(narrow.clone());
        assert!(!fits(more.iter(), &wide));
        more.pop();
        assert!(fits(more.iter(), &wide));
    }

    #[test]
    fn destinations_are_prefixes() {
        assert_eq!(parse_to("127.20.0.1").unwrap().to_string(), "127.20.0.1/32");
        assert_eq!(parse_to("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert!(parse_to("10.0.0.1/8").is_err());
        assert!(
            parse_to("DE")
                .unwrap_err()
                .contains("regions are not supported")
        );
    }
}
