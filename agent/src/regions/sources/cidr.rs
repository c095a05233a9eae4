//! `cidr` sources: one `CIDR TAG` pair per line, `#` starts a comment.
//!
//! ```text
//! # our own networks
//! 127.20.0.0/16  US
//! 2001:db8::/32  DE
//! ```

use std::path::Path;

use super::{Entry, SourceError};
use crate::regions::normalize_tag;

pub fn parse(bytes: &[u8], path: &Path) -> Result<Vec<Entry>, SourceError> {
    let err = |line: u32, message: String| SourceError::Parse {
        path: path.to_path_buf(),
        line,
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u32
            + 1;
        err(line, "not UTF-8 text".into())
    })?;
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i as u32 + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let fields: Vec<&str> = content.split_whitespace().collect();
        let [cidr, tag] = fields[..] else {
            return Err(err(
                line,
                format!("expected 'CIDR TAG' (like '10.0.0.0/8 DE'), found '{content}'"),
            ));
        };
        let prefix = cidr.parse().map_err(|e| err(line, format!("{e}")))?;
        let tag = normalize_tag(tag).map_err(|e| err(line, e))?;
        entries.push(Entry { prefix, tag, line });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Vec<Entry>, String> {
        parse(s.as_bytes(), Path::new("t.cidr")).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_pairs_comments_and_blank_lines() {
        let e = parse_str("# header\n\n127.20.0.0/16 US\n2001:db8::/32\tde # inline\n").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].prefix.to_string(), "127.20.0.0/16");
        assert_eq!(e[0].tag, "US");
        assert_eq!(e[0].line, 3);
        assert_eq!(e[1].tag, "DE");
        assert_eq!(e[1].line, 4);
    }

    #[test]
    fn errors_name_the_line_and_the_value() {
        assert_eq!(
            parse_str("10.0.0.0/8 DE\n10.1.0.0/8 DE\n").unwrap_err(),
            "t.cidr:2: '10.1.0.0/8' has host bits set beyond /8 (did you mean 10.0.0.0/8?)"
        );
        assert!(
            parse_str("10.0.0.0/8\n")
                .unwrap_err()
                .starts_with("t.cidr:1: expected 'CIDR TAG'")
        );
        assert!(
            parse_str("10.0.0.0/8 QQ\n")
                .unwrap_err()
                .contains("'QQ' is not a region tag")
        );
        assert!(parse_str("10.0.0.0/8 DE x\n").is_err());
        assert!(
            parse(b"10.0.0.0/8 DE\n\xff\n", Path::new("t.cidr"))
                .unwrap_err()
                .to_string()
                .starts_with("t.cidr:2: not UTF-8")
        );
    }
}
