"""The proxy's reading of what a connection is for: real ClientHellos (from Python's ssl) and
HTTP heads, including the ambiguous ones an attacker would send (no root, no network)."""

from __future__ import annotations

import ssl

import pytest

from stockade.net import sniff
from stockade.net.egresslog import EgressLog
from stockade.net.pins import Pins


def hello(server_hostname: str | None) -> bytes:
    """The first flight of a real TLS client."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def test_sni_of_a_real_client_hello() -> None:
    data = hello("Allowed.Test")
    assert sniff.client_hello_name(data) == "allowed.test"
    for cut in (3, 5, 40, len(data) - 1):  # a hello still arriving
        with pytest.raises(EOFError):
            sniff.client_hello_name(data[:cut])


def test_client_hello_without_sni_names_nothing() -> None:
    assert sniff.client_hello_name(hello(None)) is None


def test_client_hello_split_over_two_records_is_read() -> None:
    data = hello("allowed.test")
    body = data[5:]
    first, rest = body[:50], body[50:]
    split = (
        b"\x16\x03\x01"
        + len(first).to_bytes(2, "big")
        + first
        + b"\x16\x03\x01"
        + len(rest).to_bytes(2, "big")
        + rest
    )
    assert sniff.client_hello_name(split) == "allowed.test"


def test_client_hello_with_two_names_or_garbage_is_refused() -> None:
    data = bytearray(hello("aaaa.test"))
    with pytest.raises(sniff.Refused):
        sniff.client_hello_name(b"\x17\x03\x03\x00\x10" + bytes(16))  # application data first
    with pytest.raises(sniff.Refused):
        sniff.client_hello_name(bytes(data).replace(b"aaaa.test", b"aa\x00a.test"))


@pytest.mark.parametrize(
    "head, host, body",
    [
        (b"GET / HTTP/1.1\r\nHost: Allowed.Test:80\r\n\r\n", "allowed.test", "none"),
        (b"POST /x HTTP/1.1\r\nhost: a.test\r\nContent-Length: 5\r\n\r\n", "a.test", "length"),
        (b"POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n", "a.test", "chunked"),
        (b"GET http://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n", "a.test", "none"),
        (b"GET / HTTP/1.0\r\n\r\n", None, "none"),
        (b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", "2001:db8::1", "none"),
    ],
)
def test_http_heads(head: bytes, host: str | None, body: str) -> None:
    parsed = sniff.http_head(head + b"rest")
    assert (parsed.host, parsed.body, parsed.size) == (host, body, len(head))


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
        b"GET http://b.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\n X-Folded: b.test\r\n\r\n",
        b"CONNECT b.test:443 HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: user@b.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    ],
)
def test_ambiguous_http_heads_are_refused(head: bytes) -> None:
    with pytest.raises(sniff.Refused):
        sniff.http_head(head)


def test_pins_expire_and_are_per_sandbox() -> None:
    pins = Pins()
    pins.add("a", "allowed.test", {"203.0.113.10": 60, "203.0.113.12": 0})
    assert pins.holds("a", "allowed.test", "203.0.113.10")
    assert not pins.holds("a", "allowed.test", "203.0.113.12")  # expired at once
    assert not pins.holds("b", "allowed.test", "203.0.113.10")
    assert not pins.holds("a", "other.test", "203.0.113.10")
    pins.forget("a")
    assert not pins.holds("a", "allowed.test", "203.0.113.10")


def test_egress_log_is_bounded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    log = EgressLog(tmp_path, max_bytes=4096)
    for i in range(500):
        log.write("sb", kind="dns", name="x" * 1000 + str(i), verdict="denied")
    sizes = [p.stat().st_size for p in tmp_path.iterdir()]
    assert len(sizes) == 2 and sum(sizes) <= 2 * 4096
    entries = log.read("sb")
    assert entries and entries[-1]["name"].endswith("...") and len(entries[-1]["name"]) < 300
    log.remove("sb")
    assert list(tmp_path.iterdir()) == []
