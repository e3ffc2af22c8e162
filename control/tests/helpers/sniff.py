#!/usr/bin/env python3
"""Count Ethernet frames arriving on an interface, with a raw AF_PACKET socket.

usage: sniff.py IFACE SECONDS [--src MAC] [--dst MAC] [--ethertype 0xNNNN]
                [--vlan VID | --untagged]

Prints "ready" once the socket is bound, then, after SECONDS, one JSON line
{"matched": N, "received": M}: M frames arrived, N of them matched every
given filter. Frames the host itself sends are not counted.

An 802.1Q tag counts whether it is still in the frame or was taken off by
the kernel (reported through PACKET_AUXDATA); --ethertype matches the
ethertype inside the tag.
"""

import argparse
import json
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 0x10
# struct tpacket_auxdata: status, len, snaplen, mac, net, vlan_tci, vlan_tpid
AUXDATA = struct.Struct("=IIIHHHH")


def mac(text):
    if text is None:
        return None
    raw = bytes.fromhex(text.replace(":", ""))
    if len(raw) != 6:
        sys.exit(f"bad MAC {text!r}")
    return raw


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("iface")
    p.add_argument("seconds", type=float)
    p.add_argument("--src")
    p.add_argument("--dst")
    p.add_argument("--ethertype")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--vlan", type=int)
    g.add_argument("--untagged", action="store_true")
    a = p.parse_args()
    src, dst = mac(a.src), mac(a.dst)
    ethertype = int(a.ethertype, 0) if a.ethertype else None

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.bind((a.iface, 0))
    # Drop whatever arrived (on any interface) between socket() and bind().
    s.setblocking(False)
    try:
        while True:
            s.recv(65535)
    except BlockingIOError:
        pass
    s.setblocking(True)
    print("ready", flush=True)

    deadline = time.monotonic() + a.seconds
    matched = received = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            frame, anc, _flags, addr = s.recvmsg(65535, socket.CMSG_SPACE(AUXDATA.size))
        except socket.timeout:
            break
        if addr[2] == PACKET_OUTGOING:
            continue
        received += 1
        if len(frame) < 14:
            continue
        vlan = None
        for level, kind, data in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= AUXDATA.size:
                status, _, _, _, _, tci, _ = AUXDATA.unpack_from(data)
                if status & TP_STATUS_VLAN_VALID:
                    vlan = tci & 0x0FFF
        inner = int.from_bytes(frame[12:14], "big")
        if vlan is None and inner == 0x8100 and len(frame) >= 18:
            vlan = int.from_bytes(frame[14:16], "big") & 0x0FFF
            inner = int.from_bytes(frame[16:18], "big")
        if dst is not None and frame[0:6] != dst:
            continue
        if src is not None and frame[6:12] != src:
            continue
        if ethertype is not None and inner != ethertype:
            continue
        if a.vlan is not None and vlan != a.vlan:
            continue
        if a.untagged and vlan is not None:
            continue
        matched += 1
    print(json.dumps({"matched": matched, "received": received}), flush=True)


if __name__ == "__main__":
    main()
