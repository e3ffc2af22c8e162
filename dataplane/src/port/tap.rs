//! TAP ports: a raw-ioctl TUN/TAP module (as firecracker and cloud-hypervisor
//! do it), because the `tun-tap` crate can neither set IFF_VNET_HDR and
//! offloads nor attach to an existing persistent device.
//!
//! The device is opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and the offload
//! mask is set explicitly on every attach (the mask is device-wide and survives
//! on persistent devices), so 64 KiB GSO frames and partial checksums cross
//! the switch as single frames. TAP file descriptors have no recvmmsg: a batch
//! is a read loop until EAGAIN.

use super::tundev::{self, Kind};
use super::{count_write, Caps, IoScratch, Port, TxItem};
use crate::bridge::vlan::TagEdit;
use crate::packet::{Frame, EDIT_PREFIX_MAX, VNET_HDR_LEN};
use crate::stats::PortStats;
use crate::sys::{self, cvt_size};
use crate::MacAddr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

// <linux/if_tun.h>

/// How to open a TAP port.
#[derive(Debug, Clone, Default)]
pub struct TapOptions {
    /// Device name in its namespace.
    pub ifname: String,
    /// Named network namespace to create the device in (`ip netns` name).
    pub netns: Option<String>,
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
}

pub struct TapPort {
    fd: OwnedFd,
    /// Whether we created the device (it goes away when `fd` is closed) or
    /// attached to a persistent one (left as it was).
    created: bool,
    ifname: String,
    mac: MacAddr,
    mtu: u32,
    /// Namespace the device lives in (None: the daemon's).
    netns: Option<String>,
    /// The device's tx_dropped when we attached.
    tx_dropped_base: u64,
}

/// Why a TAP port could not be opened.
pub type TapError = tundev::DevError;

/// Sets MAC and MTU if asked, brings the device up, and reads back what the
/// device ended up with.
fn configure(
    ifname: &str,
    mac: Option<MacAddr>,
    mtu: Option<u32>,
) -> Result<(MacAddr, u32), TapError> {
    let cfg = |e| TapError::Configure(ifname.to_string(), e);
    if let Some(mac) = mac {
        sys::set_mac(ifname, mac).map_err(cfg)?;
    }
    if let Some(mtu) = mtu {
        sys::set_mtu(ifname, mtu).map_err(cfg)?;
    }
    sys::set_up(ifname).map_err(cfg)?;
    Ok((
        sys::get_mac(ifname).map_err(cfg)?,
        sys::get_mtu(ifname).map_err(cfg)?,
    ))
}

impl TapPort {
    /// Creates the TAP device (in `opts.netns` if given), or attaches to an
    /// existing persistent TAP of that name in the daemon's namespace.
    pub fn open(opts: &TapOptions) -> Result<TapPort, TapError> {
        let ifname = opts.ifname.as_str();
        let (fd, created, (mac, mtu)) = match &opts.netns {
            // Created elsewhere and moved: brought up and read back there.
            Some(ns) => {
                let fd = tundev::create_in_netns(Kind::Tap, ifname, ns, opts.mac, opts.mtu)?;
                let link = tundev::configure_in(ns, ifname, || configure(ifname, None, None))?;
                (fd, true, link)
            }
            None => {
                let existed = sys::ifindex(ifname).is_ok();
                let fd = tundev::attach(ifname, Kind::Tap)?;
                (fd, !existed, configure(ifname, opts.mac, opts.mtu)?)
            }
        };
        Ok(TapPort {
            fd,
            created,
            ifname: opts.ifname.clone(),
            mac,
            mtu,
            tx_dropped_base: tundev::tx_dropped(ifname, opts.netns.as_deref()).unwrap_or(0),
            netns: opts.netns.clone(),
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

    /// The device's MAC address when it was opened.
    pub fn mac(&self) -> Option<MacAddr> {
        Some(self.mac)
    }

    /// The device's MTU when it was opened.
    pub fn mtu(&self) -> Option<u32> {
        Some(self.mtu)
    }
}

impl Port for TapPort {
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn recv(&self, frames: &mut [Frame], _sc: &mut IoScratch) -> io::Result<usize> {
        let fd = self.fd.as_raw_fd();
        let mut n = 0;
        while n < frames.len() {
            let area = frames[n].rx_area_vnet();
            // SAFETY: reading into `area`, a live, exclusively borrowed buffer
            // of `area.len()` bytes.
            let r = unsafe { libc::read(fd, area.as_mut_ptr().cast(), area.len()) };
            match cvt_size(r) {
                Ok(len) => {
                    frames[n].set_rx_len_vnet(len);
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if n > 0 => {
                    // Report what we have; the error repeats on the next call.
                    let _ = e;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    fn send(&self, frames: &[Frame], items: &[TxItem], stats: &mut PortStats, _sc: &mut IoScratch) {
        let fd = self.fd.as_raw_fd();
        let mut scratch = [0u8; EDIT_PREFIX_MAX];
        for it in items {
            let f = &frames[it.idx as usize];
            let (r, len) = if it.edit == TagEdit::None {
                let b = f.with_vnet();
                // SAFETY: writing from `b`, a live buffer of `b.len()` bytes.
                (
                    unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) },
                    f.len(),
                )
            } else {
                let (n, rest) = f.edited_prefix(it.edit, &mut scratch);
                let tail = &f.data()[rest..];
                let iov = [
                    libc::iovec {
                        iov_base: scratch.as_mut_ptr().cast(),
                        iov_len: n,
                    },
                    libc::iovec {
                        iov_base: tail.as_ptr() as *mut libc::c_void,
                        iov_len: tail.len(),
                    },
                ];
                // SAFETY: both iovecs point into live buffers (`scratch` and
                // the frame) of the given lengths; the kernel only reads them.
                let r = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
                (r, n - VNET_HDR_LEN + tail.len())
            };
            count_write(r, len, stats);
        }
    }

    fn is_gone(&self, err: &io::Error) -> bool {
        tundev::is_gone(err)
    }

    fn caps(&self) -> Caps {
        Caps { vnet_hdr: true }
    }

    fn kernel_drops(&self) -> u64 {
        // The TAP device counts what it could not queue toward us as its own
        // tx_dropped; report the growth since we attached.
        self.tx_dropped()
            .map_or(0, |n| n.saturating_sub(self.tx_dropped_base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn create_attach_and_remove() {
        if !root() {
            eprintln!("skipped: needs root for /dev/net/tun");
            return;
        }
        let name = format!("vsut{}", std::process::id() % 100000);
        let opts = TapOptions {
            ifname: name.clone(),
            mtu: Some(1400),
            mac: Some("02:00:00:aa:bb:cc".parse().unwrap()),
            ..Default::default()
        };
        let p = TapPort::open(&opts).unwrap();
        assert!(p.created());
        assert_eq!(sys::get_mtu(&name).unwrap(), 1400);
        assert_eq!(
            sys::get_mac(&name).unwrap().to_string(),
            "02:00:00:aa:bb:cc"
        );
        assert!(sys::get_flags(&name).unwrap() & libc::IFF_UP as i16 != 0);
        // Opening it again while in use fails clearly.
        assert!(matches!(TapPort::open(&opts), Err(TapError::Busy(..))));
        drop(p);
        assert!(
            sys::ifindex(&name).is_err(),
            "created device removed on close"
        );
        // A name taken by a non-TAP interface.
        let lo = TapOptions {
            ifname: "lo".into(),
            ..Default::default()
        };
        assert!(matches!(TapPort::open(&lo), Err(TapError::WrongKind(..))));
    }
}
