#!/usr/bin/env bash
# A real VM on vswitch: QEMU boots a Debian kernel with a busybox initramfs
# (built from Debian packages by examples/vm/build.sh, cached in
# /var/cache/vswitch-vm) under TCG, its virtio-net NIC on a TAP that vswitch
# attaches as an AF_PACKET port, as a VM manager wires it. A namespace host
# h1 (10.78.0.1) sits on a TAP port of the same bridge. The guest
# (10.78.0.100) pings h1, h1 pings the guest, the guest sends 8 MiB over TCP
# to h1 (busybox nc), and h1 downloads 20 MiB five times from the guest's
# busybox httpd (sendfile: the guest's virtio-net TSO super-frames and
# checksum offload travel whole through the TAP and the switch); then
# everything is torn down.
#   sudo examples/vm.sh                # QEMU creates the TAP (-netdev tap,ifname=...)
#   sudo examples/vm.sh --persistent   # a persistent TAP made first (ip tuntap add)
#   sudo examples/vm.sh --console      # the guest's serial console instead of the
#                                      # checks (poweroff -f in the guest ends it)
# vswitchd and QEMU run in namespace vsvm-sw: the daemon attaches the TAP in
# its own namespace.
mode=qemu
case "${1:-}" in
  --persistent) mode=persistent ;;
  --console) mode=console ;;
  "") ;;
  *) echo "usage: $0 [--persistent | --console]" >&2; exit 2 ;;
esac
set --
source "$(dirname "$0")/lib.sh"
command -v qemu-system-x86_64 >/dev/null || {
  apt-get update -qq && apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
}

echo "== guest kit (Debian kernel + busybox initramfs)"
kit=$(examples/vm/build.sh)
eval "$kit"
echo "$kit"

lab_start vsvm h1
tap=vsvm-tap0
qpid=
qemu_stop() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
    kill "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
  fi
  ip -n vsvm-sw link del "$tap" 2>/dev/null || true
  cleanup
}
trap qemu_stop EXIT

ctl add-br br0
ctl add-port br0 h1 --type tap --netns vsvm-h1 --ifname eth0
ip -n vsvm-h1 addr add 10.78.0.1/24 dev eth0

qemu=(ip netns exec vsvm-sw qemu-system-x86_64 -accel tcg -m 256 -smp 1
  -nodefaults -no-user-config -no-reboot -display none
  -kernel "$KERNEL" -initrd "$INITRD"
  -append "console=ttyS0 quiet panic=-1 vm.name=guest vm.ip=10.78.0.100/24"
  -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no,vnet_hdr=on"
  -device virtio-net-pci,netdev=n0,mac=52:54:00:78:00:64)

# attach_when_up: the TAP QEMU creates becomes an AF_PACKET port.
attach_when_up() {
  for _ in $(seq 100); do ip -n vsvm-sw link show "$tap" >/dev/null 2>&1 && break; sleep 0.1; done
  ctl add-port br0 vm1 --type afpacket --ifname "$tap"
}

if [ "$mode" = console ]; then
  echo "== the guest's console (ping 10.78.0.1 from it; 'poweroff -f' ends the VM; Ctrl-A x kills QEMU)"
  attach_when_up &
  "${qemu[@]}" -serial mon:stdio
  exit 0
fi

if [ "$mode" = persistent ]; then
  echo "== persistent TAP $tap made beforehand and attached before the VM starts"
  ip -n vsvm-sw tuntap add "$tap" mode tap
  ctl add-port br0 vm1 --type afpacket --ifname "$tap"
fi

# The console is a coprocess: commands go to the guest's shell, each
# followed by an end marker that `guest` reads up to.
coproc QEMU { exec "${qemu[@]}" -monitor none -serial stdio 2>&1; }
qpid=$QEMU_PID
[ "$mode" = persistent ] || attach_when_up
seq=0
out=
last=
# guest_read PATTERN SECONDS: prints console lines until one contains
# PATTERN; the lines are in $out, the last one in $last.
guest_read() {
  local end=$((SECONDS + $2)) part= chunk
  out=
  while [ $SECONDS -lt $end ]; do
    # A line cut by the timeout is kept and completed by the next read.
    if ! IFS= read -r -t 1 chunk <&"${QEMU[0]}"; then part+=$chunk; continue; fi
    last=${part}${chunk%$'\r'}
    part=
    out+="$last"$'\n'
    printf '   guest| %s\n' "$last"
    case "$last" in *"$1"*) return 0 ;; esac
  done
  echo "error: no '$1' from the guest within $2 s" >&2
  return 1
}
# guest CMD...: runs a command in the guest; its exit status is the command's.
guest() {
  seq=$((seq + 1))
  echo "$*; echo \"@@E\"\"ND $seq \$?\"" >&"${QEMU[1]}"
  guest_read "@@END $seq " 240 || return 1
  [ "${last##* }" = 0 ]
}

echo "== booting the guest (TCG: a few seconds)"
guest_read "@@READY" 120
echo; echo "== vswitchctl list-ports br0"; ctl list-ports br0

echo; echo "== ping, both ways"
desc="guest -> h1 (10.78.0.1)"; check guest ping -c 10 -i 0.2 -W 2 10.78.0.1
echo "   guest -> h1 $(grep -o 'round-trip.*' <<<"$out")"
desc="h1 -> guest (10.78.0.100)"; check ip netns exec vsvm-h1 ping -c 3 -i 0.2 -W 2 -q 10.78.0.100

echo; echo "== TCP the guest opens: 8 MiB to h1 (busybox nc -> bulk_tcp.py)"
srv_out=/tmp/vsvm-$$.srv
ip netns exec vsvm-h1 python3 control/tests/helpers/bulk_tcp.py serve 10.78.0.1 5202 >"$srv_out" &
srv=$!
for _ in $(seq 50); do grep -q ready "$srv_out" 2>/dev/null && break; sleep 0.1; done
guest vm-send 10.78.0.1 5202 8 || true
sent=$(echo "$out" | sed -n 's/^@@SENT.*sha256=\([0-9a-f]*\).*/\1/p')
wait "$srv" || true
echo "   h1 received: $(tail -1 "$srv_out")"
desc="h1 received all 8 MiB with the guest's SHA-256"; check grep -q "\"bytes\": 8388608, \"sha256\": \"$sent\"" "$srv_out"
rm -f "$srv_out"
echo "   (a TCG guest copying through nc is CPU-bound: single segments, a few tens of Mbit/s)"

echo; echo "== bulk TCP from the guest: busybox httpd serves 20 MiB (sendfile: TSO super-frames), h1 fetches it 5 times"
guest vm-serve 20 8080 || true
served=$(echo "$out" | sed -n 's/^@@SERVE.*sha256=\([0-9a-f]*\).*/\1/p')
got=$(ip netns exec vsvm-h1 python3 examples/vm/fetch.py http://10.78.0.100:8080/data 5 || true)
echo "   h1 fetched: $got"
desc="h1 fetched 5 copies of the 20 MiB with the guest's SHA-256"
check grep -q "\"bytes\": 20971520, \"sha256\": \"$served\"" <<<"$got"

echo; echo "== vswitchctl stats"; ctl stats
echo "poweroff -f" >&"${QEMU[1]}"
wait "$qpid" 2>/dev/null || true
qpid=
echo
verdict
