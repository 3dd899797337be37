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


async def loop_released(image: Path, timeout: float) -> bool:
    """Whether no loop device holds ``image`` any more, waiting up to ``timeout`` seconds (a
    lazily unmounted filesystem is flushed, and lets go of its image, only later)."""
    deadline = time.monotonic() + timeout
    while str(image) in loop_backing_files():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def make_disk(image: Path, mountpoint: Path, size_mb: int, owner: int) -> None:
    """Create a sparse ext4 disk of ``size_mb`` and mount it: the writable layer's quota."""
    if not image.exists():
        with open(image, "wb") as f:
            f.truncate(size_mb << 20)
        await run("mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0",
                  "-E", f"lazy_itable_init=1,nodiscard,root_owner={owner}:{owner}", str(image))
    mountpoint.mkdir(exist_ok=True)
    if not mounted(mountpoint):
        await run("mount", "-o", "loop,nosuid,nodev", str(image), str(mountpoint))


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
    while pids := cgroup_pids(relative):
        if loop.time() > deadline:
            if killed:
                raise DriverError(f"processes {sorted(pids)} of {relative} survive SIGKILL")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            killed, deadline = True, loop.time() + grace
        await asyncio.sleep(0.02)


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
