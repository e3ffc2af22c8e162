//! The poll loop: owns the ports and bridges, drains ports in batches, runs
//! each batch through the bridge, flushes per-port TX batches, applies control
//! commands between batches, and runs timers (FDB ageing).
//!
//! One engine thread owns every port here. Control requests arrive over a
//! crossbeam channel and a mio `Waker`, so the control thread never touches
//! data-plane state. Time is read once per loop turn and passed down.

use crate::api::Request;
use crate::bridge::vlan::VlanMode;
use crate::bridge::{Bridge, BridgeSettings, Learn, PortId, Verdict, DEFAULT_VLAN};
use crate::config::{BridgeConfig, Config, PortConfig, PortType, StaticFdbConfig};
use crate::packet::Batch;
use crate::port::afpacket::AfPacketPort;
use crate::port::tap::{TapOptions, TapPort};
use crate::port::{AnyPort, Port, TxItem};
use crate::stats::{DropReason, PortStats};
use crate::sys;
use crate::MacAddr;
use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Frames drained from one port per wakeup.
pub const BATCH: usize = 64;
const WAKER: Token = Token(usize::MAX);
const TIMER_PERIOD_NS: u64 = 1_000_000_000;
/// Default busy-poll window after the last received frame (µs).
pub const DEFAULT_BUSY_POLL_US: u64 = 200;
/// Most ports one engine serves (bounds the tables control input can grow).
pub const MAX_PORTS: usize = 4096;
/// Most bridges.
pub const MAX_BRIDGES: usize = 1024;
/// Largest accepted `--ageing`.
pub const MAX_AGEING_S: u32 = 1_000_000;

pub type CtlResult = Result<Value, String>;

/// A message to the engine thread.
pub enum CtlMsg {
    Request(Request, Sender<CtlResult>),
    Shutdown,
}

/// The control side's handle on a running engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: Sender<CtlMsg>,
    waker: Arc<Waker>,
}

impl EngineHandle {
    /// Sends `req` to the engine and waits for its answer.
    pub fn call(&self, req: Request) -> CtlResult {
        let (rtx, rrx) = crossbeam_channel::bounded(1);
        self.tx
            .send(CtlMsg::Request(req, rtx))
            .map_err(|_| "daemon is shutting down".to_string())?;
        let _ = self.waker.wake();
        rrx.recv_timeout(Duration::from_secs(60))
            .map_err(|_| "daemon did not answer".to_string())?
    }

    /// Asks the engine to stop (it removes the devices it created).
    pub fn shutdown(&self) {
        let _ = self.tx.send(CtlMsg::Shutdown);
        let _ = self.waker.wake();
    }
}

struct PortSlot {
    cfg: PortConfig,
    bridge: usize,
    io: AnyPort,
    /// Interface name where the device lives.
    ifname: String,
    /// The daemon created the device (and removes it with the port).
    created: bool,
    mac: Option<MacAddr>,
    mtu: Option<u32>,
    /// Still in the poll set's ready list.
    queued: bool,
}

pub struct Engine {
    poll: Poll,
    ctl_rx: Receiver<CtlMsg>,
    bridges: Vec<Option<Bridge>>,
    ports: Vec<Option<PortSlot>>,
    /// Per-port state read on the fast path, indexed by PortId.
    up: Vec<bool>,
    stats: Vec<PortStats>,
    txq: Vec<Vec<TxItem>>,
    dirty: Vec<PortId>,
    ready: VecDeque<PortId>,
    batch: Batch,
    clock: Instant,
    next_timer_ns: u64,
    /// Keep polling without sleeping this long after the last frame.
    busy_poll_ns: u64,
    /// When the last frame was received.
    last_rx_ns: u64,
}

impl Engine {
    /// Creates an engine and the handle the control side drives it with.
    pub fn new() -> io::Result<(Engine, EngineHandle)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let e = Engine {
            poll,
            ctl_rx: rx,
            bridges: Vec::new(),
            ports: Vec::new(),
            up: Vec::new(),
            stats: Vec::new(),
            txq: Vec::new(),
            dirty: Vec::new(),
            ready: VecDeque::new(),
            batch: Batch::new(BATCH),
            clock: Instant::now(),
            next_timer_ns: TIMER_PERIOD_NS,
            busy_poll_ns: DEFAULT_BUSY_POLL_US * 1000,
            last_rx_ns: 0,
        };
        Ok((e, EngineHandle { tx, waker }))
    }

    /// After a frame, keep polling without sleeping for `us` microseconds:
    /// a reply that arrives within the window is forwarded without a thread
    /// wake-up, which is most of a userspace switch's latency. 0 disables it.
    pub fn set_busy_poll_us(&mut self, us: u64) {
        self.busy_poll_ns = us.saturating_mul(1000);
    }

    fn now_ns(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    /// Applies a configuration (at start). Stops at the first error.
    pub fn apply_config(&mut self, cfg: &Config) -> Result<(), String> {
        for b in &cfg.bridges {
            self.handle(Request::AddBr {
                name: b.name.clone(),
                stp: b.stp,
                ageing_s: Some(b.ageing_s),
                fdb_max: b.fdb_max,
            })
            .map_err(|e| format!("bridge {}: {e}", b.name))?;
            for p in &b.ports {
                self.handle(Request::AddPort {
                    bridge: b.name.clone(),
                    port: p.clone(),
                })
                .map_err(|e| format!("bridge {} port {}: {e}", b.name, p.name))?;
            }
            for f in &b.fdb {
                self.handle(Request::FdbAdd {
                    bridge: b.name.clone(),
                    mac: f.mac,
                    port: f.port.clone(),
                    vlan: f.vlan,
                })
                .map_err(|e| format!("bridge {} fdb {}: {e}", b.name, f.mac))?;
            }
        }
        Ok(())
    }

    /// Runs until a shutdown message arrives, then removes every port (the
    /// TAP devices the daemon created go with their file descriptors).
    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let now = self.now_ns();
            let busy = now.saturating_sub(self.last_rx_ns) < self.busy_poll_ns;
            let timeout = if self.ready.is_empty() && !busy {
                Duration::from_nanos(self.next_timer_ns.saturating_sub(now).max(1_000_000))
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let mut ctl = false;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    ctl = true;
                    continue;
                }
                let pid = ev.token().0 as PortId;
                if let Some(Some(slot)) = self.ports.get_mut(pid as usize) {
                    if !slot.queued {
                        slot.queued = true;
                        self.ready.push_back(pid);
                    }
                }
            }
            if ctl && !self.drain_control() {
                break;
            }
            let now = self.now_ns();
            // One batch per ready port per turn: fair between busy ports.
            for _ in 0..self.ready.len() {
                let Some(pid) = self.ready.pop_front() else {
                    break;
                };
                if self.rx_port(pid, now) {
                    self.ready.push_back(pid);
                } else if let Some(Some(slot)) = self.ports.get_mut(pid as usize) {
                    slot.queued = false;
                }
            }
            if now >= self.next_timer_ns {
                self.timers(now);
                self.next_timer_ns = now + TIMER_PERIOD_NS;
            }
        }
        self.remove_all_ports();
    }

    /// Handles queued control messages; false on shutdown.
    fn drain_control(&mut self) -> bool {
        while let Ok(msg) = self.ctl_rx.try_recv() {
            match msg {
                CtlMsg::Shutdown => return false,
                CtlMsg::Request(req, reply) => {
                    let r = self.handle(req);
                    let _ = reply.send(r);
                }
            }
        }
        true
    }

    fn timers(&mut self, now: u64) {
        for b in self.bridges.iter_mut().flatten() {
            b.fdb.age(now);
        }
    }

    /// Drains one batch from `pid` and forwards it. True if the port may have
    /// more (a full batch was read).
    fn rx_port(&mut self, pid: PortId, now: u64) -> bool {
        let p = pid as usize;
        let Some(slot) = self.ports[p].as_mut() else {
            return false;
        };
        if !self.up[p] {
            return false;
        }
        let n = match slot.io.recv(&mut self.batch.frames) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                if slot.io.is_gone(&e) {
                    self.port_down(pid, &e);
                } else {
                    tracing::debug!(port = %slot.cfg.name, "receive error: {e}");
                }
                return false;
            }
        };
        if n > 0 {
            self.last_rx_ns = now;
        }
        let Some(bridge) = self.bridges[slot.bridge].as_mut() else {
            return false;
        };
        let stats = &mut self.stats[p];
        for i in 0..n {
            let f = &self.batch.frames[i];
            stats.rx_packets += 1;
            stats.rx_bytes += f.len() as u64;
            let data = f.data();
            let d = bridge.decide(pid, data, now);
            if d.learn == Some(Learn::Full) {
                stats.drop(DropReason::FdbFull);
            }
            let idx = i as u16;
            match d.verdict {
                Verdict::Unicast(out) => {
                    let o = out as usize;
                    if !self.up[o] {
                        stats.drop(DropReason::EgressDown);
                        continue;
                    }
                    match bridge.egress(pid, out, &d.class, data) {
                        Ok(edit) => {
                            if self.txq[o].is_empty() {
                                self.dirty.push(out);
                            }
                            self.txq[o].push(TxItem { idx, edit });
                        }
                        Err(r) => stats.drop(r),
                    }
                }
                Verdict::Flood => {
                    let mut sent = false;
                    for &out in &bridge.ports {
                        let o = out as usize;
                        if out == pid || !self.up[o] {
                            continue;
                        }
                        // Ports outside the frame's VLAN (or isolated from
                        // the ingress) are simply not part of this flood.
                        let Ok(edit) = bridge.egress(pid, out, &d.class, data) else {
                            continue;
                        };
                        if self.txq[o].is_empty() {
                            self.dirty.push(out);
                        }
                        self.txq[o].push(TxItem { idx, edit });
                        sent = true;
                    }
                    if !sent {
                        stats.drop(DropReason::NoEgress);
                    }
                }
                Verdict::Drop(r) => stats.drop(r),
            }
        }
        self.flush();
        n == self.batch.capacity()
    }

    /// Sends every per-port TX batch built from the current RX batch.
    fn flush(&mut self) {
        for out in self.dirty.drain(..) {
            let o = out as usize;
            if let Some(slot) = self.ports[o].as_mut() {
                slot.io
                    .send(&self.batch.frames, &self.txq[o], &mut self.stats[o]);
            }
            self.txq[o].clear();
        }
    }

    fn port_down(&mut self, pid: PortId, err: &io::Error) {
        let p = pid as usize;
        let Some(slot) = self.ports[p].as_mut() else {
            return;
        };
        tracing::warn!(port = %slot.cfg.name, "port went down: {err}");
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&slot.io.fd()));
        self.up[p] = false;
        self.stats[p].drop(DropReason::PortDown);
        if let Some(b) = self.bridges[slot.bridge].as_mut() {
            b.fdb.flush_dynamic(Some(pid));
        }
    }

    fn remove_all_ports(&mut self) {
        for p in 0..self.ports.len() {
            self.remove_port(p as PortId);
        }
    }

    fn remove_port(&mut self, pid: PortId) -> Option<PortSlot> {
        let p = pid as usize;
        let slot = self.ports.get_mut(p)?.take()?;
        if self.up[p] {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&slot.io.fd()));
        }
        self.up[p] = false;
        self.txq[p].clear();
        self.ready.retain(|&x| x != pid);
        if let Some(b) = self.bridges[slot.bridge].as_mut() {
            b.remove_port(pid);
        }
        tracing::info!(port = %slot.cfg.name, "port removed");
        Some(slot)
    }

    // ---- control ------------------------------------------------------------

    fn bridge_idx(&self, name: &str) -> Result<usize, String> {
        self.bridges
            .iter()
            .position(|b| b.as_ref().is_some_and(|b| b.name == name))
            .ok_or_else(|| format!("no bridge named '{name}'"))
    }

    fn port_idx(&self, name: &str) -> Result<usize, String> {
        self.ports
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.cfg.name == name))
            .ok_or_else(|| format!("no port named '{name}'"))
    }

    fn bridge(&mut self, name: &str) -> Result<&mut Bridge, String> {
        let i = self.bridge_idx(name)?;
        Ok(self.bridges[i].as_mut().expect("index from bridge_idx"))
    }

    /// Executes one control request.
    pub fn handle(&mut self, req: Request) -> Result<Value, String> {
        match req {
            Request::Ping => Ok(json!({"version": env!("CARGO_PKG_VERSION")})),
            Request::AddBr {
                name,
                stp,
                ageing_s,
                fdb_max,
            } => {
                check_name("bridge", &name)?;
                if self.bridge_idx(&name).is_ok() {
                    return Err(format!("bridge '{name}' already exists"));
                }
                if stp {
                    return Err("STP is not implemented yet".into());
                }
                let ageing_s = ageing_s.unwrap_or(crate::bridge::DEFAULT_AGEING_S);
                check_ageing(ageing_s)?;
                let settings = BridgeSettings {
                    stp,
                    ageing_s,
                    fdb_max: fdb_max.filter(|&m| m > 0),
                };
                let slot = match self.bridges.iter().position(Option::is_none) {
                    Some(i) => i,
                    None if self.bridges.len() < MAX_BRIDGES => {
                        self.bridges.push(None);
                        self.bridges.len() - 1
                    }
                    None => return Err(format!("too many bridges (limit {MAX_BRIDGES})")),
                };
                self.bridges[slot] = Some(Bridge::new(&name, settings));
                tracing::info!(bridge = %name, "bridge added");
                Ok(Value::Null)
            }
            Request::DelBr { name } => {
                let i = self.bridge_idx(&name)?;
                let ports = self.bridges[i]
                    .as_ref()
                    .map(|b| b.ports.clone())
                    .unwrap_or_default();
                for p in ports {
                    self.remove_port(p);
                }
                self.bridges[i] = None;
                tracing::info!(bridge = %name, "bridge deleted");
                Ok(Value::Null)
            }
            Request::SetBr {
                name,
                ageing_s,
                fdb_max,
            } => {
                if let Some(a) = ageing_s {
                    check_ageing(a)?;
                }
                let b = self.bridge(&name)?;
                if let Some(a) = ageing_s {
                    b.set_ageing(a);
                }
                if let Some(m) = fdb_max {
                    b.set_fdb_max(Some(m).filter(|&m| m > 0));
                }
                Ok(Value::Null)
            }
            Request::ListBr => Ok(Value::Array(
                self.bridges
                    .iter()
                    .flatten()
                    .map(|b| self.bridge_json(b, false))
                    .collect(),
            )),
            Request::AddPort { bridge, port } => self.add_port(&bridge, port),
            Request::DelPort { name } => {
                let p = self.port_idx(&name)?;
                self.remove_port(p as PortId);
                Ok(Value::Null)
            }
            Request::SetPort {
                name,
                access_vlan,
                trunk_vlans,
                native_vlan,
                isolated,
                learning,
            } => {
                let p = self.port_idx(&name)?;
                let slot = self.ports[p].as_ref().expect("index from port_idx");
                let mut cfg = slot.cfg.clone();
                match (access_vlan, trunk_vlans) {
                    (Some(_), Some(_)) => {
                        return Err("give either --access or --trunk, not both".into())
                    }
                    (Some(a), None) => {
                        if native_vlan.is_some() {
                            return Err("--native applies to trunk ports".into());
                        }
                        cfg.access_vlan = Some(a);
                        cfg.trunk_vlans = None;
                        cfg.native_vlan = None;
                    }
                    (None, Some(t)) => {
                        cfg.access_vlan = None;
                        cfg.trunk_vlans = Some(t);
                        cfg.native_vlan = native_vlan;
                    }
                    (None, None) => {
                        if native_vlan.is_some() {
                            if cfg.trunk_vlans.is_none() {
                                return Err(format!(
                                    "port '{name}' is not a trunk: give --trunk with --native"
                                ));
                            }
                            cfg.native_vlan = native_vlan;
                        }
                    }
                }
                if let Some(i) = isolated {
                    cfg.isolated = i;
                }
                if let Some(l) = learning {
                    cfg.learning = l;
                }
                let member = cfg.member()?;
                let bi = slot.bridge;
                if let Some(b) = self.bridges[bi].as_mut() {
                    b.set_member(p as PortId, member);
                }
                self.ports[p].as_mut().expect("index").cfg = cfg;
                Ok(Value::Null)
            }
            Request::ListPorts { bridge } => {
                let filter = match bridge {
                    Some(b) => Some(self.bridge_idx(&b)?),
                    None => None,
                };
                let mut out = Vec::new();
                for b in self.bridges.iter().enumerate() {
                    let (bi, Some(br)) = b else { continue };
                    if filter.is_some_and(|f| f != bi) {
                        continue;
                    }
                    for &pid in &br.ports {
                        out.push(self.port_json(pid));
                    }
                }
                Ok(Value::Array(out))
            }
            Request::FdbShow { bridge } => {
                let now = self.now_ns();
                let b = self.bridges[self.bridge_idx(&bridge)?]
                    .as_ref()
                    .expect("index");
                let list = b
                    .fdb
                    .entries(now)
                    .into_iter()
                    .map(|(vlan, mac, e)| {
                        let age = if e.is_static {
                            0
                        } else {
                            now.saturating_sub(e.last_seen_ns) / 1_000_000_000
                        };
                        json!({
                            "mac": mac.to_string(),
                            "vlan": vlan,
                            "port": self.port_name(e.port),
                            "type": if e.is_static { "static" } else { "dynamic" },
                            "age_s": age,
                        })
                    })
                    .collect();
                Ok(Value::Array(list))
            }
            Request::FdbAdd {
                bridge,
                mac,
                port,
                vlan,
            } => {
                if !mac.is_valid_station() {
                    return Err(format!("{mac} is not a unicast station address"));
                }
                let bi = self.bridge_idx(&bridge)?;
                let pi = self.port_idx(&port)?;
                if self.ports[pi].as_ref().map(|s| s.bridge) != Some(bi) {
                    return Err(format!("port '{port}' is not on bridge '{bridge}'"));
                }
                let b = self.bridges[bi].as_mut().expect("index");
                let m = b.member(pi as PortId).cloned().unwrap_or_default();
                // Without --vlan: the port's untagged VLAN (1 by default).
                let vlan = match vlan {
                    Some(v) => check_vlan(v)?,
                    None => m.vlan.untagged_vid().ok_or_else(|| {
                        format!("port '{port}' has no untagged VLAN: give --vlan")
                    })?,
                };
                if m.vlan.egress_tagged(vlan).is_none() {
                    return Err(format!("port '{port}' does not carry VLAN {vlan}"));
                }
                b.fdb
                    .add_static(vlan, mac, pi as PortId)
                    .map_err(|e| e.to_string())?;
                Ok(Value::Null)
            }
            Request::FdbDel { bridge, mac, vlan } => {
                let b = self.bridge(&bridge)?;
                let removed = match vlan {
                    Some(v) => {
                        let v = check_vlan(v)?;
                        usize::from(b.fdb.remove(v, mac).is_some())
                    }
                    None => b.fdb.remove_mac(mac),
                };
                if removed == 0 {
                    return Err(format!("no FDB entry for {mac} on bridge '{bridge}'"));
                }
                Ok(Value::Null)
            }
            Request::FdbFlush { bridge, port } => {
                let bi = self.bridge_idx(&bridge)?;
                let pid = match port {
                    Some(p) => {
                        let pi = self.port_idx(&p)?;
                        if self.ports[pi].as_ref().map(|s| s.bridge) != Some(bi) {
                            return Err(format!("port '{p}' is not on bridge '{bridge}'"));
                        }
                        Some(pi as PortId)
                    }
                    None => None,
                };
                let n = self.bridges[bi]
                    .as_mut()
                    .expect("index")
                    .fdb
                    .flush_dynamic(pid);
                Ok(json!({"flushed": n}))
            }
            Request::Stats { port } => {
                let list: Vec<PortId> = match port {
                    Some(p) => vec![self.port_idx(&p)? as PortId],
                    None => self.ports_in_order(),
                };
                Ok(Value::Array(
                    list.into_iter()
                        .map(|pid| self.stats[pid as usize].to_json(&self.port_name(pid)))
                        .collect(),
                ))
            }
            Request::Show => Ok(json!({
                "bridges": self.bridges.iter().flatten().map(|b| self.bridge_json(b, true)).collect::<Vec<_>>(),
                "rifs": [],
                "routes": [],
                "snat": [],
            })),
            Request::GetConfig => {
                serde_json::to_value(self.running_config()).map_err(|e| e.to_string())
            }
            Request::Save { .. } => Err("save is handled by the control server".into()),
        }
    }

    fn add_port(&mut self, bridge: &str, cfg: PortConfig) -> Result<Value, String> {
        check_name("port", &cfg.name)?;
        let bi = self.bridge_idx(bridge)?;
        if self.port_idx(&cfg.name).is_ok() {
            return Err(format!("port name '{}' is already in use", cfg.name));
        }
        if let Some(ifn) = &cfg.ifname {
            if !sys::valid_ifname(ifn) {
                return Err(format!(
                    "invalid interface name '{ifn}' (1-15 characters, no '/', ':' or spaces)"
                ));
            }
        }
        if let Some(m) = cfg.mtu {
            if !(68..=65535).contains(&m) {
                return Err(format!("MTU {m} out of range (68-65535)"));
            }
        }
        if let Some(m) = cfg.mac {
            if !m.is_valid_station() {
                return Err(format!("{m} is not a unicast station address"));
            }
        }
        // An interface can be attached once.
        let ifname = cfg.ifname().to_string();
        if cfg.netns.is_none()
            && self
                .ports
                .iter()
                .flatten()
                .any(|p| p.cfg.netns.is_none() && p.ifname == ifname)
        {
            return Err(format!("interface '{ifname}' is already attached"));
        }
        let member = cfg.member()?;
        let slot_idx = match self.ports.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.ports.len() < MAX_PORTS => {
                self.ports.push(None);
                self.up.push(false);
                self.stats.push(PortStats::default());
                self.txq.push(Vec::with_capacity(BATCH));
                self.ports.len() - 1
            }
            None => return Err(format!("too many ports (limit {MAX_PORTS})")),
        };
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
                if cfg.netns.is_some() || cfg.mac.is_some() || cfg.mtu.is_some() {
                    return Err("afpacket ports attach an existing interface in the daemon's namespace: --netns, --mac and --mtu do not apply".into());
                }
                let a = AfPacketPort::open(&ifname).map_err(|e| e.to_string())?;
                (
                    AnyPort::AfPacket(a),
                    false,
                    sys::get_mac(&ifname).ok(),
                    sys::get_mtu(&ifname).ok(),
                )
            }
        };
        let fd = io.fd();
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), Token(slot_idx), Interest::READABLE)
            .map_err(|e| format!("registering port with the poller: {e}"))?;
        tracing::info!(port = %cfg.name, bridge, ifname = %ifname, created, "port added");
        self.ports[slot_idx] = Some(PortSlot {
            cfg,
            bridge: bi,
            io,
            ifname,
            created,
            mac,
            mtu,
            queued: true,
        });
        self.up[slot_idx] = true;
        self.stats[slot_idx] = PortStats::default();
        // Frames may already be waiting (edge-triggered poll): look once.
        self.ready.push_back(slot_idx as PortId);
        self.bridges[bi]
            .as_mut()
            .expect("index")
            .add_port(slot_idx as PortId, member);
        Ok(Value::Null)
    }

    fn port_name(&self, pid: PortId) -> String {
        self.ports
            .get(pid as usize)
            .and_then(|p| p.as_ref())
            .map(|p| p.cfg.name.clone())
            .unwrap_or_default()
    }

    fn ports_in_order(&self) -> Vec<PortId> {
        self.bridges
            .iter()
            .flatten()
            .flat_map(|b| b.ports.iter().copied())
            .collect()
    }

    fn port_json(&self, pid: PortId) -> Value {
        let Some(s) = self.ports[pid as usize].as_ref() else {
            return Value::Null;
        };
        let br = self.bridges[s.bridge].as_ref();
        let bridge = br.map(|b| b.name.as_str());
        let member = br.and_then(|b| b.member(pid)).cloned().unwrap_or_default();
        let (mode, access, trunk, native) = match &member.vlan {
            VlanMode::Access(a) => ("access", Some(*a), Vec::new(), None),
            VlanMode::Trunk { vlans, native } => ("trunk", None, vlans.iter().collect(), *native),
        };
        json!({
            "name": s.cfg.name,
            "bridge": bridge,
            "type": s.cfg.kind.name(),
            "ifname": s.ifname,
            "netns": s.cfg.netns,
            "up": self.up[pid as usize],
            "vlan_mode": mode,
            "access_vlan": access,
            "trunk_vlans": trunk,
            "native_vlan": native,
            "isolated": member.isolated,
            "learning": member.learning,
            "mac": s.mac.map(|m| m.to_string()),
            "mtu": s.mtu,
            "created": s.created,
        })
    }

    fn bridge_json(&self, b: &Bridge, with_ports: bool) -> Value {
        let ports: Vec<Value> = if with_ports {
            b.ports.iter().map(|&p| self.port_json(p)).collect()
        } else {
            b.ports
                .iter()
                .map(|&p| Value::String(self.port_name(p)))
                .collect()
        };
        json!({
            "name": b.name,
            "stp": b.settings.stp,
            "ageing_s": b.settings.ageing_s,
            "fdb_max": b.settings.fdb_max,
            "fdb_entries": b.fdb.len(),
            "ports": ports,
        })
    }

    /// The running configuration, in the model `--config` reads.
    pub fn running_config(&self) -> Config {
        let bridges = self
            .bridges
            .iter()
            .flatten()
            .map(|b| {
                let mut c = BridgeConfig::new(&b.name);
                c.stp = b.settings.stp;
                c.ageing_s = b.settings.ageing_s;
                c.fdb_max = b.settings.fdb_max;
                c.ports = b
                    .ports
                    .iter()
                    .filter_map(|&p| self.ports[p as usize].as_ref().map(|s| s.cfg.clone()))
                    .collect();
                c.fdb = b
                    .fdb
                    .entries(0)
                    .into_iter()
                    .filter(|(_, _, e)| e.is_static)
                    .map(|(vlan, mac, e)| StaticFdbConfig {
                        mac,
                        port: self.port_name(e.port),
                        vlan: (vlan != DEFAULT_VLAN).then_some(vlan),
                    })
                    .collect();
                c
            })
            .collect();
        Config { bridges }
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
