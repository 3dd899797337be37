"""fs.watch: a directory's changes, as the requesting user may see them (agent side, inotify).

The stream's first event is ``{"type": "start"}``; then one event per change, ``{"type":
"create"|"write"|"remove"|"rename"|"chmod", "name": <path relative to the watched directory>}``,
and ``{"type": "keepalive"}`` on silence. A recursive watch follows directories created later.
The agent's own atomic writes (a ``.stockade-`` temporary file renamed over the target) show as
one ``write`` of the target. The watch ends when the host cancels the stream.
"""

from __future__ import annotations

import ctypes
import errno
import os
import queue
import select
import struct

from . import protocol as p
from .connection import AgentError, Stream
from .files import _path, as_user

TYPE_CHECKING = False
if TYPE_CHECKING:  # for mypy only: see "Start-up" in __init__.py
    from typing import Any

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_IGNORED, IN_ISDIR, IN_Q_OVERFLOW = 0x400, 0x8000, 0x40000000, 0x4000
IN_NONBLOCK, IN_CLOEXEC, IN_ONLYDIR = 0o4000, 0o2000000, 0x1000000
MASK = IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
HEADER = struct.Struct("iIII")
TEMP_PREFIX = ".stockade-"  # files.write's temporary files
#: Directories one watch may follow (inotify watches are a per-user kernel resource).
MAX_DIRECTORIES = 8192

#: The C library, as linked into python3 (``find_library`` would run ``ldconfig -p`` at every
#: start).
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


class Watch:
    """One inotify instance over a directory (and, if recursive, every directory below)."""

    def __init__(self, root: str, recursive: bool) -> None:
        self.root = root
        self.recursive = recursive
        self.fd = _check(_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")
        self.dirs: dict[int, str] = {}
        self.moved: dict[int, str] = {}  # cookie -> name moved away (pairs renames)
        try:
            self.add(root)
        except BaseException:
            os.close(self.fd)
            raise

    def add(self, directory: str) -> None:
        """Watch ``directory`` (and, if recursive, what is below it)."""
        pending = [directory]
        while pending:
            current = pending.pop()
            if len(self.dirs) >= MAX_DIRECTORIES:
                raise AgentError(
                    p.ErrorCode.TOO_LARGE,
                    f"more than {MAX_DIRECTORIES} directories to watch under {self.root}",
                )
            try:
                wd = _check(_libc.inotify_add_watch(self.fd, current.encode(), MASK | IN_ONLYDIR), current)
            except OSError as exc:
                if current == self.root or exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                    raise
                continue  # gone again already
            self.dirs[wd] = current
            if self.recursive:
                with os.scandir(current) as entries:
                    pending += [e.path for e in entries if e.is_dir(follow_symlinks=False)]

    def events(self) -> list[dict[str, Any]]:
        """The changes readable now, as stream events."""
        try:
            buffer = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        found: list[dict[str, Any]] = []
        offset = 0
        while offset + HEADER.size <= len(buffer):
            wd, mask, cookie, length = HEADER.unpack_from(buffer, offset)
            raw = buffer[offset + HEADER.size : offset + HEADER.size + length]
            offset += HEADER.size + length
            name = raw.split(b"\0", 1)[0].decode(errors="surrogateescape")
            found += self._translate(wd, mask, cookie, name)
        return found

    def _translate(self, wd: int, mask: int, cookie: int, name: str) -> list[dict[str, Any]]:
        if mask & IN_IGNORED:
            self.dirs.pop(wd, None)
            return []
        if mask & IN_Q_OVERFLOW:
            return [{"type": "overflow", "name": ""}]
        directory = self.dirs.get(wd)
        if directory is None or not name:
            return []
        path = os.path.join(directory, name)
        rel = os.path.relpath(path, self.root)
        if mask & IN_MOVED_FROM:
            self.moved[cookie] = name
            return [] if name.startswith(TEMP_PREFIX) else [{"type": "rename", "name": rel}]
        if name.startswith(TEMP_PREFIX):
            return []
        if mask & IN_MOVED_TO:
            origin = self.moved.pop(cookie, "")
            kind = "write" if origin.startswith(TEMP_PREFIX) else "create"
        elif mask & IN_CREATE:
            kind = "create"
        elif mask & IN_MODIFY:
            kind = "write"
        elif mask & IN_DELETE:
            kind = "remove"
        elif mask & IN_ATTRIB:
            kind = "chmod"
        else:
            return []
        if self.recursive and mask & IN_ISDIR and kind == "create":
            self.add(path)
        return [{"type": kind, "name": rel}]

    def close(self) -> None:
        os.close(self.fd)


def watch(stream: Stream, params: dict[str, Any]) -> None:
    """fs.watch: stream the changes under ``path`` until the host cancels."""
    keepalive = float(params.get("keepalive", p.KEEPALIVE_SECONDS))
    with as_user(params) as user:
        root = _path(params, user=user)
        if not os.path.isdir(root):
            raise AgentError(
                p.ErrorCode.NOT_A_DIRECTORY if os.path.exists(root) else p.ErrorCode.NOT_FOUND,
                f"{root} is not a directory",
            )
        watcher = Watch(root, bool(params.get("recursive")))
        try:
            stream.send_event({"type": "start", "path": root})
            silent = 0.0
            while True:
                if stream.ended or stream.conn.closed:
                    raise AgentError(p.ErrorCode.CANCELLED, "watch stopped: the host went away")
                try:
                    kind, _ = stream.inbox.get_nowait()
                    if kind in ("cancel", "close"):
                        raise AgentError(p.ErrorCode.CANCELLED, "watch stopped")
                except queue.Empty:
                    pass
                ready, _, _ = select.select([watcher.fd], [], [], 0.25)
                if not ready:
                    silent += 0.25
                    if silent >= keepalive:
                        stream.send_event({"type": "keepalive"})
                        silent = 0.0
                    continue
                silent = 0.0
                for event in watcher.events():
                    stream.send_event(event)
        finally:
            watcher.close()


HANDLERS = {p.Method.FS_WATCH.value: watch}
