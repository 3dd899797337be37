"""A host's templates with shared storage: its own image store plus ``<shared>/templates``.

A template this host builds, imports or snapshots is published to shared storage; one it is
asked to run (or to build on, or that a moved workspace needs) and lacks is adopted from there
first, one copy at a time per name (:mod:`stockade.images.shared`). Lists and lookups show both,
so a tenant sees its templates through any replica whichever host made them. A copy whose
shared original was deleted while this host was down goes when the host opens again.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from pathlib import Path
from typing import Callable

from ..engine import Conflict, Engine, EngineError, InvalidRequest, NotFound
from ..engine.templates import template_info
from ..images import ImageError
from ..images.manifest import DamagedCopy
from ..images.shared import SharedTemplates
from ..images.store import ImageInUse
from ..models import TemplateInfo

log = logging.getLogger("stockade.cluster")
Visible = Callable[[str | None], bool]


class HostTemplates:
    """Templates of ``engine`` shared through ``shared_dir`` (None: this host's own only)."""

    def __init__(self, engine: Engine, shared_dir: Path | None) -> None:
        self.engine = engine
        self.shared = SharedTemplates(shared_dir / "templates") if shared_dir else None
        self._locks: dict[str, asyncio.Lock] = {}

    async def ensure(self, name: str) -> None:
        """Adopt the published template ``name`` unless this host has it (up to date)."""
        shared, store = self.shared, self.engine.images
        if shared is None:
            return
        async with self._locks.setdefault(name, asyncio.Lock()):
            try:
                if not await asyncio.to_thread(shared.needs, store, name):
                    return
                if store.exists(name):  # an outdated copy: no pooled sandbox of it may stay
                    await self.engine.pool.forget_template(name)
                if await asyncio.to_thread(shared.adopt, store, name):
                    log.info("adopted template %s from shared storage", name)
            except ImageInUse as exc:
                raise Conflict(f"template {name!r} was replaced on shared storage, but {exc}") from None
            except DamagedCopy as exc:
                log.warning("refused template %s from shared storage: %s", name, exc)
                raise Conflict(
                    f"cannot take template {name!r} from shared storage: {exc}. This host did "
                    f"not use it; the host that made it still runs it from its own copy. Delete "
                    f"the template and make it again to repair it"
                ) from None
            except (ImageError, ValueError, OSError) as exc:
                raise InvalidRequest(f"cannot take template {name!r} from shared storage: {exc}") from None

    def check_free(self, name: str) -> None:
        """Conflict if another host published a template ``name`` already."""
        if self.shared is not None and not self.engine.images.exists(name) and self.shared.current(name):
            raise Conflict(
                f"a template named {name!r} already exists; delete it first or choose another name"
            )

    async def publish(self, name: str) -> None:
        """Copy template ``name`` to shared storage, for every host (a failure: the template
        stays on this host only, and the caller is told)."""
        if self.shared is None:
            return
        try:
            await asyncio.to_thread(self.shared.publish, self.engine.images, name)
        except (ImageError, OSError) as exc:
            raise EngineError(
                f"template {name!r} was made on this host but could not be copied to shared storage: {exc}"
            ) from None

    async def list(self, visible: Visible) -> builtins.list[TemplateInfo]:
        """This host's templates and the published ones, that ``visible`` owners made."""
        found = {t.name: t for t in await self.engine.templates.list(visible)}
        if self.shared is not None:
            for info in await asyncio.to_thread(self.shared.list):
                if info.name not in found and not info.hidden and (info.owner is None or visible(info.owner)):
                    found[info.name] = template_info(info)
        return sorted(found.values(), key=lambda t: t.name)

    async def get(self, name: str, visible: Visible) -> TemplateInfo:
        try:
            return await self.engine.templates.get(name, visible)
        except NotFound:
            info = await asyncio.to_thread(self.shared.info, name) if self.shared else None
            if info is None or info.hidden or not (info.owner is None or visible(info.owner)):
                raise
            return template_info(info)

    async def drop(self, name: str) -> None:
        """Delete this host's copy of template ``name`` (Conflict while a sandbox uses it)."""
        if self.engine.images.exists(name):
            await self.engine.templates.delete(name)

    async def unpublish(self, name: str) -> None:
        """Remove template ``name`` from shared storage (the layers only it used too)."""
        if self.shared is not None:
            await asyncio.to_thread(self.shared.remove, name)

    async def sweep(self) -> None:
        """Delete this host's copies whose shared original is gone or was replaced (kept
        while a sandbox uses one)."""
        if self.shared is None:
            return
        for name in await asyncio.to_thread(self.shared.stale, self.engine.images):
            with contextlib.suppress(EngineError):
                await self.engine.templates.delete(name)
                log.info("deleted template %s: its shared original is gone", name)
