# attack: reach the host itself on every one of its addresses (TCP and UDP), and the gateway
# users: root
from _lib import verdict
from _net import ENV, marker, opened, tcp, udp

port = int(ENV["NET_HOST_PORT"])
results = {}
for address in ENV["NET_HOST_ADDRESSES"].split(","):
    results["tcp " + address] = tcp(address, port, timeout=1)
    results["udp " + address] = udp(address, port, marker(address))
for service in (22, 53, 80, 443):  # the gateway's other ports: only DNS (53/udp+tcp) is open
    if service != 53:
        results[f"tcp gateway:{service}"] = tcp(ENV["NET_GATEWAY"], service, timeout=1)
verdict("succeeded" if opened(results) else "blocked", results)
