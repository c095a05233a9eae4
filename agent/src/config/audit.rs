//! `[audit]`: rotation, masking, the `log_allowed = "first"` window, and
//! what to do when the log cannot be written.
//!
//! The keys, commented, are in `config/geowall.example.toml`. Every key
//! applies on reload too.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::vocab::units::{ByteSize, Span};

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
    /// While the log cannot be written (a full disk): go on (`continue`,
    /// the default) or refuse governed jobs' new connections (`deny`).
    pub on_write_failure: OnWriteFailure,
}

/// `[audit] on_write_failure`, like auditd's `disk_full_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnWriteFailure {
    /// Enforcement goes on; records are held in memory, then counted as
    /// lost, and the failure is declared in the log once it can be
    /// written. A full audit disk does not cut a host's traffic (auditd's
    /// default, `SUSPEND`, keeps the system running too).
    #[default]
    Continue,
    /// Fail closed: governed jobs' new connections are refused (`EPERM`,
    /// reason `audit`) until the log can be written again.
    Deny,
}

impl OnWriteFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnWriteFailure::Continue => "continue",
            OnWriteFailure::Deny => "deny",
        }
    }
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
            on_write_failure: OnWriteFailure::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(f.audit.on_write_failure, OnWriteFailure::Continue);
        let f: F = toml::from_str("[audit]\non_write_failure = \"deny\"\n").unwrap();
        assert_eq!(f.audit.on_write_failure, OnWriteFailure::Deny);
        let err = toml::from_str::<F>("[audit]\non_write_failure = \"halt\"\n")
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(
            text.contains("halt") && text.contains("continue") && text.contains("deny"),
            "{text}"
        );
        assert!(text.contains("line 2"), "{text}");
    }
}
