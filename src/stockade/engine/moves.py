"""Moving a stopped workspace to another host through shared storage (docs/cluster.md).

A stopped or archived workspace is **exported** into a directory on storage every host can
read: its writable layer as an archive in :mod:`.archive`'s format (with its manifest), and its
record. Another host **adopts** it from there: the archive is copied into a new sandbox
directory and the sandbox is recorded ``archived``, with the same id; its next start restores
the layer and boots it as any archived workspace (lifecycle.py). An export replaces the previous
one of the same sandbox only once it is complete, so the directory always holds one whole state.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..models import SandboxInfo
from ..net import NetworkPolicy
from .. import host
from ..runtimes.base import Resources
from ..runtimes.ocidriver import RELEASE_WAIT
from . import archive
from .errors import Conflict, InvalidRequest, SandboxUnavailable, Unsupported
from .records import SandboxRecord

if TYPE_CHECKING:
    from .engine import Engine

RECORD = "record.json"
#: Record fields that belong to one host (paths, timers, counters): not carried over.
LOCAL = (
    "directory",
    "attachment",
    "paused_with",
    "archive_at",
    "expires_at",
    "oom_seen",
    "pids_seen",
    "state",
    "reason",
    "message",
)
MOVABLE = ("stopped", "archived")


async def export(engine: "Engine", sandbox_id: str, target: Path) -> None:
    """Write the stopped or archived workspace ``sandbox_id`` into ``target`` (replaced)."""
    record = engine.record(sandbox_id)
    async with engine.lock(sandbox_id):
        if record.persistence != "workspace" or record.state not in MOVABLE:
            raise Conflict(
                f"sandbox {sandbox_id} is {record.state} ({record.persistence}): "
                f"only a stopped or archived workspace can be exported"
            )
        driver = engine.drivers[record.tier]
        if not driver.capabilities.archive:
            raise Unsupported.missing(record.tier, "archive", f"export sandbox {sandbox_id}")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        staging.mkdir(mode=0o700)
        try:
            if record.state == "stopped":
                layer = driver.layer_file(record.spec)
                await driver.stop(record.spec)  # idempotent: nothing of it stays mounted
                if not await host.loop_released(layer, RELEASE_WAIT):
                    raise SandboxUnavailable(
                        f"could not export sandbox {sandbox_id}: its disk "
                        f"is still busy after its stop; try again"
                    )
                await archive.archive(layer, staging)
            else:
                for name in (archive.ARCHIVE, archive.MANIFEST):
                    await asyncio.to_thread(shutil.copyfile, record.directory / name, staging / name)
            kept = {k: v for k, v in asdict(record).items() if k not in LOCAL}
            kept["exported_at"] = time.time()
            await asyncio.to_thread(_seal, staging, json.dumps(kept), target)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, staging, True)
            raise


def _seal(staging: Path, record: str, target: Path) -> None:
    """Write the record, flush everything, and put ``staging`` in place of ``target``."""
    (staging / RECORD).write_text(record)
    for path in staging.iterdir():
        archive._fsync(path)
    archive._fsync(staging)
    old = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old")
    if target.exists():
        os.rename(target, old)
    os.rename(staging, target)
    archive._fsync(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def exported(source: Path) -> dict[str, Any]:
    """The record of an export, once its archive is checked (ArchiveCorrupt if damaged)."""
    try:
        data: dict[str, Any] = json.loads((source / RECORD).read_text())
    except (OSError, ValueError) as exc:
        raise Conflict(f"no usable copy of sandbox {source.name} on shared storage ({exc})") from None
    archive.verify(source)
    return data


async def adopt(engine: "Engine", source: Path) -> SandboxInfo:
    """Take the workspace exported in ``source`` as one of this host's, archived (a start
    restores and boots it); its id is kept."""
    data = await asyncio.to_thread(exported, source)
    data.pop("exported_at", None)
    sandbox_id = str(data.get("id"))
    if sandbox_id != source.name:
        raise Conflict(f"the copy in {source} is of sandbox {sandbox_id}, not {source.name}")
    if sandbox_id in engine.live_ids():
        raise Conflict(f"sandbox {sandbox_id} is already on this host")
    if data.get("volumes"):
        raise Unsupported(f"sandbox {sandbox_id} mounts volumes, which do not move between hosts yet")
    if data.get("tier") not in engine.drivers:
        raise InvalidRequest(f"this host has no {data.get('tier')!r} tier")
    if not engine.images.exists(str(data.get("image"))):
        raise InvalidRequest(
            f"no template {data.get('image')!r} on this host, which sandbox {sandbox_id} needs"
        )
    directory = engine.sandbox_dir / sandbox_id
    if directory.exists():
        raise Conflict(
            f"sandbox {sandbox_id} has leftovers on this host ({directory}); "
            f"restart the host to clean them up"
        )
    directory.mkdir(mode=0o711)
    try:
        for name in (archive.ARCHIVE, archive.MANIFEST):
            await asyncio.to_thread(shutil.copyfile, source / name, directory / name)
        record = SandboxRecord(
            **{
                **data,
                "resources": Resources(**data["resources"]),
                "directory": directory,
                "state": "archived",
            }
        )
        record.expires_at = time.time() + record.auto_delete
        if record.network is not None:
            engine.sandboxes.plan_network(record, NetworkPolicy.parse(record.network) or NetworkPolicy())
        await asyncio.to_thread(archive.verify, directory)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, directory, True)
        raise
    engine.add_record(record)
    engine.changed(record)
    return record.info()
