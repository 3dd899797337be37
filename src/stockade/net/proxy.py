"""The egress proxy: every TCP connection a sandbox opens to port 80 or 443 comes here.

nftables redirects them (``rules.py``, chain ``to_proxy``) to one listener per engine on the
gateway address; the original destination comes from conntrack (``SO_ORIGINAL_DST``) and the
sandbox from the source address (tied to its veth by the firewall). The proxy reads the first
bytes without terminating anything: a TLS ClientHello's SNI or an HTTP request's ``Host``
(:mod:`.sniff`). It then dials the original destination itself only if

* the destination lies in the policy's allowed CIDRs (the name, if any, is only logged), or
* the name is allowed by the policy **and** Stockade's resolver answered that name with that
  very address for this sandbox (:mod:`.pins`): a forged ``Host``, a different SNI, an IP
  literal or a name pointed at another allowed address are refused.

On plain HTTP every request of a kept-alive connection is checked (its ``Host`` must stay the
same); after ``Upgrade`` the bytes flow unread. Each connection ends as one entry of the
sandbox's egress log (:mod:`.egresslog`), with the bytes carried each way.

A TLS connection to a host one of the sandbox's secrets is bound to is the one exception: it is
terminated and relayed by :mod:`.intercept`, which puts the secrets' values in place of their
placeholders. Every other connection passes through unread, as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import resource
import socket
import ssl
import struct
from dataclasses import dataclass, field
from typing import Callable

from . import sniff
from .authority import Authority
from .body import forward_body
from .intercept import Injection, TlsStream, relay
from .pins import Pins
from .policy import Net, NetworkPolicy

log = logging.getLogger("stockade.net.proxy")
PORT = 15001
SO_ORIGINAL_DST = 80
READ_TIMEOUT = 15.0  # to send the hello or request head
CONNECT_TIMEOUT = 10.0
CHUNK = 1 << 16


@dataclass
class Sandbox:
    """One sandbox as the proxy sees it."""

    sandbox_id: str
    policy: NetworkPolicy
    allowed: list[Net]
    max_connections: int
    tasks: set["asyncio.Task[None]"] = field(default_factory=set)
    #: The secrets bound to a host name (empty: pass the connection through unread).
    secrets: Callable[[str], list[Injection]] | None = None


def descriptor_budget() -> int:
    """Connections the proxy may carry at once, engine-wide: a quarter of the file descriptors
    the process may open (each connection takes two), after raising the soft limit to the hard
    one (up to 65536). The rest stay for the API, the sandboxes' channels and the disks."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return max(16, min(soft, 65536) // 8)


class Denied(Exception):
    """The connection is refused; the message is the log's reason."""


class EgressProxy:
    """Listens on ``address``:``port``; :attr:`clients` maps sandbox addresses to sandboxes."""

    def __init__(
        self,
        address: str,
        pins: Pins,
        report: Callable[..., None],
        mark: int | None = None,
        port: int = PORT,
        max_total: int = 0,
        authority: Authority | None = None,
        upstream_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.address, self.port = address, port
        self.max_total = max_total or descriptor_budget()
        self.pins = pins
        self.report = report
        self.mark = mark
        self.authority, self.upstream_tls = authority, upstream_tls
        self.clients: dict[str, Sandbox] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.address, self.port, reuse_address=True)

    def drop(self, address: str) -> None:
        """Forget the sandbox at ``address`` and cut its open connections."""
        client = self.clients.pop(address, None)
        for task in client.tasks if client else ():
            task.cancel()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- one connection ------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except Exception:  # noqa: BLE001 - one connection never takes the proxy down
            log.exception("egress proxy connection failed")
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        peer = writer.get_extra_info("peername")[0]
        client = self.clients.get(peer)
        if client is None:
            return
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        port, packed = struct.unpack("!2xH4s8x", raw)
        address = str(ipaddress.IPv4Address(packed))
        entry: dict[str, object] = {"kind": "tcp", "destination": f"{address}:{port}", "name": None}
        if len(client.tasks) >= client.max_connections:
            self._log(client, entry, "denied", f"over {client.max_connections} connections")
            return
        if len(self._tasks) > self.max_total:  # this connection is counted already
            self._log(
                client,
                entry,
                "denied",
                f"the engine's egress proxy carries its maximum of {self.max_total} connections",
            )
            return
        task = asyncio.current_task()
        assert task is not None
        client.tasks.add(task)
        try:
            await self._handle_named(client, reader, writer, address, port, entry)
        finally:
            client.tasks.discard(task)

    async def _handle_named(
        self,
        client: Sandbox,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        address: str,
        port: int,
        entry: dict[str, object],
    ) -> None:
        buffer = bytearray()
        try:
            if address == self.address:
                raise Denied("connection to the gateway itself")
            try:
                name, http = await asyncio.wait_for(_prefix(reader, buffer), READ_TIMEOUT)
            except asyncio.TimeoutError:
                raise Denied("sent no TLS ClientHello or HTTP request head in time") from None
            entry["kind"] = "http" if http is not None else "tls"
            entry["name"] = name
            allowed_by = self._decide(client, address, name)
        except (Denied, sniff.Refused, OSError, EOFError) as exc:
            reason = str(exc) or type(exc).__name__
            if buffer and entry["kind"] == "tcp":  # refused while being read
                if buffer[0] == sniff.TLS_HANDSHAKE:
                    entry["kind"] = "tls"
                elif buffer[:1].isalpha():
                    entry["kind"] = "http"
            self._log(client, entry, "denied", reason)
            if buffer[:1].isalpha():  # it speaks HTTP: say why, in HTTP
                await _refuse(writer, b"403 Forbidden", f"stockade egress: {reason}")
            return
        head = bytes(buffer)
        if http is None and name is not None and client.secrets is not None:
            if injections := client.secrets(name):
                await self._intercept(
                    client, reader, writer, address, port, name, head, injections, entry, allowed_by
                )
                return
        try:
            up_reader, up_writer = await self._dial(address, port)
        except OSError as exc:
            reason = f"allowed ({allowed_by}), but the destination did not answer: {exc}"
            self._log(client, entry, "allowed", reason)
            if http is not None:
                await _refuse(writer, b"502 Bad Gateway", f"stockade egress: {reason}")
            return
        counts = [0, 0]
        cut: str | None = None
        try:
            down = asyncio.ensure_future(_copy(up_reader, writer, counts, 1))
            try:
                if http is not None:
                    cut = await _http_requests(reader, up_writer, head, http, counts)
                else:
                    up_writer.write(head)
                    counts[0] += len(head)
                    await _copy(reader, up_writer, counts, 0)
                with contextlib.suppress(OSError):
                    if up_writer.can_write_eof():
                        up_writer.write_eof()
                if cut is None:
                    await down
            finally:
                down.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await down
        finally:
            up_writer.close()
            entry.update(bytes_out=counts[0], bytes_in=counts[1])
            self._log(client, entry, "denied" if cut else "allowed", cut or allowed_by)

    async def _intercept(
        self,
        client: Sandbox,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        address: str,
        port: int,
        name: str,
        hello: bytes,
        injections: list[Injection],
        entry: dict[str, object],
        allowed_by: str,
    ) -> None:
        """Terminate the sandbox's TLS, verify the real host's, inject (:mod:`.intercept`)."""
        assert self.authority is not None and self.upstream_tls is not None
        entry["intercepted"] = True
        try:
            up_reader, up_writer = await self._dial(address, port, name)
        except (OSError, asyncio.TimeoutError) as exc:
            self._log(
                client,
                entry,
                "denied",
                f"{name} at {address} did not answer, or did not prove it is {name} over TLS: {exc}",
            )
            return
        counts, used = [0, 0], dict[str, int]()
        cut: str | None = None
        try:
            down = TlsStream(reader, writer, self.authority.context(name))
            try:
                await asyncio.wait_for(down.accept(hello), READ_TIMEOUT)
            except (ssl.SSLError, OSError, EOFError, asyncio.TimeoutError) as exc:
                cut = f"the sandbox did not accept the interception certificate: {exc}"
                return
            cut = await relay(down, up_reader, up_writer, name, injections, counts, used)
        finally:
            up_writer.close()
            entry.update(bytes_out=counts[0], bytes_in=counts[1], secrets=sorted(used))
            reason = cut or (
                f"{allowed_by}; intercepted, injected {', '.join(sorted(used)) if used else 'nothing'}"
            )
            self._log(client, entry, "denied" if cut else "allowed", reason)

    def _decide(self, client: Sandbox, address: str, name: str | None) -> str:
        """Why ``name`` may reach ``address``; :class:`Denied` if it may not (see the module doc)."""
        ip = ipaddress.IPv4Address(address)
        if any(ip in net for net in client.allowed):
            return "inside an allowed CIDR"
        if name is None:
            raise Denied("no server name given, and the address is not in an allowed CIDR")
        if sniff.is_address(name):
            raise Denied(f"IP literal {name}: only names are allowed here")
        if not client.policy.allows_name(name):
            raise Denied(f"{name} is not allowed by the policy")
        if not self.pins.holds(client.sandbox_id, name, address):
            raise Denied(f"{name} was not resolved to {address} by the sandbox's resolver")
        return f"{name} is allowed and resolved to {address}"

    async def _dial(
        self, address: str, port: int, tls_name: str | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the destination (verified TLS to ``tls_name`` when given)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if self.mark is not None:  # the sandboxes' uplink, not the host's routes
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.mark)
            sock.setblocking(False)
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, (address, port)), CONNECT_TIMEOUT
            )
        except BaseException:
            sock.close()
            raise
        if tls_name is None:
            return await asyncio.open_connection(sock=sock, limit=CHUNK)
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(
                    sock=sock,
                    limit=CHUNK,
                    ssl=self.upstream_tls,
                    server_hostname=tls_name,
                    ssl_handshake_timeout=CONNECT_TIMEOUT,
                ),
                CONNECT_TIMEOUT,
            )
        except BaseException:
            sock.close()
            raise

    def _log(self, client: Sandbox, entry: dict[str, object], verdict: str, reason: str) -> None:
        self.report(client.sandbox_id, **entry, verdict=verdict, reason=reason)


async def _refuse(writer: asyncio.StreamWriter, status: bytes, message: str) -> None:
    with contextlib.suppress(OSError):
        writer.write(
            b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\n"
            b"Connection: close\r\n\r\n" + message.encode() + b"\n"
        )
        await writer.drain()


async def _prefix(reader: asyncio.StreamReader, data: bytearray) -> tuple[str | None, sniff.HttpHead | None]:
    """Read into ``data`` until the name is known: (name, the HTTP head if it is HTTP)."""
    while True:
        chunk = await reader.read(CHUNK)
        if not chunk:
            raise EOFError("the connection closed before naming a server")
        data += chunk
        try:
            if data[0] == sniff.TLS_HANDSHAKE:
                return sniff.client_hello_name(bytes(data)), None
            head = sniff.http_head(bytes(data))
            return head.host, head
        except EOFError:
            if len(data) > sniff.MAX_PREFIX:
                raise sniff.Refused("no complete hello or request head in the first 32 kB") from None


async def _copy(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: list[int], index: int
) -> None:
    """Copy until end of file, then pass the end of file on (a half-close, not a close)."""
    with contextlib.suppress(OSError):
        while chunk := await reader.read(CHUNK):
            counts[index] += len(chunk)
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def _http_requests(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    data: bytes,
    head: sniff.HttpHead,
    counts: list[int],
) -> str | None:
    """Forward request after request, each head checked for the first one's ``Host``.

    Returns why the connection was cut, or ``None`` when the sandbox ended it."""
    try:
        return await _http_loop(reader, writer, data, head, counts)
    except sniff.Refused as exc:
        return f"request refused: {exc}"
    except EOFError:
        return None  # the sandbox closed inside a body: its choice


async def _http_loop(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    data: bytes,
    head: sniff.HttpHead,
    counts: list[int],
) -> str | None:
    host = head.host
    while True:
        writer.write(data[: head.size])
        counts[0] += head.size
        data = data[head.size :]
        if head.upgrade:
            writer.write(data)
            counts[0] += len(data)
            await _copy(reader, writer, counts, 0)
            return None
        data = await forward_body(reader, writer, data, head, counts)
        await writer.drain()
        while True:  # the next request head
            try:
                head = sniff.http_head(data)
                break
            except EOFError:
                chunk = await reader.read(CHUNK)
                if not chunk:
                    return None
                data += chunk
        if head.host != host:
            return f"later request on the connection names {head.host}, not {host}"
