//! L2 forwarding over AF_PACKET ports (veth ends in the switch namespace),
//! mixed with TAP ports, and what happens when a port's interface vanishes;
//! TCP super-frames through the receive ring's copy path and the recvmmsg
//! path it falls back to.

mod common;

use common::*;
use std::time::Duration;

/// Three hosts behind veth pairs attached as `--type afpacket`: every pair
/// pings and TCP crosses the switch.
#[test]
fn afpacket_hosts_ping_and_tcp() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.afpacket_host("br0", 1);
    let h2 = lab.afpacket_host("br0", 2);
    let h3 = lab.afpacket_host("br0", 3);

    // The daemon brings the switch-side veth ends up.
    for i in 1..=3 {
        let out = run_ok(
            "ip",
            &["-n", &lab.sw, "link", "show", "dev", &format!("s{i}")],
        );
        assert!(
            out.contains(",UP") || out.contains("<UP"),
            "s{i} not up: {out}"
        );
    }
    let p = lab.port_info("br0", "p1");
    assert_eq!(p["type"], "afpacket", "{p}");
    assert_eq!(p["ifname"], "s1", "{p}");
    assert_eq!(p["up"], true, "{p}");

    lab.assert_all_ping(&[&h1, &h2, &h3]);
    lab.iperf_tcp(&h1, &h2);
}

/// One bridge with TAP and AF_PACKET hosts: all reach each other, and TCP
/// works in both directions across the two port kinds (offload metadata has
/// to survive the crossing).
#[test]
fn mixed_tap_and_afpacket() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let t1 = lab.tap_host("br0", 1);
    let t2 = lab.tap_host("br0", 2);
    let a3 = lab.afpacket_host("br0", 3);
    let a4 = lab.afpacket_host("br0", 4);
    lab.assert_all_ping(&[&t1, &t2, &a3, &a4]);
    lab.iperf_tcp(&t1, &a3);
    lab.iperf_tcp(&a4, &t2);
}

/// Deleting an attached veth: the port shows `up: false`, `port_down` is
/// counted once, and the other hosts keep forwarding.
#[test]
fn afpacket_port_down() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.afpacket_host("br0", 1);
    let h2 = lab.afpacket_host("br0", 2);
    let h3 = lab.afpacket_host("br0", 3);
    lab.assert_all_ping(&[&h1, &h2, &h3]);
    assert_eq!(lab.drops("p3", "port_down"), 0);

    run_ok("ip", &["-n", &h3.ns, "link", "del", "eth0"]);
    assert!(
        wait_until(Duration::from_secs(5), || lab.port_info("br0", "p3")["up"]
            == false),
        "port p3 still up after its veth was deleted: {}",
        lab.port_info("br0", "p3")
    );
    assert!(
        wait_until(Duration::from_secs(3), || lab.drops("p3", "port_down") == 1),
        "port_down of p3 is not 1: {}",
        lab.port_stats("p3")
    );
    for p in ["p1", "p2"] {
        assert_eq!(lab.port_info("br0", p)["up"], true, "{p} went down too");
    }
    lab.assert_all_ping(&[&h1, &h2]);
    // Flooding (broadcast ARP after a flush) must not trip over the dead port.
    lab.ctl_ok(&["fdb-flush", "br0"]);
    lab.ns_ok(&h1.ns, &["ip", "neigh", "flush", "dev", "eth0"]);
    lab.assert_all_ping(&[&h1, &h2]);
    // Counted once, not per frame that would have gone there.
    assert_eq!(lab.drops("p3", "port_down"), 1, "{}", lab.port_stats("p3"));
}

/// A bulk TCP transfer between two AF_PACKET hosts crosses the switch as
/// 64 KiB GSO super-frames: veth hands them whole to the port, too big for
/// a 2 KiB ring slot, so they take the TP_STATUS_COPY path (read with
/// recvmsg, in order). Every byte arrives; the ingress port saw frames far
/// bigger than a slot and none malformed. Then the same through the
/// recvmmsg path (`VSWITCH_AFPACKET_RING=0`).
#[test]
fn afpacket_gso_tcp_through_ring_and_recvmmsg() {
    const BYTES: u64 = 64 << 20;
    for ring in [true, false] {
        let mut lab = Lab::new();
        let env: &[(&str, &str)] = if ring {
            &[]
        } else {
            &[("VSWITCH_AFPACKET_RING", "0")]
        };
        lab.start_daemon_env(&[], env);
        lab.add_br("br0", &[]);
        let h1 = lab.afpacket_host("br0", 1);
        let h2 = lab.afpacket_host("br0", 2);
        let log = lab.daemon_log();
        let rings = log
            .matches("AF_PACKET port receives through a TPACKET_V2 ring")
            .count();
        assert_eq!(rings, if ring { 2 } else { 0 }, "ring={ring}\n{log}");
        lab.assert_all_ping(&[&h1, &h2]);

        let (sent, received) = lab.bulk_tcp(&h1, &h2, BYTES);
        assert_eq!(sent.0, BYTES, "ring={ring}");
        assert_eq!(received, sent, "ring={ring}: bytes and digest");

        let p1 = lab.port_stats("p1");
        let (pkts, bytes) = (
            p1["rx_packets"].as_u64().unwrap(),
            p1["rx_bytes"].as_u64().unwrap(),
        );
        assert!(pkts > 0 && bytes >= BYTES, "ring={ring}: {p1}");
        // 64 MiB in frames of 1514 bytes would be ~44 k frames; super-frames
        // make it a few thousand at most, averaging well above a slot.
        assert!(
            bytes / pkts > 4096,
            "ring={ring}: {pkts} frames for {bytes} bytes: no super-frames? {p1}"
        );
        assert_eq!(p1["drops"]["malformed"], 0, "ring={ring}: {p1}");
        eprintln!(
            "ring={ring}: p1 received {pkts} frames, {bytes} bytes ({} per frame)",
            bytes / pkts
        );
    }
}

/// An attached interface that goes away and comes back under the same name
/// (a VM's TAP that QEMU makes again, a veth re-created): the port comes
/// back up by itself within a few seconds and forwards again, keeping its
/// settings (its VLAN here).
#[test]
fn afpacket_port_comes_back_with_its_interface() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.afpacket_host("br0", 1);
    let h2 = lab.afpacket_host("br0", 2);
    lab.ctl_ok(&["set-port", "p1", "--access", "7"]);
    lab.ctl_ok(&["set-port", "p2", "--access", "7"]);
    lab.assert_all_ping(&[&h1, &h2]);
    run_ok("ip", &["-n", &h2.ns, "link", "del", "eth0"]);
    assert!(
        wait_until(Duration::from_secs(5), || lab.port_info("br0", "p2")["up"]
            == false),
        "p2 still up"
    );
    // The same interface name again, a new device behind it.
    run_ok(
        "ip",
        &[
            "-n", &lab.sw, "link", "add", "s2", "type", "veth", "peer", "name", "eth0", "netns",
            &h2.ns,
        ],
    );
    lab.ns_ok(
        &h2.ns,
        &["ip", "addr", "add", &format!("{}/24", h2.ip), "dev", "eth0"],
    );
    lab.ns_ok(&h2.ns, &["ip", "link", "set", "eth0", "up"]);
    assert!(
        wait_until(Duration::from_secs(5), || lab.port_info("br0", "p2")["up"]
            == true),
        "p2 did not come back: {}",
        lab.port_info("br0", "p2")
    );
    assert_eq!(lab.port_info("br0", "p2")["access_vlan"], 7);
    let h2 = Host {
        mac: lab.mac_of(&h2.ns, "eth0"),
        ..h2
    };
    lab.ns_ok(&h1.ns, &["ip", "neigh", "flush", "dev", "eth0"]);
    lab.assert_all_ping(&[&h1, &h2]);
    assert!(lab.iperf_tcp(&h1, &h2) > 1_000_000);
    // Deleted again: down again, counted again.
    run_ok("ip", &["-n", &h2.ns, "link", "del", "eth0"]);
    assert!(
        wait_until(Duration::from_secs(5), || lab.port_info("br0", "p2")["up"]
            == false),
        "p2 still up after the second delete"
    );
}
