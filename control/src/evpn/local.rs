//! vswitchd's state from its JSON (`list-ports --json`, `fdb-show --json`,
//! as `../shared/design/interface.md` fixes them) into a
//! [`LocalState`](super::model::LocalState). The daemon is external input
//! too: a row that does not parse is skipped with a note.

use super::model::{FdbEntry, VxlanPort};
use dataplane::MacAddr;
use serde_json::Value;
use std::net::Ipv4Addr;

/// The VXLAN ports among `list-ports` rows (all bridges), restricted to
/// `only` when it is not empty. Returns the ports and notes on the skipped.
pub fn vxlan_ports(v: &Value, only: &[String]) -> (Vec<VxlanPort>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let rows = v.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if !v.is_array() {
        notes.push("list-ports: answer is not an array".to_string());
    }
    for r in rows {
        if r.get("type").and_then(Value::as_str) != Some("vxlan") {
            continue;
        }
        let name = r.get("name").and_then(Value::as_str).unwrap_or("");
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        match vxlan_port(r) {
            Ok(p) => out.push(p),
            Err(e) => notes.push(format!("port {name:?}: {e}")),
        }
    }
    (out, notes)
}

fn vxlan_port(r: &Value) -> Result<VxlanPort, String> {
    let name = r
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("no name")?;
    let bridge = r
        .get("bridge")
        .and_then(Value::as_str)
        .ok_or("not on a bridge")?;
    let vni = r
        .get("vni")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n < 1 << 24)
        .ok_or("no valid vni")?;
    if vni > u32::from(u16::MAX) {
        return Err(format!(
            "VNI {vni} does not fit the route distinguisher LOCAL:VNI (16 bits); not handled"
        ));
    }
    let local = r.get("local").and_then(Value::as_str).ok_or("no local")?;
    let local: Ipv4Addr = local
        .parse()
        .map_err(|_| format!("local {local:?} is not an IPv4 address; not handled"))?;
    let remotes = r
        .get("remotes")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter_map(|x| x.as_str()?.parse().ok())
        .collect();
    let vid = |k: &str| {
        r.get(k)
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
    };
    let vlan = match r.get("vlan_mode").and_then(Value::as_str) {
        Some("trunk") => vid("native_vlan"),
        _ => vid("access_vlan").or(Some(1)),
    };
    Ok(VxlanPort {
        name: name.to_string(),
        bridge: bridge.to_string(),
        vni,
        local,
        remotes,
        vlan,
    })
}

/// `fdb-show` rows. Returns the entries and notes on the skipped.
pub fn fdb_rows(rows: &[Value]) -> (Vec<FdbEntry>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for r in rows {
        match fdb_row(r) {
            Ok(e) => out.push(e),
            Err(e) => notes.push(format!("fdb row {r}: {e}")),
        }
    }
    (out, notes)
}

fn fdb_row(r: &Value) -> Result<FdbEntry, String> {
    let mac = r.get("mac").and_then(Value::as_str).ok_or("no mac")?;
    let mac: MacAddr = mac.parse().map_err(|e| format!("{e}"))?;
    let vlan = r
        .get("vlan")
        .and_then(Value::as_u64)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or("no vlan")?;
    let port = r.get("port").and_then(Value::as_str).ok_or("no port")?;
    let is_static = match r.get("type").and_then(Value::as_str) {
        Some("static") => true,
        Some("dynamic") => false,
        other => return Err(format!("type {other:?}")),
    };
    let vtep = match r.get("vtep") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_str()
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
                .ok_or_else(|| format!("vtep {v} is not an IPv4 address"))?,
        ),
    };
    Ok(FdbEntry {
        mac,
        vlan,
        port: port.to_string(),
        is_static,
        vtep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ports() {
        let v = json!([
            {"name": "p1", "bridge": "br0", "type": "tap", "vlan_mode": "access", "access_vlan": 1},
            {"name": "vx", "bridge": "br0", "type": "vxlan", "vni": 100, "local": "10.0.0.1",
             "remotes": ["10.0.0.2", "junk"], "dstport": 4789, "vlan_mode": "access", "access_vlan": 10},
            {"name": "vt", "bridge": "br1", "type": "vxlan", "vni": 200, "local": "10.0.0.1",
             "remotes": [], "vlan_mode": "trunk", "trunk_vlans": [5], "native_vlan": null},
            {"name": "v6", "bridge": "br1", "type": "vxlan", "vni": 300, "local": "2001:db8::1"},
            {"name": "big", "bridge": "br1", "type": "vxlan", "vni": 70000, "local": "10.0.0.1"},
            {"name": "nob", "bridge": null, "type": "vxlan", "vni": 5, "local": "10.0.0.1"},
            "junk"
        ]);
        let (ports, notes) = vxlan_ports(&v, &[]);
        assert_eq!(ports.len(), 2, "{ports:?}");
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert_eq!(ports[0].name, "vx");
        assert_eq!(ports[0].vlan, Some(10));
        assert_eq!(
            ports[0].remotes.iter().collect::<Vec<_>>(),
            [&Ipv4Addr::new(10, 0, 0, 2)]
        );
        assert_eq!(ports[1].vlan, None);
        let (ports, _) = vxlan_ports(&v, &["vt".to_string()]);
        assert_eq!(ports.len(), 1);
        assert_eq!(vxlan_ports(&json!({}), &[]).1.len(), 1);
    }

    #[test]
    fn fdb() {
        let rows = json!([
            {"mac": "02:00:00:00:00:01", "vlan": 1, "port": "p1", "type": "dynamic", "age_s": 3},
            {"mac": "02:00:00:00:00:02", "vlan": 1, "port": "vx", "type": "static", "age_s": 0, "vtep": "10.0.0.2"},
            {"mac": "bad", "vlan": 1, "port": "p1", "type": "dynamic"},
            {"mac": "02:00:00:00:00:03", "vlan": 1, "port": "p1", "type": "weird"},
            {"mac": "02:00:00:00:00:04", "vlan": 1, "port": "vx", "type": "dynamic", "vtep": 7}
        ]);
        let (e, notes) = fdb_rows(rows.as_array().unwrap());
        assert_eq!(e.len(), 2);
        assert_eq!(notes.len(), 3);
        assert!(e[1].is_static);
        assert_eq!(e[1].vtep, Some(Ipv4Addr::new(10, 0, 0, 2)));
    }
}
