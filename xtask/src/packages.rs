//! Debian packages the build and the tests need, installed by `cargo xtask
//! setup` when they are missing (as root; otherwise it says what to
//! install). The tests start the real programs these packages ship — a DNS
//! server, DNS clients, etcd — and never mocks of them.

use std::process::{Command, Stdio};

use anyhow::{Result, bail};

use crate::cmd;

/// What building the agent needs besides Rust: the etcd client crate
/// compiles etcd's protobuf definitions with `protoc` in its build script.
pub const BUILD: &[(&str, &str)] = &[("protoc", "protobuf-compiler")];

/// What the tests run: the DNS server (nsd, authoritative for the test
/// zones), dig, a musl toolchain for a statically linked musl resolver, Go
/// for Go's own resolver, etcd for the fleet tests (openssl makes their TLS
/// certificates). glibc's resolver,
/// Node (c-ares) and Java come with the machine; missing ones are
/// installed too.
pub const TEST: &[(&str, &str)] = &[
    ("nsd", "nsd"),
    ("dig", "bind9-dnsutils"),
    ("musl-gcc", "musl-tools"),
    ("go", "golang-go"),
    ("etcd", "etcd-server"),
    ("etcdctl", "etcd-client"),
    ("node", "nodejs"),
    ("java", "default-jre-headless"),
    ("curl", "curl"),
    ("openssl", "openssl"),
];

/// Packages missing among `wanted` (program → package): a program not on
/// PATH (or in /usr/sbin) names its package.
fn missing<'a>(wanted: &[(&str, &'a str)]) -> Vec<&'a str> {
    let mut out = Vec::new();
    for (program, package) in wanted {
        let found = ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin"]
            .iter()
            .any(|dir| std::path::Path::new(dir).join(program).exists())
            || Command::new("which")
                .arg(program)
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if !found {
            out.push(*package);
        }
    }
    out
}

/// Installs what `wanted` lacks; `why` says what for.
pub fn ensure(wanted: &[(&str, &str)], why: &str) -> Result<()> {
    let missing = missing(wanted);
    if missing.is_empty() {
        return Ok(());
    }
    if !cmd::is_root() {
        bail!(
            "{why} need {}: install them (sudo apt-get install {}) or run this as root",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!("setup: installing {} ({why})", missing.join(", "));
    let install = |update: bool| {
        if update {
            let _ = Command::new("apt-get")
                .args(["update", "-q"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status();
        }
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // A fresh machine's package lists may be stale or absent: update once
    // when the first try fails.
    if !install(false) && !install(true) {
        bail!(
            "{why} need {}: `apt-get install {}` failed",
            missing.join(", "),
            missing.join(" ")
        );
    }
    Ok(())
}
