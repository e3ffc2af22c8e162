//! The IPv4 route table: longest-prefix match in a 16-8-8 multibit trie.
//!
//! # Structure
//!
//! The routes themselves live in a `BTreeMap` from [`Prefix`] to a value
//! slot, ordered by address and then length. It answers exact gets, listings
//! and the range queries that updates need; packets never touch it.
//!
//! Packets read a trie built from it by controlled prefix expansion (the
//! scheme of DIR-24-8, with smaller steps):
//!
//! - **Root**: 65 536 entries, one per /16, indexed by the top 16 bits.
//! - **Level 2**: chunks of 256 entries, one per /24 of a /16, indexed by
//!   bits 8..16.
//! - **Level 3**: chunks of 256 entries, one per address of a /24, indexed
//!   by the low 8 bits.
//!
//! An entry is a `u32`: 0 for no route, `slot + 1` for a leaf (the route in
//! that value slot), or bit 31 | a chunk index. A route is written into every
//! entry its prefix spans at its level (a /12 into 16 root entries, a /20
//! into 16 entries of its /16's chunk), and each entry holds the longest
//! route that covers its whole block. An entry points to a chunk exactly
//! when a longer route lies inside its block; the chunk's entries start from
//! the leaf the entry would hold otherwise (the chunk's *cover*).
//!
//! # Cost
//!
//! A lookup is one to three dependent reads of the trie and one of the value
//! slots: no hashing, no loop, no allocation. The root (256 KiB) stays in a
//! busy core's L2 cache. A hash table per prefix length would take up to 33
//! probes, or a binary search over lengths with marker entries (about 5
//! probes, each a hash and a likely cache miss); the trie trades that for
//! memory that grows with the routes longer than /16, which the limits bound.
//!
//! An insert or remove repaints only the entries its prefix spans at its
//! level (2^(16 - len) root entries for a /len of 16 or less; one root entry
//! and the spanned level-2 entries for /17 to /24; down to one level-3 chunk
//! for longer ones), walking the routes inside the prefix in map order: a
//! prefix sorts before everything inside it, so painting in that order leaves
//! each entry with its longest route. Where a route below an entry keeps it a
//! chunk, the chunk stays; only its entries that inherited the old cover are
//! pointed at the new one. A /0 change touches all 65 536 root entries and
//! the chunks whose cover changes: milliseconds, not a pass per route.
//! Replacing a route's value writes its slot and nothing else.
//!
//! # Memory and limits
//!
//! The root is 256 KiB; each chunk is 1 KiB (256 entries) plus 4 bytes for
//! its cover; each route takes a value slot (`size_of::<(Prefix, V)>()`, 12
//! bytes for a `u32` value) and a B-tree entry (about 20 to 30 bytes). A
//! route longer than /16 may need one chunk, and one longer than /24 two, so
//! [`Lpm::with_limits`] caps both the routes and the chunks; an insert that
//! would pass either fails with [`RouteError::Full`] and changes nothing.
//! The defaults, [`DEFAULT_MAX_ROUTES`] (1 048 576) and
//! [`DEFAULT_MAX_CHUNKS`] (65 536), put the worst case at 256 KiB of root,
//! 64.25 MiB of chunks, 12 MiB of slots and about 30 MiB of B-tree: about
//! 107 MiB for `u32` values. A full Internet table (about a million routes,
//! nearly all /24 or shorter) needs a chunk per /16 that holds anything
//! longer than a /16, some tens of thousands; it is routes longer than /24
//! spread over many /24s that spend the chunk budget. Freed chunks and slots
//! are reused lowest index first; free ones at the end of their array are
//! dropped and an array down to a quarter of its capacity shrinks, so an
//! emptied table is back to the root alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The most routes a table from [`Lpm::new`] holds.
pub const DEFAULT_MAX_ROUTES: usize = 1 << 20;
/// The most chunks a table from [`Lpm::new`] uses: 64 MiB of them.
pub const DEFAULT_MAX_CHUNKS: usize = 1 << 16;

const ROOT_LEN: usize = 1 << 16;
const CHUNK_LEN: usize = 256;
/// Marks an entry that points to a chunk.
const PTR: u32 = 1 << 31;
/// Most routes any table holds: a leaf (slot + 1) stays below [`PTR`].
const ROUTES_CAP: usize = (PTR - 1) as usize;
/// Most chunks any table can use: one per /16 and one per /24.
const CHUNKS_CAP: usize = (1 << 16) + (1 << 24);

/// One level of the trie: the prefix lengths its entries hold and how an
/// address indexes it.
struct Level {
    min_len: u8,
    max_len: u8,
    shift: u32,
    entries: usize,
}

const LEVELS: [Level; 3] = [
    Level {
        min_len: 0,
        max_len: 16,
        shift: 16,
        entries: ROOT_LEN,
    },
    Level {
        min_len: 17,
        max_len: 24,
        shift: 8,
        entries: CHUNK_LEN,
    },
    Level {
        min_len: 25,
        max_len: 32,
        shift: 0,
        entries: CHUNK_LEN,
    },
];

impl Level {
    fn index(&self, addr: u32) -> usize {
        (addr >> self.shift) as usize & (self.entries - 1)
    }
}

/// The network mask of a prefix length (0 for 0; lengths past 32 as 32).
fn mask(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32u32.saturating_sub(u32::from(len)))
        .unwrap_or(0)
}

/// The network of `addr` at `len` bits (for the host-bits message).
fn network(addr: &Ipv4Addr, len: &u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(*addr) & mask(*len))
}

/// Text from the input for an error message, cut to a sane length.
fn clip(s: &str) -> String {
    s.chars().take(48).collect()
}

/// Why a prefix was refused or a route not added.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    /// The text before the `/` is not a dotted-quad IPv4 address.
    #[error("bad address {0:?}")]
    BadAddress(String),
    /// The prefix length is not a number from 0 to 32.
    #[error("bad prefix length {0} (want 0 to 32)")]
    BadLength(String),
    /// Bits past the prefix length are set.
    #[error("{addr}/{len}: host bits set (did you mean {net}/{len}?)", net = network(.addr, .len))]
    HostBits {
        /// The address as given.
        addr: Ipv4Addr,
        /// The prefix length as given.
        len: u8,
    },
    /// The table holds its most routes, or an insert would need more chunks
    /// than its memory budget allows; `max` is the limit that was hit.
    #[error("route table is full (limit {max})")]
    Full {
        /// The route or chunk limit.
        max: usize,
    },
}

/// An IPv4 prefix: an address and a length, with the host bits zero.
/// Ordered by address, then length, so a prefix sorts before every prefix
/// inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: u32,
    len: u8,
}

impl Prefix {
    /// The prefix `addr/len`; an error if `len` is past 32 or `addr` has
    /// bits set past `len`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Prefix, RouteError> {
        if len > 32 {
            return Err(RouteError::BadLength(len.to_string()));
        }
        let a = u32::from(addr);
        if a & !mask(len) != 0 {
            return Err(RouteError::HostBits { addr, len });
        }
        Ok(Prefix { addr: a, len })
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }

    /// The prefix length, 0 to 32.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` lies inside the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.holds(u32::from(ip))
    }

    fn holds(&self, ip: u32) -> bool {
        ip & mask(self.len) == self.addr
    }

    /// The prefix's last address.
    fn last(&self) -> u32 {
        self.addr | !mask(self.len)
    }
}

/// Parses `a.b.c.d/len`, or `a.b.c.d` for a /32. No spaces, no sign, no
/// host bits.
impl FromStr for Prefix {
    type Err = RouteError;

    fn from_str(s: &str) -> Result<Prefix, RouteError> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: Ipv4Addr = a.parse().map_err(|_| RouteError::BadAddress(clip(a)))?;
        let len = match l {
            None => 32,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= 32 && l.bytes().all(|b| b.is_ascii_digit()) => n,
                // Digits as they are, anything else quoted.
                Ok(_) if l.bytes().all(|b| b.is_ascii_digit()) => {
                    return Err(RouteError::BadLength(clip(l)))
                }
                _ => return Err(RouteError::BadLength(format!("{:?}", clip(l)))),
            },
        };
        Prefix::new(addr, len)
    }
}

/// `a.b.c.d/len`, the length always shown.
impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}

/// Which table an entry is in.
#[derive(Clone, Copy)]
enum Table {
    Root,
    Chunk(u32),
}

/// An IPv4 longest-prefix-match table from [`Prefix`] to `V`. See the
/// module documentation for the structure and its limits.
#[derive(Clone)]
pub struct Lpm<V: Copy> {
    root: Box<[u32; ROOT_LEN]>,
    pool: Vec<[u32; CHUNK_LEN]>,
    /// Per chunk: the leaf its entries inherit where no route inside the
    /// chunk's block applies.
    covers: Vec<u32>,
    free_chunks: BTreeSet<u32>,
    /// Per route: its prefix and value. Leaves hold the index + 1.
    slots: Vec<(Prefix, V)>,
    free_slots: BTreeSet<u32>,
    /// The routes, each with its slot: what the trie is built from.
    routes: BTreeMap<Prefix, u32>,
    max_routes: usize,
    max_chunks: usize,
}

impl<V: Copy> Default for Lpm<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// A summary: a table may hold a million routes. [`Lpm::iter`] lists them.
impl<V: Copy> fmt::Debug for Lpm<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lpm")
            .field("routes", &self.len())
            .field("chunks", &self.chunks_in_use())
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

/// Room for one more element, the capacity kept at or below `max`.
fn reserve_bounded<T>(v: &mut Vec<T>, max: usize) {
    if v.len() == v.capacity() {
        let extra = v.len().max(8).min(max.saturating_sub(v.len())).max(1);
        v.reserve_exact(extra);
    }
}

/// Marks index `i` of an array `len` long free, then drops the free indices
/// at the array's end; returns the length the array keeps.
fn release(free: &mut BTreeSet<u32>, i: u32, len: usize) -> usize {
    if (i as usize) < len {
        free.insert(i);
    }
    let mut len = len;
    while free.last().is_some_and(|&l| l as usize + 1 == len) {
        free.pop_last();
        len -= 1;
    }
    len
}

/// Gives back memory once `v` is down to a quarter of its capacity.
fn shrink<T>(v: &mut Vec<T>) {
    if v.len() * 4 <= v.capacity() {
        v.shrink_to(v.len() * 2);
    }
}

impl<V: Copy> Lpm<V> {
    /// An empty table with the default limits ([`DEFAULT_MAX_ROUTES`],
    /// [`DEFAULT_MAX_CHUNKS`]).
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_ROUTES, DEFAULT_MAX_CHUNKS)
    }

    /// An empty table that holds at most `max_routes` routes and
    /// `max_chunks` chunks (1 KiB each). Limits past what the trie can
    /// address (2^31 - 1 routes; 2^16 + 2^24 chunks) are cut to that.
    pub fn with_limits(max_routes: usize, max_chunks: usize) -> Self {
        let root: Box<[u32]> = vec![0; ROOT_LEN].into_boxed_slice();
        Lpm {
            root: root.try_into().expect("a slice of ROOT_LEN entries"),
            pool: Vec::new(),
            covers: Vec::new(),
            free_chunks: BTreeSet::new(),
            slots: Vec::new(),
            free_slots: BTreeSet::new(),
            routes: BTreeMap::new(),
            max_routes: max_routes.min(ROUTES_CAP),
            max_chunks: max_chunks.min(CHUNKS_CAP),
        }
    }

    /// Adds the route `p` -> `v`, or replaces the value of an existing route
    /// for `p` and returns the old one. [`RouteError::Full`] if the table
    /// holds its most routes or the route would need more chunks than
    /// allowed; the table is then unchanged. Replacing never fails.
    pub fn insert(&mut self, p: Prefix, v: V) -> Result<Option<V>, RouteError> {
        if let Some(slot) = self
            .routes
            .get(&p)
            .and_then(|&s| self.slots.get_mut(s as usize))
        {
            return Ok(Some(std::mem::replace(&mut slot.1, v)));
        }
        if self.routes.len() >= self.max_routes {
            return Err(RouteError::Full {
                max: self.max_routes,
            });
        }
        if self.chunks_in_use() + self.chunks_needed(p) > self.max_chunks {
            return Err(RouteError::Full {
                max: self.max_chunks,
            });
        }
        let s = self.take_slot(p, v);
        self.routes.insert(p, s);
        if let Err(e) = self.update(p) {
            // Not reached: chunks_needed counts every chunk update takes.
            // Undo all the same.
            self.routes.remove(&p);
            let _ = self.update(p);
            self.put_slot(s);
            return Err(e);
        }
        Ok(None)
    }

    /// Removes the route for exactly `p` and returns its value.
    pub fn remove(&mut self, p: Prefix) -> Option<V> {
        let s = self.routes.remove(&p)?;
        let v = self.slots.get(s as usize).map(|&(_, v)| v);
        // Removing only frees chunks, so this cannot fail.
        let _ = self.update(p);
        self.put_slot(s);
        v
    }

    /// The value of the route for exactly `p`.
    pub fn get(&self, p: Prefix) -> Option<V> {
        let &s = self.routes.get(&p)?;
        self.slots.get(s as usize).map(|&(_, v)| v)
    }

    /// The value of the longest route containing `ip` (host byte order:
    /// `u32::from(Ipv4Addr)`).
    #[inline]
    pub fn lookup(&self, ip: u32) -> Option<V> {
        let e = self.find(ip);
        // 0 (no route) wraps to usize::MAX, which no slot has.
        self.slots
            .get((e as usize).wrapping_sub(1))
            .map(|&(_, v)| v)
    }

    /// The longest route containing `ip`, with its prefix.
    pub fn lookup_with_prefix(&self, ip: u32) -> Option<(Prefix, V)> {
        let e = self.find(ip);
        self.slots.get((e as usize).wrapping_sub(1)).copied()
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table has no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes, ordered by address and then length.
    pub fn iter(&self) -> impl Iterator<Item = (Prefix, V)> + '_ {
        self.routes
            .iter()
            .filter_map(|(&p, &s)| self.slots.get(s as usize).map(|&(_, v)| (p, v)))
    }

    /// Bytes held by what lookups read: the root, the chunks (allocated,
    /// used or free) and the value slots. The B-tree of routes that updates
    /// use is not counted.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        size_of::<[u32; ROOT_LEN]>()
            + self.pool.capacity() * size_of::<[u32; CHUNK_LEN]>()
            + self.covers.capacity() * size_of::<u32>()
            + self.slots.capacity() * size_of::<(Prefix, V)>()
    }

    /// The trie entry for `ip`: a leaf or 0.
    #[inline]
    fn find(&self, ip: u32) -> u32 {
        let mut e = self.root[(ip >> 16) as usize];
        if e & PTR != 0 {
            e = self.child(e, ip >> 8);
            if e & PTR != 0 {
                e = self.child(e, ip);
            }
        }
        e
    }

    /// Entry `bits & 0xff` of the chunk pointer `e` points to.
    #[inline]
    fn child(&self, e: u32, bits: u32) -> u32 {
        match self.pool.get((e & !PTR) as usize) {
            Some(c) => c[(bits & 0xff) as usize],
            None => 0,
        }
    }

    fn entry(&self, t: Table, i: usize) -> u32 {
        match t {
            Table::Root => self.root.get(i),
            Table::Chunk(c) => self.pool.get(c as usize).and_then(|c| c.get(i)),
        }
        .copied()
        .unwrap_or(0)
    }

    fn entries_mut(&mut self, t: Table) -> Option<&mut [u32]> {
        match t {
            Table::Root => Some(&mut self.root[..]),
            Table::Chunk(c) => self.pool.get_mut(c as usize).map(|c| &mut c[..]),
        }
    }

    fn set_entry(&mut self, t: Table, i: usize, v: u32) {
        let e = match t {
            Table::Root => self.root.get_mut(i),
            Table::Chunk(c) => self.pool.get_mut(c as usize).and_then(|c| c.get_mut(i)),
        };
        if let Some(e) = e {
            *e = v;
        }
    }

    fn chunks_in_use(&self) -> usize {
        self.pool.len() - self.free_chunks.len()
    }

    /// How many chunks adding `p` (not yet in the table) takes: one for its
    /// /16 if longer than /16 and one for its /24 if longer than /24, unless
    /// they exist. Repainting never allocates: the entries an insert
    /// repaints keep the routes below them.
    fn chunks_needed(&self, p: Prefix) -> usize {
        if p.len <= 16 {
            return 0;
        }
        let e = self.root[(p.addr >> 16) as usize];
        if e & PTR == 0 {
            return if p.len > 24 { 2 } else { 1 };
        }
        if p.len <= 24 {
            return 0;
        }
        usize::from(self.child(e, p.addr >> 8) & PTR == 0)
    }

    fn take_slot(&mut self, p: Prefix, v: V) -> u32 {
        if let Some(s) = self.free_slots.pop_first() {
            if let Some(slot) = self.slots.get_mut(s as usize) {
                *slot = (p, v);
            }
            return s;
        }
        reserve_bounded(&mut self.slots, self.max_routes);
        self.slots.push((p, v));
        // At most max_routes slots, so below 2^31 - 1.
        (self.slots.len() - 1) as u32
    }

    fn put_slot(&mut self, s: u32) {
        let len = release(&mut self.free_slots, s, self.slots.len());
        self.slots.truncate(len);
        shrink(&mut self.slots);
    }

    /// A zeroed chunk whose cover is `cover`.
    fn take_chunk(&mut self, cover: u32) -> Result<u32, RouteError> {
        if self.chunks_in_use() >= self.max_chunks {
            return Err(RouteError::Full {
                max: self.max_chunks,
            });
        }
        if let Some(c) = self.free_chunks.pop_first() {
            if let Some(chunk) = self.pool.get_mut(c as usize) {
                *chunk = [0; CHUNK_LEN];
            }
            if let Some(cv) = self.covers.get_mut(c as usize) {
                *cv = cover;
            }
            return Ok(c);
        }
        reserve_bounded(&mut self.pool, self.max_chunks);
        reserve_bounded(&mut self.covers, self.max_chunks);
        self.pool.push([0; CHUNK_LEN]);
        self.covers.push(cover);
        // At most max_chunks chunks, so below 2^31.
        Ok((self.pool.len() - 1) as u32)
    }

    fn put_chunk(&mut self, c: u32) {
        let len = release(&mut self.free_chunks, c, self.pool.len());
        self.pool.truncate(len);
        self.covers.truncate(len);
        shrink(&mut self.pool);
        shrink(&mut self.covers);
    }

    /// Frees chunk `c` (at `level`, 1 or 2) and the chunks below it.
    fn free_tree(&mut self, c: u32, level: usize) {
        if level + 1 < LEVELS.len() {
            let kids: Vec<u32> = self
                .pool
                .get(c as usize)
                .map(|ch| {
                    ch.iter()
                        .filter(|&&e| e & PTR != 0)
                        .map(|&e| e & !PTR)
                        .collect()
                })
                .unwrap_or_default();
            for k in kids {
                self.free_tree(k, level + 1);
            }
        }
        self.put_chunk(c);
    }

    /// Points the entries of chunk `c` (at `level`) and of the chunks below
    /// it that inherited leaf `old` at leaf `new`.
    fn retarget(&mut self, c: u32, level: usize, old: u32, new: u32) {
        if let Some(cv) = self.covers.get_mut(c as usize) {
            *cv = new;
        }
        let mut kids = Vec::new();
        if let Some(ch) = self.pool.get_mut(c as usize) {
            for e in ch.iter_mut() {
                if *e == old {
                    *e = new;
                } else if *e & PTR != 0 {
                    kids.push(*e & !PTR);
                }
            }
        }
        if level + 1 < LEVELS.len() {
            for k in kids {
                if self.covers.get(k as usize) == Some(&old) {
                    self.retarget(k, level + 1, old, new);
                }
            }
        }
    }

    /// Whether a route longer than `block` lies inside it.
    fn has_longer(&self, block: Prefix) -> bool {
        let from = Prefix {
            addr: block.addr,
            len: block.len + 1,
        };
        let to = Prefix {
            addr: block.last(),
            len: 32,
        };
        from <= to && self.routes.range(from..=to).next().is_some()
    }

    /// The leaf of the longest route shorter than `p` that covers it, at
    /// `lv` or above: the routes at `lv` are looked up, the rest is the
    /// table's cover.
    fn cover(&self, t: Table, lv: &Level, p: Prefix) -> u32 {
        for len in (lv.min_len..p.len).rev() {
            let q = Prefix {
                addr: p.addr & mask(len),
                len,
            };
            if let Some(&s) = self.routes.get(&q) {
                return s.wrapping_add(1);
            }
        }
        match t {
            Table::Root => 0,
            Table::Chunk(c) => self.covers.get(c as usize).copied().unwrap_or(0),
        }
    }

    /// Brings the trie in line with the routes after `p` was added or
    /// removed: walks down to `p`'s level, making or freeing the chunk on
    /// the way if `p` was the first or last route below an entry, and
    /// repaints the entries `p` spans there.
    fn update(&mut self, p: Prefix) -> Result<(), RouteError> {
        let mut table = Table::Root;
        for (level, lv) in LEVELS.iter().enumerate() {
            if p.len <= lv.max_len {
                let cover = self.cover(table, lv, p);
                return self.repaint(table, level, p, p.len, cover, false);
            }
            let i = lv.index(p.addr);
            let old = self.entry(table, i);
            let block = Prefix {
                addr: p.addr & mask(lv.max_len),
                len: lv.max_len,
            };
            if !self.has_longer(block) {
                // The last route below this entry went: back to a leaf.
                if old & PTR != 0 {
                    let c = old & !PTR;
                    let leaf = self.covers.get(c as usize).copied().unwrap_or(0);
                    self.set_entry(table, i, leaf);
                    self.free_tree(c, level + 1);
                }
                return Ok(());
            }
            if old & PTR != 0 {
                table = Table::Chunk(old & !PTR);
                continue;
            }
            // The first route below this entry: a chunk inheriting its leaf.
            let c = self.take_chunk(old)?;
            self.set_entry(table, i, PTR | c);
            return self.repaint(Table::Chunk(c), level + 1, block, block.len + 1, old, true);
        }
        Ok(())
    }

    /// Rebuilds the entries of `t` (at `level`) that `span` covers from the
    /// routes inside `span` at least `min_len` long, starting from `cover`.
    /// Entries with a longer route below keep (or get) a chunk; a kept
    /// chunk's routes are unchanged, so only its inherited leaf is updated.
    /// `fresh`: `t` is a chunk just taken, all zero.
    fn repaint(
        &mut self,
        t: Table,
        level: usize,
        span: Prefix,
        min_len: u8,
        cover: u32,
        fresh: bool,
    ) -> Result<(), RouteError> {
        let Some(lv) = LEVELS.get(level) else {
            return Ok(());
        };
        let lo = lv.index(span.addr);
        let n = 1usize << lv.max_len.saturating_sub(span.len).min(16);
        let mut leaves = vec![cover; n];
        // Entries (from lo) with a longer route below, ascending.
        let mut below: Vec<usize> = Vec::new();
        let to = Prefix {
            addr: span.last(),
            len: 32,
        };
        let mut from = Prefix {
            addr: span.addr,
            len: min_len,
        };
        'scan: while from <= to {
            for (&r, &s) in self.routes.range(from..=to) {
                let k = (r.addr.wrapping_sub(span.addr) >> lv.shift) as usize;
                if r.len <= lv.max_len {
                    let count = 1usize << (lv.max_len - r.len).min(16);
                    let end = k.saturating_add(count).min(n);
                    if let Some(run) = leaves.get_mut(k..end) {
                        run.fill(s.wrapping_add(1));
                    }
                } else {
                    below.push(k);
                    // A route at this level in the entry's block would have
                    // sorted before this one: skip to the next entry.
                    match (r.addr | !mask(lv.max_len)).checked_add(1) {
                        Some(next) => {
                            from = Prefix { addr: next, len: 0 };
                            continue 'scan;
                        }
                        None => break 'scan,
                    }
                }
            }
            break;
        }
        // Entries without a chunk below take their leaf; chunks they had go.
        let mut freed = Vec::new();
        let entries = self.entries_mut(t).and_then(|e| e.get_mut(lo..lo + n));
        if fresh {
            // All zero: the entries with a chunk below are written next.
            if let Some(entries) = entries {
                entries.copy_from_slice(&leaves);
            }
        } else if let Some(entries) = entries {
            let mut next = below.iter().copied().peekable();
            for (k, (e, &leaf)) in entries.iter_mut().zip(&leaves).enumerate() {
                if next.next_if_eq(&k).is_some() {
                    continue;
                }
                if *e & PTR != 0 {
                    freed.push(*e & !PTR);
                }
                *e = leaf;
            }
        }
        for c in freed {
            self.free_tree(c, level + 1);
        }
        // Entries with a longer route below keep their chunk or get one.
        for k in below {
            let leaf = leaves.get(k).copied().unwrap_or(cover);
            let old = self.entry(t, lo + k);
            if old & PTR != 0 {
                let c = old & !PTR;
                let was = self.covers.get(c as usize).copied().unwrap_or(leaf);
                if was != leaf {
                    self.retarget(c, level + 1, was, leaf);
                }
            } else {
                let c = self.take_chunk(leaf)?;
                self.set_entry(t, lo + k, PTR | c);
                let block = Prefix {
                    addr: span.addr.wrapping_add((k as u32) << lv.shift),
                    len: lv.max_len,
                };
                self.repaint(
                    Table::Chunk(c),
                    level + 1,
                    block,
                    lv.max_len + 1,
                    leaf,
                    true,
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;
    use std::time::Instant;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    /// Checks the trie's shape against the routes: a chunk exactly under
    /// the entries with a longer route below, each chunk reached once and
    /// none leaked, covers right (in a big table, those of some chunks).
    fn check_shape(t: &Lpm<u32>) {
        let stride = 1 + t.chunks_in_use() as u32 / 4096;
        let mut need16 = BTreeSet::new();
        let mut need24 = BTreeSet::new();
        for (q, _) in t.iter() {
            if q.len > 16 {
                need16.insert(q.addr >> 16);
            }
            if q.len > 24 {
                need24.insert(q.addr >> 8);
            }
        }
        let mut seen = BTreeSet::new();
        let mut have16 = BTreeSet::new();
        let mut have24 = BTreeSet::new();
        for (s, &e) in t.root.iter().enumerate() {
            if e & PTR == 0 {
                continue;
            }
            let c = e & !PTR;
            assert!(seen.insert(c), "chunk {c} reached twice");
            have16.insert(s as u32);
            if c.is_multiple_of(stride) {
                assert_eq!(t.covers[c as usize], best_upto(t, (s as u32) << 16, 16));
            }
            for (j, &e2) in t.pool[c as usize].iter().enumerate() {
                if e2 & PTR == 0 {
                    continue;
                }
                let c2 = e2 & !PTR;
                assert!(seen.insert(c2), "chunk {c2} reached twice");
                let slash24 = ((s as u32) << 8) | j as u32;
                have24.insert(slash24);
                if c2.is_multiple_of(stride) {
                    assert_eq!(t.covers[c2 as usize], best_upto(t, slash24 << 8, 24));
                }
                for &e3 in t.pool[c2 as usize].iter() {
                    assert_eq!(e3 & PTR, 0, "pointer at level 3");
                }
            }
        }
        assert_eq!(need16, have16);
        assert_eq!(need24, have24);
        assert_eq!(seen.len(), t.chunks_in_use());
        assert_eq!(t.pool.len(), t.covers.len());
        assert_eq!(t.slots.len() - t.free_slots.len(), t.len());
    }

    /// The leaf of the longest route of at most `max_len` bits covering
    /// `addr`, found with exact gets.
    fn best_upto(t: &Lpm<u32>, addr: u32, max_len: u8) -> u32 {
        (0..=max_len)
            .rev()
            .find_map(|len| {
                t.routes.get(&Prefix {
                    addr: addr & mask(len),
                    len,
                })
            })
            .map_or(0, |&s| s + 1)
    }

    fn model_lookup(m: &[(Prefix, u32)], ip: u32) -> Option<(Prefix, u32)> {
        m.iter()
            .filter(|(q, _)| q.holds(ip))
            .max_by_key(|(q, _)| q.len)
            .copied()
    }

    /// Longest match through exact gets, for tables too big for a scan.
    fn slow_lookup(t: &Lpm<u32>, ip: u32) -> Option<(Prefix, u32)> {
        (0..=32u8).rev().find_map(|len| {
            let q = Prefix {
                addr: ip & mask(len),
                len,
            };
            t.get(q).map(|v| (q, v))
        })
    }

    const LENS: [u8; 10] = [0, 8, 15, 16, 17, 23, 24, 25, 31, 32];

    fn rand_prefix(rng: &mut Rng, bases: &[u32]) -> Prefix {
        let len = if rng.chance(80) {
            LENS[rng.index(LENS.len())]
        } else {
            rng.below(33) as u8
        };
        let addr = if rng.chance(90) {
            let keep = rng.below(33) as u32;
            let noise = (rng.next() as u32).checked_shr(keep).unwrap_or(0);
            bases[rng.index(bases.len())] ^ noise
        } else {
            rng.next() as u32
        };
        Prefix {
            addr: addr & mask(len),
            len,
        }
    }

    fn rand_ip(rng: &mut Rng, bases: &[u32], m: &[(Prefix, u32)]) -> u32 {
        match rng.below(4) {
            0 => rng.next() as u32,
            1 => bases[rng.index(bases.len())] ^ (rng.next() as u32 >> rng.below(32)),
            _ if !m.is_empty() => {
                let (q, _) = m[rng.index(m.len())];
                match rng.below(4) {
                    0 => q.addr,
                    1 => q.last(),
                    2 => q.addr.wrapping_sub(1),
                    _ => q.last().wrapping_add(1),
                }
            }
            _ => rng.next() as u32,
        }
    }

    fn check_all(t: &Lpm<u32>, m: &[(Prefix, u32)], rng: &mut Rng, bases: &[u32]) {
        for _ in 0..40 {
            let a = rand_ip(rng, bases, m);
            let want = model_lookup(m, a);
            assert_eq!(t.lookup_with_prefix(a), want, "lookup_with_prefix {a:#x}");
            assert_eq!(t.lookup(a), want.map(|(_, v)| v), "lookup {a:#x}");
        }
        for _ in 0..10 {
            let q = if !m.is_empty() && rng.chance(50) {
                m[rng.index(m.len())].0
            } else {
                rand_prefix(rng, bases)
            };
            let want = m.iter().find(|(x, _)| *x == q).map(|&(_, v)| v);
            assert_eq!(t.get(q), want, "get {q}");
        }
        assert_eq!(t.len(), m.len());
        assert_eq!(t.is_empty(), m.is_empty());
    }

    #[test]
    fn matches_linear_model() {
        for seed in 1..=6u64 {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x1234_5678_9abc_def1));
            let bases: Vec<u32> = (0..3).map(|_| rng.next() as u32).collect();
            let mut t: Lpm<u32> = Lpm::new();
            let mut m: Vec<(Prefix, u32)> = Vec::new();
            for op in 0..1500u32 {
                let roll = rng.below(100);
                if roll < 60 || m.is_empty() {
                    let q = if roll < 15 && !m.is_empty() {
                        m[rng.index(m.len())].0
                    } else {
                        rand_prefix(&mut rng, &bases)
                    };
                    let old = match m.iter_mut().find(|(x, _)| *x == q) {
                        Some(e) => Some(std::mem::replace(&mut e.1, op)),
                        None => {
                            m.push((q, op));
                            None
                        }
                    };
                    assert_eq!(t.insert(q, op), Ok(old), "insert {q}");
                } else {
                    let q = if rng.chance(80) {
                        m[rng.index(m.len())].0
                    } else {
                        rand_prefix(&mut rng, &bases)
                    };
                    let old = m.iter().position(|(x, _)| *x == q).map(|i| m.remove(i).1);
                    assert_eq!(t.remove(q), old, "remove {q}");
                }
                if op.is_multiple_of(7) {
                    check_all(&t, &m, &mut rng, &bases);
                }
                if op.is_multiple_of(100) {
                    let mut sorted = m.clone();
                    sorted.sort();
                    assert_eq!(t.iter().collect::<Vec<_>>(), sorted);
                    check_shape(&t);
                }
            }
            while !m.is_empty() {
                let (q, v) = m.remove(rng.index(m.len()));
                assert_eq!(t.remove(q), Some(v));
                if m.len().is_multiple_of(16) {
                    check_all(&t, &m, &mut rng, &bases);
                }
            }
            check_shape(&t);
            assert!(t.is_empty());
            assert_eq!(t.chunks_in_use(), 0);
            assert!(t.pool.is_empty() && t.free_chunks.is_empty());
            assert_eq!(t.memory_bytes(), 4 * ROOT_LEN);
            assert!(t.root.iter().all(|&e| e == 0));
        }
    }

    #[test]
    fn default_route_and_host_routes() {
        let mut t = Lpm::new();
        assert_eq!(t.lookup(ip("1.2.3.4")), None);
        t.insert(p("0.0.0.0/0"), 1).unwrap();
        assert_eq!(t.lookup(0), Some(1));
        assert_eq!(t.lookup(u32::MAX), Some(1));
        t.insert(p("255.255.255.255"), 2).unwrap();
        t.insert(p("0.0.0.0/32"), 3).unwrap();
        t.insert(p("10.1.2.3/32"), 4).unwrap();
        assert_eq!(t.lookup(u32::MAX), Some(2));
        assert_eq!(t.lookup(u32::MAX - 1), Some(1));
        assert_eq!(t.lookup(0), Some(3));
        assert_eq!(t.lookup(1), Some(1));
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(4));
        assert_eq!(t.lookup(ip("10.1.2.4")), Some(1));
        assert_eq!(
            t.lookup_with_prefix(ip("10.1.2.2")),
            Some((p("0.0.0.0/0"), 1))
        );
        // Replacing the default route keeps the host routes.
        assert_eq!(t.insert(p("0.0.0.0/0"), 5), Ok(Some(1)));
        assert_eq!(t.lookup(ip("10.1.2.4")), Some(5));
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(4));
        assert_eq!(t.remove(p("0.0.0.0/0")), Some(5));
        assert_eq!(t.lookup(ip("10.1.2.4")), None);
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(4));
        assert_eq!(t.remove(p("0.0.0.0/0")), None);
        check_shape(&t);
    }

    #[test]
    fn neighbours_and_restored_coverage() {
        let mut t = Lpm::new();
        t.insert(p("10.0.0.0/16"), 16).unwrap();
        t.insert(p("10.1.0.0/17"), 17).unwrap();
        assert_eq!(t.lookup(ip("10.0.255.255")), Some(16));
        assert_eq!(t.lookup(ip("10.1.0.0")), Some(17));
        assert_eq!(t.lookup(ip("10.1.127.255")), Some(17));
        assert_eq!(t.lookup(ip("10.1.128.0")), None);
        assert_eq!(t.lookup(ip("9.255.255.255")), None);

        t.insert(p("10.0.0.0/8"), 8).unwrap();
        t.insert(p("10.0.5.0/24"), 24).unwrap();
        t.insert(p("10.0.5.128/25"), 25).unwrap();
        assert_eq!(t.lookup(ip("10.0.5.127")), Some(24));
        assert_eq!(t.lookup(ip("10.0.5.128")), Some(25));
        assert_eq!(t.lookup(ip("10.1.128.0")), Some(8));
        // Removing a longer route gives its addresses back to the shorter.
        assert_eq!(t.remove(p("10.0.5.128/25")), Some(25));
        assert_eq!(t.lookup(ip("10.0.5.128")), Some(24));
        assert_eq!(t.remove(p("10.0.5.0/24")), Some(24));
        assert_eq!(t.lookup(ip("10.0.5.128")), Some(16));
        assert_eq!(t.remove(p("10.0.0.0/16")), Some(16));
        assert_eq!(t.lookup(ip("10.0.5.128")), Some(8));
        assert_eq!(t.lookup(ip("10.1.0.1")), Some(17));
        // A shorter route under a longer one changes nothing it covers.
        t.insert(p("10.1.0.0/16"), 160).unwrap();
        assert_eq!(t.lookup(ip("10.1.0.1")), Some(17));
        assert_eq!(t.lookup(ip("10.1.200.1")), Some(160));
        check_shape(&t);
        let all: Vec<_> = t.iter().map(|(q, v)| (q.to_string(), v)).collect();
        assert_eq!(
            all,
            [
                ("10.0.0.0/8".to_string(), 8),
                ("10.1.0.0/16".to_string(), 160),
                ("10.1.0.0/17".to_string(), 17)
            ]
        );
    }

    #[test]
    fn removing_everything_frees_every_chunk() {
        let mut t = Lpm::new();
        let mut rng = Rng(42);
        let mut ps = Vec::new();
        for i in 0..500u32 {
            let len = 17 + rng.below(16) as u8;
            let q = Prefix {
                addr: (rng.next() as u32 & 0x0fff_ffff) & mask(len),
                len,
            };
            if t.insert(q, i).unwrap().is_none() {
                ps.push(q);
            }
        }
        assert!(t.chunks_in_use() > 100);
        assert!(t.memory_bytes() > 100 * 1024);
        check_shape(&t);
        for q in ps {
            assert!(t.remove(q).is_some());
        }
        assert_eq!(t.chunks_in_use(), 0);
        assert!(t.pool.is_empty() && t.free_chunks.is_empty());
        assert!(t.slots.is_empty() && t.free_slots.is_empty());
        assert_eq!(t.memory_bytes(), 4 * ROOT_LEN);
        assert!(t.root.iter().all(|&e| e == 0));
    }

    #[test]
    fn route_limit() {
        let mut t = Lpm::with_limits(3, 16);
        t.insert(p("10.0.0.0/8"), 1).unwrap();
        t.insert(p("10.1.0.0/16"), 2).unwrap();
        t.insert(p("10.1.1.0/24"), 3).unwrap();
        let before: Vec<_> = t.iter().collect();
        let mem = t.memory_bytes();
        assert_eq!(
            t.insert(p("10.1.1.128/25"), 4),
            Err(RouteError::Full { max: 3 })
        );
        assert_eq!(
            t.insert(p("0.0.0.0/0"), 4),
            Err(RouteError::Full { max: 3 })
        );
        assert_eq!(t.len(), 3);
        assert_eq!(t.iter().collect::<Vec<_>>(), before);
        assert_eq!(t.memory_bytes(), mem);
        assert_eq!(t.lookup(ip("10.1.1.200")), Some(3));
        assert_eq!(t.lookup(ip("11.0.0.0")), None);
        // Replacing still works when full.
        assert_eq!(t.insert(p("10.1.1.0/24"), 30), Ok(Some(3)));
        assert_eq!(t.lookup(ip("10.1.1.200")), Some(30));
        // And removing makes room.
        t.remove(p("10.0.0.0/8"));
        assert_eq!(t.insert(p("0.0.0.0/0"), 4), Ok(None));
        assert_eq!(t.lookup(ip("11.0.0.0")), Some(4));
        check_shape(&t);
    }

    #[test]
    fn chunk_limit() {
        let mut t = Lpm::with_limits(100, 1);
        t.insert(p("10.0.0.0/8"), 1).unwrap();
        t.insert(p("10.1.1.0/24"), 2).unwrap();
        assert_eq!(t.chunks_in_use(), 1);
        let before: Vec<_> = t.iter().collect();
        let mem = t.memory_bytes();
        let full = Err(RouteError::Full { max: 1 });
        // A /25 needs a level-3 chunk; a /20 elsewhere a new level-2 one.
        assert_eq!(t.insert(p("10.1.1.128/25"), 3), full);
        assert_eq!(t.insert(p("10.2.0.0/20"), 3), full);
        assert_eq!(t.insert(p("10.3.3.3/32"), 3), full);
        assert_eq!(t.len(), 2);
        assert_eq!(t.iter().collect::<Vec<_>>(), before);
        assert_eq!(t.memory_bytes(), mem);
        assert_eq!(t.chunks_in_use(), 1);
        assert_eq!(t.lookup(ip("10.1.1.200")), Some(2));
        assert_eq!(t.lookup(ip("10.2.0.1")), Some(1));
        check_shape(&t);
        // Routes that fit in the chunk there is, or need none, still go in.
        assert_eq!(t.insert(p("10.1.128.0/17"), 4), Ok(None));
        assert_eq!(t.insert(p("10.2.0.0/16"), 5), Ok(None));
        assert_eq!(t.insert(p("10.1.1.0/24"), 6), Ok(Some(2)));
        assert_eq!(t.lookup(ip("10.1.1.200")), Some(6));
        assert_eq!(t.lookup(ip("10.1.200.1")), Some(4));
        assert_eq!(t.lookup(ip("10.2.0.1")), Some(5));
        check_shape(&t);

        // With no chunks at all, only /16 and shorter routes fit.
        let mut t = Lpm::with_limits(100, 0);
        assert_eq!(t.insert(p("10.0.0.0/16"), 1), Ok(None));
        assert_eq!(
            t.insert(p("10.0.0.0/17"), 1),
            Err(RouteError::Full { max: 0 })
        );
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.memory_bytes(),
            4 * ROOT_LEN + t.slots.capacity() * std::mem::size_of::<(Prefix, u32)>()
        );
    }

    #[test]
    fn many_routes_then_default_route() {
        const N: usize = 100_000;
        let mut rng = Rng(0x5eed_0001);
        let mut t = Lpm::with_limits(1 << 20, 1 << 18);
        let start = Instant::now();
        for i in 0..N as u32 {
            let len = 8 + rng.below(25) as u8;
            let q = Prefix {
                addr: rng.next() as u32 & mask(len),
                len,
            };
            t.insert(q, i).unwrap();
        }
        let filled = start.elapsed();
        let start = Instant::now();
        t.insert(p("0.0.0.0/0"), u32::MAX).unwrap();
        let default = start.elapsed();
        let start = Instant::now();
        t.insert(p("128.0.0.0/1"), u32::MAX - 1).unwrap();
        t.remove(p("0.0.0.0/0"));
        let more = start.elapsed();
        eprintln!(
            "{} routes in {filled:?}, /0 in {default:?}, /1 and removing /0 in {more:?}, \
             {} chunks, {} KiB",
            t.len(),
            t.chunks_in_use(),
            t.memory_bytes() >> 10
        );
        for _ in 0..2000 {
            let a = rng.next() as u32;
            assert_eq!(t.lookup_with_prefix(a), slow_lookup(&t, a), "{a:#x}");
        }
        check_shape(&t);
    }

    #[test]
    fn parse_and_display() {
        for (s, shown) in [
            ("10.0.0.0/24", "10.0.0.0/24"),
            ("10.1.2.3", "10.1.2.3/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("255.255.255.255/32", "255.255.255.255/32"),
            ("192.168.0.0/16", "192.168.0.0/16"),
            ("10.0.0.0/08", "10.0.0.0/8"),
        ] {
            assert_eq!(p(s).to_string(), shown, "{s}");
        }
        let q = p("172.16.0.0/12");
        assert_eq!(q.addr(), Ipv4Addr::new(172, 16, 0, 0));
        assert_eq!(q.len(), 12);
        assert!(q.contains(Ipv4Addr::new(172, 31, 255, 255)));
        assert!(!q.contains(Ipv4Addr::new(172, 32, 0, 0)));
        assert!(p("0.0.0.0/0").contains(Ipv4Addr::BROADCAST));
        assert_eq!(
            Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap(),
            p("10.0.0.0/8")
        );

        let err = |s: &str| s.parse::<Prefix>().unwrap_err().to_string();
        assert_eq!(
            err("10.0.0.1/24"),
            "10.0.0.1/24: host bits set (did you mean 10.0.0.0/24?)"
        );
        assert_eq!(
            err("0.0.0.1/0"),
            "0.0.0.1/0: host bits set (did you mean 0.0.0.0/0?)"
        );
        assert_eq!(err("10.0.0.0/33"), "bad prefix length 33 (want 0 to 32)");
        assert_eq!(err("10.0.0.0/255"), "bad prefix length 255 (want 0 to 32)");
        assert_eq!(
            err("10.0.0.0/256"),
            "bad prefix length \"256\" (want 0 to 32)"
        );
        assert_eq!(err("10.0.0.0/"), "bad prefix length \"\" (want 0 to 32)");
        assert_eq!(
            err("10.0.0.0/+8"),
            "bad prefix length \"+8\" (want 0 to 32)"
        );
        assert_eq!(
            err("10.0.0.0/-1"),
            "bad prefix length \"-1\" (want 0 to 32)"
        );
        assert_eq!(
            err("10.0.0.0/8/8"),
            "bad prefix length \"8/8\" (want 0 to 32)"
        );
        assert_eq!(
            err("10.0.0.0/ 8"),
            "bad prefix length \" 8\" (want 0 to 32)"
        );
        assert_eq!(
            err("10.0.0.0/8 "),
            "bad prefix length \"8 \" (want 0 to 32)"
        );
        assert_eq!(err("x/8"), "bad address \"x\"");
        assert_eq!(err(" 10.0.0.0/8"), "bad address \" 10.0.0.0\"");
        assert_eq!(err(""), "bad address \"\"");
        assert_eq!(err("/8"), "bad address \"\"");
        assert_eq!(err("10.0.0/8"), "bad address \"10.0.0\"");
        assert_eq!(err("10.0.0.256/32"), "bad address \"10.0.0.256\"");
        assert_eq!(err("010.0.0.0/8"), "bad address \"010.0.0.0\"");
        assert_eq!(err("::1/128"), "bad address \"::1\"");
        assert!(err(&"9".repeat(10_000)).len() < 80);
        assert_eq!(
            Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 33),
            Err(RouteError::BadLength("33".into()))
        );
        assert_eq!(
            Prefix::new(Ipv4Addr::new(10, 0, 0, 1), 31),
            Err(RouteError::HostBits {
                addr: Ipv4Addr::new(10, 0, 0, 1),
                len: 31
            })
        );
        assert_eq!(
            RouteError::Full { max: 3 }.to_string(),
            "route table is full (limit 3)"
        );
    }
}
