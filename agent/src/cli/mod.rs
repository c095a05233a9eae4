//! The `geowall` command line: one file per subcommand, the clap
//! definitions in [`args`], the install plan in [`install_plan`], the
//! views of audit records in [`render`].
//!
//! Exit codes: 0 success; 1 an error (the message says what and where);
//! 2 a usage error. `geowall exec` exits with its command's status (128+N
//! when a signal N ended it), 125 when geowall could not start the job, 126
//! when the command cannot be executed, 127 when it is not found; with
//! `--wait-for-approval`, 123 when the request was denied and 124 when
//! nobody answered in time (the command did not run).
//!
//! Errors reach the top here and are printed once, with their causes
//! (`geowall: error: cannot read config /x.toml: No such file or
//! directory`), as ripgrep does.

mod approvals;
mod args;
mod check;
mod completions;
mod exec;
mod exec_seccomp;
mod fleet;
mod install;
mod install_plan;
mod log;
mod map;
mod policy;
mod refusal_lines;
mod render;
mod run;
mod status;
mod stop;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use geowall::vocab::error::Chain;

use args::{Cli, Command, LogFormat};

fn init_logging(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GEOWALL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = match cli.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The binary's entry point: parse, run, and print an error with its causes.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match run(cli.command, cli.quiet) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("geowall: error: {}", Chain(err.as_ref()));
            ExitCode::from(1)
        }
    }
}

/// What the subcommand says: its exit code, or the error that ends it.
fn run(command: Command, quiet: bool) -> Result<ExitCode> {
    match command {
        Command::Run {
            config,
            detach_on_exit,
            audit_only,
        } => run::run(&config.config, detach_on_exit, audit_only),
        Command::Stop { config } => stop::stop(&config.config),
        Command::Exec {
            config,
            policy,
            job,
            wait_for_approval,
            to,
            port,
            for_,
            reason,
            keep_fds,
            command,
        } => {
            let wait = wait_for_approval.map(|timeout| exec::WaitForApproval {
                timeout,
                to: to.unwrap_or_default(),
                port,
                for_,
                reason,
            });
            exec::exec(
                &config.config,
                &policy,
                job.as_deref(),
                wait.as_ref(),
                exec::JobOptions { keep_fds, quiet },
                &command,
            )
        }
        Command::Status { config, json } => status::status(&config.config, json),
        Command::Check { config } => check::check(&config.config),
        Command::Map { command } => map::run(command),
        Command::Approvals { command } => approvals::run(command),
        Command::Policy { command } => policy::run(command),
        Command::Install {
            root,
            prefix,
            mode,
            no_start,
        } => install::install(&install::InstallOptions {
            root,
            prefix,
            mode,
            start: !no_start,
        }),
        Command::Uninstall {
            root,
            keep_logs: _,
            purge_logs,
            purge_config,
        } => install::uninstall(&install::UninstallOptions {
            root,
            purge_logs,
            purge_config,
        }),
        Command::Completions { shell } => completions::completions(shell),
        Command::Manpage { dir } => completions::manpage(dir.as_deref()),
        Command::Log { command } => log::run(command),
        Command::Fleet { command } => fleet::run(command),
    }
}
