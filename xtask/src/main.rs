//! `cargo xtask`: geowall's developer and CI tasks.
//!
//! - `setup`: make this machine able to build the kernel programs (idempotent);
//! - `build`: build the agent (and its embedded kernel programs);
//! - `run`: the demo: the agent host-wide in audit mode, detached on exit;
//! - `test`: the whole test suite (lints, unit tests, kernel tests);
//! - `lint`: rustfmt and clippy for every crate, the eBPF one included, and
//!   the agent's import layers (`layers`);
//! - `bench`: geowall against no filtering, nftables and ipset;
//! - `update-default-map`: refresh the embedded country database;
//! - `dist`: the .deb.

mod bench;
mod bench_dns;
mod cmd;
mod default_map;
mod dist;
mod layers;
mod lint;
mod packages;
mod run;
mod setup;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "geowall's developer and CI tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building needs (nightly rust-src and a bpf-linker built
    /// against the nightly compiler's own LLVM) and the programs the tests
    /// start (a DNS server, DNS clients, etcd: Debian packages). Skips what
    /// is already there.
    Setup,
    /// Build the agent with its embedded kernel programs (runs setup first).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Run the agent in the foreground on the shipped demo config: host-wide,
    /// audit mode (blocks nothing), flow records printed as they arrive.
    /// Ctrl-C stops it and detaches everything it attached.
    Run {
        /// Config file to run instead of the shipped demo config (must be
        /// audit-only if it governs the whole host).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// The whole test suite: formatting, clippy, unit tests and the kernel
    /// integration tests (needs root). Runs setup first.
    Test {
        /// Skip rustfmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Only run tests whose name contains this filter.
        filter: Option<String>,
    },
    /// rustfmt --check and clippy -D warnings on every crate, eBPF included,
    /// and the agent's import layers (see `layers`).
    Lint,
    /// The agent crate's modules import only from their own layer or below
    /// (the table in docs/ARCHITECTURE.md), and its files in no cycle.
    Layers,
    /// Benchmark geowall against no filtering, nftables and iptables + ipset
    /// (in namespaces and a cgroup it creates). Results: target/bench/.
    Bench {
        /// A short run (under 2 minutes), for CI smoke use.
        #[arg(long)]
        quick: bool,
    },
    /// Refresh the embedded country database from the npm registry
    /// (`npm pack`), pinning its version and checksums.
    UpdateDefaultMap {
        /// Package version (default: the latest).
        #[arg(long)]
        version: Option<String>,
    },
    /// Build the .deb (release binary unless --binary): what `geowall
    /// install --prefix /usr` writes, conffiles marked, maintainer scripts
    /// that touch systemd only when it runs the system. Into target/dist/.
    Dist {
        /// Package this geowall binary instead of building the release one.
        #[arg(long)]
        binary: Option<std::path::PathBuf>,
        /// Write the .deb into this folder.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup => {
            setup::run()?;
            setup::test_tools()
        }
        Command::Build { release } => {
            setup::run()?;
            cmd::build_agent(release)
        }
        Command::Run { config } => {
            setup::run()?;
            run::run(config)
        }
        Command::Test { no_lint, filter } => {
            setup::run()?;
            setup::test_tools()?;
            dist::ensure_test_tools()?;
            test::run(!no_lint, filter.as_deref())
        }
        Command::Layers => layers::run(),
        Command::Lint => {
            setup::run()?;
            lint::run()
        }
        Command::Bench { quick } => {
            setup::run()?;
            bench::run(quick)
        }
        Command::UpdateDefaultMap { version } => default_map::run(version.as_deref()),
        Command::Dist { binary, out } => {
            if binary.is_none() {
                setup::run()?;
            }
            dist::run(&dist::Options { binary, out }).map(drop)
        }
    }
}
