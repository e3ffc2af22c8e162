//! The control protocol's requests: one JSON object per line on the control
//! socket, `{"cmd": "add-br", "name": "br0"}`, answered by one line
//! `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`.

use crate::config::{DnatConfig, Ipv4Cidr, PortConfig, RifConfig, RouteConfig, SnatConfig};
use crate::MacAddr;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Liveness check; answers the daemon's version.
    Ping,
    AddBr {
        name: String,
        #[serde(default)]
        stp: bool,
        #[serde(default)]
        ageing_s: Option<u32>,
        /// 0 or absent: no limit beyond the built-in ceiling.
        #[serde(default)]
        fdb_max: Option<u32>,
        #[serde(default)]
        priority: Option<u16>,
        #[serde(default)]
        hello_s: Option<u8>,
        #[serde(default)]
        max_age_s: Option<u8>,
        #[serde(default)]
        forward_delay_s: Option<u8>,
    },
    DelBr {
        name: String,
    },
    SetBr {
        name: String,
        #[serde(default)]
        ageing_s: Option<u32>,
        /// 0 removes the limit.
        #[serde(default)]
        fdb_max: Option<u32>,
        #[serde(default)]
        stp: Option<bool>,
        #[serde(default)]
        priority: Option<u16>,
        #[serde(default)]
        hello_s: Option<u8>,
        #[serde(default)]
        max_age_s: Option<u8>,
        #[serde(default)]
        forward_delay_s: Option<u8>,
        /// Link-local groups to relay (bit X: 01:80:C2:00:00:0X).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_fwd_mask: Option<u16>,
    },
    ListBr,
    /// Spanning-tree state of a bridge.
    StpShow {
        bridge: String,
    },
    AddPort {
        bridge: String,
        port: PortConfig,
    },
    DelPort {
        name: String,
    },
    /// Changes a port's VLAN mode, isolation or learning. `access_vlan`
    /// makes it an access port; `trunk_vlans` (with optional `native_vlan`)
    /// a trunk; `native_vlan` alone changes a trunk's native VLAN.
    SetPort {
        name: String,
        #[serde(default)]
        access_vlan: Option<u16>,
        #[serde(default)]
        trunk_vlans: Option<String>,
        #[serde(default)]
        native_vlan: Option<u16>,
        #[serde(default)]
        isolated: Option<bool>,
        #[serde(default)]
        learning: Option<bool>,
        /// 0 removes the limit.
        #[serde(default)]
        mac_limit: Option<u32>,
        /// Setting it (on or off) also re-enables a port the guard shut.
        #[serde(default)]
        bpdu_guard: Option<bool>,
        #[serde(default)]
        stp_cost: Option<u32>,
        #[serde(default)]
        stp_priority: Option<u8>,
        /// Egress impairment (0: off): delay and jitter in ms, loss in
        /// parts per million, rate in bits a second, queue limit in frames.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delay_ms: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jitter_ms: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loss_ppm: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rate_bps: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
        /// Broadcast/multicast/unknown-unicast frames a second (0: off).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        storm_limit: Option<u32>,
        /// VXLAN: remotes to put on the flood list.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        remote_add: Vec<std::net::IpAddr>,
        /// VXLAN: remotes to take off it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        remote_del: Vec<std::net::IpAddr>,
    },
    ListPorts {
        #[serde(default)]
        bridge: Option<String>,
    },
    FdbShow {
        bridge: String,
    },
    /// One frame (hex bytes) arriving on `port` of `bridge`, through the
    /// forwarding decision with no side effects.
    Trace {
        bridge: String,
        port: String,
        frame: String,
    },
    /// The trace records of the next `count` frames received (on `port`, or
    /// any), answered once they are all there (or after 80 s).
    TraceLive {
        count: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<String>,
    },
    /// Copies of what `port` receives and/or sends (`dir`: rx, tx, both),
    /// streamed as JSON lines after the reply, `count` of them (or until
    /// the client goes away).
    Capture {
        port: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dir: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
    },
    /// Stream events (`fdb`, `ports`, `stp`; none: all) as JSON lines after
    /// the reply, until the client goes away.
    Monitor {
        #[serde(default)]
        kinds: Vec<String>,
    },
    FdbAdd {
        bridge: String,
        mac: MacAddr,
        port: String,
        #[serde(default)]
        vlan: Option<u16>,
        /// A VXLAN port: the remote VTEP the station is behind.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vtep: Option<std::net::IpAddr>,
    },
    FdbDel {
        bridge: String,
        mac: MacAddr,
        #[serde(default)]
        vlan: Option<u16>,
    },
    FdbFlush {
        bridge: String,
        #[serde(default)]
        port: Option<String>,
    },
    Stats {
        #[serde(default)]
        port: Option<String>,
    },
    Show,
    /// A router interface on a bridge (an SVI) or on a TUN device.
    AddRif {
        rif: RifConfig,
    },
    /// Removes a router interface, its connected and static routes through
    /// it, its neighbours, its SNAT rule and that rule's flows (and the TUN
    /// device, if the daemon created it).
    DelRif {
        name: String,
    },
    AddRoute {
        route: RouteConfig,
    },
    DelRoute {
        prefix: Ipv4Cidr,
    },
    AddSnat {
        snat: SnatConfig,
    },
    DelSnat {
        out: String,
    },
    /// A port forwarding rule.
    AddDnat {
        dnat: DnatConfig,
    },
    /// Removes a port forwarding rule and its flows.
    DelDnat {
        #[serde(rename = "in")]
        in_rif: String,
        proto: String,
        port: u16,
    },
    /// Router-wide settings (absent: unchanged).
    SetRouter {
        #[serde(default)]
        nat_max_flows: Option<u32>,
    },
    RifShow,
    RouteShow,
    ArpShow,
    NatShow,
    SnatShow,
    DnatShow,
    /// The running configuration as the typed model (JSON).
    GetConfig,
    /// Write the running configuration as TOML (handled by the control server).
    Save {
        #[serde(default)]
        file: Option<String>,
    },
}

/// Spanning-tree bridge parameters; absent ones are left as they are
/// (or take the 802.1D defaults on a new bridge).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StpParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hello_s: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_s: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_delay_s: Option<u8>,
}

impl StpParams {
    /// Applies the given values over `base`, and checks the result.
    pub fn apply(
        &self,
        base: crate::bridge::stp::StpSettings,
    ) -> Result<crate::bridge::stp::StpSettings, String> {
        let mut s = base;
        if let Some(p) = self.priority {
            s.priority = p;
        }
        if let Some(h) = self.hello_s {
            s.hello_s = h;
        }
        if let Some(m) = self.max_age_s {
            s.max_age_s = m;
        }
        if let Some(f) = self.forward_delay_s {
            s.forward_delay_s = f;
        }
        s.validate()?;
        Ok(s)
    }

    pub fn is_empty(&self) -> bool {
        *self == StpParams::default()
    }
}

/// A reply line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn from_result(r: Result<serde_json::Value, String>) -> Reply {
        match r {
            Ok(v) => Reply {
                ok: true,
                result: Some(v),
                error: None,
            },
            Err(e) => Reply {
                ok: false,
                result: None,
                error: Some(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let r: Request =
            serde_json::from_str(r#"{"cmd":"add-br","name":"br0","fdb_max":5}"#).unwrap();
        assert_eq!(
            r,
            Request::AddBr {
                name: "br0".into(),
                stp: false,
                ageing_s: None,
                fdb_max: Some(5),
                priority: None,
                hello_s: None,
                max_age_s: None,
                forward_delay_s: None,
            }
        );
        let r: Request = serde_json::from_str(
            r#"{"cmd":"add-port","bridge":"br0","port":{"name":"p1","type":"tap","netns":"h1"}}"#,
        )
        .unwrap();
        assert!(matches!(r, Request::AddPort { .. }));
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"list-br"}"#).is_ok());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"nope"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"del-br","name":"x","zzz":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(
            r#"{"cmd":"fdb-add","bridge":"b","mac":"zz","port":"p"}"#
        )
        .is_err());
        assert!(serde_json::from_str::<Request>("[1,2]").is_err());
    }
}
