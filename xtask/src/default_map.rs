//! `cargo xtask update-default-map [--version V]`: refreshes the country
//! database embedded in the agent from the npm registry.
//!
//! 1. resolve the package version and the registry's integrity string
//!    (`npm view`);
//! 2. fetch the tarball (`npm pack`) and check it against that integrity;
//! 3. extract the database and the NRO licence notice;
//! 4. compress the database (`zstd -19`) into `agent/data/` and pin its
//!    version, integrity and SHA-256 in `agent/data/default-map.toml`,
//!    which the agent checks every time it reads the database.
//!
//! Needs `npm`, `tar` and `zstd` on PATH and network access to the npm
//! registry. Review the diff, run `cargo xtask test`, then commit.

use std::{fs, path::Path, process::Command};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256, Sha512};

use crate::cmd;

const PACKAGE: &str = "@ip-location-db/geo-whois-asn-country-mmdb";
const FILE: &str = "geo-whois-asn-country.mmdb";
const LICENCE: &str = "CC0-1.0 packaging; data CC-BY-4.0, Number Resource Organization (NRO)";
const ATTRIBUTION: &str = "IP to country data from the regional internet registries via the NRO (nro.net), CC BY 4.0; packaged by sapics/ip-location-db";

fn need(tool: &str) -> Result<()> {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        bail!("`{tool}` is needed on PATH to update the default map");
    }
    Ok(())
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn run(version: Option<&str>) -> Result<()> {
    for tool in ["npm", "tar", "zstd"] {
        need(tool)?;
    }
    let wanted = format!("{PACKAGE}@{}", version.unwrap_or("latest"));
    let view = cmd::output(Command::new("npm").args([
        "view",
        &wanted,
        "version",
        "dist.integrity",
        "--json",
    ]))?;
    let view: serde_json::Value =
        serde_json::from_str(&view).with_context(|| format!("npm view answered: {view}"))?;
    let version = view["version"]
        .as_str()
        .context("npm view gave no version")?
        .to_owned();
    let integrity = view["dist.integrity"]
        .as_str()
        .context("npm view gave no integrity")?
        .to_owned();
    eprintln!("update-default-map: {PACKAGE}@{version} ({integrity})");

    let work = cmd::target_dir().join("default-map-update");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let packed = cmd::output(
        Command::new("npm")
            .args([
                "pack",
                &format!("{PACKAGE}@{version}"),
                "--json",
                "--pack-destination",
            ])
            .arg(&work),
    )?;
    let packed: serde_json::Value =
        serde_json::from_str(&packed).with_context(|| format!("npm pack answered: {packed}"))?;
    let tarball = work.join(
        packed[0]["filename"]
            .as_str()
            .context("npm pack named no file")?,
    );
    let bytes = fs::read(&tarball).with_context(|| format!("reading {}", tarball.display()))?;
    let got = format!("sha512-{}", base64(&Sha512::digest(&bytes)));
    if got != integrity {
        bail!(
            "{} does not match the registry's integrity: {got} != {integrity}",
            tarball.display()
        );
    }
    cmd::run(
        Command::new("tar")
            .arg("-xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(&work)
            .args([format!("package/{FILE}"), "package/NRO_LICENSE".into()]),
    )?;
    let db = work.join("package").join(FILE);
    let data = fs::read(&db)?;
    let marker = b"\xab\xcd\xefMaxMind.com";
    if data.len() < (1 << 20) || !data.windows(marker.len()).any(|w| w == marker) {
        bail!("{} is not a full-size MaxMind DB", db.display());
    }
    let sha256 = hex(&Sha256::digest(&data));

    let out_dir = cmd::workspace_root().join("agent/data");
    fs::create_dir_all(&out_dir)?;
    cmd::run(
        Command::new("zstd")
            .args(["-19", "-q", "-f"])
            .arg(&db)
            .arg("-o")
            .arg(out_dir.join(format!("{FILE}.zst"))),
    )?;
    fs::copy(
        work.join("package/NRO_LICENSE"),
        out_dir.join("NRO_LICENSE"),
    )?;
    let today = cmd::output(Command::new("date").args(["-u", "+%F"]))?;
    write_pin(
        &out_dir.join("default-map.toml"),
        &version,
        &integrity,
        &sha256,
        today.trim(),
    )?;
    let _ = fs::remove_dir_all(&work);
    eprintln!(
        "update-default-map: agent/data/{FILE}.zst and default-map.toml now pin {PACKAGE}@{version} \
         (sha256 {sha256}); run `cargo xtask test`, review `git diff`, commit"
    );
    Ok(())
}

fn write_pin(path: &Path, version: &str, integrity: &str, sha256: &str, today: &str) -> Result<()> {
    let text = format!(
        "# The country database embedded in geowall (agent/data/{FILE}.zst).\n\
         # Written by `cargo xtask update-default-map`; the agent checks the\n\
         # database against `sha256` every time it reads it.\n\
         package = \"{PACKAGE}\"\n\
         version = \"{version}\"\n\
         file = \"{FILE}\"\n\
         sha256 = \"{sha256}\"\n\
         integrity = \"{integrity}\"\n\
         updated = \"{today}\"\n\
         licence = \"{LICENCE}\"\n\
         attribution = \"{ATTRIBUTION}\"\n"
    );
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
