//! The engine: worker threads that own ports, and the handle the control
//! side drives them with.
//!
//! Each worker polls its own ports with mio, drains a batch per ready port,
//! takes the shared tables' lock once to decide the whole batch (learn,
//! classify, look up, choose tag edits), releases it, then flushes one TX
//! batch per output port. Any worker may send on any port (ports take
//! `&self`; the kernel serialises concurrent writes), only the owner receives.
//! Counters are per worker and summed when asked for. Time is read once per
//! batch and passed down.

pub mod capture;
pub mod impair;
pub mod metrics;
pub mod monitor;
mod pressure;
mod tables;
mod trace;
mod worker;

use crate::api::Request;
use crate::bridge::PortId;
use crate::config::{Config, PortConfig, PortType};
use crate::port::afpacket::AfPacketPort;
use crate::port::tap::{TapOptions, TapPort};
use crate::port::vxlan::{VxlanOptions, VxlanPort};
use crate::port::AnyPort;
use crate::port::Port;
use crate::stats::{DropReason, PortStats};
use crate::sys;
use crossbeam_channel::Sender;
use mio::Waker;
use serde_json::Value;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
pub use tables::FdbRows;
use tables::{PortEntry, Tables};
use worker::{Worker, WorkerMsg};

/// Frames drained from one port per wakeup.
pub const BATCH: usize = 64;
/// Default busy-poll window after the last received frame (µs).
pub const DEFAULT_BUSY_POLL_US: u64 = 200;
/// Default ceiling of the adaptive busy-poll window (µs): request/response
/// traffic with gaps up to 20 ms (50 requests/s and more) is served without
/// wake-ups, at the price of a spinning worker while it lasts; sparser
/// traffic, and an idle switch, let the workers sleep. On virtual machines a
/// sleeping worker's CPU halts, and waking it costs far more than the
/// forwarding (README "Threads and latency" has the measurements): 2.5 ms,
/// the earlier ceiling, left 100 requests/s at the never-spin round trip,
/// 1.9x the kernel bridge's.
pub const DEFAULT_BUSY_POLL_MAX_US: u64 = 20_000;
/// `busy_poll_us` (and `busy_poll_max_us`) value that makes the workers spin
/// all the time, never sleeping (`vswitchd --latency`).
pub const SPIN_ALWAYS: u64 = u64::MAX;
/// Most ports one switch serves (bounds the tables control input can grow).
pub const MAX_PORTS: usize = 4096;
/// Most bridges.
pub const MAX_BRIDGES: usize = 1024;
pub use crate::bridge::MAX_AGEING_S;
// Port ids must fit the FDB's entries.
const _: () = assert!(MAX_PORTS <= crate::bridge::fdb::FDB_MAX_PORT as usize + 1);

pub type CtlResult = Result<Value, String>;

/// How to run the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Worker threads (at least 1).
    pub workers: usize,
    /// Keep polling at least this long after the last frame before
    /// sleeping (µs); `SPIN_ALWAYS`: never sleep.
    pub busy_poll_us: u64,
    /// Let the window grow up to this (µs) when frames keep arriving just
    /// after the worker went to sleep (adaptive busy polling).
    pub busy_poll_max_us: u64,
    /// Called first thing on every worker thread (tests use it to tag the
    /// threads they watch).
    pub worker_init: Option<fn()>,
}

/// Default worker count: half the CPUs, at least one. The hosts behind the
/// ports need CPU too, and writing into a TAP runs the receiving host's stack
/// on the writer's thread; on a 2-core machine a second worker measured
/// slower (TCP 0.51x vs 0.67x of the kernel bridge) and tripled ping RTT,
/// because request and reply then land on two threads that each sleep.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            workers: default_workers(),
            busy_poll_us: DEFAULT_BUSY_POLL_US,
            busy_poll_max_us: DEFAULT_BUSY_POLL_MAX_US,
            worker_init: None,
        }
    }
}

/// What the workers share.
pub(crate) struct Shared {
    tables: Mutex<Tables>,
    /// The router's tables (also reachable from `tables`, which takes this
    /// lock after its own; workers take it alone).
    router: Arc<Mutex<crate::router::Router>>,
    /// One counter set per worker, indexed by PortId.
    stats: Vec<Arc<Mutex<Vec<PortStats>>>>,
    /// `vswitchctl monitor` listeners.
    monitor: monitor::Monitor,
    /// Set by shutdown: background threads end.
    stopping: std::sync::atomic::AtomicBool,
    /// `trace --live`: on while one runs (one branch per batch otherwise).
    live_on: std::sync::atomic::AtomicBool,
    live: Mutex<Option<trace::LiveTrace>>,
    /// Impaired ports (egress delay/loss/rate), and whether there are any.
    impair_on: std::sync::atomic::AtomicBool,
    impair: Mutex<Vec<impair::Impaired>>,
    /// `capture`: on while any runs.
    capture_on: std::sync::atomic::AtomicBool,
    captures: Mutex<Vec<capture::Sub>>,
    /// Busy time and batch sizes, one set per worker (`--metrics`).
    worker_counters: Vec<metrics::WorkerCounters>,
}

impl Shared {
    fn tables(&self) -> MutexGuard<'_, Tables> {
        // A panic while holding the lock cannot leave the tables half-written
        // in a way that matters more than stopping would; keep serving.
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct WorkerLink {
    tx: Sender<WorkerMsg>,
    waker: Arc<Waker>,
}

impl WorkerLink {
    fn send(&self, m: WorkerMsg) {
        let _ = self.tx.send(m);
        let _ = self.waker.wake();
    }
}

/// A running engine. Cloning is cheap; every clone drives the same engine.
#[derive(Clone)]
pub struct EngineHandle {
    shared: Arc<Shared>,
    workers: Arc<Vec<WorkerLink>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Serialises control requests that span several lock sections.
    control: Arc<Mutex<()>>,
}

/// Starts the workers and returns the handle.
pub fn start(opts: EngineOptions) -> std::io::Result<EngineHandle> {
    let n = opts.workers.max(1);
    let clock = Instant::now();
    let stats: Vec<_> = (0..n)
        .map(|_| Arc::new(Mutex::new(vec![PortStats::default(); MAX_PORTS])))
        .collect();
    let router = Arc::new(Mutex::new(crate::router::Router::new()));
    let shared = Arc::new(Shared {
        tables: Mutex::new(Tables::new(clock, router.clone())),
        router,
        stats: stats.clone(),
        monitor: monitor::Monitor::default(),
        stopping: Default::default(),
        live_on: Default::default(),
        live: Mutex::new(None),
        capture_on: Default::default(),
        impair_on: Default::default(),
        impair: Mutex::new(Vec::new()),
        captures: Mutex::new(Vec::new()),
        worker_counters: (0..n).map(|_| Default::default()).collect(),
    });
    let mut links = Vec::with_capacity(n);
    let mut threads = Vec::with_capacity(n);
    for (id, st) in stats.into_iter().enumerate() {
        let (w, tx, waker) = Worker::new(
            id,
            shared.clone(),
            st,
            (opts.busy_poll_us, opts.busy_poll_max_us),
            clock,
        )?;
        let init = opts.worker_init;
        let t = std::thread::Builder::new()
            .name(format!("vswitch-worker{id}"))
            .spawn(move || {
                if let Some(f) = init {
                    f();
                }
                w.run()
            })?;
        links.push(WorkerLink { tx, waker });
        threads.push(t);
    }
    Ok(EngineHandle {
        shared,
        workers: Arc::new(links),
        threads: Arc::new(Mutex::new(threads)),
        control: Arc::new(Mutex::new(())),
    })
}

impl EngineHandle {
    /// Executes one control request.
    pub fn call(&self, req: Request) -> CtlResult {
        let _serial = lock(&self.control);
        match req {
            Request::AddPort { bridge, port } => {
                let r = self.add_port(&bridge, port);
                self.refresh_impairment();
                r
            }
            Request::DelPort { name } => {
                let pid = {
                    let t = self.shared.tables();
                    let pid = t.port_idx(&name)?;
                    if t.attach[pid].rif().is_some() {
                        return Err(format!(
                            "'{name}' is a router interface: remove it with del-rif"
                        ));
                    }
                    pid as PortId
                };
                self.remove_ports(&[pid]);
                self.refresh_impairment();
                Ok(Value::Null)
            }
            Request::AddRif { rif } => self.add_rif(rif),
            Request::DelRif { name } => {
                let pid = {
                    let t = self.shared.tables();
                    let router = t.router();
                    let id = router
                        .rif_by_name(&name)
                        .ok_or_else(|| format!("no router interface named '{name}'"))?;
                    router.rif(id).map(|r| r.pid).ok_or("vanished")?
                };
                self.remove_ports(&[pid]);
                tracing::info!(rif = %name, "router interface removed");
                Ok(Value::Null)
            }
            Request::DelBr { name } => {
                let ports = {
                    let t = self.shared.tables();
                    let i = t.bridge_idx(&name)?;
                    t.bridges[i]
                        .as_ref()
                        .map(|b| b.ports.clone())
                        .unwrap_or_default()
                };
                self.remove_ports(&ports);
                let mut t = self.shared.tables();
                let i = t.bridge_idx(&name)?;
                t.bridges[i] = None;
                tracing::info!(bridge = %name, "bridge deleted");
                Ok(Value::Null)
            }
            Request::Stats { port } => {
                let (list, names, ios) = {
                    let t = self.shared.tables();
                    let list: Vec<PortId> = match port {
                        Some(p) => vec![t.port_idx(&p)? as PortId],
                        None => t.ports_in_order(),
                    };
                    let names: Vec<String> = list.iter().map(|&p| t.port_name(p)).collect();
                    let ios: Vec<Option<Arc<AnyPort>>> = list
                        .iter()
                        .map(|&p| t.ports[p as usize].as_ref().map(|e| e.io.clone()))
                        .collect();
                    (list, names, ios)
                };
                let mut sums = vec![PortStats::default(); list.len()];
                // Drops the kernel counted before frames reached us (read
                // outside the lock: a TAP in a namespace needs a thread hop).
                for (sum, io) in sums.iter_mut().zip(&ios) {
                    if let Some(io) = io {
                        sum.drop_n(DropReason::RxOverflow, io.kernel_drops());
                    }
                }
                for w in &self.shared.stats {
                    let st = lock(w);
                    for (sum, &pid) in sums.iter_mut().zip(&list) {
                        sum.add(&st[pid as usize]);
                    }
                }
                Ok(Value::Array(
                    sums.iter().zip(&names).map(|(s, n)| s.to_json(n)).collect(),
                ))
            }
            Request::FdbShow { bridge } => {
                serde_json::to_value(self.fdb_rows(&bridge)?).map_err(|e| e.to_string())
            }
            other => {
                let refresh = matches!(
                    other,
                    Request::SetPort { .. } | Request::DelBr { .. } | Request::AddBr { .. }
                );
                let r = self.shared.tables().handle(other);
                if refresh {
                    self.refresh_impairment();
                }
                r
            }
        }
    }

    /// `fdb-show` for the control server: the bridge's FDB copied under the
    /// lock, sorted and formatted after it (serialize the result straight to
    /// the client; at 1 M entries a JSON value tree would take a gigabyte).
    pub fn fdb_rows(&self, bridge: &str) -> Result<FdbRows, String> {
        let snap = self.shared.tables().fdb_snapshot(bridge)?;
        Ok(snap.rows())
    }

    /// Starts the housekeeping thread: once a second it re-attaches
    /// AF_PACKET ports whose interface went away and is back (a VM's TAP
    /// that QEMU made again, a veth re-created), as OVS re-opens a netdev
    /// by name. Start it from the thread whose privileges it should have
    /// (vswitchd: after dropping to `--user`, which keeps CAP_NET_RAW).
    pub fn start_housekeeping(&self) -> std::io::Result<()> {
        let h = self.clone();
        std::thread::Builder::new()
            .name("vswitch-house".into())
            .spawn(move || {
                while !h.shared.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(1));
                    h.reattach_ports();
                }
            })?;
        Ok(())
    }

    /// Re-opens AF_PACKET ports that are down because their interface went
    /// away, if an interface of that name exists again.
    pub fn reattach_ports(&self) {
        let cands: Vec<(PortId, String, usize)> = {
            let t = self.shared.tables();
            t.ports
                .iter()
                .enumerate()
                .filter_map(|(p, e)| {
                    let e = e.as_ref()?;
                    (matches!(*e.io, AnyPort::AfPacket(_)) && !t.up[p])
                        .then(|| (p as PortId, e.ifname.clone(), e.worker))
                })
                .collect()
        };
        for (pid, ifname, worker) in cands {
            if sys::get_mtu(&ifname).is_err() {
                continue; // not back (yet)
            }
            let port = match AfPacketPort::open(&ifname) {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(ifname, "cannot re-attach yet: {e}");
                    continue;
                }
            };
            let io = Arc::new(AnyPort::AfPacket(port));
            let name = {
                let _serial = lock(&self.control);
                let mut t = self.shared.tables();
                let same = t.ports[pid as usize]
                    .as_ref()
                    .is_some_and(|e| e.ifname == ifname && matches!(*e.io, AnyPort::AfPacket(_)));
                if !same || t.up[pid as usize] {
                    continue;
                }
                let now = t.now_ns();
                let e = t.ports[pid as usize].as_mut().expect("checked");
                e.io = io.clone();
                e.mac = sys::get_mac(&ifname).ok();
                e.mtu = sys::get_mtu(&ifname).ok();
                t.up[pid as usize] = true;
                if let Some(b) = t.attach[pid as usize].bridge() {
                    if let Some(b) = t.bridges[b].as_mut() {
                        b.set_port_up(pid, true, now);
                    }
                }
                t.port_name(pid)
            };
            if let Some(w) = self.workers.get(worker) {
                w.send(WorkerMsg::Attach(pid, io));
            }
            tracing::info!(port = %name, ifname, "interface is back: port re-attached");
        }
    }

    /// `trace --live N [--port P]`: the records of the next `count` frames
    /// received (on `port`, or any), as they come. One at a time.
    pub fn live_trace(
        &self,
        port: Option<&str>,
        count: usize,
    ) -> Result<crossbeam_channel::Receiver<Value>, String> {
        if !(1..=1000).contains(&count) {
            return Err(format!("trace --live {count}: between 1 and 1000 frames"));
        }
        let port = match port {
            Some(p) => Some(self.shared.tables().port_idx(p)? as PortId),
            None => None,
        };
        let mut live = lock(&self.shared.live);
        if live.is_some() {
            return Err("a live trace is already running".into());
        }
        let (tx, rx) = crossbeam_channel::bounded(count);
        *live = Some(trace::LiveTrace {
            port,
            remaining: count,
            tx,
        });
        self.shared
            .live_on
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(rx)
    }

    /// Rebuilds the list of impaired ports from their settings, keeping the
    /// queues of ports whose impairment did not change.
    pub(crate) fn refresh_impairment(&self) {
        let want: Vec<(PortId, Arc<AnyPort>, impair::ImpairCfg)> = {
            let t = self.shared.tables();
            t.ports
                .iter()
                .enumerate()
                .filter_map(|(p, e)| {
                    let e = e.as_ref()?;
                    impair::ImpairCfg::of(&e.cfg).map(|c| (p as PortId, e.io.clone(), c))
                })
                .collect()
        };
        let mut list = lock(&self.shared.impair);
        let old = std::mem::take(&mut *list);
        for (pid, io, cfg) in want {
            let kept = old
                .iter()
                .find(|i| i.pid == pid && Arc::ptr_eq(&i.io, &io) && lock(&i.q).cfg == cfg);
            let q = match kept {
                Some(i) => i.q.clone(),
                None => Arc::new(Mutex::new(impair::ImpairQ::new(
                    cfg,
                    u64::from(pid).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed,
                ))),
            };
            list.push(impair::Impaired { pid, io, q });
        }
        self.shared
            .impair_on
            .store(!list.is_empty(), std::sync::atomic::Ordering::Release);
    }

    /// `capture PORT`: copies of the frames `port` receives (`rx`) and/or
    /// sends (`tx`), until the returned capture is dropped.
    pub fn capture(&self, port: &str, rx: bool, tx: bool) -> Result<capture::Capture, String> {
        let pid = self.shared.tables().port_idx(port)? as PortId;
        let (sub, cap) = capture::new(pid, rx, tx);
        let mut subs = lock(&self.shared.captures);
        subs.retain(capture::Sub::alive);
        subs.push(sub);
        self.shared
            .capture_on
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(cap)
    }

    /// Forgets captures whose client went away.
    pub fn prune_captures(&self) {
        let mut subs = lock(&self.shared.captures);
        subs.retain(capture::Sub::alive);
        self.shared
            .capture_on
            .store(!subs.is_empty(), std::sync::atomic::Ordering::Release);
    }

    /// Ends a live trace (its client went away or gave up).
    pub fn end_live_trace(&self) {
        *lock(&self.shared.live) = None;
        self.shared
            .live_on
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// `vswitchctl monitor`: a new listener for the events of `kinds`.
    pub fn monitor(&self, kinds: monitor::Kinds) -> monitor::Subscription {
        self.shared.monitor.subscribe(kinds)
    }

    /// Applies a configuration (at start). Stops at the first error.
    pub fn apply_config(&self, cfg: &Config) -> Result<(), String> {
        if !cfg.router.is_default() {
            self.call(Request::SetRouter {
                nat_max_flows: Some(cfg.router.nat_max_flows),
            })
            .map_err(|e| format!("router: {e}"))?;
        }
        for b in &cfg.bridges {
            self.call(Request::AddBr {
                name: b.name.clone(),
                stp: b.stp,
                ageing_s: Some(b.ageing_s),
                fdb_max: b.fdb_max,
                priority: b.priority,
                hello_s: b.hello_s,
                max_age_s: b.max_age_s,
                forward_delay_s: b.forward_delay_s,
            })
            .map_err(|e| format!("bridge {}: {e}", b.name))?;
            if b.group_fwd_mask.is_some() {
                self.call(Request::SetBr {
                    name: b.name.clone(),
                    ageing_s: None,
                    fdb_max: None,
                    stp: None,
                    priority: None,
                    hello_s: None,
                    max_age_s: None,
                    forward_delay_s: None,
                    group_fwd_mask: b.group_fwd_mask,
                })
                .map_err(|e| format!("bridge {}: {e}", b.name))?;
            }
            for p in &b.ports {
                self.call(Request::AddPort {
                    bridge: b.name.clone(),
                    port: p.clone(),
                })
                .map_err(|e| format!("bridge {} port {}: {e}", b.name, p.name))?;
            }
            for f in &b.fdb {
                self.call(Request::FdbAdd {
                    bridge: b.name.clone(),
                    mac: f.mac,
                    port: f.port.clone(),
                    vlan: f.vlan,
                    vtep: f.vtep,
                })
                .map_err(|e| format!("bridge {} fdb {}: {e}", b.name, f.mac))?;
            }
        }
        for r in &cfg.rifs {
            self.call(Request::AddRif { rif: r.clone() })
                .map_err(|e| format!("rif {}: {e}", r.name))?;
        }
        for r in &cfg.routes {
            self.call(Request::AddRoute { route: r.clone() })
                .map_err(|e| format!("route {}: {e}", r.prefix))?;
        }
        for s in &cfg.snat {
            self.call(Request::AddSnat { snat: s.clone() })
                .map_err(|e| format!("snat --out {}: {e}", s.out))?;
        }
        for d in &cfg.dnat {
            self.call(Request::AddDnat { dnat: d.clone() })
                .map_err(|e| format!("dnat --in {} {} {}: {e}", d.in_rif, d.proto, d.port))?;
        }
        Ok(())
    }

    /// `add-rif`: checks, opens the TUN device (outside the lock) or makes
    /// the bridge's internal port, then adds the interface.
    fn add_rif(&self, cfg: crate::config::RifConfig) -> CtlResult {
        check_name("router interface", &cfg.name)?;
        cfg.check()?;
        {
            let t = self.shared.tables();
            if t.port_idx(&cfg.name).is_ok() {
                return Err(format!("name '{}' is already in use", cfg.name));
            }
            if let Some(b) = &cfg.bridge {
                t.bridge_idx(b)?;
            }
            t.router().check_addr(cfg.addr)?;
            if t.ports.iter().flatten().count() >= MAX_PORTS {
                return Err(format!("too many ports (limit {MAX_PORTS})"));
            }
            if let Some(ifn) = &cfg.ifname {
                if !crate::sys::valid_ifname(ifn) {
                    return Err(format!(
                        "invalid interface name '{ifn}' (1-15 characters, no '/', ':' or spaces)"
                    ));
                }
            }
        }
        let mut pcfg = PortConfig::new(&cfg.name, PortType::Tap);
        pcfg.netns = cfg.netns.clone();
        let (io, created, mac, mtu, ifname) = match cfg.kind {
            crate::config::RifType::Bridge => {
                let mac = cfg
                    .mac
                    .unwrap_or_else(|| crate::router::rif::stable_mac(&cfg.name));
                (
                    AnyPort::Internal(crate::port::internal::InternalPort::new()),
                    false,
                    mac,
                    cfg.mtu.unwrap_or(crate::router::rif::DEFAULT_MTU),
                    String::new(),
                )
            }
            crate::config::RifType::Tun => {
                let mac = crate::router::rif::stable_mac(&cfg.name);
                let opts = crate::port::tun::TunOptions {
                    ifname: cfg.ifname().to_string(),
                    netns: cfg.netns.clone(),
                    mtu: cfg.mtu,
                    mac: Some(mac),
                };
                let t = crate::port::tun::TunPort::open(&opts).map_err(|e| e.to_string())?;
                let created = t.created();
                let mtu = cfg
                    .mtu
                    .or(t.mtu())
                    .unwrap_or(crate::router::rif::DEFAULT_MTU);
                (AnyPort::Tun(t), created, mac, mtu, cfg.ifname().to_string())
            }
        };
        let tun = matches!(io, AnyPort::Tun(_));
        let io = Arc::new(io);
        let worker = self.least_loaded_worker();
        let entry = PortEntry {
            cfg: pcfg,
            io: io.clone(),
            ifname,
            created,
            mac: Some(mac),
            mtu: Some(mtu),
            worker,
        };
        let name = cfg.name.clone();
        let pid = {
            let mut t = self.shared.tables();
            let pid = t.insert_rif(entry, cfg, mac, mtu)?;
            for w in &self.shared.stats {
                lock(w)[pid as usize] = PortStats::default();
            }
            pid
        };
        if tun {
            self.workers[worker].send(WorkerMsg::Attach(pid, io));
        }
        tracing::info!(rif = %name, created, "router interface added");
        Ok(Value::Null)
    }

    /// The worker with the fewest ports that have a device to poll.
    fn least_loaded_worker(&self) -> usize {
        let t = self.shared.tables();
        let mut load = vec![0usize; self.workers.len()];
        for e in t.ports.iter().flatten() {
            if !matches!(*e.io, AnyPort::Internal(_)) {
                load[e.worker] += 1;
            }
        }
        (0..load.len()).min_by_key(|&w| load[w]).unwrap_or(0)
    }

    /// Stops the workers, then removes every port (TAP devices the daemon
    /// created go with their file descriptors). Returns false if a worker
    /// had panicked.
    pub fn shutdown(&self) -> bool {
        self.shared
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for w in self.workers.iter() {
            w.send(WorkerMsg::Shutdown);
        }
        let mut ok = true;
        for t in lock(&self.threads).drain(..) {
            ok &= t.join().is_ok();
        }
        let all: Vec<PortId> = {
            let t = self.shared.tables();
            (0..t.ports.len() as PortId)
                .filter(|&p| t.ports[p as usize].is_some())
                .collect()
        };
        self.remove_ports(&all);
        ok
    }

    /// Takes ports out of the tables, then has their workers let go of them;
    /// returns once every worker has (so a created TAP is gone).
    fn remove_ports(&self, pids: &[PortId]) {
        let mut removed = Vec::new();
        {
            let mut t = self.shared.tables();
            for &pid in pids {
                if let Some(e) = t.remove_port(pid) {
                    removed.push((pid, e));
                }
            }
        }
        let mut acks = Vec::new();
        for (pid, e) in &removed {
            let (tx, rx) = crossbeam_channel::bounded(1);
            if let Some(w) = self.workers.get(e.worker) {
                w.send(WorkerMsg::Detach(*pid, tx));
                acks.push(rx);
            }
            tracing::info!(port = %e.cfg.name, "port removed");
        }
        for rx in acks {
            // A worker that has stopped cannot answer; it holds nothing then.
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
        drop(removed);
    }

    fn add_port(&self, bridge: &str, cfg: PortConfig) -> CtlResult {
        let (bi, member, ifname) = self.shared.tables().check_new_port(bridge, &cfg)?;
        // Device set-up (ioctls, netlink, namespaces) runs without the lock.
        let (io, created, mac, mtu) = match cfg.kind {
            PortType::Tap => {
                let opts = TapOptions {
                    ifname: ifname.clone(),
                    netns: cfg.netns.clone(),
                    mac: cfg.mac,
                    mtu: cfg.mtu,
                };
                let t = TapPort::open(&opts).map_err(|e| e.to_string())?;
                let created = t.created();
                let (mac, mtu) = (t.mac(), t.mtu());
                (AnyPort::Tap(t), created, mac, mtu)
            }
            PortType::Afpacket => {
                let a = AfPacketPort::open(&ifname).map_err(|e| e.to_string())?;
                (
                    AnyPort::AfPacket(a),
                    false,
                    sys::get_mac(&ifname).ok(),
                    sys::get_mtu(&ifname).ok(),
                )
            }
            PortType::Vxlan => {
                let opts = VxlanOptions {
                    vni: cfg.vni.unwrap_or(0),
                    local: cfg.local.ok_or("a vxlan port needs --local")?,
                    remotes: cfg.remotes.clone(),
                    dstport: cfg.dstport.unwrap_or(crate::config::VXLAN_PORT),
                    learning: cfg.vtep_learning,
                    srcport: {
                        let r = cfg.srcport_range();
                        (r.min, r.max)
                    },
                };
                let v = VxlanPort::open(&opts).map_err(|e| e.to_string())?;
                (AnyPort::Vxlan(v), false, None, None)
            }
            PortType::VhostUser => {
                let path = cfg
                    .path
                    .as_deref()
                    .ok_or("a vhost-user port needs --path")?;
                let mode = match cfg.mode.unwrap_or_default() {
                    crate::config::VhostMode::Server => crate::port::vhost_user::Mode::Server,
                    crate::config::VhostMode::Client => crate::port::vhost_user::Mode::Client,
                };
                let v =
                    crate::port::VhostUserPort::open(&cfg.name, std::path::Path::new(path), mode)
                        .map_err(|e| e.to_string())?;
                (AnyPort::VhostUser(v), false, None, None)
            }
        };
        let io = Arc::new(io);
        // The worker with the fewest ports receives on it; the VXLAN ports
        // of one underlay share the worker that has the first of them, so
        // that one thread reads their shared socket and a flow's datagrams
        // stay in order.
        let same_underlay = match &*io {
            AnyPort::Vxlan(x) => {
                let t = self.shared.tables();
                t.ports.iter().flatten().find_map(|e| match &*e.io {
                    AnyPort::Vxlan(y) if y.underlay_addr() == x.underlay_addr() => Some(e.worker),
                    _ => None,
                })
            }
            _ => None,
        };
        let worker = same_underlay.unwrap_or_else(|| self.least_loaded_worker());
        let entry = PortEntry {
            cfg,
            io: io.clone(),
            ifname,
            created,
            mac,
            mtu,
            worker,
        };
        let name = entry.cfg.name.clone();
        let pid = {
            let mut t = self.shared.tables();
            let pid = t.insert_port(entry, bi, member)?;
            // Fresh counters for the slot, in every worker.
            for w in &self.shared.stats {
                lock(w)[pid as usize] = PortStats::default();
            }
            if let AnyPort::Vxlan(x) = &*io {
                // Its underlay may hand it frames from now on; with its local
                // address missing it is down until the address appears.
                x.set_pid(pid);
                if !x.local_up() {
                    t.set_link_up(pid, false);
                }
            }
            if let AnyPort::VhostUser(x) = &*io {
                // Down until its guest connects (the worker's link watch
                // takes it up).
                if let Some(up) = x.take_link_change() {
                    t.set_guest_link(pid, up);
                }
            }
            pid
        };
        self.workers[worker].send(WorkerMsg::Attach(pid, io));
        tracing::info!(port = %name, bridge, created, worker, "port added");
        Ok(Value::Null)
    }
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name '{name}': 1-15 characters from A-Z a-z 0-9 . _ -"
        ))
    }
}

fn check_ageing(a: u32) -> Result<(), String> {
    if (1..=MAX_AGEING_S).contains(&a) {
        Ok(())
    } else {
        Err(format!("ageing time {a} s out of range (1-{MAX_AGEING_S})"))
    }
}

/// VLAN ids are 1-4094 (IEEE 802.1Q-2018 table 9-2: 0 and 4095 are reserved).
fn check_vlan(v: u16) -> Result<u16, String> {
    match v {
        1..=4094 => Ok(v),
        v => Err(format!("VLAN id {v} out of range (1-4094)")),
    }
}
