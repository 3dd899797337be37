"""The privileged host operations of the container tiers: disks, overlays, cgroups.

Everything that needs root on the host and is not the OCI runtime itself lives here, so it can
be read in one sitting. Every function is idempotent: undoing something already undone succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import time
from pathlib import Path

from .base import DriverError, Stats

_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2
CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "cpuset", "pids", "freezer", "blkio", "devices",
                  "net_cls", "net_prio", "perf_event", "hugetlb", "rdma", "misc", "systemd")


async def run(*argv: str, timeout: float = 60) -> str:
    """Run a host command; return stdout or raise DriverError with its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        message = (err or out).decode(errors="replace").strip()
        raise DriverError(f"{' '.join(argv[:3])} failed ({proc.returncode}): {message}")
    return out.decode(errors="replace")


def mounted(path: Path) -> bool:
    """Whether something is mounted exactly at ``path``."""
    target = str(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f)


def mounts_under(prefix: Path) -> list[Path]:
    """Every mount point at or below ``prefix``, in an order that unmounts cleanly: deepest
    first, and the newest first among equals (an overlay before the disk holding its upper
    layer, which would otherwise be busy and only lazily detached, flushed some time later)."""
    base = str(prefix).rstrip("/")
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    found = [(len(Path(m).parts), i, Path(m)) for i, m in enumerate(points)
             if m == base or m.startswith(base + "/")]
    return [m for _, _, m in sorted(found, reverse=True)]


def unmount(path: Path) -> None:
    """Unmount ``path`` (lazily if busy); nothing mounted there is fine."""
    while mounted(path):
        if _libc.umount2(str(path).encode(), 0) != 0:
            err = ctypes.get_errno()
            if _libc.umount2(str(path).encode(), MNT_DETACH) != 0:
                raise DriverError(f"cannot unmount {path}: {os.strerror(err)}")


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


async def make_disk(image: Path, mountpoint: Path, size_mb: int, owner: int,
                    blanks: Path | None = None) -> None:
    """Create a sparse ext4 disk of ``size_mb`` and mount it: the writable layer's quota.

    With ``blanks``, a new disk is a copy of a blank one kept there (formatted once per size
    and owner): copying its megabyte of metadata is cheaper than running mkfs for every
    sandbox. Such copies share the filesystem UUID and directory hash seed; nothing relies on
    them being unique."""
    if not image.exists():
        if blanks is None:
            await _format(image, size_mb, owner)
        else:
            blank = await _blank_disk(blanks, size_mb, owner)
            await asyncio.to_thread(_copy_sparse, blank, image)
    mountpoint.mkdir(exist_ok=True)
    if not mounted(mountpoint):
        await asyncio.to_thread(mount_loop, image, mountpoint)


async def _format(image: Path, size_mb: int, owner: int) -> None:
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    await run("mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0",
              "-E", f"lazy_itable_init=1,nodiscard,root_owner={owner}:{owner}", str(image))


_blank_locks: dict[Path, asyncio.Lock] = {}


async def _blank_disk(blanks: Path, size_mb: int, owner: int) -> Path:
    blank = blanks / f"ext4-{size_mb}m-{owner}.img"
    async with _blank_locks.setdefault(blank, asyncio.Lock()):
        if not blank.exists():
            blanks.mkdir(mode=0o700, parents=True, exist_ok=True)
            part = blank.with_suffix(".part")
            await _format(part, size_mb, owner)
            part.rename(blank)
    return blank


def _copy_sparse(source: Path, target: Path) -> None:
    """Copy ``source`` to a new ``target``, holes kept as holes."""
    part = target.with_suffix(".part")
    with open(source, "rb") as src, open(part, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        dst.truncate(size)
        offset = 0
        while offset < size:
            try:
                data = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(src.fileno(), data, os.SEEK_HOLE)
            done = data
            while done < end:
                done += os.copy_file_range(src.fileno(), dst.fileno(), end - done, done, done)
            offset = end
    part.rename(target)


LOOP_CTL_GET_FREE, LOOP_CONFIGURE, LO_FLAGS_AUTOCLEAR = 0x4C82, 0x4C0A, 4
MS_NOSUID, MS_NODEV = 2, 4


def mount_loop(image: Path, mountpoint: Path) -> None:
    """``mount -o loop,nosuid,nodev image mountpoint`` for ext4, without a mount process:
    the loop device frees itself when unmounted."""
    import fcntl
    import struct

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
                raise DriverError(f"cannot attach {image} to {device}: {exc.strerror}") from None
            try:
                if _libc.mount(device.encode(), str(mountpoint).encode(), b"ext4",
                               MS_NOSUID | MS_NODEV, None) != 0:
                    err = ctypes.get_errno()
                    raise DriverError(f"cannot mount {image} at {mountpoint}: {os.strerror(err)}")
            finally:
                os.close(loop)  # the mount holds the device now; unmounting frees it
            _loop_devices[str(image)] = f"loop{number}"
            return
        raise DriverError(f"no free loop device for {image}")
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
    if _libc.mount(b"overlay", str(target).encode(), b"overlay", 0, options) != 0:
        err = ctypes.get_errno()
        raise DriverError(f"cannot mount the overlay at {target}: {os.strerror(err)}")


def cgroup_parent(data_dir: Path) -> str:
    """The cgroup that holds the sandboxes of one data directory (engines never share one)."""
    import hashlib

    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:10]
    return f"stockade-{digest}"


def cgroup_dirs(relative: str) -> list[Path]:
    """Every directory of the cgroup ``relative`` that exists (v1 controllers and v2)."""
    found = []
    for base in [CGROUP_ROOT / c for c in V1_CONTROLLERS] + [CGROUP_ROOT / "unified", CGROUP_ROOT]:
        d = base / relative
        if d.is_dir():
            found.append(d)
    return found


def cgroup_pids(relative: str) -> set[int]:
    """Every process in the cgroup ``relative`` or below it, in any hierarchy."""
    pids: set[int] = set()
    for d in cgroup_dirs(relative):
        for procs in [d / "cgroup.procs", *d.rglob("*/cgroup.procs")]:
            try:
                pids.update(int(x) for x in procs.read_text().split())
            except (OSError, ValueError):
                continue
    return pids


async def empty_cgroup(relative: str, grace: float = 5.0) -> None:
    """Wait for the cgroup's processes to go, SIGKILLing stragglers (runtimes exit lazily)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    killed = False
    delay = 0.001
    while pids := cgroup_pids(relative):
        if loop.time() > deadline:
            if killed:
                raise DriverError(f"processes {sorted(pids)} of {relative} survive SIGKILL")
            _kill_all(relative, pids)
            killed, deadline = True, loop.time() + grace
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.02)


def _kill_all(relative: str, pids: set[int]) -> None:
    """SIGKILL ``pids``, then thaw the cgroup: a frozen process dies only once thawed."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    for path, value in ((CGROUP_ROOT / "freezer" / relative / "freezer.state", "THAWED"),
                        (CGROUP_ROOT / relative / "cgroup.freeze", "0")):
        if path.exists():
            with contextlib.suppress(OSError):
                path.write_text(value)


async def kill_cgroup(relative: str, grace: float = 5.0) -> None:
    """SIGKILL every process of the cgroup ``relative`` (frozen ones included) and wait until
    none is left; raise DriverError if some survive ``grace`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    delay = 0.001
    while pids := cgroup_pids(relative):
        if loop.time() > deadline:
            raise DriverError(f"processes {sorted(pids)} of {relative} survive SIGKILL")
        _kill_all(relative, pids)  # again each round: a process may have forked meanwhile
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.02)


def remove_cgroup(relative: str) -> None:
    """Remove a sandbox's cgroup directories if the runtime left any (children first)."""
    for d in cgroup_dirs(relative):
        for sub in sorted(d.rglob("*"), key=lambda x: len(x.parts), reverse=True):
            if sub.is_dir():
                with contextlib.suppress(OSError):
                    sub.rmdir()
        with contextlib.suppress(OSError):
            d.rmdir()


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _read_keyed(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_oom_kills(relative: str) -> int:
    """Processes the OOM killer killed in the cgroup so far (one file, unlike
    :func:`cgroup_stats`: it is read before every process start)."""
    v2 = CGROUP_ROOT / relative / "memory.events"
    if v2.exists():
        return _read_keyed(v2, "oom_kill")
    return _read_keyed(CGROUP_ROOT / "memory" / relative / "memory.oom_control", "oom_kill")


def cgroup_stats(relative: str) -> Stats:
    """Read memory, CPU, pids and OOM kills from cgroup v1 or v2."""
    v2 = CGROUP_ROOT / relative
    if (v2 / "memory.current").exists():
        return Stats(
            memory_bytes=_read_int(v2 / "memory.current"),
            memory_limit_bytes=_read_int(v2 / "memory.max"),
            cpu_seconds=_read_keyed(v2 / "cpu.stat", "usage_usec") / 1e6,
            pids=_read_int(v2 / "pids.current"),
            oom_kills=_read_keyed(v2 / "memory.events", "oom_kill"),
            pids_limit_hits=_read_keyed(v2 / "pids.events", "max"),
        )
    mem = CGROUP_ROOT / "memory" / relative
    return Stats(
        memory_bytes=_read_int(mem / "memory.usage_in_bytes"),
        memory_limit_bytes=_read_int(mem / "memory.limit_in_bytes"),
        cpu_seconds=_read_int(CGROUP_ROOT / "cpuacct" / relative / "cpuacct.usage") / 1e9,
        pids=_read_int(CGROUP_ROOT / "pids" / relative / "pids.current"),
        oom_kills=_read_keyed(mem / "memory.oom_control", "oom_kill"),
        pids_limit_hits=_read_keyed(CGROUP_ROOT / "pids" / relative / "pids.events", "max"),
    )


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


def oom_victim(cgroup_name: str) -> str | None:
    """The name of the process the kernel's OOM killer last killed in a cgroup whose last path
    component is ``cgroup_name`` (from the kernel log, ``/dev/kmsg``; needs root), or None."""
    found = None
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        while True:
            try:
                record = os.read(fd, 8192).decode("utf-8", "replace")
            except BrokenPipeError:  # records overwritten while reading: go on
                continue
            except OSError:  # BlockingIOError: the end of the log
                break
            message = record.partition(";")[2]
            if not message.startswith("oom-kill:"):
                continue
            fields = dict(p.partition("=")[::2] for p in message.strip().split(","))
            if fields.get("task_memcg", "").endswith(f"/{cgroup_name}"):
                found = fields.get("task") or found
    finally:
        os.close(fd)
    return found
