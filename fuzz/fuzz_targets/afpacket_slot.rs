//! AF_PACKET ring slots as the kernel might have written them: whatever
//! the header says, a slot is read only inside itself, behind its header.
#![no_main]
use dataplane::port::afpacket::{fuzz_classify, FUZZ_MIN_MAC};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 34 {
        return;
    }
    let status = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
    // Slot sizes as set-up allows them: MIN_MAC + 64 up to 64 KiB.
    let fs = usize::from(u16::from_ne_bytes([data[4], data[5]])).max(FUZZ_MIN_MAC + 64);
    let hdr: &[u8; 28] = data[6..34].try_into().unwrap();
    if let Some((mac, len)) = fuzz_classify(status, hdr, fs) {
        assert!(mac >= FUZZ_MIN_MAC, "frame inside the slot header");
        assert!(mac + len <= fs, "frame past the slot");
    }
});
