#!/usr/bin/env bash
# The Docker default network in userspace: "containers" c1 and c2 (network
# namespaces) on bridge brin behind gateway rif gw (10.88.1.1/24), an uplink
# bridge brout with rif up (10.88.2.1/24) toward an "outside" namespace srv
# (10.88.2.2) that has no route back to 10.88.1.0/24: only masquerade (SNAT
# to up's address) lets replies find their way, as with docker0 and
# iptables MASQUERADE. Shows ping, TCP and UDP through the router, a port
# forward (`docker run -p 8080:80`: a server in c1 reached from srv through
# 10.88.2.1:8080), the NAT table, ARP, routes, and the router's counters,
# then tears everything down.
#   sudo examples/docker0.sh          # run, check, tear down
#   sudo examples/docker0.sh --keep   # leave it running until Ctrl-C
source "$(dirname "$0")/lib.sh"
lab_start vsd c1 c2 srv

# The switch: two bridges, a TAP per namespace, a router interface on each
# bridge, and masquerade out of the uplink.
ctl add-br brin
ctl add-br brout
ctl add-port brin c1 --type tap --netns vsd-c1 --ifname eth0
ctl add-port brin c2 --type tap --netns vsd-c2 --ifname eth0
ctl add-port brout srv --type tap --netns vsd-srv --ifname eth0
ctl add-rif gw --br brin --addr 10.88.1.1/24
ctl add-rif up --br brout --addr 10.88.2.1/24
ctl add-snat --out up

# The hosts: containers with a default route via the gateway; the outside
# server knows only its own subnet.
ip -n vsd-c1 addr add 10.88.1.2/24 dev eth0
ip -n vsd-c2 addr add 10.88.1.3/24 dev eth0
ip -n vsd-srv addr add 10.88.2.2/24 dev eth0
for c in c1 c2; do ip -n vsd-$c route add default via 10.88.1.1; done

desc="c1 pings the gateway"; check ip netns exec vsd-c1 ping -c 2 -i 0.2 -W 2 10.88.1.1
desc="c1 pings the outside server"; check ip netns exec vsd-c1 ping -c 2 -i 0.2 -W 2 10.88.2.2
desc="c2 pings the outside server"; check ip netns exec vsd-c2 ping -c 2 -i 0.2 -W 2 10.88.2.2

# TCP: the server prints the address it sees (the SNAT address, not c1's).
ip netns exec vsd-srv python3 -c '
import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.88.2.2", 8080)); s.listen(1); s.settimeout(10)
c, a = s.accept(); c.sendall(("you are %s\n" % a[0]).encode()); c.close()' &
spid=$!
sleep 0.5
seen=$(ip netns exec vsd-c1 python3 -c '
import socket; s = socket.create_connection(("10.88.2.2", 8080), timeout=5); print(s.recv(100).decode().strip())' || true)
wait $spid || true
echo "c1 -> srv over TCP: server says \"$seen\""
desc="the server sees the SNAT address 10.88.2.1"; check test "$seen" = "you are 10.88.2.1"

# UDP: a one-datagram echo.
ip netns exec vsd-srv python3 -c '
import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("10.88.2.2", 5353)); s.settimeout(10)
d, a = s.recvfrom(100); s.sendto(d, a)' &
spid=$!
sleep 0.5
desc="c2 <-> srv over UDP"; check ip netns exec vsd-c2 python3 -c '
import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(b"hi", ("10.88.2.2", 5353)); assert s.recvfrom(100)[0] == b"hi"'
wait $spid || true

# Port forwarding, as `docker run -p 8080:80`: connections to up's address
# at 8080 go to c1 port 80; the server sees the real client.
ctl add-dnat --in up --proto tcp --port 8080 --to 10.88.1.2:80
ip netns exec vsd-c1 python3 -c '
import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.88.1.2", 80)); s.listen(1); s.settimeout(10)
c, a = s.accept(); c.sendall(("c1 here, you are %s\n" % a[0]).encode()); c.close()' &
spid=$!
sleep 0.5
seen=$(ip netns exec vsd-srv python3 -c '
import socket; s = socket.create_connection(("10.88.2.1", 8080), timeout=5); print(s.recv(100).decode().strip())' || true)
wait $spid || true
echo "srv -> 10.88.2.1:8080 over TCP: server says \"$seen\""
desc="srv reaches c1:80 through 10.88.2.1:8080, and c1 sees 10.88.2.2"; check test "$seen" = "c1 here, you are 10.88.2.2"

echo; echo "== vswitchctl show"; ctl show
echo; echo "== vswitchctl route-show"; ctl route-show
echo; echo "== vswitchctl arp-show"; ctl arp-show
echo; echo "== vswitchctl dnat-show"; ctl dnat-show
echo; echo "== vswitchctl nat-show"; ctl nat-show
echo; echo "== vswitchctl stats gw"; ctl stats gw
keep_running "ip netns exec vsd-c1 ping 10.88.2.2   |   $bin/vswitchctl --socket $sock nat-show"
verdict
