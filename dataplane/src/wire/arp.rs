//! ARP for IPv4 over Ethernet (RFC 826): the only kind a router interface
//! speaks (hardware type 1, protocol 0x0800, address lengths 6 and 4).

use super::{be16, be32, WireError};
use crate::MacAddr;
use std::net::Ipv4Addr;

pub const LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// A parsed Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// Parses `b` (starting at the ARP header); refuses other hardware or
    /// protocol types and unknown operations.
    pub fn parse(b: &[u8]) -> Result<Arp, WireError> {
        if b.len() < LEN {
            return Err(WireError::Truncated);
        }
        if be16(b, 0) != 1 || be16(b, 2) != 0x0800 || b[4] != 6 || b[5] != 4 {
            return Err(WireError::Malformed);
        }
        let op = be16(b, 6);
        if op != OP_REQUEST && op != OP_REPLY {
            return Err(WireError::Malformed);
        }
        Ok(Arp {
            op,
            sender_mac: MacAddr::from_slice(&b[8..14]).ok_or(WireError::Truncated)?,
            sender_ip: Ipv4Addr::from(be32(b, 14)),
            target_mac: MacAddr::from_slice(&b[18..24]).ok_or(WireError::Truncated)?,
            target_ip: Ipv4Addr::from(be32(b, 24)),
        })
    }

    /// Writes the packet into `b[..LEN]`; returns [`LEN`].
    pub fn emit(&self, b: &mut [u8]) -> usize {
        b[0..2].copy_from_slice(&1u16.to_be_bytes());
        b[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
        b[4] = 6;
        b[5] = 4;
        b[6..8].copy_from_slice(&self.op.to_be_bytes());
        b[8..14].copy_from_slice(&self.sender_mac.0);
        b[14..18].copy_from_slice(&self.sender_ip.octets());
        b[18..24].copy_from_slice(&self.target_mac.0);
        b[24..28].copy_from_slice(&self.target_ip.octets());
        LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request from 10.0.0.2 (02:00:00:00:00:02) for 10.0.0.1, as Linux
    /// sends it.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 10, 0,
        0, 2, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1,
    ];

    #[test]
    fn parse_and_emit() {
        let a = Arp::parse(&REQUEST).unwrap();
        assert_eq!(a.op, OP_REQUEST);
        assert_eq!(a.sender_ip, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(a.target_ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(a.sender_mac, MacAddr([2, 0, 0, 0, 0, 2]));
        let mut b = [0u8; 28];
        a.emit(&mut b);
        assert_eq!(b, REQUEST);
    }

    #[test]
    fn refuses_what_is_not_ethernet_ipv4() {
        assert_eq!(Arp::parse(&REQUEST[..27]), Err(WireError::Truncated));
        let mut b = REQUEST;
        b[1] = 6; // IEEE 802 hardware
        assert_eq!(Arp::parse(&b), Err(WireError::Malformed));
        let mut b = REQUEST;
        b[5] = 16; // IPv6 lengths
        assert_eq!(Arp::parse(&b), Err(WireError::Malformed));
        let mut b = REQUEST;
        b[7] = 3; // RARP
        assert_eq!(Arp::parse(&b), Err(WireError::Malformed));
    }
}
