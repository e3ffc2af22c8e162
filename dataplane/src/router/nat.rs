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

use crate::offload::Csum;
use hashbrown::HashMap;
use std::net::Ipv4Addr;

/// Default limit on tracked flows.
pub const DEFAULT_MAX_CONNS: usize = 262_144;
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

/// The SNAT flow table.
#[derive(Debug)]
pub struct Nat {
    conns: Vec<Conn>,
    free: Vec<u32>,
    by_inside: HashMap<Key, u32, KeyHash>,
    by_outside: HashMap<Key, u32, KeyHash>,
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
            by_inside: HashMap::with_hasher(KeyHash(seed)),
            by_outside: HashMap::with_hasher(KeyHash(seed.rotate_left(32))),
            maps: Vec::new(),
            maps_free: Vec::new(),
            map_by_inside: HashMap::with_hasher(KeyHash(seed.rotate_left(16))),
            map_by_outside: HashMap::with_hasher(KeyHash(seed.rotate_left(48))),
            max_conns,
            timeouts,
            sweep_at: 0,
        }
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
        // The target's flow to the sender, as its replies would find it.
        if let Some(j) = self.find(false, &Key::new(source, dst, p.proto), now) {
            self.track_in(j, &p, now);
        }
        rewrite(pkt, &p, partial, true, source);
        rewrite(pkt, &p, partial, false, target);
        Ok(true)
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
            tcp_track(&mut self.conns[idx], p.tcp_flags, true);
        }
        self.touch(idx, now);
        Ok(idx)
    }

    /// Tracks an inbound packet (a reply) on flow `idx`.
    fn track_in(&mut self, idx: usize, p: &Parsed, now: u64) {
        let c = &mut self.conns[idx];
        if p.proto == PROTO_TCP {
            tcp_track(c, p.tcp_flags, false);
        } else {
            c.state = State::Established;
        }
        self.touch(idx, now);
    }

    /// Whether live flow `i` may carry packets through `pool`: same rule,
    /// and its mapping still the rule's, in the pool.
    fn usable(&self, i: usize, pool: &Pool) -> bool {
        let c = &self.conns[i];
        c.rule == pool.rule && pool.contains(c.outside.ip) && self.maps[c.map as usize].attached
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
        // The reply key is free of live flows: the outside endpoint is this
        // mapping's alone, and its inside endpoint has no live flow to this
        // remote. A dead flow (of an earlier owner of the port) may hold it,
        // or, if the caller's clock went back, one revived with its
        // unlinked mapping: either goes, so the maps stay consistent.
        if let Some(j) = self.find(false, &conn.in_key(), now) {
            self.remove(j);
        }
        let idx = match self.free.pop() {
            Some(i) => {
                self.conns[i as usize] = conn;
                i as usize
            }
            None => {
                self.conns.push(conn);
                self.conns.len() - 1
            }
        };
        self.by_inside.insert(conn.out_key(), idx as u32);
        self.by_outside.insert(conn.in_key(), idx as u32);
        Ok(idx)
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
        };
        let m = match self.maps_free.pop() {
            Some(i) => {
                self.maps[i as usize] = mapping;
                i as usize
            }
            None => {
                self.maps.push(mapping);
                self.maps.len() - 1
            }
        };
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
mod tests {
    use super::*;
    use crate::test_rng::Rng;
    use etherparse::{IcmpEchoHeader, Icmpv4Type, PacketBuilder, SlicedPacket, TransportSlice};

    const S: u64 = NS_PER_S;
    const INSIDE: [u8; 4] = [10, 0, 0, 2];
    const REMOTE: [u8; 4] = [198, 51, 100, 7];
    const OUTSIDE: [u8; 4] = [192, 0, 2, 1];

    fn pool() -> Pool {
        Pool::new(1, OUTSIDE.into(), OUTSIDE.into()).unwrap()
    }

    fn tcp(
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        flags: &str,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, 1000, 65535);
        for f in flags.chars() {
            b = match f {
                'S' => b.syn(),
                'A' => b.ack(1),
                'F' => b.fin(),
                'R' => b.rst(),
                'P' => b.psh(),
                _ => b,
            };
        }
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut v, payload)
            .unwrap();
        v
    }

    fn echo(src: [u8; 4], dst: [u8; 4], reply: bool, id: u16) -> Vec<u8> {
        let mut v = Vec::new();
        let b = PacketBuilder::ipv4(src, dst, 64);
        let b = if reply {
            b.icmpv4_echo_reply(id, 1)
        } else {
            b.icmpv4_echo_request(id, 1)
        };
        b.write(&mut v, b"ping").unwrap();
        v
    }

    /// Checks every checksum in `pkt` from scratch and returns (src, sport,
    /// dst, dport) with ICMP's identifier as both ports.
    fn check(pkt: &[u8]) -> ([u8; 4], u16, [u8; 4], u16) {
        let s = SlicedPacket::from_ip(pkt).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net else {
            panic!("not ipv4")
        };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum(), "ip checksum");
        let (src, dst) = (h.source, h.destination);
        let payload = ip.payload().payload;
        match s.transport.unwrap() {
            TransportSlice::Tcp(t) => {
                let th = t.to_header();
                assert_eq!(
                    th.checksum,
                    th.calc_checksum_ipv4(&h, t.payload()).unwrap(),
                    "tcp checksum"
                );
                (src, th.source_port, dst, th.destination_port)
            }
            TransportSlice::Udp(u) => {
                let uh = u.to_header();
                if uh.checksum != 0 {
                    assert_eq!(
                        uh.checksum,
                        uh.calc_checksum_ipv4(&h, u.payload()).unwrap(),
                        "udp checksum"
                    );
                }
                (src, uh.source_port, dst, uh.destination_port)
            }
            TransportSlice::Icmpv4(i) => {
                let ih = i.header();
                assert_eq!(
                    ih.checksum,
                    ih.icmp_type.calc_checksum(i.payload()),
                    "icmp checksum"
                );
                let id = match ih.icmp_type {
                    Icmpv4Type::EchoRequest(IcmpEchoHeader { id, .. })
                    | Icmpv4Type::EchoReply(IcmpEchoHeader { id, .. }) => id,
                    other => panic!("unexpected {other:?}"),
                };
                let _ = payload;
                (src, id, dst, id)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn tcp_flow_out_and_back() {
        let mut nat = Nat::default();
        let mut syn = tcp(INSIDE, 40000, REMOTE, 80, "S", b"");
        let out = nat.outbound(&mut syn, false, &pool(), 10 * S).unwrap();
        assert_eq!(
            out,
            Endpoint {
                ip: u32::from_be_bytes(OUTSIDE),
                port: 40000
            },
            "keeps the port"
        );
        assert_eq!(check(&syn), (OUTSIDE, 40000, REMOTE, 80));

        let mut synack = tcp(REMOTE, 80, OUTSIDE, 40000, "SA", b"");
        assert_eq!(
            nat.inbound(&mut synack, false, 11 * S),
            Ok(Inbound::Translated)
        );
        assert_eq!(check(&synack), (REMOTE, 80, INSIDE, 40000));

        let info: Vec<_> = nat.conns(11 * S).collect();
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].proto, "tcp");
        assert_eq!(info[0].state, State::Established);
        assert_eq!(info[0].expires_s, 7440);
        assert_eq!(info[0].inside.to_string(), "10.0.0.2:40000");
        assert_eq!(info[0].outside.to_string(), "192.0.2.1:40000");
        assert_eq!(info[0].remote.to_string(), "198.51.100.7:80");

        // Data both ways, then FIN both ways.
        let mut data = tcp(INSIDE, 40000, REMOTE, 80, "AP", b"GET / HTTP/1.0\r\n\r\n");
        nat.outbound(&mut data, false, &pool(), 12 * S).unwrap();
        assert_eq!(check(&data), (OUTSIDE, 40000, REMOTE, 80));
        let mut fin = tcp(INSIDE, 40000, REMOTE, 80, "AF", b"");
        nat.outbound(&mut fin, false, &pool(), 13 * S).unwrap();
        assert_eq!(nat.conns(13 * S).next().unwrap().state, State::FinWait);
        let mut fin2 = tcp(REMOTE, 80, OUTSIDE, 40000, "AF", b"odd");
        assert_eq!(
            nat.inbound(&mut fin2, false, 14 * S),
            Ok(Inbound::Translated)
        );
        assert_eq!(check(&fin2), (REMOTE, 80, INSIDE, 40000));
        let c = nat.conns(14 * S).next().unwrap();
        assert_eq!((c.state, c.expires_s), (State::TimeWait, 240));
        assert!(nat.conns(14 * S + 240 * S).next().is_none(), "expired");
    }

    #[test]
    fn udp_and_icmp_flows() {
        let mut nat = Nat::default();
        let mut q = udp(INSIDE, 5353, REMOTE, 53, b"query?");
        nat.outbound(&mut q, false, &pool(), S).unwrap();
        assert_eq!(check(&q), (OUTSIDE, 5353, REMOTE, 53));
        let mut a = udp(REMOTE, 53, OUTSIDE, 5353, b"answer!");
        assert_eq!(nat.inbound(&mut a, false, 2 * S), Ok(Inbound::Translated));
        assert_eq!(check(&a), (REMOTE, 53, INSIDE, 5353));

        let mut ping = echo(INSIDE, REMOTE, false, 77);
        nat.outbound(&mut ping, false, &pool(), 3 * S).unwrap();
        assert_eq!(check(&ping), (OUTSIDE, 77, REMOTE, 77));
        let mut pong = echo(REMOTE, OUTSIDE, true, 77);
        assert_eq!(
            nat.inbound(&mut pong, false, 4 * S),
            Ok(Inbound::Translated)
        );
        assert_eq!(check(&pong), (REMOTE, 77, INSIDE, 77));

        let mut by_proto: Vec<_> = nat.conns(4 * S).map(|c| (c.proto, c.expires_s)).collect();
        by_proto.sort();
        assert_eq!(by_proto, [("icmp", 60), ("udp", 298)]);

        // A reply after the timeout finds nothing.
        let mut late = udp(REMOTE, 53, OUTSIDE, 5353, b"late");
        let before = late.clone();
        assert_eq!(
            nat.inbound(&mut late, false, 2 * S + 300 * S),
            Ok(Inbound::NotTranslated)
        );
        assert_eq!(late, before, "untouched");
        assert_eq!(
            nat.len(),
            1,
            "the expired UDP flow was removed by the lookup"
        );
        assert_eq!(
            nat.conns(302 * S).count(),
            0,
            "the ICMP one is dead, not yet swept"
        );
    }

    #[test]
    fn udp_without_checksum_stays_without() {
        let mut nat = Nat::default();
        let mut q = udp(INSIDE, 5353, REMOTE, 53, b"query?");
        q[20 + 6] = 0;
        q[20 + 7] = 0;
        nat.outbound(&mut q, false, &pool(), S).unwrap();
        assert_eq!(&q[26..28], &[0, 0]);
        assert_eq!(check(&q), (OUTSIDE, 5353, REMOTE, 53));
    }

    #[test]
    fn unsolicited_inbound_is_untouched() {
        let mut nat = Nat::default();
        for mut p in [
            tcp(REMOTE, 80, OUTSIDE, 40000, "S", b""),
            echo(REMOTE, OUTSIDE, false, 1),
            udp(REMOTE, 1, OUTSIDE, 2, b""),
        ] {
            let before = p.clone();
            assert_eq!(nat.inbound(&mut p, false, S), Ok(Inbound::NotTranslated));
            assert_eq!(p, before);
        }
        // A reply from another remote endpoint than the flow's is not the
        // flow's (address- and port-dependent filtering).
        let mut q = udp(INSIDE, 5353, REMOTE, 53, b"q");
        nat.outbound(&mut q, false, &pool(), S).unwrap();
        let mut other = udp(REMOTE, 54, OUTSIDE, 5353, b"a");
        assert_eq!(
            nat.inbound(&mut other, false, S),
            Ok(Inbound::NotTranslated)
        );
        let mut other = udp([203, 0, 113, 9], 53, OUTSIDE, 5353, b"a");
        assert_eq!(
            nat.inbound(&mut other, false, S),
            Ok(Inbound::NotTranslated)
        );
    }

    #[test]
    fn port_collisions_get_other_ports_and_replies_find_their_flow() {
        let mut nat = Nat::default();
        // Two inside hosts use the same source port to the same remote.
        let hosts = [[10, 0, 0, 2], [10, 0, 0, 3], [10, 0, 0, 4]];
        let mut outs = Vec::new();
        for h in hosts {
            let mut p = udp(h, 40000, REMOTE, 53, b"x");
            outs.push(nat.outbound(&mut p, false, &pool(), S).unwrap());
        }
        assert_eq!(outs[0].port, 40000);
        assert!(outs[1].port != 40000 && outs[2].port != 40000 && outs[1].port != outs[2].port);
        for (h, o) in hosts.iter().zip(&outs) {
            let mut r = udp(REMOTE, 53, OUTSIDE, o.port, b"y");
            assert_eq!(nat.inbound(&mut r, false, S), Ok(Inbound::Translated));
            assert_eq!(check(&r), (REMOTE, 53, *h, 40000));
        }
        // The same inside endpoint to another remote endpoint keeps its
        // mapping (endpoint-independent), not the now free-looking 40000.
        let mut p = udp([10, 0, 0, 3], 40000, [203, 0, 113, 1], 53, b"x");
        assert_eq!(
            nat.outbound(&mut p, false, &pool(), S).unwrap().port,
            outs[1].port
        );
    }

    #[test]
    fn pool_of_addresses_keeps_a_host_on_one_address() {
        let pool = Pool::new(1, [192, 0, 2, 10].into(), [192, 0, 2, 13].into()).unwrap();
        let mut nat = Nat::default();
        let mut seen = std::collections::HashSet::new();
        for host in 1..=40u8 {
            let mut first = None;
            for port in [1000u16, 2000, 3000] {
                let mut p = udp([10, 0, 1, host], port, REMOTE, 53, b"x");
                let o = nat.outbound(&mut p, false, &pool, S).unwrap();
                assert!(pool.contains(o.ip));
                assert_eq!(*first.get_or_insert(o.ip), o.ip, "one address per host");
            }
            seen.insert(first.unwrap());
        }
        assert!(seen.len() > 1, "hosts spread over the pool");
    }

    #[test]
    fn limits_refuse_new_flows_and_count() {
        let mut nat = Nat::new(2, Timeouts::default());
        for port in [1, 2] {
            let mut p = udp(INSIDE, port, REMOTE, 53, b"x");
            nat.outbound(&mut p, false, &pool(), S).unwrap();
        }
        let mut p = udp(INSIDE, 3, REMOTE, 53, b"x");
        let before = p.clone();
        assert_eq!(
            nat.outbound(&mut p, false, &pool(), S),
            Err(NatDrop::TableFull)
        );
        assert_eq!(p, before);
        // Known flows still pass; after expiry there is room again.
        let mut p1 = udp(INSIDE, 1, REMOTE, 53, b"x");
        assert!(nat.outbound(&mut p1, false, &pool(), 2 * S).is_ok());
        assert!(nat.outbound(&mut p, false, &pool(), 302 * S).is_ok());

        // A pool of four ports, all taken for this remote endpoint.
        let mut tiny = pool();
        tiny.port_lo = 2000;
        tiny.port_hi = 2003;
        let mut nat = Nat::default();
        for port in 0..4u16 {
            let mut p = udp(INSIDE, 5000 + port, REMOTE, 53, b"x");
            let o = nat.outbound(&mut p, false, &tiny, S).unwrap();
            assert!((2000..=2003).contains(&o.port));
        }
        let mut p = udp(INSIDE, 6000, REMOTE, 53, b"x");
        assert_eq!(
            nat.outbound(&mut p, false, &tiny, S),
            Err(NatDrop::PortsExhausted)
        );
    }

    #[test]
    fn refuses_what_it_cannot_translate() {
        let mut nat = Nat::default();
        let mut frag = udp(INSIDE, 1, REMOTE, 2, b"x");
        frag[6] = 0x20; // MF
        assert_eq!(
            nat.outbound(&mut frag, false, &pool(), S),
            Err(NatDrop::Fragment)
        );
        let mut gre = udp(INSIDE, 1, REMOTE, 2, b"x");
        gre[9] = 47;
        assert_eq!(
            nat.outbound(&mut gre, false, &pool(), S),
            Err(NatDrop::Unsupported)
        );
        let mut reply = echo(INSIDE, REMOTE, true, 5);
        assert_eq!(
            nat.outbound(&mut reply, false, &pool(), S),
            Err(NatDrop::Unsupported)
        );
        let mut short = tcp(INSIDE, 1, REMOTE, 2, "S", b"");
        short.truncate(30);
        short[2..4].copy_from_slice(&30u16.to_be_bytes());
        assert_eq!(
            nat.outbound(&mut short, false, &pool(), S),
            Err(NatDrop::Malformed)
        );
        assert!(nat.is_empty());
    }

    /// A sender's partial checksum: the folded pseudo-header sum.
    fn pseudo(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u16 {
        let mut s = 0u32;
        for w in [src, dst] {
            s += u32::from(u16::from_be_bytes([w[0], w[1]]));
            s += u32::from(u16::from_be_bytes([w[2], w[3]]));
        }
        s += u32::from(proto) + u32::from(len);
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    /// Completes a TCP packet's partial checksum, as an egress would.
    fn complete(p: &mut [u8]) {
        let mut s = u32::from(be16(p, 36));
        for c in p[20..].chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        s -= u32::from(be16(p, 36));
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        p[36..38].copy_from_slice(&(!(s as u16)).to_be_bytes());
    }

    #[test]
    fn partial_checksum_gets_the_pseudo_header_only() {
        let mut nat = Nat::default();
        let mut p = tcp(INSIDE, 40000, REMOTE, 80, "A", &[7u8; 100]);
        let len = (p.len() - 20) as u16;
        p[36..38].copy_from_slice(&pseudo(INSIDE, REMOTE, 6, len).to_be_bytes());
        nat.outbound(&mut p, true, &pool(), S).unwrap();
        assert_eq!(be16(&p, 36), pseudo(OUTSIDE, REMOTE, 6, len));
        // Completing it (as an egress would) gives a valid packet.
        complete(&mut p);
        assert_eq!(check(&p), (OUTSIDE, 40000, REMOTE, 80));
    }

    #[test]
    fn rst_closes_quickly_and_syn_reopens() {
        let mut nat = Nat::default();
        let mut syn = tcp(INSIDE, 1234, REMOTE, 80, "S", b"");
        nat.outbound(&mut syn, false, &pool(), S).unwrap();
        let mut rst = tcp(REMOTE, 80, OUTSIDE, 1234, "RA", b"");
        nat.inbound(&mut rst, false, S).unwrap();
        let c = nat.conns(S).next().unwrap();
        assert_eq!((c.state, c.expires_s), (State::Closed, 10));
        let mut syn = tcp(INSIDE, 1234, REMOTE, 80, "S", b"");
        nat.outbound(&mut syn, false, &pool(), 2 * S).unwrap();
        let c = nat.conns(2 * S).next().unwrap();
        assert_eq!((c.state, c.expires_s), (State::SynSent, 240));
    }

    #[test]
    fn expire_sweeps_in_bounded_steps_and_flush_rule() {
        let mut nat = Nat::default();
        for port in 0..1000u16 {
            let mut p = udp(INSIDE, 10000 + port, REMOTE, 53, b"x");
            nat.outbound(&mut p, false, &pool(), S).unwrap();
        }
        let other = Pool { rule: 2, ..pool() };
        for port in 0..10u16 {
            let mut p = udp(INSIDE, 30000 + port, REMOTE, 53, b"x");
            nat.outbound(&mut p, false, &other, 1000 * S).unwrap();
        }
        assert_eq!(nat.len(), 1010);
        assert_eq!(nat.expire(400 * S, 100), 100);
        let mut total = 100;
        for _ in 0..20 {
            total += nat.expire(400 * S, 100);
        }
        assert_eq!(total, 1000);
        assert_eq!(nat.len(), 10);
        assert_eq!(nat.flush_rule(2), 10);
        assert!(nat.is_empty());
    }

    /// Random traffic of many flows, both ways: every translated packet's
    /// checksums verify from scratch, every reply maps back to the flow's
    /// inside endpoint, and the maps and slab stay consistent.
    #[test]
    fn random_flows_round_trip() {
        for seed in 1..=4u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut nat = Nat::new(500, Timeouts::default());
            let pool = Pool::new(1, [192, 0, 2, 1].into(), [192, 0, 2, 2].into()).unwrap();
            let mut now = S;
            for _ in 0..3000 {
                now += rng.below(2 * S);
                let inside = [10, 0, rng.below(2) as u8, 1 + rng.below(20) as u8];
                let remote = [198, 51, 100, 1 + rng.below(3) as u8];
                let sport = 1000 + rng.below(30) as u16;
                let dport = [53u16, 80, 443][rng.index(3)];
                let payload = vec![rng.next() as u8; rng.index(40)];
                let mut p = match rng.below(3) {
                    0 => tcp(
                        inside,
                        sport,
                        remote,
                        dport,
                        ["S", "A", "AP", "AF"][rng.index(4)],
                        &payload,
                    ),
                    1 => udp(inside, sport, remote, dport, &payload),
                    _ => echo(inside, remote, false, sport),
                };
                let icmp = p[9] == 1;
                let o = match nat.outbound(&mut p, false, &pool, now) {
                    Ok(o) => o,
                    Err(e) => {
                        assert_eq!(e, NatDrop::TableFull);
                        continue;
                    }
                };
                let (s, sp, d, dp) = check(&p);
                assert_eq!((u32::from_be_bytes(s), sp), (o.ip, o.port));
                assert_eq!((d, dp), (remote, if icmp { o.port } else { dport }));
                let mut r = match p[9] {
                    6 => tcp(remote, dport, s, sp, "A", &payload),
                    17 => udp(remote, dport, s, sp, &payload),
                    _ => echo(remote, s, true, sp),
                };
                assert_eq!(nat.inbound(&mut r, false, now), Ok(Inbound::Translated));
                assert_eq!(
                    check(&r),
                    (remote, if icmp { sport } else { dport }, inside, sport)
                );
                if rng.chance(5) {
                    nat.expire(now, 50);
                }
                if rng.chance(4) {
                    hairpin_some(&mut nat, &mut rng, &pool, now);
                }
                check_invariants(&nat, now);
            }
        }
    }

    /// Sends a packet from a random inside endpoint to a random live TCP or
    /// UDP mapping's outside endpoint and checks that it arrives, from the
    /// sender's outside endpoint, at the mapping's inside endpoint.
    fn hairpin_some(nat: &mut Nat, rng: &mut Rng, pool: &Pool, now: u64) {
        let targets: Vec<ConnInfo> = nat.conns(now).filter(|c| c.proto != "icmp").collect();
        if targets.is_empty() {
            return;
        }
        let t = targets[rng.index(targets.len())];
        let from = [10, 0, rng.below(2) as u8, 1 + rng.below(20) as u8];
        let sport = 1000 + rng.below(30) as u16;
        let to = t.outside.ip.to_be_bytes();
        let mut p = match t.proto {
            "tcp" => tcp(from, sport, to, t.outside.port, "A", b"hairpin"),
            _ => udp(from, sport, to, t.outside.port, b"hairpin"),
        };
        let before = p.clone();
        match nat.hairpin(&mut p, false, pool, now) {
            Ok(true) => {}
            Err(NatDrop::TableFull) => return assert_eq!(p, before),
            other => panic!("{other:?}"),
        }
        let (s, sp, d, dp) = check(&p);
        assert_eq!((u32::from_be_bytes(d), dp), (t.inside.ip, t.inside.port));
        let sender = nat
            .conns(now)
            .find(|c| c.inside == ep(from, sport) && c.remote == t.outside)
            .unwrap();
        assert_eq!(sender.outside, ep(s, sp));
    }

    /// A clock that jumps back and forth (the fuzz target's does) may revive
    /// flows of mappings already unlinked, but breaks no structure.
    #[test]
    fn a_clock_going_back_breaks_nothing() {
        let mut rng = Rng(0xc10c);
        let pool = Pool {
            port_lo: 1024,
            port_hi: 1031,
            ..Pool::new(1, [192, 0, 2, 1].into(), [192, 0, 2, 1].into()).unwrap()
        };
        let mut nat = Nat::new(40, Timeouts::default());
        for _ in 0..20_000 {
            let now = rng.below(2000) * S;
            let host = [10, 0, 0, 1 + rng.below(4) as u8];
            let port = 1024 + rng.below(10) as u16;
            let (remote, rport) = if rng.chance(40) {
                (OUTSIDE, 1024 + rng.below(10) as u16)
            } else {
                ([198, 51, 100, 1 + rng.below(3) as u8], 53)
            };
            let flags = ["S", "SA", "A", "R", "AF"][rng.index(5)];
            let mut p = match rng.below(3) {
                0 => tcp(host, port, remote, rport, flags, b""),
                1 => udp(host, port, remote, rport, b"x"),
                _ => echo(host, remote, false, port),
            };
            match rng.below(5) {
                0 => {
                    let _ = nat.hairpin(&mut p, rng.chance(50), &pool, now);
                }
                1 => {
                    // A reply from outside, maybe much later.
                    let o = nat.outbound(&mut p, false, &pool, now);
                    if let (Ok(o), 17) = (o, p[9]) {
                        let mut r = udp(remote, rport, o.ip.to_be_bytes(), o.port, b"y");
                        let _ = nat.inbound(&mut r, false, now + rng.below(400) * S);
                    }
                }
                2 => {
                    nat.expire(now, rng.index(20));
                }
                3 if rng.chance(2) => {
                    nat.flush_rule(1);
                }
                _ => {
                    let _ = nat.outbound(&mut p, rng.chance(50), &pool, now);
                }
            }
            check_structure(&nat);
        }
    }

    /// An ICMP error from `from` to `to` quoting `quote`, checksums valid.
    fn icmp_error(from: [u8; 4], to: [u8; 4], t: Icmpv4Type, quote: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4(from, to, 64)
            .icmpv4(t)
            .write(&mut v, quote)
            .unwrap();
        v
    }

    /// Checks the outer IP and ICMP checksums of an error; returns its
    /// addresses and the quote.
    fn check_error(pkt: &[u8]) -> ([u8; 4], [u8; 4], Vec<u8>) {
        let s = SlicedPacket::from_ip(pkt).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net else {
            panic!("not ipv4")
        };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum(), "ip checksum");
        let Some(TransportSlice::Icmpv4(i)) = s.transport else {
            panic!("not icmp")
        };
        let ih = i.header();
        assert_eq!(
            ih.checksum,
            ih.icmp_type.calc_checksum(i.payload()),
            "icmp checksum"
        );
        (h.source, h.destination, i.payload().to_vec())
    }

    fn frag_needed() -> Icmpv4Type {
        Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        )
    }

    #[test]
    fn icmp_errors_about_a_flow_are_translated_back() {
        const ROUTER: [u8; 4] = [203, 0, 113, 1];
        let mut nat = Nat::default();
        // UDP: a whole quote, so its UDP checksum can be checked too.
        let mut q = udp(INSIDE, 5353, REMOTE, 53, b"query?");
        nat.outbound(&mut q, false, &pool(), S).unwrap();
        let mut err = icmp_error(ROUTER, OUTSIDE, frag_needed(), &q);
        assert_eq!(nat.inbound(&mut err, false, 2 * S), Ok(Inbound::Translated));
        let (src, dst, quote) = check_error(&err);
        assert_eq!((src, dst), (ROUTER, INSIDE));
        assert_eq!(
            check(&quote),
            (INSIDE, 5353, REMOTE, 53),
            "the quote is the packet as sent"
        );

        // ICMP echo: traceroute's time exceeded about our ping.
        let mut ping = echo([10, 0, 0, 3], REMOTE, false, 77);
        // Take port 77 first so the ping's identifier must change.
        let mut other = echo(INSIDE, REMOTE, false, 77);
        nat.outbound(&mut other, false, &pool(), S).unwrap();
        let o = nat.outbound(&mut ping, false, &pool(), S).unwrap();
        assert_ne!(o.port, 77);
        let ttl =
            Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit);
        let mut err = icmp_error(ROUTER, OUTSIDE, ttl, &ping);
        assert_eq!(nat.inbound(&mut err, false, 2 * S), Ok(Inbound::Translated));
        let (_, dst, quote) = check_error(&err);
        assert_eq!(dst, [10, 0, 0, 3]);
        assert_eq!(check(&quote), ([10, 0, 0, 3], 77, REMOTE, 77));

        // TCP, quoted with only the 8 bytes RFC 792 asks for: no checksum
        // in the quote, ports and the quoted IP header still right.
        let mut syn = tcp(INSIDE, 40000, REMOTE, 80, "S", b"");
        nat.outbound(&mut syn, false, &pool(), S).unwrap();
        let mut err = icmp_error(REMOTE, OUTSIDE, frag_needed(), &syn[..28]);
        assert_eq!(nat.inbound(&mut err, false, 2 * S), Ok(Inbound::Translated));
        let (_, dst, quote) = check_error(&err);
        assert_eq!(dst, INSIDE);
        let qh = etherparse::Ipv4Header::from_slice(&quote).unwrap().0;
        assert_eq!(qh.header_checksum, qh.calc_header_checksum());
        assert_eq!((qh.source, qh.destination), (INSIDE, REMOTE));
        assert_eq!(be16(&quote, 20), 40000);
        assert_eq!(
            nat.conns(2 * S).find(|c| c.proto == "tcp").unwrap().state,
            State::SynSent,
            "an error is no reply"
        );
    }

    #[test]
    fn an_inside_hosts_error_about_a_reply_goes_out_translated() {
        let mut nat = Nat::default();
        let mut q = udp(INSIDE, 5353, REMOTE, 53, b"q");
        nat.outbound(&mut q, false, &pool(), S).unwrap();
        let mut late = udp(REMOTE, 53, OUTSIDE, 5353, b"late answer");
        nat.inbound(&mut late, false, S).unwrap();
        // The socket is gone: port unreachable about the reply it got.
        let unreach =
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port);
        let mut err = icmp_error(INSIDE, REMOTE, unreach, &late);
        let o = nat.outbound(&mut err, false, &pool(), 2 * S).unwrap();
        assert_eq!(o.ip, u32::from_be_bytes(OUTSIDE));
        let (src, dst, quote) = check_error(&err);
        assert_eq!((src, dst), (OUTSIDE, REMOTE));
        assert_eq!(check(&quote), (REMOTE, 53, OUTSIDE, 5353));
    }

    #[test]
    fn icmp_errors_about_no_flow_are_not_translated() {
        let mut nat = Nat::default();
        let stranger = udp(OUTSIDE, 999, REMOTE, 53, b"?");
        let mut err = icmp_error(REMOTE, OUTSIDE, frag_needed(), &stranger);
        let before = err.clone();
        assert_eq!(nat.inbound(&mut err, false, S), Ok(Inbound::NotTranslated));
        assert_eq!(err, before);
        let stranger = udp(REMOTE, 53, INSIDE, 999, b"?");
        let unreach =
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port);
        let mut err = icmp_error(INSIDE, REMOTE, unreach, &stranger);
        let before = err.clone();
        assert_eq!(
            nat.outbound(&mut err, false, &pool(), S),
            Err(NatDrop::NoFlow)
        );
        assert_eq!(err, before);
        // A quote too short to hold ports.
        let mut err = icmp_error(REMOTE, OUTSIDE, frag_needed(), &stranger[..24]);
        assert_eq!(nat.inbound(&mut err, false, S), Ok(Inbound::NotTranslated));
    }

    fn ep(ip: [u8; 4], port: u16) -> Endpoint {
        Endpoint {
            ip: u32::from_be_bytes(ip),
            port,
        }
    }

    /// What holds whatever the clock does: flows, mappings, maps and
    /// reference counts agree, and the bounds hold.
    fn check_structure(nat: &Nat) {
        assert_eq!(nat.by_inside.len(), nat.by_outside.len());
        let flows: Vec<(usize, &Conn)> = nat
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.expires != 0)
            .collect();
        assert_eq!(nat.by_inside.len(), flows.len());
        assert_eq!(nat.conns.len() - nat.free.len(), flows.len());
        let mut refs = vec![0usize; nat.maps.len()];
        for &(i, c) in &flows {
            assert_eq!(nat.by_inside.get(&c.out_key()), Some(&(i as u32)));
            assert_eq!(nat.by_outside.get(&c.in_key()), Some(&(i as u32)));
            let m = &nat.maps[c.map as usize];
            assert_eq!(
                (m.proto, m.inside, m.outside, m.rule),
                (c.proto, c.inside, c.outside, c.rule)
            );
            refs[c.map as usize] += 1;
        }
        let mut in_use = 0;
        for (m, mapping) in nat.maps.iter().enumerate() {
            assert_eq!(mapping.refs as usize, refs[m], "mapping {m}'s count");
            if refs[m] == 0 {
                continue;
            }
            in_use += 1;
            if mapping.attached {
                assert_eq!(nat.map_by_inside.get(&mapping.in_key()), Some(&(m as u32)));
            }
        }
        assert_eq!(nat.maps.len() - nat.maps_free.len(), in_use);
        assert!(in_use <= flows.len() && flows.len() <= nat.max_conns);
        for (k, &m) in nat.map_by_inside.iter() {
            let mapping = &nat.maps[m as usize];
            assert!(mapping.refs > 0 && mapping.attached && mapping.in_key() == *k);
        }
        for (k, &m) in nat.map_by_outside.iter() {
            let mapping = &nat.maps[m as usize];
            assert!(mapping.refs > 0 && mapping.out_key() == *k);
        }
    }

    /// The table's invariants at `now` for a clock that only goes forward:
    /// the structure's, and a mapping outlives its flows; no two live
    /// mappings share an outside endpoint; live flows of one inside
    /// endpoint and rule share one (REQ-1).
    fn check_invariants(nat: &Nat, now: u64) {
        check_structure(nat);
        let mut eim = std::collections::HashMap::new();
        for c in nat.conns.iter().filter(|c| c.expires != 0) {
            let m = &nat.maps[c.map as usize];
            assert!(m.expires >= c.expires, "a mapping outlives its flows");
            // Flows of a mapping a changed pool detached keep their old
            // endpoint until they are seen again; the others share one.
            if c.expires > now && m.attached {
                let o = eim.entry((c.proto, c.inside, c.rule)).or_insert(c.outside);
                assert_eq!(*o, c.outside, "one outside endpoint per inside endpoint");
            }
        }
        let mut outsides = std::collections::HashSet::new();
        for (m, mapping) in nat.maps.iter().enumerate() {
            if mapping.refs > 0 && mapping.expires > now {
                assert!(outsides.insert((mapping.proto, mapping.outside)), "shared");
                assert_eq!(
                    nat.map_by_outside.get(&mapping.out_key()),
                    Some(&(m as u32))
                );
            }
        }
    }

    #[test]
    fn one_outside_endpoint_per_inside_endpoint() {
        const C1: [u8; 4] = [10, 0, 0, 2];
        const C2: [u8; 4] = [10, 0, 0, 3];
        const S1: [u8; 4] = [198, 51, 100, 1];
        const S2: [u8; 4] = [198, 51, 100, 2];
        for proto in ["udp", "tcp"] {
            let pkt = |src, sport, dst, dport| match proto {
                "udp" => udp(src, sport, dst, dport, b"x"),
                _ => tcp(src, sport, dst, dport, "S", b""),
            };
            let mut nat = Nat::default();
            let mut p = pkt(C1, 40000, S1, 80);
            let o1 = nat.outbound(&mut p, false, &pool(), S).unwrap();
            assert_eq!(o1, ep(OUTSIDE, 40000), "port preserved");
            let mut p = pkt(C2, 40000, S2, 80);
            let o2 = nat.outbound(&mut p, false, &pool(), S).unwrap();
            assert_ne!(o2.port, 40000, "40000 is c1's, whatever the remote");
            let mut p = pkt(C1, 40000, S2, 80);
            assert_eq!(nat.outbound(&mut p, false, &pool(), S), Ok(o1));
            assert_eq!(check(&p), (OUTSIDE, 40000, S2, 80));
            let mut p = pkt(C2, 40000, S1, 443);
            assert_eq!(nat.outbound(&mut p, false, &pool(), S), Ok(o2));
            let mut by_inside = std::collections::HashMap::new();
            for c in nat.conns(S) {
                by_inside
                    .entry(c.inside)
                    .or_insert_with(Vec::new)
                    .push(c.outside);
            }
            assert_eq!(by_inside[&ep(C1, 40000)], [o1, o1]);
            assert_eq!(by_inside[&ep(C2, 40000)], [o2, o2]);
            // Replies from S2 reach each its own flow.
            for (o, inside) in [(o1, C1), (o2, C2)] {
                let mut r = match proto {
                    "udp" => udp(S2, 80, OUTSIDE, o.port, b"y"),
                    _ => tcp(S2, 80, OUTSIDE, o.port, "SA", b""),
                };
                assert_eq!(nat.inbound(&mut r, false, S), Ok(Inbound::Translated));
                assert_eq!(check(&r), (S2, 80, inside, 40000));
            }
            check_invariants(&nat, S);
        }
    }

    #[test]
    fn hosts_sharing_a_source_port_or_identifier_get_distinct_ports() {
        let hosts = [[10, 0, 0, 2], [10, 0, 0, 3], [10, 0, 1, 9]];
        let mut nat = Nat::default();
        for proto in 0..3 {
            let mut outs = Vec::new();
            for h in hosts {
                let mut p = match proto {
                    0 => tcp(h, 4321, REMOTE, 80, "S", b""),
                    1 => udp(h, 4321, REMOTE, 53, b"x"),
                    _ => echo(h, REMOTE, false, 4321),
                };
                let o = nat.outbound(&mut p, false, &pool(), S).unwrap();
                assert_eq!(check(&p).1, o.port);
                outs.push(o);
            }
            // The first keeps its port, in each protocol's own space.
            assert_eq!(outs[0], ep(OUTSIDE, 4321));
            let distinct: std::collections::HashSet<_> = outs.iter().collect();
            assert_eq!(distinct.len(), hosts.len(), "proto {proto}: {outs:?}");
            for (h, o) in hosts.iter().zip(&outs) {
                let mut r = match proto {
                    0 => tcp(REMOTE, 80, OUTSIDE, o.port, "SA", b""),
                    1 => udp(REMOTE, 53, OUTSIDE, o.port, b"y"),
                    _ => echo(REMOTE, OUTSIDE, true, o.port),
                };
                assert_eq!(nat.inbound(&mut r, false, S), Ok(Inbound::Translated));
                assert_eq!((check(&r).2, check(&r).3), (*h, 4321));
            }
        }
        check_invariants(&nat, S);
    }

    #[test]
    fn a_mapping_lives_while_one_of_its_flows_does() {
        const R1: [u8; 4] = [198, 51, 100, 1];
        const R2: [u8; 4] = [198, 51, 100, 2];
        const OTHER: [u8; 4] = [10, 0, 0, 9];
        let mut nat = Nat::default();
        let mapped = ep(OUTSIDE, 5000);
        let mut p = udp(INSIDE, 5000, R1, 53, b"x");
        assert_eq!(nat.outbound(&mut p, false, &pool(), S), Ok(mapped));
        let mut p = udp(INSIDE, 5000, R2, 53, b"x");
        assert_eq!(nat.outbound(&mut p, false, &pool(), 200 * S), Ok(mapped));
        assert!(nat.is_mapped(17, mapped, 200 * S));
        assert!(!nat.is_mapped(6, mapped, 200 * S), "per protocol");
        // The R1 flow dies at 301 s, the R2 one lives to 500 s: the mapping
        // survives, swept or not, and is still the host's alone.
        assert!(nat.is_mapped(17, mapped, 400 * S));
        assert_eq!(nat.expire(400 * S, 100), 1);
        assert!(nat.is_mapped(17, mapped, 400 * S));
        let mut p = udp(OTHER, 5000, R1, 53, b"x");
        let o = nat.outbound(&mut p, false, &pool(), 400 * S).unwrap();
        assert_ne!(o, mapped);
        let mut p = udp(INSIDE, 5000, R1, 53, b"x");
        assert_eq!(nat.outbound(&mut p, false, &pool(), 400 * S), Ok(mapped));
        check_invariants(&nat, 400 * S);
        // All its flows dead (R1 again to 700 s): unmapped at once, before
        // any sweep, and the port is free for another host.
        assert!(nat.is_mapped(17, mapped, 699 * S));
        assert!(!nat.is_mapped(17, mapped, 700 * S));
        check_invariants(&nat, 700 * S);
        let mut p = udp([10, 0, 0, 10], 5000, R2, 53, b"x");
        assert_eq!(nat.outbound(&mut p, false, &pool(), 701 * S), Ok(mapped));
        check_invariants(&nat, 701 * S);
        // Swept, every mapping slot but the new one's is free.
        nat.expire(701 * S, 100);
        check_invariants(&nat, 701 * S);
        assert_eq!((nat.len(), nat.map_by_inside.len()), (1, 1));
        assert_eq!(nat.map_by_outside.len(), 1);

        // flush_rule frees the mappings with the flows.
        assert_eq!(nat.flush_rule(1), 1);
        assert!(nat.map_by_inside.is_empty() && nat.map_by_outside.is_empty());
        assert_eq!(nat.maps_free.len(), nat.maps.len());
        assert!(!nat.is_mapped(17, mapped, 701 * S));

        // A TCP flow closed by RST, alone on its mapping, takes the mapping
        // with it after the RST's 10 s.
        let mut syn = tcp(INSIDE, 6000, R1, 80, "S", b"");
        nat.outbound(&mut syn, false, &pool(), 800 * S).unwrap();
        let mut rst = tcp(R1, 80, OUTSIDE, 6000, "R", b"");
        assert_eq!(
            nat.inbound(&mut rst, false, 801 * S),
            Ok(Inbound::Translated)
        );
        assert!(nat.is_mapped(6, ep(OUTSIDE, 6000), 810 * S));
        assert!(!nat.is_mapped(6, ep(OUTSIDE, 6000), 811 * S));
        check_invariants(&nat, 811 * S);
    }

    #[test]
    fn filtering_stays_address_and_port_dependent() {
        const R1: [u8; 4] = [198, 51, 100, 1];
        const R2: [u8; 4] = [198, 51, 100, 2];
        let mut nat = Nat::default();
        let mut p = udp(INSIDE, 5000, R1, 53, b"x");
        let o = nat.outbound(&mut p, false, &pool(), S).unwrap();
        assert!(nat.is_mapped(17, o, S));
        // Mapped, but never sent to R2, nor to R1's port 54.
        for mut p in [
            udp(R2, 53, OUTSIDE, o.port, b"knock"),
            udp(R1, 54, OUTSIDE, o.port, b"knock"),
        ] {
            let before = p.clone();
            assert_eq!(nat.inbound(&mut p, false, S), Ok(Inbound::NotTranslated));
            assert_eq!(p, before, "untouched");
        }
        // Once it has sent to R2, R2's replies come in, on the same port.
        let mut p = udp(INSIDE, 5000, R2, 53, b"x");
        assert_eq!(nat.outbound(&mut p, false, &pool(), S), Ok(o));
        let mut r = udp(R2, 53, OUTSIDE, o.port, b"y");
        assert_eq!(nat.inbound(&mut r, false, S), Ok(Inbound::Translated));
        assert_eq!(check(&r), (R2, 53, INSIDE, 5000));
        check_invariants(&nat, S);
    }

    #[test]
    fn hairpinning_reaches_inside_endpoints_through_their_mappings() {
        const C2: [u8; 4] = [10, 0, 0, 3];
        let mut nat = Nat::default();
        // c1's port 4000 is mapped by a flow to a remote (a STUN server).
        let mut p = udp(INSIDE, 4000, REMOTE, 3478, b"binding");
        let a = nat.outbound(&mut p, false, &pool(), S).unwrap();
        assert_eq!(a, ep(OUTSIDE, 4000));
        assert!(nat.is_mapped(17, a, S));

        // RFC 5780 §4.5: c1 from another port (5000) to its own mapped
        // address arrives at port 4000 from 5000's mapped address.
        let mut p = udp(INSIDE, 5000, OUTSIDE, 4000, b"hairpin?");
        assert_eq!(nat.hairpin(&mut p, false, &pool(), 2 * S), Ok(true));
        assert_eq!(check(&p), (OUTSIDE, 5000, INSIDE, 4000));
        assert!(
            nat.is_mapped(17, ep(OUTSIDE, 5000), 2 * S),
            "5000 mapped now"
        );

        // c2 with the same port 4000 gets its own mapping, and reaches c1.
        let mut p = udp(C2, 4000, OUTSIDE, 4000, b"hello c1");
        assert_eq!(nat.hairpin(&mut p, false, &pool(), 3 * S), Ok(true));
        let (src, c2_port, dst, dport) = check(&p);
        assert_eq!((src, dst, dport), (OUTSIDE, INSIDE, 4000));
        assert_ne!(c2_port, 4000);
        assert!(nat.is_mapped(17, ep(OUTSIDE, c2_port), 3 * S));
        // c1 answers c2's outside endpoint, from its mapped one.
        let mut p = udp(INSIDE, 4000, OUTSIDE, c2_port, b"hello c2");
        assert_eq!(nat.hairpin(&mut p, false, &pool(), 4 * S), Ok(true));
        assert_eq!(check(&p), (OUTSIDE, 4000, C2, 4000));
        // c2's mapping is the one it uses with remotes too.
        let mut p = udp(C2, 4000, REMOTE, 3478, b"binding");
        let o = nat.outbound(&mut p, false, &pool(), 4 * S).unwrap();
        assert_eq!(o, ep(OUTSIDE, c2_port));
        // c2's flow to c1 saw c1's answer as its reply.
        let flow = nat
            .conns(4 * S)
            .find(|c| c.inside == ep(C2, 4000) && c.remote == a)
            .unwrap();
        assert_eq!(flow.state, State::Established);
        check_invariants(&nat, 4 * S);

        // TCP, with a partial checksum (pseudo-header sum only).
        let mut syn = tcp(INSIDE, 443, REMOTE, 80, "S", b"");
        let t = nat.outbound(&mut syn, false, &pool(), 5 * S).unwrap();
        let mut p = tcp(C2, 7000, OUTSIDE, t.port, "S", &[9u8; 33]);
        let full = p.clone();
        let len = (p.len() - 20) as u16;
        p[36..38].copy_from_slice(&pseudo(C2, OUTSIDE, 6, len).to_be_bytes());
        assert_eq!(nat.hairpin(&mut p, true, &pool(), 5 * S), Ok(true));
        assert_eq!(be16(&p, 36), pseudo(OUTSIDE, INSIDE, 6, len));
        complete(&mut p);
        let (src, c2_tcp, dst, dport) = check(&p);
        assert_eq!((src, dst, dport), (OUTSIDE, INSIDE, 443));
        // The same packet with a full checksum takes the same way.
        let mut p = full;
        assert_eq!(nat.hairpin(&mut p, false, &pool(), 5 * S), Ok(true));
        assert_eq!(check(&p), (OUTSIDE, c2_tcp, INSIDE, 443));
        let mut synack = tcp(INSIDE, 443, OUTSIDE, c2_tcp, "SA", b"");
        assert_eq!(nat.hairpin(&mut synack, false, &pool(), 6 * S), Ok(true));
        assert_eq!(check(&synack), (OUTSIDE, t.port, C2, 7000));
        let state = |nat: &Nat, inside| {
            nat.conns(6 * S)
                .find(|c| c.inside == inside && c.remote.ip == u32::from_be_bytes(OUTSIDE))
                .unwrap()
                .state
        };
        assert_eq!(state(&nat, ep(C2, 7000)), State::Established);
        check_invariants(&nat, 6 * S);

        // Not for hairpinning: untouched.
        for mut p in [
            udp(INSIDE, 5000, OUTSIDE, 4001, b"unmapped port"),
            udp(INSIDE, 5000, REMOTE, 4000, b"not ours"),
            tcp(INSIDE, 5000, OUTSIDE, 4000, "S", b""), // mapped for UDP only
            echo(INSIDE, OUTSIDE, false, 4000),
            udp(INSIDE, 5000, OUTSIDE, 4000, b"x")[..20].to_vec(),
        ] {
            let before = p.clone();
            assert_eq!(nat.hairpin(&mut p, false, &pool(), 7 * S), Ok(false));
            assert_eq!(p, before);
        }
        // A dead mapping is no destination.
        let mut p = udp(INSIDE, 5000, OUTSIDE, 4000, b"late");
        assert!(!nat.is_mapped(17, a, 400 * S));
        assert_eq!(nat.hairpin(&mut p, false, &pool(), 400 * S), Ok(false));
        check_invariants(&nat, 400 * S);
    }

    #[test]
    fn hairpinning_refuses_when_the_sender_cannot_be_mapped() {
        let mut nat = Nat::new(1, Timeouts::default());
        let mut p = udp(INSIDE, 4000, REMOTE, 53, b"x");
        nat.outbound(&mut p, false, &pool(), S).unwrap();
        let mut p = udp(INSIDE, 5000, OUTSIDE, 4000, b"x");
        let before = p.clone();
        assert_eq!(
            nat.hairpin(&mut p, false, &pool(), S),
            Err(NatDrop::TableFull)
        );
        assert_eq!(p, before);

        let mut tiny = pool();
        tiny.port_lo = 4000;
        tiny.port_hi = 4000;
        let mut nat = Nat::default();
        let mut p = udp(INSIDE, 4000, REMOTE, 53, b"x");
        nat.outbound(&mut p, false, &tiny, S).unwrap();
        let mut p = udp(INSIDE, 5000, OUTSIDE, 4000, b"x");
        assert_eq!(
            nat.hairpin(&mut p, false, &tiny, S),
            Err(NatDrop::PortsExhausted)
        );
        check_invariants(&nat, S);
    }

    #[test]
    fn limits_hold_per_mapping_and_per_flow() {
        // Four ports: four inside endpoints, each free to reach any number
        // of remotes; a fifth endpoint finds no port.
        let mut tiny = pool();
        tiny.port_lo = 2000;
        tiny.port_hi = 2003;
        let mut nat = Nat::default();
        for port in 0..4u16 {
            for r in 1..=3u8 {
                let mut p = udp(INSIDE, 5000 + port, [198, 51, 100, r], 53, b"x");
                nat.outbound(&mut p, false, &tiny, S).unwrap();
            }
        }
        assert_eq!((nat.len(), nat.map_by_outside.len()), (12, 4));
        let mut p = udp(INSIDE, 6000, REMOTE, 53, b"x");
        let before = p.clone();
        assert_eq!(
            nat.outbound(&mut p, false, &tiny, S),
            Err(NatDrop::PortsExhausted)
        );
        assert_eq!(p, before);
        check_invariants(&nat, S);

        // The flow limit holds even for an endpoint already mapped.
        let mut nat = Nat::new(2, Timeouts::default());
        for r in 1..=2u8 {
            let mut p = udp(INSIDE, 5000, [198, 51, 100, r], 53, b"x");
            nat.outbound(&mut p, false, &pool(), S).unwrap();
        }
        let mut p = udp(INSIDE, 5000, [198, 51, 100, 3], 53, b"x");
        assert_eq!(
            nat.outbound(&mut p, false, &pool(), S),
            Err(NatDrop::TableFull)
        );
        check_invariants(&nat, S);
    }

    #[test]
    fn a_changed_pool_remaps_and_keeps_the_old_port_reserved() {
        let mut nat = Nat::default();
        let mut p = udp(INSIDE, 5000, REMOTE, 53, b"x");
        let old = nat.outbound(&mut p, false, &pool(), S).unwrap();
        let moved = Pool::new(1, [192, 0, 2, 77].into(), [192, 0, 2, 77].into()).unwrap();
        let mut p = udp(INSIDE, 5000, [203, 0, 113, 5], 53, b"x");
        let new = nat.outbound(&mut p, false, &moved, S).unwrap();
        assert_eq!(new, ep([192, 0, 2, 77], 5000));
        assert!(nat.is_mapped(17, old, S), "still the old flow's");
        check_invariants(&nat, S);
        // The old flow, seen again through the changed rule, moves too.
        let mut p = udp(INSIDE, 5000, REMOTE, 53, b"x");
        assert_eq!(nat.outbound(&mut p, false, &moved, S), Ok(new));
        assert!(!nat.is_mapped(17, old, S), "freed with its last flow");
        check_invariants(&nat, S);
    }

    #[test]
    fn delta_matches_full_recompute() {
        let mut rng = Rng(7);
        for _ in 0..10_000 {
            let words: Vec<u16> = (0..8).map(|_| rng.next() as u16).collect();
            let sum = |w: &[u16]| {
                let mut s: u32 = w.iter().map(|&x| u32::from(x)).sum();
                while s > 0xffff {
                    s = (s & 0xffff) + (s >> 16);
                }
                !(s as u16)
            };
            let before = sum(&words);
            let mut after = words.clone();
            let i = rng.index(8);
            after[i] = rng.next() as u16;
            let d = Delta::default().replace16(words[i], after[i]);
            let inc = !d.apply(!before);
            // Ones'-complement has two zeros; compare as sums.
            let full = sum(&after);
            assert!(inc == full || (inc, full) == (0, 0xffff) || (inc, full) == (0xffff, 0));
        }
    }
}
