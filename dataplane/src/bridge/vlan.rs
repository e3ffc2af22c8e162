//! IEEE 802.1Q VLAN rules: ingress classification, egress tagging, and the
//! per-frame tag edit a port needs.
//!
//! Clause references are to IEEE 802.1Q-2018: 6.9 (tag handling: untagged,
//! priority-tagged and VLAN-tagged frames), 8.6.1 (ingress: PVID for untagged
//! and priority-tagged frames), 8.6.2 (ingress filtering), 8.6.4 (egress
//! filtering), 9.6 (TCI: PCP, DEI, VID; VID 0 = priority tag, VID 4095 reserved).

use crate::stats::DropReason;
use std::fmt;

pub use crate::wire::eth::{TPID_8021AD, TPID_8021Q};
pub const MAX_VID: u16 = 4094;

/// A set of VLAN ids (a 4096-bit map).
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet(Box<[u64; 64]>);

impl Default for VlanSet {
    fn default() -> Self {
        VlanSet(Box::new([0; 64]))
    }
}

impl VlanSet {
    pub fn insert(&mut self, vid: u16) {
        let v = (vid & 0xfff) as usize;
        self.0[v / 64] |= 1 << (v % 64);
    }

    #[inline]
    pub fn contains(&self, vid: u16) -> bool {
        let v = (vid & 0xfff) as usize;
        self.0[v / 64] & (1 << (v % 64)) != 0
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (1..=MAX_VID).filter(|v| self.contains(*v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// Parses `10,20,100-110`: ids 1-4094, ranges low-high.
    pub fn parse(s: &str) -> Result<VlanSet, String> {
        let mut set = VlanSet::default();
        for part in s.split(',') {
            let part = part.trim();
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (parse_vid(a)?, parse_vid(b)?),
                None => {
                    let v = parse_vid(part)?;
                    (v, v)
                }
            };
            if lo > hi {
                return Err(format!("VLAN range '{part}' is backwards"));
            }
            for v in lo..=hi {
                set.insert(v);
            }
        }
        Ok(set)
    }

    /// Compact text form, `10,20,100-110`.
    pub fn to_ranges(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        let mut run: Option<(u16, u16)> = None;
        for v in self.iter() {
            run = match run {
                Some((a, b)) if b + 1 == v => Some((a, v)),
                Some((a, b)) => {
                    out.push(range_text(a, b));
                    Some((v, v))
                }
                None => Some((v, v)),
            };
        }
        if let Some((a, b)) = run {
            out.push(range_text(a, b));
        }
        out.join(",")
    }
}

fn range_text(a: u16, b: u16) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

impl fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VlanSet({})", self.to_ranges())
    }
}

/// Parses one VLAN id: 1-4094 (0 and 4095 are reserved, 802.1Q table 9-2).
pub fn parse_vid(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(v @ 1..=MAX_VID) => Ok(v),
        _ => Err(format!("'{}' is not a VLAN id (1-4094)", s.trim())),
    }
}

/// How a port carries VLANs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VlanMode {
    /// One VLAN, untagged.
    Access(u16),
    /// The listed VLANs tagged; `native` (one of them or not) untagged.
    Trunk { vlans: VlanSet, native: Option<u16> },
}

impl Default for VlanMode {
    fn default() -> Self {
        VlanMode::Access(1)
    }
}

/// What a port's VLAN configuration says about a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// The VLAN the frame belongs to.
    pub vid: u16,
    /// Priority (PCP) and DEI bits of the received tag, 0 if untagged:
    /// carried to a tagged egress (802.1Q 6.9.3).
    pub pcp_dei: u8,
    /// The frame carries an 802.1Q tag in its bytes (at offset 12).
    pub tagged: bool,
}

/// Reads the 802.1Q tag, if any: (TCI, inner ethertype).
#[inline]
fn tag_of(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() >= 18 && u16::from_be_bytes([frame[12], frame[13]]) == TPID_8021Q {
        Some((
            u16::from_be_bytes([frame[14], frame[15]]),
            u16::from_be_bytes([frame[16], frame[17]]),
        ))
    } else {
        None
    }
}

impl VlanMode {
    /// Ingress rules (8.6.1, 8.6.2): untagged and priority-tagged frames get
    /// the access or native VLAN; a tagged frame must name a VLAN the port
    /// carries; an access port takes no VLAN-tagged frames.
    #[inline]
    pub fn classify(&self, frame: &[u8]) -> Result<Classified, DropReason> {
        if frame.len() < 14 {
            return Err(DropReason::Malformed);
        }
        let is_tpid = u16::from_be_bytes([frame[12], frame[13]]) == TPID_8021Q;
        let tag = tag_of(frame);
        if is_tpid && tag.is_none() {
            return Err(DropReason::Malformed);
        }
        let (tagged, vid, pcp_dei, inner) = match tag {
            Some((tci, inner)) => (true, tci & 0x0fff, (tci >> 12) as u8, inner),
            None => (false, 0, 0, 0),
        };
        if vid == 0xfff {
            return Err(DropReason::VlanFiltered);
        }
        let untagged_vid = match self {
            VlanMode::Access(a) => Some(*a),
            VlanMode::Trunk { native, .. } => *native,
        };
        let vid = if vid == 0 {
            // Untagged or priority-tagged.
            untagged_vid.ok_or(DropReason::VlanFiltered)?
        } else {
            match self {
                VlanMode::Access(_) => return Err(DropReason::VlanFiltered),
                VlanMode::Trunk { vlans, native } => {
                    if !(vlans.contains(vid) || *native == Some(vid)) {
                        return Err(DropReason::VlanFiltered);
                    }
                    // A frame tagged with the native VLAN whose payload is
                    // itself tagged is the double-tagging VLAN-hopping attack:
                    // once the outer tag is popped the inner one would be read
                    // as a VLAN by the next hop.
                    if *native == Some(vid) && (inner == TPID_8021Q || inner == TPID_8021AD) {
                        return Err(DropReason::DoubleTagged);
                    }
                    vid
                }
            }
        };
        Ok(Classified {
            vid,
            pcp_dei,
            tagged,
        })
    }

    /// Egress rules (8.6.4): `None` if the port does not carry `vid`, else
    /// whether the frame leaves tagged.
    #[inline]
    pub fn egress_tagged(&self, vid: u16) -> Option<bool> {
        match self {
            VlanMode::Access(a) => (*a == vid).then_some(false),
            VlanMode::Trunk { vlans, native } => {
                if *native == Some(vid) {
                    Some(false)
                } else if vlans.contains(vid) {
                    Some(true)
                } else {
                    None
                }
            }
        }
    }

    /// The VLAN untagged frames belong to (access VLAN or native), if any.
    pub fn untagged_vid(&self) -> Option<u16> {
        match self {
            VlanMode::Access(a) => Some(*a),
            VlanMode::Trunk { native, .. } => *native,
        }
    }
}

pub use crate::packet::TagEdit;

/// The edit for a frame classified as `c` leaving a port that sends it
/// tagged or not. `None` when sending it would expose an inner tag on an
/// untagged egress (the frame is dropped as `double_tagged`).
#[inline]
pub fn edit_for(c: &Classified, frame: &[u8], egress_tagged: bool) -> Option<TagEdit> {
    let tci = (u16::from(c.pcp_dei) << 12) | c.vid;
    match (c.tagged, egress_tagged) {
        (false, false) => Some(TagEdit::None),
        (false, true) => Some(TagEdit::Push(tci)),
        (true, false) => {
            let inner = frame
                .get(16..18)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .unwrap_or(0);
            if inner == TPID_8021Q || inner == TPID_8021AD {
                None
            } else {
                Some(TagEdit::Pop)
            }
        }
        (true, true) => {
            let old = frame
                .get(14..16)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .unwrap_or(0);
            if old & 0x0fff == c.vid {
                Some(TagEdit::None)
            } else {
                Some(TagEdit::Retag(tci))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn untagged() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        f.resize(60, 0);
        f
    }

    fn tagged(tci: u16, inner: u16) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&TPID_8021Q.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
        f.extend_from_slice(&inner.to_be_bytes());
        f.resize(64, 0);
        f
    }

    fn trunk(v: &str, native: Option<u16>) -> VlanMode {
        VlanMode::Trunk {
            vlans: VlanSet::parse(v).unwrap(),
            native,
        }
    }

    #[test]
    fn set_parse_and_print() {
        let s = VlanSet::parse("10,20,100-110").unwrap();
        assert!(s.contains(10) && s.contains(105) && !s.contains(11));
        assert_eq!(s.to_ranges(), "10,20,100-110");
        assert!(VlanSet::parse("0").is_err());
        assert!(VlanSet::parse("4095").is_err());
        assert!(VlanSet::parse("5-3").is_err());
        assert!(VlanSet::parse("1,,2").is_err());
        assert!(VlanSet::parse("x").is_err());
        assert_eq!(VlanSet::parse("1-4094").unwrap().iter().count(), 4094);
    }

    #[test]
    fn access_ingress() {
        let m = VlanMode::Access(10);
        let c = m.classify(&untagged()).unwrap();
        assert_eq!((c.vid, c.tagged), (10, false));
        // Priority-tagged (VID 0) joins the access VLAN, keeps its priority.
        let c = m.classify(&tagged(0xa000, 0x0800)).unwrap();
        assert_eq!((c.vid, c.tagged, c.pcp_dei), (10, true, 0xa));
        // Any VLAN-tagged frame is dropped on an access port, its own VLAN too.
        assert_eq!(
            m.classify(&tagged(20, 0x0800)),
            Err(DropReason::VlanFiltered)
        );
        assert_eq!(
            m.classify(&tagged(10, 0x0800)),
            Err(DropReason::VlanFiltered)
        );
        assert_eq!(m.classify(&[0u8; 10]), Err(DropReason::Malformed));
        let mut short = tagged(10, 0x0800);
        short.truncate(16);
        assert_eq!(m.classify(&short), Err(DropReason::Malformed));
    }

    #[test]
    fn trunk_ingress() {
        let m = trunk("10,20", Some(1));
        assert_eq!(m.classify(&untagged()).unwrap().vid, 1);
        let c = m.classify(&tagged(0x6014, 0x0800)).unwrap();
        assert_eq!((c.vid, c.pcp_dei, c.tagged), (20, 6, true));
        assert_eq!(
            m.classify(&tagged(30, 0x0800)),
            Err(DropReason::VlanFiltered)
        );
        assert_eq!(
            m.classify(&tagged(0xfff, 0x0800)),
            Err(DropReason::VlanFiltered)
        );
        // No native VLAN: untagged frames are dropped.
        let m = trunk("10", None);
        assert_eq!(m.classify(&untagged()), Err(DropReason::VlanFiltered));
        assert_eq!(
            m.classify(&tagged(0, 0x0800)),
            Err(DropReason::VlanFiltered)
        );
    }

    #[test]
    fn double_tag_native_is_dropped() {
        let m = trunk("10,20", Some(1));
        // Outer tag = native VLAN 1, inner tag VLAN 20.
        let mut f = tagged(1, TPID_8021Q);
        f[18..20].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(m.classify(&f), Err(DropReason::DoubleTagged));
        // A double-tagged frame in a tagged (non-native) VLAN is just payload
        // of VLAN 10, but may never leave untagged.
        let f = tagged(10, TPID_8021Q);
        let c = m.classify(&f).unwrap();
        assert_eq!(c.vid, 10);
        assert_eq!(edit_for(&c, &f, false), None);
        assert_eq!(edit_for(&c, &f, true), Some(TagEdit::None));
    }

    #[test]
    fn egress_rules() {
        let a = VlanMode::Access(10);
        assert_eq!(a.egress_tagged(10), Some(false));
        assert_eq!(a.egress_tagged(20), None);
        let t = trunk("10,20", Some(1));
        assert_eq!(t.egress_tagged(1), Some(false));
        assert_eq!(t.egress_tagged(20), Some(true));
        assert_eq!(t.egress_tagged(30), None);
    }

    #[test]
    fn edits() {
        let t = trunk("10,20", Some(1));
        let a = VlanMode::Access(20);
        // Untagged from access VLAN 20 to the trunk: push 20 with PCP 0.
        let f = untagged();
        let c = a.classify(&f).unwrap();
        assert_eq!(
            edit_for(&c, &f, t.egress_tagged(c.vid).unwrap()),
            Some(TagEdit::Push(20))
        );
        // Tagged 20 (PCP 5) from the trunk to access: pop.
        let f = tagged(0xa014, 0x0800);
        let c = t.classify(&f).unwrap();
        assert_eq!(edit_for(&c, &f, false), Some(TagEdit::Pop));
        // Tagged to tagged: PCP preserved, frame untouched.
        assert_eq!(edit_for(&c, &f, true), Some(TagEdit::None));
        // Priority-tagged arriving on access 20 leaving tagged: retag keeps PCP.
        let f = tagged(0xa000, 0x0800);
        let c = a.classify(&f).unwrap();
        assert_eq!(edit_for(&c, &f, true), Some(TagEdit::Retag(0xa014)));
        assert_eq!(edit_for(&c, &f, false), Some(TagEdit::Pop));
    }
}
