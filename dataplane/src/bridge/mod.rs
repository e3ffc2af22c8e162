//! The learning bridge: one forwarding decision per frame, pure and
//! time-injected (IEEE 802.1D-2004 clause 7.7/7.8 relay and learning).

pub mod events;
pub mod fdb;
pub mod stp;
pub mod trace;
pub mod vlan;

use crate::packet::EthHdr;
use crate::stats::DropReason;
use crate::MacAddr;
pub use fdb::{Fdb, FdbEntry, Learn, PortId};
use stp::{Stp, StpSettings};
use vlan::{edit_for, Classified, TagEdit, VlanMode};

/// Largest accepted `--ageing` (s).
pub const MAX_AGEING_S: u32 = 1_000_000;
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
    /// For the bridge itself (a BPDU taken by spanning tree).
    Local,
}

/// A verdict plus what the frame was classified as and what learning did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// For a unicast verdict toward a tunnel port: the remote the
    /// destination is behind (0: none known).
    pub peer: u16,
    /// VLAN membership of the frame (meaningful unless dropped).
    pub class: Classified,
    pub learn: Option<Learn>,
}

impl Decision {
    fn drop(r: DropReason) -> Decision {
        Decision {
            verdict: Verdict::Drop(r),
            peer: 0,
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
    /// Spanning-tree parameters (used while `stp` is on).
    pub stp_params: StpSettings,
    /// Link-local groups 01:80:C2:00:00:0X relayed instead of dropped (bit
    /// X), as the Linux bridge's `group_fwd_mask`; bits 0 (STP) and 1
    /// (pause) are never set.
    pub group_fwd_mask: u16,
}

impl Default for BridgeSettings {
    fn default() -> Self {
        BridgeSettings {
            stp: false,
            ageing_s: DEFAULT_AGEING_S,
            fdb_max: None,
            stp_params: StpSettings::default(),
            group_fwd_mask: 0,
        }
    }
}

/// Group-forwarding bits that cannot be set: 0 (STP BPDUs, governed by
/// spanning tree) and 1 (802.3x pause, never forwarded by a bridge). Linux
/// also refuses bit 2 (slow protocols: LACP); here it may be relayed, so
/// that lab devices behind the switch can run LACP with each other.
pub const GROUP_FWD_RESTRICTED: u16 = 0x0003;

/// The STP group address (802.1D 7.12.3).
pub const STP_GROUP: MacAddr = MacAddr([0x01, 0x80, 0xc2, 0, 0, 0]);
/// Default STP port path cost: what Linux uses when it cannot read a
/// link speed (veth, TAP), so mixed trees weigh links alike.
pub const DEFAULT_STP_COST: u32 = stp::DEFAULT_PATH_COST;
/// Default STP port priority.
pub const DEFAULT_STP_PRIORITY: u8 = stp::DEFAULT_PORT_PRIORITY;

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
    /// Shut the port down when a BPDU arrives on it.
    pub bpdu_guard: bool,
    /// STP path cost and priority of the port.
    pub stp_cost: u32,
    pub stp_priority: u8,
    /// A router interface's internal port: always forwarding, never in
    /// spanning tree (like the Linux bridge's own local port).
    pub internal: bool,
    /// Broadcast, multicast and unknown unicast entering the port beyond
    /// this many frames a second are dropped (`--storm-limit`).
    pub storm_limit: Option<u32>,
}

impl Default for Member {
    fn default() -> Self {
        Member {
            vlan: VlanMode::Access(DEFAULT_VLAN),
            isolated: false,
            learning: true,
            mac_limit: None,
            bpdu_guard: false,
            stp_cost: DEFAULT_STP_COST,
            stp_priority: DEFAULT_STP_PRIORITY,
            internal: false,
            storm_limit: None,
        }
    }
}

impl Member {
    /// The membership of a router interface's internal port in `vlan`:
    /// untagged in it, no learning (its address is a static entry).
    pub fn internal(vlan: u16) -> Member {
        Member {
            vlan: VlanMode::Access(vlan),
            learning: false,
            internal: true,
            ..Member::default()
        }
    }
}

/// Per-port state the bridge keeps beside the settings.
#[derive(Debug, Clone, Default)]
struct PortRuntime {
    /// The link is up (the engine says so).
    up: bool,
    /// BPDU guard shut the port down.
    guard_tripped: bool,
    /// Last STP state seen, to flush entries when a port stops forwarding.
    forwarding: bool,
    /// Storm control: the port's token bucket.
    storm: StormBucket,
}

/// A token bucket for storm control, in frames; time is an argument.
#[derive(Debug, Clone, Copy, Default)]
struct StormBucket {
    /// Credit in frame-nanoseconds (one frame costs 1e9).
    credit: u64,
    last_ns: u64,
    primed: bool,
}

impl StormBucket {
    /// Takes one frame's token at `now` under a limit of `pps` frames a
    /// second with a burst of a tenth of a second's worth (at least one);
    /// false if none is left.
    fn take(&mut self, pps: u32, now: u64) -> bool {
        const NS: u64 = 1_000_000_000;
        let cap = (u64::from(pps) / 10).max(1) * NS;
        if !self.primed {
            self.primed = true;
            self.credit = cap;
        } else {
            let earned = now
                .saturating_sub(self.last_ns)
                .saturating_mul(u64::from(pps));
            self.credit = self.credit.saturating_add(earned).min(cap);
        }
        // Workers read their clocks once a turn: never step back (a later
        // frame with an earlier time would be credited twice).
        self.last_ns = self.last_ns.max(now);
        if self.credit < NS {
            return false;
        }
        self.credit -= NS;
        true
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
    runtime: Vec<PortRuntime>,
    /// Address the bridge id is made of (and BPDU sources derive from).
    pub mac: MacAddr,
    /// Spanning tree, while on.
    pub stp: Option<Stp>,
    /// Topology changes spanning tree detected or was told of (kept across
    /// turning it off and on; `vswitchd --metrics`).
    pub topology_changes: u64,
}

impl Bridge {
    pub fn new(name: &str, settings: BridgeSettings) -> Bridge {
        Bridge {
            name: name.to_string(),
            fdb: Fdb::new(settings.ageing_s, settings.fdb_max),
            settings,
            ports: Vec::new(),
            members: Vec::new(),
            runtime: Vec::new(),
            mac: random_local_mac(),
            stp: None,
            topology_changes: 0,
        }
    }

    /// The source address of BPDUs sent on `pid`: the bridge address with the
    /// port number mixed into the last two bytes.
    pub fn port_mac(&self, pid: PortId) -> MacAddr {
        let mut m = self.mac;
        let n = (pid as u16).wrapping_add(1).to_be_bytes();
        m.0[4] ^= n[0];
        m.0[5] ^= n[1];
        m
    }

    fn rt(&mut self, pid: PortId) -> &mut PortRuntime {
        let i = pid as usize;
        if self.runtime.len() <= i {
            self.runtime.resize(i + 1, PortRuntime::default());
        }
        &mut self.runtime[i]
    }

    fn guard_tripped(&self, pid: PortId) -> bool {
        self.runtime
            .get(pid as usize)
            .is_some_and(|r| r.guard_tripped)
    }

    /// Whether BPDU guard shut `pid` down.
    pub fn is_guard_tripped(&self, pid: PortId) -> bool {
        self.guard_tripped(pid)
    }

    /// The engine reports a port's link state; spanning tree follows it.
    pub fn set_port_up(&mut self, pid: PortId, up: bool, now_ns: u64) {
        let was = self.rt(pid).up;
        self.rt(pid).up = up;
        if was == up {
            return;
        }
        self.fdb
            .events
            .push(events::BridgeEvent::Port { port: pid, up });
        self.sync_stp_port(pid, now_ns);
    }

    /// Adds or removes `pid` in spanning tree according to its link, guard
    /// and membership.
    fn sync_stp_port(&mut self, pid: PortId, now_ns: u64) {
        let active = self.member(pid).is_some_and(|m| !m.internal)
            && self
                .runtime
                .get(pid as usize)
                .is_some_and(|r| r.up && !r.guard_tripped);
        let (cost, prio) = self
            .member(pid)
            .map_or((DEFAULT_STP_COST, DEFAULT_STP_PRIORITY), |m| {
                (m.stp_cost, m.stp_priority)
            });
        let mac = self.port_mac(pid);
        if let Some(stp) = self.stp.as_mut() {
            if active {
                stp.add_port(pid, mac, cost, prio, now_ns);
            } else {
                stp.remove_port(pid, now_ns);
            }
        }
    }

    /// Turns spanning tree on or off (`set-br --stp`).
    pub fn set_stp(&mut self, on: bool, now_ns: u64) {
        self.settings.stp = on;
        if !on {
            self.stp = None;
            self.fdb.set_ageing(self.settings.ageing_s);
            return;
        }
        if self.stp.is_none() {
            self.stp = Some(Stp::new(self.mac, self.settings.stp_params, now_ns));
            for pid in self.ports.clone() {
                self.sync_stp_port(pid, now_ns);
            }
        }
    }

    /// Changes spanning-tree timers and priority.
    pub fn set_stp_params(&mut self, p: StpSettings, now_ns: u64) {
        self.settings.stp_params = p;
        if let Some(stp) = self.stp.as_mut() {
            stp.set_settings(p, now_ns);
        }
    }

    /// Runs spanning-tree timers; appends BPDUs to send. Applies fast ageing
    /// during a topology change and flushes what ports that stopped
    /// forwarding had learned (802.1D 17.20: entries of a port leaving the
    /// forwarding state are removed).
    pub fn stp_tick(&mut self, now_ns: u64, out: &mut Vec<(PortId, Vec<u8>)>) {
        let Some(stp) = self.stp.as_mut() else {
            return;
        };
        stp.tick(now_ns, out);
        let fast = stp.fast_ageing_s();
        if stp.take_topology_change() {
            self.topology_changes += 1;
        }
        let ageing = fast.unwrap_or(self.settings.ageing_s);
        self.fdb.set_ageing(ageing);
        for pid in self.ports.clone() {
            let fwd = self.stp.as_ref().is_some_and(|s| s.forwards(pid));
            let rt = self.rt(pid);
            if rt.forwarding && !fwd {
                self.fdb.flush_dynamic(Some(pid));
            }
            self.rt(pid).forwarding = fwd;
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
        if let Some(stp) = self.stp.as_mut() {
            stp.remove_port(pid, 0);
        }
        if let Some(m) = self.members.get_mut(pid as usize) {
            *m = None;
        }
        if let Some(r) = self.runtime.get_mut(pid as usize) {
            *r = PortRuntime::default();
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
        let cost_changed = self
            .member(pid)
            .is_some_and(|old| (old.stp_cost, old.stp_priority) != (m.stp_cost, m.stp_priority));
        let (cost, prio) = (m.stp_cost, m.stp_priority);
        if let Some(slot) = self.members.get_mut(pid as usize) {
            if slot.is_some() {
                *slot = Some(m);
            }
        }
        if vlan_changed {
            self.fdb.flush_dynamic(Some(pid));
        }
        if cost_changed {
            if let Some(stp) = self.stp.as_mut() {
                stp.set_port_cost(pid, cost, prio, 0);
            }
        }
    }

    /// Re-enables a port BPDU guard shut down.
    pub fn clear_guard(&mut self, pid: PortId, now_ns: u64) {
        if self.guard_tripped(pid) {
            self.rt(pid).guard_tripped = false;
            self.sync_stp_port(pid, now_ns);
        }
    }

    /// Decides what happens to `frame` (an Ethernet frame) that arrived on
    /// `ingress` at `now_ns`: classify its VLAN, learn its source, then
    /// forward, flood or drop.
    #[inline]
    pub fn decide(&mut self, ingress: PortId, frame: &[u8], now_ns: u64) -> Decision {
        self.decide_from(ingress, 0, frame, now_ns)
    }

    /// [`Bridge::decide`] for a frame a tunnel port received from its remote
    /// `peer` (learned with the source address).
    pub fn decide_from(
        &mut self,
        ingress: PortId,
        peer: u16,
        frame: &[u8],
        now_ns: u64,
    ) -> Decision {
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
        if self.guard_tripped(ingress) {
            return Decision::drop(DropReason::BpduGuard);
        }
        let (learning, limit, guard, internal, storm) = (
            m.learning,
            m.mac_limit,
            m.bpdu_guard,
            m.internal,
            m.storm_limit,
        );
        if eth.dst == STP_GROUP {
            if guard {
                // BPDU guard (edge port protection): a BPDU means a switch
                // was plugged in where none belongs; shut the port.
                self.rt(ingress).guard_tripped = true;
                self.sync_stp_port(ingress, now_ns);
                self.fdb.flush_dynamic(Some(ingress));
                return Decision::drop(DropReason::BpduGuard);
            }
            if let Some(stp) = self.stp.as_mut() {
                // 802.1D 8.4: BPDUs are for the bridge, whatever the port state.
                return match stp.receive(ingress, frame, now_ns) {
                    Ok(()) => Decision {
                        verdict: Verdict::Local,
                        ..Decision::drop(DropReason::Malformed)
                    },
                    Err(_) => Decision::drop(DropReason::Malformed),
                };
            }
        }
        // 802.1D 7.4: a port learns in learning and forwarding state only,
        // and relays frames in forwarding state only.
        let (stp_learns, stp_forwards) = match &self.stp {
            Some(_) if internal => (true, true),
            Some(s) => (s.learns(ingress), s.forwards(ingress)),
            None => (true, true),
        };
        if !stp_learns {
            return Decision::drop(DropReason::StpBlocking);
        }
        let class = match self.member(ingress).map(|m| m.vlan.classify(frame)) {
            Some(Ok(c)) => c,
            Some(Err(r)) => return Decision::drop(r),
            None => return Decision::drop(DropReason::NoEgress),
        };
        let learn = learning.then(|| {
            self.fdb
                .learn_from(class.vid, eth.src, ingress, peer, now_ns, limit)
        });
        if !stp_forwards {
            return Decision {
                verdict: Verdict::Drop(DropReason::StpBlocking),
                peer: 0,
                class,
                learn,
            };
        }
        if learn == Some(Learn::PortLimit) {
            // Port security: a new station beyond the port's limit is not
            // let in (known stations keep working).
            return Decision {
                verdict: Verdict::Drop(DropReason::MacLimit),
                peer: 0,
                class,
                learn,
            };
        }
        let (verdict, peer) = self.forward(ingress, class.vid, eth.dst, now_ns);
        if verdict == Verdict::Flood {
            if let Some(pps) = storm {
                // Storm control: broadcast, multicast and unknown unicast
                // beyond the port's rate go no further (known unicast is
                // never limited).
                if !self.rt(ingress).storm.take(pps, now_ns) {
                    return Decision {
                        verdict: Verdict::Drop(DropReason::StormLimit),
                        peer: 0,
                        class,
                        learn,
                    };
                }
            }
        }
        Decision {
            verdict,
            peer,
            class,
            learn,
        }
    }

    /// Starts loading the FDB slots [`Bridge::decide_from`] will read for
    /// `frame` arriving on `ingress` (its source's, and its destination's if
    /// unicast) and returns at once: a worker calls this for a whole batch
    /// first, so the batch's cache misses overlap instead of coming one
    /// frame at a time. Best effort: the VLAN is the frame's tag, or the
    /// port's untagged VLAN, as classification will find it for any frame
    /// it lets through. Nothing while the FDB is small enough to stay in
    /// cache.
    #[inline]
    pub fn prefetch_frame(&self, ingress: PortId, frame: &[u8]) {
        if !self.fdb.wants_prefetch() {
            return;
        }
        let Some(eth) = EthHdr::parse(frame) else {
            return;
        };
        let tagged = match frame.get(14..16) {
            Some(&[hi, lo]) if eth.ethertype == vlan::TPID_8021Q => {
                u16::from_be_bytes([hi, lo]) & 0x0fff
            }
            _ => 0,
        };
        let vid = match (tagged, self.member(ingress).map(|m| &m.vlan)) {
            (0, Some(VlanMode::Access(v))) => *v,
            (
                0,
                Some(VlanMode::Trunk {
                    native: Some(v), ..
                }),
            ) => *v,
            (0, _) => return,
            (v, _) => v,
        };
        self.fdb.prefetch(vid, eth.src);
        if !eth.dst.is_multicast() {
            self.fdb.prefetch(vid, eth.dst);
        }
    }

    #[inline(always)]
    fn forward(&self, ingress: PortId, vlan: u16, dst: MacAddr, now_ns: u64) -> (Verdict, u16) {
        if dst.is_multicast() {
            // 802.1D 7.12.6: reserved addresses are not relayed; the STP group
            // address is flooded like any multicast while STP is off.
            if dst.is_link_local()
                && (dst.0[5] != 0 || self.settings.stp)
                && self.settings.group_fwd_mask & (1 << (dst.0[5] & 0x0f)) == 0
            {
                return (Verdict::Drop(DropReason::LinkLocal), 0);
            }
            return (Verdict::Flood, 0);
        }
        match self.fdb.lookup_peer(vlan, dst, now_ns) {
            Some((p, _)) if p == ingress => (Verdict::Drop(DropReason::SamePort), 0),
            Some((p, peer)) => (Verdict::Unicast(p), peer),
            None => (Verdict::Flood, 0),
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
        if self.guard_tripped(out) {
            return Err(DropReason::BpduGuard);
        }
        if !m.internal && self.stp.as_ref().is_some_and(|s| !s.forwards(out)) {
            return Err(DropReason::StpBlocking);
        }
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

/// A random locally administered unicast address (a bridge's identity).
fn random_local_mac() -> MacAddr {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's randomness per instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    let v = h.finish().to_be_bytes();
    MacAddr([0x02, v[0], v[1], v[2], v[3], v[4]])
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

    #[test]
    fn group_fwd_mask_relays_chosen_groups() {
        let mut b = br();
        b.settings.group_fwd_mask = 1 << 0x0e;
        let lldp = [0x01, 0x80, 0xc2, 0, 0, 0x0e];
        let lacp = [0x01, 0x80, 0xc2, 0, 0, 0x02];
        assert_eq!(b.decide(1, &frame(lldp, A), 0).verdict, Verdict::Flood);
        assert_eq!(
            b.decide(1, &frame(lacp, A), 0).verdict,
            Verdict::Drop(DropReason::LinkLocal)
        );
        // With spanning tree on, BPDUs stay its own whatever the mask.
        b.settings.group_fwd_mask = 0xfffc;
        b.set_stp(true, 0);
        let stp = [0x01, 0x80, 0xc2, 0, 0, 0];
        assert_ne!(b.decide(1, &frame(stp, A), 0).verdict, Verdict::Flood);
    }

    #[test]
    fn storm_limit_caps_floods_not_known_unicast() {
        let mut b = br();
        b.set_member(
            1,
            Member {
                storm_limit: Some(100),
                ..Member::default()
            },
        );
        // B is known behind port 2.
        b.decide(2, &frame(A, B), 0);
        let bcast = [0xff; 6];
        let s = 1_000_000_000u64;
        // A burst of a tenth of a second's worth, then one per 10 ms.
        let passed = (0..50)
            .filter(|_| b.decide(1, &frame(bcast, A), s).verdict == Verdict::Flood)
            .count();
        assert_eq!(passed, 10);
        let later = (1..=100u64)
            .filter(|i| b.decide(1, &frame(bcast, A), s + i * 10_000_000).verdict == Verdict::Flood)
            .count();
        assert_eq!(later, 100, "one token every 10 ms at 100/s");
        let d = b.decide(1, &frame(bcast, A), s + 1_000_000_001);
        assert_eq!(d.verdict, Verdict::Drop(DropReason::StormLimit));
        // After a quiet second the burst is back, no more.
        let t = s + 2_000_000_000;
        let passed = (0..50)
            .filter(|_| b.decide(1, &frame(bcast, A), t).verdict == Verdict::Flood)
            .count();
        assert_eq!(passed, 10);
        // Known unicast is never limited.
        for _ in 0..1000 {
            assert_eq!(b.decide(1, &frame(B, A), t).verdict, Verdict::Unicast(2));
        }
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

    fn bpdu_from(src: [u8; 6]) -> Vec<u8> {
        let bpdu = stp::Bpdu::Tcn;
        stp::emit_bpdu(&bpdu, MacAddr(src))
    }

    #[test]
    fn stp_states_gate_learning_and_forwarding() {
        let mut b = br();
        for p in 1..=3 {
            b.set_port_up(p, true, 0);
        }
        b.set_stp(true, 0);
        // Listening: neither learns nor forwards.
        let d = b.decide(1, &frame([0xff; 6], A), 0);
        assert_eq!(d.verdict, Verdict::Drop(DropReason::StpBlocking));
        assert!(b.fdb.is_empty());
        // A BPDU is for the bridge, in any state.
        assert_eq!(b.decide(1, &bpdu_from(B), 0).verdict, Verdict::Local);
        // After two forward delays (15 s each) a lone bridge's ports forward.
        let mut out = Vec::new();
        let s = 1_000_000_000u64;
        let mut t = 0;
        while t <= 31 * s {
            b.stp_tick(t, &mut out);
            t += s / 10;
        }
        assert!(!out.is_empty(), "hello BPDUs were emitted");
        let d = b.decide(1, &frame([0xff; 6], A), t);
        assert_eq!(d.verdict, Verdict::Flood);
        assert_eq!(
            b.egress(1, 2, &d.class, &frame([0xff; 6], A)),
            Ok(TagEdit::None)
        );
        // STP off again: BPDUs are flooded like other multicast.
        b.set_stp(false, t);
        assert_eq!(b.decide(1, &bpdu_from(B), t).verdict, Verdict::Flood);
    }

    #[test]
    fn bpdu_guard_trips_and_clears() {
        let mut b = br();
        b.set_member(
            2,
            Member {
                bpdu_guard: true,
                ..Member::default()
            },
        );
        assert_eq!(
            b.decide(2, &bpdu_from(B), 0).verdict,
            Verdict::Drop(DropReason::BpduGuard)
        );
        assert!(b.is_guard_tripped(2));
        assert_eq!(
            b.decide(2, &frame([0xff; 6], B), 0).verdict,
            Verdict::Drop(DropReason::BpduGuard)
        );
        let d = b.decide(1, &frame([0xff; 6], A), 0);
        assert_eq!(
            b.egress(1, 2, &d.class, &frame([0xff; 6], A)),
            Err(DropReason::BpduGuard)
        );
        b.clear_guard(2, 0);
        assert_eq!(b.decide(2, &frame([0xff; 6], B), 0).verdict, Verdict::Flood);
    }

    #[test]
    fn prefetch_frame_changes_nothing() {
        let mut b = vlan_br();
        // Big enough for prefetching to be on.
        for i in 0..20_000u64 {
            b.fdb
                .add_static(30, MacAddr::from_u64(0x0200_0000_0000 | i), 2)
                .unwrap();
        }
        assert!(b.fdb.wants_prefetch());
        let frames = [
            frame(A, B),
            frame([0xff; 6], A),
            tagged(A, B, 20),
            tagged(A, B, 0x2000), // priority-tagged
            tagged(A, B, 0xfff),
            vec![0x81; 15],
            vec![],
        ];
        for f in &frames {
            for p in 0..6 {
                b.prefetch_frame(p, f);
            }
        }
        b.decide(4, &tagged([0xff; 6], B, 20), 0);
        let f = frame(B, A);
        b.prefetch_frame(3, &f);
        assert_eq!(b.decide(3, &f, 0).verdict, Verdict::Unicast(4));
        assert_eq!(b.fdb.len(), 20_002);
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
