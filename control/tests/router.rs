//! The router: router interfaces on bridges, VLANs and TUN devices, static
//! routes, the ICMP messages a router sends, SNAT (masquerade) with its
//! mapping and filtering behaviour, persistence, and robustness against
//! malformed traffic.
//!
//! Every test builds its own topology of namespaces (hosts on daemon-created
//! TAPs) and uses subnets `10.N.K.0/24`, N unique per lab of this process.

mod common;
mod router_support;

use common::*;
use router_support::*;
use serde_json::Value;
use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

/// The `nat-show` flow of `proto` whose inside endpoint is `inside`.
fn nat_flow(lab: &Lab, proto: &str, inside: &str) -> Option<Value> {
    json_array(lab.ctl_json(&["nat-show"]), "nat-show")
        .into_iter()
        .find(|f| f["proto"] == proto && f["inside"] == inside)
}

/// docker0: pings across the router and to both router addresses, ARP
/// table, TCP and UDP through SNAT (the server sees only the masquerade
/// address), distinct outside ports and ICMP ids for clients using the same
/// source port / id, RST and port unreachable back to the inside,
/// address-and-port-dependent filtering, unsolicited inbound not delivered,
/// TTL decremented by one.
#[test]
fn router_docker0_snat() {
    let mut lab = Lab::with_daemon();
    let d = docker_config(&mut lab);
    let (c1, c2, srv) = (&d.c1, &d.c2, &d.srv);

    // The router answers ARP and ping on both sides; routed pings pass.
    assert_ping(&lab, c1, &d.gw_ip);
    assert_ping(&lab, c2, &d.gw_ip);
    assert_ping(&lab, srv, &d.up_ip);
    assert_ping(&lab, c1, &srv.ip);
    assert_ping(&lab, c2, &srv.ip);
    assert_ping(&lab, c1, &d.up_ip);

    // arp-show: the three hosts, reachable, with their MACs.
    let arp = json_array(lab.ctl_json(&["arp-show"]), "arp-show");
    for (h, rif) in [(c1, "gw"), (c2, "gw"), (srv, "up")] {
        let e = arp
            .iter()
            .find(|e| e["ip"] == h.ip.as_str())
            .unwrap_or_else(|| panic!("arp-show lacks {}: {arp:?}", h.ip));
        assert_eq!(
            e["mac"].as_str().map(str::to_lowercase).as_deref(),
            Some(h.mac.as_str()),
            "{e}"
        );
        assert_eq!(e["rif"], rif, "{e}");
        assert_eq!(e["state"], "reachable", "{e}");
    }

    // rif-show; the rif MACs are locally administered unicast addresses and
    // are what the hosts learnt for the router addresses.
    let rifs = json_array(lab.ctl_json(&["rif-show"]), "rif-show");
    assert_eq!(rifs.len(), 2, "{rifs:?}");
    for (name, br, addr, host) in [
        ("gw", "brin", format!("{}/24", d.gw_ip), c1),
        ("up", "brout", format!("{}/24", d.up_ip), srv),
    ] {
        let r = rifs
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("rif-show lacks {name}: {rifs:?}"));
        assert_eq!(r["type"], "bridge", "{r}");
        assert_eq!(r["bridge"], br, "{r}");
        assert_eq!(r["addr"], addr.as_str(), "{r}");
        assert_eq!(r["up"], true, "{r}");
        let mac = r["mac"].as_str().expect("rif mac").to_lowercase();
        let b0 = u8::from_str_radix(&mac[..2], 16).expect("mac hex");
        assert!(
            b0 & 0x02 != 0 && b0 & 0x01 == 0,
            "rif {name} MAC {mac} is not locally administered unicast"
        );
        let router_ip = addr.split('/').next().unwrap();
        let neigh = lab.ns_ok(&host.ns, &["ip", "neigh", "show", router_ip]);
        assert!(
            neigh.to_lowercase().contains(&mac),
            "{} resolved {router_ip} to something other than {mac}: {neigh}",
            host.ns
        );
    }
    // Stable: the same MAC when asked again.
    let again = json_array(lab.ctl_json(&["rif-show"]), "rif-show");
    assert_eq!(
        rifs.iter().map(|r| r["mac"].clone()).collect::<Vec<_>>(),
        again.iter().map(|r| r["mac"].clone()).collect::<Vec<_>>()
    );

    // TTL: a packet sent with TTL 64 arrives with 63, from the SNAT address.
    let sniff = py_bg(&lab, &srv.ns, ECHO_TTL_SNIFFER, &[]);
    ping_text(
        &lab,
        &c1.ns,
        &["-c", "2", "-i", "0.3", "-W", "1", "-t", "64", &srv.ip],
    );
    let (_, out) = sniff.finish(Duration::from_secs(15));
    assert_eq!(
        out.trim(),
        format!("{} 63", d.up_ip),
        "srv should see the echo from the SNAT address with TTL 63 (sent with 64)"
    );

    // TCP through SNAT: the server sees only the masquerade address; c1 and
    // c2 using the same source port get distinct outside ports.
    let tcp_srv = py_bg(&lab, &srv.ns, TCP_SERVER, &[&srv.ip, "8080", "3"]);
    for (h, sport) in [(c1, "0"), (c1, "40001"), (c2, "40001")] {
        let r = py_ok(&h.ns, TCP_CLIENT, &[&srv.ip, "8080", sport], CMD_TIMEOUT);
        assert!(
            r.starts_with("ok echo:hi"),
            "TCP from {} (sport {sport}): {r}\n{}",
            h.ns,
            diag(&lab)
        );
    }
    let (st, out) = tcp_srv.finish(Duration::from_secs(10));
    assert!(st.success(), "tcp server: {st} {out}");
    let p = peers(&out);
    assert_eq!(p.len(), 3, "{out}");
    for (ip, _) in &p {
        assert_eq!(ip, &d.up_ip, "server saw an inside address: {out}");
    }
    assert_ne!(
        p[1].1, p[2].1,
        "c1:40001 and c2:40001 share an outside port: {out}"
    );
    let f1 = nat_flow(&lab, "tcp", &format!("{}:40001", c1.ip));
    let f2 = nat_flow(&lab, "tcp", &format!("{}:40001", c2.ip));
    let (f1, f2) = match (f1, f2) {
        (Some(a), Some(b)) => (a, b),
        other => panic!("nat-show lacks the TCP flows: {other:?}\n{}", diag(&lab)),
    };
    assert_ne!(f1["outside"], f2["outside"], "{f1} {f2}");
    for f in [&f1, &f2] {
        assert_eq!(f["remote"], format!("{}:8080", srv.ip), "{f}");
        let o = f["outside"].as_str().unwrap_or("");
        assert!(o.starts_with(&format!("{}:", d.up_ip)), "{f}");
        assert!(f["expires_s"].as_u64().is_some(), "{f}");
        assert!(f["state"].is_string(), "{f}");
    }
    // The server's view matches nat-show.
    assert_eq!(f1["outside"], format!("{}:{}", d.up_ip, p[1].1));
    assert_eq!(f2["outside"], format!("{}:{}", d.up_ip, p[2].1));

    // UDP the same way.
    let udp_srv = py_bg(&lab, &srv.ns, UDP_SERVER, &[&srv.ip, "9000", "3"]);
    for (h, sport) in [(c1, "0"), (c1, "40002"), (c2, "40002")] {
        let r = py_ok(&h.ns, UDP_CLIENT, &[&srv.ip, "9000", sport], CMD_TIMEOUT);
        assert_eq!(
            r,
            "ok echo:hi",
            "UDP from {} (sport {sport})\n{}",
            h.ns,
            diag(&lab)
        );
    }
    let (st, out) = udp_srv.finish(Duration::from_secs(10));
    assert!(st.success(), "udp server: {st} {out}");
    let p = peers(&out);
    assert_eq!(p.len(), 3, "{out}");
    for (ip, _) in &p {
        assert_eq!(ip, &d.up_ip, "server saw an inside address: {out}");
    }
    assert_ne!(
        p[1].1, p[2].1,
        "c1:40002 and c2:40002 share an outside port: {out}"
    );
    let u1 = nat_flow(&lab, "udp", &format!("{}:40002", c1.ip));
    let u2 = nat_flow(&lab, "udp", &format!("{}:40002", c2.ip));
    match (&u1, &u2) {
        (Some(a), Some(b)) => assert_ne!(a["outside"], b["outside"], "{a} {b}"),
        other => panic!("nat-show lacks the UDP flows: {other:?}\n{}", diag(&lab)),
    }

    // ICMP echo: the same identifier from c1 and c2 gets two outside ids.
    let ident = "16962";
    for h in [c1, c2] {
        let r = py_ok(&h.ns, ICMP_ECHO_ID, &[&srv.ip, ident], CMD_TIMEOUT);
        assert_eq!(r, "reply", "echo id {ident} from {}\n{}", h.ns, diag(&lab));
    }
    let i1 = nat_flow(&lab, "icmp", &format!("{}:{ident}", c1.ip));
    let i2 = nat_flow(&lab, "icmp", &format!("{}:{ident}", c2.ip));
    match (&i1, &i2) {
        (Some(a), Some(b)) => assert_ne!(a["outside"], b["outside"], "{a} {b}"),
        other => panic!("nat-show lacks the ICMP flows: {other:?}\n{}", diag(&lab)),
    }

    // A closed TCP port answers RST, a closed UDP port ICMP port
    // unreachable: both reach the inside client.
    let r = py_ok(&c1.ns, TCP_CLIENT, &[&srv.ip, "8081"], CMD_TIMEOUT);
    assert_eq!(r, "refused", "TCP to a closed port\n{}", diag(&lab));
    let r = py_ok(&c1.ns, UDP_CLIENT, &[&srv.ip, "9001"], CMD_TIMEOUT);
    assert_eq!(r, "refused", "UDP to a closed port\n{}", diag(&lab));

    // Filtering: with c1's flow to srv:9100 open, srv's other port 9101
    // cannot reach it; srv:9100 can.
    let unsol = |lab: &Lab| -> u64 {
        ["nat_unsolicited", "local_unsupported", "nat_no_flow"]
            .iter()
            .map(|r| drop_count(lab, "up", r))
            .sum()
    };
    let before = unsol(&lab);
    let outside = py_bg(&lab, &srv.ns, UDP_OUTSIDE_PROBE, &[&srv.ip, "9100", "9101"]);
    let inside = py_bg(
        &lab,
        &c1.ns,
        UDP_INSIDE_LISTEN,
        &[&srv.ip, "9100", "40003", "3"],
    );
    let (_, seen_out) = outside.finish(Duration::from_secs(20));
    let (_, seen_in) = inside.finish(Duration::from_secs(20));
    assert!(
        seen_out.trim().starts_with(&format!("{}:", d.up_ip)),
        "outside probe: {seen_out:?}"
    );
    assert!(
        seen_in.contains(&format!("got good {}:9100", srv.ip)),
        "the flow's own remote did not get through: {seen_in:?}\n{}",
        diag(&lab)
    );
    assert!(
        !seen_in.contains("got bad"),
        "a datagram from another remote port passed the filter: {seen_in:?}"
    );

    // Unsolicited inbound TCP to the masquerade address on a port the
    // inside host listens on is not delivered.
    let listen = py_bg(&lab, &c1.ns, TCP_LISTEN_ONCE, &["40004", "4"]);
    let r = py_ok(
        &srv.ns,
        TCP_CLIENT,
        &[&d.up_ip, "40004", "0", "2"],
        CMD_TIMEOUT,
    );
    assert_ne!(
        r.split(' ').next(),
        Some("ok"),
        "unsolicited TCP got through: {r}"
    );
    let (_, l) = listen.finish(Duration::from_secs(10));
    assert_eq!(l.trim(), "none", "c1 accepted an unsolicited connection");
    // ... nor unsolicited UDP.
    let inside = py_bg(
        &lab,
        &c1.ns,
        UDP_INSIDE_LISTEN,
        &[&d.gw_ip, "9", "40005", "2"],
    );
    py(
        &srv.ns,
        "import socket,sys\ns=socket.socket(2,2)\nfor p in (40005,40003,1024,61000):\n    s.sendto(b'bad',(sys.argv[1],p))",
        &[&d.up_ip],
        CMD_TIMEOUT,
    );
    let (_, seen_in) = inside.finish(Duration::from_secs(10));
    assert!(!seen_in.contains("got bad"), "{seen_in}");
    let after = unsol(&lab);
    assert!(
        after > before,
        "unsolicited inbound not counted (nat_unsolicited/local_unsupported/nat_no_flow on up: {before} -> {after})\n{}",
        diag(&lab)
    );
}

/// ICMP errors from the router: time exceeded, network unreachable; static
/// routes in `route-show` and withdrawn by `del-route` (network unreachable
/// again).
#[test]
fn router_icmp_errors_and_routes() {
    let mut lab = Lab::with_daemon();
    let d = docker_config(&mut lab);
    let (c1, srv) = (&d.c1, &d.srv);
    assert_ping(&lab, c1, &srv.ip);

    // TTL 1: time exceeded from the ingress interface.
    let ttl0 = drop_count(&lab, "gw", "ttl_exceeded");
    let out = ping_text(&lab, &c1.ns, &["-c", "1", "-W", "2", "-t", "1", &srv.ip]);
    assert!(
        out.contains(&format!("From {}", d.gw_ip)) && out.contains("Time to live exceeded"),
        "ping -t 1: {out}\n{}",
        diag(&lab)
    );
    assert!(drop_count(&lab, "gw", "ttl_exceeded") > ttl0);

    // No route: network unreachable.
    let unroutable = format!("{}.1", net(&lab, 99));
    let nr0 = drop_count(&lab, "gw", "no_route");
    let out = ping_text(&lab, &c1.ns, &["-c", "1", "-W", "2", &unroutable]);
    assert!(
        out.contains(&format!("From {}", d.gw_ip)) && out.contains("Destination Net Unreachable"),
        "ping {unroutable}: {out}\n{}",
        diag(&lab)
    );
    assert!(drop_count(&lab, "gw", "no_route") > nr0);

    // A static route via a next hop that does not exist: host unreachable
    // once ARP gives up.
    let far = net(&lab, 50);
    let ghost = format!("{}.99", d.b);
    lab.ctl_ok(&["add-route", &format!("{far}.0/24"), "via", &ghost]);
    let routes = json_array(lab.ctl_json(&["route-show"]), "route-show");
    let find = |routes: &[Value], p: &str| routes.iter().find(|r| r["prefix"] == p).cloned();
    for (p, dev) in [
        (format!("{}.0/24", d.a), "gw"),
        (format!("{}.0/24", d.b), "up"),
    ] {
        let r = find(&routes, &p).unwrap_or_else(|| panic!("route-show lacks {p}: {routes:?}"));
        assert_eq!(r["kind"], "connected", "{r}");
        assert_eq!(r["dev"], dev, "{r}");
        assert!(r["via"].is_null(), "{r}");
    }
    let r = find(&routes, &format!("{far}.0/24"))
        .unwrap_or_else(|| panic!("route-show lacks the static route: {routes:?}"));
    assert_eq!(r["kind"], "static", "{r}");
    assert_eq!(r["via"], ghost.as_str(), "{r}");

    let target = format!("{far}.1");
    // Host unreachable through the SNAT uplink: router_host_unreachable_snat.

    // del-route withdraws it: network unreachable again.
    lab.ctl_ok(&["del-route", &format!("{far}.0/24")]);
    let routes = json_array(lab.ctl_json(&["route-show"]), "route-show");
    assert!(
        find(&routes, &format!("{far}.0/24")).is_none(),
        "{routes:?}"
    );
    assert_eq!(routes.len(), 2, "{routes:?}");
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(5), || {
        last = ping_text(&lab, &c1.ns, &["-c", "1", "-W", "1", &target]);
        last.contains("Destination Net Unreachable")
    });
    assert!(ok, "after del-route: {last}\n{}", diag(&lab));
    lab.ctl_err(&["del-route", &format!("{far}.0/24")]);
}

/// A next hop behind the SNAT uplink that never answers ARP: the inside
/// host hears host unreachable from its gateway after the ARP retries
/// (~3 s), and the drop counts on the interface the packet arrived on.
#[test]
fn router_host_unreachable_snat() {
    let mut lab = Lab::with_daemon();
    let d = docker_config(&mut lab);
    assert_ping(&lab, &d.c2, &d.srv.ip);
    let far = net(&lab, 50);
    let ghost = format!("{}.99", d.b);
    lab.ctl_ok(&["add-route", &format!("{far}.0/24"), "via", &ghost]);
    let target = format!("{far}.1");
    let au0 = drop_count(&lab, "gw", "arp_unresolved");
    let t0 = Instant::now();
    let mut last = String::new();
    let got = wait_until(Duration::from_secs(7), || {
        last = ping_text(&lab, &d.c2.ns, &["-c", "1", "-W", "1", &target]);
        last.contains("Destination Host Unreachable")
    });
    let took = t0.elapsed();
    assert!(
        got && last.contains(&format!("From {}", d.gw_ip)),
        "no host unreachable for {target} (next hop {ghost}) within {took:?}: {last}\n{}",
        diag(&lab)
    );
    assert!(
        drop_count(&lab, "gw", "arp_unresolved") > au0,
        "{}",
        diag(&lab)
    );
    let arp = json_array(lab.ctl_json(&["arp-show"]), "arp-show");
    if let Some(e) = arp.iter().find(|e| e["ip"] == ghost.as_str()) {
        assert_ne!(e["state"], "reachable", "{e}");
    }
    // The router never resolves its own address.
    assert!(
        arp.iter().all(|e| e["ip"] != d.up_ip.as_str()),
        "arp-show has the router's own address {}: {arp:?}",
        d.up_ip
    );
}

/// Router on a stick: one bridge, hosts in access VLANs 10 and 20, a rif
/// in each VLAN; hosts ping across the VLANs.
#[test]
fn router_inter_vlan() {
    let mut lab = Lab::with_daemon();
    let n10 = net(&lab, 10);
    let n20 = net(&lab, 20);
    lab.add_br("br0", &[]);
    lab.ctl_ok(&[
        "add-rif",
        "r10",
        "--br",
        "br0",
        "--vlan",
        "10",
        "--addr",
        &format!("{n10}.1/24"),
    ]);
    lab.ctl_ok(&[
        "add-rif",
        "r20",
        "--br",
        "br0",
        "--vlan",
        "20",
        "--addr",
        &format!("{n20}.1/24"),
    ]);
    let mut hosts = Vec::new();
    for (name, vid, n) in [
        ("a10", "10", &n10),
        ("b10", "10", &n10),
        ("a20", "20", &n20),
    ] {
        let i = if name.starts_with('a') { 2 } else { 3 };
        let h = routed_host(
            &mut lab,
            "br0",
            name,
            &format!("{n}.{i}/24"),
            Some(&format!("{n}.1")),
        );
        lab.ctl_ok(&["set-port", name, "--access", vid]);
        hosts.push(h);
    }
    let rifs = json_array(lab.ctl_json(&["rif-show"]), "rif-show");
    for (name, vid) in [("r10", 10), ("r20", 20)] {
        let r = rifs
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("rif-show lacks {name}: {rifs:?}"));
        assert_eq!(r["vlan"], vid, "{r}");
        assert_eq!(r["bridge"], "br0", "{r}");
    }
    assert_ping(&lab, &hosts[0], &format!("{n10}.1"));
    assert_ping(&lab, &hosts[2], &format!("{n20}.1"));
    for (a, b) in [(0, 2), (2, 0), (1, 2), (0, 1)] {
        assert_ping(&lab, &hosts[a], &hosts[b].ip);
    }
    // A routed packet loses one TTL hop; a bridged one does not.
    let out = ping_text(&lab, &hosts[0].ns, &["-c", "1", "-W", "2", &hosts[2].ip]);
    assert!(
        out.contains("ttl=63"),
        "routed reply should have TTL 63: {out}"
    );
    let out = ping_text(&lab, &hosts[0].ns, &["-c", "1", "-W", "2", &hosts[1].ip]);
    assert!(
        out.contains("ttl=64"),
        "same-VLAN reply should have TTL 64: {out}"
    );

    // Host unreachable without SNAT on the way: a static route via a
    // next hop in VLAN 20 that never answers ARP.
    let far = net(&lab, 50);
    lab.ctl_ok(&[
        "add-route",
        &format!("{far}.0/24"),
        "via",
        &format!("{n20}.99"),
    ]);
    let unresolved = |lab: &Lab| {
        drop_count(lab, "r10", "arp_unresolved") + drop_count(lab, "r20", "arp_unresolved")
    };
    let au0 = unresolved(&lab);
    let t0 = Instant::now();
    let mut last = String::new();
    let got = wait_until(Duration::from_secs(7), || {
        last = ping_text(
            &lab,
            &hosts[0].ns,
            &["-c", "1", "-W", "1", &format!("{far}.1")],
        );
        last.contains("Destination Host Unreachable")
    });
    assert!(
        got && last.contains(&format!("From {n10}.1")),
        "no host unreachable within {:?}: {last}\n{}",
        t0.elapsed(),
        diag(&lab)
    );
    assert!(unresolved(&lab) > au0, "{}", diag(&lab));
}

/// A TUN router interface in a namespace: connected, `dev` and `via`
/// routes through it, `del-route`, and `del-rif` removing the device.
#[test]
fn router_tun_rif() {
    let mut lab = Lab::with_daemon();
    let a = net(&lab, 1);
    let t = net(&lab, 8);
    let dev_net = net(&lab, 9);
    let via_net = net(&lab, 10);
    lab.add_br("br0", &[]);
    lab.ctl_ok(&[
        "add-rif",
        "gw",
        "--br",
        "br0",
        "--addr",
        &format!("{a}.1/24"),
    ]);
    let c1 = routed_host(
        &mut lab,
        "br0",
        "c1",
        &format!("{a}.2/24"),
        Some(&format!("{a}.1")),
    );
    let vpn = lab.add_netns("vpn");
    lab.ctl_ok(&[
        "add-rif",
        "vpn",
        "--type",
        "tun",
        "--netns",
        &vpn,
        "--ifname",
        "tun0",
        "--addr",
        &format!("{t}.1/24"),
    ]);
    assert!(
        wait_until(Duration::from_secs(5), || lab.link_exists(&vpn, "tun0")),
        "tun0 did not appear in {vpn}\n{}",
        diag(&lab)
    );
    let r = json_array(lab.ctl_json(&["rif-show"]), "rif-show")
        .into_iter()
        .find(|r| r["name"] == "vpn")
        .expect("rif-show lists vpn");
    assert_eq!(r["type"], "tun", "{r}");
    assert_eq!(r["netns"], vpn.as_str(), "{r}");
    assert_eq!(r["ifname"], "tun0", "{r}");
    assert_eq!(r["addr"], format!("{t}.1/24"), "{r}");

    lab.ns_ok(
        &vpn,
        &["ip", "addr", "add", &format!("{t}.2/24"), "dev", "tun0"],
    );
    lab.ns_ok(&vpn, &["ip", "link", "set", "tun0", "up"]);
    lab.ns_ok(
        &vpn,
        &["ip", "route", "add", &format!("{a}.0/24"), "dev", "tun0"],
    );
    lab.ns_ok(
        &vpn,
        &["ip", "addr", "add", &format!("{dev_net}.1/32"), "dev", "lo"],
    );
    lab.ns_ok(
        &vpn,
        &["ip", "addr", "add", &format!("{via_net}.1/32"), "dev", "lo"],
    );

    let vpn_host = Host {
        ns: vpn.clone(),
        port: "vpn".into(),
        ifname: "tun0".into(),
        ip: format!("{t}.2"),
        mac: String::new(),
    };
    assert_ping(&lab, &c1, &format!("{t}.2"));
    assert_ping(&lab, &vpn_host, &c1.ip);
    assert_ping(&lab, &vpn_host, &format!("{a}.1"));
    assert_ping(&lab, &c1, &format!("{t}.1"));

    // Not routed yet: network unreachable.
    let out = ping_text(
        &lab,
        &c1.ns,
        &["-c", "1", "-W", "2", &format!("{dev_net}.1")],
    );
    assert!(out.contains("Destination Net Unreachable"), "{out}");

    lab.ctl_ok(&["add-route", &format!("{dev_net}.0/24"), "dev", "vpn"]);
    lab.ctl_ok(&[
        "add-route",
        &format!("{via_net}.0/24"),
        "via",
        &format!("{t}.2"),
    ]);
    let routes = json_array(lab.ctl_json(&["route-show"]), "route-show");
    let find = |routes: &[Value], p: &str| routes.iter().find(|r| r["prefix"] == p).cloned();
    let r = find(&routes, &format!("{dev_net}.0/24")).expect("dev route listed");
    assert_eq!(
        (r["kind"].as_str(), r["dev"].as_str()),
        (Some("static"), Some("vpn")),
        "{r}"
    );
    assert!(r["via"].is_null(), "{r}");
    let r = find(&routes, &format!("{via_net}.0/24")).expect("via route listed");
    assert_eq!(r["via"], format!("{t}.2"), "{r}");
    let r = find(&routes, &format!("{t}.0/24")).expect("connected tun route listed");
    assert_eq!(
        (r["kind"].as_str(), r["dev"].as_str()),
        (Some("connected"), Some("vpn")),
        "{r}"
    );

    assert_ping(&lab, &c1, &format!("{dev_net}.1"));
    assert_ping(&lab, &c1, &format!("{via_net}.1"));

    lab.ctl_ok(&["del-route", &format!("{dev_net}.0/24")]);
    lab.ctl_ok(&["del-route", &format!("{via_net}.0/24")]);
    for dst in [format!("{dev_net}.1"), format!("{via_net}.1")] {
        assert!(
            !lab.ping_once(&c1, &dst),
            "{dst} still reachable after del-route"
        );
        let out = ping_text(&lab, &c1.ns, &["-c", "1", "-W", "2", &dst]);
        assert!(out.contains("Destination Net Unreachable"), "{dst}: {out}");
    }

    // del-rif removes the TUN the daemon created, and its connected route.
    lab.ctl_ok(&["del-rif", "vpn"]);
    assert!(
        wait_until(Duration::from_secs(5), || !lab.link_exists(&vpn, "tun0")),
        "tun0 still in {vpn} after del-rif"
    );
    let rifs = json_array(lab.ctl_json(&["rif-show"]), "rif-show");
    assert!(rifs.iter().all(|r| r["name"] != "vpn"), "{rifs:?}");
    let routes = json_array(lab.ctl_json(&["route-show"]), "route-show");
    assert!(find(&routes, &format!("{t}.0/24")).is_none(), "{routes:?}");
    assert!(!lab.ping_once(&c1, &format!("{t}.2")));
}

/// Sorted copies of a JSON array, for order-independent comparison.
fn sorted(v: Value) -> Vec<String> {
    let mut a: Vec<String> = json_array(v, "listing")
        .iter()
        .map(Value::to_string)
        .collect();
    a.sort();
    a
}

/// `save` writes the router configuration; a daemon started from that file
/// has the same rifs, routes and SNAT rules and routes through SNAT again.
#[test]
fn router_save_restore() {
    let mut lab = Lab::new();
    let cfg = lab.path("vswitch.toml");
    let cfg_s = cfg.to_str().unwrap().to_string();
    lab.start_daemon(&["--config", &cfg_s]);
    let d = docker_config(&mut lab);
    let far = format!("{}.0/24", net(&lab, 50));
    lab.ctl_ok(&["add-route", &far, "via", &format!("{}.99", d.b)]);
    assert_ping(&lab, &d.c1, &d.srv.ip);
    lab.ctl_ok(&["save"]);
    let text = fs::read_to_string(&cfg).expect("save wrote the --config file");
    toml::from_str::<toml::Value>(&text).expect("saved config is TOML");

    let rifs = sorted(lab.ctl_json(&["rif-show"]));
    let routes = sorted(lab.ctl_json(&["route-show"]));
    let snat = sorted(lab.ctl_json(&["snat-show"]));
    assert_eq!(snat.len(), 1, "{snat:?}");

    let st = lab.stop_daemon();
    assert!(st.success(), "vswitchd exit: {st}");
    lab.start_daemon(&["--config", &cfg_s]);

    let a = format!("{}.1", d.a);
    configure_host(&lab, &d.c1.ns, &format!("{}/24", d.c1.ip), Some(&a));
    configure_host(&lab, &d.c2.ns, &format!("{}/24", d.c2.ip), Some(&a));
    configure_host(&lab, &d.srv.ns, &format!("{}/24", d.srv.ip), None);
    // rif-show's `up` may lag the TAPs coming back; compare once settled.
    let mut now = Vec::new();
    let same = wait_until(Duration::from_secs(5), || {
        now = sorted(lab.ctl_json(&["rif-show"]));
        now == rifs
    });
    assert!(
        same,
        "rif-show after restart:\n{now:#?}\nbefore:\n{rifs:#?}\nconfig:\n{text}"
    );
    assert_eq!(
        sorted(lab.ctl_json(&["route-show"])),
        routes,
        "config:\n{text}"
    );
    assert_eq!(
        sorted(lab.ctl_json(&["snat-show"])),
        snat,
        "config:\n{text}"
    );

    assert_ping(&lab, &d.c1, &d.srv.ip);
    let tcp_srv = py_bg(&lab, &d.srv.ns, TCP_SERVER, &[&d.srv.ip, "8080", "1"]);
    let r = py_ok(&d.c1.ns, TCP_CLIENT, &[&d.srv.ip, "8080"], CMD_TIMEOUT);
    assert!(r.starts_with("ok echo:hi"), "{r}\n{}", diag(&lab));
    let (_, out) = tcp_srv.finish(Duration::from_secs(10));
    assert_eq!(
        peers(&out)[0].0,
        d.up_ip,
        "not masqueraded after restart: {out}"
    );
}

/// Malformed frames to a MAC over AF_PACKET: `IFACE DST_MAC COUNT SECONDS`.
/// IPv4 with bad version, short IHL, total length too large or smaller than
/// the header, bad checksum; truncated IPv4 and ARP; ARP with bad
/// hardware/protocol sizes; random garbage behind the IPv4 ethertype.
/// Prints `{"sent": N}`.
const MALFORMED_FLOOD: &str = r#"
import errno, json, os, socket, struct, sys, time
ifc, dst, count, secs = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifc, 0))
src = s.getsockname()[4]
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xffff)
    t += t >> 16
    return ~t & 0xffff
def ip(ver_ihl=0x45, tot=48, fix=True, ttl=64):
    h = bytearray(struct.pack("!BBHHHBBH4s4s", ver_ihl, 0, tot, 1, 0, ttl, 17, 0,
                              bytes([10, 1, 1, 2]), bytes([10, 2, 2, 2])))
    if fix:
        h[10:12] = struct.pack("!H", csum(bytes(h)))
    return bytes(h) + b"\0" * 28
eth = dst + src
kinds = [
    eth + b"\x08\x00" + ip(ver_ihl=0x65),
    eth + b"\x08\x00" + ip(ver_ihl=0x43),
    eth + b"\x08\x00" + ip(tot=1400),
    eth + b"\x08\x00" + ip(tot=12),
    eth + b"\x08\x00" + ip(fix=False),
    eth + b"\x08\x00" + b"\x45\x00\x00",
    eth + b"\x08\x06" + b"\x00\x01\x08\x00\x06",
    eth + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 7, 3, 1) + b"\0" * 20,
]
sent = 0
end = time.time() + secs
while sent < count and time.time() < end:
    if sent % 9 == 8:
        f = eth + b"\x08\x00" + os.urandom(8 + sent % 50)
    else:
        f = kinds[sent % 8]
    try:
        s.send(f)
        sent += 1
    except OSError as e:
        if e.errno == errno.ENOBUFS:
            time.sleep(0.001)
        else:
            raise
    if sent % 500 == 0:
        time.sleep(0.01)
print(json.dumps({"sent": sent}))
"#;

/// A bounded flood of malformed IPv4 and ARP to the router's MAC: the
/// daemon survives, counts `malformed` drops on the rif, its memory stays
/// bounded, and routing still works.
#[test]
fn router_malformed_flood() {
    let mut lab = Lab::with_daemon();
    let d = docker_config(&mut lab);
    assert_ping(&lab, &d.c1, &d.srv.ip);
    let gw_mac = json_array(lab.ctl_json(&["rif-show"]), "rif-show")
        .into_iter()
        .find(|r| r["name"] == "gw")
        .and_then(|r| r["mac"].as_str().map(str::to_string))
        .expect("gw mac");
    let pid = lab.daemon_pid();
    let rss0 = status_kib(pid, "VmRSS:");
    let m0 = drop_count(&lab, "gw", "malformed");

    let out = py_ok(
        &d.c1.ns,
        MALFORMED_FLOOD,
        &["eth0", &gw_mac, "20000", "10"],
        Duration::from_secs(30),
    );
    let v: Value = serde_json::from_str(&out).expect("flood JSON");
    let sent = v["sent"].as_u64().expect("sent");
    assert!(sent >= 5000, "flood sent only {sent} frames");

    // Let the daemon drain its queues.
    std::thread::sleep(Duration::from_millis(500));
    let alive = lab
        .daemon
        .as_mut()
        .map(|d| d.child.try_wait().expect("try_wait").is_none())
        .unwrap_or(false);
    assert!(alive, "vswitchd died under the flood\n{}", lab.daemon_log());
    let m1 = drop_count(&lab, "gw", "malformed");
    assert!(
        m1 - m0 >= sent / 2,
        "sent {sent} malformed frames, gw counted {} malformed\n{}",
        m1 - m0,
        diag(&lab)
    );
    let rss1 = status_kib(pid, "VmRSS:");
    eprintln!(
        "flood: {sent} frames sent, {} counted malformed on gw; VmRSS {rss0} -> {rss1} KiB",
        m1 - m0
    );
    assert!(
        rss1 < rss0 + 64 * 1024,
        "vswitchd RSS grew from {rss0} KiB to {rss1} KiB"
    );
    assert_ping(&lab, &d.c1, &d.srv.ip);
    assert_ping(&lab, &d.c2, &d.srv.ip);
}

/// RFC 5780 NAT behaviour discovery (coturn's `turnutils_natdiscovery`
/// against `turnserver` with two addresses): endpoint-independent mapping,
/// address(-and-port)-dependent filtering, hairpinning.
#[test]
fn router_nat_behaviour_rfc5780() {
    if Command::new("turnserver")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("turnserver not installed (apt-get install coturn; scripts/test.sh does)");
    }
    let mut lab = Lab::with_daemon();
    let d = docker_config(&mut lab);
    let srv = &d.srv;
    let alt = format!("{}.3", d.b);
    lab.ns_ok(
        &srv.ns,
        &["ip", "addr", "add", &format!("{alt}/24"), "dev", "eth0"],
    );
    assert_ping(&lab, &d.c1, &srv.ip);
    assert_ping(&lab, &d.c1, &alt);

    let log = lab.path("turnserver.log");
    let pidf = lab.path("turnserver.pid");
    let mut turn = lab.ns_spawn(
        &srv.ns,
        &[
            "turnserver",
            "-n",
            "--listening-ip",
            &srv.ip,
            "--listening-ip",
            &alt,
            "--listening-port",
            "3478",
            "--no-auth",
            "--no-tls",
            "--no-dtls",
            "--no-tcp",
            "--no-cli",
            "--log-file",
            log.to_str().unwrap(),
            "--simple-log",
            "--pidfile",
            pidf.to_str().unwrap(),
        ],
        false,
    );
    let listening = wait_until(Duration::from_secs(10), || {
        let o = lab.ns_exec(&srv.ns, &["ss", "-Hlun"]);
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        s.contains(&format!("{}:3478", srv.ip))
            && s.contains(&format!("{alt}:3478"))
            && s.contains(&format!("{}:3479", srv.ip))
    });
    assert!(
        listening,
        "turnserver not listening on both addresses and the alternative port\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );

    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        &d.c1.ns,
        "turnutils_natdiscovery",
        "-m",
        "-f",
        "-H",
        &srv.ip,
    ]);
    let o = output_timeout(c, Duration::from_secs(60));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = terminate(&mut turn.child, Duration::from_secs(3));
    eprintln!("turnutils_natdiscovery -m -f -H {}:\n{text}", srv.ip);
    let ctx = || {
        format!(
            "turnutils_natdiscovery output:\n{text}\n--- turnserver log ---\n{}\n{}",
            tail(&fs::read_to_string(&log).unwrap_or_default(), 2000),
            diag(&lab)
        )
    };
    let lower = text.to_lowercase();
    assert!(
        lower.contains("nat with endpoint independent mapping"),
        "mapping is not endpoint-independent\n{}",
        ctx()
    );
    assert!(
        lower.contains("nat with address and port dependent filtering")
            || lower.contains("nat with address dependent filtering"),
        "filtering is not address(-and-port)-dependent\n{}",
        ctx()
    );
    assert!(
        !lower.contains("nat with endpoint independent filtering"),
        "filtering is endpoint-independent\n{}",
        ctx()
    );
    // coturn reports a hairpinned request arriving on the first socket as
    // "Received a request (maybe a successful hairpinning)"; without
    // hairpinning that receive times out.
    assert!(
        lower.contains("received a request (maybe a successful hairpinning)"),
        "hairpinning not observed\n{}",
        ctx()
    );
    assert!(
        lower.contains("rfc 5780 response"),
        "turnserver did not answer as an RFC 5780 server\n{}",
        ctx()
    );
}
