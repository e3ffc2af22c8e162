//! vswitchd / vswitchctl behaviour: JSON listings, errors, the control
//! socket, a second daemon, signals.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// list-br, list-ports and show print the documented JSON fields.
#[test]
fn listings_json_fields() {
    let mut lab = Lab::with_daemon();
    assert_eq!(lab.ctl_json(&["list-br"]), Value::Array(vec![]));
    lab.add_br("br0", &[]);
    lab.add_br("br1", &["--fdb-max", "50", "--ageing", "60"]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.afpacket_host("br0", 2);

    let brs = lab.ctl_json(&["list-br"]);
    let brs = brs.as_array().expect("list-br array");
    assert_eq!(brs.len(), 2, "{brs:?}");
    let br0 = brs.iter().find(|b| b["name"] == "br0").expect("br0 listed");
    assert_eq!(br0["stp"], false, "{br0}");
    assert_eq!(br0["ageing_s"], 300, "{br0}");
    assert_eq!(br0["fdb_max"], Value::Null, "{br0}");
    let mut ports: Vec<&str> = br0["ports"]
        .as_array()
        .expect("ports array")
        .iter()
        .map(|p| p.as_str().expect("port names"))
        .collect();
    ports.sort();
    assert_eq!(ports, ["p1", "p2"], "{br0}");
    let br1 = brs.iter().find(|b| b["name"] == "br1").expect("br1 listed");
    assert_eq!(br1["fdb_max"], 50, "{br1}");
    assert_eq!(br1["ageing_s"], 60, "{br1}");
    assert_eq!(br1["ports"], Value::Array(vec![]), "{br1}");

    let p1 = lab.port_info("br0", "p1");
    assert_eq!(p1["bridge"], "br0", "{p1}");
    assert_eq!(p1["type"], "tap", "{p1}");
    assert_eq!(p1["ifname"], "eth0", "{p1}");
    assert_eq!(p1["netns"], h1.ns.as_str(), "{p1}");
    assert_eq!(p1["up"], true, "{p1}");
    assert_eq!(p1["vlan_mode"], "access", "{p1}");
    assert_eq!(p1["access_vlan"], 1, "{p1}");
    assert_eq!(p1["trunk_vlans"], Value::Array(vec![]), "{p1}");
    assert_eq!(p1["native_vlan"], Value::Null, "{p1}");
    assert_eq!(
        p1["mac"].as_str().map(str::to_lowercase).as_deref(),
        Some(h1.mac.as_str()),
        "{p1}"
    );
    assert_eq!(p1["mtu"], 1500, "{p1}");

    let p2 = lab.port_info("br0", "p2");
    assert_eq!(p2["type"], "afpacket", "{p2}");
    assert_eq!(p2["ifname"], "s2", "{p2}");
    assert_eq!(p2["up"], true, "{p2}");
    assert!(p2["mac"].is_string(), "{p2}");
    assert!(p2["mtu"].is_u64(), "{p2}");
    let _ = h2;

    // Without a bridge: every port.
    let all = lab.ctl_json(&["list-ports"]);
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
    lab.ctl_err(&["list-ports", "nosuchbr"]);

    let show = lab.ctl_json(&["show"]);
    let bridges = show["bridges"].as_array().expect("show.bridges array");
    let b0 = bridges
        .iter()
        .find(|b| b["name"] == "br0")
        .expect("br0 in show");
    assert_eq!(b0["ageing_s"], 300, "{b0}");
    let ports = b0["ports"].as_array().expect("show: bridge ports array");
    assert_eq!(ports.len(), 2, "{b0}");
    assert!(
        ports.iter().all(|p| p.is_object() && p.get("up").is_some()),
        "show: a bridge's ports are list-ports objects: {b0}"
    );

    // Human output works too and names the things.
    let text = lab.ctl_ok(&["show"]);
    assert!(text.contains("br0") && text.contains("p1"), "{text}");
    let text = lab.ctl_ok(&["list-ports", "br0"]);
    assert!(text.contains("p1") && text.contains("p2"), "{text}");
}

/// The router sections of `show --json` exist (empty) even without routing.
#[test]
fn show_json_has_all_sections() {
    let lab = Lab::with_daemon();
    let show = lab.ctl_json(&["show"]);
    for k in ["bridges", "rifs", "routes", "snat"] {
        assert!(show[k].is_array(), "show --json lacks array {k:?}: {show}");
    }
}

/// `--json` may come before or after the command; VSWITCH_SOCKET sets the socket.
#[test]
fn json_flag_position_and_env_socket() {
    let lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let before = lab.ctl_ok(&["--json", "list-br"]);
    let after = lab.ctl_ok(&["list-br", "--json"]);
    let b: Value = serde_json::from_str(&before).expect("JSON before");
    let a: Value = serde_json::from_str(&after).expect("JSON after");
    assert_eq!(a, b);
    let f1: Value = serde_json::from_str(&lab.ctl_ok(&["fdb-show", "br0", "--json"])).unwrap();
    let f2: Value = serde_json::from_str(&lab.ctl_ok(&["--json", "fdb-show", "br0"])).unwrap();
    assert_eq!(f1, f2);
    // --socket after the command, too.
    let mut c = Command::new(VSWITCHCTL);
    c.args(["list-br", "--json", "--socket"]).arg(&lab.sock);
    let o = output_timeout(c, CMD_TIMEOUT);
    assert!(
        o.status.success(),
        "{}",
        show_output("--socket after command", &o)
    );

    let mut c = Command::new(VSWITCHCTL);
    c.args(["--json", "list-br"])
        .env("VSWITCH_SOCKET", &lab.sock);
    let o = output_timeout(c, CMD_TIMEOUT);
    assert!(o.status.success(), "{}", show_output("VSWITCH_SOCKET", &o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON via VSWITCH_SOCKET");
    assert_eq!(v[0]["name"], "br0");
}

/// Every failure exits non-zero with `error:` first on stderr.
#[test]
fn errors_are_reported() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);

    lab.ctl_err(&["add-br", "br0"]); // exists
    lab.ctl_err(&["del-br", "nosuchbr"]);
    lab.ctl_err(&["set-br", "nosuchbr", "--ageing", "10"]);
    lab.ctl_err(&["add-port", "nosuchbr", "px", "--type", "tap"]);
    lab.ctl_err(&["list-ports", "nosuchbr"]);
    // Port name in use (on this or another bridge).
    lab.ctl_err(&["add-port", "br0", "p1", "--type", "tap"]);
    lab.add_br("br1", &[]);
    lab.ctl_err(&["add-port", "br1", "p1", "--type", "tap"]);
    lab.ctl_err(&["del-port", "nosuchport"]);
    // Bad MAC, bad type, missing interface, missing namespace.
    lab.ctl_err(&["add-port", "br0", "px", "--type", "tap", "--mac", "nope"]);
    lab.ctl_err(&["add-port", "br0", "px", "--type", "bogus"]);
    lab.ctl_err(&[
        "add-port",
        "br0",
        "px",
        "--type",
        "afpacket",
        "--ifname",
        "nosuchif0",
    ]);
    lab.ctl_err(&[
        "add-port",
        "br0",
        "px",
        "--type",
        "tap",
        "--netns",
        &lab.ns_name("nosuchns"),
    ]);
    lab.ctl_err(&["no-such-command"]);
    // A failed add-port left nothing behind.
    let ports = lab.ctl_json(&["list-ports", "br0"]);
    assert_eq!(ports.as_array().map(Vec::len), Some(1), "{ports}");
    assert!(
        !lab.link_exists(&lab.sw, "px"),
        "failed add-port left a TAP behind"
    );
    // The daemon is unharmed and the existing port still works.
    assert!(lab.link_exists(&h1.ns, "eth0"));

    // Daemon not running.
    let mut c = Command::new(VSWITCHCTL);
    c.arg("--socket")
        .arg(lab.path("nonexistent.sock"))
        .arg("list-br");
    let o = output_timeout(c, CMD_TIMEOUT);
    assert!(!o.status.success(), "{}", show_output("no daemon", &o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error:"), "no daemon: stderr {err:?}");
}

/// The control socket is mode 0600.
#[test]
fn socket_mode_0600() {
    let lab = Lab::with_daemon();
    let mode = std::fs::metadata(&lab.sock)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {:o}", mode & 0o777);
}

/// A second daemon on the same socket refuses to start; the first keeps
/// running and serving.
#[test]
fn second_daemon_refused() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let sock = lab.sock.clone();
    let mut c = lab.daemon_command(&sock, &[]);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    let child = lab.adopt(c.spawn().expect("start second vswitchd"));
    let status = wait_exit(child, Duration::from_secs(10));
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    let status = status.expect("second vswitchd did not exit on a socket in use");
    assert!(!status.success(), "second vswitchd exited 0");
    assert!(!err.trim().is_empty(), "second vswitchd gave no message");
    assert!(
        sock.exists(),
        "second vswitchd removed the first one's socket"
    );
    let brs = lab.ctl_json(&["list-br"]);
    assert_eq!(brs[0]["name"], "br0", "first daemon lost state: {brs}");
    let d = lab.daemon.as_mut().unwrap();
    assert!(d.child.try_wait().unwrap().is_none(), "first daemon died");
}

/// A malformed request line gets an error reply; the daemon keeps serving.
#[test]
fn malformed_socket_line() {
    let lab = Lab::with_daemon();
    let mut s = UnixStream::connect(&lab.sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"not json\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).expect("reply line");
    let v: Value = serde_json::from_str(line.trim()).expect("reply is JSON");
    assert_eq!(v["ok"], false, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| !e.is_empty()),
        "reply lacks an error message: {v}"
    );
    // An unknown command on a fresh connection: also an error reply.
    let mut s2 = UnixStream::connect(&lab.sock).expect("connect");
    s2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s2.write_all(b"{\"cmd\":\"frobnicate\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s2).read_line(&mut line).expect("reply line");
    let v: Value = serde_json::from_str(line.trim()).expect("reply is JSON");
    assert_eq!(v["ok"], false, "{v}");
    drop(s);
    // Still serving.
    lab.add_br("br0", &[]);
    assert_eq!(lab.ctl_json(&["list-br"])[0]["name"], "br0");
    // And a well-formed raw request works.
    let mut s3 = UnixStream::connect(&lab.sock).expect("connect");
    s3.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s3.write_all(b"{\"cmd\":\"list-br\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s3).read_line(&mut line).expect("reply line");
    let v: Value = serde_json::from_str(line.trim()).expect("reply is JSON");
    assert_eq!(v["ok"], true, "{v}");
}

fn shutdown_cleans_up(sig: libc::c_int) {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    lab.assert_all_ping(&[&h1, &h2]);
    lab.ctl_ok(&["add-port", "br0", "ct1", "--type", "tap"]);
    assert!(lab.link_exists(&lab.sw, "ct1"));
    let st = lab.stop_daemon_with(sig);
    assert_eq!(
        st.code(),
        Some(0),
        "vswitchd exit status after signal {sig}: {st}"
    );
    assert!(
        !lab.sock.exists(),
        "socket file left behind after signal {sig}"
    );
    assert!(
        !lab.link_exists(&h1.ns, "eth0"),
        "created TAP (eth0 in {}) left behind after shutdown",
        h1.ns
    );
    assert!(
        !lab.link_exists(&h2.ns, "eth0"),
        "created TAP left in {}",
        h2.ns
    );
    assert!(
        !lab.link_exists(&lab.sw, "ct1"),
        "created TAP ct1 left behind"
    );
    // vswitchctl now reports the daemon is not running.
    lab.ctl_err(&["list-br"]);
}

#[test]
fn sigterm_clean_shutdown() {
    shutdown_cleans_up(libc::SIGTERM);
}

#[test]
fn sigint_clean_shutdown() {
    shutdown_cleans_up(libc::SIGINT);
}

/// del-port and del-br remove ports and bridges (and the TAPs they made).
#[test]
fn del_port_and_del_br() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    lab.add_br("br1", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    let h3 = lab.afpacket_host("br1", 3);
    lab.assert_all_ping(&[&h1, &h2]);
    // Bridges are separate: no path from br0 to br1.
    assert!(!lab.ping_once(&h1, &h3.ip), "h1 on br0 reached h3 on br1");

    lab.ctl_ok(&["del-port", "p2"]);
    assert!(!lab.link_exists(&h2.ns, "eth0"), "del-port left h2's TAP");
    let ports = lab.ctl_json(&["list-ports", "br0"]);
    assert_eq!(ports.as_array().map(Vec::len), Some(1), "{ports}");
    assert_eq!(ports[0]["name"], "p1");

    lab.ctl_ok(&["del-br", "br0"]);
    let brs = lab.ctl_json(&["list-br"]);
    assert_eq!(brs.as_array().map(Vec::len), Some(1), "{brs}");
    assert_eq!(brs[0]["name"], "br1");
    assert!(!lab.link_exists(&h1.ns, "eth0"), "del-br left p1's TAP");
    lab.ctl_err(&["del-port", "p1"]);
    // An AF_PACKET interface survives del-br: it was only attached.
    lab.ctl_ok(&["del-br", "br1"]);
    assert!(
        lab.link_exists(&lab.sw, "s3"),
        "del-br deleted an attached veth"
    );
    assert_eq!(lab.ctl_json(&["list-br"]), Value::Array(vec![]));
    // Names are free again.
    lab.add_br("br0", &[]);
    lab.ctl_ok(&[
        "add-port", "br0", "p3", "--type", "afpacket", "--ifname", "s3",
    ]);
}

/// After a crash (SIGKILL) leaves a stale socket file, a new daemon starts
/// on the same path.
#[test]
fn restart_after_crash_reuses_socket() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let mut d = lab.daemon.take().unwrap();
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    lab.start_daemon(&[]);
    assert_eq!(lab.ctl_json(&["list-br"]), Value::Array(vec![]));
    lab.add_br("br0", &[]);
}
