//! The agent's configuration file (TOML).
//!
//! Every key, commented, is in `config/geowall.example.toml`, the one
//! reference of the config (a test below parses it). `[agent]`, `[[maps]]`,
//! `[groups]` and `[[policy]]` are read here, `[audit]` as [`AuditConfig`],
//! the webhook address of `[approvals]` as [`WebhookUrl`].
//!
//! Policies may also live one per file in `[agent] policy_dir` (the same
//! keys as a `[[policy]]` table; the file name is the policy name unless
//! `name` says otherwise).
//!
//! Parsing is strict: unknown keys are errors (with the nearest known key
//! suggested), and every error names the file, line and column of the value
//! at fault.

use std::{
    collections::BTreeMap,
    fmt,
    ops::Range,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

mod audit;
pub mod dns;
pub mod fleet;
mod webhook;

use crate::regions::sources::DEFAULT_MAX_SOURCE_BYTES;
pub use audit::{AuditConfig, OnWriteFailure};
pub use dns::DnsConfig;
pub use fleet::FleetConfig;
pub use webhook::{WebhookUrl, WebhookUrlError};

/// An error in a config file, located.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{col}: {message}")]
    At {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// A file's path and text, to locate errors in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceText {
    /// The path as given (error messages use it).
    pub path: PathBuf,
    pub text: String,
}

impl SourceText {
    /// An error located at `span` of this file.
    pub fn error_at(&self, span: Range<usize>, message: impl fmt::Display) -> ConfigError {
        locate(&self.path, &self.text, span, message.to_string())
    }

    /// An error about the file as a whole.
    pub fn error(&self, message: impl fmt::Display) -> ConfigError {
        ConfigError::File {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }

    /// 1-based line of byte `offset`.
    pub fn line_of(&self, offset: usize) -> usize {
        line_col(&self.text, offset).0
    }
}

/// A policy as written: inline in the config or a file of `policy_dir`.
#[derive(Debug, Clone)]
pub struct PolicyDef {
    pub name: String,
    /// Where the name is written (`None`: it is the file's name).
    pub name_span: Option<Range<usize>>,
    /// The file the policy is written in.
    pub source: Arc<SourceText>,
    pub body: PolicyConfig,
}

impl PolicyDef {
    /// An error located at `span` of the policy's file, naming the policy.
    pub fn error_at(&self, span: Range<usize>, message: impl fmt::Display) -> ConfigError {
        self.source
            .error_at(span, format!("policy '{}': {message}", self.name))
    }

    /// An error about the policy as a whole (located at its name when it is
    /// written).
    pub fn error(&self, message: impl fmt::Display) -> ConfigError {
        match &self.name_span {
            Some(span) => self.error_at(span.clone(), message),
            None => self
                .source
                .error(format!("policy '{}': {message}", self.name)),
        }
    }

    /// `file:line` of the policy's definition.
    pub fn place(&self) -> String {
        match &self.name_span {
            Some(span) => format!(
                "{}:{}",
                self.source.path.display(),
                self.source.line_of(span.start)
            ),
            None => self.source.path.display().to_string(),
        }
    }
}

/// A loaded config file: its text (to locate errors), its contents, and the
/// policies of its `policy_dir`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The path as given (error messages use it).
    pub path: PathBuf,
    /// The folder relative paths in the file are resolved against (absolute
    /// when the file exists).
    dir: PathBuf,
    source: Arc<SourceText>,
    pub file: ConfigFile,
    /// Every policy: the inline `[[policy]]` tables, then the files of
    /// `policy_dir` in name order.
    pub policies: Vec<PolicyDef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub maps: Vec<MapConfig>,
    /// User-defined region groups: name → members (countries, groups, cloud
    /// regions).
    #[serde(default)]
    pub groups: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub policy: Vec<PolicyConfig>,
    /// `[audit]`: rotation, masking, the `log_allowed = "first"` window.
    #[serde(default)]
    pub audit: AuditConfig,
    /// `[approvals]`: just-in-time grants.
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    /// `[dns]`: the forwarder governed jobs' queries go through.
    #[serde(default)]
    pub dns: DnsConfig,
    /// `[fleet]`: the etcd cluster this host shares policies, approvals
    /// and its status through (absent: the host runs alone).
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
}

/// `[approvals]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// Where requests and grants are kept across restarts.
    pub state_dir: PathBuf,
    /// Members of this group (besides root) may list, approve, deny and
    /// revoke.
    pub group: String,
    /// A request nobody answers expires after this long.
    pub request_ttl: crate::vocab::units::Span,
    /// Whether a requester may approve their own request.
    pub allow_self_approval: bool,
    /// `http://host:port/path` that receives a JSON POST for each new
    /// request and each decision (off when unset).
    pub webhook: Option<WebhookUrl>,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            state_dir: "/var/lib/geowall/approvals".into(),
            group: "geowall-approvers".into(),
            request_ttl: crate::vocab::units::Span(std::time::Duration::from_secs(3600)),
            allow_self_approval: false,
            webhook: None,
        }
    }
}

/// `[agent]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// The cgroup subtree the agent governs, relative to the cgroup v2 mount
    /// (`/` = the whole host). Programs are attached here, once.
    pub cgroup: Option<Spanned<String>>,
    /// bpffs folder for pinned programs, links and maps.
    pub bpffs: PathBuf,
    /// Append-only audit log of flow records (`-` = standard output).
    pub audit_log: PathBuf,
    /// The control socket the CLI talks to.
    pub socket: PathBuf,
    /// Where `geowall exec` creates job cgroups, relative to the governed
    /// subtree.
    pub jobs_cgroup: String,
    /// Size of the kernel's flow-event ring buffer, KiB (a power of two).
    pub ring_buffer_kib: u32,
    /// Allow an enforcing policy on the cgroup v2 root itself (the whole
    /// host). Off by default: a mistake there cuts the host off.
    pub allow_host_enforce: bool,
    /// Largest map source file read, bytes.
    pub max_source_bytes: u64,
    /// A folder of policy files (`*.toml`, one policy each), relative to
    /// this file's folder.
    pub policy_dir: Option<Spanned<String>>,
    /// The policy of everything in the governed subtree that no other
    /// binding covers (bound to the governed cgroup itself).
    pub default_policy: Option<Spanned<String>>,
    /// What the agent does when a map source cannot be read at start.
    pub on_map_error: OnMapError,
    /// Address of the Prometheus metrics endpoint (`127.0.0.1:9780`); off
    /// when unset.
    pub metrics: Option<Spanned<String>>,
    /// The operator's NAT64 prefixes (RFC 6052: /32, /40, /48, /56, /64 or
    /// /96), besides the well-known `64:ff9b::/96` and `64:ff9b:1::/48`: a
    /// destination in one is judged by the IPv4 address inside as well.
    pub nat64: Vec<Spanned<String>>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            cgroup: None,
            bpffs: "/sys/fs/bpf/geowall".into(),
            audit_log: "/var/log/geowall/audit.jsonl".into(),
            socket: "/run/geowall/control.sock".into(),
            jobs_cgroup: "geowall.jobs".into(),
            ring_buffer_kib: geowall_common::DEFAULT_RING_BYTES / 1024,
            allow_host_enforce: false,
            max_source_bytes: DEFAULT_MAX_SOURCE_BYTES,
            policy_dir: None,
            default_policy: None,
            on_map_error: OnMapError::KeepLast,
            metrics: None,
            nat64: Vec::new(),
        }
    }
}

/// `[agent] on_map_error`: a map source that cannot be read when the agent
/// starts. (On a reload the tables in force always stay.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnMapError {
    /// Keep the tables the pins hold (a restart, an upgrade); refuse to
    /// start when there are none.
    #[default]
    KeepLast,
    /// Start with no region map: every governed destination but local ones
    /// is denied (fail closed).
    DenyAll,
    /// Start with no region map and every governed destination allowed
    /// (fail open), recorded as such.
    AllowAll,
}

/// `[[maps]]`. With no `[[maps]]` at all, the built-in country database is
/// the map.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapConfig {
    /// `mmdb`, `aws`, `gcp`, `azure`, `geofeed`, `cidr` or `builtin`.
    pub kind: Spanned<String>,
    /// The file, relative to the config's folder (not for `builtin`).
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// `mmdb`/`builtin`: the dotted record field holding the country code
    /// (default: `country.iso_code`, then `registered_country.iso_code`, then
    /// `country_code`).
    #[serde(default)]
    pub field: Option<Spanned<String>>,
}

/// `[[policy]]`, or a policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Required inline; a policy file is named after the file by default.
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// What the policy is for (shown by `geowall policy check`).
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    /// Region codes, groups and cloud regions the policy allows.
    #[serde(default)]
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
    /// Regions carved out of the allowed ones: a destination carrying any of
    /// these tags is denied even when another of its tags is allowed.
    #[serde(default)]
    pub deny: Option<Spanned<Vec<Spanned<String>>>>,
    /// Destinations no map tags.
    #[serde(default = "Action::deny")]
    pub untagged: Action,
    /// Local destinations (loopback, private, link-local, multicast).
    #[serde(default = "Action::allow")]
    pub local: Action,
    /// CIDR rules, checked before the region lookup: `"10.0.0.0/8 tcp/5432
    /// allow"` or `{ cidr = …, action = …, proto = …, port = … }`.
    #[serde(default)]
    pub rules: Vec<Spanned<toml::Value>>,
    /// cgroups the policy governs, relative to the governed subtree.
    #[serde(default)]
    pub cgroups: Vec<Spanned<String>>,
    /// systemd units (globs allowed) whose cgroups the policy governs.
    #[serde(default)]
    pub unit: Option<Spanned<OneOrMany>>,
    /// Whether allowed flows are recorded too.
    #[serde(default)]
    pub log_allowed: LogAllowed,
    /// Raw and packet sockets (they bypass the address hooks).
    #[serde(default = "Action::deny")]
    pub raw_sockets: Action,
    /// Ping sockets (ICMP over datagram sockets; no address hook sees their
    /// datagrams).
    #[serde(default = "Action::deny")]
    pub ping: Action,
    /// Whether a denial may be approved: a just-in-time grant (see
    /// `[approvals]`).
    #[serde(default)]
    pub approvable: bool,
    /// The longest grant an approval may give under this policy.
    #[serde(default = "default_max_grant")]
    pub max_grant: crate::vocab::units::Span,
    /// Names (`api.partner.test`, `*.eu-central-1.amazonaws.com`): an
    /// address the job resolved from one of them is allowed whatever its
    /// regions, while the answer lives.
    #[serde(default)]
    pub allow_names: Vec<Spanned<String>>,
    /// Names whose queries are answered NXDOMAIN (and recorded).
    #[serde(default)]
    pub deny_names: Vec<Spanned<String>>,
    /// A destination the job did not resolve through the agent is denied
    /// (local destinations and CIDR rules aside).
    #[serde(default)]
    pub resolved_only: bool,
    /// Which DNS queries become records.
    #[serde(default)]
    pub log_dns: LogDns,
    /// Distinct names a job may query per minute (a DNS tunnel asks many);
    /// past it, queries are refused and recorded. None: no limit.
    #[serde(default)]
    pub max_names_per_minute: Option<u32>,
    /// Connections to the job's listeners from out-of-region peers.
    #[serde(default)]
    pub inbound: Inbound,
}

fn default_max_grant() -> crate::vocab::units::Span {
    crate::vocab::units::Span(std::time::Duration::from_secs(4 * 3600))
}

impl PolicyConfig {
    /// `allow` as written (empty when absent).
    pub fn allow(&self) -> &[Spanned<String>] {
        self.allow
            .as_ref()
            .map(|a| a.get_ref().as_slice())
            .unwrap_or(&[])
    }

    /// `deny` as written (empty when absent).
    pub fn deny(&self) -> &[Spanned<String>] {
        self.deny
            .as_ref()
            .map(|a| a.get_ref().as_slice())
            .unwrap_or(&[])
    }
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    fn allow() -> Self {
        Action::Allow
    }
    fn deny() -> Self {
        Action::Deny
    }
}

/// `log_dns`: which queries of the policy's jobs become `dns` records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogDns {
    All,
    /// Refused queries (a denied name, the rate limit) and failed ones.
    #[default]
    Denied,
    None,
}

/// `inbound`: connections to the policy's listeners.
///
/// `allow` is the default because judging costs every governed socket on
/// the host a program run per packet it receives (cgroup_skb has no
/// narrower hook without BPF LSM): on the benchmark, ~50 ns per packet,
/// which alone takes TCP connect+close and UDP below the floor of 0.98
/// and 0.95 of no filtering. A policy whose jobs listen sets `judge`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Inbound {
    /// Judged by the peer's address like a destination; a denied one is
    /// dropped and recorded.
    Judge,
    #[default]
    Allow,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogAllowed {
    All,
    /// The first connection per job, destination and port in `[audit]
    /// allowed_window`, then a count.
    First,
    #[default]
    None,
}

/// A CIDR rule: `{ cidr = "10.0.0.0/8", action = "allow" }`, optionally
/// narrowed to a protocol (`proto = "tcp"`) and port or range
/// (`port = 5432`, `port = "8000-8099"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub cidr: String,
    pub action: Action,
    #[serde(default)]
    pub proto: Option<String>,
    #[serde(default)]
    pub port: Option<PortSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    One(u16),
    Range(String),
}

impl Config {
    /// Reads and parses `path`, and the policy files of its `policy_dir`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read(path)?;
        let mut config = Self::parse(path, text)?;
        config.load_policy_dir()?;
        Ok(config)
    }

    /// Parses `text` as the contents of `path` (its `policy_dir` is not
    /// read: [`Config::load`] does that).
    pub fn parse(path: &Path, text: String) -> Result<Config, ConfigError> {
        let dir = std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| path.parent().unwrap_or(Path::new(".")).to_path_buf());
        let source = Arc::new(SourceText {
            path: path.to_path_buf(),
            text,
        });
        let file: ConfigFile = parse_toml(&source)?;
        let mut policies = Vec::with_capacity(file.policy.len());
        for body in &file.policy {
            let Some(name) = &body.name else {
                return Err(source
                    .error("a [[policy]] table needs a name (name = \"eu-only\")".to_string()));
            };
            policies.push(PolicyDef {
                name: name.get_ref().clone(),
                name_span: Some(name.span()),
                source: Arc::clone(&source),
                body: body.clone(),
            });
        }
        let config = Config {
            path: path.to_path_buf(),
            dir,
            source,
            file,
            policies,
        };
        config.check_audit()?;
        Ok(config)
    }

    /// `[agent] policy_dir`, resolved.
    pub fn policy_dir(&self) -> Option<PathBuf> {
        self.file
            .agent
            .policy_dir
            .as_ref()
            .map(|d| self.resolve_path(d.get_ref()))
    }

    /// The policy files of `policy_dir`: `*.toml`, hidden files skipped,
    /// in name order.
    pub fn policy_files(&self) -> Result<Vec<PathBuf>, ConfigError> {
        let (Some(dir), Some(written)) = (self.policy_dir(), &self.file.agent.policy_dir) else {
            return Ok(Vec::new());
        };
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            self.error_at(
                written.span(),
                format!("policy_dir '{}': {e}", dir.display()),
            )
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| {
                self.error_at(
                    written.span(),
                    format!("policy_dir '{}': {e}", dir.display()),
                )
            })?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".toml") {
                continue;
            }
            files.push(entry.path());
        }
        files.sort();
        Ok(files)
    }

    fn load_policy_dir(&mut self) -> Result<(), ConfigError> {
        for path in self.policy_files()? {
            let def = load_policy_file(&path)?;
            self.policies.push(def);
        }
        Ok(())
    }

    /// An error located at `span` of this file.
    pub fn error_at(&self, span: Range<usize>, message: impl fmt::Display) -> ConfigError {
        self.source.error_at(span, message)
    }

    /// An error about the file as a whole.
    pub fn error(&self, message: impl fmt::Display) -> ConfigError {
        self.source.error(message)
    }

    /// A path named in this file: relative paths are relative to the file's
    /// folder.
    pub fn resolve_path(&self, p: impl AsRef<Path>) -> PathBuf {
        let p = p.as_ref();
        if p.is_absolute() {
            return p.to_path_buf();
        }
        self.dir.join(p)
    }

    /// `[agent] socket`, resolved.
    pub fn socket_path(&self) -> PathBuf {
        self.resolve_path(&self.file.agent.socket)
    }

    /// `[agent] bpffs`, resolved.
    pub fn bpffs_path(&self) -> PathBuf {
        self.resolve_path(&self.file.agent.bpffs)
    }

    /// What parsing alone cannot check in `[audit]` and `[agent] metrics`:
    /// masking patterns compile, the metrics address is one.
    fn check_audit(&self) -> Result<(), ConfigError> {
        let audit = &self.file.audit;
        for pattern in &audit.mask {
            if let Err(e) = regex_lite::Regex::new(pattern.get_ref()) {
                return Err(self.error_at(pattern.span(), format!("bad mask pattern: {e}")));
            }
        }
        if audit.allowed_window.0.is_zero() {
            return Err(self.error("[audit] allowed_window must be longer than 0"));
        }
        if let Some(m) = &self.file.agent.metrics {
            self.metrics_addr(m)?;
        }
        if let Err(e) = self.file.dns.check() {
            return Err(match e.span {
                Some(span) => self.error_at(span, e.message),
                None => self.error(e.message),
            });
        }
        self.nat64_prefixes()?;
        if let Some(fleet) = &self.file.fleet
            && let Err(e) = fleet.check()
        {
            return Err(match e.span {
                Some(span) => self.error_at(span, e.message),
                None => self.error(e.message),
            });
        }
        Ok(())
    }

    /// `[agent] nat64`, parsed: each prefix and its length.
    pub fn nat64_prefixes(&self) -> Result<Vec<(std::net::Ipv6Addr, u8)>, ConfigError> {
        let mut out = Vec::new();
        for p in &self.file.agent.nat64 {
            let bad =
                |why: &str| self.error_at(p.span(), format!("nat64: '{}' {why}", p.get_ref()));
            let (addr, len) = p
                .get_ref()
                .split_once('/')
                .ok_or_else(|| bad("is not a prefix (\"2001:db8:64::/96\")"))?;
            let addr: std::net::Ipv6Addr =
                addr.parse().map_err(|_| bad("is not an IPv6 prefix"))?;
            let len: u8 = len.parse().map_err(|_| bad("has no length"))?;
            if ![32, 40, 48, 56, 64, 96].contains(&len) {
                return Err(bad(
                    "has a length RFC 6052 does not define (32, 40, 48, 56, 64 or 96)",
                ));
            }
            let bits = u128::from(addr);
            if len < 128 && bits << len != 0 {
                return Err(bad("has bits set past its length"));
            }
            out.push((addr, len));
        }
        if out.len() > geowall_common::MAX_NAT64_PREFIXES as usize {
            return Err(self.error(format!(
                "[agent] nat64: at most {} prefixes",
                geowall_common::MAX_NAT64_PREFIXES
            )));
        }
        Ok(out)
    }

    fn metrics_addr(&self, m: &Spanned<String>) -> Result<std::net::SocketAddr, ConfigError> {
        m.get_ref().parse().map_err(|_| {
            self.error_at(
                m.span(),
                format!(
                    "metrics: '{}' is not an address and port (e.g. \"127.0.0.1:9780\")",
                    m.get_ref()
                ),
            )
        })
    }

    /// `[agent] metrics`, parsed (None: off).
    pub fn metrics_address(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        self.file
            .agent
            .metrics
            .as_ref()
            .map(|m| self.metrics_addr(m))
            .transpose()
    }

    /// `[agent] audit_log`, resolved; `-` (standard output) stays `-`.
    pub fn audit_log_path(&self) -> PathBuf {
        let log = &self.file.agent.audit_log;
        if log.as_os_str() == "-" {
            return log.clone();
        }
        self.resolve_path(log)
    }

    /// The governed subtree as written (`/` when not set).
    pub fn governed_cgroup(&self) -> &str {
        self.file
            .agent
            .cgroup
            .as_ref()
            .map(|s| s.get_ref().as_str())
            .unwrap_or("/")
    }

    pub fn text(&self) -> &str {
        &self.source.text
    }

    /// The config file's own text, shared.
    pub fn source(&self) -> &Arc<SourceText> {
        &self.source
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads one policy file: a `[[policy]]` table's keys at the top level; the
/// file's name (without `.toml`) is the policy's name unless `name` says
/// otherwise.
pub fn load_policy_file(path: &Path) -> Result<PolicyDef, ConfigError> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_policy(path, read(path)?, &stem)
}

/// Parses one policy's text as the contents of `path` (a file, or where a
/// fleet policy came from: `etcd /geowall/policies/eu-only@42`); its name
/// is `default_name` unless `name` says otherwise.
pub fn parse_policy(
    path: &Path,
    text: String,
    default_name: &str,
) -> Result<PolicyDef, ConfigError> {
    let source = Arc::new(SourceText {
        path: path.to_path_buf(),
        text,
    });
    let body: PolicyConfig = parse_toml(&source)?;
    let (name, name_span) = match &body.name {
        Some(n) => (n.get_ref().clone(), Some(n.span())),
        None => (default_name.to_owned(), None),
    };
    Ok(PolicyDef {
        name,
        name_span,
        source,
        body,
    })
}

/// Deserializes a whole file, locating errors and suggesting the nearest
/// known key for an unknown one.
fn parse_toml<T: serde::de::DeserializeOwned>(source: &SourceText) -> Result<T, ConfigError> {
    toml::from_str::<T>(&source.text).map_err(|e| {
        let message = with_key_suggestion(e.message().trim());
        match e.span() {
            Some(span) => source.error_at(span, message),
            None => source.error(message),
        }
    })
}

/// serde names an unknown key as "unknown field `x`, expected one of `a`,
/// `b`": add the likeliest intended key.
pub fn with_key_suggestion(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_owned();
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return message.to_owned();
    };
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match crate::regions::suggest(field, known.iter().copied()) {
        Some(s) => format!("{message} (did you mean `{s}`?)"),
        None => message.to_owned(),
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

fn locate(path: &Path, text: &str, span: Range<usize>, message: String) -> ConfigError {
    let (line, col) = line_col(text, span.start);
    ConfigError::At {
        path: path.to_path_buf(),
        line,
        col,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("g.toml"), s.to_owned())
    }

    #[test]
    fn defaults_fill_an_empty_file() {
        let c = parse("").unwrap();
        assert_eq!(c.governed_cgroup(), "/");
        assert_eq!(c.file.agent.bpffs, Path::new("/sys/fs/bpf/geowall"));
        assert!(c.file.policy.is_empty());
    }

    #[test]
    fn reads_a_full_policy() {
        let c = parse(
            r#"
[agent]
cgroup = "/test"
[[maps]]
kind = "cidr"
path = "m.cidr"
[[policy]]
name = "eu-only"
mode = "audit"
allow = ["EU", "CH"]
untagged = "allow"
rules = [{ cidr = "10.0.0.0/8", action = "allow", proto = "tcp", port = 5432 },
         { cidr = "10.9.0.0/16", action = "deny", port = "8000-8099" }]
cgroups = ["/batch"]
log_allowed = "all"
"#,
        )
        .unwrap();
        let p = &c.file.policy[0];
        assert_eq!(p.name.as_ref().unwrap().get_ref(), "eu-only");
        assert_eq!(p.mode, Mode::Audit);
        assert_eq!(p.untagged, Action::Allow);
        assert_eq!(p.local, Action::Allow);
        assert_eq!(p.raw_sockets, Action::Deny);
        assert_eq!(p.rules.len(), 2);
        assert_eq!(p.log_allowed, LogAllowed::All);
        // Inbound judging costs every governed socket a program run per
        // received packet: asked for, never assumed.
        assert_eq!(p.inbound, Inbound::Allow);
        let p = &parse("[[policy]]\nname = \"l\"\ninbound = \"judge\"\n")
            .unwrap()
            .file
            .policy[0];
        assert_eq!(p.inbound, Inbound::Judge);
        assert_eq!(c.resolve_path("m.cidr"), Path::new("m.cidr"));
        assert_eq!(c.resolve_path("/abs/m.cidr"), Path::new("/abs/m.cidr"));
        assert_eq!(c.governed_cgroup(), "/test");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_located() {
        let err = parse("[agent]\ncgroup = \"/\"\nfoo = 1\n").unwrap_err();
        assert!(matches!(&err, ConfigError::At { line: 3, .. }), "{err}");
        assert!(err.to_string().contains("unknown field `foo`"), "{err}");
        let err = parse("[[policy]]\nname = \"x\"\nmode = \"enforcing\"\n").unwrap_err();
        assert!(err.to_string().starts_with("g.toml:3:"), "{err}");
        assert!(err.to_string().contains("enforce"), "{err}");
    }

    #[test]
    fn a_truncated_file_is_an_error_not_a_default() {
        let err = parse("[[policy]]\nname = \"x\"\nallow = [\"EU\",").unwrap_err();
        assert!(err.to_string().starts_with("g.toml:3:"), "{err}");
    }

    #[test]
    fn audit_keys_and_metrics_are_checked_and_located() {
        let c = parse("[agent]\nmetrics = \"127.0.0.1:9780\"\n[audit]\nrotate_size = \"1MiB\"\n[[policy]]\nname = \"p\"\nlog_allowed = \"first\"\n").unwrap();
        assert_eq!(c.metrics_address().unwrap().unwrap().port(), 9780);
        assert_eq!(c.file.audit.rotate_size.0, 1 << 20);
        assert_eq!(c.file.policy[0].log_allowed, LogAllowed::First);
        let err = parse("[agent]\nmetrics = \"localhost\"\n").unwrap_err();
        assert!(err.to_string().starts_with("g.toml:2:11:"), "{err}");
        let err = parse("[audit]\nmask = [\"ok\", \"(\"]\n").unwrap_err();
        assert!(
            err.to_string().starts_with("g.toml:2:15: bad mask pattern"),
            "{err}"
        );
        let err = parse("[audit]\nrotate_age = \"soon\"\n").unwrap_err();
        assert!(err.to_string().contains("invalid duration"), "{err}");
    }

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    #[test]
    fn the_shipped_configs_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        for name in ["demo.toml", "geowall.example.toml"] {
            let c = Config::load(&root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!c.file.policy.is_empty(), "{name}");
        }
    }

    /// `cargo xtask run` governs the host's root cgroup: its config must
    /// block nothing (the agent's `--audit-only` would refuse it anyway)
    /// and redirect nobody's DNS.
    #[test]
    fn the_demo_config_is_audit_only() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/demo.toml");
        let c = Config::load(&path).unwrap();
        assert!(!c.file.agent.allow_host_enforce);
        // Nor does it redirect the host's DNS through the forwarder.
        assert!(!c.file.dns.enabled);
        for p in &c.policies {
            assert_eq!(p.body.mode, Mode::Audit, "{}", p.name);
        }
    }
}
