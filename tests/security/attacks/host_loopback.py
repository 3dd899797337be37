# attack: reach a service on the host's loopback and a host abstract unix socket
# users: user root
# expect-microvm: blocked
import socket

from _lib import ENV, verdict

results = {}
try:
    socket.create_connection(("127.0.0.1", int(ENV["STOCKADE_HOST_TCP_PORT"])), timeout=2).close()
    results["host 127.0.0.1 tcp"] = "ok"
except OSError as exc:
    results["host 127.0.0.1 tcp"] = exc.strerror or str(exc)
s = socket.socket(socket.AF_UNIX)
try:
    s.connect("\0" + ENV["STOCKADE_HOST_ABSTRACT"])
    results["host abstract socket"] = "ok"
except OSError as exc:
    results["host abstract socket"] = exc.strerror
s.close()
results["interfaces"] = ",".join(name for _, name in socket.if_nameindex())
verdict("succeeded" if "ok" in results.values() else "blocked", results)
