//! `GW_CONFIG`, the programs' settings and the agent's heartbeat, shared
//! with the programs through a memory mapping.

use std::{
    io,
    os::fd::OwnedFd,
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use geowall_common::config;

use super::KernelError;

/// `GW_CONFIG`, memory-mapped: each slot is written with one aligned 8-byte
/// store, so a program's single load sees the old or the new value whole.
pub(crate) struct ConfigMap {
    ptr: NonNull<u64>,
    len: usize,
}

// SAFETY: the mapping is process-wide shared memory accessed only through
// atomic loads and stores.
unsafe impl Send for ConfigMap {}
unsafe impl Sync for ConfigMap {}

impl ConfigMap {
    pub(crate) fn open(fd: &OwnedFd) -> Result<Self, KernelError> {
        let len = page_size();
        // SAFETY: mapping a BPF_F_MMAPABLE array's fd: the kernel backs it
        // with the array's values (8 bytes each, contiguous).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(fd),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(KernelError::Sys {
                what: "mapping GW_CONFIG".into(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(ConfigMap {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned non-null"),
            len,
        })
    }

    fn slot(&self, slot: u32) -> &AtomicU64 {
        assert!(slot < config::SLOTS, "config slot in range");
        // SAFETY: the slot lies within the mapping and is 8-aligned.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(slot as usize)) }
    }

    pub(crate) fn load(&self, slot: u32) -> u64 {
        self.slot(slot).load(Ordering::Acquire)
    }

    pub(crate) fn store(&self, slot: u32, value: u64) {
        self.slot(slot).store(value, Ordering::Release);
    }

    /// Adds one to `slot` (atomically: two writers never raise it once).
    pub(crate) fn bump(&self, slot: u32) {
        self.slot(slot).fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for ConfigMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `open` mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}
