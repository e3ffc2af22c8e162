//! `vswitchctl trace` past the bridge: what the router would do with an
//! IPv4 packet that reached one of its interfaces. Reads only (no ARP sent,
//! no NAT flow made, no counter moved).

use super::{RifId, Router};
use crate::bridge::trace::Step;
use std::net::Ipv4Addr;

/// The router's part of a trace: its steps, and a verdict word
/// (`forward`, `local` or `drop`) with a drop reason name.
pub struct RouterTrace {
    pub steps: Vec<Step>,
    pub verdict: &'static str,
    pub drop_reason: Option<&'static str>,
}

impl Router {
    /// Traces an IPv4 packet from `src` to `dst` with TTL `ttl` that
    /// arrived on interface `rif` at `now`.
    pub fn trace(
        &self,
        rif: RifId,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ttl: u8,
        now: u64,
    ) -> RouterTrace {
        let mut steps = Vec::new();
        let mut step = |stage: &'static str, detail: String| steps.push(Step { stage, detail });
        let name = |id: RifId| {
            self.rif(id)
                .map_or_else(|| format!("rif {id}"), |r| r.name.clone())
        };
        step(
            "router",
            format!("into {} ({src} > {dst}, TTL {ttl})", name(rif)),
        );
        if let Some(l) = self.local(u32::from(dst)) {
            step(
                "router",
                format!("{dst} is the address of {}: for the router itself", name(l)),
            );
            return RouterTrace {
                steps,
                verdict: "local",
                drop_reason: None,
            };
        }
        let Some((prefix, nh)) = self.routes.lookup_with_prefix(u32::from(dst)) else {
            step(
                "route",
                format!("no route to {dst}: ICMP network unreachable back"),
            );
            return RouterTrace {
                steps,
                verdict: "drop",
                drop_reason: Some("no_route"),
            };
        };
        let next = if nh.gw == 0 {
            dst
        } else {
            Ipv4Addr::from(nh.gw)
        };
        step(
            "route",
            if nh.gw == 0 {
                format!("{prefix} on {} (connected)", name(nh.rif))
            } else {
                format!("{prefix} via {next} on {}", name(nh.rif))
            },
        );
        if ttl <= 1 {
            step(
                "ttl",
                format!("TTL {ttl} would reach 0: ICMP time exceeded back"),
            );
            return RouterTrace {
                steps,
                verdict: "drop",
                drop_reason: Some("ttl_exceeded"),
            };
        }
        step("ttl", format!("{ttl} -> {}", ttl - 1));
        let neigh = self
            .neigh
            .entries(now)
            .into_iter()
            .find(|n| n.rif == nh.rif && n.ip == u32::from(next));
        step(
            "neighbour",
            match neigh {
                Some(n) => match n.mac {
                    Some(mac) => format!("{next} is {mac} ({})", n.state.name()),
                    None => format!("{next}: {} (packets wait for ARP)", n.state.name()),
                },
                None => format!("{next} unknown: ARP would ask for it, the packet waits"),
            },
        );
        if let Some(r) = self
            .snat_rules()
            .find(|r| self.rif_id(&r.out) == Some(nh.rif))
        {
            step(
                "nat",
                format!(
                    "source NAT out of {}{}",
                    r.out,
                    r.to.as_deref()
                        .map_or(" (masquerade)".to_string(), |t| format!(" to {t}"))
                ),
            );
        }
        RouterTrace {
            steps,
            verdict: "forward",
            drop_reason: None,
        }
    }

    fn rif_id(&self, name: &str) -> Option<RifId> {
        self.rifs().find(|(_, r)| r.name == name).map(|(id, _)| id)
    }
}
