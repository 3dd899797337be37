"""Archive a stopped sandbox's writable layer to free disk; bring it back before it starts.

The layer is the one file a driver names (:meth:`RuntimeDriver.layer_file`, the sandbox's
sparse ext4 disk image). Archiving is ``tar --sparse`` (holes stay holes) piped through
``lz4`` (Debian's ``lz4``, installed by scripts/install), into the sandbox's directory::

    layer.tar.lz4.tmp   being written; never trusted
    layer.tar.lz4       complete: fsynced, then renamed into place
    archive.json        its size and CRC-32, written (fsynced, renamed) before the layer goes

**Which of layer and archive is the truth is decided by the layer file alone**: while it exists
the sandbox is ``stopped`` and any archive beside it is a leftover; once it is gone the archive
is complete (the layer is removed only after the archive and its manifest are on disk). A restore
extracts into ``restore.tmp/``, fsyncs, and renames the layer into place before the archive is
removed. So an engine killed at any point loses nothing, and :func:`settle` (called on recovery)
finishes the state from what is on disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .. import host
from ..runtimes.base import DriverError
from ..runtimes.suspend import file_crc32
from .errors import Conflict

ARCHIVE = "layer.tar.lz4"
MANIFEST = "archive.json"
RESTORE_DIR = "restore.tmp"
COMPRESSOR = "lz4"  # tar runs it as the filter both ways (it checks its frames' checksums)


class ArchiveCorrupt(Conflict):
    """A sandbox's archive is missing, truncated or damaged: it cannot be restored."""

    code = "archive_corrupt"


@dataclass(frozen=True)
class ArchiveInfo:
    """What archiving a layer did."""

    layer_bytes: int  # the layer's apparent size (its quota)
    stored_bytes: int  # what the layer used on the host (allocated blocks)
    archive_bytes: int


def archive_path(directory: Path) -> Path:
    return directory / ARCHIVE


def held_bytes(directory: Path) -> int:
    """Bytes the archive of a sandbox holds on the host (0 if it has none)."""
    try:
        return archive_path(directory).stat().st_size
    except OSError:
        return 0


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _clean(directory: Path) -> None:
    """Remove every archive leftover (the layer file is the truth and exists)."""
    for name in (ARCHIVE + ".tmp", ARCHIVE, MANIFEST + ".tmp", MANIFEST):
        (directory / name).unlink(missing_ok=True)
    shutil.rmtree(directory / RESTORE_DIR, ignore_errors=True)


async def archive(layer: Path, directory: Path) -> ArchiveInfo:
    """Compress ``layer`` (an unmounted file) into ``directory``; the caller records the
    sandbox archived, then removes the layer (:func:`drop_layer`). If anything fails, the layer
    is untouched and the leftovers are removed."""
    if not layer.is_file():
        raise DriverError(f"the writable layer {layer} is missing")
    if host.mounts_under(directory):
        raise DriverError(f"{directory} still has mounts; stop the sandbox first")
    _clean(directory)
    tmp = directory / (ARCHIVE + ".tmp")
    stat = layer.stat()
    try:
        await host.run(
            "tar",
            "--create",
            "--sparse",
            "--numeric-owner",
            f"--use-compress-program={COMPRESSOR}",
            "--file",
            str(tmp),
            "--directory",
            str(layer.parent),
            layer.name,
            timeout=3600,
        )
        size = await asyncio.to_thread(_seal, tmp, layer.name, stat.st_size, directory)
    except BaseException:
        _clean(directory)
        raise
    return ArchiveInfo(layer_bytes=stat.st_size, stored_bytes=stat.st_blocks * 512, archive_bytes=size)


def _seal(tmp: Path, layer_name: str, layer_bytes: int, directory: Path) -> int:
    """Flush the finished archive, put it in place, then its manifest; return its size."""
    _fsync(tmp)
    size = tmp.stat().st_size
    manifest = {
        "version": 1,
        "layer": layer_name,
        "layer_bytes": layer_bytes,
        "size": size,
        "crc32": file_crc32(tmp),
        "created_at": time.time(),
    }
    os.replace(tmp, archive_path(directory))
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest))
    _fsync(tmp)
    os.replace(tmp, directory / MANIFEST)
    _fsync(directory)
    return size


def drop_layer(layer: Path) -> None:
    """The last step of archiving (the record already says "archived")."""
    layer.unlink(missing_ok=True)
    _fsync(layer.parent)


def verify(directory: Path) -> dict[str, object]:
    """The archive's manifest; raises ArchiveCorrupt unless the archive matches it."""
    path = archive_path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        size, crc = int(manifest["size"]), int(manifest["crc32"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArchiveCorrupt(f"the archive of {directory.name} has no readable manifest ({exc})") from None
    try:
        actual = path.stat().st_size
    except OSError:
        raise ArchiveCorrupt(f"the archive {path} is missing") from None
    if actual != size:
        raise ArchiveCorrupt(f"the archive {path} is {actual} bytes, expected {size} (truncated?)")
    if file_crc32(path) != crc:
        raise ArchiveCorrupt(f"the archive {path} does not match its checksum (damaged on disk?)")
    return manifest  # type: ignore[no-any-return]


async def restore(layer: Path, directory: Path) -> None:
    """Bring the layer back from the archive; the archive is removed only once it is."""
    if layer.exists():  # already restored (an earlier attempt was interrupted after the rename)
        _clean(directory)
        return
    manifest = await asyncio.to_thread(verify, directory)
    staging = directory / RESTORE_DIR
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    try:
        try:
            await host.run(
                "tar",
                "--extract",
                "--sparse",
                "--numeric-owner",
                "--same-permissions",
                f"--use-compress-program={COMPRESSOR}",
                "--file",
                str(archive_path(directory)),
                "--directory",
                str(staging),
                timeout=3600,
            )
        except DriverError as exc:
            raise ArchiveCorrupt(f"the archive of {directory.name} cannot be unpacked: {exc}") from None
        restored = staging / str(manifest.get("layer", layer.name))
        if not restored.is_file() or restored.stat().st_size != manifest.get("layer_bytes"):
            raise ArchiveCorrupt(f"the archive of {directory.name} does not hold a complete layer")
        await asyncio.to_thread(_put_in_place, restored, layer)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _clean(directory)


def _put_in_place(restored: Path, layer: Path) -> None:
    _fsync(restored)
    os.replace(restored, layer)
    _fsync(layer.parent)


def settle(layer: Path, directory: Path) -> str:
    """After a crash: finish whatever archive or restore was under way; return the state the
    sandbox is in ("stopped" if its layer exists, else "archived")."""
    shutil.rmtree(directory / RESTORE_DIR, ignore_errors=True)
    (directory / (ARCHIVE + ".tmp")).unlink(missing_ok=True)
    (directory / (MANIFEST + ".tmp")).unlink(missing_ok=True)
    if layer.exists():
        _clean(directory)
        return "stopped"
    return "archived"
