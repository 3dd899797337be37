# attack: IPv6: the host's link-local address, all-nodes multicast, v4-mapped host addresses
# users: root
import socket

from _lib import verdict
from _net import ENV, marker, opened, tcp, udp

port = int(ENV["NET_HOST_PORT"])
results = {}
try:
    results["interfaces"] = [name for _, name in socket.if_nameindex()]
except OSError as exc:
    results["interfaces"] = exc.strerror
for address in filter(
    None,
    [
        ENV.get("NET_HOST_LINKLOCAL", "") and ENV["NET_HOST_LINKLOCAL"] + "%eth0",
        "::ffff:" + ENV["NET_GATEWAY"],
        "::ffff:" + ENV["NET_METADATA"],
    ],
):
    results["tcp " + address] = tcp(address, port, timeout=1, family=socket.AF_INET6)
    results["udp " + address] = udp(address, port, marker("v6"), family=socket.AF_INET6)
results["udp ff02::1%eth0"] = udp("ff02::1%eth0", port, marker("mcast"), family=socket.AF_INET6)
verdict("succeeded" if opened(results) else "blocked", results)
