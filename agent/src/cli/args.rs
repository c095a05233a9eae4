//! The command line as clap reads it: every subcommand, flag and argument
//! with its help. What each subcommand does is in the file named after it.

use std::{ffi::OsString, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use geowall::config::Mode;

/// Where the config is read from unless `--config` or GEOWALL_CONFIG says.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/geowall/geowall.toml";

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
pub(crate) struct Cli {
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Only errors; `geowall exec` tells the job nothing of its refused
    /// connections.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    /// Log format on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "GEOWALL_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// `--config`, shared by the subcommands.
#[derive(Args, Debug, Clone)]
pub(crate) struct ConfigArg {
    /// The agent's config file.
    #[arg(long, short = 'c', env = "GEOWALL_CONFIG", default_value = DEFAULT_CONFIG)]
    pub(crate) config: PathBuf,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
    /// running agent creates; exits with the command's status. Each refused
    /// destination is told on the job's standard error, one line (at most 5
    /// a second; --quiet: none).
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
        /// With --wait-for-approval: the destination (an address, a CIDR, a
        /// host name: api.partner.eu or *.partner.eu, or a region: DE,
        /// aws:eu-west-1, EU).
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
        /// Let the command inherit every descriptor geowall was given (by
        /// default only stdin, stdout and stderr). A socket made outside
        /// the job is judged under its maker's cgroup, not the job's
        /// policy.
        #[arg(long)]
        keep_fds: bool,
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
        command: MapCommand,
    },
    /// Policies: check what they allow, explain a verdict, apply changes.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
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
        #[arg(long, value_enum, default_value_t = InstallMode::Audit)]
        mode: InstallMode,
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
        shell: Shell,
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
        command: LogCommand,
    },
    /// Just-in-time approvals: request, list, approve, deny, revoke.
    Approvals {
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// The fleet ([fleet] in the config): every host's status, the fleet's
    /// policies, the etcd roles.
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum FleetCommand {
    /// Every host of the fleet: alive or not, version, enforcing, the
    /// policies in force, the audit log's chain head, the last error; and
    /// what sets a host apart (a lapsed lease, a policy whose hash differs
    /// from the fleet's, map data that differs from the majority's).
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// One JSON object: {"prefix", "revision", "policies", "nodes": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// The fleet's policies (PREFIX/policies/NAME): put, get, rm, list,
    /// history.
    Policy {
        #[command(subcommand)]
        command: FleetPolicyCommand,
    },
    /// Create the etcd roles geowall-node, geowall-approver and
    /// geowall-admin (as etcd's root user; run once per fleet).
    Init {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// etcd users of the fleet.
    User {
        #[command(subcommand)]
        command: FleetUserCommand,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum FleetPolicyCommand {
    /// Check policy files (as `policy check` does, cgroups aside: they are
    /// each host's) and write each to the fleet; a file that does not
    /// check is not written, nor any after it.
    Put {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a fleet policy's text.
    Get {
        #[command(flatten)]
        config: ConfigArg,
        name: String,
    },
    /// Remove a policy from the fleet (each host refuses the removal while
    /// a job runs under it).
    Rm {
        #[command(flatten)]
        config: ConfigArg,
        name: String,
    },
    /// The fleet's policies with their revisions.
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// A fleet policy's versions, newest first, as etcd keeps them (back to
    /// the last compaction).
    History {
        #[command(flatten)]
        config: ConfigArg,
        name: String,
        #[arg(long)]
        json: bool,
    },
}

/// What an etcd user of the fleet may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FleetRole {
    /// A host (the user's name is the node's): reads policies and
    /// decisions, writes its own requests and status.
    Node,
    /// Reads the whole fleet, writes decisions under its own name.
    Approver,
    /// Reads the whole fleet, writes policies.
    Admin,
}

#[derive(Subcommand, Debug)]
pub(crate) enum FleetUserCommand {
    /// Create an etcd user (if it does not exist) and give it a role of
    /// the fleet (as etcd's root user).
    Add {
        #[command(flatten)]
        config: ConfigArg,
        name: String,
        #[arg(long, value_enum)]
        role: FleetRole,
        /// A file holding the new user's password (its first line);
        /// without one the user authenticates by client certificate only.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ApprovalsCommand {
    /// Ask for a time-boxed exception: a grant for a policy's jobs (or one
    /// running job) to reach a destination.
    Request {
        #[command(flatten)]
        config: ConfigArg,
        /// Every job under this policy.
        #[arg(long, required_unless_present = "job", conflicts_with = "job")]
        policy: Option<String>,
        /// Only this running `geowall exec` job.
        #[arg(long)]
        job: Option<String>,
        /// The destination: an address, a CIDR, a host name
        /// (api.partner.eu, or *.partner.eu for the names below it: the
        /// addresses the jobs resolve from it through the agent), or a
        /// region as policies name them: a country (DE), a cloud region
        /// (aws:eu-west-1, aws:eu-*), a group (EU, or one of [groups]). An
        /// address or name may end in its port: 203.0.113.5:443,
        /// [2001:db8::5]:443, api.partner.eu:443.
        #[arg(long)]
        to: String,
        /// Only this destination port (default: any).
        #[arg(long)]
        port: Option<u16>,
        /// How long the grant should last ("2h"), at most the policy's
        /// max_grant.
        #[arg(long = "for")]
        for_: String,
        /// Why: shown to approvers and kept in the audit log.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Requests and grants (approvers see all; anyone else their own).
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only pending requests.
        #[arg(long)]
        pending: bool,
        /// A JSON array of {"id", "state", "policy", "job", "cgroup", "to",
        /// "port", "requested_by", "reason", "expires", …}.
        #[arg(long)]
        json: bool,
        /// Every host's requests, from the fleet's etcd (ids are NODE/ID).
        #[arg(long)]
        fleet: bool,
    },
    /// Approve a pending request: the grant is written into the kernel.
    Approve {
        #[command(flatten)]
        config: ConfigArg,
        /// The request: its id, or with --fleet NODE/ID.
        id: String,
        /// Write the decision to the fleet's etcd (as [fleet] user), for
        /// the host that made the request; wait for it to confirm.
        #[arg(long)]
        fleet: bool,
        /// How long the grant lasts (default: what was asked), at most the
        /// policy's max_grant.
        #[arg(long = "for")]
        for_: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a pending request.
    Deny {
        #[command(flatten)]
        config: ConfigArg,
        /// The request: its id, or with --fleet NODE/ID.
        id: String,
        /// Through the fleet's etcd (see approve --fleet).
        #[arg(long)]
        fleet: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// End a live grant early.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The grant: its id, or with --fleet NODE/ID.
        id: String,
        /// Through the fleet's etcd (see approve --fleet).
        #[arg(long)]
        fleet: bool,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum MapCommand {
    /// What the map says about addresses: tags, matched prefix, and which
    /// source said so. From the running agent's tables, or, with --source,
    /// straight from the named sources with no agent at all.
    Lookup {
        #[command(flatten)]
        config: ConfigArg,
        /// A map source, KIND:PATH (mmdb, aws, gcp, azure, geofeed, cidr) or
        /// `builtin`; repeat for several (later ones win on the country).
        #[arg(long = "source", value_name = "KIND:PATH")]
        sources: Vec<String>,
        /// One JSON array, an object per address.
        #[arg(long)]
        json: bool,
        /// Addresses to look up.
        #[arg(required = true)]
        addrs: Vec<String>,
    },
    /// Counts: networks per source, prefixes per family before and after
    /// aggregation, per region, kernel memory, load time.
    Stats {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long = "source", value_name = "KIND:PATH")]
        sources: Vec<String>,
        #[arg(long)]
        json: bool,
        /// Regions listed (by IPv4 addresses; all of them with --json).
        #[arg(long, default_value_t = 20)]
        regions: usize,
    },
    /// What moves region between two maps, each named as KIND:PATH,
    /// `builtin`, or a config file (its [[maps]]).
    Diff {
        old: String,
        new: String,
        #[arg(long)]
        json: bool,
        /// Changed prefixes listed per change (all of them with --json).
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// Tell the running agent to re-read its map sources and switch tables.
    Load {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print the map's tagged ranges as the fewest CIDRs, one per line, to
    /// feed other tools: all of them, or those inside or outside a set of
    /// regions.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long = "source", value_name = "KIND:PATH")]
        sources: Vec<String>,
        /// Only ranges with none of these regions (countries, groups, cloud
        /// regions; comma separated), local ranges excluded: "everything a
        /// policy allowing them would deny".
        #[arg(long, value_delimiter = ',', conflicts_with = "inside")]
        outside: Vec<String>,
        /// Only ranges with one of these regions.
        #[arg(long, value_delimiter = ',')]
        inside: Vec<String>,
        /// 4, 6 or both.
        #[arg(long, default_value = "both")]
        family: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCommand {
    /// Validate policies and print what each one allows, resolved to
    /// countries and cloud regions. Without FILES, the config's policies
    /// (inline and its policy_dir); with FILES, those policy files, checked
    /// against the config's groups and maps (the built-in map when there is
    /// no config).
    Check {
        /// The agent's config file (default: /etc/geowall/geowall.toml when
        /// it exists).
        #[arg(long, short = 'c', env = "GEOWALL_CONFIG")]
        config: Option<PathBuf>,
        /// Destinations the jobs' own control plane must reach
        /// (ADDR[:PORT] or NAME[:PORT], tcp): a warning names each policy
        /// that would deny one.
        #[arg(long = "must-reach", value_name = "ADDR[:PORT]|NAME[:PORT]")]
        must_reach: Vec<String>,
        /// Exit with status 1 when there is a warning.
        #[arg(long)]
        strict: bool,
        /// Policy files.
        files: Vec<PathBuf>,
    },
    /// The verdict the kernel gives destinations under a policy, and why:
    /// which rule or region prefix decided and which map sources tag it.
    /// Read from the running agent's kernel tables; with no agent, from the
    /// tables the config compiles to.
    Explain {
        #[arg(long, short = 'c', env = "GEOWALL_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The policy.
        #[arg(long, short = 'p')]
        policy: String,
        /// tcp or udp.
        #[arg(long, default_value = "tcp")]
        proto: String,
        /// Use the config's compiled tables even when the agent runs.
        #[arg(long)]
        offline: bool,
        /// One JSON object per destination, one per line.
        #[arg(long)]
        json: bool,
        /// Destinations: ADDR, ADDR:PORT, [IPv6]:PORT, or NAME[:PORT]: the
        /// name is resolved through `[dns] upstream` (else the host's
        /// /etc/resolv.conf) and each address explained as a job that
        /// resolved it would be judged (allow_names, deny_names).
        #[arg(required = true, value_name = "ADDR[:PORT]|NAME[:PORT]")]
        dests: Vec<String>,
    },
    /// Check the config and its policies, then have the running agent switch
    /// to them in one step (every bound cgroup at once). A config that does
    /// not check leaves the policies in force untouched.
    Apply {
        #[arg(long, short = 'c', env = "GEOWALL_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum LogCommand {
    /// Show flow records: the newest ones, those since a time, or all that
    /// come (--follow); filtered, one line each, or raw JSON, or counted
    /// (--summary).
    Tail(TailArgs),
    /// Check the hash chain and the sequence of the log's files; name the
    /// first line that breaks them. Exits 1 when one does.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// Files to check (default: the config's audit log and the files
        /// rotated out of it). Checked in the order of their records.
        files: Vec<PathBuf>,
        /// Machine-readable report.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub(crate) struct TailArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArg,
    /// Files to read (default: the config's audit log and the files
    /// rotated out of it). `-` reads records from standard input as they
    /// come, until it ends (an agent whose `audit_log` is `-`, piped in).
    pub(crate) files: Vec<PathBuf>,
    /// Only denials (deny and would_deny; lost-event records too).
    #[arg(long)]
    pub(crate) denied: bool,
    /// Keep printing records as they are written (across rotation).
    #[arg(long, short = 'f')]
    pub(crate) follow: bool,
    /// Only records since then: a duration ago (30s, 10m, 2h, 1d) or an RFC
    /// 3339 time.
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Show at most the last N matching records (default 20; with --since:
    /// all).
    #[arg(long, short = 'n')]
    pub(crate) lines: Option<usize>,
    /// Only this policy.
    #[arg(long)]
    pub(crate) policy: Option<String>,
    /// Only destinations tagged with this region, group (EU, EEA) or any of
    /// a comma-separated list; `untagged` for none.
    #[arg(long)]
    pub(crate) region: Option<String>,
    /// Only this job (a name, or a glob: `etl*`).
    #[arg(long)]
    pub(crate) job: Option<String>,
    /// Only this process name (a name, or a glob: `py*`).
    #[arg(long)]
    pub(crate) comm: Option<String>,
    /// Only destinations in this CIDR (or this address).
    #[arg(long)]
    pub(crate) dest: Option<String>,
    /// Only destinations the job resolved from this name, and its queries
    /// for it: `api.partner.eu` exactly, or `*.partner.eu` for the names
    /// below it.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// The raw records (JSON lines), as written.
    #[arg(long)]
    pub(crate) json: bool,
    /// Counts by policy × verdict × region over the records (with --since:
    /// over that window), by name, the denied destinations, lost events.
    #[arg(long, conflicts_with_all = ["follow", "lines"])]
    pub(crate) summary: bool,
}

/// `--mode` of `geowall install`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum InstallMode {
    /// Judge and record, block nothing (the default for a new install).
    Audit,
    /// Block what the policies do not allow.
    Enforce,
}

impl From<InstallMode> for Mode {
    fn from(m: InstallMode) -> Mode {
        match m {
            InstallMode::Audit => Mode::Audit,
            InstallMode::Enforce => Mode::Enforce,
        }
    }
}

/// The shells completions are generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    pub(crate) const ALL: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];
}
