//! Cloud providers' published IP ranges: AWS `ip-ranges.json`, Google Cloud
//! `cloud.json`, Azure `ServiceTags_Public.json`. Each prefix is tagged
//! `<provider>:<region>`; an empty or global region gives
//! `<provider>:GLOBAL`. The same prefix listed for several services (AWS
//! lists one per service) counts once per region.

use serde::Deserialize;

use super::{Builder, Kind, Loaded, SourceError, Spec};
use crate::regions::{Family, Prefix, TagKind, kind};

#[derive(Deserialize)]
struct Aws {
    #[serde(rename = "syncToken")]
    sync_token: String,
    #[serde(rename = "createDate")]
    create_date: String,
    prefixes: Vec<AwsV4>,
    ipv6_prefixes: Vec<AwsV6>,
}

#[derive(Deserialize)]
struct AwsV4 {
    ip_prefix: String,
    region: String,
}

#[derive(Deserialize)]
struct AwsV6 {
    ipv6_prefix: String,
    region: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Gcp {
    sync_token: String,
    creation_time: String,
    prefixes: Vec<GcpEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GcpEntry {
    ipv4_prefix: Option<String>,
    ipv6_prefix: Option<String>,
    scope: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Azure {
    change_number: u64,
    cloud: String,
    values: Vec<AzureValue>,
}

#[derive(Deserialize)]
struct AzureValue {
    name: String,
    properties: AzureProperties,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AzureProperties {
    region: String,
    address_prefixes: Vec<String>,
}

/// A provider's region name that is no cloud region tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("region '{0}' is not a region name")]
struct BadRegion(String);

/// Azure's tag for prefixes of no region.
const GLOBAL: &str = "azure:GLOBAL";

/// `<provider>:<region>`, with `<provider>:GLOBAL` for an empty or global
/// region.
fn tag(provider: &str, region: &str) -> Result<String, BadRegion> {
    let region = region.trim();
    let t = if region.is_empty() || region.eq_ignore_ascii_case("global") {
        format!("{provider}:GLOBAL")
    } else {
        format!("{provider}:{}", region.to_ascii_lowercase())
    };
    match kind(&t) {
        Some(TagKind::Cloud { .. }) => Ok(t),
        _ => Err(BadRegion(region.to_owned())),
    }
}

/// Azure lists a prefix under its region (`AzureCloud.uksouth`) and parts
/// of it again under services without a region (`AzureFrontDoor.Frontend`,
/// region ""). Within a source the most specific network answers, so such a
/// part would say only `azure:GLOBAL` and lose the region its address is
/// in. A regional listing is never refined away: every network listed
/// (`listed`: prefix, tag id, whether the tag names a region) gets the
/// region of each regional listing that contains it, as extra (prefix, tag)
/// pairs (duplicates are dropped by the builder). Where two regions list
/// the same address, it keeps both.
fn regions_around(listed: &[(Prefix, u16, bool)]) -> Vec<(Prefix, u16)> {
    use std::collections::{HashMap, HashSet};
    let mut regional: HashMap<Prefix, Vec<u16>> = HashMap::new();
    let mut lengths: [HashSet<u8>; 2] = Default::default();
    let slot = |f: Family| usize::from(f == Family::V6);
    for &(p, id, is_regional) in listed {
        if is_regional {
            regional.entry(p).or_default().push(id);
            lengths[slot(p.family())].insert(p.len());
        }
    }
    // The lengths regional listings use, longest first: a network looks
    // for its containing listings only there.
    let lengths: [Vec<u8>; 2] = lengths.map(|l| {
        let mut v: Vec<u8> = l.into_iter().collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v
    });
    let mut out = Vec::new();
    for &(p, _, _) in listed {
        for &len in &lengths[slot(p.family())] {
            if len >= p.len() {
                // The same length is the same network: its own listings
                // already carry the tags.
                continue;
            }
            let around = Prefix::new(p.family(), p.bits(), len);
            if let Some(ids) = regional.get(&around) {
                out.extend(ids.iter().map(|&id| (p, id)));
            }
        }
    }
    out
}

/// Which provider's file a JSON document looks like, for a helpful error.
fn looks_like(v: &serde_json::Value) -> Option<&'static str> {
    let has = |k: &str| v.get(k).is_some();
    if has("createDate") && has("ipv6_prefixes") {
        Some("an AWS ip-ranges.json (kind = \"aws\")")
    } else if has("creationTime") && has("prefixes") {
        Some("a Google Cloud cloud.json (kind = \"gcp\")")
    } else if has("changeNumber") && has("values") {
        Some("an Azure ServiceTags file (kind = \"azure\")")
    } else {
        None
    }
}

fn what(k: Kind) -> &'static str {
    match k {
        Kind::Aws => "an AWS ip-ranges.json",
        Kind::Gcp => "a Google Cloud cloud.json",
        _ => "an Azure ServiceTags file",
    }
}

/// serde_json's message without the position it appends (the position goes
/// where every located error puts it).
fn bare(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let at = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&at).map(str::to_owned).unwrap_or(text)
}

/// Deserializes the document straight from the bytes (so that errors keep
/// their line and column). Only when that fails is the file parsed again,
/// untyped: a file that is not JSON at all is told so, and one that is
/// another provider's file is named.
fn document<T: serde::de::DeserializeOwned>(bytes: &[u8], spec: &Spec) -> Result<T, SourceError> {
    let located = |e: &serde_json::Error, message: String| {
        SourceError::parse(&spec.path, format!("{}:{}", e.line(), e.column()), message)
    };
    let not_json = |e: &serde_json::Error| located(e, format!("not JSON: {}", bare(e)));
    serde_json::from_slice(bytes).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            return not_json(&e);
        }
        let value = match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(v) => v,
            Err(syntax) => return not_json(&syntax),
        };
        let hint = looks_like(&value)
            .filter(|w| !w.starts_with(what(spec.kind)))
            .map(|w| format!("; it looks like {w}"))
            .unwrap_or_default();
        located(&e, format!("not {}: {}{hint}", what(spec.kind), bare(&e)))
    })
}

pub fn parse(bytes: &[u8], spec: &Spec, sha256: String) -> Result<Loaded, SourceError> {
    let path = &spec.path;
    let mut b = Builder::default();
    let add = |b: &mut Builder, at: String, prefix: &str, t: Result<String, BadRegion>| {
        b.records += 1;
        let p: Prefix = prefix
            .trim()
            .parse()
            .map_err(|e| SourceError::parse(path, &at, format!("{e}")))?;
        let t = t.map_err(|e| SourceError::parse(path, &at, e))?;
        b.add(p, &t).map_err(|e| SourceError::parse(path, &at, e))
    };
    let about = match spec.kind {
        Kind::Aws => {
            let doc: Aws = document(bytes, spec)?;
            for (i, e) in doc.prefixes.iter().enumerate() {
                add(
                    &mut b,
                    format!("prefixes[{i}].ip_prefix"),
                    &e.ip_prefix,
                    tag("aws", &e.region),
                )?;
            }
            for (i, e) in doc.ipv6_prefixes.iter().enumerate() {
                add(
                    &mut b,
                    format!("ipv6_prefixes[{i}].ipv6_prefix"),
                    &e.ipv6_prefix,
                    tag("aws", &e.region),
                )?;
            }
            format!(
                "AWS ip-ranges.json, syncToken {}, created {}",
                doc.sync_token, doc.create_date
            )
        }
        Kind::Gcp => {
            let doc: Gcp = document(bytes, spec)?;
            for (i, e) in doc.prefixes.iter().enumerate() {
                let (field, p) = match (&e.ipv4_prefix, &e.ipv6_prefix) {
                    (Some(p), None) => ("ipv4Prefix", p),
                    (None, Some(p)) => ("ipv6Prefix", p),
                    _ => {
                        return Err(SourceError::parse(
                            path,
                            format!("prefixes[{i}]"),
                            "expected exactly one of ipv4Prefix and ipv6Prefix",
                        ));
                    }
                };
                add(
                    &mut b,
                    format!("prefixes[{i}].{field}"),
                    p,
                    tag("gcp", &e.scope),
                )?;
            }
            format!(
                "Google Cloud cloud.json, syncToken {}, created {}",
                doc.sync_token, doc.creation_time
            )
        }
        _ => {
            let doc: Azure = document(bytes, spec)?;
            let mut listed: Vec<(Prefix, u16, bool)> = Vec::new();
            for (i, v) in doc.values.iter().enumerate() {
                let t = tag("azure", &v.properties.region);
                for (j, p) in v.properties.address_prefixes.iter().enumerate() {
                    let at = format!("values[{i}] ({}).addressPrefixes[{j}]", v.name);
                    add(&mut b, at.clone(), p, t.clone())?;
                    if let (Ok(prefix), Ok(t)) = (p.trim().parse::<Prefix>(), &t) {
                        let id = b.intern(t).map_err(|e| SourceError::parse(path, &at, e))?;
                        listed.push((prefix, id, t != GLOBAL));
                    }
                }
            }
            for (prefix, id) in regions_around(&listed) {
                b.push(prefix, id);
            }
            format!(
                "Azure service tags, cloud {}, changeNumber {}",
                doc.cloud, doc.change_number
            )
        }
    };
    b.finish(spec, sha256, about)
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, path::Path};

    use super::*;

    fn load(kind: Kind, json: &str) -> Result<Loaded, SourceError> {
        parse(json.as_bytes(), &Spec::new(kind, "f.json"), String::new())
    }

    #[test]
    fn reads_each_providers_format() {
        let aws = load(
            Kind::Aws,
            r#"{"syncToken":"1","createDate":"2025-07-24-20-23-14","prefixes":[
                {"ip_prefix":"3.4.12.4/32","region":"eu-west-1","service":"AMAZON","network_border_group":"eu-west-1"},
                {"ip_prefix":"3.4.12.4/32","region":"eu-west-1","service":"EC2","network_border_group":"eu-west-1"},
                {"ip_prefix":"52.94.0.0/16","region":"GLOBAL","service":"AMAZON","network_border_group":"GLOBAL"}],
              "ipv6_prefixes":[{"ipv6_prefix":"2600:1f69:7400::/40","region":"mx-central-1","service":"AMAZON","network_border_group":"mx-central-1"}]}"#,
        )
        .unwrap();
        assert_eq!((aws.v4.len(), aws.v6.len(), aws.records), (2, 1, 4));
        assert_eq!(
            aws.lookup("3.4.12.4".parse().unwrap())[0].tags,
            ["aws:eu-west-1"]
        );
        assert_eq!(
            aws.lookup("52.94.1.1".parse().unwrap())[0].tags,
            ["aws:GLOBAL"]
        );
        assert!(aws.about.contains("createDate") || aws.about.contains("created 2025-07-24"));

        let gcp = load(
            Kind::Gcp,
            r#"{"syncToken":"2","creationTime":"2025-07-24T10:00:00","prefixes":[
                {"ipv4Prefix":"34.1.208.0/20","service":"Google Cloud","scope":"africa-south1"},
                {"ipv6Prefix":"2600:1900:8000::/44","service":"Google Cloud","scope":"global"}]}"#,
        )
        .unwrap();
        assert_eq!(
            gcp.lookup("34.1.208.1".parse().unwrap())[0].tags,
            ["gcp:africa-south1"]
        );
        assert_eq!(
            gcp.lookup("2600:1900:8000::1".parse().unwrap())[0].tags,
            ["gcp:GLOBAL"]
        );

        let azure = load(
            Kind::Azure,
            r#"{"changeNumber":300,"cloud":"Public","values":[
                {"name":"ActionGroup","id":"ActionGroup","properties":{"changeNumber":1,"region":"","regionId":0,"platform":"Azure","systemService":"ActionGroup","addressPrefixes":["4.145.74.52/30","2603:1000:4:402::178/125"]}},
                {"name":"AzureCloud.westeurope","id":"AzureCloud.westeurope","properties":{"changeNumber":9,"region":"westeurope","regionId":18,"platform":"Azure","systemService":"","addressPrefixes":["13.69.0.0/17"]}}]}"#,
        )
        .unwrap();
        assert_eq!(
            azure.lookup("4.145.74.53".parse().unwrap())[0].tags,
            ["azure:GLOBAL"]
        );
        assert_eq!(
            azure.lookup("13.69.1.1".parse().unwrap())[0].tags,
            ["azure:westeurope"]
        );
        assert_eq!(azure.v6.len(), 1);
    }

    #[test]
    fn the_wrong_providers_file_is_named() {
        let gcp = r#"{"syncToken":"2","creationTime":"x","prefixes":[{"ipv4Prefix":"34.1.208.0/20","scope":"a"}]}"#;
        let err = load(Kind::Aws, gcp).unwrap_err().to_string();
        assert!(
            err.starts_with("f.json:1:90: not an AWS ip-ranges.json: missing field `ip_prefix`"),
            "{err}"
        );
        assert!(
            err.contains("it looks like a Google Cloud cloud.json"),
            "{err}"
        );
        let err = load(Kind::Azure, "[1, 2").unwrap_err().to_string();
        assert!(err.starts_with("f.json:1:"), "{err}");
        assert!(err.contains("not JSON"), "{err}");
        // The file itself is right: no hint.
        let err = load(Kind::Gcp, &gcp.replace("\"scope\":\"a\"", "\"scope\":1"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a Google Cloud cloud.json: invalid type"),
            "{err}"
        );
        assert!(!err.contains("looks like"), "{err}");
    }

    #[test]
    fn a_malformed_entry_is_named_by_line_and_column() {
        let err = load(
            Kind::Aws,
            "{\"syncToken\":\"1\",\"createDate\":\"d\",\n\
             \"prefixes\":[{\"ip_prefix\":\"3.4.12.4/32\",\"region\":\"eu-west-1\"},\n\
             {\"ip_prefix\":3,\"region\":\"eu-west-1\"}],\n\
             \"ipv6_prefixes\":[]}",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "f.json:3:14: not an AWS ip-ranges.json: invalid type: integer `3`, expected a string"
        );
        let err = load(
            Kind::Azure,
            "{\"changeNumber\":1,\n\"cloud\":\"Public\",\n\"values\":[{}]}",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("f.json:3:"), "{err}");
        assert!(err.contains("missing field `name`"), "{err}");
    }

    #[test]
    fn bad_entries_are_located() {
        let err = load(
            Kind::Aws,
            r#"{"syncToken":"1","createDate":"d","prefixes":[{"ip_prefix":"3.4.12.5/31","region":"eu-west-1"}],"ipv6_prefixes":[]}"#,
        )
        .unwrap_err().to_string();
        assert!(
            err.starts_with("f.json:prefixes[0].ip_prefix: '3.4.12.5/31' has host bits"),
            "{err}"
        );
        let err = load(
            Kind::Gcp,
            r#"{"syncToken":"1","creationTime":"d","prefixes":[{"scope":"x"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("exactly one of ipv4Prefix and ipv6Prefix"),
            "{err}"
        );
        let err = load(
            Kind::Gcp,
            r#"{"syncToken":"1","creationTime":"d","prefixes":[]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("has no network at all"), "{err}");
    }

    /// Counts per region straight from the JSON, the way the provider
    /// publishes them: distinct prefixes per region (for Azure, with the
    /// networks inside a region's listings: see [`regions_around`]).
    fn file_counts(kind: Kind, v: &serde_json::Value) -> HashMap<String, usize> {
        let mut sets: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
        let mut put = |region: &str, prefix: &str| {
            sets.entry(tag(provider(kind), region).unwrap())
                .or_default()
                .insert(prefix.to_owned());
        };
        match kind {
            Kind::Aws => {
                for e in v["prefixes"].as_array().unwrap() {
                    put(
                        e["region"].as_str().unwrap(),
                        e["ip_prefix"].as_str().unwrap(),
                    );
                }
                for e in v["ipv6_prefixes"].as_array().unwrap() {
                    put(
                        e["region"].as_str().unwrap(),
                        e["ipv6_prefix"].as_str().unwrap(),
                    );
                }
            }
            Kind::Gcp => {
                for e in v["prefixes"].as_array().unwrap() {
                    let p = e.get("ipv4Prefix").or(e.get("ipv6Prefix")).unwrap();
                    put(e["scope"].as_str().unwrap(), p.as_str().unwrap());
                }
            }
            _ => {
                // Each prefix listed counts for its own region and for the
                // region of every regional listing around it.
                let mut listed: Vec<(Prefix, String)> = Vec::new();
                for val in v["values"].as_array().unwrap() {
                    let region = val["properties"]["region"].as_str().unwrap();
                    for p in val["properties"]["addressPrefixes"].as_array().unwrap() {
                        put(region, p.as_str().unwrap());
                        listed.push((p.as_str().unwrap().parse().unwrap(), region.to_owned()));
                    }
                }
                let regional: HashMap<Prefix, Vec<&str>> = listed
                    .iter()
                    .filter(|(_, r)| !r.is_empty())
                    .fold(HashMap::new(), |mut m, (p, r)| {
                        m.entry(*p).or_default().push(r.as_str());
                        m
                    });
                for (p, _) in &listed {
                    for len in 0..p.len() {
                        let around = Prefix::new(p.family(), p.bits(), len);
                        for r in regional.get(&around).into_iter().flatten() {
                            put(r, &p.to_string());
                        }
                    }
                }
            }
        }
        sets.into_iter().map(|(k, v)| (k, v.len())).collect()
    }

    fn provider(kind: Kind) -> &'static str {
        match kind {
            Kind::Aws => "aws",
            Kind::Gcp => "gcp",
            _ => "azure",
        }
    }

    /// The regional listings of an Azure file, as (prefix, tag), straight
    /// from the JSON.
    fn azure_regional(v: &serde_json::Value) -> Vec<(Prefix, String)> {
        let mut out = Vec::new();
        for val in v["values"].as_array().unwrap() {
            let t = tag("azure", val["properties"]["region"].as_str().unwrap()).unwrap();
            if t == "azure:GLOBAL" {
                continue;
            }
            for p in val["properties"]["addressPrefixes"].as_array().unwrap() {
                out.push((p.as_str().unwrap().parse().unwrap(), t.clone()));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The regional listings (of `regional`) with an address that the map
    /// compiled from `loaded` alone does not tag with the listing's region:
    /// every range of the map inside the prefix is checked.
    fn losing_their_region(loaded: &Loaded, regional: &[(Prefix, String)]) -> Vec<String> {
        let map = crate::regions::compile::compile(std::slice::from_ref(loaded)).unwrap();
        let mut lost = Vec::new();
        for (p, t) in regional {
            let fam = map.family(p.family());
            let mut i = fam.index_of(p.bits());
            loop {
                let tags = &map.tagsets[fam.labels[i] as usize];
                if !tags.contains(t) {
                    let at = if fam.starts[i] <= p.bits() {
                        " first"
                    } else {
                        ""
                    };
                    lost.push(format!("{p} {t}{at} : {tags:?}"));
                    break;
                }
                let end = fam.end_of(i, p.family());
                if end >= p.last_bits() {
                    break;
                }
                i += 1;
            }
        }
        lost
    }

    #[test]
    fn an_azure_regional_listing_keeps_its_region_under_a_narrower_global_one() {
        const FILE: &str = r#"{"changeNumber":1,"cloud":"Public","values":[
                {"name":"AzureCloud.uksouth","id":"x","properties":{"region":"uksouth","addressPrefixes":["172.187.64.0/18","2603:1020:700::/40"]}},
                {"name":"AzureCloud.ukwest","id":"x","properties":{"region":"ukwest","addressPrefixes":["51.0.0.0/16","172.187.64.0/18"]}},
                {"name":"AzureFrontDoor.Frontend","id":"x","properties":{"region":"","addressPrefixes":["172.187.65.0/24","2603:1020:700:1::/64","4.0.0.0/8"]}},
                {"name":"Storage.UKSouth","id":"x","properties":{"region":"uksouth","addressPrefixes":["172.187.66.0/24"]}},
                {"name":"AzureCloud","id":"x","properties":{"region":"","addressPrefixes":["172.187.0.0/16"]}}]}"#;
        let azure = load(Kind::Azure, FILE).unwrap();
        let tags = |addr: &str| {
            let hits = azure.hits(addr);
            assert_eq!(hits.len(), 1, "{addr}: {hits:?}");
            let (prefix, mut tags) = hits.into_iter().next().unwrap();
            tags.sort();
            format!("{prefix} {}", tags.join(" "))
        };
        // The narrower global listing adds its tag; both regions stay.
        assert_eq!(
            tags("172.187.65.1"),
            "172.187.65.0/24 azure:GLOBAL azure:uksouth azure:ukwest"
        );
        assert_eq!(
            tags("2603:1020:700:1::5"),
            "2603:1020:700:1::/64 azure:GLOBAL azure:uksouth"
        );
        // A regional listing inside a regional one: the same region once.
        assert_eq!(
            tags("172.187.66.1"),
            "172.187.66.0/24 azure:uksouth azure:ukwest"
        );
        // Where no region lists an address, global it stays; the wider
        // global listing does not spread over the regional ones.
        assert_eq!(tags("4.1.2.3"), "4.0.0.0/8 azure:GLOBAL");
        assert_eq!(tags("172.187.1.1"), "172.187.0.0/16 azure:GLOBAL");
        assert_eq!(
            tags("172.187.64.1"),
            "172.187.64.0/18 azure:uksouth azure:ukwest"
        );
        let json: serde_json::Value = serde_json::from_str(FILE).unwrap();
        assert!(losing_their_region(&azure, &azure_regional(&json)).is_empty());
    }

    #[test]
    fn the_real_azure_file_keeps_every_regional_listings_region() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/cloud/azure-ServiceTags_Public.2024-06-25.json");
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!(
                "NOTE: {} is absent: the real Azure file was not checked",
                path.display()
            );
            return;
        };
        let loaded = parse(&bytes, &Spec::new(Kind::Azure, &path), String::new()).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let regional = azure_regional(&json);
        let lost = losing_their_region(&loaded, &regional);
        let at_first = lost.iter().filter(|l| l.contains(" first ")).count();
        eprintln!(
            "azure: {} of {} regional listings lose their region in part \
             ({at_first} at their first address)",
            lost.len(),
            regional.len()
        );
        assert!(regional.len() > 30_000, "{}", regional.len());
        assert!(
            lost.is_empty(),
            "{} lose their region, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
    }

    #[test]
    fn the_real_provider_files_load_with_their_own_counts() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cloud");
        let files = [
            (Kind::Aws, "aws-ip-ranges.2025-07-24.json"),
            (Kind::Gcp, "gcp-cloud.2025-07-24.json"),
            (Kind::Azure, "azure-ServiceTags_Public.2024-06-25.json"),
        ];
        for (kind, name) in files {
            let path = dir.join(name);
            let Ok(bytes) = std::fs::read(&path) else {
                eprintln!(
                    "NOTE: {} is absent: the real {kind} file was not checked",
                    path.display()
                );
                continue;
            };
            let loaded = parse(&bytes, &Spec::new(kind, &path), String::new())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let want = file_counts(kind, &json);
            let got: HashMap<String, usize> = loaded
                .tag_counts()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            assert_eq!(got, want, "{name}");
            assert!(want.len() > 30, "{name}: {} regions", want.len());
        }
    }
}
