//! `vswitchctl monitor`: events streamed to whoever listens, as JSON lines.
//!
//! The bridges record what happens in their event logs (see
//! [`crate::bridge::events`]) only while someone listens; worker 0 drains
//! them every timer period (100 ms) into JSON lines and hands each line to
//! the listeners whose kinds it matches. A listener's queue is bounded: a
//! listener that does not keep up loses lines (the daemon never waits for
//! it), and a listener that went away is dropped at the next line.

use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Lines queued for one listener at most.
pub const LISTENER_QUEUE: usize = 8192;

/// The kinds of events a listener asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kinds {
    pub fdb: bool,
    pub ports: bool,
    pub stp: bool,
}

impl Kinds {
    pub const ALL: Kinds = Kinds {
        fdb: true,
        ports: true,
        stp: true,
    };

    /// From the names `fdb`, `ports`, `stp` (none: all of them).
    pub fn parse(names: &[String]) -> Result<Kinds, String> {
        if names.is_empty() {
            return Ok(Kinds::ALL);
        }
        let mut k = Kinds::default();
        for n in names {
            match n.as_str() {
                "fdb" => k.fdb = true,
                "ports" | "port" => k.ports = true,
                "stp" => k.stp = true,
                other => {
                    return Err(format!(
                        "unknown event kind '{other}' (expected fdb, ports or stp)"
                    ))
                }
            }
        }
        Ok(k)
    }
}

/// What kind an event is, to match listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Fdb,
    Ports,
    Stp,
}

struct Listener {
    tx: Sender<String>,
    kinds: Kinds,
    alive: Arc<AtomicBool>,
}

/// One listener's end: lines arrive on `rx`; dropping it unsubscribes.
pub struct Subscription {
    pub rx: Receiver<String>,
    alive: Arc<AtomicBool>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Release);
    }
}

#[derive(Default)]
pub struct Monitor {
    listeners: Mutex<Vec<Listener>>,
    listening: AtomicBool,
}

impl Monitor {
    /// A new listener of `kinds`.
    pub fn subscribe(&self, kinds: Kinds) -> Subscription {
        let (tx, rx) = crossbeam_channel::bounded(LISTENER_QUEUE);
        let alive = Arc::new(AtomicBool::new(true));
        let mut l = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        l.push(Listener {
            tx,
            kinds,
            alive: alive.clone(),
        });
        self.listening.store(true, Ordering::Release);
        Subscription { rx, alive }
    }

    /// Whether anyone listens (the bridges record events only then).
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Hands each line to the listeners of its kind (a full queue loses the
    /// line) and forgets the listeners that went away.
    pub fn publish(&self, lines: Vec<(Kind, String)>) {
        let mut ls = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        ls.retain(|l| l.alive.load(Ordering::Acquire));
        for (kind, line) in lines {
            for l in ls.iter() {
                let wanted = match kind {
                    Kind::Fdb => l.kinds.fdb,
                    Kind::Ports => l.kinds.ports,
                    Kind::Stp => l.kinds.stp,
                };
                if wanted {
                    let _ = l.tx.try_send(line.clone());
                }
            }
        }
        self.listening.store(!ls.is_empty(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse() {
        assert_eq!(Kinds::parse(&[]).unwrap(), Kinds::ALL);
        let k = Kinds::parse(&["fdb".into()]).unwrap();
        assert!(k.fdb && !k.ports && !k.stp);
        assert!(Kinds::parse(&["x".into()]).unwrap_err().contains("'x'"));
    }

    #[test]
    fn lines_reach_the_listeners_of_their_kind_until_they_go() {
        let m = Monitor::default();
        assert!(!m.listening());
        let fdb = m.subscribe(Kinds::parse(&["fdb".into()]).unwrap());
        let all = m.subscribe(Kinds::ALL);
        assert!(m.listening());
        m.publish(vec![(Kind::Fdb, "a".into()), (Kind::Stp, "b".into())]);
        assert_eq!(fdb.rx.try_iter().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(all.rx.try_iter().collect::<Vec<_>>(), vec!["a", "b"]);
        drop(fdb);
        drop(all);
        m.publish(Vec::new());
        assert!(!m.listening());
    }

    #[test]
    fn a_slow_listener_loses_lines_not_memory() {
        let m = Monitor::default();
        let s = m.subscribe(Kinds::ALL);
        m.publish(
            (0..LISTENER_QUEUE + 5)
                .map(|i| (Kind::Fdb, i.to_string()))
                .collect(),
        );
        assert_eq!(s.rx.len(), LISTENER_QUEUE);
    }
}

/// The event lines of the tables' bridges, rendered with names.
pub(crate) mod render {
    use super::Kind;
    use crate::bridge::events::{BridgeEvent, FdbChange};
    use crate::bridge::PortId;
    use crate::engine::tables::Tables;
    use crate::port::AnyPort;
    use serde_json::json;

    /// What spanning tree last showed for each (bridge index, port).
    pub(crate) type StpSeen = hashbrown::HashMap<(usize, PortId), (&'static str, &'static str)>;

    /// Turns the bridges' event logs on or off (`listening`) and, when on,
    /// drains them into JSON lines; spanning-tree roles and states are
    /// compared with what `seen` holds.
    pub(crate) fn drain(
        t: &mut Tables,
        listening: bool,
        seen: &mut StpSeen,
    ) -> Vec<(Kind, String)> {
        let mut out = Vec::new();
        if !listening {
            for b in t.bridges.iter_mut().flatten() {
                b.fdb.events.set_on(false);
            }
            seen.clear();
            return out;
        }
        let mut evs = Vec::new();
        for (bi, b) in t.bridges.iter_mut().enumerate() {
            let Some(b) = b.as_mut() else { continue };
            if !b.fdb.events.is_on() {
                b.fdb.events.set_on(true);
            }
            let (d, lost) = b.fdb.events.drain();
            evs.extend(d.map(|e| (bi, e)));
            if lost > 0 {
                out.push((
                    Kind::Fdb,
                    json!({"event": "events_lost", "bridge": b.name, "count": lost}).to_string(),
                ));
            }
        }
        for (bi, e) in evs {
            let Some(b) = t.bridges[bi].as_ref() else {
                continue;
            };
            match e {
                BridgeEvent::Fdb {
                    change,
                    vlan,
                    mac,
                    port,
                    peer,
                } => {
                    let name = match change {
                        FdbChange::Learned => "fdb_learned",
                        FdbChange::Moved(_) => "fdb_moved",
                        FdbChange::Aged => "fdb_aged",
                        FdbChange::Flushed => "fdb_flushed",
                    };
                    let mut v = json!({
                        "event": name,
                        "bridge": b.name,
                        "mac": mac.to_string(),
                        "vlan": vlan,
                        "port": t.port_name(port),
                    });
                    if let FdbChange::Moved(from) = change {
                        v["from"] = json!(t.port_name(from));
                    }
                    if let Some(AnyPort::Vxlan(x)) = t.ports[port as usize].as_ref().map(|p| &*p.io)
                    {
                        if let Some(ip) = x.remote(peer) {
                            v["vtep"] = json!(ip);
                        }
                    }
                    out.push((Kind::Fdb, v.to_string()));
                }
                BridgeEvent::Port { port, up } => {
                    let v = json!({
                        "event": if up { "port_up" } else { "port_down" },
                        "bridge": b.name,
                        "port": t.port_name(port),
                    });
                    out.push((Kind::Ports, v.to_string()));
                }
            }
        }
        // Spanning tree: what changed since the last look.
        let mut now = StpSeen::new();
        for (bi, b) in t.bridges.iter().enumerate() {
            let Some(b) = b.as_ref() else { continue };
            let Some(stp) = b.stp.as_ref() else { continue };
            for &pid in &b.ports {
                let rs = (stp.port_role(pid).name(), stp.port_state(pid).name());
                now.insert((bi, pid), rs);
                if seen.get(&(bi, pid)) != Some(&rs) {
                    let v = json!({
                        "event": "stp_changed",
                        "bridge": b.name,
                        "port": t.port_name(pid),
                        "role": rs.0,
                        "state": rs.1,
                    });
                    out.push((Kind::Stp, v.to_string()));
                }
            }
        }
        *seen = now;
        out
    }
}
