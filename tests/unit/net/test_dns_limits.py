"""The resolver's limits against DNS tunnelling, decided before anything is forwarded (no root,
no network: every question here is refused before the upstream would be asked)."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import dns.message
import dns.rcode

from stockade.net.dns import MAX_NAME_LENGTH, Client, Resolver
from stockade.net.policy import NetworkPolicy

SANDBOX = "10.128.0.2"


def resolver(rate: tuple[float, float] = (1000.0, 1000.0)) -> tuple[Resolver, list[dict[str, Any]]]:
    reports: list[dict[str, Any]] = []

    async def admit(sandbox_id: str, addresses: dict[str, int]) -> None:
        raise AssertionError("nothing may be admitted")

    r = Resolver(
        "127.0.0.1",
        (),
        admit,
        lambda a: True,
        (60, 3600),
        report=lambda sandbox_id, **entry: reports.append(entry),
        rate=rate,
    )
    policy = NetworkPolicy.parse({"allow_out": ["*.tunnel.test"]})
    assert policy is not None
    r.clients[SANDBOX] = Client("sb", policy)
    return r, reports


def ask(r: Resolver, wire: bytes) -> int:
    reply = asyncio.run(r.answer(wire, SANDBOX, tcp=False))
    assert reply is not None and reply[:2] == wire[:2]  # the asker's id, kept
    return struct.unpack("!H", reply[2:4])[0] & 0xF


def question(name: str, rdtype: str = "A") -> bytes:
    return dns.message.make_query(name, rdtype).to_wire()


def test_long_names_and_tunnelling_types_are_refused_and_logged() -> None:
    r, reports = resolver()
    long_name = ".".join(["a" * 63, "b" * 63, "c" * 21]) + ".tunnel.test"
    assert len(long_name) > MAX_NAME_LENGTH
    assert ask(r, question(long_name)) == dns.rcode.REFUSED
    assert ask(r, question("data.tunnel.test", "TXT")) == dns.rcode.REFUSED
    assert ask(r, question("x.not-allowed.test")) == dns.rcode.NXDOMAIN
    assert [e["reason"][:20] for e in reports] == [
        f"name longer than {MAX_NAME_LENGTH}"[:20],
        "record type TXT is n",
        "name not allowed by ",
    ]
    assert all(e["verdict"] == "denied" and e["kind"] == "dns" for e in reports)


def test_a_label_over_63_bytes_is_a_format_error() -> None:
    r, reports = resolver()
    wire = (
        struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
        + bytes([64])
        + b"x" * 64
        + b"\x06tunnel\x04test\x00"
        + struct.pack("!HH", 1, 1)
    )
    assert ask(r, wire) == dns.rcode.FORMERR
    assert reports[0]["reason"].startswith("malformed question")


def test_the_rate_limit_refuses_and_reports_once() -> None:
    r, reports = resolver(rate=(0.001, 3))
    codes = [ask(r, question(f"q{i}.tunnel.test", "TXT")) for i in range(10)]
    assert codes == [dns.rcode.REFUSED] * 10  # TXT: refused either way, but ...
    limited = [e for e in reports if e["reason"] == "over the DNS question rate limit"]
    assert len(reports) - len(limited) == 3 and len(limited) == 1  # 3 judged, then 1 report


def test_strangers_get_no_answer() -> None:
    r, _ = resolver()
    assert asyncio.run(r.answer(question("a.tunnel.test"), "10.128.0.99", tcp=False)) is None
