//! `trace`: a frame through the tables' forwarding decision, rendered as
//! the interface's JSON record. No side effects: the bridge's and the
//! router's trace functions only read.

use super::tables::Tables;
use crate::bridge::{PortId, Verdict};
use crate::pipeline::Attach;
use serde_json::{json, Value};

/// Longest frame a trace takes (a jumbo frame and its tags).
const MAX_TRACE_FRAME: usize = 9216;

impl Tables {
    pub(crate) fn trace(&self, bridge: &str, port: &str, hex: &str) -> Result<Value, String> {
        let frame = parse_hex(hex)?;
        let bi = self.bridge_idx(bridge)?;
        let pi = self.port_idx(port)?;
        if self.attach[pi] != Attach::Bridge(bi) {
            return Err(format!("port '{port}' is not on bridge '{bridge}'"));
        }
        let b = self.bridges[bi].as_ref().expect("index");
        let now = self.now_ns();
        let name = |p: PortId| self.port_name(p);
        let t = b.trace(pi as PortId, &frame, now, &name);
        let mut steps: Vec<Value> = t
            .steps
            .iter()
            .map(|s| json!({"stage": s.stage, "detail": s.detail}))
            .collect();
        let egress: Vec<Value> = t
            .egress
            .iter()
            .map(|e| json!({"port": name(e.port), "vlan": e.vlan, "tagged": e.tagged}))
            .collect();
        let (verdict, reason) = match t.verdict {
            Verdict::Unicast(p) => match self.attach.get(p as usize) {
                Some(Attach::Svi { rif, .. }) => {
                    // To a router interface: the router takes it from here.
                    match ipv4_of(&frame) {
                        Some((src, dst, ttl)) => {
                            let r = self.router().trace(*rif, src, dst, ttl, now);
                            steps.extend(
                                r.steps
                                    .iter()
                                    .map(|s| json!({"stage": s.stage, "detail": s.detail})),
                            );
                            (r.verdict, r.drop_reason)
                        }
                        None => {
                            steps.push(json!({"stage": "router", "detail": format!("not IPv4: for the router's ARP, or dropped ({})", name(p))}));
                            ("local", None)
                        }
                    }
                }
                _ => ("forward", None),
            },
            Verdict::Flood => ("flood", None),
            Verdict::Local => ("local", None),
            Verdict::Drop(r) => ("drop", Some(r.name())),
        };
        Ok(json!({
            "verdict": verdict,
            "drop_reason": reason,
            "egress": if verdict == "forward" || verdict == "flood" { egress } else { Vec::new() },
            "steps": steps,
        }))
    }
}

/// Source, destination and TTL of an IPv4 packet in an Ethernet frame.
fn ipv4_of(frame: &[u8]) -> Option<(std::net::Ipv4Addr, std::net::Ipv4Addr, u8)> {
    let l2 = crate::wire::eth::L2::parse(frame)?;
    if l2.ethertype != crate::wire::eth::ETHERTYPE_IPV4 {
        return None;
    }
    let ip = crate::wire::ipv4::Ipv4::new_checked(&frame[l2.l3..]).ok()?;
    Some((ip.src(), ip.dst(), ip.ttl()))
}

/// Hex bytes (spaces and colons allowed between them).
fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !matches!(b, b' ' | b':' | b'\n' | b'\t'))
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err("frame hex has an odd number of digits".into());
    }
    if digits.len() / 2 > MAX_TRACE_FRAME {
        return Err(format!("frame longer than {MAX_TRACE_FRAME} bytes"));
    }
    digits
        .chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("'{}' is not a hex byte", String::from_utf8_lossy(p)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_hex;

    #[test]
    fn hex() {
        assert_eq!(parse_hex("02:00 ff").unwrap(), vec![2, 0, 0xff]);
        assert!(parse_hex("0").is_err());
        assert!(parse_hex("zz").is_err());
        assert!(parse_hex(&"00".repeat(9217)).is_err());
    }
}
