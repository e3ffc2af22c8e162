//! The spanning tree protocol ("legacy STP"), pure and time-injected, as the
//! Linux bridge runs it with `stp_state 1` (net/bridge/br_stp*.c), so that a
//! Linux bridge and vswitch form one tree.
//!
//! Clause references: IEEE 802.1D-1998 clause 8 (the algorithm and protocol:
//! 8.5 parameters, 8.6 procedures, 8.7 operation, 8.8 management, 8.10
//! performance parameters) and IEEE 802.1D-2004 clause 9 (BPDU encoding and
//! validation) and 7.12.3 (the LLC SAP). 802.1D-2004 replaced clause 8 with
//! RSTP (clause 17); this is the older protocol it interoperates with.
//!
//! Time is passed in as `now_ns`, nanoseconds on a monotonic clock. Every entry
//! point first runs the timers that expired up to `now_ns`, in order of their
//! deadlines, so irregular calls and large jumps behave as if the timers had
//! fired on time. BPDUs produced anywhere (replies to received BPDUs
//! included) are queued and handed out by [`Stp::tick`]; the caller should call
//! `tick` right after `receive` to answer promptly.
//!
//! Differences from the Linux bridge, all deliberate:
//! - Port identifiers are 802.1D-1998 style, priority (8 bits) << 8 | port
//!   number (1..=255); Linux uses 6 + 10 bits (its port priority 32 is our
//!   128: both give 0x8001 for port 1). Port numbers above 255 fall back to
//!   the 802.1D-2004 4 + 12 bit encoding (9.2.7).
//! - Message age grows by 1 s per relay (as RSTP, 802.1D-2004 clause 17,
//!   and most switches do) plus the time the information has been held;
//!   Linux adds only one jiffy.
//! - RST BPDUs (type 0x02) and versions above 0 are read as configuration
//!   BPDUs (802.1D-2004 9.3.4 lets an older implementation accept later
//!   versions); Linux drops any version but 0. Either way an RSTP neighbour
//!   falls back to STP on seeing our BPDUs (802.1D-2004 17.23).
//! - During a topology change the FDB should age entries in forward delay
//!   (802.1D-1998 8.3.5); newer Linux kernels use twice that.

use crate::bridge::PortId;
use crate::MacAddr;
use std::collections::BTreeMap;
use std::fmt;

/// The bridge group address STP BPDUs are sent to (802.1D-2004 table 7-10).
pub const STP_GROUP_ADDR: MacAddr = MacAddr([0x01, 0x80, 0xc2, 0x00, 0x00, 0x00]);
/// LLC header of a BPDU: DSAP and SSAP 0x42 (bridge spanning tree), UI
/// (802.1D-2004 7.12.3).
const LLC_BPDU: [u8; 3] = [0x42, 0x42, 0x03];
/// BPDU types (802.1D-2004 9.3.1, 9.3.2, 9.3.3).
pub const BPDU_TYPE_CONFIG: u8 = 0x00;
pub const BPDU_TYPE_RST: u8 = 0x02;
pub const BPDU_TYPE_TCN: u8 = 0x80;
/// Configuration BPDU flags (802.1D-2004 9.3.1).
const FLAG_TC: u8 = 0x01;
const FLAG_TCA: u8 = 0x80;
const CONFIG_LEN: usize = 35;
const TCN_LEN: usize = 4;
const ETH_HDR: usize = 14;
/// Offsets in an emitted frame of the BPDU type and flags octets.
const TYPE_AT: usize = ETH_HDR + 3 + 3;
const FLAGS_AT: usize = TYPE_AT + 1;
/// Minimum Ethernet frame without FCS.
const MIN_FRAME: usize = 60;

const NS_PER_S: u64 = 1_000_000_000;
/// BPDU times are in 1/256 s (802.1D-2004 9.2.8); 1 s / 256 is exact in ns.
const NS_PER_TICK: u64 = NS_PER_S / 256;
/// Hold time: at most one configuration BPDU per port per second (8.5.3.14,
/// table 8-3).
const HOLD_NS: u64 = NS_PER_S;
/// Added to the message age of relayed information (8.6.1.3).
const MESSAGE_AGE_INCR_NS: u64 = NS_PER_S;
/// Bound on timer expiries handled by one call, whatever the clock does.
const MAX_FIRINGS: usize = 1 << 20;

/// Port priority when none is configured (the 802.1D-1998 recommended 128).
pub const DEFAULT_PORT_PRIORITY: u8 = 128;
/// Port path cost when the link speed is unknown: 100, the 802.1D-1998
/// table 8-5 value for 10 Mb/s, which is also what Linux uses for a port
/// whose speed it cannot read (veth, tap).
pub const DEFAULT_PATH_COST: u32 = 100;

/// 802.1D-1998 table 8-5 recommended ("short") path costs by link speed, as
/// Linux picks them (br_if.c port_cost): 10 Mb/s 100, 100 Mb/s 19,
/// 1-2.5 Gb/s 4, 5 Gb/s 3, 10 Gb/s 2, faster 1; 0 (unknown) gives
/// [`DEFAULT_PATH_COST`].
pub fn path_cost_for_speed(mbps: u32) -> u32 {
    match mbps {
        0 => DEFAULT_PATH_COST,
        m if m > 10_000 => 1,
        10_000 => 2,
        m if m >= 5_000 => 3,
        m if m >= 1_000 => 4,
        m if m >= 100 => 19,
        _ => 100,
    }
}

/// A bridge identifier: priority in the top 16 bits, MAC address below
/// (8.5.3.7). Ordered as the spanning tree compares them (lower wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BridgeId(pub u64);

impl BridgeId {
    pub fn new(priority: u16, mac: MacAddr) -> BridgeId {
        BridgeId((u64::from(priority) << 48) | mac.to_u64())
    }

    pub fn priority(self) -> u16 {
        (self.0 >> 48) as u16
    }

    pub fn mac(self) -> MacAddr {
        MacAddr::from_u64(self.0 & 0xffff_ffff_ffff)
    }
}

/// `8000.020000000001`, as Linux prints bridge ids.
impl fmt::Display for BridgeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}.{:012x}",
            self.priority(),
            self.0 & 0xffff_ffff_ffff
        )
    }
}

/// A bridge protocol data unit (802.1D-2004 9.3). Times are in 1/256 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bpdu {
    Config {
        topology_change: bool,
        topology_change_ack: bool,
        root: BridgeId,
        root_path_cost: u32,
        bridge: BridgeId,
        /// Port identifier of the transmitting port.
        port: u16,
        message_age: u16,
        max_age: u16,
        hello_time: u16,
        forward_delay: u16,
    },
    /// Topology change notification.
    Tcn,
}

/// Why a frame is not a usable BPDU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BpduError {
    #[error("BPDU frame truncated ({0} bytes)")]
    Truncated(usize),
    #[error("destination {0} is not the STP group address 01:80:c2:00:00:00")]
    NotStpGroup(MacAddr),
    #[error("not an 802.3 LLC frame (type/length {0:#06x})")]
    NotLlc(u16),
    #[error("LLC header {0:02x} {1:02x} {2:02x} is not the spanning tree SAP 42 42 03")]
    BadLlc(u8, u8, u8),
    #[error("protocol identifier {0:#06x} is not the spanning tree protocol")]
    BadProtocol(u16),
    #[error("unknown BPDU type {0:#04x}")]
    UnknownType(u8),
    #[error("message age {message_age} exceeds max age {max_age} (1/256 s)")]
    MessageAgeExceedsMaxAge { message_age: u16, max_age: u16 },
    #[error("port {0} does not take part in the spanning tree")]
    UnknownPort(PortId),
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(s) => u16::from_be_bytes([s[0], s[1]]),
        None => 0,
    }
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

#[inline]
fn bridge_id_at(b: &[u8], at: usize) -> BridgeId {
    let mut id = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        id.copy_from_slice(s);
    }
    BridgeId(u64::from_be_bytes(id))
}

/// Parses an Ethernet frame carrying a BPDU: destination 01:80:C2:00:00:00,
/// an 802.3 length, LLC 42 42 03, then the BPDU (802.1D-2004 9.3.4
/// validation: a configuration BPDU is at least 35 octets, a TCN 4). The
/// payload is cut at the 802.3 length (the rest is padding), as Linux's LLC
/// layer does.
pub fn parse_bpdu(frame: &[u8]) -> Result<Bpdu, BpduError> {
    let truncated = BpduError::Truncated(frame.len());
    let hdr = frame.get(..ETH_HDR).ok_or(truncated.clone())?;
    if hdr[..6] != STP_GROUP_ADDR.0 {
        return Err(BpduError::NotStpGroup(
            MacAddr::from_slice(hdr).unwrap_or_default(),
        ));
    }
    let len = be16(hdr, 12);
    if len > 1500 {
        return Err(BpduError::NotLlc(len));
    }
    let pdu = frame
        .get(ETH_HDR..ETH_HDR + usize::from(len))
        .ok_or(truncated.clone())?;
    if pdu.len() < LLC_BPDU.len() + TCN_LEN {
        return Err(truncated);
    }
    // The SSAP's low bit is the command/response bit.
    if pdu[0] != LLC_BPDU[0] || pdu[1] & 0xfe != LLC_BPDU[1] || pdu[2] != LLC_BPDU[2] {
        return Err(BpduError::BadLlc(pdu[0], pdu[1], pdu[2]));
    }
    let b = &pdu[LLC_BPDU.len()..];
    let proto = be16(b, 0);
    if proto != 0 {
        return Err(BpduError::BadProtocol(proto));
    }
    // b[2] is the protocol version: any is accepted (9.3.4).
    match b[3] {
        BPDU_TYPE_TCN => Ok(Bpdu::Tcn),
        BPDU_TYPE_CONFIG | BPDU_TYPE_RST => {
            if b.len() < CONFIG_LEN {
                return Err(truncated);
            }
            let flags = b[4];
            Ok(Bpdu::Config {
                topology_change: flags & FLAG_TC != 0,
                topology_change_ack: flags & FLAG_TCA != 0,
                root: bridge_id_at(b, 5),
                root_path_cost: be32(b, 13),
                bridge: bridge_id_at(b, 17),
                port: be16(b, 25),
                message_age: be16(b, 27),
                max_age: be16(b, 29),
                hello_time: be16(b, 31),
                forward_delay: be16(b, 33),
            })
        }
        t => Err(BpduError::UnknownType(t)),
    }
}

/// Builds the Ethernet frame for a BPDU sent from a port with MAC `src`
/// (802.1D-2004 9.3.1, 9.3.2; 802.1D-1998 8.6.1, 8.6.6), padded to 60 bytes.
pub fn emit_bpdu(bpdu: &Bpdu, src: MacAddr) -> Vec<u8> {
    let mut f = Vec::with_capacity(MIN_FRAME);
    f.extend_from_slice(&STP_GROUP_ADDR.0);
    f.extend_from_slice(&src.0);
    let body = match bpdu {
        Bpdu::Config { .. } => CONFIG_LEN,
        Bpdu::Tcn => TCN_LEN,
    };
    f.extend_from_slice(&((LLC_BPDU.len() + body) as u16).to_be_bytes());
    f.extend_from_slice(&LLC_BPDU);
    match *bpdu {
        Bpdu::Config {
            topology_change,
            topology_change_ack,
            root,
            root_path_cost,
            bridge,
            port,
            message_age,
            max_age,
            hello_time,
            forward_delay,
        } => {
            let mut flags = 0;
            if topology_change {
                flags |= FLAG_TC;
            }
            if topology_change_ack {
                flags |= FLAG_TCA;
            }
            f.extend_from_slice(&[0, 0, 0, BPDU_TYPE_CONFIG, flags]);
            f.extend_from_slice(&root.0.to_be_bytes());
            f.extend_from_slice(&root_path_cost.to_be_bytes());
            f.extend_from_slice(&bridge.0.to_be_bytes());
            for v in [port, message_age, max_age, hello_time, forward_delay] {
                f.extend_from_slice(&v.to_be_bytes());
            }
        }
        Bpdu::Tcn => f.extend_from_slice(&[0, 0, 0, BPDU_TYPE_TCN]),
    }
    if f.len() < MIN_FRAME {
        f.resize(MIN_FRAME, 0);
    }
    f
}

/// The bridge's own spanning tree parameters (802.1D-1998 8.5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StpSettings {
    pub priority: u16,
    pub hello_s: u8,
    pub max_age_s: u8,
    pub forward_delay_s: u8,
}

/// Linux defaults: priority 32768, hello 2 s, max age 20 s, forward delay
/// 15 s (802.1D-1998 table 8-3 recommended values).
impl Default for StpSettings {
    fn default() -> Self {
        StpSettings {
            priority: 32768,
            hello_s: 2,
            max_age_s: 20,
            forward_delay_s: 15,
        }
    }
}

impl StpSettings {
    /// The 802.1D-1998 8.10.2 / table 8-3 limits: hello 1-10 s, max age
    /// 6-40 s, forward delay 4-30 s, and
    /// 2 x (forward delay - 1) >= max age >= 2 x (hello + 1).
    pub fn validate(&self) -> Result<(), String> {
        let (h, m, f) = (
            u32::from(self.hello_s),
            u32::from(self.max_age_s),
            u32::from(self.forward_delay_s),
        );
        if !(1..=10).contains(&h) {
            return Err(format!("STP hello time {h} s is outside 1-10 s"));
        }
        if !(6..=40).contains(&m) {
            return Err(format!("STP max age {m} s is outside 6-40 s"));
        }
        if !(4..=30).contains(&f) {
            return Err(format!("STP forward delay {f} s is outside 4-30 s"));
        }
        if 2 * (f - 1) < m {
            return Err(format!(
                "STP max age {m} s exceeds 2 x (forward delay - 1) = {} s: raise the forward delay or lower the max age",
                2 * (f - 1)
            ));
        }
        if m < 2 * (h + 1) {
            return Err(format!(
                "STP max age {m} s is below 2 x (hello time + 1) = {} s: raise the max age or lower the hello time",
                2 * (h + 1)
            ));
        }
        Ok(())
    }

    /// (hello, max age, forward delay) in ns, clamped into the 802.1D
    /// ranges so that unvalidated settings cannot stall the timers.
    fn times_ns(&self) -> (u64, u64, u64) {
        (
            u64::from(self.hello_s.clamp(1, 10)) * NS_PER_S,
            u64::from(self.max_age_s.clamp(6, 40)) * NS_PER_S,
            u64::from(self.forward_delay_s.clamp(4, 30)) * NS_PER_S,
        )
    }
}

/// Port states (802.1D-1998 8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortState {
    Disabled,
    Blocking,
    Listening,
    Learning,
    Forwarding,
}

impl PortState {
    pub fn name(&self) -> &'static str {
        match self {
            PortState::Disabled => "disabled",
            PortState::Blocking => "blocking",
            PortState::Listening => "listening",
            PortState::Learning => "learning",
            PortState::Forwarding => "forwarding",
        }
    }
}

/// Port roles, named as RSTP (802.1D-2004 clause 17) names what legacy STP
/// computes: the root port, designated ports, and blocked ports whose
/// segment's designated port belongs to another bridge (alternate) or to
/// this one (backup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortRole {
    Root,
    Designated,
    Alternate,
    Backup,
    Disabled,
}

impl PortRole {
    pub fn name(&self) -> &'static str {
        match self {
            PortRole::Root => "root",
            PortRole::Designated => "designated",
            PortRole::Alternate => "alternate",
            PortRole::Backup => "backup",
            PortRole::Disabled => "disabled",
        }
    }
}

/// A snapshot for `show` commands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StpStatus {
    pub bridge_id: String,
    pub root_id: String,
    pub root_port: Option<PortId>,
    pub root_path_cost: u32,
    pub topology_change: bool,
    pub ports: Vec<StpPortStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StpPortStatus {
    pub port: PortId,
    pub role: PortRole,
    pub state: PortState,
    pub cost: u32,
    pub priority: u8,
    pub designated_root: String,
    pub designated_bridge: String,
    /// This port's identifier as sent in BPDUs (priority << 8 | number).
    pub port_id: u16,
    /// Port identifier of the segment's designated port.
    pub designated_port: u16,
    /// Root path cost of the segment's designated bridge.
    pub designated_cost: u32,
}

/// A received configuration BPDU, times in ns.
#[derive(Debug, Clone, Copy)]
struct Msg {
    tc: bool,
    tca: bool,
    root: BridgeId,
    cost: u32,
    bridge: BridgeId,
    port: u16,
    message_age: u64,
    max_age: u64,
    hello: u64,
    fwd: u64,
}

/// Per-port parameters (802.1D-1998 8.5.5) and timers (8.5.6).
#[derive(Debug, Clone)]
struct Port {
    mac: MacAddr,
    number: u16,
    priority: u8,
    port_id: u16,
    path_cost: u32,
    state: PortState,
    designated_root: BridgeId,
    designated_cost: u32,
    designated_bridge: BridgeId,
    designated_port: u16,
    /// When the recorded designated information arrived, and its message
    /// age on arrival (ns): its age now is the sum of that and the time since.
    info_rx_ns: u64,
    info_age_ns: u64,
    topology_change_ack: bool,
    config_pending: bool,
    message_age_timer: Option<u64>,
    forward_delay_timer: Option<u64>,
    hold_timer: Option<u64>,
}

fn make_port_id(priority: u8, number: u16) -> u16 {
    if number <= 0xff {
        (u16::from(priority) << 8) | number
    } else {
        (u16::from(priority & 0xf0) << 8) | (number & 0x0fff)
    }
}

#[inline]
fn ticks_ns(t: u16) -> u64 {
    u64::from(t) * NS_PER_TICK
}

#[inline]
fn ns_ticks(ns: u64) -> u16 {
    (ns / NS_PER_TICK).min(u64::from(u16::MAX)) as u16
}

/// The port holds the segment's designated port (8.6.10 test, as Linux's
/// br_is_designated_port).
#[inline]
fn is_designated(bridge_id: BridgeId, p: &Port) -> bool {
    p.designated_bridge == bridge_id && p.designated_port == p.port_id
}

/// The vector a root port is chosen by (8.6.8.3): lower wins.
fn root_vector(p: &Port) -> (BridgeId, u64, BridgeId, u16, u16) {
    (
        p.designated_root,
        u64::from(p.designated_cost) + u64::from(p.path_cost),
        p.designated_bridge,
        p.designated_port,
        p.port_id,
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Hello,
    Tcn,
    TopologyChange,
    MessageAge(PortId),
    ForwardDelay(PortId),
    Hold(PortId),
}

/// One bridge's spanning tree.
pub struct Stp {
    settings: StpSettings,
    bridge_mac: MacAddr,
    bridge_id: BridgeId,
    /// The bridge's own timer values (8.5.3.8-8.5.3.10, "Bridge Max Age"...).
    bridge_max_age: u64,
    bridge_hello: u64,
    bridge_fwd: u64,
    /// The values in use: the root's, learned from its BPDUs (8.5.3.4-8.5.3.6).
    max_age: u64,
    hello: u64,
    fwd: u64,
    designated_root: BridgeId,
    root_path_cost: u32,
    root_port: Option<PortId>,
    topology_change: bool,
    topology_change_detected: bool,
    /// A topology change the caller has not yet taken.
    tc_event: bool,
    hello_timer: Option<u64>,
    tcn_timer: Option<u64>,
    topology_change_timer: Option<u64>,
    ports: BTreeMap<PortId, Port>,
    now: u64,
    /// BPDUs waiting for the next `tick`.
    pending: Vec<(PortId, Vec<u8>)>,
}

impl Stp {
    /// A bridge with no ports, root of its own tree (8.8.1 initialization).
    pub fn new(bridge_mac: MacAddr, settings: StpSettings, now_ns: u64) -> Stp {
        let (hello, max_age, fwd) = settings.times_ns();
        let id = BridgeId::new(settings.priority, bridge_mac);
        Stp {
            settings,
            bridge_mac,
            bridge_id: id,
            bridge_max_age: max_age,
            bridge_hello: hello,
            bridge_fwd: fwd,
            max_age,
            hello,
            fwd,
            designated_root: id,
            root_path_cost: 0,
            root_port: None,
            topology_change: false,
            topology_change_detected: false,
            tc_event: false,
            hello_timer: Some(now_ns.saturating_add(hello)),
            tcn_timer: None,
            topology_change_timer: None,
            ports: BTreeMap::new(),
            now: now_ns,
            pending: Vec::new(),
        }
    }

    pub fn settings(&self) -> StpSettings {
        self.settings
    }

    pub fn bridge_id(&self) -> BridgeId {
        self.bridge_id
    }

    /// Applies new settings (check them with [`StpSettings::validate`]
    /// first; out-of-range times are clamped). A priority change is 8.8.4
    /// (Set Bridge Priority); new times take effect at once if this bridge
    /// is the root, else when it becomes root.
    pub fn set_settings(&mut self, settings: StpSettings, now_ns: u64) {
        self.advance(now_ns);
        let (hello, max_age, fwd) = settings.times_ns();
        self.bridge_hello = hello;
        self.bridge_max_age = max_age;
        self.bridge_fwd = fwd;
        if self.is_root() {
            self.hello = hello;
            self.max_age = max_age;
            self.fwd = fwd;
        }
        self.settings = settings;
        let id = BridgeId::new(settings.priority, self.bridge_mac);
        if id != self.bridge_id {
            self.change_bridge_id(id);
        }
    }

    /// A port comes up in the tree (8.8.2 Enable Port): it starts as a
    /// designated port in listening, or blocking once it hears better
    /// information. Adding a port already there updates its MAC, cost and
    /// priority. `cost` 0 counts as 1.
    pub fn add_port(
        &mut self,
        port: PortId,
        port_mac: MacAddr,
        cost: u32,
        priority: u8,
        now_ns: u64,
    ) {
        self.advance(now_ns);
        if let Some(p) = self.ports.get_mut(&port) {
            p.mac = port_mac;
            self.update_port(port, cost, priority);
            return;
        }
        let number = self.free_port_number(port);
        let port_id = make_port_id(priority, number);
        self.ports.insert(
            port,
            Port {
                mac: port_mac,
                number,
                priority,
                port_id,
                path_cost: cost.max(1),
                state: PortState::Blocking,
                designated_root: self.designated_root,
                designated_cost: self.root_path_cost,
                designated_bridge: self.bridge_id,
                designated_port: port_id,
                info_rx_ns: self.now,
                info_age_ns: 0,
                topology_change_ack: false,
                config_pending: false,
                message_age_timer: None,
                forward_delay_timer: None,
                hold_timer: None,
            },
        );
        self.become_designated_port(port);
        self.port_state_selection();
    }

    /// A port leaves the tree: link down or removed (8.8.3 Disable Port).
    /// Like Linux this is not itself a topology change; the caller drops the
    /// port's learned addresses.
    pub fn remove_port(&mut self, port: PortId, now_ns: u64) {
        self.advance(now_ns);
        let was_root = self.is_root();
        if self.ports.remove(&port).is_none() {
            return;
        }
        self.pending.retain(|(p, _)| *p != port);
        if self.root_port == Some(port) {
            self.root_port = None;
        }
        self.configuration_update();
        self.port_state_selection();
        self.after_reconfiguration(was_root);
    }

    /// Changes a port's path cost and priority (8.8.5, 8.8.6).
    pub fn set_port_cost(&mut self, port: PortId, cost: u32, priority: u8, now_ns: u64) {
        self.advance(now_ns);
        self.update_port(port, cost, priority);
    }

    /// An Ethernet frame addressed to 01:80:C2:00:00:00 arrived on `port`
    /// (8.7.1, 8.7.2). Blocked ports receive too; that is how they stay
    /// blocked.
    pub fn receive(&mut self, port: PortId, frame: &[u8], now_ns: u64) -> Result<(), BpduError> {
        self.advance(now_ns);
        let bpdu = parse_bpdu(frame)?;
        match self.ports.get(&port) {
            Some(p) if p.state != PortState::Disabled => {}
            _ => return Err(BpduError::UnknownPort(port)),
        }
        match bpdu {
            Bpdu::Config {
                message_age,
                max_age,
                ..
            } if message_age > max_age => Err(BpduError::MessageAgeExceedsMaxAge {
                message_age,
                max_age,
            }),
            Bpdu::Config {
                topology_change,
                topology_change_ack,
                root,
                root_path_cost,
                bridge,
                port: port_id,
                message_age,
                max_age,
                hello_time,
                forward_delay,
            } => {
                let msg = Msg {
                    tc: topology_change,
                    tca: topology_change_ack,
                    root,
                    cost: root_path_cost,
                    bridge,
                    port: port_id,
                    message_age: ticks_ns(message_age),
                    max_age: ticks_ns(max_age),
                    hello: ticks_ns(hello_time),
                    fwd: ticks_ns(forward_delay),
                };
                self.received_config(port, &msg);
                Ok(())
            }
            Bpdu::Tcn => {
                self.received_tcn(port);
                Ok(())
            }
        }
    }

    /// Runs the timers up to `now_ns` and appends the BPDU frames to send as
    /// (port, frame bytes).
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<(PortId, Vec<u8>)>) {
        self.advance(now_ns);
        out.append(&mut self.pending);
    }

    /// [`PortState::Disabled`] for ports not in the tree.
    pub fn port_state(&self, port: PortId) -> PortState {
        self.ports
            .get(&port)
            .map_or(PortState::Disabled, |p| p.state)
    }

    pub fn port_role(&self, port: PortId) -> PortRole {
        self.ports
            .get(&port)
            .map_or(PortRole::Disabled, |p| self.role_of(port, p))
    }

    /// The port relays frames (state forwarding).
    pub fn forwards(&self, port: PortId) -> bool {
        self.port_state(port) == PortState::Forwarding
    }

    /// The port learns source addresses (learning or forwarding).
    pub fn learns(&self, port: PortId) -> bool {
        matches!(
            self.port_state(port),
            PortState::Learning | PortState::Forwarding
        )
    }

    /// Ageing time the FDB should use now: the forward delay in use while
    /// the topology change flag is set (802.1D-1998 8.3.5), None otherwise.
    pub fn fast_ageing_s(&self) -> Option<u32> {
        self.topology_change
            .then(|| (self.fwd.div_ceil(NS_PER_S).max(1)).min(u64::from(u32::MAX)) as u32)
    }

    /// True once per detected or received topology change (the caller
    /// flushes or fast-ages learned entries); reading it clears it.
    pub fn take_topology_change(&mut self) -> bool {
        std::mem::take(&mut self.tc_event)
    }

    pub fn status(&self) -> StpStatus {
        StpStatus {
            bridge_id: self.bridge_id.to_string(),
            root_id: self.designated_root.to_string(),
            root_port: self.root_port,
            root_path_cost: self.root_path_cost,
            topology_change: self.topology_change,
            ports: self
                .ports
                .iter()
                .map(|(&id, p)| StpPortStatus {
                    port: id,
                    role: self.role_of(id, p),
                    state: p.state,
                    cost: p.path_cost,
                    priority: p.priority,
                    designated_root: p.designated_root.to_string(),
                    designated_bridge: p.designated_bridge.to_string(),
                    port_id: p.port_id,
                    designated_port: p.designated_port,
                    designated_cost: p.designated_cost,
                })
                .collect(),
        }
    }

    // ---- helpers ----

    fn is_root(&self) -> bool {
        self.designated_root == self.bridge_id
    }

    fn role_of(&self, id: PortId, p: &Port) -> PortRole {
        if p.state == PortState::Disabled {
            PortRole::Disabled
        } else if self.root_port == Some(id) {
            PortRole::Root
        } else if is_designated(self.bridge_id, p) {
            PortRole::Designated
        } else if p.designated_bridge == self.bridge_id {
            PortRole::Backup
        } else {
            PortRole::Alternate
        }
    }

    /// Port number: the engine's port index + 1 when that fits in 8 bits and
    /// is free (stable across link flaps), else the lowest free one.
    fn free_port_number(&self, port: PortId) -> u16 {
        let used = |n: u16| self.ports.values().any(|p| p.number == n);
        match u16::try_from(port.saturating_add(1)) {
            Ok(n) if n <= 0xff && !used(n) => n,
            _ => (1..=0x0fff).find(|n| !used(*n)).unwrap_or(0x0fff),
        }
    }

    fn update_port(&mut self, port: PortId, cost: u32, priority: u8) {
        let was_root = self.is_root();
        let bridge_id = self.bridge_id;
        let Some(p) = self.ports.get_mut(&port) else {
            return;
        };
        // 8.8.5 Set Port Priority.
        let new_id = make_port_id(priority, p.number);
        if is_designated(bridge_id, p) {
            p.designated_port = new_id;
        }
        p.port_id = new_id;
        p.priority = priority;
        let takes_over = p.designated_bridge == bridge_id && p.port_id < p.designated_port;
        // 8.8.6 Set Path Cost.
        p.path_cost = cost.max(1);
        if takes_over {
            self.become_designated_port(port);
        }
        self.configuration_update();
        self.port_state_selection();
        self.after_reconfiguration(was_root);
    }

    /// 8.8.4 Set Bridge Priority (and a MAC change, as Linux's
    /// br_stp_change_bridge_id): information recorded from ourselves
    /// follows the new identifier.
    fn change_bridge_id(&mut self, new: BridgeId) {
        let was_root = self.is_root();
        let old = self.bridge_id;
        for p in self.ports.values_mut() {
            if p.designated_bridge == old {
                p.designated_bridge = new;
            }
            if p.designated_root == old {
                p.designated_root = new;
            }
        }
        if self.designated_root == old {
            self.designated_root = new;
        }
        self.bridge_id = new;
        self.configuration_update();
        self.port_state_selection();
        self.after_reconfiguration(was_root);
    }

    /// What 8.7.1 and 8.7.4 do once the tree has been recomputed: a bridge
    /// that became root starts its hello timer; one that stopped being
    /// root stops it and reports a pending topology change upwards.
    fn after_reconfiguration(&mut self, was_root: bool) {
        let root = self.is_root();
        if root && !was_root {
            self.become_root_bridge();
        } else if !root && was_root {
            self.hello_timer = None;
            if self.topology_change_detected {
                self.topology_change_timer = None;
                self.transmit_tcn();
                self.tcn_timer = Some(self.now.saturating_add(self.bridge_hello));
            }
        }
    }

    /// Queues a frame, keeping one of each BPDU type per port: a newer
    /// configuration BPDU supersedes an unsent older one (a pending
    /// acknowledgement is kept). Bounds the output after a long clock jump.
    fn queue(&mut self, port: PortId, frame: Vec<u8>) {
        let kind = frame.get(TYPE_AT).copied();
        match self
            .pending
            .iter_mut()
            .find(|(p, f)| *p == port && f.get(TYPE_AT).copied() == kind)
        {
            Some(slot) => {
                let old_tca = slot.1.get(FLAGS_AT).copied().unwrap_or(0) & FLAG_TCA;
                slot.1 = frame;
                if kind == Some(BPDU_TYPE_CONFIG) {
                    if let Some(flags) = slot.1.get_mut(FLAGS_AT) {
                        *flags |= old_tca;
                    }
                }
            }
            None => self.pending.push((port, frame)),
        }
    }

    // ---- timers (8.7.3-8.7.8) ----

    fn next_timer(&self, limit: u64) -> Option<(u64, Timer)> {
        let mut best: Option<(u64, Timer)> = None;
        let mut consider = |t: Option<u64>, which: Timer| {
            if let Some(at) = t {
                let earlier = match best {
                    Some((b, _)) => at < b,
                    None => true,
                };
                if at <= limit && earlier {
                    best = Some((at, which));
                }
            }
        };
        consider(self.hello_timer, Timer::Hello);
        consider(self.tcn_timer, Timer::Tcn);
        consider(self.topology_change_timer, Timer::TopologyChange);
        for (&id, p) in &self.ports {
            consider(p.message_age_timer, Timer::MessageAge(id));
            consider(p.forward_delay_timer, Timer::ForwardDelay(id));
            consider(p.hold_timer, Timer::Hold(id));
        }
        best
    }

    /// Fires every timer due by `target`, earliest first, each at its own
    /// deadline.
    fn advance(&mut self, target: u64) {
        for _ in 0..MAX_FIRINGS {
            let Some((at, timer)) = self.next_timer(target) else {
                break;
            };
            self.now = self.now.max(at);
            self.fire(timer, target);
        }
        self.now = self.now.max(target);
    }

    /// The next deadline of a periodic timer. When the clock jumped over
    /// several periods, the missed ones collapse into one at `target`.
    fn periodic(&self, period: u64, target: u64) -> u64 {
        let next = self.now.saturating_add(period.max(NS_PER_TICK));
        if next <= target && target > self.now {
            target
        } else {
            next
        }
    }

    fn fire(&mut self, timer: Timer, target: u64) {
        match timer {
            // 8.7.3 Hello Timer Expiry.
            Timer::Hello => {
                self.hello_timer = None;
                self.config_bpdu_generation();
                self.hello_timer = Some(self.periodic(self.hello, target));
            }
            // 8.7.6 Topology Change Notification Timer Expiry.
            Timer::Tcn => {
                self.tcn_timer = None;
                if !self.is_root() {
                    self.transmit_tcn();
                    self.tcn_timer = Some(self.periodic(self.bridge_hello, target));
                }
            }
            // 8.7.7 Topology Change Timer Expiry.
            Timer::TopologyChange => {
                self.topology_change_timer = None;
                self.topology_change_detected = false;
                self.set_topology_change(false);
            }
            Timer::MessageAge(id) => {
                if let Some(p) = self.ports.get_mut(&id) {
                    p.message_age_timer = None;
                }
                self.message_age_expired(id);
            }
            Timer::ForwardDelay(id) => {
                if let Some(p) = self.ports.get_mut(&id) {
                    p.forward_delay_timer = None;
                }
                self.forward_delay_expired(id);
            }
            // 8.7.8 Hold Timer Expiry.
            Timer::Hold(id) => {
                let pending = match self.ports.get_mut(&id) {
                    Some(p) => {
                        p.hold_timer = None;
                        p.config_pending
                    }
                    None => false,
                };
                if pending {
                    self.transmit_config(id);
                }
            }
        }
    }

    /// 8.7.4 Message Age Timer Expiry: the information heard on the port is
    /// too old; the port claims the segment and the tree is recomputed.
    fn message_age_expired(&mut self, id: PortId) {
        match self.ports.get(&id) {
            Some(p) if p.state != PortState::Disabled => {}
            _ => return,
        }
        let was_root = self.is_root();
        self.become_designated_port(id);
        self.configuration_update();
        self.port_state_selection();
        self.after_reconfiguration(was_root);
    }

    /// 8.7.5 Forward Delay Timer Expiry.
    fn forward_delay_expired(&mut self, id: PortId) {
        let (now, fwd) = (self.now, self.fwd);
        let Some(p) = self.ports.get_mut(&id) else {
            return;
        };
        match p.state {
            PortState::Listening => {
                p.state = PortState::Learning;
                p.forward_delay_timer = Some(now.saturating_add(fwd));
            }
            PortState::Learning => {
                p.state = PortState::Forwarding;
                if self.designated_for_some_port() {
                    self.topology_change_detection();
                }
            }
            _ => {}
        }
    }

    fn designated_for_some_port(&self) -> bool {
        self.ports
            .values()
            .any(|p| p.state != PortState::Disabled && p.designated_bridge == self.bridge_id)
    }

    // ---- procedures (8.6) ----

    /// 8.6.1 Transmit Configuration BPDU, rate-limited by the hold timer.
    fn transmit_config(&mut self, id: PortId) {
        let now = self.now;
        let age = self.message_age_now();
        let Some(p) = self.ports.get_mut(&id) else {
            return;
        };
        if p.hold_timer.is_some() {
            p.config_pending = true;
            return;
        }
        // 8.6.1.3: information as old as max age is not passed on.
        if age >= self.max_age {
            return;
        }
        let bpdu = Bpdu::Config {
            topology_change: self.topology_change,
            topology_change_ack: p.topology_change_ack,
            root: self.designated_root,
            root_path_cost: self.root_path_cost,
            bridge: self.bridge_id,
            port: p.port_id,
            message_age: ns_ticks(age),
            max_age: ns_ticks(self.max_age),
            hello_time: ns_ticks(self.hello),
            forward_delay: ns_ticks(self.fwd),
        };
        p.topology_change_ack = false;
        p.config_pending = false;
        p.hold_timer = Some(now.saturating_add(HOLD_NS));
        let frame = emit_bpdu(&bpdu, p.mac);
        self.queue(id, frame);
    }

    /// Age of the root's information as this bridge would send it now: 0 at
    /// the root, else its age on the root port plus the increment (8.6.1.3).
    fn message_age_now(&self) -> u64 {
        if self.is_root() {
            return 0;
        }
        match self.root_port.and_then(|r| self.ports.get(&r)) {
            Some(rp) => self
                .now
                .saturating_sub(rp.info_rx_ns)
                .saturating_add(rp.info_age_ns)
                .saturating_add(MESSAGE_AGE_INCR_NS),
            None => 0,
        }
    }

    /// 8.6.2 Record Configuration Information.
    fn record_config_information(&mut self, id: PortId, m: &Msg) {
        let now = self.now;
        if let Some(p) = self.ports.get_mut(&id) {
            p.designated_root = m.root;
            p.designated_cost = m.cost;
            p.designated_bridge = m.bridge;
            p.designated_port = m.port;
            p.info_rx_ns = now;
            p.info_age_ns = m.message_age;
            p.message_age_timer = Some(now.saturating_add(m.max_age.saturating_sub(m.message_age)));
        }
    }

    /// 8.6.3 Record Configuration Timeout Values: the root's times and
    /// topology change flag, heard on the root port.
    fn record_config_timeout_values(&mut self, m: &Msg) {
        self.max_age = m.max_age;
        self.hello = m.hello;
        self.fwd = m.fwd;
        self.set_topology_change(m.tc);
    }

    /// 8.6.4 Configuration BPDU Generation: on every designated port.
    fn config_bpdu_generation(&mut self) {
        let ids: Vec<PortId> = self
            .ports
            .iter()
            .filter(|(_, p)| p.state != PortState::Disabled && is_designated(self.bridge_id, p))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.transmit_config(id);
        }
    }

    /// 8.6.6 Transmit Topology Change Notification BPDU, on the root port.
    fn transmit_tcn(&mut self) {
        if let Some((id, mac)) = self
            .root_port
            .and_then(|r| self.ports.get(&r).map(|p| (r, p.mac)))
        {
            self.queue(id, emit_bpdu(&Bpdu::Tcn, mac));
        }
    }

    /// 8.6.7 Configuration Update.
    fn configuration_update(&mut self) {
        self.root_selection();
        self.designated_port_selection();
    }

    /// 8.6.8 Root Selection: the port with the best root vector among those
    /// that are not designated and hear of a root better than this bridge.
    fn root_selection(&mut self) {
        let mut best: Option<(PortId, &Port)> = None;
        for (&id, p) in &self.ports {
            if p.state == PortState::Disabled
                || is_designated(self.bridge_id, p)
                || self.bridge_id <= p.designated_root
            {
                continue;
            }
            let better = match best {
                Some((_, rp)) => root_vector(p) < root_vector(rp),
                None => true,
            };
            if better {
                best = Some((id, p));
            }
        }
        let chosen = best.map(|(id, p)| {
            (
                id,
                p.designated_root,
                p.designated_cost.saturating_add(p.path_cost),
            )
        });
        match chosen {
            Some((id, root, cost)) => {
                self.root_port = Some(id);
                self.designated_root = root;
                self.root_path_cost = cost;
            }
            None => {
                self.root_port = None;
                self.designated_root = self.bridge_id;
                self.root_path_cost = 0;
            }
        }
    }

    /// 8.6.9 Designated Port Selection: a port becomes designated when what
    /// this bridge would send beats what the segment's designated port sends.
    fn designated_port_selection(&mut self) {
        let mine = (self.root_path_cost, self.bridge_id);
        let ids: Vec<PortId> = self
            .ports
            .iter()
            .filter(|(_, p)| {
                p.state != PortState::Disabled
                    && (is_designated(self.bridge_id, p)
                        || p.designated_root != self.designated_root
                        || (mine.0, mine.1, p.port_id)
                            < (p.designated_cost, p.designated_bridge, p.designated_port))
            })
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.become_designated_port(id);
        }
    }

    /// 8.6.10 Become Designated Port.
    fn become_designated_port(&mut self, id: PortId) {
        let (root, cost, bridge) = (self.designated_root, self.root_path_cost, self.bridge_id);
        if let Some(p) = self.ports.get_mut(&id) {
            p.designated_root = root;
            p.designated_cost = cost;
            p.designated_bridge = bridge;
            p.designated_port = p.port_id;
        }
    }

    /// 8.6.11 Port State Selection.
    fn port_state_selection(&mut self) {
        let ids: Vec<PortId> = self.ports.keys().copied().collect();
        for id in ids {
            let (root, designated) = match self.ports.get_mut(&id) {
                Some(p) if p.state != PortState::Disabled => {
                    let root = self.root_port == Some(id);
                    let designated = !root && is_designated(self.bridge_id, p);
                    if designated {
                        p.message_age_timer = None;
                    } else {
                        p.config_pending = false;
                        p.topology_change_ack = false;
                    }
                    (root, designated)
                }
                _ => continue,
            };
            if root || designated {
                self.make_forwarding(id);
            } else {
                self.make_blocking(id);
            }
        }
    }

    /// 8.6.12 Make Forwarding: a blocked port starts listening.
    fn make_forwarding(&mut self, id: PortId) {
        let (now, fwd) = (self.now, self.fwd);
        let Some(p) = self.ports.get_mut(&id) else {
            return;
        };
        if p.state != PortState::Blocking {
            return;
        }
        if fwd == 0 {
            // A root announcing forward delay 0: straight on (as Linux).
            p.state = PortState::Forwarding;
            p.forward_delay_timer = None;
            self.topology_change_detection();
        } else {
            p.state = PortState::Listening;
            p.forward_delay_timer = Some(now.saturating_add(fwd));
        }
    }

    /// 8.6.13 Make Blocking; a port that was learning or forwarding is a
    /// topology change.
    fn make_blocking(&mut self, id: PortId) {
        let Some(p) = self.ports.get_mut(&id) else {
            return;
        };
        if matches!(p.state, PortState::Disabled | PortState::Blocking) {
            return;
        }
        let was_active = matches!(p.state, PortState::Learning | PortState::Forwarding);
        p.state = PortState::Blocking;
        p.forward_delay_timer = None;
        if was_active {
            self.topology_change_detection();
        }
    }

    /// 8.6.14 Topology Change Detection: the root flags the change in its
    /// BPDUs for max age + forward delay; any other bridge notifies the
    /// root with TCNs until acknowledged.
    fn topology_change_detection(&mut self) {
        if self.is_root() {
            self.set_topology_change(true);
            self.topology_change_timer = Some(
                self.now
                    .saturating_add(self.bridge_fwd)
                    .saturating_add(self.bridge_max_age),
            );
        } else if !self.topology_change_detected {
            self.transmit_tcn();
            self.tcn_timer = Some(self.now.saturating_add(self.bridge_hello));
        }
        self.topology_change_detected = true;
        self.tc_event = true;
    }

    fn set_topology_change(&mut self, on: bool) {
        if on && !self.topology_change {
            self.tc_event = true;
        }
        self.topology_change = on;
    }

    /// 8.6.15 Topology Change Acknowledged.
    fn topology_change_acknowledged(&mut self) {
        self.topology_change_detected = false;
        self.tcn_timer = None;
    }

    /// 8.6.16 Acknowledge Topology Change.
    fn acknowledge_topology_change(&mut self, id: PortId) {
        if let Some(p) = self.ports.get_mut(&id) {
            p.topology_change_ack = true;
        }
        self.transmit_config(id);
    }

    /// Becoming root (8.7.4, 8.8.3): own times, a topology change, BPDUs
    /// now and every hello time.
    fn become_root_bridge(&mut self) {
        self.max_age = self.bridge_max_age;
        self.hello = self.bridge_hello;
        self.fwd = self.bridge_fwd;
        self.topology_change_detection();
        self.tcn_timer = None;
        self.config_bpdu_generation();
        self.hello_timer = Some(self.now.saturating_add(self.hello));
    }

    /// 8.6.2.2 / Linux br_supersedes_port_info: the message carries better
    /// information than the port holds, or is a refresh from the same
    /// designated bridge.
    fn supersedes(&self, p: &Port, m: &Msg) -> bool {
        match (m.root, m.cost, m.bridge).cmp(&(
            p.designated_root,
            p.designated_cost,
            p.designated_bridge,
        )) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => m.bridge != self.bridge_id || m.port <= p.designated_port,
        }
    }

    /// 8.7.1 Received Configuration BPDU.
    fn received_config(&mut self, id: PortId, m: &Msg) {
        let was_root = self.is_root();
        let Some(p) = self.ports.get(&id) else {
            return;
        };
        if self.supersedes(p, m) {
            self.record_config_information(id, m);
            self.configuration_update();
            self.port_state_selection();
            self.after_reconfiguration(was_root);
            if self.root_port == Some(id) {
                self.record_config_timeout_values(m);
                self.config_bpdu_generation();
                if m.tca {
                    self.topology_change_acknowledged();
                }
            }
        } else if is_designated(self.bridge_id, p) {
            // 8.6.5 Reply to Configuration BPDU.
            self.transmit_config(id);
        }
    }

    /// 8.7.2 Received Topology Change Notification BPDU.
    fn received_tcn(&mut self, id: PortId) {
        let designated = self
            .ports
            .get(&id)
            .is_some_and(|p| is_designated(self.bridge_id, p));
        if designated {
            self.topology_change_detection();
            self.acknowledge_topology_change(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;
    const STEP: u64 = 100 * MS;
    const MAX_AGE: u64 = 20 * S;
    const FWD: u64 = 15 * S;

    /// A Linux root bridge's configuration BPDU: root = bridge
    /// 8000.020000000001, cost 0, port 0x8001, max age 20 s, hello 2 s,
    /// forward delay 15 s; 52 bytes padded to 60.
    const CONFIG_ROOT: [u8; 60] = [
        0x01, 0x80, 0xc2, 0x00, 0x00, 0x00, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src
        0x00, 0x26, // 802.3 length 38
        0x42, 0x42, 0x03, // LLC
        0x00, 0x00, 0x00, 0x00, 0x00, // proto, version, type, flags
        0x80, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // root
        0x00, 0x00, 0x00, 0x00, // root path cost
        0x80, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // bridge
        0x80, 0x01, // port
        0x00, 0x00, 0x14, 0x00, 0x02, 0x00, 0x0f, 0x00, // times
        0, 0, 0, 0, 0, 0, 0, 0, // padding
    ];

    /// Relayed by a non-root bridge during a topology change, with an
    /// acknowledgement: flags TC|TCA, cost 100, bridge 8000.020000000002,
    /// port 0x8002, message age 1 s.
    const CONFIG_RELAYED: [u8; 60] = [
        0x01, 0x80, 0xc2, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x12, 0x00, 0x26, 0x42,
        0x42, 0x03, 0x00, 0x00, 0x00, 0x00, 0x81, 0x80, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x64, 0x80, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x80, 0x02, 0x01,
        0x00, 0x14, 0x00, 0x02, 0x00, 0x0f, 0x00, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    /// A TCN: length 7, LLC, 00 00 00 80, padded to 60.
    const TCN: [u8; 60] = {
        let mut f = [0u8; 60];
        let head = [
            0x01, 0x80, 0xc2, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x22, 0x00, 0x07,
            0x42, 0x42, 0x03, 0x00, 0x00, 0x00, 0x80,
        ];
        let mut i = 0;
        while i < head.len() {
            f[i] = head[i];
            i += 1;
        }
        f
    };

    /// An RST BPDU (version 2, type 2, 36 octets) from an RSTP neighbour:
    /// flags proposal|designated|learning|forwarding, no TC.
    const RST: [u8; 60] = [
        0x01, 0x80, 0xc2, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x33, 0x00, 0x27, 0x42,
        0x42, 0x03, 0x00, 0x00, 0x02, 0x02, 0x3e, 0x10, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x03,
        0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x03, 0x80, 0x01, 0x00,
        0x00, 0x14, 0x00, 0x02, 0x00, 0x0f, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0,
    ];

    fn bmac(b: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, b])
    }

    fn pmac(b: usize, p: PortId) -> MacAddr {
        MacAddr([2, 0, 0, 0, b as u8 + 1, p as u8])
    }

    #[test]
    fn bridge_id_text() {
        let id = BridgeId::new(32768, bmac(1));
        assert_eq!(id.to_string(), "8000.020000000001");
        assert_eq!(id.priority(), 32768);
        assert_eq!(id.mac(), bmac(1));
        assert!(BridgeId::new(4096, bmac(9)) < id);
        assert!(BridgeId::new(32768, bmac(0)) < id);
    }

    #[test]
    fn fixtures_parse_and_reemit() {
        let b = parse_bpdu(&CONFIG_ROOT).unwrap();
        let root = BridgeId::new(0x8000, bmac(1));
        assert_eq!(
            b,
            Bpdu::Config {
                topology_change: false,
                topology_change_ack: false,
                root,
                root_path_cost: 0,
                bridge: root,
                port: 0x8001,
                message_age: 0,
                max_age: 20 * 256,
                hello_time: 2 * 256,
                forward_delay: 15 * 256,
            }
        );
        assert_eq!(emit_bpdu(&b, bmac(1)), CONFIG_ROOT);

        let b = parse_bpdu(&CONFIG_RELAYED).unwrap();
        let Bpdu::Config {
            topology_change,
            topology_change_ack,
            root_path_cost,
            bridge,
            port,
            message_age,
            ..
        } = b
        else {
            panic!("not a config BPDU: {b:?}");
        };
        assert!(topology_change && topology_change_ack);
        assert_eq!((root_path_cost, port, message_age), (100, 0x8002, 256));
        assert_eq!(bridge.to_string(), "8000.020000000002");
        assert_eq!(
            emit_bpdu(&b, MacAddr([2, 0, 0, 0, 0, 0x12])),
            CONFIG_RELAYED
        );

        assert_eq!(parse_bpdu(&TCN).unwrap(), Bpdu::Tcn);
        assert_eq!(emit_bpdu(&Bpdu::Tcn, MacAddr([2, 0, 0, 0, 0, 0x22])), TCN);

        // Unpadded frames (veth does not pad) and padding beyond the 802.3
        // length parse the same.
        assert_eq!(
            parse_bpdu(&CONFIG_ROOT[..52]).unwrap(),
            parse_bpdu(&CONFIG_ROOT).unwrap()
        );
        assert_eq!(parse_bpdu(&TCN[..21]).unwrap(), Bpdu::Tcn);
        // The SSAP command/response bit is ignored.
        let mut f = CONFIG_ROOT;
        f[15] = 0x43;
        assert!(parse_bpdu(&f).is_ok());
    }

    #[test]
    fn rst_bpdu_reads_as_config() {
        let Bpdu::Config {
            topology_change,
            topology_change_ack,
            root,
            root_path_cost,
            port,
            ..
        } = parse_bpdu(&RST).unwrap()
        else {
            panic!("RST BPDU not read as configuration");
        };
        assert!(!topology_change && !topology_change_ack);
        assert_eq!(root.to_string(), "1000.020000000003");
        assert_eq!((root_path_cost, port), (0, 0x8001));
        // A later version of a configuration BPDU too.
        let mut f = CONFIG_ROOT;
        f[19] = 3;
        assert!(matches!(parse_bpdu(&f), Ok(Bpdu::Config { .. })));
    }

    #[test]
    fn bad_frames_are_errors() {
        for n in 0..52 {
            assert!(parse_bpdu(&CONFIG_ROOT[..n]).is_err(), "config cut at {n}");
        }
        for n in 0..21 {
            assert!(parse_bpdu(&TCN[..n]).is_err(), "tcn cut at {n}");
        }
        let with = |i: usize, v: u8| {
            let mut f = CONFIG_ROOT;
            f[i] = v;
            parse_bpdu(&f)
        };
        assert!(matches!(with(5, 1), Err(BpduError::NotStpGroup(_))));
        let mut f = CONFIG_ROOT;
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(parse_bpdu(&f), Err(BpduError::NotLlc(0x0800)));
        // A length beyond the frame, or too short for a configuration BPDU.
        assert_eq!(with(13, 0x50), Err(BpduError::Truncated(60)));
        assert_eq!(with(13, 0x25), Err(BpduError::Truncated(60)));
        assert!(matches!(
            with(14, 0xaa),
            Err(BpduError::BadLlc(0xaa, 0x42, 3))
        ));
        assert!(matches!(with(16, 0x13), Err(BpduError::BadLlc(..))));
        assert_eq!(with(18, 1), Err(BpduError::BadProtocol(1)));
        assert_eq!(with(20, 0x40), Err(BpduError::UnknownType(0x40)));
        let mut f = TCN;
        f[13] = 6;
        assert!(parse_bpdu(&f).is_err());
    }

    use crate::test_rng::Rng;

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let mut stp = Stp::new(bmac(2), StpSettings::default(), 0);
        stp.add_port(1, pmac(1, 1), 100, 128, 0);
        let mut out = Vec::new();
        let mut t = 0;
        let mut accepted = 0;
        for i in 0..20_000 {
            // Random bytes, fixtures with random bytes overwritten, and
            // well-formed BPDUs with random field values.
            let frame: Vec<u8> = match i % 3 {
                0 => {
                    let n = rng.below(80) as usize;
                    let mut f: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                    if n >= 6 && rng.below(2) == 0 {
                        f[..6].copy_from_slice(&STP_GROUP_ADDR.0);
                    }
                    f
                }
                1 => {
                    let mut f = if rng.below(2) == 0 { CONFIG_ROOT } else { TCN }.to_vec();
                    for _ in 0..=rng.below(4) {
                        let at = rng.below(f.len() as u64) as usize;
                        f[at] = rng.next() as u8;
                    }
                    f.truncate(rng.below(61) as usize);
                    f
                }
                _ => {
                    let r = |rng: &mut Rng| BridgeId(rng.next() % 4 + 0x8000_0200_0000_0000);
                    let b = Bpdu::Config {
                        topology_change: rng.below(2) == 0,
                        topology_change_ack: rng.below(2) == 0,
                        root: r(&mut rng),
                        root_path_cost: [0, 1, 100, u32::MAX][rng.below(4) as usize],
                        bridge: r(&mut rng),
                        port: rng.next() as u16,
                        message_age: [0, 256, 5120, u16::MAX][rng.below(4) as usize],
                        max_age: [0, 256, 5120, u16::MAX][rng.below(4) as usize],
                        hello_time: [0, 1, 512][rng.below(3) as usize],
                        forward_delay: [0, 1, 3840][rng.below(3) as usize],
                    };
                    emit_bpdu(&b, pmac(9, 1))
                }
            };
            let _ = parse_bpdu(&frame);
            if stp.receive(1, &frame, t).is_ok() {
                accepted += 1;
            }
            t += rng.below(3 * S);
            stp.tick(t, &mut out);
            for (_, f) in out.drain(..) {
                parse_bpdu(&f).unwrap();
            }
            let st = stp.status();
            assert!(st.root_port.is_none() || st.root_id != st.bridge_id);
        }
        assert!(accepted > 1000, "only {accepted} accepted");
    }

    #[test]
    fn receive_checks() {
        let mut stp = Stp::new(bmac(2), StpSettings::default(), 0);
        assert_eq!(
            stp.receive(7, &CONFIG_ROOT, 0),
            Err(BpduError::UnknownPort(7))
        );
        stp.add_port(1, pmac(1, 1), 100, 128, 0);
        let mut f = CONFIG_ROOT;
        f[44] = 0x15; // message age 21 s > max age 20 s
        assert!(matches!(
            stp.receive(1, &f, 0),
            Err(BpduError::MessageAgeExceedsMaxAge { .. })
        ));
        assert_eq!(stp.status().root_id, "8000.020000000002");
        stp.receive(1, &CONFIG_ROOT, 0).unwrap();
        let st = stp.status();
        assert_eq!(st.root_id, "8000.020000000001");
        assert_eq!((st.root_port, st.root_path_cost), (Some(1), 100));
        assert_eq!(stp.port_state(2), PortState::Disabled);
        assert_eq!(stp.port_role(2), PortRole::Disabled);
    }

    #[test]
    fn settings_validation() {
        let ok = StpSettings::default();
        assert_eq!(ok.validate(), Ok(()));
        let with = |f: &dyn Fn(&mut StpSettings)| {
            let mut s = ok;
            f(&mut s);
            s.validate()
        };
        assert!(with(&|s| s.hello_s = 0).unwrap_err().contains("hello"));
        assert!(with(&|s| s.hello_s = 11).is_err());
        assert!(with(&|s| s.max_age_s = 5).unwrap_err().contains("max age"));
        assert!(with(&|s| s.max_age_s = 41).is_err());
        assert!(with(&|s| s.forward_delay_s = 3)
            .unwrap_err()
            .contains("forward delay"));
        assert!(with(&|s| s.forward_delay_s = 31).is_err());
        // 2 x (4 - 1) = 6 < 20.
        assert!(with(&|s| s.forward_delay_s = 4)
            .unwrap_err()
            .contains("2 x (forward delay - 1)"));
        // 2 x (10 + 1) = 22 > 20.
        assert!(with(&|s| s.hello_s = 10)
            .unwrap_err()
            .contains("2 x (hello time + 1)"));
        assert_eq!(
            with(&|s| {
                s.hello_s = 1;
                s.max_age_s = 6;
                s.forward_delay_s = 4
            }),
            Ok(())
        );
        assert_eq!(with(&|s| s.priority = 0), Ok(()));
        assert_eq!(path_cost_for_speed(0), 100);
        assert_eq!(path_cost_for_speed(10), 100);
        assert_eq!(path_cost_for_speed(100), 19);
        assert_eq!(path_cost_for_speed(1000), 4);
        assert_eq!(path_cost_for_speed(10_000), 2);
        assert_eq!(path_cost_for_speed(25_000), 1);
    }

    #[test]
    fn names() {
        assert_eq!(PortState::Forwarding.name(), "forwarding");
        assert_eq!(PortState::Blocking.name(), "blocking");
        assert_eq!(PortRole::Alternate.name(), "alternate");
        assert_eq!(PortRole::Root.name(), "root");
        assert_eq!(
            serde_json::to_string(&PortState::Listening).unwrap(),
            "\"listening\""
        );
    }

    // ---- simulated networks in virtual time ----

    /// Bridges joined by segments (a point-to-point link, or a hub when more
    /// than two ports share one). Each BPDU a bridge emits reaches every other
    /// port on its segment at once, while the segment is up.
    struct Net {
        br: Vec<Stp>,
        segs: Vec<(Vec<(usize, PortId)>, bool)>,
        /// Silently failed bridges: neither send nor receive.
        dead: Vec<bool>,
        now: u64,
        /// Every BPDU sent: (time, bridge, port, BPDU).
        log: Vec<(u64, usize, PortId, Bpdu)>,
    }

    impl Net {
        /// `n` bridges with MACs 02:00:00:00:00:01.. and default settings.
        fn new(n: usize) -> Net {
            Net {
                br: (0..n)
                    .map(|i| Stp::new(bmac(i as u8 + 1), StpSettings::default(), 0))
                    .collect(),
                segs: Vec::new(),
                dead: vec![false; n],
                now: 0,
                log: Vec::new(),
            }
        }

        fn link(&mut self, ends: &[(usize, PortId)]) -> usize {
            for &(b, p) in ends {
                self.br[b].add_port(
                    p,
                    pmac(b, p),
                    DEFAULT_PATH_COST,
                    DEFAULT_PORT_PRIORITY,
                    self.now,
                );
            }
            self.segs.push((ends.to_vec(), true));
            self.segs.len() - 1
        }

        /// Link up or down: the ports on both ends are enabled or disabled.
        fn set_link(&mut self, seg: usize, up: bool) {
            self.segs[seg].1 = up;
            for (b, p) in self.segs[seg].0.clone() {
                if up {
                    self.br[b].add_port(
                        p,
                        pmac(b, p),
                        DEFAULT_PATH_COST,
                        DEFAULT_PORT_PRIORITY,
                        self.now,
                    );
                } else {
                    self.br[b].remove_port(p, self.now);
                }
            }
        }

        fn step(&mut self) {
            self.now += STEP;
            for i in 0..self.br.len() {
                if self.dead[i] {
                    continue;
                }
                let mut out = Vec::new();
                self.br[i].tick(self.now, &mut out);
                for (port, frame) in out {
                    assert_eq!(frame.len(), 60);
                    self.log
                        .push((self.now, i, port, parse_bpdu(&frame).unwrap()));
                    let peers: Vec<(usize, PortId)> = self
                        .segs
                        .iter()
                        .filter(|(ends, up)| *up && ends.contains(&(i, port)))
                        .flat_map(|(ends, _)| ends.iter().copied())
                        .filter(|&(b, p)| (b, p) != (i, port) && !self.dead[b])
                        .collect();
                    for (b, p) in peers {
                        self.br[b].receive(p, &frame, self.now).unwrap();
                    }
                }
            }
        }

        fn run(&mut self, dur: u64) {
            let end = self.now + dur;
            while self.now < end {
                self.step();
            }
        }

        /// Steps until `done` holds; the time it took.
        fn run_until(&mut self, limit: u64, done: impl Fn(&Net) -> bool) -> Option<u64> {
            let start = self.now;
            while self.now - start <= limit {
                if done(self) {
                    return Some(self.now - start);
                }
                self.step();
            }
            None
        }

        fn blocked(&self) -> Vec<(usize, PortId)> {
            let mut v = Vec::new();
            for (i, b) in self.br.iter().enumerate() {
                if self.dead[i] {
                    continue;
                }
                for p in b.status().ports {
                    if p.state != PortState::Forwarding {
                        v.push((i, p.port));
                    }
                }
            }
            v
        }

        fn roots(&self) -> Vec<String> {
            (0..self.br.len())
                .filter(|i| !self.dead[*i])
                .map(|i| self.br[i].status().root_id)
                .collect()
        }

        fn all_root(&self, id: &str) -> bool {
            self.roots().iter().all(|r| r == id)
        }
    }

    fn id(b: u8) -> String {
        format!("8000.0200000000{b:02x}")
    }

    /// Every port either forwards as root or designated port, or blocks as
    /// alternate or backup, and the roles agree with the root port.
    fn assert_consistent(net: &Net) {
        for (i, b) in net.br.iter().enumerate() {
            if net.dead[i] {
                continue;
            }
            let st = b.status();
            for p in &st.ports {
                let blocked = matches!(p.role, PortRole::Alternate | PortRole::Backup);
                assert_eq!(
                    p.state == PortState::Blocking,
                    blocked,
                    "bridge {i} port {}: {p:?}",
                    p.port
                );
                assert_eq!(p.role == PortRole::Root, st.root_port == Some(p.port));
                assert_eq!(b.forwards(p.port), !blocked);
                assert_eq!(b.learns(p.port), !blocked);
            }
        }
    }

    #[test]
    fn two_bridges_two_parallel_links() {
        let mut net = Net::new(2);
        // Crossed: A.1-B.2 and A.2-B.1.
        net.link(&[(0, 1), (1, 2)]);
        net.link(&[(0, 2), (1, 1)]);
        net.run(60 * S);
        assert!(net.all_root(&id(1)));
        assert_consistent(&net);
        // B's root port faces the root's lower port id (0x8002 on A.1), even
        // though B's own port id there is the higher one.
        let b = net.br[1].status();
        assert_eq!((b.root_port, b.root_path_cost), (Some(2), 100));
        assert_eq!(net.blocked(), vec![(1, 1)]);
        assert_eq!(net.br[1].port_role(1), PortRole::Alternate);
        assert_eq!(net.br[0].port_role(1), PortRole::Designated);
        assert_eq!(net.br[0].port_role(2), PortRole::Designated);
        assert!(net.br[0].status().root_port.is_none());
    }

    #[test]
    fn shared_segment_ties_break_on_own_port_id() {
        // A hub joining A.1, B.1 and B.2: both B ports hear the same
        // designated port, so B's lower port id wins.
        let mut net = Net::new(2);
        net.link(&[(0, 1), (1, 1), (1, 2)]);
        net.run(60 * S);
        assert_consistent(&net);
        assert_eq!(net.br[1].status().root_port, Some(1));
        assert_eq!(net.blocked(), vec![(1, 2)]);
        assert_eq!(net.br[1].port_role(2), PortRole::Alternate);

        // Same hub with B as root: B.2 hears B.1 and backs it up.
        let mut net = Net::new(2);
        let s = StpSettings {
            priority: 4096,
            ..StpSettings::default()
        };
        net.br[1].set_settings(s, 0);
        net.link(&[(0, 1), (1, 1), (1, 2)]);
        net.run(60 * S);
        assert_consistent(&net);
        assert!(net.all_root("1000.020000000002"));
        assert_eq!(net.br[0].status().root_port, Some(1));
        assert_eq!(net.blocked(), vec![(1, 2)]);
        assert_eq!(net.br[1].port_role(2), PortRole::Backup);
        assert_eq!(net.br[1].port_role(1), PortRole::Designated);
    }

    /// A(0)-B(1) on A.1/B.1, A-C(2) on A.2/C.1, B-C on B.2/C.2.
    fn triangle() -> Net {
        let mut net = Net::new(3);
        net.link(&[(0, 1), (1, 1)]);
        net.link(&[(0, 2), (2, 1)]);
        net.link(&[(1, 2), (2, 2)]);
        net
    }

    #[test]
    fn triangle_blocks_the_worse_bridges_port() {
        let mut net = triangle();
        net.run(60 * S);
        assert!(net.all_root(&id(1)));
        assert_consistent(&net);
        assert_eq!(net.br[1].status().root_port, Some(1));
        assert_eq!(net.br[2].status().root_port, Some(1));
        // On the B-C segment both are 100 from the root: B (lower id) is
        // designated, C's port is the alternate.
        assert_eq!(net.blocked(), vec![(2, 2)]);
        assert_eq!(net.br[2].port_role(2), PortRole::Alternate);
        assert_eq!(net.br[1].port_role(2), PortRole::Designated);
        assert!(!net.br[2].learns(2) && !net.br[2].forwards(2));

        // Message age: 0 from the root, one second more when B relays it.
        let late = net.now - 10 * S;
        let ages = |b: usize, p: PortId| -> Vec<u16> {
            net.log
                .iter()
                .filter(|(t, lb, lp, _)| *t > late && *lb == b && *lp == p)
                .filter_map(|(_, _, _, bpdu)| match bpdu {
                    Bpdu::Config { message_age, .. } => Some(*message_age),
                    Bpdu::Tcn => None,
                })
                .collect()
        };
        let root_ages = ages(0, 1);
        assert!(root_ages.len() >= 4 && root_ages.iter().all(|a| *a == 0));
        let relayed = ages(1, 2);
        assert!(relayed.len() >= 4);
        assert!(
            relayed.iter().all(|a| (256..256 + 2 * 26).contains(a)),
            "{relayed:?}"
        );
        // Blocked and root ports send no configuration BPDUs.
        assert!(ages(2, 2).is_empty() && ages(2, 1).is_empty());
    }

    #[test]
    fn square_blocks_one_port() {
        // Ring A.1-B.1, B.2-D.1, D.2-C.2, C.1-A.2; D is opposite the root.
        let mut net = Net::new(4);
        net.link(&[(0, 1), (1, 1)]);
        net.link(&[(1, 2), (3, 1)]);
        net.link(&[(3, 2), (2, 2)]);
        net.link(&[(2, 1), (0, 2)]);
        net.run(60 * S);
        assert!(net.all_root(&id(1)));
        assert_consistent(&net);
        // D reaches the root at 200 either way and prefers B (lower id); C
        // is designated on C-D at cost 100, so D's port to C blocks.
        let d = net.br[3].status();
        assert_eq!((d.root_port, d.root_path_cost), (Some(1), 200));
        assert_eq!(net.blocked(), vec![(3, 2)]);
    }

    #[test]
    fn silent_root_failure_reconverges() {
        let mut net = triangle();
        net.run(60 * S);
        assert_eq!(net.blocked(), vec![(2, 2)]);
        // The root stops sending (crash, not link down): B and C must age
        // its information out.
        net.dead[0] = true;
        let took = net
            .run_until(MAX_AGE + 2 * FWD, |n| {
                n.all_root(&id(2)) && n.br[2].forwards(2) && n.br[2].status().root_port == Some(2)
            })
            .expect("no reconvergence within max age + 2 x forward delay");
        // The alternate port had to pass listening and learning.
        assert!(took >= 2 * FWD, "took {took}");
        net.run(10 * S);
        assert_consistent(&net);
        assert!(net.all_root(&id(2)));
        assert_eq!(net.br[2].status().root_path_cost, 100);
        assert_eq!(net.br[1].port_role(2), PortRole::Designated);
    }

    #[test]
    fn root_links_down_reconverges() {
        let mut net = triangle();
        net.run(60 * S);
        net.set_link(0, false);
        net.set_link(1, false);
        // B lost its root port: it is root at once.
        assert_eq!(net.br[1].status().root_id, id(2));
        let took = net
            .run_until(MAX_AGE + 2 * FWD, |n| {
                n.br[1].status().root_id == id(2)
                    && n.br[2].status().root_id == id(2)
                    && n.br[2].forwards(2)
                    && n.br[1].forwards(2)
            })
            .expect("no reconvergence within max age + 2 x forward delay");
        assert!(took >= 2 * FWD, "took {took}");
        net.run(5 * S);
        assert_eq!(net.br[2].status().root_port, Some(2));
        assert_eq!(net.br[0].status().root_id, id(1));
        assert!(net.br[0].status().ports.is_empty());
        // The links come back: A is root again, C's B port blocks again.
        net.set_link(0, true);
        net.set_link(1, true);
        net.run(60 * S);
        assert!(net.all_root(&id(1)));
        assert_consistent(&net);
        assert_eq!(net.blocked(), vec![(2, 2)]);
    }

    #[test]
    fn priority_change_moves_the_root() {
        let mut net = triangle();
        net.run(60 * S);
        let s = StpSettings {
            priority: 4096,
            ..StpSettings::default()
        };
        net.br[2].set_settings(s, net.now);
        assert_eq!(net.br[2].status().bridge_id, "1000.020000000003");
        assert_eq!(net.br[2].status().root_id, "1000.020000000003");
        net.run(60 * S);
        assert!(net.all_root("1000.020000000003"));
        assert_consistent(&net);
        assert_eq!(net.br[0].status().root_port, Some(2));
        assert_eq!(net.br[1].status().root_port, Some(2));
        // A and B are both 100 from C; A (lower id) is designated on A-B.
        assert_eq!(net.blocked(), vec![(1, 1)]);
        // And back.
        net.br[2].set_settings(StpSettings::default(), net.now);
        net.run(60 * S);
        assert!(net.all_root(&id(1)));
        assert_eq!(net.blocked(), vec![(2, 2)]);
    }

    #[test]
    fn port_passes_listening_learning_forwarding() {
        let mut stp = Stp::new(bmac(1), StpSettings::default(), 0);
        let t0 = S;
        stp.add_port(1, pmac(0, 1), 100, 128, t0);
        assert_eq!(stp.port_state(1), PortState::Listening);
        assert_eq!(stp.port_role(1), PortRole::Designated);
        let mut out = Vec::new();
        let mut t = t0;
        while t < t0 + 40 * S {
            stp.tick(t, &mut out);
            let want = if t < t0 + FWD {
                PortState::Listening
            } else if t < t0 + 2 * FWD {
                PortState::Learning
            } else {
                PortState::Forwarding
            };
            assert_eq!(stp.port_state(1), want, "at {} ms", (t - t0) / MS);
            assert_eq!(stp.learns(1), want != PortState::Listening);
            assert_eq!(stp.forwards(1), want == PortState::Forwarding);
            t += STEP;
        }
        // The root sent a BPDU every hello time on its designated port.
        let configs = out.iter().filter(|(p, _)| *p == 1).count();
        assert!((19..=21).contains(&configs), "{configs}");
    }

    #[test]
    fn irregular_ticks_and_jumps() {
        let mut stp = Stp::new(bmac(1), StpSettings::default(), 0);
        stp.add_port(1, pmac(0, 1), 100, 128, 0);
        let mut out = Vec::new();
        stp.tick(20 * S, &mut out);
        assert_eq!(stp.port_state(1), PortState::Learning);
        stp.tick(29_999 * MS, &mut out);
        assert_eq!(stp.port_state(1), PortState::Learning);
        stp.tick(30 * S, &mut out);
        assert_eq!(stp.port_state(1), PortState::Forwarding);
        // Time going backwards changes nothing.
        stp.tick(5 * S, &mut out);
        assert_eq!(stp.port_state(1), PortState::Forwarding);

        // One jump of an hour: every timer fires in order, and the missed
        // hellos collapse into one BPDU.
        let mut stp = Stp::new(bmac(5), StpSettings::default(), 0);
        stp.add_port(1, pmac(0, 1), 100, 128, 0);
        stp.add_port(2, pmac(0, 2), 100, 128, 0);
        let mut out = Vec::new();
        stp.tick(3600 * S, &mut out);
        assert!(stp.forwards(1) && stp.forwards(2));
        assert_eq!(out.len(), 2, "{out:?}");
        // The topology change the ports caused ran its course long ago.
        assert_eq!(stp.fast_ageing_s(), None);
        assert!(stp.take_topology_change());
        // A root heard on port 1 is aged out after max age, also in a jump.
        stp.receive(1, &CONFIG_ROOT, 3600 * S).unwrap();
        assert_eq!(stp.status().root_port, Some(1));
        assert_eq!(stp.port_state(2), PortState::Forwarding);
        stp.tick(3600 * S + MAX_AGE - MS, &mut out);
        assert_eq!(stp.status().root_port, Some(1));
        stp.tick(3700 * S, &mut out);
        assert_eq!(stp.status().root_port, None);
        assert_eq!(stp.status().root_id, "8000.020000000005");
    }

    #[test]
    fn topology_change_propagates() {
        let mut net = Net::new(2);
        net.link(&[(0, 1), (1, 1)]);
        net.run(100 * S);
        // The start-up topology change is over.
        assert_eq!(net.br[0].fast_ageing_s(), None);
        assert_eq!(net.br[1].fast_ageing_s(), None);
        net.br[0].take_topology_change();
        net.br[1].take_topology_change();

        // B gets a new (edge) port: when it starts forwarding B is
        // designated for it, which is a topology change.
        let t_add = net.now;
        net.br[1].add_port(2, pmac(1, 2), 100, 128, net.now);
        net.run(2 * FWD - 2 * STEP);
        assert_eq!(net.br[1].port_state(2), PortState::Learning);
        assert!(!net.br[0].status().topology_change);
        assert!(
            !net.br[1].take_topology_change(),
            "nothing before forwarding"
        );
        net.run_until(2 * FWD + STEP, |n| n.br[0].status().topology_change)
            .unwrap();
        let t_tc = net.now;
        assert!(t_tc - t_add >= 2 * FWD);
        // A TCN went from B's root port to the root.
        let tcns: Vec<_> = net
            .log
            .iter()
            .filter(|(t, _, _, b)| *t > t_add && *b == Bpdu::Tcn)
            .map(|(_, b, p, _)| (*b, *p))
            .collect();
        assert_eq!(tcns, vec![(1, 1)]);
        assert_eq!(net.br[0].fast_ageing_s(), Some(15));
        assert!(net.br[0].take_topology_change());
        assert!(!net.br[0].take_topology_change(), "reading clears it");
        assert!(net.br[1].take_topology_change());

        // The root acknowledges and flags the change; B follows the flag.
        net.run(3 * S);
        let acked = net.log.iter().any(|(t, b, p, bpdu)| {
            *t >= t_tc
                && (*b, *p) == (0, 1)
                && matches!(
                    bpdu,
                    Bpdu::Config {
                        topology_change: true,
                        topology_change_ack: true,
                        ..
                    }
                )
        });
        assert!(acked);
        assert_eq!(net.br[1].fast_ageing_s(), Some(15));
        // One TCN only: the acknowledgement stopped B's TCN timer.
        assert_eq!(
            net.log
                .iter()
                .filter(|(t, _, _, b)| *t > t_add && *b == Bpdu::Tcn)
                .count(),
            1
        );

        // The root flags it for max age + forward delay.
        while net.now < t_tc + MAX_AGE + FWD - STEP {
            net.step();
            assert_eq!(net.br[0].fast_ageing_s(), Some(15), "at {}", net.now - t_tc);
        }
        net.step();
        net.step();
        assert_eq!(net.br[0].fast_ageing_s(), None);
        net.run(3 * S);
        assert_eq!(net.br[1].fast_ageing_s(), None);
        assert!(!net.br[1].status().topology_change);
    }

    #[test]
    fn port_cost_moves_the_root_port() {
        let mut net = Net::new(2);
        net.link(&[(0, 1), (1, 1)]);
        net.link(&[(0, 2), (1, 2)]);
        net.run(60 * S);
        assert_eq!(net.br[1].status().root_port, Some(1));
        assert_eq!(net.blocked(), vec![(1, 2)]);
        net.br[1].set_port_cost(1, 500, 128, net.now);
        net.run(60 * S);
        assert_consistent(&net);
        let st = net.br[1].status();
        assert_eq!((st.root_port, st.root_path_cost), (Some(2), 100));
        assert_eq!(net.blocked(), vec![(1, 1)]);
        let p1 = st.ports.iter().find(|p| p.port == 1).unwrap();
        assert_eq!((p1.cost, p1.priority, p1.port_id), (500, 128, 0x8002));
        // A lower port priority on the root makes its port 2 the preferred
        // designated port once costs are equal again.
        net.br[1].set_port_cost(1, 100, 128, net.now);
        net.br[0].set_port_cost(2, 100, 16, net.now);
        net.run(60 * S);
        assert_consistent(&net);
        assert_eq!(net.br[1].status().root_port, Some(2));
    }
}
