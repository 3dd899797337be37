"""Child processes of the engine, started without copying its memory and awaited on a pidfd.

``asyncio.create_subprocess_exec`` on uvloop (the server's loop) starts every child with
``fork()``: the kernel copies the page tables of the whole server process (120 MiB and more,
growing with the sandboxes it holds) and the server then takes copy-on-write faults, about
8 ms per child on the reference machine, paid by each create (``runc run``) and each kill
(``runc delete``). On the default loop it uses ``vfork()`` but waits for every child in a
thread of its own. :func:`spawn` starts the child with :class:`subprocess.Popen` (``vfork()``:
nothing is copied) and awaits its exit on a pidfd, on any event loop. :func:`run_child` sends
output to memory files read after the exit, so no pipe fills up while nobody reads it.

The child is reaped by the loop as soon as it exits, whether or not anyone still waits for it:
a cancelled wait leaves neither a zombie nor a descriptor once the process is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from typing import IO, Union

#: Where a child's stdout or stderr goes: inherited (None), ``subprocess.DEVNULL``, or a file.
Target = Union[None, int, IO[bytes]]


def _memory_file(name: str, data: bytes = b"") -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    if data:
        os.write(fd, data)  # a memory file takes all of it at once
        os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


class Child:
    """A process started by :func:`spawn`. Await :meth:`wait` for its exit code, or
    :meth:`stop` it; either way the loop reaps it the moment it exits."""

    def __init__(self, popen: subprocess.Popen[bytes], pidfd: int) -> None:
        self._popen = popen
        self._pidfd: int | None = pidfd
        self._exited: asyncio.Future[None] | None = None

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def wait(self) -> int:
        """Wait for the exit and return the exit code. Cancelling this wait does not stop the
        watch: the process is still reaped, and its pidfd closed, when it exits."""
        if self._pidfd is not None:
            if self._exited is None:
                loop = asyncio.get_running_loop()
                self._exited = loop.create_future()
                loop.add_reader(self._pidfd, self._reap, loop)
            await asyncio.shield(self._exited)
        return self._popen.wait()  # reaped already: answers at once

    def _reap(self, loop: asyncio.AbstractEventLoop) -> None:
        """The pidfd is readable: the process has exited. Reap it and let go of the pidfd."""
        if self._pidfd is None:
            return
        loop.remove_reader(self._pidfd)
        self._popen.wait()  # it has exited: reaped at once
        os.close(self._pidfd)
        self._pidfd = None
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(None)

    def kill(self) -> None:
        """SIGKILL the process unless it was reaped already (the pidfd never names another)."""
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    async def stop(self) -> int:
        """SIGKILL the process and wait until it is reaped. Cancelled meanwhile, the caller
        returns at once and the loop still reaps it."""
        self.kill()
        return await self.wait()

    def __del__(self) -> None:
        # Not reaped by a loop (never awaited, or the loop closed first): Popen's own finalizer
        # reaps it later; only the pidfd is ours. Registered on a live loop, it is not garbage.
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)


def spawn(
    *argv: str,
    stdin: int | None = None,
    stdout: Target = subprocess.DEVNULL,
    stderr: Target = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
) -> Child:
    """Start ``argv`` (no shell) with ``stdin`` a descriptor it reads (else /dev/null) and
    ``stdout``/``stderr`` a file, a descriptor, ``subprocess.DEVNULL`` (the default) or None
    (inherited). Raises OSError if it cannot start (the program is missing, say)."""
    popen = subprocess.Popen(
        argv,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=env,
    )
    try:
        pidfd = os.pidfd_open(popen.pid)  # an exited, unreaped child still has its pid
    except BaseException:
        popen.kill()
        popen.wait()
        raise
    return Child(popen, pidfd)


async def run_child(*argv: str, timeout: float, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    """Run ``argv`` to its end: ``(exit code, stdout, stderr)``. Past ``timeout`` seconds, or
    if the caller is cancelled, the process is killed and reaped before the error propagates
    (cancelled twice, the error propagates at once and the loop reaps it when it is gone)."""
    fds: list[int] = []
    try:
        if stdin is not None:
            fds.append(_memory_file("stockade-stdin", stdin))
        fds.append(out := _memory_file("stockade-stdout"))
        fds.append(err := _memory_file("stockade-stderr"))
        child = spawn(*argv, stdin=fds[0] if stdin is not None else None, stdout=out, stderr=err)
        try:
            code = await asyncio.wait_for(child.wait(), timeout)
        except BaseException:
            await child.stop()
            raise
        return code, _read_all(out), _read_all(err)
    finally:
        for fd in fds:
            os.close(fd)
