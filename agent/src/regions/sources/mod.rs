//! Map sources: files that tag IP prefixes with regions.

pub mod cidr;

use std::{fmt, io, path::PathBuf};

use thiserror::Error;

use super::Prefix;

/// The kinds of map source geowall reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Lines of `CIDR TAG`, `#` comments.
    Cidr,
}

impl Kind {
    pub const ALL: &'static [(&'static str, Kind)] = &[("cidr", Kind::Cidr)];

    pub fn parse(name: &str) -> Option<Kind> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One tagged prefix read from a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub prefix: Prefix,
    pub tag: String,
    /// 1-based line (or record) number in the source, for errors and lookups.
    pub line: u32,
}

/// Everything read from one source.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub kind: Kind,
    pub path: PathBuf,
    pub entries: Vec<Entry>,
    /// SHA-256 of the file's bytes, hex (names the exact data that decided).
    pub sha256: String,
}

#[derive(Debug, Error)]
pub enum SourceError {
    #[error("map source {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: u32,
        message: String,
    },
    #[error("map source {path}: {size} bytes is over the {cap}-byte limit for a map source")]
    TooLarge { path: PathBuf, size: u64, cap: u64 },
}

/// Largest source file read, unless configured otherwise: far above any
/// real map (a full country database is under 10 MB).
pub const DEFAULT_MAX_SOURCE_BYTES: u64 = 512 << 20;

/// Reads and parses one source.
pub fn load(kind: Kind, path: &std::path::Path, max_bytes: u64) -> Result<Loaded, SourceError> {
    let io_err = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io_err)?.len();
    if size > max_bytes {
        return Err(SourceError::TooLarge {
            path: path.to_path_buf(),
            size,
            cap: max_bytes,
        });
    }
    let bytes = std::fs::read(path).map_err(io_err)?;
    let entries = match kind {
        Kind::Cidr => cidr::parse(&bytes, path)?,
    };
    Ok(Loaded {
        kind,
        path: path.to_path_buf(),
        entries,
        sha256: crate::util::sha256_hex(&bytes),
    })
}
