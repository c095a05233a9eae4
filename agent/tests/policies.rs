//! The shipped policies and the policy language's errors, through the same
//! path the agent takes: config file → policy_dir → plan (map compiled).

use std::path::{Path, PathBuf};

use geowall::{config::Config, host::cgroup::Hierarchy, plan};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A config in a fresh folder: `[agent] policy_dir` → `policies`, the
/// built-in map and the repo's AWS fixture, plus `extra`.
fn config_with(policies: &Path, extra: &str) -> (PathBuf, Config) {
    let (dir, config) = try_config_with(policies, extra);
    (dir, config.unwrap_or_else(|e| panic!("{e}")))
}

fn try_config_with(
    policies: &Path,
    extra: &str,
) -> (PathBuf, Result<Config, geowall::config::ConfigError>) {
    let dir = std::env::temp_dir().join(format!(
        "geowall-policies-{}-{}",
        std::process::id(),
        policies.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("geowall.toml");
    let text = format!(
        "[agent]\npolicy_dir = \"{}\"\n\n[[maps]]\nkind = \"builtin\"\n\n[[maps]]\nkind = \"aws\"\npath = \"{}\"\n{extra}",
        policies.display(),
        repo("tests/data/cloud/aws-fixture.json").display()
    );
    std::fs::write(&path, text).unwrap();
    (dir, Config::load(&path))
}

#[test]
fn every_shipped_policy_parses_and_compiles() {
    let (dir, config) = config_with(&repo("policies"), "");
    let hierarchy = Hierarchy::discover().unwrap();
    let plan = plan::build(&config, &hierarchy).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_dir_all(dir).unwrap();
    let names: Vec<&str> = plan.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "audit-everything",
            "aws-eu-regions",
            "eea-plus-ch",
            "eu-only",
            "us-only"
        ]
    );
    let eu = plan.policy("eu-only").unwrap();
    assert_eq!(eu.allowed.len(), 27);
    let eea = plan.policy("eea-plus-ch").unwrap();
    assert!(eea.allowed.contains("CH") && eea.allowed.contains("NO"));
    let aws = plan.policy("aws-eu-regions").unwrap();
    assert!(aws.allowed.iter().all(|t| t.starts_with("aws:eu-")));
    assert!(aws.allowed.contains("aws:eu-central-1"));
    assert!(!aws.effective_allowed().any(|t| t == "aws:eu-west-2"));
    assert!(!aws.allows(&["GB".into(), "aws:eu-west-2".into()]));
    assert!(aws.allows(&["DE".into(), "aws:eu-central-1".into()]));
    assert!(!aws.allows(&["DE".into()]), "cloud regions only");
    for p in &plan.policies {
        assert!(p.description.is_some(), "{} says what it is for", p.name);
    }
}

/// Writes one policy file named `name.toml` with `body` and returns the
/// error the config gives.
fn error_of(name: &str, body: &str, extra: &str) -> String {
    let dir = std::env::temp_dir().join(format!("geowall-bad-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.toml")), body).unwrap();
    let (cdir, config) = try_config_with(&dir, extra);
    let result: Result<(), String> = config.map_err(|e| e.to_string()).and_then(|config| {
        let hierarchy = Hierarchy::discover().unwrap();
        plan::build(&config, &hierarchy)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    std::fs::remove_dir_all(cdir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    match result {
        Ok(()) => panic!("{name}: no error"),
        Err(full) => {
            // Paths differ per run: keep what follows the file name.
            full.split_once(&format!("{name}.toml"))
                .map(|(_, rest)| rest.to_owned())
                .unwrap_or(full)
        }
    }
}

#[test]
fn policy_errors_say_what_and_where() {
    let cases = [
        (
            "unknown-region",
            "allow = [\"EU\", \"Germny\"]\n",
            ":1:16: policy 'unknown-region': unknown region 'Germny' (did you mean 'DE', Germany?)",
        ),
        (
            "typo-key",
            "allow = [\"EU\"]\nlog_alowed = \"all\"\n",
            ":2:1: unknown field `log_alowed`, expected one of",
        ),
        (
            "typo-key",
            "allow = [\"EU\"]\nlog_alowed = \"all\"\n",
            "(did you mean `log_allowed`?)",
        ),
        (
            "empty-allow",
            "mode = \"audit\"\nallow = []\n",
            ":2:9: policy 'empty-allow': allows no region",
        ),
        (
            "no-allow",
            "mode = \"audit\"\n",
            ": policy 'no-allow': allows no region",
        ),
        (
            "carved-empty",
            "allow = [\"DE\"]\ndeny = [\"DE\"]\n",
            ":1:9: policy 'carved-empty': `deny` removes every allowed region",
        ),
        (
            "cloud-typo",
            "allow = [\"aws:eu-centrl-1\"]\n",
            ":1:10: policy 'cloud-typo': unknown region 'aws:eu-centrl-1': no loaded map source \
             tags it (did you mean 'aws:eu-central-1'?)",
        ),
        (
            "glob-none",
            "allow = [\"aws:mars-*\"]\n",
            "'aws:mars-*' matches no cloud region the loaded map sources tag",
        ),
        (
            "bad-rule",
            "allow = [\"EU\"]\nrules = [\"10.0.0.0/8 tcp/5432 permit\"]\n",
            ":2:10: policy 'bad-rule': rule '10.0.0.0/8 tcp/5432 permit': 'permit' is not allow or deny",
        ),
        (
            "bad-unit",
            "allow = [\"EU\"]\nunit = \"executor@*\"\n",
            "unit 'executor@*': expected a systemd unit name or glob ending in .service",
        ),
        (
            "unknown-group",
            "allow = [\"nordic\"]\n",
            "unknown region 'nordic' (did you mean 'nordics'",
        ),
    ];
    let groups = "\n[groups]\nnordics = [\"DK\", \"FI\", \"IS\", \"NO\", \"SE\"]\n";
    for (name, body, want) in cases {
        let got = error_of(name, body, groups);
        assert!(got.contains(want), "{name}:\nwant: {want}\ngot:  {got}");
    }
}

#[test]
fn user_groups_resolve_and_bad_ones_are_located() {
    let dir = std::env::temp_dir().join(format!("geowall-groups-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("nordic.toml"),
        "allow = [\"nordics\", \"aws:eu-north-*\"]\n",
    )
    .unwrap();
    let (cdir, config) = config_with(
        &dir,
        "\n[groups]\nnordics = [\"DK\", \"FI\", \"IS\", \"NO\", \"SE\"]\n",
    );
    let plan = plan::build(&config, &Hierarchy::discover().unwrap()).unwrap();
    let p = plan.policy("nordic").unwrap();
    let allowed: Vec<&str> = p.allowed.iter().map(String::as_str).collect();
    assert_eq!(allowed, ["DK", "FI", "IS", "NO", "SE", "aws:eu-north-1"]);
    std::fs::remove_dir_all(cdir).unwrap();
    let err = error_of("g", "allow = [\"EU\"]\n", "\n[groups]\nEU = [\"DE\"]\n");
    assert!(
        err.contains("group 'EU': a built-in group has this name"),
        "{err}"
    );
    let err = error_of("g", "allow = [\"EU\"]\n", "\n[groups]\nbad = [\"XX\"]\n");
    assert!(err.contains("group 'bad': unknown region 'XX'"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
