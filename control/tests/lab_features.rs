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

/// Median RTT in ms of `n` pings from `from` to `to` (-i 0.05).
fn ping_stats(lab: &Lab, from: &Host, to: &str, n: &str) -> (f64, f64) {
    let o = lab.ns_exec(
        &from.ns,
        &["ping", "-n", "-i", "0.02", "-c", n, "-W", "1", to],
    );
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let mut rtts: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    rtts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let loss: f64 = text
        .split(',')
        .find_map(|p| p.trim().strip_suffix("% packet loss"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(100.0);
    let median = rtts.get(rtts.len() / 2).copied().unwrap_or(f64::NAN);
    (median, loss)
}

/// Egress impairment on a port: `--delay 20` adds about 20 ms to the RTT,
/// `--loss 10` loses about 10 % of 1000 pings (within statistical bounds),
/// `--rate 10mbit` caps TCP near 10 Mbit/s; all of it off again with 0.
#[test]
fn impairment_delay_loss_rate() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    lab.assert_all_ping(&[&h1, &h2]);
    let (base, _) = ping_stats(&lab, &h1, &h2.ip, "20");

    lab.ctl_ok(&["set-port", "p2", "--delay", "20"]);
    assert_eq!(lab.port_info("br0", "p2")["delay_ms"], 20);
    let (delayed, loss) = ping_stats(&lab, &h1, &h2.ip, "20");
    eprintln!("impair: RTT {base:.2} ms -> {delayed:.2} ms with --delay 20");
    assert!(loss == 0.0, "{loss}% lost with delay only");
    assert!(
        delayed - base > 17.0 && delayed - base < 30.0,
        "RTT {base} -> {delayed} ms with 20 ms delay on one direction"
    );

    lab.ctl_ok(&["set-port", "p2", "--delay", "0", "--loss", "10"]);
    let (_, loss) = ping_stats(&lab, &h1, &h2.ip, "1000");
    let lost = lab.drops("p2", "impair_loss");
    eprintln!("impair: {loss}% of 1000 pings lost with --loss 10 ({lost} counted)");
    // 1000 trials at p = 0.1: the mean is 100, sigma 9.5; 60..140 is >4 sigma.
    assert!((6.0..=14.0).contains(&loss), "{loss}% lost with --loss 10");
    assert!((60..=140).contains(&lost), "{lost} counted as impair_loss");

    lab.ctl_ok(&["set-port", "p2", "--loss", "0", "--rate", "10mbit"]);
    let bytes = lab.iperf_tcp(&h1, &h2);
    let mbit = bytes as f64 * 8.0 / 2.0 / 1e6;
    eprintln!("impair: TCP {mbit:.1} Mbit/s with --rate 10mbit");
    assert!(
        mbit > 4.0 && mbit < 12.5,
        "{mbit} Mbit/s through a 10 Mbit/s port"
    );

    lab.ctl_ok(&["set-port", "p2", "--rate", "0"]);
    let info = lab.port_info("br0", "p2");
    assert!(
        info["rate_bps"].is_null() && info["delay_ms"].is_null(),
        "{info}"
    );
    assert!(
        lab.iperf_tcp(&h1, &h2) > 50_000_000,
        "still limited after --rate 0"
    );
    assert!(lab
        .ctl_err(&["set-port", "p2", "--loss", "101"])
        .contains("percentage"));
    assert!(lab
        .ctl_err(&["set-port", "p2", "--rate", "fast"])
        .contains("rate"));
}
