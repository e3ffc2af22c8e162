//! Spanning tree (IEEE 802.1D): loops between vswitch bridges are cut,
//! vswitch and the Linux kernel bridge form one tree, a blocked link takes
//! over when the forwarding one is pulled, and BPDU guard shuts a port.
//! Timers are shortened (hello 1 s, max age 6 s, forward delay 4 s) so a
//! tree converges in seconds; the assertions wait on states, never on time.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const FAST: &[&str] = &["--hello", "1", "--max-age", "6", "--forward-delay", "4"];
/// Generous bound on convergence: 2 x forward delay + max age, plus slack.
const CONVERGE: Duration = Duration::from_secs(30);

fn stp(lab: &Lab, br: &str) -> Value {
    lab.ctl_json(&["stp-show", br])
}

fn port_state(v: &Value, port: &str) -> String {
    v["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == port))
        .map(|p| p["state"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// Enables STP with fast timers on a vswitch bridge.
fn stp_on(lab: &Lab, br: &str, extra: &[&str]) {
    let mut args = vec!["set-br", br, "--stp", "on"];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    lab.ctl_ok(&args);
}

/// A veth pair inside the switch namespace.
fn link(lab: &Lab, a: &str, b: &str) {
    run_ok(
        "ip",
        &[
            "-n", &lab.sw, "link", "add", a, "type", "veth", "peer", "name", b,
        ],
    );
}

/// Sum of received frames on the given ports.
fn rx_sum(lab: &Lab, ports: &[&str]) -> u64 {
    ports
        .iter()
        .map(|p| lab.port_stats(p)["rx_packets"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn two_vswitch_bridges_two_links() {
    let mut lab = Lab::with_daemon();
    lab.add_br("bra", &[]);
    lab.add_br("brb", &[]);
    stp_on(&lab, "bra", &[]);
    stp_on(&lab, "brb", &[]);
    link(&lab, "la1", "lb1");
    link(&lab, "la2", "lb2");
    for (br, p) in [
        ("bra", "la1"),
        ("bra", "la2"),
        ("brb", "lb1"),
        ("brb", "lb2"),
    ] {
        lab.ctl_ok(&["add-port", br, p, "--type", "afpacket"]);
    }
    let h1 = lab.tap_host("bra", 1);
    let h2 = lab.tap_host("brb", 2);

    // Listening first: nothing forwards before forward delay.
    let a = stp(&lab, "bra");
    assert_ne!(port_state(&a, "la1"), "forwarding", "{a}");

    let converged = wait_until(CONVERGE, || {
        let (a, b) = (stp(&lab, "bra"), stp(&lab, "brb"));
        let states: Vec<String> = [("la1", &a), ("la2", &a), ("lb1", &b), ("lb2", &b)]
            .iter()
            .map(|(p, v)| port_state(v, p))
            .collect();
        let blocking = states.iter().filter(|s| *s == "blocking").count();
        let forwarding = states.iter().filter(|s| *s == "forwarding").count();
        a["root_id"] == b["root_id"] && blocking == 1 && forwarding == 3
    });
    let (a, b) = (stp(&lab, "bra"), stp(&lab, "brb"));
    assert!(converged, "no single blocked port:\nbra {a}\nbrb {b}");
    // The root bridge has no root port; the other has one, with a cost.
    let (root, other) = if a["root_id"] == a["bridge_id"] {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(root["root_port"], Value::Null, "{root}");
    assert!(other["root_port"].is_string(), "{other}");
    assert!(other["root_path_cost"].as_u64().unwrap_or(0) > 0, "{other}");

    lab.assert_all_ping(&[&h1, &h2]);
    // No storm: a broadcast (ARP for an absent host) crosses the loop a
    // bounded number of times.
    lab.ctl_ok(&["fdb-flush", "bra"]);
    let before = rx_sum(&lab, &["la1", "la2", "lb1", "lb2"]);
    let _ = lab.ns_exec(
        &h1.ns,
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", &lab.ip(99)],
    );
    std::thread::sleep(Duration::from_secs(1));
    let after = rx_sum(&lab, &["la1", "la2", "lb1", "lb2"]);
    assert!(
        after - before < 200,
        "{} frames on the inter-switch links in ~2 s: a loop",
        after - before
    );
    // Blocked ports count what they refused.
    let blocked_drops: u64 = ["la1", "la2", "lb1", "lb2"]
        .iter()
        .map(|p| lab.drops(p, "stp_blocking"))
        .sum();
    assert!(blocked_drops > 0, "no stp_blocking drops counted");
}

/// Reads a kernel bridge attribute from sysfs inside its namespace.
fn kbr_attr(lab: &Lab, ns: &str, path: &str) -> String {
    lab.ns_ok(ns, &["cat", &format!("/sys/class/net/{path}")])
        .trim()
        .to_string()
}

/// Kernel bridge port state as vswitch names it ("gone" once deleted).
fn kport_state(lab: &Lab, ns: &str, ifname: &str) -> String {
    let out = lab.ns_exec(
        ns,
        &["cat", &format!("/sys/class/net/{ifname}/brport/state")],
    );
    if !out.status.success() {
        return "gone".into();
    }
    match String::from_utf8_lossy(&out.stdout).trim() {
        "0" => "disabled",
        "1" => "listening",
        "2" => "learning",
        "3" => "forwarding",
        "4" => "blocking",
        _ => "?",
    }
    .to_string()
}

/// A kernel bridge `kbr` with STP on in namespace `k`, joined to vswitch
/// bridge br0 by two links; h1 on vswitch, h2 on the kernel bridge.
struct Mixed {
    lab: Lab,
    k: String,
    h1: Host,
    h2: Host,
}

fn mixed() -> Mixed {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    stp_on(&lab, "br0", &[]);
    let k = lab.add_netns("k");
    lab.ns_ok(&k, &["ip", "link", "add", "kbr", "type", "bridge"]);
    // Times in centiseconds; the same fast timers as vswitch.
    lab.ns_ok(
        &k,
        &[
            "ip",
            "link",
            "set",
            "kbr",
            "type",
            "bridge",
            "stp_state",
            "1",
            "hello_time",
            "100",
            "max_age",
            "600",
            "forward_delay",
            "400",
        ],
    );
    lab.ns_ok(&k, &["ip", "link", "set", "kbr", "up"]);
    for i in 1..=2 {
        let (s, kp) = (format!("v{i}"), format!("k{i}"));
        run_ok(
            "ip",
            &[
                "-n", &lab.sw, "link", "add", &s, "type", "veth", "peer", "name", &kp, "netns", &k,
            ],
        );
        lab.ns_ok(&k, &["ip", "link", "set", &kp, "master", "kbr"]);
        lab.ns_ok(&k, &["ip", "link", "set", &kp, "up"]);
        lab.ctl_ok(&["add-port", "br0", &s, "--type", "afpacket"]);
    }
    let h1 = lab.tap_host("br0", 1);
    // h2 hangs off the kernel bridge.
    let h2ns = lab.add_netns("h2");
    run_ok(
        "ip",
        &[
            "-n", &k, "link", "add", "kh2", "type", "veth", "peer", "name", "eth0", "netns", &h2ns,
        ],
    );
    lab.ns_ok(&k, &["ip", "link", "set", "kh2", "master", "kbr"]);
    lab.ns_ok(&k, &["ip", "link", "set", "kh2", "up"]);
    let ip2 = lab.ip(2);
    lab.ns_ok(
        &h2ns,
        &["ip", "addr", "add", &format!("{ip2}/24"), "dev", "eth0"],
    );
    lab.ns_ok(&h2ns, &["ip", "link", "set", "eth0", "up"]);
    let mac = lab.mac_of(&h2ns, "eth0");
    let h2 = Host {
        ns: h2ns,
        port: "kh2".into(),
        ifname: "eth0".into(),
        ip: ip2,
        mac,
    };
    Mixed { lab, k, h1, h2 }
}

impl Mixed {
    /// (vswitch link states, kernel link states)
    fn states(&self) -> (Vec<String>, Vec<String>) {
        let v = stp(&self.lab, "br0");
        (
            vec![port_state(&v, "v1"), port_state(&v, "v2")],
            vec![
                kport_state(&self.lab, &self.k, "k1"),
                kport_state(&self.lab, &self.k, "k2"),
            ],
        )
    }

    fn kernel_root(&self) -> String {
        kbr_attr(&self.lab, &self.k, "kbr/bridge/root_id").to_lowercase()
    }

    fn kernel_id(&self) -> String {
        kbr_attr(&self.lab, &self.k, "kbr/bridge/bridge_id").to_lowercase()
    }

    /// Exactly one of the four link ports blocks, the others forward, and
    /// both bridges name the same root.
    fn one_tree(&self) -> bool {
        let (v, k) = self.states();
        let all: Vec<&String> = v.iter().chain(k.iter()).collect();
        let blocking = all.iter().filter(|s| s.as_str() == "blocking").count();
        let forwarding = all.iter().filter(|s| s.as_str() == "forwarding").count();
        let ours = stp(&self.lab, "br0")["root_id"]
            .as_str()
            .unwrap_or("")
            .to_lowercase();
        blocking == 1 && forwarding == 3 && ours == self.kernel_root()
    }

    fn describe(&self) -> String {
        format!(
            "vswitch {}\nkernel root {} id {} states {:?}",
            stp(&self.lab, "br0"),
            self.kernel_root(),
            self.kernel_id(),
            self.states().1
        )
    }
}

#[test]
fn interoperates_with_linux_bridge() {
    let m = mixed();
    assert!(
        wait_until(CONVERGE, || m.one_tree()),
        "no single tree:\n{}",
        m.describe()
    );
    m.lab.assert_all_ping(&[&m.h1, &m.h2]);

    // Lowest priority wins: vswitch becomes root...
    m.lab.ctl_ok(&["set-br", "br0", "--priority", "4096"]);
    let ours = || {
        stp(&m.lab, "br0")["bridge_id"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
    };
    assert!(
        wait_until(CONVERGE, || m.kernel_root() == ours() && m.one_tree()),
        "vswitch did not become root:\n{}",
        m.describe()
    );
    assert!(ours().starts_with("1000."), "{}", ours());
    // ...then the kernel bridge, once its priority is lower still.
    m.lab.ns_ok(
        &m.k,
        &[
            "ip", "link", "set", "kbr", "type", "bridge", "priority", "0",
        ],
    );
    assert!(
        wait_until(CONVERGE, || {
            let r = stp(&m.lab, "br0")["root_id"]
                .as_str()
                .unwrap_or("")
                .to_lowercase();
            r == m.kernel_id() && m.one_tree()
        }),
        "the kernel bridge did not become root:\n{}",
        m.describe()
    );
    let v = stp(&m.lab, "br0");
    assert!(
        v["root_port"].is_string(),
        "vswitch has a root port now: {v}"
    );
    m.lab.assert_all_ping(&[&m.h1, &m.h2]);
}

#[test]
fn blocked_link_takes_over() {
    let m = mixed();
    assert!(
        wait_until(CONVERGE, || m.one_tree()),
        "no single tree:\n{}",
        m.describe()
    );
    m.lab.assert_all_ping(&[&m.h1, &m.h2]);
    // Pull the link that carries traffic: the one whose both ends forward.
    let (v, k) = m.states();
    let live = if v[0] == "forwarding" && k[0] == "forwarding" {
        1
    } else {
        2
    };
    run_ok("ip", &["-n", &m.lab.sw, "link", "del", &format!("v{live}")]);
    let other = 3 - live;
    assert!(
        wait_until(CONVERGE, || {
            let (v, k) = m.states();
            v[other - 1] == "forwarding" && k[other - 1] == "forwarding"
        }),
        "the blocked link did not take over:\n{}",
        m.describe()
    );
    assert!(m.lab.ping(&m.h1, &m.h2.ip), "traffic did not resume");
    let gone = m.lab.port_info("br0", &format!("v{live}"));
    assert_eq!(gone["up"], false, "{gone}");
}

#[test]
fn bpdu_guard_shuts_the_port() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    lab.ctl_ok(&["set-port", "p2", "--bpdu-guard", "on"]);
    lab.assert_all_ping(&[&h1, &h2]);
    // A configuration BPDU from h2 (as a rogue switch would send).
    let bpdu = concat!(
        "0180c2000000",
        "020000000002",
        "0026",
        "424203", // 802.3 + LLC
        "0000",
        "00",
        "00",
        "00", // protocol, version, config, flags
        "8000020000000002",
        "00000000", // root id, root path cost
        "8000020000000002",
        "8001", // bridge id, port id
        "0000",
        "1400",
        "0200",
        "0f00",             // message age, max age, hello, forward delay
        "0000000000000000"  // padding to 60 bytes
    );
    let send = format!(
        "import socket; s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); \
         s.bind(('eth0', 0)); s.send(bytes.fromhex('{bpdu}'))"
    );
    lab.ns_ok(&h2.ns, &["python3", "-c", &send]);
    assert!(
        wait_until(Duration::from_secs(5), || lab.drops("p2", "bpdu_guard")
            >= 1),
        "{}",
        lab.port_stats("p2")
    );
    let p2 = lab.port_info("br0", "p2");
    assert_eq!(p2["up"], false, "{p2}");
    assert_eq!(p2["bpdu_guard_tripped"], true, "{p2}");
    assert!(
        !lab.ping_once(&h1, &h2.ip),
        "traffic crossed a port BPDU guard shut"
    );
    // Setting the guard again re-enables the port.
    lab.ctl_ok(&["set-port", "p2", "--bpdu-guard", "on"]);
    assert!(lab.ping(&h1, &h2.ip));
}

#[test]
fn stp_cli() {
    let lab = Lab::with_daemon();
    lab.add_br("br0", &["--stp"]);
    let v = stp(&lab, "br0");
    assert_eq!(v["root_id"], v["bridge_id"], "alone, it is root: {v}");
    assert!(
        v["bridge_id"].as_str().unwrap_or("").starts_with("8000."),
        "{v}"
    );
    assert_eq!(v["root_path_cost"], 0);
    assert_eq!(v["root_port"], Value::Null);
    assert_eq!(lab.ctl_json(&["list-br"])[0]["stp"], true);
    // 802.1D timer relations are enforced.
    lab.ctl_err(&["set-br", "br0", "--max-age", "40", "--forward-delay", "4"]);
    lab.ctl_err(&["set-br", "br0", "--hello", "0"]);
    lab.ctl_err(&["set-br", "br0", "--stp", "maybe"]);
    lab.ctl_ok(&["set-br", "br0", "--priority", "0"]);
    assert!(stp(&lab, "br0")["bridge_id"]
        .as_str()
        .unwrap_or("")
        .starts_with("0000."));
    lab.ctl_ok(&["set-br", "br0", "--stp", "off"]);
    lab.ctl_err(&["stp-show", "br0"]);
    lab.ctl_err(&["stp-show", "nosuch"]);
}
