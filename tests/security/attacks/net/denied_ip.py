# attack: connect to a public address and a name the policy does not allow
# users: root
from _lib import verdict
from _net import ENV, TCP_PORT, UDP_PORT, marker, opened, resolve, tcp, udp

denied = ENV["NET_DENIED"]
results = {
    "tcp " + denied: tcp(denied, TCP_PORT),
    "udp " + denied: udp(denied, UDP_PORT, marker("udp")),
    "resolve denied.test": resolve("denied.test"),
}
if results["resolve denied.test"]:
    results["tcp denied.test"] = tcp(results["resolve denied.test"][0], TCP_PORT)
verdict("succeeded" if opened(results) else "blocked", results)
