"""envd's directory watches onto ``engine.files.watch``: the ``WatchDir`` stream (the async
SDK) and the polling watcher (``CreateWatcher`` / ``GetWatcherEvents`` / ``RemoveWatcher``,
the sync SDK), whose events are buffered here per watcher."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field

from ...engine import EngineError
from ...models import FileEvent
from . import gate
from .connect import ConnectError, Message, stream_request, stream_response, unary_request

router = APIRouter(prefix="/e2b/filesystem.Filesystem")
EVENT_TYPES = {
    "create": "EVENT_TYPE_CREATE",
    "write": "EVENT_TYPE_WRITE",
    "remove": "EVENT_TYPE_REMOVE",
    "rename": "EVENT_TYPE_RENAME",
    "chmod": "EVENT_TYPE_CHMOD",
}
#: Polling watchers one sandbox may hold, and events one watcher keeps between two polls.
MAX_WATCHERS = 64
MAX_BUFFERED = 10000


class WatchRequest(Message):
    path: str = Field(min_length=1, max_length=4096)
    recursive: bool = False


class WatcherRequest(Message):
    watcher_id: str = Field(min_length=1, max_length=64)


def _filesystem(event: FileEvent) -> dict[str, Any] | None:
    kind = EVENT_TYPES.get(event.type)
    return {"name": event.name, "type": kind} if kind else None


async def _open(request: Request, where: gate.Target, body: WatchRequest) -> AsyncIterator[FileEvent]:
    return await where.engine.files.watch(
        where.sandbox_id, body.path, recursive=body.recursive, user=gate.rpc_user(request)
    )


@router.post("/WatchDir")
async def watch_dir(request: Request) -> StreamingResponse:
    """Stream ``start``, then each change as a ``filesystem`` event, with keepalives."""
    where = await gate.target(request)
    events = await _open(request, where, await stream_request(request, WatchRequest))

    async def messages() -> AsyncIterator[dict[str, Any]]:
        try:
            async for event in events:
                if event.type == "start":
                    yield {"start": {}}
                elif event.type == "keepalive":
                    yield {"keepalive": {}}
                elif (change := _filesystem(event)) is not None:
                    yield {"filesystem": change}
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    return stream_response(messages())


@dataclass
class Watcher:
    sandbox_id: str
    task: asyncio.Task[None] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    error: ConnectError | None = None


class Watchers:
    """The polling watchers of the server, by id."""

    def __init__(self) -> None:
        self._by_id: dict[str, Watcher] = {}

    def start(self, sandbox_id: str, events: AsyncIterator[FileEvent]) -> str:
        for ended in [i for i, w in self._by_id.items() if w.error and not w.events]:
            del self._by_id[ended]  # failed (say, its sandbox ended) and nobody polled it
        if sum(w.sandbox_id == sandbox_id for w in self._by_id.values()) >= MAX_WATCHERS:
            raise ConnectError(
                "resource_exhausted", f"a sandbox may hold {MAX_WATCHERS} watchers; remove some first"
            )
        watcher_id = secrets.token_hex(8)
        watcher = self._by_id[watcher_id] = Watcher(sandbox_id)
        watcher.task = asyncio.get_running_loop().create_task(self._collect(watcher, events))
        return watcher_id

    @staticmethod
    async def _collect(watcher: Watcher, events: AsyncIterator[FileEvent]) -> None:
        try:
            async for event in events:
                if (change := _filesystem(event)) is not None:
                    if len(watcher.events) >= MAX_BUFFERED:
                        watcher.error = ConnectError(
                            "resource_exhausted", f"more than {MAX_BUFFERED} events between two polls"
                        )
                        return
                    watcher.events.append(change)
        except EngineError as exc:
            watcher.error = ConnectError.of(exc)
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    def _find(self, watcher_id: str, sandbox_id: str) -> Watcher:
        watcher = self._by_id.get(watcher_id)
        if watcher is None or watcher.sandbox_id != sandbox_id:
            raise ConnectError("not_found", f"no watcher {watcher_id!r} in this sandbox")
        return watcher

    def take(self, watcher_id: str, sandbox_id: str) -> list[dict[str, Any]]:
        """The events since the last call (then the watcher's error, if it failed)."""
        watcher = self._find(watcher_id, sandbox_id)
        events, watcher.events = watcher.events, []
        if not events and watcher.error is not None:
            self._by_id.pop(watcher_id, None)
            raise watcher.error
        return events

    async def remove(self, watcher_id: str, sandbox_id: str) -> None:
        watcher = self._find(watcher_id, sandbox_id)
        self._by_id.pop(watcher_id, None)
        if watcher.task is not None:
            watcher.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher.task


@router.post("/CreateWatcher")
async def create_watcher(request: Request) -> JSONResponse:
    where = await gate.target(request)
    events = await _open(request, where, await unary_request(request, WatchRequest))
    watchers: Watchers = request.app.state.watchers
    return JSONResponse({"watcherId": watchers.start(where.sandbox_id, events)})


@router.post("/GetWatcherEvents")
async def get_watcher_events(request: Request) -> JSONResponse:
    where = await gate.target(request)
    body = await unary_request(request, WatcherRequest)
    watchers: Watchers = request.app.state.watchers
    return JSONResponse({"events": watchers.take(body.watcher_id, where.sandbox_id)})


@router.post("/RemoveWatcher")
async def remove_watcher(request: Request) -> JSONResponse:
    where = await gate.target(request)
    body = await unary_request(request, WatcherRequest)
    watchers: Watchers = request.app.state.watchers
    await watchers.remove(body.watcher_id, where.sandbox_id)
    return JSONResponse({})
