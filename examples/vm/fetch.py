#!/usr/bin/env python3
"""fetch.py URL [COUNT | SECONDSs]: downloads URL COUNT times (default 1),
or again and again until SECONDS have passed ("5s"), one connection each,
checks every copy has the same length and SHA-256, and prints one JSON line
{"bytes": N, "sha256": HEX, "copies": C, "total_bytes": T, "secs": S,
"mbit": R} (bytes and sha256 of one copy; secs and mbit over all copies). Runs on the host side of the VM examples and tests: the guest
serves with vm-serve (busybox httpd)."""

import hashlib
import json
import sys
import time
import urllib.request


def main():
    url = sys.argv[1]
    arg = sys.argv[2] if len(sys.argv) > 2 else "1"
    limit = float(arg[:-1]) if arg.endswith("s") else None
    count = 0 if limit is not None else int(arg)
    digests = set()
    total = 0
    n = 0
    copies = 0
    t0 = time.monotonic()
    while copies < count or (limit is not None and time.monotonic() - t0 < limit):
        h = hashlib.sha256()
        n = 0
        with urllib.request.urlopen(url, timeout=30) as r:
            while True:
                b = r.read(1 << 20)
                if not b:
                    break
                n += len(b)
                h.update(b)
        digests.add((n, h.hexdigest()))
        total += n
        copies += 1
    secs = time.monotonic() - t0
    if len(digests) != 1:
        print(json.dumps({"error": "copies differ", "copies": sorted(digests)}))
        sys.exit(1)
    (n, digest), = digests
    print(json.dumps({"bytes": n, "sha256": digest, "copies": copies,
                      "total_bytes": total, "secs": round(secs, 3),
                      "mbit": round(total * 8 / secs / 1e6, 1)}))


if __name__ == "__main__":
    main()
