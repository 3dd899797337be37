# attack: control: the one allowed destination works (so every denial below can fail)
# users: root
from _lib import verdict
from _net import ALLOWED_NAME, TCP_PORT, UDP_PORT, marker, resolve, tcp, udp

addresses = resolve(ALLOWED_NAME)
results = {"resolve": addresses}
results["tcp"] = tcp(addresses[0], TCP_PORT) if addresses else "no address"
results["udp"] = udp(addresses[0], UDP_PORT, marker("legit")) if addresses else "no address"
# Here "contained" means: it works, and only where the policy says.
verdict("contained" if results["tcp"].startswith("ok") else "blocked", results)
