//! Reading one source, whatever its kind.

use super::{Kind, Loaded, SourceError, Spec, builtin, cidr, cloud, geofeed, mmdb, read_capped};

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
