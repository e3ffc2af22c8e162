//! The whole forwarding pipeline (bridges, router, SNAT) on arbitrary input:
//! a fixed lab topology, then a sequence of steps read from the input, each
//! a batch of frames into one port of the lab (raw bytes with optional
//! fix-ups, or well-formed ARP/IPv4/ICMP/UDP/TCP frames from the lab's
//! hosts with optional mutations) or a time step with the router's timers.
//!
//! Properties: nothing panics; the neighbour table, its queues, the NAT
//! table and the FDBs stay within their limits; nothing is planned out of
//! a router interface's internal port, a port that is down or a slot that
//! does not exist; and every packet the router forwards or originates
//! leaves with a valid IPv4 header checksum and a TTL above zero.
//!
//! The lab and the step reader are in `fuzz/pipeline_lab.rs`, shared with
//! the deterministic test in `dataplane/tests/robustness.rs`.
#![no_main]
#[path = "../pipeline_lab.rs"]
mod lab;

use dataplane::packet::Frame;
use dataplane::pipeline::Plan;
use lab::{drive, Lab, BATCH, NPORTS};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

thread_local! {
    /// The lab and the buffers, made once (reset for each input).
    static LAB: RefCell<(Lab, Vec<Frame>, Plan)> = RefCell::new((
        Lab::new(),
        (0..BATCH).map(|_| Frame::new()).collect(),
        Plan::new(NPORTS, BATCH, 32),
    ));
}

fuzz_target!(|data: &[u8]| {
    LAB.with(|l| {
        let (lab, pool, plan) = &mut *l.borrow_mut();
        lab.reset();
        drive(lab, data, pool, plan);
    });
});
