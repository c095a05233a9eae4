//! Region maps: reading map sources and compiling them into the prefix
//! tables the kernel looks destinations up in.
//!
//! A region tag is one of:
//! - a country: an ISO 3166-1 alpha-2 code, upper case (`DE`);
//! - a cloud region: `provider:region`, lower case (`aws:eu-west-1`);
//! - `local`: the built-in tag of loopback, private, CGNAT, link-local,
//!   unique-local and multicast ranges.

pub mod compile;
pub mod countries;
pub mod embedded;
pub mod groups;
pub mod ortc;
pub mod prefix;
pub mod query;
pub mod sources;

pub use compile::{CompiledMap, compile};
pub use prefix::{Family, Prefix};
use thiserror::Error;

/// The built-in tag of local destinations.
pub const LOCAL: &str = "local";

/// What kind of region a tag names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind<'a> {
    Local,
    Country,
    Cloud { provider: &'a str },
}

/// Which tags of a source an input looks at: a source is two layers,
/// countries and cloud regions, each answered by its own most specific
/// network (a country /16 stays the country of the cloud /24 inside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Countries,
    Clouds,
}

impl Layer {
    /// The layer of a tag: cloud regions are theirs; every other tag
    /// (countries, `local`) is the countries'.
    pub fn of(tag: &str) -> Layer {
        if matches!(kind(tag), Some(TagKind::Cloud { .. })) {
            Layer::Clouds
        } else {
            Layer::Countries
        }
    }
}

/// Classifies a normalized tag.
pub fn kind(tag: &str) -> Option<TagKind<'_>> {
    if tag == LOCAL {
        return Some(TagKind::Local);
    }
    if let Some((provider, region)) = tag.split_once(':') {
        let ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        };
        let region_ok = ok(region) || region == "GLOBAL";
        return (ok(provider) && region_ok).then_some(TagKind::Cloud { provider });
    }
    countries::name(tag).map(|_| TagKind::Country)
}

/// A map source's tag that names no region.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "'{raw}' is not a region tag: expected a country code like DE, a cloud region like \
     aws:eu-west-1, or local{hint}"
)]
pub struct TagError {
    raw: String,
    /// ` (did you mean 'DE'?)`, or nothing.
    hint: String,
}

/// Normalizes a tag as written in a map source: country codes are matched
/// case-insensitively (`de` → `DE`); cloud tags keep their case rules.
pub fn normalize_tag(raw: &str) -> Result<String, TagError> {
    let upper = raw.to_ascii_uppercase();
    if raw.len() == 2 && countries::name(&upper).is_some() {
        return Ok(upper);
    }
    if kind(raw).is_some() {
        return Ok(raw.to_owned());
    }
    let hint = suggest(raw, countries::COUNTRIES.iter().map(|(c, _)| *c))
        .map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default();
    Err(TagError {
        raw: raw.to_owned(),
        hint,
    })
}

/// The closest candidate to `input` by edit distance (case-insensitive),
/// when it is close enough to be a plausible typo.
pub fn suggest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let input_l = input.to_ascii_lowercase();
    let limit = (input.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&input_l, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// Levenshtein distance.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_tags() {
        assert_eq!(kind("DE"), Some(TagKind::Country));
        assert_eq!(kind("local"), Some(TagKind::Local));
        assert_eq!(
            kind("aws:eu-west-1"),
            Some(TagKind::Cloud { provider: "aws" })
        );
        assert_eq!(kind("aws:GLOBAL"), Some(TagKind::Cloud { provider: "aws" }));
        assert_eq!(kind("de"), None);
        assert_eq!(kind("ZZ"), None);
        assert_eq!(kind("aws:"), None);
    }

    #[test]
    fn normalizes_and_explains() {
        assert_eq!(normalize_tag("de").unwrap(), "DE");
        assert_eq!(
            normalize_tag("gcp:europe-west3").unwrap(),
            "gcp:europe-west3"
        );
        let err = normalize_tag("DX").unwrap_err();
        let err = err.to_string();
        assert!(err.contains("'DX' is not a region tag"), "{err}");
        assert!(err.contains("did you mean"), "{err}");
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(suggest("EUU", ["EU", "EEA", "US"]), Some("EU"));
        assert_eq!(suggest("germny", ["germany", "france"]), Some("germany"));
        assert_eq!(suggest("xyzzy", ["EU", "EEA"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
