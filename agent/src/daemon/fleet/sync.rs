//! The agent's side of the fleet: one task that keeps a session with etcd
//! and, while it lasts, applies what the fleet says and publishes what the
//! host says.
//!
//! A session: connect, take the heartbeat lease, read the fleet policies
//! and this host's decisions afresh (a full read: whatever was missed while
//! away), apply them, publish the host's status and requests, then watch
//! policies and decisions from the revision read. Whatever breaks the
//! session (etcd unreachable, a member gone, a leader change, a lease
//! lapsed) ends it: the host goes on enforcing what it has, says so in its
//! status and audit log, and starts a new session after a backoff (0.5 s
//! doubling to 10 s). A watch whose revision was compacted away starts a
//! new session at once, which reads afresh.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use etcd_client::{Client, EventType, GetOptions, KeyValue, PutOptions, WatchOptions};
use serde_json::json;
use tokio::sync::{Mutex, watch};

use super::client::{FleetError, connect};
use crate::{
    approvals::{Decision, Person},
    daemon::{state::State, stop::Stop},
    fleet::{
        Confirmation, DecisionValue, FleetPolicies, FleetPolicy, Keys, RequestValue, ValueError,
        values::Member,
    },
    vocab::{clock, error::chain},
};

/// The first wait after a failed session; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How often the host's status key is rewritten (besides on each change).
const STATUS_PERIOD: Duration = Duration::from_secs(10);

/// Why a session ended.
enum Ended {
    /// etcd failed or refused: back off, then a new session.
    Lost(FleetError),
    /// A watch fell behind a compaction: a new session at once.
    Resync(String),
}

impl From<FleetError> for Ended {
    fn from(e: FleetError) -> Self {
        Ended::Lost(e)
    }
}

/// `e`, from doing `what`.
fn etcd(what: &str) -> impl FnOnce(etcd_client::Error) -> Ended + '_ {
    move |e| Ended::Lost(FleetError::from_etcd(what, e))
}

/// What the task knows across sessions.
struct Sync {
    state: Arc<Mutex<State>>,
    keys: Keys,
    node: String,
    config: crate::config::FleetConfig,
    /// Request id → the value last written for it.
    published: BTreeMap<u32, String>,
}

/// Runs the fleet sync until the agent stops (nothing to do without
/// `[fleet]`).
pub(in crate::daemon) async fn run(state: Arc<Mutex<State>>, mut stop: watch::Receiver<Stop>) {
    let Some((keys, node, config)) = state
        .lock()
        .await
        .fleet()
        .map(|h| (h.keys.clone(), h.node.clone(), h.config.clone()))
    else {
        return;
    };
    let mut sync = Sync {
        state,
        keys,
        node,
        config,
        published: BTreeMap::new(),
    };
    let mut backoff = BACKOFF_MIN;
    loop {
        let ended = tokio::select! {
            e = sync.session(&mut backoff) => e,
            _ = stop.changed() => return,
        };
        match ended {
            Ended::Resync(why) => {
                tracing::warn!(why, "fleet: reading the fleet state afresh");
                sync.state
                    .lock()
                    .await
                    .record("fleet", json!({"event": "resync", "why": why}));
                continue;
            }
            Ended::Lost(e) => sync.lost(&e).await,
        }
        let until = tokio::time::Instant::now() + backoff;
        backoff = (backoff * 2).min(BACKOFF_MAX);
        loop {
            sync.count_unpublished().await;
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

impl Sync {
    /// The link is down: says so once per outage (status, log, audit).
    async fn lost(&self, e: &FleetError) {
        let message = chain(e);
        let mut s = self.state.lock().await;
        let Some(here) = s.fleet_mut() else { return };
        let was =
            here.link.connected || here.link.unreachable.as_deref() == Some("not connected yet");
        here.link.connected = false;
        if was {
            here.link.since_ms = clock::unix_ms();
        }
        let changed = here.link.unreachable.as_deref() != Some(message.as_str());
        here.link.unreachable = Some(message.clone());
        if was {
            tracing::error!(error = %message, "fleet: etcd is unreachable; enforcing what this host has, retrying");
            s.record("fleet", json!({"event": "unreachable", "error": message}));
        } else if changed {
            tracing::warn!(error = %message, "fleet: etcd still unreachable");
        }
    }

    /// Counts the requests etcd has not seen yet (for `status`).
    async fn count_unpublished(&self) {
        let mut s = self.state.lock().await;
        let views = s.approval_views();
        let Some(here) = s.fleet_mut() else { return };
        here.unpublished = views
            .iter()
            .filter(|(id, v)| {
                self.published
                    .get(id)
                    .and_then(|p| serde_json::from_str::<RequestValue>(p).ok())
                    .is_none_or(|p| p.request != **v)
            })
            .count();
    }

    async fn session(&mut self, backoff: &mut Duration) -> Ended {
        match self.try_session(backoff).await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn try_session(
        &mut self,
        backoff: &mut Duration,
    ) -> Result<std::convert::Infallible, Ended> {
        let mut client = connect(&self.config).await?;
        let ttl = self.config.lease.0.as_secs() as i64;
        let lease = client
            .lease_grant(ttl, None)
            .await
            .map_err(etcd("granting the heartbeat lease"))?
            .id();
        let (mut keeper, mut alive) = client
            .lease_keep_alive(lease)
            .await
            .map_err(etcd("keeping the heartbeat lease"))?;
        let member = Member {
            node: self.node.clone(),
            joined: clock::rfc3339(clock::unix_now_ns()),
        };
        client
            .put(
                self.keys.member(&self.node),
                serde_json::to_vec(&member).expect("json"),
                None,
            )
            .await
            .map_err(etcd("writing this host's member key"))?;
        let revision = self.resync(&mut client).await?;
        self.connected(revision).await;
        *backoff = BACKOFF_MIN;
        self.forget_stale_requests(&mut client).await?;
        self.publish_requests(&mut client).await?;
        self.publish_status(&mut client, lease).await?;

        let from = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut policies = client
            .watch(self.keys.policies(), Some(from.clone()))
            .await
            .map_err(etcd("watching the fleet policies"))?;
        let mut grants = client
            .watch(self.keys.grants(), Some(from))
            .await
            .map_err(etcd("watching the decisions"))?;
        let mut changes = self.state.lock().await.approvals_changes();
        let mut renew = tokio::time::interval(Duration::from_secs((ttl / 3).max(1) as u64));
        let mut status = tokio::time::interval(STATUS_PERIOD);
        status.tick().await;
        loop {
            tokio::select! {
                _ = renew.tick() => keeper.keep_alive().await.map_err(etcd("renewing the heartbeat lease"))?,
                m = alive.message() => match m.map_err(etcd("renewing the heartbeat lease"))? {
                    Some(r) if r.ttl() > 0 => {}
                    _ => return Err(Ended::Lost(FleetError::Invalid("the heartbeat lease lapsed".into()))),
                },
                _ = status.tick() => self.publish_status(&mut client, lease).await?,
                _ = changes.changed() => self.publish_requests(&mut client).await?,
                m = policies.message() => {
                    let r = m.map_err(etcd("watching the fleet policies"))?
                        .ok_or_else(|| Ended::Lost(FleetError::Invalid("the policy watch closed".into())))?;
                    if r.compact_revision() != 0 || r.canceled() {
                        return Err(Ended::Resync(format!(
                            "the policy watch was cancelled (compacted at revision {}: {})",
                            r.compact_revision(), r.cancel_reason()
                        )));
                    }
                    if r.events().is_empty() { continue; }
                    let revision = r.header().map_or(0, |h| h.revision());
                    let events: Vec<(KeyValue, bool)> = r.events().iter()
                        .filter_map(|e| e.kv().map(|kv| (kv.clone(), e.event_type() == EventType::Delete)))
                        .collect();
                    self.policy_events(events, revision).await;
                    self.publish_status(&mut client, lease).await?;
                }
                m = grants.message() => {
                    let r = m.map_err(etcd("watching the decisions"))?
                        .ok_or_else(|| Ended::Lost(FleetError::Invalid("the decision watch closed".into())))?;
                    if r.compact_revision() != 0 || r.canceled() {
                        return Err(Ended::Resync(format!(
                            "the decision watch was cancelled (compacted at revision {}: {})",
                            r.compact_revision(), r.cancel_reason()
                        )));
                    }
                    let puts: Vec<KeyValue> = r.events().iter()
                        .filter(|e| e.event_type() == EventType::Put)
                        .filter_map(|e| e.kv().cloned())
                        .collect();
                    if self.decisions(&puts).await {
                        self.publish_requests(&mut client).await?;
                    }
                }
            }
        }
    }

    /// The link is up (again): says so in status and the audit log.
    async fn connected(&self, revision: i64) {
        let mut s = self.state.lock().await;
        let Some(here) = s.fleet_mut() else { return };
        let was_down = !here.link.connected;
        here.link.connected = true;
        here.link.unreachable = None;
        if was_down {
            here.link.since_ms = clock::unix_ms();
            let endpoints = here.config.endpoints();
            tracing::info!(revision, node = %self.node, "fleet: connected to etcd");
            s.record(
                "fleet",
                json!({"event": "connected", "node": self.node, "endpoints": endpoints, "revision": revision}),
            );
        }
    }

    /// A full read of the fleet policies and this host's decisions, applied;
    /// returns the revision read at.
    async fn resync(&mut self, client: &mut Client) -> Result<i64, Ended> {
        let resp = client
            .get(self.keys.policies(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(etcd("reading the fleet policies"))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut target = FleetPolicies {
            revision,
            ..Default::default()
        };
        let mut refused = Vec::new();
        for kv in resp.kvs() {
            match self.policy_value(kv) {
                Ok((name, p)) => {
                    target.policies.insert(name, p);
                }
                Err(e) => refused.push(e),
            }
        }
        {
            let mut s = self.state.lock().await;
            for e in refused {
                refuse_value(&mut s, e);
            }
            apply_target(&mut s, &self.keys, &target, "fleet policies read");
        }
        let resp = client
            .get(
                self.keys.grants(),
                Some(GetOptions::new().with_prefix().with_revision(revision)),
            )
            .await
            .map_err(etcd("reading the decisions"))?;
        let mine: Vec<KeyValue> = resp
            .kvs()
            .iter()
            .filter(|kv| {
                kv.key_str()
                    .ok()
                    .and_then(|k| self.keys.grant_of(k))
                    .is_some_and(|g| g.node == self.node)
            })
            .cloned()
            .collect();
        {
            // Decisions no longer in etcd need not be remembered.
            let mut s = self.state.lock().await;
            if let Some(here) = s.fleet_mut() {
                let present: Vec<String> = mine
                    .iter()
                    .filter_map(|kv| kv.key_str().ok().map(str::to_owned))
                    .collect();
                here.applied.decisions.retain(|k, _| present.contains(k));
            }
        }
        self.decisions(&mine).await;
        Ok(revision)
    }

    /// `P/policies/NAME` read: its name and policy, or why not.
    fn policy_value(&self, kv: &KeyValue) -> Result<(String, FleetPolicy), ValueError> {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let revision = kv.mod_revision();
        let name = self.keys.policy_name(&key).ok_or_else(|| {
            ValueError::new(
                &key,
                revision,
                "not a policy name (letters, digits, '-', '_', '.')",
            )
        })?;
        let text = kv
            .value_str()
            .map_err(|_| ValueError::new(&key, revision, "the value is not UTF-8 text"))?;
        Ok((
            name.to_owned(),
            FleetPolicy {
                text: text.to_owned(),
                revision,
            },
        ))
    }

    /// Watched policy changes (`(kv, deleted)`), applied as one change.
    async fn policy_events(&self, events: Vec<(KeyValue, bool)>, revision: i64) {
        let mut s = self.state.lock().await;
        let Some(here) = s.fleet() else { return };
        let mut target = here.applied.clone();
        target.revision = revision;
        let mut refused = Vec::new();
        let mut gone = Vec::new();
        for (kv, deleted) in events {
            if deleted {
                if let Some(name) = self.keys.policy_name(&String::from_utf8_lossy(kv.key())) {
                    target.policies.remove(name);
                }
                gone.push(String::from_utf8_lossy(kv.key()).into_owned());
                continue;
            }
            match self.policy_value(&kv) {
                Ok((name, p)) => {
                    target.policies.insert(name, p);
                }
                Err(e) => refused.push(e),
            }
        }
        if let Some(here) = s.fleet_mut() {
            for key in gone {
                here.refused.remove(&key);
            }
        }
        for e in refused {
            refuse_value(&mut s, e);
        }
        apply_target(&mut s, &self.keys, &target, "fleet policy changed");
    }

    /// Decisions on this host's requests (`P/grants/USER/NODE/ID`), each
    /// applied once. Returns whether one was handled.
    async fn decisions(&self, kvs: &[KeyValue]) -> bool {
        let mut handled = false;
        let mut s = self.state.lock().await;
        for kv in kvs {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let Some(grant) = self.keys.grant_of(&key) else {
                continue;
            };
            if grant.node != self.node {
                continue;
            }
            let revision = kv.mod_revision();
            let Some(here) = s.fleet_mut() else {
                return false;
            };
            if here.applied.decisions.get(&key) == Some(&revision) {
                continue;
            }
            here.applied.decisions.insert(key.clone(), revision);
            handled = true;
            decide(&mut s, &key, revision, &grant.user, grant.id, kv.value());
        }
        if handled && let Some(here) = s.fleet() {
            here.save();
        }
        handled
    }

    /// Removes the request keys of this host that its store no longer
    /// holds (finished and forgotten while etcd was away, or before a
    /// restart).
    async fn forget_stale_requests(&mut self, client: &mut Client) -> Result<(), Ended> {
        let resp = client
            .get(
                self.keys.node_requests(&self.node),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(etcd("reading this host's requests"))?;
        let views = self.state.lock().await.approval_views();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match self.keys.request_of(&key) {
                Some((_, id)) if views.contains_key(&id) => {
                    self.published
                        .insert(id, String::from_utf8_lossy(kv.value()).into_owned());
                }
                _ => {
                    client
                        .delete(key.as_bytes(), None)
                        .await
                        .map_err(etcd("removing a finished request"))?;
                }
            }
        }
        Ok(())
    }

    /// Writes each request whose value changed since it was last written;
    /// removes those the store forgot.
    async fn publish_requests(&mut self, client: &mut Client) -> Result<(), Ended> {
        let (views, confirmations) = {
            let s = self.state.lock().await;
            let confirmations = s
                .fleet()
                .map(|h| h.confirmations.clone())
                .unwrap_or_default();
            (s.approval_views(), confirmations)
        };
        for (id, view) in &views {
            let value = RequestValue {
                node: self.node.clone(),
                request: view.clone(),
                fleet: confirmations.get(id).cloned(),
            };
            let text = serde_json::to_string(&value).expect("json");
            if self.published.get(id) == Some(&text) {
                continue;
            }
            client
                .put(self.keys.request(&self.node, *id), text.as_bytes(), None)
                .await
                .map_err(etcd("publishing a request"))?;
            self.published.insert(*id, text);
        }
        let forgotten: Vec<u32> = self
            .published
            .keys()
            .filter(|id| !views.contains_key(id))
            .copied()
            .collect();
        for id in forgotten {
            client
                .delete(self.keys.request(&self.node, id), None)
                .await
                .map_err(etcd("removing a finished request"))?;
            self.published.remove(&id);
        }
        if let Some(here) = self.state.lock().await.fleet_mut() {
            here.unpublished = 0;
            here.confirmations.retain(|id, _| views.contains_key(id));
        }
        Ok(())
    }

    /// Writes the host's status under its lease.
    async fn publish_status(&self, client: &mut Client, lease: i64) -> Result<(), Ended> {
        let status = match self.state.lock().await.node_status() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %chain(&e), "fleet: cannot read this host's status");
                return Ok(());
            }
        };
        client
            .put(
                self.keys.node(&self.node),
                serde_json::to_vec(&status).expect("json"),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map_err(etcd("writing this host's status"))?;
        Ok(())
    }
}

/// Refuses a value that cannot be used: its key and revision in the
/// status and the audit log; the state in force stays.
fn refuse_value(s: &mut State, e: ValueError) {
    let message = e.to_string();
    let Some(here) = s.fleet_mut() else { return };
    if here.refused.get(&e.key) == Some(&message) {
        return;
    }
    here.refused.insert(e.key.clone(), message.clone());
    tracing::error!(key = %e.key, revision = e.revision, error = %e.message, "fleet: value refused");
    s.record(
        "fleet",
        json!({"event": "value_refused", "key": e.key, "revision": e.revision, "error": e.message}),
    );
}

/// Switches to the fleet policies of `target`: all at once when they
/// check together; otherwise one name at a time, each refused one named
/// (its key, revision and error) while the others apply. Keeps what was
/// applied on disk.
fn apply_target(s: &mut State, keys: &Keys, target: &FleetPolicies, why: &str) {
    let Some(here) = s.fleet() else { return };
    let current = here.applied.clone();
    let changed = current.changed(target);
    if !changed.is_empty() {
        let by = |names: Vec<&String>| {
            json!({"fleet": names.iter().map(|n| json!({
                "key": keys.policy(n),
                "revision": target.policies.get(*n).map_or(target.revision, |p| p.revision),
            })).collect::<Vec<_>>()})
        };
        match s.fleet_apply(target, why, by(changed.iter().collect())) {
            Ok(epoch) => {
                for name in &changed {
                    applied(s, keys, target, name, epoch);
                }
            }
            Err(e) if changed.len() == 1 => {
                let name = changed.iter().next().expect("one");
                refused(s, keys, target, name, &chain(&e));
            }
            Err(_) => {
                for name in &changed {
                    let Some(here) = s.fleet() else { return };
                    let candidate = here.applied.with_from(target, name);
                    match s.fleet_apply(&candidate, why, by(vec![name])) {
                        Ok(epoch) => applied(s, keys, target, name, epoch),
                        Err(e) => refused(s, keys, target, name, &chain(&e)),
                    }
                }
            }
        }
    }
    if let Some(here) = s.fleet_mut() {
        here.applied.revision = target.revision;
        // What was refused of the state kept on disk at start is
        // superseded: each policy now stands or is refused on its own.
        here.refused.remove(&keys.policies());
        here.save();
    }
}

fn applied(s: &mut State, keys: &Keys, target: &FleetPolicies, name: &str, epoch: u64) {
    let key = keys.policy(name);
    if let Some(here) = s.fleet_mut() {
        here.refused.remove(&key);
    }
    let (event, revision, sha) = match target.policies.get(name) {
        Some(p) => ("policy_applied", p.revision, Some(p.sha256())),
        None => ("policy_removed", target.revision, None),
    };
    tracing::info!(key, revision, epoch, "fleet: {}", event.replace('_', " "));
    s.record(
        "fleet",
        json!({"event": event, "key": key, "revision": revision, "sha256": sha, "epoch": epoch}),
    );
}

fn refused(s: &mut State, keys: &Keys, target: &FleetPolicies, name: &str, error: &str) {
    let key = keys.policy(name);
    let revision = target
        .policies
        .get(name)
        .map_or(target.revision, |p| p.revision);
    let message = format!("{key} (revision {revision}): refused: {error}");
    let Some(here) = s.fleet_mut() else { return };
    if here.refused.get(&key) == Some(&message) {
        return;
    }
    here.refused.insert(key.clone(), message);
    tracing::error!(
        key,
        revision,
        error,
        "fleet: policy refused on this host; the one in force stays"
    );
    s.record(
        "fleet",
        json!({"event": "policy_refused", "key": key, "revision": revision, "error": error}),
    );
}

/// Applies one decision on this host's request `id`, written by `user` at
/// `key` (revision `revision`), and keeps the answer to publish.
fn decide(s: &mut State, key: &str, revision: i64, user: &str, id: u32, value: &[u8]) {
    let d = match DecisionValue::parse(key, revision, value) {
        Ok(d) => d,
        Err(e) => return refuse_value(s, e),
    };
    let decision = match d.decision.as_str() {
        "approve" => Decision::Approve,
        "deny" => Decision::Deny,
        _ => Decision::Revoke,
    };
    let now = clock::unix_ms();
    let mut answer = Confirmation {
        state: "applied".into(),
        key: key.to_owned(),
        revision,
        time: crate::approvals::rfc3339_ms(now),
        by: user.to_owned(),
        why: None,
    };
    let fleet = json!({"key": key, "revision": revision});
    let length = d.expires_ms.map_or(Duration::ZERO, |e| {
        Duration::from_millis(e.saturating_sub(now))
    });
    let outcome = if decision == Decision::Approve && length < Duration::from_secs(1) {
        let why = "the grant ended before it reached this host: not applied".to_owned();
        s.record(
            "approval",
            json!({"event": "refused", "op": "approval_approve", "id": id,
                   "by": Person::etcd(user), "why": why, "fleet": fleet}),
        );
        Err(why)
    } else {
        s.fleet_decide(
            id,
            decision,
            length,
            d.reason.as_deref(),
            Person::etcd(user),
            fleet,
        )
        .map_err(|r| r.1)
    };
    match outcome {
        Ok(_) => tracing::info!(id, by = user, key, "fleet: decision applied"),
        Err(why) => {
            tracing::warn!(id, by = user, key, why, "fleet: decision refused");
            answer.state = "refused".into();
            answer.why = Some(why);
        }
    }
    if let Some(here) = s.fleet_mut() {
        here.confirmations.insert(id, answer);
    }
}
