"""The host-side resolver every networked sandbox uses (its /etc/resolv.conf points here).

It answers only names the asking sandbox's policy allows (NXDOMAIN otherwise), forwards them to
the host's resolvers, and lets the A records it returns through that sandbox's firewall for
their TTL (clamped) before the answer leaves. The asker is known by source address, which the
firewall ties to its veth (a sandbox cannot pose as another one). IPv4 only: AAAA questions get
an empty answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from dataclasses import dataclass
from typing import Awaitable, Callable

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from .policy import NetworkPolicy

log = logging.getLogger("stockade.net.dns")
UPSTREAM_TIMEOUT = 3.0
#: Called with (sandbox id, {address: seconds}) before an answer is returned.
Admit = Callable[[str, dict[str, int]], Awaitable[None]]


@dataclass
class Client:
    """One sandbox as the resolver sees it."""

    sandbox_id: str
    policy: NetworkPolicy


class Resolver:
    """UDP and TCP DNS on ``address``:53 for the sandboxes registered in :attr:`clients`."""

    def __init__(self, address: str, upstream: tuple[str, ...], admit: Admit,
                 admissible: Callable[[str], bool], ttl_range: tuple[int, int]) -> None:
        self.address = address
        self.upstream = upstream
        self.admit = admit
        self.admissible = admissible
        self.ttl_range = ttl_range
        self.clients: dict[str, Client] = {}
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
            writer.close()

    async def answer(self, data: bytes, peer: str, tcp: bool) -> bytes | None:
        """The reply to one query from ``peer`` (None: drop it)."""
        client = self.clients.get(peer)
        try:
            query = dns.message.from_wire(data)
        except Exception:  # noqa: BLE001 - anything malformed from a sandbox is dropped
            return None
        if client is None or len(query.question) != 1:
            return _reply(query, dns.rcode.REFUSED)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True)
        named = client.policy.allows_name(name)
        if not (named or client.policy.resolves_any()):
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
        return _encode(query, response, tcp)

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
