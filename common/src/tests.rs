//! The decision functions the kernel programs and `geowall policy explain`
//! share, the verdict cache's hash and tag, version packing, and the
//! layouts the agent and the programs both read.

use core::mem::{offset_of, size_of};

use super::*;

fn rule(action: u8, proto: u8, ports: (u16, u16), plen: u8, index: u8) -> Rule {
    Rule {
        port_lo: ports.0,
        port_hi: ports.1,
        proto,
        action,
        plen,
        index,
    }
}

fn rule_set(rules: &[Rule]) -> RuleSet {
    let mut set = RuleSet::default();
    for (i, r) in rules.iter().enumerate() {
        set.rules[i] = *r;
    }
    set.count = rules.len() as u8;
    set
}

#[test]
fn the_first_rule_matching_protocol_and_port_decides() {
    let set = rule_set(&[
        rule(action::ALLOW, 6, (5432, 5432), 24, 0),
        rule(action::DENY, 0, (0, u16::MAX), 16, 1),
    ]);
    let d = set.decide(6, 5432).unwrap();
    assert!(d.allowed);
    assert_eq!(
        (d.reason, d.plen, d.tagset),
        (reason::RULE, 24, TAGSET_UNTAGGED)
    );
    // Another port or protocol falls through to the wider deny.
    let d = set.decide(6, 5433).unwrap();
    assert!(!d.allowed);
    assert_eq!(d.plen, 16);
    assert!(!set.decide(17, 5432).unwrap().allowed);
}

#[test]
fn no_matching_rule_leaves_the_decision_to_the_region() {
    let set = rule_set(&[rule(action::ALLOW, 17, (8000, 8099), 24, 0)]);
    assert!(set.decide(6, 8050).is_none());
    assert!(set.decide(17, 7999).is_none());
    assert!(set.decide(17, 8100).is_none());
    assert!(set.decide(17, 8099).is_some());
    // Rules past `count` are not rules.
    let mut set = set;
    set.rules[1] = rule(action::DENY, 0, (0, u16::MAX), 8, 1);
    assert!(set.decide(6, 1).is_none());
}

#[test]
fn region_decisions_follow_the_allow_bitmap() {
    let mut policy = PolicyEntry::empty();
    policy.set_allowed(5);
    policy.set_allowed(MAX_TAGSETS as u16 - 1);
    assert!(policy.allows(5));
    assert!(!policy.allows(6));
    assert!(policy.allows(MAX_TAGSETS as u16 - 1));
    // Out of range: never allowed, never a panic.
    policy.set_allowed(u16::MAX);
    assert!(!policy.allows(u16::MAX));

    let tagged = RegionValue {
        tagset: 5,
        plen: 21,
        flags: 0,
    };
    let d = policy.region_decision(Some(tagged));
    assert_eq!(d, Decision::new(true, reason::REGION, 21, 5));
    let local = RegionValue {
        tagset: 6,
        plen: 8,
        flags: tag_flags::LOCAL,
    };
    let d = policy.region_decision(Some(local));
    assert!(!d.allowed);
    assert_eq!(d.reason, reason::LOCAL);
}

#[test]
fn untagged_destinations_carry_the_policys_own_setting() {
    let mut policy = PolicyEntry::empty();
    let hole = RegionValue {
        tagset: TAGSET_UNTAGGED,
        plen: 24,
        flags: 0,
    };
    for found in [None, Some(hole)] {
        let d = policy.region_decision(found);
        assert_eq!((d.allowed, d.reason, d.plen), (false, reason::UNTAGGED, 0));
    }
    policy.set_allowed(TAGSET_UNTAGGED);
    assert!(policy.region_decision(None).allowed);
    assert!(policy.region_decision(Some(hole)).allowed);
}

#[test]
fn grants_allow_their_port_until_they_expire() {
    let mut g = Grant {
        id: 7,
        port: 443,
        plen: 32,
        ..Grant::default()
    };
    g.set_expires_ns(0x1_0000_0005);
    assert_eq!(g.expires_ns(), 0x1_0000_0005);
    assert!(g.allows(443, 0x1_0000_0004));
    assert!(!g.allows(443, 0x1_0000_0005), "expiry is exclusive");
    assert!(!g.allows(80, 0));
    g.port = 0;
    assert!(g.allows(80, 0), "port 0 is any port");
    g.id = 0;
    assert!(!g.allows(80, 0), "id 0 is an empty slot");

    let mut set = GrantSet::default();
    let mut late = g;
    late.id = 9;
    late.port = 22;
    set.grants[2] = late;
    assert_eq!(set.find(22, 1).map(|g| g.id), Some(9));
    assert!(set.find(23, 1).is_none());
}

#[test]
fn versions_pack_and_unpack() {
    for (text, parts) in [
        ("0.1.0", [0, 1, 0]),
        ("1.2.3", [1, 2, 3]),
        ("10.20.30-rc.1", [10, 20, 30]),
        ("4.5.6+build.7", [4, 5, 6]),
        ("7", [7, 0, 0]),
        ("", [0, 0, 0]),
    ] {
        assert_eq!(version_parts(pack_version(text)), parts, "{text}");
    }
    // Minor and patch keep 16 bits; the order of packed versions is the
    // order of releases.
    assert!(pack_version("1.10.0") > pack_version("1.9.65535"));
    assert!(pack_version("2.0.0") > pack_version("1.65535.65535"));
    assert_eq!(
        version_parts(PACKED_VERSION)[0],
        pack_version(VERSION) >> 32
    );
}

fn cache_hash(addr: [u8; 16], cgroup: u64, sock: u64, port: u16) -> u64 {
    VerdictCache::hash(&addr, cgroup, sock, port, 6, 1)
}

#[test]
fn the_cache_hash_covers_every_part_of_the_key() {
    let base = cache_hash([1; 16], 10, 20, 443);
    let mut addr = [1; 16];
    addr[15] = 2;
    for other in [
        cache_hash(addr, 10, 20, 443),
        cache_hash([1; 16], 11, 20, 443),
        cache_hash([1; 16], 10, 21, 443),
        cache_hash([1; 16], 10, 20, 444),
        VerdictCache::hash(&[1; 16], 10, 20, 443, 17, 1),
        VerdictCache::hash(&[1; 16], 10, 20, 443, 6, 0),
    ] {
        assert_ne!(base, other);
    }
    assert_eq!(base, cache_hash([1; 16], 10, 20, 443), "deterministic");
}

#[test]
fn the_cache_tag_is_never_zero_and_binds_generations_and_payload() {
    let h = cache_hash([9; 16], 1, 2, 53);
    let tag = VerdictCache::tag(h, 3, 4, 0x55);
    assert_eq!(tag & 1, 1, "0 marks an empty entry: a tag never is");
    assert_ne!(tag, VerdictCache::tag(h, 4, 4, 0x55), "epoch");
    assert_ne!(tag, VerdictCache::tag(h, 3, 5, 0x55), "bindings generation");
    assert_ne!(tag, VerdictCache::tag(h, 3, 4, 0x56), "payload");
    assert_ne!(tag, VerdictCache::tag(h ^ 1, 3, 4, 0x55), "key");
    // Over many keys, tags never come out 0.
    for i in 0..10_000u64 {
        assert_ne!(VerdictCache::tag(i.wrapping_mul(0x9e37), i, !i, i >> 3), 0);
    }
}

#[test]
fn layouts_match_what_the_agent_and_the_programs_read() {
    // Sizes are also asserted at compile time; offsets the agent reads by
    // name are checked here.
    assert_eq!(size_of::<FlowEvent>(), 128);
    assert_eq!(offset_of!(FlowEvent, scope), 120);
    assert_eq!(offset_of!(FlowEvent, addr), 48);
    assert_eq!(offset_of!(FlowEvent, tags), 80);
    assert_eq!(offset_of!(FlowEvent, comm), 96);
    assert_eq!(offset_of!(FlowEvent, program_version), 112);
    assert_eq!(offset_of!(VerdictCache, tag), 60);
    assert_eq!(offset_of!(RegionGrantKey, generation), 10);
    assert_eq!(size_of::<Counters>(), 8 * counter::COUNT);
    assert_eq!(names::ALL_MAPS.len(), {
        let mut seen = std::collections::BTreeSet::new();
        names::ALL_MAPS.iter().filter(|n| seen.insert(**n)).count()
    });
    for name in names::ALL_MAPS {
        assert!(
            name.len() <= 15,
            "{name}: the kernel keeps 15 bytes of a name"
        );
    }
}

#[test]
fn region_grant_keys_pad_with_zeros() {
    let k = RegionGrantKey::new(GRANT_SCOPE_POLICY | 3, 17, 1);
    assert_eq!(k._pad, [0; 5]);
    assert_eq!(k.scope & GRANT_SCOPE_POLICY, GRANT_SCOPE_POLICY);
}

#[test]
fn learned_keys_hold_ipv4_as_mapped_ipv6() {
    let mut v4 = [0u8; 16];
    v4[..4].copy_from_slice(&[192, 0, 2, 7]);
    let k = LearnedKey::new(9, &v4, true);
    assert_eq!(
        k.addr,
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7]
    );
    assert_eq!(k.scope, 9);
    let v6 = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    assert_eq!(LearnedKey::new(9, &v6, false).addr, v6);
}

#[test]
fn a_learned_name_vouches_until_its_time() {
    let second = 1u64 << LEARNED_TIME_SHIFT;
    let mut l = Learned {
        expires_ns: 10 * second,
        resolved_ns: second,
        ..Learned::default()
    };
    l.names[0] = NameRef { id: 4, until: 10 };
    l.names[1] = NameRef { id: 5, until: 3 };
    assert!(l.live(10 * second - 1));
    assert!(!l.live(10 * second));
    assert_eq!(l.name_live(0, 9 * second), Some(4));
    assert_eq!(l.name_live(1, 9 * second), None, "expired");
    assert_eq!(l.name_live(1, 2 * second), Some(5));
    assert_eq!(l.name_live(2, 0), None, "empty slot");
    assert_eq!(l.name_live(LEARNED_NAMES, 0), None, "out of range");
}

#[test]
fn dns_config_encodes_the_first_port() {
    let v = dns_config::encode(10053);
    assert_ne!(v & dns_config::ON, 0);
    assert_eq!(v & dns_config::PORT_MASK, 10053);
}

fn v6(s: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    // A tiny parser for the test addresses: full groups or "::" once.
    let (head, tail) = s.split_once("::").unwrap_or((s, ""));
    let groups = |t: &str| -> std::vec::Vec<u16> {
        t.split(':')
            .filter(|g| !g.is_empty())
            .map(|g| u16::from_str_radix(g, 16).unwrap())
            .collect()
    };
    let (h, t) = (groups(head), groups(tail));
    for (i, g) in h.iter().enumerate() {
        out[2 * i..2 * i + 2].copy_from_slice(&g.to_be_bytes());
    }
    let start = 16 - 2 * t.len();
    for (i, g) in t.iter().enumerate() {
        out[start + 2 * i..start + 2 * i + 2].copy_from_slice(&g.to_be_bytes());
    }
    out
}

#[test]
fn embedded_ipv4_addresses_are_found_by_the_well_known_rules() {
    // 8.8.8.8 = 0808:0808.
    assert_eq!(well_known_v4(&v6("64:ff9b::808:808")), Some([8, 8, 8, 8]));
    // 64:ff9b:1::/48: bytes 6,7 then 9,10 (byte 8 is the u octet).
    assert_eq!(
        well_known_v4(&v6("64:ff9b:1:808:8:800::")),
        Some([8, 8, 8, 8])
    );
    assert_eq!(well_known_v4(&v6("2002:808:808::1")), Some([8, 8, 8, 8]));
    assert_eq!(well_known_v4(&v6("::808:808")), Some([8, 8, 8, 8]));
    assert_eq!(well_known_v4(&v6("::1")), None);
    assert_eq!(well_known_v4(&v6("::")), None);
    assert_eq!(well_known_v4(&v6("2001:db8::808:808")), None);
    assert_eq!(well_known_v4(&v6("64:ff9b:2::808:808")), None);
}

#[test]
fn operator_prefixes_embed_by_their_length() {
    let a = v6("2001:db8:100:c000:2:2100::");
    // RFC 6052's own examples of 192.0.2.33.
    assert_eq!(rfc6052_v4(&a, 48), Some([192, 0, 2, 33]));
    assert_eq!(
        rfc6052_v4(&v6("2001:db8:c000:221::"), 32),
        Some([192, 0, 2, 33])
    );
    assert_eq!(
        rfc6052_v4(&v6("2001:db8:1c0:2:21::"), 40),
        Some([192, 0, 2, 33])
    );
    assert_eq!(
        rfc6052_v4(&v6("2001:db8:122:3c0:0:221::"), 56),
        Some([192, 0, 2, 33])
    );
    assert_eq!(
        rfc6052_v4(&v6("2001:db8:122:344:c0:2:2100:0"), 64),
        Some([192, 0, 2, 33])
    );
    assert_eq!(
        rfc6052_v4(&v6("2001:db8:122:344::c000:221"), 96),
        Some([192, 0, 2, 33])
    );
    assert_eq!(rfc6052_v4(&a, 50), None);
}
