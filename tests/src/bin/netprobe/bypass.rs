//! The operations of the bypass tests: every inet protocol a job can ask
//! for, UDP-Lite, source routes (IPv6 routing headers, IPv4 options), a
//! connected UDP send with ancillary data, and a listener for inbound
//! connections.

use std::{
    io,
    net::{SocketAddr, TcpListener},
    os::fd::{AsRawFd, OwnedFd},
    time::{Duration, Instant},
};

use super::{connect_fd, domain_of, errno_name, sockaddr, socket};

const IPPROTO_UDPLITE: i32 = 136;
const IPPROTO_MPTCP: i32 = 262;
/// `IPV6_RTHDR` (setsockopt and cmsg) and the obsolete RFC 2292 cmsg.
const IPV6_RTHDR: i32 = 57;
const IPV6_2292RTHDR: i32 = 5;

/// Every (type, protocol) of family `fam` (4 or 6) that `socket(2)`
/// creates: stream, datagram, seqpacket and raw sockets, protocols 0 to
/// 255 and MPTCP. Answers the created ones (`stream/6`) and why the others
/// failed, counted.
pub(super) fn protowalk(fam: &str) -> serde_json::Value {
    let domain = if fam == "6" {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    let mut created = Vec::new();
    let mut refused: std::collections::BTreeMap<String, u32> = Default::default();
    for (tname, ty) in [
        ("stream", libc::SOCK_STREAM),
        ("dgram", libc::SOCK_DGRAM),
        ("seqpacket", libc::SOCK_SEQPACKET),
        ("raw", libc::SOCK_RAW),
    ] {
        // 256: IPPROTO_SMC (Linux 6.11+).
        for proto in (0..=256).chain([IPPROTO_MPTCP]) {
            match socket(domain, ty, proto) {
                Ok(_) => created.push(format!("{tname}/{proto}")),
                Err(e) => *refused.entry(errno_name(&e)).or_default() += 1,
            }
        }
    }
    serde_json::json!({"op": "protowalk", "target": fam, "created": created, "refused": refused})
}

/// Every address family from 0 to 63, as stream, datagram, seqpacket and
/// raw (protocol 0): the families a socket was created of, and for each
/// other the errno of its first type's failure (`EPERM` marks a refusal;
/// `EAFNOSUPPORT`, `ESOCKTNOSUPPORT`, `EPROTONOSUPPORT`, `EINVAL` a family or
/// type this kernel lacks).
pub(super) fn familywalk() -> serde_json::Value {
    let mut created = Vec::new();
    let mut failed = serde_json::Map::new();
    for fam in 0..64 {
        let mut first_err = None;
        let mut ok = false;
        for ty in [
            libc::SOCK_STREAM,
            libc::SOCK_DGRAM,
            libc::SOCK_SEQPACKET,
            libc::SOCK_RAW,
        ] {
            match socket(fam, ty, 0) {
                Ok(_) => ok = true,
                Err(e) => {
                    first_err.get_or_insert(errno_name(&e));
                }
            }
        }
        if ok {
            created.push(fam);
        } else if let Some(e) = first_err {
            failed.insert(fam.to_string(), e.into());
        }
    }
    serde_json::json!({"op": "familywalk", "created": created, "failed": failed})
}

/// `io_uring_setup(2)` with one entry: `ok` (the ring is closed again), or
/// `io_uring_setup:ERRNO`.
pub(super) fn io_uring() -> String {
    // struct io_uring_params: 120 bytes, zeroed.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup(2) with a valid, writable params buffer.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return format!("io_uring_setup:{}", errno_name(&io::Error::last_os_error()));
    }
    // SAFETY: the ring's descriptor, ours.
    unsafe { libc::close(fd as i32) };
    "ok".into()
}

/// `socketpair(2)` of family `fam` as stream, datagram and seqpacket: `ok`
/// when one type was created, else the first type's errno.
pub(super) fn socket_pair(fam: i32) -> String {
    let mut first = None;
    for ty in [libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET] {
        let mut sv = [0; 2];
        // SAFETY: socketpair(2) with a valid out-parameter.
        if unsafe { libc::socketpair(fam, ty | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) } == 0 {
            // SAFETY: the two descriptors just made, ours.
            unsafe {
                libc::close(sv[0]);
                libc::close(sv[1]);
            }
            return "ok".into();
        }
        first.get_or_insert_with(|| errno_name(&io::Error::last_os_error()));
    }
    first.unwrap_or_default()
}

/// A 32-bit system call from this 64-bit process (`int 0x80`, which the
/// kernel runs as an i386 call): its return value.
#[cfg(target_arch = "x86_64")]
fn int80(nr: u32, a: u64, b: u64, c: u64) -> i32 {
    let ret: u64;
    // SAFETY: the system calls made this way (socket, socketcall) read
    // only their arguments and the memory `b` points to; rbx, which Rust
    // reserves, is swapped in and back; the kernel clears r8–r11.
    unsafe {
        core::arch::asm!(
            "xchg {a}, rbx",
            "int 0x80",
            "xchg {a}, rbx",
            a = inout(reg) a => _,
            inlateout("rax") u64::from(nr) => ret,
            in("rcx") b,
            in("rdx") c,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
        );
    }
    ret as u32 as i32
}

/// The outcome of a system call returning a descriptor or `-errno`.
#[cfg(target_arch = "x86_64")]
fn fd_outcome(ret: i32) -> String {
    if ret >= 0 {
        // SAFETY: a descriptor just made, ours.
        unsafe { libc::close(ret) };
        "ok".into()
    } else {
        errno_name(&io::Error::from_raw_os_error(-ret))
    }
}

/// i386 `socket(2)` (359) of family `fam` through `int 0x80`.
#[cfg(target_arch = "x86_64")]
pub(super) fn int80_socket(fam: i32) -> String {
    fd_outcome(int80(359, fam as u64, libc::SOCK_STREAM as u64, 0))
}

/// i386 `socketcall(SYS_SOCKET, …)` (102) of family `fam` through
/// `int 0x80`, its arguments in memory below 4 GiB.
#[cfg(target_arch = "x86_64")]
pub(super) fn int80_socketcall(fam: i32) -> String {
    // SAFETY: an anonymous private mapping below 4 GiB, unmapped below.
    unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        );
        if page == libc::MAP_FAILED {
            return format!("mmap:{}", errno_name(&io::Error::last_os_error()));
        }
        let args = page.cast::<u32>();
        args.write(fam as u32);
        args.add(1).write(libc::SOCK_STREAM as u32);
        args.add(2).write(0);
        let out = fd_outcome(int80(102, 1, page as u64, 0));
        libc::munmap(page, 4096);
        out
    }
}

/// A step's outcome: `ok`, or `STEP:ERRNO` for the step that failed.
fn steps(r: Result<(), (&str, io::Error)>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err((step, e)) => format!("{step}:{}", errno_name(&e)),
    }
}

fn send(fd: &OwnedFd) -> io::Result<()> {
    let payload = b"geowall";
    // SAFETY: send(2) on our own socket with a valid buffer.
    let n = unsafe { libc::send(fd.as_raw_fd(), payload.as_ptr().cast(), payload.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// UDP-Lite: socket, connect, send (the send a connected socket makes
/// runs no address hook).
pub(super) fn udplite(addr: &SocketAddr) -> String {
    steps((|| {
        let fd = socket(domain_of(addr), libc::SOCK_DGRAM, IPPROTO_UDPLITE)
            .map_err(|e| ("socket", e))?;
        connect_fd(&fd, addr).map_err(|e| ("connect", e))?;
        send(&fd).map_err(|e| ("send", e))
    })())
}

/// A segment routing header (type 4) whose first hop is `hop` and whose
/// final segment is `last` (segments are listed last first).
fn srh(hop: &std::net::Ipv6Addr, last: &std::net::Ipv6Addr) -> Vec<u8> {
    // next header, header length (8-octet units after the first 8), type,
    // segments left, last entry, flags, tag.
    let mut h = vec![0, 4, 4, 1, 1, 0, 0, 0];
    h.extend_from_slice(&last.octets());
    h.extend_from_slice(&hop.octets());
    h
}

fn setsockopt(fd: &OwnedFd, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    // SAFETY: setsockopt(2) on our own socket with a valid buffer.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn v6(addr: &SocketAddr) -> std::net::Ipv6Addr {
    match addr {
        SocketAddr::V6(a) => *a.ip(),
        SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
    }
}

/// An IPv6 UDP socket with a routing header through `hop` set
/// (`IPV6_RTHDR`), then a datagram to `addr`.
pub(super) fn rthdr_opt(hop: &SocketAddr, addr: &SocketAddr) -> String {
    steps((|| {
        let fd = socket(libc::AF_INET6, libc::SOCK_DGRAM, 0).map_err(|e| ("socket", e))?;
        setsockopt(
            &fd,
            libc::IPPROTO_IPV6,
            IPV6_RTHDR,
            &srh(&v6(hop), &v6(addr)),
        )
        .map_err(|e| ("setsockopt", e))?;
        sendmsg(&fd, addr, None).map_err(|e| ("send", e))
    })())
}

/// A datagram to `addr` carrying a routing header through `hop` as
/// ancillary data (`IPV6_RTHDR`, or the RFC 2292 form with `old`).
pub(super) fn rthdr_cmsg(hop: &SocketAddr, addr: &SocketAddr, old: bool) -> String {
    let name = if old { IPV6_2292RTHDR } else { IPV6_RTHDR };
    steps((|| {
        let fd = socket(libc::AF_INET6, libc::SOCK_DGRAM, 0).map_err(|e| ("socket", e))?;
        let data = srh(&v6(hop), &v6(addr));
        sendmsg(&fd, addr, Some((libc::IPPROTO_IPV6, name, &data))).map_err(|e| ("send", e))
    })())
}

/// An IPv4 UDP socket with a loose source route through `hop`
/// (`IP_OPTIONS`), then a datagram to `addr`.
pub(super) fn ip_options(hop: &SocketAddr, addr: &SocketAddr) -> String {
    let Some(opt) = lsrr(hop) else {
        return "bad:hop".into();
    };
    steps((|| {
        let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0).map_err(|e| ("socket", e))?;
        setsockopt(&fd, libc::IPPROTO_IP, libc::IP_OPTIONS, &opt).map_err(|e| ("setsockopt", e))?;
        sendmsg(&fd, addr, None).map_err(|e| ("send", e))
    })())
}

/// The same source route as ancillary data of the datagram (`IP_RETOPTS`).
pub(super) fn ip_options_cmsg(hop: &SocketAddr, addr: &SocketAddr) -> String {
    let Some(opt) = lsrr(hop) else {
        return "bad:hop".into();
    };
    steps((|| {
        let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0).map_err(|e| ("socket", e))?;
        sendmsg(&fd, addr, Some((libc::IPPROTO_IP, libc::IP_RETOPTS, &opt)))
            .map_err(|e| ("send", e))
    })())
}

/// A loose source route through `hop`: type 131, length 7, pointer 4, one
/// address; then end of list.
fn lsrr(hop: &SocketAddr) -> Option<Vec<u8>> {
    let SocketAddr::V4(h) = hop else {
        return None;
    };
    let mut opt = vec![131, 7, 4];
    opt.extend_from_slice(&h.ip().octets());
    opt.push(0);
    Some(opt)
}

/// A UDP socket connected to `addr` sends with a traffic class cmsg
/// (`IP_TOS` / `IPV6_TCLASS`): the kernel hands the hook no address, so it
/// judges the socket's peer.
pub(super) fn udp_connected_cmsg(addr: &SocketAddr) -> String {
    let (level, name) = if addr.is_ipv4() {
        (libc::IPPROTO_IP, libc::IP_TOS)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
    };
    steps((|| {
        let fd = socket(domain_of(addr), libc::SOCK_DGRAM, 0).map_err(|e| ("socket", e))?;
        connect_fd(&fd, addr).map_err(|e| ("connect", e))?;
        let tos = 0x10i32.to_ne_bytes();
        sendmsg_to(&fd, None, Some((level, name, &tos))).map_err(|e| ("send", e))
    })())
}

fn sendmsg(fd: &OwnedFd, addr: &SocketAddr, cmsg: Option<(i32, i32, &[u8])>) -> io::Result<()> {
    sendmsg_to(fd, Some(addr), cmsg)
}

/// sendmsg(2) of one small datagram to `addr` (none: the connected peer)
/// with at most one control message.
fn sendmsg_to(
    fd: &OwnedFd,
    addr: Option<&SocketAddr>,
    cmsg: Option<(i32, i32, &[u8])>,
) -> io::Result<()> {
    let mut payload = *b"geowall";
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    let mut sa = addr.map(sockaddr);
    // SAFETY: a zeroed msghdr is valid; every buffer outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if let Some((storage, len)) = sa.as_mut() {
        msg.msg_name = (storage as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = *len;
    }
    let mut control: Vec<u8> = Vec::new();
    if let Some((level, name, data)) = cmsg {
        // SAFETY: CMSG_SPACE of the data's length.
        let space = unsafe { libc::CMSG_SPACE(data.len() as u32) } as usize;
        control = vec![0u8; space];
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: the control buffer has room for one cmsg of this length.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&raw const msg);
            (*c).cmsg_level = level;
            (*c).cmsg_type = name;
            (*c).cmsg_len = libc::CMSG_LEN(data.len() as u32) as usize;
            std::ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(c), data.len());
        }
    }
    // SAFETY: a valid descriptor and msghdr.
    let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &raw const msg, 0) };
    drop(control);
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Listens on `addr` for `ms` milliseconds; answers how many connections
/// it accepted (each gets a line of data back).
pub(super) fn listen(addr: &SocketAddr, ms: u64) -> serde_json::Value {
    use std::io::Write;
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => return serde_json::json!({"op": "listen", "result": errno_name(&e)}),
    };
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let until = Instant::now() + Duration::from_millis(ms);
    let mut peers = Vec::new();
    while Instant::now() < until {
        match listener.accept() {
            Ok((mut s, peer)) => {
                let _ = s.write_all(b"data\n");
                peers.push(peer.ip().to_string());
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    serde_json::json!({"op": "listen", "target": addr.to_string(), "result": "ok", "accepted": peers})
}

/// Connects descriptor `fd` (inherited from whoever started the probe) to
/// `addr`.
pub(super) fn use_fd(fd: i32, addr: &SocketAddr) -> String {
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl(F_GETFD) only asks whether the descriptor exists.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return format!("fd:{}", errno_name(&io::Error::last_os_error()));
    }
    // SAFETY: the descriptor exists and this probe owns it from here on.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    steps(connect_fd(&owned, addr).map_err(|e| ("connect", e)))
}

/// Takes descriptor `fd` of process `pid` (`pidfd_open` + `pidfd_getfd`)
/// and connects it to `addr`.
pub(super) fn steal_fd(pid: i32, fd: i32, addr: &SocketAddr) -> String {
    use std::os::fd::FromRawFd;
    steps((|| {
        // SAFETY: the raw syscalls with plain integer arguments.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if pidfd < 0 {
            return Err(("pidfd_open", io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
        // SAFETY: as above.
        let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        if got < 0 {
            return Err(("pidfd_getfd", io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor we own.
        let sock = unsafe { OwnedFd::from_raw_fd(got as i32) };
        connect_fd(&sock, addr).map_err(|e| ("connect", e))
    })())
}

/// A TCP socket of family `fam` held for `ms` milliseconds; prints its
/// descriptor and this process's pid first (for `pidfdgetfd`).
pub(super) fn hold_socket(fam: &str, ms: u64) -> serde_json::Value {
    let domain = if fam == "6" {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    match socket(domain, libc::SOCK_STREAM, 0) {
        Ok(fd) => {
            println!(
                "{}",
                serde_json::json!({"op": "holdsock", "pid": std::process::id(), "fd": fd.as_raw_fd()})
            );
            std::thread::sleep(Duration::from_millis(ms));
            serde_json::json!({"op": "holdsock", "result": "ok"})
        }
        Err(e) => serde_json::json!({"op": "holdsock", "result": errno_name(&e)}),
    }
}

/// A packet socket sends a broadcast frame out of every interface it can
/// see: answers the interfaces it sent on.
pub(super) fn packet_send() -> serde_json::Value {
    let fd = match socket(libc::AF_PACKET, libc::SOCK_RAW, 0) {
        Ok(fd) => fd,
        Err(e) => return serde_json::json!({"op": "packetsend", "result": errno_name(&e)}),
    };
    let mut sent = Vec::new();
    // SAFETY: if_nameindex returns an array ended by a zero index, freed
    // below.
    unsafe {
        let list = libc::if_nameindex();
        let mut at = list;
        while !at.is_null() && (*at).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*at).if_name)
                .to_string_lossy()
                .into_owned();
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = (*at).if_index as i32;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
            // Ethernet: broadcast destination, zero source, a local
            // experimental ethertype (0x88b5), a short payload.
            let mut frame = [0u8; 64];
            frame[..6].copy_from_slice(&[0xff; 6]);
            frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
            frame[14..21].copy_from_slice(b"geowall");
            let n = libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            );
            if n >= 0 {
                sent.push(name);
            }
            at = at.add(1);
        }
        if !list.is_null() {
            libc::if_freenameindex(list);
        }
    }
    serde_json::json!({"op": "packetsend", "result": "ok", "sent_on": sent})
}

/// An MPTCP socket connects to `addr`.
pub(super) fn mptcp(addr: &SocketAddr) -> String {
    steps((|| {
        let fd =
            socket(domain_of(addr), libc::SOCK_STREAM, IPPROTO_MPTCP).map_err(|e| ("socket", e))?;
        connect_fd(&fd, addr).map_err(|e| ("connect", e))
    })())
}
