//! What the agent reasons about: vswitchd's VXLAN ports and FDB, the EVPN
//! paths of the BGP RIB, the routes this host advertises and the actions
//! that bring vswitchd and the RIB in line.

use dataplane::MacAddr;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// A VXLAN port of vswitchd: one VNI, one EVI (RFC 8365 §5.1.2,
/// VLAN-based service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanPort {
    pub name: String,
    pub bridge: String,
    pub vni: u32,
    /// The local VTEP address: next hop of the type-2 routes, originator of
    /// the type-3 route, administrator of the RD.
    pub local: Ipv4Addr,
    /// The flood list (head-end replication).
    pub remotes: BTreeSet<Ipv4Addr>,
    /// The VLAN whose frames leave untagged through the port (access VLAN,
    /// or a trunk's native VLAN): the bridge's side of the VNI. `None` for
    /// a trunk without native VLAN: its MACs are not handled.
    pub vlan: Option<u16>,
}

/// One row of `fdb-show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    pub mac: MacAddr,
    pub vlan: u16,
    pub port: String,
    pub is_static: bool,
    /// The remote VTEP of an entry behind a VXLAN port.
    pub vtep: Option<Ipv4Addr>,
}

/// vswitchd as the agent sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalState {
    /// The VXLAN ports the agent manages.
    pub ports: Vec<VxlanPort>,
    /// FDB rows of each bridge that has one of those ports.
    pub fdb: BTreeMap<String, Vec<FdbEntry>>,
}

impl LocalState {
    /// Every local VTEP address.
    pub fn local_addrs(&self) -> BTreeSet<Ipv4Addr> {
        self.ports.iter().map(|p| p.local).collect()
    }
}

/// A Route Distinguisher as `ADMIN:ASSIGNED` (RFC 7432 §7.9 uses type 1,
/// `IP:number`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rd(pub String);

impl Rd {
    /// The type-1 RD `local:vni` of one of our EVIs; `None` when the VNI
    /// does not fit the 16-bit assigned number.
    pub fn for_evi(local: Ipv4Addr, vni: u32) -> Option<Rd> {
        u16::try_from(vni).ok().map(|n| Rd(format!("{local}:{n}")))
    }

    /// The administrator part as an IPv4 address (type 1 RDs).
    pub fn admin_ip(&self) -> Option<Ipv4Addr> {
        self.0.rsplit_once(':').and_then(|(a, _)| a.parse().ok())
    }
}

impl fmt::Display for Rd {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The NLRI of the two EVPN route types the agent uses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Nlri {
    /// Type 2, MAC/IP Advertisement (RFC 7432 §7.2).
    MacIp {
        rd: Rd,
        etag: u32,
        mac: MacAddr,
        /// `None`: no IP address in the route (length 0).
        ip: Option<IpAddr>,
    },
    /// Type 3, Inclusive Multicast Ethernet Tag (RFC 7432 §7.3).
    Imet { rd: Rd, etag: u32, ip: IpAddr },
}

impl Nlri {
    pub fn rd(&self) -> &Rd {
        match self {
            Nlri::MacIp { rd, .. } | Nlri::Imet { rd, .. } => rd,
        }
    }
}

impl fmt::Display for Nlri {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Nlri::MacIp { rd, etag, mac, ip } => {
                write!(f, "type-2 [rd {rd}][etag {etag}][mac {mac}]")?;
                if let Some(ip) = ip {
                    write!(f, "[ip {ip}]")?;
                }
                Ok(())
            }
            Nlri::Imet { rd, etag, ip } => write!(f, "type-3 [rd {rd}][etag {etag}][ip {ip}]"),
        }
    }
}

/// One path of the speaker's EVPN RIB, reduced to what the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub nlri: Nlri,
    /// Type 2: the first label (the VNI, RFC 8365 §5.1.3); type 3: the
    /// PMSI tunnel attribute's label.
    pub label: Option<u32>,
    /// The BGP next hop (IPv4 only; others are `None`).
    pub nexthop: Option<Ipv4Addr>,
    /// Type 3: the PMSI tunnel's endpoint with ingress replication.
    pub pmsi_tunnel: Option<Ipv4Addr>,
    /// Route targets as `ADMIN:ASSIGNED`.
    pub rts: Vec<String>,
    /// MAC Mobility sequence number (RFC 7432 §7.7), 0 without one.
    pub mobility_seq: u32,
    /// When the speaker got the path (seconds, larger is newer).
    pub age: i64,
    /// Originated by this speaker (no neighbor), i.e. ours.
    pub local: bool,
}

/// A route this host advertises.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Advert {
    pub nlri: Nlri,
    /// The VNI, as label (type 2) or PMSI tunnel label (type 3).
    pub label: u32,
    pub nexthop: Ipv4Addr,
    /// `ASN:VNI`.
    pub rt: String,
}

impl Advert {
    /// Type 3 for one local VNI (RFC 7432 §11.1, RFC 8365 §5.1.3).
    pub fn imet(asn: u32, local: Ipv4Addr, vni: u32) -> Option<Advert> {
        Some(Advert {
            nlri: Nlri::Imet {
                rd: Rd::for_evi(local, vni)?,
                etag: 0,
                ip: IpAddr::V4(local),
            },
            label: vni,
            nexthop: local,
            rt: route_target(asn, vni),
        })
    }

    /// Type 2 for one locally learned MAC (RFC 7432 §9.1).
    pub fn mac(asn: u32, local: Ipv4Addr, vni: u32, mac: MacAddr) -> Option<Advert> {
        Some(Advert {
            nlri: Nlri::MacIp {
                rd: Rd::for_evi(local, vni)?,
                etag: 0,
                mac,
                ip: None,
            },
            label: vni,
            nexthop: local,
            rt: route_target(asn, vni),
        })
    }

    /// Whether `p` (one of our paths in the RIB) is this route, attributes
    /// included.
    pub fn matches(&self, p: &Path) -> bool {
        let pmsi_ok = match self.nlri {
            Nlri::Imet { .. } => p.pmsi_tunnel == Some(self.nexthop),
            Nlri::MacIp { .. } => true,
        };
        p.nlri == self.nlri
            && p.label == Some(self.label)
            && p.nexthop == Some(self.nexthop)
            && p.rts.contains(&self.rt)
            && pmsi_ok
    }
}

/// The route target of a VNI: `ASN:VNI` (RFC 8365 §5.1.2.1).
pub fn route_target(asn: u32, vni: u32) -> String {
    format!("{asn}:{vni}")
}

/// Key of an FDB entry: bridge, VLAN, MAC.
pub type FdbKey = (String, u16, MacAddr);

/// What the agent does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `gobgp global rib add -a evpn ...`
    Advertise(Advert),
    /// `gobgp global rib del -a evpn ...`; the label is part of the type-2
    /// NLRI as GoBGP's CLI spells it.
    Withdraw { nlri: Nlri, label: u32 },
    /// `set-port PORT --remote-add IP` (as vswitchctl spells it)
    RemoteAdd { port: String, ip: Ipv4Addr },
    /// `set-port PORT --remote-del IP`
    RemoteDel { port: String, ip: Ipv4Addr },
    /// `fdb-add BR MAC PORT --vtep IP --vlan V`; with `replace`
    /// the entry there is deleted first.
    FdbAdd {
        bridge: String,
        mac: MacAddr,
        vlan: u16,
        port: String,
        vtep: Ipv4Addr,
        replace: bool,
    },
    /// `fdb-del BR MAC --vlan V`
    FdbDel {
        bridge: String,
        mac: MacAddr,
        vlan: u16,
    },
    /// Bookkeeping only: a static entry that is exactly what a route asks
    /// for (left by an earlier run of the agent) becomes the agent's.
    AdoptFdb {
        key: FdbKey,
        port: String,
        vtep: Ipv4Addr,
    },
    /// Bookkeeping only: an entry the agent made is gone.
    ForgetFdb { key: FdbKey },
    /// Bookkeeping only: a remote the agent added is gone (or its port is).
    ForgetRemote { port: String, ip: Ipv4Addr },
}

impl Action {
    /// Whether it changes anything outside the agent.
    pub fn is_external(&self) -> bool {
        !matches!(
            self,
            Action::AdoptFdb { .. } | Action::ForgetFdb { .. } | Action::ForgetRemote { .. }
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Action::Advertise(a) => write!(
                f,
                "advertise {} label {} next hop {} rt {}",
                a.nlri, a.label, a.nexthop, a.rt
            ),
            Action::Withdraw { nlri, .. } => write!(f, "withdraw {nlri}"),
            Action::RemoteAdd { port, ip } => write!(f, "flood list of {port}: add {ip}"),
            Action::RemoteDel { port, ip } => write!(f, "flood list of {port}: remove {ip}"),
            Action::FdbAdd {
                bridge,
                mac,
                vlan,
                port,
                vtep,
                replace,
            } => write!(
                f,
                "fdb {bridge} vlan {vlan}: {mac} -> {port} vtep {vtep}{}",
                if *replace { " (replacing)" } else { "" }
            ),
            Action::FdbDel { bridge, mac, vlan } => {
                write!(f, "fdb {bridge} vlan {vlan}: remove {mac}")
            }
            Action::AdoptFdb { key, port, vtep } => write!(
                f,
                "fdb {} vlan {}: {} -> {port} vtep {vtep} already there, taken over",
                key.0, key.1, key.2
            ),
            Action::ForgetFdb { key } => {
                write!(f, "fdb {} vlan {}: {} is gone", key.0, key.1, key.2)
            }
            Action::ForgetRemote { port, ip } => {
                write!(f, "flood list of {port}: {ip} is gone")
            }
        }
    }
}

/// What the agent has put into vswitchd (and so may take out again), and
/// the local addresses it has advertised from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Programmed {
    /// Flood-list entries the agent added: (port, remote).
    pub remotes: BTreeSet<(String, Ipv4Addr)>,
    /// Static FDB entries the agent added: key → (port, VTEP).
    pub fdb: BTreeMap<FdbKey, (String, Ipv4Addr)>,
    /// Local VTEP addresses the agent has advertised routes from (its RDs'
    /// administrators), to find its routes once a port is gone.
    pub locals: BTreeSet<Ipv4Addr>,
}

impl Programmed {
    /// Notes an action that succeeded.
    pub fn record(&mut self, a: &Action) {
        match a {
            Action::Advertise(ad) => {
                self.locals.insert(ad.nexthop);
            }
            Action::Withdraw { .. } => {}
            Action::RemoteAdd { port, ip } => {
                self.remotes.insert((port.clone(), *ip));
            }
            Action::RemoteDel { port, ip } => {
                self.remotes.remove(&(port.clone(), *ip));
            }
            Action::FdbAdd {
                bridge,
                mac,
                vlan,
                port,
                vtep,
                ..
            } => {
                self.fdb
                    .insert((bridge.clone(), *vlan, *mac), (port.clone(), *vtep));
            }
            Action::FdbDel { bridge, mac, vlan } => {
                self.fdb.remove(&(bridge.clone(), *vlan, *mac));
            }
            Action::AdoptFdb { key, port, vtep } => {
                self.fdb.insert(key.clone(), (port.clone(), *vtep));
            }
            Action::ForgetFdb { key } => {
                self.fdb.remove(key);
            }
            Action::ForgetRemote { port, ip } => {
                self.remotes.remove(&(port.clone(), *ip));
            }
        }
    }
}
