//! One worker: polls the ports it owns, forwards their frames in batches.

use super::tables::Tables;
use super::{lock, Shared, BATCH, MAX_PORTS};
use crate::bridge::PortId;
use crate::packet::Batch;
use crate::pipeline::{self, Plan};
use crate::port::{AnyPort, IoScratch, Port, TxItem};
use crate::stats::{DropReason, PortStats};
use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAKER: Token = Token(usize::MAX);
/// Spanning-tree timers run at this period (802.1D timers have 1 s or 1/256 s
/// granularity; Linux ticks its own at HZ).
const TIMER_PERIOD_NS: u64 = 100_000_000;
/// A worker spinning over ring ports only asks epoll once in this many loop
/// turns (each a few µs at most): control messages wait that long at worst.
const POLL_EVERY_TURNS: u32 = 64;
/// Each timer period ages this part of every FDB: a whole round a second,
/// in short lock holds (a full sweep of a million entries takes ~10 ms).
const AGEING_PARTS: usize = (1_000_000_000 / TIMER_PERIOD_NS) as usize;
/// Frames the switch may originate per batch or timer run (ARP, ICMP,
/// packets released from the ARP queue).
const ORIG_FRAMES: usize = 32;
/// VXLAN ports' underlay addresses are checked once in this many timer
/// periods (1 s).
const LOCAL_CHECK_TICKS: u64 = 10;

/// The busy-poll window after a wake-up that came `gap` ns after the last
/// frame (see `Worker::adapt_busy_poll`).
fn next_busy_window(cur: u64, gap: u64, min: u64, max: u64) -> u64 {
    if gap < max {
        cur.max(gap.saturating_add(gap / 4).min(max))
    } else {
        (cur / 2).max(min)
    }
}

pub(crate) enum WorkerMsg {
    /// Start receiving on this port.
    Attach(PortId, Arc<AnyPort>),
    /// Stop receiving on it and let go; answer when done.
    Detach(PortId, Sender<()>),
    Shutdown,
}

pub(crate) struct Worker {
    id: usize,
    poll: Poll,
    inbox: Receiver<WorkerMsg>,
    shared: Arc<Shared>,
    stats: Arc<Mutex<Vec<PortStats>>>,
    /// Ports this worker receives on, by PortId.
    rx: Vec<Option<Arc<AnyPort>>>,
    queued: Vec<bool>,
    ready: VecDeque<PortId>,
    /// Of the ports above, those that can say without a syscall whether
    /// frames wait (`Port::peek`), and how many cannot.
    peekable: Vec<PortId>,
    unpeekable: usize,
    /// Loop turns since the last epoll_wait.
    turns_since_poll: u32,
    batch: Batch,
    /// Where the current batch goes (and what the switch originates).
    plan: Plan,
    /// The output ports of the plan, taken under the lock.
    txio: Vec<Option<Arc<AnyPort>>>,
    scratch: IoScratch,
    clock: Instant,
    /// Spin window bounds and the current (adaptive) window.
    busy_min_ns: u64,
    busy_max_ns: u64,
    busy_ns: u64,
    /// The last poll blocked (the worker slept) before frames came.
    slept: bool,
    /// Holds spinning off while other tasks wait for a CPU.
    pressure: super::pressure::PressureGate,
    /// The last sleep was the gate's doing, not a short spin window.
    held: bool,
    last_rx_ns: u64,
    next_timer_ns: u64,
    /// BPDUs the timers produced, and one frame buffer to send them from.
    bpdus: Vec<(PortId, Vec<u8>)>,
    bpdu_io: Vec<(PortId, Arc<AnyPort>, Vec<u8>)>,
    /// Ports whose last receive error was not final (an AF_PACKET socket's
    /// ENETDOWN when its interface is set down, or while it is being
    /// deleted: it may still exist at that instant, and a socket reports
    /// nothing more when a down interface goes). Asked again every timer
    /// period until the device is gone or frames come again.
    suspect: Vec<(PortId, Option<i32>, io::ErrorKind)>,
    ctl_frame: crate::packet::Frame,
    /// Timer periods run so far.
    ticks: u64,
    /// The bridges' event logs are on (someone listened at the last look).
    monitoring: bool,
    stp_seen: super::monitor::render::StpSeen,
}

impl Worker {
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        stats: Arc<Mutex<Vec<PortStats>>>,
        busy_poll: (u64, u64),
        clock: Instant,
    ) -> io::Result<(Worker, Sender<WorkerMsg>, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let w = Worker {
            id,
            poll,
            inbox: rx,
            shared,
            stats,
            rx: (0..MAX_PORTS).map(|_| None).collect(),
            queued: vec![false; MAX_PORTS],
            ready: VecDeque::with_capacity(MAX_PORTS),
            peekable: Vec::new(),
            unpeekable: 0,
            turns_since_poll: 0,
            batch: Batch::new(BATCH),
            plan: Plan::new(MAX_PORTS, BATCH, ORIG_FRAMES),
            txio: (0..MAX_PORTS).map(|_| None).collect(),
            scratch: IoScratch::default(),
            clock,
            busy_min_ns: busy_poll.0.saturating_mul(1000),
            busy_max_ns: busy_poll.1.max(busy_poll.0).saturating_mul(1000),
            busy_ns: busy_poll.0.saturating_mul(1000),
            slept: false,
            pressure: if busy_poll.0 == super::SPIN_ALWAYS {
                super::pressure::PressureGate::off()
            } else {
                super::pressure::PressureGate::open()
            },
            held: false,
            last_rx_ns: 0,
            next_timer_ns: TIMER_PERIOD_NS,
            bpdus: Vec::new(),
            bpdu_io: Vec::new(),
            suspect: Vec::new(),
            ctl_frame: crate::packet::Frame::new(),
            ticks: 0,
            monitoring: false,
            stp_seen: Default::default(),
        };
        Ok((w, tx, waker))
    }

    fn now_ns(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let now = self.now_ns();
            let mut busy = now.saturating_sub(self.last_rx_ns) < self.busy_ns;
            self.held = false;
            if busy {
                // Not while other tasks wait for a CPU (engine/pressure.rs).
                let (hold, began) = self.pressure.holds_off(now);
                if began {
                    self.shared.worker_counters[self.id].pressure_backoff();
                }
                busy = !hold;
                self.held = hold;
            }
            self.slept = self.ready.is_empty() && !busy;
            let impairing = self.id == 0
                && self
                    .shared
                    .impair_on
                    .load(std::sync::atomic::Ordering::Relaxed);
            let timeout = if self.slept && impairing {
                // Impaired queues are released at millisecond steps.
                Duration::from_millis(1)
            } else if self.slept {
                Duration::from_nanos(self.next_timer_ns.saturating_sub(now).max(1_000_000))
            } else {
                Duration::ZERO
            };
            if !self.slept
                && self.unpeekable == 0
                && !self.peekable.is_empty()
                && self.turns_since_poll < POLL_EVERY_TURNS
            {
                // Spinning over rings only: look at them directly, a load
                // each, instead of an epoll_wait per turn. Epoll is still
                // asked every POLL_EVERY_TURNS turns, for control messages
                // and device errors, and whenever the worker would sleep.
                self.turns_since_poll += 1;
                events.clear();
                for k in 0..self.peekable.len() {
                    let pid = self.peekable[k];
                    let waiting = self.rx[pid as usize]
                        .as_ref()
                        .is_some_and(|io| io.peek() == Some(true));
                    if waiting {
                        self.mark_ready(pid);
                    }
                }
            } else {
                self.turns_since_poll = 0;
                if !timeout.is_zero() {
                    self.shared.worker_counters[self.id].slept();
                }
                if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                    if e.kind() != io::ErrorKind::Interrupted {
                        tracing::error!(worker = self.id, "poll failed: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    continue;
                }
            }
            if events.is_empty() && self.ready.is_empty() && !self.slept {
                // Spinning with nothing to do: let any task waiting for this
                // CPU run first. Without this, a host process woken onto this
                // CPU (often by the frame we just delivered: wake-affine)
                // waits for the spinner's whole time slice, and 1 % of ping
                // round trips took 4.6 ms instead of 30 µs. With nobody
                // waiting, sched_yield returns at once.
                std::thread::yield_now();
            }
            let mut ctl = false;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    ctl = true;
                    continue;
                }
                let pid = ev.token().0 as PortId;
                if ev.is_error() {
                    if let Some(io) = self.rx.get(pid as usize).and_then(Option::as_ref) {
                        io.error_event();
                    }
                }
                self.mark_ready(pid);
            }
            if ctl && !self.drain_inbox() {
                return;
            }
            let now = self.now_ns();
            let frames_before = self.shared.worker_counters[self.id].frames();
            // One batch per ready port per turn: fair between busy ports.
            for _ in 0..self.ready.len() {
                let Some(pid) = self.ready.pop_front() else {
                    break;
                };
                if self.rx_port(pid, now) {
                    self.ready.push_back(pid);
                } else {
                    self.queued[pid as usize] = false;
                }
            }
            let counters = &self.shared.worker_counters[self.id];
            if counters.frames() != frames_before {
                counters.busy(self.now_ns().saturating_sub(now));
            }
            if impairing {
                self.release_impaired(now);
            }
            if now >= self.next_timer_ns {
                self.recheck_suspects();
                if self.id == 0 {
                    self.timers(now);
                }
                self.next_timer_ns = now + TIMER_PERIOD_NS;
            }
        }
    }

    /// Bridge timers, run by one worker: spanning tree every period (BPDUs
    /// it emits are sent after the lock is released) and a part of FDB ageing.
    fn timers(&mut self, now: u64) {
        self.ticks += 1;
        // vhost-user links every period (an atomic load each), VXLAN
        // underlay addresses once a second (a bind each).
        self.check_links(self.ticks.is_multiple_of(LOCAL_CHECK_TICKS));
        let listening = self.shared.monitor.listening();
        let mut events = Vec::new();
        {
            let mut t = self.shared.tables();
            if listening || self.monitoring {
                events = super::monitor::render::drain(&mut t, listening, &mut self.stp_seen);
                self.monitoring = listening;
            }
            let Tables { bridges, ports, .. } = &mut *t;
            for b in bridges.iter_mut().flatten() {
                if b.stp.is_some() {
                    b.stp_tick(now, &mut self.bpdus);
                    for (pid, frame) in self.bpdus.drain(..) {
                        if let Some(e) = ports.get(pid as usize).and_then(Option::as_ref) {
                            self.bpdu_io.push((pid, e.io.clone(), frame));
                        }
                    }
                }
                b.fdb.age_part(now, AGEING_PARTS);
            }
        }
        if !events.is_empty() || listening {
            self.shared.monitor.publish(events);
        }
        // The router's timers under its own lock; what they send goes
        // through the bridges under theirs.
        let shared = self.shared.clone();
        let stats = self.stats.clone();
        let sends = {
            let mut r = lock(&shared.router);
            pipeline::router_timers(&mut r, now, &mut lock(&stats), &mut self.plan)
        };
        if sends {
            let mut guard = shared.tables();
            let t: &mut Tables = &mut guard;
            pipeline::egress_phase(&mut t.switch(), &[], now, &mut lock(&stats), &mut self.plan);
            self.take_txio(t);
        }
        self.flush(0..0);
        if self.bpdu_io.is_empty() {
            return;
        }
        let mut st = lock(&self.stats);
        let item = [TxItem {
            idx: 0,
            edit: crate::bridge::vlan::TagEdit::None,
            peer: 0,
        }];
        for (pid, io, frame) in self.bpdu_io.drain(..) {
            self.ctl_frame.set_from_bytes(&frame);
            io.send(
                std::slice::from_ref(&self.ctl_frame),
                &item,
                &mut st[pid as usize],
                &mut self.scratch,
            );
        }
    }

    /// Looks whether each vhost-user port has its guest and, with `vxlan`,
    /// whether each VXLAN port's underlay address is on an interface (a
    /// bind each, outside the lock), and takes the ports whose answer
    /// changed up or down.
    fn check_links(&mut self, vxlan: bool) {
        let ports = self.shared.tables().link_watched_ports();
        // One bind per address, however many ports (VNIs) use it.
        let mut present: hashbrown::HashMap<std::net::IpAddr, bool> = hashbrown::HashMap::new();
        let changed: Vec<(PortId, &Arc<AnyPort>, bool)> = ports
            .iter()
            .filter_map(|(pid, io)| match &**io {
                AnyPort::Vxlan(x) if vxlan => {
                    let ip = x.local().ip();
                    let up = *present
                        .entry(ip)
                        .or_insert_with(|| crate::port::vxlan::underlay::is_local(ip));
                    x.set_local_up(up).then_some((*pid, io, up))
                }
                // A vhost-user port is up while a guest is connected.
                AnyPort::VhostUser(x) => x.take_link_change().map(|up| (*pid, io, up)),
                _ => None,
            })
            .collect();
        if changed.is_empty() {
            return;
        }
        let mut t = self.shared.tables();
        for (pid, io, up) in changed {
            // Still the same port (not deleted, its slot not reused)?
            let same = t.ports[pid as usize]
                .as_ref()
                .is_some_and(|e| Arc::ptr_eq(&e.io, io));
            if !same {
                continue;
            }
            let name = t.port_name(pid);
            let is_vxlan = matches!(&**io, AnyPort::Vxlan(_));
            match (is_vxlan, up) {
                (true, true) => {
                    tracing::info!(port = %name, "VXLAN underlay address is back: port up")
                }
                (true, false) => {
                    tracing::warn!(port = %name, "VXLAN underlay address is gone: port down")
                }
                (false, true) => {
                    tracing::info!(port = %name, "vhost-user guest connected: port up")
                }
                (false, false) => {
                    tracing::info!(port = %name, "vhost-user guest gone: port down")
                }
            }
            if is_vxlan {
                t.set_link_up(pid, up);
            } else {
                t.set_guest_link(pid, up);
            }
        }
    }

    /// Adaptive busy polling. The worker spins for `busy_ns` after the last
    /// frame. When it had gone to sleep and a frame came within
    /// `busy_max_ns` of the previous one, the wake-up was paid for nothing:
    /// the window grows to cover that gap. A gap longer than the maximum
    /// (sparse traffic) halves it, down to the minimum, so an idle or lightly
    /// used switch soon stops spinning, while one late frame in a steady
    /// stream (a sender descheduled for a moment) does not throw the window
    /// away: with a reset, the next frames of that stream would each pay a
    /// wake-up until the window had grown back.
    fn adapt_busy_poll(&mut self, now: u64) {
        if !self.slept {
            return;
        }
        self.slept = false;
        if std::mem::take(&mut self.held) {
            // Slept because of CPU pressure: the window was not too short.
            return;
        }
        let gap = now.saturating_sub(self.last_rx_ns);
        self.busy_ns = next_busy_window(self.busy_ns, gap, self.busy_min_ns, self.busy_max_ns);
    }

    fn mark_ready(&mut self, pid: PortId) {
        let p = pid as usize;
        if p < MAX_PORTS && self.rx[p].is_some() && !self.queued[p] {
            self.queued[p] = true;
            self.ready.push_back(pid);
        }
    }

    /// Handles control messages; false on shutdown.
    fn drain_inbox(&mut self) -> bool {
        while let Ok(msg) = self.inbox.try_recv() {
            match msg {
                WorkerMsg::Shutdown => return false,
                WorkerMsg::Attach(pid, io) => {
                    let p = pid as usize;
                    let fd = io.fd();
                    if let Err(e) = self.poll.registry().register(
                        &mut SourceFd(&fd),
                        Token(p),
                        Interest::READABLE,
                    ) {
                        tracing::error!(worker = self.id, "cannot poll port {pid}: {e}");
                        continue;
                    }
                    if io.peek().is_some() {
                        self.peekable.push(pid);
                    } else {
                        self.unpeekable += 1;
                    }
                    self.rx[p] = Some(io);
                    // Frames may already be waiting (edge-triggered poll).
                    self.mark_ready(pid);
                }
                WorkerMsg::Detach(pid, ack) => {
                    self.release(pid);
                    let _ = ack.send(());
                }
            }
        }
        true
    }

    /// Stops polling `pid` and drops this worker's reference to it.
    fn release(&mut self, pid: PortId) {
        let p = pid as usize;
        if let Some(io) = self.rx[p].take() {
            let _ = self.poll.registry().deregister(&mut SourceFd(&io.fd()));
            match self.peekable.iter().position(|&x| x == pid) {
                Some(i) => {
                    self.peekable.swap_remove(i);
                }
                None => self.unpeekable = self.unpeekable.saturating_sub(1),
            }
        }
        self.queued[p] = false;
        self.ready.retain(|&x| x != pid);
    }

    /// Drains one batch from `pid` and forwards it. True if the port may have
    /// more (a full batch was read).
    fn rx_port(&mut self, pid: PortId, now: u64) -> bool {
        let p = pid as usize;
        let Some(io) = self.rx[p].as_ref() else {
            return false;
        };
        let n = match io.recv(&mut self.batch.frames, &mut self.scratch) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                if io.is_gone(&e) {
                    self.port_down(pid, &e);
                } else {
                    tracing::debug!(worker = self.id, port = pid, "receive error: {e}");
                    if !self.suspect.iter().any(|&(q, ..)| q == pid) {
                        self.suspect.push((pid, e.raw_os_error(), e.kind()));
                    }
                }
                return false;
            }
        };
        let is_vxlan = matches!(**io, AnyPort::Vxlan(_));
        if n == 0 {
            return false;
        }
        if !self.suspect.is_empty() {
            // Frames again: the error passed.
            self.suspect.retain(|&(q, ..)| q != pid);
        }
        self.adapt_busy_poll(now);
        self.last_rx_ns = now;
        self.shared.worker_counters[self.id].batch(n);
        let full = n == self.batch.capacity();
        if !is_vxlan {
            self.forward(pid, 0..n, now, false);
            return full;
        }
        // A VXLAN underlay receives for every VNI on it: each frame enters
        // by the port its VNI names (frames it refused stay with `pid`, which
        // counts them). Group the batch by entering port, keeping each
        // port's frames in their order, and forward group by group.
        let frames = &mut self.batch.frames[..n];
        for f in frames.iter_mut() {
            if f.ingress.is_none() {
                f.ingress = Some(pid);
            }
        }
        group_by_ingress(frames);
        let mut a = 0;
        while a < n {
            let into = self.batch.frames[a].ingress.unwrap_or(pid);
            let mut b = a + 1;
            while b < n && self.batch.frames[b].ingress.unwrap_or(pid) == into {
                b += 1;
            }
            self.forward(into, a..b, now, true);
            a = b;
        }
        full
    }

    /// Forwards `self.batch.frames[range]`, which entered by `pid`, and
    /// sends what the plan says.
    /// `demuxed`: the frames came off a VXLAN underlay, which named `pid`.
    fn forward(&mut self, pid: PortId, range: std::ops::Range<usize>, now: u64, demuxed: bool) {
        // Three phases, each under its own lock: the bridges decide, the
        // router routes and translates what they handed it (its NAT writes
        // never hold the bridges' lock), the bridges take what it sends.
        let shared = self.shared.clone();
        let stats = self.stats.clone();
        let frames = &mut self.batch.frames[range.clone()];
        let routed = {
            let mut guard = shared.tables();
            let t: &mut Tables = &mut guard;
            if shared.capture_on.load(std::sync::atomic::Ordering::Relaxed) {
                let subs = lock(&shared.captures);
                let ts = super::capture::wall_ns();
                for s in subs.iter().filter(|s| s.rx && s.port == pid && s.alive()) {
                    for f in frames.iter().filter(|f| f.rx_drop.is_none()) {
                        s.offer(ts, false, f.data().to_vec());
                    }
                }
            }
            if shared.live_on.load(std::sync::atomic::Ordering::Relaxed) {
                // trace --live: traced before the real decision, which
                // the trace mirrors.
                let mut live = lock(&shared.live);
                let more = live
                    .as_mut()
                    .is_some_and(|l| super::trace::live(t, l, pid, frames, now));
                if !more && live.is_some() {
                    *live = None;
                    shared
                        .live_on
                        .store(false, std::sync::atomic::Ordering::Release);
                }
            }
            if demuxed
                && !t.ports[pid as usize]
                    .as_ref()
                    .is_some_and(|e| matches!(*e.io, AnyPort::Vxlan(_)))
            {
                // Demultiplexed to a VXLAN port that went away meanwhile
                // (its PortId may already be another port's): drop them.
                for f in frames.iter_mut() {
                    f.rx_drop = Some(DropReason::VniUnknown);
                }
            }
            let routed = pipeline::bridge_phase(
                &mut t.switch(),
                pid,
                frames,
                now,
                &mut lock(&stats),
                &mut self.plan,
            );
            take_txio(&mut self.txio, &self.plan, t);
            routed
        };
        if routed {
            let sends = {
                let mut r = lock(&shared.router);
                pipeline::router_phase(&mut r, frames, now, &mut lock(&stats), &mut self.plan)
            };
            if sends {
                let mut guard = shared.tables();
                let t: &mut Tables = &mut guard;
                pipeline::egress_phase(
                    &mut t.switch(),
                    frames,
                    now,
                    &mut lock(&stats),
                    &mut self.plan,
                );
                take_txio(&mut self.txio, &self.plan, t);
            }
        }
        self.flush(range);
    }

    /// Takes, under the lock, the ports the plan sends on.
    fn take_txio(&mut self, t: &Tables) {
        take_txio(&mut self.txio, &self.plan, t);
    }

    /// Sends every per-port TX batch of the plan, outside the tables' lock;
    /// the plan's frames are `self.batch.frames[range]`.
    fn flush(&mut self, range: std::ops::Range<usize>) {
        if self
            .shared
            .capture_on
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.capture_tx(range.clone());
        }
        let shared = self.shared.clone();
        let impaired = shared
            .impair_on
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| lock(&shared.impair));
        let now = if impaired.is_some() { self.now_ns() } else { 0 };
        let mut st = lock(&self.stats);
        for &out in &self.plan.dirty {
            let o = out as usize;
            if let Some(imp) = impaired
                .as_ref()
                .and_then(|l| l.iter().find(|i| i.pid == out))
            {
                // Impaired egress: into the port's queue (or lost).
                self.txio[o] = None;
                let mut q = lock(&imp.q);
                for (batch, items) in [
                    (&self.batch.frames[range.clone()], &self.plan.txq[o]),
                    (&self.plan.orig.frames[..], &self.plan.txq_orig[o]),
                ] {
                    for it in items {
                        let Some(f) = batch.get(usize::from(it.idx)) else {
                            continue;
                        };
                        let mut pre = [0u8; crate::packet::EDIT_PREFIX_MAX];
                        let (n, rest) = f.edited_prefix(it.edit, &mut pre);
                        let tail = f.data().get(rest..).unwrap_or(&[]);
                        let mut v = Vec::with_capacity(n + tail.len());
                        v.extend_from_slice(&pre[..n]);
                        v.extend_from_slice(tail);
                        let wire = v.len() - crate::packet::VNET_HDR_LEN;
                        if let Err(r) = q.admit(now, it.peer, v, wire) {
                            st[o].drop(r);
                        }
                    }
                }
                continue;
            }
            if let Some(io) = self.txio[o].take() {
                if !self.plan.txq[o].is_empty() {
                    io.send(
                        &self.batch.frames[range.clone()],
                        &self.plan.txq[o],
                        &mut st[o],
                        &mut self.scratch,
                    );
                }
                if !self.plan.txq_orig[o].is_empty() {
                    io.send(
                        &self.plan.orig.frames,
                        &self.plan.txq_orig[o],
                        &mut st[o],
                        &mut self.scratch,
                    );
                }
            }
        }
        drop(st);
        drop(impaired);
        self.plan.clear();
    }

    /// Sends what impaired ports' queues have due (worker 0, every turn).
    fn release_impaired(&mut self, now: u64) {
        let shared = self.shared.clone();
        let list = lock(&shared.impair);
        let mut due = Vec::new();
        for imp in list.iter() {
            due.clear();
            lock(&imp.q).due(now, 256, &mut due);
            if due.is_empty() {
                continue;
            }
            let mut st = lock(&self.stats);
            for d in &due {
                if d.bytes.len() < crate::packet::VNET_HDR_LEN {
                    continue;
                }
                let (h, frame) = d.bytes.split_at(crate::packet::VNET_HDR_LEN);
                let h: &[u8; crate::packet::VNET_HDR_LEN] = h.try_into().expect("split");
                self.ctl_frame.set_from_bytes(frame);
                self.ctl_frame.set_vnet(&crate::packet::VnetHdr::parse(h));
                let item = [TxItem {
                    idx: 0,
                    edit: crate::bridge::vlan::TagEdit::None,
                    peer: d.peer,
                }];
                imp.io.send(
                    std::slice::from_ref(&self.ctl_frame),
                    &item,
                    &mut st[imp.pid as usize],
                    &mut self.scratch,
                );
            }
        }
    }

    /// Copies what the plan sends on captured ports, as it leaves (tag
    /// edits applied).
    fn capture_tx(&self, range: std::ops::Range<usize>) {
        let subs = lock(&self.shared.captures);
        let ts = super::capture::wall_ns();
        for s in subs.iter().filter(|s| s.tx && s.alive()) {
            let o = s.port as usize;
            if !self.plan.dirty.contains(&s.port) {
                continue;
            }
            for (batch, q) in [
                (&self.batch.frames[range.clone()], &self.plan.txq[o]),
                (&self.plan.orig.frames[..], &self.plan.txq_orig[o]),
            ] {
                for it in q {
                    let Some(f) = batch.get(usize::from(it.idx)) else {
                        continue;
                    };
                    let mut pre = [0u8; crate::packet::EDIT_PREFIX_MAX];
                    let (n, rest) = f.edited_prefix(it.edit, &mut pre);
                    let mut v = Vec::with_capacity(n + f.data().len());
                    v.extend_from_slice(&pre[crate::packet::VNET_HDR_LEN..n]);
                    v.extend_from_slice(f.data().get(rest..).unwrap_or(&[]));
                    s.offer(ts, true, v);
                }
            }
        }
    }

    /// Takes down the ports whose non-final receive error turned out final
    /// (their device is gone now); keeps asking about the others.
    fn recheck_suspects(&mut self) {
        let mut k = 0;
        while k < self.suspect.len() {
            let (pid, code, kind) = self.suspect[k];
            let e = code.map_or_else(|| io::Error::from(kind), io::Error::from_raw_os_error);
            match self.rx[pid as usize].as_ref().map(|io| io.is_gone(&e)) {
                Some(false) => k += 1,
                gone => {
                    self.suspect.swap_remove(k);
                    if gone == Some(true) {
                        self.port_down(pid, &e);
                    }
                }
            }
        }
    }

    fn port_down(&mut self, pid: PortId, err: &io::Error) {
        let p = pid as usize;
        {
            let mut t = self.shared.tables();
            let name = t.port_name(pid);
            tracing::warn!(port = %name, "port went down: {err}");
            t.up[p] = false;
            let now = t.now_ns();
            if let Some(bi) = t.attach[p].bridge() {
                if let Some(b) = t.bridges[bi].as_mut() {
                    b.fdb.flush_dynamic(Some(pid));
                    b.set_port_up(pid, false, now);
                }
            }
            lock(&self.stats)[p].drop(DropReason::PortDown);
        }
        self.release(pid);
    }
}

/// Orders `frames` by their entering port, keeping the order of each port's
/// frames (an insertion sort: stable, in place, no allocation; a batch is
/// small and mostly one run already).
fn group_by_ingress(frames: &mut [crate::packet::Frame]) {
    for i in 1..frames.len() {
        let mut j = i;
        while j > 0 && frames[j - 1].ingress > frames[j].ingress {
            frames.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// Takes, under the tables' lock, the ports `plan` sends on.
fn take_txio(txio: &mut [Option<Arc<AnyPort>>], plan: &Plan, t: &Tables) {
    for &out in &plan.dirty {
        let o = out as usize;
        txio[o] = t.ports[o].as_ref().map(|e| e.io.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::next_busy_window;

    const MIN: u64 = 200_000;
    const MAX: u64 = 2_500_000;

    #[test]
    fn window_grows_to_cover_steady_gaps() {
        let w = next_busy_window(MIN, 1_000_000, MIN, MAX);
        assert_eq!(w, 1_250_000);
        // Never beyond the ceiling.
        assert_eq!(next_busy_window(w, 2_400_000, MIN, MAX), MAX);
        // A shorter gap does not shrink it.
        assert_eq!(next_busy_window(MAX, 10_000, MIN, MAX), MAX);
    }

    #[test]
    fn long_gaps_halve_down_to_the_minimum() {
        let mut w = MAX;
        w = next_busy_window(w, 3_000_000, MIN, MAX);
        assert_eq!(w, MAX / 2, "one late frame keeps half the window");
        for _ in 0..10 {
            w = next_busy_window(w, 1_000_000_000, MIN, MAX);
        }
        assert_eq!(w, MIN, "sparse traffic ends at the minimum");
    }

    #[test]
    fn spin_always_stays_always() {
        let all = super::super::SPIN_ALWAYS.saturating_mul(1000);
        assert_eq!(next_busy_window(all, 5, all, all), all);
        assert_eq!(next_busy_window(all, u64::MAX - 1, all, all), all);
    }

    #[test]
    fn default_ceiling_covers_100_requests_a_second() {
        // 10 ms gaps (100 request/response pairs a second) are spun through
        // once one has been seen: no wake-up per request.
        let min = super::super::DEFAULT_BUSY_POLL_US * 1000;
        let max = super::super::DEFAULT_BUSY_POLL_MAX_US * 1000;
        let w = next_busy_window(min, 10_000_000, min, max);
        assert!(w > 10_000_000, "window {w} ns");
        // 10 requests a second (100 ms gaps) do not keep a worker spinning.
        assert_eq!(next_busy_window(min, 100_000_000, min, max), min);
    }

    #[test]
    fn zero_minimum_and_maximum_never_spin() {
        assert_eq!(next_busy_window(0, 5, 0, 0), 0);
    }
}
