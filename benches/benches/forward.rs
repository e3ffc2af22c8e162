//! Per-frame cost of the forwarding decision (criterion).
//!
//! `cargo bench -p vswitch-benches` prints ns/frame; throughput is reported
//! in elements (frames) per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::bridge::{Bridge, BridgeSettings, Verdict};
use dataplane::MacAddr;
use std::hint::black_box;
use vswitch_benches::{below, next};

fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(64, 0);
    f
}

fn mac(i: u64) -> MacAddr {
    MacAddr::from_u64(0x0200_0000_0000 | i)
}

fn bridge_with(entries: u64) -> Bridge {
    let mut b = Bridge::new(
        "br0",
        BridgeSettings {
            fdb_max: Some(2_000_000),
            ..Default::default()
        },
    );
    for p in 0..8 {
        b.add_port(p, Default::default());
    }
    for i in 0..entries {
        b.fdb.learn(1, mac(i), (i % 8) as u32, 0, None);
    }
    b
}

fn learned_unicast(c: &mut Criterion) {
    let mut g = c.benchmark_group("bridge");
    g.throughput(Throughput::Elements(1));
    let mut b = bridge_with(2);
    let f = frame(mac(1), mac(0));
    g.bench_function("learned_unicast", |bench| {
        bench.iter(|| {
            let d = b.decide(0, black_box(&f), 1);
            debug_assert!(matches!(d.verdict, Verdict::Unicast(1)));
            black_box(d)
        })
    });
    let bcast = frame(MacAddr::BROADCAST, mac(0));
    g.bench_function("flood_decision_8_ports", |bench| {
        bench.iter(|| black_box(b.decide(0, black_box(&bcast), 1)))
    });
    g.finish();
}

fn fdb_scaling(c: &mut Criterion) {
    // Lookups spread over every entry: at 1 M entries (about 50 MB) each one
    // is a cache and TLB miss, so this measures the memory system.
    let mut g = c.benchmark_group("fdb_lookup");
    g.throughput(Throughput::Elements(1));
    for n in [1_000u64, 1_000_000] {
        let b = bridge_with(n);
        let mut i = 0u64;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, &n| {
            bench.iter(|| {
                i = (i + 7919) % n;
                black_box(b.fdb.lookup(1, mac(i), 1))
            })
        });
    }
    g.finish();
    // The same tables with traffic among 1 000 stations (the rest learned
    // but idle): the table's size alone must not make a lookup dearer.
    let mut g = c.benchmark_group("fdb_lookup_1k_active");
    g.throughput(Throughput::Elements(1));
    for n in [1_000u64, 1_000_000] {
        let b = bridge_with(n);
        let stride = n / 1_000;
        let mut i = 0u64;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
            bench.iter(|| {
                i = (i + 7) % 1_000;
                black_box(b.fdb.lookup(1, mac(i * stride), 1))
            })
        });
    }
    g.finish();
}

const BATCH: usize = 64;

fn prefetch_key(b: &Bridge, m: MacAddr) {
    b.fdb.prefetch(1, m);
}

fn prefetch_frame(b: &Bridge, f: &[u8]) {
    b.prefetch_frame(0, f);
}

/// What a worker does with a batch: 64 random keys among all entries,
/// prefetched first so their misses overlap, then looked up; beside it the
/// same loop without the prefetch pass. Reported per lookup.
fn fdb_batched(c: &mut Criterion) {
    let mut g = c.benchmark_group("fdb_lookup_batch64");
    g.throughput(Throughput::Elements(BATCH as u64));
    for n in [1_000u64, 1_000_000] {
        let b = bridge_with(n);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut keys = [MacAddr::default(); BATCH];
        for prefetch in [true, false] {
            let name = if prefetch { "prefetch" } else { "plain" };
            g.bench_with_input(BenchmarkId::new(name, n), &n, |bench, &n| {
                bench.iter(|| {
                    for k in keys.iter_mut() {
                        *k = mac(below(next(&mut rng), n));
                    }
                    if prefetch {
                        for k in &keys {
                            prefetch_key(&b, *k);
                        }
                    }
                    let mut hits = 0u32;
                    for k in &keys {
                        hits += u32::from(b.fdb.lookup(1, *k, 1).is_some());
                    }
                    black_box(hits)
                })
            });
        }
    }
    g.finish();
    // The whole decision for batches of 64 frames between random known
    // stations (learning refreshes the source, the destination is looked
    // up), with and without the worker's prefetch pass. Per frame.
    let mut g = c.benchmark_group("fdb_decide_batch64");
    g.throughput(Throughput::Elements(BATCH as u64));
    for n in [1_000u64, 1_000_000] {
        let mut b = bridge_with(n);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let frames: Vec<Vec<u8>> = (0..4096)
            .map(|_| {
                let d = below(next(&mut rng), n);
                let s = below(next(&mut rng), n);
                frame(mac(d), mac(s))
            })
            .collect();
        for prefetch in [true, false] {
            let name = if prefetch { "prefetch" } else { "plain" };
            let mut at = 0usize;
            g.bench_with_input(BenchmarkId::new(name, n), &n, |bench, _| {
                bench.iter(|| {
                    let batch = &frames[at..at + BATCH];
                    at = (at + BATCH) % frames.len();
                    if prefetch {
                        for f in batch {
                            prefetch_frame(&b, f);
                        }
                    }
                    let mut unicast = 0u32;
                    for f in batch {
                        let d = b.decide(0, black_box(f), 1);
                        unicast += u32::from(matches!(d.verdict, Verdict::Unicast(_)));
                    }
                    black_box(unicast)
                })
            });
        }
    }
    g.finish();
}

/// The ageing sweep over a full table with nothing to remove (the common
/// case): all at once (`age`), and the tenth of it the engine's timer sweeps
/// every 100 ms (`age_part`). Per call, holding the tables' lock.
fn fdb_age(c: &mut Criterion) {
    let mut g = c.benchmark_group("fdb_age");
    g.sample_size(20);
    for n in [1_000u64, 1_000_000] {
        let mut b = bridge_with(n);
        g.bench_with_input(BenchmarkId::new("full", n), &n, |bench, _| {
            bench.iter(|| black_box(b.fdb.age(1)))
        });
        g.bench_with_input(BenchmarkId::new("tenth", n), &n, |bench, _| {
            bench.iter(|| black_box(b.fdb.age_part(1, 10)))
        });
    }
    g.finish();
}

/// VLAN push and pop as a port applies them: building the edited prefix
/// (virtio header with shifted offsets, MACs, tag) that goes out with the
/// untouched rest of the frame by scatter-gather.
fn vlan_edit(c: &mut Criterion) {
    use dataplane::bridge::vlan::{TagEdit, VlanMode, VlanSet};
    use dataplane::bridge::Member;
    use dataplane::packet::{Frame, EDIT_PREFIX_MAX};
    let mut g = c.benchmark_group("vlan");
    g.throughput(Throughput::Elements(1));
    let untagged = Frame::from_bytes(&frame(mac(1), mac(0)));
    let mut tagged_bytes = frame(mac(1), mac(0));
    tagged_bytes.splice(12..12, [0x81, 0x00, 0x00, 0x0a]);
    let tagged = Frame::from_bytes(&tagged_bytes);
    let mut scratch = [0u8; EDIT_PREFIX_MAX];
    g.bench_function("push", |bench| {
        bench.iter(|| black_box(untagged.edited_prefix(black_box(TagEdit::Push(10)), &mut scratch)))
    });
    g.bench_function("pop", |bench| {
        bench.iter(|| black_box(tagged.edited_prefix(black_box(TagEdit::Pop), &mut scratch)))
    });
    // The whole ingress decision for a tagged frame on a trunk port.
    let mut b = bridge_with(2);
    b.set_member(
        0,
        Member {
            vlan: VlanMode::Trunk {
                vlans: VlanSet::parse("1-100").unwrap(),
                native: None,
            },
            ..Default::default()
        },
    );
    g.bench_function("trunk_classify_and_forward", |bench| {
        bench.iter(|| black_box(b.decide(0, black_box(&tagged_bytes), 1)))
    });
    g.finish();
}

/// An Ethernet + IPv4 + TCP (32-byte header: timestamps) frame with
/// `payload` bytes, the TCP checksum left partial as a GSO sender leaves it.
fn tcpv4_frame(payload: usize) -> Vec<u8> {
    let mut f = frame(mac(1), mac(0));
    f.truncate(14);
    let ip_len = (20 + 32 + payload) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51]); // ports
    f.extend_from_slice(&1_000_000u32.to_be_bytes()); // seq
    f.extend_from_slice(&77u32.to_be_bytes()); // ack
    f.extend_from_slice(&[0x80, 0x18, 0x02, 0x00, 0x12, 0x34, 0, 0]); // doff 8, ACK|PSH
    f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]); // NOP NOP TS
    f.extend((0..payload).map(|i| i as u8));
    f
}

/// Software offloads for an egress without them (VXLAN's UDP socket, a
/// router): a 64 KiB TCPv4 super-frame cut at MSS 1448 (45 segments), timed
/// per super-frame; and completing the partial checksum of a 1500-byte packet.
fn offload(c: &mut Criterion) {
    use dataplane::offload::{complete_csum, segment, Segments};
    use dataplane::packet::VnetHdr;
    let mut g = c.benchmark_group("offload");
    g.throughput(Throughput::Elements(1));
    let sup = tcpv4_frame(45 * 1448);
    let h = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 66,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    let mut out = Segments::new();
    g.bench_function("segment_64k_tcpv4", |bench| {
        bench.iter(|| {
            out.clear();
            let n = segment(&h, black_box(&sup), &mut out);
            debug_assert_eq!(n, Ok(45));
            black_box(n)
        })
    });
    let mut one = tcpv4_frame(1500 - 20 - 32);
    let h = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 16,
        ..Default::default()
    };
    g.bench_function("complete_csum_1500", |bench| {
        bench.iter(|| {
            one[50..52].copy_from_slice(&[0x12, 0x34]); // the partial sum again
            black_box(complete_csum(&h, black_box(&mut one)))
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    learned_unicast,
    fdb_scaling,
    fdb_batched,
    fdb_age,
    vlan_edit,
    offload
);
criterion_main!(benches);
