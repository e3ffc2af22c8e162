//! TAP ports: a raw-ioctl TUN/TAP module (as firecracker and cloud-hypervisor
//! do it), because the `tun-tap` crate can neither set IFF_VNET_HDR and
//! offloads nor attach to an existing persistent device.
//!
//! The device is opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and the offload
//! mask is set explicitly on every attach (the mask is device-wide and survives
//! on persistent devices), so 64 KiB GSO frames and partial checksums cross
//! the switch as single frames. TAP file descriptors have no recvmmsg: a batch
//! is a read loop until EAGAIN.

use super::{count_write, tundev, Caps, IoScratch, Port, TxItem};
use crate::bridge::vlan::TagEdit;
use crate::packet::{Frame, EDIT_PREFIX_MAX, VNET_HDR_LEN};
use crate::stats::PortStats;
use crate::sys::{self, cvt_size};
use crate::MacAddr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

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
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("opening /dev/net/tun: {0} (is the tun module loaded and are you root?)")]
    OpenTun(io::Error),
    #[error("interface '{0}' exists and is not a TAP device")]
    NotTap(String),
    #[error("TAP device '{0}' is in use by another process")]
    Busy(String),
    #[error("interface '{ifname}' already exists in network namespace '{netns}'")]
    Exists { ifname: String, netns: String },
    #[error("TUNSETIFF on '{0}': {1}")]
    SetIff(String, io::Error),
    #[error("setting offloads on '{0}': {1}")]
    Offload(String, io::Error),
    #[error("configuring '{0}': {1}")]
    Configure(String, io::Error),
    #[error("{0}")]
    Netns(io::Error),
}

/// Opens the device and attaches it as TAP `name`, offloads set.
fn attach(name: &str) -> Result<OwnedFd, TapError> {
    let fd = tundev::open().map_err(TapError::OpenTun)?;
    tundev::set_iff(fd.as_raw_fd(), name, tundev::Kind::Tap).map_err(|e| match e {
        tundev::IffError::Name(e) => TapError::Configure(name.into(), e),
        tundev::IffError::Busy => TapError::Busy(name.into()),
        tundev::IffError::WrongKind => TapError::NotTap(name.into()),
        tundev::IffError::Other(e) => TapError::SetIff(name.into(), e),
    })?;
    tundev::set_offloads(fd.as_raw_fd()).map_err(|e| TapError::Offload(name.into(), e))?;
    Ok(fd)
}

/// Sets MAC and MTU if asked, brings the device up, and reads back what the
/// device ended up with.
fn configure(opts: &TapOptions) -> Result<(MacAddr, u32), TapError> {
    let cfg = |e| TapError::Configure(opts.ifname.clone(), e);
    if let Some(mac) = opts.mac {
        sys::set_mac(&opts.ifname, mac).map_err(cfg)?;
    }
    if let Some(mtu) = opts.mtu {
        sys::set_mtu(&opts.ifname, mtu).map_err(cfg)?;
    }
    sys::set_up(&opts.ifname).map_err(cfg)?;
    Ok((
        sys::get_mac(&opts.ifname).map_err(cfg)?,
        sys::get_mtu(&opts.ifname).map_err(cfg)?,
    ))
}

impl TapPort {
    /// Creates the TAP device (in `opts.netns` if given), or attaches to an
    /// existing persistent TAP of that name in the daemon's namespace.
    pub fn open(opts: &TapOptions) -> Result<TapPort, TapError> {
        let fd = match &opts.netns {
            Some(ns) => Self::create_in_netns(opts, ns)?,
            None => {
                let existed = sys::ifindex(&opts.ifname).is_ok();
                let fd = attach(&opts.ifname)?;
                let (mac, mtu) = configure(opts)?;
                (fd, !existed, mac, mtu)
            }
        };
        let mut port = TapPort {
            fd: fd.0,
            created: fd.1,
            ifname: opts.ifname.clone(),
            mac: fd.2,
            mtu: fd.3,
            netns: opts.netns.clone(),
            tx_dropped_base: 0,
        };
        port.tx_dropped_base = port.tx_dropped().unwrap_or(0);
        Ok(port)
    }

    /// Creates the device in the daemon's namespace under a temporary name,
    /// then moves it into `ns` renamed to `opts.ifname`. The file stays bound
    /// to the daemon's namespace, so it does not keep `ns` alive: when `ns` is
    /// deleted the device goes with it and the port goes down.
    fn create_in_netns(
        opts: &TapOptions,
        ns: &str,
    ) -> Result<(OwnedFd, bool, MacAddr, u32), TapError> {
        let ns_fd = sys::open_netns(ns).map_err(TapError::Netns)?;
        let exists = sys::in_netns(ns, || Ok(sys::ifindex(&opts.ifname).is_ok()))
            .map_err(TapError::Netns)?;
        if exists {
            return Err(TapError::Exists {
                ifname: opts.ifname.clone(),
                netns: ns.to_string(),
            });
        }
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let tmp = format!(
            "vst{:x}.{:x}",
            std::process::id() & 0xfffff,
            SEQ.fetch_add(1, Ordering::Relaxed) & 0xffff
        );
        let fd = attach(&tmp)?;
        let cfg = |e| TapError::Configure(opts.ifname.clone(), e);
        if let Some(mac) = opts.mac {
            sys::set_mac(&tmp, mac).map_err(cfg)?;
        }
        if let Some(mtu) = opts.mtu {
            sys::set_mtu(&tmp, mtu).map_err(cfg)?;
        }
        let idx = sys::ifindex(&tmp).map_err(cfg)?;
        sys::move_link_to_netns(idx, ns_fd.as_raw_fd(), &opts.ifname).map_err(|e| {
            TapError::Configure(
                opts.ifname.clone(),
                io::Error::new(e.kind(), format!("moving to netns '{ns}': {e}")),
            )
        })?;
        let plain = TapOptions {
            ifname: opts.ifname.clone(),
            ..Default::default()
        };
        let (mac, mtu) = sys::in_netns(ns, || configure(&plain).map_err(io::Error::other))
            .map_err(|e| TapError::Configure(opts.ifname.clone(), e))?;
        Ok((fd, true, mac, mtu))
    }

    /// The device's tx_dropped counter, read from its namespace.
    fn tx_dropped(&self) -> Option<u64> {
        let read = || sys::link_counter(&self.ifname, sys::LinkCounter::TxDropped);
        match &self.netns {
            Some(ns) => sys::in_netns(ns, read).ok(),
            None => read().ok(),
        }
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
        assert!(matches!(TapPort::open(&opts), Err(TapError::Busy(_))));
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
        assert!(matches!(TapPort::open(&lo), Err(TapError::NotTap(_))));
    }
}
