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

    #[test]
    fn allows_by_tag_untagged_and_local() {
        let p = CompiledPolicy {
            name: "p".into(),
            mode: Mode::Enforce,
            allowed: tags(&["DE"]),
            allow_written: vec!["DE".into()],
            untagged: Action::Deny,
            local: Action::Allow,
            rules: vec![],
            cgroups: vec![],
            log_allowed: LogAllowed::None,
            raw_sockets: Action::Deny,
        };
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(p.allows(&v(&["DE"])));
        assert!(p.allows(&v(&["DE", "aws:eu-central-1"])));
        assert!(!p.allows(&v(&["US"])));
        assert!(!p.allows(&[]));
        assert!(p.allows(&v(&["local"])));
    }
}
