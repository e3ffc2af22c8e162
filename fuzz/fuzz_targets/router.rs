//! The router's tables on arbitrary input: SNAT on arbitrary IPv4 packets
//! both ways and hairpinned (nothing may panic; the flow table stays within
//! its limit; a packet hairpinning refuses to touch is left unchanged), and
//! route prefixes parsed from arbitrary strings.
#![no_main]
use dataplane::router::nat::{Endpoint, Nat, Pool, Timeouts};
use dataplane::router::route::Prefix;
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

thread_local! {
    static NAT: RefCell<Nat> = RefCell::new(Nat::new(64, Timeouts::default()));
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = s.parse::<Prefix>();
    }
    let pool = Pool::new(1, [192, 0, 2, 1].into(), [192, 0, 2, 4].into()).unwrap();
    let (flags, pkt) = (data[0], &data[1..]);
    let mut pkt = pkt.to_vec();
    let now = u64::from(flags >> 2) * 10_000_000_000;
    NAT.with(|nat| {
        let mut nat = nat.borrow_mut();
        let partial = flags & 1 != 0;
        match (flags >> 1) % 3 {
            0 => {
                let _ = nat.outbound(&mut pkt, partial, &pool, now);
            }
            1 => {
                let _ = nat.inbound(&mut pkt, partial, now);
            }
            _ => {
                // As the router asks: is the destination a live mapping?
                if pkt.len() >= 24 {
                    let dst = u32::from_be_bytes([pkt[16], pkt[17], pkt[18], pkt[19]]);
                    let ihl = usize::from(pkt[0] & 0x0f) * 4;
                    let port = pkt
                        .get(ihl + 2..ihl + 4)
                        .map_or(0, |p| u16::from_be_bytes([p[0], p[1]]));
                    let _ = nat.is_mapped(pkt[9], Endpoint { ip: dst, port }, now);
                }
                let before = pkt.clone();
                match nat.hairpin(&mut pkt, partial, &pool, now) {
                    Ok(true) => {}
                    Ok(false) | Err(_) => assert_eq!(pkt, before, "untouched"),
                }
            }
        }
        assert!(nat.len() <= 64);
    });
});
