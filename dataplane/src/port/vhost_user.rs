//! vhost-user ports: the switch is the vhost-user backend of a guest's
//! virtio-net device (QEMU `-netdev vhost-user`), so the guest's virtqueues
//! are read and written by the switch directly, with no TAP in between.
//!
//! # Crates
//! The protocol is rust-vmm's, not hand-written: `vhost-user-backend` 0.24
//! (the message loop, memory table, vring set-up), which requires exactly
//! `vhost` 0.18, `virtio-queue` 0.18 and `vm-memory` 0.18 (with `backend-mmap`,
//! `backend-atomic`, `backend-bitmap`); `virtio-bindings` 0.2 for the feature
//! bits, `vmm-sys-util` 0.15 for the eventfd. These are the newest releases
//! that resolve together (one `vm-memory` in the tree, which the backend,
//! queue and our accessors must share).
//!
//! # Design (first increment)
//! - Off the data path, one control thread per port owns the Unix socket:
//!   in server mode it listens (a stale socket file is replaced) and serves
//!   one connection at a time, accepting the next when the guest side goes
//!   away; in client mode it connects and retries about every second. Each
//!   connection gets a fresh `VhostUserDaemon` (fresh vrings and memory
//!   table), whose epoll thread receives the guest's kicks.
//! - Frames move in the worker that owns the port. The daemon's thread only
//!   turns a kick on the guest's TX queue into a write on the port's wake
//!   eventfd (the port's [`Port::fd`]); [`Port::recv`] pops descriptor chains
//!   from the TX virtqueue into the switch's frames (the 12-byte
//!   `virtio_net_hdr_v1` becomes the frame's virtio header, checked by
//!   [`tx_vnet`]), and [`Port::send`] writes frames into available RX-queue
//!   buffers. That is one thread hop per wake-up (a kick), not per frame;
//!   a spinning worker does not wait for it: [`Port::peek`] compares the
//!   guest's avail index with the next chain to pop (a load from guest
//!   memory). Registering the kick eventfd with the worker itself is the
//!   next step.
//! - Notifications: EVENT_IDX is offered. The guest is signalled after a
//!   batch only past its used_event (or, without EVENT_IDX, unless it set
//!   VRING_AVAIL_F_NO_INTERRUPT), and kicks only past the avail_event the
//!   worker publishes when it has drained the TX queue.
//! - Lost notifications: a guest whose barrier between writing its event
//!   index and reading ours does not reach the host CPU can miss a kick or
//!   an interrupt; both sides then wait, and the guest's TX watchdog resets
//!   the NIC after 5 s. QEMU's TCG before 8.1 (Debian 12 has 7.2) drops a
//!   guest's barriers when it has one vCPU (`-smp 1`; fixed by "tcg: Do not
//!   elide memory barriers for !CF_PARALLEL in system mode", 2023;
//!   `-smp 1,maxcpus=2` keeps them). A timer in the daemon's thread looks
//!   at both queues every [`WATCHDOG_PERIOD`]: a TX chain left unpopped, or
//!   a used index past the guest's `used_event` (it asked to be told), with
//!   nothing moved over a whole period, gets the kick or interrupt resent,
//!   once per such state (harmless if it was only late: a slow or paused
//!   guest, a descheduled worker). Counted as `lost_notifications` in
//!   `list-ports --json`: resent, lost or late.
//! - Offloads: CSUM, GUEST_CSUM, HOST_TSO4/6 and GUEST_TSO4/6 are offered, so
//!   TCP super-frames and partial checksums cross whole in both directions.
//!   A frame needing an offload the guest did not ack (or ECN, UDP GSO) is
//!   segmented and checksummed here.
//! - Receive buffers: MRG_RXBUF is offered (virtio 1.1, 5.1.6.3.1). A
//!   guest that acks it posts small buffers, one descriptor each (Linux:
//!   about a page, sized by the frames it has seen), and a frame larger than
//!   one buffer is spread over several, the count in the first buffer's
//!   `num_buffers`. All of a frame's buffers are published to the guest
//!   with one store of the used index (`publish_used`), never one by one: a
//!   guest that read the first buffer before the rest were used would drop
//!   the frame. Without it (an older guest, or one that declines), a guest
//!   that acks GUEST_TSO posts 64 KiB chains ("big packets"), and a
//!   256-entry ring then holds only ~14 of them: small frames (ACKs) find it
//!   full and are dropped as `tx_queue_full`.
//!
//! # Guest memory is untrusted
//! Every descriptor address and length goes through vm-memory's checked
//! accessors (`read_slice`/`write_slice`, which fail outside the memory
//! table); virtio-queue bounds a chain by the queue size (no loops) and
//! checks indices. A TX chain that is unreadable, has a device-writable
//! part, is shorter than the header or longer than [`MAX_CHAIN_BYTES`], or
//! whose virtio header asks for what was not negotiated or points outside
//! the frame, is returned to the guest unread and counted (`bad_descriptors` in
//! `list-ports`, `malformed` in `stats`); an RX chain that cannot take a
//! frame is returned with length 0 and counted as `vhost_bad_desc`.

use super::{Caps, IoScratch, Port, TxItem};
use crate::offload::{self, Segments};
use crate::packet::{Frame, VnetHdr, EDIT_PREFIX_MAX, VNET_HDR_LEN};
use crate::stats::{DropReason, PortStats};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::Listener;
use vhost_user_backend::{
    ShutdownHandle, VhostUserBackend, VhostUserDaemon, VringRwLock, VringState, VringT,
};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

/// Guest memory as the daemon maps it.
type Mem = GuestMemoryAtomic<GuestMemoryMmap>;
type Vring = VringRwLock<Mem>;

/// The virtio-net header with VIRTIO_F_VERSION_1 (`virtio_net_hdr_v1`):
/// always 12 bytes, with `num_buffers`.
pub const GUEST_HDR_LEN: usize = 12;
/// Virtqueue indices of a single-queue-pair virtio-net device.
const RXQ: usize = 0;
const TXQ: usize = 1;
/// Largest queue the guest may configure.
const QUEUE_MAX: usize = 1024;
/// Longest TX chain accepted, header included: the largest TSO super-frame.
pub const MAX_CHAIN_BYTES: usize = GUEST_HDR_LEN + crate::packet::MAX_FRAME;
/// The offloads offered (virtio 1.1, 5.1.3): the guest may send partial
/// checksums and TCP super-frames (CSUM, HOST_TSO4/6), and take them
/// (GUEST_CSUM, GUEST_TSO4/6) in buffers merged as needed (MRG_RXBUF).
const OFFLOADS: u64 = (1 << vnet::VIRTIO_NET_F_MRG_RXBUF)
    | (1 << vnet::VIRTIO_NET_F_CSUM)
    | (1 << vnet::VIRTIO_NET_F_GUEST_CSUM)
    | (1 << vnet::VIRTIO_NET_F_HOST_TSO4)
    | (1 << vnet::VIRTIO_NET_F_HOST_TSO6)
    | (1 << vnet::VIRTIO_NET_F_GUEST_TSO4)
    | (1 << vnet::VIRTIO_NET_F_GUEST_TSO6);
use virtio_bindings::virtio_net as vnet;

/// Whether the guest acked feature bit `bit`.
fn has(acked: u64, bit: u32) -> bool {
    acked & (1 << bit) != 0
}

/// VRING_AVAIL_F_NO_INTERRUPT (virtio 1.1, 2.6.7).
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// How often the daemon's thread looks for lost notifications.
const WATCHDOG_PERIOD: Duration = Duration::from_millis(10);
/// The watchdog timer's epoll data: past the queues (0, 1) and the
/// daemon's own event (2).
const WATCHDOG_EVENT: u16 = 3;

/// What the watchdog saw of a queue at its last tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QueueSnap {
    next_avail: u16,
    avail_idx: u16,
    next_used: u16,
    used_event: Option<u16>,
}

/// Server (listen on the socket) or client (connect to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Server,
    Client,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Server => "server",
            Mode::Client => "client",
        }
    }
}

/// State shared by the worker, the control thread and the daemon's thread.
struct Shared {
    /// The current connection's guest memory and vrings (None: none yet).
    conn: Mutex<Option<Conn>>,
    connected: AtomicBool,
    stop: AtomicBool,
    /// Written by the daemon's thread on a TX kick; the worker polls it.
    wake: EventFd,
    bad_desc: AtomicU64,
    /// Virtio features the guest acked (SET_FEATURES).
    acked: AtomicU64,
    /// The daemon of the current connection, to cut it on removal.
    shutdown: Mutex<Option<ShutdownHandle>>,
    /// The watchdog's last look at the RX and TX queues, and whether it
    /// resent a notification for that state already.
    watch: Mutex<[(Option<QueueSnap>, bool); 2]>,
    /// Kicks and interrupts the watchdog resent.
    lost_notifications: AtomicU64,
    /// Kicks the guest sent (TX queue) and interrupts the switch sent it.
    kicks: AtomicU64,
    interrupts: AtomicU64,
}

#[derive(Clone)]
struct Conn {
    mem: Mem,
    /// RX and TX vrings, learnt from the daemon's first event.
    vrings: Option<[Vring; 2]>,
}

/// The `VhostUserBackend` the daemon drives: a virtio-net device with one
/// queue pair.
#[derive(Clone)]
struct NetBackend {
    shared: Arc<Shared>,
    /// The watchdog's periodic timer (this connection's).
    timer: Arc<Mutex<TimerFd>>,
}

impl VhostUserBackend for NetBackend {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        2
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_MAX
    }

    fn features(&self) -> u64 {
        // QEMU's vhost-user-net needs VHOST_USER_F_PROTOCOL_FEATURES (it
        // refuses to start vhost without SET_VRING_ENABLE), and QEMU 7.2
        // sends SET_VRING_ENABLE before acking the bit: third_party/vhost
        // accepts that.
        (1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
            | (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX)
            | OFFLOADS
    }

    fn acked_features(&self, features: u64) {
        tracing::info!(
            "vhost-user: guest acked features {features:#x} (mrg_rxbuf {}, event_idx {}, guest_tso4 {})",
            has(features, vnet::VIRTIO_NET_F_MRG_RXBUF),
            has(features, virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX),
            has(features, vnet::VIRTIO_NET_F_GUEST_TSO4),
        );
        self.shared.acked.store(features, Ordering::Release);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::empty()
    }

    fn set_event_idx(&self, _enabled: bool) {}

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        // Without one the daemon's epoll thread never ends (and dropping
        // the daemon, which joins it, hangs).
        new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()
    }

    fn update_memory(&self, _mem: Mem) -> io::Result<()> {
        // The daemon updates the GuestMemoryAtomic we hold a clone of.
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[Vring],
        _thread_id: usize,
    ) -> io::Result<()> {
        if device_event == WATCHDOG_EVENT {
            let _ = lock(&self.timer).wait();
            self.watchdog(vrings);
            return Ok(());
        }
        if let [rx, tx] = vrings {
            let mut c = lock(&self.shared.conn);
            if let Some(c) = c.as_mut() {
                if c.vrings.is_none() {
                    tracing::debug!("vhost-user: vrings ready (event {device_event})");
                    c.vrings = Some([rx.clone(), tx.clone()]);
                }
            }
        }
        if device_event as usize == TXQ {
            self.shared.kicks.fetch_add(1, Ordering::Relaxed);
        }
        if device_event as usize == TXQ || device_event as usize == RXQ {
            // The worker drains the TX queue (an RX kick only says buffers
            // were posted; waking the worker then is harmless).
            let _ = self.shared.wake.write(1);
        }
        Ok(())
    }
}

impl NetBackend {
    /// One watchdog tick: resends a kick (wakes the worker) for TX chains
    /// that stayed unpopped, and an interrupt for a queue whose used index
    /// stayed past the guest's `used_event`, both unchanged for a period.
    fn watchdog(&self, vrings: &[Vring]) {
        let Some(mem) = lock(&self.shared.conn).as_ref().map(|c| c.mem.clone()) else {
            return;
        };
        let mem = mem.memory();
        let mut watch = lock(&self.shared.watch);
        for (qi, vring) in vrings.iter().enumerate().take(2) {
            let (snap, event_idx) = {
                let st = vring.get_ref();
                let q = st.get_queue();
                if !st.is_enabled() || !q.ready() {
                    watch[qi] = (None, false);
                    continue;
                }
                let Ok(avail) = q.avail_idx(&*mem, Ordering::Acquire) else {
                    continue;
                };
                let used_event = q
                    .event_idx_enabled()
                    .then(|| {
                        let at = q.avail_ring().checked_add(4 + 2 * u64::from(q.size()))?;
                        mem.read_obj::<u16>(GuestAddress(at)).ok().map(u16::from_le)
                    })
                    .flatten();
                let snap = QueueSnap {
                    next_avail: q.next_avail(),
                    avail_idx: avail.0,
                    next_used: q.next_used(),
                    used_event,
                };
                (snap, q.event_idx_enabled())
            };
            if watch[qi].0 != Some(snap) {
                watch[qi] = (Some(snap), false);
                continue;
            }
            if watch[qi].1 {
                // Resent once for this state already: a guest that is
                // merely slow, paused, or leaves used_event behind on
                // purpose gets one spurious notification, not one a tick.
                continue;
            }
            let kick_lost = qi == TXQ && snap.avail_idx != snap.next_avail;
            // The guest asked for an interrupt once the used index passed
            // used_event; it has (by less than half the index space).
            let irq_lost = event_idx
                && snap.used_event.is_some_and(|e| {
                    let d = snap.next_used.wrapping_sub(e);
                    d != 0 && d < 0x8000
                });
            if kick_lost {
                let _ = self.shared.wake.write(1);
            }
            if irq_lost {
                let _ = vring.signal_used_queue();
                self.shared.interrupts.fetch_add(1, Ordering::Relaxed);
            }
            if kick_lost || irq_lost {
                let n = self
                    .shared
                    .lost_notifications
                    .fetch_add(1, Ordering::Relaxed);
                if n == 0 {
                    tracing::warn!(
                        queue = if qi == TXQ { "tx" } else { "rx" },
                        "vhost-user: a notification looks lost (kick {kick_lost}, interrupt \
                         {irq_lost}: nothing moved for {WATCHDOG_PERIOD:?}) and is resent; \
                         counted as lost_notifications"
                    );
                }
                watch[qi].1 = true;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a vhost-user port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    /// The socket could not be listened on.
    #[error("cannot listen on vhost-user socket {0}: {1}")]
    Listen(String, String),
    /// The wake-up eventfd or the control thread could not be created.
    #[error("vhost-user port set-up failed: {0}")]
    Setup(io::Error),
}

pub struct VhostUserPort {
    shared: Arc<Shared>,
    /// The link state last reported to the bridge (`take_link_change`).
    reported_up: AtomicBool,
    path: PathBuf,
    mode: Mode,
    thread: Option<JoinHandle<()>>,
    /// Segmentation scratch for frames that need software offloads.
    soft: Mutex<Option<(Segments, Vec<u8>)>>,
    /// The RX buffers (head, bytes written) one frame takes, before they
    /// are published together: at most a queue's worth, allocated once.
    rx_used: Mutex<Vec<(u16, u32)>>,
}

impl VhostUserPort {
    /// Starts serving the socket at `path` (server mode: listening now;
    /// client mode: connecting in the background until it succeeds).
    pub fn open(name: &str, path: &Path, mode: Mode) -> Result<VhostUserPort, VhostError> {
        let shared = Arc::new(Shared {
            conn: Mutex::new(None),
            connected: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            wake: EventFd::new(EFD_NONBLOCK).map_err(VhostError::Setup)?,
            bad_desc: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            shutdown: Mutex::new(None),
            watch: Mutex::new([(None, false); 2]),
            lost_notifications: AtomicU64::new(0),
            kicks: AtomicU64::new(0),
            interrupts: AtomicU64::new(0),
        });
        let listener = match mode {
            Mode::Server => Some(
                Listener::new(path, true)
                    .map_err(|e| VhostError::Listen(path.display().to_string(), e.to_string()))?,
            ),
            Mode::Client => None,
        };
        let (sh, p, n) = (shared.clone(), path.to_path_buf(), name.to_string());
        let thread = std::thread::Builder::new()
            .name(format!("vhost-{name}"))
            .spawn(move || control_loop(&n, &sh, &p, listener))
            .map_err(VhostError::Setup)?;
        Ok(VhostUserPort {
            shared,
            reported_up: AtomicBool::new(true),
            path: path.to_path_buf(),
            mode,
            thread: Some(thread),
            soft: Mutex::new(None),
            rx_used: Mutex::new(Vec::with_capacity(QUEUE_MAX)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether a guest (QEMU) is connected.
    pub fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// The port's link (a guest connected) if it changed since the last
    /// call: the worker takes the bridge port up or down with it. A new
    /// port counts as up until the first look.
    pub fn take_link_change(&self) -> Option<bool> {
        let up = self.connected();
        (self.reported_up.swap(up, Ordering::Relaxed) != up).then_some(up)
    }

    /// TX chains the guest posted that were returned unread (bad address,
    /// length or direction).
    pub fn bad_descriptors(&self) -> u64 {
        self.shared.bad_desc.load(Ordering::Relaxed)
    }

    /// Kicks and interrupts between the guest and the switch that were
    /// lost and resent by the watchdog.
    pub fn lost_notifications(&self) -> u64 {
        self.shared.lost_notifications.load(Ordering::Relaxed)
    }

    /// Wake-ups by the guest's kicks on its TX queue (one may cover several
    /// kicks: the eventfd counts), and the interrupts (used-buffer
    /// notifications, both queues, the watchdog's resends too) the switch
    /// sent the guest.
    pub fn notifications(&self) -> (u64, u64) {
        (
            self.shared.kicks.load(Ordering::Relaxed),
            self.shared.interrupts.load(Ordering::Relaxed),
        )
    }

    /// The current connection's memory and vrings, if both are set up.
    fn conn(&self) -> Option<(Mem, [Vring; 2])> {
        if !self.shared.connected.load(Ordering::Acquire) {
            return None;
        }
        let c = lock(&self.shared.conn);
        let c = c.as_ref()?;
        Some((c.mem.clone(), c.vrings.clone()?))
    }
}

/// Serves connections until the port is removed.
fn control_loop(name: &str, sh: &Arc<Shared>, path: &Path, mut listener: Option<Listener>) {
    while !sh.stop.load(Ordering::Acquire) {
        let mem: Mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let timer = match TimerFd::new() {
            Ok(t) => Arc::new(Mutex::new(t)),
            Err(e) => {
                tracing::warn!(port = name, "vhost-user: timerfd: {e}");
                sleep_unless_stopped(sh);
                continue;
            }
        };
        let backend = NetBackend {
            shared: sh.clone(),
            timer: timer.clone(),
        };
        let mut daemon = match VhostUserDaemon::new(format!("vhost-{name}"), backend, mem.clone()) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(port = name, "vhost-user: {e}");
                sleep_unless_stopped(sh);
                continue;
            }
        };
        let started = match listener.as_mut() {
            Some(l) => daemon.start(l),
            None => daemon.start_client(&path.to_string_lossy()),
        };
        if let Err(e) = started {
            if listener.is_some() {
                tracing::warn!(port = name, "vhost-user accept: {e}");
            }
            exit_daemon(&daemon);
            sleep_unless_stopped(sh);
            continue;
        }
        *lock(&sh.conn) = Some(Conn { mem, vrings: None });
        *lock(&sh.watch) = [(None, false); 2];
        let armed = lock(&timer)
            .reset(WATCHDOG_PERIOD, Some(WATCHDOG_PERIOD))
            .map_err(|e| io::Error::from_raw_os_error(e.errno()));
        let watched = armed.and_then(|()| {
            let h = daemon.get_epoll_handlers();
            let h = h
                .first()
                .ok_or_else(|| io::Error::other("no epoll handler"))?;
            let fd = lock(&timer).as_raw_fd();
            h.register_listener(fd, EventSet::IN, u64::from(WATCHDOG_EVENT))
                .map_err(io::Error::other)
        });
        if let Err(e) = watched {
            tracing::warn!(
                port = name,
                "vhost-user: no lost-notification watchdog: {e}"
            );
        }
        *lock(&sh.shutdown) = daemon.shutdown_handle();
        // The port's Drop sets `stop` before it takes the handle: either it
        // found the handle, or this sees `stop`.
        if sh.stop.load(Ordering::SeqCst) {
            daemon.request_shutdown();
        }
        sh.connected.store(true, Ordering::Release);
        tracing::info!(port = name, "vhost-user: guest connected");
        let r = daemon.wait();
        sh.connected.store(false, Ordering::Release);
        *lock(&sh.shutdown) = None;
        *lock(&sh.conn) = None;
        exit_daemon(&daemon);
        tracing::info!(port = name, "vhost-user: guest disconnected ({r:?})");
    }
    if listener.is_some() {
        let _ = std::fs::remove_file(path);
    }
}

/// Stops the daemon's epoll threads.
fn exit_daemon(d: &VhostUserDaemon<NetBackend>) {
    for h in d.get_epoll_handlers() {
        h.send_exit_event();
    }
}

/// Waits about a second before the next attempt, returning early on stop.
fn sleep_unless_stopped(sh: &Shared) {
    for _ in 0..10 {
        if sh.stop.load(Ordering::Acquire) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for VhostUserPort {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = lock(&self.shared.shutdown).take() {
            h.shutdown();
        }
        if self.mode == Mode::Server {
            // Wakes an accept() in progress; the connection closes at once.
            let _ = std::os::unix::net::UnixStream::connect(&self.path);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Why a TX chain was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadChain {
    /// A descriptor the device would have to write, in a TX chain.
    WriteOnly,
    /// Outside guest memory (or across a hole in it).
    Address,
    /// Shorter than the virtio-net header, or longer than allowed.
    Length,
}

/// Copies a TX chain (device-readable descriptors) into `dst`, less the
/// first `GUEST_HDR_LEN` bytes (the guest's virtio-net header), which go to
/// `hdr`. Returns the frame length.
pub fn read_tx_chain<M>(
    mem: &M,
    descs: impl Iterator<Item = virtio_queue::desc::split::Descriptor>,
    hdr: &mut [u8; GUEST_HDR_LEN],
    dst: &mut [u8],
) -> Result<usize, BadChain>
where
    M: vm_memory::GuestMemory,
{
    let mut got = 0usize;
    let mut total = 0usize;
    let mut n = 0usize;
    for d in descs {
        if d.is_write_only() {
            return Err(BadChain::WriteOnly);
        }
        let len = d.len() as usize;
        total = total.saturating_add(len);
        if total > MAX_CHAIN_BYTES {
            return Err(BadChain::Length);
        }
        let mut addr = d.addr().0;
        let mut len = len;
        if got < GUEST_HDR_LEN {
            let s = (GUEST_HDR_LEN - got).min(len);
            mem.read_slice(&mut hdr[got..got + s], GuestAddress(addr))
                .map_err(|_| BadChain::Address)?;
            got += s;
            addr = addr.checked_add(s as u64).ok_or(BadChain::Address)?;
            len -= s;
        }
        if len == 0 {
            continue;
        }
        let out = dst.get_mut(n..n + len).ok_or(BadChain::Length)?;
        mem.read_slice(out, GuestAddress(addr))
            .map_err(|_| BadChain::Address)?;
        n += len;
    }
    if got < GUEST_HDR_LEN {
        return Err(BadChain::Length);
    }
    Ok(n)
}

/// The guest's transmit header as the switch carries it, checked against
/// what was negotiated and the frame: partial checksums inside the frame,
/// TCP GSO only, with a segment size. `None`: a header no honest guest sends.
pub fn tx_vnet(acked: u64, g: &[u8; GUEST_HDR_LEN], len: usize) -> Option<VnetHdr> {
    let mut b = [0u8; VNET_HDR_LEN];
    b.copy_from_slice(&g[..VNET_HDR_LEN]);
    let mut h = VnetHdr::parse(&b);
    h.flags &= VnetHdr::F_NEEDS_CSUM;
    if h.flags != 0 {
        let end = usize::from(h.csum_start) + usize::from(h.csum_offset) + 2;
        if !has(acked, vnet::VIRTIO_NET_F_CSUM) || end > len {
            return None;
        }
    } else {
        h.csum_start = 0;
        h.csum_offset = 0;
    }
    let (tso4, tso6) = (
        has(acked, vnet::VIRTIO_NET_F_HOST_TSO4),
        has(acked, vnet::VIRTIO_NET_F_HOST_TSO6),
    );
    // No ECN (HOST_ECN is not offered), no UDP.
    match h.gso_type {
        VnetHdr::GSO_NONE => {
            h.gso_type = VnetHdr::GSO_NONE;
            h.gso_size = 0;
            h.hdr_len = 0;
        }
        VnetHdr::GSO_TCPV4 if tso4 && h.gso_size > 0 && h.flags != 0 => {}
        VnetHdr::GSO_TCPV6 if tso6 && h.gso_size > 0 && h.flags != 0 => {}
        _ => return None,
    }
    Some(h)
}

/// Whether the guest can take a frame with header `h` as it is (the
/// offloads it needs were acked); otherwise the switch segments and
/// checksums it first.
fn guest_takes(acked: u64, h: &VnetHdr) -> bool {
    if h.flags & VnetHdr::F_NEEDS_CSUM != 0 && !has(acked, vnet::VIRTIO_NET_F_GUEST_CSUM) {
        return false;
    }
    match h.gso_type {
        VnetHdr::GSO_NONE => true,
        VnetHdr::GSO_TCPV4 => has(acked, vnet::VIRTIO_NET_F_GUEST_TSO4),
        VnetHdr::GSO_TCPV6 => has(acked, vnet::VIRTIO_NET_F_GUEST_TSO6),
        _ => false,
    }
}

/// Where the next byte of a frame's parts (the guest header first) comes
/// from, while the frame is written over one or more RX chains.
#[derive(Debug, Default, Clone, Copy)]
pub struct PartsCursor {
    part: usize,
    off: usize,
}

impl PartsCursor {
    /// Steps over exhausted (and empty) parts; true once all are written.
    fn done(&mut self, parts: &[&[u8]]) -> bool {
        while self.part < parts.len() && self.off >= parts[self.part].len() {
            self.part += 1;
            self.off = 0;
        }
        self.part >= parts.len()
    }
}

/// Writes as much of `parts` from `cur` on as fits into an RX chain's
/// device-writable descriptors, advancing `cur`. Returns the bytes written
/// into this chain, or None if the chain is bad (a device-readable
/// descriptor, or an address outside guest memory).
pub fn fill_rx_chain<M>(
    mem: &M,
    descs: impl Iterator<Item = virtio_queue::desc::split::Descriptor>,
    parts: &[&[u8]],
    cur: &mut PartsCursor,
) -> Option<usize>
where
    M: vm_memory::GuestMemory,
{
    let mut written = 0usize;
    let mut any = false;
    for d in descs {
        any = true;
        if cur.done(parts) {
            break;
        }
        if !d.is_write_only() {
            return None;
        }
        let (mut addr, mut room) = (d.addr().0, d.len() as usize);
        while room > 0 && !cur.done(parts) {
            let src = &parts[cur.part][cur.off..];
            let k = src.len().min(room);
            mem.write_slice(&src[..k], GuestAddress(addr)).ok()?;
            addr = addr.checked_add(k as u64)?;
            room -= k;
            cur.off += k;
            written += k;
        }
    }
    // A chain without a readable descriptor (a head past the table, a
    // table entry outside memory) takes nothing.
    any.then_some(written)
}

/// Writes `parts` (the guest's virtio-net header first) into one RX chain's
/// device-writable descriptors. Returns the bytes written, or None if the
/// chain is bad or too short (then nothing useful was written).
pub fn write_rx_chain<M>(
    mem: &M,
    descs: impl Iterator<Item = virtio_queue::desc::split::Descriptor>,
    parts: &[&[u8]],
) -> Option<usize>
where
    M: vm_memory::GuestMemory,
{
    let mut cur = PartsCursor::default();
    let w = fill_rx_chain(mem, descs, parts, &mut cur)?;
    cur.done(parts).then_some(w)
}

/// Offset of `num_buffers` in `virtio_net_hdr_v1`.
const NUM_BUFFERS_OFF: u64 = 10;

/// Publishes `used` (head, length) as the next used-ring elements and only
/// then moves the used index past all of them, with one release store
/// (virtio 1.1, 2.6.8): the guest sees a frame's buffers together or not
/// at all. virtio-queue's `add_used` publishes each element as it goes.
pub fn publish_used<M: vm_memory::GuestMemory>(
    mem: &M,
    q: &mut virtio_queue::Queue,
    used: &[(u16, u32)],
) -> Option<()> {
    let size = q.size();
    if used.is_empty() || size == 0 {
        return Some(());
    }
    let start = std::num::Wrapping(q.next_used());
    let ring = q.used_ring();
    for (i, &(head, len)) in used.iter().enumerate() {
        if head >= size {
            return None;
        }
        let slot = u64::from((start + std::num::Wrapping(i as u16)).0 % size);
        // Header (flags, idx: 4 bytes), then 8-byte elements.
        let addr = ring.checked_add(4 + 8 * slot)?;
        // struct virtq_used_elem { le32 id; le32 len; }
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        mem.write_slice(&elem, GuestAddress(addr)).ok()?;
    }
    let next = start + std::num::Wrapping(used.len() as u16);
    let idx = GuestAddress(ring.checked_add(2)?);
    mem.store(u16::to_le(next.0), idx, Ordering::Release).ok()?;
    q.set_next_used(next.0);
    Some(())
}

/// Writes one frame (`parts`, the guest header first; `len` bytes of frame)
/// into the next RX buffer, or with MRG_RXBUF (`mrg`: the scratch for the
/// buffers it takes) into as many as it needs, counting the outcome.
/// Returns whether buffers were used.
fn put_rx<M: vm_memory::GuestMemory>(
    mem: &M,
    q: &mut virtio_queue::Queue,
    parts: &[&[u8]],
    len: usize,
    mrg: Option<&mut Vec<(u16, u32)>>,
    stats: &mut PortStats,
) -> bool {
    let Some(bufs) = mrg else {
        let Some(chain) = q.pop_descriptor_chain(mem) else {
            stats.drop(DropReason::TxQueueFull);
            return false;
        };
        let head = chain.head_index();
        if head >= q.size() {
            // virtio-queue hands out a head past the queue as an empty
            // chain; the used ring cannot name it: it is dropped.
            stats.drop(DropReason::VhostBadDesc);
            return true;
        }
        let used_len = match write_rx_chain(mem, chain, parts) {
            Some(w) => {
                stats.tx_packets += 1;
                stats.tx_bytes += len as u64;
                w as u32
            }
            None => {
                stats.drop(DropReason::VhostBadDesc);
                0
            }
        };
        if publish_used(mem, q, &[(head, used_len)]).is_none() {
            stats.drop(DropReason::VhostBadDesc);
        }
        return true;
    };
    bufs.clear();
    let mut cur = PartsCursor::default();
    let mut num_buffers_at = None;
    let mut bad = false;
    while !cur.done(parts) {
        if bufs.len() == bufs.capacity() {
            // More buffers than a queue holds: only a broken ring gets here.
            bad = true;
            break;
        }
        let Some(chain) = q.pop_descriptor_chain(mem) else {
            // Out of buffers mid-frame: give back the ones taken (not yet
            // used, so the guest never saw them go) and drop the frame.
            for _ in 0..bufs.len() {
                q.go_to_previous_position();
            }
            stats.drop(DropReason::TxQueueFull);
            return false;
        };
        let head = chain.head_index();
        if head >= q.size() {
            // Not returnable (see above): the frame is dropped, the
            // buffers taken so far go back empty.
            bad = true;
            break;
        }
        if bufs.is_empty() {
            // The header must sit whole in the first descriptor: its
            // num_buffers is written once the count is known.
            match chain.clone().next() {
                Some(d) if d.is_write_only() && d.len() as usize >= GUEST_HDR_LEN => {
                    num_buffers_at = d.addr().0.checked_add(NUM_BUFFERS_OFF);
                }
                _ => {
                    bufs.push((head, 0));
                    bad = true;
                    break;
                }
            }
        }
        match fill_rx_chain(mem, chain, parts, &mut cur) {
            Some(w) => bufs.push((head, w as u32)),
            None => {
                bufs.push((head, 0));
                bad = true;
                break;
            }
        }
    }
    let n = bufs.len() as u16;
    let header_ok =
        num_buffers_at.is_some_and(|a| mem.write_obj(u16::to_le(n), GuestAddress(a)).is_ok());
    if bad || !header_ok {
        // Every buffer goes back empty: a guest drops a used buffer
        // shorter than a header (Linux: rx_length_errors).
        for b in bufs.iter_mut() {
            b.1 = 0;
        }
        stats.drop(DropReason::VhostBadDesc);
    } else {
        stats.tx_packets += 1;
        stats.tx_bytes += len as u64;
    }
    if publish_used(mem, q, bufs).is_none() {
        stats.drop(DropReason::VhostBadDesc);
    }
    true
}

/// Whether the guest asked not to be interrupted for this queue.
fn no_interrupt<M: vm_memory::GuestMemory>(mem: &M, q: &virtio_queue::Queue) -> bool {
    mem.read_obj::<u16>(GuestAddress(q.avail_ring()))
        .map(|f| u16::from_le(f) & AVAIL_F_NO_INTERRUPT != 0)
        .unwrap_or(false)
}

/// Signals the guest after used buffers were added, unless it opted out.
fn notify<M: vm_memory::GuestMemory>(mem: &M, st: &mut VringState<Mem>, interrupts: &AtomicU64) {
    let want = st.get_queue_mut().needs_notification(mem).unwrap_or(true);
    // With EVENT_IDX the flag is to be ignored (virtio 1.1, 2.6.7.2).
    if want && (st.get_queue().event_idx_enabled() || !no_interrupt(mem, st.get_queue())) {
        let _ = st.signal_used_queue();
        interrupts.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether the guest wants an interrupt after the used index moved from
/// `old` to the queue's next_used by [`publish_used`] (which bypasses
/// virtio-queue's own count): with EVENT_IDX, whether used_event (after the
/// avail ring) was crossed (virtio 1.1, 2.6.7.2, Linux's vring_need_event);
/// without, unless VRING_AVAIL_F_NO_INTERRUPT is set.
fn rx_needs_interrupt<M: vm_memory::GuestMemory>(
    mem: &M,
    q: &virtio_queue::Queue,
    old: u16,
) -> bool {
    let new = q.next_used();
    if new == old {
        return false;
    }
    // The used index store must be visible before the guest's flags or
    // used_event are read (the guest re-checks the index after writing
    // them, with a full barrier of its own).
    std::sync::atomic::fence(Ordering::SeqCst);
    if !q.event_idx_enabled() {
        return !no_interrupt(mem, q);
    }
    let at = q
        .avail_ring()
        .checked_add(4 + 2 * u64::from(q.size()))
        .map(GuestAddress);
    let Some(event) = at.and_then(|a| mem.read_obj::<u16>(a).ok()) else {
        return true;
    };
    let event = u16::from_le(event);
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

impl Port for VhostUserPort {
    fn fd(&self) -> RawFd {
        self.shared.wake.as_raw_fd()
    }

    fn recv(&self, frames: &mut [Frame], _sc: &mut IoScratch) -> io::Result<usize> {
        // Clear the wake-up first: a kick after this finds the chains we miss.
        let _ = self.shared.wake.read();
        let Some((mem, vrings)) = self.conn() else {
            return Ok(0);
        };
        let mem = mem.memory();
        let mut st = vrings[TXQ].get_mut();
        if !st.is_enabled() || !st.get_queue().ready() {
            return Ok(0);
        }
        let acked = self.shared.acked.load(Ordering::Acquire);
        let mut n = 0;
        let mut used = false;
        while n < frames.len() {
            let Some(chain) = st.get_queue_mut().pop_descriptor_chain(&*mem) else {
                break;
            };
            let head = chain.head_index();
            let f = &mut frames[n];
            let area = f.rx_area_vnet();
            let (hdr, body) = area.split_at_mut(VNET_HDR_LEN);
            let mut g = [0u8; GUEST_HDR_LEN];
            let ok = read_tx_chain(&*mem, chain, &mut g, body)
                .ok()
                .and_then(|len| Some((tx_vnet(acked, &g, len)?, len)));
            match ok {
                Some((h, len)) => {
                    h.emit(hdr.try_into().expect("VNET_HDR_LEN bytes"));
                    f.set_rx_len_vnet(VNET_HDR_LEN + len);
                }
                None => {
                    self.shared.bad_desc.fetch_add(1, Ordering::Relaxed);
                    // A zero-length slot: counted as malformed by the caller.
                    f.set_rx_len_vnet(0);
                }
            }
            if st.get_queue_mut().add_used(&*mem, head, 0).is_err() {
                self.shared.bad_desc.fetch_add(1, Ordering::Relaxed);
            }
            used = true;
            n += 1;
        }
        // Drained: ask for the next kick. With EVENT_IDX this publishes
        // avail_event (the guest kicks only past it); a chain that came in
        // meanwhile is found here rather than waiting for a kick that will
        // not come (virtio 1.1, 2.6.7.1).
        if n < frames.len() && matches!(st.get_queue_mut().enable_notification(&*mem), Ok(true)) {
            let _ = self.shared.wake.write(1);
        }
        if used {
            notify(&*mem, &mut st, &self.shared.interrupts);
        }
        Ok(n)
    }

    fn send(&self, frames: &[Frame], items: &[TxItem], stats: &mut PortStats, _sc: &mut IoScratch) {
        let Some((mem, vrings)) = self.conn() else {
            stats.drop_n(DropReason::TxError, items.len() as u64);
            return;
        };
        let mem = mem.memory();
        let mut st = vrings[RXQ].get_mut();
        if !st.is_enabled() || !st.get_queue().ready() {
            stats.drop_n(DropReason::TxError, items.len() as u64);
            return;
        }
        let acked = self.shared.acked.load(Ordering::Acquire);
        // virtio_net_hdr_v1 without offloads: num_buffers 1 (put_rx sets
        // the count with MRG_RXBUF).
        let mut ghdr = [0u8; GUEST_HDR_LEN];
        ghdr[NUM_BUFFERS_OFF as usize] = 1;
        let mut scratch = [0u8; EDIT_PREFIX_MAX];
        let mut rx_used = lock(&self.rx_used);
        let mut mrg = has(acked, vnet::VIRTIO_NET_F_MRG_RXBUF).then_some(&mut *rx_used);
        let old = st.get_queue().next_used();
        let mut used = false;
        for it in items {
            let f = &frames[it.idx as usize];
            let h = f.vnet();
            if offload::needs_software(&h) && !guest_takes(acked, &h) {
                // Segment and checksum here, one RX buffer per piece.
                let mut sw = lock(&self.soft);
                let (segs, flat) = sw.get_or_insert_with(|| (Segments::new(), Vec::new()));
                let count = match super::vxlan::software_pieces(f, it.edit, segs, flat) {
                    Ok(n) => n,
                    Err(_) => {
                        stats.drop(DropReason::OffloadFailed);
                        continue;
                    }
                };
                ghdr[..VNET_HDR_LEN].fill(0);
                for k in 0..count {
                    let seg = segs.get(k).unwrap_or(&[]);
                    let q = st.get_queue_mut();
                    used |= put_rx(
                        &*mem,
                        q,
                        &[&ghdr, seg],
                        seg.len(),
                        mrg.as_deref_mut(),
                        stats,
                    );
                }
                continue;
            }
            // The frame's header (offsets moved by the tag edit) goes to
            // the guest as it is: it can take these offloads.
            let (k, rest) = f.edited_prefix(it.edit, &mut scratch);
            ghdr[..VNET_HDR_LEN].copy_from_slice(&scratch[..VNET_HDR_LEN]);
            if !has(acked, vnet::VIRTIO_NET_F_GUEST_CSUM) {
                ghdr[0] = 0;
            }
            let tail = &f.data()[rest..];
            let pre = &scratch[VNET_HDR_LEN..k];
            used |= put_rx(
                &*mem,
                st.get_queue_mut(),
                &[&ghdr, pre, tail],
                pre.len() + tail.len(),
                mrg.as_deref_mut(),
                stats,
            );
        }
        if used && rx_needs_interrupt(&*mem, st.get_queue(), old) {
            let _ = st.signal_used_queue();
            self.shared.interrupts.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn is_gone(&self, _err: &io::Error) -> bool {
        false
    }

    /// Whether the guest made TX chains available that were not popped yet
    /// (the avail index, read from guest memory: no syscall), so that a
    /// spinning worker sees them without waiting for the kick's relay.
    fn peek(&self) -> Option<bool> {
        let Some((mem, vrings)) = self.conn() else {
            return Some(false);
        };
        let st = vrings[TXQ].get_ref();
        let q = st.get_queue();
        if !st.is_enabled() || !q.ready() {
            return Some(false);
        }
        let mem = mem.memory();
        Some(
            q.avail_idx(&*mem, std::sync::atomic::Ordering::Acquire)
                .is_ok_and(|i| i.0 != q.next_avail()),
        )
    }

    fn caps(&self) -> Caps {
        // Super-frames are accepted (passed whole to a guest that acked
        // the offloads, segmented here otherwise).
        Caps { vnet_hdr: true }
    }

    fn kernel_drops(&self) -> u64 {
        0
    }
}

/// For the fuzz target: `image` as the first 64 KiB of guest memory, a
/// split virtqueue of `qsize` entries over it (descriptors at 0, avail ring
/// at 0x1000, used ring at 0x2000), and every chain the guest made
/// available read as a TX chain (even heads) or filled as an RX chain (odd
/// ones), as the port does. Returns (chains, frame bytes) and must never
/// panic or hang, whatever the image holds.
pub fn fuzz_rings(image: &[u8], qsize: u16, acked: u64) -> (usize, usize) {
    use virtio_queue::Queue;
    const SIZE: usize = 0x10000;
    let Ok(m) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), SIZE)]) else {
        return (0, 0);
    };
    let n = image.len().min(SIZE);
    if m.write_slice(&image[..n], GuestAddress(0)).is_err() {
        return (0, 0);
    }
    let Ok(mut q) = Queue::new(QUEUE_MAX as u16) else {
        return (0, 0);
    };
    q.set_size(qsize);
    q.set_desc_table_address(Some(0), Some(0));
    q.set_avail_ring_address(Some(0x1000), Some(0));
    q.set_used_ring_address(Some(0x2000), Some(0));
    q.set_ready(true);
    if !q.is_valid(&m) {
        return (0, 0);
    }
    let mut dst = vec![0u8; crate::packet::MAX_FRAME];
    let frame = vec![0x5au8; 1514];
    let ghdr = [0u8; GUEST_HDR_LEN];
    let mut bufs = Vec::with_capacity(QUEUE_MAX);
    let mut stats = PortStats::default();
    let mrg = has(acked, vnet::VIRTIO_NET_F_MRG_RXBUF);
    let (mut chains, mut bytes) = (0, 0);
    // At most one pass over the ring and a bit: a guest cannot make the
    // switch loop (the avail index bounds what is popped). Turns alternate
    // between reading a TX chain and writing a frame as RX buffers.
    for turn in 0..(2 * usize::from(qsize) + 2) {
        if turn % 2 == 0 {
            let Some(chain) = q.pop_descriptor_chain(&m) else {
                break;
            };
            let head = chain.head_index();
            chains += 1;
            let mut g = [0u8; GUEST_HDR_LEN];
            if let Ok(len) = read_tx_chain(&m, chain, &mut g, &mut dst) {
                assert!(len <= MAX_CHAIN_BYTES);
                let _ = tx_vnet(acked, &g, len);
                bytes += len;
            }
            let _ = q.add_used(&m, head, 0);
        } else {
            let before = (q.next_avail(), q.next_used(), stats.tx_packets);
            let parts: [&[u8]; 2] = [&ghdr, &frame];
            let took = put_rx(
                &m,
                &mut q,
                &parts,
                frame.len(),
                mrg.then_some(&mut bufs),
                &mut stats,
            );
            if !took {
                // Nothing taken: the ring is as it was.
                assert_eq!((q.next_avail(), q.next_used()), (before.0, before.1));
                break;
            }
            // Every chain taken is returned, but for a head past the
            // queue (the last one taken, if any), which the used ring
            // cannot name.
            let n = q.next_avail().wrapping_sub(before.0);
            let u = q.next_used().wrapping_sub(before.1);
            assert!(u == n || u + 1 == n, "{n} taken, {u} returned");
            chains += usize::from(n);
            if stats.tx_packets > before.2 {
                bytes += frame.len();
            }
        }
    }
    (chains, bytes)
}

#[cfg(test)]
mod tests {
    //! The descriptor handling over crafted guest memory: a hand-built
    //! split virtqueue (virtio 1.1, 2.6) whose chains point outside memory,
    //! overflow, loop or have the wrong direction.

    use super::*;
    use virtio_queue::Queue;

    const MEM: u64 = 0x10000;
    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    const QSIZE: u16 = 16;
    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap()
    }

    fn queue() -> Queue {
        let mut q = Queue::new(QSIZE).unwrap();
        q.set_size(QSIZE);
        q.set_desc_table_address(Some(DESC as u32), Some(0));
        q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        q.set_used_ring_address(Some(USED as u32), Some(0));
        q.set_ready(true);
        q
    }

    /// Descriptor `i`: address, length, flags, next.
    fn desc(m: &GuestMemoryMmap, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let base = DESC + 16 * u64::from(i);
        m.write_obj(addr.to_le(), GuestAddress(base)).unwrap();
        m.write_obj(len.to_le(), GuestAddress(base + 8)).unwrap();
        m.write_obj(flags.to_le(), GuestAddress(base + 12)).unwrap();
        m.write_obj(next.to_le(), GuestAddress(base + 14)).unwrap();
    }

    /// Makes `heads` available, in order.
    fn offer(m: &GuestMemoryMmap, heads: &[u16]) {
        for (k, h) in heads.iter().enumerate() {
            m.write_obj(h.to_le(), GuestAddress(AVAIL + 4 + 2 * k as u64))
                .unwrap();
        }
        m.write_obj((heads.len() as u16).to_le(), GuestAddress(AVAIL + 2))
            .unwrap();
    }

    fn tx(m: &GuestMemoryMmap, q: &mut Queue, dst: &mut [u8]) -> Result<usize, BadChain> {
        let chain = q.pop_descriptor_chain(m).expect("a chain is available");
        let mut hdr = [0u8; GUEST_HDR_LEN];
        read_tx_chain(m, chain, &mut hdr, dst)
    }

    #[test]
    fn tx_chain_good_and_bad() {
        let m = mem();
        let mut q = queue();
        let frame: Vec<u8> = (0..60u8).collect();
        m.write_slice(&[0u8; GUEST_HDR_LEN], GuestAddress(0x4000))
            .unwrap();
        m.write_slice(&frame, GuestAddress(0x5000)).unwrap();
        // 0: header and frame in two descriptors.
        desc(&m, 0, 0x4000, GUEST_HDR_LEN as u32, F_NEXT, 1);
        desc(&m, 1, 0x5000, 60, 0, 0);
        // 2: outside guest memory.
        desc(&m, 2, 0xffff_0000_0000, 100, 0, 0);
        // 3: across the end of guest memory.
        desc(&m, 3, MEM - 20, 100, 0, 0);
        // 4: a length that would overflow everything.
        desc(&m, 4, 0x4000, u32::MAX, 0, 0);
        // 5: device-writable, in a TX chain.
        desc(&m, 5, 0x4000, 100, F_WRITE, 0);
        // 6: shorter than the virtio-net header.
        desc(&m, 6, 0x4000, 8, 0, 0);
        // 7: a loop onto itself, each pass 5000 bytes (more than a
        // super-frame before the queue size ends it).
        desc(&m, 7, 0x4000, 5000, F_NEXT, 7);
        // 8: a next index beyond the queue (the chain just ends there).
        desc(&m, 8, 0x4000, GUEST_HDR_LEN as u32 + 14, F_NEXT, 999);
        offer(&m, &[0, 2, 3, 4, 5, 6, 7, 8]);

        let mut dst = vec![0u8; 65536];
        assert_eq!(tx(&m, &mut q, &mut dst), Ok(60));
        assert_eq!(&dst[..60], &frame[..]);
        assert_eq!(tx(&m, &mut q, &mut dst), Err(BadChain::Address));
        assert_eq!(tx(&m, &mut q, &mut dst), Err(BadChain::Address));
        assert_eq!(tx(&m, &mut q, &mut dst), Err(BadChain::Length));
        assert_eq!(tx(&m, &mut q, &mut dst), Err(BadChain::WriteOnly));
        assert_eq!(tx(&m, &mut q, &mut dst), Err(BadChain::Length));
        assert_eq!(tx(&m, &mut q, &mut dst), Err(BadChain::Length));
        assert_eq!(tx(&m, &mut q, &mut dst), Ok(14));
        assert!(q.pop_descriptor_chain(&m).is_none(), "all consumed");
    }

    #[test]
    fn tx_loop_is_bounded_by_the_queue_size() {
        let m = mem();
        let mut q = queue();
        // Small descriptors looping: virtio-queue stops after QSIZE of them.
        desc(&m, 0, 0x4000, 100, F_NEXT, 0);
        offer(&m, &[0]);
        let mut dst = vec![0u8; 65536];
        let n = tx(&m, &mut q, &mut dst).unwrap();
        assert_eq!(n, 100 * usize::from(QSIZE) - GUEST_HDR_LEN);
        // A frame buffer too small for the chain is a length error, not a
        // panic.
        offer(&m, &[0, 0]);
        let mut small = vec![0u8; 200];
        assert_eq!(tx(&m, &mut q, &mut small), Err(BadChain::Length));
    }

    #[test]
    fn bogus_avail_index_yields_nothing() {
        let m = mem();
        let mut q = queue();
        desc(&m, 0, 0x4000, 100, 0, 0);
        // More entries claimed than the queue holds.
        m.write_obj(1000u16.to_le(), GuestAddress(AVAIL + 2))
            .unwrap();
        assert!(q.pop_descriptor_chain(&m).is_none());
        // A head index beyond the queue.
        let mut q = queue();
        m.write_obj(500u16.to_le(), GuestAddress(AVAIL + 4))
            .unwrap();
        m.write_obj(1u16.to_le(), GuestAddress(AVAIL + 2)).unwrap();
        let n = q.pop_descriptor_chain(&m).map(|c| c.count()).unwrap_or(0);
        assert_eq!(n, 0, "no descriptor read for a head beyond the queue");
    }

    #[test]
    fn rx_chain_good_and_bad() {
        let m = mem();
        let mut q = queue();
        let hdr = [0u8; GUEST_HDR_LEN];
        let frame = [0xabu8; 64];
        // 0: one writable buffer, large enough.
        desc(&m, 0, 0x6000, 2048, F_WRITE, 0);
        // 1: two writable buffers splitting header and frame mid-way.
        desc(&m, 1, 0x7000, 20, F_WRITE | F_NEXT, 2);
        desc(&m, 2, 0x7100, 100, F_WRITE, 0);
        // 3: read-only (the device may not write it).
        desc(&m, 3, 0x6000, 2048, 0, 0);
        // 4: too short for the frame.
        desc(&m, 4, 0x6000, 30, F_WRITE, 0);
        // 5: outside guest memory.
        desc(&m, 5, 0xffff_0000_0000, 2048, F_WRITE, 0);
        offer(&m, &[0, 1, 3, 4, 5]);
        let put = |q: &mut Queue| {
            let c = q.pop_descriptor_chain(&m).unwrap();
            write_rx_chain(&m, c, &[&hdr, &frame])
        };
        assert_eq!(put(&mut q), Some(GUEST_HDR_LEN + 64));
        let mut back = [0u8; 64];
        m.read_slice(&mut back, GuestAddress(0x6000 + GUEST_HDR_LEN as u64))
            .unwrap();
        assert_eq!(back, frame);
        assert_eq!(put(&mut q), Some(GUEST_HDR_LEN + 64));
        let mut b1 = [0u8; 8];
        m.read_slice(&mut b1, GuestAddress(0x7000 + 12)).unwrap();
        assert_eq!(b1, [0xab; 8]);
        assert_eq!(put(&mut q), None);
        assert_eq!(put(&mut q), None);
        assert_eq!(put(&mut q), None);
    }

    /// The used ring's index and element `k` (head, length).
    fn used_idx(m: &GuestMemoryMmap) -> u16 {
        u16::from_le(m.read_obj(GuestAddress(USED + 2)).unwrap())
    }

    fn used_elem(m: &GuestMemoryMmap, k: u64) -> (u32, u32) {
        let at = USED + 4 + 8 * k;
        let id: u32 = m.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = m.read_obj(GuestAddress(at + 4)).unwrap();
        (u32::from_le(id), u32::from_le(len))
    }

    /// Descriptors 0..n: one-descriptor 512-byte writable buffers at
    /// 0x6000, 0x6200, ..., as Linux posts them with MRG_RXBUF.
    fn small_buffers(m: &GuestMemoryMmap, n: u16) {
        for i in 0..n {
            desc(m, i, 0x6000 + 0x200 * u64::from(i), 512, F_WRITE, 0);
        }
    }

    /// A frame of `n` bytes with a recognisable pattern.
    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    /// A queue over fresh guest memory and the port's receive state, the
    /// guest having acked MRG_RXBUF.
    struct Rx {
        m: GuestMemoryMmap,
        q: Queue,
        bufs: Vec<(u16, u32)>,
        st: PortStats,
    }

    impl Rx {
        fn new() -> Rx {
            Rx {
                m: mem(),
                q: queue(),
                bufs: Vec::with_capacity(QUEUE_MAX),
                st: PortStats::default(),
            }
        }

        /// Writes `frame` behind a virtio-net header, as `send` does.
        fn put(&mut self, frame: &[u8]) -> bool {
            let mut ghdr = [0u8; GUEST_HDR_LEN];
            ghdr[NUM_BUFFERS_OFF as usize] = 1;
            let parts: [&[u8]; 2] = [&ghdr, frame];
            let (q, bufs, st) = (&mut self.q, &mut self.bufs, &mut self.st);
            put_rx(&self.m, q, &parts, frame.len(), Some(bufs), st)
        }

        fn num_buffers(&self, at: u64) -> u16 {
            u16::from_le(self.m.read_obj(GuestAddress(at + NUM_BUFFERS_OFF)).unwrap())
        }
    }

    #[test]
    fn mrg_rxbuf_spreads_a_frame_and_publishes_it_at_once() {
        let mut r = Rx::new();
        small_buffers(&r.m, 4);
        offer(&r.m, &[0, 1, 2, 3]);
        let frame = pattern(1200);
        assert!(r.put(&frame));
        // 12 + 1200 bytes: 512 + 512 + 188, three buffers, one index store.
        assert_eq!(used_idx(&r.m), 3);
        assert_eq!((r.q.next_used(), r.q.next_avail()), (3, 3));
        assert_eq!(used_elem(&r.m, 0), (0, 512));
        assert_eq!(used_elem(&r.m, 1), (1, 512));
        assert_eq!(used_elem(&r.m, 2), (2, 188));
        assert_eq!(r.num_buffers(0x6000), 3);
        let mut back = vec![0u8; 3 * 512];
        r.m.read_slice(&mut back, GuestAddress(0x6000)).unwrap();
        assert_eq!(&back[GUEST_HDR_LEN..GUEST_HDR_LEN + 1200], &frame[..]);
        assert_eq!((r.st.tx_packets, r.st.tx_bytes), (1, 1200));
        // A small frame takes one buffer and says so.
        assert!(r.put(&frame[..60]));
        assert_eq!(used_idx(&r.m), 4);
        assert_eq!(used_elem(&r.m, 3), (3, 72));
        assert_eq!(r.num_buffers(0x6600), 1);
    }

    #[test]
    fn mrg_rxbuf_out_of_buffers_gives_them_back() {
        let mut r = Rx::new();
        small_buffers(&r.m, 3);
        offer(&r.m, &[0, 1]);
        let frame = pattern(1200);
        // Two buffers for a frame needing three: nothing used, nothing lost.
        assert!(!r.put(&frame));
        assert_eq!(
            (r.q.next_avail(), r.q.next_used(), used_idx(&r.m)),
            (0, 0, 0)
        );
        assert_eq!(r.st.drops[DropReason::TxQueueFull as usize], 1);
        assert_eq!(r.st.tx_packets, 0);
        // The guest posts the third: the same buffers carry the next frame.
        offer(&r.m, &[0, 1, 2]);
        assert!(r.put(&frame));
        assert_eq!(used_idx(&r.m), 3);
        assert_eq!(used_elem(&r.m, 0), (0, 512));
        assert_eq!(r.st.tx_packets, 1);
    }

    #[test]
    fn mrg_rxbuf_bad_buffers_go_back_empty() {
        let mut r = Rx::new();
        let frame = pattern(1200);
        // 0 good, 1 read-only: both returned with length 0.
        desc(&r.m, 0, 0x6000, 512, F_WRITE, 0);
        desc(&r.m, 1, 0x6200, 512, 0, 0);
        // 2: the first buffer shorter than the header.
        desc(&r.m, 2, 0x6400, 8, F_WRITE, 0);
        // 3: outside guest memory.
        desc(&r.m, 3, 0xffff_0000_0000, 4096, F_WRITE, 0);
        offer(&r.m, &[0, 1, 2, 3]);
        assert!(r.put(&frame));
        assert_eq!(used_idx(&r.m), 2);
        assert_eq!((used_elem(&r.m, 0), used_elem(&r.m, 1)), ((0, 0), (1, 0)));
        assert!(r.put(&frame));
        assert_eq!((used_idx(&r.m), used_elem(&r.m, 2)), (3, (2, 0)));
        assert!(r.put(&frame));
        assert_eq!((used_idx(&r.m), used_elem(&r.m, 3)), (4, (3, 0)));
        assert_eq!(r.st.drops[DropReason::VhostBadDesc as usize], 3);
        assert_eq!(r.st.tx_packets, 0);
    }

    #[test]
    fn rx_heads_past_the_queue_are_dropped_not_returned() {
        let mut r = Rx::new();
        small_buffers(&r.m, 1);
        // Buffer 0, then a head past the 16-entry queue mid-frame: the
        // frame is dropped, buffer 0 goes back empty, the bad head is not
        // named in the used ring.
        offer(&r.m, &[0, 99]);
        assert!(r.put(&pattern(1200)));
        assert_eq!(
            (r.q.next_avail(), r.q.next_used(), used_idx(&r.m)),
            (2, 1, 1)
        );
        assert_eq!(used_elem(&r.m, 0), (0, 0));
        assert_eq!(r.st.drops[DropReason::VhostBadDesc as usize], 1);
        assert_eq!(r.st.tx_packets, 0);
        // Without MRG_RXBUF: the same, counted once.
        offer(&r.m, &[0, 99, 99]);
        let ghdr = [0u8; GUEST_HDR_LEN];
        assert!(put_rx(
            &r.m,
            &mut r.q,
            &[&ghdr, &[1u8; 60]],
            60,
            None,
            &mut r.st
        ));
        assert_eq!((r.q.next_avail(), used_idx(&r.m)), (3, 1));
        assert_eq!(r.st.drops[DropReason::VhostBadDesc as usize], 2);
    }

    #[test]
    fn rx_interrupt_follows_used_event() {
        let mut r = Rx::new();
        small_buffers(&r.m, 4);
        offer(&r.m, &[0, 1, 2, 3]);
        assert!(
            !rx_needs_interrupt(&r.m, &r.q, 0),
            "nothing used, no interrupt"
        );
        assert!(r.put(&pattern(1200)));
        // Without EVENT_IDX: unless the guest set VRING_AVAIL_F_NO_INTERRUPT.
        assert!(rx_needs_interrupt(&r.m, &r.q, 0));
        r.m.write_obj(AVAIL_F_NO_INTERRUPT.to_le(), GuestAddress(AVAIL))
            .unwrap();
        assert!(!rx_needs_interrupt(&r.m, &r.q, 0));
        // With EVENT_IDX: when the used index crossed used_event (0..3).
        r.q.set_event_idx(true);
        let used_event = GuestAddress(AVAIL + 4 + 2 * u64::from(QSIZE));
        for (event, want) in [(0u16, true), (2, true), (3, false), (9, false)] {
            r.m.write_obj(event.to_le(), used_event).unwrap();
            assert_eq!(
                rx_needs_interrupt(&r.m, &r.q, 0),
                want,
                "used_event {event}"
            );
        }
    }

    #[test]
    fn fuzz_entry_point_runs() {
        // An empty image: nothing available. A ring of junk: no panic.
        assert_eq!(fuzz_rings(&[], 16, OFFLOADS).0, 0);
        let junk: Vec<u8> = (0..0x3000u32)
            .map(|i| i.wrapping_mul(2_654_435_761) as u8)
            .collect();
        let _ = fuzz_rings(&junk, 16, OFFLOADS);
        let _ = fuzz_rings(&junk, 256, 0);
    }

    #[test]
    fn guest_headers_are_checked() {
        let all = OFFLOADS;
        let hdr = |flags: u8, gso: u8, gso_size: u16, start: u16, off: u16| {
            let mut g = [0u8; GUEST_HDR_LEN];
            let h = VnetHdr {
                flags,
                gso_type: gso,
                hdr_len: 54,
                gso_size,
                csum_start: start,
                csum_offset: off,
            };
            h.emit((&mut g[..VNET_HDR_LEN]).try_into().unwrap());
            g
        };
        let csum = VnetHdr::F_NEEDS_CSUM;
        // Plain, partial checksum, TSO: accepted when negotiated.
        assert!(tx_vnet(0, &hdr(0, 0, 0, 0, 0), 60).is_some());
        assert!(tx_vnet(all, &hdr(csum, 0, 0, 34, 16), 60).is_some());
        let h = tx_vnet(all, &hdr(csum, VnetHdr::GSO_TCPV4, 1448, 34, 16), 9000).unwrap();
        assert!(h.is_gso());
        // Not negotiated.
        assert!(tx_vnet(0, &hdr(csum, 0, 0, 34, 16), 60).is_none());
        assert!(tx_vnet(
            1 << vnet::VIRTIO_NET_F_CSUM,
            &hdr(csum, 1, 1448, 34, 16),
            9000
        )
        .is_none());
        // Checksum field outside the frame.
        assert!(tx_vnet(all, &hdr(csum, 0, 0, 60, 16), 60).is_none());
        assert!(tx_vnet(all, &hdr(csum, 0, 0, u16::MAX, u16::MAX), 60).is_none());
        // GSO without a segment size, without a partial checksum, UDP, ECN.
        assert!(tx_vnet(all, &hdr(csum, VnetHdr::GSO_TCPV4, 0, 34, 16), 9000).is_none());
        assert!(tx_vnet(all, &hdr(0, VnetHdr::GSO_TCPV4, 1448, 0, 0), 9000).is_none());
        assert!(tx_vnet(all, &hdr(csum, VnetHdr::GSO_UDP, 1448, 34, 6), 9000).is_none());
        let ecn = VnetHdr::GSO_TCPV4 | VnetHdr::GSO_ECN;
        assert!(tx_vnet(all, &hdr(csum, ecn, 1448, 34, 16), 9000).is_none());
        // Stray flags and offsets are cleared.
        let h = tx_vnet(all, &hdr(0xfe, 0, 0, 7, 9), 60).unwrap();
        assert_eq!((h.flags, h.csum_start, h.csum_offset), (0, 0, 0));
    }
}
