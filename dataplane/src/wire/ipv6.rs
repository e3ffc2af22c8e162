//! The IPv6 fixed header (RFC 8200 §3), read only: the switch looks at
//! addresses and the next header to spread flows (VXLAN source ports); it
//! does not route IPv6.

use super::WireError;
use std::net::Ipv6Addr;

pub const HEADER_LEN: usize = 40;

/// A checked view of an IPv6 packet's fixed header.
#[derive(Debug)]
pub struct Ipv6<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv6<T> {
    /// Checks that `buf` starts with a whole IPv6 fixed header. The payload
    /// is what follows it (up to the payload length, if that fits; a GSO
    /// super-frame may carry 0 there).
    pub fn new_checked(buf: T) -> Result<Ipv6<T>, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(WireError::Malformed);
        }
        Ok(Ipv6 { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn next_header(&self) -> u8 {
        self.b()[6]
    }

    pub fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from(<[u8; 16]>::try_from(&self.b()[8..24]).expect("checked length"))
    }

    pub fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(<[u8; 16]>::try_from(&self.b()[24..40]).expect("checked length"))
    }

    /// The bytes after the fixed header, up to the payload length.
    pub fn payload(&self) -> &[u8] {
        let b = self.b();
        let len = usize::from(super::be16(b, 4));
        let end = if len == 0 {
            b.len()
        } else {
            (HEADER_LEN + len).min(b.len())
        };
        &b[HEADER_LEN..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_header() {
        let mut p = vec![0x60, 0, 0, 0, 0, 4, 17, 64];
        p.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(&[1, 2, 3, 4, 9, 9]);
        let ip = Ipv6::new_checked(&p[..]).unwrap();
        assert_eq!(ip.next_header(), 17);
        assert_eq!(ip.src(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ip.dst(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            ip.payload(),
            &[1, 2, 3, 4],
            "trailing bytes are not payload"
        );
        assert_eq!(
            Ipv6::new_checked(&p[..39]).unwrap_err(),
            WireError::Truncated
        );
        p[0] = 0x45;
        assert_eq!(Ipv6::new_checked(&p[..]).unwrap_err(), WireError::Malformed);
    }
}
