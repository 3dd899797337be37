"""``/daytona/api/sandbox``: Daytona sandboxes as Stockade workspaces (persistence="workspace").

Auto-stop is Stockade's timeout with ``on_timeout="stop"`` (reset by toolbox activity), auto-delete
and auto-archive are Stockade's; names and labels live in the sandbox's metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shutil
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from ...engine import EngineError, NotFound
from ...models import NetworkPolicy, SandboxInfo, SandboxSpec, VolumeMount
from ...server.auth import Principal
from ...server.control import Control
from . import render
from ._base import API, ControlDep, DaytonaError, DaytonaRoute, PrincipalDep, base_url, not_found
from .wire import (DEFAULT_AUTO_STOP, KEEP_LONGEST, NAME_KEY, NEVER, RESERVED, TIER_LABEL,
                   CreateSandbox, Labels, NetworkSettings)

#: Seconds a preview-url token lives (it also dies with the sandbox).
PREVIEW_TTL = 3600.0
router = APIRouter(prefix=API + "/sandbox", route_class=DaytonaRoute, tags=["daytona"])


async def _visible(ctl: Control, who: Principal) -> list[SandboxInfo]:
    return ctl.visible(who, await ctl.engine.sandboxes.list())


async def resolve(sandboxIdOrName: str, ctl: ControlDep, who: PrincipalDep) -> str:  # noqa: N803
    """The id of the caller's sandbox named or numbered ``sandboxIdOrName``."""
    if who.may_see(ctl.owner(sandboxIdOrName)):
        return sandboxIdOrName
    for info in await _visible(ctl, who):
        if info.metadata.get(NAME_KEY) == sandboxIdOrName:
            return info.id
    raise not_found(sandboxIdOrName)


SandboxId = Annotated[str, Depends(resolve)]


def _timeout(minutes: int | None, age: float = 0.0) -> float:
    """The timeout for an auto-stop interval; "never" (0) is the rest of the longest lifetime
    for a sandbox ``age`` seconds old."""
    minutes = DEFAULT_AUTO_STOP if minutes is None else minutes
    return max(60.0, NEVER - age - 2) if minutes == 0 else float(minutes * 60)


def _auto_delete(minutes: int | None) -> float:
    if minutes is None or minutes < 0:
        return KEEP_LONGEST
    return max(1.0, float(minutes * 60))


def _allowed(body: CreateSandbox | NetworkSettings) -> list[str]:
    return [a.strip() for text in (body.network_allow_list, body.domain_allow_list) if text
            for a in text.split(",") if a.strip()]


def _network(body: CreateSandbox) -> NetworkPolicy | None:
    """Stockade's egress policy: none unless asked (``networkBlockAll: false`` opens the
    internet, minus the ranges Stockade always denies; allow lists open only themselves)."""
    allow = _allowed(body)
    if body.network_block_all or (not allow and body.network_block_all is None):
        return None
    return NetworkPolicy(allow_out=allow or ["0.0.0.0/0"])


async def build_template(ctl: Control, who: Principal, dockerfile: str) -> str:
    """The tenant's template built from ``dockerfile`` (reused when it was built before)."""
    digest = hashlib.sha256(f"{who.tenant}\0{dockerfile}".encode()).hexdigest()[:24]
    name = f"daytona-{digest}"
    with contextlib.suppress(NotFound):
        await ctl.engine.templates.get(name, who.may_see)
        return name
    context = ctl.engine.templates.workspace()  # empty: Daytona's contexts are refused
    try:
        try:
            build = ctl.engine.templates.build(dockerfile, name, context, owner=who.tenant,
                                               visible=who.may_see, emit=lambda event: None)
        except EngineError as exc:
            raise DaytonaError(400, f"cannot build this image: {exc.message} (here FROM names "
                                    f"a Stockade template, such as 'base')") from None
        await build.run()
    finally:
        await asyncio.to_thread(shutil.rmtree, context, True)
    return name


def create_spec(body: CreateSandbox, template: str | None = None) -> SandboxSpec:
    """Stockade's sandbox spec for a Daytona CreateSandbox (``template``: built for it)."""
    if body.gpu:
        raise DaytonaError(400, "this server has no GPUs; leave gpu unset")
    if body.user not in (None, "user"):
        raise DaytonaError(400, f"os user {body.user!r} is not supported: sandboxes run as "
                                f"'user' (leave os_user unset)")
    if any(v.subpath for v in body.volumes):
        raise DaytonaError(400, "volume subpath is not supported; mount the whole volume")
    metadata = dict(body.labels)
    if body.name:
        metadata[NAME_KEY] = body.name
    return SandboxSpec(
        isolation=body.labels.get(TIER_LABEL, "container"),  # type: ignore[arg-type]
        template=template or body.snapshot, timeout=_timeout(body.auto_stop_interval),
        envs=body.env,
        metadata=metadata, cpu=body.cpu, memory_mb=body.memory * 1024 if body.memory else None,
        disk_mb=body.disk * 1024 if body.disk else None, network=_network(body),
        persistence="workspace", on_timeout="stop",
        auto_delete=_auto_delete(body.auto_delete_interval),
        auto_archive=float(body.auto_archive_interval * 60) if body.auto_archive_interval
        else None,
        volumes=[VolumeMount(volume=v.volume_id, path=v.mount_path) for v in body.volumes])


@router.post("")
async def create_sandbox(body: CreateSandbox, request: Request, ctl: ControlDep,
                         who: PrincipalDep) -> dict[str, Any]:
    """Create a workspace and answer it started (from a snapshot, or from an image built
    first, while the request waits)."""
    template = None
    if body.build_info is not None:
        if body.build_info.context_hashes:
            raise DaytonaError(400, "images that copy local files (build contexts) are not "
                                    "supported here; use RUN steps or a template")
        template = await build_template(ctl, who, body.build_info.dockerfile_content or "")
    spec = create_spec(body, template)
    if body.name and any(s.metadata.get(NAME_KEY) == body.name
                         for s in await _visible(ctl, who)):
        raise DaytonaError(409, f"Sandbox with name {body.name} already exists")
    info = await ctl.create(who, getattr(request.state, "request_id", None), spec)
    return render.sandbox(info, who.tenant, base_url(request))


@router.get("")
async def list_sandboxes(
    request: Request, ctl: ControlDep, who: PrincipalDep,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    labels: Annotated[str | None, Query(max_length=65536)] = None,
    id: Annotated[str | None, Query(max_length=128)] = None,  # noqa: A002
    name: Annotated[str | None, Query(max_length=128)] = None,
    states: Annotated[list[str], Query()] = [],  # noqa: B006
) -> dict[str, Any]:
    """The caller's sandboxes by id, filtered by labels (JSON object), id, name and state."""
    try:
        wanted = json.loads(labels) if labels else {}
    except ValueError:
        raise DaytonaError(400, "labels must be a JSON object of strings") from None
    if not isinstance(wanted, dict):
        raise DaytonaError(400, "labels must be a JSON object of strings")
    base = base_url(request)
    items = [render.sandbox(s, who.tenant, base, full=False) for s in await _visible(ctl, who)]
    items = [s for s in items
             if all(s["labels"].get(k) == v for k, v in wanted.items())
             and (id is None or s["id"] == id) and (name is None or s["name"] == name)
             and (not states or s["state"] in states) and (cursor is None or s["id"] > cursor)]
    items.sort(key=lambda s: s["id"])
    page = items[:limit]
    return {"items": page, "nextCursor": page[-1]["id"] if len(items) > limit else None}


@router.get("/{sandboxIdOrName}")
async def get_sandbox(sandbox_id: SandboxId, request: Request, ctl: ControlDep,
                      who: PrincipalDep) -> dict[str, Any]:
    return render.sandbox(await ctl.engine.sandboxes.get(sandbox_id), who.tenant,
                          base_url(request))


@router.delete("/{sandboxIdOrName}")
async def delete_sandbox(sandbox_id: SandboxId, request: Request, ctl: ControlDep,
                         who: PrincipalDep) -> dict[str, Any]:
    """Delete the sandbox and everything in it; answers it ``destroyed``."""
    info = await ctl.engine.sandboxes.get(sandbox_id)
    await ctl.kill(who, sandbox_id, getattr(request.state, "request_id", None))
    return render.sandbox(info, who.tenant, base_url(request), state="destroyed")


@router.post("/{sandboxIdOrName}/start")
async def start_sandbox(sandbox_id: SandboxId, request: Request, ctl: ControlDep,
                        who: PrincipalDep) -> dict[str, Any]:
    """Start a stopped or archived sandbox on its kept files (a started one stays started)."""
    info = await ctl.connect_sandbox(who, sandbox_id)
    return render.sandbox(info, who.tenant, base_url(request))


@router.post("/{sandboxIdOrName}/stop")
async def stop_sandbox(sandbox_id: SandboxId, request: Request, ctl: ControlDep,
                       who: PrincipalDep) -> dict[str, Any]:
    """Stop every process; the files stay."""
    info = await ctl.engine.sandboxes.stop(sandbox_id)
    return render.sandbox(info, who.tenant, base_url(request))


@router.post("/{sandboxIdOrName}/pause")
async def pause_sandbox(sandbox_id: SandboxId, request: Request, ctl: ControlDep,
                        who: PrincipalDep) -> dict[str, Any]:
    """Keep processes and memory (gVisor: on disk; container: frozen); start resumes."""
    info = await ctl.engine.sandboxes.pause(sandbox_id)
    return render.sandbox(info, who.tenant, base_url(request))


@router.post("/{sandboxIdOrName}/network-settings")
async def network_settings(sandbox_id: SandboxId, body: NetworkSettings, request: Request,
                           ctl: ControlDep, who: PrincipalDep) -> dict[str, Any]:
    """Replace the egress policy of a sandbox created with network access (409 for one
    created blocked: it has no network interface to open)."""
    allow = _allowed(body)
    policy = NetworkPolicy(allow_out=[] if body.network_block_all else allow or ["0.0.0.0/0"])
    info = await ctl.engine.sandboxes.set_network(sandbox_id, policy)
    return render.sandbox(info, who.tenant, base_url(request))


@router.post("/{sandboxIdOrName}/archive")
async def archive_sandbox(sandbox_id: SandboxId, request: Request, ctl: ControlDep,
                          who: PrincipalDep) -> dict[str, Any]:
    """Compress a stopped sandbox's files; start restores them."""
    info = await ctl.engine.sandboxes.archive(sandbox_id)
    return render.sandbox(info, who.tenant, base_url(request))


@router.post("/{sandboxIdOrName}/autostop/{interval}")
async def set_autostop(sandbox_id: SandboxId, interval: int, request: Request, ctl: ControlDep,
                       who: PrincipalDep) -> dict[str, Any]:
    """Stop the sandbox ``interval`` minutes from now and after each later activity (0: never)."""
    if interval < 0:
        raise DaytonaError(400, "auto-stop interval must be 0 (never) or a number of minutes")
    age = time.time() - (await ctl.engine.sandboxes.get(sandbox_id)).created_at
    info = await ctl.set_timeout(who, sandbox_id, _timeout(interval, age),
                                 getattr(request.state, "request_id", None))
    return render.sandbox(info, who.tenant, base_url(request))


@router.put("/{sandboxIdOrName}/labels")
async def replace_labels(sandbox_id: SandboxId, body: Labels, ctl: ControlDep
                         ) -> dict[str, dict[str, str]]:
    """Replace every label (the sandbox's name is kept)."""
    if any(k.startswith(RESERVED) for k in body.labels):
        raise DaytonaError(400, f"labels starting with {RESERVED!r} are reserved")
    info = await ctl.engine.sandboxes.get(sandbox_id)
    kept = {k: v for k, v in info.metadata.items() if k.startswith(RESERVED)}
    info = await ctl.engine.sandboxes.set_metadata(sandbox_id, {**body.labels, **kept})
    return {"labels": render.labels(info.metadata)}


@router.post("/{sandboxIdOrName}/autodelete/{interval}")
async def set_autodelete(sandbox_id: SandboxId, interval: int, request: Request,
                         ctl: ControlDep, who: PrincipalDep) -> dict[str, Any]:
    """Delete the sandbox ``interval`` minutes after it stops (-1: never, 0: at once)."""
    info = await ctl.engine.sandboxes.set_retention(sandbox_id,
                                                    auto_delete=_auto_delete(interval))
    return render.sandbox(info, who.tenant, base_url(request))


@router.post("/{sandboxIdOrName}/autoarchive/{interval}")
async def set_autoarchive(sandbox_id: SandboxId, interval: int, request: Request,
                          ctl: ControlDep, who: PrincipalDep) -> dict[str, Any]:
    """Archive the sandbox ``interval`` minutes after it stops (0: never)."""
    if interval < 0:
        raise DaytonaError(400, "auto-archive interval must be 0 (never) or a number of minutes")
    info = await ctl.engine.sandboxes.set_retention(
        sandbox_id, auto_archive=float(interval * 60) if interval else None,
        archive_never=interval == 0)
    return render.sandbox(info, who.tenant, base_url(request))


@router.post("/{sandboxIdOrName}/last-activity", status_code=201)
async def last_activity(sandbox_id: SandboxId, ctl: ControlDep, who: PrincipalDep) -> Response:
    """Restart the auto-stop clock."""
    info = await ctl.engine.sandboxes.get(sandbox_id)
    await ctl.set_timeout(who, sandbox_id, info.timeout, None)
    return Response(status_code=201)


def _preview(request: Request, sandbox_id: str, port: int, ttl: float) -> tuple[str, str]:
    """The proxy's URL of ``port`` and an access token for the sandbox's ports."""
    if not 1 <= port <= 65535:
        raise DaytonaError(400, f"port must be between 1 and 65535, not {port}")
    token, _ = request.app.state.access_tokens.mint(sandbox_id, ttl)
    return f"{base_url(request)}/sandboxes/{sandbox_id}/ports/{port}", token


@router.get("/{sandboxIdOrName}/ports/{port}/preview-url")
async def preview_url(sandbox_id: SandboxId, port: int, request: Request) -> dict[str, Any]:
    """The port through Stockade's proxy: send the token (or the API key) as
    ``Authorization: Bearer``."""
    url, token = _preview(request, sandbox_id, port, PREVIEW_TTL)
    return {"sandboxId": sandbox_id, "url": url, "token": token}


@router.get("/{sandboxIdOrName}/ports/{port}/signed-preview-url")
async def signed_preview_url(sandbox_id: SandboxId, port: int, request: Request,
                             expiresInSeconds: Annotated[int, Query(ge=1, le=86400)] = 60,  # noqa: N803
                             ) -> dict[str, Any]:
    """A URL that opens the port without any header (the token rides in it, then a cookie)."""
    url, token = _preview(request, sandbox_id, port, expiresInSeconds)
    return {"sandboxId": sandbox_id, "port": port, "token": token,
            "url": f"{url}/?stockade_token={token}"}


@router.get("/{sandboxIdOrName}/toolbox-proxy-url")
async def toolbox_proxy_url(sandbox_id: SandboxId, request: Request) -> dict[str, str]:
    return {"url": render.sandbox_toolbox(base_url(request))}
