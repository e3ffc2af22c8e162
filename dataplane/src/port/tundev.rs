//! The `/dev/net/tun` device calls TAP and TUN ports share: open, attach
//! (TUNSETIFF, creating the device or attaching to a persistent one),
//! offloads, and what a receive error means. libc's constants throughout.

use crate::packet::VNET_HDR_LEN;
use crate::sys::{self, cvt, IfReq};
use crate::MacAddr;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Which kind of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Ethernet frames (IFF_TAP).
    Tap,
    /// IP packets (IFF_TUN).
    Tun,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Tap => "TAP",
            Kind::Tun => "TUN",
        })
    }
}

/// Why a TAP or TUN port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("opening /dev/net/tun: {0} (is the tun module loaded and are you root?)")]
    OpenTun(io::Error),
    #[error("interface '{0}' exists and is not a {1} device")]
    WrongKind(String, Kind),
    #[error("{1} device '{0}' is in use by another process")]
    Busy(String, Kind),
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

/// Opens the device and attaches it as `kind` device `name`, offloads set.
pub(crate) fn attach(name: &str, kind: Kind) -> Result<OwnedFd, DevError> {
    let fd = open().map_err(DevError::OpenTun)?;
    set_iff(fd.as_raw_fd(), name, kind).map_err(|e| match e {
        IffError::Name(e) => DevError::Configure(name.into(), e),
        IffError::Busy => DevError::Busy(name.into(), kind),
        IffError::WrongKind => DevError::WrongKind(name.into(), kind),
        IffError::Other(e) => DevError::SetIff(name.into(), e),
    })?;
    set_offloads(fd.as_raw_fd()).map_err(|e| DevError::Offload(name.into(), e))?;
    Ok(fd)
}

/// Creates a `kind` device in the daemon's namespace under a temporary
/// name, gives it `mac` and `mtu` if set, then moves it into namespace `ns`
/// renamed to `ifname` (left down: the caller configures it there). The
/// file stays bound to the daemon's namespace, so it does not keep `ns`
/// alive: when `ns` is deleted the device goes with it and the port goes
/// down. An error closes the file, which removes the device.
pub(crate) fn create_in_netns(
    kind: Kind,
    ifname: &str,
    ns: &str,
    mac: Option<MacAddr>,
    mtu: Option<u32>,
) -> Result<OwnedFd, DevError> {
    let ns_fd = sys::open_netns(ns).map_err(DevError::Netns)?;
    let exists = sys::in_netns(ns, || Ok(sys::ifindex(ifname).is_ok())).map_err(DevError::Netns)?;
    if exists {
        return Err(DevError::Exists {
            ifname: ifname.to_string(),
            netns: ns.to_string(),
        });
    }
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let tmp = format!(
        "vs{}{:x}.{:x}",
        match kind {
            Kind::Tap => 't',
            Kind::Tun => 'n',
        },
        std::process::id() & 0xfffff,
        SEQ.fetch_add(1, Ordering::Relaxed) & 0xffff
    );
    let fd = attach(&tmp, kind)?;
    let cfg = |e| DevError::Configure(ifname.to_string(), e);
    if let Some(mac) = mac {
        sys::set_mac(&tmp, mac).map_err(cfg)?;
    }
    if let Some(mtu) = mtu {
        sys::set_mtu(&tmp, mtu).map_err(cfg)?;
    }
    let idx = sys::ifindex(&tmp).map_err(cfg)?;
    sys::move_link_to_netns(idx, ns_fd.as_raw_fd(), ifname).map_err(|e| {
        DevError::Configure(
            ifname.to_string(),
            io::Error::new(e.kind(), format!("moving to netns '{ns}': {e}")),
        )
    })?;
    Ok(fd)
}

/// Runs `f` (configuring device `ifname`) in namespace `ns`.
pub(crate) fn configure_in<T: Send>(
    ns: &str,
    ifname: &str,
    f: impl FnOnce() -> Result<T, DevError> + Send,
) -> Result<T, DevError> {
    sys::in_netns(ns, || f().map_err(io::Error::other))
        .map_err(|e| DevError::Configure(ifname.to_string(), e))
}

/// A device's tx_dropped counter (frames queued toward the switch that the
/// device dropped), read from its namespace.
pub(crate) fn tx_dropped(ifname: &str, netns: Option<&str>) -> Option<u64> {
    let read = || sys::link_counter(ifname, sys::LinkCounter::TxDropped);
    match netns {
        Some(ns) => sys::in_netns(ns, read).ok(),
        None => read().ok(),
    }
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
