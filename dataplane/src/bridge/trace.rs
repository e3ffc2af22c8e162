//! `vswitchctl trace`: one frame through the bridge's forwarding decision
//! with no side effects (nothing learned, no spanning-tree or guard state
//! touched, no token taken, no counter moved), as Open vSwitch's
//! `ofproto/trace` and VPP's `trace` explain a decision step by step.
//!
//! It follows [`Bridge::decide_from`] and [`Bridge::egress`] step for
//! step, reading where they write; a test checks that both reach the same
//! verdict on the same frames.

use super::vlan::{Classified, TagEdit, VlanMode};
use super::{Bridge, PortId, Verdict, STP_GROUP};
use crate::packet::EthHdr;
use crate::stats::DropReason;

/// One step of the decision: a stage name and what happened there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub stage: &'static str,
    pub detail: String,
}

/// Where the frame would leave, with its tag edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    pub port: PortId,
    pub vlan: u16,
    pub tagged: bool,
}

/// What the bridge would do with a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTrace {
    pub verdict: Verdict,
    /// The VLAN it was classified into (0 before classification).
    pub vlan: u16,
    pub egress: Vec<Egress>,
    pub steps: Vec<Step>,
}

impl Bridge {
    /// Traces `frame` arriving on `ingress` (from tunnel remote `peer`) at
    /// `now_ns`; `name` names ports in the details.
    pub fn trace(
        &self,
        ingress: PortId,
        frame: &[u8],
        now_ns: u64,
        name: &dyn Fn(PortId) -> String,
    ) -> BridgeTrace {
        let mut t = BridgeTrace {
            verdict: Verdict::Drop(DropReason::Malformed),
            vlan: 0,
            egress: Vec::new(),
            steps: Vec::new(),
        };
        let step = |t: &mut BridgeTrace, stage: &'static str, detail: String| {
            t.steps.push(Step { stage, detail });
        };
        let drop = |mut t: BridgeTrace, r: DropReason| {
            t.verdict = Verdict::Drop(r);
            t
        };
        let Some(eth) = EthHdr::parse(frame) else {
            step(
                &mut t,
                "parse",
                format!("{} bytes: shorter than an Ethernet header", frame.len()),
            );
            return drop(t, DropReason::Malformed);
        };
        step(
            &mut t,
            "parse",
            format!(
                "{} > {}, ethertype {:#06x}, {} bytes",
                eth.src,
                eth.dst,
                eth.ethertype,
                frame.len()
            ),
        );
        if !eth.src.is_valid_station() {
            step(
                &mut t,
                "source",
                format!("{} is not a station address", eth.src),
            );
            return drop(t, DropReason::InvalidSrcMac);
        }
        let Some(m) = self.member(ingress) else {
            step(
                &mut t,
                "ingress",
                format!("{} is not a port of {}", name(ingress), self.name),
            );
            return drop(t, DropReason::NoEgress);
        };
        if self.guard_tripped(ingress) {
            step(&mut t, "ingress", "BPDU guard has shut the port".into());
            return drop(t, DropReason::BpduGuard);
        }
        if eth.dst == STP_GROUP {
            if m.bpdu_guard {
                step(
                    &mut t,
                    "stp",
                    "a BPDU on a port with BPDU guard: the port would be shut".into(),
                );
                return drop(t, DropReason::BpduGuard);
            }
            if self.stp.is_some() {
                step(
                    &mut t,
                    "stp",
                    "a BPDU: for the bridge's spanning tree".into(),
                );
                t.verdict = Verdict::Local;
                return t;
            }
        }
        let (learns, forwards) = match &self.stp {
            Some(_) if m.internal => (true, true),
            Some(s) => {
                step(
                    &mut t,
                    "stp",
                    format!(
                        "port {} is {} ({})",
                        name(ingress),
                        s.port_state(ingress).name(),
                        s.port_role(ingress).name()
                    ),
                );
                (s.learns(ingress), s.forwards(ingress))
            }
            None => (true, true),
        };
        if !learns {
            return drop(t, DropReason::StpBlocking);
        }
        let class = match m.vlan.classify(frame) {
            Ok(c) => c,
            Err(r) => {
                step(
                    &mut t,
                    "vlan",
                    format!("{}: refused ({})", mode_text(&m.vlan), r.name()),
                );
                return drop(t, r);
            }
        };
        t.vlan = class.vid;
        step(
            &mut t,
            "vlan",
            format!(
                "{} frame on {} -> VLAN {}",
                if class.tagged { "tagged" } else { "untagged" },
                mode_text(&m.vlan),
                class.vid
            ),
        );
        // As Fdb::learn_from decides: static, refresh, then (for a move or
        // a new station) table full, then the port's limit.
        let mut over_limit = false;
        if m.learning {
            let at_limit = m.mac_limit.is_some_and(|l| self.fdb.port_len(ingress) >= l);
            let src = eth.src;
            let detail = match self.fdb.get(class.vid, src) {
                Some(e) if e.is_static => {
                    format!("{src} is static on {}: not learned", name(e.port))
                }
                Some(e) if e.port == ingress => format!("{src} known on this port: refreshed"),
                Some(e) if at_limit => {
                    over_limit = true;
                    format!(
                        "{src} would move from {}, but {} holds its MAC limit",
                        name(e.port),
                        name(ingress)
                    )
                }
                Some(e) => format!(
                    "{src} would move from {} to {}",
                    name(e.port),
                    name(ingress)
                ),
                None if self.fdb.is_full() => {
                    format!("{src} is new and the FDB is full: not learned (fdb_full)")
                }
                None if at_limit => {
                    over_limit = true;
                    format!("{src} is new and {} holds its MAC limit", name(ingress))
                }
                None => format!(
                    "{src} would be learned on {} in VLAN {}",
                    name(ingress),
                    class.vid
                ),
            };
            step(&mut t, "learn", detail);
        } else {
            step(&mut t, "learn", "learning is off on this port".into());
        }
        if !forwards {
            return drop(t, DropReason::StpBlocking);
        }
        if over_limit {
            return drop(t, DropReason::MacLimit);
        }
        let (verdict, _) = self.forward(ingress, class.vid, eth.dst, now_ns);
        match verdict {
            Verdict::Drop(r) => {
                let why = match r {
                    DropReason::LinkLocal => format!(
                        "{} is an 802.1D reserved group (not in group_fwd_mask {:#06x})",
                        eth.dst, self.settings.group_fwd_mask
                    ),
                    DropReason::SamePort => {
                        format!("{} is behind the ingress port itself", eth.dst)
                    }
                    other => other.name().to_string(),
                };
                step(&mut t, "fdb", why);
                return drop(t, r);
            }
            Verdict::Unicast(p) => {
                let e = self.fdb.get(class.vid, eth.dst);
                let detail = match e {
                    Some(e) if e.is_static => format!("{} -> {} (static)", eth.dst, name(p)),
                    Some(e) => format!(
                        "{} -> {} (learned {} s ago)",
                        eth.dst,
                        name(p),
                        now_ns.saturating_sub(e.last_seen_ns) / 1_000_000_000
                    ),
                    None => format!("{} -> {}", eth.dst, name(p)),
                };
                step(&mut t, "fdb", detail);
                match self.egress(ingress, p, &class, frame) {
                    Ok(edit) => {
                        let e = egress_of(p, &class, edit);
                        step(&mut t, "egress", egress_text(&e, edit, name));
                        t.egress.push(e);
                        t.verdict = Verdict::Unicast(p);
                    }
                    Err(r) => {
                        step(&mut t, "egress", format!("{}: {}", name(p), r.name()));
                        return drop(t, r);
                    }
                }
            }
            _ => {
                let why = if eth.dst.0 == [0xff; 6] {
                    "broadcast"
                } else if eth.dst.is_multicast() {
                    "multicast"
                } else {
                    "unknown unicast"
                };
                step(
                    &mut t,
                    "fdb",
                    format!("{} {}: flood in VLAN {}", why, eth.dst, class.vid),
                );
                if let Some(pps) = m.storm_limit {
                    step(
                        &mut t,
                        "storm",
                        format!(
                            "storm limit {pps}/s on {} (the trace takes no token)",
                            name(ingress)
                        ),
                    );
                }
                for &p in &self.ports {
                    if p == ingress {
                        continue;
                    }
                    match self.egress(ingress, p, &class, frame) {
                        Ok(edit) => {
                            let e = egress_of(p, &class, edit);
                            step(&mut t, "egress", egress_text(&e, edit, name));
                            t.egress.push(e);
                        }
                        Err(r) => {
                            step(&mut t, "egress", format!("{}: not ({})", name(p), r.name()))
                        }
                    }
                }
                t.verdict = Verdict::Flood;
                if t.egress.is_empty() {
                    return drop(t, DropReason::NoEgress);
                }
            }
        }
        t
    }
}

fn egress_of(port: PortId, class: &Classified, edit: TagEdit) -> Egress {
    let tagged = match edit {
        TagEdit::Push(_) | TagEdit::Retag(_) => true,
        TagEdit::Pop => false,
        // Unchanged: it leaves as it came.
        TagEdit::None => class.tagged,
    };
    Egress {
        port,
        vlan: class.vid,
        tagged,
    }
}

fn egress_text(e: &Egress, edit: TagEdit, name: &dyn Fn(PortId) -> String) -> String {
    let how = match edit {
        TagEdit::None => "as it came".to_string(),
        TagEdit::Pop => "tag popped".to_string(),
        other => format!("tagged ({other:?})"),
    };
    format!("{} in VLAN {}: {how}", name(e.port), e.vlan)
}

fn mode_text(m: &VlanMode) -> String {
    match m {
        VlanMode::Access(v) => format!("access port of VLAN {v}"),
        VlanMode::Trunk { vlans, native } => match native {
            Some(n) => format!("trunk ({}, native {n})", vlans.to_ranges()),
            None => format!("trunk ({})", vlans.to_ranges()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::vlan::VlanSet;
    use crate::bridge::{BridgeSettings, Member};

    fn frame(dst: [u8; 6], src: [u8; 6], tag: Option<u16>) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        if let Some(t) = tag {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&t.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(64, 0);
        f
    }

    /// The trace reaches the verdict the real decision does, on frames of
    /// every kind from every port, and changes nothing.
    #[test]
    fn trace_agrees_with_decide() {
        let mut b = Bridge::new("br0", BridgeSettings::default());
        b.add_port(1, Member::default());
        b.add_port(
            2,
            Member {
                vlan: VlanMode::Access(10),
                ..Member::default()
            },
        );
        b.add_port(
            3,
            Member {
                vlan: VlanMode::Trunk {
                    vlans: VlanSet::parse("10,20").unwrap(),
                    native: Some(1),
                },
                ..Member::default()
            },
        );
        b.add_port(
            4,
            Member {
                mac_limit: Some(1),
                ..Member::default()
            },
        );
        for p in 1..=4 {
            b.set_port_up(p, true, 0);
        }
        let name = |p: PortId| format!("p{p}");
        let macs: [[u8; 6]; 5] = [
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            [0xff; 6],
            [1, 0x80, 0xc2, 0, 0, 0x0e],
            [1, 0, 0x5e, 0, 0, 1],
        ];
        let mut n = 0;
        for round in 0..3u64 {
            for port in 1..=4 {
                for tag in [None, Some(10), Some(20), Some(30)] {
                    for (i, &dst) in macs.iter().enumerate() {
                        let src = [2, 0, 0, 0, round as u8 + 1, (port * 10 + i as u32) as u8];
                        let f = frame(dst, src, tag);
                        let now = round * 1_000_000_000;
                        let before = b.fdb.len();
                        let t = b.trace(port, &f, now, &name);
                        assert_eq!(b.fdb.len(), before, "the trace learned");
                        let d = b.decide(port, &f, now);
                        // A flood nobody takes is what the pipeline then
                        // counts as no_egress: the trace says so at once.
                        let same = t.verdict == d.verdict
                            || (t.verdict == Verdict::Drop(DropReason::NoEgress)
                                && d.verdict == Verdict::Flood
                                && t.egress.is_empty());
                        assert!(
                            same,
                            "port {port} tag {tag:?} dst {dst:02x?}: {:?} vs {:?}: {:?}",
                            t.verdict, d.verdict, t.steps
                        );
                        n += 1;
                    }
                }
            }
        }
        assert_eq!(n, 3 * 4 * 4 * 5);
    }
}
