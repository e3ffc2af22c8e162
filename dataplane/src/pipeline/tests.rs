//! The pipeline without a kernel: frames in on a port, the planned frames
//! out (with their tag edits applied), as smoltcp tests its interfaces.
//!
//! The lab: bridge `brin` (ports 1 = c1, 2 = c2, 3 = the internal port of
//! rif `gw` 10.0.1.1/24), bridge `brout` (port 4 = srv, 5 = rif `up`
//! 10.0.2.1/24, with SNAT), and TUN rif `vpn` on port 6 (10.0.8.1/24).

use super::*;
use crate::bridge::vlan::{VlanMode, VlanSet};
use crate::bridge::{BridgeSettings, Member};
use crate::config::{DnatConfig, Ipv4Cidr, RifConfig, RifType, RouteConfig, SnatConfig};
use crate::packet::{VnetHdr, EDIT_PREFIX_MAX};
use crate::router::{Rif, RifKind};
use crate::MacAddr;
use etherparse::{Icmpv4Type, LinkSlice, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use std::net::Ipv4Addr;

const C1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const C2: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const SRV: MacAddr = MacAddr([2, 0, 0, 0, 0, 4]);
const C1_IP: [u8; 4] = [10, 0, 1, 2];
const C2_IP: [u8; 4] = [10, 0, 1, 3];
const SRV_IP: [u8; 4] = [10, 0, 2, 2];
const GW_IP: [u8; 4] = [10, 0, 1, 1];
const UP_IP: [u8; 4] = [10, 0, 2, 1];
const S: u64 = 1_000_000_000;

struct Lab {
    bridges: Vec<Option<Bridge>>,
    attach: Vec<Attach>,
    up: Vec<bool>,
    router: Router,
    stats: Vec<PortStats>,
    plan: Plan,
    now: u64,
}

fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}

impl Lab {
    fn new() -> Lab {
        let mut l = Lab {
            bridges: vec![
                Some(Bridge::new("brin", BridgeSettings::default())),
                Some(Bridge::new("brout", BridgeSettings::default())),
            ],
            attach: vec![Attach::None; 16],
            up: vec![true; 16],
            router: Router::new(),
            stats: vec![PortStats::default(); 16],
            plan: Plan::new(16, 64, 32),
            now: S,
        };
        for (p, b) in [(1, 0), (2, 0), (4, 1)] {
            l.attach[p] = Attach::Bridge(b);
            l.bridges[b]
                .as_mut()
                .unwrap()
                .add_port(p as PortId, Member::default());
        }
        l.add_svi("gw", 0, 3, 1, "10.0.1.1/24");
        l.add_svi("up", 1, 5, 1, "10.0.2.1/24");
        let cfg = RifConfig {
            name: "vpn".into(),
            kind: RifType::Tun,
            bridge: None,
            vlan: None,
            addr: cidr("10.0.8.1/24"),
            mac: None,
            netns: None,
            ifname: None,
            mtu: None,
        };
        let id = l
            .router
            .add_rif(Rif {
                name: "vpn".into(),
                kind: RifKind::Tun,
                addr: cfg.addr,
                mac: crate::router::rif::stable_mac("vpn"),
                mtu: 1500,
                pid: 6,
                cfg,
            })
            .unwrap();
        l.attach[6] = Attach::Tun(id);
        l
    }

    fn add_svi(&mut self, name: &str, bridge: usize, pid: PortId, vlan: u16, addr: &str) -> RifId {
        let cfg = RifConfig {
            name: name.into(),
            kind: RifType::Bridge,
            bridge: Some(format!("b{bridge}")),
            vlan: Some(vlan),
            addr: cidr(addr),
            mac: None,
            netns: None,
            ifname: None,
            mtu: None,
        };
        let mac = crate::router::rif::stable_mac(name);
        let id = self
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
        self.attach[pid as usize] = Attach::Svi { bridge, rif: id };
        let b = self.bridges[bridge].as_mut().unwrap();
        b.add_port(pid, Member::internal(vlan));
        b.fdb.add_static(vlan, mac, pid).unwrap();
        id
    }

    fn mac(&self, rif: &str) -> MacAddr {
        let id = self.router.rif_by_name(rif).unwrap();
        self.router.rif(id).unwrap().mac
    }

    /// Receives `frames` on `port`; returns what leaves, by port.
    fn rx(&mut self, port: PortId, frames: &[Vec<u8>]) -> Vec<(PortId, Vec<u8>)> {
        let mut batch: Vec<Frame> = frames.iter().map(|f| Frame::from_bytes(f)).collect();
        let mut fab = Fabric {
            bridges: &mut self.bridges,
            attach: &self.attach,
            up: &self.up,
            router: &mut self.router,
        };
        process(
            &mut fab,
            port,
            &mut batch,
            self.now,
            &mut self.stats,
            &mut self.plan,
        );
        self.collect(&batch)
    }

    fn tick(&mut self) -> Vec<(PortId, Vec<u8>)> {
        let mut fab = Fabric {
            bridges: &mut self.bridges,
            attach: &self.attach,
            up: &self.up,
            router: &mut self.router,
        };
        timers(&mut fab, self.now, &mut self.stats, &mut self.plan);
        self.collect(&[])
    }

    fn collect(&mut self, batch: &[Frame]) -> Vec<(PortId, Vec<u8>)> {
        let mut out = Vec::new();
        for &p in &self.plan.dirty {
            for (frames, q) in [
                (batch, &self.plan.txq[p as usize]),
                (&self.plan.orig.frames[..], &self.plan.txq_orig[p as usize]),
            ] {
                for it in q {
                    let f = &frames[it.idx as usize];
                    let mut scratch = [0u8; EDIT_PREFIX_MAX];
                    let (n, rest) = f.edited_prefix(it.edit, &mut scratch);
                    let mut b = scratch[crate::packet::VNET_HDR_LEN..n].to_vec();
                    b.extend_from_slice(&f.data()[rest..]);
                    out.push((p, b));
                }
            }
        }
        self.plan.clear();
        out
    }

    fn drops(&self, port: PortId, r: DropReason) -> u64 {
        self.stats[port as usize].get(r)
    }

    fn arp(
        &mut self,
        port: PortId,
        op: u16,
        mac: MacAddr,
        ip: [u8; 4],
        dst: MacAddr,
        tip: [u8; 4],
    ) -> Vec<(PortId, Vec<u8>)> {
        let mut f = vec![0u8; 60];
        crate::wire::eth::emit(&mut f, dst, mac, crate::wire::eth::ETHERTYPE_ARP);
        crate::wire::arp::Arp {
            op,
            sender_mac: mac,
            sender_ip: ip.into(),
            target_mac: if op == 1 { MacAddr::default() } else { dst },
            target_ip: tip.into(),
        }
        .emit(&mut f[14..]);
        self.rx(port, &[f])
    }

    /// c1 and srv resolved by the router (each asks for its gateway).
    fn resolved() -> Lab {
        let mut l = Lab::new();
        l.arp(1, 1, C1, C1_IP, MacAddr::BROADCAST, GW_IP);
        l.arp(2, 1, C2, C2_IP, MacAddr::BROADCAST, GW_IP);
        l.arp(4, 1, SRV, SRV_IP, MacAddr::BROADCAST, UP_IP);
        l
    }
}

fn udp(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src, dst, ttl)
        .udp(sport, dport)
        .write(&mut v, b"hello router")
        .unwrap();
    v
}

fn ping(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    id: u16,
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src, dst, ttl)
        .icmpv4_echo_request(id, 1)
        .write(&mut v, b"abcdefgh")
        .unwrap();
    v
}

/// Parses an output frame; checks the IPv4 header checksum from scratch.
fn ip_of(
    f: &[u8],
) -> (
    MacAddr,
    MacAddr,
    etherparse::Ipv4Header,
    Option<TransportSlice<'_>>,
) {
    let p = SlicedPacket::from_ethernet(f).expect("a well-formed frame");
    let Some(LinkSlice::Ethernet2(e)) = p.link else {
        panic!("no Ethernet")
    };
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        panic!("not IPv4: {f:02x?}")
    };
    let h = ip.header();
    assert_eq!(crate::wire::checksum(h.slice()), 0, "IPv4 header checksum");
    let h = h.to_header();
    (
        MacAddr(e.source()),
        MacAddr(e.destination()),
        h,
        p.transport,
    )
}

#[test]
fn answers_arp_for_its_address_and_floods_the_request_too() {
    let mut l = Lab::new();
    let out = l.arp(1, 1, C1, C1_IP, MacAddr::BROADCAST, GW_IP);
    let gw = l.mac("gw");
    assert_eq!(out.len(), 2, "{out:02x?}");
    assert!(
        out.iter().any(|(p, f)| *p == 2 && f[..6] == [0xff; 6]),
        "the request is still flooded"
    );
    let (p, reply) = out.iter().find(|(p, _)| *p == 1).unwrap();
    assert_eq!(*p, 1);
    let a = crate::wire::arp::Arp::parse(&reply[14..]).unwrap();
    assert_eq!(a.op, 2);
    assert_eq!((a.sender_mac, a.sender_ip), (gw, GW_IP.into()));
    assert_eq!((a.target_mac, a.target_ip), (C1, C1_IP.into()));
    assert_eq!(&reply[..6], &C1.0);
    // The sender is now a neighbour; a request for someone else is not
    // answered.
    assert_eq!(l.router.neigh.len(), 1);
    let out = l.arp(1, 1, C1, C1_IP, MacAddr::BROADCAST, [10, 0, 1, 77]);
    assert_eq!(out.len(), 1, "flooded only");
}

#[test]
fn answers_ping_to_its_address() {
    let mut l = Lab::resolved();
    let gw = l.mac("gw");
    let out = l.rx(1, &[ping(C1, gw, C1_IP, GW_IP, 64, 77)]);
    assert_eq!(out.len(), 1);
    let (p, f) = &out[0];
    assert_eq!(*p, 1);
    let (src, dst, ip, t) = ip_of(f);
    assert_eq!((src, dst), (gw, C1));
    assert_eq!((ip.source, ip.destination), (GW_IP, C1_IP));
    let Some(TransportSlice::Icmpv4(icmp)) = t else {
        panic!()
    };
    assert!(matches!(icmp.icmp_type(), Icmpv4Type::EchoReply(e) if e.id == 77));
    assert_eq!(crate::wire::checksum(icmp.slice()), 0, "ICMP checksum");
}

#[test]
fn routes_with_ttl_and_mac_rewrite_after_arp_resolves() {
    let mut l = Lab::new();
    l.arp(1, 1, C1, C1_IP, MacAddr::BROADCAST, GW_IP);
    let (gw, up) = (l.mac("gw"), l.mac("up"));
    l.router.del_snat("up").ok();
    // srv unknown: the packet waits, an ARP request goes out on brout.
    let out = l.rx(1, &[udp(C1, gw, C1_IP, SRV_IP, 64, 5000, 53)]);
    assert_eq!(out.len(), 1, "{out:02x?}");
    let (p, req) = &out[0];
    assert_eq!(*p, 4);
    let a = crate::wire::arp::Arp::parse(&req[14..]).unwrap();
    assert_eq!((a.op, a.sender_mac, a.target_ip), (1, up, SRV_IP.into()));
    // The answer releases it: TTL 63, our MAC, srv's MAC.
    let out = l.arp(4, 2, SRV, SRV_IP, up, UP_IP);
    assert_eq!(out.len(), 1, "{out:02x?}");
    let (p, f) = &out[0];
    assert_eq!(*p, 4);
    let (src, dst, ip, t) = ip_of(f);
    assert_eq!((src, dst), (up, SRV));
    assert_eq!(ip.time_to_live, 63);
    assert_eq!(
        (ip.source, ip.destination),
        (C1_IP, SRV_IP),
        "no SNAT without a rule"
    );
    assert!(matches!(t, Some(TransportSlice::Udp(_))));
    // Now resolved: straight through.
    let out = l.rx(1, &[udp(C1, gw, C1_IP, SRV_IP, 9, 5000, 53)]);
    assert_eq!(out.len(), 1);
    assert_eq!(ip_of(&out[0].1).2.time_to_live, 8);
    // c1's ARP request and the two packets.
    assert_eq!(l.stats[3].rx_packets, 3, "counted on the rif");
}

#[test]
fn snat_both_ways_and_unsolicited_inbound_dropped() {
    let mut l = Lab::resolved();
    l.router
        .add_snat(SnatConfig {
            out: "up".into(),
            to: None,
            src: None,
        })
        .unwrap();
    let (gw, up) = (l.mac("gw"), l.mac("up"));
    let out = l.rx(1, &[udp(C1, gw, C1_IP, SRV_IP, 64, 40000, 53)]);
    let (_, _, ip, t) = ip_of(&out[0].1);
    assert_eq!(ip.source, UP_IP, "masqueraded to the rif's address");
    let Some(TransportSlice::Udp(u)) = t else {
        panic!()
    };
    assert_eq!(u.source_port(), 40000, "port kept");
    // The reply comes back to c1.
    let out = l.rx(4, &[udp(SRV, up, SRV_IP, UP_IP, 64, 53, 40000)]);
    assert_eq!(out.len(), 1, "{out:02x?}");
    let (p, f) = &out[0];
    assert_eq!(*p, 1);
    let (src, dst, ip, t) = ip_of(f);
    assert_eq!((src, dst), (gw, C1));
    assert_eq!(ip.destination, C1_IP);
    let Some(TransportSlice::Udp(u)) = t else {
        panic!()
    };
    assert_eq!(u.destination_port(), 40000);
    // c2 with the same source port gets another outside port.
    let out = l.rx(2, &[udp(C2, gw, C2_IP, SRV_IP, 64, 40000, 53)]);
    let (_, _, _, t) = ip_of(&out[0].1);
    let Some(TransportSlice::Udp(u)) = t else {
        panic!()
    };
    assert_ne!(u.source_port(), 40000);
    // Unsolicited: to the outside address on a port nobody mapped. It is
    // the router's own address, so the router answers for itself (port
    // unreachable, as Linux does) and nothing goes inside.
    let out = l.rx(4, &[udp(SRV, up, SRV_IP, UP_IP, 64, 53, 41234)]);
    assert_eq!(out.len(), 1, "{out:02x?}");
    assert_eq!(out[0].0, 4);
    let (_, _, ip, _) = ip_of(&out[0].1);
    assert_eq!((ip.protocol.0, ip.destination), (1, SRV_IP));
    assert_eq!(l.drops(5, DropReason::LocalUnsupported), 1);
    // Nor from an endpoint c1 never talked to (filtering).
    let out = l.rx(4, &[udp(SRV, up, SRV_IP, UP_IP, 64, 54, 40000)]);
    assert!(out.iter().all(|(p, _)| *p == 4), "{out:02x?}");
    // With a separate outside address, nothing answers at all.
    l.router
        .add_snat(SnatConfig {
            out: "up".into(),
            to: Some("10.0.2.100".into()),
            src: None,
        })
        .unwrap();
    let out = l.rx(4, &[udp(SRV, up, SRV_IP, [10, 0, 2, 100], 64, 53, 40000)]);
    assert!(out.is_empty(), "{out:02x?}");
    assert_eq!(l.drops(5, DropReason::NatUnsolicited), 1);
}

#[test]
fn ttl_expiry_and_no_route_answered_with_icmp() {
    let mut l = Lab::resolved();
    let gw = l.mac("gw");
    let sent = udp(C1, gw, C1_IP, SRV_IP, 1, 5000, 53);
    let out = l.rx(1, std::slice::from_ref(&sent));
    assert_eq!(out.len(), 1, "{out:02x?}");
    let (p, f) = &out[0];
    assert_eq!(*p, 1);
    let (_, dst, ip, t) = ip_of(f);
    assert_eq!(dst, C1);
    assert_eq!((ip.source, ip.destination), (GW_IP, C1_IP));
    let Some(TransportSlice::Icmpv4(icmp)) = t else {
        panic!()
    };
    assert!(
        matches!(icmp.icmp_type(), Icmpv4Type::TimeExceeded(_)),
        "{:?}",
        icmp.icmp_type()
    );
    assert_eq!(crate::wire::checksum(icmp.slice()), 0);
    // The quote is the offending packet as it arrived.
    assert_eq!(&icmp.slice()[8..8 + 20], &sent[14..34]);
    assert_eq!(l.drops(3, DropReason::TtlExceeded), 1);

    let out = l.rx(1, &[udp(C1, gw, C1_IP, [10, 9, 9, 9], 64, 5000, 53)]);
    let (_, _, _, t) = ip_of(&out[0].1);
    let Some(TransportSlice::Icmpv4(icmp)) = t else {
        panic!()
    };
    assert!(matches!(
        icmp.icmp_type(),
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Network)
    ));
    assert_eq!(l.drops(3, DropReason::NoRoute), 1);
}

fn host_unreachable_case(snat: bool) {
    let mut l = Lab::resolved();
    let gw = l.mac("gw");
    if snat {
        l.router
            .add_snat(SnatConfig {
                out: "up".into(),
                to: None,
                src: None,
            })
            .unwrap();
    }
    l.router
        .add_route(RouteConfig {
            prefix: cidr("10.0.50.0/24"),
            via: Some(Ipv4Addr::new(10, 0, 2, 99)),
            dev: None,
        })
        .unwrap();
    let sent = udp(C1, gw, C1_IP, [10, 0, 50, 1], 64, 5000, 53);
    let out = l.rx(1, std::slice::from_ref(&sent));
    assert_eq!(out.len(), 1, "one ARP request");
    let mut requests = 1;
    let mut unreachable = 0;
    for _ in 0..50 {
        l.now += S / 10;
        for (p, f) in l.tick() {
            if f[12..14] == [0x08, 0x06] {
                assert_eq!(p, 4);
                let a = crate::wire::arp::Arp::parse(&f[14..]).unwrap();
                assert_eq!(
                    a.target_ip,
                    Ipv4Addr::new(10, 0, 2, 99),
                    "never ARPs for itself"
                );
                requests += 1;
            } else {
                assert_eq!(p, 1);
                let (_, dst, ip, t) = ip_of(&f);
                assert_eq!((dst, ip.source, ip.destination), (C1, GW_IP, C1_IP));
                let Some(TransportSlice::Icmpv4(icmp)) = t else {
                    panic!()
                };
                assert!(matches!(
                    icmp.icmp_type(),
                    Icmpv4Type::DestinationUnreachable(
                        etherparse::icmpv4::DestUnreachableHeader::Host
                    )
                ));
                assert_eq!(crate::wire::checksum(icmp.slice()), 0);
                // The quote shows c1's packet as c1 sent it (addresses
                // and ports translated back), TTL decremented.
                let q = &icmp.slice()[8..];
                assert_eq!(&q[12..16], &C1_IP);
                assert_eq!(&q[16..20], &[10, 0, 50, 1]);
                assert_eq!(&q[20..22], &5000u16.to_be_bytes());
                unreachable += 1;
            }
        }
    }
    assert_eq!((requests, unreachable), (3, 1));
    assert_eq!(
        l.drops(3, DropReason::ArpUnresolved),
        1,
        "counted where it arrived"
    );
}

#[test]
fn unresolved_next_hop_gets_host_unreachable() {
    host_unreachable_case(false);
}

#[test]
fn host_unreachable_reaches_the_inside_host_through_snat() {
    host_unreachable_case(true);
}

#[test]
fn inter_vlan_routing_on_a_trunk() {
    let mut l = Lab::new();
    // brin: port 7 a trunk carrying VLANs 10 and 20; rifs on each.
    l.attach[7] = Attach::Bridge(0);
    l.bridges[0].as_mut().unwrap().add_port(
        7,
        Member {
            vlan: VlanMode::Trunk {
                vlans: VlanSet::parse("10,20").unwrap(),
                native: None,
            },
            ..Member::default()
        },
    );
    let v10 = l.add_svi("v10", 0, 8, 10, "10.10.0.1/24");
    let _v20 = l.add_svi("v20", 0, 9, 20, "10.20.0.1/24");
    let (h10, h20) = (MacAddr([2, 0, 0, 0, 10, 1]), MacAddr([2, 0, 0, 0, 20, 1]));
    let tag = |mut f: Vec<u8>, vid: u16| {
        f.splice(12..12, [0x81, 0x00, (vid >> 8) as u8, vid as u8]);
        f
    };
    let arp_req = |mac: MacAddr, ip: [u8; 4], tip: [u8; 4]| {
        let mut f = vec![0u8; 60];
        crate::wire::eth::emit(
            &mut f,
            MacAddr::BROADCAST,
            mac,
            crate::wire::eth::ETHERTYPE_ARP,
        );
        crate::wire::arp::Arp {
            op: 1,
            sender_mac: mac,
            sender_ip: ip.into(),
            target_mac: MacAddr::default(),
            target_ip: tip.into(),
        }
        .emit(&mut f[14..]);
        f
    };
    let out = l.rx(7, &[tag(arp_req(h10, [10, 10, 0, 2], [10, 10, 0, 1]), 10)]);
    let reply = out
        .iter()
        .find(|(_, f)| f[..6] == h10.0)
        .expect("ARP reply");
    assert_eq!(
        &reply.1[12..16],
        &[0x81, 0x00, 0x00, 10],
        "tagged back into VLAN 10"
    );
    l.rx(7, &[tag(arp_req(h20, [10, 20, 0, 2], [10, 20, 0, 1]), 20)]);
    let m10 = l.router.rif(v10).unwrap().mac;
    let out = l.rx(
        7,
        &[tag(
            udp(h10, m10, [10, 10, 0, 2], [10, 20, 0, 2], 64, 1, 2),
            10,
        )],
    );
    assert_eq!(out.len(), 1, "{out:02x?}");
    let (p, f) = &out[0];
    assert_eq!(*p, 7, "back out of the trunk");
    assert_eq!(&f[12..16], &[0x81, 0x00, 0x00, 20], "in VLAN 20");
    assert_eq!(&f[..6], &h20.0);
    let mut untagged = f.clone();
    untagged.drain(12..16);
    assert_eq!(ip_of(&untagged).2.time_to_live, 63);
}

#[test]
fn tun_to_bridge_and_back() {
    let mut l = Lab::resolved();
    l.router.del_snat("up").ok();
    let vpn_mac = l.mac("vpn");
    // A frame as the TUN port presents it: its router MAC, a fixed peer.
    let peer = MacAddr([2, 0, 0, 0, 0, 0x42]);
    let out = l.rx(6, &[ping(peer, vpn_mac, [10, 0, 8, 2], C1_IP, 64, 9)]);
    assert_eq!(out.len(), 1, "{out:02x?}");
    assert_eq!(out[0].0, 1);
    let (_, dst, ip, _) = ip_of(&out[0].1);
    assert_eq!((dst, ip.time_to_live), (C1, 63));
    // And c1's answer goes to the TUN port, no ARP needed.
    let gw = l.mac("gw");
    let out = l.rx(1, &[udp(C1, gw, C1_IP, [10, 0, 8, 2], 64, 7, 8)]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 6);
    assert_eq!(ip_of(&out[0].1).2.destination, [10, 0, 8, 2]);
}

#[test]
fn frag_needed_for_df_packets_over_the_egress_mtu() {
    let mut l = Lab::resolved();
    let gw = l.mac("gw");
    let up = l.router.rif_by_name("up").unwrap();
    l.router.rif_mut(up).unwrap().mtu = 1000;
    let mut big = Vec::new();
    PacketBuilder::ethernet2(C1.0, gw.0)
        .ipv4(C1_IP, SRV_IP, 64)
        .udp(1, 2)
        .write(&mut big, &[0u8; 1200])
        .unwrap();
    big[20] |= 0x40; // DF
    let c = {
        big[24..26].copy_from_slice(&[0, 0]);
        crate::wire::checksum(&big[14..34])
    };
    big[24..26].copy_from_slice(&c.to_be_bytes());
    let out = l.rx(1, &[big]);
    assert_eq!(out.len(), 1);
    let (_, _, _, t) = ip_of(&out[0].1);
    let Some(TransportSlice::Icmpv4(icmp)) = t else {
        panic!()
    };
    assert_eq!(icmp.type_u8(), 3);
    assert_eq!(icmp.code_u8(), 4);
    assert_eq!(&icmp.slice()[6..8], &1000u16.to_be_bytes(), "next-hop MTU");
    assert_eq!(l.drops(3, DropReason::FragNeeded), 1);
    // A GSO super-frame whose segments fit passes whole.
    let mut gso = Vec::new();
    PacketBuilder::ethernet2(C1.0, gw.0)
        .ipv4(C1_IP, SRV_IP, 64)
        .tcp(1, 2, 0, 1000)
        .write(&mut gso, &[0u8; 3000])
        .unwrap();
    let mut f = Frame::from_bytes(&gso);
    f.set_vnet(&VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 900,
        csum_start: 34,
        csum_offset: 16,
    });
    let mut batch = vec![f];
    let mut fab = Fabric {
        bridges: &mut l.bridges,
        attach: &l.attach,
        up: &l.up,
        router: &mut l.router,
    };
    process(&mut fab, 1, &mut batch, l.now, &mut l.stats, &mut l.plan);
    let out = l.collect(&batch);
    assert_eq!(out.len(), 1, "routed whole");
    assert_eq!(out[0].1.len(), gso.len());
}

#[test]
fn garbage_at_the_router_is_counted_never_fatal() {
    let mut l = Lab::resolved();
    let gw = l.mac("gw");
    let mut rng = crate::test_rng::Rng(0x9e37_79b9_7f4a_7c15);
    let mut frames = Vec::new();
    for i in 0..3000 {
        let n = (rng.next() % 120) as usize;
        let mut f: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        if f.len() >= 14 {
            f[..6].copy_from_slice(&gw.0);
            f[6..12].copy_from_slice(&C1.0);
            f[12..14].copy_from_slice(if i % 2 == 0 {
                &[0x08, 0x00]
            } else {
                &[0x08, 0x06]
            });
        }
        if f.len() >= 15 && i % 3 == 0 {
            f[14] = 0x45;
        }
        frames.push(f);
    }
    for chunk in frames.chunks(64) {
        let _ = l.rx(1, chunk);
        l.now += 1000;
    }
    let rif = &l.stats[3];
    assert!(rif.get(DropReason::Malformed) > 1000, "{:?}", rif);
    // Routed traffic still flows.
    let out = l.rx(1, &[ping(C1, gw, C1_IP, GW_IP, 64, 1)]);
    assert_eq!(out.len(), 1);
}

#[test]
fn tcp_to_the_router_is_reset() {
    let mut l = Lab::resolved();
    let gw = l.mac("gw");
    let mut syn = Vec::new();
    PacketBuilder::ethernet2(C1.0, gw.0)
        .ipv4(C1_IP, GW_IP, 64)
        .tcp(40000, 22, 1000, 64240)
        .syn()
        .write(&mut syn, &[])
        .unwrap();
    let out = l.rx(1, &[syn]);
    assert_eq!(out.len(), 1, "{out:02x?}");
    let (_, dst, ip, t) = ip_of(&out[0].1);
    assert_eq!((dst, ip.source, ip.destination), (C1, GW_IP, C1_IP));
    let Some(TransportSlice::Tcp(tcp)) = t else {
        panic!()
    };
    assert!(tcp.rst() && tcp.ack() && !tcp.syn());
    assert_eq!((tcp.source_port(), tcp.destination_port()), (22, 40000));
    assert_eq!(
        (tcp.sequence_number(), tcp.acknowledgment_number()),
        (0, 1001)
    );
    let sum = tcp.calc_checksum_ipv4(ip.source, ip.destination).unwrap();
    assert_eq!(sum, tcp.checksum(), "TCP checksum");
    assert_eq!(l.drops(3, DropReason::LocalUnsupported), 1);
    // A reset is never answered.
    let mut rst = Vec::new();
    PacketBuilder::ethernet2(C1.0, gw.0)
        .ipv4(C1_IP, GW_IP, 64)
        .tcp(40000, 22, 1000, 0)
        .rst()
        .write(&mut rst, &[])
        .unwrap();
    assert!(l.rx(1, &[rst]).is_empty());
}

#[test]
fn a_full_nat_table_refuses_new_flows_and_keeps_old_ones() {
    let mut l = Lab::resolved();
    l.router
        .add_snat(SnatConfig {
            out: "up".into(),
            to: None,
            src: None,
        })
        .unwrap();
    l.router.nat.set_max_conns(1);
    let gw = l.mac("gw");
    assert_eq!(
        l.rx(1, &[udp(C1, gw, C1_IP, SRV_IP, 64, 1111, 53)]).len(),
        1
    );
    assert!(l
        .rx(2, &[udp(C2, gw, C2_IP, SRV_IP, 64, 2222, 53)])
        .is_empty());
    assert_eq!(l.drops(3, DropReason::NatTableFull), 1);
    assert_eq!(
        l.rx(1, &[udp(C1, gw, C1_IP, SRV_IP, 64, 1111, 53)]).len(),
        1,
        "the old flow still works"
    );
    // del-snat takes the rule's flows with it.
    assert_eq!(l.router.del_snat("up").unwrap(), 1);
    assert!(l.router.nat.is_empty());
}

fn tcp_frame(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    synack: bool,
) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 64240)
        .syn();
    let b = if synack { b.ack(1001) } else { b };
    b.write(&mut v, &[]).unwrap();
    v
}

/// (egress port, src, sport, dst, dport) of a TCP frame, its checksums
/// verified from scratch.
fn tcp_of(out: &(PortId, Vec<u8>)) -> (PortId, [u8; 4], u16, [u8; 4], u16) {
    let (_, _, ip, t) = ip_of(&out.1);
    let Some(TransportSlice::Tcp(tcp)) = t else {
        panic!("not TCP")
    };
    let sum = tcp.calc_checksum_ipv4(ip.source, ip.destination).unwrap();
    assert_eq!(sum, tcp.checksum(), "TCP checksum");
    (
        out.0,
        ip.source,
        tcp.source_port(),
        ip.destination,
        tcp.destination_port(),
    )
}

#[test]
fn port_forwarding_reaches_the_inside_server_and_back() {
    let mut l = Lab::resolved();
    l.router
        .add_snat(SnatConfig {
            out: "up".into(),
            to: None,
            src: None,
        })
        .unwrap();
    let dnat = DnatConfig {
        in_rif: "up".into(),
        proto: "tcp".into(),
        port: 8080,
        to: "10.0.1.2:80".into(),
    };
    l.router.add_dnat(dnat.clone(), l.now).unwrap();
    assert!(l.router.add_dnat(dnat, l.now).is_err(), "duplicate");
    let (gw, up) = (l.mac("gw"), l.mac("up"));
    // srv's SYN to up:8080 reaches c1:80 with srv's real source.
    let out = l.rx(4, &[tcp_frame(SRV, up, SRV_IP, UP_IP, 5555, 8080, false)]);
    assert_eq!(out.len(), 1, "{out:02x?}");
    assert_eq!(tcp_of(&out[0]), (1, SRV_IP, 5555, C1_IP, 80));
    let (src, dst, ip, _) = ip_of(&out[0].1);
    assert_eq!((src, dst, ip.time_to_live), (gw, C1, 63));
    // c1's SYN-ACK leaves with source up:8080.
    let out = l.rx(1, &[tcp_frame(C1, gw, C1_IP, SRV_IP, 80, 5555, true)]);
    assert_eq!(out.len(), 1, "{out:02x?}");
    assert_eq!(tcp_of(&out[0]), (4, UP_IP, 8080, SRV_IP, 5555));
    // Another port of the router's address is still the router's: reset.
    let out = l.rx(4, &[tcp_frame(SRV, up, SRV_IP, UP_IP, 5556, 8081, false)]);
    assert_eq!(out.len(), 1, "{out:02x?}");
    assert_eq!(tcp_of(&out[0]), (4, UP_IP, 8081, SRV_IP, 5556));
    // Arriving on another interface, the port is not forwarded.
    let out = l.rx(1, &[tcp_frame(C1, gw, C1_IP, GW_IP, 5557, 8080, false)]);
    assert_eq!(tcp_of(&out[0]), (1, GW_IP, 8080, C1_IP, 5557));
    // c2 reaches the server through up:8080 (hairpin) and hears back from
    // up:8080.
    let out = l.rx(2, &[tcp_frame(C2, gw, C2_IP, UP_IP, 6000, 8080, false)]);
    assert_eq!(out.len(), 1, "{out:02x?}");
    assert_eq!(tcp_of(&out[0]), (1, UP_IP, 6000, C1_IP, 80));
    let out = l.rx(1, &[tcp_frame(C1, gw, C1_IP, UP_IP, 80, 6000, true)]);
    assert_eq!(out.len(), 1, "{out:02x?}");
    assert_eq!(tcp_of(&out[0]), (2, UP_IP, 8080, C2_IP, 6000));
    // Removed: the router answers for itself again, flows gone.
    assert_eq!(l.router.del_dnat("up", "tcp", 8080), Ok(2));
    assert!(l.router.del_dnat("up", "tcp", 8080).is_err());
    let out = l.rx(4, &[tcp_frame(SRV, up, SRV_IP, UP_IP, 5555, 8080, false)]);
    assert_eq!(tcp_of(&out[0]), (4, UP_IP, 8080, SRV_IP, 5555));
}

#[test]
fn port_forwarding_without_snat_and_bad_rules() {
    let mut l = Lab::resolved();
    let bad = |to: &str, port: u16, rif: &str, proto: &str| DnatConfig {
        in_rif: rif.into(),
        proto: proto.into(),
        port,
        to: to.into(),
    };
    let now = l.now;
    for c in [
        bad("10.0.1.2", 0, "up", "tcp"),
        bad("10.0.1.2", 80, "nope", "tcp"),
        bad("10.0.1.2", 80, "up", "icmp"),
        bad("224.0.0.1", 80, "up", "tcp"),
        bad("10.0.1.2:0", 80, "up", "tcp"),
        bad("10.0.1.2:x", 80, "up", "tcp"),
        bad("10.0.1.1", 80, "up", "tcp"),
    ] {
        assert!(l.router.add_dnat(c.clone(), now).is_err(), "{c:?}");
    }
    l.router
        .add_dnat(bad("10.0.1.2", 5353, "up", "UDP"), now)
        .unwrap();
    let shown: Vec<_> = l.router.dnat_rules().cloned().collect();
    assert_eq!(shown, vec![bad("10.0.1.2:5353", 5353, "up", "udp")]);
    let (gw, up) = (l.mac("gw"), l.mac("up"));
    // No SNAT on up: the forwarded flow is translated all the same.
    let out = l.rx(4, &[udp(SRV, up, SRV_IP, UP_IP, 64, 999, 5353)]);
    assert_eq!(out.len(), 1, "{out:02x?}");
    let (_, _, ip, _) = ip_of(&out[0].1);
    assert_eq!((out[0].0, ip.source, ip.destination), (1, SRV_IP, C1_IP));
    let out = l.rx(1, &[udp(C1, gw, C1_IP, SRV_IP, 64, 5353, 999)]);
    assert_eq!(out.len(), 1, "{out:02x?}");
    let (_, _, ip, t) = ip_of(&out[0].1);
    assert_eq!((out[0].0, ip.source), (4, UP_IP));
    let Some(TransportSlice::Udp(u)) = t else {
        panic!()
    };
    assert_eq!(u.source_port(), 5353);
    let sum = u.to_header().calc_checksum_ipv4(&ip, u.payload()).unwrap();
    assert_eq!(sum, u.checksum(), "UDP checksum");
    // srv's port unreachable about that answer reaches c1, about what c1
    // sent (no SNAT rule on up to translate it).
    let quote = out[0].1[14..].to_vec();
    let mut err = Vec::new();
    PacketBuilder::ethernet2(SRV.0, up.0)
        .ipv4(SRV_IP, UP_IP, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut err, &quote)
        .unwrap();
    let out = l.rx(4, &[err]);
    assert_eq!(out.len(), 1, "{out:02x?}");
    let (_, _, ip, _) = ip_of(&out[0].1);
    assert_eq!((out[0].0, ip.source, ip.destination), (1, SRV_IP, C1_IP));
    let q = &out[0].1[14 + 20 + 8..];
    assert_eq!((&q[12..16], &q[16..20]), (&C1_IP[..], &SRV_IP[..]));
    assert_eq!(u16::from_be_bytes([q[20], q[21]]), 5353);
}
