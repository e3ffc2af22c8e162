//! Feeds arbitrary bytes as frames from arbitrary ports into a bridge with a
//! tiny FDB limit: no input may panic, and the FDB never exceeds its limit.
#![no_main]
use dataplane::bridge::{Bridge, BridgeSettings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut b = Bridge::new(
        "br0",
        BridgeSettings {
            fdb_max: Some(8),
            ..Default::default()
        },
    );
    for p in 0..4 {
        b.add_port(p, Default::default());
    }
    // Split the input into frames at 0xff 0xfe markers; the byte before each
    // frame picks its ingress port and the time advances per frame. Frames are
    // prefetched as the worker does, and the FDB is aged in parts.
    for (i, chunk) in data.split(|&x| x == 0xfe).enumerate() {
        let port = chunk.first().map_or(0, |p| u32::from(*p % 4));
        let frame = chunk.get(1..).unwrap_or(&[]);
        let now = (i as u64) * 1_000_000_000;
        b.prefetch_frame(port, frame);
        let _ = b.decide(port, frame, now);
        if i % 16 == 15 {
            b.fdb.age_part(now, 4);
        }
        assert!(b.fdb.dynamic_len() <= 8);
    }
});
