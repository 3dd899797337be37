"""Port tunnels: one TCP connection inside the sandbox, relayed over one stream (agent side).

The host's DATA frames are written to the socket and the socket's bytes come back as BODY
DATA, within the host's credit. CLOSE half-closes the socket (no more bytes to it); the stream
ends when the socket's peer closes its side, when writing to it fails, or on CANCEL. No
network interface is needed: the connection is made from the sandbox's own loopback.
"""

from __future__ import annotations

import socket
import struct
import threading

from . import protocol as p
from .connection import AgentError, Stream

TYPE_CHECKING = False
if TYPE_CHECKING:  # for mypy only: see "Start-up" in __init__.py
    from typing import Any

CONNECT_TIMEOUT = 10.0
#: Seconds a write to the socket may block before the tunnel gives up on its peer.
SEND_TIMEOUT = 120


def _target(params: dict[str, Any]) -> tuple[str, int]:
    port, host = params.get("port"), params.get("host", "127.0.0.1")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise AgentError(p.ErrorCode.BAD_REQUEST, "'port' must be an integer from 1 to 65535")
    if not isinstance(host, str) or not host:
        raise AgentError(p.ErrorCode.BAD_REQUEST, "'host' must be a host name or address")
    return host, port


def _dial(host: str, port: int) -> socket.socket:
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except ConnectionRefusedError:
        raise AgentError(p.ErrorCode.NOT_FOUND, f"nothing listens on {host}:{port} in the sandbox") from None
    except (socket.timeout, OSError) as exc:
        raise AgentError(
            p.ErrorCode.NOT_FOUND, f"cannot connect to {host}:{port} in the sandbox: {exc}"
        ) from None
    sock.settimeout(None)
    # A peer that stops reading must not hold this thread forever.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", SEND_TIMEOUT, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _pump_out(sock: socket.socket, stream: Stream, counts: dict[str, int]) -> None:
    """Socket -> host, until EOF or the stream goes; then tell the handler."""
    try:
        while True:
            chunk = sock.recv(p.CHUNK)
            if not chunk or not stream.send_data(p.Channel.BODY, chunk):
                break
            counts["received"] += len(chunk)
    except OSError:
        pass
    stream.inbox.put(("eof", None))


def connect(stream: Stream, params: dict[str, Any]) -> dict[str, int]:
    """port.connect: relay bytes between the stream and ``host:port`` (default loopback)."""
    host, port = _target(params)
    sock = _dial(host, port)
    counts = {"sent": 0, "received": 0}
    try:
        stream.send_event({"type": "connected", "host": host, "port": port})
        try:
            threading.Thread(target=_pump_out, args=(sock, stream, counts), daemon=True).start()
        except RuntimeError:
            raise AgentError(
                p.ErrorCode.INTERNAL,
                "the agent cannot start a thread: the sandbox has reached its process limit (pids)",
            ) from None
        while True:
            kind, value = stream.inbox.get()
            if kind == "eof":
                return counts
            if kind == "cancel":
                raise AgentError(p.ErrorCode.CANCELLED, "tunnel cancelled by the host")
            if kind == "data":
                try:
                    sock.sendall(value)
                except OSError:
                    return counts  # the peer is gone: the stream is over
                counts["sent"] += len(value)
                stream.consumed(len(value))
            elif kind == "close":
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes the pump's recv()
        except OSError:
            pass
        sock.close()


HANDLERS = {p.Method.PORT_CONNECT.value: connect}
