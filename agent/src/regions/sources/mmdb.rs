//! `mmdb` sources: MaxMind DB files whose records carry a country code —
//! GeoLite2/GeoIP2 Country and City, ip-location-db country databases.
//!
//! Every network of the file is read, IPv4 and IPv6, the IPv4 subtree of an
//! IPv6 database included (as IPv4 networks); its aliases (`::ffff:0:0/96`,
//! `2002::/16`) are not counted as IPv6 networks. The country is read from
//! the configured field, by default `country.iso_code`, then
//! `registered_country.iso_code`, then ip-location-db's flat `country_code`.
//! A database with no country anywhere (ASN, Anonymous-IP) is refused.

use std::collections::HashMap;

use maxminddb::{LookupResult, MaxMindDbError, PathElement, Reader, WithinOptions};

use super::{Builder, Loaded, SourceError, Spec};
use crate::regions::{Prefix, countries};

/// The fields tried, in order, when none is configured.
pub const DEFAULT_FIELDS: [&str; 3] = [
    "country.iso_code",
    "registered_country.iso_code",
    "country_code",
];

/// What a data record tags its networks with (decoded once per record).
#[derive(Clone)]
enum RecordTag {
    Tag(u16),
    /// A country field holds a code that names no country.
    Unknown(String),
    NoCountry,
}

/// The record fields read, in order: the configured one, or the defaults.
fn field_names(spec: &Spec) -> Vec<&str> {
    match &spec.field {
        Some(f) => vec![f.as_str()],
        None => DEFAULT_FIELDS.to_vec(),
    }
}

/// Dotted field names as decode paths.
fn field_paths<'a>(names: &[&'a str]) -> Vec<Vec<PathElement<'a>>> {
    names
        .iter()
        .map(|f| f.split('.').map(PathElement::Key).collect())
        .collect()
}

/// The code the first field that has one gives a record.
fn code_of<S: AsRef<[u8]>>(
    result: &LookupResult<'_, S>,
    fields: &[Vec<PathElement<'_>>],
) -> Result<Option<String>, MaxMindDbError> {
    for f in fields {
        let v: Option<String> = result.decode_path(f)?;
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// The tag a record's code gives its network: the code in upper case when
/// it names a country; None for codes that name none (`EU`, `AP`...).
pub fn country_tag(code: &str) -> Option<String> {
    let upper = code.to_ascii_uppercase();
    countries::name(&upper).is_some().then_some(upper)
}

/// A network of the database as a prefix (IPv4 networks of an IPv6
/// database come as IPv4).
fn prefix_of(network: ipnetwork::IpNetwork) -> Prefix {
    let host = Prefix::host(network.network());
    Prefix::new(host.family(), host.bits(), network.prefix())
}

/// A UTC date for a Unix timestamp (`YYYY-MM-DD`).
fn date(epoch: u64) -> String {
    crate::vocab::clock::rfc3339(i128::from(epoch) * 1_000_000_000)[..10].to_owned()
}

pub fn parse(bytes: Vec<u8>, spec: &Spec, sha256: String) -> Result<Loaded, SourceError> {
    let path = spec.path.clone();
    let reader = reader(bytes, spec)?;
    let meta = reader.metadata();
    let about = format!(
        "MaxMind DB '{}', built {}, IPv{} tree of {} nodes",
        meta.database_type,
        date(meta.build_epoch),
        meta.ip_version,
        meta.node_count
    );
    let field_names = field_names(spec);
    let fields = field_paths(&field_names);
    // A valid search tree yields at most one network per leaf slot; more
    // means a corrupt tree whose branches point back into it.
    let max_networks = u64::from(meta.node_count) + 1;

    let mut b = Builder::default();
    let mut by_record: HashMap<usize, RecordTag> = HashMap::new();
    let mut unknown_codes: HashMap<String, usize> = HashMap::new();
    let networks = reader
        .networks(WithinOptions::default())
        .map_err(|e| SourceError::invalid(&path, format!("cannot walk the search tree: {e}")))?;
    let mut seen = 0u64;
    let mut any_country_field = false;
    for item in networks {
        let item = item.map_err(|e| {
            SourceError::parse(
                &path,
                format!("network #{}", seen + 1),
                format!("corrupt database: {e}"),
            )
        })?;
        seen += 1;
        if seen > max_networks {
            return Err(SourceError::invalid(
                &path,
                format!(
                    "corrupt database: the search tree yields more networks than its {} nodes allow",
                    meta.node_count
                ),
            ));
        }
        let network = item
            .network()
            .map_err(|e| SourceError::parse(&path, format!("network #{seen}"), format!("{e}")))?;
        let prefix = prefix_of(network);
        b.records += 1;
        let Some(offset) = item.offset() else {
            b.untagged_records += 1;
            continue;
        };
        let tag = match by_record.get(&offset) {
            Some(t) => t.clone(),
            None => {
                let code = code_of(&item, &fields).map_err(|e| {
                    SourceError::parse(
                        &path,
                        format!("network {prefix}"),
                        format!("corrupt record: {e}"),
                    )
                })?;
                let tag = match code {
                    None => RecordTag::NoCountry,
                    Some(code) => match country_tag(&code) {
                        Some(tag) => RecordTag::Tag(b.intern(&tag).map_err(|e| {
                            SourceError::parse(&path, format!("network {prefix}"), e)
                        })?),
                        None => RecordTag::Unknown(code),
                    },
                };
                by_record.insert(offset, tag.clone());
                tag
            }
        };
        match tag {
            RecordTag::Tag(id) => {
                any_country_field = true;
                b.push(prefix, id);
            }
            RecordTag::Unknown(code) => {
                any_country_field = true;
                *unknown_codes.entry(code).or_default() += 1;
                b.untagged_records += 1;
            }
            RecordTag::NoCountry => b.untagged_records += 1,
        }
    }
    if !any_country_field {
        return Err(SourceError::invalid(
            &path,
            format!(
                "no record carries a country code (looked for {}): database type '{}' is not a \
                 country or city database",
                field_names.join(", "),
                meta.database_type
            ),
        ));
    }
    let mut about = about;
    if !unknown_codes.is_empty() {
        let mut codes: Vec<_> = unknown_codes.into_iter().collect();
        codes.sort();
        let list: Vec<String> = codes.iter().map(|(c, n)| format!("{c} ({n})")).collect();
        about.push_str(&format!(
            "; networks left untagged for codes that name no country: {}",
            list.join(", ")
        ));
    }
    b.finish(spec, sha256, about)
}

/// Opens a database for lookups.
pub fn reader(bytes: Vec<u8>, spec: &Spec) -> Result<Reader<Vec<u8>>, SourceError> {
    Reader::from_source(bytes)
        .map_err(|e| SourceError::invalid(&spec.path, format!("not a readable MaxMind DB: {e}")))
}

/// The database's own answer for one address: its network and the tag
/// the configured fields give, as [`parse`] reads it (None for either when
/// it has none; None for the tag when the code names no country).
pub fn lookup_one(
    reader: &Reader<Vec<u8>>,
    spec: &Spec,
    addr: std::net::IpAddr,
) -> Result<Option<(Prefix, Option<String>)>, SourceError> {
    let path = &spec.path;
    let result = reader
        .lookup(addr)
        .map_err(|e| SourceError::invalid(path, format!("lookup of {addr}: {e}")))?;
    if !result.has_data() {
        return Ok(None);
    }
    let network = result
        .network()
        .map_err(|e| SourceError::invalid(path, format!("lookup of {addr}: {e}")))?;
    let prefix = prefix_of(network);
    let code = code_of(&result, &field_paths(&field_names(spec)))
        .map_err(|e| SourceError::invalid(path, format!("record of {prefix}: {e}")))?;
    Ok(Some((prefix, code.as_deref().and_then(country_tag))))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::regions::sources::Kind;

    fn data(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/maxmind")
            .join(name)
    }

    fn load(name: &str) -> Result<Loaded, SourceError> {
        let path = data(name);
        let bytes = std::fs::read(&path).unwrap();
        parse(bytes, &Spec::new(Kind::Mmdb, &path), String::new())
    }

    #[test]
    fn reads_country_and_city_databases() {
        for name in [
            "GeoIP2-Country-Test.mmdb",
            "GeoIP2-City-Test.mmdb",
            "GeoIP2-Country-Shield-Test.mmdb",
        ] {
            let l = load(name).unwrap();
            assert!(
                l.v4.len() > 10 && l.v6.len() > 10,
                "{name}: {} v4, {} v6",
                l.v4.len(),
                l.v6.len()
            );
            // IPv4 lives in the IPv4 subtree: no IPv6 network of the
            // aliases and none inside ::/96 were counted.
            assert!(l.v6.iter().all(|n| n.bits >> 32 != 0), "{name}");
            for alias in ["::ffff:0:0/96", "2002::/16"] {
                let a: Prefix = alias.parse().unwrap();
                assert!(
                    !l.v6.iter().any(|n| a.contains(&Prefix::new(
                        crate::regions::Family::V6,
                        n.bits,
                        n.len
                    ))),
                    "{name}: {alias}"
                );
            }
            assert!(l.about.contains("MaxMind DB"), "{}", l.about);
        }
    }

    #[test]
    fn codes_name_a_country_or_tag_nothing() {
        assert_eq!(country_tag("de").as_deref(), Some("DE"));
        assert_eq!(country_tag("GB").as_deref(), Some("GB"));
        for code in ["EU", "AP", "ZZ", "", "DEU"] {
            assert_eq!(country_tag(code), None, "{code}");
        }
    }

    #[test]
    fn a_lookup_answers_as_the_loaded_database_does() {
        let mut bytes = std::fs::read(data("GeoIP2-Country-Test.mmdb")).unwrap();
        // The database stores the string "DE" once: make it "EU", a code
        // that names no country.
        let at = bytes.windows(3).position(|w| w == b"\x42DE").unwrap();
        bytes[at + 1..at + 3].copy_from_slice(b"EU");
        let spec = Spec::new(Kind::Mmdb, "eu.mmdb");
        let loaded = parse(bytes.clone(), &spec, String::new()).unwrap();
        assert!(
            loaded.about.contains("codes that name no country: EU ("),
            "{}",
            loaded.about
        );
        let reader = reader(bytes, &spec).unwrap();
        let addr: std::net::IpAddr = "2a02:d180::1".parse().unwrap();
        assert!(loaded.lookup(addr).is_empty());
        assert_eq!(
            lookup_one(&reader, &spec, addr).unwrap(),
            Some(("2a02:d180::/29".parse().unwrap(), None))
        );
        // Every network's first and last address: the same network and tag.
        let mut checked = 0;
        for (family, nets) in [
            (crate::regions::Family::V4, &loaded.v4),
            (crate::regions::Family::V6, &loaded.v6),
        ] {
            for n in nets.iter() {
                let p = Prefix::new(family, n.bits, n.len);
                for a in [p.addr(), Prefix::new(family, p.last_bits(), 128).addr()] {
                    let got = lookup_one(&reader, &spec, a).unwrap();
                    assert_eq!(
                        got,
                        Some((p, Some(loaded.tags[n.tag as usize].clone()))),
                        "{a}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 40, "{checked}");
    }

    #[test]
    fn databases_without_countries_are_refused() {
        for name in ["GeoIP2-Anonymous-IP-Test.mmdb", "GeoLite2-ASN-Test.mmdb"] {
            let err = load(name).unwrap_err().to_string();
            assert!(
                err.contains("no record carries a country code"),
                "{name}: {err}"
            );
        }
        let err = load("MaxMind-DB-string-value-entries.mmdb")
            .unwrap_err()
            .to_string();
        assert!(err.contains("country"), "{err}");
    }

    #[test]
    fn broken_files_are_refused_not_panicked_on() {
        let good = std::fs::read(data("GeoIP2-Country-Test.mmdb")).unwrap();
        let spec = Spec::new(Kind::Mmdb, "broken.mmdb");
        // Truncated: the metadata at the end is gone.
        let err = parse(good[..good.len() / 2].to_vec(), &spec, String::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.to_string().contains("not a readable MaxMind DB"),
            "{err}"
        );
        // Empty.
        assert!(parse(Vec::new(), &spec, String::new()).is_err());
        // Garbage in the search tree and in the data section: every byte
        // pattern must give an error or a result, never a panic or a hang.
        for (start, len) in [(0usize, 4096usize), (2000, 3000), (8000, 4000)] {
            let mut bad = good.clone();
            for (i, b) in bad.iter_mut().enumerate().skip(start).take(len) {
                *b = (i as u8).wrapping_mul(31).wrapping_add(7);
            }
            let _ = parse(bad, &spec, String::new());
        }
    }
}
