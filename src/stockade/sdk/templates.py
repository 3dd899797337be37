"""``AsyncTemplate``: build templates from a Dockerfile, import OCI images, list and delete.

info = await AsyncTemplate.build("Dockerfile", name="ml", context=".")
sb = await AsyncSandbox.create(template="ml")
"""

from __future__ import annotations

import builtins

import json
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, AsyncIterator, Callable

import httpx

from . import exceptions as exc
from ._transport import Api, ConnectionConfig, ensure_local_daemon, raise_for_error, translate_transport

#: Called with every build event: ``{"type": "step", "step", "total", "instruction",
#: "status"}`` (status started, built, cached or configured) and ``{"type": "log", "line",
#: "stream", "data"}``.
BuildCallback = Callable[[dict[str, Any]], None]
_DOCKERFILE_MEMBER = ".stockade.Dockerfile"


class TemplateBuildError(exc.ApiError):
    """The build ran but a step failed (a RUN exited non-zero, a COPY source is missing...)."""


@dataclass(frozen=True)
class TemplateInfo:
    """A template: use its ``name`` in ``Sandbox.create(template=...)``."""

    name: str
    size_bytes: int
    files: int
    created: str
    parent: str | None = None
    #: The tenant it belongs to; None for a template every tenant may use.
    owner: str | None = None
    source: str | None = None
    #: ``env``, ``workdir`` and ``user`` that every process of its sandboxes gets by default.
    config: dict[str, Any] | None = field(default=None)


def _pack(context: Path, dockerfile: Path, out: IO[bytes]) -> str:
    """Tar ``context`` into ``out``; returns the Dockerfile's path inside the tar (it is added
    under a fixed name when it lies outside the context)."""
    with tarfile.open(fileobj=out, mode="w|") as tar:
        tar.add(context, arcname=".", recursive=True)
        try:
            return dockerfile.resolve().relative_to(context.resolve()).as_posix()
        except ValueError:
            tar.add(dockerfile, arcname=_DOCKERFILE_MEMBER)
            return _DOCKERFILE_MEMBER


async def _chunks(f: IO[bytes]) -> AsyncIterator[bytes]:
    f.seek(0)
    while data := f.read(1 << 20):
        yield data


class AsyncTemplate:
    """Templates on the server (the same calls in local and remote mode)."""

    @staticmethod
    async def _api(api_url: str | None, api_key: str | None, data_dir: Path | str | None) -> Api:
        config = ConnectionConfig.resolve(api_url, api_key, data_dir, None)
        if config.local:
            await ensure_local_daemon(config)
        return Api(config)

    @classmethod
    async def _call(
        cls,
        method: str,
        path: str,
        api_url: str | None,
        api_key: str | None,
        data_dir: Path | str | None,
        **kwargs: Any,
    ) -> Any:
        api = await cls._api(api_url, api_key, data_dir)
        try:
            return await api.request(method, path, **kwargs)
        finally:
            await api.aclose()

    @classmethod
    async def build(
        cls,
        dockerfile: str | os.PathLike[str] = "Dockerfile",
        *,
        name: str,
        context: str | os.PathLike[str] | None = None,
        on_event: BuildCallback | None = None,
        network: Any = "none",
        public: bool = False,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
    ) -> TemplateInfo:
        """Build template ``name`` from ``dockerfile`` (FROM a template, RUN, COPY, ENV,
        WORKDIR, USER), COPY reading from ``context`` (default: the Dockerfile's directory).

        Steps whose inputs did not change come from the build cache. ``network`` is the egress
        policy of RUN steps (``"none"`` or ``{"allow_out": [...]}``, as for sandboxes);
        ``public`` (admin key only) lets every tenant use the template. Raises
        :class:`TemplateBuildError` if a step fails; cancelling the call cancels the build."""
        path = Path(dockerfile)
        root = Path(context) if context is not None else path.parent
        if not path.is_file():
            raise exc.InvalidRequestError(400, "invalid_request", f"no Dockerfile at {path}")
        if not root.is_dir():
            raise exc.InvalidRequestError(400, "invalid_request", f"no directory {root}")
        with tempfile.TemporaryFile() as body:
            member = _pack(root, path, body)
            params = {
                "name": name,
                "dockerfile": member,
                "public": str(public).lower(),
                "network": network if network == "none" else json.dumps(network),
            }
            api = await cls._api(api_url, api_key, data_dir)
            try:
                return await cls._stream(api, params, body, on_event)
            finally:
                await api.aclose()

    @staticmethod
    async def _stream(
        api: Api, params: dict[str, str], body: IO[bytes], on_event: BuildCallback | None
    ) -> TemplateInfo:
        try:
            async with api.client.stream(
                "POST",
                "/templates/build",
                params=params,
                content=_chunks(body),
                headers={"content-type": "application/x-tar"},
                timeout=httpx.Timeout(None, connect=10.0),
            ) as response:
                if response.status_code >= 400:
                    raise_for_error(response, await response.aread())
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event["type"] == "template":
                        return TemplateInfo(**event["template"])
                    if event["type"] == "error":
                        if event.get("code") == "build_failed":
                            raise TemplateBuildError(422, "build_failed", str(event["message"]))
                        raise exc.from_response(500, event)
                    if event["type"] != "keepalive" and on_event is not None:
                        on_event(event)
        except httpx.TransportError as error:
            raise translate_transport(error) from None
        raise exc.ServerError(500, "internal", "the build stream ended without a result")

    @classmethod
    async def import_image(
        cls,
        archive: str | os.PathLike[str],
        *,
        name: str,
        public: bool = False,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
    ) -> TemplateInfo:
        """Make template ``name`` from an OCI image layout (a directory, or a tar of one) or a
        ``docker save`` archive. The image must hold python3: the sandbox agent runs on it."""
        path = Path(archive)
        with tempfile.TemporaryFile() as body:
            if path.is_dir():
                with tarfile.open(fileobj=body, mode="w") as tar:
                    tar.add(path, arcname=".")
            else:
                with open(path, "rb") as f:
                    while data := f.read(1 << 20):
                        body.write(data)
            api = await cls._api(api_url, api_key, data_dir)
            try:
                result = await api.request(
                    "POST",
                    "/templates/import",
                    params={"name": name, "public": str(public).lower()},
                    content=_chunks(body),
                    headers={"content-type": "application/x-tar"},
                    timeout=httpx.Timeout(None, connect=10.0),
                )
            finally:
                await api.aclose()
        return TemplateInfo(**result)

    @classmethod
    async def list(
        cls, *, api_url: str | None = None, api_key: str | None = None, data_dir: Path | str | None = None
    ) -> list[TemplateInfo]:
        """The templates you may use (shared ones and your tenant's)."""
        page = await cls._call("GET", "/templates", api_url, api_key, data_dir)
        return [TemplateInfo(**item) for item in page["items"]]

    @classmethod
    async def get(
        cls,
        name: str,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
    ) -> TemplateInfo:
        return TemplateInfo(**await cls._call("GET", f"/templates/{name}", api_url, api_key, data_dir))

    @classmethod
    async def delete(
        cls,
        name: str,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
    ) -> None:
        """Delete a template and its build cache (ConflictError while a sandbox or another
        template uses it)."""
        await cls._call("DELETE", f"/templates/{name}", api_url, api_key, data_dir)

    @classmethod
    async def prune(
        cls, *, api_url: str | None = None, api_key: str | None = None, data_dir: Path | str | None = None
    ) -> builtins.list[str]:
        """Delete build-cache layers that no template and no sandbox uses; their names."""
        result = await cls._call("POST", "/templates/prune", api_url, api_key, data_dir)
        return list(result["removed"])
