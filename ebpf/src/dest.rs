//! A destination as a hook saw it: what every verdict is about.

/// A destination as the hook saw it. Aligned so that the address reads as
/// two 8-byte words.
#[repr(C, align(8))]
pub struct Dest {
    /// Network-order address; IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// Host-order port.
    pub port: u16,
    /// IP protocol of the socket.
    pub proto: u8,
    /// Family of the socket ([`geowall_common::family`]).
    pub family: u8,
    /// Judge `addr[..4]` as IPv4 (an IPv4 socket, or an IPv4-mapped address).
    pub v4: bool,
    /// [`geowall_common::event_flags`].
    pub flags: u8,
    /// A socket being created: its type (`SOCK_STREAM`, `SOCK_DGRAM`,
    /// `SOCK_RAW`); 0 otherwise.
    pub sock_type: u8,
}
