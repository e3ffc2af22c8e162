//! The syscall edge shared by the port backends: interface ioctls
//! (`SIOC[GS]IF*`), network-namespace entry, socket options and shared
//! mappings (packet rings). Every `unsafe` block in this
//! crate is in this file or in `port/`.

use crate::MacAddr;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Linux `IFNAMSIZ`: interface names are at most 15 bytes plus NUL.
pub const IFNAMSIZ: usize = 16;

/// Turns a libc return value into an `io::Result`.
pub fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Same for `ssize_t` returns.
pub fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Checks an interface name the way the kernel's `dev_valid_name` does.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

/// `struct ifreq`: a name and a 24-byte union, laid out as in `<net/if.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IfReq {
    pub name: [u8; IFNAMSIZ],
    pub data: [u8; 24],
}

impl IfReq {
    pub fn new(name: &str) -> io::Result<IfReq> {
        if !valid_ifname(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid interface name '{name}'"),
            ));
        }
        let mut r = IfReq {
            name: [0; IFNAMSIZ],
            data: [0; 24],
        };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        Ok(r)
    }

    pub fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    fn short(&self) -> i16 {
        i16::from_ne_bytes([self.data[0], self.data[1]])
    }
    fn set_short(&mut self, v: i16) {
        self.data[..2].copy_from_slice(&v.to_ne_bytes());
    }
    fn int(&self) -> i32 {
        i32::from_ne_bytes([self.data[0], self.data[1], self.data[2], self.data[3]])
    }
    fn set_int(&mut self, v: i32) {
        self.data[..4].copy_from_slice(&v.to_ne_bytes());
    }
}

/// Runs `ioctl(fd, req, &mut ifreq)`.
pub fn ioctl_ifreq(fd: RawFd, req: libc::c_ulong, ifr: &mut IfReq) -> io::Result<()> {
    // SAFETY: `ifr` is a valid, exclusively borrowed `struct ifreq` (40 bytes,
    // repr(C)) for the whole call; every request passed here reads or writes
    // at most that struct.
    cvt(unsafe { libc::ioctl(fd, req as _, ifr as *mut IfReq) })?;
    Ok(())
}

/// A datagram socket to address interface ioctls to (in the calling thread's
/// network namespace).
fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the returned descriptor is checked and
    // then owned by the OwnedFd.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn with_ifr(name: &str, req: libc::c_ulong, f: impl FnOnce(&mut IfReq)) -> io::Result<IfReq> {
    let s = ctl_socket()?;
    let mut r = IfReq::new(name)?;
    f(&mut r);
    ioctl_ifreq(s.as_raw_fd(), req, &mut r).map_err(|e| ctx(e, name))?;
    Ok(r)
}

fn ctx(e: io::Error, name: &str) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ENODEV) => io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface named '{name}'"),
        ),
        _ => io::Error::new(e.kind(), format!("interface '{name}': {e}")),
    }
}

pub fn get_flags(name: &str) -> io::Result<i16> {
    Ok(with_ifr(name, libc::SIOCGIFFLAGS, |_| {})?.short())
}

/// Sets IFF_UP on `name`.
pub fn set_up(name: &str) -> io::Result<()> {
    let flags = get_flags(name)?;
    if flags & libc::IFF_UP as i16 != 0 {
        return Ok(());
    }
    with_ifr(name, libc::SIOCSIFFLAGS, |r| {
        r.set_short(flags | libc::IFF_UP as i16)
    })?;
    Ok(())
}

pub fn get_mtu(name: &str) -> io::Result<u32> {
    Ok(with_ifr(name, libc::SIOCGIFMTU, |_| {})?.int() as u32)
}

pub fn set_mtu(name: &str, mtu: u32) -> io::Result<()> {
    let v = i32::try_from(mtu)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "MTU out of range"))?;
    with_ifr(name, libc::SIOCSIFMTU, |r| r.set_int(v))?;
    Ok(())
}

pub fn get_mac(name: &str) -> io::Result<MacAddr> {
    let r = with_ifr(name, libc::SIOCGIFHWADDR, |_| {})?;
    // struct sockaddr: sa_family (2 bytes) then sa_data.
    Ok(MacAddr::from_slice(&r.data[2..8]).unwrap_or_default())
}

pub fn set_mac(name: &str, mac: MacAddr) -> io::Result<()> {
    with_ifr(name, libc::SIOCSIFHWADDR, |r| {
        r.data[..2].copy_from_slice(&(libc::ARPHRD_ETHER).to_ne_bytes());
        r.data[2..8].copy_from_slice(&mac.0);
    })?;
    Ok(())
}

/// The index of interface `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    Ok(with_ifr(name, libc::SIOCGIFINDEX, |_| {})?.int() as u32)
}

/// Whether an interface with this index still exists (in this namespace).
pub fn ifindex_exists(index: u32) -> bool {
    let mut buf = [0 as libc::c_char; IFNAMSIZ];
    // SAFETY: `buf` has room for IFNAMSIZ bytes as if_indextoname requires.
    !unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) }.is_null()
}

/// Path of a named network namespace, as `ip netns` keeps them.
pub fn netns_path(ns: &str) -> io::Result<String> {
    if ns.is_empty() || ns == "." || ns == ".." || ns.contains('/') || ns.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid network namespace name '{ns}'"),
        ));
    }
    let p = format!("/var/run/netns/{ns}");
    if !std::path::Path::new(&p).exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("network namespace '{ns}' not found ({p} does not exist; create it with 'ip netns add {ns}')"),
        ));
    }
    Ok(p)
}

/// Opens a named network namespace (as `ip netns` names them).
pub fn open_netns(ns: &str) -> io::Result<OwnedFd> {
    let path = netns_path(ns)?;
    let cpath = CString::new(path).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `cpath` is a valid NUL-terminated string; the result is checked.
    let fd = cvt(unsafe { libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs `f` on a short-lived thread that has entered network namespace `ns`
/// (by name, as `ip netns` names them). Sockets `f` creates belong to that
/// namespace; it is for configuring interfaces there.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let nsfd = open_netns(ns)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns(2) on this thread only (it is a fresh thread that
            // exits when `f` returns), with a namespace fd we own.
            cvt(unsafe { libc::setns(nsfd.as_raw_fd(), libc::CLONE_NEWNET) }).map_err(|e| {
                let hint = if e.raw_os_error() == Some(libc::EPERM) {
                    " (entering a network namespace needs CAP_SYS_ADMIN: a vswitchd \
                         started with --user gets ports in other namespaces from its \
                         --config file only)"
                } else {
                    ""
                };
                io::Error::new(e.kind(), format!("entering netns {ns}: {e}{hint}"))
            })?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("netns worker thread panicked")))
    })
}

/// Moves interface `ifindex` into the network namespace `ns_fd` and renames
/// it `new_name` there, in one RTM_SETLINK (as `ip link set dev X netns NS
/// name Y`). The message is built with netlink-packet-route.
pub fn move_link_to_netns(ifindex: u32, ns_fd: RawFd, new_name: &str) -> io::Result<()> {
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    link.attributes.push(LinkAttribute::NetNsFd(ns_fd));
    link.attributes
        .push(LinkAttribute::IfName(new_name.to_string()));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::SetLink(link));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);

    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    sock.send(&buf, 0)?;
    let mut rbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
    sock.recv(&mut rbuf, 0)?;
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rbuf)
        .map_err(|e| io::Error::other(format!("bad netlink answer: {e}")))?;
    match msg.payload {
        NetlinkPayload::Error(e) => match e.code {
            None => Ok(()),
            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
        },
        _ => Err(io::Error::other("unexpected netlink answer")),
    }
}

/// Counters of `/proc/net/dev`.
#[derive(Debug, Clone, Copy)]
pub enum LinkCounter {
    TxDropped,
}

/// Reads one counter of interface `name` in the calling thread's namespace.
pub fn link_counter(name: &str, which: LinkCounter) -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev")?;
    parse_net_dev(&text, name, which)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no counters for '{name}'")))
}

fn parse_net_dev(text: &str, name: &str, which: LinkCounter) -> Option<u64> {
    // "  eth0: rx_bytes rx_packets rx_errs rx_drop fifo frame compressed
    //  multicast tx_bytes tx_packets tx_errs tx_drop ..."
    let line = text
        .lines()
        .find(|l| l.split(':').next().is_some_and(|n| n.trim() == name))?;
    let fields: Vec<u64> = line
        .split_once(':')?
        .1
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    match which {
        LinkCounter::TxDropped => fields.get(11).copied(),
    }
}

/// Sets a file descriptor non-blocking.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns; F_GETFL takes no pointer.
    let fl = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above; F_SETFL takes an int.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) })?;
    Ok(())
}

/// Sets an integer socket option.
pub fn setsockopt_int(
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
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Takes the error pending on a socket (`SO_ERROR`, which also clears it):
/// `None` when there is none. For sockets read without a syscall (an mmap
/// ring), where no receive call would report it.
pub fn take_socket_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are live locals; the kernel writes at most
    // `len` (an int's size) bytes into `err` and updates `len`.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
}

/// A shared, read-write mapping of a descriptor (a packet socket's ring),
/// unmapped when dropped. It hands out raw addresses only: whoever reads or
/// writes through them follows the protocol of what is mapped.
pub struct Mmap {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: `Mmap` owns an address range, not Rust values; nothing in it is
// tied to the thread that mapped it, and it is unmapped exactly once (drop).
unsafe impl Send for Mmap {}
// SAFETY: `&Mmap` only gives out the address and length; every access through
// them is the caller's, under the mapped object's own protocol.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)`.
    pub fn shared(fd: RawFd, len: usize) -> io::Result<Mmap> {
        Mmap::map(fd, len, libc::MAP_SHARED)
    }

    /// An anonymous shared mapping (tests stand in for a kernel ring).
    #[cfg(test)]
    pub fn anonymous(len: usize) -> io::Result<Mmap> {
        Mmap::map(-1, len, libc::MAP_SHARED | libc::MAP_ANONYMOUS)
    }

    fn map(fd: RawFd, len: usize, flags: libc::c_int) -> io::Result<Mmap> {
        if len == 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: a fresh mapping chosen by the kernel (no address hint, no
        // MAP_FIXED), so no existing memory is affected; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(p.cast()).ok_or(io::ErrorKind::Other)?;
        Ok(Mmap { ptr, len })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: exactly the range mmap returned, unmapped once; no
        // reference into it outlives the `Mmap` (users hold raw addresses
        // only while they borrow it).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Best effort: receive and send buffers of `bytes`, beyond the sysctl
/// limits where we may (root: SO_*BUFFORCE).
pub fn set_socket_buffers(fd: RawFd, bytes: libc::c_int) {
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_int(fd, libc::SOL_SOCKET, force, bytes).is_err() {
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, plain, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifnames() {
        assert!(valid_ifname("eth0"));
        assert!(valid_ifname("a234567890abcde"));
        assert!(!valid_ifname("a234567890abcdef"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname("a/b"));
        assert!(!valid_ifname(".."));
        assert!(!valid_ifname("a b"));
        assert_eq!(IfReq::new("eth0").unwrap().name(), "eth0");
    }

    #[test]
    fn net_dev_parsing() {
        let t = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0: 1000 10 0 3 0 0 0 0 2000 20 0 7 0 0 0 0
";
        assert_eq!(parse_net_dev(t, "eth0", LinkCounter::TxDropped), Some(7));
        assert_eq!(parse_net_dev(t, "lo", LinkCounter::TxDropped), Some(0));
        assert_eq!(parse_net_dev(t, "eth1", LinkCounter::TxDropped), None);
    }

    #[test]
    fn loopback_is_there() {
        assert!(ifindex("lo").unwrap() >= 1);
        assert!(get_flags("lo").is_ok());
        assert!(get_mtu("lo").unwrap() > 0);
        assert_eq!(
            ifindex("nosuchif0").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(netns_path("../x").is_err());
    }
}
