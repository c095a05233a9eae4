//! IPv6 destinations that carry an IPv4 address: NAT64 (the well-known
//! prefixes and the operator's, RFC 6052), 6to4 and IPv4-compatible
//! addresses. A translator or tunnel takes such a packet to the IPv4
//! address, so that address is judged too (see `verdict`).

use aya_ebpf::btf_maps::lpm_trie::Key;
use geowall_common::{config, rfc6052_v4, well_known_v4};

use crate::maps::{GW_NAT64, config_slot};

/// The IPv4 address inside `addr`, in memory order; 0 when none. A few
/// compares for most destinations; one trie lookup for the operator's
/// prefixes when it has some. Out of line: its frame stays off the hook's.
#[inline(never)]
pub fn v4_of(addr: &[u8; 16]) -> u32 {
    if let Some(v4) = well_known_v4(addr) {
        return u32::from_ne_bytes(v4);
    }
    if config_slot(config::NAT64) == 0 {
        return 0;
    }
    let Some(len) = GW_NAT64.get(&Key::new(128, *addr)) else {
        return 0;
    };
    rfc6052_v4(addr, *len).map_or(0, u32::from_ne_bytes)
}
