#!/usr/bin/env python3
"""Memory benchmark: vswitchd's RSS with a large forwarding database, and
whether it grows under steady traffic.

What it does, in order:

  1. Starts vswitchd (from --bin-dir) inside a switch namespace this script
     creates, with its own control socket, and reads its RSS (VmRSS, VmHWM
     from /proc/PID/status) right after start and with an empty bridge that
     has two ports and has seen a warm-up burst of frames from one address.
  2. Fills the FDB with --entries distinct source MACs (02:6d:xx:xx:xx:xx,
     locally administered unicast) sent as 60-byte Ethernet frames from a
     raw AF_PACKET socket in host namespace H1 towards a fixed unicast MAC
     (H2's interface, a static FDB entry on port p2).  Chunk by chunk, the
     learned count is read back from `vswitchctl --json show`
     (bridges[].ports[].fdb_entries); a chunk that came up short is sent
     again (already learned addresses are just refreshed) at a lower rate.
     Reports RSS with the table full and bytes per entry.
  3. Steady state for --duration seconds: frames keep flowing at --rate,
     mostly refreshing the learned addresses round-robin, partly
     (--new-frac) brand-new addresses beyond the table's cap, which must be
     refused (`fdb_full`) without growing anything.  A churn window sets a
     short ageing time for a while so entries age out and get replaced.
     RSS is sampled every --sample seconds; reports start, end, max, growth
     and least-squares slopes, the daemon's counters, and a verdict judged
     on the slope over the second half of the run.

Everything runs inside network namespaces named fm<PID>-{sw,h1,h2}; no IP
addresses are configured at all (pure Layer 2), so nothing can be routed
out.  Frame counts and times are bounded.  Everything created (namespaces,
veths, the daemon -- stopped by its PID --, socket and log files) is
removed on exit, on error and on Ctrl-C.

Run as root:  sudo python3 benches/netbench/fdbmem.py [--entries 1000000] [--duration 300]
Quick try:    sudo python3 benches/netbench/fdbmem.py --entries 100000 --duration 20
See README.md next to this file.  Python 3 standard library only.
"""

import argparse
import ctypes
import ctypes.util
import datetime
import errno
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PID = os.getpid()
TAG = "fm%d" % PID          # prefix of every name we create (namespaces, socket, log)
FDB_HARD_MAX = 1 << 20      # the daemon's hard cap on FDB entries

# Addresses (all locally administered unicast: first octet 0x02).
KNOWN_PREFIX = b"\x02\x6d"  # 02:6d:<32-bit index>  -- the addresses that fill the table
NEW_PREFIX = b"\x02\x6e"    # 02:6e:<32-bit counter> -- new addresses beyond the cap
DST_MAC = "02:6f:00:00:00:02"     # H2's interface; a static FDB entry on p2
SRC_H1_MAC = "02:6f:00:00:00:01"  # H1's interface (never used as a frame source)
WARM_MAC = "02:6f:00:00:00:10"    # the one source of the warm-up burst
ETHERTYPE = b"\x88\xb5"     # IEEE 802 local experimental ethertype: no stack handles it
FRAME_LEN = 60              # minimum Ethernet frame without FCS

SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20
CLONE_NEWNET = 0x40000000

from benchlib import (REG, BenchError, Interrupted, add_netns, del_netns, log, nsexec,  # noqa: F401
                      run, tail_file, vlog)
import benchlib


# --------------------------------------------------------------------------
# Raw frames from inside a host namespace.  The packet socket is created in
# the namespace (setns of this thread, then straight back) and stays bound
# to that namespace's interface, so sending needs no child process.
# --------------------------------------------------------------------------

_LIBC = None


def _setns(fd):
    global _LIBC
    if hasattr(os, "setns"):            # Python >= 3.12
        os.setns(fd, CLONE_NEWNET)
        return
    if _LIBC is None:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _LIBC.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "setns: " + os.strerror(e))


def packet_socket_in(ns, ifname):
    """An AF_PACKET socket (protocol 0: sends only, receives nothing) bound to
    `ifname` in namespace `ns`."""
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open("/var/run/netns/" + ns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                try:
                    s.bind((ifname, 0))
                    try:
                        s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
                    except OSError:
                        pass
                except BaseException:
                    s.close()
                    raise
            finally:
                _setns(orig)
        finally:
            os.close(target)
    finally:
        os.close(orig)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    REG.sockets.append(s)
    return s


def mac_bytes(mac):
    return bytes(int(x, 16) for x in mac.split(":"))


def mac_str(prefix, i):
    b = prefix + (i & 0xFFFFFFFF).to_bytes(4, "big")
    return ":".join("%02x" % x for x in b)


class Sender:
    """Sends 60-byte frames dst=DST_MAC, src=<prefix><32-bit index>."""

    def __init__(self, ns, ifname):
        self.sock = packet_socket_in(ns, ifname)
        self.dst = mac_bytes(DST_MAC)
        self.tail = ETHERTYPE + bytes(FRAME_LEN - 14)
        self.sent = 0
        self.enobufs = 0

    def _send_list(self, frames):
        send = self.sock.send
        k = 0
        while k < len(frames):
            try:
                for f in frames[k:]:
                    send(f)
                    k += 1
            except OSError as e:
                if e.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    raise BenchError("sending frames failed: %s" % e)
                self.enobufs += 1
                time.sleep(0.001)
        self.sent += len(frames)

    def frames(self, prefix, start, n):
        head = self.dst + prefix
        tail = self.tail
        return [head + (i & 0xFFFFFFFF).to_bytes(4, "big") + tail for i in range(start, start + n)]

    def send_seq(self, prefix, start, n, rate, batch=64):
        """Sends n frames with sources prefix|start .. prefix|start+n-1, paced at
        `rate` frames/s (0 = as fast as possible). Returns the elapsed time."""
        t0 = time.monotonic()
        done = 0
        while done < n:
            m = min(batch, n - done)
            self._send_list(self.frames(prefix, start + done, m))
            done += m
            if rate:
                ahead = t0 + done / rate - time.monotonic()
                if ahead > 0.0005:
                    time.sleep(ahead)
        return time.monotonic() - t0

    def send_mac(self, src_mac, n, rate=0):
        f = self.dst + mac_bytes(src_mac) + self.tail
        t0 = time.monotonic()
        done = 0
        while done < n:
            m = min(64, n - done)
            self._send_list([f] * m)
            done += m
            if rate:
                ahead = t0 + done / rate - time.monotonic()
                if ahead > 0.0005:
                    time.sleep(ahead)


# --------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------

class Daemon:
    def __init__(self, opts, ns):
        self.opts = opts
        self.ns = ns
        self.socket = "/tmp/%s.sock" % TAG
        self.log = "/tmp/%s-vswitchd.log" % TAG
        self.p = None
        self.exit_status = None

    def start(self):
        REG.files.extend([self.socket, self.socket + ".lock", self.log])
        cmd = nsexec(self.ns, os.path.join(self.opts.bin_dir, "vswitchd"), "--socket", self.socket)
        if self.opts.workers:
            cmd += ["--workers", str(self.opts.workers)]
        cmd += self.opts.vswitchd_arg
        vlog("& " + " ".join(cmd))
        logf = open(self.log, "wb")
        try:
            # own session: a terminal Ctrl-C does not reach it behind our back
            self.p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            logf.close()
        REG.add_proc(self.p, "vswitchd")
        # `ip netns exec` execs vswitchd: the PID is the daemon's own
        deadline = time.monotonic() + 10
        while True:
            self.check_alive()
            if os.path.exists(self.socket):
                if self.ctl("list-br", check=False).returncode == 0:
                    return
            if time.monotonic() > deadline:
                raise BenchError("vswitchd socket %s not ready within 10s; log:\n%s"
                                 % (self.socket, tail_file(self.log)))
            time.sleep(0.1)

    @property
    def pid(self):
        return self.p.pid

    def check_alive(self):
        if self.p is not None and self.p.poll() is not None:
            rc = self.p.returncode
            REG.forget_proc(self.p)
            raise BenchError("vswitchd exited (status %s); log tail:\n%s" % (rc, tail_file(self.log)))

    def died(self):
        """The exit status if the daemon exited on its own, else None."""
        if self.p is not None and self.p.poll() is not None:
            return self.p.returncode
        return None

    def stop(self):
        if self.p is None:
            return
        if self.p.poll() is not None:       # died before we stopped it
            REG.forget_proc(self.p)
            self.p = None
            return
        self.exit_status = REG.kill_proc(self.p, "vswitchd", sig=signal.SIGTERM, grace=10.0)
        if self.exit_status != 0:
            log("note: vswitchd exit status after SIGTERM was %s (contract says 0)" % self.exit_status)
        self.p = None

    def ctl(self, *args, check=True, timeout=30):
        return run([os.path.join(self.opts.bin_dir, "vswitchctl"), "--socket", self.socket]
                   + list(args), timeout=timeout, check=check)

    def ctl_json(self, *args, timeout=30):
        cp = self.ctl("--json", *args, timeout=timeout)
        try:
            return json.loads(cp.stdout)
        except ValueError:
            raise BenchError("vswitchctl %s gave no JSON: %r" % (" ".join(args), cp.stdout[:300]))

    def fdb_counts(self):
        """(entries in br0 incl. static, dynamic entries per port) from `show --json`."""
        doc = self.ctl_json("show")
        for b in doc.get("bridges", []):
            if b.get("name") == "br0":
                if "fdb_entries" not in b:
                    raise BenchError("`vswitchctl --json show` has no bridges[].fdb_entries "
                                     "counter; this benchmark needs it")
                ports = {p["name"]: p.get("fdb_entries") for p in b.get("ports", [])
                         if isinstance(p, dict)}
                return b["fdb_entries"], ports
        raise BenchError("bridge br0 missing from `vswitchctl --json show`")

    def learned(self):
        """Dynamic entries learned on p1 (where all our sources come in)."""
        total, ports = self.fdb_counts()
        return ports.get("p1") if ports.get("p1") is not None else total

    def stats(self):
        return {p["port"]: p for p in self.ctl_json("stats")}

    def mem(self):
        """VmRSS, VmHWM, RssAnon, RssFile, RssShmem, VmSize (KiB) and Threads."""
        self.check_alive()
        r = {}
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmSize", "VmPeak"):
                        r[k] = int(v.split()[0])
                    elif k == "Threads":
                        r[k] = int(v)
        except OSError as e:
            raise BenchError("cannot read /proc/%d/status: %s" % (self.pid, e))
        return r

    def cpu_s(self):
        """utime+stime (all threads) in seconds."""
        return benchlib.proc_cpu_s(self.pid)

    def reset_hwm(self):
        """Resets VmHWM to the current RSS (clear_refs 5; nothing else changes)."""
        try:
            with open("/proc/%d/clear_refs" % self.pid, "w") as f:
                f.write("5")
            return True
        except OSError as e:
            log("note: could not reset VmHWM (%s); steady-state peak is since start" % e)
            return False


# --------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------

def system_busy_s():
    return benchlib.system_cpu_s()[0]


def background_load(seconds=1.0):
    a = system_busy_s()
    t0 = time.monotonic()
    time.sleep(seconds)
    return (system_busy_s() - a) / (time.monotonic() - t0)


def settle_count(daemon, want, timeout=5.0):
    """Polls the learned count until it reaches `want` or stops changing."""
    deadline = time.monotonic() + timeout
    last = None
    time.sleep(0.02)
    while True:
        got = daemon.learned()
        if got >= want:
            return got
        if got == last or time.monotonic() > deadline:
            return got
        last = got
        time.sleep(0.05)


def lsq_slope(points):
    """Least-squares slope of (x, y) points, or None with fewer than 2."""
    n = len(points)
    if n < 2:
        return None
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def stats_delta(a, b):
    """Per-port counter differences b - a (rx/tx packets and bytes, drops)."""
    out = {}
    for port, eb in b.items():
        ea = a.get(port, {})
        d = {k: eb.get(k, 0) - ea.get(k, 0) for k in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")}
        d["drops"] = {r: n - ea.get("drops", {}).get(r, 0) for r, n in eb.get("drops", {}).items()}
        out[port] = d
    return out


def drop_total(stats, reason):
    return sum(p.get("drops", {}).get(reason, 0) for p in stats.values())


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------

def setup(opts, res):
    sw, h1, h2 = TAG + "-sw", TAG + "-h1", TAG + "-h2"
    for n in (sw, h1, h2):
        add_netns(n)
    d = Daemon(opts, sw)
    d.start()
    log("vswitchd pid %d in namespace %s, control socket %s" % (d.pid, sw, d.socket))
    time.sleep(opts.settle)
    res["rss"]["started"] = dict(d.mem(), fdb_entries=None)
    log("RSS right after start: %s" % fmt_kib(res["rss"]["started"]["VmRSS"]))

    d.ctl("add-br", "br0", "--fdb-max", str(opts.fdb_max), "--ageing", str(opts.ageing))
    if opts.port_type == "afpacket":
        for port, host in (("p1", h1), ("p2", h2)):
            run(nsexec(sw, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0",
                       "netns", host))
            d.ctl("add-port", "br0", port, "--type", "afpacket", "--ifname", port)
        run(nsexec(h1, "ip", "link", "set", "eth0", "address", SRC_H1_MAC))
        run(nsexec(h2, "ip", "link", "set", "eth0", "address", DST_MAC))
        for host in (h1, h2):
            run(nsexec(host, "ip", "link", "set", "eth0", "up"))
    else:
        for port, host, mac in (("p1", h1, SRC_H1_MAC), ("p2", h2, DST_MAC)):
            d.ctl("add-port", "br0", port, "--type", "tap", "--netns", host, "--ifname", "eth0",
                  "--mac", mac)
        for host in (h1, h2):
            run(nsexec(host, "ip", "link", "set", "eth0", "up"))
    # The frames' destination: H2, known statically, so every frame is one
    # FDB lookup and one unicast transmit on p2 (H2's kernel discards it:
    # nothing handles the ethertype).
    d.ctl("fdb-add", "br0", DST_MAC, "p2")
    # wait until both ports are up as the daemon sees them
    deadline = time.monotonic() + 10
    while True:
        doc = d.ctl_json("list-ports", "br0")
        if all(p.get("up") for p in doc) and len(doc) == 2:
            break
        if time.monotonic() > deadline:
            raise BenchError("ports not up within 10 s: %s" % doc)
        time.sleep(0.1)
    return d, h1, h2


def fill(opts, d, tx, res):
    entries = opts.entries
    base = d.learned()
    rate = float(opts.fill_rate)
    chunk = opts.chunk
    st0 = d.stats()
    t_start = time.monotonic()
    sent0 = tx.sent
    retries = 0
    resent = 0
    next_report = 0.1
    i = 0
    deadline = t_start + opts.fill_timeout
    while i < entries:
        n = min(chunk, entries - i)
        want = base + i + n
        tries = 0
        while True:
            tx.send_seq(KNOWN_PREFIX, i, n, rate)
            got = settle_count(d, want)
            if got >= want:
                break
            tries += 1
            retries += 1
            resent += n
            old = rate
            rate = max(float(opts.min_rate), rate * 0.6)
            vlog("chunk %d..%d: %d of %d not learned; sending the chunk again at %.0f frames/s "
                 "(was %.0f)" % (i, i + n, want - got, n, rate, old))
            if tries > opts.max_resend:
                raise BenchError("chunk %d..%d still %d short after %d re-sends (daemon learns "
                                 "too slowly or drops; see stats)" % (i, i + n, want - got, tries - 1))
            if time.monotonic() > deadline:
                raise BenchError("fill did not finish within --fill-timeout %ds" % opts.fill_timeout)
        if tries == 0:
            rate = min(float(opts.max_rate), rate * 1.15)
        i += n
        if i / entries >= next_report or i == entries:
            log("fill: %d/%d learned (%.0f%%), %.1f s, current rate %.0f frames/s"
                % (i, entries, 100.0 * i / entries, time.monotonic() - t_start, rate))
            while next_report <= i / entries:
                next_report += 0.1
        d.check_alive()
    elapsed = time.monotonic() - t_start
    st1 = d.stats()
    total, ports = d.fdb_counts()
    res["fill"] = {
        "entries": entries,
        "learned_before": base,
        "learned_after": ports.get("p1"),
        "fdb_entries_after": total,
        "seconds": elapsed,
        "learned_per_s": entries / elapsed if elapsed > 0 else None,
        "frames_sent": tx.sent - sent0,
        "frames_resent": resent,
        "chunk_retries": retries,
        "chunk": chunk,
        "final_rate": rate,
        "rx_overflow": drop_total(st1, "rx_overflow") - drop_total(st0, "rx_overflow"),
        "fdb_full": drop_total(st1, "fdb_full") - drop_total(st0, "fdb_full"),
        "sender_enobufs": tx.enobufs,
        "counters": stats_delta(st0, st1),
    }
    if (ports.get("p1") or 0) < base + entries:
        raise BenchError("FDB has %s dynamic entries on p1 after the fill, expected %d"
                         % (ports.get("p1"), base + entries))


def steady(opts, d, tx, res):
    entries = opts.entries
    dur = opts.duration
    rate = float(opts.rate)
    batch = 100
    churn = None
    if opts.churn_ageing != 0 and dur >= 4:
        refresh_rate = rate * (1.0 - opts.new_frac)
        cycle = entries / refresh_rate if refresh_rate > 0 else float("inf")
        ag = opts.churn_ageing
        if ag < 0:      # auto: half the refresh cycle, so about half the entries expire
            ag = max(1, int(cycle / 2))
        a, b = opts.churn_window
        churn = {"ageing_s": ag, "from_s": a * dur, "to_s": b * dur, "refresh_cycle_s": cycle,
                 "started": False, "ended": False}

    total, ports = d.fdb_counts()
    cap = None
    if opts.steady_cap == "filled":
        cap = ports.get("p1") or total
        d.ctl("set-br", "br0", "--fdb-max", str(cap))
    else:
        cap = opts.fdb_max
    hwm_reset = d.reset_hwm()
    st0 = d.stats()
    cpu0 = d.cpu_s()
    samples = []
    res["steady"] = {"duration_s": dur, "rate": rate, "new_frac": opts.new_frac, "cap": cap,
                     "steady_cap": opts.steady_cap, "sample_s": opts.sample,
                     "churn": churn, "samples": samples, "hwm_reset": hwm_reset}

    ptr = 0                 # next known address to refresh
    new_ctr = 0             # next new address
    new_acc = 0.0
    sent_known = sent_new = 0
    head_k = tx.dst + KNOWN_PREFIX
    head_n = tx.dst + NEW_PREFIX
    tail = tx.tail

    def sample(t):
        m = d.mem()
        tot, prt = d.fdb_counts()
        st = d.stats()
        s = {"t_s": round(t, 2), "VmRSS": m["VmRSS"], "VmHWM": m["VmHWM"],
             "RssAnon": m.get("RssAnon"), "fdb_entries": tot,
             "frames_sent": sent_known + sent_new,
             "fdb_full": drop_total(st, "fdb_full") - drop_total(st0, "fdb_full"),
             "rx_overflow": drop_total(st, "rx_overflow") - drop_total(st0, "rx_overflow"),
             "churn": bool(churn and churn["started"] and not churn["ended"])}
        samples.append(s)
        vlog("t=%5.1fs VmRSS %d KiB, FDB %d, sent %d" % (t, s["VmRSS"], tot, s["frames_sent"]))
        return s

    log("steady state: %d s at %.0f frames/s (%.0f%% new addresses beyond the cap of %d)%s"
        % (dur, rate, 100 * opts.new_frac, cap,
           (", ageing %d s from %.0f s to %.0f s" % (churn["ageing_s"], churn["from_s"], churn["to_s"]))
           if churn else ""))
    s0 = sample(0.0)
    next_sample = opts.sample
    next_progress = 60.0
    sent = 0
    t0 = time.monotonic()
    while True:
        now = time.monotonic() - t0
        if now >= dur:
            break
        if churn and not churn["started"] and now >= churn["from_s"]:
            d.ctl("set-br", "br0", "--ageing", str(churn["ageing_s"]))
            churn["started"] = True
            log("t=%.0f s: churn: ageing %d s" % (now, churn["ageing_s"]))
        if churn and churn["started"] and not churn["ended"] and now >= churn["to_s"]:
            d.ctl("set-br", "br0", "--ageing", str(opts.ageing))
            churn["ended"] = True
            log("t=%.0f s: churn over: ageing %d s" % (now, opts.ageing))
        if now >= next_sample:
            sample(now)
            next_sample += opts.sample
        if now >= next_progress:
            log("t=%.0f s: VmRSS %s, FDB %d, %d frames sent"
                % (now, fmt_kib(samples[-1]["VmRSS"]), samples[-1]["fdb_entries"], sent))
            next_progress += 60.0
        # one batch: refresh known addresses round-robin, plus a share of new ones
        new_acc += batch * opts.new_frac
        k_new = int(new_acc)
        new_acc -= k_new
        k_known = batch - k_new
        frames = []
        for _ in range(k_known):
            frames.append(head_k + ptr.to_bytes(4, "big") + tail)
            ptr += 1
            if ptr >= entries:
                ptr = 0
        for _ in range(k_new):
            frames.append(head_n + (new_ctr & 0xFFFFFFFF).to_bytes(4, "big") + tail)
            new_ctr += 1
        tx._send_list(frames)
        sent += batch
        sent_known += k_known
        sent_new += k_new
        ahead = t0 + sent / rate - time.monotonic()
        if ahead > 0.0005:
            time.sleep(ahead)
    if churn and churn["started"] and not churn["ended"]:
        d.ctl("set-br", "br0", "--ageing", str(opts.ageing))
        churn["ended"] = True
    elapsed = time.monotonic() - t0
    last = sample(elapsed)
    cpu1 = d.cpu_s()
    st1 = d.stats()
    res["steady"].update({
        "elapsed_s": elapsed,
        "frames_sent": sent_known + sent_new,
        "frames_refresh": sent_known,
        "frames_new": sent_new,
        "achieved_rate": (sent_known + sent_new) / elapsed if elapsed > 0 else None,
        "daemon_cores": ((cpu1 - cpu0) / elapsed) if (cpu0 is not None and cpu1 is not None) else None,
        "counters": stats_delta(st0, st1),
        "counters_total": st1,
    })
    # growth
    rs = [(s["t_s"], s["VmRSS"]) for s in samples]
    start, end = s0["VmRSS"], last["VmRSS"]
    half = [(t, v) for t, v in rs if t >= dur / 2.0]
    slope_all = lsq_slope(rs)
    slope_half = lsq_slope(half)
    g = {
        "rss_start_kib": start,
        "rss_end_kib": end,
        "rss_max_kib": max(v for _, v in rs),
        "rss_min_kib": min(v for _, v in rs),
        "hwm_end_kib": last["VmHWM"],
        "growth_kib": end - start,
        "growth_pct": 100.0 * (end - start) / start if start else None,
        "slope_kib_per_min": slope_all * 60 if slope_all is not None else None,
        "slope_second_half_kib_per_min": slope_half * 60 if slope_half is not None else None,
        "second_half_samples": len(half),
        "max_slope_kib_per_min": opts.max_slope,
    }
    # A spike that went away again is not growth, but it is worth saying.
    peak = max(samples, key=lambda s: s["VmRSS"])
    if peak["VmRSS"] - max(start, end) > max(1024, start // 100):
        g["transient_peak_kib"] = peak["VmRSS"] - start
        g["transient_peak_t_s"] = peak["t_s"]
    if g["slope_second_half_kib_per_min"] is None:
        g["verdict"] = "unknown"
    elif g["slope_second_half_kib_per_min"] > opts.max_slope:
        g["verdict"] = "growing"
    else:
        g["verdict"] = "no growth"
    res["steady"]["growth"] = g


def fdb_show_check(opts, d, res):
    """Optional: `fdb-show --json` once, compares the listing with the counter,
    reports what the big listing did to RSS, and probes how long other control
    requests (`list-br`, which needs the same tables as the data plane) had to
    wait while it was being built."""
    before = d.mem()
    total, _ = d.fdb_counts()
    d.reset_hwm()
    outfile = "/tmp/%s-fdb-show.json" % TAG
    REG.files.append(outfile)
    cmd = [os.path.join(opts.bin_dir, "vswitchctl"), "--socket", d.socket, "--json",
           "fdb-show", "br0"]
    vlog("& " + " ".join(cmd))
    t0 = time.monotonic()
    with open(outfile, "wb") as outf:
        p = subprocess.Popen(cmd, stdout=outf, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    REG.add_proc(p, "vswitchctl fdb-show")
    probe_max = 0.0
    probes = 0
    try:
        while True:
            # Reaped with wait4 for the client's own peak RSS.
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                client_peak = ru.ru_maxrss
                break
            if time.monotonic() - t0 > 300:
                raise BenchError("fdb-show did not finish within 300 s")
            a = time.monotonic()
            d.ctl("list-br", check=False, timeout=300)
            probe_max = max(probe_max, time.monotonic() - a)
            probes += 1
            time.sleep(0.05)
        secs = time.monotonic() - t0
        err = p.stderr.read().decode(errors="replace")
        p.stderr.close()
    finally:
        REG.kill_proc(p, "vswitchctl fdb-show", grace=2.0)
    if p.returncode != 0:
        raise BenchError("fdb-show failed (%s): %s" % (p.returncode, err.strip()))
    size = os.path.getsize(outfile)
    try:
        with open(outfile) as f:
            n = len(json.load(f))
    except ValueError:
        n = None
    os.unlink(outfile)
    REG.files.remove(outfile)
    time.sleep(opts.settle)
    after = d.mem()
    res["fdb_show_check"] = {"counter": total, "listed": n, "seconds": secs,
                             "output_bytes": size,
                             "rss_before_kib": before["VmRSS"], "rss_after_kib": after["VmRSS"],
                             "hwm_during_kib": after["VmHWM"],
                             "client_peak_rss_kib": client_peak,
                             "control_probe_max_wait_s": probe_max, "control_probes": probes}
    log("fdb-show: %s entries listed (counter %d) in %.1f s; daemon VmRSS %s -> %s, peak %s; "
        "vswitchctl peak RSS %s; longest list-br wait meanwhile %.2f s"
        % (n, total, secs, fmt_kib(before["VmRSS"]), fmt_kib(after["VmRSS"]),
           fmt_kib(after["VmHWM"]), fmt_kib(client_peak), probe_max))


def run_benchmark(opts, res):
    d = None
    try:
        d, h1, h2 = setup(opts, res)
        tx = Sender(h1, "eth0")
        # Warm-up: one source address, so the buffers of the data path are
        # touched before the "empty" figure (which is what bytes/entry is
        # measured against).
        tx.send_mac(WARM_MAC, opts.warmup, rate=opts.fill_rate)
        time.sleep(opts.settle)
        total, ports = d.fdb_counts()
        res["rss"]["empty"] = dict(d.mem(), fdb_entries=total)
        log("RSS with an empty bridge (2 ports, %d warm-up frames): %s"
            % (opts.warmup, fmt_kib(res["rss"]["empty"]["VmRSS"])))

        log("filling the FDB with %d addresses" % opts.entries)
        fill(opts, d, tx, res)
        time.sleep(opts.settle)
        total, ports = d.fdb_counts()
        res["rss"]["full"] = dict(d.mem(), fdb_entries=total)
        e, f = res["rss"]["empty"]["VmRSS"], res["rss"]["full"]["VmRSS"]
        res["bytes_per_entry"] = (f - e) * 1024.0 / opts.entries
        log("RSS with %d entries: %s (+%s, %.1f bytes/entry); filled in %.1f s"
            % (total, fmt_kib(f), fmt_kib(f - e), res["bytes_per_entry"], res["fill"]["seconds"]))

        if opts.duration > 0:
            steady(opts, d, tx, res)
            g = res["steady"]["growth"]
            log(verdict_line(opts, g))
        if opts.check_fdb_show:
            fdb_show_check(opts, d, res)
        res["fdb_entries_end"] = d.fdb_counts()[0]
        res["rss"]["end"] = dict(d.mem(), fdb_entries=res["fdb_entries_end"])
    except BenchError as e:
        rc = d.died() if d is not None else None
        if rc is not None:
            raise BenchError("vswitchd died (exit status %s) during the benchmark; last error: "
                             "%s\nlog tail:\n%s" % (rc, str(e).splitlines()[0], tail_file(d.log)))
        raise
    finally:
        if d is not None:
            if benchlib.VERBOSE and d.p is not None and d.p.poll() is None:
                cp = d.ctl("stats", check=False)
                vlog("vswitchd stats:\n" + (cp.stdout or cp.stderr))
            d.stop()
            res["daemon_exit_status"] = d.exit_status
            if d.exit_status not in (0, None):
                res["notes"].append("vswitchd exit status after SIGTERM: %s (contract: 0)"
                                    % d.exit_status)
            if d.exit_status is not None and os.path.exists(d.socket):
                res["notes"].append("vswitchd left its socket behind after SIGTERM")


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------

def fmt_kib(k):
    if k is None:
        return "-"
    sign = "-" if k < 0 else ""
    a = abs(k)
    if a >= 1024 * 10:
        return "%s%.1f MiB" % (sign, a / 1024.0)
    if a >= 1024:
        return "%s%.2f MiB" % (sign, a / 1024.0)
    return "%s%d KiB" % (sign, a)


def fmt_int(n):
    return "-" if n is None else "{:,}".format(n)


def verdict_line(opts, g):
    line = ("growth over %d s: %+d KiB (%.1f %%); second-half slope %+.1f KiB/min "
            "(limit %g) -> %s"
            % (opts.duration, g["growth_kib"], g["growth_pct"] or 0.0,
               g["slope_second_half_kib_per_min"] or 0.0, opts.max_slope,
               {"no growth": "no growth", "growing": "GROWING", "unknown": "too few samples"}
               [g["verdict"]]))
    if g.get("transient_peak_kib"):
        line += "; transient peak %+d KiB at t=%.0f s" % (g["transient_peak_kib"],
                                                         g["transient_peak_t_s"])
    return line


def table(rows, right=()):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    out = []
    for j, r in enumerate(rows):
        out.append("  ".join(str(c).rjust(widths[i]) if i in right else str(c).ljust(widths[i])
                             for i, c in enumerate(r)).rstrip())
        if j == 0:
            out.append("-" * len(out[0]))
    return out


def print_report(opts, res, out=sys.stdout):
    P = lambda *a: print(*a, file=out)
    st = res.get("steady")
    P("fdbmem: vswitchd memory with a large FDB -- %s entries, %s ports, --fdb-max %d, "
      "ageing %d s, %s steady state"
      % (fmt_int(opts.entries), opts.port_type, opts.fdb_max, opts.ageing,
         ("%d s" % opts.duration) if opts.duration else "no"))
    P()
    rows = [["phase", "FDB entries", "VmRSS", "VmHWM", "RssAnon", "RssFile"]]
    labels = [("started", "daemon started, no bridge"),
              ("empty", "empty bridge, 2 ports, warmed up"),
              ("full", "FDB filled")]
    for key, label in labels:
        m = res["rss"].get(key)
        if m:
            rows.append([label, fmt_int(m.get("fdb_entries")), fmt_kib(m["VmRSS"]),
                         fmt_kib(m["VmHWM"]), fmt_kib(m.get("RssAnon")), fmt_kib(m.get("RssFile"))])
    if st and st.get("samples"):
        s0, s1 = st["samples"][0], st["samples"][-1]
        smax = max(st["samples"], key=lambda s: s["VmRSS"])
        rows.append(["steady state start", fmt_int(s0["fdb_entries"]), fmt_kib(s0["VmRSS"]),
                     fmt_kib(s0["VmHWM"]), fmt_kib(s0.get("RssAnon")), ""])
        rows.append(["steady state max (t=%.0f s)" % smax["t_s"], fmt_int(smax["fdb_entries"]),
                     fmt_kib(smax["VmRSS"]), "", fmt_kib(smax.get("RssAnon")), ""])
        rows.append(["steady state end", fmt_int(s1["fdb_entries"]), fmt_kib(s1["VmRSS"]),
                     fmt_kib(s1["VmHWM"]), fmt_kib(s1.get("RssAnon")), ""])
    for line in table(rows, right={1, 2, 3, 4, 5}):
        P(line)
    P()
    if "bytes_per_entry" in res:
        e, f = res["rss"]["empty"]["VmRSS"], res["rss"]["full"]["VmRSS"]
        P("FDB memory: %s for %s entries = %.1f bytes/entry  ((RSS_full - RSS_empty) / entries)"
          % (fmt_kib(f - e), fmt_int(opts.entries), res["bytes_per_entry"]))
        P("VmHWM after the fill: %s (peak includes the table's last resize, when old and new "
          "tables coexist)" % fmt_kib(res["rss"]["full"]["VmHWM"]))
    fl = res.get("fill")
    if fl:
        P("fill: %s addresses learned in %.1f s (%s/s); %s frames sent, %s re-sent in %d chunk "
          "retr%s; rx_overflow %s, fdb_full %s; sender got ENOBUFS (frame sent again) %s times"
          % (fmt_int(fl["entries"]), fl["seconds"], fmt_int(int(fl["learned_per_s"] or 0)),
             fmt_int(fl["frames_sent"]), fmt_int(fl["frames_resent"]), fl["chunk_retries"],
             "y" if fl["chunk_retries"] == 1 else "ies", fmt_int(fl["rx_overflow"]),
             fmt_int(fl["fdb_full"]), fmt_int(fl["sender_enobufs"])))
    if st:
        P()
        ch = st.get("churn")
        if "elapsed_s" not in st:
            P("steady state ABORTED (see the error below); samples taken so far:")
            st = dict(st, elapsed_s=(st["samples"][-1]["t_s"] if st["samples"] else 0))
        P("steady state: %.0f s at %s frames/s (target %s): %.0f %% refresh of the learned "
          "addresses round-robin, %.0f %% new addresses beyond the cap"
          % (st.get("elapsed_s", 0), fmt_int(int(st.get("achieved_rate") or 0)),
             fmt_int(int(st["rate"])), 100 * (1 - st["new_frac"]), 100 * st["new_frac"]))
        P("  cap: --fdb-max %s (%s)" % (fmt_int(st["cap"]),
          "set to the learned count at the start, so the table is full"
          if st["steady_cap"] == "filled" else "as configured"))
        if ch:
            P("  churn: ageing %d s from t=%.0f s to t=%.0f s (refresh cycle %.1f s), "
              "then %d s again" % (ch["ageing_s"], ch["from_s"], ch["to_s"],
                                   ch["refresh_cycle_s"], opts.ageing))
        P("  daemon CPU: %.2f cores; frames sent %s (%s refresh, %s new)"
          % (st.get("daemon_cores") or 0.0, fmt_int(st.get("frames_sent")),
             fmt_int(st.get("frames_refresh")), fmt_int(st.get("frames_new"))))
        P()
        rows = [["t (s)", "VmRSS (KiB)", "vs start", "FDB entries", "fdb_full", "rx_overflow", ""]]
        base = st["samples"][0]["VmRSS"]
        for s in st["samples"]:
            rows.append(["%.0f" % s["t_s"], fmt_int(s["VmRSS"]), "%+d" % (s["VmRSS"] - base),
                         fmt_int(s["fdb_entries"]), fmt_int(s["fdb_full"]),
                         fmt_int(s["rx_overflow"]), "churn" if s["churn"] else ""])
        for line in table(rows, right={0, 1, 2, 3, 4, 5}):
            P("  " + line)
        P()
        P("  daemon counters over the steady state (vswitchctl stats, differences):")
        rows = [["port", "rx_packets", "tx_packets", "drops (non-zero)"]]
        for port, c in sorted(st.get("counters", {}).items()):
            drops = ", ".join("%s %s" % (r, fmt_int(n)) for r, n in sorted(c["drops"].items()) if n)
            rows.append([port, fmt_int(c["rx_packets"]), fmt_int(c["tx_packets"]), drops or "-"])
        for line in table(rows, right={1, 2}):
            P("  " + line)
        g = st.get("growth")
        if g:
            P()
            P("  RSS start %s, end %s, max %s, min %s; slope over the whole run %+.1f KiB/min, "
              "over the second half %+.1f KiB/min (%d samples)"
              % (fmt_kib(g["rss_start_kib"]), fmt_kib(g["rss_end_kib"]), fmt_kib(g["rss_max_kib"]),
                 fmt_kib(g["rss_min_kib"]), g["slope_kib_per_min"] or 0.0,
                 g["slope_second_half_kib_per_min"] or 0.0, g["second_half_samples"]))
            if st.get("hwm_reset"):
                P("  VmHWM since the steady state started: %s" % fmt_kib(g["hwm_end_kib"]))
    fc = res.get("fdb_show_check")
    if fc:
        P()
        P("fdb-show check: %s entries listed, counter %s, %.1f s, %s of JSON; daemon VmRSS %s "
          "before, %s after, peak while listing %s; vswitchctl peak RSS %s; longest wait of "
          "a concurrent `list-br` %.2f s (%d probes)"
          % (fmt_int(fc["listed"]), fmt_int(fc["counter"]), fc["seconds"],
             fmt_kib(fc["output_bytes"] // 1024), fmt_kib(fc["rss_before_kib"]),
             fmt_kib(fc["rss_after_kib"]), fmt_kib(fc["hwm_during_kib"]),
             fmt_kib(fc["client_peak_rss_kib"]),
             fc["control_probe_max_wait_s"], fc["control_probes"]))
    P()
    for n in res["notes"]:
        P("note: " + n)
    if res.get("background_cores") is not None and res["background_cores"] > 0.15:
        P("WARNING: %.2f cores were busy before the benchmark started (other load); the "
          "fill rate and CPU figures are affected, memory figures much less." % res["background_cores"])
    if res.get("error"):
        P("ERROR: " + res["error"].splitlines()[0])
    if st and st.get("growth"):
        P(verdict_line(opts, st["growth"]))


# --------------------------------------------------------------------------

def parse_window(s):
    try:
        a, b = (float(x) for x in s.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected A-B with fractions of --duration, e.g. 0.2-0.4")
    if not (0 <= a < b <= 1):
        raise argparse.ArgumentTypeError("need 0 <= A < B <= 1")
    return (a, b)


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="Memory benchmark for vswitchd: RSS when idle, with an FDB of --entries "
                    "learned addresses (and bytes per entry), and RSS growth over a "
                    "--duration-second steady state with traffic refreshing the table, new "
                    "addresses beyond its cap, and a window of short ageing (churn).",
        epilog="Quick try: --entries 100000 --duration 20.  Runs as root; everything lives in "
               "namespaces fm<PID>-{sw,h1,h2} and is removed on exit (also on errors and "
               "Ctrl-C).  The table goes to stdout (or one JSON document with --json), "
               "progress to stderr.  Exit status: 0 ok, 1 error, 2 verdict GROWING, "
               "130 interrupted.  See README.md next to this file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--entries", type=int, default=1000000,
                    help="distinct source MACs to learn (at most the --fdb-max cap)")
    ap.add_argument("--duration", type=int, default=300,
                    help="steady-state seconds with RSS sampling (0 = skip the steady state)")
    ap.add_argument("--sample", type=float, default=0,
                    help="RSS sampling interval (s); 0 = 10 s, or --duration/10 for runs "
                         "shorter than 100 s")
    ap.add_argument("--rate", type=int, default=50000,
                    help="steady-state frames per second (all 60-byte frames)")
    ap.add_argument("--new-frac", type=float, default=0.1,
                    help="share of steady-state frames from new addresses beyond the cap "
                         "(each one should be refused: fdb_full)")
    ap.add_argument("--steady-cap", choices=("filled", "keep"), default="filled",
                    help="'filled': before the steady state, lower --fdb-max to the learned "
                         "count so the table is exactly full and every new address is refused; "
                         "'keep': leave --fdb-max as configured (new addresses are learned "
                         "until it is reached)")
    ap.add_argument("--churn-ageing", type=int, default=-1,
                    help="ageing time (s) during the churn window; -1 = half the time one "
                         "round of refreshes takes (so about half the entries age out and are "
                         "replaced), 0 = no churn window")
    ap.add_argument("--churn-window", type=parse_window, default="0.2-0.4", metavar="A-B",
                    help="churn window as fractions of --duration")
    ap.add_argument("--max-slope", type=float, default=16.0,
                    help="verdict: the second-half RSS slope (KiB/min) above which the run "
                         "counts as growing")
    ap.add_argument("--fdb-max", type=int, default=FDB_HARD_MAX,
                    help="the bridge's --fdb-max (the daemon's hard cap is %d)" % FDB_HARD_MAX)
    ap.add_argument("--ageing", type=int, default=86400,
                    help="the bridge's ageing time (s), long so nothing ages outside the churn "
                         "window")
    ap.add_argument("--port-type", choices=("afpacket", "tap"), default="afpacket",
                    help="'afpacket': veth pairs, switch ends attached with --type afpacket; "
                         "'tap': TAP ports moved into the host namespaces (--netns)")
    ap.add_argument("--fill-rate", type=int, default=150000,
                    help="initial fill rate (frames/s); adapts between --min-rate and --max-rate")
    ap.add_argument("--min-rate", type=int, default=5000, help="lowest fill rate (frames/s)")
    ap.add_argument("--max-rate", type=int, default=400000, help="highest fill rate (frames/s)")
    ap.add_argument("--chunk", type=int, default=65536,
                    help="addresses per fill chunk; a chunk that comes up short is sent again")
    ap.add_argument("--max-resend", type=int, default=8, help="re-sends of one chunk before giving up")
    ap.add_argument("--fill-timeout", type=int, default=900, help="give up filling after this (s)")
    ap.add_argument("--warmup", type=int, default=20000,
                    help="frames from one address before the empty-bridge RSS is taken")
    ap.add_argument("--settle", type=float, default=2.0, help="pause before each RSS reading (s)")
    ap.add_argument("--check-fdb-show", action="store_true",
                    help="at the end, list the FDB once with `fdb-show --json`, compare with the "
                         "counter and report what the big listing did to RSS")
    ap.add_argument("--json", action="store_true",
                    help="print one JSON document on stdout instead of the table")
    ap.add_argument("--bin-dir", default=os.path.join(REPO_ROOT, "target", "release"),
                    help="where vswitchd and vswitchctl are")
    ap.add_argument("--workers", type=int, default=0, help="pass --workers N to vswitchd (0: its default)")
    ap.add_argument("--vswitchd-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for vswitchd (repeatable), e.g. --vswitchd-arg=--busy-poll-us=0")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every command and sample")
    opts = ap.parse_args(argv)
    if not (1 <= opts.fdb_max <= FDB_HARD_MAX):
        ap.error("--fdb-max must be 1..%d" % FDB_HARD_MAX)
    if not (1 <= opts.entries < opts.fdb_max) or opts.entries > 0xFFFFFFFF:
        ap.error("--entries must be at least 1 and below --fdb-max (one entry is the warm-up "
                 "address)")
    if not (0 <= opts.duration <= 7200):
        ap.error("--duration must be within 0..7200")
    if not opts.sample:
        opts.sample = 10.0 if opts.duration >= 100 else max(0.5, opts.duration / 10.0)
    if not (0.5 <= opts.sample <= 600):
        ap.error("--sample must be within 0.5..600")
    if not (1 <= opts.rate <= 2000000) or not (1 <= opts.min_rate <= opts.fill_rate <= opts.max_rate):
        ap.error("--rate 1..2000000; --min-rate <= --fill-rate <= --max-rate")
    if not (0 <= opts.new_frac <= 1):
        ap.error("--new-frac must be within 0..1")
    if not (1 <= opts.ageing <= 1000000) or opts.churn_ageing > 1000000:
        ap.error("ageing times are 1..1000000 s")
    if opts.chunk < 1 or opts.warmup < 1:
        ap.error("--chunk and --warmup must be positive")
    return opts


def main(argv):
    opts = parse_args(argv)
    benchlib.setup("fdbmem", opts.verbose)
    if os.geteuid() != 0:
        sys.exit("fdbmem must run as root (it creates network namespaces): "
                 "sudo python3 %s" % " ".join([sys.argv[0]] + argv))
    missing = [t for t in ("ip", "sysctl") if not shutil.which(t)]
    if missing:
        sys.exit("missing tools: %s (install iproute2, procps)" % ", ".join(missing))
    bins = [os.path.join(opts.bin_dir, b) for b in ("vswitchd", "vswitchctl")]
    absent = [b for b in bins if not os.access(b, os.X_OK)]
    if absent:
        sys.exit("vswitch binaries not found: %s\nBuild them first:\n"
                 "    cd %s && cargo build --release -p vswitch-control\nor point --bin-dir at them."
                 % (", ".join(absent), REPO_ROOT))
    opts.bin_dir = os.path.abspath(opts.bin_dir)

    benchlib.interrupt_on_signals()

    res = {
        "benchmark": "vswitch fdbmem",
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                 "python": platform.python_version()},
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(opts).items()},
        "rss": {},
        "notes": [],
        "error": None,
    }
    rc = 0
    try:
        res["background_cores"] = background_load(1.0)
        if res["background_cores"] > 0.15:
            log("warning: %.2f cores busy before the benchmark started (other load on the "
                "machine?)" % res["background_cores"])
        run_benchmark(opts, res)
    except BenchError as e:
        log("error: %s" % e)
        res["error"] = str(e)
        rc = 1
    except Interrupted as e:
        log("interrupted (%s); cleaning up" % e)
        rc = 130
    finally:
        benchlib.final_cleanup()
    if rc == 130:
        return rc
    g = res.get("steady", {}).get("growth")
    if opts.json:
        res["unit_note"] = "RSS figures are KiB (from /proc/PID/status); slopes KiB/min"
        json.dump(res, sys.stdout, indent=2)
        print()
    else:
        print_report(opts, res)
    if rc == 0 and g and g["verdict"] == "growing":
        rc = 2
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
