//! The tables the workers share: bridges (with their FDBs) and ports. Held
//! behind one mutex that a worker takes once per batch, for the decisions
//! only (the I/O runs outside it), and the control side takes per request.

use super::{check_ageing, check_name, check_vlan, MAX_BRIDGES};
use crate::api::{Request, StpParams};
use crate::bridge::stp::StpSettings;
use crate::bridge::vlan::VlanMode;
use crate::bridge::{Bridge, BridgeSettings, PortId, DEFAULT_VLAN};
use crate::config::{BridgeConfig, Config, PortConfig, StaticFdbConfig};
use crate::pipeline::{Attach, Switch};
use crate::port::AnyPort;
use crate::router::Router;
use crate::MacAddr;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// One port as the tables know it. Router interfaces have one too (an
/// internal port on their bridge, or their TUN device), named like the
/// interface, so they have counters and a place in the forwarding tables;
/// `cfg` of those is only a name holder (they are listed and saved as
/// router interfaces, not ports).
pub(crate) struct PortEntry {
    pub cfg: PortConfig,
    pub io: Arc<AnyPort>,
    /// Interface name where the device lives.
    pub ifname: String,
    /// The daemon created the device (and removes it with the port).
    pub created: bool,
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    /// The worker that receives on it.
    pub worker: usize,
}

pub(crate) struct Tables {
    pub bridges: Vec<Option<Bridge>>,
    pub ports: Vec<Option<PortEntry>>,
    /// What each port is attached to, by PortId.
    pub attach: Vec<Attach>,
    /// Operational state by PortId, read on the fast path.
    pub up: Vec<bool>,
    /// The router's tables, under a lock of their own: workers route and
    /// translate without holding this struct's lock (see
    /// [`crate::pipeline`]). Lock order: these tables first, then the
    /// router.
    pub router: Arc<Mutex<Router>>,
    pub clock: Instant,
}

impl Tables {
    pub fn new(clock: Instant, router: Arc<Mutex<Router>>) -> Tables {
        Tables {
            bridges: Vec::new(),
            ports: Vec::new(),
            attach: Vec::new(),
            up: Vec::new(),
            router,
            clock,
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    pub(crate) fn bridge_idx(&self, name: &str) -> Result<usize, String> {
        self.bridges
            .iter()
            .position(|b| b.as_ref().is_some_and(|b| b.name == name))
            .ok_or_else(|| format!("no bridge named '{name}'"))
    }

    pub(crate) fn port_idx(&self, name: &str) -> Result<usize, String> {
        self.ports
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.cfg.name == name))
            .ok_or_else(|| format!("no port named '{name}'"))
    }

    pub(crate) fn bridge(&mut self, name: &str) -> Result<&mut Bridge, String> {
        let i = self.bridge_idx(name)?;
        Ok(self.bridges[i].as_mut().expect("index from bridge_idx"))
    }

    /// Executes a control request that only touches the tables.
    pub(crate) fn handle(&mut self, req: Request) -> Result<Value, String> {
        match req {
            Request::Ping => Ok(json!({"version": env!("CARGO_PKG_VERSION")})),
            Request::AddBr {
                name,
                stp,
                ageing_s,
                fdb_max,
                priority,
                hello_s,
                max_age_s,
                forward_delay_s,
            } => {
                check_name("bridge", &name)?;
                if self.bridge_idx(&name).is_ok() {
                    return Err(format!("bridge '{name}' already exists"));
                }
                let ageing_s = ageing_s.unwrap_or(crate::bridge::DEFAULT_AGEING_S);
                check_ageing(ageing_s)?;
                let stp_params = StpParams {
                    priority,
                    hello_s,
                    max_age_s,
                    forward_delay_s,
                }
                .apply(StpSettings::default())?;
                let settings = BridgeSettings {
                    stp: false,
                    ageing_s,
                    fdb_max: fdb_max.filter(|&m| m > 0),
                    stp_params,
                    group_fwd_mask: 0,
                };
                let slot = match self.bridges.iter().position(Option::is_none) {
                    Some(i) => i,
                    None if self.bridges.len() < MAX_BRIDGES => {
                        self.bridges.push(None);
                        self.bridges.len() - 1
                    }
                    None => return Err(format!("too many bridges (limit {MAX_BRIDGES})")),
                };
                let mut br = Bridge::new(&name, settings);
                if stp {
                    br.set_stp(true, self.now_ns());
                }
                self.bridges[slot] = Some(br);
                tracing::info!(bridge = %name, stp, "bridge added");
                Ok(Value::Null)
            }
            Request::SetBr {
                name,
                ageing_s,
                fdb_max,
                stp,
                priority,
                hello_s,
                max_age_s,
                forward_delay_s,
                group_fwd_mask,
            } => {
                if let Some(a) = ageing_s {
                    check_ageing(a)?;
                }
                if let Some(m) = group_fwd_mask {
                    if m & crate::bridge::GROUP_FWD_RESTRICTED != 0 {
                        return Err(format!(
                            "group_fwd_mask {m:#06x}: bits 0 (STP, governed by spanning tree) and 1 (pause) cannot be relayed"
                        ));
                    }
                }
                let now = self.now_ns();
                let b = self.bridge(&name)?;
                let params = StpParams {
                    priority,
                    hello_s,
                    max_age_s,
                    forward_delay_s,
                };
                let new_params = params.apply(b.settings.stp_params)?;
                if let Some(a) = ageing_s {
                    b.set_ageing(a);
                }
                if let Some(m) = fdb_max {
                    b.set_fdb_max(Some(m).filter(|&m| m > 0));
                }
                if !params.is_empty() {
                    b.set_stp_params(new_params, now);
                }
                if let Some(on) = stp {
                    b.set_stp(on, now);
                }
                if let Some(m) = group_fwd_mask {
                    b.settings.group_fwd_mask = m;
                }
                Ok(Value::Null)
            }
            Request::StpShow { bridge } => {
                let b = self.bridges[self.bridge_idx(&bridge)?]
                    .as_ref()
                    .expect("index");
                let Some(stp) = b.stp.as_ref() else {
                    return Err(format!(
                        "spanning tree is off on bridge '{bridge}' (turn it on with set-br {bridge} --stp on)"
                    ));
                };
                let st = stp.status();
                let p = b.settings.stp_params;
                Ok(json!({
                    "bridge_id": st.bridge_id,
                    "root_id": st.root_id,
                    "root_port": st.root_port.map(|r| self.port_name(r)),
                    "root_path_cost": st.root_path_cost,
                    "topology_change": st.topology_change,
                    "priority": p.priority,
                    "hello_s": p.hello_s,
                    "max_age_s": p.max_age_s,
                    "forward_delay_s": p.forward_delay_s,
                    "ports": b.ports.iter().map(|&pid| {
                        let ps = st.ports.iter().find(|x| x.port == pid);
                        let guard = b.is_guard_tripped(pid);
                        json!({
                            "name": self.port_name(pid),
                            "role": if guard { "disabled" } else { ps.map_or("disabled", |x| x.role.name()) },
                            "state": if guard { "disabled" } else { ps.map_or("disabled", |x| x.state.name()) },
                            "cost": ps.map_or_else(|| b.member(pid).map_or(0, |m| m.stp_cost), |x| x.cost),
                            "priority": ps.map_or(0, |x| x.priority),
                            "designated_bridge": ps.map(|x| x.designated_bridge.clone()),
                            "bpdu_guard_tripped": guard,
                        })
                    }).collect::<Vec<_>>(),
                }))
            }
            Request::ListBr => Ok(Value::Array(
                self.bridges
                    .iter()
                    .flatten()
                    .map(|b| self.bridge_json(b, false))
                    .collect(),
            )),
            Request::SetPort {
                name,
                access_vlan,
                trunk_vlans,
                native_vlan,
                isolated,
                learning,
                mac_limit,
                bpdu_guard,
                stp_cost,
                stp_priority,
                remote_add,
                remote_del,
                storm_limit,
                delay_ms,
                jitter_ms,
                loss_ppm,
                rate_bps,
                limit,
            } => {
                let p = self.port_idx(&name)?;
                let Attach::Bridge(bi) = self.attach[p] else {
                    return Err(format!("'{name}' is a router interface, not a bridge port"));
                };
                let slot = self.ports[p].as_ref().expect("index from port_idx");
                let mut cfg = slot.cfg.clone();
                let vlans_change =
                    access_vlan.is_some() || trunk_vlans.is_some() || native_vlan.is_some();
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
                if let Some(l) = mac_limit {
                    cfg.mac_limit = Some(l).filter(|&l| l > 0);
                }
                if let Some(g) = bpdu_guard {
                    cfg.bpdu_guard = g;
                }
                if stp_cost.is_some() {
                    cfg.stp_cost = stp_cost;
                }
                if stp_priority.is_some() {
                    cfg.stp_priority = stp_priority;
                }
                if let Some(l) = storm_limit {
                    cfg.storm_limit = Some(l).filter(|&l| l > 0);
                }
                if loss_ppm.is_some_and(|l| l > 1_000_000) {
                    return Err("--loss is at most 100 %".into());
                }
                if limit == Some(0) || limit.is_some_and(|l| l > 100_000) {
                    return Err("--limit is 1-100000 frames".into());
                }
                let nz32 =
                    |v: Option<u32>, cur: Option<u32>| v.map_or(cur, |v| (v > 0).then_some(v));
                cfg.delay_ms = nz32(delay_ms, cfg.delay_ms);
                cfg.jitter_ms = nz32(jitter_ms, cfg.jitter_ms);
                cfg.loss_ppm = nz32(loss_ppm, cfg.loss_ppm);
                cfg.limit = limit.or(cfg.limit);
                cfg.rate_bps = rate_bps.map_or(cfg.rate_bps, |v| (v > 0).then_some(v));
                let member = cfg.member()?;
                let io = self.ports[p].as_ref().expect("index").io.clone();
                let vx = match &*io {
                    AnyPort::Vxlan(x) => Some(x),
                    _ => None,
                };
                let mut gone_peers = Vec::new();
                if !remote_add.is_empty() || !remote_del.is_empty() {
                    let Some(vx) = vx else {
                        return Err(format!(
                            "--remote-add and --remote-del are for vxlan ports; '{name}' is a {} port",
                            cfg.kind.name()
                        ));
                    };
                    let local = vx.local().ip();
                    for r in &remote_add {
                        crate::config::check_remote(local, *r)?;
                    }
                    let kept = cfg.remotes.len()
                        - cfg
                            .remotes
                            .iter()
                            .filter(|r| remote_del.contains(r))
                            .count();
                    let new = remote_add
                        .iter()
                        .filter(|r| !cfg.remotes.contains(r) || remote_del.contains(r))
                        .count();
                    if kept + new > crate::config::MAX_REMOTES {
                        return Err(format!(
                            "too many remotes (limit {})",
                            crate::config::MAX_REMOTES
                        ));
                    }
                    gone_peers = vx.change_remotes(&remote_add, &remote_del)?;
                    cfg.remotes.retain(|r| !remote_del.contains(r));
                    for r in &remote_add {
                        if !cfg.remotes.contains(r) {
                            cfg.remotes.push(*r);
                        }
                    }
                }
                let now = self.now_ns();
                let mut stranded = Vec::new();
                if let Some(b) = self.bridges[bi].as_mut() {
                    // Static entries in VLANs the port no longer carries
                    // would make `save` write a file the daemon refuses:
                    // they go, and the reply says which.
                    let statics = if vlans_change {
                        b.fdb.entries_unsorted(now)
                    } else {
                        Vec::new()
                    };
                    for (vlan, mac, e) in statics {
                        if e.is_static
                            && e.port == p as PortId
                            && member.vlan.egress_tagged(vlan).is_none()
                        {
                            b.fdb.remove(vlan, mac);
                            stranded.push(json!({"mac": mac.to_string(), "vlan": vlan}));
                        }
                    }
                    b.set_member(p as PortId, member);
                    if bpdu_guard.is_some() {
                        b.clear_guard(p as PortId, now);
                    }
                    // What was learned behind a remote taken off goes with it.
                    for peer in gone_peers {
                        b.fdb.flush_peer(p as PortId, peer);
                    }
                }
                self.ports[p].as_mut().expect("index").cfg = cfg;
                if stranded.is_empty() {
                    Ok(Value::Null)
                } else {
                    Ok(json!({ "removed_static": stranded }))
                }
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
                        if self.attach[pid as usize] == Attach::Bridge(bi) {
                            out.push(self.port_json(pid));
                        }
                    }
                }
                Ok(Value::Array(out))
            }
            Request::FdbAdd {
                bridge,
                mac,
                port,
                vlan,
                vtep,
            } => {
                if !mac.is_valid_station() {
                    return Err(format!("{mac} is not a unicast station address"));
                }
                let bi = self.bridge_idx(&bridge)?;
                let pi = self.port_idx(&port)?;
                if self.attach[pi] != Attach::Bridge(bi) {
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
                let peer = match (vtep, &*self.ports[pi].as_ref().expect("index").io) {
                    (None, _) => 0,
                    (Some(ip), AnyPort::Vxlan(x)) => {
                        crate::config::check_remote(x.local().ip(), ip)?;
                        x.static_remote(ip)?
                    }
                    (Some(_), _) => {
                        return Err(format!("--vtep is for vxlan ports; '{port}' is not one"))
                    }
                };
                let b = self.bridges[bi].as_mut().expect("index");
                b.fdb
                    .add_static_via(vlan, mac, pi as PortId, peer)
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
                        if self.attach[pi] != Attach::Bridge(bi) {
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
            Request::Show => Ok(json!({
                "bridges": self.bridges.iter().flatten().map(|b| self.bridge_json(b, true)).collect::<Vec<_>>(),
                "rifs": self.rif_json(),
                "routes": self.route_json(),
                "snat": self.snat_json(),
                "dnat": self.dnat_json(),
            })),
            Request::GetConfig => {
                serde_json::to_value(self.running_config()).map_err(|e| e.to_string())
            }
            Request::Save { .. } => Err("save is handled by the control server".into()),
            Request::AddRoute { route } => {
                self.router().add_route(route)?;
                Ok(Value::Null)
            }
            Request::DelRoute { prefix } => {
                self.router().del_route(prefix)?;
                Ok(Value::Null)
            }
            Request::AddSnat { snat } => {
                if let Some(p) = snat.src {
                    if p.addr != p.network() {
                        return Err(format!(
                            "--src {p} has host bits set (the prefix is {}/{})",
                            p.network(),
                            p.len
                        ));
                    }
                }
                self.router().add_snat(snat)?;
                Ok(Value::Null)
            }
            Request::DelSnat { out } => {
                let flows = self.router().del_snat(&out)?;
                Ok(json!({"flows_removed": flows}))
            }
            Request::SetRouter { nat_max_flows } => {
                if let Some(n) = nat_max_flows {
                    if n == 0 {
                        return Err("--nat-max-flows must be at least 1".into());
                    }
                    self.router().nat.set_max_conns(n as usize);
                }
                Ok(Value::Null)
            }
            Request::RifShow => Ok(self.rif_json()),
            Request::RouteShow => Ok(self.route_json()),
            Request::SnatShow => Ok(self.snat_json()),
            Request::AddDnat { dnat } => {
                let now = self.now_ns();
                self.router().add_dnat(dnat, now)?;
                Ok(Value::Null)
            }
            Request::DelDnat {
                in_rif,
                proto,
                port,
            } => {
                let flows = self.router().del_dnat(&in_rif, &proto, port)?;
                Ok(json!({"flows_removed": flows}))
            }
            Request::DnatShow => Ok(self.dnat_json()),
            Request::ArpShow => {
                let now = self.now_ns();
                let router = self.router();
                let mut rows = router.neigh.entries(now);
                rows.sort_by_key(|r| (r.rif, r.ip));
                Ok(Value::Array(
                    rows.iter()
                        .map(|r| {
                            json!({
                                "ip": std::net::Ipv4Addr::from(r.ip).to_string(),
                                "mac": r.mac.map(|m| m.to_string()),
                                "rif": router.rif(r.rif).map(|x| x.name.clone()),
                                "state": r.state.name(),
                                "age_s": r.age_s,
                            })
                        })
                        .collect(),
                ))
            }
            Request::NatShow => {
                let now = self.now_ns();
                let mut rows: Vec<_> = self.router().nat.conns(now).collect();
                rows.sort_by_key(|c| {
                    (
                        c.proto,
                        c.inside.ip,
                        c.inside.port,
                        c.remote.ip,
                        c.remote.port,
                    )
                });
                Ok(Value::Array(
                    rows.iter()
                        .map(|c| {
                            json!({
                                "proto": c.proto,
                                "inside": c.inside.to_string(),
                                "outside": c.outside.to_string(),
                                "remote": c.remote.to_string(),
                                "state": c.state.name(),
                                "expires_s": c.expires_s,
                            })
                        })
                        .collect(),
                ))
            }
            Request::AddRif { .. } | Request::DelRif { .. } => {
                Err("handled by the engine handle".into())
            }
            Request::AddPort { .. }
            | Request::DelPort { .. }
            | Request::DelBr { .. }
            | Request::Stats { .. }
            | Request::FdbShow { .. } => Err("handled by the engine handle".into()),
            Request::Monitor { .. } | Request::TraceLive { .. } | Request::Capture { .. } => {
                Err("handled by the control server".into())
            }
            Request::Trace {
                bridge,
                port,
                frame,
            } => self.trace(&bridge, &port, &frame),
        }
    }

    pub(crate) fn port_name(&self, pid: PortId) -> String {
        self.ports
            .get(pid as usize)
            .and_then(|p| p.as_ref())
            .map(|p| p.cfg.name.clone())
            .unwrap_or_default()
    }

    /// A copy of a bridge's FDB, taken quickly under the lock; sorting and
    /// formatting happen after it is released (at 1 M entries that takes
    /// seconds, which the workers must not wait for).
    pub(crate) fn fdb_snapshot(&self, bridge: &str) -> Result<FdbSnapshot, String> {
        let b = self.bridges[self.bridge_idx(bridge)?]
            .as_ref()
            .expect("index");
        let now = self.now_ns();
        let mut ports: Vec<(String, Option<Arc<AnyPort>>)> = Vec::with_capacity(self.ports.len());
        for p in &self.ports {
            ports.push(match p {
                Some(e) => (
                    e.cfg.name.clone(),
                    matches!(*e.io, AnyPort::Vxlan(_)).then(|| e.io.clone()),
                ),
                None => (String::new(), None),
            });
        }
        Ok(FdbSnapshot {
            entries: b.fdb.entries_unsorted(now),
            ports,
            now,
        })
    }

    /// Bridge ports bridge by bridge, then the router interfaces' ports.
    pub(crate) fn ports_in_order(&self) -> Vec<PortId> {
        let mut v: Vec<PortId> = self
            .bridges
            .iter()
            .flatten()
            .flat_map(|b| b.ports.iter().copied())
            .filter(|&p| matches!(self.attach[p as usize], Attach::Bridge(_)))
            .collect();
        v.extend(self.router().rifs().map(|(_, r)| r.pid));
        v
    }

    /// The bridging tables as the pipeline's bridge and egress phases see
    /// them.
    pub(crate) fn switch(&mut self) -> Switch<'_> {
        Switch {
            bridges: &mut self.bridges,
            attach: &self.attach,
            up: &self.up,
        }
    }

    /// The router, locked (after these tables: the lock order).
    pub(crate) fn router(&self) -> MutexGuard<'_, Router> {
        super::lock(&self.router)
    }

    fn rif_json(&self) -> Value {
        Value::Array(
            self.router()
                .rifs()
                .map(|(_, r)| {
                    let (bridge, vlan) = match r.kind {
                        crate::router::RifKind::Svi { bridge, vlan } => (
                            self.bridges
                                .get(bridge)
                                .and_then(Option::as_ref)
                                .map(|b| b.name.clone()),
                            Some(vlan),
                        ),
                        crate::router::RifKind::Tun => (None, None),
                    };
                    let tun = r.kind == crate::router::RifKind::Tun;
                    json!({
                        "name": r.name,
                        "type": r.cfg.kind.name(),
                        "bridge": bridge,
                        "vlan": vlan,
                        "addr": r.addr.to_string(),
                        "mac": (!tun).then(|| r.mac.to_string()),
                        "netns": r.cfg.netns,
                        "ifname": tun.then(|| r.cfg.ifname().to_string()),
                        "mtu": r.mtu,
                        "up": self.up.get(r.pid as usize).copied().unwrap_or(false),
                    })
                })
                .collect(),
        )
    }

    fn route_json(&self) -> Value {
        Value::Array(
            self.router()
                .route_list()
                .iter()
                .map(|r| {
                    json!({
                        "prefix": format!("{}/{}", r.prefix.addr(), r.prefix.len()),
                        "via": r.via.map(|v| v.to_string()),
                        "dev": r.dev,
                        "kind": if r.connected { "connected" } else { "static" },
                    })
                })
                .collect(),
        )
    }

    fn dnat_json(&self) -> Value {
        Value::Array(
            self.router()
                .dnat_rules()
                .map(|d| serde_json::to_value(d).unwrap_or(Value::Null))
                .collect(),
        )
    }

    fn snat_json(&self) -> Value {
        let r = self.router();
        Value::Array(
            r.snat_rules()
                .map(|s| {
                    json!({
                        "out": s.out,
                        "to": r.snat_to(&s.out),
                        "src": s.src.map(|p| p.to_string()),
                    })
                })
                .collect(),
        )
    }

    fn port_json(&self, pid: PortId) -> Value {
        let Some(s) = self.ports[pid as usize].as_ref() else {
            return Value::Null;
        };
        let br = self.attach[pid as usize]
            .bridge()
            .and_then(|b| self.bridges[b].as_ref());
        let bridge = br.map(|b| b.name.as_str());
        let member = br.and_then(|b| b.member(pid)).cloned().unwrap_or_default();
        let (mode, access, trunk, native) = match &member.vlan {
            VlanMode::Access(a) => ("access", Some(*a), Vec::new(), None),
            VlanMode::Trunk { vlans, native } => ("trunk", None, vlans.iter().collect(), *native),
        };
        let mut v = json!({
            "name": s.cfg.name,
            "bridge": bridge,
            "type": s.cfg.kind.name(),
            "ifname": (!s.ifname.is_empty()).then_some(&s.ifname),
            "netns": s.cfg.netns,
            "up": self.up[pid as usize] && !br.is_some_and(|b| b.is_guard_tripped(pid)),
            "vlan_mode": mode,
            "access_vlan": access,
            "trunk_vlans": trunk,
            "native_vlan": native,
            "isolated": member.isolated,
            "learning": member.learning,
            "mac_limit": member.mac_limit,
            "bpdu_guard": member.bpdu_guard,
            "bpdu_guard_tripped": br.is_some_and(|b| b.is_guard_tripped(pid)),
            "stp_cost": member.stp_cost,
            "stp_priority": member.stp_priority,
            "storm_limit": member.storm_limit,
            "delay_ms": s.cfg.delay_ms,
            "jitter_ms": s.cfg.jitter_ms,
            "loss_pct": s.cfg.loss_ppm.map(|p| f64::from(p) / 10_000.0),
            "rate_bps": s.cfg.rate_bps,
            "limit": s.cfg.limit,
            "fdb_entries": br.map_or(0, |b| b.fdb.port_len(pid)),
            "mac": s.mac.map(|m| m.to_string()),
            "mtu": s.mtu,
            "created": s.created,
        });
        if let crate::port::AnyPort::VhostUser(x) = &*s.io {
            v["path"] = json!(x.path().display().to_string());
            v["mode"] = json!(x.mode().name());
            v["connected"] = json!(x.connected());
            v["bad_descriptors"] = json!(x.bad_descriptors());
            v["lost_notifications"] = json!(x.lost_notifications());
            let (kicks, interrupts) = x.notifications();
            v["kicks"] = json!(kicks);
            v["interrupts"] = json!(interrupts);
            if !x.connected() {
                v["down_reason"] = json!("no guest connected");
            }
        }
        if let crate::port::AnyPort::Vxlan(x) = &*s.io {
            let c = &s.cfg;
            v["vni"] = json!(c.vni);
            v["local"] = json!(c.local);
            v["remotes"] = json!(x.flood_remotes());
            v["dstport"] = json!(c.dstport.unwrap_or(crate::config::VXLAN_PORT));
            v["srcport"] = json!(c.srcport_range().to_string());
            v["source_ports"] = json!(x.source_ports());
            v["tunnel_gso"] = json!(x.tunnel_gso());
            v["vtep_learning"] = json!(c.vtep_learning);
            v["learned_remotes"] = json!(x.learned_remotes());
            if !x.local_up() {
                v["up"] = json!(false);
                v["down_reason"] = json!(format!(
                    "local address {} is not on any interface",
                    x.local().ip()
                ));
            }
        }
        v
    }

    fn bridge_json(&self, b: &Bridge, with_ports: bool) -> Value {
        let ports: Vec<Value> = if with_ports {
            b.ports
                .iter()
                .filter(|&&p| matches!(self.attach[p as usize], Attach::Bridge(_)))
                .map(|&p| self.port_json(p))
                .collect()
        } else {
            b.ports
                .iter()
                .filter(|&&p| matches!(self.attach[p as usize], Attach::Bridge(_)))
                .map(|&p| Value::String(self.port_name(p)))
                .collect()
        };
        json!({
            "name": b.name,
            "stp": b.settings.stp,
            "ageing_s": b.settings.ageing_s,
            "fdb_max": b.settings.fdb_max,
            "fdb_entries": b.fdb.len(),
            "group_fwd_mask": format!("{:#06x}", b.settings.group_fwd_mask),
            "ports": ports,
        })
    }

    /// The running configuration, in the model `--config` reads.
    pub(crate) fn running_config(&self) -> Config {
        let bridges = self
            .bridges
            .iter()
            .flatten()
            .map(|b| {
                let mut c = BridgeConfig::new(&b.name);
                c.stp = b.settings.stp;
                c.ageing_s = b.settings.ageing_s;
                c.fdb_max = b.settings.fdb_max;
                let (p, d) = (b.settings.stp_params, StpSettings::default());
                c.priority = (p.priority != d.priority).then_some(p.priority);
                c.hello_s = (p.hello_s != d.hello_s).then_some(p.hello_s);
                c.max_age_s = (p.max_age_s != d.max_age_s).then_some(p.max_age_s);
                c.forward_delay_s =
                    (p.forward_delay_s != d.forward_delay_s).then_some(p.forward_delay_s);
                c.group_fwd_mask = Some(b.settings.group_fwd_mask).filter(|&m| m != 0);
                c.ports = b
                    .ports
                    .iter()
                    .filter(|&&p| matches!(self.attach[p as usize], Attach::Bridge(_)))
                    .filter_map(|&p| self.ports[p as usize].as_ref().map(|s| s.cfg.clone()))
                    .collect();
                c.fdb = b
                    .fdb
                    .entries(0)
                    .into_iter()
                    .filter(|(_, _, e)| {
                        e.is_static && matches!(self.attach[e.port as usize], Attach::Bridge(_))
                    })
                    .map(|(vlan, mac, e)| StaticFdbConfig {
                        mac,
                        port: self.port_name(e.port),
                        vlan: (vlan != DEFAULT_VLAN).then_some(vlan),
                        vtep: match self.ports[e.port as usize].as_ref().map(|p| &*p.io) {
                            Some(AnyPort::Vxlan(x)) => x.remote(e.peer),
                            _ => None,
                        },
                    })
                    .collect();
                c
            })
            .collect();
        // One guard for the whole literal: a second lock in the same
        // statement would wait for the first forever.
        let r = self.router();
        Config {
            bridges,
            router: crate::config::RouterConfig {
                nat_max_flows: r.nat.max_conns() as u32,
            },
            rifs: r.rifs().map(|(_, x)| x.cfg.clone()).collect(),
            routes: r.static_routes().cloned().collect(),
            snat: r.snat_rules().cloned().collect(),
            dnat: r.dnat_rules().cloned().collect(),
        }
    }

    /// Checks a new port against the tables: bridge exists, names free,
    /// settings valid. Returns the bridge index, membership and interface name.
    pub(crate) fn check_new_port(
        &self,
        bridge: &str,
        cfg: &PortConfig,
    ) -> Result<(usize, crate::bridge::Member, String), String> {
        check_name("port", &cfg.name)?;
        cfg.check_kind()?;
        let bi = self.bridge_idx(bridge)?;
        if self.port_idx(&cfg.name).is_ok() {
            return Err(format!("port name '{}' is already in use", cfg.name));
        }
        if let Some(ifn) = &cfg.ifname {
            if !crate::sys::valid_ifname(ifn) {
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
        if cfg.kind == crate::config::PortType::Afpacket
            && (cfg.netns.is_some() || cfg.mac.is_some() || cfg.mtu.is_some())
        {
            return Err("afpacket ports attach an existing interface in the daemon's namespace: --netns, --mac and --mtu do not apply".into());
        }
        // An interface can be attached once.
        if let Some(path) = &cfg.path {
            if self
                .ports
                .iter()
                .flatten()
                .any(|p| p.cfg.path.as_ref() == Some(path))
            {
                return Err(format!(
                    "socket '{path}' is already used by a vhost-user port"
                ));
            }
        }
        let ifname = if matches!(
            cfg.kind,
            crate::config::PortType::Vxlan | crate::config::PortType::VhostUser
        ) {
            String::new()
        } else {
            cfg.ifname().to_string()
        };
        if cfg.netns.is_none()
            && !ifname.is_empty()
            && self
                .ports
                .iter()
                .flatten()
                .any(|p| p.cfg.netns.is_none() && p.ifname == ifname)
        {
            return Err(format!("interface '{ifname}' is already attached"));
        }
        if self.ports.iter().flatten().count() >= super::MAX_PORTS {
            return Err(format!("too many ports (limit {})", super::MAX_PORTS));
        }
        let member = cfg.member()?;
        Ok((bi, member, ifname))
    }

    /// Adds a port made after [`Tables::check_new_port`] (checked again: the
    /// lock was released while the device was set up) to bridge `bi`.
    pub(crate) fn insert_port(
        &mut self,
        entry: PortEntry,
        bi: usize,
        member: crate::bridge::Member,
    ) -> Result<PortId, String> {
        if self.bridges.get(bi).is_none_or(Option::is_none) {
            return Err("the bridge was deleted meanwhile".into());
        }
        let slot = self.insert_entry(entry, Attach::Bridge(bi))?;
        let now = self.now_ns();
        let b = self.bridges[bi].as_mut().expect("checked above");
        b.add_port(slot, member);
        b.set_port_up(slot, true, now);
        Ok(slot)
    }

    /// A VXLAN port's underlay address, or a vhost-user port's guest, came
    /// or went: the bridge takes the port up or down (no flooding to it
    /// while down).
    pub(crate) fn set_link_up(&mut self, pid: PortId, up: bool) {
        let now = self.now_ns();
        if let Some(bi) = self.attach[pid as usize].bridge() {
            if let Some(b) = self.bridges[bi].as_mut() {
                if !up {
                    b.fdb.flush_dynamic(Some(pid));
                }
                b.set_port_up(pid, up, now);
            }
        }
    }

    /// A vhost-user port's guest came or went: the port is up or down for
    /// the pipeline (no flooding to it) as well as for the bridge.
    pub(crate) fn set_guest_link(&mut self, pid: PortId, up: bool) {
        self.up[pid as usize] = up;
        self.set_link_up(pid, up);
    }

    /// The ports whose link the worker watches outside the lock: VXLAN
    /// (the underlay address) and vhost-user (a guest connected).
    pub(crate) fn link_watched_ports(&self) -> Vec<(PortId, Arc<AnyPort>)> {
        self.ports
            .iter()
            .enumerate()
            .filter_map(|(p, e)| {
                let e = e.as_ref()?;
                matches!(*e.io, AnyPort::Vxlan(_) | AnyPort::VhostUser(_))
                    .then(|| (p as PortId, e.io.clone()))
            })
            .collect()
    }

    /// Puts an entry in a free slot, attached as `attach`.
    fn insert_entry(&mut self, entry: PortEntry, attach: Attach) -> Result<PortId, String> {
        if self.port_idx(&entry.cfg.name).is_ok() {
            return Err(format!("name '{}' is already in use", entry.cfg.name));
        }
        let slot = match self.ports.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.ports.len() < super::MAX_PORTS => {
                self.ports.push(None);
                self.up.push(false);
                self.attach.push(Attach::None);
                self.ports.len() - 1
            }
            None => return Err(format!("too many ports (limit {})", super::MAX_PORTS)),
        };
        self.ports[slot] = Some(entry);
        self.up[slot] = true;
        self.attach[slot] = attach;
        Ok(slot as PortId)
    }

    /// Adds router interface `cfg` (checked) carried by `entry`: on a
    /// bridge, an internal port in the interface's VLAN with a static FDB
    /// entry for its MAC; on a TUN, the TUN port. Returns the port.
    pub(crate) fn insert_rif(
        &mut self,
        entry: PortEntry,
        cfg: crate::config::RifConfig,
        mac: MacAddr,
        mtu: u32,
    ) -> Result<PortId, String> {
        use crate::router::{Rif, RifKind};
        let kind = match cfg.kind {
            crate::config::RifType::Bridge => {
                let br = cfg.bridge.as_deref().unwrap_or_default();
                let bi = self.bridge_idx(br)?;
                RifKind::Svi {
                    bridge: bi,
                    vlan: cfg.vlan.unwrap_or(DEFAULT_VLAN),
                }
            }
            crate::config::RifType::Tun => RifKind::Tun,
        };
        self.router().check_addr(cfg.addr)?;
        let pid = self.insert_entry(entry, Attach::None)?;
        let rif = Rif {
            name: cfg.name.clone(),
            kind,
            addr: cfg.addr,
            mac,
            mtu,
            pid,
            cfg,
        };
        let added = self.router().add_rif(rif);
        let id = match added {
            Ok(id) => id,
            Err(e) => {
                self.ports[pid as usize] = None;
                self.up[pid as usize] = false;
                return Err(e);
            }
        };
        match kind {
            RifKind::Svi { bridge, vlan } => {
                self.attach[pid as usize] = Attach::Svi { bridge, rif: id };
                let now = self.now_ns();
                let b = self.bridges[bridge]
                    .as_mut()
                    .expect("index from bridge_idx");
                b.add_port(pid, crate::bridge::Member::internal(vlan));
                b.set_port_up(pid, true, now);
                if let Err(e) = b.fdb.add_static(vlan, mac, pid) {
                    tracing::warn!(rif = %self.port_name(pid), "no static FDB entry for the interface: {e}");
                }
            }
            RifKind::Tun => self.attach[pid as usize] = Attach::Tun(id),
        }
        Ok(pid)
    }

    /// Takes a port out of its bridge (and the router, for an interface's
    /// port) and the tables.
    pub(crate) fn remove_port(&mut self, pid: PortId) -> Option<PortEntry> {
        let p = pid as usize;
        let e = self.ports.get_mut(p)?.take()?;
        self.up[p] = false;
        if let AnyPort::Vxlan(x) = &*e.io {
            // At once, under this lock: the PortId may be reused before the
            // last reference to the port goes.
            x.detach();
        }
        let a = std::mem::take(&mut self.attach[p]);
        if let Some(b) = a.bridge().and_then(|b| self.bridges[b].as_mut()) {
            b.remove_port(pid);
        }
        if let Some(rif) = a.rif() {
            self.router().del_rif(rif);
        }
        Some(e)
    }
}

/// An FDB copied out of the tables (see [`Tables::fdb_snapshot`]).
pub(crate) struct FdbSnapshot {
    entries: Vec<(u16, MacAddr, crate::bridge::FdbEntry)>,
    /// Port names by PortId, and the VXLAN ports (for the VTEP column).
    ports: Vec<(String, Option<Arc<AnyPort>>)>,
    now: u64,
}

/// One `fdb-show` line, serialized as the interface says.
#[derive(serde::Serialize)]
pub struct FdbRow<'a> {
    pub mac: MacAddr,
    pub vlan: u16,
    pub port: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub age_s: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vtep: Option<std::net::IpAddr>,
}

impl FdbSnapshot {
    /// The entries sorted by VLAN and MAC, as `fdb-show` rows.
    pub(crate) fn rows(mut self) -> FdbRows {
        self.entries
            .sort_unstable_by_key(|(vlan, mac, _)| (*vlan, *mac));
        FdbRows(self)
    }
}

/// The sorted rows of an [`FdbSnapshot`]; serializes as a JSON array without
/// building a `Value` per entry.
pub struct FdbRows(FdbSnapshot);

impl serde::Serialize for FdbRows {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let snap = &self.0;
        let mut seq = s.serialize_seq(Some(snap.entries.len()))?;
        for (vlan, mac, e) in &snap.entries {
            let (port, io) = snap
                .ports
                .get(e.port as usize)
                .map_or(("", None), |(n, io)| (n.as_str(), io.as_ref()));
            let vtep = match io.map(|io| &**io) {
                Some(AnyPort::Vxlan(x)) => x.remote(e.peer),
                _ => None,
            };
            seq.serialize_element(&FdbRow {
                mac: *mac,
                vlan: *vlan,
                port,
                kind: if e.is_static { "static" } else { "dynamic" },
                age_s: if e.is_static {
                    0
                } else {
                    snap.now.saturating_sub(e.last_seen_ns) / 1_000_000_000
                },
                vtep,
            })?;
        }
        seq.end()
    }
}
