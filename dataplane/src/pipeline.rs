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

/// Where each frame of a batch goes, and the frames the switch originates.
pub struct Plan {
    /// Items naming slots of the received batch, by output port.
    pub txq: Vec<Vec<TxItem>>,
    /// Items naming slots of [`Plan::orig`], by output port.
    pub txq_orig: Vec<Vec<TxItem>>,
    /// Ports with items, each once.
    pub dirty: Vec<PortId>,
    pub orig: Orig,
    /// (batch slot, internal or TUN port, owned) for the router.
    to_router: Vec<(u16, PortId, bool)>,
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
/// error carry it in `rx_drop`), filling `plan`. Counters go to `stats`
/// (by PortId).
pub fn process(
    fab: &mut Fabric,
    ingress: PortId,
    frames: &mut [Frame],
    now: u64,
    stats: &mut [PortStats],
    plan: &mut Plan,
) {
    plan.orig.reset();
    plan.to_router.clear();
    match fab.attach.get(ingress as usize).copied() {
        Some(Attach::Bridge(bi)) => bridge_batch(fab, bi, ingress, frames, now, stats, plan),
        Some(Attach::Tun(_)) => {
            let st = &mut stats[ingress as usize];
            for (i, f) in frames.iter().enumerate() {
                if let Some(r) = f.rx_drop {
                    st.drop(r);
                    continue;
                }
                st.rx_packets += 1;
                st.rx_bytes += f.len() as u64;
                plan.to_router.push((i as u16, ingress, true));
            }
        }
        _ => return,
    }
    router_batch(fab, frames, now, stats, plan);
    emit_orig(fab, frames, now, stats, plan);
}

/// Runs the router's timers (ARP retries, NAT expiry) and plans what they
/// send.
pub fn timers(fab: &mut Fabric, now: u64, stats: &mut [PortStats], plan: &mut Plan) {
    plan.orig.reset();
    plan.to_router.clear();
    fab.router.tick(now, &mut plan.orig);
    emit_orig(fab, &mut [], now, stats, plan);
}

fn bridge_batch(
    fab: &mut Fabric,
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
                    Ok(_) if attach[o].is_svi() => to_router.push((idx, out, true)),
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
                    if attach[o].is_svi() {
                        to_router.push((idx, out, false));
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

fn router_batch(
    fab: &mut Fabric,
    frames: &mut [Frame],
    now: u64,
    stats: &mut [PortStats],
    plan: &mut Plan,
) {
    // Start the batch's NAT cache misses together, a step at a time
    // (index slots, flows, mappings), then route.
    plan.nat_keys.clear();
    if plan.to_router.len() > 1 {
        use crate::router::nat::PrefetchStep;
        for &(idx, pid, owned) in &plan.to_router {
            if let (true, Some(rif), Some(f)) = (
                owned,
                fab.attach[pid as usize].rif(),
                frames.get(usize::from(idx)),
            ) {
                if let Some(k) = fab.router.nat_key(rif, f.data()) {
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
                fab.router.nat.prefetch_key(k, step);
            }
        }
    }
    for k in 0..plan.to_router.len() {
        let (idx, pid, owned) = plan.to_router[k];
        let Some(rif) = fab.attach[pid as usize].rif() else {
            continue;
        };
        let Some(f) = frames.get_mut(usize::from(idx)) else {
            continue;
        };
        if fab.attach[pid as usize].is_svi() {
            let st = &mut stats[pid as usize];
            st.rx_packets += 1;
            st.rx_bytes += f.len() as u64;
        }
        match fab.router.receive(rif, f, owned, now, &mut plan.orig) {
            R3::Forward(out) => {
                let Plan {
                    txq,
                    txq_orig,
                    dirty,
                    ..
                } = plan;
                to_rif(fab, out, frames, idx, now, stats, txq, txq_orig, dirty);
            }
            R3::Consumed => {}
            R3::Drop(r) => stats[pid as usize].drop(r),
        }
    }
}

/// Sends what the router originated, and counts its drops.
fn emit_orig(
    fab: &mut Fabric,
    _frames: &mut [Frame],
    now: u64,
    stats: &mut [PortStats],
    plan: &mut Plan,
) {
    let Plan {
        txq,
        txq_orig,
        dirty,
        orig,
        ..
    } = plan;
    for k in 0..orig.sent.len() {
        let (slot, rif) = orig.sent[k];
        to_rif(
            fab,
            rif,
            &orig.frames,
            slot,
            now,
            stats,
            txq_orig,
            txq,
            dirty,
        );
    }
    for &(rif, r) in &orig.drops {
        if let Some(pid) = fab.router.rif(rif).map(|r| r.pid) {
            stats[pid as usize].drop(r);
        }
    }
}

/// Plans `frames[idx]` out of router interface `rif`: straight to its TUN,
/// or into its bridge as if received on its internal port. `txq` is the
/// queue set `frames` belongs to, `other` the other one (for dirty marks).
#[allow(clippy::too_many_arguments)]
fn to_rif(
    fab: &mut Fabric,
    rif: RifId,
    frames: &[Frame],
    idx: u16,
    now: u64,
    stats: &mut [PortStats],
    txq: &mut [Vec<TxItem>],
    other: &mut [Vec<TxItem>],
    dirty: &mut Vec<PortId>,
) {
    let Some(r) = fab.router.rif(rif) else { return };
    let (pid, kind) = (r.pid, r.kind);
    let Some(f) = frames.get(usize::from(idx)) else {
        return;
    };
    let p = pid as usize;
    match kind {
        RifKind::Tun => {
            if !fab.up.get(p).copied().unwrap_or(false) {
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
            let Some(b) = fab.bridges.get_mut(bridge).and_then(Option::as_mut) else {
                return;
            };
            let data = f.data();
            stats[p].tx_packets += 1;
            stats[p].tx_bytes += data.len() as u64;
            let d = b.decide(pid, data, now);
            match d.verdict {
                L2::Unicast(out) => {
                    let o = out as usize;
                    if fab.attach[o].is_svi() {
                        // One router interface to another through a bridge:
                        // the router would have routed it directly.
                        stats[p].drop(DropReason::NoEgress);
                    } else if !fab.up[o] {
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
                        if out == pid || !fab.up[o] || fab.attach[o].is_svi() {
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
