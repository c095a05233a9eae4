//! Where geowall pins its programs, links and maps on bpffs.
//!
//! ```text
//! <bpffs>/                       [agent] bpffs, /sys/fs/bpf/geowall by default
//!   links/gw_connect4 ...        one link per program, at the governed cgroup
//!   abi-<N>/maps/GW_* ...        the tables, for ABI version N
//!   abi-<N>/progs/gw_* ...       the programs
//! ```
//!
//! Links live outside the ABI folder so that a newer agent with another map
//! layout finds them and swaps its programs in (`BPF_LINK_UPDATE`) instead of
//! attaching a second set.

use std::{
    ffi::CString,
    fs, io,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use geowall_common::ABI_VERSION;

/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    root: PathBuf,
}

impl Pins {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn link(&self, program: &str) -> PathBuf {
        self.links().join(program)
    }

    pub fn abi_dir(&self, abi: u32) -> PathBuf {
        self.root.join(format!("abi-{abi}"))
    }

    pub fn maps(&self) -> PathBuf {
        self.abi_dir(ABI_VERSION).join("maps")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    pub fn progs(&self) -> PathBuf {
        self.abi_dir(ABI_VERSION).join("progs")
    }

    pub fn prog(&self, name: &str) -> PathBuf {
        self.progs().join(name)
    }

    /// Creates the folders, mounting bpffs at /sys/fs/bpf first if the root
    /// lies there and nothing is mounted.
    pub fn prepare(&self) -> io::Result<()> {
        ensure_bpffs(&self.root)?;
        for dir in [self.links(), self.maps(), self.progs()] {
            fs::create_dir_all(&dir)?;
        }
        Ok(())
    }

    /// Whether any link is pinned.
    pub fn has_links(&self) -> bool {
        fs::read_dir(self.links()).is_ok_and(|mut d| d.next().is_some())
    }

    /// Removes the programs and maps pinned by agents of other ABI versions
    /// (an upgrade that changed a map layout leaves the old tables behind
    /// once its links run the new programs). Returns how many pins were
    /// removed.
    pub fn remove_other_abis(&self) -> io::Result<usize> {
        let mut removed = 0;
        let current = self.abi_dir(ABI_VERSION);
        for entry in fs::read_dir(&self.root)? {
            let path = entry?.path();
            let is_abi = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("abi-"));
            if is_abi && path != current {
                removed += remove_abi_dir(&path)?;
            }
        }
        Ok(removed)
    }

    /// Removes every pin (and so, once no process holds them, every program,
    /// link and map) and the folders. Returns how many pins were removed.
    pub fn remove_all(&self) -> io::Result<usize> {
        let mut removed = 0;
        if !self.root.exists() {
            return Ok(0);
        }
        // Links first, detached explicitly: removing a pin drops its
        // reference only after an RCU grace period.
        detach_links_in(&self.links())?;
        removed += remove_files_in(&self.links())?;
        for entry in fs::read_dir(&self.root)? {
            let path = entry?.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("abi-"))
            {
                removed += remove_abi_dir(&path)?;
            }
        }
        remove_dir_if_present(&self.links())?;
        remove_dir_if_present(&self.root)?;
        Ok(removed)
    }
}

/// Removes one `abi-<N>` folder with its programs and maps.
fn remove_abi_dir(path: &Path) -> io::Result<usize> {
    let mut removed = remove_files_in(&path.join("progs"))?;
    removed += remove_files_in(&path.join("maps"))?;
    remove_dir_if_present(&path.join("progs"))?;
    remove_dir_if_present(&path.join("maps"))?;
    remove_dir_if_present(path)?;
    Ok(removed)
}

fn detach_links_in(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            continue;
        }
        let link = super::sys::obj_get(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        super::sys::link_detach(link.as_fd())
            .map_err(|e| io::Error::new(e.kind(), format!("detaching {}: {e}", path.display())))?;
    }
    Ok(())
}

fn remove_files_in(dir: &Path) -> io::Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            continue;
        }
        fs::remove_file(&path)?;
        n += 1;
    }
    Ok(n)
}

fn remove_dir_if_present(dir: &Path) -> io::Result<()> {
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `st` is a valid out-parameter; the path is NUL terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// The nearest existing folder at or above `path`.
fn nearest_existing(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            return PathBuf::from("/");
        }
    }
    p
}

/// Makes sure `root` will be on bpffs: mounts bpffs at /sys/fs/bpf when the
/// root lies below it and nothing is mounted there yet.
pub fn ensure_bpffs(root: &Path) -> io::Result<()> {
    let existing = nearest_existing(root);
    if is_bpffs(&existing)? {
        return Ok(());
    }
    let default_mount = Path::new("/sys/fs/bpf");
    if root.starts_with(default_mount) && existing == default_mount {
        let target = CString::new("/sys/fs/bpf").expect("no NUL");
        let fstype = CString::new("bpf").expect("no NUL");
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(
                err.kind(),
                format!("no bpffs at /sys/fs/bpf and mounting one failed: {err}"),
            ));
        }
        tracing::info!(path = "/sys/fs/bpf", "mounted bpffs");
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is not on a bpf filesystem (mount one with `mount -t bpf bpf {}`)",
            root.display(),
            existing.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_removes_the_pins_of_other_abis_and_keeps_its_own() {
        let root = std::env::temp_dir().join(format!("gw-pins-{}", std::process::id()));
        let pins = Pins::new(&root);
        let old = pins.abi_dir(ABI_VERSION - 1);
        for dir in [
            old.join("maps"),
            old.join("progs"),
            pins.maps(),
            pins.progs(),
            pins.links(),
        ] {
            fs::create_dir_all(&dir).unwrap();
        }
        fs::write(old.join("maps/GW_SOCKS"), "").unwrap();
        fs::write(old.join("progs/gw_connect4"), "").unwrap();
        fs::write(pins.map("GW_CONFIG"), "").unwrap();
        fs::write(pins.link("gw_connect4"), "").unwrap();

        assert_eq!(pins.remove_other_abis().unwrap(), 2);
        assert!(!old.exists());
        assert!(pins.map("GW_CONFIG").exists());
        assert!(pins.link("gw_connect4").exists());
        assert_eq!(
            pins.remove_other_abis().unwrap(),
            0,
            "nothing left to remove"
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
