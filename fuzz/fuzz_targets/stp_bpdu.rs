//! Spanning tree on arbitrary BPDUs: arbitrary bytes as frames arriving on
//! the ports of a running 802.1D instance at advancing times, with timer
//! ticks between them. Nothing may panic, the bridge has at most one root
//! port, a root port is forwarding or on its way there, and what the
//! instance emits parses back as a BPDU.
#![no_main]
use dataplane::bridge::stp::{parse_bpdu, PortRole, Stp, StpSettings};
use dataplane::MacAddr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_bpdu(data);
    let mut stp = Stp::new(MacAddr([2, 0, 0, 0, 0, 0x10]), StpSettings::default(), 0);
    for p in 0..4u32 {
        stp.add_port(p, MacAddr([2, 0, 0, 0, 1, p as u8]), 100 + p, 128, 0);
    }
    let mut now = 0u64;
    let mut out = Vec::new();
    // Frames are separated by 0xfe; the byte before each picks the port and
    // how far time advances (up to ~8 s).
    for chunk in data.split(|&x| x == 0xfe) {
        let Some((&sel, frame)) = chunk.split_first() else {
            continue;
        };
        now += u64::from(sel >> 2) * 125_000_000;
        let port = u32::from(sel & 3);
        let _ = stp.receive(port, frame, now);
        out.clear();
        stp.tick(now, &mut out);
        for (_, f) in &out {
            assert!(parse_bpdu(f).is_ok(), "emitted an unparsable BPDU");
        }
        let st = stp.status();
        let roots = st.ports.iter().filter(|p| p.role == PortRole::Root).count();
        assert!(roots <= 1, "{roots} root ports");
        assert_eq!(roots == 1, st.root_port.is_some());
    }
});
