//! The cgroups systemd makes for units: systemd names a unit's cgroup after
//! the unit (`…/system.slice/executor@7.service`), so a subtree is scanned
//! for cgroups whose names match a unit pattern (a policy's
//! `unit = "executor@*.service"`).
//!
//! For a template glob (`NAME@*.service`) the slice systemd puts every
//! instance in (`system-NAME.slice`) matches too: bound, an instance that
//! starts later is governed from its first instruction, by inheritance,
//! before the next scan names it.

use std::path::{Path, PathBuf};

use crate::vocab::glob::glob_match;

/// Deepest cgroup level below the governed one that is scanned.
const MAX_DEPTH: usize = 12;

/// Cgroups under `root` whose names match a unit pattern, with the index of
/// the first pattern they match, in path order. A matching cgroup's
/// children are not scanned (they inherit).
pub fn matching_cgroups(root: &Path, patterns: &[String]) -> Vec<(PathBuf, usize)> {
    let slices: Vec<Option<String>> = patterns.iter().map(|p| template_slice(p)).collect();
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if !is_dir {
                continue;
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let hit = patterns.iter().enumerate().find_map(|(i, p)| {
                let slice_hit = slices[i].as_deref() == Some(name.as_ref());
                (slice_hit || glob_match(p, &name)).then_some(i)
            });
            match hit {
                Some(i) => out.push((entry.path(), i)),
                None if depth + 1 < MAX_DEPTH => stack.push((entry.path(), depth + 1)),
                None => {}
            }
        }
    }
    out.sort();
    out
}

/// The slice systemd creates for the instances of a template unit:
/// `executor@*.service` → `system-executor.slice`.
pub fn template_slice(pattern: &str) -> Option<String> {
    let name = pattern.strip_suffix("@*.service")?;
    if name.is_empty() || name.contains(['*', '?', '@', '[']) {
        return None;
    }
    Some(format!("system-{}.slice", systemd_escape(name)))
}

/// systemd's unit-name escaping of one path element: `-` and other bytes
/// outside `[A-Za-z0-9:_.]` become `\xNN`.
fn systemd_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b':' || b == b'_' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_slices() {
        assert_eq!(
            template_slice("executor@*.service").as_deref(),
            Some("system-executor.slice")
        );
        assert_eq!(
            template_slice("my-exec@*.service").as_deref(),
            Some("system-my\\x2dexec.slice")
        );
        assert_eq!(template_slice("batch.service"), None);
        assert_eq!(template_slice("ex*@*.service"), None);
    }

    #[test]
    fn finds_matching_cgroups_and_stops_below_them() {
        let root = std::env::temp_dir().join(format!("gw-units-{}", std::process::id()));
        let mk = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();
        mk("system.slice/executor@1.service/inner");
        mk("system.slice/other.service");
        mk("system.slice/system-executor.slice/executor@2.service");
        mk("user.slice/batch.scope");
        let pats = vec!["executor@*.service".to_string(), "batch.scope".to_string()];
        let found: Vec<(String, usize)> = matching_cgroups(&root, &pats)
            .into_iter()
            .map(|(p, i)| (p.strip_prefix(&root).unwrap().display().to_string(), i))
            .collect();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            found,
            [
                ("system.slice/executor@1.service".to_string(), 0),
                ("system.slice/system-executor.slice".to_string(), 0),
                ("user.slice/batch.scope".to_string(), 1),
            ]
        );
    }
}
