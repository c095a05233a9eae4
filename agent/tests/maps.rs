//! Region maps against real data: MaxMind's own expected answers, the
//! full-size embedded database checked address by address against the
//! `maxminddb` reader, and the minimized kernel table against the map.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use geowall::regions::{
    Family, Prefix, compile,
    compile::{LOCAL_RANGES, unit},
    ortc::{lpm, minimize},
    sources::{self, Kind, Spec},
};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(rel)
}

/// The address at left-aligned `bits`.
fn host(family: Family, bits: u128) -> IpAddr {
    Prefix::new(family, bits, family.width()).addr()
}

fn is_local(addr: IpAddr) -> bool {
    let host = Prefix::host(addr);
    LOCAL_RANGES
        .iter()
        .map(|r| r.parse::<Prefix>().unwrap())
        .any(|p| p.contains(&host))
}

/// A network of MaxMind's source data: `::81.2.69.142/127` is IPv4
/// 81.2.69.142/31; one entry has host bits set, so mask.
fn source_network(s: &str) -> Prefix {
    let (addr, len) = s.split_once('/').unwrap();
    let len: u8 = len.parse().unwrap();
    let ip: Ipv6Addr = match addr.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => return Prefix::v4(v4, len),
        IpAddr::V6(v6) => v6,
    };
    let bits = u128::from(ip);
    if bits >> 32 == 0 && len >= 96 {
        return Prefix::v4(Ipv4Addr::from(bits as u32), len - 96);
    }
    Prefix::new(Family::V6, bits, len)
}

fn expected_country(record: &serde_json::Value) -> Option<String> {
    record["country"]["iso_code"]
        .as_str()
        .or(record["registered_country"]["iso_code"].as_str())
        .map(str::to_owned)
}

#[test]
fn maxmind_test_databases_agree_with_maxminds_expected_answers() {
    for (db, answers) in [
        (
            "maxmind/GeoIP2-Country-Test.mmdb",
            "maxmind/source-data/GeoIP2-Country-Test.json",
        ),
        (
            "maxmind/GeoIP2-City-Test.mmdb",
            "maxmind/source-data/GeoIP2-City-Test.json",
        ),
        (
            "maxmind/GeoIP2-Country-Shield-Test.mmdb",
            "maxmind/source-data/GeoIP2-Country-Test.json",
        ),
    ] {
        let loaded = sources::load(&Spec::new(Kind::Mmdb, data(db)), u64::MAX).unwrap();
        let map = compile(std::slice::from_ref(&loaded)).unwrap();
        let json: Vec<HashMap<String, serde_json::Value>> =
            serde_json::from_slice(&std::fs::read(data(answers)).unwrap()).unwrap();
        let (mut v4, mut v6) = (0, 0);
        for entry in json {
            for (network, record) in entry {
                let net = source_network(&network);
                let want = expected_country(&record);
                for addr in [net.addr(), host(net.family(), net.last_bits())] {
                    let own: Vec<&str> = loaded
                        .lookup(addr)
                        .into_iter()
                        .flat_map(|hit| hit.tags)
                        .collect();
                    // A country database: one country at most.
                    assert!(own.len() <= 1, "{db}: {network} at {addr}: {own:?}");
                    assert_eq!(
                        own.first().map(|s| s.to_string()),
                        want,
                        "{db}: {network} at {addr}: the source answers {own:?}"
                    );
                    if !is_local(addr) {
                        let tags = &map.tagsets[map.lookup(addr).0 as usize];
                        assert_eq!(tags.first().cloned(), want, "{db}: {network} at {addr}");
                    }
                }
                match net.family() {
                    Family::V4 => v4 += 1,
                    Family::V6 => v6 += 1,
                }
            }
        }
        assert!(
            v4 > 10 && v6 > 10,
            "{db}: {v4} IPv4 and {v6} IPv6 networks checked"
        );
        eprintln!("{db}: {v4} IPv4 and {v6} IPv6 networks agree with MaxMind's answers");
    }
}

/// xorshift, deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn the_embedded_world_map_agrees_with_the_maxminddb_reader_and_its_minimized_tables() {
    let loaded = sources::load(&Spec::builtin(), u64::MAX).unwrap();
    assert!(
        loaded.v4.len() > 400_000 && loaded.v6.len() > 400_000,
        "{}",
        loaded.about
    );
    let map = compile(std::slice::from_ref(&loaded)).unwrap();
    let t4 = minimize(Family::V4, &map.v4);
    let t6 = minimize(Family::V6, &map.v6);
    // The minimized tables must fit the kernel budget: far fewer entries
    // than networks.
    assert!(
        t4.len() + t6.len() < (loaded.v4.len() + loaded.v6.len()) / 2,
        "{} + {} entries for {} + {} networks",
        t4.len(),
        t6.len(),
        loaded.v4.len(),
        loaded.v6.len()
    );
    let reader = maxminddb::Reader::from_source(sources::builtin::bytes().unwrap()).unwrap();
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let mut checked = 0;
    // Random addresses, and addresses at network edges, where an
    // off-by-one would show: the first and last address of networks of
    // both families and of the local ranges, and their neighbours outside.
    let sampled = [(Family::V4, &loaded.v4), (Family::V6, &loaded.v6)]
        .into_iter()
        .flat_map(|(f, nets)| {
            nets.iter()
                .step_by(997)
                .map(move |n| Prefix::new(f, n.bits, n.len))
        });
    let local = LOCAL_RANGES.iter().map(|r| r.parse::<Prefix>().unwrap());
    let edges: Vec<IpAddr> = sampled
        .chain(local)
        .flat_map(|p| {
            let (f, u) = (p.family(), unit(p.family()));
            [
                p.bits().checked_sub(u),
                Some(p.bits()),
                Some(p.last_bits()),
                p.last_bits().checked_add(u),
            ]
            .into_iter()
            .flatten()
            .map(move |bits| host(f, bits))
        })
        .collect();
    assert!(
        edges.iter().filter(|a| a.is_ipv6()).count() > 1000,
        "{} edges",
        edges.len()
    );
    let randoms = (0..20_000).flat_map(|_| {
        let v4 = IpAddr::V4(Ipv4Addr::from(rng.next() as u32));
        // IPv6: inside 2000::/3, where allocations are.
        let hi = (rng.next() & 0x1fff_ffff_ffff_ffff) | 0x2000_0000_0000_0000;
        let v6 = IpAddr::V6(Ipv6Addr::from(
            (u128::from(hi) << 64) | u128::from(rng.next()),
        ));
        [v4, v6]
    });
    let mut local_checked = 0;
    for addr in edges.into_iter().chain(randoms.collect::<Vec<_>>()) {
        // The minimized table answers like the map everywhere, local
        // addresses included: there `local` nests inside wider entries.
        let label = map.lookup(addr).0;
        let table = if addr.is_ipv4() { &t4 } else { &t6 };
        assert_eq!(lpm(table, addr), label, "{addr}: minimized table");
        if is_local(addr) {
            local_checked += 1;
            continue;
        }
        let want: Option<String> = reader
            .lookup(addr)
            .unwrap()
            .decode_path(&[maxminddb::PathElement::Key("country_code")])
            .unwrap();
        let got = map.tagsets[label as usize].first().cloned();
        assert_eq!(got, want, "{addr}");
        checked += 1;
    }
    assert!(local_checked > 1000, "{local_checked} local addresses");
    eprintln!(
        "{checked} addresses agree (and {local_checked} local ones with the minimized tables); {} + {} networks → {} + {} ranges → {} + {} kernel entries",
        loaded.v4.len(),
        loaded.v6.len(),
        map.v4.len(),
        map.v6.len(),
        t4.len(),
        t6.len()
    );
}
