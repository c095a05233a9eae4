//! `[approvals] webhook`: the address new requests and decisions are
//! POSTed to (the sender is the daemon's).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer};
use thiserror::Error;

/// An `http://host:port/path` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// A webhook address geowall cannot send to.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WebhookUrlError {
    #[error("webhook '{0}': only http:// addresses are supported (no TLS)")]
    NotHttp(String),
    #[error("webhook '{url}': bad port '{port}'")]
    Port { url: String, port: String },
    #[error("webhook '{0}': not an http://host[:port]/path address")]
    Form(String),
}

impl FromStr for WebhookUrl {
    type Err = WebhookUrlError;

    fn from_str(s: &str) -> Result<Self, WebhookUrlError> {
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| WebhookUrlError::NotHttp(s.to_owned()))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>().map_err(|_| WebhookUrlError::Port {
                    url: s.to_owned(),
                    port: p.to_owned(),
                })?,
            ),
            _ => (authority, 80),
        };
        if host.is_empty() || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(WebhookUrlError::Form(s.to_owned()));
        }
        Ok(WebhookUrl {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "http://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let u: WebhookUrl = "http://127.0.0.1:8080/hooks/geowall".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/hooks/geowall")
        );
        let u: WebhookUrl = "http://approvals.example".parse().unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u: WebhookUrl = "http://[::1]:9000/x".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        assert_eq!(u.to_string(), "http://[::1]:9000/x");
        assert!(
            "https://x/"
                .parse::<WebhookUrl>()
                .unwrap_err()
                .to_string()
                .contains("only http://")
        );
        assert!("http://x:99999/".parse::<WebhookUrl>().is_err());
        assert!("http:///path".parse::<WebhookUrl>().is_err());
    }
}
