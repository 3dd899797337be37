"""Small filesystem helpers for the image store: locks, safe deletion, tree statistics."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def random_suffix() -> str:
    """Twelve random hex digits, for temporary directory names."""
    return secrets.token_hex(6)


@contextmanager
def flocked(path: Path, *, blocking: bool = True) -> Iterator[int | None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing); yield its fd.

    The lock is verified to still be the file at ``path`` after it is acquired (the directory
    holding it may have been renamed away meanwhile), retrying otherwise. With ``blocking=False``
    yields ``None`` instead of waiting when someone else holds the lock. Raises
    ``FileNotFoundError`` when the directory holding ``path`` no longer exists.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                yield None
                return
            held = os.fstat(fd)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
        except BaseException:
            os.close(fd)
            raise
        if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)
    try:
        yield fd
    finally:
        os.close(fd)


_ESCAPE = re.compile(r"\\([0-7]{3})")


def mounts_under(path: Path) -> list[str]:
    """Mount points (in this mount namespace) at or below ``path``."""
    real = os.path.realpath(path)
    prefix = real.rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            point = _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == real or point.startswith(prefix):
                found.append(point)
    return found


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
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
        points = mounts_under(path)
    if points:
        raise OSError(errno.EBUSY, f"refusing to delete {path}: mounts below it: {', '.join(points)}")
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


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def syncfs(path: Path) -> None:
    """Flush the filesystem holding ``path`` to disk (``syncfs(2)``, ``sync`` as a fallback)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> None:
    """Atomically swap two paths on one filesystem (``renameat2(RENAME_EXCHANGE)``)."""
    at_fdcwd = -100
    if _libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) != 0:
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
