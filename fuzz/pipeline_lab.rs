//! The lab the `pipeline` fuzz target and the routed-pipeline test of
//! `dataplane/tests/robustness.rs` drive (one file, included by both with
//! `#[path]`): a fixed topology built through public APIs, and a reader
//! that turns a byte string into steps (batches of frames into the lab's
//! ports, time steps with the router's timers), checking the plan and the
//! tables' bounds after each.
//!
//! The lab: bridge `brin` with hosts c1 (port 1) and c2 (2), rif `gw`
//! 10.0.1.1/24 (3), a trunk (7) carrying VLANs 10 and 20 with rifs `v10`
//! 10.10.0.1/24 (8) and `v20` 10.20.0.1/24 (9, SNAT to 10.20.0.100-101 for
//! 10.0.1.0/24), a port that is down (11), a tunnel port (12: frames from
//! one of four remotes, as a VXLAN port's); bridge `brout` with srv (4) and
//! srv2 (10), rif `up` 10.0.2.1/24 (5, masquerade), with spanning tree on
//! (restarted and brought to forwarding for each input); TUN rif `vpn`
//! 10.0.8.1/24 (6, MTU 1400). Static routes: default via srv, 10.0.50.0/24
//! via an address nobody answers for, 10.0.9.0/24 out of `vpn`. Small
//! limits (16 neighbours, 32 NAT flows, 64 learned MACs per bridge) and
//! short NAT timeouts, so the limits and expiry are reached. Bridged frames
//! are checked to stay in their bridge and VLAN, off their ingress port and
//! off ports spanning tree blocks.
#![allow(dead_code)]

use dataplane::bridge::vlan::{VlanMode, VlanSet};
use dataplane::bridge::{Bridge, BridgeSettings, Member, PortId};
use dataplane::config::{RifConfig, RifType, RouteConfig, SnatConfig};
use dataplane::packet::{Frame, VnetHdr, EDIT_PREFIX_MAX};
use dataplane::pipeline::{process, timers, Attach, Fabric, Plan};
use dataplane::router::nat::{Nat, Timeouts};
use dataplane::router::neigh::{Neigh, QUEUE_MAX_BYTES};
use dataplane::router::rif::stable_mac;
use dataplane::router::{Rif, RifKind, Router};
use dataplane::stats::{DropReason, PortStats};
use dataplane::wire::{self, arp::Arp, eth, ipv4};
use dataplane::MacAddr;

pub const NPORTS: usize = 16;
pub const BATCH: usize = 8;
pub const NEIGH_MAX: usize = 16;
pub const NAT_MAX: usize = 32;
pub const FDB_MAX: u32 = 64;
pub const TUN: PortId = 6;
pub const TRUNK: PortId = 7;
pub const DOWN: PortId = 11;
/// A tunnel port (as a VXLAN port is to the bridge): frames into it come
/// from one of its remotes (`Frame::peer`), and the FDB sends unicast back
/// to that remote.
pub const TUNNEL: PortId = 12;

pub const C1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
pub const C2: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
pub const SRV: MacAddr = MacAddr([2, 0, 0, 0, 0, 4]);
pub const SRV2: MacAddr = MacAddr([2, 0, 0, 0, 0, 5]);
pub const H10: MacAddr = MacAddr([2, 0, 0, 0, 10, 2]);
pub const H20: MacAddr = MacAddr([2, 0, 0, 0, 20, 2]);
pub const C1_IP: [u8; 4] = [10, 0, 1, 2];
pub const SRV_IP: [u8; 4] = [10, 0, 2, 2];
pub const GW_IP: [u8; 4] = [10, 0, 1, 1];
pub const UP_IP: [u8; 4] = [10, 0, 2, 1];

/// Addresses the generated packets use: the lab's hosts and interfaces,
/// SNAT addresses, routed and unrouted destinations, and martians.
pub const ADDRS: [[u8; 4]; 20] = [
    C1_IP,
    [10, 0, 1, 3],
    SRV_IP,
    [10, 0, 2, 3],
    GW_IP,
    UP_IP,
    [10, 0, 8, 1],
    [10, 0, 8, 2],
    [10, 0, 9, 5],
    [10, 10, 0, 2],
    [10, 20, 0, 2],
    [10, 20, 0, 100],
    [10, 0, 50, 1],
    [10, 0, 2, 99],
    [8, 8, 8, 8],
    [10, 0, 1, 255],
    [224, 0, 0, 5],
    [255, 255, 255, 255],
    [0, 0, 0, 0],
    [127, 0, 0, 1],
];
pub const L4_PORTS: [u16; 6] = [53, 40000, 40001, 1024, 0, 65535];

pub struct Lab {
    pub bridges: Vec<Option<Bridge>>,
    pub attach: Vec<Attach>,
    pub up: Vec<bool>,
    pub router: Router,
    pub stats: Vec<PortStats>,
    pub now: u64,
    /// The rif MACs (a routed or originated frame's source is one).
    pub rif_macs: Vec<MacAddr>,
}

pub fn svi(lab: &mut Lab, name: &str, bridge: usize, pid: PortId, vlan: u16, addr: &str) {
    let cfg = RifConfig {
        name: name.into(),
        kind: RifType::Bridge,
        bridge: Some(["brin", "brout"][bridge].into()),
        vlan: Some(vlan),
        addr: addr.parse().unwrap(),
        mac: None,
        netns: None,
        ifname: None,
        mtu: None,
    };
    let mac = stable_mac(name);
    let id = lab
        .router
        .add_rif(Rif {
            name: name.into(),
            kind: RifKind::Svi { bridge, vlan },
            addr: cfg.addr,
            mac,
            mtu: 1500,
            pid,
            cfg,
        })
        .unwrap();
    lab.attach[pid as usize] = Attach::Svi { bridge, rif: id };
    let b = lab.bridges[bridge].as_mut().unwrap();
    b.add_port(pid, Member::internal(vlan));
    b.fdb.add_static(vlan, mac, pid).unwrap();
    lab.rif_macs.push(mac);
}

impl Lab {
    pub fn new() -> Lab {
        let settings = BridgeSettings {
            fdb_max: Some(FDB_MAX),
            ..Default::default()
        };
        let mut l = Lab {
            bridges: vec![
                Some(Bridge::new("brin", settings.clone())),
                Some(Bridge::new("brout", settings)),
            ],
            attach: vec![Attach::None; NPORTS],
            up: vec![true; NPORTS],
            router: Router::new(),
            stats: vec![PortStats::default(); NPORTS],
            now: 1_000_000_000,
            rif_macs: Vec::new(),
        };
        l.reset();
        for (p, b) in [(1, 0), (2, 0), (DOWN, 0), (4, 1), (10, 1), (TUNNEL, 0)] {
            l.attach[p as usize] = Attach::Bridge(b);
            l.bridges[b]
                .as_mut()
                .unwrap()
                .add_port(p, Member::default());
        }
        l.up[DOWN as usize] = false;
        l.attach[TRUNK as usize] = Attach::Bridge(0);
        l.bridges[0].as_mut().unwrap().add_port(
            TRUNK,
            Member {
                vlan: VlanMode::Trunk {
                    vlans: VlanSet::parse("10,20").unwrap(),
                    native: None,
                },
                ..Member::default()
            },
        );
        svi(&mut l, "gw", 0, 3, 1, "10.0.1.1/24");
        svi(&mut l, "up", 1, 5, 1, "10.0.2.1/24");
        svi(&mut l, "v10", 0, 8, 10, "10.10.0.1/24");
        svi(&mut l, "v20", 0, 9, 20, "10.20.0.1/24");
        let cfg = RifConfig {
            name: "vpn".into(),
            kind: RifType::Tun,
            bridge: None,
            vlan: None,
            addr: "10.0.8.1/24".parse().unwrap(),
            mac: None,
            netns: None,
            ifname: None,
            mtu: None,
        };
        let mac = stable_mac("vpn");
        let id = l
            .router
            .add_rif(Rif {
                name: "vpn".into(),
                kind: RifKind::Tun,
                addr: cfg.addr,
                mac,
                mtu: 1400,
                pid: TUN,
                cfg,
            })
            .unwrap();
        l.attach[TUN as usize] = Attach::Tun(id);
        l.rif_macs.push(mac);
        for (prefix, via, dev) in [
            ("0.0.0.0/0", Some("10.0.2.2"), None),
            ("10.0.50.0/24", Some("10.0.2.99"), None),
            ("10.0.9.0/24", None, Some("vpn")),
        ] {
            l.router
                .add_route(RouteConfig {
                    prefix: prefix.parse().unwrap(),
                    via: via.map(|v| v.parse().unwrap()),
                    dev: dev.map(Into::into),
                })
                .unwrap();
        }
        l.router
            .add_snat(SnatConfig {
                out: "up".into(),
                to: None,
                src: None,
            })
            .unwrap();
        l.router
            .add_snat(SnatConfig {
                out: "v20".into(),
                to: Some("10.20.0.100-10.20.0.101".into()),
                src: Some("10.0.1.0/24".parse().unwrap()),
            })
            .unwrap();
        l
    }

    /// Back to the state after [`Lab::new`] for the next input: empty
    /// neighbour, NAT and learned FDB tables, zero counters, and a clock a
    /// day later (so the ICMP rate limiter is full again). The topology (and
    /// its route table, whose root alone is 256 KiB to build) is kept, unless
    /// the clock nears its end (an input's steps add at most ~150 days):
    /// then it is all built again from time 1 s.
    pub fn reset(&mut self) {
        if self.now > 1 << 60 {
            *self = Lab::new();
            return;
        }
        self.router.neigh = Neigh::new(NEIGH_MAX);
        self.router.nat = Nat::new(
            NAT_MAX,
            Timeouts {
                tcp_established: 300,
                tcp_transitory: 60,
                tcp_reset: 5,
                udp: 30,
                icmp: 20,
            },
        );
        for b in self.bridges.iter_mut().flatten() {
            b.fdb.flush_dynamic(None);
        }
        self.stats.fill(PortStats::default());
        self.now += 86_400_000_000_000;
        // Spanning tree on brout starts afresh, run through its listening
        // and learning states (15 s each) so its ports forward from the
        // input's first step.
        let start = self.now - 40_000_000_000;
        let mut bpdus = Vec::new();
        if let Some(b) = self.bridges[1].as_mut() {
            b.set_stp(false, start);
            b.set_stp(true, start);
            for p in [4, 10] {
                b.set_port_up(p, true, start);
            }
            for t in [start + 16_000_000_000, start + 32_000_000_000, self.now] {
                b.stp_tick(t, &mut bpdus);
            }
        }
    }

    /// The MAC of the rif a host on `port` would send routed traffic to.
    pub fn gw_mac(&self, port: PortId, vlan: u16) -> MacAddr {
        let name = match port {
            4 | 10 => "up",
            TUN => "vpn",
            TRUNK if vlan == 20 => "v20",
            TRUNK => "v10",
            _ => "gw",
        };
        stable_mac(name)
    }

    /// Runs a batch received on `port` through the pipeline (or, for
    /// `None`, a timer run) and checks the plan and the tables.
    pub fn run(&mut self, port: Option<PortId>, frames: &mut [Frame], plan: &mut Plan) {
        let src_macs: Vec<[u8; 6]> = frames
            .iter()
            .map(|f| {
                f.data()
                    .get(6..12)
                    .map_or([0; 6], |m| m.try_into().unwrap())
            })
            .collect();
        let mut fab = Fabric {
            bridges: &mut self.bridges,
            attach: &self.attach,
            up: &self.up,
            router: &mut self.router,
        };
        match port {
            Some(p) => process(&mut fab, p, frames, self.now, &mut self.stats, plan),
            None => {
                // What the worker's timer run does: a part of FDB ageing,
                // then the router's timers.
                let mut bpdus = Vec::new();
                for b in fab.bridges.iter_mut().flatten() {
                    b.stp_tick(self.now, &mut bpdus);
                    b.fdb.age_part(self.now, 10);
                }
                for (_, f) in &bpdus {
                    assert!(
                        dataplane::bridge::stp::parse_bpdu(f).is_ok(),
                        "spanning tree sent a BPDU it cannot parse"
                    );
                }
                timers(&mut fab, self.now, &mut self.stats, plan)
            }
        }
        for &p in &plan.dirty {
            let o = p as usize;
            assert!(o < NPORTS, "output to port {p}");
            assert!(
                !matches!(self.attach[o], Attach::Svi { .. } | Attach::None),
                "output to port {p}: {:?}",
                self.attach[o]
            );
            assert!(self.up[o], "output to port {p}, which is down");
            for (batch, q, from_router) in [
                (&frames[..], &plan.txq[o], false),
                (&plan.orig.frames[..], &plan.txq_orig[o], true),
            ] {
                for it in q {
                    assert!(
                        it.peer == 0 || p == TUNNEL,
                        "a tunnel remote ({}) on port {p}, which is no tunnel",
                        it.peer
                    );
                    let i = usize::from(it.idx);
                    assert!(i < batch.len(), "slot {i} of {}", batch.len());
                    let f = &batch[i];
                    let mut scratch = [0u8; EDIT_PREFIX_MAX];
                    let (n, rest) = f.edited_prefix(it.edit, &mut scratch);
                    assert!(n <= EDIT_PREFIX_MAX && rest <= f.len());
                    let d = f.data();
                    let Some(src) = d.get(6..12) else {
                        assert!(!from_router, "a runt frame from the router");
                        continue;
                    };
                    let routed = from_router
                        || (self.rif_macs.iter().any(|m| m.0 == src)
                            && !self.rif_macs.iter().any(|m| m.0 == src_macs[i]));
                    // A frame that came in with a rif's source address may
                    // have been routed or bridged: the addresses cannot say.
                    let spoofed = !from_router
                        && src_macs
                            .get(i)
                            .is_some_and(|s| self.rif_macs.iter().any(|m| m.0 == *s));
                    if !routed && !spoofed {
                        if let Some(p) = port {
                            self.check_bridged(p, o as PortId, d);
                        }
                    }
                    if routed && d.get(12..14) == Some(&eth::ETHERTYPE_IPV4.to_be_bytes()[..]) {
                        let ip = ipv4::Ipv4::new_checked(&d[eth::HEADER_LEN..])
                            .expect("the router sends well-formed IPv4 headers");
                        assert!(ip.checksum_ok(), "IPv4 header checksum: {d:02x?}");
                        assert!(ip.ttl() > 0, "TTL 0 forwarded: {d:02x?}");
                    }
                }
            }
        }
        plan.clear();
        assert!(self.router.neigh.len() <= NEIGH_MAX);
        assert!(self.router.neigh.queued_bytes() <= QUEUE_MAX_BYTES);
        assert!(
            self.router.nat.len() <= NAT_MAX,
            "{}",
            self.router.nat.len()
        );
        for b in self.bridges.iter().flatten() {
            assert!(b.fdb.dynamic_len() <= FDB_MAX as usize);
        }
    }
}

impl Lab {
    /// A frame bridged from `p` to `o`: stays in its bridge, never goes back
    /// out of its ingress port, never leaves its VLAN, never through a port
    /// spanning tree keeps from forwarding.
    fn check_bridged(&self, p: PortId, o: PortId, frame: &[u8]) {
        let Attach::Bridge(b) = self.attach[p as usize] else {
            return;
        };
        assert_ne!(p, o, "a bridged frame went back out of its ingress port");
        assert_eq!(
            self.attach[o as usize],
            Attach::Bridge(b),
            "a bridged frame from port {p} left its bridge through {o}"
        );
        let br = self.bridges[b].as_ref().expect("bridge");
        if let (Some(mi), Some(mo)) = (br.member(p), br.member(o)) {
            if let Ok(c) = mi.vlan.classify(frame) {
                assert!(
                    mo.vlan.egress_tagged(c.vid).is_some(),
                    "a frame of VLAN {} from port {p} crossed to port {o}",
                    c.vid
                );
            }
        }
        if let Some(stp) = br.stp.as_ref() {
            assert!(stp.forwards(o), "a frame out of port {o}, which STP blocks");
        }
    }
}

/// The input as a stream of bytes (zeros once it is spent).
pub struct Input<'a> {
    pub d: &'a [u8],
    pub at: usize,
}

impl Input<'_> {
    pub fn done(&self) -> bool {
        self.at >= self.d.len()
    }
    pub fn u8(&mut self) -> u8 {
        let b = self.d.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[usize::from(self.u8()) % xs.len()]
    }
    pub fn mac(&mut self, lab: &Lab, port: PortId, vlan: u16) -> MacAddr {
        match self.u8() % 12 {
            0 => C1,
            1 => C2,
            2 => SRV,
            3 => SRV2,
            4 => H10,
            5 => H20,
            6 => MacAddr::BROADCAST,
            7 => MacAddr(self.bytes(6).try_into().unwrap()),
            8 => self.pick(&lab.rif_macs),
            _ => lab.gw_mac(port, vlan),
        }
    }
    /// A frame's destination: mostly the router, as a host's would be.
    pub fn dst_mac(&mut self, lab: &Lab, port: PortId, vlan: u16) -> MacAddr {
        if self.u8() < 128 {
            lab.gw_mac(port, vlan)
        } else {
            self.mac(lab, port, vlan)
        }
    }
    pub fn addr(&mut self) -> [u8; 4] {
        match self.u8() {
            0..=159 => self.pick(&ADDRS),
            // Some host on one of the lab's subnets.
            160..=223 => {
                let [a, b, c] = self.pick(&[[10, 0, 1], [10, 0, 2], [10, 10, 0], [10, 20, 0]]);
                [a, b, c, self.u8()]
            }
            _ => self.u32().to_be_bytes(),
        }
    }
    pub fn l4_port(&mut self) -> u16 {
        if self.u8() < 200 {
            self.pick(&L4_PORTS)
        } else {
            self.u16()
        }
    }
}

/// The Internet checksum of `data` after `seed` (an unfolded sum).
pub fn csum(seed: u32, data: &[u8]) -> u16 {
    let mut s = seed;
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Writes the L4 checksum of the IPv4 packet in `p` (TCP, UDP, ICMP).
pub fn fix_l4(p: &mut [u8]) {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if p.len() < ihl + 8 {
        return;
    }
    let proto = p[9];
    let at = match proto {
        ipv4::PROTO_ICMP => 2,
        ipv4::PROTO_UDP => 6,
        ipv4::PROTO_TCP if p.len() >= ihl + 20 => 16,
        _ => return,
    };
    p[ihl + at..ihl + at + 2].copy_from_slice(&[0, 0]);
    let seed = if proto == ipv4::PROTO_ICMP {
        0
    } else {
        let l4 = (p.len() - ihl) as u32;
        let mut s = u32::from(proto) + l4;
        for c in p[12..20].chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        s
    };
    let c = csum(seed, &p[ihl..]);
    p[ihl + at..ihl + at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Rewrites the IPv4 header checksum of the frame in `f` (Ethernet header
/// of `l3` bytes), if its header is there.
pub fn fix_ip_csum(f: &mut [u8], l3: usize) {
    let Some(p) = f.get_mut(l3..) else { return };
    if p.len() < 20 {
        return;
    }
    let ihl = (usize::from(p[0] & 0x0f) * 4).clamp(20, p.len());
    p[10..12].copy_from_slice(&[0, 0]);
    let c = wire::checksum(&p[..ihl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// An IPv4 packet: header from the input, `proto`, `l4` after it.
pub fn ip_packet(inp: &mut Input, src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let flags = inp.u8();
    let ttl = if flags & 0x80 != 0 {
        inp.u8()
    } else {
        [64, 1, 2, 255][usize::from(flags & 3)]
    };
    let opts = if flags & 0x04 != 0 { 4 } else { 0 };
    let mut p = vec![0u8; 20 + opts + l4.len()];
    ipv4::Repr {
        src: src.into(),
        dst: dst.into(),
        protocol: proto,
        ttl,
        payload_len: opts + l4.len(),
        ident: u16::from(flags),
        dont_frag: flags & 0x08 != 0,
    }
    .emit(&mut p);
    if opts > 0 {
        p[0] = 0x46;
        p[20..24].copy_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
    }
    if flags & 0x10 != 0 {
        // A fragment: more fragments, or a later one.
        let off: u16 = if flags & 0x20 != 0 { 0x2000 } else { 185 };
        p[6..8].copy_from_slice(&off.to_be_bytes());
    }
    p[20 + opts..].copy_from_slice(l4);
    fix_l4(&mut p);
    fix_ip_csum(&mut p, 0);
    p
}

/// A well-formed frame from a lab host on `port` (or the router's view of
/// one), mutated as the input says.
pub fn template(inp: &mut Input, lab: &Lab, port: PortId) -> (Vec<u8>, VnetHdr) {
    let vlan = if port == TRUNK {
        inp.pick(&[10, 20, 10, 20, 1, 30])
    } else {
        0
    };
    let src_mac = inp.mac(lab, port, vlan);
    let dst_mac = inp.dst_mac(lab, port, vlan);
    let (src, dst) = (inp.addr(), inp.addr());
    let mut vnet = VnetHdr::default();
    let (ethertype, mut l3) = match inp.u8() % 9 {
        0 | 1 => {
            let op = inp.pick(&[1, 2, 1, 2, 3]);
            let mut a = vec![0u8; 46];
            Arp {
                op,
                sender_mac: src_mac,
                sender_ip: src.into(),
                target_mac: if op == 1 { MacAddr::default() } else { dst_mac },
                target_ip: dst.into(),
            }
            .emit(&mut a);
            (eth::ETHERTYPE_ARP, a)
        }
        2 => {
            let n = usize::from(inp.u8() % 64);
            let mut u = vec![0u8; 8 + n];
            u[0..2].copy_from_slice(&inp.l4_port().to_be_bytes());
            u[2..4].copy_from_slice(&inp.l4_port().to_be_bytes());
            u[4..6].copy_from_slice(&((8 + n) as u16).to_be_bytes());
            (
                eth::ETHERTYPE_IPV4,
                ip_packet(inp, src, dst, ipv4::PROTO_UDP, &u),
            )
        }
        3 => {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&inp.l4_port().to_be_bytes());
            t[2..4].copy_from_slice(&inp.l4_port().to_be_bytes());
            t[12] = 0x50;
            t[13] = inp.pick(&[0x02, 0x12, 0x10, 0x11, 0x04, 0x18]);
            (
                eth::ETHERTYPE_IPV4,
                ip_packet(inp, src, dst, ipv4::PROTO_TCP, &t),
            )
        }
        4 | 5 => {
            let mut e = vec![0u8; 16];
            e[0] = inp.pick(&[8, 0, 8, 13]);
            e[4..6].copy_from_slice(&inp.l4_port().to_be_bytes());
            (
                eth::ETHERTYPE_IPV4,
                ip_packet(inp, src, dst, ipv4::PROTO_ICMP, &e),
            )
        }
        6 => {
            // An ICMP error quoting a packet of some flow.
            let (qs, qd) = (inp.addr(), inp.addr());
            let proto = inp.pick(&[ipv4::PROTO_UDP, ipv4::PROTO_TCP, ipv4::PROTO_ICMP]);
            let mut l4 = vec![0u8; 8];
            l4[0..2].copy_from_slice(&inp.l4_port().to_be_bytes());
            l4[2..4].copy_from_slice(&inp.l4_port().to_be_bytes());
            if proto == ipv4::PROTO_ICMP {
                l4[0] = 8;
                l4[1] = 0;
            }
            let q = ip_packet(inp, qs, qd, proto, &l4);
            let mut e = vec![0u8; 8];
            e[0] = inp.pick(&[3, 11, 12, 3]);
            e[1] = inp.u8() % 5;
            e.extend_from_slice(&q);
            (
                eth::ETHERTYPE_IPV4,
                ip_packet(inp, src, dst, ipv4::PROTO_ICMP, &e),
            )
        }
        7 => {
            // Big: over the egress MTU, or a GSO super-frame.
            let n = usize::from(inp.u16() % 4000);
            let mut t = vec![0u8; 20 + n];
            t[0..2].copy_from_slice(&inp.l4_port().to_be_bytes());
            t[2..4].copy_from_slice(&inp.l4_port().to_be_bytes());
            t[12] = 0x50;
            t[13] = 0x10;
            let p = ip_packet(inp, src, dst, ipv4::PROTO_TCP, &t);
            if inp.u8() & 1 != 0 {
                vnet = VnetHdr {
                    flags: VnetHdr::F_NEEDS_CSUM,
                    gso_type: VnetHdr::GSO_TCPV4,
                    hdr_len: 54,
                    gso_size: inp.u16() % 2000,
                    csum_start: 34,
                    csum_offset: 16,
                };
            }
            (eth::ETHERTYPE_IPV4, p)
        }
        _ => {
            let proto = inp.u8();
            let n = usize::from(inp.u8() % 40);
            let b = inp.bytes(n);
            (eth::ETHERTYPE_IPV4, ip_packet(inp, src, dst, proto, &b))
        }
    };
    let mut f = vec![0u8; 14];
    eth::emit(&mut f, dst_mac, src_mac, ethertype);
    if vlan != 0 {
        f.splice(12..12, [0x81, 0x00, (vlan >> 8) as u8, vlan as u8]);
    }
    let hdr = f.len();
    f.append(&mut l3);
    mutate(inp, &mut f, hdr);
    (f, vnet)
}

/// Bit flips, a truncation or extra bytes, and a header checksum made
/// right again, as the input says.
pub fn mutate(inp: &mut Input, f: &mut Vec<u8>, l3: usize) {
    let m = inp.u8();
    if m & 0x80 == 0 {
        return;
    }
    for _ in 0..(m & 7) {
        let at = usize::from(inp.u16()) % f.len();
        f[at] ^= inp.u8() | 1;
    }
    if m & 0x40 != 0 {
        let n = usize::from(inp.u16()) % (f.len() + 1);
        f.truncate(n);
    }
    if m & 0x20 != 0 {
        let n = usize::from(inp.u8());
        f.extend(inp.bytes(n));
    }
    if m & 0x10 != 0 {
        fix_ip_csum(f, l3);
    }
}

/// Raw bytes, with fix-ups that get them past the first checks.
pub fn raw(inp: &mut Input, lab: &Lab, port: PortId) -> (Vec<u8>, VnetHdr) {
    let flags = inp.u8();
    // Mostly short (headers are what the checks read), now and then long.
    let n = match inp.u8() {
        l @ 0..=191 => usize::from(l),
        _ => usize::from(inp.u16() % 1600),
    };
    let mut f = inp.bytes(n);
    let mut l3 = 14;
    if flags & 0x10 != 0 && f.len() >= 12 {
        let vid: u16 = [10, 20, 1, 4095][usize::from(flags >> 6)];
        f.splice(12..12, [0x81, 0x00, (vid >> 8) as u8, vid as u8]);
        l3 = 18;
    }
    if flags & 1 != 0 && f.len() >= 6 {
        let vid = if flags & 0x80 != 0 { 20 } else { 10 };
        f[..6].copy_from_slice(&lab.gw_mac(port, vid).0);
    }
    if flags & 2 != 0 && f.len() >= l3 {
        f[l3 - 2..l3].copy_from_slice(&eth::ETHERTYPE_IPV4.to_be_bytes());
    }
    if flags & 4 != 0 && f.len() >= l3 + 20 {
        f[l3] = 0x45;
        let total = (f.len() - l3).min(0xffff) as u16;
        f[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
    }
    if flags & 8 != 0 {
        fix_ip_csum(&mut f, l3);
    }
    let vnet = if flags & 0x20 != 0 {
        let b: [u8; 10] = inp.bytes(10).try_into().unwrap();
        VnetHdr::parse(&b)
    } else {
        VnetHdr::default()
    };
    (f, vnet)
}

/// Runs the steps `data` describes on `lab`.
pub fn drive(lab: &mut Lab, data: &[u8], pool: &mut [Frame], plan: &mut Plan) {
    const PORTS: [PortId; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, TUNNEL];
    let mut inp = Input { d: data, at: 0 };
    let mut steps = 0;
    while !inp.done() && steps < 512 {
        steps += 1;
        match inp.u8() % 8 {
            op @ 0..=6 => {
                let port = inp.pick(&PORTS);
                let n = usize::from(inp.u8()) % pool.len() + 1;
                for f in pool[..n].iter_mut() {
                    let (bytes, vnet) = if op < 2 {
                        raw(&mut inp, lab, port)
                    } else {
                        template(&mut inp, lab, port)
                    };
                    f.set_from_bytes(&bytes);
                    f.set_vnet(&vnet);
                    f.peer = if port == TUNNEL {
                        u16::from(inp.u8() % 4)
                    } else {
                        0
                    };
                    if inp.u8() == 0xff {
                        f.rx_drop = Some(DropReason::RxOverflow);
                    }
                }
                lab.run(Some(port), &mut pool[..n], plan);
            }
            _ => {
                // Mostly short steps; now and then past the ARP and NAT
                // timeouts.
                let scale: u64 = match inp.u8() {
                    0..=63 => 1_000,
                    64..=159 => 1_000_000,
                    160..=223 => 10_000_000,
                    224..=247 => 100_000_000,
                    248..=253 => 1_000_000_000,
                    _ => 100_000_000_000,
                };
                lab.now += u64::from(inp.u8()) * scale;
                lab.run(None, &mut [], plan);
            }
        }
    }
}
