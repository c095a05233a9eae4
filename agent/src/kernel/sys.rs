//! The few `bpf(2)` commands aya 0.14 does not expose: creating maps with
//! our own names, batch updates, link updates, and link and cgroup queries.
//! (Program statistics come from aya: see [`super::stats`].)
//!
//! Each command's attribute struct is the prefix of `union bpf_attr` it
//! uses, zero-padded to the union's size, as the kernel requires.

use std::{
    ffi::CString,
    io,
    mem::size_of,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
};

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_int = 4;
const BPF_OBJ_PIN: libc::c_int = 6;
const BPF_OBJ_GET: libc::c_int = 7;
const BPF_LINK_CREATE: libc::c_int = 28;
const BPF_MAP_GET_FD_BY_ID: libc::c_int = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_MAP_UPDATE_BATCH: libc::c_int = 26;
const BPF_LINK_UPDATE: libc::c_int = 29;
const BPF_LINK_DETACH: libc::c_int = 34;

pub const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
pub const BPF_F_NO_PREALLOC: u32 = 1;
pub const BPF_ANY: u64 = 0;

/// The bytes of a plain-data value as a map holds it. `T` must be one of
/// the `#[repr(C)]` ABI types of `geowall-common` (or an integer or an
/// array of them): no padding that is not an explicit field.
pub(crate) fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: as documented, `T` is plain data whose every byte is
    // initialized.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// [`bytes_of`], writable: a map lookup fills the value in place. Every
/// bit pattern must be a valid `T` (true of the ABI's plain-data types).
pub(crate) fn bytes_of_mut<T: Copy>(v: &mut T) -> &mut [u8] {
    // SAFETY: as in `bytes_of`; and any bytes the kernel writes make a
    // valid `T`.
    unsafe { std::slice::from_raw_parts_mut((v as *mut T).cast::<u8>(), size_of::<T>()) }
}

/// Size of `union bpf_attr` we pass: larger than every member we use; the
/// kernel requires the tail beyond what it knows to be zero.
const ATTR_SIZE: usize = 128;

#[repr(C, align(8))]
struct Attr([u8; ATTR_SIZE]);

impl Attr {
    fn new<T: Copy>(prefix: T) -> Self {
        const { assert!(size_of::<T>() <= ATTR_SIZE) };
        let mut a = Attr([0; ATTR_SIZE]);
        // SAFETY: `T` fits in the buffer and is plain data; the buffer is
        // 8-aligned, as every bpf_attr member is.
        unsafe { std::ptr::write(a.0.as_mut_ptr().cast::<T>(), prefix) };
        a
    }
}

fn bpf(cmd: libc::c_int, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, zero-padded bpf_attr of ATTR_SIZE bytes for
    // the command; pointers inside it point at live buffers of the caller.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            ATTR_SIZE as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fd_result(rc: libc::c_long) -> OwnedFd {
    // SAFETY: the command returned a new file descriptor that we now own.
    unsafe { OwnedFd::from_raw_fd(rc as RawFd) }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// Creates a map without BTF. `name` is truncated to 15 bytes.
pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
    name: &str,
) -> io::Result<OwnedFd> {
    let mut map_name = [0u8; 16];
    for (d, s) in map_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let mut attr = Attr::new(MapCreate {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags: flags,
        inner_map_fd: 0,
        numa_node: 0,
        map_name,
    });
    bpf(BPF_MAP_CREATE, &mut attr).map(fd_result)
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Writes one element: `key` and `value` must be the map's key and value
/// sizes.
pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
    let mut attr = Attr::new(MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        flags,
    });
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// Reads one element into `value`; `Ok(false)` when the key is absent.
pub fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    let mut attr = Attr::new(MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    });
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes one element; a missing key is not an error.
pub fn map_delete(map: BorrowedFd<'_>, key: &[u8]) -> io::Result<()> {
    let mut attr = Attr::new(MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: 0,
        flags: 0,
    });
    match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The key after `key` (the first key when `key` is `None`) into `next`;
/// `Ok(false)` at the end.
pub fn map_next_key(map: BorrowedFd<'_>, key: Option<&[u8]>, next: &mut [u8]) -> io::Result<bool> {
    let mut attr = Attr::new(MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: key.map_or(0, |k| k.as_ptr() as u64),
        value: next.as_mut_ptr() as u64,
        flags: 0,
    });
    match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Batch {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Writes `count` elements in one call per chunk: `keys` and `values` hold
/// them back to back (key size and value size each).
pub fn map_update_batch(
    map: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    key_size: usize,
    value_size: usize,
) -> io::Result<()> {
    let count = keys.len() / key_size;
    assert_eq!(keys.len(), count * key_size, "keys are whole keys");
    assert_eq!(values.len(), count * value_size, "one value per key");
    // The kernel updates element by element and reports how many it did;
    // chunks bound the work per call.
    const CHUNK: usize = 65536;
    let mut done = 0;
    while done < count {
        let n = (count - done).min(CHUNK);
        let mut attr = Attr::new(Batch {
            in_batch: 0,
            out_batch: 0,
            keys: keys[done * key_size..].as_ptr() as u64,
            values: values[done * value_size..].as_ptr() as u64,
            count: n as u32,
            map_fd: map.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        });
        bpf(BPF_MAP_UPDATE_BATCH, &mut attr)?;
        done += n;
    }
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy)]
struct ObjGet {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// Pins object `fd` at `path` (on bpffs).
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = Attr::new(ObjGet {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    });
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

#[repr(C)]
#[derive(Clone, Copy)]
struct LinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// `BPF_CGROUP_SETSOCKOPT`.
pub const ATTACH_CGROUP_SETSOCKOPT: u32 = 22;

/// Links program `prog` to `target` (a cgroup) at `attach_type` (aya 0.14
/// cannot hand out an owned link for some program kinds).
pub fn link_create(
    prog: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut attr = Attr::new(LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: target.as_raw_fd() as u32,
        attach_type,
        flags: 0,
    });
    bpf(BPF_LINK_CREATE, &mut attr).map(fd_result)
}

/// Opens a pinned object.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = Attr::new(ObjGet {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    });
    bpf(BPF_OBJ_GET, &mut attr).map(fd_result)
}

#[repr(C)]
#[derive(Clone, Copy)]
struct GetFdById {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// Opens the map with id `id`.
pub fn map_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new(GetFdById {
        id,
        next_id: 0,
        open_flags: 0,
    });
    bpf(BPF_MAP_GET_FD_BY_ID, &mut attr).map(fd_result)
}

/// The kernel's memory accounting of a map (`memlock` in its fdinfo).
pub fn map_memlock(map: BorrowedFd<'_>) -> io::Result<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", map.as_raw_fd()))?;
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no memlock line in the map's fdinfo"))
}

#[repr(C)]
#[derive(Clone, Copy)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn obj_info(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<()> {
    let mut attr = Attr::new(InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: buf.len() as u32,
        info: buf.as_mut_ptr() as u64,
    });
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(drop)
}

/// The cgroup a cgroup link is attached to: 0 once the cgroup is gone (the
/// link is then defunct).
pub fn cgroup_link_cgroup(link: BorrowedFd<'_>) -> io::Result<u64> {
    // struct bpf_link_info: type, id, prog_id, then (8-aligned) the union
    // whose cgroup member is { u64 cgroup_id; u32 attach_type; }.
    let mut buf = [0u8; 64];
    obj_info(link, &mut buf)?;
    Ok(u64::from_ne_bytes(buf[16..24].try_into().expect("8 bytes")))
}

/// The id of the program a link runs.
pub fn link_prog_id(link: BorrowedFd<'_>) -> io::Result<u32> {
    // struct bpf_link_info: u32 type, u32 id, u32 prog_id, …
    let mut buf = [0u8; 64];
    obj_info(link, &mut buf)?;
    Ok(u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes")))
}

#[repr(C)]
#[derive(Clone, Copy)]
struct LinkUpdate {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// Swaps the program behind a link in one step: no instant with no program
/// and none with both.
pub fn link_update(link: BorrowedFd<'_>, new_prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = Attr::new(LinkUpdate {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: new_prog.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
    });
    bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

/// Detaches a link from its hook now, whoever else still holds it (a pin,
/// another process). Dropping the last reference detaches too, but the
/// kernel does that later (a pin's reference goes after an RCU grace
/// period), and whoever asked to stop must see the hook empty on return.
/// A link already detached (its cgroup is gone) is fine.
pub fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = Attr::new(link.as_raw_fd() as u32);
    match bpf(BPF_LINK_DETACH, &mut attr) {
        Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => Ok(()),
        r => r.map(drop),
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct ProgQuery {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
}

/// Ids of the programs attached directly to the cgroup `cgroup` for
/// `attach_type` (not inherited ones).
pub fn cgroup_prog_ids(cgroup: BorrowedFd<'_>, attach_type: u32) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = Attr::new(ProgQuery {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
        query_flags: 0,
        attach_flags: 0,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
    });
    bpf(BPF_PROG_QUERY, &mut attr)?;
    // prog_cnt (at offset 24) now holds how many the kernel wrote.
    let count = u32::from_ne_bytes(attr.0[24..28].try_into().expect("4 bytes")) as usize;
    ids.truncate(count.min(64));
    Ok(ids)
}

/// Attach types geowall uses (enum bpf_attach_type).
pub mod attach_type {
    pub const CGROUP_INET_INGRESS: u32 = 0;
    pub const CGROUP_INET_SOCK_CREATE: u32 = 2;
    pub const CGROUP_INET4_CONNECT: u32 = 10;
    pub const CGROUP_INET6_CONNECT: u32 = 11;
    pub const CGROUP_UDP4_SENDMSG: u32 = 14;
    pub const CGROUP_UDP6_SENDMSG: u32 = 15;
    pub const ALL: [u32; 5] = [
        CGROUP_INET_SOCK_CREATE,
        CGROUP_INET4_CONNECT,
        CGROUP_INET6_CONNECT,
        CGROUP_UDP4_SENDMSG,
        CGROUP_UDP6_SENDMSG,
    ];
}
