//! The country database shipped inside geowall, so that a fresh install,
//! offline, has a real full-size map: ip-location-db's
//! `geo-whois-asn-country` (CC0 packaging of RIR data that the Number
//! Resource Organization publishes under CC BY 4.0 — see `agent/data/`).
//!
//! It is stored zstd-compressed in the binary and checked against the
//! SHA-256 pinned in `agent/data/default-map.toml` each time it is read.
//! `cargo xtask update-default-map` refreshes both.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Kind, Loaded, SourceError, Spec, mmdb};

static COMPRESSED: &[u8] = include_bytes!("../../../data/geo-whois-asn-country.mmdb.zst");
static PIN: &str = include_str!("../../../data/default-map.toml");

/// What `agent/data/default-map.toml` pins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// npm package the database came from.
    pub package: String,
    pub version: String,
    pub file: String,
    /// SHA-256 of the uncompressed database.
    pub sha256: String,
    /// The package tarball's integrity string as the registry publishes it.
    pub integrity: String,
    /// When the pin was last refreshed.
    pub updated: String,
    pub licence: String,
    pub attribution: String,
}

/// The pin of the embedded database.
pub fn pin() -> Pin {
    toml::from_str(PIN).expect("agent/data/default-map.toml is valid (checked by a test)")
}

/// The spec the embedded database is read with: an `mmdb` source named
/// like the `builtin` one, so that errors name it.
pub fn inner_spec(spec: &Spec) -> Spec {
    Spec {
        kind: Kind::Mmdb,
        path: PathBuf::from(spec.label()),
        field: spec.field.clone(),
    }
}

/// The embedded database, decompressed and checked against its pin.
pub fn bytes() -> Result<Vec<u8>, SourceError> {
    decompress(&pin())
}

fn decompress(pin: &Pin) -> Result<Vec<u8>, SourceError> {
    use std::io::Read;
    let path = PathBuf::from(Spec::builtin().label());
    let mut out = Vec::with_capacity(8 << 20);
    ruzstd::decoding::StreamingDecoder::new(COMPRESSED)
        .map_err(|e| SourceError::invalid(&path, format!("cannot decompress: {e}")))?
        .read_to_end(&mut out)
        .map_err(|e| SourceError::invalid(&path, format!("cannot decompress: {e}")))?;
    let sha = crate::vocab::hex::sha256_hex(&out);
    if sha != pin.sha256 {
        return Err(SourceError::invalid(
            &path,
            format!("SHA-256 {sha} does not match the pinned {}", pin.sha256),
        ));
    }
    Ok(out)
}

pub fn load(spec: &Spec) -> Result<Loaded, SourceError> {
    let pin = pin();
    let bytes = decompress(&pin)?;
    let mut loaded = mmdb::parse(bytes, &inner_spec(spec), pin.sha256.clone())?;
    loaded.spec = spec.clone();
    loaded.about = format!(
        "builtin {}@{} ({}); {}",
        pin.package, pin.version, pin.attribution, loaded.about
    );
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regions::sources::BUILTIN_FILE_NAME;

    #[test]
    fn the_pin_parses_and_matches_the_embedded_database() {
        let pin = pin();
        assert_eq!(pin.file, BUILTIN_FILE_NAME);
        let bytes = bytes().unwrap();
        assert!(bytes.len() > 5 << 20, "{}", bytes.len());
        // Read as an mmdb source that errors name like the builtin one.
        let inner = inner_spec(&Spec::builtin());
        assert_eq!(inner.kind, Kind::Mmdb);
        assert_eq!(
            inner.path,
            PathBuf::from("builtin:geo-whois-asn-country.mmdb")
        );
    }
}
