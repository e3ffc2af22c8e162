//! Checked views of the L3 headers the router reads and writes (smoltcp's
//! `wire` style): a view is made once with `new_checked`, which validates
//! every length the accessors rely on, after which no accessor can panic.
//! Emitters write a header into a caller's buffer and return its length.
//!
//! - [`ipv4`]: IPv4 (RFC 791), with the RFC 1624 incremental checksum
//!   update that TTL decrement uses (RFC 1812 §5.3.1).
//! - [`arp`]: ARP for IPv4 over Ethernet (RFC 826).
//! - [`icmp`]: ICMP echo and error messages (RFC 792, RFC 1812 §4.3.2).
//! - [`ipv6`]: the IPv6 fixed header (RFC 8200), read only.
//! - [`eth`]: the Ethernet header and an optional 802.1Q tag in front of
//!   the L3 header.

pub mod arp;
pub mod checksum;
pub mod eth;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;

/// Internet checksum (RFC 1071) of `data`, complemented, as stored.
pub fn checksum(data: &[u8]) -> u16 {
    u16::from_be_bytes(checksum::Csum::default().add(data).finish())
}

/// Why a header did not pass its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than its header or than its own length field says.
    Truncated,
    /// A field holds a value the header cannot have (version, header
    /// length, hardware type...).
    Malformed,
}

#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
