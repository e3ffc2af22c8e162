//! The Internet checksum (RFC 1071), shared by the headers the router
//! writes and the software offloads.

/// Internet checksum accumulator (RFC 1071). Words are summed in the host's
/// byte order (§2(B): the sum is byte-order independent) 32 bits at a time
/// into 64 bits, and folded at the end; the result comes out as the two bytes
/// to store. Every slice added must start at an even offset of the checksummed
/// data (all of ours do: pseudo-header fields, headers of even length, and
/// payload after a header of even length).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Csum(u64);

impl Csum {
    /// Adds `data`, an odd last byte padded with zero.
    #[inline]
    pub(crate) fn add(self, data: &[u8]) -> Csum {
        let mut acc = self.0;
        // 8 bytes add < 2^33: fold every 64 KiB so even huge input cannot
        // overflow.
        for block in data.chunks(1 << 16) {
            let mut words = block.chunks_exact(8);
            let mut sum = 0u64;
            for w in &mut words {
                if let Ok(w) = <[u8; 8]>::try_from(w) {
                    let v = u64::from_ne_bytes(w);
                    sum += (v & 0xffff_ffff) + (v >> 32);
                }
            }
            let mut tail = [0u8; 8];
            let rest = words.remainder();
            tail[..rest.len()].copy_from_slice(rest);
            let v = u64::from_ne_bytes(tail);
            sum += (v & 0xffff_ffff) + (v >> 32);
            acc = fold64(acc) + fold64(sum);
        }
        Csum(acc)
    }

    /// Adds one big-endian 16-bit word (a length, a protocol number).
    #[inline]
    pub(crate) fn add_u16(self, v: u16) -> Csum {
        Csum(self.0 + u64::from(u16::from_ne_bytes(v.to_be_bytes())))
    }

    /// The complemented, folded sum as stored in a header.
    #[inline]
    pub(crate) fn finish(self) -> [u8; 2] {
        let mut s = self.0;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        (!(s as u16)).to_ne_bytes()
    }

    /// The folded sum, not complemented, as stored in a header: what a
    /// sender leaves in the checksum field of a partial checksum.
    #[inline]
    pub(crate) fn folded(self) -> [u8; 2] {
        let c = self.finish();
        [!c[0], !c[1]]
    }

    /// [`Csum::finish`], with 0 sent as 0xffff (UDP, RFC 768; the kernel's
    /// `CSUM_MANGLED_0`).
    #[inline]
    pub(crate) fn finish_nonzero(self) -> [u8; 2] {
        let c = self.finish();
        if c == [0, 0] {
            [0xff, 0xff]
        } else {
            c
        }
    }
}

/// Folds 64 bits to at most 33 (ones'-complement, end-around carry).
#[inline]
fn fold64(v: u64) -> u64 {
    (v & 0xffff_ffff) + (v >> 32)
}

/// The stored checksum `sum` after one 16-bit word of the data it covers
/// changed from `old` to `new` (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`).
pub fn adjust(sum: u16, old: u16, new: u16) -> u16 {
    let mut s = u32::from(!sum) + u32::from(!old) + u32::from(new);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}
