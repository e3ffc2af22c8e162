#!/usr/bin/env python3
"""Send a bounded number of raw Ethernet frames out of an interface.

usage: sendframes.py IFACE --count N [--src MAC|random] [--dst MAC|random]
                     [--ethertype 0x88b5] [--vlan VID] [--max-seconds S]
                     [--interval S]

"random" draws a fresh locally administered unicast address for every frame.
Frames carry a 46-byte payload (minimum Ethernet size); --vlan adds an
802.1Q tag (TPID 0x8100, priority 0) with that VLAN id. The run stops after
COUNT frames or MAX-SECONDS, whichever comes first, and prints one JSON line
{"sent": N, "seconds": T}. When the interface queue is full (ENOBUFS) the
frame is retried after a short pause.
"""

import argparse
import errno
import json
import os
import socket
import sys
import time


def random_mac():
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFC) | 0x02  # unicast, locally administered
    return bytes(b)


def parse_mac(text):
    if text == "random":
        return None
    if text == "broadcast":
        return b"\xff" * 6
    raw = bytes.fromhex(text.replace(":", ""))
    if len(raw) != 6:
        sys.exit(f"bad MAC {text!r}")
    return raw


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("iface")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--src", default="random")
    p.add_argument("--dst", default="broadcast")
    p.add_argument("--ethertype", default="0x88b5")
    p.add_argument("--max-seconds", type=float, default=20.0)
    p.add_argument("--interval", type=float, default=0.0)
    p.add_argument("--vlan", type=int)
    a = p.parse_args()
    if not 0 < a.count <= 1_000_000:
        sys.exit("count must be 1..1000000")
    src, dst = parse_mac(a.src), parse_mac(a.dst)
    ethertype = int(a.ethertype, 0).to_bytes(2, "big")
    if a.vlan is not None:
        if not 0 <= a.vlan <= 4095:
            sys.exit("vlan must be 0..4095")
        ethertype = b"\x81\x00" + a.vlan.to_bytes(2, "big") + ethertype
    payload = b"vswitch-test".ljust(46, b"\0")

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.iface, 0))
    start = time.monotonic()
    deadline = start + a.max_seconds
    sent = 0
    while sent < a.count and time.monotonic() < deadline:
        frame = (dst or random_mac()) + (src or random_mac()) + ethertype + payload
        while time.monotonic() < deadline:
            try:
                s.send(frame)
                sent += 1
                break
            except OSError as e:
                if e.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    raise
                time.sleep(0.001)
        if a.interval:
            time.sleep(a.interval)
    print(json.dumps({"sent": sent, "seconds": round(time.monotonic() - start, 3)}), flush=True)


if __name__ == "__main__":
    main()
