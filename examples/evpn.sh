#!/usr/bin/env bash
# BGP EVPN (RFC 7432 / RFC 8365) for vswitch: three hypervisors sw1..sw3
# (network namespaces), each running vswitchd, gobgpd and vswitch-evpn, on
# an underlay (kernel bridge in namespace ul, 10.100.0.0/24) with a GoBGP
# route reflector at 10.100.0.254. Each vswitchd has one bridge with a TAP
# "VM" (namespaces h1..h3, 10.200.0.0/24) and a VXLAN port in VNI 100 with
# --local and no --remote: the agents advertise type-3 routes (who is in
# VNI 100) and type-2 routes (which MAC is where) and program what they
# hear into vswitchd. Shows the hosts reaching each other, a VM moving from
# sw1 to sw3, and sw3 leaving the overlay, then tears everything down.
#   sudo examples/evpn.sh          # run, check, tear down
#   sudo examples/evpn.sh --keep   # leave it running until Ctrl-C
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "error: run as root (it creates network namespaces)" >&2; exit 1; }
keep=0; [ "${1:-}" = "--keep" ] && keep=1
command -v ping >/dev/null || { apt-get update -qq && apt-get install -y -qq iputils-ping iproute2 >/dev/null; }
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 >/dev/null; }
command -v gobgpd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gobgpd >/dev/null; }
bin=${VSWITCH_BIN:-target/release}
[ -n "${VSWITCH_BIN:-}" ] || cargo build --release -q -p vswitch-control

dir=$(mktemp -d /tmp/evpn-XXXXXX)
ns=""
declare -A agent=()   # hypervisor number -> agent PID
pids=""               # gobgpd and vswitchd, ended after the agents
cleanup() {
  for p in "${agent[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${agent[@]}"; do wait "$p" 2>/dev/null || true; done
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  for p in $pids; do wait "$p" 2>/dev/null || true; done
  for n in $ns; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok=1
# desc="..."; check COMMAND...: one ok:/FAILED: line.
check() { if "$@" >/dev/null 2>&1; then echo "ok:     ${desc}"; else echo "FAILED: ${desc}"; ok=0; fi; }
# ctl N ARGS...: vswitchctl of hypervisor swN.
ctl() { local i=$1; shift; "$bin/vswitchctl" --socket "$dir/sw$i.sock" "$@"; }
# remotes N: the flood list of swN's VXLAN port, one address a line.
remotes() {
  ctl "$1" list-ports br0 --json | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    if p["name"] == "vx": print("\n".join(sorted(p.get("remotes") or [])))'
}
# floods_to_n N COUNT: swN's flood list has COUNT entries.
floods_to_n() { test "$(remotes "$1" | wc -l)" = "$2"; }
# not_floods_to N IP: swN's flood list lacks IP.
not_floods_to() { ! remotes "$1" | grep -qx "$2"; }
# vtep_of N MAC: the VTEP swN's FDB has MAC behind (empty if none).
vtep_of() {
  ctl "$1" fdb-show br0 --json | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    if e["mac"] == sys.argv[1] and e.get("vtep"): print(e["vtep"])' "$2"
}
# vtep_is N MAC IP: swN's FDB has MAC behind VTEP IP.
vtep_is() { test "$(vtep_of "$1" "$2")" = "$3"; }
# wait_for SECONDS COMMAND...: retry until it succeeds.
wait_for() { local t=$1; shift; for _ in $(seq $((t * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done; return 1; }

# gobgpd configuration: AS 65000, l2vpn-evpn to each neighbour
# (route-reflector clients when $3 = rr).
gobgp_conf() {
  local id=$1 neighbours=$2 rr=${3:-}
  printf '[global.config]\n  as = 65000\n  router-id = "%s"\n  local-address-list = ["%s"]\n' "$id" "$id"
  for n in $neighbours; do
    printf '\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = "%s"\n    peer-as = 65000\n' "$n"
    printf '  [neighbors.timers.config]\n    connect-retry = 1\n    hold-time = 9\n    keepalive-interval = 3\n'
    printf '    idle-hold-time-after-reset = 1\n'
    # The reflector waits for its clients to call: no connection collisions.
    [ "$rr" = rr ] && printf '  [neighbors.transport.config]\n    passive-mode = true\n'
    [ "$rr" = rr ] && printf '  [neighbors.route-reflector.config]\n    route-reflector-client = true\n    route-reflector-cluster-id = "%s"\n' "$id"
    printf '  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = "l2vpn-evpn"\n'
  done
}
# gobgpd NS CONF: start a speaker in NS (gRPC on that namespace's 127.0.0.1:50051).
gobgpd_in() {
  ip netns exec "$1" gobgpd -f "$2" --api-hosts 127.0.0.1:50051 --pprof-disable -p >"$2.log" 2>&1 &
  pids="$pids $!"
}

# The underlay: a bridge and the route reflector.
ip netns add evpn-ul; ns="evpn-ul"
ip -n evpn-ul link set lo up
ip -n evpn-ul link add ubr type bridge
ip -n evpn-ul link set ubr up
ip -n evpn-ul addr add 10.100.0.254/24 dev ubr
gobgp_conf 10.100.0.254 "10.100.0.1 10.100.0.2 10.100.0.3" rr >"$dir/rr.toml"
gobgpd_in evpn-ul "$dir/rr.toml"

# Three hypervisors: underlay veth, vswitchd with br0, a TAP VM and a
# VXLAN port in VNI 100 that knows no remote; gobgpd towards the RR.
for i in 1 2 3; do
  sw=evpn-sw$i h=evpn-h$i u=10.100.0.$i
  ip netns add "$sw"; ip netns add "$h"; ns="$ns $sw $h"
  ip -n "$sw" link set lo up; ip -n "$h" link set lo up
  ip -n evpn-ul link add u$i mtu 1600 type veth peer name ul0 mtu 1600 netns "$sw"
  ip -n evpn-ul link set u$i master ubr up
  ip -n "$sw" addr add $u/24 dev ul0
  ip -n "$sw" link set ul0 up
  ip netns exec "$sw" "$bin/vswitchd" --socket "$dir/sw$i.sock" --log-level warn &
  pids="$pids $!"
  for _ in $(seq 100); do [ -S "$dir/sw$i.sock" ] && break; sleep 0.05; done
  ctl $i add-br br0
  ctl $i add-port br0 vm$i --type tap --netns "$h" --ifname eth0
  ctl $i add-port br0 vx --type vxlan --vni 100 --local $u
  ip -n "$h" addr add 10.200.0.$i/24 dev eth0
  gobgp_conf $u 10.100.0.254 >"$dir/sw$i.toml"
  gobgpd_in "$sw" "$dir/sw$i.toml"
done
# The agents.
for i in 1 2 3; do
  ip netns exec evpn-sw$i "$bin/vswitch-evpn" --socket "$dir/sw$i.sock" --interval 0.5 \
    >"$dir/agent$i.log" 2>&1 &
  agent[$i]=$!
done

echo "== waiting for the BGP sessions and the type-3 routes"
for i in 1 2 3; do
  desc="sw$i floods VNI 100 to the two others (from their type-3 routes)"
  check wait_for 40 floods_to_n $i 2
done
for i in 1 2 3; do for j in 1 2 3; do
  [ $i = $j ] && continue
  desc="h$i pings h$j"; check ip netns exec evpn-h$i ping -c 2 -i 0.2 -W 2 10.200.0.$j
done; done
mac1=$(ip -n evpn-h1 -j link show eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
desc="sw2 has h1's MAC behind sw1 (its type-2 route)"; check wait_for 15 vtep_is 2 "$mac1" 10.100.0.1

echo; echo "== sw1: gobgp global rib -a evpn"; ip netns exec evpn-sw1 gobgp global rib -a evpn
echo; echo "== sw1: vswitchctl list-ports br0"; ctl 1 list-ports br0
echo "sw1 floods VNI 100 to: $(remotes 1 | tr '\n' ' ')"
echo; echo "== sw1: vswitchctl fdb-show br0"; ctl 1 fdb-show br0

echo; echo "== h1 moves from sw1 to sw3 (same MAC, same address)"
ctl 1 del-port vm1
ctl 3 add-port br0 vm1 --type tap --netns evpn-h1 --ifname eth0 --mac "$mac1"
ip -n evpn-h1 addr add 10.200.0.1/24 dev eth0
desc="h1 pings h2 from behind sw3"; check wait_for 30 ip netns exec evpn-h1 ping -c 1 -W 1 10.200.0.2
desc="sw2 now has h1's MAC behind sw3"; check wait_for 15 vtep_is 2 "$mac1" 10.100.0.3
desc="sw1 too"; check wait_for 15 vtep_is 1 "$mac1" 10.100.0.3
echo "sw2: h1's MAC $mac1 is behind $(vtep_of 2 "$mac1")"

if [ "$keep" = 1 ]; then
  echo; echo "Running. Try: ip netns exec evpn-sw1 gobgp global rib -a evpn   |   $bin/vswitchctl --socket $dir/sw2.sock fdb-show br0"
  echo "Ctrl-C to stop and clean up."
  while :; do sleep 1; done
fi

echo; echo "== sw3's agent stops (SIGTERM): its routes are withdrawn"
kill "${agent[3]}"
desc="sw3's agent exits with status 0"; check wait "${agent[3]}"
unset 'agent[3]'
for i in 1 2; do
  desc="sw$i no longer floods to sw3"; check wait_for 15 not_floods_to $i 10.100.0.3
done
desc="sw3's flood list is empty again (the agent took out what it added)"; check test -z "$(remotes 3)"
echo "sw1 floods to: $(remotes 1 | tr '\n' ' ')"
[ "$ok" = 1 ] && echo "all checks passed" || { echo "some checks FAILED"; exit 1; }
