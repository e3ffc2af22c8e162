//! VXLAN ports against the Linux kernel's vxlan device: the reference VTEP
//! (topology in `vxlan_support`).

mod common;
mod vxlan_support;

use common::*;
use serde_json::Value;
use std::time::Duration;
use vxlan_support::*;

/// A TAP host and a kernel VTEP reach each other over the tunnel, TCP runs
/// both ways (64 KiB GSO frames from the TAP are segmented in software before
/// encapsulation), the underlay carries VXLAN with our VNI, and the kernel
/// VTEP's station is learned behind its underlay address.
#[test]
fn interop_with_kernel_vxlan() {
    let mut v = vx_lab();
    let k2 = kernel_vtep(&mut v, 2);
    add_vxlan(&v.lab, "192.0.2.2", &[]);
    let info = v.lab.port_info("br0", "vx");
    assert_eq!(info["type"], "vxlan", "{info}");
    assert_eq!(info["vni"], 4242, "{info}");
    assert_eq!(info["local"], LOCAL, "{info}");
    assert_eq!(info["remotes"], serde_json::json!(["192.0.2.2"]), "{info}");
    assert_eq!(info["dstport"], 4789, "{info}");

    // The underlay shows real VXLAN: tcpdump decodes port 4789 as VXLAN.
    let cap = v.lab.ns_spawn(
        &v.lab.sw,
        &[
            "timeout", "8", "tcpdump", "-l", "-nn", "-c", "4", "-i", "u0", "udp", "port", "4789",
        ],
        true,
    );
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        v.lab.ping(&v.h1, &k2.ip),
        "h1 cannot ping the kernel VTEP's host"
    );
    assert!(
        v.lab.ping(&k2, &v.h1.ip),
        "the kernel VTEP's host cannot ping h1"
    );
    let (_, out) = cap.finish(Duration::from_secs(15));
    assert!(
        out.contains("VXLAN") && out.contains(&format!("vni {VNI}")),
        "no VXLAN with vni {VNI} on the underlay:\n{out}"
    );

    let e = v
        .lab
        .fdb_entry("br0", &k2.mac)
        .unwrap_or_else(|| panic!("{} not learned: {:?}", k2.mac, v.lab.fdb("br0")));
    assert_eq!(e["port"], "vx", "{e}");
    assert_eq!(e["vtep"], "192.0.2.2", "{e}");
    let human = v.lab.ctl_ok(&["fdb-show", "br0"]);
    assert!(
        human.contains("VTEP") && human.contains("192.0.2.2"),
        "{human}"
    );

    let to_k = v.lab.iperf_tcp(&v.h1, &k2);
    let from_k = v.lab.iperf_tcp(&k2, &v.h1);
    assert!(to_k > 1_000_000 && from_k > 1_000_000, "{to_k} {from_k}");
    let st = v.lab.port_stats("vx");
    assert_eq!(drops_of(&v.lab, "vx", "offload_failed"), 0, "{st}");
    assert!(st["tx_packets"].as_u64().unwrap_or(0) > 1000, "{st}");
}

/// A Linux VTEP sends its TCP over a veth underlay as whole super-frames (one
/// datagram with up to 64 KiB of inner TCP and no MSS). They must leave
/// through an AF_PACKET port as GSO frames, not be refused for exceeding the
/// MTU: before, this ran at a few hundred kbit/s with tx_error drops.
#[test]
fn kernel_vtep_tcp_to_afpacket_host() {
    let mut v = vx_lab();
    let k2 = kernel_vtep(&mut v, 2);
    let h3 = v.lab.afpacket_host("br0", 3);
    add_vxlan(&v.lab, "192.0.2.2", &[]);
    assert!(v.lab.ping(&k2, &h3.ip), "k2 -> h3");
    let to_h3 = v.lab.iperf_tcp(&k2, &h3);
    let to_h1 = v.lab.iperf_tcp(&k2, &v.h1);
    let from_h3 = v.lab.iperf_tcp(&h3, &k2);
    let st = v.lab.port_stats(&h3.port);
    // 50 MB in the 2-second run is 200 Mbit/s; the broken path moved ~0.1 MB.
    assert!(to_h3 > 50_000_000, "{to_h3} bytes; {st}");
    assert!(
        to_h1 > 50_000_000 && from_h3 > 50_000_000,
        "{to_h1} {from_h3}"
    );
    assert_eq!(v.lab.drops(&h3.port, "tx_error"), 0, "{st}");
    assert_eq!(drops_of(&v.lab, "vx", "offload_failed"), 0);
    // Super-frames did arrive (mean received datagram well above the MTU).
    let vx = v.lab.port_stats("vx");
    let (p, b) = (
        vx["rx_packets"].as_u64().unwrap(),
        vx["rx_bytes"].as_u64().unwrap(),
    );
    assert!(
        p > 0 && b / p > 3000,
        "mean {} bytes per datagram: {vx}",
        b / p.max(1)
    );
}

/// Broadcast reaches every remote (head-end replication); a VTEP that is not
/// a remote is refused and counted, until the port learns remotes; learned
/// stations are then answered at their VTEP alone.
#[test]
fn replication_and_remote_learning() {
    let mut v = vx_lab();
    let k2 = kernel_vtep(&mut v, 2);
    let k3 = kernel_vtep(&mut v, 3);
    let k4 = kernel_vtep(&mut v, 4);
    add_vxlan(&v.lab, "192.0.2.2,192.0.2.3", &[]);

    // h1's ARP requests are broadcast: both configured remotes get them.
    assert!(v.lab.ping(&v.h1, &k2.ip), "h1 -> k2");
    assert!(v.lab.ping(&v.h1, &k3.ip), "h1 -> k3");
    let e3 = v.lab.fdb_entry("br0", &k3.mac).expect("k3 learned");
    assert_eq!(e3["vtep"], "192.0.2.3", "{e3}");

    // k4 is not a remote: its frames are dropped and counted.
    assert!(
        !v.lab.ping_once(&k4, &v.h1.ip),
        "k4 got through without --learning"
    );
    assert!(
        drops_of(&v.lab, "vx", "unknown_vtep") > 0,
        "{}",
        v.lab.port_stats("vx")
    );
    assert!(v.lab.fdb_entry("br0", &k4.mac).is_none());

    // With --learning the port accepts k4 and answers it at 192.0.2.4.
    v.lab.ctl_ok(&["del-port", "vx"]);
    add_vxlan(&v.lab, "192.0.2.2,192.0.2.3", &["--learning"]);
    assert!(v.lab.ping(&k4, &v.h1.ip), "k4 -> h1 with --learning");
    let e4 = v.lab.fdb_entry("br0", &k4.mac).expect("k4 learned");
    assert_eq!(e4["vtep"], "192.0.2.4", "{e4}");
    let info = v.lab.port_info("br0", "vx");
    assert_eq!(
        info["learned_remotes"],
        serde_json::json!(["192.0.2.4"]),
        "{info}"
    );
    // The configured remotes still work.
    assert!(v.lab.ping(&v.h1, &k2.ip), "h1 -> k2 after re-adding");

    // Unicast to a learned station goes to its VTEP only: k2 and k3 see no
    // VXLAN traffic while h1 talks to k4.
    let caps: Vec<_> = [&k2, &k3]
        .iter()
        .map(|k| {
            v.lab.ns_spawn(
                &k.ns,
                &[
                    "timeout", "4", "tcpdump", "-l", "-nn", "-i", "u0", "udp", "port", "4789",
                ],
                true,
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    for _ in 0..5 {
        assert!(v.lab.ping_once(&v.h1, &k4.ip), "h1 -> k4");
    }
    for (k, cap) in [&k2, &k3].iter().zip(caps) {
        let (_, out) = cap.finish(Duration::from_secs(10));
        let seen = out.lines().filter(|l| l.contains("VXLAN")).count();
        assert!(
            seen <= 2,
            "{} saw {seen} VXLAN frames meant for k4:\n{out}",
            k.ns
        );
    }
}

/// A datagram with a VNI no port serves is dropped and counted (a kernel VTEP on the
/// wrong segment cannot reach h1).
#[test]
fn other_vni_is_dropped() {
    let mut v = vx_lab();
    let k2 = kernel_vtep(&mut v, 2);
    v.lab.ns_ok(&k2.ns, &["ip", "link", "del", "vx0"]);
    v.lab.ns_ok(
        &k2.ns,
        &[
            "ip",
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "7",
            "local",
            "192.0.2.2",
            "remote",
            LOCAL,
            "dstport",
            "4789",
            "dev",
            "u0",
        ],
    );
    v.lab
        .ns_ok(&k2.ns, &["ip", "link", "set", "vx0", "mtu", "1500", "up"]);
    v.lab.ns_ok(
        &k2.ns,
        &["ip", "addr", "add", &format!("{}/24", k2.ip), "dev", "vx0"],
    );
    add_vxlan(&v.lab, "192.0.2.2", &[]);
    assert!(!v.lab.ping_once(&k2, &v.h1.ip), "VNI 7 reached VNI {VNI}");
    assert!(
        wait_until(Duration::from_secs(3), || drops_of(
            &v.lab,
            "vx",
            "vni_unknown"
        ) > 0),
        "{}",
        v.lab.port_stats("vx")
    );
}

/// Bad VXLAN settings are clear CLI errors and leave no port behind; the
/// settings survive `save` and a restart from the saved file.
#[test]
fn vxlan_cli() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let cases: &[(&[&str], &str)] = &[
        (&["--local", LOCAL, "--remote", "192.0.2.2"], "--vni"),
        (&["--vni", "5", "--remote", "192.0.2.2"], "--local"),
        (
            &["--vni", "5", "--local", LOCAL, "--remote", "2001:db8::2"],
            "same address family",
        ),
        (
            &["--vni", "5", "--local", LOCAL, "--remote", LOCAL],
            "another unicast",
        ),
        (
            &["--vni", "5", "--local", LOCAL, "--netns", "x"],
            "do not apply",
        ),
        (
            &["--vni", "5", "--local", LOCAL, "--srcport", "60000-50000"],
            "MIN <= MAX",
        ),
        (
            &["--vni", "5", "--local", LOCAL, "--srcport", "4789"],
            "MIN-MAX",
        ),
    ];
    for (args, want) in cases {
        let mut a = vec!["add-port", "br0", "vx", "--type", "vxlan"];
        a.extend_from_slice(args);
        let err = lab.ctl_err(&a);
        assert!(err.contains(want), "{a:?}: {err}");
    }
    let err = lab.ctl_err(&[
        "add-port", "br0", "vx", "--type", "vxlan", "--vni", "16777216", "--local", LOCAL,
    ]);
    assert!(err.contains("16777216"), "{err}");
    let err = lab.ctl_err(&["add-port", "br0", "t", "--type", "tap", "--vni", "5"]);
    assert!(err.contains("vxlan"), "{err}");
    let ports = lab.ctl_json(&["list-ports", "br0"]);
    assert_eq!(ports, Value::Array(vec![]), "{ports}");

    // A good one, on an address the switch namespace has, with no remote
    // yet (an orchestrator adds them later).
    run_ok(
        "ip",
        &["-n", &lab.sw, "addr", "add", "192.0.2.1/32", "dev", "lo"],
    );
    lab.ctl_ok(&[
        "add-port",
        "br0",
        "vx",
        "--type",
        "vxlan",
        "--vni",
        "5",
        "--local",
        LOCAL,
        "--dstport",
        "8472",
        "--srcport",
        "50000-50999",
    ]);
    // Another VNI shares the address and port; the same VNI again does not.
    lab.ctl_ok(&["add-br", "br1"]);
    lab.ctl_ok(&[
        "add-port",
        "br1",
        "vx2",
        "--type",
        "vxlan",
        "--vni",
        "6",
        "--local",
        LOCAL,
        "--remote",
        "192.0.2.2",
        "--dstport",
        "8472",
    ]);
    let err = lab.ctl_err(&[
        "add-port",
        "br1",
        "vx3",
        "--type",
        "vxlan",
        "--vni",
        "5",
        "--local",
        LOCAL,
        "--dstport",
        "8472",
    ]);
    assert!(err.contains("VNI 5 is already on 192.0.2.1:8472"), "{err}");
    // Remotes at run time, with clear errors.
    lab.ctl_ok(&["set-port", "vx", "--remote-add", "192.0.2.2,192.0.2.3"]);
    lab.ctl_ok(&["set-port", "vx", "--remote-add", "192.0.2.3,192.0.2.4"]);
    lab.ctl_ok(&["set-port", "vx", "--remote-del", "192.0.2.2"]);
    let err = lab.ctl_err(&["set-port", "vx", "--remote-del", "192.0.2.9"]);
    assert!(err.contains("192.0.2.9 is not a remote"), "{err}");
    let err = lab.ctl_err(&["set-port", "vx", "--remote-add", "2001:db8::9"]);
    assert!(err.contains("same address family"), "{err}");
    let err = lab.ctl_err(&["set-port", "vx", "--remote-add", "224.0.0.1"]);
    assert!(err.contains("unicast"), "{err}");
    let info = lab.port_info("br0", "vx");
    assert_eq!(
        info["remotes"],
        serde_json::json!(["192.0.2.3", "192.0.2.4"]),
        "{info}"
    );
    assert_eq!(info["srcport"], "50000-50999", "{info}");
    assert_eq!(info["up"], true, "{info}");
    let sports = info["source_ports"].as_array().expect("source_ports");
    assert!(!sports.is_empty(), "{info}");
    for p in sports {
        let p = p.as_u64().unwrap();
        assert!((50000..=50999).contains(&p), "{info}");
    }
    let human = lab.ctl_ok(&["list-ports", "br0"]);
    assert!(human.contains("vni 5 192.0.2.1:8472"), "{human}");
    // A static entry behind a VTEP; --vtep on a port that is not vxlan fails.
    lab.ctl_ok(&[
        "fdb-add",
        "br0",
        "02:00:00:00:aa:01",
        "vx",
        "--vtep",
        "192.0.2.7",
    ]);
    let e = lab
        .fdb_entry("br0", "02:00:00:00:aa:01")
        .expect("static entry");
    assert_eq!(
        (e["type"].as_str(), e["vtep"].as_str()),
        (Some("static"), Some("192.0.2.7")),
        "{e}"
    );
    let cfg = lab.path("saved.toml");
    lab.ctl_ok(&["save", cfg.to_str().unwrap()]);
    let text = std::fs::read_to_string(&cfg).unwrap();
    for want in [
        "type = \"vxlan\"",
        "vni = 5",
        "local = \"192.0.2.1\"",
        "dstport = 8472",
        "srcport = \"50000-50999\"",
        "remote = [",
        "\"192.0.2.4\"",
        "vtep = \"192.0.2.7\"",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    // A daemon started from the saved file has the same ports again.
    let before = lab.port_info("br0", "vx");
    let fdb_before = lab.fdb("br0");
    lab.stop_daemon();
    lab.start_daemon(&["--config", cfg.to_str().unwrap()]);
    let after = lab.port_info("br0", "vx");
    for k in [
        "type",
        "vni",
        "local",
        "remotes",
        "dstport",
        "srcport",
        "vtep_learning",
    ] {
        assert_eq!(before[k], after[k], "{k}: {before} vs {after}");
    }
    assert_eq!(fdb_before, lab.fdb("br0"));
    assert_eq!(lab.port_info("br1", "vx2")["vni"], 6);
}
