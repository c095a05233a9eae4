//! Map sources: files that tag IP prefixes with regions.
//!
//! | kind | file | tags |
//! |---|---|---|
//! | `mmdb` | MaxMind DB (GeoIP2/GeoLite2 Country and City, ip-location-db) | country |
//! | `aws` | `ip-ranges.json` | `aws:<region>` |
//! | `gcp` | `cloud.json` | `gcp:<scope>` |
//! | `azure` | `ServiceTags_Public.json` | `azure:<region>` |
//! | `geofeed` | RFC 8805 CSV: prefix,country,region,city,postal | country |
//! | `cidr` | lines of `CIDR TAG` | as written |
//! | `builtin` | the country database shipped inside geowall | country |
//!
//! A cloud entry whose region is empty or global gets `<provider>:GLOBAL`.
//! Every loader reads the whole file or fails: a source is never half
//! read. A source that yields no network at all is refused (a failed
//! download saved under the right name must not empty the map).

pub mod builtin;
pub mod cidr;
pub mod cloud;
pub mod geofeed;
pub mod mmdb;

use std::{
    collections::HashMap,
    fmt, io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use thiserror::Error;

use super::{Family, Layer, Prefix};

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
    pub fn parse_arg(arg: &str) -> Result<Spec, String> {
        if arg == "builtin" {
            return Ok(Spec::builtin());
        }
        let (kind, path) = arg
            .split_once(':')
            .ok_or_else(|| format!("'{arg}': expected KIND:PATH (kinds: {})", Kind::names()))?;
        let kind = Kind::parse(kind)
            .ok_or_else(|| format!("unknown map kind '{kind}' (known: {})", Kind::names()))?;
        if path.is_empty() {
            return Err(format!("'{arg}': the path is empty"));
        }
        Ok(Spec::new(kind, path))
    }

    /// How the source is named to people: `mmdb:/path/x.mmdb`, `builtin`.
    pub fn label(&self) -> String {
        match self.kind {
            Kind::Builtin => format!("builtin:{}", builtin::FILE_NAME),
            k => format!("{k}:{}", self.path.display()),
        }
    }
}

/// A network of one family: left-aligned address bits, prefix length, and
/// the index of its tag in [`Loaded::tags`]. Packed to 24 bytes: a world
/// map holds a million of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(C, packed(8))]
pub struct Net {
    pub bits: u128,
    pub len: u8,
    pub tag: u16,
}

/// Everything read from one source.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub spec: Spec,
    /// SHA-256 of the file's bytes (for `builtin`, of the decompressed
    /// database): names the exact data that decided.
    pub sha256: String,
    /// What the file says about itself (database type and build date,
    /// provider sync token...).
    pub about: String,
    /// Tag names; [`Net::tag`] indexes this.
    pub tags: Vec<String>,
    /// IPv4 networks, sorted, without duplicates.
    pub v4: Vec<Net>,
    /// IPv6 networks, sorted, without duplicates.
    pub v6: Vec<Net>,
    /// Records read (entries of the file, before de-duplication).
    pub records: usize,
    /// Records that carried no usable tag (no country in an MMDB record, an
    /// empty country in a geofeed row).
    pub untagged_records: usize,
}

impl Loaded {
    pub fn networks(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Distinct networks per tag.
    #[cfg(test)]
    pub fn tag_counts(&self) -> HashMap<&str, usize> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for n in self.v4.iter().chain(&self.v6) {
            *counts
                .entry(self.tags[n.tag as usize].as_str())
                .or_default() += 1;
        }
        counts
    }

    /// This source's own answer for `addr`, read as the compiler reads it:
    /// for countries and for cloud regions separately ([`Layer::of`]), the
    /// most specific network containing `addr` that carries tags of that
    /// layer. Countries first; a single hit when both layers answer from
    /// the same network; none when the source says nothing about `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Vec<Hit<'_>> {
        let host = Prefix::host(addr);
        let list = match host.family() {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        };
        let mut countries: Option<Hit<'_>> = None;
        let mut clouds: Option<Hit<'_>> = None;
        for len in (0..=host.len()).rev() {
            if countries.is_some() && clouds.is_some() {
                break;
            }
            let p = Prefix::new(host.family(), host.bits(), len);
            let start = list.partition_point(|n| (n.bits, n.len) < (p.bits(), len));
            for n in list[start..]
                .iter()
                .take_while(|n| n.bits == p.bits() && n.len == len)
            {
                let tag = self.tags[n.tag as usize].as_str();
                let layer = match Layer::of(tag) {
                    Layer::Countries => &mut countries,
                    Layer::Clouds => &mut clouds,
                };
                match layer {
                    None => {
                        *layer = Some(Hit {
                            prefix: p,
                            tags: vec![tag],
                        })
                    }
                    // Found at this length: more tags of the same network.
                    Some(hit) if hit.prefix == p => hit.tags.push(tag),
                    // Found at a longer length already.
                    Some(_) => {}
                }
            }
        }
        match (countries, clouds) {
            (Some(mut a), Some(b)) if a.prefix == b.prefix => {
                a.tags.extend(b.tags);
                vec![a]
            }
            (a, b) => a.into_iter().chain(b).collect(),
        }
    }
}

/// One layer's answer of a source for an address (see [`Loaded::lookup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit<'a> {
    /// The network that answers.
    pub prefix: Prefix,
    /// Its tags of the layer (of both layers when both answer from it).
    pub tags: Vec<&'a str>,
}

#[cfg(test)]
impl Loaded {
    /// A `cidr` source of `(prefix, tag)` pairs, for tests.
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Loaded {
        let mut b = Builder::default();
        for (p, t) in pairs {
            b.add(p.parse().unwrap(), t).unwrap();
        }
        b.finish(&Spec::new(Kind::Cidr, "t"), String::new(), String::new())
            .unwrap()
    }
}

/// Collects a source's networks: interns tags, drops duplicates.
#[derive(Default)]
pub struct Builder {
    tags: Vec<String>,
    ids: HashMap<String, u16>,
    v4: Vec<Net>,
    v6: Vec<Net>,
    pub records: usize,
    pub untagged_records: usize,
}

impl Builder {
    /// Adds `prefix` tagged `tag` (already normalized).
    pub fn add(&mut self, prefix: Prefix, tag: &str) -> Result<(), String> {
        let id = self.intern(tag)?;
        self.push(prefix, id);
        Ok(())
    }

    /// The id of tag `tag` (already normalized).
    pub fn intern(&mut self, tag: &str) -> Result<u16, String> {
        if let Some(id) = self.ids.get(tag) {
            return Ok(*id);
        }
        let id = u16::try_from(self.tags.len())
            .map_err(|_| "more than 65536 distinct tags in one source".to_owned())?;
        self.tags.push(tag.to_owned());
        self.ids.insert(tag.to_owned(), id);
        Ok(id)
    }

    /// Adds `prefix` tagged with tag `id` (from [`Builder::intern`]).
    pub fn push(&mut self, prefix: Prefix, id: u16) {
        let net = Net {
            bits: prefix.bits(),
            len: prefix.len(),
            tag: id,
        };
        match prefix.family() {
            Family::V4 => self.v4.push(net),
            Family::V6 => self.v6.push(net),
        }
    }

    pub fn finish(
        mut self,
        spec: &Spec,
        sha256: String,
        about: String,
    ) -> Result<Loaded, SourceError> {
        for list in [&mut self.v4, &mut self.v6] {
            list.sort_unstable();
            list.dedup();
        }
        if self.v4.is_empty() && self.v6.is_empty() {
            return Err(SourceError::Empty {
                source_label: spec.label(),
            });
        }
        Ok(Loaded {
            spec: spec.clone(),
            sha256,
            about,
            tags: self.tags,
            v4: self.v4,
            v6: self.v6,
            records: self.records,
            untagged_records: self.untagged_records,
        })
    }
}

/// A map source as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    pub spec: Spec,
    pub sha256: String,
    /// What the file says about itself (type, build date, sync token).
    pub about: String,
    /// Distinct networks it brought.
    pub networks: usize,
    pub v4: usize,
    pub v6: usize,
    /// Entries read, and those that tagged nothing.
    pub records: usize,
    pub untagged_records: usize,
}

impl SourceInfo {
    pub fn of(l: &Loaded) -> Self {
        Self {
            spec: l.spec.clone(),
            sha256: l.sha256.clone(),
            about: l.about.clone(),
            networks: l.networks(),
            v4: l.v4.len(),
            v6: l.v6.len(),
            records: l.records,
            untagged_records: l.untagged_records,
        }
    }
}

#[derive(Debug, Error)]
pub enum SourceError {
    #[error("map source {path}: {source}")]
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
    pub fn parse(path: &Path, at: impl fmt::Display, message: impl Into<String>) -> Self {
        SourceError::Parse {
            path: path.to_path_buf(),
            at: at.to_string(),
            message: message.into(),
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

/// Reads and parses one source. Parsers are our code and third-party code
/// (the MaxMind DB reader) fed untrusted bytes: a panic in them becomes an
/// error about the source, never a crashed agent.
pub fn load(spec: &Spec, max_bytes: u64) -> Result<Loaded, SourceError> {
    let run = || -> Result<Loaded, SourceError> {
        if spec.kind == Kind::Builtin {
            return builtin::load(spec);
        }
        let bytes = read_capped(&spec.path, max_bytes)?;
        let sha256 = crate::vocab::hex::sha256_hex(&bytes);
        match spec.kind {
            Kind::Cidr => cidr::parse(&bytes, spec, sha256),
            Kind::Geofeed => geofeed::parse(&bytes, spec, sha256),
            Kind::Mmdb => mmdb::parse(bytes, spec, sha256),
            Kind::Aws | Kind::Gcp | Kind::Azure => cloud::parse(&bytes, spec, sha256),
            Kind::Builtin => unreachable!("handled above"),
        }
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown failure".into());
            Err(SourceError::invalid(
                &spec.path,
                format!("the {} reader failed on this file: {what}", spec.kind),
            ))
        }
    }
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
                .contains("unknown map kind")
        );
        assert!(Spec::parse_arg("aws:").is_err());
        assert!(Spec::parse_arg("nothing").is_err());
    }

    fn hits(l: &Loaded, addr: &str) -> Vec<(String, Vec<String>)> {
        l.lookup(addr.parse().unwrap())
            .into_iter()
            .map(|h| {
                (
                    h.prefix.to_string(),
                    h.tags.into_iter().map(str::to_owned).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_source_answers_with_its_most_specific_networks() {
        let l = Loaded::from_pairs(&[
            ("10.0.0.0/8", "DE"),
            ("10.1.0.0/16", "aws:eu-west-1"),
            ("10.1.0.0/16", "aws:GLOBAL"),
            ("10.1.0.0/16", "aws:GLOBAL"),
        ]);
        assert_eq!(l.v4.len(), 3);
        // Both cloud tags of the /16; the country from the /8 around it.
        assert_eq!(
            hits(&l, "10.1.2.3"),
            [
                ("10.0.0.0/8".into(), vec!["DE".into()]),
                (
                    "10.1.0.0/16".into(),
                    vec!["aws:eu-west-1".into(), "aws:GLOBAL".into()]
                ),
            ]
        );
        assert_eq!(
            hits(&l, "10.2.0.1"),
            [("10.0.0.0/8".into(), vec!["DE".into()])]
        );
        assert!(l.lookup("11.0.0.1".parse().unwrap()).is_empty());
        assert_eq!(l.tag_counts()["aws:GLOBAL"], 1);
    }

    #[test]
    fn a_source_answers_per_layer_as_the_compiler_reads_it() {
        let l = Loaded::from_pairs(&[
            ("10.0.0.0/8", "DE"),
            ("10.1.0.0/16", "aws:x"),
            ("10.1.2.0/24", "FR"),
            ("10.1.2.0/24", "aws:y"),
            ("2001:db8::/32", "aws:z"),
        ]);
        let map = crate::regions::compile(std::slice::from_ref(&l)).unwrap();
        let layers = |addr: &str| {
            let mut tags: Vec<String> = hits(&l, addr).into_iter().flat_map(|h| h.1).collect();
            tags.sort();
            assert_eq!(
                tags,
                map.tagsets[map.lookup(addr.parse().unwrap()).0 as usize],
                "{addr}"
            );
            hits(&l, addr)
        };
        // The country from the /8, the cloud region from the /16 in it.
        assert_eq!(
            layers("10.1.0.1"),
            [
                ("10.0.0.0/8".into(), vec!["DE".into()]),
                ("10.1.0.0/16".into(), vec!["aws:x".into()]),
            ]
        );
        // Both layers from the same network: one hit.
        assert_eq!(
            layers("10.1.2.3"),
            [("10.1.2.0/24".into(), vec!["FR".into(), "aws:y".into()])]
        );
        // A cloud region only.
        assert_eq!(
            layers("2001:db8::1"),
            [("2001:db8::/32".into(), vec!["aws:z".into()])]
        );
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

    #[test]
    fn an_empty_source_is_refused() {
        let err = Builder::default()
            .finish(
                &Spec::new(Kind::Cidr, "e.cidr"),
                String::new(),
                String::new(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("has no network at all"), "{err}");
    }
}
