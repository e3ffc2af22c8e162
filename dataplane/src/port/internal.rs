//! Internal ports: a bridge port with no device behind it.
//!
//! A router interface attached to a bridge is such a port: frames the bridge
//! forwards to it are taken by the engine (handed to the router) before any
//! send, and frames the router emits enter the bridge as if received on it.
//! The port itself therefore does no I/O: it has no file descriptor
//! ([`Port::fd`] is -1), never has anything to receive and sends nothing.
//!
//! **The engine must never register an internal port with the poller** (there
//! is no descriptor to poll) nor rely on [`Port::send`] to deliver to it.

use super::{Caps, IoScratch, Port, TxItem};
use crate::packet::Frame;
use crate::stats::PortStats;
use std::io;
use std::os::fd::RawFd;

/// A port without a device (see the module documentation).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InternalPort;

impl InternalPort {
    pub fn new() -> InternalPort {
        InternalPort
    }
}

impl Port for InternalPort {
    /// -1: there is nothing to poll.
    fn fd(&self) -> RawFd {
        -1
    }

    /// Nothing ever arrives: frames from the router are injected by the
    /// engine, not received.
    fn recv(&self, _frames: &mut [Frame], _scratch: &mut IoScratch) -> io::Result<usize> {
        Ok(0)
    }

    /// Does nothing and counts nothing: the engine intercepts frames for an
    /// internal port before the send stage.
    fn send(
        &self,
        _frames: &[Frame],
        _items: &[TxItem],
        _stats: &mut PortStats,
        _scratch: &mut IoScratch,
    ) {
    }

    fn is_gone(&self, _err: &io::Error) -> bool {
        false
    }

    /// Frames stay in the switch's own buffers, so any offload state
    /// (GSO, partial checksum) is accepted as it is.
    fn caps(&self) -> Caps {
        Caps { vnet_hdr: true }
    }

    fn kernel_drops(&self) -> u64 {
        0
    }

    /// Never anything to receive (a spinning worker need not ask the poller).
    fn peek(&self) -> Option<bool> {
        Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::vlan::TagEdit;

    #[test]
    fn does_no_io() {
        let p = InternalPort::new();
        let mut sc = IoScratch::default();
        let mut frames = vec![Frame::from_bytes(&[0xff; 60])];
        assert_eq!(p.fd(), -1);
        assert_eq!(p.recv(&mut frames, &mut sc).unwrap(), 0);
        assert_eq!(frames[0].len(), 60, "recv leaves the slots alone");
        let mut st = PortStats::default();
        let items = [TxItem {
            idx: 0,
            edit: TagEdit::None,
            peer: 0,
        }];
        p.send(&frames, &items, &mut st, &mut sc);
        assert_eq!((st.tx_packets, st.tx_bytes), (0, 0));
        assert!(st.drops.iter().all(|&d| d == 0));
        assert_eq!(p.peek(), Some(false));
        assert!(!p.is_gone(&io::Error::from_raw_os_error(libc::ENODEV)));
        assert!(p.caps().vnet_hdr);
        assert_eq!(p.kernel_drops(), 0);
    }
}
