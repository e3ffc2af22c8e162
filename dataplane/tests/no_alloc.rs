//! Steady-state forwarding allocates nothing per frame: a counting global
//! allocator counts the worker threads' allocations while real frames flow
//! between two network namespaces through TAP ports, and through AF_PACKET
//! ports (the TPACKET_V2 ring path).
//! Needs root (TAP devices, namespaces); skipped visibly otherwise.

use dataplane::api::Request;
use dataplane::config::{PortConfig, PortType};
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
