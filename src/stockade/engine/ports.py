"""Port tunnels as the engine hands them out: a byte pipe to a TCP port inside a sandbox.

The pipe is one ``port.connect`` stream on the sandbox's agent channel (agent/ports.py), so it
works for sandboxes without any network interface. Reads are bounded by the channel's credit
window: a caller that stops reading makes the agent stop reading the socket.
"""

from __future__ import annotations

import asyncio

from ..agent import protocol as p
from ..runtimes.channel import AgentCallError, AgentChannel, ChannelClosed, Data, End, HostStream
from .errors import SandboxUnavailable
from .process import translate_agent_error

#: Seconds ``aclose`` waits for the agent to confirm, before forgetting the stream anyway.
CLOSE_GRACE = 2.0


class PortClosed(SandboxUnavailable):
    """Nothing listens on the port inside the sandbox (or the connection failed there)."""

    code = "port_closed"
    status = 502


class Tunnel:
    """A TCP connection inside a sandbox: ``read``, ``write``, ``close_write``, ``aclose``."""

    def __init__(self, stream: HostStream, sandbox_id: str, port: int) -> None:
        self._stream = stream
        self.sandbox_id = sandbox_id
        self.port = port
        self._eof = False

    @classmethod
    async def open(
        cls, channel: AgentChannel, sandbox_id: str, port: int, host: str = "127.0.0.1"
    ) -> "Tunnel":
        """Connect to ``host:port`` from inside the sandbox; PortClosed if that fails."""
        try:
            stream = await channel.open(p.Method.PORT_CONNECT, {"port": port, "host": host})
            first = await stream.next()
        except ChannelClosed as exc:
            raise SandboxUnavailable(f"sandbox {sandbox_id}: {exc}") from None
        if isinstance(first, End):
            if first.ok:
                raise SandboxUnavailable(f"sandbox {sandbox_id}: the tunnel ended at once")
            if first.code == p.ErrorCode.NOT_FOUND.value:
                raise PortClosed(f"sandbox {sandbox_id}: {first.message}")
            raise translate_agent_error(AgentCallError(first.code, first.message))
        return cls(stream, sandbox_id, port)

    async def read(self) -> bytes:
        """The next bytes from the sandbox's side; ``b""`` once it has closed."""
        while not self._eof:
            try:
                item = await self._stream.next()
            except ChannelClosed:
                self._eof = True
                break
            if isinstance(item, Data):
                if item.data:
                    return item.data
            elif isinstance(item, End):
                self._eof = True
        return b""

    async def write(self, data: bytes) -> None:
        """Send bytes to the sandbox's side (waits for the agent's credit)."""
        if self._stream.done:
            raise SandboxUnavailable(f"sandbox {self.sandbox_id}: port {self.port} has closed")
        try:
            await self._stream.send(data)
        except ChannelClosed as exc:
            raise SandboxUnavailable(f"sandbox {self.sandbox_id}: {exc}") from None

    async def close_write(self) -> None:
        """Half-close: the sandbox's side reads EOF, and may still answer."""
        if not self._stream.done:
            try:
                await self._stream.close_send()
            except ChannelClosed:
                pass

    async def aclose(self) -> None:
        """Drop the connection (the agent closes the socket) and release what it buffered."""
        self._eof = True
        await self._stream.cancel()
        try:  # the agent answers CANCEL with END; until then its DATA keeps arriving
            await asyncio.wait_for(self._drain(), CLOSE_GRACE)
        except (asyncio.TimeoutError, ChannelClosed):
            pass
        self._stream._channel._forget(self._stream.id)

    async def _drain(self) -> None:
        while not self._stream.done:
            await self._stream.next()
