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
}

impl PortType {
    pub fn name(self) -> &'static str {
        match self {
            PortType::Tap => "tap",
            PortType::Afpacket => "afpacket",
            PortType::Vxlan => "vxlan",
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
            || self.vtep_learning;
        match self.kind {
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
                if self.remotes.is_empty() {
                    return Err("a vxlan port needs at least one --remote".into());
                }
                if self.remotes.len() > MAX_REMOTES {
                    return Err(format!("too many remotes (limit {MAX_REMOTES})"));
                }
                for r in &self.remotes {
                    if r.is_ipv4() != local.is_ipv4() {
                        return Err(format!(
                            "remote {r} and local {local} are not the same address family"
                        ));
                    }
                    if r.is_unspecified() || r.is_multicast() || *r == local {
                        return Err(format!("remote {r} must be another unicast address"));
                    }
                }
                if self.dstport == Some(0) {
                    return Err("--dstport must be 1-65535".into());
                }
                Ok(())
            }
            _ if vxlan_set => Err(format!(
                "--vni, --local, --remote, --dstport and --learning are for vxlan ports, not {}",
                self.kind.name()
            )),
            _ => Ok(()),
        }
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
}
