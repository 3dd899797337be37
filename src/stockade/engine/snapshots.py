"""Snapshots: a sandbox's filesystem changes saved as a new template that shares layers.

A sandbox's root is an overlay: its template's read-only layers below, its own ``upper``
directory (on its disk) above. A snapshot copies only that upper directory (whiteouts and
opaque-directory markers included) into the image store as a new image whose ``parent`` is the
sandbox's template, so a sandbox made from the snapshot mounts ``lowerdir=snapshot:template``
and nothing of the template is copied. Container-tier uppers hold uids shifted by the tier's
uid base; they are shifted back so the store keeps host ids, as for every image. A running
sandbox is frozen while its upper is copied, so the copy is consistent; a stopped or
checkpoint-paused one has its disk mounted for the copy.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from ..images.store import ImageError, ImageInfo, ImageStore, InvalidImageName, validate_name
from .. import host
from ..runtimes.base import DriverError
from ..models import TemplateInfo
from .errors import Conflict, InvalidRequest, SandboxUnavailable, Unsupported
from .records import SandboxRecord
from .templates import template_info

if TYPE_CHECKING:
    from .engine import Engine
    from .lifecycle import Lifecycle


def save_upper(
    store: ImageStore,
    name: str,
    upper: Path,
    uid_base: int | None,
    record: SandboxRecord,
    owner: str | None,
    *,
    source: str,
    hidden: bool = False,
) -> ImageInfo:
    """A sandbox's upper directory as image ``name`` over its template: copied (reflinked where
    the host filesystem can; whiteouts kept, so deletions carry over), owners shifted back out
    of the sandbox's uid range. Used by snapshots and by fork (a hidden layer)."""
    with store.staging(name) as staging:
        if store.exists(name):
            raise Conflict(f"a template named {name!r} already exists")
        rootfs = staging.path / "rootfs"
        result = subprocess.run(
            ["cp", "-a", "--reflink=auto", str(upper), str(rootfs)], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise SandboxUnavailable(f"cannot copy the sandbox's files: {result.stderr.strip()}")
        if uid_base:
            host.unshift_owners(rootfs, uid_base)
        return store.install(
            name,
            staging,
            source=source,
            packages=store.get(record.image).packages,
            parent=record.image,
            owner=owner,
            hidden=hidden,
        )


async def snapshot(
    engine: "Engine", lifecycle: "Lifecycle", sandbox_id: str, name: str, owner: str | None = None
) -> TemplateInfo:
    """Save ``sandbox_id``'s filesystem as template ``name`` (of tenant ``owner``); the
    sandbox carries on."""
    record = engine.record(sandbox_id)
    try:
        validate_name(name)
    except InvalidImageName as exc:
        raise InvalidRequest(str(exc)) from None
    if engine.images.exists(name):
        raise Conflict(f"a template named {name!r} already exists")
    if record.state == "archived":
        raise Conflict(f"sandbox {sandbox_id} is archived; start it (connect) before a snapshot")
    driver = engine.drivers[record.tier]
    if not driver.capabilities.files_snapshot:
        raise Unsupported.missing(
            record.tier, "files_snapshot", f"snapshot sandbox {sandbox_id} into a template"
        )
    uid_base = driver.layer_uid_base
    async with engine.lock(sandbox_id):
        await lifecycle.settled(sandbox_id)
        disk = record.directory / "disk"
        try:
            if record.state == "running":
                await driver.pause(record.spec)
                try:
                    return await _copy(engine, name, disk / "upper", uid_base, record, owner)
                finally:
                    await driver.resume(record.spec)
            if record.state == "paused" and record.paused_with == "freezer":
                return await _copy(engine, name, disk / "upper", uid_base, record, owner)
            with host.mounted_disk(record.directory / "disk.img") as mnt:
                return await _copy(engine, name, mnt / "upper", uid_base, record, owner)
        except DriverError as exc:
            raise SandboxUnavailable(f"could not snapshot sandbox {sandbox_id}: {exc}") from None


async def _copy(
    engine: "Engine", name: str, upper: Path, uid_base: int | None, record: SandboxRecord, owner: str | None
) -> TemplateInfo:
    try:
        info = await asyncio.to_thread(
            save_upper,
            engine.images,
            name,
            upper,
            uid_base,
            record,
            owner,
            source=f"snapshot of sandbox {record.id}",
        )
        return template_info(info)
    except ImageError as exc:
        raise Conflict(f"cannot save template {name!r}: {exc}") from None
