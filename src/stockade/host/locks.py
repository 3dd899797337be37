"""The one file-lock helper: ``flock`` held by a context manager, blocking, polled with a
timeout (async), shared or exclusive; and who holds one."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path


@contextlib.contextmanager
def flocked(path: Path, *, shared: bool = False, blocking: bool = True) -> Iterator[int | None]:
    """Hold an exclusive (or ``shared``) ``flock`` on ``path`` (created if missing); yield its fd.

    The lock is verified to still be the file at ``path`` after it is acquired (the directory
    holding it may have been renamed away meanwhile), retrying otherwise. With ``blocking=False``
    yields ``None`` instead of waiting when someone else holds the lock. Raises
    ``FileNotFoundError`` when the directory holding ``path`` no longer exists.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, _mode(shared) | (0 if blocking else fcntl.LOCK_NB))
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


def _mode(shared: bool) -> int:
    return fcntl.LOCK_SH if shared else fcntl.LOCK_EX


async def acquire(path: Path, *, shared: bool = False, timeout: float | None = None) -> int | None:
    """An fd holding a ``flock`` on ``path`` (created if missing), polled without blocking the
    event loop; None after ``timeout`` seconds (None: wait for ever). The caller closes it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, _mode(shared) | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if deadline is not None and time.monotonic() > deadline:
                os.close(fd)
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        except BaseException:
            os.close(fd)
            raise


@contextlib.asynccontextmanager
async def flocked_async(path: Path, *, shared: bool = False) -> AsyncIterator[None]:
    """Hold a ``flock`` on ``path`` for the block, waiting for it without blocking the loop."""
    fd = await acquire(path, shared=shared)
    assert fd is not None  # no timeout
    try:
        yield
    finally:
        os.close(fd)


def lock_holders(path: Path) -> str:
    """Who holds a ``flock`` on ``path``, as ``pid N (command)`` (from ``/proc/locks``)."""
    try:
        st = path.stat()
        locks = Path("/proc/locks").read_text()
    except OSError:
        return ""
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = []
    for line in locks.splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == inode:
            pid = fields[4]
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                command = b"?"
            holders.append(f"pid {pid} ({command.decode(errors='replace').strip()[:120]})")
    return ", ".join(holders)
