//! The router's tables on arbitrary input: SNAT on arbitrary IPv4 packets
//! both ways (nothing may panic; the flow table stays within its limit), and
//! route prefixes parsed from arbitrary strings.
#![no_main]
use dataplane::router::nat::{Nat, Pool, Timeouts};
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
        if flags & 2 != 0 {
            let _ = nat.outbound(&mut pkt, partial, &pool, now);
        } else {
            let _ = nat.inbound(&mut pkt, partial, now);
        }
        assert!(nat.len() <= 64);
    });
});
