//! Names of the kernel's codes, as records, metrics and explanations show
//! them: verdicts, reasons and hooks, and the programs' packed version.

use geowall_common::{hook, reason, verdict};

pub fn verdict_name(v: u8) -> &'static str {
    match v {
        verdict::ALLOW => "allow",
        verdict::DENY => "deny",
        verdict::WOULD_DENY => "would_deny",
        _ => "unknown",
    }
}

pub fn reason_name(r: u8) -> &'static str {
    match r {
        reason::NO_POLICY => "no_policy",
        reason::REGION => "region",
        reason::RULE => "rule",
        reason::GRANT => "grant",
        reason::UNTAGGED => "untagged",
        reason::LOCAL => "local",
        reason::SOCKET_TYPE => "socket_type",
        reason::NO_TABLE => "no_table",
        reason::NAME => "name",
        reason::UNRESOLVED => "unresolved",
        reason::DNS_NETNS => "dns_netns",
        reason::DNS_SHARED => "dns_shared",
        reason::SOURCE_ROUTE => "source_route",
        reason::AUDIT => "audit",
        _ => "unknown",
    }
}

pub fn hook_name(h: u8) -> &'static str {
    match h {
        hook::CONNECT4 => "connect4",
        hook::CONNECT6 => "connect6",
        hook::SENDMSG4 => "sendmsg4",
        hook::SENDMSG6 => "sendmsg6",
        hook::SOCK_CREATE => "sock_create",
        hook::SOCK_POST_CREATE => "socket_post_create",
        hook::SETSOCKOPT => "setsockopt",
        hook::INGRESS => "ingress",
        _ => "unknown",
    }
}

/// [`geowall_common::pack_version`] undone: `major.minor.patch`.
pub fn unpack_version(v: u64) -> String {
    let [major, minor, patch] = geowall_common::version_parts(v);
    format!("{major}.{minor}.{patch}")
}
