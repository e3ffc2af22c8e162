//! The forwarding pipeline: one received batch in, a transmit plan out.
//! Pure (no file descriptors, time passed in), so it is tested with byte
//! fixtures and no kernel, like smoltcp's interface tests; the worker calls
//! it under the tables' lock and does the I/O after.
//!
//! A frame from a bridge port goes through the bridge ([`Bridge::decide_from`]:
//! VLAN classification, learning, forwarding). Where the bridge would hand
//! it to a router interface's internal port, the router gets it instead
//! (as owned for a unicast to the interface's MAC; read-only when it is
//! also flooded, which is how ARP requests arrive). A frame from a TUN
//! port goes to the router directly. What the router forwards leaves
//! through its egress interface: a TUN port, or the bridge again as if
//! received on the interface's internal port (so the FDB, VLAN tagging and
//! flooding apply as to any frame). Frames the router originates (ARP,
//! ICMP, packets released from the ARP queue) are built in the plan's
//! [`Orig`] arena and leave the same way (firecracker's
//! `write_to_mmds_or_tap` seam, turned around).
//!
//! The plan is per output port: items naming a slot of the received batch
//! (`txq`) or of the arena (`txq_orig`), each with its VLAN tag edit.
//!
//! A batch runs in three phases, so the router's tables (NAT above all,
//! written per packet) need not be held with the bridges': [`bridge_phase`]
//! (bridges), [`router_phase`] (router only: it decides, and resolves each
//! egress interface to its port), [`egress_phase`] (bridges again, for what
//! the router sends into them). The worker takes each phase's lock on its
//! own; [`process`] runs all three on one [`Fabric`] (tests, fuzzing).

use crate::bridge::{Bridge, Learn, PortId, Verdict as L2};
use crate::packet::Frame;
use crate::port::TxItem;
use crate::router::{Orig, RifId, RifKind, Router, Verdict as R3};
use crate::stats::{DropReason, PortStats};

/// What a port is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attach {
    /// Nothing (a free slot).
    #[default]
    None,
    /// A member of this bridge.
    Bridge(usize),
    /// The internal port of router interface `rif` on `bridge`.
    Svi { bridge: usize, rif: RifId },
    /// The TUN device of router interface `rif`.
    Tun(RifId),
}

impl Attach {
    /// The bridge it is a member of.
    pub fn bridge(self) -> Option<usize> {
        match self {
            Attach::Bridge(b) | Attach::Svi { bridge: b, .. } => Some(b),
            _ => None,
        }
    }

    /// The router interface it carries.
    pub fn rif(self) -> Option<RifId> {
        match self {
            Attach::Svi { rif, .. } | Attach::Tun(rif) => Some(rif),
            _ => None,
        }
    }

    fn is_svi(self) -> bool {
        matches!(self, Attach::Svi { .. })
    }
}

/// The tables a batch is decided against.
pub struct Fabric<'a> {
    pub bridges: &'a mut [Option<Bridge>],
    /// By PortId.
    pub attach: &'a [Attach],
    /// Operational state by PortId.
    pub up: &'a [bool],
    pub router: &'a mut Router,
}

/// The bridging part of the tables (what [`bridge_phase`] and
/// [`egress_phase`] read).
pub struct Switch<'a> {
    pub bridges: &'a mut [Option<Bridge>],
    /// By PortId.
    pub attach: &'a [Attach],
    /// Operational state by PortId.
    pub up: &'a [bool],
}

/// A frame the router sends out of an interface, resolved to the port
/// that carries it.
#[derive(Debug, Clone, Copy)]
struct Egress {
    /// A slot of the arena (else of the received batch).
    orig: bool,
    idx: u16,
    pid: PortId,
    kind: RifKind,
}

/// Where each frame of a batch goes, and the frames the switch originates.
pub struct Plan {
    /// Items naming slots of the received batch, by output port.
    pub txq: Vec<Vec<TxItem>>,
    /// Items naming slots of [`Plan::orig`], by output port.
    pub txq_orig: Vec<Vec<TxItem>>,
    /// Ports with items, each once.
    pub dirty: Vec<PortId>,
    pub orig: Orig,
    /// (batch slot, internal or TUN port, its interface, owned) for the
    /// router.
    to_router: Vec<(u16, PortId, RifId, bool)>,
    /// What the router sends, for the egress phase.
    egress: Vec<Egress>,
    /// NAT flow keys of the router's frames, for prefetching.
    nat_keys: Vec<crate::router::nat::FlowKey>,
}

impl Plan {
    /// A plan for up to `ports` ports with an arena of `orig` frames.
    pub fn new(ports: usize, batch: usize, orig: usize) -> Plan {
        Plan {
            txq: (0..ports).map(|_| Vec::with_capacity(batch)).collect(),
            txq_orig: (0..ports).map(|_| Vec::new()).collect(),
            dirty: Vec::with_capacity(ports),
            orig: Orig::new(orig),
            to_router: Vec::with_capacity(batch * 2),
            egress: Vec::with_capacity(batch * 2 + orig),
            nat_keys: Vec::with_capacity(batch * 2),
        }
    }

    /// Empties the queues after they were sent.
    pub fn clear(&mut self) {
        for p in self.dirty.drain(..) {
            self.txq[p as usize].clear();
            self.txq_orig[p as usize].clear();
        }
    }
}

/// Queues `item` for `out`.
#[inline]
fn push(
    txq: &mut [Vec<TxItem>],
    other: &[Vec<TxItem>],
    dirty: &mut Vec<PortId>,
    out: PortId,
    item: TxItem,
) {
    let o = out as usize;
    if txq[o].is_empty() && other[o].is_empty() {
        dirty.push(out);
    }
    txq[o].push(item);
}

/// Decides a batch of `frames` received on `ingress` (slots with a receive
/// error carry it in `rx_drop`), filling `plan`: the three phases in a row.
/// Counters go to `stats` (by PortId).
pub fn process(
    fab: &mut Fabric,
    ingress: PortId,
    frames: &mut [Frame],
    now: u64,
    stats: &mut [PortStats],
    plan: &mut Plan,
) {
    let mut sw = Switch {
        bridges: fab.bridges,
        attach: fab.attach,
        up: fab.up,
    };
    if bridge_phase(&mut sw, ingress, frames, now, stats, plan) {
        router_phase(fab.router, frames, now, stats, plan);
        let mut sw = Switch {
            bridges: fab.bridges,
            attach: fab.attach,
            up: fab.up,
        };
        egress_phase(&mut sw, frames, now, stats, plan);
    }
}

/// Runs the router's timers (ARP retries, NAT expiry) and plans what they
/// send: the router phase's part, then [`egress_phase`].
pub fn timers(fab: &mut Fabric, now: u64, stats: &mut [PortStats], plan: &mut Plan) {
    router_timers(fab.router, now, stats, plan);
    let mut sw = Switch {
        bridges: fab.bridges,
        attach: fab.attach,
        up: fab.up,
    };
    egress_phase(&mut sw, &[], now, stats, plan);
}

/// The router's timers, under the router's lock alone; true if
/// [`egress_phase`] has frames to send.
pub fn router_timers(
    router: &mut Router,
    now: u64,
    stats: &mut [PortStats],
    plan: &mut Plan,
) -> bool {
    plan.orig.reset();
    plan.to_router.clear();
    plan.egress.clear();
    router.tick(now, &mut plan.orig);
    collect_orig(router, stats, plan);
    !plan.egress.is_empty()
}

/// Phase one, under the bridges' lock: bridges decide the batch; frames for
/// router interfaces are set aside. True if [`router_phase`] has work.
pub fn bridge_phase(
    sw: &mut Switch,
    ingress: PortId,
    frames: &[Frame],
    now: u64,
    stats: &mut [PortStats],
    plan: &mut Plan,
) -> bool {
    plan.orig.reset();
    plan.to_router.clear();
    plan.egress.clear();
    match sw.attach.get(ingress as usize).copied() {
        Some(Attach::Bridge(bi)) => bridge_batch(sw, bi, ingress, frames, now, stats, plan),
        Some(Attach::Tun(rif)) => {
            let st = &mut stats[ingress as usize];
            for (i, f) in frames.iter().enumerate() {
                if let Some(r) = f.rx_drop {
                    st.drop(r);
                    continue;
                }
                st.rx_packets += 1;
                st.rx_bytes += f.len() as u64;
                plan.to_router.push((i as u16, ingress, rif, true));
            }
        }
        _ => {}
    }
    !plan.to_router.is_empty()
}

fn bridge_batch(
    fab: &mut Switch,
    bi: usize,
    pid: PortId,
    frames: &[Frame],
    now: u64,
    stats: &mut [PortStats],
    plan: &mut Plan,
) {
    let Some(bridge) = fab.bridges.get_mut(bi).and_then(Option::as_mut) else {
        return;
    };
    // Start the batch's FDB cache misses together, then decide.
    for f in frames {
        bridge.prefetch_frame(pid, f.data());
    }
    let attach = fab.attach;
    let up = fab.up;
    let Plan {
        txq,
        txq_orig,
        dirty,
        to_router,
        ..
    } = plan;
    for (i, f) in frames.iter().enumerate() {
        let st = &mut stats[pid as usize];
        if let Some(r) = f.rx_drop {
            st.drop(r);
            continue;
        }
        st.rx_packets += 1;
        st.rx_bytes += f.len() as u64;
        let data = f.data();
        let d = bridge.decide_from(pid, f.peer, data, now);
        if d.learn == Some(Learn::Full) {
            st.drop(DropReason::FdbFull);
        }
        let idx = i as u16;
        match d.verdict {
            L2::Unicast(out) => {
                let o = out as usize;
                if !up.get(o).copied().unwrap_or(false) {
                    st.drop(DropReason::EgressDown);
                    continue;
                }
                match bridge.egress(pid, out, &d.class, data) {
                    Ok(_) if attach[o].is_svi() => {
                        if let Some(rif) = attach[o].rif() {
                            to_router.push((idx, out, rif, true));
                        }
                    }
                    Ok(edit) => push(
                        txq,
                        txq_orig,
                        dirty,
                        out,
                        TxItem {
                            idx,
                            edit,
                            peer: d.peer,
                        },
                    ),
                    Err(r) => st.drop(r),
                }
            }
            L2::Flood => {
                let mut sent = false;
                let mut hidden_tag = false;
                for &out in &bridge.ports {
                    let o = out as usize;
                    if out == pid || !up[o] {
                        continue;
                    }
                    // Ports outside the frame's VLAN (or isolated from the
                    // ingress, or blocked) are simply not part of this flood.
                    let edit = match bridge.egress(pid, out, &d.class, data) {
                        Ok(edit) => edit,
                        Err(DropReason::DoubleTagged) => {
                            hidden_tag = true;
                            continue;
                        }
                        Err(_) => continue,
                    };
                    if let (true, Some(rif)) = (attach[o].is_svi(), attach[o].rif()) {
                        to_router.push((idx, out, rif, false));
                    } else {
                        push(txq, txq_orig, dirty, out, TxItem { idx, edit, peer: 0 });
                    }
                    sent = true;
                }
                if !sent {
                    stats[pid as usize].drop(if hidden_tag {
                        DropReason::DoubleTagged
                    } else {
                        DropReason::NoEgress
                    });
                }
            }
            L2::Drop(r) => st.drop(r),
            L2::Local => {}
        }
    }
}

/// Phase two, under the router's lock alone: the router takes its frames
/// (rewriting owned ones in place) and originates its own; each frame to
/// send is resolved to the port of its egress interface. True if
/// [`egress_phase`] has frames to send.
pub fn router_phase(
    router: &mut Router,
    frames: &mut [Frame],
    now: u64,
    stats: &mut [PortStats],
    plan: &mut Plan,
) -> bool {
    // Start the batch's NAT cache misses together, a step at a time
    // (index slots, flows, mappings), then route.
    plan.nat_keys.clear();
    if plan.to_router.len() > 1 {
        use crate::router::nat::PrefetchStep;
        for &(idx, _, rif, owned) in &plan.to_router {
            if let (true, Some(f)) = (owned, frames.get(usize::from(idx))) {
                if let Some(k) = router.nat_key(rif, f.data()) {
                    plan.nat_keys.push(k);
                }
            }
        }
        for step in [
            PrefetchStep::Index,
            PrefetchStep::Flow,
            PrefetchStep::Mapping,
        ] {
            for k in &plan.nat_keys {
                router.nat.prefetch_key(k, step);
            }
        }
    }
    for k in 0..plan.to_router.len() {
        let (idx, pid, rif, owned) = plan.to_router[k];
        let Some(f) = frames.get_mut(usize::from(idx)) else {
            continue;
        };
        if router
            .rif(rif)
            .is_some_and(|r| matches!(r.kind, RifKind::Svi { .. }))
        {
            let st = &mut stats[pid as usize];
            st.rx_packets += 1;
            st.rx_bytes += f.len() as u64;
        }
        match router.receive(rif, f, owned, now, &mut plan.orig) {
            R3::Forward(out) => match router.rif(out) {
                Some(r) => plan.egress.push(Egress {
                    orig: false,
                    idx,
                    pid: r.pid,
                    kind: r.kind,
                }),
                None => stats[pid as usize].drop(DropReason::NoRoute),
            },
            R3::Consumed => {}
            R3::Drop(r) => stats[pid as usize].drop(r),
        }
    }
    collect_orig(router, stats, plan);
    !plan.egress.is_empty()
}

/// Resolves what the router originated to ports, and counts its drops.
fn collect_orig(router: &Router, stats: &mut [PortStats], plan: &mut Plan) {
    for &(slot, rif) in &plan.orig.sent {
        if let Some(r) = router.rif(rif) {
            plan.egress.push(Egress {
                orig: true,
                idx: slot,
                pid: r.pid,
                kind: r.kind,
            });
        }
    }
    for &(rif, reason, n) in &plan.orig.drops {
        if let Some(pid) = router.rif(rif).map(|r| r.pid) {
            stats[pid as usize].drop_n(reason, n);
        }
    }
}

/// Phase three, under the bridges' lock again: what the router sends
/// leaves through its TUN port, or into its bridge as if received on the
/// interface's internal port.
pub fn egress_phase(
    sw: &mut Switch,
    frames: &[Frame],
    now: u64,
    stats: &mut [PortStats],
    plan: &mut Plan,
) {
    let Plan {
        txq,
        txq_orig,
        dirty,
        orig,
        egress,
        ..
    } = plan;
    for e in egress.iter() {
        if e.orig {
            to_rif(sw, e, &orig.frames, now, stats, txq_orig, txq, dirty);
        } else {
            to_rif(sw, e, frames, now, stats, txq, txq_orig, dirty);
        }
    }
}

/// Plans one frame out of a router interface's port. `txq` is the queue
/// set `frames` belongs to, `other` the other one (for dirty marks).
#[allow(clippy::too_many_arguments)]
fn to_rif(
    sw: &mut Switch,
    e: &Egress,
    frames: &[Frame],
    now: u64,
    stats: &mut [PortStats],
    txq: &mut [Vec<TxItem>],
    other: &mut [Vec<TxItem>],
    dirty: &mut Vec<PortId>,
) {
    let (pid, idx) = (e.pid, e.idx);
    let Some(f) = frames.get(usize::from(idx)) else {
        return;
    };
    let p = pid as usize;
    if p >= stats.len() {
        return;
    }
    if sw.attach.get(p).and_then(|a| a.rif()).is_none() {
        // The interface went away between the phases.
        stats[p].drop(DropReason::EgressDown);
        return;
    }
    match e.kind {
        RifKind::Tun => {
            if !sw.up.get(p).copied().unwrap_or(false) {
                stats[p].drop(DropReason::EgressDown);
                return;
            }
            push(
                txq,
                other,
                dirty,
                pid,
                TxItem {
                    idx,
                    edit: crate::bridge::vlan::TagEdit::None,
                    peer: 0,
                },
            );
        }
        RifKind::Svi { bridge, .. } => {
            let Some(b) = sw.bridges.get_mut(bridge).and_then(Option::as_mut) else {
                stats[p].drop(DropReason::NoEgress);
                return;
            };
            let data = f.data();
            stats[p].tx_packets += 1;
            stats[p].tx_bytes += data.len() as u64;
            let d = b.decide(pid, data, now);
            match d.verdict {
                L2::Unicast(out) => {
                    let o = out as usize;
                    if sw.attach[o].is_svi() {
                        // One router interface to another through a bridge:
                        // the router would have routed it directly.
                        stats[p].drop(DropReason::NoEgress);
                    } else if !sw.up[o] {
                        stats[p].drop(DropReason::EgressDown);
                    } else {
                        match b.egress(pid, out, &d.class, data) {
                            Ok(edit) => push(
                                txq,
                                other,
                                dirty,
                                out,
                                TxItem {
                                    idx,
                                    edit,
                                    peer: d.peer,
                                },
                            ),
                            Err(r) => stats[p].drop(r),
                        }
                    }
                }
                L2::Flood => {
                    let mut sent = false;
                    for &out in &b.ports {
                        let o = out as usize;
                        if out == pid || !sw.up[o] || sw.attach[o].is_svi() {
                            continue;
                        }
                        if let Ok(edit) = b.egress(pid, out, &d.class, data) {
                            push(txq, other, dirty, out, TxItem { idx, edit, peer: 0 });
                            sent = true;
                        }
                    }
                    if !sent {
                        stats[p].drop(DropReason::NoEgress);
                    }
                }
                L2::Drop(r) => stats[p].drop(r),
                L2::Local => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
