"""Per-thread identity switches with raw system calls.

The kernel keeps credentials per thread; glibc's ``setresuid`` and friends change every thread
of the process, so the agent calls the system calls directly. A thread switched to a user keeps
root as its *saved* uid, so it can switch back; a child it spawns (``vfork`` + ``exec``) gets
the user's real and effective ids, and ``exec`` then sets the saved ids to the user too, so the
child cannot regain root. This works the same on Linux and under gVisor (where ``setfsuid``
is not honoured), and lets ``subprocess`` keep its fast ``vfork`` path.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # for mypy only: see "Start-up" in __init__.py
    from typing import Iterator

_libc = ctypes.CDLL(None, use_errno=True)
#: (setgroups, setresuid, setresgid) system call numbers.
_SYSCALLS = {"x86_64": (116, 117, 119), "aarch64": (159, 147, 149)}
_KEEP = -1


def _call(number: int, *args: object) -> None:
    if _libc.syscall(number, *args) != 0:
        err = ctypes.get_errno()
        raise PermissionError(err, f"cannot switch identity: {os.strerror(err)}")


def _numbers() -> tuple[int, int, int]:
    numbers = _SYSCALLS.get(os.uname().machine)
    if numbers is None:
        raise OSError(f"no credential system calls known for {os.uname().machine}")
    return numbers


@contextlib.contextmanager
def switched(uid: int, gid: int) -> Iterator[None]:
    """Run the block with this thread's real/effective ids set to ``uid``/``gid``."""
    if os.geteuid() != 0 or uid == 0:
        yield
        return
    setgroups, setresuid, setresgid = _numbers()
    saved_groups = os.getgroups()
    one = (ctypes.c_uint * 1)(gid)
    _call(setgroups, 1, one)
    _call(setresgid, gid, gid, 0)
    try:
        _call(setresuid, uid, uid, 0)
    except BaseException:
        _restore(saved_groups)
        raise
    try:
        yield
    finally:
        _call(setresuid, 0, 0, 0)
        _restore(saved_groups)


def _restore(groups: list[int]) -> None:
    setgroups, _, setresgid = _numbers()
    _call(setresgid, 0, 0, 0)
    array = (ctypes.c_uint * max(1, len(groups)))(*groups)
    _call(setgroups, len(groups), array)
