"""The on-disk image store: ``<data_dir>/images/<name>/{rootfs/, image.json}``.

Every change is made in a hidden sibling directory and renamed into place, so a reader sees an
image either complete or not at all, and an interrupted writer leaves only hidden leftovers that
the next writer sweeps away. See docs/images.md for the layout.
"""

from __future__ import annotations

import builtins

import errno
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from .. import host
from . import idmap

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
IMAGE_JSON = "image.json"
ROOTFS = "rootfs"
SCHEMA_VERSION = 1
_LOCK = ".lock"
_TMP = ".tmp-"
_IDMAP = "rootfs-idmap-"
_TRASH = ".trash-"
_RETIRED = ".retired-"
_BUILD = ".build-"
_PYTHON_CANDIDATES = ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3")


class ImageError(Exception):
    """Base class of the image store's errors."""


class InvalidImageName(ImageError, ValueError):
    """An image name that does not match :data:`NAME_RE`."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"invalid image name {name!r}: use 1 to 63 characters from a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit"
        )
        self.name = name


class ImageNotFound(ImageError, LookupError):
    """No complete image of that name in the store."""

    def __init__(self, name: str, root: Path | None = None) -> None:
        where = f" in {root}" if root is not None else ""
        super().__init__(f"image {name!r} not found{where}; build it with `stockade image build`")
        self.name = name

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0])


class ImageExists(ImageError, FileExistsError):
    """An image of that name already exists and replacing it was not asked for."""


class ImageInUse(ImageError):
    """Something is mounted inside the image directory, so it cannot be removed or replaced."""


class CorruptImage(ImageError):
    """The image directory exists but its ``image.json`` or ``rootfs/`` is unusable."""


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid image name, else raise :class:`InvalidImageName`."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidImageName(str(name))
    return name


@dataclass(frozen=True)
class ImageInfo:
    """An image's metadata, as stored in its ``image.json``."""

    name: str
    created: datetime
    source: str
    packages: tuple[str, ...]
    size_bytes: int
    files: int
    python: str | None
    path: Path
    #: The image below this one: its rootfs holds only the changes (overlay whiteouts
    #: included) over the parent's layers. None for a self-contained image.
    parent: str | None = None
    #: The tenant that made it (Dockerfile builds, imports); None: every tenant may use it.
    owner: str | None = None
    #: What a process started in a sandbox of this image gets by default: ``env`` (a dict),
    #: ``workdir`` and ``user`` (Dockerfile ENV/WORKDIR/USER, an imported image's config).
    config: dict[str, Any] | None = None
    #: A build-cache layer (one Dockerfile step), not a template of its own.
    hidden: bool = False

    @property
    def rootfs(self) -> Path:
        """The read-only lower layer (host ids as built)."""
        return self.path / ROOTFS

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in ``image.json`` (and suitable for an API response)."""
        return {
            "version": SCHEMA_VERSION,
            "name": self.name,
            "created": self.created.isoformat(),
            "source": self.source,
            "packages": list(self.packages),
            "size_bytes": self.size_bytes,
            "files": self.files,
            "python": self.python,
            **({"parent": self.parent} if self.parent else {}),
            **({"owner": self.owner} if self.owner else {}),
            **({"config": self.config} if self.config else {}),
            **({"hidden": True} if self.hidden else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> ImageInfo:
        """Parse an ``image.json`` object; raises ``KeyError``/``TypeError``/``ValueError`` if bad."""
        created = datetime.fromisoformat(data["created"])
        return cls(
            name=validate_name(data["name"]),
            created=created if created.tzinfo else created.replace(tzinfo=UTC),
            source=str(data["source"]),
            packages=tuple(str(p) for p in data.get("packages", ())),
            size_bytes=int(data["size_bytes"]),
            files=int(data["files"]),
            python=None if data.get("python") is None else str(data["python"]),
            path=path,
            parent=None if data.get("parent") is None else validate_name(data["parent"]),
            owner=None if data.get("owner") is None else str(data["owner"]),
            config=_config(data.get("config")),
            hidden=bool(data.get("hidden", False)),
        )


class Staging(NamedTuple):
    """A private directory to assemble a new image in, and the build lock's fd."""

    path: Path
    lock_fd: int


class ImageStore:
    """The images under ``root`` (``<data_dir>/images``); safe to use from several processes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        #: name -> (identity of its image.json, what it said): ``get`` is on every process
        #: start's path, and a stat is cheaper than reading and parsing the file again.
        self._read: dict[str, tuple[tuple[int, int, int], ImageInfo]] = {}

    def _dir(self, name: str) -> Path:
        return self.root / validate_name(name)

    # -- reading -------------------------------------------------------------------------------

    def list(self) -> list[ImageInfo]:
        """All complete images, sorted by name; unreadable ones are logged and left out."""
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        images = []
        for name in names:
            if not NAME_RE.fullmatch(name) or not (self.root / name / IMAGE_JSON).is_file():
                continue
            try:
                images.append(self.get(name))
            except ImageError as e:
                log.warning("skipping image %s: %s", name, e)
        return images

    def get(self, name: str) -> ImageInfo:
        """The image ``name``; raises :class:`ImageNotFound` or :class:`CorruptImage`."""
        path = self._dir(name)
        try:
            with open(path / IMAGE_JSON, encoding="utf-8") as f:
                st = os.fstat(f.fileno())
                identity = (st.st_ino, st.st_mtime_ns, st.st_size)
                if (cached := self._read.get(name)) and cached[0] == identity:
                    return cached[1]
                data = json.load(f)
        except (FileNotFoundError, NotADirectoryError):
            raise ImageNotFound(name, self.root) from None
        except (OSError, ValueError) as e:
            raise CorruptImage(f"image {name!r}: cannot read {IMAGE_JSON}: {e}") from e
        try:
            info = ImageInfo.from_json(data, path)
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptImage(f"image {name!r}: bad {IMAGE_JSON}: {e!r}") from e
        if info.name != name:
            raise CorruptImage(f"image {name!r}: {IMAGE_JSON} names {info.name!r}")
        self._read[name] = (identity, info)
        return info

    def exists(self, name: str) -> bool:
        """Whether a complete image ``name`` exists (raises :class:`InvalidImageName`)."""
        return (self._dir(name) / IMAGE_JSON).is_file()

    def layers(self, name: str, uid_base: int | None = None) -> builtins.list[Path]:
        """The read-only layers of image ``name``, topmost first (its own rootfs, then its
        parent's, ...): an overlay's ``lowerdir``. With ``uid_base``, the id-mapped copies."""
        found: list[Path] = []
        current: str | None = name
        while current is not None:
            if len(found) > 32:
                raise CorruptImage(f"image {name!r}: parent chain too long (a cycle?)")
            found.append(self.idmapped_rootfs(current, uid_base) if uid_base else self.rootfs(current))
            current = self.get(current).parent
        return found

    def children(self, name: str) -> builtins.list[str]:
        """Images whose parent is ``name``."""
        return [i.name for i in self.list() if i.parent == name]

    def rootfs(self, name: str) -> Path:
        """The rootfs directory of image ``name`` (host ids, treat as read-only)."""
        path = self.get(name).rootfs
        if not path.is_dir():
            raise CorruptImage(f"image {name!r} has no {ROOTFS}/ directory")
        return path

    # -- removing ------------------------------------------------------------------------------

    def remove(self, name: str) -> None:
        """Delete image ``name``: renamed away atomically under its lock, then deleted.

        Raises :class:`ImageNotFound`, or :class:`ImageInUse` if anything is mounted inside it.
        Sandboxes must not be using the image (or its id-mapped copies) when it is removed.
        """
        path = self._dir(name)
        if not path.is_dir():
            raise ImageNotFound(name, self.root)
        if users := self.children(name):
            raise ImageInUse(f"image {name!r} is the parent of {', '.join(users)}; remove those first")
        trash = self.root / f"{_TRASH}{name}-{host.random_suffix()}"
        try:
            with host.flocked(path / _LOCK):
                self._check_unmounted(name, path)
                os.rename(path, trash)
        except (FileNotFoundError, NotADirectoryError):
            raise ImageNotFound(name, self.root) from None
        self._sweep_trash()

    def _check_unmounted(self, name: str, path: Path) -> None:
        points = host.mounts_under(path)
        if points:
            raise ImageInUse(f"image {name!r} is in use: mounted at {', '.join(map(str, points))}")

    def sweep(self) -> None:
        """Delete what interrupted removals left and the replaced trees nothing uses now."""
        self._sweep_trash()

    def _sweep_trash(self) -> None:
        self._sweep_retired()
        for entry in _listdir(self.root):
            if entry.startswith(_TRASH):
                try:
                    host.safe_rmtree(self.root / entry)
                except OSError as e:
                    log.warning("cannot delete %s: %s", self.root / entry, e)

    def _sweep_retired(self) -> None:
        """Delete the replaced trees of images that no mount uses any more: a running
        sandbox's overlay names ``<root>/<name>/...`` (the old tree, renamed since, or the new
        one: either keeps the old tree), so it is deleted only once none names the image."""
        for entry in _listdir(self.root):
            name = entry[len(_RETIRED) :].rpartition("-")[0] if entry.startswith(_RETIRED) else ""
            if not NAME_RE.fullmatch(name) or host.mounts_using(self.root / name):
                continue
            trash = self.root / f"{_TRASH}{name}-{host.random_suffix()}"
            try:
                os.rename(self.root / entry, trash)
            except FileNotFoundError:  # swept by another process just now
                continue
            except OSError as e:
                log.warning("cannot delete %s: %s", self.root / entry, e)
                continue
            log.info("deleting %s (image %r was replaced and nothing uses it now)", entry, name)

    # -- id-mapped copies ----------------------------------------------------------------------

    def idmapped_rootfs(self, name: str, uid_base: int, size: int = 65536) -> Path:
        """``root/<name>/rootfs-idmap-<uid_base>/``: the rootfs with ids shifted by ``uid_base``.

        Made on first use (about as long as copying the rootfs) under the image's lock, in a
        temporary directory renamed into place; leftovers of interrupted copies are removed.
        Raises :class:`ImageNotFound`, ``ValueError`` for a bad range, or
        :class:`~stockade.images.idmap.IdOutOfRange` if a file's id is ``>= size``.
        """
        idmap.check_range(uid_base, size)
        path = self._dir(name)
        target = path / f"{_IDMAP}{uid_base}"
        try:
            if target.is_dir():
                with host.flocked(path / _LOCK, blocking=False) as fd:
                    if fd is not None:
                        self._sweep_tmp(path)
                return target
            rootfs = self.rootfs(name)
            with host.flocked(path / _LOCK):
                self._sweep_tmp(path)
                if target.is_dir():
                    return target
                tmp = path / f"{_TMP}{host.random_suffix()}"
                try:
                    started = time.monotonic()
                    stats = idmap.shift_copy(rootfs, tmp, uid_base, size)
                    copied = time.monotonic()
                    host.syncfs(tmp)
                    os.rename(tmp, target)
                except BaseException:
                    host.safe_rmtree(tmp)
                    raise
                log.info(
                    "made %s: %d entries, %d bytes, copied in %.1f s, synced in %.1f s",
                    target, stats.entries, stats.bytes, copied - started, time.monotonic() - copied,
                )  # fmt: skip
                return target
        except (FileNotFoundError, NotADirectoryError) as e:
            if not self.exists(name):
                raise ImageNotFound(name, self.root) from None
            raise CorruptImage(f"image {name!r}: {e}") from e

    def _sweep_tmp(self, path: Path) -> None:
        for entry in _listdir(path):
            if entry.startswith(_TMP):
                host.safe_rmtree(path / entry)

    # -- building (used by build.py) -----------------------------------------------------------

    @contextmanager
    def staging(self, name: str) -> Iterator[Staging]:
        """Hold the build lock of ``name`` and give a new, empty, private directory to build in.

        Stale build directories of ``name`` (interrupted builds) are deleted first. The staging
        directory is deleted on exit unless :meth:`install` moved it into place.
        """
        validate_name(name)
        self.root.mkdir(parents=True, exist_ok=True)
        with host.flocked(self.root / f"{_BUILD}{name}.lock") as fd:
            assert fd is not None
            prefix = f"{_BUILD}{name}-"
            for entry in _listdir(self.root):
                suffix = entry[len(prefix) :] if entry.startswith(prefix) else ""
                if re.fullmatch(r"[0-9a-f]{12}", suffix):
                    log.info("removing leftover of an interrupted build: %s", self.root / entry)
                    host.safe_rmtree(self.root / entry, unmount=True)
            self._sweep_trash()
            path = self.root / f"{prefix}{host.random_suffix()}"
            path.mkdir(mode=0o755)
            try:
                yield Staging(path, fd)
            finally:
                host.safe_rmtree(path, unmount=True)

    def install(
        self,
        name: str,
        staging: Staging,
        *,
        source: str,
        packages: Sequence[str] = (),
        replace: bool = False,
        parent: str | None = None,
        owner: str | None = None,
        config: dict[str, Any] | None = None,
        hidden: bool = False,
    ) -> ImageInfo:
        """Write ``image.json`` for ``staging.path/rootfs`` and move it into place as ``name``.

        An existing image is swapped out atomically if ``replace`` (raising :class:`ImageInUse`
        if something is mounted inside it), else :class:`ImageExists` is raised. The old tree is
        kept as ``.retired-<name>-<hex>`` while sandboxes' overlays use the image, and deleted by
        a later build or removal once none does. Without ``config``, the parent's is kept.
        """
        rootfs = staging.path / ROOTFS
        size, files = host.tree_stats(rootfs)
        python = next((p for p in _PYTHON_CANDIDATES if _is_executable(rootfs, p)), None)
        if parent is not None and (python is None or config is None):
            above = self.get(parent)
            python = python or above.python
            config = above.config if config is None else config
        info = ImageInfo(
            name=validate_name(name),
            created=datetime.now(UTC).replace(microsecond=0),
            source=source,
            packages=tuple(packages),
            size_bytes=size,
            files=files,
            python=python,
            path=self._dir(name),
            parent=parent,
            owner=owner,
            config=config or None,
            hidden=hidden,
        )
        if replace:
            self._copy_idmaps(name, rootfs)
        with open(staging.path / IMAGE_JSON, "w", encoding="utf-8") as f:
            json.dump(info.to_json(), f, indent=2)
            f.write("\n")
        host.syncfs(staging.path)
        path = self._dir(name)
        try:
            os.rename(staging.path, path)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            if not replace:
                raise ImageExists(f"image {name!r} already exists") from None
            with host.flocked(path / _LOCK):
                self._check_unmounted(name, path)
                host.exchange(staging.path, path)
                # The old tree may be a running sandbox's lower layer: kept aside, not deleted,
                # until no mount uses the image (deleting it would pull files from under them).
                os.rename(staging.path, self.root / f"{_RETIRED}{name}-{host.random_suffix()}")
            self._sweep_trash()
        return info

    def _copy_idmaps(self, name: str, rootfs: Path) -> None:
        """Give the new tree of ``name`` the id-mapped copies the old one has: an engine that
        saw ``<name>/rootfs-idmap-<base>`` before the swap mounts it after, and finds it."""
        for entry in _listdir(self._dir(name)):
            if (found := re.fullmatch(rf"{_IDMAP}(\d+)", entry)) is None:
                continue
            tmp = rootfs.parent / f"{_TMP}{host.random_suffix()}"
            try:
                idmap.shift_copy(rootfs, tmp, int(found.group(1)))
            except idmap.IdOutOfRange:  # made (and refused) at first use, as for a new image
                host.safe_rmtree(tmp)
                continue
            os.rename(tmp, rootfs.parent / entry)


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _config(data: Any) -> dict[str, Any] | None:
    """A checked ``config`` object: ``env`` (str -> str), ``workdir`` and ``user`` (str)."""
    if data is None:
        return None
    env = data.get("env") or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise TypeError("config.env must map strings to strings")
    for key in ("workdir", "user"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise TypeError(f"config.{key} must be a string")
    return {"env": dict(env), "workdir": data.get("workdir"), "user": data.get("user")}


def _is_executable(rootfs: Path, path: str) -> bool:
    resolved = host.resolve_in_root(rootfs, path)
    return resolved is not None and resolved.is_file() and os.access(resolved, os.X_OK)
