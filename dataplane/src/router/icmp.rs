//! Rate limiting of the ICMP errors the router generates, like Linux's
//! `icmp_ratelimit` / `icmp_msgs_per_sec` (RFC 1812 §4.3.2.8 asks routers
//! to limit them): a global token bucket of [`GLOBAL_PER_S`] messages a
//! second with a burst of [`GLOBAL_BURST`], and per destination one message
//! a second with a burst of [`PER_DEST_BURST`] (Linux's 1000 ms ratelimit
//! and `XRLIM_BURST_FACTOR` 6). A flood that provokes errors therefore
//! gets at most that many back: the router is no amplifier.
//!
//! The per-destination buckets live in a fixed, direct-mapped table
//! ([`SLOTS`] entries): two destinations that share a slot share a bucket
//! until one replaces the other. Memory is constant whatever the traffic.

const NS: u64 = 1_000_000_000;
pub const GLOBAL_PER_S: u64 = 1000;
pub const GLOBAL_BURST: u64 = 50;
pub const PER_DEST_BURST: u64 = 6;
pub const SLOTS: usize = 1024;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    dst: u32,
    /// Credit in nanoseconds of accrual (one message costs one period).
    credit: u64,
    last: u64,
    used: bool,
}

/// The limiter. Time is an argument.
#[derive(Debug)]
pub struct IcmpLimiter {
    global_credit: u64,
    global_last: u64,
    dests: Box<[Bucket; SLOTS]>,
    seed: u32,
}

impl Default for IcmpLimiter {
    fn default() -> Self {
        IcmpLimiter::new()
    }
}

impl IcmpLimiter {
    pub fn new() -> IcmpLimiter {
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x1c3b_u64) as u32;
        IcmpLimiter {
            global_credit: GLOBAL_BURST * (NS / GLOBAL_PER_S),
            global_last: 0,
            dests: Box::new([Bucket::default(); SLOTS]),
            seed: seed | 1,
        }
    }

    /// Whether an error to `dst` may be sent at `now`; takes a token if so.
    pub fn allow(&mut self, dst: u32, now: u64) -> bool {
        let period = NS / GLOBAL_PER_S;
        let cap = GLOBAL_BURST * period;
        self.global_credit = (self.global_credit + now.saturating_sub(self.global_last)).min(cap);
        self.global_last = now;
        if self.global_credit < period {
            return false;
        }
        let slot = (dst.wrapping_mul(self.seed) >> 22) as usize % SLOTS;
        let b = &mut self.dests[slot];
        let cap_d = PER_DEST_BURST * NS;
        if !b.used || b.dst != dst {
            *b = Bucket {
                dst,
                credit: cap_d,
                last: now,
                used: true,
            };
        }
        b.credit = (b.credit + now.saturating_sub(b.last)).min(cap_d);
        b.last = now;
        if b.credit < NS {
            return false;
        }
        b.credit -= NS;
        self.global_credit -= period;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_destination_burst_then_one_a_second() {
        let mut l = IcmpLimiter::new();
        let sent = (0..100).filter(|&i| l.allow(7, i)).count();
        assert_eq!(sent as u64, PER_DEST_BURST);
        assert!(!l.allow(7, 500_000_000));
        assert!(l.allow(7, 1_000_000_100));
        assert!(!l.allow(7, 1_000_000_200));
    }

    #[test]
    fn global_bound_over_many_destinations() {
        let mut l = IcmpLimiter::new();
        // 10 000 destinations within one millisecond: the burst only.
        let sent = (0..10_000u32).filter(|&d| l.allow(d, 1_000_000)).count();
        assert!(sent as u64 <= GLOBAL_BURST + 1, "{sent}");
        // Over a second of steady flood, about GLOBAL_PER_S.
        let mut n = 0;
        for i in 0..100_000u64 {
            if l.allow(i as u32 ^ 0x5555, 2 * NS + i * 10_000) {
                n += 1;
            }
        }
        assert!(n <= GLOBAL_PER_S + GLOBAL_BURST, "{n}");
        assert!(n >= GLOBAL_PER_S / 2, "{n}");
    }
}
