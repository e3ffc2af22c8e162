//! The typed configuration model, shared by the control protocol, the
//! `--config` TOML file and `vswitchctl save`.
//!
//! ```toml
//! [[bridge]]
//! name = "br0"
//! ageing_s = 300
//!
//! [[bridge.port]]
//! name = "h1"
//! type = "tap"
//! netns = "h1"
//! ifname = "eth0"
//!
//! [[bridge.fdb]]
//! mac = "02:00:00:00:00:01"
//! port = "h1"
//! ```

use crate::bridge::vlan::{parse_vid, VlanMode, VlanSet};
use crate::bridge::{
    Member, DEFAULT_AGEING_S, DEFAULT_STP_COST, DEFAULT_STP_PRIORITY, DEFAULT_VLAN,
};
use crate::MacAddr;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Most remote VTEPs one VXLAN port replicates to (configured plus learned).
pub const MAX_REMOTES: usize = 1024;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, rename = "bridge", skip_serializing_if = "Vec::is_empty")]
    pub bridges: Vec<BridgeConfig>,
    /// Router settings (NAT table size).
    #[serde(default, skip_serializing_if = "RouterConfig::is_default")]
    pub router: RouterConfig,
    /// Router interfaces, applied after the bridges they sit on.
    #[serde(default, rename = "rif", skip_serializing_if = "Vec::is_empty")]
    pub rifs: Vec<RifConfig>,
    /// Static routes (connected ones come from the interfaces).
    #[serde(default, rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    #[serde(default, rename = "snat", skip_serializing_if = "Vec::is_empty")]
    pub snat: Vec<SnatConfig>,
    /// Port forwarding rules, applied after the SNAT rules.
    #[serde(default, rename = "dnat", skip_serializing_if = "Vec::is_empty")]
    pub dnat: Vec<DnatConfig>,
}

/// Router-wide settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Most connections the SNAT table tracks; new ones beyond it are
    /// refused (`nat_table_full`) while existing ones keep working.
    #[serde(default = "default_nat_max")]
    pub nat_max_flows: u32,
}

/// Default limit on tracked SNAT connections.
pub const DEFAULT_NAT_MAX_FLOWS: u32 = 262_144;

fn default_nat_max() -> u32 {
    DEFAULT_NAT_MAX_FLOWS
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            nat_max_flows: default_nat_max(),
        }
    }
}

impl RouterConfig {
    pub fn is_default(&self) -> bool {
        *self == RouterConfig::default()
    }
}

/// An IPv4 interface address with its prefix length (`10.0.0.1/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    pub addr: std::net::Ipv4Addr,
    pub len: u8,
}

impl Ipv4Cidr {
    /// The network (address with the host bits cleared).
    pub fn network(&self) -> std::net::Ipv4Addr {
        let mask = if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        };
        std::net::Ipv4Addr::from(u32::from(self.addr) & mask)
    }

    /// Whether `ip` is in the same subnet.
    pub fn contains(&self, ip: std::net::Ipv4Addr) -> bool {
        Ipv4Cidr {
            addr: ip,
            len: self.len,
        }
        .network()
            == self.network()
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid IPv4 prefix '{s}' (expected A.B.C.D/LEN, LEN 0-32)");
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, l.parse::<u8>().map_err(|_| bad())?),
            None => (s, 32),
        };
        let addr = a.parse().map_err(|_| bad())?;
        if l > 32 {
            return Err(bad());
        }
        Ok(Ipv4Cidr { addr, len: l })
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a router interface sits on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RifType {
    /// An internal port of a bridge (an SVI), on one VLAN of it.
    #[default]
    Bridge,
    /// A TUN device (IP packets, no Ethernet).
    Tun,
}

impl RifType {
    pub fn name(self) -> &'static str {
        match self {
            RifType::Bridge => "bridge",
            RifType::Tun => "tun",
        }
    }
}

fn is_default_rif_type(t: &RifType) -> bool {
    *t == RifType::Bridge
}

/// A router interface as the user asked for it (`add-rif`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RifConfig {
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "is_default_rif_type")]
    pub kind: RifType,
    /// Bridge rifs: the bridge, and the VLAN on it (the bridge's default
    /// VLAN 1 if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    pub addr: Ipv4Cidr,
    /// Bridge rifs: the interface's MAC (a stable locally administered one
    /// derived from the name if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// TUN rifs: namespace and interface name of the kernel side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Largest IP packet sent out of the interface (1500 if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

impl RifConfig {
    /// Checks that the settings fit the interface type.
    pub fn check(&self) -> Result<(), String> {
        let a = self.addr.addr;
        if a.is_unspecified()
            || a.is_multicast()
            || a.is_broadcast()
            || self.addr.len > 30 && self.addr.len != 32
        {
            return Err(format!(
                "--addr {} is not a usable interface address (unicast, prefix /0-/30 or /32)",
                self.addr
            ));
        }
        if let Some(m) = self.mtu {
            if !(576..=65535).contains(&m) {
                return Err(format!("MTU {m} out of range (576-65535)"));
            }
        }
        match self.kind {
            RifType::Bridge => {
                if self.bridge.is_none() {
                    return Err("a router interface needs --br BRIDGE or --type tun".into());
                }
                if self.netns.is_some() || self.ifname.is_some() {
                    return Err("--netns and --ifname are for --type tun router interfaces".into());
                }
                if let Some(v) = self.vlan {
                    parse_vid(&v.to_string())?;
                }
                if let Some(m) = self.mac {
                    if !m.is_valid_station() {
                        return Err(format!("{m} is not a unicast station address"));
                    }
                }
                Ok(())
            }
            RifType::Tun => {
                if self.bridge.is_some() || self.vlan.is_some() || self.mac.is_some() {
                    return Err(
                        "--br, --vlan and --mac are for bridge router interfaces, not --type tun"
                            .into(),
                    );
                }
                Ok(())
            }
        }
    }

    /// TUN rifs: the interface name (`--ifname`, else the rif name).
    pub fn ifname(&self) -> &str {
        self.ifname.as_deref().unwrap_or(&self.name)
    }
}

/// A static route (`add-route PREFIX via GW` or `add-route PREFIX dev RIF`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub prefix: Ipv4Cidr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<std::net::Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
}

/// A source NAT rule (`add-snat --out RIF [--to IP[-IP]] [--src PREFIX]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnatConfig {
    /// Packets leaving through this router interface are translated.
    pub out: String,
    /// Outside addresses, `IP` or `IP-IP`; the interface's address if absent
    /// (masquerade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Only packets from this prefix (all if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<Ipv4Cidr>,
}

impl SnatConfig {
    /// The `--to` range, parsed: first and last address.
    pub fn to_range(&self) -> Result<Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>, String> {
        let Some(t) = &self.to else { return Ok(None) };
        let bad = || format!("invalid --to '{t}' (expected IP or IP-IP)");
        let (a, b) = match t.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (t.trim(), t.trim()),
        };
        let a: std::net::Ipv4Addr = a.parse().map_err(|_| bad())?;
        let b: std::net::Ipv4Addr = b.parse().map_err(|_| bad())?;
        if u32::from(b) < u32::from(a) {
            return Err(format!("--to {t}: the last address is below the first"));
        }
        if u32::from(b) - u32::from(a) >= 65536 {
            return Err(format!("--to {t}: at most 65536 addresses"));
        }
        Ok(Some((a, b)))
    }
}

/// A port forwarding (DNAT) rule (`add-dnat --in RIF --proto tcp|udp --port N
/// --to IP[:PORT]`): connections arriving on `in` to its address (or an
/// address of its SNAT pool) at `port` go to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnatConfig {
    /// The router interface the connections arrive on.
    #[serde(rename = "in")]
    pub in_rif: String,
    /// "tcp" or "udp".
    pub proto: String,
    /// The forwarded port.
    pub port: u16,
    /// The inside server, `IP` or `IP:PORT` (the port defaults to `port`).
    pub to: String,
}

impl DnatConfig {
    /// The IP protocol number of `proto` (6 or 17).
    pub fn proto_num(&self) -> Result<u8, String> {
        match self.proto.to_ascii_lowercase().as_str() {
            "tcp" => Ok(6),
            "udp" => Ok(17),
            p => Err(format!("invalid --proto '{p}' (expected tcp or udp)")),
        }
    }

    /// `to` parsed: the inside address and port.
    pub fn to_endpoint(&self) -> Result<(std::net::Ipv4Addr, u16), String> {
        let t = self.to.trim();
        let bad = || format!("invalid --to '{t}' (expected IP or IP:PORT)");
        let (ip, port) = match t.split_once(':') {
            Some((a, p)) => (a, p.parse::<u16>().map_err(|_| bad())?),
            None => (t, self.port),
        };
        let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| bad())?;
        if ip.is_unspecified()
            || ip.is_broadcast()
            || ip.is_multicast()
            || ip.is_loopback()
            || ip.octets()[0] == 0
            || ip.octets()[0] >= 240
        {
            return Err(format!("--to {ip} is not a unicast address"));
        }
        if port == 0 {
            return Err(format!("--to {t}: port 0"));
        }
        Ok((ip, port))
    }

    /// Checks the rule and writes `to` as `IP:PORT`.
    pub fn normalized(mut self) -> Result<DnatConfig, String> {
        if self.port == 0 {
            return Err("--port must be 1-65535".into());
        }
        self.proto = match self.proto_num()? {
            6 => "tcp".into(),
            _ => "udp".into(),
        };
        let (ip, port) = self.to_endpoint()?;
        self.to = format!("{ip}:{port}");
        Ok(self)
    }
}

fn default_ageing() -> u32 {
    DEFAULT_AGEING_S
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub stp: bool,
    #[serde(default = "default_ageing")]
    pub ageing_s: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fdb_max: Option<u32>,
    /// Spanning-tree bridge priority and timers (802.1D defaults if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hello_s: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_s: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_delay_s: Option<u8>,
    /// Link-local groups relayed (bit X: 01:80:C2:00:00:0X).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_fwd_mask: Option<u16>,
    #[serde(default, rename = "port", skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
    #[serde(default, rename = "fdb", skip_serializing_if = "Vec::is_empty")]
    pub fdb: Vec<StaticFdbConfig>,
}

impl BridgeConfig {
    pub fn new(name: &str) -> BridgeConfig {
        BridgeConfig {
            name: name.to_string(),
            stp: false,
            ageing_s: DEFAULT_AGEING_S,
            fdb_max: None,
            priority: None,
            hello_s: None,
            max_age_s: None,
            forward_delay_s: None,
            group_fwd_mask: None,
            ports: Vec::new(),
            fdb: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortType {
    Tap,
    Afpacket,
    Vxlan,
    #[serde(rename = "vhost-user")]
    VhostUser,
}

/// Which side of a vhost-user socket the switch is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VhostMode {
    /// Listen on the socket (QEMU connects: `-chardev socket,path=...`).
    #[default]
    Server,
    /// Connect to the socket (QEMU listens: `-chardev socket,...,server=on`).
    Client,
}

impl PortType {
    pub fn name(self) -> &'static str {
        match self {
            PortType::Tap => "tap",
            PortType::Afpacket => "afpacket",
            PortType::Vxlan => "vxlan",
            PortType::VhostUser => "vhost-user",
        }
    }
}

/// A port as the user asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: PortType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Access port: this one VLAN, untagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_vlan: Option<u16>,
    /// Trunk port: these VLANs tagged, as `10,20,100-110`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunk_vlans: Option<String>,
    /// Trunk port: this VLAN untagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_vlan: Option<u16>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub isolated: bool,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub learning: bool,
    /// Most addresses learned on the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub bpdu_guard: bool,
    /// Spanning-tree path cost and priority of the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stp_cost: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stp_priority: Option<u8>,
    /// VXLAN: the segment's VNI (24 bits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// VXLAN: underlay address the UDP socket binds to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<IpAddr>,
    /// VXLAN: the remote VTEPs (head-end replication list).
    #[serde(default, rename = "remote", skip_serializing_if = "Vec::is_empty")]
    pub remotes: Vec<IpAddr>,
    /// VXLAN: UDP port (4789 if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dstport: Option<u16>,
    /// VXLAN: accept frames from VTEPs that are not configured remotes (and
    /// learn where their stations are).
    #[serde(default, skip_serializing_if = "is_false")]
    pub vtep_learning: bool,
    /// Egress impairment (labs): delay and jitter in ms, loss in parts per
    /// million, rate in bits a second, queue limit in frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_ppm: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_bps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Storm control: broadcast, multicast and unknown unicast frames a
    /// second entering the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm_limit: Option<u32>,
    /// VXLAN: the outer UDP source-port range ("MIN-MAX"; 49152-65535 if
    /// absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srcport: Option<PortRange>,
    /// vhost-user: the Unix socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// vhost-user: server (default) or client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<VhostMode>,
}

/// A range of UDP ports, both ends inclusive, written `MIN-MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

/// RFC 7348 §5: the outer source port "SHOULD be within the dynamic/private
/// port range 49152-65535".
pub const SRCPORT_DEFAULT: PortRange = PortRange {
    min: 49152,
    max: 65535,
};

impl std::str::FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<PortRange, String> {
        let bad = || format!("invalid port range '{s}': expected MIN-MAX, 1-65535, MIN <= MAX");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let min: u16 = a.trim().parse().map_err(|_| bad())?;
        let max: u16 = b.trim().parse().map_err(|_| bad())?;
        if min == 0 || min > max {
            return Err(bad());
        }
        Ok(PortRange { min, max })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<PortRange, String> {
        s.parse()
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> String {
        r.to_string()
    }
}

/// The IANA-assigned VXLAN port (RFC 7348 section 5).
pub const VXLAN_PORT: u16 = 4789;
/// Largest VXLAN network identifier (24 bits).
pub const VNI_MAX: u32 = (1 << 24) - 1;

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl PortConfig {
    pub fn new(name: &str, kind: PortType) -> PortConfig {
        PortConfig {
            name: name.to_string(),
            kind,
            netns: None,
            ifname: None,
            mac: None,
            mtu: None,
            access_vlan: None,
            trunk_vlans: None,
            native_vlan: None,
            isolated: false,
            learning: true,
            mac_limit: None,
            bpdu_guard: false,
            stp_cost: None,
            stp_priority: None,
            vni: None,
            local: None,
            remotes: Vec::new(),
            dstport: None,
            vtep_learning: false,
            srcport: None,
            path: None,
            mode: None,
            storm_limit: None,
            delay_ms: None,
            jitter_ms: None,
            loss_ppm: None,
            rate_bps: None,
            limit: None,
        }
    }

    /// Checks the settings that belong to the port's type: a VXLAN port has
    /// a VNI, a local address and remotes of the same family, and none of
    /// the device settings; other ports have no VXLAN settings.
    pub fn check_kind(&self) -> Result<(), String> {
        let vxlan_set = self.vni.is_some()
            || self.local.is_some()
            || !self.remotes.is_empty()
            || self.dstport.is_some()
            || self.vtep_learning
            || self.srcport.is_some();
        let vhost_set = self.path.is_some() || self.mode.is_some();
        if vhost_set && self.kind != PortType::VhostUser {
            return Err(format!(
                "--path, --server and --client are for vhost-user ports, not {}",
                self.kind.name()
            ));
        }
        match self.kind {
            PortType::VhostUser => {
                if self.netns.is_some()
                    || self.ifname.is_some()
                    || self.mac.is_some()
                    || self.mtu.is_some()
                {
                    return Err("vhost-user ports have no device: --netns, --ifname, --mac and --mtu do not apply (the guest sets its own MAC)".into());
                }
                if vxlan_set {
                    return Err("--vni, --local, --remote, --dstport, --srcport and --learning are for vxlan ports, not vhost-user".into());
                }
                match self.path.as_deref() {
                    None | Some("") => Err("a vhost-user port needs --path SOCKET".into()),
                    Some(p) if p.len() >= 108 => Err(format!(
                        "--path {p}: a Unix socket path has at most 107 bytes"
                    )),
                    Some(_) => Ok(()),
                }
            }
            PortType::Vxlan => {
                if self.netns.is_some()
                    || self.ifname.is_some()
                    || self.mac.is_some()
                    || self.mtu.is_some()
                {
                    return Err("vxlan ports have no device: --netns, --ifname, --mac and --mtu do not apply".into());
                }
                match self.vni {
                    None => return Err("a vxlan port needs --vni".into()),
                    Some(v) if v > VNI_MAX => {
                        return Err(format!("VNI {v} out of range (0-{VNI_MAX})"))
                    }
                    Some(_) => {}
                }
                let Some(local) = self.local else {
                    return Err("a vxlan port needs --local (the underlay address)".into());
                };
                if local.is_unspecified() || local.is_multicast() {
                    return Err(format!("--local {local} must be a unicast address"));
                }
                if self.remotes.len() > MAX_REMOTES {
                    return Err(format!("too many remotes (limit {MAX_REMOTES})"));
                }
                for r in &self.remotes {
                    check_remote(local, *r)?;
                }
                if self.dstport == Some(0) {
                    return Err("--dstport must be 1-65535".into());
                }
                let dst = self.dstport.unwrap_or(VXLAN_PORT);
                if let Some(r) = self.srcport {
                    if (r.min..=r.max).contains(&dst) && r.min == r.max {
                        return Err(format!("--srcport {r} is only the VXLAN port {dst}"));
                    }
                }
                Ok(())
            }
            _ if vxlan_set => Err(format!(
                "--vni, --local, --remote, --dstport, --srcport and --learning are for vxlan ports, not {}",
                self.kind.name()
            )),
            _ => Ok(()),
        }
    }

    /// The outer source-port range of a VXLAN port.
    pub fn srcport_range(&self) -> PortRange {
        self.srcport.unwrap_or(SRCPORT_DEFAULT)
    }

    /// The port's bridge membership (VLAN mode, isolation, learning), checked.
    pub fn member(&self) -> Result<Member, String> {
        let check = |v: u16| parse_vid(&v.to_string());
        let vlan = match (&self.access_vlan, &self.trunk_vlans, self.native_vlan) {
            (Some(_), Some(_), _) => {
                return Err("a port is either access or trunk, not both".into())
            }
            (Some(_), None, Some(_)) | (None, None, Some(_)) => {
                return Err("a native VLAN needs a trunk port (--trunk)".into())
            }
            (Some(a), None, None) => VlanMode::Access(check(*a)?),
            (None, Some(t), native) => VlanMode::Trunk {
                vlans: VlanSet::parse(t)?,
                native: native.map(check).transpose()?,
            },
            (None, None, None) => VlanMode::Access(DEFAULT_VLAN),
        };
        Ok(Member {
            vlan,
            isolated: self.isolated,
            learning: self.learning,
            mac_limit: self.mac_limit.filter(|&l| l > 0),
            bpdu_guard: self.bpdu_guard,
            stp_cost: match self.stp_cost {
                Some(c @ 1..=200_000_000) => c,
                Some(c) => return Err(format!("STP path cost {c} out of range (1-200000000)")),
                None => DEFAULT_STP_COST,
            },
            stp_priority: self.stp_priority.unwrap_or(DEFAULT_STP_PRIORITY),
            internal: false,
            storm_limit: self.storm_limit.filter(|&l| l > 0),
        })
    }

    /// The interface name: `--ifname` if given, else the port name.
    pub fn ifname(&self) -> &str {
        self.ifname.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticFdbConfig {
    pub mac: MacAddr,
    pub port: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Behind a VXLAN port: the remote VTEP the station is behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep: Option<IpAddr>,
}

/// Checks a remote VTEP address against the port's local address.
pub fn check_remote(local: IpAddr, r: IpAddr) -> Result<(), String> {
    if r.is_ipv4() != local.is_ipv4() {
        return Err(format!(
            "remote {r} and local {local} are not the same address family"
        ));
    }
    if r.is_unspecified() || r.is_multicast() || r == local {
        return Err(format!("remote {r} must be another unicast address"));
    }
    Ok(())
}

impl Config {
    /// Parses a TOML configuration; the error names line, column and reason.
    pub fn from_toml(s: &str) -> Result<Config, String> {
        toml::from_str(s).map_err(|e| e.to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config model always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let text = r#"
[[bridge]]
name = "br0"
fdb_max = 100

[[bridge.port]]
name = "h1"
type = "tap"
netns = "h1"
ifname = "eth0"
mac = "02:00:00:00:00:01"

[[bridge.port]]
name = "v1"
type = "afpacket"

[[bridge.fdb]]
mac = "02:00:00:00:00:09"
port = "v1"
"#;
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.bridges[0].ageing_s, 300);
        assert_eq!(c.bridges[0].ports[1].kind, PortType::Afpacket);
        assert_eq!(c.bridges[0].ports[0].ifname(), "eth0");
        assert_eq!(c.bridges[0].ports[1].ifname(), "v1");
        let again = Config::from_toml(&c.to_toml()).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn router_roundtrip_and_checks() {
        let text = r#"
[router]
nat_max_flows = 1000

[[rif]]
name = "gw"
bridge = "brin"
vlan = 10
addr = "10.0.1.1/24"

[[rif]]
name = "vpn"
type = "tun"
netns = "vpn"
ifname = "tun0"
addr = "10.0.8.1/24"

[[route]]
prefix = "0.0.0.0/0"
via = "10.0.1.254"

[[route]]
prefix = "10.9.0.0/16"
dev = "vpn"

[[snat]]
out = "gw"
to = "192.0.2.1-192.0.2.4"
src = "10.0.8.0/24"
"#;
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.router.nat_max_flows, 1000);
        assert_eq!(c.rifs[0].kind, RifType::Bridge);
        assert_eq!(c.rifs[1].kind, RifType::Tun);
        assert_eq!(c.rifs[1].ifname(), "tun0");
        c.rifs.iter().for_each(|r| r.check().unwrap());
        assert_eq!(c.routes[1].dev.as_deref(), Some("vpn"));
        assert_eq!(
            c.snat[0].to_range().unwrap(),
            Some(([192, 0, 2, 1].into(), [192, 0, 2, 4].into()))
        );
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
        // A default router section is not written.
        assert!(!Config::default().to_toml().contains("[router]"));

        let e = Config::from_toml("[[rif]]\nname = \"x\"\naddr = \"10.0.0.300/24\"\n").unwrap_err();
        assert!(
            e.contains("line 3") && e.contains("invalid IPv4 prefix"),
            "{e}"
        );
        let mut r = c.rifs[0].clone();
        r.netns = Some("ns".into());
        assert!(r.check().unwrap_err().contains("--type tun"));
        let mut r = c.rifs[1].clone();
        r.vlan = Some(5);
        assert!(r.check().is_err());
        r = c.rifs[0].clone();
        r.addr = "224.0.0.1/24".parse().unwrap();
        assert!(r.check().is_err());
        r.addr = "10.0.0.1/31".parse().unwrap();
        assert!(
            r.check().is_err(),
            "/31 has no host addresses for a router subnet"
        );
        let mut s = c.snat[0].clone();
        s.to = Some("192.0.2.9-192.0.2.1".into());
        assert!(s.to_range().is_err());
        s.to = Some("nope".into());
        assert!(s.to_range().is_err());
        assert!("10.0.0.1/33".parse::<Ipv4Cidr>().is_err());
        let p: Ipv4Cidr = "10.1.2.3/16".parse().unwrap();
        assert_eq!(p.network(), std::net::Ipv4Addr::new(10, 1, 0, 0));
        assert!(p.contains([10, 1, 200, 1].into()) && !p.contains([10, 2, 0, 1].into()));
    }

    #[test]
    fn vlan_membership() {
        let mut p = PortConfig::new("p", PortType::Tap);
        assert_eq!(p.member().unwrap().vlan, VlanMode::Access(1));
        p.trunk_vlans = Some("10,20".into());
        p.native_vlan = Some(1);
        let m = p.member().unwrap();
        assert_eq!(m.vlan.egress_tagged(20), Some(true));
        assert_eq!(m.vlan.egress_tagged(1), Some(false));
        p.access_vlan = Some(5);
        assert!(p.member().is_err());
        p.trunk_vlans = None;
        assert!(p.member().is_err(), "native without trunk");
        p.native_vlan = None;
        p.access_vlan = Some(4095);
        assert!(p.member().is_err());
        p.access_vlan = Some(0);
        assert!(p.member().is_err());
    }

    #[test]
    fn errors_name_the_line() {
        let e = Config::from_toml("[[bridge]]\nname = \"br0\"\nbogus = 1\n").unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        let e = Config::from_toml(
            "[[bridge]]\nname = \"br0\"\n[[bridge.port]]\nname=\"p\"\ntype=\"nope\"\n",
        )
        .unwrap_err();
        assert!(e.contains("line 5"), "{e}");
    }

    #[test]
    fn vxlan_port() {
        let text = r#"
[[bridge]]
name = "br0"

[[bridge.port]]
name = "vx"
type = "vxlan"
vni = 100
local = "192.0.2.1"
remote = ["192.0.2.2", "192.0.2.3"]
vtep_learning = true
"#;
        let c = Config::from_toml(text).unwrap();
        let p = &c.bridges[0].ports[0];
        assert_eq!(p.kind, PortType::Vxlan);
        assert_eq!(p.vni, Some(100));
        assert_eq!(p.remotes.len(), 2);
        assert!(p.vtep_learning);
        p.check_kind().unwrap();
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);

        let mut bad = p.clone();
        bad.vni = Some(VNI_MAX + 1);
        assert!(bad.check_kind().unwrap_err().contains("out of range"));
        let mut bad = p.clone();
        bad.remotes = vec!["2001:db8::1".parse().unwrap()];
        assert!(bad.check_kind().unwrap_err().contains("family"));
        let mut bad = p.clone();
        bad.mtu = Some(1500);
        assert!(bad.check_kind().unwrap_err().contains("do not apply"));
        let mut tap = PortConfig::new("t", PortType::Tap);
        tap.check_kind().unwrap();
        tap.vni = Some(1);
        assert!(tap.check_kind().unwrap_err().contains("vxlan"));
    }

    #[test]
    fn vhost_user_port_config() {
        let text = r#"
[[bridge]]
name = "br0"
[[bridge.port]]
name = "vm1"
type = "vhost-user"
path = "/run/vswitch/vm1.sock"
mode = "client"
"#;
        let c = Config::from_toml(text).unwrap();
        let p = &c.bridges[0].ports[0];
        assert_eq!(p.kind, PortType::VhostUser);
        assert_eq!(p.kind.name(), "vhost-user");
        assert_eq!(p.mode, Some(VhostMode::Client));
        p.check_kind().unwrap();
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);

        let mut bad = p.clone();
        bad.path = None;
        assert!(bad.check_kind().unwrap_err().contains("--path"));
        let mut bad = p.clone();
        bad.mac = Some("02:00:00:00:00:01".parse().unwrap());
        assert!(bad.check_kind().unwrap_err().contains("do not apply"));
        let mut bad = p.clone();
        bad.path = Some(format!("/tmp/{}", "x".repeat(120)));
        assert!(bad.check_kind().unwrap_err().contains("107"));
        let mut tap = PortConfig::new("t", PortType::Tap);
        tap.path = Some("/tmp/x.sock".into());
        assert!(tap.check_kind().unwrap_err().contains("vhost-user"));
    }
}
