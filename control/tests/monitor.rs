//! `vswitchctl monitor`: events as JSON lines, as `bridge monitor fdb` gives
//! them for the kernel bridge.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// The JSON lines a background `vswitchctl monitor` prints.
struct Events {
    _bg: Bg,
    rx: Receiver<String>,
    seen: Vec<Value>,
}

impl Events {
    fn start(lab: &Lab, args: &[&str]) -> Events {
        let mut a = vec!["monitor"];
        a.extend_from_slice(args);
        let mut bg = lab.ctl_spawn(&a);
        let out = bg.child.stdout.take().expect("piped");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The bridges start recording at the next timer period (100 ms).
        std::thread::sleep(Duration::from_millis(400));
        Events {
            _bg: bg,
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits (up to `timeout`) for an event for which `want` holds.
    fn wait(&mut self, timeout: Duration, want: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(v) = self.seen.iter().find(|v| want(v)) {
            return Some(v.clone());
        }
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let Ok(line) = self.rx.recv_timeout(left) else {
                break;
            };
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("monitor line is not JSON ({e}): {line:?}"));
            self.seen.push(v.clone());
            if want(&v) {
                return Some(v);
            }
        }
        None
    }

    fn drain(&mut self, for_: Duration) -> &[Value] {
        let end = Instant::now() + for_;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(serde_json::from_str(&line).expect("JSON")),
                Err(_) => break,
            }
        }
        &self.seen
    }
}

fn is(v: &Value, event: &str, field: &str, val: &str) -> bool {
    v["event"] == event && v[field] == val
}

const T: Duration = Duration::from_secs(5);

/// Ports coming up, stations learned, moved, aged and flushed, and spanning
/// tree roles, each as one JSON line; `monitor fdb` gets only the FDB's.
#[test]
fn monitor_streams_bridge_events() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &["--ageing", "2"]);
    let mut all = Events::start(&lab, &[]);
    let mut fdb = Events::start(&lab, &["fdb"]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    for h in [&h1, &h2] {
        let up = all.wait(T, |v| is(v, "port_up", "port", &h.port));
        let up = up.unwrap_or_else(|| panic!("no port_up for {}: {:?}", h.port, all.seen));
        assert_eq!(up["bridge"], "br0", "{up}");
    }
    assert!(lab.ping(&h1, &h2.ip));
    let e = all
        .wait(T, |v| is(v, "fdb_learned", "mac", &h1.mac))
        .unwrap_or_else(|| panic!("no fdb_learned for h1: {:?}", all.seen));
    assert_eq!(
        (e["port"].as_str(), e["vlan"].as_u64()),
        (Some(h1.port.as_str()), Some(1)),
        "{e}"
    );
    assert!(fdb
        .wait(T, |v| is(v, "fdb_learned", "mac", &h2.mac))
        .is_some());

    // h1's address shows up on h2's port: a move.
    let sent = lab.send_frames(&h2, &["--count", "3", "--src", &h1.mac, "--dst", &h2.mac]);
    assert_eq!(sent, 3);
    let m = all
        .wait(T, |v| is(v, "fdb_moved", "mac", &h1.mac))
        .unwrap_or_else(|| panic!("no fdb_moved: {:?}", all.seen));
    assert_eq!(
        (m["from"].as_str(), m["port"].as_str()),
        (Some(h1.port.as_str()), Some(h2.port.as_str())),
        "{m}"
    );

    // Ageing (2 s) and flushing.
    assert!(
        all.wait(Duration::from_secs(6), |v| v["event"] == "fdb_aged")
            .is_some(),
        "no fdb_aged: {:?}",
        all.seen
    );
    assert!(lab.ping(&h1, &h2.ip));
    lab.ctl_ok(&["fdb-flush", "br0"]);
    assert!(
        all.wait(T, |v| v["event"] == "fdb_flushed").is_some(),
        "{:?}",
        all.seen
    );

    // Spanning tree: ports go through its states.
    lab.ctl_ok(&["set-br", "br0", "--stp", "on"]);
    let s = all
        .wait(T, |v| is(v, "stp_changed", "port", &h1.port))
        .unwrap_or_else(|| panic!("no stp_changed: {:?}", all.seen));
    assert!(s["role"].is_string() && s["state"].is_string(), "{s}");

    // The fdb listener got FDB events only.
    let kinds: Vec<String> = fdb
        .drain(Duration::from_millis(500))
        .iter()
        .map(|v| v["event"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(!kinds.is_empty());
    assert!(kinds.iter().all(|k| k.starts_with("fdb_")), "{kinds:?}");

    // A listener that goes away is forgotten; the daemon carries on.
    drop(fdb);
    drop(all);
    std::thread::sleep(Duration::from_millis(300));
    lab.ctl_ok(&["fdb-flush", "br0"]);
    let br = &lab.ctl_json(&["list-br"])[0];
    assert_eq!(br["name"], "br0", "{br}");
    let err = lab.ctl_err(&["monitor", "routes"]);
    assert!(err.contains("routes"), "{err}");
}
