//! A vhost-user guest's rings as a malicious guest might write them: the
//! input is the guest memory holding the descriptor table, avail and used
//! rings and buffers. Every chain is read (TX) or filled (RX) as the port
//! does, through vm-memory's checked accessors: no panic, no hang, nothing
//! outside guest memory.
#![no_main]
use dataplane::port::vhost_user::fuzz_rings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    // Queue sizes a guest may set: powers of two up to 1024.
    let qsize = 1u16 << (data[0] % 11);
    let acked = if data[1] & 1 != 0 { u64::MAX } else { 0 };
    let _ = fuzz_rings(&data[2..], qsize, acked);
});
