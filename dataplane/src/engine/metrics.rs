//! What `vswitchd --metrics` exposes: a snapshot of the counters and tables
//! taken when Prometheus scrapes, and the workers' own counters (busy time,
//! batch sizes), the only metrics work on the forwarding path.
//!
//! The snapshot reads what `stats`, `list-ports`, `list-br`, `stp-show` and
//! `nat-show` read, the same way, so a scrape and those commands agree when
//! nothing moves in between.

use super::{lock, EngineHandle, BATCH};
use crate::bridge::stp::PortState;
use crate::pipeline::Attach;
use crate::port::{AnyPort, Port};
use crate::stats::{DropReason, PortStats};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Upper bounds of the batch-size histogram's buckets (frames per batch);
/// the last is the largest batch a worker drains.
pub const BATCH_BUCKETS: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];
const _: () = assert!(BATCH_BUCKETS[BATCH_BUCKETS.len() - 1] == BATCH as u64);

/// One worker's counters. Only that worker writes them (a load and a store
/// each, no locked instruction); a scrape reads them at any time.
#[derive(Debug, Default)]
pub(crate) struct WorkerCounters {
    /// Time spent receiving, forwarding and sending batches of frames (ns).
    busy_ns: AtomicU64,
    /// Batches by bucket of [`BATCH_BUCKETS`] (not cumulative).
    batches: [AtomicU64; BATCH_BUCKETS.len()],
    /// Frames in those batches (the histogram's sum).
    frames: AtomicU64,
    /// Times the worker slept waiting for frames (each costs the frame
    /// that ends it a thread wake-up).
    sleeps: AtomicU64,
    /// Times it stopped busy polling because other tasks waited for a CPU.
    pressure_backoffs: AtomicU64,
}

#[inline]
fn bump(a: &AtomicU64, n: u64) {
    // Single writer: no read-modify-write instruction needed.
    a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl WorkerCounters {
    /// One received batch of `n` frames (n > 0).
    #[inline]
    pub(crate) fn batch(&self, n: usize) {
        // Buckets are powers of two: the bucket of n is ceil(log2(n)).
        let i = (usize::BITS - n.saturating_sub(1).leading_zeros()) as usize;
        bump(&self.batches[i.min(BATCH_BUCKETS.len() - 1)], 1);
        bump(&self.frames, n as u64);
    }

    /// Frames counted so far (the worker compares it around a turn to see
    /// whether the turn did any work).
    #[inline]
    pub(crate) fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn busy(&self, ns: u64) {
        bump(&self.busy_ns, ns);
    }

    #[inline]
    pub(crate) fn slept(&self) {
        bump(&self.sleeps, 1);
    }

    pub(crate) fn pressure_backoff(&self) {
        bump(&self.pressure_backoffs, 1);
    }

    fn snapshot(&self, id: usize) -> WorkerSnapshot {
        WorkerSnapshot {
            id,
            busy_seconds: self.busy_ns.load(Ordering::Relaxed) as f64 / 1e9,
            batches: std::array::from_fn(|i| self.batches[i].load(Ordering::Relaxed)),
            frames: self.frames.load(Ordering::Relaxed),
            sleeps: self.sleeps.load(Ordering::Relaxed),
            pressure_backoffs: self.pressure_backoffs.load(Ordering::Relaxed),
        }
    }
}

/// Everything a scrape shows, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Bridge ports and router interfaces, in `stats` order.
    pub ports: Vec<PortSnapshot>,
    pub bridges: Vec<BridgeSnapshot>,
    /// Live SNAT/DNAT flows (the rows of `nat-show`).
    pub nat_flows: u64,
    pub workers: Vec<WorkerSnapshot>,
}

#[derive(Debug, Clone)]
pub struct PortSnapshot {
    pub name: String,
    /// The bridge it is on (a router interface: the bridge of its SVI);
    /// empty for a TUN router interface.
    pub bridge: String,
    /// As `list-ports` shows it: operationally up and not shut by BPDU guard.
    pub up: bool,
    /// `stats`: summed over the workers, kernel drops included.
    pub stats: PortStats,
}

#[derive(Debug, Clone)]
pub struct BridgeSnapshot {
    pub name: String,
    pub fdb_entries: u64,
    /// Stations learned new, and moved to another port.
    pub fdb_learned: u64,
    pub fdb_moved: u64,
    /// Spanning-tree topology changes (counted while STP was on).
    pub topology_changes: u64,
    /// None while STP is off.
    pub stp: Option<StpSnapshot>,
}

#[derive(Debug, Clone)]
pub struct StpSnapshot {
    /// The topology change flag is set (fast ageing in effect).
    pub topology_change: bool,
    /// Per member port: its state as `stp-show` names it.
    pub ports: Vec<(String, PortState)>,
}

#[derive(Debug, Clone)]
pub struct WorkerSnapshot {
    pub id: usize,
    pub busy_seconds: f64,
    /// Batches per bucket of [`BATCH_BUCKETS`] (not cumulative).
    pub batches: [u64; BATCH_BUCKETS.len()],
    pub frames: u64,
    /// Times it slept waiting for frames (busy polling avoids them).
    pub sleeps: u64,
    /// Times it stopped busy polling because other tasks waited for a CPU.
    pub pressure_backoffs: u64,
}

impl EngineHandle {
    /// A snapshot for a metrics scrape. Takes the tables' lock once (with
    /// the router's inside it, as `nat-show` does), then the per-worker
    /// counters as `stats` does; never waits on the forwarding path longer
    /// than those requests do.
    pub fn metrics_snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        let ios: Vec<Option<Arc<AnyPort>>>;
        let pids: Vec<usize>;
        {
            let t = self.shared.tables();
            pids = t.ports_in_order().iter().map(|&p| p as usize).collect();
            ios = pids
                .iter()
                .map(|&p| {
                    t.ports
                        .get(p)
                        .and_then(Option::as_ref)
                        .map(|e| e.io.clone())
                })
                .collect();
            for &p in &pids {
                let attach = t.attach.get(p).copied().unwrap_or_default();
                let br = attach.bridge().and_then(|b| t.bridges.get(b)?.as_ref());
                let guard = matches!(attach, Attach::Bridge(_))
                    && br.is_some_and(|b| b.is_guard_tripped(p as _));
                snap.ports.push(PortSnapshot {
                    name: t.port_name(p as _),
                    bridge: br.map(|b| b.name.clone()).unwrap_or_default(),
                    // As list-ports: a VXLAN port without its underlay
                    // address is down too.
                    up: t.up.get(p).copied().unwrap_or(false)
                        && !guard
                        && !t.ports[p].as_ref().is_some_and(
                            |e| matches!(&*e.io, crate::port::AnyPort::Vxlan(x) if !x.local_up()),
                        ),
                    stats: PortStats::default(),
                });
            }
            for b in t.bridges.iter().flatten() {
                let (learned, moved) = b.fdb.learn_events();
                let stp = b.stp.as_ref().map(|s| {
                    let st = s.status();
                    StpSnapshot {
                        topology_change: st.topology_change,
                        ports: b
                            .ports
                            .iter()
                            .filter(|&&p| {
                                matches!(t.attach.get(p as usize), Some(Attach::Bridge(_)))
                            })
                            .map(|&p| {
                                let state = if b.is_guard_tripped(p) {
                                    PortState::Disabled
                                } else {
                                    st.ports
                                        .iter()
                                        .find(|x| x.port == p)
                                        .map_or(PortState::Disabled, |x| x.state)
                                };
                                (t.port_name(p), state)
                            })
                            .collect(),
                    }
                });
                snap.bridges.push(BridgeSnapshot {
                    name: b.name.clone(),
                    fdb_entries: b.fdb.len() as u64,
                    fdb_learned: learned,
                    fdb_moved: moved,
                    topology_changes: b.topology_changes,
                    stp,
                });
            }
            let now = t.now_ns();
            snap.nat_flows = t.router().nat.conns(now).count() as u64;
        }
        // As `stats`: the kernel's drops (read outside the lock), then every
        // worker's share.
        for (ps, io) in snap.ports.iter_mut().zip(&ios) {
            if let Some(io) = io {
                ps.stats.drop_n(DropReason::RxOverflow, io.kernel_drops());
            }
        }
        for w in &self.shared.stats {
            let st = lock(w);
            for (ps, &p) in snap.ports.iter_mut().zip(&pids) {
                if let Some(s) = st.get(p) {
                    ps.stats.add(s);
                }
            }
        }
        snap.workers = (self.shared.worker_counters.iter().enumerate())
            .map(|(id, w)| w.snapshot(id))
            .collect();
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_land_in_power_of_two_buckets() {
        let w = WorkerCounters::default();
        for n in [1, 2, 3, 4, 5, 33, 64, 65] {
            w.batch(n);
        }
        let s = w.snapshot(0);
        // le 1, 2, 4, 8, 16, 32, 64 (65 cannot happen; it stays in the last).
        assert_eq!(s.batches, [1, 1, 2, 1, 0, 0, 3]);
        assert_eq!(s.frames, 1 + 2 + 3 + 4 + 5 + 33 + 64 + 65);
        assert_eq!(w.frames(), s.frames);
        w.busy(1_500_000_000);
        assert_eq!(w.snapshot(0).busy_seconds, 1.5);
        w.slept();
        w.slept();
        assert_eq!(w.snapshot(0).sleeps, 2);
    }
}
