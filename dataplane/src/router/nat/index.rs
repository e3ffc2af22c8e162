//! The NAT's flow index: a key to slab index map with linear probing,
//! written for the one thing `hashbrown` does not offer: starting the load
//! of a key's slot before looking it up. A router translating a batch
//! prefetches every packet's home slot first, then probes (the slots are in
//! cache by then), then prefetches the flows found; each step's cache
//! misses overlap across the batch instead of coming four in a row per
//! packet. (The FDB does the same for the bridge, `bridge/fdb.rs`.)
//!
//! Slots are 32 bytes (key, value, the key's hash), two to a cache line;
//! the table doubles above 70 % load, so a probe is short, and deletion
//! shifts the following run back (no tombstones, so lookups never slow down
//! with churn). Capacity only grows, and is bounded by the flows the NAT
//! allows.

use super::{Key, KeyHash};
use crate::cache::prefetch_line;
use std::hash::BuildHasher;

const MIN_SLOTS: usize = 16;

#[derive(Debug, Clone, Copy, Default)]
#[repr(align(32))]
struct Slot {
    key: u128,
    val: u32,
    /// The key's hash (low 32 bits), so growth and deletion need not hash
    /// again.
    hash: u32,
    full: bool,
}

/// A map from [`Key`] to `u32` (a flow's slab index).
#[derive(Debug)]
pub(super) struct FlowIndex {
    slots: Box<[Slot]>,
    len: usize,
    hasher: KeyHash,
}

impl FlowIndex {
    pub(super) fn new(hasher: KeyHash) -> FlowIndex {
        FlowIndex {
            slots: vec![Slot::default(); MIN_SLOTS].into_boxed_slice(),
            len: 0,
            hasher,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn hash(&self, k: &Key) -> u32 {
        self.hasher.hash_one(k) as u32
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Starts loading `k`'s home slot; returns at once.
    #[inline]
    pub(super) fn prefetch(&self, k: &Key) {
        let i = self.hash(k) as usize & self.mask();
        if let Some(s) = self.slots.get(i) {
            prefetch_line(std::ptr::from_ref(s).cast());
        }
    }

    /// The slot holding `k`.
    #[inline]
    fn find(&self, k: &Key) -> Option<usize> {
        let mask = self.mask();
        let mut i = self.hash(k) as usize & mask;
        // The load limit keeps empty slots, so the probe ends; the bound
        // is a second guarantee.
        for _ in 0..self.slots.len() {
            let s = &self.slots[i];
            if !s.full {
                return None;
            }
            if s.key == k.0 {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
        None
    }

    pub(super) fn get(&self, k: &Key) -> Option<&u32> {
        self.find(k).map(|i| &self.slots[i].val)
    }

    /// Inserts or replaces; returns the old value.
    pub(super) fn insert(&mut self, k: Key, v: u32) -> Option<u32> {
        if let Some(i) = self.find(&k) {
            return Some(std::mem::replace(&mut self.slots[i].val, v));
        }
        if (self.len + 1) * 10 > self.slots.len() * 7 {
            self.grow();
        }
        let hash = self.hash(&k);
        self.place(Slot {
            key: k.0,
            val: v,
            hash,
            full: true,
        });
        self.len += 1;
        None
    }

    fn place(&mut self, s: Slot) {
        let mask = self.mask();
        let mut i = s.hash as usize & mask;
        while self.slots[i].full {
            i = (i + 1) & mask;
        }
        self.slots[i] = s;
    }

    fn grow(&mut self) {
        let n = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); n].into_boxed_slice());
        for s in old.iter().filter(|s| s.full) {
            self.place(*s);
        }
    }

    /// Removes `k`; returns its value. The run after it shifts back so
    /// every key stays reachable from its home slot.
    pub(super) fn remove(&mut self, k: &Key) -> Option<u32> {
        let mut hole = self.find(k)?;
        let val = self.slots[hole].val;
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if !s.full {
                break;
            }
            let home = s.hash as usize & mask;
            // `s` may fill the hole unless its home lies cyclically in
            // (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = Slot::default();
        self.len -= 1;
        Some(val)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    fn key(n: u64) -> Key {
        Key(u128::from(n) << 8 | 6)
    }

    #[test]
    fn behaves_like_a_map_under_churn() {
        let mut ix = FlowIndex::new(KeyHash(0x1234_5678));
        let mut model = std::collections::HashMap::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for step in 0..200_000u32 {
            // A small key space: collisions, long runs and deletions in
            // the middle of them.
            let k = rng.below(5000);
            match rng.below(3) {
                0 | 1 => assert_eq!(ix.insert(key(k), step), model.insert(k, step)),
                _ => assert_eq!(ix.remove(&key(k)), model.remove(&k)),
            }
            assert_eq!(ix.len(), model.len());
            if step % 997 == 0 {
                for (&k, &v) in &model {
                    assert_eq!(ix.get(&key(k)), Some(&v));
                }
                assert_eq!(ix.get(&key(99_999)), None);
            }
        }
        for k in 0..5000 {
            assert_eq!(ix.get(&key(k)).copied(), model.get(&k).copied());
        }
        ix.prefetch(&key(1));
        assert!(ix.slots.len().is_power_of_two());
        assert!(ix.len() * 10 <= ix.slots.len() * 7);
    }

    #[test]
    fn one_hash_value_for_every_key_still_works() {
        // A hasher whose seed makes no difference cannot collapse the
        // table: even all keys in one run are found and removed right.
        let mut ix = FlowIndex::new(KeyHash(0));
        for k in 0..100 {
            ix.insert(key(k), k as u32);
        }
        for k in (0..100).step_by(3) {
            assert_eq!(ix.remove(&key(k)), Some(k as u32));
        }
        for k in 0..100 {
            assert_eq!(ix.get(&key(k)).is_some(), k % 3 != 0, "{k}");
        }
        assert_eq!(ix.len(), 66);
        assert!(!ix.is_empty());
    }
}
