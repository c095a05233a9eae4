//! `[audit]`: rotation, masking and the `log_allowed = "first"` window.
//!
//! ```toml
//! [audit]
//! rotate_size = "64MiB"      # rotate the log when it reaches this size ("0": never)
//! rotate_age = "1d"          # ...or when its first record is this old ("0": never)
//! keep = 0                   # rotated files kept (0: all; older ones are deleted)
//! allowed_window = "1m"      # log_allowed = "first": one record per job, destination
//!                            # and port in this window, then a count
//! mask = ['--db-url=\S*://[^:]*:(\S*)@']  # more patterns: the groups (or the whole match) become ***
//! mask_names = ["pin"]       # more names of credential arguments
//! mask_defaults = true       # keep the built-in patterns
//! ```
//!
//! Every key applies on reload too.

use std::{fmt, time::Duration};

use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// `[audit]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Rotate once the active file reaches this many bytes (0: never).
    pub rotate_size: ByteSize,
    /// Rotate once the active file's first record is this old (0: never).
    pub rotate_age: Span,
    /// Rotated files kept; older ones are deleted at rotation (0: all).
    pub keep: u32,
    /// The window of `log_allowed = "first"`.
    pub allowed_window: Span,
    /// More masking patterns (regular expressions) for command lines.
    pub mask: Vec<Spanned<String>>,
    /// More names of credential-like arguments (`--NAME=…`, `NAME=…`,
    /// `--NAME …`).
    pub mask_names: Vec<String>,
    /// Whether the built-in masking patterns apply.
    pub mask_defaults: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            rotate_size: ByteSize(64 << 20),
            rotate_age: Span(Duration::from_secs(86_400)),
            keep: 0,
            allowed_window: Span(Duration::from_secs(60)),
            mask: Vec::new(),
            mask_names: Vec::new(),
            mask_defaults: true,
        }
    }
}

/// A size in bytes, written as an integer or with a unit (`"64MiB"`,
/// `"512K"`, `"1G"`; units are binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByteSize(pub u64);

/// A duration, written `"90s"`, `"10m"`, `"12h"`, `"1d"`, `"1w"` (or an
/// integer: seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span(pub Duration);

impl Span {
    /// None for zero ("never").
    pub fn non_zero(self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(u64),
    Str(String),
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match IntOrString::deserialize(d)? {
            IntOrString::Int(n) => Ok(ByteSize(n)),
            IntOrString::Str(s) => parse_size(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match IntOrString::deserialize(d)? {
            IntOrString::Int(n) => Ok(Span(Duration::from_secs(n))),
            IntOrString::Str(s) => parse_duration(&s)
                .map(Span)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
            if s >= n && s.is_multiple_of(n) {
                return write!(f, "{}{unit}", s / n);
            }
        }
        write!(f, "{s}s")
    }
}

/// Splits `"10m"` into `(10, "m")`.
fn number_and_unit(s: &str) -> Option<(u64, &str)> {
    let s = s.trim();
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n = s[..end].parse().ok()?;
    Some((n, s[end..].trim()))
}

/// `"64MiB"`, `"512K"`, `"1G"`, `"4096"`: bytes (units are binary).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size '{s}' (expected e.g. \"64MiB\", \"512KiB\", \"1GiB\")");
    let (n, unit) = number_and_unit(s).ok_or_else(bad)?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// `"90s"`, `"10m"`, `"12h"`, `"1d"`, `"1w"`, `"250ms"`, `"0"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad =
        || format!("invalid duration '{s}' (expected e.g. \"30s\", \"10m\", \"12h\", \"1d\")");
    let (n, unit) = number_and_unit(s).ok_or_else(bad)?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
        assert_eq!(Span(Duration::from_secs(3600)).to_string(), "1h");
        assert_eq!(Span(Duration::from_secs(90)).to_string(), "90s");
    }

    #[test]
    fn the_table_reads_with_units() {
        #[derive(Deserialize)]
        struct F {
            audit: AuditConfig,
        }
        let f: F = toml::from_str(
            "[audit]\nrotate_size = \"1MiB\"\nrotate_age = 3600\nkeep = 5\nallowed_window = \"30s\"\n",
        )
        .unwrap();
        assert_eq!(f.audit.rotate_size, ByteSize(1 << 20));
        assert_eq!(f.audit.rotate_age.0, Duration::from_secs(3600));
        assert_eq!(f.audit.keep, 5);
        assert!(f.audit.mask_defaults);
        let err = toml::from_str::<F>("[audit]\nrotate_size = \"big\"\n")
            .err()
            .unwrap();
        assert!(err.to_string().contains("invalid size"), "{err}");
    }
}
