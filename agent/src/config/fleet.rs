//! `[fleet]`: joining a fleet whose shared state (policies, approval
//! requests and grants, host status) lives in etcd. No `[fleet]`: the host
//! runs alone.
//!
//! The keys, commented, are in `config/geowall.example.toml`. `[fleet]` is
//! read when the agent starts (a change needs a restart) and by every
//! `geowall fleet` and `--fleet` command.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::vocab::units::Span;

/// `[fleet]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// etcd endpoints (`http://127.0.0.1:2379`, `https://etcd1:2379`).
    pub etcd: Vec<Spanned<String>>,
    /// The etcd user (password authentication with `password_file`; with a
    /// client certificate and no password, the certificate's common name,
    /// which must be this name).
    pub user: Option<String>,
    /// A file holding the etcd user's password (its first line).
    pub password_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signed the etcd servers' certificates.
    pub ca: Option<PathBuf>,
    /// This client's certificate (PEM), for etcd's client-certificate
    /// authentication.
    pub cert: Option<PathBuf>,
    /// The key (PEM) of `cert`.
    pub key: Option<PathBuf>,
    /// The key prefix every fleet key lies under.
    pub prefix: String,
    /// This host's name in the fleet (default: the host name).
    pub node: Option<String>,
    /// Where the last fleet state this host applied is kept (a host that
    /// starts while etcd is away starts with it).
    pub state_dir: PathBuf,
    /// How long a host's status key outlives its last heartbeat.
    pub lease: Span,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            etcd: Vec::new(),
            user: None,
            password_file: None,
            ca: None,
            cert: None,
            key: None,
            prefix: "/geowall".into(),
            node: None,
            state_dir: "/var/lib/geowall/fleet".into(),
            lease: Span(std::time::Duration::from_secs(15)),
        }
    }
}

/// A `[fleet]` value that cannot be (its span, when it has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfigError {
    pub span: Option<std::ops::Range<usize>>,
    pub message: String,
}

impl FleetConfig {
    /// What parsing alone cannot check.
    pub fn check(&self) -> Result<(), FleetConfigError> {
        let bad = |span, message: String| Err(FleetConfigError { span, message });
        if self.etcd.is_empty() {
            return bad(
                None,
                "[fleet] etcd: name at least one endpoint (\"http://127.0.0.1:2379\")".into(),
            );
        }
        for e in &self.etcd {
            let url = e.get_ref();
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.contains('/')) {
                return bad(
                    Some(e.span()),
                    format!("[fleet] etcd: '{url}' is not an http:// or https:// host:port"),
                );
            }
            if url.starts_with("https://") && self.ca.is_none() {
                return bad(
                    Some(e.span()),
                    format!("[fleet] etcd: '{url}' is https: name the CA certificate (ca = …)"),
                );
            }
        }
        if !self.prefix.starts_with('/') || self.prefix.ends_with('/') || self.prefix.len() < 2 {
            return bad(
                None,
                format!(
                    "[fleet] prefix = \"{}\": a key prefix starts with '/' and does not end with one (\"/geowall\")",
                    self.prefix
                ),
            );
        }
        if self.cert.is_some() != self.key.is_some() {
            return bad(
                None,
                "[fleet] cert and key go together: name both or neither".into(),
            );
        }
        if self.password_file.is_some() && self.user.is_none() {
            return bad(None, "[fleet] password_file needs user = \"…\"".into());
        }
        if let Some(node) = &self.node
            && !crate::fleet::keys::valid_segment(node)
        {
            return bad(
                None,
                format!(
                    "[fleet] node = \"{node}\": use letters, digits, '-', '_' and '.' (a key segment)"
                ),
            );
        }
        if self.lease.0.as_secs() < 2 {
            return bad(None, "[fleet] lease must be at least 2s".into());
        }
        Ok(())
    }

    /// This host's node name: `node`, else the host name.
    pub fn node_name(&self) -> String {
        self.node
            .clone()
            .unwrap_or_else(crate::host::proc::host_name)
    }

    /// The endpoints as written.
    pub fn endpoints(&self) -> Vec<String> {
        self.etcd.iter().map(|e| e.get_ref().clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/geowall/geowall.toml"), text.into())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_example_block_parses_uncommented() {
        let example = include_str!("../../../config/geowall.example.toml");
        let block = example
            .split("# [fleet]\n")
            .nth(1)
            .expect("a [fleet] block in the example");
        let text: String = std::iter::once("[fleet]\n".to_owned())
            .chain(
                block
                    .lines()
                    .map(|l| format!("{}\n", l.trim_start_matches("# "))),
            )
            .collect();
        let c = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let f = c.file.fleet.expect("fleet");
        assert_eq!(f.endpoints().len(), 3);
        assert_eq!(f.node_name(), "host-a");
        assert_eq!(f.prefix, "/geowall");
    }

    #[test]
    fn bad_values_are_refused_with_their_place() {
        let no_ep = parse("[fleet]\nnode = \"a\"\n").unwrap_err();
        assert!(
            no_ep.contains("[fleet] etcd: name at least one endpoint"),
            "{no_ep}"
        );
        let bad_ep = parse("[fleet]\netcd = [\"127.0.0.1:2379\"]\n").unwrap_err();
        assert!(
            bad_ep.starts_with("/etc/geowall/geowall.toml:2:")
                && bad_ep.contains("'127.0.0.1:2379' is not an http:// or https:// host:port"),
            "{bad_ep}"
        );
        let tls = parse("[fleet]\netcd = [\"https://e:2379\"]\n").unwrap_err();
        assert!(tls.contains("name the CA certificate"), "{tls}");
        let prefix =
            parse("[fleet]\netcd = [\"http://e:2379\"]\nprefix = \"geowall/\"\n").unwrap_err();
        assert!(prefix.contains("a key prefix starts with '/'"), "{prefix}");
        let pair = parse("[fleet]\netcd = [\"http://e:2379\"]\ncert = \"c.pem\"\n").unwrap_err();
        assert!(pair.contains("cert and key go together"), "{pair}");
        let node = parse("[fleet]\netcd = [\"http://e:2379\"]\nnode = \"a/b\"\n").unwrap_err();
        assert!(node.contains("node = \"a/b\""), "{node}");
        let unknown = parse("[fleet]\netcd = [\"http://e:2379\"]\nendpoints = []\n").unwrap_err();
        assert!(unknown.contains("unknown field `endpoints`"), "{unknown}");
        assert!(parse("").unwrap().file.fleet.is_none());
    }
}
