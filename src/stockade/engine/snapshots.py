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
import contextlib
import os
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..images.store import ImageError, ImageStore, InvalidImageName, validate_name
from ..runtimes import hostops
from ..runtimes.base import DriverError
from ..models import TemplateInfo
from .errors import Conflict, InvalidRequest, SandboxUnavailable, Unsupported
from .records import SandboxRecord
from .templates import template_info

if TYPE_CHECKING:
    from .engine import Engine
    from .lifecycle import Lifecycle


def _unshift(tree: Path, uid_base: int) -> None:
    """Shift every owner in ``tree`` down by ``uid_base`` (set-id bits kept)."""
    for root, dirs, files in os.walk(tree):
        for name in [*dirs, *files]:
            path = os.path.join(root, name)
            st = os.lstat(path)
            uid, gid = st.st_uid - uid_base, st.st_gid - uid_base
            if not (0 <= uid < 65536 and 0 <= gid < 65536):
                uid, gid = 65534, 65534  # not from the sandbox's range: nobody
            os.lchown(path, uid, gid)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(path, stat.S_IMODE(st.st_mode))  # chown cleared set-id bits
    st = os.lstat(tree)
    os.lchown(tree, max(0, st.st_uid - uid_base), max(0, st.st_gid - uid_base))


def _copy_layer(store: ImageStore, name: str, upper: Path, uid_base: int | None,
                record: SandboxRecord, owner: str | None = None) -> TemplateInfo:
    with store.staging(name) as staging:
        if store.exists(name):
            raise Conflict(f"a template named {name!r} already exists")
        rootfs = staging.path / "rootfs"
        result = subprocess.run(["cp", "-a", "--reflink=auto", str(upper), str(rootfs)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SandboxUnavailable(f"cannot copy the sandbox's files: {result.stderr.strip()}")
        if uid_base:
            _unshift(rootfs, uid_base)
        info = store.install(name, staging, source=f"snapshot of sandbox {record.id}",
                             packages=store.get(record.image).packages, parent=record.image,
                             owner=owner)
    return template_info(info)


async def snapshot(engine: "Engine", lifecycle: "Lifecycle", sandbox_id: str, name: str,
                   owner: str | None = None) -> TemplateInfo:
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
        raise Unsupported.missing(record.tier, "files_snapshot",
                                  f"snapshot sandbox {sandbox_id} into a template")
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
            with _mounted(record.directory / "disk.img") as mnt:
                return await _copy(engine, name, mnt / "upper", uid_base, record, owner)
        except DriverError as exc:
            raise SandboxUnavailable(f"could not snapshot sandbox {sandbox_id}: {exc}") from None


async def _copy(engine: "Engine", name: str, upper: Path, uid_base: int | None,
                record: SandboxRecord, owner: str | None) -> TemplateInfo:
    try:
        return await asyncio.to_thread(_copy_layer, engine.images, name, upper, uid_base, record,
                                       owner)
    except ImageError as exc:
        raise Conflict(f"cannot save template {name!r}: {exc}") from None


@contextlib.contextmanager
def _mounted(image: Path):  # type: ignore[no-untyped-def]
    """Mount a stopped sandbox's disk in a private temporary directory (read-write: the kernel
    may still hold its superblock from the last run, which a read-only mount would clash with;
    nothing here writes to it)."""
    mnt = Path(tempfile.mkdtemp(prefix="stockade-snap-"))
    try:
        subprocess.run(["mount", "-o", "loop,nosuid,nodev,noexec", str(image), str(mnt)],
                       check=True, capture_output=True)
        try:
            yield mnt
        finally:
            hostops.unmount(mnt)
    except subprocess.CalledProcessError as exc:
        raise DriverError(f"cannot mount {image}: {exc.stderr.decode(errors='replace')}") from None
    finally:
        with contextlib.suppress(OSError):
            mnt.rmdir()
