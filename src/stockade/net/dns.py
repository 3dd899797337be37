"""The host-side resolver every networked sandbox uses (its /etc/resolv.conf points here).

It answers only names the asking sandbox's policy allows (NXDOMAIN otherwise), forwards them to
the host's resolvers, and lets the A records it returns through that sandbox's firewall for
their TTL (clamped) before the answer leaves. The asker is known by source address, which the
firewall ties to its veth (a sandbox cannot pose as another one). IPv4 only: AAAA questions get
an empty answer.

Against DNS tunnelling (data smuggled out in the names asked, or in with the records returned):
a label over 63 bytes is malformed on the wire (FORMERR), a name longer than
:data:`MAX_NAME_LENGTH` or a record type outside :data:`ANSWERED_TYPES` is REFUSED without being
forwarded, and each sandbox may ask :attr:`Resolver.rate` questions a second (a burst of
:attr:`Resolver.burst`); the rest are REFUSED. Refusals go to the sandbox's egress log (a flood
is logged once a second, not once a question).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from .pins import Pins
from .policy import NetworkPolicy

log = logging.getLogger("stockade.net.dns")
UPSTREAM_TIMEOUT = 3.0
#: Called with (sandbox id, {address: seconds}) before an answer is returned.
Admit = Callable[[str, dict[str, int]], Awaitable[None]]
#: Called with (sandbox id, log fields) for every refused question.
Report = Callable[..., None]
#: DNS-over-TCP connections one sandbox may hold open at once.
MAX_TCP_PER_SANDBOX = 8
#: Longest question name forwarded (text form, no final dot). Real names stay far below it.
MAX_NAME_LENGTH = 160
#: Record types answered; TXT, NULL, ANY and the rest are the tunnellers' favourites.
ANSWERED_TYPES = frozenset(
    {
        dns.rdatatype.A,
        dns.rdatatype.AAAA,
        dns.rdatatype.CNAME,
        dns.rdatatype.HTTPS,
        dns.rdatatype.SVCB,
        dns.rdatatype.MX,
        dns.rdatatype.SRV,
        dns.rdatatype.CAA,
    }
)


@dataclass
class Bucket:
    """A token bucket: ``rate`` questions a second, bursts of ``burst``."""

    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = field(default_factory=time.monotonic)
    reported: float = 0.0

    def take(self) -> bool:
        now = time.monotonic()
        if self.tokens < 0:
            self.tokens = self.burst
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def report_due(self) -> bool:
        """True at most once a second while questions are being refused."""
        now = time.monotonic()
        if now - self.reported >= 1:
            self.reported = now
            return True
        return False


@dataclass
class Client:
    """One sandbox as the resolver sees it."""

    sandbox_id: str
    policy: NetworkPolicy


class Resolver:
    """UDP and TCP DNS on ``address``:53 for the sandboxes registered in :attr:`clients`."""

    def __init__(
        self,
        address: str,
        upstream: tuple[str, ...],
        admit: Admit,
        admissible: Callable[[str], bool],
        ttl_range: tuple[int, int],
        report: Report = lambda sandbox_id, **entry: None,
        rate: tuple[float, float] = (50.0, 200.0),
    ) -> None:
        self.address = address
        self.upstream = upstream
        self.admit = admit
        self.admissible = admissible
        self.ttl_range = ttl_range
        self.report = report
        self.rate, self.burst = rate
        self.clients: dict[str, Client] = {}
        self.pins = Pins()
        self._buckets: dict[str, Bucket] = {}
        self._tcp_open: dict[str, int] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        resolver = self

        class Udp(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                loop.create_task(resolver._answer_udp(data, addr)).add_done_callback(_log_failure)

        self._udp, _ = await loop.create_datagram_endpoint(Udp, local_addr=(self.address, 53))
        self._tcp = await asyncio.start_server(self._serve_tcp, self.address, 53)

    async def close(self) -> None:
        if self._udp:
            self._udp.close()
        if self._tcp:
            self._tcp.close()
            await self._tcp.wait_closed()

    async def _answer_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = await self.answer(data, addr[0], tcp=False)
        if reply and self._udp:
            self._udp.sendto(reply, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        if self._tcp_open.get(peer, 0) >= MAX_TCP_PER_SANDBOX or peer not in self.clients:
            writer.close()  # the engine's file descriptors are shared by every sandbox
            return
        self._tcp_open[peer] = self._tcp_open.get(peer, 0) + 1
        try:
            while True:
                size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 10))[0]
                reply = await self.answer(await reader.readexactly(size), peer, tcp=True)
                if not reply:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
            pass
        finally:
            self._tcp_open[peer] -= 1
            writer.close()

    async def answer(self, data: bytes, peer: str, tcp: bool) -> bytes | None:
        """The reply to one query from ``peer`` (None: drop it)."""
        client = self.clients.get(peer)
        if client is None or len(data) < 12:
            return None
        bucket = self._buckets.setdefault(peer, Bucket(self.rate, self.burst))
        if not bucket.take():
            if bucket.report_due():
                self._refused(client, None, "over the DNS question rate limit", tcp)
            return _bare_reply(data, dns.rcode.REFUSED)
        try:
            query = dns.message.from_wire(data)
        except Exception as exc:  # noqa: BLE001 - anything malformed from a sandbox is refused
            self._refused(
                client, None, f"malformed question ({type(exc).__name__}: labels are at most 63 bytes)", tcp
            )
            return _bare_reply(data, dns.rcode.FORMERR)
        if len(query.question) != 1:
            return _reply(query, dns.rcode.REFUSED)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True)
        if len(name) > MAX_NAME_LENGTH:
            self._refused(client, name, f"name longer than {MAX_NAME_LENGTH} bytes", tcp)
            return _reply(query, dns.rcode.REFUSED)
        if question.rdtype not in ANSWERED_TYPES:
            self._refused(
                client, name, f"record type {dns.rdatatype.to_text(question.rdtype)} is not answered", tcp
            )
            return _reply(query, dns.rcode.REFUSED)
        named = client.policy.allows_name(name)
        if not (named or client.policy.resolves_any()):
            self._refused(client, name, "name not allowed by the policy", tcp)
            return _reply(query, dns.rcode.NXDOMAIN)
        if question.rdtype == dns.rdatatype.AAAA:
            return _reply(query, dns.rcode.NOERROR)
        try:
            raw = await self._forward(query.to_wire(), tcp)
            response = dns.message.from_wire(raw)
        except Exception as exc:  # noqa: BLE001 - an upstream failure is a SERVFAIL
            log.warning("upstream DNS failed for %s: %s", name, exc)
            return _reply(query, dns.rcode.SERVFAIL)
        low, high = self.ttl_range
        admitted: dict[str, int] = {}
        for rrset in response.answer:
            if rrset.rdtype != dns.rdatatype.A:
                continue
            for rdata in list(rrset):
                address = rdata.to_text()
                if not self.admissible(address):
                    rrset.discard(rdata)  # type: ignore[no-untyped-call]  # DNS rebinding: never hand out internal addresses
                elif named:
                    admitted[address] = max(low, min(high, rrset.ttl))
        response.answer = [r for r in response.answer if len(r)]
        if admitted:
            await self.admit(client.sandbox_id, admitted)
            self.pins.add(client.sandbox_id, name.lower(), admitted)
        return _encode(query, response, tcp)

    def _refused(self, client: Client, name: str | None, reason: str, tcp: bool) -> None:
        self.report(
            client.sandbox_id,
            kind="dns",
            destination=f"{self.address}:53",
            name=name,
            verdict="denied",
            reason=reason,
            transport="tcp" if tcp else "udp",
        )

    def forget(self, address: str, sandbox_id: str) -> None:
        """Drop a sandbox's registration, rate state and pinned answers."""
        self.clients.pop(address, None)
        self._buckets.pop(address, None)
        self.pins.forget(sandbox_id)

    async def _forward(self, wire: bytes, tcp: bool) -> bytes:
        last: Exception | None = None
        for server in self.upstream:
            try:
                if not tcp:
                    reply = await _udp_query(wire, server)
                    if not dns.message.from_wire(reply).flags & dns.flags.TC:
                        return reply
                return await _tcp_query(wire, server)
            except (OSError, asyncio.TimeoutError, dns.exception.DNSException) as exc:
                last = exc
        raise last or OSError("no upstream resolver configured")


def _log_failure(task: "asyncio.Task[None]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("answering a DNS query failed", exc_info=task.exception())


def _encode(query: dns.message.Message, response: dns.message.Message, tcp: bool) -> bytes:
    limit = 65535 if tcp else max(512, query.payload if query.edns >= 0 else 512)
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        truncated = dns.message.make_response(query)
        truncated.flags |= dns.flags.TC | dns.flags.RA
        return truncated.to_wire()


def _bare_reply(data: bytes, rcode: dns.rcode.Rcode) -> bytes:
    """A header-only reply to a question that is not parsed (its id and opcode kept)."""
    flags = 0x8000 | (data[2] & 0x78) << 8 | 0x0080 | int(rcode)  # QR, opcode, RA, rcode
    return data[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)


def _reply(query: dns.message.Message, rcode: dns.rcode.Rcode) -> bytes:
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    response.flags |= dns.flags.RA
    return response.to_wire()


async def _udp_query(wire: bytes, server: str) -> bytes:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bytes] = loop.create_future()
    # Our own id, so a spoofed reply must guess it (the sandbox's id is not trusted either).
    qid = random.getrandbits(16)
    ours = struct.pack("!H", qid) + wire[2:]

    class Once(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if len(data) >= 2 and data[:2] == ours[:2] and not future.done():
                future.set_result(data)

        def error_received(self, exc: Exception) -> None:
            if not future.done():
                future.set_exception(exc)

    transport, _ = await loop.create_datagram_endpoint(Once, remote_addr=(server, 53))
    try:
        transport.sendto(ours)
        reply = await asyncio.wait_for(future, UPSTREAM_TIMEOUT)
    finally:
        transport.close()
    return wire[:2] + reply[2:]


async def _tcp_query(wire: bytes, server: str) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(server, 53), UPSTREAM_TIMEOUT)
    try:
        writer.write(struct.pack("!H", len(wire)) + wire)
        await writer.drain()
        size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), UPSTREAM_TIMEOUT))[0]
        return await asyncio.wait_for(reader.readexactly(size), UPSTREAM_TIMEOUT)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
