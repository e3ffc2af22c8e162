//! The learning bridge: one forwarding decision per frame, pure and
//! time-injected (IEEE 802.1D-2004 clause 7.7/7.8 relay and learning).

pub mod fdb;
pub mod vlan;

use crate::packet::EthHdr;
use crate::stats::DropReason;
use crate::MacAddr;
pub use fdb::{Fdb, FdbEntry, Learn, PortId};

/// Linux bridge default ageing time (s).
pub const DEFAULT_AGEING_S: u32 = 300;
/// Untagged frames belong to this VLAN until VLANs are configured.
pub const DEFAULT_VLAN: u16 = 1;

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Known unicast: to exactly this port.
    Unicast(PortId),
    /// Broadcast, multicast or unknown unicast: to every other forwarding port.
    Flood,
    /// Nowhere, for this reason (counted on the ingress port).
    Drop(DropReason),
}

/// A verdict plus what learning the source did (for counters and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub learn: Option<Learn>,
}

impl Decision {
    fn drop(r: DropReason) -> Decision {
        Decision {
            verdict: Verdict::Drop(r),
            learn: None,
        }
    }
}

/// A bridge's configuration as the user set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSettings {
    pub stp: bool,
    pub ageing_s: u32,
    pub fdb_max: Option<u32>,
}

impl Default for BridgeSettings {
    fn default() -> Self {
        BridgeSettings {
            stp: false,
            ageing_s: DEFAULT_AGEING_S,
            fdb_max: None,
        }
    }
}

/// One bridge: its member ports and forwarding database.
pub struct Bridge {
    pub name: String,
    pub settings: BridgeSettings,
    pub fdb: Fdb,
    /// Member ports, in the order they were added.
    pub ports: Vec<PortId>,
}

impl Bridge {
    pub fn new(name: &str, settings: BridgeSettings) -> Bridge {
        Bridge {
            name: name.to_string(),
            fdb: Fdb::new(settings.ageing_s, settings.fdb_max),
            settings,
            ports: Vec::new(),
        }
    }

    pub fn set_ageing(&mut self, ageing_s: u32) {
        self.settings.ageing_s = ageing_s;
        self.fdb.set_ageing(ageing_s);
    }

    pub fn set_fdb_max(&mut self, fdb_max: Option<u32>) {
        self.settings.fdb_max = fdb_max;
        self.fdb.set_max(fdb_max);
    }

    /// Decides what happens to `frame` (an Ethernet frame) that arrived on
    /// `ingress` at `now_ns`: learn its source, then forward, flood or drop.
    #[inline]
    pub fn decide(&mut self, ingress: PortId, frame: &[u8], now_ns: u64) -> Decision {
        let Some(eth) = EthHdr::parse(frame) else {
            return Decision::drop(DropReason::Malformed);
        };
        // 802.1D 7.8: a bridge learns only individual (unicast) sources; a frame
        // from a group or all-zero source is invalid (Linux bridge drops it too).
        if !eth.src.is_valid_station() {
            return Decision::drop(DropReason::InvalidSrcMac);
        }
        let vlan = DEFAULT_VLAN;
        let learn = self.fdb.learn(vlan, eth.src, ingress, now_ns);
        let verdict = self.forward(ingress, vlan, eth.dst, now_ns);
        Decision {
            verdict,
            learn: Some(learn),
        }
    }

    #[inline]
    fn forward(&self, ingress: PortId, vlan: u16, dst: MacAddr, now_ns: u64) -> Verdict {
        if dst.is_multicast() {
            // 802.1D 7.12.6: reserved addresses are not relayed; the STP group
            // address is flooded like any multicast while STP is off.
            if dst.is_link_local() && (dst.0[5] != 0 || self.settings.stp) {
                return Verdict::Drop(DropReason::LinkLocal);
            }
            return Verdict::Flood;
        }
        match self.fdb.lookup(vlan, dst, now_ns) {
            Some(p) if p == ingress => Verdict::Drop(DropReason::SamePort),
            Some(p) => Verdict::Unicast(p),
            None => Verdict::Flood,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = Vec::with_capacity(60);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(60, 0);
        f
    }

    fn br() -> Bridge {
        let mut b = Bridge::new("br0", BridgeSettings::default());
        b.ports = vec![1, 2, 3];
        b
    }

    #[test]
    fn unknown_floods_then_known_goes_to_one_port() {
        let mut b = br();
        let d = b.decide(1, &frame(B, A), 0);
        assert_eq!(d.verdict, Verdict::Flood);
        assert_eq!(d.learn, Some(Learn::New));
        // B answers: A is known on port 1.
        let d = b.decide(2, &frame(A, B), 1);
        assert_eq!(d.verdict, Verdict::Unicast(1));
        // And now A -> B is unicast to port 2.
        assert_eq!(b.decide(1, &frame(B, A), 2).verdict, Verdict::Unicast(2));
    }

    #[test]
    fn broadcast_and_multicast_flood() {
        let mut b = br();
        b.decide(2, &frame(A, B), 0);
        assert_eq!(b.decide(1, &frame([0xff; 6], A), 0).verdict, Verdict::Flood);
        let mcast = [0x01, 0x00, 0x5e, 0, 0, 1];
        assert_eq!(b.decide(1, &frame(mcast, A), 0).verdict, Verdict::Flood);
    }

    #[test]
    fn never_back_out_of_ingress() {
        let mut b = br();
        b.decide(1, &frame(A, B), 0); // B on port 1
        assert_eq!(
            b.decide(1, &frame(B, A), 0).verdict,
            Verdict::Drop(DropReason::SamePort)
        );
    }

    #[test]
    fn station_move() {
        let mut b = br();
        b.decide(1, &frame(A, B), 0);
        let d = b.decide(3, &frame(A, B), 1);
        assert_eq!(d.learn, Some(Learn::Moved { from: 1 }));
        assert_eq!(b.decide(2, &frame(B, A), 2).verdict, Verdict::Unicast(3));
    }

    #[test]
    fn ageing_returns_to_flooding() {
        let mut b = br();
        b.set_ageing(10);
        b.decide(2, &frame(A, B), 0);
        let s = 1_000_000_000;
        assert_eq!(
            b.decide(1, &frame(B, A), 9 * s).verdict,
            Verdict::Unicast(2)
        );
        assert_eq!(b.decide(1, &frame(B, A), 10 * s).verdict, Verdict::Flood);
    }

    #[test]
    fn invalid_and_malformed() {
        let mut b = br();
        assert_eq!(
            b.decide(1, &[0u8; 13], 0).verdict,
            Verdict::Drop(DropReason::Malformed)
        );
        assert_eq!(
            b.decide(1, &frame(A, [0xff; 6]), 0).verdict,
            Verdict::Drop(DropReason::InvalidSrcMac)
        );
        assert_eq!(
            b.decide(1, &frame(A, [0; 6]), 0).verdict,
            Verdict::Drop(DropReason::InvalidSrcMac)
        );
        assert!(b.fdb.is_empty());
    }

    #[test]
    fn link_local_rules() {
        let mut b = br();
        let stp = [0x01, 0x80, 0xc2, 0, 0, 0];
        let lldp = [0x01, 0x80, 0xc2, 0, 0, 0x0e];
        assert_eq!(b.decide(1, &frame(stp, A), 0).verdict, Verdict::Flood);
        assert_eq!(
            b.decide(1, &frame(lldp, A), 0).verdict,
            Verdict::Drop(DropReason::LinkLocal)
        );
    }

    #[test]
    fn full_fdb_still_forwards() {
        let mut b = br();
        b.set_fdb_max(Some(1));
        b.decide(2, &frame(A, B), 0);
        let d = b.decide(1, &frame(B, A), 0);
        assert_eq!(d.learn, Some(Learn::Full));
        assert_eq!(d.verdict, Verdict::Unicast(2));
    }
}
