//! Policies: which regions a workload may reach, checked before it goes live.

use std::{collections::BTreeSet, path::PathBuf};

use crate::{
    config::{Action, LogAllowed, Mode},
    regions::{LOCAL, Prefix, countries, groups, suggest},
};

/// A policy, validated and resolved against the loaded map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPolicy {
    pub name: String,
    pub mode: Mode,
    /// Concrete region tags allowed (groups expanded).
    pub allowed: BTreeSet<String>,
    /// The allow list as written, for display.
    pub allow_written: Vec<String>,
    pub untagged: Action,
    pub local: Action,
    pub rules: Vec<CompiledRule>,
    /// Absolute cgroup paths bound to this policy by the config.
    pub cgroups: Vec<PathBuf>,
    pub log_allowed: LogAllowed,
    pub raw_sockets: Action,
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
}

impl CompiledPolicy {
    /// Whether a destination whose tags are `tags` is allowed (`tags` empty:
    /// untagged; exactly `local`: a local destination).
    pub fn allows(&self, tags: &[String]) -> bool {
        match tags {
            [] => self.untagged == Action::Allow,
            [only] if only == LOCAL => self.local == Action::Allow,
            _ => tags.iter().any(|t| self.allowed.contains(t)),
        }
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

/// Resolves one allow-list entry to concrete tags. `map_tags` are the tags
/// the loaded map sources use (cloud regions are only known through them);
/// without them a cloud region is only checked for its form.
pub fn resolve_region(
    token: &str,
    map_tags: Option<&BTreeSet<String>>,
) -> Result<Vec<String>, String> {
    if let Some(members) = groups::members(token) {
        return Ok(members.into_iter().map(str::to_owned).collect());
    }
    let upper = token.to_ascii_uppercase();
    if token.len() == 2 && countries::name(&upper).is_some() {
        return Ok(vec![upper]);
    }
    if token == LOCAL {
        return Err("'local' is not an allow-list entry: set `local = \"allow\"` instead".into());
    }
    if token.contains(':') {
        let Some(map_tags) = map_tags else {
            return match crate::regions::kind(token) {
                Some(crate::regions::TagKind::Cloud { .. }) => Ok(vec![token.to_owned()]),
                _ => Err(format!(
                    "'{token}' is not a cloud region name (like aws:eu-west-1)"
                )),
            };
        };
        if map_tags.contains(token) {
            return Ok(vec![token.to_owned()]);
        }
        let hint = suggest(
            token,
            map_tags
                .iter()
                .filter(|t| t.contains(':'))
                .map(String::as_str),
        )
        .map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default();
        return Err(format!(
            "unknown region '{token}': no loaded map source tags it{hint}"
        ));
    }
    Err(unknown_region(token))
}

fn unknown_region(token: &str) -> String {
    // A country's name written for its code is the likeliest slip.
    if let Some((code, name)) = countries::COUNTRIES
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(token))
    {
        return format!("unknown region '{token}' (did you mean '{code}', {name}?)");
    }
    let candidates = countries::COUNTRIES
        .iter()
        .map(|(c, _)| *c)
        .chain(groups::NAMES.iter().copied());
    let by_code = suggest(token, candidates);
    let by_name = suggest(token, countries::COUNTRIES.iter().map(|(_, n)| *n))
        .and_then(|n| countries::COUNTRIES.iter().find(|(_, cn)| *cn == n))
        .map(|(c, _)| *c);
    match by_code.or(by_name) {
        Some(s) => {
            let name = countries::name(s)
                .map(|n| format!(", {n}"))
                .unwrap_or_default();
            format!("unknown region '{token}' (did you mean '{s}'{name}?)")
        }
        None => format!(
            "unknown region '{token}': expected a country code (DE), a group ({}) or a cloud \
             region (aws:eu-west-1)",
            groups::NAMES.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = resolve_region("Germany", Some(&map)).unwrap_err();
        assert_eq!(e, "unknown region 'Germany' (did you mean 'DE', Germany?)");
        let e = resolve_region("EUU", Some(&map)).unwrap_err();
        assert!(e.contains("did you mean 'EU'"), "{e}");
        let e = resolve_region("aws:eu-west-9", Some(&map)).unwrap_err();
        assert!(e.contains("did you mean 'aws:eu-west-1'"), "{e}");
        let e = resolve_region("QQQQQQQ", Some(&map)).unwrap_err();
        assert!(e.contains("expected a country code"), "{e}");
        assert!(resolve_region("local", Some(&map)).is_err());
    }

    fn policy(rules: Vec<CompiledRule>) -> CompiledPolicy {
        CompiledPolicy {
            name: "p".into(),
            mode: Mode::Enforce,
            allowed: tags(&["DE"]),
            allow_written: vec!["DE".into()],
            untagged: Action::Deny,
            local: Action::Allow,
            rules,
            cgroups: vec![],
            log_allowed: LogAllowed::None,
            raw_sockets: Action::Deny,
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
    }
}
