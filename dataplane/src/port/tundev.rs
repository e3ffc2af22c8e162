//! The `/dev/net/tun` device calls TAP and TUN ports share: open, attach
//! (TUNSETIFF, creating the device or attaching to a persistent one),
//! offloads, and what a receive error means. libc's constants throughout.

use crate::packet::VNET_HDR_LEN;
use crate::sys::{self, cvt, IfReq};
use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Which kind of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Ethernet frames (IFF_TAP).
    Tap,
    /// IP packets (IFF_TUN).
    Tun,
}

/// Why TUNSETIFF failed.
#[derive(Debug)]
pub(crate) enum IffError {
    /// The name does not fit an ifreq.
    Name(io::Error),
    /// Another process holds the device.
    Busy,
    /// A device of that name exists but is not of this kind.
    WrongKind,
    Other(io::Error),
}

/// Opens `/dev/net/tun`, non-blocking.
pub(crate) fn open() -> io::Result<OwnedFd> {
    let path: &CStr = c"/dev/net/tun";
    // SAFETY: `path` is a valid C string; the result is checked.
    let fd = cvt(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// TUNSETIFF: creates device `name` of `kind` with virtio headers, or
/// attaches to an existing persistent one.
pub(crate) fn set_iff(fd: RawFd, name: &str, kind: Kind) -> Result<(), IffError> {
    let mode = match kind {
        Kind::Tap => libc::IFF_TAP,
        Kind::Tun => libc::IFF_TUN,
    };
    let base = (mode | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
    // A persistent device made multi-queue only attaches with the same flag.
    for flags in [base, base | libc::IFF_MULTI_QUEUE as i16] {
        let mut r = IfReq::new(name).map_err(IffError::Name)?;
        r.data[..2].copy_from_slice(&flags.to_ne_bytes());
        match sys::ioctl_ifreq(fd, libc::TUNSETIFF as libc::c_ulong, &mut r) {
            Ok(()) => return Ok(()),
            // Another kind of device, or the other queue mode.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Err(IffError::Busy),
            Err(e) => return Err(IffError::Other(e)),
        }
    }
    Err(IffError::WrongKind)
}

/// The virtio header size and the offloads vswitch takes: checksum, TSO
/// (and ECN), and UDP segmentation where the kernel has it (6.2 and later).
/// Set on every attach: a persistent device keeps whatever it had.
pub(crate) fn set_offloads(fd: RawFd) -> io::Result<()> {
    let sz = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which points
    // to a live local for the duration of the call.
    cvt(unsafe { libc::ioctl(fd, libc::TUNSETVNETHDRSZ as _, &sz as *const libc::c_int) })?;
    let set = |mask: libc::c_uint| {
        // SAFETY: TUNSETOFFLOAD takes its argument by value (no pointer).
        cvt(unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD as _, mask as libc::c_ulong) })
    };
    let tcp = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
    set(tcp | libc::TUN_F_USO4 | libc::TUN_F_USO6).or_else(|_| set(tcp))?;
    Ok(())
}

/// Whether a receive error means the device is gone for good.
pub(crate) fn is_gone(err: &io::Error) -> bool {
    // EBADFD: the device was destroyed under the file (its namespace was
    // deleted); EIO/ENXIO/ENODEV likewise mean the queue is detached.
    matches!(
        err.raw_os_error(),
        Some(libc::EBADFD) | Some(libc::EIO) | Some(libc::ENXIO) | Some(libc::ENODEV)
    )
}
