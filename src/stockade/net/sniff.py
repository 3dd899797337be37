"""What a connection says it is for: the SNI of a TLS ClientHello, the ``Host`` of an HTTP request.

Pure parsing, no I/O: the egress proxy feeds in the first bytes a sandbox sent and gets back
either "need more bytes", a name (or ``None`` when the connection names nothing), or a reason
to refuse it. Anything ambiguous is refused rather than guessed: two SNI entries, an encrypted
ClientHello (its real name is hidden), two ``Host`` headers, a request target naming another
host, ``Content-Length`` together with ``Transfer-Encoding`` (request smuggling), folded headers.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

#: The most the proxy reads before it must know the name (a ClientHello with post-quantum key
#: shares is ~1.8 kB; a request head rarely passes 8 kB).
MAX_PREFIX = 32 * 1024
TLS_HANDSHAKE, CLIENT_HELLO = 22, 1
EXT_SNI, EXT_ECH = 0x0000, 0xFE0D
_HOSTNAME = re.compile(r"^[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*$")
_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class Refused(ValueError):
    """The connection cannot be attributed to one name; the message says why."""


@dataclass(frozen=True)
class HttpHead:
    """One HTTP/1.x request head."""

    size: int  # bytes of the head, blank line included
    host: str | None
    body: str  # "none", "length" or "chunked"
    length: int = 0
    upgrade: bool = False


def normalise(name: str) -> str:
    """A host name as the policy compares it (an IP literal comes back as the address)."""
    name = name.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name


def is_address(name: str) -> bool:
    """Whether ``name`` is an IP literal rather than a host name."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _check_name(raw: bytes, where: str) -> str:
    try:
        name = normalise(raw.decode("ascii"))
    except UnicodeDecodeError:
        raise Refused(f"{where} is not ASCII") from None
    if not (is_address(name) or (len(name) <= 253 and _HOSTNAME.match(name))):
        raise Refused(f"{where} {name[:80]!r} is not a host name")
    return name


# -- TLS -----------------------------------------------------------------------------------------
def client_hello_name(data: bytes) -> str | None:
    """The SNI host name of the ClientHello at the start of ``data`` (``None``: it sends none).

    Raises :class:`Refused` for a malformed or ambiguous hello, and ``EOFError`` when more bytes
    are needed (a hello may span several TLS records)."""
    handshake, offset = bytearray(), 0
    while True:
        if len(data) - offset < 5:
            raise EOFError
        kind, length = data[offset], int.from_bytes(data[offset + 3 : offset + 5], "big")
        if kind != TLS_HANDSHAKE or data[offset + 1] != 3 or length == 0 or length > 16384:
            raise Refused("not a TLS handshake record")
        if len(data) - offset - 5 < length:
            raise EOFError
        handshake += data[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if len(handshake) >= 4:
            if handshake[0] != CLIENT_HELLO:
                raise Refused("the first TLS handshake message is not a ClientHello")
            size = int.from_bytes(handshake[1:4], "big")
            if size > MAX_PREFIX:
                raise Refused("ClientHello too large")
            if len(handshake) >= 4 + size:
                return _hello_sni(bytes(handshake[4 : 4 + size]))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Refused("truncated ClientHello")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, n: int) -> bytes:
        return self.take(self.number(n))


def _hello_sni(body: bytes) -> str | None:
    r = _Reader(body)
    r.take(2 + 32)  # legacy version, random
    r.vector(1)  # session id
    r.vector(2)  # cipher suites
    r.vector(1)  # compression methods
    if r.pos == len(body):
        return None  # no extensions at all
    extensions = _Reader(r.vector(2))
    seen: set[int] = set()
    name: str | None = None
    while extensions.pos < len(extensions.data):
        kind, data = extensions.number(2), extensions.vector(2)
        if kind in seen:
            raise Refused(f"TLS extension {kind} appears twice")
        seen.add(kind)
        if kind == EXT_ECH:
            raise Refused("encrypted ClientHello hides the server name")
        if kind == EXT_SNI:
            entries = _Reader(_Reader(data).vector(2))
            names = []
            while entries.pos < len(entries.data):
                name_type, value = entries.number(1), entries.vector(2)
                if name_type == 0:
                    names.append(value)
            if len(names) != 1:
                raise Refused("the server_name extension must name exactly one host")
            name = _check_name(names[0], "SNI")
    return name


# -- HTTP ----------------------------------------------------------------------------------------
def http_head(data: bytes) -> HttpHead:
    """Parse the request head at the start of ``data`` (``EOFError``: not complete yet)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_PREFIX:
            raise Refused("HTTP request head too large")
        raise EOFError
    lines = data[:end].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not _TOKEN.match(parts[0]):
        raise Refused("not an HTTP/1.x request")
    method, target = parts[0].upper(), parts[1]
    if method == b"CONNECT":
        raise Refused("CONNECT is not proxied")
    headers: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise Refused("folded HTTP header lines are refused")
        key, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(key):
            raise Refused("malformed HTTP header line")
        headers.setdefault(key.strip().lower(), []).append(value.strip())
    hosts = headers.get(b"host", [])
    if len(hosts) > 1:
        raise Refused("more than one Host header")
    host = _host_of(hosts[0], "Host") if hosts else None
    lower = target.lower()
    if lower.startswith((b"http://", b"https://")):
        authority = target.split(b"/", 3)[2]
        if _host_of(authority, "request target") != host:
            raise Refused("the request target names another host than the Host header")
    elif not (target.startswith(b"/") or target == b"*"):
        raise Refused("unsupported request target form")
    te, cl = headers.get(b"transfer-encoding", []), headers.get(b"content-length", [])
    if te and cl:
        raise Refused("Content-Length together with Transfer-Encoding")
    upgrade = bool(headers.get(b"upgrade"))
    if te:
        if [v.lower() for v in te] != [b"chunked"]:
            raise Refused("only Transfer-Encoding: chunked is supported")
        return HttpHead(end + 4, host, "chunked", upgrade=upgrade)
    if cl:
        if len(set(cl)) != 1 or not cl[0].isdigit():
            raise Refused("invalid Content-Length")
        return HttpHead(end + 4, host, "length", int(cl[0]), upgrade=upgrade)
    return HttpHead(end + 4, host, "none", upgrade=upgrade)


def _host_of(value: bytes, where: str) -> str:
    """The host part of ``host[:port]`` / ``[v6]:port`` / ``user@host`` is refused."""
    if b"@" in value:
        raise Refused(f"{where} carries user information")
    if value.startswith(b"["):
        host = value[: value.find(b"]") + 1] if b"]" in value else value
    else:
        host = value.rsplit(b":", 1)[0] if value.count(b":") == 1 else value
    return _check_name(host, where)
