"""``AsyncSandbox``: one sandbox, from any server (the sync ``Sandbox`` wraps it)."""

from __future__ import annotations

import builtins

from pathlib import Path
from typing import Any, Literal

from ..models import ForkResult, SandboxEnd, SandboxInfo, UsageHistory
from . import code as _code
from ._hybrid import hybrid
from ._transport import Api, ConnectionConfig, ensure_local_daemon
from .commands import AsyncCommands
from .files import AsyncFiles
from .pty import AsyncPty

Isolation = Literal["container", "gvisor", "microvm"]


async def _api(
    api_url: str | None, api_key: str | None, data_dir: Path | str | None, request_timeout: float | None
) -> Api:
    config = ConnectionConfig.resolve(api_url, api_key, data_dir, request_timeout)
    if config.local:
        await ensure_local_daemon(config)
    return Api(config)


class AsyncSandbox:
    """A sandbox. Create with :meth:`create`, attach with :meth:`connect`; ``async with``
    kills it on exit."""

    def __init__(self, api: Api, info: SandboxInfo) -> None:
        self._api = api
        self._killed = False
        self.info = info
        self.id = info.id
        self.commands = AsyncCommands(api, info.id)
        self.files = AsyncFiles(api, info.id)
        self.pty = AsyncPty(api, info.id)
        #: On a copy made by :meth:`fork`: whether its processes and memory were copied.
        self.forked_memory: bool | None = None

    @property
    def sandbox_id(self) -> str:
        """Alias of ``id`` (E2B's name)."""
        return self.id

    @classmethod
    async def create(
        cls,
        template: str | None = None,
        *,
        isolation: Isolation = "container",
        timeout: float | None = None,
        envs: dict[str, str] | None = None,
        metadata: dict[str, str] | None = None,
        cpu: float | None = None,
        memory_mb: int | None = None,
        disk_mb: int | None = None,
        network: Literal["none"] | dict[str, Any] = "none",
        persistence: Literal["ephemeral", "workspace"] = "ephemeral",
        on_timeout: Literal["kill", "pause", "stop"] = "kill",
        auto_delete: float | None = None,
        volumes: dict[str, Any] | None = None,
        auto_archive: float | None = None,
        ttl: float | None = None,
        auto_resume: bool = False,
        idle_timeout: bool = False,
        secrets: list[str] | dict[str, str] | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
        request_timeout: float | None = None,
    ) -> "AsyncSandbox":
        """Create a sandbox from ``template`` (default ``base``) and return it running.

        ``timeout`` is its lifetime in seconds (default 300) after which it is killed;
        ``cpu``, ``memory_mb`` and ``disk_mb`` are its limits. ``network`` is ``"none"``
        (loopback only) or an egress policy such as ``{"allow_out": ["pypi.org",
        "*.example.com", "10.1.2.0/24"], "deny_out": ["203.0.113.0/24"]}``; see docs/network.md.
        ``persistence="workspace"`` lets :meth:`stop` keep the files; ``on_timeout`` is what the
        timeout does (``"kill"``, ``"pause"`` or ``"stop"``); a paused or stopped sandbox is
        deleted after ``auto_delete`` seconds. ``volumes`` maps a mount path to a
        :class:`AsyncVolume`, a volume name, or ``{"volume": name, "read_only": True}``.
        ``auto_archive`` archives a stopped workspace that many seconds after it stopped;
        ``ttl`` deletes the sandbox that many seconds after its creation, whatever its state.
        ``auto_resume`` resumes or starts a paused or stopped sandbox on the next call that uses
        it; ``idle_timeout`` counts ``timeout`` from the last use (a running command or an
        open terminal is use). See docs/persistence.md. ``secrets`` names secrets
        (:class:`AsyncSecret`) the sandbox gets as placeholders in its environment (a list of
        names, each its own variable, or ``{ENV_VAR: name}``); see docs/secrets.md.
        """
        api = await _api(api_url, api_key, data_dir, request_timeout)
        body: dict[str, Any] = {
            "template": template,
            "isolation": isolation,
            "timeout": timeout,
            "envs": envs or {},
            "metadata": metadata or {},
            "cpu": cpu,
            "memory_mb": memory_mb,
            "disk_mb": disk_mb,
            "network": network,
            "persistence": persistence,
            "on_timeout": on_timeout,
            "auto_delete": auto_delete,
            "auto_archive": auto_archive,
            "ttl": ttl,
            "volumes": _volume_specs(volumes or {}),
            "secrets": secrets,
            "auto_resume": auto_resume or None,
            "idle_timeout": idle_timeout or None,
        }
        try:
            info = await api.request(
                "POST", "/sandboxes", json={k: v for k, v in body.items() if v is not None}
            )
        except BaseException:
            await api.aclose()
            raise
        return cls(api, SandboxInfo.model_validate(info))

    @staticmethod
    async def _connect_by_id(
        cls: type["AsyncSandbox"],
        sandbox_id: str,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
    ) -> "AsyncSandbox":
        api = await _api(api_url, api_key, data_dir, None)
        try:
            info = await api.request("POST", f"/sandboxes/{sandbox_id}/connect")
        except BaseException:
            await api.aclose()
            raise
        return cls(api, SandboxInfo.model_validate(info))

    async def _connect(self) -> "AsyncSandbox":
        await self._lifecycle("connect")
        return self

    #: ``AsyncSandbox.connect(id)`` attaches to a sandbox by id, resuming it if paused and
    #: starting it if stopped; ``sandbox.connect()`` does the same to this one.
    connect = hybrid(_connect, _connect_by_id)

    @staticmethod
    async def _by_id(
        method: str,
        path: str,
        api_url: str | None,
        api_key: str | None,
        data_dir: Path | str | None,
        **kwargs: Any,
    ) -> Any:
        """One call about a sandbox known only by its id."""
        api = await _api(api_url, api_key, data_dir, None)
        try:
            return await api.request(method, path, **kwargs)
        finally:
            await api.aclose()

    @classmethod
    async def get(
        cls,
        sandbox_id: str,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
    ) -> "AsyncSandbox":
        """Attach to a sandbox by id as it is: unlike :meth:`connect`, never resume or start
        it (to stop, archive or kill one without waking it)."""
        api = await _api(api_url, api_key, data_dir, None)
        try:
            info = await api.request("GET", f"/sandboxes/{sandbox_id}")
        except BaseException:
            await api.aclose()
            raise
        return cls(api, SandboxInfo.model_validate(info))

    @classmethod
    async def list(
        cls,
        *,
        state: str | None = None,
        metadata: dict[str, str] | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
    ) -> list[SandboxInfo]:
        """Every sandbox you can see, following pagination."""
        api = await _api(api_url, api_key, data_dir, None)
        found: list[SandboxInfo] = []
        params: dict[str, Any] = {"metadata": [f"{k}={v}" for k, v in (metadata or {}).items()]}
        if state:
            params["state"] = state
        try:
            while True:
                page = await api.request("GET", "/sandboxes", params=params)
                found.extend(SandboxInfo.model_validate(item) for item in page["items"])
                if not page.get("next_cursor"):
                    return found
                params["cursor"] = page["next_cursor"]
        finally:
            await api.aclose()

    async def _get_info(self) -> SandboxInfo:
        self.info = SandboxInfo.model_validate(await self._api.request("GET", f"/sandboxes/{self.id}"))
        return self.info

    @staticmethod
    async def _get_info_by_id(
        cls: type["AsyncSandbox"],
        sandbox_id: str,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
    ) -> SandboxInfo:
        return SandboxInfo.model_validate(
            await cls._by_id("GET", f"/sandboxes/{sandbox_id}", api_url, api_key, data_dir)
        )

    #: What the server knows now: ``sandbox.get_info()`` or ``AsyncSandbox.get_info(id)``.
    get_info = hybrid(_get_info, _get_info_by_id)

    async def _get_end(self) -> SandboxEnd:
        return SandboxEnd.model_validate(await self._api.request("GET", f"/sandboxes/{self.id}/end"))

    @staticmethod
    async def _get_end_by_id(
        cls: type["AsyncSandbox"],
        sandbox_id: str,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
    ) -> SandboxEnd:
        return SandboxEnd.model_validate(
            await cls._by_id("GET", f"/sandboxes/{sandbox_id}/end", api_url, api_key, data_dir)
        )

    #: Why the sandbox ended (``reason``, ``message`` such as "out of memory (python3)",
    #: ``ended_at``, the sandbox as it was): ``sandbox.get_end()`` or
    #: ``AsyncSandbox.get_end(id)``. ConflictError while it exists; SandboxNotFound once its
    #: end record is no longer kept (docs/persistence.md).
    get_end = hybrid(_get_end, _get_end_by_id)

    async def usage(self) -> UsageHistory:
        """The recent CPU, memory, disk and network use, oldest first (for charts)."""
        return UsageHistory.model_validate(await self._api.request("GET", f"/sandboxes/{self.id}/usage"))

    async def is_running(self) -> bool:
        from .exceptions import SandboxNotFound

        try:
            info: SandboxInfo = await self.get_info()
            return info.state == "running"
        except SandboxNotFound:
            return False

    async def _set_timeout(self, timeout: float) -> None:
        self.info = SandboxInfo.model_validate(
            await self._api.request("POST", f"/sandboxes/{self.id}/timeout", json={"timeout": timeout})
        )

    @staticmethod
    async def _set_timeout_by_id(
        cls: type["AsyncSandbox"],
        sandbox_id: str,
        timeout: float,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
    ) -> None:
        await cls._by_id(
            "POST", f"/sandboxes/{sandbox_id}/timeout", api_url, api_key, data_dir, json={"timeout": timeout}
        )

    #: Kill the sandbox ``timeout`` seconds from now (instead of its current deadline):
    #: ``sandbox.set_timeout(60)`` or ``AsyncSandbox.set_timeout(id, 60)``.
    set_timeout = hybrid(_set_timeout, _set_timeout_by_id)

    async def resize(self, cpu: float | None = None, memory_mb: int | None = None) -> None:
        """New CPU and memory limits (those left out are kept): at once while running, where the
        tier can (container) and only upward; for the next start while stopped."""
        body = {k: v for k, v in {"cpu": cpu, "memory_mb": memory_mb}.items() if v is not None}
        self.info = SandboxInfo.model_validate(
            await self._api.request("POST", f"/sandboxes/{self.id}/resize", json=body)
        )

    async def set_network(self, policy: dict[str, Any]) -> None:
        """Replace the egress policy (``allow_out``, ``deny_out``, limits); new connections
        follow it at once. Only for sandboxes created with a policy (even ``{"allow_out": []}``)."""
        self.info = SandboxInfo.model_validate(
            await self._api.request("POST", f"/sandboxes/{self.id}/network", json=policy)
        )

    async def egress_log(self, limit: int = 1000) -> builtins.list[dict[str, Any]]:
        """The newest ``limit`` entries of the egress log, oldest first: each connection through
        the egress proxy (``verdict`` allowed or denied, ``reason``, ``bytes_out``/``bytes_in``)
        and each refused DNS question (docs/network.md)."""
        result = await self._api.request("GET", f"/sandboxes/{self.id}/egress", params={"limit": limit})
        items: builtins.list[dict[str, Any]] = result["items"]
        return items

    async def stats(self) -> dict[str, Any]:
        """Memory, CPU, pids and OOM kills so far."""
        result: dict[str, Any] = await self._api.request("GET", f"/sandboxes/{self.id}/stats")
        return result

    async def run_code(
        self,
        code: str,
        *,
        language: str | None = None,
        context: _code.Context | str | None = None,
        on_stdout: _code.Callback | None = None,
        on_stderr: _code.Callback | None = None,
        on_result: _code.Callback | None = None,
        on_error: _code.Callback | None = None,
        timeout: float | None = 300.0,
        envs: dict[str, str] | None = None,
    ) -> _code.Execution:
        """Run a cell in ``context`` (default: this sandbox's context for ``language``,
        ``python`` unless said, started on first use) and return its :class:`Execution`.
        ``envs`` are environment variables of this cell only (python and bash contexts).

        Callbacks see output as it comes (text for stdout/stderr, :class:`Result`,
        :class:`ExecutionError`). Past ``timeout`` seconds the cell is interrupted and
        :class:`ExecutionTimeout` raised; the context and its state survive."""
        return await _code.run_code(
            self._api,
            self.id,
            code,
            language=language,
            context=context,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            on_result=on_result,
            on_error=on_error,
            timeout=timeout,
            envs=envs,
        )

    async def create_code_context(self, language: str | None = None, cwd: str | None = None) -> _code.Context:
        """Start a context with its own state (``python`` in /home/user unless said)."""
        return await _code.create_context(self._api, self.id, language, cwd)

    async def list_code_contexts(self) -> builtins.list[_code.Context]:
        return await _code.list_contexts(self._api, self.id)

    async def restart_code_context(self, context: _code.Context | str) -> _code.Context:
        """Restart a context's interpreter; its state is lost, its id kept."""
        return await _code.restart_context(self._api, self.id, context)

    async def remove_code_context(self, context: _code.Context | str) -> None:
        await _code.remove_context(self._api, self.id, context)

    async def _pause(self) -> None:
        await self._lifecycle("pause")

    @staticmethod
    async def _pause_by_id(
        cls: type["AsyncSandbox"],
        sandbox_id: str,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
    ) -> None:
        await cls._by_id("POST", f"/sandboxes/{sandbox_id}/pause", api_url, api_key, data_dir)

    #: Save processes and memory; ``connect`` (or ``resume``) brings them back. gVisor writes
    #: them to disk; the container tier freezes them in RAM. ``sandbox.pause()`` or
    #: ``AsyncSandbox.pause(id)``.
    pause = hybrid(_pause, _pause_by_id)

    async def resume(self) -> None:
        """Resume a paused sandbox where it was."""
        await self._lifecycle("resume")

    async def stop(self) -> None:
        """Stop every process and keep the files (``persistence="workspace"`` only)."""
        await self._lifecycle("stop")

    async def start(self) -> None:
        """Boot a stopped sandbox again on its kept files; same id, fresh processes."""
        await self._lifecycle("start")

    async def archive(self) -> None:
        """Compress a stopped workspace's files to free disk; :meth:`start` or
        :meth:`connect` restores them."""
        await self._lifecycle("archive")

    async def _lifecycle(self, action: str) -> None:
        self.info = SandboxInfo.model_validate(
            await self._api.request("POST", f"/sandboxes/{self.id}/{action}")
        )

    async def snapshot(self, name: str) -> dict[str, Any]:
        """Save this sandbox's filesystem as a new template ``name`` for :meth:`create`."""
        result: dict[str, Any] = await self._api.request(
            "POST", f"/sandboxes/{self.id}/snapshot", json={"name": name}
        )
        return result

    async def fork(self, count: int = 1, *, memory: bool | None = None) -> builtins.list["AsyncSandbox"]:
        """``count`` (1 to 16) running copies of this running or paused sandbox, each its own
        sandbox to use and kill; this one carries on unchanged. Files are copy-on-write on
        every tier; on gVisor processes and memory come along too (``memory=None``: if the
        tier can; ``True``: required, else :class:`Conflict`; ``False``: files only). Each
        copy's ``forked_memory`` says which it got. See docs/fork.md."""
        result = ForkResult.model_validate(
            await self._api.request(
                "POST",
                f"/sandboxes/{self.id}/fork",
                json={"count": count, **({} if memory is None else {"memory": memory})},
            )
        )
        copies = []
        for info in result.items:
            copy = type(self)(Api(self._api.config), info)
            copy.forked_memory = result.memory
            copies.append(copy)
        return copies

    @staticmethod
    async def _kill_by_id(
        cls: type["AsyncSandbox"],
        sandbox_id: str,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
    ) -> bool:
        from .exceptions import SandboxNotFound

        try:
            await cls._by_id("DELETE", f"/sandboxes/{sandbox_id}", api_url, api_key, data_dir)
        except SandboxNotFound:
            return False
        return True

    async def _kill(self) -> None:
        from .exceptions import SandboxNotFound

        if self._killed:  # killed through this object already; its connection is closed
            return
        try:
            await self._api.request("DELETE", f"/sandboxes/{self.id}")
        except SandboxNotFound:
            pass
        finally:
            await self._api.aclose()
        self._killed = True

    #: Kill the sandbox and remove every trace of it: ``sandbox.kill()`` (a no-op on a dead
    #: one) or ``AsyncSandbox.kill(id)`` (True if it existed).
    kill = hybrid(_kill, _kill_by_id)

    async def close(self) -> None:
        """Release the connection; the sandbox keeps running."""
        await self._api.aclose()

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.kill()


def _volume_specs(volumes: dict[str, Any]) -> dict[str, Any]:
    """``{path: AsyncVolume | Volume | name | {"volume", "read_only"}}`` as the API wants it."""
    return {path: getattr(v, "name", v) for path, v in volumes.items()}
