//! The underlay side of the VTEP: one UDP socket per (local address, UDP
//! port), shared by every VXLAN port (VNI) on it, the per-VNI segment state
//! the receive path demultiplexes to, the remote VTEP tables, and the pools
//! of sockets the outer source ports are sent from.
//!
//! Like the kernel, which shares one socket among all vxlan devices on an
//! address and port (`vxlan_sock` in drivers/net/vxlan), and OVS, which has
//! one tunnel port for every VNI: a datagram is received once and handed to
//! the segment its VNI names (RFC 7348 §5); a VNI nobody serves is dropped
//! and counted (`vni_unknown`).
//!
//! Outer source ports (RFC 7348 §5: "a hash of fields from the inner
//! packet", in the dynamic range 49152-65535 by default) come from a pool of
//! sockets bound to ports spread over the range: a plain UDP socket sends
//! from its one bound port, and a pool keeps what a UDP socket gives for
//! free (the kernel's routing and outer headers, UDP GSO, sendmmsg) where a
//! raw socket would have to build outer headers and lose UDP GSO. A flow's
//! hash picks the socket, so one flow keeps one source port.

use crate::config::MAX_REMOTES;
use hashbrown::HashMap;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

/// Sockets in one source-port pool (fewer if the range is smaller).
pub const POOL_SOCKETS: usize = 16;
/// Socket buffer size for the underlay sockets.
const SOCK_BUF: libc::c_int = 8 << 20;
/// A segment whose port has no PortId yet.
pub const NO_PID: u32 = u32::MAX;

/// What a remote VTEP is to a segment. Order matters: a remote keeps the
/// strongest role it was given (`Flood` > `Static` > `Learned` > `Removed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RemoteKind {
    /// Taken off the flood list; its frames are refused (unless learning).
    Removed,
    /// Sent frames to us (with `--learning`).
    Learned,
    /// Named by a static FDB entry (`fdb-add --vtep`).
    Static,
    /// On the flood list (head-end replication).
    Flood,
}

/// One remote VTEP, with its socket address built once for sendmmsg.
pub struct Remote {
    pub ip: IpAddr,
    pub name: libc::sockaddr_storage,
    pub namelen: libc::socklen_t,
    pub kind: RemoteKind,
}

/// A segment's remote VTEPs. Indexes are stable (the bridge's FDB stores
/// them with each station): index 0 means "none", a remote taken off the
/// flood list keeps its slot (marked `Removed`) and gets it back if re-added.
pub struct Remotes {
    pub list: Vec<Remote>,
    index: HashMap<IpAddr, u16>,
    /// The flood list, as indexes into `list`.
    pub flood: Vec<u16>,
    dstport: u16,
}

/// Most remotes a segment learns from traffic (`--learning`): the rest of
/// [`MAX_REMOTES`] stays for configured and static remotes, so that a flood
/// from spoofed sources cannot lock out `--remote-add`.
pub const MAX_LEARNED: usize = MAX_REMOTES / 2;

impl Remotes {
    pub fn dstport(&self) -> u16 {
        self.dstport
    }

    /// Whether remote `i` is one frames may be sent to (not taken off).
    pub fn live(&self, i: u16) -> bool {
        self.list
            .get(i as usize)
            .is_some_and(|r| i != 0 && r.kind != RemoteKind::Removed)
    }

    /// Changes the flood list, all or nothing: takes `del` off (each must
    /// be on it), puts `add` on. Returns the slots taken off.
    pub fn change_flood(&mut self, add: &[IpAddr], del: &[IpAddr]) -> Result<Vec<u16>, String> {
        let mut seen = Vec::new();
        for ip in del {
            if seen.contains(ip) {
                continue;
            }
            match self.index.get(ip) {
                Some(&i) if self.list[i as usize].kind == RemoteKind::Flood => seen.push(*ip),
                _ => return Err(format!("{ip} is not a remote of this port")),
            }
        }
        let new = add
            .iter()
            .filter(|ip| !self.index.contains_key(*ip))
            .count();
        if self.list.len() - 1 + new > MAX_REMOTES {
            return Err(format!("too many remote VTEPs (limit {MAX_REMOTES})"));
        }
        let gone: Vec<u16> = seen
            .iter()
            .map(|ip| self.del_flood(*ip).expect("checked above"))
            .collect();
        for ip in add {
            self.add_flood(*ip).expect("room checked above");
        }
        Ok(gone
            .into_iter()
            .filter(|&i| self.list[i as usize].kind == RemoteKind::Removed)
            .collect())
    }

    pub fn new(dstport: u16) -> Remotes {
        let placeholder = Remote {
            ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
            name: unsafe { mem::zeroed() },
            namelen: 0,
            kind: RemoteKind::Removed,
        };
        Remotes {
            list: vec![placeholder],
            index: HashMap::new(),
            flood: Vec::new(),
            dstport,
        }
    }

    /// The slot of `ip`, made with `kind` if new, raised to `kind` if known.
    /// None if the table is full.
    fn slot(&mut self, ip: IpAddr, kind: RemoteKind) -> Option<u16> {
        if let Some(&i) = self.index.get(&ip) {
            let r = &mut self.list[i as usize];
            r.kind = r.kind.max(kind);
            return Some(i);
        }
        if self.list.len() > MAX_REMOTES {
            return None;
        }
        // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
        let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let namelen = to_sockaddr(SocketAddr::new(ip, self.dstport), &mut name);
        let i = self.list.len() as u16;
        self.list.push(Remote {
            ip,
            name,
            namelen,
            kind,
        });
        self.index.insert(ip, i);
        Some(i)
    }

    /// Puts `ip` on the flood list (no change if it is there).
    pub fn add_flood(&mut self, ip: IpAddr) -> Result<(), String> {
        let i = self
            .slot(ip, RemoteKind::Flood)
            .ok_or_else(|| format!("too many remote VTEPs (limit {MAX_REMOTES})"))?;
        if !self.flood.contains(&i) {
            self.flood.push(i);
        }
        Ok(())
    }

    /// Takes `ip` off the flood list; its slot index (to forget what was
    /// learned behind it).
    pub fn del_flood(&mut self, ip: IpAddr) -> Result<u16, String> {
        let i = match self.index.get(&ip) {
            Some(&i) if self.list[i as usize].kind == RemoteKind::Flood => i,
            _ => return Err(format!("{ip} is not a remote of this port")),
        };
        self.flood.retain(|&x| x != i);
        self.list[i as usize].kind = RemoteKind::Removed;
        Ok(i)
    }

    /// The slot for a static FDB entry's VTEP.
    pub fn add_static(&mut self, ip: IpAddr) -> Result<u16, String> {
        self.slot(ip, RemoteKind::Static)
            .ok_or_else(|| format!("too many remote VTEPs (limit {MAX_REMOTES})"))
    }

    /// The slot of a VTEP that sent a frame, if its frames are accepted.
    pub fn accepted(&self, ip: &IpAddr) -> Option<u16> {
        let &i = self.index.get(ip)?;
        (self.list[i as usize].kind != RemoteKind::Removed).then_some(i)
    }

    /// Learns a VTEP that sent a frame (with `--learning`), at most
    /// [`MAX_LEARNED`] of them.
    pub fn learn(&mut self, ip: IpAddr) -> Option<u16> {
        if !self.index.contains_key(&ip)
            && self
                .list
                .iter()
                .filter(|r| r.kind == RemoteKind::Learned)
                .count()
                >= MAX_LEARNED
        {
            return None;
        }
        self.slot(ip, RemoteKind::Learned)
    }

    pub fn ip(&self, i: u16) -> Option<IpAddr> {
        (i != 0)
            .then(|| self.list.get(i as usize).map(|r| r.ip))
            .flatten()
    }

    /// The flood list, in the order it was built.
    pub fn flood_ips(&self) -> Vec<IpAddr> {
        self.flood
            .iter()
            .map(|&i| self.list[i as usize].ip)
            .collect()
    }

    pub fn of_kind(&self, kind: RemoteKind) -> Vec<IpAddr> {
        self.list[1..]
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.ip)
            .collect()
    }
}

/// One VNI on an underlay: what the receive path needs to hand a datagram
/// to its port, and the remotes the port sends to.
pub struct Segment {
    pub vni: u32,
    pub learning: bool,
    /// The port's PortId, [`NO_PID`] until the engine has placed it.
    pid: AtomicU32,
    remotes: RwLock<Remotes>,
}

impl Segment {
    pub fn new(vni: u32, learning: bool, remotes: Remotes) -> Segment {
        Segment {
            vni,
            learning,
            pid: AtomicU32::new(NO_PID),
            remotes: RwLock::new(remotes),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        let p = self.pid.load(Ordering::Acquire);
        (p != NO_PID).then_some(p)
    }

    pub fn set_pid(&self, pid: u32) {
        self.pid.store(pid, Ordering::Release);
    }

    pub fn remotes(&self) -> RwLockReadGuard<'_, Remotes> {
        self.remotes.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn remotes_mut(&self) -> RwLockWriteGuard<'_, Remotes> {
        self.remotes.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sockets bound to ports spread over a source-port range.
pub struct SrcPool {
    pub range: (u16, u16),
    pub socks: Vec<(u16, UdpSocket)>,
}

impl SrcPool {
    fn open(ip: IpAddr, range: (u16, u16)) -> io::Result<SrcPool> {
        let (min, max) = range;
        let span = usize::from(max - min) + 1;
        let k = POOL_SOCKETS.min(span);
        let mut socks = Vec::with_capacity(k);
        let mut last_err = None;
        for i in 0..k {
            // The i-th k-th of the range; the first free port in it.
            let lo = usize::from(min) + span * i / k;
            let hi = usize::from(min) + span * (i + 1) / k;
            for port in lo..hi {
                match bind_udp(SocketAddr::new(ip, port as u16)) {
                    Ok(s) => {
                        // A large send buffer; the receive buffer stays as
                        // small as the kernel allows (nothing is read here).
                        let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
                        let _ = crate::sys::setsockopt_int(
                            fd,
                            libc::SOL_SOCKET,
                            libc::SO_SNDBUFFORCE,
                            SOCK_BUF,
                        )
                        .or_else(|_| {
                            crate::sys::setsockopt_int(
                                fd,
                                libc::SOL_SOCKET,
                                libc::SO_SNDBUF,
                                SOCK_BUF,
                            )
                        });
                        let _ =
                            crate::sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 0);
                        socks.push((port as u16, s));
                        break;
                    }
                    Err(e) => last_err = Some(e),
                }
            }
        }
        if socks.is_empty() {
            return Err(last_err.unwrap_or_else(|| io::Error::other("empty range")));
        }
        Ok(SrcPool { range, socks })
    }

    /// The socket a flow with hash `h` is sent from.
    #[inline]
    pub fn pick(&self, h: u32) -> usize {
        // Lemire's multiply-shift: uniform over the pool without a division.
        ((u64::from(h) * self.socks.len() as u64) >> 32) as usize
    }
}

/// One UDP socket on (local address, VXLAN port), shared by its segments.
pub struct Underlay {
    pub sock: UdpSocket,
    pub local: SocketAddr,
    /// Where super-frames go whole (IPv4, where the kernel takes
    /// UDP-tunnel GSO on a TAP; see [`super::tunnel_tap`]).
    pub tap: Option<super::tunnel_tap::TunnelTap>,
    segs: RwLock<HashMap<u32, Arc<Segment>>>,
    pools: Mutex<Vec<Weak<SrcPool>>>,
}

/// The live underlays of this process (the kernel keeps its per network
/// namespace: `vxlan_net.sock_list`).
static UNDERLAYS: Mutex<Vec<Weak<Underlay>>> = Mutex::new(Vec::new());

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cannot bind the VXLAN socket to {0}: {1}")]
    Bind(SocketAddr, io::Error),
    #[error("VNI {0} is already on {1}")]
    VniInUse(u32, SocketAddr),
    #[error("no free UDP source port in {0}-{1} on {2}: {3}")]
    SrcPort(u16, u16, IpAddr, io::Error),
}

impl Underlay {
    /// Joins segment `seg` to the underlay on `local` (made if there is
    /// none), with the source-port pool for `range`.
    pub fn join(
        local: SocketAddr,
        seg: Arc<Segment>,
        range: (u16, u16),
    ) -> Result<(Arc<Underlay>, Arc<SrcPool>), JoinError> {
        let mut all = UNDERLAYS.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        let under = match all
            .iter()
            .filter_map(Weak::upgrade)
            .find(|u| u.local == local)
        {
            Some(u) => u,
            None => {
                let sock = bind_udp(local).map_err(|e| JoinError::Bind(local, e))?;
                crate::sys::set_socket_buffers(std::os::fd::AsRawFd::as_raw_fd(&sock), SOCK_BUF);
                let tap = match local.ip() {
                    IpAddr::V4(v4) => match super::tunnel_tap::TunnelTap::open(v4) {
                        Ok(t) => {
                            tracing::info!(tap = %t.name, %local, "VXLAN super-frames go whole through a UDP-tunnel GSO TAP");
                            Some(t)
                        }
                        Err(e) => {
                            tracing::info!(%local, "no UDP-tunnel GSO TAP ({e}): super-frames are segmented in software");
                            None
                        }
                    },
                    IpAddr::V6(_) => None,
                };
                let u = Arc::new(Underlay {
                    sock,
                    local,
                    tap,
                    segs: RwLock::new(HashMap::new()),
                    pools: Mutex::new(Vec::new()),
                });
                all.push(Arc::downgrade(&u));
                u
            }
        };
        let pool = under.pool(range)?;
        let mut segs = under.segs.write().unwrap_or_else(|e| e.into_inner());
        if segs.contains_key(&seg.vni) {
            return Err(JoinError::VniInUse(seg.vni, local));
        }
        segs.insert(seg.vni, seg);
        drop(segs);
        Ok((under, pool))
    }

    /// The pool for `range`, shared with other segments that use it.
    fn pool(&self, range: (u16, u16)) -> Result<Arc<SrcPool>, JoinError> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|w| w.strong_count() > 0);
        if let Some(p) = pools
            .iter()
            .filter_map(Weak::upgrade)
            .find(|p| p.range == range)
        {
            return Ok(p);
        }
        let ip = self.local.ip();
        let p = Arc::new(
            SrcPool::open(ip, range).map_err(|e| JoinError::SrcPort(range.0, range.1, ip, e))?,
        );
        pools.push(Arc::downgrade(&p));
        Ok(p)
    }

    /// Takes `seg` off the underlay (if it is the one registered for its VNI).
    pub fn leave(&self, seg: &Arc<Segment>) {
        let mut segs = self.segs.write().unwrap_or_else(|e| e.into_inner());
        if segs.get(&seg.vni).is_some_and(|s| Arc::ptr_eq(s, seg)) {
            segs.remove(&seg.vni);
        }
    }

    pub fn segments(&self) -> RwLockReadGuard<'_, HashMap<u32, Arc<Segment>>> {
        self.segs.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// A non-blocking UDP socket bound to `addr`, also when `addr` is not (yet)
/// on any interface (IP_FREEBIND / IPV6_FREEBIND): the VTEP starts before
/// its underlay address appears, and keeps its socket when the address goes
/// away and comes back.
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    match addr {
        SocketAddr::V4(_) => s.set_freebind(true)?,
        SocketAddr::V6(_) => s.set_freebind_ipv6(true)?,
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Whether `ip` is an address of this host now: a socket can be bound to it
/// without IP_FREEBIND.
pub fn is_local(ip: IpAddr) -> bool {
    UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Writes `addr` as a sockaddr_in/sockaddr_in6 into `st`; returns its length.
pub fn to_sockaddr(addr: SocketAddr, st: &mut libc::sockaddr_storage) -> libc::socklen_t {
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
pub fn from_sockaddr(st: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<IpAddr> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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

    #[test]
    fn remote_indexes_are_stable_across_del_and_add() {
        let mut r = Remotes::new(4789);
        r.add_flood(ip("192.0.2.2")).unwrap();
        r.add_flood(ip("192.0.2.3")).unwrap();
        r.add_flood(ip("192.0.2.2")).unwrap();
        assert_eq!(r.flood_ips(), vec![ip("192.0.2.2"), ip("192.0.2.3")]);
        let i = r.del_flood(ip("192.0.2.2")).unwrap();
        assert_eq!(i, 1);
        assert_eq!(r.flood_ips(), vec![ip("192.0.2.3")]);
        assert_eq!(r.accepted(&ip("192.0.2.2")), None, "removed: refused");
        assert!(r.del_flood(ip("192.0.2.2")).is_err());
        assert!(r.del_flood(ip("192.0.2.9")).is_err());
        r.add_flood(ip("192.0.2.2")).unwrap();
        assert_eq!(r.accepted(&ip("192.0.2.2")), Some(1), "same slot back");
        assert_eq!(r.flood_ips(), vec![ip("192.0.2.3"), ip("192.0.2.2")]);
    }

    #[test]
    fn static_vteps_are_accepted_but_not_flooded() {
        let mut r = Remotes::new(4789);
        let s = r.add_static(ip("192.0.2.4")).unwrap();
        assert_eq!(r.accepted(&ip("192.0.2.4")), Some(s));
        assert!(r.flood_ips().is_empty());
        // A flood remote that is also static stays flooded; a static one
        // taken off the flood list is not resurrected by the static entry.
        r.add_flood(ip("192.0.2.4")).unwrap();
        assert_eq!(r.add_static(ip("192.0.2.4")).unwrap(), s);
        assert_eq!(r.list[s as usize].kind, RemoteKind::Flood);
        assert_eq!(r.ip(s), Some(ip("192.0.2.4")));
        assert_eq!(r.ip(0), None);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut r = Remotes::new(4789);
        let mut n = 0;
        for a in 0..=255u8 {
            for b in 0..=8u8 {
                if r.add_flood(IpAddr::V4(Ipv4Addr::new(10, b, a, 1))).is_ok() {
                    n += 1;
                }
            }
        }
        assert_eq!(n, MAX_REMOTES);
        assert!(r.learn(ip("10.99.0.1")).is_none());
    }

    #[test]
    fn pool_picks_spread_and_stay_in_range() {
        let p = SrcPool {
            range: (49152, 65535),
            socks: (0..16)
                .map(|i| (49152 + i * 1024, UdpSocket::bind("127.0.0.1:0").unwrap()))
                .collect(),
        };
        let mut seen = [false; 16];
        for h in 0..1000u32 {
            let i = p.pick(h.wrapping_mul(0x9e37_79b9));
            seen[i] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(p.pick(u32::MAX), 15);
    }
}
