"""The files service: read, write and manage files in a sandbox (``engine.files``).

Paths are resolved by the agent inside the sandbox, as ``user`` (default: the sandbox's user),
so nothing here follows a link on the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncIterator

from ..models import EntryInfo, FileEvent, MakeDirResult
from ..runtimes.channel import AgentCallError, ChannelClosed, Data, End, Event
from .errors import SandboxUnavailable
from .process import KEEPALIVE, translate_agent_error

if TYPE_CHECKING:
    from .engine import Engine


class Files:
    """Files inside an engine's sandboxes, through each sandbox's agent."""

    def __init__(self, engine: "Engine") -> None:
        self._engine = engine

    async def read(self, sandbox_id: str, path: str, user: str | None = None) -> AsyncIterator[bytes]:
        """Stream a file's bytes. Opening raises at once if the file is missing."""
        stream = await self._engine.stream(sandbox_id, "fs.read", {"path": path, "user": user})
        first = await stream.next()
        if isinstance(first, End) and not first.ok:
            raise translate_agent_error(AgentCallError(first.code, first.message))

        async def chunks() -> AsyncIterator[bytes]:
            item: Any = first
            try:
                while True:
                    if isinstance(item, Data):
                        yield item.data
                    elif isinstance(item, End):
                        if not item.ok:
                            raise translate_agent_error(AgentCallError(item.code, item.message))
                        return
                    item = await stream.next()
            finally:
                await stream.cancel()

        return chunks()

    async def write(
        self,
        sandbox_id: str,
        path: str,
        chunks: AsyncIterator[bytes],
        *,
        user: str | None = None,
        mode: int | None = None,
    ) -> EntryInfo:
        """Write a file from a stream of chunks; it replaces the old one atomically once
        complete."""
        stream = await self._engine.stream(sandbox_id, "fs.write", {"path": path, "user": user, "mode": mode})
        try:
            async for chunk in chunks:
                if stream.done:
                    break
                await stream.send(chunk)
            if not stream.done:
                await stream.close_send()
            return EntryInfo.model_validate(await stream.result())
        except AgentCallError as exc:
            raise translate_agent_error(exc) from None
        except ChannelClosed as exc:
            raise SandboxUnavailable(f"sandbox {sandbox_id}: {exc}") from None
        except BaseException:
            await stream.cancel()
            raise

    async def stat(self, sandbox_id: str, path: str, user: str | None = None) -> EntryInfo:
        return EntryInfo.model_validate(
            await self._engine.call(sandbox_id, "fs.stat", {"path": path, "user": user})
        )

    async def list(
        self, sandbox_id: str, path: str, user: str | None = None, depth: int = 1
    ) -> list[EntryInfo]:
        """The entries under directory ``path``, ``depth`` levels down."""
        found = await self._engine.call(sandbox_id, "fs.list", {"path": path, "user": user, "depth": depth})
        return [EntryInfo.model_validate(e) for e in found]

    async def make_dir(self, sandbox_id: str, path: str, user: str | None = None) -> MakeDirResult:
        """Make a directory and its parents; ``created`` is False if it already existed."""
        return MakeDirResult.model_validate(
            await self._engine.call(sandbox_id, "fs.mkdir", {"path": path, "user": user})
        )

    async def remove(self, sandbox_id: str, path: str, user: str | None = None) -> None:
        """Remove a file or a whole directory tree."""
        await self._engine.call(sandbox_id, "fs.remove", {"path": path, "user": user})

    async def rename(self, sandbox_id: str, src: str, dst: str, user: str | None = None) -> EntryInfo:
        return EntryInfo.model_validate(
            await self._engine.call(sandbox_id, "fs.rename", {"src": src, "dst": dst, "user": user})
        )

    async def watch(
        self, sandbox_id: str, path: str, *, recursive: bool = False, user: str | None = None
    ) -> AsyncIterator[FileEvent]:
        """Changes under directory ``path``: ``start`` first (a missing directory raises here),
        then ``create``/``write``/``remove``/``rename``/``chmod`` with ``name`` relative to
        ``path``, and ``keepalive`` on silence, until the iterator is closed. A recursive
        watch follows directories made later; the agent's atomic writes show as ``write``."""
        stream = await self._engine.stream(
            sandbox_id,
            "fs.watch",
            {"path": path, "recursive": recursive, "user": user, "keepalive": KEEPALIVE},
        )
        first = await stream.next()
        if isinstance(first, End):
            await stream.cancel()
            raise translate_agent_error(
                AgentCallError(first.code, first.message or "the watch ended at once")
            )

        async def events() -> AsyncIterator[FileEvent]:
            item: Any = first
            try:
                while True:
                    if isinstance(item, Event):
                        yield FileEvent.model_validate(item.body)
                    elif isinstance(item, End):
                        if not item.ok:
                            raise translate_agent_error(AgentCallError(item.code, item.message))
                        return
                    item = await stream.next()
            except ChannelClosed as exc:
                raise SandboxUnavailable(f"sandbox {sandbox_id}: {exc}") from None
            finally:
                await stream.cancel()

        return events()
