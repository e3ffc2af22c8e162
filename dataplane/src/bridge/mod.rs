//! The learning bridge: one forwarding decision per frame, pure and
//! time-injected (IEEE 802.1D-2004 clause 7.7/7.8 relay and learning).

pub mod fdb;
pub mod vlan;

use crate::packet::EthHdr;
use crate::stats::DropReason;
use crate::MacAddr;
pub use fdb::{Fdb, FdbEntry, Learn, PortId};
use vlan::{edit_for, Classified, TagEdit, VlanMode};

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

/// A verdict plus what the frame was classified as and what learning did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// VLAN membership of the frame (meaningful unless dropped).
    pub class: Classified,
    pub learn: Option<Learn>,
}

impl Decision {
    fn drop(r: DropReason) -> Decision {
        Decision {
            verdict: Verdict::Drop(r),
            class: Classified {
                vid: 0,
                pcp_dei: 0,
                tagged: false,
            },
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

/// How one port takes part in a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub vlan: VlanMode,
    /// Isolated ports talk only to non-isolated ones (Linux bridge `isolated`).
    pub isolated: bool,
    /// Learn source addresses seen on this port.
    pub learning: bool,
    /// Most addresses learned on this port (`--mac-limit`); frames from
    /// further new addresses are dropped.
    pub mac_limit: Option<u32>,
}

impl Default for Member {
    fn default() -> Self {
        Member {
            vlan: VlanMode::Access(DEFAULT_VLAN),
            isolated: false,
            learning: true,
            mac_limit: None,
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
    /// Membership settings, indexed by PortId.
    members: Vec<Option<Member>>,
}

impl Bridge {
    pub fn new(name: &str, settings: BridgeSettings) -> Bridge {
        Bridge {
            name: name.to_string(),
            fdb: Fdb::new(settings.ageing_s, settings.fdb_max),
            settings,
            ports: Vec::new(),
            members: Vec::new(),
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

    /// Adds a port (or replaces its settings).
    pub fn add_port(&mut self, pid: PortId, m: Member) {
        let i = pid as usize;
        if self.members.len() <= i {
            self.members.resize(i + 1, None);
        }
        if self.members[i].is_none() {
            self.ports.push(pid);
        }
        self.members[i] = Some(m);
    }

    /// Removes a port and every FDB entry pointing at it.
    pub fn remove_port(&mut self, pid: PortId) {
        if let Some(m) = self.members.get_mut(pid as usize) {
            *m = None;
        }
        self.ports.retain(|&p| p != pid);
        self.fdb.remove_port(pid);
    }

    #[inline]
    pub fn member(&self, pid: PortId) -> Option<&Member> {
        self.members.get(pid as usize).and_then(Option::as_ref)
    }

    /// Changes a port's settings; a VLAN change flushes what it learned
    /// (its entries may belong to VLANs it no longer carries).
    pub fn set_member(&mut self, pid: PortId, m: Member) {
        let vlan_changed = self.member(pid).is_some_and(|old| old.vlan != m.vlan);
        if let Some(slot) = self.members.get_mut(pid as usize) {
            if slot.is_some() {
                *slot = Some(m);
            }
        }
        if vlan_changed {
            self.fdb.flush_dynamic(Some(pid));
        }
    }

    /// Decides what happens to `frame` (an Ethernet frame) that arrived on
    /// `ingress` at `now_ns`: classify its VLAN, learn its source, then
    /// forward, flood or drop.
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
        let Some(m) = self.member(ingress) else {
            return Decision::drop(DropReason::NoEgress);
        };
        let (learning, limit) = (m.learning, m.mac_limit);
        let class = match m.vlan.classify(frame) {
            Ok(c) => c,
            Err(r) => return Decision::drop(r),
        };
        let learn = learning.then(|| self.fdb.learn(class.vid, eth.src, ingress, now_ns, limit));
        if learn == Some(Learn::PortLimit) {
            // Port security: a new station beyond the port's limit is not
            // let in (known stations keep working).
            return Decision {
                verdict: Verdict::Drop(DropReason::MacLimit),
                class,
                learn,
            };
        }
        let verdict = self.forward(ingress, class.vid, eth.dst, now_ns);
        Decision {
            verdict,
            class,
            learn,
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

    /// Whether (and how) a frame from `ingress` classified as `class` may
    /// leave through `out`: the tag edit it needs there, or why not.
    #[inline]
    pub fn egress(
        &self,
        ingress: PortId,
        out: PortId,
        class: &Classified,
        frame: &[u8],
    ) -> Result<TagEdit, DropReason> {
        let Some(m) = self.member(out) else {
            return Err(DropReason::NoEgress);
        };
        if m.isolated && self.member(ingress).is_some_and(|i| i.isolated) {
            return Err(DropReason::Isolated);
        }
        let tagged = m
            .vlan
            .egress_tagged(class.vid)
            .ok_or(DropReason::VlanFiltered)?;
        edit_for(class, frame, tagged).ok_or(DropReason::DoubleTagged)
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
        for p in 1..=3 {
            b.add_port(p, Member::default());
        }
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

    fn tagged(dst: [u8; 6], src: [u8; 6], tci: u16) -> Vec<u8> {
        let mut f = Vec::with_capacity(64);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&tci.to_be_bytes());
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(64, 0);
        f
    }

    /// Ports 1, 2: access VLAN 10; 3: access VLAN 20; 4: trunk 10,20 native 1.
    fn vlan_br() -> Bridge {
        let mut b = Bridge::new("br0", BridgeSettings::default());
        let access = |v| Member {
            vlan: VlanMode::Access(v),
            ..Member::default()
        };
        b.add_port(1, access(10));
        b.add_port(2, access(10));
        b.add_port(3, access(20));
        b.add_port(
            4,
            Member {
                vlan: VlanMode::Trunk {
                    vlans: vlan::VlanSet::parse("10,20").unwrap(),
                    native: Some(1),
                },
                ..Member::default()
            },
        );
        b
    }

    fn flood_set(b: &Bridge, ingress: PortId, d: &Decision, f: &[u8]) -> Vec<(PortId, TagEdit)> {
        b.ports
            .iter()
            .filter(|&&p| p != ingress)
            .filter_map(|&p| b.egress(ingress, p, &d.class, f).ok().map(|e| (p, e)))
            .collect()
    }

    #[test]
    fn broadcast_stays_in_its_vlan() {
        let mut b = vlan_br();
        let f = frame([0xff; 6], A);
        let d = b.decide(1, &f, 0);
        assert_eq!(d.verdict, Verdict::Flood);
        assert_eq!(d.class.vid, 10);
        // VLAN 10: port 2 untagged, trunk 4 tagged; never port 3 (VLAN 20).
        assert_eq!(
            flood_set(&b, 1, &d, &f),
            vec![(2, TagEdit::None), (4, TagEdit::Push(10))]
        );
        let d = b.decide(3, &frame([0xff; 6], B), 0);
        assert_eq!(
            flood_set(&b, 3, &d, &frame([0xff; 6], B)),
            vec![(4, TagEdit::Push(20))]
        );
    }

    #[test]
    fn fdb_is_per_vlan() {
        let mut b = vlan_br();
        // A in VLAN 10 on port 1; the same MAC in VLAN 20 on the trunk.
        b.decide(1, &frame([0xff; 6], A), 0);
        b.decide(4, &tagged([0xff; 6], A, 20), 0);
        assert_eq!(b.fdb.lookup(10, MacAddr(A), 0), Some(1));
        assert_eq!(b.fdb.lookup(20, MacAddr(A), 0), Some(4));
        // Port 3 (VLAN 20) reaches A on the trunk, tagged.
        let f = frame(A, B);
        let d = b.decide(3, &f, 0);
        assert_eq!(d.verdict, Verdict::Unicast(4));
        assert_eq!(b.egress(3, 4, &d.class, &f), Ok(TagEdit::Push(20)));
        // Tagged VLAN 10 from the trunk reaches port 1 untagged.
        let f = tagged(A, B, 0xa00a);
        let d = b.decide(4, &f, 0);
        assert_eq!(d.verdict, Verdict::Unicast(1));
        assert_eq!(b.egress(4, 1, &d.class, &f), Ok(TagEdit::Pop));
    }

    #[test]
    fn vlan_filtered_on_ingress() {
        let mut b = vlan_br();
        assert_eq!(
            b.decide(4, &tagged([0xff; 6], A, 30), 0).verdict,
            Verdict::Drop(DropReason::VlanFiltered)
        );
        assert_eq!(
            b.decide(1, &tagged([0xff; 6], A, 10), 0).verdict,
            Verdict::Drop(DropReason::VlanFiltered)
        );
        assert!(b.fdb.is_empty(), "dropped frames teach nothing");
    }

    #[test]
    fn vlan_change_flushes_port() {
        let mut b = vlan_br();
        b.decide(1, &frame([0xff; 6], A), 0);
        b.set_member(1, Member::default());
        assert!(b.fdb.is_empty());
        // Same settings again: nothing flushed.
        b.decide(1, &frame([0xff; 6], A), 0);
        b.set_member(1, Member::default());
        assert_eq!(b.fdb.len(), 1);
    }

    #[test]
    fn isolated_ports_reach_only_the_uplink() {
        let mut b = br();
        let iso = Member {
            isolated: true,
            ..Member::default()
        };
        b.set_member(1, iso.clone());
        b.set_member(2, iso);
        let f = frame([0xff; 6], A);
        let d = b.decide(1, &f, 0);
        assert_eq!(flood_set(&b, 1, &d, &f), vec![(3, TagEdit::None)]);
        assert_eq!(b.egress(1, 2, &d.class, &f), Err(DropReason::Isolated));
        // The uplink reaches both.
        let d = b.decide(3, &f, 0);
        assert_eq!(flood_set(&b, 3, &d, &f).len(), 2);
    }

    #[test]
    fn learning_off() {
        let mut b = br();
        b.set_member(
            1,
            Member {
                learning: false,
                ..Member::default()
            },
        );
        let d = b.decide(1, &frame([0xff; 6], A), 0);
        assert_eq!(d.learn, None);
        assert!(b.fdb.is_empty());
    }

    #[test]
    fn mac_limit_drops_new_stations() {
        let mut b = br();
        b.set_member(
            1,
            Member {
                mac_limit: Some(1),
                ..Member::default()
            },
        );
        assert_eq!(b.decide(1, &frame([0xff; 6], A), 0).verdict, Verdict::Flood);
        assert_eq!(
            b.decide(1, &frame([0xff; 6], B), 0).verdict,
            Verdict::Drop(DropReason::MacLimit)
        );
        // The known station still gets through.
        assert_eq!(b.decide(1, &frame([0xff; 6], A), 1).verdict, Verdict::Flood);
        assert_eq!(b.fdb.len(), 1);
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
