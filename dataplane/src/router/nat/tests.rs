use super::*;
use crate::test_rng::Rng;
use etherparse::{IcmpEchoHeader, Icmpv4Type, PacketBuilder, SlicedPacket, TransportSlice};

const S: u64 = NS_PER_S;
const INSIDE: [u8; 4] = [10, 0, 0, 2];
const REMOTE: [u8; 4] = [198, 51, 100, 7];
const OUTSIDE: [u8; 4] = [192, 0, 2, 1];

fn pool() -> Pool {
    Pool::new(1, OUTSIDE.into(), OUTSIDE.into()).unwrap()
}

fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, 1000, 65535);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(1),
            'F' => b.fin(),
            'R' => b.rst(),
            'P' => b.psh(),
            _ => b,
        };
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, payload)
        .unwrap();
    v
}

fn echo(src: [u8; 4], dst: [u8; 4], reply: bool, id: u16) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ipv4(src, dst, 64);
    let b = if reply {
        b.icmpv4_echo_reply(id, 1)
    } else {
        b.icmpv4_echo_request(id, 1)
    };
    b.write(&mut v, b"ping").unwrap();
    v
}

/// Checks every checksum in `pkt` from scratch and returns (src, sport,
/// dst, dport) with ICMP's identifier as both ports.
fn check(pkt: &[u8]) -> ([u8; 4], u16, [u8; 4], u16) {
    let s = SlicedPacket::from_ip(pkt).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net else {
        panic!("not ipv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum(), "ip checksum");
    let (src, dst) = (h.source, h.destination);
    let payload = ip.payload().payload;
    match s.transport.unwrap() {
        TransportSlice::Tcp(t) => {
            let th = t.to_header();
            assert_eq!(
                th.checksum,
                th.calc_checksum_ipv4(&h, t.payload()).unwrap(),
                "tcp checksum"
            );
            (src, th.source_port, dst, th.destination_port)
        }
        TransportSlice::Udp(u) => {
            let uh = u.to_header();
            if uh.checksum != 0 {
                assert_eq!(
                    uh.checksum,
                    uh.calc_checksum_ipv4(&h, u.payload()).unwrap(),
                    "udp checksum"
                );
            }
            (src, uh.source_port, dst, uh.destination_port)
        }
        TransportSlice::Icmpv4(i) => {
            let ih = i.header();
            assert_eq!(
                ih.checksum,
                ih.icmp_type.calc_checksum(i.payload()),
                "icmp checksum"
            );
            let id = match ih.icmp_type {
                Icmpv4Type::EchoRequest(IcmpEchoHeader { id, .. })
                | Icmpv4Type::EchoReply(IcmpEchoHeader { id, .. }) => id,
                other => panic!("unexpected {other:?}"),
            };
            let _ = payload;
            (src, id, dst, id)
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn tcp_flow_out_and_back() {
    let mut nat = Nat::default();
    let mut syn = tcp(INSIDE, 40000, REMOTE, 80, "S", b"");
    let out = nat.outbound(&mut syn, false, &pool(), 10 * S).unwrap();
    assert_eq!(
        out,
        Endpoint {
            ip: u32::from_be_bytes(OUTSIDE),
            port: 40000
        },
        "keeps the port"
    );
    assert_eq!(check(&syn), (OUTSIDE, 40000, REMOTE, 80));

    let mut synack = tcp(REMOTE, 80, OUTSIDE, 40000, "SA", b"");
    assert_eq!(
        nat.inbound(&mut synack, false, 11 * S),
        Ok(Inbound::Translated)
    );
    assert_eq!(check(&synack), (REMOTE, 80, INSIDE, 40000));

    let info: Vec<_> = nat.conns(11 * S).collect();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].proto, "tcp");
    assert_eq!(info[0].state, State::Established);
    assert_eq!(info[0].expires_s, 7440);
    assert_eq!(info[0].inside.to_string(), "10.0.0.2:40000");
    assert_eq!(info[0].outside.to_string(), "192.0.2.1:40000");
    assert_eq!(info[0].remote.to_string(), "198.51.100.7:80");

    // Data both ways, then FIN both ways.
    let mut data = tcp(INSIDE, 40000, REMOTE, 80, "AP", b"GET / HTTP/1.0\r\n\r\n");
    nat.outbound(&mut data, false, &pool(), 12 * S).unwrap();
    assert_eq!(check(&data), (OUTSIDE, 40000, REMOTE, 80));
    let mut fin = tcp(INSIDE, 40000, REMOTE, 80, "AF", b"");
    nat.outbound(&mut fin, false, &pool(), 13 * S).unwrap();
    assert_eq!(nat.conns(13 * S).next().unwrap().state, State::FinWait);
    let mut fin2 = tcp(REMOTE, 80, OUTSIDE, 40000, "AF", b"odd");
    assert_eq!(
        nat.inbound(&mut fin2, false, 14 * S),
        Ok(Inbound::Translated)
    );
    assert_eq!(check(&fin2), (REMOTE, 80, INSIDE, 40000));
    let c = nat.conns(14 * S).next().unwrap();
    assert_eq!((c.state, c.expires_s), (State::TimeWait, 240));
    assert!(nat.conns(14 * S + 240 * S).next().is_none(), "expired");
}

#[test]
fn udp_and_icmp_flows() {
    let mut nat = Nat::default();
    let mut q = udp(INSIDE, 5353, REMOTE, 53, b"query?");
    nat.outbound(&mut q, false, &pool(), S).unwrap();
    assert_eq!(check(&q), (OUTSIDE, 5353, REMOTE, 53));
    let mut a = udp(REMOTE, 53, OUTSIDE, 5353, b"answer!");
    assert_eq!(nat.inbound(&mut a, false, 2 * S), Ok(Inbound::Translated));
    assert_eq!(check(&a), (REMOTE, 53, INSIDE, 5353));

    let mut ping = echo(INSIDE, REMOTE, false, 77);
    nat.outbound(&mut ping, false, &pool(), 3 * S).unwrap();
    assert_eq!(check(&ping), (OUTSIDE, 77, REMOTE, 77));
    let mut pong = echo(REMOTE, OUTSIDE, true, 77);
    assert_eq!(
        nat.inbound(&mut pong, false, 4 * S),
        Ok(Inbound::Translated)
    );
    assert_eq!(check(&pong), (REMOTE, 77, INSIDE, 77));

    let mut by_proto: Vec<_> = nat.conns(4 * S).map(|c| (c.proto, c.expires_s)).collect();
    by_proto.sort();
    assert_eq!(by_proto, [("icmp", 60), ("udp", 298)]);

    // A reply after the timeout finds nothing.
    let mut late = udp(REMOTE, 53, OUTSIDE, 5353, b"late");
    let before = late.clone();
    assert_eq!(
        nat.inbound(&mut late, false, 2 * S + 300 * S),
        Ok(Inbound::NotTranslated)
    );
    assert_eq!(late, before, "untouched");
    assert_eq!(
        nat.len(),
        1,
        "the expired UDP flow was removed by the lookup"
    );
    assert_eq!(
        nat.conns(302 * S).count(),
        0,
        "the ICMP one is dead, not yet swept"
    );
}

#[test]
fn udp_without_checksum_stays_without() {
    let mut nat = Nat::default();
    let mut q = udp(INSIDE, 5353, REMOTE, 53, b"query?");
    q[20 + 6] = 0;
    q[20 + 7] = 0;
    nat.outbound(&mut q, false, &pool(), S).unwrap();
    assert_eq!(&q[26..28], &[0, 0]);
    assert_eq!(check(&q), (OUTSIDE, 5353, REMOTE, 53));
}

#[test]
fn unsolicited_inbound_is_untouched() {
    let mut nat = Nat::default();
    for mut p in [
        tcp(REMOTE, 80, OUTSIDE, 40000, "S", b""),
        echo(REMOTE, OUTSIDE, false, 1),
        udp(REMOTE, 1, OUTSIDE, 2, b""),
    ] {
        let before = p.clone();
        assert_eq!(nat.inbound(&mut p, false, S), Ok(Inbound::NotTranslated));
        assert_eq!(p, before);
    }
    // A reply from another remote endpoint than the flow's is not the
    // flow's (address- and port-dependent filtering).
    let mut q = udp(INSIDE, 5353, REMOTE, 53, b"q");
    nat.outbound(&mut q, false, &pool(), S).unwrap();
    let mut other = udp(REMOTE, 54, OUTSIDE, 5353, b"a");
    assert_eq!(
        nat.inbound(&mut other, false, S),
        Ok(Inbound::NotTranslated)
    );
    let mut other = udp([203, 0, 113, 9], 53, OUTSIDE, 5353, b"a");
    assert_eq!(
        nat.inbound(&mut other, false, S),
        Ok(Inbound::NotTranslated)
    );
}

#[test]
fn port_collisions_get_other_ports_and_replies_find_their_flow() {
    let mut nat = Nat::default();
    // Two inside hosts use the same source port to the same remote.
    let hosts = [[10, 0, 0, 2], [10, 0, 0, 3], [10, 0, 0, 4]];
    let mut outs = Vec::new();
    for h in hosts {
        let mut p = udp(h, 40000, REMOTE, 53, b"x");
        outs.push(nat.outbound(&mut p, false, &pool(), S).unwrap());
    }
    assert_eq!(outs[0].port, 40000);
    assert!(outs[1].port != 40000 && outs[2].port != 40000 && outs[1].port != outs[2].port);
    for (h, o) in hosts.iter().zip(&outs) {
        let mut r = udp(REMOTE, 53, OUTSIDE, o.port, b"y");
        assert_eq!(nat.inbound(&mut r, false, S), Ok(Inbound::Translated));
        assert_eq!(check(&r), (REMOTE, 53, *h, 40000));
    }
    // The same inside endpoint to another remote endpoint keeps its
    // mapping (endpoint-independent), not the now free-looking 40000.
    let mut p = udp([10, 0, 0, 3], 40000, [203, 0, 113, 1], 53, b"x");
    assert_eq!(
        nat.outbound(&mut p, false, &pool(), S).unwrap().port,
        outs[1].port
    );
}

#[test]
fn pool_of_addresses_keeps_a_host_on_one_address() {
    let pool = Pool::new(1, [192, 0, 2, 10].into(), [192, 0, 2, 13].into()).unwrap();
    let mut nat = Nat::default();
    let mut seen = std::collections::HashSet::new();
    for host in 1..=40u8 {
        let mut first = None;
        for port in [1000u16, 2000, 3000] {
            let mut p = udp([10, 0, 1, host], port, REMOTE, 53, b"x");
            let o = nat.outbound(&mut p, false, &pool, S).unwrap();
            assert!(pool.contains(o.ip));
            assert_eq!(*first.get_or_insert(o.ip), o.ip, "one address per host");
        }
        seen.insert(first.unwrap());
    }
    assert!(seen.len() > 1, "hosts spread over the pool");
}

#[test]
fn limits_refuse_new_flows_and_count() {
    let mut nat = Nat::new(2, Timeouts::default());
    for port in [1, 2] {
        let mut p = udp(INSIDE, port, REMOTE, 53, b"x");
        nat.outbound(&mut p, false, &pool(), S).unwrap();
    }
    let mut p = udp(INSIDE, 3, REMOTE, 53, b"x");
    let before = p.clone();
    assert_eq!(
        nat.outbound(&mut p, false, &pool(), S),
        Err(NatDrop::TableFull)
    );
    assert_eq!(p, before);
    // Known flows still pass; after expiry there is room again.
    let mut p1 = udp(INSIDE, 1, REMOTE, 53, b"x");
    assert!(nat.outbound(&mut p1, false, &pool(), 2 * S).is_ok());
    assert!(nat.outbound(&mut p, false, &pool(), 302 * S).is_ok());

    // A pool of four ports, all taken for this remote endpoint.
    let mut tiny = pool();
    tiny.port_lo = 2000;
    tiny.port_hi = 2003;
    let mut nat = Nat::default();
    for port in 0..4u16 {
        let mut p = udp(INSIDE, 5000 + port, REMOTE, 53, b"x");
        let o = nat.outbound(&mut p, false, &tiny, S).unwrap();
        assert!((2000..=2003).contains(&o.port));
    }
    let mut p = udp(INSIDE, 6000, REMOTE, 53, b"x");
    assert_eq!(
        nat.outbound(&mut p, false, &tiny, S),
        Err(NatDrop::PortsExhausted)
    );
}

#[test]
fn refuses_what_it_cannot_translate() {
    let mut nat = Nat::default();
    let mut frag = udp(INSIDE, 1, REMOTE, 2, b"x");
    frag[6] = 0x20; // MF
    assert_eq!(
        nat.outbound(&mut frag, false, &pool(), S),
        Err(NatDrop::Fragment)
    );
    let mut gre = udp(INSIDE, 1, REMOTE, 2, b"x");
    gre[9] = 47;
    assert_eq!(
        nat.outbound(&mut gre, false, &pool(), S),
        Err(NatDrop::Unsupported)
    );
    let mut reply = echo(INSIDE, REMOTE, true, 5);
    assert_eq!(
        nat.outbound(&mut reply, false, &pool(), S),
        Err(NatDrop::Unsupported)
    );
    let mut short = tcp(INSIDE, 1, REMOTE, 2, "S", b"");
    short.truncate(30);
    short[2..4].copy_from_slice(&30u16.to_be_bytes());
    assert_eq!(
        nat.outbound(&mut short, false, &pool(), S),
        Err(NatDrop::Malformed)
    );
    assert!(nat.is_empty());
}

/// A sender's partial checksum: the folded pseudo-header sum.
fn pseudo(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u16 {
    let mut s = 0u32;
    for w in [src, dst] {
        s += u32::from(u16::from_be_bytes([w[0], w[1]]));
        s += u32::from(u16::from_be_bytes([w[2], w[3]]));
    }
    s += u32::from(proto) + u32::from(len);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Completes a TCP packet's partial checksum, as an egress would.
fn complete(p: &mut [u8]) {
    let mut s = u32::from(be16(p, 36));
    for c in p[20..].chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    s -= u32::from(be16(p, 36));
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    p[36..38].copy_from_slice(&(!(s as u16)).to_be_bytes());
}

#[test]
fn partial_checksum_gets_the_pseudo_header_only() {
    let mut nat = Nat::default();
    let mut p = tcp(INSIDE, 40000, REMOTE, 80, "A", &[7u8; 100]);
    let len = (p.len() - 20) as u16;
    p[36..38].copy_from_slice(&pseudo(INSIDE, REMOTE, 6, len).to_be_bytes());
    nat.outbound(&mut p, true, &pool(), S).unwrap();
    assert_eq!(be16(&p, 36), pseudo(OUTSIDE, REMOTE, 6, len));
    // Completing it (as an egress would) gives a valid packet.
    complete(&mut p);
    assert_eq!(check(&p), (OUTSIDE, 40000, REMOTE, 80));
}

#[test]
fn rst_closes_quickly_and_syn_reopens() {
    let mut nat = Nat::default();
    let mut syn = tcp(INSIDE, 1234, REMOTE, 80, "S", b"");
    nat.outbound(&mut syn, false, &pool(), S).unwrap();
    let mut rst = tcp(REMOTE, 80, OUTSIDE, 1234, "RA", b"");
    nat.inbound(&mut rst, false, S).unwrap();
    let c = nat.conns(S).next().unwrap();
    assert_eq!((c.state, c.expires_s), (State::Closed, 10));
    let mut syn = tcp(INSIDE, 1234, REMOTE, 80, "S", b"");
    nat.outbound(&mut syn, false, &pool(), 2 * S).unwrap();
    let c = nat.conns(2 * S).next().unwrap();
    assert_eq!((c.state, c.expires_s), (State::SynSent, 240));
}

#[test]
fn expire_sweeps_in_bounded_steps_and_flush_rule() {
    let mut nat = Nat::default();
    for port in 0..1000u16 {
        let mut p = udp(INSIDE, 10000 + port, REMOTE, 53, b"x");
        nat.outbound(&mut p, false, &pool(), S).unwrap();
    }
    let other = Pool { rule: 2, ..pool() };
    for port in 0..10u16 {
        let mut p = udp(INSIDE, 30000 + port, REMOTE, 53, b"x");
        nat.outbound(&mut p, false, &other, 1000 * S).unwrap();
    }
    assert_eq!(nat.len(), 1010);
    assert_eq!(nat.expire(400 * S, 100), 100);
    let mut total = 100;
    for _ in 0..20 {
        total += nat.expire(400 * S, 100);
    }
    assert_eq!(total, 1000);
    assert_eq!(nat.len(), 10);
    assert_eq!(nat.flush_rule(2), 10);
    assert!(nat.is_empty());
}

/// Random traffic of many flows, both ways: every translated packet's
/// checksums verify from scratch, every reply maps back to the flow's
/// inside endpoint, and the maps and slab stay consistent.
#[test]
fn random_flows_round_trip() {
    for seed in 1..=4u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut nat = Nat::new(500, Timeouts::default());
        let pool = Pool::new(1, [192, 0, 2, 1].into(), [192, 0, 2, 2].into()).unwrap();
        let mut now = S;
        for _ in 0..3000 {
            now += rng.below(2 * S);
            let inside = [10, 0, rng.below(2) as u8, 1 + rng.below(20) as u8];
            let remote = [198, 51, 100, 1 + rng.below(3) as u8];
            let sport = 1000 + rng.below(30) as u16;
            let dport = [53u16, 80, 443][rng.index(3)];
            let payload = vec![rng.next() as u8; rng.index(40)];
            let mut p = match rng.below(3) {
                0 => tcp(
                    inside,
                    sport,
                    remote,
                    dport,
                    ["S", "A", "AP", "AF"][rng.index(4)],
                    &payload,
                ),
                1 => udp(inside, sport, remote, dport, &payload),
                _ => echo(inside, remote, false, sport),
            };
            let icmp = p[9] == 1;
            let o = match nat.outbound(&mut p, false, &pool, now) {
                Ok(o) => o,
                Err(e) => {
                    assert_eq!(e, NatDrop::TableFull);
                    continue;
                }
            };
            let (s, sp, d, dp) = check(&p);
            assert_eq!((u32::from_be_bytes(s), sp), (o.ip, o.port));
            assert_eq!((d, dp), (remote, if icmp { o.port } else { dport }));
            let mut r = match p[9] {
                6 => tcp(remote, dport, s, sp, "A", &payload),
                17 => udp(remote, dport, s, sp, &payload),
                _ => echo(remote, s, true, sp),
            };
            assert_eq!(nat.inbound(&mut r, false, now), Ok(Inbound::Translated));
            assert_eq!(
                check(&r),
                (remote, if icmp { sport } else { dport }, inside, sport)
            );
            if rng.chance(5) {
                nat.expire(now, 50);
            }
            if rng.chance(4) {
                hairpin_some(&mut nat, &mut rng, &pool, now);
            }
            check_invariants(&nat, now);
        }
    }
}

/// Sends a packet from a random inside endpoint to a random live TCP or
/// UDP mapping's outside endpoint and checks that it arrives, from the
/// sender's outside endpoint, at the mapping's inside endpoint.
fn hairpin_some(nat: &mut Nat, rng: &mut Rng, pool: &Pool, now: u64) {
    let targets: Vec<ConnInfo> = nat.conns(now).filter(|c| c.proto != "icmp").collect();
    if targets.is_empty() {
        return;
    }
    let t = targets[rng.index(targets.len())];
    let from = [10, 0, rng.below(2) as u8, 1 + rng.below(20) as u8];
    let sport = 1000 + rng.below(30) as u16;
    let to = t.outside.ip.to_be_bytes();
    let mut p = match t.proto {
        "tcp" => tcp(from, sport, to, t.outside.port, "A", b"hairpin"),
        _ => udp(from, sport, to, t.outside.port, b"hairpin"),
    };
    let before = p.clone();
    match nat.hairpin(&mut p, false, pool, now) {
        Ok(true) => {}
        Err(NatDrop::TableFull) => return assert_eq!(p, before),
        other => panic!("{other:?}"),
    }
    let (s, sp, d, dp) = check(&p);
    assert_eq!((u32::from_be_bytes(d), dp), (t.inside.ip, t.inside.port));
    let sender = nat
        .conns(now)
        .find(|c| c.inside == ep(from, sport) && c.remote == t.outside)
        .unwrap();
    assert_eq!(sender.outside, ep(s, sp));
}

/// A clock that jumps back and forth (the fuzz target's does) may revive
/// flows of mappings already unlinked, but breaks no structure.
#[test]
fn a_clock_going_back_breaks_nothing() {
    let mut rng = Rng(0xc10c);
    let pool = Pool {
        port_lo: 1024,
        port_hi: 1031,
        ..Pool::new(1, [192, 0, 2, 1].into(), [192, 0, 2, 1].into()).unwrap()
    };
    let mut nat = Nat::new(40, Timeouts::default());
    for _ in 0..20_000 {
        let now = rng.below(2000) * S;
        let host = [10, 0, 0, 1 + rng.below(4) as u8];
        let port = 1024 + rng.below(10) as u16;
        let (remote, rport) = if rng.chance(40) {
            (OUTSIDE, 1024 + rng.below(10) as u16)
        } else {
            ([198, 51, 100, 1 + rng.below(3) as u8], 53)
        };
        let flags = ["S", "SA", "A", "R", "AF"][rng.index(5)];
        let mut p = match rng.below(3) {
            0 => tcp(host, port, remote, rport, flags, b""),
            1 => udp(host, port, remote, rport, b"x"),
            _ => echo(host, remote, false, port),
        };
        match rng.below(5) {
            0 => {
                let _ = nat.hairpin(&mut p, rng.chance(50), &pool, now);
            }
            1 => {
                // A reply from outside, maybe much later.
                let o = nat.outbound(&mut p, false, &pool, now);
                if let (Ok(o), 17) = (o, p[9]) {
                    let mut r = udp(remote, rport, o.ip.to_be_bytes(), o.port, b"y");
                    let _ = nat.inbound(&mut r, false, now + rng.below(400) * S);
                }
            }
            2 => {
                nat.expire(now, rng.index(20));
            }
            3 if rng.chance(2) => {
                nat.flush_rule(1);
            }
            _ => {
                let _ = nat.outbound(&mut p, rng.chance(50), &pool, now);
            }
        }
        check_structure(&nat);
    }
}

/// An ICMP error from `from` to `to` quoting `quote`, checksums valid.
fn icmp_error(from: [u8; 4], to: [u8; 4], t: Icmpv4Type, quote: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(from, to, 64)
        .icmpv4(t)
        .write(&mut v, quote)
        .unwrap();
    v
}

/// Checks the outer IP and ICMP checksums of an error; returns its
/// addresses and the quote.
fn check_error(pkt: &[u8]) -> ([u8; 4], [u8; 4], Vec<u8>) {
    let s = SlicedPacket::from_ip(pkt).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net else {
        panic!("not ipv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum(), "ip checksum");
    let Some(TransportSlice::Icmpv4(i)) = s.transport else {
        panic!("not icmp")
    };
    let ih = i.header();
    assert_eq!(
        ih.checksum,
        ih.icmp_type.calc_checksum(i.payload()),
        "icmp checksum"
    );
    (h.source, h.destination, i.payload().to_vec())
}

fn frag_needed() -> Icmpv4Type {
    Icmpv4Type::DestinationUnreachable(
        etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
    )
}

#[test]
fn icmp_errors_about_a_flow_are_translated_back() {
    const ROUTER: [u8; 4] = [203, 0, 113, 1];
    let mut nat = Nat::default();
    // UDP: a whole quote, so its UDP checksum can be checked too.
    let mut q = udp(INSIDE, 5353, REMOTE, 53, b"query?");
    nat.outbound(&mut q, false, &pool(), S).unwrap();
    let mut err = icmp_error(ROUTER, OUTSIDE, frag_needed(), &q);
    assert_eq!(nat.inbound(&mut err, false, 2 * S), Ok(Inbound::Translated));
    let (src, dst, quote) = check_error(&err);
    assert_eq!((src, dst), (ROUTER, INSIDE));
    assert_eq!(
        check(&quote),
        (INSIDE, 5353, REMOTE, 53),
        "the quote is the packet as sent"
    );

    // ICMP echo: traceroute's time exceeded about our ping.
    let mut ping = echo([10, 0, 0, 3], REMOTE, false, 77);
    // Take port 77 first so the ping's identifier must change.
    let mut other = echo(INSIDE, REMOTE, false, 77);
    nat.outbound(&mut other, false, &pool(), S).unwrap();
    let o = nat.outbound(&mut ping, false, &pool(), S).unwrap();
    assert_ne!(o.port, 77);
    let ttl = Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit);
    let mut err = icmp_error(ROUTER, OUTSIDE, ttl, &ping);
    assert_eq!(nat.inbound(&mut err, false, 2 * S), Ok(Inbound::Translated));
    let (_, dst, quote) = check_error(&err);
    assert_eq!(dst, [10, 0, 0, 3]);
    assert_eq!(check(&quote), ([10, 0, 0, 3], 77, REMOTE, 77));

    // TCP, quoted with only the 8 bytes RFC 792 asks for: no checksum
    // in the quote, ports and the quoted IP header still right.
    let mut syn = tcp(INSIDE, 40000, REMOTE, 80, "S", b"");
    nat.outbound(&mut syn, false, &pool(), S).unwrap();
    let mut err = icmp_error(REMOTE, OUTSIDE, frag_needed(), &syn[..28]);
    assert_eq!(nat.inbound(&mut err, false, 2 * S), Ok(Inbound::Translated));
    let (_, dst, quote) = check_error(&err);
    assert_eq!(dst, INSIDE);
    let qh = etherparse::Ipv4Header::from_slice(&quote).unwrap().0;
    assert_eq!(qh.header_checksum, qh.calc_header_checksum());
    assert_eq!((qh.source, qh.destination), (INSIDE, REMOTE));
    assert_eq!(be16(&quote, 20), 40000);
    assert_eq!(
        nat.conns(2 * S).find(|c| c.proto == "tcp").unwrap().state,
        State::SynSent,
        "an error is no reply"
    );
}

#[test]
fn an_inside_hosts_error_about_a_reply_goes_out_translated() {
    let mut nat = Nat::default();
    let mut q = udp(INSIDE, 5353, REMOTE, 53, b"q");
    nat.outbound(&mut q, false, &pool(), S).unwrap();
    let mut late = udp(REMOTE, 53, OUTSIDE, 5353, b"late answer");
    nat.inbound(&mut late, false, S).unwrap();
    // The socket is gone: port unreachable about the reply it got.
    let unreach =
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port);
    let mut err = icmp_error(INSIDE, REMOTE, unreach, &late);
    let o = nat.outbound(&mut err, false, &pool(), 2 * S).unwrap();
    assert_eq!(o.ip, u32::from_be_bytes(OUTSIDE));
    let (src, dst, quote) = check_error(&err);
    assert_eq!((src, dst), (OUTSIDE, REMOTE));
    assert_eq!(check(&quote), (REMOTE, 53, OUTSIDE, 5353));
}

#[test]
fn icmp_errors_about_no_flow_are_not_translated() {
    let mut nat = Nat::default();
    let stranger = udp(OUTSIDE, 999, REMOTE, 53, b"?");
    let mut err = icmp_error(REMOTE, OUTSIDE, frag_needed(), &stranger);
    let before = err.clone();
    assert_eq!(nat.inbound(&mut err, false, S), Ok(Inbound::NotTranslated));
    assert_eq!(err, before);
    let stranger = udp(REMOTE, 53, INSIDE, 999, b"?");
    let unreach =
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port);
    let mut err = icmp_error(INSIDE, REMOTE, unreach, &stranger);
    let before = err.clone();
    assert_eq!(
        nat.outbound(&mut err, false, &pool(), S),
        Err(NatDrop::NoFlow)
    );
    assert_eq!(err, before);
    // A quote too short to hold ports.
    let mut err = icmp_error(REMOTE, OUTSIDE, frag_needed(), &stranger[..24]);
    assert_eq!(nat.inbound(&mut err, false, S), Ok(Inbound::NotTranslated));
}

fn ep(ip: [u8; 4], port: u16) -> Endpoint {
    Endpoint {
        ip: u32::from_be_bytes(ip),
        port,
    }
}

/// What holds whatever the clock does: flows, mappings, maps and
/// reference counts agree, and the bounds hold.
fn check_structure(nat: &Nat) {
    assert_eq!(nat.by_inside.len(), nat.by_outside.len());
    let flows: Vec<(usize, &Conn)> = nat
        .conns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.expires != 0)
        .collect();
    assert_eq!(nat.by_inside.len(), flows.len());
    assert_eq!(nat.conns.len() - nat.free.len(), flows.len());
    let mut refs = vec![0usize; nat.maps.len()];
    for &(i, c) in &flows {
        assert_eq!(nat.by_inside.get(&c.out_key()), Some(&(i as u32)));
        assert_eq!(nat.by_outside.get(&c.in_key()), Some(&(i as u32)));
        let m = &nat.maps[c.map as usize];
        assert_eq!(
            (m.proto, m.inside, m.outside, m.rule),
            (c.proto, c.inside, c.outside, c.rule)
        );
        refs[c.map as usize] += 1;
    }
    let mut in_use = 0;
    let mut statics = 0;
    for (m, mapping) in nat.maps.iter().enumerate() {
        // A static mapping holds a reference of its own.
        let expected = refs[m] + usize::from(mapping.fixed);
        statics += usize::from(mapping.fixed);
        assert_eq!(mapping.refs as usize, expected, "mapping {m}'s count");
        if expected == 0 {
            continue;
        }
        in_use += 1;
        if mapping.attached {
            assert_eq!(nat.map_by_inside.get(&mapping.in_key()), Some(&(m as u32)));
        }
    }
    assert_eq!(nat.maps.len() - nat.maps_free.len(), in_use);
    assert!(in_use <= flows.len() + statics && flows.len() <= nat.max_conns);
    for (k, &m) in nat.map_by_inside.iter() {
        let mapping = &nat.maps[m as usize];
        assert!(mapping.refs > 0 && mapping.attached && mapping.in_key() == *k);
    }
    for (k, &m) in nat.map_by_outside.iter() {
        let mapping = &nat.maps[m as usize];
        assert!(mapping.refs > 0 && mapping.out_key() == *k);
    }
}

/// The table's invariants at `now` for a clock that only goes forward:
/// the structure's, and a mapping outlives its flows; no two live
/// mappings share an outside endpoint; live flows of one inside
/// endpoint and rule share one (REQ-1).
fn check_invariants(nat: &Nat, now: u64) {
    check_structure(nat);
    let mut eim = std::collections::HashMap::new();
    for c in nat.conns.iter().filter(|c| c.expires != 0) {
        let m = &nat.maps[c.map as usize];
        assert!(m.expires >= c.expires, "a mapping outlives its flows");
        // Flows of a mapping a changed pool detached keep their old
        // endpoint until they are seen again; the others share one.
        if c.expires > now && m.attached {
            let o = eim.entry((c.proto, c.inside, c.rule)).or_insert(c.outside);
            assert_eq!(*o, c.outside, "one outside endpoint per inside endpoint");
        }
    }
    let mut outsides = std::collections::HashSet::new();
    for (m, mapping) in nat.maps.iter().enumerate() {
        if mapping.refs > 0 && mapping.expires > now {
            assert!(outsides.insert((mapping.proto, mapping.outside)), "shared");
            assert_eq!(
                nat.map_by_outside.get(&mapping.out_key()),
                Some(&(m as u32))
            );
        }
    }
}

#[test]
fn one_outside_endpoint_per_inside_endpoint() {
    const C1: [u8; 4] = [10, 0, 0, 2];
    const C2: [u8; 4] = [10, 0, 0, 3];
    const S1: [u8; 4] = [198, 51, 100, 1];
    const S2: [u8; 4] = [198, 51, 100, 2];
    for proto in ["udp", "tcp"] {
        let pkt = |src, sport, dst, dport| match proto {
            "udp" => udp(src, sport, dst, dport, b"x"),
            _ => tcp(src, sport, dst, dport, "S", b""),
        };
        let mut nat = Nat::default();
        let mut p = pkt(C1, 40000, S1, 80);
        let o1 = nat.outbound(&mut p, false, &pool(), S).unwrap();
        assert_eq!(o1, ep(OUTSIDE, 40000), "port preserved");
        let mut p = pkt(C2, 40000, S2, 80);
        let o2 = nat.outbound(&mut p, false, &pool(), S).unwrap();
        assert_ne!(o2.port, 40000, "40000 is c1's, whatever the remote");
        let mut p = pkt(C1, 40000, S2, 80);
        assert_eq!(nat.outbound(&mut p, false, &pool(), S), Ok(o1));
        assert_eq!(check(&p), (OUTSIDE, 40000, S2, 80));
        let mut p = pkt(C2, 40000, S1, 443);
        assert_eq!(nat.outbound(&mut p, false, &pool(), S), Ok(o2));
        let mut by_inside = std::collections::HashMap::new();
        for c in nat.conns(S) {
            by_inside
                .entry(c.inside)
                .or_insert_with(Vec::new)
                .push(c.outside);
        }
        assert_eq!(by_inside[&ep(C1, 40000)], [o1, o1]);
        assert_eq!(by_inside[&ep(C2, 40000)], [o2, o2]);
        // Replies from S2 reach each its own flow.
        for (o, inside) in [(o1, C1), (o2, C2)] {
            let mut r = match proto {
                "udp" => udp(S2, 80, OUTSIDE, o.port, b"y"),
                _ => tcp(S2, 80, OUTSIDE, o.port, "SA", b""),
            };
            assert_eq!(nat.inbound(&mut r, false, S), Ok(Inbound::Translated));
            assert_eq!(check(&r), (S2, 80, inside, 40000));
        }
        check_invariants(&nat, S);
    }
}

#[test]
fn hosts_sharing_a_source_port_or_identifier_get_distinct_ports() {
    let hosts = [[10, 0, 0, 2], [10, 0, 0, 3], [10, 0, 1, 9]];
    let mut nat = Nat::default();
    for proto in 0..3 {
        let mut outs = Vec::new();
        for h in hosts {
            let mut p = match proto {
                0 => tcp(h, 4321, REMOTE, 80, "S", b""),
                1 => udp(h, 4321, REMOTE, 53, b"x"),
                _ => echo(h, REMOTE, false, 4321),
            };
            let o = nat.outbound(&mut p, false, &pool(), S).unwrap();
            assert_eq!(check(&p).1, o.port);
            outs.push(o);
        }
        // The first keeps its port, in each protocol's own space.
        assert_eq!(outs[0], ep(OUTSIDE, 4321));
        let distinct: std::collections::HashSet<_> = outs.iter().collect();
        assert_eq!(distinct.len(), hosts.len(), "proto {proto}: {outs:?}");
        for (h, o) in hosts.iter().zip(&outs) {
            let mut r = match proto {
                0 => tcp(REMOTE, 80, OUTSIDE, o.port, "SA", b""),
                1 => udp(REMOTE, 53, OUTSIDE, o.port, b"y"),
                _ => echo(REMOTE, OUTSIDE, true, o.port),
            };
            assert_eq!(nat.inbound(&mut r, false, S), Ok(Inbound::Translated));
            assert_eq!((check(&r).2, check(&r).3), (*h, 4321));
        }
    }
    check_invariants(&nat, S);
}

#[test]
fn a_mapping_lives_while_one_of_its_flows_does() {
    const R1: [u8; 4] = [198, 51, 100, 1];
    const R2: [u8; 4] = [198, 51, 100, 2];
    const OTHER: [u8; 4] = [10, 0, 0, 9];
    let mut nat = Nat::default();
    let mapped = ep(OUTSIDE, 5000);
    let mut p = udp(INSIDE, 5000, R1, 53, b"x");
    assert_eq!(nat.outbound(&mut p, false, &pool(), S), Ok(mapped));
    let mut p = udp(INSIDE, 5000, R2, 53, b"x");
    assert_eq!(nat.outbound(&mut p, false, &pool(), 200 * S), Ok(mapped));
    assert!(nat.is_mapped(17, mapped, 200 * S));
    assert!(!nat.is_mapped(6, mapped, 200 * S), "per protocol");
    // The R1 flow dies at 301 s, the R2 one lives to 500 s: the mapping
    // survives, swept or not, and is still the host's alone.
    assert!(nat.is_mapped(17, mapped, 400 * S));
    assert_eq!(nat.expire(400 * S, 100), 1);
    assert!(nat.is_mapped(17, mapped, 400 * S));
    let mut p = udp(OTHER, 5000, R1, 53, b"x");
    let o = nat.outbound(&mut p, false, &pool(), 400 * S).unwrap();
    assert_ne!(o, mapped);
    let mut p = udp(INSIDE, 5000, R1, 53, b"x");
    assert_eq!(nat.outbound(&mut p, false, &pool(), 400 * S), Ok(mapped));
    check_invariants(&nat, 400 * S);
    // All its flows dead (R1 again to 700 s): unmapped at once, before
    // any sweep, and the port is free for another host.
    assert!(nat.is_mapped(17, mapped, 699 * S));
    assert!(!nat.is_mapped(17, mapped, 700 * S));
    check_invariants(&nat, 700 * S);
    let mut p = udp([10, 0, 0, 10], 5000, R2, 53, b"x");
    assert_eq!(nat.outbound(&mut p, false, &pool(), 701 * S), Ok(mapped));
    check_invariants(&nat, 701 * S);
    // Swept, every mapping slot but the new one's is free.
    nat.expire(701 * S, 100);
    check_invariants(&nat, 701 * S);
    assert_eq!((nat.len(), nat.map_by_inside.len()), (1, 1));
    assert_eq!(nat.map_by_outside.len(), 1);

    // flush_rule frees the mappings with the flows.
    assert_eq!(nat.flush_rule(1), 1);
    assert!(nat.map_by_inside.is_empty() && nat.map_by_outside.is_empty());
    assert_eq!(nat.maps_free.len(), nat.maps.len());
    assert!(!nat.is_mapped(17, mapped, 701 * S));

    // A TCP flow closed by RST, alone on its mapping, takes the mapping
    // with it after the RST's 10 s.
    let mut syn = tcp(INSIDE, 6000, R1, 80, "S", b"");
    nat.outbound(&mut syn, false, &pool(), 800 * S).unwrap();
    let mut rst = tcp(R1, 80, OUTSIDE, 6000, "R", b"");
    assert_eq!(
        nat.inbound(&mut rst, false, 801 * S),
        Ok(Inbound::Translated)
    );
    assert!(nat.is_mapped(6, ep(OUTSIDE, 6000), 810 * S));
    assert!(!nat.is_mapped(6, ep(OUTSIDE, 6000), 811 * S));
    check_invariants(&nat, 811 * S);
}

#[test]
fn filtering_stays_address_and_port_dependent() {
    const R1: [u8; 4] = [198, 51, 100, 1];
    const R2: [u8; 4] = [198, 51, 100, 2];
    let mut nat = Nat::default();
    let mut p = udp(INSIDE, 5000, R1, 53, b"x");
    let o = nat.outbound(&mut p, false, &pool(), S).unwrap();
    assert!(nat.is_mapped(17, o, S));
    // Mapped, but never sent to R2, nor to R1's port 54.
    for mut p in [
        udp(R2, 53, OUTSIDE, o.port, b"knock"),
        udp(R1, 54, OUTSIDE, o.port, b"knock"),
    ] {
        let before = p.clone();
        assert_eq!(nat.inbound(&mut p, false, S), Ok(Inbound::NotTranslated));
        assert_eq!(p, before, "untouched");
    }
    // Once it has sent to R2, R2's replies come in, on the same port.
    let mut p = udp(INSIDE, 5000, R2, 53, b"x");
    assert_eq!(nat.outbound(&mut p, false, &pool(), S), Ok(o));
    let mut r = udp(R2, 53, OUTSIDE, o.port, b"y");
    assert_eq!(nat.inbound(&mut r, false, S), Ok(Inbound::Translated));
    assert_eq!(check(&r), (R2, 53, INSIDE, 5000));
    check_invariants(&nat, S);
}

#[test]
fn hairpinning_reaches_inside_endpoints_through_their_mappings() {
    const C2: [u8; 4] = [10, 0, 0, 3];
    let mut nat = Nat::default();
    // c1's port 4000 is mapped by a flow to a remote (a STUN server).
    let mut p = udp(INSIDE, 4000, REMOTE, 3478, b"binding");
    let a = nat.outbound(&mut p, false, &pool(), S).unwrap();
    assert_eq!(a, ep(OUTSIDE, 4000));
    assert!(nat.is_mapped(17, a, S));

    // RFC 5780 §4.5: c1 from another port (5000) to its own mapped
    // address arrives at port 4000 from 5000's mapped address.
    let mut p = udp(INSIDE, 5000, OUTSIDE, 4000, b"hairpin?");
    assert_eq!(nat.hairpin(&mut p, false, &pool(), 2 * S), Ok(true));
    assert_eq!(check(&p), (OUTSIDE, 5000, INSIDE, 4000));
    assert!(
        nat.is_mapped(17, ep(OUTSIDE, 5000), 2 * S),
        "5000 mapped now"
    );

    // c2 with the same port 4000 gets its own mapping, and reaches c1.
    let mut p = udp(C2, 4000, OUTSIDE, 4000, b"hello c1");
    assert_eq!(nat.hairpin(&mut p, false, &pool(), 3 * S), Ok(true));
    let (src, c2_port, dst, dport) = check(&p);
    assert_eq!((src, dst, dport), (OUTSIDE, INSIDE, 4000));
    assert_ne!(c2_port, 4000);
    assert!(nat.is_mapped(17, ep(OUTSIDE, c2_port), 3 * S));
    // c1 answers c2's outside endpoint, from its mapped one.
    let mut p = udp(INSIDE, 4000, OUTSIDE, c2_port, b"hello c2");
    assert_eq!(nat.hairpin(&mut p, false, &pool(), 4 * S), Ok(true));
    assert_eq!(check(&p), (OUTSIDE, 4000, C2, 4000));
    // c2's mapping is the one it uses with remotes too.
    let mut p = udp(C2, 4000, REMOTE, 3478, b"binding");
    let o = nat.outbound(&mut p, false, &pool(), 4 * S).unwrap();
    assert_eq!(o, ep(OUTSIDE, c2_port));
    // c2's flow to c1 saw c1's answer as its reply.
    let flow = nat
        .conns(4 * S)
        .find(|c| c.inside == ep(C2, 4000) && c.remote == a)
        .unwrap();
    assert_eq!(flow.state, State::Established);
    check_invariants(&nat, 4 * S);

    // TCP, with a partial checksum (pseudo-header sum only).
    let mut syn = tcp(INSIDE, 443, REMOTE, 80, "S", b"");
    let t = nat.outbound(&mut syn, false, &pool(), 5 * S).unwrap();
    let mut p = tcp(C2, 7000, OUTSIDE, t.port, "S", &[9u8; 33]);
    let full = p.clone();
    let len = (p.len() - 20) as u16;
    p[36..38].copy_from_slice(&pseudo(C2, OUTSIDE, 6, len).to_be_bytes());
    assert_eq!(nat.hairpin(&mut p, true, &pool(), 5 * S), Ok(true));
    assert_eq!(be16(&p, 36), pseudo(OUTSIDE, INSIDE, 6, len));
    complete(&mut p);
    let (src, c2_tcp, dst, dport) = check(&p);
    assert_eq!((src, dst, dport), (OUTSIDE, INSIDE, 443));
    // The same packet with a full checksum takes the same way.
    let mut p = full;
    assert_eq!(nat.hairpin(&mut p, false, &pool(), 5 * S), Ok(true));
    assert_eq!(check(&p), (OUTSIDE, c2_tcp, INSIDE, 443));
    let mut synack = tcp(INSIDE, 443, OUTSIDE, c2_tcp, "SA", b"");
    assert_eq!(nat.hairpin(&mut synack, false, &pool(), 6 * S), Ok(true));
    assert_eq!(check(&synack), (OUTSIDE, t.port, C2, 7000));
    let state = |nat: &Nat, inside| {
        nat.conns(6 * S)
            .find(|c| c.inside == inside && c.remote.ip == u32::from_be_bytes(OUTSIDE))
            .unwrap()
            .state
    };
    assert_eq!(state(&nat, ep(C2, 7000)), State::Established);
    check_invariants(&nat, 6 * S);

    // Not for hairpinning: untouched.
    for mut p in [
        udp(INSIDE, 5000, OUTSIDE, 4001, b"unmapped port"),
        udp(INSIDE, 5000, REMOTE, 4000, b"not ours"),
        tcp(INSIDE, 5000, OUTSIDE, 4000, "S", b""), // mapped for UDP only
        echo(INSIDE, OUTSIDE, false, 4000),
        udp(INSIDE, 5000, OUTSIDE, 4000, b"x")[..20].to_vec(),
    ] {
        let before = p.clone();
        assert_eq!(nat.hairpin(&mut p, false, &pool(), 7 * S), Ok(false));
        assert_eq!(p, before);
    }
    // A dead mapping is no destination.
    let mut p = udp(INSIDE, 5000, OUTSIDE, 4000, b"late");
    assert!(!nat.is_mapped(17, a, 400 * S));
    assert_eq!(nat.hairpin(&mut p, false, &pool(), 400 * S), Ok(false));
    check_invariants(&nat, 400 * S);
}

#[test]
fn hairpinning_refuses_when_the_sender_cannot_be_mapped() {
    let mut nat = Nat::new(1, Timeouts::default());
    let mut p = udp(INSIDE, 4000, REMOTE, 53, b"x");
    nat.outbound(&mut p, false, &pool(), S).unwrap();
    let mut p = udp(INSIDE, 5000, OUTSIDE, 4000, b"x");
    let before = p.clone();
    assert_eq!(
        nat.hairpin(&mut p, false, &pool(), S),
        Err(NatDrop::TableFull)
    );
    assert_eq!(p, before);

    let mut tiny = pool();
    tiny.port_lo = 4000;
    tiny.port_hi = 4000;
    let mut nat = Nat::default();
    let mut p = udp(INSIDE, 4000, REMOTE, 53, b"x");
    nat.outbound(&mut p, false, &tiny, S).unwrap();
    let mut p = udp(INSIDE, 5000, OUTSIDE, 4000, b"x");
    assert_eq!(
        nat.hairpin(&mut p, false, &tiny, S),
        Err(NatDrop::PortsExhausted)
    );
    check_invariants(&nat, S);
}

#[test]
fn limits_hold_per_mapping_and_per_flow() {
    // Four ports: four inside endpoints, each free to reach any number
    // of remotes; a fifth endpoint finds no port.
    let mut tiny = pool();
    tiny.port_lo = 2000;
    tiny.port_hi = 2003;
    let mut nat = Nat::default();
    for port in 0..4u16 {
        for r in 1..=3u8 {
            let mut p = udp(INSIDE, 5000 + port, [198, 51, 100, r], 53, b"x");
            nat.outbound(&mut p, false, &tiny, S).unwrap();
        }
    }
    assert_eq!((nat.len(), nat.map_by_outside.len()), (12, 4));
    let mut p = udp(INSIDE, 6000, REMOTE, 53, b"x");
    let before = p.clone();
    assert_eq!(
        nat.outbound(&mut p, false, &tiny, S),
        Err(NatDrop::PortsExhausted)
    );
    assert_eq!(p, before);
    check_invariants(&nat, S);

    // The flow limit holds even for an endpoint already mapped.
    let mut nat = Nat::new(2, Timeouts::default());
    for r in 1..=2u8 {
        let mut p = udp(INSIDE, 5000, [198, 51, 100, r], 53, b"x");
        nat.outbound(&mut p, false, &pool(), S).unwrap();
    }
    let mut p = udp(INSIDE, 5000, [198, 51, 100, 3], 53, b"x");
    assert_eq!(
        nat.outbound(&mut p, false, &pool(), S),
        Err(NatDrop::TableFull)
    );
    check_invariants(&nat, S);
}

#[test]
fn a_changed_pool_remaps_and_keeps_the_old_port_reserved() {
    let mut nat = Nat::default();
    let mut p = udp(INSIDE, 5000, REMOTE, 53, b"x");
    let old = nat.outbound(&mut p, false, &pool(), S).unwrap();
    let moved = Pool::new(1, [192, 0, 2, 77].into(), [192, 0, 2, 77].into()).unwrap();
    let mut p = udp(INSIDE, 5000, [203, 0, 113, 5], 53, b"x");
    let new = nat.outbound(&mut p, false, &moved, S).unwrap();
    assert_eq!(new, ep([192, 0, 2, 77], 5000));
    assert!(nat.is_mapped(17, old, S), "still the old flow's");
    check_invariants(&nat, S);
    // The old flow, seen again through the changed rule, moves too.
    let mut p = udp(INSIDE, 5000, REMOTE, 53, b"x");
    assert_eq!(nat.outbound(&mut p, false, &moved, S), Ok(new));
    assert!(!nat.is_mapped(17, old, S), "freed with its last flow");
    check_invariants(&nat, S);
}

#[test]
fn delta_matches_full_recompute() {
    let mut rng = Rng(7);
    for _ in 0..10_000 {
        let words: Vec<u16> = (0..8).map(|_| rng.next() as u16).collect();
        let sum = |w: &[u16]| {
            let mut s: u32 = w.iter().map(|&x| u32::from(x)).sum();
            while s > 0xffff {
                s = (s & 0xffff) + (s >> 16);
            }
            !(s as u16)
        };
        let before = sum(&words);
        let mut after = words.clone();
        let i = rng.index(8);
        after[i] = rng.next() as u16;
        let d = Delta::default().replace16(words[i], after[i]);
        let inc = !d.apply(!before);
        // Ones'-complement has two zeros; compare as sums.
        let full = sum(&after);
        assert!(inc == full || (inc, full) == (0, 0xffff) || (inc, full) == (0xffff, 0));
    }
}

const SERVER: [u8; 4] = [10, 0, 0, 5];
const REMOTE2: [u8; 4] = [203, 0, 113, 9];

#[test]
fn static_mapping_forwards_any_remote_and_translates_replies() {
    let mut nat = Nat::default();
    nat.add_static(6, ep(OUTSIDE, 8080), ep(SERVER, 80), 7, S)
        .unwrap();
    assert!(nat.is_mapped(6, ep(OUTSIDE, 8080), u64::MAX - 1));
    assert!(!nat.is_mapped(17, ep(OUTSIDE, 8080), S));
    // A second rule on the same endpoint is refused.
    assert!(nat
        .add_static(6, ep(OUTSIDE, 8080), ep(SERVER, 81), 8, S)
        .is_err());
    // Plain inbound stays filtered; dnat_in opens a flow.
    let mut syn = tcp(REMOTE, 5000, OUTSIDE, 8080, "S", b"");
    assert_eq!(
        nat.inbound(&mut syn.clone(), false, 2 * S),
        Ok(Inbound::NotTranslated)
    );
    assert_eq!(nat.dnat_in(&mut syn, false, 2 * S), Ok(Inbound::Translated));
    assert_eq!(check(&syn), (REMOTE, 5000, SERVER, 80));
    // The server's answer leaves from the forwarded port.
    let mut synack = tcp(SERVER, 80, REMOTE, 5000, "SA", b"");
    assert_eq!(nat.dnat_out(&mut synack, false, 3 * S), Ok(true));
    assert_eq!(check(&synack), (OUTSIDE, 8080, REMOTE, 5000));
    // SNAT of the same packet would do the same (the flow is usable).
    let mut data = tcp(SERVER, 80, REMOTE, 5000, "AP", b"hello");
    nat.outbound(&mut data, false, &pool(), 3 * S).unwrap();
    assert_eq!(check(&data), (OUTSIDE, 8080, REMOTE, 5000));
    let mut ack = tcp(REMOTE, 5000, OUTSIDE, 8080, "A", b"");
    assert_eq!(nat.dnat_in(&mut ack, false, 4 * S), Ok(Inbound::Translated));
    assert_eq!(check(&ack), (REMOTE, 5000, SERVER, 80));
    let c: Vec<_> = nat.conns(4 * S).collect();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].state, State::Established);
    assert_eq!(c[0].rule, 7);
    // A second remote gets its own flow; UDP with its own rule too.
    let mut syn2 = tcp(REMOTE2, 5000, OUTSIDE, 8080, "S", b"");
    assert_eq!(
        nat.dnat_in(&mut syn2, false, 5 * S),
        Ok(Inbound::Translated)
    );
    assert_eq!(check(&syn2), (REMOTE2, 5000, SERVER, 80));
    assert_eq!(nat.conns(5 * S).count(), 2);
    let mut u = udp(REMOTE, 6000, OUTSIDE, 8080, b"q");
    assert_eq!(
        nat.dnat_in(&mut u, false, 5 * S),
        Ok(Inbound::NotTranslated)
    );
    nat.add_static(17, ep(OUTSIDE, 5353), ep(SERVER, 53), 9, S)
        .unwrap();
    let mut u = udp(REMOTE, 6000, OUTSIDE, 5353, b"q");
    assert_eq!(nat.dnat_in(&mut u, false, 5 * S), Ok(Inbound::Translated));
    assert_eq!(check(&u), (REMOTE, 6000, SERVER, 53));
    let mut r = udp(SERVER, 53, REMOTE, 6000, b"a");
    assert_eq!(nat.dnat_out(&mut r, false, 5 * S), Ok(true));
    assert_eq!(check(&r), (OUTSIDE, 5353, REMOTE, 6000));
    // An unrelated packet from the server is not dnat_out's.
    let mut other = tcp(SERVER, 80, REMOTE2, 9999, "S", b"");
    assert_eq!(nat.dnat_out(&mut other, false, 5 * S), Ok(false));
    check_invariants(&nat, 5 * S);
    // Flows expire, the mapping does not.
    nat.expire(20_000 * S, usize::MAX);
    assert_eq!(nat.len(), 0);
    assert!(nat.is_mapped(6, ep(OUTSIDE, 8080), 20_000 * S));
    check_invariants(&nat, 20_000 * S);
    // Removal flushes its flows and frees the endpoint.
    let mut syn = tcp(REMOTE, 5001, OUTSIDE, 8080, "S", b"");
    nat.dnat_in(&mut syn, false, 20_001 * S).unwrap();
    assert_eq!(nat.remove_static(6, ep(OUTSIDE, 8080)), Some(1));
    assert_eq!(nat.remove_static(6, ep(OUTSIDE, 8080)), None);
    assert!(!nat.is_mapped(6, ep(OUTSIDE, 8080), 20_001 * S));
    let mut syn = tcp(REMOTE, 5002, OUTSIDE, 8080, "S", b"");
    assert_eq!(
        nat.dnat_in(&mut syn, false, 20_002 * S),
        Ok(Inbound::NotTranslated)
    );
    check_invariants(&nat, 20_002 * S);
}

#[test]
fn snat_never_hands_out_a_forwarded_port() {
    let mut nat = Nat::default();
    // An SNAT flow holds 8080 first: the static mapping takes it over.
    let mut p = tcp(INSIDE, 8080, REMOTE, 80, "S", b"");
    nat.outbound(&mut p, false, &pool(), S).unwrap();
    assert_eq!(check(&p).1, 8080);
    nat.add_static(6, ep(OUTSIDE, 8080), ep(SERVER, 80), 7, S)
        .unwrap();
    assert_eq!(nat.len(), 0, "the dynamic mapping's flows went");
    check_invariants(&nat, S);
    for i in 0..50u8 {
        let mut p = tcp([10, 0, 1, i], 8080, REMOTE, 80, "S", b"");
        let out = nat.outbound(&mut p, false, &pool(), 2 * S).unwrap();
        assert_ne!(out.port, 8080);
    }
    // With the full range reserved but one port, SNAT uses the rest.
    let mut small = pool();
    small.port_lo = 8080;
    small.port_hi = 8081;
    let mut p = tcp([10, 0, 2, 1], 8080, REMOTE, 80, "S", b"");
    let out = nat.outbound(&mut p, false, &small, 2 * S).unwrap();
    assert_eq!(out.port, 8081);
    let mut p = tcp([10, 0, 2, 2], 8080, REMOTE, 80, "S", b"");
    assert_eq!(
        nat.outbound(&mut p, false, &small, 2 * S),
        Err(NatDrop::PortsExhausted)
    );
    check_invariants(&nat, 2 * S);
}

#[test]
fn hairpin_to_a_forwarded_port() {
    let mut nat = Nat::default();
    nat.add_static(6, ep(OUTSIDE, 8080), ep(SERVER, 80), 7, S)
        .unwrap();
    // INSIDE reaches the server through the outside address.
    let mut syn = tcp(INSIDE, 40000, OUTSIDE, 8080, "S", b"");
    assert_eq!(nat.hairpin(&mut syn, false, &pool(), 2 * S), Ok(true));
    assert_eq!(check(&syn), (OUTSIDE, 40000, SERVER, 80));
    // The server's answer goes back through the forwarded port.
    let mut synack = tcp(SERVER, 80, OUTSIDE, 40000, "SA", b"");
    assert_eq!(nat.hairpin(&mut synack, false, &pool(), 3 * S), Ok(true));
    assert_eq!(check(&synack), (OUTSIDE, 8080, INSIDE, 40000));
    let mut ack = tcp(INSIDE, 40000, OUTSIDE, 8080, "A", b"");
    assert_eq!(nat.hairpin(&mut ack, false, &pool(), 4 * S), Ok(true));
    assert_eq!(check(&ack), (OUTSIDE, 40000, SERVER, 80));
    check_invariants(&nat, 4 * S);
}

#[test]
fn icmp_errors_about_forwarded_flows_are_translated() {
    let mut nat = Nat::default();
    nat.add_static(17, ep(OUTSIDE, 5353), ep(SERVER, 53), 9, S)
        .unwrap();
    let mut q = udp(REMOTE, 6000, OUTSIDE, 5353, b"query?");
    nat.dnat_in(&mut q, false, S).unwrap();
    let mut a = udp(SERVER, 53, REMOTE, 6000, b"answer");
    assert_eq!(nat.dnat_out(&mut a, false, S), Ok(true));
    // The remote's error about the answer reaches the server, quote
    // translated back to the answer as the server sent it.
    let mut err = icmp_error(REMOTE, OUTSIDE, frag_needed(), &a);
    assert_eq!(nat.dnat_in(&mut err, false, 2 * S), Ok(Inbound::Translated));
    let (src, dst, quote) = check_error(&err);
    assert_eq!((src, dst), (REMOTE, SERVER));
    assert_eq!(check(&quote), (SERVER, 53, REMOTE, 6000));
    // The server's error about the query leaves from the outside address,
    // quoting the query as the remote sent it.
    let mut err = icmp_error(SERVER, REMOTE, frag_needed(), &q);
    assert_eq!(nat.dnat_out(&mut err, false, 2 * S), Ok(true));
    let (src, dst, quote) = check_error(&err);
    assert_eq!((src, dst), (OUTSIDE, REMOTE));
    assert_eq!(check(&quote), (REMOTE, 6000, OUTSIDE, 5353));
    // An error about an SNAT flow is not dnat_out's (outbound's instead).
    let mut o = udp(INSIDE, 7000, REMOTE, 53, b"x");
    nat.outbound(&mut o, false, &pool(), S).unwrap();
    let mut back = udp(REMOTE, 53, OUTSIDE, 7000, b"y");
    nat.inbound(&mut back, false, S).unwrap();
    let mut err = icmp_error(INSIDE, REMOTE, frag_needed(), &back);
    assert_eq!(nat.dnat_out(&mut err, false, 2 * S), Ok(false));
    check_invariants(&nat, 2 * S);
}
