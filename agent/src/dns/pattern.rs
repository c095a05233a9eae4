//! Name patterns: `api.partner.test` (exactly that name) or
//! `*.eu-central-1.amazonaws.com` (one or more labels before the suffix,
//! never the suffix itself). Matching is case-insensitive on the canonical
//! name (lower-case, no final dot). Policies (`allow_names`, `deny_names`),
//! approvals (`--to NAME`) and `log tail --name` use them.

use std::fmt;

use thiserror::Error;

/// Longest name in presentation form.
const MAX_NAME: usize = 253;
/// Longest label.
const MAX_LABEL: usize = 63;

/// Why a pattern was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("'{pattern}' is not a name pattern: {why}")]
pub struct PatternError {
    pub pattern: String,
    pub why: &'static str,
}

/// A parsed name pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamePattern {
    /// The canonical name, or the suffix after `*.`.
    name: String,
    /// `*.`: strict subdomains of `name`.
    wildcard: bool,
}

impl NamePattern {
    /// Parses `exact.name` or `*.suffix` (a final dot is allowed).
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let err = |why| PatternError {
            pattern: text.to_owned(),
            why,
        };
        let trimmed = text.trim();
        let (wildcard, rest) = match trimmed.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let name = rest.strip_suffix('.').unwrap_or(rest).to_ascii_lowercase();
        if name.is_empty() {
            return Err(err(if wildcard {
                "a wildcard needs a suffix (*.example.com)"
            } else {
                "empty"
            }));
        }
        if name.contains('*') {
            return Err(err(
                "'*' may only stand alone as the first label (*.example.com)",
            ));
        }
        if name.len() > MAX_NAME {
            return Err(err("longer than 253 characters"));
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err(err("an empty label (two dots in a row)"));
            }
            if label.len() > MAX_LABEL {
                return Err(err("a label longer than 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(err(
                    "labels take letters, digits, '-' and '_' (write international names in their xn-- form)",
                ));
            }
        }
        Ok(Self { name, wildcard })
    }

    /// Whether `name` (canonical: lower-case, no final dot) matches.
    pub fn matches(&self, name: &str) -> bool {
        if !self.wildcard {
            return name == self.name;
        }
        name.len() > self.name.len() + 1
            && name.ends_with(&self.name)
            && name.as_bytes()[name.len() - self.name.len() - 1] == b'.'
    }

    /// Whether the pattern names one name only.
    pub fn is_exact(&self) -> bool {
        !self.wildcard
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

impl std::str::FromStr for NamePattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_match_only_themselves() {
        let p = NamePattern::parse("API.Partner.test.").unwrap();
        assert!(p.is_exact());
        assert_eq!(p.to_string(), "api.partner.test");
        assert!(p.matches("api.partner.test"));
        assert!(!p.matches("x.api.partner.test"));
        assert!(!p.matches("partner.test"));
    }

    #[test]
    fn wildcards_match_one_or_more_labels_before_the_suffix() {
        let p = NamePattern::parse("*.eu-central-1.amazonaws.com").unwrap();
        assert!(p.matches("s3.eu-central-1.amazonaws.com"));
        assert!(p.matches("mydb.abc123.eu-central-1.amazonaws.com"));
        assert!(!p.matches("eu-central-1.amazonaws.com"));
        assert!(!p.matches("xeu-central-1.amazonaws.com"));
        assert!(!p.matches("s3.eu-central-1.amazonaws.com.evil.test"));
    }

    #[test]
    fn bad_patterns_say_why() {
        for (bad, why) in [
            ("", "empty"),
            ("*.", "a wildcard needs a suffix"),
            ("a..b", "empty label"),
            ("*a.test", "'*' may only stand alone"),
            ("a.*.test", "'*' may only stand alone"),
            ("bad name.test", "labels take letters"),
            ("ü.test", "labels take letters"),
        ] {
            let e = NamePattern::parse(bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        let long = format!("{}.test", "a".repeat(64));
        assert!(NamePattern::parse(&long).is_err());
        let too_long = vec!["a"; 130].join(".");
        assert!(NamePattern::parse(&too_long).is_err());
    }
}
