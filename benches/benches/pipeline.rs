//! Per-packet cost of the whole forwarding pipeline (criterion), one
//! 64-frame batch at a time, as a worker runs it under the tables' lock:
//!
//! - `l2`: bridged unicast between two ports of one bridge;
//! - `routed`: from a host on one bridge through router interfaces to a
//!   host on another (ARP resolved): TTL, checksum, MAC rewrite, and the
//!   egress bridge's FDB lookup;
//! - `routed_snat/N`: the same with masquerade on the egress, over N
//!   established flows visited in a scattered order.
//!
//! The batch time is also how long a worker holds the tables' lock for it,
//! which is what the NAT's place (inside the tables, one lock) costs the
//! other workers. `cargo bench -p vswitch-benches --bench pipeline`
//! prints ns per frame (elements are frames).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::bridge::{Bridge, BridgeSettings, Member, PortId};
use dataplane::config::{RifConfig, RifType, SnatConfig};
use dataplane::packet::Frame;
use dataplane::pipeline::{process, Attach, Fabric, Plan};
use dataplane::router::{rif::stable_mac, Rif, RifKind, Router};
use dataplane::stats::PortStats;
use dataplane::MacAddr;
use std::hint::black_box;
use vswitch_benches::{below, next};

const BATCH: usize = 64;
const C1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const C2: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const SRV: MacAddr = MacAddr([2, 0, 0, 0, 0, 4]);

struct Lab {
    bridges: Vec<Option<Bridge>>,
    attach: Vec<Attach>,
    up: Vec<bool>,
    router: Router,
    stats: Vec<PortStats>,
    plan: Plan,
}

impl Lab {
    /// brin: 1 = c1, 2 = c2, 3 = rif gw (10.0.1.1/24); brout: 4 = srv,
    /// 5 = rif up (10.0.2.1/24).
    fn new() -> Lab {
        let mut l = Lab {
            bridges: vec![
                Some(Bridge::new("brin", BridgeSettings::default())),
                Some(Bridge::new("brout", BridgeSettings::default())),
            ],
            attach: vec![Attach::None; 8],
            up: vec![true; 8],
            router: Router::new(),
            stats: vec![PortStats::default(); 8],
            plan: Plan::new(8, BATCH, 32),
        };
        for (p, b) in [(1usize, 0usize), (2, 0), (4, 1)] {
            l.attach[p] = Attach::Bridge(b);
            l.bridges[b]
                .as_mut()
                .unwrap()
                .add_port(p as PortId, Member::default());
        }
        l.svi("gw", 0, 3, "10.0.1.1/24");
        l.svi("up", 1, 5, "10.0.2.1/24");
        l
    }

    fn svi(&mut self, name: &str, bridge: usize, pid: PortId, addr: &str) {
        let cfg = RifConfig {
            name: name.into(),
            kind: RifType::Bridge,
            bridge: Some("b".into()),
            vlan: None,
            addr: addr.parse().unwrap(),
            mac: None,
            netns: None,
            ifname: None,
            mtu: None,
        };
        let mac = stable_mac(name);
        let id = self
            .router
            .add_rif(Rif {
                name: name.into(),
                kind: RifKind::Svi { bridge, vlan: 1 },
                addr: cfg.addr,
                mac,
                mtu: 1500,
                pid,
                cfg,
            })
            .unwrap();
        self.attach[pid as usize] = Attach::Svi { bridge, rif: id };
        let b = self.bridges[bridge].as_mut().unwrap();
        b.add_port(pid, Member::internal(1));
        b.fdb.add_static(1, mac, pid).unwrap();
    }

    fn run(&mut self, port: PortId, frames: &mut [Frame], now: u64) -> usize {
        let mut fab = Fabric {
            bridges: &mut self.bridges,
            attach: &self.attach,
            up: &self.up,
            router: &mut self.router,
        };
        process(&mut fab, port, frames, now, &mut self.stats, &mut self.plan);
        let n = self
            .plan
            .dirty
            .iter()
            .map(|&p| self.plan.txq[p as usize].len())
            .sum();
        self.plan.clear();
        n
    }
}

fn arp(mac: MacAddr, ip: [u8; 4], tip: [u8; 4]) -> Frame {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac.0);
    f[28..32].copy_from_slice(&ip);
    f[38..42].copy_from_slice(&tip);
    Frame::from_bytes(&f)
}

/// A frame's bytes (templates are plain arrays: 100 000 `Frame`s would be
/// 6.5 GB of buffers, and the benchmark would measure their cache misses).
/// Ethernet + IPv4 + UDP (checksums valid: the router checks the IPv4
/// one; UDP's is updated incrementally).
fn udp(src_mac: MacAddr, dst_mac: MacAddr, src: [u8; 4], sport: u16, dst: [u8; 4]) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[..6].copy_from_slice(&dst_mac.0);
    f[6..12].copy_from_slice(&src_mac.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let p = &mut f[14..];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&46u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&53u16.to_be_bytes());
    p[24..26].copy_from_slice(&26u16.to_be_bytes());
    let c = dataplane::wire::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    f
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    let now = 1_000_000_000u64;
    let mut l = Lab::new();
    let gw = stable_mac("gw");
    let mut a = [
        arp(C1, [10, 0, 1, 2], [10, 0, 1, 1]),
        arp(C2, [10, 0, 1, 3], [10, 0, 1, 1]),
    ];
    l.run(1, &mut a[..1], now);
    l.run(2, &mut a[1..], now);
    l.run(4, &mut [arp(SRV, [10, 0, 2, 2], [10, 0, 2, 1])], now);

    // Bridged: c1 -> c2.
    let tmpl: Vec<[u8; 60]> = (0..BATCH)
        .map(|i| udp(C1, C2, [10, 0, 1, 2], 1000 + i as u16, [10, 0, 1, 3]))
        .collect();
    let mut batch: Vec<Frame> = (0..BATCH).map(|_| Frame::new()).collect();
    g.bench_function("l2", |b| {
        b.iter(|| {
            for (f, t) in batch.iter_mut().zip(&tmpl) {
                f.set_from_bytes(t);
            }
            black_box(l.run(1, &mut batch, now))
        })
    });

    // Routed: c1 -> srv.
    let tmpl: Vec<[u8; 60]> = (0..BATCH)
        .map(|i| udp(C1, gw, [10, 0, 1, 2], 1000 + i as u16, [10, 0, 2, 2]))
        .collect();
    g.bench_function("routed", |b| {
        b.iter(|| {
            for (f, t) in batch.iter_mut().zip(&tmpl) {
                f.set_from_bytes(t);
            }
            let n = l.run(1, &mut batch, now);
            debug_assert_eq!(n, BATCH);
            black_box(n)
        })
    });

    // Routed with masquerade over N flows (distinct inside endpoints:
    // 10.0.1.x hosts on brin, each with its own ports).
    l.router
        .add_snat(SnatConfig {
            out: "up".into(),
            to: Some("10.0.2.100-10.0.2.103".into()),
            src: None,
        })
        .unwrap();
    for flows in [64usize, 100_000] {
        l.router.nat.set_max_conns(flows * 2);
        let ep = |i: usize| ([10, 0, 1, 10 + (i % 200) as u8], 1024 + (i / 200) as u16);
        let tmpl: Vec<[u8; 60]> = (0..flows)
            .map(|i| {
                let (ip, port) = ep(i);
                udp(C1, gw, ip, port, [10, 0, 2, 2])
            })
            .collect();
        // Create the flows.
        for chunk in tmpl.chunks(BATCH) {
            for (f, t) in batch.iter_mut().zip(chunk) {
                f.set_from_bytes(t);
            }
            l.run(1, &mut batch[..chunk.len()], now);
        }
        assert!(l.router.nat.len() >= flows, "{} flows", l.router.nat.len());
        let mut rng = 77u64;
        let order: Vec<usize> = (0..1 << 16)
            .map(|_| below(next(&mut rng), flows as u64) as usize)
            .collect();
        let mut k = 0usize;
        g.bench_with_input(BenchmarkId::new("routed_snat", flows), &flows, |b, _| {
            b.iter(|| {
                for f in batch.iter_mut() {
                    k = (k + 1) & 0xffff;
                    f.set_from_bytes(&tmpl[order[k]]);
                }
                let n = l.run(1, &mut batch, now);
                debug_assert_eq!(n, BATCH);
                black_box(n)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
