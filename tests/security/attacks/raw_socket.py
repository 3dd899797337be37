# attack: open raw IP sockets (forge packets, sniff)
# users: user root
# expect-microvm: user=blocked root=contained
import socket

from _lib import privileged

results = {}
for name, family, kind, proto in (
    ("raw icmp", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    ("raw tcp", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
    ("raw ipv6", socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW),
):
    try:
        socket.socket(family, kind, proto).close()
        results[name] = "ok"
    except OSError as exc:
        results[name] = exc.strerror
privileged(results)
