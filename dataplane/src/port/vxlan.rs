//! VXLAN ports: an RFC 7348 VTEP as a bridge port.
//!
//! The underlay is one UDP socket bound to `--local` and the VXLAN port
//! (4789 by default); the kernel builds the outer IP and UDP headers. A frame
//! leaves as one datagram `[VXLAN header][inner Ethernet frame]` per remote:
//! to the one remote its destination was learned behind, or to every
//! configured remote (head-end replication) for broadcast, multicast and
//! unknown unicast. Receive and send are batched with recvmmsg/sendmmsg; the
//! inner frame is received straight behind the header's place in the frame
//! buffer, so decapsulation moves no bytes.
//!
//! Remotes live in a table the port owns: index 0 means "none", then the
//! configured remotes, then (with `--learning`) VTEPs that sent us frames.
//! The bridge's FDB stores the index with each station learned here.
//!
//! A frame whose virtio header asks for an offload (a GSO super-frame or a
//! partial checksum, as TAP ports deliver TCP) cannot go out as one UDP
//! payload: it is segmented and checksummed in software first.

use super::{is_transient, Caps, IoScratch, Port, TxItem};
use crate::bridge::vlan::TagEdit;
use crate::offload::{self, OffloadError, Segments};
use crate::packet::VnetHdr;
use crate::packet::{Frame, EDIT_PREFIX_MAX, VNET_HDR_LEN};
use crate::stats::{DropReason, PortStats};
use hashbrown::HashMap;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

/// VXLAN header length (RFC 7348 section 5).
pub const VXLAN_HDR_LEN: usize = 8;
/// The I flag: the VNI field is valid.
const FLAG_I: u8 = 0x08;
/// Largest batch one recvmmsg/sendmmsg call moves.
const MAX_BATCH: usize = 256;
const SOCK_BUF: libc::c_int = 8 << 20;
/// `<linux/udp.h>`: UDP GSO, the kernel splits one send into datagrams of
/// the given size (Linux 4.18+).
const SOL_UDP: libc::c_int = 17;
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
}

/// One remote VTEP, with its socket address built once for sendmmsg.
struct Remote {
    ip: IpAddr,
    name: libc::sockaddr_storage,
    namelen: libc::socklen_t,
}

struct Remotes {
    /// Index 0 is a placeholder ("no remote").
    list: Vec<Remote>,
    index: HashMap<IpAddr, u16>,
    configured: usize,
    dstport: u16,
}

impl Remotes {
    fn new(dstport: u16) -> Remotes {
        let mut r = Remotes {
            list: Vec::new(),
            index: HashMap::new(),
            configured: 0,
            dstport,
        };
        r.push(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        r.index.clear();
        r
    }

    /// Appends `ip` (unless known or the table is full); its index.
    fn push(&mut self, ip: IpAddr) -> Option<u16> {
        if let Some(&i) = self.index.get(&ip) {
            return Some(i);
        }
        if self.list.len() > crate::config::MAX_REMOTES {
            return None;
        }
        // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
        let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let namelen = to_sockaddr(SocketAddr::new(ip, self.dstport), &mut name);
        let i = self.list.len() as u16;
        self.list.push(Remote { ip, name, namelen });
        self.index.insert(ip, i);
        Some(i)
    }
}

/// Where a datagram's source stands in the remote table.
enum Source {
    Known(u16),
    /// Not a remote (yet): learn it if the port does.
    Unknown(IpAddr),
}

pub struct VxlanPort {
    sock: UdpSocket,
    vni: u32,
    hdr: [u8; VXLAN_HDR_LEN],
    learning: bool,
    remotes: RwLock<Remotes>,
    /// UDP GSO works on this kernel (cleared at the first refusal).
    udp_gso: AtomicBool,
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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VxlanError {
    #[error("cannot bind the VXLAN socket to {0}: {1}")]
    Bind(SocketAddr, io::Error),
    #[error("VXLAN socket on {0}: {1}")]
    Socket(SocketAddr, io::Error),
}

/// Writes `addr` as a sockaddr_in/sockaddr_in6 into `st`; returns its length.
fn to_sockaddr(addr: SocketAddr, st: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_in is plain old data; all-zero is valid.
            let mut sin: libc::sockaddr_in = unsafe { mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            // SAFETY: sockaddr_storage is larger than and aligned for any
            // sockaddr type; we write one sockaddr_in at its start.
            unsafe { std::ptr::write((st as *mut libc::sockaddr_storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is plain old data; all-zero is valid.
            let mut sin6: libc::sockaddr_in6 = unsafe { mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            // SAFETY: as above, for one sockaddr_in6.
            unsafe { std::ptr::write((st as *mut libc::sockaddr_storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// The source address the kernel wrote into `st` (recvmmsg's msg_name).
fn from_sockaddr(st: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<IpAddr> {
    match st.ss_family as libc::c_int {
        libc::AF_INET if len as usize >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, which
            // fits and is suitably aligned inside sockaddr_storage.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((st as *const libc::sockaddr_storage).cast()) };
            Some(IpAddr::V4(Ipv4Addr::from(
                sin.sin_addr.s_addr.to_ne_bytes(),
            )))
        }
        libc::AF_INET6 if len as usize >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a sockaddr_in6.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((st as *const libc::sockaddr_storage).cast()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            // A v4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(ip),
            })
        }
        _ => None,
    }
}

impl VxlanPort {
    pub fn open(o: &VxlanOptions) -> Result<VxlanPort, VxlanError> {
        let local = SocketAddr::new(o.local, o.dstport);
        let sock = UdpSocket::bind(local).map_err(|e| VxlanError::Bind(local, e))?;
        let err = |e| VxlanError::Socket(local, e);
        sock.set_nonblocking(true).map_err(err)?;
        crate::sys::set_socket_buffers(sock.as_raw_fd(), SOCK_BUF);
        let mut remotes = Remotes::new(o.dstport);
        for r in &o.remotes {
            remotes.push(*r);
        }
        remotes.configured = remotes.list.len() - 1;
        Ok(VxlanPort {
            sock,
            vni: o.vni,
            hdr: vxlan_header(o.vni),
            learning: o.learning,
            remotes: RwLock::new(remotes),
            udp_gso: AtomicBool::new(true),
        })
    }

    pub fn vni(&self) -> u32 {
        self.vni
    }

    /// The remote VTEP behind table index `peer` (None for 0 or unknown).
    pub fn remote(&self, peer: u16) -> Option<IpAddr> {
        let r = self.remotes();
        (peer != 0)
            .then(|| r.list.get(peer as usize).map(|x| x.ip))
            .flatten()
    }

    fn remotes(&self) -> std::sync::RwLockReadGuard<'_, Remotes> {
        self.remotes.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends segments `segs[range]` (equal sizes but the last) to
    /// `to` as one UDP GSO send: the kernel cuts the buffer into one datagram
    /// per segment, each with its own VXLAN header. False if the kernel
    /// refused UDP GSO (the caller falls back to one datagram per segment).
    fn send_gso(
        &self,
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
            let r = unsafe { libc::sendmsg(self.sock.as_raw_fd(), &m, libc::MSG_DONTWAIT) };
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
                        vni = self.vni,
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

    /// Remotes learned from traffic (not configured).
    pub fn learned_remotes(&self) -> Vec<IpAddr> {
        let r = self.remotes();
        r.list[1 + r.configured..].iter().map(|x| x.ip).collect()
    }

    /// Checks a received datagram: its VXLAN header, its source VTEP, and
    /// whether the inner frame's checksum was left partial. Returns the
    /// remote's table index and the virtio header the frame needs, if any.
    pub fn decap(
        &self,
        hdr: &[u8; VXLAN_HDR_LEN],
        src: Option<IpAddr>,
        inner: &[u8],
    ) -> Result<(u16, Option<VnetHdr>), DropReason> {
        let source = self.check(&self.remotes(), hdr, src)?;
        let peer = self.known(source)?;
        Ok((peer, inner_offload(inner)))
    }

    /// The header and VNI of a datagram, and where its source stands.
    fn check(&self, r: &Remotes, hdr: &[u8], src: Option<IpAddr>) -> Result<Source, DropReason> {
        if parse_vxlan_header(hdr)? != self.vni {
            return Err(DropReason::VniMismatch);
        }
        let ip = src.ok_or(DropReason::UnknownVtep)?;
        Ok(match r.index.get(&ip) {
            Some(&i) => Source::Known(i),
            None => Source::Unknown(ip),
        })
    }

    /// The table index of a source: known, newly learned (with
    /// `--learning`, taking the write lock), or refused. No read guard may be
    /// held by the caller.
    fn known(&self, s: Source) -> Result<u16, DropReason> {
        let ip = match s {
            Source::Known(i) => return Ok(i),
            Source::Unknown(_) if !self.learning => return Err(DropReason::UnknownVtep),
            Source::Unknown(ip) => ip,
        };
        let mut r = self.remotes.write().unwrap_or_else(|e| e.into_inner());
        let i = r.push(ip).ok_or(DropReason::UnknownVtep)?;
        tracing::info!(remote = %ip, vni = self.vni, "learned a remote VTEP");
        Ok(i)
    }

    /// Sends the messages prepared in `msgs[..n]`, counting per message.
    fn send_prepared(
        &self,
        msgs: &mut [libc::mmsghdr],
        iovs: &[libc::iovec],
        n: usize,
        stats: &mut PortStats,
    ) {
        super::sendmmsg_counted(
            self.sock.as_raw_fd(),
            &mut msgs[..n],
            iovs,
            3,
            VXLAN_HDR_LEN,
            stats,
        );
    }
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
fn software_pieces(
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

/// A remote's address as sendmmsg's msg_name (only read by the kernel).
/// The virtio header a decapsulated frame needs: NEEDS_CSUM where the
/// sender left the checksum partial, and GSO for a TCP super-frame that a
/// Linux VTEP sent as one datagram (see [`offload::tunnel_gso`]).
fn inner_offload(inner: &[u8]) -> Option<VnetHdr> {
    let h = offload::partial_csum(inner)?;
    Some(offload::tunnel_gso(inner, &h, offload::TUNNEL_INNER_MTU).unwrap_or(h))
}

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
        self.sock.as_raw_fd()
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
        let got = super::recvmmsg(self.sock.as_raw_fd(), &mut sc.msgs[..n])?;
        // One read lock for the batch; dropped only to learn a new remote.
        let mut remotes = self.remotes();
        for (k, f) in frames[..got].iter_mut().enumerate() {
            let m = &sc.msgs[k];
            let len = m.msg_len as usize;
            if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len < VXLAN_HDR_LEN {
                f.rx_drop = Some(DropReason::VxlanMalformed);
                continue;
            }
            let src = from_sockaddr(&sc.names[k], m.msg_hdr.msg_namelen);
            let peer = match self.check(&remotes, f.encap_header(VXLAN_HDR_LEN), src) {
                Ok(Source::Known(p)) => Ok(p),
                Ok(unknown) => {
                    drop(remotes);
                    let p = self.known(unknown);
                    remotes = self.remotes();
                    p
                }
                Err(r) => Err(r),
            };
            match peer {
                Ok(p) => {
                    f.set_rx_len_encap(len, VXLAN_HDR_LEN);
                    f.peer = p;
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
        } = &mut io_sc.vxlan;
        let remotes = self.remotes();
        let flood = 1..=remotes.configured;
        let mut k = 0;
        for it in items {
            let f = &frames[it.idx as usize];
            let dsts = if it.peer != 0 && (it.peer as usize) < remotes.list.len() {
                it.peer as usize..=it.peer as usize
            } else {
                flood.clone()
            };
            if offload::needs_software(&f.vnet()) {
                // A UDP payload cannot carry offloads: segment (and
                // checksum) in software, then send every piece now (the
                // buffers are reused by the next frame).
                if k > 0 {
                    self.send_prepared(msgs, iovs, k, stats);
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
                    'dsts: for d in dsts.clone() {
                        let mut first = 0;
                        while first < count {
                            let n = per.min(count - first);
                            if !self.send_gso(
                                &remotes.list[d],
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
                for s in 0..count {
                    let Some(piece) = segs.get(s) else { break };
                    for d in dsts.clone() {
                        if k == MAX_BATCH {
                            self.send_prepared(msgs, iovs, k, stats);
                            k = 0;
                        }
                        let r = &remotes.list[d];
                        iovs[3 * k] = iov(&self.hdr);
                        iovs[3 * k + 1] = iov(piece);
                        prep(msgs, iovs, k, 2, name_of(r), r.namelen);
                        k += 1;
                    }
                }
                self.send_prepared(msgs, iovs, k, stats);
                k = 0;
                continue;
            }
            for d in dsts {
                if k == MAX_BATCH {
                    self.send_prepared(msgs, iovs, k, stats);
                    k = 0;
                }
                let r = &remotes.list[d];
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
            self.send_prepared(msgs, iovs, k, stats);
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
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip() {
        let h = vxlan_header(0x12_3456);
        assert_eq!(h, [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        assert_eq!(parse_vxlan_header(&h), Ok(0x12_3456));
        // Reserved bits are ignored on receipt.
        let mut r = h;
        r[1] = 0xff;
        r[7] = 0xff;
        assert_eq!(parse_vxlan_header(&r), Ok(0x12_3456));
    }

    #[test]
    fn header_without_i_flag_is_refused() {
        let mut h = vxlan_header(5);
        h[0] = 0;
        assert_eq!(parse_vxlan_header(&h), Err(DropReason::VxlanMalformed));
        assert_eq!(parse_vxlan_header(&h[..4]), Err(DropReason::VxlanMalformed));
    }

    #[test]
    fn sockaddr_roundtrip() {
        // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
        let mut st: libc::sockaddr_storage = unsafe { mem::zeroed() };
        for a in ["192.0.2.7:4789", "[2001:db8::7]:4789"] {
            let a: SocketAddr = a.parse().unwrap();
            let n = to_sockaddr(a, &mut st);
            assert_eq!(from_sockaddr(&st, n), Some(a.ip()));
        }
    }
}
