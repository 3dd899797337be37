"""Mounts: loop-mounted disks, overlays, and taking them down again.

Every function is idempotent: undoing something already undone succeeds."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import re
import shlex
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ._libc import libc
from .errors import HostError

MNT_DETACH = 2


_ESCAPE = re.compile(r"\\([0-7]{3})")


def _mount_points() -> list[str]:
    """This mount namespace's mount points, oldest first, escapes (``\\040``) decoded."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return [_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), line.split()[4]) for line in f]


def detach_sandbox_mounts(keep: Path | None = None) -> str:
    """A shell snippet for the start of a private mount namespace that outlives a moment (a
    networked runsc, an image build): lazily detach its copies of every sandbox's mounts but
    those at or below ``keep``. Such a namespace copies the host's mount table; a copy keeps a
    sandbox's disk alive after the host unmounts it (the host's mounts are private, so the
    unmount never reaches the copy), and that sandbox's next start must then wait for the disk
    rather than mount it twice (``ocidriver.reopen``)."""
    kept = shlex.quote(str(keep)) if keep is not None else "''"
    return (
        f"keep={kept}; "
        "for m in $(cut -d' ' -f5 /proc/self/mountinfo | grep '/sandboxes/sb' | sort -r); do "
        'case "$m" in "$keep"|"$keep"/*) [ -n "$keep" ] && continue;; esac; '
        'umount -l "$m" 2>/dev/null || :; done'
    )


def mounted(path: Path) -> bool:
    """Whether something is mounted exactly at ``path``."""
    return str(path) in _mount_points()


def mounts_under(prefix: Path) -> list[Path]:
    """Every mount point (in this mount namespace) at or below ``prefix``, in an order that
    unmounts cleanly: deepest first, and the newest first among equals (an overlay before the
    disk holding its upper layer, which would otherwise be busy and only lazily detached,
    flushed some time later). Symlinks in ``prefix`` are resolved, escapes in names decoded."""
    real = os.path.realpath(prefix)
    base = real.rstrip("/") + "/"
    points = _mount_points()
    found = [
        (len(Path(m).parts), i, Path(m)) for i, m in enumerate(points) if m == real or m.startswith(base)
    ]
    return [m for _, _, m in sorted(found, reverse=True)]


def mounts_using(prefix: Path) -> list[Path]:
    """Mount points (in this mount namespace) whose source options name a path at or below
    ``prefix``: overlays whose ``lowerdir`` is an image's tree. The options keep the path as it
    was at mount time, so a tree renamed since is still found under its old name."""
    real = os.path.realpath(prefix).rstrip("/")
    named = re.compile(r"(?:^|[=:,])" + re.escape(real) + r"(?:$|[/:,])")
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            _, _, after = line.partition(" - ")
            options = after.split(" ", 2)[2] if after.count(" ") >= 2 else ""
            if named.search(_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), options.strip())):
                found.append(Path(_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), line.split()[4])))
    return found


def unmount(path: Path) -> None:
    """Unmount ``path`` (lazily if busy); nothing mounted there is fine."""
    while mounted(path):
        if libc.umount2(str(path).encode(), 0) != 0:
            err = ctypes.get_errno()
            if libc.umount2(str(path).encode(), MNT_DETACH) != 0:
                raise HostError(f"cannot unmount {path}: {os.strerror(err)}")


def loop_backing_files() -> list[str]:
    """The files that loop devices are attached to now."""
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            found.append(backing.read_text().strip())
        except OSError:
            continue
    return found


#: image path -> the loop device this process attached it to (``loop7``): checking that one
#: device is cheaper than reading every loop device's backing file (hundreds, on a busy host).
_loop_devices: dict[str, str] = {}


def _loop_holds(image: str) -> bool:
    device = _loop_devices.get(image)
    if device is None:  # attached by an earlier life of the engine: look at every device
        return image in loop_backing_files()
    try:
        return Path(f"/sys/block/{device}/loop/backing_file").read_text().strip() == image
    except OSError:  # the device was detached (and maybe removed)
        return False


async def loop_released(image: Path, timeout: float) -> bool:
    """Whether no loop device holds ``image`` any more, waiting up to ``timeout`` seconds (a
    lazily unmounted filesystem is flushed, and lets go of its image, only later)."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while _loop_holds(str(image)):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
    _loop_devices.pop(str(image), None)
    return True


LOOP_CTL_GET_FREE, LOOP_CONFIGURE, LO_FLAGS_AUTOCLEAR = 0x4C82, 0x4C0A, 4
MS_NOSUID, MS_NODEV = 2, 4


def mount_loop(image: Path, mountpoint: Path) -> None:
    """``mount -o loop,nosuid,nodev image mountpoint`` for ext4, without a mount process:
    the loop device frees itself when unmounted."""
    fd = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(50):  # another allocator may take the free device first
            ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
            try:
                number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
            finally:
                os.close(ctl)
            device = f"/dev/loop{number}"
            try:
                loop = os.open(device, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:  # devtmpfs has not made the node yet
                time.sleep(0.001)
                continue
            # struct loop_config: fd, block_size, loop_info64 (lo_flags at offset 52), reserved
            config = bytearray(struct.calcsize("=II232x64x"))
            struct.pack_into("=II", config, 0, fd, 0)
            struct.pack_into("=I", config, 8 + 52, LO_FLAGS_AUTOCLEAR)
            try:
                fcntl.ioctl(loop, LOOP_CONFIGURE, bytes(config))
            except OSError as exc:
                os.close(loop)
                if exc.errno == 16:  # EBUSY: taken meanwhile
                    continue
                raise HostError(f"cannot attach {image} to {device}: {exc.strerror}") from None
            try:
                if (
                    libc.mount(device.encode(), str(mountpoint).encode(), b"ext4", MS_NOSUID | MS_NODEV, None)
                    != 0
                ):
                    err = ctypes.get_errno()
                    raise HostError(f"cannot mount {image} at {mountpoint}: {os.strerror(err)}")
            finally:
                os.close(loop)  # the mount holds the device now; unmounting frees it
            _loop_devices[str(image)] = f"loop{number}"
            return
        raise HostError(f"no free loop device for {image}")
    finally:
        os.close(fd)


def mount_overlay(lower: Path | str, upper: Path, work: Path, target: Path, owner: int) -> None:
    """Mount the sandbox's root: the read-only image layers below (``lower``, colon-separated
    if several, topmost first), its own disk above."""
    for d in (upper, work, target):
        d.mkdir(exist_ok=True)
    os.chown(upper, owner, owner)
    os.chmod(upper, 0o755)
    if mounted(target):
        return
    options = f"lowerdir={lower},upperdir={upper},workdir={work}".encode()
    if libc.mount(b"overlay", str(target).encode(), b"overlay", 0, options) != 0:
        err = ctypes.get_errno()
        raise HostError(f"cannot mount the overlay at {target}: {os.strerror(err)}")


@contextlib.contextmanager
def mounted_disk(image: Path) -> Iterator[Path]:
    """Mount a stopped sandbox's disk in a private temporary directory (read-write: the kernel
    may still hold its superblock from the last run, which a read-only mount would clash with;
    nothing here writes to it)."""
    mnt = Path(tempfile.mkdtemp(prefix="stockade-snap-"))
    try:
        subprocess.run(
            ["mount", "-o", "loop,nosuid,nodev,noexec", str(image), str(mnt)], check=True, capture_output=True
        )
        try:
            yield mnt
        finally:
            unmount(mnt)
    except subprocess.CalledProcessError as exc:
        raise HostError(f"cannot mount {image}: {exc.stderr.decode(errors='replace')}") from None
    finally:
        with contextlib.suppress(OSError):
            mnt.rmdir()
