"""The host actor: one per machine, owning that machine's engine, serving its typed interface.

Ray runs it in a worker process of the host's own Ray node (pinned there by node affinity), as
an async actor: every method runs on one event loop, the engine's. Arguments and results are
``stockade.models`` values. An engine error crosses Ray as a :class:`Failure` (its code and
message) instead of an exception, so the caller re-raises the same error class without
depending on how Ray wraps exceptions.

With a shared directory (``stockade host --shared-dir``), every stopped or archived workspace
is exported to ``<shared>/workspaces/<id>`` as it stops or archives (asked through a replica or
by its own timeout), so that another host can start it if this one dies (engine/moves.py),
and every template it builds, imports or snapshots is published to ``<shared>/templates``; a
template it is asked to run and lacks is adopted from there first (:mod:`.shared_templates`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, TypeVar

from ..engine import Engine, EngineConfig, EngineError, InvalidRequest, SandboxNotFound
from ..engine import moves
from ..models import SandboxInfo, SandboxSpec, TemplateInfo
from .shared_templates import HostTemplates, Visible
from .streams import StreamServer

log = logging.getLogger("stockade.cluster")
T = TypeVar("T")
SANDBOX_ID = re.compile(r"sb[0-9a-f]{18}")
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
    #: Whether stopped workspaces are exported to shared storage (movable to other hosts).
    shared: bool = False


async def _guard(call: Awaitable[T]) -> T | Failure:
    try:
        return await call
    except EngineError as exc:
        return Failure(exc.code, exc.message)


class HostActor:
    """One machine's engine behind Ray. :meth:`open` is called once, by ``stockade host``;
    the actor's name is visible before that, so every engine call waits for it."""

    def __init__(
        self, name: str, data_dir: str, node_id: str, secret: str, address: str, shared_dir: str = ""
    ) -> None:
        self.engine = Engine(EngineConfig(data_dir=Path(data_dir)))
        self.templates = HostTemplates(self.engine, Path(shared_dir) if shared_dir else None)
        self.streams = StreamServer(self.engine, secret, address, self.templates)
        self.info = HostInfo(
            name=name,
            node_id=node_id,
            pid=os.getpid(),
            data_dir=data_dir,
            stream_url=self.streams.url,
            shared=bool(shared_dir),
        )
        self.shared = Path(shared_dir) / "workspaces" if shared_dir else None
        self._opened = asyncio.Event()
        self._exports: dict[str, tuple[str, float]] = {}  # id -> (state, expiry) exported
        self._export_locks: dict[str, asyncio.Lock] = {}
        self._follower: asyncio.Task[None] | None = None

    async def open(self) -> HostInfo:
        """Open the engine (re-attaching what still runs from a previous life of this host),
        then its stream endpoint."""
        await self.engine.open()
        await self.templates.sweep()
        self.streams.start()
        if self.shared is not None:
            self._follower = asyncio.get_running_loop().create_task(self._follow())
        self._opened.set()
        return await self.describe()

    async def close(self) -> None:
        """Close the engine; running sandboxes keep running and are re-attached next time."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await self.streams.close()
        await self.engine.close()

    # -- workspaces on shared storage ----------------------------------------------------------
    def _shared_copy(self, sandbox_id: str) -> Path:
        if self.shared is None:
            raise InvalidRequest(
                f"host {self.info.name} has no shared directory (start it "
                f"with --shared-dir) to move workspaces through"
            )
        if not SANDBOX_ID.fullmatch(sandbox_id):
            raise InvalidRequest(f"{sandbox_id!r} is not a sandbox id")
        return self.shared / sandbox_id

    async def _follow(self) -> None:
        """Export each workspace that stops or archives by itself (its timeout, auto-archive)."""
        async for event in self.engine.events.follow(lambda _owner: True):
            if event.kind == "state" and event.state in moves.MOVABLE:
                with contextlib.suppress(SandboxNotFound):
                    await self._export(await self.engine.sandboxes.get(event.sandbox_id))

    async def _export(self, info: SandboxInfo) -> None:
        """Export a stopped or archived workspace unless this very state is exported already
        (a failure is logged: the workspace itself is fine, it just cannot move)."""
        if self.shared is None or info.persistence != "workspace" or info.state not in moves.MOVABLE:
            return
        async with self._export_locks.setdefault(info.id, asyncio.Lock()):
            mark = (info.state, info.expires_at)
            if self._exports.get(info.id) == mark:
                return
            try:
                await moves.export(self.engine, info.id, self._shared_copy(info.id))
                self._exports[info.id] = mark
            except (EngineError, OSError) as exc:
                log.warning("sandbox %s: could not export it to shared storage: %s", info.id, exc)

    async def adopt(self, sandbox_id: str) -> SandboxInfo | Failure:
        """Take the workspace ``sandbox_id`` from shared storage (its host died): it is then
        archived here, and a start restores and boots it."""
        await self._opened.wait()
        try:
            source = self._shared_copy(sandbox_id)
            with contextlib.suppress(OSError, ValueError, AttributeError):  # adopt says what is wrong
                await self.templates.ensure(json.loads((source / moves.RECORD).read_text()).get("image"))
            info = await moves.adopt(self.engine, source)
        except EngineError as exc:
            return Failure(exc.code, exc.message)
        self._exports[sandbox_id] = (info.state, info.expires_at)  # that copy is this state
        return info

    async def unpublish(self, sandbox_id: str) -> None | Failure:
        """Remove the shared copy of a workspace that was killed."""
        try:
            path = self._shared_copy(sandbox_id)
        except EngineError as exc:
            return Failure(exc.code, exc.message)
        await asyncio.to_thread(shutil.rmtree, path, True)
        self._exports.pop(sandbox_id, None)
        return None

    async def describe(self) -> HostInfo:
        """Who this host is, and whether it is ready (answers at once, for liveness pings)."""
        return dataclasses.replace(self.info, ready=self._opened.is_set())

    async def create(self, spec: SandboxSpec, owner: str = "") -> SandboxInfo | Failure:
        """Create the sandbox, its template first taken from shared storage if need be."""
        await self._opened.wait()
        try:
            if spec.template:
                await self.templates.ensure(spec.template)
        except EngineError as exc:
            return Failure(exc.code, exc.message)
        return await _guard(self.engine.sandboxes.create(spec, owner))

    # -- templates (this host's and shared storage's) ------------------------------------------
    async def templates_list(self, visible: Visible) -> list[TemplateInfo]:
        await self._opened.wait()
        return await self.templates.list(visible)

    async def template_get(self, name: str, visible: Visible) -> TemplateInfo | Failure:
        await self._opened.wait()
        return await _guard(self.templates.get(name, visible))

    async def template_drop(self, name: str) -> None | Failure:
        """Delete this host's copy of template ``name`` (a replica deletes it everywhere)."""
        await self._opened.wait()
        return await _guard(self.templates.drop(name))

    async def template_unpublish(self, name: str) -> None | Failure:
        """Remove template ``name`` from shared storage (after every host dropped its copy)."""
        return await _guard(self.templates.unpublish(name))

    async def get(self, sandbox_id: str) -> SandboxInfo | Failure:
        await self._opened.wait()
        return await _guard(self.engine.sandboxes.get(sandbox_id))

    async def list(self) -> list[SandboxInfo]:
        await self._opened.wait()
        return await self.engine.sandboxes.list()

    async def kill(self, sandbox_id: str, shared_too: bool = True) -> None | Failure:
        """Kill the sandbox; its shared copy goes too unless ``shared_too`` is False (an
        orphan whose workspace moved on to another host from that copy)."""
        await self._opened.wait()
        out = await _guard(self.engine.sandboxes.kill(sandbox_id))
        if out is None and shared_too and self.shared is not None:
            await self.unpublish(sandbox_id)
        return out

    async def call(self, service: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``engine.<service>.<method>(*args, **kwargs)``: the typed engine interface, called
        by a replica's :class:`~stockade.cluster.engine.ClusterEngine` (streams excepted)."""
        if service not in SERVICES or method.startswith("_"):
            return Failure("invalid_request", f"no engine call {service}.{method}")
        await self._opened.wait()
        function = getattr(getattr(self.engine, service), method, None)
        if not callable(function):
            return Failure("invalid_request", f"no engine call {service}.{method}")
        snapshot = (service, method) == ("sandboxes", "snapshot")
        try:
            if snapshot:
                self.templates.check_free(str(kwargs.get("name", args[1] if len(args) > 1 else "")))
            out = function(*args, **kwargs)
            out = await out if inspect.isawaitable(out) else out
            if snapshot:  # for every host, before the answer
                await self.templates.publish(out.name)
        except EngineError as exc:
            return Failure(exc.code, exc.message)
        if isinstance(out, SandboxInfo):  # stopped or archived: on shared storage before the answer
            await self._export(out)
        return out
