//! No panic reachable from packet bytes or control input: the fuzz targets'
//! properties, driven by a deterministic pseudo-random generator so they run
//! on a stable toolchain in every `cargo test`.

use dataplane::api::Request;
use dataplane::bridge::{Bridge, BridgeSettings, Verdict};
use dataplane::config::Config;

/// xorshift64*: small, deterministic, good enough to spread inputs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_frames_never_panic_and_fdb_stays_bounded() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut b = Bridge::new(
        "br0",
        BridgeSettings {
            fdb_max: Some(64),
            ..Default::default()
        },
    );
    for p in 0..4 {
        b.add_port(p, Default::default());
    }
    for i in 0..200_000u64 {
        let len = (rng.next() % 128) as usize;
        let mut f = rng.bytes(len);
        // Half the time, a plausible unicast source so learning is exercised.
        if len >= 12 && i % 2 == 0 {
            f[6] &= 0xfe;
        }
        let port = (rng.next() % 4) as u32;
        b.prefetch_frame(port, &f);
        let d = b.decide(port, &f, i * 1_000_000);
        if i % 1024 == 0 {
            b.fdb.age_part(i * 1_000_000, 8);
        }
        if let Verdict::Unicast(p) = d.verdict {
            assert_ne!(p, port, "never back out of the ingress port");
            assert!(p < 4);
        }
        assert!(b.fdb.dynamic_len() <= 64);
    }
    assert_eq!(b.fdb.dynamic_len(), 64, "the limit was reached and held");
}

#[test]
fn random_control_lines_never_panic() {
    let mut rng = Rng(42);
    let seeds = [
        r#"{"cmd":"add-br","name":"br0"}"#,
        r#"{"cmd":"add-port","bridge":"b","port":{"name":"p","type":"tap"}}"#,
        r#"{"cmd":"fdb-add","bridge":"b","mac":"02:00:00:00:00:01","port":"p","vlan":4095}"#,
        "[[bridge]]\nname = \"br0\"\n[[bridge.port]]\nname = \"p\"\ntype = \"tap\"\n",
    ];
    for i in 0..50_000 {
        let mut s = seeds[i % seeds.len()].as_bytes().to_vec();
        // Mutate a few bytes.
        for _ in 0..(rng.next() % 4) {
            let at = (rng.next() as usize) % s.len();
            s[at] = rng.next() as u8;
        }
        if let Ok(text) = std::str::from_utf8(&s) {
            let _ = serde_json::from_str::<Request>(text);
            let _ = Config::from_toml(text);
        }
    }
}

/// VXLAN receive checks and software segmentation on random bytes and on
/// random mutations of a valid TCP frame: never a panic, output bounded.
#[test]
fn random_vxlan_and_offload_input_never_panics() {
    use dataplane::offload::partial_csum;
    use dataplane::offload::{segment, Segments, MAX_SEGMENTS};
    use dataplane::packet::VnetHdr;
    use dataplane::port::vxlan::parse_vxlan_header;
    let mut rng = Rng(0x5eed_cafe);
    let mut out = Segments::new();
    // A plausible IPv4/TCP frame to mutate.
    let mut base = vec![0u8; 1514];
    base[12..14].copy_from_slice(&[0x08, 0x00]);
    base[14] = 0x45;
    base[16..18].copy_from_slice(&1500u16.to_be_bytes());
    base[23] = 6;
    base[14 + 20 + 12] = 0x50;
    for i in 0..20_000 {
        let mut f = if i % 2 == 0 {
            let n = (rng.next() % 1600) as usize;
            rng.bytes(n)
        } else {
            let mut f = base.clone();
            for _ in 0..(rng.next() % 8) {
                let at = (rng.next() as usize) % f.len();
                f[at] = rng.next() as u8;
            }
            f.truncate((rng.next() as usize) % (f.len() + 1));
            f
        };
        let _ = parse_vxlan_header(&f);
        let _ = partial_csum(&f);
        let hb: [u8; 10] = rng.bytes(10).try_into().unwrap();
        let h = VnetHdr::parse(&hb);
        out.clear();
        if let Ok(n) = segment(&h, &f, &mut out) {
            assert!(n <= MAX_SEGMENTS && n == out.len());
        }
        f.clear();
    }
}

#[test]
fn random_packets_through_snat_never_panic_and_stay_bounded() {
    use dataplane::router::nat::{Nat, Pool, Timeouts};
    let mut rng = Rng(0x0dd_ba11);
    let pool = Pool::new(1, [192, 0, 2, 1].into(), [192, 0, 2, 2].into()).unwrap();
    let mut nat = Nat::new(100, Timeouts::default());
    // A plausible IPv4 packet to mutate: TCP, UDP or ICMP from an inside host.
    let mut base = vec![0u8; 60];
    base[0] = 0x45;
    base[2..4].copy_from_slice(&60u16.to_be_bytes());
    base[12..16].copy_from_slice(&[10, 0, 0, 2]);
    base[16..20].copy_from_slice(&[192, 0, 2, 1]);
    let mut now = 0u64;
    for i in 0..100_000u64 {
        now += rng.next() % 50_000_000_000;
        let mut p = if i % 4 == 0 {
            let n = (rng.next() % 80) as usize;
            rng.bytes(n)
        } else if i % 4 == 1 {
            // An ICMP error quoting a flow's packet, then mutated.
            let mut p = base.clone();
            p[9] = 1;
            p[20] = [3u8, 11, 12][(rng.next() % 3) as usize];
            p[28] = 0x45;
            p[37] = [1u8, 6, 17][(rng.next() % 3) as usize];
            p[40..44].copy_from_slice(&[192, 0, 2, 1]);
            p[44..48].copy_from_slice(&[198, 51, 100, 7]);
            for _ in 0..(rng.next() % 4) {
                let at = 20 + (rng.next() as usize) % (p.len() - 20);
                p[at] = rng.next() as u8;
            }
            p.truncate((rng.next() as usize) % (p.len() + 1));
            p
        } else {
            let mut p = base.clone();
            p[9] = [1u8, 6, 17][(rng.next() % 3) as usize];
            for _ in 0..(rng.next() % 6) {
                let at = 12 + (rng.next() as usize) % (p.len() - 12);
                p[at] = rng.next() as u8;
            }
            p.truncate((rng.next() as usize) % (p.len() + 1));
            p
        };
        let partial = rng.next().is_multiple_of(2);
        if rng.next().is_multiple_of(2) {
            let _ = nat.outbound(&mut p, partial, &pool, now);
        } else {
            let _ = nat.inbound(&mut p, partial, now);
        }
        if i.is_multiple_of(1000) {
            nat.expire(now, 64);
        }
        assert!(nat.len() <= 100);
    }
    assert!(nat.conns(now).count() <= 100);
}

#[test]
fn random_routes_and_prefix_strings_never_panic() {
    use dataplane::router::route::{Lpm, Prefix};
    let mut rng = Rng(0xfeed_f00d);
    for _ in 0..20_000 {
        let n = (rng.next() % 24) as usize;
        let s: String = (0..n)
            .map(|_| b"0123456789./ x:-"[(rng.next() % 16) as usize] as char)
            .collect();
        let _ = s.parse::<Prefix>();
    }
    let mut t: Lpm<u32> = Lpm::with_limits(200, 64);
    for i in 0..5_000u32 {
        let len = (rng.next() % 33) as u8;
        let addr = (rng.next() as u32) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        let p = Prefix::new(addr.into(), len).unwrap();
        if rng.next().is_multiple_of(3) {
            t.remove(p);
        } else {
            let _ = t.insert(p, i);
        }
        assert!(t.len() <= 200);
        let _ = t.lookup(rng.next() as u32);
    }
}

/// The routed pipeline (bridges, router interfaces on them and on a TUN,
/// SNAT) on random and mutated frames through every port of the lab, with
/// random time steps and timer runs: the same lab and step reader as the
/// `pipeline` fuzz target (`fuzz/pipeline_lab.rs`), fed pseudo-random
/// bytes. After each step the reader checks that nothing is planned out of
/// an internal or down port or a missing slot, that what the router sends
/// has a valid IPv4 header, and that the neighbour table, its queues, the
/// NAT table and the FDBs stay within their limits. At the end, once the
/// hosts have announced themselves again, a routed and NATed packet and
/// its reply still get through.
#[test]
fn random_frames_through_the_routed_pipeline_never_panic_and_stay_bounded() {
    use dataplane::packet::Frame;
    use dataplane::pipeline::Plan;
    use pipeline_lab::*;
    let mut rng = Rng(0x0b5e_55ed_c0ff_ee11);
    let mut lab = Lab::new();
    let mut pool: Vec<Frame> = (0..BATCH).map(|_| Frame::new()).collect();
    let mut plan = Plan::new(NPORTS, BATCH, 32);
    let (mut full_neigh, mut full_nat) = (false, false);
    for i in 0..2000 {
        // Inputs of a few dozen steps each; now and then a fresh start.
        if i % 200 == 0 {
            lab.reset();
        }
        let n = 64 + (rng.next() % 4096) as usize;
        let data = rng.bytes(n);
        drive(&mut lab, &data, &mut pool, &mut plan);
        full_neigh |= lab.router.neigh.len() == NEIGH_MAX;
        full_nat |= lab.router.nat.len() == NAT_MAX;
    }
    let rx: u64 = lab.stats.iter().map(|s| s.rx_packets).sum();
    let tx: u64 = lab.stats.iter().map(|s| s.tx_packets).sum();
    eprintln!(
        "since the last reset: {rx} frames in, {tx} out; {} neighbours, {} NAT flows",
        lab.router.neigh.len(),
        lab.router.nat.len()
    );
    for r in dataplane::stats::DropReason::ALL {
        let n: u64 = lab.stats.iter().map(|s| s.get(*r)).sum();
        if n > 0 {
            eprint!("{}={n} ", r.name());
        }
    }
    eprintln!();
    assert!(full_neigh, "the neighbour table was filled");
    assert!(tx > 0, "the router sent something");

    // The random steps seldom leave more than a few NAT flows alive at
    // once: many new flows from the inside (random addresses and ports, to
    // random destinations behind the default route) between random steps.
    let (gw, up) = (lab.gw_mac(1, 0), lab.gw_mac(4, 0));
    for _ in 0..200 {
        let sport = rng.next() as u16;
        let dst = (rng.next() as u32 | 0x0100_0000) & 0x7fff_ffff;
        let f = udp_frame(C1, gw, C1_IP, dst.to_be_bytes(), sport, 53);
        pipeline_rx(&mut lab, &mut pool, &mut plan, 1, &f);
        let data = rng.bytes(256);
        drive(&mut lab, &data, &mut pool, &mut plan);
        full_nat |= lab.router.nat.len() == NAT_MAX;
    }
    assert!(full_nat, "the NAT table was filled");
    let full: u64 = lab
        .stats
        .iter()
        .map(|s| s.get(dataplane::stats::DropReason::NatTableFull))
        .sum();
    assert!(full > 0, "new flows beyond the limit were dropped");

    // A day later (the NAT flows and learned MACs of the garbage expire),
    // the hosts announce themselves (ARP requests for their gateways, as
    // they would).
    lab.now += 86_400_000_000_000;
    for _ in 0..10 {
        lab.run(None, &mut [], &mut plan);
    }
    assert_eq!(lab.router.nat.len(), 0, "the garbage's flows expired");
    let out = pipeline_rx(
        &mut lab,
        &mut pool,
        &mut plan,
        1,
        &arp_request(C1, C1_IP, GW_IP),
    );
    assert!(
        out.iter()
            .any(|(p, f)| *p == 1 && f[12..14] == [0x08, 0x06] && f[..6] == C1.0),
        "gw answers c1's ARP request: {out:02x?}"
    );
    pipeline_rx(
        &mut lab,
        &mut pool,
        &mut plan,
        4,
        &arp_request(SRV, SRV_IP, UP_IP),
    );
    // c1 -> srv, masqueraded; srv's reply back to c1.
    let out = pipeline_rx(
        &mut lab,
        &mut pool,
        &mut plan,
        1,
        &udp_frame(C1, gw, C1_IP, SRV_IP, 40000, 53),
    );
    assert_eq!(out.len(), 1, "{out:02x?}");
    let (p, f) = &out[0];
    assert_eq!(*p, 4, "out to srv");
    assert_eq!((&f[..6], &f[6..12]), (&SRV.0[..], &up.0[..]));
    assert_eq!(f[14 + 8], 63, "TTL decremented");
    assert_eq!(&f[14 + 12..14 + 16], &UP_IP, "masqueraded");
    assert_eq!(dataplane::wire::checksum(&f[14..34]), 0);
    let sport = u16::from_be_bytes([f[34], f[35]]);
    let out = pipeline_rx(
        &mut lab,
        &mut pool,
        &mut plan,
        4,
        &udp_frame(SRV, up, SRV_IP, UP_IP, 53, sport),
    );
    assert_eq!(out.len(), 1, "{out:02x?}");
    let (p, f) = &out[0];
    assert_eq!(*p, 1, "back to c1");
    assert_eq!((&f[..6], &f[6..12]), (&C1.0[..], &gw.0[..]));
    assert_eq!(&f[14 + 16..14 + 20], &C1_IP);
    assert_eq!(u16::from_be_bytes([f[36], f[37]]), 40000);
}

#[path = "../../fuzz/pipeline_lab.rs"]
mod pipeline_lab;

/// One frame into `port` of the lab; what leaves, by port, tag edits
/// applied.
fn pipeline_rx(
    lab: &mut pipeline_lab::Lab,
    pool: &mut [dataplane::packet::Frame],
    plan: &mut dataplane::pipeline::Plan,
    port: u32,
    frame: &[u8],
) -> Vec<(u32, Vec<u8>)> {
    use dataplane::packet::{EDIT_PREFIX_MAX, VNET_HDR_LEN};
    use dataplane::pipeline::process;
    pool[0].set_from_bytes(frame);
    let mut fab = dataplane::pipeline::Fabric {
        bridges: &mut lab.bridges,
        attach: &lab.attach,
        up: &lab.up,
        router: &mut lab.router,
    };
    process(
        &mut fab,
        port,
        &mut pool[..1],
        lab.now,
        &mut lab.stats,
        plan,
    );
    let mut out = Vec::new();
    for &p in &plan.dirty {
        for (frames, q) in [
            (&pool[..1], &plan.txq[p as usize]),
            (&plan.orig.frames[..], &plan.txq_orig[p as usize]),
        ] {
            for it in q {
                let f = &frames[usize::from(it.idx)];
                let mut scratch = [0u8; EDIT_PREFIX_MAX];
                let (n, rest) = f.edited_prefix(it.edit, &mut scratch);
                let mut b = scratch[VNET_HDR_LEN..n].to_vec();
                b.extend_from_slice(&f.data()[rest..]);
                out.push((p, b));
            }
        }
    }
    plan.clear();
    out
}

fn arp_request(mac: dataplane::MacAddr, ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    use dataplane::wire::{arp, eth};
    let mut f = vec![0u8; 60];
    eth::emit(
        &mut f,
        dataplane::MacAddr::BROADCAST,
        mac,
        eth::ETHERTYPE_ARP,
    );
    arp::Arp {
        op: arp::OP_REQUEST,
        sender_mac: mac,
        sender_ip: ip.into(),
        target_mac: dataplane::MacAddr::default(),
        target_ip: target.into(),
    }
    .emit(&mut f[14..]);
    f
}

fn udp_frame(
    src_mac: dataplane::MacAddr,
    dst_mac: dataplane::MacAddr,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, b"still routed")
        .unwrap();
    v
}
