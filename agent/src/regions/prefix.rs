//! IP prefixes: strict parsing (host bits set is an error, with the prefix
//! the writer probably meant), containment, display.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// Address family of a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Address width in bits.
    pub const fn width(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// A prefix. The address is stored left-aligned in a `u128` (an IPv4
/// address in the top 32 bits), so both families share the arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    family: Family,
    bits: u128,
    len: u8,
}

/// Mask of the top `len` bits.
pub const fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        !0u128 << (128 - len as u32)
    }
}

impl Prefix {
    /// A prefix from left-aligned bits; host bits are cleared.
    pub fn new(family: Family, bits: u128, len: u8) -> Self {
        let len = len.min(family.width());
        Self {
            family,
            bits: bits & mask(len),
            len,
        }
    }

    pub fn v4(addr: Ipv4Addr, len: u8) -> Self {
        Self::new(Family::V4, u128::from(u32::from(addr)) << 96, len)
    }

    pub fn v6(addr: Ipv6Addr, len: u8) -> Self {
        Self::new(Family::V6, u128::from(addr), len)
    }

    /// The single-address prefix of `ip`.
    pub fn host(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Self::v4(a, 32),
            IpAddr::V6(a) => Self::v6(a, 128),
        }
    }

    pub const fn family(&self) -> Family {
        self.family
    }

    /// Left-aligned address bits.
    pub const fn bits(&self) -> u128 {
        self.bits
    }

    #[expect(
        clippy::len_without_is_empty,
        reason = "the prefix length, not the size of a collection"
    )]
    pub const fn len(&self) -> u8 {
        self.len
    }

    /// Whether `other` lies inside this prefix (or equals it).
    pub fn contains(&self, other: &Prefix) -> bool {
        self.family == other.family
            && self.len <= other.len
            && other.bits & mask(self.len) == self.bits
    }

    /// Network-order bytes of the address (4 for IPv4, 16 for IPv6).
    pub fn addr_bytes(&self) -> Vec<u8> {
        match self.family {
            Family::V4 => ((self.bits >> 96) as u32).to_be_bytes().to_vec(),
            Family::V6 => self.bits.to_be_bytes().to_vec(),
        }
    }

    pub fn addr(&self) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from((self.bits >> 96) as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(self.bits)),
        }
    }

    /// The last address of the prefix, left aligned.
    pub fn last_bits(&self) -> u128 {
        let host = !mask(self.len) & mask(self.family.width());
        self.bits | host
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}

/// Why a prefix did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixError {
    /// Not an address, or a bad length.
    Invalid(String),
    /// Bits are set beyond the prefix length: `suggested` is the prefix the
    /// writer probably meant.
    HostBits { given: String, suggested: Prefix },
}

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrefixError::Invalid(s) => write!(f, "'{s}' is not an IP prefix (like 10.0.0.0/8)"),
            PrefixError::HostBits { given, suggested } => write!(
                f,
                "'{given}' has host bits set beyond /{} (did you mean {suggested}?)",
                suggested.len()
            ),
        }
    }
}

impl std::error::Error for PrefixError {}

impl FromStr for Prefix {
    type Err = PrefixError;

    /// `a.b.c.d/len`, `x:y::/len`, or a bare address (a host prefix).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || PrefixError::Invalid(s.to_owned());
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => {
                if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) || l.len() > 3 {
                    return Err(invalid());
                }
                (a, Some(l.parse::<u8>().map_err(|_| invalid())?))
            }
            None => (s, None),
        };
        let host = Prefix::host(addr.parse().map_err(|_| invalid())?);
        let (family, bits) = (host.family, host.bits);
        let len = len.unwrap_or(family.width());
        if len > family.width() {
            return Err(invalid());
        }
        let prefix = Prefix::new(family, bits, len);
        if prefix.bits != bits {
            return Err(PrefixError::HostBits {
                given: s.to_owned(),
                suggested: prefix,
            });
        }
        Ok(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn parses_both_families_and_hosts() {
        assert_eq!(p("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(p("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(p("127.0.0.1").to_string(), "127.0.0.1/32");
        assert_eq!(p("::1").to_string(), "::1/128");
        assert_eq!(p("0.0.0.0/0").len(), 0);
        assert_eq!(p("10.0.0.0/8").addr_bytes(), vec![10, 0, 0, 0]);
    }

    #[test]
    fn rejects_host_bits_with_a_suggestion() {
        let err = "10.1.0.0/8".parse::<Prefix>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "'10.1.0.0/8' has host bits set beyond /8 (did you mean 10.0.0.0/8?)"
        );
        assert!("2001:db8::1/32".parse::<Prefix>().is_err());
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x",
            "10.0.0.0/-1",
            "1.2.3.4/08x",
        ] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn containment() {
        assert!(p("10.0.0.0/8").contains(&p("10.1.0.0/16")));
        assert!(p("10.0.0.0/8").contains(&p("10.0.0.0/8")));
        assert!(!p("10.1.0.0/16").contains(&p("10.0.0.0/8")));
        assert!(!p("10.0.0.0/8").contains(&p("11.0.0.0/16")));
        assert!(!p("0.0.0.0/0").contains(&p("::/0")));
        assert!(p("::/0").contains(&p("2001:db8::/32")));
        assert_eq!(
            p("10.0.0.0/8").last_bits(),
            u128::from(u32::from(Ipv4Addr::new(10, 255, 255, 255))) << 96
        );
    }
}
