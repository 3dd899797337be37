"""Daytona images built by Stockade's template builder (the Dockerfile the SDK renders from an
``Image``), for sandbox creates and snapshot creates alike."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil

from ...engine import EngineError, NotFound
from ...models import TemplateInfo
from ...server.auth import Principal
from ...server.control import Control
from ._base import DaytonaError
from .wire import BuildInfo


async def build(ctl: Control, who: Principal, dockerfile: str, name: str) -> TemplateInfo:
    """Template ``name`` of the caller's tenant built from ``dockerfile`` while the caller waits
    (Daytona's build contexts, which copy local files, are refused; FROM names a template)."""
    context = ctl.engine.templates.workspace()  # empty: Daytona's contexts are refused
    try:
        try:
            job = ctl.engine.templates.build(
                dockerfile, name, context, owner=who.tenant, visible=who.may_see, emit=lambda event: None
            )
        except EngineError as exc:
            raise DaytonaError(
                exc.status if exc.status == 409 else 400,
                f"cannot build this image: {exc.message} (here FROM names a "
                f"Stockade template, such as 'base')",
            ) from None
        return await job.run()
    finally:
        await asyncio.to_thread(shutil.rmtree, context, True)


def dockerfile_of(info: BuildInfo) -> str:
    """The Dockerfile of a Daytona build (refused when it copies local files)."""
    if info.context_hashes:
        raise DaytonaError(
            400,
            "images that copy local files (build contexts) are not "
            "supported here; use RUN steps or a template",
        )
    return info.dockerfile_content or ""


async def image_template(ctl: Control, who: Principal, info: BuildInfo) -> str:
    """The tenant's template for a sandbox created from a Daytona image (built once, then
    reused by every create of the same image)."""
    dockerfile = dockerfile_of(info)
    digest = hashlib.sha256(f"{who.tenant}\0{dockerfile}".encode()).hexdigest()[:24]
    name = f"daytona-{digest}"
    with contextlib.suppress(NotFound):
        await ctl.engine.templates.get(name, who.may_see)
        return name
    await build(ctl, who, dockerfile, name)
    return name
