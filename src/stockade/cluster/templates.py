"""Templates through an API replica: made on a host, kept on shared storage, seen everywhere.

Lists and lookups ask a live host, which answers with its own templates and the ones published
on shared storage (:mod:`.shared_templates`). A build or an import goes to a live host (one
that is not draining, if any): the replica sends the build context or the image archive to the
host's stream endpoint, signed (:mod:`.template_routes`), relays the build's events, and the
host publishes the template before answering. A delete drops every live host's copy, then the
shared one (a host that was down drops its copy when it comes back).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import secrets
import tarfile
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from ..engine import EngineError, InvalidRequest, Unsupported
from ..images.dockerfile import DockerfileError, parse
from ..images.store import InvalidImageName, validate_name
from ..models import TemplateInfo
from .remote import Channel, body_chunks
from .router import ERRORS, ClusterSandboxes

Visible = Callable[[str | None], bool]
CHUNK = 1 << 20


def _tar(context: Path, target: Path) -> None:
    with tarfile.open(target, "w") as tar:
        for path in sorted(context.iterdir()):
            tar.add(path, arcname=path.name)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield chunk


def _failure(event: dict[str, Any]) -> EngineError:
    """The host's error event as the engine error it was (its code kept)."""
    code = str(event.get("code", "internal"))
    error = ERRORS.get(code, EngineError)(str(event.get("message", "the build failed")))
    error.code = code
    return error


class RemoteBuild:
    """A Dockerfile build run on a host, read like :class:`stockade.engine.TemplateBuild`."""

    def __init__(
        self,
        templates: "RemoteTemplates",
        dockerfile: str,
        name: str,
        context: Path,
        params: dict[str, Any],
        visible: Visible,
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        self._templates, self._name, self._context = templates, name, context
        self._params, self._visible, self._emit = params, visible, emit
        try:
            validate_name(name)
            parse(dockerfile)
        except (InvalidImageName, DockerfileError) as exc:
            raise InvalidRequest(str(exc)) from None

    async def run(self) -> TemplateInfo:
        cluster, channel = self._templates.cluster, self._templates.channel
        host = (await cluster.live_hosts())[0].name
        owners = {t.owner for t in await self._templates.list(self._visible) if t.owner}
        upload = self._context.parent / f"{self._context.name}.tar"
        await asyncio.to_thread(_tar, self._context, upload)
        response = await channel.open(
            cluster.stream_url(host),
            "POST",
            "/cluster/templates/build",
            params={**self._params, "name": self._name, "may_use": ",".join(sorted(owners))},
            content=_file_chunks(upload),
        )
        try:
            async for line in response.aiter_lines():
                event: dict[str, Any] = json.loads(line) if line else {"type": "keepalive"}
                if event["type"] == "template":
                    return TemplateInfo.model_validate(event["template"])
                if event["type"] == "error":
                    raise _failure(event)
                if event["type"] != "keepalive":
                    self._emit(event)
        finally:
            await response.aclose()
        raise _failure({"code": "unavailable", "message": f"host {host} ended the build's stream early"})


class RemoteTemplates:
    """The templates service of a cluster (shared storage holds what hosts made)."""

    def __init__(self, cluster: ClusterSandboxes, channel: Channel, data_dir: Path) -> None:
        self.cluster = cluster
        self.channel = channel
        self._data_dir = data_dir

    async def _ask(self, method: str, *args: Any) -> Any:
        return await self.cluster.ask(await self.cluster.any_host(), method, *args)

    async def list(self, visible: Visible) -> builtins.list[TemplateInfo]:
        found: builtins.list[TemplateInfo] = await self._ask("templates_list", visible)
        return found

    async def get(self, name: str, visible: Visible) -> TemplateInfo:
        found: TemplateInfo = await self._ask("template_get", name, visible)
        return found

    def check_usable(self, name: str, visible: Visible) -> None:
        """Checked by ``ClusterControl`` before a create (asynchronously, on a host)."""

    def workspace(self) -> Path:
        """A fresh private directory on this replica for an upload (the caller removes it)."""
        path = self._data_dir / "builds" / secrets.token_hex(8)
        path.mkdir(parents=True, mode=0o700)
        return path

    def build(
        self,
        dockerfile: str,
        name: str,
        context: Path,
        *,
        owner: str | None,
        visible: Visible,
        emit: Callable[[dict[str, Any]], None],
        network: Any = "none",
        replace: bool = False,
    ) -> RemoteBuild:
        """A build of ``dockerfile`` to run on a host (``await build.run()``)."""
        if replace:
            raise Unsupported("replacing a template is not available through a cluster replica yet")
        params = {
            "dockerfile": "Dockerfile",
            "network": network if isinstance(network, str) else json.dumps(network),
            "owner": owner or "",
        }
        (context / "Dockerfile").write_text(dockerfile)  # the text the route read, wherever it was
        return RemoteBuild(self, dockerfile, name, context, params, visible, emit)

    async def import_image(self, name: str, archive: Path, owner: str | None) -> TemplateInfo:
        """Import on a host, which publishes it."""
        host = (await self.cluster.live_hosts())[0].name
        response = await self.channel.open(
            self.cluster.stream_url(host),
            "POST",
            "/cluster/templates/import",
            params={"name": name, "owner": owner or ""},
            content=_file_chunks(archive),
        )
        body = b"".join([chunk async for chunk in body_chunks(response)])
        return TemplateInfo.model_validate_json(body)

    async def delete(self, name: str) -> None:
        """Delete every live host's copy (Conflict while one of them uses it), then the
        shared one."""
        hosts = await self.cluster.live_hosts()
        for row in hosts:
            await self.cluster.ask(row.name, "template_drop", name)
        await self.cluster.ask(hosts[0].name, "template_unpublish", name)

    async def prune(self, owner: str | None, everyone: bool) -> builtins.list[str]:
        """Prune the build cache on every live host."""
        removed: set[str] = set()
        for row in await self.cluster.live_hosts():
            removed.update(await self.cluster.call(row.name, "templates", "prune", owner, everyone))
        return sorted(removed)

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        async def refuse(*args: Any, **kwargs: Any) -> Any:
            raise Unsupported(f"templates.{method} is not available through a cluster replica yet")

        return refuse
