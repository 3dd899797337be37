"""Files as root on the host: deletion that never crosses a mount, ownership shifted out of a
sandbox's uid range, atomic swaps, flushes, and paths resolved inside a root."""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from ._libc import libc
from .mounts import mounts_under


def random_suffix() -> str:
    """Twelve random hex digits, for temporary directory names."""
    return secrets.token_hex(6)


def _ignore_missing(func: object, path: str, exc: BaseException) -> None:
    if not isinstance(exc, FileNotFoundError):
        raise exc


def safe_rmtree(path: Path, *, unmount: bool = False) -> None:
    """Delete ``path`` recursively, never descending into a mount.

    With ``unmount=True`` mounts left below ``path`` (say by a killed build) are lazily detached
    first; otherwise, or if that fails, ``OSError(EBUSY)`` is raised and nothing is deleted.
    Entries that vanish meanwhile (a concurrent deletion) are ignored.
    """
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
        return
    points = mounts_under(path)
    if points and unmount:
        for point in points:  # deepest first
            subprocess.run(["umount", "--lazy", str(point)], check=False, capture_output=True)
        points = mounts_under(path)
    if points:
        below = ", ".join(map(str, points))
        raise OSError(errno.EBUSY, f"refusing to delete {path}: mounts below it: {below}")
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=_ignore_missing)
    else:
        shutil.rmtree(path, onerror=lambda f, p, info: _ignore_missing(f, p, info[1]))


def tree_stats(root: Path) -> tuple[int, int]:
    """Return ``(size_bytes, entries)`` of a tree without following symlinks.

    ``size_bytes`` is the apparent size of regular files (hard links counted once) and symlinks;
    ``entries`` counts every file, directory and symlink below ``root``.
    """
    size = entries = 0
    seen: set[tuple[int, int]] = set()
    stack = [os.fspath(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                entries += 1
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                elif stat.S_ISREG(st.st_mode):
                    if st.st_nlink > 1:
                        key = (st.st_dev, st.st_ino)
                        if key in seen:
                            continue
                        seen.add(key)
                    size += st.st_size
                elif stat.S_ISLNK(st.st_mode):
                    size += st.st_size
    return size, entries


def syncfs(path: Path) -> None:
    """Flush the filesystem holding ``path`` to disk (``syncfs(2)``, ``sync`` as a fallback)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> None:
    """Atomically swap two paths on one filesystem (``renameat2(RENAME_EXCHANGE)``)."""
    at_fdcwd = -100
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fspath(a), None, os.fspath(b))


def resolve_in_root(root: Path, path: str, *, _hops: int = 40) -> Path | None:
    """Resolve absolute ``path`` as if ``root`` were ``/`` (symlinks stay inside); None if missing."""
    current = Path(root)
    parts = [p for p in path.split("/") if p not in ("", ".")]
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent if current != Path(root) else current
            continue
        candidate = current / part
        if candidate.is_symlink():
            _hops -= 1
            if _hops < 0:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = Path(root)
            parts[:0] = [p for p in target.split("/") if p not in ("", ".")]
            continue
        if not os.path.lexists(candidate):
            return None
        current = candidate
    return current


def unshift_owners(tree: Path, uid_base: int) -> None:
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
