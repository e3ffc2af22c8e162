//! L2 forwarding between hosts on TAP ports, and the TAP device life cycle.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

/// Three hosts on daemon-created TAPs (`--netns hN --ifname eth0`): every
/// pair pings, TCP (iperf3) crosses the switch, counters move.
#[test]
fn tap_hosts_ping_and_tcp() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    let h3 = lab.tap_host("br0", 3);

    // The TAP shows up in the host namespace, named and up as asked.
    for h in [&h1, &h2, &h3] {
        let out = run_ok("ip", &["-j", "-n", &h.ns, "link", "show", "dev", "eth0"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        let flags = v[0]["flags"].to_string();
        assert!(flags.contains("\"UP\""), "eth0 in {} not up: {out}", h.ns);
    }

    lab.assert_all_ping(&[&h1, &h2, &h3]);
    lab.iperf_tcp(&h1, &h2);

    for h in [&h1, &h2] {
        let s = lab.port_stats(&h.port);
        assert!(s["rx_packets"].as_u64().unwrap() > 0, "{s}");
        assert!(s["tx_packets"].as_u64().unwrap() > 0, "{s}");
        assert!(s["rx_bytes"].as_u64().unwrap() > 0, "{s}");
        assert!(s["tx_bytes"].as_u64().unwrap() > 0, "{s}");
    }
}

/// `stats --json` has every field and every drop reason (zeros included);
/// `stats PORT` narrows to that port.
#[test]
fn tap_stats_fields() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    lab.assert_all_ping(&[&h1, &h2]);

    let all = lab.ctl_json(&["stats"]);
    let all = all.as_array().expect("stats --json is an array");
    assert_eq!(all.len(), 2, "{all:?}");
    for s in all {
        for k in ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"] {
            assert!(s[k].is_u64(), "stats entry lacks {k}: {s}");
        }
        let drops = s["drops"].as_object().expect("drops object");
        for r in DROP_REASONS {
            assert!(
                drops.get(*r).is_some_and(Value::is_u64),
                "drops lack {r}: {s}"
            );
        }
    }
    let one = lab.ctl_json(&["stats", "p1"]);
    let one = one.as_array().expect("stats p1 --json is an array");
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0]["port"], "p1");
    assert!(one[0]["rx_packets"].as_u64().unwrap() > 0);
    lab.ctl_err(&["stats", "nosuchport"]);
}

/// `--mac` and `--mtu` set the host-side interface of a TAP port.
#[test]
fn tap_mac_and_mtu() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let ns = lab.add_netns("h1");
    lab.ctl_ok(&[
        "add-port",
        "br0",
        "p1",
        "--type",
        "tap",
        "--netns",
        &ns,
        "--ifname",
        "eth0",
        "--mac",
        "02:00:00:12:34:56",
        "--mtu",
        "1400",
    ]);
    let out = run_ok("ip", &["-j", "-n", &ns, "link", "show", "dev", "eth0"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["address"], "02:00:00:12:34:56", "{out}");
    assert_eq!(v[0]["mtu"], 1400, "{out}");
    let p = lab.port_info("br0", "p1");
    assert_eq!(p["mtu"], 1400, "{p}");
}

/// A persistent TAP made by someone else (`ip tuntap add`) is attached,
/// and left in place by `del-port` and by daemon shutdown.
#[test]
fn persistent_tap_is_left_alone() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let sw = lab.sw.clone();
    lab.persistent_tap("tapvm1");

    lab.ctl_ok(&["add-port", "br0", "tapvm1", "--type", "tap"]);
    let p = lab.port_info("br0", "tapvm1");
    assert_eq!(p["type"], "tap", "{p}");
    lab.ctl_ok(&["del-port", "tapvm1"]);
    assert!(
        lab.link_exists(&sw, "tapvm1"),
        "del-port deleted a persistent TAP the daemon did not create"
    );

    lab.ctl_ok(&["add-port", "br0", "tapvm1", "--type", "tap"]);
    let st = lab.stop_daemon();
    assert!(st.success(), "vswitchd exit status {st}");
    assert!(
        lab.link_exists(&sw, "tapvm1"),
        "daemon shutdown deleted a persistent TAP it did not create"
    );
    // The device is still usable by its owner: attach again after a restart.
    lab.start_daemon(&[]);
    lab.add_br("br0", &[]);
    lab.ctl_ok(&["add-port", "br0", "tapvm1", "--type", "tap"]);
    assert_eq!(lab.port_info("br0", "tapvm1")["name"], "tapvm1");
}

/// A TAP the daemon created goes away with `del-port`, both in the daemon's
/// namespace and when it was moved into a host namespace.
#[test]
fn created_tap_removed_on_del_port() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let sw = lab.sw.clone();

    lab.ctl_ok(&["add-port", "br0", "ct1", "--type", "tap"]);
    assert!(
        lab.link_exists(&sw, "ct1"),
        "created TAP ct1 not in the daemon's namespace"
    );
    lab.ctl_ok(&["del-port", "ct1"]);
    assert!(
        wait_until(Duration::from_secs(3), || !lab.link_exists(&sw, "ct1")),
        "del-port left the created TAP ct1 behind"
    );

    let h1 = lab.tap_host("br0", 1);
    lab.ctl_ok(&["del-port", &h1.port]);
    assert!(
        wait_until(Duration::from_secs(3), || !lab.link_exists(&h1.ns, "eth0")),
        "del-port left the created TAP (eth0 in {}) behind",
        h1.ns
    );
    let ports = lab.ctl_json(&["list-ports", "br0"]);
    assert_eq!(
        ports,
        Value::Array(vec![]),
        "port still listed after del-port"
    );
    // The name is free again.
    lab.ctl_ok(&[
        "add-port", "br0", "p1", "--type", "tap", "--netns", &h1.ns, "--ifname", "eth0",
    ]);
    assert!(lab.link_exists(&h1.ns, "eth0"));
}

/// Traffic flows through an attached persistent TAP: the daemon attaches to
/// it, then its kernel side is moved into a host namespace (as a VM manager
/// would hand it to a guest) and talks to a host on a created TAP.
#[test]
fn persistent_tap_carries_traffic() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let sw = lab.sw.clone();
    lab.persistent_tap("tapvm2");
    lab.ctl_ok(&["add-port", "br0", "tapvm2", "--type", "tap"]);
    let ns = lab.add_netns("vm");
    run_ok("ip", &["-n", &sw, "link", "set", "tapvm2", "netns", &ns]);
    lab.ns_ok(
        &ns,
        &[
            "ip",
            "addr",
            "add",
            &format!("{}/24", lab.ip(9)),
            "dev",
            "tapvm2",
        ],
    );
    lab.ns_ok(&ns, &["ip", "link", "set", "tapvm2", "up"]);
    let vm = Host {
        mac: lab.mac_of(&ns, "tapvm2"),
        ns: ns.clone(),
        port: "tapvm2".into(),
        ifname: "tapvm2".into(),
        ip: lab.ip(9),
    };
    let h1 = lab.tap_host("br0", 1);
    lab.assert_all_ping(&[&vm, &h1]);
    lab.ctl_ok(&["del-port", "tapvm2"]);
    assert!(
        lab.link_exists(&ns, "tapvm2"),
        "del-port deleted the persistent TAP"
    );
    // Persistent device moved away: remove it ourselves (the namespace goes at
    // the end anyway, taking it along).
    let _ = run("ip", &["-n", &ns, "link", "del", "tapvm2"]);
}

/// Frames a bridge must not forward are dropped and counted by reason on the
/// ingress port: a multicast or all-zero source (`invalid_src_mac`) and an
/// IEEE 802.1D reserved destination (`link_local`). None reach h2, and the
/// daemon keeps forwarding.
#[test]
fn bad_frames_dropped_with_reason() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    lab.assert_all_ping(&[&h1, &h2]);

    let bg = lab.sniffer(&h2, "3", &["--ethertype", "0x88b5"]);
    lab.send_frames(&h1, &["--count", "5", "--src", "01:00:5e:00:00:01"]);
    lab.send_frames(&h1, &["--count", "5", "--src", "00:00:00:00:00:00"]);
    lab.send_frames(
        &h1,
        &[
            "--count",
            "5",
            "--src",
            &h1.mac,
            "--dst",
            "01:80:c2:00:00:0e",
        ],
    );
    assert_eq!(
        lab.sniffed(bg),
        0,
        "a frame that must be dropped reached h2"
    );

    assert!(
        wait_until(Duration::from_secs(3), || {
            let s = lab.port_stats("p1");
            s["drops"]["invalid_src_mac"].as_u64() >= Some(10)
                && s["drops"]["link_local"].as_u64() >= Some(5)
        }),
        "drops not counted on p1: {}",
        lab.port_stats("p1")
    );
    let s2 = lab.port_stats("p2");
    assert_eq!(
        s2["drops"]["invalid_src_mac"], 0,
        "counted on the wrong port: {s2}"
    );
    assert!(
        lab.fdb_entry("br0", "01:00:5e:00:00:01").is_none(),
        "a multicast source was learned"
    );
    lab.assert_all_ping(&[&h1, &h2]);
}

/// A host namespace that goes away takes its TAP along: the port shows
/// down, `port_down` is counted once, the others keep forwarding.
#[test]
fn tap_host_namespace_deleted() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    let h3 = lab.tap_host("br0", 3);
    lab.assert_all_ping(&[&h1, &h2, &h3]);
    run_ok("ip", &["netns", "del", &h3.ns]);
    assert!(
        wait_until(Duration::from_secs(5), || lab.port_info("br0", "p3")["up"]
            == false),
        "p3 still up after its namespace was deleted: {}",
        lab.port_info("br0", "p3")
    );
    assert!(
        wait_until(Duration::from_secs(3), || lab.drops("p3", "port_down") == 1),
        "port_down of p3 is not 1: {}",
        lab.port_stats("p3")
    );
    lab.assert_all_ping(&[&h1, &h2]);
    lab.ctl_ok(&["fdb-flush", "br0"]);
    lab.assert_all_ping(&[&h1, &h2]);
    assert_eq!(lab.drops("p3", "port_down"), 1);
    // The dead port can be removed.
    lab.ctl_ok(&["del-port", "p3"]);
}
