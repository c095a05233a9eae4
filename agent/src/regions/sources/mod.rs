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

mod load;
mod loaded;
mod spec;

pub mod builtin;
pub mod cidr;
pub mod cloud;
pub mod geofeed;
pub mod mmdb;

pub use load::load;
pub use loaded::{Builder, Hit, Loaded, Net, SourceInfo, TooManyTags};
pub use spec::{
    BUILTIN_FILE_NAME, DEFAULT_MAX_SOURCE_BYTES, Kind, SourceError, Spec, SpecArgError,
    read_capped, text,
};
