"""Named volumes: size-limited disks that outlive every sandbox and mount into any number.

Each volume is ``<data_dir>/volumes/<name>/`` holding ``volume.json``, ``disk.img`` (a sparse
ext4 image: its size is the limit, as for a sandbox's own disk) and ``mnt/``, where the image is
mounted on the host from first use until the volume is deleted. Sandboxes get ``mnt/`` as a bind
mount, read-write or read-only. A volume is deleted only when no sandbox (running, paused or
stopped) names it. ``owner`` is kept for the server's per-tenant checks; the engine ignores it.
"""

from __future__ import annotations

import builtins

import asyncio
import json
import os
import re
import shutil
import time
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from ..models import VolumeInfo
from .. import host
from ..runtimes.base import DriverError
from .errors import Conflict, InvalidRequest, NotFound, SandboxUnavailable

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
DEFAULT_SIZE_MB = 1024
#: Where a volume may not be mounted: the agent's own directories and the kernel's.
RESERVED = ("/proc", "/sys", "/dev", "/.stockade", "/etc/resolv.conf")


def check_mount_path(path: str) -> str:
    """An absolute, normalised path that is not ``/`` nor a reserved directory."""
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
        raise InvalidRequest(f"volume mount path {path!r} must be an absolute path")
    parts = PurePosixPath(path).parts
    if ".." in parts or len(path) > 1024:
        raise InvalidRequest(f"volume mount path {path!r} may not contain '..'")
    clean = str(PurePosixPath(path))
    if clean == "/" or any(clean == r or clean.startswith(r + "/") for r in RESERVED):
        raise InvalidRequest(f"a volume cannot be mounted at {clean!r}")
    return clean


class Volumes:
    """The volumes of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "volumes"
        self.lock = asyncio.Lock()

    async def close(self) -> None:
        """Unmount every volume from the host (sandboxes still running keep their own bind
        mounts; the next use mounts it again), so a stopped engine leaves no mount behind."""
        for point in host.mounts_under(self.root):
            await asyncio.to_thread(host.unmount, point)

    def _dir(self, name: str) -> Path:
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise InvalidRequest(
                f"invalid volume name {name!r}: use 1 to 63 characters from "
                f"a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
            )
        return self.root / name

    def _info(self, name: str) -> dict[str, Any]:
        try:
            info: dict[str, Any] = json.loads((self._dir(name) / "volume.json").read_text())
        except FileNotFoundError:
            raise NotFound(f"no volume {name!r}; create it first (Volume.create)") from None
        except (OSError, ValueError) as exc:
            raise SandboxUnavailable(f"volume {name!r} is unreadable: {exc}") from None
        return info

    async def create(
        self, name: str, size_mb: int = DEFAULT_SIZE_MB, owner: str | None = None
    ) -> dict[str, Any]:
        """Make an empty volume of ``size_mb``; Conflict if the name is taken."""
        path = self._dir(name)
        if not 16 <= size_mb <= 1048576:
            raise InvalidRequest(f"size_mb must be between 16 and 1048576, not {size_mb}")
        async with self.lock:
            if path.exists():
                raise Conflict(f"volume {name!r} already exists")
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".tmp-{name}-{os.getpid()}"
            await asyncio.to_thread(shutil.rmtree, tmp, True)
            tmp.mkdir()
            try:
                image = tmp / "disk.img"
                with open(image, "wb") as f:
                    f.truncate(size_mb << 20)
                await host.run(
                    "mkfs.ext4",
                    "-q",
                    "-F",
                    "-O",
                    "^has_journal",
                    "-m",
                    "0",
                    "-E",
                    "lazy_itable_init=1,nodiscard",
                    str(image),
                )
                info = {"name": name, "size_mb": size_mb, "created_at": time.time(), "owner": owner}
                (tmp / "volume.json").write_text(json.dumps(info))
                os.rename(tmp, path)
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, tmp, True)
                raise
            await self._mount(path)
        return info

    async def _mount(self, path: Path) -> Path:
        mnt = path / "mnt"
        if not host.mounted(mnt):
            try:
                await host.make_disk(path / "disk.img", mnt, 0, 0)
            except DriverError as exc:
                raise SandboxUnavailable(f"cannot mount volume {path.name!r}: {exc}") from None
            # Every sandbox user may write at the top (uids differ between tiers); what they
            # create below keeps its owner.
            mnt.chmod(0o1777)
        return mnt

    async def source(self, name: str) -> Path:
        """The host directory to bind-mount for volume ``name`` (mounted if need be)."""
        self._info(name)
        return await self._mount(self._dir(name))

    def get(self, name: str) -> dict[str, Any]:
        return self._info(name)

    def list(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        return [
            self._info(p.name)
            for p in sorted(self.root.iterdir())
            if NAME_RE.fullmatch(p.name) and (p / "volume.json").exists()
        ]

    async def delete(self, name: str, users: builtins.list[str]) -> None:
        """Remove a volume and its data; Conflict while ``users`` (sandbox ids) name it."""
        path = self._dir(name)
        async with self.lock:
            self._info(name)
            if users:
                raise Conflict(
                    f"volume {name!r} is mounted by sandbox(es) {', '.join(users)}; kill them first"
                )
            await asyncio.to_thread(host.unmount, path / "mnt")
            await asyncio.to_thread(shutil.rmtree, path)


class VolumeService:
    """Volumes as callers see them (``engine.volumes``): each with the sandboxes mounting it."""

    def __init__(self, store: Volumes, users: Callable[[str], list[str]]) -> None:
        self._store = store
        self._users = users

    def _info(self, raw: dict[str, Any]) -> VolumeInfo:
        return VolumeInfo(**raw, mounted_by=self._users(raw["name"]))

    async def create(self, name: str, size_mb: int = DEFAULT_SIZE_MB, owner: str | None = None) -> VolumeInfo:
        """An empty volume of ``size_mb`` (its hard limit); Conflict if the name is taken."""
        return self._info(await self._store.create(name, size_mb, owner))

    async def get(self, name: str) -> VolumeInfo:
        return self._info(self._store.get(name))

    async def list(self) -> list[VolumeInfo]:
        return [self._info(v) for v in self._store.list()]

    async def delete(self, name: str) -> None:
        """Remove a volume and its data (409 while a sandbox in any state mounts it)."""
        await self._store.delete(name, self._users(name))
