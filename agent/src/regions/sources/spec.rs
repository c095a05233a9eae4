//! Naming and reading a map source: its kind and path ([`Spec`]), the
//! errors a source gives, and reading its bytes within a cap.

use std::{
    fmt, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

/// The file name of the country database shipped inside geowall.
pub const BUILTIN_FILE_NAME: &str = "geo-whois-asn-country.mmdb";

/// The kinds of map source geowall reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Cidr,
    Geofeed,
    Mmdb,
    Aws,
    Gcp,
    Azure,
    Builtin,
}

impl Kind {
    pub const ALL: &'static [(&'static str, Kind)] = &[
        ("mmdb", Kind::Mmdb),
        ("aws", Kind::Aws),
        ("gcp", Kind::Gcp),
        ("azure", Kind::Azure),
        ("geofeed", Kind::Geofeed),
        ("cidr", Kind::Cidr),
        ("builtin", Kind::Builtin),
    ];

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

    /// Known kind names, for error messages.
    pub fn names() -> String {
        Self::ALL
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to read: a kind, a file, and per-kind options.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Spec {
    pub kind: Kind,
    /// The file (unused for `builtin`).
    pub path: PathBuf,
    /// `mmdb`: the record field holding the country code, dotted
    /// (`country.iso_code`); `None` tries `country.iso_code`, then
    /// `registered_country.iso_code`, then `country_code`.
    pub field: Option<String>,
}

impl Spec {
    pub fn new(kind: Kind, path: impl Into<PathBuf>) -> Self {
        Self {
            kind,
            path: path.into(),
            field: None,
        }
    }

    /// The embedded country database.
    pub fn builtin() -> Self {
        Self::new(Kind::Builtin, PathBuf::new())
    }

    /// `KIND:PATH` (or `builtin`), as `--source` takes it.
    pub fn parse_arg(arg: &str) -> Result<Spec, SpecArgError> {
        if arg == "builtin" {
            return Ok(Spec::builtin());
        }
        let (kind, path) = arg
            .split_once(':')
            .ok_or_else(|| SpecArgError::NoKind(arg.to_owned()))?;
        let kind = Kind::parse(kind).ok_or_else(|| SpecArgError::UnknownKind(kind.to_owned()))?;
        if path.is_empty() {
            return Err(SpecArgError::NoPath(arg.to_owned()));
        }
        Ok(Spec::new(kind, path))
    }

    /// How the source is named to people: `mmdb:/path/x.mmdb`, `builtin`.
    pub fn label(&self) -> String {
        match self.kind {
            Kind::Builtin => format!("builtin:{BUILTIN_FILE_NAME}"),
            k => format!("{k}:{}", self.path.display()),
        }
    }
}

/// A `--source` argument that names no source.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecArgError {
    #[error("'{0}': expected KIND:PATH (kinds: {kinds})", kinds = Kind::names())]
    NoKind(String),
    #[error("unknown map kind '{0}' (known: {kinds})", kinds = Kind::names())]
    UnknownKind(String),
    #[error("'{0}': the path is empty")]
    NoPath(String),
}

#[derive(Debug, Error)]
pub enum SourceError {
    #[error("map source {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A located problem: `at` is `LINE` for text files, `LINE:COLUMN` for
    /// JSON, or a description of the place (`network 1.2.3.0/24`).
    #[error("{path}:{at}: {message}")]
    Parse {
        path: PathBuf,
        at: String,
        message: String,
    },
    #[error("map source {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// `size` is None for a file that yields more than it reports (a FIFO,
    /// a device): only "more than the cap" is known.
    #[error(
        "map source {path}: {} the {cap}-byte limit for a map source ([agent] max_source_bytes)",
        size.map_or_else(|| "yields more than".to_owned(), |s| format!("{s} bytes is over"))
    )]
    TooLarge {
        path: PathBuf,
        size: Option<u64>,
        cap: u64,
    },
    #[error(
        "map source {source_label} has no network at all: refusing an empty map (a failed download saved under the right name?)"
    )]
    Empty { source_label: String },
}

impl SourceError {
    pub fn parse(path: &Path, at: impl fmt::Display, message: impl fmt::Display) -> Self {
        SourceError::Parse {
            path: path.to_path_buf(),
            at: at.to_string(),
            message: message.to_string(),
        }
    }

    pub fn invalid(path: &Path, message: impl Into<String>) -> Self {
        SourceError::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Largest source file read unless configured otherwise: far above any real
/// map (a full country database is under 10 MB, Azure's service tags 4 MB).
pub const DEFAULT_MAX_SOURCE_BYTES: u64 = 256 << 20;

/// The bytes of a text source as UTF-8; an error names the line of the
/// first byte that is not UTF-8.
pub fn text<'a>(bytes: &'a [u8], spec: &Spec) -> Result<&'a str, SourceError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        SourceError::parse(&spec.path, line, "not UTF-8 text")
    })
}

/// Reads a file whole, refusing files over `max_bytes`. The size the file
/// system reports is only a first check: a FIFO, a device or a file still
/// being written reports less than it yields, so no more than `max_bytes`
/// are read whatever it reports.
pub fn read_capped(path: &Path, max_bytes: u64) -> Result<Vec<u8>, SourceError> {
    use std::io::Read;
    let io_err = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let too_large = |size: Option<u64>| SourceError::TooLarge {
        path: path.to_path_buf(),
        size,
        cap: max_bytes,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    if size > max_bytes {
        return Err(too_large(Some(size)));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(None));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_arguments() {
        assert_eq!(
            Spec::parse_arg("mmdb:/x/y.mmdb").unwrap(),
            Spec::new(Kind::Mmdb, "/x/y.mmdb")
        );
        assert_eq!(Spec::parse_arg("builtin").unwrap().kind, Kind::Builtin);
        assert!(
            Spec::parse_arg("mmdbx:/y")
                .unwrap_err()
                .to_string()
                .contains("unknown map kind")
        );
        assert!(Spec::parse_arg("aws:").is_err());
        assert!(Spec::parse_arg("nothing").is_err());
    }

    #[test]
    fn sources_over_the_cap_are_refused_whatever_size_they_report() {
        let path = std::env::temp_dir().join(format!("geowall-capped-{}", std::process::id()));
        std::fs::write(&path, [b'x'; 100]).unwrap();
        assert_eq!(read_capped(&path, 100).unwrap().len(), 100);
        let err = read_capped(&path, 99).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(
            err.ends_with(
                ": 100 bytes is over the 99-byte limit for a map source ([agent] max_source_bytes)"
            ),
            "{err}"
        );
        // A device reports size 0 and never ends: read up to the cap only.
        let err = read_capped(Path::new("/dev/zero"), 1000)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "map source /dev/zero: yields more than the 1000-byte limit for a map source ([agent] max_source_bytes)"
        );
        assert_eq!(read_capped(Path::new("/dev/null"), 10).unwrap(), b"");
    }
}
