//! Router interfaces: an address on a bridge VLAN (an SVI, carried by an
//! internal bridge port) or on a TUN device.

use crate::bridge::PortId;
use crate::config::{Ipv4Cidr, RifConfig};
use crate::MacAddr;

/// Index of a router interface in the router's table.
pub type RifId = u16;

/// Default MTU of a router interface (Ethernet).
pub const DEFAULT_MTU: u32 = 1500;

/// Where a router interface sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RifKind {
    /// On a bridge (index in the engine's table), in one VLAN of it.
    Svi { bridge: usize, vlan: u16 },
    /// On a TUN device: IP packets, no link addresses.
    Tun,
}

/// One router interface.
#[derive(Debug, Clone)]
pub struct Rif {
    pub name: String,
    pub kind: RifKind,
    pub addr: Ipv4Cidr,
    pub mac: MacAddr,
    pub mtu: u32,
    /// The port that carries it: the bridge's internal port, or the TUN.
    pub pid: PortId,
    /// As the user gave it (for `save`).
    pub cfg: RifConfig,
}

impl Rif {
    /// The subnet's broadcast address (none for /31 and /32).
    pub fn broadcast(&self) -> Option<u32> {
        (self.addr.len < 31).then(|| {
            let host = u32::MAX >> self.addr.len;
            u32::from(self.addr.network()) | host
        })
    }
}

/// A stable, locally administered unicast MAC for a rif named `name`
/// (FNV-1a of the name): the same after a restart, so hosts' ARP caches
/// stay right.
pub fn stable_mac(name: &str) -> MacAddr {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    // 02: locally administered, unicast.
    MacAddr([0x02, 0x5a, b[2], b[3], b[4], b[5]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_local() {
        let a = stable_mac("gw");
        assert_eq!(a, stable_mac("gw"));
        assert_ne!(a, stable_mac("gw2"));
        assert!(a.is_valid_station());
        assert_eq!(a.0[0] & 0x03, 0x02, "locally administered unicast");
    }
}
