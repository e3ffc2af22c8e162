//! Sending TCP super-frames over the VXLAN underlay whole, as the kernel's
//! own vxlan device does, through a TAP device that takes UDP-tunnel GSO.
//!
//! A UDP socket cannot carry a 64 KiB TSO frame as one datagram: the port
//! used to segment it in software and send the pieces with UDP GSO, and the
//! receiving kernel VTEP had to handle every piece (decapsulate, then GRO
//! the inner TCP back together). Linux 6.18's tun takes a 24-byte virtio
//! header (`struct virtio_net_hdr_v1_hash_tunnel`) whose GSO type may say
//! `VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4`, with the outer transport and inner
//! network header offsets. So the port writes `[header][outer Ethernet,
//! IPv4, UDP, VXLAN][inner TSO frame]` into a TAP of its own; the kernel
//! receives it on the TAP, routes it (forwarding on for that TAP only,
//! `accept_local` because the outer source is our own address) and sends it
//! out of the underlay interface still whole: a veth passes it as it is, a
//! NIC segments it in hardware or the kernel segments it at the last moment.
//!
//! Only for IPv4 underlays and frames with offloads (the others keep the
//! socket and sendmmsg); where the kernel refuses the tunnel offload
//! (`TUNSETOFFLOAD` EINVAL on older kernels) or a write, the port goes back
//! to software segmentation. `VSWITCH_VXLAN_TAP=0` turns it off (for
//! comparisons). A FORWARD firewall on the host must accept the frames
//! (they are forwarded from the TAP).

use crate::packet::VnetHdr;
use crate::port::tundev;
use crate::sys::{self, cvt};
use crate::MacAddr;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

/// `<linux/if_tun.h>` (6.18): the UDP-tunnel GSO offloads (not yet in the
/// libc crate).
const TUN_F_UDP_TUNNEL_GSO: libc::c_uint = 0x080;
const TUN_F_UDP_TUNNEL_GSO_CSUM: libc::c_uint = 0x100;
/// `<linux/virtio_net.h>`: the GSO type flag for an IPv4 UDP tunnel.
const GSO_UDP_TUNNEL_IPV4: u8 = 0x20;
/// `struct virtio_net_hdr_v1_hash_tunnel`: the v1 header (12 bytes), the
/// hash fields (8), outer transport and inner network header offsets.
pub const TUNNEL_HDR_LEN: usize = 24;
/// Outer Ethernet, IPv4, UDP and VXLAN headers.
pub const OUTER_LEN: usize = 14 + 20 + 8 + 8;
/// The kernel decrements it once on the way out (it forwards the frame).
const OUTER_TTL: u8 = 65;

/// A TAP the VXLAN ports of one IPv4 underlay send super-frames into.
pub struct TunnelTap {
    fd: OwnedFd,
    pub name: String,
    /// The TAP's kernel-side address: the outer destination MAC.
    dst_mac: MacAddr,
    src: Ipv4Addr,
    ident: AtomicU16,
    /// Cleared at the first write the kernel refuses.
    usable: AtomicBool,
}

impl TunnelTap {
    /// Makes the TAP for underlay address `src`, or says why not.
    pub fn open(src: Ipv4Addr) -> io::Result<TunnelTap> {
        if std::env::var("VSWITCH_VXLAN_TAP").is_ok_and(|v| v == "0") {
            return Err(io::Error::other("off (VSWITCH_VXLAN_TAP=0)"));
        }
        let o = src.octets();
        let name = format!("vxtx{:02x}{:02x}{:02x}{:02x}", o[0], o[1], o[2], o[3]);
        let fd = tundev::open()?;
        tundev::set_iff(fd.as_raw_fd(), &name, tundev::Kind::Tap).map_err(|e| match e {
            tundev::IffError::Name(e) | tundev::IffError::Other(e) => e,
            tundev::IffError::Busy => io::Error::other(format!("{name} is in use")),
            tundev::IffError::WrongKind => io::Error::other(format!("{name} exists")),
        })?;
        let sz = TUNNEL_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which
        // points to a live local for the duration of the call.
        cvt(unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNSETVNETHDRSZ as _,
                &sz as *const libc::c_int,
            )
        })?;
        let offloads = libc::TUN_F_CSUM
            | libc::TUN_F_TSO4
            | libc::TUN_F_TSO6
            | libc::TUN_F_TSO_ECN
            | TUN_F_UDP_TUNNEL_GSO
            | TUN_F_UDP_TUNNEL_GSO_CSUM;
        // SAFETY: TUNSETOFFLOAD takes its argument by value (no pointer).
        cvt(unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNSETOFFLOAD as _,
                offloads as libc::c_ulong,
            )
        })?;
        // Forwarding and local sources on this interface only; no IPv6 on
        // it (nothing to say there).
        for (path, v) in [
            (format!("/proc/sys/net/ipv4/conf/{name}/forwarding"), "1"),
            (format!("/proc/sys/net/ipv4/conf/{name}/accept_local"), "1"),
            (format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), "0"),
        ] {
            std::fs::write(&path, v)
                .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
        }
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
        sys::set_up(&name)?;
        let dst_mac = sys::get_mac(&name)?;
        Ok(TunnelTap {
            fd,
            name,
            dst_mac,
            src,
            ident: AtomicU16::new(1),
            usable: AtomicBool::new(true),
        })
    }

    pub fn usable(&self) -> bool {
        self.usable.load(Ordering::Relaxed)
    }

    /// Whether `frame` (with virtio header `h`) can go this way: offloads
    /// asked for, and the whole datagram within an IPv4 packet.
    pub fn takes(&self, h: &VnetHdr, frame_len: usize) -> bool {
        let gso = h.gso_type & !VnetHdr::GSO_ECN;
        let tcp_or_none = matches!(
            gso,
            VnetHdr::GSO_NONE | VnetHdr::GSO_TCPV4 | VnetHdr::GSO_TCPV6
        );
        // The checks the kernel makes of a virtio header, so that a bad one
        // from a guest goes to software segmentation (which refuses it and
        // counts it) rather than making the kernel refuse the TAP's writes.
        let gso_ok =
            gso == VnetHdr::GSO_NONE || (h.gso_size != 0 && usize::from(h.hdr_len) <= frame_len);
        let csum_ok = h.flags & VnetHdr::F_NEEDS_CSUM == 0
            || usize::from(h.csum_start) + usize::from(h.csum_offset) + 2 <= frame_len;
        self.usable() && tcp_or_none && gso_ok && csum_ok && frame_len + OUTER_LEN - 14 <= 65535
    }

    /// Writes the headers for an inner frame of `frame_len` bytes (virtio
    /// header `h`, its L3 header at `l3`) to `to` (address, UDP source
    /// port) into `out`: the 24-byte tunnel virtio header, then outer
    /// Ethernet, IPv4, UDP and `vxlan`.
    pub fn headers(
        &self,
        inner: (&VnetHdr, usize, usize),
        to: (Ipv4Addr, u16, u16),
        vxlan: &[u8; 8],
        out: &mut [u8; TUNNEL_HDR_LEN + OUTER_LEN],
    ) {
        let ident = self.ident.fetch_add(1, Ordering::Relaxed);
        write_headers((self.dst_mac, self.src, ident), inner, to, vxlan, out);
    }

    /// Writes one datagram: the prepared headers, then the frame. After an
    /// EINVAL (the kernel refuses such frames) the TAP is no longer
    /// [`TunnelTap::usable`] and the port segments in software.
    pub fn write(&self, hdrs: &[u8], frame: &[u8]) -> io::Result<()> {
        let iov = [
            libc::iovec {
                iov_base: hdrs.as_ptr() as *mut libc::c_void,
                iov_len: hdrs.len(),
            },
            libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            },
        ];
        // SAFETY: both iovecs point into live slices for the duration of the
        // call; the kernel only reads them.
        let r = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        match sys::cvt_size(r) {
            Ok(_) => Ok(()),
            Err(e) => {
                if e.raw_os_error() == Some(libc::EINVAL) {
                    tracing::warn!(tap = %self.name, "the kernel refused a UDP-tunnel GSO frame ({e}): segmenting in software from now on");
                    self.usable.store(false, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }
}

/// [`TunnelTap::headers`] with the TAP's MAC, our address and the IPv4
/// identification given; `to` is (remote address, source port, remote's
/// UDP port).
fn write_headers(
    (dst_mac, src, ident): (MacAddr, Ipv4Addr, u16),
    (h, l3, frame_len): (&VnetHdr, usize, usize),
    (dst, sport, dport): (Ipv4Addr, u16, u16),
    vxlan: &[u8; 8],
    out: &mut [u8; TUNNEL_HDR_LEN + OUTER_LEN],
) {
    out.fill(0);
    // struct virtio_net_hdr_v1 (little-endian): the inner offsets move by
    // the outer headers.
    let o = OUTER_LEN as u16;
    if h.flags & VnetHdr::F_NEEDS_CSUM != 0 {
        out[0] = VnetHdr::F_NEEDS_CSUM;
        out[6..8].copy_from_slice(&h.csum_start.saturating_add(o).to_le_bytes());
        out[8..10].copy_from_slice(&h.csum_offset.to_le_bytes());
    }
    if h.gso_type != VnetHdr::GSO_NONE {
        out[1] = h.gso_type | GSO_UDP_TUNNEL_IPV4;
        out[2..4].copy_from_slice(&h.hdr_len.saturating_add(o).to_le_bytes());
        out[4..6].copy_from_slice(&h.gso_size.to_le_bytes());
        // outer_th_offset, inner_nh_offset.
        out[20..22].copy_from_slice(&34u16.to_le_bytes());
        out[22..24].copy_from_slice(&(o + l3 as u16).to_le_bytes());
    }
    let e = &mut out[TUNNEL_HDR_LEN..];
    e[0..6].copy_from_slice(&dst_mac.0);
    // A locally administered source the TAP never uses itself.
    let mut src_mac = dst_mac.0;
    src_mac[0] = 0x02;
    src_mac[5] ^= 0x01;
    e[6..12].copy_from_slice(&src_mac);
    e[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    crate::wire::ipv4::Repr {
        src,
        dst,
        protocol: crate::wire::ipv4::PROTO_UDP,
        ttl: OUTER_TTL,
        payload_len: 8 + 8 + frame_len,
        ident,
        dont_frag: true,
    }
    .emit(&mut e[14..34]);
    let udp = &mut e[34..42];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&((8 + 8 + frame_len) as u16).to_be_bytes());
    // UDP checksum 0: allowed over IPv4, as the kernel's vxlan sends it by
    // default (RFC 7348 §5).
    e[42..50].copy_from_slice(vxlan);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let h = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut out = [0u8; TUNNEL_HDR_LEN + OUTER_LEN];
        let mac = MacAddr([0x5a, 1, 2, 3, 4, 5]);
        let vx = [8, 0, 0, 0, 0, 0x10, 0x92, 0];
        write_headers(
            (mac, Ipv4Addr::new(192, 0, 2, 1), 7),
            (&h, 14, 60000),
            (Ipv4Addr::new(192, 0, 2, 2), 50001, 4789),
            &vx,
            &mut out,
        );
        let le = |o: &[u8], i: usize| u16::from_le_bytes([o[i], o[i + 1]]);
        assert_eq!(out[0], VnetHdr::F_NEEDS_CSUM);
        assert_eq!(out[1], VnetHdr::GSO_TCPV4 | GSO_UDP_TUNNEL_IPV4);
        assert_eq!(
            (le(&out, 2), le(&out, 4), le(&out, 6), le(&out, 8)),
            (66 + 50, 1448, 34 + 50, 16)
        );
        assert_eq!(
            (le(&out, 20), le(&out, 22)),
            (34, 50 + 14),
            "outer UDP, inner IPv4 offsets"
        );
        let e = &out[TUNNEL_HDR_LEN..];
        assert_eq!(&e[0..6], &mac.0);
        assert_eq!(e[6] & 0x03, 0x02, "locally administered unicast source");
        let ip = crate::wire::ipv4::Ipv4::new_checked(&e[14..34]);
        // The header's total length covers the inner frame (not here).
        assert!(matches!(ip, Err(crate::wire::WireError::Truncated)));
        assert_eq!(crate::wire::checksum(&e[14..34]), 0, "IPv4 header checksum");
        assert_eq!(u16::from_be_bytes([e[16], e[17]]), 20 + 16 + 60000);
        assert_eq!((e[22], e[23]), (OUTER_TTL, 17));
        assert_eq!(u16::from_be_bytes([e[34], e[35]]), 50001);
        assert_eq!(u16::from_be_bytes([e[36], e[37]]), 4789);
        assert_eq!(u16::from_be_bytes([e[38], e[39]]), 16 + 60000);
        assert_eq!(&e[42..50], &vx);
        // A checksum-only frame: no GSO type, no tunnel offsets.
        let c = VnetHdr {
            gso_type: 0,
            gso_size: 0,
            hdr_len: 0,
            ..h
        };
        write_headers(
            (mac, Ipv4Addr::new(192, 0, 2, 1), 8),
            (&c, 14, 100),
            (Ipv4Addr::new(192, 0, 2, 2), 50001, 4789),
            &vx,
            &mut out,
        );
        assert_eq!((out[1], le(&out, 20), le(&out, 22)), (0, 0, 0));
        assert_eq!(le(&out, 6), 84);
    }
}
