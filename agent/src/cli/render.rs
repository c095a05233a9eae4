//! `geowall log tail`'s views of records: one line each, coloured on a
//! terminal, and the summary by policy × verdict × region.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

/// The ANSI colour of a verdict or kind.
fn colour(word: &str) -> &'static str {
    match word {
        "deny" => "\x1b[1;31m",
        "would_deny" => "\x1b[1;33m",
        "allow" => "\x1b[32m",
        "lost" => "\x1b[1;35m",
        "allowed" => "\x1b[32m",
        _ => "\x1b[36m",
    }
}

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";

/// The time of a record to the millisecond (`2026-11-01T12:00:00.123Z`).
fn short_time(rec: &Value) -> String {
    let t = rec["time"].as_str().unwrap_or("?");
    match t.get(..23) {
        Some(head) if t.len() > 23 && t.ends_with('Z') => format!("{head}Z"),
        _ => t.to_owned(),
    }
}

fn s<'a>(rec: &'a Value, key: &str) -> &'a str {
    rec[key].as_str().unwrap_or("")
}

/// `127.20.0.1:8080/tcp`, `[::1]:53/udp`.
fn target(rec: &Value) -> String {
    let dst = s(rec, "dst");
    let proto = rec["proto"].as_str().unwrap_or("?");
    if dst.is_empty() {
        return format!("{proto} socket");
    }
    // A routing option refused at setsockopt: its first hop, where known.
    if rec["hook"] == "setsockopt" {
        let option = if dst.contains(':') {
            "IPV6_RTHDR"
        } else {
            "IP_OPTIONS"
        };
        return match dst {
            "0.0.0.0" => format!("{option} source route"),
            // IPV6_2292PKTOPTIONS, or a routing header refused whole.
            "::" => "IPv6 routing option".to_owned(),
            hop => format!("{option} via {hop}"),
        };
    }
    let port = rec["dport"].as_u64().unwrap_or(0);
    if dst.contains(':') {
        format!("[{dst}]:{port}/{proto}")
    } else {
        format!("{dst}:{port}/{proto}")
    }
}

/// The name the job resolved the destination from (the most recent), and
/// how many more it resolved to the same address: `api.partner.test`,
/// `api.partner.test (+2)`.
fn name_of(rec: &Value) -> Option<String> {
    let names = rec["names"].as_array()?;
    let first = names.first()?.as_str()?;
    Some(match names.len() {
        1 => first.to_owned(),
        n => format!("{first} (+{})", n - 1),
    })
}

/// The destination as a line shows it: the name first when the job
/// resolved it (`api.partner.test 127.20.0.1:443/tcp`), the address
/// inside a NAT64/6to4 address after it.
fn destination(rec: &Value) -> String {
    let mut out = match name_of(rec) {
        Some(name) => format!("{name} {}", target(rec)),
        None => target(rec),
    };
    if let Some(inner) = rec["inner"].as_str() {
        out.push_str(&format!(" (inner {inner})"));
    }
    out
}

/// The destination's tags, comma-separated (`untagged` when none).
pub(super) fn region_of(rec: &Value) -> String {
    let tags: Vec<&str> = rec["tags"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if tags.is_empty() {
        "untagged".into()
    } else {
        tags.join(",")
    }
}

/// One line for a record.
pub(super) fn compact(rec: &Value, colour_on: bool) -> String {
    let (c, r, d) = if colour_on {
        (
            colour(
                rec["kind"]
                    .as_str()
                    .or(rec["verdict"].as_str())
                    .unwrap_or(""),
            ),
            RESET,
            DIM,
        )
    } else {
        ("", "", "")
    };
    let time = short_time(rec);
    let Some(kind) = rec["kind"].as_str() else {
        let verdict = s(rec, "verdict");
        let arrow = if rec["direction"] == "inbound" {
            "←"
        } else {
            "→"
        };
        let mut line = format!(
            "{d}{time}{r} {c}{verdict:<10}{r} {} {}[{}] {arrow} {} {} ({}",
            s(rec, "policy"),
            s(rec, "comm"),
            rec["pid"],
            destination(rec),
            region_of(rec),
            s(rec, "reason"),
        );
        if let Some(p) = rec["prefix"].as_str() {
            line.push(' ');
            line.push_str(p);
        }
        line.push(')');
        if let Some(j) = rec["job"].as_str() {
            line.push_str(&format!(" job={j}"));
        }
        match rec["user"].as_str() {
            Some(u) => line.push_str(&format!(" user={u}")),
            None => line.push_str(&format!(" uid={}", rec["uid"])),
        }
        return line;
    };
    let what = match kind {
        "lost" => format!(
            "{}: {} events dropped by the kernel ({}); these decisions have no record of their own",
            rec["policy"].as_str().unwrap_or("(no policy)"),
            rec["count"],
            s(rec, "reason"),
        ),
        "allowed" => format!(
            "{} {} ×{} more in {} (first: seq {}){}",
            s(rec, "policy"),
            target(rec),
            rec["count"],
            s(rec, "window"),
            rec["first_seq"],
            rec["job"]
                .as_str()
                .map(|j| format!(" job={j}"))
                .unwrap_or_default(),
        ),
        "agent" => match s(rec, "event") {
            "recovered" => format!(
                "recovered: the previous agent did not stop cleanly (last record seq {})",
                rec["last_seq"]
            ),
            e => format!("{e} pid={}", rec["pid"]),
        },
        "config" => {
            let mut t = format!(
                "{} epoch {}: {} source(s), {} policies",
                s(rec, "event"),
                rec["epoch"],
                rec["sources"].as_array().map_or(0, Vec::len),
                rec["policies"].as_array().map_or(0, Vec::len),
            );
            if let Some(errors) = rec["errors"].as_array() {
                t.push_str(&format!(" — errors: {}", Value::Array(errors.clone())));
            }
            t
        }
        "job" => format!(
            "{} {} policy={}",
            s(rec, "event"),
            s(rec, "job"),
            s(rec, "policy")
        ),
        "dns" => query_line(rec),
        "approval" => approval_record(rec),
        "fleet" => fleet_record(rec),
        "log" => format!(
            "{}: continues {} (seq {})",
            s(rec, "event"),
            s(rec, "previous"),
            rec["previous_last_seq"]
        ),
        _ => {
            let mut rest = rec.as_object().cloned().unwrap_or_default();
            for k in ["v", "time", "seq", "kind", "prev"] {
                rest.remove(k);
            }
            Value::Object(rest).to_string()
        }
    };
    format!("{d}{time}{r} {c}{kind:<10}{r} {what}")
}

/// A `dns` record: `deny eu-only dig[42] tunnel.test A → NXDOMAIN
/// (deny_names) job=etl-1`.
fn query_line(rec: &Value) -> String {
    let answers: Vec<&str> = rec["answers"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut line = format!(
        "{} {} {}[{}] {} {} via {} →",
        s(rec, "verdict"),
        s(rec, "policy"),
        s(rec, "comm"),
        rec["pid"],
        rec["question"].as_str().unwrap_or("(no question)"),
        s(rec, "qtype"),
        s(rec, "resolver"),
    );
    if !answers.is_empty() {
        line.push(' ');
        line.push_str(&answers.join(", "));
    }
    if let Some(rcode) = rec["rcode"].as_str() {
        line.push_str(&format!(" {rcode}"));
    }
    if let Some(why) = rec["reason"].as_str() {
        line.push_str(&format!(" ({why})"));
    }
    if let Some(e) = rec["error"].as_str() {
        line.push_str(&format!(" error: {e}"));
    }
    if let Some(j) = rec["job"].as_str() {
        line.push_str(&format!(" job={j}"));
    }
    line
}

/// Counts by policy × verdict × region, and the denied destinations.
#[derive(Debug, Default)]
pub(super) struct Summary {
    records: u64,
    from: Option<String>,
    to: Option<String>,
    rows: BTreeMap<(String, String, String), Row>,
    dests: BTreeMap<(String, String, String, String), Dest>,
    /// Flows by (policy, verdict, name the job resolved the destination
    /// from): flows to addresses it never resolved are not here.
    names: BTreeMap<(String, String, String), NameRow>,
    lost: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct NameRow {
    flows: u64,
    addresses: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Row {
    flows: u64,
    dests: BTreeSet<String>,
    jobs: BTreeSet<String>,
    first: String,
    last: String,
}

#[derive(Debug, Default)]
struct Dest {
    flows: u64,
    comms: BTreeSet<String>,
    names: BTreeSet<String>,
}

impl Summary {
    /// Counts a record that passed the filter.
    pub(super) fn add(&mut self, rec: &Value) {
        self.records += 1;
        let time = s(rec, "time").to_owned();
        if self.from.is_none() {
            self.from = Some(time.clone());
        }
        self.to = Some(time.clone());
        let (verdict, flows) = match rec["kind"].as_str() {
            None => (s(rec, "verdict").to_owned(), 1),
            Some("allowed") => (
                rec["verdict"].as_str().unwrap_or("allow").to_owned(),
                rec["count"].as_u64().unwrap_or(0),
            ),
            Some("lost") => {
                let policy = rec["policy"].as_str().unwrap_or("(no policy)").to_owned();
                *self.lost.entry(policy).or_default() += rec["count"].as_u64().unwrap_or(0);
                return;
            }
            Some(_) => return,
        };
        let policy = s(rec, "policy").to_owned();
        let region = region_of(rec);
        let row = self
            .rows
            .entry((policy.clone(), verdict.clone(), region.clone()))
            .or_default();
        row.flows += flows;
        row.dests.insert(target(rec));
        if let Some(j) = rec["job"].as_str() {
            row.jobs.insert(j.to_owned());
        } else if let Some(c) = rec["cgroup"].as_str() {
            row.jobs.insert(c.to_owned());
        }
        if row.first.is_empty() {
            row.first = time.clone();
        }
        row.last = time;
        let name = rec["names"][0].as_str();
        if let Some(name) = name {
            let n = self
                .names
                .entry((policy.clone(), verdict.clone(), name.to_owned()))
                .or_default();
            n.flows += flows;
            n.addresses.insert(s(rec, "dst").to_owned());
        }
        if verdict != "allow" {
            let d = self
                .dests
                .entry((policy, verdict, target(rec), region))
                .or_default();
            d.flows += flows;
            if let Some(c) = rec["comm"].as_str() {
                d.comms.insert(c.to_owned());
            }
            d.names.extend(name.map(str::to_owned));
        }
    }

    pub(super) fn to_json(&self) -> Value {
        json!({
            "records": self.records,
            "from": self.from,
            "to": self.to,
            "rows": self.rows.iter().map(|((policy, verdict, region), r)| json!({
                "policy": policy, "verdict": verdict, "region": region, "flows": r.flows,
                "destinations": r.dests.len(), "jobs": r.jobs.len(),
                "first": r.first, "last": r.last,
            })).collect::<Vec<_>>(),
            "denied_destinations": self.dests.iter().map(|((policy, verdict, target, region), d)| json!({
                "policy": policy, "verdict": verdict, "destination": target, "region": region,
                "flows": d.flows, "comms": d.comms, "names": d.names,
            })).collect::<Vec<_>>(),
            "names": self.names.iter().map(|((policy, verdict, name), n)| json!({
                "policy": policy, "verdict": verdict, "name": name, "flows": n.flows,
                "addresses": n.addresses,
            })).collect::<Vec<_>>(),
            "lost": self.lost,
        })
    }

    /// The summary as a table.
    pub(super) fn render(&self, colour_on: bool) -> String {
        let mut out = String::new();
        let window = match (&self.from, &self.to) {
            (Some(a), Some(b)) => format!(" from {a} to {b}"),
            _ => String::new(),
        };
        out.push_str(&format!("{} records{window}\n", self.records));
        if self.rows.is_empty() {
            out.push_str("no flows\n");
        } else {
            let table: Vec<[String; 8]> = self
                .rows
                .iter()
                .map(|((p, v, reg), r)| {
                    [
                        p.clone(),
                        v.clone(),
                        reg.clone(),
                        r.flows.to_string(),
                        r.dests.len().to_string(),
                        r.jobs.len().to_string(),
                        r.first.get(..19).unwrap_or(&r.first).to_owned(),
                        r.last.get(..19).unwrap_or(&r.last).to_owned(),
                    ]
                })
                .collect();
            let head = [
                "POLICY", "VERDICT", "REGION", "FLOWS", "DESTS", "JOBS", "FIRST", "LAST",
            ];
            let mut w = head.map(str::len);
            for row in &table {
                for (i, c) in row.iter().enumerate() {
                    w[i] = w[i].max(c.chars().count());
                }
            }
            out.push('\n');
            let fmt_row = |cells: [&str; 8], verdict_colour: &str| {
                let mut line = String::new();
                for (i, c) in cells.iter().enumerate() {
                    let pad = w[i] - c.chars().count();
                    let (pre, post) = if i == 1 && !verdict_colour.is_empty() {
                        (verdict_colour, RESET)
                    } else {
                        ("", "")
                    };
                    if (3..=5).contains(&i) {
                        line.push_str(&format!("{}{pre}{c}{post}  ", " ".repeat(pad)));
                    } else {
                        line.push_str(&format!("{pre}{c}{post}{}  ", " ".repeat(pad)));
                    }
                }
                line.trim_end().to_owned() + "\n"
            };
            out.push_str(&fmt_row(head, ""));
            for row in &table {
                let c = if colour_on { colour(&row[1]) } else { "" };
                out.push_str(&fmt_row(row.each_ref().map(String::as_str), c));
            }
        }
        if !self.dests.is_empty() {
            out.push_str("\ndenied or would be denied, by destination:\n");
            let mut dests: Vec<_> = self.dests.iter().collect();
            dests.sort_by(|a, b| b.1.flows.cmp(&a.1.flows).then(a.0.cmp(b.0)));
            for ((policy, verdict, target, region), d) in dests.iter().take(20) {
                let names = d.names.iter().cloned().collect::<Vec<_>>().join(",");
                let target = if names.is_empty() {
                    target.clone()
                } else {
                    format!("{names} {target}")
                };
                out.push_str(&format!(
                    "  {policy}  {verdict}  {target}  {region}  {} flows  {}\n",
                    d.flows,
                    d.comms.iter().cloned().collect::<Vec<_>>().join(",")
                ));
            }
            if dests.len() > 20 {
                out.push_str(&format!("  … and {} more\n", dests.len() - 20));
            }
        }
        if !self.names.is_empty() {
            out.push_str("\nby name (destinations the jobs resolved):\n");
            let mut names: Vec<_> = self.names.iter().collect();
            names.sort_by(|a, b| b.1.flows.cmp(&a.1.flows).then(a.0.cmp(b.0)));
            for ((policy, verdict, name), n) in names.iter().take(20) {
                out.push_str(&format!(
                    "  {policy}  {verdict}  {name}  {} flows  {} address(es)\n",
                    n.flows,
                    n.addresses.len()
                ));
            }
            if names.len() > 20 {
                out.push_str(&format!("  … and {} more\n", names.len() - 20));
            }
        }
        if !self.lost.is_empty() {
            out.push_str(
                "\nlost events (decisions without a record; the counts above are lower bounds):\n",
            );
            for (policy, n) in &self.lost {
                out.push_str(&format!("  {policy}  {n}\n"));
            }
        }
        out
    }
}

/// Who an `approval` record names: an etcd user, a user name, a uid.
fn person(v: &Value) -> Option<String> {
    if let Some(u) = v["etcd_user"].as_str() {
        return Some(format!("etcd:{u}"));
    }
    if let Some(u) = v["user"].as_str() {
        return Some(u.to_owned());
    }
    v["uid"].as_u64().map(|u| format!("uid {u}"))
}

/// An `approval` record: `approved 3 eu-only -> 10.1.2.3/32:443 by etcd:alice (fleet /geowall/grants/alice/host-a/3@7) — why`.
fn approval_record(rec: &Value) -> String {
    let r = &rec["request"];
    let id = rec["id"].as_u64().or_else(|| r["id"].as_u64());
    let mut t = s(rec, "event").to_owned();
    if let Some(id) = id {
        t.push_str(&format!(" {id}"));
    }
    if r.is_object() {
        t.push_str(&format!(" {} -> {}", s(r, "policy"), s(r, "to")));
        if let Some(p) = r["port"].as_u64().filter(|p| *p != 0) {
            t.push_str(&format!(":{p}"));
        }
    }
    if let Some(by) = person(&rec["by"]) {
        t.push_str(&format!(" by {by}"));
    }
    if rec["fleet"].is_object() {
        t.push_str(&format!(
            " (fleet {}@{})",
            s(&rec["fleet"], "key"),
            rec["fleet"]["revision"]
        ));
    }
    if let Some(why) = rec["why"].as_str() {
        t.push_str(&format!(": {why}"));
    }
    if let Some(reason) = r["decision_reason"].as_str() {
        t.push_str(&format!(" — {reason}"));
    }
    t
}

/// A `fleet` record: the link to etcd, a policy applied or refused.
fn fleet_record(rec: &Value) -> String {
    let at = || format!("{}@{}", s(rec, "key"), rec["revision"]);
    match s(rec, "event") {
        "connected" => format!(
            "connected to etcd as {} (revision {})",
            s(rec, "node"),
            rec["revision"]
        ),
        "unreachable" => format!("etcd unreachable: {}", s(rec, "error")),
        "resync" => format!("reading the fleet afresh: {}", s(rec, "why")),
        "policy_applied" => format!("{} applied (epoch {})", at(), rec["epoch"]),
        "policy_removed" => format!("{} removed (epoch {})", at(), rec["epoch"]),
        "policy_refused" | "value_refused" => {
            format!("{} refused: {}", at(), s(rec, "error"))
        }
        e => format!("{e} {}", s(rec, "key")),
    }
}

/// One request as a line of text.
pub(super) fn approval_line(r: &geowall::approvals::ApprovalView) -> String {
    let scope = match (&r.job, &r.cgroup) {
        (Some(job), _) => format!("job {job}"),
        (_, Some(cg)) => format!("cgroup {cg}"),
        _ => format!("policy {}", r.policy),
    };
    let port = match r.port {
        0 => String::new(),
        p => format!(" port {p}"),
    };
    // A name: the addresses resolved from it so far.
    let to = match r.addresses.as_slice() {
        [] => r.to.clone(),
        [one] => format!("{} ({one})", r.to),
        [first, rest @ ..] => format!("{} ({first} and {} more)", r.to, rest.len()),
    };
    format!(
        "{:>5}  {:<8}  {} -> {}{}  for {}  by {}  until {}  ({})",
        r.id,
        r.state.as_str(),
        scope,
        to,
        port,
        r.for_,
        r.requested_by,
        r.expires,
        r.reason,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flow record as a line of the log reads (`policy` eu, port 443).
    fn flow(verdict: &str, dst: &str, tags: &str) -> Value {
        let line = format!(
            r#"{{"v":2,"time":"2026-11-01T12:00:00.123456789Z","seq":1,"verdict":"{verdict}","reason":"region","policy":"eu","tags":{tags},"prefix":"127.20.0.0/16","dst":"{dst}","dport":443,"proto":"tcp","pid":42,"comm":"curl","uid":0,"user":"root","cgroup":"/x/etl-1","job":"etl-1"}}"#
        );
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn the_compact_view() {
        let us = flow("deny", "127.20.0.1", r#"["US"]"#);
        assert_eq!(
            compact(&us, false),
            "2026-11-01T12:00:00.123Z deny       eu curl[42] → 127.20.0.1:443/tcp US (region 127.20.0.0/16) job=etl-1 user=root"
        );
        assert!(compact(&us, true).contains("\x1b[1;31mdeny"));
        let mut named = us.clone();
        named["names"] = json!(["api.partner.test", "edge.cdn.test"]);
        assert!(
            compact(&named, false)
                .contains("curl[42] → api.partner.test (+1) 127.20.0.1:443/tcp US"),
            "the name before the address"
        );
        let query = json!({"time": "2026-11-01T12:00:00.000000000Z", "kind": "dns", "verdict": "deny",
                           "policy": "eu", "comm": "dig", "pid": 7, "question": "tunnel.test", "qtype": "A",
                           "resolver": "127.0.0.53:53", "rcode": "NXDOMAIN", "reason": "deny_names", "job": "etl-1"});
        assert_eq!(
            compact(&query, false),
            "2026-11-01T12:00:00.000Z dns        deny eu dig[7] tunnel.test A via 127.0.0.53:53 → NXDOMAIN (deny_names) job=etl-1"
        );
        let mut rthdr = flow("deny", "fd00:dead::1", r#"["US"]"#);
        rthdr["hook"] = json!("setsockopt");
        assert!(compact(&rthdr, false).contains("curl[42] → IPV6_RTHDR via fd00:dead::1 US"));
        let mut ipopts = flow("deny", "0.0.0.0", "[]");
        ipopts["hook"] = json!("setsockopt");
        assert!(compact(&ipopts, false).contains("curl[42] → IP_OPTIONS source route untagged"));
        let v6 = flow("allow", "::1", "[]");
        assert!(compact(&v6, false).contains("[::1]:443/tcp untagged"));
        let lost = json!({"time": "2026-11-01T12:00:00.000000000Z", "kind": "lost", "policy": "eu", "count": 3, "reason": "ring buffer full"});
        assert_eq!(
            compact(&lost, false),
            "2026-11-01T12:00:00.000Z lost       eu: 3 events dropped by the kernel (ring buffer full); these decisions have no record of their own"
        );
    }

    #[test]
    fn the_summary_counts_by_policy_verdict_and_region() {
        let mut sum = Summary::default();
        for _ in 0..3 {
            sum.add(&flow("would_deny", "127.20.0.1", r#"["US"]"#));
        }
        sum.add(&flow("allow", "127.30.0.1", r#"["DE"]"#));
        let mut allowed = flow("allow", "127.30.0.1", r#"["DE"]"#);
        allowed["kind"] = json!("allowed");
        allowed["count"] = json!(10);
        sum.add(&allowed);
        sum.add(&json!({"kind": "lost", "policy": "eu", "count": 4, "time": "t"}));
        let j = sum.to_json();
        let rows = j["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["verdict"], "allow");
        assert_eq!(rows[0]["flows"], 11);
        assert_eq!(rows[1]["verdict"], "would_deny");
        assert_eq!(rows[1]["region"], "US");
        assert_eq!(rows[1]["flows"], 3);
        assert_eq!(j["lost"]["eu"], 4);
        assert_eq!(
            j["denied_destinations"][0]["destination"],
            "127.20.0.1:443/tcp"
        );
        let text = sum.render(false);
        assert!(text.contains("POLICY"), "{text}");
        assert!(text.contains("would_deny"), "{text}");
        assert!(text.contains("lower bounds"), "{text}");
    }

    #[test]
    fn the_summary_counts_by_name() {
        let mut sum = Summary::default();
        for dst in ["127.20.0.1", "127.20.0.2", "127.20.0.1"] {
            let mut r = flow("deny", dst, r#"["US"]"#);
            r["names"] = json!(["api.partner.test"]);
            sum.add(&r);
        }
        sum.add(&flow("deny", "127.20.0.9", r#"["US"]"#));
        let j = sum.to_json();
        assert_eq!(
            j["names"],
            json!([{"policy": "eu", "verdict": "deny", "name": "api.partner.test", "flows": 3,
                    "addresses": ["127.20.0.1", "127.20.0.2"]}]),
            "an address never resolved has no name row"
        );
        assert_eq!(
            j["denied_destinations"][0]["names"],
            json!(["api.partner.test"])
        );
        let text = sum.render(false);
        assert!(
            text.contains("eu  deny  api.partner.test  3 flows  2 address(es)"),
            "{text}"
        );
    }
}
