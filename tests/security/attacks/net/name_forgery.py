# attack: forged Host and SNI, an unresolved wildcard name, an IP literal on the allowed web ports
# users: root
import socket
import ssl

from _lib import verdict
from _net import ALLOWED_NAME, marker, opened, resolve

addresses = resolve(ALLOWED_NAME)
results = {"resolve": addresses}


def exchange(port, payload=b"", sni=None):
    """'ok: ...' if something other than the egress proxy's refusal answered."""
    try:
        s = socket.create_connection((addresses[0], port), timeout=3)
        if sni:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            s = ctx.wrap_socket(s, server_hostname=sni)
        s.sendall(payload)
        data = s.recv(200)
    except (OSError, ssl.SSLError) as exc:
        return type(exc).__name__
    if data.startswith(b"HTTP/1.1 403") and b"stockade egress" in data:
        return "refused: " + data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip()
    return "ok: " + data.decode(errors="replace")[:80] if data else "closed"


def get(path, host):
    return f"GET /{path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


if addresses:
    m = marker("name")
    results["http forged Host"] = exchange(80, get(m, f"{m}.denied.test"))
    results["http unresolved wildcard name"] = exchange(80, get(m, f"{m}.allowed.test"))
    results["http IP literal"] = exchange(80, get(m, addresses[0]))
    results["https forged SNI"] = exchange(443, get(m, ALLOWED_NAME), sni=f"{m}.denied.test")
    results["443 neither TLS nor HTTP"] = exchange(443, f"{m} hello\r\n\r\n".encode())
verdict("succeeded" if opened(results) else "blocked", results)
