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
