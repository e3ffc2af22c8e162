//! AF_PACKET ports: attach an existing interface (a veth end, a NIC, someone
//! else's TAP) in promiscuous mode.
//!
//! The socket uses PACKET_VNET_HDR, so GSO super-frames from veth arrive whole
//! with their offload metadata and leave the same way; PACKET_IGNORE_OUTGOING
//! so the switch never sees its own transmissions; PACKET_QDISC_BYPASS to skip
//! the egress qdisc. Receive and send are batched with recvmmsg/sendmmsg.
//! (A TPACKET_V3 ring would save the per-batch copy; see the performance issue.)

use super::{Caps, IoScratch, Port, TxItem};
use crate::bridge::vlan::TagEdit;
use crate::packet::{Frame, EDIT_PREFIX_MAX, VNET_HDR_LEN};
use crate::stats::PortStats;
use crate::sys::{self, cvt, setsockopt_int};
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_AUXDATA: libc::c_int = 8;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const SOCK_BUF: libc::c_int = 8 << 20;
/// Room for one cmsghdr carrying a tpacket_auxdata (16 + 20 bytes, rounded).
const CMSG_WORDS: usize = 8;

/// Largest batch one recvmmsg/sendmmsg call moves.
const MAX_BATCH: usize = 256;

pub struct AfPacketPort {
    fd: OwnedFd,
    ifname: String,
    ifindex: u32,
    /// Socket drops read so far (PACKET_STATISTICS resets on every read).
    drops: AtomicU64,
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
    pub fn open(ifname: &str) -> Result<AfPacketPort, AfPacketError> {
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
            fd,
            ifname: ifname.into(),
            ifindex,
            drops: AtomicU64::new(0),
        })
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }
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
                if aux.tp_status & TP_STATUS_VLAN_VALID != 0 {
                    let tpid = if aux.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                        aux.tp_vlan_tpid
                    } else {
                        crate::bridge::vlan::TPID_8021Q
                    };
                    return Some((tpid, aux.tp_vlan_tci));
                }
                return None;
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

    fn recv(&self, frames: &mut [Frame], sc: &mut IoScratch) -> io::Result<usize> {
        let sc = &mut sc.mmsg;
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
