//! The forwarder's UDP sockets toward resolvers: a few per resolver,
//! connected, each bound to a port the kernel picked at random, each with
//! a task reading its answers and handing every one to the query waiting
//! for it (by ID and question). Opening, connecting and closing a socket
//! per query cost a third of the forwarder's time; a pool of eight keeps
//! an off-path attacker guessing among eight random ports and 65,536 IDs
//! per query, and its sockets are replaced after [`MAX_AGE`], so a port
//! learned is soon worthless.
//!
//! A query whose ID is already waiting on every socket of the pool (two
//! jobs, one ID) is asked from a socket of its own, as is every query when
//! the pool cannot be made.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{net::UdpSocket, sync::oneshot};

use crate::dns::wire;

/// Sockets per resolver.
const POOL: usize = 8;
/// A socket is replaced after this long (its answers still reach their
/// queries).
const MAX_AGE: Duration = Duration::from_secs(30);
/// Largest UDP answer read.
const MAX_DATAGRAM: usize = 65_535;

/// One pooled socket and the queries waiting on it.
struct Member {
    sock: UdpSocket,
    waiting: Mutex<HashMap<u16, Waiter>>,
    born: Instant,
    retired: AtomicBool,
}

/// A query waiting for its answer: its question (name and type, as asked)
/// and where the answer goes.
struct Waiter {
    question: (String, u16),
    answer: oneshot::Sender<Vec<u8>>,
}

/// One resolver's sockets.
struct Pool {
    members: Mutex<Vec<Arc<Member>>>,
    next: AtomicUsize,
    /// A query is opening sockets for the pool (the others go on with the
    /// sockets there are).
    refreshing: AtomicBool,
}

/// Every resolver's pool.
#[derive(Default)]
pub(super) struct Upstreams {
    pools: Mutex<HashMap<SocketAddr, Arc<Pool>>>,
}

impl Upstreams {
    /// Asks `resolver` and waits (until `timeout`) for the answer with the
    /// query's ID and question.
    pub(super) async fn ask(
        &self,
        resolver: SocketAddr,
        query: &[u8],
        timeout: Duration,
    ) -> std::io::Result<Vec<u8>> {
        let q = wire::question(query)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let question = (q.name, q.qtype);
        let pool = self.pool(resolver);
        let Some((member, rx)) = pool.enlist(resolver, q.id, question).await else {
            return ask_alone(resolver, query, timeout).await;
        };
        let sent = member.sock.send(query).await;
        let outcome = match sent {
            Ok(_) => tokio::time::timeout(timeout, rx).await,
            Err(e) => {
                member.waiting.lock().expect("waiting lock").remove(&q.id);
                return Err(e);
            }
        };
        match outcome {
            Ok(Ok(answer)) => Ok(answer),
            // The reader ended (its socket failed): no answer will come.
            Ok(Err(_)) => Err(std::io::Error::other("the resolver's socket closed")),
            Err(_) => {
                member.waiting.lock().expect("waiting lock").remove(&q.id);
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer from the resolver",
                ))
            }
        }
    }

    fn pool(&self, resolver: SocketAddr) -> Arc<Pool> {
        let mut pools = self.pools.lock().expect("pools lock");
        Arc::clone(pools.entry(resolver).or_insert_with(|| {
            Arc::new(Pool {
                members: Mutex::new(Vec::new()),
                next: AtomicUsize::new(0),
                refreshing: AtomicBool::new(false),
            })
        }))
    }
}

impl Pool {
    /// A socket with no query of ID `id` waiting, and the waiter enlisted
    /// on it; `None` when every socket has one (or none can be made).
    async fn enlist(
        &self,
        resolver: SocketAddr,
        id: u16,
        question: (String, u16),
    ) -> Option<(Arc<Member>, oneshot::Receiver<Vec<u8>>)> {
        if self
            .refreshing
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.refresh(resolver).await;
            self.refreshing.store(false, Ordering::Release);
        }
        let members: Vec<Arc<Member>> = self.members.lock().expect("members lock").clone();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..members.len() {
            let member = &members[(start + i) % members.len()];
            let mut waiting = member.waiting.lock().expect("waiting lock");
            if waiting.contains_key(&id) {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            waiting.insert(
                id,
                Waiter {
                    question,
                    answer: tx,
                },
            );
            return Some((Arc::clone(member), rx));
        }
        None
    }

    /// Fills the pool to [`POOL`] sockets, replacing those older than
    /// [`MAX_AGE`].
    async fn refresh(&self, resolver: SocketAddr) {
        let wanted = {
            let members = self.members.lock().expect("members lock");
            let stale = members
                .iter()
                .filter(|m| m.born.elapsed() >= MAX_AGE)
                .count();
            POOL - members.len() + stale
        };
        if wanted == 0 {
            return;
        }
        let mut fresh = Vec::with_capacity(wanted);
        for _ in 0..wanted {
            match Member::open(resolver).await {
                Ok(m) => fresh.push(m),
                Err(e) => {
                    tracing::warn!(%resolver, error = %e, "cannot open a socket toward the resolver");
                    break;
                }
            }
        }
        let mut members = self.members.lock().expect("members lock");
        // Replace what is stale, fill what is missing.
        for m in members.iter_mut() {
            if m.born.elapsed() >= MAX_AGE
                && let Some(new) = fresh.pop()
            {
                m.retired.store(true, Ordering::Relaxed);
                *m = new;
            }
        }
        while members.len() < POOL {
            let Some(new) = fresh.pop() else { break };
            members.push(new);
        }
        for m in fresh {
            m.retired.store(true, Ordering::Relaxed);
        }
    }
}

impl Member {
    /// A socket connected to `resolver` on a port the kernel picks, and
    /// its reader.
    async fn open(resolver: SocketAddr) -> std::io::Result<Arc<Member>> {
        let any: SocketAddr = if resolver.is_ipv4() {
            "0.0.0.0:0".parse().expect("address")
        } else {
            "[::]:0".parse().expect("address")
        };
        let sock = UdpSocket::bind(any).await?;
        sock.connect(resolver).await?;
        let member = Arc::new(Member {
            sock,
            waiting: Mutex::new(HashMap::new()),
            born: Instant::now(),
            retired: AtomicBool::new(false),
        });
        tokio::spawn(read_answers(Arc::clone(&member)));
        Ok(member)
    }
}

/// Hands each answer to the query waiting for it: same ID, a response,
/// the same question where it reads (a late answer to an earlier query
/// with that ID is dropped). Ends when its socket fails, or once retired and no query
/// waits on it any more.
async fn read_answers(member: Arc<Member>) {
    let mut buf = Vec::with_capacity(MAX_DATAGRAM);
    loop {
        buf.clear();
        let got =
            tokio::time::timeout(Duration::from_secs(1), member.sock.recv_buf(&mut buf)).await;
        match got {
            Ok(Ok(n)) if n >= 12 && buf[2] & 0x80 != 0 => deliver(&member, &buf[..n]),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "a socket toward a resolver failed");
                // The waiters see their senders dropped: no answer.
                member.waiting.lock().expect("waiting lock").clear();
                return;
            }
            Err(_) => {}
        }
        if member.retired.load(Ordering::Relaxed)
            && member.waiting.lock().expect("waiting lock").is_empty()
        {
            return;
        }
    }
}

fn deliver(member: &Member, answer: &[u8]) {
    let id = u16::from_be_bytes([answer[0], answer[1]]);
    let mut waiting = member.waiting.lock().expect("waiting lock");
    // An answer whose question does not read goes to the query of its ID
    // (it is passed on and recorded as malformed); one that reads must
    // repeat the question asked.
    let matches = waiting
        .get(&id)
        .is_some_and(|w| match wire::question(answer) {
            Ok(q) => w.question.0 == q.name && w.question.1 == q.qtype,
            Err(_) => true,
        });
    if matches && let Some(w) = waiting.remove(&id) {
        let _ = w.answer.send(answer.to_vec());
    }
}

/// Asks `resolver` from a socket of its own (a new source port) and waits
/// for the answer with the query's ID.
pub(super) async fn ask_alone(
    resolver: SocketAddr,
    query: &[u8],
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    let any: SocketAddr = if resolver.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    };
    let sock = UdpSocket::bind(any).await?;
    sock.connect(resolver).await?;
    sock.send(query).await?;
    let id = query.get(..2).map(|b| [b[0], b[1]]);
    let mut buf = Vec::with_capacity(MAX_DATAGRAM);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        buf.clear();
        let n = tokio::time::timeout_at(deadline, sock.recv_buf(&mut buf))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer from the resolver")
            })??;
        // An answer to this query (a stray datagram is not).
        if n >= 12 && Some([buf[0], buf[1]]) == id && buf[2] & 0x80 != 0 {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}
