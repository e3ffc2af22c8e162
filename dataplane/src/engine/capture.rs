//! `vswitchctl capture`: copies of the frames a port receives or sends,
//! taken inside the data path (so ports with no kernel device, VXLAN and
//! router interfaces, can be captured too), handed to the control client,
//! which writes pcap. Off unless asked: the workers then pay one flag load
//! per batch. A reader that does not keep up loses capture records
//! (counted), never frames.

use crate::bridge::PortId;
use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Records queued for one capture at most.
pub const CAPTURE_QUEUE: usize = 4096;

/// One captured frame: wall-clock time (ns since the epoch), direction,
/// the bytes as on the wire (tags included; a GSO super-frame whole).
pub struct Record {
    pub ts_ns: u64,
    pub tx: bool,
    pub data: Vec<u8>,
}

pub(crate) struct Sub {
    pub port: PortId,
    pub rx: bool,
    pub tx: bool,
    chan: Sender<Record>,
    pub lost: Arc<AtomicU64>,
    alive: Arc<AtomicBool>,
}

/// The client's end of a capture: records arrive on `rx`; dropping it
/// stops the capture.
pub struct Capture {
    pub rx: Receiver<Record>,
    /// Records lost because the reader fell behind.
    pub lost: Arc<AtomicU64>,
    alive: Arc<AtomicBool>,
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Release);
    }
}

pub(crate) fn new(port: PortId, rx: bool, tx: bool) -> (Sub, Capture) {
    let (s, r) = crossbeam_channel::bounded(CAPTURE_QUEUE);
    let lost = Arc::new(AtomicU64::new(0));
    let alive = Arc::new(AtomicBool::new(true));
    (
        Sub {
            port,
            rx,
            tx,
            chan: s,
            lost: lost.clone(),
            alive: alive.clone(),
        },
        Capture { rx: r, lost, alive },
    )
}

impl Sub {
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Hands over one record; a full queue loses it (counted).
    pub fn offer(&self, ts_ns: u64, tx: bool, data: Vec<u8>) {
        if self.chan.try_send(Record { ts_ns, tx, data }).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Wall-clock time in ns since the epoch.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
