//! The `geowall` command: the agent (`geowall run`) and the tools that talk
//! to it. The command line is this binary's own ([`cli`]); everything else
//! is the `geowall` library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
