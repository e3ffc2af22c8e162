//! Per-frame cost of the VXLAN port (criterion): decapsulation checks
//! (header, source VTEP, partial-checksum detection) in userspace, and
//! encapsulated sending of a batch through the kernel's UDP stack to a local
//! sink socket (so that figure includes the sendmmsg syscall per batch and
//! the kernel's per-datagram work). The sending runs in a private network
//! namespace the benchmark makes for itself (so it needs root; without it
//! that part is skipped), over its loopback.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::bridge::vlan::TagEdit;
use dataplane::packet::Frame;
use dataplane::port::vxlan::{vxlan_header, VxlanOptions, VxlanPort};
use dataplane::port::{IoScratch, Port, TxItem};
use dataplane::stats::PortStats;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};

fn tcp_frame(len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((len - 14) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    ip[20 + 12] = 0x50;
    f
}

/// Moves this process into a new, empty network namespace with loopback up.
fn private_netns() -> bool {
    // SAFETY: unshare(2) with a flag constant; it only changes this
    // process's namespace membership and reports failure in its result.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return false;
    }
    dataplane::sys::set_up("lo").is_ok()
}

fn vxlan(c: &mut Criterion) {
    if !private_netns() {
        eprintln!("vxlan benchmarks need root (a private network namespace): skipped");
        return;
    }
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let remote = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    // A sink that is never read: datagrams beyond its buffer are dropped by
    // the kernel, as a congested remote would.
    let sink = UdpSocket::bind((remote, 4789)).expect("sink socket");
    let port = VxlanPort::open(&VxlanOptions {
        vni: 100,
        local: lo,
        remotes: vec![remote],
        dstport: 4789,
        learning: false,
        srcport: (49152, 65535),
    })
    .expect("vxlan port on 127.0.0.1");
    // As the engine does once the port has its place.
    port.set_pid(0);
    let mut g = c.benchmark_group("vxlan");
    g.throughput(Throughput::Elements(1));
    let inner = tcp_frame(1514);
    let hdr = vxlan_header(100);
    g.bench_function("decap_checks_1514", |b| {
        b.iter(|| black_box(port.decap(black_box(&hdr), Some(remote), black_box(&inner))))
    });
    let frames: Vec<Frame> = (0..64)
        .map(|_| Frame::from_bytes(&tcp_frame(1514)))
        .collect();
    let items: Vec<TxItem> = (0..64)
        .map(|i| TxItem {
            idx: i,
            edit: TagEdit::None,
            peer: 0,
        })
        .collect();
    let mut sc = IoScratch::default();
    let mut st = PortStats::default();
    g.throughput(Throughput::Elements(64));
    g.bench_function("encap_send_batch64_1514_loopback", |b| {
        b.iter(|| port.send(&frames, &items, &mut st, &mut sc))
    });
    g.finish();
    black_box(st);
    drop(sink);
}

criterion_group!(benches, vxlan);
criterion_main!(benches);
