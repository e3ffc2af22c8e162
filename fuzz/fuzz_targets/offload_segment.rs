//! Software segmentation and checksum completion on arbitrary frames with
//! arbitrary virtio headers (the first 10 input bytes), and the VXLAN
//! receive-side checks and the outer source-port flow hash on the rest: nothing may panic, and segmentation
//! output stays bounded.
#![no_main]
use dataplane::offload::{segment, Segments, MAX_SEGMENTS};
use dataplane::packet::VnetHdr;
use dataplane::offload::partial_csum;
use dataplane::port::vxlan::parse_vxlan_header;
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

thread_local! {
    static OUT: RefCell<Segments> = RefCell::new(Segments::new());
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let h = VnetHdr::parse(data[..10].try_into().unwrap());
    let frame = &data[10..];
    OUT.with(|out| {
        let mut out = out.borrow_mut();
        out.clear();
        if let Ok(n) = segment(&h, frame, &mut out) {
            assert_eq!(n, out.len());
            assert!(n <= MAX_SEGMENTS);
        }
    });
    let _ = parse_vxlan_header(frame);
    let _ = dataplane::port::vxlan::flow_hash(frame);
    let _ = partial_csum(frame);
});
