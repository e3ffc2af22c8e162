//! Per-port counters, and the one list of reasons a frame is dropped.

use serde_json::{json, Map, Value};

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Why a frame was dropped (or, for `fdb_full`, not learned). Declared
        /// once here; counted per port; printed by `vswitchctl stats`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[$doc])* $variant,)*
        }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();

            /// The snake_case name shown in `stats`.
            pub fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header, or a receive that did not fit.
    Malformed => "malformed",
    /// Source address is multicast/broadcast or all-zero (never a station).
    InvalidSrcMac => "invalid_src_mac",
    /// IEEE 802.1D reserved group address (01:80:C2:00:00:0x) a bridge must
    /// not forward (unless the bridge's group_fwd_mask relays it).
    LinkLocal => "link_local",
    /// Storm control: broadcast, multicast or unknown unicast beyond the
    /// port's `--storm-limit` rate.
    StormLimit => "storm_limit",
    /// Egress impairment (`--loss`): lost on purpose.
    ImpairLoss => "impair_loss",
    /// Egress impairment: the port's delay queue (`--limit`) was full.
    ImpairQueueFull => "impair_queue_full",
    /// The destination was learned on the ingress port: a bridge never sends a frame back.
    SamePort => "same_port",
    /// A VLAN the port does not carry, a VLAN-tagged frame on an access port,
    /// an untagged frame on a trunk without a native VLAN, or VID 4095.
    VlanFiltered => "vlan_filtered",
    /// Double-tagged frame that would be read as another VLAN once its outer
    /// tag is removed (the VLAN-hopping attack).
    DoubleTagged => "double_tagged",
    /// Ingress and egress ports are both isolated.
    Isolated => "isolated",
    /// The source address was not learned because the FDB is at its limit
    /// (the frame itself is still forwarded).
    FdbFull => "fdb_full",
    /// A new source address beyond the port's `--mac-limit` (port security).
    MacLimit => "mac_limit",
    /// The port is not forwarding in spanning tree (blocking, listening or
    /// learning), on ingress or toward the egress.
    StpBlocking => "stp_blocking",
    /// BPDU guard: a BPDU arrived on a guarded port (which then shuts down),
    /// or a frame met a port BPDU guard has shut.
    BpduGuard => "bpdu_guard",
    /// Nowhere to send: no other port is up on the bridge.
    NoEgress => "no_egress",
    /// Destination port is down.
    EgressDown => "egress_down",
    /// Egress port would block (socket buffer or queue full).
    TxQueueFull => "tx_queue_full",
    /// Egress device refused the frame (link down, too big, ...).
    TxError => "tx_error",
    /// The port's interface went away or reported an error on receive.
    PortDown => "port_down",
    /// The kernel dropped frames queued toward the switch before it read them
    /// (AF_PACKET socket buffer full, TAP queue full): the switch fell behind.
    RxOverflow => "rx_overflow",
    /// VXLAN: a datagram without a valid VXLAN header (I flag clear, reserved
    /// bits set, too short).
    VxlanMalformed => "vxlan_malformed",
    /// VXLAN: the datagram's VNI is not served by any port on its underlay
    /// address and UDP port.
    VniUnknown => "vni_unknown",
    /// VXLAN: from a VTEP that is not a configured remote (and the port does
    /// not learn remotes), or the remote table is full.
    UnknownVtep => "unknown_vtep",
    /// The egress cannot take the frame's offload (GSO or partial checksum)
    /// and software segmentation refused it (bad or unsupported headers).
    OffloadFailed => "offload_failed",
    /// Router: no route to the destination (ICMP network unreachable sent).
    NoRoute => "no_route",
    /// Router: TTL would reach 0 (ICMP time exceeded sent).
    TtlExceeded => "ttl_exceeded",
    /// Router: the next hop did not answer ARP (ICMP host unreachable sent).
    ArpUnresolved => "arp_unresolved",
    /// Router: too many packets already wait for this next hop's ARP answer.
    ArpQueueFull => "arp_queue_full",
    /// Router: the neighbour table is full of live entries.
    NeighTableFull => "neigh_table_full",
    /// Router: larger than the egress MTU with DF set (ICMP fragmentation
    /// needed sent, for path MTU discovery).
    FragNeeded => "frag_needed",
    /// Router: larger than the egress MTU without DF (vswitch does not
    /// fragment).
    TooBig => "too_big",
    /// Router: a source address no host may have (multicast, broadcast,
    /// 0.0.0.0/8, loopback; RFC 1812 §5.3.7), or a multicast destination.
    MartianAddress => "martian_address",
    /// Router: for the router itself, but neither ICMP echo nor a reply of a
    /// NAT flow.
    LocalUnsupported => "local_unsupported",
    /// Router: an Ethernet type the router does not route (IPv6, ...): not
    /// IPv4 or ARP.
    NotIpv4 => "not_ip",
    /// Router: an ICMP error the rate limit suppressed (icmp_ratelimit).
    IcmpRateLimited => "icmp_rate_limited",
    /// SNAT: the flow table is full; new flows are refused.
    NatTableFull => "nat_table_full",
    /// SNAT: no outside port was free for a new flow.
    NatPortsExhausted => "nat_ports_exhausted",
    /// SNAT: an IP fragment (no reassembly).
    NatFragment => "nat_fragment",
    /// SNAT: a protocol (or ICMP type) SNAT does not translate.
    NatUnsupported => "nat_unsupported",
    /// SNAT: an inside host's ICMP error about no tracked flow.
    NatNoFlow => "nat_no_flow",
    /// SNAT: to an outside address, not a reply of a tracked flow
    /// (unsolicited inbound traffic is not forwarded inside).
    NatUnsolicited => "nat_unsolicited",
    /// vhost-user: a guest RX buffer outside guest memory, read-only or too
    /// short for the frame (returned to the guest unused).
    VhostBadDesc => "vhost_bad_desc",
}

/// Counters of one port. Owned by the worker that polls the port.
#[derive(Debug, Clone)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: [u64; DropReason::COUNT],
}

impl Default for PortStats {
    fn default() -> Self {
        PortStats {
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            drops: [0; DropReason::COUNT],
        }
    }
}

impl PortStats {
    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }

    #[inline]
    pub fn drop_n(&mut self, r: DropReason, n: u64) {
        self.drops[r as usize] += n;
    }

    /// Adds another counter set (one worker's share) to this one.
    pub fn add(&mut self, o: &PortStats) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a += b;
        }
    }

    pub fn get(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }

    /// `{"port": .., "rx_packets": .., ..., "drops": {"reason": n, ...}}`; every
    /// reason is listed, zero or not, so scripts can index it.
    pub fn to_json(&self, port: &str) -> Value {
        let mut drops = Map::new();
        for r in DropReason::ALL {
            drops.insert(r.name().to_string(), json!(self.get(*r)));
        }
        json!({
            "port": port,
            "rx_packets": self.rx_packets,
            "rx_bytes": self.rx_bytes,
            "tx_packets": self.tx_packets,
            "tx_bytes": self.tx_bytes,
            "drops": drops,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in DropReason::ALL {
            let n = r.name();
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
            assert!(seen.insert(n));
        }
    }

    #[test]
    fn json_lists_all_reasons() {
        let mut s = PortStats::default();
        s.drop(DropReason::FdbFull);
        s.drop(DropReason::FdbFull);
        let v = s.to_json("p1");
        assert_eq!(v["drops"]["fdb_full"], 2);
        assert_eq!(v["drops"]["malformed"], 0);
        assert_eq!(v["port"], "p1");
    }
}
