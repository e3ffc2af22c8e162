//! The router: IPv4 forwarding between router interfaces, with ARP, the
//! ICMP messages a router sends, and source NAT. Pure like the bridge:
//! functions of (frame, ingress interface, tables, now) that rewrite the
//! frame in place and say where it goes; frames the router itself sends
//! (ARP, ICMP, packets that waited for ARP) are written into an [`Orig`]
//! arena the caller provides and sends.
//!
//! - [`route`]: longest-prefix match (connected routes from the interfaces'
//!   subnets, static routes via a gateway or out of an interface).
//! - [`neigh`]: the ARP table, with bounded queues of packets that wait.
//! - [`nat`]: SNAT with connection tracking (RFC 4787, 5382, 5508).
//! - [`icmp`]: the ICMP error rate limit.
//! - [`rif`]: the interfaces.
//!
//! A packet to forward (RFC 1812 §5.2, §5.3): header checked (version,
//! lengths, checksum); martian addresses dropped (§5.3.7); a packet to a
//! forwarded port (DNAT), a reply of a NAT flow or a hairpinned packet
//! translated; TTL checked (time exceeded,
//! §5.3.1); route looked up (network unreachable); egress MTU checked
//! against the packet, or the segment size of a GSO super-frame
//! (fragmentation needed with the next-hop MTU when DF is set, RFC 1191);
//! source NAT applied if the egress has a rule; TTL decremented with an
//! incremental checksum update; the next hop resolved (queued while ARP
//! runs; host unreachable if it never answers); the Ethernet header
//! rewritten (a forwarded flow's reply from the inside server is translated
//! before SNAT is considered). Packets for the router's own addresses: ICMP echo is
//! answered, UDP gets port unreachable, TCP a reset, the rest is dropped.

pub mod icmp;
pub mod nat;
pub mod neigh;
pub mod rif;
pub mod route;
pub mod trace;

use crate::config::{DnatConfig, Ipv4Cidr, RouteConfig, SnatConfig};
use crate::packet::{Frame, VnetHdr};
use crate::stats::DropReason;
use crate::wire::arp::{self, Arp};
use crate::wire::eth::{self, L2};
use crate::wire::icmp as icmpw;
use crate::wire::ipv4::{self, Ipv4};
use crate::MacAddr;
use nat::{Endpoint, Inbound, Nat, NatDrop, Pool};
use neigh::{Lookup, Neigh, Pending};
pub use rif::{Rif, RifId, RifKind};
use route::{Lpm, Prefix};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// TTL of packets the router originates (Linux's default).
const LOCAL_TTL: u8 = 64;
/// Bytes of an offending packet kept for an ICMP error when NAT rewrites
/// it first (the error must quote it as it arrived).
const QUOTE_SAVE: usize = 128;
/// Most interfaces.
pub const MAX_RIFS: usize = 1024;
/// Most static routes.
pub const MAX_STATIC_ROUTES: usize = 65_536;

/// What to do with a frame the router received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Rewritten in place (untagged Ethernet header for the next hop): send
    /// it out of this interface.
    Forward(RifId),
    /// Taken by the router (answered, or waiting for ARP); nothing to send
    /// and nothing to count as a drop.
    Consumed,
    /// Dropped for this reason (counted on the ingress interface).
    Drop(DropReason),
}

/// Frames the router originates during one batch or timer run: an arena of
/// preallocated buffers, the interface each leaves through, and drops to
/// count on interfaces (errors not sent, packets that waited in vain).
pub struct Orig {
    pub frames: Vec<Frame>,
    used: usize,
    /// (slot in `frames`, egress interface), in order.
    pub sent: Vec<(u16, RifId)>,
    /// Drops by (interface, reason), with their count.
    pub drops: Vec<(RifId, DropReason, u64)>,
}

impl Orig {
    /// An arena of `n` frame buffers (allocated once).
    pub fn new(n: usize) -> Orig {
        Orig {
            frames: (0..n).map(|_| Frame::new()).collect(),
            used: 0,
            sent: Vec::with_capacity(n),
            drops: Vec::with_capacity(n),
        }
    }

    /// Empties it for the next batch (buffers kept).
    pub fn reset(&mut self) {
        self.used = 0;
        self.sent.clear();
        self.drops.clear();
    }

    fn take(&mut self) -> Option<usize> {
        (self.used < self.frames.len()).then(|| {
            self.used += 1;
            self.used - 1
        })
    }

    /// Counts a drop. The same (interface, reason) adds to one entry, so
    /// the list stays as short as the kinds of drop in one run: every one
    /// is counted, none is lost to a full list.
    fn drop_on(&mut self, rif: RifId, r: DropReason) {
        match self.drops.iter_mut().find(|d| d.0 == rif && d.1 == r) {
            Some(d) => d.2 += 1,
            None => self.drops.push((rif, r, 1)),
        }
    }
}

/// What [`Router::resolve`] found.
enum Hop {
    /// Destination and source MAC for the link header.
    Mac(MacAddr, MacAddr),
    /// Queued while ARP runs.
    Queued,
    Drop(DropReason),
}

/// Where a route sends packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub rif: RifId,
    /// The gateway (host order), or 0: the destination is on the link.
    pub gw: u32,
}

#[derive(Debug, Clone)]
struct SnatRule {
    out: RifId,
    pool: Pool,
    src: Option<Ipv4Cidr>,
    cfg: SnatConfig,
}

/// A port forwarding rule and the outside endpoints its static mappings
/// hold.
#[derive(Debug, Clone)]
struct DnatRule {
    in_rif: RifId,
    proto: u8,
    port: u16,
    to: Endpoint,
    rule: u32,
    /// Outside addresses with a static mapping in the NAT.
    installed: Vec<u32>,
    cfg: DnatConfig,
}

/// Most addresses of an SNAT pool a forwarded port is reserved on (beyond
/// them, only the interface's own address and the first ones).
pub const MAX_DNAT_ADDRS: u32 = 256;
/// Most port forwarding rules.
pub const MAX_DNAT_RULES: usize = 4096;

/// One row of `route-show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub prefix: Prefix,
    pub via: Option<Ipv4Addr>,
    pub dev: String,
    pub connected: bool,
}

/// The router's tables.
pub struct Router {
    rifs: Vec<Option<Rif>>,
    routes: Lpm<NextHop>,
    /// Static routes as given, by prefix.
    statics: BTreeMap<Prefix, (RouteConfig, NextHop)>,
    pub neigh: Neigh,
    pub nat: Nat,
    snat: Vec<SnatRule>,
    /// Lowest and highest outside address over all SNAT pools.
    pool_span: Option<(u32, u32)>,
    /// SNAT rules by egress interface: their index in `snat`.
    snat_by_rif: Vec<Option<usize>>,
    /// The interfaces' addresses (packets for the router itself).
    locals: hashbrown::HashMap<u32, RifId>,
    dnat: Vec<DnatRule>,
    /// Port forwarding rules by (interface, protocol, port): their index in
    /// `dnat`.
    dnat_ports: hashbrown::HashMap<(RifId, u8, u16), usize>,
    next_rule: u32,
    icmp: icmp::IcmpLimiter,
    ident: u16,
    events: Vec<neigh::Event>,
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}

/// The connected route of an interface (a /32 has none: its address is
/// ours, routes through it are `dev` routes).
fn connected(r: &Rif) -> Option<Prefix> {
    (r.addr.len < 32)
        .then(|| Prefix::new(r.addr.network(), r.addr.len).ok())
        .flatten()
}

fn is_martian_src(ip: u32) -> bool {
    let a = Ipv4Addr::from(ip);
    a.is_multicast() || a.is_broadcast() || a.is_loopback() || ip >> 24 == 0 || ip >> 28 == 0xf
}

impl Router {
    pub fn new() -> Router {
        Router {
            rifs: Vec::new(),
            routes: Lpm::new(),
            statics: BTreeMap::new(),
            neigh: Neigh::default(),
            nat: Nat::default(),
            snat: Vec::new(),
            pool_span: None,
            snat_by_rif: Vec::new(),
            locals: hashbrown::HashMap::new(),
            dnat: Vec::new(),
            dnat_ports: hashbrown::HashMap::new(),
            next_rule: 1,
            icmp: icmp::IcmpLimiter::new(),
            ident: 1,
            events: Vec::new(),
        }
    }

    // ----- configuration -------------------------------------------------

    pub fn rif(&self, id: RifId) -> Option<&Rif> {
        self.rifs.get(usize::from(id)).and_then(Option::as_ref)
    }

    pub fn rif_mut(&mut self, id: RifId) -> Option<&mut Rif> {
        self.rifs.get_mut(usize::from(id)).and_then(Option::as_mut)
    }

    pub fn rif_by_name(&self, name: &str) -> Option<RifId> {
        self.rifs
            .iter()
            .position(|r| r.as_ref().is_some_and(|r| r.name == name))
            .map(|i| i as RifId)
    }

    /// The interfaces, in table order.
    pub fn rifs(&self) -> impl Iterator<Item = (RifId, &Rif)> + '_ {
        self.rifs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().map(|r| (i as RifId, r)))
    }

    /// Checks that a new interface's address does not clash with another's.
    pub fn check_addr(&self, addr: Ipv4Cidr) -> Result<(), String> {
        for (_, r) in self.rifs() {
            if r.addr.addr == addr.addr {
                return Err(format!("address {} is already on {}", addr.addr, r.name));
            }
            if addr.len < 32
                && r.addr.len < 32
                && r.addr.network() == addr.network()
                && r.addr.len == addr.len
            {
                return Err(format!(
                    "subnet {}/{} is already on {} (one interface per subnet)",
                    addr.network(),
                    addr.len,
                    r.name
                ));
            }
        }
        Ok(())
    }

    /// Adds an interface (checked by the caller) and its connected route.
    pub fn add_rif(&mut self, r: Rif) -> Result<RifId, String> {
        self.check_addr(r.addr)?;
        let slot = match self.rifs.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.rifs.len() < MAX_RIFS => {
                self.rifs.push(None);
                self.rifs.len() - 1
            }
            None => return Err(format!("too many router interfaces (limit {MAX_RIFS})")),
        };
        // Its connected route (a static route for the same prefix, if one
        // was there first, stays in charge).
        if let Some(p) = connected(&r).filter(|p| !self.statics.contains_key(p)) {
            let nh = NextHop {
                rif: slot as RifId,
                gw: 0,
            };
            self.routes.insert(p, nh).map_err(|e| e.to_string())?;
        }
        self.locals.insert(u32::from(r.addr.addr), slot as RifId);
        self.rifs[slot] = Some(r);
        Ok(slot as RifId)
    }

    /// Removes an interface with everything that depends on it: static
    /// routes through it, its neighbours, its SNAT rule and the rule's
    /// flows. Returns it.
    pub fn del_rif(&mut self, id: RifId) -> Option<Rif> {
        let r = self.rifs.get_mut(usize::from(id))?.take()?;
        self.locals.remove(&u32::from(r.addr.addr));
        // Static routes out of it (by name or via a gateway on it) go, and
        // its connected route: each a change of the trie, no rebuild.
        let doomed: Vec<Prefix> = self
            .statics
            .iter()
            .filter(|(_, (_, nh))| nh.rif == id)
            .map(|(p, _)| *p)
            .collect();
        for p in doomed {
            self.statics.remove(&p);
            self.routes.remove(p);
        }
        if let Some(p) = connected(&r).filter(|p| !self.statics.contains_key(p)) {
            if self.routes.get(p).is_some_and(|nh| nh.rif == id) {
                self.routes.remove(p);
            }
        }
        self.neigh.flush_rif(id);
        if let Some(i) = self.snat.iter().position(|s| s.out == id) {
            let rule = self.snat.remove(i);
            self.nat.flush_rule(rule.pool.rule);
            self.update_pool_span();
        }
        for d in std::mem::take(&mut self.dnat) {
            if d.in_rif == id {
                self.uninstall_dnat(&d);
            } else {
                self.dnat.push(d);
            }
        }
        self.reindex_dnat();
        Some(r)
    }

    fn resolve_static(&self, c: &RouteConfig) -> Result<NextHop, String> {
        match (&c.via, &c.dev) {
            (Some(gw), dev) => {
                let on = self.rifs().find(|(_, r)| {
                    r.addr.len < 32
                        && r.addr.contains(*gw)
                        && dev.as_deref().is_none_or(|d| d == r.name)
                });
                match on {
                    Some((id, r)) if r.addr.addr != *gw => Ok(NextHop {
                        rif: id,
                        gw: u32::from(*gw),
                    }),
                    Some(_) => Err(format!("gateway {gw} is the router's own address")),
                    None => Err(format!(
                        "gateway {gw} is not on the subnet of any router interface"
                    )),
                }
            }
            (None, Some(d)) => self
                .rif_by_name(d)
                .map(|id| NextHop { rif: id, gw: 0 })
                .ok_or_else(|| format!("no router interface named '{d}'")),
            (None, None) => Err("a route needs 'via GATEWAY' or 'dev RIF'".into()),
        }
    }

    /// Adds (or replaces) a static route.
    pub fn add_route(&mut self, c: RouteConfig) -> Result<(), String> {
        let p = Prefix::new(c.prefix.addr, c.prefix.len).map_err(|e| e.to_string())?;
        if p.addr() != c.prefix.addr {
            return Err(format!(
                "{} has host bits set (the prefix is {}/{})",
                c.prefix,
                p.addr(),
                p.len()
            ));
        }
        if let Some((id, r)) = self
            .rifs()
            .find(|(_, r)| r.addr.len < 32 && r.addr.network() == p.addr() && r.addr.len == p.len())
        {
            let _ = id;
            return Err(format!(
                "{}/{} is connected through {}",
                p.addr(),
                p.len(),
                r.name
            ));
        }
        // One route changes: the trie repaints what that prefix spans, no
        // rebuild (65 536 static routes one by one stay linear).
        let nh = self.resolve_static(&c)?;
        if !self.statics.contains_key(&p) && self.statics.len() >= MAX_STATIC_ROUTES {
            return Err(format!(
                "too many static routes (limit {MAX_STATIC_ROUTES})"
            ));
        }
        self.routes.insert(p, nh).map_err(|e| e.to_string())?;
        self.statics.insert(p, (c, nh));
        Ok(())
    }

    pub fn del_route(&mut self, prefix: Ipv4Cidr) -> Result<(), String> {
        let p = Prefix::new(prefix.addr, prefix.len).map_err(|e| e.to_string())?;
        if self.statics.remove(&p).is_none() {
            return Err(format!("no static route {}/{}", p.addr(), p.len()));
        }
        self.routes.remove(p);
        Ok(())
    }

    /// Static routes as given (for `save`).
    pub fn static_routes(&self) -> impl Iterator<Item = &RouteConfig> + '_ {
        self.statics.values().map(|(c, _)| c)
    }

    /// Every route, connected ones first, for `route-show`.
    pub fn route_list(&self) -> Vec<RouteInfo> {
        let mut out: Vec<RouteInfo> = Vec::new();
        for (_, r) in self.rifs() {
            if r.addr.len < 32 {
                if let Ok(p) = Prefix::new(r.addr.network(), r.addr.len) {
                    out.push(RouteInfo {
                        prefix: p,
                        via: None,
                        dev: r.name.clone(),
                        connected: true,
                    });
                }
            }
        }
        for (p, (c, nh)) in &self.statics {
            let dev = self
                .rif(nh.rif)
                .map_or_else(|| "-".to_string(), |r| r.name.clone());
            out.push(RouteInfo {
                prefix: *p,
                via: c.via,
                dev,
                connected: false,
            });
        }
        out
    }

    /// Adds (or replaces) the SNAT rule of interface `c.out`.
    pub fn add_snat(&mut self, c: SnatConfig) -> Result<(), String> {
        let out = self
            .rif_by_name(&c.out)
            .ok_or_else(|| format!("no router interface named '{}'", c.out))?;
        let addr = self
            .rif(out)
            .map(|r| r.addr.addr)
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let (first, last) = c.to_range()?.unwrap_or((addr, addr));
        for s in &self.snat {
            if s.out != out && u32::from(first) <= s.pool.last && s.pool.first <= u32::from(last) {
                return Err(format!(
                    "--to {}-{} overlaps the rule of {}",
                    first, last, s.cfg.out
                ));
            }
        }
        let rule = self.next_rule;
        self.next_rule = self.next_rule.wrapping_add(1).max(1);
        let pool =
            Pool::new(rule, first, last).ok_or("--to: the last address is below the first")?;
        if let Some(i) = self.snat.iter().position(|s| s.out == out) {
            let old = self.snat.remove(i);
            self.nat.flush_rule(old.pool.rule);
        }
        self.snat.push(SnatRule {
            out,
            pool,
            src: c.src,
            cfg: c,
        });
        self.update_pool_span();
        self.sync_dnat(0);
        Ok(())
    }

    /// Removes interface `out`'s SNAT rule and its flows.
    pub fn del_snat(&mut self, out: &str) -> Result<usize, String> {
        let id = self
            .rif_by_name(out)
            .ok_or_else(|| format!("no router interface named '{out}'"))?;
        let i = self
            .snat
            .iter()
            .position(|s| s.out == id)
            .ok_or_else(|| format!("no SNAT rule on '{out}'"))?;
        let rule = self.snat.remove(i);
        self.update_pool_span();
        let n = self.nat.flush_rule(rule.pool.rule);
        self.sync_dnat(0);
        Ok(n)
    }

    /// Adds a port forwarding rule (checked and normalised here).
    pub fn add_dnat(&mut self, c: DnatConfig, now: u64) -> Result<(), String> {
        let c = c.normalized()?;
        let in_rif = self
            .rif_by_name(&c.in_rif)
            .ok_or_else(|| format!("no router interface named '{}'", c.in_rif))?;
        let proto = c.proto_num()?;
        let (ip, port) = c.to_endpoint()?;
        if self
            .dnat
            .iter()
            .any(|d| d.in_rif == in_rif && d.proto == proto && d.port == c.port)
        {
            return Err(format!(
                "{} port {} on {} is already forwarded (del-dnat first)",
                c.proto, c.port, c.in_rif
            ));
        }
        if self.dnat.len() >= MAX_DNAT_RULES {
            return Err(format!(
                "too many port forwarding rules (limit {MAX_DNAT_RULES})"
            ));
        }
        if self.local(u32::from(ip)).is_some() {
            return Err(format!("--to {ip} is an address of the router"));
        }
        let rule = self.next_rule;
        self.next_rule = self.next_rule.wrapping_add(1).max(1);
        let mut d = DnatRule {
            in_rif,
            proto,
            port: c.port,
            to: Endpoint {
                ip: u32::from(ip),
                port,
            },
            rule,
            installed: Vec::new(),
            cfg: c,
        };
        for a in self.dnat_addrs(in_rif) {
            let outside = Endpoint {
                ip: a,
                port: d.port,
            };
            if let Err(e) = self.nat.add_static(proto, outside, d.to, rule, now) {
                self.uninstall_dnat(&d);
                return Err(e);
            }
            d.installed.push(a);
        }
        self.dnat.push(d);
        self.reindex_dnat();
        Ok(())
    }

    /// Removes a port forwarding rule and its flows; returns how many flows.
    pub fn del_dnat(&mut self, in_rif: &str, proto: &str, port: u16) -> Result<usize, String> {
        let id = self
            .rif_by_name(in_rif)
            .ok_or_else(|| format!("no router interface named '{in_rif}'"))?;
        let probe = DnatConfig {
            in_rif: in_rif.into(),
            proto: proto.into(),
            port,
            to: String::new(),
        };
        let pn = probe.proto_num()?;
        let i = self
            .dnat
            .iter()
            .position(|d| d.in_rif == id && d.proto == pn && d.port == port)
            .ok_or_else(|| format!("no port forwarding of {proto} port {port} on '{in_rif}'"))?;
        let d = self.dnat.remove(i);
        self.reindex_dnat();
        Ok(self.uninstall_dnat(&d))
    }

    /// Port forwarding rules as given (normalised).
    pub fn dnat_rules(&self) -> impl Iterator<Item = &DnatConfig> + '_ {
        self.dnat.iter().map(|d| &d.cfg)
    }

    /// The outside addresses of interface `rif`'s forwarded ports: its own
    /// and its SNAT pool's (at most [`MAX_DNAT_ADDRS`] of these).
    fn dnat_addrs(&self, rif: RifId) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .rif(rif)
            .map(|r| u32::from(r.addr.addr))
            .into_iter()
            .collect();
        if let Some(s) = self.snat.iter().find(|s| s.out == rif) {
            let last = s
                .pool
                .last
                .min(s.pool.first.saturating_add(MAX_DNAT_ADDRS - 1));
            for a in s.pool.first..=last {
                if !v.contains(&a) {
                    v.push(a);
                }
            }
        }
        v
    }

    /// Removes rule `d`'s static mappings and flows; returns how many flows.
    fn uninstall_dnat(&mut self, d: &DnatRule) -> usize {
        let mut n = 0;
        for &a in &d.installed {
            let outside = Endpoint {
                ip: a,
                port: d.port,
            };
            n += self.nat.remove_static(d.proto, outside).unwrap_or(0);
        }
        n
    }

    /// Brings the static mappings in line with the interfaces' addresses and
    /// SNAT pools (after an SNAT rule changed).
    fn sync_dnat(&mut self, now: u64) {
        let mut rules = std::mem::take(&mut self.dnat);
        for d in &mut rules {
            let want = self.dnat_addrs(d.in_rif);
            let mut keep = Vec::new();
            for &a in &d.installed {
                let outside = Endpoint {
                    ip: a,
                    port: d.port,
                };
                if want.contains(&a) {
                    keep.push(a);
                } else {
                    self.nat.remove_static(d.proto, outside);
                }
            }
            for a in want {
                if !keep.contains(&a) {
                    let outside = Endpoint {
                        ip: a,
                        port: d.port,
                    };
                    if self
                        .nat
                        .add_static(d.proto, outside, d.to, d.rule, now)
                        .is_ok()
                    {
                        keep.push(a);
                    }
                }
            }
            d.installed = keep;
        }
        self.dnat = rules;
    }

    /// Whether a packet arriving on `rif` to `dst:dport` is for a
    /// forwarded port.
    /// An ICMP error to a forwarded port's address with no SNAT rule for
    /// it (which would translate it) counts too: it may be about a
    /// forwarded flow.
    fn dnat_match(&self, rif: RifId, proto: u8, dst: u32, dport: u16, snat: bool) -> bool {
        if proto == ipv4::PROTO_ICMP && !snat {
            return self
                .dnat
                .iter()
                .any(|d| d.in_rif == rif && d.installed.contains(&dst));
        }
        self.dnat_ports
            .get(&(rif, proto, dport))
            .is_some_and(|&i| self.dnat[i].installed.contains(&dst))
    }

    /// Rebuilds the index of the port forwarding rules after they changed.
    fn reindex_dnat(&mut self) {
        self.dnat_ports.clear();
        for (i, d) in self.dnat.iter().enumerate() {
            self.dnat_ports.insert((d.in_rif, d.proto, d.port), i);
        }
    }

    /// SNAT rules as given.
    pub fn snat_rules(&self) -> impl Iterator<Item = &SnatConfig> + '_ {
        self.snat.iter().map(|s| &s.cfg)
    }

    /// The outside addresses of SNAT rule `rule` as text.
    pub fn snat_to(&self, out: &str) -> Option<String> {
        let s = self.snat.iter().find(|s| s.cfg.out == out)?;
        Some(if s.pool.first == s.pool.last {
            Ipv4Addr::from(s.pool.first).to_string()
        } else {
            format!(
                "{}-{}",
                Ipv4Addr::from(s.pool.first),
                Ipv4Addr::from(s.pool.last)
            )
        })
    }

    /// The route for `dst` (host order).
    pub fn lookup(&self, dst: u32) -> Option<NextHop> {
        self.routes.lookup(dst)
    }

    // ----- the data path --------------------------------------------------

    /// The interface `ip` is an address of.
    #[inline]
    fn local(&self, ip: u32) -> Option<RifId> {
        self.locals.get(&ip).copied()
    }

    /// The SNAT rule whose outside addresses hold `ip`. Asked up to three
    /// times a packet: addresses outside every pool are answered from the
    /// pools' span without a look at the rules.
    #[inline]
    fn rule_for_dst(&self, ip: u32) -> Option<usize> {
        let (lo, hi) = self.pool_span?;
        if ip < lo || ip > hi {
            return None;
        }
        self.snat
            .iter()
            .position(|s| (s.pool.first..=s.pool.last).contains(&ip))
    }

    /// The SNAT rule of packets leaving through `rif`.
    #[inline]
    fn snat_of(&self, rif: RifId) -> Option<&SnatRule> {
        let i = self.snat_by_rif.get(usize::from(rif)).copied().flatten()?;
        self.snat.get(i)
    }

    /// Recomputes the span of the SNAT pools and the rules' index by
    /// interface after a rule changed.
    fn update_pool_span(&mut self) {
        self.pool_span = self
            .snat
            .iter()
            .map(|s| (s.pool.first, s.pool.last))
            .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)));
        self.snat_by_rif.clear();
        for (i, s) in self.snat.iter().enumerate() {
            let r = usize::from(s.out);
            if self.snat_by_rif.len() <= r {
                self.snat_by_rif.resize(r + 1, None);
            }
            self.snat_by_rif[r] = Some(i);
        }
    }

    /// The NAT flow key of a frame for the router, for prefetching the
    /// NAT state it will touch (see [`Nat::prefetch_key`]); the pipeline runs
    /// the prefetch steps over a whole batch before [`Router::receive`] so
    /// the batch's cache misses overlap. `None` without SNAT rules.
    #[inline]
    pub fn nat_key(&self, rif: RifId, frame: &[u8]) -> Option<nat::FlowKey> {
        if self.snat.is_empty() {
            return None;
        }
        let l2 = L2::parse(frame)?;
        let pkt = frame.get(l2.l3..)?;
        if l2.ethertype != eth::ETHERTYPE_IPV4 || pkt.len() < ipv4::MIN_HEADER {
            return None;
        }
        let dst = u32::from_be_bytes([pkt[16], pkt[17], pkt[18], pkt[19]]);
        // Toward an outside address from its rule's interface: a reply.
        let inbound = self
            .rule_for_dst(dst)
            .is_some_and(|i| self.snat[i].out == rif);
        self.nat.flow_key(pkt, !inbound)
    }

    /// Handles a frame that arrived on interface `rif`. `owned`: the frame
    /// goes nowhere else, so it may be rewritten (a unicast to the
    /// interface's MAC, or anything from a TUN); otherwise (a broadcast the
    /// bridge also floods) it is only read, for ARP.
    pub fn receive(
        &mut self,
        rif: RifId,
        f: &mut Frame,
        owned: bool,
        now: u64,
        o: &mut Orig,
    ) -> Verdict {
        let Some(l2) = L2::parse(f.data()) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        match l2.ethertype {
            eth::ETHERTYPE_ARP => {
                let ok = self.arp_in(rif, &l2, f.data(), now, o);
                if ok || !owned {
                    Verdict::Consumed
                } else {
                    Verdict::Drop(DropReason::Malformed)
                }
            }
            eth::ETHERTYPE_IPV4 if owned => {
                if l2.tci.is_some() {
                    f.strip_tag();
                }
                self.ip_in(rif, f, now, o)
            }
            // Broadcast or multicast IP: not routed (RFC 1812 §5.3.5), and
            // delivered to the bridge's other ports all the same.
            eth::ETHERTYPE_IPV4 => Verdict::Consumed,
            _ if owned => Verdict::Drop(DropReason::NotIpv4),
            _ => Verdict::Consumed,
        }
    }

    /// An ARP packet on `rif`: learn the sender, answer requests for our
    /// address (and for SNAT addresses of the interface), send what waited
    /// for the sender. False if it was not a valid ARP packet.
    fn arp_in(&mut self, rif: RifId, l2: &L2, data: &[u8], now: u64, o: &mut Orig) -> bool {
        let Some(a) = data.get(l2.l3..).and_then(|b| Arp::parse(b).ok()) else {
            return false;
        };
        let Some(r) = self.rif(rif) else {
            return true;
        };
        let (my_ip, my_mac) = (r.addr.addr, r.mac);
        let target = u32::from(a.target_ip);
        let for_us = a.target_ip == my_ip
            || self
                .snat
                .iter()
                .any(|s| s.out == rif && (s.pool.first..=s.pool.last).contains(&target));
        let sender = u32::from(a.sender_ip);
        if a.sender_ip != my_ip && sender != 0 && r.addr.contains(a.sender_ip) {
            let waiting = self.neigh.learn(
                rif,
                sender,
                a.sender_mac,
                for_us || a.op == arp::OP_REPLY,
                now,
            );
            for p in waiting {
                let Some(slot) = o.take() else {
                    o.drop_on(rif, DropReason::ArpQueueFull);
                    continue;
                };
                let fr = &mut o.frames[slot];
                fr.set_from_bytes(&p.frame);
                fr.set_vnet(&p.vnet);
                if fr.len() >= eth::HEADER_LEN {
                    eth::emit(fr.data_mut(), a.sender_mac, my_mac, eth::ETHERTYPE_IPV4);
                    o.sent.push((slot as u16, rif));
                }
            }
        }
        if a.op == arp::OP_REQUEST && for_us && a.sender_mac.is_valid_station() {
            if let Some(slot) = o.take() {
                let mut b = [0u8; 60];
                eth::emit(&mut b, a.sender_mac, my_mac, eth::ETHERTYPE_ARP);
                Arp {
                    op: arp::OP_REPLY,
                    sender_mac: my_mac,
                    sender_ip: a.target_ip,
                    target_mac: a.sender_mac,
                    target_ip: a.sender_ip,
                }
                .emit(&mut b[14..]);
                o.frames[slot].set_from_bytes(&b);
                o.sent.push((slot as u16, rif));
            }
        }
        true
    }

    fn ip_in(&mut self, rif: RifId, f: &mut Frame, now: u64, o: &mut Orig) -> Verdict {
        const L3: usize = eth::HEADER_LEN;
        let (src, dst, ttl, proto, total, dport, df) = {
            let Some(b) = f.data().get(L3..) else {
                return Verdict::Drop(DropReason::Malformed);
            };
            let Ok(ip) = Ipv4::new_checked(b) else {
                return Verdict::Drop(DropReason::Malformed);
            };
            if !ip.checksum_ok() {
                return Verdict::Drop(DropReason::Malformed);
            }
            let l4 = ip.payload();
            let dport = if ip.is_later_fragment() || l4.len() < 4 {
                0
            } else {
                u16::from_be_bytes([l4[2], l4[3]])
            };
            (
                u32::from(ip.src()),
                u32::from(ip.dst()),
                ip.ttl(),
                ip.protocol(),
                ip.total_len(),
                dport,
                ip.dont_frag(),
            )
        };
        f.truncate(L3 + total);
        if is_martian_src(src)
            || Ipv4Addr::from(dst).is_multicast()
            || dst == u32::MAX
            || dst >> 24 == 0
            || dst >> 24 == 127
        {
            return Verdict::Drop(DropReason::MartianAddress);
        }
        // Our own or an SNAT address as a source can only be a spoof (and
        // would match hairpin flows, whose remote is such an address).
        if self.local(src).is_some() || self.rule_for_dst(src).is_some() {
            return Verdict::Drop(DropReason::MartianAddress);
        }
        if self.rif(rif).and_then(Rif::broadcast) == Some(dst) {
            // Directed broadcast to the ingress subnet: for hosts, not us.
            return Verdict::Drop(DropReason::MartianAddress);
        }
        let partial = f.vnet().flags & VnetHdr::F_NEEDS_CSUM != 0;

        // Replies of NAT flows, hairpinned packets, and the router's own
        // addresses.
        let mut saved = [0u8; QUOTE_SAVE];
        let mut saved_len = 0;
        let mut translated = false;
        let snat_rule = self.rule_for_dst(dst);
        // A forwarded port (DNAT): from outside, on the rule's interface.
        // (Forwarded ports live on the interfaces' and pools' addresses
        // only: transit traffic never looks at the rules.)
        let dnat = !self.dnat.is_empty()
            && (snat_rule.is_some() || self.local(dst).is_some())
            && self.dnat_match(rif, proto, dst, dport, snat_rule.is_some());
        if dnat {
            saved_len = total.min(QUOTE_SAVE);
            saved[..saved_len].copy_from_slice(&f.data()[L3..L3 + saved_len]);
            match self.nat.dnat_in(&mut f.data_mut()[L3..], partial, now) {
                Ok(i) => translated = i == Inbound::Translated,
                Err(e) => return Verdict::Drop(nat_drop(e)),
            }
        } else if let Some(ri) = snat_rule {
            let rule = &self.snat[ri];
            let pool = rule.pool;
            let from_inside = rule.out != rif;
            saved_len = total.min(QUOTE_SAVE);
            saved[..saved_len].copy_from_slice(&f.data()[L3..L3 + saved_len]);
            let pkt = &mut f.data_mut()[L3..];
            let hairpin = from_inside
                && matches!(proto, ipv4::PROTO_TCP | ipv4::PROTO_UDP)
                && self.nat.is_mapped(
                    proto,
                    Endpoint {
                        ip: dst,
                        port: dport,
                    },
                    now,
                );
            let r = if hairpin {
                self.nat.hairpin(pkt, partial, &pool, now)
            } else {
                self.nat
                    .inbound(pkt, partial, now)
                    .map(|i| i == Inbound::Translated)
            };
            match r {
                Ok(t) => translated = t,
                Err(e) => return Verdict::Drop(nat_drop(e)),
            }
            if !translated && self.local(dst).is_none() {
                return Verdict::Drop(DropReason::NatUnsolicited);
            }
        }
        if !translated && self.local(dst).is_some() {
            return self.local_in(rif, f, now, o);
        }
        let dst = if translated {
            Ipv4::new_checked(&f.data()[L3..]).map_or(dst, |ip| u32::from(ip.dst()))
        } else {
            dst
        };
        let quote_src: &[u8] = if saved_len > 0 {
            &saved[..saved_len]
        } else {
            &[]
        };

        // RFC 1812 §5.3.1: a packet whose TTL would reach 0 is not
        // forwarded; the sender hears time exceeded.
        if ttl <= 1 {
            self.error_for(
                rif,
                f,
                quote_src,
                icmpw::TIME_EXCEEDED,
                icmpw::CODE_TTL_EXCEEDED,
                0,
                now,
                o,
            );
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        let Some(nh) = self.routes.lookup(dst) else {
            self.error_for(
                rif,
                f,
                quote_src,
                icmpw::DEST_UNREACHABLE,
                icmpw::CODE_NET_UNREACHABLE,
                0,
                now,
                o,
            );
            return Verdict::Drop(DropReason::NoRoute);
        };
        let Some(out) = self.rif(nh.rif) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let mtu = out.mtu as usize;
        if total > mtu {
            let v = f.vnet();
            // A GSO super-frame leaves as segments: what must fit is one
            // segment (its headers plus the segment size).
            let seg = if v.is_gso() {
                usize::from(v.hdr_len).saturating_sub(L3) + usize::from(v.gso_size)
            } else {
                total
            };
            if seg > mtu {
                if df || v.is_gso() {
                    self.error_for(
                        rif,
                        f,
                        quote_src,
                        icmpw::DEST_UNREACHABLE,
                        icmpw::CODE_FRAG_NEEDED,
                        mtu.min(0xffff) as u32,
                        now,
                        o,
                    );
                    return Verdict::Drop(DropReason::FragNeeded);
                }
                return Verdict::Drop(DropReason::TooBig);
            }
        }
        // A forwarded flow's reply from the inside server, then source NAT
        // on the way out.
        if !translated && !self.dnat.is_empty() {
            match self.nat.dnat_out(&mut f.data_mut()[L3..], partial, now) {
                Ok(t) => translated = t,
                Err(e) => return Verdict::Drop(nat_drop(e)),
            }
        }
        if !translated {
            if let Some(rule) = self.snat_of(nh.rif) {
                let from_us = self.local(src).is_some();
                let matches = rule.src.is_none_or(|p| p.contains(Ipv4Addr::from(src)));
                if matches && !from_us {
                    let pool = rule.pool;
                    if let Err(e) = self
                        .nat
                        .outbound(&mut f.data_mut()[L3..], partial, &pool, now)
                    {
                        return Verdict::Drop(nat_drop(e));
                    }
                }
            }
        }
        if let Ok(mut ip) = Ipv4::new_checked(&mut f.data_mut()[L3..]) {
            ip.decrement_ttl();
        }
        let hop = if nh.gw != 0 { nh.gw } else { dst };
        self.via_next_hop(rif, nh.rif, hop, f, now, o)
    }

    /// Writes the link header toward `hop` on `out` if known; otherwise
    /// queues a copy while ARP runs. `from`: the interface drops count on.
    fn via_next_hop(
        &mut self,
        from: RifId,
        out: RifId,
        hop: u32,
        f: &mut Frame,
        now: u64,
        o: &mut Orig,
    ) -> Verdict {
        match self.resolve(from, out, hop, f.data(), f.vnet(), now, o) {
            Hop::Mac(dst, src) => {
                eth::emit(f.data_mut(), dst, src, eth::ETHERTYPE_IPV4);
                Verdict::Forward(out)
            }
            Hop::Queued => Verdict::Consumed,
            Hop::Drop(r) => Verdict::Drop(r),
        }
    }

    /// The link addresses toward `hop` on `out` (a TUN takes any); or the
    /// frame (`frame`, `vnet`) is queued while ARP runs, or dropped: host
    /// unreachable when the neighbour did not answer.
    #[allow(clippy::too_many_arguments)]
    fn resolve(
        &mut self,
        from: RifId,
        out: RifId,
        hop: u32,
        frame: &[u8],
        vnet: VnetHdr,
        now: u64,
        o: &mut Orig,
    ) -> Hop {
        let Some(r) = self.rif(out) else {
            return Hop::Drop(DropReason::NoRoute);
        };
        let my_mac = r.mac;
        if r.kind == RifKind::Tun {
            return Hop::Mac(my_mac, my_mac);
        }
        if self.local(hop).is_some() {
            // Never ARP for ourselves.
            return Hop::Drop(DropReason::MartianAddress);
        }
        match self.neigh.lookup(out, hop, now) {
            Lookup::Known { mac, probe } => {
                if probe {
                    self.arp_request(out, hop, o);
                }
                Hop::Mac(mac, my_mac)
            }
            Lookup::Resolving { probe } => {
                if probe {
                    self.arp_request(out, hop, o);
                }
                let mut dropped_oldest = false;
                let p = Pending {
                    frame: frame.to_vec(),
                    vnet,
                    from,
                };
                let queued = self.neigh.enqueue(out, hop, p, &mut dropped_oldest);
                if dropped_oldest {
                    o.drop_on(from, DropReason::ArpQueueFull);
                }
                if queued {
                    Hop::Queued
                } else {
                    Hop::Drop(DropReason::ArpQueueFull)
                }
            }
            Lookup::Failed => {
                if let Some(pkt) = frame.get(eth::HEADER_LEN..) {
                    self.icmp_error(
                        from,
                        pkt,
                        icmpw::DEST_UNREACHABLE,
                        icmpw::CODE_HOST_UNREACHABLE,
                        0,
                        now,
                        o,
                    );
                }
                Hop::Drop(DropReason::ArpUnresolved)
            }
            Lookup::Full => Hop::Drop(DropReason::NeighTableFull),
        }
    }

    /// A packet for one of the router's addresses.
    fn local_in(&mut self, rif: RifId, f: &mut Frame, now: u64, o: &mut Orig) -> Verdict {
        const L3: usize = eth::HEADER_LEN;
        let (proto, frag, ihl) = match Ipv4::new_checked(&f.data()[L3..]) {
            Ok(ip) => (ip.protocol(), ip.is_fragment(), ip.header_len()),
            Err(_) => return Verdict::Drop(DropReason::Malformed),
        };
        if proto == ipv4::PROTO_ICMP && !frag {
            let d = f.data_mut();
            if !icmpw::echo_to_reply(&mut d[L3 + ihl..]) {
                // Other ICMP (errors about our own packets, replies): taken.
                return Verdict::Consumed;
            }
            // Back to the sender, with our TTL.
            let Ok(mut ip) = Ipv4::new_checked(&mut d[L3..]) else {
                return Verdict::Drop(DropReason::Malformed);
            };
            ip.swap_addresses();
            ip.set_ttl(LOCAL_TTL);
            let dst = u32::from(ip.dst());
            // Echo to the router is never translated (it reached us
            // untranslated): route the reply straight back.
            let Some(nh) = self.routes.lookup(dst) else {
                return Verdict::Drop(DropReason::NoRoute);
            };
            let hop = if nh.gw != 0 { nh.gw } else { dst };
            f.set_vnet(&VnetHdr::default());
            return self.via_next_hop(rif, nh.rif, hop, f, now, o);
        }
        if proto == ipv4::PROTO_UDP && !frag {
            self.error_for(
                rif,
                f,
                &[],
                icmpw::DEST_UNREACHABLE,
                icmpw::CODE_PORT_UNREACHABLE,
                0,
                now,
                o,
            );
        }
        if proto == ipv4::PROTO_TCP && !frag {
            if let Some(pkt) = f.data().get(L3..) {
                self.tcp_reset(rif, pkt, now, o);
            }
        }
        Verdict::Drop(DropReason::LocalUnsupported)
    }

    /// Sends an ICMP error about the packet in `f` (or about `saved`, the
    /// packet as it arrived before NAT rewrote it), if RFC 1812 §4.3.2.7
    /// allows one and the rate limit has a token. Counted on `rif` when
    /// suppressed by the limit.
    #[allow(clippy::too_many_arguments)]
    fn error_for(
        &mut self,
        rif: RifId,
        f: &Frame,
        saved: &[u8],
        typ: u8,
        code: u8,
        rest: u32,
        now: u64,
        o: &mut Orig,
    ) {
        let pkt = if saved.is_empty() {
            f.data().get(eth::HEADER_LEN..).unwrap_or(&[])
        } else {
            saved
        };
        self.icmp_error(rif, pkt, typ, code, rest, now, o);
    }

    #[allow(clippy::too_many_arguments)]
    fn icmp_error(
        &mut self,
        rif: RifId,
        pkt: &[u8],
        typ: u8,
        code: u8,
        rest: u32,
        now: u64,
        o: &mut Orig,
    ) {
        if pkt.len() < ipv4::MIN_HEADER || pkt[0] >> 4 != 4 {
            return;
        }
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        let src = u32::from_be_bytes([pkt[12], pkt[13], pkt[14], pkt[15]]);
        let dst = u32::from_be_bytes([pkt[16], pkt[17], pkt[18], pkt[19]]);
        let frag_off = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x1fff;
        // RFC 1812 §4.3.2.7: not about an ICMP error, a later fragment, a
        // packet to a broadcast or multicast address, or from an address
        // that names no single host.
        if frag_off != 0 || is_martian_src(src) || Ipv4Addr::from(dst).is_multicast() {
            return;
        }
        if pkt[9] == ipv4::PROTO_ICMP && pkt.get(ihl).is_some_and(|&t| icmpw::is_error(t)) {
            return;
        }
        let total = u16::from_be_bytes([pkt[2], pkt[3]]) as usize;
        let qlen = pkt
            .len()
            .min(total.max(ihl))
            .min(icmpw::MAX_ERROR_DATAGRAM - ipv4::MIN_HEADER - icmpw::HEADER_LEN);
        let mut b = [0u8; eth::HEADER_LEN + icmpw::MAX_ERROR_DATAGRAM];
        let ip_len = ipv4::MIN_HEADER + icmpw::HEADER_LEN + qlen;
        self.ident = self.ident.wrapping_add(1);
        ipv4::Repr {
            src: Ipv4Addr::from(src),
            dst: Ipv4Addr::from(src),
            protocol: ipv4::PROTO_ICMP,
            ttl: LOCAL_TTL,
            payload_len: icmpw::HEADER_LEN + qlen,
            ident: self.ident,
            dont_frag: false,
        }
        .emit(&mut b[eth::HEADER_LEN..]);
        icmpw::emit_error(
            &mut b[eth::HEADER_LEN + ipv4::MIN_HEADER..],
            typ,
            code,
            rest,
            &pkt[..qlen],
        );
        let ip = eth::HEADER_LEN..eth::HEADER_LEN + ip_len;
        let mut to = src;
        if self.rule_for_dst(src).is_some() {
            // The packet was already source-NATed: the error goes to the
            // outside address and the NAT takes it (and its quote) back to
            // the inside host, as an error from outside would be (RFC 5508
            // §4.2).
            match self.nat.inbound(&mut b[ip.clone()], false, now) {
                Ok(Inbound::Translated) => {}
                _ => return,
            }
            to = u32::from_be_bytes([b[30], b[31], b[32], b[33]]);
        }
        let Some(nh) = self.routes.lookup(to) else {
            return;
        };
        let Some(from) = self.rif(nh.rif).map(|r| r.addr.addr) else {
            return;
        };
        // Our address on the way back is the source (as Linux chooses it).
        b[eth::HEADER_LEN + 12..eth::HEADER_LEN + 16].copy_from_slice(&from.octets());
        b[eth::HEADER_LEN + 10..eth::HEADER_LEN + 12].copy_from_slice(&[0, 0]);
        let c = crate::wire::checksum(&b[eth::HEADER_LEN..eth::HEADER_LEN + ipv4::MIN_HEADER]);
        b[eth::HEADER_LEN + 10..eth::HEADER_LEN + 12].copy_from_slice(&c.to_be_bytes());
        if !self.icmp.allow(to, now) {
            o.drop_on(rif, DropReason::IcmpRateLimited);
            return;
        }
        self.send_local(rif, nh, to, &b[..eth::HEADER_LEN + ip_len], now, o);
    }

    /// Sends a packet the router made (`frame`: a link header to fill, then
    /// the IPv4 packet to `to`) along route `nh`; drops count on `rif`.
    fn send_local(
        &mut self,
        rif: RifId,
        nh: NextHop,
        to: u32,
        frame: &[u8],
        now: u64,
        o: &mut Orig,
    ) {
        let hop = if nh.gw != 0 { nh.gw } else { to };
        match self.resolve(rif, nh.rif, hop, frame, VnetHdr::default(), now, o) {
            Hop::Mac(dst, src_mac) => {
                let Some(slot) = o.take() else {
                    o.drop_on(rif, DropReason::IcmpRateLimited);
                    return;
                };
                let fr = &mut o.frames[slot];
                fr.set_from_bytes(frame);
                eth::emit(fr.data_mut(), dst, src_mac, eth::ETHERTYPE_IPV4);
                o.sent.push((slot as u16, nh.rif));
            }
            Hop::Queued => {}
            Hop::Drop(r) => o.drop_on(rif, r),
        }
    }

    /// Answers a TCP segment to one of our addresses with a reset, as a
    /// host with no listener does (RFC 9293 §3.10.7.1): never to a reset;
    /// to a segment with ACK, `<SEQ=SEG.ACK><CTL=RST>`; otherwise
    /// `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`.
    fn tcp_reset(&mut self, rif: RifId, pkt: &[u8], now: u64, o: &mut Orig) {
        let Ok(ip) = Ipv4::new_checked(pkt) else {
            return;
        };
        let t = ip.payload();
        if t.len() < 20 {
            return;
        }
        let flags = t[13];
        if flags & 0x04 != 0 {
            return;
        }
        let off = usize::from(t[12] >> 4) * 4;
        let seg_len = t.len().saturating_sub(off) as u32
            + u32::from(flags & 0x02 != 0)
            + u32::from(flags & 0x01 != 0);
        let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
        let ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
        let (rseq, rack, rflags) = if flags & 0x10 != 0 {
            (ack, 0, 0x04)
        } else {
            (0, seq.wrapping_add(seg_len), 0x14)
        };
        let (src, dst) = (ip.dst(), ip.src());
        let to = u32::from(dst);
        let Some(nh) = self.routes.lookup(to) else {
            return;
        };
        let mut b = [0u8; eth::HEADER_LEN + 40];
        self.ident = self.ident.wrapping_add(1);
        ipv4::Repr {
            src,
            dst,
            protocol: ipv4::PROTO_TCP,
            ttl: LOCAL_TTL,
            payload_len: 20,
            ident: self.ident,
            dont_frag: true,
        }
        .emit(&mut b[eth::HEADER_LEN..]);
        let th = &mut b[eth::HEADER_LEN + 20..];
        th[0..2].copy_from_slice(&t[2..4]);
        th[2..4].copy_from_slice(&t[0..2]);
        th[4..8].copy_from_slice(&rseq.to_be_bytes());
        th[8..12].copy_from_slice(&rack.to_be_bytes());
        th[12] = 5 << 4;
        th[13] = rflags;
        let mut pseudo = [0u8; 32];
        pseudo[0..4].copy_from_slice(&src.octets());
        pseudo[4..8].copy_from_slice(&dst.octets());
        pseudo[9] = ipv4::PROTO_TCP;
        pseudo[11] = 20;
        pseudo[12..32].copy_from_slice(&th[..20]);
        let c = crate::wire::checksum(&pseudo);
        th[16..18].copy_from_slice(&c.to_be_bytes());
        self.send_local(rif, nh, to, &b, now, o);
    }

    fn arp_request(&mut self, rif: RifId, ip: u32, o: &mut Orig) {
        let Some(r) = self.rif(rif) else { return };
        let Some(slot) = o.take() else { return };
        let mut b = [0u8; 60];
        eth::emit(&mut b, MacAddr::BROADCAST, r.mac, eth::ETHERTYPE_ARP);
        Arp {
            op: arp::OP_REQUEST,
            sender_mac: r.mac,
            sender_ip: r.addr.addr,
            target_mac: MacAddr::default(),
            target_ip: Ipv4Addr::from(ip),
        }
        .emit(&mut b[14..]);
        o.frames[slot].set_from_bytes(&b);
        o.sent.push((slot as u16, rif));
    }

    /// Timers: ARP retries and failures (host unreachable for what
    /// waited), and a bounded slice of NAT expiry.
    pub fn tick(&mut self, now: u64, o: &mut Orig) {
        let mut events = std::mem::take(&mut self.events);
        self.neigh.tick(now, &mut events);
        for e in events.drain(..) {
            match e {
                neigh::Event::Probe { rif, ip } => self.arp_request(rif, ip, o),
                neigh::Event::Unreachable { queued, .. } => {
                    for p in queued {
                        o.drop_on(p.from, DropReason::ArpUnresolved);
                        if let Some(pkt) = p.frame.get(eth::HEADER_LEN..) {
                            self.icmp_error(
                                p.from,
                                pkt,
                                icmpw::DEST_UNREACHABLE,
                                icmpw::CODE_HOST_UNREACHABLE,
                                0,
                                now,
                                o,
                            );
                        }
                    }
                }
            }
        }
        self.events = events;
        self.nat.expire(now, nat::EXPIRE_BUDGET);
    }
}

fn nat_drop(e: NatDrop) -> DropReason {
    match e {
        NatDrop::Malformed => DropReason::Malformed,
        NatDrop::Fragment => DropReason::NatFragment,
        NatDrop::Unsupported => DropReason::NatUnsupported,
        NatDrop::TableFull => DropReason::NatTableFull,
        NatDrop::PortsExhausted => DropReason::NatPortsExhausted,
        NatDrop::NoFlow => DropReason::NatNoFlow,
    }
}

#[cfg(test)]
mod tests;
