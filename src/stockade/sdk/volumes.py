"""``AsyncVolume``: a named, size-limited disk that outlives every sandbox mounting it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._hybrid import hybrid
from ._transport import Api, ConnectionConfig, ensure_local_daemon


@dataclass(frozen=True)
class AsyncVolume:
    """A volume. Mount it with ``Sandbox.create(volumes={"/data": vol})`` (read-write) or
    ``{"/data": {"volume": vol.name, "read_only": True}}``."""

    name: str
    size_mb: int
    created_at: float
    owner: str | None = None
    #: Ids of the sandboxes (in any state) that mount it; it cannot be deleted until none.
    mounted_by: list[str] = field(default_factory=list)

    @staticmethod
    async def _call(
        method: str,
        path: str,
        api_url: str | None,
        api_key: str | None,
        data_dir: Path | str | None,
        **kwargs: Any,
    ) -> Any:
        config = ConnectionConfig.resolve(api_url, api_key, data_dir, None)
        if config.local:
            await ensure_local_daemon(config)
        api = Api(config)
        try:
            return await api.request(method, path, **kwargs)
        finally:
            await api.aclose()

    @classmethod
    async def create(
        cls,
        name: str,
        size_mb: int = 1024,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
    ) -> "AsyncVolume":
        """Create an empty volume; writes past ``size_mb`` fail with "no space left"."""
        return cls(
            **await cls._call(
                "POST", "/volumes", api_url, api_key, data_dir, json={"name": name, "size_mb": size_mb}
            )
        )

    @classmethod
    async def get(
        cls,
        name: str,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
    ) -> "AsyncVolume":
        return cls(**await cls._call("GET", f"/volumes/{name}", api_url, api_key, data_dir))

    @classmethod
    async def list(
        cls, *, api_url: str | None = None, api_key: str | None = None, data_dir: Path | str | None = None
    ) -> list["AsyncVolume"]:
        page = await cls._call("GET", "/volumes", api_url, api_key, data_dir)
        return [cls(**item) for item in page["items"]]

    @staticmethod
    async def _delete_by_name(
        cls: type["AsyncVolume"],
        name: str,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
    ) -> None:
        await cls._call("DELETE", f"/volumes/{name}", api_url, api_key, data_dir)

    async def _delete(self, **kwargs: Any) -> None:
        await AsyncVolume._delete_by_name(type(self), self.name, **kwargs)

    #: Delete a volume and its data (ConflictError while a sandbox mounts it):
    #: ``AsyncVolume.delete(name)`` or ``volume.delete()``.
    delete = hybrid(_delete, _delete_by_name)
