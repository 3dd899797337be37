"""Child processes of the engine, started without copying its memory and awaited on a pidfd.

``asyncio.create_subprocess_exec`` on uvloop (the server's loop) starts every child with
``fork()``: the kernel copies the page tables of the whole server process (120 MiB and more,
growing with the sandboxes it holds) and the server then takes copy-on-write faults, about
8 ms per child on the reference machine, paid by each create (``runc run``) and each kill
(``runc delete``). On the default loop it uses ``vfork()`` but waits for every child in a
thread of its own. :func:`spawn` starts the child with :class:`subprocess.Popen` (``vfork()``:
nothing is copied) and awaits its exit on a pidfd, on any event loop. Output meant for the
caller goes to memory files read after the exit, so no pipe fills up while nobody reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from typing import IO, Union

#: What a child's stdout or stderr may be: inherited (None), DEVNULL, a file, or CAPTURE.
Target = Union[None, int, IO[bytes]]
#: Capture the stream in memory; :meth:`Child.output` returns it after the exit.
CAPTURE = -10


def _memory_file(name: str, data: bytes = b"") -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    if data:
        os.write(fd, data)  # a memory file takes all of it at once
        os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Child:
    """A process started by :func:`spawn`. Await :meth:`wait` (it reaps the process);
    :meth:`kill` before that if it must not finish."""

    def __init__(self, popen: subprocess.Popen[bytes], captured: dict[str, int]) -> None:
        self._popen = popen
        self._captured = captured
        self._pidfd: int | None = os.pidfd_open(popen.pid)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def wait(self) -> int:
        """Wait for the process to exit, reap it, and return its exit code."""
        if self._pidfd is not None:
            loop = asyncio.get_running_loop()
            exited: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self._pidfd, _resolve, exited)
            try:
                await exited
            finally:
                loop.remove_reader(self._pidfd)
            self._popen.wait()  # it has exited: reaped at once
            os.close(self._pidfd)
            self._pidfd = None
        return self._popen.returncode

    def kill(self) -> None:
        """SIGKILL the process unless it was reaped already (the pidfd never names another)."""
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def output(self) -> tuple[bytes, bytes]:
        """The captured stdout and stderr (empty if not captured); call once, after :meth:`wait`."""
        out, err = (self._take(name) for name in ("stdout", "stderr"))
        return out, err

    def _take(self, name: str) -> bytes:
        fd = self._captured.pop(name, None)
        if fd is None:
            return b""
        try:
            return _read_all(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Drop what was captured and was not read (the process itself is not touched)."""
        for fd in self._captured.values():
            os.close(fd)
        self._captured.clear()

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            self.close()
            if self._pidfd is not None:
                os.close(self._pidfd)


async def spawn(
    *argv: str,
    stdin: bytes | None = None,
    stdout: Target = CAPTURE,
    stderr: Target = CAPTURE,
    env: dict[str, str] | None = None,
    start_new_session: bool = False,
) -> Child:
    """Start ``argv`` (no shell). ``stdin``: bytes it reads (else /dev/null). ``stdout`` and
    ``stderr``: :data:`CAPTURE` (the default), ``subprocess.DEVNULL``, a file, or None
    (inherited). Raises OSError if it cannot start (the program is missing, say)."""
    captured: dict[str, int] = {}
    in_fd = _memory_file("stockade-stdin", stdin) if stdin is not None else None
    try:
        targets: list[Target] = []
        for name, target in (("stdout", stdout), ("stderr", stderr)):
            if target == CAPTURE:
                target = captured[name] = _memory_file(f"stockade-{name}")
            targets.append(target)
        popen = subprocess.Popen(
            argv,
            stdin=in_fd if in_fd is not None else subprocess.DEVNULL,
            stdout=targets[0],
            stderr=targets[1],
            env=env,
            start_new_session=start_new_session,
        )
    except BaseException:
        for fd in captured.values():
            os.close(fd)
        raise
    finally:
        if in_fd is not None:
            os.close(in_fd)
    return Child(popen, captured)


async def run_child(*argv: str, timeout: float, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    """Run ``argv`` to its end: ``(exit code, stdout, stderr)``. Past ``timeout`` seconds, or
    if the caller is cancelled, the process is killed and reaped before the error propagates."""
    child = await spawn(*argv, stdin=stdin)
    try:
        code = await asyncio.wait_for(child.wait(), timeout)
    except BaseException:
        child.kill()
        await child.wait()
        child.close()
        raise
    out, err = child.output()
    return code, out, err
