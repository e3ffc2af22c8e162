"""Shared plumbing of the network benchmarks (netbench.py, fdbmem.py):
logging, bounded commands, network namespaces, CPU accounting from /proc, and
a registry of everything a run creates so that it is removed whatever happens.
Standard library only.
"""

import os
import signal
import subprocess
import sys

_PREFIX = "bench"
VERBOSE = False


def setup(prefix, verbose=False):
    """Names the log prefix and turns command logging on or off."""
    global _PREFIX, VERBOSE
    _PREFIX = prefix
    VERBOSE = verbose


def log(msg):
    print("[%s] %s" % (_PREFIX, msg), file=sys.stderr, flush=True)


def vlog(msg):
    if VERBOSE:
        log(msg)


class BenchError(Exception):
    pass


class Interrupted(BaseException):
    """Raised from the signal handler so that every finally block runs."""


def interrupt_on_signals():
    """SIGINT, SIGTERM and SIGHUP raise Interrupted, so that every finally
    block (and with it the cleanup) runs."""
    def on_signal(signum, frame):
        raise Interrupted(signal.Signals(signum).name)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)


class Registry:
    """Process and resource bookkeeping: everything a run creates is
    registered here and removed by cleanup(), whatever happens."""

    def __init__(self):
        self.procs = {}        # pid -> (Popen, description)
        self.netns = []        # namespace names, in creation order
        self.files = []        # socket/log files to remove
        self.sockets = []      # our own sockets, closed first

    def add_proc(self, p, desc):
        self.procs[p.pid] = (p, desc)

    def forget_proc(self, p):
        self.procs.pop(p.pid, None)

    def kill_proc(self, p, desc, sig=signal.SIGTERM, grace=5.0):
        """Stop one process by PID: signal, wait, then SIGKILL."""
        if p.poll() is None:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log("%s (pid %d) did not exit after %s, sending SIGKILL" % (desc, p.pid, sig.name))
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    log("%s (pid %d) still alive after SIGKILL" % (desc, p.pid))
        self.forget_proc(p)
        return p.returncode

    def cleanup(self, grace=3.0):
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass
        self.sockets.clear()
        for pid, (p, desc) in list(self.procs.items()):
            self.kill_proc(p, desc, grace=grace)
        for ns in reversed(list(self.netns)):
            del_netns(ns)
        for f in list(self.files):
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass
            except OSError as e:
                log("could not remove %s: %s" % (f, e))
        self.files.clear()


REG = Registry()


def final_cleanup():
    """The scripts' last act: ignore further signals (a second Ctrl-C must
    not cut the cleanup short), then remove everything registered."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    REG.cleanup()


def run(cmd, timeout=15, check=True, capture=True):
    """Run a short command, bounded in time. Returns CompletedProcess."""
    vlog("$ " + " ".join(cmd))
    try:
        cp = subprocess.run(cmd, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                            stderr=subprocess.PIPE, timeout=timeout, text=True,
                            stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchError("timed out after %ss: %s" % (timeout, " ".join(cmd)))
    if check and cp.returncode != 0:
        raise BenchError("command failed (%d): %s\n%s" % (cp.returncode, " ".join(cmd),
                                                        (cp.stderr or "").strip()))
    return cp


def nsexec(ns, *cmd):
    return ["ip", "netns", "exec", ns] + list(cmd)


def add_netns(name):
    """A namespace with loopback up and IPv6 off (no DAD or router
    solicitations: the only frames are the benchmark's)."""
    run(["ip", "netns", "add", name])
    REG.netns.append(name)
    run(nsexec(name, "ip", "link", "set", "lo", "up"))
    for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
        run(nsexec(name, "sysctl", "-q", "-w", key + "=1"), check=False)


def del_netns(name):
    cp = run(["ip", "netns", "del", name], check=False)
    if cp.returncode != 0 and "No such file" not in (cp.stderr or ""):
        log("could not delete namespace %s: %s" % (name, (cp.stderr or "").strip()))
    if name in REG.netns:
        REG.netns.remove(name)


def tail_file(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------
# CPU accounting
# --------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def system_cpu_s():
    """(busy, steal) CPU seconds of the whole machine from one read of
    /proc/stat. Busy is user+nice+system+irq+softirq (guest time is inside
    user; idle and iowait are not busy). Steal is the time the hypervisor ran
    something else while this VM's vCPUs wanted to run: a measurement it
    touched is noisy."""
    with open("/proc/stat") as f:
        parts = f.readline().split()
    assert parts[0] == "cpu"
    v = [int(x) for x in parts[1:9]] + [0]
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def proc_cpu_s(pid):
    """utime+stime (all threads) of a process, in seconds, or None if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK
