//! TUN ports: a layer-3 device presented to the switch as an Ethernet port.
//!
//! The device is opened like a TAP ([`super::tap`]): IFF_TUN | IFF_NO_PI |
//! IFF_VNET_HDR, the 10-byte virtio header size and the offload mask set
//! explicitly on every attach, so 64 KiB GSO super-packets and partial
//! checksums cross as single packets. A TUN file carries bare IP packets,
//! while the rest of the switch only handles Ethernet frames; the port
//! translates at its edge, without copying the payload:
//!
//! - **Receive.** Each packet is read with `readv` into two pieces: the
//!   virtio header area and the frame buffer 14 bytes after where the
//!   Ethernet frame starts. Those 14 bytes then get a synthetic header:
//!   destination the port's *router MAC* ([`TunPort::router_mac`]), source
//!   [`TUN_PEER_MAC`], EtherType from the IP version nibble (0x0800 for 4,
//!   0x86DD for 6). Anything else is left with length 0 and so counted as
//!   malformed. The virtio header's `csum_start` and `hdr_len` (relative to
//!   the IP header on a TUN file) move 14 bytes forward.
//!
//! ```text
//! read:  [ virtio_net_hdr ] . . . . . . . . . . . . [ IP packet ... ]
//! frame: [ virtio_net_hdr ][ dst | src | ethertype ][ IP packet ... ]
//!                           router   peer  0x0800/0x86dd
//! ```
//!
//! - **Send.** The Ethernet header is skipped: 14 bytes, or 18 if the frame
//!   carries an 802.1Q tag (the tag is dropped; the item's tag edit is
//!   ignored, a TUN device has no VLANs). The virtio header is rebuilt on the
//!   stack with its offsets moved back by the same amount, and `writev` sends
//!   it with the IP packet straight from the shared frame buffer.
//!
//! The source address is fixed because a TUN device has no link-layer
//! address of its own, and the bridge neither learns nor forwards an
//! all-zero source; every packet from the device appears to come from one
//! station, [`TUN_PEER_MAC`], learnt on this port.

use super::tundev::{self, Kind};
use super::{count_write, Caps, IoScratch, Port, TxItem};
use crate::bridge::vlan::TPID_8021Q;
use crate::packet::{EthHdr, Frame, VNET_HDR_LEN};
use crate::stats::{DropReason, PortStats};
use crate::sys::{self, cvt_size};
use crate::MacAddr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// Source address of every frame a TUN port receives: a fixed, locally
/// administered unicast address standing for "the host behind the TUN
/// device" (which has no MAC). It only has to be a valid station address the
/// bridge will learn; it never leaves the switch on the TUN side.
pub const TUN_PEER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;

const ETH_LEN: usize = EthHdr::LEN;
/// Ethernet header with one 802.1Q tag.
const ETH_VLAN_LEN: usize = ETH_LEN + 4;
const IPV4_MIN: usize = 20;
const IPV6_LEN: usize = 40;

/// How to open a TUN port.
#[derive(Debug, Clone, Default)]
pub struct TunOptions {
    /// Device name in its namespace.
    pub ifname: String,
    /// Named network namespace to create the device in (`ip netns` name).
    pub netns: Option<String>,
    /// The device's MTU (left as it is if `None`).
    pub mtu: Option<u32>,
    /// Destination MAC of the frames the port receives: the router interface
    /// the TUN device is routed through. `None`: broadcast until set with
    /// [`TunPort::set_router_mac`]. (A TUN device has no MAC of its own.)
    pub mac: Option<MacAddr>,
}

pub struct TunPort {
    fd: OwnedFd,
    /// Whether we created the device (it goes away when `fd` is closed) or
    /// attached to a persistent one (left as it was).
    created: bool,
    ifname: String,
    mtu: u32,
    /// Namespace the device lives in (None: the daemon's).
    netns: Option<String>,
    /// The device's tx_dropped when we attached.
    tx_dropped_base: u64,
    /// Destination of received frames, a [`MacAddr::to_u64`]; atomic so the
    /// control plane may change it while workers use the port.
    router_mac: AtomicU64,
}

/// Why a TUN port could not be opened.
pub type TunError = tundev::DevError;

/// Sets the MTU if asked, brings the device up, and reads back its MTU.
fn configure(ifname: &str, mtu: Option<u32>) -> Result<u32, TunError> {
    let cfg = |e| TunError::Configure(ifname.to_string(), e);
    if let Some(mtu) = mtu {
        sys::set_mtu(ifname, mtu).map_err(cfg)?;
    }
    sys::set_up(ifname).map_err(cfg)?;
    sys::get_mtu(ifname).map_err(cfg)
}

impl TunPort {
    /// Creates the TUN device (in `opts.netns` if given), or attaches to an
    /// existing persistent TUN of that name in the daemon's namespace.
    pub fn open(opts: &TunOptions) -> Result<TunPort, TunError> {
        let ifname = opts.ifname.as_str();
        let (fd, created, mtu) = match &opts.netns {
            // Created elsewhere and moved: brought up and read back there.
            Some(ns) => {
                let fd = tundev::create_in_netns(Kind::Tun, ifname, ns, None, opts.mtu)?;
                (
                    fd,
                    true,
                    tundev::configure_in(ns, ifname, || configure(ifname, None))?,
                )
            }
            None => {
                let existed = sys::ifindex(ifname).is_ok();
                let fd = tundev::attach(ifname, Kind::Tun)?;
                (fd, !existed, configure(ifname, opts.mtu)?)
            }
        };
        Ok(TunPort {
            fd,
            created,
            ifname: opts.ifname.clone(),
            mtu,
            tx_dropped_base: tundev::tx_dropped(ifname, opts.netns.as_deref()).unwrap_or(0),
            netns: opts.netns.clone(),
            router_mac: AtomicU64::new(opts.mac.unwrap_or(MacAddr::BROADCAST).to_u64()),
        })
    }

    /// The device's tx_dropped counter, read from its namespace.
    fn tx_dropped(&self) -> Option<u64> {
        tundev::tx_dropped(&self.ifname, self.netns.as_deref())
    }

    /// True if the daemon created the device (it is removed with the port).
    pub fn created(&self) -> bool {
        self.created
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The device's MTU when it was opened.
    pub fn mtu(&self) -> Option<u32> {
        Some(self.mtu)
    }

    /// The destination address of the frames this port receives.
    pub fn router_mac(&self) -> MacAddr {
        MacAddr::from_u64(self.router_mac.load(Ordering::Relaxed))
    }

    /// Changes the destination address of the frames received from now on
    /// (the router interface's MAC changed).
    pub fn set_router_mac(&self, mac: MacAddr) {
        self.router_mac.store(mac.to_u64(), Ordering::Relaxed);
    }
}

/// The EtherType for an IP packet whose first byte is `first`: by the
/// version nibble, `None` for anything but IPv4 and IPv6.
pub(crate) fn ethertype_for(first: u8) -> Option<u16> {
    match first >> 4 {
        4 => Some(ETH_P_IP),
        6 => Some(ETH_P_IPV6),
        _ => None,
    }
}

/// Where the IP packet starts in an Ethernet frame to send on a TUN device:
/// after the header and one 802.1Q tag if any. Otherwise why the send
/// drops it: `Malformed` if the frame does not hold a whole fixed IP header
/// of the version its EtherType names, `TxError` if it names something else
/// than IPv4 or IPv6 (an ARP request flooded to the port: the device would
/// refuse the write anyway).
pub(crate) fn ip_offset(eth: &[u8]) -> Result<usize, DropReason> {
    let et = |at: usize| {
        eth.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let (off, ethertype) = match et(12) {
        None => return Err(DropReason::Malformed),
        Some(TPID_8021Q) => (ETH_VLAN_LEN, et(16).ok_or(DropReason::Malformed)?),
        Some(t) => (ETH_LEN, t),
    };
    let (min, version) = match ethertype {
        ETH_P_IP => (IPV4_MIN, 4),
        ETH_P_IPV6 => (IPV6_LEN, 6),
        _ => return Err(DropReason::TxError),
    };
    match eth.get(off..) {
        Some(ip) if ip.len() >= min && ip[0] >> 4 == version => Ok(off),
        _ => Err(DropReason::Malformed),
    }
}

/// Turns what a receive left in `f` (a virtio header and `n` bytes of it,
/// the IP packet placed [`ETH_LEN`] bytes into the frame) into an Ethernet
/// frame to `dst`. False, with the frame's length 0, if it is not IP.
pub(crate) fn present(f: &mut Frame, n: usize, dst: MacAddr) -> bool {
    if n <= VNET_HDR_LEN || !f.set_rx_len_vnet(n + ETH_LEN) {
        f.reset();
        return false;
    }
    let d = f.data_mut();
    let Some(ethertype) = d.get(ETH_LEN).copied().and_then(ethertype_for) else {
        f.reset();
        return false;
    };
    d[..6].copy_from_slice(&dst.0);
    d[6..12].copy_from_slice(&TUN_PEER_MAC.0);
    d[12..ETH_LEN].copy_from_slice(&ethertype.to_be_bytes());
    let mut h = f.vnet();
    h.shift(ETH_LEN as i32);
    f.set_vnet(&h);
    true
}

/// What a send writes for `f`: its virtio header, offsets moved back to the
/// IP header, into `hdr`; the IP packet (a slice of the frame) returned.
fn tx_parts<'a>(f: &'a Frame, hdr: &mut [u8; VNET_HDR_LEN]) -> Result<&'a [u8], DropReason> {
    let d = f.data();
    let off = ip_offset(d)?;
    let mut h = f.vnet();
    h.shift(-(off as i32));
    h.emit(hdr);
    Ok(&d[off..])
}

impl Port for TunPort {
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn recv(&self, frames: &mut [Frame], _sc: &mut IoScratch) -> io::Result<usize> {
        let fd = self.fd.as_raw_fd();
        let dst = self.router_mac();
        let mut n = 0;
        while n < frames.len() {
            let f = &mut frames[n];
            let area = f.rx_area_vnet();
            let (hdr, frame) = area.split_at_mut(VNET_HDR_LEN);
            let ip = frame.get_mut(ETH_LEN..).unwrap_or_default();
            let iov = [
                libc::iovec {
                    iov_base: hdr.as_mut_ptr().cast(),
                    iov_len: hdr.len(),
                },
                libc::iovec {
                    iov_base: ip.as_mut_ptr().cast(),
                    iov_len: ip.len(),
                },
            ];
            // SAFETY: both iovecs point into `area`, a live, exclusively
            // borrowed buffer, at disjoint ranges of the given lengths.
            let r = unsafe { libc::readv(fd, iov.as_ptr(), 2) };
            match cvt_size(r) {
                Ok(len) => {
                    present(f, len, dst);
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // Report what we have; the error repeats on the next call.
                Err(_) if n > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    fn send(&self, frames: &[Frame], items: &[TxItem], stats: &mut PortStats, _sc: &mut IoScratch) {
        let fd = self.fd.as_raw_fd();
        let mut hdr = [0u8; VNET_HDR_LEN];
        for it in items {
            let f = &frames[it.idx as usize];
            let ip = match tx_parts(f, &mut hdr) {
                Ok(ip) => ip,
                Err(reason) => {
                    stats.drop(reason);
                    continue;
                }
            };
            let iov = [
                libc::iovec {
                    iov_base: hdr.as_mut_ptr().cast(),
                    iov_len: hdr.len(),
                },
                libc::iovec {
                    iov_base: ip.as_ptr() as *mut libc::c_void,
                    iov_len: ip.len(),
                },
            ];
            // SAFETY: both iovecs point into live buffers (`hdr` and the
            // frame) of the given lengths; the kernel only reads them.
            let r = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
            count_write(r, ip.len(), stats);
        }
    }

    fn is_gone(&self, err: &io::Error) -> bool {
        tundev::is_gone(err)
    }

    fn caps(&self) -> Caps {
        Caps { vnet_hdr: true }
    }

    fn kernel_drops(&self) -> u64 {
        // The TUN device counts what it could not queue toward us as its own
        // tx_dropped; report the growth since we attached.
        self.tx_dropped()
            .map_or(0, |n| n.saturating_sub(self.tx_dropped_base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::VnetHdr;

    const ROUTER: MacAddr = MacAddr([0x02, 0, 0, 0xaa, 0xbb, 0xcc]);

    #[test]
    fn ethertype_by_version_nibble() {
        assert_eq!(ethertype_for(0x45), Some(0x0800));
        assert_eq!(ethertype_for(0x4f), Some(0x0800));
        assert_eq!(ethertype_for(0x60), Some(0x86dd));
        for b in [0x00, 0x15, 0x50, 0x7f, 0xff] {
            assert_eq!(ethertype_for(b), None, "{b:#x}");
        }
        assert!(TUN_PEER_MAC.is_valid_station());
    }

    /// What a readv into the receive layout leaves: a virtio header, then
    /// `ip` 14 bytes into the frame.
    fn received(h: &VnetHdr, ip: &[u8]) -> (Frame, usize) {
        let mut f = Frame::new();
        let area = f.rx_area_vnet();
        h.emit((&mut area[..VNET_HDR_LEN]).try_into().unwrap());
        let at = VNET_HDR_LEN + ETH_LEN;
        area[at..at + ip.len()].copy_from_slice(ip);
        (f, VNET_HDR_LEN + ip.len())
    }

    #[test]
    fn presents_ipv4_with_synthetic_header_and_shifted_offsets() {
        let mut ip = vec![0x45, 0, 0, 48];
        ip.resize(48, 0xab);
        let h = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 40,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        let (mut f, n) = received(&h, &ip);
        assert!(present(&mut f, n, ROUTER));
        assert_eq!(f.len(), 14 + 48);
        let d = f.data();
        assert_eq!(&d[..6], &ROUTER.0);
        assert_eq!(&d[6..12], &TUN_PEER_MAC.0);
        assert_eq!(&d[12..14], &[0x08, 0x00]);
        assert_eq!(&d[14..], &ip[..]);
        let v = f.vnet();
        assert_eq!((v.csum_start, v.hdr_len), (34, 54));
        assert_eq!((v.gso_size, v.csum_offset, v.gso_type), (1448, 16, 1));
    }

    #[test]
    fn presents_ipv6_and_leaves_plain_header_alone() {
        let mut ip = vec![0x60];
        ip.resize(40, 0);
        let (mut f, n) = received(&VnetHdr::default(), &ip);
        assert!(present(&mut f, n, MacAddr::BROADCAST));
        assert_eq!(&f.data()[12..14], &[0x86, 0xdd]);
        assert_eq!(f.vnet(), VnetHdr::default());
    }

    #[test]
    fn rejects_what_is_not_ip() {
        for ip in [&[0x15u8, 0, 0, 0][..], &[0x00], &[0xf0; 30]] {
            let (mut f, n) = received(&VnetHdr::default(), ip);
            assert!(!present(&mut f, n, ROUTER));
            assert!(f.is_empty());
        }
        // Nothing after the virtio header, or not even a whole one.
        for n in [0, 3, VNET_HDR_LEN] {
            let (mut f, _) = received(&VnetHdr::default(), &[0x45; 20]);
            assert!(!present(&mut f, n, ROUTER));
            assert!(f.is_empty());
        }
    }

    fn eth(ethertype: u16, tag: Option<u16>, ip: &[u8]) -> Vec<u8> {
        let mut e = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        if let Some(tci) = tag {
            e.extend_from_slice(&TPID_8021Q.to_be_bytes());
            e.extend_from_slice(&tci.to_be_bytes());
        }
        e.extend_from_slice(&ethertype.to_be_bytes());
        e.extend_from_slice(ip);
        e
    }

    #[test]
    fn ip_offset_untagged_tagged_and_refused() {
        let v4 = [0x45u8; 20];
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        assert_eq!(ip_offset(&eth(ETH_P_IP, None, &v4)), Ok(14));
        assert_eq!(ip_offset(&eth(ETH_P_IP, Some(10), &v4)), Ok(18));
        assert_eq!(ip_offset(&eth(ETH_P_IPV6, None, &v6)), Ok(14));
        assert_eq!(ip_offset(&eth(ETH_P_IPV6, Some(10), &v6)), Ok(18));
        let mal = Err(DropReason::Malformed);
        // Too short for the fixed header, or version and EtherType disagree.
        assert_eq!(ip_offset(&eth(ETH_P_IP, None, &v4[..19])), mal);
        assert_eq!(ip_offset(&eth(ETH_P_IPV6, None, &v6[..39])), mal);
        assert_eq!(ip_offset(&eth(ETH_P_IP, None, &v6)), mal);
        assert_eq!(ip_offset(&eth(ETH_P_IPV6, None, &[0x45; 40])), mal);
        assert_eq!(ip_offset(&eth(ETH_P_IP, Some(1), &[])), mal);
        // Shorter than an Ethernet header (tagged or not).
        for n in 0..14 {
            assert_eq!(ip_offset(&eth(ETH_P_IP, None, &[])[..n]), mal);
        }
        assert_eq!(ip_offset(&eth(ETH_P_IP, Some(1), &[])[..17]), mal);
        // Not IP at all (ARP; a second tag).
        assert_eq!(
            ip_offset(&eth(0x0806, None, &[0; 28])),
            Err(DropReason::TxError)
        );
        assert_eq!(
            ip_offset(&eth(TPID_8021Q, Some(1), &[0x45; 24])),
            Err(DropReason::TxError)
        );
    }

    #[test]
    fn no_bytes_or_length_panic() {
        // Whatever a receive leaves (any length up to the whole area, any
        // header and first bytes) or a frame to send holds: no panic, and a
        // presented frame is always an IP EtherType.
        let mut rng = crate::test_rng::Rng(0x7e57_0001_5eed_0001);
        let mut f = Frame::new();
        for _ in 0..20_000 {
            let area = f.rx_area_vnet();
            let cap = area.len();
            for b in area.iter_mut().take(VNET_HDR_LEN + ETH_LEN + 48) {
                *b = rng.next() as u8;
            }
            let n = match rng.below(4) {
                0 => cap - ETH_LEN,
                1 => rng.index(cap - ETH_LEN + 1),
                _ => rng.index(VNET_HDR_LEN + 64),
            };
            if present(&mut f, n, ROUTER) {
                assert_eq!(f.len(), n - VNET_HDR_LEN + ETH_LEN);
                let et = u16::from_be_bytes([f.data()[12], f.data()[13]]);
                assert!(et == ETH_P_IP || et == ETH_P_IPV6);
            } else {
                assert!(f.is_empty());
            }
            let len = rng.index(80);
            let mut e: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Mostly the EtherTypes the port looks at, to reach every branch.
            for at in [12, 16] {
                if len >= at + 2 && rng.chance(70) {
                    let t = [TPID_8021Q, ETH_P_IP, ETH_P_IPV6][rng.index(3)];
                    e[at..at + 2].copy_from_slice(&t.to_be_bytes());
                }
            }
            if let Ok(off) = ip_offset(&e) {
                assert!(off == ETH_LEN || off == ETH_VLAN_LEN);
                assert!(e.len() >= off + IPV4_MIN);
            }
        }
    }

    #[test]
    fn send_strips_the_link_header_and_shifts_back() {
        let h = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_UDP_L4,
            hdr_len: 42,
            gso_size: 1000,
            csum_start: 34,
            csum_offset: 6,
        };
        let ip = [0x45u8; 28];
        let mut hdr = [0u8; VNET_HDR_LEN];
        let mut f = Frame::from_bytes(&eth(ETH_P_IP, None, &ip));
        f.set_vnet(&h);
        assert_eq!(tx_parts(&f, &mut hdr), Ok(&ip[..]));
        let v = VnetHdr::parse(&hdr);
        assert_eq!((v.csum_start, v.hdr_len, v.gso_size), (20, 28, 1000));
        // A tagged frame (as it sits in the buffer, tag in band): 18 bytes.
        let mut tagged = h;
        tagged.shift(4);
        let mut f = Frame::from_bytes(&eth(ETH_P_IP, Some(7), &ip));
        f.set_vnet(&tagged);
        assert_eq!(tx_parts(&f, &mut hdr), Ok(&ip[..]));
        let v = VnetHdr::parse(&hdr);
        assert_eq!((v.csum_start, v.hdr_len), (20, 28));
        // The receive shift and the send shift cancel out.
        let (mut r, n) = received(
            &VnetHdr {
                hdr_len: 28,
                csum_start: 20,
                ..h
            },
            &ip,
        );
        assert!(present(&mut r, n, ROUTER));
        assert_eq!(tx_parts(&r, &mut hdr), Ok(&ip[..]));
        assert_eq!(
            VnetHdr::parse(&hdr),
            VnetHdr {
                hdr_len: 28,
                csum_start: 20,
                ..h
            }
        );
        let f = Frame::from_bytes(&eth(0x0806, None, &ip));
        assert_eq!(tx_parts(&f, &mut hdr), Err(DropReason::TxError));
    }
}
