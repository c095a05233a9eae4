//! `geowall completions SHELL` and `geowall manpage`: shell completions and
//! man pages generated from the CLI's own definitions (clap_complete,
//! clap_mangen), so they can never disagree with what the binary accepts.
//! `geowall install` and the .deb install the same bytes.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::args::{Cli, Shell};

/// clap_complete's name for `shell`.
fn generator(shell: Shell) -> clap_complete::Shell {
    match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    }
}

/// The completion script for `shell`.
pub(super) fn completion(shell: Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(generator(shell), &mut cmd, "geowall", &mut out);
    out
}

/// One man page: its file name (`geowall-map-lookup.1`) and its roff text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ManPage {
    pub file_name: String,
    pub text: Vec<u8>,
}

/// `geowall.1` and one page per (visible) subcommand, nested ones included
/// (`geowall-map-lookup.1`). No date in them: the same binary always renders
/// the same bytes, so a repeated install changes nothing.
pub(super) fn man_pages() -> Vec<ManPage> {
    fn walk(cmd: &clap::Command, out: &mut Vec<ManPage>) {
        let man = clap_mangen::Man::new(cmd.clone()).manual("geowall manual");
        let mut text = Vec::new();
        man.render(&mut text)
            .expect("rendering into memory cannot fail");
        out.push(ManPage {
            file_name: man.get_filename(),
            text,
        });
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, out);
        }
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Building names every subcommand after its parents (`geowall-map`).
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, &mut out);
    out
}

pub(super) fn completions(shell: Shell) -> Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&completion(shell))
        .and_then(|()| stdout.flush())
        .context("writing the completion script")?;
    Ok(ExitCode::SUCCESS)
}

/// `geowall manpage`: the top page on standard output, or every page into
/// `--dir`.
pub(super) fn manpage(dir: Option<&Path>) -> Result<ExitCode> {
    let pages = man_pages();
    let Some(dir) = dir else {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&pages[0].text)
            .and_then(|()| stdout.flush())
            .context("writing the man page")?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for page in &pages {
        let path: PathBuf = dir.join(&page.file_name);
        std::fs::write(&path, &page.text)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_the_subcommands() {
        for shell in Shell::ALL {
            let text = String::from_utf8(completion(shell)).unwrap();
            for word in ["geowall", "exec", "status", "install", "uninstall"] {
                assert!(text.contains(word), "{shell:?} script lacks {word}");
            }
        }
    }

    #[test]
    fn a_man_page_per_visible_subcommand_and_no_date() {
        let pages = man_pages();
        let names: Vec<&str> = pages.iter().map(|p| p.file_name.as_str()).collect();
        assert_eq!(names[0], "geowall.1");
        for name in ["geowall-run.1", "geowall-install.1", "geowall-map-lookup.1"] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.starts_with("geowall-help")));
        let top = String::from_utf8(pages[0].text.clone()).unwrap();
        assert!(top.starts_with(".ie \\n(.g .ds Aq"), "roff: {top:.60}");
        assert!(top.contains(".TH geowall 1  \"geowall "), "{top:.300}");
        // Rendering twice gives the same bytes (idempotent installs).
        assert_eq!(pages, man_pages());
    }
}
