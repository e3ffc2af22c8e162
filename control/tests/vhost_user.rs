//! vhost-user ports with a real guest: QEMU (TCG, the guest kit of
//! `examples/vm/build.sh`) connects its virtio-net to a vswitch vhost-user
//! socket, so the guest's virtqueues are served by the switch itself (no
//! TAP). Skipped (passing, with the reason printed) when QEMU or the Debian
//! packages cannot be obtained.

mod common;
mod vm_support;

use common::*;
use std::time::{Duration, Instant};
use vm_support::*;

/// Boots are slow under TCG on two shared cores.
const BOOT: Duration = Duration::from_secs(90);

fn spec(lab: &Lab, name: &str, i: u8) -> GuestSpec {
    GuestSpec {
        name: name.to_string(),
        tap: String::new(),
        mac: guest_mac(i),
        cidr: format!("{}/24", lab.ip(100 + u32::from(i))),
        vlan: None,
    }
}

/// Server mode: vswitch listens, QEMU connects. The guest and a namespace
/// host on a TAP port ping each other, a TCP transfer from the guest arrives
/// whole (byte count and SHA-256), and h1 downloads from the guest's httpd
/// (the host's TSO super-frames are segmented for the guest, which has no
/// offloads negotiated). `list-ports` shows path, mode and connection. The
/// guest restarted on the same socket is served again; `del-port` removes
/// the socket and cuts the guest off.
/// The socket of vhost-user port `port` in the lab's directory.
fn vhost_sock(lab: &Lab, port: &str) -> String {
    lab.path(&format!("{port}.sock")).display().to_string()
}

/// `add-port br0 PORT --type vhost-user --path SOCKET EXTRA...`; returns
/// the socket.
fn add_vhost_port(lab: &Lab, port: &str, extra: &[&str]) -> String {
    let sock = vhost_sock(lab, port);
    let mut args = vec![
        "add-port",
        "br0",
        port,
        "--type",
        "vhost-user",
        "--path",
        &sock,
    ];
    args.extend_from_slice(extra);
    lab.ctl_ok(&args);
    sock
}

/// Waits up to 10 s for port vu1's guest to be connected; `what` says
/// what it means if it is not.
fn wait_connected(lab: &Lab, what: &str) {
    let connected = || lab.port_info("br0", "vu1")["connected"] == true;
    assert!(
        wait_until(Duration::from_secs(10), connected),
        "{what}: {}",
        lab.port_info("br0", "vu1")
    );
}

#[test]
fn vhost_user_server_guest_reaches_host() {
    let Some(kit) = kit() else { return };
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let sock = add_vhost_port(&lab, "vu1", &[]);
    let info = lab.port_info("br0", "vu1");
    assert_eq!(info["type"], "vhost-user", "{info}");
    assert_eq!(info["mode"], "server", "{info}");
    assert_eq!(info["path"], sock.as_str(), "{info}");
    assert_eq!(info["connected"], false, "{info}");
    assert_eq!(info["up"], false, "no guest yet: {info}");
    assert_eq!(info["down_reason"], "no guest connected", "{info}");
    // Down in the bridge too (within a second of being added): h1's ARP
    // broadcasts are not flooded to it (they were, as tx_error drops).
    // (Frames h1 sent before that, its IPv6 start-up, may count.)
    std::thread::sleep(Duration::from_millis(1500));
    let tx_error = || lab.port_stats("vu1")["drops"]["tx_error"].as_u64();
    let before = tx_error();
    let (net, _) = h1.ip.rsplit_once('.').expect("dotted h1 address");
    let nobody = format!("{net}.250");
    let _ = lab.ns_exec(&h1.ns, &["ping", "-c", "2", "-W", "1", &nobody]);
    assert_eq!(tx_error(), before, "flooded to a port without a guest");
    // The same socket twice is refused.
    let err = lab.ctl_err(&[
        "add-port",
        "br0",
        "vu2",
        "--type",
        "vhost-user",
        "--path",
        &sock,
    ]);
    assert!(err.contains("already used"), "{err}");

    let t0 = Instant::now();
    let mut g = Guest::boot_vhost(&lab, &kit, spec(&lab, "g1", 1), &sock, false);
    g.wait_ready(BOOT);
    let boot = t0.elapsed();
    let info = lab.port_info("br0", "vu1");
    assert_eq!(info["connected"], true, "{info}");
    assert_eq!(info["up"], true, "{info}");

    let ok = g.ping(&h1.ip, 10);
    assert!(
        ok,
        "guest cannot ping {}\nstats {}\nport {}",
        h1.ip,
        lab.port_stats("vu1"),
        lab.port_info("br0", "vu1")
    );
    assert!(lab.ping(&h1, &g.ip()), "{} cannot ping the guest", h1.ns);
    let (got, rtt) = g.ping_rtt(&h1.ip, 10);
    assert!(got >= 8, "guest -> host: {got}/10 ping replies");
    let entry = lab
        .fdb_entry("br0", &g.spec.mac)
        .expect("guest MAC learned");
    assert_eq!(entry["port"], "vu1", "{entry}");

    // TCP the guest opens: busybox nc to bulk_tcp.py on h1.
    let script = helper("bulk_tcp.py");
    let mut srv = lab.ns_spawn(&h1.ns, &["python3", &script, "serve", &h1.ip, "5202"], true);
    let line = srv.read_line(Duration::from_secs(10));
    assert_eq!(line.trim(), "ready", "bulk_tcp server did not start");
    let mib = 8;
    let sent = g.send_tcp(&h1.ip, 5202, mib);
    let (st, out) = srv.finish(Duration::from_secs(60));
    assert!(st.success(), "bulk_tcp server failed: {st} {out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("bulk_tcp JSON");
    assert_eq!(sent.rc, 0, "busybox nc failed: {sent:?}");
    assert_eq!(sent.bytes, u64::from(mib) << 20, "{sent:?}");
    assert_eq!(
        v["bytes"].as_u64(),
        Some(sent.bytes),
        "received {v}, sent {sent:?}"
    );
    assert_eq!(
        v["sha256"].as_str(),
        Some(sent.sha256.as_str()),
        "digests differ"
    );

    // TCP the host opens: h1 downloads from the guest's httpd (its ACKs and
    // the guest's data cross both directions of the port).
    // The guest's kernel sends with TSO (HOST_TSO4 negotiated): its
    // super-frames cross the port whole, one frame each in the counters.
    let (bytes, digest) = g.serve_http(8, 8080);
    let url = format!("http://{}:8080/data", g.ip());
    let (p0, b0) = rx_counts(&lab, "vu1");
    let fetched = fetch(&lab, &h1.ns, &url, 2);
    let (p1, b1) = rx_counts(&lab, "vu1");
    assert_eq!(fetched.bytes, bytes, "h1 fetched {fetched:?}");
    assert_eq!(fetched.sha256, digest, "digests differ");
    let avg = (b1 - b0) as f64 / (p1 - p0).max(1) as f64;
    assert!(
        avg > 3000.0,
        "frames from the guest average {avg:.0} bytes: no TSO super-frames"
    );

    // TCP into the guest: h1 sends 8 MiB to busybox nc in the guest (h1's
    // TSO super-frames go to the guest whole, GUEST_TSO4 negotiated).
    let (rc, _) = g.run("{ nc -l -p 5300 > /tmp/rx & }", Duration::from_secs(10));
    assert_eq!(rc, 0);
    std::thread::sleep(Duration::from_millis(500));
    let out = lab.ns_ok(
        &h1.ns,
        &["python3", &script, "send", &g.ip(), "5300", "8388608"],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("bulk_tcp JSON");
    let (_, got) = g.run(
        "wait; wc -c < /tmp/rx; sha256sum /tmp/rx",
        Duration::from_secs(60),
    );
    assert!(
        got.contains(&v["bytes"].to_string()) && got.contains(v["sha256"].as_str().unwrap()),
        "the guest received something else than h1 sent ({v}): {got}"
    );

    let stats = lab.port_stats("vu1");
    assert_eq!(
        stats["drops"]["vhost_bad_desc"].as_u64(),
        Some(0),
        "{stats}"
    );
    let info = lab.port_info("br0", "vu1");
    assert_eq!(info["bad_descriptors"], 0, "{info}");
    // The transfers above took the guest's kicks and the switch's
    // interrupts; resends (QEMU 7.2's one-vCPU TCG guest may lose a
    // notification, see dataplane/src/port/vhost_user.rs) are at most a
    // few, once per stuck state, never one a tick.
    let n = |k: &str| info[k].as_u64().unwrap_or_else(|| panic!("{k}: {info}"));
    assert!(n("kicks") > 0 && n("interrupts") > 0, "{info}");
    assert!(n("lost_notifications") < 20, "{info}");
    println!(
        "vhost-user server: boot {:.1} s, RTT guest->host avg {rtt:.3} ms; \
         TCP guest->host with nc {mib} MiB in {:.2} s = {:.1} Mbit/s; \
         httpd 2 x 8 MiB to h1 in {:.2} s = {:.1} Mbit/s",
        boot.as_secs_f64(),
        sent.secs,
        sent.mbit,
        fetched.secs,
        fetched.mbit
    );

    // The guest restarts (QEMU ends, a new one connects to the same
    // socket): the port accepts the new connection by itself.
    drop(g);
    assert!(
        wait_until(Duration::from_secs(10), || lab.port_info("br0", "vu1")
            ["connected"]
            == false),
        "still connected after QEMU ended"
    );
    let mut g = Guest::boot_vhost(&lab, &kit, spec(&lab, "g1", 1), &sock, false);
    g.wait_ready(BOOT);
    assert!(
        g.ping(&h1.ip, 10),
        "the restarted guest cannot ping {}",
        h1.ip
    );
    assert_eq!(lab.port_info("br0", "vu1")["connected"], true);

    lab.ctl_ok(&["del-port", "vu1"]);
    assert!(
        !std::path::Path::new(&sock).exists(),
        "del-port left the socket {sock}"
    );
    assert!(
        g.unreachable(&h1.ip, 2),
        "the guest still reaches h1 after del-port"
    );
}

/// Client mode: QEMU listens, vswitch connects. The port is saved with
/// `save`; vswitchd is stopped (the guest is cut off) and started again
/// with `--config`: it reconnects to QEMU by itself and the guest's traffic
/// resumes with no manual step.
#[test]
fn vhost_user_client_survives_daemon_restart() {
    let Some(kit) = kit() else { return };
    let (mut lab, cfg, h1) = restartable_lab();
    let sock = vhost_sock(&lab, "vu1");
    let mut g = Guest::boot_vhost(&lab, &kit, spec(&lab, "g1", 1), &sock, true);
    // The socket may not exist yet: client mode retries.
    add_vhost_port(&lab, "vu1", &["--client"]);
    g.wait_ready(BOOT);
    wait_connected(&lab, "never connected");
    assert_eq!(lab.port_info("br0", "vu1")["mode"], "client");
    assert!(g.ping(&h1.ip, 10), "guest cannot ping {}", h1.ip);

    restart_and_resume(&mut lab, &mut g, &h1, &cfg, &sock, &["client"]);
}

/// Server mode across a vswitchd restart: QEMU (`reconnect=1`) comes back
/// to the socket the restarted daemon listens on again (`--config`), and
/// the guest's traffic resumes with no manual step.
#[test]
fn vhost_user_server_survives_daemon_restart() {
    let Some(kit) = kit() else { return };
    let (mut lab, cfg, h1) = restartable_lab();
    let sock = add_vhost_port(&lab, "vu1", &[]);
    let mut g = Guest::boot_vhost(&lab, &kit, spec(&lab, "g1", 1), &sock, false);
    g.wait_ready(BOOT);
    wait_connected(&lab, "never connected");
    assert_eq!(lab.port_info("br0", "vu1")["mode"], "server");
    assert!(g.ping(&h1.ip, 10), "guest cannot ping {}", h1.ip);

    restart_and_resume(&mut lab, &mut g, &h1, &cfg, &sock, &[]);
}

/// A lab whose vswitchd runs with `--config FILE` (returned), bridge br0
/// and host h1 on it.
fn restartable_lab() -> (Lab, String, Host) {
    let mut lab = Lab::new();
    let cfg = lab.path("vswitch.toml").display().to_string();
    lab.start_daemon(&["--config", &cfg]);
    lab.add_br("br0", &[]);
    let h1 = lab.afpacket_host("br0", 1);
    (lab, cfg, h1)
}

/// Saves the configuration (the port must be in it, with `also`), stops
/// vswitchd (the guest loses h1), starts it again from the file, and checks
/// the port reconnects and the guest's traffic resumes by itself.
fn restart_and_resume(
    lab: &mut Lab,
    g: &mut Guest,
    h1: &Host,
    cfg: &str,
    sock: &str,
    also: &[&str],
) {
    lab.ctl_ok(&["save"]);
    let saved = std::fs::read_to_string(cfg).expect("save wrote the config");
    assert!(
        saved.contains("vhost-user")
            && saved.contains(sock)
            && also.iter().all(|w| saved.contains(w)),
        "{saved}"
    );
    lab.stop_daemon();
    assert!(
        g.unreachable(&h1.ip, 2),
        "the guest reaches h1 with vswitchd stopped"
    );
    let t0 = Instant::now();
    lab.start_daemon(&["--config", cfg]);
    wait_connected(lab, "did not reconnect after the restart");
    assert!(
        g.ping(&h1.ip, 20),
        "the guest's traffic did not resume after the restart"
    );
    println!(
        "vhost-user {}: traffic resumed {:.1} s after vswitchd restarted",
        lab.port_info("br0", "vu1")["mode"].as_str().unwrap_or("?"),
        t0.elapsed().as_secs_f64()
    );
}

/// Two guests on vhost-user ports of one bridge: they ping each other and
/// 8 MiB of TCP goes from one to the other (byte count and SHA-256), as
/// super-frames from guest to guest (TSO negotiated on both ports).
#[test]
fn vhost_user_guest_to_guest() {
    let Some(kit) = kit() else { return };
    let lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let mut guests = Vec::new();
    for i in 1..=2u8 {
        let port = format!("vu{i}");
        let sock = add_vhost_port(&lab, &port, &[]);
        let name = format!("g{i}");
        guests.push(Guest::boot_vhost(
            &lab,
            &kit,
            spec(&lab, &name, i),
            &sock,
            false,
        ));
    }
    for g in guests.iter_mut() {
        g.wait_ready(BOOT);
    }
    let (a, b) = guests.split_at_mut(1);
    let (g1, g2) = (&mut a[0], &mut b[0]);
    assert!(g1.ping(&g2.ip(), 10), "g1 cannot ping g2");
    assert!(g2.ping(&g1.ip(), 10), "g2 cannot ping g1");
    let (got, rtt) = g1.ping_rtt(&g2.ip(), 10);
    assert!(got >= 8, "g1 -> g2: {got}/10 ping replies");

    let (rc, _) = g2.run("{ nc -l -p 5300 > /tmp/rx & }", Duration::from_secs(10));
    assert_eq!(rc, 0);
    std::thread::sleep(Duration::from_millis(500));
    let (p0, b0) = rx_counts(&lab, "vu1");
    let sent = g1.send_tcp(&g2.ip(), 5300, 8);
    let (p1, b1) = rx_counts(&lab, "vu1");
    assert_eq!(sent.rc, 0, "busybox nc failed: {sent:?}");
    let (_, got) = g2.run(
        "wait; wc -c < /tmp/rx; sha256sum /tmp/rx",
        Duration::from_secs(60),
    );
    assert!(
        got.contains(&sent.bytes.to_string()) && got.contains(&sent.sha256),
        "g2 received something else than g1 sent ({sent:?}): {got}"
    );
    let avg = (b1 - b0) as f64 / (p1 - p0).max(1) as f64;
    println!(
        "vhost-user guest<->guest: RTT avg {rtt:.3} ms; TCP 8 MiB g1->g2 with nc in {:.2} s = {:.1} Mbit/s, \
         frames from g1 averaging {avg:.0} bytes",
        sent.secs, sent.mbit
    );
}
