use super::*;

#[test]
fn header_roundtrip() {
    let h = vxlan_header(0x12_3456);
    assert_eq!(h, [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
    assert_eq!(parse_vxlan_header(&h), Ok(0x12_3456));
    // Reserved bits are ignored on receipt.
    let mut r = h;
    r[1] = 0xff;
    r[7] = 0xff;
    assert_eq!(parse_vxlan_header(&r), Ok(0x12_3456));
}

#[test]
fn header_without_i_flag_is_refused() {
    let mut h = vxlan_header(5);
    h[0] = 0;
    assert_eq!(parse_vxlan_header(&h), Err(DropReason::VxlanMalformed));
    assert_eq!(parse_vxlan_header(&h[..4]), Err(DropReason::VxlanMalformed));
}

/// An Ethernet + IPv4 + UDP frame from `sport` to `dport`.
fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, tag: Option<u16>) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    if let Some(vid) = tag {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&28u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 8, 0, 0]);
    f
}

#[test]
fn flow_hash_follows_the_l4_flow() {
    let a = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 53, None);
    let b = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1001, 53, None);
    let c = udp4([10, 0, 0, 1], [10, 0, 0, 3], 1000, 53, None);
    assert_eq!(flow_hash(&a), flow_hash(&a.clone()), "stable");
    assert_ne!(flow_hash(&a), flow_hash(&b), "ports count");
    assert_ne!(flow_hash(&a), flow_hash(&c), "addresses count");
    // Many flows spread over a pool of 16 sockets.
    let pool_of = |h: u32| ((u64::from(h) * 16) >> 32) as usize;
    let mut seen = [0u32; 16];
    for p in 0..512u16 {
        seen[pool_of(flow_hash(&udp4(
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            30000 + p,
            80,
            None,
        )))] += 1;
    }
    assert!(seen.iter().all(|&n| n > 8), "uneven spread: {seen:?}");
}

#[test]
fn flow_hash_is_total_on_short_and_odd_frames() {
    let full = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 53, Some(10));
    for n in 0..full.len() {
        let _ = flow_hash(&full[..n]);
    }
    let mut v6 = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
    v6.extend_from_slice(&[0x60, 0, 0, 0, 0, 4, 17, 64]);
    v6.extend_from_slice(&[0x20, 1, 0x0d, 0xb8].repeat(8));
    v6.extend_from_slice(&[0x04, 0xd2, 0, 53]);
    let h = flow_hash(&v6);
    for n in 0..v6.len() {
        let _ = flow_hash(&v6[..n]);
    }
    let mut other = v6.clone();
    other[55] = 54;
    assert_ne!(h, flow_hash(&other), "IPv6 ports count");
}
