# Shared by the router examples (sourced, not run): root check, tools, the
# vswitch binaries, namespaces named PREFIX-NAME with the daemon in
# PREFIX-sw, `ctl`, cleanup on any exit, and `check` / `finish` for the
# ok:/FAILED: lines. The sourcing script's own arguments are seen here
# (`--keep`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "error: run as root (it creates network namespaces)" >&2; exit 1; }
keep=0; [ "${1:-}" = "--keep" ] && keep=1
command -v ping >/dev/null || { apt-get update -qq && apt-get install -y -qq iputils-ping iproute2 >/dev/null; }
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 >/dev/null; }
bin=${VSWITCH_BIN:-target/release}
[ -n "${VSWITCH_BIN:-}" ] || cargo build --release -q -p vswitch-control
ctl() { "$bin/vswitchctl" --socket "$sock" "$@"; }
ns=
sock=
dpid=
cleanup() {
  [ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null || true
  for n in $ns; do ip netns del "$n" 2>/dev/null || true; done
  [ -z "$sock" ] || rm -f "$sock"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# lab_start PREFIX NAME...: namespaces PREFIX-sw and PREFIX-NAME..., and
# vswitchd running in PREFIX-sw on a private socket.
lab_start() {
  local prefix=$1; shift
  sock=/tmp/$prefix-$$.sock
  ns="$prefix-sw"
  for n in "$@"; do ns="$ns $prefix-$n"; done
  for n in $ns; do ip netns add "$n"; done
  ip netns exec "$prefix-sw" "$bin/vswitchd" --socket "$sock" --log-level warn &
  dpid=$!
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
  [ -S "$sock" ] || { echo "error: vswitchd did not start" >&2; exit 1; }
}

ok=1
# desc="..."; check COMMAND...: one ok:/FAILED: line.
check() { if "$@" >/dev/null 2>&1; then echo "ok:     ${desc}"; else echo "FAILED: ${desc}"; ok=0; fi; }

# keep_running HINT: with --keep, prints HINT and leaves the lab running
# until Ctrl-C.
keep_running() {
  if [ "$keep" = 1 ]; then
    echo; echo "Running. Try: $1"
    echo "Ctrl-C to stop and clean up."
    wait "$dpid"
  fi
}

# verdict: the last line, and exit status 1 if a check failed.
verdict() {
  [ "$ok" = 1 ] && echo "all checks passed" || { echo "some checks FAILED"; exit 1; }
}
