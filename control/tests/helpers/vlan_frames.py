#!/usr/bin/env python3
"""Craft and capture (possibly 802.1Q/802.1ad tagged) Ethernet frames.

Standard library only: raw AF_PACKET sockets.

  vlan_frames.py send IFACE --src MAC --dst MAC [--tag [TPID:]VID[/PCP] ...]
                 [--ethertype 0x88b5] [--count N] [--interval S] [--marker TEXT]
      Sends COUNT frames. Tags are given outer first, e.g.
      `--tag 1 --tag 20` (802.1Q in 802.1Q), `--tag 0x88a8:100/5`. The
      payload starts with MARKER. Prints {"sent": N}.

  vlan_frames.py sniff IFACE SECONDS [--src MAC] [--marker TEXT] [--max N]
                 [--stop-file PATH]
      Prints "ready" once the socket listens, then after SECONDS (or as soon
      as STOP-FILE exists, checked every 0.1 s) one JSON
      line {"received": M, "frames": [...]} with the first MAX matching
      frames (not those the host sent itself); every frame is
      {"src", "dst", "tags": [{"tpid", "vid", "pcp"}], "ethertype",
      "marker": bool}. A tag the kernel moved out of band (PACKET_AUXDATA)
      is reported as the outermost tag, so the list is the frame as it was
      on the wire.

  vlan_frames.py arp-icmp IFACE --vlan VID [--pcp P] --src-mac MAC
                 --src-ip IP --dst-ip IP [--timeout S]
      Sends a tagged ARP request for DST-IP, waits for the reply, then sends
      a tagged ICMP echo request to the MAC that answered and waits for the
      echo reply. Prints {"arp_reply": null | {"mac", "tags"},
      "echo_reply": null | {"src_ip", "tags"}}.
"""

import argparse
import errno
import json
import os
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
# struct tpacket_auxdata: status, len, snaplen, mac, net, vlan_tci, vlan_tpid
AUXDATA = struct.Struct("=IIIHHHH")
TPIDS = (0x8100, 0x88A8)


def parse_mac(text):
    if text == "broadcast":
        return b"\xff" * 6
    raw = bytes.fromhex(text.replace(":", ""))
    if len(raw) != 6:
        sys.exit(f"bad MAC {text!r}")
    return raw


def fmt_mac(raw):
    return ":".join(f"{b:02x}" for b in raw)


def parse_tag(text):
    """[TPID:]VID[/PCP] -> (tpid, vid, pcp)."""
    tpid = 0x8100
    if ":" in text:
        t, text = text.split(":", 1)
        tpid = int(t, 0)
    pcp = 0
    if "/" in text:
        text, p = text.split("/", 1)
        pcp = int(p)
    vid = int(text)
    if not (0 <= vid <= 4095 and 0 <= pcp <= 7):
        sys.exit("VID must be 0..4095 and PCP 0..7")
    return tpid, vid, pcp


def tag_bytes(tags):
    out = b""
    for tpid, vid, pcp in tags:
        out += struct.pack("!HH", tpid, (pcp << 13) | vid)
    return out


def open_socket(iface):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.bind((iface, ETH_P_ALL))
    # Drop whatever arrived (on any interface) between socket() and bind().
    s.setblocking(False)
    try:
        while True:
            s.recv(65535)
    except BlockingIOError:
        pass
    s.setblocking(True)
    return s


def send_frame(s, frame):
    deadline = time.monotonic() + 5
    while True:
        try:
            s.send(frame)
            return
        except OSError as e:
            if e.errno not in (errno.ENOBUFS, errno.EAGAIN) or time.monotonic() > deadline:
                raise
            time.sleep(0.001)


def receive(s, timeout):
    """One incoming frame as (dst, src, tags, ethertype, payload), or None."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        s.settimeout(left)
        try:
            frame, anc, _flags, addr = s.recvmsg(65535, socket.CMSG_SPACE(AUXDATA.size))
        except socket.timeout:
            return None
        if addr[2] == PACKET_OUTGOING or len(frame) < 14:
            continue
        tags = []
        for level, kind, data in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= AUXDATA.size:
                status, _, _, _, _, tci, tpid = AUXDATA.unpack_from(data)
                if status & TP_STATUS_VLAN_VALID:
                    if not status & TP_STATUS_VLAN_TPID_VALID:
                        tpid = 0x8100
                    tags.append({"tpid": tpid, "vid": tci & 0x0FFF, "pcp": tci >> 13})
        off = 12
        etype = int.from_bytes(frame[off:off + 2], "big")
        while etype in TPIDS and len(frame) >= off + 6:
            tci = int.from_bytes(frame[off + 2:off + 4], "big")
            tags.append({"tpid": etype, "vid": tci & 0x0FFF, "pcp": tci >> 13})
            off += 4
            etype = int.from_bytes(frame[off:off + 2], "big")
        return frame[0:6], frame[6:12], tags, etype, frame[off + 2:]


def cmd_send(a):
    src, dst = parse_mac(a.src), parse_mac(a.dst)
    tags = [parse_tag(t) for t in a.tag]
    payload = a.marker.encode().ljust(46, b"\0")
    frame = dst + src + tag_bytes(tags) + int(a.ethertype, 0).to_bytes(2, "big") + payload
    if not 0 < a.count <= 10000:
        sys.exit("count must be 1..10000")
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.iface, 0))
    for i in range(a.count):
        send_frame(s, frame)
        if a.interval and i + 1 < a.count:
            time.sleep(a.interval)
    print(json.dumps({"sent": a.count}), flush=True)


def cmd_sniff(a):
    src = parse_mac(a.src) if a.src else None
    marker = a.marker.encode() if a.marker else None
    s = open_socket(a.iface)
    print("ready", flush=True)
    deadline = time.monotonic() + a.seconds
    frames = []
    received = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or (a.stop_file and os.path.exists(a.stop_file)):
            break
        r = receive(s, min(left, 0.1))
        if r is None:
            continue
        dst, fsrc, tags, etype, payload = r
        if src is not None and fsrc != src:
            continue
        has_marker = marker is not None and marker in payload
        if marker is not None and not has_marker and src is None:
            continue
        received += 1
        if len(frames) < a.max:
            frames.append({
                "src": fmt_mac(fsrc),
                "dst": fmt_mac(dst),
                "tags": tags,
                "ethertype": etype,
                "marker": has_marker,
            })
    print(json.dumps({"received": received, "frames": frames}), flush=True)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def cmd_arp_icmp(a):
    smac = parse_mac(a.src_mac)
    sip, dip = socket.inet_aton(a.src_ip), socket.inet_aton(a.dst_ip)
    tag = tag_bytes([(0x8100, a.vlan, a.pcp)])
    s = open_socket(a.iface)
    result = {"arp_reply": None, "echo_reply": None}
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, smac, sip, b"\0" * 6, dip)
    request = b"\xff" * 6 + smac + tag + b"\x08\x06" + arp
    deadline = time.monotonic() + a.timeout
    peer = None
    while peer is None and time.monotonic() < deadline:
        send_frame(s, request)
        retry = min(deadline, time.monotonic() + 0.5)
        while time.monotonic() < retry:
            r = receive(s, retry - time.monotonic())
            if r is None:
                break
            dst, src, tags, etype, body = r
            if dst != smac or etype != 0x0806 or len(body) < 28:
                continue
            op, sha, spa = struct.unpack("!6xH6s4s", body[:18])
            if op == 2 and spa == dip:
                peer = sha
                result["arp_reply"] = {"mac": fmt_mac(sha), "tags": tags}
                break
    if peer is not None:
        ident, seq = 0x7654, 1
        icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"vlan-test".ljust(32, b"\0")
        icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0, sip, dip)
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        echo = peer + smac + tag + b"\x08\x00" + ip + icmp
        while result["echo_reply"] is None and time.monotonic() < deadline:
            send_frame(s, echo)
            retry = min(deadline, time.monotonic() + 0.5)
            while time.monotonic() < retry:
                r = receive(s, retry - time.monotonic())
                if r is None:
                    break
                dst, src, tags, etype, body = r
                if dst != smac or etype != 0x0800 or len(body) < 28:
                    continue
                ihl = (body[0] & 0x0F) * 4
                if body[9] != 1 or body[12:16] != dip or len(body) < ihl + 8:
                    continue
                itype, _, _, rid = struct.unpack("!BBHH", body[ihl:ihl + 6])
                if itype == 0 and rid == ident:
                    result["echo_reply"] = {"src_ip": a.dst_ip, "tags": tags}
                    break
    print(json.dumps(result), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    ps = sub.add_parser("send")
    ps.add_argument("iface")
    ps.add_argument("--src", required=True)
    ps.add_argument("--dst", default="broadcast")
    ps.add_argument("--tag", action="append", default=[])
    ps.add_argument("--ethertype", default="0x88b5")
    ps.add_argument("--count", type=int, default=1)
    ps.add_argument("--interval", type=float, default=0.0)
    ps.add_argument("--marker", default="vlan-test")
    pn = sub.add_parser("sniff")
    pn.add_argument("iface")
    pn.add_argument("seconds", type=float)
    pn.add_argument("--src")
    pn.add_argument("--marker")
    pn.add_argument("--max", type=int, default=200)
    pn.add_argument("--stop-file")
    pa = sub.add_parser("arp-icmp")
    pa.add_argument("iface")
    pa.add_argument("--vlan", type=int, required=True)
    pa.add_argument("--pcp", type=int, default=0)
    pa.add_argument("--src-mac", required=True)
    pa.add_argument("--src-ip", required=True)
    pa.add_argument("--dst-ip", required=True)
    pa.add_argument("--timeout", type=float, default=8.0)
    a = p.parse_args()
    {"send": cmd_send, "sniff": cmd_sniff, "arp-icmp": cmd_arp_icmp}[a.cmd](a)


if __name__ == "__main__":
    main()
