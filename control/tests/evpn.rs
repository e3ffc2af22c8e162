//! `vswitch-evpn` end to end: vswitchd hosts that find each other through a
//! BGP EVPN control plane (GoBGP), with no `--remote` configured by hand.
//!
//! Topology: an underlay namespace `ul` with a kernel bridge and a GoBGP
//! route reflector on it (`UL.254`); per host a lab (its switch namespace
//! runs vswitchd, gobgpd and the agent) with a veth into the underlay
//! bridge (`UL.i`), bridge br0 with a TAP host `h{i}` (overlay `NET.i`) and
//! VXLAN port `vx` (VNI 100, `--local UL.i`, no remote). All addresses are
//! 10.x inside the test's namespaces; each namespace has its own loopback,
//! so every gobgpd serves gRPC on 127.0.0.1:50051 without collisions.
//!
//! Skipped (passing, with a note) when gobgpd cannot be installed.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

const EVPN: &str = env!("CARGO_BIN_EXE_vswitch-evpn");
const ASN: u32 = 65000;
const VNI: &str = "100";

/// Whether gobgpd and gobgp are there (installing them with apt if not).
fn have_gobgp() -> bool {
    let ok = |p: &str| {
        Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok("gobgpd") && ok("gobgp") {
        return true;
    }
    let _ = Command::new("timeout")
        .args(["300", "apt-get", "install", "-y", "-qq", "gobgpd"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if ok("gobgpd") && ok("gobgp") {
        return true;
    }
    eprintln!("skipping: gobgpd/gobgp are not installed and `apt-get install gobgpd` failed");
    false
}

/// A background process of the test, with its log file; ended by its own
/// PID when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
    what: String,
}

impl Proc {
    fn start(ns: &str, args: &[&str], log: PathBuf) -> Proc {
        let f = fs::File::create(&log).expect("log file");
        let what = format!("[{ns}] {}", args.join(" "));
        // `ip netns exec` execs the program: the child's PID is its own.
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup log"))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc { child, log, what }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait (10 s) for the exit status.
    fn stop(mut self) -> (ExitStatus, String) {
        signal(self.child.id(), libc::SIGTERM);
        let st = wait_exit(&mut self.child, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{} did not exit within 10 s of SIGTERM", self.what));
        (st, self.log())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(3));
    }
}

/// gobgpd's configuration: iBGP in AS 65000, l2vpn-evpn, to `neighbors`
/// (with `rr`: route reflector clients, waited for rather than called, so
/// no connection collisions; a session that resets comes back after 1 s,
/// not gobgpd's default 30).
fn gobgp_conf(id: &str, neighbors: &[String], rr: bool) -> String {
    let mut s = format!(
        "[global.config]\n  as = {ASN}\n  router-id = \"{id}\"\n  local-address-list = [\"{id}\"]\n"
    );
    for n in neighbors {
        s += &format!(
            "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{n}\"\n    peer-as = {ASN}\n\
             \x20 [neighbors.timers.config]\n    connect-retry = 1\n    hold-time = 9\n    keepalive-interval = 3\n    idle-hold-time-after-reset = 1\n"
        );
        if rr {
            s += &format!(
                "  [neighbors.transport.config]\n    passive-mode = true\n\
                 \x20 [neighbors.route-reflector.config]\n    route-reflector-client = true\n    route-reflector-cluster-id = \"{id}\"\n"
            );
        }
        s += "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"l2vpn-evpn\"\n";
    }
    s
}

fn start_gobgpd(lab: &Lab, ns: &str, conf: &str, tag: &str) -> Proc {
    let path = lab.path(&format!("gobgpd-{tag}.toml"));
    fs::write(&path, conf).expect("write gobgpd config");
    let path = path.display().to_string();
    Proc::start(
        ns,
        &[
            "gobgpd",
            "-f",
            &path,
            "--api-hosts",
            "127.0.0.1:50051",
            "--pprof-disable",
            "-p",
        ],
        lab.path(&format!("gobgpd-{tag}.log")),
    )
}

/// One host of the overlay. Fields drop in order: agent, speaker, then the
/// lab (vswitchd, namespaces).
struct Node {
    agent: Option<Proc>,
    bgp: Proc,
    lab: Lab,
    host: Host,
    /// Underlay (VTEP) address.
    under: String,
}

impl Node {
    fn start_agent(&mut self) {
        let sock = self.lab.sock.display().to_string();
        self.agent = Some(Proc::start(
            &self.lab.sw,
            &[
                EVPN,
                "--socket",
                &sock,
                "--interval",
                "0.3",
                "--log-level",
                "debug",
            ],
            self.lab.path("agent.log"),
        ));
    }

    /// The flood list of the VXLAN port.
    fn remotes(&self) -> Vec<String> {
        self.lab.port_info("br0", "vx")["remotes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The speaker's EVPN RIB, as gobgp prints it.
    fn rib(&self) -> String {
        let o = self.lab.ns_exec(
            &self.lab.sw,
            &["gobgp", "global", "rib", "-a", "evpn", "-j"],
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The FDB entry for `mac`, with its VTEP if it has one.
    fn entry(&self, mac: &str) -> Option<(String, bool, Option<String>)> {
        self.lab.fdb_entry("br0", mac).map(|e| {
            (
                e["port"].as_str().unwrap_or("").to_string(),
                e["type"] == "static",
                e["vtep"].as_str().map(str::to_string),
            )
        })
    }
}

/// Underlay lab, route reflector and hosts. Drops hosts first.
struct Overlay {
    nodes: Vec<Node>,
    rr: Option<Proc>,
    ul: Lab,
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in &self.nodes {
                if let Some(a) = &n.agent {
                    eprintln!(
                        "--- agent log of {} (tail) ---\n{}",
                        n.under,
                        tail(&a.log(), 4000)
                    );
                }
                eprintln!(
                    "--- gobgpd log of {} (tail) ---\n{}",
                    n.under,
                    tail(&n.bgp.log(), 1500)
                );
                eprintln!("--- RIB at {} ---\n{}", n.under, tail(&n.rib(), 3000));
            }
        }
    }
}

/// A veth from the underlay bridge into `ns` (`ul0`, `addr`/24, MTU 1600).
fn uplink(ul: &Lab, ns: &str, i: usize, addr: &str) {
    let end = format!("u{i}");
    run_ok(
        "ip",
        &[
            "-n", &ul.sw, "link", "add", &end, "mtu", "1600", "type", "veth", "peer", "name",
            "ul0", "mtu", "1600", "netns", ns,
        ],
    );
    ul.ns_ok(&ul.sw, &["ip", "link", "set", &end, "master", "ubr", "up"]);
    ul.ns_ok(
        ns,
        &["ip", "addr", "add", &format!("{addr}/24"), "dev", "ul0"],
    );
    ul.ns_ok(ns, &["ip", "link", "set", "ul0", "up"]);
}

/// `n` hosts on VNI 100 with speakers and agents running; `remote`: a
/// flood-list entry configured by hand on every VXLAN port; `extra`: more
/// route-reflector clients (UL.n+1, ...), started by the test.
fn overlay(n: usize, remote: Option<&str>, extra: usize) -> Overlay {
    let ul = Lab::new();
    ul.ns_ok(&ul.sw, &["ip", "link", "add", "ubr", "type", "bridge"]);
    ul.ns_ok(&ul.sw, &["ip", "link", "set", "ubr", "up"]);
    let rr_addr = format!("{}.254", ul.net);
    ul.ns_ok(
        &ul.sw,
        &["ip", "addr", "add", &format!("{rr_addr}/24"), "dev", "ubr"],
    );
    let mut ov = Overlay {
        nodes: Vec::new(),
        rr: None,
        ul,
    };
    let clients: Vec<String> = (1..=n + extra)
        .map(|i| format!("{}.{i}", ov.ul.net))
        .collect();
    ov.rr = Some(start_gobgpd(
        &ov.ul,
        &ov.ul.sw,
        &gobgp_conf(&rr_addr, &clients, true),
        "rr",
    ));
    let mut overlay_net: Option<String> = None;
    for i in 1..=n {
        let mut lab = Lab::with_daemon();
        match &overlay_net {
            Some(net) => lab.net = net.clone(),
            None => overlay_net = Some(lab.net.clone()),
        }
        lab.add_br("br0", &[]);
        let host = lab.tap_host("br0", i as u32);
        let under = format!("{}.{i}", ov.ul.net);
        uplink(&ov.ul, &lab.sw, i, &under);
        let mut add = vec![
            "add-port", "br0", "vx", "--type", "vxlan", "--vni", VNI, "--local", &under,
        ];
        if let Some(r) = remote {
            add.extend(["--remote", r]);
        }
        lab.ctl_ok(&add);
        let bgp = start_gobgpd(
            &lab,
            &lab.sw,
            &gobgp_conf(&under, std::slice::from_ref(&rr_addr), false),
            "host",
        );
        ov.nodes.push(Node {
            agent: None,
            bgp,
            lab,
            host,
            under,
        });
    }
    for node in &mut ov.nodes {
        node.start_agent();
    }
    ov
}

/// Waits until every host's flood list holds exactly the other hosts.
fn wait_full_mesh(ov: &Overlay) {
    let ok = wait_until(Duration::from_secs(40), || {
        ov.nodes.iter().all(|n| {
            let mut r = n.remotes();
            r.sort();
            let mut want: Vec<String> = ov
                .nodes
                .iter()
                .filter(|o| o.under != n.under)
                .map(|o| o.under.clone())
                .collect();
            want.sort();
            r == want
        })
    });
    let seen: Vec<(String, Vec<String>)> = ov
        .nodes
        .iter()
        .map(|n| (n.under.clone(), n.remotes()))
        .collect();
    assert!(ok, "flood lists did not converge: {seen:?}");
}

#[test]
fn evpn_three_hosts_find_each_other_follow_a_move_and_forget_a_leaver() {
    if !have_gobgp() {
        return;
    }
    let mut ov = overlay(3, None, 0);

    // Type 3: each VXLAN port floods to the two others, learned from BGP.
    wait_full_mesh(&ov);

    // Hosts in VNI 100 reach each other.
    for a in &ov.nodes {
        for b in &ov.nodes {
            if a.under != b.under {
                assert!(
                    a.lab.ping(&a.host, &b.host.ip),
                    "{} cannot ping {} over the EVPN overlay",
                    a.host.ns,
                    b.host.ip
                );
            }
        }
    }

    // Type 2: each host's MAC is a static entry behind vx at the others,
    // with its VTEP, and in every RIB with its host's RD and next hop.
    for a in &ov.nodes {
        for b in &ov.nodes {
            if a.under == b.under {
                continue;
            }
            let want = Some(("vx".to_string(), true, Some(b.under.clone())));
            assert!(
                wait_until(Duration::from_secs(15), || a.entry(&b.host.mac) == want),
                "{}: FDB entry of {} is {:?}, want {want:?}",
                a.under,
                b.host.mac,
                a.entry(&b.host.mac)
            );
        }
        let rib: Value = serde_json::from_str(&a.rib()).expect("gobgp RIB JSON");
        for b in &ov.nodes {
            let key = format!(
                "[type:macadv][rd:{}:{VNI}][etag:0][mac:{}][ip:<nil>]",
                b.under, b.host.mac
            );
            let path = &rib[&key][0];
            assert!(path.is_object(), "{}: no {key} in {rib}", a.under);
            let attrs = path["attrs"].as_array().expect("attrs");
            assert!(
                attrs.iter().any(|x| x["nexthop"] == b.under.as_str()),
                "{key}: next hop is not {}: {path}",
                b.under
            );
            assert_eq!(path["nlri"]["value"]["labels"][0], 100, "{path}");
            let t3 = format!(
                "[type:multicast][rd:{}:{VNI}][etag:0][ip:{}]",
                b.under, b.under
            );
            let t3 = &rib[&t3][0];
            let pmsi = t3["attrs"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["type"] == 22))
                .unwrap_or_else(|| panic!("{}: no PMSI tunnel in {t3}", a.under));
            assert_eq!(pmsi["tunnel-type"], 6, "ingress replication: {pmsi}");
            assert_eq!(pmsi["tunnel-id"], b.under.as_str());
            let ext = t3["attrs"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["type"] == 16))
                .expect("extended communities");
            assert!(
                ext.to_string()
                    .contains(&format!("\"value\":\"{ASN}:{VNI}\"")),
                "{ext}"
            );
        }
    }

    // A MAC moves: h1's interface is re-created behind host 3 (same MAC,
    // same address).
    let moved = ov.nodes[0].host.clone();
    ov.nodes[0].lab.ctl_ok(&["del-port", &moved.port]);
    ov.nodes[2].lab.ctl_ok(&[
        "add-port", "br0", "m1", "--type", "tap", "--netns", &moved.ns, "--ifname", "eth0",
        "--mac", &moved.mac,
    ]);
    let n2 = &ov.nodes[2];
    assert!(wait_until(Duration::from_secs(5), || n2
        .lab
        .link_exists(&moved.ns, "eth0")));
    n2.lab.ns_ok(
        &moved.ns,
        &[
            "ip",
            "addr",
            "add",
            &format!("{}/24", moved.ip),
            "dev",
            "eth0",
        ],
    );
    n2.lab
        .ns_ok(&moved.ns, &["ip", "link", "set", "eth0", "up"]);
    let target = &ov.nodes[1];
    assert!(
        wait_until(Duration::from_secs(30), || n2
            .lab
            .ping_once(&moved, &target.host.ip)),
        "the moved host cannot reach {} from behind {}",
        target.host.ip,
        n2.under
    );
    let want = Some(("vx".to_string(), true, Some(n2.under.clone())));
    for n in &ov.nodes[..2] {
        assert!(
            wait_until(Duration::from_secs(15), || n.entry(&moved.mac) == want),
            "{}: the moved MAC {} is {:?}, want {want:?}",
            n.under,
            moved.mac,
            n.entry(&moved.mac)
        );
    }
    assert!(
        target.lab.ping(&target.host, &moved.ip),
        "{} cannot reach the moved host",
        target.host.ns
    );

    // Host 3's agent stops: its routes are withdrawn, the others stop
    // flooding to it and forget the MACs behind it; it cleans up after
    // itself.
    let leaver = ov.nodes[2].under.clone();
    let (st, log) = ov.nodes[2].agent.take().expect("agent").stop();
    assert!(st.success(), "agent exit status {st}\n{}", tail(&log, 3000));
    for n in &ov.nodes[..2] {
        assert!(
            wait_until(Duration::from_secs(15), || !n.remotes().contains(&leaver)),
            "{} still floods to {leaver}: {:?}",
            n.under,
            n.remotes()
        );
        assert!(
            wait_until(Duration::from_secs(15), || !n
                .rib()
                .contains(&format!("[rd:{leaver}:{VNI}]"))),
            "{}: routes of {leaver} remain: {}",
            n.under,
            n.rib()
        );
        assert!(
            wait_until(Duration::from_secs(15), || n
                .entry(&moved.mac)
                .is_none_or(|(_, is_static, _)| !is_static)),
            "{}: static entry for {} behind the leaver remains: {:?}",
            n.under,
            moved.mac,
            n.entry(&moved.mac)
        );
    }
    assert_eq!(
        ov.nodes[2].remotes(),
        Vec::<String>::new(),
        "the stopped agent left its flood list behind"
    );
}

/// Whether a RIB (gobgp's JSON) has a destination, e.g.
/// `[type:multicast][rd:...][etag:0][ip:...]`.
fn has(rib: &str, key: &str) -> bool {
    serde_json::from_str::<Value>(rib).is_ok_and(|v| v.get(key).is_some())
}

/// The RR's EVPN RIB.
fn rr_rib(ov: &Overlay) -> String {
    let o = ov
        .ul
        .ns_exec(&ov.ul.sw, &["gobgp", "global", "rib", "-a", "evpn", "-j"]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn evpn_routes_reach_the_peer_and_leave_with_the_agent() {
    if !have_gobgp() {
        return;
    }
    // One host; its VXLAN port has a remote configured by hand, which the
    // agent must leave alone.
    let hand = "10.255.255.7".to_string();
    let ov = overlay(1, Some(&hand), 0);
    let n = &ov.nodes[0];
    let t3 = format!("[type:multicast][rd:{0}:{VNI}][etag:0][ip:{0}]", n.under);
    assert!(
        wait_until(Duration::from_secs(30), || has(&rr_rib(&ov), &t3)),
        "no {t3} at the route reflector: {}",
        rr_rib(&ov)
    );
    // The host says something (ARP), the bridge learns its MAC, the agent
    // advertises it.
    let _ = n.lab.ping_once(&n.host, &n.lab.ip(99));
    let t2 = format!(
        "[type:macadv][rd:{}:{VNI}][etag:0][mac:{}][ip:<nil>]",
        n.under, n.host.mac
    );
    assert!(
        wait_until(Duration::from_secs(15), || has(&rr_rib(&ov), &t2)),
        "no {t2} at the route reflector: {}",
        rr_rib(&ov)
    );
    let rib: Value = serde_json::from_str(&rr_rib(&ov)).expect("RIB JSON");
    let path = &rib[&t2][0];
    let attrs = path["attrs"].to_string();
    assert!(
        attrs.contains(&format!("\"nexthop\":\"{}\"", n.under)),
        "{path}"
    );
    assert!(
        attrs.contains(&format!("\"value\":\"{ASN}:{VNI}\"")),
        "{path}"
    );
    assert!(attrs.contains("\"tunnel_type\":8"), "encap vxlan: {path}");
    assert_eq!(path["nlri"]["value"]["labels"][0], 100, "{path}");
    assert_eq!(n.remotes(), vec![hand.clone()]);

    // SIGTERM: every route withdrawn, the hand-made remote still there.
    let mut ov = ov;
    let (st, log) = ov.nodes[0].agent.take().expect("agent").stop();
    assert!(st.success(), "agent exit status {st}\n{}", tail(&log, 3000));
    let under = ov.nodes[0].under.clone();
    assert!(
        wait_until(Duration::from_secs(10), || !rr_rib(&ov)
            .contains(&format!("[rd:{under}:{VNI}]"))),
        "routes remain after the agent stopped: {}",
        rr_rib(&ov)
    );
    assert_eq!(ov.nodes[0].remotes(), vec![hand]);
}

/// Programs a kernel VTEP's FDB from its speaker's RIB, as an EVPN speaker
/// would for a Linux VTEP: each other VTEP's type-3 route appends an
/// all-zero (flood) entry, each type-2 route a MAC entry. Returns how many
/// of each it saw.
fn program_kernel_vtep(lab: &Lab, ns: &str, own: &str) -> (usize, usize) {
    let out = lab.ns_ok(ns, &["gobgp", "global", "rib", "-a", "evpn", "-j"]);
    let rib: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    let fdb = lab.ns_ok(ns, &["bridge", "fdb", "show", "dev", "vx0"]);
    let (mut t3, mut t2) = (0, 0);
    for paths in rib.as_object().into_iter().flat_map(|m| m.values()) {
        for p in paths.as_array().into_iter().flatten() {
            let v = &p["nlri"]["value"];
            let nh = p["attrs"]
                .as_array()
                .and_then(|a| a.iter().find_map(|x| x["nexthop"].as_str()))
                .unwrap_or("");
            if nh == own || nh.is_empty() {
                continue;
            }
            match p["nlri"]["type"].as_u64() {
                Some(3) => {
                    t3 += 1;
                    if !fdb.contains(&format!("00:00:00:00:00:00 dst {nh} ")) {
                        lab.ns_ok(
                            ns,
                            &[
                                "bridge",
                                "fdb",
                                "append",
                                "00:00:00:00:00:00",
                                "dev",
                                "vx0",
                                "dst",
                                nh,
                            ],
                        );
                    }
                }
                Some(2) => {
                    t2 += 1;
                    let mac = v["mac"].as_str().unwrap_or("");
                    lab.ns_ok(
                        ns,
                        &["bridge", "fdb", "replace", mac, "dev", "vx0", "dst", nh],
                    );
                }
                _ => {}
            }
        }
    }
    (t3, t2)
}

#[test]
fn evpn_kernel_vtep_with_its_own_speaker_joins() {
    if !have_gobgp() {
        return;
    }
    // Two vswitchd hosts with agents, and a Linux VTEP (vxlan device,
    // nolearning) whose routes a plain GoBGP speaker announces.
    let mut ov = overlay(2, None, 1);
    let k = ov.ul.add_netns("k");
    let under = format!("{}.3", ov.ul.net);
    uplink(&ov.ul, &k, 3, &under);
    ov.ul.ns_ok(
        &k,
        &[
            "ip",
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            VNI,
            "local",
            &under,
            "dstport",
            "4789",
            "nolearning",
            "dev",
            "ul0",
        ],
    );
    ov.ul
        .ns_ok(&k, &["ip", "link", "set", "vx0", "mtu", "1500", "up"]);
    let kip = ov.nodes[0].lab.ip(3);
    ov.ul.ns_ok(
        &k,
        &["ip", "addr", "add", &format!("{kip}/24"), "dev", "vx0"],
    );
    let kmac = ov.ul.mac_of(&k, "vx0");
    let rr = format!("{}.254", ov.ul.net);
    let _speaker = start_gobgpd(
        &ov.ul,
        &k,
        &gobgp_conf(&under, std::slice::from_ref(&rr), false),
        "kernel",
    );
    let rd = format!("{under}:{VNI}");
    let rt = format!("{ASN}:{VNI}");
    let add = |args: &[&str]| {
        let mut a = vec!["gobgp", "global", "rib", "add", "-a", "evpn"];
        a.extend_from_slice(args);
        wait_until(Duration::from_secs(10), || {
            ov.ul.ns_exec(&k, &a).status.success()
        })
    };
    assert!(add(&[
        "multicast",
        &under,
        "etag",
        "0",
        "rd",
        &rd,
        "rt",
        &rt,
        "encap",
        "vxlan",
        "pmsi",
        "ingress-repl",
        VNI,
        &under,
        "nexthop",
        &under,
    ]));
    assert!(add(&[
        "macadv", &kmac, "0.0.0.0", "etag", "0", "label", VNI, "rd", &rd, "rt", &rt, "encap",
        "vxlan", "nexthop", &under,
    ]));

    // The vswitchd hosts flood to the kernel VTEP and know its MAC.
    for n in &ov.nodes {
        let want = Some(("vx".to_string(), true, Some(under.clone())));
        assert!(
            wait_until(Duration::from_secs(40), || n.remotes().contains(&under)
                && n.entry(&kmac) == want),
            "{}: flood list {:?}, kernel VTEP MAC {:?}",
            n.under,
            n.remotes(),
            n.entry(&kmac)
        );
    }
    // The kernel VTEP gets its flood list from its RIB; the hosts reach it.
    assert!(
        wait_until(Duration::from_secs(20), || program_kernel_vtep(
            &ov.ul, &k, &under
        )
        .0 == 2),
        "kernel VTEP's RIB: {:?}",
        program_kernel_vtep(&ov.ul, &k, &under)
    );
    for n in &ov.nodes {
        assert!(
            n.lab.ping(&n.host, &kip),
            "{} cannot reach the kernel VTEP",
            n.host.ns
        );
    }
    // Having spoken, the hosts are advertised: the kernel VTEP gets their
    // MACs and reaches them by unicast.
    assert!(
        wait_until(Duration::from_secs(20), || program_kernel_vtep(
            &ov.ul, &k, &under
        ) == (2, 2)),
        "kernel VTEP's RIB: {:?}",
        program_kernel_vtep(&ov.ul, &k, &under)
    );
    let fdb = ov.ul.ns_ok(&k, &["bridge", "fdb", "show", "dev", "vx0"]);
    let kh = Host {
        ns: k.clone(),
        port: String::new(),
        ifname: "vx0".into(),
        ip: kip.clone(),
        mac: kmac.clone(),
    };
    for n in &ov.nodes {
        assert!(
            fdb.contains(&format!("{} dst {} ", n.host.mac, n.under)),
            "kernel FDB lacks {} -> {}: {fdb}",
            n.host.mac,
            n.under
        );
        assert!(
            n.lab.ping(&kh, &n.host.ip),
            "the kernel VTEP cannot reach {}",
            n.host.ip
        );
    }
}

#[test]
fn evpn_agent_help_and_errors() {
    let o = run(EVPN, &["--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for want in [
        "RFC 7432",
        "--socket",
        "--gobgp-port",
        "--dry-run",
        "Example",
    ] {
        assert!(help.contains(want), "--help lacks {want}: {help}");
    }
    let o = run(EVPN, &["--interval", "0"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error:"));
    // One round against nothing: a clear error, not a panic.
    let o = run(
        EVPN,
        &[
            "--once",
            "--asn",
            "65000",
            "--socket",
            "/nonexistent/vs.sock",
            "--command-timeout",
            "2",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.lines().any(|l| l.starts_with("error:")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
