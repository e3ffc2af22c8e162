//! vswitchd over its control socket, with the crate's client
//! (`crate::client`): `ListPorts` and `FdbShow` to read (the JSON
//! `vswitchctl --json` prints), `SetPort` with `remote_add`/`remote_del`,
//! `FdbAdd` with `vtep` and `FdbDel` to change.
//!
//! The changes are written as JSON objects and read back through the
//! daemon's own [`Request`] type (`deny_unknown_fields`): fields the daemon
//! adds later take their defaults, a renamed one is a clear error rather
//! than a request that silently does nothing.

use super::local;
use super::model::{Action, LocalState};
use crate::client::Client;
use dataplane::api::Request;
use serde_json::{json, Value};
use std::marker::PhantomData;
use std::path::PathBuf;

/// How to reach one vswitchd.
#[derive(Debug, Clone)]
pub struct Switch {
    pub socket: PathBuf,
    /// Only these VXLAN ports (all when empty).
    pub only: Vec<String>,
}

impl Switch {
    fn call(&self, req: &Request) -> Result<Value, String> {
        let mut c = Client::connect(&self.socket)?;
        // Read as it streams (fdb-show can be large); one request per
        // connection, as `call_streaming` asks.
        c.call_streaming(req, PhantomData::<Value>)
            .map(|v| v.unwrap_or(Value::Null))
    }

    /// The managed VXLAN ports and the FDBs of their bridges. Notes on
    /// anything skipped go with it.
    pub fn state(&self) -> Result<(LocalState, Vec<String>), String> {
        let ports = self.call(&Request::ListPorts { bridge: None })?;
        let (ports, mut notes) = local::vxlan_ports(&ports, &self.only);
        let mut st = LocalState {
            ports,
            ..LocalState::default()
        };
        let bridges: std::collections::BTreeSet<String> =
            st.ports.iter().map(|p| p.bridge.clone()).collect();
        for br in bridges {
            let rows = self.call(&Request::FdbShow { bridge: br.clone() })?;
            let rows = rows.as_array().map(Vec::as_slice).unwrap_or(&[]);
            let (entries, n) = local::fdb_rows(rows);
            notes.extend(n);
            st.fdb.insert(br, entries);
        }
        Ok((st, notes))
    }

    /// Carries out one vswitchd action (others are not for the switch). A
    /// failing `fdb-del` before a replacing `fdb-add` is fine: the entry
    /// may just have aged out.
    pub fn apply(&self, a: &Action) -> Result<(), String> {
        let steps = requests(a)?;
        let n = steps.len();
        for (i, req) in steps.iter().enumerate() {
            match self.call(req) {
                Err(e) if i + 1 == n => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The control-socket requests for an action, in order.
pub fn requests(a: &Action) -> Result<Vec<Request>, String> {
    request_json(a)
        .into_iter()
        .map(|v| {
            serde_json::from_value::<Request>(v.clone())
                .map_err(|e| format!("vswitchd does not take the request {v}: {e}"))
        })
        .collect()
}

/// The same as JSON objects of the control protocol.
pub fn request_json(a: &Action) -> Vec<Value> {
    match a {
        Action::RemoteAdd { port, ip } => {
            vec![json!({"cmd": "set-port", "name": port, "remote_add": [ip]})]
        }
        Action::RemoteDel { port, ip } => {
            vec![json!({"cmd": "set-port", "name": port, "remote_del": [ip]})]
        }
        Action::FdbAdd {
            bridge,
            mac,
            vlan,
            port,
            vtep,
            replace,
        } => {
            let mut v = Vec::new();
            if *replace {
                v.push(json!({"cmd": "fdb-del", "bridge": bridge, "mac": mac, "vlan": vlan}));
            }
            v.push(
                json!({"cmd": "fdb-add", "bridge": bridge, "mac": mac, "port": port,
                          "vlan": vlan, "vtep": vtep}),
            );
            v
        }
        Action::FdbDel { bridge, mac, vlan } => {
            vec![json!({"cmd": "fdb-del", "bridge": bridge, "mac": mac, "vlan": vlan})]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn requests_are_the_daemons() {
        let ip = Ipv4Addr::new(10, 0, 0, 2);
        let r = requests(&Action::RemoteAdd {
            port: "vx".into(),
            ip,
        })
        .unwrap();
        match &r[..] {
            [Request::SetPort {
                name,
                remote_add,
                remote_del,
                access_vlan: None,
                ..
            }] => {
                assert_eq!(name, "vx");
                assert_eq!(remote_add, &[IpAddr::V4(ip)]);
                assert!(remote_del.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let r = requests(&Action::RemoteDel {
            port: "vx".into(),
            ip,
        })
        .unwrap();
        assert!(
            matches!(&r[..], [Request::SetPort { remote_del, .. }] if remote_del == &[IpAddr::V4(ip)])
        );
        let mac: dataplane::MacAddr = "02:00:00:00:00:05".parse().unwrap();
        let r = requests(&Action::FdbAdd {
            bridge: "br0".into(),
            mac,
            vlan: 3,
            port: "vx".into(),
            vtep: ip,
            replace: true,
        })
        .unwrap();
        match &r[..] {
            [Request::FdbDel {
                bridge,
                mac: m1,
                vlan: Some(3),
            }, Request::FdbAdd {
                mac: m2,
                port,
                vlan: Some(3),
                vtep: Some(v),
                ..
            }] => {
                assert_eq!((bridge.as_str(), *m1, *m2), ("br0", mac, mac));
                assert_eq!((port.as_str(), *v), ("vx", IpAddr::V4(ip)));
            }
            other => panic!("{other:?}"),
        }
        let r = requests(&Action::FdbDel {
            bridge: "br0".into(),
            mac,
            vlan: 1,
        })
        .unwrap();
        assert!(matches!(&r[..], [Request::FdbDel { vlan: Some(1), .. }]));
        assert!(requests(&Action::ForgetFdb {
            key: ("br0".into(), 1, mac)
        })
        .unwrap()
        .is_empty());
    }
}
