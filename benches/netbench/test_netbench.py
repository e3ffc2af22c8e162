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


if __name__ == "__main__":
    unittest.main()
