//! AF_PACKET ports: attach an existing interface (a veth end, a NIC, someone
//! else's TAP) in promiscuous mode.
//!
//! The socket uses PACKET_VNET_HDR, so GSO super-frames from veth arrive whole
//! with their offload metadata and leave the same way; PACKET_IGNORE_OUTGOING
//! so the switch never sees its own transmissions; PACKET_QDISC_BYPASS to skip
//! the egress qdisc. Receive and send are batched with recvmmsg/sendmmsg.
//! (A TPACKET_V3 ring would save the per-batch copy; see the performance issue.)

use super::{is_transient, Caps, Port};
use crate::packet::Frame;
use crate::stats::{DropReason, PortStats};
use crate::sys::{self, cvt};
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const SOCK_BUF: libc::c_int = 8 << 20;

/// Largest batch one recvmmsg/sendmmsg call moves.
const MAX_BATCH: usize = 256;

pub struct AfPacketPort {
    fd: OwnedFd,
    ifname: String,
    ifindex: u32,
    // Scratch arrays for recvmmsg/sendmmsg, reused on every call; their raw
    // pointers are rewritten before each call and never read after it.
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
}

// SAFETY: the raw pointers inside `msgs`/`iovs` are scratch space, filled in
// immediately before each syscall from buffers borrowed for that call only;
// nothing dereferences them outside a call, so moving the port between
// threads is sound.
unsafe impl Send for AfPacketPort {}

#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    #[error("no interface named '{0}' in the daemon's network namespace")]
    NoSuchInterface(String),
    #[error("AF_PACKET socket on '{0}': {1}")]
    Socket(String, io::Error),
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a live int whose size is passed alongside.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&val as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
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
        // Best effort: both only speed things up.
        let _ = setsockopt_int(s, libc::SOL_PACKET, PACKET_QDISC_BYPASS, 1);
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            if setsockopt_int(s, libc::SOL_SOCKET, force, SOCK_BUF).is_err() {
                let _ = setsockopt_int(s, libc::SOL_SOCKET, plain, SOCK_BUF);
            }
        }

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
        sys::set_up(ifname).map_err(err)?;

        Ok(AfPacketPort {
            fd,
            ifname: ifname.into(),
            ifindex,
            // SAFETY: mmsghdr and iovec are plain old data; zero is valid.
            msgs: vec![unsafe { mem::zeroed() }; MAX_BATCH],
            // SAFETY: as above.
            iovs: vec![unsafe { mem::zeroed() }; MAX_BATCH],
        })
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Points message `k` at one iovec of `ptr`/`len`.
    fn prep(&mut self, k: usize, ptr: *mut libc::c_void, len: usize) {
        self.iovs[k] = libc::iovec {
            iov_base: ptr,
            iov_len: len,
        };
        let m = &mut self.msgs[k].msg_hdr;
        m.msg_name = std::ptr::null_mut();
        m.msg_namelen = 0;
        m.msg_iov = &mut self.iovs[k];
        m.msg_iovlen = 1;
        m.msg_control = std::ptr::null_mut();
        m.msg_controllen = 0;
        m.msg_flags = 0;
        self.msgs[k].msg_len = 0;
    }
}

impl Port for AfPacketPort {
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn recv(&mut self, frames: &mut [Frame]) -> io::Result<usize> {
        let n = frames.len().min(MAX_BATCH);
        for (k, f) in frames[..n].iter_mut().enumerate() {
            let area = f.rx_area_vnet();
            let (p, l) = (area.as_mut_ptr().cast(), area.len());
            self.prep(k, p, l);
        }
        let got = loop {
            // SAFETY: `msgs[..n]` each point at one iovec into a distinct,
            // exclusively borrowed frame buffer that outlives the call.
            let r = unsafe {
                libc::recvmmsg(
                    self.fd.as_raw_fd(),
                    self.msgs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            match cvt(r) {
                Ok(k) => break k as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) => return Err(e),
            }
        };
        for (k, f) in frames[..got].iter_mut().enumerate() {
            let m = &self.msgs[k];
            if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                f.set_rx_len_vnet(0); // counted as malformed
            } else {
                f.set_rx_len_vnet(m.msg_len as usize);
            }
        }
        Ok(got)
    }

    fn send(&mut self, frames: &[Frame], idx: &[u16], stats: &mut PortStats) {
        for chunk in idx.chunks(MAX_BATCH) {
            for (k, &i) in chunk.iter().enumerate() {
                let b = frames[i as usize].with_vnet();
                self.prep(k, b.as_ptr() as *mut libc::c_void, b.len());
            }
            let mut off = 0;
            while off < chunk.len() {
                // SAFETY: `msgs[off..chunk.len()]` point at iovecs over frame
                // buffers borrowed (shared) for the duration of this call; the
                // kernel only reads them.
                let r = unsafe {
                    libc::sendmmsg(
                        self.fd.as_raw_fd(),
                        self.msgs.as_mut_ptr().add(off),
                        (chunk.len() - off) as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                match cvt(r) {
                    Ok(sent) => {
                        for &i in &chunk[off..off + sent as usize] {
                            stats.tx_packets += 1;
                            stats.tx_bytes += frames[i as usize].len() as u64;
                        }
                        off += sent as usize;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if is_transient(&e) => {
                        stats.drop_n(DropReason::TxQueueFull, (chunk.len() - off) as u64);
                        break;
                    }
                    Err(e)
                        if e.raw_os_error() == Some(libc::ENETDOWN)
                            || e.raw_os_error() == Some(libc::ENXIO) =>
                    {
                        stats.drop_n(DropReason::TxError, (chunk.len() - off) as u64);
                        break;
                    }
                    Err(_) => {
                        // This one message is bad (too big, ...): skip it.
                        stats.drop(DropReason::TxError);
                        off += 1;
                    }
                }
            }
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
}
