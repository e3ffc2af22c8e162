//! The forwarding database: (VLAN, MAC) -> port, with ageing, static entries,
//! station moves and a hard limit on learned entries.
//!
//! IEEE 802.1Q-2018 clause 8.8 (filtering database): dynamic entries are
//! created by learning and removed by ageing (default ageing time 300 s,
//! clause 8.8.3); static entries are added by management and never aged.
//!
//! # Why a table of its own
//!
//! The FDB used to be a `hashbrown::HashMap`. A general map is the wrong shape
//! for a table that every frame reads twice and that may hold a million
//! entries: its control bytes and its buckets are two arrays, so a lookup in
//! a table larger than the caches misses twice; it has no way to say where a
//! key's bucket is before the lookup, so a worker cannot start the misses of a
//! whole batch at once; and its 32-byte buckets made a million entries cost
//! about 64 MiB.
//!
//! This table is made for the one job:
//!
//! - **One array of 16-byte slots**, a power of two long and aligned so
//!   four share a cache line and none straddles two. A slot holds the key
//!   (VLAN << 48 | MAC), one 16-bit word with the port (14 bits) and the
//!   occupied and static flags, the tunnel peer, and a 32-bit last-seen stamp
//!   (see *Time*). An entry costs its slot over the load: 23 to 46 bytes
//!   while the table grows (35 to 70 % full), 33.5 bytes at 1 000 000
//!   entries and 32 at [`FDB_HARD_MAX`] (2^21 slots, 32 MiB).
//! - **Hash**: a folded multiply of the key xor a per-table random seed (one
//!   64x64->128-bit multiply, the halves xored); the slot is the top bits.
//!   Every key bit reaches those bits, so MACs that differ only in their last
//!   bytes spread, and the seed keeps an outsider from computing source MACs
//!   that pile into one probe run.
//! - **Linear probing**: a lookup reads the home slot and, now and then, the
//!   next ones, in the same line or the next. [`Fdb::prefetch`] starts loading
//!   the home slot's line early, so a batch's misses overlap
//!   ([`crate::bridge::Bridge::prefetch_frame`]).
//! - **Backward-shift deletion**: after a removal, the entries behind it that
//!   may move closer to their home slot do. No tombstones, so probe runs stay
//!   as short as the load allows however long the table churns.
//! - **Size**: the array doubles before an insert would take it past 70 %
//!   full, up to 2^21 slots, where [`FDB_HARD_MAX`] entries fill half of it;
//!   it never grows further. Bulk removals and ageing rounds that leave it
//!   under 1/8 full halve it (or more). Big arrays are offered to transparent
//!   huge pages (one TLB entry per 2 MiB instead of 512).
//!
//! # Time
//!
//! Stamps count [`TICK_NS`] (10 ms) ticks of the caller's clock in 32 bits and
//! are compared with wrapping arithmetic: the age of an entry is
//! `tick(now) - stamp` mod 2^32, correct across the wrap (every 497 days of
//! uptime). A difference of 2^31 ticks or more is read as negative -- a stamp
//! written with a later clock reading than `now`, as when another worker took
//! the lock first -- and counts as age 0, as the old saturating subtraction
//! did. The ageing time is clamped to 2^30 ticks (about 124 days; the engine
//! accepts at most [`super::MAX_AGEING_S`], 11.6 days), so an entry
//! is old enough to age out long before its age could read as negative; the
//! engine's sweep ([`Fdb::age_part`], a whole round every second) removes it
//! then. A caller that never ages keeps the lookup's own check, which is
//! right for 248 days after an entry was last seen.

use super::events::{BridgeEvent, EventLog, FdbChange};
use crate::MacAddr;
use std::hash::BuildHasher;

/// Index of a port in the engine's port table.
pub type PortId = u32;

/// The most entries any FDB holds, whatever `--fdb-max` says: bounds memory
/// even for a bridge without a configured limit (32 MiB of slots at this
/// size).
pub const FDB_HARD_MAX: usize = 1 << 20;

/// The largest port id an entry can hold (14 bits of a slot).
pub const FDB_MAX_PORT: PortId = (1 << 14) - 1;

/// Granularity of last-seen stamps.
pub const TICK_NS: u64 = 10_000_000;
const TICKS_PER_S: u64 = 1_000_000_000 / TICK_NS;
/// Longest ageing time honoured, in ticks (about 124 days).
const MAX_AGEING_TICKS: u64 = 1 << 30;

/// Slots of a new table.
const MIN_SLOTS: usize = 64;
/// Slots at [`FDB_HARD_MAX`] entries: the table never grows past this.
const MAX_SLOTS: usize = 2 * FDB_HARD_MAX;
const _: () = assert!(FDB_HARD_MAX * 10 <= MAX_SLOTS * 7);
/// Arrays at least this big are offered to transparent huge pages.
const HUGE_MIN_BYTES: usize = 4 << 20;
const HUGE_PAGE: usize = 2 << 20;
/// Smaller arrays (256 KiB) are not prefetched: they stay in the L2 cache
/// of a busy worker, and a prefetch pass would only hash every key twice.
const PREFETCH_MIN_SLOTS: usize = (256 << 10) / std::mem::size_of::<Slot>();

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    pub port: PortId,
    /// Behind a tunnel port: which of its remotes the station is at (an
    /// index into the port's remote table; 0 for none).
    pub peer: u16,
    pub is_static: bool,
    /// When the address was last seen (ns on the engine's monotonic clock,
    /// to a [`TICK_NS`] tick; 0 for static entries).
    pub last_seen_ns: u64,
}

/// What learning a source address did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// A new dynamic entry.
    New,
    /// Known on this port; age refreshed.
    Refreshed,
    /// Known on another port; moved here (station move).
    Moved { from: PortId },
    /// Static entry exists; left alone.
    Static,
    /// Not learned: the table is at its limit (or the port id is beyond
    /// [`FDB_MAX_PORT`], which the engine never hands out).
    Full,
    /// Not learned: the port is at its `--mac-limit`.
    PortLimit,
}

#[inline(always)]
fn key(vlan: u16, mac: MacAddr) -> u64 {
    (u64::from(vlan) << 48) | mac.to_u64()
}

fn unkey(k: u64) -> (u16, MacAddr) {
    ((k >> 48) as u16, MacAddr::from_u64(k & 0xffff_ffff_ffff))
}

/// `now_ns` in ticks, truncated to the stamps' 32 bits.
#[inline(always)]
fn tick(now_ns: u64) -> u32 {
    (now_ns / TICK_NS) as u32
}

/// Ticks from `then` to `now` across the wrap; "negative" ages count as 0.
#[inline(always)]
fn elapsed(now: u32, then: u32) -> u32 {
    let d = now.wrapping_sub(then);
    if d > i32::MAX as u32 {
        0
    } else {
        d
    }
}

/// A dynamic entry last seen `ageing` ticks or more before `now`.
#[inline(always)]
fn expired(s: &Slot, now: u32, ageing: u32) -> bool {
    !s.is_static() && elapsed(now, s.stamp) >= ageing
}

/// One entry of the table, or an empty place (all zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, align(16))]
struct Slot {
    key: u64,
    /// [`OCCUPIED`], [`STATIC`] and the port id.
    meta: u16,
    peer: u16,
    /// Last seen, in ticks (dynamic entries).
    stamp: u32,
}

const OCCUPIED: u16 = 1 << 15;
const STATIC: u16 = 1 << 14;
const PORT_BITS: u16 = FDB_MAX_PORT as u16;
const _: () = assert!(std::mem::size_of::<Slot>() == 16);

impl Slot {
    const EMPTY: Slot = Slot {
        key: 0,
        meta: 0,
        peer: 0,
        stamp: 0,
    };

    /// An entry; `port` must be at most [`FDB_MAX_PORT`].
    #[inline(always)]
    fn new(key: u64, port: PortId, is_static: bool, peer: u16, stamp: u32) -> Slot {
        debug_assert!(port <= FDB_MAX_PORT);
        let flags = if is_static {
            OCCUPIED | STATIC
        } else {
            OCCUPIED
        };
        Slot {
            key,
            meta: flags | (port as u16 & PORT_BITS),
            peer,
            stamp,
        }
    }

    #[inline(always)]
    fn occupied(&self) -> bool {
        self.meta & OCCUPIED != 0
    }

    #[inline(always)]
    fn is_static(&self) -> bool {
        self.meta & STATIC != 0
    }

    #[inline(always)]
    fn port(&self) -> PortId {
        PortId::from(self.meta & PORT_BITS)
    }
}

/// An all-empty slot array of `n` slots (a power of two).
fn new_slots(n: usize) -> Box<[Slot]> {
    let mut v: Vec<Slot> = Vec::with_capacity(n);
    let bytes = n * std::mem::size_of::<Slot>();
    if bytes >= HUGE_MIN_BYTES {
        advise_huge(v.as_ptr() as usize, bytes);
    }
    // Written after the advice, so the first touch can fault in huge pages.
    v.resize(n, Slot::EMPTY);
    v.into_boxed_slice()
}

/// Asks the kernel to back the whole 2 MiB pages inside `[start, start +
/// len)` with transparent huge pages (it may not: THP off, or no free
/// huge page). Costs a system call per table resize, nothing per frame.
#[cfg(target_os = "linux")]
fn advise_huge(start: usize, len: usize) {
    let from = start.next_multiple_of(HUGE_PAGE);
    let to = (start + len) / HUGE_PAGE * HUGE_PAGE;
    if to > from {
        // SAFETY: [from, to) lies inside an allocation this table owns and
        // nothing else uses; MADV_HUGEPAGE only marks the range as eligible
        // for huge pages and never changes its contents or validity.
        let _ = unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_start: usize, _len: usize) {}

/// The open-addressing table itself: placement, probing, deletion and
/// resizing. What entries mean (ageing, counts, limits) is [`Fdb`]'s.
struct Table {
    slots: Box<[Slot]>,
    /// 64 - log2(slots.len()): the home slot is the hash's top bits.
    shift: u32,
    len: usize,
    seed: u64,
}

impl Table {
    fn new(n: usize, seed: u64) -> Table {
        debug_assert!(n.is_power_of_two() && n >= MIN_SLOTS);
        Table {
            slots: new_slots(n),
            shift: 64 - n.trailing_zeros(),
            len: 0,
            seed,
        }
    }

    #[inline(always)]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    #[inline(always)]
    fn hash(&self, k: u64) -> u64 {
        let p = u128::from(k ^ self.seed) * 0x9e37_79b9_7f4a_7c15;
        (p as u64) ^ ((p >> 64) as u64)
    }

    #[inline(always)]
    fn home(&self, k: u64) -> usize {
        (self.hash(k) >> self.shift) as usize
    }

    /// `Ok(slot of k)`, or `Err(the empty slot where k would go)`. Ends:
    /// the table always has an empty slot (at most 70 % full).
    #[inline(always)]
    fn find(&self, k: u64) -> Result<usize, usize> {
        let mask = self.mask();
        let mut i = self.home(k);
        loop {
            let s = &self.slots[i];
            if !s.occupied() {
                return Err(i);
            }
            if s.key == k {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    #[inline(always)]
    fn get(&self, k: u64) -> Option<&Slot> {
        self.find(k).ok().map(|i| &self.slots[i])
    }

    #[inline(always)]
    fn prefetch(&self, k: u64) {
        if let Some(s) = self.slots.get(self.home(k)) {
            crate::cache::prefetch_line(std::ptr::from_ref(s).cast());
        }
    }

    /// Whether one more entry would pass the load limit (and growing can
    /// help).
    #[inline(always)]
    fn needs_grow(&self) -> bool {
        (self.len + 1) * 10 > self.slots.len() * 7 && self.slots.len() < MAX_SLOTS
    }

    /// Fills the empty slot `i` that [`Table::find`] returned.
    #[inline(always)]
    fn fill(&mut self, i: usize, s: Slot) {
        self.slots[i] = s;
        self.len += 1;
    }

    /// Empties slot `i` and shifts the entries after it back towards their
    /// home slots, so every entry stays reachable from its home slot without
    /// crossing an empty one. Entries only move backwards (cyclically), from
    /// after `i` into `i` or later holes.
    fn remove_at(&mut self, i: usize) {
        let mask = self.mask();
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if !s.occupied() {
                break;
            }
            // The entry at j may fill the hole unless its home lies
            // cyclically in (hole, j].
            let home = self.home(s.key);
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = Slot::EMPTY;
        self.len -= 1;
    }

    /// Moves every entry into a new array of `n` slots.
    #[cold]
    #[inline(never)]
    fn resize(&mut self, n: usize) {
        let mut t = Table::new(n, self.seed);
        for s in self.slots.iter().filter(|s| s.occupied()) {
            let (Ok(i) | Err(i)) = t.find(s.key);
            t.fill(i, *s);
        }
        *self = t;
    }

    /// Removes the entries in slots `from..to` that `gone` selects, calling
    /// `removed` with each. Returns how many went. A slot emptied is looked
    /// at again, since a later entry may have shifted into it.
    fn sweep(
        &mut self,
        from: usize,
        to: usize,
        mut gone: impl FnMut(&Slot) -> bool,
        mut removed: impl FnMut(&Slot),
    ) -> usize {
        let mut n = 0;
        let mut i = from;
        while let Some(at) = self
            .slots
            .get(i..to)
            .and_then(|rest| rest.iter().position(|s| s.occupied() && gone(s)))
        {
            i += at;
            removed(&self.slots[i]);
            self.remove_at(i);
            n += 1;
        }
        n
    }
}

/// Dynamic entries, in all and per port.
#[derive(Default)]
struct Counts {
    total: usize,
    per_port: Vec<u32>,
}

impl Counts {
    fn inc(&mut self, p: PortId) {
        let i = p as usize;
        if self.per_port.len() <= i {
            self.per_port.resize(i + 1, 0);
        }
        self.per_port[i] += 1;
        self.total += 1;
    }

    fn dec(&mut self, p: PortId) {
        if let Some(c) = self.per_port.get_mut(p as usize) {
            *c = c.saturating_sub(1);
        }
        self.total = self.total.saturating_sub(1);
    }

    fn port(&self, p: PortId) -> u32 {
        self.per_port.get(p as usize).copied().unwrap_or(0)
    }
}

/// Logs the removal of slot `s` (when a monitor listens).
#[inline]
fn log_removed(events: &mut EventLog, s: &Slot, why: FdbChange) {
    if events.is_on() {
        let (vlan, mac) = unkey(s.key);
        events.push(BridgeEvent::Fdb {
            change: why,
            vlan,
            mac,
            port: s.port(),
            peer: s.peer,
        });
    }
}

pub struct Fdb {
    table: Table,
    counts: Counts,
    /// Limit on dynamic entries (`--fdb-max`), at most [`FDB_HARD_MAX`].
    max_dynamic: usize,
    /// Ageing time in ticks, at most [`MAX_AGEING_TICKS`].
    ageing_ticks: u32,
    /// The latest time learning or ageing was given: what [`Fdb::get`] and
    /// [`Fdb::remove`] report last-seen times against.
    latest_ns: u64,
    /// Where the next [`Fdb::age_part`] starts.
    age_cursor: usize,
    /// Changes for `vswitchctl monitor` (off unless one listens); the bridge
    /// logs its port events here too.
    pub events: EventLog,
    /// Stations learned new, and stations that moved to another port, since
    /// the FDB was made (`vswitchd --metrics`).
    learned: u64,
    moved: u64,
}

impl Fdb {
    pub fn new(ageing_s: u32, fdb_max: Option<u32>) -> Fdb {
        // RandomState is seeded from the OS's randomness per instance.
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
        Fdb::with_hash_seed(ageing_s, fdb_max, seed)
    }

    /// An FDB whose hash is keyed by `seed` (tests that need the same slot
    /// layout on every run).
    fn with_hash_seed(ageing_s: u32, fdb_max: Option<u32>, seed: u64) -> Fdb {
        let mut f = Fdb {
            table: Table::new(MIN_SLOTS, seed),
            counts: Counts::default(),
            max_dynamic: FDB_HARD_MAX,
            ageing_ticks: 0,
            latest_ns: 0,
            age_cursor: 0,
            events: EventLog::default(),
            learned: 0,
            moved: 0,
        };
        f.set_ageing(ageing_s);
        f.set_max(fdb_max);
        f
    }

    /// Sets the ageing time (clamped to about 124 days; see *Time* above).
    pub fn set_ageing(&mut self, ageing_s: u32) {
        self.ageing_ticks = (u64::from(ageing_s) * TICKS_PER_S).min(MAX_AGEING_TICKS) as u32;
    }

    pub fn set_max(&mut self, fdb_max: Option<u32>) {
        self.max_dynamic = fdb_max.map_or(FDB_HARD_MAX, |m| (m as usize).min(FDB_HARD_MAX));
    }

    pub fn len(&self) -> usize {
        self.table.len
    }

    pub fn is_empty(&self) -> bool {
        self.table.len == 0
    }

    pub fn dynamic_len(&self) -> usize {
        self.counts.total
    }

    /// Learning events so far: (stations learned new, stations moved).
    pub fn learn_events(&self) -> (u64, u64) {
        (self.learned, self.moved)
    }

    #[inline(always)]
    fn expired(&self, s: &Slot, now: u32) -> bool {
        expired(s, now, self.ageing_ticks)
    }

    /// The public view of a slot, its last-seen time rebuilt against
    /// `now_ns`.
    fn entry(s: &Slot, now_ns: u64) -> FdbEntry {
        let is_static = s.is_static();
        let last_seen_ns = if is_static {
            0
        } else {
            let age = u64::from(elapsed(tick(now_ns), s.stamp));
            (now_ns / TICK_NS).saturating_sub(age) * TICK_NS
        };
        FdbEntry {
            port: s.port(),
            peer: s.peer,
            is_static,
            last_seen_ns,
        }
    }

    /// Learns `mac` on `port` in `vlan` at `now_ns`. `port_limit` caps the
    /// dynamic entries one port may hold (`--mac-limit`).
    #[inline]
    pub fn learn(
        &mut self,
        vlan: u16,
        mac: MacAddr,
        port: PortId,
        now_ns: u64,
        port_limit: Option<u32>,
    ) -> Learn {
        self.learn_from(vlan, mac, port, 0, now_ns, port_limit)
    }

    /// [`Fdb::learn`] for a frame that came through tunnel remote `peer` of
    /// `port`: a station that moved to another remote follows it.
    #[inline(always)]
    pub fn learn_from(
        &mut self,
        vlan: u16,
        mac: MacAddr,
        port: PortId,
        peer: u16,
        now_ns: u64,
        port_limit: Option<u32>,
    ) -> Learn {
        let k = key(vlan, mac);
        let now = tick(now_ns);
        if now_ns > self.latest_ns {
            self.latest_ns = now_ns;
        }
        let at_port_limit = |c: &Counts| port_limit.is_some_and(|l| c.port(port) >= l);
        match self.table.find(k) {
            Ok(i) => {
                let s = &mut self.table.slots[i];
                if s.is_static() {
                    return Learn::Static;
                }
                let from = s.port();
                if from == port {
                    // Unchanged (the same tick) is not written: the line
                    // stays clean for the other workers reading it.
                    if s.stamp != now || s.peer != peer {
                        let moved_remote = s.peer != peer;
                        s.stamp = now;
                        s.peer = peer;
                        if moved_remote {
                            // Behind another remote of the same tunnel port
                            // (a station moved between VTEPs).
                            self.events.push(BridgeEvent::Fdb {
                                change: FdbChange::Moved(port),
                                vlan,
                                mac,
                                port,
                                peer,
                            });
                        }
                    }
                    return Learn::Refreshed;
                }
                if port > FDB_MAX_PORT {
                    return Learn::Full;
                }
                if at_port_limit(&self.counts) {
                    return Learn::PortLimit;
                }
                *s = Slot::new(k, port, false, peer, now);
                self.counts.dec(from);
                self.counts.inc(port);
                self.moved += 1;
                self.events.push(BridgeEvent::Fdb {
                    change: FdbChange::Moved(from),
                    vlan,
                    mac,
                    port,
                    peer,
                });
                Learn::Moved { from }
            }
            Err(i) => {
                if self.counts.total >= self.max_dynamic
                    || self.table.len >= FDB_HARD_MAX
                    || port > FDB_MAX_PORT
                {
                    return Learn::Full;
                }
                if at_port_limit(&self.counts) {
                    return Learn::PortLimit;
                }
                self.insert(i, Slot::new(k, port, false, peer, now));
                self.counts.inc(port);
                self.learned += 1;
                self.events.push(BridgeEvent::Fdb {
                    change: FdbChange::Learned,
                    vlan,
                    mac,
                    port,
                    peer,
                });
                Learn::New
            }
        }
    }

    /// Puts `s` (whose key is not in the table) in the empty slot `i` that
    /// `find` returned, growing the table first if it is due.
    #[inline(always)]
    fn insert(&mut self, i: usize, s: Slot) {
        let i = if self.table.needs_grow() {
            self.table.resize(self.table.slots.len() * 2);
            self.age_cursor = 0;
            let (Ok(j) | Err(j)) = self.table.find(s.key);
            j
        } else {
            i
        };
        self.table.fill(i, s);
    }

    /// The port `mac` in `vlan` was learned on, unless the entry has aged out
    /// (checked here too, so the sweep interval does not matter).
    #[inline]
    pub fn lookup(&self, vlan: u16, mac: MacAddr, now_ns: u64) -> Option<PortId> {
        self.lookup_peer(vlan, mac, now_ns).map(|(p, _)| p)
    }

    /// [`Fdb::lookup`] with the tunnel remote the station is behind.
    #[inline]
    pub fn lookup_peer(&self, vlan: u16, mac: MacAddr, now_ns: u64) -> Option<(PortId, u16)> {
        let s = self.table.get(key(vlan, mac))?;
        if self.expired(s, tick(now_ns)) {
            return None;
        }
        Some((s.port(), s.peer))
    }

    /// Starts loading the memory a lookup or learning of `mac` in `vlan`
    /// will read, and returns at once. Prefetching a batch's keys before
    /// working through it overlaps the batch's cache misses; a wrong or
    /// useless prefetch costs only the bandwidth. A no-op off x86-64, and
    /// while the table is small enough to stay cached ([`Fdb::wants_prefetch`]).
    #[inline(always)]
    pub fn prefetch(&self, vlan: u16, mac: MacAddr) {
        if self.wants_prefetch() {
            self.table.prefetch(key(vlan, mac));
        }
    }

    /// Whether [`Fdb::prefetch`] does anything: the table is too big to
    /// stay in cache. A caller may skip the work of finding keys otherwise.
    #[inline(always)]
    pub fn wants_prefetch(&self) -> bool {
        self.table.slots.len() >= PREFETCH_MIN_SLOTS
    }

    /// The entry of `mac` in `vlan`, aged out or not, its last-seen time
    /// rebuilt against the latest time learning or ageing was given.
    pub fn get(&self, vlan: u16, mac: MacAddr) -> Option<FdbEntry> {
        let s = self.table.get(key(vlan, mac))?;
        Some(Self::entry(s, self.latest_ns))
    }

    /// Whether a new station would be refused for the table's limits (the
    /// first check [`Fdb::learn_from`] makes of a new station).
    pub fn is_full(&self) -> bool {
        self.counts.total >= self.max_dynamic || self.table.len >= FDB_HARD_MAX
    }

    /// Dynamic entries learned on `port`.
    pub fn port_len(&self, port: PortId) -> u32 {
        self.counts.port(port)
    }

    /// Adds or replaces a static entry. Fails only when the table is full
    /// (or the port id is beyond [`FDB_MAX_PORT`]).
    pub fn add_static(&mut self, vlan: u16, mac: MacAddr, port: PortId) -> Result<(), FdbError> {
        self.add_static_via(vlan, mac, port, 0)
    }

    /// [`Fdb::add_static`] for a station behind remote `peer` of a tunnel
    /// port (the kernel's `bridge fdb add ... dst IP`).
    pub fn add_static_via(
        &mut self,
        vlan: u16,
        mac: MacAddr,
        port: PortId,
        peer: u16,
    ) -> Result<(), FdbError> {
        if port > FDB_MAX_PORT {
            return Err(FdbError::Port(port));
        }
        let k = key(vlan, mac);
        let s = Slot::new(k, port, true, peer, 0);
        match self.table.find(k) {
            Ok(i) => {
                let old = self.table.slots[i];
                if !old.is_static() {
                    self.counts.dec(old.port());
                }
                self.table.slots[i] = s;
            }
            Err(i) => {
                if self.table.len >= FDB_HARD_MAX {
                    return Err(FdbError::Full);
                }
                self.insert(i, s);
            }
        }
        Ok(())
    }

    /// Removes an entry (static or dynamic).
    pub fn remove(&mut self, vlan: u16, mac: MacAddr) -> Option<FdbEntry> {
        let i = self.table.find(key(vlan, mac)).ok()?;
        let s = self.table.slots[i];
        if !s.is_static() {
            self.counts.dec(s.port());
        }
        self.table.remove_at(i);
        log_removed(&mut self.events, &s, FdbChange::Flushed);
        Some(Self::entry(&s, self.latest_ns))
    }

    /// Removes the entries `gone` selects in slots `from..to`, keeping the
    /// counts right. Returns how many went.
    fn remove_in(
        &mut self,
        from: usize,
        to: usize,
        why: FdbChange,
        gone: impl FnMut(&Slot) -> bool,
    ) -> usize {
        let (counts, events) = (&mut self.counts, &mut self.events);
        self.table.sweep(from, to, gone, |s| {
            if !s.is_static() {
                counts.dec(s.port());
            }
            log_removed(events, s, why);
        })
    }

    /// Removes the entries `gone` selects anywhere, then lets the array
    /// shrink if it became mostly empty. Returns how many went.
    fn remove_where(&mut self, why: FdbChange, gone: impl FnMut(&Slot) -> bool) -> usize {
        let n = self.remove_in(0, self.table.slots.len(), why, gone);
        self.maybe_shrink();
        n
    }

    /// Halves the array (or more) when it is under 1/8 full, to a size where
    /// it is 1/8 to 1/4 full: far from both resize points.
    fn maybe_shrink(&mut self) {
        let n = self.table.slots.len();
        if n > MIN_SLOTS && self.table.len * 8 < n {
            let to = (self.table.len * 4).next_power_of_two().max(MIN_SLOTS);
            if to < n {
                self.table.resize(to);
                self.age_cursor = 0;
            }
        }
    }

    /// Removes `mac` in every VLAN. Returns how many entries went.
    pub fn remove_mac(&mut self, mac: MacAddr) -> usize {
        let m = mac.to_u64();
        self.remove_where(FdbChange::Flushed, |s| s.key & 0xffff_ffff_ffff == m)
    }

    /// Removes dynamic entries, all or those of one port. Returns how many.
    pub fn flush_dynamic(&mut self, port: Option<PortId>) -> usize {
        self.remove_where(FdbChange::Flushed, |s| {
            !s.is_static() && port.is_none_or(|p| p == s.port())
        })
    }

    /// Removes the dynamic entries learned behind remote `peer` of tunnel
    /// port `port` (the remote was taken off the port). Returns how many.
    pub fn flush_peer(&mut self, port: PortId, peer: u16) -> usize {
        self.remove_where(FdbChange::Flushed, |s| {
            !s.is_static() && s.port() == port && s.peer == peer
        })
    }

    /// Removes every entry of `port`, static ones too (port deleted).
    pub fn remove_port(&mut self, port: PortId) -> usize {
        self.remove_where(FdbChange::Flushed, |s| s.port() == port)
    }

    /// Drops dynamic entries not seen for the ageing time, all at once.
    /// Returns how many.
    pub fn age(&mut self, now_ns: u64) -> usize {
        self.latest_ns = self.latest_ns.max(now_ns);
        let (now, ageing) = (tick(now_ns), self.ageing_ticks);
        self.age_cursor = 0;
        self.remove_where(FdbChange::Aged, |s| expired(s, now, ageing))
    }

    /// [`Fdb::age`] a part at a time: sweeps the next `1/parts` of the
    /// slots (at least one) from where the previous call stopped, so the
    /// time the caller holds the table stays short. `parts` calls in a row
    /// look at every entry (an entry a removal elsewhere shifted back over
    /// the cursor waits one more round); at the end of each round the array
    /// may shrink. Returns how many entries went.
    pub fn age_part(&mut self, now_ns: u64, parts: usize) -> usize {
        self.latest_ns = self.latest_ns.max(now_ns);
        let (now, ageing) = (tick(now_ns), self.ageing_ticks);
        let n = self.table.slots.len();
        let from = self.age_cursor.min(n);
        let to = n.min(from + n.div_ceil(parts.max(1)));
        let gone = self.remove_in(from, to, FdbChange::Aged, |s| expired(s, now, ageing));
        self.age_cursor = if to >= n { 0 } else { to };
        if self.age_cursor == 0 {
            self.maybe_shrink();
        }
        gone
    }

    fn live(&self, now_ns: u64) -> impl Iterator<Item = (u16, MacAddr, FdbEntry)> + '_ {
        let now = tick(now_ns);
        self.table
            .slots
            .iter()
            .filter(move |s| s.occupied() && !self.expired(s, now))
            .map(move |s| {
                let (vlan, mac) = unkey(s.key);
                (vlan, mac, Self::entry(s, now_ns))
            })
    }

    /// All live entries as (vlan, mac, entry), in table order (one pass, no
    /// sorting: what a caller holding a lock should take).
    pub fn entries_unsorted(&self, now_ns: u64) -> Vec<(u16, MacAddr, FdbEntry)> {
        self.live(now_ns).collect()
    }

    /// All live entries as (vlan, mac, entry), sorted by VLAN then MAC.
    pub fn entries(&self, now_ns: u64) -> Vec<(u16, MacAddr, FdbEntry)> {
        let mut v: Vec<_> = self.live(now_ns).collect();
        v.sort_by_key(|(vlan, mac, _)| (*vlan, *mac));
        v
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdbError {
    #[error("forwarding database is full ({FDB_HARD_MAX} entries)")]
    Full,
    #[error("port id {0} is beyond the forwarding database's range (0-{FDB_MAX_PORT})")]
    Port(PortId),
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    #[test]
    fn learn_events_count_new_and_moved_stations_only() {
        let mut f = Fdb::new(300, Some(1));
        f.learn(1, mac(1), 7, 0, None); // new
        f.learn(1, mac(1), 7, S, None); // refreshed
        f.learn(1, mac(1), 8, 2 * S, None); // moved
        f.learn(1, mac(2), 8, 3 * S, None); // full: not learned
        f.add_static(1, mac(3), 8).unwrap();
        f.learn(1, mac(3), 7, 4 * S, None); // static: not moved
        assert_eq!(f.learn_events(), (1, 1));
    }

    #[test]
    fn learn_lookup_move_age() {
        let mut f = Fdb::new(300, None);
        assert_eq!(f.learn(1, mac(1), 7, 0, None), Learn::New);
        assert_eq!(f.lookup(1, mac(1), S), Some(7));
        assert_eq!(f.lookup(2, mac(1), S), None, "per-VLAN");
        assert_eq!(f.learn(1, mac(1), 7, 10 * S, None), Learn::Refreshed);
        assert_eq!(
            f.learn(1, mac(1), 8, 20 * S, None),
            Learn::Moved { from: 7 }
        );
        assert_eq!(f.lookup(1, mac(1), 21 * S), Some(8));
        // Ageing counts from the last time the station was seen.
        assert_eq!(f.lookup(1, mac(1), 319 * S), Some(8));
        assert_eq!(f.lookup(1, mac(1), 320 * S), None);
        assert_eq!(f.age(319 * S), 0);
        assert_eq!(f.age(320 * S), 1);
        assert!(f.is_empty());
        assert_eq!(f.dynamic_len(), 0);
    }

    #[test]
    fn static_entries_never_age_nor_move() {
        let mut f = Fdb::new(10, None);
        f.add_static(1, mac(1), 3).unwrap();
        assert_eq!(f.learn(1, mac(1), 4, 0, None), Learn::Static);
        assert_eq!(f.age(1000 * S), 0);
        assert_eq!(f.lookup(1, mac(1), 1000 * S), Some(3));
        assert_eq!(f.flush_dynamic(None), 0);
        assert!(f.remove(1, mac(1)).is_some());
        assert!(f.is_empty());
    }

    #[test]
    fn limit_holds_and_counts_only_dynamic() {
        let mut f = Fdb::new(300, Some(3));
        f.add_static(1, mac(100), 1).unwrap();
        for i in 0..3 {
            assert_eq!(f.learn(1, mac(i), 1, 0, None), Learn::New);
        }
        assert_eq!(f.learn(1, mac(50), 1, 0, None), Learn::Full);
        // Known stations are still refreshed at the limit.
        assert_eq!(f.learn(1, mac(0), 2, 0, None), Learn::Moved { from: 1 });
        assert_eq!(f.len(), 4);
        // Room again after ageing.
        f.age(300 * S);
        assert_eq!(f.learn(1, mac(50), 1, 300 * S, None), Learn::New);
    }

    #[test]
    fn static_over_dynamic_keeps_count() {
        let mut f = Fdb::new(300, Some(1));
        assert_eq!(f.learn(1, mac(1), 1, 0, None), Learn::New);
        f.add_static(1, mac(1), 2).unwrap();
        assert_eq!(f.dynamic_len(), 0);
        assert_eq!(f.learn(1, mac(2), 1, 0, None), Learn::New);
    }

    #[test]
    fn remove_mac_in_all_vlans() {
        let mut f = Fdb::new(300, None);
        f.learn(1, mac(1), 1, 0, None);
        f.learn(2, mac(1), 1, 0, None);
        f.add_static(3, mac(1), 1).unwrap();
        f.learn(1, mac(2), 1, 0, None);
        assert_eq!(f.remove_mac(mac(1)), 3);
        assert_eq!(f.len(), 1);
        assert_eq!(f.dynamic_len(), 1);
    }

    #[test]
    fn port_limit() {
        let mut f = Fdb::new(300, None);
        assert_eq!(f.learn(1, mac(1), 1, 0, Some(2)), Learn::New);
        assert_eq!(f.learn(1, mac(2), 1, 0, Some(2)), Learn::New);
        assert_eq!(f.learn(1, mac(3), 1, 0, Some(2)), Learn::PortLimit);
        // Known stations refresh; other ports are not limited.
        assert_eq!(f.learn(1, mac(1), 1, 1, Some(2)), Learn::Refreshed);
        assert_eq!(f.learn(1, mac(3), 2, 0, Some(2)), Learn::New);
        // A station moving onto a full port is refused, and stays where it was.
        assert_eq!(f.learn(1, mac(3), 1, 0, Some(2)), Learn::PortLimit);
        assert_eq!(f.lookup(1, mac(3), 0), Some(2));
        assert_eq!(f.port_len(1), 2);
        assert_eq!(f.flush_dynamic(Some(1)), 2);
        assert_eq!(f.port_len(1), 0);
        assert_eq!(f.learn(1, mac(3), 1, 0, Some(2)), Learn::Moved { from: 2 });
        assert_eq!((f.port_len(1), f.port_len(2)), (1, 0));
        assert_eq!(f.dynamic_len(), 1);
    }

    #[test]
    fn flush_by_port() {
        let mut f = Fdb::new(300, None);
        f.learn(1, mac(1), 1, 0, None);
        f.learn(1, mac(2), 2, 0, None);
        f.add_static(1, mac(3), 1).unwrap();
        assert_eq!(f.flush_dynamic(Some(1)), 1);
        assert_eq!(f.lookup(1, mac(2), 0), Some(2));
        assert_eq!(f.lookup(1, mac(3), 0), Some(1));
        assert_eq!(f.remove_port(1), 1);
        assert_eq!(f.len(), 1);
        assert_eq!(f.dynamic_len(), 1);
    }

    #[test]
    fn entries_sorted_and_fresh() {
        let mut f = Fdb::new(5, None);
        f.learn(2, mac(1), 1, 0, None);
        f.learn(1, mac(9), 1, 4 * S, None);
        f.learn(1, mac(3), 1, 4 * S, None);
        let e = f.entries(6 * S);
        let keys: Vec<_> = e.iter().map(|(v, m, _)| (*v, *m)).collect();
        assert_eq!(keys, vec![(1, mac(3)), (1, mac(9))]);
    }

    // ---- The table itself ----

    use crate::test_rng::Rng;

    /// The table's invariants: the length and counts are right, no key is
    /// twice, the load is at most 70 %, and every entry is reachable from
    /// its home slot without crossing an empty one. Returns the longest
    /// distance of an entry from its home slot.
    fn check_invariants(f: &Fdb) -> usize {
        let t = &f.table;
        let n = t.slots.len();
        assert!(n.is_power_of_two() && (MIN_SLOTS..=MAX_SLOTS).contains(&n));
        assert_eq!(t.shift, 64 - n.trailing_zeros());
        let occupied = t.slots.iter().filter(|s| s.occupied()).count();
        assert_eq!(occupied, t.len, "len");
        assert!(t.len * 10 <= n * 7, "load {} of {n}", t.len);
        let mut per_port = vec![0u32; f.counts.per_port.len().max(1)];
        let mut longest = 0;
        for (j, s) in t.slots.iter().enumerate() {
            if !s.occupied() {
                assert_eq!(*s, Slot::EMPTY, "an empty slot is all zero");
                continue;
            }
            // Reachable from its home slot, and the first of its key there
            // (so no key is twice).
            assert_eq!(t.find(s.key), Ok(j), "slot {j}");
            longest = longest.max(j.wrapping_sub(t.home(s.key)) & t.mask());
            if !s.is_static() {
                let p = s.port() as usize;
                assert!(p < per_port.len(), "port {p} counted");
                per_port[p] += 1;
            }
        }
        assert_eq!(f.counts.total, per_port.iter().sum::<u32>() as usize);
        for (p, &n) in per_port.iter().enumerate() {
            assert_eq!(f.port_len(p as PortId), n);
        }
        longest
    }

    /// `count` keys whose hash has the same top `bits` bits (all ones): in
    /// any table of up to 2^bits slots they share the last home slot, so
    /// their probe run wraps around the end of the array.
    fn colliding(f: &Fdb, count: usize, bits: u32, rng: &mut Rng) -> Vec<(u16, MacAddr)> {
        let mut v = Vec::new();
        while v.len() < count {
            let vlan = 1 + rng.below(3) as u16;
            let mac = MacAddr::from_u64(0x0200_0000_0000 | (rng.next() & 0xffff_ffff));
            if f.table.hash(key(vlan, mac)) >> (64 - bits) == (1 << bits) - 1
                && !v.contains(&(vlan, mac))
            {
                v.push((vlan, mac));
            }
        }
        v
    }

    #[test]
    fn colliding_run_wraps_and_shifts_back() {
        let mut rng = Rng(7);
        let mut f = Fdb::with_hash_seed(300, None, 0x5eed_2000);
        let keys = colliding(&f, 40, 6, &mut rng);
        for (n, &(v, m)) in keys.iter().enumerate() {
            assert_eq!(f.learn(v, m, (n % 5) as PortId, 0, None), Learn::New);
        }
        // 40 of 64 slots, one run from the last slot around the end.
        assert_eq!(f.table.slots.len(), 64);
        assert!(f.table.slots[63].occupied() && f.table.slots[0].occupied());
        check_invariants(&f);
        // Remove in a scrambled order; the rest stays reachable.
        let mut order: Vec<usize> = (0..keys.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for (done, &k) in order.iter().enumerate() {
            let (v, m) = keys[k];
            assert_eq!(f.remove(v, m).map(|e| e.port), Some((k % 5) as PortId));
            check_invariants(&f);
            for &j in &order[done + 1..] {
                let (v, m) = keys[j];
                assert_eq!(f.lookup(v, m, 0), Some((j % 5) as PortId));
            }
        }
        assert!(f.is_empty());
        assert!(f.table.slots.iter().all(|s| *s == Slot::EMPTY));
    }

    #[test]
    fn low_byte_macs_spread() {
        // Stations numbered in their last bytes, in a few VLANs: the
        // average probe length stays near linear probing's ideal (about
        // 1.5 at half full, 2.2 at 70 %) and no run is long.
        for (vlans, n) in [(1u16, 45_000u64), (4, 11_000), (1, 90_000)] {
            // Fixed hash keys, so the bounds hold on every run (with
            // OS-random keys, a rare table could show a longer run).
            let mut f = Fdb::with_hash_seed(300, None, 0x5eed_1000 + u64::from(vlans) + n);
            for v in 1..=vlans {
                for i in 0..n {
                    f.learn(v, MacAddr::from_u64(0x0200_0000_0000 | i), 1, 0, None);
                }
            }
            let t = &f.table;
            let mask = t.mask();
            let mut total = 0usize;
            let mut worst = 0usize;
            for (j, s) in t.slots.iter().enumerate().filter(|(_, s)| s.occupied()) {
                let probes = (j.wrapping_sub(t.home(s.key)) & mask) + 1;
                total += probes;
                worst = worst.max(probes);
            }
            let avg = total as f64 / t.len as f64;
            assert!(
                avg < 2.6,
                "average probe length {avg} ({vlans} VLANs x {n})"
            );
            assert!(worst < 80, "longest probe {worst} ({vlans} VLANs x {n})");
        }
    }

    #[test]
    fn ageing_across_the_stamp_wrap() {
        // Two seconds before the 32-bit tick counter wraps.
        let base = (u64::from(u32::MAX) - 200) * TICK_NS;
        let mut f = Fdb::new(10, None);
        assert_eq!(f.learn(1, mac(1), 3, base, None), Learn::New);
        assert_eq!(f.lookup(1, mac(1), base + 9 * S), Some(3));
        assert_eq!(f.age(base + 9 * S), 0);
        assert_eq!(f.lookup(1, mac(1), base + 10 * S), None);
        // Refreshed after the wrap, it lives another ageing time.
        assert_eq!(f.learn(1, mac(1), 3, base + 5 * S, None), Learn::Refreshed);
        assert_eq!(f.lookup(1, mac(1), base + 14 * S), Some(3));
        assert_eq!(f.age(base + 14 * S), 0);
        let e = f.entries(base + 14 * S)[0].2;
        assert_eq!(e.last_seen_ns, base + 5 * S);
        assert_eq!(f.age(base + 15 * S), 1);
        // A clock reading older than the stamp (another worker's) is age 0,
        // as is a learn with it.
        f.learn(1, mac(2), 3, base + 100 * S, None);
        assert_eq!(f.lookup(1, mac(2), base + 100 * S - 5_000_000), Some(3));
        assert_eq!(f.learn(1, mac(2), 3, base + 99 * S, None), Learn::Refreshed);
        assert_eq!(f.lookup(1, mac(2), base + 108 * S), Some(3));
        assert_eq!(f.lookup(1, mac(2), base + 109 * S), None);
    }

    #[test]
    fn ageing_time_is_clamped_not_wrapped() {
        let day = 86_400 * S;
        let mut f = Fdb::new(u32::MAX, None);
        f.learn(1, mac(1), 1, day, None);
        assert_eq!(f.lookup(1, mac(1), 100 * day), Some(1));
        assert_eq!(f.lookup(1, mac(1), 126 * day), None);
        assert_eq!(f.age(126 * day), 1);
        // The most the engine accepts is honoured exactly.
        let max = crate::bridge::MAX_AGEING_S;
        f.set_ageing(max);
        f.learn(1, mac(1), 1, day, None);
        assert_eq!(f.lookup(1, mac(1), day + u64::from(max) * S - 1), Some(1));
        assert_eq!(f.lookup(1, mac(1), day + u64::from(max) * S), None);
    }

    #[test]
    fn ports_beyond_the_slot_range_are_refused() {
        let mut f = Fdb::new(300, None);
        assert_eq!(f.learn(1, mac(1), FDB_MAX_PORT + 1, 0, None), Learn::Full);
        assert_eq!(
            f.add_static(1, mac(1), FDB_MAX_PORT + 1),
            Err(FdbError::Port(FDB_MAX_PORT + 1))
        );
        assert_eq!(f.learn(1, mac(1), FDB_MAX_PORT, 0, None), Learn::New);
        assert_eq!(f.learn(1, mac(1), u32::MAX, 0, None), Learn::Full);
        assert_eq!(f.lookup(1, mac(1), 0), Some(FDB_MAX_PORT));
        // Every VLAN value is its own key, even beyond 12 bits.
        assert_eq!(f.learn(0xffff, mac(1), 2, 0, None), Learn::New);
        assert_eq!(f.lookup(0x0fff, mac(1), 0), None);
        assert_eq!(f.lookup(0xffff, mac(1), 0), Some(2));
        f.add_static(0, MacAddr([0; 6]), 0).unwrap();
        assert_eq!(f.lookup(0, MacAddr([0; 6]), 0), Some(0));
        check_invariants(&f);
    }

    #[test]
    fn grows_then_shrinks_after_flush() {
        let mut f = Fdb::new(300, None);
        for i in 0..100_000u64 {
            let m = MacAddr::from_u64(0x0200_0000_0000 | i);
            assert_eq!(f.learn(1, m, (i % 7) as PortId, 0, None), Learn::New);
        }
        assert_eq!(f.table.slots.len(), 1 << 18);
        check_invariants(&f);
        f.add_static(2, mac(200), 1).unwrap();
        assert_eq!(f.flush_dynamic(Some(3)), 14_286);
        assert_eq!(f.table.slots.len(), 1 << 18, "most entries are left");
        assert_eq!(f.flush_dynamic(None), 100_000 - 14_286);
        assert_eq!(f.table.slots.len(), MIN_SLOTS);
        assert_eq!(f.lookup(2, mac(200), 0), Some(1));
        check_invariants(&f);
    }

    #[test]
    fn age_part_covers_the_table_in_parts() {
        let mut f = Fdb::new(10, None);
        for i in 0..5_000u64 {
            let m = MacAddr::from_u64(0x0200_0000_0000 | i);
            // Half seen at 0, half at 5 s.
            f.learn(1, m, 1, (i % 2) * 5 * S, None);
        }
        let slots = f.table.slots.len();
        let mut gone = 0;
        for _ in 0..9 {
            gone += f.age_part(10 * S, 10);
            assert!(gone < 2_500, "one part is not the whole table");
        }
        gone += f.age_part(10 * S, 10);
        assert_eq!(gone, 2_500, "ten parts are the whole table");
        assert_eq!(f.table.slots.len(), slots, "half full: no shrink");
        check_invariants(&f);
        for _ in 0..10 {
            gone += f.age_part(15 * S, 10);
        }
        assert_eq!(gone, 5_000);
        assert!(f.is_empty());
        assert_eq!(f.table.slots.len(), MIN_SLOTS, "shrunk at the round's end");
        // Degenerate part counts.
        f.learn(1, mac(1), 1, 0, None);
        assert_eq!(f.age_part(20 * S, 0), 1);
    }

    #[test]
    fn prefetch_any_key() {
        let mut f = Fdb::new(300, None);
        f.prefetch(1, mac(1));
        f.learn(1, mac(1), 1, 0, None);
        f.prefetch(1, mac(1));
        f.prefetch(0xffff, MacAddr::BROADCAST);
        assert_eq!(f.lookup(1, mac(1), 0), Some(1));
        // Only a table too big for the cache is prefetched.
        assert!(!f.wants_prefetch());
        for i in 0..20_000u64 {
            f.learn(2, MacAddr::from_u64(0x0200_0000_0000 | i), 1, 0, None);
        }
        assert!(f.wants_prefetch());
        for i in 0..30_000u64 {
            f.prefetch(2, MacAddr::from_u64(0x0200_0000_0000 | i));
        }
        assert_eq!(
            f.lookup(2, MacAddr::from_u64(0x0200_0000_0000 | 7), 0),
            Some(1)
        );
    }

    // ---- Model-based: random operations against a plain HashMap ----

    #[derive(Clone, Copy, Debug)]
    struct ModelEntry {
        port: PortId,
        peer: u16,
        is_static: bool,
        last_ns: u64,
    }

    /// What the FDB should do, written the obvious way: a hash map, u64
    /// times without wrap, ageing to the tick. Its counts change in `put`
    /// and `take` only.
    struct Model {
        // hashbrown's default hasher: a debug build's SipHash would make the
        // model slower than the table under test.
        map: hashbrown::HashMap<(u16, MacAddr), ModelEntry>,
        dynamic: usize,
        per_port: std::collections::HashMap<PortId, u32>,
        ageing_ticks: u64,
        max_dynamic: usize,
        /// How often learning answered each way (New, Refreshed, Moved,
        /// Static, Full, PortLimit): what the run exercised.
        outcomes: [usize; 6],
    }

    impl Model {
        fn new(ageing_s: u32, fdb_max: Option<u32>) -> Model {
            Model {
                map: Default::default(),
                dynamic: 0,
                per_port: Default::default(),
                ageing_ticks: u64::from(ageing_s) * TICKS_PER_S,
                max_dynamic: fdb_max.map_or(FDB_HARD_MAX, |m| m as usize),
                outcomes: [0; 6],
            }
        }
        fn expired(&self, e: &ModelEntry, now: u64) -> bool {
            !e.is_static && (now / TICK_NS).saturating_sub(e.last_ns / TICK_NS) >= self.ageing_ticks
        }
        fn port_len(&self, p: PortId) -> u32 {
            self.per_port.get(&p).copied().unwrap_or(0)
        }
        fn take(&mut self, k: &(u16, MacAddr)) -> Option<ModelEntry> {
            let e = self.map.remove(k)?;
            if !e.is_static {
                self.dynamic -= 1;
                *self.per_port.entry(e.port).or_default() -= 1;
            }
            Some(e)
        }
        fn put(&mut self, k: (u16, MacAddr), e: ModelEntry) {
            self.take(&k);
            if !e.is_static {
                self.dynamic += 1;
                *self.per_port.entry(e.port).or_default() += 1;
            }
            self.map.insert(k, e);
        }
        fn learn(
            &mut self,
            k: (u16, MacAddr),
            port: PortId,
            peer: u16,
            now: u64,
            lim: Option<u32>,
        ) -> Learn {
            let at_limit = lim.is_some_and(|l| self.port_len(port) >= l);
            let entry = ModelEntry {
                port,
                peer,
                is_static: false,
                last_ns: now,
            };
            let r = match self.map.get(&k).copied() {
                Some(e) if e.is_static => Learn::Static,
                Some(e) if e.port == port => {
                    self.put(k, entry);
                    Learn::Refreshed
                }
                Some(_) if at_limit => Learn::PortLimit,
                Some(e) => {
                    self.put(k, entry);
                    Learn::Moved { from: e.port }
                }
                None if self.dynamic >= self.max_dynamic || self.map.len() >= FDB_HARD_MAX => {
                    Learn::Full
                }
                None if at_limit => Learn::PortLimit,
                None => {
                    self.put(k, entry);
                    Learn::New
                }
            };
            let i = match r {
                Learn::New => 0,
                Learn::Refreshed => 1,
                Learn::Moved { .. } => 2,
                Learn::Static => 3,
                Learn::Full => 4,
                Learn::PortLimit => 5,
            };
            self.outcomes[i] += 1;
            r
        }
        fn add_static(&mut self, k: (u16, MacAddr), port: PortId) -> Result<(), FdbError> {
            if !self.map.contains_key(&k) && self.map.len() >= FDB_HARD_MAX {
                return Err(FdbError::Full);
            }
            self.put(
                k,
                ModelEntry {
                    port,
                    peer: 0,
                    is_static: true,
                    last_ns: 0,
                },
            );
            Ok(())
        }
        fn remove_where(
            &mut self,
            mut gone: impl FnMut(&(u16, MacAddr), &ModelEntry) -> bool,
        ) -> usize {
            let ks: Vec<_> = self
                .map
                .iter()
                .filter(|(k, e)| gone(k, e))
                .map(|(k, _)| *k)
                .collect();
            for k in &ks {
                self.take(k);
            }
            ks.len()
        }
        fn age(&mut self, now: u64) -> usize {
            let ageing = self.ageing_ticks;
            self.remove_where(|_, e| {
                !e.is_static && (now / TICK_NS).saturating_sub(e.last_ns / TICK_NS) >= ageing
            })
        }
    }

    /// Compares what can be asked of both: sizes, counts per port, and a
    /// lookup of every key in `keys`.
    fn agree(f: &Fdb, m: &Model, keys: &[(u16, MacAddr)], now: u64, ports: PortId) {
        assert_eq!(f.len(), m.map.len(), "len");
        assert_eq!(f.dynamic_len(), m.dynamic, "dynamic_len");
        for p in 0..ports {
            assert_eq!(f.port_len(p), m.port_len(p), "port_len({p})");
        }
        for &(v, mac) in keys {
            let want = m
                .map
                .get(&(v, mac))
                .filter(|e| !m.expired(e, now))
                .map(|e| (e.port, e.peer));
            assert_eq!(f.lookup_peer(v, mac, now), want, "lookup {v} {mac}");
            let got = f.get(v, mac).map(|e| (e.port, e.peer, e.is_static));
            let want = m.map.get(&(v, mac)).map(|e| (e.port, e.peer, e.is_static));
            assert_eq!(got, want, "get {v} {mac}");
        }
    }

    /// Entries listed by both, last-seen times included; and, for small
    /// tables, the sorted listing is the unsorted one sorted.
    fn agree_entries(f: &Fdb, m: &Model, now: u64) {
        let got = f.entries_unsorted(now);
        let live = m.map.values().filter(|e| !m.expired(e, now)).count();
        assert_eq!(got.len(), live, "entries");
        for (v, mac, g) in &got {
            let e = m
                .map
                .get(&(*v, *mac))
                .expect("a listed entry is in the model");
            assert!(!m.expired(e, now), "listed {mac} has aged out");
            assert_eq!((g.port, g.peer, g.is_static), (e.port, e.peer, e.is_static));
            if e.is_static {
                assert_eq!(g.last_seen_ns, 0);
            } else if e.last_ns <= now {
                assert_eq!(
                    g.last_seen_ns,
                    e.last_ns / TICK_NS * TICK_NS,
                    "last seen of {mac}"
                );
            }
        }
        if got.len() <= 10_000 {
            let sorted = f.entries(now);
            assert!(sorted
                .windows(2)
                .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
            let mut unsorted = got;
            unsorted.sort_by_key(|(v, mac, _)| (*v, *mac));
            assert_eq!(unsorted, sorted);
        }
    }

    /// One random operation on both, checking they answer alike. Without
    /// `bulk`, no operation that removes many entries or changes the ageing
    /// time (learning instead).
    fn step(
        f: &mut Fdb,
        m: &mut Model,
        rng: &mut Rng,
        keys: &[(u16, MacAddr)],
        now: &mut u64,
        ports: PortId,
        bulk: bool,
    ) {
        // Time mostly moves on a little, sometimes by an ageing time, and a
        // learn may come with a slightly older reading (another worker's).
        match rng.below(100) {
            0..=59 => {}
            60..=94 => *now += rng.below(2 * S),
            _ => *now += rng.below(40 * S),
        }
        let at = if rng.chance(10) {
            now.saturating_sub(rng.below(S / 20))
        } else {
            *now
        };
        let k = keys[rng.below(keys.len() as u64) as usize];
        let port = rng.below(u64::from(ports)) as PortId;
        let mut op = rng.below(1000);
        if !bulk && (830..985).contains(&op) {
            op = 0;
        }
        match op {
            0..=549 => {
                let peer = rng.below(3) as u16;
                let lim = if rng.chance(20) {
                    Some(rng.below(8) as u32)
                } else {
                    None
                };
                let want = m.learn(k, port, peer, at, lim);
                assert_eq!(
                    f.learn_from(k.0, k.1, port, peer, at, lim),
                    want,
                    "learn {k:?}"
                );
            }
            550..=649 => {
                let e = m.map.get(&k).filter(|e| !m.expired(e, at)).map(|e| e.port);
                assert_eq!(f.lookup(k.0, k.1, at), e);
            }
            650..=729 => {
                assert_eq!(
                    f.add_static(k.0, k.1, port),
                    m.add_static(k, port),
                    "add_static"
                );
            }
            730..=829 => {
                let want = m.take(&k).map(|e| (e.port, e.peer, e.is_static));
                let got = f.remove(k.0, k.1).map(|e| (e.port, e.peer, e.is_static));
                assert_eq!(got, want, "remove {k:?}");
            }
            830..=849 => {
                let want = m.remove_where(|(_, mac), _| *mac == k.1);
                assert_eq!(f.remove_mac(k.1), want, "remove_mac");
            }
            850..=869 => {
                let p = if rng.chance(50) { Some(port) } else { None };
                let want = m.remove_where(|_, e| !e.is_static && p.is_none_or(|p| p == e.port));
                assert_eq!(f.flush_dynamic(p), want, "flush_dynamic({p:?})");
            }
            870..=879 => {
                let want = m.remove_where(|_, e| e.port == port);
                assert_eq!(f.remove_port(port), want, "remove_port");
            }
            880..=919 => {
                assert_eq!(f.age(*now), m.age(*now), "age");
            }
            920..=969 => {
                // A part of the table: some expired entries go, nothing
                // else; the model follows what went.
                let parts = 1 + rng.below(12) as usize;
                let gone = f.age_part(*now, parts);
                let expired: Vec<_> = m
                    .map
                    .iter()
                    .filter(|(_, e)| m.expired(e, *now))
                    .map(|(k, _)| *k)
                    .collect();
                let went: Vec<_> = expired
                    .into_iter()
                    .filter(|k| f.get(k.0, k.1).is_none())
                    .collect();
                assert_eq!(went.len(), gone, "age_part removed only expired entries");
                for k in went {
                    m.take(&k);
                }
                // Twice `parts` calls in a row look at everything.
                if rng.chance(20) {
                    for _ in 0..2 * parts {
                        f.age_part(*now, parts);
                    }
                    m.age(*now);
                }
            }
            970..=984 => {
                let a = [0, 1, 5, 30, 300][rng.below(5) as usize];
                f.set_ageing(a);
                m.ageing_ticks = u64::from(a) * TICKS_PER_S;
            }
            _ => {
                let max = [None, Some(0), Some(5), Some(40), Some(100_000)][rng.below(5) as usize];
                f.set_max(max);
                m.max_dynamic = max.map_or(FDB_HARD_MAX, |x| x as usize);
            }
        }
    }

    #[test]
    fn model_random_operations() {
        for seed in 1..=6u64 {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
            // A fixed hash key: the run below must reach a long probe run on
            // every execution, not only for lucky OS-random keys.
            let mut f = Fdb::with_hash_seed(30, None, 0x5eed_0000 + seed);
            let mut m = Model::new(30, None);
            // Keys that pile into one probe run at the end of the array (in
            // every size the table takes here), stations numbered in their
            // last byte, and random ones.
            let mut keys = colliding(&f, 96, 12, &mut rng);
            for i in 0..96u64 {
                keys.push((
                    (i % 2) as u16 + 1,
                    MacAddr::from_u64(0x0200_0000_0000 | (i / 2)),
                ));
            }
            for _ in 0..96 {
                let v = rng.below(4096) as u16;
                keys.push((v, MacAddr::from_u64(rng.next() & 0xfeff_ffff_ffff)));
            }
            // Start 100 s before the 32-bit tick counter wraps.
            let mut now = (u64::from(u32::MAX) - 10_000) * TICK_NS;
            let mut longest = 0;
            for i in 0..12_000 {
                step(&mut f, &mut m, &mut rng, &keys, &mut now, 6, true);
                longest = longest.max(check_invariants(&f));
                // Every key now and then, a sample of them in between (a
                // debug build's model lookups are slow).
                if i % 50 == 0 {
                    agree(&f, &m, &keys, now, 6);
                } else {
                    let at = rng.below(keys.len() as u64 - 16) as usize;
                    agree(&f, &m, &keys[at..at + 16], now, 6);
                }
                if i % 500 == 0 {
                    agree_entries(&f, &m, now);
                }
            }
            assert!(now > (1 << 32) * TICK_NS, "the stamps wrapped");
            assert!(longest >= 40, "a long probe run formed ({longest})");
            assert!(m.outcomes.iter().all(|&n| n > 0), "{:?}", m.outcomes);
        }
    }

    #[test]
    fn model_at_the_hard_cap() {
        let mut rng = Rng(99);
        // The longest ageing the engine accepts: entries stay live.
        let ageing = crate::bridge::MAX_AGEING_S;
        let mut f = Fdb::with_hash_seed(ageing, None, 0x5eed_3000);
        let mut m = Model::new(ageing, None);
        let mut now = S;
        // Fill to the cap: dynamic entries and every 64th one static.
        for i in 0..FDB_HARD_MAX as u64 {
            let k = (1u16, MacAddr::from_u64(0x0200_0000_0000 | i));
            let port = (i % 6) as PortId;
            if i % 64 == 0 {
                assert_eq!(f.add_static(k.0, k.1, port), Ok(()));
                m.add_static(k, port).unwrap();
            } else {
                assert_eq!(f.learn(k.0, k.1, port, now, None), Learn::New);
                m.learn(k, port, 0, now, None);
            }
        }
        assert_eq!(f.len(), FDB_HARD_MAX);
        assert_eq!(f.table.slots.len(), MAX_SLOTS);
        check_invariants(&f);
        // Nothing new fits; the known are still refreshed, moved, replaced.
        let new = (2u16, mac(7));
        assert_eq!(f.learn(new.0, new.1, 1, now, None), Learn::Full);
        assert_eq!(f.add_static(new.0, new.1, 1), Err(FdbError::Full));
        let old = (1u16, MacAddr::from_u64(0x0200_0000_0001));
        assert_eq!(
            f.learn(old.0, old.1, 5, now, None),
            Learn::Moved { from: 1 }
        );
        m.learn(old, 5, 0, now, None);
        assert_eq!(f.add_static(old.0, old.1, 2), Ok(()));
        m.add_static(old, 2).unwrap();
        // Random operations at and around the cap over known keys, a few
        // new ones, and keys that collide.
        let mut keys: Vec<_> = (0..400)
            .map(|_| {
                (
                    1u16,
                    MacAddr::from_u64(0x0200_0000_0000 | rng.below(FDB_HARD_MAX as u64)),
                )
            })
            .collect();
        keys.extend(colliding(&f, 24, 12, &mut rng));
        keys.extend((0..24).map(|i| (2u16, mac(i))));
        for i in 0..3_000 {
            // No bulk removals: the table stays at or near the cap.
            step(&mut f, &mut m, &mut rng, &keys, &mut now, 6, false);
            assert!(f.len() <= FDB_HARD_MAX);
            assert_eq!(f.table.slots.len().max(MAX_SLOTS), MAX_SLOTS);
            if i % 100 == 0 {
                agree(&f, &m, &keys, now, 6);
            }
        }
        agree(&f, &m, &keys, now, 6);
        agree_entries(&f, &m, now);
        check_invariants(&f);
    }
}
