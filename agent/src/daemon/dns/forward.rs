//! The forwarder's sockets: UDP and TCP, on the configured IPv4 address
//! and `::1`, one port per slot. Each UDP query and each TCP connection is
//! served by a task of its own, so a slow resolver holds up nobody else.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use geowall_common::DNS_SLOTS;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::watch,
    task::JoinSet,
};

use super::{Attribution, Check, Dns, Learned, Origin, Outcome};
use crate::{
    daemon::stop::Stop,
    dns::wire::{self, Answer, rcode},
    host::sockdiag::Proto,
};

/// Largest DNS message (TCP; UDP answers are smaller).
const MAX_MESSAGE: usize = 65_535;
/// How long a TCP client may stay silent between queries.
const TCP_IDLE: Duration = Duration::from_secs(30);

/// The bound sockets, before they serve.
pub(in crate::daemon) struct Forwarder {
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
}

impl Forwarder {
    /// Binds every socket: `addr` (IPv4) and `::1`, ports `port` to
    /// `port + DNS_SLOTS - 1`, UDP and TCP. IPv6 is skipped (with a
    /// warning) where the host has no `::1`.
    pub(in crate::daemon) async fn bind(
        addr: std::net::Ipv4Addr,
        port: u16,
    ) -> std::io::Result<Forwarder> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut v6 = true;
        for slot in 0..DNS_SLOTS {
            let p = port + slot;
            let v4 = SocketAddr::new(IpAddr::V4(addr), p);
            udp.push(UdpSocket::bind(v4).await?);
            tcp.push(TcpListener::bind(v4).await?);
            if v6 {
                let a = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), p);
                match (UdpSocket::bind(a).await, TcpListener::bind(a).await) {
                    (Ok(u), Ok(t)) => {
                        udp.push(u);
                        tcp.push(t);
                    }
                    (Err(e), _) | (_, Err(e))
                        if e.kind() == std::io::ErrorKind::AddrNotAvailable =>
                    {
                        tracing::warn!("no ::1 on this host: the DNS forwarder serves IPv4 only");
                        v6 = false;
                    }
                    (Err(e), _) | (_, Err(e)) => return Err(e),
                }
            }
        }
        Ok(Forwarder { udp, tcp })
    }

    /// Serves until the agent stops.
    pub(in crate::daemon) async fn serve(self, dns: Arc<Dns>, stop: watch::Receiver<Stop>) {
        let mut tasks = JoinSet::new();
        for sock in self.udp {
            tasks.spawn(serve_udp(Arc::clone(&dns), Arc::new(sock), stop.clone()));
        }
        for listener in self.tcp {
            tasks.spawn(serve_tcp(Arc::clone(&dns), listener, stop.clone()));
        }
        while tasks.join_next().await.is_some() {}
    }
}

async fn serve_udp(dns: Arc<Dns>, sock: Arc<UdpSocket>, mut stop: watch::Receiver<Stop>) {
    let Ok(local) = sock.local_addr() else {
        return;
    };
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        tokio::select! {
            got = sock.recv_from(&mut buf) => match got {
                Ok((n, peer)) => {
                    let query = buf[..n].to_vec();
                    let (dns, sock) = (Arc::clone(&dns), Arc::clone(&sock));
                    tokio::spawn(async move { udp_query(&dns, &sock, local, peer, query).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "DNS forwarder: receiving");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

async fn udp_query(
    dns: &Dns,
    sock: &UdpSocket,
    local: SocketAddr,
    peer: SocketAddr,
    query: Vec<u8>,
) {
    let started = Instant::now();
    let origin = match dns.attribute(Proto::Udp, local, peer) {
        Attribution::Known(o) => o,
        Attribution::Shared(o) => {
            let reply = wire::error_reply(&query, rcode::REFUSED);
            if let Some(reply) = &reply {
                let _ = sock.send_to(reply, peer).await;
            }
            let outcome = Outcome {
                verdict: "refused",
                why: Some("dns_shared"),
                rcode: Some(rcode::REFUSED),
                answer: None,
                error: Some("another job's socket shares the sender's port".into()),
                took: started.elapsed(),
            };
            dns.finish(&o, &query, &outcome);
            return;
        }
        Attribution::Unknown => {
            dns.stats
                .unattributed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
    };
    let (reply, outcome) = answer(dns, &origin, &query, started).await;
    if let Some(reply) = reply {
        let _ = sock.send_to(&reply, peer).await;
    }
    dns.finish(&origin, &query, &outcome);
}

/// The reply to one query (`None`: none) and what happened: checked
/// against the job's policy, forwarded to the resolver the job asked,
/// learned.
async fn answer(
    dns: &Dns,
    origin: &Origin,
    query: &[u8],
    started: Instant,
) -> (Option<Vec<u8>>, Outcome) {
    if let Some(done) = answered_here(dns, origin, query, started) {
        return done;
    }
    let got = dns
        .upstreams
        .ask(origin.resolver(), query, dns.view().timeout)
        .await;
    settle(dns, origin, query, got, started)
}

/// What happened to a query, `took` since `started`.
fn outcome(
    started: Instant,
    verdict: &'static str,
    why: Option<&'static str>,
    rcode: Option<u8>,
    answer: Option<Answer>,
    error: Option<String>,
) -> Outcome {
    Outcome {
        verdict,
        why,
        rcode,
        answer,
        error,
        took: started.elapsed(),
    }
}

/// A query the job's policy answers without the resolver (a denied name,
/// the name rate) or drops (no question): its reply and outcome. `None`:
/// forward it.
fn answered_here(
    dns: &Dns,
    origin: &Origin,
    query: &[u8],
    started: Instant,
) -> Option<(Option<Vec<u8>>, Outcome)> {
    match dns.check(origin, query) {
        Check::Forward => None,
        Check::Answer {
            reply,
            verdict,
            why,
        } => {
            let code = reply.get(3).map(|b| b & 0x0f);
            Some((
                Some(reply),
                outcome(started, verdict, Some(why), code, None, None),
            ))
        }
        Check::Drop => Some((
            None,
            outcome(started, "refused", Some("no_question"), None, None, None),
        )),
    }
}

/// The reply to a forwarded query and its outcome, from what the resolver
/// answered (learned, then passed on) or its failure (SERVFAIL).
fn settle(
    dns: &Dns,
    origin: &Origin,
    query: &[u8],
    got: std::io::Result<Vec<u8>>,
    started: Instant,
) -> (Option<Vec<u8>>, Outcome) {
    match got {
        Ok(bytes) => {
            let (reply, learned) = dns.learn(origin, query, bytes);
            let code = reply.get(3).map(|b| b & 0x0f);
            let o = match learned {
                Learned::Answer(a) => outcome(started, "allow", None, code, Some(a), None),
                Learned::Denied(n, a) => outcome(
                    started,
                    "deny",
                    Some("deny_names"),
                    code,
                    Some(a),
                    Some(format!("the answer's CNAME chain reaches {n}")),
                ),
                Learned::Malformed(e) => {
                    outcome(started, "allow", Some("malformed"), code, None, Some(e))
                }
            };
            (Some(reply), o)
        }
        Err(e) => {
            dns.stats
                .upstream_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (
                wire::error_reply(query, rcode::SERVFAIL),
                outcome(
                    started,
                    "servfail",
                    Some("upstream"),
                    Some(rcode::SERVFAIL),
                    None,
                    Some(e.to_string()),
                ),
            )
        }
    }
}

async fn serve_tcp(dns: Arc<Dns>, listener: TcpListener, mut stop: watch::Receiver<Stop>) {
    loop {
        tokio::select! {
            got = listener.accept() => match got {
                Ok((stream, _)) => {
                    let dns = Arc::clone(&dns);
                    tokio::spawn(async move { tcp_connection(&dns, stream).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "DNS forwarder: accepting");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

/// One client connection: its queries in turn, each answered before the
/// next is read (answers come back in order), over one connection to the
/// resolver the job asked.
async fn tcp_connection(dns: &Dns, mut client: TcpStream) {
    let (Ok(local), Ok(peer)) = (client.local_addr(), client.peer_addr()) else {
        return;
    };
    // A TCP connection is found by its whole address pair: never shared.
    let Attribution::Known(origin) = dns.attribute(Proto::Tcp, local, peer) else {
        dns.stats
            .unattributed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return;
    };
    let timeout = dns.view().timeout;
    let mut upstream: Option<TcpStream> = None;
    loop {
        let query = match tokio::time::timeout(TCP_IDLE, read_message(&mut client)).await {
            Ok(Ok(Some(q))) => q,
            _ => return,
        };
        let started = Instant::now();
        let (reply, o) = match answered_here(dns, &origin, &query, started) {
            Some(done) => done,
            None => {
                let got = ask_tcp(&mut upstream, origin.resolver(), &query, timeout).await;
                if got.is_err() {
                    // A new connection for the next query.
                    upstream = None;
                }
                settle(dns, &origin, &query, got, started)
            }
        };
        dns.finish(&origin, &query, &o);
        let Some(reply) = reply else {
            continue;
        };
        if write_message(&mut client, &reply).await.is_err() {
            return;
        }
    }
}

/// Asks `resolver` over the TCP connection `conn` (opened when there is
/// none) and reads its answer.
async fn ask_tcp(
    conn: &mut Option<TcpStream>,
    resolver: SocketAddr,
    query: &[u8],
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let timed_out =
        |_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer from the resolver");
    if conn.is_none() {
        let stream = tokio::time::timeout_at(deadline, TcpStream::connect(resolver))
            .await
            .map_err(timed_out)??;
        *conn = Some(stream);
    }
    let stream = conn.as_mut().expect("connected above");
    tokio::time::timeout_at(deadline, write_message(stream, query))
        .await
        .map_err(timed_out)??;
    match tokio::time::timeout_at(deadline, read_message(stream))
        .await
        .map_err(timed_out)??
    {
        Some(answer) => Ok(answer),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the resolver closed the connection",
        )),
    }
}

/// A length-prefixed DNS message; `None` at a clean end of the stream.
async fn read_message(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut msg).await?;
    Ok(Some(msg))
}

async fn write_message(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "message too long"))?;
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out).await
}
