"""``ClusterEngine``: the engine interface of a whole cluster, as an API replica serves it.

It has the services of :class:`stockade.engine.Engine` (``sandboxes``, ``processes``,
``files``, ``volumes``, ``templates``, ``code``) with the same methods, arguments and typed
results, so the native routes, ``ControlPlane`` and the front ends run on a replica unchanged.
Behind each call: a create is placed by Ray (:class:`.router.ClusterSandboxes`); a call about a
sandbox goes to its owning host's actor over Ray (small typed values); process output and file
transfers go straight to the host's stream endpoint over HTTP (:mod:`.remote`).

Templates are made on a host and kept on shared storage (:mod:`.templates`). Not yet in a
cluster (docs/cluster.md): volumes, code contexts' executions, directory watches, the port
proxy and the event stream answer ``unsupported`` (409); end records of ended sandboxes stay
on their host (404 through a replica).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

from ..engine import EngineConfig, Unsupported
from ..engine.sandboxes import resolve_resources
from ..models import (
    EntryInfo,
    ProcessSelector,
    ProcessSpec,
    SandboxEvent,
    SandboxInfo,
    SandboxSpec,
    VolumeInfo,
)
from ..runtimes.base import Resources
from .node import NAMESPACE
from .placement import PLACEMENT_WAIT, Placer
from .remote import Channel, RemoteRun, body_chunks, entry
from .router import ClusterSandboxes
from .state import ClusterState
from .templates import RemoteTemplates

Forward = Callable[..., Awaitable[Any]]


class _Forwarding:
    """Any other method ``m(sandbox_id, ...)`` of the service runs on the sandbox's host."""

    service = ""

    def __init__(self, cluster: ClusterSandboxes) -> None:
        self._cluster = cluster

    def __getattr__(self, method: str) -> Forward:
        if method.startswith("_"):
            raise AttributeError(method)

        async def forward(sandbox_id: str, *args: Any, **kwargs: Any) -> Any:
            host = await self._cluster.owner_host(sandbox_id)
            return await self._cluster.call(host, self.service, method, sandbox_id, *args, **kwargs)

        return forward


class RemoteSandboxes(_Forwarding):
    service = "sandboxes"

    def __init__(self, cluster: ClusterSandboxes, defaults: Resources) -> None:
        super().__init__(cluster)
        self._defaults = defaults

    async def create(self, spec: SandboxSpec, owner: str = "") -> SandboxInfo:
        """Place the sandbox on a host with a free slot of its tier and start it there, for
        tenant ``owner`` (whose secrets it may use)."""
        info, _host = await self._cluster.create(spec, owner)
        return info

    async def get(self, sandbox_id: str) -> SandboxInfo:
        return await self._cluster.get(sandbox_id)

    async def list(self) -> builtins.list[SandboxInfo]:
        return await self._cluster.list()

    async def kill(self, sandbox_id: str) -> None:
        await self._cluster.kill(sandbox_id)

    async def start(self, sandbox_id: str) -> SandboxInfo:
        """Start a stopped or archived workspace; one lost with its host starts on another
        host from its last stopped state on shared storage."""
        await self._cluster.move_if_lost(sandbox_id)
        host = await self._cluster.owner_host(sandbox_id)
        info: SandboxInfo = await self._cluster.call(host, "sandboxes", "start", sandbox_id)
        return info

    async def connect(self, sandbox_id: str) -> SandboxInfo:
        """Resume or start the sandbox (a lost stopped workspace moves first, as for start)."""
        await self._cluster.move_if_lost(sandbox_id)
        host = await self._cluster.owner_host(sandbox_id)
        info: SandboxInfo = await self._cluster.call(host, "sandboxes", "connect", sandbox_id)
        return info

    def resources(self, spec: SandboxSpec) -> Resources:
        return resolve_resources(spec, self._defaults)

    def fork_keeps_memory(self, sandbox_id: str, memory: bool | None = None) -> bool:
        """Fork is not placed through a replica yet: its copies would be on the source's host
        behind the placer's back (docs/fork.md)."""
        raise Unsupported("fork is not available through a cluster replica yet; fork on a single-host server")

    async def fork(
        self, sandbox_id: str, count: int, memory: bool | None = None, owner: str | None = None
    ) -> builtins.list[SandboxInfo]:
        self.fork_keeps_memory(sandbox_id, memory)  # raises
        return []

    def owner(self, sandbox_id: str) -> str | None:
        """End records stay on the host the sandbox ran on: a replica does not read them yet,
        so an ended sandbox reads as unknown (404) through it."""
        return None

    def follow_events(
        self, visible: Callable[[str | None], bool], since: int | None = None
    ) -> AsyncIterator[SandboxEvent]:
        """Each host keeps its own event stream; a replica does not merge them yet."""
        raise Unsupported(
            "the event stream is not available through a cluster replica yet; poll GET /sandboxes instead"
        )

    def held_disk_mb(self, sandbox_id: str) -> int:
        """The disk the sandbox may fill, as this replica last saw it (for quotas; the host's
        finer count of an archived sandbox's smaller footprint is not asked synchronously)."""
        info = self._cluster.known.get(sandbox_id)
        return info.disk_mb if info is not None and info.disk_mb else 0


class RemoteProcesses(_Forwarding):
    service = "processes"

    def __init__(self, cluster: ClusterSandboxes, channel: Channel) -> None:
        super().__init__(cluster)
        self._channel = channel

    async def _stream(self, sandbox_id: str, path: str, body: Any) -> RemoteRun:
        host = await self._cluster.owner_host(sandbox_id)
        response = await self._channel.open(
            self._cluster.stream_url(host),
            "POST",
            f"/sandboxes/{sandbox_id}/processes{path}",
            json_body=body.model_dump(mode="json", exclude_unset=True),
        )

        async def stdin(selector: ProcessSelector, data: bytes) -> None:
            await self._cluster.call(host, "processes", "send_stdin", sandbox_id, selector, data)

        return RemoteRun(response, stdin)

    async def start(self, sandbox_id: str, spec: ProcessSpec) -> RemoteRun:
        """Start a process on the sandbox's host; its events stream straight from there."""
        return await self._stream(sandbox_id, "", spec)

    async def connect(self, sandbox_id: str, selector: ProcessSelector) -> RemoteRun:
        return await self._stream(sandbox_id, "/connect", selector)


class RemoteFiles(_Forwarding):
    service = "files"

    def __init__(self, cluster: ClusterSandboxes, channel: Channel) -> None:
        super().__init__(cluster)
        self._channel = channel

    async def _open(
        self,
        sandbox_id: str,
        method: str,
        params: dict[str, Any],
        content: AsyncIterator[bytes] | None = None,
    ) -> Any:
        host = await self._cluster.owner_host(sandbox_id)
        return await self._channel.open(
            self._cluster.stream_url(host),
            method,
            f"/sandboxes/{sandbox_id}/files",
            params=params,
            content=content,
        )

    async def read(self, sandbox_id: str, path: str, user: str | None = None) -> AsyncIterator[bytes]:
        """The file's bytes, streamed from the sandbox's host."""
        return body_chunks(await self._open(sandbox_id, "GET", {"path": path, "user": user}))

    async def write(
        self,
        sandbox_id: str,
        path: str,
        chunks: AsyncIterator[bytes],
        *,
        user: str | None = None,
        mode: int | None = None,
    ) -> EntryInfo:
        """Stream ``chunks`` to the file on the sandbox's host."""
        return await entry(
            await self._open(sandbox_id, "PUT", {"path": path, "user": user, "mode": mode}, chunks)
        )

    async def watch(self, sandbox_id: str, path: str, **options: Any) -> Any:
        raise Unsupported("watching a directory is not available through a cluster replica yet")


class RemoteVolumes:
    """Volumes need storage every host can mount: not yet in a cluster."""

    async def list(self) -> builtins.list[VolumeInfo]:
        return []

    def __getattr__(self, method: str) -> Forward:
        async def refuse(*args: Any, **kwargs: Any) -> Any:
            raise Unsupported(
                "volumes are not available through a cluster replica yet (they "
                "need storage that every host mounts)"
            )

        return refuse


class RemoteCode(_Forwarding):
    service = "code"

    async def execute(self, sandbox_id: str, code: str, **options: Any) -> Any:
        raise Unsupported(
            "running code in a context is not available through a cluster replica yet; run a process instead"
        )


class ClusterEngine:
    """The cluster behind the engine interface. ``async with ClusterEngine(...)`` joins Ray,
    opens the state in PostgreSQL and watches the hosts until closed."""

    def __init__(
        self,
        config: EngineConfig,
        cluster: str,
        database_url: str,
        secret: str,
        placement_wait: float = PLACEMENT_WAIT,
    ) -> None:
        self.config = config
        self._address = cluster
        self._database_url = database_url
        self._secret = secret
        self._placement_wait = placement_wait
        self._stack = contextlib.AsyncExitStack()
        self.cluster: ClusterSandboxes | None = None

    async def __aenter__(self) -> "ClusterEngine":
        import ray

        await asyncio.to_thread(
            ray.init,
            address=self._address,
            namespace=NAMESPACE,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        self._stack.callback(ray.shutdown)
        state = await asyncio.to_thread(ClusterState, self._database_url)
        self._stack.callback(state.close)
        cluster = ClusterSandboxes(ray, state, Placer(ray, self._placement_wait))
        channel = Channel(self._secret)
        self._stack.push_async_callback(channel.aclose)
        await cluster.check_hosts()
        watcher = asyncio.create_task(cluster.watch())
        self._stack.push_async_callback(_cancel, watcher)
        self.cluster = cluster
        self.sandboxes = RemoteSandboxes(cluster, self.config.default_resources)
        self.processes = RemoteProcesses(cluster, channel)
        self.files = RemoteFiles(cluster, channel)
        self.templates = RemoteTemplates(cluster, channel, self.config.data_dir)
        self.volumes = RemoteVolumes()
        self.code = RemoteCode(cluster)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def open_port(self, sandbox_id: str, port: int) -> Any:
        """The port proxy's tunnel: not through a replica yet (409, saying so)."""
        await self.sandboxes.get(sandbox_id)  # a missing sandbox is still a 404
        raise Unsupported(
            "opening a sandbox's port is not available through a cluster "
            "replica yet; run the sandbox on a single host to use its ports"
        )


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
