//! The Prometheus endpoint (`[agent] metrics = "127.0.0.1:9780"`, off by
//! default): `GET /metrics` answers in the OpenMetrics text format, which
//! Prometheus reads (the exposition is prometheus-client's).
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `geowall_up` | | 1 while the agent runs |
//! | `geowall_build_info` | `version` | 1 |
//! | `geowall_decisions_total` | `policy`, `verdict` | every decision, counted in the kernel |
//! | `geowall_flow_events_total` | `policy`, `verdict`, `region` | decisions the agent received as events (all denials; allowed flows where the policy logs them) |
//! | `geowall_allowed_repeats_total` | | allowed flows counted in `allowed` records instead of recorded one by one |
//! | `geowall_events_lost_total` | `policy` | events the kernel dropped (ring buffer full) |
//! | `geowall_audit_records_total` | `kind` | records written |
//! | `geowall_audit_bytes_total` | | bytes written |
//! | `geowall_audit_write_errors_total` | | failed writes |
//! | `geowall_audit_rotations_total` | | rotations |
//! | `geowall_audit_writable` | | 1 while the audit log can be written, 0 while it cannot |
//! | `geowall_audit_failing_since_seconds` | | Unix time since which it cannot be written (0 while it can) |
//! | `geowall_audit_records_held` | | records held in memory, waiting for the log |
//! | `geowall_audit_records_lost_total` | | records neither written nor held (declared in `lost` records) |
//! | `geowall_audit_refusing` | | 1 while governed jobs' new connections are refused for it (`on_write_failure = "deny"`) |
//! | `geowall_audit_refused_total` | `policy` | connections refused because the log could not be written |
//! | `geowall_map_prefixes` | `family` | kernel trie entries in force |
//! | `geowall_map_ranges` | `family` | tagged ranges of the map in force |
//! | `geowall_map_load_seconds` | | compile + install time of the tables in force |
//! | `geowall_map_loaded_timestamp_seconds` | | when they were installed |
//! | `geowall_map_age_seconds` | | how long ago |
//! | `geowall_table_epoch` | | the table epoch in force |
//! | `geowall_dns_queries_total` | `verdict` | queries of governed jobs: `allow` (forwarded), `deny` (NXDOMAIN, a denied name), `refused` (the name rate, a shared port), `servfail` (no answer) |
//! | `geowall_dns_unattributed_total` | | datagrams and connections to the forwarder no redirect vouched for (dropped) |
//! | `geowall_dns_upstream_failures_total` | | resolvers that did not answer in time |
//! | `geowall_dns_malformed_answers_total` | | answers that did not parse (passed on, nothing learned) |
//! | `geowall_dns_forward_seconds` | | histogram of the time from a query's arrival to its answer's |
//! | `geowall_dns_learned_entries`, `geowall_dns_learned_names` | | (job, address) pairs learned, names they refer to |
//! | `geowall_dns_names_per_minute` | `job` | distinct names each job asked in the last minute |
//!
//! The server is deliberately small: one request per connection, `GET` and
//! `HEAD` only, a 5 s limit to send the request.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock, atomic::Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use geowall_common::{MAX_POLICIES, counter};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use super::{
    audit_gate::AuditGate,
    dns::{Dns, LATENCY_BUCKETS},
    names::NameTable,
    stop::Stop,
};
use crate::{
    audit::log::{KINDS, LogStats},
    events::FlowStats,
    kernel::CounterReader,
    tables::codes::verdict_name,
};

/// Binds the endpoint (at start, so that a busy port fails the start).
pub(super) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let l = TcpListener::bind(addr).await?;
    tracing::info!(address = %l.local_addr()?, "metrics at http://{}/metrics", l.local_addr()?);
    Ok(l)
}

/// What the endpoint reads from.
pub(super) struct Exporter {
    names: Arc<RwLock<NameTable>>,
    dns: Option<Arc<Dns>>,
    flows: Arc<FlowStats>,
    log: Arc<LogStats>,
    bpffs: PathBuf,
    counters: Mutex<Option<CounterReader>>,
    gate: Option<Arc<AuditGate>>,
}

type Labels = Vec<(&'static str, String)>;

/// Everything one scrape shows, gathered first.
#[derive(Debug, Default)]
struct Snapshot {
    decisions: Vec<(Labels, u64)>,
    events: Vec<(Labels, u64)>,
    lost: Vec<(Labels, u64)>,
    repeats: u64,
    records: Vec<(Labels, u64)>,
    bytes: u64,
    write_errors: u64,
    rotations: u64,
    writable: bool,
    failing_since: f64,
    held: u64,
    records_lost: u64,
    refusing: bool,
    refused: Vec<(Labels, u64)>,
    prefixes: Vec<(Labels, i64)>,
    ranges: Vec<(Labels, i64)>,
    load_seconds: Option<f64>,
    loaded_at: Option<f64>,
    age: Option<f64>,
    epoch: Option<i64>,
    dns: Option<DnsSnapshot>,
}

/// The forwarder's figures.
#[derive(Debug, Default)]
struct DnsSnapshot {
    queries: Vec<(Labels, u64)>,
    unattributed: u64,
    upstream_failures: u64,
    malformed: u64,
    /// Cumulative (upper bound, count) pairs, the sum (s) and the count.
    latency: Vec<(f64, u64)>,
    latency_sum: f64,
    latency_count: u64,
    learned: i64,
    names: i64,
    per_job: Vec<(Labels, i64)>,
}

impl Exporter {
    pub(super) fn new(
        names: Arc<RwLock<NameTable>>,
        dns: Option<Arc<Dns>>,
        flows: Arc<FlowStats>,
        log: Arc<LogStats>,
        bpffs: &Path,
    ) -> Self {
        Self {
            names,
            dns,
            flows,
            log,
            bpffs: bpffs.to_path_buf(),
            counters: Mutex::new(None),
            gate: None,
        }
    }

    /// Shows whether `[audit] on_write_failure` refuses connections now.
    pub(super) fn with_audit_gate(mut self, gate: Arc<AuditGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        let names = {
            let n = self.names.read().expect("names lock");
            Names {
                policies: n.policies.clone(),
                regions: n.regions.clone(),
                installed: n.installed.clone(),
            }
        };
        let policy = |slot: u32| -> String {
            if slot >= MAX_POLICIES {
                return "(none)".into();
            }
            names
                .policies
                .get(slot as usize)
                .cloned()
                .flatten()
                .unwrap_or_else(|| format!("slot {slot}"))
        };
        {
            let mut counters = self.counters.lock().expect("counters lock");
            if counters.is_none() {
                *counters = CounterReader::open(&crate::kernel::Pins::new(&self.bpffs))
                    .inspect_err(
                        |e| tracing::warn!(error = %crate::vocab::error::Chain(e), "metrics: cannot read the kernel counters"),
                    )
                    .ok();
            }
            if let Some(c) = counters.as_ref() {
                let slots = names
                    .policies
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.is_some())
                    .map(|(i, _)| i as u32)
                    .chain([MAX_POLICIES]);
                for slot in slots {
                    let Some(row) = c.row(slot) else { continue };
                    for (idx, verdict) in [
                        (counter::ALLOWED, "allow"),
                        (counter::DENIED, "deny"),
                        (counter::WOULD_DENY, "would_deny"),
                    ] {
                        if slot < MAX_POLICIES || row[idx] > 0 {
                            snap.decisions.push((
                                vec![("policy", policy(slot)), ("verdict", verdict.into())],
                                row[idx],
                            ));
                        }
                    }
                    if slot < MAX_POLICIES || row[counter::AUDIT_REFUSED] > 0 {
                        snap.refused
                            .push((vec![("policy", policy(slot))], row[counter::AUDIT_REFUSED]));
                    }
                    if slot < MAX_POLICIES || row[counter::EVENTS_DROPPED] > 0 {
                        snap.lost
                            .push((vec![("policy", policy(slot))], row[counter::EVENTS_DROPPED]));
                    }
                }
            }
        }
        let region = |ntags: u8, tags: &[u16]| -> String {
            if ntags == u8::MAX {
                return "(other)".into();
            }
            let t: Vec<String> = tags[..usize::from(ntags).min(tags.len())]
                .iter()
                .map(|id| {
                    names
                        .regions
                        .get(usize::from(*id))
                        .cloned()
                        .flatten()
                        .unwrap_or_else(|| format!("region#{id}"))
                })
                .collect();
            if t.is_empty() {
                "untagged".into()
            } else {
                t.join(",")
            }
        };
        let mut events: Vec<(Labels, u64)> = self
            .flows
            .events
            .lock()
            .expect("stats lock")
            .iter()
            .map(|(k, n)| {
                (
                    vec![
                        ("policy", policy(u32::from(k.slot))),
                        ("verdict", verdict_name(k.verdict).to_owned()),
                        ("region", region(k.ntags, &k.tags)),
                    ],
                    *n,
                )
            })
            .collect();
        events.sort();
        snap.events = events;
        snap.repeats = self.flows.repeats.load(Ordering::Relaxed);
        snap.records = KINDS
            .iter()
            .enumerate()
            .map(|(i, k)| {
                (
                    vec![("kind", (*k).to_owned())],
                    self.log.records[i].load(Ordering::Relaxed),
                )
            })
            .collect();
        snap.bytes = self.log.bytes.load(Ordering::Relaxed);
        snap.write_errors = self.log.write_errors.load(Ordering::Relaxed);
        snap.rotations = self.log.rotations.load(Ordering::Relaxed);
        let health = self.log.health();
        snap.writable = health.failing_since.is_none();
        snap.failing_since = health.failing_since.map_or(0.0, |ns| ns as f64 / 1e9);
        snap.held = health.held;
        snap.records_lost = self.log.lost.load(Ordering::Relaxed);
        snap.refusing = self.gate.as_ref().is_some_and(|g| g.refusing());
        if let Some(i) = &names.installed {
            snap.prefixes = vec![
                (vec![("family", "ipv4".into())], i.trie_entries.0 as i64),
                (vec![("family", "ipv6".into())], i.trie_entries.1 as i64),
            ];
            snap.ranges = vec![
                (vec![("family", "ipv4".into())], i.ranges.0 as i64),
                (vec![("family", "ipv6".into())], i.ranges.1 as i64),
            ];
            snap.load_seconds = Some(i.load_time.as_secs_f64());
            let at = i.at.duration_since(UNIX_EPOCH).unwrap_or_default();
            snap.loaded_at = Some(at.as_secs_f64());
            snap.age = Some(
                SystemTime::now()
                    .duration_since(i.at)
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
            snap.epoch = Some(i.epoch as i64);
        }
        snap.dns = self.dns.as_ref().map(|d| self.dns_snapshot(d));
        snap
    }

    fn dns_snapshot(&self, dns: &Dns) -> DnsSnapshot {
        let status = dns.status();
        let stats = &dns.stats;
        let mut cumulative = 0;
        let mut latency = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        for (i, bound) in LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .enumerate()
        {
            cumulative += stats.latency[i].load(Ordering::Relaxed);
            latency.push((bound, cumulative));
        }
        let names = self.names.read().expect("names lock");
        let per_job = dns
            .names_per_minute()
            .into_iter()
            .map(|(scope, n)| {
                let job = names
                    .jobs
                    .get(&scope)
                    .or_else(|| names.cgroups.get(&scope))
                    .cloned()
                    .unwrap_or_else(|| format!("cgroup#{scope}"));
                (vec![("job", job)], n as i64)
            })
            .collect();
        DnsSnapshot {
            queries: vec![
                (vec![("verdict", "allow".into())], status.forwarded),
                (vec![("verdict", "deny".into())], status.denied),
                (vec![("verdict", "refused".into())], status.refused),
                (vec![("verdict", "servfail".into())], status.failed),
            ],
            unattributed: status.unattributed,
            upstream_failures: status.upstream_failures,
            malformed: status.malformed,
            latency_count: cumulative,
            latency,
            latency_sum: stats.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            learned: status.learned as i64,
            names: status.names as i64,
            per_job,
        }
    }

    /// The exposition text of one scrape.
    pub(super) fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.snapshot()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String");
        out
    }
}

/// The parts of the name table a scrape reads.
struct Names {
    policies: Vec<Option<String>>,
    regions: Vec<Option<String>>,
    installed: Option<super::names::Installed>,
}

fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauges<V: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, V)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl DnsSnapshot {
    fn encode(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let none = Labels::new;
        counters(
            enc,
            "geowall_dns_queries",
            "DNS queries of governed jobs, by what the forwarder did",
            &self.queries,
        )?;
        counters(
            enc,
            "geowall_dns_unattributed",
            "Datagrams and connections to the forwarder that no redirect vouched for (dropped)",
            &[(none(), self.unattributed)],
        )?;
        counters(
            enc,
            "geowall_dns_upstream_failures",
            "Resolvers that did not answer in time",
            &[(none(), self.upstream_failures)],
        )?;
        counters(
            enc,
            "geowall_dns_malformed_answers",
            "Answers that did not parse (passed on, nothing learned)",
            &[(none(), self.malformed)],
        )?;
        let mut m = enc.encode_descriptor(
            "geowall_dns_forward_seconds",
            "Time from a query's arrival at the forwarder to its answer",
            None,
            MetricType::Histogram,
        )?;
        m.encode_family(&none())?.encode_histogram::<Labels>(
            self.latency_sum,
            self.latency_count,
            &self.latency,
            None,
        )?;
        gauges(
            enc,
            "geowall_dns_learned_entries",
            "(job, address) pairs the jobs resolved",
            &[(none(), self.learned)],
        )?;
        gauges(
            enc,
            "geowall_dns_learned_names",
            "Names those pairs refer to",
            &[(none(), self.names)],
        )?;
        gauges(
            enc,
            "geowall_dns_names_per_minute",
            "Distinct names each job asked in the last minute",
            &self.per_job,
        )
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(dns) = &self.dns {
            dns.encode(&mut enc)?;
        }
        let none = || Labels::new();
        gauges(
            &mut enc,
            "geowall_up",
            "1 while the agent runs",
            &[(none(), 1i64)],
        )?;
        gauges(
            &mut enc,
            "geowall_build_info",
            "The agent's version",
            &[(vec![("version", geowall_common::VERSION.into())], 1i64)],
        )?;
        counters(
            &mut enc,
            "geowall_decisions",
            "Decisions, counted in the kernel",
            &self.decisions,
        )?;
        counters(
            &mut enc,
            "geowall_flow_events",
            "Decisions the agent received as events (every denial; allowed flows where the policy logs them), by the destination's region tags",
            &self.events,
        )?;
        counters(
            &mut enc,
            "geowall_allowed_repeats",
            "Allowed flows counted in 'allowed' records instead of recorded one by one (log_allowed = first)",
            &[(none(), self.repeats)],
        )?;
        counters(
            &mut enc,
            "geowall_events_lost",
            "Flow events the kernel dropped because the ring buffer was full (each reported in a 'lost' record)",
            &self.lost,
        )?;
        counters(
            &mut enc,
            "geowall_audit_records",
            "Audit log records written, by kind",
            &self.records,
        )?;
        counters(
            &mut enc,
            "geowall_audit_bytes",
            "Audit log bytes written",
            &[(none(), self.bytes)],
        )?;
        counters(
            &mut enc,
            "geowall_audit_write_errors",
            "Failed writes to the audit log",
            &[(none(), self.write_errors)],
        )?;
        counters(
            &mut enc,
            "geowall_audit_rotations",
            "Audit log rotations",
            &[(none(), self.rotations)],
        )?;
        gauges(
            &mut enc,
            "geowall_audit_writable",
            "1 while the audit log can be written, 0 while writes fail",
            &[(none(), i64::from(self.writable))],
        )?;
        gauges(
            &mut enc,
            "geowall_audit_failing_since_seconds",
            "Unix time since which the audit log cannot be written (0 while it can)",
            &[(none(), self.failing_since)],
        )?;
        gauges(
            &mut enc,
            "geowall_audit_records_held",
            "Records held in memory while the audit log cannot be written",
            &[(none(), self.held as i64)],
        )?;
        counters(
            &mut enc,
            "geowall_audit_records_lost",
            "Records neither written nor held while the audit log could not be written (declared in 'lost' records once it can)",
            &[(none(), self.records_lost)],
        )?;
        gauges(
            &mut enc,
            "geowall_audit_refusing",
            "1 while governed jobs' new connections are refused because the audit log cannot be written (on_write_failure = deny)",
            &[(none(), i64::from(self.refusing))],
        )?;
        counters(
            &mut enc,
            "geowall_audit_refused",
            "Connections refused because the audit log could not be written, counted in the kernel",
            &self.refused,
        )?;
        if self.epoch.is_some() {
            gauges(
                &mut enc,
                "geowall_map_prefixes",
                "Region trie entries in the kernel",
                &self.prefixes,
            )?;
            gauges(
                &mut enc,
                "geowall_map_ranges",
                "Tagged address ranges of the map in force",
                &self.ranges,
            )?;
        }
        let one = |name: &str, help: &str, v: Option<f64>, enc: &mut DescriptorEncoder| match v {
            Some(v) => gauges(enc, name, help, &[(none(), v)]),
            None => Ok(()),
        };
        one(
            "geowall_map_load_seconds",
            "Compile and install time of the tables in force",
            self.load_seconds,
            &mut enc,
        )?;
        one(
            "geowall_map_loaded_timestamp_seconds",
            "When the tables in force were installed (Unix time)",
            self.loaded_at,
            &mut enc,
        )?;
        one(
            "geowall_map_age_seconds",
            "Seconds since the tables in force were installed",
            self.age,
            &mut enc,
        )?;
        if let Some(e) = self.epoch {
            gauges(
                &mut enc,
                "geowall_table_epoch",
                "The table epoch in force",
                &[(none(), e)],
            )?;
        }
        Ok(())
    }
}

/// Serves scrapes until told to stop.
pub(super) async fn serve(
    listener: TcpListener,
    exporter: Exporter,
    mut stop: watch::Receiver<Stop>,
) {
    let exporter = Arc::new(exporter);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let exporter = Arc::clone(&exporter);
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &exporter).await {
                            tracing::debug!(error = %e, "metrics request");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

/// Reads one request and answers it.
async fn answer(mut stream: TcpStream, exporter: &Exporter) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || head.len() > 16 * 1024 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .is_err()
    {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&head);
    let mut first = text.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let openmetrics = text
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("accept:") && l.contains("openmetrics"));
    let (status, kind, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            if openmetrics {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            } else {
                "text/plain; version=0.0.4; charset=utf-8"
            },
            exporter.render(),
        ),
        ("GET" | "HEAD", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "geowall agent: metrics at /metrics\n".to_owned(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_owned(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        response.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&response).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::pipeline::StatKey;
    use std::io::{Read, Write};

    #[tokio::test]
    async fn a_scrape_over_loopback_reads_the_exposition() {
        let names = Arc::new(RwLock::new(NameTable::default()));
        {
            let mut n = names.write().unwrap();
            n.policies = vec![None, Some("eu-only".into())];
            n.regions = vec![Some("local".into()), Some("US".into())];
        }
        let flows = Arc::new(FlowStats::default());
        flows.events.lock().unwrap().insert(
            StatKey {
                slot: 1,
                verdict: 1,
                ntags: 1,
                tags: [1, 0, 0, 0, 0, 0],
            },
            3,
        );
        let log = Arc::new(LogStats::default());
        log.records[0].fetch_add(5, Ordering::Relaxed);
        let exporter = Exporter::new(names, None, flows, log, Path::new("/nonexistent"));
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_tx, rx) = watch::channel(Stop::Running);
        tokio::spawn(serve(listener, exporter, rx));
        let body = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(
                b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\n\r\n",
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .await
        .unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
        assert!(body.contains("application/openmetrics-text"), "{body}");
        assert!(body.contains("\ngeowall_up 1\n"), "{body}");
        assert!(
            body.contains(
                "geowall_flow_events_total{policy=\"eu-only\",verdict=\"deny\",region=\"US\"} 3"
            ),
            "{body}"
        );
        assert!(
            body.contains("geowall_audit_records_total{kind=\"flow\"} 5"),
            "{body}"
        );
        assert!(body.contains("\ngeowall_audit_writable 1\n"), "{body}");
        assert!(
            body.contains("\ngeowall_audit_failing_since_seconds 0.0\n"),
            "{body}"
        );
        assert!(
            body.contains("\ngeowall_audit_records_lost_total 0\n"),
            "{body}"
        );
        assert!(body.trim_end().ends_with("# EOF"), "{body}");
        let nf = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /nope HTTP/1.0\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .await
        .unwrap();
        assert!(nf.starts_with("HTTP/1.1 404"), "{nf}");
    }
}
