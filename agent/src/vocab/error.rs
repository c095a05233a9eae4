//! An error with its causes, the way geowall prints every error: the
//! message, then each cause, `: `-separated
//! (`cannot read config /etc/geowall/geowall.toml: No such file or directory`).

use std::{error::Error, fmt};

/// Displays an error and its causes, `: `-separated. Every error of geowall
/// says what failed in its own words and leaves its cause to `source()`;
/// this is where the two meet.
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `err` and its causes as one line (see [`Chain`]).
pub fn chain(err: &(dyn Error + 'static)) -> String {
    Chain(err).to_string()
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {0}")]
    struct Reading(&'static str, #[source] io::Error);

    #[test]
    fn an_error_is_followed_by_its_causes() {
        let e = Reading("/etc/x", io::Error::other("no such file"));
        assert_eq!(chain(&e), "reading /etc/x: no such file");
    }
}
