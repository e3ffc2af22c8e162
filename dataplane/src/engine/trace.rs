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
        Ok(self.trace_frame(bi, pi as PortId, &frame, self.now_ns()))
    }

    /// The trace record of `frame` arriving on `pi` of bridge `bi`.
    pub(crate) fn trace_frame(&self, bi: usize, pi: PortId, frame: &[u8], now: u64) -> Value {
        let Some(b) = self.bridges.get(bi).and_then(Option::as_ref) else {
            return json!({"verdict": "drop", "drop_reason": "no_egress", "egress": [], "steps": []});
        };
        let name = |p: PortId| self.port_name(p);
        let t = b.trace(pi, frame, now, &name);
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
                    match ipv4_of(frame) {
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
        json!({
            "verdict": verdict,
            "drop_reason": reason,
            "egress": if verdict == "forward" || verdict == "flood" { egress } else { Vec::new() },
            "steps": steps,
        })
    }
}

/// A `trace --live` in progress: the next `remaining` frames received on
/// `port` (any port for `None`) are traced as they enter and their records
/// sent to the client.
pub(crate) struct LiveTrace {
    pub port: Option<PortId>,
    pub remaining: usize,
    pub tx: crossbeam_channel::Sender<Value>,
}

/// Traces what `LiveTrace` asks for among `frames`, which entered by `pid`
/// (called by a worker under the tables' lock, before the real decision).
/// False once the live trace is complete.
pub(crate) fn live(
    t: &Tables,
    live: &mut LiveTrace,
    pid: PortId,
    frames: &[crate::packet::Frame],
    now: u64,
) -> bool {
    if live.port.is_some_and(|p| p != pid) {
        return true;
    }
    let Some(bi) = t.attach.get(pid as usize).and_then(|a| match a {
        Attach::Bridge(b) => Some(*b),
        _ => None,
    }) else {
        return true;
    };
    for f in frames {
        if live.remaining == 0 {
            break;
        }
        if f.rx_drop.is_some() {
            continue;
        }
        let mut v = t.trace_frame(bi, pid, f.data(), now);
        v["port"] = json!(t.port_name(pid));
        if live.tx.try_send(v).is_err() {
            return false;
        }
        live.remaining -= 1;
    }
    live.remaining > 0
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
