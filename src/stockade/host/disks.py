"""Sandbox disks: sparse ext4 images, copied from a blank one formatted once per size."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from .commands import run
from .mounts import mount_loop, mounted


async def make_disk(
    image: Path, mountpoint: Path, size_mb: int, owner: int, blanks: Path | None = None
) -> None:
    """Create a sparse ext4 disk of ``size_mb`` and mount it: the writable layer's quota.

    With ``blanks``, a new disk is a copy of a blank one kept there (formatted once per size
    and owner): copying its megabyte of metadata is cheaper than running mkfs for every
    sandbox. Such copies share the filesystem UUID and directory hash seed; nothing relies on
    them being unique."""
    if not image.exists():
        if blanks is None:
            await _format(image, size_mb, owner)
        else:
            blank = await _blank_disk(blanks, size_mb, owner)
            await asyncio.to_thread(_copy_sparse, blank, image)
    mountpoint.mkdir(exist_ok=True)
    if not mounted(mountpoint):
        await asyncio.to_thread(mount_loop, image, mountpoint)


async def _format(image: Path, size_mb: int, owner: int) -> None:
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    await run(
        "mkfs.ext4",
        "-q",
        "-F",
        "-O",
        "^has_journal",
        "-m",
        "0",
        "-E",
        f"lazy_itable_init=1,nodiscard,root_owner={owner}:{owner}",
        str(image),
    )


_blank_locks: dict[Path, asyncio.Lock] = {}


async def _blank_disk(blanks: Path, size_mb: int, owner: int) -> Path:
    blank = blanks / f"ext4-{size_mb}m-{owner}.img"
    async with _blank_locks.setdefault(blank, asyncio.Lock()):
        if not blank.exists():
            blanks.mkdir(mode=0o700, parents=True, exist_ok=True)
            part = blank.with_suffix(".part")
            await _format(part, size_mb, owner)
            part.rename(blank)
    return blank


def _copy_sparse(source: Path, target: Path) -> None:
    """Copy ``source`` to a new ``target``, holes kept as holes."""
    part = target.with_suffix(".part")
    with open(source, "rb") as src, open(part, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        dst.truncate(size)
        offset = 0
        while offset < size:
            try:
                data = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(src.fileno(), data, os.SEEK_HOLE)
            done = data
            while done < end:
                done += os.copy_file_range(src.fileno(), dst.fileno(), end - done, done, done)
            offset = end
    part.rename(target)
