#!/usr/bin/env python3
"""Side-by-side network benchmark: Linux kernel bridge and router vs vswitch.

Builds the same two-host topology several ways (kernel bridge, vswitch with TAP
ports, vswitch with AF_PACKET ports, VXLAN, and routed with SNAT: a kernel
router namespace vs vswitch's router), measures TCP throughput, 64-byte UDP
frame rate, round-trip latency and the switch's CPU cost, alternating the
scenarios round by round so that drift cancels, and reports medians and
vswitch/kernel ratios.

Everything runs inside network namespaces this script creates (addresses in
10.201.0.0/16 and 10.202.0.0/16, no routes out), everything is bounded in time, and everything
created is removed again on exit, on error and on Ctrl-C.

Run as root:  sudo python3 benches/netbench/netbench.py [--rounds 3] [--duration 5]
See README.md next to this file.  Python 3 standard library only.
"""

import argparse
import datetime
import json
import re
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PID = os.getpid()
TAG = "nb%d" % PID          # prefix of every name we create (namespaces, sockets)
IPERF_PORT = 5201
H1_IP = "10.201.0.1"
H2_IP = "10.201.0.2"
PREFIX_LEN = 24

from benchlib import (REG, BenchError, Interrupted, add_netns, del_netns, log, nsexec,  # noqa: F401
                      proc_cpu_s, run, system_cpu_s, tail_file, vlog)
import benchlib


def spawn(cmd, desc, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL):
    """Start a background process in its own session (so a terminal Ctrl-C does
    not hit it behind our back) and register it for cleanup."""
    vlog("& " + " ".join(cmd))
    p = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, stdin=stdin,
                         start_new_session=True)
    REG.add_proc(p, desc)
    return p


class Measured:
    """A child process whose exit is reaped with wait4() so that its own CPU
    time (utime+stime from rusage) is known exactly.  `ip netns exec` execs the
    command, so the child's PID is the measured program itself."""

    def __init__(self, cmd, desc):
        self.desc = desc
        self.p = spawn(cmd, desc)
        self.out = []
        self.err = []
        self.t_out = threading.Thread(target=self._drain, args=(self.p.stdout, self.out), daemon=True)
        self.t_err = threading.Thread(target=self._drain, args=(self.p.stderr, self.err), daemon=True)
        self.t_out.start()
        self.t_err.start()
        self.cpu_s = None
        self.returncode = None

    @staticmethod
    def _drain(f, acc):
        for chunk in iter(lambda: f.read(65536), b""):
            acc.append(chunk)
        f.close()

    def wait(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(self.p.pid, os.WNOHANG)
            if pid == self.p.pid:
                break
            if time.monotonic() > deadline:
                REG.kill_proc(self.p, self.desc, grace=2.0)
                raise BenchError("%s timed out after %.0fs" % (self.desc, timeout))
            time.sleep(0.02)
        self.returncode = os.waitstatus_to_exitcode(status)
        self.p.returncode = self.returncode   # we reaped it; tell Popen
        REG.forget_proc(self.p)
        self.cpu_s = ru.ru_utime + ru.ru_stime
        self.t_out.join(5)
        self.t_err.join(5)
        return self.returncode

    def stdout(self):
        return b"".join(self.out).decode(errors="replace")

    def stderr(self):
        return b"".join(self.err).decode(errors="replace")


# --------------------------------------------------------------------------
# CPU accounting
# --------------------------------------------------------------------------

class CpuWindow:
    """Measures, over an interval: total system busy CPU, and (if the scenario
    has a switch process) that process's CPU."""

    def __init__(self, switch_pid):
        self.switch_pid = switch_pid

    def __enter__(self):
        self.t0 = time.monotonic()
        self.sys0, self.steal0 = system_cpu_s()
        self.sw0 = proc_cpu_s(self.switch_pid) if self.switch_pid else None
        return self

    def __exit__(self, *exc):
        self.t1 = time.monotonic()
        self.sys1, self.steal1 = system_cpu_s()
        self.sw1 = proc_cpu_s(self.switch_pid) if self.switch_pid else None
        return False

    @property
    def wall(self):
        return self.t1 - self.t0

    def result(self, endpoint_cpu_s):
        """Return dict of CPU figures in 'cores' (CPU-seconds per second)."""
        sys_busy = self.sys1 - self.sys0
        other = max(0.0, sys_busy - endpoint_cpu_s)
        r = {
            "wall_s": self.wall,
            "system_busy_cores": sys_busy / self.wall,
            "endpoints_cores": endpoint_cpu_s / self.wall,
            "system_minus_endpoints_cores": other / self.wall,
            "steal_cores": (self.steal1 - self.steal0) / self.wall,
        }
        if self.sw0 is not None and self.sw1 is not None:
            r["daemon_cores"] = (self.sw1 - self.sw0) / self.wall
        return r


# --------------------------------------------------------------------------
# Namespace / link helpers
# --------------------------------------------------------------------------

def host_addr(ns, ifname, ip, prefix_len=PREFIX_LEN):
    run(nsexec(ns, "ip", "addr", "add", "%s/%d" % (ip, prefix_len), "dev", ifname))
    run(nsexec(ns, "ip", "link", "set", ifname, "up"))


def set_offloads(ns, ifname, on):
    if not shutil.which("ethtool"):
        return
    state = "on" if on else "off"
    run(nsexec(ns, "ethtool", "-K", ifname, "tso", state, "gso", state, "gro", state),
        check=False)


def wait_reachable(src_ns, dst_ip, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cp = run(nsexec(src_ns, "ping", "-n", "-q", "-c", "1", "-W", "1", dst_ip),
                 check=False, timeout=5)
        if cp.returncode == 0:
            return
        time.sleep(0.2)
    raise BenchError("%s not reachable from %s within %.0fs" % (dst_ip, src_ns, timeout))


# --------------------------------------------------------------------------
# Scenarios.  Each scenario builds the topology
#     H1 (eth0 10.201.0.1)  <-- switch -->  H2 (eth0 10.201.0.2)
# (the routed ones: H1 10.202.1.2 <-- router+SNAT --> H2 10.202.2.2)
# in the Env it is given.  To add a row, write a setup function that fills the
# Env's h1/h2 namespaces and addresses, and append a Scenario to SCENARIOS with
# `baseline` naming the kernel scenario it is compared against.
# --------------------------------------------------------------------------

class Env:
    def __init__(self, name):
        self.name = name
        self.h1 = "%s-%s-h1" % (TAG, name)
        self.h2 = "%s-%s-h2" % (TAG, name)
        self.sw = "%s-%s-sw" % (TAG, name)
        self.h1_ip = H1_IP
        self.h2_ip = H2_IP
        self.h2_if = "eth0"         # H2's interface toward the switch (counters)
        self.switch_pid = None      # PID whose CPU is "the switch", if any
        self.daemon = None          # Popen of vswitchd
        self.daemon_log = None
        self.daemon_env = []        # VAR=VALUE settings for vswitchd
        self.socket = None
        self.namespaces = []
        self.tap_hosts = []         # namespaces holding daemon-created TAPs
        self.notes = []
        self.perf_tag = None        # --perf: file name stem for the test running now
        self.profile = None         # --perf: the last test's breakdown (prof_* keys)

    def ns(self, name):
        add_netns(name)
        self.namespaces.append(name)


def veth_into(sw_ns, sw_if, host_ns, host_if="eth0"):
    """A veth pair created inside the switch namespace, peer moved to host_ns.
    Nothing is ever created in the caller's namespace."""
    run(nsexec(sw_ns, "ip", "link", "add", sw_if, "type", "veth",
               "peer", "name", host_if, "netns", host_ns))
    run(nsexec(sw_ns, "ip", "link", "set", sw_if, "up"))


def kernel_bridge(env, opts, hosts):
    """A Linux bridge br0 (STP off) in the switch namespace, with a veth
    from each (switch interface, host namespace) pair in `hosts`."""
    for n in (env.sw, env.h1, env.h2):
        env.ns(n)
    run(nsexec(env.sw, "ip", "link", "add", "br0", "type", "bridge", "stp_state", "0"))
    run(nsexec(env.sw, "ip", "link", "set", "br0", "up"))
    for sw_if, host_ns in hosts:
        veth_into(env.sw, sw_if, host_ns)
        run(nsexec(env.sw, "ip", "link", "set", sw_if, "master", "br0"))
        if opts.no_offload:
            set_offloads(env.sw, sw_if, False)
            set_offloads(host_ns, "eth0", False)


def setup_kernel_bridge(env, opts):
    kernel_bridge(env, opts, (("p1", env.h1), ("p2", env.h2)))
    host_addr(env.h1, "eth0", env.h1_ip)
    host_addr(env.h2, "eth0", env.h2_ip)
    env.notes.append("veth pairs into a Linux bridge (STP off) in a switch namespace")


def vswitchctl(env, opts, *args, timeout=10, check=True):
    return run([os.path.join(opts.bin_dir, "vswitchctl"), "--socket", env.socket] + list(args),
               timeout=timeout, check=check)


def start_vswitchd(env, opts):
    env.socket = "/tmp/%s-%s.sock" % (TAG, env.name)
    env.daemon_log = "/tmp/%s-%s-vswitchd.log" % (TAG, env.name)
    REG.files.extend([env.socket, env.socket + ".lock", env.daemon_log])
    cmd = nsexec(env.sw, *(["env"] + env.daemon_env if env.daemon_env else []),
                 os.path.join(opts.bin_dir, "vswitchd"), "--socket", env.socket)
    if opts.workers:
        cmd += ["--workers", str(opts.workers)]
    cmd += opts.vswitchd_arg
    logf = open(env.daemon_log, "wb")
    try:
        env.daemon = spawn(cmd, "vswitchd[%s]" % env.name, stdout=logf, stderr=subprocess.STDOUT)
    finally:
        logf.close()
    env.switch_pid = env.daemon.pid     # ip netns exec execs vswitchd: same PID
    deadline = time.monotonic() + 10
    while True:
        if env.daemon.poll() is not None:
            raise BenchError("vswitchd exited with status %s during start-up; log:\n%s"
                             % (env.daemon.returncode, tail_file(env.daemon_log)))
        if os.path.exists(env.socket):
            cp = vswitchctl(env, opts, "list-br", check=False)
            if cp.returncode == 0:
                break
        if time.monotonic() > deadline:
            raise BenchError("vswitchd socket %s not ready within 10s; log:\n%s"
                             % (env.socket, tail_file(env.daemon_log)))
        time.sleep(0.1)


def stop_vswitchd(env):
    if env.daemon is None:
        return
    rc = REG.kill_proc(env.daemon, "vswitchd[%s]" % env.name, sig=signal.SIGTERM, grace=5.0)
    if rc != 0:
        log("note: vswitchd[%s] exit status after SIGTERM was %s (contract says 0)" % (env.name, rc))
        env.notes.append("daemon exit status on SIGTERM: %s" % rc)
    if env.socket and os.path.exists(env.socket):
        log("note: vswitchd[%s] left its socket %s behind after SIGTERM" % (env.name, env.socket))
    env.daemon = None


def vswitch_taps(env, opts, hosts):
    """vswitchd and a TAP port for each (port, host namespace) pair in
    `hosts`, its kernel side eth0 in that namespace; the ports are on bridge
    br0, or on the bridge a third element names (port, host namespace, bridge)."""
    for n in (env.sw, env.h1, env.h2):
        env.ns(n)
    start_vswitchd(env, opts)
    bridges = [h[2] if len(h) > 2 else "br0" for h in hosts]
    for br in dict.fromkeys(bridges):
        vswitchctl(env, opts, "add-br", br)
    for (port, host_ns, *_), br in zip(hosts, bridges):
        # TAP device names live in the daemon's namespace first; it moves the
        # kernel side into host_ns and renames it eth0.
        vswitchctl(env, opts, "add-port", br, port, "--type", "tap",
                   "--netns", host_ns, "--ifname", "eth0")
        env.tap_hosts.append(host_ns)
        if opts.no_offload:
            set_offloads(host_ns, "eth0", False)


def setup_vswitch_tap(env, opts):
    vswitch_taps(env, opts, (("h1", env.h1), ("h2", env.h2)))
    host_addr(env.h1, "eth0", env.h1_ip)
    host_addr(env.h2, "eth0", env.h2_ip)
    env.notes.append("vswitchd in a switch namespace, TAP ports moved into the host namespaces")


def vswitch_afpackets(env, opts, ports):
    """vswitchd and a veth per (bridge, switch interface, host namespace) in
    `ports`, the switch end attached to that bridge as an AF_PACKET port."""
    for n in (env.sw, env.h1, env.h2):
        env.ns(n)
    start_vswitchd(env, opts)
    for br in dict.fromkeys(br for br, _, _ in ports):
        vswitchctl(env, opts, "add-br", br)
    for br, sw_if, host_ns in ports:
        veth_into(env.sw, sw_if, host_ns)
        if opts.no_offload:
            set_offloads(env.sw, sw_if, False)
            set_offloads(host_ns, "eth0", False)
        vswitchctl(env, opts, "add-port", br, sw_if, "--type", "afpacket", "--ifname", sw_if)


def setup_vswitch_afpacket(env, opts):
    vswitch_afpackets(env, opts, (("br0", "p1", env.h1), ("br0", "p2", env.h2)))
    host_addr(env.h1, "eth0", env.h1_ip)
    host_addr(env.h2, "eth0", env.h2_ip)
    env.notes.append("vswitchd in a switch namespace, AF_PACKET ports on veth ends")


def setup_vde(env, opts):
    """vde_switch (VDE 2, Debian's vde2) with two TAP ports, moved into the
    host namespaces as vswitch's TAP rows do. vde_switch reads its console
    on stdin and exits at end of file: the pipe is held open until teardown."""
    for n in (env.sw, env.h1, env.h2):
        env.ns(n)
    ctl = "/tmp/%s-%s.vde" % (TAG, env.name)
    env.daemon_log = "/tmp/%s-%s-vde.log" % (TAG, env.name)
    REG.files.extend([env.daemon_log])
    env.vde_dir = ctl
    logf = open(env.daemon_log, "wb")
    try:
        env.vde = spawn(nsexec(env.sw, "vde_switch", "--sock", ctl, "--tap", "vde-h1",
                               "--tap", "vde-h2"),
                        "vde_switch[%s]" % env.name, stdout=logf, stderr=subprocess.STDOUT,
                        stdin=subprocess.PIPE)
    finally:
        logf.close()
    env.switch_pid = env.vde.pid
    deadline = time.monotonic() + 10
    while run(nsexec(env.sw, "ip", "link", "show", "vde-h2"), check=False).returncode != 0:
        if env.vde.poll() is not None or time.monotonic() > deadline:
            raise BenchError("vde_switch did not create its TAPs; log:\n%s"
                             % tail_file(env.daemon_log))
        time.sleep(0.05)
    for tap, host in (("vde-h1", env.h1), ("vde-h2", env.h2)):
        run(nsexec(env.sw, "ip", "link", "set", tap, "netns", host))
        run(nsexec(host, "ip", "link", "set", tap, "name", "eth0"))
        if opts.no_offload:
            set_offloads(host, "eth0", False)
    host_addr(env.h1, "eth0", env.h1_ip)
    host_addr(env.h2, "eth0", env.h2_ip)
    env.notes.append("vde_switch in a switch namespace, its TAP ports moved into the host "
                     "namespaces (no virtio-net header: no TSO through it)")


def teardown_vde(env):
    try:
        vde = getattr(env, "vde", None)
        if vde is not None:
            try:
                vde.stdin.close()       # end of its console: it exits
            except OSError:
                pass
            REG.kill_proc(vde, "vde_switch[%s]" % env.name, grace=3.0)
        if getattr(env, "vde_dir", None):
            shutil.rmtree(env.vde_dir, ignore_errors=True)
    finally:
        teardown_common(env)


def setup_direct_veth(env, opts):
    """Reference without any switch: one veth pair straight from H1 to H2."""
    for n in (env.h1, env.h2):
        env.ns(n)
    run(nsexec(env.h1, "ip", "link", "add", "eth0", "type", "veth",
               "peer", "name", "eth0", "netns", env.h2))
    if opts.no_offload:
        set_offloads(env.h1, "eth0", False)
        set_offloads(env.h2, "eth0", False)
    host_addr(env.h1, "eth0", env.h1_ip)
    host_addr(env.h2, "eth0", env.h2_ip)
    env.notes.append("one veth pair from H1 to H2, no switch (reference for CPU overhead)")


# VXLAN rows: H1 hangs off the switch under test, which is a VTEP; H2 is a
# kernel VTEP at the far end of an underlay veth (the same in both rows), so
# the rows differ only in the switch: Linux bridge + vxlan device, or
# vswitchd with a TAP port and a VXLAN port.
VTEP_LOCAL = "192.0.2.1"
VTEP_REMOTE = "192.0.2.2"
VNI = "100"


# The underlay veth's offloads (the -gro and -wire rows).  A veth hands a GSO
# packet to its peer whole: the kernel's vxlan sends one 64 KiB UDP-tunnel GSO
# packet, vswitchd one UDP GSO send of MTU-sized datagrams, which H2's UDP
# layer splits again (the VXLAN socket takes no UDP_L4 GSO) before decapsulating
# each.  "wire" makes the veth behave as a link between two NICs: the sender's
# u0 segments everything in software (TSO, UDP GSO, tunnel GSO off), so MTU-sized
# datagrams cross it, and H2's eth0 re-assembles them with GRO (its UDP tunnel
# GRO coalesces VXLAN datagrams into inner TCP super-packets).  veth runs NAPI
# GRO only for packets from a sender without TSO, or from a local socket when
# the receiver has rx-udp-gro-forwarding or rx-gro-list.
UNDERLAY_WIRE_TX_OFF = ("tso", "gso", "tx-udp-segmentation", "tx-udp_tnl-segmentation",
                        "tx-udp_tnl-csum-segmentation")


def remote_vtep(env, opts, underlay=None):
    """H2 as a kernel VTEP: underlay veth u0 (switch, VTEP_LOCAL) <-> eth0 (H2,
    VTEP_REMOTE), MTU 1600 so 1500-byte inner frames are not fragmented, and a
    vxlan device vx0 carrying H2's address.  `underlay`: None (veth defaults),
    "gro" (H2's eth0 receives with --underlay-gro-features, default GRO and
    rx-udp-gro-forwarding) or "wire" (that, and u0 segments in software what it
    sends, as a NIC puts MTU-sized packets on a wire)."""
    veth_into(env.sw, "u0", env.h2)
    for ns, ifname, addr in ((env.sw, "u0", VTEP_LOCAL), (env.h2, "eth0", VTEP_REMOTE)):
        run(nsexec(ns, "ip", "link", "set", ifname, "mtu", "1600", "up"))
        run(nsexec(ns, "ip", "addr", "add", "%s/24" % addr, "dev", ifname))
    if underlay:
        underlay_gro(env, opts, underlay == "wire")
    run(nsexec(env.h2, "ip", "link", "add", "vx0", "type", "vxlan", "id", VNI,
               "local", VTEP_REMOTE, "remote", VTEP_LOCAL, "dstport", "4789", "dev", "eth0"))
    run(nsexec(env.h2, "ip", "link", "set", "vx0", "mtu", "1500", "up"))
    if opts.no_offload:
        set_offloads(env.h2, "vx0", False)
    host_addr(env.h2, "vx0", env.h2_ip)
    env.h2_if = "vx0"


ETHTOOL_LONG_NAMES = {"gro": "generic-receive-offload", "lro": "large-receive-offload",
                      "tso": "tcp-segmentation-offload", "gso": "generic-segmentation-offload"}


def ethtool_set(ns, ifname, feats, state):
    """ethtool -K ifname f1 state f2 state ...; checks that every feature took."""
    if not shutil.which("ethtool"):
        raise BenchError("the -gro and -wire rows need ethtool")
    cmd = ["ethtool", "-K", ifname]
    for f in feats:
        cmd += [f, state]
    run(nsexec(ns, *cmd))
    shown = run(nsexec(ns, "ethtool", "-k", ifname)).stdout
    for f in feats:
        name = ETHTOOL_LONG_NAMES.get(f, f)
        if not re.search(r"^\s*%s: %s" % (re.escape(name), state), shown, re.M):
            raise BenchError("%s in %s did not take %s %s" % (ifname, ns, f, state))


def underlay_gro(env, opts, wire=False):
    """Turns on the --underlay-gro-features on H2's underlay veth (a veth
    before 5.13 has no NAPI GRO); with `wire`, also turns off every kind of
    segmentation offload on the sending end u0."""
    feats = [f for f in opts.underlay_gro_features.split(",") if f]
    ethtool_set(env.h2, "eth0", feats, "on")
    env.notes.append("H2's underlay veth: %s on" % ", ".join(feats))
    if wire:
        ethtool_set(env.sw, "u0", UNDERLAY_WIRE_TX_OFF, "off")
        env.notes.append("underlay veth u0 segments in software: %s off"
                         % ", ".join(UNDERLAY_WIRE_TX_OFF))


def setup_kernel_vxlan(env, opts, underlay=None):
    kernel_bridge(env, opts, (("p1", env.h1),))
    remote_vtep(env, opts, underlay)
    run(nsexec(env.sw, "ip", "link", "add", "vx0", "type", "vxlan", "id", VNI,
               "local", VTEP_LOCAL, "remote", VTEP_REMOTE, "dstport", "4789", "dev", "u0"))
    run(nsexec(env.sw, "ip", "link", "set", "vx0", "mtu", "1500", "master", "br0", "up"))
    host_addr(env.h1, "eth0", env.h1_ip)
    env.notes.append("H1 on a veth into a Linux bridge with a vxlan device; H2 a kernel VTEP")


def setup_vswitch_vtep(env, opts, underlay=None, tunnel_tap=True):
    if not tunnel_tap:
        # The path before the UDP-tunnel GSO TAP: software segmentation and
        # UDP GSO sends.
        env.daemon_env = ["VSWITCH_VXLAN_TAP=0"]
    vswitch_taps(env, opts, (("h1", env.h1),))
    remote_vtep(env, opts, underlay)
    vswitchctl(env, opts, "add-port", "br0", "vx", "--type", "vxlan", "--vni", VNI,
               "--local", VTEP_LOCAL, "--remote", VTEP_REMOTE)
    host_addr(env.h1, "eth0", env.h1_ip)
    env.notes.append("H1 on a vswitchd TAP port, a vswitchd VXLAN port (%s); H2 a kernel VTEP"
                     % ("super-frames whole through a UDP-tunnel GSO TAP" if tunnel_tap
                        else "super-frames segmented in software, UDP GSO"))


# Routed rows: H1 in an inside subnet, H2 in an outside one, a router between
# them that masquerades (SNAT to its outside address) what leaves toward H2.
# H1's default route points at the router; H2 knows only its own subnet, so
# the replies come back only through the SNAT.  The router is a namespace
# with ip_forward and an nftables masquerade rule (kernel-router), or vswitchd
# with two bridges, a router interface on each and SNAT on the outside one
# (vs-rtap: TAP ports, vs-rafp: AF_PACKET ports).
RT_IN_GW = "10.202.1.1"      # router, inside
RT_IN_H1 = "10.202.1.2"      # H1
RT_OUT_GW = "10.202.2.1"     # router, outside (the masquerade address)
RT_OUT_H2 = "10.202.2.2"     # H2
RT_PREFIX_LEN = 24


def routed_hosts(env, opts):
    """H1 inside with its default route via the router, H2 outside with only
    its connected subnet (no route back to the inside)."""
    env.h1_ip, env.h2_ip = RT_IN_H1, RT_OUT_H2
    host_addr(env.h1, "eth0", env.h1_ip, RT_PREFIX_LEN)
    run(nsexec(env.h1, "ip", "route", "add", "default", "via", RT_IN_GW, "dev", "eth0"))
    host_addr(env.h2, "eth0", env.h2_ip, RT_PREFIX_LEN)


def setup_kernel_router(env, opts):
    for n in (env.sw, env.h1, env.h2):
        env.ns(n)
    rt = env.sw
    for rt_if, host_ns, addr in (("in0", env.h1, RT_IN_GW), ("out0", env.h2, RT_OUT_GW)):
        veth_into(rt, rt_if, host_ns)
        run(nsexec(rt, "ip", "addr", "add", "%s/%d" % (addr, RT_PREFIX_LEN), "dev", rt_if))
        if opts.no_offload:
            set_offloads(rt, rt_if, False)
            set_offloads(host_ns, "eth0", False)
    run(nsexec(rt, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"))
    run(nsexec(rt, "nft", "add", "table", "ip", "nb"))
    run(nsexec(rt, "nft", "add", "chain", "ip", "nb", "post",
               "{ type nat hook postrouting priority 100 ; }"))
    run(nsexec(rt, "nft", "add", "rule", "ip", "nb", "post", "oifname", "out0", "masquerade"))
    routed_hosts(env, opts)
    env.notes.append("router namespace between veth pairs: ip_forward=1, nftables masquerade "
                     "on its outside interface; H2 has no route back to H1's subnet")


def vswitch_router(env, opts):
    """The router's half of vs-rtap/vs-rafp, once the ports are on brin/brout."""
    vswitchctl(env, opts, "add-rif", "gw", "--br", "brin",
               "--addr", "%s/%d" % (RT_IN_GW, RT_PREFIX_LEN))
    vswitchctl(env, opts, "add-rif", "up", "--br", "brout",
               "--addr", "%s/%d" % (RT_OUT_GW, RT_PREFIX_LEN))
    vswitchctl(env, opts, "add-snat", "--out", "up")
    routed_hosts(env, opts)


def setup_vswitch_router_tap(env, opts):
    vswitch_taps(env, opts, (("h1", env.h1, "brin"), ("h2", env.h2, "brout")))
    vswitch_router(env, opts)
    env.notes.append("vswitchd routes between bridges brin and brout (router interfaces gw and "
                     "up, SNAT out of up); TAP ports moved into the host namespaces")


def setup_vswitch_router_afpacket(env, opts):
    vswitch_afpackets(env, opts, (("brin", "p1", env.h1), ("brout", "p2", env.h2)))
    vswitch_router(env, opts)
    env.notes.append("vswitchd routes between bridges brin and brout (router interfaces gw and "
                     "up, SNAT out of up); AF_PACKET ports on veth ends")


# --------------------------------------------------------------------------
# VM rows: QEMU guests (TCG) on a switch, as a VM manager wires them
#     H1 (eth0 10.201.0.1)  <-- switch -->  guest A (virtio-net 10.201.0.2)
#                                     \-->  guest B (virtio-net 10.201.0.3, *-vm2 rows)
# The guests are examples/vm's kit (a Debian kernel, a busybox initramfs).
# Guest A serves a file with busybox httpd (sendfile: 64 KiB TSO
# super-frames). Guest -> host rows: H1 downloads it (TCP guest -> H1) and
# pings guest A. Guest <-> guest rows (*-vm2): guest B downloads it with
# busybox wget (vm-fetch) and pings guest A, both from its serial console.
# QEMU runs in the switch namespace. Its NIC is a TAP that is a port of the
# kernel bridge (kernel-vm*) or an AF_PACKET port of vswitchd (vs-vm*), or
# a vhost-user port of vswitchd (vs-vhost*: the guest's virtqueues in the
# switch, QEMU's own virtio emulation and the TAP out of the data path).
# A TCG guest is CPU-bound: these rows compare the switches under slow
# endpoints, not line rate; the ratios between rows are what counts.
# --------------------------------------------------------------------------

VM_MAC = "52:54:00:c9:00:02"
VM_B_MAC = "52:54:00:c9:00:03"
VM_B_IP = "10.201.0.3"
VM_MIB = 32
VM_HTTP_PORT = 8080
VM_TESTS = ("tcp1", "rtt")
VM_MEM = "256M"


def vm_kit(opts):
    """(kernel, initrd) from examples/vm/build.sh, built once per run."""
    if getattr(opts, "vm_kit", None):
        return opts.vm_kit
    if not shutil.which("qemu-system-x86_64"):
        raise BenchError("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    cp = run(["bash", os.path.join(REPO_ROOT, "examples", "vm", "build.sh")], timeout=600,
             check=False)
    kv = dict(line.split("=", 1) for line in cp.stdout.splitlines() if "=" in line)
    if cp.returncode != 0 or "KERNEL" not in kv or "INITRD" not in kv:
        raise BenchError("examples/vm/build.sh failed: %s" % cp.stderr[-500:])
    opts.vm_kit = (kv["KERNEL"], kv["INITRD"])
    return opts.vm_kit


def vm_net_args(net, mac, tap_vectors=None):
    """QEMU arguments for the guest's virtio-net NIC. net is ("tap", IFNAME):
    QEMU creates that TAP (vnet_hdr on: offloads cross); or ("vhost", SOCKET):
    a vhost-user netdev on shared memfd guest memory, connecting to SOCKET,
    with no MSI-X (vectors=0: Debian 12's QEMU 7.2 under TCG crashes with
    vhost-user and MSI-X; the guest then takes INTx interrupts)."""
    kind, arg = net
    if kind == "tap":
        vec = "" if tap_vectors is None else ",vectors=%d" % tap_vectors
        return ["-netdev", "tap,id=n0,ifname=%s,script=no,downscript=no,vnet_hdr=on" % arg,
                "-device", "virtio-net-pci,netdev=n0,mac=%s%s" % (mac, vec)]
    return ["-object", "memory-backend-memfd,id=mem,size=%s,share=on" % VM_MEM,
            "-numa", "node,memdev=mem",
            "-chardev", "socket,id=c0,path=%s" % arg,
            "-netdev", "vhost-user,id=n0,chardev=c0",
            "-device", "virtio-net-pci,netdev=n0,vectors=0,mac=%s" % mac]


class Guest:
    """A QEMU guest whose serial console is a pipe in (commands) and a file
    out (its log)."""

    def __init__(self, env, opts, key, ip, mac, net, serve):
        kernel, initrd = vm_kit(opts)
        self.key = key
        self.ip = ip
        self.console = "/tmp/%s-%s-%s-console.log" % (TAG, env.name, key)
        REG.files.append(self.console)
        run_arg = " vm.run=vm-serve,%d,%d" % (VM_MIB, VM_HTTP_PORT) if serve else ""
        append = ("console=ttyS0 quiet panic=-1 vm.name=%s vm.ip=%s/%d%s"
                  % (key, ip, PREFIX_LEN, run_arg))
        # maxcpus=2: QEMU before 8.1 drops a one-vCPU TCG guest's memory
        # barriers, and virtio between the guest and another thread (QEMU's
        # own iothread, a vhost-user backend) then loses notifications.
        cmd = nsexec(env.sw, "qemu-system-x86_64", "-accel", "tcg", "-m", VM_MEM,
                     "-smp", "1,maxcpus=2",
                     "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
                     "-monitor", "none", "-serial", "stdio", "-kernel", kernel, "-initrd", initrd,
                     "-append", append, *vm_net_args(net, mac, opts.vm_tap_vectors))
        con = open(self.console, "wb")
        try:
            # `ip netns exec` execs QEMU: the PID is QEMU's.
            self.proc = spawn(cmd, "qemu[%s-%s]" % (env.name, key), stdout=con,
                              stderr=subprocess.STDOUT, stdin=subprocess.PIPE)
        finally:
            con.close()
        self.seq = 0

    def text(self):
        with open(self.console, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_for(self, marker, timeout, after=0):
        """Waits until the console shows `marker` past offset `after`;
        returns the console text from `after` on."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()[after:]
            if marker in text:
                return text
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("guest %s: no %r within %ds; console:\n%s"
                                 % (self.key, marker, timeout, text[-1500:]))
            time.sleep(0.1)

    def sh(self, command, timeout):
        """Runs `command` in the guest's shell; returns (status, output)."""
        self.seq += 1
        mark = "@@END %d " % self.seq
        after = len(self.text())
        # The marker is split in the echo so the echoed command line does not match.
        self.proc.stdin.write(("%s; echo \"@@E\"\"ND %d $?\"\n" % (command, self.seq)).encode())
        self.proc.stdin.flush()
        text = self.wait_for(mark, timeout, after)
        i = text.index(mark)
        status = text[i + len(mark):].split()[0]
        return int(status) if status.isdigit() else -1, text[:i]

    def cpu_s(self):
        return proc_cpu_s(self.proc.pid)


def vm_boot(env, opts, net, attach=None, guest_b=None):
    """Boots guest A (serving its file) on NIC `net`, calls attach() once a
    TAP QEMU creates exists, and waits until the guest serves. With guest_b
    = (net, attach), boots guest B too (a client on the console)."""
    env.h2_ip = H2_IP
    env.vm = Guest(env, opts, "a", H2_IP, VM_MAC, net, serve=True)
    todo = [(env.vm, net, attach)]
    if guest_b is not None:
        env.vm_b = Guest(env, opts, "b", VM_B_IP, VM_B_MAC, guest_b[0], serve=False)
        todo.append((env.vm_b, guest_b[0], guest_b[1]))
    for g, gnet, gattach in todo:
        if gnet[0] == "tap":
            deadline = time.monotonic() + 20
            while run(nsexec(env.sw, "ip", "link", "show", gnet[1]), check=False).returncode != 0:
                if g.proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError("QEMU did not create TAP %s; console:\n%s"
                                     % (gnet[1], tail_file(g.console)))
                time.sleep(0.1)
        if gattach is not None:
            gattach()
    env.vm.wait_for("@@SERVE", 180)
    if guest_b is not None:
        env.vm_b.wait_for("@@READY", 180)
    env.notes.append("QEMU x86_64 guests (TCG, 1 vCPU of maxcpus=2, %s) with virtio-net; guest A serves "
                     "%d MiB with busybox httpd" % (VM_MEM, VM_MIB))


def setup_kernel_vm(env, opts, two=False):
    for n in (env.sw, env.h1):
        env.ns(n)
    run(nsexec(env.sw, "ip", "link", "add", "br0", "type", "bridge", "stp_state", "0"))
    run(nsexec(env.sw, "ip", "link", "set", "br0", "up"))
    veth_into(env.sw, "p1", env.h1)
    run(nsexec(env.sw, "ip", "link", "set", "p1", "master", "br0"))
    host_addr(env.h1, "eth0", env.h1_ip)

    def attach(tap):
        def f():
            run(nsexec(env.sw, "ip", "link", "set", tap, "master", "br0"))
            run(nsexec(env.sw, "ip", "link", "set", tap, "up"))
        return f
    vm_boot(env, opts, ("tap", "vmtap0"), attach("vmtap0"),
            (("tap", "vmtap1"), attach("vmtap1")) if two else None)
    env.notes.append("kernel bridge (STP off): H1 on a veth, each guest's QEMU TAP a bridge port")


def setup_vswitch_vm(env, opts, two=False):
    vswitch_taps(env, opts, (("h1", env.h1),))
    host_addr(env.h1, "eth0", env.h1_ip)

    def attach(port, tap):
        return lambda: vswitchctl(env, opts, "add-port", "br0", port, "--type", "afpacket",
                                  "--ifname", tap)
    vm_boot(env, opts, ("tap", "vmtap0"), attach("vm", "vmtap0"),
            (("tap", "vmtap1"), attach("vmb", "vmtap1")) if two else None)
    env.notes.append("vswitchd: H1 on a TAP port, each guest's QEMU TAP an AF_PACKET port")


def setup_vswitch_vhost(env, opts, two=False):
    vswitch_taps(env, opts, (("h1", env.h1),))
    host_addr(env.h1, "eth0", env.h1_ip)
    socks = []
    for port in ("vm", "vmb")[:2 if two else 1]:
        sock = "/tmp/%s-%s-%s.vhost" % (TAG, env.name, port)
        REG.files.append(sock)
        # vswitchd listens (server mode); QEMU connects when it starts.
        vswitchctl(env, opts, "add-port", "br0", port, "--type", "vhost-user", "--path", sock,
                   "--server")
        socks.append(("vhost", sock))
    vm_boot(env, opts, socks[0], None, (socks[1], None) if two else None)
    env.notes.append("vswitchd: H1 on a TAP port, each guest on a vhost-user port (vswitchd "
                     "the server, QEMU the client)")


def teardown_vm(env):
    for attr in ("vm", "vm_b"):
        g = getattr(env, attr, None)
        if g is not None:
            REG.kill_proc(g.proc, "qemu[%s-%s]" % (env.name, g.key), grace=3.0)
            setattr(env, attr, None)
    teardown_common(env)


def throughput_result(env, gbps, cpu, retransmits=None):
    """A throughput test's figures: Gbit/s and the CPU spent per Gbit/s
    (CpuWindow.result's `cpu`), for the TCP rows of every scenario."""
    sw = switch_cores(env, cpu)

    def per(v):
        return (v / gbps) if (v is not None and gbps > 0) else None
    return {
        "gbps": gbps,
        "retransmits": retransmits,
        "switch_cores": sw,
        "switch_cores_per_gbps": per(sw),
        "sys_minus_endpoints_cores": cpu["system_minus_endpoints_cores"],
        "sys_minus_endpoints_per_gbps": per(cpu["system_minus_endpoints_cores"]),
        "total_cores": cpu["system_busy_cores"],
        "total_cores_per_gbps": per(cpu["system_busy_cores"]),
        "steal_cores": cpu["steal_cores"],
    }


def vm_cpu_result(gbps, win, endpoint_s, env):
    return throughput_result(env, gbps, win.result(endpoint_s))


def test_vm_tcp(env, opts):
    """TCP guest -> H1: H1 downloads guest A's file for --duration seconds.
    With guest B (*-vm2 rows): guest B downloads it instead (guest -> guest)."""
    if getattr(env, "vm_b", None) is not None:
        return test_vm2_tcp(env, opts)
    qemu0 = env.vm.cpu_s()
    with CpuWindow(env.switch_pid) as win:
        client = Measured(nsexec(env.h1, "python3",
                                 os.path.join(REPO_ROOT, "examples", "vm", "fetch.py"),
                                 "http://%s:%d/data" % (env.h2_ip, VM_HTTP_PORT),
                                 "%ds" % opts.duration),
                          "fetch[%s]" % env.name)
        client.wait(opts.duration + 60)
    qemu_s = env.vm.cpu_s() - qemu0
    try:
        fj = json.loads(client.stdout())
    except ValueError:
        raise BenchError("fetch.py gave no JSON (rc %s): %s; guest console:\n%s"
                         % (client.returncode, client.stderr()[-500:], tail_file(env.vm.console)))
    if client.returncode != 0 or fj.get("bytes") != VM_MIB << 20:
        raise BenchError("fetch.py: %s" % fj)
    return vm_cpu_result(fj["mbit"] / 1e3, win, client.cpu_s + qemu_s, env)


def test_vm2_tcp(env, opts):
    """TCP guest A -> guest B: guest B fetches guest A's file with busybox
    wget (vm-fetch) for --duration seconds, timed in the guest."""
    cpu0 = env.vm.cpu_s() + env.vm_b.cpu_s()
    with CpuWindow(env.switch_pid) as win:
        rc, out = env.vm_b.sh("vm-fetch http://%s:%d/data %d" % (env.h2_ip, VM_HTTP_PORT,
                                                                  opts.duration),
                              opts.duration + 120)
    qemu_s = env.vm.cpu_s() + env.vm_b.cpu_s() - cpu0
    gbps = vm_fetch_gbps(out, rc, VM_MIB << 20)
    return vm_cpu_result(gbps, win, qemu_s, env)


def vm_fetch_gbps(out, rc, copy_bytes):
    """Gbit/s from vm-fetch's console output ("@@FETCH copies=N bytes=B
    secs=S mbit=R rc=STATUS"); BenchError unless every copy was whole."""
    line = next((ln.strip() for ln in out.splitlines() if ln.startswith("@@FETCH ")), None)
    if line is None:
        raise BenchError("vm-fetch gave no @@FETCH line (status %s): %s" % (rc, out[-500:]))
    kv = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    try:
        copies, nbytes, mbit = int(kv["copies"]), int(kv["bytes"]), float(kv["mbit"])
    except (KeyError, ValueError):
        raise BenchError("vm-fetch: unreadable line: %s" % line)
    if rc != 0 or kv.get("rc") != "0" or copies < 1:
        raise BenchError("vm-fetch failed: %s" % line)
    if nbytes != copies * copy_bytes:
        raise BenchError("vm-fetch: copies of the wrong size: %s" % line)
    return mbit / 1e3


def test_vm2_rtt(env, opts):
    """Ping guest B -> guest A from guest B's console (busybox ping), one
    line a reply."""
    count = min(opts.ping_count, 500)
    interval = max(opts.ping_interval, 0.02)
    with CpuWindow(None) as win:
        rc, out = env.vm_b.sh("ping -c %d -i %s -W 2 %s" % (count, interval, env.h2_ip),
                              count * interval + 120)
    times = ping_times_us(out)
    if not times:
        raise BenchError("guest ping got no replies (status %s): %s" % (rc, out[-500:]))
    times.sort()
    return {
        "rtt_median_us": statistics.median(times),
        "rtt_p99_us": percentile(times, 99),
        "ping_loss_pct": 100.0 * max(0, count - len(times)) / count,
        "steal_cores": win.result(0.0)["steal_cores"],
    }


def teardown_common(env):
    try:
        had_daemon = env.daemon is not None
        stop_vswitchd(env)
        if had_daemon and env.tap_hosts:
            for ns in env.tap_hosts:
                cp = run(nsexec(ns, "ip", "link", "show", "eth0"), check=False)
                if cp.returncode == 0:
                    log("note: TAP eth0 in %s still exists after vswitchd's SIGTERM "
                        "(contract: removed on shutdown)" % ns)
                    env.notes.append("TAP left behind after SIGTERM")
    finally:
        for n in reversed(env.namespaces):
            del_netns(n)
        env.namespaces.clear()
        for f in (env.socket, env.socket and env.socket + ".lock", env.daemon_log):
            if f and f in REG.files:
                try:
                    os.unlink(f)
                except FileNotFoundError:
                    pass
                REG.files.remove(f)


class Scenario:
    def __init__(self, name, label, setup, teardown, kind, baseline, cpu_method, tests=None):
        # kind: "kernel" (a baseline), "vswitch" (compared with `baseline`) or
        # "reference" (no switch at all; used for the CPU-above-direct rows)
        self.name = name
        self.label = label
        self.setup = setup
        self.teardown = teardown
        self.kind = kind              # "kernel" or "vswitch"
        self.baseline = baseline      # scenario name this one is compared with (None = is a baseline)
        self.cpu_method = cpu_method
        self.tests = tests            # names of the tests it runs (None: all)


CPU_KERNEL = ("system busy CPU from /proc/stat (user+nice+system+irq+softirq) over the "
              "measurement interval, minus the CPU (rusage utime+stime) of the traffic "
              "endpoints (iperf3 client and server); the bridge runs in softirq context "
              "and is not attributable to a process")
CPU_KERNEL_ROUTER = ("system busy CPU from /proc/stat (user+nice+system+irq+softirq) over the "
                     "measurement interval, minus the CPU (rusage utime+stime) of the traffic "
                     "endpoints (iperf3 client and server); forwarding and NAT run in softirq "
                     "context and are not attributable to a process")
CPU_KERNEL_VM = (CPU_KERNEL + "; QEMU (the guests) counts as an endpoint, so the bridge's "
                 "work done in QEMU's TAP writes is not in it")
CPU_DAEMON = ("vswitchd's utime+stime from /proc/PID/stat (all threads) over the "
              "measurement interval")

SCENARIOS = [
    Scenario("direct", "direct veth (ref)", setup_direct_veth, teardown_common,
             "reference", None, "no switch; system busy CPU minus the endpoints' CPU"),
    Scenario("kernel", "kernel bridge", setup_kernel_bridge, teardown_common,
             "kernel", None, CPU_KERNEL),
    Scenario("vs-tap", "vswitch TAP", setup_vswitch_tap, teardown_common,
             "vswitch", "kernel", CPU_DAEMON),
    Scenario("vs-afp", "vswitch AF_PACKET", setup_vswitch_afpacket, teardown_common,
             "vswitch", "kernel", CPU_DAEMON),
    Scenario("vde", "vde_switch TAP", setup_vde, teardown_vde,
             "other", "kernel", "vde_switch's utime+stime from /proc/PID/stat"),
    Scenario("kvxlan", "kernel bridge+vxlan", setup_kernel_vxlan, teardown_common,
             "kernel", None, CPU_KERNEL),
    Scenario("vs-vtep", "vswitch VTEP", setup_vswitch_vtep, teardown_common,
             "vswitch", "kvxlan", CPU_DAEMON),
    Scenario("vs-vtep-sw", "vswitch VTEP, software GSO",
             lambda env, opts: setup_vswitch_vtep(env, opts, tunnel_tap=False), teardown_common,
             "vswitch", "kvxlan", CPU_DAEMON),
    Scenario("kvxlan-gro", "kernel bridge+vxlan, underlay GRO",
             lambda env, opts: setup_kernel_vxlan(env, opts, "gro"), teardown_common,
             "kernel", None, CPU_KERNEL),
    Scenario("vs-vtep-gro", "vswitch VTEP, underlay GRO",
             lambda env, opts: setup_vswitch_vtep(env, opts, "gro"), teardown_common,
             "vswitch", "kvxlan-gro", CPU_DAEMON),
    Scenario("kvxlan-wire", "kernel bridge+vxlan, wire-like underlay",
             lambda env, opts: setup_kernel_vxlan(env, opts, "wire"), teardown_common,
             "kernel", None, CPU_KERNEL),
    Scenario("vs-vtep-wire", "vswitch VTEP, wire-like underlay",
             lambda env, opts: setup_vswitch_vtep(env, opts, "wire"), teardown_common,
             "vswitch", "kvxlan-wire", CPU_DAEMON),
    Scenario("kernel-router", "kernel router+SNAT", setup_kernel_router, teardown_common,
             "kernel", None, CPU_KERNEL_ROUTER),
    Scenario("vs-rtap", "vswitch router TAP", setup_vswitch_router_tap, teardown_common,
             "vswitch", "kernel-router", CPU_DAEMON),
    Scenario("vs-rafp", "vswitch router AF_PACKET", setup_vswitch_router_afpacket, teardown_common,
             "vswitch", "kernel-router", CPU_DAEMON),
    Scenario("kernel-vm", "guest->host: kernel bridge + QEMU TAP", setup_kernel_vm, teardown_vm,
             "kernel", None, CPU_KERNEL_VM, tests=VM_TESTS),
    Scenario("vs-vm", "guest->host: vswitch + QEMU TAP (AF_PACKET)", setup_vswitch_vm,
             teardown_vm, "vswitch", "kernel-vm", CPU_DAEMON, tests=VM_TESTS),
    Scenario("vs-vhost", "guest->host: vswitch vhost-user", setup_vswitch_vhost, teardown_vm,
             "vswitch", "kernel-vm", CPU_DAEMON, tests=VM_TESTS),
    Scenario("kernel-vm2", "guest<->guest: kernel bridge + QEMU TAPs",
             lambda env, opts: setup_kernel_vm(env, opts, two=True), teardown_vm,
             "kernel", None, CPU_KERNEL_VM, tests=VM_TESTS),
    Scenario("vs-vm2", "guest<->guest: vswitch + QEMU TAPs (AF_PACKET)",
             lambda env, opts: setup_vswitch_vm(env, opts, two=True), teardown_vm,
             "vswitch", "kernel-vm2", CPU_DAEMON, tests=VM_TESTS),
    Scenario("vs-vhost2", "guest<->guest: vswitch vhost-user",
             lambda env, opts: setup_vswitch_vhost(env, opts, two=True), teardown_vm,
             "vswitch", "kernel-vm2", CPU_DAEMON, tests=VM_TESTS),
]

# Names that stand for several scenarios in --scenarios.
SCENARIO_GROUPS = {
    "l2": ["direct", "kernel", "vs-tap", "vs-afp", "vde", "kvxlan", "vs-vtep", "vs-vtep-sw"],
    "routed": ["kernel-router", "vs-rtap", "vs-rafp"],
    "vxlan-underlay": ["kvxlan-gro", "vs-vtep-gro", "kvxlan-wire", "vs-vtep-wire"],
    "vm": ["kernel-vm", "vs-vm", "vs-vhost", "kernel-vm2", "vs-vm2", "vs-vhost2"],
    "latency": ["kernel", "vs-tap", "vs-afp", "vde"],
}


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------

def switch_cores(env, cpu):
    """The 'switch CPU' figure for a scenario, by its scenario's method."""
    if env.switch_pid:
        return cpu.get("daemon_cores")
    return cpu["system_minus_endpoints_cores"]


def wait_listening(ns, port, timeout=5.0, udp=False):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cp = run(nsexec(ns, "ss", "-Hltn", "sport = :%d" % port), check=False, timeout=5)
        if cp.returncode == 0 and cp.stdout.strip():
            return
        time.sleep(0.05)
    raise BenchError("iperf3 server in %s not listening on %d" % (ns, port))


def iperf3(env, opts, client_args, counters=None):
    """One iperf3 run h1 -> h2 with CPU accounting. Returns (client_json, cpu_dict)."""
    server = Measured(nsexec(env.h2, "iperf3", "-s", "-1", "-p", str(IPERF_PORT), "-J"),
                      "iperf3 server[%s]" % env.name)
    try:
        wait_listening(env.h2, IPERF_PORT)
        if counters:
            counters.take()
        with CpuWindow(env.switch_pid) as win:
            client = Measured(nsexec(env.h1, "iperf3", "-c", env.h2_ip, "-p", str(IPERF_PORT),
                                     "-J", "-i", "0", "-t", str(opts.duration),
                                     "--connect-timeout", "3000") + client_args,
                              "iperf3 client[%s]" % env.name)
            rec = perf_start(env, opts)
            client.wait(opts.duration + 20)
            server.wait(10)
        perf_finish(env, rec)
        if counters:
            counters.take()
    finally:
        if server.returncode is None:
            REG.kill_proc(server.p, server.desc, grace=2.0)
    try:
        cj = json.loads(client.stdout())
    except ValueError:
        raise BenchError("iperf3 client gave no JSON (rc %s): %s %s"
                         % (client.returncode, client.stdout()[-500:], client.stderr()[-500:]))
    if "error" in cj:
        raise BenchError("iperf3: %s" % cj["error"])
    try:
        sj = json.loads(server.stdout())
    except ValueError:
        sj = {}
    cpu = win.result(client.cpu_s + server.cpu_s)
    return cj, sj, cpu


# --------------------------------------------------------------------------
# --perf: where the switch's time goes
# --------------------------------------------------------------------------

# Categories of the switch's samples, first match wins: (key, label, test of
# (dso, symbol)). The kernel's copies between user buffers and skbs are the
# floor of a userspace switch without vhost-net; the rest is what could move.
PROFILE_CATEGORIES = [
    ("copy", "copies user<->kernel, memcpy", lambda d, y: (
        y in ("rep_movs_alternative", "_copy_to_iter", "_copy_from_iter", "skb_copy_bits",
              "memcpy_orig", "__check_object_size", "copy_page_from_iter",
              "copy_page_to_iter", "__skb_datagram_iter", "skb_copy_datagram_iter")
        or y.startswith(("copy_user", "__memmove", "__memcpy", "memcpy", "memmove")))),
    ("csum", "checksums", lambda d, y: "csum" in y or "checksum" in y),
    ("alloc", "skb and page allocation, freeing", lambda d, y: y.startswith((
        "kmem_cache_", "__slab_free", "kfree", "__kmalloc", "kmalloc", "__alloc_skb",
        "alloc_skb", "skb_release", "__free_pages", "__free_frozen_pages", "free_unref",
        "get_page_from_freelist", "__alloc_pages", "alloc_pages", "page_frag",
        "sock_alloc_send", "__build_skb", "napi_alloc", "kfree_skb", "consume_skb",
        "sk_skb_reason_drop", "___slab_alloc", "__put_partials", "rmqueue"))),
    ("sched", "syscall entry, polling, scheduling", lambda d, y: (
        y.startswith(("entry_SYSCALL", "do_syscall", "syscall_", "__schedule", "schedule",
                      "finish_task_switch", "do_sched_yield", "__sched_yield", "pick_next",
                      "ep_", "do_epoll", "epoll_", "__x64_sys_epoll", "fdget", "fput",
                      "__fget", "__vdso", "clock_gettime", "yield_task", "update_curr",
                      "__rcu_read", "__x64_sys"))
        or "[vdso]" in d)),
    ("locks", "locks, irq and softirq switching", lambda d, y: (
        "spin_" in y or y.startswith((
            "_raw_", "__raw_", "native_queued", "__local_bh_enable", "handle_softirqs",
            "do_softirq", "irq_", "asm_")))),
    ("switch", "vswitchd's own code", lambda d, y: d == "vswitchd"),
    ("libc", "libc (but memcpy)", lambda d, y: d.startswith("libc")),
    ("kernel", "rest of the kernel: network stacks of both hosts, devices", lambda d, y: True),
]


def perf_start(env, opts):
    """With --perf, record the switch (call graphs off: cheap) for most of a
    test; None otherwise."""
    if not opts.perf or env.daemon is None or env.switch_pid is None or not env.perf_tag:
        return None
    path = os.path.join(opts.perf, env.perf_tag + ".data")
    secs = max(1, opts.duration - 1)
    p = subprocess.Popen(["perf", "record", "-q", "-F", "999", "-p", str(env.switch_pid),
                          "-o", path, "--", "sleep", str(secs)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return (p, path)


def perf_finish(env, rec):
    env.profile = None
    if rec is None:
        return
    p, path = rec
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        REG.kill_proc(p, "perf record", grace=2.0)
        raise BenchError("perf record did not finish")
    if p.returncode != 0:
        raise BenchError("perf record failed: %s" % err.decode(errors="replace")[-300:])
    cp = run(["perf", "report", "-i", path, "--no-children", "--sort", "dso,sym",
              "--stdio", "-q", "-g", "none", "--percent-limit", "0"], timeout=120)
    env.profile = profile_breakdown(cp.stdout)


def profile_breakdown(report):
    """`perf report --sort dso,sym --stdio -q` text -> {"prof_<cat>_pct": %}
    over PROFILE_CATEGORIES, plus the single hottest symbol's share."""
    out = {"prof_%s_pct" % k: 0.0 for k, _, _ in PROFILE_CATEGORIES}
    pat = re.compile(r"^\s*([0-9.]+)%\s+(\S+)\s+\[(.)\]\s+(\S+)")
    top = 0.0
    for line in report.splitlines():
        m = pat.match(line)
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(4)
        top = max(top, pct)
        for key, _, test in PROFILE_CATEGORIES:
            if test(dso, sym):
                out["prof_%s_pct" % key] += pct
                break
    out["prof_top_symbol_pct"] = top
    return out


def print_profile(agg, scenarios, tests, out=sys.stdout):
    cols = [(s, t) for s in scenarios for t in tests
            if (t.name, "prof_copy_pct") in agg.get(s.name, {})]
    if not cols:
        return
    heads = ["%s %s" % (s.label, t.name) for s, t in cols]
    w = max(len(l) for _, l, _ in PROFILE_CATEGORIES)
    print(file=out)
    print("Where vswitchd's time goes (perf, % of its samples, medians):", file=out)
    print("  %s  %s" % ("".ljust(w), "  ".join(h.rjust(max(8, len(h))) for h in heads)), file=out)
    for key, label, _ in PROFILE_CATEGORIES:
        vals = []
        for (s, t), h in zip(cols, heads):
            v = agg[s.name].get((t.name, "prof_%s_pct" % key), (None, []))[0]
            vals.append(("-" if v is None else "%.1f" % v).rjust(max(8, len(h))))
        print("  %s  %s" % (label.ljust(w), "  ".join(vals)), file=out)


def test_tcp(streams):
    def t(env, opts):
        if getattr(env, "vm", None) is not None:
            return test_vm_tcp(env, opts)
        snap = Counters(env, opts)
        cj, sj, cpu = iperf3(env, opts, ["-P", str(streams)], counters=snap)
        gbps = cj["end"]["sum_received"]["bits_per_second"] / 1e9
        r = throughput_result(env, gbps, cpu, cj["end"].get("sum_sent", {}).get("retransmits"))
        r.update({
            "switch_drop_reasons": snap.switch_drops() or None,
            "sender_if_tx_dropped": snap.delta("h1_tx_dropped"),
            "switch_socket_drops": snap.delta("sw_sock_drops"),
        })
        return r
    return t


def test_udp64(env, opts):
    # 18 bytes of UDP payload + 8 UDP + 20 IPv4 + 14 Ethernet = 60 bytes, i.e. a
    # minimum-size 64-byte frame on the wire once padded and with FCS.
    snap = Counters(env, opts)
    cj, sj, cpu = iperf3(env, opts, ["-u", "-b", "0", "-l", "18"], counters=snap)
    end = cj["end"]
    sent = end.get("sum_sent", {})
    recv = end.get("sum_received") or end.get("sum", {})
    sent_pkts = sent.get("packets")
    secs = sent.get("seconds") or end.get("sum", {}).get("seconds") or opts.duration
    if sent_pkts is None:
        sent_pkts = end["sum"]["packets"]
    # Server side: packets counted at the receiver, lost = gaps in the sequence.
    srv = None
    if sj and "end" in sj:
        srv = sj["end"].get("sum") or sj["end"].get("sum_received")
    if srv and srv.get("packets") is not None:
        total = srv["packets"]
        lost = srv.get("lost_packets", 0)
        rsecs = srv.get("seconds") or secs
    else:
        total = recv.get("packets", 0)
        lost = recv.get("lost_packets", 0)
        rsecs = recv.get("seconds") or secs
    received = max(0, total - lost)
    offered_mfps = sent_pkts / secs / 1e6
    received_mfps = received / rsecs / 1e6
    loss_pct = 100.0 * (1.0 - received / sent_pkts) if sent_pkts else None
    # Frames lost inside the switch: for vswitch from its own counters (frames
    # received on ports minus frames sent, and counted drops); for a kernel
    # bridge whatever is not explained by the host-side counters.
    switch_reasons = snap.switch_drops()
    if snap.has_daemon_stats():
        switch_lost = max(0, snap.delta("sw_rx") - snap.delta("sw_tx")) + snap.delta("sw_sock_drops")
    else:
        switch_lost = max(0, sent_pkts - received - snap.delta("h1_tx_dropped")
                          - snap.delta("h2_rx_dropped") - snap.delta("h2_udp_rcvbuf_errors"))
    sw = switch_cores(env, cpu)
    return {
        "offered_mfps": offered_mfps,
        "received_mfps": received_mfps,
        "loss_pct": max(0.0, loss_pct) if loss_pct is not None else None,
        "switch_cores": sw,
        "switch_cores_per_mfps": (sw / received_mfps) if (sw is not None and received_mfps > 0) else None,
        "kfps_per_switch_core": (received_mfps * 1000.0 / sw) if (sw is not None and sw > 0.01) else None,
        "sys_minus_endpoints_cores": cpu["system_minus_endpoints_cores"],
        "sys_minus_endpoints_per_mfps": (cpu["system_minus_endpoints_cores"] / received_mfps)
        if received_mfps > 0 else None,
        "total_cores": cpu["system_busy_cores"],
        "total_cores_per_mfps": (cpu["system_busy_cores"] / received_mfps) if received_mfps > 0 else None,
        "steal_cores": cpu["steal_cores"],
        # where the frames were lost, in % of frames sent
        "lost_at_sender_if_pct": pct(snap.delta("h1_tx_dropped"), sent_pkts),
        "lost_at_receiver_if_pct": pct(snap.delta("h2_rx_dropped"), sent_pkts),
        "lost_in_receiver_socket_pct": pct(snap.delta("h2_udp_rcvbuf_errors"), sent_pkts),
        "lost_in_switch_pct": pct(switch_lost, sent_pkts),
        "switch_drop_reasons": switch_reasons or None,
        "switch_socket_drops": snap.delta("sw_sock_drops"),
    }


def pct(n, total):
    if n is None or not total:
        return None
    return 100.0 * n / total


def link_counters(ns, ifname):
    cp = run(nsexec(ns, "ip", "-s", "-j", "link", "show", "dev", ifname), check=False)
    try:
        st = json.loads(cp.stdout)[0]["stats64"]
        return st["rx"], st["tx"]
    except (ValueError, KeyError, IndexError):
        return {}, {}


def udp_snmp(ns):
    """Udp: counters of a namespace's /proc/net/snmp (per network namespace)."""
    cp = run(nsexec(ns, "cat", "/proc/net/snmp"), check=False)
    lines = [l.split() for l in cp.stdout.splitlines() if l.startswith("Udp:")]
    if len(lines) >= 2:
        return dict(zip(lines[0][1:], (int(x) for x in lines[1][1:])))
    return {}


class Counters:
    """Before/after snapshots of the counters that say where UDP frames died."""

    def __init__(self, env, opts):
        self.env = env
        self.opts = opts
        self.snaps = []

    def take(self):
        env = self.env
        _, h1tx = link_counters(env.h1, "eth0")
        h2rx, _ = link_counters(env.h2, env.h2_if)
        snmp = udp_snmp(env.h2)
        d = {"h1_tx_dropped": h1tx.get("dropped", 0),
             "h2_rx_dropped": h2rx.get("dropped", 0),
             "h2_udp_rcvbuf_errors": snmp.get("RcvbufErrors", 0)}
        if env.daemon is not None and env.daemon.poll() is None:
            # drops inside the daemon's packet sockets (receive buffer full), which
            # the daemon's own counters cannot see: sk_drops via `ss -0 -m`
            cp = run(nsexec(env.sw, "ss", "-0", "-m", "-n", "-H"), check=False)
            d["sw_sock_drops"] = sum(int(x) for x in re.findall(r"[,(]d(\d+)\)", cp.stdout))
            cp = vswitchctl(env, self.opts, "stats", "--json", check=False)
            try:
                ports = json.loads(cp.stdout)
                d["sw_rx"] = sum(p.get("rx_packets", 0) for p in ports)
                d["sw_tx"] = sum(p.get("tx_packets", 0) for p in ports)
                drops = {}
                for p in ports:
                    for k, v in (p.get("drops") or {}).items():
                        drops[k] = drops.get(k, 0) + v
                d["sw_drops"] = drops
            except (ValueError, AttributeError, TypeError):
                pass
        self.snaps.append(d)

    def has_daemon_stats(self):
        return len(self.snaps) >= 2 and all("sw_rx" in s for s in self.snaps[:2])

    def delta(self, key):
        if len(self.snaps) < 2:
            return 0
        return self.snaps[-1].get(key, 0) - self.snaps[0].get(key, 0)

    def switch_drops(self):
        if not self.has_daemon_stats():
            return {}
        a, b = self.snaps[0].get("sw_drops", {}), self.snaps[-1].get("sw_drops", {})
        return {k: b[k] - a.get(k, 0) for k in b if b[k] - a.get(k, 0) > 0}


def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def ping_times_us(text):
    """The round trips (µs) of ping's reply lines ("... time=0.512 ms"),
    iputils' and busybox's alike."""
    times = []
    for line in text.splitlines():
        i = line.find("time=")
        if i < 0:
            continue
        f = line[i + 5:].split()
        if len(f) >= 2 and f[1] == "ms" or len(f) == 1 and f[0].endswith("ms"):
            try:
                times.append(float(f[0].removesuffix("ms")) * 1000.0)
            except ValueError:
                pass
    return times


def test_rtt(env, opts):
    if getattr(env, "vm_b", None) is not None:
        return test_vm2_rtt(env, opts)
    count = opts.ping_count
    interval = opts.ping_interval
    bound = count * interval + 10
    with CpuWindow(None) as win:
        cp = run(nsexec(env.h1, "ping", "-n", "-i", str(interval), "-c", str(count), "-W", "1",
                        "-w", str(int(bound)), env.h2_ip), check=False, timeout=bound + 10)
    times = ping_times_us(cp.stdout)
    if not times:
        raise BenchError("ping got no replies: %s" % (cp.stdout[-300:] + cp.stderr[-300:]))
    times.sort()
    return {
        "rtt_median_us": statistics.median(times),
        "rtt_p99_us": percentile(times, 99),
        "ping_loss_pct": 100.0 * (count - len(times)) / count,
        "steal_cores": win.result(0.0)["steal_cores"],
    }


# The RTT-vs-rate sweep: requests (pings) a second, and how many of each.
SWEEP_RATES = (10, 100, 1000, 10000)


def sweep_count(rate, opts):
    """Requests at one rate: --sweep-seconds of them, at least 100 (a p99)."""
    return max(100, int(rate * opts.sweep_seconds))


RR_PORT = 5202


def test_rttsweep(env, opts):
    """UDP request/response h1 -> h2 (udp-rr: an echo server on h2, a client
    that sleeps until each request is due) at 10, 100, 1000 and 10000
    requests a second, lowest first, with the switch's CPU at each rate: what
    request/response traffic at that rate sees, and what it costs. Not
    ping: iputils ping spins a core between requests below 2 ms intervals
    (and cannot go faster than 1 ms), which keeps the client's CPU awake and
    favours a switch that works on the sender's CPU."""
    server = Measured(nsexec(env.h2, os.path.join(opts.bin_dir, "udp-rr"), "server",
                             "%s:%d" % (env.h2_ip, RR_PORT)), "udp-rr server[%s]" % env.name)
    r = {}
    try:
        time.sleep(0.2)
        for rate in SWEEP_RATES:
            count = sweep_count(rate, opts)
            bound = count / rate + 10
            with CpuWindow(env.switch_pid) as win:
                cp = run(nsexec(env.h1, os.path.join(opts.bin_dir, "udp-rr"), "client",
                                "%s:%d" % (env.h2_ip, RR_PORT), "--rate", str(rate),
                                "--count", str(count), "--timeout-ms", "1000"),
                         check=False, timeout=bound + 10)
            try:
                res = json.loads(cp.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                raise BenchError("udp-rr at %d/s: %s" % (rate, (cp.stdout + cp.stderr)[-300:]))
            if not res.get("replies"):
                raise BenchError("udp-rr at %d/s got no replies" % rate)
            r["r%d_median_us" % rate] = res["median_us"]
            r["r%d_p99_us" % rate] = res["p99_us"]
            r["r%d_loss_pct" % rate] = 100.0 * (count - res["replies"]) / count
            r["r%d_switch_cores" % rate] = switch_cores(env, win.result(0.0))
            time.sleep(opts.settle)
    finally:
        if server.p.poll() is None:
            REG.kill_proc(server.p, server.desc, grace=2.0)
    return r


# RFC 2544-style no-drop rate: highest offered rate with loss below this.
NDR_LOSS_PCT = 0.1
NDR_STEPS = 6


def udp64_trial(env, opts, rate_pps, secs):
    """One iperf3 run of 18-byte UDP payloads (64-byte frames) at rate_pps
    (0: as fast as the sender can). Returns (offered pps, path loss %, end-to-end
    loss %, cpu): path loss leaves out what the receiving socket dropped
    (its buffer full: the receiving application, not the path, was slow)."""
    bw = "0" if rate_pps == 0 else str(int(rate_pps * 18 * 8))
    saved = opts.duration
    opts.duration = secs
    snap = Counters(env, opts)
    try:
        cj, sj, cpu = iperf3(env, opts, ["-u", "-b", bw, "-l", "18", "--pacing-timer", "100"],
                             counters=snap)
    finally:
        opts.duration = saved
    end = cj["end"]
    sent = end.get("sum_sent") or end.get("sum", {})
    sent_pkts = sent.get("packets") or end.get("sum", {}).get("packets") or 0
    secs_sent = sent.get("seconds") or secs
    srv = (sj.get("end", {}).get("sum") or sj.get("end", {}).get("sum_received")) if sj else None
    src = srv if srv and srv.get("packets") is not None else (end.get("sum_received") or end.get("sum", {}))
    received = max(0, src.get("packets", 0) - src.get("lost_packets", 0))
    if not sent_pkts:
        raise BenchError("iperf3 sent nothing at %s pps" % rate_pps)
    lost = max(0, sent_pkts - received)
    path_lost = max(0, lost - snap.delta("h2_udp_rcvbuf_errors"))
    return sent_pkts / secs_sent, 100.0 * path_lost / sent_pkts, 100.0 * lost / sent_pkts, cpu


def test_ndr64(env, opts):
    """No-drop rate of 64-byte frames h1 -> h2 (RFC 2544 section 26.1 style,
    as VPP's CSIT and OVS report it): a trial at the sender's full speed, then
    a binary search on the offered rate for the highest one with loss below
    NDR_LOSS_PCT, each trial --ndr-seconds long. Loss is what the path lost:
    frames sent minus frames received, less those the receiving socket
    dropped with its buffer full (the receiving application was slow, not
    the path; on 2 CPUs it shares them with the sender and the switch). The
    end-to-end loss at the rate found is reported beside it. When even the
    full-speed trial loses nothing, the figure is the sender's
    (ndr_sender_bound = 1)."""
    secs = opts.ndr_seconds
    top, loss, e2e, cpu = udp64_trial(env, opts, 0, secs)
    r = {"saturation_offered_mfps": top / 1e6, "saturation_loss_pct": loss}
    if loss < NDR_LOSS_PCT:
        r.update({"ndr_mfps": top / 1e6, "ndr_sender_bound": 1, "ndr_trials": 1,
                  "ndr_e2e_loss_pct": e2e, "ndr_switch_cores": switch_cores(env, cpu)})
        return r
    lo, hi, best, trials = 0.0, top, None, 1
    for _ in range(NDR_STEPS):
        mid = (lo + hi) / 2
        offered, loss, e2e, cpu = udp64_trial(env, opts, mid, secs)
        trials += 1
        if loss < NDR_LOSS_PCT:
            lo = mid
            if best is None or offered > best[0]:
                best = (offered, e2e, cpu)
        else:
            hi = mid
        time.sleep(0.5)
    r.update({"ndr_mfps": best[0] / 1e6 if best else 0.0, "ndr_sender_bound": 0,
              "ndr_trials": trials, "ndr_e2e_loss_pct": best[1] if best else None,
              "ndr_switch_cores": switch_cores(env, best[2]) if best else None})
    return r


class Test:
    def __init__(self, name, label, fn):
        self.name = name
        self.label = label
        self.fn = fn


TESTS = [
    Test("tcp1", "TCP 1 stream", test_tcp(1)),
    Test("tcp4", "TCP 4 streams", test_tcp(4)),
    Test("udp64", "UDP 64-byte frames", test_udp64),
    Test("rtt", "ping round trip", test_rtt),
    Test("rttsweep", "UDP request/response round trip vs request rate", test_rttsweep),
    Test("ndr64", "64-byte no-drop rate", test_ndr64),
]

# Tests a run without --only leaves out (they take a minute a scenario);
# --only latency asks for both.
TEST_GROUPS = {"latency": ["rttsweep", "ndr64"]}

# (test, metric key, label, unit, scale, better) -- what the table/JSON/SVG report.
METRICS = [
    ("tcp1", "gbps", "TCP 1 stream throughput", "Gbit/s", 1, "higher"),
    ("tcp1", "retransmits", "TCP 1 stream retransmits", "segments", 1, "lower"),
    ("tcp1", "switch_cores", "TCP 1 stream switch CPU", "cores", 1, "lower"),
    ("tcp1", "switch_cores_per_gbps", "TCP 1 stream CPU per Gbit/s", "cores/(Gbit/s)", 1, "lower"),
    ("tcp4", "gbps", "TCP 4 streams throughput", "Gbit/s", 1, "higher"),
    ("tcp4", "retransmits", "TCP 4 streams retransmits", "segments", 1, "lower"),
    ("tcp4", "switch_cores", "TCP 4 streams switch CPU", "cores", 1, "lower"),
    ("tcp4", "switch_cores_per_gbps", "TCP 4 streams CPU per Gbit/s", "cores/(Gbit/s)", 1, "lower"),
    ("udp64", "offered_mfps", "UDP 64B offered", "Mframe/s", 1, "higher"),
    ("udp64", "received_mfps", "UDP 64B received", "Mframe/s", 1, "higher"),
    ("udp64", "loss_pct", "UDP 64B loss", "%", 1, "lower"),
    ("udp64", "lost_at_sender_if_pct", "  lost at sender interface", "%", 1, "lower"),
    ("udp64", "lost_in_switch_pct", "  lost in the switch", "%", 1, "lower"),
    ("udp64", "lost_at_receiver_if_pct", "  lost at receiver interface", "%", 1, "lower"),
    ("udp64", "lost_in_receiver_socket_pct", "  lost in receiver socket", "%", 1, "lower"),
    ("udp64", "switch_cores", "UDP 64B switch CPU", "cores", 1, "lower"),
    ("udp64", "switch_cores_per_mfps", "UDP 64B CPU per Mframe/s", "cores/(Mframe/s)", 1, "lower"),
    ("udp64", "kfps_per_switch_core", "UDP 64B frames per switch core", "kframe/s/core", 1, "higher"),
    ("rtt", "rtt_median_us", "RTT median", "us", 1, "lower"),
    ("rtt", "rtt_p99_us", "RTT p99", "us", 1, "lower"),
    ("rtt", "ping_loss_pct", "ping loss", "%", 1, "lower"),
] + [m for rate in SWEEP_RATES for m in (
    ("rttsweep", "r%d_median_us" % rate, "RTT median at %d req/s" % rate, "us", 1, "lower"),
    ("rttsweep", "r%d_p99_us" % rate, "RTT p99 at %d req/s" % rate, "us", 1, "lower"),
    ("rttsweep", "r%d_switch_cores" % rate, "  switch CPU at %d req/s" % rate, "cores", 1, "lower"),
    ("rttsweep", "r%d_loss_pct" % rate, "  requests lost at %d req/s" % rate, "%", 1, "lower"),
)] + [
    ("ndr64", "ndr_mfps", "64B no-drop rate (path loss <0.1%)", "Mframe/s", 1, "higher"),
    ("ndr64", "ndr_switch_cores", "  switch CPU at the no-drop rate", "cores", 1, "lower"),
    ("ndr64", "ndr_e2e_loss_pct", "  end-to-end loss there (receiver socket too)", "%", 1, "lower"),
    ("ndr64", "ndr_sender_bound", "  sender-bound (1 = no loss at full speed)", "", 1, "lower"),
    ("ndr64", "saturation_offered_mfps", "64B sender's full speed", "Mframe/s", 1, "higher"),
    ("ndr64", "saturation_loss_pct", "  path loss at full speed", "%", 1, "lower"),
    # Same method for every scenario (comparable across kernel/vswitch):
    ("tcp1", "total_cores_per_gbps", "TCP 1 stream total CPU per Gbit/s", "cores/(Gbit/s)", 1, "lower"),
    ("tcp4", "total_cores_per_gbps", "TCP 4 streams total CPU per Gbit/s", "cores/(Gbit/s)", 1, "lower"),
    ("udp64", "total_cores_per_mfps", "UDP 64B total CPU per Mframe/s", "cores/(Mframe/s)", 1, "lower"),
    ("tcp1", "above_direct_per_gbps", "TCP 1 stream CPU above direct veth per Gbit/s", "cores/(Gbit/s)", 1, "lower"),
    ("tcp4", "above_direct_per_gbps", "TCP 4 streams CPU above direct veth per Gbit/s", "cores/(Gbit/s)", 1, "lower"),
    ("udp64", "above_direct_per_mfps", "UDP 64B CPU above direct veth per Mframe/s", "cores/(Mframe/s)", 1, "lower"),
    ("tcp1", "sys_minus_endpoints_per_gbps", "TCP 1 stream non-endpoint CPU per Gbit/s", "cores/(Gbit/s)", 1, "lower"),
    ("tcp4", "sys_minus_endpoints_per_gbps", "TCP 4 streams non-endpoint CPU per Gbit/s", "cores/(Gbit/s)", 1, "lower"),
    ("udp64", "sys_minus_endpoints_per_mfps", "UDP 64B non-endpoint CPU per Mframe/s", "cores/(Mframe/s)", 1, "lower"),
]

# The performance issue's targets for the L2 and routed scenarios, each judged on the
# medians of this run: (id, text, scenario, test, key, how, threshold).
# how: "ratio>=" / "ratio<=" compare the scenario's median with its baseline's;
# "<" compares the scenario's own median; "ratio>=ratio:TEST" compares the
# ratio of this test with the ratio of TEST (4 streams no worse than 1).
TARGETS = [
    ("tcp1-tap", "TCP 1 stream, TAP ports >= 0.9x kernel bridge", "vs-tap", "tcp1", "gbps", "ratio>=", 0.9),
    ("tcp1-afp", "TCP 1 stream, AF_PACKET ports >= 0.8x kernel bridge", "vs-afp", "tcp1", "gbps", "ratio>=", 0.8),
    ("tcp4-tap", "TCP 4 streams no worse than 1 stream (TAP)", "vs-tap", "tcp4", "gbps", "ratio>=ratio:tcp1", None),
    ("tcp4-afp", "TCP 4 streams no worse than 1 stream (AF_PACKET)", "vs-afp", "tcp4", "gbps", "ratio>=ratio:tcp1", None),
    ("udp-tap", "UDP 64B loss < 1 % (TAP)", "vs-tap", "udp64", "loss_pct", "<", 1.0),
    ("udp-afp", "UDP 64B loss < 1 % (AF_PACKET)", "vs-afp", "udp64", "loss_pct", "<", 1.0),
    ("rtt-tap", "RTT median <= 1.3x kernel bridge (TAP)", "vs-tap", "rtt", "rtt_median_us", "ratio<=", 1.3),
    ("rtt-afp", "RTT median <= 1.3x kernel bridge (AF_PACKET)", "vs-afp", "rtt", "rtt_median_us", "ratio<=", 1.3),
    ("p99-tap", "RTT p99 <= 2x kernel bridge (TAP)", "vs-tap", "rtt", "rtt_p99_us", "ratio<=", 2.0),
    ("p99-afp", "RTT p99 <= 2x kernel bridge (AF_PACKET)", "vs-afp", "rtt", "rtt_p99_us", "ratio<=", 2.0),
    ("r100-tap", "RTT median at 100 req/s <= 1.3x kernel bridge (TAP)", "vs-tap", "rttsweep",
     "r100_median_us", "ratio<=", 1.3),
    ("r1000-tap", "RTT median at 1000 req/s <= 1.3x kernel bridge (TAP)", "vs-tap", "rttsweep",
     "r1000_median_us", "ratio<=", 1.3),
    ("r100-afp", "RTT median at 100 req/s <= 1.3x kernel bridge (AF_PACKET)", "vs-afp", "rttsweep",
     "r100_median_us", "ratio<=", 1.3),
    ("r1000-afp", "RTT median at 1000 req/s <= 1.3x kernel bridge (AF_PACKET)", "vs-afp",
     "rttsweep", "r1000_median_us", "ratio<=", 1.3),
    ("r100-vde", "RTT median at 100 req/s below vde_switch (TAP)", "vs-tap", "rttsweep",
     "r100_median_us", "below:vde", None),
    ("r1000-vde", "RTT median at 1000 req/s below vde_switch (TAP)", "vs-tap", "rttsweep",
     "r1000_median_us", "below:vde", None),
    ("p100-tap", "RTT p99 at 100 req/s <= 2x kernel bridge (TAP)", "vs-tap", "rttsweep",
     "r100_p99_us", "ratio<=", 2.0),
    ("p1000-tap", "RTT p99 at 1000 req/s <= 2x kernel bridge (TAP)", "vs-tap", "rttsweep",
     "r1000_p99_us", "ratio<=", 2.0),
    ("ndr-tap", "64B no-drop rate >= kernel bridge's (TAP)", "vs-tap", "ndr64", "ndr_mfps",
     "ratio>=", 1.0),
    ("ndr-afp", "64B no-drop rate >= kernel bridge's (AF_PACKET)", "vs-afp", "ndr64", "ndr_mfps",
     "ratio>=", 1.0),
    ("tcp1-rtap", "routed TCP 1 stream >= 0.8x kernel router (TAP)", "vs-rtap", "tcp1", "gbps",
     "ratio>=", 0.8),
    ("tcp1-rafp", "routed TCP 1 stream >= 0.8x kernel router (AF_PACKET)", "vs-rafp", "tcp1", "gbps",
     "ratio>=", 0.8),
    ("vm-tcp-vhost", "guest->host TCP, vhost-user >= 1.5x kernel bridge + QEMU TAP", "vs-vhost",
     "tcp1", "gbps", "ratio>=", 1.5),
    ("vm-rtt-vhost", "guest->host RTT median, vhost-user below kernel bridge + QEMU TAP",
     "vs-vhost", "rtt", "rtt_median_us", "below:kernel-vm", None),
    ("vm2-tcp-vhost", "guest<->guest TCP, vhost-user >= 1.5x kernel bridge + QEMU TAPs",
     "vs-vhost2", "tcp1", "gbps", "ratio>=", 1.5),
    ("vm2-rtt-vhost", "guest<->guest RTT median, vhost-user below kernel bridge + QEMU TAPs",
     "vs-vhost2", "rtt", "rtt_median_us", "below:kernel-vm2", None),
]


def judge_targets(agg, scenarios, tests):
    """Each target this run can judge: dict(id, text, value, limit, met)."""
    by = {s.name: s for s in scenarios}
    tnames = {t.name for t in tests}
    out = []

    def med(sc, test, key):
        return agg.get(sc, {}).get((test, key), (None, []))[0]

    def rat(sc, test, key):
        s = by.get(sc)
        if s is None or s.baseline not in by:
            return None
        return ratio(med(sc, test, key), med(s.baseline, test, key))

    for tid, text, sc, test, key, how, thr in TARGETS:
        if sc not in by or test not in tnames:
            continue
        if how == "<":
            v, limit = med(sc, test, key), thr
            met = v is not None and v < thr
        elif how.startswith("below:"):
            # below another scenario's median: the ratio to it, limit 1
            other = how.split(":", 1)[1]
            if other not in by:
                continue
            v, limit = ratio(med(sc, test, key), med(other, test, key)), 1.0
            met = v is not None and v < 1.0
        elif how.startswith("ratio>=ratio:"):
            other = how.split(":", 1)[1]
            if other not in tnames:
                continue
            v, limit = rat(sc, test, key), rat(sc, other, key)
            met = v is not None and limit is not None and v >= limit
        else:
            v, limit = rat(sc, test, key), thr
            met = v is not None and (v >= thr if how == "ratio>=" else v <= thr)
        out.append({"id": tid, "text": text, "value": v, "limit": limit, "met": met,
                    "unit": "%" if how == "<" else "x"})
    return out


def print_targets(agg, scenarios, tests, out=sys.stdout):
    t = judge_targets(agg, scenarios, tests)
    if not t:
        return
    print(file=out)
    print("Targets (medians of this run):", file=out)
    w = max(len(x["text"]) for x in t)
    for x in t:
        val = "-" if x["value"] is None else ("%.2f%s" % (x["value"], x["unit"]))
        lim = "" if x["limit"] is None else (" (limit %.2f%s)" % (x["limit"], x["unit"]))
        print("  %s  %-9s %s%s" % (x["text"].ljust(w), val, "met" if x["met"] else "NOT met", lim),
              file=out)


# metrics drawn in the SVG
SVG_METRICS = [
    ("tcp1", "gbps"), ("tcp4", "gbps"), ("udp64", "received_mfps"),
    ("rtt", "rtt_median_us"), ("rtt", "rtt_p99_us"),
    ("tcp1", "switch_cores_per_gbps"), ("tcp4", "switch_cores_per_gbps"),
    ("udp64", "switch_cores_per_mfps"),
    ("tcp1", "total_cores_per_gbps"), ("udp64", "total_cores_per_mfps"),
]


# --------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------

def run_benchmark(opts, scenarios, tests):
    # results[scenario][test] = list of per-round dicts (or {"error": ...})
    results = {s.name: {t.name: [] for t in tests} for s in scenarios}
    notes = {s.name: [] for s in scenarios}
    errors = []
    background = {s.name: [] for s in scenarios}
    for rnd in range(opts.rounds):
        # ABC, CBA, ABC, ... so slow drift and order effects cancel in the medians
        order = scenarios if rnd % 2 == 0 else list(reversed(scenarios))
        for sc in order:
            env = Env(sc.name)
            log("round %d/%d: %s: setting up" % (rnd + 1, opts.rounds, sc.label))
            try:
                try:
                    sc.setup(env, opts)
                    wait_reachable(env.h1, env.h2_ip, timeout=opts.ready_timeout)
                    time.sleep(opts.settle)
                    idle = idle_probe(env, opts)
                    background[sc.name].append(idle)
                    if idle["system_busy_cores"] > 0.15:
                        log("warning: %.2f cores busy with no benchmark traffic (other load on "
                            "the machine?) -- figures from this round will be noisy"
                            % idle["system_busy_cores"])
                except BenchError as e:
                    msg = "%s: setup failed: %s" % (sc.label, e)
                    log(msg)
                    errors.append({"round": rnd + 1, "scenario": sc.name, "error": str(e)})
                    continue
                for t in tests:
                    if sc.tests is not None and t.name not in sc.tests:
                        continue
                    try:
                        env.perf_tag = "%s-%s-r%d" % (sc.name, t.name, rnd + 1)
                        env.profile = None
                        r = t.fn(env, opts)
                        if env.profile:
                            r.update(env.profile)
                        log("round %d/%d: %s: %s: %s" % (rnd + 1, opts.rounds, sc.label, t.label,
                                                         summarize(r)))
                        results[sc.name][t.name].append(r)
                    except BenchError as e:
                        log("round %d/%d: %s: %s failed: %s" % (rnd + 1, opts.rounds, sc.label,
                                                                t.label, e))
                        errors.append({"round": rnd + 1, "scenario": sc.name, "test": t.name,
                                       "error": str(e)})
                    if env.daemon is not None and env.daemon.poll() is not None:
                        raise_daemon_died(env)
                    time.sleep(opts.settle)
            except BenchError as e:
                log("%s: %s" % (sc.label, e))
                errors.append({"round": rnd + 1, "scenario": sc.name, "error": str(e)})
            finally:
                log_daemon_stats(env, opts)
                sc.teardown(env)
                for n in env.notes:
                    if n not in notes[sc.name]:
                        notes[sc.name].append(n)
    return results, notes, errors, background


def idle_probe(env, opts):
    """CPU use of the idle topology: background load of the machine, and for
    vswitch the daemon's own idle cost (e.g. busy polling)."""
    with CpuWindow(env.switch_pid) as w:
        time.sleep(opts.idle_probe)
    r = {"system_busy_cores": (w.sys1 - w.sys0) / w.wall}
    if w.sw0 is not None and w.sw1 is not None:
        r["daemon_idle_cores"] = (w.sw1 - w.sw0) / w.wall
    return r


def raise_daemon_died(env):
    rc = env.daemon.returncode
    text = tail_file(env.daemon_log)
    REG.forget_proc(env.daemon)
    env.daemon = None
    raise BenchError("vswitchd died (status %s); log tail:\n%s" % (rc, text))


def log_daemon_stats(env, opts):
    if env.daemon is None or env.daemon.poll() is not None or not opts.verbose:
        return
    cp = vswitchctl(env, opts, "stats", "--json", check=False)
    vlog("vswitchd stats: " + (cp.stdout.strip() or cp.stderr.strip())[:2000])


def summarize(r):
    return ", ".join("%s=%s" % (k, fmt(v)) for k, v in r.items())


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 100:
            return "%.0f" % v
        if a >= 10:
            return "%.1f" % v
        if a >= 1:
            return "%.2f" % v
        return "%.3g" % v
    return str(v)


def aggregate(results, scenarios):
    """medians over rounds; agg[scenario][(test, key)] = (median, [values])"""
    agg = {}
    for s in scenarios:
        agg[s.name] = {}
        for test, rounds in results[s.name].items():
            keys = set()
            for r in rounds:
                keys.update(r.keys())
            for k in keys:
                vals = [r[k] for r in rounds if isinstance(r.get(k), (int, float))]
                if vals or all(r.get(k) is None for r in rounds):
                    agg[s.name][(test, k)] = (statistics.median(vals) if vals else None, vals)
    # Derived: total CPU per unit of work above the no-switch reference (the
    # switch's whole cost, wherever the kernel accounted it).
    ref = next((s for s in scenarios if s.kind == "reference"), None)
    if ref is not None:
        for s in scenarios:
            for test, per, key in (("tcp1", "total_cores_per_gbps", "above_direct_per_gbps"),
                                   ("tcp4", "total_cores_per_gbps", "above_direct_per_gbps"),
                                   ("udp64", "total_cores_per_mfps", "above_direct_per_mfps")):
                v = agg[s.name].get((test, per), (None, []))[0]
                b = agg[ref.name].get((test, per), (None, []))[0]
                if v is not None and b is not None and s is not ref:
                    agg[s.name][(test, key)] = (v - b, [])
    return agg


def ratio(v, base):
    if v is None or base is None or base <= 0 or v < 0:
        return None
    return v / base


def compare_cell(v, b, unit):
    """Ratio column text: a ratio, or for percentages the difference in points."""
    if unit == "%":
        return ("%+.1fpt" % (v - b)) if (v is not None and b is not None) else "-"
    r = ratio(v, b)
    return ("%.2fx" % r) if r is not None else "-"


def irq_time_accounting():
    """True/False if the kernel config says whether softirq time is accounted
    separately (CONFIG_IRQ_TIME_ACCOUNTING), None if unknown."""
    import gzip
    for path, opener in (("/proc/config.gz", gzip.open), ("/boot/config-" + platform.release(), open)):
        try:
            with opener(path, "rt") as f:
                for line in f:
                    if line.startswith("CONFIG_IRQ_TIME_ACCOUNTING="):
                        return line.strip().endswith("=y")
            return False
        except OSError:
            continue
    return None


def host_info():
    """What this machine is, as far as it bounds the results: a userspace switch
    on a VM without vhost-net copies every frame twice through the kernel, and a
    guest without a polling cpuidle driver pays a hypervisor exit to wake a
    halted vCPU (the ping's) -- the kernel bridge needs neither."""
    def read(path):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return None
    model = None
    for line in (read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "cpu_model": model,
            "python": platform.python_version(),
            "vhost_net": os.path.exists("/dev/vhost-net"),
            "cpuidle_driver": read("/sys/devices/system/cpu/cpuidle/current_driver")}


IRQ_NOTE = ("This kernel does not account softirq time separately "
            "(CONFIG_IRQ_TIME_ACCOUNTING off): the kernel bridge's softirq work is charged "
            "to whichever task was running, mostly the iperf3 processes, so the kernel "
            "bridge's 'switch CPU' by subtraction misses most of its cost (near 0 on a quiet "
            "machine). Compare the 'total CPU' and "
            "'CPU above direct veth' rows instead; they count everything the machine spent.")


def print_table(agg, scenarios, tests, opts, out=sys.stdout):
    tnames = {t.name for t in tests}
    cols = []   # (scenario, is_ratio)
    for s in scenarios:
        cols.append((s, False))
        if s.baseline and any(b.name == s.baseline for b in scenarios):
            cols.append((s, True))
    header = ["metric", "unit"] + [("%s/%s" % (s.name, s.baseline)) if isr else s.label
                                   for s, isr in cols]
    rows = []
    for test, key, label, unit, _, better in METRICS:
        if test not in tnames:
            continue
        row = [label + (" (↑)" if better == "higher" else " (↓)"), unit]
        any_val = False
        for s, isr in cols:
            v = agg[s.name].get((test, key), (None, []))[0]
            if isr:
                b = agg[s.baseline].get((test, key), (None, []))[0]
                row.append(compare_cell(v, b, unit))
            else:
                row.append(fmt(v))
                any_val = any_val or v is not None
        if any_val:
            rows.append(row)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = "  ".join(h.ljust(widths[i]) if i < 2 else h.rjust(widths[i]) for i, h in enumerate(header))
    print(line, file=out)
    print("-" * len(line), file=out)
    for r in rows:
        print("  ".join(str(c).ljust(widths[i]) if i < 2 else str(c).rjust(widths[i])
                        for i, c in enumerate(r)), file=out)
    print(file=out)
    print("Medians over %d round(s) of %ds each; ratio columns are vswitch/kernel "
          "(↑ higher is better, ↓ lower is better)." % (opts.rounds, opts.duration), file=out)
    print("'cores' = CPU-seconds per second of wall time during the measurement.", file=out)
    print("Switch CPU is measured differently per scenario:", file=out)
    for s in scenarios:
        print("  %s: %s." % (s.label, s.cpu_method), file=out)
    print("'non-endpoint CPU' rows use the kernel method for every scenario (system busy "
          "minus iperf3), so they include the veth/TAP/stack work on both sides and are "
          "comparable across rows.", file=out)
    print("'total CPU' = all busy CPU of the machine; 'CPU above direct veth' = total CPU per "
          "unit minus that of a plain veth pair between the hosts (no switch).", file=out)
    if irq_time_accounting() is False:
        print(IRQ_NOTE, file=out)


def print_background(background, scenarios, out=sys.stdout):
    parts = []
    busy = []
    for s in scenarios:
        b = background.get(s.name, [])
        busy += [x["system_busy_cores"] for x in b]
        d = [x["daemon_idle_cores"] for x in b if "daemon_idle_cores" in x]
        if d:
            parts.append("%s daemon idle %s cores" % (s.label, fmt(statistics.median(d))))
    if busy:
        print("Idle machine before each scenario's tests: median %s, max %s busy cores%s."
              % (fmt(statistics.median(busy)), fmt(max(busy)),
                 ("; " + ", ".join(parts)) if parts else ""), file=out)
        if max(busy) > 0.15:
            print("WARNING: other load was running during the benchmark; rerun on a quiet "
                  "machine for figures you want to keep.", file=out)


def print_steal(agg, scenarios, tests, out=sys.stdout):
    """Hypervisor steal over the tests: on a shared host, the one noise the
    idle probe cannot see."""
    vals = []
    for s in scenarios:
        for t in tests:
            vals += agg.get(s.name, {}).get((t.name, "steal_cores"), (None, []))[1]
    if not vals:
        return
    print("Hypervisor steal during the tests: median %s, max %s cores."
          % (fmt(statistics.median(vals)), fmt(max(vals))), file=out)
    if max(vals) > 0.05:
        print("WARNING: the hypervisor took CPU from this VM during some tests; their "
              "figures are noisy (see steal_cores per round in --json).", file=out)


def print_host(host, out=sys.stdout):
    """One line on the machine: the facts that bound a userspace switch here."""
    if not host:
        return
    print("Host: %s CPUs (%s), kernel %s, /dev/vhost-net %s, cpuidle driver %s."
          % (host.get("cpus"), host.get("cpu_model") or "?", host.get("kernel"),
             {True: "present", False: "absent"}.get(host.get("vhost_net"), "unknown"),
             host.get("cpuidle_driver") or "unknown"), file=out)


def svg_chart(agg, scenarios, path):
    scenarios = [s for s in scenarios if s.kind != "reference"]
    base_of = {s.name: (s.baseline or s.name) for s in scenarios}
    groups = []
    for test, key in SVG_METRICS:
        m = next((m for m in METRICS if m[0] == test and m[1] == key), None)
        if m is None:
            continue
        bars = []
        for s in scenarios:
            v = agg.get(s.name, {}).get((test, key), (None, []))[0]
            b = agg.get(base_of[s.name], {}).get((test, key), (None, []))[0]
            bars.append((s, ratio(v, b), v))
        if any(r is not None for _, r, _ in bars):
            groups.append((m, bars))
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860",
              "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"]
    W_bar, gap, left, top, height = 22, 28, 60, 90, 260
    nb = len(scenarios)
    gw = nb * W_bar + gap
    width = max(left + max(1, len(groups)) * gw + 40, left + 170 * len(scenarios) + 40)
    vmax = max([r for _, bars in groups for _, r, _ in bars if r is not None] + [1.0])
    vmax = min(vmax * 1.1, 10.0)
    y = lambda v: top + height - (min(v, vmax) / vmax) * height
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif" font-size="11">' % (width, top + height + 230),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="20" font-size="14" font-weight="bold">vswitch vs the Linux kernel '
           '(normalized: kernel = 1.0)</text>' % left,
           '<text x="%d" y="38" fill="#555">%s</text>' % (left, esc(
               "medians over rounds; each bar = scenario / its kernel baseline; "
               "(↑) higher is better, (↓) lower is better"))]
    # axis and grid
    tick = 0.5 if vmax <= 3 else (1.0 if vmax <= 6 else 2.0)
    t = 0.0
    while t <= vmax + 1e-9:
        yy = y(t)
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (left, yy, width - 20, yy))
        out.append('<text x="%d" y="%.1f" text-anchor="end">%.1f</text>' % (left - 6, yy + 4, t))
        t += tick
    out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#333" stroke-dasharray="4,3"/>'
               % (left, y(1.0), width - 20, y(1.0)))
    for gi, (m, bars) in enumerate(groups):
        gx = left + gap / 2 + gi * gw
        for bi, (s, r, v) in enumerate(bars):
            if r is None:
                continue
            x = gx + bi * W_bar
            out.append('<rect x="%.1f" y="%.1f" width="%d" height="%.1f" fill="%s">'
                       '<title>%s: %s %s (%.2fx)</title></rect>'
                       % (x, y(r), W_bar - 3, top + height - y(r), colors[bi % len(colors)],
                          esc(s.label), fmt(v), esc(m[3]), r))
            out.append('<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%.2f</text>'
                       % (x + (W_bar - 3) / 2, y(r) - 3, r))
        lx = gx + (nb * W_bar) / 2
        label = m[2] + (" (↑)" if m[5] == "higher" else " (↓)")
        out.append('<text transform="translate(%.1f,%d) rotate(35)" font-size="10">%s</text>'
                   % (lx - 10, top + height + 14, esc(label)))
    ly = 52
    for bi, s in enumerate(scenarios):
        lx = left + bi * 170
        out.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/>' % (lx, ly, colors[bi % len(colors)]))
        out.append('<text x="%d" y="%d">%s</text>' % (lx + 16, ly + 10, esc(s.label)))
    out.append("</svg>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def json_doc(agg, results, notes, errors, scenarios, tests, opts, started):
    doc = {
        "benchmark": "vswitch netbench",
        "started": started,
        "host": host_info(),
        "config": {"rounds": opts.rounds, "duration_s": opts.duration,
                   "tests": [t.name for t in tests], "scenarios": [s.name for s in scenarios],
                   "ping_count": opts.ping_count, "ping_interval_s": opts.ping_interval,
                   "offloads": "off" if opts.no_offload else "default",
                   "vswitchd_args": opts.vswitchd_arg,
                   "vm_tap_vectors": getattr(opts, "vm_tap_vectors", None),
                   "bin_dir": opts.bin_dir},
        "irq_time_accounting": irq_time_accounting(),
        "notes": ([IRQ_NOTE] if irq_time_accounting() is False else []),
        "scenarios": [{"name": s.name, "label": s.label, "kind": s.kind, "baseline": s.baseline,
                       "cpu_method": s.cpu_method, "notes": notes.get(s.name, [])}
                      for s in scenarios],
        "metrics": [{"test": m[0], "key": m[1], "label": m[2], "unit": m[3], "better": m[5]}
                    for m in METRICS if m[0] in {t.name for t in tests}],
        "results": {},
        "targets": judge_targets(agg, scenarios, tests),
        "errors": errors,
    }
    for s in scenarios:
        sr = {}
        for t in tests:
            entries = {}
            for (test, key), (med, vals) in agg[s.name].items():
                if test != t.name:
                    continue
                e = {"median": med, "rounds": vals}
                if s.baseline and s.baseline in agg:
                    b = agg[s.baseline].get((test, key), (None, []))[0]
                    e["ratio_to_baseline"] = ratio(med, b)
                entries[key] = e
            sr[t.name] = entries
        doc["results"][s.name] = sr
    doc["rounds"] = results
    return doc


# --------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="Side-by-side benchmark: Linux kernel bridge and router vs vswitch "
                    "(TAP, AF_PACKET and VXLAN ports; routed with SNAT).")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per scenario (default 3)")
    ap.add_argument("--duration", type=int, default=5, help="seconds per iperf3 test (default 5)")
    ap.add_argument("--only", default="",
                    help="comma list of tests: " + ",".join(t.name for t in TESTS)
                    + " (default all but rttsweep and ndr64); 'latency' stands for rttsweep,ndr64")
    ap.add_argument("--scenarios", default="",
                    help="comma list of scenarios: " + ",".join(s.name for s in SCENARIOS)
                    + " (default all); the groups " + ", ".join(
                        "%s (%s)" % (g, ",".join(m)) for g, m in SCENARIO_GROUPS.items())
                    + " stand for their members")
    ap.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of the table")
    ap.add_argument("--svg", metavar="FILE", help="write a bar chart (normalized to kernel = 1.0)")
    ap.add_argument("--from-json", metavar="FILE",
                    help="measure nothing: print the table and targets (and --svg) of a run "
                         "saved with --json (no root needed)")
    ap.add_argument("--bin-dir", default=os.path.join(REPO_ROOT, "target", "release"),
                    help="where vswitchd and vswitchctl are (default: <repo>/target/release)")
    ap.add_argument("--workers", type=int, default=0, help="pass --workers N to vswitchd")
    ap.add_argument("--vswitchd-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for vswitchd (repeatable), e.g. --vswitchd-arg=--busy-poll-us=0")
    ap.add_argument("--vm-tap-vectors", type=int, default=None, metavar="N",
                    help="VM rows: give the TAP guests' virtio-net-pci vectors=N (0: INTx "
                    "interrupts, as vhost-user guests must use with QEMU 7.2 under TCG)")
    ap.add_argument("--ping-count", type=int, default=500)
    ap.add_argument("--ping-interval", type=float, default=0.002)
    ap.add_argument("--sweep-seconds", type=float, default=3.0,
                    help="rttsweep: seconds of requests at each rate (at least 100; "
                         "default 3)")
    ap.add_argument("--ndr-seconds", type=int, default=3,
                    help="ndr64: seconds per trial of the no-drop-rate search (default 3)")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the 'direct veth' reference (no switch) used for the "
                         "CPU-above-direct rows")
    ap.add_argument("--no-offload", action="store_true",
                    help="turn TSO/GSO/GRO off on every veth/TAP endpoint (ethtool)")
    ap.add_argument("--underlay-gro-features", default="gro,rx-udp-gro-forwarding",
                    metavar="F1,F2",
                    help="ethtool features the -gro and -wire VXLAN rows turn on on H2's "
                         "underlay veth (default gro,rx-udp-gro-forwarding)")
    ap.add_argument("--perf", metavar="DIR",
                    help="record vswitchd with perf during each throughput test (files "
                         "<scenario>-<test>-r<round>.data in DIR) and add a section on where "
                         "its time goes: copies, checksums, allocation, syscalls, its own code")
    ap.add_argument("--idle-probe", type=float, default=1.0,
                    help="seconds of idle CPU measurement before each scenario's tests (s)")
    ap.add_argument("--settle", type=float, default=1.0, help="pause between tests (s)")
    ap.add_argument("--ready-timeout", type=float, default=10.0,
                    help="how long to wait for h1 to reach h2 after setup (s)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every command")
    opts = ap.parse_args(argv)
    opts.skipped = None          # scenarios left out of the default set, and why
    if opts.rounds < 1 or not (1 <= opts.duration <= 600):
        ap.error("--rounds must be >= 1 and --duration within 1..600")
    if not (1 <= opts.ping_count <= 100000) or not (0.002 <= opts.ping_interval <= 1):
        ap.error("--ping-count 1..100000, --ping-interval 0.002..1")
    return opts


def has_router_commands(bin_dir):
    """Whether this vswitchctl knows the router's commands (the routed rows
    need add-rif and add-snat)."""
    ctl = os.path.join(bin_dir, "vswitchctl")
    cmds = ("add-rif", "add-snat")
    listing = run([ctl, "--help"], check=False, timeout=10)
    text = (listing.stdout or "") + (listing.stderr or "")
    if all(re.search(r"(?m)^\s*%s\b" % c, text) for c in cmds):
        return True
    return all(run([ctl, c, "--help"], check=False, timeout=10).returncode == 0 for c in cmds)


def pick(items, spec, what, groups=None):
    """The items a comma list names (a group name stands for its members),
    in canonical order; all of them for an empty list."""
    if not spec:
        return list(items)
    groups = groups or {}
    names = []
    for x in spec.split(","):
        x = x.strip()
        if x:
            names += groups.get(x, [x])
    by = {i.name: i for i in items}
    bad = [n for n in names if n not in by]
    if bad:
        sys.exit("unknown %s: %s (choose from %s)"
                 % (what, ",".join(bad), ",".join(list(by) + list(groups))))
    return [i for i in items if i.name in names]    # keep canonical order


def render_saved(opts):
    """--from-json: the report of a run saved with --json."""
    with open(opts.from_json) as f:
        doc = json.load(f)
    cfg = doc.get("config", {})
    scenarios = pick(SCENARIOS, ",".join(cfg.get("scenarios", [])), "scenario")
    tests = pick(TESTS, ",".join(cfg.get("tests", [])), "test")
    agg = {}
    for s in scenarios:
        agg[s.name] = {}
        for test, entries in doc.get("results", {}).get(s.name, {}).items():
            for key, e in entries.items():
                agg[s.name][(test, key)] = (e.get("median"), e.get("rounds", []))
    opts.rounds = cfg.get("rounds", 0)
    opts.duration = cfg.get("duration_s", 0)
    print_table(agg, scenarios, tests, opts)
    print_targets(agg, scenarios, tests)
    print_profile(agg, scenarios, tests)
    if doc.get("idle"):
        print_background(doc["idle"], scenarios)
    print_steal(agg, scenarios, tests)
    print_host(doc.get("host"))
    if doc.get("skipped"):
        print("Skipped: " + doc["skipped"] + ".")
    if opts.svg:
        svg_chart(agg, scenarios, opts.svg)
    return 0


def main(argv):
    opts = parse_args(argv)
    benchlib.setup("netbench", opts.verbose)
    if opts.from_json:
        return render_saved(opts)
    tests = pick(TESTS, opts.only, "test", TEST_GROUPS)
    if not opts.only:
        tests = [t for t in tests if t.name not in TEST_GROUPS["latency"]]
    scenarios = pick(SCENARIOS, opts.scenarios, "scenario", SCENARIO_GROUPS)
    if not shutil.which("vde_switch"):
        if opts.scenarios and any(s.name == "vde" for s in scenarios):
            sys.exit("the vde row needs vde_switch (apt install vde2)")
        if any(s.name == "vde" for s in scenarios):
            scenarios = [s for s in scenarios if s.name != "vde"]
            opts.skipped = "vde (vde_switch not installed: apt install vde2)"
    if opts.no_reference and not opts.scenarios:
        scenarios = [s for s in scenarios if s.kind != "reference"]
    if not opts.scenarios:
        # The VM rows boot QEMU guests: only when asked for (--scenarios vm).
        scenarios = [s for s in scenarios if s.name not in SCENARIO_GROUPS["vm"]]
        opts.skipped = "; ".join(x for x in (opts.skipped, "kernel-vm,vs-vm (QEMU guests: ask "
                                                "with --scenarios vm)") if x)
    # a compared scenario needs its baseline in the run to get a ratio; that is fine
    # either way, the absolute numbers are still reported.

    if os.geteuid() != 0:
        sys.exit("netbench must run as root (it creates network namespaces): "
                 "sudo python3 %s" % " ".join([sys.argv[0]] + argv))
    if opts.perf:
        if not shutil.which("perf"):
            sys.exit("--perf needs perf (apt install linux-perf)")
        os.makedirs(opts.perf, exist_ok=True)
    tools = ["ip", "iperf3", "ping", "ss", "sysctl"]
    if any(s.setup is setup_kernel_router for s in scenarios):
        tools.append("nft")
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        sys.exit("missing tools: %s (install iproute2, iperf3, iputils-ping, procps, nftables)"
                 % ", ".join(missing))
    if any(s.kind == "vswitch" for s in scenarios):
        bins = [os.path.join(opts.bin_dir, b) for b in ("vswitchd", "vswitchctl")]
        absent = [b for b in bins if not os.access(b, os.X_OK)]
        if absent:
            sys.exit("vswitch binaries not found: %s\n"
                     "Build them first:\n    cd %s && cargo build --release -p vswitch-control\n"
                     "or point --bin-dir at them, or run the kernel rows alone with "
                     "--scenarios kernel,kvxlan,kernel-router."
                     % (", ".join(absent), REPO_ROOT))
    if any(t.name == "rttsweep" for t in tests) and not os.access(
            os.path.join(opts.bin_dir, "udp-rr"), os.X_OK):
        sys.exit("rttsweep needs udp-rr in %s; build it:\n    cd %s && cargo build --release "
                 "-p vswitch-benches --bin udp-rr" % (opts.bin_dir, REPO_ROOT))
    opts.bin_dir = os.path.abspath(opts.bin_dir)
    routed = [s for s in scenarios if s.kind == "vswitch" and s.name in SCENARIO_GROUPS["routed"]]
    if routed and not has_router_commands(opts.bin_dir):
        names = ",".join(s.name for s in routed)
        if opts.scenarios:
            sys.exit("%s/vswitchctl has no router commands (add-rif, add-snat), which %s need; "
                     "build a vswitch with the router or leave them out of --scenarios"
                     % (opts.bin_dir, names))
        why = ("%s (%s/vswitchctl has no router commands: add-rif, add-snat)"
               % (names, opts.bin_dir))
        opts.skipped = "; ".join(x for x in (opts.skipped, why) if x)
        log("warning: skipping " + why)
        scenarios = [s for s in scenarios if s not in routed]

    benchlib.interrupt_on_signals()

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    rc = 0
    try:
        results, notes, errors, background = run_benchmark(opts, scenarios, tests)
    except Interrupted as e:
        log("interrupted (%s); cleaning up" % e)
        rc = 130
    finally:
        benchlib.final_cleanup()
    if rc:
        return rc

    agg = aggregate(results, scenarios)
    if opts.json:
        doc = json_doc(agg, results, notes, errors, scenarios, tests, opts, started)
        doc["idle"] = background
        if opts.skipped:
            doc["skipped"] = opts.skipped
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        print_table(agg, scenarios, tests, opts)
        print_targets(agg, scenarios, tests)
        print_profile(agg, scenarios, tests)
        print_background(background, scenarios)
        print_steal(agg, scenarios, tests)
        print_host(host_info())
        if opts.skipped:
            print("Skipped: " + opts.skipped + ".")
        if errors:
            print("\n%d error(s):" % len(errors))
            for e in errors:
                print("  round %s %s %s: %s" % (e.get("round"), e.get("scenario"), e.get("test", "setup"),
                                                e["error"].splitlines()[0] if e["error"] else ""))
    if opts.svg:
        svg_chart(agg, scenarios, opts.svg)
        log("wrote %s" % opts.svg)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
