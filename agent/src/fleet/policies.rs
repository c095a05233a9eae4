//! The fleet policies a host has applied (`P/policies/NAME` values and
//! their revisions), as policy definitions the plan compiles beside the
//! config's own, and the copy kept on disk: a host that starts while etcd
//! is away starts with the fleet state it last applied.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::keys::Keys;
use crate::config::{ConfigError, PolicyDef, parse_policy};

/// The file in `[fleet] state_dir` holding the last state applied.
pub const STATE_FILE: &str = "fleet.json";

/// One fleet policy: its text and the revision it was written at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetPolicy {
    pub text: String,
    /// etcd's mod revision of the key.
    pub revision: i64,
}

impl FleetPolicy {
    pub fn sha256(&self) -> String {
        crate::vocab::hex::sha256_hex(self.text.as_bytes())
    }
}

/// The fleet state a host applied, as kept on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetPolicies {
    /// Name → policy.
    pub policies: BTreeMap<String, FleetPolicy>,
    /// The etcd revision the host has read the fleet up to.
    pub revision: i64,
    /// Decisions already handled: grant key → its revision (a decision is
    /// applied once, even when a resynchronisation reads it again).
    #[serde(default)]
    pub decisions: BTreeMap<String, i64>,
}

impl FleetPolicies {
    /// Where policy `name` comes from, as errors name it:
    /// `etcd /geowall/policies/NAME@REVISION`.
    pub fn place(keys: &Keys, name: &str, revision: i64) -> PathBuf {
        PathBuf::from(format!("etcd {}@{revision}", keys.policy(name)))
    }

    /// One policy as a definition: its text parsed, its name the key's (a
    /// `name` in the text must agree).
    pub fn def(keys: &Keys, name: &str, policy: &FleetPolicy) -> Result<PolicyDef, ConfigError> {
        let place = Self::place(keys, name, policy.revision);
        let def = parse_policy(&place, policy.text.clone(), name)?;
        if def.name != name {
            return Err(def.error(format!(
                "the key names policy '{name}', the text '{}': they must agree",
                def.name
            )));
        }
        Ok(def)
    }

    /// Every policy as a definition, in name order.
    pub fn defs(&self, keys: &Keys) -> Result<Vec<PolicyDef>, ConfigError> {
        self.policies
            .iter()
            .map(|(name, p)| Self::def(keys, name, p))
            .collect()
    }

    /// The names whose policy differs between `self` and `other` (added,
    /// removed or changed).
    pub fn changed(&self, other: &FleetPolicies) -> BTreeSet<String> {
        let names: BTreeSet<&String> = self.policies.keys().chain(other.policies.keys()).collect();
        names
            .into_iter()
            .filter(|n| self.policies.get(*n) != other.policies.get(*n))
            .cloned()
            .collect()
    }

    /// `self` with policy `name` as `other` has it (or without it).
    pub fn with_from(&self, other: &FleetPolicies, name: &str) -> FleetPolicies {
        let mut out = self.clone();
        match other.policies.get(name) {
            Some(p) => out.policies.insert(name.to_owned(), p.clone()),
            None => out.policies.remove(name),
        };
        out
    }

    /// Reads the state kept in `dir` (empty when there is none).
    pub fn load(dir: &Path) -> io::Result<FleetPolicies> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(FleetPolicies::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the state to `dir` (a new file renamed over the old one).
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[(&str, &str, i64)]) -> FleetPolicies {
        FleetPolicies {
            policies: entries
                .iter()
                .map(|(n, t, r)| {
                    (
                        n.to_string(),
                        FleetPolicy {
                            text: t.to_string(),
                            revision: *r,
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_policy_is_named_by_its_key_and_placed_in_etcd() {
        let keys = Keys::new("/geowall");
        let s = set(&[("eu", "allow = [\"EU\"]\n", 7)]);
        let defs = s.defs(&keys).unwrap();
        assert_eq!(defs[0].name, "eu");
        assert_eq!(defs[0].place(), "etcd /geowall/policies/eu@7");
        let s = set(&[("eu", "name = \"us\"\nallow = [\"US\"]\n", 8)]);
        let e = s.defs(&keys).unwrap_err().to_string();
        assert!(e.starts_with("etcd /geowall/policies/eu@8:1:"), "{e}");
        assert!(
            e.contains("the key names policy 'eu', the text 'us'"),
            "{e}"
        );
        let s = set(&[("eu", "allow = [\"EU\"\n", 9)]);
        let e = s.defs(&keys).unwrap_err().to_string();
        assert!(e.starts_with("etcd /geowall/policies/eu@9:"), "{e}");
    }

    #[test]
    fn changes_are_per_name() {
        let a = set(&[("x", "1", 1), ("y", "2", 2)]);
        let b = set(&[("x", "1", 1), ("y", "3", 5), ("z", "4", 6)]);
        assert_eq!(a.changed(&b).into_iter().collect::<Vec<_>>(), ["y", "z"]);
        let c = a.with_from(&b, "z");
        assert_eq!(c.policies.len(), 3);
        let d = b.with_from(&a, "z");
        assert!(!d.policies.contains_key("z"));
    }

    #[test]
    fn the_state_survives_a_round_trip_on_disk() {
        let dir = std::env::temp_dir().join(format!("geowall-fleet-unit-{}", std::process::id()));
        let mut s = set(&[("x", "allow = []", 3)]);
        s.revision = 12;
        s.decisions.insert("/g/grants/a/n/1".into(), 11);
        s.save(&dir).unwrap();
        assert_eq!(FleetPolicies::load(&dir).unwrap(), s);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(FleetPolicies::load(&dir).unwrap(), FleetPolicies::default());
    }
}
