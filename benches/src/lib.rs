//! Benchmarks live in `benches/`; see the README. This library holds what
//! several of them share.

/// A small xorshift generator: deterministic random keys without a
/// dependency or a division.
pub fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// A uniform index below `n` from a random word (multiply-high, no division).
pub fn below(r: u64, n: u64) -> u64 {
    ((u128::from(r) * u128::from(n)) >> 64) as u64
}
