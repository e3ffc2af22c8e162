#!/usr/bin/env bash
# Runs vswitch on the bundled example topology (examples/three-hosts.toml):
# three namespaces vsx-h1..vsx-h3 on 10.77.0.0/24, joined by bridge br0.
# Shows the hosts reaching each other through the switch, prints the switch's
# view (show, fdb-show, stats), then tears everything down.
#   sudo examples/run.sh            # run, check, tear down
#   sudo examples/run.sh --keep     # leave it running until Ctrl-C (try: ip netns exec vsx-h1 ping 10.77.0.2)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "error: run as root (it creates network namespaces)" >&2; exit 1; }
keep=0; [ "${1:-}" = "--keep" ] && keep=1

command -v ping >/dev/null || { apt-get update -qq && apt-get install -y -qq iputils-ping iproute2 >/dev/null; }
cargo build --release -q -p vswitch-control
bin=target/release
sock=/tmp/vsx-$$.sock
cfg=/tmp/vsx-$$.toml
cp examples/three-hosts.toml "$cfg"
ctl() { "$bin/vswitchctl" --socket "$sock" "$@"; }
dpid=
cleanup() {
  [ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null || true
  for n in vsx-sw vsx-h1 vsx-h2 vsx-h3; do ip netns del "$n" 2>/dev/null || true; done
  rm -f "$cfg" "$sock"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for n in vsx-sw vsx-h1 vsx-h2 vsx-h3; do ip netns add "$n"; done
# h3 is attached through a veth pair: one end in the switch's namespace.
ip link add vsx-h3 netns vsx-sw type veth peer name eth0 netns vsx-h3

# The daemon runs in its own namespace, so the host's stays untouched.
ip netns exec vsx-sw "$bin/vswitchd" --socket "$sock" --config "$cfg" --log-level warn &
dpid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { echo "error: vswitchd did not start" >&2; exit 1; }

for i in 1 2 3; do
  ip -n vsx-h$i link set eth0 up
  ip -n vsx-h$i addr add 10.77.0.$i/24 dev eth0
done

echo "== ping between every pair of hosts"
ok=1
for a in 1 2 3; do for b in 1 2 3; do
  [ "$a" = "$b" ] && continue
  if ip netns exec vsx-h$a ping -c 2 -i 0.2 -W 2 -q 10.77.0.$b >/dev/null; then
    echo "h$a -> h$b: ok"
  else
    echo "h$a -> h$b: FAILED"; ok=0
  fi
done; done
echo; echo "== vswitchctl show"; ctl show
echo; echo "== vswitchctl fdb-show br0"; ctl fdb-show br0
echo; echo "== vswitchctl stats"; ctl stats
if [ "$keep" = 1 ]; then
  echo; echo "Running. Try: ip netns exec vsx-h1 ping 10.77.0.2   |   $bin/vswitchctl --socket $sock show"
  echo "Ctrl-C to stop and clean up."
  wait "$dpid"
fi
[ "$ok" = 1 ] && echo && echo "example topology: all hosts reach each other"
[ "$ok" = 1 ]
