//! The `geowall` command: the agent (`geowall run`) and the tools that talk
//! to it. The command line is this binary's own ([`cli`]); everything else
//! is the `geowall` library.

#![warn(unreachable_pub, unused_crate_dependencies)]

// The library's dependencies (the package has one list for both crates):
// see the note in `lib.rs`.
use {
    aya as _, domain as _, itoa as _, maxminddb as _, prometheus_client as _, regex_lite as _,
    ruzstd as _, sha2 as _, thiserror as _, tonic as _,
};

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
