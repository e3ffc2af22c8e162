//! Software offloads: segmentation (GSO) and checksum completion.
//!
//! Frames cross the switch with their `virtio_net_hdr` ([`VnetHdr`]), so a
//! 64 KiB TCP super-frame from a TAP stays one frame and its checksum stays
//! partial (architecture principle 3). An egress that cannot take that — a
//! plain UDP socket (the VXLAN port), a router that rewrites headers, a device
//! opened without offloads — asks [`needs_software`] and then either
//! [`complete_csum`] (a partial checksum only, done in place) or [`segment`]
//! (anything, written as ordinary wire frames into a reusable [`Segments`]).
//!
//! Segmentation follows the kernel's `tcp_gso_segment` / `__udp_gso_segment` /
//! `inet_gso_segment` / `ipv6_gso_segment`:
//!
//! * the real header length is derived from the IP and TCP/UDP headers and
//!   copied in front of every `gso_size`-byte payload chunk (the last chunk
//!   may be shorter). `hdr_len` is only a hint — Linux reports `skb_headlen`,
//!   which may include payload — so one past the end of the frame is rejected
//!   and any other value is accepted; with NEEDS_CSUM, `csum_start` and
//!   `csum_offset` must name the derived TCP/UDP checksum field;
//! * IPv4: total length per segment, identification incremented per segment
//!   (as for a non-`FIXEDID` skb), header checksum recomputed; options copied
//!   to every segment; IPv6: payload length per segment (no extension headers);
//! * TCP: sequence number advanced by the payload before the segment, FIN and
//!   PSH only on the last segment, CWR only on the first (RFC 3168 §6.1.2: one
//!   CWR per window reduction), URG and the urgent pointer copied unchanged
//!   (as the kernel does; its TCP never builds a super-frame with urgent data);
//! * UDP (`GSO_UDP_L4`, USO): every segment its own datagram with its own
//!   length;
//! * every TCP/UDP checksum is computed from scratch over pseudo-header,
//!   header and payload (RFC 793 §3.1, RFC 768, RFC 8200 §8.1), so whatever a
//!   sender left in the checksum field of a super-frame does not matter.
//!
//! Legacy `GSO_UDP` (UFO, IP fragmentation) is rejected as unsupported.
//!
//! Every input — any bytes, any header — gives `Ok` or an [`OffloadError`]
//! naming the reason, never a panic; work is linear in the frame length and
//! [`Segments`] never allocates after it is created.

use crate::packet::{VnetHdr, MAX_FRAME};
pub(crate) use crate::wire::checksum::Csum;
use crate::wire::eth::{TPID_8021AD, TPID_8021Q};

/// Why a frame could not be made ready for a device without offloads. One
/// variant per reason, so the caller counts drops by [`OffloadError::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum OffloadError {
    /// frame shorter than its Ethernet header and VLAN tags
    #[error("frame shorter than its Ethernet header and VLAN tags")]
    TruncatedL2,
    /// not an IPv4 or IPv6 frame (or more than two VLAN tags)
    #[error("GSO frame is not IPv4 or IPv6 (or has more than two VLAN tags)")]
    NotIp,
    /// IP header truncated, wrong version or IPv4 IHL below 5
    #[error("IP header truncated, of the wrong version, or with an IPv4 IHL below 5")]
    BadIpHeader,
    /// IP total/payload length larger than the frame, smaller than the IP header, or an IPv6 jumbogram
    #[error("IP length field disagrees with the frame (longer than the frame, shorter than the header, or an IPv6 jumbogram)")]
    BadIpLength,
    /// the IPv4 packet is a fragment
    #[error("GSO frame is an IPv4 fragment")]
    IpFragment,
    /// IPv6 extension headers in a GSO frame (not handled)
    #[error(
        "GSO frame carries IPv6 extension headers, which software segmentation does not handle"
    )]
    Ipv6ExtHeader,
    /// gso_type does not match the frame: TCPV4 on IPv6, TCPV6 on IPv4, or an IP protocol other than TCP/UDP
    #[error("gso_type does not match the frame (IP version or transport protocol)")]
    GsoMismatch,
    /// TCP data offset below 5, or the TCP/UDP header runs past the IP packet
    #[error("TCP/UDP header truncated or with a TCP data offset below 5")]
    BadL4Header,
    /// hdr_len points past the end of the frame
    #[error("virtio hdr_len points past the end of the frame")]
    HdrLenPastEnd,
    /// csum_start/csum_offset point past the end of the frame
    #[error("virtio csum_start + csum_offset point past the end of the frame")]
    CsumPastEnd,
    /// csum_start/csum_offset of a GSO frame are not the TCP/UDP checksum field
    #[error("virtio csum_start/csum_offset of a GSO frame do not point at the TCP/UDP checksum")]
    CsumMismatch,
    /// complete_csum was given a GSO frame (it must be segmented)
    #[error("a GSO super-frame needs segmenting, not just a checksum")]
    GsoNeedsSegmenting,
    /// gso_size is 0
    #[error("virtio gso_size is 0")]
    GsoSizeZero,
    /// more segments than MAX_SEGMENTS (a tiny gso_size)
    #[error("GSO frame would make more than MAX_SEGMENTS segments (gso_size too small)")]
    TooManySegments,
    /// legacy UDP fragmentation offload (GSO_UDP) is not supported
    #[error("legacy UDP fragmentation offload (GSO_UDP) is not supported")]
    UfoUnsupported,
    /// a gso_type virtio does not define
    #[error("unknown virtio gso_type {0:#x}")]
    UnknownGsoType(u8),
    /// the output area has no room left for these segments
    #[error("segment output area full")]
    OutputFull,
}

impl OffloadError {
    /// A short snake_case name for counters.
    pub fn name(self) -> &'static str {
        match self {
            OffloadError::TruncatedL2 => "truncated_l2",
            OffloadError::NotIp => "not_ip",
            OffloadError::BadIpHeader => "bad_ip_header",
            OffloadError::BadIpLength => "bad_ip_length",
            OffloadError::IpFragment => "ip_fragment",
            OffloadError::Ipv6ExtHeader => "ipv6_ext_header",
            OffloadError::GsoMismatch => "gso_mismatch",
            OffloadError::BadL4Header => "bad_l4_header",
            OffloadError::HdrLenPastEnd => "hdr_len_past_end",
            OffloadError::CsumPastEnd => "csum_past_end",
            OffloadError::CsumMismatch => "csum_mismatch",
            OffloadError::GsoNeedsSegmenting => "gso_needs_segmenting",
            OffloadError::GsoSizeZero => "gso_size_zero",
            OffloadError::TooManySegments => "too_many_segments",
            OffloadError::UfoUnsupported => "ufo_unsupported",
            OffloadError::UnknownGsoType(_) => "unknown_gso_type",
            OffloadError::OutputFull => "output_full",
        }
    }
}

/// Most segments one super-frame may make. 64 KiB of TCP at Linux's smallest
/// MSS (88, `TCP_MIN_MSS`) is 745 segments; USO is capped at far fewer by the
/// kernel (`UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 1024;

/// Longest header copied in front of each segment: Ethernet, two VLAN tags,
/// IPv4 with 40 bytes of options (an IPv6 header without extensions is
/// shorter), TCP with 40 bytes of options.
pub const MAX_HDR: usize = 14 + 2 * 4 + 60 + 60;

/// Bytes a [`Segments`] holds: the largest frame cut at [`MAX_SEGMENTS`]
/// points, each segment with its own copy of the headers.
pub const SEGMENTS_CAPACITY: usize = MAX_FRAME + MAX_SEGMENTS * MAX_HDR;

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_CSUM_OFFSET: usize = 16;
const UDP_CSUM_OFFSET: usize = 6;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// What an egress must do to a frame before a device without offloads can
/// take it: segment it (GSO) or complete its checksum (NEEDS_CSUM).
#[inline]
pub fn needs_software(h: &VnetHdr) -> bool {
    h.is_gso() || h.flags & VnetHdr::F_NEEDS_CSUM != 0
}

/// Completes a partial checksum in place, as the kernel's
/// `skb_checksum_help` does: the ones'-complement sum of the bytes from
/// `csum_start` to the end of `frame` (the checksum field holds the
/// pseudo-header sum the sender put there), folded, complemented and stored at
/// `csum_start + csum_offset`; a result of 0 is stored as 0xffff (UDP's "no
/// checksum" value must never appear). Without NEEDS_CSUM this does nothing.
///
/// `frame` must end where the IP packet ends (no Ethernet padding), which is
/// how every sender of partial checksums hands frames over. A GSO frame is an
/// error: it needs [`segment`].
pub fn complete_csum(h: &VnetHdr, frame: &mut [u8]) -> Result<(), OffloadError> {
    if h.is_gso() {
        return Err(OffloadError::GsoNeedsSegmenting);
    }
    if h.flags & VnetHdr::F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = usize::from(h.csum_start);
    let field = start + usize::from(h.csum_offset);
    if field + 2 > frame.len() {
        return Err(OffloadError::CsumPastEnd);
    }
    let c = Csum::default().add(&frame[start..]).finish_nonzero();
    frame[field..field + 2].copy_from_slice(&c);
    Ok(())
}

/// Detects a TCP/UDP checksum the sender left partial in a frame that came
/// without a virtio header (a VXLAN payload).
///
/// A Linux sender hands a frame to its vxlan device with CHECKSUM_PARTIAL;
/// where the underlay is a veth, the checksum is never completed, and the
/// UDP socket delivers the inner frame with only the pseudo-header sum in its
/// checksum field. Such a frame gets the virtio header saying so (NEEDS_CSUM
/// at the L4 header), as an AF_PACKET socket would give it, so a TAP host
/// accepts it and an egress without offloads completes it. A frame whose
/// field holds a complete checksum is left alone; should a complete checksum
/// equal the pseudo-header sum by chance, completing it yields the same value.
pub fn partial_csum(frame: &[u8]) -> Option<VnetHdr> {
    let mut l3 = 14;
    let mut ethertype = be16_checked(frame, 12)?;
    if ethertype == TPID_8021Q {
        ethertype = be16_checked(frame, 16)?;
        l3 = 18;
    }
    let ip = frame.get(l3..)?;
    let (proto, l4, pseudo) = match ethertype {
        0x0800 => {
            let ihl = usize::from(*ip.first()? & 0x0f) * 4;
            let total = usize::from(be16_checked(ip, 2)?);
            // Fragments carry no (whole) L4 header to complete.
            let frag = be16_checked(ip, 6)? & 0x3fff;
            if ip[0] >> 4 != 4 || ihl < 20 || total < ihl || total > ip.len() || frag != 0 {
                return None;
            }
            let proto = ip[9];
            let sum = Csum::default()
                .add(&ip[12..20])
                .add_u16(u16::from(proto))
                .add_u16((total - ihl) as u16);
            (proto, ihl, sum)
        }
        0x86dd => {
            if ip.len() < 40 || ip[0] >> 4 != 6 {
                return None;
            }
            let plen = usize::from(be16_checked(ip, 4)?);
            if 40 + plen > ip.len() {
                return None;
            }
            // Extension headers: not handled (left as they are).
            let proto = ip[6];
            let sum = Csum::default()
                .add(&ip[8..40])
                .add_u16(u16::from(proto))
                .add_u16(plen as u16);
            (proto, 40, sum)
        }
        _ => return None,
    };
    let offset = match proto {
        6 => TCP_CSUM_OFFSET,
        17 => UDP_CSUM_OFFSET,
        _ => return None,
    };
    let field = l3 + l4 + offset;
    let got: [u8; 2] = frame.get(field..field + 2)?.try_into().ok()?;
    if proto == 17 && got == [0, 0] {
        return None; // UDP over IPv4 without a checksum
    }
    if got != pseudo.folded() {
        return None;
    }
    Some(VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        csum_start: (l3 + l4) as u16,
        csum_offset: offset as u16,
        ..VnetHdr::default()
    })
}

/// The inner MTU assumed for decapsulated frames: RFC 7348 §4.3 asks that
/// VTEPs not fragment, and deployments carry 1500-byte inner frames.
pub const TUNNEL_INNER_MTU: usize = 1500;

/// Makes a decapsulated TCP super-frame a GSO frame again.
///
/// Over a veth underlay, a Linux VTEP hands its UDP-tunnel GSO skb to our
/// socket whole: one datagram carries a TCP segment of up to 64 KiB with a
/// partial checksum ([`partial_csum`] finds it), and nothing says the MSS (the
/// kernel gives a `UDP_GRO` cmsg only for plain UDP GSO). Passed on as it is,
/// a device with an MTU refuses it — an AF_PACKET egress fails with EMSGSIZE
/// — so a kernel VTEP's TCP reached AF_PACKET hosts at a few hundred kbit/s.
///
/// Given the header [`partial_csum`] made for a frame, this returns the
/// header for a GSO frame when the frame is TCP and its IP packet is longer
/// than `mtu`: `GSO_TCPV4`/`GSO_TCPV6` (with `GSO_ECN` if CWR is set),
/// `gso_size` = `mtu` minus the IP and TCP headers, `hdr_len` = all headers.
/// The sender's MSS is unknown; any size that fits the inner MTU cuts the
/// same byte stream correctly. `None` for anything else (not TCP, not
/// longer than `mtu`, headers that do not add up).
pub fn tunnel_gso(frame: &[u8], h: &VnetHdr, mtu: usize) -> Option<VnetHdr> {
    if h.flags & VnetHdr::F_NEEDS_CSUM == 0
        || h.is_gso()
        || usize::from(h.csum_offset) != TCP_CSUM_OFFSET
    {
        return None;
    }
    let l3 = if be16_checked(frame, 12)? == TPID_8021Q {
        18
    } else {
        14
    };
    let l4 = usize::from(h.csum_start);
    let ip = frame.get(l3..)?;
    let (ip_len, gso_type) = match ip.first()? >> 4 {
        4 => (usize::from(be16_checked(ip, 2)?), VnetHdr::GSO_TCPV4),
        6 => (40 + usize::from(be16_checked(ip, 4)?), VnetHdr::GSO_TCPV6),
        _ => return None,
    };
    let tcp = frame.get(l4..)?;
    let tcp_hl = usize::from(*tcp.get(12)? >> 4) * 4;
    let hdrs = l4.checked_sub(l3)? + tcp_hl;
    if tcp_hl < 20 || ip_len <= mtu || ip_len > ip.len() || hdrs >= mtu || l4 + tcp_hl > frame.len()
    {
        return None;
    }
    let cwr = tcp.get(13)? & 0x80 != 0;
    Some(VnetHdr {
        gso_type: gso_type | if cwr { VnetHdr::GSO_ECN } else { 0 },
        gso_size: u16::try_from(mtu - hdrs).ok()?,
        hdr_len: u16::try_from(l4 + tcp_hl).ok()?,
        ..*h
    })
}

/// Reusable output area: segments written back to back into one buffer
/// allocated once (room for [`SEGMENTS_CAPACITY`] bytes and
/// [`MAX_SEGMENTS`] segments, enough for any one frame), each remembered as
/// an (offset, len) span so a port can hand them to `sendmmsg` as iovecs.
/// Nothing allocates after [`Segments::new`].
pub struct Segments {
    buf: Box<[u8]>,
    used: usize,
    spans: Vec<(usize, usize)>,
}

impl Default for Segments {
    fn default() -> Self {
        Self::new()
    }
}

impl Segments {
    pub fn new() -> Segments {
        Segments {
            buf: vec![0u8; SEGMENTS_CAPACITY].into_boxed_slice(),
            used: 0,
            spans: Vec::with_capacity(MAX_SEGMENTS),
        }
    }

    /// Number of segments held.
    #[inline]
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Forgets every segment (keeps the buffer).
    #[inline]
    pub fn clear(&mut self) {
        self.used = 0;
        self.spans.clear();
    }

    /// The segments, in order, as Ethernet frames (no virtio header).
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.spans.iter().map(|&(o, l)| &self.buf[o..o + l])
    }

    /// Segment `i`.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let &(o, l) = self.spans.get(i)?;
        self.buf.get(o..o + l)
    }

    /// The (offset, len) of every segment in [`Segments::buffer`].
    pub fn spans(&self) -> &[(usize, usize)] {
        &self.spans
    }

    /// The buffer the spans index (only the used part).
    pub fn buffer(&self) -> &[u8] {
        &self.buf[..self.used]
    }

    /// Reserves `bytes` for `count` more segments: the free area, or
    /// `OutputFull` without touching anything.
    fn reserve(&mut self, count: usize, bytes: usize) -> Result<&mut [u8], OffloadError> {
        if self.spans.len() + count > MAX_SEGMENTS {
            return Err(OffloadError::OutputFull);
        }
        self.buf
            .get_mut(self.used..)
            .and_then(|free| free.get_mut(..bytes))
            .ok_or(OffloadError::OutputFull)
    }

    /// Records a segment of `len` bytes just written at the free area.
    fn commit(&mut self, len: usize) {
        self.spans.push((self.used, len));
        self.used += len;
    }
}

/// Turns a frame into ordinary wire frames appended to `out`, returning how
/// many. `frame` is the Ethernet frame (at most two VLAN tags before IP) and
/// `h` its virtio header:
///
/// * a GSO super-frame is split into segments of at most `gso_size` payload
///   bytes behind a copy of its real headers, every IPv4 header and TCP/UDP
///   checksum complete; one whose payload fits in `gso_size` comes out as one
///   segment, checksums completed;
/// * a frame that is not GSO comes out unchanged as one segment, its partial
///   checksum completed if NEEDS_CSUM is set (see [`complete_csum`]).
///
/// On error nothing is appended.
pub fn segment(h: &VnetHdr, frame: &[u8], out: &mut Segments) -> Result<usize, OffloadError> {
    if !h.is_gso() {
        let dst = out.reserve(1, frame.len())?;
        dst.copy_from_slice(frame);
        complete_csum(h, dst)?;
        out.commit(frame.len());
        return Ok(1);
    }
    let kind = match h.gso_type & !VnetHdr::GSO_ECN {
        VnetHdr::GSO_TCPV4 => Kind::Tcp { v6: false },
        VnetHdr::GSO_TCPV6 => Kind::Tcp { v6: true },
        VnetHdr::GSO_UDP_L4 => Kind::Udp,
        VnetHdr::GSO_UDP => return Err(OffloadError::UfoUnsupported),
        other => return Err(OffloadError::UnknownGsoType(other)),
    };
    if h.gso_size == 0 {
        return Err(OffloadError::GsoSizeZero);
    }
    if usize::from(h.hdr_len) > frame.len() {
        return Err(OffloadError::HdrLenPastEnd);
    }
    let l = Layout::parse(frame, kind)?;
    if h.flags & VnetHdr::F_NEEDS_CSUM != 0 {
        let want = match kind {
            Kind::Tcp { .. } => TCP_CSUM_OFFSET,
            Kind::Udp => UDP_CSUM_OFFSET,
        };
        if usize::from(h.csum_start) != l.l4 || usize::from(h.csum_offset) != want {
            return Err(OffloadError::CsumMismatch);
        }
    }

    let mss = usize::from(h.gso_size);
    let payload = l.end - l.hdr;
    let count = payload.div_ceil(mss).max(1);
    if count > MAX_SEGMENTS {
        return Err(OffloadError::TooManySegments);
    }
    let total = payload + count * l.hdr;
    let dst = out.reserve(count, total)?;

    let headers = &frame[..l.hdr];
    // Pseudo-header without its length: addresses and protocol.
    let addrs = if l.v6 {
        &frame[l.l3 + 8..l.l3 + 40]
    } else {
        &frame[l.l3 + 12..l.l3 + 20]
    };
    let pseudo = Csum::default().add(addrs).add_u16(u16::from(l.proto));
    let ip_id = be16(frame, l.l3 + 4);
    // Sequence number and flags are TCP's: a UDP header ends at l4 + 8.
    let (seq, flags) = match kind {
        Kind::Tcp { .. } => (be32(frame, l.l4 + 4), frame[l.l4 + 13]),
        Kind::Udp => (0, 0),
    };

    let mut at = 0;
    for i in 0..count {
        let from = l.hdr + i * mss;
        let len = l.hdr + mss.min(l.end - from);
        let seg = &mut dst[at..at + len];
        seg[..l.hdr].copy_from_slice(headers);
        seg[l.hdr..].copy_from_slice(&frame[from..from + len - l.hdr]);
        fix_ip(seg, &l, ip_id.wrapping_add(i as u16));
        let l4_len = (len - l.l4) as u16;
        let csum_field = match kind {
            Kind::Tcp { .. } => {
                let s = seq.wrapping_add((i * mss) as u32);
                seg[l.l4 + 4..l.l4 + 8].copy_from_slice(&s.to_be_bytes());
                let mut f = flags;
                if i > 0 {
                    f &= !TCP_CWR;
                }
                if i + 1 < count {
                    f &= !(TCP_FIN | TCP_PSH);
                }
                seg[l.l4 + 13] = f;
                l.l4 + TCP_CSUM_OFFSET
            }
            Kind::Udp => {
                put16(seg, l.l4 + 4, l4_len);
                l.l4 + UDP_CSUM_OFFSET
            }
        };
        put16(seg, csum_field, 0);
        let sum = pseudo.add_u16(l4_len).add(&seg[l.l4..]);
        let c = match kind {
            Kind::Tcp { .. } => sum.finish(),
            Kind::Udp => sum.finish_nonzero(),
        };
        seg[csum_field..csum_field + 2].copy_from_slice(&c);
        at += len;
    }
    for i in 0..count {
        out.commit(l.hdr + mss.min(l.end - (l.hdr + i * mss)));
    }
    Ok(count)
}

/// Sets the IP length field of one segment (and for IPv4 the identification
/// and header checksum).
fn fix_ip(seg: &mut [u8], l: &Layout, id: u16) {
    let ip_len = seg.len() - l.l3;
    if l.v6 {
        put16(seg, l.l3 + 4, (ip_len - 40) as u16);
    } else {
        put16(seg, l.l3 + 2, ip_len as u16);
        put16(seg, l.l3 + 4, id);
        put16(seg, l.l3 + 10, 0);
        let c = Csum::default().add(&seg[l.l3..l.l4]).finish();
        seg[l.l3 + 10..l.l3 + 12].copy_from_slice(&c);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp { v6: bool },
    Udp,
}

/// Offsets of a GSO frame's headers, validated once by [`Layout::parse`]:
/// `l3 + 20 <= l4` (IPv4) or `l3 + 40 == l4` (IPv6), `l4 + 20 <= hdr` (TCP) or
/// `l4 + 8 == hdr` (UDP), `hdr <= end <= frame.len()`, and `end - l3` fits the
/// IP length field. Indexing within these bounds cannot fail.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Start of the IP header.
    l3: usize,
    /// Start of the TCP/UDP header.
    l4: usize,
    /// End of the TCP/UDP header: start of the payload.
    hdr: usize,
    /// End of the IP packet (anything after it is Ethernet padding).
    end: usize,
    v6: bool,
    proto: u8,
}

impl Layout {
    fn parse(frame: &[u8], kind: Kind) -> Result<Layout, OffloadError> {
        // Ethernet, then at most two 802.1Q/802.1ad tags.
        let mut l3 = 14;
        let mut ethertype = be16_checked(frame, 12).ok_or(OffloadError::TruncatedL2)?;
        for _ in 0..2 {
            if ethertype != TPID_8021Q && ethertype != TPID_8021AD {
                break;
            }
            ethertype = be16_checked(frame, l3 + 2).ok_or(OffloadError::TruncatedL2)?;
            l3 += 4;
        }
        if frame.len() < l3 {
            return Err(OffloadError::TruncatedL2);
        }
        let ip = &frame[l3..];
        let (v6, l4, end, proto) = match ethertype {
            ETH_IPV4 => {
                if ip.len() < 20 || ip[0] >> 4 != 4 || ip[0] & 0x0f < 5 {
                    return Err(OffloadError::BadIpHeader);
                }
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                if ip.len() < ihl {
                    return Err(OffloadError::BadIpHeader);
                }
                let total = usize::from(be16(ip, 2));
                if total < ihl || total > ip.len() {
                    return Err(OffloadError::BadIpLength);
                }
                // More fragments, or a fragment offset.
                if be16(ip, 6) & 0x3fff != 0 {
                    return Err(OffloadError::IpFragment);
                }
                (false, l3 + ihl, l3 + total, ip[9])
            }
            ETH_IPV6 => {
                if ip.len() < 40 || ip[0] >> 4 != 6 {
                    return Err(OffloadError::BadIpHeader);
                }
                let plen = usize::from(be16(ip, 4));
                // Payload length 0 is a jumbogram (RFC 2675) or BIG TCP.
                if plen == 0 || 40 + plen > ip.len() {
                    return Err(OffloadError::BadIpLength);
                }
                let next = ip[6];
                // Hop-by-hop, routing, fragment, ESP, AH, destination
                // options, mobility, HIP, shim6 (RFC 8200 §4, IANA registry).
                if matches!(next, 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140) {
                    return Err(OffloadError::Ipv6ExtHeader);
                }
                (true, l3 + 40, l3 + 40 + plen, next)
            }
            _ => return Err(OffloadError::NotIp),
        };
        let hdr = match kind {
            Kind::Tcp { v6: want_v6 } => {
                if want_v6 != v6 || proto != PROTO_TCP {
                    return Err(OffloadError::GsoMismatch);
                }
                if end < l4 + 20 {
                    return Err(OffloadError::BadL4Header);
                }
                let doff = usize::from(frame[l4 + 12] >> 4) * 4;
                if doff < 20 || end < l4 + doff {
                    return Err(OffloadError::BadL4Header);
                }
                l4 + doff
            }
            Kind::Udp => {
                if proto != PROTO_UDP {
                    return Err(OffloadError::GsoMismatch);
                }
                if end < l4 + 8 {
                    return Err(OffloadError::BadL4Header);
                }
                l4 + 8
            }
        };
        Ok(Layout {
            l3,
            l4,
            hdr,
            end,
            v6,
            proto,
        })
    }
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn be16_checked(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::VNET_HDR_LEN;
    use etherparse::{
        IpHeaders, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, NetHeaders, PacketBuilder,
        PacketHeaders, TcpOptionElement, TransportHeader, VlanId,
    };

    const SRC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const DST: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const V4_SRC: [u8; 4] = [10, 0, 0, 1];
    const V4_DST: [u8; 4] = [10, 0, 0, 2];
    const V6_SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const V6_DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const MSS: u16 = 1448;

    /// Reference Internet checksum (RFC 1071), the plain way: big-endian
    /// words of the concatenation, summed in 32 bits, folded. Not
    /// complemented.
    fn ref_sum(parts: &[&[u8]]) -> u16 {
        let bytes: Vec<u8> = parts.concat();
        let mut s: u32 = 0;
        for w in bytes.chunks(2) {
            let hi = u32::from(w[0]) << 8;
            let lo = w.get(1).copied().map_or(0, u32::from);
            s += hi | lo;
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[derive(Clone, Copy)]
    enum Vlan {
        None,
        One,
        Two,
    }

    #[derive(Clone, Copy)]
    enum L3 {
        V4,
        V4Options,
        V6,
    }

    /// A TCP super-frame as Linux hands it over: complete headers, the TCP
    /// checksum field holding the pseudo-header sum (partial), and its
    /// virtio header.
    fn tcp_super(l3: L3, vlan: Vlan, data: &[u8], flags: &[&str], mss: u16) -> (VnetHdr, Vec<u8>) {
        let eth = PacketBuilder::ethernet2(SRC, DST);
        let ip = match l3 {
            L3::V4 | L3::V4Options => {
                let mut h = Ipv4Header::new(0, 64, IpNumber::TCP, V4_SRC, V4_DST).unwrap();
                h.identification = 0xfff0;
                h.dont_fragment = true;
                if matches!(l3, L3::V4Options) {
                    // Record route with one address slot (7 bytes), NOP padding.
                    h.options = [7, 7, 4, 0, 0, 0, 0, 1].into();
                }
                IpHeaders::Ipv4(h, Default::default())
            }
            L3::V6 => IpHeaders::Ipv6(
                Ipv6Header {
                    traffic_class: 0,
                    flow_label: Ipv6FlowLabel::try_new(0x12345).unwrap(),
                    payload_length: 0,
                    next_header: IpNumber::TCP,
                    hop_limit: 64,
                    source: V6_SRC,
                    destination: V6_DST,
                },
                Default::default(),
            ),
        };
        let b = match vlan {
            Vlan::None => eth.ip(ip),
            Vlan::One => eth.single_vlan(VlanId::try_new(10).unwrap()).ip(ip),
            Vlan::Two => eth
                .double_vlan(VlanId::try_new(100).unwrap(), VlanId::try_new(10).unwrap())
                .ip(ip),
        };
        let mut t = b
            .tcp(40000, 5201, 0xffff_f000, 512)
            .ack(77)
            .options(&[
                TcpOptionElement::Noop,
                TcpOptionElement::Noop,
                TcpOptionElement::Timestamp(1, 2),
            ])
            .unwrap();
        for f in flags {
            t = match *f {
                "fin" => t.fin(),
                "psh" => t.psh(),
                "cwr" => t.cwr(),
                "ece" => t.ece(),
                _ => unreachable!(),
            };
        }
        let mut f = Vec::new();
        t.write(&mut f, data).unwrap();
        let (l3_off, v6) = locate(&f);
        let l4 = if v6 {
            l3_off + 40
        } else {
            l3_off + usize::from(f[l3_off] & 0xf) * 4
        };
        let hdr = l4 + usize::from(f[l4 + 12] >> 4) * 4;
        make_partial(&mut f, l3_off, l4, TCP_CSUM_OFFSET, v6);
        let gso_type = if v6 {
            VnetHdr::GSO_TCPV6
        } else {
            VnetHdr::GSO_TCPV4
        } | if flags.contains(&"cwr") {
            VnetHdr::GSO_ECN
        } else {
            0
        };
        let h = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type,
            hdr_len: hdr as u16,
            gso_size: mss,
            csum_start: l4 as u16,
            csum_offset: TCP_CSUM_OFFSET as u16,
        };
        (h, f)
    }

    fn udp_super(v6: bool, vlan: bool, data: &[u8], mss: u16) -> (VnetHdr, Vec<u8>) {
        let eth = PacketBuilder::ethernet2(SRC, DST);
        let mut f = Vec::new();
        match (v6, vlan) {
            (false, false) => eth
                .ipv4(V4_SRC, V4_DST, 64)
                .udp(5000, 4789)
                .write(&mut f, data),
            (false, true) => eth
                .single_vlan(VlanId::try_new(20).unwrap())
                .ipv4(V4_SRC, V4_DST, 64)
                .udp(5000, 4789)
                .write(&mut f, data),
            (true, false) => eth
                .ipv6(V6_SRC, V6_DST, 64)
                .udp(5000, 4789)
                .write(&mut f, data),
            (true, true) => eth
                .single_vlan(VlanId::try_new(20).unwrap())
                .ipv6(V6_SRC, V6_DST, 64)
                .udp(5000, 4789)
                .write(&mut f, data),
        }
        .unwrap();
        let (l3, v6) = locate(&f);
        let l4 = if v6 { l3 + 40 } else { l3 + 20 };
        make_partial(&mut f, l3, l4, UDP_CSUM_OFFSET, v6);
        let h = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_UDP_L4,
            hdr_len: (l4 + 8) as u16,
            gso_size: mss,
            csum_start: l4 as u16,
            csum_offset: UDP_CSUM_OFFSET as u16,
        };
        (h, f)
    }

    /// Offset of the IP header and whether it is IPv6 (test frames only).
    fn locate(f: &[u8]) -> (usize, bool) {
        let mut at = 12;
        while matches!(u16::from_be_bytes([f[at], f[at + 1]]), 0x8100 | 0x88a8) {
            at += 4;
        }
        (at + 2, u16::from_be_bytes([f[at], f[at + 1]]) == 0x86dd)
    }

    /// Replaces the L4 checksum with the folded pseudo-header sum, as a
    /// sender of CHECKSUM_PARTIAL does (`~tcp_v4_check(len, saddr, daddr, 0)`).
    fn make_partial(f: &mut [u8], l3: usize, l4: usize, off: usize, v6: bool) {
        let len = (f.len() - l4) as u16;
        let proto = [0, f[if v6 { l3 + 6 } else { l3 + 9 }]];
        let addrs = if v6 {
            f[l3 + 8..l3 + 40].to_vec()
        } else {
            f[l3 + 12..l3 + 20].to_vec()
        };
        let s = ref_sum(&[&addrs, &proto, &len.to_be_bytes()]);
        f[l4 + off..l4 + off + 2].copy_from_slice(&s.to_be_bytes());
    }

    struct Seen {
        ip_payload: usize,
        l4_payload: Vec<u8>,
    }

    /// Parses one segment with etherparse and checks its IP header
    /// (lengths, checksum) and its TCP/UDP checksum against etherparse's own
    /// calculation and the reference sum.
    fn check_segment(seg: &[u8]) -> (PacketHeaders<'_>, Seen) {
        let p = PacketHeaders::from_ethernet_slice(seg).expect("segment parses");
        let l4_payload = p.payload.slice().to_vec();
        let (l4_len, pseudo): (usize, Vec<u8>) = match &p.net {
            Some(NetHeaders::Ipv4(ip, _)) => {
                assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "IPv4 csum");
                let (l3, _) = locate(seg);
                assert_eq!(usize::from(ip.total_len), seg.len() - l3, "total length");
                let l4_len = usize::from(ip.total_len) - ip.header_len();
                let mut ps = [ip.source, ip.destination].concat();
                ps.extend_from_slice(&[0, ip.protocol.0]);
                ps.extend_from_slice(&(l4_len as u16).to_be_bytes());
                (l4_len, ps)
            }
            Some(NetHeaders::Ipv6(ip, _)) => {
                let (l3, _) = locate(seg);
                assert_eq!(usize::from(ip.payload_length), seg.len() - l3 - 40);
                let l4_len = usize::from(ip.payload_length);
                let mut ps = [ip.source, ip.destination].concat();
                ps.extend_from_slice(&(l4_len as u32).to_be_bytes());
                ps.extend_from_slice(&[0, 0, 0, ip.next_header.0]);
                (l4_len, ps)
            }
            None => panic!("no IP header"),
        };
        let l4_bytes = &seg[seg.len() - l4_len..];
        assert_eq!(
            ref_sum(&[&pseudo, l4_bytes]),
            0xffff,
            "L4 checksum verifies"
        );
        match (&p.net, &p.transport) {
            (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Tcp(t))) => {
                assert_eq!(t.checksum, t.calc_checksum_ipv4(ip, &l4_payload).unwrap())
            }
            (Some(NetHeaders::Ipv6(ip, _)), Some(TransportHeader::Tcp(t))) => {
                assert_eq!(t.checksum, t.calc_checksum_ipv6(ip, &l4_payload).unwrap())
            }
            (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Udp(u))) => {
                assert_eq!(usize::from(u.length), l4_len);
                assert_eq!(u.checksum, u.calc_checksum_ipv4(ip, &l4_payload).unwrap())
            }
            (Some(NetHeaders::Ipv6(ip, _)), Some(TransportHeader::Udp(u))) => {
                assert_eq!(usize::from(u.length), l4_len);
                assert_eq!(u.checksum, u.calc_checksum_ipv6(ip, &l4_payload).unwrap())
            }
            _ => panic!("no TCP/UDP header"),
        }
        let ip_payload = l4_len;
        (
            p,
            Seen {
                ip_payload,
                l4_payload,
            },
        )
    }

    fn tcp_of<'a>(p: &'a PacketHeaders) -> &'a etherparse::TcpHeader {
        match &p.transport {
            Some(TransportHeader::Tcp(t)) => t,
            _ => panic!("not TCP"),
        }
    }

    /// Segments a TCP super-frame and checks everything the kernel's
    /// tcp_gso_segment guarantees.
    fn check_tcp(l3: L3, vlan: Vlan, len: usize, flags: &[&str]) {
        let data = payload(len);
        let (h, f) = tcp_super(l3, vlan, &data, flags, MSS);
        let orig = PacketHeaders::from_ethernet_slice(&f).unwrap();
        let ot = tcp_of(&orig).clone();
        let hdr = usize::from(h.hdr_len);
        let mut out = Segments::new();
        let n = segment(&h, &f, &mut out).unwrap();
        let want = len.div_ceil(usize::from(MSS)).max(1);
        assert_eq!((n, out.len()), (want, want));
        let mut joined = Vec::new();
        let mut seq = ot.sequence_number;
        for (i, seg) in out.iter().enumerate() {
            assert!(seg.len() <= hdr + usize::from(MSS), "segment {i} too long");
            assert_eq!(&seg[..12], &f[..12], "MACs copied");
            let (p, seen) = check_segment(seg);
            assert_eq!(p.vlan, orig.vlan, "tags copied");
            let t = tcp_of(&p);
            assert_eq!(t.sequence_number, seq, "segment {i} seq contiguous");
            seq = seq.wrapping_add(seen.l4_payload.len() as u32);
            assert_eq!(t.options, ot.options);
            assert_eq!(t.acknowledgment_number, ot.acknowledgment_number);
            assert!(t.ack);
            assert_eq!(t.ece, ot.ece);
            let last = i + 1 == n;
            assert_eq!(t.fin, ot.fin && last, "FIN only on the last");
            assert_eq!(t.psh, ot.psh && last, "PSH only on the last");
            assert_eq!(t.cwr, ot.cwr && i == 0, "CWR only on the first");
            if !last {
                assert_eq!(seen.l4_payload.len(), usize::from(MSS));
            }
            assert_eq!(seen.ip_payload, seg.len() - locate(seg).0 - ip_hdr_len(&p));
            match (&p.net, &orig.net) {
                (Some(NetHeaders::Ipv4(ip, _)), Some(NetHeaders::Ipv4(oip, _))) => {
                    assert_eq!(ip.identification, oip.identification.wrapping_add(i as u16));
                    assert_eq!(ip.options, oip.options);
                    assert!(ip.dont_fragment);
                }
                (Some(NetHeaders::Ipv6(ip, _)), Some(NetHeaders::Ipv6(oip, _))) => {
                    assert_eq!(ip.flow_label, oip.flow_label);
                }
                _ => panic!("IP version changed"),
            }
            joined.extend_from_slice(&seen.l4_payload);
        }
        assert_eq!(joined, data, "payload concatenates back");
        assert_eq!(out.spans().len(), n);
        let total: usize = out.spans().iter().map(|s| s.1).sum();
        assert_eq!(out.buffer().len(), total, "back to back");
    }

    fn ip_hdr_len(p: &PacketHeaders) -> usize {
        match &p.net {
            Some(NetHeaders::Ipv4(ip, _)) => ip.header_len(),
            _ => 40,
        }
    }

    #[test]
    fn tcpv4_super_frame() {
        // 64 KiB-class, not a multiple of the MSS, sequence number wrapping.
        check_tcp(L3::V4, Vlan::None, 44 * 1448 + 1000, &["psh"]);
    }

    #[test]
    fn tcpv4_vlan_fin_psh_cwr() {
        check_tcp(
            L3::V4,
            Vlan::One,
            10 * 1448 + 1,
            &["fin", "psh", "cwr", "ece"],
        );
    }

    #[test]
    fn tcpv4_qinq_and_options() {
        check_tcp(L3::V4, Vlan::Two, 5 * 1448 + 700, &["psh"]);
        check_tcp(L3::V4Options, Vlan::None, 3 * 1448 + 5, &["fin"]);
    }

    #[test]
    fn tcpv6_super_frame() {
        check_tcp(L3::V6, Vlan::None, 44 * 1448 + 999, &["psh"]);
        check_tcp(L3::V6, Vlan::One, 7 * 1448, &["fin", "psh", "cwr"]);
    }

    #[test]
    fn payload_within_mss_is_one_segment_with_checksums() {
        check_tcp(L3::V4, Vlan::None, 1448, &["fin", "psh", "cwr"]);
        check_tcp(L3::V6, Vlan::One, 100, &["psh"]);
        // No payload at all: the headers go alone, checksummed.
        check_tcp(L3::V4, Vlan::None, 0, &["fin"]);
    }

    #[test]
    fn hdr_len_is_a_hint() {
        // Linux reports skb_headlen, which may include payload: accepted,
        // and segments still carry MSS bytes after the real header.
        let data = payload(4000);
        let (mut h, f) = tcp_super(L3::V4, Vlan::None, &data, &[], MSS);
        let real = usize::from(h.hdr_len);
        h.hdr_len += 200;
        let mut out = Segments::new();
        assert_eq!(segment(&h, &f, &mut out), Ok(3));
        assert!(out.iter().all(|s| s.len() <= real + usize::from(MSS)));
        // Small hint (0): the derived header is used.
        h.hdr_len = 0;
        out.clear();
        assert_eq!(segment(&h, &f, &mut out), Ok(3));
        // Past the end: inconsistent.
        h.hdr_len = f.len() as u16 + 1;
        assert_eq!(segment(&h, &f, &mut out), Err(OffloadError::HdrLenPastEnd));
    }

    #[test]
    fn uso_segments_are_datagrams() {
        for (v6, vlan) in [(false, false), (false, true), (true, false), (true, true)] {
            let data = payload(10 * 1400 + 123);
            let (h, f) = udp_super(v6, vlan, &data, 1400);
            let mut out = Segments::new();
            assert_eq!(segment(&h, &f, &mut out), Ok(11));
            let mut joined = Vec::new();
            for (i, seg) in out.iter().enumerate() {
                assert!(seg.len() <= usize::from(h.hdr_len) + 1400);
                let (p, seen) = check_segment(seg);
                match &p.transport {
                    Some(TransportHeader::Udp(u)) => {
                        assert_eq!((u.source_port, u.destination_port), (5000, 4789));
                        assert_eq!(usize::from(u.length), 8 + seen.l4_payload.len());
                    }
                    _ => panic!("not UDP"),
                }
                if let Some(NetHeaders::Ipv4(ip, _)) = &p.net {
                    let id0 = u16::from_be_bytes([f[locate(&f).0 + 4], f[locate(&f).0 + 5]]);
                    assert_eq!(ip.identification, id0.wrapping_add(i as u16));
                }
                joined.extend_from_slice(&seen.l4_payload);
            }
            assert_eq!(joined, data);
        }
    }

    #[test]
    fn complete_csum_udp_and_tcp() {
        // UDP over IPv4 with a VLAN tag.
        let data = payload(333);
        let mut f = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .single_vlan(VlanId::try_new(5).unwrap())
            .ipv4(V4_SRC, V4_DST, 64)
            .udp(1234, 53)
            .write(&mut f, &data)
            .unwrap();
        let good = f.clone();
        let (l3, _) = locate(&f);
        make_partial(&mut f, l3, l3 + 20, UDP_CSUM_OFFSET, false);
        assert_ne!(f, good);
        let h = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            csum_start: (l3 + 20) as u16,
            csum_offset: 6,
            ..Default::default()
        };
        assert!(needs_software(&h));
        // Through segment(): one segment, completed, the input untouched.
        let mut out = Segments::new();
        assert_eq!(segment(&h, &f, &mut out), Ok(1));
        assert_eq!(out.get(0), Some(&good[..]));
        complete_csum(&h, &mut f).unwrap();
        assert_eq!(f, good, "etherparse's checksum");
        check_segment(&f);

        // TCP over IPv6, odd payload length.
        let data = payload(1001);
        let mut f = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .ipv6(V6_SRC, V6_DST, 64)
            .tcp(1, 2, 3, 4)
            .psh()
            .write(&mut f, &data)
            .unwrap();
        let good = f.clone();
        make_partial(&mut f, 14, 54, TCP_CSUM_OFFSET, true);
        let h = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            csum_start: 54,
            csum_offset: 16,
            ..Default::default()
        };
        complete_csum(&h, &mut f).unwrap();
        assert_eq!(f, good);
        check_segment(&f);

        // Nothing to do without NEEDS_CSUM; a frame as it is.
        let plain = VnetHdr::default();
        assert!(!needs_software(&plain));
        complete_csum(&plain, &mut f).unwrap();
        assert_eq!(f, good);
    }

    #[test]
    fn checksum_sum_matches_reference() {
        let mut x = Rng(0x1234_5678_9abc_def1);
        for len in (0..300).chain([4095, 65535, 65536, 65537, 140_000]) {
            let d: Vec<u8> = (0..len).map(|_| x.next() as u8).collect();
            let ours = u16::from_be_bytes(Csum::default().add(&d).finish());
            assert_eq!(ours, !ref_sum(&[&d]), "len {len}");
        }
    }

    #[test]
    fn rejects_what_it_cannot_do() {
        use OffloadError as E;
        let data = payload(3000);
        let (h, f) = tcp_super(L3::V4, Vlan::None, &data, &[], MSS);
        let mut out = Segments::new();
        let with = |m: &dyn Fn(&mut VnetHdr, &mut Vec<u8>)| {
            let (mut h, mut f) = (h, f.clone());
            m(&mut h, &mut f);
            let mut out = Segments::new();
            let r = segment(&h, &f, &mut out);
            assert!(r.is_ok() || out.is_empty(), "nothing appended on error");
            r
        };
        assert_eq!(with(&|_, _| {}), Ok(3));
        assert_eq!(with(&|h, _| h.gso_size = 0), Err(E::GsoSizeZero));
        assert_eq!(with(&|h, _| h.gso_size = 2), Err(E::TooManySegments));
        assert_eq!(with(&|h, _| h.gso_size = 3), Ok(1000));
        assert_eq!(
            with(&|h, _| h.gso_type = VnetHdr::GSO_UDP),
            Err(E::UfoUnsupported)
        );
        assert_eq!(with(&|h, _| h.gso_type = 2), Err(E::UnknownGsoType(2)));
        assert_eq!(
            with(&|h, _| h.gso_type = VnetHdr::GSO_TCPV6),
            Err(E::GsoMismatch)
        );
        assert_eq!(
            with(&|h, _| h.gso_type = VnetHdr::GSO_UDP_L4),
            Err(E::GsoMismatch)
        );
        assert_eq!(with(&|h, _| h.csum_start += 1), Err(E::CsumMismatch));
        assert_eq!(with(&|h, _| h.csum_offset = 6), Err(E::CsumMismatch));
        // Without NEEDS_CSUM the checksum offsets are not looked at.
        assert_eq!(
            with(&|h, _| {
                h.flags = 0;
                h.csum_start = 9999;
            }),
            Ok(3)
        );
        assert_eq!(
            with(&|h, f| {
                h.hdr_len = 0;
                f.truncate(13)
            }),
            Err(E::TruncatedL2)
        );
        assert_eq!(
            with(&|h, f| {
                h.hdr_len = 0;
                f.truncate(14 + 19)
            }),
            Err(E::BadIpHeader)
        );
        assert_eq!(
            with(&|h, f| {
                h.hdr_len = 0;
                f.truncate(100)
            }),
            Err(E::BadIpLength)
        );
        assert_eq!(with(&|_, f| f[12] = 0x86), Err(E::NotIp));
        assert_eq!(with(&|_, f| f[14] = 0x44), Err(E::BadIpHeader));
        // IHL 15 on a long frame: the TCP header would start elsewhere
        // than csum_start says.
        assert_eq!(with(&|_, f| f[14] = 0x4f), Err(E::CsumMismatch));
        assert_eq!(
            with(&|h, f| {
                h.hdr_len = 0;
                f[14] = 0x4f;
                f.truncate(14 + 40);
            }),
            Err(E::BadIpHeader)
        );
        assert_eq!(with(&|_, f| f[14 + 6] |= 0x20), Err(E::IpFragment));
        assert_eq!(with(&|_, f| f[14 + 7] = 1), Err(E::IpFragment));
        assert_eq!(with(&|_, f| f[14 + 9] = 17), Err(E::GsoMismatch));
        assert_eq!(with(&|_, f| f[34 + 12] = 0x40), Err(E::BadL4Header));
        assert_eq!(
            with(&|_, f| {
                f[16] = 0;
                f[17] = 50; // the 32-byte TCP header needs 52
            }),
            Err(E::BadL4Header)
        );
        // Ethernet padding after the IP packet is left out.
        assert_eq!(with(&|_, f| f.extend_from_slice(&[0; 30])), Ok(3));

        // IPv6: extension headers and jumbograms.
        let (h6, f6) = tcp_super(L3::V6, Vlan::None, &data, &[], MSS);
        let mut g = f6.clone();
        g[14 + 6] = 0; // hop-by-hop
        assert_eq!(segment(&h6, &g, &mut out), Err(E::Ipv6ExtHeader));
        let mut g = f6.clone();
        g[14 + 4..14 + 6].copy_from_slice(&[0, 0]);
        assert_eq!(segment(&h6, &g, &mut out), Err(E::BadIpLength));

        // complete_csum bounds and GSO.
        let mut small = [0u8; 40];
        let h = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            csum_start: 30,
            csum_offset: 9,
            ..Default::default()
        };
        assert_eq!(complete_csum(&h, &mut small), Err(E::CsumPastEnd));
        let h = VnetHdr {
            csum_offset: 8,
            ..h
        };
        assert_eq!(complete_csum(&h, &mut small), Ok(()));
        let g = VnetHdr {
            gso_type: VnetHdr::GSO_TCPV4,
            ..h
        };
        assert_eq!(complete_csum(&g, &mut small), Err(E::GsoNeedsSegmenting));
        assert!(needs_software(&g));
    }

    #[test]
    fn output_fills_then_refuses_without_partial_writes() {
        let data = payload(60_000);
        let (h, f) = tcp_super(L3::V4, Vlan::None, &data, &[], 100);
        let mut out = Segments::new();
        let mut total = 0;
        loop {
            let before = (out.len(), out.buffer().len());
            match segment(&h, &f, &mut out) {
                Ok(n) => total += n,
                Err(e) => {
                    assert_eq!(e, OffloadError::OutputFull);
                    assert_eq!((out.len(), out.buffer().len()), before);
                    break;
                }
            }
        }
        assert_eq!(out.len(), total);
        assert!(total >= 600, "at least one full frame fitted");
        out.clear();
        assert!(out.is_empty());
        assert_eq!(segment(&h, &f, &mut out), Ok(600));
        assert_eq!(OffloadError::OutputFull.name(), "output_full");
    }

    use crate::test_rng::Rng;

    #[test]
    fn random_frames_and_headers_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seeds: Vec<(VnetHdr, Vec<u8>)> = vec![
            tcp_super(L3::V4, Vlan::None, &payload(5000), &["fin", "psh"], 1000),
            tcp_super(L3::V4Options, Vlan::One, &payload(3000), &["cwr"], 536),
            tcp_super(L3::V6, Vlan::Two, &payload(4000), &[], 1220),
            tcp_super(L3::V4, Vlan::None, &payload(10), &[], 1448),
            udp_super(false, true, &payload(4000), 1000),
            udp_super(true, false, &payload(2500), 700),
        ];
        let mut out = Segments::new();
        let (mut ok, mut err) = (0u32, 0u32);
        for round in 0..6000 {
            let (mut h, mut f) = seeds[rng.index(seeds.len())].clone();
            // Mutate the frame: byte flips in the headers (mostly) or
            // anywhere, truncation, growth, or pure garbage.
            for _ in 0..rng.index(4) {
                let at = if rng.index(4) == 0 {
                    rng.index(f.len())
                } else {
                    rng.index(f.len().min(90))
                };
                if let Some(b) = f.get_mut(at) {
                    *b = rng.next() as u8;
                }
            }
            match rng.index(8) {
                0 => f.truncate(rng.index(f.len() + 1)),
                1 => f.extend((0..rng.index(100)).map(|_| rng.next() as u8)),
                2 if round % 16 == 0 => {
                    f = (0..rng.index(200)).map(|_| rng.next() as u8).collect();
                }
                _ => {}
            }
            // Mutate the virtio header: one field, or all of it.
            match rng.index(10) {
                0 => {
                    let mut b = [0u8; VNET_HDR_LEN];
                    b.iter_mut().for_each(|x| *x = rng.next() as u8);
                    h = VnetHdr::parse(&b);
                }
                1 => h.gso_size = rng.index(3) as u16,
                2 => h.gso_size = rng.next() as u16,
                3 => h.hdr_len = rng.next() as u16,
                4 => h.csum_start = rng.next() as u16,
                5 => h.csum_offset = rng.index(100) as u16,
                6 => h.gso_type = rng.next() as u8,
                7 => h.flags = rng.next() as u8,
                _ => {}
            }
            if rng.index(3) == 0 {
                out.clear();
            }
            let before = out.len();
            match segment(&h, &f, &mut out) {
                Ok(n) => {
                    ok += 1;
                    assert_eq!(out.len(), before + n);
                    if h.is_gso() {
                        let mss = usize::from(h.gso_size);
                        for s in out.iter().skip(before) {
                            assert!(s.len() <= MAX_HDR + mss);
                        }
                    }
                }
                Err(_) => {
                    err += 1;
                    assert_eq!(out.len(), before);
                }
            }
            let mut g = f.clone();
            let _ = complete_csum(&h, &mut g);
            assert_eq!(g.len(), f.len());
        }
        // The mutations must exercise both outcomes.
        assert!(ok > 500 && err > 500, "ok {ok} err {err}");
    }

    /// Reference ones'-complement arithmetic for the partial-checksum test.
    fn sum16(mut acc: u32, b: &[u8]) -> u32 {
        for w in b.chunks(2) {
            acc += u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0));
        }
        acc
    }

    fn fold(mut acc: u32) -> u16 {
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    /// An IPv4/TCP frame whose checksum field holds `csum`.
    fn tcp_frame(csum: Option<u16>) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1000, 2000, 1, 1000);
        let payload = b"partial checksum test";
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        if let Some(c) = csum {
            v[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&c.to_be_bytes());
        }
        v
    }

    #[test]
    fn partial_checksum_is_detected() {
        let full = tcp_frame(None);
        // A complete checksum: nothing to do.
        assert_eq!(partial_csum(&full), None);
        // The pseudo-header sum (what a CHECKSUM_PARTIAL sender leaves).
        let pseudo = fold(sum16(0, &full[26..34]) + 6 + (full.len() - 34) as u32);
        let partial = tcp_frame(Some(pseudo));
        let h = partial_csum(&partial).expect("partial detected");
        assert_eq!(h.flags, VnetHdr::F_NEEDS_CSUM);
        assert_eq!((h.csum_start, h.csum_offset), (34, 16));
        // Completing it gives the sender's full checksum back.
        let mut done = partial.clone();
        complete_csum(&h, &mut done).unwrap();
        assert_eq!(done, full);
        // Garbage never panics.
        for n in 0..partial.len() {
            let _ = partial_csum(&partial[..n]);
        }
    }
    /// A kernel VTEP's TCP super-frame (no virtio header, partial checksum)
    /// becomes a GSO frame cut for a 1500-byte inner MTU; the segments carry
    /// the same bytes and fit the MTU.
    /// Found by the `offload_segment` fuzz target: a UDP-GSO frame whose UDP
    /// header ends the frame made `segment` read TCP's flags past the end
    /// (index out of bounds: the len is 55 but the index is 55).
    #[test]
    fn fuzz_regression_udp_gso_reads_no_tcp_fields() {
        let input = hex(
            "2c050200f5f52605000000003b0105000000000000000800470000263b0500000b1126\
             05050026050000000a00000b100b000001000500000a410082e40b3f00b1",
        );
        let h = VnetHdr::parse(input[..VNET_HDR_LEN].try_into().unwrap());
        let mut out = Segments::new();
        let _ = segment(&h, &input[VNET_HDR_LEN..], &mut out);
        // And a well-formed UDP-GSO frame that ends with its UDP header.
        let frame = PacketBuilder::ethernet2(SRC, DST)
            .ipv4(V4_SRC, V4_DST, 64)
            .udp(1000, 2000);
        let mut f = Vec::new();
        frame.write(&mut f, &[]).unwrap();
        let h = VnetHdr {
            gso_type: VnetHdr::GSO_UDP_L4,
            gso_size: 100,
            hdr_len: f.len() as u16,
            ..VnetHdr::default()
        };
        let mut out = Segments::new();
        let _ = segment(&h, &f, &mut out);
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn tunnel_super_frames_get_gso_back() {
        let data = payload(60_000);
        for (l3, vlan, flags) in [
            (L3::V4, Vlan::None, &[][..]),
            (L3::V4Options, Vlan::One, &["psh"][..]),
            (L3::V6, Vlan::None, &["cwr"][..]),
        ] {
            let (want, f) = tcp_super(l3, vlan, &data, flags, 1);
            let h0 = partial_csum(&f).expect("partial checksum found");
            let g = tunnel_gso(&f, &h0, TUNNEL_INNER_MTU).expect("made a GSO frame");
            let ip_hdr =
                usize::from(g.csum_start) - if matches!(vlan, Vlan::One) { 18 } else { 14 };
            let tcp_hdr = usize::from(g.hdr_len) - usize::from(g.csum_start);
            assert_eq!(g.gso_type, want.gso_type);
            assert_eq!(g.hdr_len, want.hdr_len);
            assert_eq!(
                (g.csum_start, g.csum_offset),
                (want.csum_start, want.csum_offset)
            );
            assert_eq!(usize::from(g.gso_size), TUNNEL_INNER_MTU - ip_hdr - tcp_hdr);
            let mut out = Segments::new();
            let n = segment(&g, &f, &mut out).expect("segments");
            assert_eq!(n, data.len().div_ceil(usize::from(g.gso_size)));
            let mut got = Vec::new();
            for seg in out.iter() {
                let p = PacketHeaders::from_ethernet_slice(seg).unwrap();
                let ip_len = match p.net.unwrap() {
                    NetHeaders::Ipv4(h, _) => usize::from(h.total_len),
                    NetHeaders::Ipv6(h, _) => 40 + usize::from(h.payload_length),
                };
                assert!(ip_len <= TUNNEL_INNER_MTU, "{ip_len}");
                got.extend_from_slice(p.payload.slice());
            }
            assert_eq!(got, data);
        }
    }

    #[test]
    fn tunnel_gso_leaves_other_frames_alone() {
        // Short enough for the MTU: checksum only.
        let (_, small) = tcp_super(L3::V4, Vlan::None, &payload(1000), &[], 1);
        let h = partial_csum(&small).unwrap();
        assert_eq!(tunnel_gso(&small, &h, TUNNEL_INNER_MTU), None);
        // Not a partial checksum, or already GSO: nothing to infer.
        let (gso, big) = tcp_super(L3::V4, Vlan::None, &payload(9000), &[], 1448);
        assert_eq!(
            tunnel_gso(&big, &VnetHdr::default(), TUNNEL_INNER_MTU),
            None
        );
        assert_eq!(tunnel_gso(&big, &gso, TUNNEL_INNER_MTU), None);
        // UDP: datagram boundaries are not ours to invent.
        let udp = VnetHdr {
            csum_offset: UDP_CSUM_OFFSET as u16,
            ..partial_csum(&big).unwrap()
        };
        assert_eq!(tunnel_gso(&big, &udp, TUNNEL_INNER_MTU), None);
        // Any prefix of the frame, any claimed header: no panic.
        let h = partial_csum(&big).unwrap();
        for n in 0..200 {
            let _ = tunnel_gso(&big[..n], &h, TUNNEL_INNER_MTU);
            let odd = VnetHdr {
                csum_start: n as u16,
                ..h
            };
            let _ = tunnel_gso(&big, &odd, TUNNEL_INNER_MTU);
            let _ = tunnel_gso(&big, &h, n);
        }
    }
}
