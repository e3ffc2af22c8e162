//! The neighbour (ARP) table of the router's Ethernet interfaces (RFC 826;
//! RFC 1122 §2.3.2.2 for queueing while a next hop resolves; the states
//! are a small version of Linux's `neighbour.c` and smoltcp's
//! `iface/neighbor.rs`).
//!
//! - A miss creates an `incomplete` entry, sends a broadcast request at
//!   once and every [`RETRY_NS`] after, at most [`MAX_PROBES`] times; after
//!   that the entry is `failed` for [`FAILED_HOLD_NS`] (packets toward it
//!   get ICMP host unreachable at once instead of another round of
//!   requests), then forgotten.
//! - While incomplete, up to [`QUEUE_PER_NEIGH`] packets wait (the oldest
//!   is dropped for a newer one, as Linux does), and at most
//!   [`QUEUE_MAX_BYTES`] over the whole table; they leave when the answer
//!   comes.
//! - An answer (or a request from the neighbour for our address, or a
//!   gratuitous ARP updating an existing entry) makes it `reachable` for
//!   [`REACHABLE_NS`]; after that it is `stale`: still used, and the first
//!   use after [`RETRY_NS`] sends a request to confirm it. [`MAX_PROBES`]
//!   unanswered confirmations remove it.
//! - At most `max` entries; a new one evicts a failed or the least recently
//!   confirmed stale entry, or is refused.
//!
//! Time is an argument (nanoseconds of the caller's clock).

use crate::packet::VnetHdr;
use crate::MacAddr;
use hashbrown::HashMap;

pub const RETRY_NS: u64 = 1_000_000_000;
pub const MAX_PROBES: u8 = 3;
pub const REACHABLE_NS: u64 = 30_000_000_000;
pub const FAILED_HOLD_NS: u64 = 3_000_000_000;
pub const QUEUE_PER_NEIGH: usize = 3;
pub const QUEUE_MAX_BYTES: usize = 1 << 20;
pub const DEFAULT_MAX: usize = 4096;

/// An entry's state, as `arp-show` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighState {
    Incomplete,
    Reachable,
    Stale,
    Failed,
}

impl NeighState {
    pub fn name(self) -> &'static str {
        match self {
            NeighState::Incomplete => "incomplete",
            NeighState::Reachable => "reachable",
            NeighState::Stale => "stale",
            NeighState::Failed => "failed",
        }
    }
}

/// A packet waiting for its next hop: the whole Ethernet frame (its link
/// header is rewritten when it leaves) and its offload header.
#[derive(Debug, Clone)]
pub struct Pending {
    pub frame: Vec<u8>,
    pub vnet: VnetHdr,
    /// The interface it arrived on (where a drop is counted).
    pub from: u16,
}

#[derive(Debug)]
struct Entry {
    mac: MacAddr,
    state: NeighState,
    /// Last confirmation (or creation, while incomplete).
    confirmed: u64,
    /// Requests sent since the last confirmation, and when the last went.
    probes: u8,
    last_probe: u64,
    queue: Vec<Pending>,
}

/// What [`Neigh::lookup`] says about a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Send to this address. `probe`: also send a request to confirm it
    /// (a stale entry).
    Known { mac: MacAddr, probe: bool },
    /// Being resolved: queue the packet; `probe`: send the first request.
    Resolving { probe: bool },
    /// Did not answer: ICMP host unreachable.
    Failed,
    /// No room for another entry.
    Full,
}

/// Work for the caller from [`Neigh::tick`].
#[derive(Debug)]
pub enum Event {
    /// Send an ARP request for `ip` on `rif`.
    Probe { rif: u16, ip: u32 },
    /// `ip` on `rif` did not answer; these packets were waiting for it.
    Unreachable {
        rif: u16,
        ip: u32,
        queued: Vec<Pending>,
    },
}

/// One row of `arp-show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighInfo {
    pub rif: u16,
    pub ip: u32,
    pub mac: Option<MacAddr>,
    pub state: NeighState,
    pub age_s: u64,
}

/// The table, keyed by (router interface, IPv4 address).
#[derive(Debug)]
pub struct Neigh {
    map: HashMap<(u16, u32), Entry>,
    max: usize,
    queued_bytes: usize,
}

impl Default for Neigh {
    fn default() -> Self {
        Neigh::new(DEFAULT_MAX)
    }
}

impl Neigh {
    pub fn new(max: usize) -> Neigh {
        Neigh {
            map: HashMap::new(),
            max: max.max(1),
            queued_bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes of packets waiting for resolution over the whole table.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// The next hop's address, or what to do instead. Creates an
    /// incomplete entry on a miss.
    pub fn lookup(&mut self, rif: u16, ip: u32, now: u64) -> Lookup {
        if let Some(e) = self.map.get_mut(&(rif, ip)) {
            refresh_state(e, now);
            return match e.state {
                NeighState::Reachable => Lookup::Known {
                    mac: e.mac,
                    probe: false,
                },
                NeighState::Stale => {
                    let probe = now.saturating_sub(e.last_probe) >= RETRY_NS;
                    if probe {
                        e.last_probe = now;
                        e.probes = e.probes.saturating_add(1);
                    }
                    Lookup::Known { mac: e.mac, probe }
                }
                NeighState::Incomplete => Lookup::Resolving { probe: false },
                NeighState::Failed => Lookup::Failed,
            };
        }
        if self.map.len() >= self.max && !self.evict_one(now) {
            return Lookup::Full;
        }
        self.map.insert(
            (rif, ip),
            Entry {
                mac: MacAddr::default(),
                state: NeighState::Incomplete,
                confirmed: now,
                probes: 1,
                last_probe: now,
                queue: Vec::new(),
            },
        );
        Lookup::Resolving { probe: true }
    }

    /// Queues a packet for an incomplete entry. False if it was not queued
    /// (no such entry, or the table-wide byte budget is spent); a full
    /// per-entry queue drops its oldest packet instead (returned true, and
    /// `dropped_oldest` set).
    pub fn enqueue(&mut self, rif: u16, ip: u32, p: Pending, dropped_oldest: &mut bool) -> bool {
        let Some(e) = self.map.get_mut(&(rif, ip)) else {
            return false;
        };
        if e.state != NeighState::Incomplete {
            return false;
        }
        if e.queue.len() >= QUEUE_PER_NEIGH {
            let old = e.queue.remove(0);
            self.queued_bytes -= old.frame.len();
            *dropped_oldest = true;
        }
        if self.queued_bytes + p.frame.len() > QUEUE_MAX_BYTES {
            return false;
        }
        self.queued_bytes += p.frame.len();
        e.queue.push(p);
        true
    }

    /// An ARP packet from `ip` at `mac` arrived on `rif`. `create`: make an
    /// entry if there is none (the packet was a request for one of our
    /// addresses, or an answer to ours); otherwise only an existing entry
    /// is updated (RFC 826's merge flag). Returns the packets that waited.
    pub fn learn(
        &mut self,
        rif: u16,
        ip: u32,
        mac: MacAddr,
        create: bool,
        now: u64,
    ) -> Vec<Pending> {
        if !mac.is_valid_station() {
            return Vec::new();
        }
        if !self.map.contains_key(&(rif, ip)) {
            if !create || (self.map.len() >= self.max && !self.evict_one(now)) {
                return Vec::new();
            }
            self.map.insert(
                (rif, ip),
                Entry {
                    mac,
                    state: NeighState::Reachable,
                    confirmed: now,
                    probes: 0,
                    last_probe: 0,
                    queue: Vec::new(),
                },
            );
            return Vec::new();
        }
        let Some(e) = self.map.get_mut(&(rif, ip)) else {
            return Vec::new();
        };
        e.mac = mac;
        e.state = NeighState::Reachable;
        e.confirmed = now;
        e.probes = 0;
        let q = std::mem::take(&mut e.queue);
        self.queued_bytes -= q.iter().map(|p| p.frame.len()).sum::<usize>();
        q
    }

    /// Runs the retry and expiry timers; appends what the caller must do.
    pub fn tick(&mut self, now: u64, events: &mut Vec<Event>) {
        let mut queued_freed = 0;
        self.map.retain(|&(rif, ip), e| {
            refresh_state(e, now);
            match e.state {
                NeighState::Incomplete if now.saturating_sub(e.last_probe) >= RETRY_NS => {
                    if e.probes >= MAX_PROBES {
                        e.state = NeighState::Failed;
                        e.confirmed = now;
                        let q = std::mem::take(&mut e.queue);
                        queued_freed += q.iter().map(|p| p.frame.len()).sum::<usize>();
                        events.push(Event::Unreachable { rif, ip, queued: q });
                    } else {
                        e.probes += 1;
                        e.last_probe = now;
                        events.push(Event::Probe { rif, ip });
                    }
                    true
                }
                NeighState::Failed => now.saturating_sub(e.confirmed) < FAILED_HOLD_NS,
                // Confirmation requests went unanswered (the last one had
                // its second to be answered): forget it.
                NeighState::Stale => {
                    e.probes < MAX_PROBES || now.saturating_sub(e.last_probe) < RETRY_NS
                }
                _ => true,
            }
        });
        self.queued_bytes -= queued_freed;
    }

    /// Forgets every entry of `rif` (the interface went away).
    pub fn flush_rif(&mut self, rif: u16) {
        let mut freed = 0;
        self.map.retain(|&(r, _), e| {
            if r == rif {
                freed += e.queue.iter().map(|p| p.frame.len()).sum::<usize>();
            }
            r != rif
        });
        self.queued_bytes -= freed;
    }

    /// The entries, for `arp-show`.
    pub fn entries(&self, now: u64) -> Vec<NeighInfo> {
        self.map
            .iter()
            .map(|(&(rif, ip), e)| {
                let mut state = e.state;
                if state == NeighState::Reachable && now.saturating_sub(e.confirmed) >= REACHABLE_NS
                {
                    state = NeighState::Stale;
                }
                NeighInfo {
                    rif,
                    ip,
                    mac: matches!(state, NeighState::Reachable | NeighState::Stale)
                        .then_some(e.mac),
                    state,
                    age_s: now.saturating_sub(e.confirmed) / 1_000_000_000,
                }
            })
            .collect()
    }

    /// Makes room: a failed entry, else the stale one confirmed longest
    /// ago. One pass over the table (only when it is full).
    fn evict_one(&mut self, now: u64) -> bool {
        let mut victim: Option<((u16, u32), u64)> = None;
        for (k, e) in self.map.iter() {
            let stale = e.state == NeighState::Stale
                || (e.state == NeighState::Reachable
                    && now.saturating_sub(e.confirmed) >= REACHABLE_NS);
            if e.state == NeighState::Failed {
                victim = Some((*k, 0));
                break;
            }
            if stale && victim.is_none_or(|(_, c)| e.confirmed < c) {
                victim = Some((*k, e.confirmed));
            }
        }
        match victim {
            Some((k, _)) => {
                if let Some(e) = self.map.remove(&k) {
                    self.queued_bytes -= e.queue.iter().map(|p| p.frame.len()).sum::<usize>();
                }
                true
            }
            None => false,
        }
    }
}

fn refresh_state(e: &mut Entry, now: u64) {
    if e.state == NeighState::Reachable && now.saturating_sub(e.confirmed) >= REACHABLE_NS {
        e.state = NeighState::Stale;
        e.probes = 0;
        e.last_probe = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 9]);

    fn pkt(n: usize) -> Pending {
        Pending {
            frame: vec![0; n],
            vnet: VnetHdr::default(),
            from: 0,
        }
    }

    #[test]
    fn miss_queues_then_answer_releases() {
        let mut n = Neigh::new(16);
        assert_eq!(n.lookup(1, 7, 0), Lookup::Resolving { probe: true });
        assert_eq!(n.lookup(1, 7, 1), Lookup::Resolving { probe: false });
        let mut dropped = false;
        for _ in 0..5 {
            assert!(n.enqueue(1, 7, pkt(100), &mut dropped));
        }
        assert!(
            dropped,
            "the queue holds {QUEUE_PER_NEIGH}, oldest go first"
        );
        assert_eq!(n.queued_bytes(), 300);
        let q = n.learn(1, 7, MAC, false, 2);
        assert_eq!(q.len(), QUEUE_PER_NEIGH);
        assert_eq!(n.queued_bytes(), 0);
        assert_eq!(
            n.lookup(1, 7, 3),
            Lookup::Known {
                mac: MAC,
                probe: false
            }
        );
    }

    #[test]
    fn retries_then_fails_then_forgets() {
        let mut n = Neigh::new(16);
        n.lookup(1, 7, 0);
        let mut d = false;
        n.enqueue(1, 7, pkt(60), &mut d);
        let mut ev = Vec::new();
        let mut probes = 1;
        let mut t = 0;
        let mut unreachable = None;
        while unreachable.is_none() && t < 10 * S {
            t += S / 10;
            n.tick(t, &mut ev);
            for e in ev.drain(..) {
                match e {
                    Event::Probe { .. } => probes += 1,
                    Event::Unreachable { queued, .. } => unreachable = Some((t, queued.len())),
                }
            }
        }
        assert_eq!(
            probes, MAX_PROBES as usize,
            "one request at once, then one a second"
        );
        assert_eq!(unreachable, Some((3 * S, 1)));
        assert_eq!(n.lookup(1, 7, t + 1), Lookup::Failed);
        assert_eq!(n.queued_bytes(), 0);
        n.tick(t + FAILED_HOLD_NS, &mut ev);
        assert!(n.is_empty(), "failed entries are held for a while only");
    }

    #[test]
    fn stale_entries_are_confirmed_or_removed() {
        let mut n = Neigh::new(16);
        n.learn(1, 7, MAC, true, 0);
        let t = REACHABLE_NS + 1;
        assert_eq!(
            n.lookup(1, 7, t),
            Lookup::Known {
                mac: MAC,
                probe: true
            }
        );
        assert_eq!(
            n.lookup(1, 7, t + 1),
            Lookup::Known {
                mac: MAC,
                probe: false
            }
        );
        assert_eq!(n.entries(t)[0].state, NeighState::Stale);
        let mut ev = Vec::new();
        for k in 1..=MAX_PROBES as u64 {
            n.lookup(1, 7, t + k * RETRY_NS);
        }
        n.tick(t + 3 * RETRY_NS + RETRY_NS / 2, &mut ev);
        assert_eq!(n.len(), 1, "the last request has its second to be answered");
        n.tick(t + 4 * RETRY_NS, &mut ev);
        assert!(n.is_empty(), "unanswered confirmations remove the entry");
        // A gratuitous ARP only updates what exists.
        n.learn(1, 8, MAC, false, 0);
        assert!(n.is_empty());
    }

    #[test]
    fn bounded_with_eviction_of_stale_only() {
        let mut n = Neigh::new(2);
        n.learn(1, 1, MAC, true, 0);
        n.learn(1, 2, MAC, true, 0);
        assert_eq!(n.lookup(1, 3, 1), Lookup::Full, "both fresh: no room");
        assert_eq!(
            n.lookup(1, 3, REACHABLE_NS + 1),
            Lookup::Resolving { probe: true }
        );
        assert_eq!(n.len(), 2);
        n.flush_rif(1);
        assert!(n.is_empty());
    }

    #[test]
    fn byte_budget_is_global() {
        let mut n = Neigh::new(4096);
        let mut d = false;
        let big = QUEUE_MAX_BYTES / 2 + 1;
        n.lookup(1, 1, 0);
        n.lookup(1, 2, 0);
        assert!(n.enqueue(1, 1, pkt(big), &mut d));
        assert!(!n.enqueue(1, 2, pkt(big), &mut d));
        assert!(
            !n.enqueue(1, 99, pkt(10), &mut d),
            "no entry, nothing queued"
        );
    }
}
