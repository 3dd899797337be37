"""The proxy's request-by-request reading of plain HTTP (no root, no network): bodies are
followed exactly, so a request hidden after a body is still checked, and a body is never
mistaken for a request."""

from __future__ import annotations

import asyncio

from stockade.net import sniff
from stockade.net.proxy import _http_requests


class Sink:
    """Stands in for the upstream writer: collects what would be sent."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        pass


def forward(stream: bytes, pieces: int = 7) -> tuple[str | None, bytes]:
    async def go() -> tuple[str | None, bytes]:
        reader = asyncio.StreamReader()
        size = max(1, len(stream) // pieces)
        for i in range(0, len(stream), size):  # arrives in pieces
            reader.feed_data(stream[i : i + size])
        reader.feed_eof()
        first = await reader.readuntil(b"\r\n\r\n")
        sink = Sink()
        reason = await _http_requests(reader, sink, first, sniff.http_head(first), [0, 0])  # type: ignore[arg-type]
        return reason, sink.data

    return asyncio.run(go())


ALLOWED = b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
EVIL = b"GET /x HTTP/1.1\r\nHost: evil.test\r\n\r\n"


def test_kept_alive_requests_to_the_same_host_pass_whole() -> None:
    body = b"POST /p HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 11\r\n\r\nhello world"
    chunked = (
        b"POST /c HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n"
    )
    reason, sent = forward(ALLOWED + body + chunked + ALLOWED)
    assert reason is None
    assert sent == ALLOWED + body + chunked + ALLOWED


def test_a_request_after_a_body_is_checked() -> None:
    for first in (
        b"POST / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ):
        reason, sent = forward(first + EVIL)
        assert reason and "names evil.test, not allowed.test" in reason
        assert sent == first and b"evil" not in sent


def test_a_request_inside_a_body_is_only_body() -> None:
    first = b"POST / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: %d\r\n\r\n" % len(EVIL)
    reason, sent = forward(first + EVIL)
    assert reason is None and sent == first + EVIL


def test_smuggling_in_a_later_request_cuts_the_connection() -> None:
    smuggle = (
        b"POST / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    reason, sent = forward(ALLOWED + smuggle + EVIL)
    assert reason and reason.startswith("request refused: Content-Length together")
    assert sent == ALLOWED
