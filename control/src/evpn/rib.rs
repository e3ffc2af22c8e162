//! GoBGP's EVPN RIB as `gobgp global rib -a evpn -j` prints it: one JSON
//! object, destination → array of paths, each path
//! `{"nlri": {"type": 2|3, "value": {...}}, "age": T, "best": B,
//! "attrs": [...], "neighbor-ip": "..." (absent for our own)}`.
//!
//! Only type 2 (MAC/IP Advertisement, RFC 7432 §7.2) and type 3 (Inclusive
//! Multicast Ethernet Tag, §7.3) are kept. Of the attributes: the next hop
//! (MP_REACH_NLRI, type 14, or NEXT_HOP, type 3), the extended communities
//! (type 16: route targets, §7.10; MAC Mobility, §7.7) and the PMSI tunnel
//! (type 22, §11.1). The speaker is external input: anything malformed is
//! skipped with a note, never trusted.

use super::model::{Nlri, Path, Rd};
use dataplane::MacAddr;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr};

/// Parses the whole RIB. Returns the paths and one note per skipped path.
pub fn parse(text: &str) -> Result<(Vec<Path>, Vec<String>), String> {
    let text = text.trim();
    if text.is_empty() || text == "null" {
        return Ok((Vec::new(), Vec::new()));
    }
    let v: Value = serde_json::from_str(text).map_err(|e| format!("gobgp RIB JSON: {e}"))?;
    let dests = match &v {
        Value::Object(m) => m,
        Value::Null => return Ok((Vec::new(), Vec::new())),
        _ => return Err("gobgp RIB JSON: not an object of destinations".into()),
    };
    let mut paths = Vec::new();
    let mut notes = Vec::new();
    for (dest, list) in dests {
        let Some(list) = list.as_array() else {
            notes.push(format!("{dest}: paths are not an array"));
            continue;
        };
        for p in list {
            match parse_path(p) {
                Ok(Some(path)) => paths.push(path),
                Ok(None) => {}
                Err(e) => notes.push(format!("{dest}: {e}")),
            }
        }
    }
    Ok((paths, notes))
}

/// One path; `Ok(None)` for route types the agent does not use.
pub fn parse_path(p: &Value) -> Result<Option<Path>, String> {
    if p.get("withdrawal").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    let nlri = p.get("nlri").ok_or("no nlri")?;
    let kind = nlri
        .get("type")
        .and_then(Value::as_u64)
        .ok_or("no nlri type")?;
    let val = nlri.get("value").ok_or("no nlri value")?;
    let rd = parse_rd(val.get("rd").ok_or("no rd")?)?;
    let etag = val
        .get("etag")
        .and_then(Value::as_u64)
        .and_then(|e| u32::try_from(e).ok())
        .unwrap_or(0);
    let attrs = p
        .get("attrs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut path = Path {
        nlri: Nlri::Imet {
            rd: rd.clone(),
            etag,
            ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        },
        label: None,
        nexthop: None,
        pmsi_tunnel: None,
        rts: Vec::new(),
        mobility_seq: 0,
        age: p.get("age").and_then(Value::as_i64).unwrap_or(0),
        local: p
            .get("neighbor-ip")
            .and_then(Value::as_str)
            .is_none_or(|s| s.is_empty() || s == "<nil>"),
    };
    let mut pmsi_label = None;
    for a in attrs {
        match a.get("type").and_then(Value::as_u64) {
            Some(3) | Some(14) => {
                if let Some(nh) = a.get("nexthop").and_then(Value::as_str) {
                    if let Ok(ip) = nh.parse::<Ipv4Addr>() {
                        path.nexthop = Some(ip);
                    }
                }
            }
            Some(16) => {
                for c in a
                    .get("value")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let t = c.get("type").and_then(Value::as_u64);
                    let st = c.get("subtype").and_then(Value::as_u64);
                    match (t, st) {
                        // Route target: two-octet AS, IPv4, four-octet AS.
                        (Some(0..=2), Some(2)) => {
                            if let Some(s) = c.get("value").and_then(Value::as_str) {
                                path.rts.push(s.to_string());
                            }
                        }
                        // EVPN (0x06) MAC Mobility (0x00).
                        (Some(6), Some(0)) => path.mobility_seq = mobility_seq(c),
                        _ => {}
                    }
                }
            }
            Some(22) => {
                // Ingress replication is tunnel type 6.
                if a.get("tunnel-type").and_then(Value::as_u64) == Some(6) {
                    path.pmsi_tunnel = a
                        .get("tunnel-id")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse().ok());
                }
                pmsi_label = a
                    .get("label")
                    .and_then(Value::as_u64)
                    .and_then(|l| u32::try_from(l).ok());
            }
            _ => {}
        }
    }
    match kind {
        2 => {
            let mac = val
                .get("mac")
                .and_then(Value::as_str)
                .ok_or("type 2 without mac")?;
            let mac: MacAddr = mac
                .parse()
                .map_err(|e| format!("type 2 mac {mac:?}: {e}"))?;
            let ip = val
                .get("ip")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<IpAddr>().ok())
                .filter(|ip| !ip.is_unspecified());
            path.label = val
                .get("labels")
                .and_then(Value::as_array)
                .and_then(|l| l.first())
                .and_then(Value::as_u64)
                .and_then(|l| u32::try_from(l).ok());
            path.nlri = Nlri::MacIp { rd, etag, mac, ip };
        }
        3 => {
            let ip = val
                .get("ip")
                .and_then(Value::as_str)
                .ok_or("type 3 without originator address")?;
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("type 3 originator {ip:?} is not an address"))?;
            path.label = pmsi_label;
            path.nlri = Nlri::Imet { rd, etag, ip };
        }
        _ => return Ok(None),
    }
    Ok(Some(path))
}

/// `{"type": 0|1|2, "admin": A, "assigned": N}` (or a plain string) as
/// `A:N`.
fn parse_rd(v: &Value) -> Result<Rd, String> {
    if let Some(s) = v.as_str() {
        return Ok(Rd(s.to_string()));
    }
    let admin = match v.get("admin") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(format!("rd without admin: {v}")),
    };
    let assigned = v
        .get("assigned")
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("rd without assigned number: {v}"))?;
    Ok(Rd(format!("{admin}:{assigned}")))
}

/// The sequence number of a MAC Mobility community, whatever GoBGP calls
/// the field.
fn mobility_seq(c: &Value) -> u32 {
    c.as_object()
        .into_iter()
        .flatten()
        .find(|(k, _)| k.contains("seq"))
        .and_then(|(_, v)| v.as_u64())
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As gobgp 3.10 prints a peer's routes (abridged from a real RIB).
    const RIB: &str = r#"{"[type:macadv][rd:10.99.0.1:100][etag:0][mac:02:00:00:00:00:01][ip:<nil>]":[{"nlri":{"type":2,"value":{"rd":{"type":1,"admin":"10.99.0.1","assigned":100},"esi":"single-homed","etag":0,"mac":"02:00:00:00:00:01","ip":"<nil>","labels":[100]}},"age":1796664020,"best":true,"attrs":[{"type":1,"value":2},{"type":2,"as_paths":[]},{"type":5,"value":100},{"type":16,"value":[{"type":0,"subtype":2,"value":"65000:100"},{"type":3,"subtype":12,"tunnel_type":8}]},{"type":14,"nexthop":"10.99.0.1","afi":25,"safi":70,"value":[]}],"stale":false,"source-id":"10.99.0.1","neighbor-ip":"10.99.0.1"}],
    "[type:multicast][rd:10.99.0.1:100][etag:0][ip:10.99.0.1]":[{"nlri":{"type":3,"value":{"rd":{"type":1,"admin":"10.99.0.1","assigned":100},"etag":0,"ip":"10.99.0.1"}},"age":1796664020,"best":true,"attrs":[{"type":1,"value":2},{"type":16,"value":[{"type":0,"subtype":2,"value":"65000:100"},{"type":3,"subtype":12,"tunnel_type":8}]},{"type":22,"is-leaf-info-required":false,"tunnel-type":6,"label":100,"tunnel-id":"10.99.0.1"},{"type":14,"nexthop":"10.99.0.1","afi":25,"safi":70,"value":[]}],"stale":false}]}"#;

    #[test]
    fn parses_gobgp_json() {
        let (paths, notes) = parse(RIB).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(paths.len(), 2);
        let m = &paths[0];
        assert_eq!(
            m.nlri,
            Nlri::MacIp {
                rd: Rd("10.99.0.1:100".into()),
                etag: 0,
                mac: "02:00:00:00:00:01".parse().unwrap(),
                ip: None
            }
        );
        assert_eq!(m.label, Some(100));
        assert_eq!(m.nexthop, Some(Ipv4Addr::new(10, 99, 0, 1)));
        assert_eq!(m.rts, vec!["65000:100".to_string()]);
        assert!(!m.local);
        let t3 = &paths[1];
        assert!(matches!(t3.nlri, Nlri::Imet { .. }));
        assert_eq!(t3.pmsi_tunnel, Some(Ipv4Addr::new(10, 99, 0, 1)));
        assert_eq!(t3.label, Some(100));
        assert!(t3.local, "no neighbor-ip: our own");
    }

    #[test]
    fn empty_and_junk() {
        assert!(parse("").unwrap().0.is_empty());
        assert!(parse("{}\n").unwrap().0.is_empty());
        assert!(parse("null").unwrap().0.is_empty());
        assert!(parse("[1,2]").is_err());
        assert!(parse("{not json").is_err());
        // Broken paths are skipped with a note; the good one stays.
        let text = r#"{"a": 5, "b": [{"nlri": {"type": 2, "value": {"rd": {"type":1,"admin":"1.2.3.4","assigned":1}, "mac": "zz"}}}, {"nlri": {"type": 3}}, {}],
                       "c": [{"nlri": {"type": 3, "value": {"rd": "1.2.3.4:7", "ip": "1.2.3.4", "etag": 99999999999}}, "neighbor-ip": "1.2.3.4", "attrs": "x"}],
                       "d": [{"nlri": {"type": 1, "value": {"rd": "1:1"}}}]}"#;
        let (paths, notes) = parse(text).unwrap();
        assert_eq!(paths.len(), 1, "{paths:?}");
        assert_eq!(notes.len(), 4, "{notes:?}");
        assert_eq!(paths[0].nlri.rd().0, "1.2.3.4:7");
        assert!(!paths[0].local);
    }

    #[test]
    fn mobility_and_asn_rd() {
        let p: Value = serde_json::json!({
            "nlri": {"type": 2, "value": {"rd": {"type": 0, "admin": 65000, "assigned": 7},
                     "mac": "02:00:00:00:00:09", "ip": "10.1.1.1", "labels": [100]}},
            "neighbor-ip": "10.0.0.9",
            "attrs": [{"type": 16, "value": [{"type": 6, "subtype": 0, "sequence_num": 4, "is_sticky": false}]},
                      {"type": 3, "nexthop": "10.0.0.9"}]
        });
        let path = parse_path(&p).unwrap().unwrap();
        assert_eq!(path.nlri.rd().0, "65000:7");
        assert_eq!(path.nlri.rd().admin_ip(), None);
        assert_eq!(path.mobility_seq, 4);
        assert_eq!(path.nexthop, Some(Ipv4Addr::new(10, 0, 0, 9)));
        match path.nlri {
            Nlri::MacIp { ip, .. } => assert_eq!(ip, Some("10.1.1.1".parse().unwrap())),
            _ => panic!(),
        }
    }
}
