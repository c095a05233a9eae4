//! Region maps against the real kernel: the embedded full-size country
//! database judging real public addresses (from a namespace with no route
//! out), map reloads under load, bad sources refused with the tables kept,
//! source files picked up when they change, and the map CLI.

use std::time::{Duration, Instant};

use geowall_tests::{
    AgentSpec, Listener, TempDir, TestCgroup, UsDe, connect_loop, geowall, outcomes,
};
use serde_json::Value;

const EU_ONLY: &str = "[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\n";

#[test]
fn the_embedded_world_map_judges_real_public_addresses() {
    let cg = TestCgroup::new("worldmap");
    // No [[maps]]: the built-in country database is the map.
    let agent = AgentSpec::new(&cg).config(EU_ONLY).start();

    // What the real database says (checked, not assumed).
    let answers = agent.cli_json(&[
        "map",
        "lookup",
        "--json",
        "8.8.8.8",
        "193.99.144.80",
        "2001:4860::8888",
        "2a02:2e0::1",
    ]);
    let tags: Vec<&str> = answers
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {answers}"))
        .iter()
        .map(|a| a["tags"][0].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["US", "DE", "US", "DE"]);
    assert_eq!(
        answers[0]["sources"][0]["source"],
        "builtin:geo-whois-asn-country.mmdb"
    );

    // Inside a fresh namespace with only lo: allowed → no route, denied →
    // EPERM. Nothing leaves the host.
    let out = agent.exec_probe(
        "eu-only",
        &[
            "--netns",
            "tcp:8.8.8.8:443",
            "tcp:193.99.144.80:443",
            "tcp:[2001:4860::8888]:443",
            "tcp:[2a02:2e0::1]:443",
            "udp:8.8.8.8:9053",
        ],
    );
    assert_eq!(
        outcomes(&out),
        ["EPERM", "ENETUNREACH", "EPERM", "ENETUNREACH", "EPERM"]
    );
    let rec = agent.wait_record("for 8.8.8.8", |r| {
        r["dst"] == "8.8.8.8" && r["hook"] == "connect4"
    });
    assert_eq!(rec["verdict"], "deny");
    assert_eq!(rec["tags"], serde_json::json!(["US"]));
    assert_eq!(rec["prefix"], answers[0]["prefix"]);
    let config = agent.wait_record("for the config record", |r| r["kind"] == "config");
    assert_eq!(
        config["sources"][0]["source"],
        "builtin:geo-whois-asn-country.mmdb"
    );
    assert_eq!(config["sources"][0]["sha256"].as_str().unwrap().len(), 64);
}

const MAP_A: &str = "127.20.0.0/16 US\n127.30.0.0/16 DE\n127.70.0.0/16 US\n127.50.0.0/16 FR\n";
const MAP_B: &str = "127.20.0.0/16 US\n127.30.0.0/16 DE\n127.70.0.0/16 DE\n127.60.0.0/16 JP\n";

/// Destinations tagged alike in both maps keep their verdict through every
/// switch; one that moves gets either map's verdict, nothing else.
#[test]
fn map_reloads_never_give_a_verdict_neither_map_gives() {
    let cg = TestCgroup::new("mapswap");
    let confined = cg.child("confined");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP_A)
        .config("[[policy]]\nname = \"eu-only\"\nallow = [\"EU\"]\ncgroups = [\"/confined\"]\n")
        .start();
    let map_file = agent.config.parent().unwrap().join("test.cidr");
    let t = UsDe::new();
    let moving = Listener::on("127.70.0.1");
    let loop_ms = 4000u64;
    let p_us = connect_loop(&confined, &t.us.target(), loop_ms);
    let p_de = connect_loop(&confined, &t.de.target(), loop_ms);
    let p_moving = connect_loop(&confined, &moving.target(), loop_ms);
    let deadline = Instant::now() + Duration::from_millis(loop_ms - 500);
    let mut loads = 0;
    while Instant::now() < deadline {
        std::fs::write(&map_file, if loads % 2 == 0 { MAP_B } else { MAP_A }).unwrap();
        let out = agent.cli(&["map", "load"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        loads += 1;
    }
    let (c_us, c_de, c_moving) = (
        p_us.join().unwrap(),
        p_de.join().unwrap(),
        p_moving.join().unwrap(),
    );
    assert!(loads >= 5, "only {loads} map loads");
    assert_eq!(c_us.keys().collect::<Vec<_>>(), ["EPERM"], "US: {c_us:?}");
    assert_eq!(c_de.keys().collect::<Vec<_>>(), ["ok"], "DE: {c_de:?}");
    // 127.70/16 moves US ↔ DE with every load: both verdicts show that the
    // loads took effect under the loop, and nothing else may show.
    assert_eq!(
        c_moving.keys().collect::<Vec<_>>(),
        ["EPERM", "ok"],
        "moving: {c_moving:?}"
    );
    eprintln!("{loads} map loads; US {c_us:?}; DE {c_de:?}; moving {c_moving:?}");
}

#[test]
fn a_broken_source_is_refused_and_the_tables_in_force_stay() {
    let cg = TestCgroup::new("badmap");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP_A)
        .config(EU_ONLY)
        .start();
    let dir = agent.config.parent().unwrap().to_path_buf();
    let t = UsDe::new();
    t.assert_eu(&agent, "eu-only");
    let epoch = agent.epoch();

    let cases: [(&str, &[u8], &str); 4] = [
        (
            "test.cidr",
            b"127.20.0.0/16 US\n127.30.1.0/16 DE\n",
            "test.cidr:2: '127.30.1.0/16' has host bits",
        ),
        ("test.cidr", b"", "has no network at all"),
        (
            "test.cidr",
            b"<html>\n<head><title>502 Bad Gateway</title></head>\n</html>\n",
            "test.cidr:1: expected 'CIDR TAG'",
        ),
        (
            "test.cidr",
            b"127.20.0.0/16 US\n127.20.0.0/16 DE\n",
            "tagged with two countries",
        ),
    ];
    for (file, content, want) in cases {
        std::fs::write(dir.join(file), content).unwrap();
        let out = agent.cli(&["map", "load"]);
        assert!(!out.status.success(), "{want}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "want {want}, got {err}");
        assert!(err.contains("the tables in force stay in force"), "{err}");
        assert_eq!(
            agent.epoch(),
            epoch,
            "{want}: the refused load switched tables"
        );
        t.assert_eu(&agent, "eu-only");
    }

    // A truncated MaxMind DB, then one that is not a country database.
    let mmdb = |name: &str| geowall_tests::workspace_data(&format!("maxmind/{name}"));
    let good = std::fs::read(mmdb("GeoIP2-Country-Test.mmdb")).unwrap();
    std::fs::write(dir.join("test.cidr"), MAP_A).unwrap();
    std::fs::write(dir.join("geo.mmdb"), &good[..good.len() / 3]).unwrap();
    agent.rewrite_config(|t| format!("{t}\n[[maps]]\nkind = \"mmdb\"\npath = \"geo.mmdb\"\n"));
    let out = agent.cli(&["map", "load"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("geo.mmdb: not a readable MaxMind DB"),
        "{err}"
    );
    assert_eq!(
        agent.epoch(),
        epoch,
        "the truncated database switched tables"
    );
    std::fs::copy(mmdb("GeoLite2-ASN-Test.mmdb"), dir.join("geo.mmdb")).unwrap();
    let out = agent.cli(&["map", "load"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no record carries a country code"),
        "{err}"
    );
    assert_eq!(agent.epoch(), epoch, "the ASN database switched tables");
    t.assert_eu(&agent, "eu-only");

    // A good database is taken: the tables switch and the agent answers
    // from it.
    std::fs::write(dir.join("geo.mmdb"), &good).unwrap();
    let out = agent.cli(&["map", "load"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(agent.epoch() > epoch, "the good load did not switch tables");
    let answer = agent.cli_json(&["map", "lookup", "--json", "81.2.69.160"]);
    assert!(
        answer[0]["sources"]
            .as_array()
            .is_some_and(|sources| sources
                .iter()
                .any(|s| s["source"].as_str().is_some_and(|s| s.starts_with("mmdb:")))),
        "no mmdb source answers for 81.2.69.160: {answer}"
    );
    t.assert_eu(&agent, "eu-only");
}

#[test]
fn a_changed_source_file_is_picked_up_on_its_own() {
    let cg = TestCgroup::new("watch");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP_A)
        .config(EU_ONLY)
        .start();
    let us = Listener::on("127.20.0.1");
    let t = format!("tcp:{}", us.target());
    assert_eq!(outcomes(&agent.exec_probe("eu-only", &[&t])), ["EPERM"]);
    // Write the new version aside and rename it in, as a downloader would.
    let dir = agent.config.parent().unwrap();
    std::fs::write(
        dir.join("test.cidr.new"),
        MAP_A.replace("127.20.0.0/16 US", "127.20.0.0/16 DE"),
    )
    .unwrap();
    std::fs::rename(dir.join("test.cidr.new"), dir.join("test.cidr")).unwrap();
    let rec = agent.wait_record_for("the reload", Duration::from_secs(15), |r| {
        r["kind"] == "config" && r["event"] == "map source changed"
    });
    assert!(
        rec["by"]["changed"][0]
            .as_str()
            .unwrap()
            .ends_with("test.cidr")
    );
    assert_eq!(outcomes(&agent.exec_probe("eu-only", &[&t])), ["ok"]);
}

#[test]
fn map_lookup_stats_and_diff_from_the_command_line() {
    let cg = TestCgroup::new("mapcli");
    let agent = AgentSpec::new(&cg)
        .cidr_map("test.cidr", MAP_A)
        .config(EU_ONLY)
        .start();
    let dir = TempDir::new("mapcli");
    let a = dir.path().join("a.cidr");
    let b = dir.path().join("b.cidr");
    std::fs::write(&a, MAP_A).unwrap();
    std::fs::write(&b, MAP_B).unwrap();

    // From the running agent's tables.
    let v = agent.cli_json(&[
        "map",
        "lookup",
        "--json",
        "127.20.0.9",
        "::ffff:127.30.0.1",
        "127.99.0.1",
        "192.0.2.1",
    ]);
    assert_eq!(v.as_array().map(Vec::len), Some(4), "{v}");
    assert_eq!(v[0]["addr"], "127.20.0.9");
    assert_eq!(v[0]["prefix"], "127.20.0.0/16");
    assert_eq!(v[0]["tags"], serde_json::json!(["US"]));
    assert_eq!(v[0]["sources"][0]["prefix"], "127.20.0.0/16");
    assert!(
        v[0]["sources"][0]["source"]
            .as_str()
            .unwrap()
            .starts_with("cidr:")
    );
    assert_eq!(v[1]["addr"], "127.30.0.1");
    assert_eq!(v[1]["tags"], serde_json::json!(["DE"]));
    assert_eq!(v[2]["tags"], serde_json::json!(["local"]));
    assert_eq!(v[3]["tags"], serde_json::json!([]));
    assert!(v[3]["prefix"].is_null());

    // Straight from sources, no agent involved.
    let run = |args: &[&str]| {
        std::process::Command::new(geowall())
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "map",
        "lookup",
        "--source",
        &format!("cidr:{}", b.display()),
        "127.70.1.1",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("127.70.1.1  DE  127.70.0.0/16"), "{text}");
    let out = run(&[
        "map",
        "lookup",
        "--source",
        "mmdb:/nonexistent.mmdb",
        "1.1.1.1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.mmdb"));

    // Stats from the agent carry kernel figures.
    let s = agent.cli_json(&["map", "stats", "--json"]);
    assert!(s["kernel_bytes"].as_u64().unwrap() > 0);
    assert!(s["install_ms"].is_u64());
    assert_eq!(s["regions"]["US"]["ipv4_addresses"], 2 * 65536);
    let kernel_entries = s["ipv4"]["kernel_entries"]
        .as_u64()
        .unwrap_or_else(|| panic!("no ipv4.kernel_entries in {s}"));
    let aggregated = s["ipv4"]["aggregated_prefixes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no ipv4.aggregated_prefixes in {s}"));
    assert!(kernel_entries <= aggregated, "{s}");

    // What moves between the two maps.
    let out = run(&[
        "map",
        "diff",
        &format!("cidr:{}", a.display()),
        &format!("cidr:{}", b.display()),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    let moved: Vec<(String, String, String)> = d["moved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["prefix"].as_str().unwrap().to_owned(),
                m["old"].to_string(),
                m["new"].to_string(),
            )
        })
        .collect();
    assert!(
        moved.contains(&("127.70.0.0/16".into(), "[\"US\"]".into(), "[\"DE\"]".into())),
        "{moved:?}"
    );
    assert!(
        moved.contains(&(
            "127.50.0.0/16".into(),
            "[\"FR\"]".into(),
            "[\"local\"]".into()
        )),
        "{moved:?}"
    );
    let out = run(&[
        "map",
        "diff",
        &format!("cidr:{}", a.display()),
        &format!("cidr:{}", a.display()),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("no address changes region"));

    // Export: everything outside the EU (local ranges excluded), one CIDR
    // a line; or what is inside.
    let source = format!("cidr:{}", a.display());
    let out = run(&[
        "map",
        "export",
        "--source",
        &source,
        "--outside",
        "EU",
        "--family",
        "4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "127.20.0.0/16\n127.70.0.0/16\n"
    );
    let out = run(&["map", "export", "--source", &source, "--inside", "EU"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "127.30.0.0/16\n127.50.0.0/16\n"
    );
}
