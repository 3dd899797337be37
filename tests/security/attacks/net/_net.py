"""Helpers of the network attacks (uploaded next to them with _lib.py; stdlib only).

The runner tells every attack where things are (``NET_*`` variables) and judges it by what the
played outside world, the host and the victim sandbox received, not by its verdict alone.
"""

import os
import socket

ENV = os.environ
ALLOWED_NAME = "allowed.test"
TOKEN = ENV.get("NET_TOKEN", "tok")
TCP_PORT, UDP_PORT = int(ENV.get("NET_TCP_PORT", "8080")), int(ENV.get("NET_UDP_PORT", "9999"))


def marker(what: str) -> str:
    """A string the playground logs if it ever receives it (DNS name label or payload)."""
    return f"{TOKEN}-{os.path.splitext(os.path.basename(__import__('sys').argv[0]))[0]}-{what}"


def tcp(address: str, port: int, timeout: float = 1.0, family: int = socket.AF_INET) -> str:
    """'ok: <banner>' if a connection opened, else the error."""
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(socket.getaddrinfo(address, port, family, socket.SOCK_STREAM)[0][4])
            try:
                return "ok: " + s.recv(64).decode(errors="replace").strip()
            except OSError:
                return "ok (silent)"
    except OSError as exc:
        return type(exc).__name__ + (f" {exc.strerror}" if exc.strerror else "")


def udp(address: str, port: int, payload: str, family: int = socket.AF_INET) -> str:
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.sendto(payload.encode(), socket.getaddrinfo(address, port, family)[0][4])
        return "sent"
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def dns_query(name: str) -> bytes:
    """A DNS question for the A record of ``name``."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return os.urandom(2) + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00\x01\x00\x01"


def ask(server: str, name: str, over_tcp: bool = False, timeout: float = 1.0) -> str:
    """Send a DNS question straight to ``server``: 'answered' or the error."""
    query = dns_query(name)
    try:
        if over_tcp:
            with socket.create_connection((server, 53), timeout=timeout) as s:
                s.sendall(len(query).to_bytes(2, "big") + query)
                return "answered" if s.recv(512) else "closed"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(query, (server, 53))
            s.recv(512)
            return "answered"
    except OSError as exc:
        return type(exc).__name__


def resolve(name: str) -> list[str]:
    """Through the sandbox's own resolver (its /etc/resolv.conf)."""
    try:
        return sorted({ai[4][0] for ai in socket.getaddrinfo(name, None, socket.AF_INET)})
    except OSError:
        return []


def opened(results: dict) -> list[str]:
    """Keys whose attempt got through (a connection or an answer)."""
    return [k for k, v in results.items() if isinstance(v, str) and (v.startswith("ok") or v == "answered")]
