//! netprobe: the workload of geowall's kernel tests. It performs socket
//! operations and prints one JSON line per operation with its outcome, so a
//! test can assert what the kernel answered.
//!
//! ```text
//! netprobe [--cgroup DIR] [--netns] OP…
//!   tcp:ADDR:PORT          connect() a TCP socket
//!   tfo:ADDR:PORT          sendto(MSG_FASTOPEN) on a TCP socket
//!   udp:ADDR:PORT          sendto() on an unconnected UDP socket
//!   udpmulti:ADDR:PORT,…   sendto() each destination in turn from one
//!                          unconnected UDP socket (a line for each)
//!   udpkeep:ADDR:PORT      sendto() from one socket kept for the whole run
//!   waitfile:PATH          wait (up to 30 s) until PATH exists
//!   udpconn:ADDR:PORT      connect() a UDP socket
//!   raw4 | raw6 | packet   create a raw IPv4/IPv6 or a packet socket
//!   ping4 | ping6          create a ping socket (ICMP over SOCK_DGRAM); in
//!                          a --netns, ping_group_range is opened first
//!   movetcp:CG:ADDR:PORT   create a TCP socket, move to cgroup CG, then
//!                          connect() it
//!   fdrecv:PATH:ADDR:PORT  listen on UNIX socket PATH, receive one socket
//!                          (SCM_RIGHTS) and connect() it
//!   fdsend:PATH:4|6        create a TCP socket and send it to PATH
//!   objget:PATH            BPF_OBJ_GET a pinned program, link or map
//!   unpin:PATH             remove a pin
//!   joincg:DIR             move this process into cgroup DIR
//!   tcploop:ADDR:PORT:MS   connect() again and again for MS milliseconds,
//!                          at most one attempt per 100 µs
//!   sleep:MS               sleep MS milliseconds (a workload that lives on)
//!   resolve:NAME:PORT      getaddrinfo (glibc) NAME, then connect() TCP to
//!                          its first address
//!   resolveloop:NAME:PORT:N  resolve, then connect, N times over
//!   resolvefor:NAME:PORT:MS  resolve, then connect, again and again for MS
//!                          milliseconds (at most once per ms): the counts,
//!                          and the longest stretch of failures in ms
//!   holdtcp:ADDR:PORT:MS   connect(), keep the connection MS milliseconds,
//!                          then write to it
//!   protowalk:4|6          socket() of every type and protocol; which exist
//!   familywalk             socket() of every address family (4 types each);
//!                          which exist, and how the others failed
//!   iouring                io_uring_setup(2): ok, or how it failed
//!   socketpair:FAM         socketpair(2) of family FAM (a number)
//!   int80socket:FAM, int80socketcall:FAM  (x86_64) a socket of family FAM
//!                          through the i386 socket(2) or socketcall(2),
//!                          called with int 0x80
//!   udplite:ADDR:PORT      a UDP-Lite socket: socket, connect, send
//!   rthdr:HOP|ADDR:PORT    IPV6_RTHDR (segment routing through HOP) set,
//!                          then sendto ADDR
//!   rthdrcmsg:HOP|ADDR:PORT, rthdr2292:HOP|ADDR:PORT  the routing header as
//!                          ancillary data of the sendmsg
//!   ipopts:HOP|ADDR:PORT   IP_OPTIONS (loose source route through HOP),
//!                          then sendto ADDR
//!   ipoptscmsg:HOP|ADDR:PORT  the source route as ancillary data
//!                          (IP_RETOPTS) of the sendmsg
//!   udptos:ADDR:PORT       connect a UDP socket, send with a TOS cmsg
//!   listen:ADDR:PORT:MS    listen MS milliseconds; the peers accepted
//!   mptcp:ADDR:PORT        connect() an MPTCP socket
//!   usefd:N:ADDR:PORT      connect() inherited descriptor N
//!   holdsock:4|6:MS        hold a TCP socket MS ms (prints pid and fd first)
//!   pidfdgetfd:PID:FD:ADDR:PORT  take FD of PID (pidfd_getfd), connect() it
//!   packetsend             a packet socket sends a frame on every interface
//! ```
//! With `--netns-at NAME` the probe enters the named network namespace
//! /run/netns/NAME (one the test made).
//! ADDR is an IPv4 address or a bracketed IPv6 one (`[::1]`). With
//! `--cgroup` the probe first moves itself into that cgroup; with `--netns`
//! it enters a fresh network namespace with only `lo`, up: nothing it sends
//! can leave the host. Arguments after `--` are ignored (a workload's own).

mod bypass;

use std::{
    collections::BTreeMap,
    io,
    net::{SocketAddr, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::EACCES) => "EACCES".into(),
        Some(libc::ENETUNREACH) => "ENETUNREACH".into(),
        Some(libc::ECONNREFUSED) => "ECONNREFUSED".into(),
        Some(libc::EINPROGRESS) => "EINPROGRESS".into(),
        Some(libc::EHOSTUNREACH) => "EHOSTUNREACH".into(),
        Some(libc::EAFNOSUPPORT) => "EAFNOSUPPORT".into(),
        Some(libc::EADDRNOTAVAIL) => "EADDRNOTAVAIL".into(),
        Some(libc::ETIMEDOUT) => "ETIMEDOUT".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        Some(libc::EBADF) => "EBADF".into(),
        Some(libc::EPROTONOSUPPORT) => "EPROTONOSUPPORT".into(),
        Some(libc::ESOCKTNOSUPPORT) => "ESOCKTNOSUPPORT".into(),
        Some(n) => format!("errno{n}"),
        None => e.to_string(),
    }
}

fn outcome(r: io::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => errno_name(&e),
    }
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: a zeroed sockaddr_storage is valid; we fill one variant.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn socket(domain: i32, ty: i32, proto: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn domain_of(addr: &SocketAddr) -> i32 {
    if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

fn tcp(addr: &SocketAddr) -> io::Result<()> {
    TcpStream::connect_timeout(addr, Duration::from_secs(2)).map(drop)
}

fn tfo(addr: &SocketAddr) -> io::Result<()> {
    let fd = socket(domain_of(addr), libc::SOCK_STREAM, 0)?;
    let (sa, len) = sockaddr(addr);
    let payload = b"geowall";
    // SAFETY: valid buffers and address.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            payload.as_ptr().cast(),
            payload.len(),
            libc::MSG_FASTOPEN,
            (&raw const sa).cast(),
            len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An unconnected UDP socket of `addr`'s family, bound to any port.
fn udp_socket(addr: &SocketAddr) -> io::Result<UdpSocket> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    UdpSocket::bind(bind)
}

fn udp(addr: &SocketAddr) -> io::Result<()> {
    udp_socket(addr)?.send_to(b"geowall", addr).map(drop)
}

/// Sends a datagram to each of `targets` in turn from one socket (of the
/// first target's family); the outcome for each.
fn udp_multi(targets: &[SocketAddr]) -> Vec<String> {
    match udp_socket(&targets[0]) {
        Ok(s) => targets
            .iter()
            .map(|t| outcome(s.send_to(b"geowall", t).map(drop)))
            .collect(),
        Err(e) => vec![errno_name(&e); targets.len()],
    }
}

fn udp_connect(addr: &SocketAddr) -> io::Result<()> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    UdpSocket::bind(bind)?.connect(addr)
}

/// connect(2) on a socket we hold.
fn connect_fd(fd: &OwnedFd, addr: &SocketAddr) -> io::Result<()> {
    let (sa, len) = sockaddr(addr);
    // SAFETY: a valid descriptor and address.
    if unsafe { libc::connect(fd.as_raw_fd(), (&raw const sa).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn move_then_connect(cgroup: &str, addr: &SocketAddr) -> io::Result<()> {
    let fd = socket(domain_of(addr), libc::SOCK_STREAM, 0)?;
    move_to_cgroup(cgroup);
    connect_fd(&fd, addr)
}

/// Receives one descriptor over a UNIX socket listening at `path` and
/// connects it to `addr`.
fn fd_recv(path: &str, addr: &SocketAddr) -> io::Result<()> {
    use std::os::unix::net::UnixListener;
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    let (conn, _) = listener.accept()?;
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u8; 64];
    // SAFETY: a zeroed msghdr is valid; the buffers outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len();
    // SAFETY: recvmsg on our own socket with a valid msghdr.
    if unsafe { libc::recvmsg(conn.as_raw_fd(), &raw mut msg, libc::MSG_CMSG_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the control buffer; CMSG_* walk it.
    let fd = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(io::Error::other("no descriptor received"));
        }
        let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>());
        OwnedFd::from_raw_fd(raw)
    };
    connect_fd(&fd, addr)
}

/// Creates a TCP socket of `domain` and sends it over the UNIX socket at
/// `path` (waiting up to 5 s for it to appear).
fn fd_send(path: &str, domain: i32) -> io::Result<()> {
    use std::os::unix::net::UnixStream;
    let sock = socket(domain, libc::SOCK_STREAM, 0)?;
    let until = Instant::now() + Duration::from_secs(5);
    let conn = loop {
        match UnixStream::connect(path) {
            Ok(c) => break c,
            Err(e) if Instant::now() > until => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE of one int.
    let space = unsafe { libc::CMSG_SPACE(size_of::<i32>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: as in fd_recv.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: the control buffer holds one cmsg with one descriptor.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), sock.as_raw_fd());
        if libc::sendmsg(conn.as_raw_fd(), &raw const msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// BPF_OBJ_GET of a pin (needs CAP_BPF and access to the pin).
fn bpf_obj_get(path: &str) -> io::Result<()> {
    let c = std::ffi::CString::new(path).map_err(io::Error::other)?;
    // union bpf_attr for BPF_OBJ_GET: u64 pathname, u32 bpf_fd, u32 flags.
    let mut attr = [0u64; 2];
    attr[0] = c.as_ptr() as u64;
    // SAFETY: bpf(2) with a valid attr of the size passed.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 7, attr.as_mut_ptr(), 16usize) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    Ok(())
}

fn parse_target(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("netprobe: bad address '{s}': {e}"))
}

fn move_to_cgroup(dir: &str) {
    std::fs::write(format!("{dir}/cgroup.procs"), "0")
        .unwrap_or_else(|e| panic!("netprobe: cannot join cgroup {dir}: {e}"));
}

/// Enters the network namespace /run/netns/`name` (a test made it).
fn enter_named_netns(name: &str) {
    let path = format!("/run/netns/{name}");
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("netprobe: {path}: {e}"));
    // SAFETY: setns(2) of our own (single-threaded) process.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        panic!("netprobe: setns {path}: {}", io::Error::last_os_error());
    }
}

/// Enters a fresh network namespace whose only interface, `lo`, is up: no
/// route leads off the host.
fn enter_netns() {
    // SAFETY: unshare of our own (single-threaded) process.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        panic!(
            "netprobe: unshare(CLONE_NEWNET): {}",
            io::Error::last_os_error()
        );
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0).expect("netprobe: control socket");
    let mut req = IfReq {
        name: [0; 16],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS with a valid struct ifreq.
    unsafe {
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) != 0 {
            panic!("netprobe: SIOCGIFFLAGS lo: {}", io::Error::last_os_error());
        }
        req.flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &raw mut req) != 0 {
            panic!("netprobe: SIOCSIFFLAGS lo: {}", io::Error::last_os_error());
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut ops = Vec::new();
    let mut netns = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--cgroup" => move_to_cgroup(&args.next().expect("--cgroup DIR")),
            // What follows is the workload's own business (tests put
            // would-be secrets there): ignored.
            "--" => break,
            "--netns" => netns = true,
            "--netns-at" => enter_named_netns(&args.next().expect("--netns-at NAME")),
            _ => ops.push(a),
        }
    }
    if netns {
        enter_netns();
        // Only this namespace's setting: lets every group open ping sockets.
        std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647")
            .expect("netprobe: ping_group_range");
    }
    // The socket `udpkeep` sends from: one for the whole run.
    let mut kept: Option<UdpSocket> = None;
    for op in ops {
        let (kind, rest) = op.split_once(':').unwrap_or((op.as_str(), ""));
        let line = match kind {
            "udpkeep" => {
                let addr = parse_target(rest);
                let result = match &kept {
                    Some(s) => s.send_to(b"geowall", addr).map(drop),
                    None => udp_socket(&addr).and_then(|s| {
                        let r = s.send_to(b"geowall", addr).map(drop);
                        kept = Some(s);
                        r
                    }),
                };
                json(kind, rest, outcome(result))
            }
            "waitfile" => {
                let until = Instant::now() + Duration::from_secs(30);
                while !Path::new(rest).exists() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let found = Path::new(rest).exists();
                json(kind, rest, if found { "ok" } else { "timeout" }.into())
            }
            "udpmulti" => {
                let targets: Vec<&str> = rest.split(',').collect();
                let addrs: Vec<SocketAddr> = targets.iter().map(|t| parse_target(t)).collect();
                for (target, result) in targets.iter().zip(udp_multi(&addrs)) {
                    println!("{}", json(kind, target, result));
                }
                continue;
            }
            "tcp" => json(kind, rest, outcome(tcp(&parse_target(rest)))),
            "tfo" => json(kind, rest, outcome(tfo(&parse_target(rest)))),
            "udp" => json(kind, rest, outcome(udp(&parse_target(rest)))),
            "udpconn" => json(kind, rest, outcome(udp_connect(&parse_target(rest)))),
            "raw4" => json(
                kind,
                "",
                outcome(socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP).map(drop)),
            ),
            "raw6" => json(
                kind,
                "",
                outcome(socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6).map(drop)),
            ),
            "packet" => json(
                kind,
                "",
                outcome(socket(libc::AF_PACKET, libc::SOCK_RAW, 0).map(drop)),
            ),
            "ping4" => json(
                kind,
                "",
                outcome(socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP).map(drop)),
            ),
            "ping6" => json(
                kind,
                "",
                outcome(socket(libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_ICMPV6).map(drop)),
            ),
            "movetcp" => {
                let (cg, target) = rest.split_once(':').expect("movetcp:CG:ADDR:PORT");
                json(
                    kind,
                    target,
                    outcome(move_then_connect(cg, &parse_target(target))),
                )
            }
            "fdrecv" => {
                let (path, target) = rest.split_once(':').expect("fdrecv:PATH:ADDR:PORT");
                json(kind, target, outcome(fd_recv(path, &parse_target(target))))
            }
            "fdsend" => {
                let (path, fam) = rest.split_once(':').expect("fdsend:PATH:4|6");
                let domain = if fam == "6" {
                    libc::AF_INET6
                } else {
                    libc::AF_INET
                };
                json(kind, path, outcome(fd_send(path, domain)))
            }
            "objget" => json(kind, rest, outcome(bpf_obj_get(rest))),
            "unpin" => json(kind, rest, outcome(std::fs::remove_file(rest))),
            "joincg" => json(
                kind,
                rest,
                outcome(std::fs::write(format!("{rest}/cgroup.procs"), "0")),
            ),
            "tcploop" => {
                let (target, ms) = rest.rsplit_once(':').expect("tcploop:ADDR:PORT:MS");
                let addr = parse_target(target);
                let until = Instant::now() + Duration::from_millis(ms.parse().expect("MS"));
                let mut counts: BTreeMap<String, u64> = BTreeMap::new();
                while Instant::now() < until {
                    *counts.entry(outcome(tcp(&addr))).or_default() += 1;
                    std::thread::sleep(Duration::from_micros(100));
                }
                serde_json::json!({"op": kind, "target": target, "counts": counts}).to_string()
            }
            "sleep" => {
                std::thread::sleep(Duration::from_millis(rest.parse().expect("sleep:MS")));
                json(kind, "", "ok".into())
            }
            "resolve" => json(kind, rest, resolve_connect(rest)),
            "protowalk" => bypass::protowalk(rest).to_string(),
            "familywalk" => bypass::familywalk().to_string(),
            "iouring" => json(kind, "", bypass::io_uring()),
            "socketpair" => json(
                kind,
                rest,
                bypass::socket_pair(rest.parse().expect("socketpair:FAM")),
            ),
            #[cfg(target_arch = "x86_64")]
            "int80socket" => json(
                kind,
                rest,
                bypass::int80_socket(rest.parse().expect("int80socket:FAM")),
            ),
            #[cfg(target_arch = "x86_64")]
            "int80socketcall" => json(
                kind,
                rest,
                bypass::int80_socketcall(rest.parse().expect("int80socketcall:FAM")),
            ),
            "udplite" => json(kind, rest, bypass::udplite(&parse_target(rest))),
            "rthdr" | "rthdrcmsg" | "rthdr2292" | "ipopts" | "ipoptscmsg" => {
                let (hop, target) = rest.split_once('|').expect("OP:HOP|ADDR:PORT");
                let (hop, addr) = (parse_target(&format!("{hop}:0")), parse_target(target));
                let result = match kind {
                    "rthdr" => bypass::rthdr_opt(&hop, &addr),
                    "rthdrcmsg" => bypass::rthdr_cmsg(&hop, &addr, false),
                    "rthdr2292" => bypass::rthdr_cmsg(&hop, &addr, true),
                    "ipoptscmsg" => bypass::ip_options_cmsg(&hop, &addr),
                    _ => bypass::ip_options(&hop, &addr),
                };
                json(kind, target, result)
            }
            "udptos" => json(kind, rest, bypass::udp_connected_cmsg(&parse_target(rest))),
            "mptcp" => json(kind, rest, bypass::mptcp(&parse_target(rest))),
            "usefd" => {
                let (fd, target) = rest.split_once(':').expect("usefd:N:ADDR:PORT");
                let fd = fd.parse().expect("usefd: N");
                json(kind, target, bypass::use_fd(fd, &parse_target(target)))
            }
            "holdsock" => {
                let (fam, ms) = rest.split_once(':').expect("holdsock:4|6:MS");
                bypass::hold_socket(fam, ms.parse().expect("MS")).to_string()
            }
            "pidfdgetfd" => {
                let mut parts = rest.splitn(3, ':');
                let pid = parts.next().and_then(|p| p.parse().ok()).expect("PID");
                let fd = parts.next().and_then(|f| f.parse().ok()).expect("FD");
                let target = parts.next().expect("ADDR:PORT");
                json(
                    kind,
                    target,
                    bypass::steal_fd(pid, fd, &parse_target(target)),
                )
            }
            "packetsend" => bypass::packet_send().to_string(),
            "listen" => {
                let (target, ms) = rest.rsplit_once(':').expect("listen:ADDR:PORT:MS");
                bypass::listen(&parse_target(target), ms.parse().expect("MS")).to_string()
            }
            "resolveloop" => {
                let (target, n) = rest.rsplit_once(':').expect("resolveloop:NAME:PORT:N");
                let mut counts: BTreeMap<String, u64> = BTreeMap::new();
                for _ in 0..n.parse::<u64>().expect("N") {
                    *counts.entry(resolve_connect(target)).or_default() += 1;
                }
                serde_json::json!({"op": kind, "target": target, "counts": counts}).to_string()
            }
            "resolvefor" => {
                let (target, ms) = rest.rsplit_once(':').expect("resolvefor:NAME:PORT:MS");
                let end = Instant::now() + Duration::from_millis(ms.parse().expect("MS"));
                let mut counts: BTreeMap<String, u64> = BTreeMap::new();
                let (mut failing_since, mut longest) = (None::<Instant>, Duration::ZERO);
                while Instant::now() < end {
                    let started = Instant::now();
                    let result = resolve_connect(target);
                    if result == "ok" {
                        if let Some(since) = failing_since.take() {
                            longest = longest.max(started - since);
                        }
                    } else {
                        failing_since.get_or_insert(started);
                    }
                    *counts.entry(result).or_default() += 1;
                    std::thread::sleep(Duration::from_millis(1).saturating_sub(started.elapsed()));
                }
                if let Some(since) = failing_since {
                    longest = longest.max(since.elapsed());
                }
                serde_json::json!({"op": kind, "target": target, "counts": counts,
                                   "longest_failure_ms": longest.as_millis() as u64})
                .to_string()
            }
            "holdtcp" => {
                let (target, ms) = rest.rsplit_once(':').expect("holdtcp:ADDR:PORT:MS");
                let result = TcpStream::connect(parse_target(target)).and_then(|mut s| {
                    use std::io::Write;
                    std::thread::sleep(Duration::from_millis(ms.parse().expect("MS")));
                    s.write_all(b"still here\n")
                });
                json(kind, target, outcome(result))
            }
            other => panic!("netprobe: unknown operation '{other}'"),
        };
        println!("{line}");
    }
}

fn json(op: &str, target: &str, result: String) -> String {
    serde_json::json!({"op": op, "target": target, "result": result}).to_string()
}

/// Resolves `NAME:PORT` with the system's resolver and connects to the
/// first IPv4 address (else the first address): `ok`, the errno's name,
/// or `resolve:WHY`.
fn resolve_connect(target: &str) -> String {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = match target.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => return format!("resolve:{e}"),
    };
    let Some(addr) = addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()) else {
        return "resolve:no address".into();
    };
    outcome(tcp(addr))
}
