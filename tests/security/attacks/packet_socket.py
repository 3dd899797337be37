# attack: open AF_PACKET sockets (link-layer sniffing and injection) and an AF_VSOCK socket
# users: user root
# expect-microvm: user=blocked root=contained
import socket

from _lib import privileged

results = {}
for name, family, kind in (
    ("packet raw", socket.AF_PACKET, socket.SOCK_RAW),
    ("packet dgram", socket.AF_PACKET, socket.SOCK_DGRAM),
    ("vsock", 40, socket.SOCK_STREAM),
):
    try:
        socket.socket(family, kind, 0x0300 if family == socket.AF_PACKET else 0).close()
        results[name] = "ok"
    except OSError as exc:
        results[name] = exc.strerror
privileged(results)
