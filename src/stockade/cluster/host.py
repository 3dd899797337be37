"""The host actor: one per machine, owning that machine's engine, serving its typed interface.

Ray runs it in a worker process of the host's own Ray node (pinned there by node affinity), as
an async actor: every method runs on one event loop, the engine's. Arguments and results are
``stockade.models`` values. An engine error crosses Ray as a :class:`Failure` (its code and
message) instead of an exception, so the caller re-raises the same error class without
depending on how Ray wraps exceptions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, TypeVar

from ..engine import Engine, EngineConfig, EngineError
from ..models import SandboxInfo, SandboxSpec
from .streams import StreamServer

T = TypeVar("T")
#: The engine services a replica may call through :meth:`HostActor.call`.
SERVICES = frozenset({"sandboxes", "processes", "files", "volumes", "templates", "code"})


@dataclass(frozen=True)
class Failure:
    """An engine error, by its code (``sandbox_not_found``, ``invalid_request``...)."""

    code: str
    message: str


@dataclass(frozen=True)
class HostInfo:
    """Who a host is: its name, its Ray node, its process and data directory."""

    name: str
    node_id: str
    pid: int
    data_dir: str
    #: False until the engine is open (its recovery done): a host is used only once ready.
    ready: bool = False
    #: Where replicas open streams to this host's sandboxes (:mod:`.streams`).
    stream_url: str = ""


async def _guard(call: Awaitable[T]) -> T | Failure:
    try:
        return await call
    except EngineError as exc:
        return Failure(exc.code, exc.message)


class HostActor:
    """One machine's engine behind Ray. :meth:`open` is called once, by ``stockade host``;
    the actor's name is visible before that, so every engine call waits for it."""

    def __init__(self, name: str, data_dir: str, node_id: str, secret: str,
                 address: str) -> None:
        self.engine = Engine(EngineConfig(data_dir=Path(data_dir)))
        self.streams = StreamServer(self.engine, secret, address)
        self.info = HostInfo(name=name, node_id=node_id, pid=os.getpid(), data_dir=data_dir,
                             stream_url=self.streams.url)
        self._opened = asyncio.Event()

    async def open(self) -> HostInfo:
        """Open the engine (re-attaching what still runs from a previous life of this host),
        then its stream endpoint."""
        await self.engine.open()
        self.streams.start()
        self._opened.set()
        return await self.describe()

    async def close(self) -> None:
        """Close the engine; running sandboxes keep running and are re-attached next time."""
        await self.streams.close()
        await self.engine.close()

    async def describe(self) -> HostInfo:
        """Who this host is, and whether it is ready (answers at once, for liveness pings)."""
        return dataclasses.replace(self.info, ready=self._opened.is_set())

    async def create(self, spec: SandboxSpec) -> SandboxInfo | Failure:
        await self._opened.wait()
        return await _guard(self.engine.sandboxes.create(spec))

    async def get(self, sandbox_id: str) -> SandboxInfo | Failure:
        await self._opened.wait()
        return await _guard(self.engine.sandboxes.get(sandbox_id))

    async def list(self) -> list[SandboxInfo]:
        await self._opened.wait()
        return await self.engine.sandboxes.list()

    async def kill(self, sandbox_id: str) -> None | Failure:
        await self._opened.wait()
        return await _guard(self.engine.sandboxes.kill(sandbox_id))

    async def call(self, service: str, method: str, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
        """``engine.<service>.<method>(*args, **kwargs)``: the typed engine interface, called
        by a replica's :class:`~stockade.cluster.engine.ClusterEngine` (streams excepted)."""
        if service not in SERVICES or method.startswith("_"):
            return Failure("invalid_request", f"no engine call {service}.{method}")
        await self._opened.wait()
        function = getattr(getattr(self.engine, service), method, None)
        if not callable(function):
            return Failure("invalid_request", f"no engine call {service}.{method}")
        try:
            out = function(*args, **kwargs)
            return await out if inspect.isawaitable(out) else out
        except EngineError as exc:
            return Failure(exc.code, exc.message)
