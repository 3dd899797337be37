"""``AsyncSecret``: values the egress proxy puts on the wire for a sandbox that never sees them.

``await AsyncSecret.set("OPENAI_KEY", key, hosts=["api.openai.com"])`` stores it (encrypted,
for the caller's tenant); ``Sandbox.create(secrets=["OPENAI_KEY"], network={"allow_out":
["api.openai.com"]})`` gives the sandbox a placeholder under that name. See docs/secrets.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models import SecretInfo
from ._transport import Api, ConnectionConfig, ensure_local_daemon


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


class AsyncSecret:
    """The caller's secrets. No method ever returns a value."""

    @staticmethod
    async def set(
        name: str,
        value: str,
        *,
        hosts: list[str],
        inject_body: bool = False,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
    ) -> SecretInfo:
        """Create or replace ``name``: its value goes only to ``hosts`` (names or
        ``*.domain``), in request headers, and bodies too with ``inject_body``."""
        body = {"name": name, "value": value, "hosts": hosts, "inject_body": inject_body}
        return SecretInfo.model_validate(
            await _call("POST", "/secrets", api_url, api_key, data_dir, json=body)
        )

    @staticmethod
    async def list(
        *, api_url: str | None = None, api_key: str | None = None, data_dir: Path | str | None = None
    ) -> list[SecretInfo]:
        """Names, hosts and times of the caller's secrets."""
        page = await _call("GET", "/secrets", api_url, api_key, data_dir)
        return [SecretInfo.model_validate(item) for item in page["items"]]

    @staticmethod
    async def get(
        name: str,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
    ) -> SecretInfo:
        return SecretInfo.model_validate(await _call("GET", f"/secrets/{name}", api_url, api_key, data_dir))

    @staticmethod
    async def delete(
        name: str,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
    ) -> None:
        """Delete it; sandboxes holding its placeholder stop getting the value."""
        await _call("DELETE", f"/secrets/{name}", api_url, api_key, data_dir)
