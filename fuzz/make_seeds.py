#!/usr/bin/env python3
"""Writes the committed seed inputs of the fuzz targets (fuzz/seeds/TARGET/):
well-formed inputs of every kind each target reads, so fuzzing starts from
valid frames and requests rather than from nothing. Deterministic: run it
again after changing it and commit the result.

The `pipeline` seeds are not made here: they are a merged (minimised) copy
of a long fuzzing run's corpus (`scripts/fuzz.sh` keeps adding to
fuzz/corpus/pipeline; merge with libFuzzer's -merge=1 into seeds/pipeline).
"""

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

C1 = bytes([2, 0, 0, 0, 0, 1])
C2 = bytes([2, 0, 0, 0, 0, 2])
BCAST = b"\xff" * 6
STP_GROUP = bytes([0x01, 0x80, 0xC2, 0, 0, 0])


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def eth(dst, src, et, payload, vlan=None):
    tag = b"" if vlan is None else struct.pack("!HH", 0x8100, vlan)
    return dst + src + tag + struct.pack("!H", et) + payload


def ipv4(src, dst, proto, payload, ttl=64, df=True):
    total = 20 + len(payload)
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0x4000 if df else 0, ttl, proto, 0,
                    bytes(src), bytes(dst))
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload


def ipv6(src, dst, nh, payload):
    return struct.pack("!IHBB", 6 << 28, len(payload), nh, 64) + bytes(src) + bytes(dst) + payload


def udp(sp, dp, data=b"hello"):
    return struct.pack("!HHHH", sp, dp, 8 + len(data), 0) + data


def tcp(sp, dp, flags=0x18, data=b"", seq=1000):
    return struct.pack("!HHIIBBHHH", sp, dp, seq, 0, 5 << 4, flags, 65535, 0, 0) + data


def icmp_echo(ident=7, seq=1):
    h = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"ping" * 8
    return h[:2] + struct.pack("!H", csum(h)) + h[4:]


def arp(op, sha, spa, tha, tpa):
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + sha + bytes(spa) + tha + bytes(tpa)


A = [10, 0, 1, 2]
B = [10, 0, 2, 2]
V6A = [0x20, 1, 0x0D, 0xB8] + [0] * 11 + [1]
V6B = [0x20, 1, 0x0D, 0xB8] + [0] * 11 + [2]


def frames():
    """Frames of every kind the switch meets."""
    f = {}
    f["arp_request"] = eth(BCAST, C1, 0x0806, arp(1, C1, A, b"\0" * 6, [10, 0, 1, 1]))
    f["arp_reply"] = eth(C2, C1, 0x0806, arp(2, C1, A, C2, [10, 0, 1, 3]))
    f["ipv4_udp"] = eth(C2, C1, 0x0800, ipv4(A, B, 17, udp(40000, 53)))
    f["ipv4_tcp_syn"] = eth(C2, C1, 0x0800, ipv4(A, B, 6, tcp(40000, 80, 0x02)))
    f["ipv4_icmp_echo"] = eth(C2, C1, 0x0800, ipv4(A, B, 1, icmp_echo()))
    f["ipv4_ttl1"] = eth(C2, C1, 0x0800, ipv4(A, B, 17, udp(1, 2), ttl=1))
    f["ipv4_fragment"] = eth(C2, C1, 0x0800, ipv4(A, B, 17, udp(1, 2), df=False)[:6]
                             + b"\x20\x00" + ipv4(A, B, 17, udp(1, 2))[8:])
    f["ipv6_udp"] = eth(C2, C1, 0x86DD, ipv6(V6A, V6B, 17, udp(1234, 53)))
    f["tagged_10"] = eth(C2, C1, 0x0800, ipv4(A, B, 17, udp(1, 2)), vlan=10)
    f["tagged_20_broadcast"] = eth(BCAST, C1, 0x0806, arp(1, C1, A, b"\0" * 6, B), vlan=20)
    f["multicast"] = eth(bytes([1, 0, 0x5E, 0, 0, 5]), C1, 0x0800, ipv4(A, [224, 0, 0, 5], 17, udp(1, 2)))
    f["lldp"] = eth(bytes([1, 0x80, 0xC2, 0, 0, 0x0E]), C1, 0x88CC, b"\x02\x07\x04" + C1 + b"\0" * 30)
    f["bpdu_config"] = bpdus()["config"]
    f["runt"] = C2 + C1
    return f


def config_bpdu(root_prio=0x8000, cost=0, flags=0):
    return struct.pack("!HBBB", 0, 0, 0, flags) + struct.pack("!H", root_prio) + C1 + \
        struct.pack("!I", cost) + struct.pack("!H", 0x8000) + C1 + \
        struct.pack("!HHHHH", 0x8001, 0, 20 * 256, 2 * 256, 15 * 256)


def bpdus():
    llc = b"\x42\x42\x03"
    out = {}
    for name, body in [
        ("config", config_bpdu()),
        ("config_better_root", config_bpdu(root_prio=0x1000, cost=4)),
        ("config_tc", config_bpdu(flags=0x01)),
        ("tcn", struct.pack("!HBB", 0, 0, 0x80)),
        ("rst", struct.pack("!HBB", 0, 2, 2) + config_bpdu()[4:] + b"\0"),
    ]:
        payload = llc + body
        out[name] = STP_GROUP + C1 + struct.pack("!H", len(payload)) + payload
    return out


def vnet(flags=0, gso_type=0, hdr_len=0, gso_size=0, csum_start=0, csum_offset=0):
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    fr = frames()
    # bridge_decide: [port byte][frame] chunks split at 0xfe (frames here
    # hold no 0xfe byte, or only where a split does no harm).
    for name, f in fr.items():
        write("bridge_decide", name, bytes([1]) + f)
    write("bridge_decide", "learn_then_forward",
          bytes([1]) + fr["ipv4_udp"] + b"\xfe" + bytes([2]) + eth(C1, C2, 0x0800, ipv4(B, A, 17, udp(53, 40000))))
    for name, f in bpdus().items():
        write("bridge_decide", "bpdu_" + name, bytes([0]) + f)

    # offload_segment: virtio header, then the frame.
    payload = bytes(range(256)) * 12
    t4 = eth(C2, C1, 0x0800, ipv4(A, B, 6, tcp(40000, 80, 0x18, payload)))
    t6 = eth(C2, C1, 0x86DD, ipv6(V6A, V6B, 6, tcp(40000, 80, 0x18, payload)))
    u4 = eth(C2, C1, 0x0800, ipv4(A, B, 17, udp(40000, 53, payload)))
    write("offload_segment", "tso4", vnet(1, 1, 54, 1448, 34, 16) + t4)
    write("offload_segment", "tso6", vnet(1, 4, 74, 1428, 54, 16) + t6)
    write("offload_segment", "uso4", vnet(1, 5, 42, 1400, 34, 6) + u4)
    write("offload_segment", "csum_only", vnet(1, 0, 0, 0, 34, 16) + fr["ipv4_tcp_syn"])
    write("offload_segment", "plain", vnet() + fr["ipv4_udp"])
    write("offload_segment", "vxlan_header", vnet() + b"\x08\0\0\0\0\x10\x92\0" + fr["ipv4_udp"])

    # router: [flags][IPv4 packet]; flags bit 0 partial checksum, bits 1-2
    # direction (0 out, 1 in, 2 hairpin), the rest time.
    for name, pkt in [
        ("tcp", ipv4(A, B, 6, tcp(40000, 80, 0x02))),
        ("udp", ipv4(A, B, 17, udp(40000, 53))),
        ("icmp", ipv4(A, B, 1, icmp_echo())),
    ]:
        for d in range(3):
            write("router", f"{name}_{d}", bytes([d << 1]) + pkt)
    write("router", "prefix", b"10.0.0.0/8")

    # control_request: control lines and config files.
    for i, req in enumerate([
        {"cmd": "add-br", "name": "br0"},
        {"cmd": "add-port", "bridge": "br0", "port": {"name": "p1", "type": "tap"}},
        {"cmd": "fdb-add", "bridge": "br0", "mac": "02:00:00:00:00:01", "port": "p1", "vlan": 10},
        {"cmd": "set-port", "name": "vx", "remote_add": ["192.0.2.2"]},
        {"cmd": "monitor", "kinds": ["fdb"]},
        {"cmd": "list-ports"},
    ]):
        write("control_request", f"request_{i}", json.dumps(req).encode())
    ex = os.path.join(HERE, "..", "examples", "three-hosts.toml")
    if os.path.exists(ex):
        with open(ex, "rb") as f:
            write("control_request", "config_three_hosts", f.read())
    write("control_request", "config_vxlan_router", b"""
[[bridge]]
name = "br0"
stp = true
[[bridge.port]]
name = "vx"
type = "vxlan"
vni = 100
local = "192.0.2.1"
remote = ["192.0.2.2"]
srcport = "50000-50100"
[[bridge.fdb]]
mac = "02:00:00:00:00:42"
port = "vx"
vtep = "192.0.2.9"
[[rif]]
name = "gw"
bridge = "br0"
addr = "10.0.0.1/24"
[[route]]
prefix = "0.0.0.0/0"
via = "10.0.0.9"
[[snat]]
out = "gw"
""")

    # stp_bpdu: [selector][frame] chunks split at 0xfe.
    for name, b in bpdus().items():
        write("stp_bpdu", name, bytes([8]) + b + b"\xfe" + bytes([0x41]) + b)

    # afpacket_slot: status (u32), slot size (u16), tpacket2_hdr bytes 0..28.
    def slot(status, fs, ln, snap, mac, tci=0):
        h = struct.pack("=IIIHHIIHH", 0, ln, snap, mac, mac - 10, 0, 0, tci, 0x8100)
        return struct.pack("=IH", status, fs) + h
    write("afpacket_slot", "whole", slot(1, 2048, 60, 60, 76))
    write("afpacket_slot", "truncated", slot(1, 2048, 9000, 1972, 76))
    write("afpacket_slot", "copied", slot(3, 2048, 9000, 1972, 76))
    write("afpacket_slot", "vlan", slot(1 | 16 | 64, 4096, 1514, 1514, 76, 10))


if __name__ == "__main__":
    main()
