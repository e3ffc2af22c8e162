//! The Ethernet header (IEEE 802.3) and an optional 802.1Q tag in front of
//! the L3 header.

use super::be16;
use crate::MacAddr;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const HEADER_LEN: usize = 14;
/// IEEE 802.1Q customer VLAN tag.
pub const TPID_8021Q: u16 = 0x8100;
/// IEEE 802.1ad service VLAN tag (QinQ outer tag).
pub const TPID_8021AD: u16 = 0x88a8;

/// An Ethernet frame's link header, parsed: addresses, the 802.1Q tag if
/// one is there, the ethertype after it and where the L3 header starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2 {
    pub dst: MacAddr,
    pub src: MacAddr,
    /// The tag's TCI, if the frame is 802.1Q-tagged.
    pub tci: Option<u16>,
    pub ethertype: u16,
    /// Offset of the L3 header (14, or 18 behind a tag).
    pub l3: usize,
}

impl L2 {
    /// Parses the link header; `None` if the frame is too short for it.
    pub fn parse(f: &[u8]) -> Option<L2> {
        if f.len() < HEADER_LEN {
            return None;
        }
        let dst = MacAddr::from_slice(&f[0..6])?;
        let src = MacAddr::from_slice(&f[6..12])?;
        let t = be16(f, 12);
        if t == TPID_8021Q {
            if f.len() < HEADER_LEN + 4 {
                return None;
            }
            return Some(L2 {
                dst,
                src,
                tci: Some(be16(f, 14)),
                ethertype: be16(f, 16),
                l3: 18,
            });
        }
        Some(L2 {
            dst,
            src,
            tci: None,
            ethertype: t,
            l3: HEADER_LEN,
        })
    }
}

/// Writes an untagged Ethernet header into `b[..14]`.
pub fn emit(b: &mut [u8], dst: MacAddr, src: MacAddr, ethertype: u16) {
    b[0..6].copy_from_slice(&dst.0);
    b[6..12].copy_from_slice(&src.0);
    b[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untagged_and_tagged() {
        let mut f = [0u8; 60];
        emit(
            &mut f,
            MacAddr::BROADCAST,
            MacAddr([2, 0, 0, 0, 0, 1]),
            ETHERTYPE_ARP,
        );
        let l2 = L2::parse(&f).unwrap();
        assert_eq!((l2.tci, l2.ethertype, l2.l3), (None, ETHERTYPE_ARP, 14));
        f[12..18].copy_from_slice(&[0x81, 0x00, 0x20, 0x0a, 0x08, 0x00]);
        let l2 = L2::parse(&f).unwrap();
        assert_eq!(
            (l2.tci, l2.ethertype, l2.l3),
            (Some(0x200a), ETHERTYPE_IPV4, 18)
        );
        assert!(L2::parse(&f[..13]).is_none());
        assert!(L2::parse(&f[..16]).is_none(), "a tag cut short");
    }
}
