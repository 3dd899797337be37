"""Templates on storage every host can read: ``<shared>/templates/<name>/<version>/``.

A host that builds, imports or snapshots a template **publishes** it there (with the layers
below it that other hosts may lack: build-cache layers and other tenants' or shared copies,
not the operator's own templates such as ``base``, which every host installs); a host asked to
run a template it lacks **adopts** it into its own image store first. Each version directory is
an image of the store's format (``image.json`` and ``rootfs/``) with the manifest of what it
holds (:mod:`.manifest`), named after the time it was published; it is written beside the
others and renamed into place, so a reader sees a version whole or not at all (a publisher
killed mid-copy leaves only a hidden directory, never adopted), and an adopter checks its copy
against the manifest before using it (a version damaged on shared storage is refused). A copy
in a host's store carries that version in a ``.shared`` file, so the host can tell it from its
own templates and notice when the original was deleted or replaced
(:meth:`SharedTemplates.stale`).
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from .. import host
from . import manifest
from .store import IMAGE_JSON, ROOTFS, ImageError, ImageInfo, ImageStore, validate_name

#: In a host's image directory: the shared version it is a copy of.
MARKER = ".shared"
#: A publisher's unfinished copy older than this was left by a publisher that died: swept.
ABANDONED = 3600.0


def _version() -> str:
    """A new version's name: its time, then a random part (so they sort by age)."""
    return f"{time.time_ns():016x}-{host.random_suffix()}"


def _copy_tree(source: Path, target: Path) -> None:
    result = subprocess.run(
        ["cp", "-a", "--reflink=auto", str(source), str(target)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise ImageError(f"cannot copy {source} to {target}: {result.stderr.strip()}")


def _sweep_abandoned(folder: Path) -> None:
    """Delete the unfinished copies in ``folder`` that a publisher that died left behind."""
    for entry in os.listdir(folder):
        path = folder / entry
        try:
            if entry.endswith(".tmp") and time.time() - path.stat().st_mtime > ABANDONED:
                shutil.rmtree(path, ignore_errors=True)
        except FileNotFoundError:
            continue


def marker(store: ImageStore, name: str) -> str | None:
    """The shared version the host's copy of ``name`` was taken from (None: its own)."""
    try:
        return (store.root / name / MARKER).read_text().strip() or None
    except OSError:
        return None


class SharedTemplates:
    """The templates under ``root`` (``<shared>/templates``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def current(self, name: str) -> tuple[str, Path] | None:
        """The version of template ``name`` on shared storage and its directory, if any."""
        found = []
        try:
            entries = os.listdir(self.root / validate_name(name))
        except (FileNotFoundError, NotADirectoryError):
            return None
        for entry in entries:
            path = self.root / name / entry
            if not entry.startswith(".") and (path / IMAGE_JSON).is_file():
                found.append((entry, path))
        return max(found) if found else None

    def info(self, name: str) -> ImageInfo | None:
        """Template ``name`` as published (None if it is not)."""
        if (found := self.current(name)) is None:
            return None
        try:
            data = json.loads((found[1] / IMAGE_JSON).read_text())
            return ImageInfo.from_json(data, found[1])
        except (OSError, KeyError, TypeError, ValueError):
            return None

    def list(self) -> list[ImageInfo]:
        """Every published template and layer, by name."""
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        return [i for n in names if not n.startswith(".") and (i := self.info(n)) is not None]

    # -- publishing ---------------------------------------------------------------------------
    def _chain(self, store: ImageStore, name: str) -> builtins.list[ImageInfo]:
        """``name`` and the layers below it that other hosts may lack: up to (not including)
        the first of the operator's own templates (no owner, not hidden, not a shared copy)."""
        chain = [store.get(name)]
        while (parent := chain[-1].parent) is not None:
            info = store.get(parent)
            if info.owner is None and not info.hidden and marker(store, parent) is None:
                break
            chain.append(info)
        return chain

    def publish(self, store: ImageStore, name: str) -> str:
        """Copy template ``name`` (and the layers it needs) from ``store``; its version. A
        build-cache layer published already is kept (its name is a hash of what it holds)."""
        versions = [self._publish(store, info) for info in self._chain(store, name)]
        return versions[0]

    def _publish(self, store: ImageStore, info: ImageInfo) -> str:
        published = self.current(info.name)
        if published is not None and (info.hidden or published[0] == marker(store, info.name)):
            version = published[0]
        else:
            version = _version()
            folder = self.root / info.name
            folder.mkdir(parents=True, exist_ok=True)
            _sweep_abandoned(folder)
            staging = folder / f".{version}.tmp"
            staging.mkdir(mode=0o755)
            try:
                manifest.write(info.path, staging / manifest.MANIFEST)
                _copy_tree(info.rootfs, staging / ROOTFS)
                shutil.copyfile(info.path / IMAGE_JSON, staging / IMAGE_JSON)
                host.syncfs(staging)
                os.rename(staging, folder / version)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            for entry in os.listdir(folder):  # older versions (a rebuilt template's)
                if entry != version and not entry.startswith("."):
                    shutil.rmtree(folder / entry, ignore_errors=True)
        (info.path / MARKER).write_text(version)
        return version

    # -- adopting -----------------------------------------------------------------------------
    def needs(self, store: ImageStore, name: str) -> bool:
        """Whether ``store`` lacks the published ``name`` or has an outdated copy of it."""
        found = self.current(name)
        if found is None:
            return False
        if not store.exists(name):
            return True
        mine = marker(store, name)
        return mine is not None and mine != found[0]

    def adopt(self, store: ImageStore, name: str) -> bool:
        """Copy the published ``name`` (and the layers below it this host lacks) into
        ``store``, replacing an outdated copy; True if anything was copied. Two callers at
        once (threads or processes) copy once: the second finds the first's copy. A copy that
        differs from the published manifest is deleted and :class:`.manifest.DamagedCopy`
        raised."""
        if not self.needs(store, name):
            return False
        found = self.current(name)
        if found is None:
            return False
        version, source = found
        what = f"the copy of template {name!r} on shared storage (version {version})"
        try:
            info = ImageInfo.from_json(json.loads((source / IMAGE_JSON).read_text()), source)
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise manifest.DamagedCopy(
                f"{what} is damaged: its {IMAGE_JSON} is unreadable ({exc!r})"
            ) from None
        if info.parent is not None:
            self.adopt(store, info.parent)
            if not store.exists(info.parent):
                raise ImageError(
                    f"template {name!r} is built on {info.parent!r}, which neither this host "
                    f"nor shared storage has"
                )
        with store.staging(name) as staging:
            if store.exists(name):
                if marker(store, name) == version:
                    return False  # another caller copied it meanwhile
                store.remove(name)  # an outdated copy (ImageInUse while a sandbox uses it)
            _copy_tree(source / ROOTFS, staging.path / ROOTFS)
            shutil.copyfile(source / IMAGE_JSON, staging.path / IMAGE_JSON)
            manifest.check(staging.path, source / manifest.MANIFEST, what)
            (staging.path / MARKER).write_text(version)
            host.syncfs(staging.path)
            os.rename(staging.path, store.root / name)
        return True

    # -- removing -----------------------------------------------------------------------------
    def remove(self, name: str) -> None:
        """Remove template ``name`` and the published layers below it that no other
        published template needs."""
        folder = self.root / validate_name(name)
        if folder.is_dir():
            trash = self.root / f".trash-{name}-{host.random_suffix()}"
            os.rename(folder, trash)
            shutil.rmtree(trash, ignore_errors=True)
        while True:
            published = self.list()
            parents = {i.parent for i in published}
            unused = [i.name for i in published if i.hidden and i.name not in parents]
            if not unused:
                return
            for layer in unused:
                shutil.rmtree(self.root / layer, ignore_errors=True)

    def stale(self, store: ImageStore) -> builtins.list[str]:
        """The host's copies whose original was deleted or replaced since (children first)."""
        found = []
        for info in store.list():
            mine = marker(store, info.name)
            if mine is not None and (self.current(info.name) or ("",))[0] != mine:
                found.append(info)
        depth = {i.name: len(store.layers(i.name)) for i in found}
        return sorted(depth, key=lambda n: -depth[n])
