//! Soak: mixed traffic through every feature (bridging, VLANs, spanning
//! tree, VXLAN to a kernel VTEP, inter-VLAN routing, masquerade) while ports
//! are added and removed and the configuration changes, for `SOAK_SECS`
//! seconds (30 by default; `scripts/soak.sh MINUTES` runs it longer). It
//! ends with no ping lost, only explained drops in the counters, and RSS
//! flat after the warm-up (issue 13).

mod common;
mod router_support;
mod vxlan_support;

use common::*;
use router_support::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn loss_of(bg: Bg, what: &str) -> (f64, String) {
    let (_, out) = bg.finish(Duration::from_secs(60));
    let loss = out
        .split(',')
        .find_map(|p| p.trim().strip_suffix("% packet loss"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{what}: no loss figure: {out}"));
    (loss, out)
}

/// Drops that the churn explains: a temporary port deleted while frames
/// were on their way to it, frames for a port not yet forwarding, and
/// flooding with nowhere else to go.
const EXPLAINED: &[&str] = &["port_down", "egress_down", "no_egress", "stp_blocking"];

#[test]
fn soak_mixed_traffic_with_churn() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut v = vxlan_support::vx_lab();
    let k2 = vxlan_support::kernel_vtep(&mut v, 2);
    vxlan_support::add_vxlan(&v.lab, "192.0.2.2", &[]);
    let lab = &mut v.lab;
    let h1 = v.h1.clone();
    // Spanning tree on the bridge (short timers), VLAN 10 host h3, rifs on
    // VLAN 1 and 10 of br0, an outside bridge with srv behind masquerade.
    lab.ctl_ok(&[
        "set-br",
        "br0",
        "--stp",
        "on",
        "--forward-delay",
        "4",
        "--max-age",
        "6",
        "--hello",
        "1",
    ]);
    let a = lab.ip(0);
    let a = a.rsplit_once('.').map(|(p, _)| p.to_string()).expect("net");
    let (b, c) = (net(lab, 60), net(lab, 61));
    lab.ctl_ok(&[
        "add-rif",
        "gw",
        "--br",
        "br0",
        "--addr",
        &format!("{a}.254/24"),
    ]);
    lab.ctl_ok(&[
        "add-rif",
        "gw10",
        "--br",
        "br0",
        "--vlan",
        "10",
        "--addr",
        &format!("{c}.1/24"),
    ]);
    lab.add_br("brout", &[]);
    lab.ctl_ok(&[
        "add-rif",
        "up",
        "--br",
        "brout",
        "--addr",
        &format!("{b}.1/24"),
    ]);
    lab.ctl_ok(&["add-snat", "--out", "up"]);
    let srv = routed_host(lab, "brout", "srv", &format!("{b}.2/24"), None);
    let h3 = routed_host(
        lab,
        "br0",
        "h3",
        &format!("{c}.2/24"),
        Some(&format!("{c}.1")),
    );
    lab.ctl_ok(&["set-port", "h3", "--access", "10"]);
    lab.ns_ok(
        &h1.ns,
        &[
            "ip",
            "route",
            "add",
            &format!("{b}.0/24"),
            "via",
            &format!("{a}.254"),
        ],
    );
    lab.ns_ok(
        &h1.ns,
        &[
            "ip",
            "route",
            "add",
            &format!("{c}.0/24"),
            "via",
            &format!("{a}.254"),
        ],
    );
    for (from, to) in [(&h1, &k2.ip), (&h1, &srv.ip), (&h3, &h1.ip)] {
        assert!(
            wait_until(Duration::from_secs(30), || lab.ping_once(from, to)),
            "{} -> {to} before the soak\n{}",
            from.ns,
            diag(lab)
        );
    }
    let tmp_ns = lab.add_netns("tmp");
    let cfg = lab.path("soak.toml");

    let n = (secs * 20).to_string();
    let pings = [
        (
            "vxlan h1->k2",
            lab.ns_spawn(
                &h1.ns,
                &["ping", "-n", "-q", "-i", "0.05", "-c", &n, &k2.ip],
                true,
            ),
        ),
        (
            "masquerade h1->srv",
            lab.ns_spawn(
                &h1.ns,
                &["ping", "-n", "-q", "-i", "0.05", "-c", &n, &srv.ip],
                true,
            ),
        ),
        (
            "inter-vlan h3->h1",
            lab.ns_spawn(
                &h3.ns,
                &["ping", "-n", "-q", "-i", "0.05", "-c", &n, &h1.ip],
                true,
            ),
        ),
    ];
    let pid = lab.daemon_pid();
    let start = Instant::now();
    let mut rss = Vec::new();
    let mut round = 0u32;
    while start.elapsed() < Duration::from_secs(secs) {
        round += 1;
        match round % 6 {
            // A port comes, carries traffic, changes VLAN, goes.
            0 => {
                lab.ctl_ok(&[
                    "add-port", "br0", "tmp", "--type", "tap", "--netns", &tmp_ns, "--ifname",
                    "eth0",
                ]);
                assert!(wait_until(Duration::from_secs(5), || lab.link_exists(&tmp_ns, "eth0")));
                lab.ns_ok(
                    &tmp_ns,
                    &["ip", "addr", "add", &format!("{a}.77/24"), "dev", "eth0"],
                );
                lab.ns_ok(&tmp_ns, &["ip", "link", "set", "eth0", "up"]);
                let _ = lab.ns_exec(
                    &tmp_ns,
                    &[
                        "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", &h1.ip,
                    ],
                );
                lab.ctl_ok(&["set-port", "tmp", "--trunk", "10,20"]);
                lab.ctl_ok(&["del-port", "tmp"]);
            }
            1 => {
                lab.ctl_ok(&[
                    "fdb-add",
                    "br0",
                    "02:00:00:00:77:01",
                    "vx",
                    "--vtep",
                    "192.0.2.9",
                ]);
                lab.ctl_ok(&["fdb-add", "br0", "02:00:00:00:77:02", "h3", "--vlan", "10"]);
                lab.ctl_ok(&["fdb-del", "br0", "02:00:00:00:77:01"]);
                lab.ctl_ok(&["fdb-del", "br0", "02:00:00:00:77:02"]);
            }
            2 => {
                let far = format!("{}.0/24", net(lab, 77));
                lab.ctl_ok(&["add-route", &far, "via", &srv.ip]);
                lab.ctl_ok(&["del-route", &far]);
                lab.ctl_ok(&["set-port", "vx", "--remote-add", "192.0.2.3"]);
                lab.ctl_ok(&["set-port", "vx", "--remote-del", "192.0.2.3"]);
            }
            3 => {
                lab.ctl_ok(&["save", cfg.to_str().unwrap()]);
                let _ = lab.ctl_json(&["nat-show"]);
                let _ = lab.ctl_json(&["fdb-show", "br0"]);
            }
            4 => {
                assert!(lab.iperf_tcp(&h1, &srv) > 100_000, "TCP through masquerade");
            }
            _ => {
                assert!(lab.iperf_tcp(&k2, &h1) > 100_000, "TCP over VXLAN");
            }
        }
        rss.push(status_kib(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut report = Vec::new();
    for (what, bg) in pings {
        let (loss, out) = loss_of(bg, what);
        report.push(format!("{what}: {loss}% lost"));
        assert!(
            loss == 0.0,
            "{what} lost {loss}% during the soak: {out}\n{}",
            diag(lab)
        );
    }
    // Drops by reason over all ports.
    let mut drops: BTreeMap<String, u64> = BTreeMap::new();
    for p in lab
        .ctl_json(&["stats"])
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        if let Some(d) = p["drops"].as_object() {
            for (r, c) in d {
                let c = c.as_u64().unwrap_or(0);
                if c > 0 {
                    *drops
                        .entry(format!("{}:{r}", p["port"].as_str().unwrap_or("?")))
                        .or_default() += c;
                }
            }
        }
    }
    let unexplained: Vec<_> = drops
        .iter()
        .filter(|(k, _)| !EXPLAINED.iter().any(|r| k.ends_with(&format!(":{r}"))))
        .collect();
    // RSS flat after the warm-up (the first third).
    let warm = &rss[rss.len() / 3..];
    let (lo, hi) = (
        warm.iter().copied().min().unwrap_or(0),
        warm.iter().copied().max().unwrap_or(0),
    );
    eprintln!(
        "soak-report: {secs} s, {round} churn rounds; {}; drops {drops:?}; VmRSS after warm-up {lo}-{hi} KiB",
        report.join(", ")
    );
    assert!(unexplained.is_empty(), "unexplained drops: {unexplained:?}");
    assert!(
        hi - lo < 4 * 1024,
        "RSS grew after the warm-up: {lo} -> {hi} KiB ({rss:?})"
    );
    let _: Value = lab.ctl_json(&["show"]);
}
