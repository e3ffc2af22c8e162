//! Frames for `vswitchctl trace`, built from fields with the data plane's
//! wire emitters.

use dataplane::wire::{self, eth, ipv4};
use dataplane::MacAddr;
use std::net::Ipv4Addr;

pub struct IpSpec {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// `tcp`, `udp` or `icmp`.
    pub proto: String,
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
}

pub struct FrameSpec {
    pub src: MacAddr,
    pub dst: MacAddr,
    /// Arrives tagged with this VLAN.
    pub vlan: Option<u16>,
    /// An IPv4 packet inside (else 46 bytes of ethertype 0x88b5, the IEEE
    /// local experimental type).
    pub ip: Option<IpSpec>,
}

/// The frame `spec` describes, padded to the 60-byte minimum.
pub fn build_frame(spec: &FrameSpec) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&spec.dst.0);
    f.extend_from_slice(&spec.src.0);
    if let Some(v) = spec.vlan {
        f.extend_from_slice(&eth::TPID_8021Q.to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
    }
    match &spec.ip {
        None => {
            f.extend_from_slice(&0x88b5u16.to_be_bytes());
            f.resize(f.len() + 46, 0);
        }
        Some(ip) => {
            f.extend_from_slice(&eth::ETHERTYPE_IPV4.to_be_bytes());
            let (proto, l4) = match ip.proto.as_str() {
                "tcp" => {
                    let mut t = [0u8; 20];
                    t[0..2].copy_from_slice(&ip.sport.to_be_bytes());
                    t[2..4].copy_from_slice(&ip.dport.to_be_bytes());
                    t[12] = 5 << 4;
                    t[13] = 0x02; // SYN
                    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
                    (ipv4::PROTO_TCP, t.to_vec())
                }
                "icmp" => {
                    let mut t = [8u8, 0, 0, 0, 0, 1, 0, 1];
                    let c = wire::checksum(&t);
                    t[2..4].copy_from_slice(&c.to_be_bytes());
                    (ipv4::PROTO_ICMP, t.to_vec())
                }
                _ => {
                    let mut t = [0u8; 8];
                    t[0..2].copy_from_slice(&ip.sport.to_be_bytes());
                    t[2..4].copy_from_slice(&ip.dport.to_be_bytes());
                    t[4..6].copy_from_slice(&8u16.to_be_bytes());
                    (ipv4::PROTO_UDP, t.to_vec())
                }
            };
            let mut h = [0u8; 20];
            ipv4::Repr {
                src: ip.src,
                dst: ip.dst,
                protocol: proto,
                ttl: ip.ttl,
                payload_len: l4.len(),
                ident: 1,
                dont_frag: true,
            }
            .emit(&mut h);
            f.extend_from_slice(&h);
            f.extend_from_slice(&l4);
        }
    }
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let f = build_frame(&FrameSpec {
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            dst: MacAddr([0xff; 6]),
            vlan: Some(20),
            ip: None,
        });
        assert_eq!(f.len(), 64);
        assert_eq!(&f[12..16], &[0x81, 0, 0, 20]);
        let f = build_frame(&FrameSpec {
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            dst: MacAddr([2, 0, 0, 0, 0, 2]),
            vlan: None,
            ip: Some(IpSpec {
                src: Ipv4Addr::new(10, 0, 0, 1),
                dst: Ipv4Addr::new(10, 0, 0, 2),
                proto: "tcp".into(),
                sport: 1,
                dport: 80,
                ttl: 3,
            }),
        });
        let ip = ipv4::Ipv4::new_checked(&f[14..]).unwrap();
        assert!(ip.checksum_ok());
        assert_eq!((ip.ttl(), ip.protocol()), (3, 6));
        assert_eq!(&ip.payload()[2..4], &80u16.to_be_bytes());
    }
}
