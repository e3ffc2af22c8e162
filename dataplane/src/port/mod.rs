//! Port backends: the contract between the engine and the kernel devices.
//!
//! Like Open vSwitch's `netdev_class`, every port kind implements one small
//! trait: drain up to a batch of frames, send a batch, expose a pollable fd.
//! Ports are shared by the workers (methods take `&self`); the scratch space
//! a call needs comes from the calling worker.
//! One file per kind. All kinds exchange frames with a `virtio_net_hdr` in
//! front (see [`crate::packet`]), so offloads are carried end to end. A TUN
//! port presents its IP packets as Ethernet frames ([`tun`]); an internal
//! port has no device at all and is never polled ([`internal`]).

pub mod afpacket;
pub mod internal;
pub mod tap;
pub mod tun;
mod tundev;
pub mod vhost_user;
pub use tundev::{DevError, Kind as DevKind};
pub mod vxlan;

use crate::bridge::vlan::TagEdit;
use crate::packet::Frame;
use crate::stats::{DropReason, PortStats};
use std::io;
use std::os::fd::RawFd;

pub use afpacket::AfPacketPort;
pub use internal::InternalPort;
pub use tap::TapPort;
pub use tun::TunPort;
pub use vhost_user::VhostUserPort;
pub use vxlan::VxlanPort;

/// One frame to send: which slot of the batch, and the tag edit for this port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxItem {
    pub idx: u16,
    pub edit: TagEdit,
    /// Tunnel ports: the remote to send to (0: every configured remote).
    pub peer: u16,
}

/// What a port backend can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Frames carry a virtio_net_hdr (GSO and partial checksums accepted).
    pub vnet_hdr: bool,
}

/// Per-worker scratch space the port kinds need for a syscall (message
/// headers, iovecs). Ports themselves are shared between workers (`&self`):
/// any worker may send on any port, the one that owns it receives.
#[derive(Default)]
pub struct IoScratch {
    pub(crate) mmsg: afpacket::MmsgScratch,
    pub(crate) vxlan: vxlan::VxlanScratch,
}

/// The contract every port kind implements.
pub trait Port {
    /// The descriptor the engine polls for readability.
    fn fd(&self) -> RawFd;

    /// Receives up to `frames.len()` frames into the given slots. Returns how
    /// many were filled; fewer than asked means the port is drained (the next
    /// readiness event will say when there is more). A frame slot left with
    /// length 0 was a bad receive and is counted as malformed by the caller.
    fn recv(&self, frames: &mut [Frame], scratch: &mut IoScratch) -> io::Result<usize>;

    /// Sends each item's frame with its tag edit applied, counting successes
    /// and failures in `stats`. Never blocks: what the device cannot take now
    /// is dropped and counted.
    fn send(
        &self,
        frames: &[Frame],
        items: &[TxItem],
        stats: &mut PortStats,
        scratch: &mut IoScratch,
    );

    /// The poller reported an error condition (EPOLLERR) on [`Port::fd`].
    /// A port whose receive makes no syscall (an mmap ring) would not see
    /// the error otherwise; the next [`Port::recv`] then reports it.
    fn error_event(&self) {}

    /// Whether a receive error means the device is gone for good (interface
    /// deleted, namespace destroyed) rather than a passing condition.
    fn is_gone(&self, err: &io::Error) -> bool;

    fn caps(&self) -> Caps;

    /// Frames the kernel dropped on their way to the switch since the port
    /// was opened (a running total).
    fn kernel_drops(&self) -> u64;

    /// Whether a receive would find something, if the port can tell without
    /// a syscall (a mapped ring: one load of a status word); `None` if only
    /// the poller can say. A spinning worker whose ports can all tell checks
    /// them directly instead of asking epoll before every batch.
    fn peek(&self) -> Option<bool> {
        None
    }
}

/// The port kinds, dispatched statically on the fast path.
pub enum AnyPort {
    Tap(TapPort),
    Tun(TunPort),
    AfPacket(AfPacketPort),
    Vxlan(VxlanPort),
    /// A guest's virtio-net over vhost-user.
    VhostUser(VhostUserPort),
    /// No device (a router interface): never registered with the poller.
    Internal(InternalPort),
}

macro_rules! dispatch {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            AnyPort::Tap($p) => $e,
            AnyPort::Tun($p) => $e,
            AnyPort::AfPacket($p) => $e,
            AnyPort::Vxlan($p) => $e,
            AnyPort::VhostUser($p) => $e,
            AnyPort::Internal($p) => $e,
        }
    };
}

impl Port for AnyPort {
    #[inline]
    fn fd(&self) -> RawFd {
        dispatch!(self, p => p.fd())
    }
    #[inline]
    fn recv(&self, frames: &mut [Frame], scratch: &mut IoScratch) -> io::Result<usize> {
        dispatch!(self, p => p.recv(frames, scratch))
    }
    #[inline]
    fn send(
        &self,
        frames: &[Frame],
        items: &[TxItem],
        stats: &mut PortStats,
        scratch: &mut IoScratch,
    ) {
        dispatch!(self, p => p.send(frames, items, stats, scratch))
    }
    fn error_event(&self) {
        dispatch!(self, p => p.error_event())
    }
    fn is_gone(&self, err: &io::Error) -> bool {
        dispatch!(self, p => p.is_gone(err))
    }
    fn caps(&self) -> Caps {
        dispatch!(self, p => p.caps())
    }
    fn kernel_drops(&self) -> u64 {
        dispatch!(self, p => p.kernel_drops())
    }
    #[inline]
    fn peek(&self) -> Option<bool> {
        dispatch!(self, p => p.peek())
    }
}

/// Errors that say a send failed only for now (retrying later may work).
pub(crate) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR)
    )
}

/// Counts the outcome of writing one frame of `bytes` to a device (a
/// writev's return): sent, dropped for now (`tx_queue_full`), or refused
/// (`tx_error`).
pub(crate) fn count_write(r: libc::ssize_t, bytes: usize, stats: &mut PortStats) {
    match crate::sys::cvt_size(r) {
        Ok(_) => {
            stats.tx_packets += 1;
            stats.tx_bytes += bytes as u64;
        }
        Err(e) if is_transient(&e) => stats.drop(DropReason::TxQueueFull),
        Err(_) => stats.drop(DropReason::TxError),
    }
}

/// recvmmsg(2) on a non-blocking socket: how many of `msgs` the kernel
/// filled, 0 when nothing is waiting. `msgs` must be prepared by the caller,
/// each pointing at buffers that outlive the call.
pub(crate) fn recvmmsg(fd: RawFd, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    loop {
        // SAFETY: the caller prepared every message to point at its own
        // exclusively borrowed buffers, which outlive the call; the kernel
        // writes at most `msgs.len()` headers.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        match crate::sys::cvt(r) {
            Ok(k) => return Ok(k as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}

/// Sends prepared messages with sendmmsg(2), counting each in `stats`:
/// bytes are the message's iovecs (`stride` slots per message in `iovs`)
/// less `overhead` (a header that is not part of the frame). What the
/// socket cannot take now is dropped as `tx_queue_full`; a device gone or
/// down drops the rest as `tx_error`; any other refusal skips one message
/// (`tx_error`).
pub(crate) fn sendmmsg_counted(
    fd: RawFd,
    msgs: &mut [libc::mmsghdr],
    iovs: &[libc::iovec],
    stride: usize,
    overhead: usize,
    stats: &mut PortStats,
) {
    let n = msgs.len();
    let mut off = 0;
    while off < n {
        // SAFETY: the caller prepared `msgs` to point at names and iovecs
        // over buffers borrowed for the duration of this call; the kernel
        // only reads them.
        let r = unsafe {
            libc::sendmmsg(
                fd,
                msgs.as_mut_ptr().add(off),
                (n - off) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        match crate::sys::cvt(r) {
            Ok(sent) => {
                let sent = sent as usize;
                for (k, m) in msgs.iter().enumerate().skip(off).take(sent) {
                    stats.tx_packets += 1;
                    let v = &iovs[stride * k..stride * k + m.msg_hdr.msg_iovlen];
                    let bytes: usize = v.iter().map(|v| v.iov_len).sum();
                    stats.tx_bytes += bytes.saturating_sub(overhead) as u64;
                }
                off += sent;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_transient(&e) => {
                stats.drop_n(DropReason::TxQueueFull, (n - off) as u64);
                return;
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENETDOWN) | Some(libc::ENXIO)) => {
                stats.drop_n(DropReason::TxError, (n - off) as u64);
                return;
            }
            Err(_) => {
                // This one message is bad (too big, no route, ...): skip it.
                stats.drop(DropReason::TxError);
                off += 1;
            }
        }
    }
}
