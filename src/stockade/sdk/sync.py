"""The sync twin: every method runs its ``Async*`` counterpart on one background loop.

No logic lives here, only the call: the async classes are the single implementation.
"""

from __future__ import annotations

import builtins
import dataclasses
from dataclasses import dataclass, field
from typing import IO, Any, Iterator, Literal

from . import _portal
from ._hybrid import hybrid
from ..models import EntryInfo, ProcessInfo, SandboxEnd, SandboxInfo, SecretInfo, UsageHistory
from .commands import AsyncCommandHandle, AsyncCommands, CommandResult, OutputCallback
from .code import Context, Execution
from .files import AsyncFiles
from .pty import AsyncPty, AsyncPtyHandle, DataCallback, PtyResult
from .sandbox import AsyncSandbox, Isolation
from .templates import AsyncTemplate, TemplateInfo
from .secrets import AsyncSecret
from .volumes import AsyncVolume


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

    def connect(
        self, pid: int, on_stdout: OutputCallback | None = None, on_stderr: OutputCallback | None = None
    ) -> CommandHandle:
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

    def read(
        self, path: str, format: Literal["text", "bytes", "stream"] = "text", user: str | None = None
    ) -> Any:
        """``str`` by default, ``bytes``, or an iterator of byte chunks (``"stream"``)."""
        result = _portal.call(self._a.read, path, format, user)
        return _portal.iterate(result) if format == "stream" else result

    def write(
        self,
        path: str,
        data: str | bytes | IO[bytes] | IO[str] | Iterator[bytes],
        user: str | None = None,
        mode: int | None = None,
    ) -> EntryInfo:
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


class PtyHandle:
    """A running terminal (sync). See :class:`AsyncPtyHandle`."""

    def __init__(self, handle: AsyncPtyHandle) -> None:
        self._a = handle
        self.pid = handle.pid

    def send_input(self, data: str | bytes) -> None:
        _portal.call(self._a.send_input, data)

    def resize(self, cols: int, rows: int) -> None:
        _portal.call(self._a.resize, cols, rows)

    def signal(self, name: str) -> None:
        _portal.call(self._a.signal, name)

    def kill(self) -> bool:
        return _portal.call(self._a.kill)

    def wait(self) -> PtyResult:
        return _portal.call(self._a.wait)

    def disconnect(self) -> None:
        _portal.call(self._a.disconnect)


class Pty:
    """``sandbox.pty`` (sync). See :class:`AsyncPty`; ``on_data`` runs on the SDK's thread."""

    def __init__(self, pty: AsyncPty) -> None:
        self._a = pty

    def create(
        self, cols: int = 80, rows: int = 24, *, on_data: DataCallback | None = None, **kwargs: Any
    ) -> PtyHandle:
        return PtyHandle(_portal.call(self._a.create, cols, rows, on_data=on_data, **kwargs))


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
        self.pty = Pty(sandbox.pty)

    @property
    def info(self) -> SandboxInfo:
        return self._a.info

    @classmethod
    def create(
        cls, template: str | None = None, *, isolation: Isolation = "container", **kwargs: Any
    ) -> "Sandbox":
        """Create a running sandbox (default template ``base``, lifetime 300 s)."""
        return cls(_portal.call(AsyncSandbox.create, template, isolation=isolation, **kwargs))

    @staticmethod
    def _connect_by_id(cls: type["Sandbox"], sandbox_id: str, **kwargs: Any) -> "Sandbox":
        return cls(_portal.call(AsyncSandbox.connect, sandbox_id, **kwargs))

    def _connect(self) -> "Sandbox":
        _portal.call(self._a.connect)
        return self

    #: ``Sandbox.connect(id)`` or ``sandbox.connect()``: resume or start it, then use it.
    connect = hybrid(_connect, _connect_by_id)

    @classmethod
    def get(cls, sandbox_id: str, **kwargs: Any) -> "Sandbox":
        return cls(_portal.call(AsyncSandbox.get, sandbox_id, **kwargs))

    @classmethod
    def list(cls, **kwargs: Any) -> list[SandboxInfo]:
        return _portal.call(AsyncSandbox.list, **kwargs)

    def _get_info(self) -> SandboxInfo:
        info: SandboxInfo = _portal.call(self._a.get_info)
        return info

    @staticmethod
    def _get_info_by_id(cls: type["Sandbox"], sandbox_id: str, **kwargs: Any) -> SandboxInfo:
        info: SandboxInfo = _portal.call(AsyncSandbox.get_info, sandbox_id, **kwargs)
        return info

    #: ``sandbox.get_info()`` or ``Sandbox.get_info(id)``.
    get_info = hybrid(_get_info, _get_info_by_id)

    def _get_end(self) -> SandboxEnd:
        end: SandboxEnd = _portal.call(self._a.get_end)
        return end

    @staticmethod
    def _get_end_by_id(cls: type["Sandbox"], sandbox_id: str, **kwargs: Any) -> SandboxEnd:
        end: SandboxEnd = _portal.call(AsyncSandbox.get_end, sandbox_id, **kwargs)
        return end

    #: ``sandbox.get_end()`` or ``Sandbox.get_end(id)``: why it ended (see AsyncSandbox).
    get_end = hybrid(_get_end, _get_end_by_id)

    def usage(self) -> UsageHistory:
        """The recent CPU, memory, disk and network use, oldest first (for charts)."""
        return _portal.call(self._a.usage)

    def is_running(self) -> bool:
        return _portal.call(self._a.is_running)

    def _set_timeout(self, timeout: float) -> None:
        _portal.call(self._a.set_timeout, timeout)

    @staticmethod
    def _set_timeout_by_id(cls: type["Sandbox"], sandbox_id: str, timeout: float, **kwargs: Any) -> None:
        _portal.call(AsyncSandbox.set_timeout, sandbox_id, timeout, **kwargs)

    #: ``sandbox.set_timeout(60)`` or ``Sandbox.set_timeout(id, 60)``.
    set_timeout = hybrid(_set_timeout, _set_timeout_by_id)

    def resize(self, cpu: float | None = None, memory_mb: int | None = None) -> None:
        """See :meth:`AsyncSandbox.resize`."""
        _portal.call(self._a.resize, cpu, memory_mb)

    def set_network(self, policy: dict[str, Any]) -> None:
        _portal.call(self._a.set_network, policy)

    def egress_log(self, limit: int = 1000) -> builtins.list[dict[str, Any]]:
        """The newest ``limit`` entries of the egress log (see :meth:`AsyncSandbox.egress_log`)."""
        return _portal.call(self._a.egress_log, limit)

    def stats(self) -> dict[str, Any]:
        return _portal.call(self._a.stats)

    def run_code(self, code: str, **kwargs: Any) -> Execution:
        """Run a cell; see :meth:`AsyncSandbox.run_code` for every argument."""
        return _portal.call(self._a.run_code, code, **kwargs)

    def create_code_context(self, language: str | None = None, cwd: str | None = None) -> Context:
        return _portal.call(self._a.create_code_context, language, cwd)

    def list_code_contexts(self) -> builtins.list[Context]:
        return _portal.call(self._a.list_code_contexts)

    def restart_code_context(self, context: Context | str) -> Context:
        return _portal.call(self._a.restart_code_context, context)

    def remove_code_context(self, context: Context | str) -> None:
        _portal.call(self._a.remove_code_context, context)

    def _pause(self) -> None:
        _portal.call(self._a.pause)

    @staticmethod
    def _pause_by_id(cls: type["Sandbox"], sandbox_id: str, **kwargs: Any) -> None:
        _portal.call(AsyncSandbox.pause, sandbox_id, **kwargs)

    #: ``sandbox.pause()`` or ``Sandbox.pause(id)``.
    pause = hybrid(_pause, _pause_by_id)

    def resume(self) -> None:
        _portal.call(self._a.resume)

    def stop(self) -> None:
        _portal.call(self._a.stop)

    def start(self) -> None:
        _portal.call(self._a.start)

    def archive(self) -> None:
        _portal.call(self._a.archive)

    def snapshot(self, name: str) -> dict[str, Any]:
        return _portal.call(self._a.snapshot, name)

    def fork(self, count: int = 1, *, memory: bool | None = None) -> builtins.list["Sandbox"]:
        """Running copies of this sandbox; see :meth:`AsyncSandbox.fork`."""
        return [Sandbox(copy) for copy in _portal.call(self._a.fork, count, memory=memory)]

    @property
    def forked_memory(self) -> bool | None:
        """On a copy made by :meth:`fork`: whether its processes and memory were copied."""
        return self._a.forked_memory

    def _kill(self) -> None:
        _portal.call(self._a.kill)

    @staticmethod
    def _kill_by_id(cls: type["Sandbox"], sandbox_id: str, **kwargs: Any) -> bool:
        existed: bool = _portal.call(AsyncSandbox.kill, sandbox_id, **kwargs)
        return existed

    #: ``sandbox.kill()`` or ``Sandbox.kill(id)`` (True if it existed).
    kill = hybrid(_kill, _kill_by_id)

    def close(self) -> None:
        _portal.call(self._a.close)

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


@dataclass(frozen=True)
class Volume:
    """A named volume (sync). See :class:`AsyncVolume` for every argument."""

    name: str
    size_mb: int
    created_at: float
    owner: str | None = None
    #: Ids of the sandboxes (in any state) that mount it; it cannot be deleted until none.
    mounted_by: builtins.list[str] = field(default_factory=builtins.list)

    @classmethod
    def _of(cls, found: AsyncVolume) -> "Volume":
        return cls(**dataclasses.asdict(found))

    @classmethod
    def create(cls, name: str, size_mb: int = 1024, **kwargs: Any) -> "Volume":
        return cls._of(_portal.call(AsyncVolume.create, name, size_mb, **kwargs))

    @classmethod
    def get(cls, name: str, **kwargs: Any) -> "Volume":
        return cls._of(_portal.call(AsyncVolume.get, name, **kwargs))

    @classmethod
    def list(cls, **kwargs: Any) -> builtins.list["Volume"]:
        return [cls._of(v) for v in _portal.call(AsyncVolume.list, **kwargs)]

    def _delete(self, **kwargs: Any) -> None:
        _portal.call(AsyncVolume.delete, self.name, **kwargs)

    @staticmethod
    def _delete_by_name(cls: type["Volume"], name: str, **kwargs: Any) -> None:
        _portal.call(AsyncVolume.delete, name, **kwargs)

    #: ``Volume.delete(name)`` or ``volume.delete()``.
    delete = hybrid(_delete, _delete_by_name)


class Secret:
    """The caller's secrets (sync). See :class:`AsyncSecret` for every argument."""

    @staticmethod
    def set(name: str, value: str, *, hosts: builtins.list[str], **kwargs: Any) -> SecretInfo:
        return _portal.call(AsyncSecret.set, name, value, hosts=hosts, **kwargs)

    @staticmethod
    def list(**kwargs: Any) -> builtins.list[SecretInfo]:
        return _portal.call(AsyncSecret.list, **kwargs)

    @staticmethod
    def get(name: str, **kwargs: Any) -> SecretInfo:
        return _portal.call(AsyncSecret.get, name, **kwargs)

    @staticmethod
    def delete(name: str, **kwargs: Any) -> None:
        _portal.call(AsyncSecret.delete, name, **kwargs)


class Template:
    """Templates (sync). See :class:`AsyncTemplate` for every argument."""

    @staticmethod
    def build(dockerfile: str = "Dockerfile", *, name: str, **kwargs: Any) -> TemplateInfo:
        return _portal.call(AsyncTemplate.build, dockerfile, name=name, **kwargs)

    @staticmethod
    def import_image(archive: str, *, name: str, **kwargs: Any) -> TemplateInfo:
        return _portal.call(AsyncTemplate.import_image, archive, name=name, **kwargs)

    @staticmethod
    def list(**kwargs: Any) -> list[TemplateInfo]:
        return _portal.call(AsyncTemplate.list, **kwargs)

    @staticmethod
    def get(name: str, **kwargs: Any) -> TemplateInfo:
        return _portal.call(AsyncTemplate.get, name, **kwargs)

    @staticmethod
    def delete(name: str, **kwargs: Any) -> None:
        _portal.call(AsyncTemplate.delete, name, **kwargs)

    @staticmethod
    def prune(**kwargs: Any) -> builtins.list[str]:
        return _portal.call(AsyncTemplate.prune, **kwargs)


__all__ = [
    "CommandHandle",
    "Commands",
    "Files",
    "Pty",
    "PtyHandle",
    "Sandbox",
    "Secret",
    "Template",
    "Volume",
]
