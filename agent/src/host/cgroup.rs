//! The cgroup v2 hierarchy: where it is mounted, cgroup ids, job cgroups.

use std::{
    ffi::CString,
    fs,
    io::{self, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Component, Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("no cgroup v2 hierarchy is mounted (no cgroup2 line in /proc/mounts)")]
    NoHierarchy,
    #[error("cannot read /proc/mounts")]
    Mounts(#[source] io::Error),
    #[error("cgroup '{path}' is not inside the cgroup v2 hierarchy mounted at {mount}")]
    Outside { path: String, mount: PathBuf },
    #[error("cgroup {path} does not exist")]
    Missing { path: PathBuf },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The mounted cgroup v2 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    mount: PathBuf,
}

impl Hierarchy {
    /// Finds the cgroup v2 mount from /proc/mounts (`/sys/fs/cgroup` on
    /// unified hosts, `/sys/fs/cgroup/unified` on hybrid ones).
    pub fn discover() -> Result<Self, CgroupError> {
        let mounts = fs::read_to_string("/proc/mounts").map_err(CgroupError::Mounts)?;
        Self::from_mounts(&mounts).ok_or(CgroupError::NoHierarchy)
    }

    fn from_mounts(mounts: &str) -> Option<Self> {
        mounts.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            let (_dev, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (fstype == "cgroup2").then(|| Self {
                mount: PathBuf::from(unescape_mount_path(dir)),
            })
        })
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// Resolves a cgroup named relative to the hierarchy (`/`, `/batch/x`,
    /// `batch/x`) or by its absolute path under the mount.
    pub fn resolve(&self, name: &str) -> Result<PathBuf, CgroupError> {
        let rel = Path::new(name)
            .strip_prefix(&self.mount)
            .ok()
            .and_then(Path::to_str)
            .unwrap_or(name);
        self.resolve_under(&self.mount, rel)
    }

    /// Resolves `name` relative to the cgroup `base` (a path under the mount).
    pub fn resolve_under(&self, base: &Path, name: &str) -> Result<PathBuf, CgroupError> {
        let rel = Path::new(name.trim_start_matches('/'));
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(CgroupError::Outside {
                path: name.to_owned(),
                mount: base.to_path_buf(),
            });
        }
        if rel.as_os_str().is_empty() {
            return Ok(base.to_path_buf());
        }
        Ok(base.join(rel))
    }

    /// The cgroup's level: 0 for the hierarchy root, 1 for its children...
    pub fn level(&self, path: &Path) -> Result<u32, CgroupError> {
        let rel = path
            .strip_prefix(&self.mount)
            .map_err(|_| CgroupError::Outside {
                path: path.display().to_string(),
                mount: self.mount.clone(),
            })?;
        Ok(rel.components().count() as u32)
    }

    /// The path of `path` relative to the hierarchy, as `/a/b` (`/` for the
    /// root): how flow records name cgroups.
    pub fn display_name(&self, path: &Path) -> String {
        match path.strip_prefix(&self.mount) {
            Ok(rel) if rel.as_os_str().is_empty() => "/".into(),
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => path.display().to_string(),
        }
    }
}

/// `/proc/mounts` escapes blanks in paths as octal (`\040`).
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|t| u8::from_str_radix(t, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 id of the cgroup at `path` (what the kernel's
/// `bpf_get_current_cgroup_id` returns for tasks in it): the 8-byte file
/// handle of its folder.
pub fn id_of(path: &Path) -> Result<u64, CgroupError> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| CgroupError::Io {
        what: "cgroup path has a NUL byte",
        path: path.to_path_buf(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    let mut handle = Handle {
        bytes: 8,
        kind: 0,
        id: 0,
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `handle` is a `struct file_handle` with room for 8 bytes of
    // handle, which is what kernfs (cgroupfs) uses; the path is NUL terminated.
    let rc = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            (&raw mut handle).cast(),
            &mut mount_id,
            0,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return Err(if err.kind() == io::ErrorKind::NotFound {
            CgroupError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            CgroupError::Io {
                what: "cannot read the id of cgroup",
                path: path.to_path_buf(),
                source: err,
            }
        });
    }
    Ok(handle.id)
}

/// A `struct file_handle` of kernfs (cgroupfs): 8 bytes, the cgroup id.
#[repr(C)]
struct Handle {
    bytes: u32,
    kind: i32,
    id: u64,
}

/// `FILEID_KERNFS`: the handle type of kernfs file handles.
const FILEID_KERNFS: i32 = 0xfe;

/// Finds a cgroup's path from its id (the inverse of [`id_of`]) through a
/// file handle on the cgroup v2 mount: one lookup, no walk of the tree.
/// Needs CAP_DAC_READ_SEARCH, as the agent has.
pub struct IdResolver {
    mount: fs::File,
}

impl IdResolver {
    pub fn open(hierarchy: &Hierarchy) -> Result<Self, CgroupError> {
        let mount = fs::File::open(hierarchy.mount())
            .map_err(io_err("cannot open the cgroup v2 mount", hierarchy.mount()))?;
        Ok(Self { mount })
    }

    /// The path of cgroup `id`; `None` when no such cgroup exists (any
    /// more) or the caller lacks the capability.
    pub fn path_of(&self, id: u64) -> Option<PathBuf> {
        let mut handle = Handle {
            bytes: 8,
            kind: FILEID_KERNFS,
            id,
        };
        // SAFETY: `handle` is a valid kernfs `struct file_handle`; the mount
        // fd is open for as long as `self`.
        let fd = unsafe {
            libc::open_by_handle_at(
                self.mount.as_raw_fd(),
                (&raw mut handle).cast(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
    }
}

/// Creates the cgroup at `path` (and missing parents).
pub fn create(path: &Path) -> Result<(), CgroupError> {
    fs::create_dir_all(path).map_err(io_err("cannot create cgroup", path))
}

/// Removes an empty cgroup (a missing one is not an error).
pub fn remove(path: &Path) -> Result<(), CgroupError> {
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CgroupError::Io {
            what: "cannot remove cgroup",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Moves process `pid` into the cgroup at `path`.
pub fn move_process(path: &Path, pid: u32) -> Result<(), CgroupError> {
    let procs = path.join("cgroup.procs");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .map_err(io_err("cannot open", &procs))?;
    f.write_all(format!("{pid}\n").as_bytes())
        .map_err(io_err("cannot move a process into", path))
}

/// Whether any process lives in the cgroup or below it (`cgroup.events`).
pub fn populated(path: &Path) -> Result<bool, CgroupError> {
    let events = path.join("cgroup.events");
    let text = match fs::read_to_string(&events) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(CgroupError::Io {
                what: "cannot read",
                path: events,
                source: e,
            });
        }
    };
    Ok(text
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["populated", "1"]))
}

/// The cgroup v2 path of process `pid`, relative to the hierarchy (`/a/b`).
pub fn of_process(pid: u32) -> Result<String, CgroupError> {
    let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let text = fs::read_to_string(&path).map_err(io_err("cannot read", &path))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .ok_or(CgroupError::Io {
            what: "no cgroup v2 entry in",
            path,
            source: io::Error::from(io::ErrorKind::InvalidData),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_among_v1_mounts() {
        let mounts = "cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        let h = Hierarchy::from_mounts(mounts).unwrap();
        assert_eq!(h.mount(), Path::new("/sys/fs/cgroup/unified"));
        assert!(Hierarchy::from_mounts("proc /proc proc rw 0 0\n").is_none());
    }

    #[test]
    fn unescapes_blanks() {
        assert_eq!(unescape_mount_path("/a\\040b"), "/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }

    #[test]
    fn resolves_relative_and_absolute_names() {
        let h = Hierarchy {
            mount: "/sys/fs/cgroup".into(),
        };
        assert_eq!(h.resolve("/").unwrap().as_os_str(), "/sys/fs/cgroup");
        assert_eq!(h.resolve("/a/b").unwrap(), Path::new("/sys/fs/cgroup/a/b"));
        assert_eq!(h.resolve("a").unwrap(), Path::new("/sys/fs/cgroup/a"));
        assert_eq!(
            h.resolve("/sys/fs/cgroup/x").unwrap(),
            Path::new("/sys/fs/cgroup/x")
        );
        assert!(h.resolve("/a/../../etc").is_err());
        assert_eq!(h.level(Path::new("/sys/fs/cgroup")).unwrap(), 0);
        assert_eq!(h.level(Path::new("/sys/fs/cgroup/a/b")).unwrap(), 2);
        assert_eq!(h.display_name(Path::new("/sys/fs/cgroup")), "/");
        assert_eq!(h.display_name(Path::new("/sys/fs/cgroup/a/b")), "/a/b");
    }
}
