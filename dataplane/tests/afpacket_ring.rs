//! AF_PACKET ports against the real kernel: the TPACKET_V2 receive ring and
//! the recvmmsg path it falls back to. Each test makes its own network
//! namespace with a veth pair `va`/`vb` in it, sends with one port and
//! receives with the other; nothing leaves the namespace.
//! Needs root (namespaces); skipped visibly otherwise.

use dataplane::bridge::vlan::TagEdit;
use dataplane::packet::{Frame, VnetHdr};
use dataplane::port::afpacket::{AfPacketPort, RingGeometry, RxMode};
use dataplane::port::{IoScratch, Port, TxItem};
use dataplane::stats::{DropReason, PortStats};
use dataplane::sys;
use std::io;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// EtherType of the test frames (IEEE 802 local experimental).
const ETH_TEST: u16 = 0x88b5;
const BATCH: usize = 64;

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
        && Command::new("ip")
            .args(["netns", "list"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: needs root and iproute2");
    }
    ok
}

/// A namespace with a veth pair `va` <-> `vb`, IPv6 off (no background
/// frames); deleted on drop, also when the test fails.
struct Lab {
    ns: String,
}

static N: AtomicU32 = AtomicU32::new(0);

impl Lab {
    fn new() -> Lab {
        let ns = format!(
            "vsrg{}x{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::SeqCst)
        );
        let lab = Lab { ns };
        assert!(sh(&["ip", "netns", "add", &lab.ns]), "ip netns add");
        for k in ["all", "default"] {
            assert!(sh(&[
                "ip",
                "netns",
                "exec",
                &lab.ns,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{k}.disable_ipv6=1"),
            ]));
        }
        assert!(sh(&[
            "ip", "-n", &lab.ns, "link", "add", "name", "va", "type", "veth", "peer", "name", "vb"
        ]));
        lab
    }

    fn ip(&self, args: &[&str]) {
        let mut a = vec!["ip", "-n", self.ns.as_str()];
        a.extend_from_slice(args);
        assert!(sh(&a), "{a:?}");
    }

    fn open(&self, ifname: &str, mode: RxMode) -> AfPacketPort {
        let name = ifname.to_string();
        sys::in_netns(&self.ns, move || {
            AfPacketPort::open_with(&name, mode).map_err(io::Error::other)
        })
        .unwrap_or_else(|e| panic!("open {ifname}: {e}"))
    }

    fn is_up(&self, ifname: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.ns, "-br", "link", "show", ifname])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(" UP "))
            .unwrap_or(false)
    }

    /// Receiver on `va` in `mode`, sender on `vb` (recvmmsg; it only sends).
    fn pair(&self, mode: RxMode) -> (AfPacketPort, AfPacketPort) {
        let rx = self.open("va", mode);
        let tx = self.open("vb", RxMode::Mmsg);
        // Both ends up: wait for the carrier (operational state UP).
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.is_up("va") || !self.is_up("vb") {
            assert!(Instant::now() < deadline, "veth pair has no carrier");
            std::thread::sleep(Duration::from_millis(20));
        }
        (rx, tx)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// A test frame of `len` bytes carrying `seq`.
fn test_frame(len: usize, seq: u32) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0xbb, 0x02, 0, 0, 0, 0, 0xaa];
    f.extend_from_slice(&ETH_TEST.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend((f.len()..len).map(|i| (i as u32 ^ seq) as u8));
    f
}

/// Sends every frame (in sendmmsg batches), asserting the kernel took each.
fn send_all(tx: &AfPacketPort, frames: &[Frame]) {
    let mut sc = IoScratch::default();
    for chunk_start in (0..frames.len()).step_by(BATCH) {
        let end = (chunk_start + BATCH).min(frames.len());
        let items: Vec<TxItem> = (0..end - chunk_start)
            .map(|i| TxItem {
                idx: i as u16,
                edit: TagEdit::None,
                peer: 0,
            })
            .collect();
        let mut st = PortStats::default();
        tx.send(&frames[chunk_start..end], &items, &mut st, &mut sc);
        assert_eq!(
            st.tx_packets as usize,
            end - chunk_start,
            "send refused: {st:?}"
        );
    }
}

fn frames_of(bytes: &[Vec<u8>]) -> Vec<Frame> {
    bytes.iter().map(|b| Frame::from_bytes(b)).collect()
}

/// What `recv` delivered: test frames (other traffic is skipped) with their
/// virtio headers, and the slots marked as drops.
#[derive(Default)]
struct Got {
    frames: Vec<(Vec<u8>, VnetHdr)>,
    drops: Vec<DropReason>,
}

/// Drains `rx` in worker-sized batches until it returns fewer than asked.
fn drain(rx: &AfPacketPort, batch: &mut [Frame], sc: &mut IoScratch, got: &mut Got) {
    loop {
        let n = rx.recv(batch, sc).expect("recv");
        for f in &batch[..n] {
            if let Some(r) = f.rx_drop {
                got.drops.push(r);
            } else if f.len() >= 14 && f.data()[12..14] == ETH_TEST.to_be_bytes()
                || f.len() >= 18 && f.data()[16..18] == ETH_TEST.to_be_bytes()
                || f.len() >= 22 && f.data()[20..22] == ETH_TEST.to_be_bytes()
            {
                got.frames.push((f.data().to_vec(), f.vnet()));
            }
        }
        if n < batch.len() {
            return;
        }
    }
}

/// Receives until `want` test frames (and drops) came, or 5 s passed.
fn receive(rx: &AfPacketPort, want: usize) -> Got {
    let mut batch: Vec<Frame> = (0..BATCH).map(|_| Frame::new()).collect();
    let mut sc = IoScratch::default();
    let mut got = Got::default();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.frames.len() + got.drops.len() < want && Instant::now() < deadline {
        drain(rx, &mut batch, &mut sc, &mut got);
        std::thread::sleep(Duration::from_millis(5));
    }
    got
}

/// Small frames through the ring, and through recvmmsg: every one arrives,
/// in order, byte for byte, with nothing counted as dropped.
#[test]
fn small_frames_arrive_whole_on_both_paths() {
    if !root() {
        return;
    }
    for mode in [RxMode::Ring(RingGeometry::default()), RxMode::Mmsg] {
        let lab = Lab::new();
        let (rx, tx) = lab.pair(mode);
        assert_eq!(rx.uses_ring(), matches!(mode, RxMode::Ring(_)));
        let sent: Vec<Vec<u8>> = (0..1000u32)
            .map(|i| test_frame(60 + (i as usize * 37) % 1455, i))
            .collect();
        send_all(&tx, &frames_of(&sent));
        let got = receive(&rx, sent.len());
        assert!(got.drops.is_empty(), "{mode:?}: drops {:?}", got.drops);
        assert_eq!(got.frames.len(), sent.len(), "{mode:?}");
        for (i, ((g, v), s)) in got.frames.iter().zip(&sent).enumerate() {
            assert_eq!(g, s, "{mode:?}: frame {i}");
            assert_eq!(*v, VnetHdr::default(), "{mode:?}: frame {i}");
        }
        assert_eq!(rx.kernel_drops(), 0, "{mode:?}");
    }
}

/// Frames bigger than a slot (jumbo frames, a 64 KiB TCP GSO super-frame)
/// take the TP_STATUS_COPY path and come out whole, with their offload
/// metadata, in order with the small frames around them.
#[test]
fn frames_bigger_than_a_slot_come_whole_and_in_order() {
    if !root() {
        return;
    }
    let lab = Lab::new();
    lab.ip(&["link", "set", "dev", "va", "mtu", "9000"]);
    lab.ip(&["link", "set", "dev", "vb", "mtu", "9000"]);
    let (rx, tx) = lab.pair(RxMode::Ring(RingGeometry::default()));
    assert!(rx.uses_ring());

    let mut sent: Vec<Vec<u8>> = Vec::new();
    for i in 0..200u32 {
        sent.push(test_frame(if i % 3 == 1 { 9000 } else { 100 }, i));
    }
    send_all(&tx, &frames_of(&sent));
    let got = receive(&rx, sent.len());
    assert!(got.drops.is_empty(), "drops {:?}", got.drops);
    assert_eq!(got.frames.len(), sent.len());
    for (i, ((g, _), s)) in got.frames.iter().zip(&sent).enumerate() {
        assert_eq!(g.len(), s.len(), "frame {i}");
        assert!(g == s, "frame {i} differs");
    }

    // A TCP/IPv4 super-frame: 60000 bytes of payload, MSS 1448.
    let payload = 60_000usize;
    let mut f = vec![0x02, 0, 0, 0, 0, 0xbb, 0x02, 0, 0, 0, 0, 0xaa, 0x08, 0x00];
    let tot = (20 + 20 + payload) as u16;
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 9, 0, 1, 10, 9, 0, 2,
    ];
    ip[2..4].copy_from_slice(&tot.to_be_bytes());
    let sum = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!((sum & 0xffff) + (sum >> 16)) as u16).to_be_bytes());
    f.extend_from_slice(&ip);
    let tcp = [
        0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
    ];
    f.extend_from_slice(&tcp);
    f.extend((0..payload).map(|i| (i % 251) as u8));
    let vnet = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    let mut gso = Frame::from_bytes(&f);
    gso.set_vnet(&vnet);
    let small = test_frame(80, 7777);
    send_all(
        &tx,
        &[gso, Frame::from_bytes(&small), Frame::from_bytes(&small)],
    );
    let mut batch: Vec<Frame> = (0..BATCH).map(|_| Frame::new()).collect();
    let mut sc = IoScratch::default();
    let mut all = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while all.len() < 3 && Instant::now() < deadline {
        let n = rx.recv(&mut batch, &mut sc).expect("recv");
        for b in &batch[..n] {
            assert_eq!(b.rx_drop, None);
            all.push((b.data().to_vec(), b.vnet()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(all.len(), 3, "super-frame and two small frames");
    let (data, v) = &all[0];
    assert_eq!(data.len(), f.len(), "the super-frame is whole");
    assert!(data == &f);
    assert_eq!(v.gso_type, VnetHdr::GSO_TCPV4, "{v:?}");
    assert_eq!(v.gso_size, 1448, "{v:?}");
    assert_eq!(
        (v.flags & VnetHdr::F_NEEDS_CSUM, v.csum_start, v.csum_offset),
        (1, 34, 16)
    );
    assert_eq!(all[1].0, small);
    assert_eq!(all[2].0, small);
    assert_eq!(rx.kernel_drops(), 0);
}

/// veth takes 802.1Q and 802.1ad tags off on receive (into the skb, and the
/// ring's tp_vlan_tci/tp_vlan_tpid); the port puts them back in band, so
/// the frames read exactly as they were sent.
#[test]
fn vlan_tags_are_restored_on_both_paths() {
    if !root() {
        return;
    }
    for mode in [RxMode::Ring(RingGeometry::default()), RxMode::Mmsg] {
        let lab = Lab::new();
        let (rx, tx) = lab.pair(mode);
        let mut sent = Vec::new();
        for (i, tags) in [
            vec![(0x8100u16, 0x0064u16)],
            vec![(0x8100, 0x6001)],
            vec![(0x88a8, 0x00c8)],
            vec![(0x88a8, 0x0010), (0x8100, 0x0020)],
            vec![(0x8100, 0x0000)],
        ]
        .into_iter()
        .enumerate()
        {
            let plain = test_frame(100, i as u32);
            let mut f = plain[..12].to_vec();
            for (tpid, tci) in tags {
                f.extend_from_slice(&tpid.to_be_bytes());
                f.extend_from_slice(&tci.to_be_bytes());
            }
            f.extend_from_slice(&plain[12..]);
            sent.push(f);
        }
        send_all(&tx, &frames_of(&sent));
        let got = receive(&rx, sent.len());
        assert!(got.drops.is_empty(), "{mode:?}");
        assert_eq!(got.frames.len(), sent.len(), "{mode:?}");
        for ((g, _), s) in got.frames.iter().zip(&sent) {
            assert_eq!(g, s, "{mode:?}");
        }
    }
}

/// A ring of eight slots and nobody reading: the rest is dropped by the
/// kernel and counted (PACKET_STATISTICS), including the frames reported
/// with TP_STATUS_LOSING while the count was unread.
#[test]
fn ring_full_drops_are_counted() {
    if !root() {
        return;
    }
    let lab = Lab::new();
    let geo = RingGeometry {
        frame_size: 2048,
        block_size: 4096,
        block_nr: 4,
    };
    let (rx, tx) = lab.pair(RxMode::Ring(geo));
    assert!(rx.uses_ring());
    let sent: Vec<Vec<u8>> = (0..40).map(|i| test_frame(100, i)).collect();
    send_all(&tx, &frames_of(&sent));
    std::thread::sleep(Duration::from_millis(200));
    let got = receive(&rx, 8);
    assert_eq!(got.frames.len(), 8, "the ring holds eight");
    for (i, (g, _)) in got.frames.iter().enumerate() {
        assert_eq!(g, &sent[i], "the first eight, in order");
    }
    // More frames while the drop count is unread: these carry
    // TP_STATUS_LOSING, and receiving them collects the count.
    let more: Vec<Vec<u8>> = (100..104).map(|i| test_frame(100, i)).collect();
    send_all(&tx, &frames_of(&more));
    let got2 = receive(&rx, 4);
    assert_eq!(got2.frames.len(), 4);
    assert_eq!(rx.kernel_drops(), 32, "40 sent, 8 kept");
    assert_eq!(rx.kernel_drops(), 32, "a running total");
}

/// Edge-triggered readiness (as the worker polls) and a receiver that reads
/// only when told: every frame is seen, none waits in the ring without an
/// event to announce it.
#[test]
fn edge_triggered_poll_never_leaves_a_frame_behind() {
    if !root() {
        return;
    }
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    let lab = Lab::new();
    let (rx, tx) = lab.pair(RxMode::Ring(RingGeometry::default()));
    let mut poll = Poll::new().expect("poll");
    let fd = rx.fd();
    poll.registry()
        .register(&mut SourceFd(&fd), Token(0), Interest::READABLE)
        .expect("register");
    const TOTAL: u32 = 20_000;
    let sender = std::thread::spawn(move || {
        let mut x: u32 = 12345;
        let mut seq = 0;
        while seq < TOTAL {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let burst = (x % 150 + 1).min(TOTAL - seq);
            let fr: Vec<Frame> = (seq..seq + burst)
                .map(|i| Frame::from_bytes(&test_frame(60 + (i as usize % 200), i)))
                .collect();
            send_all(&tx, &fr);
            seq += burst;
            if x & 3 == 0 {
                std::thread::sleep(Duration::from_micros(u64::from(x % 300)));
            }
        }
        tx
    });
    let mut events = Events::with_capacity(8);
    let mut batch: Vec<Frame> = (0..BATCH).map(|_| Frame::new()).collect();
    let mut sc = IoScratch::default();
    let mut got = Got::default();
    let mut next = 0u32;
    loop {
        match poll.poll(&mut events, Some(Duration::from_secs(2))) {
            Ok(()) => {}
            // A signal to the test process (another test's child exiting)
            // cuts the wait short; the worker retries the same way.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("poll: {e}"),
        }
        if events.is_empty() {
            break; // quiet for 2 s: the sender is long done
        }
        let before = got.frames.len();
        drain(&rx, &mut batch, &mut sc, &mut got);
        for (g, _) in &got.frames[before..] {
            let seq = u32::from_be_bytes([g[14], g[15], g[16], g[17]]);
            assert!(seq >= next, "out of order: {seq} after {next}");
            next = seq + 1;
        }
    }
    let _tx = sender.join().expect("sender");
    let drops = rx.kernel_drops();
    assert!(got.drops.is_empty());
    assert_eq!(
        got.frames.len() as u64 + drops,
        u64::from(TOTAL),
        "received {} + dropped {drops}",
        got.frames.len()
    );
    eprintln!("received {}, ring drops {drops}", got.frames.len());
}

/// A ring the kernel refuses (block size not a multiple of the page size):
/// the port falls back to recvmmsg and works.
#[test]
fn refused_ring_falls_back_to_recvmmsg() {
    if !root() {
        return;
    }
    let lab = Lab::new();
    let geo = RingGeometry {
        frame_size: 2048,
        block_size: 6144,
        block_nr: 4,
    };
    let (rx, tx) = lab.pair(RxMode::Ring(geo));
    assert!(!rx.uses_ring());
    let sent: Vec<Vec<u8>> = (0..100).map(|i| test_frame(200, i)).collect();
    send_all(&tx, &frames_of(&sent));
    let got = receive(&rx, sent.len());
    assert_eq!(got.frames.len(), sent.len());
}

/// The interface goes away: the ring port, which reads no socket to learn
/// it, reports the error once the poller flags it (EPOLLERR, passed on as
/// `error_event`).
#[test]
fn deleted_interface_is_reported_by_the_ring_port() {
    if !root() {
        return;
    }
    let lab = Lab::new();
    let (rx, _tx) = lab.pair(RxMode::Ring(RingGeometry::default()));
    let mut batch: Vec<Frame> = (0..BATCH).map(|_| Frame::new()).collect();
    let mut sc = IoScratch::default();
    assert_eq!(rx.recv(&mut batch, &mut sc).expect("empty ring"), 0);
    lab.ip(&["link", "del", "dev", "vb"]);
    rx.error_event();
    let e = rx.recv(&mut batch, &mut sc).expect_err("device gone");
    assert_eq!(e.raw_os_error(), Some(libc::ENETDOWN), "{e}");
    // Asked in the port's namespace, as the daemon would.
    let gone = sys::in_netns(&lab.ns, || Ok(rx.is_gone(&e))).expect("in netns");
    assert!(gone);
}
