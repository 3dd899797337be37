"""A running process as the engine hands it to callers: typed events, translated errors."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable

from ..agent import protocol as p
from ..runtimes.channel import AgentCallError, ChannelClosed, Data, End, Event, HostStream
from .errors import (
    Conflict,
    EngineError,
    Forbidden,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
    SandboxUnavailable,
)

#: Seconds between keepalive events the engine asks of the agent on a silent process stream,
#: and the silence after which it gives the stream up: the agent, or the sandbox's kernel, is
#: frozen or hung (a guest's root can stop its own agent; see SECURITY.md).
KEEPALIVE = 5.0
SILENCE_LIMIT = 20.0
_CHANNEL_NAMES = {p.Channel.STDOUT: "stdout", p.Channel.STDERR: "stderr", p.Channel.PTY: "pty"}


def translate_agent_error(exc: AgentCallError) -> EngineError:
    """Map an agent error code to the engine's error classes."""
    table: dict[str, type[EngineError]] = {
        p.ErrorCode.NOT_FOUND.value: NotFound,
        p.ErrorCode.ALREADY_EXISTS.value: Conflict,
        p.ErrorCode.BAD_REQUEST.value: InvalidRequest,
        p.ErrorCode.UNKNOWN_METHOD.value: InvalidRequest,
        p.ErrorCode.NOT_A_DIRECTORY.value: InvalidRequest,
        p.ErrorCode.IS_A_DIRECTORY.value: InvalidRequest,
        p.ErrorCode.NOT_EMPTY.value: Conflict,
        p.ErrorCode.PERMISSION_DENIED.value: Forbidden,
        p.ErrorCode.NO_SPACE.value: InsufficientStorage,
        p.ErrorCode.TOO_LARGE.value: InsufficientStorage,
        p.ErrorCode.CANCELLED.value: InvalidRequest,
    }
    return table.get(exc.code, EngineError)(exc.message)


class ProcessRun:
    """Events of one process: ``start``, ``stdout``/``stderr``/``pty`` (bytes), ``keepalive``,
    then exactly one ``end`` with ``exit_code``, ``status`` and ``oom_killed``."""

    def __init__(
        self,
        stream: HostStream,
        oom_check: Callable[[bool], Awaitable[bool]] | None = None,
        diagnose: Callable[[], Awaitable[str]] | None = None,
        running: Callable[[], bool] = lambda: True,
    ) -> None:
        self._stream = stream
        self._oom_check = oom_check
        self._diagnose = diagnose
        self._running = running  # False while the sandbox is paused: silence is expected then
        self.pid: int | None = None

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        try:
            while True:
                try:
                    item = await self._next()
                except ChannelClosed as exc:
                    why = await self._diagnose() if self._diagnose else ""
                    raise SandboxUnavailable(f"{exc}{why}") from None
                if isinstance(item, Data):
                    yield {"type": _CHANNEL_NAMES.get(item.channel, "stdout"), "data": item.data}
                elif isinstance(item, Event):
                    if item.body.get("type") == "start":
                        self.pid = item.body.get("pid")
                    yield item.body
                elif isinstance(item, End):
                    if not item.ok:
                        raise translate_agent_error(AgentCallError(item.code, item.message))
                    yield await self._end(item.result)
                    return
        finally:
            await self._stream.cancel()

    async def _next(self) -> Data | Event | End:
        """The stream's next item, or SandboxUnavailable after :data:`SILENCE_LIMIT` seconds
        without even a keepalive from a running sandbox."""
        while True:
            try:
                return await asyncio.wait_for(self._stream.next(), SILENCE_LIMIT)
            except asyncio.TimeoutError:
                if not self._running():
                    continue
                why = await self._diagnose() if self._diagnose else ""
                raise SandboxUnavailable(
                    f"the sandbox's agent sent nothing for {SILENCE_LIMIT:.0f} s, not even a "
                    f"keepalive: the sandbox is frozen or hung (its process may still be "
                    f"running; kill the sandbox if it does not recover){why}"
                ) from None

    async def _end(self, result: dict[str, Any]) -> dict[str, Any]:
        # ``oom_check`` is told whether the agent said so itself (a microVM guest's agent can).
        said = result.get("oom_killed") is True
        end = {"type": "end", **result, "oom_killed": False}
        if result.get("signal") == 9 and self._oom_check and await self._oom_check(said):
            end["oom_killed"] = True
            end["status"] = "oom_killed"
        return end

    async def send_stdin(self, data: bytes) -> None:
        await self._stream.send(data)

    async def close_stdin(self) -> None:
        await self._stream.close_send()
