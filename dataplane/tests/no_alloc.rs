//! Steady-state forwarding allocates nothing per frame: a counting global
//! allocator counts the worker threads' allocations while real frames flow
//! between two network namespaces through TAP ports.
//! Needs root (TAP devices, namespaces); skipped visibly otherwise.

use dataplane::api::Request;
use dataplane::config::{PortConfig, PortType};
use dataplane::engine::{self, EngineOptions};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

#[test]
fn forwarding_does_not_allocate_per_frame() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !sh(&["ip", "netns", "list"]) {
        eprintln!("SKIPPED: needs root and iproute2");
        return;
    }
    let id = std::process::id() % 100_000;
    let h1 = format!("vsna{id}a");
    let h2 = format!("vsna{id}b");
    let _guard = Netns(vec![h1.clone(), h2.clone()]);
    assert!(sh(&["ip", "netns", "add", &h1]) && sh(&["ip", "netns", "add", &h2]));

    fn count_this_thread() {
        COUNTED.with(|c| c.set(true));
    }
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
    for (name, ns) in [("p1", &h1), ("p2", &h2)] {
        let mut p = PortConfig::new(name, PortType::Tap);
        p.netns = Some(ns.clone());
        p.ifname = Some("eth0".into());
        handle
            .call(Request::AddPort {
                bridge: "br0".into(),
                port: p,
            })
            .unwrap();
    }
    for (i, ns) in [&h1, &h2].iter().enumerate() {
        assert!(sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("10.251.{}.{}/24", id % 250, i + 1),
            "dev",
            "eth0"
        ]));
    }
    let dst = format!("10.251.{}.2", id % 250);
    // Warm up: ARP, FDB learning, first-use allocations.
    assert!(sh(&[
        "ip", "netns", "exec", &h1, "ping", "-c", "3", "-i", "0.2", "-q", &dst
    ]));

    let before = ALLOCS.load(Ordering::Relaxed);
    // 2000 echo requests and replies: 4000 frames through the engine.
    let ok = sh(&[
        "ip", "netns", "exec", &h1, "ping", "-f", "-c", "2000", "-q", "-w", "20", &dst,
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
