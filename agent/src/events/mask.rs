//! Masking secrets in command lines before they reach the audit log.
//!
//! Built in (`[audit] mask_defaults = true`):
//! - `NAME=VALUE` anywhere in an argument (`--password=…`, `TOKEN=…`,
//!   `?token=…&`, `user=x password=y`) when NAME looks like a credential;
//! - `--NAME VALUE` (the value is the next argument) for such names;
//! - `-u`/`--user USER:PASSWORD`;
//! - URLs with a password (`scheme://user:***@host`);
//! - `Bearer …`, and header-style `Authorization: …`, `X-Api-Key: …`;
//! - JSON-style `"password": "…"`.
//!
//! A name looks like a credential when it contains one of [`CONTAINS`], or
//! one of its words (split at `-`, `_`, `.` and lower-to-upper case changes)
//! is one of [`WORDS`], or it contains one of `[audit] mask_names`.
//! `[audit] mask` adds regular expressions matched against the recorded
//! command line (arguments joined by spaces): each capture group that takes
//! part in a match, or the whole match when the pattern has no group,
//! becomes `***`.

use regex_lite::Regex;

use crate::config::AuditConfig;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Names that contain one of these (lower case, separators removed) are
/// credentials.
pub const CONTAINS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "credential",
    "privatekey",
    "accesskey",
    "authorization",
];

/// Names with one of these as a word are credentials.
pub const WORDS: &[&str] = &[
    "key",
    "pass",
    "pwd",
    "pw",
    "auth",
    "cookie",
    "session",
    "sig",
    "signature",
    "otp",
];

/// Last words that make a credential-like flag name about something else
/// (`--password-file PATH`, `--password-stdin`).
const NOT_A_VALUE: &[&str] = &[
    "file", "path", "stdin", "env", "dir", "length", "len", "type", "mode", "prompt",
];

/// A bad `[audit] mask` pattern: its index and the parser's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub index: usize,
    pub message: String,
}

/// The masking rules in force.
#[derive(Debug, Clone)]
pub struct Masker {
    defaults: bool,
    /// `[audit] mask_names`, normalized.
    names: Vec<String>,
    builtin: Vec<(Regex, &'static str)>,
    user: Vec<Regex>,
}

/// Lower case, alphanumerics only.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Words of a name: split at non-alphanumerics and lower→upper changes.
fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl Masker {
    /// The rules of `[audit]`; an error names the bad pattern.
    pub fn new(cfg: &AuditConfig) -> Result<Masker, PatternError> {
        let user = cfg
            .mask
            .iter()
            .enumerate()
            .map(|(index, p)| {
                Regex::new(p.get_ref()).map_err(|e| PatternError {
                    index,
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let builtin = if cfg.mask_defaults {
            [
                // scheme://user:password@host
                (r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@]*:)[^@/\s]+@", "${1}***@"),
                // Bearer tokens, wherever they stand.
                (r#"(?i)\b(bearer\s+)[^\s"',;]+"#, "${1}***"),
                // Header-style "Authorization: Basic …", "X-Api-Key: …".
                (
                    r"(?i)^(\s*[a-z0-9-]*(?:authorization|token|api-?key|secret|password|cookie)[a-z0-9-]*\s*:\s*(?:(?:bearer|basic|token|digest|negotiate)\s+)?)\S.*$",
                    "${1}***",
                ),
                // JSON-style "password": "…".
                (
                    r#"(?i)("[^"]*(?:password|passwd|secret|token|api_?key|credential)[^"]*"\s*:\s*")[^"]*(")"#,
                    "${1}***${2}",
                ),
            ]
            .into_iter()
            .map(|(p, r)| (Regex::new(p).expect("built-in pattern"), r))
            .collect()
        } else {
            Vec::new()
        };
        Ok(Masker {
            defaults: cfg.mask_defaults,
            names: cfg
                .mask_names
                .iter()
                .map(|n| normalize(n))
                .filter(|n| !n.is_empty())
                .collect(),
            builtin,
            user,
        })
    }

    /// Whether an argument or key named `name` holds a credential.
    pub fn is_secret_name(&self, name: &str) -> bool {
        let flat = normalize(name);
        if flat.is_empty() {
            return false;
        }
        if self.names.iter().any(|n| flat.contains(n.as_str())) {
            return true;
        }
        self.defaults
            && (CONTAINS.iter().any(|c| flat.contains(c))
                || words(name).iter().any(|w| WORDS.contains(&w.as_str())))
    }

    /// `NAME=VALUE` pairs inside `arg` whose name is a credential: the
    /// values masked.
    fn mask_pairs(&self, arg: &str) -> String {
        const SEP: &[char] = &['&', ';', ',', ' ', '\t', '"', '\'', '?', '#'];
        let mut out = String::with_capacity(arg.len());
        let mut rest = arg;
        while let Some(eq) = rest.find('=') {
            let before = &rest[..eq];
            let name_start = before
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
                .map_or(0, |i| i + 1);
            let name = before[name_start..].trim_start_matches('-');
            let after = &rest[eq + 1..];
            let value_len = after.find(SEP).unwrap_or(after.len());
            out.push_str(&rest[..=eq]);
            if value_len > 0 && self.is_secret_name(name) {
                out.push_str(MASK);
            } else {
                out.push_str(&after[..value_len]);
            }
            rest = &after[value_len..];
        }
        out.push_str(rest);
        out
    }

    /// The name of a flag argument (`--password`, `-token`) that takes its
    /// value from the next argument and holds a credential.
    fn secret_flag(&self, arg: &str) -> bool {
        let Some(name) = arg.strip_prefix('-') else {
            return false;
        };
        let name = name.trim_start_matches('-');
        if name.is_empty()
            || name.contains('=')
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return false;
        }
        let last = words(name).pop().unwrap_or_default();
        !NOT_A_VALUE.contains(&last.as_str()) && self.is_secret_name(name)
    }

    /// Masks the arguments of a command line in place.
    pub fn mask_args(&self, args: &mut [String]) {
        let mut i = 0;
        while i < args.len() {
            let mut arg = self.mask_pairs(&args[i]);
            for (re, with) in &self.builtin {
                if re.is_match(&arg) {
                    arg = re.replace_all(&arg, *with).into_owned();
                }
            }
            let flag = args[i].as_str();
            let user_flag = self.defaults && matches!(flag, "-u" | "--user");
            let secret_flag = self.secret_flag(flag);
            args[i] = arg;
            if let Some(next) = args.get_mut(i + 1)
                && !next.starts_with("--")
            {
                if secret_flag && !next.is_empty() {
                    *next = MASK.into();
                    i += 1;
                } else if user_flag && let Some((user, _)) = next.split_once(':') {
                    *next = format!("{user}:{MASK}");
                    i += 1;
                }
            }
            i += 1;
        }
    }

    /// The recorded form of a command line: arguments masked, joined by
    /// spaces (quoted where a shell would need it), `[audit] mask` applied.
    pub fn command_line(&self, mut args: Vec<String>) -> String {
        self.mask_args(&mut args);
        let mut line = args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ");
        for re in &self.user {
            line = mask_matches(re, &line);
        }
        line
    }
}

/// `text` with every match of `re` masked: its participating groups, or the
/// whole match when it has none.
fn mask_matches(re: &Regex, text: &str) -> String {
    let mut spans = Vec::new();
    for caps in re.captures_iter(text) {
        if caps.len() > 1 {
            spans.extend(caps.iter().skip(1).flatten().map(|m| m.range()));
        } else if let Some(m) = caps.get(0) {
            spans.push(m.range());
        }
    }
    if spans.is_empty() {
        return text.to_owned();
    }
    spans.sort_by_key(|r| r.start);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for r in spans {
        if r.start < at || r.is_empty() {
            continue;
        }
        out.push_str(&text[at..r.start]);
        out.push_str(MASK);
        at = r.end;
    }
    out.push_str(&text[at..]);
    out
}

/// An argument as a shell would need it written (single quotes where
/// needed); `*` is left bare so that masked values read as `***`.
pub fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '_' | '@' | '%' | '+' | '=' | ':' | ',' | '.' | '/' | '-' | '*'
                )
        });
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker() -> Masker {
        Masker::new(&AuditConfig::default()).unwrap()
    }

    fn line(args: &[&str]) -> String {
        masker().command_line(args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn the_default_set_masks_credentials_in_every_usual_form() {
        let cases: &[(&[&str], &str)] = &[
            (&["job", "--password=hunter2"], "job --password=***"),
            (&["job", "TOKEN=abc", "x"], "job TOKEN=*** x"),
            (
                &["env", "AWS_SECRET_ACCESS_KEY=wJalr/K7", "aws"],
                "env AWS_SECRET_ACCESS_KEY=*** aws",
            ),
            (
                &["db", "--password", "hunter2", "-v"],
                "db --password *** -v",
            ),
            (&["tool", "--api-key", "k1"], "tool --api-key *** "),
            (&["tool", "-apiKey=k2"], "tool -apiKey=***"),
            (&["tool", "--db-pass=x1"], "tool --db-pass=***"),
            (
                &["tool", "--client-secret", "s3"],
                "tool --client-secret ***",
            ),
            (
                &["curl", "-H", "Authorization: Bearer eyJhbGciOi.abc"],
                "curl -H 'Authorization: Bearer ***'",
            ),
            (
                &["curl", "-H", "X-Api-Key: abc123"],
                "curl -H 'X-Api-Key: ***'",
            ),
            (
                &["tool", "--header=bearer abc.def"],
                "tool '--header=bearer ***'",
            ),
            (
                &["curl", "-u", "alice:s3cret", "https://h/"],
                "curl -u alice:*** https://h/",
            ),
            (
                &["git", "clone", "https://alice:s3cret@git.example/r.git"],
                "git clone https://alice:***@git.example/r.git",
            ),
            (
                &["psql", "postgres://app:pw123@db:5432/x?sslmode=require"],
                "psql 'postgres://app:***@db:5432/x?sslmode=require'",
            ),
            (
                &["curl", "https://api.example/v1?token=abc&limit=5"],
                "curl 'https://api.example/v1?token=***&limit=5'",
            ),
            (
                &["app", "host=db user=app password=pw1"],
                "app 'host=db user=app password=***'",
            ),
            (
                &["curl", "-d", r#"{"user":"a","password":"pw2"}"#],
                r#"curl -d '{"user":"a","password":"***"}'"#,
            ),
            (&["ssh", "-i", "/home/a/.ssh/id"], "ssh -i /home/a/.ssh/id"),
        ];
        for (args, want) in cases {
            assert_eq!(line(args).trim_end(), want.trim_end(), "{args:?}");
        }
    }

    #[test]
    fn ordinary_arguments_stay() {
        for args in [
            &["python3", "train.py", "--epochs=3", "--lr", "0.1"][..],
            &["netprobe", "tcp:127.0.0.1:80"],
            &["docker", "login", "--password-stdin", "registry.example"],
            &["tar", "-czf", "out.tgz", "--keyboard=us"],
            &["sort", "-k", "2"],
        ] {
            let want: Vec<String> = args.iter().map(|a| quote(a)).collect();
            assert_eq!(line(args), want.join(" "), "{args:?}");
        }
    }

    #[test]
    fn words_split_at_separators_and_case() {
        assert_eq!(
            words("AWS_SECRET_ACCESS_KEY"),
            ["aws", "secret", "access", "key"]
        );
        assert_eq!(words("apiKey"), ["api", "key"]);
        assert_eq!(words("--db.pass"), ["db", "pass"]);
        let m = masker();
        assert!(m.is_secret_name("GITHUB_TOKEN"));
        assert!(m.is_secret_name("sessionId"));
        assert!(!m.is_secret_name("monkey"));
        assert!(!m.is_secret_name("passenger"));
        assert!(!m.is_secret_name("author"));
    }

    #[test]
    fn configured_names_and_patterns_add_to_the_defaults_or_replace_them() {
        let cfg = AuditConfig {
            mask_names: vec!["pin".into()],
            mask: vec![toml::Spanned::new(0..0, r"--dsn (\S+)".into())],
            ..AuditConfig::default()
        };
        let m = Masker::new(&cfg).unwrap();
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            m.command_line(args(&[
                "app",
                "--pin=1234",
                "--dsn",
                "x://y",
                "--password=p"
            ])),
            "app --pin=*** --dsn *** --password=***"
        );
        let only = AuditConfig {
            mask_defaults: false,
            mask: vec![toml::Spanned::new(0..0, "hunter[0-9]".into())],
            ..AuditConfig::default()
        };
        let m = Masker::new(&only).unwrap();
        assert_eq!(
            m.command_line(args(&["app", "--password=x", "hunter2"])),
            "app --password=x ***"
        );
        let bad = AuditConfig {
            mask: vec![
                toml::Spanned::new(0..0, "ok".into()),
                toml::Spanned::new(0..0, "(".into()),
            ],
            ..AuditConfig::default()
        };
        assert_eq!(Masker::new(&bad).unwrap_err().index, 1);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("--x=***"), "--x=***");
    }
}
