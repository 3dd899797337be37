"""The templates service: list, inspect, delete, build and import templates (``engine.templates``).

The engine is tenant-agnostic: callers say which owners their caller may see with a ``visible``
predicate over a template's owner (None: shared by the operator).
"""

from __future__ import annotations

import builtins

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..images import ImageError, ImageExists, ImageInfo
from ..images.oci_import import import_image
from ..images.store import validate_name
from ..models import TemplateInfo
from .errors import Conflict, InvalidRequest, NotFound

if TYPE_CHECKING:
    from .engine import Engine
    from .template_build import TemplateBuild

Visible = Callable[[str | None], bool]


def template_info(info: ImageInfo) -> TemplateInfo:
    """A template as callers see it."""
    return TemplateInfo(
        name=info.name,
        parent=info.parent,
        size_bytes=info.size_bytes,
        files=info.files,
        created=info.created.isoformat(),
        owner=info.owner,
        source=info.source,
        config=info.config,
    )


class Templates:
    """The templates of an engine's image store."""

    def __init__(self, engine: "Engine") -> None:
        from .build_jobs import BuildJobs  # noqa: PLC0415 - it imports this module

        self._engine = engine
        #: Builds that run in the background and are polled (E2B's template build API).
        self.builds = BuildJobs(engine)

    def find(self, name: str, visible: Visible) -> ImageInfo:
        """Template ``name`` if its owner is ``visible``; NotFound (as for a missing one)."""
        try:
            info: ImageInfo | None = self._engine.images.get(validate_name(name))
        except (ImageError, ValueError):
            info = None
        if info is None or info.hidden or not (info.owner is None or visible(info.owner)):
            raise NotFound(f"no template {name!r}; see GET /templates (or `stockade image ls`)")
        return info

    def check_usable(self, name: str, visible: Visible) -> None:
        """Refuse a sandbox's template that the caller may not use, in the words used for a
        missing one."""
        try:
            self.find(name, visible)
        except NotFound:
            raise InvalidRequest(
                f"no template {name!r} on this host; build it with 'stockade "
                f"image build' or see 'stockade image ls'"
            ) from None

    async def list(self, visible: Visible) -> list[TemplateInfo]:
        """Shared templates and those whose owner is ``visible``."""
        infos = await asyncio.to_thread(self._engine.images.list)
        return [template_info(i) for i in infos if not i.hidden and (i.owner is None or visible(i.owner))]

    async def get(self, name: str, visible: Visible) -> TemplateInfo:
        return template_info(self.find(name, visible))

    async def delete(self, name: str) -> None:
        """Remove a template and the build-cache layers made from it (409 while in use)."""
        from .template_build import delete_template  # noqa: PLC0415 - it imports this module

        await delete_template(self._engine, name)

    async def prune(self, owner: str | None, everyone: bool) -> builtins.list[str]:
        """Delete ``owner``'s unused build-cache layers (every owner's with ``everyone``)."""
        from .template_build import prune_cache  # noqa: PLC0415

        return await prune_cache(self._engine, owner, everyone)

    def workspace(self) -> Path:
        """A fresh private directory for an upload (the caller removes it)."""
        path = self._engine.config.data_dir / "builds" / f"{time.time_ns():x}"
        path.mkdir(parents=True, mode=0o700)
        return path

    def build(
        self,
        dockerfile: str,
        name: str,
        context: Path,
        *,
        owner: str | None,
        visible: Visible,
        emit: Callable[[dict[str, Any]], None],
        network: Any = "none",
        replace: bool = False,
    ) -> "TemplateBuild":
        """A checked build of ``dockerfile`` (run it with ``await build.run()``); with
        ``replace``, a template of that name and owner is replaced once the build succeeds."""
        from .template_build import TemplateBuild  # noqa: PLC0415

        build = TemplateBuild(
            self._engine,
            dockerfile,
            name,
            context,
            owner=owner,
            may_use=lambda info: info.owner is None or visible(info.owner),
            emit=emit,
            network=network,
            replace=replace,
        )
        build.check()
        return build

    async def import_image(self, name: str, archive: Path, owner: str | None) -> TemplateInfo:
        """A template from an OCI layout tar or a ``docker save`` archive."""
        try:
            info = await asyncio.to_thread(import_image, self._engine.images, name, archive, owner=owner)
        except ImageExists as exc:
            raise Conflict(str(exc)) from None
        except ImageError as exc:
            raise InvalidRequest(str(exc)) from None
        return template_info(info)
