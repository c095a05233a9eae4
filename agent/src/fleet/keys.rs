//! Every key geowall writes in etcd, under `[fleet] prefix` (`P`):
//!
//! | key | value |
//! |---|---|
//! | `P/policies/NAME` | a policy (the TOML of a policy file) |
//! | `P/nodes/NODE` | the host's status (JSON), under its heartbeat lease |
//! | `P/members/NODE` | when the host last joined (JSON), no lease |
//! | `P/requests/NODE/ID` | an approval request of the host and its outcome (JSON) |
//! | `P/grants/USER/NODE/ID` | a decision by approver USER on it (JSON); an approval under a lease of the grant's length |
//!
//! A grant's key names its approver: etcd lets only USER (through the role
//! `geowall-approver-USER`) write under `P/grants/USER/`, so the name in
//! the key is the identity etcd authenticated.

/// A key segment geowall writes (a node, a user, a policy name): letters,
/// digits, `-`, `_`, `.`; not `.` or `..`.
pub fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The keys of one fleet (one prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// A grant key, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantKey {
    pub user: String,
    pub node: String,
    pub id: u32,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `P/` (everything of the fleet).
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    pub fn policies(&self) -> String {
        format!("{}/policies/", self.prefix)
    }

    pub fn policy(&self, name: &str) -> String {
        format!("{}/policies/{name}", self.prefix)
    }

    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    pub fn node(&self, node: &str) -> String {
        format!("{}/nodes/{node}", self.prefix)
    }

    pub fn members(&self) -> String {
        format!("{}/members/", self.prefix)
    }

    pub fn member(&self, node: &str) -> String {
        format!("{}/members/{node}", self.prefix)
    }

    pub fn requests(&self) -> String {
        format!("{}/requests/", self.prefix)
    }

    pub fn node_requests(&self, node: &str) -> String {
        format!("{}/requests/{node}/", self.prefix)
    }

    pub fn request(&self, node: &str, id: u32) -> String {
        format!("{}/requests/{node}/{id}", self.prefix)
    }

    pub fn grants(&self) -> String {
        format!("{}/grants/", self.prefix)
    }

    pub fn user_grants(&self, user: &str) -> String {
        format!("{}/grants/{user}/", self.prefix)
    }

    pub fn grant(&self, user: &str, node: &str, id: u32) -> String {
        format!("{}/grants/{user}/{node}/{id}", self.prefix)
    }

    /// The policy name of `P/policies/NAME` (None: another key, or a name
    /// that cannot be a policy's).
    pub fn policy_name<'k>(&self, key: &'k str) -> Option<&'k str> {
        let name = key.strip_prefix(&self.policies())?;
        valid_segment(name).then_some(name)
    }

    /// The node of `P/nodes/NODE` or `P/members/NODE`.
    pub fn node_name<'k>(&self, key: &'k str) -> Option<&'k str> {
        let name = key
            .strip_prefix(&self.nodes())
            .or_else(|| key.strip_prefix(&self.members()))?;
        valid_segment(name).then_some(name)
    }

    /// `(node, id)` of `P/requests/NODE/ID`.
    pub fn request_of<'k>(&self, key: &'k str) -> Option<(&'k str, u32)> {
        let rest = key.strip_prefix(&self.requests())?;
        let (node, id) = rest.split_once('/')?;
        Some((node, id.parse().ok()?)).filter(|(n, _)| valid_segment(n))
    }

    /// `P/grants/USER/NODE/ID`, read.
    pub fn grant_of(&self, key: &str) -> Option<GrantKey> {
        let rest = key.strip_prefix(&self.grants())?;
        let mut parts = rest.split('/');
        let (user, node, id) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !valid_segment(user) || !valid_segment(node) {
            return None;
        }
        Some(GrantKey {
            user: user.to_owned(),
            node: node.to_owned(),
            id: id.parse().ok()?,
        })
    }
}

/// A fleet-wide request id: `NODE/ID`.
pub fn parse_fleet_id(text: &str) -> Option<(&str, u32)> {
    let (node, id) = text.split_once('/')?;
    Some((node, id.parse().ok()?)).filter(|(n, _)| valid_segment(n))
}

/// The first key after every key starting with `prefix` (etcd's range end
/// of a prefix).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_as_written() {
        let k = Keys::new("/geowall");
        assert_eq!(k.policy("eu-only"), "/geowall/policies/eu-only");
        assert_eq!(k.policy_name("/geowall/policies/eu-only"), Some("eu-only"));
        assert_eq!(k.policy_name("/geowall/policies/a/b"), None);
        assert_eq!(k.policy_name("/geowallx/policies/a"), None);
        assert_eq!(k.request_of(&k.request("host-a", 7)), Some(("host-a", 7)));
        assert_eq!(k.request_of("/geowall/requests/host-a/x"), None);
        let g = k.grant_of(&k.grant("alice", "host-a", 3)).unwrap();
        assert_eq!(
            g,
            GrantKey {
                user: "alice".into(),
                node: "host-a".into(),
                id: 3
            }
        );
        assert_eq!(k.grant_of("/geowall/grants/alice/host-a"), None);
        assert_eq!(k.grant_of("/geowall/grants/alice/host-a/3/x"), None);
        assert_eq!(k.node_name(&k.node("b")), Some("b"));
        assert_eq!(k.node_name(&k.member("b")), Some("b"));
    }

    #[test]
    fn segments_and_ids() {
        assert!(valid_segment("host-a.example"));
        assert!(!valid_segment(".."));
        assert!(!valid_segment("a/b"));
        assert!(!valid_segment(""));
        assert_eq!(parse_fleet_id("host-a/12"), Some(("host-a", 12)));
        assert_eq!(parse_fleet_id("12"), None);
        assert_eq!(parse_fleet_id("a/b"), None);
    }

    #[test]
    fn a_prefix_ends_after_its_last_key() {
        assert_eq!(prefix_end("/g/"), b"/g0".to_vec());
        assert_eq!(prefix_end("ab"), b"ac".to_vec());
    }
}
