//! The frame buffer.
//!
//! Every frame lives in a fixed buffer with headroom in front of it, so a VLAN
//! tag push or a VXLAN encapsulation grows the frame forward without moving the
//! payload or reallocating. The 10-byte `virtio_net_hdr` that TAP (IFF_VNET_HDR)
//! and AF_PACKET (PACKET_VNET_HDR) ports exchange with the kernel sits directly
//! in front of the Ethernet header, so a frame read from one port is written to
//! another with the same single buffer and no copy: offload metadata (GSO size
//! and type, partial checksum) travels with the frame.
//!
//! ```text
//! buf: [ ... headroom ... | virtio_net_hdr (10) | ethernet frame (len) | tail ]
//!                          ^ start - VNET_HDR_LEN ^ start
//! ```

/// Bytes in front of the virtio header, for encapsulations.
pub const HEADROOM: usize = 128;
/// Size of `struct virtio_net_hdr` (without `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;
/// Largest Ethernet frame we accept: a 64 KiB GSO super-frame plus link headers.
pub const MAX_FRAME: usize = 65535 + 14 + 8;
/// Allocation size of one frame buffer.
pub const BUF_SIZE: usize = HEADROOM + VNET_HDR_LEN + MAX_FRAME;

/// Longest prefix [`Frame::edited_prefix`] builds: virtio header, MACs, tag.
pub const EDIT_PREFIX_MAX: usize = VNET_HDR_LEN + 12 + 4;

use crate::wire::eth::TPID_8021Q;

/// The change a frame needs on its way out of one port. Applied at send time
/// by scatter-gather, so one received buffer serves every egress port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TagEdit {
    /// Leave the frame as it is.
    #[default]
    None,
    /// Insert a tag with this TCI after the MAC addresses.
    Push(u16),
    /// Remove the tag.
    Pop,
    /// Replace the tag's TCI (priority-tagged frame leaving tagged).
    Retag(u16),
}

/// `virtio_net_hdr` as the kernel's `include/uapi/linux/virtio_net.h` defines
/// it (little-endian on every host we run on with a modern kernel).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub const F_NEEDS_CSUM: u8 = 1;
    pub const F_DATA_VALID: u8 = 2;
    pub const GSO_NONE: u8 = 0;
    pub const GSO_TCPV4: u8 = 1;
    pub const GSO_UDP: u8 = 3;
    pub const GSO_TCPV6: u8 = 4;
    pub const GSO_UDP_L4: u8 = 5;
    pub const GSO_ECN: u8 = 0x80;

    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_le_bytes([b[2], b[3]]),
            gso_size: u16::from_le_bytes([b[4], b[5]]),
            csum_start: u16::from_le_bytes([b[6], b[7]]),
            csum_offset: u16::from_le_bytes([b[8], b[9]]),
        }
    }

    pub fn emit(&self, b: &mut [u8; VNET_HDR_LEN]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }

    /// Moves the header offsets by `delta` bytes (a tag pushed or popped in
    /// front of them).
    pub fn shift(&mut self, delta: i32) {
        if self.flags & Self::F_NEEDS_CSUM != 0 {
            self.csum_start = (i32::from(self.csum_start) + delta).clamp(0, 0xffff) as u16;
        }
        if self.is_gso() {
            self.hdr_len = (i32::from(self.hdr_len) + delta).clamp(0, 0xffff) as u16;
        }
    }

    /// A GSO super-frame (longer than one segment on the wire).
    pub fn is_gso(&self) -> bool {
        self.gso_type & !Self::GSO_ECN != Self::GSO_NONE
    }
}

/// One frame and its buffer. Buffers are allocated once (per batch slot) and
/// reused for every frame that slot ever holds.
pub struct Frame {
    buf: Box<[u8]>,
    /// Offset of the first byte of the Ethernet header.
    start: usize,
    /// Length of the Ethernet frame.
    len: usize,
    /// Which remote a tunnel port received the frame from (an index into the
    /// port's remote table, 0 for none); the bridge learns it with the source.
    pub peer: u16,
    /// Set by a port that could not deliver this slot (the frame is counted
    /// with this reason and not forwarded).
    pub rx_drop: Option<crate::stats::DropReason>,
    /// Set by a port that receives for others (a VXLAN underlay shared by
    /// several VNIs): the port the frame enters the switch by.
    pub ingress: Option<crate::bridge::PortId>,
}

impl Default for Frame {
    fn default() -> Self {
        Self::new()
    }
}

impl Frame {
    pub fn new() -> Frame {
        Frame {
            buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
            start: HEADROOM + VNET_HDR_LEN,
            len: 0,
            peer: 0,
            rx_drop: None,
            ingress: None,
        }
    }

    /// A frame holding a copy of `eth` with an empty virtio header (tests,
    /// frames the switch originates).
    pub fn from_bytes(eth: &[u8]) -> Frame {
        let mut f = Frame::new();
        f.set_from_bytes(eth);
        f
    }

    /// Replaces the content with a copy of `eth` (truncated to [`MAX_FRAME`])
    /// and an empty virtio header.
    pub fn set_from_bytes(&mut self, eth: &[u8]) {
        self.reset();
        let n = eth.len().min(MAX_FRAME);
        self.buf[self.start..self.start + n].copy_from_slice(&eth[..n]);
        self.len = n;
        self.set_vnet(&VnetHdr::default());
    }

    /// Resets the layout for a fresh receive.
    #[inline]
    pub fn reset(&mut self) {
        self.start = HEADROOM + VNET_HDR_LEN;
        self.len = 0;
        self.peer = 0;
        self.rx_drop = None;
    }

    /// The area a tunnel port receives into: an encapsulation header of
    /// `hdr` bytes (at most [`HEADROOM`]) that ends where the Ethernet frame
    /// starts, so the inner frame needs no move.
    #[inline]
    pub fn rx_area_encap(&mut self, hdr: usize) -> &mut [u8] {
        self.reset();
        let h = hdr.min(HEADROOM);
        &mut self.buf[self.start - h..]
    }

    /// The encapsulation header received by [`Frame::rx_area_encap`], to be
    /// checked before [`Frame::set_rx_len_encap`] (which overwrites it).
    #[inline]
    pub fn encap_header(&self, hdr: usize) -> &[u8] {
        let h = hdr.min(HEADROOM);
        &self.buf[self.start - h..self.start]
    }

    /// Sets the length after a receive of `n` bytes (header included) into
    /// [`Frame::rx_area_encap`]; the frame gets an empty virtio header (it
    /// came off the wire whole, checksums done). False if `n` did not even
    /// hold the header.
    #[inline]
    pub fn set_rx_len_encap(&mut self, n: usize, hdr: usize) -> bool {
        let h = hdr.min(HEADROOM);
        if n < h {
            self.len = 0;
            return false;
        }
        self.len = (n - h).min(self.buf.len() - self.start);
        self.set_vnet(&VnetHdr::default());
        true
    }

    /// The area a port receives into: virtio header followed by the frame.
    #[inline]
    pub fn rx_area_vnet(&mut self) -> &mut [u8] {
        self.reset();
        &mut self.buf[HEADROOM..]
    }

    /// Sets the length after a receive of `n` bytes into [`Frame::rx_area_vnet`].
    /// Returns false if `n` did not even hold the virtio header.
    #[inline]
    pub fn set_rx_len_vnet(&mut self, n: usize) -> bool {
        if n < VNET_HDR_LEN {
            self.len = 0;
            return false;
        }
        self.len = (n - VNET_HDR_LEN).min(self.buf.len() - self.start);
        true
    }

    /// The Ethernet frame.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The virtio header and the frame, as written to a vnet-header port.
    #[inline]
    pub fn with_vnet(&self) -> &[u8] {
        &self.buf[self.start - VNET_HDR_LEN..self.start + self.len]
    }

    fn vnet_bytes(&self) -> &[u8; VNET_HDR_LEN] {
        let s = self.start - VNET_HDR_LEN;
        self.buf[s..self.start]
            .try_into()
            .expect("slice is VNET_HDR_LEN long")
    }

    #[inline]
    pub fn vnet(&self) -> VnetHdr {
        VnetHdr::parse(self.vnet_bytes())
    }

    pub fn set_vnet(&mut self, h: &VnetHdr) {
        let s = self.start - VNET_HDR_LEN;
        let b: &mut [u8; VNET_HDR_LEN] = (&mut self.buf[s..self.start])
            .try_into()
            .expect("slice is VNET_HDR_LEN long");
        h.emit(b);
    }

    /// Inserts an 802.1Q tag after the MAC addresses, growing the frame into
    /// its headroom (no payload move): used where a port delivers the tag out
    /// of band (AF_PACKET auxdata). The virtio header's offsets follow.
    pub fn insert_tag(&mut self, tpid: u16, tci: u16) -> bool {
        if self.len < 12 || self.headroom() < 4 {
            return false;
        }
        let s = self.start;
        self.buf
            .copy_within(s - VNET_HDR_LEN..s + 12, s - VNET_HDR_LEN - 4);
        self.start -= 4;
        self.len += 4;
        let t = self.start + 12;
        self.buf[t..t + 2].copy_from_slice(&tpid.to_be_bytes());
        self.buf[t + 2..t + 4].copy_from_slice(&tci.to_be_bytes());
        let mut h = self.vnet();
        h.shift(4);
        self.set_vnet(&h);
        true
    }

    /// Removes an 802.1Q tag that follows the MAC addresses, shrinking the
    /// frame from the front (the MACs and virtio header move 4 bytes; the
    /// payload stays). The virtio header's offsets follow. False (and
    /// unchanged) if the frame carries no tag.
    pub fn strip_tag(&mut self) -> bool {
        if self.len < 18 || self.data()[12..14] != TPID_8021Q.to_be_bytes() {
            return false;
        }
        let s = self.start;
        self.buf
            .copy_within(s - VNET_HDR_LEN..s + 12, s - VNET_HDR_LEN + 4);
        self.start += 4;
        self.len -= 4;
        let mut h = self.vnet();
        h.shift(-4);
        self.set_vnet(&h);
        true
    }

    /// Shortens the frame to `len` bytes (Ethernet padding after an IP
    /// packet); a longer `len` changes nothing.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Builds, in `scratch`, the start of this frame as it leaves with `edit`
    /// applied: virtio header (offsets adjusted), MAC addresses and the new
    /// tag if any. Returns the prefix length and the offset in [`Frame::data`]
    /// where the unchanged rest begins, so a port sends the two pieces with
    /// scatter-gather and the shared buffer stays untouched.
    pub fn edited_prefix(
        &self,
        edit: TagEdit,
        scratch: &mut [u8; EDIT_PREFIX_MAX],
    ) -> (usize, usize) {
        let d = self.data();
        let mut h = self.vnet();
        let (tag, rest, shift): (Option<u16>, usize, i32) = match edit {
            TagEdit::None => (None, 0, 0),
            TagEdit::Push(tci) => (Some(tci), 12, 4),
            TagEdit::Pop => (None, 16, -4),
            TagEdit::Retag(tci) => (Some(tci), 16, 0),
        };
        if edit == TagEdit::None || d.len() < rest {
            // Nothing to do (or nothing to pop): send the frame as it is.
            scratch[..VNET_HDR_LEN].copy_from_slice(&self.with_vnet()[..VNET_HDR_LEN]);
            return (VNET_HDR_LEN, 0);
        }
        h.shift(shift);
        let (hb, tail) = scratch.split_at_mut(VNET_HDR_LEN);
        h.emit(hb.try_into().expect("VNET_HDR_LEN bytes"));
        tail[..12].copy_from_slice(&d[..12]);
        let mut n = VNET_HDR_LEN + 12;
        if let Some(tci) = tag {
            scratch[n..n + 2].copy_from_slice(&TPID_8021Q.to_be_bytes());
            scratch[n + 2..n + 4].copy_from_slice(&tci.to_be_bytes());
            n += 4;
        }
        (n, rest)
    }

    /// Headroom left in front of the virtio header.
    pub fn headroom(&self) -> usize {
        self.start - VNET_HDR_LEN
    }
}

/// A batch of frame slots, allocated once and reused on every wakeup.
pub struct Batch {
    pub frames: Vec<Frame>,
}

impl Batch {
    pub fn new(size: usize) -> Batch {
        Batch {
            frames: (0..size).map(|_| Frame::new()).collect(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.frames.len()
    }
}

/// Ethernet header fields the bridge needs, read from a checked slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthHdr {
    pub dst: crate::MacAddr,
    pub src: crate::MacAddr,
    pub ethertype: u16,
}

impl EthHdr {
    pub const LEN: usize = 14;

    /// Parses the Ethernet header; `None` if the frame is shorter than one.
    #[inline]
    pub fn parse(b: &[u8]) -> Option<EthHdr> {
        if b.len() < Self::LEN {
            return None;
        }
        Some(EthHdr {
            dst: crate::MacAddr(b[0..6].try_into().ok()?),
            src: crate::MacAddr(b[6..12].try_into().ok()?),
            ethertype: u16::from_be_bytes([b[12], b[13]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnet_roundtrip() {
        let h = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut f = Frame::from_bytes(&[0u8; 60]);
        f.set_vnet(&h);
        assert_eq!(f.vnet(), h);
        assert!(h.is_gso());
        assert_eq!(f.with_vnet().len(), 70);
        assert_eq!(&f.with_vnet()[..2], &[1, 1]);
    }

    #[test]
    fn rx_layout() {
        let mut f = Frame::new();
        let area = f.rx_area_vnet();
        area[..VNET_HDR_LEN].copy_from_slice(&[0; 10]);
        area[VNET_HDR_LEN..VNET_HDR_LEN + 6].copy_from_slice(&[0xff; 6]);
        assert!(f.set_rx_len_vnet(VNET_HDR_LEN + 60));
        assert_eq!(f.len(), 60);
        assert_eq!(&f.data()[..6], &[0xff; 6]);
        assert!(!f.set_rx_len_vnet(3));
        assert!(f.is_empty());
    }

    fn assemble(f: &Frame, e: TagEdit) -> (VnetHdr, Vec<u8>) {
        let mut scratch = [0u8; EDIT_PREFIX_MAX];
        let (n, rest) = f.edited_prefix(e, &mut scratch);
        let h = VnetHdr::parse(scratch[..VNET_HDR_LEN].try_into().unwrap());
        let mut out = scratch[VNET_HDR_LEN..n].to_vec();
        out.extend_from_slice(&f.data()[rest..]);
        (h, out)
    }

    #[test]
    fn tag_edits_by_scatter_gather() {
        let mut eth = vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x00];
        eth.extend_from_slice(&[0xaa; 50]);
        let mut f = Frame::from_bytes(&eth);
        f.set_vnet(&VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        });
        let (h, pushed) = assemble(&f, TagEdit::Push(0x6014));
        assert_eq!(&pushed[12..18], &[0x81, 0x00, 0x60, 0x14, 0x08, 0x00]);
        assert_eq!(pushed.len(), eth.len() + 4);
        assert_eq!((h.csum_start, h.hdr_len), (38, 58));
        assert_eq!(f.data(), &eth[..], "the shared buffer is untouched");

        let tagged = Frame::from_bytes(&pushed);
        let (_, popped) = assemble(&tagged, TagEdit::Pop);
        assert_eq!(popped, eth);
        let (_, retagged) = assemble(&tagged, TagEdit::Retag(0x0020));
        assert_eq!(&retagged[12..16], &[0x81, 0x00, 0x00, 0x20]);
        assert_eq!(retagged.len(), pushed.len());
        let (_, same) = assemble(&f, TagEdit::None);
        assert_eq!(same, eth);
    }

    #[test]
    fn insert_tag_in_headroom() {
        let mut eth = vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x00];
        eth.extend_from_slice(&[0xbb; 46]);
        let mut f = Frame::from_bytes(&eth);
        f.set_vnet(&VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..Default::default()
        });
        assert!(f.insert_tag(0x8100, 10));
        assert_eq!(f.len(), 64);
        assert_eq!(&f.data()[..12], &eth[..12]);
        assert_eq!(&f.data()[12..18], &[0x81, 0x00, 0x00, 0x0a, 0x08, 0x00]);
        assert_eq!(f.vnet().csum_start, 38);
    }

    #[test]
    fn strip_tag_in_place() {
        let mut eth = vec![
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x81, 0x00, 0x00, 0x0a, 0x08, 0x00,
        ];
        eth.extend_from_slice(&[0xcc; 46]);
        let mut f = Frame::from_bytes(&eth);
        f.set_vnet(&VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            csum_start: 38,
            csum_offset: 6,
            ..Default::default()
        });
        assert!(f.strip_tag());
        assert_eq!(f.len(), 60);
        assert_eq!(&f.data()[..12], &eth[..12]);
        assert_eq!(&f.data()[12..14], &[0x08, 0x00]);
        assert_eq!(&f.data()[14..], &eth[18..]);
        assert_eq!(f.vnet().csum_start, 34);
        assert!(!f.strip_tag(), "untagged now");
        f.truncate(20);
        assert_eq!(f.len(), 20);
        f.truncate(100);
        assert_eq!(f.len(), 20);
    }

    #[test]
    fn eth_parse() {
        assert!(EthHdr::parse(&[0u8; 13]).is_none());
        let mut b = [0u8; 14];
        b[0] = 0xff;
        b[12] = 0x08;
        let e = EthHdr::parse(&b).unwrap();
        assert_eq!(e.ethertype, 0x0800);
        assert!(e.dst.is_multicast());
    }
}
