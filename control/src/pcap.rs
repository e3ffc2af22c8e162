//! Classic pcap files (the libpcap format `tcpdump -r` and Wireshark read):
//! a 24-byte global header, then a 16-byte header per record. Written by
//! hand: two fixed little structs, no crate needed for that.

use std::io::{self, Write};

/// Microsecond-resolution pcap, LINKTYPE_ETHERNET.
const MAGIC: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;
/// Large enough for a 64 KiB GSO super-frame, kept whole.
pub const SNAPLEN: u32 = 262_144;

pub fn write_header(w: &mut impl Write) -> io::Result<()> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&MAGIC.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&0i32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&SNAPLEN.to_le_bytes());
    h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    w.write_all(&h)
}

pub fn write_record(w: &mut impl Write, ts_ns: u64, data: &[u8]) -> io::Result<()> {
    let incl = data.len().min(SNAPLEN as usize);
    let mut h = Vec::with_capacity(16);
    h.extend_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
    h.extend_from_slice(&((ts_ns % 1_000_000_000 / 1000) as u32).to_le_bytes());
    h.extend_from_slice(&(incl as u32).to_le_bytes());
    h.extend_from_slice(&(data.len() as u32).to_le_bytes());
    w.write_all(&h)?;
    w.write_all(&data[..incl])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let mut v = Vec::new();
        write_header(&mut v).unwrap();
        write_record(&mut v, 1_500_000_123_456, &[1, 2, 3]).unwrap();
        assert_eq!(v.len(), 24 + 16 + 3);
        assert_eq!(&v[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(v[24..28].try_into().unwrap()), 1500);
        assert_eq!(u32::from_le_bytes(v[28..32].try_into().unwrap()), 123);
        assert_eq!(u32::from_le_bytes(v[32..36].try_into().unwrap()), 3);
    }
}
