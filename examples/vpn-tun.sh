#!/usr/bin/env bash
# A VPN concentrator behind vswitch's router: the "VPN backend" (namespace
# be, think WireGuard or OpenVPN in tun mode) gets a TUN router interface vpn
# (10.89.8.1/24) whose kernel side is tun0 in be (10.89.8.2/24); the backend
# routes the LAN 10.89.1.0/24 back through tun0. LAN host h1 sits on bridge
# lan behind gateway rif gw (10.89.1.1/24) and reaches the tunnel's end
# 10.89.8.2 and, through a static route via 10.89.8.2, the remote VPN
# clients' subnet 10.89.9.0/24 (here one address, 10.89.9.1 on the backend's
# loopback: this kernel has no dummy interfaces). No NAT: the backend sees
# h1's own address. Then del-route withdraws the client route (ping gets
# "net unreachable" from the gateway) and del-rif vpn removes tun0.
#   sudo examples/vpn-tun.sh          # run, check, tear down
#   sudo examples/vpn-tun.sh --keep   # leave it running until Ctrl-C
source "$(dirname "$0")/lib.sh"
lab_start vsvpn h1 be

# The switch: the LAN bridge with h1's TAP and the gateway rif, the TUN rif
# toward the backend (the daemon creates tun0 inside vsvpn-be), and the route
# to the VPN clients through the backend's end of the tunnel.
ctl add-br lan
ctl add-port lan h1 --type tap --netns vsvpn-h1 --ifname eth0
ctl add-rif gw --br lan --addr 10.89.1.1/24
ctl add-rif vpn --type tun --netns vsvpn-be --ifname tun0 --addr 10.89.8.1/24
ctl add-route 10.89.9.0/24 via 10.89.8.2

# The hosts: h1 with a default route via the gateway; the backend with its
# tunnel address, the clients' address, and the LAN routed back into tun0.
ip -n vsvpn-h1 addr add 10.89.1.2/24 dev eth0
ip -n vsvpn-h1 route add default via 10.89.1.1
ip -n vsvpn-be link set lo up
ip -n vsvpn-be addr add 10.89.8.2/24 dev tun0
ip -n vsvpn-be addr add 10.89.9.1/32 dev lo
ip -n vsvpn-be route add 10.89.1.0/24 via 10.89.8.1 dev tun0

desc="the backend's tun0 exists and is up"; check ip -n vsvpn-be link show tun0 up
desc="h1 pings the gateway"; check ip netns exec vsvpn-h1 ping -c 2 -i 0.2 -W 2 10.89.1.1
desc="the backend pings the router's tunnel address"; check ip netns exec vsvpn-be ping -c 2 -i 0.2 -W 2 10.89.8.1
desc="h1 pings the backend's tunnel end"; check ip netns exec vsvpn-h1 ping -c 2 -i 0.2 -W 2 10.89.8.2
desc="h1 pings a VPN client address (static route via 10.89.8.2)"; check ip netns exec vsvpn-h1 ping -c 2 -i 0.2 -W 2 10.89.9.1
desc="the backend pings h1 (from a client address)"; check ip netns exec vsvpn-be ping -c 2 -i 0.2 -W 2 -I 10.89.9.1 10.89.1.2

# TCP: a server on the client address prints the peer it sees (h1's own
# address: routed, not translated), then receives 8 MB (TCP super-frames
# from the TAP side cross the TUN as GSO packets) and reports the count.
ip netns exec vsvpn-be python3 -c '
import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.89.9.1", 8080)); s.listen(1); s.settimeout(10)
c, a = s.accept(); c.settimeout(10); c.sendall(("you are %s\n" % a[0]).encode()); n = 0
while True:
    d = c.recv(65536)
    if not d: break
    n += len(d)
c.sendall(b"got %d\n" % n); c.close()' &
spid=$!
sleep 0.5
out=$(ip netns exec vsvpn-h1 python3 -c '
import socket; s = socket.create_connection(("10.89.9.1", 8080), timeout=10)
f = s.makefile("rb"); print(f.readline().decode().strip())
s.sendall(b"x" * (8 << 20)); s.shutdown(socket.SHUT_WR); print(f.readline().decode().strip())' || true)
wait $spid || true
seen=$(echo "$out" | sed -n 1p); got=$(echo "$out" | sed -n 2p)
echo "h1 -> 10.89.9.1 over TCP: server says \"$seen\", then \"$got\""
desc="the backend sees h1's own address 10.89.1.2"; check test "$seen" = "you are 10.89.1.2"
desc="8 MB over TCP from h1 to a VPN client address"; check test "$got" = "got 8388608"

echo; echo "== vswitchctl show"; ctl show
echo; echo "== vswitchctl route-show"; ctl route-show
echo; echo "== vswitchctl arp-show"; ctl arp-show
echo; echo "== vswitchctl stats vpn"; ctl stats vpn
echo; echo "== ip -n vsvpn-be addr show tun0"; ip -n vsvpn-be addr show tun0

keep_running "ip netns exec vsvpn-h1 ping 10.89.9.1   |   $bin/vswitchctl --socket $sock route-show"

# Withdraw the client route: the gateway now answers "net unreachable".
echo; echo "== vswitchctl del-route 10.89.9.0/24"; ctl del-route 10.89.9.0/24; ctl route-show
unreach=$(ip netns exec vsvpn-h1 ping -c 1 -W 2 10.89.9.1 2>&1 || true)
echo "$unreach" | grep -i unreachable || true
desc="after del-route, 10.89.9.1 is net unreachable from the gateway"; check grep -q "From 10.89.1.1.*Destination Net Unreachable" <<<"$unreach"
desc="the tunnel end itself still answers"; check ip netns exec vsvpn-h1 ping -c 1 -W 2 10.89.8.2

# Put it back, then remove the TUN interface: tun0 goes, and so does the
# static route through it.
ctl add-route 10.89.9.0/24 via 10.89.8.2
echo; echo "== vswitchctl del-rif vpn"; ctl del-rif vpn; ctl route-show
desc="after del-rif, tun0 is gone from the backend"; check test -z "$(ip -n vsvpn-be link show tun0 2>/dev/null)"
desc="after del-rif, the route via 10.89.8.2 is gone too"; check test -z "$(ctl route-show | grep 10.89.9.0)"
desc="h1 still reaches its gateway"; check ip netns exec vsvpn-h1 ping -c 1 -W 2 10.89.1.1

verdict
