//! The `geowall` command line.
//!
//! Exit codes: 0 success; 1 an error (the message says what and where);
//! 2 a usage error. `geowall exec` exits with its command's status (128+N
//! when a signal N ended it), 125 when geowall could not start the job, 126
//! when the command cannot be executed, 127 when it is not found; with
//! `--wait-for-approval`, 123 when the request was denied and 124 when
//! nobody answered in time (the command did not run).

mod approvals;
mod check;
mod completions;
mod exec;
mod install;
mod layout;
mod log;
mod map;
mod policy;
mod render;
mod run;
mod status;
mod stop;

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Where the config is read from unless `--config` or GEOWALL_CONFIG says.
pub const DEFAULT_CONFIG: &str = "/etc/geowall/geowall.toml";

#[derive(Parser, Debug)]
#[command(
    name = "geowall",
    version = geowall_common::VERSION,
    about = "Keeps a host's outbound connections inside the regions its jobs may reach",
    long_about = "geowall judges every outbound connection of governed workloads in the \
                  kernel (eBPF, cgroup socket hooks) against a region-tagged IP map, refuses \
                  what the workload's policy does not allow with EPERM, and records every \
                  decision in an append-only audit log."
)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Log format on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "GEOWALL_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `--config`, shared by the subcommands.
#[derive(Args, Debug, Clone)]
pub struct ConfigArg {
    /// The agent's config file.
    #[arg(long, short = 'c', env = "GEOWALL_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent: load and attach the programs, install the tables,
    /// serve the control socket, write the audit log. Enforcement stays in
    /// force after it exits unless --detach-on-exit.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Detach every program and remove every pin on exit (a demo or a
        /// test leaves nothing behind).
        #[arg(long)]
        detach_on_exit: bool,
        /// Refuse any config with a policy in enforce mode (the demo runs
        /// host-wide and must never block).
        #[arg(long)]
        audit_only: bool,
    },
    /// Stop the agent and end enforcement: detach every program and remove
    /// every pin (works when the agent is already down).
    Stop {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run a command as a job under a policy, in a cgroup of its own that the
    /// running agent creates; exits with the command's status.
    Exec {
        #[command(flatten)]
        config: ConfigArg,
        /// The policy the job runs under.
        #[arg(long, short = 'p')]
        policy: String,
        /// A name for the job (in flow records and its cgroup's name).
        #[arg(long)]
        job: Option<String>,
        /// Before the command runs, file an approval request for the job to
        /// reach --to, and wait this long ("10m") for an approver to grant
        /// it. Exit 123 when denied, 124 when nobody answers in time.
        #[arg(long, value_parser = geowall::vocab::units::parse_duration, requires = "to")]
        wait_for_approval: Option<std::time::Duration>,
        /// With --wait-for-approval: the destination (an address, a CIDR or
        /// a region: DE, aws:eu-west-1, EU).
        #[arg(long, requires = "wait_for_approval")]
        to: Option<String>,
        /// With --wait-for-approval: only this destination port.
        #[arg(long, requires = "wait_for_approval")]
        port: Option<u16>,
        /// With --wait-for-approval: how long the grant should last.
        #[arg(long = "for", default_value = "1h", requires = "wait_for_approval")]
        for_: String,
        /// With --wait-for-approval: why (shown to approvers, kept in the
        /// audit log).
        #[arg(
            long,
            default_value = "job started with geowall exec --wait-for-approval",
            requires = "wait_for_approval"
        )]
        reason: String,
        /// The command and its arguments.
        #[arg(required = true, last = true)]
        command: Vec<OsString>,
    },
    /// Show whether the agent runs and what is enforced.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check a config (map sources, policies, cgroups) without changing
    /// anything.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Region maps: look addresses up, count, compare, reload.
    Map {
        #[command(subcommand)]
        command: map::MapCommand,
    },
    /// Policies: check what they allow, explain a verdict, apply changes.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Install geowall as a system service: the binary, a commented config
    /// (audit mode unless --mode enforce), the shipped policies, a hardened
    /// systemd unit, completions and man pages; starts it when systemd runs
    /// the system. An edited config is never overwritten (the new one is
    /// written beside it as .new). Repeating it changes nothing.
    Install {
        /// Install into this folder as if it were / (packaging, tests).
        #[arg(long, env = "DESTDIR", default_value = "/")]
        root: PathBuf,
        /// Where the binary, completions and man pages go.
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
        /// The mode of the installed policies.
        #[arg(long, value_enum, default_value_t = install::InstallMode::Audit)]
        mode: install::InstallMode,
        /// Do not start (or restart) the service.
        #[arg(long)]
        no_start: bool,
    },
    /// Remove what `geowall install` installed: stop the service, detach
    /// every program and remove every pin, remove the files. Keeps the
    /// audit logs and edited configs unless told otherwise. Repeating it
    /// changes nothing.
    Uninstall {
        /// The folder geowall was installed into with --root.
        #[arg(long, env = "DESTDIR", default_value = "/")]
        root: PathBuf,
        /// Keep the audit logs (the default).
        #[arg(long, conflicts_with = "purge_logs")]
        keep_logs: bool,
        /// Remove the audit logs too (/var/log/geowall).
        #[arg(long)]
        purge_logs: bool,
        /// Remove config files even where they were edited.
        #[arg(long)]
        purge_config: bool,
    },
    /// Print the shell completion script for SHELL (bash, zsh, fish).
    Completions {
        #[arg(value_enum)]
        shell: completions::Shell,
    },
    /// Print the man page (roff), or write every page into --dir.
    Manpage {
        /// Write geowall.1 and one page per subcommand into this folder.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The audit log: show records (tail), check the hash chain (verify).
    Log {
        #[command(subcommand)]
        command: log::LogCommand,
    },
    /// Just-in-time approvals: request, list, approve, deny, revoke.
    Approvals {
        #[command(subcommand)]
        command: approvals::ApprovalsCommand,
    },
}

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

/// Prints an error the way every subcommand does, and picks the exit code.
pub fn fail(err: impl std::fmt::Display) -> ExitCode {
    eprintln!("geowall: error: {err}");
    ExitCode::from(1)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match cli.command {
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
    }
}
