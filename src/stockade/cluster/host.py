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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, TypeVar

from ..engine import Engine, EngineConfig, EngineError
from ..models import ProcessSpec, SandboxInfo, SandboxSpec

T = TypeVar("T")
#: Bytes of stdout (and of stderr) a collected command returns at most.
RUN_OUTPUT_LIMIT = 1 << 20


@dataclass(frozen=True)
class Failure:
    """An engine error, by its code (``sandbox_not_found``, ``invalid_request``...)."""

    code: str
    message: str


@dataclass(frozen=True)
class CommandResult:
    """A command run to its end, output collected (bounded by :data:`RUN_OUTPUT_LIMIT`)."""

    stdout: str
    stderr: str
    exit_code: int | None
    status: str | None


@dataclass(frozen=True)
class HostInfo:
    """Who a host is: its name, its Ray node, its process and data directory."""

    name: str
    node_id: str
    pid: int
    data_dir: str
    #: False until the engine is open (its recovery done): a host is used only once ready.
    ready: bool = False


async def _guard(call: Awaitable[T]) -> T | Failure:
    try:
        return await call
    except EngineError as exc:
        return Failure(exc.code, exc.message)


class HostActor:
    """One machine's engine behind Ray. :meth:`open` is called once, by ``stockade host``;
    the actor's name is visible before that, so every engine call waits for it."""

    def __init__(self, name: str, data_dir: str, node_id: str) -> None:
        self.info = HostInfo(name=name, node_id=node_id, pid=os.getpid(), data_dir=data_dir)
        self.engine = Engine(EngineConfig(data_dir=Path(data_dir)))
        self._opened = asyncio.Event()

    async def open(self) -> HostInfo:
        """Open the engine: re-attach what still runs from a previous life of this host."""
        await self.engine.open()
        self._opened.set()
        return await self.describe()

    async def close(self) -> None:
        """Close the engine; running sandboxes keep running and are re-attached next time."""
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

    async def run(self, sandbox_id: str, spec: ProcessSpec) -> CommandResult | Failure:
        """Run a command to its end and return its output (streams go direct: docs/cluster.md)."""
        await self._opened.wait()
        return await _guard(self._run(sandbox_id, spec))

    async def _run(self, sandbox_id: str, spec: ProcessSpec) -> CommandResult:
        run = await self.engine.processes.start(sandbox_id, spec)
        out: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        end: dict[str, Any] = {}
        async for event in run.events():
            kind = event.get("type")
            if kind in out:
                buf = out[kind]
                buf += event["data"][:max(0, RUN_OUTPUT_LIMIT - len(buf))]
            elif kind == "end":
                end = event
        return CommandResult(stdout=out["stdout"].decode(errors="replace"),
                             stderr=out["stderr"].decode(errors="replace"),
                             exit_code=end.get("exit_code"), status=end.get("status"))
