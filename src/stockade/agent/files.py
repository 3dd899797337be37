"""Files inside the sandbox, with the permissions of the user who asks (agent side).

Every operation runs in its own thread, switched to the requesting user's identity (see
credentials.py), so a request as ``user`` can touch exactly what ``user`` could, and new files
belong to them.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import queue
import stat

from . import protocol as p
from .connection import AgentError, Stream
from .credentials import switched
from .processes import resolve_user

TYPE_CHECKING = False
if TYPE_CHECKING:  # for mypy only: see "Start-up" in __init__.py
    from typing import Any, Iterator

TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink"}


@contextlib.contextmanager
def as_user(params: dict[str, Any]) -> Iterator[pwd.struct_passwd]:
    """Act as ``params['user']`` (default ``user``) in the current thread only."""
    user = resolve_user(params.get("user"))
    try:
        with switched(user.pw_uid, user.pw_gid):
            yield user
    except PermissionError as exc:
        if exc.filename is None and "switch identity" in str(exc):
            raise AgentError(p.ErrorCode.INTERNAL, str(exc)) from None
        raise


def _path(params: dict[str, Any], key: str = "path", user: pwd.struct_passwd | None = None) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value or "\x00" in value:
        raise AgentError(p.ErrorCode.BAD_REQUEST, f"'{key}' must be a non-empty path")
    if not value.startswith("/"):
        value = os.path.join(user.pw_dir if user else "/", value)
    return os.path.normpath(value)


def _name(table: Any, ident: int) -> str:
    try:
        return str(table(ident)[0])
    except KeyError:
        return str(ident)


def entry(path: str) -> dict[str, Any]:
    """Describe ``path`` without following a final symlink."""
    st = os.lstat(path)
    kind = TYPES.get(stat.S_IFMT(st.st_mode), "other")
    return {
        "name": os.path.basename(path) or "/",
        "path": path,
        "type": kind,
        "size": st.st_size,
        "mode": stat.S_IMODE(st.st_mode),
        "permissions": stat.filemode(st.st_mode),
        "owner": _name(pwd.getpwuid, st.st_uid),
        "group": _name(grp.getgrgid, st.st_gid),
        "modified_time": st.st_mtime,
        "symlink_target": os.readlink(path) if kind == "symlink" else None,
    }


def stat_path(stream: Stream, params: dict[str, Any]) -> dict[str, Any]:
    """fs.stat"""
    with as_user(params) as user:
        return entry(_path(params, user=user))


def list_dir(stream: Stream, params: dict[str, Any]) -> list[dict[str, Any]]:
    """fs.list: entries under a directory, down to ``depth`` levels (default 1)."""
    depth = int(params.get("depth", 1))
    if depth < 1:
        raise AgentError(p.ErrorCode.BAD_REQUEST, "'depth' must be at least 1")
    with as_user(params) as user:
        root = _path(params, user=user)
        if not os.path.isdir(root):
            raise AgentError(
                p.ErrorCode.NOT_A_DIRECTORY if os.path.exists(root) else p.ErrorCode.NOT_FOUND,
                f"{root} is not a directory",
            )
        found: list[dict[str, Any]] = []
        pending = [(root, 1)]
        while pending:
            directory, level = pending.pop()
            with os.scandir(directory) as it:
                for item in sorted(it, key=lambda e: e.name):
                    found.append(entry(item.path))
                    if level < depth and item.is_dir(follow_symlinks=False):
                        pending.append((item.path, level + 1))
        return found


def make_dir(stream: Stream, params: dict[str, Any]) -> dict[str, Any]:
    """fs.mkdir: create a directory and its parents; report whether it was created."""
    with as_user(params) as user:
        path = _path(params, user=user)
        if os.path.isdir(path):
            return {"created": False, "entry": entry(path)}
        os.makedirs(path, exist_ok=False)
        return {"created": True, "entry": entry(path)}


def remove(stream: Stream, params: dict[str, Any]) -> None:
    """fs.remove: remove a file, a link, or a directory with everything in it."""
    with as_user(params) as user:
        path = _path(params, user=user)
        if path == "/":
            raise AgentError(p.ErrorCode.PERMISSION_DENIED, "refusing to remove /")
        if os.path.isdir(path) and not os.path.islink(path):
            import shutil  # here, not at start-up: with bz2, lzma and zlib it costs every start

            shutil.rmtree(path)
        else:
            os.unlink(path)


def rename(stream: Stream, params: dict[str, Any]) -> dict[str, Any]:
    """fs.rename: move ``src`` to ``dst``."""
    with as_user(params) as user:
        src, dst = _path(params, "src", user), _path(params, "dst", user)
        os.rename(src, dst)
        return entry(dst)


def read(stream: Stream, params: dict[str, Any]) -> dict[str, Any]:
    """fs.read: stream a file's bytes as DATA frames."""
    with as_user(params) as user:
        path = _path(params, user=user)
        if os.path.isdir(path):
            raise AgentError(p.ErrorCode.IS_A_DIRECTORY, f"{path} is a directory")
        size = 0
        with open(path, "rb") as f:
            while chunk := f.read(p.CHUNK * 4):
                if not stream.send_data(p.Channel.BODY, chunk):
                    raise AgentError(p.ErrorCode.CANCELLED, "read cancelled")
                size += len(chunk)
        return {"size": size}


def write(stream: Stream, params: dict[str, Any]) -> dict[str, Any]:
    """fs.write: replace a file with the DATA frames of this stream, atomically at CLOSE."""
    with as_user(params) as user:
        path = os.path.realpath(_path(params, user=user))
        parent = os.path.dirname(path)
        if os.path.isdir(path):
            raise AgentError(p.ErrorCode.IS_A_DIRECTORY, f"{path} is a directory")
        existing = parent
        while not os.path.isdir(existing):
            existing = os.path.dirname(existing)
        os.makedirs(parent, exist_ok=True)
        import tempfile  # here, not at start-up: with shutil and random it costs every start

        fd, tmp = tempfile.mkstemp(prefix=".stockade-", dir=parent)
        try:
            with os.fdopen(fd, "wb") as f:
                _receive_into(stream, f)
                f.flush()
                os.fsync(f.fileno())
            mode = params.get("mode")
            os.chmod(tmp, int(mode) if mode is not None else 0o644)
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _sync_dirs(parent, existing)
        return entry(path)


def _sync_dirs(innermost: str, outermost: str) -> None:
    """fsync ``innermost`` and each directory up to ``outermost``: an acknowledged write then
    survives the sandbox's sudden death (a microVM's guest page cache dies with QEMU)."""
    directory = innermost
    while True:
        with contextlib.suppress(OSError):
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if directory == outermost or directory == os.path.dirname(directory):
            return
        directory = os.path.dirname(directory)


def _receive_into(stream: Stream, f: Any) -> None:
    while True:
        try:
            kind, value = stream.inbox.get(timeout=120)
        except queue.Empty:
            raise AgentError(p.ErrorCode.CANCELLED, "upload stalled for 120 s") from None
        if kind == "data":
            f.write(value)
            stream.consumed(len(value))
        elif kind == "close":
            return
        else:
            raise AgentError(p.ErrorCode.CANCELLED, "upload cancelled")


HANDLERS = {
    p.Method.FS_STAT.value: stat_path,
    p.Method.FS_LIST.value: list_dir,
    p.Method.FS_MKDIR.value: make_dir,
    p.Method.FS_REMOVE.value: remove,
    p.Method.FS_RENAME.value: rename,
    p.Method.FS_READ.value: read,
    p.Method.FS_WRITE.value: write,
}
