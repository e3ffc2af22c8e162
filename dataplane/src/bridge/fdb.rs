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
}

#[inline]
fn key(vlan: u16, mac: MacAddr) -> u64 {
    ((vlan as u64) << 48) | mac.to_u64()
}

fn unkey(k: u64) -> (u16, MacAddr) {
    ((k >> 48) as u16, MacAddr::from_u64(k & 0xffff_ffff_ffff))
}

pub struct Fdb {
    map: HashMap<u64, FdbEntry>,
    dynamic: usize,
    /// Limit on dynamic entries (`--fdb-max`), at most [`FDB_HARD_MAX`].
    max_dynamic: usize,
    ageing_ns: u64,
}

impl Fdb {
    pub fn new(ageing_s: u32, fdb_max: Option<u32>) -> Fdb {
        let mut f = Fdb {
            map: HashMap::new(),
            dynamic: 0,
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
        self.dynamic
    }

    fn expired(&self, e: &FdbEntry, now_ns: u64) -> bool {
        !e.is_static && now_ns.saturating_sub(e.last_seen_ns) >= self.ageing_ns
    }

    /// Learns `mac` on `port` in `vlan` at `now_ns`.
    #[inline]
    pub fn learn(&mut self, vlan: u16, mac: MacAddr, port: PortId, now_ns: u64) -> Learn {
        let k = key(vlan, mac);
        if let Some(e) = self.map.get_mut(&k) {
            if e.is_static {
                return Learn::Static;
            }
            e.last_seen_ns = now_ns;
            if e.port == port {
                return Learn::Refreshed;
            }
            let from = e.port;
            e.port = port;
            return Learn::Moved { from };
        }
        if self.dynamic >= self.max_dynamic || self.map.len() >= FDB_HARD_MAX {
            return Learn::Full;
        }
        self.map.insert(
            k,
            FdbEntry {
                port,
                is_static: false,
                last_seen_ns: now_ns,
            },
        );
        self.dynamic += 1;
        Learn::New
    }

    /// The port `mac` in `vlan` was learned on, unless the entry has aged out
    /// (checked here too, so the sweep interval does not matter).
    #[inline]
    pub fn lookup(&self, vlan: u16, mac: MacAddr, now_ns: u64) -> Option<PortId> {
        let e = self.map.get(&key(vlan, mac))?;
        if self.expired(e, now_ns) {
            return None;
        }
        Some(e.port)
    }

    pub fn get(&self, vlan: u16, mac: MacAddr) -> Option<&FdbEntry> {
        self.map.get(&key(vlan, mac))
    }

    /// Adds or replaces a static entry. Fails only when the table is full.
    pub fn add_static(&mut self, vlan: u16, mac: MacAddr, port: PortId) -> Result<(), FdbError> {
        let k = key(vlan, mac);
        match self.map.get_mut(&k) {
            Some(e) => {
                if !e.is_static {
                    self.dynamic -= 1;
                }
                *e = FdbEntry {
                    port,
                    is_static: true,
                    last_seen_ns: 0,
                };
            }
            None => {
                if self.map.len() >= FDB_HARD_MAX {
                    return Err(FdbError::Full);
                }
                self.map.insert(
                    k,
                    FdbEntry {
                        port,
                        is_static: true,
                        last_seen_ns: 0,
                    },
                );
            }
        }
        Ok(())
    }

    /// Removes an entry (static or dynamic).
    pub fn remove(&mut self, vlan: u16, mac: MacAddr) -> Option<FdbEntry> {
        let e = self.map.remove(&key(vlan, mac))?;
        if !e.is_static {
            self.dynamic -= 1;
        }
        Some(e)
    }

    /// Removes `mac` in every VLAN. Returns how many entries went.
    pub fn remove_mac(&mut self, mac: MacAddr) -> usize {
        let m = mac.to_u64();
        let mut removed_dynamic = 0;
        let before = self.map.len();
        self.map.retain(|k, e| {
            if k & 0xffff_ffff_ffff == m {
                if !e.is_static {
                    removed_dynamic += 1;
                }
                false
            } else {
                true
            }
        });
        self.dynamic -= removed_dynamic;
        before - self.map.len()
    }

    /// Removes dynamic entries, all or those of one port. Returns how many.
    pub fn flush_dynamic(&mut self, port: Option<PortId>) -> usize {
        let before = self.map.len();
        self.map
            .retain(|_, e| e.is_static || port.is_some_and(|p| p != e.port));
        let n = before - self.map.len();
        self.dynamic -= n;
        n
    }

    /// Removes every entry of `port`, static ones too (port deleted).
    pub fn remove_port(&mut self, port: PortId) -> usize {
        let mut removed_dynamic = 0;
        let before = self.map.len();
        self.map.retain(|_, e| {
            if e.port == port {
                if !e.is_static {
                    removed_dynamic += 1;
                }
                false
            } else {
                true
            }
        });
        self.dynamic -= removed_dynamic;
        before - self.map.len()
    }

    /// Drops dynamic entries not seen for the ageing time. Returns how many.
    pub fn age(&mut self, now_ns: u64) -> usize {
        let ageing = self.ageing_ns;
        let before = self.map.len();
        self.map
            .retain(|_, e| e.is_static || now_ns.saturating_sub(e.last_seen_ns) < ageing);
        let n = before - self.map.len();
        self.dynamic -= n;
        n
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
        assert_eq!(f.learn(1, mac(1), 7, 0), Learn::New);
        assert_eq!(f.lookup(1, mac(1), S), Some(7));
        assert_eq!(f.lookup(2, mac(1), S), None, "per-VLAN");
        assert_eq!(f.learn(1, mac(1), 7, 10 * S), Learn::Refreshed);
        assert_eq!(f.learn(1, mac(1), 8, 20 * S), Learn::Moved { from: 7 });
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
        assert_eq!(f.learn(1, mac(1), 4, 0), Learn::Static);
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
            assert_eq!(f.learn(1, mac(i), 1, 0), Learn::New);
        }
        assert_eq!(f.learn(1, mac(50), 1, 0), Learn::Full);
        // Known stations are still refreshed at the limit.
        assert_eq!(f.learn(1, mac(0), 2, 0), Learn::Moved { from: 1 });
        assert_eq!(f.len(), 4);
        // Room again after ageing.
        f.age(300 * S);
        assert_eq!(f.learn(1, mac(50), 1, 300 * S), Learn::New);
    }

    #[test]
    fn static_over_dynamic_keeps_count() {
        let mut f = Fdb::new(300, Some(1));
        assert_eq!(f.learn(1, mac(1), 1, 0), Learn::New);
        f.add_static(1, mac(1), 2).unwrap();
        assert_eq!(f.dynamic_len(), 0);
        assert_eq!(f.learn(1, mac(2), 1, 0), Learn::New);
    }

    #[test]
    fn remove_mac_in_all_vlans() {
        let mut f = Fdb::new(300, None);
        f.learn(1, mac(1), 1, 0);
        f.learn(2, mac(1), 1, 0);
        f.add_static(3, mac(1), 1).unwrap();
        f.learn(1, mac(2), 1, 0);
        assert_eq!(f.remove_mac(mac(1)), 3);
        assert_eq!(f.len(), 1);
        assert_eq!(f.dynamic_len(), 1);
    }

    #[test]
    fn flush_by_port() {
        let mut f = Fdb::new(300, None);
        f.learn(1, mac(1), 1, 0);
        f.learn(1, mac(2), 2, 0);
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
        f.learn(2, mac(1), 1, 0);
        f.learn(1, mac(9), 1, 4 * S);
        f.learn(1, mac(3), 1, 4 * S);
        let e = f.entries(6 * S);
        let keys: Vec<_> = e.iter().map(|(v, m, _)| (*v, *m)).collect();
        assert_eq!(keys, vec![(1, mac(3)), (1, mac(9))]);
    }
}
