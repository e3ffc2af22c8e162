//! VXLAN ports: an RFC 7348 VTEP as a bridge port.
//!
//! Every VXLAN port (one VNI) on a (local address, UDP port) shares one
//! underlay socket ([`underlay`]): a datagram is received once, and its VNI
//! names the port it enters the switch by. A frame leaves as one datagram
//! `[VXLAN header][inner Ethernet frame]` per remote: to the one remote its
//! destination was learned (or statically placed) behind, or to every remote
//! on the flood list (head-end replication) for broadcast, multicast and
//! unknown unicast. The outer source port is a hash of the inner flow (RFC
//! 7348 §5), so the underlay's ECMP and the receivers' RSS spread the flows.
//! Receive and send are batched with recvmmsg/sendmmsg; the inner frame is
//! received straight behind the header's place in the frame buffer, so
//! decapsulation moves no bytes.
//!
//! Remotes live in a table per VNI: index 0 means "none", then configured,
//! static and (with `--learning`) learned VTEPs. The bridge's FDB stores the
//! index with each station learned or placed here.
//!
//! A frame whose virtio header asks for an offload (a GSO super-frame or a
//! partial checksum, as TAP ports deliver TCP) cannot go out as one UDP
//! payload: it is segmented and checksummed in software first, and sent
//! with UDP GSO where the kernel has it.

pub mod tunnel_tap;
pub mod underlay;

use super::{is_transient, Caps, IoScratch, Port, TxItem};
use crate::bridge::vlan::TagEdit;
use crate::offload::{self, OffloadError, Segments};
use crate::packet::VnetHdr;
use crate::packet::{Frame, EDIT_PREFIX_MAX, VNET_HDR_LEN};
use crate::stats::{DropReason, PortStats};
use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use underlay::{JoinError, Remote, RemoteKind, Remotes, Segment, SrcPool, Underlay};

/// VXLAN header length (RFC 7348 section 5).
pub const VXLAN_HDR_LEN: usize = 8;
/// The I flag: the VNI field is valid.
const FLAG_I: u8 = 0x08;
/// Largest batch one recvmmsg/sendmmsg call moves.
const MAX_BATCH: usize = 256;
/// `<linux/udp.h>`: UDP GSO, the kernel splits one send into datagrams of
/// the given size (Linux 4.18+).
/// (Not in the libc crate for glibc targets.)
const SOL_UDP: libc::c_int = libc::SOL_UDP;
const UDP_SEGMENT: libc::c_int = 103;
/// At most this many datagrams per UDP GSO send (the kernel's limit is 64
/// or more, depending on the version).
const GSO_MAX_SEGS: usize = 64;
/// At most this many payload bytes per UDP GSO send (one IP datagram's worth).
const GSO_MAX_BYTES: usize = 65_000;

/// How to open a VXLAN port.
#[derive(Debug, Clone)]
pub struct VxlanOptions {
    pub vni: u32,
    pub local: IpAddr,
    pub remotes: Vec<IpAddr>,
    pub dstport: u16,
    /// Accept (and learn) VTEPs that are not configured remotes.
    pub learning: bool,
    /// The outer UDP source-port range, both ends inclusive.
    pub srcport: (u16, u16),
}

pub struct VxlanPort {
    under: Arc<Underlay>,
    seg: Arc<Segment>,
    pool: Arc<SrcPool>,
    /// This port's own descriptor of the underlay socket (a dup), so that
    /// every port on an underlay can be polled like any other port: whichever
    /// worker sees the socket readable receives for all of its VNIs.
    poll: UdpSocket,
    hdr: [u8; VXLAN_HDR_LEN],
    /// UDP GSO works on this kernel (cleared at the first refusal).
    udp_gso: AtomicBool,
    /// The local address is on an interface (see [`VxlanPort::check_local`]).
    local_up: AtomicBool,
}

/// The 8-byte VXLAN header for `vni`: I flag, reserved zero, VNI, reserved.
pub fn vxlan_header(vni: u32) -> [u8; VXLAN_HDR_LEN] {
    let v = vni.to_be_bytes();
    [FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// Checks a received VXLAN header and returns its VNI. Reserved bits are
/// ignored on receipt (RFC 7348 section 5); the I flag must be set.
pub fn parse_vxlan_header(h: &[u8]) -> Result<u32, DropReason> {
    if h.len() < VXLAN_HDR_LEN || h[0] & FLAG_I == 0 {
        return Err(DropReason::VxlanMalformed);
    }
    Ok(u32::from_be_bytes([0, h[4], h[5], h[6]]))
}

/// A hash of a frame's flow: MAC addresses and ethertype, and for IPv4 and
/// IPv6 the addresses, the protocol and (unless a later fragment) the L4
/// ports. Stable for the frames of one flow, whatever the VLAN tag edit.
pub fn flow_hash(f: &[u8]) -> u32 {
    use crate::wire::{eth::L2, ipv4, ipv6};
    let Some(l2) = L2::parse(f) else {
        return 0;
    };
    let mut h = Fx::default();
    h.add(l2.dst.to_u64() ^ (l2.src.to_u64() << 16));
    h.add(u64::from(l2.ethertype));
    let l3 = &f[l2.l3..];
    // The first four bytes of a TCP, UDP or SCTP header: the two ports.
    let ports = |proto: u8, p: &[u8]| match (proto, p) {
        (ipv4::PROTO_TCP | ipv4::PROTO_UDP | 132, [a, b, c, d, ..]) => {
            u64::from(u32::from_be_bytes([*a, *b, *c, *d]))
        }
        _ => 0,
    };
    match l2.ethertype {
        crate::wire::eth::ETHERTYPE_IPV4 => {
            if let Ok(ip) = ipv4::Ipv4::new_checked(l3) {
                h.add((u64::from(u32::from(ip.src())) << 32) | u64::from(u32::from(ip.dst())));
                h.add(u64::from(ip.protocol()));
                if !ip.is_fragment() {
                    h.add(ports(ip.protocol(), ip.payload()));
                }
            }
        }
        crate::wire::eth::ETHERTYPE_IPV6 => {
            if let Ok(ip) = ipv6::Ipv6::new_checked(l3) {
                let (s, d) = (u128::from(ip.src()), u128::from(ip.dst()));
                h.add(s as u64 ^ (s >> 64) as u64);
                h.add(d as u64 ^ (d >> 64) as u64);
                h.add(u64::from(ip.next_header()));
                h.add(ports(ip.next_header(), ip.payload()));
            }
        }
        _ => {}
    }
    h.finish()
}

/// FxHash's multiply-rotate step (rustc's hasher), with a final fold.
#[derive(Default)]
struct Fx(u64);

impl Fx {
    #[inline]
    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn finish(&self) -> u32 {
        let x = self.0 ^ (self.0 >> 29);
        (x ^ (x >> 32)) as u32
    }
}

/// Per-worker scratch for recvmmsg/sendmmsg on VXLAN sockets; the raw
/// pointers are rewritten before each call and never read after it.
pub struct VxlanScratch {
    msgs: Vec<libc::mmsghdr>,
    /// Up to three per message: VXLAN header, edited prefix, rest of frame.
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    prefixes: Vec<[u8; EDIT_PREFIX_MAX]>,
    /// Software-segmented frames of the current send.
    segs: Segments,
    /// The iovecs of one UDP GSO send (header and segment, in turn).
    gso_iovs: Vec<libc::iovec>,
    /// A frame with its tag edit applied (or its checksum completed), when
    /// the offload work needs it in one piece.
    flat: Vec<u8>,
    /// The source socket of each item of the current send.
    sock_of: Vec<u8>,
}

// SAFETY: the raw pointers inside `msgs`/`iovs` are scratch space, filled in
// immediately before each syscall from buffers borrowed for that call only;
// nothing dereferences them outside a call, so moving the scratch between
// threads is sound.
unsafe impl Send for VxlanScratch {}

impl Default for VxlanScratch {
    fn default() -> Self {
        VxlanScratch {
            // SAFETY: mmsghdr, iovec and sockaddr_storage are plain old data;
            // all-zero is a valid value.
            msgs: vec![unsafe { mem::zeroed() }; MAX_BATCH],
            // SAFETY: as above.
            iovs: vec![unsafe { mem::zeroed() }; 3 * MAX_BATCH],
            // SAFETY: as above.
            names: vec![unsafe { mem::zeroed() }; MAX_BATCH],
            prefixes: vec![[0; EDIT_PREFIX_MAX]; MAX_BATCH],
            segs: Segments::new(),
            gso_iovs: Vec::with_capacity(2 * GSO_MAX_SEGS),
            flat: Vec::with_capacity(crate::packet::MAX_FRAME + 4),
            sock_of: Vec::with_capacity(MAX_BATCH),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VxlanError {
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error("VXLAN socket on {0}: {1}")]
    Socket(SocketAddr, io::Error),
}

impl VxlanPort {
    pub fn open(o: &VxlanOptions) -> Result<VxlanPort, VxlanError> {
        let local = SocketAddr::new(o.local, o.dstport);
        let mut remotes = Remotes::new(o.dstport);
        for r in &o.remotes {
            remotes
                .add_flood(*r)
                .map_err(|e| VxlanError::Socket(local, io::Error::other(e)))?;
        }
        let seg = Arc::new(Segment::new(o.vni, o.learning, remotes));
        let (under, pool) = Underlay::join(local, seg.clone(), o.srcport)?;
        let poll = match under.sock.try_clone() {
            Ok(s) => s,
            Err(e) => {
                under.leave(&seg);
                return Err(VxlanError::Socket(local, e));
            }
        };
        Ok(VxlanPort {
            under,
            seg,
            pool,
            poll,
            hdr: vxlan_header(o.vni),
            udp_gso: AtomicBool::new(true),
            local_up: AtomicBool::new(underlay::is_local(o.local)),
        })
    }

    pub fn vni(&self) -> u32 {
        self.seg.vni
    }

    /// Tells the receive path which PortId this port's frames enter by.
    pub fn set_pid(&self, pid: u32) {
        self.seg.set_pid(pid);
    }

    /// The remote VTEP behind table index `peer` (None for 0 or unknown).
    pub fn remote(&self, peer: u16) -> Option<IpAddr> {
        self.seg.remotes().ip(peer)
    }

    /// The flood list now.
    pub fn flood_remotes(&self) -> Vec<IpAddr> {
        self.seg.remotes().flood_ips()
    }

    /// Remotes learned from traffic (not configured).
    pub fn learned_remotes(&self) -> Vec<IpAddr> {
        self.seg.remotes().of_kind(RemoteKind::Learned)
    }

    /// The source ports the flows are spread over.
    pub fn source_ports(&self) -> Vec<u16> {
        self.pool.socks.iter().map(|(p, _)| *p).collect()
    }

    /// Changes the flood list, all or nothing: takes `del` off, puts `add`
    /// on. Returns the table indexes taken off (to forget what was learned
    /// behind them).
    pub fn change_remotes(&self, add: &[IpAddr], del: &[IpAddr]) -> Result<Vec<u16>, String> {
        self.seg.remotes_mut().change_flood(add, del)
    }

    /// Takes the port off its underlay: its VNI is no longer delivered to
    /// its PortId (which may be reused at once), and may be added again.
    pub fn detach(&self) {
        self.seg.set_pid(underlay::NO_PID);
        self.under.leave(&self.seg);
    }

    /// The underlay this port is on (local address and UDP port).
    pub fn underlay_addr(&self) -> SocketAddr {
        self.under.local
    }

    /// The table index for a static FDB entry's VTEP.
    pub fn static_remote(&self, ip: IpAddr) -> Result<u16, String> {
        self.seg.remotes_mut().add_static(ip)
    }

    /// Whether the local address is on an interface, as last checked.
    pub fn local_up(&self) -> bool {
        self.local_up.load(Ordering::Relaxed)
    }

    /// Looks again whether the local address is on an interface; true if
    /// that changed.
    pub fn check_local(&self) -> bool {
        self.set_local_up(underlay::is_local(self.under.local.ip()))
    }

    /// Records whether the local address is on an interface (as found for
    /// another port on the same address); true if that changed.
    pub fn set_local_up(&self, now: bool) -> bool {
        self.local_up.swap(now, Ordering::Relaxed) != now
    }

    pub fn local(&self) -> SocketAddr {
        self.under.local
    }

    /// Sends segments `segs[range]` (equal sizes but the last) to
    /// `to` as one UDP GSO send: the kernel cuts the buffer into one datagram
    /// per segment, each with its own VXLAN header. False if the kernel
    /// refused UDP GSO (the caller falls back to one datagram per segment).
    #[allow(clippy::too_many_arguments)]
    fn send_gso(
        &self,
        fd: RawFd,
        to: &Remote,
        segs: &Segments,
        range: std::ops::Range<usize>,
        iovs: &mut Vec<libc::iovec>,
        stats: &mut PortStats,
    ) -> bool {
        iovs.clear();
        let (first, n) = (range.start, range.len());
        let mut bytes = 0;
        for s in range {
            let Some(seg) = segs.get(s) else { break };
            iovs.push(iov(&self.hdr));
            iovs.push(iov(seg));
            bytes += seg.len();
        }
        let Some(size) = segs.get(first).map(|s| (s.len() + VXLAN_HDR_LEN) as u16) else {
            return true;
        };
        // One cmsghdr with a u16 (u64 words for alignment).
        let mut control = [0u64; 4];
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut m: libc::msghdr = unsafe { mem::zeroed() };
        m.msg_name = (&to.name as *const libc::sockaddr_storage)
            .cast_mut()
            .cast();
        m.msg_namelen = to.namelen;
        m.msg_iov = iovs.as_mut_ptr();
        m.msg_iovlen = iovs.len();
        m.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        m.msg_controllen = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as usize;
        // SAFETY: `m.msg_control` points at `control`, which is larger than
        // CMSG_SPACE(2) and 8-aligned; CMSG_FIRSTHDR/CMSG_DATA stay inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&m);
            (*c).cmsg_level = SOL_UDP;
            (*c).cmsg_type = UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size);
        }
        loop {
            // SAFETY: `m` points at the name, the iovecs (over the port's
            // header and the segments) and the control buffer, all live for
            // the call; the kernel only reads them.
            let r = unsafe { libc::sendmsg(fd, &m, libc::MSG_DONTWAIT) };
            match crate::sys::cvt_size(r) {
                Ok(_) => {
                    stats.tx_packets += n as u64;
                    stats.tx_bytes += bytes as u64;
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_transient(&e) => {
                    stats.drop_n(DropReason::TxQueueFull, n as u64);
                    return true;
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL) | Some(libc::EIO) | Some(libc::ENOPROTOOPT)
                    ) =>
                {
                    tracing::info!(
                        vni = self.seg.vni,
                        "UDP GSO refused ({e}): one datagram per segment"
                    );
                    self.udp_gso.store(false, Ordering::Relaxed);
                    return false;
                }
                Err(_) => {
                    stats.drop_n(DropReason::TxError, n as u64);
                    return true;
                }
            }
        }
    }

    /// Checks a received datagram as [`Port::recv`] does (header, VNI,
    /// source VTEP) and returns the entering port, the remote's table index
    /// and the virtio header the inner frame needs, if any.
    pub fn decap(
        &self,
        hdr: &[u8; VXLAN_HDR_LEN],
        src: Option<IpAddr>,
        inner: &[u8],
    ) -> Result<(u32, u16, Option<VnetHdr>), DropReason> {
        let (pid, peer) = demux(&self.under, hdr, src)?;
        Ok((pid, peer, inner_offload(inner)))
    }

    /// Whether super-frames go whole through the underlay's tunnel TAP.
    pub fn tunnel_gso(&self) -> bool {
        self.under.tap.as_ref().is_some_and(|t| t.usable())
    }

    /// Sends frame `f`, whose virtio header asks for offloads, whole through
    /// the underlay's tunnel TAP to each of `dsts`. False if it cannot go
    /// that way (no TAP, a tag edit, an IPv6 remote, too big, or the kernel
    /// refused): the caller segments it.
    fn send_whole(
        &self,
        f: &Frame,
        edit: TagEdit,
        dsts: &[u16],
        remotes: &Remotes,
        stats: &mut PortStats,
    ) -> bool {
        let Some(tap) = self.under.tap.as_ref() else {
            return false;
        };
        let h = f.vnet();
        let data = f.data();
        if edit != TagEdit::None || !tap.takes(&h, data.len()) {
            return false;
        }
        let Some(l2) = crate::wire::eth::L2::parse(data) else {
            return false;
        };
        let sport = self.source_port(flow_hash(data));
        let segs = if h.gso_type == crate::packet::VnetHdr::GSO_NONE || h.gso_size == 0 {
            1
        } else {
            data.len()
                .saturating_sub(usize::from(h.hdr_len))
                .div_ceil(usize::from(h.gso_size))
                .max(1)
        };
        let wire_bytes = data.len() + (segs - 1) * usize::from(h.hdr_len);
        if dsts.iter().any(|&d| {
            !matches!(
                remotes.list.get(d as usize).map(|r| r.ip),
                Some(IpAddr::V4(_))
            )
        }) {
            return false;
        }
        let mut hdrs = [0u8; tunnel_tap::TUNNEL_HDR_LEN + tunnel_tap::OUTER_LEN];
        for (k, &d) in dsts.iter().enumerate() {
            let Some(IpAddr::V4(to)) = remotes.list.get(d as usize).map(|r| r.ip) else {
                return false;
            };
            tap.headers(
                (&h, l2.l3, data.len()),
                (to, sport, remotes.dstport()),
                &self.hdr,
                &mut hdrs,
            );
            match tap.write(&hdrs, data) {
                Ok(()) => {
                    stats.tx_packets += segs as u64;
                    stats.tx_bytes += wire_bytes as u64;
                }
                Err(e) if is_transient(&e) => stats.drop(DropReason::TxQueueFull),
                // Refused (and the TAP turned off on EINVAL), or the TAP is
                // not usable now: the first destination goes the software
                // way with the rest; after it, the rest alone cannot, so
                // count it.
                Err(_) if k == 0 => return false,
                Err(_) => stats.drop(DropReason::TxError),
            }
        }
        true
    }

    /// The outer source port for a flow hash: the port of the pool socket
    /// the flow's other frames are sent from, so that every packet of a
    /// flow, whole super-frame or not, leaves from one port.
    fn source_port(&self, h: u32) -> u16 {
        self.pool.socks[self.pool.pick(h)].0
    }

    /// Sends the messages prepared in `msgs[..n]` on `fd`, counting per
    /// message.
    fn send_prepared(
        fd: RawFd,
        msgs: &mut [libc::mmsghdr],
        iovs: &[libc::iovec],
        n: usize,
        stats: &mut PortStats,
    ) {
        super::sendmmsg_counted(fd, &mut msgs[..n], iovs, 3, VXLAN_HDR_LEN, stats);
    }
}

impl Drop for VxlanPort {
    fn drop(&mut self) {
        self.under.leave(&self.seg);
    }
}

/// Hands a datagram to its segment: the VNI's port (PortId) and the source
/// VTEP's index in its table (learned there if the segment learns).
fn demux(under: &Underlay, hdr: &[u8], src: Option<IpAddr>) -> Result<(u32, u16), DropReason> {
    let vni = parse_vxlan_header(hdr)?;
    let seg = under.segments().get(&vni).cloned();
    let seg = seg.ok_or(DropReason::VniUnknown)?;
    let pid = seg.pid().ok_or(DropReason::VniUnknown)?;
    let ip = src.ok_or(DropReason::UnknownVtep)?;
    if let Some(i) = seg.remotes().accepted(&ip) {
        return Ok((pid, i));
    }
    if !seg.learning {
        return Err(DropReason::UnknownVtep);
    }
    let i = seg.remotes_mut().learn(ip).ok_or(DropReason::UnknownVtep)?;
    tracing::info!(remote = %ip, vni, "learned a remote VTEP");
    Ok((pid, i))
}

/// Points message `k` at `n` iovecs from `iovs[3k]` and at `name` (the
/// source address slot for a receive, a remote's address for a send).
fn prep(
    msgs: &mut [libc::mmsghdr],
    iovs: &mut [libc::iovec],
    k: usize,
    n: usize,
    name: *mut libc::sockaddr_storage,
    namelen: libc::socklen_t,
) {
    let m = &mut msgs[k].msg_hdr;
    m.msg_name = name.cast();
    m.msg_namelen = namelen;
    m.msg_iov = &mut iovs[3 * k];
    m.msg_iovlen = n;
    m.msg_control = std::ptr::null_mut();
    m.msg_controllen = 0;
    m.msg_flags = 0;
    msgs[k].msg_len = 0;
}

/// Turns a frame whose virtio header asks for offloads into wire frames in
/// `segs` (segmented and checksummed), with the tag edit applied. Returns
/// how many.
pub(crate) fn software_pieces(
    f: &Frame,
    edit: TagEdit,
    segs: &mut Segments,
    flat: &mut Vec<u8>,
) -> Result<usize, OffloadError> {
    segs.clear();
    if edit == TagEdit::None {
        return offload::segment(&f.vnet(), f.data(), segs);
    }
    // The edit moves the headers: build the edited frame once, then segment.
    let mut pre = [0u8; EDIT_PREFIX_MAX];
    let (n, rest) = f.edited_prefix(edit, &mut pre);
    let mut hb = [0u8; VNET_HDR_LEN];
    hb.copy_from_slice(&pre[..VNET_HDR_LEN]);
    flat.clear();
    flat.extend_from_slice(&pre[VNET_HDR_LEN..n]);
    flat.extend_from_slice(&f.data()[rest..]);
    offload::segment(&VnetHdr::parse(&hb), flat, segs)
}

/// The virtio header a decapsulated frame needs: NEEDS_CSUM where the
/// sender left the checksum partial, and GSO for a TCP super-frame that a
/// Linux VTEP sent as one datagram (see [`offload::tunnel_gso`]).
fn inner_offload(inner: &[u8]) -> Option<VnetHdr> {
    let h = offload::partial_csum(inner)?;
    Some(offload::tunnel_gso(inner, &h, offload::TUNNEL_INNER_MTU).unwrap_or(h))
}

/// A remote's address as sendmmsg's msg_name (only read by the kernel).
fn name_of(r: &Remote) -> *mut libc::sockaddr_storage {
    (&r.name as *const libc::sockaddr_storage).cast_mut()
}

fn iov(b: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_ptr() as *mut libc::c_void,
        iov_len: b.len(),
    }
}

impl Port for VxlanPort {
    fn fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    fn recv(&self, frames: &mut [Frame], sc: &mut IoScratch) -> io::Result<usize> {
        let sc = &mut sc.vxlan;
        let n = frames.len().min(MAX_BATCH);
        let namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        for (k, f) in frames[..n].iter_mut().enumerate() {
            let area = f.rx_area_encap(VXLAN_HDR_LEN);
            sc.iovs[3 * k] = libc::iovec {
                iov_base: area.as_mut_ptr().cast(),
                iov_len: area.len(),
            };
            let name: *mut libc::sockaddr_storage = &mut sc.names[k];
            prep(&mut sc.msgs, &mut sc.iovs, k, 1, name, namelen);
        }
        let got = super::recvmmsg(self.under.sock.as_raw_fd(), &mut sc.msgs[..n])?;
        for (k, f) in frames[..got].iter_mut().enumerate() {
            f.ingress = None;
            let m = &sc.msgs[k];
            let len = m.msg_len as usize;
            if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len < VXLAN_HDR_LEN {
                f.rx_drop = Some(DropReason::VxlanMalformed);
                continue;
            }
            let src = underlay::from_sockaddr(&sc.names[k], m.msg_hdr.msg_namelen);
            match demux(&self.under, f.encap_header(VXLAN_HDR_LEN), src) {
                Ok((pid, peer)) => {
                    f.set_rx_len_encap(len, VXLAN_HDR_LEN);
                    f.peer = peer;
                    f.ingress = Some(pid);
                    if let Some(h) = inner_offload(f.data()) {
                        f.set_vnet(&h);
                    }
                }
                Err(r) => f.rx_drop = Some(r),
            }
        }
        Ok(got)
    }

    fn send(
        &self,
        frames: &[Frame],
        items: &[TxItem],
        stats: &mut PortStats,
        io_sc: &mut IoScratch,
    ) {
        let VxlanScratch {
            msgs,
            iovs,
            names: _,
            prefixes,
            segs,
            gso_iovs,
            flat,
            sock_of,
        } = &mut io_sc.vxlan;
        let remotes = self.seg.remotes();
        // Each item's source socket, from its flow's hash; then one pass per
        // socket in use, so that each sendmmsg goes out on one socket.
        sock_of.clear();
        let mut used = 0u64;
        for it in items {
            let s = self.pool.pick(flow_hash(frames[it.idx as usize].data()));
            sock_of.push(s as u8);
            used |= 1 << s;
        }
        while used != 0 {
            let s = used.trailing_zeros() as usize;
            used &= used - 1;
            let fd = self.pool.socks[s].1.as_raw_fd();
            let mut k = 0;
            for (it, _) in items
                .iter()
                .zip(sock_of.iter())
                .filter(|(_, &x)| x as usize == s)
            {
                let f = &frames[it.idx as usize];
                let one = [it.peer];
                // A remote taken off since the station was learned behind
                // it: flood, as for an unknown station.
                let dsts: &[u16] = if remotes.live(it.peer) {
                    &one
                } else {
                    &remotes.flood
                };
                if offload::needs_software(&f.vnet())
                    && self.send_whole(f, it.edit, dsts, &remotes, stats)
                {
                    continue;
                }
                if offload::needs_software(&f.vnet()) {
                    // A UDP payload cannot carry offloads: segment (and
                    // checksum) in software, then send every piece now (the
                    // buffers are reused by the next frame).
                    if k > 0 {
                        Self::send_prepared(fd, msgs, iovs, k, stats);
                        k = 0;
                    }
                    let count = match software_pieces(f, it.edit, segs, flat) {
                        Ok(n) => n,
                        Err(_) => {
                            stats.drop(DropReason::OffloadFailed);
                            continue;
                        }
                    };
                    if count > 1 && self.udp_gso.load(Ordering::Relaxed) {
                        // UDP GSO: one send per destination and up to 64 KiB.
                        let per = segs.get(0).map_or(1, |s| {
                            (GSO_MAX_BYTES / (s.len() + VXLAN_HDR_LEN)).clamp(1, GSO_MAX_SEGS)
                        });
                        let mut done = true;
                        'dsts: for &d in dsts {
                            let mut first = 0;
                            while first < count {
                                let n = per.min(count - first);
                                if !self.send_gso(
                                    fd,
                                    &remotes.list[d as usize],
                                    segs,
                                    first..first + n,
                                    gso_iovs,
                                    stats,
                                ) {
                                    done = false;
                                    break 'dsts;
                                }
                                first += n;
                            }
                        }
                        if done {
                            continue;
                        }
                    }
                    for p in 0..count {
                        let Some(piece) = segs.get(p) else { break };
                        for &d in dsts {
                            if k == MAX_BATCH {
                                Self::send_prepared(fd, msgs, iovs, k, stats);
                                k = 0;
                            }
                            let r = &remotes.list[d as usize];
                            iovs[3 * k] = iov(&self.hdr);
                            iovs[3 * k + 1] = iov(piece);
                            prep(msgs, iovs, k, 2, name_of(r), r.namelen);
                            k += 1;
                        }
                    }
                    Self::send_prepared(fd, msgs, iovs, k, stats);
                    k = 0;
                    continue;
                }
                for &d in dsts {
                    if k == MAX_BATCH {
                        Self::send_prepared(fd, msgs, iovs, k, stats);
                        k = 0;
                    }
                    let r = &remotes.list[d as usize];
                    iovs[3 * k] = iov(&self.hdr);
                    if it.edit == TagEdit::None {
                        iovs[3 * k + 1] = iov(f.data());
                        prep(msgs, iovs, k, 2, name_of(r), r.namelen);
                    } else {
                        let (n, rest) = f.edited_prefix(it.edit, &mut prefixes[k]);
                        iovs[3 * k + 1] = iov(&prefixes[k][VNET_HDR_LEN..n]);
                        iovs[3 * k + 2] = iov(&f.data()[rest..]);
                        prep(msgs, iovs, k, 3, name_of(r), r.namelen);
                    }
                    k += 1;
                }
            }
            if k > 0 {
                Self::send_prepared(fd, msgs, iovs, k, stats);
            }
        }
    }

    fn is_gone(&self, _err: &io::Error) -> bool {
        false
    }

    fn caps(&self) -> Caps {
        Caps { vnet_hdr: false }
    }

    fn kernel_drops(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests;
