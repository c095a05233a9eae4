//! A stub resolver for the agent's own questions (`policy explain NAME`):
//! asks a resolver for a name's A and AAAA records, over UDP and, when the
//! answer is truncated, over TCP, and reads the answers as the forwarder
//! does ([`wire::answer`]): the CNAME chain from the name, the addresses on
//! it. The name is taken as written (absolute: no search list).

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    str::FromStr,
    time::{Duration, Instant},
};

use domain::base::{MessageBuilder, Name, Rtype};
use thiserror::Error;

use super::wire::{self, rcode};

/// Largest answer read over UDP (EDNS is not asked for: a larger answer
/// comes truncated, and TCP takes over).
const UDP_MAX: usize = 4096;

/// What a name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The name asked, then each CNAME target followed (the longest chain
    /// of the A and AAAA answers).
    pub chain: Vec<String>,
    /// The A and AAAA addresses on the chain, A first, without repeats.
    pub addresses: Vec<IpAddr>,
    /// The resolver that answered.
    pub server: SocketAddr,
}

/// Why a name could not be resolved.
#[derive(Debug, Error)]
pub enum ResolveError {
    #[error("'{0}' is not a domain name")]
    BadName(String),
    #[error("no resolver to ask ([dns] upstream is empty and /etc/resolv.conf names none)")]
    NoServer,
    #[error("{name}: {rcode} from {server}")]
    Rcode {
        name: String,
        rcode: String,
        server: SocketAddr,
    },
    #[error("{name}: no A or AAAA records (from {server})")]
    NoAddress { name: String, server: SocketAddr },
    #[error("{name}: no answer from {servers} within {timeout:?}")]
    NoAnswer {
        name: String,
        servers: String,
        timeout: Duration,
        #[source]
        last: Option<AskError>,
    },
}

/// Why one question to one resolver failed.
#[derive(Debug, Error)]
pub enum AskError {
    #[error("{server}")]
    Io {
        server: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{server}: an unreadable answer")]
    Wire {
        server: SocketAddr,
        #[source]
        source: wire::WireError,
    },
}

/// Resolves `name` through the first of `servers` that answers, each
/// question waiting at most `timeout`.
pub fn resolve(
    name: &str,
    servers: &[SocketAddr],
    timeout: Duration,
) -> Result<Resolution, ResolveError> {
    let canonical = wire::canonical(name.trim());
    let qname = Name::<Vec<u8>>::from_str(&canonical)
        .map_err(|_| ResolveError::BadName(name.to_owned()))?;
    if servers.is_empty() {
        return Err(ResolveError::NoServer);
    }
    let mut last = None;
    for &server in servers {
        match ask_both(&qname, server, timeout) {
            Ok(answers) => return read(&canonical, server, answers),
            Err(e) => last = Some(e),
        }
    }
    Err(ResolveError::NoAnswer {
        name: canonical,
        servers: servers
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        timeout,
        last,
    })
}

/// The A and the AAAA answer of one server.
fn ask_both(
    qname: &Name<Vec<u8>>,
    server: SocketAddr,
    timeout: Duration,
) -> Result<[wire::Answer; 2], AskError> {
    Ok([
        ask(qname, Rtype::A, server, timeout)?,
        ask(qname, Rtype::AAAA, server, timeout)?,
    ])
}

fn read(
    name: &str,
    server: SocketAddr,
    answers: [wire::Answer; 2],
) -> Result<Resolution, ResolveError> {
    let [a, aaaa] = answers;
    if a.rcode != rcode::NOERROR {
        return Err(ResolveError::Rcode {
            name: name.to_owned(),
            rcode: rcode::name(a.rcode),
            server,
        });
    }
    let chain = if aaaa.chain.len() > a.chain.len() {
        aaaa.chain.clone()
    } else {
        a.chain.clone()
    };
    let mut addresses: Vec<IpAddr> = Vec::new();
    for x in a.addresses.iter().chain(&aaaa.addresses) {
        if !addresses.contains(&x.addr) {
            addresses.push(x.addr);
        }
    }
    if addresses.is_empty() {
        return Err(ResolveError::NoAddress {
            name: name.to_owned(),
            server,
        });
    }
    Ok(Resolution {
        chain,
        addresses,
        server,
    })
}

/// One question, over UDP, then TCP when the answer is truncated.
fn ask(
    qname: &Name<Vec<u8>>,
    qtype: Rtype,
    server: SocketAddr,
    timeout: Duration,
) -> Result<wire::Answer, AskError> {
    let id = random_id();
    let query = build(qname, qtype, id);
    let io = |source| AskError::Io { server, source };
    let bytes = udp(&query, id, server, timeout).map_err(io)?;
    let answer = wire::answer(&bytes).map_err(|source| AskError::Wire { server, source })?;
    if !answer.truncated {
        return Ok(answer);
    }
    let bytes = tcp(&query, server, timeout).map_err(io)?;
    wire::answer(&bytes).map_err(|source| AskError::Wire { server, source })
}

/// A query for (`qname`, `qtype`) with ID `id`, recursion desired.
fn build(qname: &Name<Vec<u8>>, qtype: Rtype, id: u16) -> Vec<u8> {
    let mut msg = MessageBuilder::new_vec();
    msg.header_mut().set_id(id);
    msg.header_mut().set_rd(true);
    let mut q = msg.question();
    // A name of at most 255 octets and one question always fit a Vec.
    q.push((qname, qtype))
        .expect("one question fits an unlimited buffer");
    q.finish()
}

/// A message ID no other process can guess (the standard library's hash
/// keys are seeded from the OS's random source).
fn random_id() -> u16 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish() as u16
}

/// Sends `query` and waits for the answer with its ID from `server`.
fn udp(query: &[u8], id: u16, server: SocketAddr, timeout: Duration) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let sock = UdpSocket::bind(local)?;
    sock.connect(server)?;
    sock.send(query)?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; UDP_MAX];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        sock.set_read_timeout(Some(left))?;
        let n = sock.recv(&mut buf)?;
        // A stray datagram (another ID) is not the answer.
        if n >= 2 && buf[..2] == id.to_be_bytes() {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// Sends `query` over TCP (two-octet length first) and reads the answer.
fn tcp(query: &[u8], server: SocketAddr, timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&server, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let len = u16::try_from(query.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    s.write_all(&framed)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_reads_back_as_asked() {
        let name = Name::<Vec<u8>>::from_str("api.partner.test").unwrap();
        let q = build(&name, Rtype::AAAA, 0xbeef);
        let read = wire::question(&q).unwrap();
        assert_eq!(read.id, 0xbeef);
        assert_eq!(read.name, "api.partner.test");
        assert_eq!(read.qtype_name, "AAAA");
        assert_eq!(q[2] & 0x01, 0x01, "recursion desired");
    }

    #[test]
    fn bad_names_and_no_servers_are_said_plainly() {
        let t = Duration::from_millis(10);
        assert!(matches!(
            resolve("a..b", &["127.0.0.1:53".parse().unwrap()], t),
            Err(ResolveError::BadName(_))
        ));
        assert!(matches!(
            resolve("api.partner.test", &[], t),
            Err(ResolveError::NoServer)
        ));
    }
}
