//! Per-packet cost of the router's tables (criterion): longest-prefix match
//! and SNAT translation both ways.
//!
//! `cargo bench -p vswitch-benches --bench router` prints ns/packet and
//! packets (elements) per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::router::nat::{FlowKey, Inbound, Nat, Pool, PrefetchStep, Timeouts};
use dataplane::router::route::{Lpm, Prefix};
use std::hint::black_box;
use std::net::Ipv4Addr;
use vswitch_benches::{below, next};

/// A table shaped like an Internet routing table: mostly /24s, a good share
/// of /16../23, a few shorter and longer ones, and a default route.
fn routing_table(n: usize, rng: &mut u64) -> Lpm<u32> {
    let mut t = Lpm::with_limits(n + 1, 1 << 20);
    t.insert(Prefix::new(Ipv4Addr::UNSPECIFIED, 0).unwrap(), 0)
        .unwrap();
    let mut i = 1u32;
    while t.len() < n {
        let r = next(rng);
        let len = match r % 100 {
            0..=59 => 24,
            60..=89 => 16 + (r >> 8) as u8 % 8,
            90..=94 => 8 + (r >> 8) as u8 % 8,
            _ => 25 + (r >> 8) as u8 % 8,
        };
        let addr = ((r >> 32) as u32) & (u32::MAX << (32 - u32::from(len)));
        if t.insert(Prefix::new(addr.into(), len).unwrap(), i).is_ok() {
            i += 1;
        }
    }
    t
}

fn lpm(c: &mut Criterion) {
    let mut g = c.benchmark_group("lpm_lookup");
    g.throughput(Throughput::Elements(1));
    for n in [1_000usize, 100_000, 500_000] {
        let mut rng = 0x1234_5678_9abc_def1u64;
        let t = routing_table(n, &mut rng);
        // Addresses spread over the whole space: most land in a /24 or
        // shorter route's root or level-2 entry, some go three levels deep.
        let addrs: Vec<u32> = (0..4096).map(|_| next(&mut rng) as u32).collect();
        let mut k = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
            bench.iter(|| {
                k = (k + 1) & 4095;
                black_box(t.lookup(black_box(addrs[k])))
            })
        });
    }
    g.finish();
}

/// IPv4 + TCP (20 + 20 bytes), checksums valid.
fn tcp_packet(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x10; // ACK
    p[34..36].copy_from_slice(&65535u16.to_be_bytes());
    let ip = !fold(&p[..20]);
    p[10..12].copy_from_slice(&ip.to_be_bytes());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&p[20..]);
    let l4 = !fold(&pseudo);
    p[36..38].copy_from_slice(&l4.to_be_bytes());
    p
}

fn fold(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// SNAT of established TCP flows: the inside-to-outside rewrite and the
/// reply's way back, each a flow lookup plus the address, port and
/// incremental checksum updates. Each iteration first restores the packet
/// from its template (a 40-byte copy, included in the figure), since a
/// translated packet would otherwise start a new flow.
fn snat(c: &mut Criterion) {
    let mut g = c.benchmark_group("snat");
    g.throughput(Throughput::Elements(1));
    // Each flow is its own inside endpoint, so its own mapping (RFC 4787
    // endpoint-independent): 100 000 need more than one address's ports.
    let pool = Pool::new(1, [192, 0, 2, 1].into(), [192, 0, 2, 4].into()).unwrap();
    let now = 1_000_000_000;
    for flows in [1usize, 100_000] {
        let mut nat = Nat::new(flows * 2, Timeouts::default());
        // Templates side by side in one array, as frames sit in a batch.
        let mut outs: Vec<[u8; 40]> = Vec::with_capacity(flows);
        let mut ins: Vec<[u8; 40]> = Vec::with_capacity(flows);
        for i in 0..flows {
            let inside = [10, 1, (i >> 8) as u8, i as u8];
            let remote = [198, 51, 100, (i % 250) as u8 + 1];
            let out = tcp_packet(inside, 40000 + (i % 1000) as u16, remote, 443);
            let mut first = out.clone();
            let o = nat.outbound(&mut first, false, &pool, now).unwrap();
            ins.push(
                tcp_packet(remote, 443, o.ip.to_be_bytes(), o.port)
                    .try_into()
                    .unwrap(),
            );
            outs.push(out.try_into().unwrap());
        }
        // Visit the flows in a scattered order, as interleaved traffic would.
        let order: Vec<usize> = {
            let mut rng = 99u64;
            (0..4096)
                .map(|_| below(next(&mut rng), flows as u64) as usize)
                .collect()
        };
        let mut buf = [0u8; 40];
        let mut k = 0usize;
        g.bench_with_input(BenchmarkId::new("out", flows), &flows, |bench, _| {
            bench.iter(|| {
                k = (k + 1) & 4095;
                buf.copy_from_slice(&outs[order[k]]);
                black_box(nat.outbound(black_box(&mut buf), false, &pool, now))
            })
        });
        g.bench_with_input(BenchmarkId::new("in", flows), &flows, |bench, _| {
            bench.iter(|| {
                k = (k + 1) & 4095;
                buf.copy_from_slice(&ins[order[k]]);
                let r = nat.inbound(black_box(&mut buf), false, now);
                debug_assert_eq!(r, Ok(Inbound::Translated));
                black_box(r)
            })
        });
        assert_eq!(nat.len(), flows, "the benchmark made no new flows");
    }
    g.finish();
}

/// Route + SNAT per packet as the router does it for a batch: for 64
/// packets of established flows (100 000 flows, 100 000 routes), a longest
/// prefix match and an outbound translation each; once one packet at a
/// time, once with the batch's NAT state prefetched first
/// (`Nat::prefetch`, what the pipeline does).
fn route_snat_batch(c: &mut Criterion) {
    const BATCH: usize = 64;
    let mut g = c.benchmark_group("route_snat_batch");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut rng = 0x5151_5151_u64;
    let table = routing_table(100_000, &mut rng);
    let pool = Pool::new(1, [192, 0, 2, 1].into(), [192, 0, 2, 4].into()).unwrap();
    let now = 1_000_000_000;
    let flows = 100_000usize;
    let mut nat = Nat::new(flows * 2, Timeouts::default());
    let mut outs: Vec<[u8; 40]> = Vec::with_capacity(flows);
    for i in 0..flows {
        let inside = [10, 1, (i >> 8) as u8, i as u8];
        let remote = [198, 51, (i % 200) as u8, (i % 250) as u8 + 1];
        let out = tcp_packet(inside, 40000 + (i % 1000) as u16, remote, 443);
        let mut first = out.clone();
        nat.outbound(&mut first, false, &pool, now).unwrap();
        outs.push(out.try_into().unwrap());
    }
    let order: Vec<usize> = (0..1 << 16)
        .map(|_| below(next(&mut rng), flows as u64) as usize)
        .collect();
    let mut batch = [[0u8; 40]; BATCH];
    let mut keys: Vec<FlowKey> = Vec::with_capacity(BATCH);
    let mut k = 0usize;
    for prefetch in [false, true] {
        let name = if prefetch {
            "prefetched"
        } else {
            "one_at_a_time"
        };
        g.bench_function(name, |bench| {
            bench.iter(|| {
                for b in batch.iter_mut() {
                    k = (k + 1) & 0xffff;
                    b.copy_from_slice(&outs[order[k]]);
                }
                if prefetch {
                    keys.clear();
                    keys.extend(batch.iter().filter_map(|b| nat.flow_key(b, true)));
                    for step in [
                        PrefetchStep::Index,
                        PrefetchStep::Flow,
                        PrefetchStep::Mapping,
                    ] {
                        for k in &keys {
                            nat.prefetch_key(k, step);
                        }
                    }
                }
                let mut hops = 0u32;
                for b in batch.iter_mut() {
                    let dst = u32::from_be_bytes([b[16], b[17], b[18], b[19]]);
                    hops = hops.wrapping_add(table.lookup(dst).unwrap_or(0));
                    let _ = black_box(nat.outbound(b, false, &pool, now));
                }
                black_box(hops)
            })
        });
    }
    assert_eq!(nat.len(), flows, "the benchmark made no new flows");
    g.finish();
}

criterion_group!(benches, lpm, snat, route_snat_batch);
criterion_main!(benches);
