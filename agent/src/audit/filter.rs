//! Which records to show: `geowall log tail`'s filters (`--denied`,
//! `--since`, `--policy`, `--region`, `--job`, `--comm`, `--dest`,
//! `--name`), read against records as written.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::Value;
use thiserror::Error;

use crate::{
    dns::pattern::NamePattern,
    vocab::{clock as time, glob::glob_match},
};

/// Which records to show.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only denials (`deny` and `would_deny`).
    pub denied: bool,
    /// Only records at or after this Unix time (ns).
    pub since_ns: Option<i128>,
    pub policy: Option<String>,
    /// Region tags, any of which the destination must carry (upper case;
    /// groups expanded).
    pub regions: Option<Vec<String>>,
    /// A job name (`name*` matches a prefix).
    pub job: Option<String>,
    /// A process name (`name*` matches a prefix).
    pub comm: Option<String>,
    pub dest: Option<IpNetwork>,
    /// A name the job resolved the destination from (a flow), or asked
    /// for (a `dns` record): exact or `*.suffix`.
    pub name: Option<NamePattern>,
}

/// Region tags for `--region`: a tag, a group (`EU`, `EEA`), or several,
/// comma-separated.
pub fn region_set(arg: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in arg.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match crate::regions::groups::members(part) {
            Some(members) => out.extend(members.iter().map(|m| m.to_string())),
            None => out.push(part.to_owned()),
        }
    }
    out
}

/// A `--since` that is neither a duration nor a time.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("--since '{0}': expected a duration (10m, 2h, 1d) or an RFC 3339 time")]
pub struct BadSince(String);

/// `10m`, `2h`, `1d` ago, or an RFC 3339 time: Unix ns.
pub fn parse_since(arg: &str, now_ns: i128) -> Result<i128, BadSince> {
    if let Some(t) = time::parse_rfc3339(arg) {
        return Ok(t);
    }
    crate::vocab::units::parse_duration(arg)
        .map(|d| now_ns - d.as_nanos() as i128)
        .map_err(|_| BadSince(arg.to_owned()))
}

fn dst_of(rec: &Value) -> Option<IpAddr> {
    rec["dst"].as_str()?.parse().ok()
}

fn in_net(net: &IpNetwork, addr: IpAddr) -> bool {
    if net.contains(addr) {
        return true;
    }
    // An IPv4-mapped destination is judged (and matched) as IPv4.
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .is_some_and(|v4| net.contains(IpAddr::V4(v4))),
        IpAddr::V4(_) => false,
    }
}

impl Filter {
    /// Whether a filter about flows is set (other records then hide).
    fn about_flows(&self) -> bool {
        self.denied
            || self.policy.is_some()
            || self.regions.is_some()
            || self.job.is_some()
            || self.comm.is_some()
            || self.dest.is_some()
            || self.name.is_some()
    }

    /// Whether one of `rec`'s names (a flow's `names`, a query's
    /// `question` and `names`) matches `--name`.
    fn name_matches(&self, rec: &Value) -> bool {
        let Some(pattern) = &self.name else {
            return true;
        };
        let canonical = |n: &str| n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase();
        let names = rec["names"].as_array().into_iter().flatten();
        names
            .chain(std::iter::once(&rec["question"]))
            .filter_map(Value::as_str)
            .any(|n| pattern.matches(&canonical(n)))
    }

    /// A `dns` record under `--name`: shown when the name matches and the
    /// other filters that apply to a query (`--denied`, `--policy`,
    /// `--job`, `--comm`) do.
    fn query_matches(&self, rec: &Value) -> bool {
        if self.name.is_none() || self.regions.is_some() || self.dest.is_some() {
            return false;
        }
        let glob = |want: &Option<String>, key: &str| {
            want.as_ref()
                .is_none_or(|w| rec[key].as_str().is_some_and(|v| glob_match(w, v)))
        };
        (!self.denied || rec["verdict"].as_str().is_some_and(|v| v != "allow"))
            && self
                .policy
                .as_ref()
                .is_none_or(|p| rec["policy"].as_str() == Some(p.as_str()))
            && glob(&self.job, "job")
            && glob(&self.comm, "comm")
            && self.name_matches(rec)
    }

    fn flow_matches(&self, rec: &Value) -> bool {
        if !self.name_matches(rec) {
            return false;
        }
        if let Some(p) = &self.policy
            && rec["policy"].as_str() != Some(p.as_str())
        {
            return false;
        }
        if let Some(j) = &self.job
            && !rec["job"].as_str().is_some_and(|job| glob_match(j, job))
        {
            return false;
        }
        if let Some(c) = &self.comm
            && !rec["comm"].as_str().is_some_and(|comm| glob_match(c, comm))
        {
            return false;
        }
        if let Some(net) = &self.dest
            && !dst_of(rec).is_some_and(|a| in_net(net, a))
        {
            return false;
        }
        if let Some(regions) = &self.regions {
            let tags = rec["tags"].as_array();
            let hit = tags.is_some_and(|tags| {
                tags.iter()
                    .filter_map(Value::as_str)
                    .any(|t| regions.iter().any(|r| r.eq_ignore_ascii_case(t)))
            }) || (tags.is_none_or(Vec::is_empty)
                && regions.iter().any(|r| r.eq_ignore_ascii_case("untagged")));
            if !hit {
                return false;
            }
        }
        true
    }

    /// Whether `rec` is to be shown.
    pub fn matches(&self, rec: &Value) -> bool {
        if let Some(since) = self.since_ns {
            let t = rec["time"].as_str().and_then(time::parse_rfc3339);
            if t.is_none_or(|t| t < since) {
                return false;
            }
        }
        match rec["kind"].as_str() {
            None => {
                (!self.denied || matches!(rec["verdict"].as_str(), Some("deny" | "would_deny")))
                    && self.flow_matches(rec)
            }
            // Lost events may hide any decision: shown unless another
            // policy's.
            Some("lost") => self
                .policy
                .as_ref()
                .is_none_or(|p| rec["policy"].is_null() || rec["policy"].as_str() == Some(p)),
            Some("allowed") => !self.denied && self.flow_matches(rec),
            Some("dns") if self.name.is_some() => self.query_matches(rec),
            Some(_) => !self.about_flows(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn flow(verdict: &str, policy: &str, dst: &str, tags: &[&str]) -> Value {
        json!({"v": 2, "time": "2026-11-01T12:00:00.123456789Z", "seq": 1, "verdict": verdict,
               "reason": "region", "policy": policy, "tags": tags, "dst": dst, "dport": 443,
               "proto": "tcp", "pid": 42, "comm": "curl", "job": "etl-1", "uid": 0, "user": "root",
               "cgroup": "/x/etl-1", "prefix": "127.20.0.0/16"})
    }

    #[test]
    fn filters() {
        let us = flow("deny", "eu", "127.20.0.1", &["US"]);
        let de = flow("allow", "eu", "127.30.0.1", &["DE"]);
        let v6 = flow("would_deny", "audit", "::ffff:10.1.2.3", &[]);
        let lost = json!({"v": 2, "time": "2026-11-01T12:00:00Z", "seq": 2, "kind": "lost", "policy": "eu", "count": 3});
        let agent = json!({"v": 2, "time": "2026-11-01T12:00:00Z", "seq": 3, "kind": "agent", "event": "start"});
        let f = Filter::default();
        assert!([&us, &de, &v6, &lost, &agent].iter().all(|r| f.matches(r)));
        let denied = Filter {
            denied: true,
            ..Filter::default()
        };
        assert!(denied.matches(&us) && denied.matches(&v6) && !denied.matches(&de));
        assert!(denied.matches(&lost) && !denied.matches(&agent));
        let eu = Filter {
            regions: Some(region_set("EU")),
            ..Filter::default()
        };
        assert!(eu.matches(&de) && !eu.matches(&us));
        let untagged = Filter {
            regions: Some(region_set("untagged")),
            ..Filter::default()
        };
        assert!(untagged.matches(&v6) && !untagged.matches(&us));
        let net = Filter {
            dest: Some("10.0.0.0/8".parse().unwrap()),
            ..Filter::default()
        };
        assert!(net.matches(&v6) && !net.matches(&us));
        let job = Filter {
            job: Some("etl*".into()),
            comm: Some("curl".into()),
            policy: Some("audit".into()),
            ..Filter::default()
        };
        assert!(job.matches(&v6) && !job.matches(&us));
        assert!(!job.matches(&lost), "another policy's losses");
        let since = Filter {
            since_ns: Some(time::parse_rfc3339("2026-11-01T12:00:00.2Z").unwrap()),
            ..Filter::default()
        };
        assert!(!since.matches(&us));
        assert_eq!(
            parse_since("10m", 1_000_000_000_000),
            Ok(1_000_000_000_000 - 600_000_000_000)
        );
        assert!(parse_since("yesterday", 0).is_err());
    }

    #[test]
    fn names() {
        let mut named = flow("deny", "eu", "127.20.0.1", &["US"]);
        named["names"] = json!(["api.partner.test", "edge.cdn.test"]);
        let bare = flow("deny", "eu", "127.20.0.2", &["US"]);
        let query = json!({"v": 2, "time": "2026-11-01T12:00:00Z", "seq": 4, "kind": "dns",
                           "verdict": "deny", "policy": "eu", "job": "etl-1", "comm": "dig",
                           "question": "Tunnel.Partner.test.", "qtype": "A"});
        let agent = json!({"v": 2, "time": "2026-11-01T12:00:00Z", "seq": 3, "kind": "agent", "event": "start"});
        let by = |p: &str| Filter {
            name: Some(NamePattern::parse(p).unwrap()),
            ..Filter::default()
        };
        assert!(by("api.partner.test").matches(&named));
        assert!(by("*.cdn.test").matches(&named), "a name of the chain");
        assert!(!by("*.partner.test").matches(&bare), "never resolved");
        assert!(!by("partner.test").matches(&named), "exact means exact");
        assert!(
            by("*.partner.test").matches(&query),
            "a query's question, any case"
        );
        assert!(!by("*.partner.test").matches(&agent));
        let denied_other_job = Filter {
            denied: true,
            job: Some("web*".into()),
            ..by("*.partner.test")
        };
        assert!(!denied_other_job.matches(&query));
        let in_us = Filter {
            regions: Some(region_set("US")),
            ..by("*.partner.test")
        };
        assert!(in_us.matches(&named) && !in_us.matches(&query));
    }
}
