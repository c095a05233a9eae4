//! Durations and sizes as the config and the command line write them:
//! `"90s"`, `"10m"`, `"12h"`, `"1d"`, `"1w"`, `"250ms"`; `"64MiB"`, `"512K"`,
//! `"1G"` (binary units). A bare integer is seconds or bytes.

use std::{fmt, time::Duration};

use serde::{Deserialize, Deserializer};
use thiserror::Error;

/// A duration or size that does not read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnitError {
    #[error("invalid size '{0}' (expected e.g. \"64MiB\", \"512KiB\", \"1GiB\")")]
    Size(String),
    #[error("invalid duration '{0}' (expected e.g. \"30s\", \"10m\", \"12h\", \"1d\")")]
    Duration(String),
}

/// A size in bytes, written as an integer or with a unit (`"64MiB"`,
/// `"512K"`, `"1G"`; units are binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByteSize(pub u64);

/// A duration, written `"90s"`, `"10m"`, `"12h"`, `"1d"`, `"1w"` (or an
/// integer: seconds); shown in the largest unit that divides it.
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
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::Size(s.to_owned());
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
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let bad = || UnitError::Duration(s.to_owned());
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
        assert_eq!(
            parse_duration("soon").unwrap_err().to_string(),
            "invalid duration 'soon' (expected e.g. \"30s\", \"10m\", \"12h\", \"1d\")"
        );
    }
}
