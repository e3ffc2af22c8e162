//! Real virtual machines on vswitch through TAP devices, attached the way VM
//! managers do it today: QEMU (TCG, a Debian kernel with a busybox initramfs
//! from `examples/vm/build.sh`) opens a TAP in vswitchd's namespace and the
//! daemon attaches that TAP as an AF_PACKET port. Skipped (passing, with the
//! reason printed) when QEMU or the Debian packages cannot be obtained.

mod common;
mod vm_support;

use common::*;
use std::time::{Duration, Instant};
use vm_support::*;

/// Boots are slow under TCG on two shared cores.
const BOOT: Duration = Duration::from_secs(90);

fn spec(lab: &Lab, name: &str, i: u8, vlan: Option<u16>) -> GuestSpec {
    GuestSpec {
        name: name.to_string(),
        tap: tap_name(lab, name),
        mac: guest_mac(i),
        cidr: format!("{}/24", lab.ip(100 + u32::from(i))),
        vlan,
    }
}

/// (a) QEMU creates its TAP (`-netdev tap,ifname=...,script=no`) and vswitch
/// attaches it with `--type afpacket`. The guest and a namespace host on a
/// TAP port ping each other; TCP from the guest arrives whole (byte count
/// and SHA-256): 8 MiB the guest sends with nc, and 5 x 20 MiB h1 downloads
/// from the guest's httpd, carried as TSO super-frames with checksum
/// offload from the guest's virtio-net through the AF_PACKET port.
/// `del-port` then leaves QEMU's TAP in place and cuts the guest off.
#[test]
fn qemu_tap_attached_as_afpacket() {
    let Some(kit) = kit() else { return };
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let t0 = Instant::now();
    let mut g = Guest::boot(&lab, &kit, spec(&lab, "g1", 1, None));
    wait_tap(&lab, &mut g);
    lab.ctl_ok(&[
        "add-port",
        "br0",
        "vm1",
        "--type",
        "afpacket",
        "--ifname",
        &g.spec.tap,
    ]);
    g.wait_ready(BOOT);
    let boot = t0.elapsed();
    let info = lab.port_info("br0", "vm1");
    assert_eq!(info["type"], "afpacket", "{info}");
    assert_eq!(info["up"], true, "{info}");

    assert!(g.ping(&h1.ip, 10), "guest cannot ping {}", h1.ip);
    assert!(lab.ping(&h1, &g.ip()), "{} cannot ping the guest", h1.ns);
    let (got, rtt) = g.ping_rtt(&h1.ip, 10);
    assert!(got >= 8, "guest -> host: {got}/10 ping replies");
    let entry = lab
        .fdb_entry("br0", &g.spec.mac)
        .expect("guest MAC learned");
    assert_eq!(entry["port"], "vm1", "{entry}");

    // TCP the guest opens: busybox nc sends to bulk_tcp.py on h1. A TCG
    // guest copying through a pipe in 8 KiB writes is CPU-bound and sends
    // mostly single segments (checksum offload still applies).
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

    // Bulk TCP from the guest's kernel: busybox httpd sends a 20 MiB file
    // with sendfile(2), h1 downloads it five times. Segments bigger than
    // one MTU's payload at h1 are the guest's TSO super-frames, passed whole
    // by the AF_PACKET port (PACKET_VNET_HDR) and the TAP port
    // (IFF_VNET_HDR), their checksums left to offload.
    let (bytes, digest) = g.serve_http(20, 8080);
    let filter = format!("tcp and src host {} and greater 200", g.ip());
    let dump = lab.ns_spawn(
        &h1.ns,
        &[
            "timeout", "60", "tcpdump", "-l", "-nn", "-q", "-i", "eth0", "-c", "300", &filter,
        ],
        true,
    );
    std::thread::sleep(Duration::from_millis(1000));
    let (p0, b0) = rx_counts(&lab, "vm1");
    let url = format!("http://{}:8080/data", g.ip());
    let got = fetch(&lab, &h1.ns, &url, 5);
    let (p1, b1) = rx_counts(&lab, "vm1");
    let (_, dumped) = dump.finish(Duration::from_secs(60));
    assert_eq!(
        got.bytes, bytes,
        "h1 fetched {got:?}, the guest served {bytes} bytes"
    );
    assert_eq!(got.sha256, digest, "digests differ");
    let lens = tcp_lengths(&dumped);
    let big = lens.iter().filter(|&&n| n > 1460).count();
    let max = lens.iter().copied().max().unwrap_or(0);
    assert!(
        big * 2 > lens.len(),
        "only {big} of {} TCP segments at h1 were above one MTU (largest {max}): \
         the guest's TSO super-frames did not travel whole",
        lens.len()
    );
    // One super-frame counts as one packet in the port's counters.
    let avg = (b1 - b0) as f64 / (p1 - p0).max(1) as f64;
    println!(
        "vm (a) QEMU TAP as afpacket: boot+attach {:.1} s, RTT guest->host avg {rtt:.3} ms; \
         TCP guest->host with nc {mib} MiB in {:.2} s = {:.1} Mbit/s; \
         httpd (sendfile, TSO) 5 x 20 MiB in {:.2} s = {:.1} Mbit/s, port vm1 received {} frames \
         averaging {avg:.0} bytes, at h1 {big} of {} segments above one MTU, largest {max} bytes",
        boot.as_secs_f64(),
        sent.secs,
        sent.mbit,
        got.secs,
        got.mbit,
        p1 - p0,
        lens.len()
    );

    // del-port detaches the VM: its TAP (QEMU's) stays, the guest is cut off.
    lab.ctl_ok(&["del-port", "vm1"]);
    let tap = g.spec.tap.clone();
    assert!(
        lab.link_exists(&lab.sw, &tap),
        "del-port removed QEMU's TAP"
    );
    assert!(
        g.unreachable(&h1.ip, 2),
        "the guest still reaches h1 after del-port"
    );
}

/// (b) A persistent TAP made beforehand (`ip tuntap add`), attached to the
/// bridge before the VM starts, then opened by QEMU: the guest and a host
/// ping each other. When the VM goes away the TAP and the port stay, and
/// the VM booted again on the same TAP is reachable again.
#[test]
fn persistent_tap_attached_before_boot() {
    let Some(kit) = kit() else { return };
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let s = spec(&lab, "g1", 2, None);
    lab.persistent_tap(&s.tap);
    lab.ctl_ok(&[
        "add-port", "br0", "vm1", "--type", "afpacket", "--ifname", &s.tap,
    ]);
    let mut g = Guest::boot(&lab, &kit, s);
    g.wait_ready(BOOT);
    assert!(g.ping(&h1.ip, 10), "guest cannot ping {}", h1.ip);
    assert!(lab.ping(&h1, &g.ip()), "{} cannot ping the guest", h1.ns);
    let (got, rtt) = g.ping_rtt(&h1.ip, 5);
    assert!(got >= 4, "guest -> host: {got}/5 ping replies");
    println!("vm (b) persistent TAP: RTT guest->host avg {rtt:.3} ms");

    g.poweroff();
    assert!(g.exited(), "QEMU did not exit after poweroff");
    let tap = g.spec.tap.clone();
    assert!(
        lab.link_exists(&lab.sw, &tap),
        "the persistent TAP went away with the VM"
    );
    let info = lab.port_info("br0", "vm1");
    assert_eq!(info["ifname"], tap.as_str(), "{info}");

    // The VM restarts on the same TAP: the port carries its traffic again.
    let spec2 = g.spec.clone();
    drop(g);
    let mut g = Guest::boot(&lab, &kit, spec2);
    g.wait_ready(BOOT);
    assert!(
        g.ping(&h1.ip, 10),
        "after a restart on the persistent TAP the guest cannot ping {}; port: {}",
        h1.ip,
        lab.port_info("br0", "vm1")
    );
    assert!(
        lab.ping(&h1, &g.ip()),
        "{} cannot ping the restarted guest",
        h1.ns
    );
}

/// (c) Two guests on one bridge in different VLANs (access 10 and 20), each
/// with a host in its VLAN, all in one IP subnet: each guest reaches its own
/// VLAN's host and nothing in the other VLAN.
#[test]
fn two_guests_in_different_vlans_are_isolated() {
    let Some(kit) = kit() else { return };
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    lab.ctl_ok(&["set-port", "p1", "--access", "10"]);
    lab.ctl_ok(&["set-port", "p2", "--access", "20"]);
    // Both boot at once.
    let mut g1 = Guest::boot(&lab, &kit, spec(&lab, "g1", 3, None));
    let mut g2 = Guest::boot(&lab, &kit, spec(&lab, "g2", 4, None));
    for (g, port, vid) in [(&mut g1, "vm1", "10"), (&mut g2, "vm2", "20")] {
        wait_tap(&lab, g);
        let tap = g.spec.tap.clone();
        lab.ctl_ok(&[
            "add-port", "br0", port, "--type", "afpacket", "--ifname", &tap,
        ]);
        lab.ctl_ok(&["set-port", port, "--access", vid]);
    }
    g1.wait_ready(BOOT);
    g2.wait_ready(BOOT);

    assert!(g1.ping(&h1.ip, 10), "g1 (VLAN 10) cannot ping h1 (VLAN 10)");
    assert!(g2.ping(&h2.ip, 10), "g2 (VLAN 20) cannot ping h2 (VLAN 20)");
    assert!(lab.ping(&h1, &g1.ip()), "h1 cannot ping g1");
    assert!(lab.ping(&h2, &g2.ip()), "h2 cannot ping g2");
    let g2ip = g2.ip();
    let g1ip = g1.ip();
    assert!(
        g1.unreachable(&g2ip, 3),
        "g1 (VLAN 10) reaches g2 (VLAN 20)"
    );
    assert!(
        g1.unreachable(&h2.ip, 3),
        "g1 (VLAN 10) reaches h2 (VLAN 20)"
    );
    assert!(
        g2.unreachable(&g1ip, 3),
        "g2 (VLAN 20) reaches g1 (VLAN 10)"
    );
    assert!(
        g2.unreachable(&h1.ip, 3),
        "g2 (VLAN 20) reaches h1 (VLAN 10)"
    );
    assert!(
        !lab.ping_once(&h1, &g2ip),
        "h1 (VLAN 10) reaches g2 (VLAN 20)"
    );

    // Each guest was learned in its own VLAN only.
    for (g, port, vid) in [(&g1, "vm1", 10), (&g2, "vm2", 20)] {
        let entries: Vec<_> = lab
            .fdb("br0")
            .into_iter()
            .filter(|e| e["mac"].as_str().map(str::to_lowercase).as_deref() == Some(&g.spec.mac))
            .collect();
        assert!(
            !entries.is_empty()
                && entries
                    .iter()
                    .all(|e| e["port"] == port && e["vlan"] == vid),
            "FDB entries of {}: {entries:?}",
            g.spec.name
        );
    }
}

/// A guest that tags its own traffic (eth0.20 in the guest, `vm.vlan=20`)
/// on a trunk port carrying VLANs 10 and 20: it reaches the VLAN 20 host,
/// its frames are learned in VLAN 20, and the VLAN 10 host stays out of
/// reach.
#[test]
fn guest_tagging_on_a_trunk_port() {
    let Some(kit) = kit() else { return };
    let mut lab = Lab::with_daemon();
    lab.add_br("br0", &[]);
    let h1 = lab.tap_host("br0", 1);
    let h2 = lab.tap_host("br0", 2);
    lab.ctl_ok(&["set-port", "p1", "--access", "10"]);
    lab.ctl_ok(&["set-port", "p2", "--access", "20"]);
    let mut g = Guest::boot(&lab, &kit, spec(&lab, "g1", 5, Some(20)));
    wait_tap(&lab, &mut g);
    let tap = g.spec.tap.clone();
    lab.ctl_ok(&[
        "add-port", "br0", "vm1", "--type", "afpacket", "--ifname", &tap,
    ]);
    lab.ctl_ok(&["set-port", "vm1", "--trunk", "10,20"]);
    g.wait_ready(BOOT);
    assert!(
        g.ping(&h2.ip, 10),
        "g1 (tagged 20) cannot ping h2 (VLAN 20)"
    );
    assert!(lab.ping(&h2, &g.ip()), "h2 cannot ping g1");
    assert!(
        g.unreachable(&h1.ip, 3),
        "g1 (tagged 20) reaches h1 (VLAN 10)"
    );
    let e = lab
        .fdb_entry("br0", &g.spec.mac)
        .expect("guest MAC learned");
    assert_eq!(e["vlan"], 20, "{e}");
    assert_eq!(e["port"], "vm1", "{e}");
}
