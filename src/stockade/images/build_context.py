"""A Dockerfile build's context: unpacking the uploaded tar, and packing what one COPY copies.

The context arrives as an (untrusted) tar. It is unpacked into a private directory with the
standard library's "data" filter (no absolute or climbing paths, no devices, no set-id bits, no
link that leads a later member out of the directory); symbolic links are kept whatever they point
at, since only COPY reads them and COPY refuses any source whose real path leaves the context.
Links *inside* a copied directory are copied as links, as Docker does.
"""

from __future__ import annotations

import glob
import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .dockerfile import context_path

#: The most a context may unpack to.
MAX_CONTEXT_BYTES = 4 << 30


class ContextError(ValueError):
    """The context (or a COPY source in it) cannot be used; the message says why."""


def _keep_links(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    if member.issym():  # check where the link itself lands; its target is COPY's business
        checked = tarfile.data_filter(member.replace(linkname=".", deep=False), dest)
        return checked.replace(linkname=member.linkname, deep=False)
    return tarfile.data_filter(member, dest)


def unpack(archive: Path, dest: Path) -> None:
    """Unpack the context tar (any compression) into the empty directory ``dest``."""
    try:
        with tarfile.open(archive) as tar:
            total = 0
            for member in tar:
                total += member.size
                if total > MAX_CONTEXT_BYTES:
                    raise ContextError(
                        f"the build context unpacks to more than {MAX_CONTEXT_BYTES >> 20} MiB"
                    )
            tar.extractall(dest, filter=_keep_links)
    except (tarfile.TarError, EOFError) as exc:
        raise ContextError(f"the build context is not a valid tar archive: {exc}") from None


@dataclass(frozen=True)
class CopyPlan:
    """What one COPY sends: a tar (members relative to the destination), whether it is one
    file to be renamed to the destination, and the hash of everything copied (its cache key)."""

    archive: Path
    single_file: bool
    digest: str


def _resolve(context: Path, source: str) -> list[Path]:
    rel = context_path(source)
    if rel is None:
        raise ContextError(f"COPY source {source!r} is outside the build context")
    pattern = str(context / rel)
    found = sorted(Path(p) for p in glob.glob(pattern)) if glob.has_magic(rel) else [Path(pattern)]
    if not found or not os.path.lexists(found[0]):
        raise ContextError(f"COPY source {source!r} does not exist in the build context")
    root = context.resolve()
    for path in found:
        real = path.resolve()
        if real != root and root not in real.parents:
            raise ContextError(
                f"COPY source {source!r} leads out of the build context (through a symbolic link)"
            )
    return [p.resolve() for p in found]


def plan_copy(context: Path, sources: list[str], archive: Path | None) -> CopyPlan:
    """Pack ``sources`` into ``archive`` (files are copied by name, directories by content, as
    Docker does); with ``archive`` None, only hash them (``/dev/null`` gets the tar)."""
    digest = hashlib.sha256()
    paths = [p for s in sources for p in _resolve(context, s)]
    with tarfile.open(archive or os.devnull, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in paths:
            if path.is_dir():
                for root, dirs, files in os.walk(path):
                    dirs.sort()
                    for name in [*dirs, *sorted(files)]:
                        full = Path(root, name)
                        _add(tar, digest, full, str(full.relative_to(path)))
            else:
                _add(tar, digest, path, path.name)
    single = len(paths) == 1 and not paths[0].is_dir()
    return CopyPlan(archive or Path(os.devnull), single, digest.hexdigest())


def _add(tar: tarfile.TarFile, digest: Any, path: Path, name: str) -> None:
    st = path.lstat()
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = stat.S_IMODE(st.st_mode) & 0o1777, int(st.st_mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        tar.addfile(info)
        digest.update(f"L {name} {info.linkname}\n".encode())
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        digest.update(f"D {name} {info.mode:o}\n".encode())
    elif stat.S_ISREG(st.st_mode):
        content = hashlib.sha256()
        with open(path, "rb") as f:
            info.size = os.fstat(f.fileno()).st_size
            tar.addfile(info, _Hashing(f, content))
        digest.update(f"F {name} {info.mode:o} {content.hexdigest()}\n".encode())
    else:
        raise ContextError(f"cannot COPY {name!r}: only files, directories and symbolic links can be copied")


class _Hashing:
    """A file object that hashes what is read from it (so each file is read once)."""

    def __init__(self, f: BinaryIO, digest: Any) -> None:
        self.f, self.digest = f, digest

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.digest.update(data)
        return data
