"""Copy a root filesystem with every uid and gid shifted, for a user-namespaced runtime.

runc maps uid 0 inside the sandbox to ``uid_base`` on the host, so the rootfs it sees must be
owned by ``uid_base + uid``. :func:`shift_copy` makes such a copy: modes, timestamps, symlinks
(never followed), hard links, FIFOs and extended attributes are kept; file capabilities are
rewritten to be owned by the shifted root; POSIX ACLs and device nodes are skipped with a warning.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_CAP_XATTR = "security.capability"
_ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")
_CAP_REVISION_MASK = 0xFF000000
_CAP_V2, _CAP_V3 = 0x02000000, 0x03000000
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change"


class IdOutOfRange(ValueError):
    """A file's uid or gid does not fit in the requested id range."""


@dataclass(frozen=True)
class CopyStats:
    """What :func:`shift_copy` did."""

    entries: int
    bytes: int
    hardlinks: int
    skipped: int


def check_range(uid_base: int, size: int) -> None:
    """Raise ``ValueError`` unless ``[uid_base, uid_base + size)`` is a usable host id range."""
    if uid_base < 1 or size < 1 or uid_base + size - 1 > _MAX_ID:
        raise ValueError(f"bad id range: uid_base={uid_base} size={size} (need uid_base >= 1, size >= 1)")


def shift_copy(src: Path, dst: Path, uid_base: int, size: int = 65536) -> CopyStats:
    """Copy the tree ``src`` to ``dst`` (which must not exist) with ids shifted by ``uid_base``.

    Raises :class:`IdOutOfRange` if a file is owned by an id ``>= size``. ``dst`` is left
    half-built on error; the caller builds into a temporary directory and renames it.
    """
    check_range(uid_base, size)
    return _Shifter(uid_base, size).copy_tree(os.fspath(src), os.fspath(dst))


class _Shifter:
    def __init__(self, uid_base: int, size: int) -> None:
        self.uid_base, self.size = uid_base, size
        self.entries = self.bytes = self.hardlinks = self.skipped = 0
        self.links: dict[tuple[int, int], str] = {}

    def copy_tree(self, src: str, dst: str) -> CopyStats:
        os.mkdir(dst, 0o700)
        dirs = [(src, dst, os.lstat(src))]
        stack = [(src, dst)]
        while stack:
            sdir, ddir = stack.pop()
            with os.scandir(sdir) as it:
                for entry in it:
                    st = entry.stat(follow_symlinks=False)
                    d = os.path.join(ddir, entry.name)
                    self.entries += 1
                    if stat.S_ISDIR(st.st_mode):
                        os.mkdir(d, 0o700)
                        dirs.append((entry.path, d, st))
                        stack.append((entry.path, d))
                    else:
                        self.copy_entry(entry.path, d, st)
        # Directories last, deepest first, so their mtimes survive the creation of their children.
        for s, d, st in reversed(dirs):
            self.set_meta(d, s, st, xattrs_from=s)
        return CopyStats(self.entries, self.bytes, self.hardlinks, self.skipped)

    def copy_entry(self, s: str, d: str, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.links:
                os.link(self.links[key], d)
                self.hardlinks += 1
                return
            self.copy_file(s, d, st)
            if st.st_nlink > 1:
                self.links[key] = d
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(s), d)
            os.lchown(d, self.shift(st.st_uid, s), self.shift(st.st_gid, s))
            os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(d, 0o600)
            self.set_meta(d, s, st)
        elif stat.S_ISCHR(mode) and st.st_rdev == 0:  # an overlay whiteout (snapshot layers)
            os.mknod(d, stat.S_IFCHR | 0o600, 0)
            self.set_meta(d, s, st)
        else:
            log.warning("idmap copy: skipping %s (device node or socket)", s)
            self.skipped += 1

    def shift(self, i: int, path: str) -> int:
        if i >= self.size:
            raise IdOutOfRange(f"{path}: id {i} is outside the mapped range 0..{self.size - 1}")
        return i + self.uid_base

    def set_meta(
        self, d: str | int, s: str, st: os.stat_result, xattrs_from: str | int | None = None
    ) -> None:
        # Order matters: chown clears set-id bits and file capabilities, so those come after it.
        os.chown(d, self.shift(st.st_uid, s), self.shift(st.st_gid, s))
        os.chmod(d, stat.S_IMODE(st.st_mode))
        if xattrs_from is not None:
            self.copy_xattrs(xattrs_from, d, s)
        os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))

    def copy_file(self, s: str, d: str, st: os.stat_result) -> None:
        fin = os.open(s, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fout = os.open(d, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                self.bytes += _copy_data(fin, fout, st.st_size)
                self.set_meta(fout, s, st, xattrs_from=fin)
            finally:
                os.close(fout)
        finally:
            os.close(fin)

    def copy_xattrs(self, src: str | int, dst: str | int, where: str) -> None:
        try:
            keys = os.listxattr(src)
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                return
            raise
        for key in keys:
            if key in _ACL_XATTRS:
                log.warning("idmap copy: dropping POSIX ACL %s on %s (ids are not shifted)", key, where)
                continue
            value: bytes | None = os.getxattr(src, key)
            if key == _CAP_XATTR:
                value = shift_capability(os.getxattr(src, key), self.uid_base, self.size)
            if value is None:
                log.warning("idmap copy: dropping unsupported file capability on %s", where)
                continue
            os.setxattr(dst, key, value)


def _copy_data(fin: int, fout: int, size: int) -> int:
    total = 0
    try:
        while n := os.copy_file_range(fin, fout, max(size - total, 1 << 20)):
            total += n
        return total
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL) or total:
            raise
    while n := os.sendfile(fout, fin, None, 1 << 20):
        total += n
    return total


def shift_capability(value: bytes, uid_base: int, size: int) -> bytes | None:
    """Rewrite a ``security.capability`` value so its root is ``uid_base`` (+ its old rootid).

    Returns a v3 (namespaced) capability, or ``None`` for formats that can't be converted.
    """
    if len(value) < 4:
        return None
    (magic,) = struct.unpack_from("<I", value)
    revision = magic & _CAP_REVISION_MASK
    flags = magic & ~_CAP_REVISION_MASK
    if revision == _CAP_V2 and len(value) == 20:
        rootid = 0
    elif revision == _CAP_V3 and len(value) == 24:
        (rootid,) = struct.unpack_from("<I", value, 20)
        if rootid >= size:
            return None
    else:
        return None
    return struct.pack("<I", _CAP_V3 | flags) + value[4:20] + struct.pack("<I", rootid + uid_base)
