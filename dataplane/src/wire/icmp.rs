//! ICMP messages for IPv4 (RFC 792): echo, and the errors a router sends
//! (RFC 1812 §4.3.2).

use super::be16;

pub const HEADER_LEN: usize = 8;
pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACHABLE: u8 = 3;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
pub const PARAMETER_PROBLEM: u8 = 12;

/// Destination unreachable codes (RFC 792, RFC 1812 §5.2.7.1).
pub const CODE_NET_UNREACHABLE: u8 = 0;
pub const CODE_HOST_UNREACHABLE: u8 = 1;
pub const CODE_PORT_UNREACHABLE: u8 = 3;
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Time exceeded: TTL expired in transit.
pub const CODE_TTL_EXCEEDED: u8 = 0;

/// Most of an ICMP error datagram (RFC 1812 §4.3.2.3: as much of the
/// offending packet as fits without exceeding 576 bytes).
pub const MAX_ERROR_DATAGRAM: usize = 576;

/// An error type (as opposed to a query): never answered with an error.
pub fn is_error(t: u8) -> bool {
    matches!(
        t,
        DEST_UNREACHABLE | TIME_EXCEEDED | PARAMETER_PROBLEM | 4 | 5
    )
}

/// Writes an ICMP error of `typ`/`code` with `rest` in the second word
/// (the next-hop MTU for "fragmentation needed", else 0) followed by
/// `quote`, checksum included; returns its length. `b` must hold
/// `HEADER_LEN + quote.len()` bytes.
pub fn emit_error(b: &mut [u8], typ: u8, code: u8, rest: u32, quote: &[u8]) -> usize {
    let n = HEADER_LEN + quote.len();
    b[0] = typ;
    b[1] = code;
    b[2..4].copy_from_slice(&[0, 0]);
    b[4..8].copy_from_slice(&rest.to_be_bytes());
    b[8..n].copy_from_slice(quote);
    let c = super::checksum(&b[..n]);
    b[2..4].copy_from_slice(&c.to_be_bytes());
    n
}

/// Turns the echo request `icmp` (the ICMP message, header first) into its
/// reply in place: type 0, checksum updated incrementally (RFC 1624).
/// False (and untouched) if it is not a well-formed echo request.
pub fn echo_to_reply(icmp: &mut [u8]) -> bool {
    if icmp.len() < HEADER_LEN || icmp[0] != ECHO_REQUEST || icmp[1] != 0 {
        return false;
    }
    let old = be16(icmp, 0);
    icmp[0] = ECHO_REPLY;
    let sum = super::checksum::adjust(be16(icmp, 2), old, be16(icmp, 0));
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_reply_checksum() {
        let mut m = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'a', b'b', b'c'];
        let c = crate::wire::checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        assert!(echo_to_reply(&mut m));
        assert_eq!(m[0], ECHO_REPLY);
        assert_eq!(crate::wire::checksum(&m), 0, "reply checksum verifies");
        assert!(!echo_to_reply(&mut m), "a reply is not a request");
        assert!(!echo_to_reply(&mut [8u8, 0, 0]));
    }

    #[test]
    fn error_layout() {
        let quote = [0x45u8; 28];
        let mut b = [0u8; 36];
        let n = emit_error(&mut b, DEST_UNREACHABLE, CODE_FRAG_NEEDED, 1400, &quote);
        assert_eq!(n, 36);
        assert_eq!(&b[..2], &[3, 4]);
        assert_eq!(&b[4..8], &1400u32.to_be_bytes());
        assert_eq!(crate::wire::checksum(&b), 0);
        assert!(is_error(TIME_EXCEEDED) && !is_error(ECHO_REQUEST));
    }
}
