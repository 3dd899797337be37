"""A running process as the engine hands it to callers: typed events, translated errors."""

from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable

from ..agent import protocol as p
from ..runtimes.channel import AgentCallError, ChannelClosed, Data, End, Event, HostStream
from .errors import (Conflict, EngineError, Forbidden, InsufficientStorage, InvalidRequest,
                     NotFound, SandboxUnavailable)

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

    def __init__(self, stream: HostStream,
                 oom_check: Callable[[], Awaitable[bool]] | None = None,
                 diagnose: Callable[[], Awaitable[str]] | None = None) -> None:
        self._stream = stream
        self._oom_check = oom_check
        self._diagnose = diagnose
        self.pid: int | None = None

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        try:
            while True:
                try:
                    item = await self._stream.next()
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

    async def _end(self, result: dict[str, Any]) -> dict[str, Any]:
        end = {"type": "end", **result, "oom_killed": False}
        if result.get("signal") == 9 and self._oom_check and await self._oom_check():
            end["oom_killed"] = True
            end["status"] = "oom_killed"
        return end

    async def send_stdin(self, data: bytes) -> None:
        await self._stream.send(data)

    async def close_stdin(self) -> None:
        await self._stream.close_send()
