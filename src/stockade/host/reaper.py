"""Host process housekeeping for the OCI runtimes: reaping what they leave behind, and the
session keyring their containers inherit.

``runc run --detach`` and ``runsc run --detach`` exit once the sandbox runs, so the sandbox's
processes (runc's container init; runsc's Sentry, gofer and ptrace stubs) are orphans. Left to
the host's init, their exit is only noticed when init reaps them, which some inits do every
second or two: until then the runtime sees them alive, and ``runsc delete`` polls every 100 ms
until they are gone (the "gVisor kill takes about 2 s" of issue 17). So the engine's process
adopts its runtimes' orphans (``PR_SET_CHILD_SUBREAPER``) and reaps them itself, as soon as it
has killed them. It reaps only the pids it saw in a sandbox's cgroup (a zombie no longer shows
its cgroup): processes it spawned directly, which asyncio's child watcher waits for, never live
there.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import platform
import threading
import time
from pathlib import Path

from ._libc import libc as _libc

PR_SET_CHILD_SUBREAPER = 36
KEYCTL_JOIN_SESSION_KEYRING = 1
#: keyctl(2)'s syscall number per architecture.
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}
_keyring = threading.local()


def adopt_orphans() -> None:
    """Make this process the reaper of its descendants' orphans (idempotent)."""
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"PR_SET_CHILD_SUBREAPER: {os.strerror(err)}")


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state, ppid, pgrp, session, ...)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _parent(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields else None


def sessions(pids: set[int]) -> set[int]:
    """The session ids of ``pids`` other than this process's own session."""
    mine = os.getsid(0)
    found = {int(fields[3]) for fields in map(_stat, pids) if fields}
    return found - {mine}


def reap_sessions(ids: set[int]) -> None:
    """Reap exited children of this process that belong to one of the sessions ``ids`` (a
    runtime's processes orphaned to it while the sandbox died on its own: gVisor's ptrace
    stubs are in sessions of their own, which this process never creates)."""
    if not ids:
        return
    for task in Path("/proc/self/task").iterdir():
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
        for pid in children:
            fields = _stat(pid)
            if fields and fields[0] == "Z" and int(fields[3]) in ids:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)


def children(pids: set[int]) -> set[int]:
    """Those of ``pids`` that are this process's children (whose pids cannot be reused before
    this process reaps them, so keeping them for later is safe)."""
    me = os.getpid()
    return {pid for pid in pids if _parent(pid) == me}


def adopted(pids: set[int]) -> set[int]:
    """Those of ``pids`` that descend from this process through parents among ``pids``: what
    will be this process's to reap once they all die."""
    parents = {pid: _parent(pid) for pid in pids}
    found: set[int] = set()
    frontier = {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier and pid not in found}
        found |= frontier
    return found


def reap(pids: set[int]) -> set[int]:
    """Reap those of ``pids`` that are this process's exited children; return the ones that
    still exist (running, or the zombie of a parent that is dying and orphans them to us)."""
    left = set()
    for pid in pids:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                left.add(pid)
        except ChildProcessError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 0)
                left.add(pid)
    return left


async def reap_killed(pids: set[int], timeout: float = 0.5) -> None:
    """Reap ``pids``, all killed already, as they are orphaned to this process."""
    deadline = time.monotonic() + timeout
    while (pids := reap(pids)) and time.monotonic() < deadline:
        await asyncio.sleep(0.002)


def private_session_keyring() -> None:
    """Give the calling thread, and the runtimes it starts from now on, a new empty session
    keyring, so that containers run with ``--no-new-keyring`` share nothing of the host
    session's keys (they cannot call keyctl anyway: the seccomp profile denies it)."""
    if getattr(_keyring, "joined", False):
        return
    number = SYS_KEYCTL.get(platform.machine())
    if number is not None and _libc.syscall(number, KEYCTL_JOIN_SESSION_KEYRING, None) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot join a new session keyring: {os.strerror(err)}")
    _keyring.joined = True
