//! Helpers the router tests share: the docker0 topology, hosts on routed
//! bridges, and the python3 socket scripts the tests run in namespaces.

#![allow(dead_code)]

use crate::common::*;
use serde_json::Value;
use std::process::{Command, Output};
use std::time::Duration;

/// Subnet `K` of this lab: `10.N.K` (first three octets).
pub fn net(lab: &Lab, k: u32) -> String {
    let n = lab.net.rsplit('.').next().expect("lab net has octets");
    format!("10.{n}.{k}")
}

/// Waits for `eth0` in `ns`, gives it `cidr`, brings it up and, with `gw`,
/// adds a default route through it (inside the namespace only).
pub fn configure_host(lab: &Lab, ns: &str, cidr: &str, gw: Option<&str>) {
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
pub fn routed_host(lab: &mut Lab, br: &str, name: &str, cidr: &str, gw: Option<&str>) -> Host {
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
pub fn diag(lab: &Lab) -> String {
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
pub fn py(ns: &str, script: &str, args: &[&str], timeout: Duration) -> Output {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "python3", "-c", script])
        .args(args);
    output_timeout(c, timeout)
}

/// [`py`] that must succeed; returns its stdout, trimmed.
pub fn py_ok(ns: &str, script: &str, args: &[&str], timeout: Duration) -> String {
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
pub fn py_bg(lab: &Lab, ns: &str, script: &str, args: &[&str]) -> Bg {
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

/// The stdout of a ping (any exit status).
pub fn ping_text(lab: &Lab, ns: &str, args: &[&str]) -> String {
    let mut a = vec!["ping", "-n"];
    a.extend_from_slice(args);
    let o = lab.ns_exec(ns, &a);
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn assert_ping(lab: &Lab, from: &Host, to: &str) {
    assert!(
        lab.ping(from, to),
        "{} ({}) cannot ping {to}\n{}",
        from.ns,
        from.ip,
        diag(lab)
    );
}

pub fn json_array(v: Value, what: &str) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        v => panic!("{what} --json is not an array: {v}"),
    }
}

pub fn drop_count(lab: &Lab, port: &str, reason: &str) -> u64 {
    lab.port_stats(port)["drops"][reason].as_u64().unwrap_or(0)
}

/// TCP server: `IP PORT N` accepts N connections, answers `echo:` + what
/// it got, and prints each peer as `IP:PORT`.
pub const TCP_SERVER: &str = r#"
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
pub const TCP_CLIENT: &str = r#"
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
pub const UDP_SERVER: &str = r#"
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
pub const UDP_CLIENT: &str = r#"
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

/// ICMP echo with a chosen identifier over a raw socket: `IP IDENT`;
/// prints `reply` when an echo reply with that identifier comes back.
pub const ICMP_ECHO_ID: &str = r#"
import socket, struct, sys, time
dst, ident = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
def csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xffff)
    t += t >> 16
    return ~t & 0xffff
got = False
for seq in range(1, 6):
    p = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"vswitch-router-test"
    p = p[:2] + struct.pack("!H", csum(p)) + p[4:]
    s.sendto(p, (dst, 0))
    end = time.time() + 1
    while not got and time.time() < end:
        s.settimeout(max(0.01, end - time.time()))
        try:
            d, a = s.recvfrom(2000)
        except (socket.timeout, TimeoutError):
            break
        h = (d[0] & 15) * 4
        t, _, _, i, _ = struct.unpack("!BBHHH", d[h:h + 8])
        got = t == 0 and i == ident and a[0] == dst
    if got:
        break
print("reply" if got else "none")
"#;

/// Prints `SRC TTL` of the first ICMP echo request to arrive (raw socket),
/// after `ready`; `none` after 10 s.
pub const ECHO_TTL_SNIFFER: &str = r#"
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(0.5)
print("ready", flush=True)
end = time.time() + 10
r = "none"
while time.time() < end:
    try:
        d, a = s.recvfrom(2000)
    except (socket.timeout, TimeoutError):
        continue
    h = (d[0] & 15) * 4
    if d[h] == 8:
        r = "%s %d" % (a[0], d[8])
        break
print(r, flush=True)
"#;

/// Inside end of the filtering check: `IP PORT SPORT SECONDS` binds SPORT,
/// sends `hi` to IP:PORT, prints `ready`, then prints every datagram it
/// receives for SECONDS as `got PAYLOAD IP:PORT`, then `end`.
pub const UDP_INSIDE_LISTEN: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[3])))
s.sendto(b"hi", (sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
s.settimeout(0.2)
end = time.time() + float(sys.argv[4])
while time.time() < end:
    try:
        d, a = s.recvfrom(100)
        print("got %s %s:%d" % (d.decode(), a[0], a[1]), flush=True)
    except (socket.timeout, TimeoutError, ConnectionRefusedError):
        pass
print("end", flush=True)
"#;

/// Outside end: `IP PORT OTHERPORT` waits for one datagram on PORT, then
/// sends `bad` from OTHERPORT (same address, other port: must be filtered)
/// and `good` from PORT (the flow's own remote: must pass) to the sender;
/// prints the sender as `IP:PORT`.
pub const UDP_OUTSIDE_PROBE: &str = r#"
import socket, sys, time
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
a.bind((sys.argv[1], int(sys.argv[2])))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
b.bind((sys.argv[1], int(sys.argv[3])))
a.settimeout(15)
print("ready", flush=True)
d, peer = a.recvfrom(100)
for _ in range(3):
    b.sendto(b"bad", peer)
time.sleep(0.5)
for _ in range(3):
    a.sendto(b"good", peer)
print("%s:%d" % peer, flush=True)
"#;

/// TCP listener: `PORT SECONDS`; prints `ready`, then `accepted IP:PORT`
/// or `none`.
pub const TCP_LISTEN_ONCE: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(1)
s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
try:
    c, a = s.accept()
    print("accepted %s:%d" % a, flush=True)
except (socket.timeout, TimeoutError):
    print("none", flush=True)
"#;

/// The docker0 pattern: hosts c1, c2 on bridge `brin` behind rif `gw`
/// (`A.1/24`), a server `srv` on bridge `brout` with rif `up` (`B.1/24`),
/// masquerade out of `up`. c1 and c2 route through gw; srv knows only its
/// own subnet.
pub struct Docker {
    pub c1: Host,
    pub c2: Host,
    pub srv: Host,
    /// Inside subnet, first three octets.
    pub a: String,
    /// Outside subnet, first three octets.
    pub b: String,
    pub gw_ip: String,
    pub up_ip: String,
}

pub fn docker_config(lab: &mut Lab) -> Docker {
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
        a,
        b,
        gw_ip,
        up_ip,
    }
}

/// Parses `IP:PORT` lines.
pub fn peers(out: &str) -> Vec<(String, u16)> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (ip, port) = l.trim().rsplit_once(':').expect("IP:PORT line");
            (ip.to_string(), port.parse().expect("port"))
        })
        .collect()
}
