# attack: allowed names whose answers point at the metadata address, the host, a private range
# users: root
import time

from _lib import verdict
from _net import ENV, TCP_PORT, opened, resolve, tcp

results = {}
internal = (ENV["NET_METADATA"], ENV["NET_PRIVATE"], ENV["NET_PLAYGROUND_HOST"])
for name in ("rebind.allowed.test", "private.allowed.test", "host.allowed.test", "mixed.allowed.test"):
    results[name] = resolve(name)
# Rebinding over time: the first answer is the allowed address, the next ones the metadata's.
results["flip 1"] = resolve("flip.allowed.test")
time.sleep(1.2)
results["flip 2"] = resolve("flip.allowed.test")
for address in internal:
    results["tcp " + address] = tcp(address, TCP_PORT)
leaked = [n for n, v in results.items() if isinstance(v, list) and set(v) & set(internal)]
verdict("succeeded" if opened(results) or leaked else "blocked", {**results, "internal answers": leaked})
