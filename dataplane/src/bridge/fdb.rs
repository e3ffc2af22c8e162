//! The forwarding database: (VLAN, MAC) -> port, with ageing, static entries,
//! station moves and a hard limit on learned entries.
//!
//! IEEE 802.1Q-2018 clause 8.8 (filtering database): dynamic entries are
//! created by learning and removed by ageing (default ageing time 300 s,
//! clause 8.8.3); static entries are added by management and never aged.

use crate::MacAddr;
use hashbrown::HashMap;

/// Index of a port in the engine's port table.
pub type PortId = u32;

/// The most entries any FDB holds, whatever `--fdb-max` says: bounds memory
/// even for a bridge without a configured limit (about 60 MB at this size).
pub const FDB_HARD_MAX: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    pub port: PortId,
    /// Behind a tunnel port: which of its remotes the station is at (an
    /// index into the port's remote table; 0 for none).
    pub peer: u16,
    pub is_static: bool,
    /// When the address was last seen (ns on the engine's monotonic clock).
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
    /// Not learned: the table is at its limit.
    Full,
    /// Not learned: the port is at its `--mac-limit`.
    PortLimit,
}

#[inline]
fn key(vlan: u16, mac: MacAddr) -> u64 {
    ((vlan as u64) << 48) | mac.to_u64()
}

fn unkey(k: u64) -> (u16, MacAddr) {
    ((k >> 48) as u16, MacAddr::from_u64(k & 0xffff_ffff_ffff))
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

pub struct Fdb {
    map: HashMap<u64, FdbEntry>,
    counts: Counts,
    /// Limit on dynamic entries (`--fdb-max`), at most [`FDB_HARD_MAX`].
    max_dynamic: usize,
    ageing_ns: u64,
}

impl Fdb {
    pub fn new(ageing_s: u32, fdb_max: Option<u32>) -> Fdb {
        let mut f = Fdb {
            map: HashMap::new(),
            counts: Counts::default(),
            max_dynamic: FDB_HARD_MAX,
            ageing_ns: 0,
        };
        f.set_ageing(ageing_s);
        f.set_max(fdb_max);
        f
    }

    pub fn set_ageing(&mut self, ageing_s: u32) {
        self.ageing_ns = u64::from(ageing_s) * 1_000_000_000;
    }

    pub fn set_max(&mut self, fdb_max: Option<u32>) {
        self.max_dynamic = fdb_max.map_or(FDB_HARD_MAX, |m| (m as usize).min(FDB_HARD_MAX));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn dynamic_len(&self) -> usize {
        self.counts.total
    }

    fn expired(&self, e: &FdbEntry, now_ns: u64) -> bool {
        !e.is_static && now_ns.saturating_sub(e.last_seen_ns) >= self.ageing_ns
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
        let at_port_limit = |c: &Counts| port_limit.is_some_and(|l| c.port(port) >= l);
        if let Some(e) = self.map.get_mut(&k) {
            if e.is_static {
                return Learn::Static;
            }
            if e.port == port {
                e.last_seen_ns = now_ns;
                e.peer = peer;
                return Learn::Refreshed;
            }
            if at_port_limit(&self.counts) {
                return Learn::PortLimit;
            }
            e.last_seen_ns = now_ns;
            let from = e.port;
            e.port = port;
            e.peer = peer;
            self.counts.dec(from);
            self.counts.inc(port);
            return Learn::Moved { from };
        }
        if self.counts.total >= self.max_dynamic || self.map.len() >= FDB_HARD_MAX {
            return Learn::Full;
        }
        if at_port_limit(&self.counts) {
            return Learn::PortLimit;
        }
        self.map.insert(
            k,
            FdbEntry {
                port,
                peer,
                is_static: false,
                last_seen_ns: now_ns,
            },
        );
        self.counts.inc(port);
        Learn::New
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
        let e = self.map.get(&key(vlan, mac))?;
        if self.expired(e, now_ns) {
            return None;
        }
        Some((e.port, e.peer))
    }

    pub fn get(&self, vlan: u16, mac: MacAddr) -> Option<&FdbEntry> {
        self.map.get(&key(vlan, mac))
    }

    /// Dynamic entries learned on `port`.
    pub fn port_len(&self, port: PortId) -> u32 {
        self.counts.port(port)
    }

    /// Adds or replaces a static entry. Fails only when the table is full.
    pub fn add_static(&mut self, vlan: u16, mac: MacAddr, port: PortId) -> Result<(), FdbError> {
        let k = key(vlan, mac);
        let entry = FdbEntry {
            port,
            peer: 0,
            is_static: true,
            last_seen_ns: 0,
        };
        match self.map.get_mut(&k) {
            Some(e) => {
                if !e.is_static {
                    self.counts.dec(e.port);
                }
                *e = entry;
            }
            None => {
                if self.map.len() >= FDB_HARD_MAX {
                    return Err(FdbError::Full);
                }
                self.map.insert(k, entry);
            }
        }
        Ok(())
    }

    /// Removes an entry (static or dynamic).
    pub fn remove(&mut self, vlan: u16, mac: MacAddr) -> Option<FdbEntry> {
        let e = self.map.remove(&key(vlan, mac))?;
        if !e.is_static {
            self.counts.dec(e.port);
        }
        Some(e)
    }

    /// Removes the entries `gone` selects, keeping the counts right. Returns
    /// how many went.
    fn remove_where(&mut self, mut gone: impl FnMut(u64, &FdbEntry) -> bool) -> usize {
        let counts = &mut self.counts;
        let before = self.map.len();
        self.map.retain(|k, e| {
            if gone(*k, e) {
                if !e.is_static {
                    counts.dec(e.port);
                }
                false
            } else {
                true
            }
        });
        before - self.map.len()
    }

    /// Removes `mac` in every VLAN. Returns how many entries went.
    pub fn remove_mac(&mut self, mac: MacAddr) -> usize {
        let m = mac.to_u64();
        self.remove_where(|k, _| k & 0xffff_ffff_ffff == m)
    }

    /// Removes dynamic entries, all or those of one port. Returns how many.
    pub fn flush_dynamic(&mut self, port: Option<PortId>) -> usize {
        self.remove_where(|_, e| !e.is_static && port.is_none_or(|p| p == e.port))
    }

    /// Removes every entry of `port`, static ones too (port deleted).
    pub fn remove_port(&mut self, port: PortId) -> usize {
        self.remove_where(|_, e| e.port == port)
    }

    /// Drops dynamic entries not seen for the ageing time. Returns how many.
    pub fn age(&mut self, now_ns: u64) -> usize {
        let ageing = self.ageing_ns;
        self.remove_where(|_, e| !e.is_static && now_ns.saturating_sub(e.last_seen_ns) >= ageing)
    }

    /// All live entries as (vlan, mac, entry), in table order (one pass, no
    /// sorting: what a caller holding a lock should take).
    pub fn entries_unsorted(&self, now_ns: u64) -> Vec<(u16, MacAddr, FdbEntry)> {
        self.map
            .iter()
            .filter(|(_, e)| !self.expired(e, now_ns))
            .map(|(k, e)| {
                let (vlan, mac) = unkey(*k);
                (vlan, mac, *e)
            })
            .collect()
    }

    /// All live entries as (vlan, mac, entry), sorted by VLAN then MAC.
    pub fn entries(&self, now_ns: u64) -> Vec<(u16, MacAddr, FdbEntry)> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .filter(|(_, e)| !self.expired(e, now_ns))
            .map(|(k, e)| {
                let (vlan, mac) = unkey(*k);
                (vlan, mac, *e)
            })
            .collect();
        v.sort_by_key(|(vlan, mac, _)| (*vlan, *mac));
        v
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdbError {
    #[error("forwarding database is full ({FDB_HARD_MAX} entries)")]
    Full,
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
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
}
