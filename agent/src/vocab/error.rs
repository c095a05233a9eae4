//! An error with its causes, the way geowall prints every error: the
//! message, then each cause, `: `-separated
//! (`cannot read config /etc/geowall/geowall.toml: No such file or directory`).

use std::{error::Error, fmt};

/// Displays an error and its causes, `: `-separated (each cause only when
/// its text is not already part of the message).
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = self.0.to_string();
        let mut source = self.0.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = s.source();
        }
        f.write_str(&out)
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
