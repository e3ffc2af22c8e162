//! AF_PACKET ports: attach an existing interface (a veth end, a NIC, someone
//! else's TAP) in promiscuous mode.
//!
//! The socket uses PACKET_VNET_HDR, so GSO super-frames from veth arrive whole
//! with their offload metadata and leave the same way; PACKET_IGNORE_OUTGOING
//! so the switch never sees its own transmissions; PACKET_QDISC_BYPASS to skip
//! the egress qdisc. Frames are sent in batches with sendmmsg.
//!
//! Receive goes through an mmap'ed TPACKET_V2 ring: the kernel writes each
//! frame (virtio header in front) into a slot of memory shared with us and
//! flips the slot's status word; [`Port::recv`] copies ready slots into the
//! worker's frames and hands them back, with no syscall per batch and no
//! socket-buffer queueing per frame. Slots are [`RingGeometry::frame_size`]
//! bytes; a frame too big for one (a 64 KiB GSO super-frame) is also queued
//! on the socket (PACKET_COPY_THRESH) and its slot marked TP_STATUS_COPY: it
//! is then read whole with recvmsg, in ring order.
//!
//! Why V2 and not V3: a V3 block is handed to user space only when it is
//! full or its retire timer fires, and that timer counts in jiffies (4 ms at
//! HZ=250). Through a lightly loaded switch every ping would wait for it. V2
//! has a status word per frame, so a frame is ours the moment it is written.
//!
//! If the ring cannot be set up (old kernel, memory, a refused geometry) the
//! port falls back to recvmmsg into the frames (logged at debug level).
//! `VSWITCH_AFPACKET_RING=0` in the daemon's environment forces that path
//! (for comparisons and tests); [`AfPacketPort::open_with`] chooses per port.

use super::{Caps, IoScratch, Port, TxItem};
use crate::bridge::vlan::{TagEdit, TPID_8021Q};
use crate::packet::{Frame, EDIT_PREFIX_MAX, VNET_HDR_LEN};
use crate::stats::{DropReason, PortStats};
use crate::sys::{self, cvt, setsockopt_int};
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

// Socket options and ring constants of include/uapi/linux/if_packet.h.
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_COPY_THRESH: libc::c_int = 7;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// `enum tpacket_versions`: TPACKET_V1 = 0, TPACKET_V2 = 1.
const TPACKET_V2: libc::c_int = 1;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1 << 0;
const TP_STATUS_COPY: u32 = 1 << 1;
const TP_STATUS_LOSING: u32 = 1 << 2;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
/// `TPACKET2_HDRLEN`: the aligned `struct tpacket2_hdr` (32 bytes) and the
/// `struct sockaddr_ll` (20) the kernel writes after it; frame data (and our
/// virtio header in front of it) comes later in the slot.
const TPACKET2_HDRLEN: usize = 32 + 20;
/// Smallest `tp_mac` that leaves room for the virtio header after the
/// slot's own headers.
const MIN_MAC: usize = TPACKET2_HDRLEN + VNET_HDR_LEN;
/// Environment variable that turns the ring off when set to `0` (see
/// [`RxMode::from_env`]).
pub const RING_ENV: &str = "VSWITCH_AFPACKET_RING";

const SOCK_BUF: libc::c_int = 8 << 20;
/// Room for one cmsghdr carrying a tpacket_auxdata (16 + 20 bytes, rounded).
const CMSG_WORDS: usize = 8;

/// Largest batch one recvmmsg/sendmmsg call moves.
const MAX_BATCH: usize = 256;

/// Shape of the receive ring (`struct tpacket_req`): `block_nr` blocks of
/// `block_size` bytes, each cut into slots of `frame_size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingGeometry {
    /// Bytes per slot, a multiple of 16. A slot holds its headers (76 bytes
    /// before an untagged Ethernet header) and the frame; bigger frames take
    /// the TP_STATUS_COPY path.
    pub frame_size: u32,
    /// Bytes per block: a multiple of the page size (the kernel allocates
    /// the ring block by block).
    pub block_size: u32,
    pub block_nr: u32,
}

impl Default for RingGeometry {
    /// 4096 slots of 2 KiB (8 MiB): any 1500-byte-MTU frame fits a slot,
    /// and at 64-frame batches the ring absorbs 64 batches of lag.
    fn default() -> Self {
        RingGeometry {
            frame_size: 2048,
            block_size: 64 << 10,
            block_nr: 128,
        }
    }
}

impl RingGeometry {
    fn frames_per_block(&self) -> usize {
        self.block_size as usize / (self.frame_size as usize).max(1)
    }

    /// Number of slots, or `None` for a shape we do not use (the kernel
    /// checks the rest: page and 16-byte alignment, its own limits).
    fn frame_nr(&self) -> Option<usize> {
        let fs = self.frame_size as usize;
        // A slot must hold the headers and an Ethernet header, and a
        // whole slot must fit a frame buffer (so no copy can overrun it).
        if !(MIN_MAC + 64..=1 << 16).contains(&fs) {
            return None;
        }
        let n = self
            .frames_per_block()
            .checked_mul(self.block_nr as usize)?;
        // Bounded memory: at most 1 GiB of ring.
        let bytes = (self.block_size as usize).checked_mul(self.block_nr as usize)?;
        (n > 0 && n <= u32::MAX as usize && bytes <= 1 << 30).then_some(n)
    }
}

/// How a port receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxMode {
    /// TPACKET_V2 ring of this shape (falls back to `Mmsg` if refused).
    Ring(RingGeometry),
    /// recvmmsg into the frames.
    Mmsg,
}

impl RxMode {
    /// The default ring, unless `VSWITCH_AFPACKET_RING=0` (or `off`, `no`,
    /// `false`) is set in the environment.
    pub fn from_env() -> RxMode {
        match std::env::var(RING_ENV) {
            Ok(v) if matches!(v.trim(), "0" | "off" | "no" | "false") => RxMode::Mmsg,
            _ => RxMode::Ring(RingGeometry::default()),
        }
    }
}

pub struct AfPacketPort {
    /// The receive ring (declared before `fd`: unmapped before the socket
    /// closes). Only the worker that owns the port receives, so the lock is
    /// never contended; it makes a second receiver wait instead of racing.
    ring: Option<Mutex<RxRing>>,
    fd: OwnedFd,
    ifname: String,
    ifindex: u32,
    /// Socket drops read so far (PACKET_STATISTICS resets on every read).
    drops: AtomicU64,
    /// The poller saw an error condition on the socket: the ring path, which
    /// makes no receive syscall that would report it, asks for it.
    err_hint: AtomicBool,
}

/// Scratch arrays for recvmmsg/sendmmsg, owned by one worker and reused on
/// every call; their raw pointers are rewritten before each call and never
/// read after it.
pub struct MmsgScratch {
    msgs: Vec<libc::mmsghdr>,
    /// Two per message: edited prefix, then the rest of the frame.
    iovs: Vec<libc::iovec>,
    /// Edited prefixes (virtio header, MACs, tag) for frames sent with a tag edit.
    prefixes: Vec<[u8; EDIT_PREFIX_MAX]>,
    /// PACKET_AUXDATA control buffers, one per message (u64 for alignment).
    cmsgs: Vec<[u64; CMSG_WORDS]>,
}

// SAFETY: the raw pointers inside `msgs`/`iovs` are scratch space, filled in
// immediately before each syscall from buffers borrowed for that call only;
// nothing dereferences them outside a call, so moving the scratch between
// threads is sound.
unsafe impl Send for MmsgScratch {}

impl Default for MmsgScratch {
    fn default() -> Self {
        MmsgScratch {
            // SAFETY: mmsghdr and iovec are plain old data; zero is valid.
            msgs: vec![unsafe { mem::zeroed() }; MAX_BATCH],
            // SAFETY: as above.
            iovs: vec![unsafe { mem::zeroed() }; 2 * MAX_BATCH],
            prefixes: vec![[0; EDIT_PREFIX_MAX]; MAX_BATCH],
            cmsgs: vec![[0; CMSG_WORDS]; MAX_BATCH],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    #[error("no interface named '{0}' in the daemon's network namespace")]
    NoSuchInterface(String),
    #[error("AF_PACKET socket on '{0}': {1}")]
    Socket(String, io::Error),
}

impl AfPacketPort {
    /// Opens the port with the receive mode the environment asks for (the
    /// ring by default, see [`RxMode::from_env`]).
    pub fn open(ifname: &str) -> Result<AfPacketPort, AfPacketError> {
        Self::open_with(ifname, RxMode::from_env())
    }

    pub fn open_with(ifname: &str, mode: RxMode) -> Result<AfPacketPort, AfPacketError> {
        let ifindex = match sys::ifindex(ifname) {
            Ok(i) => i,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(AfPacketError::NoSuchInterface(ifname.into()))
            }
            Err(e) => return Err(AfPacketError::Socket(ifname.into(), e)),
        };
        let err = |e| AfPacketError::Socket(ifname.into(), e);
        // Protocol 0: receives nothing until bound to our interface below.
        // SAFETY: plain socket(2); the result is checked and then owned.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })
        .map_err(err)?;
        // SAFETY: `raw` was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = fd.as_raw_fd();
        setsockopt_int(s, libc::SOL_PACKET, PACKET_VNET_HDR, 1).map_err(err)?;
        setsockopt_int(s, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1).map_err(err)?;
        // The kernel strips a VLAN tag the device offloaded; auxdata returns it.
        setsockopt_int(s, libc::SOL_PACKET, PACKET_AUXDATA, 1).map_err(err)?;
        // Best effort: both only speed things up.
        let _ = setsockopt_int(s, libc::SOL_PACKET, PACKET_QDISC_BYPASS, 1);
        sys::set_socket_buffers(s, SOCK_BUF);
        // Before bind: until the ring exists, frames would be queued on the
        // socket, where the ring path does not expect them.
        let ring = match mode {
            RxMode::Ring(geo) => match RxRing::setup(s, geo) {
                Ok(r) => {
                    tracing::debug!(
                        ifname,
                        slots = r.frame_nr,
                        slot_bytes = r.frame_size,
                        "AF_PACKET port receives through a TPACKET_V2 ring"
                    );
                    Some(Mutex::new(r))
                }
                Err(RingError::Unavailable(e)) => {
                    tracing::debug!(
                        ifname,
                        "no TPACKET_V2 ring ({e}); the port receives with recvmmsg"
                    );
                    None
                }
                Err(RingError::Socket(e)) => return Err(err(e)),
            },
            RxMode::Mmsg => None,
        };

        // Up before bind: binding to a device that is down leaves ENETDOWN
        // pending on the socket, and the first send would fail with it.
        sys::set_up(ifname).map_err(err)?;
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and its exact size is passed.
        cvt(unsafe {
            libc::bind(
                s,
                (&sll as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })
        .map_err(err)?;

        // SAFETY: packet_mreq is plain old data; all-zero is a valid value.
        let mut mreq: libc::packet_mreq = unsafe { mem::zeroed() };
        mreq.mr_ifindex = ifindex as i32;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        // SAFETY: `mreq` is a valid packet_mreq and its exact size is passed.
        // The membership (and promiscuity) ends when the socket is closed.
        cvt(unsafe {
            libc::setsockopt(
                s,
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&mreq as *const libc::packet_mreq).cast(),
                mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        })
        .map_err(err)?;

        Ok(AfPacketPort {
            ring,
            fd,
            ifname: ifname.into(),
            ifindex,
            drops: AtomicU64::new(0),
            err_hint: AtomicBool::new(false),
        })
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Whether the port receives through the mmap'ed ring (false: recvmmsg).
    pub fn uses_ring(&self) -> bool {
        self.ring.is_some()
    }

    /// Receives from the ring: copies each slot the kernel has handed over
    /// into a frame and gives the slot back, in ring order, until a slot
    /// still owned by the kernel or `frames` is full.
    ///
    /// Nothing is left unseen with the worker's edge-triggered poll: the
    /// kernel signals readiness (sk_data_ready) after every frame it writes,
    /// so a frame written after we found its slot empty raises a new event;
    /// a full `frames` makes the worker call again without one.
    fn recv_ring(
        &self,
        ring: &mut RxRing,
        frames: &mut [Frame],
        sc: &mut MmsgScratch,
    ) -> io::Result<usize> {
        let fd = self.fd.as_raw_fd();
        if let Some(e) = ring.pending.take() {
            return Err(e);
        }
        if self.err_hint.swap(false, Ordering::Relaxed) {
            if let Some(e) = sys::take_socket_error(fd)? {
                return Err(e);
            }
        }
        let taken = ring.take(frames, |f, h| recv_copy(fd, f, h, sc));
        if taken.losing {
            // The ring overflowed since the counters were last read: collect
            // them now (this also clears TP_STATUS_LOSING for later frames).
            self.kernel_drops();
        }
        let got = taken.got;
        if let Some(e) = taken.err {
            // An error the socket had pending (device down or gone) came
            // instead of a copied frame, which is still queued; its slot is
            // kept for the next call, which reads it. After frames, the error
            // waits for the next call, as recvmmsg keeps one in sk_err.
            if got == 0 {
                return Err(e);
            }
            ring.pending = Some(e);
            return Ok(got);
        }
        // An empty ring needs no SO_ERROR probe: a device going away raises
        // EPOLLERR, which the worker passes on (`error_event`, above).
        Ok(got)
    }

    fn recv_mmsg(&self, frames: &mut [Frame], sc: &mut MmsgScratch) -> io::Result<usize> {
        let n = frames.len().min(MAX_BATCH);
        for (k, f) in frames[..n].iter_mut().enumerate() {
            let area = f.rx_area_vnet();
            sc.iovs[2 * k] = libc::iovec {
                iov_base: area.as_mut_ptr().cast(),
                iov_len: area.len(),
            };
            sc.prep(k, 1, true);
        }
        let got = super::recvmmsg(self.fd.as_raw_fd(), &mut sc.msgs[..n])?;
        for (k, f) in frames[..got].iter_mut().enumerate() {
            let m = &sc.msgs[k];
            if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                f.set_rx_len_vnet(0); // counted as malformed
            } else if f.set_rx_len_vnet(m.msg_len as usize) {
                if let Some((tpid, tci)) = sc.aux_vlan(k) {
                    // Put the tag back in band where the bridge reads it.
                    f.insert_tag(tpid, tci);
                }
            }
        }
        Ok(got)
    }
}

/// Reads the frame of a TP_STATUS_COPY slot from the socket queue, where the
/// kernel put a full copy when it filled the slot (so it is the next one
/// queued). `Err` only for an error the socket reports instead of the frame.
fn recv_copy(fd: RawFd, f: &mut Frame, h: &SlotHdr, sc: &mut MmsgScratch) -> io::Result<()> {
    let area = f.rx_area_vnet();
    sc.iovs[0] = libc::iovec {
        iov_base: area.as_mut_ptr().cast(),
        iov_len: area.len(),
    };
    sc.prep(0, 1, false);
    let got = super::recvmmsg(fd, &mut sc.msgs[..1])?;
    let m = &sc.msgs[0];
    let whole = got == 1
        && m.msg_hdr.msg_flags & libc::MSG_TRUNC == 0
        // The same skb the slot describes, or the queue is not what we think.
        && m.msg_len as usize == VNET_HDR_LEN + h.len as usize;
    if whole && f.set_rx_len_vnet(m.msg_len as usize) {
        restore_tag(f, h);
    } else {
        f.reset();
        f.rx_drop = Some(DropReason::Malformed);
    }
    Ok(())
}

/// Puts a VLAN tag the kernel took off (and reported in the slot) back in
/// band, where the bridge reads it.
fn restore_tag(f: &mut Frame, h: &SlotHdr) {
    if let Some((tpid, tci)) = kernel_tag(h.status, h.vlan_tci, h.vlan_tpid) {
        f.insert_tag(tpid, tci);
    }
}

/// The (TPID, TCI) of the tag the kernel took off, from a ring slot's or an
/// auxdata's status, TCI and TPID (a kernel that gives no TPID means 802.1Q).
fn kernel_tag(status: u32, tci: u16, tpid: u16) -> Option<(u16, u16)> {
    if status & TP_STATUS_VLAN_VALID == 0 {
        return None;
    }
    let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 {
        tpid
    } else {
        TPID_8021Q
    };
    Some((tpid, tci))
}

/// Why a ring could not be set up.
enum RingError {
    /// The kernel (or our checks) refused it; the socket works without one.
    Unavailable(io::Error),
    /// The socket is in an unknown state; the port cannot be opened.
    Socket(io::Error),
}

/// The mmap'ed TPACKET_V2 receive ring and our place in it.
struct RxRing {
    map: sys::Mmap,
    frame_size: usize,
    frame_nr: usize,
    frames_per_block: usize,
    block_size: usize,
    /// The next slot to look at: the kernel fills slots in ring order.
    head: usize,
    /// An error met after frames were already taken, reported next call.
    pending: Option<io::Error>,
}

/// What one pass over the ring took.
#[derive(Debug, Default)]
struct Taken {
    /// Frames filled (including ones marked with `rx_drop`).
    got: usize,
    /// A slot carried TP_STATUS_LOSING: the kernel dropped frames.
    losing: bool,
    /// Reading a copied frame failed with this; its slot is still ours.
    err: Option<io::Error>,
}

/// The fields of a `struct tpacket2_hdr` we use, copied out of a slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SlotHdr {
    status: u32,
    len: u32,
    snaplen: u32,
    mac: u16,
    vlan_tci: u16,
    vlan_tpid: u16,
}

/// Byte ranges in `struct tpacket2_hdr` (include/uapi/linux/if_packet.h).
mod field {
    use std::ops::Range;
    pub const LEN: Range<usize> = 4..8;
    pub const SNAPLEN: Range<usize> = 8..12;
    pub const MAC: Range<usize> = 12..14;
    pub const VLAN_TCI: Range<usize> = 24..26;
    pub const VLAN_TPID: Range<usize> = 26..28;
    /// What we copy out: everything up to the padding.
    pub const END: usize = 28;
}

impl SlotHdr {
    /// Parses the header bytes after the status word (which the caller read
    /// atomically and passes in).
    fn parse(status: u32, b: &[u8; field::END]) -> SlotHdr {
        let u32_at = |r: std::ops::Range<usize>| {
            u32::from_ne_bytes([b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3]])
        };
        let u16_at = |r: std::ops::Range<usize>| u16::from_ne_bytes([b[r.start], b[r.start + 1]]);
        SlotHdr {
            status,
            len: u32_at(field::LEN),
            snaplen: u32_at(field::SNAPLEN),
            mac: u16_at(field::MAC),
            vlan_tci: u16_at(field::VLAN_TCI),
            vlan_tpid: u16_at(field::VLAN_TPID),
        }
    }
}

/// What a ready slot holds, judged from its header alone. No value the
/// kernel wrote is trusted to slice with until it passed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// The whole frame: virtio header at `mac - 10`, `len` bytes at `mac`.
    Whole { mac: usize, len: usize },
    /// Too big for a slot; a full copy waits on the socket queue.
    Copied,
    /// Too big for a slot, and the kernel could not queue a copy (socket
    /// receive buffer full): only the head of the frame is here.
    Truncated,
    /// Offsets or lengths outside the slot.
    Bad,
}

fn classify(h: &SlotHdr, frame_size: usize) -> Slot {
    if h.status & TP_STATUS_COPY != 0 {
        return Slot::Copied;
    }
    let mac = usize::from(h.mac);
    let snap = h.snaplen as usize;
    let fits = mac.checked_add(snap).is_some_and(|end| end <= frame_size);
    if mac < MIN_MAC || !fits {
        return Slot::Bad;
    }
    match (h.len as usize).cmp(&snap) {
        std::cmp::Ordering::Equal => Slot::Whole { mac, len: snap },
        std::cmp::Ordering::Greater => Slot::Truncated,
        std::cmp::Ordering::Less => Slot::Bad,
    }
}

/// For the `afpacket_slot` fuzz target: reads a ring slot's header from
/// arbitrary bytes (`status` word, then the rest of `struct tpacket2_hdr`)
/// and classifies it for slots of `frame_size` bytes, as the receive path
/// does. Returns where a whole frame would be read (`mac..mac + len`), if
/// anywhere.
#[doc(hidden)]
pub fn fuzz_classify(status: u32, hdr: &[u8; 28], frame_size: usize) -> Option<(usize, usize)> {
    match classify(&SlotHdr::parse(status, hdr), frame_size) {
        Slot::Whole { mac, len } => Some((mac, len)),
        _ => None,
    }
}

/// The least offset of a frame in a slot (header and virtio header first).
#[doc(hidden)]
pub const FUZZ_MIN_MAC: usize = MIN_MAC;

impl RxRing {
    fn new(map: sys::Mmap, geo: RingGeometry, frame_nr: usize) -> RxRing {
        RxRing {
            map,
            frame_size: geo.frame_size as usize,
            frame_nr,
            frames_per_block: geo.frames_per_block(),
            block_size: geo.block_size as usize,
            head: 0,
            pending: None,
        }
    }

    /// Switches socket `fd` (not yet bound) to TPACKET_V2 with an RX ring of
    /// shape `geo` and maps the ring. On `Unavailable` the socket is left
    /// without a ring, fit for recvmmsg.
    fn setup(fd: RawFd, geo: RingGeometry) -> Result<RxRing, RingError> {
        let unavailable = RingError::Unavailable;
        let frame_nr = geo.frame_nr().ok_or_else(|| {
            unavailable(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unusable ring geometry {geo:?}"),
            ))
        })?;
        setsockopt_int(fd, libc::SOL_PACKET, PACKET_VERSION, TPACKET_V2).map_err(unavailable)?;
        // Frames bigger than a slot are queued on the socket as well (any
        // non-zero value turns this on).
        setsockopt_int(fd, libc::SOL_PACKET, PACKET_COPY_THRESH, 1).map_err(unavailable)?;
        let req = libc::tpacket_req {
            tp_block_size: geo.block_size,
            tp_block_nr: geo.block_nr,
            tp_frame_size: geo.frame_size,
            tp_frame_nr: frame_nr as u32,
        };
        set_ring(fd, &req).map_err(unavailable)?;
        let len = geo.block_size as usize * geo.block_nr as usize;
        match sys::Mmap::shared(fd, len) {
            Ok(map) => Ok(RxRing::new(map, geo, frame_nr)),
            Err(e) => {
                // Free the ring again (a zero request), so the socket goes
                // back to queueing frames for recvmmsg.
                // SAFETY: tpacket_req is plain old data; all-zero is valid.
                let none: libc::tpacket_req = unsafe { mem::zeroed() };
                match set_ring(fd, &none) {
                    Ok(()) => Err(unavailable(e)),
                    Err(e2) => Err(RingError::Socket(e2)),
                }
            }
        }
    }

    /// Takes the slots the kernel has handed over, in ring order, into
    /// `frames`: copies each out, gives the slot back, and stops at the first
    /// slot the kernel still owns or when `frames` is full. `copied` reads the
    /// frame of a TP_STATUS_COPY slot from the socket; if it fails, that slot
    /// is kept (not counted) and the error returned with what was taken.
    fn take(
        &mut self,
        frames: &mut [Frame],
        mut copied: impl FnMut(&mut Frame, &SlotHdr) -> io::Result<()>,
    ) -> Taken {
        let mut t = Taken::default();
        while t.got < frames.len() {
            let k = self.head;
            let status = self.status(k).load(Ordering::Acquire);
            if status & TP_STATUS_USER == 0 {
                break;
            }
            // From here until `release` the slot is ours: the kernel only
            // writes slots whose status is TP_STATUS_KERNEL.
            t.losing |= status & TP_STATUS_LOSING != 0;
            let h = self.header(k, status);
            let f = &mut frames[t.got];
            match classify(&h, self.frame_size) {
                Slot::Whole { mac, len } => {
                    if self.copy_out(k, mac, len, f) {
                        restore_tag(f, &h);
                    } else {
                        f.rx_drop = Some(DropReason::Malformed);
                    }
                }
                Slot::Copied => {
                    if let Err(e) = copied(f, &h) {
                        t.err = Some(e);
                        break;
                    }
                }
                Slot::Truncated => {
                    f.reset();
                    f.rx_drop = Some(DropReason::RxOverflow);
                }
                Slot::Bad => {
                    f.reset();
                    f.rx_drop = Some(DropReason::Malformed);
                }
            }
            self.release(k);
            self.head = if k + 1 == self.frame_nr { 0 } else { k + 1 };
            t.got += 1;
        }
        t
    }

    /// Whether the next slot is ours to take.
    fn ready(&self) -> bool {
        self.status(self.head).load(Ordering::Acquire) & TP_STATUS_USER != 0
    }

    /// Address of slot `k` (< frame_nr). Slots do not straddle blocks: a
    /// block holds `frames_per_block` of them and possibly unused tail bytes.
    fn slot(&self, k: usize) -> *mut u8 {
        let off = (k / self.frames_per_block) * self.block_size
            + (k % self.frames_per_block) * self.frame_size;
        debug_assert!(off + self.frame_size <= self.map.len());
        self.map.as_ptr().wrapping_add(off)
    }

    /// The status word of slot `k`, shared with the kernel.
    fn status(&self, k: usize) -> &AtomicU32 {
        // SAFETY: slot `k` lies inside the mapping, which lives as long as
        // `self`; slots start at multiples of 16 bytes from a page-aligned
        // base, so the word is aligned; AtomicU32 has the layout of u32. We
        // only touch the word through this atomic; the kernel pairs its own
        // accesses with barriers (smp_wmb before it sets TP_STATUS_USER,
        // smp_rmb after it reads TP_STATUS_KERNEL), the PACKET_MMAP protocol.
        unsafe { &*self.slot(k).cast::<AtomicU32>() }
    }

    /// Copies the header of slot `k`, which must be ours (its status, read
    /// with acquire ordering, was `status` with TP_STATUS_USER set).
    fn header(&self, k: usize, status: u32) -> SlotHdr {
        let mut b = [0u8; field::END];
        // SAFETY: the slot is at least MIN_MAC + 64 bytes (checked at set-up)
        // inside the mapping; it is ours until released, so the kernel does
        // not write it meanwhile; `b` is a local of exactly the copied size.
        // The status word itself (bytes 0..4) is not read here.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.slot(k).add(4),
                b.as_mut_ptr().add(4),
                field::END - 4,
            )
        };
        SlotHdr::parse(status, &b)
    }

    /// Copies the virtio header and the `len`-byte frame at `mac` (checked
    /// by [`classify`]) out of slot `k` into `f`. False if `f` has no room.
    fn copy_out(&self, k: usize, mac: usize, len: usize, f: &mut Frame) -> bool {
        let area = f.rx_area_vnet();
        let n = VNET_HDR_LEN + len;
        if mac < MIN_MAC || mac + len > self.frame_size || n > area.len() {
            return false;
        }
        // SAFETY: source `mac - 10 .. mac + len` lies inside slot `k`
        // (MIN_MAC <= mac, mac + len <= frame_size, just checked), which is
        // inside the mapping and ours until released; the destination has
        // `n` bytes (checked); a mapping and a heap buffer do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.slot(k).add(mac - VNET_HDR_LEN),
                area.as_mut_ptr(),
                n,
            )
        };
        f.set_rx_len_vnet(n)
    }

    /// Hands slot `k` back to the kernel. The release ordering keeps our
    /// reads of the slot before the kernel can see it free and refill it.
    fn release(&self, k: usize) {
        self.status(k).store(TP_STATUS_KERNEL, Ordering::Release);
    }
}

/// `setsockopt(fd, SOL_PACKET, PACKET_RX_RING, req)`.
fn set_ring(fd: RawFd, req: &libc::tpacket_req) -> io::Result<()> {
    // SAFETY: `req` is a live tpacket_req whose exact size is passed; the
    // kernel only reads it.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            PACKET_RX_RING,
            (req as *const libc::tpacket_req).cast(),
            mem::size_of::<libc::tpacket_req>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

impl MmsgScratch {
    /// Points message `k` at `n` (1 or 2) iovecs starting at `iovs[2k]`,
    /// with the auxdata control buffer when `control` is set.
    fn prep(&mut self, k: usize, n: usize, control: bool) {
        let m = &mut self.msgs[k].msg_hdr;
        m.msg_name = std::ptr::null_mut();
        m.msg_namelen = 0;
        m.msg_iov = &mut self.iovs[2 * k];
        m.msg_iovlen = n;
        if control {
            m.msg_control = self.cmsgs[k].as_mut_ptr().cast();
            m.msg_controllen = mem::size_of::<[u64; CMSG_WORDS]>();
        } else {
            m.msg_control = std::ptr::null_mut();
            m.msg_controllen = 0;
        }
        m.msg_flags = 0;
        self.msgs[k].msg_len = 0;
    }

    /// The VLAN tag the kernel took off message `k`, from its auxdata.
    fn aux_vlan(&self, k: usize) -> Option<(u16, u16)> {
        let m = &self.msgs[k].msg_hdr;
        // SAFETY: `m` is a msghdr the kernel just filled in; CMSG_FIRSTHDR and
        // CMSG_NXTHDR only walk within msg_control..msg_controllen, which
        // points into `self.cmsgs[k]`.
        let mut c = unsafe { libc::CMSG_FIRSTHDR(m) };
        while !c.is_null() {
            // SAFETY: `c` is non-null and within the control buffer (above).
            let h = unsafe { &*c };
            if h.cmsg_level == libc::SOL_PACKET
                && h.cmsg_type == PACKET_AUXDATA
                && h.cmsg_len as usize
                    >= mem::size_of::<libc::cmsghdr>() + mem::size_of::<libc::tpacket_auxdata>()
            {
                // SAFETY: the kernel wrote a tpacket_auxdata after this header
                // (length checked above); read_unaligned copes with alignment.
                let aux: libc::tpacket_auxdata =
                    unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast()) };
                return kernel_tag(aux.tp_status, aux.tp_vlan_tci, aux.tp_vlan_tpid);
            }
            // SAFETY: as for CMSG_FIRSTHDR.
            c = unsafe { libc::CMSG_NXTHDR(m, c) };
        }
        None
    }
}

impl Port for AfPacketPort {
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn peek(&self) -> Option<bool> {
        let ring = self.ring.as_ref()?;
        let ring = ring.lock().unwrap_or_else(PoisonError::into_inner);
        // A pending error or device event must reach `recv` too.
        Some(ring.ready() || ring.pending.is_some() || self.err_hint.load(Ordering::Relaxed))
    }

    fn recv(&self, frames: &mut [Frame], sc: &mut IoScratch) -> io::Result<usize> {
        match &self.ring {
            Some(ring) => {
                let mut ring = ring.lock().unwrap_or_else(PoisonError::into_inner);
                self.recv_ring(&mut ring, frames, &mut sc.mmsg)
            }
            None => self.recv_mmsg(frames, &mut sc.mmsg),
        }
    }

    fn send(&self, frames: &[Frame], items: &[TxItem], stats: &mut PortStats, sc: &mut IoScratch) {
        let sc = &mut sc.mmsg;
        for chunk in items.chunks(MAX_BATCH) {
            for (k, it) in chunk.iter().enumerate() {
                let f = &frames[it.idx as usize];
                if it.edit == TagEdit::None {
                    let b = f.with_vnet();
                    sc.iovs[2 * k] = libc::iovec {
                        iov_base: b.as_ptr() as *mut libc::c_void,
                        iov_len: b.len(),
                    };
                    sc.prep(k, 1, false);
                } else {
                    let (n, rest) = f.edited_prefix(it.edit, &mut sc.prefixes[k]);
                    let tail = &f.data()[rest..];
                    sc.iovs[2 * k] = libc::iovec {
                        iov_base: sc.prefixes[k].as_mut_ptr().cast(),
                        iov_len: n,
                    };
                    sc.iovs[2 * k + 1] = libc::iovec {
                        iov_base: tail.as_ptr() as *mut libc::c_void,
                        iov_len: tail.len(),
                    };
                    sc.prep(k, 2, false);
                }
            }
            super::sendmmsg_counted(
                self.fd.as_raw_fd(),
                &mut sc.msgs[..chunk.len()],
                &sc.iovs,
                2,
                VNET_HDR_LEN,
                stats,
            );
        }
    }

    fn error_event(&self) {
        self.err_hint.store(true, Ordering::Relaxed);
    }

    fn is_gone(&self, _err: &io::Error) -> bool {
        // ENETDOWN is reported both for "set down" and for "deleted"; only the
        // latter is final (the socket resumes by itself when the link is up).
        !sys::ifindex_exists(self.ifindex)
    }

    fn caps(&self) -> Caps {
        Caps { vnet_hdr: true }
    }

    fn kernel_drops(&self) -> u64 {
        // SAFETY: tpacket_stats is plain old data; all-zero is a valid value.
        let mut st: libc::tpacket_stats = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` and `len` are live locals; the kernel writes at most
        // `len` bytes into `st` and updates `len`.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        let new = if r == 0 { u64::from(st.tp_drops) } else { 0 };
        self.drops.fetch_add(new, Ordering::Relaxed) + new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::VnetHdr;

    /// Four 2 KiB slots, two per block.
    const GEO: RingGeometry = RingGeometry {
        frame_size: 2048,
        block_size: 4096,
        block_nr: 2,
    };
    /// Where the kernel puts an untagged Ethernet header: TPACKET_ALIGN(52 +
    /// 16) + 10 (virtio header) - 14.
    const MAC: u16 = 76;

    fn ring() -> RxRing {
        let map = sys::Mmap::anonymous(8192).expect("anonymous mapping");
        RxRing::new(map, GEO, GEO.frame_nr().expect("usable geometry"))
    }

    /// Plays the kernel: writes slot `k`'s header, the virtio header and
    /// `data` at `h.mac` (as far as they fit), then publishes `h.status`.
    fn kernel_fill(r: &RxRing, k: usize, h: SlotHdr, vnet: &VnetHdr, data: &[u8]) {
        let mut img = vec![0u8; r.frame_size];
        img[field::LEN].copy_from_slice(&h.len.to_ne_bytes());
        img[field::SNAPLEN].copy_from_slice(&h.snaplen.to_ne_bytes());
        img[field::MAC].copy_from_slice(&h.mac.to_ne_bytes());
        img[field::VLAN_TCI].copy_from_slice(&h.vlan_tci.to_ne_bytes());
        img[field::VLAN_TPID].copy_from_slice(&h.vlan_tpid.to_ne_bytes());
        let mac = usize::from(h.mac);
        if mac >= VNET_HDR_LEN && mac + data.len() <= img.len() {
            let mut vb = [0u8; VNET_HDR_LEN];
            vnet.emit(&mut vb);
            img[mac - VNET_HDR_LEN..mac].copy_from_slice(&vb);
            img[mac..mac + data.len()].copy_from_slice(data);
        }
        assert_eq!(r.status(k).load(Ordering::Acquire), TP_STATUS_KERNEL);
        // SAFETY: slot `k` is `frame_size` bytes inside the mapping and owned
        // by the "kernel" (this test thread) until the status store below;
        // `img` has exactly `frame_size` bytes; the status word is skipped.
        unsafe {
            std::ptr::copy_nonoverlapping(img.as_ptr().add(4), r.slot(k).add(4), r.frame_size - 4)
        };
        r.status(k).store(h.status, Ordering::Release);
    }

    fn hdr(status: u32, len: u32, snaplen: u32, mac: u16) -> SlotHdr {
        SlotHdr {
            status,
            len,
            snaplen,
            mac,
            ..Default::default()
        }
    }

    fn eth(n: usize, seed: u8) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend((0..n - 14).map(|i| (i as u8).wrapping_add(seed)));
        f
    }

    fn frames(n: usize) -> Vec<Frame> {
        (0..n).map(|_| Frame::new()).collect()
    }

    fn no_copy(_: &mut Frame, _: &SlotHdr) -> io::Result<()> {
        panic!("no slot here is a copy")
    }

    #[test]
    fn default_geometry_is_bounded() {
        let g = RingGeometry::default();
        assert_eq!(g.frame_nr(), Some(4096));
        assert_eq!(g.block_size as usize * g.block_nr as usize, 8 << 20);
        assert_eq!(GEO.frame_nr(), Some(4));
        for bad in [
            RingGeometry {
                frame_size: 64,
                ..g
            },
            RingGeometry {
                frame_size: 1 << 17,
                block_size: 1 << 17,
                ..g
            },
            RingGeometry {
                block_size: 1024,
                ..g
            },
            RingGeometry { block_nr: 0, ..g },
            RingGeometry {
                block_nr: u32::MAX,
                ..g
            },
        ] {
            assert_eq!(bad.frame_nr(), None, "{bad:?}");
        }
    }

    #[test]
    fn classify_checks_every_offset() {
        let fs = 2048;
        let whole = classify(&hdr(TP_STATUS_USER, 60, 60, MAC), fs);
        assert_eq!(whole, Slot::Whole { mac: 76, len: 60 });
        // Exactly to the end of the slot.
        assert_eq!(
            classify(&hdr(TP_STATUS_USER, 1972, 1972, MAC), fs),
            Slot::Whole { mac: 76, len: 1972 }
        );
        assert_eq!(
            classify(&hdr(TP_STATUS_USER, 1973, 1973, MAC), fs),
            Slot::Bad
        );
        assert_eq!(classify(&hdr(TP_STATUS_USER, 60, 60, 61), fs), Slot::Bad);
        assert_eq!(classify(&hdr(TP_STATUS_USER, 60, 60, 0), fs), Slot::Bad);
        assert_eq!(
            classify(&hdr(TP_STATUS_USER, 60, 60, u16::MAX), fs),
            Slot::Bad
        );
        assert_eq!(
            classify(&hdr(TP_STATUS_USER, u32::MAX, u32::MAX, MAC), fs),
            Slot::Bad
        );
        assert_eq!(classify(&hdr(TP_STATUS_USER, 59, 60, MAC), fs), Slot::Bad);
        assert_eq!(
            classify(&hdr(TP_STATUS_USER, 65000, 1972, MAC), fs),
            Slot::Truncated
        );
        assert_eq!(
            classify(&hdr(TP_STATUS_USER | TP_STATUS_COPY, 65000, 1972, MAC), fs),
            Slot::Copied
        );
    }

    #[test]
    fn takes_ready_slots_in_order_and_hands_them_back() {
        let mut r = ring();
        let vnet = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        };
        let (a, b) = (eth(60, 1), eth(1514, 2));
        kernel_fill(&r, 0, hdr(TP_STATUS_USER, 60, 60, MAC), &vnet, &a);
        kernel_fill(
            &r,
            1,
            hdr(TP_STATUS_USER, 1514, 1514, MAC),
            &VnetHdr::default(),
            &b,
        );
        let mut fr = frames(8);
        let t = r.take(&mut fr, no_copy);
        assert_eq!((t.got, t.losing, t.err.is_none()), (2, false, true));
        assert_eq!(fr[0].data(), &a[..]);
        assert_eq!(fr[0].vnet(), vnet);
        assert_eq!(fr[1].data(), &b[..]);
        assert_eq!(fr[1].rx_drop, None);
        for k in 0..4 {
            assert_eq!(r.status(k).load(Ordering::Acquire), TP_STATUS_KERNEL);
        }
        assert_eq!(r.head, 2);
        assert_eq!(r.take(&mut fr, no_copy).got, 0, "nothing new");

        // Around the end of the ring (slot 3 is in the second block).
        for (i, k) in [2, 3, 0].into_iter().enumerate() {
            let d = eth(100 + i, 10 + i as u8);
            kernel_fill(
                &r,
                k,
                hdr(TP_STATUS_USER, d.len() as u32, d.len() as u32, MAC),
                &vnet,
                &d,
            );
        }
        let t = r.take(&mut fr, no_copy);
        assert_eq!(t.got, 3);
        assert_eq!(fr[2].data(), &eth(102, 12)[..]);
        assert_eq!(r.head, 1);
    }

    #[test]
    fn stops_when_the_batch_is_full() {
        let mut r = ring();
        for k in 0..3 {
            let d = eth(64, k as u8);
            kernel_fill(
                &r,
                k,
                hdr(TP_STATUS_USER, 64, 64, MAC),
                &VnetHdr::default(),
                &d,
            );
        }
        let mut fr = frames(2);
        assert_eq!(r.take(&mut fr, no_copy).got, 2);
        assert_eq!(
            r.status(2).load(Ordering::Acquire),
            TP_STATUS_USER,
            "left for the next call"
        );
        assert_eq!(r.take(&mut fr, no_copy).got, 1);
        assert_eq!(fr[0].data(), &eth(64, 2)[..]);
    }

    #[test]
    fn vlan_tag_goes_back_in_band() {
        let mut r = ring();
        let d = eth(60, 3);
        let vnet = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..Default::default()
        };
        let mut h = hdr(
            TP_STATUS_USER | TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID,
            60,
            60,
            MAC,
        );
        h.vlan_tci = 0x2064;
        h.vlan_tpid = 0x88a8;
        kernel_fill(&r, 0, h, &vnet, &d);
        // Without a TPID (older kernels): 802.1Q.
        let mut h = hdr(TP_STATUS_USER | TP_STATUS_VLAN_VALID, 60, 60, MAC);
        h.vlan_tci = 7;
        kernel_fill(&r, 1, h, &vnet, &d);
        let mut fr = frames(4);
        assert_eq!(r.take(&mut fr, no_copy).got, 2);
        assert_eq!(fr[0].len(), 64);
        assert_eq!(&fr[0].data()[..12], &d[..12]);
        assert_eq!(&fr[0].data()[12..18], &[0x88, 0xa8, 0x20, 0x64, 0x08, 0x00]);
        assert_eq!(&fr[0].data()[16..], &d[12..]);
        assert_eq!(fr[0].vnet().csum_start, 38, "offsets follow the tag");
        assert_eq!(&fr[1].data()[12..16], &[0x81, 0x00, 0x00, 0x07]);
    }

    #[test]
    fn bad_and_truncated_slots_are_counted_and_returned() {
        let mut r = ring();
        let d = eth(60, 4);
        let v = VnetHdr::default();
        kernel_fill(&r, 0, hdr(TP_STATUS_USER, 60, 60, 20), &v, &d);
        kernel_fill(&r, 1, hdr(TP_STATUS_USER, u32::MAX, 4000, MAC), &v, &d);
        kernel_fill(&r, 2, hdr(TP_STATUS_USER, 9000, 1972, MAC), &v, &d);
        kernel_fill(
            &r,
            3,
            hdr(TP_STATUS_USER | TP_STATUS_LOSING, 60, 60, MAC),
            &v,
            &d,
        );
        let mut fr = frames(4);
        let t = r.take(&mut fr, no_copy);
        assert_eq!((t.got, t.losing), (4, true));
        assert_eq!(fr[0].rx_drop, Some(DropReason::Malformed));
        assert_eq!(fr[1].rx_drop, Some(DropReason::Malformed));
        assert_eq!(fr[2].rx_drop, Some(DropReason::RxOverflow));
        assert_eq!(fr[3].rx_drop, None);
        assert_eq!(fr[3].data(), &d[..]);
        for k in 0..4 {
            assert_eq!(r.status(k).load(Ordering::Acquire), TP_STATUS_KERNEL);
        }
    }

    #[test]
    fn copied_frames_are_read_in_ring_order() {
        let mut r = ring();
        let small = eth(60, 5);
        let big = eth(9000, 6);
        let v = VnetHdr::default();
        kernel_fill(&r, 0, hdr(TP_STATUS_USER, 60, 60, MAC), &v, &small);
        kernel_fill(
            &r,
            1,
            hdr(TP_STATUS_USER | TP_STATUS_COPY, 9000, 1972, MAC),
            &v,
            &big[..1972],
        );
        kernel_fill(&r, 2, hdr(TP_STATUS_USER, 60, 60, MAC), &v, &small);
        let mut fr = frames(4);
        // The socket reports an error instead of the copy: the slot stays.
        let t = r.take(&mut fr, |_, _| {
            Err(io::Error::from_raw_os_error(libc::ENETDOWN))
        });
        assert_eq!(t.got, 1);
        assert_eq!(t.err.and_then(|e| e.raw_os_error()), Some(libc::ENETDOWN));
        assert_eq!(
            r.status(1).load(Ordering::Acquire) & TP_STATUS_COPY,
            TP_STATUS_COPY
        );
        assert_eq!(r.head, 1);
        // Next call: the copy comes whole from the socket.
        let mut calls = 0;
        let t = r.take(&mut fr, |f, h| {
            calls += 1;
            assert_eq!(h.len, 9000);
            f.set_from_bytes(&big);
            Ok(())
        });
        assert_eq!((t.got, calls), (2, 1));
        assert_eq!(fr[0].data(), &big[..]);
        assert_eq!(fr[1].data(), &small[..]);
    }

    #[test]
    fn no_header_value_panics() {
        // Whatever the kernel (or memory corruption) leaves in a slot header,
        // taking the slot neither panics nor keeps it.
        let mut r = ring();
        let mut fr = frames(4);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let d = eth(200, 7);
        for _ in 0..20_000 {
            let k = r.head;
            let v = next();
            let mut h = SlotHdr {
                status: TP_STATUS_USER | (v as u32 & !(TP_STATUS_COPY | TP_STATUS_USER)),
                len: (v >> 8) as u32 % 4200,
                snaplen: (v >> 24) as u32 % 4200,
                mac: (v >> 40) as u16 % 2200,
                vlan_tci: (v >> 50) as u16,
                vlan_tpid: 0x8100,
            };
            if v & 1 == 0 {
                h.len = h.snaplen;
            }
            kernel_fill(&r, k, h, &VnetHdr::default(), &d);
            let t = r.take(&mut fr, no_copy);
            assert_eq!(t.got, 1);
            assert_eq!(r.status(k).load(Ordering::Acquire), TP_STATUS_KERNEL);
            if fr[0].rx_drop.is_none() {
                assert!(fr[0].len() <= GEO.frame_size as usize);
            }
        }
    }
}
