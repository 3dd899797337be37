"""The sync twin: every method runs its ``Async*`` counterpart on one background loop.

No logic lives here, only the call: the async classes are the single implementation.
"""

from __future__ import annotations

from typing import IO, Any, Iterator, Literal

from . import _portal
from .commands import AsyncCommandHandle, AsyncCommands, CommandResult, OutputCallback, ProcessInfo
from .files import AsyncFiles, EntryInfo
from .sandbox import AsyncSandbox, Isolation, SandboxInfo


class CommandHandle:
    """A running command (sync). See :class:`AsyncCommandHandle`."""

    def __init__(self, handle: AsyncCommandHandle) -> None:
        self._a = handle
        self.pid = handle.pid
        self.tag = handle.tag

    def wait(self, check: bool = False) -> CommandResult:
        """Block until the command ends; returns its result."""
        return _portal.call(self._a.wait, check)

    def send_stdin(self, data: str | bytes) -> None:
        _portal.call(self._a.send_stdin, data)

    def close_stdin(self) -> None:
        _portal.call(self._a.close_stdin)

    def kill(self) -> bool:
        """SIGKILL the command; False if it had already ended."""
        return _portal.call(self._a.kill)

    def disconnect(self) -> None:
        """Stop following the output; the process goes on."""
        _portal.call(self._a.disconnect)


class Commands:
    """``sandbox.commands`` (sync). See :class:`AsyncCommands`."""

    def __init__(self, commands: AsyncCommands) -> None:
        self._a = commands

    def run(self, cmd: str | list[str], *, background: bool = False, **kwargs: Any) -> Any:
        """Run a command; see :meth:`AsyncCommands.run` for every argument."""
        result = _portal.call(self._a.run, cmd, background=background, **kwargs)
        return CommandHandle(result) if background else result

    def connect(self, pid: int, on_stdout: OutputCallback | None = None,
                on_stderr: OutputCallback | None = None) -> CommandHandle:
        return CommandHandle(_portal.call(self._a.connect, pid, on_stdout, on_stderr))

    def list(self) -> list[ProcessInfo]:
        return _portal.call(self._a.list)

    def kill(self, pid: int) -> bool:
        return _portal.call(self._a.kill, pid)

    def send_stdin(self, pid: int, data: str | bytes) -> None:
        _portal.call(self._a.send_stdin, pid, data)


class Files:
    """``sandbox.files`` (sync). See :class:`AsyncFiles`."""

    def __init__(self, files: AsyncFiles) -> None:
        self._a = files

    def read(self, path: str, format: Literal["text", "bytes", "stream"] = "text",
             user: str | None = None) -> Any:
        """``str`` by default, ``bytes``, or an iterator of byte chunks (``"stream"``)."""
        result = _portal.call(self._a.read, path, format, user)
        return _portal.iterate(result) if format == "stream" else result

    def write(self, path: str, data: str | bytes | IO[bytes] | IO[str] | Iterator[bytes],
              user: str | None = None, mode: int | None = None) -> EntryInfo:
        return _portal.call(self._a.write, path, data, user, mode)

    def list(self, path: str, depth: int = 1, user: str | None = None) -> list[EntryInfo]:
        return _portal.call(self._a.list, path, depth, user)

    def get_info(self, path: str, user: str | None = None) -> EntryInfo:
        return _portal.call(self._a.get_info, path, user)

    def exists(self, path: str, user: str | None = None) -> bool:
        return _portal.call(self._a.exists, path, user)

    def remove(self, path: str, user: str | None = None) -> None:
        _portal.call(self._a.remove, path, user)

    def rename(self, old_path: str, new_path: str, user: str | None = None) -> EntryInfo:
        return _portal.call(self._a.rename, old_path, new_path, user)

    def make_dir(self, path: str, user: str | None = None) -> bool:
        return _portal.call(self._a.make_dir, path, user)


class Sandbox:
    """A sandbox (sync). ``with Sandbox.create() as sb:`` kills it on exit.

    See :class:`AsyncSandbox` for every argument.
    """

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._a = sandbox
        self.id = sandbox.id
        self.sandbox_id = sandbox.id
        self.commands = Commands(sandbox.commands)
        self.files = Files(sandbox.files)

    @property
    def info(self) -> SandboxInfo:
        return self._a.info

    @classmethod
    def create(cls, template: str | None = None, *, isolation: Isolation = "container",
               **kwargs: Any) -> "Sandbox":
        """Create a running sandbox (default template ``base``, lifetime 300 s)."""
        return cls(_portal.call(AsyncSandbox.create, template, isolation=isolation, **kwargs))

    @classmethod
    def connect(cls, sandbox_id: str, **kwargs: Any) -> "Sandbox":
        return cls(_portal.call(AsyncSandbox.connect, sandbox_id, **kwargs))

    @classmethod
    def list(cls, **kwargs: Any) -> list[SandboxInfo]:
        return _portal.call(AsyncSandbox.list, **kwargs)

    def get_info(self) -> SandboxInfo:
        return _portal.call(self._a.get_info)

    def is_running(self) -> bool:
        return _portal.call(self._a.is_running)

    def set_timeout(self, timeout: float) -> None:
        _portal.call(self._a.set_timeout, timeout)

    def stats(self) -> dict[str, Any]:
        return _portal.call(self._a.stats)

    def kill(self) -> None:
        _portal.call(self._a.kill)

    def close(self) -> None:
        _portal.call(self._a.close)

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


__all__ = ["CommandHandle", "Commands", "Files", "Sandbox"]
