//! `geofeed` sources: RFC 8805 self-published IP geolocation feeds, CSV rows
//! of `prefix,country,region,city,postal` (only prefix and country matter
//! here; `#` lines are comments; fields may be double-quoted).
//!
//! A row with an empty country is read but tags nothing.

use super::{Builder, Loaded, SourceError, Spec, text};
use crate::regions::normalize_tag;

/// A CSV line whose quoted field does not end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a quoted field is not closed")]
struct UnclosedQuote;

/// Splits one CSV line (RFC 4180 quoting) into fields.
fn fields(line: &str) -> Result<Vec<String>, UnclosedQuote> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') if at_start => {
                quoted = true;
                at_start = false;
            }
            (true, '"') if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, ',') => {
                out.push(std::mem::take(&mut cur));
                at_start = true;
            }
            (_, c) => {
                cur.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err(UnclosedQuote);
    }
    out.push(cur);
    Ok(out)
}

pub fn parse(bytes: &[u8], spec: &Spec, sha256: String) -> Result<Loaded, SourceError> {
    let text = text(bytes, spec)?;
    let err = |line: usize, message: &dyn std::fmt::Display| {
        SourceError::parse(&spec.path, line, message)
    };
    let mut b = Builder::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let f = fields(content).map_err(|e| err(line, &e))?;
        if f.len() < 2 {
            return Err(err(
                line,
                &format!("expected 'prefix,country,region,city,postal', found '{content}'"),
            ));
        }
        b.records += 1;
        let prefix = f[0].trim().parse().map_err(|e| err(line, &e))?;
        let country = f[1].trim();
        if country.is_empty() {
            b.untagged_records += 1;
            continue;
        }
        if country.len() != 2 {
            return Err(err(
                line,
                &format!("'{country}' is not a two-letter country code"),
            ));
        }
        let tag = normalize_tag(country).map_err(|e| err(line, &e))?;
        b.add(prefix, &tag).map_err(|e| err(line, &e))?;
    }
    b.finish(spec, sha256, "RFC 8805 geofeed".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regions::sources::Kind;

    fn parse_str(s: &str) -> Result<Loaded, SourceError> {
        parse(
            s.as_bytes(),
            &Spec::new(Kind::Geofeed, "feed.csv"),
            String::new(),
        )
    }

    #[test]
    fn reads_rfc8805_rows() {
        let l = parse_str(
            "# comment\n\
             5.101.96.0/21,NL,NL-NH,Amsterdam,1098 XH\n\
             2a03:b0c0::/32,DE,DE-HE,Frankfurt,\n\
             \"192.0.2.0/24\",\"US\",\"US-CA\",\"San Jose, CA\",\"95141\"\n\
             198.51.100.0/24,,,,\n",
        )
        .unwrap();
        assert_eq!(
            (l.v4.len(), l.v6.len(), l.records, l.untagged_records),
            (2, 1, 4, 1)
        );
        assert_eq!(l.lookup("5.101.97.1".parse().unwrap())[0].tags, ["NL"]);
        assert_eq!(l.lookup("192.0.2.9".parse().unwrap())[0].tags, ["US"]);
        assert!(l.lookup("198.51.100.1".parse().unwrap()).is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        assert!(
            parse_str("10.0.0.0/8,DEU,,,\n")
                .unwrap_err()
                .to_string()
                .starts_with("feed.csv:1: 'DEU'")
        );
        assert!(
            parse_str("# x\n10.1.0.0/8,DE,,,\n")
                .unwrap_err()
                .to_string()
                .starts_with("feed.csv:2: '10.1.0.0/8' has host bits")
        );
        assert!(
            parse_str("10.0.0.0/8\n")
                .unwrap_err()
                .to_string()
                .starts_with("feed.csv:1: expected")
        );
        assert!(
            parse_str("\"10.0.0.0/8,DE\n")
                .unwrap_err()
                .to_string()
                .contains("not closed")
        );
    }

    #[test]
    fn csv_fields() {
        assert_eq!(
            fields("a,\"b,c\",\"d\"\"e\",").unwrap(),
            ["a", "b,c", "d\"e", ""]
        );
    }

    #[test]
    fn reads_the_real_digitalocean_feed_when_present() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/cloud/digitalocean-geofeed.2025-07-22.csv");
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!(
                "NOTE: {} is absent: the real DigitalOcean geofeed was not checked",
                path.display()
            );
            return;
        };
        let l = parse(&bytes, &Spec::new(Kind::Geofeed, &path), String::new()).unwrap();
        // Data rows: neither blank nor `#` comments.
        let rows = String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(l.records, rows);
        assert!(l.networks() > 500, "{}", l.networks());
    }
}
