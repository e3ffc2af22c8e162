//! Lab features (issue 15): link-local groups relayed with
//! `set-br --group-fwd-mask`, and storm control with `set-port
//! --storm-limit`.

mod common;

use common::*;
use std::time::Duration;

const LLDP: &str = "01:80:c2:00:00:0e";

/// LLDP frames (01:80:C2:00:00:0E, ethertype 0x88cc) from h1 are dropped as
/// `link_local` by default; with bit 14 of the mask they cross the bridge;
/// the mask is saved; bits 0 and 1 are refused.
#[test]
fn group_fwd_mask_relays_lldp() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    let send = |lab: &Lab| {
        lab.send_frames(
            &h1,
            &[
                "--count",
                "20",
                "--src",
                &h1.mac,
                "--dst",
                LLDP,
                "--ethertype",
                "0x88cc",
            ],
        )
    };
    let sn = lab.sniffer(&h2, "2", &["--dst", LLDP]);
    assert_eq!(send(&lab), 20);
    assert_eq!(lab.sniffed(sn), 0, "LLDP crossed without the mask");
    assert_eq!(lab.drops("p1", "link_local"), 20);

    lab.ctl_ok(&["set-br", "br0", "--group-fwd-mask", "0x4000"]);
    assert_eq!(lab.ctl_json(&["list-br"])[0]["group_fwd_mask"], "0x4000");
    let sn = lab.sniffer(&h2, "2", &["--dst", LLDP]);
    assert_eq!(send(&lab), 20);
    assert_eq!(lab.sniffed(sn), 20, "LLDP did not cross with the mask");
    assert_eq!(lab.drops("p1", "link_local"), 20);

    for bad in ["0x0001", "0x0002", "0x10000", "lldp"] {
        let err = lab.ctl_err(&["set-br", "br0", "--group-fwd-mask", bad]);
        assert!(err.contains(bad) || err.contains("bits 0"), "{bad}: {err}");
    }
    let cfg = lab.path("saved.toml");
    lab.ctl_ok(&["save", cfg.to_str().unwrap()]);
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("group_fwd_mask = 16384"), "{text}");
}

/// 5000 broadcast frames in about a second from a port limited to 1000 a
/// second: the others get about 1000 (plus the burst), the excess is
/// counted as `storm_limit`, and known unicast (a ping) is never limited.
#[test]
fn storm_limit_caps_broadcast() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    lab.assert_all_ping(&[&h1, &h2]);
    lab.ctl_ok(&["set-port", "p1", "--storm-limit", "1000"]);
    assert_eq!(lab.port_info("br0", "p1")["storm_limit"], 1000);
    let ping = lab.ns_spawn(
        &h1.ns,
        &["ping", "-n", "-q", "-i", "0.05", "-c", "40", &h2.ip],
        true,
    );
    let sn = lab.sniffer(&h2, "3", &["--src", &h1.mac, "--dst", "ff:ff:ff:ff:ff:ff"]);
    let start = std::time::Instant::now();
    let sent = lab.send_frames(
        &h1,
        &[
            "--count",
            "5000",
            "--src",
            &h1.mac,
            "--interval",
            "0.0002",
            "--max-seconds",
            "2",
        ],
    );
    let secs = start.elapsed().as_secs_f64();
    let got = lab.sniffed(sn);
    let limited = lab.drops("p1", "storm_limit");
    let (st, text) = ping.finish(Duration::from_secs(20));
    eprintln!("storm: {sent} sent in {secs:.2} s, {got} crossed, {limited} limited");
    assert!(
        st.success() && text.contains(" 0% packet loss"),
        "unicast was limited: {text}"
    );
    let expected = 100.0 + 1000.0 * secs;
    assert!(
        (got as f64) <= expected * 1.2 && (got as f64) >= expected.min(sent as f64) * 0.5,
        "{got} broadcast frames crossed in {secs:.2} s at a limit of 1000/s"
    );
    assert_eq!(
        got + limited,
        sent,
        "every frame either crossed or was counted"
    );
    // Off again.
    lab.ctl_ok(&["set-port", "p1", "--storm-limit", "0"]);
    assert!(lab.port_info("br0", "p1")["storm_limit"].is_null());
}
