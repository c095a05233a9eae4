//! Which socket sent a datagram or opened a connection to us: an exact
//! `NETLINK_SOCK_DIAG` lookup by address and port. The kernel answers with
//! the socket's cookie (unique for the boot, never reused), its owner's
//! uid and the cgroup it was created in — what the forwarder needs to find
//! the entry the kernel programs wrote for the socket's query.
//!
//! Orientation matters: a UDP lookup is a receive-path lookup (the socket
//! that would receive a datagram from `from` to `to`), so the peer goes in
//! the destination fields; a TCP lookup takes the connection's own view.
//! Looked up the wrong way round, the kernel answers with *our* socket,
//! not an error: every answer is checked against the peer asked about.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
/// `NLM_F_ROOT | NLM_F_MATCH`.
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const INET_DIAG_BC_S_EQ: u8 = 11;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg`.
const MSG_LEN: usize = 72;
const INET_DIAG_CGROUP_ID: u16 = 21;
const INET_DIAG_NOCOOKIE: u32 = !0;

/// What the kernel says about a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Socket cookie.
    pub cookie: u64,
    /// The socket's owner (`sock_i_uid`).
    pub uid: u32,
    /// The cgroup the socket was created in (0: not reported).
    pub cgroup_id: u64,
}

/// The protocol of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

/// A netlink socket for lookups (one per thread of lookups: requests and
/// answers are matched by sequence number).
#[derive(Debug)]
pub struct SockDiag {
    fd: OwnedFd,
    seq: u32,
}

impl SockDiag {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain socket(2).
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just opened and own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, seq: 0 })
    }

    /// The socket at `peer` that sent to (UDP) or connected to (TCP) our
    /// socket at `local`; `None` when there is none (it closed).
    pub fn lookup(
        &mut self,
        proto: Proto,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> io::Result<Option<Peer>> {
        // A dual-stack peer reached us over IPv4: it is found as IPv4.
        let (local, peer) = (unmap(local), unmap(peer));
        let family = match (local.ip(), peer.ip()) {
            (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET as u8,
            (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6 as u8,
            _ => return Ok(None),
        };
        let (src, dst) = match proto {
            Proto::Udp => (local, peer),
            Proto::Tcp => (peer, local),
        };
        self.seq = self.seq.wrapping_add(1);
        let req = request(self.seq, family, proto, src, dst);
        // SAFETY: `req` is a complete message for the kernel's netlink
        // socket.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 1024];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            match parse(&buf[..n as usize], self.seq, proto, src, dst)? {
                Reply::Found(p) => return Ok(Some(p)),
                Reply::None => return Ok(None),
                // An answer to an earlier request that timed out: skip it.
                Reply::Stale => continue,
            }
        }
    }
}

impl SockDiag {
    /// The cookies of every UDP socket of `family` bound to local port
    /// `port` (any address): a port shared through `SO_REUSEADDR` or
    /// `SO_REUSEPORT` has several. A dump filtered in the kernel by port.
    pub fn udp_port_sharers(&mut self, family: u8, port: u16) -> io::Result<Vec<u64>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        // The filter: local port == `port` → accept (jump to the end),
        // else reject (jump past it). The port sits in the next op's `no`.
        let mut bc = Vec::with_capacity(8);
        bc.extend_from_slice(&[INET_DIAG_BC_S_EQ, 8]);
        bc.extend_from_slice(&12u16.to_ne_bytes());
        bc.extend_from_slice(&[0, 0]);
        bc.extend_from_slice(&port.to_ne_bytes());
        let attr_len = 4 + bc.len();
        let len = NLMSG_HDRLEN + REQ_LEN + attr_len;
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.push(family);
        m.push(libc::IPPROTO_UDP as u8);
        m.push(0);
        m.push(0);
        m.extend_from_slice(&u32::MAX.to_ne_bytes());
        m.extend_from_slice(&[0u8; 48]);
        m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        m.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        m.extend_from_slice(&bc);
        // SAFETY: `m` is a complete message.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cookies = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut at = 0usize;
            let b = &buf[..n as usize];
            while let (Some(len), Some(kind), Some(got_seq)) =
                (u32_at(b, at), u16_at(b, at + 4), u32_at(b, at + 8))
            {
                let len = len as usize;
                if len < NLMSG_HDRLEN || at + len > b.len() {
                    return Err(bad("truncated dump"));
                }
                if got_seq == seq {
                    match kind {
                        NLMSG_DONE => return Ok(cookies),
                        NLMSG_ERROR => {
                            let errno = u32_at(b, at + NLMSG_HDRLEN).unwrap_or(0) as i32;
                            return Err(io::Error::from_raw_os_error(-errno));
                        }
                        SOCK_DIAG_BY_FAMILY => {
                            let id = at + NLMSG_HDRLEN + 4;
                            cookies.push(
                                u64::from(u32_at(b, id + 40).unwrap_or(0))
                                    | u64::from(u32_at(b, id + 44).unwrap_or(0)) << 32,
                            );
                        }
                        _ => {}
                    }
                }
                at += (len + 3) & !3;
            }
        }
    }
}

/// An IPv4-mapped address as IPv4.
fn unmap(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

fn request(seq: u32, family: u8, proto: Proto, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let len = NLMSG_HDRLEN + REQ_LEN;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // inet_diag_req_v2: family, protocol, ext, pad, states.
    m.push(family);
    m.push(match proto {
        Proto::Udp => libc::IPPROTO_UDP as u8,
        Proto::Tcp => libc::IPPROTO_TCP as u8,
    });
    m.push(0);
    m.push(0);
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    sockid(&mut m, src, dst, [INET_DIAG_NOCOOKIE; 2]);
    m
}

/// `struct inet_diag_sockid`: ports and addresses in network order.
fn sockid(m: &mut Vec<u8>, src: SocketAddr, dst: SocketAddr, cookie: [u32; 2]) {
    m.extend_from_slice(&src.port().to_be_bytes());
    m.extend_from_slice(&dst.port().to_be_bytes());
    m.extend_from_slice(&addr16(src.ip()));
    m.extend_from_slice(&addr16(dst.ip()));
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&cookie[0].to_ne_bytes());
    m.extend_from_slice(&cookie[1].to_ne_bytes());
}

fn addr16(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

enum Reply {
    Found(Peer),
    None,
    Stale,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {what}"))
}

/// Reads one answer: the socket, none, or an answer to another request.
fn parse(b: &[u8], seq: u32, proto: Proto, src: SocketAddr, dst: SocketAddr) -> io::Result<Reply> {
    let len = u32_at(b, 0).ok_or_else(|| bad("short answer"))? as usize;
    let kind = u16_at(b, 4).ok_or_else(|| bad("short answer"))?;
    let got_seq = u32_at(b, 8).ok_or_else(|| bad("short answer"))?;
    if got_seq != seq {
        return Ok(Reply::Stale);
    }
    let b = b.get(..len).ok_or_else(|| bad("truncated answer"))?;
    if kind == NLMSG_ERROR {
        let errno = u32_at(b, NLMSG_HDRLEN).ok_or_else(|| bad("short error"))? as i32;
        return match -errno {
            0 | libc::ENOENT => Ok(Reply::None),
            e => Err(io::Error::from_raw_os_error(e)),
        };
    }
    if kind != SOCK_DIAG_BY_FAMILY {
        return Err(bad("unexpected message type"));
    }
    let msg = b
        .get(NLMSG_HDRLEN..NLMSG_HDRLEN + MSG_LEN)
        .ok_or_else(|| bad("short socket record"))?;
    // The socket must be the one asked about (the wrong orientation finds
    // our own socket, not an error): in its own view its port is the
    // peer's, its address the peer's or unspecified (an unconnected socket
    // bound to no address), its remote port ours or none.
    let (peer, local) = match proto {
        Proto::Udp => (dst, src),
        Proto::Tcp => (src, dst),
    };
    let id = &msg[4..4 + 48];
    let addr_len = if msg[0] == libc::AF_INET as u8 { 4 } else { 16 };
    let sport = u16::from_be_bytes([id[0], id[1]]);
    let dport = u16::from_be_bytes([id[2], id[3]]);
    let saddr = &id[4..4 + addr_len];
    let peer_addr = addr16(peer.ip());
    let same = sport == peer.port()
        && (saddr == &peer_addr[..addr_len] || saddr.iter().all(|b| *b == 0))
        && (dport == 0 || dport == local.port());
    if !same {
        return Ok(Reply::None);
    }
    let cookie =
        u64::from(u32_at(id, 40).unwrap_or(0)) | u64::from(u32_at(id, 44).unwrap_or(0)) << 32;
    let uid = u32_at(msg, 64).unwrap_or(u32::MAX);
    // Attributes after the record: INET_DIAG_CGROUP_ID.
    let mut cgroup_id = 0;
    let mut at = NLMSG_HDRLEN + MSG_LEN;
    while let (Some(alen), Some(atype)) = (u16_at(b, at), u16_at(b, at + 2)) {
        let alen = alen as usize;
        if alen < 4 {
            break;
        }
        if atype & 0x3fff == INET_DIAG_CGROUP_ID
            && let Some(v) = b.get(at + 4..at + 12)
        {
            cgroup_id = u64::from_ne_bytes(v.try_into().unwrap_or_default());
        }
        at += (alen + 3) & !3;
    }
    Ok(Reply::Found(Peer {
        cookie,
        uid,
        cgroup_id,
    }))
}

#[cfg(test)]
mod tests {
    use std::{
        net::{TcpListener, TcpStream, UdpSocket},
        os::fd::AsRawFd,
    };

    use super::*;

    fn cookie_of(fd: &impl AsRawFd) -> u64 {
        let mut cookie = 0u64;
        let mut len = 8u32;
        // SAFETY: SO_COOKIE writes 8 bytes.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_COOKIE,
                (&raw mut cookie).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        cookie
    }

    #[test]
    fn finds_the_udp_socket_that_sent_a_datagram() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("0.0.0.0:0").unwrap();
        client.send_to(b"q", server.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 8];
        let (_, from) = server.recv_from(&mut buf).unwrap();
        let mut diag = SockDiag::new().unwrap();
        let peer = diag
            .lookup(Proto::Udp, server.local_addr().unwrap(), from)
            .unwrap()
            .expect("the client socket");
        assert_eq!(peer.cookie, cookie_of(&client));
        // SAFETY: getuid has no preconditions.
        assert_eq!(peer.uid, unsafe { libc::getuid() });
        assert_ne!(peer.cgroup_id, 0);
        drop(client);
        assert_eq!(
            diag.lookup(Proto::Udp, server.local_addr().unwrap(), from)
                .unwrap(),
            None
        );
    }

    #[test]
    fn lists_the_udp_sockets_sharing_a_port() {
        use std::os::fd::FromRawFd;
        let shared = || {
            // SAFETY: a new socket, owned by the UdpSocket below.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
            let one = 1i32;
            // SAFETY: a 4-byte option.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_REUSEPORT,
                    (&raw const one).cast(),
                    4,
                )
            };
            // SAFETY: `fd` is ours.
            unsafe { UdpSocket::from_raw_fd(fd) }
        };
        let a = shared();
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let bind = |s: &UdpSocket| {
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: a valid sockaddr_in.
            let rc = unsafe {
                libc::bind(
                    s.as_raw_fd(),
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_in>() as u32,
                )
            };
            assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        };
        bind(&a);
        let mut diag = SockDiag::new().unwrap();
        let one = diag.udp_port_sharers(libc::AF_INET as u8, port).unwrap();
        assert_eq!(one, [cookie_of(&a)]);
        let b = shared();
        bind(&b);
        let mut two = diag.udp_port_sharers(libc::AF_INET as u8, port).unwrap();
        two.sort_unstable();
        let mut want = vec![cookie_of(&a), cookie_of(&b)];
        want.sort_unstable();
        assert_eq!(two, want);
    }

    #[test]
    fn finds_the_tcp_socket_that_connected_and_ipv6_too() {
        let listener = TcpListener::bind("[::1]:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_conn, from) = listener.accept().unwrap();
        let mut diag = SockDiag::new().unwrap();
        let peer = diag
            .lookup(Proto::Tcp, listener.local_addr().unwrap(), from)
            .unwrap()
            .unwrap();
        assert_eq!(peer.cookie, cookie_of(&client));
    }
}
