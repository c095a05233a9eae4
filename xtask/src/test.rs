//! `cargo xtask test`: the whole test suite, as CI runs it.
//!
//! 1. the agent's import layers, rustfmt and clippy (all crates, eBPF
//!    included), unless --no-lint;
//! 2. unit tests of the agent, the common crate and xtask;
//! 3. the kernel integration tests (tests/): real programs attached to
//!    cgroups the tests create, real sockets, and a second build of the
//!    agent as the next release, for the upgrade test. They need root;
//!    nothing is skipped.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
};

use anyhow::{Context, Result, bail};

use crate::{cmd, lint};

/// Totals parsed from libtest's `test result:` lines.
#[derive(Default, Debug, Clone, Copy)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let n: u64 = n.parse().unwrap_or(0);
            match label {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test ARGS -- HARNESS_ARGS [FILTER]`, echoing its output, and
/// sums its results.
fn cargo_test(
    args: &[&str],
    harness_args: &[&str],
    filter: Option<&str>,
) -> Result<(Totals, bool)> {
    let mut command = cmd::cargo();
    command
        .args(["test", "--no-fail-fast"])
        .args(args)
        .arg("--")
        .args(harness_args);
    if let Some(f) = filter {
        command.arg(f);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {command:?}"))?;
    let mut totals = Totals::default();
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        totals.add_line(&line);
    }
    let ok = child.wait()?.success();
    Ok((totals, ok))
}

pub fn run(lint_first: bool, filter: Option<&str>) -> Result<()> {
    if !cmd::is_root() {
        bail!(
            "the kernel tests attach eBPF programs to cgroups they create, which needs root: \
             run `sudo -E cargo xtask test`"
        );
    }
    if lint_first {
        lint::run()?;
    }
    build_upgrade_binary()?;
    // The kernel tests drive the real binaries.
    cmd::run(cmd::cargo().args([
        "build",
        "--package",
        "geowall",
        "--package",
        "geowall-tests",
        "--bins",
    ]))?;
    let (unit, unit_ok) = cargo_test(
        &[
            "--package",
            "geowall",
            "--package",
            "geowall-common",
            "--package",
            "xtask",
        ],
        &[],
        filter,
    )?;
    let (kernel, kernel_ok) = cargo_test(
        &["--package", "geowall-tests"],
        &["--test-threads=2"],
        filter,
    )?;
    println!();
    println!(
        "geowall tests: unit {} passed, {} failed, {} ignored; kernel {} passed, {} failed, {} ignored",
        unit.passed, unit.failed, unit.ignored, kernel.passed, kernel.failed, kernel.ignored
    );
    let total = unit.passed + kernel.passed;
    if !(unit_ok && kernel_ok) || unit.failed + kernel.failed > 0 {
        bail!("tests failed");
    }
    if unit.ignored + kernel.ignored > 0 {
        bail!("tests were skipped: every test must run");
    }
    println!("all {total} tests passed (kernel tests included)");
    Ok(())
}

/// The release the upgrade test's second build claims to be: the next
/// patch release.
fn upgrade_version() -> String {
    let next = geowall_common::pack_version(env!("CARGO_PKG_VERSION")) + 1;
    let [major, minor, patch] = geowall_common::version_parts(next);
    format!("{major}.{minor}.{patch}-upgrade-test")
}

/// Builds the agent a second time as the next patch release
/// (`GEOWALL_VERSION`), into `target/debug/upgrade-test/geowall`, for the
/// upgrade test: its programs differ from the first build's by the version
/// constant every flow event carries. The ordinary build that follows
/// rebuilds the agent crate without it (seconds: only the agent crate and
/// its programs are compiled again).
fn build_upgrade_binary() -> Result<()> {
    let version = upgrade_version();
    cmd::run(
        cmd::cargo()
            .args(["build", "--package", "geowall", "--bins"])
            .env("GEOWALL_VERSION", &version),
    )?;
    let built = cmd::agent_binary(false);
    let dir = cmd::target_dir().join("debug").join("upgrade-test");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dest = dir.join("geowall");
    // Copy beside, then rename: a test that reads it sees one build or the
    // other, whole.
    let tmp = dir.join(".geowall.tmp");
    std::fs::copy(&built, &tmp)
        .with_context(|| format!("copying {} to {}", built.display(), tmp.display()))?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("renaming to {}", dest.display()))?;
    println!("upgrade-test build {version}: {}", dest.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_libtest_result_lines() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        t.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        t.add_line("running 4 tests");
        assert_eq!((t.passed, t.failed, t.ignored), (15, 2, 1));
    }

    #[test]
    fn the_upgrade_build_is_the_next_patch_release() {
        let v = upgrade_version();
        let now = geowall_common::pack_version(env!("CARGO_PKG_VERSION"));
        assert_eq!(geowall_common::pack_version(&v), now + 1, "{v}");
        assert!(v.ends_with("-upgrade-test"));
    }
}
