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
        let d = b.decide(port, &f, i * 1_000_000);
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
