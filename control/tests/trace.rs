//! `vswitchctl trace` (issue 15): a frame through the real forwarding
//! decision, step by step, with no side effects.

mod common;

use common::*;
use serde_json::Value;

fn trace(lab: &Lab, args: &[&str]) -> Value {
    let mut a = vec!["trace", "br0"];
    a.extend_from_slice(args);
    lab.ctl_json(&a)
}

fn ports_of(v: &Value) -> Vec<(String, u64, bool)> {
    v["egress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["port"].as_str().unwrap().to_string(),
                e["vlan"].as_u64().unwrap(),
                e["tagged"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn detail(v: &Value, stage: &str) -> String {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stage"] == stage)
        .map(|s| s["detail"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[test]
fn trace_explains_without_side_effects() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    let _h3 = lab.tap_host("br0", 3);
    let _h4 = lab.tap_host("br0", 4);
    lab.ctl_ok(&["set-port", "p3", "--trunk", "10,20", "--native", "1"]);
    lab.ctl_ok(&["set-port", "p4", "--access", "10"]);
    lab.assert_all_ping(&[&h1, &h2]);
    let gw = lab.ip(254);
    lab.ctl_ok(&[
        "add-rif",
        "gw",
        "--br",
        "br0",
        "--addr",
        &format!("{gw}/24"),
    ]);
    let gw_mac = lab.ctl_json(&["rif-show"])[0]["mac"]
        .as_str()
        .unwrap()
        .to_string();
    let fdb0 = lab.fdb("br0");
    let stats0 = lab.ctl_json(&["stats"]);

    // To a learned MAC: the FDB entry and the single egress.
    let v = trace(&lab, &["--in", "p1", "--src", &h1.mac, "--dst", &h2.mac]);
    assert_eq!(v["verdict"], "forward", "{v}");
    assert_eq!(ports_of(&v), vec![("p2".into(), 1, false)], "{v}");
    let f = detail(&v, "fdb");
    assert!(
        f.contains(&h2.mac) && f.contains("p2") && f.contains("learned"),
        "{f}"
    );
    assert!(detail(&v, "vlan").contains("VLAN 1"), "{v}");

    // A VLAN the port does not carry.
    let v = trace(&lab, &["--in", "p3", "--vlan", "30"]);
    assert_eq!(
        (v["verdict"].as_str(), v["drop_reason"].as_str()),
        (Some("drop"), Some("vlan_filtered")),
        "{v}"
    );

    // Broadcast: the flood set with each port's edit.
    let v = trace(&lab, &["--in", "p1", "--src", &h1.mac]);
    assert_eq!(v["verdict"], "flood", "{v}");
    let mut e = ports_of(&v);
    e.sort();
    assert_eq!(
        e,
        vec![
            ("gw".into(), 1, false),
            ("p2".into(), 1, false),
            ("p3".into(), 1, false)
        ],
        "{v}"
    );
    assert!(
        detail(&v, "egress").contains("p4: not (vlan_filtered)"),
        "{v}"
    );
    let v = trace(&lab, &["--in", "p3", "--vlan", "10"]);
    assert_eq!(ports_of(&v), vec![("p4".into(), 10, false)], "{v}");
    assert!(detail(&v, "egress").contains("tag popped"), "{v}");
    let v = trace(&lab, &["--in", "p4", "--src", "02:00:00:00:44:44"]);
    assert_eq!(ports_of(&v), vec![("p3".into(), 10, true)], "{v}");

    // Into the router: no route, local, TTL.
    let base = [
        "--in", "p1", "--src", &h1.mac, "--dst", &gw_mac, "--ip-src", &h1.ip,
    ];
    let mut a = base.to_vec();
    a.extend_from_slice(&["--ip-dst", "10.250.9.9", "--proto", "tcp", "--dport", "443"]);
    let v = trace(&lab, &a);
    assert_eq!(
        (v["verdict"].as_str(), v["drop_reason"].as_str()),
        (Some("drop"), Some("no_route")),
        "{v}"
    );
    let mut a = base.to_vec();
    a.extend_from_slice(&["--ip-dst", &gw, "--proto", "icmp"]);
    assert_eq!(trace(&lab, &a)["verdict"], "local");
    let mut a = base.to_vec();
    a.extend_from_slice(&["--ip-dst", &h2.ip, "--ttl", "1"]);
    let v = trace(&lab, &a);
    assert_eq!(v["drop_reason"], "ttl_exceeded", "{v}");
    let mut a = base.to_vec();
    a.extend_from_slice(&["--ip-dst", &h2.ip]);
    let v = trace(&lab, &a);
    assert_eq!(v["verdict"], "forward", "{v}");
    assert!(detail(&v, "route").contains("connected"), "{v}");
    assert!(detail(&v, "neighbour").contains(&h2.ip), "{v}");

    // A frame given as hex; bad input is an error.
    let hex = format!(
        "{}{}88b5{}",
        "ff".repeat(6),
        h1.mac.replace(':', ""),
        "00".repeat(46)
    );
    assert_eq!(
        trace(&lab, &["--in", "p1", "--hex", &hex])["verdict"],
        "flood"
    );
    assert!(lab
        .ctl_err(&["trace", "br0", "--in", "p1", "--hex", "0"])
        .contains("odd"));
    assert!(lab
        .ctl_err(&["trace", "br0", "--in", "nope"])
        .contains("nope"));
    // The human form.
    let text = lab.ctl_ok(&[
        "trace", "br0", "--in", "p1", "--dst", &h2.mac, "--src", &h1.mac,
    ]);
    assert!(
        text.starts_with("verdict: forward") && text.contains("fdb"),
        "{text}"
    );

    // Nothing happened: no station learned (02:00:00:00:44:44 came only
    // through traces), no counter moved.
    let strip = |f: Vec<Value>| -> Vec<Value> {
        f.into_iter()
            .map(|mut e| {
                e.as_object_mut().unwrap().remove("age_s");
                e
            })
            .collect()
    };
    assert_eq!(strip(fdb0), strip(lab.fdb("br0")));
    assert_eq!(stats0, lab.ctl_json(&["stats"]));
}

/// `trace --live N --port P`: the next N real frames received on P, each
/// with the steps of its decision; one live trace at a time.
#[test]
fn live_trace_records_real_frames() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    lab.assert_all_ping(&[&h1, &h2]);
    let mut bg = lab.ctl_spawn(&["--json", "trace", "--live", "3", "--port", "p1"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(lab
        .ctl_err(&["trace", "--live", "1"])
        .contains("already running"));
    let _ = lab.ping_once(&h1, &h2.ip);
    let _ = lab.ping_once(&h1, &h2.ip);
    let _ = lab.ping_once(&h1, &h2.ip);
    let out = bg.child.stdout.take().expect("stdout");
    let (st, _) = bg.finish(std::time::Duration::from_secs(30));
    assert!(st.success());
    let v: Value = serde_json::from_reader(out).expect("JSON array");
    let recs = v.as_array().expect("array");
    assert_eq!(recs.len(), 3, "{v}");
    for r in recs {
        assert_eq!(r["port"], "p1", "{r}");
        assert!(r["steps"].as_array().is_some_and(|s| !s.is_empty()), "{r}");
        assert!(
            matches!(r["verdict"].as_str(), Some("forward" | "flood")),
            "{r}"
        );
    }
    // Done: another may start.
    assert!(lab
        .ctl_err(&["trace", "--live", "0"])
        .contains("between 1 and 1000"));
}

/// `capture`: a pcap of a TAP port while ping runs, that tcpdump decodes;
/// `-c 10` stops at 10; a trunk port's capture shows the tags.
#[test]
fn capture_writes_pcap_tcpdump_reads() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    lab.assert_all_ping(&[&h1, &h2]);
    let file = lab.path("p1.pcap");
    let f = file.to_str().unwrap().to_string();
    let bg = lab.ctl_spawn(&["capture", "p1", "-c", "10", "-w", &f]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pinger = lab.ns_spawn(
        &h1.ns,
        &["ping", "-n", "-q", "-i", "0.1", "-c", "20", &h2.ip],
        true,
    );
    let (st, _) = bg.finish(std::time::Duration::from_secs(30));
    assert!(st.success(), "capture failed");
    drop(pinger);
    let out = run_ok("tcpdump", &["-nr", &f]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 10, "{out}");
    assert!(
        out.contains("ICMP echo request") && out.contains("ICMP echo reply"),
        "{out}"
    );
    // Tags as on the wire: an AF_PACKET trunk carrying VLAN 5 tagged; what
    // it sends shows the tag.
    let _h3 = lab.afpacket_host("br0", 3);
    lab.ctl_ok(&["set-port", "p1", "--access", "5"]);
    lab.ctl_ok(&["set-port", "p3", "--trunk", "5"]);
    let f2 = lab.path("p3.pcap").to_str().unwrap().to_string();
    let bg = lab.ctl_spawn(&["capture", "p3", "--dir", "tx", "-c", "3", "-w", &f2]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    for _ in 0..5 {
        let _ = lab.ping_once(&h1, &h2.ip);
    }
    let (st, _) = bg.finish(std::time::Duration::from_secs(30));
    assert!(st.success());
    let out = run_ok("tcpdump", &["-enr", &f2]);
    assert!(out.contains("vlan 5"), "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
}

/// A capture whose reader stalls loses capture records, never frames.
#[test]
fn capture_with_a_stalled_reader() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    lab.assert_all_ping(&[&h1, &h2]);
    // A reader that never reads: its pipe fills, then the daemon's queue.
    let stalled = lab.ctl_spawn(&["capture", "p2", "-w", "-"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ping = lab.ns_spawn(
        &h1.ns,
        &["ping", "-n", "-q", "-i", "0.02", "-c", "100", &h2.ip],
        true,
    );
    let bytes = lab.iperf_tcp(&h1, &h2);
    let (_, text) = ping.finish(std::time::Duration::from_secs(30));
    assert!(
        bytes > 100_000_000,
        "TCP with a stalled capture: {bytes} bytes"
    );
    assert!(text.contains(" 0% packet loss"), "{text}");
    drop(stalled);
    // The capture is gone with its client; forwarding goes on.
    lab.assert_all_ping(&[&h1, &h2]);
}
