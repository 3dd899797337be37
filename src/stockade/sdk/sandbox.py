"""``AsyncSandbox``: one sandbox, from any server (the sync ``Sandbox`` wraps it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._transport import Api, ConnectionConfig, ensure_local_daemon
from .commands import AsyncCommands
from .files import AsyncFiles

Isolation = Literal["container", "gvisor", "microvm"]


@dataclass(frozen=True)
class SandboxInfo:
    """What the server knows about a sandbox."""

    id: str
    isolation: str
    template: str
    state: str
    cpu: float
    memory_mb: int
    disk_mb: int
    pids: int
    metadata: dict[str, str]
    envs: dict[str, str]
    created_at: float
    expires_at: float
    timeout: float


async def _api(api_url: str | None, api_key: str | None, data_dir: Path | str | None,
               request_timeout: float | None) -> Api:
    config = ConnectionConfig.resolve(api_url, api_key, data_dir, request_timeout)
    if config.local:
        await ensure_local_daemon(config)
    return Api(config)


class AsyncSandbox:
    """A sandbox. Create with :meth:`create`, attach with :meth:`connect`; ``async with``
    kills it on exit."""

    def __init__(self, api: Api, info: SandboxInfo) -> None:
        self._api = api
        self.info = info
        self.id = info.id
        self.commands = AsyncCommands(api, info.id)
        self.files = AsyncFiles(api, info.id)

    @property
    def sandbox_id(self) -> str:
        """Alias of ``id`` (E2B's name)."""
        return self.id

    @classmethod
    async def create(cls, template: str | None = None, *, isolation: Isolation = "container",
                     timeout: float | None = None, envs: dict[str, str] | None = None,
                     metadata: dict[str, str] | None = None, cpu: float | None = None,
                     memory_mb: int | None = None, disk_mb: int | None = None,
                     api_url: str | None = None, api_key: str | None = None,
                     data_dir: Path | str | None = None,
                     request_timeout: float | None = None) -> "AsyncSandbox":
        """Create a sandbox from ``template`` (default ``base``) and return it running.

        ``timeout`` is its lifetime in seconds (default 300) after which it is killed;
        ``cpu``, ``memory_mb`` and ``disk_mb`` are its limits.
        """
        api = await _api(api_url, api_key, data_dir, request_timeout)
        body: dict[str, Any] = {"template": template, "isolation": isolation,
                                "timeout": timeout, "envs": envs or {},
                                "metadata": metadata or {}, "cpu": cpu,
                                "memory_mb": memory_mb, "disk_mb": disk_mb}
        try:
            info = await api.request("POST", "/sandboxes",
                                     json={k: v for k, v in body.items() if v is not None})
        except BaseException:
            await api.aclose()
            raise
        return cls(api, SandboxInfo(**info))

    @classmethod
    async def connect(cls, sandbox_id: str, *, api_url: str | None = None,
                      api_key: str | None = None, data_dir: Path | str | None = None) -> "AsyncSandbox":
        """Attach to a running sandbox by id."""
        api = await _api(api_url, api_key, data_dir, None)
        try:
            info = await api.request("GET", f"/sandboxes/{sandbox_id}")
        except BaseException:
            await api.aclose()
            raise
        return cls(api, SandboxInfo(**info))

    @classmethod
    async def list(cls, *, state: str | None = None, metadata: dict[str, str] | None = None,
                   api_url: str | None = None, api_key: str | None = None,
                   data_dir: Path | str | None = None) -> list[SandboxInfo]:
        """Every sandbox you can see, following pagination."""
        api = await _api(api_url, api_key, data_dir, None)
        found: list[SandboxInfo] = []
        params: dict[str, Any] = {"metadata": [f"{k}={v}" for k, v in (metadata or {}).items()]}
        if state:
            params["state"] = state
        try:
            while True:
                page = await api.request("GET", "/sandboxes", params=params)
                found.extend(SandboxInfo(**item) for item in page["items"])
                if not page.get("next_cursor"):
                    return found
                params["cursor"] = page["next_cursor"]
        finally:
            await api.aclose()

    async def get_info(self) -> SandboxInfo:
        self.info = SandboxInfo(**await self._api.request("GET", f"/sandboxes/{self.id}"))
        return self.info

    async def is_running(self) -> bool:
        from .exceptions import SandboxNotFound

        try:
            return (await self.get_info()).state == "running"
        except SandboxNotFound:
            return False

    async def set_timeout(self, timeout: float) -> None:
        """Kill the sandbox ``timeout`` seconds from now (instead of its current deadline)."""
        self.info = SandboxInfo(**await self._api.request(
            "POST", f"/sandboxes/{self.id}/timeout", json={"timeout": timeout}))

    async def stats(self) -> dict[str, Any]:
        """Memory, CPU, pids and OOM kills so far."""
        result: dict[str, Any] = await self._api.request("GET", f"/sandboxes/{self.id}/stats")
        return result

    async def kill(self) -> None:
        """Kill the sandbox and remove every trace of it. Killing a dead sandbox is a no-op."""
        from .exceptions import SandboxNotFound

        try:
            await self._api.request("DELETE", f"/sandboxes/{self.id}")
        except SandboxNotFound:
            pass
        finally:
            await self._api.aclose()

    async def close(self) -> None:
        """Release the connection; the sandbox keeps running."""
        await self._api.aclose()

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.kill()
