//! TUN ports against the real kernel. Each test makes its own network
//! namespace and puts a TUN port's device in it with an address on a
//! 10.77.<pid>.0/24 test subnet (the connected route goes through the
//! device, in that namespace only); sockets bound in the namespace send
//! toward the subnet (the port receives) and receive what the port sends.
//! Deleting the namespace removes every device in it, also when a test
//! fails. Needs root; skipped visibly otherwise.

use dataplane::bridge::vlan::TagEdit;
use dataplane::packet::{Batch, Frame, VnetHdr};
use dataplane::port::tun::{TunError, TunOptions, TunPort, TUN_PEER_MAC};
use dataplane::port::{IoScratch, Port, TxItem};
use dataplane::stats::{DropReason, PortStats};
use dataplane::{sys, MacAddr};
use etherparse::PacketBuilder;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const ROUTER: MacAddr = MacAddr([0x02, 0x00, 0x5e, 0x10, 0x20, 0x30]);
/// `UDP_SEGMENT` from <linux/udp.h> (not in the libc crate for glibc).
const UDP_SEGMENT: libc::c_int = 103;

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let ok = unsafe { libc::geteuid() } == 0
        && std::path::Path::new("/dev/net/tun").exists()
        && Command::new("ip")
            .args(["netns", "list"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: needs root, /dev/net/tun and iproute2");
    }
    ok
}

/// A fresh network namespace, deleted on drop (with every device in it).
struct Lab {
    ns: String,
}

static N: AtomicU32 = AtomicU32::new(0);

impl Lab {
    fn new(test: &str) -> Lab {
        let ns = format!(
            "vstun-{test}-{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let lab = Lab { ns };
        assert!(sh(&["ip", "netns", "add", &lab.ns]), "ip netns add");
        lab
    }

    fn exec(&self, args: &[&str]) {
        let mut a = vec!["ip", "netns", "exec", self.ns.as_str()];
        a.extend_from_slice(args);
        assert!(sh(&a), "{a:?}");
    }

    fn ip(&self, args: &[&str]) {
        let mut a = vec!["ip", "-n", self.ns.as_str()];
        a.extend_from_slice(args);
        assert!(sh(&a), "{a:?}");
    }

    /// IPv6 off in the namespace (devices moved in later inherit it): no
    /// router solicitations or MLD reports on the device.
    fn no_ipv6(&self) {
        for k in ["all", "default"] {
            self.exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{k}.disable_ipv6=1"),
            ]);
        }
    }

    fn has_link(&self, ifname: &str) -> bool {
        let name = ifname.to_string();
        sys::in_netns(&self.ns, move || Ok(sys::ifindex(&name).is_ok())).unwrap()
    }

    /// A UDP socket bound to `addr` in the namespace.
    fn udp(&self, addr: SocketAddr) -> UdpSocket {
        let s = sys::in_netns(&self.ns, move || UdpSocket::bind(addr)).expect("bind in netns");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// A TUN port `ifname` in the namespace, up, with `addr` on it.
    fn port(&self, ifname: &str, addr: &str) -> TunPort {
        let p = TunPort::open(&TunOptions {
            ifname: ifname.into(),
            netns: Some(self.ns.clone()),
            mtu: Some(1400),
            mac: Some(ROUTER),
        })
        .unwrap_or_else(|e| panic!("open {ifname}: {e}"));
        assert!(p.created());
        assert_eq!(p.mtu(), Some(1400));
        let mut a = vec!["addr", "add", addr, "dev", ifname];
        if addr.contains(':') {
            a.push("nodad");
        }
        self.ip(&a);
        p
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// The test subnet's third octet for this process.
fn subnet() -> u8 {
    (std::process::id() % 250) as u8
}

fn wait_readable(fd: i32, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd, count 1.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

/// Receives until a frame satisfies `want` (others, such as stray kernel
/// traffic, are skipped); its bytes and virtio header.
fn recv_until(port: &TunPort, want: impl Fn(&[u8]) -> bool) -> (Vec<u8>, VnetHdr) {
    let mut batch = Batch::new(8);
    let mut sc = IoScratch::default();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !wait_readable(port.fd(), 100) {
            continue;
        }
        let n = port.recv(&mut batch.frames, &mut sc).expect("recv");
        for f in &batch.frames[..n] {
            if !f.is_empty() && want(f.data()) {
                return (f.data().to_vec(), f.vnet());
            }
        }
    }
    panic!("the expected packet never arrived");
}

/// Whether an Ethernet frame holds a UDP datagram to `dport`.
fn is_udp_to(d: &[u8], dport: u16) -> bool {
    let (l4, proto) = match u16::from_be_bytes([d[12], d[13]]) {
        0x0800 => (14 + usize::from(d[14] & 0x0f) * 4, d[14 + 9]),
        0x86dd => (14 + 40, d[14 + 6]),
        _ => return false,
    };
    proto == 17 && d.len() >= l4 + 8 && u16::from_be_bytes([d[l4 + 2], d[l4 + 3]]) == dport
}

/// A frame as the switch would send it to the port (from the router).
fn eth(ethertype: u16, tag: Option<u16>, ip: &[u8]) -> Vec<u8> {
    let mut e = TUN_PEER_MAC.0.to_vec();
    e.extend_from_slice(&ROUTER.0);
    if let Some(tci) = tag {
        e.extend_from_slice(&[0x81, 0x00]);
        e.extend_from_slice(&tci.to_be_bytes());
    }
    e.extend_from_slice(&ethertype.to_be_bytes());
    e.extend_from_slice(ip);
    e
}

fn send(port: &TunPort, frames: &[Frame], edit: TagEdit) -> PortStats {
    let items: Vec<TxItem> = (0..frames.len())
        .map(|i| TxItem {
            idx: i as u16,
            edit,
            peer: 0,
        })
        .collect();
    let mut st = PortStats::default();
    port.send(frames, &items, &mut st, &mut IoScratch::default());
    st
}

fn udp4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64).udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

#[test]
fn ipv4_both_ways() {
    if !root() {
        return;
    }
    let lab = Lab::new("v4");
    lab.no_ipv6();
    let port = lab.port("vt0", &format!("10.77.{}.1/24", subnet()));
    let local = Ipv4Addr::new(10, 77, subnet(), 1);
    let peer = Ipv4Addr::new(10, 77, subnet(), 2);
    let sock = lab.udp(SocketAddr::from((local, 0)));
    let sport = sock.local_addr().unwrap().port();

    // Kernel -> port: a datagram routed to the device.
    sock.send_to(b"hello tun", (peer, 9999)).unwrap();
    let (d, h) = recv_until(&port, |d| is_udp_to(d, 9999));
    assert_eq!(&d[..6], &ROUTER.0, "destination: the router MAC");
    assert_eq!(&d[6..12], &TUN_PEER_MAC.0, "source: the fixed peer MAC");
    assert_eq!(&d[12..14], &[0x08, 0x00]);
    let ip = &d[14..];
    assert_eq!(ip[0], 0x45);
    assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());
    assert_eq!(ip[9], 17);
    assert_eq!(&ip[12..16], &local.octets());
    assert_eq!(&ip[16..20], &peer.octets());
    assert_eq!(&ip[20..22], &sport.to_be_bytes());
    assert_eq!(&ip[28..], b"hello tun");
    if h.flags & VnetHdr::F_NEEDS_CSUM != 0 {
        // Partial checksum: its start moved past the synthetic header.
        assert_eq!((h.csum_start, h.csum_offset), (14 + 20, 6));
    }
    assert!(!h.is_gso());

    // Port -> kernel: untagged, and with an 802.1Q tag (stripped; the tag
    // edit is ignored).
    let a = udp4(peer, 7777, local, sport, b"reply plain");
    let b = udp4(peer, 7777, local, sport, b"reply tagged");
    let frames = [
        Frame::from_bytes(&eth(0x0800, None, &a)),
        Frame::from_bytes(&eth(0x0800, Some(0x0064), &b)),
    ];
    let st = send(&port, &frames, TagEdit::Pop);
    assert_eq!(st.tx_packets, 2);
    assert_eq!(
        st.tx_bytes,
        (a.len() + b.len()) as u64,
        "bytes: the IP packets"
    );
    assert!(st.drops.iter().all(|&n| n == 0));
    let mut got = Vec::new();
    for _ in 0..2 {
        let mut buf = [0u8; 2048];
        let (n, from) = sock.recv_from(&mut buf).expect("the kernel received it");
        assert_eq!(from, SocketAddr::from((peer, 7777)));
        got.push(buf[..n].to_vec());
    }
    got.sort();
    assert_eq!(got, [b"reply plain".to_vec(), b"reply tagged".to_vec()]);

    // What a TUN device cannot take is counted, not written.
    let frames = [
        Frame::from_bytes(&eth(0x0800, None, &a[..19])),
        Frame::from_bytes(&eth(0x0806, None, &[0; 28])),
        Frame::from_bytes(&[0xff; 10]),
    ];
    let st = send(&port, &frames, TagEdit::None);
    assert_eq!((st.tx_packets, st.tx_bytes), (0, 0));
    assert_eq!(st.drops[DropReason::Malformed as usize], 2);
    assert_eq!(st.drops[DropReason::TxError as usize], 1);
    assert_eq!(port.kernel_drops(), 0);

    // The router MAC can change while the port is in use.
    let other = MacAddr([0x02, 0, 0, 0, 0, 0x99]);
    port.set_router_mac(other);
    sock.send_to(b"again", (peer, 9998)).unwrap();
    let (d, _) = recv_until(&port, |d| is_udp_to(d, 9998));
    assert_eq!(&d[..6], &other.0);
}

#[test]
fn ipv6_both_ways() {
    if !root() {
        return;
    }
    let lab = Lab::new("v6");
    let port = lab.port("vt6", "fd00:77::1/64");
    let local: Ipv6Addr = "fd00:77::1".parse().unwrap();
    let peer: Ipv6Addr = "fd00:77::2".parse().unwrap();
    let sock = lab.udp(SocketAddr::from((local, 0)));
    let sport = sock.local_addr().unwrap().port();

    sock.send_to(b"hello six", (peer, 9999)).unwrap();
    let (d, h) = recv_until(&port, |d| is_udp_to(d, 9999));
    assert_eq!(&d[..6], &ROUTER.0);
    assert_eq!(&d[6..12], &TUN_PEER_MAC.0);
    assert_eq!(&d[12..14], &[0x86, 0xdd]);
    assert_eq!(d[14] >> 4, 6);
    assert_eq!(&d[14 + 8..14 + 24], &local.octets());
    assert_eq!(&d[14 + 24..14 + 40], &peer.octets());
    assert_eq!(&d[14 + 48..], b"hello six");
    if h.flags & VnetHdr::F_NEEDS_CSUM != 0 {
        assert_eq!(h.csum_start, 14 + 40);
    }

    let b = PacketBuilder::ipv6(peer.octets(), local.octets(), 64).udp(7777, sport);
    let mut ip = Vec::new();
    b.write(&mut ip, b"reply six").unwrap();
    let st = send(
        &port,
        &[Frame::from_bytes(&eth(0x86dd, None, &ip))],
        TagEdit::None,
    );
    assert_eq!((st.tx_packets, st.tx_bytes), (1, ip.len() as u64));
    let mut buf = [0u8; 256];
    let (n, from) = sock.recv_from(&mut buf).expect("the kernel received it");
    assert_eq!(&buf[..n], b"reply six");
    assert_eq!(from, SocketAddr::from((peer, 7777)));
}

/// A UDP GSO super-packet crosses whole: one frame with the virtio header's
/// offsets moved by 14 on receive, and back by 14 on send, where the kernel
/// segments it for the receiving socket.
#[test]
fn gso_super_packet_passes_whole() {
    if !root() {
        return;
    }
    let lab = Lab::new("gso");
    lab.no_ipv6();
    let port = lab.port("vtg", &format!("10.77.{}.1/24", subnet()));
    let local = Ipv4Addr::new(10, 77, subnet(), 1);
    let peer = Ipv4Addr::new(10, 77, subnet(), 2);
    let sock = lab.udp(SocketAddr::from((local, 0)));
    sys::setsockopt_int(sock.as_raw_fd(), libc::SOL_UDP, UDP_SEGMENT, 1000).unwrap();
    let payload: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    sock.send_to(&payload, (peer, 9999)).unwrap();

    let (mut d, h) = recv_until(&port, |d| is_udp_to(d, 9999));
    assert_eq!(d.len(), 14 + 28 + 4000, "one frame, not four");
    assert_eq!(h.gso_type, VnetHdr::GSO_UDP_L4);
    assert_eq!(h.gso_size, 1000);
    assert_eq!(h.flags & VnetHdr::F_NEEDS_CSUM, VnetHdr::F_NEEDS_CSUM);
    assert_eq!((h.csum_start, h.csum_offset, h.hdr_len), (34, 6, 42));

    // Turn it around: swapping addresses and ports keeps both the IP header
    // checksum and the partial (pseudo-header) UDP checksum valid.
    let ip = 14;
    let (s, t) = d.split_at_mut(ip + 16);
    s[ip + 12..ip + 16].swap_with_slice(&mut t[..4]);
    let (s, t) = d.split_at_mut(ip + 22);
    s[ip + 20..ip + 22].swap_with_slice(&mut t[..2]);
    let mut f = Frame::from_bytes(&d);
    f.set_vnet(&h);
    let st = send(&port, &[f], TagEdit::None);
    assert_eq!((st.tx_packets, st.tx_bytes), (1, (28 + 4000) as u64));
    let mut got = Vec::new();
    for _ in 0..4 {
        let mut buf = [0u8; 2048];
        let (n, from) = sock.recv_from(&mut buf).expect("a segment");
        assert_eq!(n, 1000);
        assert_eq!(from, SocketAddr::from((peer, 9999)));
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, payload);
}

#[test]
fn persistent_device_stays_created_one_goes() {
    if !root() {
        return;
    }
    let lab = Lab::new("life");
    lab.ip(&["tuntap", "add", "name", "vpt0", "mode", "tun"]);
    lab.ip(&["tuntap", "add", "name", "vpa0", "mode", "tap"]);
    let r = sys::in_netns(&lab.ns, || {
        let open = |name: &str| {
            TunPort::open(&TunOptions {
                ifname: name.into(),
                ..Default::default()
            })
        };
        // Attach to the persistent device: not ours, left in place.
        let p = open("vpt0").map_err(io::Error::other)?;
        assert!(!p.created());
        assert!(sys::get_flags("vpt0")? & libc::IFF_UP as i16 != 0);
        assert!(matches!(open("vpt0"), Err(TunError::Busy(..))));
        drop(p);
        assert!(sys::ifindex("vpt0").is_ok(), "persistent device left");
        // A TAP of that name is refused.
        assert!(matches!(open("vpa0"), Err(TunError::WrongKind(..))));
        // A device we create goes with the port.
        let p = open("vpc0").map_err(io::Error::other)?;
        assert!(p.created());
        assert!(sys::ifindex("vpc0").is_ok());
        drop(p);
        assert!(sys::ifindex("vpc0").is_err(), "created device removed");
        Ok(())
    });
    r.unwrap();

    // Created in a namespace (moved there and renamed): removed on drop.
    let opts = TunOptions {
        ifname: "vpn0".into(),
        netns: Some(lab.ns.clone()),
        ..Default::default()
    };
    let p = TunPort::open(&opts).unwrap();
    assert!(p.created());
    assert!(lab.has_link("vpn0"));
    assert!(matches!(TunPort::open(&opts), Err(TunError::Exists { .. })));
    drop(p);
    assert!(!lab.has_link("vpn0"), "created device removed");
    assert!(lab.has_link("vpt0"));
}
