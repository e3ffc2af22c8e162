//! 802.1Q VLANs on bridge ports: access isolation, trunks interoperating
//! with Linux 802.1Q subinterfaces, the per-VLAN FDB.

mod common;

use common::*;
use serde_json::Value;

/// Source MACs of crafted frames: from the trunk host, from an access
/// host, and for frames that must be filtered.
const T_MAC: &str = "02:00:00:00:74:01";
const A_MAC: &str = "02:00:00:00:74:02";
const X_MAC: &str = "02:00:00:00:74:03";
const BCAST: &str = "ff:ff:ff:ff:ff:ff";

/// Access ports in different VLANs cannot talk; in the same VLAN they can.
#[test]
fn access_vlans_isolate() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.afpacket_host("br0", 2);
    let h3 = lab.tap_host("br0", 3);
    lab.ctl_ok(&["set-port", "p1", "--access", "10"]);
    lab.ctl_ok(&["set-port", "p2", "--access", "10"]);
    lab.ctl_ok(&["set-port", "p3", "--access", "20"]);
    let p1 = lab.port_info("br0", "p1");
    assert_eq!(p1["vlan_mode"], "access", "{p1}");
    assert_eq!(p1["access_vlan"], 10, "{p1}");

    lab.assert_all_ping(&[&h1, &h2]);
    // Same subnet, different VLAN: h3 must be unreachable.
    assert!(
        !lab.ping_once(&h1, &h3.ip),
        "h1 (VLAN 10) reached h3 (VLAN 20)"
    );
    assert!(
        !lab.ping_once(&h3, &h2.ip),
        "h3 (VLAN 20) reached h2 (VLAN 10)"
    );

    let e = lab.fdb_entry("br0", &h1.mac).expect("h1 learned");
    assert_eq!(e["vlan"], 10, "{e}");
    assert!(
        lab.fdb("br0").iter().all(|e| e["vlan"] != 1),
        "an entry in VLAN 1 although no port carries it: {:?}",
        lab.fdb("br0")
    );

    // Moving h3 into VLAN 10 joins it.
    lab.ctl_ok(&["set-port", "p3", "--access", "10"]);
    lab.assert_all_ping(&[&h1, &h2, &h3]);

    lab.ctl_err(&["set-port", "p1", "--access", "4095"]);
    lab.ctl_err(&["set-port", "p1", "--access", "0"]);
    lab.ctl_err(&["set-port", "nosuchport", "--access", "10"]);
}

/// A trunk port carrying VLANs 10 and 20 (tagged frames crafted and sniffed
/// with raw sockets: this kernel has no 802.1Q subinterfaces). Tagged
/// frames from the trunk reach only the access port of their VLAN, untagged;
/// frames from an access port leave the trunk tagged with the port's VLAN; a
/// VLAN the trunk does not carry goes nowhere; the FDB is per VLAN.
fn trunk_tags(kind: PortKind) {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let a10 = lab.tap_host("br0", 1);
    let a20 = lab.afpacket_host("br0", 2);
    let t = lab.host("br0", 4, kind);
    lab.ctl_ok(&["set-port", "p1", "--access", "10"]);
    lab.ctl_ok(&["set-port", "p2", "--access", "20"]);
    lab.ctl_ok(&["set-port", &t.port, "--trunk", "10,20"]);
    let pt = lab.port_info("br0", &t.port);
    assert_eq!(pt["vlan_mode"], "trunk", "{pt}");
    let mut vids: Vec<u64> = pt["trunk_vlans"]
        .as_array()
        .expect("trunk_vlans array")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    vids.sort();
    assert_eq!(vids, [10, 20], "{pt}");
    assert_eq!(pt["native_vlan"], Value::Null, "{pt}");

    // Trunk -> access: VLAN 10 tagged in, untagged out at a10 only.
    let at10 = lab.sniffer(
        &a10,
        "2",
        &["--src", T_MAC, "--ethertype", "0x88b5", "--untagged"],
    );
    let at20 = lab.sniffer(&a20, "2", &["--src", T_MAC]);
    let sent = lab.send_frames(
        &t,
        &[
            "--count",
            "10",
            "--src",
            T_MAC,
            "--dst",
            BCAST,
            "--vlan",
            "10",
            "--interval",
            "0.01",
        ],
    );
    assert_eq!(sent, 10);
    let seen10 = lab.sniffed(at10);
    assert!(
        seen10 >= 8,
        "a10 got {seen10} of 10 VLAN 10 frames untagged"
    );
    assert_eq!(
        lab.sniffed(at20),
        0,
        "VLAN 10 frames reached the VLAN 20 access port"
    );
    let e = lab.fdb_entry("br0", T_MAC).expect("trunk source learned");
    assert_eq!(e["vlan"], 10, "{e}");
    assert_eq!(e["port"], t.port.as_str(), "{e}");

    // Access -> trunk: untagged in at a20, tagged VLAN 20 out of the trunk.
    let tagged = lab.sniffer(
        &t,
        "2",
        &["--src", A_MAC, "--ethertype", "0x88b5", "--vlan", "20"],
    );
    let at10 = lab.sniffer(&a10, "2", &["--src", A_MAC]);
    lab.send_frames(
        &a20,
        &[
            "--count",
            "10",
            "--src",
            A_MAC,
            "--dst",
            BCAST,
            "--interval",
            "0.01",
        ],
    );
    let seen = lab.sniffed(tagged);
    assert!(seen >= 8, "trunk got {seen} of 10 frames tagged VLAN 20");
    assert_eq!(
        lab.sniffed(at10),
        0,
        "VLAN 20 frames reached the VLAN 10 access port"
    );

    // The same MAC in two VLANs is two entries.
    lab.send_frames(&t, &["--count", "3", "--src", T_MAC, "--vlan", "20"]);
    assert!(
        wait_until(std::time::Duration::from_secs(3), || {
            let mut v: Vec<u64> = lab
                .fdb("br0")
                .iter()
                .filter(|e| e["mac"].as_str().map(str::to_lowercase).as_deref() == Some(T_MAC))
                .filter_map(|e| e["vlan"].as_u64())
                .collect();
            v.sort();
            v == [10, 20]
        }),
        "trunk source not learned per VLAN: {:?}",
        lab.fdb("br0")
    );

    // A VLAN the trunk does not carry (30) and untagged frames (no native
    // VLAN) are dropped on ingress.
    let at10 = lab.sniffer(&a10, "2", &["--src", X_MAC]);
    let at20 = lab.sniffer(&a20, "2", &["--src", X_MAC]);
    lab.send_frames(&t, &["--count", "5", "--src", X_MAC, "--vlan", "30"]);
    lab.send_frames(&t, &["--count", "5", "--src", X_MAC]);
    assert_eq!(
        lab.sniffed(at10),
        0,
        "VLAN 30 / untagged trunk frames leaked to VLAN 10"
    );
    assert_eq!(
        lab.sniffed(at20),
        0,
        "VLAN 30 / untagged trunk frames leaked to VLAN 20"
    );
    assert!(
        lab.fdb_entry("br0", X_MAC).is_none(),
        "a filtered frame's source was learned"
    );

    // The access hosts (same subnet, different VLANs) stay apart.
    assert!(
        !lab.ping_once(&a10, &a20.ip),
        "VLAN 10 host reached VLAN 20 host"
    );
}

#[test]
fn trunk_tags_tap() {
    trunk_tags(PortKind::Tap);
}

#[test]
fn trunk_tags_afpacket() {
    trunk_tags(PortKind::Afpacket);
}

/// A trunk's native VLAN travels untagged.
#[test]
fn trunk_native_vlan_untagged() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let a10 = lab.tap_host("br0", 1);
    let t = lab.afpacket_host("br0", 2);
    lab.ctl_ok(&["set-port", "p1", "--access", "10"]);
    lab.ctl_ok(&["set-port", "p2", "--trunk", "10,20", "--native", "10"]);
    let pt = lab.port_info("br0", "p2");
    assert_eq!(pt["native_vlan"], 10, "{pt}");
    // The trunk host's plain eth0 is in VLAN 10.
    lab.assert_all_ping(&[&a10, &t]);
    let e = lab.fdb_entry("br0", &t.mac).expect("trunk host learned");
    assert_eq!(e["vlan"], 10, "{e}");
}
