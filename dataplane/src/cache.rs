//! Cache prefetch hints for the tables packets look up in batches (the
//! FDB, the NAT): a batch starts loading every line it will read before it
//! reads any, so the misses overlap instead of coming one after another.

/// Starts loading the cache line at `p` (PREFETCHT0); nothing off x86-64.
/// A hint: `p` may be any address.
#[inline(always)]
pub(crate) fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is only a hint: it neither faults nor changes
    // memory for any address.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Starts loading the cache lines `x` spans (its first and last byte's: a
/// slab entry may straddle two lines).
#[inline(always)]
pub(crate) fn prefetch<T>(x: &T) {
    let p: *const u8 = std::ptr::from_ref(x).cast();
    prefetch_line(p);
    prefetch_line(p.wrapping_add(std::mem::size_of::<T>().saturating_sub(1)));
}
