//! Source NAT (masquerade) for IPv4: per-flow state, translation both ways,
//! and the incremental checksum updates that go with it.
//!
//! An inside host's flow leaving through a router interface with an SNAT rule
//! gets an outside address and port from the rule's pool; replies addressed to
//! that outside address and port are translated back. TCP and UDP flows are
//! keyed by their ports, ICMP echo by its identifier (RFC 5508 §3.1), like
//! Linux's conntrack and `MASQUERADE`.
//!
//! # Mappings and filtering (RFC 4787)
//!
//! - **Endpoint-independent mapping** (REQ-1). A *mapping* binds an inside
//!   endpoint (protocol, address, port; for ICMP echo the identifier) to one
//!   outside endpoint, per SNAT rule. Every flow from that inside endpoint
//!   through the rule uses it, whatever the remote endpoint, as long as any
//!   of them lives; an outside (protocol, address, port) belongs to at most
//!   one inside endpoint at a time. The outside address is chosen from the
//!   pool by a hash of the inside address, so one host keeps one outside
//!   address ("paired", REQ-2). The outside port is the inside one when that
//!   is free (port preservation, as Linux does), else the first free one
//!   from a hash-derived start in the pool's port range, trying at most
//!   [`MAX_PORT_TRIES`] ports so a crowded pool cannot make one packet loop
//!   over 64 k ports. ICMP identifiers are treated like ports over their
//!   whole 16-bit range. So a pool address carries up to one mapping per
//!   port and protocol (about 64 k inside endpoints), each with any number
//!   of flows.
//! - **Address- and port-dependent filtering** (REQ-8). A packet from
//!   outside is translated only if it is a reply of a flow: it comes from
//!   a remote endpoint the inside endpoint sent to. Being mapped is not
//!   enough.
//! - **Hairpinning** (REQ-9). An inside host may reach another inside
//!   endpoint, or itself from another port, through its outside endpoint:
//!   [`Nat::hairpin`] gives the packet the sender's outside source (its
//!   mapping, created if need be) and the target's inside destination, so
//!   each side sees the other's outside endpoint, as a remote would.
//!   Hairpinned packets come from inside and are not filtered.
//! - **Port forwarding** (DNAT). A *static* mapping ([`Nat::add_static`])
//!   binds an outside endpoint to an inside one permanently: SNAT never
//!   picks its outside port, a packet from any remote to it opens a flow
//!   ([`Nat::dnat_in`]: filtering is open), the inside server's replies
//!   leave from it ([`Nat::dnat_out`], or [`Nat::outbound`]), and a
//!   hairpinned packet to it opens a flow from the sender's outside
//!   endpoint. Its flows are ordinary flows (timeouts, ICMP errors), with
//!   TCP state tracked from the remote's side; [`Nat::remove_static`]
//!   removes them with it.
//! - **Lifetime.** A mapping lives while at least one of its flows lives: it
//!   counts the flows that refer to it and is freed with the last (expiry,
//!   [`Nat::flush_rule`], remapping); its expiry is the latest of its flows'.
//!   A flow whose timer is shortened (FIN, RST) lowers its mapping's expiry
//!   only when it is the mapping's only flow; among several, the mapping
//!   may outlive its flows until the sweep removes them.
//!
//! # The table
//!
//! Flows live in a slab (`Vec<Conn>` with a free list), found through two
//! hash maps of small keys: the inside tuple (protocol, inside address and
//! port, remote address and port) for outbound packets, and the tuple a reply
//! carries (protocol, remote, outside) for inbound ones. Mappings live in a
//! second slab, found by (protocol, inside endpoint, rule) when a flow is
//! created and by (protocol, outside endpoint) when an outside port is
//! chosen or a packet is hairpinned; a flow holds its mapping's index. A
//! packet of a known flow costs one map lookup and a rewrite.
//!
//! - **Timeouts** (time is an argument, nanoseconds of the caller's clock):
//!   TCP established 7440 s (RFC 5382 REQ-5: at least 2 h 4 min), TCP
//!   opening and closing 240 s (REQ-5's 4 minutes), after an RST 10 s; UDP
//!   300 s (RFC 4787 REQ-5 recommends 5 minutes); ICMP echo 60 s (RFC 5508
//!   REQ-1). An expired flow is dead at once, whether or not a sweep removed
//!   it: a lookup that finds one removes it. [`Nat::expire`] sweeps a bounded
//!   slice of the slab per call, so the caller's timer keeps the table clean
//!   without a long pause. A mapping found dead is unlinked from its maps at
//!   once; its slot is reused once its dead flows are gone.
//! - **Bounds.** At most `max_conns` flows (default [`DEFAULT_MAX_CONNS`]),
//!   and at most as many mappings, since each has a flow; a new flow beyond
//!   that, or one for which no port is free, is refused with a reason the
//!   caller counts as a drop. Memory is about 125 bytes a flow and 115 a
//!   mapping (slab entry plus two map entries at the maps' load), so at
//!   most about 240 bytes a flow when every flow has its own mapping.
//!
//! # Checksums
//!
//! Rewrites update checksums incrementally (RFC 1624, eqn. 3): the IPv4 header
//! checksum, the TCP or UDP checksum (pseudo-header address and port), and the
//! ICMP checksum (identifier). A frame that arrived with a *partial* L4
//! checksum (virtio `NEEDS_CSUM`: the field holds the folded pseudo-header
//! sum and the egress or [`crate::offload`] completes it) gets only its
//! pseudo-header part updated, not complemented, and the ports are left to
//! the completion; so GSO super-frames are translated once, not per segment.
//! A UDP checksum of zero (none) stays zero; a computed zero is sent as
//! 0xffff.
//!
//! # ICMP errors and fragments
//!
//! IP fragments are refused ([`NatDrop::Fragment`]): without reassembly only
//! the first fragment carries ports. ICMP errors (destination unreachable,
//! time exceeded, parameter problem) about a tracked flow are translated both
//! ways, the packet they quote included (RFC 5508 §4.2), so path MTU
//! discovery and traceroute work through the NAT; an inside host's error
//! about no tracked flow is refused ([`NatDrop::NoFlow`]) rather than let
//! out with its inside address.

mod index;

use crate::cache::prefetch;
use crate::wire::checksum::Csum;
use hashbrown::HashMap;
use index::FlowIndex;
use std::net::Ipv4Addr;

/// Default limit on tracked flows.
pub const DEFAULT_MAX_CONNS: usize = crate::config::DEFAULT_NAT_MAX_FLOWS as usize;
/// Ports tried for a new mapping before the packet is refused.
pub const MAX_PORT_TRIES: u32 = 256;
/// Flows the default [`Nat::expire`] call examines.
pub const EXPIRE_BUDGET: usize = 4096;

const NS_PER_S: u64 = 1_000_000_000;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Idle timeouts by flow state, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_established: u64,
    pub tcp_transitory: u64,
    pub tcp_reset: u64,
    pub udp: u64,
    pub icmp: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established: 7440,
            tcp_transitory: 240,
            tcp_reset: 10,
            udp: 300,
            icmp: 60,
        }
    }
}

/// The outside addresses and ports of an SNAT rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// Identifies the rule, so [`Nat::flush_rule`] can drop its flows.
    pub rule: u32,
    /// First and last outside address (host byte order), inclusive.
    pub first: u32,
    pub last: u32,
    /// First and last outside TCP/UDP port, inclusive.
    pub port_lo: u16,
    pub port_hi: u16,
}

impl Pool {
    /// A pool of addresses `first..=last` with the usual masquerade ports
    /// (1024-65535); `None` if `last < first`.
    pub fn new(rule: u32, first: Ipv4Addr, last: Ipv4Addr) -> Option<Pool> {
        let (first, last) = (u32::from(first), u32::from(last));
        (first <= last).then_some(Pool {
            rule,
            first,
            last,
            port_lo: 1024,
            port_hi: 65535,
        })
    }

    fn contains(&self, ip: u32) -> bool {
        (self.first..=self.last).contains(&ip)
    }
}

/// Why a packet could not be translated; each is a drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatDrop {
    /// Not a well-formed IPv4 packet with a complete L4 header.
    Malformed,
    /// An IP fragment (no reassembly).
    Fragment,
    /// A protocol (or ICMP type) SNAT does not translate.
    Unsupported,
    /// The flow table is full.
    TableFull,
    /// No outside port was free for this flow.
    PortsExhausted,
    /// An ICMP error from an inside host about no tracked flow: sent on, it
    /// would show the inside address.
    NoFlow,
}

impl NatDrop {
    /// The snake_case name shown in `stats`.
    pub fn name(self) -> &'static str {
        match self {
            NatDrop::Malformed => "malformed",
            NatDrop::Fragment => "nat_fragment",
            NatDrop::Unsupported => "nat_unsupported",
            NatDrop::TableFull => "nat_full",
            NatDrop::PortsExhausted => "nat_ports_exhausted",
            NatDrop::NoFlow => "nat_no_flow",
        }
    }
}

/// What [`Nat::inbound`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// The destination was rewritten to the inside host; route it.
    Translated,
    /// Not a reply of a tracked flow: left untouched (it may be for the
    /// router itself, or be routed as it is).
    NotTranslated,
}

/// A flow's state as `nat-show` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Outbound packets only (UDP, ICMP, or TCP picked up mid-stream).
    New,
    /// TCP SYN sent, no answer yet.
    SynSent,
    /// Replies seen.
    Established,
    /// One side sent FIN.
    FinWait,
    /// Both sides sent FIN.
    TimeWait,
    /// Reset.
    Closed,
}

impl State {
    /// The snake_case name shown in `nat-show`.
    pub fn name(self) -> &'static str {
        match self {
            State::New => "new",
            State::SynSent => "syn_sent",
            State::Established => "established",
            State::FinWait => "fin_wait",
            State::TimeWait => "time_wait",
            State::Closed => "closed",
        }
    }
}

/// An address and a port (for ICMP echo: the identifier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub ip: u32,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", Ipv4Addr::from(self.ip), self.port)
    }
}

/// One tracked flow, as listed by [`Nat::conns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// "tcp", "udp" or "icmp".
    pub proto: &'static str,
    pub inside: Endpoint,
    pub outside: Endpoint,
    pub remote: Endpoint,
    pub state: State,
    pub rule: u32,
    /// Seconds until it expires if idle (rounded up).
    pub expires_s: u64,
}

/// A flow's two endpoints as one direction's packets carry them (source,
/// destination) and its protocol.
#[derive(Debug, Clone, Copy)]
struct Tuple {
    a: Endpoint,
    b: Endpoint,
    proto: u8,
}

impl Tuple {
    fn key(&self) -> Key {
        Key::new(self.a, self.b, self.proto)
    }
}

/// A flow's key in one direction: two endpoints and the protocol packed in
/// 104 bits, so hashing is two multiplies and comparing is one 128-bit test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key(u128);

impl Key {
    fn new(a: Endpoint, b: Endpoint, proto: u8) -> Key {
        let e = |x: Endpoint| u128::from(x.ip) << 16 | u128::from(x.port);
        Key(e(a) << 56 | e(b) << 8 | u128::from(proto))
    }
}

/// Hashes [`Key`]s: a folded multiply of each half, keyed by a per-table
/// random seed so outsiders cannot aim their tuples at one probe run.
#[derive(Debug, Clone, Copy)]
struct KeyHash(u64);

impl std::hash::BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.0)
    }
}

struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    #[inline]
    fn write_u128(&mut self, v: u128) {
        let m = |a: u64, b: u64| {
            let p = u128::from(a) * u128::from(b);
            (p as u64) ^ ((p >> 64) as u64)
        };
        self.0 = m(
            m((v as u64) ^ self.0, 0x9e37_79b9_7f4a_7c15) ^ ((v >> 64) as u64),
            0x2545_f491_4f6c_dd1d,
        );
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used by `Key`; a byte slice is folded in
        // 16 bytes at a time all the same.
        for c in bytes.chunks(16) {
            let mut b = [0u8; 16];
            b[..c.len()].copy_from_slice(c);
            self.write_u128(u128::from_ne_bytes(b));
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Debug, Clone, Copy)]
struct Conn {
    proto: u8,
    inside: Endpoint,
    outside: Endpoint,
    remote: Endpoint,
    state: State,
    fin_out: bool,
    fin_in: bool,
    rule: u32,
    /// Clock reading at which it dies if idle; 0 marks a free slab slot.
    expires: u64,
    /// Its mapping's slab index.
    map: u32,
}

impl Conn {
    fn out_key(&self) -> Key {
        Key::new(self.inside, self.remote, self.proto)
    }

    fn in_key(&self) -> Key {
        Key::new(self.remote, self.outside, self.proto)
    }
}

/// An endpoint-independent mapping: the outside endpoint every flow of one
/// inside endpoint through one rule uses.
#[derive(Debug, Clone, Copy)]
struct Mapping {
    proto: u8,
    inside: Endpoint,
    outside: Endpoint,
    rule: u32,
    /// Flows in the table that use it, dead ones not yet removed included;
    /// 0 marks a free slab slot.
    refs: u32,
    /// Clock reading at which it dies: at least every one of its flows'.
    expires: u64,
    /// Still the one new flows of its inside endpoint and rule get (false
    /// once the rule's pool no longer holds its address, or it died).
    attached: bool,
    /// A static mapping (port forwarding, [`Nat::add_static`]): permanent,
    /// never handed out to SNAT, and any remote may open a flow on it.
    fixed: bool,
}

impl Mapping {
    fn in_key(&self) -> Key {
        map_in_key(self.proto, self.inside, self.rule)
    }

    fn out_key(&self) -> Key {
        map_out_key(self.proto, self.outside)
    }
}

/// The key of the mapping of an inside endpoint through a rule.
fn map_in_key(proto: u8, inside: Endpoint, rule: u32) -> Key {
    Key::new(inside, Endpoint { ip: rule, port: 0 }, proto)
}

/// The key of the mapping holding an outside endpoint.
fn map_out_key(proto: u8, outside: Endpoint) -> Key {
    Key::new(outside, Endpoint { ip: 0, port: 0 }, proto)
}

/// A packet's flow key in one direction (see [`Nat::flow_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    key: Key,
    outbound: bool,
}

/// The steps of [`Nat::prefetch_key`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefetchStep {
    /// The flow's slot in the index.
    Index,
    /// The flow (its slot must be in cache: after [`PrefetchStep::Index`]).
    Flow,
    /// The flow's mapping (after [`PrefetchStep::Flow`]).
    Mapping,
}

/// Puts `x` in a free slot of a slab (or a new one at its end); returns
/// the slot.
fn slab_put<T>(slab: &mut Vec<T>, free: &mut Vec<u32>, x: T) -> usize {
    match free.pop() {
        Some(i) => {
            slab[i as usize] = x;
            i as usize
        }
        None => {
            slab.push(x);
            slab.len() - 1
        }
    }
}

/// The SNAT flow table.
#[derive(Debug)]
pub struct Nat {
    conns: Vec<Conn>,
    free: Vec<u32>,
    by_inside: FlowIndex,
    by_outside: FlowIndex,
    maps: Vec<Mapping>,
    maps_free: Vec<u32>,
    /// Attached mappings by (protocol, inside endpoint, rule).
    map_by_inside: HashMap<Key, u32, KeyHash>,
    /// Mappings by (protocol, outside endpoint).
    map_by_outside: HashMap<Key, u32, KeyHash>,
    max_conns: usize,
    timeouts: Timeouts,
    /// Where the next [`Nat::expire`] continues.
    sweep_at: usize,
}

impl Default for Nat {
    fn default() -> Self {
        Nat::new(DEFAULT_MAX_CONNS, Timeouts::default())
    }
}

/// The fields of an IPv4 packet that translation reads.
struct Parsed {
    proto: u8,
    src: u32,
    dst: u32,
    /// Offset of the L4 header.
    l4: usize,
    sport: u16,
    dport: u16,
    /// Offset of the L4 checksum field.
    csum: usize,
    tcp_flags: u8,
    icmp_type: u8,
}

impl Nat {
    /// An empty table holding at most `max_conns` flows.
    pub fn new(max_conns: usize, timeouts: Timeouts) -> Nat {
        use std::hash::BuildHasher;
        // RandomState is seeded from the OS's randomness per instance.
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
        Nat {
            conns: Vec::new(),
            free: Vec::new(),
            by_inside: FlowIndex::new(KeyHash(seed)),
            by_outside: FlowIndex::new(KeyHash(seed.rotate_left(32))),
            maps: Vec::new(),
            maps_free: Vec::new(),
            map_by_inside: HashMap::with_hasher(KeyHash(seed.rotate_left(16))),
            map_by_outside: HashMap::with_hasher(KeyHash(seed.rotate_left(48))),
            max_conns,
            timeouts,
            sweep_at: 0,
        }
    }

    /// The most flows tracked at once.
    pub fn max_conns(&self) -> usize {
        self.max_conns
    }

    /// Changes the limit (`set-router --nat-max-flows`). Flows beyond a
    /// lowered limit stay until they end; new ones wait for room.
    pub fn set_max_conns(&mut self, n: usize) {
        self.max_conns = n.max(1);
    }

    /// Tracked flows, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.by_inside.len()
    }

    /// No flows tracked.
    pub fn is_empty(&self) -> bool {
        self.by_inside.is_empty()
    }

    /// Translates an outbound IPv4 packet (`pkt` starts at the IP header) of
    /// a flow leaving through `pool`'s rule: the source becomes the flow's
    /// outside address and port, creating the mapping on its first packet.
    /// `partial` says the L4 checksum field holds a partial (pseudo-header)
    /// sum. On error the packet is unchanged.
    pub fn outbound(
        &mut self,
        pkt: &mut [u8],
        partial: bool,
        pool: &Pool,
        now: u64,
    ) -> Result<Endpoint, NatDrop> {
        let p = parse(pkt)?;
        let (inside_port, remote_port) = match p.proto {
            PROTO_TCP | PROTO_UDP => (p.sport, p.dport),
            // The identifier is the inside end's "port"; the remote end has
            // none (0), so replies, which carry the outside identifier, find
            // the flow.
            PROTO_ICMP if p.icmp_type == ICMP_ECHO_REQUEST => (p.sport, 0),
            PROTO_ICMP if is_icmp_error(p.icmp_type) => {
                return match self.icmp_error(pkt, &p, partial, true, now) {
                    Some(to) => Ok(to),
                    None => Err(NatDrop::NoFlow),
                };
            }
            _ => return Err(NatDrop::Unsupported),
        };
        let idx = self.track_out(&p, inside_port, remote_port, pool, now)?;
        let outside = self.conns[idx].outside;
        rewrite(pkt, &p, partial, true, outside);
        Ok(outside)
    }

    /// Hairpins a TCP or UDP packet from an inside host (`pkt` starts at the
    /// IP header) addressed to a live mapping's outside endpoint (RFC 4787
    /// REQ-9): the source becomes the sender's outside endpoint, as
    /// [`Nat::outbound`] through `pool` would make it (creating or
    /// refreshing the sender's flow and mapping), and the destination the
    /// mapping's inside endpoint; returns `Ok(true)`, and the packet is to be
    /// routed to the inside host. No filtering applies: the packet comes
    /// from inside. If the target's flow towards the sender's outside
    /// endpoint exists, the packet counts as its reply.
    ///
    /// Anything else (another protocol, a destination no live mapping
    /// holds, a fragment or a packet too malformed to read its ports) is
    /// left untouched: `Ok(false)`. The errors are [`Nat::outbound`]'s for
    /// a sender's flow that cannot be created; the packet is then unchanged.
    pub fn hairpin(
        &mut self,
        pkt: &mut [u8],
        partial: bool,
        pool: &Pool,
        now: u64,
    ) -> Result<bool, NatDrop> {
        let Ok(p) = parse(pkt) else {
            return Ok(false);
        };
        if !matches!(p.proto, PROTO_TCP | PROTO_UDP) {
            return Ok(false);
        }
        let dst = Endpoint {
            ip: p.dst,
            port: p.dport,
        };
        let Some(m) = self.find_map(false, &map_out_key(p.proto, dst), now) else {
            return Ok(false);
        };
        let target = self.maps[m].inside;
        let idx = self.track_out(&p, p.sport, p.dport, pool, now)?;
        let source = self.conns[idx].outside;
        // The target's flow to the sender, as its replies would find it; a
        // forwarded port's flow is opened by this packet.
        match self.find(false, &Key::new(source, dst, p.proto), now) {
            Some(j) => self.track_in(j, &p, now),
            None if self.maps[m].fixed => {
                let j = self.static_flow(m, source, now)?;
                if p.proto == PROTO_TCP {
                    tcp_track(&mut self.conns[j], p.tcp_flags, true);
                }
                self.touch(j, now);
            }
            None => {}
        }
        rewrite(pkt, &p, partial, true, source);
        rewrite(pkt, &p, partial, false, target);
        Ok(true)
    }

    /// The key [`Nat::prefetch_key`] finds `pkt`'s flow by (`outbound`: an
    /// inside host's packet), read once for all the steps; `None` for
    /// packets no flow matches by their ports.
    pub fn flow_key(&self, pkt: &[u8], outbound: bool) -> Option<FlowKey> {
        let p = parse(pkt).ok()?;
        let key = match (p.proto, outbound) {
            // Outbound (inside, remote) and inbound (remote, outside) are
            // both (source, destination).
            (PROTO_TCP | PROTO_UDP, _) => Key::new(
                Endpoint {
                    ip: p.src,
                    port: p.sport,
                },
                Endpoint {
                    ip: p.dst,
                    port: p.dport,
                },
                p.proto,
            ),
            (PROTO_ICMP, true) if p.icmp_type == ICMP_ECHO_REQUEST => Key::new(
                Endpoint {
                    ip: p.src,
                    port: p.sport,
                },
                Endpoint { ip: p.dst, port: 0 },
                p.proto,
            ),
            (PROTO_ICMP, false) if p.icmp_type == ICMP_ECHO_REPLY => Key::new(
                Endpoint { ip: p.src, port: 0 },
                Endpoint {
                    ip: p.dst,
                    port: p.sport,
                },
                p.proto,
            ),
            _ => return None,
        };
        Some(FlowKey { key, outbound })
    }

    /// Starts loading what translating the packet of key `k` (from
    /// [`Nat::flow_key`]) will read, one [`PrefetchStep`] at a time: its
    /// index slot, then its flow's slab entry, then the flow's mapping.
    /// Changes nothing and returns at once. A router runs each step over a
    /// whole batch before the next and before translating any: a table of
    /// 100 000 flows does not fit in cache, and each packet would otherwise
    /// wait for four misses in a row; this way each step's misses overlap
    /// across the batch. Best effort: unknown flows are skipped.
    #[inline]
    pub fn prefetch_key(&self, k: &FlowKey, step: PrefetchStep) {
        let (key, outbound) = (k.key, k.outbound);
        let map = if outbound {
            &self.by_inside
        } else {
            &self.by_outside
        };
        let conn = || map.get(&key).and_then(|&i| self.conns.get(i as usize));
        match step {
            PrefetchStep::Index => map.prefetch(&key),
            PrefetchStep::Flow => {
                if let Some(c) = conn() {
                    prefetch(c);
                }
            }
            PrefetchStep::Mapping => {
                if let Some(m) = conn().and_then(|c| self.maps.get(c.map as usize)) {
                    prefetch(m);
                }
            }
        }
    }

    /// Whether a live mapping holds the outside endpoint `outside` for
    /// protocol `proto` (6 TCP, 17 UDP, 1 ICMP echo with the identifier as
    /// port): a packet from inside to it is for [`Nat::hairpin`]. Changes
    /// nothing.
    pub fn is_mapped(&self, proto: u8, outside: Endpoint, now: u64) -> bool {
        self.map_by_outside
            .get(&map_out_key(proto, outside))
            .is_some_and(|&m| self.maps[m as usize].expires > now)
    }

    /// Adds a static mapping (port forwarding, DNAT): `outside` (an address
    /// of the router and a port) leads to `inside` for protocol `proto`
    /// (6 TCP, 17 UDP). It is permanent until [`Nat::remove_static`], SNAT
    /// never hands its outside endpoint out, and a packet from any remote to
    /// it opens a flow ([`Nat::dnat_in`], open filtering) whose replies are
    /// translated back. Flows of a dynamic mapping holding `outside` are
    /// removed. `rule` identifies the forwarding rule in its flows.
    pub fn add_static(
        &mut self,
        proto: u8,
        outside: Endpoint,
        inside: Endpoint,
        rule: u32,
        now: u64,
    ) -> Result<(), String> {
        if !matches!(proto, PROTO_TCP | PROTO_UDP) {
            return Err("only TCP and UDP ports are forwarded".into());
        }
        let key = map_out_key(proto, outside);
        if let Some(m) = self.find_map(false, &key, now) {
            if self.maps[m].fixed {
                return Err(format!("{outside} is already forwarded"));
            }
            self.flush_map(m);
            // Unlinked once its last flow went; unlink it all the same.
            self.unlink_map(m);
        }
        let mapping = Mapping {
            proto,
            inside,
            outside,
            rule,
            // The rule's own reference: it lives until removed.
            refs: 1,
            expires: u64::MAX,
            attached: false,
            fixed: true,
        };
        let m = slab_put(&mut self.maps, &mut self.maps_free, mapping);
        self.map_by_outside.insert(key, m as u32);
        Ok(())
    }

    /// Removes the static mapping of `outside` and its flows; returns how
    /// many flows went, or `None` if there was none.
    pub fn remove_static(&mut self, proto: u8, outside: Endpoint) -> Option<usize> {
        let m = *self.map_by_outside.get(&map_out_key(proto, outside))? as usize;
        if !self.maps[m].fixed {
            return None;
        }
        let n = self.flush_map(m);
        self.maps[m].refs = 0;
        self.maps[m].fixed = false;
        self.unlink_map(m);
        self.maps_free.push(m as u32);
        Some(n)
    }

    /// Removes every flow of mapping `m`; returns how many.
    fn flush_map(&mut self, m: usize) -> usize {
        let doomed: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].expires != 0 && self.conns[i].map as usize == m)
            .collect();
        for &i in &doomed {
            self.remove(i);
        }
        doomed.len()
    }

    /// Translates a packet from outside to a forwarded port: as
    /// [`Nat::inbound`], and if it is no tracked flow's and its destination
    /// is a static mapping's outside endpoint, a flow for its source is
    /// created on the mapping and the packet translated to the inside
    /// endpoint. The caller decides that the packet may be forwarded (the
    /// rule's ingress interface).
    pub fn dnat_in(&mut self, pkt: &mut [u8], partial: bool, now: u64) -> Result<Inbound, NatDrop> {
        let p = parse(pkt)?;
        if !matches!(p.proto, PROTO_TCP | PROTO_UDP) {
            return self.inbound(pkt, partial, now);
        }
        let remote = Endpoint {
            ip: p.src,
            port: p.sport,
        };
        let outside = Endpoint {
            ip: p.dst,
            port: p.dport,
        };
        let idx = match self.find(false, &Key::new(remote, outside, p.proto), now) {
            Some(i) => {
                self.track_in(i, &p, now);
                i
            }
            None => {
                let Some(m) = self.find_map(false, &map_out_key(p.proto, outside), now) else {
                    return Ok(Inbound::NotTranslated);
                };
                if !self.maps[m].fixed {
                    return Ok(Inbound::NotTranslated);
                }
                let i = self.static_flow(m, remote, now)?;
                // The remote is the side that opened it.
                if p.proto == PROTO_TCP {
                    tcp_track(&mut self.conns[i], p.tcp_flags, true);
                }
                self.touch(i, now);
                i
            }
        };
        let inside = self.conns[idx].inside;
        rewrite(pkt, &p, partial, false, inside);
        Ok(Inbound::Translated)
    }

    /// A new flow from `remote` on static mapping `m`.
    fn static_flow(&mut self, m: usize, remote: Endpoint, now: u64) -> Result<usize, NatDrop> {
        if self.by_inside.len() >= self.max_conns {
            self.expire(now, EXPIRE_BUDGET);
            if self.by_inside.len() >= self.max_conns {
                return Err(NatDrop::TableFull);
            }
        }
        let mp = self.maps[m];
        self.maps[m].refs += 1;
        let conn = Conn {
            proto: mp.proto,
            inside: mp.inside,
            outside: mp.outside,
            remote,
            state: State::New,
            fin_out: false,
            fin_in: false,
            rule: mp.rule,
            expires: 1,
            map: m as u32,
        };
        Ok(self.insert_conn(conn, now))
    }

    /// Translates an inside server's packet of a forwarded flow (a reply
    /// to a remote that connected to a forwarded port): the source becomes
    /// the outside endpoint; so does an ICMP error about such a flow (with
    /// its quote). `Ok(false)`, packet untouched, for anything
    /// else, which SNAT (or nothing) then handles.
    pub fn dnat_out(&mut self, pkt: &mut [u8], partial: bool, now: u64) -> Result<bool, NatDrop> {
        let Ok(p) = parse(pkt) else {
            return Ok(false);
        };
        if p.proto == PROTO_ICMP && is_icmp_error(p.icmp_type) {
            // The server's error about a remote's packet.
            return Ok(self
                .icmp_error_if(pkt, &p, partial, true, true, now)
                .is_some());
        }
        if !matches!(p.proto, PROTO_TCP | PROTO_UDP) {
            return Ok(false);
        }
        let key = Key::new(
            Endpoint {
                ip: p.src,
                port: p.sport,
            },
            Endpoint {
                ip: p.dst,
                port: p.dport,
            },
            p.proto,
        );
        let Some(idx) = self.find(true, &key, now) else {
            return Ok(false);
        };
        if !self.maps[self.conns[idx].map as usize].fixed {
            return Ok(false);
        }
        if p.proto == PROTO_TCP {
            tcp_track(&mut self.conns[idx], p.tcp_flags, false);
        }
        self.touch(idx, now);
        let outside = self.conns[idx].outside;
        rewrite(pkt, &p, partial, true, outside);
        Ok(true)
    }

    /// Finds or creates the flow of an outbound packet and tracks the packet
    /// on it; returns the flow's index.
    fn track_out(
        &mut self,
        p: &Parsed,
        inside_port: u16,
        remote_port: u16,
        pool: &Pool,
        now: u64,
    ) -> Result<usize, NatDrop> {
        let key = Tuple {
            a: Endpoint {
                ip: p.src,
                port: inside_port,
            },
            b: Endpoint {
                ip: p.dst,
                port: remote_port,
            },
            proto: p.proto,
        };
        let idx = match self.find(true, &key.key(), now) {
            Some(i) if self.usable(i, pool) => i,
            // A flow of another rule or pool (the rules changed under it)
            // is remapped from this rule's pool.
            Some(i) => {
                self.remove(i);
                self.create(key, pool, now)?
            }
            None => self.create(key, pool, now)?,
        };
        if p.proto == PROTO_TCP {
            // A forwarded flow was opened from outside: its inside host's
            // packets are the answering side's.
            let opener = !self.maps[self.conns[idx].map as usize].fixed;
            tcp_track(&mut self.conns[idx], p.tcp_flags, opener);
        }
        self.touch(idx, now);
        Ok(idx)
    }

    /// Tracks an inbound packet (a reply) on flow `idx`.
    fn track_in(&mut self, idx: usize, p: &Parsed, now: u64) {
        let c = &mut self.conns[idx];
        if p.proto == PROTO_TCP {
            // A forwarded flow's remote is the side that opened it.
            tcp_track(c, p.tcp_flags, self.maps[c.map as usize].fixed);
        } else {
            c.state = State::Established;
        }
        self.touch(idx, now);
    }

    /// Whether live flow `i` may carry packets through `pool`: same rule,
    /// and its mapping still the rule's, in the pool.
    fn usable(&self, i: usize, pool: &Pool) -> bool {
        let c = &self.conns[i];
        let m = &self.maps[c.map as usize];
        m.fixed || (c.rule == pool.rule && pool.contains(c.outside.ip) && m.attached)
    }

    /// Restarts flow `idx`'s idle timer for its state, and its mapping's.
    fn touch(&mut self, idx: usize, now: u64) {
        let c = &mut self.conns[idx];
        c.expires = expiry(now, timeout(&self.timeouts, c));
        let e = c.expires;
        let m = &mut self.maps[c.map as usize];
        // A shorter timer lowers the mapping's only when no other flow may
        // need the longer one.
        if e > m.expires || m.refs == 1 {
            m.expires = e;
        }
    }

    /// Translates an inbound IPv4 packet if it is a reply of a tracked flow:
    /// the destination becomes the inside host's address and port. Anything
    /// else is left untouched ([`Inbound::NotTranslated`]); only malformed
    /// packets and fragments are errors.
    pub fn inbound(&mut self, pkt: &mut [u8], partial: bool, now: u64) -> Result<Inbound, NatDrop> {
        let p = parse(pkt)?;
        let (remote_port, outside_port) = match p.proto {
            PROTO_TCP | PROTO_UDP => (p.sport, p.dport),
            PROTO_ICMP if p.icmp_type == ICMP_ECHO_REPLY => (0, p.sport),
            PROTO_ICMP if is_icmp_error(p.icmp_type) => {
                return Ok(match self.icmp_error(pkt, &p, partial, false, now) {
                    Some(_) => Inbound::Translated,
                    None => Inbound::NotTranslated,
                });
            }
            _ => return Ok(Inbound::NotTranslated),
        };
        let key = Tuple {
            a: Endpoint {
                ip: p.src,
                port: remote_port,
            },
            b: Endpoint {
                ip: p.dst,
                port: outside_port,
            },
            proto: p.proto,
        };
        let Some(idx) = self.find(false, &key.key(), now) else {
            return Ok(Inbound::NotTranslated);
        };
        self.track_in(idx, &p, now);
        let inside = self.conns[idx].inside;
        rewrite(pkt, &p, partial, false, inside);
        Ok(Inbound::Translated)
    }

    /// Translates an ICMP error about a tracked flow (RFC 5508 §4.2): the
    /// packet it quotes is one of the flow's, so the quoted header is
    /// translated like the flow's packets in the other direction, and the
    /// error's own address like the flow's in this one. `out`: an inside
    /// host's error about a reply it got (outer source and quoted
    /// destination become the outside endpoint); otherwise a remote's error
    /// about a packet the flow sent (outer destination and quoted source
    /// become the inside endpoint). Returns the endpoint written, or `None`
    /// (packet untouched) if the quote names no live flow. Timers are not
    /// refreshed: an error is no sign the flow is alive.
    fn icmp_error(
        &mut self,
        pkt: &mut [u8],
        p: &Parsed,
        partial: bool,
        out: bool,
        now: u64,
    ) -> Option<Endpoint> {
        self.icmp_error_if(pkt, p, partial, out, false, now)
    }

    /// [`Nat::icmp_error`], for flows of static mappings only if
    /// `only_fixed`.
    fn icmp_error_if(
        &mut self,
        pkt: &mut [u8],
        p: &Parsed,
        partial: bool,
        out: bool,
        only_fixed: bool,
        now: u64,
    ) -> Option<Endpoint> {
        let total = usize::from(be16(pkt, 2));
        let icmp_end = total.min(pkt.len());
        let q = quoted(pkt.get(p.l4 + 8..icmp_end)?)?;
        let at = p.l4 + 8;
        let (src, dst) = (q.src(), q.dst());
        // The quote travels against the error: an inside host's error quotes
        // remote -> inside, a remote's quotes outside -> remote. Either way
        // (quoted destination, quoted source) is the flow's key in the map
        // of the error's direction, and the quoted end on the error's
        // sending side (destination out, source in) is what changes.
        let (old, ip_at, port_at) = if out {
            (dst, at + 16, q.dport_at)
        } else {
            (src, at + 12, q.sport_at)
        };
        if old.ip != if out { p.src } else { p.dst } {
            return None;
        }
        let idx = self.find(out, &Key::new(dst, src, q.proto), now)?;
        let c = self.conns[idx];
        if only_fixed && !self.maps[c.map as usize].fixed {
            return None;
        }
        let to = if out { c.outside } else { c.inside };
        let ip_d = Delta::default().replace32(old.ip, to.ip);
        let port_d = Delta::default().replace16(old.port, to.port);
        pkt[ip_at..ip_at + 4].copy_from_slice(&to.ip.to_be_bytes());
        pkt[at + port_at..at + port_at + 2].copy_from_slice(&to.port.to_be_bytes());
        update_complemented(pkt, at + 10, ip_d);
        if let Some(cs) = q.csum_at.map(|o| at + o) {
            let old_sum = be16(pkt, cs);
            if !(q.proto == PROTO_UDP && old_sum == 0) {
                let d = if q.proto == PROTO_ICMP {
                    port_d
                } else {
                    ip_d.plus(port_d)
                };
                update_complemented(pkt, cs, d);
            }
        }
        // The error's own address: the same change as the quote's.
        let outer_at = if out { 12 } else { 16 };
        pkt[outer_at..outer_at + 4].copy_from_slice(&to.ip.to_be_bytes());
        update_complemented(pkt, 10, ip_d);
        // The ICMP checksum covers the whole quote: sum it again.
        if !partial {
            pkt[p.csum..p.csum + 2].copy_from_slice(&[0, 0]);
            let c = Csum::default().add(&pkt[p.l4..icmp_end]).finish();
            pkt[p.csum..p.csum + 2].copy_from_slice(&c);
        }
        Some(to)
    }

    /// Removes up to `budget` expired flows' worth of the slab, continuing
    /// where the last call stopped; returns how many flows it removed.
    pub fn expire(&mut self, now: u64, budget: usize) -> usize {
        let n = self.conns.len();
        if n == 0 {
            return 0;
        }
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            if self.sweep_at >= n {
                self.sweep_at = 0;
            }
            let i = self.sweep_at;
            self.sweep_at += 1;
            let c = &self.conns[i];
            if c.expires != 0 && c.expires <= now {
                self.remove(i);
                removed += 1;
            }
        }
        removed
    }

    /// Removes every flow of SNAT rule `rule` (the rule was deleted).
    pub fn flush_rule(&mut self, rule: u32) -> usize {
        let doomed: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].expires != 0 && self.conns[i].rule == rule)
            .collect();
        for &i in &doomed {
            self.remove(i);
        }
        doomed.len()
    }

    /// The live flows at `now`, in no particular order.
    pub fn conns(&self, now: u64) -> impl Iterator<Item = ConnInfo> + '_ {
        self.conns
            .iter()
            .filter(move |c| c.expires > now)
            .map(move |c| ConnInfo {
                proto: match c.proto {
                    PROTO_TCP => "tcp",
                    PROTO_UDP => "udp",
                    _ => "icmp",
                },
                inside: c.inside,
                outside: c.outside,
                remote: c.remote,
                state: c.state,
                rule: c.rule,
                expires_s: (c.expires - now).div_ceil(NS_PER_S),
            })
    }

    /// The live flow under `key` in the given direction's map; an expired
    /// one is removed on the way.
    fn find(&mut self, out: bool, key: &Key, now: u64) -> Option<usize> {
        let map = if out {
            &self.by_inside
        } else {
            &self.by_outside
        };
        let i = *map.get(key)? as usize;
        if self.conns[i].expires <= now {
            self.remove(i);
            return None;
        }
        Some(i)
    }

    fn create(&mut self, key: Tuple, pool: &Pool, now: u64) -> Result<usize, NatDrop> {
        if self.by_inside.len() >= self.max_conns {
            // Make room from the dead first: a short sweep, bounded.
            self.expire(now, EXPIRE_BUDGET);
            if self.by_inside.len() >= self.max_conns {
                return Err(NatDrop::TableFull);
            }
        }
        let m = self.mapping(&key, pool, now)?;
        // Held from here, so nothing below can free it.
        self.maps[m].refs += 1;
        let outside = self.maps[m].outside;
        let conn = Conn {
            proto: key.proto,
            inside: key.a,
            outside,
            remote: key.b,
            state: State::New,
            fin_out: false,
            fin_in: false,
            rule: pool.rule,
            expires: 1,
            map: m as u32,
        };
        Ok(self.insert_conn(conn, now))
    }

    /// Puts flow `conn` (its mapping's reference already taken) in the
    /// table; returns its index.
    fn insert_conn(&mut self, conn: Conn, now: u64) -> usize {
        // The reply key is free of live flows: the outside endpoint is this
        // mapping's alone, and its inside endpoint has no live flow to this
        // remote. A dead flow (of an earlier owner of the port) may hold it,
        // or, if the caller's clock went back, one revived with its
        // unlinked mapping: either goes, so the maps stay consistent.
        if let Some(j) = self.find(false, &conn.in_key(), now) {
            self.remove(j);
        }
        // A forwarded flow's inside tuple may be an SNAT flow's (the
        // server once sent from that port to that remote): the new one wins.
        if let Some(j) = self.find(true, &conn.out_key(), now) {
            self.remove(j);
        }
        let idx = slab_put(&mut self.conns, &mut self.free, conn);
        self.by_inside.insert(conn.out_key(), idx as u32);
        self.by_outside.insert(conn.in_key(), idx as u32);
        idx
    }

    /// The live mapping in `map_by_inside` (`inside`) or `map_by_outside`
    /// under `key`; a dead one is unlinked on the way.
    fn find_map(&mut self, inside: bool, key: &Key, now: u64) -> Option<usize> {
        let map = if inside {
            &self.map_by_inside
        } else {
            &self.map_by_outside
        };
        let m = *map.get(key)? as usize;
        if self.maps[m].expires <= now {
            self.unlink_map(m);
            return None;
        }
        Some(m)
    }

    /// The mapping a new flow `key` through `pool` uses: its inside
    /// endpoint's, or a new one with a free outside endpoint.
    fn mapping(&mut self, key: &Tuple, pool: &Pool, now: u64) -> Result<usize, NatDrop> {
        let in_key = map_in_key(key.proto, key.a, pool.rule);
        if let Some(m) = self.find_map(true, &in_key, now) {
            if pool.contains(self.maps[m].outside.ip) {
                return Ok(m);
            }
            // The rule's pool changed under it: its flows keep the old
            // outside endpoint (still reserved), new ones get a new one.
            self.map_by_inside.remove(&in_key);
            self.maps[m].attached = false;
        }
        let outside = self.pick_outside(key.proto, key.a, pool, now)?;
        let mapping = Mapping {
            proto: key.proto,
            inside: key.a,
            outside,
            rule: pool.rule,
            refs: 0,
            expires: expiry(now, 1),
            attached: true,
            fixed: false,
        };
        let m = slab_put(&mut self.maps, &mut self.maps_free, mapping);
        self.map_by_inside.insert(in_key, m as u32);
        self.map_by_outside.insert(mapping.out_key(), m as u32);
        Ok(m)
    }

    /// An outside endpoint for `inside` no live mapping holds.
    fn pick_outside(
        &mut self,
        proto: u8,
        inside: Endpoint,
        pool: &Pool,
        now: u64,
    ) -> Result<Endpoint, NatDrop> {
        let span = u64::from(pool.last - pool.first) + 1;
        let ip = pool.first + (mix(u64::from(inside.ip)) % span) as u32;
        let (lo, hi) = if proto == PROTO_ICMP {
            (0u16, u16::MAX)
        } else {
            (
                pool.port_lo.min(pool.port_hi),
                pool.port_hi.max(pool.port_lo),
            )
        };
        let range = u32::from(hi - lo) + 1;
        let seed = mix(u64::from(inside.ip) << 24 | u64::from(inside.port) << 8 | u64::from(proto));
        // The inside port first, then ports scattered by hashes of the
        // endpoint (all of a range no larger than the tries, in turn): not
        // a walk, which a block of preserved ports (many hosts using the
        // same ephemeral ports) would hold for longer than the tries last.
        let preferred = (lo..=hi)
            .contains(&inside.port)
            .then(|| u32::from(inside.port - lo));
        let probe = move |k: u32| {
            if range <= MAX_PORT_TRIES {
                (seed as u32).wrapping_add(k) % range
            } else {
                (mix(seed ^ u64::from(k)) % u64::from(range)) as u32
            }
        };
        for off in preferred
            .into_iter()
            .chain((0..MAX_PORT_TRIES.min(range)).map(probe))
        {
            let outside = Endpoint {
                ip,
                port: lo + off as u16,
            };
            if self
                .find_map(false, &map_out_key(proto, outside), now)
                .is_none()
            {
                return Ok(outside);
            }
        }
        Err(NatDrop::PortsExhausted)
    }

    fn remove(&mut self, i: usize) {
        let c = self.conns[i];
        if c.expires == 0 {
            return;
        }
        self.by_inside.remove(&c.out_key());
        self.by_outside.remove(&c.in_key());
        self.conns[i].expires = 0;
        self.free.push(i as u32);
        let m = c.map as usize;
        let mapping = &mut self.maps[m];
        mapping.refs = mapping.refs.saturating_sub(1);
        if mapping.refs == 0 {
            self.unlink_map(m);
            self.maps_free.push(m as u32);
        }
    }

    /// Takes mapping `m` out of the maps (where they still lead to it).
    fn unlink_map(&mut self, m: usize) {
        let mapping = &mut self.maps[m];
        mapping.attached = false;
        let (in_key, out_key) = (mapping.in_key(), mapping.out_key());
        if self.map_by_inside.get(&in_key) == Some(&(m as u32)) {
            self.map_by_inside.remove(&in_key);
        }
        if self.map_by_outside.get(&out_key) == Some(&(m as u32)) {
            self.map_by_outside.remove(&out_key);
        }
    }
}

/// Updates a TCP flow's state with the flags of a packet in one direction.
fn tcp_track(c: &mut Conn, flags: u8, out: bool) {
    if flags & TCP_RST != 0 {
        c.state = State::Closed;
        return;
    }
    if out && flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        // A new connection, possibly reusing a closed flow's tuple.
        c.state = State::SynSent;
        c.fin_out = false;
        c.fin_in = false;
        return;
    }
    if flags & TCP_FIN != 0 {
        if out {
            c.fin_out = true;
        } else {
            c.fin_in = true;
        }
    }
    c.state = match (c.state, out) {
        (State::Closed, _) => State::Closed,
        (_, _) if c.fin_out && c.fin_in => State::TimeWait,
        (_, _) if c.fin_out || c.fin_in => State::FinWait,
        (State::New | State::SynSent, false) => State::Established,
        (s, _) => s,
    };
}

fn timeout(t: &Timeouts, c: &Conn) -> u64 {
    match c.proto {
        PROTO_TCP => match c.state {
            State::Established => t.tcp_established,
            State::Closed => t.tcp_reset,
            _ => t.tcp_transitory,
        },
        PROTO_UDP => t.udp,
        _ => t.icmp,
    }
}

/// The clock reading `secs` after `now`, never 0 (which marks a free slot).
fn expiry(now: u64, secs: u64) -> u64 {
    now.saturating_add(secs.saturating_mul(NS_PER_S)).max(1)
}

/// A 64-bit mixer (the finaliser of SplitMix64).
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks an IPv4 packet far enough to translate it.
fn parse(pkt: &[u8]) -> Result<Parsed, NatDrop> {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 {
        return Err(NatDrop::Malformed);
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let total = usize::from(be16(pkt, 2));
    if ihl < 20 || total < ihl || total > pkt.len() {
        return Err(NatDrop::Malformed);
    }
    // MF set or a non-zero offset.
    if be16(pkt, 6) & 0x3fff != 0 {
        return Err(NatDrop::Fragment);
    }
    let proto = pkt[9];
    let l4 = ihl;
    let need = match proto {
        PROTO_TCP => 20,
        PROTO_UDP | PROTO_ICMP => 8,
        _ => 0,
    };
    if total < l4 + need {
        return Err(NatDrop::Malformed);
    }
    let mut p = Parsed {
        proto,
        src: be32(pkt, 12),
        dst: be32(pkt, 16),
        l4,
        sport: 0,
        dport: 0,
        csum: 0,
        tcp_flags: 0,
        icmp_type: 0,
    };
    match proto {
        PROTO_TCP => {
            p.sport = be16(pkt, l4);
            p.dport = be16(pkt, l4 + 2);
            p.csum = l4 + 16;
            p.tcp_flags = pkt[l4 + 13];
        }
        PROTO_UDP => {
            p.sport = be16(pkt, l4);
            p.dport = be16(pkt, l4 + 2);
            p.csum = l4 + 6;
        }
        PROTO_ICMP => {
            p.icmp_type = pkt[l4];
            // The echo identifier, standing in for both ports.
            p.sport = be16(pkt, l4 + 4);
            p.dport = p.sport;
            p.csum = l4 + 2;
        }
        _ => {}
    }
    Ok(p)
}

/// ICMP types that quote the packet they are about: destination
/// unreachable, time exceeded, parameter problem.
fn is_icmp_error(t: u8) -> bool {
    matches!(t, 3 | 11 | 12)
}

/// The header an ICMP error quotes, as far as translation needs it.
#[derive(Debug, Clone, Copy)]
struct Quoted {
    proto: u8,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    /// Offsets within the quote of the source and destination port (for
    /// ICMP echo both are the identifier's) and of the L4 checksum, if the
    /// quote reaches it.
    sport_at: usize,
    dport_at: usize,
    csum_at: Option<usize>,
}

impl Quoted {
    fn src(&self) -> Endpoint {
        Endpoint {
            ip: self.src,
            port: self.sport,
        }
    }

    fn dst(&self) -> Endpoint {
        Endpoint {
            ip: self.dst,
            port: self.dport,
        }
    }
}

/// Parses a quoted IPv4 header and the first 8 bytes after it (all an
/// error must quote, RFC 792). Fragments other than the first carry no
/// ports: `None`, as for anything not TCP, UDP or an echo request.
fn quoted(q: &[u8]) -> Option<Quoted> {
    if q.len() < 20 || q[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(q[0] & 0x0f) * 4;
    if ihl < 20 || q.len() < ihl + 8 || be16(q, 6) & 0x1fff != 0 {
        return None;
    }
    let (src, dst) = (be32(q, 12), be32(q, 16));
    match q[9] {
        proto @ (PROTO_TCP | PROTO_UDP) => {
            let csum = ihl + if proto == PROTO_TCP { 16 } else { 6 };
            Some(Quoted {
                proto,
                src,
                dst,
                sport: be16(q, ihl),
                dport: be16(q, ihl + 2),
                sport_at: ihl,
                dport_at: ihl + 2,
                csum_at: (q.len() >= csum + 2).then_some(csum),
            })
        }
        // Our echo request, quoted by a remote's error: the identifier is
        // the source "port", the remote's is 0 (see `outbound`).
        PROTO_ICMP if q[ihl] == ICMP_ECHO_REQUEST => Some(Quoted {
            proto: PROTO_ICMP,
            src,
            dst,
            sport: be16(q, ihl + 4),
            dport: 0,
            sport_at: ihl + 4,
            dport_at: ihl + 4,
            csum_at: Some(ihl + 2),
        }),
        _ => None,
    }
}

/// Rewrites the source (`out`) or destination address and port of a parsed
/// packet to `to`, updating the checksums.
fn rewrite(pkt: &mut [u8], p: &Parsed, partial: bool, out: bool, to: Endpoint) {
    let (ip_at, old_ip, port_at, old_port) = match (p.proto, out) {
        (PROTO_ICMP, _) => (
            if out { 12 } else { 16 },
            if out { p.src } else { p.dst },
            p.l4 + 4,
            p.sport,
        ),
        (_, true) => (12, p.src, p.l4, p.sport),
        (_, false) => (16, p.dst, p.l4 + 2, p.dport),
    };
    let ip_delta = Delta::default().replace32(old_ip, to.ip);
    let port_delta = Delta::default().replace16(old_port, to.port);

    pkt[ip_at..ip_at + 4].copy_from_slice(&to.ip.to_be_bytes());
    pkt[port_at..port_at + 2].copy_from_slice(&to.port.to_be_bytes());
    update_complemented(pkt, 10, ip_delta);

    match p.proto {
        PROTO_TCP | PROTO_UDP => {
            let old = be16(pkt, p.csum);
            if p.proto == PROTO_UDP && old == 0 && !partial {
                return; // no checksum (RFC 768)
            }
            let new = if partial {
                // The pseudo-header sum, folded and not complemented; the
                // ports are summed when the checksum is completed.
                ip_delta.apply(old)
            } else {
                let c = !ip_delta.plus(port_delta).apply(!old);
                if p.proto == PROTO_UDP && c == 0 {
                    0xffff
                } else {
                    c
                }
            };
            pkt[p.csum..p.csum + 2].copy_from_slice(&new.to_be_bytes());
        }
        _ => {
            // ICMP's checksum has no pseudo-header; a partial one is
            // completed over the identifier later.
            if !partial {
                update_complemented(pkt, p.csum, port_delta);
            }
        }
    }
}

fn update_complemented(pkt: &mut [u8], at: usize, d: Delta) {
    let new = !d.apply(!be16(pkt, at));
    pkt[at..at + 2].copy_from_slice(&new.to_be_bytes());
}

/// A ones'-complement difference to add to a sum: `~m + m'` for each replaced
/// word (RFC 1624, eqn. 3).
#[derive(Debug, Clone, Copy, Default)]
struct Delta(u32);

impl Delta {
    fn replace16(self, old: u16, new: u16) -> Delta {
        Delta(self.0 + u32::from(!old) + u32::from(new))
    }

    fn replace32(self, old: u32, new: u32) -> Delta {
        self.replace16((old >> 16) as u16, (new >> 16) as u16)
            .replace16(old as u16, new as u16)
    }

    fn plus(self, o: Delta) -> Delta {
        Delta(self.0 + o.0)
    }

    /// `sum + delta`, folded to 16 bits.
    fn apply(self, sum: u16) -> u16 {
        let mut s = u64::from(self.0) + u64::from(sum);
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }
}

#[cfg(test)]
mod tests;
