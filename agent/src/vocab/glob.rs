//! Shell-style patterns: the one matcher behind cloud regions
//! (`aws:eu-*`), systemd units (`executor@*.service`) and the log filters
//! (`--job 'etl*'`).

/// Whether `text` matches `pattern`: `*` stands for any run of characters,
/// `?` for one character, anything else for itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with one backtrack point for the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("aws:eu-*", "aws:eu-west-1"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("executor@*.service", "executor@7.service"));
        assert!(!glob_match("executor@*.service", "executor@7.scope"));
        assert!(!glob_match("aws:eu-*", "aws:us-east-1"));
        assert!(glob_match("*-1", "aws:eu-west-1"));
        assert!(glob_match("etl*", "etl"));
        assert!(!glob_match("etl", "etl-7"));
    }
}
