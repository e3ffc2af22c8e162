//! Helpers the VXLAN tests share: the lab with an underlay bridge, kernel
//! VTEPs (the Linux vxlan device, the reference VTEP) and the underlay
//! sniffer.
//!
//! Topology: vswitchd runs in the lab's switch namespace with a TAP host `h1`
//! on br0; the underlay is a kernel bridge in namespace `ul` that the switch
//! namespace and each kernel VTEP namespace `kN` hang off by a veth
//! (192.0.2.0/24 and 2001:db8::/64, inside the test's namespaces only).

#![allow(dead_code)]

use crate::common::*;
use serde_json::Value;
use std::time::Duration;

pub const VNI: &str = "4242";
/// The switch's underlay address.
pub const LOCAL: &str = "192.0.2.1";
pub const LOCAL6: &str = "2001:db8::1";

pub struct Vx {
    pub lab: Lab,
    pub ul: String,
    pub h1: Host,
}

/// The lab: daemon, bridge br0 with TAP host h1, the underlay bridge and the
/// switch's underlay veth (MTU 1600, so 1500-byte inner frames need no
/// fragmentation), with LOCAL on it unless `with_local` is false.
pub fn vx_lab_with(with_local: bool) -> Vx {
    vx_lab_env(with_local, &[])
}

/// [`vx_lab_with`], the daemon started with `env`.
pub fn vx_lab_env(with_local: bool, env: &[(&str, &str)]) -> Vx {
    let mut lab = Lab::new();
    lab.start_daemon_env(&[], env);
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let ul = lab.add_netns("ul");
    lab.ns_ok(&ul, &["ip", "link", "add", "ubr", "type", "bridge"]);
    lab.ns_ok(&ul, &["ip", "link", "set", "ubr", "up"]);
    let sw = lab.sw.clone();
    uplink(&lab, &ul, &sw, "u0", with_local.then_some(LOCAL));
    Vx { lab, ul, h1 }
}

pub fn vx_lab() -> Vx {
    vx_lab_with(true)
}

/// A veth from namespace `ns` (named `ifname`, address `addr`/24 if given) to
/// the underlay bridge.
pub fn uplink(lab: &Lab, ul: &str, ns: &str, ifname: &str, addr: Option<&str>) {
    let br_end = format!("b{}", &ns[ns.len().saturating_sub(6)..]);
    run_ok(
        "ip",
        &[
            "-n", ul, "link", "add", &br_end, "mtu", "1600", "type", "veth", "peer", "name",
            ifname, "mtu", "1600", "netns", ns,
        ],
    );
    lab.ns_ok(ul, &["ip", "link", "set", &br_end, "master", "ubr", "up"]);
    if let Some(addr) = addr {
        lab.ns_ok(
            ns,
            &["ip", "addr", "add", &format!("{addr}/24"), "dev", ifname],
        );
    }
    lab.ns_ok(ns, &["ip", "link", "set", ifname, "up"]);
}

/// How a kernel VTEP is built.
pub struct KernelVtep<'a> {
    pub vni: &'a str,
    /// Its underlay address and the switch's (IPv4 or IPv6).
    pub under: String,
    pub remote: &'a str,
    /// Its lab address sits on a kernel bridge with the vxlan device in it
    /// (rather than on the vxlan device itself).
    pub bridged: bool,
}

/// Kernel VTEP number `i`: namespace `k{i}`, underlay address 192.0.2.`i`,
/// vxlan device `vx0` (VNI, remote = the switch) with lab address `net.i`.
pub fn kernel_vtep(v: &mut Vx, i: u32) -> Host {
    let under = format!("192.0.2.{i}");
    kernel_vtep_with(
        v,
        i,
        &KernelVtep {
            vni: VNI,
            under,
            remote: LOCAL,
            bridged: false,
        },
    )
}

pub fn kernel_vtep_with(v: &mut Vx, i: u32, k: &KernelVtep) -> Host {
    let ns = v.lab.add_netns(&format!("k{i}"));
    let v6 = k.under.contains(':');
    uplink(&v.lab, &v.ul, &ns, "u0", None);
    if v6 {
        enable_ipv6(&v.lab, &ns, "u0");
    }
    let cidr = if v6 {
        format!("{}/64", k.under)
    } else {
        format!("{}/24", k.under)
    };
    let mut add = vec!["ip", "addr", "add", &cidr, "dev", "u0"];
    if v6 {
        add.push("nodad");
    }
    v.lab.ns_ok(&ns, &add);
    v.lab.ns_ok(
        &ns,
        &[
            "ip", "link", "add", "vx0", "type", "vxlan", "id", k.vni, "local", &k.under, "remote",
            k.remote, "dstport", "4789", "dev", "u0",
        ],
    );
    v.lab
        .ns_ok(&ns, &["ip", "link", "set", "vx0", "mtu", "1500", "up"]);
    let mut ifname = "vx0";
    if k.bridged {
        v.lab
            .ns_ok(&ns, &["ip", "link", "add", "kbr", "type", "bridge"]);
        v.lab
            .ns_ok(&ns, &["ip", "link", "set", "vx0", "master", "kbr"]);
        v.lab.ns_ok(&ns, &["ip", "link", "set", "kbr", "up"]);
        ifname = "kbr";
    }
    let ip = v.lab.ip(i);
    v.lab.ns_ok(
        &ns,
        &["ip", "addr", "add", &format!("{ip}/24"), "dev", ifname],
    );
    let mac = v.lab.mac_of(&ns, ifname);
    Host {
        ns,
        port: "vx".into(),
        ifname: ifname.into(),
        ip,
        mac,
    }
}

/// Turns IPv6 back on for `ifname` in `ns` (the lab turns it off in its
/// namespaces): an IPv6 underlay.
pub fn enable_ipv6(lab: &Lab, ns: &str, ifname: &str) {
    lab.ns_ok(
        ns,
        &[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=0",
            &format!("net.ipv6.conf.{ifname}.disable_ipv6=0"),
        ],
    );
}

pub fn add_vxlan(lab: &Lab, remotes: &str, extra: &[&str]) {
    let mut args = vec![
        "add-port", "br0", "vx", "--type", "vxlan", "--vni", VNI, "--local", LOCAL,
    ];
    if !remotes.is_empty() {
        args.extend_from_slice(&["--remote", remotes]);
    }
    args.extend_from_slice(extra);
    lab.ctl_ok(&args);
}

pub fn drops_of(lab: &Lab, port: &str, reason: &str) -> u64 {
    lab.port_stats(port)["drops"][reason].as_u64().unwrap_or(0)
}

/// Starts `vxlan_sniff.py` on `ifname` in `ns` for `secs` seconds and waits
/// until it listens; [`vxlan_records`] collects what it saw.
pub fn vxlan_sniffer(lab: &Lab, ns: &str, ifname: &str, secs: &str) -> Bg {
    let script = helper("vxlan_sniff.py");
    let mut bg = lab.ns_spawn(ns, &["python3", &script, ifname, secs], true);
    let line = bg.read_line(Duration::from_secs(10));
    assert_eq!(
        line.trim(),
        "ready",
        "vxlan sniffer did not start: {line:?}"
    );
    bg
}

/// The VXLAN datagrams a sniffer saw (see the helper's doc).
pub fn vxlan_records(bg: Bg) -> Vec<Value> {
    let (st, out) = bg.finish(Duration::from_secs(30));
    assert!(st.success(), "vxlan sniffer failed: {st} {out}");
    match serde_json::from_str(out.trim()) {
        Ok(Value::Array(a)) => a,
        _ => panic!("vxlan sniffer output is not a JSON list: {out}"),
    }
}

/// Sends `n` UDP datagrams from each of `sports` on host `from` to `to_ip`
/// port 9 (discard; nothing needs to listen).
pub fn udp_flows(lab: &Lab, from: &Host, to_ip: &str, sports: &[u16], n: u32) {
    let ports: Vec<String> = sports.iter().map(|p| p.to_string()).collect();
    let script = format!(
        "import socket, time\n\
         for p in [{}]:\n\
         \x20   s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         \x20   s.bind(('{}', p))\n\
         \x20   for _ in range({n}):\n\
         \x20       s.sendto(b'vxlan-flow', ('{to_ip}', 9))\n\
         \x20       time.sleep(0.01)\n\
         \x20   s.close()\n",
        ports.join(","),
        from.ip
    );
    lab.ns_ok(&from.ns, &["python3", "-c", &script]);
}

/// Received packets and bytes of `ifname` in `ns`.
pub fn rx_counts(lab: &Lab, ns: &str, ifname: &str) -> (u64, u64) {
    let read = |what: &str| -> u64 {
        lab.ns_ok(
            ns,
            &["cat", &format!("/sys/class/net/{ifname}/statistics/{what}")],
        )
        .trim()
        .parse()
        .expect("counter")
    };
    (read("rx_packets"), read("rx_bytes"))
}

/// Fixes `ip` to `mac` in `h`'s neighbour table (no ARP needed).
pub fn static_neigh(lab: &Lab, h: &Host, ip: &str, mac: &str) {
    lab.ns_ok(
        &h.ns,
        &[
            "ip",
            "neigh",
            "replace",
            ip,
            "lladdr",
            mac,
            "dev",
            &h.ifname,
            "nud",
            "permanent",
        ],
    );
}
