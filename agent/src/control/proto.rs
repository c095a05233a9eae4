//! The control protocol, version 1: one JSON object per line over a UNIX
//! stream socket; each request gets exactly one response line.
//!
//! Request:  `{"v":1,"op":"job_start","policy":"eu-only","job":"etl","pid":4242}`
//! Response: `{"v":1,"ok":true,"result":{...}}` or
//!           `{"v":1,"ok":false,"error":{"code":"unknown_policy","message":"..."}}`
//!
//! Callers are identified by the kernel (SO_PEERCRED), never by what they
//! claim in a request.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use crate::approvals::ApprovalView;
use crate::{
    events::Refused,
    regions::query::{Answer, MapStats},
    tables::explain::{Explanation, Target},
};

pub const VERSION: u32 = 1;

/// One call of the protocol: its request (`Self`, sent as [`Request`]) and
/// the result a successful response carries. The client and the server
/// both go through it, so the two sides cannot disagree on a call's types.
pub trait Call: Into<Request> {
    /// The `result` of the response.
    type Result: Serialize + DeserializeOwned;
}

/// A request, tagged by `op`: one variant per call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status(GetStatus),
    JobStart(JobStart),
    JobEnd(JobEnd),
    Reload(Reload),
    MapLoad(MapLoad),
    MapLookup(MapLookup),
    MapStats(GetMapStats),
    PolicyExplain(PolicyExplain),
    Shutdown(Shutdown),
    ApprovalRequest(ApprovalAsk),
    ApprovalsList(ApprovalsList),
    ApprovalApprove(ApprovalApprove),
    ApprovalDeny(ApprovalDeny),
    ApprovalRevoke(ApprovalRevoke),
    JobRefusals(JobRefusals),
}

/// Declares each call: its request type, its variant of [`Request`], and
/// its result type.
macro_rules! calls {
    ($($request:ident => $variant:ident: $result:ty;)+) => {
        $(
            impl From<$request> for Request {
                fn from(r: $request) -> Request {
                    Request::$variant(r)
                }
            }

            impl Call for $request {
                type Result = $result;
            }
        )+
    };
}

calls! {
    GetStatus => Status: AgentStatus;
    JobStart => JobStart: JobStarted;
    JobEnd => JobEnd: ();
    Reload => Reload: Switched;
    MapLoad => MapLoad: Switched;
    MapLookup => MapLookup: Vec<Answer>;
    GetMapStats => MapStats: MapStats;
    PolicyExplain => PolicyExplain: Vec<Explanation>;
    Shutdown => Shutdown: ();
    ApprovalAsk => ApprovalRequest: ApprovalView;
    ApprovalsList => ApprovalsList: Vec<ApprovalView>;
    ApprovalApprove => ApprovalApprove: ApprovalView;
    ApprovalDeny => ApprovalDeny: ApprovalView;
    ApprovalRevoke => ApprovalRevoke: ApprovalView;
    JobRefusals => JobRefusals: RefusalsSince;
}

/// `status`: what is running, loaded and bound.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetStatus {}

/// `job_start`: create a job cgroup under `policy`, bind it, and move
/// process `pid` (a child of the caller that has not exec'd yet) into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStart {
    pub policy: String,
    #[serde(default)]
    pub job: Option<String>,
    pub pid: u32,
}

/// `job_end`: the job's main process has exited: remove its cgroup once it
/// is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEnd {
    pub job: String,
}

/// `reload`: re-read the config and switch tables (root only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reload {}

/// `map_load`: re-read the map sources (and the config) and switch tables
/// (root only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapLoad {}

/// `map_lookup`: what the map in force says about addresses, and which
/// sources said so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapLookup {
    pub addrs: Vec<String>,
}

/// `map_stats`: counts of the map in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetMapStats {}

/// `policy_explain`: the verdict the kernel's tables give each target under
/// `policy`, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyExplain {
    pub policy: String,
    pub targets: Vec<Target>,
}

/// `shutdown`: stop the agent; `detach` also removes programs and pins
/// (root only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shutdown {
    #[serde(default)]
    pub detach: bool,
}

/// `approvals_list`: requests and grants: all of them for root and
/// approvers, the caller's own for anyone else; `pending` keeps only
/// pending ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalsList {
    #[serde(default)]
    pub pending: bool,
}

/// `approval_approve`: approve request `id` (root and approvers; not one's
/// own request unless `[approvals] allow_self_approval`): writes the grant
/// into the kernel for `for` (default: what the request asked), capped by
/// the policy's `max_grant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalApprove {
    pub id: u32,
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `approval_deny`: deny pending request `id` (root and approvers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDeny {
    pub id: u32,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `approval_revoke`: end the live grant `id` early (root and approvers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRevoke {
    pub id: u32,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Result of `reload` and `map_load`: the tables now in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switched {
    pub epoch: u64,
    pub ipv4_ranges: usize,
    pub ipv6_ranges: usize,
    pub compile_ms: u64,
    pub install_ms: u64,
    /// What went wrong after the switch (which stands): a binding, a name,
    /// the inbound program. Empty: nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// `approval_request` (anyone): what a just-in-time request asks for: a scope (`policy`, or the running
/// `job`), a destination (`to`: an address, a CIDR, or a region as policies
/// name them — `DE`, `aws:eu-west-1`, `EU`; `port`, absent or 0 = any), a
/// length (`for`: `"2h"`) and a reason. The protocol stays v1: `to` only
/// accepts more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalAsk {
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub job: Option<String>,
    pub to: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(rename = "for")]
    pub for_: String,
    pub reason: String,
}

/// `job_refusals` (root and whoever started the job): the connections the
/// kernel refused job `job` (its cgroup and those below it), numbered from
/// 1, those above `after`. The first call starts following the job (make
/// it before the job runs: nothing earlier is kept). The answer comes at
/// once when there are some, else when one comes or after `wait_ms` (at
/// most 1,000: a long poll). `settle` first waits until the agent has read
/// every event the kernel had queued (the job's last refusals, once it
/// ended). The protocol stays v1: a new call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRefusals {
    pub job: String,
    #[serde(default)]
    pub after: u64,
    #[serde(default)]
    pub wait_ms: u32,
    #[serde(default)]
    pub settle: bool,
}

/// Longest `wait_ms` of `job_refusals` (a stopping agent answers within it).
pub const MAX_REFUSALS_WAIT_MS: u32 = 1000;

/// Result of `job_refusals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalsSince {
    pub refusals: Vec<RefusalEntry>,
    /// What to pass as `after` next.
    pub next: u64,
    /// Refusals dropped (the agent keeps 1,024 per job between polls) after
    /// `after`, not in `refusals`.
    pub missed: u64,
}

/// One refusal of `job_refusals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalEntry {
    /// Its number in the job's sequence.
    pub seq: u64,
    #[serde(flatten)]
    pub refused: Refused,
    /// Whether the policy takes approval requests (`approvable`).
    pub approvable: bool,
    /// How long a request should ask for ("1h", or the policy's
    /// `max_grant` when shorter), when it takes requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_for: Option<String>,
}

/// The envelope around a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub v: u32,
    #[serde(flatten)]
    pub request: Request,
}

/// Reads one request line: the request, or the error response it gets
/// (not JSON, another protocol version, an unknown `op`, a missing or
/// mistyped field). Never panics, whatever the input (fuzzed: see
/// `fuzz/`).
pub fn decode(line: &str) -> Result<Request, Response> {
    let value: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| Response::err(ErrorCode::BadRequest, format!("not JSON: {e}")))?;
    let version = value.get("v").and_then(|v| v.as_u64());
    if version != Some(u64::from(VERSION)) {
        return Err(Response::err(
            ErrorCode::UnsupportedVersion,
            format!("this agent speaks protocol v{VERSION}, the request says {version:?}"),
        ));
    }
    serde_json::from_value::<RequestEnvelope>(value)
        .map(|r| r.request)
        .map_err(|e| Response::err(ErrorCode::BadRequest, e.to_string()))
}

/// Error codes a response can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnsupportedVersion,
    PermissionDenied,
    UnknownPolicy,
    UnknownJob,
    InvalidConfig,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    /// The answer to call `C`: its result.
    pub fn result<C: Call>(result: &C::Result) -> Self {
        Self::ok(result)
    }

    fn ok(result: impl Serialize) -> Self {
        Self {
            v: VERSION,
            ok: true,
            result: Some(serde_json::to_value(result).unwrap_or(serde_json::Value::Null)),
            error: None,
        }
    }

    pub fn err(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            v: VERSION,
            ok: false,
            result: None,
            error: Some(ErrorBody {
                code,
                message: message.into(),
            }),
        }
    }
}

/// Result of `job_start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStarted {
    pub job: String,
    /// cgroup path relative to the cgroup v2 mount.
    pub cgroup: String,
    pub policy: String,
    /// Whether the job may open raw and packet sockets (the policy allows
    /// them, or is in audit mode). When it may not, `geowall exec` also drops
    /// CAP_NET_RAW from the job (the kernel check for packet sockets needs BPF
    /// LSM, which not every kernel allows).
    pub raw_sockets: bool,
    /// Whether the policy only audits: `geowall exec`'s seccomp filter then
    /// logs what it would refuse (an older agent: false).
    #[serde(default)]
    pub audit: bool,
}

/// Result of `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub version: String,
    pub pid: u32,
    pub epoch: u64,
    pub governed: String,
    pub policies: Vec<PolicyStatus>,
    pub jobs: Vec<JobStatus>,
    pub sources: Vec<SourceStatus>,
    /// Disjoint ranges of the map in force.
    pub ipv4_ranges: usize,
    pub ipv6_ranges: usize,
    pub events_dropped: u64,
    /// Live just-in-time grants (as `approvals list --json` shows them).
    #[serde(default)]
    pub grants: Vec<ApprovalView>,
    /// The approvals webhook, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookStatus>,
    /// Why the programs cannot tell a socket's cgroup (a socket passed
    /// between cgroups is then judged by its callers' policies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_cgroups_unavailable: Option<String>,
    /// The DNS forwarder.
    #[serde(default)]
    pub dns: DnsStatus,
    /// Paths out of the governed subtree that no program on this host
    /// judges, and what closes them instead (the README's threat model
    /// says more).
    #[serde(default)]
    pub open_paths: Vec<String>,
    /// The audit log: whether it can be written.
    #[serde(default)]
    pub audit: AuditStatus,
    /// The fleet link (`[fleet]`; absent: the host runs alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetLinkStatus>,
}

/// The audit log in `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditStatus {
    /// `[agent] audit_log`.
    pub log: String,
    /// The last write worked.
    pub writable: bool,
    /// Since when it cannot be written (RFC 3339), while it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    /// The last failed write: its error and when (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_time: Option<String>,
    /// Failed writes since the agent started.
    #[serde(default)]
    pub write_errors: u64,
    /// Records held in memory, waiting for the log to be writable.
    #[serde(default)]
    pub held: u64,
    /// Records the agent could neither write nor hold, since it started
    /// (each declared in a `lost` record once the log can be written), and
    /// since the current failure began.
    #[serde(default)]
    pub lost: u64,
    #[serde(default)]
    pub lost_now: u64,
    /// `[audit] on_write_failure`: `continue` or `deny`.
    #[serde(default)]
    pub on_write_failure: String,
    /// Governed jobs' new connections are being refused (`deny`, and the
    /// log cannot be written).
    #[serde(default)]
    pub refusing: bool,
    /// Connections refused because the log could not be written (the
    /// kernel's count, all policies).
    #[serde(default)]
    pub refused: u64,
}

/// The host's link to its fleet, in `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetLinkStatus {
    pub node: String,
    pub prefix: String,
    pub endpoints: Vec<String>,
    /// Whether etcd answers now.
    pub connected: bool,
    /// RFC 3339: since when it answers (or not).
    pub since: Option<String>,
    /// Why etcd cannot be reached, while it cannot.
    pub unreachable: Option<String>,
    /// The etcd revision the fleet state applied here was read at.
    pub revision: i64,
    /// The fleet policies in force here: `NAME@REVISION`.
    pub policies: Vec<String>,
    /// Fleet values this host refused (their key, revision and why); the
    /// previous state stays in force.
    pub refused: Vec<String>,
    /// Requests not yet written to etcd (opened while it was away).
    pub unpublished: usize,
}

/// The DNS forwarder in `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsStatus {
    /// Governed jobs' DNS goes through the forwarder (`[dns] enabled`).
    pub enabled: bool,
    /// Where it listens (IPv4 address; IPv6: `::1`) and its first port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// (job, address) pairs learned, names they refer to, and pairs let go
    /// for lack of room.
    #[serde(default)]
    pub learned: usize,
    #[serde(default)]
    pub names: usize,
    #[serde(default)]
    pub evicted: u64,
    /// Queries forwarded, denied (NXDOMAIN for a denied name), refused
    /// (the name rate; a shared port), failed (SERVFAIL: no answer).
    #[serde(default)]
    pub forwarded: u64,
    #[serde(default)]
    pub denied: u64,
    #[serde(default)]
    pub refused: u64,
    #[serde(default)]
    pub failed: u64,
    /// Datagrams and connections no redirect vouched for (dropped).
    #[serde(default)]
    pub unattributed: u64,
    #[serde(default)]
    pub upstream_failures: u64,
    #[serde(default)]
    pub malformed: u64,
}

/// A notification given up: after its last failed attempt, or at once
/// when the queue was full (`attempts` 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookFailure {
    pub url: String,
    /// The notification's `event` (`requested`, `approved`, …).
    pub event: String,
    /// The request it was about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<u64>,
    pub attempts: u32,
    /// What the last attempt ran into.
    pub error: String,
    /// When it was given up (RFC 3339).
    pub time: String,
}

/// The approvals webhook in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookStatus {
    pub url: String,
    /// Notifications given up since the agent started.
    pub failures: u64,
    /// The last of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<WebhookFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatus {
    pub name: String,
    pub mode: String,
    pub slot: u32,
    /// cgroups bound by the config: `cgroups`, matching units, and the
    /// governed cgroup for the default policy.
    pub cgroups: Vec<String>,
    /// systemd unit patterns the policy binds.
    #[serde(default)]
    pub units: Vec<String>,
    /// The host default policy (`[agent] default_policy`).
    #[serde(default)]
    pub default: bool,
    /// Running `geowall exec` jobs under the policy.
    #[serde(default)]
    pub jobs: usize,
    pub allowed: u64,
    pub denied: u64,
    pub would_deny: u64,
    /// Of `denied`: refused because the audit log could not be written.
    #[serde(default)]
    pub audit_refused: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    pub job: String,
    pub policy: String,
    pub cgroup: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// `KIND:PATH`.
    pub source: String,
    pub sha256: String,
    pub about: String,
    pub networks: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_answer_carries_its_problems_only_when_there_are_some() {
        let mut v = Switched {
            epoch: 3,
            ipv4_ranges: 1,
            ipv6_ranges: 0,
            compile_ms: 1,
            install_ms: 1,
            problems: vec![],
        };
        let line = serde_json::to_string(&v).unwrap();
        assert!(!line.contains("problems"), "{line}");
        // An older agent's answer (no field): no problems.
        assert_eq!(serde_json::from_str::<Switched>(&line).unwrap(), v);
        v.problems = vec!["attaching gw_ingress: EBUSY".into()];
        let line = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<Switched>(&line).unwrap(), v);
    }

    #[test]
    fn requests_round_trip_with_their_op_tag() {
        let req = RequestEnvelope {
            v: VERSION,
            request: Request::JobStart(JobStart {
                policy: "eu-only".into(),
                job: Some("etl".into()),
                pid: 4242,
            }),
        };
        let line = serde_json::to_string(&req).unwrap();
        assert_eq!(
            line,
            r#"{"v":1,"op":"job_start","policy":"eu-only","job":"etl","pid":4242}"#
        );
        assert_eq!(serde_json::from_str::<RequestEnvelope>(&line).unwrap(), req);
        let shutdown: RequestEnvelope = serde_json::from_str(r#"{"v":1,"op":"shutdown"}"#).unwrap();
        assert_eq!(
            shutdown.request,
            Request::Shutdown(Shutdown { detach: false })
        );
    }

    #[test]
    fn calls_without_arguments_are_their_op_alone() {
        let line = |request: Request| {
            serde_json::to_string(&RequestEnvelope {
                v: VERSION,
                request,
            })
            .unwrap()
        };
        assert_eq!(line(GetStatus {}.into()), r#"{"v":1,"op":"status"}"#);
        assert_eq!(line(Reload {}.into()), r#"{"v":1,"op":"reload"}"#);
        assert_eq!(line(GetMapStats {}.into()), r#"{"v":1,"op":"map_stats"}"#);
        assert_eq!(
            decode(r#"{"v":1,"op":"map_load","extra":1}"#).unwrap(),
            Request::MapLoad(MapLoad {})
        );
    }

    #[test]
    fn approval_requests_read_as_documented() {
        let req: RequestEnvelope = serde_json::from_str(
            r#"{"v":1,"op":"approval_request","policy":"eu","to":"10.0.0.0/8","for":"2h","reason":"copy"}"#,
        )
        .unwrap();
        assert_eq!(
            req.request,
            Request::ApprovalRequest(ApprovalAsk {
                policy: Some("eu".into()),
                job: None,
                to: "10.0.0.0/8".into(),
                port: None,
                for_: "2h".into(),
                reason: "copy".into(),
            })
        );
        let approve: RequestEnvelope =
            serde_json::from_str(r#"{"v":1,"op":"approval_approve","id":7,"for":"30m"}"#).unwrap();
        assert_eq!(
            approve.request,
            Request::ApprovalApprove(ApprovalApprove {
                id: 7,
                for_: Some("30m".into()),
                reason: None
            })
        );
        let list: RequestEnvelope =
            serde_json::from_str(r#"{"v":1,"op":"approvals_list"}"#).unwrap();
        assert_eq!(
            list.request,
            Request::ApprovalsList(ApprovalsList { pending: false })
        );
        // An id that is not a number is a bad request, not a crash.
        assert!(
            serde_json::from_str::<RequestEnvelope>(r#"{"v":1,"op":"approval_deny","id":"x"}"#)
                .is_err()
        );
    }

    #[test]
    fn malformed_lines_get_an_error_response() {
        let code = |line: &str| decode(line).unwrap_err().error.unwrap().code;
        assert_eq!(code("not json"), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"v":2,"op":"status"}"#),
            ErrorCode::UnsupportedVersion
        );
        assert_eq!(code(r#"{"op":"status"}"#), ErrorCode::UnsupportedVersion);
        assert_eq!(code(r#"{"v":1,"op":"nope"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"v":1,"op":"approval_approve","id":-1}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"v":1,"op":"approval_request","to":"x"}"#),
            ErrorCode::BadRequest
        );
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(code(&deep), ErrorCode::BadRequest);
        assert_eq!(
            decode(r#"{"v":1,"op":"status"}"#).unwrap(),
            Request::Status(GetStatus {})
        );
    }

    #[test]
    fn responses_carry_either_result_or_error() {
        let r = Response::err(ErrorCode::UnknownPolicy, "no policy 'x'");
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"v":1,"ok":false,"error":{"code":"unknown_policy","message":"no policy 'x'"}}"#
        );
    }
}
