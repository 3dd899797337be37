"""TLS interception toward hosts a sandbox's secrets are bound to, and nothing else.

The egress proxy calls :func:`relay` for a TLS connection whose SNI names a host that at least
one of the sandbox's secrets is bound to (after the usual policy and pin checks). By then it
holds a verified TLS connection of its own to the real host (the operator's trust store, the
SNI as the name to verify). It finishes the sandbox's handshake with a leaf certificate of the
installation's CA (:mod:`.authority`), then relays HTTP/1.1 request by request: every request
must name the SNI's host in ``Host`` (no domain fronting), and in its head (request line and
headers) each placeholder of a secret bound to that host is replaced by the value; in the body
too, for a secret created with ``inject_body`` and a ``Content-Length`` body of at most 1 MiB.
Placeholders of secrets bound elsewhere pass unchanged. Responses pass unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass
from typing import Callable, TypeVar

from . import sniff
from .body import forward_body

CHUNK = 1 << 16
MAX_INJECTED_BODY = 1 << 20
T = TypeVar("T")
_LENGTH = re.compile(rb"(?i)\r\ncontent-length:[ \t]*\d+")


@dataclass(frozen=True)
class Injection:
    """One secret as the proxy uses it for one connection."""

    name: str
    placeholder: bytes
    value: bytes
    body: bool = False


class TlsStream:
    """The sandbox's side of an intercepted connection: TLS through memory BIOs, so the
    ClientHello the proxy already read can be fed in first."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: ssl.SSLContext
    ) -> None:
        self.reader, self.writer = reader, writer
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)

    async def accept(self, hello: bytes) -> None:
        """Finish the handshake (ssl.SSLError if the sandbox refuses the certificate)."""
        self.incoming.write(hello)
        await self._pump(self.tls.do_handshake)

    async def read(self, n: int = CHUNK) -> bytes:
        """Up to ``n`` decrypted bytes; b"" at the end."""
        try:
            return await self._pump(lambda: self.tls.read(min(n, CHUNK) if n > 0 else CHUNK))
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""

    async def write(self, data: bytes) -> None:
        self.tls.write(data)
        await self._flush()

    async def _pump(self, step: Callable[[], T]) -> T:
        while True:
            try:
                result = step()
            except ssl.SSLWantReadError:
                await self._flush()
                data = await self.reader.read(CHUNK)
                if data:
                    self.incoming.write(data)
                else:
                    self.incoming.write_eof()
                continue
            await self._flush()
            return result

    async def _flush(self) -> None:
        if data := self.outgoing.read():
            self.writer.write(data)
            await self.writer.drain()

    async def close(self) -> None:
        with contextlib.suppress(ssl.SSLError, OSError):
            self.tls.unwrap()
        with contextlib.suppress(OSError):
            await self._flush()


def substitute(data: bytes, injections: list[Injection], counts: dict[str, int]) -> bytes:
    """``data`` with every placeholder replaced by its value; ``counts`` gains the names used."""
    for item in injections:
        if item.placeholder in data:
            counts[item.name] = counts.get(item.name, 0) + data.count(item.placeholder)
            data = data.replace(item.placeholder, item.value)
    return data


async def relay(
    down: TlsStream,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    name: str,
    injections: list[Injection],
    counts: list[int],
    used: dict[str, int],
) -> str | None:
    """Relay the connection until either side ends it; return why it was cut, if it was."""
    response = asyncio.ensure_future(_responses(up_reader, down, counts))
    try:
        cut = await _requests(down, up_writer, name, injections, counts, used)
        with contextlib.suppress(OSError):
            if up_writer.can_write_eof():
                up_writer.write_eof()
        if cut is None:
            await response
        return cut
    except sniff.Refused as exc:
        return f"request refused: {exc}"
    except (EOFError, OSError):  # either side went away (ssl.SSLError is an OSError)
        return None
    finally:
        response.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError, ssl.SSLError):
            await response


async def _responses(up: asyncio.StreamReader, down: TlsStream, counts: list[int]) -> None:
    with contextlib.suppress(OSError, ssl.SSLError):
        while chunk := await up.read(CHUNK):
            counts[1] += len(chunk)
            await down.write(chunk)
        await down.close()


async def _requests(
    down: TlsStream,
    up: asyncio.StreamWriter,
    name: str,
    injections: list[Injection],
    counts: list[int],
    used: dict[str, int],
) -> str | None:
    data = b""
    in_body = [i for i in injections if i.body]
    while True:
        while True:
            try:
                head = sniff.http_head(data)
                break
            except EOFError:
                chunk = await down.read(CHUNK)
                if not chunk:
                    return None
                data += chunk
        if head.host != name:
            return f"a request inside TLS to {name} names {head.host} in Host"
        raw, data = data[: head.size], data[head.size :]
        out = substitute(raw, injections, used)
        if head.upgrade:
            up.write(out)
            counts[0] += len(out)
            while data or (data := await down.read(CHUNK)):
                up.write(data)
                counts[0] += len(data)
                await up.drain()
                data = b""
            return None
        if in_body and head.body == "length" and head.length <= MAX_INJECTED_BODY:
            while len(data) < head.length:
                chunk = await down.read(CHUNK)
                if not chunk:
                    return None
                data += chunk
            body, data = substitute(data[: head.length], in_body, used), data[head.length :]
            out = _LENGTH.sub(b"\r\nContent-Length: %d" % len(body), out, count=1) + body
            up.write(out)
            counts[0] += len(out)
        else:
            up.write(out)
            counts[0] += len(out)
            data = await forward_body(down, up, data, head, counts)
        await up.drain()
