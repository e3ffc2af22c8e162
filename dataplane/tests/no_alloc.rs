//! Steady-state forwarding allocates nothing per frame: a counting global
//! allocator counts the worker threads' allocations while real frames flow
//! between two network namespaces through TAP ports, and through AF_PACKET
//! ports (the TPACKET_V2 ring path), and while they are routed and
//! source-NATed between two bridges by the router.
//! Needs root (TAP devices, namespaces); skipped visibly otherwise.

use dataplane::api::Request;
use dataplane::config::{PortConfig, PortType, RifConfig, RifType, SnatConfig};
use dataplane::engine::{self, EngineOptions};
use dataplane::port::afpacket::RxMode;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The tests share the counter: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Counting;
/// Allocations made by threads that opted in (the engine thread).
static ALLOCS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

struct Netns(Vec<String>);
impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let ok = unsafe { libc::geteuid() } == 0 && sh(&["ip", "netns", "list"]);
    if !ok {
        eprintln!("SKIPPED: needs root and iproute2");
    }
    ok
}

fn count_this_thread() {
    COUNTED.with(|c| c.set(true));
}

/// Starts an engine (in the calling thread's namespace) with ports `p1` and
/// `p2` made by `port`, warms up with a few pings from `h1` to `h2` at
/// `net.1` and `net.2`, then counts the workers' allocations during 2000
/// flood pings. `rings`: how many packet-socket rings the ports must have
/// mapped into this process.
fn count_while_forwarding(
    h1: &str,
    h2: &str,
    net: &str,
    rings: usize,
    port: impl Fn(&str, &str) -> PortConfig,
) {
    let handle = engine::start(EngineOptions {
        workers: 2,
        worker_init: Some(count_this_thread),
        ..Default::default()
    })
    .unwrap();
    handle
        .call(Request::AddBr {
            name: "br0".into(),
            stp: false,
            ageing_s: None,
            fdb_max: None,
            priority: None,
            hello_s: None,
            max_age_s: None,
            forward_delay_s: None,
        })
        .unwrap();
    for (name, ns) in [("p1", h1), ("p2", h2)] {
        handle
            .call(Request::AddPort {
                bridge: "br0".into(),
                port: port(name, ns),
            })
            .unwrap();
    }
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert_eq!(
        maps.lines().filter(|l| l.contains("socket:[")).count(),
        rings,
        "packet rings mapped"
    );
    for (i, ns) in [h1, h2].iter().enumerate() {
        assert!(sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{net}.{}/24", i + 1),
            "dev",
            "eth0"
        ]));
        assert!(sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]));
    }
    let dst = format!("{net}.2");
    // Warm up: ARP, FDB learning, first-use allocations.
    assert!(sh(&[
        "ip", "netns", "exec", h1, "ping", "-c", "3", "-i", "0.2", "-q", &dst
    ]));

    let before = ALLOCS.load(Ordering::Relaxed);
    // 2000 echo requests and replies: 4000 frames through the engine.
    let ok = sh(&[
        "ip", "netns", "exec", h1, "ping", "-f", "-c", "2000", "-q", "-w", "20", &dst,
    ]);
    std::thread::sleep(Duration::from_millis(100));
    let during = ALLOCS.load(Ordering::Relaxed) - before;
    assert!(ok, "ping through the switch failed");

    let stats = handle
        .call(Request::Stats {
            port: Some("p2".into()),
        })
        .unwrap();
    assert!(handle.shutdown());
    let tx = stats[0]["tx_packets"].as_u64().unwrap();
    assert!(tx >= 2000, "frames forwarded: {tx}");
    eprintln!("allocations while forwarding: {during}, frames out of p2: {tx}");
    // A handful for timers or logging at most; nothing proportional to 4000 frames.
    assert!(
        during < 20,
        "{during} allocations while forwarding 4000 frames"
    );
}

#[test]
fn forwarding_does_not_allocate_per_frame() {
    if !root() {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let id = std::process::id() % 100_000;
    let h1 = format!("vsna{id}a");
    let h2 = format!("vsna{id}b");
    let _guard = Netns(vec![h1.clone(), h2.clone()]);
    assert!(sh(&["ip", "netns", "add", &h1]) && sh(&["ip", "netns", "add", &h2]));
    count_while_forwarding(&h1, &h2, &format!("10.251.{}", id % 250), 0, |name, ns| {
        let mut p = PortConfig::new(name, PortType::Tap);
        p.netns = Some(ns.into());
        p.ifname = Some("eth0".into());
        p
    });
}

/// The same through AF_PACKET ports on veth pairs (the TPACKET_V2 ring, or
/// recvmmsg under VSWITCH_AFPACKET_RING=0). The engine runs in a
/// switch namespace of its own: this test thread enters it before starting
/// the engine (whose threads inherit it) and ends with the test.
#[test]
fn afpacket_forwarding_does_not_allocate_per_frame() {
    if !root() {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let id = std::process::id() % 100_000;
    let sw = format!("vsnr{id}s");
    let h1 = format!("vsnr{id}a");
    let h2 = format!("vsnr{id}b");
    let _guard = Netns(vec![sw.clone(), h1.clone(), h2.clone()]);
    for ns in [&sw, &h1, &h2] {
        assert!(sh(&["ip", "netns", "add", ns]));
    }
    for (i, h) in [&h1, &h2].iter().enumerate() {
        assert!(sh(&[
            "ip",
            "-n",
            &sw,
            "link",
            "add",
            "name",
            &format!("s{}", i + 1),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            h
        ]));
    }
    // The ring unless VSWITCH_AFPACKET_RING=0 asks for recvmmsg.
    let rings = match RxMode::from_env() {
        RxMode::Ring(_) => 2,
        RxMode::Mmsg => 0,
    };
    let nsfd = dataplane::sys::open_netns(&sw).unwrap();
    // SAFETY: setns(2) on this test's own thread (libtest runs each test on
    // a thread of its own that ends with it), with a descriptor we own.
    let r = unsafe { libc::setns(nsfd.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
    count_while_forwarding(
        &h1,
        &h2,
        &format!("10.252.{}", id % 250),
        rings,
        |name, _| {
            let mut p = PortConfig::new(name, PortType::Afpacket);
            p.ifname = Some(format!("s{}", &name[1..]));
            p
        },
    );
}

/// Routed and NATed traffic: bridges `bra` (TAP host `h1`, rif `gwa`) and
/// `brb` (TAP host `h2`, rif `gwb` with masquerade), as in
/// `examples/docker0.sh`. `h1` pings `h2` through the router with one ICMP
/// identifier (one NAT flow); warm-up resolves ARP on both sides and creates
/// the flow, then 2000 flood pings (8000 frames through the router: each
/// echo enters a bridge, is routed and NATed, and leaves the other bridge)
/// are counted.
#[test]
fn routed_and_natted_forwarding_does_not_allocate_per_frame() {
    if !root() {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let id = std::process::id() % 100_000;
    let h1 = format!("vsnt{id}a");
    let h2 = format!("vsnt{id}b");
    let _guard = Netns(vec![h1.clone(), h2.clone()]);
    assert!(sh(&["ip", "netns", "add", &h1]) && sh(&["ip", "netns", "add", &h2]));
    // Two /25s of one /24: h1's side and h2's side.
    let net = format!("10.253.{}", id % 250);
    let handle = engine::start(EngineOptions {
        workers: 2,
        worker_init: Some(count_this_thread),
        ..Default::default()
    })
    .unwrap();
    for (br, port, ns, rif, addr) in [
        ("bra", "p1", &h1, "gwa", format!("{net}.1/25")),
        ("brb", "p2", &h2, "gwb", format!("{net}.129/25")),
    ] {
        handle
            .call(Request::AddBr {
                name: br.into(),
                stp: false,
                ageing_s: None,
                fdb_max: None,
                priority: None,
                hello_s: None,
                max_age_s: None,
                forward_delay_s: None,
            })
            .unwrap();
        let mut p = PortConfig::new(port, PortType::Tap);
        p.netns = Some(ns.clone());
        p.ifname = Some("eth0".into());
        handle
            .call(Request::AddPort {
                bridge: br.into(),
                port: p,
            })
            .unwrap();
        handle
            .call(Request::AddRif {
                rif: RifConfig {
                    name: rif.into(),
                    kind: RifType::Bridge,
                    bridge: Some(br.into()),
                    vlan: None,
                    addr: addr.parse().unwrap(),
                    mac: None,
                    netns: None,
                    ifname: None,
                    mtu: None,
                },
            })
            .unwrap();
    }
    handle
        .call(Request::AddSnat {
            snat: SnatConfig {
                out: "gwb".into(),
                to: None,
                src: None,
            },
        })
        .unwrap();
    // h1 routes everything through gwa; h2 knows only its own subnet (the
    // replies find their way back through the NAT flow alone).
    for (ns, addr) in [(&h1, format!("{net}.2/25")), (&h2, format!("{net}.130/25"))] {
        assert!(sh(&["ip", "-n", ns, "addr", "add", &addr, "dev", "eth0"]));
        assert!(sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]));
    }
    assert!(sh(&[
        "ip",
        "-n",
        &h1,
        "route",
        "add",
        "default",
        "via",
        &format!("{net}.1")
    ]));
    let dst = format!("{net}.130");
    // Warm up: ARP both sides (the router's queue for h2), FDB learning,
    // the NAT flow of identifier 4242, first-use allocations.
    assert!(sh(&[
        "ip", "netns", "exec", &h1, "ping", "-e", "4242", "-c", "3", "-i", "0.2", "-q", &dst
    ]));
    let nat = handle.call(Request::NatShow).unwrap();
    eprintln!("NAT table after warm-up: {nat}");

    let before = ALLOCS.load(Ordering::Relaxed);
    let ok = sh(&[
        "ip", "netns", "exec", &h1, "ping", "-e", "4242", "-f", "-c", "2000", "-q", "-w", "20",
        &dst,
    ]);
    std::thread::sleep(Duration::from_millis(100));
    let during = ALLOCS.load(Ordering::Relaxed) - before;
    assert!(ok, "ping through the router failed");
    let tx = tx_packets(&handle, "p2");
    assert!(tx >= 2000, "frames routed out of p2: {tx}");
    eprintln!("allocations while routing and NATing ICMP: {during}, frames out of p2: {tx}");

    // A UDP stream of one flow (h1:40000 to h2:9999, where a socket that
    // never reads takes it: no ICMP comes back). Warm-up creates the flow.
    let _sink = Kill(
        Command::new("ip")
            .args(["netns", "exec", &h2, "python3", "-c", UDP_SINK])
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let udp = |n: &str| {
        sh(&[
            "ip", "netns", "exec", &h1, "python3", "-c", UDP_SEND, &dst, n,
        ])
    };
    assert!(udp("3"));
    std::thread::sleep(Duration::from_millis(100));
    let tx0 = tx_packets(&handle, "p2");
    let before = ALLOCS.load(Ordering::Relaxed);
    let ok = udp("4000");
    std::thread::sleep(Duration::from_millis(100));
    let during_udp = ALLOCS.load(Ordering::Relaxed) - before;
    assert!(ok, "the UDP sender failed");
    let udp_tx = tx_packets(&handle, "p2") - tx0;

    let nat = handle.call(Request::NatShow).unwrap();
    assert!(handle.shutdown());
    let flows = nat.as_array().map_or(0, Vec::len);
    assert_eq!(flows, 2, "one ICMP and one UDP NAT flow: {nat}");
    eprintln!(
        "allocations while routing and NATing UDP: {during_udp}, datagrams out of p2: {udp_tx}"
    );
    assert!(udp_tx >= 1000, "datagrams routed out of p2: {udp_tx}");
    assert!(
        during < 20,
        "{during} allocations while routing and NATing 8000 ICMP frames"
    );
    assert!(
        during_udp < 20,
        "{during_udp} allocations while routing and NATing {udp_tx} UDP datagrams"
    );
}

/// Binds UDP port 9999 and never reads (the kernel drops what overflows).
const UDP_SINK: &str = "import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('', 9999))
time.sleep(60)";

/// Sends argv[2] datagrams from port 40000 to argv[1]:9999, paced.
const UDP_SEND: &str = "import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('', 40000))
for i in range(int(sys.argv[2])):
    s.sendto(b'x' * 64, (sys.argv[1], 9999))
    if i % 20 == 19:
        time.sleep(0.001)";

fn tx_packets(handle: &engine::EngineHandle, port: &str) -> u64 {
    let stats = handle
        .call(Request::Stats {
            port: Some(port.into()),
        })
        .unwrap();
    stats[0]["tx_packets"].as_u64().unwrap()
}

/// A child process this test started, killed (by its own handle) at the
/// end even on failure.
struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
