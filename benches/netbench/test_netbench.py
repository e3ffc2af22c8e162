"""Offline checks of netbench's reporting (no namespaces, no root):
    python3 -m unittest discover -s benches/netbench -p 'test_*.py'
scripts/test.sh runs them."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netbench  # noqa: E402


def agg_of(values):
    """{scenario: {(test, key): median}} -> aggregate()'s shape."""
    return {sc: {k: (v, [v]) for k, v in d.items()} for sc, d in values.items()}


class Targets(unittest.TestCase):
    def scen(self, *names):
        return [s for s in netbench.SCENARIOS if s.name in names]

    def judge(self, values, tests=("tcp1", "tcp4", "udp64", "rtt")):
        ts = [t for t in netbench.TESTS if t.name in tests]
        return {x["id"]: x for x in
                netbench.judge_targets(agg_of(values), self.scen("kernel", "vs-tap", "vs-afp"), ts)}

    def test_ratios_and_limits(self):
        r = self.judge({
            "kernel": {("tcp1", "gbps"): 10.0, ("tcp4", "gbps"): 10.0, ("rtt", "rtt_median_us"): 50.0,
                       ("rtt", "rtt_p99_us"): 100.0, ("udp64", "loss_pct"): 0.5},
            "vs-tap": {("tcp1", "gbps"): 9.5, ("tcp4", "gbps"): 9.0, ("rtt", "rtt_median_us"): 70.0,
                       ("rtt", "rtt_p99_us"): 150.0, ("udp64", "loss_pct"): 0.9},
            "vs-afp": {("tcp1", "gbps"): 7.0, ("tcp4", "gbps"): 7.5, ("rtt", "rtt_median_us"): 60.0,
                       ("rtt", "rtt_p99_us"): 250.0, ("udp64", "loss_pct"): 30.0},
        })
        self.assertTrue(r["tcp1-tap"]["met"])
        self.assertAlmostEqual(r["tcp1-tap"]["value"], 0.95)
        self.assertFalse(r["tcp1-afp"]["met"])
        self.assertFalse(r["tcp4-tap"]["met"], "0.90x with 4 streams is worse than 0.95x with 1")
        self.assertTrue(r["tcp4-afp"]["met"])
        self.assertTrue(r["udp-tap"]["met"])
        self.assertFalse(r["udp-afp"]["met"])
        self.assertFalse(r["rtt-tap"]["met"], "1.4x > 1.3x")
        self.assertTrue(r["rtt-afp"]["met"])
        self.assertTrue(r["p99-tap"]["met"])
        self.assertFalse(r["p99-afp"]["met"], "2.5x > 2x")

    def test_missing_data_is_not_met_and_unrun_tests_are_skipped(self):
        r = self.judge({"kernel": {("tcp1", "gbps"): 10.0}, "vs-tap": {}, "vs-afp": {}},
                       tests=("tcp1",))
        self.assertEqual(set(r), {"tcp1-tap", "tcp1-afp"})
        self.assertFalse(r["tcp1-tap"]["met"])
        self.assertIsNone(r["tcp1-tap"]["value"])


class Latency(unittest.TestCase):
    """The RTT-vs-rate sweep and the 64-byte no-drop rate: their targets
    (ratios to the kernel bridge, 'below vde'), and that a run without
    --only leaves them out."""

    def judge(self, values, scen=("kernel", "vs-tap", "vs-afp", "vde")):
        ts = [t for t in netbench.TESTS if t.name in ("rttsweep", "ndr64")]
        sc = [s for s in netbench.SCENARIOS if s.name in scen]
        return {x["id"]: x for x in netbench.judge_targets(agg_of(values), sc, ts)}

    def test_sweep_and_ndr_targets(self):
        k = {("rttsweep", "r100_median_us"): 80.0, ("rttsweep", "r1000_median_us"): 20.0,
             ("rttsweep", "r100_p99_us"): 100.0, ("rttsweep", "r1000_p99_us"): 40.0,
             ("ndr64", "ndr_mfps"): 0.4}
        tap = {("rttsweep", "r100_median_us"): 60.0, ("rttsweep", "r1000_median_us"): 30.0,
               ("rttsweep", "r100_p99_us"): 150.0, ("rttsweep", "r1000_p99_us"): 90.0,
               ("ndr64", "ndr_mfps"): 0.3}
        vde = {("rttsweep", "r100_median_us"): 100.0, ("rttsweep", "r1000_median_us"): 25.0}
        r = self.judge({"kernel": k, "vs-tap": tap, "vs-afp": {}, "vde": vde})
        self.assertTrue(r["r100-tap"]["met"])
        self.assertFalse(r["r1000-tap"]["met"], "1.5x > 1.3x")
        self.assertTrue(r["r100-vde"]["met"])
        self.assertAlmostEqual(r["r100-vde"]["value"], 0.6)
        self.assertFalse(r["r1000-vde"]["met"], "30 us is not below vde's 25")
        self.assertTrue(r["p100-tap"]["met"])
        self.assertFalse(r["p1000-tap"]["met"], "2.25x > 2x")
        self.assertFalse(r["ndr-tap"]["met"])
        self.assertAlmostEqual(r["ndr-tap"]["value"], 0.75)
        self.assertFalse(r["r100-afp"]["met"], "no data is not met")

    def test_below_vde_needs_the_vde_row(self):
        r = self.judge({"kernel": {}, "vs-tap": {("rttsweep", "r100_median_us"): 1.0}},
                       scen=("kernel", "vs-tap"))
        self.assertNotIn("r100-vde", r)

    def test_default_run_leaves_the_latency_tests_out(self):
        self.assertEqual(netbench.TEST_GROUPS["latency"], ["rttsweep", "ndr64"])
        picked = netbench.pick(netbench.TESTS, "latency", "test", netbench.TEST_GROUPS)
        self.assertEqual([t.name for t in picked], ["rttsweep", "ndr64"])
        keys = {m[1] for m in netbench.METRICS if m[0] == "rttsweep"}
        for rate in netbench.SWEEP_RATES:
            self.assertIn("r%d_median_us" % rate, keys)
            self.assertIn("r%d_switch_cores" % rate, keys)

    def test_sweep_counts(self):
        class O:
            sweep_seconds = 3.0
        self.assertEqual(netbench.sweep_count(10, O), 100)
        self.assertEqual(netbench.sweep_count(10000, O), 30000)


class Routed(unittest.TestCase):
    """The routed rows: their place in SCENARIOS, their targets, --scenarios
    groups, and the commands their setups issue (checked offline against the
    contract's Router section, with run() and the namespaces faked)."""

    def test_scenarios_and_baselines(self):
        by = {s.name: s for s in netbench.SCENARIOS}
        self.assertEqual(by["kernel-router"].kind, "kernel")
        self.assertIsNone(by["kernel-router"].baseline)
        for name in ("vs-rtap", "vs-rafp"):
            self.assertEqual(by[name].kind, "vswitch")
            self.assertEqual(by[name].baseline, "kernel-router")
        for s in netbench.SCENARIOS:
            if s.baseline:
                self.assertEqual(by[s.baseline].kind, "kernel", s.name)
        grouped = {n for g in netbench.SCENARIO_GROUPS.values() for n in g}
        self.assertEqual(grouped, set(by), "every scenario in a group, no unknown names")

    def test_pick_expands_groups_in_canonical_order(self):
        pick = netbench.pick
        names = lambda spec: [s.name for s in pick(netbench.SCENARIOS, spec, "scenario",
                                                   netbench.SCENARIO_GROUPS)]
        self.assertEqual(names("vs-rafp,kernel-router,vs-rtap"), ["kernel-router", "vs-rtap", "vs-rafp"])
        self.assertEqual(names("routed"), ["kernel-router", "vs-rtap", "vs-rafp"])
        self.assertEqual(names("kernel,routed"), ["kernel", "kernel-router", "vs-rtap", "vs-rafp"])
        self.assertEqual(len(names("")), len(netbench.SCENARIOS), "default: every scenario")
        with self.assertRaises(SystemExit):
            names("router")

    def test_router_command_probe(self):
        import shutil
        import tempfile
        d = tempfile.mkdtemp()
        try:
            ctl = os.path.join(d, "vswitchctl")

            def fake(script):
                with open(ctl, "w") as f:
                    f.write("#!/bin/sh\n" + script)
                os.chmod(ctl, 0o755)
            fake('printf "Commands:\n  add-br  Add a bridge\n  add-port  Attach"\n'
                 '[ "$1" = --help ] && exit 0; exit 2\n')
            self.assertFalse(netbench.has_router_commands(d), "an L2-only vswitchctl")
            fake('printf "Commands:\n  add-br  Add a bridge\n  add-rif  Router interface\n'
                 '  add-snat  Source NAT"\n')
            self.assertTrue(netbench.has_router_commands(d), "listed in --help")
            fake('[ "$2" = --help ] && exit 0; exit 2\n')
            self.assertTrue(netbench.has_router_commands(d), "not listed, but add-rif --help works")
        finally:
            shutil.rmtree(d)

    def test_routed_targets(self):
        ts = [t for t in netbench.TESTS if t.name in ("tcp1", "tcp4", "udp64", "rtt")]
        sc = [s for s in netbench.SCENARIOS if s.name in ("kernel-router", "vs-rtap", "vs-rafp")]
        r = {x["id"]: x for x in netbench.judge_targets(agg_of({
            "kernel-router": {("tcp1", "gbps"): 10.0},
            "vs-rtap": {("tcp1", "gbps"): 8.5},
            "vs-rafp": {("tcp1", "gbps"): 7.5},
        }), sc, ts)}
        self.assertEqual(set(r), {"tcp1-rtap", "tcp1-rafp"}, "no L2 target without its scenarios")
        self.assertTrue(r["tcp1-rtap"]["met"])
        self.assertAlmostEqual(r["tcp1-rtap"]["value"], 0.85)
        self.assertEqual(r["tcp1-rtap"]["text"], "routed TCP 1 stream >= 0.8x kernel router (TAP)")
        self.assertFalse(r["tcp1-rafp"]["met"], "0.75x < 0.8x")
        self.assertEqual(r["tcp1-rafp"]["limit"], 0.8)
        # the L2 bridge is not the routed rows' baseline
        r = netbench.judge_targets(agg_of({"kernel": {("tcp1", "gbps"): 10.0},
                                           "vs-rtap": {("tcp1", "gbps"): 9.0}}),
                                   [s for s in netbench.SCENARIOS if s.name in ("kernel", "vs-rtap")],
                                   ts)
        self.assertIsNone({x["id"]: x for x in r}["tcp1-rtap"]["value"])

    def setup_commands(self, name):
        """The commands scenario `name`'s setup runs, with nothing executed."""
        import argparse
        calls = []

        class Done:
            returncode = 0
            stdout = stderr = ""

        def fake_run(cmd, **kw):
            calls.append(list(cmd))
            return Done()

        def fake_start(env, opts):
            env.socket = "/tmp/test.sock"
            calls.append(["START vswitchd", env.sw])

        saved = (netbench.run, netbench.add_netns, netbench.start_vswitchd)
        netbench.run = fake_run
        netbench.add_netns = lambda n: calls.append(["NETNS", n])
        netbench.start_vswitchd = fake_start
        try:
            sc = next(s for s in netbench.SCENARIOS if s.name == name)
            env = netbench.Env(name)
            sc.setup(env, argparse.Namespace(no_offload=False, bin_dir="/bin-dir"))
        finally:
            netbench.run, netbench.add_netns, netbench.start_vswitchd = saved
        return env, calls

    @staticmethod
    def in_ns(calls, ns):
        return [c[4:] for c in calls if c[:4] == ["ip", "netns", "exec", ns]]

    @staticmethod
    def ctl(calls):
        return [c[3:] for c in calls if c[0] == "/bin-dir/vswitchctl"]

    def check_hosts(self, env, calls):
        self.assertEqual((env.h1_ip, env.h2_ip), ("10.202.1.2", "10.202.2.2"))
        h1, h2 = self.in_ns(calls, env.h1), self.in_ns(calls, env.h2)
        self.assertIn(["ip", "addr", "add", "10.202.1.2/24", "dev", "eth0"], h1)
        self.assertIn(["ip", "route", "add", "default", "via", "10.202.1.1", "dev", "eth0"], h1)
        self.assertIn(["ip", "addr", "add", "10.202.2.2/24", "dev", "eth0"], h2)
        self.assertFalse([c for c in h2 if c[:2] == ["ip", "route"]], "H2: connected subnet only")
        every = [" ".join(c) for c in calls]
        self.assertFalse([c for c in calls if c[:2] == ["ip", "route"]], "no route outside the namespaces")
        for c in every:
            for a in c.split():
                if a[:1].isdigit() and "." in a and not a.startswith("10."):
                    self.fail("address outside 10.0.0.0/8: " + c)

    def test_kernel_router_setup(self):
        env, calls = self.setup_commands("kernel-router")
        self.check_hosts(env, calls)
        rt = self.in_ns(calls, env.sw)
        self.assertIn(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], rt)
        self.assertIn(["ip", "addr", "add", "10.202.1.1/24", "dev", "in0"], rt)
        self.assertIn(["ip", "addr", "add", "10.202.2.1/24", "dev", "out0"], rt)
        self.assertIn(["nft", "add", "rule", "ip", "nb", "post", "oifname", "out0", "masquerade"], rt)
        self.assertIn(["nft", "add", "chain", "ip", "nb", "post",
                       "{ type nat hook postrouting priority 100 ; }"], rt)
        self.assertEqual([c[1] for c in calls if c[0] == "NETNS"], [env.sw, env.h1, env.h2])
        self.assertEqual(env.namespaces, [env.sw, env.h1, env.h2], "teardown removes all three")

    def check_vswitch_router(self, ctl):
        i = ctl.index(["add-rif", "gw", "--br", "brin", "--addr", "10.202.1.1/24"])
        j = ctl.index(["add-rif", "up", "--br", "brout", "--addr", "10.202.2.1/24"])
        k = ctl.index(["add-snat", "--out", "up"])
        self.assertLess(ctl.index(["add-br", "brin"]), i)
        self.assertLess(ctl.index(["add-br", "brout"]), j)
        self.assertLess(j, k)

    def test_vswitch_router_tap_setup(self):
        env, calls = self.setup_commands("vs-rtap")
        self.check_hosts(env, calls)
        ctl = self.ctl(calls)
        self.check_vswitch_router(ctl)
        self.assertIn(["add-port", "brin", "h1", "--type", "tap", "--netns", env.h1, "--ifname", "eth0"], ctl)
        self.assertIn(["add-port", "brout", "h2", "--type", "tap", "--netns", env.h2, "--ifname", "eth0"], ctl)
        self.assertLess(max(ctl.index(c) for c in ctl if c[0] == "add-port"),
                        ctl.index(["add-rif", "gw", "--br", "brin", "--addr", "10.202.1.1/24"]))
        self.assertEqual(env.tap_hosts, [env.h1, env.h2])
        self.assertEqual(env.namespaces, [env.sw, env.h1, env.h2])

    def test_vswitch_router_afpacket_setup(self):
        env, calls = self.setup_commands("vs-rafp")
        self.check_hosts(env, calls)
        ctl = self.ctl(calls)
        self.check_vswitch_router(ctl)
        self.assertIn(["add-port", "brin", "p1", "--type", "afpacket", "--ifname", "p1"], ctl)
        self.assertIn(["add-port", "brout", "p2", "--type", "afpacket", "--ifname", "p2"], ctl)
        sw = self.in_ns(calls, env.sw)
        self.assertIn(["ip", "link", "add", "p1", "type", "veth", "peer", "name", "eth0", "netns", env.h1], sw)
        self.assertIn(["ip", "link", "add", "p2", "type", "veth", "peer", "name", "eth0", "netns", env.h2], sw)
        self.assertFalse([c for c in sw if c[:3] == ["ip", "addr", "add"]],
                         "the switch namespace's kernel has no address: only vswitchd routes")

    def test_l2_setups_unchanged(self):
        env, calls = self.setup_commands("vs-tap")
        self.assertEqual(self.ctl(calls)[:3], [["add-br", "br0"],
                         ["add-port", "br0", "h1", "--type", "tap", "--netns", env.h1, "--ifname", "eth0"],
                         ["add-port", "br0", "h2", "--type", "tap", "--netns", env.h2, "--ifname", "eth0"]])
        env, calls = self.setup_commands("vs-afp")
        self.assertEqual(self.ctl(calls), [["add-br", "br0"],
                         ["add-port", "br0", "p1", "--type", "afpacket", "--ifname", "p1"],
                         ["add-port", "br0", "p2", "--type", "afpacket", "--ifname", "p2"]])
        self.assertEqual((env.h1_ip, env.h2_ip), ("10.201.0.1", "10.201.0.2"))


class Profile(unittest.TestCase):
    REPORT = """
    50.00%  [kernel.kallsyms]  [k] rep_movs_alternative
    10.00%  [kernel.kallsyms]  [k] csum_partial
     8.00%  [kernel.kallsyms]  [k] kmem_cache_alloc_node_noprof
     7.00%  [kernel.kallsyms]  [k] do_syscall_64
     5.00%  [kernel.kallsyms]  [k] _raw_spin_unlock_irqrestore
     4.00%  vswitchd           [.] dataplane::bridge::Bridge::decide_from
     3.00%  libc.so.6          [.] __memmove_avx_unaligned_erms
     2.00%  libc.so.6          [.] __GI___libc_write
    11.00%  [kernel.kallsyms]  [k] tcp_v4_rcv
"""

    def test_breakdown_sorts_every_sample_into_one_category(self):
        b = netbench.profile_breakdown(self.REPORT)
        self.assertAlmostEqual(b["prof_copy_pct"], 53.0)
        self.assertAlmostEqual(b["prof_csum_pct"], 10.0)
        self.assertAlmostEqual(b["prof_alloc_pct"], 8.0)
        self.assertAlmostEqual(b["prof_sched_pct"], 7.0)
        self.assertAlmostEqual(b["prof_locks_pct"], 5.0)
        self.assertAlmostEqual(b["prof_switch_pct"], 4.0)
        self.assertAlmostEqual(b["prof_libc_pct"], 2.0)
        self.assertAlmostEqual(b["prof_kernel_pct"], 11.0)
        self.assertAlmostEqual(b["prof_top_symbol_pct"], 50.0)
        total = sum(v for k, v in b.items() if k != "prof_top_symbol_pct")
        self.assertAlmostEqual(total, 100.0)


class FromJson(unittest.TestCase):
    def test_saved_run_renders_table_and_targets(self):
        import json
        import tempfile
        doc = {"config": {"rounds": 1, "duration_s": 5, "tests": ["tcp1"],
                          "scenarios": ["kernel", "vs-tap"]},
               "results": {"kernel": {"tcp1": {"gbps": {"median": 10.0, "rounds": [10.0]}}},
                           "vs-tap": {"tcp1": {"gbps": {"median": 9.5, "rounds": [9.5]},
                                               "prof_copy_pct": {"median": 57.25, "rounds": [57.25]},
                                               "steal_cores": {"median": 0.1, "rounds": [0.0, 0.2]}}}},
               "host": {"kernel": "6.1-test", "cpus": 2, "cpu_model": "Test CPU",
                        "vhost_net": False, "cpuidle_driver": "none"}}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(doc, f)
        import subprocess
        cp = subprocess.run([sys.executable, netbench.__file__, "--from-json", f.name],
                            capture_output=True, text=True, timeout=60)
        os.unlink(f.name)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        text = cp.stdout
        self.assertIn("0.95x", text)
        self.assertIn("TCP 1 stream, TAP ports >= 0.9x kernel bridge", text)
        self.assertRegex(text, r"0\.95x\s+met")
        self.assertIn("Where vswitchd's time goes", text)
        self.assertRegex(text, r"copies user<->kernel, memcpy\s+57\.2")
        self.assertIn("Hypervisor steal during the tests: median 0.1, max 0.2 cores.", text)
        self.assertIn("WARNING: the hypervisor took CPU", text)
        self.assertIn("Host: 2 CPUs (Test CPU), kernel 6.1-test, /dev/vhost-net absent, "
                      "cpuidle driver none.", text)


    def test_saved_routed_run(self):
        import json
        import subprocess
        import tempfile
        gb = lambda v: {"tcp1": {"gbps": {"median": v, "rounds": [v]}}}
        doc = {"config": {"rounds": 1, "duration_s": 2, "tests": ["tcp1"],
                          "scenarios": ["kernel-router", "vs-rtap", "vs-rafp"]},
               "results": {"kernel-router": gb(9.0), "vs-rtap": gb(8.1), "vs-rafp": gb(6.3)},
               "skipped": "nothing (test)"}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(doc, f)
        cp = subprocess.run([sys.executable, netbench.__file__, "--from-json", f.name],
                            capture_output=True, text=True, timeout=60)
        os.unlink(f.name)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        text = cp.stdout
        self.assertIn("vs-rtap/kernel-router", text)
        self.assertIn("vs-rafp/kernel-router", text)
        self.assertRegex(text, r"TCP 1 stream throughput.*9\.00\s+8\.10\s+0\.90x\s+6\.30\s+0\.70x")
        self.assertRegex(text, r"routed TCP 1 stream >= 0\.8x kernel router \(TAP\)\s+0\.90x\s+met")
        self.assertRegex(text, r"routed TCP 1 stream >= 0\.8x kernel router \(AF_PACKET\)\s+0\.70x\s+NOT met")
        self.assertIn("kernel router+SNAT: system busy CPU", text)
        self.assertIn("Skipped: nothing (test).", text)



class VmRows(unittest.TestCase):
    def test_ping_times_from_iputils_and_busybox(self):
        text = ("64 bytes from 10.201.0.2: icmp_seq=1 ttl=64 time=0.512 ms\n"
                "64 bytes from 10.201.0.2: seq=0 ttl=64 time=1.250 ms\n"
                "PING 10.201.0.2 (10.201.0.2): 56 data bytes\n"
                "round-trip min/avg/max = 0.5/0.9/1.2 ms\n"
                "64 bytes from x: time=junk ms\n")
        self.assertEqual(netbench.ping_times_us(text), [512.0, 1250.0])

    def test_vm_fetch_line(self):
        mib = 32 << 20
        ok = "vm-fetch ...\n@@FETCH copies=3 bytes=%d secs=8.00 mbit=100.7 rc=0\n" % (3 * mib)
        self.assertAlmostEqual(netbench.vm_fetch_gbps(ok, 0, mib), 0.1007)
        for bad, rc in [("nothing", 0),
                        ("@@FETCH copies=3 bytes=%d secs=8 mbit=9 rc=0" % (3 * mib - 1), 0),
                        ("@@FETCH copies=0 bytes=0 secs=0 mbit=0 rc=1", 1),
                        ("@@FETCH copies=x", 0)]:
            with self.assertRaises(netbench.BenchError):
                netbench.vm_fetch_gbps(bad, rc, mib)

    def test_vm_nic_arguments(self):
        tap = netbench.vm_net_args(("tap", "vmtap0"), "52:54:00:00:00:01")
        self.assertIn("tap,id=n0,ifname=vmtap0,script=no,downscript=no,vnet_hdr=on", tap)
        self.assertNotIn("vectors", " ".join(tap))
        tap0 = netbench.vm_net_args(("tap", "vmtap0"), "52:54:00:00:00:01", 0)
        self.assertIn("virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,vectors=0", tap0)
        vu = " ".join(netbench.vm_net_args(("vhost", "/tmp/s"), "52:54:00:00:00:01"))
        for want in ("share=on", "socket,id=c0,path=/tmp/s", "vhost-user,id=n0,chardev=c0",
                     "vectors=0"):
            self.assertIn(want, vu)

    def test_vm_targets_name_vm_scenarios(self):
        names = {s.name for s in netbench.SCENARIOS}
        for tid, _, sc, _, _, how, _ in netbench.TARGETS:
            self.assertIn(sc, names, tid)
            if how.startswith("below:"):
                self.assertIn(how.split(":", 1)[1], names, tid)
        self.assertEqual(netbench.SCENARIO_GROUPS["vm"],
                         ["kernel-vm", "vs-vm", "vs-vhost", "kernel-vm2", "vs-vm2", "vs-vhost2"])


if __name__ == "__main__":
    unittest.main()
