//! `vswitchd --user`: once the ports of its config are open the daemon runs
//! as an unprivileged user with CAP_NET_ADMIN and CAP_NET_RAW only, and
//! still forwards (issue 13).

mod common;

use common::*;
use std::fs;
use std::time::Duration;

fn status(pid: u32, field: &str) -> String {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("{field} missing"))
}

#[test]
fn unprivileged_daemon_still_forwards() {
    let mut lab = Lab::new();
    lab.add_netns("h1");
    lab.add_netns("h2");
    let cfg = lab.path("vswitch.toml");
    fs::write(
        &cfg,
        format!(
            "[[bridge]]\nname = \"br0\"\n\n[[bridge.port]]\nname = \"p1\"\ntype = \"tap\"\nnetns = \"{}\"\nifname = \"eth0\"\n\n[[bridge.port]]\nname = \"p2\"\ntype = \"tap\"\nnetns = \"{}\"\nifname = \"eth0\"\n",
            lab.ns_name("h1"),
            lab.ns_name("h2")
        ),
    )
    .unwrap();
    lab.start_daemon(&["--config", cfg.to_str().unwrap(), "--user", "nobody"]);
    let pid = lab.daemon_pid();
    // The socket accepts connections just before the drop: wait for it.
    assert!(
        wait_until(Duration::from_secs(5), || status(pid, "Uid:")
            .starts_with("65534")),
        "vswitchd did not become nobody\n{}",
        lab.daemon_log()
    );
    // Every id is nobody's; only CAP_NET_ADMIN (12) and CAP_NET_RAW (13)
    // are left, in every set that matters; no way back.
    let uid = status(pid, "Uid:");
    assert!(uid.split_whitespace().all(|x| x == "65534"), "Uid: {uid}");
    for set in ["CapPrm:", "CapEff:", "CapBnd:"] {
        assert_eq!(status(pid, set), "0000000000003000", "{set}");
    }
    assert_eq!(status(pid, "CapInh:"), "0000000000000000");
    assert_eq!(status(pid, "NoNewPrivs:"), "1");

    let h1 = lab.host_of_port(1);
    let h2 = lab.host_of_port(2);
    lab.assert_all_ping(&[&h1, &h2]);
    assert!(
        lab.iperf_tcp(&h1, &h2) > 1_000_000,
        "TCP through the unprivileged daemon"
    );

    // Control still works, new AF_PACKET ports too (CAP_NET_RAW).
    let h3 = lab.afpacket_host("br0", 3);
    lab.assert_all_ping(&[&h1, &h3]);
    assert!(lab
        .ctl_json(&["stats"])
        .as_array()
        .is_some_and(|a| a.len() == 3));
    // A TAP in another namespace needs CAP_SYS_ADMIN (setns): a clear error.
    lab.add_netns("h4");
    let ns4 = lab.ns_name("h4");
    let err = lab.ctl_err(&[
        "add-port", "br0", "p4", "--type", "tap", "--netns", &ns4, "--ifname", "eth0",
    ]);
    assert!(err.contains("--config"), "{err}");
    assert!(lab.stop_daemon().success(), "{}", lab.daemon_log());
}
