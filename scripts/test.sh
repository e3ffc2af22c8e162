#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the integration
# tests that run real traffic between network namespaces (needs root).
# Installs what it needs on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v python3 >/dev/null || need+=(python3)
# The VLAN tests decode captures with tshark and use Open vSwitch's userspace
# datapath as an independent peer switch.
command -v tshark >/dev/null || need+=(tshark)
command -v ovs-vswitchd >/dev/null || need+=(openvswitch-switch)
# The router tests check the NAT against coturn's RFC 5780 discovery client.
command -v turnutils_natdiscovery >/dev/null || need+=(coturn)
# The EVPN tests run GoBGP as the BGP speaker.
command -v gobgpd >/dev/null || need+=(gobgpd)
# The metrics tests check /metrics with promtool and scrape it with a real
# Prometheus.
command -v promtool >/dev/null || need+=(prometheus)
# The VM tests boot QEMU guests under TCG (the guest's kernel and busybox
# come from `apt-get download`, see examples/vm/build.sh).
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== netbench reporting (python, offline)"
python3 -m unittest discover -s benches/netbench -p 'test_*.py'
echo "== cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
echo "== cargo test"
# Integration tests create namespaces and run traffic; two at a time keeps
# them within a 2-core machine.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set -o pipefail
cargo test --workspace -- --test-threads=2 2>&1 | tee "$log"
# One closing line over all test binaries (cargo prints one per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
echo "== fuzzing (each target 30 s over the committed seeds; skipped without nightly)"
./scripts/fuzz.sh 30
