//! Policies: which regions a workload may reach, checked before it goes live.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use thiserror::Error;

use crate::{
    config::{Action, Inbound, LogAllowed, LogDns, Mode},
    dns::NamePattern,
    regions::{LOCAL, Prefix, countries, groups, suggest},
    vocab::glob::glob_match,
};

/// A policy, validated and resolved against the loaded map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPolicy {
    pub name: String,
    /// Where it is defined (`file:line`).
    pub place: String,
    pub description: Option<String>,
    pub mode: Mode,
    /// Concrete region tags allowed (groups expanded).
    pub allowed: BTreeSet<String>,
    /// Concrete region tags carved out: a destination carrying one is denied.
    pub denied: BTreeSet<String>,
    /// The allow and deny lists as written, for display.
    pub allow_written: Vec<String>,
    pub deny_written: Vec<String>,
    pub untagged: Action,
    pub local: Action,
    pub rules: Vec<CompiledRule>,
    /// Absolute cgroup paths bound to this policy by the config.
    pub cgroups: Vec<PathBuf>,
    /// systemd unit names or globs bound to this policy.
    pub units: Vec<String>,
    pub log_allowed: LogAllowed,
    pub raw_sockets: Action,
    pub ping: Action,
    /// A denial may be approved (a just-in-time grant).
    pub approvable: bool,
    /// The longest grant an approval may give.
    pub max_grant: std::time::Duration,
    /// What the policy says about names.
    pub names: NamesPolicy,
    /// Connections to the policy's listeners.
    pub inbound: Inbound,
}

/// A policy's keys about names (DNS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamesPolicy {
    /// `allow_names`: an address the job resolved from one of these is
    /// allowed whatever its regions.
    pub allow: Vec<NamePattern>,
    /// `deny_names`: queries for these are answered NXDOMAIN.
    pub deny: Vec<NamePattern>,
    /// `resolved_only`: what the job did not resolve is denied.
    pub resolved_only: bool,
    pub log_dns: LogDns,
    /// Distinct names per minute a job may query (None: no limit).
    pub max_names_per_minute: Option<u32>,
}

impl NamesPolicy {
    /// Whether `name` (canonical) is allowed by `allow_names`.
    pub fn allows(&self, name: &str) -> bool {
        self.allow.iter().any(|p| p.matches(name))
    }

    /// Whether `name` (canonical) is denied by `deny_names`.
    pub fn denies(&self, name: &str) -> bool {
        self.deny.iter().any(|p| p.matches(name))
    }
}

/// A CIDR rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRule {
    pub prefix: Prefix,
    /// IP protocol number, 0 = any.
    pub proto: u8,
    pub port_lo: u16,
    pub port_hi: u16,
    pub action: Action,
    /// The rule as written (`10.0.0.0/8 tcp/5432 allow`), canonical form.
    pub text: String,
}

impl CompiledRule {
    /// The canonical text of a rule.
    pub fn describe(prefix: &Prefix, proto: u8, lo: u16, hi: u16, action: Action) -> String {
        let proto_name = match proto {
            0 => "any",
            6 => "tcp",
            17 => "udp",
            _ => "proto",
        };
        let ports = match (lo, hi) {
            (0, u16::MAX) => String::new(),
            (a, b) if a == b => format!("/{a}"),
            (a, b) => format!("/{a}-{b}"),
        };
        let action = match action {
            Action::Allow => "allow",
            Action::Deny => "deny",
        };
        if proto == 0 && ports.is_empty() {
            format!("{prefix} {action}")
        } else {
            format!("{prefix} {proto_name}{ports} {action}")
        }
    }
}

impl CompiledPolicy {
    /// Whether a destination whose tags are `tags` is allowed (`tags` empty:
    /// untagged; exactly `local`: a local destination). A tag in the deny
    /// set wins over any allowed tag.
    pub fn allows(&self, tags: &[String]) -> bool {
        match tags {
            [] => self.untagged == Action::Allow,
            [only] if only == LOCAL => self.local == Action::Allow,
            _ => {
                tags.iter().any(|t| self.allowed.contains(t))
                    && !tags.iter().any(|t| self.denied.contains(t))
            }
        }
    }

    /// The allowed tags after the carve-outs (what `policy check` shows).
    pub fn effective_allowed(&self) -> impl Iterator<Item = &String> {
        self.allowed.iter().filter(|t| !self.denied.contains(*t))
    }

    /// The rules that apply to every address of `prefix`, in the order the
    /// kernel tries them: most specific CIDR first, then file order.
    pub fn rules_covering(&self, prefix: &Prefix) -> Vec<&CompiledRule> {
        let mut applying: Vec<(usize, &CompiledRule)> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.prefix.contains(prefix))
            .collect();
        applying.sort_by_key(|(i, r)| (std::cmp::Reverse(r.prefix.len()), *i));
        applying.into_iter().map(|(_, r)| r).collect()
    }
}

/// Cloud providers whose region names a policy may write before the map is
/// loaded (the form is checked; the map says which regions exist).
const CLOUD_PROVIDERS: &[&str] = &["aws", "gcp", "azure"];

/// An allow/deny entry that stands for no region.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResolveError {
    #[error("group cycle: {}", .0.join(" → "))]
    GroupCycle(Vec<String>),
    /// A member of user group `group` does not resolve.
    #[error("in group '{group}'")]
    InGroup {
        group: String,
        #[source]
        source: Box<ResolveError>,
    },
    #[error("'local' is not a region list entry: set `local = \"allow\"` instead")]
    Local,
    #[error("'{0}' is not a cloud region name (like aws:eu-west-1 or aws:eu-*)")]
    NotCloud(String),
    #[error("'{0}' matches no cloud region the loaded map sources tag")]
    NoCloudMatch(String),
    /// `hint` is what follows the name: `" (did you mean 'DE', Germany?)"`.
    #[error("unknown region '{token}'{hint}")]
    Unknown { token: String, hint: String },
}

/// Resolves allow/deny entries: countries, built-in groups, user-defined
/// groups, cloud regions and cloud-region globs (`aws:eu-*`).
pub struct Resolver<'a> {
    /// Tags the loaded map sources use (cloud regions are only known through
    /// them); `None` before the map is read: cloud regions are checked for
    /// their form only.
    pub map_tags: Option<&'a BTreeSet<String>>,
    /// User-defined groups: name → members as written.
    pub groups: &'a BTreeMap<String, Vec<String>>,
}

impl Resolver<'_> {
    /// The concrete tags one entry stands for.
    pub fn resolve(&self, token: &str) -> Result<Vec<String>, ResolveError> {
        self.resolve_in(token, &mut Vec::new())
    }

    fn resolve_in(
        &self,
        token: &str,
        stack: &mut Vec<String>,
    ) -> Result<Vec<String>, ResolveError> {
        if let Some(members) = groups::members(token) {
            return Ok(members.into_iter().map(str::to_owned).collect());
        }
        if let Some((name, members)) = self.user_group(token) {
            if stack.iter().any(|s| s == name) {
                stack.push(name.to_owned());
                return Err(ResolveError::GroupCycle(stack.clone()));
            }
            stack.push(name.to_owned());
            let mut out = Vec::new();
            for m in members {
                let tags = self
                    .resolve_in(m, stack)
                    .map_err(|e| ResolveError::InGroup {
                        group: name.to_owned(),
                        source: Box::new(e),
                    })?;
                out.extend(tags);
            }
            stack.pop();
            out.sort();
            out.dedup();
            return Ok(out);
        }
        let upper = token.to_ascii_uppercase();
        if token.len() == 2 && countries::name(&upper).is_some() {
            return Ok(vec![upper]);
        }
        if token == LOCAL {
            return Err(ResolveError::Local);
        }
        if token.contains(':') {
            return self.cloud(token);
        }
        Err(self.unknown_region(token))
    }

    fn user_group(&self, token: &str) -> Option<(&str, &Vec<String>)> {
        self.groups
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(token))
            .map(|(name, members)| (name.as_str(), members))
    }

    fn cloud(&self, token: &str) -> Result<Vec<String>, ResolveError> {
        let is_glob = token.contains(['*', '?']);
        let Some(map_tags) = self.map_tags else {
            let provider = token.split_once(':').map(|(p, _)| p).unwrap_or_default();
            let form_ok = if is_glob {
                CLOUD_PROVIDERS.contains(&provider)
            } else {
                matches!(
                    crate::regions::kind(token),
                    Some(crate::regions::TagKind::Cloud { .. })
                )
            };
            return if form_ok {
                Ok(vec![token.to_owned()])
            } else {
                Err(ResolveError::NotCloud(token.to_owned()))
            };
        };
        let cloud_tags = || map_tags.iter().filter(|t| t.contains(':'));
        if is_glob {
            let matched: Vec<String> = cloud_tags()
                .filter(|t| glob_match(token, t))
                .cloned()
                .collect();
            if matched.is_empty() {
                return Err(ResolveError::NoCloudMatch(token.to_owned()));
            }
            return Ok(matched);
        }
        if map_tags.contains(token) {
            return Ok(vec![token.to_owned()]);
        }
        let hint = suggest(token, cloud_tags().map(String::as_str))
            .map(|s| format!(" (did you mean '{s}'?)"))
            .unwrap_or_default();
        Err(ResolveError::Unknown {
            token: token.to_owned(),
            hint: format!(": no loaded map source tags it{hint}"),
        })
    }

    fn unknown_region(&self, token: &str) -> ResolveError {
        ResolveError::Unknown {
            token: token.to_owned(),
            hint: self.unknown_hint(token),
        }
    }

    /// What follows an unknown region's name: the likeliest meant, or what
    /// an entry can be.
    fn unknown_hint(&self, token: &str) -> String {
        // A country's name written for its code is the likeliest slip.
        if let Some((code, name)) = countries::COUNTRIES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(token))
        {
            return format!(" (did you mean '{code}', {name}?)");
        }
        let candidates = countries::COUNTRIES
            .iter()
            .map(|(c, _)| *c)
            .chain(groups::NAMES.iter().copied())
            .chain(self.groups.keys().map(String::as_str));
        let by_code = suggest(token, candidates);
        let by_name = suggest(token, countries::COUNTRIES.iter().map(|(_, n)| *n))
            .and_then(|n| countries::COUNTRIES.iter().find(|(_, cn)| *cn == n))
            .map(|(c, _)| *c);
        match by_code.or(by_name) {
            Some(s) => {
                let name = countries::name(s)
                    .map(|n| format!(", {n}"))
                    .unwrap_or_default();
                format!(" (did you mean '{s}'{name}?)")
            }
            None => format!(
                ": expected a country code (DE), a group ({}) or a cloud region (aws:eu-west-1)",
                groups::NAMES.join(", ")
            ),
        }
    }
}

/// Resolves one allow-list entry against the built-in groups only (no user
/// groups).
pub fn resolve_region(
    token: &str,
    map_tags: Option<&BTreeSet<String>>,
) -> Result<Vec<String>, ResolveError> {
    let none = BTreeMap::new();
    Resolver {
        map_tags,
        groups: &none,
    }
    .resolve(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::error::chain;

    fn tags(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn resolves_countries_groups_and_cloud_regions() {
        let map = tags(&["DE", "aws:eu-west-1"]);
        assert_eq!(resolve_region("de", Some(&map)).unwrap(), ["DE"]);
        assert_eq!(resolve_region("EU", Some(&map)).unwrap().len(), 27);
        assert_eq!(
            resolve_region("aws:eu-west-1", Some(&map)).unwrap(),
            ["aws:eu-west-1"]
        );
    }

    #[test]
    fn unknown_regions_get_suggestions() {
        let map = tags(&["aws:eu-west-1"]);
        let e = resolve_region("Germany", Some(&map))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unknown region 'Germany' (did you mean 'DE', Germany?)");
        let e = resolve_region("EUU", Some(&map)).unwrap_err().to_string();
        assert!(e.contains("did you mean 'EU'"), "{e}");
        let e = resolve_region("aws:eu-west-9", Some(&map))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean 'aws:eu-west-1'"), "{e}");
        let e = resolve_region("QQQQQQQ", Some(&map))
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a country code"), "{e}");
        assert!(resolve_region("local", Some(&map)).is_err());
    }

    fn policy(rules: Vec<CompiledRule>) -> CompiledPolicy {
        CompiledPolicy {
            name: "p".into(),
            place: "p.toml".into(),
            description: None,
            mode: Mode::Enforce,
            allowed: tags(&["DE", "IE", "aws:eu-west-1"]),
            denied: tags(&["aws:eu-west-1"]),
            allow_written: vec!["DE".into()],
            deny_written: vec![],
            untagged: Action::Deny,
            local: Action::Allow,
            rules,
            cgroups: vec![],
            units: vec![],
            log_allowed: LogAllowed::None,
            raw_sockets: Action::Deny,
            ping: Action::Deny,
            approvable: false,
            max_grant: std::time::Duration::from_secs(4 * 3600),
            names: NamesPolicy::default(),
            inbound: Inbound::default(),
        }
    }

    #[test]
    fn rule_order_is_most_specific_then_file_order() {
        let r = |c: &str, proto: u8, lo: u16, hi: u16, a: Action| CompiledRule {
            prefix: c.parse().unwrap(),
            proto,
            port_lo: lo,
            port_hi: hi,
            action: a,
            text: String::new(),
        };
        let p = policy(vec![
            r("10.0.0.0/8", 6, 5432, 5432, Action::Allow),
            r("10.0.0.0/8", 0, 0, 65535, Action::Deny),
            r("10.1.0.0/16", 0, 0, 65535, Action::Allow),
        ]);
        // What the kernel does with the list: the first that matches.
        let action = |addr: &str, port: u16| {
            let host = Prefix::host(addr.parse().unwrap());
            p.rules_covering(&host)
                .into_iter()
                .find(|r| (r.proto == 0 || r.proto == 6) && (r.port_lo..=r.port_hi).contains(&port))
                .map(|r| r.action)
        };
        assert_eq!(action("10.2.0.1", 5432), Some(Action::Allow));
        assert_eq!(action("10.2.0.1", 80), Some(Action::Deny));
        assert_eq!(action("10.1.0.1", 80), Some(Action::Allow));
        assert_eq!(action("11.0.0.1", 80), None);
        let inner: Vec<_> = p
            .rules_covering(&"10.1.0.0/16".parse().unwrap())
            .iter()
            .map(|r| r.prefix.to_string())
            .collect();
        assert_eq!(inner, ["10.1.0.0/16", "10.0.0.0/8", "10.0.0.0/8"]);
    }

    #[test]
    fn allows_by_tag_untagged_and_local() {
        let p = policy(vec![]);
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(p.allows(&v(&["DE"])));
        assert!(p.allows(&v(&["DE", "aws:eu-central-1"])));
        assert!(!p.allows(&v(&["US"])));
        assert!(!p.allows(&[]));
        assert!(p.allows(&v(&["local"])));
        // A carved-out tag wins over an allowed one.
        assert!(p.allows(&v(&["IE"])));
        assert!(!p.allows(&v(&["IE", "aws:eu-west-1"])));
        assert_eq!(
            p.effective_allowed().cloned().collect::<Vec<_>>(),
            ["DE", "IE"]
        );
    }

    #[test]
    fn user_groups_nest_and_cycles_are_named() {
        let map = tags(&["aws:eu-west-1", "aws:eu-central-1", "aws:us-east-1"]);
        let mut groups = BTreeMap::new();
        groups.insert("nordics".to_string(), vec!["DK".into(), "SE".into()]);
        groups.insert(
            "ours".to_string(),
            vec!["nordics".into(), "aws:eu-*".into()],
        );
        groups.insert("a".to_string(), vec!["b".into()]);
        groups.insert("b".to_string(), vec!["a".into()]);
        let r = Resolver {
            map_tags: Some(&map),
            groups: &groups,
        };
        assert_eq!(
            r.resolve("ours").unwrap(),
            ["DK", "SE", "aws:eu-central-1", "aws:eu-west-1"]
        );
        let e = chain(&r.resolve("a").unwrap_err());
        assert!(e.contains("group cycle: a → b → a"), "{e}");
        let e = chain(&r.resolve("nordic").unwrap_err());
        assert!(e.contains("did you mean 'nordics'"), "{e}");
        let e = chain(&r.resolve("aws:ap-*").unwrap_err());
        assert!(e.contains("matches no cloud region"), "{e}");
    }

    #[test]
    fn cloud_regions_before_the_map_are_checked_for_form() {
        let none = BTreeMap::new();
        let r = Resolver {
            map_tags: None,
            groups: &none,
        };
        assert!(r.resolve("aws:eu-*").is_ok());
        assert!(r.resolve("nope:eu-*").is_err());
        assert!(r.resolve("aws:EU WEST").is_err());
    }

    #[test]
    fn rule_text() {
        let p: Prefix = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            CompiledRule::describe(&p, 6, 5432, 5432, Action::Allow),
            "10.0.0.0/8 tcp/5432 allow"
        );
        assert_eq!(
            CompiledRule::describe(&p, 0, 0, u16::MAX, Action::Deny),
            "10.0.0.0/8 deny"
        );
        assert_eq!(
            CompiledRule::describe(&p, 17, 8000, 8099, Action::Deny),
            "10.0.0.0/8 udp/8000-8099 deny"
        );
    }
}
