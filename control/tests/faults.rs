//! Faults under load (issue 13): a TAP device, a veth and a whole host
//! namespace removed while frames stream toward them, and a VXLAN underlay
//! address removed and restored while traffic runs. The daemon lives, the
//! port goes down, the other hosts keep talking, and the VXLAN port comes
//! back by itself.

mod common;
mod vxlan_support;

use common::*;
use std::time::Duration;

/// Streams frames from `from` to `to_mac` (about `secs` seconds) in the
/// background.
fn stream(lab: &Lab, from: &Host, to_mac: &str, secs: &str) -> Bg {
    let script = helper("sendframes.py");
    lab.ns_spawn(
        &from.ns,
        &[
            "python3",
            &script,
            &from.ifname,
            "--count",
            "10000000",
            "--src",
            &from.mac,
            "--dst",
            to_mac,
            "--max-seconds",
            secs,
        ],
        true,
    )
}

/// Pings `to` from `from` every 20 ms, `n` times, in the background.
fn pinger(lab: &Lab, from: &Host, to: &str, n: &str) -> Bg {
    lab.ns_spawn(
        &from.ns,
        &["ping", "-n", "-q", "-i", "0.02", "-c", n, to],
        true,
    )
}

fn loss_of(bg: Bg) -> f64 {
    let (_, out) = bg.finish(Duration::from_secs(30));
    out.split(',')
        .find_map(|p| p.trim().strip_suffix("% packet loss"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no loss figure in ping output: {out}"))
}

fn alive(lab: &mut Lab) {
    let ok = lab
        .daemon
        .as_mut()
        .is_some_and(|d| d.child.try_wait().expect("try_wait").is_none());
    assert!(ok, "vswitchd died\n{}", lab.daemon_log());
}

/// Removes h3's device (by `remove`) while h1 streams at it and h1 pings
/// h2; checks the port went down and h1-h2 barely noticed.
fn removed_under_load(lab: &mut Lab, h: [&Host; 3], remove: impl FnOnce(&Lab)) {
    let [h1, h2, h3] = h;
    lab.assert_all_ping(&[h1, h2, h3]);
    let load = stream(lab, h1, &h3.mac, "4");
    let ping = pinger(lab, h2, &h1.ip, "150");
    std::thread::sleep(Duration::from_millis(800));
    remove(lab);
    assert!(
        wait_until(Duration::from_secs(5), || lab.port_info("br0", &h3.port)
            ["up"]
            == false),
        "{} still up: {}",
        h3.port,
        lab.port_info("br0", &h3.port)
    );
    drop(load);
    let loss = loss_of(ping);
    alive(lab);
    assert!(
        loss <= 5.0,
        "h2 -> h1 lost {loss}% while {} went away",
        h3.port
    );
    lab.assert_all_ping(&[h1, h2]);
    lab.ctl_ok(&["del-port", &h3.port]);
    lab.assert_all_ping(&[h1, h2]);
}

#[test]
fn tap_deleted_under_load() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    let h3 = lab.tap_host("br0", 3);
    let ns = h3.ns.clone();
    removed_under_load(&mut lab, [&h1, &h2, &h3], |lab| {
        lab.ns_ok(&ns, &["ip", "link", "del", "eth0"]);
    });
}

#[test]
fn veth_deleted_under_load() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.afpacket_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    let h3 = lab.afpacket_host("br0", 3);
    let ns = h3.ns.clone();
    removed_under_load(&mut lab, [&h1, &h2, &h3], |lab| {
        lab.ns_ok(&ns, &["ip", "link", "del", "eth0"]);
    });
}

/// A switch-side veth set down (its socket reports ENETDOWN, not final:
/// the interface is still there) and deleted a little later, when the
/// socket has nothing more to report: the port still goes down.
#[test]
fn veth_set_down_then_deleted() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h3 = lab.afpacket_host("br0", 3);
    lab.assert_all_ping(&[&h1, &h3]);
    let ifname = lab.port_info("br0", &h3.port)["ifname"]
        .as_str()
        .expect("ifname")
        .to_string();
    let sw = lab.sw.clone();
    lab.ns_ok(&sw, &["ip", "link", "set", &ifname, "down"]);
    std::thread::sleep(Duration::from_millis(500));
    lab.ns_ok(&sw, &["ip", "link", "del", &ifname]);
    assert!(
        wait_until(Duration::from_secs(5), || lab.port_info("br0", &h3.port)
            ["up"]
            == false),
        "{} still up: {}",
        h3.port,
        lab.port_info("br0", &h3.port)
    );
    alive(&mut lab);
}

#[test]
fn namespace_deleted_under_load() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.afpacket_host("br0", 2);
    let h3 = lab.tap_host("br0", 3);
    let ns = h3.ns.clone();
    removed_under_load(&mut lab, [&h1, &h2, &h3], |_| {
        run_ok("ip", &["netns", "del", &ns]);
    });
}

/// The underlay address goes away for 2 s while h1 streams to the kernel
/// VTEP's host and pings it: the VXLAN port goes down, and up again by
/// itself when the address is back; traffic resumes with no command.
#[test]
fn vxlan_underlay_address_removed_under_load() {
    let mut v = vxlan_support::vx_lab();
    let k2 = vxlan_support::kernel_vtep(&mut v, 2);
    vxlan_support::add_vxlan(&v.lab, "192.0.2.2", &[]);
    assert!(v.lab.ping(&v.h1, &k2.ip));
    let load = stream(&v.lab, &v.h1, &k2.mac, "6");
    let sw = v.lab.sw.clone();
    let addr = |op: &str| run_ok("ip", &["-n", &sw, "addr", op, "192.0.2.1/24", "dev", "u0"]);
    std::thread::sleep(Duration::from_millis(500));
    addr("del");
    assert!(
        wait_until(Duration::from_secs(5), || v.lab.port_info("br0", "vx")
            ["up"]
            == false),
        "vx still up without its address"
    );
    std::thread::sleep(Duration::from_secs(1));
    addr("add");
    assert!(
        wait_until(Duration::from_secs(5), || v.lab.port_info("br0", "vx")
            ["up"]
            == true),
        "vx did not come back by itself"
    );
    drop(load);
    alive(&mut v.lab);
    assert!(
        v.lab.ping(&v.h1, &k2.ip),
        "h1 -> k2 after the address came back"
    );
    assert!(
        v.lab.ping(&k2, &v.h1.ip),
        "k2 -> h1 after the address came back"
    );
}
