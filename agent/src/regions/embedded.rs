//! IPv6 addresses that carry an IPv4 address: NAT64 (RFC 6052: the
//! well-known `64:ff9b::/96` and `64:ff9b:1::/48`, and the operator's own
//! prefixes of `[agent] nat64`), 6to4 (`2002::/16`) and IPv4-compatible
//! `::a.b.c.d`. A translator or tunnel takes a packet to such an address on
//! to the IPv4 address inside, so the kernel judges both, and the records
//! and `policy explain` name the inner one.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The IPv4 address an IPv6 address carries: by the well-known rules
/// (NAT64's own prefixes, 6to4, IPv4-compatible) or an operator prefix.
pub fn v4_of(addr: &Ipv6Addr, nat64: &[(Ipv6Addr, u8)]) -> Option<Ipv4Addr> {
    let a = addr.octets();
    if a[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
        return None;
    }
    if let Some(v4) = geowall_common::well_known_v4(&a) {
        return Some(v4.into());
    }
    nat64
        .iter()
        .filter(|(p, len)| {
            let bits = u32::from(*len);
            bits > 0 && (u128::from(*addr) ^ u128::from(*p)) >> (128 - bits) == 0
        })
        .max_by_key(|(_, len)| *len)
        .and_then(|(_, len)| geowall_common::rfc6052_v4(&a, *len))
        .map(Ipv4Addr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn the_address_inside() {
        let none: &[(Ipv6Addr, u8)] = &[];
        let v4 = |s: &str| Some(s.parse::<Ipv4Addr>().unwrap());
        assert_eq!(v4_of(&v6("64:ff9b::8.8.8.8"), none), v4("8.8.8.8"));
        assert_eq!(v4_of(&v6("2002:0808:0808::1"), none), v4("8.8.8.8"));
        assert_eq!(v4_of(&v6("::8.8.8.8"), none), v4("8.8.8.8"));
        assert_eq!(
            v4_of(&v6("::ffff:8.8.8.8"), none),
            None,
            "mapped: judged as IPv4 already"
        );
        assert_eq!(v4_of(&v6("2a02:2e0::1"), none), None);
        let operator = [(v6("2001:db8:64::"), 96)];
        assert_eq!(
            v4_of(&v6("2001:db8:64::c000:201"), &operator),
            v4("192.0.2.1")
        );
        assert_eq!(v4_of(&v6("2001:db8:64::c000:201"), none), None);
    }
}
