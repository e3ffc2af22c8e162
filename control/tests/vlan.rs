//! 802.1Q VLANs with real traffic between network namespaces: access-port
//! separation, trunks to a host that tags in user space (raw sockets, decoded
//! with our sniffer and with tshark), the native VLAN, double tagging,
//! VLANs a port does not carry, port isolation, and Open vSwitch as an
//! independent peer switch on the other end of a trunk.
//!
//! Hosts h1/h2 are in VLAN 10, h3/h4 in VLAN 20, h5 in VLAN 1 (the default),
//! `t` (h6) is a trunk `10,20 --native 1`, `t2` (h7) a second trunk `10,20`
//! without a native VLAN. Both kinds of trunk port are exercised: a TAP sees
//! tags in band, an AF_PACKET veth receives them out of band (the daemon
//! restores them).

mod common;
mod vlan_support;

use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use vlan_support::*;

const BCAST: &str = "ff:ff:ff:ff:ff:ff";
/// Source MACs of crafted frames, one per purpose so captures never mix.
const T_MAC: &str = "02:00:00:00:76:01";
const B_MAC: &str = "02:00:00:00:76:02";
const P_MAC: &str = "02:00:00:00:76:03";
const N_MAC: &str = "02:00:00:00:76:04";
const Z_MAC: &str = "02:00:00:00:76:05";
const D_MAC: &str = "02:00:00:00:76:06";
const E_MAC: &str = "02:00:00:00:76:07";
const V_MAC: &str = "02:00:00:00:76:08";
const A_MAC: &str = "02:00:00:00:76:09";
const U_MAC: &str = "02:00:00:00:76:0a";
const I_MAC: &str = "02:00:00:00:76:0b";

fn other(kind: PortKind) -> PortKind {
    match kind {
        PortKind::Tap => PortKind::Afpacket,
        PortKind::Afpacket => PortKind::Tap,
    }
}

/// Diagnostics appended to failing assertions.
fn diag(lab: &Lab) -> String {
    format!(
        "\nstats: {}\nfdb: {}\n--- daemon log (tail) ---\n{}",
        String::from_utf8_lossy(&lab.ctl(&["--json", "stats"]).stdout),
        String::from_utf8_lossy(&lab.ctl(&["--json", "fdb-show", "br0"]).stdout),
        tail(&lab.daemon_log(), 3000)
    )
}

/// Asserts that the sniffers named in `names` saw nothing.
fn assert_none(lab: &Lab, got: &HashMap<String, Vec<Frame>>, names: &[&str], what: &str) {
    for n in names {
        let f = &got[*n];
        assert!(
            f.is_empty(),
            "{what}: {n} must see nothing but saw {} frame(s): {:?}{}",
            f.len(),
            f,
            diag(lab)
        );
    }
}

/// Asserts that sniffer `name` saw between 1 and `max` frames, all with the
/// given VLAN tags (outer first; empty = untagged) and ethertype.
fn assert_seen(
    lab: &Lab,
    got: &HashMap<String, Vec<Frame>>,
    name: &str,
    max: usize,
    vids: &[u16],
    ethertype: u16,
    what: &str,
) {
    let f = &got[name];
    assert!(
        !f.is_empty() && f.len() <= max,
        "{what}: {name} should see 1..={max} frames, saw {}: {f:?}{}",
        f.len(),
        diag(lab)
    );
    for fr in f {
        assert_eq!(
            (fr.vids(), fr.ethertype),
            (vids.to_vec(), ethertype),
            "{what}: frame at {name} has VLAN tags {:?} / ethertype {:#06x}, want {:?} / {:#06x}: {fr:?}",
            fr.vids(),
            fr.ethertype,
            vids,
            ethertype
        );
    }
}

fn vlan_list(v: &Value) -> Vec<u64> {
    let mut l: Vec<u64> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    l.sort();
    l
}

/// FDB entries of `mac` as (vlan, port) pairs, sorted.
fn fdb_of(lab: &Lab, mac: &str) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = lab
        .fdb("br0")
        .iter()
        .filter(|e| e["mac"].as_str().map(str::to_lowercase).as_deref() == Some(mac))
        .map(|e| {
            (
                e["vlan"].as_u64().expect("vlan in fdb entry"),
                e["port"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Makes a few ARP broadcasts from `h` (an address nobody has) and, with
/// its neighbour cache flushed, pings `to` (ARP request + echo).
fn chatter(lab: &Lab, h: &Host, to: &str) {
    let _ = lab.ns_exec(&h.ns, &["ip", "neigh", "flush", "all"]);
    let _ = lab.ns_exec(
        &h.ns,
        &["ping", "-n", "-q", "-c", "2", "-i", "0.3", "-W", "1", to],
    );
    let unknown = lab.ip(199);
    let _ = lab.ns_exec(&h.ns, &["ping", "-n", "-q", "-c", "2", "-W", "1", &unknown]);
}

// ---------------------------------------------------------------------------
// 1. Access-port separation
// ---------------------------------------------------------------------------

fn separation(kind: PortKind) {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.host("br0", 1, kind);
    let h2 = lab.host("br0", 2, kind);
    let h3 = lab.host("br0", 3, kind);
    let h4 = lab.host("br0", 4, kind);
    for (p, vid) in [("p1", "10"), ("p2", "10"), ("p3", "20"), ("p4", "20")] {
        lab.ctl_ok(&["set-port", p, "--access", vid]);
    }
    for (p, vid) in [("p1", 10), ("p2", 10), ("p3", 20), ("p4", 20)] {
        let info = lab.port_info("br0", p);
        assert_eq!(info["vlan_mode"], "access", "{info}");
        assert_eq!(info["access_vlan"], vid, "{info}");
        assert_eq!(vlan_list(&info["trunk_vlans"]), Vec::<u64>::new(), "{info}");
        assert_eq!(info["isolated"], false, "{info}");
        assert_eq!(info["learning"], true, "{info}");
    }
    // Every drop reason of the VLAN feature is always reported.
    for p in ["p1", "p2", "p3", "p4"] {
        for r in ["vlan_filtered", "double_tagged", "isolated", "no_egress"] {
            lab.drops(p, r);
        }
    }

    lab.assert_all_ping(&[&h1, &h2]);
    lab.assert_all_ping(&[&h3, &h4]);
    for (a, b) in [(&h1, &h3), (&h1, &h4), (&h2, &h3), (&h3, &h1), (&h4, &h2)] {
        assert!(
            !lab.ping_once(a, &b.ip),
            "{} (port {}) reached {} (port {}) across VLANs{}",
            a.ns,
            a.port,
            b.ns,
            b.port,
            diag(&lab)
        );
    }

    // Nothing of h1's (broadcast ARP included) reaches VLAN 20, while h2
    // (the positive control) sees its broadcasts.
    let mut cap = Capture::new(&lab);
    cap.sniff(&lab, "h2", &h2.ns, "eth0", Some(&h1.mac));
    cap.sniff(&lab, "h3", &h3.ns, "eth0", Some(&h1.mac));
    cap.sniff(&lab, "h4", &h4.ns, "eth0", Some(&h1.mac));
    chatter(&lab, &h1, &h2.ip);
    let got = cap.collect();
    let arp_bcast = got["h2"]
        .iter()
        .filter(|f| f.dst == BCAST && f.ethertype == 0x0806 && f.tags.is_empty())
        .count();
    assert!(
        arp_bcast >= 1,
        "h2 saw no untagged broadcast ARP from h1: {:?}{}",
        got["h2"],
        diag(&lab)
    );
    assert_none(&lab, &got, &["h3", "h4"], "h1 (VLAN 10) traffic");

    // The FDB is per VLAN.
    assert_eq!(
        fdb_of(&lab, &h1.mac),
        [(10, "p1".to_string())],
        "{}",
        diag(&lab)
    );
    assert_eq!(
        fdb_of(&lab, &h3.mac),
        [(20, "p3".to_string())],
        "{}",
        diag(&lab)
    );
    assert!(
        lab.fdb("br0").iter().all(|e| e["vlan"] != 1),
        "an entry in VLAN 1 although no port carries it{}",
        diag(&lab)
    );
}

#[test]
fn separation_tap() {
    separation(PortKind::Tap);
}

#[test]
fn separation_afpacket() {
    separation(PortKind::Afpacket);
}

// ---------------------------------------------------------------------------
// Trunk topology shared by tests 2-5
// ---------------------------------------------------------------------------

struct Topo {
    h1: Host,
    h2: Host,
    h3: Host,
    h4: Host,
    h5: Host,
    /// Trunk 10,20 native 1, of the kind under test.
    t: Host,
    /// Trunk 10,20 without native VLAN, of the other kind.
    t2: Host,
    lab: Lab,
}

const ALL: &[&str] = &["h1", "h2", "h3", "h4", "h5", "t", "t2"];

impl Topo {
    fn new(kind: PortKind) -> Topo {
        let mut lab = Lab::with_daemon();
        lab.add_br("br0", &[]);
        let h1 = lab.host("br0", 1, PortKind::Tap);
        let h2 = lab.host("br0", 2, PortKind::Afpacket);
        let h3 = lab.host("br0", 3, PortKind::Tap);
        let h4 = lab.host("br0", 4, PortKind::Afpacket);
        let h5 = lab.host("br0", 5, PortKind::Tap);
        let t = lab.host("br0", 6, kind);
        let t2 = lab.host("br0", 7, other(kind));
        lab.ctl_ok(&["set-port", &h1.port, "--access", "10"]);
        lab.ctl_ok(&["set-port", &h2.port, "--access", "10"]);
        lab.ctl_ok(&["set-port", &h3.port, "--access", "20"]);
        lab.ctl_ok(&["set-port", &h4.port, "--access", "20"]);
        lab.ctl_ok(&["set-port", &t.port, "--trunk", "10,20", "--native", "1"]);
        lab.ctl_ok(&["set-port", &t2.port, "--trunk", "10,20"]);
        Topo {
            h1,
            h2,
            h3,
            h4,
            h5,
            t,
            t2,
            lab,
        }
    }

    fn host(&self, name: &str) -> &Host {
        match name {
            "h1" => &self.h1,
            "h2" => &self.h2,
            "h3" => &self.h3,
            "h4" => &self.h4,
            "h5" => &self.h5,
            "t" => &self.t,
            "t2" => &self.t2,
            _ => panic!("no host {name}"),
        }
    }

    /// Sniffers on every host named, for frames from `src`.
    fn capture(&self, names: &[&str], src: &str) -> Capture {
        let mut cap = Capture::new(&self.lab);
        for n in names {
            let h = self.host(n);
            cap.sniff(&self.lab, n, &h.ns, &h.ifname, Some(src));
        }
        cap
    }

    /// Sends crafted frames from host `from`.
    fn send(&self, from: &str, src: &str, tags: &[&str], count: u32) {
        let h = self.host(from);
        let sent = send(&self.lab, &h.ns, &h.ifname, src, BCAST, tags, count);
        assert_eq!(sent, u64::from(count));
    }

    fn drops(&self, host: &str, reason: &str) -> u64 {
        self.lab.drops(&self.host(host).port, reason)
    }
}

// ---------------------------------------------------------------------------
// 2. Trunk to a host that tags in user space
// ---------------------------------------------------------------------------

fn trunk_tagged_host(kind: PortKind) {
    let topo = Topo::new(kind);
    let lab = &topo.lab;
    let (h1, h3, t) = (&topo.h1, &topo.h3, &topo.t);

    let pt = lab.port_info("br0", &t.port);
    assert_eq!(pt["vlan_mode"], "trunk", "{pt}");
    assert_eq!(pt["access_vlan"], Value::Null, "{pt}");
    assert_eq!(pt["native_vlan"], 1, "{pt}");
    let vids = vlan_list(&pt["trunk_vlans"]);
    assert!(
        vids.contains(&10) && vids.contains(&20) && !vids.contains(&30),
        "{pt}"
    );
    let pt2 = lab.port_info("br0", &topo.t2.port);
    assert_eq!(vlan_list(&pt2["trunk_vlans"]), [10, 20], "{pt2}");
    assert_eq!(pt2["native_vlan"], Value::Null, "{pt2}");

    // ARP and ICMP echo, tagged VLAN 10, from a raw socket in t to h1: the
    // replies come back tagged 10.
    let src_ip = lab.ip(60);
    let r = arp_icmp(lab, t, (10, 0), T_MAC, &src_ip, &h1.ip, 10);
    let arp = &r["arp_reply"];
    assert_eq!(
        arp["mac"],
        h1.mac.as_str(),
        "ARP reply via VLAN 10: {r}{}",
        diag(lab)
    );
    assert_eq!(
        vlan_list(&Value::Array(vid_values(&arp["tags"]))),
        [10],
        "{r}"
    );
    let echo = &r["echo_reply"];
    assert!(
        echo.is_object(),
        "no ICMP echo reply via VLAN 10: {r}{}",
        diag(lab)
    );
    assert_eq!(
        vlan_list(&Value::Array(vid_values(&echo["tags"]))),
        [10],
        "{r}"
    );
    // The same in VLAN 20 to h3.
    let r = arp_icmp(lab, t, (20, 0), T_MAC, &src_ip, &h3.ip, 10);
    assert_eq!(r["arp_reply"]["mac"], h3.mac.as_str(), "{r}{}", diag(lab));
    assert_eq!(
        vlan_list(&Value::Array(vid_values(&r["echo_reply"]["tags"]))),
        [20],
        "{r}"
    );
    // h1 is not in VLAN 20: no answer there.
    let r = arp_icmp(lab, t, (20, 0), T_MAC, &src_ip, &h1.ip, 3);
    assert_eq!(r["arp_reply"], Value::Null, "h1 answered in VLAN 20: {r}");
    // The trunk host's MAC is learned once per VLAN, on the trunk.
    assert_eq!(
        fdb_of(lab, T_MAC),
        [(10, t.port.clone()), (20, t.port.clone())],
        "{}",
        diag(lab)
    );

    // A tagged VLAN 10 broadcast from t: untagged at h1/h2, tagged 10 at
    // the other trunk, nowhere else.
    let cap = topo.capture(&["h1", "h2", "h3", "h4", "h5", "t2"], B_MAC);
    topo.send("t", B_MAC, &["10"], 5);
    let got = cap.collect();
    assert_seen(lab, &got, "h1", 5, &[], 0x88b5, "VLAN 10 from trunk");
    assert_seen(lab, &got, "h2", 5, &[], 0x88b5, "VLAN 10 from trunk");
    assert_seen(lab, &got, "t2", 5, &[10], 0x88b5, "VLAN 10 from trunk");
    assert_none(lab, &got, &["h3", "h4", "h5"], "VLAN 10 from trunk");

    // Real traffic from h3 (VLAN 20) arrives at both trunks tagged 20.
    let mut cap = Capture::new(lab);
    for n in ["t", "t2", "h1", "h4"] {
        cap.sniff(lab, n, &topo.host(n).ns, "eth0", Some(&h3.mac));
    }
    chatter(lab, h3, &topo.h4.ip);
    let got = cap.collect();
    for n in ["t", "t2"] {
        let f = &got[n];
        assert!(!f.is_empty(), "{n} saw nothing from h3{}", diag(lab));
        assert!(
            f.iter().all(|f| f.vids() == [20]),
            "frames from h3 at {n} must be tagged 20: {f:?}"
        );
        assert!(
            f.iter().any(|f| f.dst == BCAST && f.ethertype == 0x0806),
            "h3's ARP broadcast missing at {n}: {f:?}"
        );
    }
    assert!(
        got["h4"].iter().all(|f| f.tags.is_empty()),
        "{:?}",
        got["h4"]
    );
    assert_none(lab, &got, &["h1"], "h3 (VLAN 20) traffic");

    // PCP set by the sender survives trunk to trunk; decoded by tshark.
    if tshark_available() {
        let cap = tshark(lab, &topo.t2.ns, "eth0", P_MAC, 6, 30);
        let snf = topo.capture(&["t2", "h1", "h3"], P_MAC);
        topo.send("t", P_MAC, &["10/5"], 3);
        topo.send("t", P_MAC, &["20/3"], 3);
        let got = snf.collect();
        let decoded = cap.decode();
        assert!(
            !decoded.is_empty(),
            "tshark on t2 captured nothing{}",
            diag(lab)
        );
        for (ids, prios) in &decoded {
            assert!(
                (ids.clone(), prios.clone()) == (vec![10], vec![5])
                    || (ids.clone(), prios.clone()) == (vec![20], vec![3]),
                "tshark on t2 decoded VLAN {ids:?} PCP {prios:?}; want 10/5 or 20/3: {decoded:?}"
            );
        }
        assert!(decoded.iter().any(|(i, _)| i == &[10]), "{decoded:?}");
        assert!(decoded.iter().any(|(i, _)| i == &[20]), "{decoded:?}");
        // Our own decoder agrees.
        for f in &got["t2"] {
            let want = if f.vids() == [10] { 5 } else { 3 };
            assert_eq!(f.tags[0].pcp, want, "PCP lost: {f:?}");
            assert_eq!(f.tags[0].tpid, 0x8100, "{f:?}");
        }
        assert_seen(lab, &got, "h1", 3, &[], 0x88b5, "PCP 5 VLAN 10 frames");
        assert_seen(lab, &got, "h3", 3, &[], 0x88b5, "PCP 3 VLAN 20 frames");
    } else {
        panic!("tshark is not installed (apt-get install -y tshark)");
    }
}

fn vid_values(tags: &Value) -> Vec<Value> {
    tags.as_array()
        .unwrap_or_else(|| panic!("tags not an array: {tags}"))
        .iter()
        .map(|t| t["vid"].clone())
        .collect()
}

#[test]
fn trunk_tagged_host_afpacket() {
    trunk_tagged_host(PortKind::Afpacket);
}

#[test]
fn trunk_tagged_host_tap() {
    trunk_tagged_host(PortKind::Tap);
}

// ---------------------------------------------------------------------------
// 3. Native VLAN and priority tags
// ---------------------------------------------------------------------------

fn native_vlan(kind: PortKind) {
    let topo = Topo::new(kind);
    let lab = &topo.lab;
    let (h1, h3, h5, t) = (&topo.h1, &topo.h3, &topo.h5, &topo.t);

    // t's plain (untagged) eth0 is in the native VLAN 1, like h5.
    lab.assert_all_ping(&[t, h5]);
    for to in [h1, h3] {
        assert!(
            !lab.ping_once(t, &to.ip),
            "untagged trunk traffic reached {} (VLAN 10/20){}",
            to.ns,
            diag(lab)
        );
    }
    assert_eq!(fdb_of(lab, &t.mac), [(1, t.port.clone())], "{}", diag(lab));

    // h5's broadcasts reach t untagged, and not t2 (which has no native VLAN).
    let mut cap = Capture::new(lab);
    for n in ["t", "t2", "h1", "h3"] {
        cap.sniff(lab, n, &topo.host(n).ns, "eth0", Some(&h5.mac));
    }
    chatter(lab, h5, &t.ip);
    let got = cap.collect();
    assert!(
        got["t"]
            .iter()
            .any(|f| f.dst == BCAST && f.ethertype == 0x0806),
        "h5's ARP broadcast missing on the trunk: {:?}{}",
        got["t"],
        diag(lab)
    );
    assert!(
        got["t"].iter().all(|f| f.tags.is_empty()),
        "native VLAN traffic must be untagged on the trunk: {:?}",
        got["t"]
    );
    assert_none(lab, &got, &["t2", "h1", "h3"], "VLAN 1 traffic from h5");

    // Untagged crafted frames from the trunk: VLAN 1 only.
    let cap = topo.capture(&["h1", "h2", "h3", "h4", "h5", "t2"], N_MAC);
    topo.send("t", N_MAC, &[], 5);
    let got = cap.collect();
    assert_seen(lab, &got, "h5", 5, &[], 0x88b5, "untagged from trunk");
    assert_none(
        lab,
        &got,
        &["h1", "h2", "h3", "h4", "t2"],
        "untagged from trunk",
    );

    // Priority-tagged (VID 0) frames from the trunk join the native VLAN.
    let cap = topo.capture(&["h1", "h3", "h5", "t2"], Z_MAC);
    topo.send("t", Z_MAC, &["0/6"], 5);
    let got = cap.collect();
    assert_seen(
        lab,
        &got,
        "h5",
        5,
        &[],
        0x88b5,
        "priority-tagged from trunk",
    );
    assert_none(lab, &got, &["h1", "h3", "t2"], "priority-tagged from trunk");

    // Priority-tagged into an access port (TAP h1, AF_PACKET h2) joins its
    // access VLAN: untagged at the neighbour, tagged 10 on the trunks.
    for (from, peer) in [("h1", "h2"), ("h2", "h1")] {
        let cap = topo.capture(&[peer, "h3", "h5", "t", "t2"], A_MAC);
        topo.send(from, A_MAC, &["0/4"], 5);
        let got = cap.collect();
        let what = format!("priority-tagged into access port {from}");
        assert_seen(lab, &got, peer, 5, &[], 0x88b5, &what);
        assert_seen(lab, &got, "t", 5, &[10], 0x88b5, &what);
        assert_seen(lab, &got, "t2", 5, &[10], 0x88b5, &what);
        assert_none(lab, &got, &["h3", "h5"], &what);
        // The priority (PCP 4) rides on into the VLAN tag.
        for n in ["t", "t2"] {
            for f in &got[n] {
                assert_eq!(f.tags[0].pcp, 4, "{what}: PCP lost at {n}: {f:?}");
            }
        }
    }

    // Re-configuring the trunk with native VLAN 10 (also in its list)
    // flushes what it learned; now VLAN 10 is the untagged one on it.
    assert!(!fdb_of(lab, &t.mac).is_empty(), "{}", diag(lab));
    lab.ctl_ok(&["set-port", &t.port, "--trunk", "10,20", "--native", "10"]);
    assert_eq!(lab.port_info("br0", &t.port)["native_vlan"], 10);
    assert!(
        fdb_of(lab, &t.mac).is_empty(),
        "trunk entries survived a VLAN change{}",
        diag(lab)
    );
    lab.assert_all_ping(&[t, h1]);
    assert!(
        !lab.ping_once(t, &h5.ip),
        "t reached h5 (VLAN 1) after native moved to 10"
    );
    let mut cap = Capture::new(lab);
    for n in ["t", "t2"] {
        cap.sniff(lab, n, &topo.host(n).ns, "eth0", Some(&h1.mac));
    }
    chatter(lab, h1, &topo.h2.ip);
    let got = cap.collect();
    assert!(
        !got["t"].is_empty() && got["t"].iter().all(|f| f.tags.is_empty()),
        "VLAN 10 must be untagged on t now: {:?}",
        got["t"]
    );
    assert!(
        !got["t2"].is_empty() && got["t2"].iter().all(|f| f.vids() == [10]),
        "VLAN 10 must stay tagged on t2: {:?}",
        got["t2"]
    );
}

#[test]
fn native_vlan_afpacket() {
    native_vlan(PortKind::Afpacket);
}

#[test]
fn native_vlan_tap() {
    native_vlan(PortKind::Tap);
}

// ---------------------------------------------------------------------------
// 4. Double tagging
// ---------------------------------------------------------------------------

fn double_tagged(kind: PortKind) {
    let topo = Topo::new(kind);
    let lab = &topo.lab;
    let before = topo.drops("t", "double_tagged");

    // Outer tag = native VLAN 1, inner tag VLAN 20 (802.1Q, then 802.1ad):
    // dropped on ingress, so VLAN 20 never sees it (nor VLAN 1).
    let cap = topo.capture(&["h1", "h2", "h3", "h4", "h5", "t2"], D_MAC);
    topo.send("t", D_MAC, &["1", "20"], 5);
    topo.send("t", D_MAC, &["1", "0x88a8:20"], 5);
    let got = cap.collect();
    assert_none(
        lab,
        &got,
        &["h1", "h2", "h3", "h4", "h5", "t2"],
        "native-outer double-tagged frames",
    );
    let after = topo.drops("t", "double_tagged");
    assert!(
        after > before,
        "double_tagged on the trunk did not grow ({before} -> {after}){}",
        diag(lab)
    );
    assert!(
        fdb_of(lab, D_MAC).is_empty(),
        "source of a dropped frame was learned{}",
        diag(lab)
    );

    // Outer tag VLAN 10 with an inner tag, flooded: sending it untagged out
    // of the VLAN 10 access ports would expose the inner tag, so they get
    // nothing; the other trunk carries it tagged, inner tag intact.
    let cap = topo.capture(&["h1", "h2", "h3", "h4", "h5", "t2"], E_MAC);
    topo.send("t", E_MAC, &["10", "20"], 5);
    let got = cap.collect();
    assert_none(
        lab,
        &got,
        &["h1", "h2", "h3", "h4", "h5"],
        "VLAN 10 frame carrying an inner tag",
    );
    assert_seen(
        lab,
        &got,
        "t2",
        5,
        &[10, 20],
        0x88b5,
        "QinQ-style frame to trunk",
    );

    // The same frame as known unicast to h1 (learned in VLAN 10): dropped,
    // counted as double_tagged on the trunk where it arrived.
    assert!(
        lab.ping(&topo.h1, &topo.h2.ip),
        "h1 cannot ping h2{}",
        diag(lab)
    );
    assert_eq!(
        fdb_of(lab, &topo.h1.mac),
        [(10, topo.h1.port.clone())],
        "{}",
        diag(lab)
    );
    let before = topo.drops("t", "double_tagged");
    let mut cap = Capture::new(lab);
    cap.sniff(lab, "h1", &topo.h1.ns, "eth0", Some(E_MAC));
    send(
        lab,
        &topo.t.ns,
        "eth0",
        E_MAC,
        &topo.h1.mac,
        &["10", "20"],
        5,
    );
    let got = cap.collect();
    assert_none(
        lab,
        &got,
        &["h1"],
        "unicast VLAN 10 frame with an inner tag",
    );
    let after = topo.drops("t", "double_tagged");
    assert!(
        after >= before + 5,
        "double_tagged did not count the unicast frames held back from h1 ({before} -> {after}){}",
        diag(lab)
    );

    // Flooded with no trunk left to take it (t2 stops carrying VLAN 10):
    // every candidate port is an access port, so the frame goes nowhere.
    lab.ctl_ok(&["set-port", &topo.t2.port, "--trunk", "20"]);
    let dt = topo.drops("t", "double_tagged");
    let ne = topo.drops("t", "no_egress");
    let cap = topo.capture(&["h1", "h2", "h3", "h4", "h5", "t2"], E_MAC);
    topo.send("t", E_MAC, &["10", "20"], 5);
    let got = cap.collect();
    assert_none(
        lab,
        &got,
        &["h1", "h2", "h3", "h4", "h5", "t2"],
        "flooded VLAN 10 frame with an inner tag, no trunk",
    );
    let (dt2, ne2) = (
        topo.drops("t", "double_tagged"),
        topo.drops("t", "no_egress"),
    );
    println!(
        "flood with only access candidates: double_tagged {dt} -> {dt2}, no_egress {ne} -> {ne2}"
    );
    assert!(
        dt2 + ne2 >= dt + ne + 5,
        "the dropped frames were not counted (double_tagged {dt} -> {dt2}, no_egress {ne} -> {ne2}){}",
        diag(lab)
    );
}

#[test]
fn double_tagged_afpacket() {
    double_tagged(PortKind::Afpacket);
}

#[test]
fn double_tagged_tap() {
    double_tagged(PortKind::Tap);
}

// ---------------------------------------------------------------------------
// 5. VLANs a port does not carry
// ---------------------------------------------------------------------------

fn not_carried(kind: PortKind) {
    let topo = Topo::new(kind);
    let lab = &topo.lab;
    let others: Vec<&str> = ALL.iter().copied().filter(|n| *n != "t").collect();

    // VLAN 30 (not on any port) and the reserved VID 4095 from the trunk.
    let before = topo.drops("t", "vlan_filtered");
    let cap = topo.capture(&others, V_MAC);
    topo.send("t", V_MAC, &["30"], 5);
    topo.send("t", V_MAC, &["4095"], 5);
    let got = cap.collect();
    assert_none(lab, &got, &others, "VLAN 30 / VID 4095 from trunk");
    let after = topo.drops("t", "vlan_filtered");
    assert!(
        after >= before + 2,
        "vlan_filtered on the trunk: {before} -> {after}{}",
        diag(lab)
    );
    assert!(fdb_of(lab, V_MAC).is_empty(), "{}", diag(lab));

    // Untagged into a trunk without a native VLAN (t2).
    let before = topo.drops("t2", "vlan_filtered");
    let rest: Vec<&str> = ALL.iter().copied().filter(|n| *n != "t2").collect();
    let cap = topo.capture(&rest, U_MAC);
    topo.send("t2", U_MAC, &[], 5);
    let got = cap.collect();
    assert_none(lab, &got, &rest, "untagged into trunk without native VLAN");
    let after = topo.drops("t2", "vlan_filtered");
    assert!(
        after > before,
        "vlan_filtered on t2: {before} -> {after}{}",
        diag(lab)
    );

    // Tagged frames into an access port, in band (TAP h1) and out of band
    // (AF_PACKET h2): dropped, whether the tag is the port's own VLAN or not.
    for from in ["h1", "h2"] {
        let rest: Vec<&str> = ALL.iter().copied().filter(|n| *n != from).collect();
        let before = topo.drops(from, "vlan_filtered");
        let cap = topo.capture(&rest, I_MAC);
        topo.send(from, I_MAC, &["10"], 5);
        topo.send(from, I_MAC, &["20"], 5);
        let got = cap.collect();
        assert_none(lab, &got, &rest, &format!("tagged into access port {from}"));
        let after = topo.drops(from, "vlan_filtered");
        assert!(
            after > before,
            "vlan_filtered on {from}: {before} -> {after}{}",
            diag(lab)
        );
    }
    assert!(fdb_of(lab, I_MAC).is_empty(), "{}", diag(lab));
}

#[test]
fn not_carried_afpacket() {
    not_carried(PortKind::Afpacket);
}

#[test]
fn not_carried_tap() {
    not_carried(PortKind::Tap);
}

// ---------------------------------------------------------------------------
// 6. Port isolation
// ---------------------------------------------------------------------------

#[test]
fn isolated_ports() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let up = lab.tap_host("br0", 1);
    let i1 = lab.afpacket_host("br0", 2);
    let i2 = lab.tap_host("br0", 3);
    lab.ctl_ok(&["set-port", &i1.port, "--isolated", "on"]);
    lab.ctl_ok(&["set-port", &i2.port, "--isolated", "on"]);
    assert_eq!(lab.port_info("br0", &i1.port)["isolated"], true);
    assert_eq!(lab.port_info("br0", &i2.port)["isolated"], true);
    assert_eq!(lab.port_info("br0", &up.port)["isolated"], false);

    lab.assert_all_ping(&[&i1, &up]);
    lab.assert_all_ping(&[&i2, &up]);
    assert!(
        !lab.ping_once(&i1, &i2.ip),
        "isolated i1 reached i2{}",
        diag(&lab)
    );
    assert!(
        !lab.ping_once(&i2, &i1.ip),
        "isolated i2 reached i1{}",
        diag(&lab)
    );

    // i1's broadcasts reach the uplink, never i2.
    let mut cap = Capture::new(&lab);
    cap.sniff(&lab, "up", &up.ns, "eth0", Some(&i1.mac));
    cap.sniff(&lab, "i2", &i2.ns, "eth0", Some(&i1.mac));
    chatter(&lab, &i1, &up.ip);
    let got = cap.collect();
    assert!(
        got["up"].iter().any(|f| f.dst == BCAST),
        "uplink saw no broadcast from i1: {:?}{}",
        got["up"],
        diag(&lab)
    );
    assert_none(&lab, &got, &["i2"], "traffic from isolated i1");

    // Known unicast to the other isolated port is dropped as `isolated`.
    assert!(
        lab.fdb_entry("br0", &i2.mac).is_some(),
        "i2 not learned{}",
        diag(&lab)
    );
    let before = lab.drops(&i1.port, "isolated");
    let mut cap = Capture::new(&lab);
    cap.sniff(&lab, "i2", &i2.ns, "eth0", Some(I_MAC));
    let sent = send(&lab, &i1.ns, "eth0", I_MAC, &i2.mac, &[], 5);
    assert_eq!(sent, 5);
    let got = cap.collect();
    assert_none(&lab, &got, &["i2"], "unicast from i1 to i2");
    let after = lab.drops(&i1.port, "isolated");
    assert!(
        after > before,
        "drops.isolated on {}: {before} -> {after}{}",
        i1.port,
        diag(&lab)
    );

    // Turning isolation off on one side restores i1 <-> i2.
    lab.ctl_ok(&["set-port", &i2.port, "--isolated", "off"]);
    assert_eq!(lab.port_info("br0", &i2.port)["isolated"], false);
    lab.assert_all_ping(&[&i1, &i2, &up]);
}

// ---------------------------------------------------------------------------
// CLI validation, flush on VLAN change, learning off
// ---------------------------------------------------------------------------

#[test]
fn vlan_config_and_fdb() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.afpacket_host("br0", 2);
    lab.ctl_ok(&["set-port", "p1", "--access", "10"]);
    lab.ctl_ok(&["set-port", "p2", "--access", "10"]);
    lab.assert_all_ping(&[&h1, &h2]);
    assert_eq!(
        fdb_of(&lab, &h1.mac),
        [(10, "p1".to_string())],
        "{}",
        diag(&lab)
    );

    // Bad VLAN ids are CLI errors and change nothing.
    for args in [
        &["set-port", "p1", "--access", "0"][..],
        &["set-port", "p1", "--access", "4095"],
        &["set-port", "p1", "--access", "abc"],
        &["set-port", "p1", "--access", "-1"],
        &["set-port", "p1", "--trunk", "10,4095"],
        &["set-port", "p1", "--trunk", "0,10"],
        &["set-port", "p1", "--trunk", "20-10"],
        &["set-port", "p1", "--trunk", "10,x"],
        &["set-port", "p1", "--trunk", "10", "--native", "4095"],
        &["set-port", "p1", "--access", "10", "--trunk", "20"],
        &["set-port", "p1", "--native", "10"],
        &["set-port", "p1", "--isolated", "maybe"],
        &["set-port", "nosuchport", "--access", "10"],
        &["fdb-add", "br0", "02:00:00:00:77:01", "p1", "--vlan", "0"],
        &[
            "fdb-add",
            "br0",
            "02:00:00:00:77:01",
            "p1",
            "--vlan",
            "4095",
        ],
    ] {
        lab.ctl_err(args);
    }
    let p1 = lab.port_info("br0", "p1");
    assert_eq!(
        (p1["vlan_mode"].clone(), p1["access_vlan"].clone()),
        ("access".into(), 10.into()),
        "{p1}"
    );

    // A range expands.
    lab.ctl_ok(&["set-port", "p2", "--trunk", "10,20,100-103"]);
    let p2 = lab.port_info("br0", "p2");
    assert_eq!(
        vlan_list(&p2["trunk_vlans"]),
        [10, 20, 100, 101, 102, 103],
        "{p2}"
    );
    assert_eq!(p2["access_vlan"], Value::Null, "{p2}");
    lab.ctl_ok(&["set-port", "p2", "--access", "10"]);

    // A static entry needs a VLAN the port carries.
    lab.ctl_err(&["fdb-add", "br0", "02:00:00:00:77:02", "p1", "--vlan", "30"]);
    // Changing a port's VLANs flushes what it learned; statics in VLANs it
    // still carries stay, those it no longer carries go (with a note: a
    // saved configuration must start again).
    lab.ctl_ok(&["fdb-add", "br0", "02:00:00:00:77:02", "p1", "--vlan", "10"]);
    lab.ctl_ok(&["set-port", "p1", "--trunk", "10,20", "--native", "10"]);
    assert!(
        fdb_of(&lab, &h1.mac).is_empty(),
        "h1's learned entry survived a VLAN change{}",
        diag(&lab)
    );
    assert_eq!(
        fdb_of(&lab, "02:00:00:00:77:02"),
        [(10, "p1".to_string())],
        "{}",
        diag(&lab)
    );
    let e = lab
        .fdb_entry("br0", "02:00:00:00:77:02")
        .expect("static entry");
    assert_eq!(e["type"], "static", "{e}");
    let o = lab.ctl(&["set-port", "p1", "--access", "20"]);
    assert!(o.status.success());
    let note = String::from_utf8_lossy(&o.stderr);
    assert!(
        note.contains("02:00:00:00:77:02") && note.contains("VLAN 10"),
        "{note}"
    );
    assert!(
        fdb_of(&lab, "02:00:00:00:77:02").is_empty(),
        "{}",
        diag(&lab)
    );
    assert!(
        !lab.ping_once(&h1, &h2.ip),
        "h1 (now VLAN 20) reached h2 (VLAN 10)"
    );
    lab.ctl_ok(&["set-port", "p1", "--access", "10"]);
    lab.assert_all_ping(&[&h1, &h2]);

    // Learning off: traffic still flows (flooded), the MAC is not learned.
    lab.ctl_ok(&["fdb-flush", "br0"]);
    lab.ctl_ok(&["set-port", "p1", "--learning", "off"]);
    assert_eq!(lab.port_info("br0", "p1")["learning"], false);
    lab.assert_all_ping(&[&h1, &h2]);
    assert!(
        fdb_of(&lab, &h1.mac).is_empty(),
        "learned with learning off{}",
        diag(&lab)
    );
    assert_eq!(
        fdb_of(&lab, &h2.mac),
        [(10, "p2".to_string())],
        "{}",
        diag(&lab)
    );
    lab.ctl_ok(&["set-port", "p1", "--learning", "on"]);
    lab.assert_all_ping(&[&h1, &h2]);
    assert!(
        wait_until(Duration::from_secs(5), || fdb_of(&lab, &h1.mac)
            == [(10, "p1".to_string())]),
        "not learned after learning on{}",
        diag(&lab)
    );
}

// ---------------------------------------------------------------------------
// 7. Open vSwitch as an independent peer
// ---------------------------------------------------------------------------

#[test]
fn ovs_peer_trunk() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h3 = lab.afpacket_host("br0", 3);
    let h5 = lab.tap_host("br0", 5);
    lab.ctl_ok(&["set-port", &h1.port, "--access", "10"]);
    lab.ctl_ok(&["set-port", &h3.port, "--access", "20"]);

    let ons = lab.add_netns("ovs");
    let ovs = match Ovs::start(&ons, lab.path("ovs")) {
        Ok(o) => o,
        Err(why) => {
            println!("SKIPPED: Open vSwitch could not be started: {why}");
            return;
        }
    };
    // The link between the two switches.
    let sw = lab.sw.clone();
    veth(&sw, "up0", &ons, "o0");
    lab.ctl_ok(&[
        "add-port", "br0", "up", "--type", "afpacket", "--ifname", "up0",
    ]);
    lab.ctl_ok(&["set-port", "up", "--trunk", "10,20", "--native", "1"]);
    ovs.vsctl_ok(&[
        "add-port",
        "obr",
        "o0",
        "--",
        "set",
        "port",
        "o0",
        "vlan_mode=native-untagged",
        "tag=1",
        "trunks=10,20",
    ]);
    // Hosts behind OVS: oa in VLAN 10, ob in VLAN 20, oc in VLAN 1.
    let mut ohosts = Vec::new();
    for (short, port, tag, i) in [
        ("oa", "o1", "10", 11),
        ("ob", "o2", "20", 13),
        ("oc", "o3", "1", 15),
    ] {
        let ns = lab.add_netns(short);
        veth(&ons, port, &ns, "eth0");
        let ip = lab.ip(i);
        add_addr(&ns, "eth0", &format!("{ip}/24"));
        ovs.vsctl_ok(&["add-port", "obr", port, &format!("tag={tag}")]);
        let mac = lab.mac_of(&ns, "eth0");
        ohosts.push(Host {
            ns,
            port: port.to_string(),
            ifname: "eth0".into(),
            ip,
            mac,
        });
    }
    let (oa, ob, oc) = (&ohosts[0], &ohosts[1], &ohosts[2]);
    let odiag = |lab: &Lab| {
        format!(
            "{}\n--- ovs fdb ---\n{}\n{}",
            diag(lab),
            ovs.appctl(&["fdb/show", "obr"]),
            ovs.logs()
        )
    };

    // Each VLAN reaches exactly its hosts across both switches.
    for (a, b) in [(&h1, oa), (&h3, ob), (&h5, oc)] {
        assert!(
            lab.ping(a, &b.ip) && lab.ping(b, &a.ip),
            "{} and {} (same VLAN, across vswitch and OVS) cannot ping{}",
            a.ns,
            b.ns,
            odiag(&lab)
        );
    }
    for (a, b) in [
        (&h1, ob),
        (&h1, oc),
        (&h3, oa),
        (&h5, oa),
        (oa, &h3),
        (oc, &h1),
        (ob, &h5),
    ] {
        assert!(
            !lab.ping_once(a, &b.ip),
            "{} reached {} across VLANs{}",
            a.ns,
            b.ns,
            odiag(&lab)
        );
    }

    // On the inter-switch link VLAN 10 travels tagged 10, VLAN 1 untagged;
    // h1's broadcasts reach oa only.
    let mut cap = Capture::new(&lab);
    cap.sniff(&lab, "link", &ons, "o0", Some(&h1.mac));
    cap.sniff(&lab, "oa", &oa.ns, "eth0", Some(&h1.mac));
    cap.sniff(&lab, "ob", &ob.ns, "eth0", Some(&h1.mac));
    cap.sniff(&lab, "oc", &oc.ns, "eth0", Some(&h1.mac));
    chatter(&lab, &h1, &oa.ip);
    let got = cap.collect();
    assert!(
        !got["link"].is_empty() && got["link"].iter().all(|f| f.vids() == [10]),
        "h1's frames on the trunk must be tagged 10: {:?}",
        got["link"]
    );
    assert!(
        got["oa"]
            .iter()
            .any(|f| f.dst == BCAST && f.tags.is_empty()),
        "oa saw no untagged broadcast from h1: {:?}{}",
        got["oa"],
        odiag(&lab)
    );
    assert_none(&lab, &got, &["ob", "oc"], "h1 (VLAN 10) via OVS");

    let mut cap = Capture::new(&lab);
    cap.sniff(&lab, "link", &ons, "o0", Some(&h5.mac));
    cap.sniff(&lab, "oa", &oa.ns, "eth0", Some(&h5.mac));
    chatter(&lab, &h5, &oc.ip);
    let got = cap.collect();
    assert!(
        !got["link"].is_empty() && got["link"].iter().all(|f| f.tags.is_empty()),
        "native VLAN 1 must be untagged on the trunk: {:?}",
        got["link"]
    );
    assert_none(&lab, &got, &["oa"], "h5 (VLAN 1) via OVS");

    // Both switches learned the far hosts in the right VLAN.
    assert_eq!(
        fdb_of(&lab, &oa.mac),
        [(10, "up".to_string())],
        "{}",
        odiag(&lab)
    );
    assert_eq!(
        fdb_of(&lab, &ob.mac),
        [(20, "up".to_string())],
        "{}",
        odiag(&lab)
    );
    assert_eq!(
        fdb_of(&lab, &oc.mac),
        [(1, "up".to_string())],
        "{}",
        odiag(&lab)
    );
    let ofdb = ovs.appctl(&["fdb/show", "obr"]);
    for (h, vlan) in [(&h1, "10"), (&h3, "20"), (&h5, "1")] {
        let line = ofdb
            .lines()
            .find(|l| l.to_lowercase().contains(&h.mac))
            .unwrap_or_else(|| panic!("OVS did not learn {} ({}): {ofdb}", h.ns, h.mac));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.get(1).copied(), Some(vlan), "OVS fdb line {line:?}");
    }
    drop(ovs);
}

// ---------------------------------------------------------------------------
// 8. Linux 802.1Q subinterfaces on the trunk host
// ---------------------------------------------------------------------------

#[test]
fn trunk_subinterfaces() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h3 = lab.tap_host("br0", 3);
    let mut t = lab.afpacket_host("br0", 6);
    lab.ctl_ok(&["set-port", &h1.port, "--access", "10"]);
    lab.ctl_ok(&["set-port", &h3.port, "--access", "20"]);
    lab.ctl_ok(&["set-port", &t.port, "--trunk", "10,20", "--native", "1"]);

    let o = lab.ns_exec(
        &t.ns,
        &[
            "ip", "link", "add", "link", "eth0", "name", "eth0.10", "type", "vlan", "id", "10",
        ],
    );
    if !o.status.success() {
        println!(
            "SKIPPED: kernel has no 8021q (ip link add ... type vlan: {})",
            String::from_utf8_lossy(&o.stderr).trim()
        );
        return;
    }
    lab.ns_ok(&t.ns, &["ip", "addr", "flush", "dev", "eth0"]);
    for (sub, vid, peer, stranger) in [("eth0.10", 10, &h1, &h3), ("eth0.20", 20, &h3, &h1)] {
        if vid == 20 {
            lab.ns_ok(&t.ns, &["ip", "link", "del", "eth0.10"]);
            lab.ns_ok(
                &t.ns,
                &[
                    "ip", "link", "add", "link", "eth0", "name", sub, "type", "vlan", "id", "20",
                ],
            );
        }
        t.ip = lab.ip(60);
        t.ifname = sub.to_string();
        add_addr(&t.ns, sub, &format!("{}/24", t.ip));
        assert!(
            lab.ping(&t, &peer.ip),
            "{sub} cannot reach {}{}",
            peer.ns,
            diag(&lab)
        );
        assert!(
            !lab.ping_once(&t, &stranger.ip),
            "{sub} reached {}",
            stranger.ns
        );
        let mac = lab.mac_of(&t.ns, sub);
        assert!(
            fdb_of(&lab, &mac).contains(&(vid, t.port.clone())),
            "{sub}'s MAC not learned in VLAN {vid}{}",
            diag(&lab)
        );
    }
}
