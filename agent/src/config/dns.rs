//! `[dns]`: the DNS forwarder that governed jobs' queries go through.
//!
//! The keys, commented, are in `config/geowall.example.toml`. `listen`,
//! `port` and `max_learned` apply at start only; the rest on reload too.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use crate::vocab::units::Span;

/// `[dns]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Governed jobs' DNS goes through the forwarder (on by default); off,
    /// their queries are judged as any destination and nothing is learned.
    pub enabled: bool,
    /// The forwarder's IPv4 address (a loopback address; IPv6: `::1`).
    pub listen: Spanned<String>,
    /// The first of the forwarder's ports ([`geowall_common::DNS_SLOTS`]
    /// consecutive ones, UDP and TCP, both addresses).
    pub port: Spanned<u16>,
    /// Resolvers the agent asks itself (`policy explain NAME`): addresses,
    /// with a port or not; empty: the host's /etc/resolv.conf.
    pub upstream: Vec<Spanned<String>>,
    /// How long the forwarder waits for a resolver's answer before it
    /// answers SERVFAIL.
    pub timeout: Span,
    /// An answer's TTL counts as at least this...
    pub min_ttl: Span,
    /// ...and at most this.
    pub max_ttl: Span,
    /// How long an address stays allowed by a name after its TTL ran out
    /// (a connection made just after expiry).
    pub grace: Span,
    /// (job, address) pairs remembered at most; the least recently
    /// answered go first.
    pub max_learned: u32,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: Spanned::new(0..0, "127.0.0.1".to_owned()),
            port: Spanned::new(0..0, 10053),
            upstream: Vec::new(),
            timeout: Span(Duration::from_secs(2)),
            min_ttl: Span(Duration::from_secs(5)),
            max_ttl: Span(Duration::from_secs(3600)),
            grace: Span(Duration::from_secs(5)),
            max_learned: geowall_common::MAX_LEARNED,
        }
    }
}

/// What is wrong with a `[dns]` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfigError {
    /// Where (the value's span in the file, when it is written).
    pub span: Option<std::ops::Range<usize>>,
    pub message: String,
}

impl DnsConfig {
    /// The forwarder's IPv4 address, checked: a loopback address, not one
    /// systemd-resolved's stub listens on.
    pub fn listen_addr(&self) -> Result<Ipv4Addr, DnsConfigError> {
        let at = |message: String| DnsConfigError {
            span: Some(self.listen.span()).filter(|s| !s.is_empty()),
            message,
        };
        let addr: Ipv4Addr = self.listen.get_ref().parse().map_err(|_| {
            at(format!(
                "[dns] listen: '{}' is not an IPv4 address (the forwarder's IPv6 address is always ::1)",
                self.listen.get_ref()
            ))
        })?;
        if !addr.is_loopback() {
            return Err(at(format!(
                "[dns] listen: {addr} is not a loopback address: jobs' queries are redirected to it on this host"
            )));
        }
        if addr == Ipv4Addr::new(127, 0, 0, 53) || addr == Ipv4Addr::new(127, 0, 0, 54) {
            return Err(at(format!(
                "[dns] listen: {addr} is systemd-resolved's stub address: choose another"
            )));
        }
        Ok(addr)
    }

    /// The forwarder's first port, checked (its ports must fit below 65536).
    pub fn first_port(&self) -> Result<u16, DnsConfigError> {
        let port = *self.port.get_ref();
        if port == 0 || u32::from(port) + u32::from(geowall_common::DNS_SLOTS) > 65536 {
            return Err(DnsConfigError {
                span: Some(self.port.span()).filter(|s| !s.is_empty()),
                message: format!(
                    "[dns] port: {port}: the forwarder takes {} consecutive ports from it, 1 to 65535",
                    geowall_common::DNS_SLOTS
                ),
            });
        }
        Ok(port)
    }

    /// The configured resolvers, parsed (port 53 unless written).
    pub fn upstreams(&self) -> Result<Vec<SocketAddr>, DnsConfigError> {
        self.upstream
            .iter()
            .map(|u| {
                parse_resolver(u.get_ref()).ok_or_else(|| DnsConfigError {
                    span: Some(u.span()),
                    message: format!(
                        "[dns] upstream: '{}' is not an address (\"192.0.2.53\", \"[2001:db8::53]:53\")",
                        u.get_ref()
                    ),
                })
            })
            .collect()
    }

    /// Every check of the section.
    pub fn check(&self) -> Result<(), DnsConfigError> {
        self.listen_addr()?;
        self.first_port()?;
        self.upstreams()?;
        let whole = |message: &str| DnsConfigError {
            span: None,
            message: message.to_owned(),
        };
        if self.min_ttl.0 > self.max_ttl.0 {
            return Err(whole("[dns] min_ttl is longer than max_ttl"));
        }
        if self.timeout.0.is_zero() {
            return Err(whole("[dns] timeout must be longer than 0"));
        }
        if self.max_learned == 0 || self.max_learned > 4 * geowall_common::MAX_LEARNED * 8 {
            return Err(whole("[dns] max_learned must be between 1 and 4194304"));
        }
        Ok(())
    }
}

/// `192.0.2.53`, `192.0.2.53:5353`, `2001:db8::53`, `[2001:db8::53]:53`.
pub fn parse_resolver(text: &str) -> Option<SocketAddr> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Some(a);
    }
    text.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 53))
}

/// The nameservers of a resolv.conf's text, in order.
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|a| a.split('%').next())
                .and_then(parse_resolver)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> DnsConfig {
        #[derive(Deserialize)]
        struct F {
            dns: DnsConfig,
        }
        toml::from_str::<F>(text).unwrap().dns
    }

    #[test]
    fn defaults_are_on_and_sound() {
        let d = DnsConfig::default();
        assert!(d.enabled);
        d.check().unwrap();
        assert_eq!(d.listen_addr().unwrap(), Ipv4Addr::LOCALHOST);
    }

    #[test]
    fn bad_values_are_refused_with_their_place() {
        let d = parse("[dns]\nlisten = \"127.0.0.53\"\n");
        let e = d.check().unwrap_err();
        assert!(e.message.contains("systemd-resolved"), "{e:?}");
        assert!(e.span.is_some());
        let e = parse("[dns]\nlisten = \"10.0.0.1\"\n").check().unwrap_err();
        assert!(e.message.contains("not a loopback"), "{e:?}");
        let e = parse("[dns]\nport = 65534\n").check().unwrap_err();
        assert!(e.message.contains("consecutive ports"), "{e:?}");
        let e = parse("[dns]\nupstream = [\"resolver.example\"]\n")
            .check()
            .unwrap_err();
        assert!(e.message.contains("not an address"), "{e:?}");
        let e = parse("[dns]\nmin_ttl = \"1h\"\nmax_ttl = \"1m\"\n")
            .check()
            .unwrap_err();
        assert!(e.message.contains("min_ttl"), "{e:?}");
    }

    #[test]
    fn resolvers_and_resolv_conf() {
        assert_eq!(
            parse_resolver("192.0.2.1").unwrap(),
            "192.0.2.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_resolver("[::1]:5353").unwrap(),
            "[::1]:5353".parse().unwrap()
        );
        let ns = resolv_conf_nameservers(
            "# c\nsearch x\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\noptions ndots:1\n",
        );
        assert_eq!(
            ns,
            [
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }
}
