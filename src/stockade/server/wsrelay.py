"""WebSocket through a port tunnel: the client's ASGI WebSocket on one side, a WebSocket client
(``websockets``' sans-I/O protocol) speaking to the sandbox's server over the tunnel on the other.

The handshake with the sandbox's server happens first; the client is accepted only if it
succeeds (with the subprotocol the server chose). Then messages go both ways until either side
closes; pings from the sandbox are answered by the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.types import Receive, Scope, Send
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from ..engine import EngineError
from ..engine.ports import Tunnel

#: Largest message relayed (bytes), either way.
MAX_MESSAGE = 16 << 20


class _Upstream:
    """The sandbox side: a sans-I/O WebSocket client whose bytes go through the tunnel."""

    def __init__(self, tunnel: Tunnel, path: str, subprotocols: list[str]) -> None:
        self.tunnel = tunnel
        self.protocol = ClientProtocol(
            parse_uri(f"ws://127.0.0.1:{tunnel.port}{path}"),
            max_size=MAX_MESSAGE,
            subprotocols=[Subprotocol(s) for s in subprotocols] or None,
        )
        self.lock = asyncio.Lock()
        #: Events that arrived with the handshake response, not yet handled.
        self.pending: list[Any] = []

    async def flush(self) -> None:
        async with self.lock:
            for data in self.protocol.data_to_send():
                if data:
                    await self.tunnel.write(data)
                else:
                    await self.tunnel.close_write()

    async def handshake(self, headers: list[tuple[bytes, bytes]]) -> Response:
        request = self.protocol.connect()
        for key, value in headers:
            name = key.decode("latin-1")
            if name.lower() == "host":
                del request.headers["Host"]
            request.headers[name] = value.decode("latin-1")
        self.protocol.send_request(request)
        await self.flush()
        while True:
            data = await self.tunnel.read()
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            events = self.protocol.events_received()
            for i, event in enumerate(events):
                if isinstance(event, Response):
                    if self.protocol.handshake_exc is not None:
                        raise self.protocol.handshake_exc
                    self.pending = events[i + 1 :]
                    return event
            if not data:
                raise InvalidHandshake("the server closed the connection during the handshake")


async def relay_websocket(
    scope: Scope, receive: Receive, send: Send, tunnel: Tunnel, path: str, headers: list[tuple[bytes, bytes]]
) -> None:
    """Relay one WebSocket between the client and the sandbox's server on ``tunnel``."""
    upstream = _Upstream(tunnel, path, list(scope.get("subprotocols") or []))
    try:
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            response = await upstream.handshake(headers)
        except (InvalidHandshake, EngineError) as exc:
            reason = f"the server on port {tunnel.port} refused the WebSocket: {exc}"
            await send({"type": "websocket.close", "code": 4502, "reason": reason[:120]})
            return
        await send(
            {"type": "websocket.accept", "subprotocol": response.headers.get("Sec-WebSocket-Protocol")}
        )
        down = asyncio.create_task(_downstream(upstream, send))
        try:
            await _upstream(upstream, receive, down)
        finally:
            down.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await down
    finally:
        await tunnel.aclose()


async def _upstream(upstream: _Upstream, receive: Receive, down: asyncio.Task[None]) -> None:
    """Client messages to the sandbox, until the client or the sandbox closes."""
    protocol = upstream.protocol
    while True:
        get = asyncio.ensure_future(receive())
        await asyncio.wait({get, down}, return_when=asyncio.FIRST_COMPLETED)
        if not get.done():  # the sandbox side ended first
            get.cancel()
            return
        message = dict(get.result())
        if message["type"] == "websocket.disconnect":
            code = message.get("code", 1000)
            with contextlib.suppress(Exception):
                protocol.send_close(code if _sendable(code) else CloseCode.NORMAL_CLOSURE)
                await upstream.flush()
            return
        if message["type"] != "websocket.receive":
            continue
        if message.get("text") is not None:
            protocol.send_text(message["text"].encode())
        elif message.get("bytes") is not None:
            protocol.send_binary(message["bytes"])
        await upstream.flush()


async def _downstream(upstream: _Upstream, send: Send) -> None:
    """The sandbox's messages to the client; closes the client when the sandbox closes."""
    protocol = upstream.protocol
    parts: list[bytes] = []
    text = False
    close = Close(CloseCode.ABNORMAL_CLOSURE, "")
    data, events = b"-", upstream.pending
    await upstream.flush()
    while True:
        if not events:
            data = await upstream.tunnel.read()
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
            events = protocol.events_received()
            await upstream.flush()  # pongs and the closing handshake
        for event in events:
            if not isinstance(event, Frame):
                continue
            if event.opcode in (Opcode.TEXT, Opcode.BINARY):
                parts, text = [bytes(event.data)], event.opcode is Opcode.TEXT
            elif event.opcode is Opcode.CONT:
                parts.append(bytes(event.data))
            elif event.opcode is Opcode.CLOSE:
                close = Close.parse(bytes(event.data)) if event.data else Close(CloseCode.NO_STATUS_RCVD, "")
                continue
            else:
                continue
            if event.fin:
                body = b"".join(parts)
                await send(
                    {"type": "websocket.send", "text": body.decode()}
                    if text
                    else {"type": "websocket.send", "bytes": body}
                )
        events = []
        if not data or protocol.close_rcvd is not None or protocol.parser_exc is not None:
            code = close.code if _sendable(close.code) else CloseCode.NORMAL_CLOSURE
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": int(code), "reason": close.reason[:120]})
            return


def _sendable(code: int) -> bool:
    """Close codes an endpoint may put in a close frame (RFC 6455 section 7.4)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011) or 3000 <= code < 5000
