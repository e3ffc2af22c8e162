#!/usr/bin/env python3
"""Record the VXLAN datagrams on an underlay interface, with a raw AF_PACKET socket.

usage: vxlan_sniff.py IFACE SECONDS [--dstport 4789] [--outgoing-only] [--max N]

Prints "ready" once the socket is bound, then, after SECONDS, one JSON list
with an object per VXLAN datagram (IPv4 or IPv6 underlay, both directions):
{"src": outer source address, "dst": outer destination, "sport": outer UDP
source port, "vni": N, "inner_src": MAC, "inner_dst": MAC, "inner_ethertype":
N, "flow": "a.b.c.d:P>e.f.g.h:Q/proto" or null}. With --outgoing-only, only
datagrams this host sends are listed. At most N (default 2000) are kept:
the capture ends there (under a bulk transfer the list would not fit a pipe).
"""

import argparse
import json
import socket
import struct
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def mac(b):
    return ":".join(f"{x:02x}" for x in b)


def inner_flow(f):
    """The inner frame's IPv4 flow as text, or None."""
    if len(f) < 14:
        return None
    et = struct.unpack("!H", f[12:14])[0]
    off = 14
    if et == 0x8100 and len(f) >= 18:
        et = struct.unpack("!H", f[16:18])[0]
        off = 18
    if et != 0x0800 or len(f) < off + 20:
        return None
    ihl = (f[off] & 0x0F) * 4
    proto = f[off + 9]
    src = socket.inet_ntoa(f[off + 12:off + 16])
    dst = socket.inet_ntoa(f[off + 16:off + 20])
    l4 = off + ihl
    if proto in (6, 17) and len(f) >= l4 + 4:
        sp, dp = struct.unpack("!HH", f[l4:l4 + 4])
        return f"{src}:{sp}>{dst}:{dp}/{proto}"
    return f"{src}>{dst}/{proto}"


def parse(frame, dstport):
    if len(frame) < 14:
        return None
    et = struct.unpack("!H", frame[12:14])[0]
    p = frame[14:]
    if et == 0x0800 and len(p) >= 20 and p[9] == 17:
        ihl = (p[0] & 0x0F) * 4
        src, dst = socket.inet_ntoa(p[12:16]), socket.inet_ntoa(p[16:20])
        udp = p[ihl:]
    elif et == 0x86DD and len(p) >= 40 and p[6] == 17:
        src = socket.inet_ntop(socket.AF_INET6, p[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, p[24:40])
        udp = p[40:]
    else:
        return None
    if len(udp) < 16:
        return None
    sport, dport = struct.unpack("!HH", udp[0:4])
    if dport != dstport:
        return None
    vx = udp[8:16]
    if not vx[0] & 0x08:
        return None
    vni = int.from_bytes(vx[4:7], "big")
    inner = udp[16:]
    return {
        "src": src,
        "dst": dst,
        "sport": sport,
        "vni": vni,
        "inner_src": mac(inner[6:12]) if len(inner) >= 12 else None,
        "inner_dst": mac(inner[0:6]) if len(inner) >= 6 else None,
        "inner_ethertype": struct.unpack("!H", inner[12:14])[0] if len(inner) >= 14 else None,
        "flow": inner_flow(inner),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("iface")
    p.add_argument("seconds", type=float)
    p.add_argument("--dstport", type=int, default=4789)
    p.add_argument("--outgoing-only", action="store_true")
    p.add_argument("--max", type=int, default=2000)
    a = p.parse_args()
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((a.iface, 0))
    s.setblocking(False)
    try:
        while True:
            s.recv(65535)
    except BlockingIOError:
        pass
    print("ready", flush=True)
    out = []
    end = time.monotonic() + a.seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            frame, addr = s.recvfrom(65535)
        except (socket.timeout, BlockingIOError):
            break
        if a.outgoing_only and addr[2] != PACKET_OUTGOING:
            continue
        rec = parse(frame, a.dstport)
        if rec is not None:
            out.append(rec)
            if len(out) >= a.max:
                break
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
