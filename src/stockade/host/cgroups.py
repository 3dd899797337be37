"""Cgroups (v1 and v2): where each sandbox's processes live, what they use, and their end."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import HostError

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = (
    "memory",
    "cpu",
    "cpuacct",
    "cpuset",
    "pids",
    "freezer",
    "blkio",
    "devices",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
    "rdma",
    "misc",
    "systemd",
)


@dataclass(frozen=True)
class Stats:
    """Resource use of one sandbox, from its cgroup."""

    memory_bytes: int = 0
    memory_limit_bytes: int = 0
    cpu_seconds: float = 0.0
    pids: int = 0
    oom_kills: int = 0
    pids_limit_hits: int = 0  # forks the pids limit refused
    #: The name of the last process the OOM killer killed, where the runtime itself knows it
    #: (a microVM guest's agent); else the engine reads the host kernel's log.
    oom_victim: str | None = None


def cgroup_parent(data_dir: Path) -> str:
    """The cgroup that holds the sandboxes of one data directory (engines never share one)."""
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
        try:
            nested = list(d.rglob("*/cgroup.procs"))
        except OSError:  # removed meanwhile (a sandbox stopping): nothing left in it
            continue
        for procs in [d / "cgroup.procs", *nested]:
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
                raise HostError(f"processes {sorted(pids)} of {relative} survive SIGKILL")
            _kill_all(relative, pids)
            killed, deadline = True, loop.time() + grace
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.02)


def _kill_all(relative: str, pids: set[int]) -> None:
    """SIGKILL ``pids``, then thaw the cgroup: a frozen process dies only once thawed."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    for path, value in (
        (CGROUP_ROOT / "freezer" / relative / "freezer.state", "THAWED"),
        (CGROUP_ROOT / relative / "cgroup.freeze", "0"),
    ):
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
            raise HostError(f"processes {sorted(pids)} of {relative} survive SIGKILL")
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
