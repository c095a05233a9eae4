//! `cidr` sources: one `CIDR TAG` pair per line, `#` starts a comment.
//!
//! ```text
//! # our own networks
//! 127.20.0.0/16  US
//! 2001:db8::/32  DE
//! ```

use super::{Builder, Loaded, SourceError, Spec, text};
use crate::regions::normalize_tag;

pub fn parse(bytes: &[u8], spec: &Spec, sha256: String) -> Result<Loaded, SourceError> {
    let text = text(bytes, spec)?;
    let err = |line: usize, message: &dyn std::fmt::Display| {
        SourceError::parse(&spec.path, line, message)
    };
    let mut b = Builder::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let fields: Vec<&str> = content.split_whitespace().collect();
        let [cidr, tag] = fields[..] else {
            return Err(err(
                line,
                &format!("expected 'CIDR TAG' (like '10.0.0.0/8 DE'), found '{content}'"),
            ));
        };
        b.records += 1;
        let prefix = cidr.parse().map_err(|e| err(line, &e))?;
        let tag = normalize_tag(tag).map_err(|e| err(line, &e))?;
        b.add(prefix, &tag).map_err(|e| err(line, &e))?;
    }
    b.finish(spec, sha256, "CIDR list".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regions::sources::Kind;

    fn parse_str(s: &str) -> Result<Loaded, SourceError> {
        parse(
            s.as_bytes(),
            &Spec::new(Kind::Cidr, "t.cidr"),
            String::new(),
        )
    }

    #[test]
    fn reads_pairs_comments_and_blank_lines() {
        let l = parse_str("# header\n\n127.20.0.0/16 US\n2001:db8::/32\tde # inline\n").unwrap();
        assert_eq!((l.v4.len(), l.v6.len(), l.records), (1, 1, 2));
        let hit = l.lookup("127.20.1.1".parse().unwrap());
        assert_eq!(hit.len(), 1);
        assert_eq!(hit[0].prefix.to_string(), "127.20.0.0/16");
        assert_eq!(hit[0].tags, ["US"]);
        assert_eq!(l.lookup("2001:db8::1".parse().unwrap())[0].tags, ["DE"]);
    }

    #[test]
    fn errors_name_the_line_and_the_value() {
        assert_eq!(
            parse_str("10.0.0.0/8 DE\n10.1.0.0/8 DE\n")
                .unwrap_err()
                .to_string(),
            "t.cidr:2: '10.1.0.0/8' has host bits set beyond /8 (did you mean 10.0.0.0/8?)"
        );
        assert!(
            parse_str("10.0.0.0/8\n")
                .unwrap_err()
                .to_string()
                .starts_with("t.cidr:1: expected 'CIDR TAG'")
        );
        assert!(
            parse_str("10.0.0.0/8 QQ\n")
                .unwrap_err()
                .to_string()
                .contains("'QQ' is not a region tag")
        );
        assert!(parse_str("10.0.0.0/8 DE x\n").is_err());
        assert!(
            parse(
                b"10.0.0.0/8 DE\n\xff\n",
                &Spec::new(Kind::Cidr, "t.cidr"),
                String::new()
            )
            .unwrap_err()
            .to_string()
            .starts_with("t.cidr:2: not UTF-8")
        );
    }

    #[test]
    fn an_error_page_saved_as_a_list_is_refused() {
        let page = b"<html>\n<head><title>502 Bad Gateway</title></head>\n</html>\n";
        let err = parse(page, &Spec::new(Kind::Cidr, "ips-v4"), String::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.to_string().starts_with("ips-v4:1: expected 'CIDR TAG'"),
            "{err}"
        );
        assert!(
            parse_str("")
                .unwrap_err()
                .to_string()
                .contains("has no network at all")
        );
        assert!(
            parse_str("# only comments\n")
                .unwrap_err()
                .to_string()
                .contains("has no network at all")
        );
    }
}
