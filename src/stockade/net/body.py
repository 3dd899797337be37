"""Following one HTTP/1.x request body (``Content-Length`` or chunked) from a reader to a writer.

Shared by the egress proxy's plain-HTTP path and its TLS interception (:mod:`.intercept`).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from . import sniff

CHUNK = 1 << 16


class Reader(Protocol):
    """What a body is read from: an asyncio stream, or a terminated TLS stream."""

    async def read(self, n: int = -1) -> bytes: ...


async def forward_body(
    reader: Reader, writer: asyncio.StreamWriter, data: bytes, head: sniff.HttpHead, counts: list[int]
) -> bytes:
    """Forward one request body; return the bytes read past it."""

    async def more() -> bytes:
        chunk = await reader.read(CHUNK)
        if not chunk:
            raise EOFError("the connection closed inside a request body")
        return chunk

    async def forward(n: int, buf: bytes) -> bytes:
        while n > 0:
            if not buf:
                buf = await more()
            part, buf = buf[:n], buf[n:]
            writer.write(part)
            counts[0] += len(part)
            n -= len(part)
            await writer.drain()
        return buf

    async def line(buf: bytes) -> tuple[bytes, bytes]:
        while b"\r\n" not in buf:
            if len(buf) > 4096:
                raise sniff.Refused("chunk size line too long")
            buf += await more()
        end = buf.index(b"\r\n") + 2
        return buf[:end], buf[end:]

    if head.body == "length":
        return await forward(head.length, data)
    if head.body == "none":
        return data
    while True:  # chunked
        size_line, data = await line(data)
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError:
            raise sniff.Refused("bad chunk size") from None
        writer.write(size_line)
        counts[0] += len(size_line)
        if size == 0:
            while True:  # trailers, up to the empty line
                trailer, data = await line(data)
                writer.write(trailer)
                counts[0] += len(trailer)
                if trailer == b"\r\n":
                    return data
        data = await forward(size + 2, data)
