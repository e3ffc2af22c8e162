//! vswitchd: its state read over the control socket with the crate's client
//! (`control::client` requests `ListPorts` and `FdbShow`,
//! the same JSON `vswitchctl --json` prints), changes made with
//! `vswitchctl` (`set-port --remote-add/--remote-del`,
//! `fdb-add --vtep`, `fdb-del`), the command-line contract of
//! `../shared/design/interface.md`.

use super::exec;
use super::local;
use super::model::{Action, LocalState};
use control::client::Client;
use dataplane::api::Request;
use serde_json::Value;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach one vswitchd.
#[derive(Debug, Clone)]
pub struct Switch {
    pub socket: PathBuf,
    /// The `vswitchctl` program.
    pub ctl: String,
    pub timeout: Duration,
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

    fn ctl(&self, args: Vec<String>) -> Result<(), String> {
        let mut all = vec!["--socket".to_string(), self.socket.display().to_string()];
        all.extend(args);
        exec::run(&self.ctl, &all, self.timeout).map(drop)
    }

    /// Carries out one vswitchd action (others are not for the switch). A
    /// failing `fdb-del` before a replacing `fdb-add` is fine: the entry
    /// may just have aged out.
    pub fn apply(&self, a: &Action) -> Result<(), String> {
        let steps = ctl_args(a);
        let n = steps.len();
        for (i, args) in steps.into_iter().enumerate() {
            match self.ctl(args) {
                Err(e) if i + 1 == n => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The `vswitchctl` command lines (without `--socket`) for an action.
pub fn ctl_args(a: &Action) -> Vec<Vec<String>> {
    let s = |x: &str| x.to_string();
    match a {
        Action::RemoteAdd { port, ip } => {
            vec![vec![
                s("set-port"),
                port.clone(),
                s("--remote-add"),
                ip.to_string(),
            ]]
        }
        Action::RemoteDel { port, ip } => {
            vec![vec![
                s("set-port"),
                port.clone(),
                s("--remote-del"),
                ip.to_string(),
            ]]
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
                v.push(fdb_del(bridge, &mac.to_string(), *vlan));
            }
            v.push(vec![
                s("fdb-add"),
                bridge.clone(),
                mac.to_string(),
                port.clone(),
                s("--vtep"),
                vtep.to_string(),
                s("--vlan"),
                vlan.to_string(),
            ]);
            v
        }
        Action::FdbDel { bridge, mac, vlan } => vec![fdb_del(bridge, &mac.to_string(), *vlan)],
        _ => Vec::new(),
    }
}

fn fdb_del(bridge: &str, mac: &str, vlan: u16) -> Vec<String> {
    vec![
        "fdb-del".into(),
        bridge.into(),
        mac.into(),
        "--vlan".into(),
        vlan.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn command_lines() {
        let ip = Ipv4Addr::new(10, 0, 0, 2);
        let j = |a: &Action| ctl_args(a).iter().map(|v| v.join(" ")).collect::<Vec<_>>();
        assert_eq!(
            j(&Action::RemoteAdd {
                port: "vx".into(),
                ip
            }),
            ["set-port vx --remote-add 10.0.0.2"]
        );
        assert_eq!(
            j(&Action::RemoteDel {
                port: "vx".into(),
                ip
            }),
            ["set-port vx --remote-del 10.0.0.2"]
        );
        let mac = "02:00:00:00:00:05".parse().unwrap();
        assert_eq!(
            j(&Action::FdbAdd {
                bridge: "br0".into(),
                mac,
                vlan: 1,
                port: "vx".into(),
                vtep: ip,
                replace: true
            }),
            [
                "fdb-del br0 02:00:00:00:00:05 --vlan 1",
                "fdb-add br0 02:00:00:00:00:05 vx --vtep 10.0.0.2 --vlan 1"
            ]
        );
        assert_eq!(
            j(&Action::FdbDel {
                bridge: "br0".into(),
                mac,
                vlan: 1
            }),
            ["fdb-del br0 02:00:00:00:00:05 --vlan 1"]
        );
    }
}
