#!/usr/bin/env python3
"""A bulk TCP transfer with an exact byte count and a digest of the bytes.

usage: bulk_tcp.py serve IP PORT
       bulk_tcp.py send IP PORT BYTES [SEED]

`serve` listens, prints "ready", accepts one connection, reads to EOF and
prints one JSON line {"bytes": N, "sha256": HEX}. `send` connects, writes
BYTES pseudo-random bytes (from SEED) in 1 MiB writes, closes, and prints
the same JSON for what it sent. Equal lines: every byte arrived, in order.
"""

import hashlib
import json
import random
import socket
import sys

CHUNK = 1 << 20


def serve(ip, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.listen(1)
    print("ready", flush=True)
    s.settimeout(30)
    c, _ = s.accept()
    c.settimeout(30)
    h = hashlib.sha256()
    n = 0
    while True:
        b = c.recv(CHUNK)
        if not b:
            break
        n += len(b)
        h.update(b)
    c.close()
    print(json.dumps({"bytes": n, "sha256": h.hexdigest()}), flush=True)


def send(ip, port, total, seed):
    rng = random.Random(seed)
    s = socket.create_connection((ip, port), timeout=10)
    s.settimeout(30)
    h = hashlib.sha256()
    left = total
    while left > 0:
        b = rng.randbytes(min(CHUNK, left))
        s.sendall(b)
        h.update(b)
        left -= len(b)
    s.shutdown(socket.SHUT_WR)
    # Wait for the server's close: everything was read.
    while s.recv(4096):
        pass
    s.close()
    print(json.dumps({"bytes": total, "sha256": h.hexdigest()}), flush=True)


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) >= 5 and sys.argv[1] == "send":
        seed = int(sys.argv[5]) if len(sys.argv) > 5 else 1
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), seed)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
