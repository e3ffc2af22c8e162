//! Port forwarding (DNAT) through the router, in the docker0 topology:
//! `add-dnat` makes a server inside reachable from outside through the
//! outside address (the server sees the client's real address), from
//! inside through the same address (hairpin), for TCP and UDP; `del-dnat`
//! makes the port the router's again (TCP reset, port unreachable); `save`
//! keeps the rules.
//!
//! The helpers are those of `router.rs` (same topology, same scripts).

mod common;

use common::*;
use serde_json::{json, Value};
use std::fs;
use std::process::{Command, Output};
use std::time::Duration;

/// Subnet `K` of this lab: `10.N.K` (first three octets).
fn net(lab: &Lab, k: u32) -> String {
    let n = lab.net.rsplit('.').next().expect("lab net has octets");
    format!("10.{n}.{k}")
}

/// Waits for `eth0` in `ns`, gives it `cidr`, brings it up and, with `gw`,
/// adds a default route through it (inside the namespace only).
fn configure_host(lab: &Lab, ns: &str, cidr: &str, gw: Option<&str>) {
    assert!(
        wait_until(Duration::from_secs(5), || lab.link_exists(ns, "eth0")),
        "eth0 did not appear in {ns}"
    );
    lab.ns_ok(ns, &["ip", "addr", "add", cidr, "dev", "eth0"]);
    lab.ns_ok(ns, &["ip", "link", "set", "eth0", "up"]);
    if let Some(gw) = gw {
        lab.ns_ok(ns, &["ip", "route", "add", "default", "via", gw]);
    }
}

/// Host `name` (namespace `{prefix}{name}`) on a daemon-created TAP port
/// `name` of `br`, with address `cidr` and optionally a default gateway.
fn routed_host(lab: &mut Lab, br: &str, name: &str, cidr: &str, gw: Option<&str>) -> Host {
    let ns = lab.add_netns(name);
    lab.ctl_ok(&[
        "add-port", br, name, "--type", "tap", "--netns", &ns, "--ifname", "eth0",
    ]);
    configure_host(lab, &ns, cidr, gw);
    Host {
        mac: lab.mac_of(&ns, "eth0"),
        ns,
        port: name.to_string(),
        ifname: "eth0".into(),
        ip: cidr.split('/').next().expect("cidr").to_string(),
    }
}

/// The router's state and the daemon log, for assertion messages.
fn diag(lab: &Lab) -> String {
    let mut s = String::new();
    for what in ["stats", "rif-show", "route-show", "arp-show", "nat-show"] {
        let o = lab.ctl(&["--json", what]);
        s.push_str(&format!(
            "--- {what} ---\n{}{}\n",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    s.push_str("--- daemon log (tail) ---\n");
    s.push_str(tail(&lab.daemon_log(), 3000));
    s
}

/// Runs a python3 script (`python3 -c SCRIPT ARGS...`) in `ns`.
fn py(ns: &str, script: &str, args: &[&str], timeout: Duration) -> Output {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "python3", "-c", script])
        .args(args);
    output_timeout(c, timeout)
}

/// [`py`] that must succeed; returns its stdout, trimmed.
fn py_ok(ns: &str, script: &str, args: &[&str], timeout: Duration) -> String {
    let o = py(ns, script, args, timeout);
    assert!(
        o.status.success(),
        "{}",
        show_output(&format!("[{ns}] python3 {}", args.join(" ")), &o)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Starts a python3 script in the background with stdout piped; waits for
/// its first line, which must be `ready`.
fn py_bg(lab: &Lab, ns: &str, script: &str, args: &[&str]) -> Bg {
    let mut a = vec!["python3", "-c", script];
    a.extend_from_slice(args);
    let mut bg = lab.ns_spawn(ns, &a, true);
    let line = bg.read_line(Duration::from_secs(10));
    assert_eq!(
        line.trim(),
        "ready",
        "[{ns}] python3 {} did not start",
        args.join(" ")
    );
    bg
}

fn json_array(v: Value, what: &str) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        v => panic!("{what} --json is not an array: {v}"),
    }
}

/// TCP server: `IP PORT N` accepts N connections, answers `echo:` + what
/// it got, and prints each peer as `IP:PORT`.
const TCP_SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
s.settimeout(20)
print("ready", flush=True)
for _ in range(int(sys.argv[3])):
    c, a = s.accept()
    c.settimeout(5)
    d = c.recv(100)
    c.sendall(b"echo:" + d)
    c.close()
    print("%s:%d" % a, flush=True)
"#;

/// TCP client: `IP PORT [SPORT]`; prints `ok echo:hi LOCAL_PORT`,
/// `refused` or `timeout`.
const TCP_CLIENT: &str = r#"
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[4]) if len(sys.argv) > 4 else 5)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if len(sys.argv) > 3 and sys.argv[3] != "0":
    s.bind(("0.0.0.0", int(sys.argv[3])))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.sendall(b"hi")
    d = s.recv(100)
    print("ok", d.decode(), s.getsockname()[1])
except ConnectionRefusedError:
    print("refused")
except (socket.timeout, TimeoutError):
    print("timeout")
"#;

/// UDP server: `IP PORT N` answers N datagrams with `echo:` + payload and
/// prints each peer as `IP:PORT`.
const UDP_SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(20)
print("ready", flush=True)
seen = []
while len(seen) < int(sys.argv[3]):
    d, a = s.recvfrom(100)
    s.sendto(b"echo:" + d, a)
    if a not in seen:
        seen.append(a)
        print("%s:%d" % a, flush=True)
"#;

/// UDP client: `IP PORT [SPORT]` on a connected socket, three tries;
/// prints `ok echo:hi`, `refused` (ICMP port unreachable) or `timeout`.
const UDP_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if len(sys.argv) > 3 and sys.argv[3] != "0":
    s.bind(("0.0.0.0", int(sys.argv[3])))
s.connect((sys.argv[1], int(sys.argv[2])))
s.settimeout(1.5)
r = "timeout"
for _ in range(3):
    try:
        s.send(b"hi")
        r = "ok " + s.recv(100).decode()
        break
    except ConnectionRefusedError:
        r = "refused"
        break
    except (socket.timeout, TimeoutError):
        pass
print(r)
"#;

/// The docker0 pattern: hosts c1, c2 on bridge `brin` behind rif `gw`
/// (`A.1/24`), a server `srv` on bridge `brout` with rif `up` (`B.1/24`),
/// masquerade out of `up`. c1 and c2 route through gw; srv knows only its
/// own subnet.
struct Docker {
    c1: Host,
    c2: Host,
    srv: Host,
    gw_ip: String,
    up_ip: String,
}

fn docker_config(lab: &mut Lab) -> Docker {
    let a = net(lab, 1);
    let b = net(lab, 2);
    let gw_ip = format!("{a}.1");
    let up_ip = format!("{b}.1");
    lab.add_br("brin", &[]);
    lab.add_br("brout", &[]);
    lab.ctl_ok(&[
        "add-rif",
        "gw",
        "--br",
        "brin",
        "--addr",
        &format!("{gw_ip}/24"),
    ]);
    lab.ctl_ok(&[
        "add-rif",
        "up",
        "--br",
        "brout",
        "--addr",
        &format!("{up_ip}/24"),
    ]);
    lab.ctl_ok(&["add-snat", "--out", "up"]);
    let c1 = routed_host(lab, "brin", "c1", &format!("{a}.2/24"), Some(&gw_ip));
    let c2 = routed_host(lab, "brin", "c2", &format!("{a}.3/24"), Some(&gw_ip));
    let srv = routed_host(lab, "brout", "srv", &format!("{b}.2/24"), None);
    Docker {
        c1,
        c2,
        srv,
        gw_ip,
        up_ip,
    }
}

/// Parses `IP:PORT` lines.
fn peers(out: &str) -> Vec<(String, u16)> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (ip, port) = l.trim().rsplit_once(':').expect("IP:PORT line");
            (ip.to_string(), port.parse().expect("port"))
        })
        .collect()
}

/// A TCP connection from `from` to `ip:port`: the client's answer.
fn tcp_try(from: &Host, ip: &str, port: &str) -> String {
    py_ok(&from.ns, TCP_CLIENT, &[ip, port], CMD_TIMEOUT)
}

fn udp_try(from: &Host, ip: &str, port: &str) -> String {
    py_ok(&from.ns, UDP_CLIENT, &[ip, port], CMD_TIMEOUT)
}

#[test]
fn router_dnat_tcp_udp_hairpin_and_removal() {
    let mut lab = Lab::with_daemon();
    let d = docker_config(&mut lab);
    let (c1, c2, srv) = (&d.c1, &d.c2, &d.srv);
    let c1_80 = format!("{}:80", c1.ip);
    let c1_5353 = format!("{}:5353", c1.ip);

    // Before: the port is the router's own; TCP is reset at once.
    assert_eq!(tcp_try(srv, &d.up_ip, "8080"), "refused");

    // Errors.
    let e = lab.ctl_err(&[
        "add-dnat", "--in", "nope", "--proto", "tcp", "--port", "8080", "--to", &c1_80,
    ]);
    assert!(e.contains("no router interface"), "{e}");
    let e = lab.ctl_err(&[
        "add-dnat",
        "--in",
        "up",
        "--proto",
        "tcp",
        "--port",
        "8080",
        "--to",
        "224.0.0.5:80",
    ]);
    assert!(e.contains("unicast"), "{e}");

    lab.ctl_ok(&[
        "add-dnat", "--in", "up", "--proto", "tcp", "--port", "8080", "--to", &c1_80,
    ]);
    lab.ctl_ok(&[
        "add-dnat", "--in", "up", "--proto", "udp", "--port", "5353", "--to", &c1.ip,
    ]);
    let e = lab.ctl_err(&[
        "add-dnat", "--in", "up", "--proto", "tcp", "--port", "8080", "--to", &c1_80,
    ]);
    assert!(e.contains("already forwarded"), "{e}");
    assert_eq!(
        lab.ctl_json(&["dnat-show"]),
        json!([
            {"in": "up", "proto": "tcp", "port": 8080, "to": c1_80},
            {"in": "up", "proto": "udp", "port": 5353, "to": c1_5353},
        ])
    );
    assert_eq!(
        json_array(lab.ctl_json(&["show"])["dnat"].clone(), "show dnat").len(),
        2
    );
    let table = lab.ctl_ok(&["dnat-show"]);
    assert!(table.contains("8080") && table.contains(&c1_80), "{table}");

    // TCP: srv reaches c1's server through up:8080; the server sees srv's
    // real address. Then c2 through the same address (hairpin): the server
    // sees the outside address.
    let tcp_srv = py_bg(&lab, &c1.ns, TCP_SERVER, &[&c1.ip, "80", "2"]);
    let r = tcp_try(srv, &d.up_ip, "8080");
    assert!(r.starts_with("ok echo:hi"), "{r}\n{}", diag(&lab));
    let r = tcp_try(c2, &d.up_ip, "8080");
    assert!(r.starts_with("ok echo:hi"), "hairpin: {r}\n{}", diag(&lab));
    // Only on the rule's interface and address: the inside gateway's
    // address keeps the port its own.
    assert_eq!(tcp_try(c2, &d.gw_ip, "8080"), "refused");
    let (_, out) = tcp_srv.finish(Duration::from_secs(10));
    let p = peers(&out);
    assert_eq!(p.len(), 2, "{out}");
    assert_eq!(p[0].0, srv.ip, "the server sees the client: {out}");
    assert_eq!(
        p[1].0, d.up_ip,
        "hairpin comes from the outside address: {out}"
    );

    // UDP the same.
    let udp_srv = py_bg(&lab, &c1.ns, UDP_SERVER, &[&c1.ip, "5353", "1"]);
    let r = udp_try(srv, &d.up_ip, "5353");
    assert_eq!(r, "ok echo:hi", "{}", diag(&lab));
    let (_, out) = udp_srv.finish(Duration::from_secs(25));
    assert_eq!(peers(&out)[0].0, srv.ip, "{out}");

    // The flows are listed with the forwarded port as outside endpoint.
    let flows = json_array(lab.ctl_json(&["nat-show"]), "nat-show");
    assert!(
        flows.iter().any(|f| f["inside"] == c1_80.as_str()
            && f["outside"] == format!("{}:8080", d.up_ip).as_str()),
        "{flows:?}"
    );

    // Removed: the router answers for itself again.
    lab.ctl_ok(&["del-dnat", "--in", "up", "--proto", "tcp", "--port", "8080"]);
    lab.ctl_ok(&["del-dnat", "--in", "up", "--proto", "udp", "--port", "5353"]);
    let e = lab.ctl_err(&["del-dnat", "--in", "up", "--proto", "tcp", "--port", "8080"]);
    assert!(e.contains("no port forwarding"), "{e}");
    assert_eq!(lab.ctl_json(&["dnat-show"]), json!([]));
    assert_eq!(tcp_try(srv, &d.up_ip, "8080"), "refused");
    assert_eq!(udp_try(srv, &d.up_ip, "5353"), "refused");
}

/// `save` keeps the rules; a daemon started from the file forwards again.
#[test]
fn router_dnat_save_restore() {
    let mut lab = Lab::new();
    let cfg = lab.path("vswitch.toml");
    let cfg_s = cfg.to_str().unwrap().to_string();
    lab.start_daemon(&["--config", &cfg_s]);
    let d = docker_config(&mut lab);
    let c1_80 = format!("{}:80", d.c1.ip);
    lab.ctl_ok(&[
        "add-dnat", "--in", "up", "--proto", "tcp", "--port", "8080", "--to", &c1_80,
    ]);
    lab.ctl_ok(&["save"]);
    let text = fs::read_to_string(&cfg).expect("save wrote the --config file");
    assert!(text.contains("[[dnat]]"), "{text}");
    let before = lab.ctl_json(&["dnat-show"]);

    let st = lab.stop_daemon();
    assert!(st.success(), "vswitchd exit: {st}");
    lab.start_daemon(&["--config", &cfg_s]);
    assert_eq!(lab.ctl_json(&["dnat-show"]), before, "config:\n{text}");
    configure_host(&lab, &d.c1.ns, &format!("{}/24", d.c1.ip), Some(&d.gw_ip));
    configure_host(&lab, &d.srv.ns, &format!("{}/24", d.srv.ip), None);

    let tcp_srv = py_bg(&lab, &d.c1.ns, TCP_SERVER, &[&d.c1.ip, "80", "1"]);
    let r = tcp_try(&d.srv, &d.up_ip, "8080");
    assert!(r.starts_with("ok echo:hi"), "{r}\n{}", diag(&lab));
    let (_, out) = tcp_srv.finish(Duration::from_secs(10));
    assert_eq!(peers(&out)[0].0, d.srv.ip, "{out}");
}
