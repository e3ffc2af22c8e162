//! VXLAN at data-centre scale, against the Linux kernel's vxlan device: many
//! VNIs on one underlay address and port, outer source ports from the inner
//! flow, remotes and MAC→VTEP entries changed at run time, an underlay
//! address that comes and goes, and an IPv6 underlay (topology in
//! `vxlan_support`).

mod common;
mod vxlan_support;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use vxlan_support::*;

fn k(vni: &'static str, i: u32, remote: &'static str, bridged: bool) -> KernelVtep<'static> {
    KernelVtep {
        vni,
        under: format!("192.0.2.{i}"),
        remote,
        bridged,
    }
}

/// VNI 100 on br0 and VNI 200 on br1 of one vswitchd share 192.0.2.1:4789;
/// each talks to a kernel VTEP of its VNI behind a kernel bridge (ping and
/// TCP), and neither VNI sees the other's broadcasts, though both flood to
/// both kernel VTEPs.
#[test]
fn two_vnis_share_one_underlay() {
    let mut v = vx_lab();
    v.lab.add_br("br1", &[]);
    let h2 = v.lab.tap_host("br1", 2);
    let k3 = kernel_vtep_with(&mut v, 3, &k("100", 3, LOCAL, true));
    let k4 = kernel_vtep_with(&mut v, 4, &k("200", 4, LOCAL, true));
    for (br, port, vni) in [("br0", "vx", "100"), ("br1", "vx2", "200")] {
        v.lab.ctl_ok(&[
            "add-port",
            br,
            port,
            "--type",
            "vxlan",
            "--vni",
            vni,
            "--local",
            LOCAL,
            "--remote",
            "192.0.2.3,192.0.2.4",
        ]);
    }
    assert!(v.lab.ping(&v.h1, &k3.ip), "h1 -> k3 in VNI 100");
    assert!(v.lab.ping(&h2, &k4.ip), "h2 -> k4 in VNI 200");
    assert!(v.lab.ping(&k3, &v.h1.ip), "k3 -> h1");
    assert!(v.lab.ping(&k4, &h2.ip), "k4 -> h2");
    assert!(v.lab.iperf_tcp(&v.h1, &k3) > 1_000_000, "TCP in VNI 100");
    assert!(v.lab.iperf_tcp(&k4, &h2) > 1_000_000, "TCP in VNI 200");

    // Broadcasts stay in their VNI: h1's ARP for k4's address reaches no
    // one in VNI 200, h2's does.
    let from_h1 = v.lab.sniffer(&k4, "4", &["--src", &v.h1.mac]);
    let from_h2 = v.lab.sniffer(&k4, "4", &["--src", &h2.mac]);
    v.lab
        .ns_ok(&v.h1.ns, &["ip", "neigh", "flush", "dev", &v.h1.ifname]);
    v.lab
        .ns_ok(&h2.ns, &["ip", "neigh", "flush", "dev", &h2.ifname]);
    assert!(!v.lab.ping_once(&v.h1, &k4.ip), "h1 reached VNI 200");
    assert!(v.lab.ping_once(&h2, &k4.ip), "h2 -> k4");
    assert_eq!(v.lab.sniffed(from_h1), 0, "VNI 100 frames in VNI 200");
    assert!(v.lab.sniffed(from_h2) > 0, "the sniffer saw nothing at all");
    // Each port counts its own traffic.
    let (a, b) = (v.lab.port_stats("vx"), v.lab.port_stats("vx2"));
    assert!(a["rx_packets"].as_u64().unwrap() > 0, "{a}");
    assert!(b["rx_packets"].as_u64().unwrap() > 0, "{b}");
    // Removing one VNI leaves the other working.
    v.lab.ctl_ok(&["del-port", "vx"]);
    assert!(v.lab.ping(&h2, &k4.ip), "VNI 200 after VNI 100 went");
    assert!(!v.lab.ping_once(&v.h1, &k3.ip), "VNI 100 still forwarding");
    assert!(!v.lab.ping_once(&k3, &v.h1.ip), "VNI 100 still forwarding");
    assert!(
        wait_until(Duration::from_secs(3), || drops_of(
            &v.lab,
            "vx2",
            "vni_unknown"
        ) > 0),
        "k3's VNI 100 datagrams are not counted as vni_unknown: {}",
        v.lab.port_stats("vx2")
    );
}

/// Outer UDP source ports come from the inner flow: several flows leave from
/// several ports in 49152-65535, each flow from one; `--srcport` narrows the
/// range.
#[test]
fn source_ports_follow_the_inner_flow() {
    let mut v = vx_lab();
    let k2 = kernel_vtep(&mut v, 2);
    add_vxlan(&v.lab, "192.0.2.2", &[]);
    let info = v.lab.port_info("br0", "vx");
    assert_eq!(info["srcport"], "49152-65535", "{info}");
    let check = |v: &Vx, range: std::ops::RangeInclusive<u16>, min_distinct: usize| {
        assert!(v.lab.ping(&v.h1, &k2.ip), "h1 -> k2");
        let sn = vxlan_sniffer(&v.lab, &v.lab.sw, "u0", "4");
        let sports: Vec<u16> = (41001..=41008).collect();
        udp_flows(&v.lab, &v.h1, &k2.ip, &sports, 3);
        let recs = vxlan_records(sn);
        let mut by_flow: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for r in recs.iter().filter(|r| r["src"] == LOCAL) {
            if let Some(f) = r["flow"].as_str().filter(|f| f.contains(":9/17")) {
                by_flow
                    .entry(f.to_string())
                    .or_default()
                    .insert(r["sport"].as_u64().unwrap());
            }
        }
        assert_eq!(by_flow.len(), sports.len(), "flows seen: {by_flow:?}");
        let mut all = BTreeSet::new();
        for (f, ports) in &by_flow {
            assert_eq!(
                ports.len(),
                1,
                "flow {f} left from several ports: {ports:?}"
            );
            let p = *ports.iter().next().unwrap();
            assert!(
                range.contains(&(p as u16)),
                "flow {f}: port {p} out of range"
            );
            all.insert(p);
        }
        assert!(
            all.len() >= min_distinct,
            "{} flows left from only {:?}",
            sports.len(),
            all
        );
    };
    check(&v, 49152..=65535, 3);
    v.lab.ctl_ok(&["del-port", "vx"]);
    add_vxlan(&v.lab, "192.0.2.2", &["--srcport", "50000-50003"]);
    let info = v.lab.port_info("br0", "vx");
    assert_eq!(info["srcport"], "50000-50003", "{info}");
    check(&v, 50000..=50003, 2);
}

/// The outer source of the datagrams `h1` floods, as seen on `k`'s underlay.
fn floods_seen_by(v: &Vx, k: &Host, probe: impl FnOnce()) -> usize {
    let sn = vxlan_sniffer(&v.lab, &k.ns, "u0", "3");
    probe();
    vxlan_records(sn)
        .iter()
        .filter(|r| r["src"] == LOCAL && r["inner_dst"] == "ff:ff:ff:ff:ff:ff")
        .count()
}

/// `--remote-add` and `--remote-del` change where broadcasts go at run time,
/// without disturbing the other remotes; a removed remote's stations are
/// forgotten and its frames refused.
#[test]
fn remotes_change_at_run_time() {
    let mut v = vx_lab();
    let k2 = kernel_vtep(&mut v, 2);
    let k3 = kernel_vtep(&mut v, 3);
    add_vxlan(&v.lab, "192.0.2.2", &[]);
    let nobody = v.lab.ip(9);
    let probe = || {
        v.lab
            .ns_ok(&v.h1.ns, &["ip", "neigh", "flush", "dev", &v.h1.ifname]);
        let _ = v.lab.ping_once(&v.h1, &nobody);
    };
    assert!(v.lab.ping(&v.h1, &k2.ip), "h1 -> k2");
    assert!(
        !v.lab.ping_once(&v.h1, &k3.ip),
        "k3 reached before it was added"
    );
    assert_eq!(floods_seen_by(&v, &k3, probe), 0);

    v.lab
        .ctl_ok(&["set-port", "vx", "--remote-add", "192.0.2.3"]);
    let info = v.lab.port_info("br0", "vx");
    assert_eq!(
        info["remotes"],
        serde_json::json!(["192.0.2.2", "192.0.2.3"]),
        "{info}"
    );
    assert!(v.lab.ping(&v.h1, &k3.ip), "h1 -> k3 after --remote-add");
    assert!(floods_seen_by(&v, &k3, probe) > 0, "k3 gets no broadcasts");
    assert!(floods_seen_by(&v, &k2, probe) > 0, "k2 lost its broadcasts");

    // k2 goes: no more broadcasts to it, what was learned behind it is
    // forgotten, its frames are refused; k3 carries on.
    assert!(v.lab.fdb_entry("br0", &k2.mac).is_some());
    let ping3 = v.lab.ns_spawn(
        &v.h1.ns,
        &["ping", "-n", "-q", "-i", "0.05", "-c", "60", &k3.ip],
        true,
    );
    v.lab
        .ctl_ok(&["set-port", "vx", "--remote-del", "192.0.2.2"]);
    let (st, out) = ping3.finish(Duration::from_secs(20));
    assert!(
        st.success() && out.contains(" 0% packet loss"),
        "k3's traffic was disturbed by removing k2: {out}"
    );
    assert!(
        v.lab.fdb_entry("br0", &k2.mac).is_none(),
        "{:?}",
        v.lab.fdb("br0")
    );
    assert_eq!(floods_seen_by(&v, &k2, probe), 0, "k2 still flooded");
    assert!(!v.lab.ping_once(&k2, &v.h1.ip), "k2 still accepted");
    assert!(drops_of(&v.lab, "vx", "unknown_vtep") > 0);
    let info = v.lab.port_info("br0", "vx");
    assert_eq!(info["remotes"], serde_json::json!(["192.0.2.3"]), "{info}");
    // And back.
    v.lab
        .ctl_ok(&["set-port", "vx", "--remote-add", "192.0.2.2"]);
    assert!(v.lab.ping(&v.h1, &k2.ip), "h1 -> k2 after re-adding");
}

/// `fdb-add --vtep`: a static MAC→VTEP entry sends that MAC's unicast to that
/// VTEP only (not to the flood list), accepts its frames, and survives `save`
/// and a restart.
#[test]
fn static_mac_behind_a_vtep() {
    let mut v = vx_lab();
    let k2 = kernel_vtep(&mut v, 2);
    let k3 = kernel_vtep(&mut v, 3);
    add_vxlan(&v.lab, "192.0.2.2", &[]);
    v.lab
        .ctl_ok(&["fdb-add", "br0", &k3.mac, "vx", "--vtep", "192.0.2.3"]);
    let e = v.lab.fdb_entry("br0", &k3.mac).expect("static entry");
    assert_eq!(e["type"], "static", "{e}");
    assert_eq!(e["vtep"], "192.0.2.3", "{e}");
    // k3 is not on the flood list: h1 needs no broadcast to reach it.
    static_neigh(&v.lab, &v.h1, &k3.ip, &k3.mac);
    let sn = vxlan_sniffer(&v.lab, &k2.ns, "u0", "4");
    assert!(
        v.lab.ping(&v.h1, &k3.ip),
        "h1 -> k3 through the static entry"
    );
    for _ in 0..3 {
        assert!(v.lab.ping_once(&v.h1, &k3.ip));
    }
    let to_k2: Vec<Value> = vxlan_records(sn)
        .into_iter()
        .filter(|r| r["src"] == LOCAL && r["inner_dst"] == k3.mac.as_str())
        .collect();
    assert!(to_k2.is_empty(), "k3's unicast went to k2 too: {to_k2:?}");
    // Restart from the saved file: the entry is back with its VTEP.
    let cfg = v.lab.path("saved.toml");
    v.lab.ctl_ok(&["save", cfg.to_str().unwrap()]);
    v.lab.stop_daemon();
    v.lab.start_daemon(&["--config", cfg.to_str().unwrap()]);
    // h1's TAP is made anew (new MAC, no address): set it up again, and let
    // k3 forget the old MAC.
    let h1 = &v.h1;
    assert!(
        wait_until(Duration::from_secs(5), || v
            .lab
            .link_exists(&h1.ns, &h1.ifname)),
        "h1's TAP is not back"
    );
    let cidr = format!("{}/24", h1.ip);
    v.lab
        .ns_ok(&h1.ns, &["ip", "addr", "add", &cidr, "dev", &h1.ifname]);
    v.lab
        .ns_ok(&h1.ns, &["ip", "link", "set", &h1.ifname, "up"]);
    static_neigh(&v.lab, h1, &k3.ip, &k3.mac);
    v.lab
        .ns_ok(&k3.ns, &["ip", "neigh", "flush", "dev", &k3.ifname]);
    let e = v.lab.fdb_entry("br0", &k3.mac).expect("static entry back");
    assert_eq!(e["vtep"], "192.0.2.3", "{e}");
    assert!(v.lab.ping(&v.h1, &k3.ip), "h1 -> k3 after the restart");
    // Deleting it: k3 is unreachable again (not a remote).
    v.lab.ctl_ok(&["fdb-del", "br0", &k3.mac]);
    assert!(
        !v.lab.ping_once(&v.h1, &k3.ip),
        "k3 reached without the entry"
    );
}

/// A port whose underlay address is not (yet) on any interface is added and
/// shown down with a reason; it comes up by itself when the address
/// appears, goes down when it is removed, and up again when it is back.
#[test]
fn underlay_address_comes_and_goes() {
    let mut v = vx_lab_with(false);
    let k2 = kernel_vtep(&mut v, 2);
    add_vxlan(&v.lab, "192.0.2.2", &[]);
    let up = |v: &Vx| v.lab.port_info("br0", "vx")["up"] == true;
    let info = v.lab.port_info("br0", "vx");
    assert_eq!(info["up"], false, "{info}");
    let reason = info["down_reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("192.0.2.1") && reason.contains("not on any interface"),
        "{info}"
    );
    let sw = v.lab.sw.clone();
    let addr = |op: &str| run_ok("ip", &["-n", &sw, "addr", op, "192.0.2.1/24", "dev", "u0"]);
    addr("add");
    assert!(wait_until(Duration::from_secs(5), || up(&v)), "not up");
    assert!(v.lab.port_info("br0", "vx").get("down_reason").is_none());
    assert!(
        v.lab.ping(&v.h1, &k2.ip),
        "h1 -> k2 once the address is there"
    );
    addr("del");
    assert!(wait_until(Duration::from_secs(5), || !up(&v)), "not down");
    assert!(!v.lab.ping_once(&v.h1, &k2.ip), "forwarding while down");
    addr("add");
    assert!(
        wait_until(Duration::from_secs(5), || up(&v)),
        "not up again"
    );
    assert!(
        v.lab.ping(&v.h1, &k2.ip),
        "h1 -> k2 after the address came back"
    );
    assert!(
        v.lab.ping(&k2, &v.h1.ip),
        "k2 -> h1 after the address came back"
    );
}

/// An IPv6 underlay, against a kernel VTEP on IPv6: ping, TCP, and the
/// station learned behind its IPv6 VTEP address.
#[test]
fn ipv6_underlay() {
    let mut v = vx_lab();
    let sw = v.lab.sw.clone();
    enable_ipv6(&v.lab, &sw, "u0");
    run_ok(
        "ip",
        &[
            "-n",
            &sw,
            "addr",
            "add",
            &format!("{LOCAL6}/64"),
            "dev",
            "u0",
            "nodad",
        ],
    );
    let k2 = kernel_vtep_with(
        &mut v,
        2,
        &KernelVtep {
            vni: VNI,
            under: "2001:db8::2".into(),
            remote: LOCAL6,
            bridged: false,
        },
    );
    v.lab.ctl_ok(&[
        "add-port",
        "br0",
        "vx",
        "--type",
        "vxlan",
        "--vni",
        VNI,
        "--local",
        LOCAL6,
        "--remote",
        "2001:db8::2",
    ]);
    let info = v.lab.port_info("br0", "vx");
    assert_eq!(info["local"], LOCAL6, "{info}");
    assert_eq!(info["up"], true, "{info}");
    assert!(v.lab.ping(&v.h1, &k2.ip), "h1 -> k2 over IPv6");
    assert!(v.lab.ping(&k2, &v.h1.ip), "k2 -> h1 over IPv6");
    let e = v.lab.fdb_entry("br0", &k2.mac).expect("k2 learned");
    assert_eq!(e["vtep"], "2001:db8::2", "{e}");
    let to_k = v.lab.iperf_tcp(&v.h1, &k2);
    let from_k = v.lab.iperf_tcp(&k2, &v.h1);
    assert!(to_k > 1_000_000 && from_k > 1_000_000, "{to_k} {from_k}");
}

/// VLAN→VNI mapping on one bridge: VXLAN ports for VNI 100 and 200 on one
/// underlay socket are access ports of VLANs 10 and 20 of br0; each VLAN
/// reaches the kernel VTEP of its VNI and nothing else.
#[test]
fn vlans_of_one_bridge_map_to_vnis() {
    let mut v = vx_lab();
    let h2 = v.lab.tap_host("br0", 2);
    let k3 = kernel_vtep_with(&mut v, 3, &k("100", 3, LOCAL, true));
    let k4 = kernel_vtep_with(&mut v, 4, &k("200", 4, LOCAL, true));
    for (port, vni, vlan) in [("vx100", "100", "10"), ("vx200", "200", "20")] {
        v.lab.ctl_ok(&[
            "add-port",
            "br0",
            port,
            "--type",
            "vxlan",
            "--vni",
            vni,
            "--local",
            LOCAL,
            "--remote",
            "192.0.2.3,192.0.2.4",
        ]);
        v.lab.ctl_ok(&["set-port", port, "--access", vlan]);
    }
    v.lab.ctl_ok(&["set-port", &v.h1.port, "--access", "10"]);
    v.lab.ctl_ok(&["set-port", &h2.port, "--access", "20"]);
    assert!(v.lab.ping(&v.h1, &k3.ip), "VLAN 10 -> VNI 100");
    assert!(v.lab.ping(&h2, &k4.ip), "VLAN 20 -> VNI 200");
    assert!(!v.lab.ping_once(&v.h1, &k4.ip), "VLAN 10 reached VNI 200");
    assert!(!v.lab.ping_once(&h2, &k3.ip), "VLAN 20 reached VNI 100");
    let e = v.lab.fdb_entry("br0", &k3.mac).expect("k3 learned");
    assert_eq!(
        (e["port"].as_str(), e["vlan"].as_u64()),
        (Some("vx100"), Some(10)),
        "{e}"
    );
}

/// TCP from a TAP host (64 KiB TSO frames) crosses the underlay whole:
/// written into the underlay's UDP-tunnel GSO TAP, routed out of the veth
/// unsegmented, so the kernel VTEP decapsulates packets far above the MTU.
/// With `VSWITCH_VXLAN_TAP=0` the port segments in software and sends with
/// UDP GSO (MTU-sized datagrams); both carry the transfer.
#[test]
fn super_frames_cross_the_underlay_whole() {
    for tap in [true, false] {
        let env: &[(&str, &str)] = if tap {
            &[]
        } else {
            &[("VSWITCH_VXLAN_TAP", "0")]
        };
        let mut v = vx_lab_env(true, env);
        let k2 = kernel_vtep(&mut v, 2);
        add_vxlan(&v.lab, "192.0.2.2", &[]);
        let info = v.lab.port_info("br0", "vx");
        assert_eq!(info["tunnel_gso"], tap, "{info}");
        assert!(v.lab.ping(&v.h1, &k2.ip));
        // What the kernel VTEP decapsulates: one packet per datagram it
        // got (a UDP GSO send is split back into datagrams on receipt, a
        // tunnel GSO one is not).
        let (p0, b0) = rx_counts(&v.lab, &k2.ns, "vx0");
        let sn = vxlan_sniffer(&v.lab, &v.lab.sw, "u0", "3");
        let bytes = v.lab.iperf_tcp(&v.h1, &k2);
        let (p1, b1) = rx_counts(&v.lab, &k2.ns, "vx0");
        // Every packet of one TCP flow, super-frame or ACK, leaves from one
        // outer source port.
        let mut ports: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for r in vxlan_records(sn).iter().filter(|r| r["src"] == LOCAL) {
            if let Some(f) = r["flow"].as_str().filter(|f| f.ends_with("/6")) {
                ports
                    .entry(f.to_string())
                    .or_default()
                    .insert(r["sport"].as_u64().unwrap());
            }
        }
        assert!(!ports.is_empty(), "no TCP seen on the underlay");
        for (f, p) in &ports {
            assert_eq!(
                p.len(),
                1,
                "tunnel TAP {tap}: flow {f} left from ports {p:?}"
            );
        }
        let mean = (b1 - b0) / (p1 - p0).max(1);
        eprintln!(
            "tunnel TAP {tap}: {bytes} bytes of TCP, {} packets decapsulated, mean {mean} bytes",
            p1 - p0
        );
        assert!(bytes > 10_000_000, "tunnel TAP {tap}: only {bytes} bytes");
        if tap {
            assert!(
                mean > 8000,
                "super-frames were cut: mean datagram {mean} bytes"
            );
        } else {
            assert!(
                mean < 1700,
                "software segmentation: mean datagram {mean} bytes"
            );
        }
        assert_eq!(drops_of(&v.lab, "vx", "tx_error"), 0);
    }
}

/// A non-default `--dstport`: every datagram, whole super-frames from the
/// tunnel TAP included, goes to the remote's port (TCP from a TAP host
/// would stall if the super-frames went to 4789).
#[test]
fn tcp_over_a_non_default_dstport() {
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
            VNI,
            "local",
            "192.0.2.2",
            "remote",
            LOCAL,
            "dstport",
            "8472",
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
    let k2 = Host {
        mac: v.lab.mac_of(&k2.ns, "vx0"),
        ..k2
    };
    add_vxlan(&v.lab, "192.0.2.2", &["--dstport", "8472"]);
    assert!(v.lab.ping(&v.h1, &k2.ip), "h1 -> k2 on 8472");
    let bytes = v.lab.iperf_tcp(&v.h1, &k2);
    assert!(bytes > 10_000_000, "TCP on 8472 carried only {bytes} bytes");
    assert_eq!(v.lab.port_info("br0", "vx")["tunnel_gso"], true);
}

/// `capture` on a VXLAN port (no kernel device): the inner frames, both
/// ways, that tcpdump decodes.
#[test]
fn capture_on_a_vxlan_port() {
    let mut v = vx_lab();
    let k2 = kernel_vtep(&mut v, 2);
    add_vxlan(&v.lab, "192.0.2.2", &[]);
    assert!(v.lab.ping(&v.h1, &k2.ip));
    let f = v.lab.path("vx.pcap").to_str().unwrap().to_string();
    let bg = v.lab.ctl_spawn(&["capture", "vx", "-c", "6", "-w", &f]);
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..4 {
        let _ = v.lab.ping_once(&v.h1, &k2.ip);
    }
    let (st, _) = bg.finish(Duration::from_secs(30));
    assert!(st.success());
    let out = run_ok("tcpdump", &["-nr", &f]);
    assert!(
        out.contains("ICMP echo request") && out.contains("ICMP echo reply"),
        "{out}"
    );
    assert!(out.contains(&k2.ip), "{out}");
}
