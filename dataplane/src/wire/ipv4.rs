//! IPv4 headers (RFC 791).
//!
//! [`Ipv4::new_checked`] validates version, header length and total length
//! against the buffer once; every accessor after it is in bounds. The
//! router decrements TTL with the incremental checksum update of RFC 1624
//! (eqn. 3), as RFC 1812 §5.3.1 and §5.2.2 allow.

use super::{be16, be32, WireError};
use std::net::Ipv4Addr;

pub const MIN_HEADER: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;

/// A checked view of an IPv4 packet at the start of `buf`.
#[derive(Debug)]
pub struct Ipv4<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4<T> {
    /// Checks that `buf` starts with an IPv4 header whose header length and
    /// total length fit in it (trailing bytes, like Ethernet padding, are
    /// allowed and not part of the packet).
    pub fn new_checked(buf: T) -> Result<Ipv4<T>, WireError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        let total = usize::from(be16(b, 2));
        if ihl < MIN_HEADER || total < ihl {
            return Err(WireError::Malformed);
        }
        if total > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Ipv4 { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.b()[0] & 0x0f) * 4
    }

    /// The packet's length by its header (may be less than the buffer).
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.b(), 2))
    }

    pub fn ttl(&self) -> u8 {
        self.b()[8]
    }

    pub fn protocol(&self) -> u8 {
        self.b()[9]
    }

    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.b(), 12))
    }

    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.b(), 16))
    }

    pub fn dont_frag(&self) -> bool {
        be16(self.b(), 6) & FLAG_DF != 0
    }

    /// A fragment other than the first (RFC 1812 §4.3.2.7: no ICMP error
    /// about these).
    pub fn is_later_fragment(&self) -> bool {
        be16(self.b(), 6) & 0x1fff != 0
    }

    /// Any fragment (MF set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        be16(self.b(), 6) & (FLAG_MF | 0x1fff) != 0
    }

    /// The header checksum verifies.
    pub fn checksum_ok(&self) -> bool {
        super::checksum(&self.b()[..self.header_len()]) == 0
    }

    /// The payload (after the header, up to the total length).
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len()]
    }

    /// The packet (header and payload, without trailing bytes).
    pub fn packet(&self) -> &[u8] {
        &self.b()[..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4<T> {
    /// Sets TTL and updates the header checksum incrementally.
    pub fn set_ttl(&mut self, ttl: u8) {
        let b = self.buf.as_mut();
        let old = be16(b, 8);
        b[8] = ttl;
        let sum = super::checksum::adjust(be16(b, 10), old, be16(b, 8));
        b[10..12].copy_from_slice(&sum.to_be_bytes());
    }

    /// Exchanges source and destination (the header sum does not change:
    /// the same words, in another order).
    pub fn swap_addresses(&mut self) {
        let b = self.buf.as_mut();
        let (src, dst) = b[12..20].split_at_mut(4);
        src.swap_with_slice(dst);
    }

    /// Decrements TTL by one and updates the header checksum incrementally
    /// (RFC 1624 eqn. 3: the TTL/protocol word changes by -0x0100). The
    /// caller has checked that TTL is above 1.
    pub fn decrement_ttl(&mut self) {
        let ttl = self.buf.as_mut()[8].wrapping_sub(1);
        self.set_ttl(ttl);
    }
}

/// The fields of an IPv4 header to emit (no options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    /// Payload length (the header's 20 bytes are added).
    pub payload_len: usize,
    pub ident: u16,
    pub dont_frag: bool,
}

impl Repr {
    /// Writes the 20-byte header, checksum included, into `b[..20]`;
    /// returns 20. `payload_len` must keep the total within 65535.
    pub fn emit(&self, b: &mut [u8]) -> usize {
        let total = (MIN_HEADER + self.payload_len).min(0xffff) as u16;
        b[0] = 0x45;
        b[1] = 0;
        b[2..4].copy_from_slice(&total.to_be_bytes());
        b[4..6].copy_from_slice(&self.ident.to_be_bytes());
        let flags = if self.dont_frag { FLAG_DF } else { 0 };
        b[6..8].copy_from_slice(&flags.to_be_bytes());
        b[8] = self.ttl;
        b[9] = self.protocol;
        b[10..12].copy_from_slice(&[0, 0]);
        b[12..16].copy_from_slice(&self.src.octets());
        b[16..20].copy_from_slice(&self.dst.octets());
        let c = super::checksum(&b[..MIN_HEADER]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        MIN_HEADER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10.0.0.2 -> 192.0.2.7, UDP, TTL 64, 28 bytes, DF (as Linux sends it).
    const PKT: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 0, 2, 192,
        0, 2, 7, 0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00,
    ];

    fn with_csum() -> [u8; 28] {
        let mut p = PKT;
        let c = crate::wire::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn fields() {
        let p = with_csum();
        let v = Ipv4::new_checked(&p[..]).unwrap();
        assert_eq!(v.src(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(v.dst(), Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!((v.ttl(), v.protocol(), v.total_len()), (64, PROTO_UDP, 28));
        assert!(v.dont_frag() && !v.is_fragment() && v.checksum_ok());
        assert_eq!(v.payload().len(), 8);
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut p = with_csum();
        for ttl in (2..=64).rev() {
            let mut v = Ipv4::new_checked(&mut p[..]).unwrap();
            assert_eq!(v.ttl(), ttl);
            v.decrement_ttl();
            assert!(v.checksum_ok(), "at ttl {ttl}");
        }
        // Against a from-scratch sum.
        let mut q = p;
        q[10..12].copy_from_slice(&[0, 0]);
        let c = crate::wire::checksum(&q[..20]);
        assert_eq!(&p[10..12], &c.to_be_bytes());
    }

    #[test]
    fn rejects_bad_lengths() {
        let p = with_csum();
        assert_eq!(
            Ipv4::new_checked(&p[..19]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Ipv4::new_checked(&p[..27]).unwrap_err(),
            WireError::Truncated
        );
        let mut b = p;
        b[0] = 0x44;
        assert_eq!(Ipv4::new_checked(&b[..]).unwrap_err(), WireError::Malformed);
        let mut b = p;
        b[0] = 0x65;
        assert_eq!(Ipv4::new_checked(&b[..]).unwrap_err(), WireError::Malformed);
        let mut b = p;
        b[3] = 10; // total < header
        assert_eq!(Ipv4::new_checked(&b[..]).unwrap_err(), WireError::Malformed);
        // Padding after the packet is fine.
        let mut padded = [0u8; 60];
        padded[..28].copy_from_slice(&p);
        assert_eq!(Ipv4::new_checked(&padded[..]).unwrap().packet().len(), 28);
    }

    #[test]
    fn emit_roundtrip() {
        let r = Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: PROTO_ICMP,
            ttl: 64,
            payload_len: 8,
            ident: 7,
            dont_frag: false,
        };
        let mut b = [0u8; 28];
        r.emit(&mut b);
        let v = Ipv4::new_checked(&b[..]).unwrap();
        assert!(v.checksum_ok());
        assert_eq!((v.src(), v.dst(), v.total_len()), (r.src, r.dst, 28));
    }
}
