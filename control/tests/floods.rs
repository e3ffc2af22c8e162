//! Floods the daemon must survive with bounded memory and counted drops,
//! each reporting vswitchd's peak RSS (VmHWM) in a `flood-report:` line
//! (`cargo test --test floods -- --nocapture` shows them): BPDUs at a
//! spanning-tree bridge, VXLAN from spoofed VTEPs, SNAT table exhaustion
//! (existing flows keep working) and packets provoking ICMP errors (the
//! router is no amplifier). Floods are bounded in count and time, and stay
//! inside the test's namespaces (issue 13).

mod common;
mod router_support;
mod vxlan_support;

use common::*;
use router_support::*;
use serde_json::Value;
use std::time::Duration;

/// Checks the daemon is alive, reports its memory, and asserts growth under
/// `max_growth_mib` over `rss0`.
fn report(lab: &mut Lab, name: &str, rss0: u64, sent: u64, max_growth_mib: u64) {
    let alive = lab
        .daemon
        .as_mut()
        .map(|d| d.child.try_wait().expect("try_wait").is_none())
        .unwrap_or(false);
    assert!(
        alive,
        "vswitchd died under the {name} flood\n{}",
        lab.daemon_log()
    );
    let pid = lab.daemon_pid();
    let (rss, hwm) = (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));
    eprintln!(
        "flood-report: {name}: {sent} frames; VmRSS before {rss0} KiB, after {rss} KiB, peak {hwm} KiB"
    );
    assert!(
        rss < rss0 + max_growth_mib * 1024,
        "{name}: RSS grew from {rss0} KiB to {rss} KiB"
    );
}

fn sent_of(out: &str) -> u64 {
    let v: Value = serde_json::from_str(out.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("flood output not JSON ({e}): {out}"));
    v["sent"].as_u64().expect("sent")
}

/// `IFACE COUNT SECONDS`: 802.1D frames to 01:80:C2:00:00:00 from one
/// port: configuration BPDUs with random root and bridge ids, costs, ages
/// and flags, TCNs, RST BPDUs and garbage behind the LLC header.
const BPDU_FLOOD: &str = r#"
import errno, json, os, random, socket, struct, sys, time
ifc, count, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifc, 0))
src = s.getsockname()[4]
rnd = random.Random(7)
def frame(body):
    p = b"\x42\x42\x03" + body
    return bytes([1, 0x80, 0xc2, 0, 0, 0]) + src + struct.pack("!H", len(p)) + p
def config():
    rid = struct.pack("!H", rnd.randrange(65536)) + os.urandom(6)
    bid = struct.pack("!H", rnd.randrange(65536)) + os.urandom(6)
    return struct.pack("!HBBB", 0, rnd.choice([0, 0, 2, 3]), rnd.choice([0, 0, 2]), rnd.randrange(256)) + rid + \
        struct.pack("!I", rnd.randrange(1 << 32)) + bid + struct.pack("!HHHHH",
        rnd.randrange(65536), rnd.randrange(65536), rnd.randrange(65536), rnd.randrange(65536), rnd.randrange(65536))
kinds = [lambda: frame(config()), lambda: frame(struct.pack("!HBB", 0, 0, 0x80)),
         lambda: frame(os.urandom(rnd.randrange(0, 60)))]
sent = 0
end = time.time() + secs
while sent < count and time.time() < end:
    f = kinds[sent % 3]()
    try:
        s.send(f)
        sent += 1
    except OSError as e:
        if e.errno != errno.ENOBUFS:
            raise
        time.sleep(0.001)
    if sent % 500 == 0:
        time.sleep(0.005)
print(json.dumps({"sent": sent}))
"#;

/// 20 000 random BPDUs into a spanning-tree bridge: the daemon lives,
/// memory stays flat, spanning tree still answers, and once the flood stops
/// and the claimed roots age out the hosts talk again.
#[test]
fn bpdu_flood() {
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &["--stp"]);
    lab.ctl_ok(&[
        "set-br",
        "br0",
        "--forward-delay",
        "4",
        "--max-age",
        "6",
        "--hello",
        "1",
    ]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    let h3 = lab.tap_host("br0", 3);
    assert!(
        wait_until(Duration::from_secs(20), || lab.ping_once(&h2, &h3.ip)),
        "no forwarding before the flood"
    );
    let rss0 = status_kib(lab.daemon_pid(), "VmRSS:");
    let out = py_ok(
        &h1.ns,
        BPDU_FLOOD,
        &["eth0", "20000", "15"],
        Duration::from_secs(40),
    );
    let sent = sent_of(&out);
    assert!(sent >= 5000, "sent only {sent}");
    let stp = lab.ctl_json(&["stp-show", "br0"]);
    assert!(stp["bridge_id"].is_string(), "{stp}");
    report(&mut lab, "bpdu", rss0, sent, 32);
    assert!(
        wait_until(Duration::from_secs(40), || lab.ping_once(&h2, &h3.ip)),
        "h2 and h3 never talked again after the BPDU flood: {}",
        lab.ctl_json(&["stp-show", "br0"])
    );
}

/// `SRC_PREFIX16 COUNT SECONDS DST VNI`: VXLAN datagrams to DST:4789 from
/// spoofed sources SRC_PREFIX16.x.y (raw IPv4), each carrying a broadcast
/// frame from a random MAC.
const VXLAN_SPOOF: &str = r#"
import errno, json, os, socket, struct, sys, time
pre, count, secs, dst, vni = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
sent = 0
end = time.time() + secs
while sent < count and time.time() < end:
    srcip = "%s.%d.%d" % (pre, (sent >> 8) & 255, sent & 255)
    inner = b"\xff" * 6 + b"\x02" + os.urandom(5) + b"\x08\x06" + b"\0" * 28
    payload = struct.pack("!BBBBI", 8, 0, 0, 0, vni << 8) + inner
    udp = struct.pack("!HHHH", 50000 + sent % 1000, 4789, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton(srcip), socket.inet_aton(dst))
    try:
        s.sendto(ip + udp, (dst, 0))
        sent += 1
    except OSError as e:
        if e.errno != errno.ENOBUFS:
            raise
        time.sleep(0.001)
    if sent % 500 == 0:
        time.sleep(0.005)
print(json.dumps({"sent": sent}))
"#;

/// VXLAN from 3000 spoofed VTEPs: without `--learning` every datagram is
/// refused and counted; with it the remote table and the FDB stop at their
/// limits; either way memory stays bounded and the real VTEP still works.
#[test]
fn vxlan_spoofed_vtep_flood() {
    let mut v = vxlan_support::vx_lab();
    let k2 = vxlan_support::kernel_vtep(&mut v, 2);
    v.lab.ctl_ok(&["set-br", "br0", "--fdb-max", "500"]);
    for learning in [false, true] {
        let extra: &[&str] = if learning { &["--learning"] } else { &[] };
        vxlan_support::add_vxlan(&v.lab, "192.0.2.2", extra);
        assert!(v.lab.ping(&v.h1, &k2.ip), "before the flood");
        let rss0 = status_kib(v.lab.daemon_pid(), "VmRSS:");
        // The spoofed sources stay inside the underlay namespace's subnet
        // of this lab (10.250.x.y); k2 routes them nowhere but to the switch.
        let out = py_ok(
            &k2.ns,
            VXLAN_SPOOF,
            &[
                "10.250",
                "3000",
                "15",
                vxlan_support::LOCAL,
                vxlan_support::VNI,
            ],
            Duration::from_secs(40),
        );
        let sent = sent_of(&out);
        assert!(sent >= 2000, "sent only {sent}");
        std::thread::sleep(Duration::from_millis(300));
        let info = v.lab.port_info("br0", "vx");
        let learned = info["learned_remotes"].as_array().map_or(0, Vec::len);
        if learning {
            assert!(learned > 0 && learned <= 1024, "{learned} learned remotes");
            let br = &v.lab.ctl_json(&["list-br"])[0];
            assert!(br["fdb_entries"].as_u64().unwrap() <= 500 + 2, "{br}");
        } else {
            assert_eq!(learned, 0, "{info}");
            let refused = vxlan_support::drops_of(&v.lab, "vx", "unknown_vtep");
            assert!(refused >= sent * 9 / 10, "sent {sent}, refused {refused}");
        }
        report(
            &mut v.lab,
            if learning {
                "vxlan-spoof-learning"
            } else {
                "vxlan-spoof"
            },
            rss0,
            sent,
            32,
        );
        assert!(v.lab.ping(&v.h1, &k2.ip), "the real VTEP after the flood");
        v.lab.ctl_ok(&["del-port", "vx"]);
    }
}

/// `DST SECONDS COUNT`: UDP datagrams to DST:9 from COUNT different source
/// ports, as fast as the host sends them.
const UDP_FLOWS: &str = r#"
import errno, json, socket, sys, time
dst, secs, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
socks = []
sent = 0
end = time.time() + secs
for i in range(count):
    if time.time() > end:
        break
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 20000 + i))
    try:
        s.sendto(b"x", (dst, 9))
        sent += 1
    except OSError as e:
        if e.errno not in (errno.ENOBUFS, errno.EPERM, errno.ECONNREFUSED):
            raise
    s.close()
print(json.dumps({"sent": sent}))
"#;

/// The NAT table full (limit 64, 5000 new flows from c2): new flows are
/// refused and counted, a flow that existed before (c1's ping) keeps
/// working throughout, memory stays bounded.
#[test]
fn snat_table_exhaustion_keeps_existing_flows() {
    let mut lab = Lab::with_daemon();
    lab.ctl_ok(&["set-router", "--nat-max-flows", "64"]);
    let d = docker_config(&mut lab);
    assert_ping(&lab, &d.c1, &d.srv.ip);
    let rss0 = status_kib(lab.daemon_pid(), "VmRSS:");
    let ping = lab.ns_spawn(
        &d.c1.ns,
        &["ping", "-n", "-q", "-i", "0.05", "-c", "160", &d.srv.ip],
        true,
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = py_ok(
        &d.c2.ns,
        UDP_FLOWS,
        &[&d.srv.ip, "6", "5000"],
        Duration::from_secs(30),
    );
    let sent = sent_of(&out);
    let (st, text) = ping.finish(Duration::from_secs(30));
    assert!(
        st.success() && text.contains(" 0% packet loss"),
        "the existing flow suffered: {text}\n{}",
        diag(&lab)
    );
    let flows = json_array(lab.ctl_json(&["nat-show"]), "nat-show").len();
    assert!(flows <= 64, "{flows} NAT flows with a limit of 64");
    let full = drop_count(&lab, "c2", "nat_table_full") + drop_count(&lab, "gw", "nat_table_full");
    assert!(full > 0, "no nat_table_full drops\n{}", diag(&lab));
    report(&mut lab, "snat-exhaustion", rss0, sent, 32);
}

/// `DST COUNT SECONDS TTL`: UDP datagrams to DST with the given TTL, while a
/// raw ICMP socket counts the ICMP errors that come back. Prints
/// `{"sent": N, "errors": M}`.
const PROVOKE_ICMP: &str = r#"
import json, socket, sys, time
dst, count, secs, ttl = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
icmp.setblocking(False)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
# No ICMP errors reported on the UDP socket itself (EHOSTUNREACH etc.).
sent = errors = 0
def drain():
    global errors
    while True:
        try:
            p = icmp.recv(2048)
        except BlockingIOError:
            return
        if p[20] in (3, 11):
            errors += 1
end = time.time() + secs
while sent < count and time.time() < end:
    try:
        u.sendto(b"x", (dst, 33434 + sent % 100))
    except OSError:
        pass
    sent += 1
    if sent % 100 == 0:
        drain()
        time.sleep(0.08)
time.sleep(0.5)
drain()
print(json.dumps({"sent": sent, "errors": errors}))
"#;

/// Packets that each provoke an ICMP error (TTL 1 at the router; a
/// destination with no route): the errors coming back are limited to the
/// per-destination burst plus one a second, the rest counted as
/// `icmp_rate_limited`.
#[test]
fn icmp_error_amplification_is_rate_limited() {
    let mut lab = Lab::with_daemon();
    let d = docker_config(&mut lab);
    assert_ping(&lab, &d.c1, &d.srv.ip);
    let rss0 = status_kib(lab.daemon_pid(), "VmRSS:");
    let mut total = 0;
    for (what, dst, ttl) in [
        ("no-route", format!("{}.7", net(&lab, 99)), "64"),
        ("ttl", d.srv.ip.clone(), "1"),
    ] {
        let limited0 = drop_count(&lab, "gw", "icmp_rate_limited");
        let start = std::time::Instant::now();
        let out = py_ok(
            &d.c1.ns,
            PROVOKE_ICMP,
            &[&dst, "5000", "4", ttl],
            Duration::from_secs(30),
        );
        let secs = start.elapsed().as_secs_f64();
        let v: Value = serde_json::from_str(&out).expect("JSON");
        let (sent, errors) = (v["sent"].as_u64().unwrap(), v["errors"].as_u64().unwrap());
        total += sent;
        // Burst 6, then 1 a second (per destination: c1).
        let bound = 6 + secs.ceil() as u64 + 1;
        assert!(
            errors >= 1,
            "{what}: no ICMP error came back at all\n{}",
            diag(&lab)
        );
        assert!(
            errors <= bound,
            "{what}: {sent} packets drew {errors} ICMP errors in {secs:.1} s (bound {bound})"
        );
        let limited = drop_count(&lab, "gw", "icmp_rate_limited") - limited0;
        assert!(
            limited >= sent / 2,
            "{what}: only {limited} counted icmp_rate_limited of {sent}"
        );
        eprintln!(
            "icmp-report: {what}: {sent} packets, {errors} ICMP errors back, {limited} limited"
        );
    }
    report(&mut lab, "icmp-provoking", rss0, total, 32);
    assert_ping(&lab, &d.c1, &d.srv.ip);
}

/// `IFACE COUNT SECONDS PREFIX24 TARGET`: ARP requests for TARGET from
/// random sender addresses PREFIX24.100-254 and random sender MACs, and
/// gratuitous ARPs, broadcast. (Not the real hosts' addresses: claiming
/// those would be ARP spoofing, which poisons any router's cache.)
const ARP_FLOOD: &str = r#"
import errno, json, os, random, socket, struct, sys, time
ifc, count, secs, pre, target = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifc, 0))
rnd = random.Random(5)
sent = 0
end = time.time() + secs
while sent < count and time.time() < end:
    mac = bytes([2]) + os.urandom(5)
    spa = socket.inet_aton("%s.%d" % (pre, rnd.randrange(100, 255)))
    tpa = socket.inet_aton(target) if sent % 2 else spa
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + spa + b"\0" * 6 + tpa
    try:
        s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
        sent += 1
    except OSError as e:
        if e.errno != errno.ENOBUFS:
            raise
        time.sleep(0.001)
    if sent % 500 == 0:
        time.sleep(0.005)
print(json.dumps({"sent": sent}))
"#;

/// 20 000 ARP requests and gratuitous ARPs from random MACs and addresses
/// at the router's inside interface: the neighbour table and the FDB stay
/// within their limits, memory stays bounded, routing keeps working.
#[test]
fn arp_flood_at_a_rif() {
    let mut lab = Lab::with_daemon();
    let d = docker_config(&mut lab);
    assert_ping(&lab, &d.c1, &d.srv.ip);
    let rss0 = status_kib(lab.daemon_pid(), "VmRSS:");
    let out = py_ok(
        &d.c2.ns,
        ARP_FLOOD,
        &["eth0", "20000", "15", &d.a, &d.gw_ip],
        Duration::from_secs(40),
    );
    let sent = sent_of(&out);
    assert!(sent >= 5000, "sent only {sent}");
    let neigh = json_array(lab.ctl_json(&["arp-show"]), "arp-show").len();
    assert!(neigh <= 4096, "{neigh} neighbours");
    report(&mut lab, "arp", rss0, sent, 32);
    assert_ping(&lab, &d.c1, &d.srv.ip);
    assert_ping(&lab, &d.c2, &d.srv.ip);
}
