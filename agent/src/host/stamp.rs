//! What identifies a file's version without reading it: size, modification
//! time and inode (a new file renamed over the old one counts as a change).

use std::{os::unix::fs::MetadataExt, path::Path};

/// What identifies a file's version.
pub type Stamp = Option<(u64, i64, i64, u64)>;

/// The stamp of the file at `path` (None when it cannot be read).
pub fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
}
