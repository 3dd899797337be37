"""A microVM guest's own limits: the agent's commands in a cgroup of their own (agent side).

In a container or gVisor sandbox the host's cgroup holds every process of the sandbox, the agent
included, and its limits are the sandbox's. A microVM's host cgroup holds QEMU: inside, the guest
kernel limits nothing unless told, so a fork bomb fills the guest's process table and a memory
bomb wakes the guest's OOM killer, which may pick anything. So the agent (PID 1 of the guest, in
the root cgroup) starts every command in :data:`SANDBOX`:

- ``pids.max``: the sandbox's pids limit (``sys.limits``, sent by the host after every boot and
  restore): a fork bomb is refused there, and the agent can still start threads;
- ``memory.max``: the guest's memory less :func:`reserve` for the agent and the kernel, so the
  OOM killer kills inside the cgroup (the biggest process, alone) and never the agent;
- ``cpu.weight``: :data:`CPU_WEIGHT` against the agent's 100 per thread, so a busy guest (one
  vCPU under TCG) still runs the agent first.

``sys.stats`` says what those limits did: OOM kills, refused forks and the last victim's name
(from the guest kernel's log). Only the microVM agent does this (:func:`enable`).
"""

from __future__ import annotations

import ctypes
import os

from . import protocol as p
from .connection import AgentError, Stream

TYPE_CHECKING = False
if TYPE_CHECKING:  # for mypy only: see "Start-up" in __init__.py
    from typing import Any

ROOT = "/sys/fs/cgroup"
SANDBOX = ROOT + "/sandbox"
CONTROLLERS = ("cpu", "memory", "pids")
#: The commands' weight (1-10000) against the agent's threads (100 each, in the root cgroup).
CPU_WEIGHT = 10
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8

#: The cgroup's ``cgroup.procs``, open while the limits are on (the children write "0" to it).
_procs: int | None = None


def reserve(total: int) -> int:
    """Bytes of a guest with ``total`` bytes of memory kept out of the commands' reach: a tenth,
    at least 64 MiB (the agent, the kernel, its page tables and buffers), at most 256 MiB."""
    return min(max(64 << 20, total // 10), 256 << 20)


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) << 10
    raise OSError("no MemTotal in /proc/meminfo")


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _mount() -> None:
    """Mount cgroup v2 at :data:`ROOT` (``favordynmods``: every command start moves a process,
    which is slow without it; kernels before 6.0 lack the option)."""
    libc = ctypes.CDLL(None, use_errno=True)
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    for options in (b"favordynmods", None):
        if libc.mount(b"cgroup2", ROOT.encode(), b"cgroup2", flags, options) == 0:
            return
    err = ctypes.get_errno()
    raise OSError(err, f"cannot mount cgroup2 at {ROOT}: {os.strerror(err)}")


def enable() -> str | None:
    """Make :data:`SANDBOX` and start putting commands in it; None, or why it could not be
    (the commands then run as before, limited only by the VM)."""
    global _procs
    try:
        if not os.path.exists(ROOT + "/cgroup.controllers"):
            _mount()
        with open(ROOT + "/cgroup.controllers") as f:
            missing = set(CONTROLLERS) - set(f.read().split())
        if missing:
            return f"the guest kernel lacks the cgroup controllers {sorted(missing)}"
        _write(ROOT + "/cgroup.subtree_control", " ".join("+" + c for c in CONTROLLERS))
        os.makedirs(SANDBOX, exist_ok=True)
        total = _mem_total()
        _write(SANDBOX + "/memory.max", str(total - reserve(total)))
        _write(SANDBOX + "/memory.swap.max", "0")
        _write(SANDBOX + "/cpu.weight", str(CPU_WEIGHT))
        _procs = os.open(SANDBOX + "/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        return str(exc)
    return None


def join() -> None:
    """In a child between fork and exec: move into :data:`SANDBOX` (before it can fork, so
    nothing it starts escapes). The descriptor was opened by root, whose rights the kernel
    checks (the child already has the user's identity)."""
    if _procs is not None:
        os.write(_procs, b"0")


def active() -> bool:
    return _procs is not None


def _keyed(name: str, key: str) -> int:
    try:
        with open(f"{SANDBOX}/{name}") as f:
            for line in f:
                field, _, value = line.partition(" ")
                if field == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def oom_kills() -> int:
    """Processes the OOM killer killed in :data:`SANDBOX` so far (0 without limits)."""
    return _keyed("memory.events", "oom_kill") if _procs is not None else 0


def oom_victim() -> str | None:
    """The name of the last command the guest kernel's OOM killer killed, from its log."""
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
            if message.startswith("oom-kill:"):
                fields = dict(item.partition("=")[::2] for item in message.strip().split(","))
                memcg = fields.get("task_memcg", "")
                if memcg == "/sandbox" or memcg.startswith("/sandbox/"):
                    found = fields.get("task") or found
    finally:
        os.close(fd)
    return found


def set_limits(stream: Stream, params: dict[str, Any]) -> dict[str, Any]:
    """sys.limits: ``pids``, the sandbox's process and thread limit for its commands."""
    pids = params.get("pids")
    if isinstance(pids, bool) or not isinstance(pids, int) or pids < 1:
        raise AgentError(p.ErrorCode.BAD_REQUEST, "sys.limits: pids must be a positive integer")
    if _procs is None:
        raise AgentError(
            p.ErrorCode.BAD_REQUEST,
            "sys.limits: this agent keeps no limits of "
            "its own (outside a microVM, the host's cgroup holds the sandbox)",
        )
    try:
        _write(SANDBOX + "/pids.max", str(pids))
        with open(SANDBOX + "/memory.max") as f:
            memory = int(f.read())
    except (OSError, ValueError) as exc:
        raise AgentError(p.ErrorCode.INTERNAL, f"sys.limits: {exc}") from None
    return {"pids": pids, "memory": memory}


def stats(stream: Stream, params: dict[str, Any]) -> dict[str, Any]:
    """sys.stats: what the commands' limits killed or refused, and what they use now."""
    if _procs is None:
        raise AgentError(
            p.ErrorCode.BAD_REQUEST,
            "sys.stats: this agent keeps no limits of "
            "its own (outside a microVM, the host's cgroup holds the sandbox)",
        )
    kills = oom_kills()
    try:
        with open(SANDBOX + "/memory.current") as f:
            memory = int(f.read())
        with open(SANDBOX + "/pids.current") as f:
            pids = int(f.read())
    except (OSError, ValueError) as exc:
        raise AgentError(p.ErrorCode.INTERNAL, f"sys.stats: {exc}") from None
    return {
        "oom_kills": kills,
        "pids_limit_hits": _keyed("pids.events", "max"),
        "oom_victim": oom_victim() if kills else None,
        "memory_bytes": memory,
        "pids": pids,
    }
