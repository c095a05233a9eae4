//! The Kubernetes deployment (`deploy/kubernetes/`): the Kustomize base
//! renders, every resource validates against the Kubernetes schemas of the
//! oldest and newest versions checked (kubernetes-validate, strict: unknown
//! fields are errors), and the agent accepts the config it ships.

use std::{path::PathBuf, process::Command};

use geowall_tests::{TempDir, geowall};

/// Kubernetes versions the manifests are validated against.
const VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn render() -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(base())
        .output()
        .expect("kubectl (its built-in kustomize renders the base) is needed");
    assert!(
        out.status.success(),
        "kubectl kustomize failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_kustomize_base_renders_and_validates_against_the_kubernetes_schemas() {
    let yaml = render();
    let dir = TempDir::new("k8s");
    let file = dir.path().join("geowall.yaml");
    std::fs::write(&file, &yaml).unwrap();
    for version in VERSIONS {
        let out = Command::new("python3")
            .args([
                "-m",
                "kubernetes_validate",
                "--strict",
                "--quiet",
                "-k",
                version,
            ])
            .arg(&file)
            .output()
            .expect("python3 is needed");
        assert!(
            out.status.success(),
            "kubernetes-validate {version} (`cargo xtask test` installs it):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for want in [
        "kind: Namespace",
        "pod-security.kubernetes.io/enforce: privileged",
        "kind: ServiceAccount",
        "kind: ConfigMap",
        "geowall.toml: |",
        "kind: DaemonSet",
        "namespace: geowall-system",
        "image: geowall:0.1.0",
        "hostPID: true",
        "privileged: true",
        "automountServiceAccountToken: false",
        "mountPropagation: Bidirectional",
        "path: /sys/fs/bpf",
        "path: /sys/fs/cgroup",
        "path: /var/log/geowall",
        "startupProbe:",
        "readinessProbe:",
        "livenessProbe:",
        "geowall status --json --config /etc/geowall/geowall.toml | grep -q '\"agent\":\"running\"'",
    ] {
        assert!(yaml.contains(want), "{want} missing from:\n{yaml}");
    }
    assert!(!yaml.contains("kind: ClusterRole"), "the agent uses no API");
}

#[test]
fn the_daemonsets_config_is_audit_only_and_the_agent_accepts_it() {
    let config = base().join("geowall.toml");
    let out = Command::new(geowall())
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("policy eu-only (Audit)"), "{stdout}");
    let parsed = geowall::config::Config::load(&config).unwrap();
    assert!(!parsed.file.agent.allow_host_enforce);
    for p in &parsed.policies {
        assert_eq!(p.body.mode, geowall::config::Mode::Audit, "{}", p.name);
        assert!(p.body.cgroups.is_empty(), "no static binding in the base");
    }
}
